/*
 * restore.c: the restore command.  Block frames from the target are
 * opened, decompressed, checked against their chunk id and written by
 * the worker pool.  A regular output file is written under a temporary
 * name and renamed into place only when every block verified, so a
 * failed restore never leaves wrong data under the name asked for.
 */
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <linux/fs.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source.h"

#define RESTORE_MAX_JOBS_PER_THREAD	3

struct restore {
	struct client	*rs_client;
	const char	*rs_name;
	const char	*rs_point_id;
	const char	*rs_output;
	const char	*rs_key_file;
	const char	*rs_passphrase_file;
	char		 rs_tmp[PATH_MAX];	/* "" when writing in place */
	int		 rs_fd;
	int		 rs_force;
	int		 rs_json;
	int		 rs_begun;
	int		 rs_ended;	/* RestoreEnd arrived */
	char		 rs_point[64];
	uint64_t	 rs_disk_size;
	uint32_t	 rs_block_size;
	uint64_t	 rs_blocks;	/* in the image */
	uint64_t	 rs_expected;	/* Block frames announced */
	uint64_t	 rs_received;
	uint64_t	 rs_written;
	uint64_t	 rs_bytes_written;
	uint64_t	 rs_bytes_in;	/* frame bytes received */
	uint64_t	 rs_uncredited;	/* consumed, not yet granted back */
	uint8_t		*rs_seen;	/* bitmap of blocks received */
	int		 rs_jobs;
	int		 rs_max_jobs;
	int		 rs_paused;
	uint64_t	 rs_start_ms;
	int		 rs_source_side;
	struct progress	 rs_progress;
	int		 rs_verify;	/* check everything, write nothing */
	uint64_t	 rs_damaged;	/* verify: blocks found damaged */
	uint64_t	 rs_target_damaged;	/* ... by the target */
	struct envelope	 rs_env;
};

struct write_job {
	struct pool_job	 wj_job;
	struct restore	*wj_restore;
	uint8_t		*wj_frame;
	size_t		 wj_len;
	uint8_t		 wj_key[AEAD_KEY_LEN];
	/* results */
	uint64_t	 wj_index;
	int		 wj_errno;	/* EBADMSG: failed a check */
	char		 wj_msg[256];
};

