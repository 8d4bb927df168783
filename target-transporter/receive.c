/*
 * receive.c: a backup job on the target.  Block frames are opened,
 * checked and stored by the worker pool; every TARGET_SYNC_BYTES the
 * stored chunks are made durable and acknowledged; BackupEnd commits
 * the restore point once every block is durable.
 *
 * A job may come on several connections (source.conf `connections`):
 * the first opens it and gets a token with the base index; each extra
 * connection of the same tenant names that token in JoinJob and then
 * carries Block frames and a BackupEnd of its own.  Each connection is
 * acknowledged for what it carried; the commit waits for all of them,
 * and the loss of any one ends the job on all (receive_abort), to be
 * resumed like a job on one connection.
 *
 * A tenant with at-rest encryption gets its in-flight backups recorded
 * as at-rest points: before the base index goes out (the source sends
 * no block before it has it), the job's start (start_job, in the pool)
 * gets the point's data key (atrest.c), and every chunk is sealed
 * under it before it is stored.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "metrics.h"
#include "target.h"

/*
 * A chunk of another kind (sealed where the job's are not, or under a key
 * that is not the tenant's at rest) appeared under one of the job's ids
 * (EEXIST from the repository).
 */
#define RECEIVE_KIND_RACE	"another backup of the tenant stored a chunk " \
	"of another kind under one of its chunk ids meanwhile; nothing was " \
	"committed. Back up again: the next attempt replaces that chunk"

struct receive {
	struct job_conns rv_jc;		/* its connections */
	uint32_t	 rv_joined_ended;	/* ... and their BackupEnd */
	uint32_t	 rv_joined_expected;	/* BackupEnd.joined */
	uint64_t	 rv_blocks_reported;	/* BackupEnd.blocks_sent */
	struct repo_job	*rv_job;
	char		 rv_name[NAME_MAX_LEN + 1];
	uint32_t	 rv_mode;	/* EncryptionMode of the point */
	int		 rv_incremental;	/* asked for a base */
	char		 rv_known_id[64];	/* the source's newest, if any */
	uint64_t	 rv_known_seq;
	int		 rv_atrest;	/* chunks sealed here under rv_dek */
	struct key_buf	 rv_dek;
	uint8_t		 rv_dek_id[KEY_ID_LEN];
	_Atomic uint64_t rv_dek_uses;	/* nonce counter under rv_dek */
	uint8_t		*rv_keys;	/* packed KeyChain the point lists */
	size_t		 rv_keys_len;
	uint64_t	 rv_disk_size;
	uint32_t	 rv_block_size;
	uint64_t	 rv_blocks;	/* blocks in the image */
	uint8_t		*rv_seen;	/* bitmap: block already received */
	struct repo_point rv_base;	/* incremental: the previous point */
	int		 rv_has_base;
	/* Its BaseIndex pieces still to go (receive_drained). */
	BaseIndex	 rv_piece;	/* what each carries */
	char		 rv_newest_id[sizeof(((struct repo_point *)0)->rp_id)];
	uint64_t	 rv_piece_next;
	int		 rv_pieces_left;
	int		 rv_resumed;	/* the base includes an interrupted job */
	uint64_t	 rv_unchanged;	/* blocks taken from the base */
	uint64_t	 rv_received;	/* block frames handed to workers */
	uint64_t	 rv_done;	/* ... and stored */
	uint64_t	 rv_done_bytes;	/* their frame bytes */
	uint64_t	 rv_synced_bytes;
	uint64_t	 rv_sync_every;	/* bytes between durability points */
	int		 rv_syncing;
	int		 rv_ended;	/* BackupEnd arrived */
	int		 rv_committing;
};

/* A block frame in the pool. */
struct block_job {
	struct pool_job	 bj_job;
	struct receive	*bj_recv;
	struct session	*bj_session;	/* the connection it came on */
	uint8_t		*bj_frame;
	size_t		 bj_len;
	uint8_t		 bj_key[AEAD_KEY_LEN];
	/* results */
	uint64_t	 bj_index;
	uint8_t		 bj_id[CHUNK_ID_LEN];
	Error__Code	 bj_code;	/* 0: stored */
	char		 bj_msg[256];
};

/* A durability point (sync) or the commit, in the pool. */
struct sync_job {
	struct pool_job	 sj_job;
	struct receive	*sj_recv;
	int		 sj_commit;
	uint64_t	 sj_blocks;	/* blocks durable once this is done */
	uint64_t	 sj_bytes;
	struct repo_snapshot *sj_snapshot; /* index to checkpoint after a sync */
	uint64_t	 sj_chunks_new;
	uint64_t	 sj_chunks_dedup;
	int		 sj_errno;
	struct repo_point sj_point;
};

static void	receive_progress(struct receive *);
static void	receive_free(struct receive *);

/* The plaintext length block index must have. */
static uint32_t
receive_block_len(const struct receive *rv, uint64_t index)
{
	uint64_t	 off = index * rv->rv_block_size;
	uint64_t	 left = rv->rv_disk_size - off;

	return left < rv->rv_block_size ? (uint32_t)left : rv->rv_block_size;
}

/* strcmp for qsort and bsearch over an array of strings */
static int
id_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * What a backup starts from, found in the pool: at rest, the point's
 * data key (the KMS may be slow); the quota's count; the name's chain,
 * the previous point's index and an interrupted job's journal (each
 * read and checked whole, 32 bytes a block) and the chain's key file.
 * None of it is work for the loop that serves every session.  The loop
 * then sends the base (start_done).  The session reads nothing
 * meanwhile.
 */
struct start_job {
	struct pool_job		 st_job;
	struct receive		*st_recv;
	struct repo		*st_repo;
	const struct tenant	*st_tenant;
	/* results */
	int			 st_key_errno;	/* at rest: 0, or no key */
	char			 st_key_err[2 * KEY_ERR_MAX];
	int			 st_errno;	/* 0: found */
	const char		*st_what;	/* ... else what failed */
	const char		*st_damaged;	/* ... and EBADMSG's advice */
	int			 st_other;	/* base of another kind */
	uint32_t		 st_other_block_size;
	uint32_t		 st_other_mode;
	char			 st_other_id[64];	/* rp_id */
	uint8_t			*st_chain;	/* the key file, source-side */
	size_t			 st_chainlen;
	uint64_t		 st_used;	/* quota: what the tenant has */
};

/*
 * The chain of the name, for the source's rollback check: the newest
 * point (rv_newest_id), whether the point the source last committed is
 * still here, and how many points miss their predecessor; and for the
 * commit's link (repo_job_link_hint).  0, or -1 with errno.
 */
