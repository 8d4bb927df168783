/*
 * fuzz_repo.c: the repository's readers of chunk objects, indexes and
 * manifests (target-transporter/repo.c), on files in a real repository.
 *
 * One repository is made in a temporary directory at start-up.  The
 * first input byte picks what the rest is (FUZZ_REPO_* in fuzz.h); it
 * is written under a fixed tenant, name, point id or chunk id, then
 * read with repo_chunk_read(), repo_list() and repo_point_open(), and
 * removed again.  Digests the fuzzer cannot forge are fixed up where
 * the mode says so, so that the checks behind them are reached: a
 * chunk's payload digest, a manifest's framing and trailer, and for an
 * index a whole manifest that matches it.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <xxhash.h>

#include "target.h"
#include "fuzz.h"

#define FUZZ_CHUNK_READS	4	/* chunks of an index looked up */

static struct repo	*fuzz_repo;
static char		 fuzz_dir[256];
static char		 chunk_path[512];
static char		 index_path[512];
static char		 manifest_path[512];
static uint8_t		 chunk_id[CHUNK_ID_LEN];
static volatile uint64_t fuzz_sink;

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void
fuzz_cleanup(void)
{
	repo_close(fuzz_repo);
	fuzz_repo = NULL;
	if (fuzz_dir[0] != '\0')
		(void)nftw(fuzz_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void
mkdirs(const char *fmt, const char *arg)
{
	char	 path[512], *p;

	snprintf(path, sizeof(path), fmt, fuzz_dir, arg);
	for (p = path + strlen(fuzz_dir) + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		(void)mkdir(path, 0700);
		*p = '/';
	}
	if (mkdir(path, 0700) == -1 && errno != EEXIST) {
		perror(path);
		abort();
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char	*tmp = getenv("TMPDIR");
	char		 err[512], hex[2 * CHUNK_ID_LEN + 1];

	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/fuzz_repo.XXXXXX",
	    tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(fuzz_dir) == NULL) {
		perror(fuzz_dir);
		abort();
	}
	atexit(fuzz_cleanup);
	if ((fuzz_repo = repo_open(fuzz_dir, err, sizeof(err))) == NULL) {
		fprintf(stderr, "fuzz_repo: %s\n", err);
		abort();
	}
	memset(chunk_id, FUZZ_CHUNK_BYTE, sizeof(chunk_id));
	hex_encode(chunk_id, sizeof(chunk_id), hex);
	mkdirs("%s/tenants/" FUZZ_TENANT "/chunks/%.2s", hex);
	mkdirs("%s/tenants/" FUZZ_TENANT "/points/%s", FUZZ_NAME);
	mkdirs("%s/tenants/" FUZZ_TENANT "/%s", "tmp");
	snprintf(chunk_path, sizeof(chunk_path),
	    "%s/tenants/" FUZZ_TENANT "/chunks/%.2s/%s", fuzz_dir, hex, hex);
	snprintf(index_path, sizeof(index_path),
	    "%s/tenants/" FUZZ_TENANT "/points/" FUZZ_NAME "/"
	    FUZZ_POINT_ID ".index", fuzz_dir);
	snprintf(manifest_path, sizeof(manifest_path),
	    "%s/tenants/" FUZZ_TENANT "/points/" FUZZ_NAME "/"
	    FUZZ_POINT_ID ".manifest", fuzz_dir);
	return 0;
}

static void
write_file(const char *path, const void *buf, size_t len)
{
	int	 fd;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1 || (len > 0 && write(fd, buf, len) != (ssize_t)len) ||
	    close(fd) == -1) {
		perror(path);
		abort();
	}
}

/* Frames a packed Manifest as repo.c stores it: magic, length, digest. */
static void
write_manifest(const uint8_t *pb, size_t len)
{
	uint8_t	*buf;

	if ((buf = malloc(8 + len + CHUNK_ID_LEN)) == NULL)
		abort();
	memcpy(buf, FUZZ_MANIFEST_MAGIC, 4);
	put_be32(buf + 4, (uint32_t)len);
	if (len > 0)
		memcpy(buf + 8, pb, len);
	crypto_sha256(buf, 8 + len, buf + 8 + len);
	write_file(manifest_path, buf, 8 + len + CHUNK_ID_LEN);
	free(buf);
}

/* Reads the fixed chunk and, if it holds plain zstd, decompresses it. */
static void
read_chunk(const uint8_t *id)
{
	struct repo_chunk	 c;
	uint8_t			*raw;

	if (repo_chunk_read(fuzz_repo, FUZZ_TENANT, id, &c) == -1)
		return;
	FUZZ_CHECK(c.rc_data != NULL && c.rc_len > 0);
	FUZZ_CHECK(c.rc_raw_len > 0 && c.rc_raw_len <= BLOCK_SIZE_MAX);
	fuzz_sink += c.rc_data[c.rc_len - 1];
	/* What a restore does with a chunk stored compressed, unsealed. */
	if (c.rc_flags == CHUNK_COMPRESSED) {
		raw = malloc(c.rc_raw_len);
		FUZZ_CHECK(raw != NULL);
		if (decompress_block(c.rc_data, c.rc_len, raw,
		    c.rc_raw_len) == 0)
			fuzz_sink += raw[0];
		free(raw);
	}
	repo_chunk_clear(&c);
}

/* Lists the points and opens the fixed one, checking what comes back. */
static void
read_points(void)
{
	struct repo_point	*points = NULL, p, w;
	const uint8_t		*id, *ids;
	const char		*why;
	uint64_t		 i, zero = 0, reads = 0;
	size_t			 n = 0, k;
	int			 whole, windowed, inspected;
	static const uint8_t	 zero_id[CHUNK_ID_LEN];

	if (repo_list(fuzz_repo, FUZZ_TENANT, NULL, &points, &n) == 0) {
		for (k = 0; k < n; k++) {
			FUZZ_CHECK(strcmp(points[k].rp_name, FUZZ_NAME) == 0);
			FUZZ_CHECK(points[k].rp_index == NULL);
		}
		free(points);
	}
	points = NULL;
	if (repo_list(fuzz_repo, FUZZ_TENANT, FUZZ_NAME, &points, &n) == 0)
		free(points);
	if (repo_point_open(fuzz_repo, FUZZ_TENANT, FUZZ_NAME, NULL,
	    &p) == 0)
		repo_point_clear(&p);
	/* A restore's open, reading the index in windows, agrees. */
	whole = repo_point_open(fuzz_repo, FUZZ_TENANT, FUZZ_NAME,
	    FUZZ_POINT_ID, &p);
	windowed = repo_point_open_windowed(fuzz_repo, FUZZ_TENANT, FUZZ_NAME,
	    FUZZ_POINT_ID, &w, 1);
	FUZZ_CHECK(whole == windowed);
	if (windowed == 0) {
		FUZZ_CHECK(w.rp_index == NULL && w.rp_blocks == p.rp_blocks);
		for (i = 0; i < w.rp_blocks; i += n) {
			n = w.rp_blocks - i < INDEX_WINDOW_IDS ?
			    w.rp_blocks - i : INDEX_WINDOW_IDS;
			ids = repo_point_ids(&w, i, n);
			FUZZ_CHECK(ids != NULL && memcmp(ids, p.rp_index +
			    i * CHUNK_ID_LEN, n * CHUNK_ID_LEN) == 0);
		}
		repo_point_clear(&w);
	}
	/* verify's open agrees as well: windowed when sound. */
	inspected = repo_point_inspect(fuzz_repo, FUZZ_TENANT, FUZZ_NAME,
	    FUZZ_POINT_ID, &w, &why);
	FUZZ_CHECK(inspected == whole);
	FUZZ_CHECK(inspected == -1 || (w.rp_ix != NULL && w.rp_index == NULL &&
	    why == NULL));
	repo_point_clear(&w);
	if (whole == -1)
		return;
	/* What repo_point_open promises a restore. */
	FUZZ_CHECK(p.rp_index != NULL && p.rp_blocks > 0);
	FUZZ_CHECK(p.rp_block_size >= BLOCK_SIZE_MIN &&
	    p.rp_block_size <= BLOCK_SIZE_MAX &&
	    (p.rp_block_size & (p.rp_block_size - 1)) == 0);
	FUZZ_CHECK(p.rp_disk_size > (p.rp_blocks - 1) * p.rp_block_size &&
	    p.rp_disk_size <= p.rp_blocks * p.rp_block_size);
	for (i = 0; i < p.rp_blocks; i++) {
		id = p.rp_index + i * CHUNK_ID_LEN;
		if (memcmp(id, zero_id, CHUNK_ID_LEN) == 0)
			zero++;
		else if (reads++ < FUZZ_CHUNK_READS)
			read_chunk(id);
	}
	FUZZ_CHECK(zero == p.rp_zero_blocks);
	repo_point_clear(&p);
}

/*
 * The index as given, and a manifest that matches it as well as it
 * can: block size and count from its header, zero blocks counted, its
 * digest.
 */
static void
index_with_manifest(const uint8_t *data, size_t size)
{
	Manifest	 m = MANIFEST__INIT;
	PointInfo	 pi = POINT_INFO__INIT;
	uint8_t		 digest[CHUNK_ID_LEN], *pb;
	static const uint8_t zero_id[CHUNK_ID_LEN];
	uint64_t	 blocks = 0, zero = 0, i;
	uint32_t	 bs = 0;
	size_t		 len;

	write_file(index_path, data, size);
	if (size >= FUZZ_INDEX_HDR_LEN) {
		bs = (uint32_t)data[8] << 24 | (uint32_t)data[9] << 16 |
		    (uint32_t)data[10] << 8 | data[11];
		blocks = get_be64(data + 12);
		for (i = 0; i < (size - FUZZ_INDEX_HDR_LEN) / CHUNK_ID_LEN;
		    i++)
			if (memcmp(data + FUZZ_INDEX_HDR_LEN +
			    i * CHUNK_ID_LEN, zero_id, CHUNK_ID_LEN) == 0)
				zero++;
	}
	crypto_sha256(data, size, digest);
	pi.name = FUZZ_NAME;
	pi.point_id = FUZZ_POINT_ID;
	pi.created = 1704067200;
	pi.block_size = bs;
	pi.disk_size = blocks * bs;	/* may wrap: refused, then */
	pi.blocks = blocks;
	pi.zero_blocks = zero;
	pi.mode = ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT;
	m.format = FUZZ_MANIFEST_FORMAT;
	m.point = &pi;
	m.index_digest.data = digest;
	m.index_digest.len = sizeof(digest);
	m.chunks = blocks > zero ? 1 : 0;
	len = manifest__get_packed_size(&m);
	if ((pb = malloc(len)) == NULL)
		abort();
	manifest__pack(&m, pb);
	write_manifest(pb, len);
	free(pb);
}

/* Rewrites a chunk's header checksum of its payload, as its version has it. */
static void
chunk_sum_fix(uint8_t *buf, size_t size)
{
	XXH128_canonical_t	 c;
	uint8_t			*sum = buf + FUZZ_CHUNK_SUM_OFF;

	if (buf[4] == FUZZ_CHUNK_VERSION_SHA256) {
		crypto_sha256(buf + FUZZ_CHUNK_HDR_LEN,
		    size - FUZZ_CHUNK_HDR_LEN, sum);
		return;
	}
	XXH128_canonicalFromHash(&c, XXH3_128bits(buf + FUZZ_CHUNK_HDR_LEN,
	    size - FUZZ_CHUNK_HDR_LEN));
	memset(sum, 0, FUZZ_CHUNK_HDR_LEN - FUZZ_CHUNK_SUM_OFF);
	memcpy(sum, c.digest, sizeof(c.digest));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t	*buf;
	int	 mode;

	if (size < 1)
		return 0;
	mode = data[0] % FUZZ_REPO_MODES;
	data++;
	size--;
	switch (mode) {
	case FUZZ_REPO_CHUNK:
		write_file(chunk_path, data, size);
		read_chunk(chunk_id);
		break;
	case FUZZ_REPO_CHUNK_SUM:
		if ((buf = malloc(size > 0 ? size : 1)) == NULL)
			abort();
		memcpy(buf, data, size);
		if (size >= FUZZ_CHUNK_HDR_LEN)
			chunk_sum_fix(buf, size);
		write_file(chunk_path, buf, size);
		free(buf);
		read_chunk(chunk_id);
		break;
	case FUZZ_REPO_MANIFEST:
		write_file(manifest_path, data, size);
		read_points();
		break;
	case FUZZ_REPO_MANIFEST_PB:
		write_manifest(data, size);
		read_points();
		break;
	case FUZZ_REPO_INDEX:
		index_with_manifest(data, size);
		read_points();
		break;
	}
	(void)unlink(chunk_path);
	(void)unlink(index_path);
	(void)unlink(manifest_path);
	return 0;
}
