/*
 * nbd.c: disk.c's NBD transport, on libnbd.
 *
 * A disk is one or more connections to the same export: up to
 * NBD_CONNS_MAX when the server advertises multi-conn, else one.  Each
 * connection has its own I/O thread, the only thread that calls libnbd
 * on that handle once it is connected: readers queue requests and wake
 * it through an eventfd, it issues them with the asynchronous API (up
 * to NBD_INFLIGHT_MAX per connection), drives the socket with poll(2)
 * and retires completed commands by cookie.  A read is split into
 * requests of at most NBD_REQ_MAX bytes spread over the connections,
 * so one caller already keeps several requests in flight and several
 * callers never wait for each other's round trips.
 *
 * Block status (base:allocation for holes, qemu:dirty-bitmap:NAME for
 * changed-block tracking) travels the same way, one query per
 * NBD_STATUS_SPAN bytes; the allocation extents of the last query are
 * kept, so the backup asks once per span, not once per block.
 */
#include <sys/eventfd.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

#include "source.h"

#define NBD_CONNS_MAX		4	/* connections with multi-conn */
#define NBD_INFLIGHT_MAX	16	/* in flight per connection */
#define NBD_REQ_MAX		(256u << 10) /* bytes per read request */
#define NBD_BATCH		32	/* requests queued at once */
#define NBD_STATUS_SPAN		(1ull << 30) /* bytes per status query */
#define NBD_EXTENTS_MAX		(1u << 20) /* kept from one reply */
#define NBD_CONNECT_MS		30000	/* first connection */
#define NBD_EXTRA_CONNECT_MS	3000	/* further connections */
#define NBD_CTX_ALLOCATION	"base:allocation"
#define NBD_CTX_BITMAP		"qemu:dirty-bitmap:"
#define NBD_STATE_DIRTY		1	/* qemu:dirty-bitmap: changed */

enum nbd_req_kind {
	NBD_REQ_READ,
	NBD_REQ_STATUS,
};

struct nbd_extent {
	uint64_t	 ne_len;
	uint32_t	 ne_flags;
};

/* One caller waiting for its requests. */
struct nbd_wait {
	pthread_mutex_t	 nw_lock;
	pthread_cond_t	 nw_cond;
	int		 nw_pending;
	int		 nw_errno;	/* first error */
	char		 nw_msg[256];	/* and libnbd's words for it */
};

struct nbd_req {
	struct nbd_req		*nr_next;
	struct nbd_wait		*nr_wait;
	enum nbd_req_kind	 nr_kind;
	uint64_t		 nr_off;
	uint64_t		 nr_len;
	int64_t			 nr_cookie;
	/* read */
	void			*nr_buf;
	/* block status: the extents of context nr_ctx */
	const char		*nr_ctx;
	struct nbd_extent	*nr_ext;
	size_t			 nr_nextents;
	size_t			 nr_cap;
	int			 nr_ext_errno;
};

struct nbd_conn {
	struct nbd_disk		*nc_disk;
	struct nbd_handle	*nc_h;
	pthread_t		 nc_thread;
	int			 nc_started;
	int			 nc_efd;	/* wakes the I/O thread */
	pthread_mutex_t		 nc_lock;	/* the fields below */
	struct nbd_req		*nc_head;	/* queued, not issued */
	struct nbd_req		*nc_tail;
	int			 nc_stop;
	int			 nc_dead;	/* errno: the link failed */
	/* the I/O thread's own */
	struct nbd_req		*nc_inflight[NBD_INFLIGHT_MAX];
	int			 nc_ninflight;
};

struct nbd_disk {
	const char		*nd_name;	/* the spec, for messages */
	struct nbd_conn		 nd_conns[NBD_CONNS_MAX];
	int			 nd_nconns;
	atomic_uint		 nd_rr;		/* next connection */
	uint64_t		 nd_size;
	uint64_t		 nd_align;	/* minimum block size */
	uint64_t		 nd_req_max;
	int			 nd_tls;
	int			 nd_multi_conn;
	int			 nd_allocation;	/* base:allocation */
	char			*nd_bitmap_ctx;	/* or NULL */
	int			 nd_bitmap;	/* and negotiated */
	char			 nd_certdir[PATH_MAX - 32];	/* or "" */
	/* the allocation extents of the last query */
	pthread_mutex_t		 nd_ext_lock;
	struct nbd_extent	*nd_ext;
	size_t			 nd_nextents;
	uint64_t		 nd_ext_start;
	uint64_t		 nd_ext_end;
	size_t			 nd_cur;		/* next call: extent */
	uint64_t		 nd_cur_pos;	/* and its offset */
};

/* libnbd's message for the last failed call of this thread. */
static const char *
nbd_errmsg(void)
{
	const char	*msg = nbd_get_error();

	return msg != NULL ? msg : "unknown libnbd error";
}

