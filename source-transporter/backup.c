/*
 * backup.c: the backup command.  The event loop hands block numbers to
 * the worker pool; a worker reads the block, skips it if it is zero,
 * hashes, compresses and seals it and packs its frame; the loop queues
 * finished frames on the socket.  Reads stop while the unacknowledged
 * bytes exceed the window or the socket is backed up, so memory stays
 * bounded whatever the disk size.
 *
 * With `connections` above 1 the target gives the job a token, and that
 * many connections in all carry its blocks: each block is sealed for
 * and queued on the connection with the least queued when it is handed
 * out, and the window counts the unacknowledged bytes of all of them.
 */
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <linux/fs.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "metrics.h"
#include "source.h"

struct backup;

/* One connection carrying the job's blocks; the first also the rest. */
struct backup_conn {
	struct backup	*bc_backup;
	struct client	*bc_client;
	int		 bc_joined;	/* may carry blocks (JoinJob sent) */
	int		 bc_jobs;	/* blocks in the pool bound for it */
	uint64_t	 bc_blocks;	/* Block frames queued on it */
	uint64_t	 bc_sent;	/* frame bytes queued on it */
	uint64_t	 bc_acked;	/* ... and acknowledged */
};

struct backup {
	struct client	*bk_client;	/* the first connection */
	struct backup_conn bk_conns[JOB_CONNECTIONS_MAX];
	int		 bk_nconns;
	uint8_t		 bk_token[JOB_TOKEN_LEN];	/* to join the job */
	struct source_conf *bk_conf;
	const char	*bk_disk;
	const char	*bk_name;
	struct disk	*bk_dk;
	struct disk_opts bk_dopts;
	uint8_t		*bk_dirty;	/* changed-block map, or NULL */
	uint64_t	 bk_dirty_skipped;	/* clean blocks not read */
	uint64_t	 bk_disk_size;
	uint32_t	 bk_block_size;
	uint64_t	 bk_blocks;
	uint64_t	 bk_next;	/* next block to hand out */
	uint64_t	 bk_data_end;	/* end of the known data extent */
	int		 bk_jobs;
	int		 bk_max_jobs;
	int		 bk_ended;	/* BackupEnd sent */
	int		 bk_full;	/* --full: no base */
	int		 bk_base_wait;	/* waiting for the base index */
	int		 bk_resumed;	/* the base holds an interrupted job */
	int		 bk_attempts;
	char		 bk_base_id[64];
	char		 bk_base_bitmap[NAME_MAX_LEN + 1];
	struct id_map	 bk_base;	/* base chunk ids (idmap.c), if any */
	uint64_t	 bk_base_blocks;
	uint64_t	 bk_base_got;
	uint64_t	*bk_unchanged;	/* pending Unchanged entries */
	size_t		 bk_nunchanged;
	uint64_t	 bk_blocks_unchanged;
	/* figures */
	uint64_t	 bk_bytes_read;
	uint64_t	 bk_blocks_sent;
	uint64_t	 bk_zero_blocks;
	uint64_t	 bk_hole_blocks;
	uint64_t	 bk_bytes_sent;	/* frame bytes queued */
	uint64_t	 bk_bytes_acked;
	uint64_t	 bk_start_ms;
	int		 bk_json;
	int		 bk_check;	/* roundtrip_check */
	int		 bk_accept_rollback;
	struct state_entry bk_known;	/* the newest point we committed */
	int		 bk_has_known;
	uint32_t	 bk_mode;	/* EncryptionMode */
	struct progress	 bk_progress;
	struct envelope	 bk_env;	/* source-side keys */
};

struct read_job {
	struct pool_job	 rj_job;
	struct backup	*rj_backup;
	struct backup_conn *rj_conn;	/* sealed for and sent on */
	uint64_t	 rj_index;
	uint64_t	 rj_nonce;
	uint8_t		 rj_key[AEAD_KEY_LEN];
	int		 rj_level;
	/* results */
	int		 rj_errno;
	int		 rj_zero;
	int		 rj_unchanged;	/* same chunk id as in the base */
	int		 rj_check_failed;	/* failed its round-trip check */
	uint32_t	 rj_read;
	size_t		 rj_zstd_len;	/* its zstd frame, or rj_read if raw */
	uint8_t		*rj_frame;
	size_t		 rj_len;
};

#define UNCHANGED_MAX	8192	/* block numbers per Unchanged frame */
#define DIRTY_SPOT_CHECKS 16	/* clean blocks read to test a bitmap */

static void	backup_pump(struct backup *);

/* Whether this job is incremental: the base point's ids arrived. */
static int
backup_has_base(const struct backup *bk)
{
	return bk->bk_base.im_ids != NULL;
}
static void	backup_connect_more(struct backup *, const BaseIndex *);

/* Sends the pending unchanged block numbers in one frame. */
static void
backup_flush_unchanged(struct backup *bk)
{
	Frame		 f = FRAME__INIT;
	Unchanged	 u = UNCHANGED__INIT;
	size_t		 len;

	if (bk->bk_nunchanged == 0)
		return;
	u.n_blocks = bk->bk_nunchanged;
	u.blocks = bk->bk_unchanged;
	f.msg_case = FRAME__MSG_UNCHANGED;
	f.unchanged = &u;
	/* Counted in the window like blocks: the target acks its bytes. */
	len = frame__get_packed_size(&f) + FRAME_HDR_LEN;
	client_send(bk->bk_client, &f);
	bk->bk_bytes_sent += len;
	bk->bk_conns[0].bc_sent += len;
	bk->bk_nunchanged = 0;
}

/*
 * The round-trip check of a block about to leave: what the target will
 * store must give back the block read.  In-flight: the zstd frame
 * decompresses to raw.  Source-side: the chunk sealed under the data
 * key opens (into comp, whose plaintext it is) and then decompresses to
 * raw; this also covers the seal, which nobody can check until a restore.
 * check holds len bytes.  Returns 0, or -1 if the block must not be sent.
 */
static int
read_check(struct backup *bk, const uint8_t *inner, const uint8_t *aad,
    size_t aadlen, uint8_t *comp, size_t clen, const uint8_t *raw,
    size_t len, uint8_t *check)
{
	size_t	 plen = clen > 0 ? clen : len;

	if (inner != NULL) {
		if (crypto_open(bk->bk_env.ev_dek.kb_key, inner + KEY_ID_LEN,
		    aad, aadlen, inner + KEY_ID_LEN + AEAD_NONCE_LEN,
		    plen + AEAD_TAG_LEN, clen > 0 ? comp : check) == -1)
			return -1;
		if (clen == 0)
			return memcmp(check, raw, len) == 0 ? 0 : -1;
	}
	if (clen == 0)
		return 0;
	return compress_verify(comp, clen, raw, len, check);
}

