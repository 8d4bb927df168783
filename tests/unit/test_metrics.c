/*
 * test_metrics.c: the metrics registry (names, labels, NULL safety),
 * counters and gauges updated from many threads at once, the text
 * format read back by a parser of the Prometheus exposition format,
 * and GET /metrics scraped over a real socket from libevent's HTTP
 * server on 127.0.0.1.
 */
#include <sys/socket.h>

#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "common.h"
#include "metrics.h"

/* --- a parser of the text exposition format ------------------------- */

#define SAMPLES_MAX	512

struct sample {
	char	 s_name[160];
	char	 s_labels[512];	/* k=v,k=v, unescaped, in order */
	double	 s_value;
};

struct scrape {
	struct sample	 sc_samples[SAMPLES_MAX];
	int		 sc_n;
	char		 sc_types[64][160];	/* "name type" of TYPE lines */
	int		 sc_ntypes;
};

/* The family a sample belongs to: name less _bucket, _sum, _count. */
static int
scrape_has_type(const struct scrape *sc, const char *name)
{
	char		 fam[160];
	const char	*suf[] = { "_bucket", "_sum", "_count" };
	size_t		 len, sl;
	int		 i, j;

	for (j = -1; j < 3; j++) {
		(void)snprintf(fam, sizeof(fam), "%s", name);
		if (j >= 0) {
			len = strlen(fam);
			sl = strlen(suf[j]);
			if (len <= sl || strcmp(fam + len - sl, suf[j]) != 0)
				continue;
			fam[len - sl] = '\0';
		}
		len = strlen(fam);
		for (i = 0; i < sc->sc_ntypes; i++)
			if (strncmp(sc->sc_types[i], fam, len) == 0 &&
			    sc->sc_types[i][len] == ' ')
				return 1;
	}
	return 0;
}

/*
 * Parses a whole exposition into sc.  Returns 0, or -1 on anything a
 * Prometheus server would refuse: bad names, bad escapes, a sample
 * before its TYPE line, a value that is not a float, no final newline.
 */
static int
scrape_parse(const char *text, struct scrape *sc)
{
	const char	*p = text, *eol;
	char		 line[2048], *q, *end, *lab;
	size_t		 o;

	memset(sc, 0, sizeof(*sc));
	while (*p != '\0') {
		if ((eol = strchr(p, '\n')) == NULL ||
		    (size_t)(eol - p) >= sizeof(line))
			return -1;
		memcpy(line, p, (size_t)(eol - p));
		line[eol - p] = '\0';
		p = eol + 1;
		if (strncmp(line, "# HELP ", 7) == 0)
			continue;
		if (strncmp(line, "# TYPE ", 7) == 0) {
			if (sc->sc_ntypes == 64)
				return -1;
			q = line + 7;
			if ((strstr(q, " counter") == NULL &&
			    strstr(q, " gauge") == NULL &&
			    strstr(q, " histogram") == NULL) ||
			    strlen(q) >= sizeof(sc->sc_types[0]))
				return -1;
			memcpy(sc->sc_types[sc->sc_ntypes++], q,
			    strlen(q) + 1);
			continue;
		}
		if (line[0] == '#' || line[0] == '\0' || sc->sc_n == SAMPLES_MAX)
			return -1;
		struct sample *s = &sc->sc_samples[sc->sc_n];
		q = line;
		for (o = 0; (*q >= 'a' && *q <= 'z') || (*q >= 'A' &&
		    *q <= 'Z') || *q == '_' || *q == ':' || (o > 0 &&
		    *q >= '0' && *q <= '9'); q++) {
			if (o + 1 >= sizeof(s->s_name))
				return -1;
			s->s_name[o++] = *q;
		}
		if (o == 0)
			return -1;
		s->s_name[o] = '\0';
		if (!scrape_has_type(sc, s->s_name))
			return -1;
		lab = s->s_labels;
		o = 0;
		if (*q == '{') {
			q++;
			while (*q != '}') {
				if (o > 0) {
					if (*q++ != ',')
						return -1;
					lab[o++] = ',';
				}
				while ((*q >= 'a' && *q <= 'z') ||
				    (*q >= 'A' && *q <= 'Z') || *q == '_' ||
				    (*q >= '0' && *q <= '9'))
					lab[o++] = *q++;
				if (*q++ != '=' || *q++ != '"')
					return -1;
				lab[o++] = '=';
				while (*q != '"') {
					if (*q == '\0' || o + 2 >=
					    sizeof(s->s_labels))
						return -1;
					if (*q == '\\') {
						q++;
						if (*q == 'n')
							lab[o++] = '\n';
						else if (*q == '\\' ||
						    *q == '"')
							lab[o++] = *q;
						else
							return -1;
						q++;
					} else
						lab[o++] = *q++;
				}
				q++;
			}
			q++;
		}
		lab[o] = '\0';
		if (*q++ != ' ')
			return -1;
		errno = 0;
		s->s_value = strtod(q, &end);
		if (end == q || *end != '\0' || errno != 0)
			return -1;
		sc->sc_n++;
	}
	return 0;
}

