/*
 * target.c: target-transporter's start-up, listener and signals.
 */
#include <sys/resource.h>
#include <sys/socket.h>

#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include <systemd/sd-daemon.h>

#include "metrics.h"
#include "target.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: target-transporter [-dnv] [-f config] [--log-format text|json]\n"
	    "       target-transporter verify [-f config | --repository DIR]\n"
	    "                                 [--tenant T] [--name NAME [--point ID]]\n"
	    "       target-transporter prune [-f config | --repository DIR]\n"
	    "                                [--tenant T] [--name NAME] [--keep-last N]\n"
	    "                                [--keep-within AGE] [--dry-run]\n"
	    "       target-transporter prune [...] --name NAME --point ID [--dry-run]\n"
	    "\n"
	    "Receives VM disk backups from source-transporter over mutual TLS\n"
	    "and keeps them as restore points in a repository.\n"
	    "\n"
	    "  -f config  configuration file (default %s)\n"
	    "  -d         stay in the foreground, log to stderr\n"
	    "  -n         check the configuration and exit\n"
	    "  -v         verbose logging (repeat for debug)\n"
	    "  --log-format json  one JSON object per log line\n"
	    "  -V         print the version and exit\n"
	    "  -h, --help this text\n"
	    "\n"
	    "Signals: SIGTERM/SIGINT stop (jobs in progress are discarded or\n"
	    "kept for resume), SIGHUP reloads certificates, CRL and tenants.\n"
	    "\n"
	    "verify checks the repository offline, with no key and no network,\n"
	    "while the daemon runs or not (see 'target-transporter verify -h').\n"
	    "prune keeps the newest N restore points of each backup name (and\n"
	    "those younger than AGE) and removes the rest, with the daemon\n"
	    "stopped (see 'target-transporter prune -h').\n"
	    "\n"
	    "Exit codes: 0 ok, 1 error, 2 bad usage or configuration;\n"
	    "verify and prune: 4 nothing matched, 5 damage found.\n",
	    TARGET_CONF_DEFAULT);
}

static void
target_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	session_accept(arg, fd, sa, salen);
}

static void
target_accept_again(evutil_socket_t fd, short ev, void *arg)
{
	struct target	*tg = arg;

	if (!tg->tg_stopping)
		evconnlistener_enable(tg->tg_listener);
}

/*
 * EMFILE and friends: keep serving the sessions we have.  The pending
 * connection stays in the backlog and the socket stays readable, so
 * the listener pauses for a second rather than spin on accept.
 */
static void
target_accept_error(struct evconnlistener *lev, void *arg)
{
	struct target	*tg = arg;
	struct timeval	 tv = { 1, 0 };
	int		 error = EVUTIL_SOCKET_ERROR();

	log_warnx("cannot accept a connection: %s; pausing for 1 s (%d "
	    "sessions open; raise the descriptor limit or lower "
	    "max_sessions)", strerror(error), tg->tg_nsessions);
	if (evconnlistener_disable(lev) == 0 && event_base_once(tg->tg_base,
	    -1, EV_TIMEOUT, target_accept_again, tg, &tv) == -1)
		evconnlistener_enable(lev);
}

/*
 * SIGHUP: reads the configuration again.  New certificates, CRL and
 * tenants apply to new sessions; sessions under way keep what they
 * had (the old configuration stays allocated until exit, since they
 * point into it).  listen and repository need a restart.  A bad file
 * changes nothing.
 */