/*
 * Worker: read, zero check, hash, compress, check, seal, pack.  The
 * frame is packed first and the block sealed straight into it (in place
 * for the in-flight layer), so the payload is written once.
 */
static void
read_work(struct pool_job *pj)
{
	struct read_job	*rj = (struct read_job *)pj;
	struct backup	*bk = rj->rj_backup;
	Block		 b = BLOCK__INIT;
	uint8_t		 id[CHUNK_ID_LEN], nonce[AEAD_NONCE_LEN];
	uint8_t		 aad[AAD_MAX_LEN], inner_aad[AAD_MAX_LEN];
	uint8_t		*raw = NULL, *comp = NULL, *check = NULL;
	uint8_t		*payload, *inner = NULL;
	const uint8_t	*plain;
	uint64_t	 off = rj->rj_index * bk->bk_block_size;
	size_t		 len, plen, slen, aadlen, inner_aadlen = 0, cap;
	ssize_t		 clen;
	int		 source_side = bk->bk_mode ==
			    ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE;

	len = bk->bk_disk_size - off < bk->bk_block_size ?
	    (size_t)(bk->bk_disk_size - off) : bk->bk_block_size;
	cap = compress_bound(len);
	/* Aligned, so that direct_io can read into it. */
	if (posix_memalign((void **)&raw, DISK_DIRECT_ALIGN, len) != 0)
		raw = NULL;
	if (raw == NULL || (comp = malloc(cap)) == NULL ||
	    (bk->bk_check && (check = malloc(len)) == NULL)) {
		rj->rj_errno = ENOMEM;
		goto out;
	}
	if (disk_read(bk->bk_dk, raw, len, off) == -1) {
		rj->rj_errno = errno;
		goto out;
	}
	rj->rj_read = (uint32_t)len;
	if (buf_is_zero(raw, len)) {
		rj->rj_zero = 1;
		goto out;
	}
	if (!source_side)
		crypto_sha256(raw, len, id);
	else if (chunk_id_keyed(&bk->bk_env.ev_chunk_key, raw, len, id) == -1) {
		rj->rj_errno = EIO;
		goto out;
	}
	if (backup_has_base(bk) && rj->rj_index < bk->bk_base_blocks &&
	    memcmp(id_map_get(&bk->bk_base, rj->rj_index), id,
	    CHUNK_ID_LEN) == 0) {
		rj->rj_unchanged = 1;
		goto out;
	}
	if ((clen = compress_block(rj->rj_level, raw, len, comp, cap)) < 0) {
		rj->rj_errno = EIO;
		goto out;
	}
	plain = clen > 0 ? comp : raw;
	plen = clen > 0 ? (size_t)clen : len;
	rj->rj_zstd_len = plen;
	slen = plen + (source_side ? SEALED_OVERHEAD : 0);

	crypto_nonce(nonce, AAD_BLOCK_TO_TARGET, rj->rj_nonce);
	aadlen = crypto_aad(aad, AAD_BLOCK_TO_TARGET, NULL, id, rj->rj_index);
	b.index = rj->rj_index;
	b.chunk_id.data = id;
	b.chunk_id.len = sizeof(id);
	b.raw_len = (uint32_t)len;
	b.compressed = clen > 0;
	b.encrypted = source_side;
	b.nonce.data = nonce;
	b.nonce.len = sizeof(nonce);
	if ((rj->rj_frame = frame_pack_block(&b, slen + AEAD_TAG_LEN,
	    &payload, &rj->rj_len)) == NULL) {
		rj->rj_errno = ENOMEM;
		goto out;
	}
	if (source_side) {
		/*
		 * Sealed under the point's data key before it leaves:
		 * key id | nonce | ciphertext | tag.  The block index is a
		 * unique nonce counter: each DEK seals one job's blocks.
		 */
		inner = payload;
		memcpy(inner, bk->bk_env.ev_dek_id, KEY_ID_LEN);
		crypto_nonce(inner + KEY_ID_LEN, AAD_CHUNK_STORED,
		    rj->rj_index);
		inner_aadlen = crypto_aad(inner_aad, AAD_CHUNK_STORED,
		    bk->bk_env.ev_dek_id, id, 0);
		if (crypto_seal(bk->bk_env.ev_dek.kb_key, inner + KEY_ID_LEN,
		    inner_aad, inner_aadlen, plain, plen, inner + KEY_ID_LEN +
		    AEAD_NONCE_LEN) == -1) {
			rj->rj_errno = EIO;
			goto out;
		}
		plain = payload;	/* the in-flight layer goes on in place */
	}
	if (bk->bk_check && read_check(bk, inner, inner_aad, inner_aadlen,
	    comp, (size_t)clen, raw, len, check) == -1) {
		rj->rj_check_failed = 1;
		goto out;
	}
	if (crypto_seal(rj->rj_key, nonce, aad, aadlen, plain, slen,
	    payload) == -1)
		rj->rj_errno = EIO;
 out:
	if (rj->rj_errno != 0 || rj->rj_check_failed) {
		free(rj->rj_frame);
		rj->rj_frame = NULL;
	}
	free(raw);
	free(comp);
	free(check);
	crypto_wipe(rj->rj_key, sizeof(rj->rj_key));
}