static int
base_chain(struct start_job *st, BaseIndex *bi)
{
	struct receive		*rv = st->st_recv;
	struct repo_point	*pts = NULL, *p;
	const char		**ids = NULL, *prev;
	uint8_t			 names[CHUNK_ID_LEN];
	size_t			 n = 0, i;

	/* The names first: a point committed meanwhile changes them. */
	if (repo_chain_names(st->st_repo, st->st_tenant->tn_name, rv->rv_name,
	    names) == -1 || (repo_list_keys(st->st_repo,
	    st->st_tenant->tn_name, rv->rv_name, &repo_keys_none, &pts,
	    &n) == -1 && errno != ENOENT))
		return -1;
	repo_job_link_hint(rv->rv_job, names, pts, n);
	/* The ids sorted, so that each predecessor is a binary search. */
	if (n > 0 && (ids = calloc(n, sizeof(*ids))) == NULL) {
		repo_points_free(pts, n);
		return -1;
	}
	for (i = 0; i < n; i++)
		ids[i] = pts[i].rp_id;
	if (n > 0)
		qsort(ids, n, sizeof(*ids), id_cmp);
	for (i = 0; i < n; i++) {
		p = &pts[i];
		if (rv->rv_known_id[0] != '\0' &&
		    strcmp(p->rp_id, rv->rv_known_id) == 0 &&
		    (rv->rv_known_seq == 0 || p->rp_sequence == 0 ||
		    p->rp_sequence == rv->rv_known_seq))
			bi->known = 1;
		prev = p->rp_previous_id;
		if (prev[0] != '\0' && !p->rp_previous_pruned &&
		    bsearch(&prev, ids, n, sizeof(*ids), id_cmp) == NULL)
			bi->missing++;
	}
	free(ids);
	/* repo_list sorts the points of a name oldest first. */
	rv->rv_newest_id[0] = '\0';
	if (n > 0) {
		snprintf(rv->rv_newest_id, sizeof(rv->rv_newest_id), "%s",
		    pts[n - 1].rp_id);
		bi->newest_sequence = pts[n - 1].rp_sequence;
	}
	bi->newest_id = rv->rv_newest_id;
	bi->chain = 1;
	repo_points_free(pts, n);
	return 0;
}

/*
 * An interrupted job's durable blocks count as base too: its journal
 * merged over the previous point's ids (whole, for the rare resumed job
 * only); at rest, with the keys it records (repo_job_resume).  0 (none,
 * or merged), or -1 with errno.
 */
static int
base_resume(struct start_job *st)
{
	struct receive		*rv = st->st_recv;
	struct repo_point	*base = &rv->rv_base;
	uint8_t			*journal = NULL, *merged;
	const uint8_t		*ids;
	uint64_t		 n, m, jblocks = 0, i;
	static const uint8_t	 zero[CHUNK_ID_LEN];

	if (repo_job_resume(rv->rv_job, base, &journal, &jblocks) == -1)
		return errno == ENOENT || errno == ENOKEY ? 0 : -1;
	n = jblocks > base->rp_blocks ? jblocks : base->rp_blocks;
	if ((merged = calloc(n, CHUNK_ID_LEN)) == NULL) {
		free(journal);
		return -1;
	}
	for (i = 0; base->rp_ix != NULL && i < base->rp_blocks;
	    i += BASE_IDS_MAX) {
		m = base->rp_blocks - i < BASE_IDS_MAX ?
		    base->rp_blocks - i : BASE_IDS_MAX;
		if ((ids = repo_point_ids(base, i, m)) == NULL) {
			free(journal);
			free(merged);
			return -1;
		}
		memcpy(merged + i * CHUNK_ID_LEN, ids, m * CHUNK_ID_LEN);
	}
	for (i = 0; i < jblocks; i++)
		if (memcmp(journal + i * CHUNK_ID_LEN, zero,
		    CHUNK_ID_LEN) != 0)
			memcpy(merged + i * CHUNK_ID_LEN,
			    journal + i * CHUNK_ID_LEN, CHUNK_ID_LEN);
	free(journal);
	repo_point_drop_index(base);	/* merged: its windows go */
	base->rp_index = merged;
	base->rp_blocks = n;
	if (base->rp_id[0] == '\0')
		snprintf(base->rp_id, sizeof(base->rp_id), "interrupted-job");
	rv->rv_resumed = 1;
	return 0;
}

/*
 * At rest: the point's data key and the keys it lists (every key of
 * the tenant's key file) into rv, and their ids to the job: it
 * deduplicates only against chunks sealed under one of them.  May wait
 * for the KMS.  0, or -1 with why in st.
 */
static int
start_keys(struct start_job *st)
{
	struct receive	*rv = st->st_recv;

	if (atrest_backup_keys(st->st_repo, st->st_tenant, &rv->rv_dek,
	    rv->rv_dek_id, &rv->rv_keys, &rv->rv_keys_len, st->st_key_err,
	    sizeof(st->st_key_err)) == -1) {
		st->st_key_errno = errno != 0 ? errno : ENOKEY;
		return -1;
	}
	if (repo_job_set_seal_keys(rv->rv_job, rv->rv_keys,
	    rv->rv_keys_len) == -1) {
		snprintf(st->st_key_err, sizeof(st->st_key_err), "cannot "
		    "read back the keys of the new point");
		st->st_key_errno = ENOKEY;
		return -1;
	}
	return 0;
}

/*
 * Worker: the keys (at rest), the quota, the chain, the base (the
 * newest point, if asked), the chain's key file (source-side).
 */
static void
start_work(struct pool_job *pj)
{
	struct start_job	*st = (struct start_job *)pj;
	struct receive		*rv = st->st_recv;
	struct repo_point	*base = &rv->rv_base;

	base_index__init(&rv->rv_piece);
	memset(base, 0, sizeof(*base));
	/* Within the quota, with room for this job's index at least. */
	st->st_what = "cannot count what is stored for the quota, for";
	if (repo_job_set_quota(rv->rv_job, st->st_tenant->tn_quota,
	    &st->st_used) == -1)
		goto fail;	/* EDQUOT: start_done says so */
	if (rv->rv_atrest && start_keys(st) == -1)
		return;
	st->st_what = "cannot list the restore points of";
	if (base_chain(st, &rv->rv_piece) == -1)
		goto fail;
	st->st_what = "cannot read the previous restore point of";
	st->st_damaged = "it is damaged; run 'target-transporter verify' on "
	    "the repository, or back up with --full";
	/* The newest point base_chain found: the name is not read again. */
	if (rv->rv_incremental && rv->rv_newest_id[0] != '\0') {
		if (repo_point_open_windowed(st->st_repo,
		    st->st_tenant->tn_name, rv->rv_name, rv->rv_newest_id,
		    base, INDEX_SLOTS_MAX) == -1) {
			if (errno != ENOENT)
				goto fail;
			memset(base, 0, sizeof(*base));
		} else if (base->rp_block_size != rv->rv_block_size ||
		    base->rp_mode != rv->rv_mode) {
			/* Chunk ids of another mode never match. */
			st->st_other = 1;
			st->st_other_block_size = base->rp_block_size;
			st->st_other_mode = base->rp_mode;
			snprintf(st->st_other_id, sizeof(st->st_other_id), "%s",
			    base->rp_id);
			repo_point_clear(base);
			memset(base, 0, sizeof(*base));
		}
	}
	/* At rest: its own key, and those of the base's chunks. */
	st->st_what = "cannot take the keys of the previous restore point of";
	if (rv->rv_atrest && repo_job_use_keys(rv->rv_job, rv->rv_dek_id,
	    base->rp_ix != NULL || base->rp_index != NULL ? base : NULL) == -1)
		goto fail;
	/* Not for source-side jobs, whose data key died with them. */
	st->st_damaged = repo_point_ids_error(EBADMSG);
	if (rv->rv_mode != ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    base_resume(st) == -1)
		goto fail;
	st->st_what = "cannot read the key file of";
	st->st_damaged = "it is damaged; run 'target-transporter verify' on "
	    "the repository";
	if (rv->rv_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    repo_keychain_read(st->st_repo, st->st_tenant->tn_name,
	    rv->rv_name, &st->st_chain, &st->st_chainlen) == -1 &&
	    errno != ENOENT)
		goto fail;
	return;
 fail:
	st->st_errno = errno != 0 ? errno : EIO;
}

