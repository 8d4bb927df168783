/*
 * restore.c: the restore command.  Block frames from the target are
 * opened, decompressed, checked against their chunk id and written by
 * the worker pool.  A regular output file is written under a temporary
 * name and renamed into place only when every block verified, so a
 * failed restore never leaves wrong data under the name asked for.
 *
 * Resume: the source first asks for the point's chunk ids (a
 * RestoreRequest with index), then for its blocks from a given index
 * on.  While blocks are written, the prefix of the image known to be
 * in the output is recorded, after an fsync of the output, in a state
 * file beside it (OUTPUT.restore-state, naming the partial file), or
 * for a block device, written in place, in the state directory
 * (restore-dev-MAJOR-MINOR.restore-state).  A
 * lost connection reconnects with backoff (client_retry); a source
 * killed and run again finds the state file.  Either way nothing is
 * trusted: the point must be the same one (id, sizes and the SHA-256
 * of its chunk ids), every block of the prefix is read back and hashed
 * against the index, and the blocks that differ are asked for again.
 * A state that does not fit is ignored with a warning and the restore
 * starts from the beginning.
 *
 * With `connections` above 1 the blocks come on several connections:
 * the target's RestoreBegin carries a token, the extra connections join
 * with it, the first says how many did (Joined), and each connection
 * grants credit for the blocks it carried and gets a RestoreEnd of its
 * own.  The written prefix is kept from a bitmap, so the order in which
 * blocks arrive does not matter.
 */
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <linux/fs.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "source.h"

#define RESTORE_MAX_JOBS_PER_THREAD	3
#define RESTORE_CHECK_BLOCKS	64	/* per check job; a multiple of 8 */
#define RESTORE_CKPT_MS		1000	/* resume state at most this often, */
#define RESTORE_CKPT_BYTES	(256u << 20)	/* or after this much */
#define RESTORE_KEEPALIVE_MS	60000	/* a frame while checking */
#define RESTORE_STATE_MAX	4096
#define RESTORE_STATE_MAGIC	"transporter restore state 1"
#define RESTORE_STATE_SUFFIX	".restore-state"

struct restore;

/* One connection the blocks come on; the first also carries the rest. */
struct restore_conn {
	struct restore	*rc_restore;
	struct client	*rc_client;
	int		 rc_joined;	/* JoinJob sent (first: always) */
	int		 rc_settled;	/* joined, or left out */
	int		 rc_ended;	/* its RestoreEnd arrived */
	int		 rc_paused;	/* reading stopped: the pool is full */
	uint64_t	 rc_received;	/* Block frames taken */
	uint64_t	 rc_uncredited;	/* consumed, not yet granted back */
};

enum restore_phase {
	RP_INDEX,	/* waiting for the point's chunk ids */
	RP_CHECK,	/* reading back what an earlier attempt wrote */
	RP_STREAM,	/* blocks arrive */
};

/* How far an interrupted restore got (the state file, or memory). */
struct restore_state {
	int		 st_valid;
	char		 st_name[NAME_MAX_LEN + 1];
	char		 st_point[64];
	char		 st_partial[NAME_MAX + 1];	/* basename */
	uint64_t	 st_disk_size;
	uint32_t	 st_block_size;
	uint8_t		 st_digest[CHUNK_ID_LEN];	/* of the chunk ids */
	uint64_t	 st_done;	/* blocks below are in the output */
};

struct restore {
	struct client	*rs_client;	/* the first connection */
	struct restore_conn rs_conns[JOB_CONNECTIONS_MAX];
	int		 rs_nconns;
	uint8_t		 rs_token[JOB_TOKEN_LEN];	/* to join */
	int		 rs_told;	/* Joined sent */
	uint64_t	 rs_end_blocks;	/* the first's RestoreEnd ... */
	uint64_t	 rs_end_damaged;
	int		 rs_end_first;	/* ... arrived */
	const char	*rs_name;
	const char	*rs_point_id;
	const char	*rs_output;
	const char	*rs_key_file;
	const char	*rs_passphrase_file;
	const char	*rs_state_dir;	/* a device's resume state goes here */
	char		 rs_tmp[PATH_MAX];	/* "" when writing in place */
	int		 rs_fd;
	int		 rs_device;	/* the output: a block device, in place */
	int		 rs_force;
	int		 rs_json;
	int		 rs_begun;
	int		 rs_ended;	/* every connection's RestoreEnd, checked */
	char		 rs_point[64];
	uint64_t	 rs_disk_size;
	uint32_t	 rs_block_size;
	uint64_t	 rs_blocks;	/* in the image */
	uint64_t	 rs_expected;	/* Block frames announced */
	uint64_t	 rs_received;
	uint64_t	 rs_written;
	uint64_t	 rs_bytes_written;
	uint64_t	 rs_bytes_in;	/* frame bytes received */
	uint8_t		*rs_seen;	/* bitmap of blocks received */
	int		 rs_jobs;
	int		 rs_max_jobs;
	uint64_t	 rs_start_ms;
	int		 rs_source_side;
	struct progress	 rs_progress;
	int		 rs_verify;	/* check everything, write nothing */
	uint64_t	 rs_damaged;	/* verify: blocks found damaged */
	uint64_t	 rs_target_damaged;	/* ... by the target */
	struct envelope	 rs_env;
	/* resume */
	enum restore_phase rs_phase;
	int		 rs_announced;	/* this attempt's RestoreBegin */
	uint64_t	 rs_zero_blocks;
	char		 rs_state_path[PATH_MAX];	/* "": none kept */
	struct restore_state rs_st;	/* what an earlier attempt did */
	struct id_map	 rs_ids;	/* the point's chunk ids (idmap.c) */
	uint64_t	 rs_index_got;
	uint8_t		 rs_digest[CHUNK_ID_LEN];
	uint64_t	 rs_from;	/* blocks asked for from here on */
	uint8_t		*rs_bad;	/* bitmap: below rs_from, fetch again */
	uint64_t	 rs_nbad;
	uint64_t	 rs_zeroed;	/* zero blocks put right here */
	uint64_t	 rs_check_next;
	int		 rs_check_jobs;
	uint64_t	 rs_keepalive_ms;
	uint64_t	 rs_mark;	/* every block below is in the output */
	uint64_t	 rs_ckpt_mark;	/* ... as far as the state file says */
	uint64_t	 rs_ckpt_ms;
	int		 rs_ckpt_busy;
	int		 rs_ckpt_warned;
	int		 rs_attempts;
	uint64_t	 rs_resumed_from;	/* for the summary */
	uint64_t	 rs_refetched;
	int		 rs_keep;	/* leave the partial file to resume */
	/*
	 * One writer at a time: two workers' pwrites into one file contend
	 * for its inode lock, where the kernel spins the waiter on a CPU
	 * (14% of a restoring source, docs/PERFORMANCE.md); here it sleeps.
	 */
	pthread_mutex_t	 rs_write_lock;
};

/* Resume state: fsync the output, then record st. */
struct ckpt_job {
	struct pool_job	 cj_job;
	struct restore	*cj_restore;
	struct restore_state cj_st;
	int		 cj_errno;
};

/* Resume: read back blocks [ck_first, ck_end) and compare. */
struct check_job {
	struct pool_job	 ck_job;
	struct restore	*ck_restore;
	uint64_t	 ck_first;
	uint64_t	 ck_end;
	uint64_t	 ck_bad;
	uint64_t	 ck_zeroed;
	uint64_t	 ck_at;		/* the block that failed */
	int		 ck_errno;
};

struct write_job {
	struct pool_job	 wj_job;
	struct restore	*wj_restore;
	struct restore_conn *wj_conn;	/* it came on, and is credited on */
	uint8_t		*wj_frame;
	size_t		 wj_len;
	uint8_t		 wj_key[AEAD_KEY_LEN];
	/* results */
	uint64_t	 wj_index;
	int		 wj_errno;	/* EBADMSG: failed a check */
	char		 wj_msg[256];
};

static void	restore_maybe_done(struct restore *);
static void	restore_checkpoint(struct restore *);
static uint32_t	restore_joined_count(const struct restore *);

/* A job left the pool: connections stopped for a full pool read again. */
static void
restore_read_again(struct restore *rs)
{
	int	 i;

	for (i = 0; i < rs->rs_nconns; i++)
		if (rs->rs_conns[i].rc_paused) {
			rs->rs_conns[i].rc_paused = 0;
			client_resume(rs->rs_conns[i].rc_client);
		}
}

static int
bit_isset(const uint8_t *map, uint64_t i)
{
	return (map[i / 8] & (1u << (i % 8))) != 0;
}

/* Whether this attempt has the point's chunk ids (asked for first). */
static int
restore_has_ids(const struct restore *rs)
{
	return rs->rs_ids.im_ids != NULL;
}

static int
restore_is_zero(const struct restore *rs, uint64_t i)
{
	return id_map_is_zero(&rs->rs_ids, i);
}

/* Is block i one this attempt asked the target for? */
static int
restore_needed(const struct restore *rs, uint64_t i)
{
	return !restore_is_zero(rs, i) && (i >= rs->rs_from ||
	    bit_isset(rs->rs_bad, i));
}

static uint32_t
restore_block_len(const struct restore *rs, uint64_t index)
{
	uint64_t	 left = rs->rs_disk_size - index * rs->rs_block_size;

	return left < rs->rs_block_size ? (uint32_t)left : rs->rs_block_size;
}