static void
read_done(struct pool_job *pj)
{
	struct read_job	*rj = (struct read_job *)pj;
	struct backup	*bk = rj->rj_backup;
	struct client	*cl = bk->bk_client;
	struct client	*out = rj->rj_conn->bc_client;

	bk->bk_jobs--;
	rj->rj_conn->bc_jobs--;
	if (cl->cl_done)
		goto out;
	if (rj->rj_errno != 0) {
		(void)frame_send_error(cl->cl_bev, ERROR__CODE__UNKNOWN,
		    "source aborted the backup: cannot read its disk");
		client_finish(cl, EXIT_INPUT, "cannot read %s at offset %llu: "
		    "%s; the backup was abandoned and nothing was committed",
		    bk->bk_disk, (unsigned long long)rj->rj_index *
		    bk->bk_block_size, strerror(rj->rj_errno));
		goto out;
	}
	if (rj->rj_check_failed) {
		(void)frame_send_error(cl->cl_bev, ERROR__CODE__UNKNOWN,
		    "source aborted the backup: a block failed its check");
		client_finish(cl, EXIT_INTEGRITY, "block %llu (offset %llu) of "
		    "%s failed its round-trip check: its %s does not give the "
		    "block read back; it was not sent and nothing was "
		    "committed. Suspect this machine's memory or CPU, and run "
		    "the backup again", (unsigned long long)rj->rj_index,
		    (unsigned long long)rj->rj_index * bk->bk_block_size,
		    bk->bk_disk, bk->bk_mode ==
		    ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE ?
		    "sealed, compressed form" : "compressed form");
		goto out;
	}
	bk->bk_bytes_read += rj->rj_read;
	METRICS_ADD(metrics.mt_bytes_read, NULL, rj->rj_read);
	if (rj->rj_zero)
		bk->bk_zero_blocks++;
	else if (rj->rj_unchanged) {
		bk->bk_unchanged[bk->bk_nunchanged++] = rj->rj_index;
		bk->bk_blocks_unchanged++;
		if (bk->bk_nunchanged == UNCHANGED_MAX)
			backup_flush_unchanged(bk);
	} else {
		if (frame_queue(client_output(out), rj->rj_frame,
		    rj->rj_len) == -1) {
			client_finish(cl, EXIT_ERROR, "cannot queue a block");
			goto out;
		}
		rj->rj_frame = NULL;
		METRICS_ADD(metrics.mt_compress_in, NULL, rj->rj_read);
		METRICS_ADD(metrics.mt_compress_out, NULL, rj->rj_zstd_len);
		bk->bk_blocks_sent++;
		bk->bk_bytes_sent += rj->rj_len;
		rj->rj_conn->bc_blocks++;
		rj->rj_conn->bc_sent += rj->rj_len;
		tls_count_sent(out->cl_ssl, &out->cl_tls_sent, rj->rj_len);
	}
	progress_update(&bk->bk_progress, (bk->bk_zero_blocks +
	    bk->bk_blocks_unchanged + bk->bk_blocks_sent) *
	    (uint64_t)bk->bk_block_size, bk->bk_bytes_sent);
	backup_pump(bk);
 out:
	free(rj->rj_frame);
	free(rj);
}

/*
 * Skips the blocks that lie wholly in a hole (a sparse file, or an NBD
 * export's zero extents), so they are neither read nor sent.
 */
static void
backup_skip_holes(struct backup *bk)
{
	uint64_t	 off = bk->bk_next * bk->bk_block_size;
	uint64_t	 start, end, skip;
	int		 r;

	if (off < bk->bk_data_end)
		return;
	if ((r = disk_next_data(bk->bk_dk, off, &start, &end)) == 1) {
		/* Only holes are left. */
		bk->bk_hole_blocks += bk->bk_blocks - bk->bk_next;
		bk->bk_zero_blocks += bk->bk_blocks - bk->bk_next;
		bk->bk_next = bk->bk_blocks;
		return;
	}
	if (r == -1) {
		bk->bk_data_end = bk->bk_disk_size;	/* read it all */
		return;
	}
	bk->bk_data_end = end;
	if (start / bk->bk_block_size > bk->bk_next) {
		skip = start / bk->bk_block_size - bk->bk_next;
		bk->bk_hole_blocks += skip;
		bk->bk_zero_blocks += skip;
		bk->bk_next += skip;
	}
}

/*
 * Changed-block tracking: a block the dirty bitmap marks clean is the
 * base's block; 1 if bk_next was settled that way (and counted).
 */
static int
backup_clean_block(struct backup *bk)
{
	uint64_t		 i = bk->bk_next;

	if (bk->bk_dirty == NULL || i >= bk->bk_base_blocks ||
	    (bk->bk_dirty[i / 8] & (1u << (i % 8))) != 0)
		return 0;
	if (id_map_is_zero(&bk->bk_base, i))
		bk->bk_zero_blocks++;
	else {
		bk->bk_unchanged[bk->bk_nunchanged++] = i;
		bk->bk_blocks_unchanged++;
		if (bk->bk_nunchanged == UNCHANGED_MAX)
			backup_flush_unchanged(bk);
	}
	bk->bk_dirty_skipped++;
	bk->bk_next++;
	return 1;
}

/*
 * The connection the next block goes on: of those that may carry
 * blocks, the one with the fewest bytes queued and bound for it.
 */
static struct backup_conn *
backup_pick(struct backup *bk)
{
	struct backup_conn	*bc, *best = NULL;
	uint64_t		 queued, least = 0;
	int			 i;

	for (i = 0; i < bk->bk_nconns; i++) {
		bc = &bk->bk_conns[i];
		if (!bc->bc_joined)
			continue;
		queued = evbuffer_get_length(client_output(bc->bc_client)) +
		    (uint64_t)bc->bc_jobs * bk->bk_block_size;
		if (best == NULL || queued < least) {
			best = bc;
			least = queued;
		}
	}
	return best;
}

/* BackupEnd on every joined connection, then on the first.  */
static void
backup_end(struct backup *bk)
{
	struct client	*cl = bk->bk_client;
	Frame		 f = FRAME__INIT;
	BackupEnd	 be = BACKUP_END__INIT, part = BACKUP_END__INIT;
	uint8_t		*chain = NULL;
	size_t		 chainlen = 0;
	char		 err[KEY_ERR_MAX];
	int		 i;

	f.msg_case = FRAME__MSG_BACKUP_END;
	f.backup_end = &part;
	for (i = 1; i < bk->bk_nconns; i++) {
		if (!bk->bk_conns[i].bc_joined)
			continue;
		part.blocks_sent = bk->bk_conns[i].bc_blocks;
		client_send(bk->bk_conns[i].bc_client, &f);
		be.joined++;
	}
	f.backup_end = &be;
	be.blocks_sent = bk->bk_blocks_sent;
	be.zero_blocks = bk->bk_zero_blocks;
	be.blocks_unchanged = bk->bk_blocks_unchanged;
	if (bk->bk_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE) {
		if (envelope_end(&bk->bk_env, &chain, &chainlen, err,
		    sizeof(err)) == -1) {
			client_finish(cl, EXIT_KEY, "%s", err);
			return;
		}
		be.keychain.data = chain;
		be.keychain.len = chainlen;
		/*
		 * Every key of the chain (dedup may reach any point's
		 * chunk); the point lists those its chunks use.
		 */
		be.n_keys = bk->bk_env.ev_chain->kc_nkeys;
		be.keys = bk->bk_env.ev_chain->kc_keys;
	}
	client_send(cl, &f);
	free(chain);
}

