/*
 * agent.c: source-transporter as a service.  It runs the [job NAME]
 * backups of its configuration every so often, one at a time, each as
 * a child `source-transporter backup` (so a crash of one backup never
 * takes the agent down, and an interrupted one resumes next time);
 * notifies systemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING);
 * reloads its jobs on SIGHUP; and serves Prometheus /metrics when
 * `metrics` is set, with what each child counted (bytes read, sent,
 * compressed), which the child hands back on a pipe as it exits.
 */
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include <systemd/sd-daemon.h>

#include "metrics.h"
#include "source.h"

/* The child's end of the counters' pipe, named in its environment. */
#define AGENT_STATS_ENV	"TRANSPORTER_AGENT_STATS_FD"
#define AGENT_STATS_MAX	PIPE_BUF	/* one write, never split */

struct agent {
	struct event_base	*ag_base;
	struct source_conf	*ag_conf;
	const char		*ag_conffile;
	const char		*ag_self;	/* our own executable */
	pid_t			 ag_child;
	int			 ag_stats;	/* the child's counters, or -1 */
	struct source_job	*ag_running;
	uint64_t		 ag_started_ms;
	int			 ag_stopping;
	struct source_conf	*ag_main;	/* main()'s, freed there */
	struct source_conf	*ag_old;	/* replaced by a reload */
};

static void	agent_next(struct agent *);

/* A job's timer fired: it is due; run it when nothing else runs. */
static void
agent_due(evutil_socket_t fd, short ev, void *arg)
{
	struct source_job	*sj = arg;
	struct agent		*ag = sj->sj_agent;

	sj->sj_due = 1;
	agent_next(ag);
}

static void
agent_status(struct agent *ag)
{
	char	 status[256];

	if (ag->ag_running != NULL)
		snprintf(status, sizeof(status), "STATUS=backing up '%s'",
		    ag->ag_running->sj_name);
	else
		snprintf(status, sizeof(status), "STATUS=idle, %s",
		    ag->ag_conf->sc_jobs ? "waiting for the next job" :
		    "no jobs configured");
	(void)sd_notify(0, status);
}

/* Starts the child backup of sj.  0, or -1 after a message. */
static int
agent_spawn(struct agent *ag, struct source_job *sj)
{
	char	*argv[20], fd[16];
	int	 argc = 0, stats[2] = { -1, -1 };
	pid_t	 pid;

	argv[argc++] = "source-transporter";
	argv[argc++] = "-f";
	argv[argc++] = (char *)ag->ag_conffile;
	argv[argc++] = "backup";
	argv[argc++] = "--disk";
	argv[argc++] = sj->sj_disk;
	argv[argc++] = "--name";
	argv[argc++] = sj->sj_name;
	if (sj->sj_encryption != NULL) {
		argv[argc++] = "--encryption";
		argv[argc++] = sj->sj_encryption;
	}
	if (sj->sj_dirty_bitmap != NULL) {
		argv[argc++] = "--dirty-bitmap";
		argv[argc++] = sj->sj_dirty_bitmap;
	}
	if (sj->sj_bandwidth != NULL) {
		argv[argc++] = "--bandwidth-limit";
		argv[argc++] = sj->sj_bandwidth;
	}
	if (sj->sj_connections != NULL) {
		argv[argc++] = "--connections";
		argv[argc++] = sj->sj_connections;
	}
	argv[argc] = NULL;
	/* Counters only matter when they are served. */
	if (metrics.mt_bytes_read != NULL &&
	    pipe2(stats, O_CLOEXEC | O_NONBLOCK) == -1) {
		log_warn("job '%s': pipe", sj->sj_name);
		stats[0] = stats[1] = -1;
	}
	if ((pid = fork()) == -1) {
		log_warn("job '%s': fork", sj->sj_name);
		if (stats[0] != -1) {
			close(stats[0]);
			close(stats[1]);
		}
		return -1;
	}
	if (pid == 0) {
		/* The summary goes to the journal with our logs. */
		(void)dup2(STDERR_FILENO, STDOUT_FILENO);
		if (stats[1] != -1) {
			(void)snprintf(fd, sizeof(fd), "%d", stats[1]);
			if (fcntl(stats[1], F_SETFD, 0) == -1 ||
			    setenv(AGENT_STATS_ENV, fd, 1) == -1)
				_exit(127);
		}
		execv(ag->ag_self, argv);
		_exit(127);
	}
	if (stats[1] != -1)
		close(stats[1]);
	ag->ag_stats = stats[0];
	ag->ag_child = pid;
	ag->ag_running = sj;
	ag->ag_started_ms = now_ms();
	log_info("job '%s': backing up %s", sj->sj_name, sj->sj_disk);
	metrics_gauge_add(metrics_series(metrics.mt_jobs, "backup", NULL), 1);
	agent_status(ag);
	return 0;
}

