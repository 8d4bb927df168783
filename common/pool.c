/*
 * pool.c: a fixed pool of worker threads for hashing, compression and
 * cryptography.
 *
 * The event loop submits jobs; a worker runs pj_work, then the job is
 * handed back to the loop, which runs pj_done.  Submitting never
 * blocks: the callers bound memory by limiting how many of their jobs
 * are outstanding, so the pool's queue cannot grow without bound.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common.h"
#include "metrics.h"

struct pool {
	pthread_mutex_t	 pl_lock;
	pthread_cond_t	 pl_cond;
	struct pool_job	*pl_todo_head;
	struct pool_job	*pl_todo_tail;
	struct pool_job	*pl_done_head;
	struct pool_job	*pl_done_tail;
	int		 pl_stopping;
	int		 pl_nthreads;
	pthread_t	*pl_threads;
	struct event	*pl_done_ev;	/* activated from workers */
};

static void
job_append(struct pool_job **head, struct pool_job **tail,
    struct pool_job *job)
{
	job->pj_next = NULL;
	if (*tail != NULL)
		(*tail)->pj_next = job;
	else
		*head = job;
	*tail = job;
}

static void *
pool_worker(void *arg)
{
	struct pool	*pl = arg;
	struct pool_job	*job;
	int		 wake;

	for (;;) {
		pthread_mutex_lock(&pl->pl_lock);
		while (pl->pl_todo_head == NULL && !pl->pl_stopping)
			pthread_cond_wait(&pl->pl_cond, &pl->pl_lock);
		if (pl->pl_todo_head == NULL) {
			pthread_mutex_unlock(&pl->pl_lock);
			break;
		}
		job = pl->pl_todo_head;
		pl->pl_todo_head = job->pj_next;
		if (pl->pl_todo_head == NULL)
			pl->pl_todo_tail = NULL;
		pthread_mutex_unlock(&pl->pl_lock);

		job->pj_work(job);

		pthread_mutex_lock(&pl->pl_lock);
		/* Wake the loop only on the empty -> non-empty edge. */
		wake = pl->pl_done_head == NULL;
		job_append(&pl->pl_done_head, &pl->pl_done_tail, job);
		pthread_mutex_unlock(&pl->pl_lock);
		if (wake)
			event_active(pl->pl_done_ev, EV_READ, 0);
	}
	return NULL;
}

/* Runs on the loop: hands every finished job to its pj_done. */
static void
pool_done_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct pool	*pl = arg;
	struct pool_job	*job, *next;

	pthread_mutex_lock(&pl->pl_lock);
	job = pl->pl_done_head;
	pl->pl_done_head = pl->pl_done_tail = NULL;
	pthread_mutex_unlock(&pl->pl_lock);

	for (; job != NULL; job = next) {
		next = job->pj_next;
		metrics_gauge_add(metrics_series(metrics.mt_pool_jobs, NULL,
		    NULL), -1);
		job->pj_done(job);
	}
}

/* Returns the number of worker threads to use by default: one per core. */
int
pool_default_threads(void)
{
	long	 n;

	n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	if (n > 64)
		n = 64;
	return (int)n;
}

/*
 * Starts nthreads workers whose finished jobs are delivered on base.
 * The base must have been made thread-aware (evthread_use_pthreads()
 * before event_base_new).  Returns NULL on failure.
 */
struct pool *
pool_new(struct event_base *base, int nthreads)
{
	struct pool	*pl;
	int		 i;

	if (nthreads < 1)
		nthreads = pool_default_threads();
	if ((pl = calloc(1, sizeof(*pl))) == NULL)
		return NULL;
	pthread_mutex_init(&pl->pl_lock, NULL);
	pthread_cond_init(&pl->pl_cond, NULL);
	pl->pl_done_ev = event_new(base, -1, 0, pool_done_cb, pl);
	pl->pl_threads = calloc(nthreads, sizeof(*pl->pl_threads));
	if (pl->pl_done_ev == NULL || pl->pl_threads == NULL)
		goto fail;
	for (i = 0; i < nthreads; i++) {
		if ((errno = pthread_create(&pl->pl_threads[i], NULL,
		    pool_worker, pl)) != 0) {
			log_warn("pthread_create");
			goto fail;
		}
		pl->pl_nthreads++;
	}
	return pl;
 fail:
	pool_free(pl);
	return NULL;
}

/* Queues a job; never blocks.  The job must stay valid until pj_done. */
void
pool_submit(struct pool *pl, struct pool_job *job)
{
	metrics_gauge_add(metrics_series(metrics.mt_pool_jobs, NULL, NULL), 1);
	pthread_mutex_lock(&pl->pl_lock);
	job_append(&pl->pl_todo_head, &pl->pl_todo_tail, job);
	pthread_cond_signal(&pl->pl_cond);
	pthread_mutex_unlock(&pl->pl_lock);
}

int
pool_threads(const struct pool *pl)
{
	return pl->pl_nthreads;
}

/*
 * Stops the workers after the queued jobs ran, then runs pj_done of
 * every finished job not yet delivered, so each job is freed by its
 * owner; those callbacks must see that their owner is shutting down.
 */
void
pool_free(struct pool *pl)
{
	int	 i;

	if (pl == NULL)
		return;
	pthread_mutex_lock(&pl->pl_lock);
	pl->pl_stopping = 1;
	pthread_cond_broadcast(&pl->pl_cond);
	pthread_mutex_unlock(&pl->pl_lock);
	for (i = 0; i < pl->pl_nthreads; i++)
		pthread_join(pl->pl_threads[i], NULL);
	if (pl->pl_done_ev != NULL)
		pool_done_cb(-1, 0, pl);
	if (pl->pl_done_ev != NULL)
		event_free(pl->pl_done_ev);
	free(pl->pl_threads);
	pthread_mutex_destroy(&pl->pl_lock);
	pthread_cond_destroy(&pl->pl_cond);
	free(pl);
}