/* Hands out blocks while window, socket and pool allow; ends the job. */
static void
backup_pump(struct backup *bk)
{
	struct client	*cl = bk->bk_client;
	struct backup_conn *bc;
	struct read_job	*rj;

	if (bk->bk_base_wait)
		return;
	while (!cl->cl_done && bk->bk_next < bk->bk_blocks &&
	    bk->bk_jobs < bk->bk_max_jobs &&
	    (bc = backup_pick(bk)) != NULL &&
	    evbuffer_get_length(client_output(bc->bc_client)) <
	    SOURCE_OUT_MAX &&
	    bk->bk_bytes_sent - bk->bk_bytes_acked +
	    (uint64_t)bk->bk_jobs * bk->bk_block_size <
	    bk->bk_conf->sc_window) {
		backup_skip_holes(bk);
		if (bk->bk_next >= bk->bk_blocks)
			break;
		if (backup_clean_block(bk))
			continue;
		if ((rj = calloc(1, sizeof(*rj))) == NULL) {
			client_finish(cl, EXIT_ERROR, "out of memory");
			return;
		}
		rj->rj_job.pj_work = read_work;
		rj->rj_job.pj_done = read_done;
		rj->rj_backup = bk;
		rj->rj_conn = bc;
		rj->rj_index = bk->bk_next++;
		/* Sealed under the key of the connection it goes on. */
		rj->rj_nonce = bc->bc_client->cl_nonce++;
		rj->rj_level = (int)bk->bk_conf->sc_compression_level;
		memcpy(rj->rj_key, bc->bc_client->cl_key_out, AEAD_KEY_LEN);
		bk->bk_jobs++;
		bc->bc_jobs++;
		pool_submit(cl->cl_pool, &rj->rj_job);
	}
	if (cl->cl_done || bk->bk_ended || bk->bk_next < bk->bk_blocks ||
	    bk->bk_jobs > 0)
		return;
	backup_flush_unchanged(bk);
	bk->bk_ended = 1;
	backup_end(bk);
}

static void
backup_ready(struct client *cl, void *arg)
{
	struct backup	*bk = arg;
	Frame		 f = FRAME__INIT;
	BackupBegin	 bb = BACKUP_BEGIN__INIT;

	bb.name = (char *)bk->bk_name;
	bb.disk_size = bk->bk_disk_size;
	bb.block_size = bk->bk_block_size;
	bb.mode = bk->bk_mode;
	bb.source_path = (char *)bk->bk_disk;
	bb.window = bk->bk_conf->sc_window;
	bb.connections = (uint32_t)bk->bk_conf->sc_connections;
	bb.incremental = !bk->bk_full;
	bb.transport = (char *)disk_transport_name(bk->bk_dk);
	/* From this point on the bitmap tracks changes for the next one. */
	bb.dirty_bitmap = (char *)(bk->bk_dopts.do_dirty_bitmap ?
	    bk->bk_dopts.do_dirty_bitmap : "");
	/* For the rollback check; read again on each attempt. */
	bk->bk_has_known = chain_known(bk->bk_conf, bk->bk_name,
	    &bk->bk_known);
	bb.known_point_id = bk->bk_has_known ? bk->bk_known.se_id : "";
	bb.known_sequence = bk->bk_has_known ? bk->bk_known.se_sequence : 0;
	f.msg_case = FRAME__MSG_BACKUP_BEGIN;
	f.backup_begin = &bb;
	client_send(cl, &f);
	bk->bk_start_ms = now_ms();
	progress_start(&bk->bk_progress, "backup", bk->bk_disk_size,
	    bk->bk_json);
	/* One round trip for the base index, then stream. */
	bk->bk_base_wait = 1;
	backup_pump(bk);
}