static void
target_reload(struct target *tg)
{
	struct target_conf	*tc;
	struct tls_conf		 tls;
	SSL_CTX			*ctx;

	if ((tc = target_conf_load(tg->tg_conf->tc_path)) == NULL) {
		log_warnx("reload: %s has errors; keeping the running "
		    "configuration", tg->tg_conf->tc_path);
		return;
	}
	target_conf_warn_unconfigured(tc);
	memset(&tls, 0, sizeof(tls));
	tls.tc_cert = tc->tc_cert;
	tls.tc_key = tc->tc_key;
	tls.tc_ca = tc->tc_ca;
	tls.tc_crl = tc->tc_crl;
	if ((ctx = tls_ctx_server(&tls)) == NULL) {
		log_warnx("reload: cannot load the certificates; keeping the "
		    "running configuration");
		target_conf_free(tc);
		return;
	}
	repo_set_direct_io(tg->tg_repo, tc->tc_direct_io);
	if (strcmp(tc->tc_listen, tg->tg_conf->tc_listen) != 0 ||
	    strcmp(tc->tc_repository, tg->tg_conf->tc_repository) != 0)
		log_warnx("reload: listen and repository changes take effect "
		    "at the next restart");
	tc->tc_previous = tg->tg_conf;
	tg->tg_conf = tc;
	SSL_CTX_free(tg->tg_ctx);	/* live sessions hold a reference */
	tg->tg_ctx = ctx;
	pki_publish_expiry(ctx);
	log_info("reloaded %s", tc->tc_path);
}

/* Tells systemd we are alive, at half its watchdog interval. */
static void
target_watchdog(evutil_socket_t fd, short ev, void *arg)
{
	(void)sd_notify(0, "WATCHDOG=1");
}