/*
 * On the last BaseIndex piece: the job's token, if the source asked to
 * use more connections; only the connections of this tenant that know
 * it can join (receive_join).  0, or -1 after session_fail.
 */
static int
receive_token(struct session *se, struct receive *rv, BaseIndex *bi)
{
	switch (jobconn_token(&rv->rv_jc)) {
	case -1:
		session_fail(se, ERROR__CODE__INTERNAL, "cannot make a job "
		    "token");
		return -1;
	case 1:
		bi->job_token.data = rv->rv_jc.jc_token;
		bi->job_token.len = sizeof(rv->rv_jc.jc_token);
		break;
	}
	return 0;
}

/*
 * Sends what start_work found: the index of the newest point of the
 * name, the base of an incremental backup, in pieces; or an empty last
 * piece if there is no usable base (none yet, or another block size).
 * Returns 0 or -1 if the session was closed.
 */
static int
receive_send_base(struct session *se, struct receive *rv,
    struct start_job *st)
{
	BaseIndex	*bi = &rv->rv_piece;
	struct repo_point *base = &rv->rv_base;
	int		 r;

	if (st->st_other)
		session_log(se, "previous point %s of '%s' has %u-byte blocks "
		    "and mode %u, not %u and %u: no base", st->st_other_id,
		    rv->rv_name, st->st_other_block_size, st->st_other_mode,
		    rv->rv_block_size, rv->rv_mode);
	if (rv->rv_resumed)
		session_log(se, "resuming an interrupted backup of '%s'",
		    rv->rv_name);
	if (receive_token(se, rv, bi) == -1)
		return -1;
	if (base->rp_index != NULL || base->rp_ix != NULL) {
		rv->rv_has_base = 1;
		bi->point_id = base->rp_id;
		bi->dirty_bitmap = base->rp_dirty_bitmap;
		bi->blocks = base->rp_blocks;
		bi->resumed = rv->rv_resumed;
	}
	/* Source-side: the chain's key file goes with the first piece. */
	bi->keychain.data = st->st_chain;
	bi->keychain.len = st->st_chainlen;
	r = session_send_pieces(se, bi, base, &rv->rv_piece_next);
	bi->keychain.data = NULL;
	bi->keychain.len = 0;
	if (r == -1)
		return -1;
	rv->rv_pieces_left = r == 0;
	return 0;
}

/* The write callback of a backup's connection: more BaseIndex pieces. */
void
receive_drained(struct session *se)
{
	struct receive	*rv = se->se_recv;

	if (rv == NULL || !rv->rv_pieces_left || rv->rv_jc.jc_first != se)
		return;
	if (session_send_pieces(se, &rv->rv_piece, &rv->rv_base,
	    &rv->rv_piece_next) != 0)
		rv->rv_pieces_left = 0;
}

/* A tenant with a quota: what it stores, in the metrics. */
static void
receive_count_usage(struct session *se)
{
	const struct tenant	*tn = se->se_tenant;
	uint64_t		 used;

	if (tn->tn_quota == 0 || repo_tenant_usage(se->se_target->tg_repo,
	    tn->tn_name, &used) == -1)
		return;
	metrics_set(metrics_series(metrics.mt_tenant_stored, tn->tn_name,
	    NULL), (double)used);
	metrics_set(metrics_series(metrics.mt_tenant_quota, tn->tn_name,
	    NULL), (double)tn->tn_quota);
}

/*
 * The tenant stores used bytes and the backup needs at least need more:
 * over its quota, fails the session (STORAGE_FULL).
 */
static void
receive_over_quota(struct session *se, struct receive *rv, uint64_t used,
    uint64_t need)
{
	char	 u[32], q[32], n[32];

	format_bytes(used, u, sizeof(u));
	format_bytes(se->se_tenant->tn_quota, q, sizeof(q));
	format_bytes(need, n, sizeof(n));
	session_fail(se, ERROR__CODE__STORAGE_FULL, "tenant %s stores %s of "
	    "its quota of %s, and the backup of '%s' needs %s more; nothing "
	    "was committed. Raise 'quota' in its [tenant] section of "
	    "target.conf and reload the target (SIGHUP)",
	    se->se_tenant->tn_name, u, q, rv->rv_name, n);
}

/* Loop: sends the base, which lets the source start; or fails. */
static void
start_done(struct pool_job *pj)
{
	struct start_job	*st = (struct start_job *)pj;
	struct receive		*rv = st->st_recv;
	struct session		*se = rv->rv_jc.jc_first;
	char			 conns[48] = "";

	if (se->se_state != SESSION_BACKUP)
		goto out;
	if (st->st_key_errno != 0) {
		session_fail(se, st->st_key_errno == EPERM ?
		    ERROR__CODE__PROTOCOL : ERROR__CODE__KEY, "%s%s%s: %s; the "
		    "backup of '%s' stopped before storing anything",
		    st->st_key_errno == EPERM ? "at-rest encryption refused "
		    "for tenant " : "at-rest key of tenant ",
		    st->st_tenant->tn_name, st->st_key_errno == EPERM ? "" :
		    " unavailable", st->st_key_err, rv->rv_name);
		goto out;
	}
	receive_count_usage(se);
	if (st->st_errno == EDQUOT) {
		receive_over_quota(se, rv, st->st_used, rv->rv_blocks *
		    CHUNK_ID_LEN);
		goto out;
	}
	if (st->st_errno != 0) {
		session_fail(se, st->st_errno == ENOMEM ?
		    ERROR__CODE__INTERNAL : session_errno_code(st->st_errno),
		    "%s '%s': %s", st->st_what, rv->rv_name,
		    st->st_errno == EBADMSG && st->st_damaged != NULL ?
		    st->st_damaged : strerror(st->st_errno));
		goto out;
	}
	if (receive_send_base(se, rv, st) == -1)
		goto out;
	if (rv->rv_jc.jc_asked > 1)
		snprintf(conns, sizeof(conns), ", on up to %u connections",
		    rv->rv_jc.jc_asked);
	session_log(se, "backup of '%s' started: %llu bytes in %llu blocks "
	    "of %u%s%s%s%s", rv->rv_name, (unsigned long long)rv->rv_disk_size,
	    (unsigned long long)rv->rv_blocks, rv->rv_block_size,
	    rv->rv_atrest ? ", encrypted at rest" : "",
	    rv->rv_has_base ? ", incremental from " : "",
	    rv->rv_has_base ? rv->rv_base.rp_id : "", conns);
 out:
	free(st->st_chain);
	free(st);
	session_wait_end(se);
	session_job_done(se, 0);	/* reading resumes */
}

