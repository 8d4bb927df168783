/*
 * test_repo.c: the target's repository, on a real directory: layout,
 * commit and read-back, deduplication, abort, crash leftovers,
 * tampered and truncated files, bad names, concurrent puts.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "keys.h"
#include "target.h"

#define BS		BLOCK_SIZE_MIN
#define TENANT		"acme"
#define MARKER_TEXT	"transporter repository 2\n"
#define CHUNK_HDR	48

struct fixture {
	char		 f_dir[64];	/* mkdtemp'd */
	char		 f_path[128];	/* f_dir/repo */
	struct repo	*f_repo;
};

/* Deterministic payload of len bytes for seed; id is its SHA-256. */
static void
make_chunk(unsigned seed, uint8_t *buf, size_t len, uint8_t id[CHUNK_ID_LEN])
{
	size_t	 i;
	uint32_t x = seed * 2654435761u + 1;

	for (i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = x >> 16;
	}
	crypto_sha256(buf, len, id);
}

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void
rm_tree(const char *path)
{
	nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static int	 count_n;

static int
count_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (flag == FTW_F)
		count_n++;
	return 0;
}

/* Regular files under path (0 if it is absent). */
static int
count_files(const char *path)
{
	count_n = 0;
	nftw(path, count_cb, 16, FTW_PHYS);
	return count_n;
}

/* Entries of a directory, -1 if it is absent. */
static int
dir_entries(const char *path)
{
	DIR		*d;
	struct dirent	*de;
	int		 n = 0;

	if ((d = opendir(path)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void
write_file(const char *path, const char *text)
{
	FILE	*fp;

	assert_non_null(fp = fopen(path, "w"));
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

/* Makes the directory parent/name, its path in dir. */
static void
new_dir(char *dir, size_t size, const char *parent, const char *name)
{
	assert_true((size_t)snprintf(dir, size, "%s/%s", parent, name) < size);
	assert_int_equal(mkdir(dir, 0700), 0);
}

/* Asserts that the small text file at path holds exactly text. */
static void
assert_file_text(const char *path, const char *text)
{
	FILE	*fp;
	char	 buf[256];
	size_t	 n;

	assert_non_null(fp = fopen(path, "r"));
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	assert_string_equal(buf, text);
}

/* XORs one byte of a file at off (from the end if negative). */
static void
flip_byte(const char *path, long off)
{
	struct stat	 st;
	uint8_t		 b;
	int		 fd;

	assert_int_not_equal(fd = open(path, O_RDWR), -1);
	assert_int_equal(fstat(fd, &st), 0);
	if (off < 0)
		off += st.st_size;
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x01;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	close(fd);
}

static void
chunk_path(const struct fixture *f, const uint8_t id[CHUNK_ID_LEN],
    char *buf, size_t len)
{
	char	 hex[2 * CHUNK_ID_LEN + 1];

	hex_encode(id, CHUNK_ID_LEN, hex);
	snprintf(buf, len, "%s/tenants/%s/chunks/%.2s/%s", f->f_path, TENANT,
	    hex, hex);
}

static void
point_path(const struct fixture *f, const char *name, const char *id,
    const char *ext, char *buf, size_t len)
{
	snprintf(buf, len, "%s/tenants/%s/points/%s/%s.%s", f->f_path, TENANT,
	    name, id, ext);
}

static int
setup(void **state)
{
	struct fixture	*f;
	char		 err[256];

	f = calloc(1, sizeof(*f));
	assert_non_null(f);
	snprintf(f->f_dir, sizeof(f->f_dir), "/tmp/test_repo.XXXXXX");
	assert_non_null(mkdtemp(f->f_dir));
	snprintf(f->f_path, sizeof(f->f_path), "%s/repo", f->f_dir);
	f->f_repo = repo_open(f->f_path, err, sizeof(err));
	if (f->f_repo == NULL) {
		rm_tree(f->f_dir);
		fail_msg("repo_open: %s", err);
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture	*f = *state;

	repo_close(f->f_repo);
	rm_tree(f->f_dir);
	free(f);
	return 0;
}

static void
reopen(struct fixture *f)
{
	char	 err[256];

	repo_close(f->f_repo);
	f->f_repo = repo_open(f->f_path, err, sizeof(err));
	if (f->f_repo == NULL)
		fail_msg("repo_open: %s", err);
}

/*
 * Backs up a disk of nblocks blocks (the last one short) where block
 * i holds chunk seeds[i] (0: zero block); commits into p, and leaves
 * the index it set in index (nblocks * CHUNK_ID_LEN) if not NULL.
 */
static void
backup(struct fixture *f, const char *name, const unsigned *seeds,
    size_t nblocks, struct repo_point *p, uint8_t *index, uint64_t *new,
    uint64_t *dedup)
{
	struct repo_job	*j;
	uint8_t		 buf[1000], id[CHUNK_ID_LEN];
	size_t		 i;

	j = repo_job_begin(f->f_repo, TENANT, name,
	    (uint64_t)nblocks * BS - 100, BS,
	    ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT);
	assert_non_null(j);
	for (i = 0; i < nblocks; i++) {
		memset(id, 0, sizeof(id));
		if (seeds[i] != 0) {
			/* A compressed payload: any length will do. */
			make_chunk(seeds[i], buf, sizeof(buf), id);
			assert_int_equal(repo_job_put_chunk(j, id,
			    CHUNK_COMPRESSED, BS, buf, sizeof(buf)), 0);
		}
		assert_int_equal(repo_job_set_block(j, i, id), 0);
		if (index != NULL)
			memcpy(index + i * CHUNK_ID_LEN, id, CHUNK_ID_LEN);
	}
	if (new != NULL)
		*new = repo_job_chunks_new(j);
	if (dedup != NULL)
		*dedup = repo_job_chunks_dedup(j);
	assert_int_equal(repo_job_commit(j, p), 0);
}

static void
test_open_creates_layout(void **state)
{
	struct fixture	*f = *state;
	struct repo	*r2;
	char		 path[256], err[256];

	snprintf(path, sizeof(path), "%s/transporter-repo", f->f_path);
	assert_file_text(path, MARKER_TEXT);
	snprintf(path, sizeof(path), "%s/tenants", f->f_path);
	assert_int_equal(dir_entries(path), 0);

	/* A second opener of the same repository is refused. */
	r2 = repo_open(f->f_path, err, sizeof(err));
	assert_null(r2);
	assert_non_null(strstr(err, "in use"));

	/* Reopening keeps it; an existing empty directory is adopted. */
	reopen(f);
	new_dir(path, sizeof(path), f->f_dir, "empty");
	assert_non_null(r2 = repo_open(path, err, sizeof(err)));
	repo_close(r2);
	snprintf(path, sizeof(path), "%s/empty/transporter-repo", f->f_dir);
	assert_int_equal(access(path, F_OK), 0);
}

static void
test_open_refuses(void **state)
{
	struct fixture	*f = *state;
	struct repo	*r;
	char		 dir[256], path[300], err[256];

	/* A non-empty directory that is not a repository. */
	new_dir(dir, sizeof(dir), f->f_dir, "other");
	snprintf(path, sizeof(path), "%s/precious.txt", dir);
	write_file(path, "keep me\n");
	r = repo_open(dir, err, sizeof(err));
	assert_null(r);
	assert_non_null(strstr(err, "not a transporter repository"));
	assert_null(strchr(err, '\n'));
	snprintf(path, sizeof(path), "%s/transporter-repo", dir);
	assert_int_equal(access(path, F_OK), -1);

	/* A format this build does not know. */
	write_file(path, "transporter repository 3\n");
	r = repo_open(dir, err, sizeof(err));
	assert_null(r);
	assert_non_null(strstr(err, "format 3"));
	write_file(path, "transporter repository 0\n");
	assert_null(repo_open(dir, err, sizeof(err)));

	/* A garbled marker. */
	write_file(path, "transporter repository one\n");
	assert_null(repo_open(dir, err, sizeof(err)));
	write_file(path, "something else\n");
	assert_null(repo_open(dir, err, sizeof(err)));

	/* A file where the directory should be. */
	assert_null(repo_open(path, err, sizeof(err)));
	assert_true(strlen(err) > 0);
	assert_null(repo_open("", err, sizeof(err)));
}

/* Format 1 (SHA-256 chunks only): read as it is, marked 2 to write. */
static void
test_format_upgrade(void **state)
{
	struct fixture	*f = *state;
	struct repo	*r;
	char		 dir[256], path[300], err[256];

	new_dir(dir, sizeof(dir), f->f_dir, "old");
	snprintf(path, sizeof(path), "%s/transporter-repo", dir);
	write_file(path, "transporter repository 1\n");
	assert_non_null(r = repo_open_readonly(dir, err, sizeof(err)));
	repo_close(r);
	assert_file_text(path, "transporter repository 1\n");
	assert_non_null(r = repo_open(dir, err, sizeof(err)));
	repo_close(r);
	assert_file_text(path, MARKER_TEXT);
}

static void
test_commit_list_open(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 1, 2, 0, 1, 3, 0, 2 };
	const size_t		 nb = sizeof(seeds) / sizeof(seeds[0]);
	struct repo_point	 p, *pts = NULL, q;
	struct repo_chunk	 c;
	uint8_t			 index[sizeof(seeds) / sizeof(seeds[0]) *
				    CHUNK_ID_LEN];
	uint8_t			 buf[1000], id[CHUNK_ID_LEN];
	uint64_t		 new, dedup;
	char			 path[512];
	size_t			 n;

	backup(f, "vm-01", seeds, nb, &p, index, &new, &dedup);
	assert_int_equal(new, 3);
	assert_int_equal(dedup, 2);
	assert_string_equal(p.rp_name, "vm-01");
	assert_int_equal(strlen(p.rp_id), 25);
	assert_int_equal(p.rp_blocks, nb);
	assert_int_equal(p.rp_zero_blocks, 2);
	assert_int_equal(p.rp_block_size, BS);
	assert_int_equal(p.rp_disk_size, nb * BS - 100);
	assert_int_equal(p.rp_stored_bytes, 3 * (CHUNK_HDR + 1000));
	assert_int_equal(p.rp_mode, ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT);
	assert_null(p.rp_index);

	assert_int_equal(repo_list(f->f_repo, TENANT, NULL, &pts, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(pts[0].rp_id, p.rp_id);
	assert_string_equal(pts[0].rp_name, "vm-01");
	assert_int_equal(pts[0].rp_created, p.rp_created);
	assert_int_equal(pts[0].rp_zero_blocks, 2);
	assert_int_equal(pts[0].rp_stored_bytes, p.rp_stored_bytes);
	assert_null(pts[0].rp_index);
	free(pts);

	/* By id and as the newest: the very index that was set. */
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm-01", p.rp_id,
	    &q), 0);
	assert_non_null(q.rp_index);
	assert_memory_equal(q.rp_index, index, sizeof(index));
	assert_int_equal(q.rp_blocks, nb);
	repo_point_clear(&q);
	assert_null(q.rp_index);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm-01", NULL,
	    &q), 0);
	assert_string_equal(q.rp_id, p.rp_id);
	assert_memory_equal(q.rp_index, index, sizeof(index));
	repo_point_clear(&q);

	/* The chunks read back as stored. */
	make_chunk(3, buf, sizeof(buf), id);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	assert_int_equal(c.rc_flags, CHUNK_COMPRESSED);
	assert_int_equal(c.rc_raw_len, BS);
	assert_int_equal(c.rc_len, sizeof(buf));
	assert_memory_equal(c.rc_data, buf, sizeof(buf));
	repo_chunk_clear(&c);
	assert_null(c.rc_data);
	chunk_path(f, id, path, sizeof(path));
	assert_int_equal(access(path, F_OK), 0);

	/* The job's tmp dir is gone; the point survives a reopen. */
	snprintf(path, sizeof(path), "%s/tenants/%s/tmp", f->f_path, TENANT);
	assert_int_equal(dir_entries(path), 0);
	reopen(f);
	assert_int_equal(repo_list(f->f_repo, TENANT, "vm-01", &pts, &n), 0);
	assert_int_equal(n, 1);
	free(pts);

	/* Other tenants and names see nothing. */
	assert_int_equal(repo_list(f->f_repo, "other", NULL, &pts, &n), 0);
	assert_int_equal(n, 0);
	assert_null(pts);
	assert_int_equal(repo_list(f->f_repo, TENANT, "vm-02", &pts, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(repo_chunk_read(f->f_repo, "other", id, &c), -1);
	assert_int_equal(errno, ENOENT);
}

static void
test_dedup(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 11, 12, 13, 14, 0, 11 };
	static const unsigned	 more[] = { 11, 12, 13, 14, 15, 0 };
	const size_t		 nb = sizeof(seeds) / sizeof(seeds[0]);
	struct repo_point	 p1, p2, *pts;
	uint64_t		 new, dedup;
	char			 chunks[300];
	size_t			 n;

	snprintf(chunks, sizeof(chunks), "%s/tenants/%s/chunks", f->f_path,
	    TENANT);
	backup(f, "db", seeds, nb, &p1, NULL, &new, &dedup);
	assert_int_equal(new, 4);
	assert_int_equal(dedup, 1);
	assert_int_equal(count_files(chunks), 4);

	/* The same disk again: nothing new is written. */
	backup(f, "db", seeds, nb, &p2, NULL, &new, &dedup);
	assert_int_equal(new, 0);
	assert_int_equal(dedup, 5);
	assert_int_equal(p2.rp_stored_bytes, 0);
	assert_int_equal(count_files(chunks), 4);

	/* Another name shares the tenant's chunks; one block is new. */
	backup(f, "db-copy", more, nb, &p2, NULL, &new, &dedup);
	assert_int_equal(new, 1);
	assert_int_equal(dedup, 4);
	assert_int_equal(p2.rp_stored_bytes, CHUNK_HDR + 1000);
	assert_int_equal(count_files(chunks), 5);

	assert_int_equal(repo_list(f->f_repo, TENANT, NULL, &pts, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(pts[0].rp_name, "db");
	assert_string_equal(pts[1].rp_name, "db");
	assert_string_equal(pts[2].rp_name, "db-copy");
	assert_true(pts[0].rp_created < pts[1].rp_created ||
	    (pts[0].rp_created == pts[1].rp_created &&
	    strcmp(pts[0].rp_id, pts[1].rp_id) < 0));
	free(pts);
}

static void
test_abort_and_uncommitted(void **state)
{
	struct fixture		*f = *state;
	struct repo_job		*j;
	struct repo_point	*pts, p;
	struct repo_chunk	 c;
	uint8_t			 buf[1000], id[CHUNK_ID_LEN];
	char			 tmp[300];
	size_t			 n;

	snprintf(tmp, sizeof(tmp), "%s/tenants/%s/tmp", f->f_path, TENANT);
	j = repo_job_begin(f->f_repo, TENANT, "vm", 3 * BS, BS, 1);
	assert_non_null(j);
	assert_int_equal(dir_entries(tmp), 1);
	make_chunk(21, buf, sizeof(buf), id);
	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_COMPRESSED, BS, buf,
	    sizeof(buf)), 0);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	make_chunk(22, buf, sizeof(buf), id);
	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_COMPRESSED, BS, buf,
	    sizeof(buf)), 0);

	/* Synced, not committed: no point. */
	assert_int_equal(repo_job_sync(j), 0);
	assert_int_equal(repo_list(f->f_repo, TENANT, NULL, &pts, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", NULL, &p),
	    -1);
	assert_int_equal(errno, ENOENT);

	repo_job_abort(j);
	assert_int_equal(dir_entries(tmp), 0);
	assert_int_equal(repo_list(f->f_repo, TENANT, "vm", &pts, &n), 0);
	assert_int_equal(n, 0);
	/* Synced chunks stay: they are valid and may be shared. */
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	repo_chunk_clear(&c);

	/* A block naming a chunk never put: the commit refuses. */
	j = repo_job_begin(f->f_repo, TENANT, "vm", 3 * BS, BS, 1);
	assert_non_null(j);
	make_chunk(24, buf, sizeof(buf), id);
	assert_int_equal(repo_job_set_block(j, 1, id), 0);
	assert_int_equal(repo_job_commit(j, &p), -1);
	assert_int_equal(errno, ENODATA);
	assert_int_equal(dir_entries(tmp), 0);
	assert_int_equal(repo_list(f->f_repo, TENANT, "vm", &pts, &n), 0);
	assert_int_equal(n, 0);

	/* Aborted before any sync: the staged chunk goes too. */
	j = repo_job_begin(f->f_repo, TENANT, "vm", 3 * BS, BS, 1);
	assert_non_null(j);
	make_chunk(23, buf, sizeof(buf), id);
	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_COMPRESSED, BS, buf,
	    sizeof(buf)), 0);
	repo_job_abort(j);
	assert_int_equal(dir_entries(tmp), 0);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, ENOENT);
}