/* The value of name{labels}, or NAN if it is not there. */
static double
scrape_value(const struct scrape *sc, const char *name, const char *labels)
{
	int	 i;

	for (i = 0; i < sc->sc_n; i++)
		if (strcmp(sc->sc_samples[i].s_name, name) == 0 &&
		    strcmp(sc->sc_samples[i].s_labels, labels) == 0)
			return sc->sc_samples[i].s_value;
	return NAN;
}

static char *
render_string(void)
{
	struct evbuffer	*b;
	char		*s;
	size_t		 len;

	assert_non_null(b = evbuffer_new());
	assert_int_equal(metrics_render(b), 0);
	len = evbuffer_get_length(b);
	assert_non_null(s = malloc(len + 1));
	assert_int_equal(evbuffer_remove(b, s, len), (int)len);
	s[len] = '\0';
	evbuffer_free(b);
	return s;
}

/* --- tests ---------------------------------------------------------- */

static int
teardown(void **state)
{
	metrics_free();
	return 0;
}

static void
test_register(void **state)
{
	struct metric	*c, *g, *h;
	double		 b[] = { 1, 2 }, bad[] = { 2, 1 };

	assert_non_null(c = metrics_counter("t_total", "help", "kind"));
	/* The same again: the same family; differently: refused. */
	assert_ptr_equal(metrics_counter("t_total", "other", "kind"), c);
	assert_null(metrics_gauge("t_total", "help", "kind"));
	assert_null(metrics_counter("t_total", "help", "state"));
	/* Names and labels. */
	assert_null(metrics_counter("0bad", "h", NULL));
	assert_null(metrics_counter("bad-name", "h", NULL));
	assert_null(metrics_counter("", "h", NULL));
	assert_null(metrics_counter("ok_total", "h", "a,b,c"));
	assert_null(metrics_counter("ok_total", "h", "__reserved"));
	assert_null(metrics_counter("ok_total", "h", "a:b"));
	assert_null(metrics_counter("ok_total", "h", "a,"));
	assert_non_null(metrics_counter("ns:ok_total", "h", "a,b"));
	assert_null(metrics_histogram("h_seconds", "h", NULL, bad, 2));
	assert_null(metrics_histogram("h_seconds", "h", NULL, b, 0));
	assert_non_null(h = metrics_histogram("h_seconds", "h", NULL, b, 2));

	/* Series: values required, bounded, no control characters. */
	assert_null(metrics_series(c, NULL, NULL));
	assert_null(metrics_series(c, "a\nb", NULL));
	assert_non_null(metrics_series(c, "a", NULL));
	assert_ptr_equal(metrics_series(c, "a", "ignored"),
	    metrics_series(c, "a", NULL));
	assert_ptr_not_equal(metrics_series(c, "a", NULL),
	    metrics_series(c, "b", NULL));

	/* NULL families and series are no-ops. */
	assert_null(metrics_series(NULL, "x", NULL));
	metrics_add(NULL, 1);
	metrics_set(NULL, 1);
	metrics_gauge_add(NULL, 1);
	metrics_observe(NULL, 1);
	assert_int_equal(metrics_counter_value(NULL), 0);

	/* Operations of the wrong kind change nothing they should not. */
	assert_non_null(g = metrics_gauge("g", "h", NULL));
	metrics_observe(metrics_series(g, NULL, NULL), 5);
	assert_true(metrics_gauge_value(metrics_series(g, NULL, NULL)) == 0);
	metrics_observe(metrics_series(h, NULL, NULL), 1.5);
}