/* Writes len bytes at off, retrying short writes.  0 or -1 with errno. */
static int
write_full(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	ssize_t	 n;
	size_t	 done = 0;

	while (done < len) {
		n = pwrite(fd, buf + done, len - done, (off_t)(off + done));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

/* write_full into the output under rs_write_lock. */
static int
restore_write(struct restore *rs, const uint8_t *buf, size_t len,
    uint64_t off)
{
	int	 rv, save;

	pthread_mutex_lock(&rs->rs_write_lock);
	rv = write_full(rs->rs_fd, buf, len, off);
	save = errno;
	pthread_mutex_unlock(&rs->rs_write_lock);
	errno = save;
	return rv;
}

/* Worker: decode, open, decompress, verify, write. */
static void
write_work(struct pool_job *pj)
{
	struct write_job	*wj = (struct write_job *)pj;
	struct restore		*rs = wj->wj_restore;
	Frame			*f;
	Block			*b;
	uint8_t			 aad[AAD_MAX_LEN], id[CHUNK_ID_LEN];
	uint8_t			*plain = NULL, *raw = NULL, *opened = NULL;
	const uint8_t		*data, *sealed;
	const struct key_buf	*dek;
	size_t			 aadlen, plen;
	uint32_t		 want;

	wj->wj_errno = EBADMSG;
	wj->wj_index = UINT64_MAX;
	if ((f = frame_unpack(wj->wj_frame, wj->wj_len)) == NULL ||
	    f->msg_case != FRAME__MSG_BLOCK) {
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "malformed block "
		    "frame");
		goto out;
	}
	b = f->block;
	if (b->index >= rs->rs_blocks) {
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "block %llu is past "
		    "the end of the disk", (unsigned long long)b->index);
		goto out;
	}
	wj->wj_index = b->index;
	want = restore_block_len(rs, b->index);
	if (b->chunk_id.len != CHUNK_ID_LEN || b->nonce.len !=
	    AEAD_NONCE_LEN || b->raw_len != want || b->payload.len <
	    AEAD_TAG_LEN + (rs->rs_source_side ? SEALED_OVERHEAD : 0) ||
	    b->payload.len - AEAD_TAG_LEN > compress_bound(want) +
	    (rs->rs_source_side ? SEALED_OVERHEAD : 0) ||
	    (b->encrypted != 0) != rs->rs_source_side) {
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "bad field lengths");
		goto out;
	}
	if (restore_has_ids(rs) && !restore_needed(rs, b->index)) {
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "was not asked for");
		goto out;
	}
	if (restore_has_ids(rs) && memcmp(id_map_get(&rs->rs_ids,
	    b->index), b->chunk_id.data, CHUNK_ID_LEN) != 0) {
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "is not the chunk the "
		    "restore point's index lists there");
		goto out;
	}
	plen = b->payload.len - AEAD_TAG_LEN;
	if ((plain = malloc(plen ? plen : 1)) == NULL ||
	    (raw = malloc(want)) == NULL) {
		wj->wj_errno = ENOMEM;
		goto out;
	}
	aadlen = crypto_aad(aad, AAD_BLOCK_TO_SOURCE, NULL, b->chunk_id.data,
	    b->index);
	if (crypto_open(wj->wj_key, b->nonce.data, aad, aadlen,
	    b->payload.data, b->payload.len, plain) == -1) {
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "failed "
		    "authentication in transit");
		goto out;
	}
	if (rs->rs_source_side) {
		/* key id | nonce | ciphertext | tag, sealed at backup. */
		sealed = plain;
		if ((dek = envelope_key(&rs->rs_env, sealed)) == NULL) {
			snprintf(wj->wj_msg, sizeof(wj->wj_msg), "is sealed "
			    "under a key the restore point does not list");
			goto out;
		}
		plen -= SEALED_OVERHEAD;
		if ((opened = malloc(plen ? plen : 1)) == NULL) {
			wj->wj_errno = ENOMEM;
			goto out;
		}
		aadlen = crypto_aad(aad, AAD_CHUNK_STORED, sealed,
		    b->chunk_id.data, 0);
		if (crypto_open(dek->kb_key, sealed + KEY_ID_LEN, aad, aadlen,
		    sealed + KEY_ID_LEN + AEAD_NONCE_LEN, plen + AEAD_TAG_LEN,
		    opened) == -1) {
			snprintf(wj->wj_msg, sizeof(wj->wj_msg), "failed "
			    "authentication (AES-GCM tag under its data key); "
			    "the stored chunk is damaged");
			goto out;
		}
		free(plain);
		plain = opened;
		opened = NULL;
	}
	if (b->compressed) {
		if (decompress_block(plain, plen, raw, want) == -1) {
			snprintf(wj->wj_msg, sizeof(wj->wj_msg), "does not "
			    "decompress to %u bytes", want);
			goto out;
		}
		data = raw;
	} else if (plen != want) {
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "has %zu bytes, not "
		    "%u", plen, want);
		goto out;
	} else
		data = plain;
	if (!rs->rs_source_side)
		crypto_sha256(data, want, id);
	else if (chunk_id_keyed(envelope_chunk_key(&rs->rs_env), data, want,
	    id) == -1) {
		wj->wj_errno = ENOMEM;
		goto out;
	}
	if (memcmp(id, b->chunk_id.data, CHUNK_ID_LEN) != 0) {
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "does not match its "
		    "checksum (SHA-256); the stored chunk is damaged");
		goto out;
	}
	if (!rs->rs_verify && restore_write(rs, data, want,
	    b->index * rs->rs_block_size) == -1) {
		wj->wj_errno = errno;
		snprintf(wj->wj_msg, sizeof(wj->wj_msg), "cannot be written: "
		    "%s", strerror(errno));
		goto out;
	}
	wj->wj_errno = 0;
 out:
	free(plain);
	free(raw);
	free(opened);
	frame_free(f);
	free(wj->wj_frame);
	wj->wj_frame = NULL;
	crypto_wipe(wj->wj_key, sizeof(wj->wj_key));
}

static void
restore_fail(struct restore *rs, int code, const char *what)
{
	client_finish(rs->rs_client, code, "%s of %s/%s failed: %s%s%s%s",
	    rs->rs_verify ? "verify" : "restore", rs->rs_name,
	    rs->rs_point[0] ? rs->rs_point : "(newest)", what,
	    rs->rs_verify ? "" : "; ", rs->rs_verify ? "" : rs->rs_output,
	    rs->rs_verify ? "" : " was not written");
}

static void
write_done(struct pool_job *pj)
{
	struct write_job	*wj = (struct write_job *)pj;
	struct restore		*rs = wj->wj_restore;
	struct restore_conn	*rc = wj->wj_conn;
	struct client		*cl = rs->rs_client;
	Frame			 f = FRAME__INIT;
	Credit			 c = CREDIT__INIT;
	char			 msg[400];

	rs->rs_jobs--;
	if (cl->cl_done)
		goto out;
	if (wj->wj_errno == EBADMSG && rs->rs_verify &&
	    wj->wj_index != UINT64_MAX) {
		/* Verify: name the damage and go on. */
		rs->rs_damaged++;
		printf("damaged: block %llu (offset %llu) %s\n",
		    (unsigned long long)wj->wj_index,
		    (unsigned long long)wj->wj_index * rs->rs_block_size,
		    wj->wj_msg);
		wj->wj_errno = 0;
	} else if (wj->wj_errno != 0) {
		if (wj->wj_index == UINT64_MAX)
			snprintf(msg, sizeof(msg), "%s", wj->wj_msg);
		else
			snprintf(msg, sizeof(msg), "block %llu (offset %llu) "
			    "%s", (unsigned long long)wj->wj_index,
			    (unsigned long long)wj->wj_index *
			    rs->rs_block_size, wj->wj_msg);
		restore_fail(rs, wj->wj_errno == EBADMSG ? EXIT_INTEGRITY :
		    wj->wj_errno == ENOMEM ? EXIT_ERROR : EXIT_INPUT, msg);
		goto out;
	}
	if (rs->rs_seen[wj->wj_index / 8] & (1u << (wj->wj_index % 8))) {
		restore_fail(rs, EXIT_INTEGRITY, "the target sent a block "
		    "twice");
		goto out;
	}
	rs->rs_seen[wj->wj_index / 8] |= 1u << (wj->wj_index % 8);
	if (restore_has_ids(rs)) {
		/* The prefix now in the output, for the resume state. */
		while (rs->rs_mark < rs->rs_blocks &&
		    (!restore_needed(rs, rs->rs_mark) ||
		    bit_isset(rs->rs_seen, rs->rs_mark)))
			rs->rs_mark++;
		restore_checkpoint(rs);
	}
	rs->rs_written++;
	rs->rs_bytes_written += restore_block_len(rs, wj->wj_index);
	METRICS_ADD(metrics.mt_bytes_written, NULL,
	    restore_block_len(rs, wj->wj_index));
	/* Credit goes back on the connection the block came on. */
	rc->rc_uncredited += wj->wj_len + FRAME_HDR_LEN;
	progress_update(&rs->rs_progress, rs->rs_bytes_written,
	    rs->rs_bytes_in);
	if (rc->rc_uncredited >= SOURCE_CREDIT_STEP) {
		c.bytes = rc->rc_uncredited;
		rc->rc_uncredited = 0;
		f.msg_case = FRAME__MSG_CREDIT;
		f.credit = &c;
		client_send(rc->rc_client, &f);
	}
	restore_read_again(rs);
	restore_maybe_done(rs);
 out:
	free(wj->wj_frame);
	free(wj);
}

/* Writes st to path atomically and durably.  0 or -1 with errno. */
static int
restore_state_write(const char *path, const struct restore_state *st)
{
	char	 tmp[PATH_MAX + 8], dir[PATH_MAX], hex[2 * CHUNK_ID_LEN + 1];
	int	 fd = -1, dfd, save;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >=
	    sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	hex_encode(st->st_digest, CHUNK_ID_LEN, hex);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1)
		return -1;
	if (dprintf(fd, "%s\nname %s\npoint %s\npartial %s\ndisk_size %llu\n"
	    "block_size %u\nindex_sha256 %s\nblocks_done %llu\n",
	    RESTORE_STATE_MAGIC, st->st_name, st->st_point, st->st_partial,
	    (unsigned long long)st->st_disk_size, st->st_block_size, hex,
	    (unsigned long long)st->st_done) < 0 || fsync(fd) == -1 ||
	    close(fd) == -1) {
		save = errno;
		if (fd != -1)
			(void)close(fd);
		unlink(tmp);
		errno = save;
		return -1;
	}
	if (rename(tmp, path) == -1) {
		save = errno;
		unlink(tmp);
		errno = save;
		return -1;
	}
	snprintf(dir, sizeof(dir), "%s", path);
	if ((dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) != -1) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}