static int
nbd_errno_or(int fallback)
{
	int	 e = nbd_get_errno();

	return e != 0 ? e : fallback;
}

static void
wait_init(struct nbd_wait *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->nw_lock, NULL);
	pthread_cond_init(&w->nw_cond, NULL);
}

static void
wait_destroy(struct nbd_wait *w)
{
	pthread_mutex_destroy(&w->nw_lock);
	pthread_cond_destroy(&w->nw_cond);
}

/* Blocks until every request of w is finished; 0 or -1 with errno. */
static int
wait_done(struct nbd_wait *w)
{
	int	 err;

	pthread_mutex_lock(&w->nw_lock);
	while (w->nw_pending > 0)
		pthread_cond_wait(&w->nw_cond, &w->nw_lock);
	err = w->nw_errno;
	pthread_mutex_unlock(&w->nw_lock);
	if (err != 0) {
		log_debug("NBD request failed: %s", w->nw_msg);
		errno = err;
		return -1;
	}
	return 0;
}

/* Finishes a request: err 0 or an errno, msg (or NULL) says why. */
static void
req_finish(struct nbd_req *r, int err, const char *msg)
{
	struct nbd_wait	*w = r->nr_wait;

	pthread_mutex_lock(&w->nw_lock);
	if (err != 0 && w->nw_errno == 0) {
		w->nw_errno = err;
		snprintf(w->nw_msg, sizeof(w->nw_msg), "%s",
		    msg != NULL ? msg : strerror(err));
	}
	if (--w->nw_pending == 0)
		pthread_cond_broadcast(&w->nw_cond);
	pthread_mutex_unlock(&w->nw_lock);
}

/* Block-status callback (I/O thread): keeps the extents of nr_ctx. */
static int
status_extent(void *arg, const char *ctx, uint64_t off, uint32_t *entries,
    size_t n, int *error)
{
	struct nbd_req		*r = arg;
	struct nbd_extent	*ext;
	size_t			 i, cap;

	if (strcmp(ctx, r->nr_ctx) != 0)
		return 0;
	if (*error != 0 && r->nr_ext_errno == 0)
		r->nr_ext_errno = *error;
	if (r->nr_nextents > 0)	/* a second reply for one context */
		return 0;
	for (i = 0; i + 1 < n; i += 2) {
		if (r->nr_nextents == NBD_EXTENTS_MAX)
			break;	/* enough: the caller asks again */
		if (r->nr_nextents == r->nr_cap) {
			cap = r->nr_cap ? r->nr_cap * 2 : 64;
			if ((ext = reallocarray(r->nr_ext, cap,
			    sizeof(*ext))) == NULL) {
				r->nr_ext_errno = ENOMEM;
				*error = ENOMEM;
				return -1;
			}
			r->nr_ext = ext;
			r->nr_cap = cap;
		}
		r->nr_ext[r->nr_nextents].ne_len = entries[i];
		r->nr_ext[r->nr_nextents].ne_flags = entries[i + 1];
		r->nr_nextents++;
	}
	return 0;
}

/* I/O thread: hands a request to libnbd. */
static void
conn_issue(struct nbd_conn *c, struct nbd_req *r)
{
	nbd_extent_callback	 cb = { .callback = status_extent };
	int64_t			 cookie;

	if (r->nr_kind == NBD_REQ_READ)
		cookie = nbd_aio_pread(c->nc_h, r->nr_buf, r->nr_len,
		    r->nr_off, NBD_NULL_COMPLETION, 0);
	else {
		cb.user_data = r;
		cookie = nbd_aio_block_status(c->nc_h, r->nr_len, r->nr_off,
		    cb, NBD_NULL_COMPLETION, 0);
	}
	if (cookie == -1) {
		req_finish(r, nbd_errno_or(EIO), nbd_errmsg());
		return;
	}
	r->nr_cookie = cookie;
	c->nc_inflight[c->nc_ninflight++] = r;
}

/* I/O thread: retires the completed commands. */
static void
conn_retire(struct nbd_conn *c)
{
	struct nbd_req	*r;
	int64_t		 cookie;
	int		 i, rv;

	while ((cookie = nbd_aio_peek_command_completed(c->nc_h)) > 0) {
		rv = nbd_aio_command_completed(c->nc_h, cookie);
		for (i = 0; i < c->nc_ninflight; i++)
			if (c->nc_inflight[i]->nr_cookie == cookie)
				break;
		if (i == c->nc_ninflight)
			continue;	/* not ours: cannot happen */
		r = c->nc_inflight[i];
		c->nc_inflight[i] = c->nc_inflight[--c->nc_ninflight];
		if (rv == -1)
			req_finish(r, nbd_errno_or(EIO), nbd_errmsg());
		else if (r->nr_kind == NBD_REQ_STATUS && r->nr_ext_errno != 0)
			req_finish(r, r->nr_ext_errno, NULL);
		else
			req_finish(r, 0, NULL);
	}
}