/* Runs the first due job if none is running. */
static void
agent_next(struct agent *ag)
{
	struct source_job	*sj;

	if (ag->ag_child != -1 || ag->ag_stopping)
		return;
	for (sj = ag->ag_conf->sc_jobs; sj != NULL; sj = sj->sj_next) {
		if (!sj->sj_due)
			continue;
		sj->sj_due = 0;
		if (agent_spawn(ag, sj) == 0)
			return;
	}
	agent_status(ag);
}

/* Arms every job's timer: the first run soon, then every sj_every. */
static int
agent_arm(struct agent *ag, struct source_conf *sc)
{
	struct source_job	*sj;
	struct timeval		 tv;
	int			 i = 0;

	for (sj = sc->sc_jobs; sj != NULL; sj = sj->sj_next, i++) {
		sj->sj_agent = ag;
		if ((sj->sj_timer = event_new(ag->ag_base, -1, EV_PERSIST,
		    agent_due, sj)) == NULL)
			return -1;
		tv.tv_sec = (time_t)sj->sj_every;
		tv.tv_usec = 0;
		if (event_add(sj->sj_timer, &tv) == -1)
			return -1;
		/* A job runs once at start, then on its interval. */
		sj->sj_due = 1;
	}
	return 0;
}

static void
agent_disarm(struct source_conf *sc)
{
	struct source_job	*sj;

	for (sj = sc->sc_jobs; sj != NULL; sj = sj->sj_next)
		if (sj->sj_timer != NULL) {
			event_free(sj->sj_timer);
			sj->sj_timer = NULL;
		}
}

/*
 * In a backup the agent started: the descriptor to hand this process's
 * counters back on (agent_stats_send), with the metrics on to count
 * them.  -1 in every other process.
 */
int
agent_stats_fd(void)
{
	const char	*s = getenv(AGENT_STATS_ENV);
	char		*end;
	long		 fd;

	if (s == NULL)
		return -1;
	errno = 0;
	fd = strtol(s, &end, 10);
	(void)unsetenv(AGENT_STATS_ENV);	/* not for our children */
	if (errno != 0 || end == s || *end != '\0' || fd <= STDERR_FILENO ||
	    fd > INT_MAX || fcntl((int)fd, F_SETFD, FD_CLOEXEC) == -1)
		return -1;
	if (metrics_init("source-transporter") == -1) {
		close((int)fd);
		return -1;
	}
	return (int)fd;
}

/* Hands the counters to the agent on fd from agent_stats_fd. */
void
agent_stats_send(int fd)
{
	char	 buf[AGENT_STATS_MAX];
	int	 n;

	if (fd == -1)
		return;
	if ((n = metrics_counters_text(buf, sizeof(buf))) > 0 &&
	    write(fd, buf, (size_t)n) != n)
		log_warn("cannot hand the counters to the agent");
	close(fd);
	metrics_free();
}

/* Adds what the child that ended counted to our metrics. */
static void
agent_stats_merge(struct agent *ag)
{
	char	 buf[AGENT_STATS_MAX + 1];
	ssize_t	 n;

	if (ag->ag_stats == -1)
		return;
	/* It has exited: what it wrote is in the pipe, or nothing is. */
	if ((n = read(ag->ag_stats, buf, sizeof(buf) - 1)) > 0) {
		buf[n] = '\0';
		(void)metrics_merge_counters(buf);
	}
	close(ag->ag_stats);
	ag->ag_stats = -1;
}