/*
 * Reads a state file into st, checking every field.  1 if read, 0 if
 * there is none, -1 with a reason in why if it is damaged.
 */
static int
restore_state_read(const char *path, struct restore_state *st, char *why,
    size_t whylen)
{
	char		 buf[RESTORE_STATE_MAX + 1], *line, *next, *val, *end;
	unsigned long long v;
	ssize_t		 n;
	unsigned	 seen = 0, bit;
	int		 fd;

	memset(st, 0, sizeof(*st));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(why, whylen, "%s", strerror(errno));
		return -1;
	}
	n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n < 0 || n > RESTORE_STATE_MAX) {
		snprintf(why, whylen, "%s", n < 0 ? strerror(errno) :
		    "too large");
		return -1;
	}
	buf[n] = '\0';
	if (strncmp(buf, RESTORE_STATE_MAGIC "\n",
	    sizeof(RESTORE_STATE_MAGIC)) != 0) {
		snprintf(why, whylen, "not a restore state file");
		return -1;
	}
	for (line = buf + sizeof(RESTORE_STATE_MAGIC); *line != '\0';
	    line = next) {
		if ((next = strchr(line, '\n')) == NULL)
			goto bad;
		*next++ = '\0';
		if ((val = strchr(line, ' ')) == NULL)
			goto bad;
		*val++ = '\0';
		v = 0;
		if (strcmp(line, "disk_size") == 0 || strcmp(line,
		    "block_size") == 0 || strcmp(line, "blocks_done") == 0) {
			errno = 0;
			v = strtoull(val, &end, 10);
			if (errno != 0 || end == val || *end != '\0' ||
			    *val == '-')
				goto bad;
		}
		if (strcmp(line, "name") == 0 && name_is_valid(val)) {
			bit = 1;
			snprintf(st->st_name, sizeof(st->st_name), "%s", val);
		} else if (strcmp(line, "point") == 0 && *val != '\0' &&
		    strlen(val) < sizeof(st->st_point) &&
		    strspn(val, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "abcdefghijklmnopqrstuvwxyz-") == strlen(val)) {
			bit = 2;
			snprintf(st->st_point, sizeof(st->st_point), "%s", val);
		} else if (strcmp(line, "partial") == 0 && *val != '\0' &&
		    strlen(val) < sizeof(st->st_partial) &&
		    strchr(val, '/') == NULL) {
			bit = 4;
			snprintf(st->st_partial, sizeof(st->st_partial), "%s",
			    val);
		} else if (strcmp(line, "disk_size") == 0 && v > 0) {
			bit = 8;
			st->st_disk_size = v;
		} else if (strcmp(line, "block_size") == 0 &&
		    v >= BLOCK_SIZE_MIN && v <= BLOCK_SIZE_MAX) {
			bit = 16;
			st->st_block_size = (uint32_t)v;
		} else if (strcmp(line, "index_sha256") == 0 &&
		    strlen(val) == 2 * CHUNK_ID_LEN && hex_decode(val,
		    st->st_digest, CHUNK_ID_LEN) == 0) {
			bit = 32;
		} else if (strcmp(line, "blocks_done") == 0) {
			bit = 64;
			st->st_done = v;
		} else
			goto bad;
		if (seen & bit)
			goto bad;
		seen |= bit;
	}
	if (seen != 127 || st->st_done > (st->st_disk_size +
	    st->st_block_size - 1) / st->st_block_size)
		goto bad;
	st->st_valid = 1;
	return 1;
 bad:
	memset(st, 0, sizeof(*st));
	snprintf(why, whylen, "a field is missing, repeated or malformed");
	return -1;
}

/* st from this attempt's progress: done blocks are in the output. */
static void
restore_state_fill(struct restore *rs, struct restore_state *st,
    uint64_t done)
{
	const char	*base = strrchr(rs->rs_tmp, '/');

	memset(st, 0, sizeof(*st));
	st->st_valid = 1;
	snprintf(st->st_name, sizeof(st->st_name), "%s", rs->rs_name);
	snprintf(st->st_point, sizeof(st->st_point), "%s", rs->rs_point);
	/* "-": a block device, written in place. */
	snprintf(st->st_partial, sizeof(st->st_partial), "%.*s",
	    (int)sizeof(st->st_partial) - 1, base != NULL ? base + 1 :
	    rs->rs_tmp[0] != '\0' ? rs->rs_tmp : "-");
	st->st_disk_size = rs->rs_disk_size;
	st->st_block_size = rs->rs_block_size;
	memcpy(st->st_digest, rs->rs_digest, CHUNK_ID_LEN);
	st->st_done = done;
}

static void
ckpt_work(struct pool_job *pj)
{
	struct ckpt_job	*cj = (struct ckpt_job *)pj;
	struct restore	*rs = cj->cj_restore;

	if (fsync(rs->rs_fd) == -1 ||
	    restore_state_write(rs->rs_state_path, &cj->cj_st) == -1)
		cj->cj_errno = errno;
}

static void
ckpt_done(struct pool_job *pj)
{
	struct ckpt_job	*cj = (struct ckpt_job *)pj;
	struct restore	*rs = cj->cj_restore;

	rs->rs_jobs--;
	rs->rs_ckpt_busy = 0;
	if (rs->rs_client->cl_done)
		goto out;
	if (cj->cj_errno != 0) {
		if (!rs->rs_ckpt_warned)
			log_warnx("cannot save the resume state %s: %s; if "
			    "interrupted, this restore starts over",
			    rs->rs_state_path, strerror(cj->cj_errno));
		rs->rs_ckpt_warned = 1;
	} else
		rs->rs_ckpt_mark = cj->cj_st.st_done;
	restore_read_again(rs);
	restore_maybe_done(rs);
 out:
	free(cj);
}

/*
 * Records the prefix in the output, once a second or every
 * RESTORE_CKPT_BYTES, by a job in the pool (the fsync may take a
 * while): where a state file is kept, one job at a time.
 */
static void
restore_checkpoint(struct restore *rs)
{
	struct ckpt_job	*cj;
	uint64_t	 now = now_ms();

	if (rs->rs_state_path[0] == '\0' || rs->rs_ckpt_busy ||
	    rs->rs_mark <= rs->rs_ckpt_mark || rs->rs_ckpt_warned ||
	    (now - rs->rs_ckpt_ms < RESTORE_CKPT_MS && (rs->rs_mark -
	    rs->rs_ckpt_mark) * rs->rs_block_size < RESTORE_CKPT_BYTES))
		return;
	if ((cj = calloc(1, sizeof(*cj))) == NULL)
		return;
	cj->cj_job.pj_work = ckpt_work;
	cj->cj_job.pj_done = ckpt_done;
	cj->cj_restore = rs;
	restore_state_fill(rs, &cj->cj_st, rs->rs_mark);
	rs->rs_ckpt_busy = 1;
	rs->rs_ckpt_ms = now;
	rs->rs_jobs++;
	pool_submit(rs->rs_client->cl_pool, &cj->cj_job);
}

/* A Block frame on connection rc goes to the pool; buf is ours. */
static void
restore_take_block(struct restore_conn *rc, uint8_t *buf, size_t len)
{
	struct restore		*rs = rc->rc_restore;
	struct client		*cl = rc->rc_client;
	struct write_job	*wj;

	if (!rs->rs_begun || rc->rc_ended) {
		free(buf);
		restore_fail(rs, EXIT_ERROR, "protocol error: a block outside "
		    "the restore");
		return;
	}
	if (rs->rs_received >= rs->rs_expected) {
		free(buf);
		restore_fail(rs, EXIT_INTEGRITY, "the target sent more blocks "
		    "than it announced");
		return;
	}
	if ((wj = calloc(1, sizeof(*wj))) == NULL) {
		free(buf);
		restore_fail(rs, EXIT_ERROR, "out of memory");
		return;
	}
	wj->wj_job.pj_work = write_work;
	wj->wj_job.pj_done = write_done;
	wj->wj_restore = rs;
	wj->wj_conn = rc;
	wj->wj_frame = buf;
	wj->wj_len = len;
	memcpy(wj->wj_key, cl->cl_key_in, AEAD_KEY_LEN);
	rs->rs_received++;
	rc->rc_received++;
	rs->rs_bytes_in += len + FRAME_HDR_LEN;
	rs->rs_jobs++;
	pool_submit(cl->cl_pool, &wj->wj_job);
	if (rs->rs_jobs >= rs->rs_max_jobs) {
		rc->rc_paused = 1;
		client_pause(cl);
	}
}

static void
restore_block(struct client *cl, uint8_t *buf, size_t len, void *arg)
{
	struct restore	*rs = arg;

	restore_take_block(&rs->rs_conns[0], buf, len);
}

/* Is name a partial file of this output (so ours to reuse or remove)? */
static int
restore_partial_ours(const struct restore *rs, const char *name)
{
	char		 out[PATH_MAX];
	const char	*base;
	size_t		 len;

	snprintf(out, sizeof(out), "%s", rs->rs_output);
	base = basename(out);
	len = strlen(base);
	return strncmp(name, base, len) == 0 &&
	    strncmp(name + len, ".partial-", 9) == 0 && strchr(name, '/') ==
	    NULL;
}

