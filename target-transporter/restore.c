/*
 * restore.c: streaming a restore point back to a source, and listing
 * restore points.
 *
 * Chunks are read and sealed by the worker pool.  The source grants
 * credit in bytes as it writes blocks out, so a slow disk at the source
 * stalls the target instead of growing anyone's memory.
 *
 * The point is opened in the pool (ropen_job), and an at-rest point's
 * data keys with it, before anything is announced (neither its index
 * nor the KMS holds up the loop); each chunk is
 * then opened with its key and sealed for the wire like any other, so
 * the source sees an ordinary in-flight block.
 *
 * A restore may go out on several connections (the source's
 * `connections`): RestoreBegin then carries a token, the source's extra
 * connections name it in JoinJob, and once the first says how many
 * joined (Joined) the blocks are shared out, each sealed for the
 * connection it goes on, against that connection's own credit.  Each
 * connection ends with a RestoreEnd of its own; the loss of any one
 * ends the restore on all of them (restore_abort).
 */
#include <errno.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "keys.h"
#include "target.h"

#define RESTORE_WINDOW		(64u << 20)	/* credit before any grant */
#define RESTORE_OUT_MAX		(8u << 20)	/* queued on the socket */

struct restore {
	struct job_conns	 rs_jc;		/* its connections */
	int			 rs_waiting;	/* for the joins: no block yet */
	int			 rs_told;	/* Joined arrived ... */
	uint32_t		 rs_joined_told;	/* ... with this count */
	struct repo_point	 rs_point;
	uint64_t		 rs_next;	/* next index to look at */
	uint64_t		 rs_blocks;	/* non-zero blocks */
	uint64_t		 rs_sent;	/* block frames queued, in all */
	int			 rs_jobs;
	int			 rs_verify;	/* Damage frames, not an Error */
	uint64_t		 rs_damaged;
	struct atrest_keys	*rs_keys;	/* at rest: the opened keys */
	uint64_t		*rs_resend;	/* resume: blocks below rs_from */
	size_t			 rs_nresend;
	size_t			 rs_resend_pos;	/* next of them to send */
	/* Index only (SESSION_INDEX): the pieces, restore_index_more. */
	BaseIndex		 rs_piece;	/* what each carries */
	uint64_t		 rs_piece_next;
};

struct read_job {
	struct pool_job	 rj_job;
	struct restore	*rj_restore;
	struct session	*rj_session;	/* the connection it goes on */
	char		 rj_tenant[NAME_MAX_LEN + 1];
	struct repo	*rj_repo;
	uint64_t	 rj_index;
	uint8_t		 rj_id[CHUNK_ID_LEN];
	uint8_t		 rj_key[AEAD_KEY_LEN];
	uint64_t	 rj_nonce;
	uint32_t	 rj_want;	/* plaintext length of the block */
	uint32_t	 rj_mode;	/* EncryptionMode of the point */
	const struct atrest_keys *rj_keys;	/* at rest */
	/* results */
	uint8_t		*rj_frame;
	size_t		 rj_len;
	int		 rj_errno;
	char		 rj_msg[256];
};

static const uint8_t	zero_id[CHUNK_ID_LEN];	/* a block never written */

static void	restore_free(struct restore *);

/* A connection's part of a restore starts: its first credit. */
static void
restore_conn_start(struct session *se)
{
	se->se_credit = RESTORE_WINDOW;
	se->se_out_bytes = se->se_out_blocks = se->se_reserved = 0;
}

/* Several connections: once every join the source told of is in, stream. */
static void
restore_joins_done(struct restore *rs)
{
	if (!rs->rs_waiting || !rs->rs_told ||
	    rs->rs_jc.jc_count != rs->rs_joined_told)
		return;
	rs->rs_waiting = 0;
	restore_pump(rs->rs_jc.jc_first);
}

/*
 * Fills pi from rp; pi points into rp, which must outlive it.  Returns
 * the unpacked keys pi points to (free with key_chain__free_unpacked
 * after use), or NULL if the point has none.
 */
KeyChain *
point_info_fill(PointInfo *pi, const struct repo_point *rp)
{
	KeyChain	*kc = NULL;

	point_info__init(pi);
	pi->name = (char *)rp->rp_name;
	pi->point_id = (char *)rp->rp_id;
	pi->created = rp->rp_created;
	pi->disk_size = rp->rp_disk_size;
	pi->block_size = rp->rp_block_size;
	pi->stored_bytes = rp->rp_stored_bytes;
	pi->mode = rp->rp_mode;
	pi->blocks = rp->rp_blocks;
	pi->zero_blocks = rp->rp_zero_blocks;
	pi->sequence = rp->rp_sequence;
	pi->previous_id = (char *)rp->rp_previous_id;
	pi->previous_pruned = rp->rp_previous_pruned;
	/* At-rest keys are the target's business, not the source's. */
	if (rp->rp_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    rp->rp_keys != NULL && (kc = key_chain__unpack(NULL,
	    rp->rp_keys_len, rp->rp_keys)) != NULL) {
		pi->n_keys = kc->n_keys;
		pi->keys = kc->keys;
	}
	return kc;
}

/*
 * A key set: the key ids a brief list has accounted for (the key
 * file's, and each point's keys as they are sent), or GCM tags, in a
 * tsearch tree (key_id_set_add), freed with tdestroy(set, free).  They
 * come from the source; a balanced tree stays O(log n) whatever it
 * picks.
 */

/* Whether id is in set (an all-zero id never is: see key_set_add). */
static int
key_set_has(void *const *set, const uint8_t *id)
{
	static const uint8_t	 zero[KEY_ID_LEN];

	if (memcmp(id, zero, KEY_ID_LEN) == 0)
		return 0;
	return tfind(id, set, key_id_cmp) != NULL;
}

/* What a brief list with the key file has seen (key_not_in_file). */
struct list_seen {
	void		*ls_sent;	/* the file's ids, then those sent */
	void		*ls_copies;	/* the tags of the copies kept */
	int		 ls_nomem;	/* a set could not grow */
};

static int	key_set_add(void **, const uint8_t *);