/* The child backup ended: log it, count it, run what is due next. */
static void
agent_reap(struct agent *ag)
{
	struct source_job	*sj = ag->ag_running;
	double			 secs;
	int			 status, code;
	pid_t			 pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != ag->ag_child)
			continue;
		secs = (now_ms() - ag->ag_started_ms) / 1000.0;
		code = WIFEXITED(status) ? WEXITSTATUS(status) :
		    128 + WTERMSIG(status);
		ag->ag_child = -1;
		ag->ag_running = NULL;
		agent_stats_merge(ag);
		metrics_gauge_add(metrics_series(metrics.mt_jobs, "backup",
		    NULL), -1);
		if (sj == NULL)
			continue;
		sj->sj_runs++;
		if (code == EXIT_OK) {
			log_info("job '%s': backup committed in %.1f s",
			    sj->sj_name, secs);
			metrics_add(metrics_series(metrics.mt_jobs_total,
			    "backup", "ok"), 1);
			metrics_observe(metrics_series(metrics.mt_job_seconds,
			    "backup", NULL), secs);
		} else {
			sj->sj_failures++;
			log_warnx("job '%s': backup failed with exit code %d "
			    "after %.1f s; it runs again in %llu s",
			    sj->sj_name, code, secs,
			    (unsigned long long)sj->sj_every);
			metrics_add(metrics_series(metrics.mt_jobs_total,
			    "backup", "failed"), 1);
		}
	}
	if (ag->ag_stopping && ag->ag_child == -1) {
		event_base_loopexit(ag->ag_base, NULL);
		return;
	}
	agent_next(ag);
}

/*
 * Loads the certificate files the jobs will use, so that a mistake in
 * them is said now and not at the first job, and publishes their ends.
 * 0, or -1 (logged).
 */
static int
agent_check_tls(const struct source_conf *sc)
{
	struct tls_conf	 tls;
	SSL_CTX		*ctx;

	memset(&tls, 0, sizeof(tls));
	tls.tc_cert = sc->sc_cert;
	tls.tc_key = sc->sc_key;
	tls.tc_ca = sc->sc_ca;
	tls.tc_crl = sc->sc_crl;
	if ((ctx = tls_ctx_client(&tls)) == NULL)
		return -1;
	pki_publish_expiry(ctx);
	SSL_CTX_free(ctx);
	return 0;
}

/* SIGHUP: new jobs from the file, or the old ones if it has errors. */
static void
agent_reload(struct agent *ag)
{
	struct source_conf	*sc;

	(void)sd_notify(0, "RELOADING=1");
	if ((sc = source_conf_load(ag->ag_conffile)) == NULL) {
		log_warnx("reload: %s has errors; the schedule stays as it "
		    "was, and each job fails until the file is mended",
		    ag->ag_conffile);
		(void)sd_notify(0, "READY=1");
		return;
	}
	if (agent_check_tls(sc) == -1) {
		log_warnx("reload: cannot load the certificates (above); the "
		    "schedule stays as it was, and each job fails until they "
		    "are mended");
		source_conf_free(sc);
		(void)sd_notify(0, "READY=1");
		return;
	}
	agent_disarm(ag->ag_conf);
	if (agent_arm(ag, sc) == -1)
		fatalx("cannot arm the job timers");
	/* A running job's struct stays valid: keep the old file around. */
	if (ag->ag_old != ag->ag_main)
		source_conf_free(ag->ag_old);
	ag->ag_old = ag->ag_conf;
	ag->ag_running = NULL;
	ag->ag_conf = sc;
	log_info("reloaded %s", ag->ag_conffile);
	(void)sd_notify(0, "READY=1");
	agent_next(ag);
}

