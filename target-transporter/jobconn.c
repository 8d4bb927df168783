/*
 * jobconn.c: the connections that carry one backup or restore.  The
 * first opens the job; when the source asks for more (`connections`),
 * the job gets a random token, and other connections of the same tenant
 * that name it in JoinJob join it.  The job's state is shared: each
 * connection holds a reference, and the last to let go frees it.  The
 * loss of any one ends the job on all of them.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "metrics.h"
#include "target.h"

/* first opens a job on up to asked connections (0 or 1: first only). */
void
jobconn_init(struct job_conns *jc, struct session *first, uint32_t asked)
{
	memset(jc, 0, sizeof(*jc));
	jc->jc_first = first;
	jc->jc_refs = 1;
	jc->jc_asked = asked > JOB_CONNECTIONS_MAX ? JOB_CONNECTIONS_MAX :
	    asked;
	TAILQ_INIT(&jc->jc_joined);
}

/*
 * A new token for the job if more connections were asked for: 1; 0 if
 * not; -1 if no random bytes could be had.
 */
int
jobconn_token(struct job_conns *jc)
{
	if (jc->jc_asked <= 1)
		return 0;
	return crypto_random(jc->jc_token, sizeof(jc->jc_token)) == -1 ? -1 :
	    1;
}

/* The connection of the job after se: the first, then those joined. */
struct session *
jobconn_next(struct job_conns *jc, struct session *se)
{
	if (se == NULL)
		return jc->jc_first;
	if (se == jc->jc_first)
		return TAILQ_FIRST(&jc->jc_joined);
	return TAILQ_NEXT(se, se_join_entry);
}

/*
 * May se join the job first opened, naming token?  Only a connection
 * of the same tenant, with the job's token, while the job stands and
 * takes one more.
 */
int
jobconn_may_join(const struct job_conns *jc, const struct session *first,
    const struct session *se, const uint8_t *token)
{
	return jc->jc_first == first && jc->jc_asked > 1 && !jc->jc_failed &&
	    jc->jc_count + 1 < jc->jc_asked &&
	    CRYPTO_memcmp(jc->jc_token, token, JOB_TOKEN_LEN) == 0 &&
	    strcmp(first->se_tenant->tn_name, se->se_tenant->tn_name) == 0;
}

/* se joins the job (the caller points se at the job's state). */
void
jobconn_join(struct job_conns *jc, struct session *se)
{
	jc->jc_refs++;
	jc->jc_count++;
	TAILQ_INSERT_TAIL(&jc->jc_joined, se, se_join_entry);
	session_log(se, "joined the %s of session %llu (connection %u of %u)",
	    jc->jc_what, (unsigned long long)jc->jc_first->se_id,
	    jc->jc_count + 1, jc->jc_asked);
}

/*
 * se is closing (why: msg) while it carries the job: the job ends on
 * every connection, with se's own error code if it failed (so the
 * source decides alike whichever it reads first), else ABORTED, which
 * the source retries and resumes.
 */
void
jobconn_abort(struct job_conns *jc, struct session *se, const char *msg)
{
	struct session	*other, *next;
	Error__Code	 code;

	if (jc->jc_failed)
		return;
	jc->jc_failed = 1;
	code = se->se_fail_code != 0 ? se->se_fail_code : ERROR__CODE__ABORTED;
	for (other = jobconn_next(jc, NULL); other != NULL; other = next) {
		next = jobconn_next(jc, other);
		if (other != se && other->se_state != SESSION_CLOSING)
			session_fail(other, code, "%s: its connection of "
			    "session %llu ended: %s", jc->jc_what,
			    (unsigned long long)se->se_id, msg);
	}
}

/* se lets go of the job: 1 if it was the last, so the job is to be freed. */
int
jobconn_leave(struct job_conns *jc, struct session *se)
{
	if (jc->jc_first == se)
		jc->jc_first = NULL;
	else
		TAILQ_REMOVE(&jc->jc_joined, se, se_join_entry);
	return --jc->jc_refs == 0;
}

/*
 * The job is under way: one more running job of kind ("backup",
 * "restore") in the metrics until jobconn_count_end.
 */
void
jobconn_count_start(struct job_conns *jc, const char *kind)
{
	jc->jc_kind = kind;
	jc->jc_start_ms = now_ms();
	metrics_gauge_add(metrics_series(metrics.mt_jobs, kind, NULL), 1);
}

/*
 * The job finished (ok: with its duration) or failed; only the first
 * call after jobconn_count_start counts.
 */
void
jobconn_count_end(struct job_conns *jc, int ok)
{
	if (jc->jc_kind == NULL)
		return;
	metrics_gauge_add(metrics_series(metrics.mt_jobs, jc->jc_kind, NULL),
	    -1);
	metrics_add(metrics_series(metrics.mt_jobs_total, jc->jc_kind,
	    ok ? "ok" : "failed"), 1);
	if (ok)
		metrics_observe(metrics_series(metrics.mt_job_seconds,
		    jc->jc_kind, NULL), (now_ms() - jc->jc_start_ms) / 1000.0);
	jc->jc_kind = NULL;
}