/* A GCM tag is as random as a key id, and as long: the set takes both. */
_Static_assert(AEAD_TAG_LEN == KEY_ID_LEN, "a key set holds tags too");

/*
 * repo_list_keys' filter: the keys the key file lacks, each copy once
 * (a copy is in every point until the chain is wrapped again: its
 * GCM tag tells it), so that a long chain without its key file costs a
 * key per copy, not per copy and point.
 */
static int
key_not_in_file(const WrappedKey *wk, void *arg)
{
	struct list_seen	*seen = arg;
	int			 rv;

	if (wk->key_id.len != KEY_ID_LEN || wk->wrapped.len < AEAD_TAG_LEN)
		return 1;
	if (key_set_has(&seen->ls_sent, wk->key_id.data))
		return 0;
	if ((rv = key_set_add(&seen->ls_copies, wk->wrapped.data +
	    wk->wrapped.len - AEAD_TAG_LEN)) == -1)
		seen->ls_nomem = 1;	/* the list fails (list_work) */
	return rv != 0;
}

/* Adds id: 1 if it was not there, 0 if it was, -1 ENOMEM. */
static int
key_set_add(void **set, const uint8_t *id)
{
	static const uint8_t	 zero[KEY_ID_LEN];

	if (memcmp(id, zero, KEY_ID_LEN) == 0)
		return 1;	/* never a real id; not worth a node */
	return key_id_set_add(set, id);
}

/*
 * The ids of the keys of the key file chain (none if NULL, or if it
 * does not decode) into set.  0, or -1 ENOMEM.
 */
static int
key_set_file(void **set, const uint8_t *chain, size_t chainlen)
{
	struct keychain	*kc;
	size_t		 i;
	char		 err[KEY_ERR_MAX];
	int		 rv = 0;

	if (chain == NULL || (kc = keychain_unpack(chain, chainlen, err,
	    sizeof(err))) == NULL)
		return 0;
	for (i = 0; i < kc->kc_nkeys && rv == 0; i++)
		if (kc->kc_keys[i]->key_id.len == KEY_ID_LEN &&
		    key_set_add(set, kc->kc_keys[i]->key_id.data) == -1)
			rv = -1;
	keychain_free(kc);
	return rv;
}

/*
 * ListRequest.brief: pi names the distinct KEKs of its keys and, with
 * keychain asked (sent is then the key file's ids and those of the keys
 * already sent), keeps only the keys sent does not hold yet, else none:
 * each key travels once.  The arrays it makes point into pi's own keys;
 * free them with list_brief_free, also after a failure.  0, or -1
 * ENOMEM.
 */
static int
list_brief(PointInfo *pi, void **sent)
{
	WrappedKey	**keep = NULL;
	KekRef		**keks = NULL;
	size_t		 i, nkeep = 0, nkeks = 0;
	int		 add = 0;

	if (pi->n_keys > 0 && ((keep = calloc(pi->n_keys,
	    sizeof(*keep))) == NULL || (keks = calloc(POINT_KEKS_MAX,
	    sizeof(*keks))) == NULL))
		add = -1;
	for (i = 0; i < pi->n_keys && add != -1; i++) {
		if (pi->keys[i]->kek != NULL)
			(void)kek_refs_add(keks, &nkeks, POINT_KEKS_MAX,
			    pi->keys[i]->kek);
		if (sent != NULL && (pi->keys[i]->key_id.len != KEY_ID_LEN ||
		    (add = key_set_add(sent, pi->keys[i]->key_id.data)) == 1))
			keep[nkeep++] = pi->keys[i];
	}
	pi->keys = keep;
	pi->n_keys = nkeep;
	pi->keks = keks;
	pi->n_keks = nkeks;
	return add == -1 ? -1 : 0;
}

static void
list_brief_free(PointInfo *pi)
{
	free(pi->keys);
	free(pi->keks);
}

/*
 * A ListRequest, answered in the pool: a long chain's manifests take
 * their time to read and check, and the loop serves every session.
 */
struct list_job {
	struct pool_job		 lj_job;
	struct session		*lj_session;
	struct repo		*lj_repo;
	const struct tenant	*lj_tenant;
	char			 lj_name[NAME_MAX_LEN + 1];	/* "": all */
	int			 lj_brief;
	int			 lj_keychain;
	/* results: the packed ListReply, or why not */
	uint8_t			*lj_frame;
	size_t			 lj_len;
	Error__Code		 lj_code;
	char			 lj_err[512];
};