#define THREADS		4
#define ROUNDS		100000

static void *
hammer(void *arg)
{
	struct metric	*c, *g, *h;
	char		 mine[16];
	int		 i, id = (int)(intptr_t)arg;

	c = metrics_counter("hammer_total", "h", "kind");
	g = metrics_gauge("hammer_inflight", "h", NULL);
	h = metrics_histogram("hammer_seconds", "h", NULL,
	    (const double []){ 0.5, 1 }, 2);
	(void)snprintf(mine, sizeof(mine), "t%d", id);
	for (i = 0; i < ROUNDS; i++) {
		/* Looked up at each use: the lock-free path. */
		METRICS_INC(c, "shared");
		METRICS_ADD(c, mine, 2);
		metrics_gauge_add(metrics_series(g, NULL, NULL), 1);
		metrics_observe(metrics_series(h, NULL, NULL),
		    (i % 4) * 0.5);
		metrics_gauge_add(metrics_series(g, NULL, NULL), -1);
	}
	return NULL;
}

static void
test_threads(void **state)
{
	pthread_t	 t[THREADS];
	struct scrape	*sc;
	char		*text, lab[16];
	int		 i;

	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer,
		    (void *)(intptr_t)i), 0);
	for (i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);

	assert_int_equal(metrics_counter_value(metrics_series(
	    metrics_counter("hammer_total", "h", "kind"), "shared", NULL)),
	    THREADS * ROUNDS);

	text = render_string();
	assert_non_null(sc = malloc(sizeof(*sc)));
	assert_int_equal(scrape_parse(text, sc), 0);
	assert_true(scrape_value(sc, "hammer_total", "kind=shared") ==
	    THREADS * ROUNDS);
	for (i = 0; i < THREADS; i++) {
		(void)snprintf(lab, sizeof(lab), "kind=t%d", i);
		assert_true(scrape_value(sc, "hammer_total", lab) ==
		    2.0 * ROUNDS);
	}
	assert_true(scrape_value(sc, "hammer_inflight", "") == 0);
	/* Observations 0, 0.5, 1, 1.5 in turn: cumulative buckets. */
	assert_true(scrape_value(sc, "hammer_seconds_bucket", "le=0.5") ==
	    THREADS * ROUNDS / 2);
	assert_true(scrape_value(sc, "hammer_seconds_bucket", "le=1") ==
	    THREADS * ROUNDS * 3 / 4);
	assert_true(scrape_value(sc, "hammer_seconds_bucket", "le=+Inf") ==
	    THREADS * ROUNDS);
	assert_true(scrape_value(sc, "hammer_seconds_count", "") ==
	    THREADS * ROUNDS);
	assert_true(scrape_value(sc, "hammer_seconds_sum", "") ==
	    THREADS * ROUNDS / 4 * 3.0);
	free(sc);
	free(text);
}