static void
test_chunk_tamper(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 31, 32, 33, 34 };
	struct repo_point	 p;
	struct repo_chunk	 c;
	uint8_t			 buf[1000], id[CHUNK_ID_LEN];
	char			 path[512];

	backup(f, "vm", seeds, 4, &p, NULL, NULL, NULL);

	/* A payload byte flipped. */
	make_chunk(31, buf, sizeof(buf), id);
	chunk_path(f, id, path, sizeof(path));
	flip_byte(path, -1);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, EBADMSG);
	assert_null(c.rc_data);

	/* Truncated by one byte, and to half a header. */
	make_chunk(32, buf, sizeof(buf), id);
	chunk_path(f, id, path, sizeof(path));
	assert_int_equal(truncate(path, CHUNK_HDR + 999), 0);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, EBADMSG);
	assert_int_equal(truncate(path, 20), 0);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, EBADMSG);

	/* A hostile stored length in the header (byte 12: top of it). */
	make_chunk(33, buf, sizeof(buf), id);
	chunk_path(f, id, path, sizeof(path));
	flip_byte(path, 12);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, EBADMSG);

	/* Bad magic. */
	make_chunk(34, buf, sizeof(buf), id);
	chunk_path(f, id, path, sizeof(path));
	flip_byte(path, 0);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, EBADMSG);

	/* Absent. */
	make_chunk(35, buf, sizeof(buf), id);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, ENOENT);
}

/*
 * A chunk's header checksum: XXH3-128 of the stored bytes (version 2,
 * the one written), or SHA-256 in chunks written before (version 1),
 * which still read; damage to either, or an unknown version, refused.
 */
static void
test_chunk_versions(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 41 };
	struct repo_point	 p;
	struct repo_chunk	 c;
	XXH128_canonical_t	 x;
	uint8_t			 buf[1000], id[CHUNK_ID_LEN], zero[16] = { 0 };
	uint8_t			 file[CHUNK_HDR + 1000 + 1];	/* one spare */
	char			 path[512];
	FILE			*fp;

	backup(f, "vm", seeds, 1, &p, NULL, NULL, NULL);
	make_chunk(41, buf, sizeof(buf), id);
	chunk_path(f, id, path, sizeof(path));
	assert_non_null(fp = fopen(path, "rb"));
	assert_int_equal(fread(file, 1, sizeof(file), fp), CHUNK_HDR + 1000);
	fclose(fp);
	assert_int_equal(file[4], 2);
	XXH128_canonicalFromHash(&x, XXH3_128bits(file + CHUNK_HDR, 1000));
	assert_memory_equal(file + 16, x.digest, 16);
	assert_memory_equal(file + 32, zero, 16);

	/* The same chunk as version 1 wrote it. */
	file[4] = 1;
	crypto_sha256(file + CHUNK_HDR, 1000, file + 16);
	assert_non_null(fp = fopen(path, "wb"));
	assert_int_equal(fwrite(file, 1, CHUNK_HDR + 1000, fp),
	    CHUNK_HDR + 1000);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	assert_int_equal(c.rc_len, 1000);
	assert_memory_equal(c.rc_data, file + CHUNK_HDR, 1000);
	repo_chunk_clear(&c);
	flip_byte(path, -1);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, EBADMSG);
	flip_byte(path, -1);

	/* Version 2 with its checksum's zero half damaged; version 3. */
	file[4] = 2;
	memcpy(file + 16, x.digest, 16);
	memset(file + 32, 0, 16);
	file[40] = 1;
	assert_non_null(fp = fopen(path, "wb"));
	assert_int_equal(fwrite(file, 1, CHUNK_HDR + 1000, fp),
	    CHUNK_HDR + 1000);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, EBADMSG);
	flip_byte(path, 40);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	repo_chunk_clear(&c);
	flip_byte(path, 4);	/* 2 ^ 1: version 3 */
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(errno, EBADMSG);
}