/* dir/name for the output's directory. */
static int
restore_sibling(const struct restore *rs, const char *name, char *path,
    size_t len)
{
	char	 dir[PATH_MAX];

	snprintf(dir, sizeof(dir), "%s", rs->rs_output);
	if ((size_t)snprintf(path, len, "%s/%s", dirname(dir), name) >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* Forgets the resume state: its file, and the partial output it names. */
static void
restore_state_discard(struct restore *rs)
{
	char	 path[PATH_MAX];

	if (rs->rs_st.st_valid && restore_partial_ours(rs,
	    rs->rs_st.st_partial) && restore_sibling(rs, rs->rs_st.st_partial,
	    path, sizeof(path)) == 0 && strcmp(path, rs->rs_tmp) != 0)
		unlink(path);
	if (rs->rs_state_path[0] != '\0')
		unlink(rs->rs_state_path);
	memset(&rs->rs_st, 0, sizeof(rs->rs_st));
}

/*
 * The resume state of the output: for a regular file, beside it, naming
 * the partial file to reopen; for a block device (rs_device, rs_fd
 * open), in the state directory, the device itself.  0 if resuming
 * (rs_fd, and for a file rs_tmp, set), 1 if there is nothing to resume,
 * -1 after a message if another restore is writing it.
 */
static int
restore_state_load(struct restore *rs)
{
	struct stat	 st;
	char		 why[256], path[PATH_MAX];
	int		 r, fd;

	if ((r = restore_state_read(rs->rs_state_path, &rs->rs_st, why,
	    sizeof(why))) == 0)
		return 1;
	if (r == -1) {
		log_warnx("resume state %s is damaged (%s); restoring from the "
		    "start", rs->rs_state_path, why);
		restore_state_discard(rs);
		return 1;
	}
	if (strcmp(rs->rs_st.st_name, rs->rs_name) != 0 ||
	    (rs->rs_point_id != NULL && strcmp(rs->rs_st.st_point,
	    rs->rs_point_id) != 0)) {
		log_warnx("resume state %s is for restore point %s/%s, not "
		    "%s/%s; ignoring it and restoring from the start",
		    rs->rs_state_path, rs->rs_st.st_name, rs->rs_st.st_point,
		    rs->rs_name, rs->rs_point_id ? rs->rs_point_id : "(newest)");
		restore_state_discard(rs);
		return 1;
	}
	if (rs->rs_device) {
		if (strcmp(rs->rs_st.st_partial, "-") == 0)
			return 0;
		log_warnx("resume state %s is not one of a block device; "
		    "restoring from the start", rs->rs_state_path);
		restore_state_discard(rs);
		return 1;
	}
	if (!restore_partial_ours(rs, rs->rs_st.st_partial) ||
	    restore_sibling(rs, rs->rs_st.st_partial, path,
	    sizeof(path)) == -1 || (fd = open(path, O_RDWR | O_CLOEXEC |
	    O_NOFOLLOW)) == -1) {
		log_warnx("resume state %s names a partial output %s that is "
		    "not there (%s); restoring from the start",
		    rs->rs_state_path, rs->rs_st.st_partial,
		    restore_partial_ours(rs, rs->rs_st.st_partial) ?
		    strerror(errno) : "not a partial file of this output");
		restore_state_discard(rs);
		return 1;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		log_warnx("partial output %s is not a regular file; restoring "
		    "from the start", path);
		restore_state_discard(rs);
		return 1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		close(fd);
		log_warnx("another restore is writing %s (%s); wait for it or "
		    "stop it first", rs->rs_output, path);
		memset(&rs->rs_st, 0, sizeof(rs->rs_st));
		rs->rs_state_path[0] = '\0';
		return -1;
	}
	rs->rs_fd = fd;
	snprintf(rs->rs_tmp, sizeof(rs->rs_tmp), "%s", path);
	return 0;
}

/*
 * Opens the output: a block device in place, else a temporary file
 * beside the path (an interrupted restore's, if its state says so).
 */
static int
restore_open_output(struct restore *rs)
{
	struct stat	 st;
	int		 exists, r;

	exists = stat(rs->rs_output, &st) == 0;
	if (exists && S_ISBLK(st.st_mode)) {
		rs->rs_device = 1;
		/* Read too: a resumed attempt checks what it wrote. */
		if ((rs->rs_fd = open(rs->rs_output, O_RDWR | O_CLOEXEC)) ==
		    -1)
			goto fail;
		if (flock(rs->rs_fd, LOCK_EX | LOCK_NB) == -1) {
			log_warnx("another restore is writing %s; wait for it "
			    "or stop it first", rs->rs_output);
			return -1;
		}
		/* Its state, by device number: any path to it finds it. */
		if (rs->rs_state_dir == NULL || (size_t)snprintf(
		    rs->rs_state_path, sizeof(rs->rs_state_path),
		    "%s/restore-dev-%u-%u" RESTORE_STATE_SUFFIX,
		    rs->rs_state_dir, major(st.st_rdev), minor(st.st_rdev)) >=
		    sizeof(rs->rs_state_path) || (mkdir(rs->rs_state_dir,
		    0700) == -1 && errno != EEXIST)) {
			log_warnx("no resume state for %s (state_directory "
			    "%s): an interrupted run starts again from the "
			    "first block", rs->rs_output, rs->rs_state_dir ?
			    rs->rs_state_dir : "unset");
			rs->rs_state_path[0] = '\0';
			return 0;
		}
		return restore_state_load(rs) == -1 ? -1 : 0;
	}
	if (exists && !S_ISREG(st.st_mode)) {
		log_warnx("output %s is neither a regular file nor a block "
		    "device", rs->rs_output);
		return -1;
	}
	if (exists && !rs->rs_force) {
		log_warnx("output %s already exists; use --force to replace "
		    "it", rs->rs_output);
		return -1;
	}
	if ((size_t)snprintf(rs->rs_state_path, sizeof(rs->rs_state_path),
	    "%s" RESTORE_STATE_SUFFIX, rs->rs_output) >=
	    sizeof(rs->rs_state_path)) {
		errno = ENAMETOOLONG;
		goto fail;
	}
	if ((r = restore_state_load(rs)) == -1)
		return -1;
	if (r == 0)
		return 0;
	if ((size_t)snprintf(rs->rs_tmp, sizeof(rs->rs_tmp),
	    "%s.partial-XXXXXX", rs->rs_output) >= sizeof(rs->rs_tmp)) {
		errno = ENAMETOOLONG;
		goto fail;
	}
	if ((rs->rs_fd = mkostemp(rs->rs_tmp, O_CLOEXEC)) == -1) {
		rs->rs_tmp[0] = '\0';
		goto fail;
	}
	(void)flock(rs->rs_fd, LOCK_EX | LOCK_NB);
	return 0;
 fail:
	log_warnx("cannot write output %s: %s", rs->rs_output,
	    strerror(errno));
	return -1;
}

/*
 * A block device is written in place: zero every block the restore
 * point has as zero, since the device may hold old data there.
 * Contiguous runs go to BLKZEROOUT, or to plain writes where the
 * device does not support it.  Returns 0 or -1 with errno.
 */
static int
restore_zero_unwritten(struct restore *rs)
{
	static const uint8_t	 zero[64 << 10];
	uint64_t		 i, j, range[2], off, end;
	size_t			 n;

	/* Below rs_from the check put zero blocks right already. */
	i = rs->rs_from;
	while (i < rs->rs_blocks) {
		if (!restore_is_zero(rs, i)) {
			i++;
			continue;
		}
		for (j = i; j < rs->rs_blocks && restore_is_zero(rs, j); j++)
			;
		off = i * rs->rs_block_size;
		end = j * rs->rs_block_size;
		if (end > rs->rs_disk_size)
			end = rs->rs_disk_size;
		range[0] = off;
		range[1] = end - off;
		if (ioctl(rs->rs_fd, BLKZEROOUT, range) == -1) {
			for (; off < end; off += n) {
				n = end - off < sizeof(zero) ?
				    (size_t)(end - off) : sizeof(zero);
				if (write_full(rs->rs_fd, zero, n, off) == -1)
					return -1;
			}
		}
		i = j;
	}
	return 0;
}

/* Makes the written output durable and puts it under its name. */
static int
restore_commit_output(struct restore *rs)
{
	char	 dir[PATH_MAX];
	int	 dfd;

	if (rs->rs_device && restore_zero_unwritten(rs) == -1)
		return -1;
	if (fsync(rs->rs_fd) == -1)
		return -1;
	if (rs->rs_device) {
		if (rs->rs_state_path[0] != '\0')
			unlink(rs->rs_state_path);
		rs->rs_state_path[0] = '\0';
		return 0;
	}
	if (rename(rs->rs_tmp, rs->rs_output) == -1)
		return -1;
	rs->rs_tmp[0] = '\0';
	unlink(rs->rs_state_path);
	rs->rs_state_path[0] = '\0';
	snprintf(dir, sizeof(dir), "%s", rs->rs_output);
	if ((dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) != -1) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}

static void
restore_summary(struct restore *rs)
{
	char		 b1[32], b2[32], b3[32];
	double		 secs = (now_ms() - rs->rs_start_ms) / 1000.0;

	if (secs <= 0)
		secs = 0.001;
	if (rs->rs_json) {
		printf("{\"name\":\"%s\",\"point_id\":\"%s\",\"output\":\"%s\","
		    "\"disk_size\":%llu,\"bytes_written\":%llu,"
		    "\"bytes_received\":%llu,\"blocks\":%llu,"
		    "\"attempts\":%d,\"resumed_from_block\":%llu,"
		    "\"blocks_fetched_again\":%llu,\"connections\":%u,"
		    "\"seconds\":%.3f,\"peak_rss_kib\":%ld}\n", rs->rs_name,
		    rs->rs_point, rs->rs_output,
		    (unsigned long long)rs->rs_disk_size,
		    (unsigned long long)rs->rs_bytes_written,
		    (unsigned long long)rs->rs_bytes_in,
		    (unsigned long long)rs->rs_written, rs->rs_attempts,
		    (unsigned long long)rs->rs_resumed_from,
		    (unsigned long long)rs->rs_refetched,
		    restore_joined_count(rs) + 1, secs, peak_rss_kib());
		return;
	}
	format_bytes(rs->rs_disk_size, b1, sizeof(b1));
	format_bytes(rs->rs_bytes_in, b2, sizeof(b2));
	format_bytes((uint64_t)(rs->rs_disk_size / secs), b3, sizeof(b3));
	printf("restored %s/%s to %s\n", rs->rs_name, rs->rs_point,
	    rs->rs_output);
	printf("  disk      %s (%llu blocks with data, the rest sparse)\n",
	    b1, (unsigned long long)(restore_has_ids(rs) ? rs->rs_blocks -
	    rs->rs_zero_blocks : rs->rs_written));
	printf("  received  %s on %u connection%s\n", b2,
	    restore_joined_count(rs) + 1, restore_joined_count(rs) ? "s" :
	    "");
	if (rs->rs_resumed_from > 0)
		printf("  resumed   at block %llu (%llu written blocks fetched "
		    "again), %d attempt(s)\n",
		    (unsigned long long)rs->rs_resumed_from,
		    (unsigned long long)rs->rs_refetched, rs->rs_attempts);
	printf("  time      %.2f s, %s/s\n", secs, b3);
}

static void
restore_maybe_done(struct restore *rs)
{
	uint64_t	 bad;

	if (!rs->rs_ended || rs->rs_jobs > 0 || rs->rs_client->cl_done)
		return;
	if (rs->rs_verify) {
		bad = rs->rs_damaged + rs->rs_target_damaged;
		progress_end(&rs->rs_progress);
		if (rs->rs_json)
			printf("{\"name\":\"%s\",\"point_id\":\"%s\","
			    "\"blocks\":%llu,\"damaged\":%llu}\n",
			    rs->rs_name, rs->rs_point,
			    (unsigned long long)rs->rs_expected,
			    (unsigned long long)bad);
		if (bad > 0) {
			client_finish(rs->rs_client, EXIT_INTEGRITY, "verify of "
			    "%s/%s: %llu of %llu blocks damaged (listed above)",
			    rs->rs_name, rs->rs_point, (unsigned long long)bad,
			    (unsigned long long)rs->rs_expected);
			return;
		}
		if (!rs->rs_json)
			printf("verified %s/%s: %llu blocks with data, every "
			    "one intact (tags, checksums, chunk ids)\n",
			    rs->rs_name, rs->rs_point,
			    (unsigned long long)rs->rs_expected);
		client_finish(rs->rs_client, EXIT_OK, NULL);
		return;
	}
	if (rs->rs_written != rs->rs_expected) {
		restore_fail(rs, EXIT_INTEGRITY, "blocks are missing");
		return;
	}
	if (restore_commit_output(rs) == -1) {
		restore_fail(rs, EXIT_INPUT, strerror(errno));
		return;
	}
	progress_end(&rs->rs_progress);
	restore_summary(rs);
	client_finish(rs->rs_client, EXIT_OK, NULL);
}

/*
 * A source-side point: every key it needs must open before a block is
 * written (fail closed).  0, or -1 after finishing with EXIT_KEY.
 */
static int
restore_open_keys(struct restore *rs, const RestoreBegin *rb)
{
	char	 err[2048];

	rs->rs_source_side = 1;
	if (envelope_load_password(&rs->rs_env, err, sizeof(err)) == -1 ||
	    envelope_open(&rs->rs_env, rb->point, rb->keychain.data,
	    rb->keychain.len, err, sizeof(err)) == -1) {
		restore_fail(rs, EXIT_KEY, err);
		return -1;
	}
	return 0;
}

/* Sends the request for the blocks this attempt still needs. */
static void
restore_request_blocks(struct restore *rs)
{
	Frame		 f = FRAME__INIT;
	RestoreRequest	 rr = RESTORE_REQUEST__INIT;
	uint64_t	*resend = NULL, i, n = 0, expected;

	if (rs->rs_nbad > 0 && (resend = calloc(rs->rs_nbad <
	    RESTORE_RESEND_MAX ? rs->rs_nbad : RESTORE_RESEND_MAX,
	    sizeof(*resend))) == NULL) {
		restore_fail(rs, EXIT_ERROR, "out of memory");
		return;
	}
	for (i = 0; i < rs->rs_from && rs->rs_nbad > 0; i++) {
		if (!bit_isset(rs->rs_bad, i))
			continue;
		if (n == RESTORE_RESEND_MAX) {
			/* Too many to list: ask for everything from here. */
			rs->rs_from = i;
			break;
		}
		resend[n++] = i;
	}
	rs->rs_refetched += n;
	for (expected = n, i = rs->rs_from; i < rs->rs_blocks; i++)
		if (!restore_is_zero(rs, i))
			expected++;
	rs->rs_expected = expected;
	rr.name = (char *)rs->rs_name;
	rr.point_id = rs->rs_point;
	rr.from = rs->rs_from;
	rr.n_resend = n;
	rr.resend = resend;
	rr.connections = (uint32_t)rs->rs_client->cl_conf->sc_connections;
	f.msg_case = FRAME__MSG_RESTORE_REQUEST;
	f.restore_request = &rr;
	rs->rs_phase = RP_STREAM;
	rs->rs_announced = 0;
	client_send(rs->rs_client, &f);
	free(resend);
}

/* Worker: reads blocks back and compares them with the index. */
static void
check_work(struct pool_job *pj)
{
	struct check_job	*ck = (struct check_job *)pj;
	struct restore		*rs = ck->ck_restore;
	uint8_t			*buf, id[CHUNK_ID_LEN];
	uint64_t		 i, off;
	uint32_t		 len;
	ssize_t			 n;
	size_t			 got;

	if ((buf = malloc(rs->rs_block_size)) == NULL) {
		ck->ck_errno = ENOMEM;
		return;
	}
	for (i = ck->ck_first; i < ck->ck_end; i++) {
		ck->ck_at = i;
		len = restore_block_len(rs, i);
		off = i * rs->rs_block_size;
		for (got = 0; got < len; got += (size_t)n) {
			n = pread(rs->rs_fd, buf + got, len - got,
			    (off_t)(off + got));
			if (n == -1 && errno == EINTR) {
				n = 0;
				continue;
			}
			if (n <= 0)
				break;
		}
		if (got < len) {
			ck->ck_errno = n == 0 ? EIO : errno;
			break;
		}
		if (restore_is_zero(rs, i)) {
			if (buf_is_zero(buf, len))
				continue;
			/* Put right here: zero blocks are never sent. */
			memset(buf, 0, len);
			if (restore_write(rs, buf, len, off) == -1) {
				ck->ck_errno = errno;
				break;
			}
			ck->ck_zeroed++;
			continue;
		}
		if (!rs->rs_source_side)
			crypto_sha256(buf, len, id);
		else if (chunk_id_keyed(envelope_chunk_key(&rs->rs_env), buf,
		    len, id) == -1) {
			ck->ck_errno = ENOMEM;
			break;
		}
		if (memcmp(id, id_map_get(&rs->rs_ids, i), CHUNK_ID_LEN) !=
		    0) {
			/* ck_first is a multiple of 8: this byte is ours. */
			rs->rs_bad[i / 8] |= 1u << (i % 8);
			ck->ck_bad++;
		}
	}
	free(buf);
}

static void	restore_check_pump(struct restore *);

static void
check_done(struct pool_job *pj)
{
	struct check_job	*ck = (struct check_job *)pj;
	struct restore		*rs = ck->ck_restore;
	char			 msg[PATH_MAX + 256];

	rs->rs_jobs--;
	rs->rs_check_jobs--;
	if (rs->rs_client->cl_done)
		goto out;
	if (ck->ck_errno != 0) {
		snprintf(msg, sizeof(msg), "cannot read back block %llu of the "
		    "interrupted restore in %s: %s",
		    (unsigned long long)ck->ck_at, rs->rs_tmp[0] ? rs->rs_tmp :
		    rs->rs_output, strerror(ck->ck_errno));
		restore_fail(rs, EXIT_INPUT, msg);
		goto out;
	}
	rs->rs_nbad += ck->ck_bad;
	rs->rs_zeroed += ck->ck_zeroed;
	if (now_ms() - rs->rs_keepalive_ms >= RESTORE_KEEPALIVE_MS) {
		/* A long check: an empty Credit keeps the target's idle
		 * timer from closing the session meanwhile. */
		Frame	 f = FRAME__INIT;
		Credit	 c = CREDIT__INIT;

		f.msg_case = FRAME__MSG_CREDIT;
		f.credit = &c;
		client_send(rs->rs_client, &f);
		rs->rs_keepalive_ms = now_ms();
	}
	restore_check_pump(rs);
 out:
	free(ck);
}

/* Hands out check jobs; when all are done, asks for the blocks. */
static void
restore_check_pump(struct restore *rs)
{
	struct check_job	*ck;

	while (rs->rs_check_next < rs->rs_from &&
	    rs->rs_jobs < rs->rs_max_jobs) {
		if ((ck = calloc(1, sizeof(*ck))) == NULL) {
			restore_fail(rs, EXIT_ERROR, "out of memory");
			return;
		}
		ck->ck_job.pj_work = check_work;
		ck->ck_job.pj_done = check_done;
		ck->ck_restore = rs;
		ck->ck_first = rs->rs_check_next;
		ck->ck_end = rs->rs_from - ck->ck_first > RESTORE_CHECK_BLOCKS ?
		    ck->ck_first + RESTORE_CHECK_BLOCKS : rs->rs_from;
		rs->rs_check_next = ck->ck_end;
		rs->rs_jobs++;
		rs->rs_check_jobs++;
		pool_submit(rs->rs_client->cl_pool, &ck->ck_job);
	}
	if (rs->rs_check_next < rs->rs_from || rs->rs_check_jobs > 0)
		return;
	/* A block device's zero blocks are zeroed only at the end. */
	if (rs->rs_nbad > 0 || (rs->rs_zeroed > 0 && rs->rs_tmp[0] != '\0'))
		log_warnx("restore of %s/%s: %llu of the %llu blocks already "
		    "written differ from the restore point (the output was "
		    "changed meanwhile): %llu fetched again, %llu zeroed",
		    rs->rs_name, rs->rs_point,
		    (unsigned long long)(rs->rs_nbad + rs->rs_zeroed),
		    (unsigned long long)rs->rs_from,
		    (unsigned long long)rs->rs_nbad,
		    (unsigned long long)rs->rs_zeroed);
	restore_request_blocks(rs);
	client_resume(rs->rs_client);
}

/*
 * The index is complete: decide where to start.  The resume state is
 * used only for the same point with the same chunk ids, and then only
 * after every block below its mark has been read back and checked.
 */
static void
restore_plan(struct restore *rs)
{
	struct restore_state	*st = &rs->rs_st;
	const char		*where = rs->rs_state_path[0] ?
				    rs->rs_state_path : "in memory";
	uint64_t		 from = 0, keep;

	if (st->st_valid && strcmp(st->st_point, rs->rs_point) != 0)
		log_warnx("resume state %s is for restore point %s/%s, not "
		    "%s; ignoring it and restoring from the start", where,
		    st->st_name, st->st_point, rs->rs_point);
	else if (st->st_valid && (st->st_disk_size != rs->rs_disk_size ||
	    st->st_block_size != rs->rs_block_size ||
	    memcmp(st->st_digest, rs->rs_digest, CHUNK_ID_LEN) != 0))
		log_warnx("resume state %s does not match restore point %s/%s "
		    "(its size or chunk ids differ); ignoring it and restoring "
		    "from the start", where, rs->rs_name, rs->rs_point);
	else if (st->st_valid)
		from = st->st_done;
	rs->rs_from = from;
	rs->rs_check_next = 0;
	/* A partial file keeps only the checked prefix; the rest is holes. */
	keep = from * rs->rs_block_size;
	if (keep > rs->rs_disk_size)
		keep = rs->rs_disk_size;
	if (rs->rs_tmp[0] != '\0' && (ftruncate(rs->rs_fd, (off_t)keep) ==
	    -1 || ftruncate(rs->rs_fd, (off_t)rs->rs_disk_size) == -1)) {
		restore_fail(rs, EXIT_INPUT, strerror(errno));
		return;
	}
	rs->rs_resumed_from = from;
	if (from == 0) {
		restore_request_blocks(rs);
		return;
	}
	log_info("resuming restore of %s/%s at block %llu of %llu; checking "
	    "the blocks already written", rs->rs_name, rs->rs_point,
	    (unsigned long long)from, (unsigned long long)rs->rs_blocks);
	rs->rs_phase = RP_CHECK;
	/* Nothing is due from the target: no read timeout meanwhile. */
	client_pause(rs->rs_client);
	rs->rs_keepalive_ms = now_ms();
	restore_check_pump(rs);
}

/*
 * A piece of the point's chunk ids.  In order, inside the announced
 * size, the zero count as announced: else -1, a protocol error.
 */
static int
restore_index(struct restore *rs, const BaseIndex *bi)
{
	size_t		 n = bi->ids.len / CHUNK_ID_LEN;
	uint64_t	 i, zero = 0;

	if (rs->rs_phase != RP_INDEX || !rs->rs_announced ||
	    bi->ids.len % CHUNK_ID_LEN != 0 ||
	    strcmp(bi->point_id, rs->rs_point) != 0 ||
	    bi->blocks != rs->rs_blocks || bi->first != rs->rs_index_got ||
	    n > rs->rs_blocks - rs->rs_index_got ||
	    (bi->last && rs->rs_index_got + n != rs->rs_blocks))
		return -1;
	id_map_put(&rs->rs_ids, rs->rs_index_got, bi->ids.data, n);
	rs->rs_index_got += n;
	if (!bi->last)
		return 0;
	for (i = 0; i < rs->rs_blocks; i++)
		if (restore_is_zero(rs, i))
			zero++;
	if (zero != rs->rs_zero_blocks)
		return -1;
	if (id_map_sha256(&rs->rs_ids, rs->rs_digest) == -1) {
		restore_fail(rs, EXIT_ERROR, strerror(errno));
		return 0;
	}
	restore_plan(rs);
	return 0;
}

static void
restore_ready(struct client *cl, void *arg)
{
	struct restore	*rs = arg;
	Frame		 f = FRAME__INIT;
	RestoreRequest	 rr = RESTORE_REQUEST__INIT;

	rr.name = (char *)rs->rs_name;
	rr.point_id = (char *)(rs->rs_point_id ? rs->rs_point_id : "");
	/* A later attempt asks for the point the first one was given. */
	if (rs->rs_point[0] != '\0')
		rr.point_id = rs->rs_point;
	rr.verify = rs->rs_verify;
	/* A restore learns the chunk ids first; verify only streams. */
	rr.index = !rs->rs_verify;
	if (rs->rs_verify)
		rr.connections = (uint32_t)cl->cl_conf->sc_connections;
	rs->rs_phase = rs->rs_verify ? RP_STREAM : RP_INDEX;
	f.msg_case = FRAME__MSG_RESTORE_REQUEST;
	f.restore_request = &rr;
	client_send(cl, &f);
	if (rs->rs_start_ms == 0)
		rs->rs_start_ms = now_ms();
}

/*
 * A restore of the newest point: it must not be older than the newest
 * point this source committed of the name (chain.c), or the disk would
 * silently come back in an older state.  0, or -1 after finishing with
 * exit 9.
 */
static int
restore_went_back(struct restore *rs, const PointInfo *pi)
{
	struct state_entry	 e;
	char			 msg[512];

	if (!chain_known(rs->rs_client->cl_conf, rs->rs_name, &e) ||
	    strcmp(e.se_id, pi->point_id) == 0 || e.se_sequence == 0 ||
	    pi->sequence == 0 || pi->sequence > e.se_sequence)
		return 0;
	(void)snprintf(msg, sizeof(msg), "the target went back: this source "
	    "committed %s/%s (#%llu), its newest is %s (#%llu); restore that "
	    "one with --point %s, or take the target's state with "
	    "'source-transporter list --name %s --accept-rollback'",
	    rs->rs_name, e.se_id, (unsigned long long)e.se_sequence,
	    pi->point_id, (unsigned long long)pi->sequence, pi->point_id,
	    rs->rs_name);
	restore_fail(rs, EXIT_ROLLBACK, msg);
	return -1;
}

/*
 * RestoreBegin: the point must be possible, and on every later
 * announcement the same.  0, or -1 after finishing.
 */
static int
restore_announced(struct restore *rs, const RestoreBegin *rb)
{
	const PointInfo	*pi = rb->point;
	char		 msg[NAME_MAX_LEN + 128];

	if (pi == NULL || pi->block_size < BLOCK_SIZE_MIN ||
	    pi->block_size > BLOCK_SIZE_MAX || pi->disk_size == 0 ||
	    pi->disk_size / pi->block_size > (1ull << 30) ||
	    rb->blocks > pi->blocks || pi->zero_blocks > pi->blocks ||
	    pi->blocks != (pi->disk_size + pi->block_size - 1) /
	    pi->block_size || strlen(pi->point_id) >= sizeof(rs->rs_point) ||
	    !name_is_valid(pi->name) || !chain_id_ok(pi->point_id)) {
		restore_fail(rs, EXIT_ERROR, "the target announced an "
		    "impossible restore point");
		return -1;
	}
	/* The point asked for, and no other: a target's mix-up is no restore. */
	if (strcmp(pi->name, rs->rs_name) != 0 || (rs->rs_point_id != NULL &&
	    strcmp(pi->point_id, rs->rs_point_id) != 0)) {
		(void)snprintf(msg, sizeof(msg), "the target announced "
		    "restore point %s/%s instead", pi->name, pi->point_id);
		restore_fail(rs, EXIT_INTEGRITY, msg);
		return -1;
	}
	if (rs->rs_point[0] != '\0') {
		if (strcmp(rs->rs_point, pi->point_id) != 0 ||
		    rs->rs_disk_size != pi->disk_size ||
		    rs->rs_block_size != pi->block_size ||
		    rs->rs_zero_blocks != pi->zero_blocks) {
			restore_fail(rs, EXIT_INTEGRITY, "the target announced "
			    "a different restore point on a later request");
			return -1;
		}
	} else {
		if (rs->rs_point_id == NULL && !rs->rs_verify &&
		    restore_went_back(rs, pi) == -1)
			return -1;
		snprintf(rs->rs_point, sizeof(rs->rs_point), "%s",
		    pi->point_id);
		rs->rs_disk_size = pi->disk_size;
		rs->rs_block_size = pi->block_size;
		rs->rs_blocks = pi->blocks;
		rs->rs_zero_blocks = pi->zero_blocks;
	}
	if (pi->mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
	    !rs->rs_source_side && restore_open_keys(rs, rb) == -1)
		return -1;
	rs->rs_announced = 1;
	return 0;
}

/* Extra connections that sent JoinJob. */
static uint32_t
restore_joined_count(const struct restore *rs)
{
	uint32_t	 n = 0;
	int		 i;

	for (i = 1; i < rs->rs_nconns; i++)
		n += rs->rs_conns[i].rc_joined;
	return n;
}

/*
 * A RestoreEnd arrived: once every connection's is in, the counts must
 * add up to what was announced; then the restore completes as its last
 * blocks are written.
 */
static void
restore_ends(struct restore *rs)
{
	int	 i;

	if (!rs->rs_end_first)
		return;
	for (i = 1; i < rs->rs_nconns; i++)
		if (rs->rs_conns[i].rc_joined && !rs->rs_conns[i].rc_ended)
			return;
	rs->rs_ended = 1;
	if (rs->rs_end_blocks != rs->rs_received ||
	    rs->rs_end_damaged != rs->rs_target_damaged ||
	    rs->rs_received + rs->rs_target_damaged != rs->rs_expected) {
		restore_fail(rs, EXIT_INTEGRITY, "the target sent fewer "
		    "blocks than the restore point holds");
		return;
	}
	restore_maybe_done(rs);
}

/* Several connections: when every extra one joined or failed, say so. */
static void
restore_tell_joined(struct restore *rs)
{
	Frame		 f = FRAME__INIT;
	Joined		 j = JOINED__INIT;
	int		 i;

	if (rs->rs_told)
		return;
	for (i = 1; i < rs->rs_nconns; i++)
		if (!rs->rs_conns[i].rc_settled)
			return;
	rs->rs_told = 1;
	j.connections = restore_joined_count(rs);
	f.msg_case = FRAME__MSG_JOINED;
	f.joined = &j;
	client_send(rs->rs_client, &f);
}

/* An extra connection's Hello: it joins the restore. */
static void
join_ready(struct client *cl, void *arg)
{
	struct restore_conn *rc = arg;
	struct restore	*rs = rc->rc_restore;

	client_join(cl, rs->rs_token);
	rc->rc_joined = rc->rc_settled = 1;
	restore_tell_joined(rs);
}

/* An extra connection failed before it joined: left out. */
static void
join_left(struct client *cl, void *arg)
{
	struct restore_conn *rc = arg;

	rc->rc_settled = 1;
	restore_tell_joined(rc->rc_restore);
}

static void
join_block(struct client *cl, uint8_t *buf, size_t len, void *arg)
{
	restore_take_block(arg, buf, len);
}

/* An extra connection's frames: its RestoreEnd, and nothing else. */
static void
join_frame(struct client *cl, const Frame *f, void *arg)
{
	struct restore_conn *rc = arg;
	struct restore	*rs = rc->rc_restore;

	if (f->msg_case == FRAME__MSG_RESTORE_END && rs->rs_begun &&
	    !rc->rc_ended) {
		rc->rc_ended = 1;
		if (f->restore_end->blocks_sent != rc->rc_received) {
			restore_fail(rs, EXIT_INTEGRITY, "the target sent "
			    "fewer blocks than it counted on a connection");
			return;
		}
		restore_ends(rs);
		return;
	}
	client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected %s "
	    "frame on an extra connection of a restore", cl->cl_addr,
	    frame_name(f));
}

static const struct client_ops join_ops = {
	.co_ready = join_ready,
	.co_frame = join_frame,
	.co_block = join_block,
	.co_left = join_left,
};

/*
 * RestoreBegin with a token: open the extra connections, which join
 * once their handshake is done; the target streams after Joined.  One
 * that cannot be opened is left out.
 */
static void
restore_connect_more(struct restore *rs, const RestoreBegin *rb)
{
	struct restore_conn *rc;
	int		 want = (int)rs->rs_client->cl_conf->sc_connections;

	if (rb->job_token.len != JOB_TOKEN_LEN)
		return;
	memcpy(rs->rs_token, rb->job_token.data, JOB_TOKEN_LEN);
	while (rs->rs_nconns < want) {
		rc = &rs->rs_conns[rs->rs_nconns];
		memset(rc, 0, sizeof(*rc));
		rc->rc_restore = rs;
		if ((rc->rc_client = client_add(rs->rs_client, &join_ops,
		    rc)) == NULL) {
			log_warnx("cannot open connection %d of %d to %s; the "
			    "restore goes on with %d", rs->rs_nconns + 1, want,
			    rs->rs_client->cl_addr, rs->rs_nconns);
			break;
		}
		rs->rs_nconns++;
	}
	restore_tell_joined(rs);
}

static void
restore_frame(struct client *cl, const Frame *f, void *arg)
{
	struct restore	*rs = arg;

	switch (f->msg_case) {
	case FRAME__MSG_RESTORE_BEGIN:
		if (rs->rs_announced)
			break;
		if (restore_announced(rs, f->restore_begin) == -1)
			return;
		if (rs->rs_phase == RP_INDEX) {
			id_map_free(&rs->rs_ids);
			free(rs->rs_bad);
			rs->rs_index_got = 0;
			if (id_map_init(&rs->rs_ids, rs->rs_blocks) == -1 ||
			    (rs->rs_bad =
			    calloc((rs->rs_blocks + 7) / 8, 1)) == NULL) {
				restore_fail(rs, EXIT_ERROR, "out of memory");
				return;
			}
			return;
		}
		if (!restore_has_ids(rs)) {
			/* verify asks from the start: every data block. */
			if (f->restore_begin->blocks != rs->rs_blocks -
			    rs->rs_zero_blocks) {
				restore_fail(rs, EXIT_INTEGRITY, "the target "
				    "announced fewer or more blocks than the "
				    "point's data blocks");
				return;
			}
			rs->rs_expected = f->restore_begin->blocks;
		} else if (f->restore_begin->blocks != rs->rs_expected) {
			restore_fail(rs, EXIT_INTEGRITY, "the target announced "
			    "other blocks than were asked for");
			return;
		}
		rs->rs_begun = 1;
		restore_connect_more(rs, f->restore_begin);
		/* Data blocks only: the rest are holes, written at once. */
		progress_start(&rs->rs_progress, "restore",
		    rs->rs_expected * (uint64_t)rs->rs_block_size,
		    rs->rs_json);
		free(rs->rs_seen);
		if ((rs->rs_seen = calloc((rs->rs_blocks + 7) / 8, 1)) ==
		    NULL) {
			restore_fail(rs, EXIT_ERROR, "out of memory");
			return;
		}
		return;
	case FRAME__MSG_BASE_INDEX:
		if (restore_index(rs, f->base_index) == -1)
			break;
		return;
	case FRAME__MSG_DAMAGE:
		if (!rs->rs_verify || !rs->rs_begun || rs->rs_ended ||
		    f->damage->index >= rs->rs_blocks)
			break;
		rs->rs_target_damaged++;
		printf("damaged: block %llu (offset %llu) in the repository: "
		    "%s\n", (unsigned long long)f->damage->index,
		    (unsigned long long)f->damage->index * rs->rs_block_size,
		    f->damage->message);
		return;
	case FRAME__MSG_RESTORE_END:
		if (!rs->rs_begun || rs->rs_end_first)
			break;
		rs->rs_end_first = 1;
		rs->rs_conns[0].rc_ended = 1;
		rs->rs_end_blocks = f->restore_end->blocks_sent;
		rs->rs_end_damaged = f->restore_end->damaged;
		if (f->restore_end->joined != restore_joined_count(rs)) {
			restore_fail(rs, EXIT_INTEGRITY, "the target ended the "
			    "restore with another number of connections than "
			    "joined it");
			return;
		}
		restore_ends(rs);
		return;
	default:
		break;
	}
	client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected %s "
	    "frame during a restore", cl->cl_addr, frame_name(f));
}