static void	restore_maybe_done(struct restore *);

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
	if (!rs->rs_verify && write_full(rs->rs_fd, data, want,
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
	client_finish(rs->rs_client, code, "restore of %s/%s failed: %s; "
	    "%s was not written", rs->rs_name, rs->rs_point[0] ?
	    rs->rs_point : "(newest)", what, rs->rs_output);
}

static void
write_done(struct pool_job *pj)
{
	struct write_job	*wj = (struct write_job *)pj;
	struct restore		*rs = wj->wj_restore;
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
	rs->rs_written++;
	rs->rs_bytes_written += restore_block_len(rs, wj->wj_index);
	rs->rs_uncredited += wj->wj_len + FRAME_HDR_LEN;
	progress_update(&rs->rs_progress, rs->rs_bytes_written,
	    rs->rs_bytes_in);
	if (rs->rs_uncredited >= SOURCE_CREDIT_STEP) {
		c.bytes = rs->rs_uncredited;
		rs->rs_uncredited = 0;
		f.msg_case = FRAME__MSG_CREDIT;
		f.credit = &c;
		client_send(cl, &f);
	}
	if (rs->rs_paused) {
		rs->rs_paused = 0;
		client_resume(cl);
	}
	restore_maybe_done(rs);
 out:
	free(wj->wj_frame);
	free(wj);
}

static void
restore_block(struct client *cl, uint8_t *buf, size_t len, void *arg)
{
	struct restore		*rs = arg;
	struct write_job	*wj;

	if (!rs->rs_begun || rs->rs_ended) {
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
	wj->wj_frame = buf;
	wj->wj_len = len;
	memcpy(wj->wj_key, cl->cl_key_in, AEAD_KEY_LEN);
	rs->rs_received++;
	rs->rs_bytes_in += len + FRAME_HDR_LEN;
	rs->rs_jobs++;
	pool_submit(cl->cl_pool, &wj->wj_job);
	if (rs->rs_jobs >= rs->rs_max_jobs) {
		rs->rs_paused = 1;
		client_pause(cl);
	}
}

/* Opens the output: a temporary file beside a regular file's path. */
static int
restore_open_output(struct restore *rs)
{
	struct stat	 st;
	int		 exists;

	exists = stat(rs->rs_output, &st) == 0;
	if (exists && S_ISBLK(st.st_mode)) {
		if ((rs->rs_fd = open(rs->rs_output, O_WRONLY | O_CLOEXEC)) ==
		    -1)
			goto fail;
		return 0;
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
	if ((size_t)snprintf(rs->rs_tmp, sizeof(rs->rs_tmp),
	    "%s.partial-XXXXXX", rs->rs_output) >= sizeof(rs->rs_tmp)) {
		errno = ENAMETOOLONG;
		goto fail;
	}
	if ((rs->rs_fd = mkostemp(rs->rs_tmp, O_CLOEXEC)) == -1) {
		rs->rs_tmp[0] = '\0';
		goto fail;
	}
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
	uint64_t		 i = 0, j, range[2], off, end;
	size_t			 n;

	while (i < rs->rs_blocks) {
		if (rs->rs_seen[i / 8] & (1u << (i % 8))) {
			i++;
			continue;
		}
		for (j = i; j < rs->rs_blocks &&
		    !(rs->rs_seen[j / 8] & (1u << (j % 8))); j++)
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

	if (rs->rs_tmp[0] == '\0' && restore_zero_unwritten(rs) == -1)
		return -1;
	if (fsync(rs->rs_fd) == -1)
		return -1;
	if (rs->rs_tmp[0] == '\0')
		return 0;
	if (rename(rs->rs_tmp, rs->rs_output) == -1)
		return -1;
	rs->rs_tmp[0] = '\0';
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
		    "\"seconds\":%.3f,\"peak_rss_kib\":%ld}\n", rs->rs_name,
		    rs->rs_point, rs->rs_output,
		    (unsigned long long)rs->rs_disk_size,
		    (unsigned long long)rs->rs_bytes_written,
		    (unsigned long long)rs->rs_bytes_in,
		    (unsigned long long)rs->rs_written, secs, peak_rss_kib());
		return;
	}
	format_bytes(rs->rs_disk_size, b1, sizeof(b1));
	format_bytes(rs->rs_bytes_in, b2, sizeof(b2));
	format_bytes((uint64_t)(rs->rs_disk_size / secs), b3, sizeof(b3));
	printf("restored %s/%s to %s\n", rs->rs_name, rs->rs_point,
	    rs->rs_output);
	printf("  disk      %s (%llu blocks with data, the rest sparse)\n",
	    b1, (unsigned long long)rs->rs_written);
	printf("  received  %s\n", b2);
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
		client_finish(rs->rs_client, EXIT_KEY, "restore of %s/%s "
		    "needs keys that cannot be opened: %s; %s was not "
		    "written", rs->rs_name, rs->rs_point, err, rs->rs_output);
		return -1;
	}
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
	rr.verify = rs->rs_verify;
	f.msg_case = FRAME__MSG_RESTORE_REQUEST;
	f.restore_request = &rr;
	client_send(cl, &f);
	rs->rs_start_ms = now_ms();
}

static void
restore_frame(struct client *cl, const Frame *f, void *arg)
{
	struct restore	*rs = arg;
	PointInfo	*pi;

	switch (f->msg_case) {
	case FRAME__MSG_RESTORE_BEGIN:
		pi = f->restore_begin->point;
		if (rs->rs_begun || pi == NULL)
			break;
		if (pi->block_size < BLOCK_SIZE_MIN || pi->block_size >
		    BLOCK_SIZE_MAX || pi->disk_size == 0 ||
		    pi->disk_size / pi->block_size > (1ull << 32) ||
		    f->restore_begin->blocks > pi->blocks ||
		    pi->blocks != (pi->disk_size + pi->block_size - 1) /
		    pi->block_size) {
			restore_fail(rs, EXIT_ERROR, "the target announced an "
			    "impossible restore point");
			return;
		}
		rs->rs_begun = 1;
		snprintf(rs->rs_point, sizeof(rs->rs_point), "%s",
		    pi->point_id);
		rs->rs_disk_size = pi->disk_size;
		rs->rs_block_size = pi->block_size;
		rs->rs_blocks = pi->blocks;
		rs->rs_expected = f->restore_begin->blocks;
		/* Data blocks only: the rest are holes, written at once. */
		progress_start(&rs->rs_progress, "restore",
		    rs->rs_expected * (uint64_t)rs->rs_block_size,
		    rs->rs_json);
		if (pi->mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE &&
		    restore_open_keys(rs, f->restore_begin) == -1)
			return;
		if ((rs->rs_seen = calloc((rs->rs_blocks + 7) / 8, 1)) ==
		    NULL) {
			restore_fail(rs, EXIT_ERROR, "out of memory");
			return;
		}
		/* Holes for every block never written: a sparse image. */
		if (!rs->rs_verify && rs->rs_tmp[0] != '\0' &&
		    ftruncate(rs->rs_fd, (off_t)rs->rs_disk_size) == -1) {
			restore_fail(rs, EXIT_INPUT, strerror(errno));
			return;
		}
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
		if (!rs->rs_begun || rs->rs_ended)
			break;
		rs->rs_ended = 1;
		if (f->restore_end->blocks_sent != rs->rs_received ||
		    f->restore_end->damaged != rs->rs_target_damaged ||
		    rs->rs_received + rs->rs_target_damaged !=
		    rs->rs_expected) {
			restore_fail(rs, EXIT_INTEGRITY, "the target sent "
			    "fewer blocks than the restore point holds");
			return;
		}
		restore_maybe_done(rs);
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

static void
restore_usage(FILE *fp)
{
	fprintf(fp, "usage: source-transporter [-f config] restore --name NAME "
	    "[--point ID] --output PATH [--force] [--json]\n"
	    "       [--key-file FILE --passphrase-file FILE]\n"
	    "  --name NAME    backup to restore\n"
	    "  --point ID     restore point (default: the newest; see 'list')\n"
	    "  --output PATH  file or block device to write\n"
	    "  --force        replace an existing output file\n"
	    "  --key-file FILE --passphrase-file FILE\n"
	    "                 keys from 'keys export' instead of the KMS\n"
	    "  --json         print the summary as one JSON object\n");
}

static void
verify_usage(FILE *fp)
{
	fprintf(fp, "usage: source-transporter [-f config] verify --name NAME "
	    "[--point ID] [--json]\n"
	    "       [--key-file FILE --passphrase-file FILE]\n"
	    "  reads every block of a restore point back and checks it, "
	    "writing\n  nothing; names each damaged block (exit 5)\n");
}

/*
 * restore, or verify: the same stream and the same checks, but verify
 * writes nothing and goes on past a damaged block.  Returns the exit
 * code.
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
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	void		(*usage)(FILE *) = verify ? verify_usage :
			    restore_usage;
	struct restore	 rs;
	char		 err[KEY_ERR_MAX];
	int		 ch, rv = EXIT_USAGE;

	memset(&rs, 0, sizeof(rs));
	rs.rs_fd = -1;
	rs.rs_verify = verify;
	envelope_init(&rs.rs_env, sc);
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
		case 'h':
			usage(stdout);
			rv = EXIT_OK;
			goto out;
		default:
			usage(stderr);
			goto out;
		}
	}
	if (optind != argc || rs.rs_name == NULL ||
	    (verify ? rs.rs_output != NULL || rs.rs_force :
	    rs.rs_output == NULL) ||
	    (rs.rs_key_file == NULL) != (rs.rs_passphrase_file == NULL)) {
		usage(stderr);
		goto out;
	}
	if (verify)
		rs.rs_output = "(nothing: verify)";
	/* Keys first: a wrong passphrase fails before anything is touched. */
	if (rs.rs_key_file != NULL && keyfile_load(&rs.rs_env, rs.rs_key_file,
	    rs.rs_passphrase_file, err, sizeof(err)) == -1) {
		log_warnx("key file %s: %s", rs.rs_key_file, err);
		rv = EXIT_KEY;
		goto out;
	}
	if (!verify && restore_open_output(&rs) == -1) {
		rv = EXIT_INPUT;
		goto out;
	}
	if ((rs.rs_client = client_new(sc, &restore_ops, &rs)) == NULL)
		goto out;
	rs.rs_max_jobs = RESTORE_MAX_JOBS_PER_THREAD *
	    pool_threads(rs.rs_client->cl_pool);
	rv = client_run(rs.rs_client);
	progress_end(&rs.rs_progress);
 out:
	client_free(rs.rs_client);
	if (rs.rs_fd != -1)
		close(rs.rs_fd);
	if (rs.rs_tmp[0] != '\0')
		unlink(rs.rs_tmp);
	free(rs.rs_seen);
	envelope_free(&rs.rs_env);
	return rv;
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
