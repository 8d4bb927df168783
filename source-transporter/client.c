/*
 * client.c: the source's connection to a target: connect, TLS 1.3 with
 * mutual authentication, Hello, and frame dispatch to the command.
 */
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/thread.h>

#include <openssl/err.h>

#include "source.h"

#define CONNECT_TIMEOUT_MS	15000
#define HANDSHAKE_TIMEOUT	30	/* seconds */
#define IDLE_TIMEOUT		600	/* seconds without a byte from the target */
#define FLUSH_TIMEOUT		2	/* to deliver a last frame */
#define FRAME_BLOCK_TAG		((3 << 3) | 2)

static void	client_process(struct client *);

/* Maps the target's Error code to our exit code. */
int
client_exit_for(Error__Code code)
{
	switch (code) {
	case ERROR__CODE__UNAUTHORISED:
	case ERROR__CODE__VERSION:
	case ERROR__CODE__BUSY:
		return EXIT_CONNECT;
	case ERROR__CODE__NOT_FOUND:
		return EXIT_NOT_FOUND;
	case ERROR__CODE__INTEGRITY:
		return EXIT_INTEGRITY;
	case ERROR__CODE__STORAGE_FULL:
	case ERROR__CODE__STORAGE_IO:
		return EXIT_TARGET;
	case ERROR__CODE__KEY:
		return EXIT_KEY;
	default:
		return EXIT_ERROR;
	}
}

/*
 * Ends the command with exit code code, printing the message if any.
 * The first call wins; later ones are ignored.
 */
void
client_finish(struct client *cl, int code, const char *fmt, ...)
{
	struct timeval	 tv = { FLUSH_TIMEOUT, 0 };
	char		 msg[1024];
	va_list		 ap;

	if (cl->cl_done)
		return;
	cl->cl_done = 1;
	cl->cl_exit = code;
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		if (cl->cl_optional)
			log_warnx("an extra connection was not used: %s; the "
			    "job goes on without it", msg);
		else if (code != EXIT_OK)
			log_errx("%s", msg);
		else
			log_warnx("%s", msg);
	}
	/* One connection of a job ends the job, with its verdict. */
	if (cl->cl_first != NULL) {
		if (cl->cl_bev != NULL)
			bufferevent_disable(cl->cl_bev, EV_READ);
		if (cl->cl_optional) {
			if (cl->cl_ops->co_left != NULL)
				cl->cl_ops->co_left(cl, cl->cl_arg);
			return;
		}
		if (!cl->cl_first->cl_done) {
			cl->cl_first->cl_lost = cl->cl_lost;
			cl->cl_first->cl_busy = cl->cl_busy;
		}
		client_finish(cl->cl_first, code, NULL);
		return;
	}
	if (cl->cl_bev != NULL) {
		bufferevent_disable(cl->cl_bev, EV_READ);
		if (evbuffer_get_length(bufferevent_get_output(cl->cl_bev)) >
		    0) {
			/* Let a last frame (an Error) reach the target. */
			event_base_loopexit(cl->cl_base, &tv);
			return;
		}
	}
	event_base_loopexit(cl->cl_base, NULL);
}

void
client_send(struct client *cl, const Frame *f)
{
	if (frame_send(cl->cl_bev, f) == -1)
		client_finish(cl, EXIT_ERROR, "cannot queue a %s frame",
		    frame_name(f));
}

struct evbuffer *
client_output(struct client *cl)
{
	return bufferevent_get_output(cl->cl_bev);
}

static void
client_connected(struct client *cl)
{
	struct timeval	 tv = { IDLE_TIMEOUT, 0 };
	Frame		 f = FRAME__INIT;
	Hello		 h = HELLO__INIT;

	if (tls_session_keys(cl->cl_ssl, cl->cl_key_out, cl->cl_key_in) ==
	    -1) {
		client_finish(cl, EXIT_ERROR, "cannot derive session keys");
		return;
	}
	log_debug("connected to %s with %s", cl->cl_addr,
	    SSL_get_version(cl->cl_ssl));
	bufferevent_set_timeouts(cl->cl_bev, &tv, NULL);
	h.version = PROTOCOL_VERSION;
	h.software = "source-transporter " TRANSPORTER_VERSION;
	h.max_frame = FRAME_MAX;
	f.msg_case = FRAME__MSG_HELLO;
	f.hello = &h;
	client_send(cl, &f);
}