/* Hands the start of the backup to the pool.  0, or -1 if closed. */
static int
receive_start(struct session *se, struct receive *rv)
{
	struct start_job	*st;

	if ((st = calloc(1, sizeof(*st))) == NULL) {
		session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
		return -1;
	}
	st->st_job.pj_work = start_work;
	st->st_job.pj_done = start_done;
	st->st_recv = rv;
	st->st_repo = se->se_target->tg_repo;
	st->st_tenant = se->se_tenant;
	session_submit(se, &st->st_job);
	return 0;
}

/*
 * Whether a source-side backup of the session's tenant and name runs on
 * another session.  Its commit replaces the chain's key file with the
 * one it started from plus its new data key: a second job at once would
 * drop the first's key from the file, and chunks it deduplicates against
 * the first's would be sealed under a key it cannot list; a key file
 * changed meanwhile (keys change-password) would be put back.
 */
int
receive_chain_busy(const struct session *se, const char *name)
{
	const struct session	*o;

	TAILQ_FOREACH(o, &se->se_target->tg_sessions, se_entry)
		if (o != se && o->se_recv != NULL && o->se_recv->rv_mode ==
		    ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
		    strcmp(o->se_tenant->tn_name, se->se_tenant->tn_name) ==
		    0 && strcmp(o->se_recv->rv_name, name) == 0)
			return 1;
	return 0;
}

/*
 * Opens a BackupBegin: checks it and starts a repository job.  Returns
 * 0, or -1 if the session was closed.
 */
int
receive_begin(struct session *se, const BackupBegin *bb)
{
	struct target	*tg = se->se_target;
	struct receive	*rv;
	int		 atrest;

	if (!name_is_valid(bb->name)) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup name '%.64s' "
		    "is not valid: use 1-%d letters, digits, '.', '_' or '-'",
		    bb->name, NAME_MAX_LEN);
		return -1;
	}
	if (bb->block_size < BLOCK_SIZE_MIN || bb->block_size >
	    BLOCK_SIZE_MAX || (bb->block_size & (bb->block_size - 1)) != 0) {
		session_fail(se, ERROR__CODE__PROTOCOL, "block size %u is not "
		    "a power of two from %u to %u", bb->block_size,
		    BLOCK_SIZE_MIN, BLOCK_SIZE_MAX);
		return -1;
	}
	if (bb->disk_size == 0 || bb->disk_size / bb->block_size >
	    (1ull << 32)) {
		session_fail(se, ERROR__CODE__PROTOCOL, "disk size %llu is "
		    "out of range", (unsigned long long)bb->disk_size);
		return -1;
	}
	if (bb->mode != ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT &&
	    bb->mode != ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE) {
		session_fail(se, ERROR__CODE__PROTOCOL, "encryption mode %d "
		    "is not supported by this target", bb->mode);
		return -1;
	}
	/* A namespace never mixes plaintext and at-rest chunks (atrest.c). */
	atrest = bb->mode == ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT &&
	    se->se_tenant->tn_at_rest != 0;
	if (bb->mode == ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT && !atrest &&
	    atrest_tenant_used(se->se_tenant)) {
		session_fail(se, ERROR__CODE__UNKNOWN, "tenant %s holds "
		    "backups encrypted at rest but has no 'at_rest' key "
		    "provider now; a plaintext backup would share their "
		    "chunks. Configure its at_rest again, or give plaintext "
		    "backups a [tenant] of their own; nothing was stored",
		    se->se_tenant->tn_name);
		return -1;
	}
	if (bb->mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    receive_chain_busy(se, bb->name)) {
		/* BUSY: the source tries again, as it resumes. */
		session_fail(se, ERROR__CODE__BUSY, "busy: a source-side "
		    "backup of '%s' is running; they run one at a time (each "
		    "adds its key to the chain's key file)", bb->name);
		return -1;
	}
	if ((rv = calloc(1, sizeof(*rv))) == NULL)
		goto nomem;
	jobconn_init(&rv->rv_jc, se, bb->connections);
	snprintf(rv->rv_jc.jc_what, sizeof(rv->rv_jc.jc_what), "backup of "
	    "'%s'", bb->name);
	snprintf(rv->rv_name, sizeof(rv->rv_name), "%s", bb->name);
	rv->rv_disk_size = bb->disk_size;
	rv->rv_atrest = atrest;
	rv->rv_mode = atrest ? ENCRYPTION_MODE__ENCRYPTION_AT_REST : bb->mode;
	rv->rv_incremental = bb->incremental;
	snprintf(rv->rv_known_id, sizeof(rv->rv_known_id), "%s",
	    bb->known_point_id);
	rv->rv_known_seq = bb->known_sequence;
	rv->rv_block_size = bb->block_size;
	rv->rv_blocks = (bb->disk_size + bb->block_size - 1) / bb->block_size;
	/* Acknowledge well within the source's window, or it would stall. */
	rv->rv_sync_every = TARGET_SYNC_BYTES;
	if (bb->window / 4 < rv->rv_sync_every)
		rv->rv_sync_every = bb->window / 4;
	if (rv->rv_sync_every < BLOCK_SIZE_MAX)
		rv->rv_sync_every = BLOCK_SIZE_MAX;
	if ((rv->rv_seen = calloc((rv->rv_blocks + 7) / 8, 1)) == NULL) {
		free(rv);
		goto nomem;
	}
	rv->rv_job = repo_job_begin(tg->tg_repo, se->se_tenant->tn_name,
	    bb->name, bb->disk_size, bb->block_size, rv->rv_mode);
	if (rv->rv_job == NULL) {
		session_fail(se, session_errno_code(errno), "cannot start a "
		    "backup of '%s' in the repository: %s", bb->name,
		    strerror(errno));
		receive_free(rv);
		return -1;
	}
	if (strlen(bb->transport) >= 16 || strlen(bb->dirty_bitmap) >
	    NAME_MAX_LEN || strlen(bb->known_point_id) >=
	    sizeof(rv->rv_known_id)) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': "
		    "transport, bitmap name or point id too long", bb->name);
		receive_free(rv);
		return -1;
	}
	repo_job_set_source(rv->rv_job, bb->transport, bb->dirty_bitmap);
	se->se_recv = rv;
	se->se_state = SESSION_BACKUP;
	jobconn_count_start(&rv->rv_jc, "backup");
	return receive_start(se, rv);
 nomem:
	session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
	return -1;
}