static void
backup_summary(struct backup *bk, const Committed *c)
{
	char		 b1[32], b2[32], b3[32], b4[32], b5[32];
	double		 secs = (now_ms() - bk->bk_start_ms) / 1000.0;
	long		 rss = peak_rss_kib();
	int		 nconns = 0, i;
	/* As stored (an older target does not say): at rest, say. */
	uint32_t	 mode = c->mode != ENCRYPTION_MODE__ENCRYPTION_NONE ?
	    (uint32_t)c->mode : bk->bk_mode;

	for (i = 0; i < bk->bk_nconns; i++)
		nconns += bk->bk_conns[i].bc_joined;
	if (secs <= 0)
		secs = 0.001;
	if (bk->bk_json) {
		printf("{\"name\":\"%s\",\"point_id\":\"%s\","
		    "\"encryption\":\"%s\",\"transport\":\"%s\","
		    "\"blocks_not_read\":%llu,"
		    "\"disk_size\":%llu,\"bytes_read\":%llu,"
		    "\"bytes_sent\":%llu,\"bytes_stored\":%llu,"
		    "\"blocks\":%llu,\"blocks_sent\":%llu,"
		    "\"zero_blocks\":%llu,\"blocks_unchanged\":%llu,"
		    "\"base_point_id\":\"%s\",\"resumed\":%s,"
		    "\"attempts\":%d,\"connections\":%d,\"chunks_new\":%llu,"
		    "\"chunks_dedup\":%llu,\"seconds\":%.3f,"
		    "\"peak_rss_kib\":%ld}\n", bk->bk_name, c->point_id,
		    mode_name(mode), disk_transport_name(bk->bk_dk),
		    (unsigned long long)bk->bk_dirty_skipped,
		    (unsigned long long)bk->bk_disk_size,
		    (unsigned long long)bk->bk_bytes_read,
		    (unsigned long long)bk->bk_bytes_sent,
		    (unsigned long long)c->bytes_stored,
		    (unsigned long long)bk->bk_blocks,
		    (unsigned long long)bk->bk_blocks_sent,
		    (unsigned long long)bk->bk_zero_blocks,
		    (unsigned long long)bk->bk_blocks_unchanged,
		    bk->bk_base_id, bk->bk_resumed ? "true" : "false",
		    bk->bk_attempts, nconns, (unsigned long long)c->chunks_new,
		    (unsigned long long)c->chunks_dedup, secs, rss);
		return;
	}
	format_bytes(bk->bk_disk_size, b1, sizeof(b1));
	format_bytes(bk->bk_bytes_read, b2, sizeof(b2));
	format_bytes(bk->bk_bytes_sent, b3, sizeof(b3));
	format_bytes(c->bytes_stored, b4, sizeof(b4));
	format_bytes((uint64_t)(bk->bk_disk_size / secs), b5, sizeof(b5));
	printf("backup '%s' committed as restore point %s (%s encryption)\n",
	    bk->bk_name, c->point_id, mode_name(mode));
	printf("  disk      %s in %llu blocks (%llu zero or hole)\n", b1,
	    (unsigned long long)bk->bk_blocks,
	    (unsigned long long)bk->bk_zero_blocks);
	printf("  read      %s by %s%s\n", b2, disk_transport_name(bk->bk_dk),
	    bk->bk_dirty != NULL ? " (only blocks the dirty bitmap marks "
	    "changed)" : "");
	if (backup_has_base(bk))
		printf("  base      %s%s: %llu blocks unchanged\n",
		    bk->bk_base_id, bk->bk_resumed ? " and an interrupted "
		    "backup (resumed)" : "",
		    (unsigned long long)bk->bk_blocks_unchanged);
	if (bk->bk_attempts > 1)
		printf("  attempts  %d%s; read, sent and time count the last\n",
		    bk->bk_attempts, bk->bk_resumed ? ", resumed where the "
		    "lost connection left off" : "");
	printf("  sent      %s (%llu blocks) on %d connection%s\n", b3,
	    (unsigned long long)bk->bk_blocks_sent, nconns,
	    nconns > 1 ? "s" : "");
	printf("  stored    %s new (%llu new chunks, %llu already stored)\n",
	    b4, (unsigned long long)c->chunks_new,
	    (unsigned long long)c->chunks_dedup);
	printf("  ratio     %.2f:1 (disk size to bytes sent)\n",
	    bk->bk_bytes_sent ? (double)bk->bk_disk_size /
	    bk->bk_bytes_sent : 0.0);
	printf("  time      %.2f s, %s/s\n", secs, b5);
	printf("  peak RSS  %ld MiB\n", rss / 1024);
}

/*
 * Reads up to DIRTY_SPOT_CHECKS blocks the bitmap marks clean, spread
 * over the disk, and compares them with the base: 0 if all match.
 */
static int
backup_spot_check(struct backup *bk, char *why, size_t whylen)
{
	uint8_t			*buf, id[CHUNK_ID_LEN];
	uint64_t		 i, step, n = 0, off;
	size_t			 len;
	int			 rv = 0;

	if ((buf = malloc(bk->bk_block_size)) == NULL)
		return 0;
	step = bk->bk_base_blocks / DIRTY_SPOT_CHECKS + 1;
	for (i = 0; i < bk->bk_base_blocks && i < bk->bk_blocks && rv == 0;
	    i += step) {
		if (bk->bk_dirty[i / 8] & (1u << (i % 8)))
			continue;
		off = i * bk->bk_block_size;
		len = bk->bk_disk_size - off < bk->bk_block_size ?
		    (size_t)(bk->bk_disk_size - off) : bk->bk_block_size;
		if (disk_read(bk->bk_dk, buf, len, off) == -1) {
			snprintf(why, whylen, "cannot read block %llu: %s",
			    (unsigned long long)i, strerror(errno));
			rv = -1;
			break;
		}
		n++;
		if (buf_is_zero(buf, len))
			memset(id, 0, sizeof(id));
		else if (bk->bk_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE)
			(void)chunk_id_keyed(&bk->bk_env.ev_chunk_key, buf, len,
			    id);
		else
			crypto_sha256(buf, len, id);
		if (memcmp(id, id_map_get(&bk->bk_base, i), CHUNK_ID_LEN) !=
		    0) {
			snprintf(why, whylen, "block %llu changed but the "
			    "bitmap marks it clean", (unsigned long long)i);
			rv = -1;
		}
	}
	free(buf);
	log_debug("dirty bitmap: %llu clean blocks spot-checked",
	    (unsigned long long)n);
	return rv;
}

/*
 * Changed-block tracking, never trusted blindly: the bitmap is used only
 * if the base point recorded the same bitmap (it has tracked changes
 * since that point), the server exports it, and a sample of the blocks
 * it calls clean hash as in the base.  Otherwise: a warning that says
 * why, and a full read with hash comparison.
 */
static void
backup_dirty_map(struct backup *bk)
{
	const char	*name = bk->bk_dopts.do_dirty_bitmap;
	char		 why[512];

	if (!backup_has_base(bk) || bk->bk_resumed) {
		log_warnx("dirty bitmap '%s': %s; reading the whole disk",
		    name, !backup_has_base(bk) ? "no previous restore point to "
		    "compare with" : "resuming an interrupted backup");
		return;
	}
	if (strcmp(bk->bk_base_bitmap, name) != 0) {
		log_warnx("dirty bitmap '%s' does not belong to the previous "
		    "restore point %s (it recorded %s%s%s); reading the whole "
		    "disk and comparing hashes", name, bk->bk_base_id,
		    bk->bk_base_bitmap[0] ? "'" : "no bitmap",
		    bk->bk_base_bitmap, bk->bk_base_bitmap[0] ? "'" : "");
		return;
	}
	if (disk_dirty_map(bk->bk_dk, bk->bk_block_size, &bk->bk_dirty, why,
	    sizeof(why)) == -1) {
		log_warnx("dirty bitmap '%s': %s; reading the whole disk and "
		    "comparing hashes", name, why);
		bk->bk_dirty = NULL;
		return;
	}
	if (backup_spot_check(bk, why, sizeof(why)) == -1) {
		log_warnx("dirty bitmap '%s' cannot be trusted: %s; reading "
		    "the whole disk and comparing hashes", name, why);
		free(bk->bk_dirty);
		bk->bk_dirty = NULL;
		return;
	}
	log_info("dirty bitmap '%s': reading only the blocks it marks "
	    "changed since %s", name, bk->bk_base_id);
}

/*
 * Takes a piece of the base index.  The pieces must arrive in order and
 * fit the announced size; anything else is a protocol error.
 */