/*
 * What an alert the target sent during the handshake tells the user to
 * look at: our certificate, the TLS version, or the cipher suites.
 */
static const char *
client_alert_advice(int alert)
{
	if (tls_alert_on_cert(alert))
		return "it refused our certificate";
	switch (alert) {
	case SSL_AD_PROTOCOL_VERSION:
		return "it does not speak TLS 1.3";
	case SSL_AD_HANDSHAKE_FAILURE:
	case SSL_AD_INSUFFICIENT_SECURITY:
		return "it shares no TLS 1.3 cipher suite or key group with us";
	default:
		return "it gave no reason we know";
	}
}

static void
client_event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct client	*cl = arg;
	const char	*reason;
	char		 err[512];
	int		 alert, gone;

	if (events & BEV_EVENT_CONNECTED) {
		client_connected(cl);
		return;
	}
	alert = tls_bev_errors(bev, err, sizeof(err), &gone);
	if (events & BEV_EVENT_TIMEOUT) {
		client_finish(cl, cl->cl_hello ? EXIT_ERROR : EXIT_CONNECT,
		    "%s: no answer from the target for too long", cl->cl_addr);
		return;
	}
	if ((reason = tls_verify_reason(cl->cl_ssl)) != NULL) {
		client_finish(cl, EXIT_CONNECT, "%s: target certificate "
		    "rejected: %s (expected name '%s', CA %s)", cl->cl_addr,
		    reason, cl->cl_conf->sc_server_name ?
		    cl->cl_conf->sc_server_name : cl->cl_host,
		    cl->cl_conf->sc_ca);
		return;
	}
	/*
	 * Closed before the target sent a certificate or an alert: not a
	 * verdict on ours but a target over its connection cap (it closes
	 * a flood at accept) or going down; worth another try, like BUSY.
	 */
	if (!cl->cl_hello && alert == -1 &&
	    SSL_get0_peer_certificate(cl->cl_ssl) == NULL) {
		cl->cl_lost = 1;
		client_finish(cl, EXIT_CONNECT, "%s: the target closed the "
		    "connection before TLS began (%s): it may be over "
		    "max_sessions or restarting", cl->cl_addr,
		    err[0] ? err : "no reason given");
		return;
	}
	if (!cl->cl_hello && alert != -1) {
		client_finish(cl, EXIT_CONNECT, "%s: the target ended the "
		    "handshake with the alert '%s': %s (our certificate: "
		    "%s) — its log says more", cl->cl_addr,
		    SSL_alert_desc_string_long(alert),
		    client_alert_advice(alert), cl->cl_conf->sc_cert);
		return;
	}
	/*
	 * No alert read: the target may have sent one that the reset of
	 * the connection took with it before we read it.
	 */
	if (!cl->cl_hello) {
		client_finish(cl, EXIT_CONNECT, "%s: the target closed the "
		    "connection during the handshake (%s); it may not accept "
		    "our certificate %s — its log says why", cl->cl_addr,
		    err[0] ? err : "no reason given", cl->cl_conf->sc_cert);
		return;
	}
	if (!cl->cl_done) {
		cl->cl_lost = 1;
		client_finish(cl, EXIT_ERROR, "%s: connection to the target "
		    "lost: %s", cl->cl_addr, gone ||
		    (!err[0] && (events & BEV_EVENT_EOF)) ? "the target closed "
		    "it without a word (it stopped, restarted or failed: its "
		    "log says which)" : err[0] ? err :
		    /* errno only without TLS's word: it may be stale */
		    EVUTIL_SOCKET_ERROR() == ECONNRESET ? "reset (the target "
		    "failed, or something on the way cut it)" :
		    strerror(EVUTIL_SOCKET_ERROR()));
	}
}

static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	client_process(arg);
}

static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct client	*cl = arg;

	if (cl->cl_done) {
		/* The loop is the first connection's to end. */
		if (cl->cl_first == NULL &&
		    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			event_base_loopexit(cl->cl_base, NULL);
		return;
	}
	/* A drained socket is the likeliest moment for a key update. */
	tls_count_sent(cl->cl_ssl, &cl->cl_tls_sent, 0);
	if (cl->cl_hello && cl->cl_ops->co_drained != NULL)
		cl->cl_ops->co_drained(cl, cl->cl_arg);
}

/* Notes that something was queued to send: no keepalive needed. */
static void
client_queued_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct client	*cl = arg;

	if (info->n_added > 0)
		cl->cl_queued = 1;
}