/* Worker: every restore point of the tenant (or of one name). */
static void
list_work(struct pool_job *pj)
{
	struct list_job		*lj = (struct list_job *)pj;
	struct repo_point	*points = NULL;
	PointInfo		*infos = NULL, **ptrs = NULL;
	KeyChain		**kcs = NULL;
	Frame			 f = FRAME__INIT;
	ListReply		 reply = LIST_REPLY__INIT;
	struct list_seen	 seen;
	struct repo_keys	 rk = { REPO_KEYS_KEKS, NULL, NULL };
	const char		*name = lj->lj_name;
	uint8_t			*chain = NULL;
	size_t			 n = 0, i, chainlen = 0, len;
	size_t			 briefed = SIZE_MAX;	/* infos[briefed..] */

	memset(&seen, 0, sizeof(seen));
	if (lj->lj_keychain && name[0] && repo_keychain_read(lj->lj_repo,
	    lj->lj_tenant->tn_name, name, &chain, &chainlen) == 0) {
		reply.keychain.data = chain;
		reply.keychain.len = chainlen;
	}
	/*
	 * Brief: of each point's keys, one per KEK (which KEKs it needs)
	 * and, with the key file, those the file lacks.
	 */
	if (lj->lj_brief && lj->lj_keychain) {
		if (key_set_file(&seen.ls_sent, chain, chainlen) == -1)
			goto nomem;
		rk.rk_what = REPO_KEYS_SOME;
		rk.rk_keep = key_not_in_file;
		rk.rk_arg = &seen;
	}
	if (repo_list_keys(lj->lj_repo, lj->lj_tenant->tn_name,
	    name[0] ? name : NULL, lj->lj_brief ? &rk : NULL, &points,
	    &n) == -1) {
		lj->lj_code = session_errno_code(errno);
		snprintf(lj->lj_err, sizeof(lj->lj_err), "cannot list the "
		    "repository: %s", strerror(errno));
		goto out;
	}
	if (seen.ls_nomem || (n > 0 && ((infos = calloc(n,
	    sizeof(*infos))) == NULL || (ptrs = calloc(n,
	    sizeof(*ptrs))) == NULL || (kcs = calloc(n,
	    sizeof(*kcs))) == NULL)))
		goto nomem;
	/* Newest first: its copies are under the newest KEK. */
	for (i = n; i-- > 0;) {
		kcs[i] = point_info_fill(&infos[i], &points[i]);
		ptrs[i] = &infos[i];
		briefed = i;
		if (lj->lj_brief && list_brief(&infos[i], lj->lj_keychain ?
		    &seen.ls_sent : NULL) == -1)
			goto nomem;
	}
	reply.n_points = n;
	reply.points = ptrs;
	f.msg_case = FRAME__MSG_LIST_REPLY;
	f.list_reply = &reply;
	if ((len = frame__get_packed_size(&f)) > FRAME_MAX) {
		lj->lj_code = ERROR__CODE__INTERNAL;
		snprintf(lj->lj_err, sizeof(lj->lj_err), "the list of %zu "
		    "restore point(s)%s%s is %zu bytes, more than a frame "
		    "holds; %s", n, name[0] ? " of " : "", name, len,
		    lj->lj_brief ? name[0] ? "prune it" : "list one name "
		    "at a time" : "list without --keys, or upgrade an older "
		    "source (a newer one asks without every key of each)");
		goto out;
	}
	if ((lj->lj_frame = frame_pack(&f, &lj->lj_len)) == NULL)
		goto nomem;
	goto out;
 nomem:
	lj->lj_code = ERROR__CODE__INTERNAL;
	snprintf(lj->lj_err, sizeof(lj->lj_err), "out of memory");
 out:
	for (i = 0; kcs != NULL && i < n; i++) {
		if (lj->lj_brief && i >= briefed)
			list_brief_free(&infos[i]);
		if (kcs[i] != NULL)
			key_chain__free_unpacked(kcs[i], NULL);
	}
	tdestroy(seen.ls_sent, free);
	tdestroy(seen.ls_copies, free);
	free(kcs);
	free(ptrs);
	free(infos);
	free(chain);
	repo_points_free(points, n);
}

/* Loop: the reply goes out, or the reason it cannot. */
static void
list_done(struct pool_job *pj)
{
	struct list_job	*lj = (struct list_job *)pj;
	struct session	*se = lj->lj_session;

	if (se->se_state != SESSION_CLOSING) {
		if (lj->lj_frame != NULL) {
			session_send_packed(se, lj->lj_frame, lj->lj_len);
			lj->lj_frame = NULL;
		} else
			session_fail(se, lj->lj_code, "%s", lj->lj_err);
	}
	free(lj->lj_frame);
	free(lj);
	session_wait_end(se);
	session_job_done(se, 0);	/* reading resumes */
}

/* ListRequest: answered by list_work in the pool.  0, or -1 (failed). */
int
list_points(struct session *se, const ListRequest *lr)
{
	struct list_job	*lj;

	if (lr->name[0] != '\0' && !name_is_valid(lr->name)) {
		session_fail(se, ERROR__CODE__PROTOCOL, "backup name '%.64s' "
		    "is not valid: use 1-%d letters, digits, '.', '_' or '-'",
		    lr->name, NAME_MAX_LEN);
		return -1;
	}
	if ((lj = calloc(1, sizeof(*lj))) == NULL) {
		session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
		return -1;
	}
	lj->lj_job.pj_work = list_work;
	lj->lj_job.pj_done = list_done;
	lj->lj_session = se;
	lj->lj_repo = se->se_target->tg_repo;
	lj->lj_tenant = se->se_tenant;
	snprintf(lj->lj_name, sizeof(lj->lj_name), "%s", lr->name);
	lj->lj_brief = lr->brief;
	lj->lj_keychain = lr->keychain;
	session_submit(se, &lj->lj_job);
	return 0;
}

/*
 * Sends RestoreBegin: the point, the Block frames to follow, and for a
 * source-side point the chain's keys (rewrapped by the newest KEK).
 */
static void
restore_send_begin(struct session *se, struct restore *rs, uint64_t blocks)
{
	Frame		 f = FRAME__INIT;
	RestoreBegin	 rb = RESTORE_BEGIN__INIT;
	PointInfo	 pi;
	KeyChain	*kc;
	uint8_t		*chain = NULL;
	size_t		 chainlen = 0;

	kc = point_info_fill(&pi, &rs->rs_point);
	rb.point = &pi;
	rb.blocks = blocks;
	/* Several connections: none streams before the joins are in. */
	if (blocks > 0 && jobconn_token(&rs->rs_jc) == 1) {
		rb.job_token.data = rs->rs_jc.jc_token;
		rb.job_token.len = sizeof(rs->rs_jc.jc_token);
		rs->rs_waiting = 1;
	}
	if (rs->rs_point.rp_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    repo_keychain_read(se->se_target->tg_repo, se->se_tenant->tn_name,
	    rs->rs_point.rp_name, &chain, &chainlen) == 0) {
		rb.keychain.data = chain;
		rb.keychain.len = chainlen;
	}
	f.msg_case = FRAME__MSG_RESTORE_BEGIN;
	f.restore_begin = &rb;
	session_send(se, &f);
	if (kc != NULL)
		key_chain__free_unpacked(kc, NULL);
	free(chain);
}