static const struct client_ops restore_ops = {
	.co_ready = restore_ready,
	.co_frame = restore_frame,
	.co_block = restore_block,
};

/* The options restore and verify share, for their usage texts. */
static const char restore_shared_opts[] =
    "  --key-file FILE --passphrase-file FILE\n"
    "                 keys from 'keys export' instead of the KMS\n"
    "  --bandwidth-limit RATE  at most RATE bytes per second each way\n"
    "                 (e.g. 20M; 0: none; default: the configuration's)\n"
    "  --connections N  take the blocks on N TCP connections (1-16;\n"
    "                 default: 'connections' in the configuration)\n"
    "  --json         print the summary as one JSON object\n";

static void
restore_usage(FILE *fp)
{
	fprintf(fp, "usage: source-transporter [-f config] restore --name NAME "
	    "[--point ID] --output PATH [--force] [--json]\n"
	    "       [--key-file FILE --passphrase-file FILE] "
	    "[--bandwidth-limit RATE] [--connections N]\n"
	    "  --name NAME    backup to restore\n"
	    "  --point ID     restore point (default: the newest; see 'list')\n"
	    "  --output PATH  file or block device to write\n"
	    "  --force        replace an existing output file\n"
	    "                 (an interrupted restore to a file resumes when the\n"
	    "                 same command runs again; see PATH.restore-state)\n"
	    "%s", restore_shared_opts);
}