/* I/O thread: the link is gone; fails everything, now and later. */
static void
conn_fail(struct nbd_conn *c, int err, const char *msg)
{
	struct nbd_req	*r, *next;

	while (c->nc_ninflight > 0)
		req_finish(c->nc_inflight[--c->nc_ninflight], err, msg);
	pthread_mutex_lock(&c->nc_lock);
	if (c->nc_dead == 0)
		c->nc_dead = err;
	r = c->nc_head;
	c->nc_head = c->nc_tail = NULL;
	pthread_mutex_unlock(&c->nc_lock);
	for (; r != NULL; r = next) {
		next = r->nr_next;
		req_finish(r, err, msg);
	}
}

static void *
conn_thread(void *arg)
{
	struct nbd_conn	*c = arg;
	struct nbd_req	*todo, *next;
	struct pollfd	 pfd[2];
	uint64_t	 junk;
	unsigned int	 dir;
	int		 stop, room, rv, dead = 0;
	char		 msg[256];

	for (;;) {
		pthread_mutex_lock(&c->nc_lock);
		stop = c->nc_stop;
		todo = NULL;
		if (!stop && !dead && c->nc_head != NULL) {
			/* Take as many as fit in flight, in order. */
			struct nbd_req **tail = &todo;

			room = NBD_INFLIGHT_MAX - c->nc_ninflight;
			while (room-- > 0 && c->nc_head != NULL) {
				*tail = c->nc_head;
				c->nc_head = c->nc_head->nr_next;
				tail = &(*tail)->nr_next;
				*tail = NULL;
			}
			if (c->nc_head == NULL)
				c->nc_tail = NULL;
		}
		pthread_mutex_unlock(&c->nc_lock);
		for (; todo != NULL; todo = next) {
			next = todo->nr_next;
			conn_issue(c, todo);
		}
		if (stop)
			break;
		if (!dead && nbd_aio_is_dead(c->nc_h) == 1) {
			conn_fail(c, ENOTCONN, "NBD connection lost");
			dead = 1;
		}

		pfd[0].fd = -1;
		pfd[0].events = 0;
		if (!dead) {
			pfd[0].fd = nbd_aio_get_fd(c->nc_h);
			dir = nbd_aio_get_direction(c->nc_h);
			if (dir & LIBNBD_AIO_DIRECTION_READ)
				pfd[0].events |= POLLIN;
			if (dir & LIBNBD_AIO_DIRECTION_WRITE)
				pfd[0].events |= POLLOUT;
		}
		pfd[1].fd = c->nc_efd;
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		if (poll(pfd, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			snprintf(msg, sizeof(msg), "poll: %s",
			    strerror(errno));
			conn_fail(c, EIO, msg);
			dead = 1;
			continue;
		}
		if (pfd[1].revents & POLLIN)
			while (read(c->nc_efd, &junk, sizeof(junk)) > 0)
				;
		if (dead || pfd[0].fd == -1)
			continue;
		rv = 0;
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
			rv = nbd_aio_notify_read(c->nc_h);
		else if (pfd[0].revents & POLLOUT)
			rv = nbd_aio_notify_write(c->nc_h);
		if (rv == -1) {
			snprintf(msg, sizeof(msg), "%s", nbd_errmsg());
			conn_retire(c);
			conn_fail(c, nbd_errno_or(ENOTCONN), msg);
			dead = 1;
			continue;
		}
		conn_retire(c);
	}
	/* Nobody may read while the disk closes: nothing should be left. */
	conn_fail(c, ECANCELED, "NBD disk closed");
	return NULL;
}

/* Wakes c's thread.  A full counter (EAGAIN) means it is awake. */
static void
conn_wake(struct nbd_conn *c)
{
	uint64_t	 one = 1;

	if (write(c->nc_efd, &one, sizeof(one)) == -1 && errno != EAGAIN)
		log_debug("NBD eventfd: %s", strerror(errno));
}

/* Queues a request on c and wakes its thread. */
static void
conn_submit(struct nbd_conn *c, struct nbd_req *r)
{
	int		 dead;

	r->nr_next = NULL;
	pthread_mutex_lock(&c->nc_lock);
	if ((dead = c->nc_dead) == 0) {
		if (c->nc_tail != NULL)
			c->nc_tail->nr_next = r;
		else
			c->nc_head = r;
		c->nc_tail = r;
	}
	pthread_mutex_unlock(&c->nc_lock);
	if (dead != 0) {
		req_finish(r, dead, "NBD connection lost");
		return;
	}
	conn_wake(c);
}

/*
 * Connects h to the URI or Unix socket within ms milliseconds.
 * 0, or -1 with libnbd's error in msg.
 */
static int
conn_connect(struct nbd_handle *h, const char *uri, const char *sock, int ms,
    char *msg, size_t msglen)
{
	uint64_t	 deadline = now_ms() + (uint64_t)ms, now;
	int		 rv;

	if (uri != NULL)
		rv = nbd_aio_connect_uri(h, uri);
	else
		rv = nbd_aio_connect_unix(h, sock);
	if (rv == -1)
		goto fail;
	while (nbd_aio_is_ready(h) != 1) {
		if (nbd_aio_is_dead(h) == 1 || nbd_aio_is_closed(h) == 1) {
			snprintf(msg, msglen, "connection closed during the "
			    "NBD handshake");
			return -1;
		}
		if ((now = now_ms()) >= deadline) {
			snprintf(msg, msglen, "no NBD handshake within %d s",
			    ms / 1000);
			return -1;
		}
		if (nbd_poll(h, (int)(deadline - now)) == -1)
			goto fail;
	}
	return 0;
 fail:
	snprintf(msg, msglen, "%s", nbd_errmsg());
	return -1;
}

/* A handle with nd's contexts and credentials; NULL after msg. */
static struct nbd_handle *
conn_handle(struct nbd_disk *nd, const struct disk_opts *opts, char *msg,
    size_t msglen)
{
	struct nbd_handle	*h;

	if ((h = nbd_create()) == NULL) {
		snprintf(msg, msglen, "%s", nbd_errmsg());
		return NULL;
	}
	/* Every read is checked: no need to zero buffers first. */
	if (nbd_set_pread_initialize(h, false) == -1 ||
	    nbd_set_uri_allow_local_file(h, true) == -1 ||
	    nbd_add_meta_context(h, NBD_CTX_ALLOCATION) == -1 ||
	    (nd->nd_bitmap_ctx != NULL &&
	    nbd_add_meta_context(h, nd->nd_bitmap_ctx) == -1) ||
	    (opts->do_tls_psk_file != NULL &&
	    nbd_set_tls_psk_file(h, opts->do_tls_psk_file) == -1) ||
	    (nd->nd_certdir[0] != '\0' &&
	    nbd_set_tls_certificates(h, nd->nd_certdir) == -1)) {
		snprintf(msg, msglen, "%s", nbd_errmsg());
		nbd_close(h);
		return NULL;
	}
	return h;
}

/* Links name in dir to the absolute path of file; 0 or -1 after msg. */
static int
certdir_link(const char *dir, const char *name, const char *file,
    const char *what, char *msg, size_t msglen)
{
	char	 real[PATH_MAX], link[PATH_MAX];
	int	 n;

	if (realpath(file, real) == NULL) {
		snprintf(msg, msglen, "TLS %s %s: %s", what, file,
		    strerror(errno));
		return -1;
	}
	n = snprintf(link, sizeof(link), "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= sizeof(link) || symlink(real, link) == -1) {
		snprintf(msg, msglen, "cannot link TLS %s into %s: %s", what,
		    dir, n < 0 || (size_t)n >= sizeof(link) ?
		    "path too long" : strerror(errno));
		return -1;
	}
	return 0;
}

/* Removes the temporary certificate directory, if any. */
static void
certdir_remove(struct nbd_disk *nd)
{
	static const char	*names[] = {
		"ca-cert.pem", "client-cert.pem", "client-key.pem"
	};
	char			 path[PATH_MAX];
	size_t			 i;

	if (nd->nd_certdir[0] == '\0')
		return;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", nd->nd_certdir,
		    names[i]);
		(void)unlink(path);
	}
	(void)rmdir(nd->nd_certdir);
	nd->nd_certdir[0] = '\0';
}