static void
test_manifest_tamper(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 41, 0, 42 };
	struct repo_point	 p1, p2, q, *pts;
	char			 path[512];
	size_t			 n;

	backup(f, "vm", seeds, 3, &p1, NULL, NULL, NULL);
	backup(f, "vm", seeds, 3, &p2, NULL, NULL, NULL);
	assert_int_equal(repo_list(f->f_repo, TENANT, "vm", &pts, &n), 0);
	assert_int_equal(n, 2);
	free(pts);

	/* One byte inside the protobuf of the second manifest. */
	point_path(f, "vm", p2.rp_id, "manifest", path, sizeof(path));
	flip_byte(path, 12);
	assert_int_equal(repo_list(f->f_repo, TENANT, "vm", &pts, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(pts[0].rp_id, p1.rp_id);
	free(pts);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", p2.rp_id,
	    &q), -1);
	assert_int_equal(errno, EBADMSG);
	/* The newest that verifies is the first. */
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", NULL, &q),
	    0);
	assert_string_equal(q.rp_id, p1.rp_id);
	repo_point_clear(&q);

	/* A truncated manifest, and one with a hostile length. */
	point_path(f, "vm", p1.rp_id, "manifest", path, sizeof(path));
	flip_byte(path, 4);
	assert_int_equal(repo_list(f->f_repo, TENANT, NULL, &pts, &n), 0);
	assert_int_equal(n, 0);
	flip_byte(path, 4);
	assert_int_equal(truncate(path, 30), 0);
	assert_int_equal(repo_list(f->f_repo, TENANT, NULL, &pts, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", NULL, &q),
	    -1);
	assert_int_equal(errno, ENOENT);
}

static void
test_index_tamper(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 51, 52, 0, 53 };
	struct repo_point	 p, q;
	char			 path[512];

	backup(f, "vm", seeds, 4, &p, NULL, NULL, NULL);
	point_path(f, "vm", p.rp_id, "index", path, sizeof(path));

	/* A chunk id in the index changed. */
	flip_byte(path, -5);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", p.rp_id,
	    &q), -1);
	assert_int_equal(errno, EBADMSG);
	assert_null(q.rp_index);
	flip_byte(path, -5);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", p.rp_id,
	    &q), 0);
	repo_point_clear(&q);

	/* A hostile block count in the header. */
	flip_byte(path, 12);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", NULL, &q),
	    -1);
	assert_int_equal(errno, EBADMSG);
	flip_byte(path, 12);

	/* Truncated, then gone. */
	assert_int_equal(truncate(path, 20 + 3 * CHUNK_ID_LEN), 0);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", NULL, &q),
	    -1);
	assert_int_equal(errno, EBADMSG);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", NULL, &q),
	    -1);
	assert_int_equal(errno, EBADMSG);
}


/* Every window of windowed point q holds the ids of index. */
static void
assert_windows_equal(struct repo_point *q, const uint8_t *index)
{
	const uint8_t	*ids;
	uint64_t	 i, n;

	assert_non_null(q->rp_ix);
	assert_null(q->rp_index);
	for (i = 0; i < q->rp_blocks; i += n) {
		n = q->rp_blocks - i < INDEX_WINDOW_IDS ? q->rp_blocks - i :
		    INDEX_WINDOW_IDS;
		assert_non_null(ids = repo_point_ids(q, i, n));
		assert_memory_equal(ids, index + i * CHUNK_ID_LEN,
		    n * CHUNK_ID_LEN);
	}
}

/*
 * A restore's index, read a window at a time: the same ids as the whole
 * index, a window changed on disk after the open is refused when read
 * again, and ranges crossing a window are refused.
 */
static void
test_index_windows(void **state)
{
	struct fixture		*f = *state;
	const size_t		 nb = 2 * INDEX_WINDOW_IDS + 4464;
	const size_t		 marked[] = { 0, INDEX_WINDOW_IDS - 1,
				    INDEX_WINDOW_IDS, nb - 1 };
	unsigned		*seeds;
	uint8_t			*index;
	const uint8_t		*ids;
	struct repo_point	 p, q, whole;
	char			 path[512];
	size_t			 i;

	assert_non_null(seeds = calloc(nb, sizeof(*seeds)));
	assert_non_null(index = malloc(nb * CHUNK_ID_LEN));
	for (i = 0; i < sizeof(marked) / sizeof(marked[0]); i++)
		seeds[marked[i]] = 70 + (unsigned)i;
	backup(f, "vm", seeds, nb, &p, index, NULL, NULL);
	point_path(f, "vm", p.rp_id, "index", path, sizeof(path));

	assert_int_equal(repo_point_open_windowed(f->f_repo, TENANT, "vm",
	    NULL, &q, 1), 0);
	assert_int_equal(q.rp_blocks, nb);
	assert_windows_equal(&q, index);
	for (i = 0; i < sizeof(marked) / sizeof(marked[0]); i++) {
		assert_non_null(ids = repo_point_ids(&q, marked[i], 1));
		assert_memory_equal(ids, index + marked[i] * CHUNK_ID_LEN,
		    CHUNK_ID_LEN);
	}

	/* Out of range, empty, or across two windows. */
	assert_null(repo_point_ids(&q, nb, 1));
	assert_int_equal(errno, EINVAL);
	assert_null(repo_point_ids(&q, nb - 1, 2));
	assert_int_equal(errno, EINVAL);
	assert_null(repo_point_ids(&q, 0, 0));
	assert_int_equal(errno, EINVAL);
	assert_null(repo_point_ids(&q, INDEX_WINDOW_IDS - 1, 2));
	assert_int_equal(errno, EINVAL);

	/* Window 1 changed under the open point: refused, until mended. */
	assert_non_null(repo_point_ids(&q, 0, 1));
	flip_byte(path, 20 + (INDEX_WINDOW_IDS + 7) * CHUNK_ID_LEN + 3);
	assert_null(repo_point_ids(&q, INDEX_WINDOW_IDS + 7, 1));
	assert_int_equal(errno, EBADMSG);
	assert_non_null(repo_point_ids(&q, 5, 1));	/* the others read */
	assert_null(repo_point_ids(&q, INDEX_WINDOW_IDS, 1));
	assert_int_equal(errno, EBADMSG);

	/* Changed before the open: refused there, as the whole index is. */
	assert_int_equal(repo_point_open_windowed(f->f_repo, TENANT, "vm",
	    p.rp_id, &whole, 1), -1);
	assert_int_equal(errno, EBADMSG);
	assert_null(whole.rp_ix);
	flip_byte(path, 20 + (INDEX_WINDOW_IDS + 7) * CHUNK_ID_LEN + 3);
	assert_non_null(ids = repo_point_ids(&q, INDEX_WINDOW_IDS + 7, 1));
	assert_memory_equal(ids, index + (INDEX_WINDOW_IDS + 7) *
	    CHUNK_ID_LEN, CHUNK_ID_LEN);
	repo_point_clear(&q);
	assert_null(q.rp_ix);

	/*
	 * Two slots, the least recently used read over: after the open
	 * one holds window 2.  0 (read), 2, 0, 1 (read over 2), 0, 2 (read
	 * over 1): three reads.
	 */
	assert_int_equal(repo_point_open_windowed(f->f_repo, TENANT, "vm",
	    NULL, &q, 2), 0);
	for (i = 0; i < 6; i++) {
		static const size_t	 order[] = { 0, 2, 0, 1, 0, 2 };
		size_t			 b = order[i] * INDEX_WINDOW_IDS + 1;

		assert_non_null(ids = repo_point_ids(&q, b, 1));
		assert_memory_equal(ids, index + b * CHUNK_ID_LEN,
		    CHUNK_ID_LEN);
	}
	assert_int_equal(repo_point_window_reads(&q), 3);
	repo_point_clear(&q);

	/* The whole index answers any range. */
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", NULL,
	    &whole), 0);
	assert_null(whole.rp_ix);
	assert_non_null(ids = repo_point_ids(&whole, INDEX_WINDOW_IDS - 1,
	    2));
	assert_int_equal(repo_point_window_reads(&whole), 0);
	assert_memory_equal(ids, index + (INDEX_WINDOW_IDS - 1) *
	    CHUNK_ID_LEN, 2 * CHUNK_ID_LEN);
	repo_point_clear(&whole);
	free(seeds);
	free(index);
}

/*
 * verify's open: a sound index is read a window at a time, and
 * dropping it keeps the rest of the point; a damaged one is read whole
 * to name the entry, with why set.
 */