/* Worker: why block index could not be stored (error), for block_done. */
static void
receive_store_failed(struct block_job *bj, uint64_t index, int error)
{
	const struct tenant	*tn = bj->bj_session->se_tenant;
	char			 quota[32];

	bj->bj_code = session_errno_code(error);
	if (error == EEXIST && bj->bj_recv->rv_mode ==
	    ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE) {
		bj->bj_code = ERROR__CODE__INTEGRITY;
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "block %llu: its "
		    "chunk id names a chunk stored unsealed, which a "
		    "source-side chunk id (keyed) cannot do; nothing was "
		    "committed", (unsigned long long)index);
	} else if (error == EEXIST) {
		bj->bj_code = ERROR__CODE__INTEGRITY;
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "block %llu: %s",
		    (unsigned long long)index, RECEIVE_KIND_RACE);
	} else if (error == EDQUOT && tn->tn_quota > 0) {
		format_bytes(tn->tn_quota, quota, sizeof(quota));
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "block %llu: tenant "
		    "%s is at its quota of %s; nothing was committed. Raise "
		    "'quota' in its [tenant] section of target.conf and "
		    "reload the target (SIGHUP)", (unsigned long long)index,
		    tn->tn_name, quota);
	} else
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "cannot store block "
		    "%llu: %s", (unsigned long long)index, strerror(error));
}

/*
 * Worker: decode, open (in place, in the decoded frame), decompress,
 * check the id, store.
 */
static void
block_work(struct pool_job *pj)
{
	struct block_job	*bj = (struct block_job *)pj;
	struct receive		*rv = bj->bj_recv;
	Frame			*f;
	Block			*b;
	uint8_t			 aad[AAD_MAX_LEN], id[CHUNK_ID_LEN];
	uint8_t			*plain, *raw = NULL, *sealed = NULL;
	size_t			 aadlen, plen;
	uint32_t		 want, flags;
	int			 source_side;

	bj->bj_code = ERROR__CODE__PROTOCOL;
	if ((f = frame_unpack(bj->bj_frame, bj->bj_len)) == NULL ||
	    f->msg_case != FRAME__MSG_BLOCK) {
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "malformed block "
		    "frame");
		goto out;
	}
	/* Decoded: the frame's bytes are not needed any more. */
	free(bj->bj_frame);
	bj->bj_frame = NULL;
	b = f->block;
	bj->bj_index = b->index;
	if (b->index >= rv->rv_blocks) {
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "block %llu is past "
		    "the end of a %llu-block disk",
		    (unsigned long long)b->index,
		    (unsigned long long)rv->rv_blocks);
		goto out;
	}
	want = receive_block_len(rv, b->index);
	source_side = rv->rv_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE;
	if (b->chunk_id.len != CHUNK_ID_LEN || b->nonce.len !=
	    AEAD_NONCE_LEN || b->raw_len != want || b->payload.len <
	    AEAD_TAG_LEN + (source_side ? SEALED_OVERHEAD : 0) ||
	    b->payload.len - AEAD_TAG_LEN > compress_bound(want) +
	    (source_side ? SEALED_OVERHEAD : 0) ||
	    (b->encrypted != 0) != source_side) {
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "block %llu has bad "
		    "field lengths", (unsigned long long)b->index);
		goto out;
	}
	memcpy(bj->bj_id, b->chunk_id.data, CHUNK_ID_LEN);
	plen = b->payload.len - AEAD_TAG_LEN;
	plain = b->payload.data;
	aadlen = crypto_aad(aad, AAD_BLOCK_TO_TARGET, NULL, bj->bj_id,
	    b->index);
	bj->bj_code = ERROR__CODE__INTEGRITY;
	if (crypto_open(bj->bj_key, b->nonce.data, aad, aadlen,
	    b->payload.data, b->payload.len, plain) == -1) {
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "block %llu failed "
		    "authentication (AES-GCM tag)",
		    (unsigned long long)b->index);
		goto out;
	}
	if (source_side) {
		/*
		 * Sealed by the source under a key we never see: store it
		 * as it is.  Its integrity is checked where the key is.
		 */
		flags = CHUNK_ENCRYPTED | (b->compressed ? CHUNK_COMPRESSED : 0);
		goto store;
	}
	if (b->compressed) {
		if ((raw = malloc(want)) == NULL)
			goto nomem;
		if (decompress_block(plain, plen, raw, want) == -1) {
			snprintf(bj->bj_msg, sizeof(bj->bj_msg), "block %llu "
			    "does not decompress to %u bytes",
			    (unsigned long long)b->index, want);
			goto out;
		}
		crypto_sha256(raw, want, id);
	} else {
		if (plen != want) {
			snprintf(bj->bj_msg, sizeof(bj->bj_msg), "raw block "
			    "%llu has %zu bytes, not %u",
			    (unsigned long long)b->index, plen, want);
			goto out;
		}
		crypto_sha256(plain, plen, id);
	}
	if (memcmp(id, bj->bj_id, CHUNK_ID_LEN) != 0) {
		snprintf(bj->bj_msg, sizeof(bj->bj_msg), "block %llu does not "
		    "match its chunk id", (unsigned long long)b->index);
		goto out;
	}
	flags = b->compressed ? CHUNK_COMPRESSED : 0;
	if (rv->rv_atrest) {
		/* A counter, not the index: a repeated index is caught late. */
		if ((sealed = malloc(plen + SEALED_OVERHEAD)) == NULL)
			goto nomem;
		if (atrest_seal(&rv->rv_dek, rv->rv_dek_id, bj->bj_id,
		    atomic_fetch_add(&rv->rv_dek_uses, 1), plain, plen,
		    sealed) == -1) {
			bj->bj_code = ERROR__CODE__INTERNAL;
			snprintf(bj->bj_msg, sizeof(bj->bj_msg), "cannot seal "
			    "block %llu", (unsigned long long)b->index);
			goto out;
		}
		plain = sealed;
		plen += SEALED_OVERHEAD;
		flags |= CHUNK_ENCRYPTED;
	}
 store:
	if (repo_job_put_chunk(rv->rv_job, bj->bj_id, flags, want,
	    plain, plen) == -1) {
		receive_store_failed(bj, b->index, errno);
		goto out;
	}
	bj->bj_code = 0;
	goto out;
 nomem:
	bj->bj_code = ERROR__CODE__INTERNAL;
	snprintf(bj->bj_msg, sizeof(bj->bj_msg), "out of memory");
 out:
	free(raw);
	free(sealed);
	frame_free(f);
	free(bj->bj_frame);
	bj->bj_frame = NULL;
	crypto_wipe(bj->bj_key, sizeof(bj->bj_key));
}

/* Loop: record the stored block, or fail the session. */
static void
block_done(struct pool_job *pj)
{
	struct block_job	*bj = (struct block_job *)pj;
	struct receive		*rv = bj->bj_recv;
	struct session		*se = bj->bj_session;

	if (se->se_state != SESSION_BACKUP || rv->rv_jc.jc_failed)
		goto out;
	if (bj->bj_code != 0) {
		session_fail(se, bj->bj_code, "backup of '%s': %s",
		    rv->rv_name, bj->bj_msg);
		goto out;
	}
	if (rv->rv_seen[bj->bj_index / 8] & (1u << (bj->bj_index % 8))) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': "
		    "block %llu was sent twice", rv->rv_name,
		    (unsigned long long)bj->bj_index);
		goto out;
	}
	rv->rv_seen[bj->bj_index / 8] |= 1u << (bj->bj_index % 8);
	repo_job_set_block(rv->rv_job, bj->bj_index, bj->bj_id);
	rv->rv_done++;
	rv->rv_done_bytes += bj->bj_len + FRAME_HDR_LEN;
	se->se_done_blocks++;
	se->se_done_bytes += bj->bj_len + FRAME_HDR_LEN;
	receive_progress(rv);
 out:
	free(bj);
	session_job_done(se, 1);
}