/*
 * libnbd reads certificates from one directory with fixed names: makes
 * a private temporary one that links to the configured files.  It lives
 * only while the connections are made.  0 or -1 after msg.
 */
static int
certdir_make(struct nbd_disk *nd, const struct disk_opts *opts, char *msg,
    size_t msglen)
{
	const char	*tmp = getenv("TMPDIR");
	int		 n;

	if (opts->do_tls_cert == NULL && opts->do_tls_key == NULL &&
	    opts->do_tls_ca == NULL)
		return 0;
	if (opts->do_tls_psk_file != NULL) {
		snprintf(msg, msglen, "both a TLS PSK file and certificates "
		    "are configured; use one of them");
		return -1;
	}
	if ((opts->do_tls_cert == NULL) != (opts->do_tls_key == NULL)) {
		snprintf(msg, msglen, "a TLS client certificate needs its key "
		    "and a key its certificate");
		return -1;
	}
	if (opts->do_tls_ca == NULL) {
		snprintf(msg, msglen, "a TLS client certificate needs the CA "
		    "that signed the server's certificate too");
		return -1;
	}
	if (tmp == NULL || tmp[0] != '/')
		tmp = "/tmp";
	n = snprintf(nd->nd_certdir, sizeof(nd->nd_certdir),
	    "%s/transporter-nbd-tls.XXXXXX", tmp);
	if (n < 0 || (size_t)n >= sizeof(nd->nd_certdir) ||
	    mkdtemp(nd->nd_certdir) == NULL) {
		snprintf(msg, msglen, "cannot make a temporary directory in "
		    "%s: %s", tmp, strerror(errno));
		nd->nd_certdir[0] = '\0';
		return -1;
	}
	if (certdir_link(nd->nd_certdir, "ca-cert.pem", opts->do_tls_ca,
	    "CA", msg, msglen) == -1 ||
	    (opts->do_tls_cert != NULL && (certdir_link(nd->nd_certdir,
	    "client-cert.pem", opts->do_tls_cert, "certificate", msg,
	    msglen) == -1 || certdir_link(nd->nd_certdir, "client-key.pem",
	    opts->do_tls_key, "key", msg, msglen) == -1))) {
		certdir_remove(nd);
		return -1;
	}
	return 0;
}

