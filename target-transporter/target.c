/*
 * target.c: target-transporter's start-up, listener and signals.
 */
#include <sys/resource.h>
#include <sys/socket.h>

#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include "target.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: target-transporter [-dnv] [-f config]\n"
	    "\n"
	    "Receives VM disk backups from source-transporter over mutual TLS\n"
	    "and keeps them as restore points in a repository.\n"
	    "\n"
	    "  -f config  configuration file (default %s)\n"
	    "  -d         stay in the foreground, log to stderr\n"
	    "  -n         check the configuration and exit\n"
	    "  -v         verbose logging (repeat for debug)\n"
	    "  -V         print the version and exit\n"
	    "\n"
	    "Exit codes: 0 ok, 1 error, 2 bad usage or configuration.\n",
	    TARGET_CONF_DEFAULT);
}

static void
target_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	session_accept(arg, fd, sa, salen);
}

static void
target_accept_error(struct evconnlistener *lev, void *arg)
{
	/* EMFILE and friends: keep serving the sessions we have. */
	log_warn("accept");
}

static void
target_signal(evutil_socket_t sig, short ev, void *arg)
{
	struct target	*tg = arg;

	switch (sig) {
	case SIGHUP:
		log_info("SIGHUP: configuration reload is not supported yet; "
		    "restart the daemon to apply changes");
		break;
	default:
		log_info("received signal %d, shutting down", (int)sig);
		event_base_loopexit(tg->tg_base, NULL);
		break;
	}
}

/* Binds the listen address; returns 0 or -1 with a logged reason. */
static int
target_listen(struct target *tg)
{
	struct addrinfo	 hints, *res = NULL, *ai;
	char		*host = NULL, *port = NULL;
	char		 hbuf[NI_MAXHOST], sbuf[NI_MAXSERV];
	int		 error, rv = -1;

	if (conf_split_hostport(tg->tg_conf->tc_listen, &host, &port) == -1) {
		log_warnx("%s: listen: '%s' is not HOST:PORT",
		    tg->tg_conf->tc_path, tg->tg_conf->tc_listen);
		goto out;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	if ((error = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host,
	    port != NULL ? port : TARGET_PORT_DEFAULT, &hints, &res)) != 0) {
		log_warnx("listen address %s: %s", tg->tg_conf->tc_listen,
		    gai_strerror(error));
		goto out;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		tg->tg_listener = evconnlistener_new_bind(tg->tg_base,
		    target_accept, tg, LEV_OPT_CLOSE_ON_FREE |
		    LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
		    ai->ai_addr, ai->ai_addrlen);
		if (tg->tg_listener != NULL)
			break;
	}
	if (tg->tg_listener == NULL) {
		log_warn("cannot listen on %s", tg->tg_conf->tc_listen);
		goto out;
	}
	evconnlistener_set_error_cb(tg->tg_listener, target_accept_error);
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, hbuf, sizeof(hbuf),
	    sbuf, sizeof(sbuf), NI_NUMERICHOST | NI_NUMERICSERV) == 0)
		log_info("listening on %s:%s", hbuf, sbuf);
	rv = 0;
 out:
	if (res != NULL)
		freeaddrinfo(res);
	free(host);
	free(port);
	return rv;
}