static void
verify_usage(FILE *fp)
{
	fprintf(fp, "usage: source-transporter [-f config] verify --name NAME "
	    "[--point ID] [--json]\n"
	    "       source-transporter [-f config] verify --all [--name NAME] "
	    "[--json]\n"
	    "       [--key-file FILE --passphrase-file FILE] "
	    "[--bandwidth-limit RATE] [--connections N] "
	    "[--accept-rollback]\n"
	    "  reads every block of a restore point back and checks it, "
	    "writing\n  nothing; names each damaged block (exit 5)\n"
	    "  --point ID     that point (default: the newest; see 'list')\n"
	    "%s"
	    "  --all          every restore point of the name, or of every "
	    "name\n"
	    "                 without --name; a summary line at the end\n"
	    "  --accept-rollback  go on when the target no longer has the "
	    "newest\n"
	    "                 point this source committed (exit 9 "
	    "otherwise)\n", restore_shared_opts);
}

/* Forgets one attempt; what it got into the output goes to rs_st. */
static void
restore_reset(struct restore *rs)
{
	if (restore_has_ids(rs) && rs->rs_phase == RP_STREAM &&
	    rs->rs_mark > 0)
		restore_state_fill(rs, &rs->rs_st, rs->rs_mark);
	rs->rs_phase = RP_INDEX;
	rs->rs_announced = rs->rs_begun = rs->rs_ended = 0;
	rs->rs_expected = rs->rs_received = rs->rs_written = 0;
	rs->rs_bytes_written = 0;
	rs->rs_jobs = rs->rs_check_jobs = 0;
	rs->rs_end_first = rs->rs_told = 0;
	rs->rs_ckpt_busy = 0;
	rs->rs_from = rs->rs_mark = rs->rs_nbad = rs->rs_zeroed = 0;
	rs->rs_check_next = rs->rs_index_got = 0;
	free(rs->rs_seen);
	rs->rs_seen = NULL;
	id_map_free(&rs->rs_ids);
	free(rs->rs_bad);
	rs->rs_bad = NULL;
}