/* Starts c's I/O thread with every signal blocked; 0 or -1. */
static int
conn_start(struct nbd_conn *c, char *msg, size_t msglen)
{
	sigset_t	 all, old;
	int		 err;

	if ((c->nc_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1) {
		snprintf(msg, msglen, "eventfd: %s", strerror(errno));
		return -1;
	}
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&c->nc_thread, NULL, conn_thread, c);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err != 0) {
		snprintf(msg, msglen, "cannot start a thread: %s",
		    strerror(err));
		return -1;
	}
	c->nc_started = 1;
	return 0;
}

/*
 * Connects to an NBD export given by URI, or by the path of a server's
 * Unix socket (default export), for reading.  spec names the disk in
 * messages.  Returns the disk, or NULL after one log line.
 */
struct nbd_disk *
nbd_disk_open(const char *spec, const char *uri, const char *sock,
    const struct disk_opts *opts)
{
	struct nbd_disk		*nd;
	struct nbd_handle	*h;
	struct nbd_conn		*c;
	char			 msg[512];
	int64_t			 size, v;
	int			 i;

	if ((nd = calloc(1, sizeof(*nd))) == NULL) {
		log_warnx("disk %s: out of memory", spec);
		return NULL;
	}
	nd->nd_name = spec;
	pthread_mutex_init(&nd->nd_ext_lock, NULL);
	for (i = 0; i < NBD_CONNS_MAX; i++) {
		nd->nd_conns[i].nc_efd = -1;
		pthread_mutex_init(&nd->nd_conns[i].nc_lock, NULL);
	}
	if (opts->do_dirty_bitmap != NULL &&
	    asprintf(&nd->nd_bitmap_ctx, "%s%s", NBD_CTX_BITMAP,
	    opts->do_dirty_bitmap) == -1) {
		nd->nd_bitmap_ctx = NULL;
		log_warnx("disk %s: out of memory", spec);
		goto fail;
	}
	if (certdir_make(nd, opts, msg, sizeof(msg)) == -1) {
		log_warnx("disk %s: %s", spec, msg);
		goto fail;
	}

	/* The first connection tells whether more are allowed. */
	if ((h = conn_handle(nd, opts, msg, sizeof(msg))) == NULL) {
		log_warnx("disk %s: %s", spec, msg);
		goto fail;
	}
	nd->nd_conns[0].nc_h = h;
	nd->nd_nconns = 1;
	if (conn_connect(h, uri, sock, NBD_CONNECT_MS, msg,
	    sizeof(msg)) == -1) {
		log_warnx("cannot connect to NBD disk %s: %s; check that the "
		    "server runs and exports it%s", spec, msg,
		    nbd_get_tls(h) == LIBNBD_TLS_REQUIRE ? ", and the TLS "
		    "credentials" : "");
		goto fail;
	}
	if ((size = nbd_get_size(h)) == -1) {
		log_warnx("NBD disk %s: cannot get its size: %s", spec,
		    nbd_errmsg());
		goto fail;
	}
	if (size == 0) {
		log_warnx("NBD disk %s is empty (0 bytes); nothing to read",
		    spec);
		goto fail;
	}
	nd->nd_size = (uint64_t)size;
	nd->nd_tls = nbd_get_tls_negotiated(h) == 1;
	nd->nd_allocation = nbd_can_meta_context(h, NBD_CTX_ALLOCATION) == 1;
	nd->nd_bitmap = nd->nd_bitmap_ctx != NULL &&
	    nbd_can_meta_context(h, nd->nd_bitmap_ctx) == 1;
	nd->nd_multi_conn = nbd_can_multi_conn(h) == 1;
	v = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
	nd->nd_align = v > 0 ? (uint64_t)v : 1;
	v = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
	nd->nd_req_max = v > 0 && (uint64_t)v < NBD_REQ_MAX ? (uint64_t)v :
	    NBD_REQ_MAX;
	nd->nd_req_max -= nd->nd_req_max % nd->nd_align;
	if (nd->nd_req_max == 0) {
		log_warnx("NBD disk %s: the server's block sizes (minimum "
		    "%llu) are not usable", spec,
		    (unsigned long long)nd->nd_align);
		goto fail;
	}

	/*
	 * More connections only where the server says it is safe; one
	 * that cannot be made in time (a connection limit) is left out.
	 */
	while (nd->nd_multi_conn && nd->nd_nconns < NBD_CONNS_MAX) {
		c = &nd->nd_conns[nd->nd_nconns];
		if ((h = conn_handle(nd, opts, msg, sizeof(msg))) == NULL)
			break;
		if (conn_connect(h, uri, sock, NBD_EXTRA_CONNECT_MS, msg,
		    sizeof(msg)) == -1 || nbd_get_size(h) != size) {
			log_debug("disk %s: connection %d not used: %s", spec,
			    nd->nd_nconns + 1, msg);
			nbd_close(h);
			break;
		}
		c->nc_h = h;
		nd->nd_nconns++;
	}
	certdir_remove(nd);
	for (i = 0; i < nd->nd_nconns; i++) {
		c = &nd->nd_conns[i];
		c->nc_disk = nd;
		if (conn_start(c, msg, sizeof(msg)) == -1) {
			log_warnx("disk %s: %s", spec, msg);
			goto fail;
		}
	}
	log_debug("disk %s: NBD, %llu bytes, %d connection(s)%s%s%s", spec,
	    (unsigned long long)nd->nd_size, nd->nd_nconns,
	    nd->nd_tls ? ", TLS" : "", nd->nd_allocation ?
	    ", base:allocation" : "", nd->nd_bitmap ? ", dirty bitmap" : "");
	return nd;
 fail:
	nbd_disk_close(nd);
	return NULL;
}

