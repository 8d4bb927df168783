/*
 * session.c: one TLS connection from a source: handshake, identity to
 * tenant, Hello, frame dispatch, and closing.
 *
 * A session is freed only when none of its jobs is still in the worker
 * pool; session_close marks it closing and the last job frees it.
 */
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "metrics.h"
#include "target.h"

#define REFUSE_LOG_EVERY	10	/* seconds between flood log lines */
#define FLUSH_TIMEOUT		10	/* to deliver a last Error frame */
#define STOP_FLUSH_TIMEOUT	1	/* the same, when the target stops */
#define LINGER_TIMEOUT		5	/* for the source to close after us */
/* The first byte of a packed Frame holding a Block (field 3, bytes). */
#define FRAME_BLOCK_TAG		((3 << 3) | 2)

static void	session_read_cb(struct bufferevent *, void *);
static void	session_write_cb(struct bufferevent *, void *);
static void	session_event_cb(struct bufferevent *, short, void *);
static void	session_process(struct session *);
static void	session_free(struct session *);
static void	session_deadline(evutil_socket_t, short, void *);
static void	session_frame_deadline(evutil_socket_t, short, void *);
static void	session_idle_arm(struct session *, uint64_t);
static void	session_progress(struct session *);
static void	session_linger(struct session *);
static void	session_next_turn(evutil_socket_t, short, void *);

static const char *
session_state_name(enum session_state st)
{
	switch (st) {
	case SESSION_HANDSHAKE:
		return "handshake";
	case SESSION_HELLO:
		return "hello";
	case SESSION_IDLE:
		return "idle";
	case SESSION_BACKUP:
		return "backup";
	case SESSION_RESTORE:
		return "restore";
	case SESSION_INDEX:
		return "index";
	case SESSION_CLOSING:
		return "closing";
	}
	return "unknown";
}

/* Logs a line prefixed with the session id, peer and tenant. */
void
session_log(struct session *se, const char *fmt, ...)
{
	char	 msg[512];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_info("session %llu %s%s%s: %s", (unsigned long long)se->se_id,
	    se->se_addr, se->se_tenant ? " tenant " : "",
	    se->se_tenant ? se->se_tenant->tn_name : "", msg);
}

