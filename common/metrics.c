/*
 * metrics.c: a Prometheus text-format (version 0.0.4) metrics registry
 * and its GET /metrics endpoint on libevent's HTTP server.
 *
 * Families and series are created under one mutex and published with
 * release stores; readers (lookups, the renderer) walk them with
 * acquire loads and take no lock.  A series is never freed before
 * metrics_free, so a handle stays valid for the life of the program.
 * Values are atomics: counters are integers, gauges and histogram sums
 * are doubles kept as their bit patterns and updated by compare and
 * swap.
 */
#include <sys/socket.h>

#include <netinet/in.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "common.h"
#include "metrics.h"

#define METRICS_NAME_MAX	128
#define METRICS_HTTP_TIMEOUT	10	/* seconds per request */

struct metric_series {
	_Atomic(struct metric_series *) sr_next;
	struct metric		*sr_family;
	char			*sr_values[METRICS_LABELS_MAX];
	_Atomic uint64_t	 sr_value;	/* count, or a double's bits */
	_Atomic uint64_t	 sr_sum;	/* histogram: a double's bits */
	_Atomic uint64_t	*sr_buckets;	/* histogram: nbounds + 1 */
};

struct metric {
	char			*mf_name;
	char			*mf_help;
	enum metrics_type	 mf_type;
	int			 mf_nlabels;
	char			*mf_labels[METRICS_LABELS_MAX];
	double			*mf_bounds;	/* histogram upper bounds */
	size_t			 mf_nbounds;
	_Atomic(struct metric_series *) mf_head;
	struct metric_series	*mf_tail;	/* under metrics_lock */
	size_t			 mf_nseries;	/* under metrics_lock */
};

struct metrics_server {
	struct evhttp		*sv_http;
	int			 sv_port;
};

struct metrics_set	 metrics;

static pthread_mutex_t	 metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric	*metrics_families[METRICS_FAMILIES_MAX];
static _Atomic size_t	 metrics_nfamilies;