static void
test_render(void **state)
{
	struct metric	*c, *g;
	struct scrape	*sc;
	char		*text;

	assert_int_equal(metrics_init("test_metrics"), 0);
	c = metrics_counter("esc_total", "a \\ help\nwith a newline", "v");
	g = metrics_gauge("esc_gauge", "h", "a,b");
	METRICS_ADD(c, "quote \" back \\ end", 3);
	metrics_set(metrics_series(g, "x", "y"), -2.5);
	metrics_set(metrics_series(g, "inf", "nan"), INFINITY);
	METRICS_ADD(metrics.mt_chunks, "new", 7);
	METRICS_INC(metrics.mt_chunks, "dedup");
	METRICS_ADD(metrics.mt_bytes_read, NULL, 1u << 20);
	metrics_set(metrics_series(metrics.mt_last_point, "acme", "vm1"),
	    1700000000);
	metrics_observe(metrics_series(metrics.mt_kms_seconds, "get", NULL),
	    0.003);

	text = render_string();
	assert_non_null(strstr(text,
	    "# HELP esc_total a \\\\ help\\nwith a newline\n"
	    "# TYPE esc_total counter\n"));
	assert_non_null(strstr(text,
	    "esc_total{v=\"quote \\\" back \\\\ end\"} 3\n"));
	assert_non_null(sc = malloc(sizeof(*sc)));
	assert_int_equal(scrape_parse(text, sc), 0);
	assert_true(scrape_value(sc, "esc_total", "v=quote \" back \\ end") ==
	    3);
	assert_true(scrape_value(sc, "esc_gauge", "a=x,b=y") == -2.5);
	assert_true(isinf(scrape_value(sc, "esc_gauge", "a=inf,b=nan")));
	/* The standard families, zeros included. */
	assert_true(scrape_value(sc, "transporter_chunks_total",
	    "state=new") == 7);
	assert_true(scrape_value(sc, "transporter_chunks_total",
	    "state=dedup") == 1);
	assert_true(scrape_value(sc, "transporter_chunks_total",
	    "state=zero") == 0);
	assert_true(scrape_value(sc, "transporter_bytes_read_total", "") ==
	    1 << 20);
	assert_true(scrape_value(sc, "transporter_errors_total",
	    "kind=tls") == 0);
	assert_true(scrape_value(sc, "transporter_errors_total",
	    "kind=UNAUTHORISED") == 0);
	assert_true(scrape_value(sc, "transporter_errors_total",
	    "kind=INTEGRITY") == 0);
	assert_true(scrape_value(sc, "transporter_sessions",
	    "state=open") == 0);
	assert_true(scrape_value(sc, "transporter_jobs_total",
	    "kind=backup,result=failed") == 0);
	assert_true(scrape_value(sc, "transporter_build_info",
	    "program=test_metrics,version=" TRANSPORTER_VERSION) == 1);
	assert_true(scrape_value(sc, "process_start_time_seconds", "") > 1e9);
	assert_true(scrape_value(sc,
	    "transporter_last_point_timestamp_seconds",
	    "tenant=acme,name=vm1") == 1700000000);
	assert_true(scrape_value(sc, "transporter_kms_request_seconds_bucket",
	    "op=get,le=0.0025") == 0);
	assert_true(scrape_value(sc, "transporter_kms_request_seconds_bucket",
	    "op=get,le=0.005") == 1);
	assert_true(scrape_value(sc, "transporter_kms_request_seconds_count",
	    "op=get") == 1);
	/* Every counter is named ..._total. */
	for (int i = 0; i < sc->sc_ntypes; i++)
		if (strstr(sc->sc_types[i], " counter") != NULL)
			assert_non_null(strstr(sc->sc_types[i],
			    "_total counter"));
	free(sc);
	free(text);
}

/* --- the HTTP endpoint ---------------------------------------------- */

struct client_arg {
	struct event_base	*ca_base;
	int			 ca_port;
	char			 ca_reply[3][65536];
};

/* Sends req to 127.0.0.1:port and reads the reply until EOF. */
static void
http_fetch(int port, const char *req, char *out, size_t len)
{
	struct sockaddr_in	 sin;
	size_t			 off = 0;
	ssize_t			 n;
	int			 fd;

	out[0] = '\0';
	if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
		return;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return;
	}
	while (off + 1 < len && (n = read(fd, out + off,
	    len - off - 1)) > 0)
		off += (size_t)n;
	out[off] = '\0';
	close(fd);
}

