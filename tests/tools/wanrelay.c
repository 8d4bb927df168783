/*
 * wanrelay: a test-only WAN emulator.  A TCP relay from 127.0.0.1:PORT
 * to 127.0.0.1:FORWARD that makes each direction of every connection
 * behave like one direction of a long, thin link, where this kernel has
 * no netem:
 *
 *	wanrelay [-d delay-ms] [-r rate [-S]] [-b buffer]
 *	    [-c lo-hi [-n cuts] [-k spared]] [-s seed] [-p port] forward-port
 *
 *	-d	one-way delay in milliseconds, each direction (default 0)
 *	-r	link rate per direction: bytes/s, or with kbit, mbit, gbit
 *		(decimal bits/s); 0, the default, is unlimited
 *	-S	one link for all connections, which share its rate (default:
 *		a link of that rate for each connection, as where a path
 *		limits each flow)
 *	-b	bottleneck buffer per direction, bytes (K, M suffixes): the
 *		relay holds at most rate * delay (the bytes on the wire) plus
 *		this much, and stops reading beyond it, so a sender feels
 *		backpressure as on a real link (default 1M)
 *	-c	cut each connection with a reset once lo to hi bytes (both
 *		directions together, chosen at random) have gone through
 *	-n	cut only the first N connections (default: every one)
 *	-k	... counting from the one after the first K (default 0)
 *	-s	seed of the cut offsets (default 1)
 *	-p	port to listen on (default 0: any free port)
 *
 * The model: bytes read from the sender queue for the link, which
 * serialises them at the rate; each piece is delivered one delay after
 * it left the link.  The port is printed on stdout, alone on a line,
 * once the relay listens; one line per closed connection goes to
 * stderr.  Single-threaded, epoll and a timerfd.  SIGTERM or SIGINT
 * stops it.
 */
#include <sys/types.h>
#include <sys/epoll.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define RELAY_READ_MAX		(16u << 10)	/* one piece on the link */
#define RELAY_BUFFER_DEFAULT	(1u << 20)
#define RELAY_EVENTS		64

struct seg {
	TAILQ_ENTRY(seg)	 sg_entry;
	uint64_t		 sg_ready;	/* ns: may be delivered */
	size_t			 sg_len;
	size_t			 sg_off;
	uint8_t			 sg_data[];
};
TAILQ_HEAD(seg_list, seg);

struct conn;

/* One direction of a connection: from d_src to d_dst. */
struct dir {
	struct conn	*d_conn;
	int		 d_src;
	int		 d_dst;
	struct seg_list	 d_queue;
	size_t		 d_queued;	/* bytes read, not yet delivered */
	uint64_t	 d_link_free;	/* ns: the link is busy until then */
	uint64_t	 d_bytes;	/* delivered */
	int		 d_eof;		/* the sender shut down */
	int		 d_shut;	/* ... and we passed it on */
	int		 d_blocked;	/* the receiver would block */
};

/* epoll's handle of one socket. */
struct endpoint {
	struct conn	*e_conn;
	int		 e_fd;
};

struct conn {
	uint64_t		 c_id;
	struct endpoint		 c_a;	/* the client that connected to us */
	struct endpoint		 c_b;	/* our connection to the forward port */
	int			 c_connecting;
	struct dir		 c_up;	/* a -> b */
	struct dir		 c_down;	/* b -> a */
	uint64_t		 c_cut_at;	/* bytes; 0: never */
	uint64_t		 c_start;
	TAILQ_ENTRY(conn)	 c_entry;
};

static struct {
	uint64_t		 rl_delay_ns;
	uint64_t		 rl_rate;		/* bytes/s, 0: unlimited */
	int			 rl_shared;		/* -S: one link for all */
	uint64_t		 rl_link_free[2];	/* -S: up, down */
	uint64_t		 rl_buffer;
	uint64_t		 rl_cap;		/* per direction */
	uint64_t		 rl_cut_lo, rl_cut_hi;
	uint64_t		 rl_cuts;		/* connections to cut, or max */
	uint64_t		 rl_spared;		/* ... after this many */
	uint64_t		 rl_rng;
	struct sockaddr_in	 rl_fwd;
	int			 rl_epfd;
	int			 rl_lfd;
	int			 rl_tfd;
	uint64_t		 rl_nconns;
	TAILQ_HEAD(, conn)	 rl_conns;
} relay;