/*
 * A Keepalive when nothing was sent for a whole tick (a long run of
 * zero blocks, a slow disk), so the target's idle_timeout does not
 * close a job that is making progress.
 */
static void
client_keepalive_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct client	*cl = arg;
	Frame		 f = FRAME__INIT;
	Keepalive	 ka = KEEPALIVE__INIT;

	if (cl->cl_done)
		return;
	if (!cl->cl_queued) {
		f.msg_case = FRAME__MSG_KEEPALIVE;
		f.keepalive = &ka;
		client_send(cl, &f);
	}
	cl->cl_queued = 0;
}

/* Ticks at a third of the shorter of both ends' idle timeouts. */
static void
client_keepalive_start(struct client *cl, uint32_t target_idle)
{
	struct timeval	 tv = { 0, 0 };
	uint32_t	 idle = IDLE_TIMEOUT;

	if (target_idle > 0 && target_idle < idle)
		idle = target_idle;
	tv.tv_sec = idle / 3;
	if (tv.tv_sec == 0)
		tv.tv_usec = 300000;
	if ((cl->cl_keepalive = event_new(cl->cl_base, -1, EV_PERSIST,
	    client_keepalive_cb, cl)) == NULL ||
	    evbuffer_add_cb(client_output(cl), client_queued_cb, cl) == NULL ||
	    event_add(cl->cl_keepalive, &tv) == -1)
		log_warnx("cannot start keepalives; a long run of zero "
		    "blocks may time out");
}

static void
client_frame(struct client *cl, const Frame *f)
{
	switch (f->msg_case) {
	case FRAME__MSG_ERROR:
		/*
		 * Over a limit, a deadline, or another connection of the job
		 * lost: a backup retries and resumes.
		 */
		cl->cl_busy = f->error->code == ERROR__CODE__BUSY;
		cl->cl_lost = f->error->code == ERROR__CODE__BUSY ||
		    f->error->code == ERROR__CODE__TIMEOUT ||
		    f->error->code == ERROR__CODE__ABORTED;
		client_finish(cl, client_exit_for(f->error->code), "target: %s",
		    f->error->message);
		return;
	case FRAME__MSG_KEEPALIVE:
		if (!cl->cl_hello)
			break;
		return;		/* its bytes reset the read timeout */
	case FRAME__MSG_HELLO:
		if (cl->cl_hello)
			break;
		if (f->hello->version != PROTOCOL_VERSION) {
			client_finish(cl, EXIT_CONNECT, "%s speaks protocol "
			    "version %u, this source speaks %d; upgrade the "
			    "older side", cl->cl_addr, f->hello->version,
			    PROTOCOL_VERSION);
			return;
		}
		cl->cl_hello = 1;
		snprintf(cl->cl_peer_software, sizeof(cl->cl_peer_software),
		    "%s", f->hello->software);
		log_debug("target is %s", f->hello->software);
		client_keepalive_start(cl, f->hello->idle_timeout);
		cl->cl_ops->co_ready(cl, cl->cl_arg);
		return;
	default:
		if (!cl->cl_hello)
			break;
		cl->cl_answered = 1;
		cl->cl_ops->co_frame(cl, f, cl->cl_arg);
		return;
	}
	client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected %s "
	    "frame", cl->cl_addr, frame_name(f));
}

static void
client_process(struct client *cl)
{
	struct evbuffer	*in = bufferevent_get_input(cl->cl_bev);
	uint8_t		*buf;
	size_t		 len;
	Frame		*f;
	int		 r;

	while (!cl->cl_done && !cl->cl_paused) {
		if ((r = frame_take(in, FRAME_MAX, &buf, &len)) == 0)
			return;
		if (r == -1) {
			client_finish(cl, EXIT_ERROR, "%s: protocol error: "
			    "%zu-byte frame", cl->cl_addr, len);
			return;
		}
		if (buf[0] == FRAME_BLOCK_TAG && cl->cl_hello &&
		    cl->cl_ops->co_block != NULL) {
			cl->cl_answered = 1;
			cl->cl_ops->co_block(cl, buf, len, cl->cl_arg);
			continue;
		}
		f = frame_unpack(buf, len);
		free(buf);
		if (f == NULL) {
			client_finish(cl, EXIT_ERROR, "%s: protocol error: "
			    "malformed frame", cl->cl_addr);
			return;
		}
		client_frame(cl, f);
		frame_free(f);
	}
}