static int
backup_base(struct backup *bk, const BaseIndex *bi)
{
	size_t	 n = bi->ids.len / CHUNK_ID_LEN;

	char	 err[KEY_ERR_MAX];
	int	 rv;

	if (!bk->bk_base_wait || bi->ids.len % CHUNK_ID_LEN != 0)
		return -1;
	/* The last piece: has the target gone back?  Before any data. */
	if (bi->last && (rv = chain_check_base(bk->bk_conf, bk->bk_name,
	    bk->bk_has_known ? &bk->bk_known : NULL, bi,
	    bk->bk_accept_rollback)) != EXIT_OK) {
		(void)frame_send_error(bk->bk_client->cl_bev,
		    ERROR__CODE__UNKNOWN, "source aborted the backup: this "
		    "target lacks the newest point the source committed");
		client_finish(bk->bk_client, rv, NULL);
		return 0;
	}
	/* The first piece: the chain's keys, before any data is read. */
	if (bk->bk_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    bk->bk_env.ev_chain == NULL && envelope_begin(&bk->bk_env,
	    bk->bk_name, bi->keychain.data, bi->keychain.len, err,
	    sizeof(err)) == -1) {
		(void)frame_send_error(bk->bk_client->cl_bev,
		    ERROR__CODE__UNKNOWN, "source aborted the backup: no key");
		client_finish(bk->bk_client, EXIT_KEY, "backup of '%s' "
		    "stopped before reading any data: %s", bk->bk_name, err);
		return 0;
	}
	if (!backup_has_base(bk) && bi->point_id[0] != '\0') {
		if (bi->blocks == 0 || bi->blocks > (1ull << 30))
			return -1;
		if (id_map_init(&bk->bk_base, bi->blocks) == -1)
			return -1;
		bk->bk_base_blocks = bi->blocks;
		snprintf(bk->bk_base_id, sizeof(bk->bk_base_id), "%s",
		    bi->point_id);
		snprintf(bk->bk_base_bitmap, sizeof(bk->bk_base_bitmap), "%s",
		    bi->dirty_bitmap);
	}
	if (n > 0) {
		if (!backup_has_base(bk) || bi->first != bk->bk_base_got ||
		    bi->blocks != bk->bk_base_blocks ||
		    n > bk->bk_base_blocks - bk->bk_base_got)
			return -1;
		id_map_put(&bk->bk_base, bi->first, bi->ids.data, n);
		bk->bk_base_got += n;
	}
	if (bi->last) {
		if (backup_has_base(bk) && bk->bk_base_got !=
		    bk->bk_base_blocks)
			return -1;
		bk->bk_base_wait = 0;
		bk->bk_resumed = bi->resumed;
		if (bk->bk_dopts.do_dirty_bitmap != NULL)
			backup_dirty_map(bk);
		if (backup_has_base(bk))
			log_debug("incremental from restore point %s",
			    bk->bk_base_id);
		backup_connect_more(bk, bi);
		backup_pump(bk);
	}
	return 0;
}

/* Ack on one of the job's connections: what it carried is durable. */
static void
backup_ack(struct backup_conn *bc, const Ack *ack)
{
	struct backup	*bk = bc->bc_backup;
	struct client	*cl = bc->bc_client;

	if (ack->bytes_durable > bc->bc_sent ||
	    ack->bytes_durable < bc->bc_acked) {
		client_finish(cl, EXIT_ERROR, "%s: protocol error: "
		    "acknowledgement of %llu bytes is out of order",
		    cl->cl_addr, (unsigned long long)ack->bytes_durable);
		return;
	}
	bk->bk_bytes_acked += ack->bytes_durable - bc->bc_acked;
	bc->bc_acked = ack->bytes_durable;
	backup_pump(bk);
}

/* An extra connection's Hello: it joins the job, unless that is over. */
static void
join_ready(struct client *cl, void *arg)
{
	struct backup_conn *bc = arg;
	struct backup	*bk = bc->bc_backup;

	if (bk->bk_ended)
		return;
	client_join(cl, bk->bk_token);
	bc->bc_joined = 1;
	backup_pump(bk);
}

static void
join_frame(struct client *cl, const Frame *f, void *arg)
{
	struct backup_conn *bc = arg;

	if (f->msg_case == FRAME__MSG_ACK) {
		backup_ack(bc, f->ack);
		return;
	}
	client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected %s "
	    "frame on an extra connection of a backup", cl->cl_addr,
	    frame_name(f));
}

static void
join_drained(struct client *cl, void *arg)
{
	struct backup_conn *bc = arg;

	backup_pump(bc->bc_backup);
}

static const struct client_ops join_ops = {
	.co_ready = join_ready,
	.co_frame = join_frame,
	.co_drained = join_drained,
};

/*
 * connections: the target gave the job a token; open the extra
 * connections, which join it once their handshake is done.  One that
 * cannot be opened leaves the job to the others.
 */
static void
backup_connect_more(struct backup *bk, const BaseIndex *bi)
{
	struct backup_conn *bc;
	int		 want = (int)bk->bk_conf->sc_connections;

	if (want <= 1)
		return;
	if (bi->job_token.len != JOB_TOKEN_LEN) {
		log_info("target %s carries a job on one connection only; "
		    "'connections = %d' has no effect", bk->bk_client->cl_addr,
		    want);
		return;
	}
	memcpy(bk->bk_token, bi->job_token.data, JOB_TOKEN_LEN);
	while (bk->bk_nconns < want) {
		bc = &bk->bk_conns[bk->bk_nconns];
		memset(bc, 0, sizeof(*bc));
		bc->bc_backup = bk;
		if ((bc->bc_client = client_add(bk->bk_client, &join_ops,
		    bc)) == NULL) {
			log_warnx("cannot open connection %d of %d to %s; the "
			    "backup goes on with %d", bk->bk_nconns + 1, want,
			    bk->bk_client->cl_addr, bk->bk_nconns);
			return;
		}
		bk->bk_nconns++;
	}
}