int
main(int argc, char *argv[])
{
	struct target	 tg;
	struct tls_conf	 tls;
	const char	*conffile = TARGET_CONF_DEFAULT;
	char		 err[512];
	int		 ch, foreground = 0, checkonly = 0, verbose = 0;
	int		 exitcode = EXIT_ERROR;

	while ((ch = getopt(argc, argv, "df:hnvV")) != -1) {
		switch (ch) {
		case 'd':
			foreground = 1;
			break;
		case 'f':
			conffile = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'n':
			checkonly = 1;
			break;
		case 'v':
			verbose++;
			break;
		case 'V':
			printf("target-transporter %s\n", TRANSPORTER_VERSION);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	log_init("target-transporter", foreground || checkonly, verbose > 1);

	memset(&tg, 0, sizeof(tg));
	TAILQ_INIT(&tg.tg_sessions);
	TAILQ_INIT(&tg.tg_starved);
	if ((tg.tg_conf = target_conf_load(conffile)) == NULL)
		return EXIT_USAGE;
	memset(&tls, 0, sizeof(tls));
	tls.tc_cert = tg.tg_conf->tc_cert;
	tls.tc_key = tg.tg_conf->tc_key;
	tls.tc_ca = tg.tg_conf->tc_ca;
	tls.tc_crl = tg.tg_conf->tc_crl;
	if ((tg.tg_ctx = tls_ctx_server(&tls)) == NULL) {
		exitcode = EXIT_USAGE;
		goto out;
	}
	if (checkonly) {
		fprintf(stderr, "%s: configuration OK\n", conffile);
		exitcode = EXIT_OK;
		goto out;
	}
	if ((tg.tg_repo = repo_open(tg.tg_conf->tc_repository, err,
	    sizeof(err))) == NULL) {
		log_warnx("%s", err);
		goto out;
	}

	if (!foreground && daemon(0, 0) == -1)
		fatal("daemon");
	signal(SIGPIPE, SIG_IGN);
	if (evthread_use_pthreads() == -1)
		fatalx("evthread_use_pthreads");
	if ((tg.tg_base = event_base_new()) == NULL)
		fatalx("event_base_new");
	if ((tg.tg_pool = pool_new(tg.tg_base,
	    (int)tg.tg_conf->tc_workers)) == NULL)
		fatalx("cannot start worker threads");
	/* Enough jobs to keep every worker busy, few enough to bound memory. */
	tg.tg_max_jobs = 4 * pool_threads(tg.tg_pool);
	if (tg.tg_conf->tc_max_sessions == 0)
		tg.tg_conf->tc_max_sessions = 256;
	tg.tg_sigterm = evsignal_new(tg.tg_base, SIGTERM, target_signal, &tg);
	tg.tg_sigint = evsignal_new(tg.tg_base, SIGINT, target_signal, &tg);
	tg.tg_sighup = evsignal_new(tg.tg_base, SIGHUP, target_signal, &tg);
	if (tg.tg_sigterm == NULL || tg.tg_sigint == NULL ||
	    tg.tg_sighup == NULL || evsignal_add(tg.tg_sigterm, NULL) ||
	    evsignal_add(tg.tg_sigint, NULL) || evsignal_add(tg.tg_sighup,
	    NULL))
		fatalx("cannot set up signal handlers");
	if (target_listen(&tg) == -1)
		goto out;
	log_info("target-transporter %s: %d worker threads, repository %s",
	    TRANSPORTER_VERSION, pool_threads(tg.tg_pool),
	    tg.tg_conf->tc_repository);

	event_base_loop(tg.tg_base, EVLOOP_NO_EXIT_ON_EMPTY);

	/* Close every session; wait for jobs still in the pool. */
	tg.tg_stopping = 1;
	evconnlistener_disable(tg.tg_listener);
	{
		struct session	*se, *next;

		for (se = TAILQ_FIRST(&tg.tg_sessions); se != NULL;
		    se = next) {
			next = TAILQ_NEXT(se, se_entry);
			session_close(se, "target shutting down");
		}
	}
	if (!TAILQ_EMPTY(&tg.tg_sessions))
		event_base_loop(tg.tg_base, EVLOOP_NO_EXIT_ON_EMPTY);
	exitcode = EXIT_OK;
 out:
	if (tg.tg_listener != NULL)
		evconnlistener_free(tg.tg_listener);
	/* Sessions are gone: no finished job waits on the loop any more. */
	pool_free(tg.tg_pool);
	if (tg.tg_sigterm != NULL)
		event_free(tg.tg_sigterm);
	if (tg.tg_sigint != NULL)
		event_free(tg.tg_sigint);
	if (tg.tg_sighup != NULL)
		event_free(tg.tg_sighup);
	if (tg.tg_base != NULL)
		event_base_free(tg.tg_base);
	repo_close(tg.tg_repo);
	SSL_CTX_free(tg.tg_ctx);
	target_conf_free(tg.tg_conf);
	return exitcode;
}