/*
 * Stops taking frames, those already read included, until
 * client_resume: what the caller cannot take stays in the socket.
 */
void
client_pause(struct client *cl)
{
	cl->cl_paused = 1;
	bufferevent_disable(cl->cl_bev, EV_READ);
}

void
client_resume(struct client *cl)
{
	if (cl->cl_done)
		return;
	cl->cl_paused = 0;
	bufferevent_enable(cl->cl_bev, EV_READ);
	client_process(cl);
}

/*
 * Connects a TCP socket to host:port, trying each address, within
 * CONNECT_TIMEOUT_MS.  Returns the socket or -1 after a message.
 */
static int
client_dial(struct client *cl)
{
	struct addrinfo	 hints, *res = NULL, *ai;
	struct pollfd	 pfd;
	socklen_t	 sl;
	int		 fd = -1, error, soerr = 0, one = 1;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((error = getaddrinfo(cl->cl_host, cl->cl_port, &hints,
	    &res)) != 0) {
		log_warnx("cannot resolve target %s: %s", cl->cl_addr,
		    gai_strerror(error));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
		    SOCK_NONBLOCK, ai->ai_protocol)) == -1)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		soerr = errno;
		if (errno == EINPROGRESS) {
			pfd.fd = fd;
			pfd.events = POLLOUT;
			sl = sizeof(soerr);
			if ((error = poll(&pfd, 1, CONNECT_TIMEOUT_MS)) == 0)
				soerr = ETIMEDOUT;
			else if (error == 1 && getsockopt(fd, SOL_SOCKET,
			    SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
				break;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		log_warnx("cannot connect to target %s: %s; is "
		    "target-transporter running there?", cl->cl_addr,
		    strerror(soerr));
		return -1;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/*
 * Makes a client for one command: its event loop, worker pool and TLS
 * context.  NULL after a message if the configuration is unusable.
 */
struct client *
client_new(struct source_conf *sc, const struct client_ops *ops, void *arg)
{
	struct client	*cl;
	struct tls_conf	 tls;

	if ((cl = calloc(1, sizeof(*cl))) == NULL)
		return NULL;
	cl->cl_conf = sc;
	cl->cl_ops = ops;
	cl->cl_arg = arg;
	cl->cl_exit = EXIT_ERROR;
	if (conf_split_hostport(sc->sc_target, &cl->cl_host,
	    &cl->cl_port) == -1) {
		log_warnx("%s: target '%s' is not HOST:PORT", sc->sc_path,
		    sc->sc_target);
		goto fail;
	}
	if (cl->cl_port == NULL && (cl->cl_port =
	    strdup(SOURCE_PORT_DEFAULT)) == NULL)
		goto fail;
	snprintf(cl->cl_addr, sizeof(cl->cl_addr), "%s", sc->sc_target);
	memset(&tls, 0, sizeof(tls));
	tls.tc_cert = sc->sc_cert;
	tls.tc_key = sc->sc_key;
	tls.tc_ca = sc->sc_ca;
	tls.tc_crl = sc->sc_crl;
	if ((cl->cl_ctx = tls_ctx_client(&tls)) == NULL)
		goto fail;
	if (evthread_use_pthreads() == -1 ||
	    (cl->cl_base = event_base_new()) == NULL) {
		log_warnx("cannot create the event loop");
		goto fail;
	}
	if ((cl->cl_pool = pool_new(cl->cl_base, (int)sc->sc_workers)) ==
	    NULL) {
		log_warnx("cannot start worker threads");
		goto fail;
	}
	return cl;
 fail:
	client_free(cl);
	return NULL;
}

/*
 * bandwidth_limit: a token bucket each way, with a burst of a quarter
 * second; shared by every connection of a job that may have several.
 * 0, or -1 after a message.
 */
static int
client_rate_limit(struct client *cl)
{
	struct timeval	 tick = { 0, 250000 };
	struct client	*first = cl->cl_first ? cl->cl_first : cl;
	uint64_t	 rate = cl->cl_conf->sc_bandwidth;
	size_t		 per_tick;

	if (rate == 0)
		return 0;
	per_tick = (size_t)(rate / 4);
	if (first->cl_rate == NULL && (first->cl_rate =
	    ev_token_bucket_cfg_new(per_tick, per_tick, per_tick, per_tick,
	    &tick)) == NULL)
		goto fail;
	if (cl->cl_conf->sc_connections <= 1) {
		if (bufferevent_set_rate_limit(cl->cl_bev, first->cl_rate) == -1)
			goto fail;
		return 0;
	}
	if (first->cl_rate_group == NULL && (first->cl_rate_group =
	    bufferevent_rate_limit_group_new(cl->cl_base,
	    first->cl_rate)) == NULL)
		goto fail;
	if (bufferevent_add_to_rate_limit_group(cl->cl_bev,
	    first->cl_rate_group) == -1)
		goto fail;
	return 0;
 fail:
	log_warnx("cannot set the bandwidth limit");
	return -1;
}

/*
 * Connects and starts the TLS handshake on the loop.  EXIT_OK, or the
 * exit code after a message.
 */
static int
client_connect(struct client *cl)
{
	struct timeval	 tv = { HANDSHAKE_TIMEOUT, 0 };
	int		 fd;

	if ((fd = client_dial(cl)) == -1) {
		cl->cl_lost = 1;	/* the target may be restarting */
		return EXIT_CONNECT;
	}
	if ((cl->cl_ssl = tls_client_ssl(cl->cl_ctx,
	    cl->cl_conf->sc_server_name ? cl->cl_conf->sc_server_name :
	    cl->cl_host)) == NULL) {
		close(fd);
		return EXIT_ERROR;
	}
	cl->cl_bev = bufferevent_openssl_socket_new(cl->cl_base, fd,
	    cl->cl_ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE |
	    BEV_OPT_DEFER_CALLBACKS);
	if (cl->cl_bev == NULL) {
		SSL_free(cl->cl_ssl);
		cl->cl_ssl = NULL;
		close(fd);
		log_warnx("cannot create bufferevent");
		return EXIT_ERROR;
	}
	bufferevent_setcb(cl->cl_bev, client_read_cb, client_write_cb,
	    client_event_cb, cl);
	bufferevent_setwatermark(cl->cl_bev, EV_READ, 0,
	    FRAME_MAX + FRAME_HDR_LEN);
	bufferevent_setwatermark(cl->cl_bev, EV_WRITE, SOURCE_OUT_MAX / 2, 0);
	bufferevent_set_timeouts(cl->cl_bev, &tv, NULL);
	if (client_rate_limit(cl) == -1)
		return EXIT_ERROR;
	bufferevent_enable(cl->cl_bev, EV_READ | EV_WRITE);
	return EXIT_OK;
}

/*
 * Connects and runs the event loop until the command finishes.
 * Returns the command's exit code.
 */
int
client_run(struct client *cl)
{
	int	 rv;

	if ((rv = client_connect(cl)) != EXIT_OK)
		return rv;
	/* Finished jobs arrive from the pool even with the socket idle. */
	event_base_loop(cl->cl_base, EVLOOP_NO_EXIT_ON_EMPTY);
	if (!cl->cl_done)
		client_finish(cl, EXIT_ERROR, "event loop stopped early");
	return cl->cl_exit;
}

/*
 * After an attempt of a command that can resume (backup, restore):
 * 1 if another is worth making, after sleeping the backoff; 0 if not
 * (the connection was not lost, or resume_timeout ran out: said so).
 * resume_timeout runs from the loss of a working connection; a BUSY
 * answer before the job's first frame (another source-side backup of
 * the name runs, say) is no progress.  The delay doubles from 1 s up
 * to RECONNECT_DELAY_MAX.  Zero rt before the first attempt.
 */
int
client_retry(struct client *cl, struct retry *rt, const char *what)
{
	int	 waiting = cl->cl_busy && !cl->cl_answered;

	if (!cl->cl_lost)
		return 0;
	rt->rt_attempts++;
	if ((cl->cl_hello && !waiting) || rt->rt_deadline == 0) {
		rt->rt_deadline = now_ms() + cl->cl_conf->sc_resume_timeout *
		    1000;
		rt->rt_delay = 1;
	}
	if (now_ms() + rt->rt_delay * 1000 > rt->rt_deadline) {
		log_warnx("%s gave up reconnecting after %d attempt(s) "
		    "(resume_timeout); run it again to resume", what,
		    rt->rt_attempts);
		return 0;
	}
	if (waiting)
		log_warnx("%s: the target is busy (attempt %d); trying again "
		    "in %llu s", what, rt->rt_attempts,
		    (unsigned long long)rt->rt_delay);
	else
		log_warnx("%s interrupted (attempt %d); reconnecting in %llu "
		    "s to resume", what, rt->rt_attempts,
		    (unsigned long long)rt->rt_delay);
	sleep((unsigned int)rt->rt_delay);
	rt->rt_delay = rt->rt_delay * 2 > RECONNECT_DELAY_MAX ?
	    RECONNECT_DELAY_MAX : rt->rt_delay * 2;
	return 1;
}

/*
 * One more connection for the job of the running client first, with
 * its own ops: it shares first's loop, pool and TLS context, and
 * first's client_free frees it.  Its Hello calls ops->co_ready.  Until
 * it joins (client_join), its failure ends only itself; after,
 * it ends first too.  NULL after a message if it cannot be opened.
 */
struct client *
client_add(struct client *first, const struct client_ops *ops, void *arg)
{
	struct client	*cl;
	int		 rv;

	if (first->cl_nmore == JOB_CONNECTIONS_MAX ||
	    (cl = calloc(1, sizeof(*cl))) == NULL)
		return NULL;
	*cl = (struct client){ .cl_conf = first->cl_conf, .cl_ops = ops,
	    .cl_arg = arg, .cl_exit = EXIT_ERROR, .cl_first = first,
	    .cl_base = first->cl_base, .cl_pool = first->cl_pool,
	    .cl_ctx = first->cl_ctx, .cl_host = first->cl_host,
	    .cl_port = first->cl_port, .cl_optional = 1 };
	snprintf(cl->cl_addr, sizeof(cl->cl_addr), "%s", first->cl_addr);
	first->cl_more[first->cl_nmore++] = cl;
	if ((rv = client_connect(cl)) != EXIT_OK) {
		cl->cl_done = 1;
		return NULL;
	}
	return cl;
}

/*
 * An added connection joins the job whose token (JOB_TOKEN_LEN bytes)
 * the target gave: from here on it carries blocks, and its loss is the
 * job's (it is no longer optional).
 */
void
client_join(struct client *cl, const uint8_t *token)
{
	Frame		 f = FRAME__INIT;
	JoinJob		 jj = JOIN_JOB__INIT;

	jj.job_token.data = (uint8_t *)token;
	jj.job_token.len = JOB_TOKEN_LEN;
	f.msg_case = FRAME__MSG_JOIN_JOB;
	f.join_job = &jj;
	client_send(cl, &f);
	cl->cl_optional = 0;
}

/* The end of a connection: its events and TLS, and its socket. */
static void
client_close(struct client *cl)
{
	if (cl->cl_keepalive != NULL)
		event_free(cl->cl_keepalive);
	if (cl->cl_bev != NULL) {
		/* Say goodbye properly: a close_notify, not a bare EOF. */
		if (cl->cl_hello)
			(void)SSL_shutdown(cl->cl_ssl);
		/* Now: the group is freed before the loop frees the bev. */
		if ((cl->cl_first ? cl->cl_first : cl)->cl_rate_group != NULL)
			(void)bufferevent_remove_from_rate_limit_group(
			    cl->cl_bev);
		bufferevent_free(cl->cl_bev);	/* frees cl_ssl */
	}
	else
		SSL_free(cl->cl_ssl);
	crypto_wipe(cl->cl_key_out, sizeof(cl->cl_key_out));
	crypto_wipe(cl->cl_key_in, sizeof(cl->cl_key_in));
}

/*
 * Frees the client and the connections added to it; finished jobs
 * still in the pool are run first.
 */
void
client_free(struct client *cl)
{
	int	 i;

	if (cl == NULL)
		return;
	cl->cl_done = 1;
	for (i = 0; i < cl->cl_nmore; i++)
		cl->cl_more[i]->cl_done = 1;
	pool_free(cl->cl_pool);
	for (i = 0; i < cl->cl_nmore; i++) {
		client_close(cl->cl_more[i]);
		free(cl->cl_more[i]);
	}
	client_close(cl);
	if (cl->cl_rate_group != NULL)
		bufferevent_rate_limit_group_free(cl->cl_rate_group);
	if (cl->cl_base != NULL)
		event_base_free(cl->cl_base);
	if (cl->cl_rate != NULL)
		ev_token_bucket_cfg_free(cl->cl_rate);
	SSL_CTX_free(cl->cl_ctx);
	free(cl->cl_host);
	free(cl->cl_port);
	free(cl);
}