static void
test_inspect_windows(void **state)
{
	struct fixture		*f = *state;
	const size_t		 nb = INDEX_WINDOW_IDS + 100;
	unsigned		*seeds;
	uint8_t			*index;
	const char		*why;
	struct repo_point	 p, q;
	char			 path[512];

	assert_non_null(seeds = calloc(nb, sizeof(*seeds)));
	assert_non_null(index = malloc(nb * CHUNK_ID_LEN));
	seeds[3] = 80;
	seeds[nb - 2] = 81;
	backup(f, "vm", seeds, nb, &p, index, NULL, NULL);
	point_path(f, "vm", p.rp_id, "index", path, sizeof(path));

	assert_int_equal(repo_point_inspect(f->f_repo, TENANT, "vm", p.rp_id,
	    &q, &why), 0);
	assert_null(why);
	assert_windows_equal(&q, index);
	/*
	 * Changed after the open: refused when read again, as verify
	 * reports it (one slot: reading window 0 put window 1 out).
	 */
	assert_non_null(repo_point_ids(&q, 0, 1));
	flip_byte(path, 20 + (INDEX_WINDOW_IDS + 1) * CHUNK_ID_LEN);
	assert_null(repo_point_ids(&q, INDEX_WINDOW_IDS, 1));
	assert_int_equal(errno, EBADMSG);
	repo_point_drop_index(&q);
	assert_null(q.rp_ix);
	assert_string_equal(q.rp_id, p.rp_id);	/* the rest is kept */
	repo_point_clear(&q);

	/* Damaged before the open: whole, for naming the entry. */
	assert_int_equal(repo_point_inspect(f->f_repo, TENANT, "vm", p.rp_id,
	    &q, &why), -1);
	assert_int_equal(errno, EBADMSG);
	assert_non_null(why);
	assert_non_null(strstr(why, "digest"));
	assert_null(q.rp_ix);
	assert_non_null(q.rp_index);
	assert_memory_equal(q.rp_index, index, INDEX_WINDOW_IDS *
	    CHUNK_ID_LEN);
	assert_memory_not_equal(q.rp_index + (INDEX_WINDOW_IDS + 1) *
	    CHUNK_ID_LEN, index + (INDEX_WINDOW_IDS + 1) * CHUNK_ID_LEN,
	    CHUNK_ID_LEN);
	repo_point_clear(&q);
	free(seeds);
	free(index);
}

static void
test_stale_tmp(void **state)
{
	struct fixture	*f = *state;
	struct repo_job	*j;
	char		 dir[300], path[400];

	j = repo_job_begin(f->f_repo, TENANT, "vm", BS, BS, 1);
	assert_non_null(j);
	repo_job_abort(j);

	/* What a crashed job leaves behind. */
	snprintf(dir, sizeof(dir), "%s/tenants/%s/tmp/20240101T000000Z-"
	    "deadbeef", f->f_path, TENANT);
	assert_int_equal(mkdir(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/c0", dir);
	write_file(path, "half a chunk");
	snprintf(path, sizeof(path), "%s/index", dir);
	write_file(path, "half an index");
	snprintf(path, sizeof(path), "%s/tenants/%s/tmp", f->f_path, TENANT);
	assert_int_equal(dir_entries(path), 1);

	reopen(f);
	assert_int_equal(dir_entries(path), 0);
	assert_int_equal(access(dir, F_OK), -1);
}

static void
test_not_found(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 61 };
	struct repo_point	 p, q;

	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", NULL, &q),
	    -1);
	assert_int_equal(errno, ENOENT);
	backup(f, "vm", seeds, 1, &p, NULL, NULL, NULL);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "nope", NULL, &q),
	    -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm",
	    "20000101T000000Z-00000000", &q), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(repo_point_open(f->f_repo, "other", "vm", p.rp_id,
	    &q), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", p.rp_id,
	    &q), 0);
	repo_point_clear(&q);
}

static void
test_invalid_args(void **state)
{
	struct fixture		*f = *state;
	static const char	*bad[] = { "", ".", "..", ".hidden", "a/b",
				    "../x", "-rf", "a b", NULL };
	struct repo_job		*j;
	struct repo_point	*pts, q;
	struct repo_chunk	 c;
	char			 longname[NAME_MAX_LEN + 2];
	uint8_t			 buf[1000], id[CHUNK_ID_LEN];
	uint8_t			 zero[CHUNK_ID_LEN] = { 0 };
	size_t			 i, n;
	char			 tenants[300];

	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	for (i = 0; bad[i] != NULL; i++) {
		errno = 0;
		assert_null(repo_job_begin(f->f_repo, bad[i], "vm", BS, BS, 1));
		assert_int_equal(errno, EINVAL);
		errno = 0;
		assert_null(repo_job_begin(f->f_repo, TENANT, bad[i], BS, BS,
		    1));
		assert_int_equal(errno, EINVAL);
		assert_int_equal(repo_list(f->f_repo, bad[i], NULL, &pts, &n),
		    -1);
		assert_int_equal(errno, EINVAL);
		assert_int_equal(repo_list(f->f_repo, TENANT, bad[i], &pts,
		    &n), -1);
		assert_int_equal(errno, EINVAL);
		assert_int_equal(repo_point_open(f->f_repo, TENANT, bad[i],
		    NULL, &q), -1);
		assert_int_equal(errno, EINVAL);
	}
	assert_null(repo_job_begin(f->f_repo, longname, "vm", BS, BS, 1));
	assert_null(repo_job_begin(f->f_repo, TENANT, longname, BS, BS, 1));
	assert_null(repo_job_begin(f->f_repo, NULL, "vm", BS, BS, 1));
	assert_null(repo_job_begin(f->f_repo, TENANT, NULL, BS, BS, 1));
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm",
	    "../../../etc/passwd", &q), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm",
	    "20000101T000000Z-0000000G", &q), -1);
	assert_int_equal(errno, EINVAL);

	/* Sizes: block size, disk size, mode, too many blocks. */
	assert_null(repo_job_begin(f->f_repo, TENANT, "vm", BS, BS + 1, 1));
	assert_int_equal(errno, EINVAL);
	assert_null(repo_job_begin(f->f_repo, TENANT, "vm", BS, BS / 2, 1));
	assert_null(repo_job_begin(f->f_repo, TENANT, "vm", BS,
	    BLOCK_SIZE_MAX * 2, 1));
	assert_null(repo_job_begin(f->f_repo, TENANT, "vm", 0, BS, 1));
	assert_int_equal(errno, EINVAL);
	assert_null(repo_job_begin(f->f_repo, TENANT, "vm", BS, BS, 99));
	assert_null(repo_job_begin(f->f_repo, TENANT, "vm", UINT64_MAX, BS,
	    1));
	assert_int_equal(errno, EFBIG);

	/* Nothing was created by any of it. */
	snprintf(tenants, sizeof(tenants), "%s/tenants", f->f_path);
	assert_int_equal(dir_entries(tenants), 0);

	/* Chunks and blocks. */
	j = repo_job_begin(f->f_repo, TENANT, "vm", 2 * BS, BS, 1);
	assert_non_null(j);
	make_chunk(71, buf, sizeof(buf), id);
	assert_int_equal(repo_job_put_chunk(j, zero, CHUNK_COMPRESSED, BS,
	    buf, sizeof(buf)), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(repo_job_put_chunk(j, id, 0x80, BS, buf,
	    sizeof(buf)), -1);
	assert_int_equal(repo_job_put_chunk(j, id, 0, BS, buf,
	    sizeof(buf)), -1);	/* raw, yet shorter than raw_len */
	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_COMPRESSED,
	    BLOCK_SIZE_MAX + 1, buf, sizeof(buf)), -1);
	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_COMPRESSED, BS, buf,
	    0), -1);
	assert_int_equal(repo_job_set_block(j, 2, id), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(repo_job_set_block(j, 1, id), 0);
	repo_job_abort(j);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, zero, &c), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(repo_chunk_read(f->f_repo, "../x", id, &c), -1);
	assert_int_equal(errno, EINVAL);
}

/* Several workers put overlapping chunks while syncs run. */
#define CONC_THREADS	4
#define CONC_CHUNKS	120

struct conc {
	struct repo_job	*c_job;
	int		 c_thread;
};

static void *
conc_worker(void *arg)
{
	struct conc	*c = arg;
	uint8_t		 buf[300], id[CHUNK_ID_LEN];
	int		 i, k;

	for (i = 0; i < CONC_CHUNKS; i++) {
		/* Every thread puts every chunk, each in its own order. */
		k = (i * 7 + c->c_thread * 31) % CONC_CHUNKS;
		make_chunk(1000 + k, buf, sizeof(buf), id);
		if (repo_job_put_chunk(c->c_job, id, CHUNK_ENCRYPTED, 500,
		    buf, sizeof(buf)) == -1)
			return (void *)1;
	}
	return NULL;
}

static void
test_concurrent_puts(void **state)
{
	struct fixture		*f = *state;
	struct conc		 c[CONC_THREADS];
	pthread_t		 t[CONC_THREADS];
	struct repo_job		*j;
	struct repo_point	 p, q;
	struct repo_chunk	 rc;
	uint8_t			 buf[300], id[CHUNK_ID_LEN];
	char			 chunks[300];
	void			*ret;
	uint64_t		 new, dedup;
	int			 i;

	j = repo_job_begin(f->f_repo, TENANT, "big", CONC_CHUNKS * BS, BS, 3);
	assert_non_null(j);
	for (i = 0; i < CONC_THREADS; i++) {
		c[i].c_job = j;
		c[i].c_thread = i;
		assert_int_equal(pthread_create(&t[i], NULL, conc_worker,
		    &c[i]), 0);
	}
	for (i = 0; i < 5; i++)
		assert_int_equal(repo_job_sync(j), 0);
	for (i = 0; i < CONC_THREADS; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
	for (i = 0; i < CONC_CHUNKS; i++) {
		make_chunk(1000 + i, buf, sizeof(buf), id);
		assert_int_equal(repo_job_set_block(j, i, id), 0);
	}
	assert_int_equal(repo_job_sync(j), 0);
	new = repo_job_chunks_new(j);
	dedup = repo_job_chunks_dedup(j);
	assert_int_equal(new, CONC_CHUNKS);
	assert_int_equal(new + dedup, CONC_THREADS * CONC_CHUNKS);
	assert_int_equal(repo_job_bytes_stored(j), CONC_CHUNKS *
	    (CHUNK_HDR + sizeof(buf)));
	assert_int_equal(repo_job_commit(j, &p), 0);
	assert_int_equal(p.rp_zero_blocks, 0);
	assert_int_equal(p.rp_mode, 3);

	snprintf(chunks, sizeof(chunks), "%s/tenants/%s/chunks", f->f_path,
	    TENANT);
	assert_int_equal(count_files(chunks), CONC_CHUNKS);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "big", NULL, &q),
	    0);
	for (i = 0; i < CONC_CHUNKS; i++) {
		assert_int_equal(repo_chunk_read(f->f_repo, TENANT,
		    q.rp_index + i * CHUNK_ID_LEN, &rc), 0);
		assert_int_equal(rc.rc_flags, CHUNK_ENCRYPTED);
		assert_int_equal(rc.rc_raw_len, 500);
		make_chunk(1000 + i, buf, sizeof(buf), id);
		assert_memory_equal(rc.rc_data, buf, sizeof(buf));
		repo_chunk_clear(&rc);
	}
	repo_point_clear(&q);
}