/*
 * Runs the restore, reconnecting with backoff while the connection is
 * lost and resume_timeout has not run out; each new attempt resumes
 * from what the last one put in the output (checked again).  If it
 * gives up, the partial output and its state stay for the next run.
 * Returns the exit code.
 */
static int
restore_run(struct restore *rs, struct source_conf *sc)
{
	struct retry	 rt;
	char		 what[NAME_MAX_LEN + 100];
	int		 rv;

	memset(&rt, 0, sizeof(rt));
	for (;;) {
		rs->rs_attempts = rt.rt_attempts + 1;
		if ((rs->rs_client = client_new(sc, &restore_ops, rs)) == NULL)
			return EXIT_USAGE;
		memset(rs->rs_conns, 0, sizeof(rs->rs_conns));
		rs->rs_conns[0] = (struct restore_conn){ .rc_restore = rs,
		    .rc_client = rs->rs_client, .rc_joined = 1,
		    .rc_settled = 1 };
		rs->rs_nconns = 1;
		rs->rs_max_jobs = RESTORE_MAX_JOBS_PER_THREAD *
		    pool_threads(rs->rs_client->cl_pool);
		rv = client_run(rs->rs_client);
		progress_end(&rs->rs_progress);
		if (rv == EXIT_OK || rs->rs_verify)
			break;
		snprintf(what, sizeof(what), "restore of %s/%s", rs->rs_name,
		    rs->rs_point[0] ? rs->rs_point : "(newest)");
		if (!client_retry(rs->rs_client, &rt, what))
			break;
		/* Its jobs are done before the attempt is forgotten. */
		client_free(rs->rs_client);
		rs->rs_client = NULL;
		restore_reset(rs);
	}
	if (rv != EXIT_OK && !rs->rs_verify && rs->rs_client->cl_lost) {
		client_free(rs->rs_client);
		rs->rs_client = NULL;
		restore_reset(rs);
		/* Keep what is in the output for the next run. */
		if (rs->rs_st.st_valid && rs->rs_state_path[0] != '\0' &&
		    (fsync(rs->rs_fd) == -1 || restore_state_write(
		    rs->rs_state_path, &rs->rs_st) == -1))
			log_warnx("cannot save the resume state %s: %s",
			    rs->rs_state_path, strerror(errno));
		rs->rs_keep = rs->rs_state_path[0] != '\0' && access(
		    rs->rs_state_path, F_OK) == 0;
	}
	return rv;
}