/* Default histogram buckets, in seconds. */
static const double	 metrics_kms_bounds[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
static const double	 metrics_job_bounds[] = {
	1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200
};

static uint64_t
metrics_d2u(double d)
{
	uint64_t	 u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

static double
metrics_u2d(uint64_t u)
{
	double	 d;

	memcpy(&d, &u, sizeof(d));
	return d;
}

/* Adds x to the double whose bits v holds. */
static void
metrics_atomic_fadd(_Atomic uint64_t *v, double x)
{
	uint64_t	 old, new;

	old = atomic_load_explicit(v, memory_order_relaxed);
	do {
		new = metrics_d2u(metrics_u2d(old) + x);
	} while (!atomic_compare_exchange_weak_explicit(v, &old, new,
	    memory_order_relaxed, memory_order_relaxed));
}

/* [a-zA-Z_:][a-zA-Z0-9_:]*, or without ':' for a label name. */
static int
metrics_name_ok(const char *s, int label)
{
	size_t	 i;

	if (s == NULL || *s == '\0' || strlen(s) > METRICS_NAME_MAX)
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		if ((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' ||
		    (s[i] == ':' && !label) || (i > 0 && s[i] >= '0' &&
		    s[i] <= '9'))
			continue;
		return 0;
	}
	/* Names starting with __ are reserved for Prometheus. */
	return !(label && strncmp(s, "__", 2) == 0);
}

static void
metrics_series_free(struct metric_series *sr)
{
	int	 i;

	if (sr == NULL)
		return;
	for (i = 0; i < METRICS_LABELS_MAX; i++)
		free(sr->sr_values[i]);
	free(sr->sr_buckets);
	free(sr);
}

static void
metrics_family_free(struct metric *mf)
{
	struct metric_series	*sr, *next;
	int			 i;

	if (mf == NULL)
		return;
	for (sr = atomic_load(&mf->mf_head); sr != NULL; sr = next) {
		next = atomic_load(&sr->sr_next);
		metrics_series_free(sr);
	}
	for (i = 0; i < METRICS_LABELS_MAX; i++)
		free(mf->mf_labels[i]);
	free(mf->mf_name);
	free(mf->mf_help);
	free(mf->mf_bounds);
	free(mf);
}

/* Splits "a,b" into label names; returns their number or -1. */
static int
metrics_parse_labels(const char *labels, char *out[METRICS_LABELS_MAX])
{
	const char	*p = labels, *comma;
	int		 n = 0;

	if (labels == NULL || *labels == '\0')
		return 0;
	for (;;) {
		if (n == METRICS_LABELS_MAX)
			return -1;
		comma = strchr(p, ',');
		out[n] = comma != NULL ? strndup(p, (size_t)(comma - p)) :
		    strdup(p);
		if (out[n] == NULL || !metrics_name_ok(out[n], 1))
			return -1;
		n++;
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	return n;
}

/*
 * Registers a family; labels is NULL or "name" or "name1,name2".
 * Registering the same name again with the same type and labels
 * returns the family already there.  Returns NULL (logged) on a bad
 * name, a clash or when the registry is full.
 */
static struct metric *
metrics_register(enum metrics_type type, const char *name, const char *help,
    const char *labels, const double *bounds, size_t nbounds)
{
	struct metric	*mf = NULL, *old;
	size_t		 i, n;
	int		 j, same;

	if (!metrics_name_ok(name, 0)) {
		log_warnx("metrics: bad metric name '%s'", name ? name : "");
		return NULL;
	}
	if ((mf = calloc(1, sizeof(*mf))) == NULL ||
	    (mf->mf_name = strdup(name)) == NULL ||
	    (mf->mf_help = strdup(help != NULL ? help : "")) == NULL)
		goto fail;
	mf->mf_type = type;
	if ((mf->mf_nlabels = metrics_parse_labels(labels,
	    mf->mf_labels)) == -1) {
		log_warnx("metrics: %s: bad labels '%s'", name, labels);
		goto fail;
	}
	if (type == METRICS_HISTOGRAM) {
		if (nbounds == 0 ||
		    (mf->mf_bounds = calloc(nbounds, sizeof(double))) == NULL)
			goto fail;
		for (i = 0; i < nbounds; i++) {
			if (isnan(bounds[i]) ||
			    (i > 0 && bounds[i] <= bounds[i - 1])) {
				log_warnx("metrics: %s: buckets must increase",
				    name);
				goto fail;
			}
			mf->mf_bounds[i] = bounds[i];
		}
		mf->mf_nbounds = nbounds;
	}

	pthread_mutex_lock(&metrics_lock);
	n = atomic_load(&metrics_nfamilies);
	for (i = 0; i < n; i++) {
		old = metrics_families[i];
		if (strcmp(old->mf_name, name) != 0)
			continue;
		same = old->mf_type == type &&
		    old->mf_nlabels == mf->mf_nlabels;
		for (j = 0; same && j < mf->mf_nlabels; j++)
			same = strcmp(old->mf_labels[j], mf->mf_labels[j]) == 0;
		pthread_mutex_unlock(&metrics_lock);
		if (!same)
			log_warnx("metrics: %s is registered twice, "
			    "differently", name);
		metrics_family_free(mf);
		return same ? old : NULL;
	}
	if (n == METRICS_FAMILIES_MAX) {
		pthread_mutex_unlock(&metrics_lock);
		log_warnx("metrics: too many metrics, %s left out", name);
		goto fail;
	}
	metrics_families[n] = mf;
	atomic_store_explicit(&metrics_nfamilies, n + 1,
	    memory_order_release);
	pthread_mutex_unlock(&metrics_lock);
	return mf;
 fail:
	metrics_family_free(mf);
	return NULL;
}

/* A counter family: only ever goes up.  Name it ..._total. */
struct metric *
metrics_counter(const char *name, const char *help, const char *labels)
{
	return metrics_register(METRICS_COUNTER, name, help, labels, NULL, 0);
}

/* A gauge family: a value that goes up and down. */
struct metric *
metrics_gauge(const char *name, const char *help, const char *labels)
{
	return metrics_register(METRICS_GAUGE, name, help, labels, NULL, 0);
}

/* A histogram family with the given increasing upper bounds. */
struct metric *
metrics_histogram(const char *name, const char *help, const char *labels,
    const double *bounds, size_t nbounds)
{
	return metrics_register(METRICS_HISTOGRAM, name, help, labels, bounds,
	    nbounds);
}

static int
metrics_series_match(const struct metric *mf, const struct metric_series *sr,
    const char *values[METRICS_LABELS_MAX])
{
	int	 i;

	for (i = 0; i < mf->mf_nlabels; i++)
		if (strcmp(sr->sr_values[i], values[i]) != 0)
			return 0;
	return 1;
}

static struct metric_series *
metrics_series_find(struct metric *mf, const char *values[METRICS_LABELS_MAX])
{
	struct metric_series	*sr;

	for (sr = atomic_load_explicit(&mf->mf_head, memory_order_acquire);
	    sr != NULL;
	    sr = atomic_load_explicit(&sr->sr_next, memory_order_acquire))
		if (metrics_series_match(mf, sr, values))
			return sr;
	return NULL;
}

/*
 * The series of family mf with label values v1 and v2 (NULL where the
 * family has fewer labels), created on first use.  Returns NULL when
 * mf is NULL, a value it needs is missing, too long or holds a control
 * character, or the family has METRICS_SERIES_MAX series already.
 * The series lives until metrics_free; nobody frees it.
 */
struct metric_series *
metrics_series(struct metric *mf, const char *v1, const char *v2)
{
	struct metric_series	*sr = NULL;
	const char		*values[METRICS_LABELS_MAX] = { v1, v2 };
	const char		*p;
	int			 i;

	if (mf == NULL)
		return NULL;
	for (i = 0; i < mf->mf_nlabels; i++) {
		if (values[i] == NULL ||
		    strlen(values[i]) > METRICS_VALUE_MAX)
			return NULL;
		for (p = values[i]; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				return NULL;
	}
	if ((sr = metrics_series_find(mf, values)) != NULL)
		return sr;

	pthread_mutex_lock(&metrics_lock);
	/* Another thread may have made it meanwhile. */
	if ((sr = metrics_series_find(mf, values)) != NULL)
		goto out;
	if (mf->mf_nseries >= METRICS_SERIES_MAX)
		goto out;
	if ((sr = calloc(1, sizeof(*sr))) == NULL)
		goto out;
	sr->sr_family = mf;
	for (i = 0; i < mf->mf_nlabels; i++)
		if ((sr->sr_values[i] = strdup(values[i])) == NULL)
			goto fail;
	if (mf->mf_type == METRICS_HISTOGRAM &&
	    (sr->sr_buckets = calloc(mf->mf_nbounds + 1,
	    sizeof(*sr->sr_buckets))) == NULL)
		goto fail;
	if (mf->mf_tail == NULL)
		atomic_store_explicit(&mf->mf_head, sr, memory_order_release);
	else
		atomic_store_explicit(&mf->mf_tail->sr_next, sr,
		    memory_order_release);
	mf->mf_tail = sr;
	mf->mf_nseries++;
	goto out;
 fail:
	metrics_series_free(sr);
	sr = NULL;
 out:
	pthread_mutex_unlock(&metrics_lock);
	return sr;
}

/* Adds n to a counter. */
void
metrics_add(struct metric_series *sr, uint64_t n)
{
	if (sr != NULL)
		atomic_fetch_add_explicit(&sr->sr_value, n,
		    memory_order_relaxed);
}

/* Sets a gauge. */
void
metrics_set(struct metric_series *sr, double x)
{
	if (sr != NULL)
		atomic_store_explicit(&sr->sr_value, metrics_d2u(x),
		    memory_order_relaxed);
}

/* Adds x (which may be negative) to a gauge. */
void
metrics_gauge_add(struct metric_series *sr, double x)
{
	if (sr != NULL)
		metrics_atomic_fadd(&sr->sr_value, x);
}

/*
 * Records one observation in a histogram: the bucket of the first
 * bound >= x (or +Inf), and the sum.  The count is the buckets' total.
 */
void
metrics_observe(struct metric_series *sr, double x)
{
	const struct metric	*mf;
	size_t			 i;

	if (sr == NULL || sr->sr_buckets == NULL || isnan(x))
		return;
	mf = sr->sr_family;
	for (i = 0; i < mf->mf_nbounds; i++)
		if (x <= mf->mf_bounds[i])
			break;
	atomic_fetch_add_explicit(&sr->sr_buckets[i], 1, memory_order_relaxed);
	metrics_atomic_fadd(&sr->sr_sum, x);
}

/* A counter's value (0 for NULL); for tests and summaries. */
uint64_t
metrics_counter_value(struct metric_series *sr)
{
	if (sr == NULL || sr->sr_family->mf_type != METRICS_COUNTER)
		return 0;
	return atomic_load_explicit(&sr->sr_value, memory_order_relaxed);
}

/* A gauge's value (0 for NULL). */
double
metrics_gauge_value(struct metric_series *sr)
{
	if (sr == NULL || sr->sr_family->mf_type != METRICS_GAUGE)
		return 0;
	return metrics_u2d(atomic_load_explicit(&sr->sr_value,
	    memory_order_relaxed));
}

/* Appends s with \\, \" and \n escaped (label values, help texts). */
static int
metrics_escape(struct evbuffer *out, const char *s, int quote)
{
	const char	*p;
	int		 rv = 0;

	for (p = s; *p != '\0' && rv == 0; p++) {
		if (*p == '\\')
			rv = evbuffer_add(out, "\\\\", 2);
		else if (*p == '\n')
			rv = evbuffer_add(out, "\\n", 2);
		else if (*p == '"' && quote)
			rv = evbuffer_add(out, "\\\"", 2);
		else
			rv = evbuffer_add(out, p, 1);
	}
	return rv;
}

/* A float as the text format wants it: NaN, +Inf, -Inf or %.17g. */
static void
metrics_format_double(char *buf, size_t len, double d)
{
	if (isnan(d))
		(void)snprintf(buf, len, "NaN");
	else if (isinf(d))
		(void)snprintf(buf, len, "%sInf", d > 0 ? "+" : "-");
	else
		(void)snprintf(buf, len, "%.17g", d);
}

/*
 * Appends name{label="value",...,extra} ; extra is one more label
 * ("le") with its value, or NULL.
 */
static int
metrics_sample_name(struct evbuffer *out, const struct metric *mf,
    const struct metric_series *sr, const char *suffix, const char *extra,
    const char *extra_value)
{
	int	 i, rv, n = 0;

	rv = evbuffer_add_printf(out, "%s%s", mf->mf_name, suffix) < 0;
	for (i = 0; i < mf->mf_nlabels && rv == 0; i++, n++) {
		rv |= evbuffer_add_printf(out, "%s%s=\"", n ? "," : "{",
		    mf->mf_labels[i]) < 0;
		rv |= metrics_escape(out, sr->sr_values[i], 1);
		rv |= evbuffer_add(out, "\"", 1);
	}
	if (extra != NULL && rv == 0) {
		rv |= evbuffer_add_printf(out, "%s%s=\"%s\"", n ? "," : "{",
		    extra, extra_value) < 0;
		n++;
	}
	if (n > 0 && rv == 0)
		rv |= evbuffer_add(out, "}", 1);
	return rv ? -1 : 0;
}

static int
metrics_render_series(struct evbuffer *out, const struct metric *mf,
    struct metric_series *sr)
{
	char		 num[64], le[64];
	uint64_t	 cum = 0;
	size_t		 i;
	int		 rv = 0;

	switch (mf->mf_type) {
	case METRICS_COUNTER:
		rv |= metrics_sample_name(out, mf, sr, "", NULL, NULL);
		rv |= evbuffer_add_printf(out, " %llu\n", (unsigned long long)
		    atomic_load_explicit(&sr->sr_value,
		    memory_order_relaxed)) < 0;
		break;
	case METRICS_GAUGE:
		metrics_format_double(num, sizeof(num), metrics_u2d(
		    atomic_load_explicit(&sr->sr_value,
		    memory_order_relaxed)));
		rv |= metrics_sample_name(out, mf, sr, "", NULL, NULL);
		rv |= evbuffer_add_printf(out, " %s\n", num) < 0;
		break;
	case METRICS_HISTOGRAM:
		/* Cumulative buckets; the count is the +Inf bucket. */
		for (i = 0; i <= mf->mf_nbounds && rv == 0; i++) {
			cum += atomic_load_explicit(&sr->sr_buckets[i],
			    memory_order_relaxed);
			if (i < mf->mf_nbounds)
				(void)snprintf(le, sizeof(le), "%g",
				    mf->mf_bounds[i]);
			else
				(void)snprintf(le, sizeof(le), "+Inf");
			rv |= metrics_sample_name(out, mf, sr, "_bucket", "le",
			    le);
			rv |= evbuffer_add_printf(out, " %llu\n",
			    (unsigned long long)cum) < 0;
		}
		metrics_format_double(num, sizeof(num), metrics_u2d(
		    atomic_load_explicit(&sr->sr_sum, memory_order_relaxed)));
		rv |= metrics_sample_name(out, mf, sr, "_sum", NULL, NULL);
		rv |= evbuffer_add_printf(out, " %s\n", num) < 0;
		rv |= metrics_sample_name(out, mf, sr, "_count", NULL, NULL);
		rv |= evbuffer_add_printf(out, " %llu\n",
		    (unsigned long long)cum) < 0;
		break;
	}
	return rv ? -1 : 0;
}

/*
 * Appends every family in the text exposition format 0.0.4: HELP and
 * TYPE lines, then one line per series (families without labels
 * always show one).  Safe while other threads update.  0 or -1.
 */
int
metrics_render(struct evbuffer *out)
{
	static const char	*types[] = { "counter", "gauge", "histogram" };
	struct metric		*mf;
	struct metric_series	*sr;
	size_t			 i, n;
	int			 rv = 0;

	n = atomic_load_explicit(&metrics_nfamilies, memory_order_acquire);
	for (i = 0; i < n && rv == 0; i++) {
		mf = metrics_families[i];
		/* An unlabelled family shows 0 before its first update. */
		if (mf->mf_nlabels == 0)
			(void)metrics_series(mf, NULL, NULL);
		rv |= evbuffer_add_printf(out, "# HELP %s ", mf->mf_name) < 0;
		rv |= metrics_escape(out, mf->mf_help, 0);
		rv |= evbuffer_add_printf(out, "\n# TYPE %s %s\n", mf->mf_name,
		    types[mf->mf_type]) < 0;
		for (sr = atomic_load_explicit(&mf->mf_head,
		    memory_order_acquire); sr != NULL && rv == 0;
		    sr = atomic_load_explicit(&sr->sr_next,
		    memory_order_acquire))
			rv |= metrics_render_series(out, mf, sr);
	}
	return rv ? -1 : 0;
}

/*
 * Registers the families of struct metrics_set into "metrics", with
 * the series of known label values at zero, so that rates work from
 * the first scrape.  program is "target-transporter" or
 * "source-transporter".  Returns 0, or -1 if any failed (logged).
 */
int
metrics_init(const char *program)
{
	static const char	*chunk_states[] = {
		"new", "dedup", "zero", "unchanged"
	};
	static const char	*job_kinds[] = { "backup", "restore" };
	/* What the daemons pass today; see docs/OPERATIONS.md. */
	static const char	*session_states[] = { "open" };
	static const char	*error_kinds[] = { "tls", "kms" };
	struct metrics_set	*m = &metrics;
	size_t			 i;
	int			 rv = 0;

	m->mt_bytes_read = metrics_counter("transporter_bytes_read_total",
	    "Bytes read from source disks.", NULL);
	m->mt_bytes_written = metrics_counter(
	    "transporter_bytes_written_total",
	    "Bytes written to restore outputs (files or block devices).",
	    NULL);
	m->mt_bytes_sent = metrics_counter("transporter_bytes_sent_total",
	    "Bytes of frames sent to peers, before TLS.", NULL);
	m->mt_bytes_received = metrics_counter(
	    "transporter_bytes_received_total",
	    "Bytes of frames received from peers, before TLS.", NULL);
	m->mt_bytes_stored = metrics_counter("transporter_bytes_stored_total",
	    "Bytes newly written to the repository (new chunks, after "
	    "compression and deduplication).", "tenant");
	m->mt_compress_in = metrics_counter(
	    "transporter_compress_input_bytes_total",
	    "Plaintext bytes of the blocks given to zstd.", NULL);
	m->mt_compress_out = metrics_counter(
	    "transporter_compress_output_bytes_total",
	    "Bytes those blocks became (raw where zstd did not shrink them).",
	    NULL);
	m->mt_chunks = metrics_counter("transporter_chunks_total",
	    "Blocks by what became of them: new (stored), dedup (already "
	    "stored), zero (never sent), unchanged (incremental).", "state");
	m->mt_jobs = metrics_gauge("transporter_jobs",
	    "Backup and restore jobs running now.", "kind");
	m->mt_jobs_total = metrics_counter("transporter_jobs_total",
	    "Backup and restore jobs finished, by result.", "kind,result");
	m->mt_job_seconds = metrics_histogram(
	    "transporter_job_duration_seconds", "Duration of finished jobs.",
	    "kind", metrics_job_bounds,
	    sizeof(metrics_job_bounds) / sizeof(metrics_job_bounds[0]));
	m->mt_sessions = metrics_gauge("transporter_sessions",
	    "Connections open now, by state.", "state");
	m->mt_sessions_total = metrics_counter("transporter_sessions_total",
	    "Connections accepted.", NULL);
	m->mt_errors = metrics_counter("transporter_errors_total",
	    "Errors that closed a session or failed a job, by kind: tls, "
	    "kms, or the code of the Error frame sent.", "kind");
	m->mt_kms_seconds = metrics_histogram(
	    "transporter_kms_request_seconds",
	    "Latency of requests to the key management server.", "op",
	    metrics_kms_bounds,
	    sizeof(metrics_kms_bounds) / sizeof(metrics_kms_bounds[0]));
	m->mt_pool_jobs = metrics_gauge("transporter_worker_jobs",
	    "Block jobs queued or running in the worker pool.", NULL);
	m->mt_last_point = metrics_gauge(
	    "transporter_last_point_timestamp_seconds",
	    "When the newest restore point of a backup was committed "
	    "(Unix time).", "tenant,name");
	m->mt_tenant_stored = metrics_gauge("transporter_tenant_stored_bytes",
	    "What a tenant with a quota stores: chunks, indexes, manifests "
	    "and key files.", "tenant");
	m->mt_tenant_quota = metrics_gauge("transporter_tenant_quota_bytes",
	    "The quota of a tenant (target.conf).", "tenant");
	m->mt_replica_lag = metrics_gauge("transporter_replica_lag_seconds",
	    "How far a replica image is behind its newest restore point.",
	    "tenant,name");
	m->mt_tls_expiry = metrics_gauge(
	    "transporter_tls_expiry_timestamp_seconds",
	    "When this daemon's certificate (kind=\"certificate\") or the "
	    "soonest of its CRLs (kind=\"crl\") ends (Unix time).", "kind");
	m->mt_build_info = metrics_gauge("transporter_build_info",
	    "Always 1; the labels tell the program and version.",
	    "program,version");
	m->mt_start_time = metrics_gauge("process_start_time_seconds",
	    "Start time of the process since the Unix epoch.", NULL);

	/* Every member of struct metrics_set is a family pointer. */
	for (i = 0; i < sizeof(*m) / sizeof(struct metric *); i++)
		if (((struct metric **)m)[i] == NULL)
			rv = -1;
	for (i = 0; i < sizeof(chunk_states) / sizeof(*chunk_states); i++)
		(void)metrics_series(m->mt_chunks, chunk_states[i], NULL);
	for (i = 0; i < sizeof(job_kinds) / sizeof(*job_kinds); i++) {
		(void)metrics_series(m->mt_jobs, job_kinds[i], NULL);
		(void)metrics_series(m->mt_jobs_total, job_kinds[i], "ok");
		(void)metrics_series(m->mt_jobs_total, job_kinds[i],
		    "failed");
	}
	for (i = 0; i < sizeof(session_states) / sizeof(*session_states); i++)
		(void)metrics_series(m->mt_sessions, session_states[i], NULL);
	for (i = 0; i < sizeof(error_kinds) / sizeof(*error_kinds); i++)
		(void)metrics_series(m->mt_errors, error_kinds[i], NULL);
	/* The codes of Error frames, by their names in transporter.proto. */
	for (i = 0; i < error__code__descriptor.n_values; i++)
		(void)metrics_series(m->mt_errors,
		    error__code__descriptor.values[i].name, NULL);
	metrics_set(metrics_series(m->mt_build_info, program,
	    TRANSPORTER_VERSION), 1);
	metrics_set(metrics_series(m->mt_start_time, NULL, NULL),
	    (double)time(NULL));
	return rv;
}

/*
 * The counters without labels, one "NAME VALUE" line each, into buf (a
 * string): how a child process hands what it counted to its parent
 * (the source agent's backups), for metrics_merge_counters.  Returns
 * the length, or -1 if buf is too small.
 */
int
metrics_counters_text(char *buf, size_t len)
{
	struct metric	*mf;
	size_t		 i, n, used = 0;
	int		 w;

	buf[0] = '\0';
	n = atomic_load(&metrics_nfamilies);
	for (i = 0; i < n; i++) {
		mf = metrics_families[i];
		if (mf->mf_type != METRICS_COUNTER || mf->mf_nlabels != 0)
			continue;
		w = snprintf(buf + used, len - used, "%s %llu\n", mf->mf_name,
		    (unsigned long long)metrics_counter_value(
		    metrics_series(mf, NULL, NULL)));
		if (w < 0 || (size_t)w >= len - used)
			return -1;
		used += (size_t)w;
	}
	return (int)used;
}

/*
 * Adds the counters of text (metrics_counters_text of another process)
 * to ours.  Lines that name no counter without labels here, or whose
 * value is not a decimal number, are skipped.  Returns how many were
 * added.
 */
int
metrics_merge_counters(const char *text)
{
	struct metric		*mf;
	const char		*p = text, *sp, *nl;
	char			*end;
	unsigned long long	 v;
	size_t			 i, n;
	int			 added = 0;

	for (; *p != '\0'; p = *nl == '\n' ? nl + 1 : nl) {
		nl = p + strcspn(p, "\n");
		if ((sp = memchr(p, ' ', (size_t)(nl - p))) == NULL ||
		    sp[1] < '0' || sp[1] > '9')
			continue;
		errno = 0;
		v = strtoull(sp + 1, &end, 10);
		if (errno != 0 || end != nl)
			continue;
		n = atomic_load(&metrics_nfamilies);
		for (i = 0; i < n; i++) {
			mf = metrics_families[i];
			if (mf->mf_type == METRICS_COUNTER &&
			    mf->mf_nlabels == 0 &&
			    strlen(mf->mf_name) == (size_t)(sp - p) &&
			    memcmp(mf->mf_name, p, (size_t)(sp - p)) == 0) {
				metrics_add(metrics_series(mf, NULL, NULL), v);
				added++;
				break;
			}
		}
	}
	return added;
}

/*
 * Frees every family and series and clears "metrics".  Only when no
 * other thread uses them any more (at exit, between tests).
 */
void
metrics_free(void)
{
	size_t	 i, n;

	pthread_mutex_lock(&metrics_lock);
	n = atomic_load(&metrics_nfamilies);
	for (i = 0; i < n; i++) {
		metrics_family_free(metrics_families[i]);
		metrics_families[i] = NULL;
	}
	atomic_store(&metrics_nfamilies, 0);
	memset(&metrics, 0, sizeof(metrics));
	pthread_mutex_unlock(&metrics_lock);
}

static void
metrics_http_metrics(struct evhttp_request *req, void *arg)
{
	struct evbuffer	*body = NULL;

	if ((body = evbuffer_new()) == NULL || metrics_render(body) == -1) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		goto out;
	}
	if (evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4; charset=utf-8") ||
	    evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Cache-Control", "no-store")) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		goto out;
	}
	evhttp_send_reply(req, HTTP_OK, "OK", body);
 out:
	if (body != NULL)
		evbuffer_free(body);
}

static void
metrics_http_other(struct evhttp_request *req, void *arg)
{
	evhttp_send_error(req, HTTP_NOTFOUND, "only /metrics is served here");
}

/*
 * Serves GET /metrics on addr ("HOST:PORT", "[V6]:PORT", "HOST" for
 * port METRICS_PORT_DEFAULT, port 0 for any) on the loop of base.  Off
 * loopback is the caller's choice: the figures are not secret, but
 * say who backs up what and when.  Returns the server (free it with
 * metrics_server_free) or NULL with the reason logged.
 */
struct metrics_server *
metrics_listen(struct event_base *base, const char *addr)
{
	struct metrics_server		*sv = NULL;
	struct evhttp_bound_socket	*bound;
	struct sockaddr_storage		 ss;
	socklen_t			 sslen = sizeof(ss);
	char				*host = NULL, *port = NULL;
	uint64_t			 portnum = 0;

	if (conf_split_hostport(addr, &host, &port) == -1 ||
	    conf_parse_uint(port != NULL ? port : METRICS_PORT_DEFAULT, 0,
	    65535, &portnum) == -1) {
		log_warnx("metrics: '%s' is not HOST:PORT", addr ? addr : "");
		goto fail;
	}
	if ((sv = calloc(1, sizeof(*sv))) == NULL ||
	    (sv->sv_http = evhttp_new(base)) == NULL) {
		log_warn("metrics: evhttp_new");
		goto fail;
	}
	evhttp_set_allowed_methods(sv->sv_http, EVHTTP_REQ_GET |
	    EVHTTP_REQ_HEAD);
	evhttp_set_timeout(sv->sv_http, METRICS_HTTP_TIMEOUT);
	evhttp_set_max_headers_size(sv->sv_http, 8192);
	evhttp_set_max_body_size(sv->sv_http, 1024);
	if (evhttp_set_cb(sv->sv_http, "/metrics", metrics_http_metrics,
	    sv) != 0) {
		log_warnx("metrics: evhttp_set_cb failed");
		goto fail;
	}
	evhttp_set_gencb(sv->sv_http, metrics_http_other, sv);
	if ((bound = evhttp_bind_socket_with_handle(sv->sv_http,
	    strcmp(host, "*") == 0 ? "0.0.0.0" : host,
	    (ev_uint16_t)portnum)) == NULL) {
		log_warn("metrics: cannot listen on %s", addr);
		goto fail;
	}
	if (getsockname(evhttp_bound_socket_get_fd(bound),
	    (struct sockaddr *)&ss, &sslen) == 0) {
		if (ss.ss_family == AF_INET)
			sv->sv_port = ntohs(((struct sockaddr_in *)&ss)->
			    sin_port);
		else if (ss.ss_family == AF_INET6)
			sv->sv_port = ntohs(((struct sockaddr_in6 *)&ss)->
			    sin6_port);
	}
	log_info("metrics on http://%s%s%s:%d/metrics",
	    strchr(host, ':') != NULL ? "[" : "", host,
	    strchr(host, ':') != NULL ? "]" : "", sv->sv_port);
	free(host);
	free(port);
	return sv;
 fail:
	free(host);
	free(port);
	metrics_server_free(sv);
	return NULL;
}

/* The TCP port the server listens on (useful after port 0). */
int
metrics_server_port(const struct metrics_server *sv)
{
	return sv != NULL ? sv->sv_port : -1;
}

/* Closes the listener and every scrape in progress; NULL is fine. */
void
metrics_server_free(struct metrics_server *sv)
{
	if (sv == NULL)
		return;
	if (sv->sv_http != NULL)
		evhttp_free(sv->sv_http);
	sv->sv_http = NULL;
	free(sv);
}