/*
 * Rewrites a point's manifest as one from before chains: no sequence,
 * no predecessor; framed and checksummed as repo.c does.
 */
static void
make_legacy(const struct fixture *f, const char *name, const char *id)
{
	Manifest	*m;
	uint8_t		 buf[65536], out[65536];
	char		 path[512], *prev;
	size_t		 n, len;
	FILE		*fp;

	point_path(f, name, id, "manifest", path, sizeof(path));
	assert_non_null(fp = fopen(path, "r"));
	n = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	assert_true(n > 8 + CHUNK_ID_LEN);
	len = (size_t)buf[4] << 24 | buf[5] << 16 | buf[6] << 8 | buf[7];
	assert_non_null(m = manifest__unpack(NULL, len, buf + 8));
	m->point->sequence = 0;
	prev = m->point->previous_id;
	m->point->previous_id = "";
	m->point->previous_digest.len = 0;
	len = manifest__get_packed_size(m);
	assert_true(8 + len + CHUNK_ID_LEN <= sizeof(out));
	memcpy(out, "TRMF", 4);
	out[4] = len >> 24;
	out[5] = len >> 16;
	out[6] = len >> 8;
	out[7] = len;
	manifest__pack(m, out + 8);
	m->point->previous_id = prev;	/* freed with m */
	manifest__free_unpacked(m, NULL);
	crypto_sha256(out, 8 + len, out + 8 + len);
	assert_non_null(fp = fopen(path, "w"));
	assert_int_equal(fwrite(out, 1, 8 + len + CHUNK_ID_LEN, fp),
	    8 + len + CHUNK_ID_LEN);
	assert_int_equal(fclose(fp), 0);
}

/* A job of name "h" (two zero blocks) whose start saw the chain as now. */
static struct repo_job *
hinted_job(struct fixture *f)
{
	static const uint8_t	 zero[CHUNK_ID_LEN];
	struct repo_job		*j;
	struct repo_point	*pts;
	uint8_t			 names[CHUNK_ID_LEN];
	size_t			 n, i;

	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, "h",
	    2 * BS - 100, BS, ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT));
	assert_int_equal(repo_chain_names(f->f_repo, TENANT, "h", names), 0);
	assert_int_equal(repo_list(f->f_repo, TENANT, "h", &pts, &n), 0);
	repo_job_link_hint(j, names, pts, n);
	repo_points_free(pts, n);
	for (i = 0; i < 2; i++)
		assert_int_equal(repo_job_set_block(j, i, zero), 0);
	return j;
}

/*
 * A commit links to the newest point its job's start saw (the hint)
 * while the name's manifests are the ones it saw, as a scan of them
 * would; to the newest there is when another point was committed
 * meanwhile.
 */
static void
test_chain_link_hint(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 71, 72 };
	struct repo_point	 p1, p2, q, q2, open;
	struct repo_job		*j;

	backup(f, "h", seeds, 2, &p1, NULL, NULL, NULL);
	j = hinted_job(f);
	backup(f, "h", seeds, 2, &p2, NULL, NULL, NULL);
	assert_int_equal(repo_job_commit(j, &q), 0);
	assert_int_equal(q.rp_sequence, 3);
	assert_string_equal(q.rp_previous_id, p2.rp_id);

	j = hinted_job(f);
	assert_int_equal(repo_job_commit(j, &q2), 0);
	assert_int_equal(q2.rp_sequence, 4);
	assert_string_equal(q2.rp_previous_id, q.rp_id);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "h", q.rp_id,
	    &open), 0);
	assert_memory_equal(q2.rp_previous_digest, open.rp_digest,
	    CHUNK_ID_LEN);
	repo_point_clear(&open);
}

static void
test_chain(void **state)
{
	struct fixture		*f = *state;
	static const unsigned	 seeds[] = { 61, 0, 62 };
	struct repo_point	 p1, p2, p3, d1, q, *pts;
	struct repo		*ro;
	char			 err[256], none[128];
	size_t			 n;

	/* 1, 2, 3 per name, each naming the one before and its digest. */
	backup(f, "vm", seeds, 3, &p1, NULL, NULL, NULL);
	backup(f, "vm", seeds, 3, &p2, NULL, NULL, NULL);
	backup(f, "db", seeds, 3, &d1, NULL, NULL, NULL);
	backup(f, "vm", seeds, 3, &p3, NULL, NULL, NULL);
	assert_int_equal(p1.rp_sequence, 1);
	assert_string_equal(p1.rp_previous_id, "");
	assert_int_equal(p2.rp_sequence, 2);
	assert_string_equal(p2.rp_previous_id, p1.rp_id);
	assert_int_equal(p3.rp_sequence, 3);
	assert_string_equal(p3.rp_previous_id, p2.rp_id);
	assert_int_equal(d1.rp_sequence, 1);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", p2.rp_id,
	    &q), 0);
	assert_memory_equal(q.rp_digest, p3.rp_previous_digest, CHUNK_ID_LEN);
	repo_point_clear(&q);
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "vm", p3.rp_id,
	    &q), 0);
	assert_int_equal(q.rp_sequence, 3);
	assert_string_equal(q.rp_previous_id, p2.rp_id);
	repo_point_clear(&q);

	/* Manifests from before chains still load, first in the list. */
	make_legacy(f, "db", d1.rp_id);
	assert_int_equal(repo_list(f->f_repo, TENANT, "db", &pts, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(pts[0].rp_sequence, 0);
	repo_points_free(pts, n);
	backup(f, "db", seeds, 3, &q, NULL, NULL, NULL);
	assert_int_equal(q.rp_sequence, 1);
	assert_string_equal(q.rp_previous_id, d1.rp_id);
	assert_int_equal(repo_list(f->f_repo, TENANT, "db", &pts, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(pts[0].rp_id, d1.rp_id);
	assert_string_equal(pts[1].rp_id, q.rp_id);
	repo_points_free(pts, n);

	/* A read-only open works beside the daemon's lock. */
	ro = repo_open_readonly(f->f_path, err, sizeof(err));
	assert_non_null(ro);
	assert_int_equal(repo_list(ro, TENANT, "vm", &pts, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(pts[2].rp_sequence, 3);
	repo_points_free(pts, n);
	repo_close(ro);
	/* It creates nothing: a missing repository stays missing. */
	snprintf(none, sizeof(none), "%s/none", f->f_dir);
	assert_null(repo_open_readonly(none, err, sizeof(err)));
	assert_non_null(strstr(err, "No such file"));
	assert_int_equal(access(none, F_OK), -1);
	/* Nor in an empty directory, which repo_open would make one. */
	assert_int_equal(mkdir(none, 0700), 0);
	assert_null(repo_open_readonly(none, err, sizeof(err)));
	assert_non_null(strstr(err, "not a transporter repository"));
	assert_int_equal(dir_entries(none), 0);
}

/* Jobs of one name committed at once still take distinct numbers. */
#define CHAIN_THREADS	4
#define CHAIN_ROUNDS	5

struct chain_commit {
	struct repo_job		*cc_job;
	struct repo_point	 cc_point;
	int			 cc_rv;
};

static void *
chain_commit_worker(void *arg)
{
	struct chain_commit	*cc = arg;

	cc->cc_rv = repo_job_commit(cc->cc_job, &cc->cc_point);
	return NULL;
}

static void
test_chain_concurrent(void **state)
{
	struct fixture		*f = *state;
	struct chain_commit	 cc[CHAIN_THREADS];
	pthread_t		 t[CHAIN_THREADS];
	struct repo_point	*pts;
	uint8_t			 buf[1000], id[CHUNK_ID_LEN];
	size_t			 n, i;
	int			 r, k;

	make_chunk(71, buf, sizeof(buf), id);
	for (r = 0; r < CHAIN_ROUNDS; r++) {
		for (k = 0; k < CHAIN_THREADS; k++) {
			cc[k].cc_job = repo_job_begin(f->f_repo, TENANT, "vm",
			    BS, BS, ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT);
			assert_non_null(cc[k].cc_job);
			assert_int_equal(repo_job_put_chunk(cc[k].cc_job, id,
			    CHUNK_COMPRESSED, BS, buf, sizeof(buf)), 0);
			assert_int_equal(repo_job_set_block(cc[k].cc_job, 0,
			    id), 0);
		}
		for (k = 0; k < CHAIN_THREADS; k++)
			assert_int_equal(pthread_create(&t[k], NULL,
			    chain_commit_worker, &cc[k]), 0);
		for (k = 0; k < CHAIN_THREADS; k++) {
			assert_int_equal(pthread_join(t[k], NULL), 0);
			assert_int_equal(cc[k].cc_rv, 0);
		}
	}
	assert_int_equal(repo_list(f->f_repo, TENANT, "vm", &pts, &n), 0);
	assert_int_equal(n, CHAIN_THREADS * CHAIN_ROUNDS);
	for (i = 0; i < n; i++) {
		assert_int_equal(pts[i].rp_sequence, i + 1);
		if (i > 0)
			assert_string_equal(pts[i].rp_previous_id,
			    pts[i - 1].rp_id);
	}
	repo_points_free(pts, n);
}

/* A source-side point "evil" whose block 0 is junk, sealed, under id. */
static void
plant_junk(struct fixture *f, const uint8_t *id, const uint8_t *junk,
    size_t len)
{
	struct repo_job		*j;
	struct repo_point	 p;

	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, "evil", BS, BS,
	    ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE));
	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_ENCRYPTED, BS, junk,
	    len), 0);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
}

/*
 * A chunk stored sealed under the id of plaintext (a source-side job's
 * false id: the target cannot check those) is replaced by the first
 * job whose ids it checks, not deduplicated against; a source-side job
 * naming a chunk stored unsealed fails with EEXIST.
 */
static void
test_chunk_kinds(void **state)
{
	struct fixture		*f = *state;
	struct repo_job		*j;
	struct repo_point	 p;
	struct repo_chunk	 c;
	uint8_t			 plain[1000], junk[1000], id[CHUNK_ID_LEN];
	uint8_t			 other[CHUNK_ID_LEN];

	make_chunk(7, plain, sizeof(plain), id);
	memset(junk, 0xee, sizeof(junk));
	/* A source-side job plants junk under the plaintext's id. */
	plant_junk(f, id, junk, sizeof(junk));
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	assert_true(c.rc_flags & CHUNK_ENCRYPTED);
	repo_chunk_clear(&c);

	/* An in-flight job whose id the target checked puts its own. */
	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, "vm", BS, BS,
	    ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT));
	assert_int_equal(repo_job_put_chunk(j, id, 0, sizeof(plain), plain,
	    sizeof(plain)), 0);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	assert_true(repo_job_chunks_new(j) == 1);
	assert_true(repo_job_chunks_dedup(j) == 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	assert_true(c.rc_flags == 0);
	assert_int_equal(c.rc_len, sizeof(plain));
	assert_memory_equal(c.rc_data, plain, sizeof(plain));
	repo_chunk_clear(&c);

	/* The next in-flight job deduplicates against it as usual. */
	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, "vm2", BS, BS,
	    ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT));
	assert_int_equal(repo_job_put_chunk(j, id, 0, sizeof(plain), plain,
	    sizeof(plain)), 0);
	assert_true(repo_job_chunks_dedup(j) == 1);
	repo_job_abort(j);

	/* A source-side job naming the unsealed chunk: refused. */
	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, "evil", BS, BS,
	    ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE));
	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_ENCRYPTED, BS, junk,
	    sizeof(junk)), -1);
	assert_int_equal(errno, EEXIST);
	/* Its other chunks still go in. */
	make_chunk(8, junk, sizeof(junk), other);
	assert_int_equal(repo_job_put_chunk(j, other, CHUNK_ENCRYPTED, BS,
	    junk, sizeof(junk)), 0);
	repo_job_abort(j);
}