uint64_t
nbd_disk_size(const struct nbd_disk *nd)
{
	return nd->nd_size;
}

/* Did the connection negotiate TLS? */
int
nbd_disk_tls(const struct nbd_disk *nd)
{
	return nd->nd_tls;
}

/* Reads [off, off + len), aligned to the server's minimum block size. */
static int
nbd_read_aligned(struct nbd_disk *nd, uint8_t *buf, size_t len, uint64_t off)
{
	struct nbd_req	 reqs[NBD_BATCH];
	struct nbd_wait	 w;
	size_t		 done = 0, n;
	unsigned int	 rr;
	int		 i, nreq, rv = 0;

	wait_init(&w);
	while (rv == 0 && done < len) {
		memset(reqs, 0, sizeof(reqs));
		for (nreq = 0; nreq < NBD_BATCH && done < len; nreq++) {
			n = len - done < nd->nd_req_max ? len - done :
			    nd->nd_req_max;
			reqs[nreq].nr_wait = &w;
			reqs[nreq].nr_kind = NBD_REQ_READ;
			reqs[nreq].nr_buf = buf + done;
			reqs[nreq].nr_len = n;
			reqs[nreq].nr_off = off + done;
			done += n;
		}
		w.nw_pending = nreq;
		for (i = 0; i < nreq; i++) {
			rr = atomic_fetch_add(&nd->nd_rr, 1);
			conn_submit(&nd->nd_conns[rr % nd->nd_nconns],
			    &reqs[i]);
		}
		rv = wait_done(&w);
	}
	wait_destroy(&w);
	return rv;
}

/*
 * Reads exactly len bytes at off (within the disk); thread-safe.
 * 0, or -1 with errno.
 */
int
nbd_disk_read(struct nbd_disk *nd, void *buf, size_t len, uint64_t off)
{
	uint64_t	 start, end;
	uint8_t		*bounce;
	int		 rv, save;

	if (nd->nd_align == 1 || (off % nd->nd_align == 0 &&
	    len % nd->nd_align == 0))
		return nbd_read_aligned(nd, buf, len, off);
	/* The server wants aligned requests: read around and copy. */
	start = off - off % nd->nd_align;
	end = off + len;
	if (end % nd->nd_align != 0)
		end += nd->nd_align - end % nd->nd_align;
	if (end > nd->nd_size)
		end = nd->nd_size;
	if ((bounce = malloc(end - start)) == NULL)
		return -1;
	if ((rv = nbd_read_aligned(nd, bounce, end - start, start)) == 0)
		memcpy(buf, bounce + (off - start), len);
	save = errno;
	free(bounce);
	errno = save;
	return rv;
}

/*
 * One block-status query of context ctx over [off, off + len): the
 * extents in *ext (caller frees), their number in *n.  0, or -1 with
 * errno (EPROTO: the server described nothing).
 */