void
session_accept(struct target *tg, int fd, struct sockaddr *sa, int salen)
{
	struct session	*se = NULL;
	struct timeval	 tv = { (time_t)tg->tg_conf->tc_handshake_timeout, 0 };
	char		 host[NI_MAXHOST], port[NI_MAXSERV];
	SSL		*ssl = NULL;
	int		 one = 1;

	if (getnameinfo(sa, salen, host, sizeof(host), port, sizeof(port),
	    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(host, sizeof(host), "?"), snprintf(port,
		    sizeof(port), "?");
	if (tg->tg_stopping) {
		close(fd);
		return;
	}
	/*
	 * Over max_sessions a few more connections are let in, to tell
	 * their sources BUSY after the handshake; beyond those, a flood
	 * is closed at once so it cannot exhaust descriptors or CPU.
	 */
	if ((uint64_t)tg->tg_nsessions >= tg->tg_conf->tc_max_sessions +
	    TARGET_REFUSE_SLACK) {
		METRICS_INC(metrics.mt_errors, "BUSY");
		tg->tg_refused++;
		if (time(NULL) - tg->tg_refused_logged >= REFUSE_LOG_EVERY) {
			log_warnx("refused %llu connection(s), the latest from "
			    "%s:%s: %d sessions open, max_sessions is %llu; "
			    "raise max_sessions if this load is legitimate",
			    (unsigned long long)tg->tg_refused, host, port,
			    tg->tg_nsessions,
			    (unsigned long long)tg->tg_conf->tc_max_sessions);
			tg->tg_refused = 0;
			tg->tg_refused_logged = time(NULL);
		}
		close(fd);
		return;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((se = calloc(1, sizeof(*se))) == NULL ||
	    (ssl = SSL_new(tg->tg_ctx)) == NULL) {
		log_warn("session for %s:%s", host, port);
		goto fail;
	}
	se->se_id = ++tg->tg_next_id;
	se->se_target = tg;
	se->se_ssl = ssl;
	se->se_state = SESSION_HANDSHAKE;
	se->se_refuse = (uint64_t)tg->tg_nsessions >=
	    tg->tg_conf->tc_max_sessions;
	snprintf(se->se_addr, sizeof(se->se_addr), "%s%s%s:%s",
	    strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "",
	    port);
	se->se_bev = bufferevent_openssl_socket_new(tg->tg_base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE |
	    BEV_OPT_DEFER_CALLBACKS);
	if (se->se_bev == NULL) {
		log_warnx("session %llu: cannot create bufferevent",
		    (unsigned long long)se->se_id);
		goto fail;
	}
	fd = -1;	/* the bufferevent owns fd and ssl now */
	ssl = NULL;
	bufferevent_setcb(se->se_bev, session_read_cb, session_write_cb,
	    session_event_cb, se);
	/* Never buffer more than one whole frame we have not parsed. */
	bufferevent_setwatermark(se->se_bev, EV_READ, 0,
	    FRAME_MAX + FRAME_HDR_LEN);
	bufferevent_setwatermark(se->se_bev, EV_WRITE, SESSION_OUT_LOW, 0);
	bufferevent_set_timeouts(se->se_bev, &tv, NULL);
	if (tg->tg_rate_group != NULL)
		(void)bufferevent_add_to_rate_limit_group(se->se_bev,
		    tg->tg_rate_group);
	/*
	 * An absolute deadline for the handshake and the Hello: the read
	 * timeout restarts with every byte, so a peer dribbling one byte
	 * at a time would otherwise hold the slot for ever.
	 */
	if ((se->se_deadline = evtimer_new(tg->tg_base, session_deadline,
	    se)) == NULL || evtimer_add(se->se_deadline, &tv) == -1 ||
	    (se->se_frame_timer = evtimer_new(tg->tg_base,
	    session_frame_deadline, se)) == NULL ||
	    (se->se_turn = evtimer_new(tg->tg_base, session_next_turn,
	    se)) == NULL) {
		log_warnx("session %llu: cannot arm its deadline",
		    (unsigned long long)se->se_id);
		goto fail;
	}
	bufferevent_enable(se->se_bev, EV_READ | EV_WRITE);
	TAILQ_INSERT_TAIL(&tg->tg_sessions, se, se_entry);
	tg->tg_nsessions++;
	metrics_add(metrics_series(metrics.mt_sessions_total, NULL, NULL), 1);
	metrics_gauge_add(metrics_series(metrics.mt_sessions, "open", NULL),
	    1);
	log_debug("session %llu: connection from %s",
	    (unsigned long long)se->se_id, se->se_addr);
	return;
 fail:
	if (se != NULL && se->se_deadline != NULL)
		event_free(se->se_deadline);
	if (se != NULL && se->se_frame_timer != NULL)
		event_free(se->se_frame_timer);
	if (se != NULL && se->se_turn != NULL)
		event_free(se->se_turn);
	if (se != NULL && se->se_bev != NULL)
		bufferevent_free(se->se_bev);
	SSL_free(ssl);
	free(se);
	if (fd != -1)
		close(fd);
}

/* Sessions of tenant tn open now, other than se. */
static uint64_t
session_tenant_count(struct session *se, const struct tenant *tn)
{
	struct session	*other;
	uint64_t	 n = 0;

	/* By name: a reload gives the tenant a new struct. */
	TAILQ_FOREACH(other, &se->se_target->tg_sessions, se_entry)
		if (other != se && other->se_tenant != NULL &&
		    other->se_state != SESSION_CLOSING &&
		    strcmp(other->se_tenant->tn_name, tn->tn_name) == 0)
			n++;
	return n;
}

/*
 * The handshake succeeded: map the identity to a tenant, check the
 * session limits, send Hello.
 */
static void
session_connected(struct session *se)
{
	struct target	*tg = se->se_target;
	struct tenant	*tn;
	Frame		 f = FRAME__INIT;
	Hello		 h = HELLO__INIT;
	char		 subject[256];
	uint64_t	 n;

	tls_peer_describe(se->se_ssl, subject, sizeof(subject));
	se->se_state = SESSION_HELLO;	/* from here on, errors are frames */
	if ((tn = target_tenant_for(tg->tg_conf, se->se_ssl)) == NULL) {
		session_fail(se, ERROR__CODE__UNAUTHORISED, "certificate %s "
		    "is not mapped to a tenant on this target; add its name "
		    "as 'identity' of a [tenant] in %s", subject,
		    tg->tg_conf->tc_path);
		return;
	}
	if (se->se_refuse) {
		session_fail(se, ERROR__CODE__BUSY, "busy: %d sessions "
		    "open, max_sessions is %llu; retry later",
		    tg->tg_nsessions - 1,
		    (unsigned long long)tg->tg_conf->tc_max_sessions);
		return;
	}
	if ((n = session_tenant_count(se, tn)) >=
	    tg->tg_conf->tc_max_tenant_sessions) {
		session_fail(se, ERROR__CODE__BUSY, "busy: tenant '%s' "
		    "has %llu sessions open, max_sessions_per_tenant is %llu; "
		    "retry later", tn->tn_name, (unsigned long long)n,
		    (unsigned long long)tg->tg_conf->tc_max_tenant_sessions);
		return;
	}
	se->se_tenant = tn;
	if (tls_session_keys(se->se_ssl, se->se_key_in,
	    se->se_key_out) == -1) {
		session_fail(se, ERROR__CODE__INTERNAL, "cannot derive the "
		    "session keys");
		return;
	}
	session_log(se, "authenticated as %s (%s)", subject,
	    SSL_get_version(se->se_ssl));
	/* The deadline timers take over from the handshake's timeout. */
	bufferevent_set_timeouts(se->se_bev, NULL, NULL);
	h.version = PROTOCOL_VERSION;
	h.software = "target-transporter " TRANSPORTER_VERSION;
	h.max_frame = FRAME_MAX;
	h.idle_timeout = (uint32_t)se->se_target->tg_conf->tc_idle_timeout;
	f.msg_case = FRAME__MSG_HELLO;
	f.hello = &h;
	session_send(se, &f);
}

/*
 * Progress on the session: a whole frame from the source, one of our
 * jobs done, a frame of ours sent, megabytes of a restore read.  The
 * idle deadline counts from the latest.
 */
static void
session_progress(struct session *se)
{
	se->se_progress = now_ms();
}

/* Arms the idle deadline ms from now, once the Hello is in. */
static void
session_idle_arm(struct session *se, uint64_t ms)
{
	struct timeval	 tv = { (time_t)(ms / 1000),
	    (suseconds_t)(ms % 1000) * 1000 };

	if (se->se_state == SESSION_HANDSHAKE ||
	    se->se_state == SESSION_HELLO || se->se_state == SESSION_CLOSING)
		return;
	(void)evtimer_add(se->se_deadline, &tv);
}

/* Is a whole frame on the input, not yet taken (we lag, not the peer)? */
static int
session_frame_waiting(struct session *se)
{
	struct evbuffer	*in = bufferevent_get_input(se->se_bev);
	uint8_t		 hdr[FRAME_HDR_LEN];
	uint32_t	 n;

	if (evbuffer_copyout(in, hdr, sizeof(hdr)) != (ev_ssize_t)sizeof(hdr))
		return 0;
	n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
	    (uint32_t)hdr[2] << 8 | hdr[3];
	return evbuffer_get_length(in) >= (size_t)n + FRAME_HDR_LEN;
}

/*
 * se_deadline: before Hello, the handshake deadline; after it, the
 * idle deadline, which only counts time the session waits on the
 * source: with jobs of ours under way, reading paused for a job slot,
 * or a whole frame not yet taken (a loop busy elsewhere), it is the
 * target that is slow, and the deadline moves on; but not while reading
 * is paused because the source does not read what it was sent.
 */
static void
session_deadline(evutil_socket_t fd, short ev, void *arg)
{
	struct session	*se = arg;
	uint64_t	 idle, quiet;

	if (se->se_state == SESSION_CLOSING)
		return;
	if (se->se_state != SESSION_HANDSHAKE &&
	    se->se_state != SESSION_HELLO) {
		idle = se->se_target->tg_conf->tc_idle_timeout * 1000;
		if (!se->se_out_paused && (se->se_jobs > 0 ||
		    se->se_read_paused || se->se_held != NULL ||
		    session_frame_waiting(se)))
			session_progress(se);
		quiet = now_ms() - se->se_progress;
		if (quiet < idle) {
			session_idle_arm(se, idle - quiet);
			return;
		}
		if (se->se_out_paused) {
			session_fail(se, ERROR__CODE__TIMEOUT, "the source read "
			    "none of the %zu bytes queued for it for %llu s "
			    "(idle_timeout); closed", evbuffer_get_length(
			    bufferevent_get_output(se->se_bev)),
			    (unsigned long long)
			    se->se_target->tg_conf->tc_idle_timeout);
			return;
		}
		session_fail(se, ERROR__CODE__TIMEOUT, "no frame from the "
		    "source for %llu s in state %s (idle_timeout); closed",
		    (unsigned long long)
		    se->se_target->tg_conf->tc_idle_timeout,
		    session_state_name(se->se_state));
		return;
	}
	METRICS_INC(metrics.mt_errors, "tls");
	se->se_dead = 1;
	bufferevent_disable(se->se_bev, EV_READ | EV_WRITE);
	session_close(se, "no handshake and Hello within %llu s; closed",
	    (unsigned long long)se->se_target->tg_conf->tc_handshake_timeout);
}

static void
session_event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct session	*se = arg;
	const char	*reason;
	char		 ssl_err[512];
	int		 alert, gone;

	if (events & BEV_EVENT_CONNECTED) {
		session_connected(se);
		return;
	}
	if (se->se_state == SESSION_CLOSING) {
		/*
		 * The source closed, the socket failed, or the linger or
		 * flush timed out: nothing more can be sent.  Free now, or
		 * when the last job comes back (session_job_done).
		 */
		se->se_dead = 1;
		bufferevent_disable(bev, EV_READ | EV_WRITE);
		if (se->se_jobs == 0)
			session_free(se);
		return;
	}
	/* The connection is gone or stuck: nothing more can be sent. */
	se->se_dead = 1;
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	if (events & BEV_EVENT_TIMEOUT) {
		session_close(se, "timed out in state %s",
		    session_state_name(se->se_state));
		return;
	}
	if (events & BEV_EVENT_ERROR) {
		alert = tls_bev_errors(bev, ssl_err, sizeof(ssl_err), &gone);

		if (se->se_state == SESSION_HANDSHAKE) {
			METRICS_INC(metrics.mt_errors, "tls");
			reason = tls_verify_reason(se->se_ssl);
			if (reason == NULL && tls_alert_on_cert(alert))
				session_close(se, "TLS handshake failed: the "
				    "source refused this target's certificate "
				    "(TLS alert: %s); check that the source's "
				    "'ca' signed it and that its 'target' or "
				    "'server_name' is a name in it",
				    SSL_alert_desc_string_long(alert));
			else
				session_close(se, "TLS handshake failed: %s%s",
				    reason ? "client certificate rejected: " :
				    "", reason ? reason : ssl_err[0] ? ssl_err :
				    "connection closed");
		} else if (se->se_state == SESSION_IDLE ||
		    se->se_state == SESSION_HELLO)
			session_close(se, "connection closed by the source");
		else
			session_close(se, "connection lost in state %s: %s",
			    session_state_name(se->se_state), gone ?
			    "the source closed it without a "
			    "word (it stopped or failed)" : ssl_err[0] ?
			    ssl_err : strerror(EVUTIL_SOCKET_ERROR()));
		return;
	}
	if (events & BEV_EVENT_EOF)
		session_close(se, "connection closed by the source%s",
		    se->se_state == SESSION_BACKUP ? " during a backup; "
		    "the unfinished job is discarded" : "");
}

static void
session_read_cb(struct bufferevent *bev, void *arg)
{
	struct session	*se = arg;
	struct evbuffer	*in = bufferevent_get_input(bev);

	if (se->se_state == SESSION_CLOSING) {
		/* Read to the end so closing never resets the connection. */
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	session_process(se);
}

/*
 * The output is delivered: send close_notify, stop writing, and read
 * until the source closes too (or LINGER_TIMEOUT), so that data it had
 * in flight does not turn our close into a reset that could destroy
 * the Error frame we sent before it is read.
 */
static void
session_linger(struct session *se)
{
	struct timeval	 tv = { LINGER_TIMEOUT, 0 };

	if (se->se_target->tg_stopping || se->se_lingering) {
		if (se->se_target->tg_stopping)
			session_free(se);
		return;
	}
	se->se_lingering = 1;
	(void)SSL_shutdown(se->se_ssl);
	(void)shutdown(bufferevent_getfd(se->se_bev), SHUT_WR);
	bufferevent_set_timeouts(se->se_bev, &tv, NULL);
	bufferevent_enable(se->se_bev, EV_READ);
}

static void
session_write_cb(struct bufferevent *bev, void *arg)
{
	struct session	*se = arg;

	if (se->se_state == SESSION_CLOSING) {
		if (se->se_jobs == 0 && evbuffer_get_length(
		    bufferevent_get_output(bev)) == 0)
			session_linger(se);
		return;
	}
	/* A drained socket is the likeliest moment for a key update. */
	tls_count_sent(se->se_ssl, &se->se_tls_sent, 0);
	switch (se->se_state) {
	case SESSION_RESTORE:
		/* The source read megabytes: progress, even between credits. */
		session_progress(se);
		restore_pump(se);
		break;
	case SESSION_INDEX:
		restore_index_more(se);
		break;
	case SESSION_BACKUP:
		receive_drained(se);
		break;
	default:
		break;
	}
	if (se->se_out_paused)
		session_resume(se);
}

static int
session_hello(struct session *se, const Hello *h)
{
	if (h->version != PROTOCOL_VERSION) {
		session_fail(se, ERROR__CODE__VERSION, "protocol version %u "
		    "is not supported; this target speaks version %d",
		    h->version, PROTOCOL_VERSION);
		return -1;
	}
	se->se_state = SESSION_IDLE;
	session_progress(se);
	session_idle_arm(se, se->se_target->tg_conf->tc_idle_timeout * 1000);
	return 0;
}

/*
 * KeychainUpdate: a source replaces its backup's key file (a password
 * change).  Opaque here but for its magic: keys are not ours to read.
 */
static int
session_keychain(struct session *se, const KeychainUpdate *ku)
{
	Frame		 f = FRAME__INIT;
	KeychainStored	 ks = KEYCHAIN_STORED__INIT;

	if (!name_is_valid(ku->name) || ku->keychain.len < 4 ||
	    memcmp(ku->keychain.data, "TRKC", 4) != 0) {
		session_fail(se, ERROR__CODE__PROTOCOL, "a key file update "
		    "needs a backup name and a key file");
		return -1;
	}
	/* That backup's commit would put back the key file it began with. */
	if (receive_chain_busy(se, ku->name)) {
		session_fail(se, ERROR__CODE__BUSY, "busy: a source-side backup "
		    "of '%s' is running; change its key file when it is done",
		    ku->name);
		return -1;
	}
	if (repo_keychain_store(se->se_target->tg_repo,
	    se->se_tenant->tn_name, ku->name, ku->keychain.data,
	    ku->keychain.len) == -1) {
		session_fail(se, session_errno_code(errno), "cannot store the "
		    "key file of '%s': %s", ku->name, errno == ENOENT ?
		    "no such backup" : strerror(errno));
		return -1;
	}
	session_log(se, "key file of '%s' replaced", ku->name);
	ks.name = ku->name;
	f.msg_case = FRAME__MSG_KEYCHAIN_STORED;
	f.keychain_stored = &ks;
	session_send(se, &f);
	return 0;
}

/*
 * JoinJob: this connection carries part of the running backup or
 * restore its token names.  An unknown token, another tenant's job and
 * one that takes no more connections are refused alike, so that a
 * source learns nothing of jobs that are not its own.  0, or -1 if the
 * session closed.
 */
static int
session_join(struct session *se, const JoinJob *jj)
{
	if (jj->job_token.len == JOB_TOKEN_LEN &&
	    (receive_join(se, jj->job_token.data) ||
	    restore_join(se, jj->job_token.data)))
		return 0;
	session_fail(se, ERROR__CODE__PROTOCOL, "no job of tenant '%s' can "
	    "take another connection with that token",
	    se->se_tenant->tn_name);
	return -1;
}

/* Handles one decoded frame.  Returns 0, or -1 if the session closed. */
static int
session_dispatch(struct session *se, const Frame *f, size_t len)
{
	if (f->msg_case == FRAME__MSG_ERROR) {
		session_close(se, "source reported: %s", f->error->message);
		return -1;
	}
	if (f->msg_case == FRAME__MSG_KEEPALIVE &&
	    se->se_state != SESSION_HELLO) {
		Frame	 k = FRAME__INIT;
		Keepalive ka = KEEPALIVE__INIT;

		k.msg_case = FRAME__MSG_KEEPALIVE;
		k.keepalive = &ka;
		session_send(se, &k);
		return 0;
	}
	switch (se->se_state) {
	case SESSION_HELLO:
		if (f->msg_case == FRAME__MSG_HELLO)
			return session_hello(se, f->hello);
		break;
	case SESSION_IDLE:
		switch (f->msg_case) {
		case FRAME__MSG_BACKUP_BEGIN:
			return receive_begin(se, f->backup_begin);
		case FRAME__MSG_RESTORE_REQUEST:
			return restore_begin(se, f->restore_request);
		case FRAME__MSG_LIST_REQUEST:
			return list_points(se, f->list_request);
		case FRAME__MSG_CREDIT:
			/* Granted while the last restore was ending. */
			return 0;
		case FRAME__MSG_KEYCHAIN_UPDATE:
			return session_keychain(se, f->keychain_update);
		case FRAME__MSG_JOIN_JOB:
			return session_join(se, f->join_job);
		default:
			break;
		}
		break;
	case SESSION_BACKUP:
		if (f->msg_case == FRAME__MSG_BACKUP_END)
			return receive_end(se, f->backup_end);
		if (f->msg_case == FRAME__MSG_UNCHANGED)
			return receive_unchanged(se, f->unchanged, len);
		break;
	case SESSION_RESTORE:
		if (f->msg_case == FRAME__MSG_CREDIT)
			return restore_credit(se, f->credit);
		if (f->msg_case == FRAME__MSG_JOINED)
			return restore_joined(se, f->joined);
		break;
	case SESSION_INDEX:
		/* As between requests: a late grant means nothing. */
		if (f->msg_case == FRAME__MSG_CREDIT)
			return 0;
		break;
	default:
		break;
	}
	session_fail(se, ERROR__CODE__PROTOCOL, "unexpected %s frame in "
	    "state %s", frame_name(f), session_state_name(se->se_state));
	return -1;
}

/*
 * frame_timeout: the part of a frame on the input must be whole within
 * frame_timeout of its first byte.  Absolute: more bytes of the same
 * frame do not move the deadline, only a new frame does (took: a frame
 * was taken since the last call).
 */
static void
session_frame_watch(struct session *se, struct evbuffer *in, int took)
{
	struct timeval	 tv = {
	    (time_t)se->se_target->tg_conf->tc_frame_timeout, 0 };

	if (evbuffer_get_length(in) == 0) {
		if (se->se_frame_armed)
			(void)evtimer_del(se->se_frame_timer);
		se->se_frame_armed = 0;
		return;
	}
	if (se->se_frame_armed && !took)
		return;
	if (evtimer_add(se->se_frame_timer, &tv) == 0)
		se->se_frame_armed = 1;
}

static void
session_frame_deadline(evutil_socket_t fd, short ev, void *arg)
{
	struct session	*se = arg;
	struct evbuffer	*in = bufferevent_get_input(se->se_bev);
	uint8_t		 hdr[FRAME_HDR_LEN];
	size_t		 have = evbuffer_get_length(in);
	char		 want[32] = "";

	se->se_frame_armed = 0;
	if (se->se_state == SESSION_CLOSING || se->se_read_paused)
		return;
	if (session_frame_waiting(se)) {
		/* It came whole while the loop was busy: ours to take. */
		session_frame_watch(se, in, 1);
		return;
	}
	if (evbuffer_copyout(in, hdr, sizeof(hdr)) == (ev_ssize_t)sizeof(hdr))
		snprintf(want, sizeof(want), " of %u",
		    (unsigned)hdr[0] << 24 | (unsigned)hdr[1] << 16 |
		    (unsigned)hdr[2] << 8 | hdr[3]);
	session_fail(se, ERROR__CODE__TIMEOUT, "a frame did not arrive "
	    "whole within %llu s of its first byte (frame_timeout): %zu%s "
	    "bytes came; closed", (unsigned long long)
	    se->se_target->tg_conf->tc_frame_timeout,
	    have >= FRAME_HDR_LEN ? have - FRAME_HDR_LEN : have, want);
}

/*
 * Stops reading: until a job slot frees (session_job_done), or, with
 * out, until the source has read its output (session_write_cb).
 */
static void
session_pause(struct session *se, int out)
{
	se->se_read_paused = 1;
	se->se_out_paused = out;
	bufferevent_disable(se->se_bev, EV_READ);
	/* Our pause: the frame deadline stops. */
	if (se->se_frame_armed)
		(void)evtimer_del(se->se_frame_timer);
	se->se_frame_armed = 0;
}

/* The next turn of a session that had more frames than one turn takes. */
static void
session_next_turn(evutil_socket_t fd, short ev, void *arg)
{
	struct session	*se = arg;

	if (se->se_state != SESSION_CLOSING && !se->se_read_paused)
		session_process(se);
}

/*
 * Reads nothing until session_wait_end: a job of the session's own is
 * settling what the next frame means (a restore point being opened in
 * the pool, a backup's base being read).  Other jobs of the session
 * that end meanwhile do not restart reading.
 */
static void
session_wait(struct session *se)
{
	se->se_waiting = 1;
	session_pause(se, 0);
}

/*
 * Runs pj in the pool for se, which reads nothing until pj's done
 * callback calls session_wait_end and session_job_done.
 */
void
session_submit(struct session *se, struct pool_job *pj)
{
	session_job_hold(se);
	session_wait(se);
	pool_submit(se->se_target->tg_pool, pj);
}

/* The job is done: reading restarts with the caller's session_job_done. */
void
session_wait_end(struct session *se)
{
	se->se_waiting = 0;
}

/*
 * Takes every whole frame off the input.  Block frames go to the worker
 * pool undecoded; when no job slot is free, reading pauses until one is.
 * Every frame may queue a reply: a source that sends without reading
 * what comes back is not read either, past SESSION_OUT_MAX.
 */
static void
session_process(struct session *se)
{
	struct evbuffer	*in, *out;
	uint8_t		*buf;
	size_t		 len;
	Frame		*f;
	int		 r, took = 0, turn = 0;
	struct timeval	 now = { 0, 0 };

	in = bufferevent_get_input(se->se_bev);
	out = bufferevent_get_output(se->se_bev);
	while (se->se_state != SESSION_CLOSING) {
		/*
		 * A turn's worth: the rest after the other sessions had
		 * theirs (a timer fires after the loop polls).  One source
		 * that sends thousands of requests in a burst does not hold
		 * the loop for them all.
		 */
		if (++turn > SESSION_FRAMES_PER_TURN) {
			(void)evtimer_add(se->se_turn, &now);
			return;
		}
		if (evbuffer_get_length(out) > SESSION_OUT_MAX) {
			session_pause(se, 1);
			return;
		}
		if (se->se_held != NULL) {
			buf = se->se_held;
			len = se->se_held_len;
			se->se_held = NULL;
		} else if ((r = frame_take(in, FRAME_MAX, &buf, &len)) == 0) {
			session_frame_watch(se, in, took);
			break;
		} else if (r == -1) {
			session_fail(se, ERROR__CODE__PROTOCOL, "frame of %zu "
			    "bytes is empty or over the %u-byte maximum", len,
			    FRAME_MAX);
			return;
		} else {
			METRICS_ADD(metrics.mt_bytes_received, NULL,
			    len + FRAME_HDR_LEN);
			took = 1;
			session_progress(se);
		}
		if (se->se_state == SESSION_BACKUP &&
		    buf[0] == FRAME_BLOCK_TAG) {
			if (!session_job_slot(se)) {
				/* Keep the frame; resume when a slot frees. */
				se->se_held = buf;
				se->se_held_len = len;
				session_pause(se, 0);
				return;
			}
			/* receive_block owns buf and the slot from here. */
			if (receive_block(se, buf, len) == -1)
				return;
			continue;
		}
		f = frame_unpack(buf, len);
		free(buf);
		if (f == NULL) {
			session_fail(se, ERROR__CODE__PROTOCOL, "malformed %zu-"
			    "byte frame", len);
			return;
		}
		r = session_dispatch(se, f, len);
		frame_free(f);
		if (r == -1 || se->se_waiting)
			return;
	}
}

/*
 * Takes a job slot for a block job: returns 1 if this session and the
 * daemon are both under their limits, else 0 (and the session waits on
 * the starved list if the daemon-wide limit was the reason).
 */
int
session_job_slot(struct session *se)
{
	struct target	*tg = se->se_target;

	if (se->se_jobs >= SESSION_MAX_JOBS)
		return 0;
	if (tg->tg_jobs >= tg->tg_max_jobs) {
		if (!se->se_starved) {
			TAILQ_INSERT_TAIL(&tg->tg_starved, se, se_starve_entry);
			se->se_starved = 1;
		}
		return 0;
	}
	se->se_jobs++;
	tg->tg_jobs++;
	return 1;
}

/* Counts a job outside the slot limits (sync, commit). */
void
session_job_hold(struct session *se)
{
	se->se_jobs++;
}

/*
 * A job of se left the pool; slot says whether it held a job slot.  May
 * free se (if it is closing and this was its last job): the caller must
 * not touch se afterwards.
 */
void
session_job_done(struct session *se, int slot)
{
	struct target	*tg = se->se_target;
	struct session	*waiting;

	se->se_jobs--;
	session_progress(se);
	if (slot) {
		tg->tg_jobs--;
		if ((waiting = TAILQ_FIRST(&tg->tg_starved)) != NULL) {
			TAILQ_REMOVE(&tg->tg_starved, waiting,
			    se_starve_entry);
			waiting->se_starved = 0;
			if (waiting != se)
				session_resume(waiting);
		}
	}
	if (se->se_state == SESSION_CLOSING) {
		if (se->se_jobs > 0)
			return;
		if (se->se_dead)
			session_free(se);
		else if (evbuffer_get_length(bufferevent_get_output(
		    se->se_bev)) == 0)
			session_linger(se);
		/* else the write callback or the flush timeout ends it */
		return;
	}
	session_resume(se);
}

/* Restarts reading (and frames already buffered) after a pause. */
void
session_resume(struct session *se)
{
	if (se->se_state == SESSION_CLOSING)
		return;
	if (se->se_state == SESSION_RESTORE)
		restore_pump(se);
	if (se->se_read_paused && !se->se_waiting) {
		se->se_read_paused = 0;
		se->se_out_paused = 0;
		bufferevent_enable(se->se_bev, EV_READ);
		session_process(se);
	}
}

void
session_send(struct session *se, const Frame *f)
{
	session_progress(se);
	if (frame_send(se->se_bev, f) == -1)
		session_close(se, "cannot queue a %s frame", frame_name(f));
}

/* Queues a frame packed by frame_pack (in the pool, say); takes buf. */
void
session_send_packed(struct session *se, uint8_t *buf, size_t len)
{
	session_progress(se);
	if (frame_queue(bufferevent_get_output(se->se_bev), buf, len) == -1) {
		free(buf);
		session_close(se, "cannot queue a frame");
	}
}

/*
 * Queues the chunk ids of p (bi->blocks of them) as BaseIndex pieces of
 * BASE_IDS_MAX ids from *next on, while the output holds at most
 * SESSION_OUT_LOW bytes; the caller goes on from the write callback, so
 * a multi-TiB disk's index is never copied whole into the output.  bi
 * holds what every piece carries but its keychain, which goes with the
 * first piece only, and its job_token, which goes with the last.
 * Returns 1 once the last piece is queued, 0 if more remain, -1 if the
 * session closed (or failed: p's index could not be read).
 */
int
session_send_pieces(struct session *se, const BaseIndex *bi,
    struct repo_point *p, uint64_t *next)
{
	Frame		 f = FRAME__INIT;
	BaseIndex	 piece;
	struct evbuffer	*out = bufferevent_get_output(se->se_bev);
	const uint8_t	*ids = NULL;
	uint64_t	 n;

	f.msg_case = FRAME__MSG_BASE_INDEX;
	f.base_index = &piece;
	do {
		/*
		 * The first piece always goes: the caller's keychain rides
		 * on it.  '>': the write callback runs at <=, and must add
		 * one.
		 */
		if (*next > 0 && evbuffer_get_length(out) > SESSION_OUT_LOW)
			return 0;
		piece = *bi;
		n = bi->blocks - *next < BASE_IDS_MAX ? bi->blocks - *next :
		    BASE_IDS_MAX;
		if (n > 0 && (ids = repo_point_ids(p, *next, n)) == NULL) {
			session_fail(se, session_errno_code(errno), "cannot "
			    "read the index of restore point %s/%s: %s",
			    p->rp_name, p->rp_id, repo_point_ids_error(errno));
			return -1;
		}
		piece.first = *next;
		piece.ids.data = (uint8_t *)ids;	/* NULL when n is 0 */
		piece.ids.len = n * CHUNK_ID_LEN;
		if (*next > 0) {
			piece.keychain.data = NULL;
			piece.keychain.len = 0;
		}
		*next += n;
		piece.last = *next == bi->blocks;
		if (!piece.last) {
			piece.job_token.data = NULL;
			piece.job_token.len = 0;
		}
		session_send(se, &f);
		if (se->se_state == SESSION_CLOSING)
			return -1;
	} while (!piece.last);
	return 1;
}

/* Maps an errno from the repository to an Error code. */
Error__Code
session_errno_code(int error)
{
	switch (error) {
	case ENOSPC:
	case EDQUOT:
		return ERROR__CODE__STORAGE_FULL;
	case EBADMSG:
		return ERROR__CODE__INTEGRITY;
	case ENOENT:
		return ERROR__CODE__NOT_FOUND;
	default:
		return ERROR__CODE__STORAGE_IO;
	}
}

/*
 * Tells the source what went wrong in an Error frame, logs it, and
 * closes the session once the frame is delivered.
 */
void
session_fail(struct session *se, Error__Code code, const char *fmt, ...)
{
	char	 msg[512];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	METRICS_INC(metrics.mt_errors, protobuf_c_enum_descriptor_get_value(
	    &error__code__descriptor, code) != NULL ?
	    protobuf_c_enum_descriptor_get_value(&error__code__descriptor,
	    code)->name : "unknown");
	if (se->se_state != SESSION_CLOSING &&
	    se->se_state != SESSION_HANDSHAKE)
		(void)frame_send_error(se->se_bev, code, "%s", msg);
	if (se->se_state != SESSION_CLOSING)
		se->se_fail_code = code;
	session_close(se, "%s", msg);
}

/*
 * Closes the session: stops reading, logs why, and frees it as soon as
 * its last job is back and its output is delivered.  Safe in any state.
 */
void
session_close(struct session *se, const char *fmt, ...)
{
	struct timeval	 tv = { FLUSH_TIMEOUT, 0 };
	char		 msg[512];
	va_list		 ap;

	if (se->se_state == SESSION_CLOSING)
		return;
	if (se->se_target->tg_stopping)
		tv.tv_sec = STOP_FLUSH_TIMEOUT;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (se->se_state == SESSION_HANDSHAKE)
		log_warnx("session %llu %s: %s", (unsigned long long)se->se_id,
		    se->se_addr, msg);
	else
		session_log(se, "closing: %s", msg);
	se->se_state = SESSION_CLOSING;
	/* A job on several connections ends on all of them. */
	if (se->se_recv != NULL)
		receive_abort(se, msg);
	if (se->se_restore != NULL)
		restore_abort(se, msg);
	bufferevent_set_timeouts(se->se_bev, &tv, &tv);
	if (se->se_starved) {
		TAILQ_REMOVE(&se->se_target->tg_starved, se, se_starve_entry);
		se->se_starved = 0;
	}
	if (se->se_jobs > 0)
		return;		/* the last job's session_job_done ends it */
	if (se->se_dead)
		session_free(se);
	else if (evbuffer_get_length(bufferevent_get_output(se->se_bev)) == 0)
		session_linger(se);	/* at once when the target stops */
	/* else the write callback or the flush timeout ends it */
}

static void
session_free(struct session *se)
{
	struct target	*tg = se->se_target;

	receive_release(se);
	restore_release(se);
	if (se->se_starved)
		TAILQ_REMOVE(&tg->tg_starved, se, se_starve_entry);
	TAILQ_REMOVE(&tg->tg_sessions, se, se_entry);
	tg->tg_nsessions--;
	metrics_gauge_add(metrics_series(metrics.mt_sessions, "open", NULL),
	    -1);
	bufferevent_free(se->se_bev);	/* frees the SSL, closes the socket */
	crypto_wipe(se->se_key_in, sizeof(se->se_key_in));
	crypto_wipe(se->se_key_out, sizeof(se->se_key_out));
	if (se->se_deadline != NULL)
		event_free(se->se_deadline);
	if (se->se_frame_timer != NULL)
		event_free(se->se_frame_timer);
	if (se->se_turn != NULL)
		event_free(se->se_turn);
	free(se->se_held);
	free(se);
	if (tg->tg_stopping && TAILQ_EMPTY(&tg->tg_sessions))
		event_base_loopexit(tg->tg_base, NULL);
}