/*
 * keys: a packed KeyChain of the n 16-byte ids at ids (nothing wrapped);
 * with purposes, the first is a chain's chunk-id key, the rest data keys.
 */
static uint8_t *
key_list_purposes(const uint8_t *ids, size_t n, int purposes, size_t *len)
{
	KeyChain	 kc = KEY_CHAIN__INIT;
	WrappedKey	 wk[5], *p[5];
	uint8_t		*buf;
	size_t		 i;

	assert_true(n <= 5);
	for (i = 0; i < n; i++) {
		wrapped_key__init(&wk[i]);
		wk[i].key_id.data = (uint8_t *)ids + i * KEY_ID_LEN;
		wk[i].key_id.len = KEY_ID_LEN;
		if (purposes)
			wk[i].purpose = i == 0 ? KEY_PURPOSE_CHUNK_ID :
			    KEY_PURPOSE_DATA;
		p[i] = &wk[i];
	}
	kc.n_keys = n;
	kc.keys = p;
	*len = key_chain__get_packed_size(&kc);
	assert_non_null(buf = malloc(*len));
	key_chain__pack(&kc, buf);
	return buf;
}

static uint8_t *
key_list(const uint8_t *ids, size_t n, size_t *len)
{
	return key_list_purposes(ids, n, 0, len);
}

/* An at-rest job of name, sealing under the n keys ids. */
static struct repo_job *
atrest_begin(struct fixture *f, const char *name, const uint8_t *ids,
    size_t n)
{
	struct repo_job	*j;
	uint8_t		*keys;
	size_t		 klen;

	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, name, BS, BS,
	    ENCRYPTION_MODE__ENCRYPTION_AT_REST));
	keys = key_list(ids, n, &klen);
	assert_int_equal(repo_job_set_seal_keys(j, keys, klen), 0);
	free(keys);
	return j;
}

/* The same, with one chunk put. */
static struct repo_job *
atrest_put(struct fixture *f, const char *name, const uint8_t *ids,
    size_t n, const uint8_t *id, const uint8_t *sealed, size_t len)
{
	struct repo_job	*j = atrest_begin(f, name, ids, n);

	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_ENCRYPTED, BS, sealed,
	    len), 0);
	return j;
}

/*
 * A tenant with at-rest and source-side backups: both seal their chunks,
 * so only the key id that leads a sealed payload tells an at-rest chunk
 * from a source-side job's junk under a plaintext id.
 */
static void
test_chunk_seal_keys(void **state)
{
	struct fixture		*f = *state;
	struct repo_job		*j;
	struct repo_point	 p;
	struct repo_chunk	 c;
	uint8_t			 ours[2 * KEY_ID_LEN], theirs[KEY_ID_LEN];
	uint8_t			 plain[1000], junk[1000], sealed[1000];
	uint8_t			 id[CHUNK_ID_LEN];

	memset(ours, 0x11, KEY_ID_LEN);
	memset(ours + KEY_ID_LEN, 0x33, KEY_ID_LEN);
	memset(theirs, 0x22, sizeof(theirs));
	make_chunk(9, plain, sizeof(plain), id);
	memset(junk, 0xee, sizeof(junk));
	memcpy(junk, theirs, KEY_ID_LEN);
	memset(sealed, 0x5a, sizeof(sealed));
	memcpy(sealed, ours + KEY_ID_LEN, KEY_ID_LEN);

	/* A source-side job plants junk, sealed under its own key. */
	plant_junk(f, id, junk, sizeof(junk));

	/* An at-rest job, sealing under the tenant's keys, puts its own. */
	j = atrest_put(f, "vm", ours, 2, id, sealed, sizeof(sealed));
	assert_true(repo_job_chunks_new(j) == 1);
	assert_true(repo_job_chunks_dedup(j) == 0);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	assert_int_equal(c.rc_len, sizeof(sealed));
	assert_memory_equal(c.rc_data, sealed, sizeof(sealed));
	repo_chunk_clear(&c);

	/* The next at-rest job deduplicates against it. */
	j = atrest_put(f, "vm2", ours, 2, id, sealed, sizeof(sealed));
	assert_true(repo_job_chunks_dedup(j) == 1);
	repo_job_abort(j);
}

/*
 * The same race as a publish: a job that put its chunk before another
 * job linked one of another kind under the same id fails its sync
 * (EEXIST) instead of deduplicating against it; the next job replaces
 * it.  In flight against sealed junk, and at rest against junk sealed
 * under a key that is not the tenant's.
 */
static void
test_chunk_kind_race(void **state)
{
	struct fixture		*f = *state;
	struct repo_job		*j;
	struct repo_point	 p;
	struct repo_chunk	 c;
	uint8_t			 plain[1000], junk[1000], sealed[1000];
	uint8_t			 ours[KEY_ID_LEN], id[CHUNK_ID_LEN];

	make_chunk(10, plain, sizeof(plain), id);
	memset(junk, 0xee, sizeof(junk));
	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, "vm", BS, BS,
	    ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT));
	assert_int_equal(repo_job_put_chunk(j, id, 0, sizeof(plain), plain,
	    sizeof(plain)), 0);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	plant_junk(f, id, junk, sizeof(junk));	/* linked first */
	assert_int_equal(repo_job_sync(j), -1);
	assert_int_equal(errno, EEXIST);
	repo_job_abort(j);
	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, "vm", BS, BS,
	    ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT));
	assert_int_equal(repo_job_put_chunk(j, id, 0, sizeof(plain), plain,
	    sizeof(plain)), 0);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	assert_true(c.rc_flags == 0);
	assert_memory_equal(c.rc_data, plain, sizeof(plain));
	repo_chunk_clear(&c);

	/* At rest: another id, and junk sealed under a key not the tenant's. */
	make_chunk(11, plain, sizeof(plain), id);
	memset(ours, 0x11, sizeof(ours));
	memset(sealed, 0x5a, sizeof(sealed));
	memcpy(sealed, ours, KEY_ID_LEN);
	j = atrest_put(f, "vm3", ours, 1, id, sealed, sizeof(sealed));
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	plant_junk(f, id, junk, sizeof(junk));	/* not our key */
	assert_int_equal(repo_job_commit(j, &p), -1);
	assert_int_equal(errno, EEXIST);
	j = atrest_put(f, "vm3", ours, 1, id, sealed, sizeof(sealed));
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), 0);
	assert_memory_equal(c.rc_data, sealed, sizeof(sealed));
	repo_chunk_clear(&c);
}

/*
 * At rest, a point lists the keys its chunks need, not every key of the
 * tenant: its own, those of chunks it deduplicates against, and those
 * its base lists.  Keys 1, 2, 3: a job of "a" stores under key 1; a
 * job of "b" (own key 2) deduplicates against it; "b"'s next job (own
 * key 3, "b"'s point as its base) lists all three.  A job of "c" (own
 * key 3, nothing shared) lists key 3 alone.
 */
/* How many keys the newest point of name lists; the first id in first. */
static size_t
listed_keys(struct fixture *f, const char *name, uint8_t first[KEY_ID_LEN])
{
	struct repo_point	 p;
	KeyChain		*kc;
	size_t			 n;

	assert_int_equal(repo_point_open(f->f_repo, TENANT, name, NULL, &p),
	    0);
	assert_non_null(kc = key_chain__unpack(NULL, p.rp_keys_len,
	    p.rp_keys));
	n = kc->n_keys;
	if (n > 0)
		memcpy(first, kc->keys[0]->key_id.data, KEY_ID_LEN);
	key_chain__free_unpacked(kc, NULL);
	repo_point_clear(&p);
	return n;
}