static void *
client_thread(void *arg)
{
	struct client_arg	*ca = arg;

	http_fetch(ca->ca_port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n"
	    "Connection: close\r\n\r\n", ca->ca_reply[0],
	    sizeof(ca->ca_reply[0]));
	http_fetch(ca->ca_port, "GET /secrets HTTP/1.0\r\n\r\n",
	    ca->ca_reply[1], sizeof(ca->ca_reply[1]));
	http_fetch(ca->ca_port, "POST /metrics HTTP/1.0\r\n"
	    "Content-Length: 2\r\n\r\nhi", ca->ca_reply[2],
	    sizeof(ca->ca_reply[2]));
	event_base_loopexit(ca->ca_base, NULL);
	return NULL;
}

static void
test_http(void **state)
{
	struct client_arg	*ca;
	struct metrics_server	*sv, *busy;
	struct scrape		*sc;
	struct timeval		 limit = { 20, 0 };
	pthread_t		 t;
	char			*body, addr[64];

	assert_int_equal(evthread_use_pthreads(), 0);
	assert_int_equal(metrics_init("test_metrics"), 0);
	METRICS_ADD(metrics.mt_bytes_sent, NULL, 12345);
	assert_non_null(ca = calloc(1, sizeof(*ca)));
	assert_non_null(ca->ca_base = event_base_new());

	/* Bad addresses are refused with a reason. */
	assert_null(metrics_listen(ca->ca_base, "127.0.0.1:http"));
	assert_null(metrics_listen(ca->ca_base, "127.0.0.1:70000"));
	assert_null(metrics_listen(ca->ca_base, NULL));

	assert_non_null(sv = metrics_listen(ca->ca_base, "127.0.0.1:0"));
	ca->ca_port = metrics_server_port(sv);
	assert_true(ca->ca_port > 0);
	/* A port in use is refused. */
	(void)snprintf(addr, sizeof(addr), "127.0.0.1:%d", ca->ca_port);
	assert_null(busy = metrics_listen(ca->ca_base, addr));

	assert_int_equal(pthread_create(&t, NULL, client_thread, ca), 0);
	/* A bound on the test if the client hangs. */
	assert_int_equal(event_base_loopexit(ca->ca_base, &limit), 0);
	assert_int_equal(event_base_dispatch(ca->ca_base), 0);
	assert_int_equal(pthread_join(t, NULL), 0);

	assert_true(strncmp(ca->ca_reply[0], "HTTP/1.1 200 OK\r\n", 17) == 0);
	assert_non_null(strstr(ca->ca_reply[0], "Content-Type: text/plain; "
	    "version=0.0.4; charset=utf-8\r\n"));
	assert_non_null(body = strstr(ca->ca_reply[0], "\r\n\r\n"));
	body += 4;
	assert_non_null(sc = malloc(sizeof(*sc)));
	assert_int_equal(scrape_parse(body, sc), 0);
	assert_true(sc->sc_n >= 30);
	assert_true(scrape_value(sc, "transporter_bytes_sent_total", "") ==
	    12345);
	assert_true(scrape_value(sc, "transporter_build_info",
	    "program=test_metrics,version=" TRANSPORTER_VERSION) == 1);
	assert_true(strncmp(ca->ca_reply[1], "HTTP/1.1 404", 12) == 0);
	/* Methods other than GET and HEAD: libevent answers 501. */
	assert_true(strncmp(ca->ca_reply[2], "HTTP/1.1 501", 12) == 0 ||
	    strncmp(ca->ca_reply[2], "HTTP/1.1 405", 12) == 0);

	metrics_server_free(sv);
	event_base_free(ca->ca_base);
	free(sc);
	free(ca);
}

