/*
 * metrics.h: a Prometheus text-format metrics registry, served on
 * GET /metrics by libevent's HTTP server.
 *
 * A family (counter, gauge or histogram) has a name, a help text and
 * up to METRICS_LABELS_MAX label names; a series is one combination of
 * label values.  Look a series up once (metrics_series) and keep the
 * handle, or look it up at each use: the lookup takes no lock once the
 * series exists.  Updates are atomic, so worker threads update series
 * while the event loop renders them.  Every function accepts a NULL
 * family or series and then does nothing, so a caller never checks.
 */
#ifndef TRANSPORTER_METRICS_H
#define TRANSPORTER_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct evbuffer;

#define METRICS_LABELS_MAX	2
#define METRICS_SERIES_MAX	4096	/* per family: bounds memory */
#define METRICS_FAMILIES_MAX	64
#define METRICS_VALUE_MAX	128	/* bytes of a label value */
#define METRICS_PORT_DEFAULT	"9878"

enum metrics_type {
	METRICS_COUNTER,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
};

struct metric;
struct metric_series;
struct metrics_server;

/*
 * The families every transporter daemon registers (metrics_init), in
 * the global "metrics": METRICS_INC(metrics.mt_chunks, "new").
 * docs/OPERATIONS.md documents each; the comments give the labels.
 */
struct metrics_set {
	struct metric	*mt_bytes_read;		/* from disks */
	struct metric	*mt_bytes_written;	/* to restore outputs */
	struct metric	*mt_bytes_sent;		/* frames on the wire */
	struct metric	*mt_bytes_received;
	struct metric	*mt_bytes_stored;	/* {tenant} new in the repo */
	struct metric	*mt_compress_in;	/* plaintext into zstd */
	struct metric	*mt_compress_out;	/* what zstd made of it */
	struct metric	*mt_chunks;		/* {state} */
	struct metric	*mt_jobs;		/* {kind} gauge, running */
	struct metric	*mt_jobs_total;		/* {kind,result} */
	struct metric	*mt_job_seconds;	/* {kind} histogram */
	struct metric	*mt_sessions;		/* {state} gauge */
	struct metric	*mt_sessions_total;	/* accepted connections */
	struct metric	*mt_errors;		/* {kind} */
	struct metric	*mt_kms_seconds;	/* {op} histogram */
	struct metric	*mt_pool_jobs;		/* gauge */
	struct metric	*mt_last_point;		/* {tenant,name} gauge */
	struct metric	*mt_tenant_stored;	/* {tenant} gauge (quota) */
	struct metric	*mt_tenant_quota;	/* {tenant} gauge */
	struct metric	*mt_replica_lag;	/* {tenant,name} gauge */
	struct metric	*mt_tls_expiry;		/* {kind} gauge, unix s */
	struct metric	*mt_build_info;		/* {program,version} */
	struct metric	*mt_start_time;		/* process start, unix s */
};
extern struct metrics_set metrics;

/* metrics.c */
int		 metrics_init(const char *);
void		 metrics_free(void);
struct metric	*metrics_counter(const char *, const char *, const char *);
struct metric	*metrics_gauge(const char *, const char *, const char *);
struct metric	*metrics_histogram(const char *, const char *, const char *,
		    const double *, size_t);
struct metric_series *metrics_series(struct metric *, const char *,
		    const char *);
void		 metrics_add(struct metric_series *, uint64_t);
void		 metrics_set(struct metric_series *, double);
void		 metrics_gauge_add(struct metric_series *, double);
void		 metrics_observe(struct metric_series *, double);
uint64_t	 metrics_counter_value(struct metric_series *);
double		 metrics_gauge_value(struct metric_series *);
int		 metrics_render(struct evbuffer *);
int		 metrics_counters_text(char *, size_t);
int		 metrics_merge_counters(const char *);
struct metrics_server *metrics_listen(struct event_base *, const char *);
int		 metrics_server_port(const struct metrics_server *);
void		 metrics_server_free(struct metrics_server *);

/* Shorthands for the common case: one series, looked up at each use. */
#define METRICS_INC(m, v)	metrics_add(metrics_series((m), (v), NULL), 1)
#define METRICS_ADD(m, v, n)	metrics_add(metrics_series((m), (v), NULL), (n))

#endif /* TRANSPORTER_METRICS_H */