static int
nbd_status(struct nbd_disk *nd, const char *ctx, uint64_t off, uint64_t len,
    struct nbd_extent **ext, size_t *n)
{
	struct nbd_req	 r;
	struct nbd_wait	 w;
	int		 rv;

	*ext = NULL;
	*n = 0;
	memset(&r, 0, sizeof(r));
	wait_init(&w);
	w.nw_pending = 1;
	r.nr_wait = &w;
	r.nr_kind = NBD_REQ_STATUS;
	r.nr_off = off;
	r.nr_len = len;
	r.nr_ctx = ctx;
	conn_submit(&nd->nd_conns[0], &r);
	rv = wait_done(&w);
	wait_destroy(&w);
	if (rv == 0 && r.nr_nextents == 0) {
		log_debug("disk %s: no %s extents at %llu", nd->nd_name, ctx,
		    (unsigned long long)off);
		errno = EPROTO;
		rv = -1;
	}
	if (rv == -1) {
		free(r.nr_ext);
		return -1;
	}
	*ext = r.nr_ext;
	*n = r.nr_nextents;
	return 0;
}

/* Replaces the kept allocation extents by a query at off; 0 or -1. */
static int
extents_load(struct nbd_disk *nd, uint64_t off)
{
	struct nbd_extent	*ext;
	uint64_t		 len, e = off;
	size_t			 i, n;

	len = nd->nd_size - off < NBD_STATUS_SPAN ? nd->nd_size - off :
	    NBD_STATUS_SPAN;
	if (nbd_status(nd, NBD_CTX_ALLOCATION, off, len, &ext, &n) == -1)
		return -1;
	for (i = 0; i < n; i++)
		e += ext[i].ne_len;
	if (e > nd->nd_size)
		e = nd->nd_size;
	if (e <= off) {
		free(ext);
		errno = EPROTO;	/* no progress */
		return -1;
	}
	free(nd->nd_ext);
	nd->nd_ext = ext;
	nd->nd_nextents = n;
	nd->nd_ext_start = nd->nd_cur_pos = off;
	nd->nd_ext_end = e;
	nd->nd_cur = 0;
	return 0;
}

/*
 * The next extent at or after off that may hold data, as [*start,
 * *end): 0; 1 if only zeros remain; -1 with errno.  Extents the server
 * reports as reading zeros (NBD_STATE_ZERO, holes or not) are skipped;
 * a hole not marked zero may read as data (a backing file) and is not.
 * The extents of one query are kept with a cursor, so a caller going
 * forward costs one query per NBD_STATUS_SPAN and no rescanning.
 */
int
nbd_disk_next_data(struct nbd_disk *nd, uint64_t off, uint64_t *start,
    uint64_t *end)
{
	const struct nbd_extent	*x;
	uint64_t		 pos, e;
	size_t			 i;
	int			 rv = 1;

	if (!nd->nd_allocation) {
		if (off >= nd->nd_size)
			return 1;
		*start = off;
		*end = nd->nd_size;
		return 0;
	}
	pthread_mutex_lock(&nd->nd_ext_lock);
	while (off < nd->nd_size) {
		if ((off < nd->nd_ext_start || off >= nd->nd_ext_end) &&
		    extents_load(nd, off) == -1) {
			rv = -1;
			break;
		}
		if (off < nd->nd_cur_pos) {	/* backwards: rescan */
			nd->nd_cur = 0;
			nd->nd_cur_pos = nd->nd_ext_start;
		}
		i = nd->nd_cur;
		pos = nd->nd_cur_pos;
		for (; i < nd->nd_nextents && pos < nd->nd_ext_end; i++) {
			x = &nd->nd_ext[i];
			e = x->ne_len < nd->nd_ext_end - pos ? pos + x->ne_len :
			    nd->nd_ext_end;
			if (e <= off || (x->ne_flags & LIBNBD_STATE_ZERO)) {
				pos = e;
				continue;
			}
			*start = pos > off ? pos : off;
			/* Join the data extents that follow. */
			while (i + 1 < nd->nd_nextents && e < nd->nd_ext_end &&
			    !(nd->nd_ext[i + 1].ne_flags & LIBNBD_STATE_ZERO)) {
				i++;
				e = nd->nd_ext[i].ne_len < nd->nd_ext_end - e ?
				    e + nd->nd_ext[i].ne_len : nd->nd_ext_end;
			}
			*end = e;
			nd->nd_cur = i + 1;
			nd->nd_cur_pos = e;
			rv = 0;
			goto out;
		}
		nd->nd_cur = i;
		nd->nd_cur_pos = pos;
		off = nd->nd_ext_end;
	}
 out:
	pthread_mutex_unlock(&nd->nd_ext_lock);
	return rv;
}