static volatile sig_atomic_t	 relay_stop;
static struct endpoint		 listen_ep, timer_ep;

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: wanrelay [-d delay-ms] [-r rate [-S]] [-b buffer] "
	    "[-c lo-hi [-n cuts] [-k spared]]\n"
	    "                [-s seed] [-p port] forward-port\n");
	exit(EXIT_USAGE);
}

static uint64_t
now_ns(void)
{
	struct timespec	 ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		fatal("clock_gettime");
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: reproducible cut offsets from the seed. */
static uint64_t
rng_next(void)
{
	relay.rl_rng ^= relay.rl_rng >> 12;
	relay.rl_rng ^= relay.rl_rng << 25;
	relay.rl_rng ^= relay.rl_rng >> 27;
	return relay.rl_rng * 2685821657736338717ull;
}

/* "25000000", "200mbit", "1gbit": bytes per second, or -1. */
static int
parse_rate(const char *s, uint64_t *out)
{
	static const struct {
		const char	*ru_name;
		uint64_t	 ru_bits;
	} units[] = {
		{ "kbit", 1000 }, { "mbit", 1000000 }, { "gbit", 1000000000 },
	};
	unsigned long long	 v;
	char			*end;
	size_t			 i;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (*end == '\0') {
		*out = v;
		return 0;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].ru_name) != 0)
			continue;
		if (v > UINT64_MAX / units[i].ru_bits)
			return -1;
		*out = v * units[i].ru_bits / 8;
		return 0;
	}
	return -1;
}