static void
test_point_keys(void **state)
{
	struct fixture		*f = *state;
	struct repo_job		*j;
	struct repo_point	 p, base;
	uint8_t			 keys[3 * KEY_ID_LEN], sealed[1000];
	uint8_t			 first[KEY_ID_LEN];
	uint8_t			 id[CHUNK_ID_LEN], other[CHUNK_ID_LEN];

	memset(keys, 0x11, KEY_ID_LEN);
	memset(keys + KEY_ID_LEN, 0x22, KEY_ID_LEN);
	memset(keys + 2 * KEY_ID_LEN, 0x33, KEY_ID_LEN);
	make_chunk(12, sealed, sizeof(sealed), id);
	memcpy(sealed, keys, KEY_ID_LEN);	/* sealed under key 1 */

	j = atrest_put(f, "a", keys, 3, id, sealed, sizeof(sealed));
	repo_job_use_keys(j, keys, NULL);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	assert_int_equal(listed_keys(f, "a", first), 1);
	assert_memory_equal(first, keys, KEY_ID_LEN);

	j = atrest_put(f, "b", keys, 3, id, sealed, sizeof(sealed));
	assert_true(repo_job_chunks_dedup(j) == 1);
	repo_job_use_keys(j, keys + KEY_ID_LEN, NULL);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	/* key 1 (deduplicated against) and its own 2 */
	assert_int_equal(listed_keys(f, "b", first), 2);

	assert_int_equal(repo_point_open(f->f_repo, TENANT, "b", NULL, &base),
	    0);
	make_chunk(13, sealed, sizeof(sealed), other);
	memcpy(sealed, keys + 2 * KEY_ID_LEN, KEY_ID_LEN);
	j = atrest_put(f, "b", keys, 3, other, sealed, sizeof(sealed));
	repo_job_use_keys(j, keys + 2 * KEY_ID_LEN, &base);
	repo_point_clear(&base);
	assert_int_equal(repo_job_set_block(j, 0, other), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	/* the base's 1 and 2, and its own 3 */
	assert_int_equal(listed_keys(f, "b", first), 3);

	make_chunk(14, sealed, sizeof(sealed), other);
	memcpy(sealed, keys + 2 * KEY_ID_LEN, KEY_ID_LEN);
	j = atrest_put(f, "c", keys, 3, other, sealed, sizeof(sealed));
	repo_job_use_keys(j, keys + 2 * KEY_ID_LEN, NULL);
	assert_int_equal(repo_job_set_block(j, 0, other), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	assert_int_equal(listed_keys(f, "c", first), 1);
	assert_memory_equal(first, keys + 2 * KEY_ID_LEN, KEY_ID_LEN);
}

/* A source-side job of name (two blocks): chunk id sealed under key. */
static struct repo_job *
source_put(struct fixture *f, const char *name, unsigned seed,
    const uint8_t key[KEY_ID_LEN], uint8_t id[CHUNK_ID_LEN])
{
	struct repo_job	*j;
	uint8_t		 sealed[1000];

	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, name, 2 * BS,
	    BS, ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE));
	make_chunk(seed, sealed, sizeof(sealed), id);
	memcpy(sealed, key, KEY_ID_LEN);
	assert_int_equal(repo_job_put_chunk(j, id, CHUNK_ENCRYPTED, BS, sealed,
	    sizeof(sealed)), 0);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	return j;
}

/*
 * Gives j the n keys at ids (the first the chunk-id key) and a key file
 * of its own ("TRKC #1", "TRKC #2", ...), and commits.
 */
static int
source_commit(struct repo_job *j, const uint8_t *ids, size_t n)
{
	static int		 commits;
	struct repo_point	 p;
	uint8_t			*keys;
	char			 file[24];
	size_t			 len;
	int			 rv;

	keys = key_list_purposes(ids, n, 1, &len);
	snprintf(file, sizeof(file), "TRKC #%d", ++commits);
	assert_int_equal(repo_job_set_keys(j, keys, len, (uint8_t *)file,
	    strlen(file)), 0);
	free(keys);
	if ((rv = repo_job_commit(j, &p)) == 0)
		repo_point_clear(&p);
	return rv;
}

/*
 * Source-side, of the keys the source sends (every key of the chain), a
 * point lists the chunk-id key and the keys its chunks need: those of
 * the chunks it stores and deduplicates against, those its base lists.
 * A chunk sealed under a key the source did not send fails the commit.
 * Keys: C (chunk ids), 1, 2, 3, and X, never sent.
 */
static void
test_source_side_point_keys(void **state)
{
	struct fixture		*f = *state;
	struct repo_job		*j;
	struct repo_point	 base;
	uint8_t			 keys[5 * KEY_ID_LEN], first[KEY_ID_LEN];
	uint8_t			 dup[4 * KEY_ID_LEN], id[CHUNK_ID_LEN];
	uint8_t			 other[CHUNK_ID_LEN], sealed[1000];
	const uint8_t		*k1 = keys + KEY_ID_LEN;
	const uint8_t		*k2 = keys + 2 * KEY_ID_LEN;
	const uint8_t		*k3 = keys + 3 * KEY_ID_LEN;
	const uint8_t		*kx = keys + 4 * KEY_ID_LEN;
	struct repo_chunk	 c;
	uint8_t			*file;
	size_t			 i, len;

	for (i = 0; i < 5; i++)
		memset(keys + i * KEY_ID_LEN, (int)(0x10 * (i + 1)),
		    KEY_ID_LEN);

	/* One chunk under 1, all four keys sent: C and 1 listed. */
	j = source_put(f, "s", 20, k1, id);
	assert_int_equal(source_commit(j, keys, 4), 0);
	assert_int_equal(listed_keys(f, "s", first), 2);
	assert_memory_equal(first, keys, KEY_ID_LEN);

	/* A full point: the same chunk (deduplicated) and one under 2. */
	j = source_put(f, "s", 20, k2, id);
	assert_true(repo_job_chunks_dedup(j) == 1);
	make_chunk(21, sealed, sizeof(sealed), other);
	memcpy(sealed, k2, KEY_ID_LEN);
	assert_int_equal(repo_job_put_chunk(j, other, CHUNK_ENCRYPTED, BS,
	    sealed, sizeof(sealed)), 0);
	assert_int_equal(repo_job_set_block(j, 1, other), 0);
	assert_int_equal(source_commit(j, keys, 4), 0);
	assert_int_equal(listed_keys(f, "s", first), 3);	/* C, 1, 2 */

	/* An incremental on it, its new chunk under 3: C, 1, 2, 3. */
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "s", NULL, &base),
	    0);
	j = source_put(f, "s", 22, k3, id);
	assert_int_equal(repo_job_use_keys(j, NULL, &base), 0);
	repo_point_clear(&base);
	assert_int_equal(repo_job_set_block(j, 1, other), 0);
	assert_int_equal(source_commit(j, keys, 4), 0);
	assert_int_equal(listed_keys(f, "s", first), 4);

	/*
	 * A chunk under X, which the source does not send: refused before
	 * its chunk is published or the key file replaced.
	 */
	j = source_put(f, "s", 23, kx, id);
	assert_int_equal(source_commit(j, keys, 4), -1);
	assert_int_equal(errno, ENOKEY);
	assert_int_equal(listed_keys(f, "s", first), 4);
	assert_int_equal(repo_chunk_read(f->f_repo, TENANT, id, &c), -1);
	assert_int_equal(repo_keychain_read(f->f_repo, TENANT, "s", &file,
	    &len), 0);
	assert_int_equal(len, strlen("TRKC #3"));
	assert_memory_equal(file, "TRKC #3", len);
	free(file);

	/* Key 1 sent twice is listed once; 2 and 3, unused, not at all. */
	memcpy(dup, keys, 2 * KEY_ID_LEN);
	memcpy(dup + 2 * KEY_ID_LEN, k1, KEY_ID_LEN);
	memcpy(dup + 3 * KEY_ID_LEN, k2, KEY_ID_LEN);
	j = source_put(f, "t", 24, k1, id);
	assert_int_equal(source_commit(j, dup, 4), 0);
	assert_int_equal(listed_keys(f, "t", first), 2);
}

/* Makes the job's blocks durable, journals them, and suspends it. */
static void
checkpoint_suspend(struct repo_job *j)
{
	struct repo_snapshot	*sn;

	assert_non_null(sn = repo_job_snapshot(j));
	assert_int_equal(repo_job_sync(j), 0);
	assert_int_equal(repo_job_checkpoint(j, sn), 0);
	repo_snapshot_free(sn);
	repo_job_suspend(j);
}

/* A suspended in-flight job of name: blocks 0 and 1 stored, journaled. */
static void
suspend_job(struct fixture *f, const char *name, unsigned seed)
{
	struct repo_job		*j;
	uint8_t			 buf[1000], id[CHUNK_ID_LEN];
	uint64_t		 i;

	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, name, 4 * BS,
	    BS, ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT));
	assert_true(repo_job_journals(j));
	for (i = 0; i < 2; i++) {
		make_chunk(seed + (unsigned)i, buf, sizeof(buf), id);
		assert_int_equal(repo_job_put_chunk(j, id, CHUNK_COMPRESSED,
		    BS, buf, sizeof(buf)), 0);
		assert_int_equal(repo_job_set_block(j, i, id), 0);
	}
	checkpoint_suspend(j);
}

/* The journal file of the one suspended job of name. */
static void
journal_of(struct fixture *f, const char *name, char *path, size_t len)
{
	char		 dir[256], jpath[512];
	DIR		*d;
	struct dirent	*de;
	FILE		*fp;
	char		 head[64 + NAME_MAX_LEN];
	size_t		 n;

	assert_true(snprintf(dir, sizeof(dir), "%s/tenants/%s/tmp", f->f_path,
	    TENANT) < (int)sizeof(dir));
	assert_non_null(d = opendir(dir));
	path[0] = '\0';
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (snprintf(jpath, sizeof(jpath), "%s/%s/journal", dir,
		    de->d_name) >= (int)sizeof(jpath))
			continue;
		if ((fp = fopen(jpath, "r")) == NULL)
			continue;
		n = fread(head, 1, sizeof(head), fp);
		fclose(fp);
		if (n > 32 + strlen(name) &&
		    memcmp(head + 32, name, strlen(name)) == 0) {
			(void)snprintf(path, len, "%s", jpath);
			break;
		}
	}
	closedir(d);
	assert_true(path[0] != '\0');
}