/* Announces the point and starts streaming it. */
static void
restore_announce(struct session *se)
{
	struct restore	*rs = se->se_restore;

	char		 conns[48] = "";

	if (rs->rs_jc.jc_asked > 1)
		snprintf(conns, sizeof(conns), ", on up to %u connections",
		    rs->rs_jc.jc_asked);
	session_log(se, "restore of %s/%s started: %llu blocks with data%s%s",
	    rs->rs_point.rp_name, rs->rs_point.rp_id,
	    (unsigned long long)rs->rs_blocks, rs->rs_keys != NULL ?
	    ", encrypted at rest" : "", conns);
	restore_send_begin(se, rs, rs->rs_blocks);
	restore_pump(se);
}

/*
 * Block i's chunk id, from the point's index read a window at a time;
 * NULL after failing the session if that cannot be read or changed.
 */
static const uint8_t *
restore_id(struct session *se, struct restore *rs, uint64_t i)
{
	const uint8_t	*id;

	if ((id = repo_point_ids(&rs->rs_point, i, 1)) == NULL)
		session_fail(se, session_errno_code(errno), "restore of "
		    "%s/%s: cannot read its index at block %llu: %s",
		    rs->rs_point.rp_name, rs->rs_point.rp_id,
		    (unsigned long long)i, repo_point_ids_error(errno));
	return id;
}

/*
 * RestoreRequest with index: RestoreBegin and the point's chunk ids in
 * BaseIndex pieces, so that a source can check what an interrupted
 * restore wrote.  The pieces go as the output drains (SESSION_INDEX);
 * then the session is idle again, with no blocks sent.
 */
static void
restore_send_index(struct session *se, struct restore *rs)
{
	restore_send_begin(se, rs, 0);
	if (se->se_state == SESSION_CLOSING) {
		restore_free(rs);
		return;
	}
	base_index__init(&rs->rs_piece);
	rs->rs_piece.point_id = rs->rs_point.rp_id;
	rs->rs_piece.blocks = rs->rs_point.rp_blocks;
	se->se_restore = rs;
	se->se_state = SESSION_INDEX;
	restore_index_more(se);
}

/* The write callback in SESSION_INDEX: more pieces, or the end. */
void
restore_index_more(struct session *se)
{
	struct restore	*rs = se->se_restore;

	if (se->se_state != SESSION_INDEX ||
	    session_send_pieces(se, &rs->rs_piece, &rs->rs_point,
	    &rs->rs_piece_next) != 1)
		return;
	se->se_state = SESSION_IDLE;
	restore_release(se);		/* frees rs */
}

/*
 * A RestoreRequest's point, opened in the pool: the open reads and
 * checks the whole index (32 bytes a block), a resume counts the blocks
 * with data from `from` on, and an at-rest point's data keys come from
 * the KMS; work the loop that serves every session must not do.  The
 * session reads nothing meanwhile.
 */
struct ropen_job {
	struct pool_job		 ro_job;
	struct session		*ro_session;
	struct restore		*ro_restore;
	struct repo		*ro_repo;
	const struct tenant	*ro_tenant;
	char			 ro_name[NAME_MAX_LEN + 1];
	char			 ro_id[sizeof(((struct repo_point *)0)->rp_id)];
	int			 ro_index;	/* RestoreRequest.index */
	uint64_t		 ro_from;
	/* results */
	int			 ro_errno;	/* the open's; 0: opened */
	int			 ro_count_errno;	/* reading it after */
	uint64_t		 ro_count_at;	/* ... at this block */
	int			 ro_misfit;	/* resume does not fit */
	int			 ro_no_keys;	/* at rest: a key missing */
	char			 ro_key_err[2 * KEY_ERR_MAX];
	char			 ro_not_found[512];	/* what there is */
};

/*
 * The blocks with data of p from block from on, read a window at a
 * time, and whether each of the n blocks in resend has data: 0, or -1
 * with errno and *at the block that could not be read.
 */
static int
restore_count(struct repo_point *p, uint64_t from, const uint64_t *resend,
    size_t n, uint64_t *count, int *misfit, uint64_t *at)
{
	const uint8_t	*ids;
	uint64_t	 i, m, k;
	size_t		 j;

	*count = 0;
	*misfit = 0;
	for (j = 0; j < n; j++) {
		if ((ids = repo_point_ids(p, resend[j], 1)) == NULL) {
			*at = resend[j];
			return -1;
		}
		if (memcmp(ids, zero_id, CHUNK_ID_LEN) == 0)
			*misfit = 1;
	}
	if (from == 0) {	/* what the open checked the index for */
		*count = p->rp_blocks - p->rp_zero_blocks;
		return 0;
	}
	for (i = from; i < p->rp_blocks; i += m) {
		m = INDEX_WINDOW_IDS - i % INDEX_WINDOW_IDS;
		if (m > p->rp_blocks - i)
			m = p->rp_blocks - i;
		if ((ids = repo_point_ids(p, i, m)) == NULL) {
			*at = i;
			return -1;
		}
		for (k = 0; k < m; k++)
			*count += memcmp(ids + k * CHUNK_ID_LEN, zero_id,
			    CHUNK_ID_LEN) != 0;
	}
	return 0;
}

/*
 * Explains a restore of something that does not exist into why,
 * naming what does, so the user can correct the command.  Worker: it
 * reads every manifest of the tenant.
 */
static void
restore_not_found(struct repo *r, const char *tenant, const char *name,
    const char *id, char *why, size_t whylen)
{
	struct repo_point	*points = NULL;
	char			 have[400];
	size_t			 n = 0, i, off = 0;
	int			 named = 0;

	have[0] = '\0';
	(void)repo_list_keys(r, tenant, NULL, &repo_keys_none, &points, &n);
	for (i = 0; i < n && off < sizeof(have) - 1; i++) {
		if (strcmp(points[i].rp_name, name) == 0)
			named = 1;
		if (id[0] && strcmp(points[i].rp_name, name) == 0)
			off += snprintf(have + off, sizeof(have) - off, "%s%s",
			    off ? ", " : "", points[i].rp_id);
		else if (!id[0] && (i == 0 || strcmp(points[i].rp_name,
		    points[i - 1].rp_name) != 0))
			off += snprintf(have + off, sizeof(have) - off, "%s%s",
			    off ? ", " : "", points[i].rp_name);
	}
	if (id[0] && named)
		snprintf(why, whylen, "backup '%s' has no restore point "
		    "'%s'%s; its restore points: %s", name, id,
		    repo_point_was_pruned(r, tenant, name, id) ?
		    " (it was pruned)" : "", have);
	else
		snprintf(why, whylen, "no backup named '%s' in this tenant; "
		    "existing backups: %s", name, have[0] ? have : "none");
	repo_points_free(points, n);
}