static int
nonblock(int fd)
{
	int	 fl;

	if ((fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return -1;
	return 0;
}

static void
ep_set(struct endpoint *e, uint32_t events, int op)
{
	struct epoll_event	 ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = events;
	ev.data.ptr = e;
	if (epoll_ctl(relay.rl_epfd, op, e->e_fd, &ev) == -1)
		fatal("epoll_ctl");
}

static int
dir_can_read(const struct dir *d)
{
	return !d->d_eof && d->d_queued < relay.rl_cap;
}

/* What each socket of c waits for now. */
static void
conn_interest(struct conn *c)
{
	uint32_t	 a = 0, b = 0;

	if (dir_can_read(&c->c_up))
		a |= EPOLLIN;
	if (c->c_down.d_blocked)
		a |= EPOLLOUT;
	if (c->c_connecting)
		b |= EPOLLOUT;
	else {
		if (dir_can_read(&c->c_down))
			b |= EPOLLIN;
		if (c->c_up.d_blocked)
			b |= EPOLLOUT;
	}
	ep_set(&c->c_a, a, EPOLL_CTL_MOD);
	ep_set(&c->c_b, b, EPOLL_CTL_MOD);
}

static void
dir_init(struct dir *d, struct conn *c, int src, int dst)
{
	d->d_conn = c;
	d->d_src = src;
	d->d_dst = dst;
	TAILQ_INIT(&d->d_queue);
}

static void
dir_clear(struct dir *d)
{
	struct seg	*sg;

	while ((sg = TAILQ_FIRST(&d->d_queue)) != NULL) {
		TAILQ_REMOVE(&d->d_queue, sg, sg_entry);
		free(sg);
	}
	d->d_queued = 0;
}

/* Closes c; with reset, both sockets end in an RST (a cut link). */
static void
conn_close(struct conn *c, int reset, const char *why)
{
	struct linger	 lg = { 1, 0 };
	double		 secs;

	secs = (double)(now_ns() - c->c_start) / 1e9;
	log_info("connection %llu %s after %.3f s: %llu bytes up, %llu "
	    "down, %.2f MB/s up", (unsigned long long)c->c_id, why, secs,
	    (unsigned long long)c->c_up.d_bytes,
	    (unsigned long long)c->c_down.d_bytes,
	    secs > 0 ? (double)c->c_up.d_bytes / secs / 1e6 : 0.0);
	if (reset) {
		(void)setsockopt(c->c_a.e_fd, SOL_SOCKET, SO_LINGER, &lg,
		    sizeof(lg));
		(void)setsockopt(c->c_b.e_fd, SOL_SOCKET, SO_LINGER, &lg,
		    sizeof(lg));
	}
	close(c->c_a.e_fd);
	close(c->c_b.e_fd);
	dir_clear(&c->c_up);
	dir_clear(&c->c_down);
	TAILQ_REMOVE(&relay.rl_conns, c, c_entry);
	free(c);
}

/*
 * Delivers what is due and reads what fits.  Returns 0, 1 if the cut
 * offset was reached, -1 on a socket error (the connection is reset).
 */
static int
dir_pump(struct dir *d, uint64_t now)
{
	struct conn	*c = d->d_conn;
	struct seg	*sg;
	uint64_t	 start, *link_free;
	size_t		 want;
	ssize_t		 n;

	d->d_blocked = 0;
	while ((sg = TAILQ_FIRST(&d->d_queue)) != NULL &&
	    sg->sg_ready <= now) {
		want = sg->sg_len - sg->sg_off;
		if (c->c_cut_at != 0 && c->c_up.d_bytes + c->c_down.d_bytes +
		    want > c->c_cut_at)
			want = c->c_cut_at - c->c_up.d_bytes -
			    c->c_down.d_bytes;
		if (want == 0)
			return 1;
		if ((n = write(d->d_dst, sg->sg_data + sg->sg_off, want)) ==
		    -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				d->d_blocked = 1;
				break;
			}
			return -1;
		}
		sg->sg_off += n;
		d->d_queued -= n;
		d->d_bytes += n;
		if (sg->sg_off == sg->sg_len) {
			TAILQ_REMOVE(&d->d_queue, sg, sg_entry);
			free(sg);
		}
	}
	if (d->d_eof && TAILQ_EMPTY(&d->d_queue) && !d->d_shut) {
		(void)shutdown(d->d_dst, SHUT_WR);
		d->d_shut = 1;
	}
	while (dir_can_read(d)) {
		want = relay.rl_cap - d->d_queued;
		if (want > RELAY_READ_MAX)
			want = RELAY_READ_MAX;
		if ((sg = malloc(sizeof(*sg) + want)) == NULL)
			fatal("malloc");
		if ((n = read(d->d_src, sg->sg_data, want)) <= 0) {
			free(sg);
			if (n == 0) {
				d->d_eof = 1;
				if (TAILQ_EMPTY(&d->d_queue) && !d->d_shut) {
					(void)shutdown(d->d_dst, SHUT_WR);
					d->d_shut = 1;
				}
				break;
			}
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			return -1;
		}
		/* On the link after what is queued, off it at the rate. */
		link_free = !relay.rl_shared ? &d->d_link_free :
		    &relay.rl_link_free[d == &d->d_conn->c_up ? 0 : 1];
		start = *link_free > now ? *link_free : now;
		if (relay.rl_rate > 0)
			start += (uint64_t)n * 1000000000u / relay.rl_rate;
		*link_free = start;
		sg->sg_ready = start + relay.rl_delay_ns;
		sg->sg_len = (size_t)n;
		sg->sg_off = 0;
		TAILQ_INSERT_TAIL(&d->d_queue, sg, sg_entry);
		d->d_queued += (size_t)n;
	}
	return 0;
}

/* Moves c's data; closes c when it is done, cut or broken. */
static void
conn_pump(struct conn *c, uint64_t now)
{
	struct sockaddr_in	 sin;
	socklen_t		 len = sizeof(sin), elen = sizeof(int);
	int			 err = 0, r;

	if (c->c_connecting) {
		/* A peer name once connected; SO_ERROR if it failed. */
		if (getpeername(c->c_b.e_fd, (struct sockaddr *)&sin,
		    &len) == -1) {
			if (getsockopt(c->c_b.e_fd, SOL_SOCKET, SO_ERROR, &err,
			    &elen) == -1)
				err = errno;
			if (err == 0 || err == EINPROGRESS)
				return;
			log_warnx("connection %llu: 127.0.0.1:%u: %s",
			    (unsigned long long)c->c_id,
			    ntohs(relay.rl_fwd.sin_port), strerror(err));
			conn_close(c, 1, "refused by the forward port");
			return;
		}
		c->c_connecting = 0;
	}
	if ((r = dir_pump(&c->c_up, now)) == 0)
		r = dir_pump(&c->c_down, now);
	if (r == 1) {
		conn_close(c, 1, "cut");
		return;
	}
	if (r == -1) {
		conn_close(c, 1, "reset");
		return;
	}
	if (c->c_up.d_shut && c->c_down.d_shut) {
		conn_close(c, 0, "closed");
		return;
	}
	conn_interest(c);
}

static void
relay_accept(void)
{
	struct conn	*c;
	int		 fd, bfd, one = 1;

	for (;;) {
		if ((fd = accept4(relay.rl_lfd, NULL, NULL, SOCK_NONBLOCK |
		    SOCK_CLOEXEC)) == -1) {
			if (errno != EAGAIN && errno != EINTR)
				log_warn("accept");
			return;
		}
		if ((bfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0)) == -1) {
			log_warn("socket");
			close(fd);
			continue;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		(void)setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
		if (connect(bfd, (struct sockaddr *)&relay.rl_fwd,
		    sizeof(relay.rl_fwd)) == -1 && errno != EINPROGRESS) {
			log_warn("connect to the forward port");
			close(fd);
			close(bfd);
			continue;
		}
		if ((c = calloc(1, sizeof(*c))) == NULL)
			fatal("calloc");
		c->c_id = ++relay.rl_nconns;
		c->c_start = now_ns();
		c->c_connecting = 1;
		c->c_a.e_conn = c;
		c->c_a.e_fd = fd;
		c->c_b.e_conn = c;
		c->c_b.e_fd = bfd;
		dir_init(&c->c_up, c, fd, bfd);
		dir_init(&c->c_down, c, bfd, fd);
		if (relay.rl_cut_hi > 0 && c->c_id > relay.rl_spared &&
		    c->c_id - relay.rl_spared <= relay.rl_cuts)
			c->c_cut_at = relay.rl_cut_lo + rng_next() %
			    (relay.rl_cut_hi - relay.rl_cut_lo + 1);
		TAILQ_INSERT_TAIL(&relay.rl_conns, c, c_entry);
		ep_set(&c->c_a, 0, EPOLL_CTL_ADD);
		ep_set(&c->c_b, 0, EPOLL_CTL_ADD);
		conn_interest(c);
		log_debug("connection %llu accepted%s",
		    (unsigned long long)c->c_id, c->c_cut_at ? ", to be cut" :
		    "");
	}
}

/* Arms the timer for the earliest delivery that can go out. */
static void
relay_timer(void)
{
	struct itimerspec	 its;
	struct conn		*c;
	struct seg		*sg;
	struct dir		*dirs[2];
	uint64_t		 next = 0;
	int			 i;

	TAILQ_FOREACH(c, &relay.rl_conns, c_entry) {
		if (c->c_connecting)
			continue;
		dirs[0] = &c->c_up;
		dirs[1] = &c->c_down;
		for (i = 0; i < 2; i++) {
			if (dirs[i]->d_blocked ||
			    (sg = TAILQ_FIRST(&dirs[i]->d_queue)) == NULL)
				continue;
			if (next == 0 || sg->sg_ready < next)
				next = sg->sg_ready;
		}
	}
	memset(&its, 0, sizeof(its));
	if (next != 0) {
		/* Absolute: a time already past fires at once. */
		its.it_value.tv_sec = (time_t)(next / 1000000000u);
		its.it_value.tv_nsec = (long)(next % 1000000000u);
	}
	if (timerfd_settime(relay.rl_tfd, TFD_TIMER_ABSTIME, &its, NULL) == -1)
		fatal("timerfd_settime");
}

static void
relay_signal(int sig)
{
	relay_stop = 1;
}

int
main(int argc, char *argv[])
{
	struct epoll_event	 evs[RELAY_EVENTS];
	struct sockaddr_in	 sin;
	struct sigaction	 sa;
	struct conn		*c, *next;
	socklen_t		 slen = sizeof(sin);
	uint64_t		 v, seed = 1, port = 0, fport, ticks;
	char			*dash;
	int			 ch, n, i, one = 1;

	log_init("wanrelay", 1, 0);
	relay.rl_buffer = RELAY_BUFFER_DEFAULT;
	relay.rl_cuts = UINT64_MAX;
	while ((ch = getopt(argc, argv, "b:c:d:k:n:p:r:Ss:v")) != -1) {
		switch (ch) {
		case 'b':
			if (conf_parse_size(optarg, &relay.rl_buffer) == -1 ||
			    relay.rl_buffer == 0)
				usage();
			break;
		case 'c':
			if ((dash = strchr(optarg, '-')) == NULL)
				usage();
			*dash = '\0';
			if (conf_parse_size(optarg, &relay.rl_cut_lo) == -1 ||
			    conf_parse_size(dash + 1, &relay.rl_cut_hi) == -1 ||
			    relay.rl_cut_lo == 0 || relay.rl_cut_hi < relay.rl_cut_lo ||
			    relay.rl_cut_hi == UINT64_MAX)
				usage();
			break;
		case 'd':
			if (conf_parse_uint(optarg, 0, 60000, &v) == -1)
				usage();
			relay.rl_delay_ns = v * 1000000u;
			break;
		case 'k':
			if (conf_parse_uint(optarg, 0, UINT64_MAX,
			    &relay.rl_spared) == -1)
				usage();
			break;
		case 'n':
			if (conf_parse_uint(optarg, 0, UINT64_MAX,
			    &relay.rl_cuts) == -1)
				usage();
			break;
		case 'p':
			if (conf_parse_uint(optarg, 0, 65535, &port) == -1)
				usage();
			break;
		case 'r':
			if (parse_rate(optarg, &relay.rl_rate) == -1)
				usage();
			break;
		case 'S':
			relay.rl_shared = 1;
			break;
		case 's':
			if (conf_parse_uint(optarg, 0, UINT64_MAX, &seed) == -1)
				usage();
			break;
		case 'v':
			log_setverbose(1);
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != 1 || conf_parse_uint(argv[0], 1, 65535, &fport) == -1)
		usage();
	/* xorshift must not start at 0. */
	relay.rl_rng = seed * 0x9e3779b97f4a7c15ull + 1;
	/* What is on the wire, plus the bottleneck's buffer. */
	relay.rl_cap = relay.rl_buffer;
	if (relay.rl_rate > 0)
		relay.rl_cap += relay.rl_rate * (relay.rl_delay_ns / 1000000u) / 1000u;
	TAILQ_INIT(&relay.rl_conns);

	memset(&relay.rl_fwd, 0, sizeof(relay.rl_fwd));
	relay.rl_fwd.sin_family = AF_INET;
	relay.rl_fwd.sin_port = htons((uint16_t)fport);
	relay.rl_fwd.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = relay_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTERM, &sa, NULL) == -1 ||
	    sigaction(SIGINT, &sa, NULL) == -1)
		fatal("sigaction");
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL) == -1)
		fatal("sigaction");

	if ((relay.rl_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) ==
	    -1 || setsockopt(relay.rl_lfd, SOL_SOCKET, SO_REUSEADDR, &one,
	    sizeof(one)) == -1)
		fatal("socket");
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(relay.rl_lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1)
		fatal("bind 127.0.0.1:%llu", (unsigned long long)port);
	if (listen(relay.rl_lfd, 64) == -1 || nonblock(relay.rl_lfd) == -1 ||
	    getsockname(relay.rl_lfd, (struct sockaddr *)&sin, &slen) == -1)
		fatal("listen");
	if ((relay.rl_epfd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    (relay.rl_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK |
	    TFD_CLOEXEC)) == -1)
		fatal("epoll");
	listen_ep.e_fd = relay.rl_lfd;
	timer_ep.e_fd = relay.rl_tfd;
	ep_set(&listen_ep, EPOLLIN, EPOLL_CTL_ADD);
	ep_set(&timer_ep, EPOLLIN, EPOLL_CTL_ADD);

	printf("%u\n", ntohs(sin.sin_port));
	if (fflush(stdout) == EOF)
		fatal("stdout");
	log_info("127.0.0.1:%u -> 127.0.0.1:%llu, %llu ms each way, %llu "
	    "bytes/s, %llu bytes held per direction", ntohs(sin.sin_port),
	    (unsigned long long)fport,
	    (unsigned long long)(relay.rl_delay_ns / 1000000u),
	    (unsigned long long)relay.rl_rate, (unsigned long long)relay.rl_cap);

	while (!relay_stop) {
		relay_timer();
		if ((n = epoll_wait(relay.rl_epfd, evs, RELAY_EVENTS, -1)) == -1) {
			if (errno == EINTR)
				continue;
			fatal("epoll_wait");
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == &listen_ep)
				relay_accept();
			else if (evs[i].data.ptr == &timer_ep &&
			    read(relay.rl_tfd, &ticks, sizeof(ticks)) == -1 &&
			    errno != EAGAIN)
				fatal("timerfd");
		}
		/* Few connections: pump them all. */
		for (c = TAILQ_FIRST(&relay.rl_conns); c != NULL; c = next) {
			next = TAILQ_NEXT(c, c_entry);
			conn_pump(c, now_ns());
		}
	}
	while ((c = TAILQ_FIRST(&relay.rl_conns)) != NULL)
		conn_close(c, 1, "stopped");
	return EXIT_OK;
}