/* Sets the bits of blocks [first, last] in map. */
static void
map_set(uint8_t *map, uint64_t first, uint64_t last)
{
	uint64_t	 b;

	for (b = first; b <= last && b % 8 != 0; b++)
		map[b / 8] |= 1u << (b % 8);
	for (; b + 8 <= last + 1; b += 8)
		map[b / 8] = 0xff;
	for (; b <= last; b++)
		map[b / 8] |= 1u << (b % 8);
}

/*
 * The dirty bitmap over the whole disk, one bit per block of
 * block_size bytes (bit b of byte b / 8 is block b, least significant
 * first), set where any byte of the block is dirty.  0 with *map
 * (caller frees), or -1 with why.
 */
int
nbd_disk_dirty_map(struct nbd_disk *nd, uint32_t block_size, uint8_t **map,
    char *why, size_t whylen)
{
	struct nbd_extent	*ext = NULL;
	uint64_t		 nblocks, off, pos, e, len;
	uint8_t			*bits = NULL;
	size_t			 i, n;

	*map = NULL;
	if (nd->nd_bitmap_ctx == NULL) {
		snprintf(why, whylen, "no dirty bitmap was named when disk %s "
		    "was opened", nd->nd_name);
		goto fail;
	}
	if (!nd->nd_bitmap) {
		snprintf(why, whylen, "the NBD server does not export dirty "
		    "bitmap '%s' for disk %s (qemu-nbd exports one with "
		    "-B NAME)", nd->nd_bitmap_ctx + strlen(NBD_CTX_BITMAP),
		    nd->nd_name);
		goto fail;
	}
	if (block_size == 0) {
		snprintf(why, whylen, "block size 0");
		goto fail;
	}
	nblocks = nd->nd_size / block_size + (nd->nd_size % block_size != 0);
	if ((bits = calloc(1, (size_t)((nblocks + 7) / 8))) == NULL) {
		snprintf(why, whylen, "out of memory for a map of %llu blocks",
		    (unsigned long long)nblocks);
		goto fail;
	}
	for (off = 0; off < nd->nd_size; off = pos) {
		len = nd->nd_size - off < NBD_STATUS_SPAN ? nd->nd_size - off :
		    NBD_STATUS_SPAN;
		if (nbd_status(nd, nd->nd_bitmap_ctx, off, len, &ext,
		    &n) == -1) {
			snprintf(why, whylen, "cannot read dirty bitmap '%s' "
			    "of disk %s at offset %llu: %s", nd->nd_bitmap_ctx +
			    strlen(NBD_CTX_BITMAP), nd->nd_name,
			    (unsigned long long)off, strerror(errno));
			goto fail;
		}
		for (pos = off, i = 0; i < n && pos < nd->nd_size; i++) {
			e = pos + ext[i].ne_len;
			if (e > nd->nd_size)
				e = nd->nd_size;
			if ((ext[i].ne_flags & NBD_STATE_DIRTY) && e > pos)
				map_set(bits, pos / block_size,
				    (e - 1) / block_size);
			pos = e;
		}
		free(ext);
		ext = NULL;
		if (pos <= off) {
			snprintf(why, whylen, "the NBD server described no "
			    "part of dirty bitmap '%s' at offset %llu",
			    nd->nd_bitmap_ctx + strlen(NBD_CTX_BITMAP),
			    (unsigned long long)off);
			goto fail;
		}
	}
	*map = bits;
	return 0;
 fail:
	free(ext);
	free(bits);
	return -1;
}

/* Stops the threads, disconnects and frees; safe from any state. */
void
nbd_disk_close(struct nbd_disk *nd)
{
	struct nbd_conn	*c;
	int		 i;

	if (nd == NULL)
		return;
	for (i = 0; i < NBD_CONNS_MAX; i++) {
		c = &nd->nd_conns[i];
		if (c->nc_started) {
			pthread_mutex_lock(&c->nc_lock);
			c->nc_stop = 1;
			pthread_mutex_unlock(&c->nc_lock);
			conn_wake(c);
			pthread_join(c->nc_thread, NULL);
			c->nc_started = 0;
		}
		if (c->nc_h != NULL) {
			/* Polite to the server; nothing is lost if not. */
			if (nbd_aio_is_ready(c->nc_h) == 1 &&
			    nbd_shutdown(c->nc_h, 0) == -1)
				log_debug("disk %s: NBD disconnect: %s",
				    nd->nd_name, nbd_errmsg());
			nbd_close(c->nc_h);
			c->nc_h = NULL;
		}
		if (c->nc_efd != -1) {
			close(c->nc_efd);
			c->nc_efd = -1;
		}
		pthread_mutex_destroy(&c->nc_lock);
	}
	certdir_remove(nd);
	pthread_mutex_destroy(&nd->nd_ext_lock);
	free(nd->nd_ext);
	free(nd->nd_bitmap_ctx);
	free(nd);
}