/* Worker: opens the point, then counts what a resume has to send. */
static void
ropen_work(struct pool_job *pj)
{
	struct ropen_job *ro = (struct ropen_job *)pj;
	struct restore	*rs = ro->ro_restore;

	if (repo_point_open_windowed(ro->ro_repo, ro->ro_tenant->tn_name,
	    ro->ro_name, ro->ro_id[0] ? ro->ro_id : NULL, &rs->rs_point,
	    1) == -1) {
		ro->ro_errno = errno != 0 ? errno : EIO;
		if (ro->ro_errno == ENOENT || ro->ro_errno == EINVAL)
			restore_not_found(ro->ro_repo, ro->ro_tenant->tn_name,
			    ro->ro_name, ro->ro_id, ro->ro_not_found,
			    sizeof(ro->ro_not_found));
		return;
	}
	if (ro->ro_index)
		return;
	if (ro->ro_from > rs->rs_point.rp_blocks) {
		ro->ro_misfit = 1;
		return;
	}
	if (restore_count(&rs->rs_point, ro->ro_from, rs->rs_resend,
	    rs->rs_nresend, &rs->rs_blocks, &ro->ro_misfit,
	    &ro->ro_count_at) == -1) {
		ro->ro_count_errno = errno != 0 ? errno : EIO;
		return;
	}
	rs->rs_blocks += rs->rs_nresend;
	/* At rest: every key the point needs, before anything is sent. */
	if (!ro->ro_misfit && rs->rs_blocks > 0 && rs->rs_point.rp_mode ==
	    ENCRYPTION_MODE__ENCRYPTION_AT_REST && (rs->rs_keys =
	    atrest_restore_keys(ro->ro_tenant, &rs->rs_point, ro->ro_key_err,
	    sizeof(ro->ro_key_err))) == NULL)
		ro->ro_no_keys = 1;
}

/* Loop: the point is open (or not); the restore starts or fails. */
static void
ropen_done(struct pool_job *pj)
{
	struct ropen_job *ro = (struct ropen_job *)pj;
	struct session	*se = ro->ro_session;
	struct restore	*rs = ro->ro_restore;

	if (se->se_state == SESSION_CLOSING)
		goto fail;
	if (ro->ro_errno != 0) {
		if (ro->ro_errno == ENOENT || ro->ro_errno == EINVAL)
			session_fail(se, ERROR__CODE__NOT_FOUND, "%s",
			    ro->ro_not_found);
		else
			session_fail(se, session_errno_code(ro->ro_errno),
			    "cannot open restore point %s/%s: %s", ro->ro_name,
			    ro->ro_id[0] ? ro->ro_id : "(newest)",
			    strerror(ro->ro_errno));
		goto fail;
	}
	if (ro->ro_index) {
		restore_send_index(se, rs);	/* frees rs if it fails */
		goto out;
	}
	if (ro->ro_count_errno != 0) {
		session_fail(se, session_errno_code(ro->ro_count_errno),
		    "restore of %s/%s: cannot read its index at block %llu: %s",
		    rs->rs_point.rp_name, rs->rs_point.rp_id,
		    (unsigned long long)ro->ro_count_at,
		    repo_point_ids_error(ro->ro_count_errno));
		goto fail;
	}
	if (ro->ro_misfit) {
		session_fail(se, ERROR__CODE__PROTOCOL, "restore of %s/%s: "
		    "resume from block %llu with %zu block(s) to send again "
		    "does not fit the point", rs->rs_point.rp_name,
		    rs->rs_point.rp_id, (unsigned long long)ro->ro_from,
		    rs->rs_nresend);
		goto fail;
	}
	rs->rs_next = ro->ro_from;
	snprintf(rs->rs_jc.jc_what, sizeof(rs->rs_jc.jc_what), "restore of "
	    "%s/%s", rs->rs_point.rp_name, rs->rs_point.rp_id);
	restore_conn_start(se);
	se->se_restore = rs;
	se->se_state = SESSION_RESTORE;
	jobconn_count_start(&rs->rs_jc, "restore");
	if (ro->ro_no_keys) {
		session_fail(se, ERROR__CODE__KEY, "at-rest key of tenant "
		    "%s unavailable: %s; restore point %s/%s was not sent",
		    ro->ro_tenant->tn_name, ro->ro_key_err,
		    rs->rs_point.rp_name, rs->rs_point.rp_id);
		goto out;
	}
	if (ro->ro_from > 0 || rs->rs_nresend > 0)
		session_log(se, "restore of %s/%s resumed at block %llu, %zu "
		    "earlier block(s) sent again", rs->rs_point.rp_name,
		    rs->rs_point.rp_id, (unsigned long long)ro->ro_from,
		    rs->rs_nresend);
	restore_announce(se);
	goto out;
 fail:
	restore_free(rs);
 out:
	free(ro);
	session_wait_end(se);
	session_job_done(se, 0);	/* reading resumes */
}

/*
 * RestoreRequest: checks what it can without the point, then opens the
 * point in the pool (ropen_job).  0, or -1 after failing the session.
 */