static void
agent_signal(evutil_socket_t sig, short ev, void *arg)
{
	struct agent	*ag = arg;

	switch (sig) {
	case SIGCHLD:
		agent_reap(ag);
		break;
	case SIGHUP:
		agent_reload(ag);
		break;
	default:
		log_info("received signal %d, stopping", (int)sig);
		(void)sd_notify(0, "STOPPING=1");
		ag->ag_stopping = 1;
		/* An interrupted backup resumes at its next run. */
		if (ag->ag_child != -1)
			(void)kill(ag->ag_child, SIGTERM);
		else
			event_base_loopexit(ag->ag_base, NULL);
		break;
	}
}

static void
agent_watchdog(evutil_socket_t fd, short ev, void *arg)
{
	(void)sd_notify(0, "WATCHDOG=1");
}

/*
 * agent: runs until SIGTERM.  Exit codes: 0 stopped, 2 no jobs or a bad
 * configuration, 1 it could not start.
 */
int
cmd_agent(struct source_conf *sc, int argc, char **argv)
{
	static const int	 sigs[] = { SIGCHLD, SIGHUP, SIGTERM, SIGINT };
	struct agent		 ag;
	struct event		*sigev[4] = { NULL }, *watchdog = NULL;
	struct metrics_server	*ms = NULL;
	struct timeval		 tv;
	uint64_t		 usec;
	size_t			 i;
	int			 rv = EXIT_ERROR;

	if (argc > 1) {
		printf("usage: source-transporter [-f config] agent\n"
		    "  runs the [job NAME] backups of the configuration on "
		    "their schedules\n");
		return strcmp(argv[1], "--help") == 0 ? EXIT_OK : EXIT_USAGE;
	}
	if (sc->sc_jobs == NULL) {
		log_warnx("%s: no [job NAME] section; the agent has nothing to "
		    "do", sc->sc_path);
		return EXIT_USAGE;
	}
	memset(&ag, 0, sizeof(ag));
	ag.ag_conf = ag.ag_main = sc;
	ag.ag_conffile = sc->sc_path;
	ag.ag_child = -1;
	ag.ag_stats = -1;
	ag.ag_self = "/proc/self/exe";
	if ((ag.ag_base = event_base_new()) == NULL)
		goto out;
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if ((sigev[i] = evsignal_new(ag.ag_base, sigs[i], agent_signal,
		    &ag)) == NULL || evsignal_add(sigev[i], NULL) == -1)
			goto out;
	if (sc->sc_metrics != NULL && (metrics_init("source-transporter") ==
	    -1 || (ms = metrics_listen(ag.ag_base, sc->sc_metrics)) == NULL))
		goto out;
	if (agent_check_tls(sc) == -1) {
		rv = EXIT_USAGE;
		goto out;
	}
	if (agent_arm(&ag, sc) == -1)
		goto out;
	if (sd_watchdog_enabled(0, &usec) > 0) {
		tv.tv_sec = usec / 2 / 1000000;
		tv.tv_usec = usec / 2 % 1000000;
		if ((watchdog = event_new(ag.ag_base, -1, EV_PERSIST,
		    agent_watchdog, NULL)) == NULL ||
		    event_add(watchdog, &tv) == -1)
			goto out;
	}
	log_info("agent started: %s", sc->sc_path);
	(void)sd_notify(0, "READY=1");
	agent_next(&ag);
	event_base_loop(ag.ag_base, EVLOOP_NO_EXIT_ON_EMPTY);
	rv = EXIT_OK;
 out:
	if (rv != EXIT_OK)
		log_warnx("the agent could not start");
	agent_disarm(ag.ag_conf);
	/* sc is main()'s to free; a reloaded one is ours. */
	if (ag.ag_conf != sc)
		source_conf_free(ag.ag_conf);
	if (ag.ag_old != sc)
		source_conf_free(ag.ag_old);
	if (watchdog != NULL)
		event_free(watchdog);
	metrics_server_free(ms);
	metrics_free();
	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (sigev[i] != NULL)
			event_free(sigev[i]);
	if (ag.ag_base != NULL)
		event_base_free(ag.ag_base);
	return rv;
}