static void
restore_init(struct restore *rs, struct source_conf *sc, int verify)
{
	memset(rs, 0, sizeof(*rs));
	rs->rs_fd = -1;
	pthread_mutex_init(&rs->rs_write_lock, NULL);
	rs->rs_verify = verify;
	envelope_init(&rs->rs_env, sc);
}

/* Ends a restore or verify: the partial output kept or removed. */
static void
restore_done(struct restore *rs)
{
	client_free(rs->rs_client);
	if (rs->rs_keep && rs->rs_tmp[0] != '\0')
		log_warnx("the partial output is %s; the same command resumes "
		    "it", rs->rs_tmp);
	else if (rs->rs_keep)
		log_warnx("%s holds part of the restore (%s); the same command "
		    "resumes it", rs->rs_output, rs->rs_state_path);
	else {
		if (rs->rs_tmp[0] != '\0')
			unlink(rs->rs_tmp);
		if (rs->rs_state_path[0] != '\0')
			unlink(rs->rs_state_path);
	}
	if (rs->rs_fd != -1)
		close(rs->rs_fd);
	free(rs->rs_seen);
	id_map_free(&rs->rs_ids);
	free(rs->rs_bad);
	envelope_free(&rs->rs_env);
	pthread_mutex_destroy(&rs->rs_write_lock);
}

/* Runs a restore or verify whose options are set; the exit code. */
static int
restore_exec(struct source_conf *sc, struct restore *rs)
{
	char	 err[KEY_ERR_MAX];
	int	 rv;

	if (rs->rs_verify)
		rs->rs_output = "(nothing: verify)";
	rs->rs_state_dir = sc->sc_state_dir;
	/* Keys first: a wrong passphrase fails before anything is touched. */
	if (rs->rs_key_file != NULL && keyfile_load(&rs->rs_env,
	    rs->rs_key_file, rs->rs_passphrase_file, err, sizeof(err)) == -1) {
		log_warnx("key file %s: %s", rs->rs_key_file, err);
		rv = EXIT_KEY;
	} else if (!rs->rs_verify && restore_open_output(rs) == -1)
		rv = EXIT_INPUT;
	else
		rv = restore_run(rs, sc);
	restore_done(rs);
	return rv;
}

/*
 * verify of one point (NULL: the newest) of name, with vo's keys and
 * output format.  Returns the exit code.
 */
int
verify_point(struct source_conf *sc, const struct verify_opts *vo,
    const char *name, const char *point)
{
	struct restore	 rs;

	restore_init(&rs, sc, 1);
	rs.rs_name = name;
	rs.rs_point_id = point;
	rs.rs_json = vo->vo_json;
	rs.rs_key_file = vo->vo_key_file;
	rs.rs_passphrase_file = vo->vo_passphrase_file;
	return restore_exec(sc, &rs);
}

/*
 * restore, or verify: the same stream and the same checks, but verify
 * writes nothing and goes on past a damaged block; verify goes through
 * the chain check first (verify_chain).  Returns the exit code.
 */
static int
restore_main(struct source_conf *sc, int argc, char **argv, int verify)
{
	static const struct option opts[] = {
		{ "name",	required_argument, NULL, 'n' },
		{ "point",	required_argument, NULL, 'p' },
		{ "output",	required_argument, NULL, 'o' },
		{ "force",	no_argument,	   NULL, 'F' },
		{ "json",	no_argument,	   NULL, 'j' },
		{ "key-file",	required_argument, NULL, 'K' },
		{ "passphrase-file", required_argument, NULL, 'P' },
		{ "bandwidth-limit", required_argument, NULL, 'B' },
		{ "connections", required_argument, NULL, 'c' },
		{ "all",	no_argument,	   NULL, 'a' },
		{ "accept-rollback", no_argument,  NULL, 'R' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	void		(*usage)(FILE *) = verify ? verify_usage :
			    restore_usage;
	struct restore	 rs;
	struct verify_opts vo;
	uint64_t	 bandwidth = 0, connections = 0;
	int		 ch, bandwidth_set = 0;

	memset(&vo, 0, sizeof(vo));
	restore_init(&rs, sc, verify);
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			rs.rs_name = optarg;
			break;
		case 'p':
			rs.rs_point_id = optarg;
			break;
		case 'o':
			rs.rs_output = optarg;
			break;
		case 'F':
			rs.rs_force = 1;
			break;
		case 'j':
			rs.rs_json = 1;
			break;
		case 'K':
			rs.rs_key_file = optarg;
			break;
		case 'P':
			rs.rs_passphrase_file = optarg;
			break;
		case 'B':
			/* Applied after --help, which has no sc. */
			if (source_bandwidth_option(optarg, &bandwidth) == -1)
				goto usage;
			bandwidth_set = 1;
			break;
		case 'c':
			if (source_connections_option(optarg,
			    &connections) == -1)
				goto usage;
			break;
		case 'a':
			vo.vo_all = 1;
			break;
		case 'R':
			vo.vo_accept_rollback = 1;
			break;
		case 'h':
			usage(stdout);
			restore_done(&rs);
			return EXIT_OK;
		default:
			usage(stderr);
			goto usage;
		}
	}
	if (optind != argc || (rs.rs_name == NULL && !vo.vo_all) ||
	    (verify ? rs.rs_output != NULL || rs.rs_force ||
	    (vo.vo_all && rs.rs_point_id != NULL) :
	    rs.rs_output == NULL || vo.vo_all || vo.vo_accept_rollback) ||
	    (rs.rs_key_file == NULL) != (rs.rs_passphrase_file == NULL)) {
		usage(stderr);
		log_warnx("%s: %s", verify ? "verify" : "restore",
		    optind != argc ? "unexpected arguments after the options" :
		    rs.rs_name == NULL && !vo.vo_all ? (verify ? "say which "
		    "backup: --name NAME, or --all" : "say which backup: --name "
		    "NAME") :
		    (rs.rs_key_file == NULL) != (rs.rs_passphrase_file ==
		    NULL) ? "--key-file and --passphrase-file go together" :
		    !verify && rs.rs_output == NULL ? "say where to write it: "
		    "--output PATH (a file or a block device)" :
		    "these options do not go together; see --help");
		goto usage;
	}
	if (bandwidth_set)
		sc->sc_bandwidth = bandwidth;
	if (connections != 0)
		sc->sc_connections = connections;
	if (!verify)
		return restore_exec(sc, &rs);
	vo.vo_name = rs.rs_name;
	vo.vo_point = rs.rs_point_id;
	vo.vo_json = rs.rs_json;
	vo.vo_key_file = rs.rs_key_file;
	vo.vo_passphrase_file = rs.rs_passphrase_file;
	restore_done(&rs);
	return verify_chain(sc, &vo);
 usage:
	restore_done(&rs);
	return EXIT_USAGE;
}

int
cmd_restore(struct source_conf *sc, int argc, char **argv)
{
	return restore_main(sc, argc, argv, 0);
}

/*
 * verify: streams a restore point like a restore and checks every block
 * on the way (the target its stored digest, here the AES-GCM tags, the
 * decompression and the chunk id), writing nothing.  Every damaged
 * block is named with its offset; exit 5 if any is.
 */
int
cmd_verify(struct source_conf *sc, int argc, char **argv)
{
	return restore_main(sc, argc, argv, 1);
}