int
restore_begin(struct session *se, const RestoreRequest *rr)
{
	struct restore	*rs = NULL;
	struct ropen_job *ro = NULL;
	size_t		 i, n;

	if (!name_is_valid(rr->name)) {
		session_fail(se, ERROR__CODE__NOT_FOUND, "'%.64s' is not a "
		    "valid backup name", rr->name);
		return -1;
	}
	if (strlen(rr->point_id) >= sizeof(ro->ro_id)) {
		session_fail(se, ERROR__CODE__NOT_FOUND, "'%.64s...' is not a "
		    "valid restore point id", rr->point_id);
		return -1;
	}
	if (!rr->index && (rr->n_resend > RESTORE_RESEND_MAX ||
	    (rr->verify && (rr->from > 0 || rr->n_resend > 0)))) {
		session_fail(se, ERROR__CODE__PROTOCOL, "restore of '%s': "
		    "resume from block %llu with %zu block(s) to send again "
		    "%s", rr->name, (unsigned long long)rr->from, rr->n_resend,
		    rr->verify ? "in a verify" : "is too many");
		return -1;
	}
	for (i = 0; !rr->index && i < rr->n_resend; i++)
		if (rr->resend[i] >= rr->from || (i > 0 && rr->resend[i] <=
		    rr->resend[i - 1])) {
			session_fail(se, ERROR__CODE__PROTOCOL, "restore of "
			    "'%s': block %llu to send again is not below %llu "
			    "or not ascending", rr->name,
			    (unsigned long long)rr->resend[i],
			    (unsigned long long)rr->from);
			return -1;
		}
	n = rr->index ? 0 : rr->n_resend;
	if ((rs = calloc(1, sizeof(*rs))) == NULL ||
	    (ro = calloc(1, sizeof(*ro))) == NULL || (n > 0 &&
	    (rs->rs_resend = calloc(n, sizeof(*rs->rs_resend))) == NULL)) {
		if (rs != NULL)
			free(rs->rs_resend);
		free(rs);
		free(ro);
		session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
		return -1;
	}
	jobconn_init(&rs->rs_jc, se, rr->connections);
	rs->rs_verify = rr->verify;
	if (n > 0)
		memcpy(rs->rs_resend, rr->resend, n * sizeof(*rs->rs_resend));
	rs->rs_nresend = n;
	ro->ro_job.pj_work = ropen_work;
	ro->ro_job.pj_done = ropen_done;
	ro->ro_session = se;
	ro->ro_restore = rs;
	ro->ro_repo = se->se_target->tg_repo;
	ro->ro_tenant = se->se_tenant;
	snprintf(ro->ro_name, sizeof(ro->ro_name), "%s", rr->name);
	snprintf(ro->ro_id, sizeof(ro->ro_id), "%s", rr->point_id);
	ro->ro_index = rr->index;
	ro->ro_from = rr->from;
	session_submit(se, &ro->ro_job);
	return 0;
}

/* Credit: the source wrote this many more bytes of this connection's. */
int
restore_credit(struct session *se, const Credit *c)
{
	if (c->bytes > (uint64_t)BLOCK_SIZE_MAX * 1024 ||
	    se->se_credit + c->bytes < se->se_credit) {
		session_fail(se, ERROR__CODE__PROTOCOL, "credit of %llu bytes "
		    "is out of range", (unsigned long long)c->bytes);
		return -1;
	}
	se->se_credit += c->bytes;
	restore_pump(se);
	return 0;
}

/*
 * JoinJob (session_join): this connection takes part of the restore
 * whose token (JOB_TOKEN_LEN bytes) it names, before that restore
 * streams.  1 if it joined, 0 if no such restore takes it.
 */
int
restore_join(struct session *se, const uint8_t *token)
{
	struct session	*owner;
	struct restore	*rs;

	TAILQ_FOREACH(owner, &se->se_target->tg_sessions, se_entry) {
		rs = owner->se_restore;
		if (rs != NULL && owner->se_state == SESSION_RESTORE &&
		    rs->rs_waiting &&
		    jobconn_may_join(&rs->rs_jc, owner, se, token) &&
		    !(rs->rs_told && rs->rs_jc.jc_count >= rs->rs_joined_told))
			break;
	}
	if (owner == NULL)
		return 0;
	se->se_restore = rs;
	se->se_state = SESSION_RESTORE;
	restore_conn_start(se);
	jobconn_join(&rs->rs_jc, se);
	restore_joins_done(rs);
	return 1;
}

/*
 * Joined, on the restore's first connection: this many joins are on
 * their way; the blocks go out once all of them are in.  0, or -1 if
 * the session closed.
 */
int
restore_joined(struct session *se, const Joined *j)
{
	struct restore	*rs = se->se_restore;

	if (se != rs->rs_jc.jc_first || !rs->rs_waiting || rs->rs_told ||
	    j->connections < rs->rs_jc.jc_count ||
	    j->connections >= rs->rs_jc.jc_asked) {
		session_fail(se, ERROR__CODE__PROTOCOL, "restore of %s/%s: "
		    "Joined of %u connections does not fit (%u joined, %u "
		    "asked for)", rs->rs_point.rp_name, rs->rs_point.rp_id,
		    j->connections, rs->rs_jc.jc_count, rs->rs_jc.jc_asked);
		return -1;
	}
	rs->rs_told = 1;
	rs->rs_joined_told = j->connections;
	restore_joins_done(rs);
	return se->se_state == SESSION_RESTORE ? 0 : -1;
}