static void
backup_frame(struct client *cl, const Frame *f, void *arg)
{
	struct backup	*bk = arg;

	switch (f->msg_case) {
	case FRAME__MSG_BASE_INDEX:
		if (backup_base(bk, f->base_index) == -1)
			break;
		return;
	case FRAME__MSG_ACK:
		backup_ack(&bk->bk_conns[0], f->ack);
		return;
	case FRAME__MSG_COMMITTED:
		if (!bk->bk_ended)
			break;
		bk->bk_bytes_acked = bk->bk_bytes_sent;
		progress_end(&bk->bk_progress);
		chain_remember(bk->bk_conf, bk->bk_name, f->committed);
		/* Only the first: change-password moves it. */
		if (bk->bk_env.ev_newest != NULL &&
		    bk->bk_env.ev_newest->k_ref->provider ==
		    KEY_PROVIDER__KEY_PROVIDER_PASSWORD)
			state_password_remember(bk->bk_conf,
			    bk->bk_env.ev_newest->k_ref, 1);
		backup_summary(bk, f->committed);
		client_finish(cl, EXIT_OK, NULL);
		return;
	default:
		break;
	}
	client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected %s "
	    "frame during a backup", cl->cl_addr, frame_name(f));
}

static void
backup_drained(struct client *cl, void *arg)
{
	backup_pump(arg);
}

static const struct client_ops backup_ops = {
	.co_ready = backup_ready,
	.co_frame = backup_frame,
	.co_drained = backup_drained,
};

/* Opens the disk and learns its size.  0 or -1 after a message. */
static int
backup_open_disk(struct backup *bk)
{
	uint64_t	 size;

	if ((bk->bk_dk = disk_open(bk->bk_disk, &bk->bk_dopts)) == NULL)
		return -1;
	if ((size = disk_size(bk->bk_dk)) == 0) {
		log_warnx("disk %s is empty; nothing to back up", bk->bk_disk);
		return -1;
	}
	bk->bk_disk_size = size;
	bk->bk_block_size = (uint32_t)bk->bk_conf->sc_block_size;
	bk->bk_blocks = (size + bk->bk_block_size - 1) / bk->bk_block_size;
	log_info("disk %s: %llu bytes, read by %s", bk->bk_disk,
	    (unsigned long long)size, disk_transport_name(bk->bk_dk));
	return 0;
}

/* Forgets the progress of a failed attempt; the disk stays open. */
static void
backup_reset(struct backup *bk)
{
	id_map_free(&bk->bk_base);
	bk->bk_base_blocks = bk->bk_base_got = 0;
	bk->bk_base_id[0] = '\0';
	bk->bk_resumed = 0;
	/* A new job needs a new data key; the KEKs stay. */
	keychain_free(bk->bk_env.ev_chain);
	bk->bk_env.ev_chain = NULL;
	key_buf_free(&bk->bk_env.ev_dek);
	key_buf_free(&bk->bk_env.ev_chunk_key);
	bk->bk_next = bk->bk_data_end = 0;
	free(bk->bk_dirty);
	bk->bk_dirty = NULL;
	bk->bk_dirty_skipped = 0;
	bk->bk_jobs = bk->bk_ended = bk->bk_base_wait = 0;
	bk->bk_nunchanged = 0;
	bk->bk_blocks_unchanged = bk->bk_bytes_read = 0;
	bk->bk_blocks_sent = bk->bk_zero_blocks = bk->bk_hole_blocks = 0;
	bk->bk_bytes_sent = bk->bk_bytes_acked = 0;
}

/*
 * Runs the backup, reconnecting with backoff while the connection is
 * lost and resume_timeout has not run out.  Every new attempt starts a
 * new job on the target, which sends the blocks the interrupted one
 * made durable as part of the base: they are hashed again here, never
 * sent again.  Returns the exit code.
 */
static int
backup_run(struct backup *bk)
{
	struct source_conf	*sc = bk->bk_conf;
	struct retry		 rt;
	char			 what[NAME_MAX_LEN + 32];
	int			 rv;

	memset(&rt, 0, sizeof(rt));
	snprintf(what, sizeof(what), "backup of '%s'", bk->bk_name);
	for (;;) {
		bk->bk_attempts = rt.rt_attempts + 1;
		if ((bk->bk_client = client_new(sc, &backup_ops, bk)) == NULL)
			return EXIT_USAGE;
		memset(bk->bk_conns, 0, sizeof(bk->bk_conns));
		bk->bk_conns[0].bc_backup = bk;
		bk->bk_conns[0].bc_client = bk->bk_client;
		bk->bk_conns[0].bc_joined = 1;
		bk->bk_nconns = 1;
		/* Enough blocks in the pool to keep every worker busy. */
		bk->bk_max_jobs = 2 * pool_threads(bk->bk_client->cl_pool) + 2;
		rv = client_run(bk->bk_client);
		progress_end(&bk->bk_progress);
		if (rv == EXIT_OK || !client_retry(bk->bk_client, &rt, what))
			break;
		client_free(bk->bk_client);
		bk->bk_client = NULL;
		backup_reset(bk);
	}
	return rv;
}

static void
backup_usage(FILE *fp)
{
	fprintf(fp, "usage: source-transporter [-f config] backup --disk PATH "
	    "--name NAME [--encryption MODE] [--full] [--json]\n"
	    "       [--transport auto|direct|nbd] [--no-fallback] "
	    "[--allow-insecure-nbd]\n"
	    "       [--dirty-bitmap NAME] [--nbd-ca F] [--nbd-cert F] "
	    "[--nbd-key F] [--nbd-psk-file F]\n"
	    "       [--bandwidth-limit RATE] [--connections N] "
	    "[--accept-rollback]\n"
	    "  --disk PATH   raw image or block device, or an NBD export:\n"
	    "                nbd://host[:port]/export, nbds://... (TLS),\n"
	    "                nbd+unix:///export?socket=PATH\n"
	    "  --transport   auto (direct if local, else NBD), direct or nbd\n"
	    "  --no-fallback never switch transport (auto: local disks only)\n"
	    "  --allow-insecure-nbd  allow plain nbd:// to a remote host\n"
	    "  --dirty-bitmap NAME  read only the blocks QEMU's bitmap NAME\n"
	    "                marks changed since the previous point (checked\n"
	    "                first; a full read with a warning otherwise)\n"
	    "  --nbd-ca, --nbd-cert, --nbd-key, --nbd-psk-file  nbds:// TLS\n"
	    "  --name NAME   backup name (letters, digits, '.', '_', '-')\n"
	    "  --encryption MODE  in-flight (the target stores what it can\n"
	    "                read) or source-side (sealed here under the\n"
	    "                backup's own key; the target never sees it);\n"
	    "                default: 'encryption' in the configuration\n"
	    "  --full        read and send every block, even if a previous\n"
	    "                restore point exists (default: incremental)\n"
	    "  --bandwidth-limit RATE  at most RATE bytes per second each\n"
	    "                way for this job (e.g. 20M; 0: none); default:\n"
	    "                'bandwidth_limit' in the configuration\n"
	    "  --connections N  carry the blocks on N TCP connections (1-16);\n"
	    "                default: 'connections' in the configuration\n"
	    "  --accept-rollback  go on when the target no longer has the "
	    "newest\n"
	    "                point this source committed of the name (exit 9 "
	    "otherwise)\n"
	    "  --json        print the summary as one JSON object\n");
}