/*
 * Hands a block frame (buf, owned from here on) to the pool; the caller
 * took a job slot for it.  Returns 0.
 */
int
receive_block(struct session *se, uint8_t *buf, size_t len)
{
	struct receive		*rv = se->se_recv;
	struct block_job	*bj;

	/* (Nothing is read before the base is sent: session_wait.) */
	if (se->se_ended) {
		free(buf);
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': a "
		    "block after BackupEnd", rv->rv_name);
		session_job_done(se, 1);
		return -1;
	}
	if ((bj = calloc(1, sizeof(*bj))) == NULL) {
		free(buf);
		session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
		session_job_done(se, 1);
		return -1;
	}
	bj->bj_job.pj_work = block_work;
	bj->bj_job.pj_done = block_done;
	bj->bj_recv = rv;
	bj->bj_session = se;
	bj->bj_frame = buf;
	bj->bj_len = len;
	memcpy(bj->bj_key, se->se_key_in, sizeof(bj->bj_key));
	rv->rv_received++;
	se->se_blocks_in++;
	pool_submit(se->se_target->tg_pool, &bj->bj_job);
	return 0;
}

static void
sync_work(struct pool_job *pj)
{
	struct sync_job	*sj = (struct sync_job *)pj;

	struct receive	*rv = sj->sj_recv;
	struct session	*se = rv->rv_jc.jc_first;

	sj->sj_errno = 0;
	if (sj->sj_commit) {
		/*
		 * Source-side: unchanged blocks are the base's chunks, under
		 * any of the keys it lists (the point lists what it uses).
		 */
		if (rv->rv_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
		    rv->rv_unchanged > 0 && repo_job_use_keys(rv->rv_job, NULL,
		    &rv->rv_base) == -1) {
			sj->sj_errno = errno;
			repo_job_abort(rv->rv_job);	/* as a failed commit */
			return;
		}
		if (repo_job_commit(rv->rv_job, &sj->sj_point) == -1) {
			sj->sj_errno = errno;
			/*
			 * The interrupted job it resumed names a chunk that
			 * is gone (pruned by a target that could not read
			 * its journal): the next backup starts over.
			 */
			if (sj->sj_errno == ENODATA && rv->rv_resumed)
				repo_resume_drop(se->se_target->tg_repo,
				    se->se_tenant->tn_name, rv->rv_name);
		} else
			/* Interrupted jobs of this name are superseded. */
			repo_resume_drop(se->se_target->tg_repo,
			    se->se_tenant->tn_name, rv->rv_name);
		return;
	}
	if (repo_job_sync(rv->rv_job) == -1 ||
	    (sj->sj_snapshot != NULL &&
	    repo_job_checkpoint(rv->rv_job, sj->sj_snapshot) == -1))
		sj->sj_errno = errno;
}

/* A committed backup in the metrics (docs/OPERATIONS.md). */
static void
receive_count(struct session *se, struct receive *rv,
    const struct repo_point *rp, uint64_t chunks_new, uint64_t chunks_dedup)
{
	const char	*tenant = se->se_tenant->tn_name;

	METRICS_ADD(metrics.mt_bytes_stored, tenant, rp->rp_stored_bytes);
	METRICS_ADD(metrics.mt_chunks, "new", chunks_new);
	METRICS_ADD(metrics.mt_chunks, "dedup", chunks_dedup);
	METRICS_ADD(metrics.mt_chunks, "unchanged", rv->rv_unchanged);
	METRICS_ADD(metrics.mt_chunks, "zero", rp->rp_zero_blocks);
	jobconn_count_end(&rv->rv_jc, 1);
	metrics_set(metrics_series(metrics.mt_last_point, tenant, rv->rv_name),
	    (double)rp->rp_created);
	receive_count_usage(se);
}

static void
sync_done(struct pool_job *pj)
{
	struct sync_job	*sj = (struct sync_job *)pj;
	struct receive	*rv = sj->sj_recv;
	struct session	*se = rv->rv_jc.jc_first;
	Frame		 f = FRAME__INIT;
	Ack		 ack = ACK__INIT;
	Committed	 c = COMMITTED__INIT;
	struct session	*other;
	char		 rate[32], stored[32];
	uint64_t	 ms;

	rv->rv_syncing = 0;
	repo_snapshot_free(sj->sj_snapshot);
	if (sj->sj_commit)
		rv->rv_job = NULL;	/* repo_job_commit freed it */
	if (se->se_state != SESSION_BACKUP || rv->rv_jc.jc_failed)
		goto out;
	if (sj->sj_errno == EEXIST) {
		session_fail(se, ERROR__CODE__INTEGRITY, "backup of '%s': %s",
		    rv->rv_name, RECEIVE_KIND_RACE);
		goto out;
	}
	if (sj->sj_errno == EFBIG) {
		/*
		 * A point lists the keys of its chunks and of its base's:
		 * an incremental's list only grows, ~12,000 backups of a
		 * name fill 2 MiB.  A full point starts it afresh.
		 */
		session_fail(se, ERROR__CODE__KEY, "backup of '%s': its restore "
		    "point would list more keys than a manifest holds (2 MiB); "
		    "nothing was committed. Back it up with --full: its point "
		    "then lists only the keys of the chunks it has",
		    rv->rv_name);
		goto out;
	}
	if (sj->sj_errno == ENOKEY) {
		/*
		 * A key of its chunks the source did not send: the chain's
		 * key file lacks it (two jobs of the name at once, before
		 * receive_chain_busy; a key file lost and rebuilt without
		 * it), or a base lists a key the source no longer sends.
		 */
		session_fail(se, ERROR__CODE__KEY, "backup of '%s': a chunk "
		    "the new point needs is sealed under a key the source did "
		    "not send (the chain's key file lacks it; the target's "
		    "log names it); nothing was committed. Back the disk up "
		    "under a new name", rv->rv_name);
		goto out;
	}
	if (sj->sj_errno == ENODATA && rv->rv_resumed) {
		/* sync_work dropped the journal: the next one starts over. */
		session_fail(se, ERROR__CODE__INTEGRITY, "backup of '%s': a "
		    "chunk the new point needs is missing from the repository "
		    "(lost since the interrupted backup this one resumed, or "
		    "since the point it was based on; the target's log names "
		    "it); nothing was committed. The next backup of it starts "
		    "over; run 'target-transporter verify' on the target",
		    rv->rv_name);
		goto out;
	}
	if (sj->sj_errno == ENODATA) {
		session_fail(se, ERROR__CODE__INTEGRITY, "backup of '%s': a "
		    "chunk the new point needs is missing from the repository "
		    "(lost since the point it was based on; the target's log "
		    "names it); nothing was committed. Back it up with --full, "
		    "and run 'target-transporter verify' on the target",
		    rv->rv_name);
		goto out;
	}
	if (sj->sj_errno != 0) {
		session_fail(se, session_errno_code(sj->sj_errno), "backup of "
		    "'%s': cannot %s the restore point: %s; nothing was "
		    "committed", rv->rv_name, sj->sj_commit ? "commit" :
		    "write", strerror(sj->sj_errno));
		goto out;
	}
	if (sj->sj_commit) {
		ms = now_ms() - rv->rv_jc.jc_start_ms;
		format_bytes(sj->sj_point.rp_stored_bytes, stored,
		    sizeof(stored));
		format_bytes(ms ? rv->rv_disk_size * 1000 / ms : 0, rate,
		    sizeof(rate));
		session_log(se, "committed restore point %s/%s: %s stored, "
		    "%.1f s, %s/s, %u connection%s", rv->rv_name,
		    sj->sj_point.rp_id, stored, ms / 1000.0, rate,
		    rv->rv_jc.jc_count + 1, rv->rv_jc.jc_count > 0 ? "s" : "");
		c.point_id = sj->sj_point.rp_id;
		c.bytes_stored = sj->sj_point.rp_stored_bytes;
		c.chunks_new = sj->sj_chunks_new;
		c.chunks_dedup = sj->sj_chunks_dedup;
		c.sequence = sj->sj_point.rp_sequence;
		c.mode = sj->sj_point.rp_mode;
		receive_count(se, rv, &sj->sj_point, sj->sj_chunks_new,
		    sj->sj_chunks_dedup);
		f.msg_case = FRAME__MSG_COMMITTED;
		f.committed = &c;
		session_send(se, &f);
		/* Every connection of the job is free for the next request. */
		while ((other = TAILQ_FIRST(&rv->rv_jc.jc_joined)) != NULL) {
			if (other->se_state == SESSION_BACKUP)
				other->se_state = SESSION_IDLE;
			receive_release(other);
		}
		receive_release(se);
		if (se->se_state == SESSION_BACKUP)
			se->se_state = SESSION_IDLE;
		goto out;
	}
	rv->rv_synced_bytes = sj->sj_bytes;
	log_debug("session %llu: checkpoint of '%s': %llu blocks durable",
	    (unsigned long long)se->se_id, rv->rv_name,
	    (unsigned long long)sj->sj_blocks);
	/* Each connection learns what of its own part is durable. */
	f.msg_case = FRAME__MSG_ACK;
	f.ack = &ack;
	for (other = se; other != NULL;
	    other = jobconn_next(&rv->rv_jc, other)) {
		if (other->se_state != SESSION_BACKUP)
			continue;
		ack.blocks_durable = other->se_sync_blocks;
		ack.bytes_durable = other->se_sync_bytes;
		session_send(other, &f);
	}
	receive_progress(rv);
 out:
	free(sj);
	session_job_done(se, 0);
}