/* Worker: read the chunk, check it, seal it for the wire. */
static void
read_work(struct pool_job *pj)
{
	struct read_job		*rj = (struct read_job *)pj;
	struct repo_chunk	 rc;
	Block			 b = BLOCK__INIT;
	uint8_t			 aad[AAD_MAX_LEN], nonce[AEAD_NONCE_LEN];
	uint8_t			*sealed, *opened = NULL;
	const uint8_t		*data;
	size_t			 aadlen, len;
	int			 sealed_here;

	memset(&rc, 0, sizeof(rc));
	if (repo_chunk_read(rj->rj_repo, rj->rj_tenant, rj->rj_id,
	    &rc) == -1) {
		rj->rj_errno = errno;
		goto out;
	}
	if (rc.rc_raw_len != rj->rj_want) {
		rj->rj_errno = EBADMSG;
		snprintf(rj->rj_msg, sizeof(rj->rj_msg), "holds %u bytes, "
		    "not %u", rc.rc_raw_len, rj->rj_want);
		goto out;
	}
	/* Sealed chunks belong to sealed points, plaintext to in-flight. */
	sealed_here = rj->rj_mode == ENCRYPTION_MODE__ENCRYPTION_AT_REST;
	if (((rc.rc_flags & CHUNK_ENCRYPTED) != 0) != (sealed_here ||
	    rj->rj_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE)) {
		rj->rj_errno = EBADMSG;
		snprintf(rj->rj_msg, sizeof(rj->rj_msg), "is %s, but the "
		    "point is %s", rc.rc_flags & CHUNK_ENCRYPTED ?
		    "encrypted" : "not encrypted", sealed_here ? "at-rest" :
		    rj->rj_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE ?
		    "source-side" : "in-flight");
		goto out;
	}
	data = rc.rc_data;
	len = rc.rc_len;
	if (sealed_here) {
		if ((opened = malloc(rc.rc_len)) == NULL) {
			rj->rj_errno = ENOMEM;
			goto out;
		}
		if (atrest_open(rj->rj_keys, rj->rj_id, rc.rc_data, rc.rc_len,
		    opened, rj->rj_msg, sizeof(rj->rj_msg)) == -1) {
			rj->rj_errno = errno;
			goto out;
		}
		data = opened;
		len = rc.rc_len - SEALED_OVERHEAD;
	}
	crypto_nonce(nonce, AAD_BLOCK_TO_SOURCE, rj->rj_nonce);
	aadlen = crypto_aad(aad, AAD_BLOCK_TO_SOURCE, NULL, rj->rj_id,
	    rj->rj_index);
	b.index = rj->rj_index;
	b.chunk_id.data = rj->rj_id;
	b.chunk_id.len = CHUNK_ID_LEN;
	b.raw_len = rc.rc_raw_len;
	b.compressed = (rc.rc_flags & CHUNK_COMPRESSED) != 0;
	b.encrypted = rj->rj_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE;
	b.nonce.data = nonce;
	b.nonce.len = sizeof(nonce);
	/* Sealed straight into the frame: no copy of the payload. */
	if ((rj->rj_frame = frame_pack_block(&b, len + AEAD_TAG_LEN, &sealed,
	    &rj->rj_len)) == NULL) {
		rj->rj_errno = ENOMEM;
		goto out;
	}
	if (crypto_seal(rj->rj_key, nonce, aad, aadlen, data, len,
	    sealed) == -1) {
		free(rj->rj_frame);
		rj->rj_frame = NULL;
		rj->rj_errno = EIO;
		goto out;
	}
 out:
	free(opened);
	repo_chunk_clear(&rc);
	crypto_wipe(rj->rj_key, sizeof(rj->rj_key));
}

static void
read_done(struct pool_job *pj)
{
	struct read_job	*rj = (struct read_job *)pj;
	struct restore	*rs = rj->rj_restore;
	struct session	*se = rj->rj_session;
	char		 hex[2 * CHUNK_ID_LEN + 1];

	rs->rs_jobs--;
	se->se_reserved -= rs->rs_point.rp_block_size;
	if (se->se_state != SESSION_RESTORE || rs->rs_jc.jc_failed)
		goto out;
	if (rj->rj_errno == ENOKEY) {
		hex_encode(rj->rj_id, CHUNK_ID_LEN, hex);
		session_fail(se, ERROR__CODE__KEY, "at-rest key of tenant "
		    "%s unavailable: restore point %s/%s: block %llu: chunk "
		    "%.16s... %s", se->se_tenant->tn_name,
		    rs->rs_point.rp_name, rs->rs_point.rp_id,
		    (unsigned long long)rj->rj_index, hex, rj->rj_msg);
		goto out;
	}
	if (rj->rj_errno != 0 && rs->rs_verify && rj->rj_errno != ENOMEM) {
		/* Verify: name the damage (on the first) and go on. */
		Frame	 f = FRAME__INIT;
		Damage	 d = DAMAGE__INIT;
		char	 msg[512];

		hex_encode(rj->rj_id, CHUNK_ID_LEN, hex);
		snprintf(msg, sizeof(msg), "chunk %.16s... %s", hex,
		    rj->rj_msg[0] ? rj->rj_msg : rj->rj_errno == ENOENT ?
		    "is missing" : strerror(rj->rj_errno));
		d.index = rj->rj_index;
		d.message = msg;
		f.msg_case = FRAME__MSG_DAMAGE;
		f.damage = &d;
		session_send(rs->rs_jc.jc_first, &f);
		rs->rs_damaged++;
		session_log(se, "verify of %s/%s: block %llu: %s",
		    rs->rs_point.rp_name, rs->rs_point.rp_id,
		    (unsigned long long)rj->rj_index, msg);
		goto out;
	}
	if (rj->rj_errno != 0) {
		hex_encode(rj->rj_id, CHUNK_ID_LEN, hex);
		session_fail(se, rj->rj_errno == ENOMEM ?
		    ERROR__CODE__INTERNAL : rj->rj_errno == EIO ?
		    ERROR__CODE__STORAGE_IO : ERROR__CODE__INTEGRITY,
		    "restore point %s/%s: block %llu (offset %llu) is "
		    "damaged: chunk %.16s... %s", rs->rs_point.rp_name,
		    rs->rs_point.rp_id, (unsigned long long)rj->rj_index,
		    (unsigned long long)rj->rj_index *
		    rs->rs_point.rp_block_size, hex, rj->rj_msg[0] ?
		    rj->rj_msg : rj->rj_errno == ENOENT ? "is missing" :
		    strerror(rj->rj_errno));
		goto out;
	}
	if (frame_queue(bufferevent_get_output(se->se_bev), rj->rj_frame,
	    rj->rj_len) == -1) {
		session_close(se, "cannot queue a block");
		goto out;
	}
	rj->rj_frame = NULL;
	rs->rs_sent++;
	se->se_out_blocks++;
	se->se_out_bytes += rj->rj_len;
	tls_count_sent(se->se_ssl, &se->se_tls_sent, rj->rj_len);
 out:
	free(rj->rj_frame);
	free(rj);
	session_job_done(se, 1);
}

/*
 * The next block to send for se (a resume's first), skipping zero
 * blocks: 1 and its chunk id in id, 0 if none is left, -1 after failing
 * se.
 */