static void
target_signal(evutil_socket_t sig, short ev, void *arg)
{
	struct target	*tg = arg;

	switch (sig) {
	case SIGHUP:
		(void)sd_notify(0, "RELOADING=1");
		target_reload(tg);
		(void)sd_notify(0, "READY=1");
		break;
	default:
		log_info("received signal %d, shutting down", (int)sig);
		(void)sd_notify(0, "STOPPING=1");
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

/*
 * Each session holds a socket and, while a job runs, a directory, a
 * chunk file or two and the index of the point it restores or builds
 * on (an incremental's base): raise the soft descriptor limit towards what
 * max_sessions needs (systemd's default soft limit is 1024, its hard
 * limit far higher) and say so if the hard limit is too low, rather
 * than failing with EMFILE under load.
 */
static void
target_fd_limit(const struct target_conf *tc)
{
	struct rlimit	 rl;
	rlim_t		 need;

	need = (rlim_t)(tc->tc_max_sessions + TARGET_REFUSE_SLACK) * 4 + 64;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ?
	    need : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur < need)
		log_warnx("only %llu file descriptors allowed (RLIMIT_NOFILE) "
		    "but max_sessions %llu needs about %llu: raise "
		    "LimitNOFILE= or lower max_sessions",
		    (unsigned long long)rl.rlim_cur,
		    (unsigned long long)tc->tc_max_sessions,
		    (unsigned long long)need);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "log-format",	required_argument, NULL, 'L' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ "version",	no_argument,	   NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct target	 tg;
	struct tls_conf	 tls;
	struct metrics_server *ms = NULL;
	struct event	*watchdog = NULL;
	struct timeval	 tv;
	const char	*conffile = TARGET_CONF_DEFAULT;
	char		 err[512], status[256];
	uint64_t	 wd_usec;
	int		 ch, foreground = 0, checkonly = 0, verbose = 0, json = 0;
	int		 exitcode = EXIT_ERROR;

	/* A command first: the daemon takes none. */
	if (argc > 1 && strcmp(argv[1], "verify") == 0)
		return verify_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "prune") == 0)
		return prune_main(argc - 1, argv + 1);
	while ((ch = getopt_long(argc, argv, "df:hnvV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'L':
			if (log_format_arg("target-transporter", optarg,
			    &json) == -1)
				return EXIT_USAGE;
			break;
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
	log_set_format(json);
	tune_malloc();

	memset(&tg, 0, sizeof(tg));
	TAILQ_INIT(&tg.tg_sessions);
	TAILQ_INIT(&tg.tg_starved);
	if ((tg.tg_conf = target_conf_load(conffile)) == NULL)
		return EXIT_USAGE;
	target_conf_warn_unconfigured(tg.tg_conf);
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
	repo_set_direct_io(tg.tg_repo, tg.tg_conf->tc_direct_io);

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
	tg.tg_sigterm = evsignal_new(tg.tg_base, SIGTERM, target_signal, &tg);
	tg.tg_sigint = evsignal_new(tg.tg_base, SIGINT, target_signal, &tg);
	tg.tg_sighup = evsignal_new(tg.tg_base, SIGHUP, target_signal, &tg);
	if (tg.tg_sigterm == NULL || tg.tg_sigint == NULL ||
	    tg.tg_sighup == NULL || evsignal_add(tg.tg_sigterm, NULL) ||
	    evsignal_add(tg.tg_sigint, NULL) || evsignal_add(tg.tg_sighup,
	    NULL))
		fatalx("cannot set up signal handlers");
	if (tg.tg_conf->tc_bandwidth > 0) {
		struct timeval	 tick = { 0, 250000 };
		size_t		 per_tick = tg.tg_conf->tc_bandwidth / 4;

		/* One bucket shared by every session, each way. */
		if ((tg.tg_rate_cfg = ev_token_bucket_cfg_new(per_tick,
		    per_tick, per_tick, per_tick, &tick)) == NULL ||
		    (tg.tg_rate_group = bufferevent_rate_limit_group_new(
		    tg.tg_base, tg.tg_rate_cfg)) == NULL)
			fatalx("cannot set up the bandwidth limit");
	}
	target_fd_limit(tg.tg_conf);
	if (target_listen(&tg) == -1)
		goto out;
	if (tg.tg_conf->tc_metrics != NULL) {
		if (metrics_init("target-transporter") == -1 ||
		    (ms = metrics_listen(tg.tg_base,
		    tg.tg_conf->tc_metrics)) == NULL)
			goto out;
		pki_publish_expiry(tg.tg_ctx);
	}
	log_info("target-transporter %s: %d worker threads, repository %s",
	    TRANSPORTER_VERSION, pool_threads(tg.tg_pool),
	    tg.tg_conf->tc_repository);
	snprintf(status, sizeof(status), "STATUS=serving %s, repository %s",
	    tg.tg_conf->tc_listen, tg.tg_conf->tc_repository);
	(void)sd_notify(0, "READY=1");
	(void)sd_notify(0, status);
	if (sd_watchdog_enabled(0, &wd_usec) > 0) {
		tv.tv_sec = wd_usec / 2 / 1000000;
		tv.tv_usec = wd_usec / 2 % 1000000;
		if ((watchdog = event_new(tg.tg_base, -1, EV_PERSIST,
		    target_watchdog, NULL)) == NULL ||
		    event_add(watchdog, &tv) == -1)
			fatalx("cannot arm the watchdog");
	}

	event_base_loop(tg.tg_base, EVLOOP_NO_EXIT_ON_EMPTY);

	/* Close every session; wait for jobs still in the pool. */
	tg.tg_stopping = 1;
	evconnlistener_disable(tg.tg_listener);
	{
		struct session	*se, *next;

		for (se = TAILQ_FIRST(&tg.tg_sessions); se != NULL;
		    se = next) {
			next = TAILQ_NEXT(se, se_entry);
			/* A source's backup or restore then resumes. */
			session_fail(se, ERROR__CODE__BUSY, "the target is "
			    "shutting down");
		}
	}
	if (!TAILQ_EMPTY(&tg.tg_sessions))
		event_base_loop(tg.tg_base, EVLOOP_NO_EXIT_ON_EMPTY);
	exitcode = EXIT_OK;
 out:
	if (watchdog != NULL)
		event_free(watchdog);
	metrics_server_free(ms);
	metrics_free();
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
	if (tg.tg_rate_group != NULL)
		bufferevent_rate_limit_group_free(tg.tg_rate_group);
	if (tg.tg_rate_cfg != NULL)
		ev_token_bucket_cfg_free(tg.tg_rate_cfg);
	if (tg.tg_base != NULL)
		event_base_free(tg.tg_base);
	repo_close(tg.tg_repo);
	SSL_CTX_free(tg.tg_ctx);
	target_conf_free(tg.tg_conf);
	return exitcode;
}