static void
receive_submit_sync(struct receive *rv, int commit)
{
	struct session	*se = rv->rv_jc.jc_first, *other;
	struct sync_job	*sj;

	if ((sj = calloc(1, sizeof(*sj))) == NULL) {
		session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
		return;
	}
	sj->sj_job.pj_work = sync_work;
	sj->sj_job.pj_done = sync_done;
	sj->sj_recv = rv;
	sj->sj_commit = commit;
	if (commit) {
		/* Read now: the commit frees the job. */
		sj->sj_chunks_new = repo_job_chunks_new(rv->rv_job);
		sj->sj_chunks_dedup = repo_job_chunks_dedup(rv->rv_job);
		rv->rv_committing = 1;
	} else {
		sj->sj_blocks = rv->rv_done;
		sj->sj_bytes = rv->rv_done_bytes;
		for (other = se; other != NULL;
		    other = jobconn_next(&rv->rv_jc, other)) {
			other->se_sync_blocks = other->se_done_blocks;
			other->se_sync_bytes = other->se_done_bytes;
		}
		/* What is set now is durable once this sync is done. */
		if (repo_job_journals(rv->rv_job) &&
		    (sj->sj_snapshot = repo_job_snapshot(rv->rv_job)) == NULL) {
			free(sj);
			session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
			return;
		}
	}
	rv->rv_syncing = 1;
	session_job_hold(se);
	pool_submit(se->se_target->tg_pool, &sj->sj_job);
}

/* Starts a sync when enough is unsynced, or the commit when all is in. */
static void
receive_progress(struct receive *rv)
{
	if (rv->rv_jc.jc_failed || rv->rv_syncing || rv->rv_committing)
		return;
	if (rv->rv_ended && rv->rv_joined_ended == rv->rv_joined_expected &&
	    rv->rv_done == rv->rv_received) {
		/* Every connection's BackupEnd is in: the counts must add up. */
		if (rv->rv_received != rv->rv_blocks_reported) {
			session_fail(rv->rv_jc.jc_first, ERROR__CODE__PROTOCOL,
			    "backup of '%s': the source sent %llu blocks but "
			    "reports %llu; nothing was committed", rv->rv_name,
			    (unsigned long long)rv->rv_received,
			    (unsigned long long)rv->rv_blocks_reported);
			return;
		}
		receive_submit_sync(rv, 1);
	} else if (rv->rv_done_bytes - rv->rv_synced_bytes >= rv->rv_sync_every)
		receive_submit_sync(rv, 0);
}

/*
 * Unchanged: the listed blocks are those of the base point.  Only
 * blocks the base holds can be named, so a source learns nothing about
 * chunks it did not write.  Returns 0 or -1 if the session closed.
 */
int
receive_unchanged(struct session *se, const Unchanged *u, size_t len)
{
	struct receive	*rv = se->se_recv;
	static const uint8_t zero[CHUNK_ID_LEN];
	const uint8_t	*id;
	uint64_t	 idx, reads_max;
	size_t		 i;

	/* Each window about twice (pieces, lookups), and some slack. */
	reads_max = 4 * (rv->rv_base.rp_blocks / INDEX_WINDOW_IDS + 1) + 16;
	if (!rv->rv_has_base || se != rv->rv_jc.jc_first || se->se_ended) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': "
		    "unchanged blocks %s", rv->rv_name, !rv->rv_has_base ?
		    "without a base point" : se->se_ended ? "after BackupEnd" :
		    "on a joined connection");
		return -1;
	}
	for (i = 0; i < u->n_blocks; i++) {
		idx = u->blocks[i];
		if (idx >= rv->rv_blocks || idx >= rv->rv_base.rp_blocks ||
		    (rv->rv_seen[idx / 8] & (1u << (idx % 8))) != 0) {
			session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': "
			    "unchanged block %llu is out of range or repeated",
			    rv->rv_name, (unsigned long long)idx);
			return -1;
		}
		if ((id = repo_point_ids(&rv->rv_base, idx, 1)) == NULL) {
			session_fail(se, session_errno_code(errno), "backup of "
			    "'%s': cannot read the base point's index at block "
			    "%llu: %s", rv->rv_name, (unsigned long long)idx,
			    repo_point_ids_error(errno));
			return -1;
		}
		/*
		 * The base is read a window at a time, and a source sends
		 * these nearly in order; one that made the target read
		 * windows over and over would hold up every session on
		 * this loop.
		 */
		if (repo_point_window_reads(&rv->rv_base) > reads_max) {
			session_fail(se, ERROR__CODE__PROTOCOL, "backup of "
			    "'%s': unchanged blocks far out of order",
			    rv->rv_name);
			return -1;
		}
		rv->rv_seen[idx / 8] |= 1u << (idx % 8);
		/* A base zero block stays a zero block. */
		if (memcmp(id, zero, CHUNK_ID_LEN) != 0 &&
		    repo_job_set_block(rv->rv_job, idx, id) == -1) {
			session_fail(se, ERROR__CODE__INTERNAL, "backup of '%s': "
			    "cannot record block %llu", rv->rv_name,
			    (unsigned long long)idx);
			return -1;
		}
		rv->rv_unchanged++;
	}
	rv->rv_done_bytes += len + FRAME_HDR_LEN;
	se->se_done_bytes += len + FRAME_HDR_LEN;
	receive_progress(rv);
	return 0;
}