static int
restore_next_block(struct session *se, struct restore *rs, uint64_t *index,
    uint8_t id[CHUNK_ID_LEN])
{
	const uint8_t	*p;
	int		 resend;

	for (;;) {
		resend = rs->rs_resend_pos < rs->rs_nresend;
		if (resend)
			*index = rs->rs_resend[rs->rs_resend_pos];
		else if (rs->rs_next < rs->rs_point.rp_blocks)
			*index = rs->rs_next;
		else
			return 0;
		if ((p = restore_id(se, rs, *index)) == NULL)
			return -1;
		if (resend || memcmp(p, zero_id, CHUNK_ID_LEN) != 0) {
			memcpy(id, p, CHUNK_ID_LEN);
			return 1;
		}
		rs->rs_next++;
	}
}

/*
 * Starts reads for connection se while it has credit, its socket is
 * not backed up and it has job slots.  0, or -1 if the session failed.
 */
static int
restore_fill(struct restore *rs, struct session *se)
{
	struct evbuffer	*out = bufferevent_get_output(se->se_bev);
	struct read_job	*rj;
	uint8_t		 id[CHUNK_ID_LEN];
	uint64_t	 index;
	uint32_t	 bs = rs->rs_point.rp_block_size;
	int		 more;

	while ((more = restore_next_block(se, rs, &index, id)) == 1) {
		if (se->se_out_bytes + se->se_reserved + bs > se->se_credit ||
		    evbuffer_get_length(out) > RESTORE_OUT_MAX ||
		    !session_job_slot(se))
			return 0;
		if ((rj = calloc(1, sizeof(*rj))) == NULL) {
			session_fail(se, ERROR__CODE__INTERNAL, "out of memory");
			session_job_done(se, 1);
			return -1;
		}
		rj->rj_job.pj_work = read_work;
		rj->rj_job.pj_done = read_done;
		rj->rj_restore = rs;
		rj->rj_session = se;
		rj->rj_repo = se->se_target->tg_repo;
		snprintf(rj->rj_tenant, sizeof(rj->rj_tenant), "%s",
		    se->se_tenant->tn_name);
		rj->rj_index = index;
		memcpy(rj->rj_id, id, CHUNK_ID_LEN);
		/* Sealed under the key of the connection it goes on. */
		memcpy(rj->rj_key, se->se_key_out, AEAD_KEY_LEN);
		rj->rj_nonce = se->se_nonce_out++;
		rj->rj_mode = rs->rs_point.rp_mode;
		rj->rj_keys = rs->rs_keys;
		rj->rj_want = (uint32_t)((index + 1) * bs >
		    rs->rs_point.rp_disk_size ? rs->rs_point.rp_disk_size -
		    index * bs : bs);
		if (rs->rs_resend_pos < rs->rs_nresend)
			rs->rs_resend_pos++;
		else
			rs->rs_next++;
		rs->rs_jobs++;
		se->se_reserved += bs;
		pool_submit(se->se_target->tg_pool, &rj->rj_job);
	}
	return more == -1 ? -1 : 0;
}

/*
 * Every block is out: RestoreEnd on each joined connection (what it
 * carried), then on the first (all of it); each is idle again.
 */
static void
restore_end(struct restore *rs)
{
	struct session	*se = rs->rs_jc.jc_first, *other;
	Frame		 f = FRAME__INIT;
	RestoreEnd	 re = RESTORE_END__INIT;

	session_log(se, "restore of %s/%s sent: %llu blocks%s",
	    rs->rs_point.rp_name, rs->rs_point.rp_id,
	    (unsigned long long)rs->rs_sent, rs->rs_jc.jc_count > 0 ?
	    " on several connections" : "");
	f.msg_case = FRAME__MSG_RESTORE_END;
	f.restore_end = &re;
	while ((other = TAILQ_FIRST(&rs->rs_jc.jc_joined)) != NULL) {
		re.blocks_sent = other->se_out_blocks;
		if (other->se_state == SESSION_RESTORE) {
			other->se_state = SESSION_IDLE;
			session_send(other, &f);
		}
		restore_release(other);
	}
	re.blocks_sent = rs->rs_sent;
	re.damaged = rs->rs_damaged;
	re.joined = rs->rs_jc.jc_count;
	jobconn_count_end(&rs->rs_jc, 1);
	se->se_state = SESSION_IDLE;
	restore_release(se);		/* frees rs */
	session_send(se, &f);
}

/*
 * Starts reads on every connection of se's restore while they allow;
 * ends the restore when all blocks are out.
 */
void
restore_pump(struct session *se)
{
	struct restore	*rs = se->se_restore;
	struct session	*c;
	uint8_t		 id[CHUNK_ID_LEN];
	uint64_t	 index;

	if (se->se_state != SESSION_RESTORE || rs->rs_waiting ||
	    rs->rs_jc.jc_failed)
		return;
	for (c = jobconn_next(&rs->rs_jc, NULL); c != NULL;
	    c = jobconn_next(&rs->rs_jc, c))
		if (c->se_state == SESSION_RESTORE &&
		    restore_fill(rs, c) == -1)
			return;
	if (rs->rs_jobs > 0 || restore_next_block(se, rs, &index, id) != 0)
		return;
	restore_end(rs);
}

/* se is closing (why: msg) during a restore: see jobconn_abort. */
void
restore_abort(struct session *se, const char *msg)
{
	jobconn_abort(&se->se_restore->rs_jc, se, msg);
}

/* se no longer takes part in its restore; the last one frees it. */
void
restore_release(struct session *se)
{
	struct restore	*rs = se->se_restore;

	if (rs == NULL)
		return;
	se->se_restore = NULL;
	if (jobconn_leave(&rs->rs_jc, se))
		restore_free(rs);
}

static void
restore_free(struct restore *rs)
{
	if (rs == NULL)
		return;
	jobconn_count_end(&rs->rs_jc, 0);	/* unless it ended */
	repo_point_clear(&rs->rs_point);
	atrest_keys_free(rs->rs_keys);
	free(rs->rs_resend);
	free(rs);
}