/* What one process counted, handed to another as text and added there. */
static void
test_counters_text(void **state)
{
	char	 buf[4096], small[16];
	int	 n;

	assert_int_equal(metrics_init("child"), 0);
	METRICS_ADD(metrics.mt_bytes_read, NULL, 1048576);
	METRICS_ADD(metrics.mt_compress_in, NULL, 1000);
	METRICS_ADD(metrics.mt_compress_out, NULL, 400);
	METRICS_INC(metrics.mt_errors, "kms");	/* labels: not handed */
	assert_true((n = metrics_counters_text(buf, sizeof(buf))) > 0);
	assert_int_equal((size_t)n, strlen(buf));
	assert_non_null(strstr(buf, "transporter_bytes_read_total 1048576\n"));
	assert_null(strstr(buf, "errors"));
	assert_int_equal(metrics_counters_text(small, sizeof(small)), -1);
	metrics_free();

	assert_int_equal(metrics_init("parent"), 0);
	METRICS_ADD(metrics.mt_bytes_read, NULL, 5);
	assert_true(metrics_merge_counters(buf) >= 3);
	/* Twice, as two children would: each adds. */
	assert_true(metrics_merge_counters(buf) >= 3);
	assert_true(metrics_counter_value(metrics_series(metrics.mt_bytes_read,
	    NULL, NULL)) == 5 + 2 * 1048576);
	assert_true(metrics_counter_value(metrics_series(
	    metrics.mt_compress_out, NULL, NULL)) == 800);
	assert_true(metrics_counter_value(metrics_series(metrics.mt_errors,
	    "kms", NULL)) == 0);
	/* Lines naming nothing here, or with no number, add nothing. */
	assert_int_equal(metrics_merge_counters("nosuch_total 7\n"
	    "transporter_bytes_read_total x\n"
	    "transporter_bytes_read_total 3junk\n"
	    "transporter_bytes_read_total -1\n"
	    "transporter_jobs_total 9\n"
	    "transporter_bytes_read_total\n"
	    "transporter_bytes_read_total 99999999999999999999999\n"), 0);
	assert_int_equal(metrics_merge_counters(
	    "transporter_bytes_read_total 1"), 1);	/* no newline */
	assert_true(metrics_counter_value(metrics_series(metrics.mt_bytes_read,
	    NULL, NULL)) == 6 + 2 * 1048576);
}

/* The worker pool's gauge: jobs queued or running, 0 once all are done. */
static pthread_mutex_t	 pool_gate = PTHREAD_MUTEX_INITIALIZER;
static int		 pool_done_n;

static void
gated_work(struct pool_job *pj)
{
	pthread_mutex_lock(&pool_gate);
	pthread_mutex_unlock(&pool_gate);
}

static struct event_base *pool_base;

static void
gated_done(struct pool_job *pj)
{
	if (++pool_done_n == 3)
		event_base_loopbreak(pool_base);
}

static void
test_pool_gauge(void **state)
{
	struct pool_job		 jobs[3];
	struct pool		*pl;
	struct timeval		 limit = { 20, 0 };
	struct metric_series	*g;
	int			 i;

	assert_int_equal(evthread_use_pthreads(), 0);
	assert_int_equal(metrics_init("test_metrics"), 0);
	assert_non_null(g = metrics_series(metrics.mt_pool_jobs, NULL, NULL));
	assert_non_null(pool_base = event_base_new());
	assert_non_null(pl = pool_new(pool_base, 2));
	pthread_mutex_lock(&pool_gate);
	for (i = 0; i < 3; i++) {
		jobs[i].pj_work = gated_work;
		jobs[i].pj_done = gated_done;
		pool_submit(pl, &jobs[i]);
	}
	/* Two running (held at the gate), one queued. */
	assert_true(metrics_gauge_value(g) == 3);
	pthread_mutex_unlock(&pool_gate);
	assert_int_equal(event_base_loopexit(pool_base, &limit), 0);
	assert_int_equal(event_base_dispatch(pool_base), 0);
	assert_int_equal(pool_done_n, 3);
	assert_true(metrics_gauge_value(g) == 0);
	pool_free(pl);
	event_base_free(pool_base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_register, teardown),
		cmocka_unit_test_teardown(test_threads, teardown),
		cmocka_unit_test_teardown(test_render, teardown),
		cmocka_unit_test_teardown(test_http, teardown),
		cmocka_unit_test_teardown(test_counters_text, teardown),
		cmocka_unit_test_teardown(test_pool_gauge, teardown),
	};

	log_init("test_metrics", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