/* What a new in-flight job of name would resume from (repo_job_resume). */
static int
resume_find(struct fixture *f, const char *name, uint8_t **ids,
    uint64_t *blocks)
{
	struct repo_job		*j;
	struct repo_point	 none;
	int			 rv, save;

	memset(&none, 0, sizeof(none));
	assert_non_null(j = repo_job_begin(f->f_repo, TENANT, name, 4 * BS,
	    BS, ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT));
	rv = repo_job_resume(j, &none, ids, blocks);
	save = errno;
	repo_job_abort(j);
	errno = save;
	return rv;
}

/*
 * Resume journals: each name finds its own; a journal of another name is
 * not read past its name, so one damaged in its body is neither taken
 * nor removed by the other name's backup, and its own finds it damaged.
 */
static void
test_resume_journals(void **state)
{
	struct fixture	*f = *state;
	char		 ja[512], jb[512];
	uint8_t		*ids = NULL, byte;
	uint64_t	 blocks;
	struct stat	 st;
	FILE		*fp;

	suspend_job(f, "vm-a", 100);
	suspend_job(f, "vm-b", 200);
	journal_of(f, "vm-a", ja, sizeof(ja));
	journal_of(f, "vm-b", jb, sizeof(jb));
	assert_int_equal(resume_find(f, "vm-b", &ids, &blocks), 0);
	assert_true(blocks == 4);
	assert_false(buf_is_zero(ids + CHUNK_ID_LEN, CHUNK_ID_LEN));
	assert_true(buf_is_zero(ids + 2 * CHUNK_ID_LEN, CHUNK_ID_LEN));
	free(ids);
	ids = NULL;

	/* A byte of the ids in A's journal flipped: */
	assert_non_null(fp = fopen(ja, "r+"));
	assert_int_equal(stat(ja, &st), 0);
	assert_int_equal(fseek(fp, st.st_size - 2 * CHUNK_ID_LEN - 5,
	    SEEK_SET), 0);
	byte = (uint8_t)fgetc(fp);
	assert_int_equal(fseek(fp, -1, SEEK_CUR), 0);
	assert_int_equal(fputc(byte ^ 0x40, fp), byte ^ 0x40);
	assert_int_equal(fclose(fp), 0);

	assert_int_equal(resume_find(f, "vm-b", &ids, &blocks), 0);
	free(ids);
	ids = NULL;
	repo_resume_drop(f->f_repo, TENANT, "vm-b");
	assert_int_equal(stat(jb, &st), -1);
	assert_int_equal(stat(ja, &st), 0);	/* not B's to judge */
	assert_int_equal(resume_find(f, "vm-a", &ids, &blocks), -1);
	assert_int_equal(errno, ENOENT);
	repo_resume_drop(f->f_repo, TENANT, "vm-a");
	assert_int_equal(stat(ja, &st), -1);	/* damaged: A's drops it */
}

/*
 * At rest, an interrupted job's journal records the keys its chunks are
 * sealed under, and the job resuming from it lists them: here one it
 * deduplicated against (key 1) besides its own (key 2); the new job's
 * own is key 3.  A job of another mode does not resume from it; one
 * whose tenant's key file no longer holds key 1 starts over (unless
 * the block is its base's), one whose file lacks key 2 (which seals
 * none of its chunks) does not.
 */
static void
test_atrest_resume_keys(void **state)
{
	struct fixture		*f = *state;
	struct repo_job		*j;
	struct repo_point	 p;
	uint8_t			 keys[3 * KEY_ID_LEN], sealed[1000];
	uint8_t			 first[KEY_ID_LEN], id[CHUNK_ID_LEN];
	uint8_t			 tenant[2 * KEY_ID_LEN], *ids = NULL;
	struct repo_point	 none, base;
	uint64_t		 blocks;

	memset(&none, 0, sizeof(none));
	memset(keys, 0x11, KEY_ID_LEN);
	memset(keys + KEY_ID_LEN, 0x22, KEY_ID_LEN);
	memset(keys + 2 * KEY_ID_LEN, 0x33, KEY_ID_LEN);
	make_chunk(21, sealed, sizeof(sealed), id);
	memcpy(sealed, keys, KEY_ID_LEN);	/* sealed under key 1 */
	j = atrest_put(f, "other", keys, 1, id, sealed, sizeof(sealed));
	repo_job_use_keys(j, keys, NULL);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);

	/* "vm": deduplicates against it, durable, then interrupted. */
	j = atrest_put(f, "vm", keys, 2, id, sealed, sizeof(sealed));
	assert_true(repo_job_chunks_dedup(j) == 1);
	repo_job_use_keys(j, keys + KEY_ID_LEN, NULL);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	checkpoint_suspend(j);

	/* In flight, "vm" finds nothing to resume: not its mode. */
	assert_int_equal(resume_find(f, "vm", &ids, &blocks), -1);
	assert_int_equal(errno, ENOENT);

	/* Without key 1 in the tenant's keys: starts over. */
	j = atrest_begin(f, "vm", keys + KEY_ID_LEN, 2);
	assert_int_equal(repo_job_resume(j, &none, &ids, &blocks), -1);
	assert_int_equal(errno, ENOKEY);
	repo_job_abort(j);

	/* Unless the block is its base's, whose keys are the base's to list. */
	assert_int_equal(repo_point_open(f->f_repo, TENANT, "other", NULL,
	    &base), 0);
	j = atrest_begin(f, "vm", keys + KEY_ID_LEN, 2);
	assert_int_equal(repo_job_resume(j, &base, &ids, &blocks), 0);
	free(ids);
	repo_job_abort(j);
	repo_point_clear(&base);

	/*
	 * Without key 2 (its own, which sealed none of its durable
	 * chunks): the headers show key 1 will do, so it resumes.
	 */
	memcpy(tenant, keys, KEY_ID_LEN);
	memcpy(tenant + KEY_ID_LEN, keys + 2 * KEY_ID_LEN, KEY_ID_LEN);
	j = atrest_begin(f, "vm", tenant, 2);
	assert_int_equal(repo_job_resume(j, &none, &ids, &blocks), 0);
	assert_true(blocks == 1);
	free(ids);
	repo_job_abort(j);

	/* With it: resumes, and its point lists 1, 2 and its own 3. */
	j = atrest_begin(f, "vm", keys, 3);
	repo_job_use_keys(j, keys + 2 * KEY_ID_LEN, NULL);
	assert_int_equal(repo_job_resume(j, &none, &ids, &blocks), 0);
	assert_true(blocks == 1);
	assert_false(buf_is_zero(ids, CHUNK_ID_LEN));
	assert_int_equal(repo_job_set_block(j, 0, ids), 0);	/* Unchanged */
	free(ids);
	assert_int_equal(repo_job_commit(j, &p), 0);
	repo_point_clear(&p);
	assert_int_equal(listed_keys(f, "vm", first), 3);
}

/* Rewrites the journal at path as version 1 wrote it: no key ids. */
static void
journal_to_v1(const char *path)
{
	uint8_t		 buf[65536];
	size_t		 n, idslen;
	FILE		*fp;

	assert_non_null(fp = fopen(path, "r"));
	n = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	assert_true(n > 32 && buf[4] == 2);
	idslen = 32 + ((size_t)buf[6] << 8 | buf[7]) +
	    32 * ((size_t)buf[30] << 8 | buf[31]);	/* few blocks */
	assert_true(idslen + 4 + CHUNK_ID_LEN <= n);
	buf[4] = 1;
	crypto_sha256(buf, idslen, buf + idslen);
	assert_non_null(fp = fopen(path, "w"));
	assert_int_equal(fwrite(buf, 1, idslen + CHUNK_ID_LEN, fp),
	    idslen + CHUNK_ID_LEN);
	assert_int_equal(fclose(fp), 0);
}

/*
 * A journal from before key ids (version 1): an in-flight job resumes
 * from it as before; an at-rest one starts over, not knowing its keys.
 */
static void
test_resume_journal_v1(void **state)
{
	struct fixture		*f = *state;
	struct repo_job		*j;
	struct repo_point	 none;
	uint8_t			 key[KEY_ID_LEN], sealed[1000];
	uint8_t			 id[CHUNK_ID_LEN], *ids = NULL;
	uint64_t		 blocks;
	char			 path[512];

	suspend_job(f, "vm-1", 300);
	journal_of(f, "vm-1", path, sizeof(path));
	journal_to_v1(path);
	assert_int_equal(resume_find(f, "vm-1", &ids, &blocks), 0);
	assert_true(blocks == 4);
	assert_false(buf_is_zero(ids, CHUNK_ID_LEN));
	free(ids);

	memset(&none, 0, sizeof(none));
	memset(key, 0x44, sizeof(key));
	make_chunk(310, sealed, sizeof(sealed), id);
	memcpy(sealed, key, KEY_ID_LEN);
	j = atrest_put(f, "vm-2", key, 1, id, sealed, sizeof(sealed));
	repo_job_use_keys(j, key, NULL);
	assert_int_equal(repo_job_set_block(j, 0, id), 0);
	checkpoint_suspend(j);
	journal_of(f, "vm-2", path, sizeof(path));
	j = atrest_begin(f, "vm-2", key, 1);
	assert_int_equal(repo_job_resume(j, &none, &ids, &blocks), 0);
	free(ids);
	repo_job_abort(j);
	journal_to_v1(path);
	j = atrest_begin(f, "vm-2", key, 1);
	assert_int_equal(repo_job_resume(j, &none, &ids, &blocks), -1);
	assert_int_equal(errno, ENOKEY);
	repo_job_abort(j);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_creates_layout,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_atrest_resume_keys,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_link_hint,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_resume_journal_v1,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_refuses,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_format_upgrade, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_commit_list_open,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_dedup, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_and_uncommitted,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunk_tamper,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_chunk_versions,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_manifest_tamper,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_tamper,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_index_windows, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_inspect_windows, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_stale_tmp,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_found,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_args,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_resume_journals, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_chunk_kinds, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_chunk_seal_keys, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_chunk_kind_race, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_point_keys, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_source_side_point_keys,
		    setup, teardown),
		cmocka_unit_test_setup_teardown(test_chain_concurrent, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_puts,
		    setup, teardown),
	};

	log_init("test_repo", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