/*
 * Source-side: the wrapped keys the point needs go into its manifest
 * and the chain's new key file is stored with the commit.  The target
 * cannot unwrap either; it checks only their shape.
 */
static int
receive_keys(struct session *se, const BackupEnd *be)
{
	struct receive	*rv = se->se_recv;
	KeyChain	 kc = KEY_CHAIN__INIT;
	uint8_t		*buf = NULL;
	size_t		 len, i;
	int		 ret = -1;

	if (be->n_keys == 0 || be->n_keys > KEYCHAIN_KEYS_MAX ||
	    be->keychain.len == 0) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': a "
		    "source-side point needs its wrapped keys", rv->rv_name);
		return -1;
	}
	for (i = 0; i < be->n_keys; i++) {
		if (be->keys[i]->key_id.len != KEY_ID_LEN ||
		    be->keys[i]->kek == NULL) {
			session_fail(se, ERROR__CODE__PROTOCOL, "backup of "
			    "'%s': malformed wrapped key", rv->rv_name);
			return -1;
		}
	}
	kc.n_keys = be->n_keys;
	kc.keys = be->keys;
	len = key_chain__get_packed_size(&kc);
	if ((buf = malloc(len)) == NULL) {
		session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
		return -1;
	}
	key_chain__pack(&kc, buf);
	if (repo_job_set_keys(rv->rv_job, buf, len, be->keychain.data,
	    be->keychain.len) == -1)
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': the "
		    "keys are too large", rv->rv_name);
	else
		ret = 0;
	free(buf);
	return ret;
}

/*
 * BackupEnd on a joined connection: it carried blocks_sent blocks, all
 * of them taken already (frames of one connection come in order).
 */
static int
receive_end_joined(struct session *se, struct receive *rv,
    const BackupEnd *be)
{
	if (se->se_ended || be->blocks_sent != se->se_blocks_in ||
	    be->n_keys > 0 || be->keychain.len > 0 || be->joined > 0) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': a "
		    "joined connection's BackupEnd is not valid (it reports "
		    "%llu blocks and carried %llu%s); nothing was committed",
		    rv->rv_name,
		    (unsigned long long)be->blocks_sent,
		    (unsigned long long)se->se_blocks_in,
		    se->se_ended ? " and ended before" : "");
		return -1;
	}
	se->se_ended = 1;
	rv->rv_joined_ended++;
	receive_progress(rv);
	return 0;
}

/*
 * BackupEnd: every block has been sent on this connection; on the
 * first, the job is complete once every joined one has ended too.
 * Returns 0 or -1 if closed.
 */
int
receive_end(struct session *se, const BackupEnd *be)
{
	struct receive	*rv = se->se_recv;

	if (se != rv->rv_jc.jc_first)
		return receive_end_joined(se, rv, be);
	if (se->se_ended) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': "
		    "BackupEnd twice", rv->rv_name);
		return -1;
	}
	if (be->joined < rv->rv_jc.jc_count || (be->joined > 0 &&
	    be->joined >= rv->rv_jc.jc_asked)) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': "
		    "BackupEnd reports %u joined connections; %u joined and "
		    "%u were asked for; nothing was committed", rv->rv_name,
		    be->joined, rv->rv_jc.jc_count, rv->rv_jc.jc_asked);
		return -1;
	}
	/* On one connection the count is checked now, else at the commit. */
	if ((be->joined == 0 && be->blocks_sent != rv->rv_received) ||
	    be->blocks_unchanged != rv->rv_unchanged) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup of '%s': the "
		    "source sent %llu blocks and %llu unchanged but reports "
		    "%llu and %llu; nothing was committed", rv->rv_name,
		    (unsigned long long)rv->rv_received,
		    (unsigned long long)rv->rv_unchanged,
		    (unsigned long long)be->blocks_sent,
		    (unsigned long long)be->blocks_unchanged);
		return -1;
	}
	if (rv->rv_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    receive_keys(se, be) == -1)
		return -1;
	se->se_ended = 1;
	rv->rv_ended = 1;
	rv->rv_joined_expected = be->joined;
	rv->rv_blocks_reported = be->blocks_sent;
	receive_progress(rv);
	return 0;
}

/*
 * JoinJob (session_join): this connection carries blocks of the
 * running backup whose token (JOB_TOKEN_LEN bytes) it names.  1 if it
 * joined, 0 if no such backup takes it.
 */
int
receive_join(struct session *se, const uint8_t *token)
{
	struct session	*owner;
	struct receive	*rv;

	TAILQ_FOREACH(owner, &se->se_target->tg_sessions, se_entry) {
		rv = owner->se_recv;
		if (rv != NULL && owner->se_state == SESSION_BACKUP &&
		    jobconn_may_join(&rv->rv_jc, owner, se, token) &&
		    !(rv->rv_ended && rv->rv_jc.jc_count >=
		    rv->rv_joined_expected))
			break;
	}
	if (owner == NULL)
		return 0;
	se->se_recv = rv;
	se->se_state = SESSION_BACKUP;
	jobconn_join(&rv->rv_jc, se);
	return 1;
}

/* se is closing (why: msg) while it carries a backup: see jobconn_abort. */
void
receive_abort(struct session *se, const char *msg)
{
	jobconn_abort(&se->se_recv->rv_jc, se, msg);
}

/*
 * se no longer carries its backup (it closed, or the job committed);
 * the last connection to let go frees the job.
 */
void
receive_release(struct session *se)
{
	struct receive	*rv = se->se_recv;

	if (rv == NULL)
		return;
	se->se_recv = NULL;
	if (jobconn_leave(&rv->rv_jc, se))
		receive_free(rv);
}

/* Frees a job that is no longer in the pool, aborting it if uncommitted. */
static void
receive_free(struct receive *rv)
{
	if (rv == NULL)
		return;
	jobconn_count_end(&rv->rv_jc, 0);	/* unless it committed */
	/* Keeps what a checkpoint made durable, for the next backup. */
	if (rv->rv_job != NULL)
		repo_job_suspend(rv->rv_job);
	repo_point_clear(&rv->rv_base);
	key_buf_free(&rv->rv_dek);
	free(rv->rv_keys);
	free(rv->rv_seen);
	free(rv);
}