int
cmd_backup(struct source_conf *sc, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "disk",	required_argument, NULL, 'd' },
		{ "name",	required_argument, NULL, 'n' },
		{ "json",	no_argument,	   NULL, 'j' },
		{ "full",	no_argument,	   NULL, 'F' },
		{ "encryption",	required_argument, NULL, 'e' },
		{ "transport",	required_argument, NULL, 't' },
		{ "no-fallback", no_argument,	   NULL, 'N' },
		{ "allow-insecure-nbd", no_argument, NULL, 'I' },
		{ "dirty-bitmap", required_argument, NULL, 'b' },
		{ "nbd-ca",	required_argument, NULL, 'A' },
		{ "nbd-cert",	required_argument, NULL, 'C' },
		{ "nbd-key",	required_argument, NULL, 'K' },
		{ "nbd-psk-file", required_argument, NULL, 'P' },
		{ "bandwidth-limit", required_argument, NULL, 'B' },
		{ "accept-rollback", no_argument,  NULL, 'R' },
		{ "connections", required_argument, NULL, 'c' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct backup	 bk;
	char		 err[KEY_ERR_MAX];
	uint64_t	 bandwidth = 0, connections = 0;
	int		 ch, rv = EXIT_USAGE, bandwidth_set = 0;

	memset(&bk, 0, sizeof(bk));

	bk.bk_conf = sc;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			bk.bk_disk = optarg;
			break;
		case 'n':
			bk.bk_name = optarg;
			break;
		case 'j':
			bk.bk_json = 1;
			break;
		case 'F':
			bk.bk_full = 1;
			break;
		case 't':
			if (strcmp(optarg, "auto") == 0)
				bk.bk_dopts.do_transport = DISK_TRANSPORT_AUTO;
			else if (strcmp(optarg, "direct") == 0)
				bk.bk_dopts.do_transport = DISK_TRANSPORT_DIRECT;
			else if (strcmp(optarg, "nbd") == 0)
				bk.bk_dopts.do_transport = DISK_TRANSPORT_NBD;
			else {
				log_warnx("--transport must be auto, direct or "
				    "nbd, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'N':
			bk.bk_dopts.do_no_fallback = 1;
			break;
		case 'R':
			bk.bk_accept_rollback = 1;
			break;
		case 'I':
			bk.bk_dopts.do_allow_insecure_nbd = 1;
			break;
		case 'b':
			if (!name_is_valid(optarg)) {
				log_warnx("--dirty-bitmap '%s' is not a valid "
				    "bitmap name", optarg);
				return EXIT_USAGE;
			}
			bk.bk_dopts.do_dirty_bitmap = optarg;
			break;
		case 'A':
			bk.bk_dopts.do_tls_ca = optarg;
			break;
		case 'C':
			bk.bk_dopts.do_tls_cert = optarg;
			break;
		case 'K':
			bk.bk_dopts.do_tls_key = optarg;
			break;
		case 'P':
			bk.bk_dopts.do_tls_psk_file = optarg;
			break;
		case 'B':
			/* Applied after --help, which has no sc. */
			if (source_bandwidth_option(optarg, &bandwidth) == -1)
				return EXIT_USAGE;
			bandwidth_set = 1;
			break;
		case 'c':
			if (source_connections_option(optarg,
			    &connections) == -1)
				return EXIT_USAGE;
			break;
		case 'e':
			if (source_parse_encryption(optarg, &bk.bk_mode) == -1) {
				log_warnx("--encryption must be in-flight or "
				    "source-side, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'h':
			backup_usage(stdout);
			return EXIT_OK;
		default:
			backup_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || bk.bk_disk == NULL || bk.bk_name == NULL) {
		backup_usage(stderr);
		log_warnx("backup: %s", optind != argc ? "unexpected arguments "
		    "after the options" : bk.bk_disk == NULL ? "say which disk: "
		    "--disk PATH or NBD-URI" : "say which backup: --name NAME");
		return EXIT_USAGE;
	}
	if (bandwidth_set)
		sc->sc_bandwidth = bandwidth;
	if (connections != 0)
		sc->sc_connections = connections;
	if (!name_is_valid(bk.bk_name)) {
		log_warnx("backup name '%s' is not valid: use 1-%d letters, "
		    "digits, '.', '_' or '-', not starting with '.' or '-'",
		    bk.bk_name, NAME_MAX_LEN);
		return EXIT_USAGE;
	}
	if (bk.bk_mode == 0)
		bk.bk_mode = sc->sc_encryption;
	bk.bk_check = sc->sc_roundtrip_check == ROUNDTRIP_YES ||
	    (sc->sc_roundtrip_check == ROUNDTRIP_AUTO &&
	    bk.bk_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE);
	bk.bk_dopts.do_direct_io = sc->sc_direct_io;
	envelope_init(&bk.bk_env, sc);
	/* Fail closed: no key, no data read. */
	if (bk.bk_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    envelope_prepare(&bk.bk_env, sc, err, sizeof(err)) == -1) {
		log_warnx("backup of '%s' stopped before reading any data: %s",
		    bk.bk_name, err);
		rv = EXIT_KEY;
		goto out;
	}
	if (backup_open_disk(&bk) == -1) {
		rv = EXIT_INPUT;
		goto out;
	}
	if ((bk.bk_unchanged = calloc(UNCHANGED_MAX,
	    sizeof(*bk.bk_unchanged))) == NULL) {
		rv = EXIT_ERROR;
		goto out;
	}
	rv = backup_run(&bk);
 out:
	client_free(bk.bk_client);
	free(bk.bk_unchanged);
	id_map_free(&bk.bk_base);
	envelope_free(&bk.bk_env);
	disk_close(bk.bk_dk);
	free(bk.bk_dirty);
	return rv;
}
