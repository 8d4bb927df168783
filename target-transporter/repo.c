/*
 * repo.c: the target's repository of restore points.
 *
 * Content-addressed chunk objects plus, per restore point, an index
 * (block number -> chunk id) and a manifest written last: a point
 * exists iff its manifest exists and verifies.  Per tenant:
 *
 *	transporter-repo			format marker
 *	tenants/T/chunks/xx/<64 hex>		chunk objects, immutable
 *	tenants/T/points/NAME/<id>.index	block -> chunk id
 *	tenants/T/points/NAME/<id>.manifest	the commit record
 *	tenants/T/points/NAME/<id>.pruned	a pruned point's manifest
 *	tenants/T/tmp/<id>/			a job in progress
 *
 * Invariant: an object under its final name is complete and durable.
 * Storage is reached only through the be_* functions, which ask
 * nothing of the store that RADOS or S3 lacks: whole immutable
 * objects, create-if-absent, ranged reads, unordered listing of one
 * prefix.  No directory is ever renamed.
 */
#include <sys/types.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <search.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <xxhash.h>

#include "keys.h"
#include "target.h"

#define REPO_MARKER		"transporter-repo"
#define REPO_MARKER_STAGE	".transporter-repo.tmp"
#define REPO_MARKER_PREFIX	"transporter repository "
/*
 * Format 2: chunks of version 2 (an XXH3-128 checksum) may be in it.  A
 * format 1 repository (SHA-256 chunks only) is read as it is and marked
 * format 2 when a target opens it to write, so that an older target
 * refuses it by name instead of calling the new chunks damaged.
 */
#define REPO_FORMAT		2
#define REPO_FORMAT_OLDEST	1
#define REPO_KEY_MAX		512
#define REPO_TREE_DEPTH		4	/* how deep stale tmp trees go */

/*
 * Chunk object: header then stored payload.  The header's checksum of
 * the payload (bytes 16-47) finds damage without a key; a chunk's
 * identity is its id, checked by whoever can read it.  Version 2: an
 * XXH3-128 checksum (bytes 16-31, canonical, then 16 zero bytes), ten
 * times cheaper than version 1's SHA-256, which is still read.
 */
#define CHUNK_MAGIC		"TRCK"
#define CHUNK_VERSION_SHA256	1
#define CHUNK_VERSION		2
#define CHUNK_HDR_LEN		48
#define CHUNK_SUM_OFF		16
#define CHUNK_STORED_MAX	(BLOCK_SIZE_MAX + 64)
#define CHUNK_FLAGS_ALL		(CHUNK_COMPRESSED | CHUNK_ENCRYPTED)

/* Index: header then blocks * CHUNK_ID_LEN. */
#define INDEX_MAGIC		"TRIX"
#define INDEX_VERSION		1
#define INDEX_HDR_LEN		20
/* 2^30 blocks: 64 TiB at 64 KiB blocks, a 32 GiB index in memory. */
#define REPO_BLOCKS_MAX		(1ull << 30)

/* Manifest: magic, u32 length, protobuf Manifest, SHA-256. */
#define MANIFEST_MAGIC		"TRMF"
#define MANIFEST_FORMAT		1
#define MANIFEST_MAX		(4u << 20)	/* keys of long chains */
#define POINT_KEYS_MAX		(MANIFEST_MAX / 2)	/* ... of one point */
#define KEYCHAIN_FILE_MAX	(16u << 20)

/* "YYYYMMDDTHHMMSSZ-" + 8 hex */
#define POINT_ID_LEN		25

/* Journal of an unfinished job: what of it is durable (resume). */
#define JOURNAL_NAME		"journal"
#define JOURNAL_STAGE		"journal.tmp"
#define JOURNAL_MAGIC		"TRJN"
#define JOURNAL_VERSION		2	/* 1: no key ids after the ids */
#define JOURNAL_HDR_LEN		32	/* before the name */

/* What a tenant with a quota stores: counted once, then kept up. */
struct repo_usage {
	char			 ru_tenant[NAME_MAX_LEN + 1];
	_Atomic uint64_t	 ru_bytes;
	struct repo_usage	*ru_next;
};

struct repo {
	char			*r_path;
	int			 r_fd;		/* root; flock'd */
	int			 r_readonly;	/* verify: no lock, no writes */
	_Atomic int		 r_direct;	/* chunks staged with O_DIRECT */
	pthread_mutex_t		 r_usage_mtx;	/* r_usage */
	struct repo_usage	*r_usage;
};

/*
 * O_DIRECT chunk staging: offsets, lengths and buffer addresses are
 * multiples of this (the largest logical block size of common disks).
 */
#define DIRECT_ALIGN		4096
#define DIRECT_BUF_LEN		((CHUNK_HDR_LEN + CHUNK_STORED_MAX + \
				    DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1))

/*
 * Held from the choice of a new point's sequence number until its
 * manifest is published, so that two jobs of one name never take the
 * same number.
 */
static pthread_mutex_t	 chain_mtx = PTHREAD_MUTEX_INITIALIZER;

/* A chunk written to the job's tmp dir, not yet durable. */
struct pending {
	uint8_t			 pd_id[CHUNK_ID_LEN];
	uint64_t		 pd_seq;	/* tmp/<job>/c<seq> */
	uint32_t		 pd_size;	/* header + payload */
	uint32_t		 pd_flags;	/* CHUNK_* it was stored with */
	int			 pd_replace;	/* over a chunk of another kind */
	struct pending		*pd_next;
};

struct repo_job {
	struct repo		*j_repo;
	char			 j_tenant[NAME_MAX_LEN + 1];
	char			 j_name[NAME_MAX_LEN + 1];
	char			 j_id[POINT_ID_LEN + 1];
	char			 j_tmp[REPO_KEY_MAX];	/* key of tmp dir */
	int			 j_tmp_fd;	/* flock'd: the job is live */
	int64_t			 j_created;
	uint64_t		 j_disk_size;
	uint32_t		 j_block_size;
	uint32_t		 j_mode;
	uint64_t		 j_blocks;
	struct id_map		 j_ids;		/* its chunk ids (idmap.c) */
	uint8_t			*j_keys;	/* packed KeyChain: point's keys */
	size_t			 j_keys_len;
	char			 j_transport[16];
	char			 j_dirty_bitmap[NAME_MAX_LEN + 1];
	uint8_t			*j_keychain;	/* chain key file to store */
	size_t			 j_keychain_len;
	uint8_t			*j_seal_ids;	/* at rest: its keys' ids */
	size_t			 j_nseal_ids;	/* ... sorted, 16 bytes each */
	int			 j_link_hint;	/* the chain at its start: */
	uint8_t			 j_link_names[CHUNK_ID_LEN];
	uint64_t		 j_link_sequence;	/* the highest */
	char			 j_link_id[64];	/* newest: rp_id */
	uint8_t			 j_link_digest[CHUNK_ID_LEN];
	struct repo_usage	*j_usage;	/* its tenant's count */
	uint64_t		 j_quota;
	_Atomic uint64_t	 j_unpublished;	/* counted, not linked */

	pthread_mutex_t		 j_mtx;		/* the fields below */
	void			*j_tree;	/* pending by id (tsearch) */
	struct pending		*j_pending;	/* not yet taken by a sync */
	uint64_t		 j_seq;
	void			*j_used_keys;	/* key ids its chunks are */
	size_t			 j_nused_keys;	/* ... sealed under (tsearch) */
	pthread_mutex_t		 j_sync_mtx;	/* one sync at a time */

	_Atomic uint64_t	 j_bytes;
	_Atomic uint64_t	 j_new;
	_Atomic uint64_t	 j_dedup;
	_Atomic int		 j_err;		/* sticky: a sync failed */
};

struct be_obj {
	int			 bo_fd;
	uint64_t		 bo_size;
};

static const uint8_t zero_id[CHUNK_ID_LEN];

/*
 * Keys and names.
 */

/* Fills buf with a key; -1 ENAMETOOLONG if it does not fit. */
static int __attribute__((format(printf, 3, 4)))
repo_key(char *buf, size_t len, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* A tenant or backup name, safe as one path component. */
static int
repo_name_ok(const char *name)
{
	return name != NULL && name[0] != '\0' && name[0] != '.' &&
	    strlen(name) <= NAME_MAX_LEN && strchr(name, '/') == NULL &&
	    name_is_valid(name);
}

/* "YYYYMMDDTHHMMSSZ-" followed by 8 lower-case hex digits. */
static int
point_id_ok(const char *id)
{
	/* d: digit, x: lower-case hex digit, else that very character */
	static const char	 pat[] = "ddddddddTddddddZ-xxxxxxxx";
	size_t			 i;

	if (id == NULL || strlen(id) != POINT_ID_LEN)
		return 0;
	for (i = 0; i < POINT_ID_LEN; i++) {
		switch (pat[i]) {
		case 'd':
			if (id[i] < '0' || id[i] > '9')
				return 0;
			break;
		case 'x':
			if ((id[i] < '0' || id[i] > '9') &&
			    (id[i] < 'a' || id[i] > 'f'))
				return 0;
			break;
		default:
			if (id[i] != pat[i])
				return 0;
			break;
		}
	}
	return 1;
}

static void
id_hex(const uint8_t id[CHUNK_ID_LEN], char hex[2 * CHUNK_ID_LEN + 1])
{
	hex_encode(id, CHUNK_ID_LEN, hex);
	hex[2 * CHUNK_ID_LEN] = '\0';
}

static int
chunk_key(char *buf, size_t len, const char *tenant,
    const uint8_t id[CHUNK_ID_LEN])
{
	char	 hex[2 * CHUNK_ID_LEN + 1];

	id_hex(id, hex);
	return repo_key(buf, len, "tenants/%s/chunks/%.2s/%s", tenant, hex,
	    hex);
}

/*
 * I/O helpers: whole reads and writes, EINTR and short counts handled.
 */

static int
write_full(int fd, const void *buf, size_t len)
{
	const uint8_t	*p = buf;
	ssize_t		 n;

	while (len > 0) {
		n = write(fd, p, len > (1u << 30) ? (1u << 30) : len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		p += n;
		len -= n;
	}
	return 0;
}

static int
write_iov(int fd, const struct iovec *iov, int iovcnt)
{
	int	 i;

	for (i = 0; i < iovcnt; i++)
		if (write_full(fd, iov[i].iov_base, iov[i].iov_len) == -1)
			return -1;
	return 0;
}

/* Same as close(2) but a failure (lost write-back) is EIO. */
static int
close_checked(int fd)
{
	if (close(fd) == -1 && errno != EINTR) {
		if (errno != ENOSPC && errno != EDQUOT)
			errno = EIO;
		return -1;
	}
	return 0;
}

/*
 * Storage backend: the local directory.  Keys are paths relative to
 * the repository root, made only of validated names.
 */

/* 1 if the object exists, 0 if not, -1 on error. */
static int
be_exists(struct repo *r, const char *key)
{
	struct stat	 st;

	if (fstatat(r->r_fd, key, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	return errno == ENOENT ? 0 : -1;
}

/* Opens an object for ranged reads; ENOENT if absent. */
static int
be_open(struct repo *r, const char *key, struct be_obj *o)
{
	struct stat	 st;

	o->bo_fd = -1;
	o->bo_size = 0;
	if ((o->bo_fd = openat(r->r_fd, key,
	    O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1) {
		if (errno == ELOOP)
			errno = EBADMSG;
		return -1;
	}
	if (fstat(o->bo_fd, &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = EBADMSG;
		goto fail;
	}
	o->bo_size = (uint64_t)st.st_size;
	return 0;
 fail:
	close(o->bo_fd);
	o->bo_fd = -1;
	return -1;
}

/* Reads exactly len bytes at off; EBADMSG if the object is shorter. */
static int
be_read(struct be_obj *o, uint64_t off, void *buf, size_t len)
{
	uint8_t	*p = buf;
	ssize_t	 n;

	while (len > 0) {
		n = pread(o->bo_fd, p, len > (1u << 30) ? (1u << 30) : len,
		    (off_t)off);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EBADMSG;
			return -1;
		}
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

static void
be_close(struct be_obj *o)
{
	if (o->bo_fd != -1)
		close(o->bo_fd);
	o->bo_fd = -1;
}

/* fsync of a directory key; "" is the root. */
static int
be_sync_dir(struct repo *r, const char *key)
{
	int	 fd, rv;

	if (key[0] == '\0')
		return fsync(r->r_fd);
	if ((fd = openat(r->r_fd, key,
	    O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	rv = fsync(fd);
	if (close_checked(fd) == -1)
		rv = -1;
	return rv;
}

static int
be_sync_parent(struct repo *r, const char *key)
{
	char		 dir[REPO_KEY_MAX];
	const char	*slash;

	if ((slash = strrchr(key, '/')) == NULL)
		return be_sync_dir(r, "");
	if ((size_t)(slash - key) >= sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dir, key, slash - key);
	dir[slash - key] = '\0';
	return be_sync_dir(r, dir);
}

/*
 * Creates a "directory" if absent, and with sync makes it durable
 * (sync 0: the caller's next syncfs does).  A no-op on object stores.
 */
static int
be_mkdir_sync(struct repo *r, const char *key, int sync)
{
	if (mkdirat(r->r_fd, key, 0700) == -1)
		return errno == EEXIST ? 0 : -1;
	return sync ? be_sync_parent(r, key) : 0;
}

static int
be_mkdir(struct repo *r, const char *key)
{
	return be_mkdir_sync(r, key, 1);
}

/*
 * Moves a staged object to its final key unless that exists: -1 with
 * EEXIST then, and the staged copy is gone either way.
 */
static int
be_link(struct repo *r, const char *stage, const char *key)
{
	int	 save;

	if (renameat2(r->r_fd, stage, r->r_fd, key, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
		/* No RENAME_NOREPLACE here: link(2) is create-if-absent. */
		if (linkat(r->r_fd, stage, r->r_fd, key, 0) == 0) {
			unlinkat(r->r_fd, stage, 0);
			return 0;
		}
	}
	save = errno;
	if (save == EEXIST)
		unlinkat(r->r_fd, stage, 0);
	errno = save;
	return -1;
}

/*
 * Ends the write of a staged object: closes fd (its write returned rv)
 * and removes the stage if the write or the close failed.  Returns 0,
 * or -1 with the first failure's errno.
 */
static int
stage_finish(struct repo *r, const char *stage, int fd, int rv)
{
	int	 save;

	if (rv == 0 && close_checked(fd) == 0)
		return 0;
	save = errno;
	if (rv != 0)
		close(fd);
	unlinkat(r->r_fd, stage, 0);
	errno = save;
	return -1;
}

/* Each writing thread's aligned buffer for O_DIRECT staging. */
static pthread_key_t	 direct_key;
static pthread_once_t	 direct_once = PTHREAD_ONCE_INIT;
static int		 direct_key_ok;

static void
direct_key_init(void)
{
	direct_key_ok = pthread_key_create(&direct_key, free) == 0;
}

/*
 * The calling thread's DIRECT_BUF_LEN-byte aligned buffer, or NULL.
 * Reserved, not touched: only the pages a chunk fills count in RSS.
 */
static uint8_t *
direct_buffer(void)
{
	void	*buf;

	(void)pthread_once(&direct_once, direct_key_init);
	if (!direct_key_ok)
		return NULL;
	if ((buf = pthread_getspecific(direct_key)) != NULL)
		return buf;
	if (posix_memalign(&buf, DIRECT_ALIGN, DIRECT_BUF_LEN) != 0)
		return NULL;
	if (pthread_setspecific(direct_key, buf) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/*
 * be_stage with O_DIRECT: the object's whole DIRECT_ALIGN blocks go from
 * one aligned buffer to the disk, and its last partial block through the
 * page cache (O_DIRECT cleared with F_SETFL).  Padding the write and
 * cutting the file to size instead made ext4 read the last block back
 * from the disk, one synchronous read per chunk, to zero its tail.
 * Chunks are written once and read only by a restore or verify, so the
 * page cache gains nothing from them, and filling fresh page cache was
 * most of the target's CPU time on the development machine
 * (docs/PERFORMANCE.md); the batch's syncfs then has only metadata
 * left to write.  -1 with EINVAL if the file system refuses O_DIRECT.
 */
static int
be_stage_direct(struct repo *r, const char *stage, const struct iovec *iov,
    int iovcnt)
{
	uint8_t	*buf, *p;
	size_t	 len = 0, alen;
	int	 fd, i, fl, rv = 0;

	if ((buf = direct_buffer()) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	for (i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (len > DIRECT_BUF_LEN) {
		errno = EFBIG;
		return -1;
	}
	alen = len & ~(size_t)(DIRECT_ALIGN - 1);
	for (i = 0, p = buf; i < iovcnt; p += iov[i].iov_len, i++)
		memcpy(p, iov[i].iov_base, iov[i].iov_len);
	if ((fd = openat(r->r_fd, stage, O_WRONLY | O_CREAT | O_TRUNC |
	    O_CLOEXEC | O_NOFOLLOW | O_DIRECT, 0600)) == -1)
		return -1;
	if (alen > 0 && write_full(fd, buf, alen) == -1)
		rv = -1;
	else if (alen < len && ((fl = fcntl(fd, F_GETFL)) == -1 ||
	    fcntl(fd, F_SETFL, fl & ~O_DIRECT) == -1 ||
	    write_full(fd, buf + alen, len - alen) == -1))
		rv = -1;
	return stage_finish(r, stage, fd, rv);
}

/*
 * Writes an object at the stage key without making it durable: with
 * O_DIRECT (above) unless the file system refuses it, else through the
 * page cache, starting its write-back so that the batched sync finds
 * little to do.
 */
static int
be_stage(struct repo *r, const char *stage, const struct iovec *iov,
    int iovcnt)
{
	int	 fd, rv;

	if (atomic_load(&r->r_direct)) {
		if (be_stage_direct(r, stage, iov, iovcnt) == 0)
			return 0;
		if (errno != EINVAL)
			return -1;
		if (atomic_exchange(&r->r_direct, 0))
			log_info("repository %s: the file system refuses "
			    "O_DIRECT; chunks go through the page cache",
			    r->r_path);
	}
	if ((fd = openat(r->r_fd, stage,
	    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	    0600)) == -1)
		return -1;
	if ((rv = write_iov(fd, iov, iovcnt)) == 0)
		(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	return stage_finish(r, stage, fd, rv);
}

/*
 * Durable create-if-absent of one object: staged write, fsync, link
 * to the final key, fsync of its directory.  EEXIST if it exists.
 */
static int
be_put(struct repo *r, const char *stage, const char *key,
    const struct iovec *iov, int iovcnt)
{
	int	 fd;

	if ((fd = openat(r->r_fd, stage,
	    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	    0600)) == -1)
		return -1;
	if (stage_finish(r, stage, fd, write_iov(fd, iov, iovcnt) == -1 ||
	    fsync(fd) == -1 ? -1 : 0) == -1 || be_link(r, stage, key) == -1)
		return -1;
	return be_sync_parent(r, key);
}

/*
 * Replaces key with the iovecs' bytes durably, staged at stage (fsync,
 * rename, fsync of the directory).
 */
static int
be_replace(struct repo *r, const char *stage, const char *key,
    const struct iovec *iov, int iovcnt)
{
	int	 fd, save;

	if ((fd = openat(r->r_fd, stage, O_WRONLY | O_CREAT | O_TRUNC |
	    O_CLOEXEC | O_NOFOLLOW, 0600)) == -1)
		return -1;
	if (write_iov(fd, iov, iovcnt) == -1 || fsync(fd) == -1) {
		save = errno;
		close(fd);
		unlinkat(r->r_fd, stage, 0);
		errno = save;
		return -1;
	}
	if (close_checked(fd) == -1 ||
	    renameat(r->r_fd, stage, r->r_fd, key) == -1)
		return -1;
	return be_sync_parent(r, key);
}

/* Makes the objects staged so far durable (not yet published). */
static int
be_flush_staged(struct repo *r, int syncfd)
{
	return syncfs(syncfd);
}

/*
 * Makes n staged objects durable under their final keys, each created
 * if absent (existed[i] set when it was there already), or put in the
 * place of what is there where replace[i] is set.  Measured on
 * ext4: one syncfs(2) per batch, with write-back started at staging,
 * beats an fsync per object by 1.5-3x (fewer journal commits).
 *
 * syncfd is a descriptor the caller opened before staging and no other
 * job syncs through: syncfs reports a write-back error once per open
 * file, so on a descriptor shared by all jobs another job's syncfs
 * could take the error for pages this batch lost, and this batch would
 * then publish chunks the disk never got.  Nothing is linked unless
 * the first syncfs succeeds.
 */
static int
be_publish(struct repo *r, int syncfd, size_t n, char (*stage)[REPO_KEY_MAX],
    char (*key)[REPO_KEY_MAX], const int *replace, int *existed)
{
	char	 dir[REPO_KEY_MAX];
	char	*slash;
	size_t	 i;

	if (n == 0)
		return 0;
	if (syncfs(syncfd) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		existed[i] = 0;
		if ((slash = strrchr(key[i], '/')) != NULL) {
			memcpy(dir, key[i], slash - key[i]);
			dir[slash - key[i]] = '\0';
			/* Durable with the names, by the syncfs below. */
			if (be_mkdir_sync(r, dir, 0) == -1)
				return -1;
		}
		if (replace[i]) {
			if (renameat(r->r_fd, stage[i], r->r_fd, key[i]) == -1)
				return -1;
		} else if (be_link(r, stage[i], key[i]) == -1) {
			if (errno != EEXIST)
				return -1;
			existed[i] = 1;
		}
	}
	/* The new names (and any new directories) hit the disk. */
	return syncfs(syncfd);
}

/*
 * Calls cb(arg, name) for every entry of a "directory", in no
 * particular order; a cb returning -1 stops the walk.  "" is the
 * root.  ENOENT if the directory is absent.
 */
static int
be_list(struct repo *r, const char *key, int (*cb)(void *, const char *),
    void *arg)
{
	DIR		*d = NULL;
	struct dirent	*de;
	int		 fd, rv = -1, save;

	if ((fd = openat(r->r_fd, key[0] == '\0' ? "." : key,
	    O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		save = errno;
		close(fd);
		errno = save;
		return -1;
	}
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL) {
			if (errno != 0)
				goto fail;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (cb(arg, de->d_name) == -1)
			goto fail;
	}
	rv = 0;
 fail:
	save = errno;
	closedir(d);
	errno = save;
	return rv;
}

static int
be_remove(struct repo *r, const char *key)
{
	if (unlinkat(r->r_fd, key, 0) == -1 && errno != ENOENT)
		return -1;
	return 0;
}

/* Removes a key and everything under it; absent is fine. */
static int
be_remove_tree(struct repo *r, const char *key, int depth)
{
	char		 child[REPO_KEY_MAX];
	DIR		*d;
	struct dirent	*de;
	int		 fd, rv = 0;

	if (unlinkat(r->r_fd, key, 0) == 0)
		return 0;
	if (errno == ENOENT)
		return 0;
	if (errno != EISDIR && errno != EPERM)
		return -1;
	if (depth <= 0) {
		errno = ELOOP;
		return -1;
	}
	if ((fd = openat(r->r_fd, key,
	    O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (repo_key(child, sizeof(child), "%s/%s", key,
		    de->d_name) == -1 ||
		    be_remove_tree(r, child, depth - 1) == -1)
			rv = -1;
	}
	closedir(d);
	if (unlinkat(r->r_fd, key, AT_REMOVEDIR) == -1 && errno != ENOENT)
		rv = -1;
	return rv;
}

/*
 * Opening.
 */

struct empty_walk {
	int	 ew_entries;
};

static int
repo_empty_cb(void *arg, const char *name)
{
	struct empty_walk	*ew = arg;

	/* A fresh file system's lost+found, our own half-made marker. */
	if (strcmp(name, "lost+found") != 0 &&
	    strcmp(name, REPO_MARKER_STAGE) != 0)
		ew->ew_entries++;
	return 0;
}

/* Reads and checks the marker; creates it in an empty directory. */
static int
repo_marker(struct repo *r, char *errbuf, size_t errlen)
{
	static const char	 text[] = REPO_MARKER_PREFIX "2\n";
	struct empty_walk	 ew = { 0 };
	struct be_obj		 o = { -1, 0 };
	struct iovec		 iov;
	char			 buf[64];
	unsigned long		 format;
	char			*end;
	int			 rv = -1;

	if (be_open(r, REPO_MARKER, &o) == 0) {
		if (o.bo_size >= sizeof(buf) ||
		    be_read(&o, 0, buf, o.bo_size) == -1 ||
		    strncmp(buf, REPO_MARKER_PREFIX,
		    strlen(REPO_MARKER_PREFIX)) != 0) {
			snprintf(errbuf, errlen, "%s: not a transporter "
			    "repository (bad %s file)", r->r_path,
			    REPO_MARKER);
			goto fail;
		}
		buf[o.bo_size] = '\0';
		errno = 0;
		format = strtoul(buf + strlen(REPO_MARKER_PREFIX), &end, 10);
		if (errno != 0 || strcmp(end, "\n") != 0) {
			snprintf(errbuf, errlen, "%s: not a transporter "
			    "repository (bad %s file)", r->r_path,
			    REPO_MARKER);
			goto fail;
		}
		if (format < REPO_FORMAT_OLDEST || format > REPO_FORMAT) {
			snprintf(errbuf, errlen, "%s: repository format %lu "
			    "is not supported (this build reads formats %d to "
			    "%d): use a newer target-transporter", r->r_path,
			    format, REPO_FORMAT_OLDEST, REPO_FORMAT);
			goto fail;
		}
		if (format < REPO_FORMAT && !r->r_readonly) {
			iov.iov_base = (void *)text;
			iov.iov_len = strlen(text);
			if (be_replace(r, REPO_MARKER_STAGE, REPO_MARKER, &iov,
			    1) == -1) {
				snprintf(errbuf, errlen, "%s: cannot mark it "
				    "format %d: %s", r->r_path, REPO_FORMAT,
				    strerror(errno));
				goto fail;
			}
			log_info("repository %s: format %lu marked %d (new "
			    "chunks carry XXH3-128 checksums; targets older "
			    "than 2026-12 refuse it now)", r->r_path, format,
			    REPO_FORMAT);
		}
		rv = 0;
		goto fail;
	}
	if (errno != ENOENT) {
		snprintf(errbuf, errlen, "%s/%s: %s", r->r_path, REPO_MARKER,
		    strerror(errno));
		goto fail;
	}
	if (r->r_readonly) {
		snprintf(errbuf, errlen, "%s: not a transporter repository "
		    "(no %s file)", r->r_path, REPO_MARKER);
		goto fail;
	}
	if (be_list(r, "", repo_empty_cb, &ew) == -1) {
		snprintf(errbuf, errlen, "%s: %s", r->r_path,
		    strerror(errno));
		goto fail;
	}
	if (ew.ew_entries != 0) {
		snprintf(errbuf, errlen, "%s: not empty and not a transporter "
		    "repository (no %s file); give an empty directory",
		    r->r_path, REPO_MARKER);
		goto fail;
	}
	iov.iov_base = (void *)text;
	iov.iov_len = strlen(text);
	if (be_put(r, REPO_MARKER_STAGE, REPO_MARKER, &iov, 1) == -1) {
		snprintf(errbuf, errlen, "%s: cannot create %s: %s",
		    r->r_path, REPO_MARKER, strerror(errno));
		goto fail;
	}
	log_info("repository %s created", r->r_path);
	rv = 0;
 fail:
	be_close(&o);
	return rv;
}

struct stale_walk {
	struct repo	*sw_repo;
	const char	*sw_tenant;
	int		 sw_removed;
	int		 sw_resumable;
};

static int	journal_prune(struct repo *, const char *);
static int	repo_keychain_write(struct repo_job *, const char *);

static int
repo_stale_job_cb(void *arg, const char *name)
{
	struct stale_walk	*sw = arg;
	char			 key[REPO_KEY_MAX];

	/* A job with a journal can be resumed: keep it, minus staging. */
	if (repo_key(key, sizeof(key), "tenants/%s/tmp/%s/" JOURNAL_NAME,
	    sw->sw_tenant, name) == 0 && be_exists(sw->sw_repo, key) == 1) {
		if (repo_key(key, sizeof(key), "tenants/%s/tmp/%s",
		    sw->sw_tenant, name) == 0)
			journal_prune(sw->sw_repo, key);
		sw->sw_resumable++;
		return 0;
	}
	if (repo_key(key, sizeof(key), "tenants/%s/tmp/%s", sw->sw_tenant,
	    name) == -1 ||
	    be_remove_tree(sw->sw_repo, key, REPO_TREE_DEPTH) == -1)
		log_warn("repository %s: cannot remove %s",
		    sw->sw_repo->r_path, key);
	else
		sw->sw_removed++;
	return 0;
}

static int
repo_stale_tenant_cb(void *arg, const char *name)
{
	struct stale_walk	*sw = arg;
	char			 key[REPO_KEY_MAX];

	if (!repo_name_ok(name))
		return 0;
	sw->sw_tenant = name;
	if (repo_key(key, sizeof(key), "tenants/%s/tmp", name) == 0 &&
	    be_list(sw->sw_repo, key, repo_stale_job_cb, sw) == -1 &&
	    errno != ENOENT)
		log_warn("repository %s: %s", sw->sw_repo->r_path, key);
	return 0;
}

/*
 * Opens (creating if it is missing or empty) the repository at path,
 * removes the files of jobs that never finished and locks it against
 * other processes.  Returns the repository, or NULL with a one-line
 * error in errbuf.  repo_close frees it.
 */
/*
 * A struct repo for path, not yet opened; NULL with a one-line error in
 * errbuf.
 */
static struct repo *
repo_new(const char *path, char *errbuf, size_t errlen)
{
	struct repo	*r;

	if (errlen > 0)
		errbuf[0] = '\0';
	if (path == NULL || path[0] == '\0') {
		snprintf(errbuf, errlen, "no repository path given");
		return NULL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    (r->r_path = strdup(path)) == NULL) {
		free(r);
		snprintf(errbuf, errlen, "%s: out of memory", path);
		return NULL;
	}
	r->r_fd = -1;
	atomic_init(&r->r_direct, 1);
	pthread_mutex_init(&r->r_usage_mtx, NULL);
	return r;
}

struct repo *
repo_open(const char *path, char *errbuf, size_t errlen)
{
	struct stale_walk	 sw;
	struct repo		*r;

	if ((r = repo_new(path, errbuf, errlen)) == NULL)
		return NULL;
	if (mkdir(path, 0700) == -1 && errno != EEXIST) {
		snprintf(errbuf, errlen, "%s: cannot create: %s", path,
		    strerror(errno));
		goto fail;
	}
	if ((r->r_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) ==
	    -1) {
		snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (flock(r->r_fd, LOCK_EX | LOCK_NB) == -1) {
		snprintf(errbuf, errlen, "%s: %s", path,
		    errno == EWOULDBLOCK ? "in use by another process" :
		    strerror(errno));
		goto fail;
	}
	if (repo_marker(r, errbuf, errlen) == -1)
		goto fail;
	if (be_mkdir(r, "tenants") == -1) {
		snprintf(errbuf, errlen, "%s/tenants: %s", path,
		    strerror(errno));
		goto fail;
	}
	memset(&sw, 0, sizeof(sw));
	sw.sw_repo = r;
	if (be_list(r, "tenants", repo_stale_tenant_cb, &sw) == -1) {
		snprintf(errbuf, errlen, "%s/tenants: %s", path,
		    strerror(errno));
		goto fail;
	}
	if (sw.sw_removed > 0)
		log_info("repository %s: removed %d unfinished job(s)", path,
		    sw.sw_removed);
	if (sw.sw_resumable > 0)
		log_info("repository %s: %d interrupted job(s) can resume",
		    path, sw.sw_resumable);
	return r;
 fail:
	repo_close(r);
	return NULL;
}

/*
 * Opens the repository at path for reading only (verify): no lock is
 * taken, so that it works while the daemon holds its own, and nothing
 * is created, removed or written.  Returns the repository, or NULL with
 * a one-line error in errbuf.  repo_close frees it.
 */
struct repo *
repo_open_readonly(const char *path, char *errbuf, size_t errlen)
{
	struct repo	*r;

	if ((r = repo_new(path, errbuf, errlen)) == NULL)
		return NULL;
	r->r_readonly = 1;
	if ((r->r_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) ==
	    -1) {
		snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (repo_marker(r, errbuf, errlen) == -1)
		goto fail;
	return r;
 fail:
	repo_close(r);
	return NULL;
}

/*
 * Whether new chunks are staged with O_DIRECT (be_stage_direct; the
 * default) or through the page cache (direct_io = no).
 */
void
repo_set_direct_io(struct repo *r, int on)
{
	atomic_store(&r->r_direct, on != 0);
}

const char *
repo_path(const struct repo *r)
{
	return r->r_path;
}

/* Closes and frees the repository (and its lock); NULL is fine. */
void
repo_close(struct repo *r)
{
	struct repo_usage	*ru;

	if (r == NULL)
		return;
	if (r->r_fd != -1)
		close(r->r_fd);
	r->r_fd = -1;
	while ((ru = r->r_usage) != NULL) {
		r->r_usage = ru->ru_next;
		free(ru);
	}
	pthread_mutex_destroy(&r->r_usage_mtx);
	free(r->r_path);
	r->r_path = NULL;
	free(r);
}

/*
 * Jobs.
 */

/* Orders chunk ids (for qsort, bsearch and tsearch). */
int
chunk_id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, CHUNK_ID_LEN);
}

static int
repo_tenant_dirs(struct repo *r, const char *tenant)
{
	static const char	*sub[] = { "chunks", "points", "tmp" };
	char			 key[REPO_KEY_MAX];
	size_t			 i;

	if (repo_key(key, sizeof(key), "tenants/%s", tenant) == -1 ||
	    be_mkdir(r, key) == -1)
		return -1;
	for (i = 0; i < sizeof(sub) / sizeof(sub[0]); i++)
		if (repo_key(key, sizeof(key), "tenants/%s/%s", tenant,
		    sub[i]) == -1 || be_mkdir(r, key) == -1)
			return -1;
	return 0;
}

/*
 * A new point id: "YYYYMMDDTHHMMSSZ-" then 8 hex digits, the first 5
 * the microsecond and the last 3 random, so that ids sort by creation
 * even within one second (the newest is the last).
 */
static int
repo_point_id(char id[POINT_ID_LEN + 1], int64_t *created)
{
	struct timespec	 ts;
	struct tm	 tm;
	uint8_t		 rnd[2];

	if (clock_gettime(CLOCK_REALTIME, &ts) == -1 ||
	    gmtime_r(&ts.tv_sec, &tm) == NULL ||
	    strftime(id, POINT_ID_LEN + 1, "%Y%m%dT%H%M%SZ-", &tm) != 17) {
		errno = EINVAL;
		return -1;
	}
	if (crypto_random(rnd, sizeof(rnd)) == -1) {
		errno = EIO;
		return -1;
	}
	snprintf(id + 17, POINT_ID_LEN + 1 - 17, "%05lx%03x",
	    (unsigned long)(ts.tv_nsec / 1000), (rnd[0] << 4 | rnd[1]) & 0xfff);
	*created = ts.tv_sec;
	return 0;
}

/*
 * Starts a backup job of disk_size bytes in blocks of block_size for
 * backup name in tenant's namespace, with EncryptionMode mode.  Every
 * block starts as the zero block.  Returns the job, or NULL with
 * errno: EINVAL (bad name, size, block size or mode), EFBIG (more
 * than 2^30 blocks: use larger blocks), ENOMEM, or a storage error.
 * repo_job_commit or repo_job_abort frees it.
 */
struct repo_job *
repo_job_begin(struct repo *r, const char *tenant, const char *name,
    uint64_t disk_size, uint32_t block_size, uint32_t mode)
{
	struct repo_job	*j = NULL;
	uint64_t	 blocks;
	int		 save, mtx = 0, sync_mtx = 0;

	if (r == NULL || !repo_name_ok(tenant) || !repo_name_ok(name) ||
	    disk_size == 0 || block_size < BLOCK_SIZE_MIN ||
	    block_size > BLOCK_SIZE_MAX ||
	    (block_size & (block_size - 1)) != 0 ||
	    mode > ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE) {
		errno = EINVAL;
		return NULL;
	}
	blocks = disk_size / block_size + (disk_size % block_size != 0);
	if (blocks > REPO_BLOCKS_MAX) {
		errno = EFBIG;
		return NULL;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return NULL;
	j->j_repo = r;
	j->j_tmp_fd = -1;
	snprintf(j->j_tenant, sizeof(j->j_tenant), "%s", tenant);
	snprintf(j->j_name, sizeof(j->j_name), "%s", name);
	j->j_disk_size = disk_size;
	j->j_block_size = block_size;
	j->j_mode = mode;
	j->j_blocks = blocks;
	if ((errno = pthread_mutex_init(&j->j_mtx, NULL)) != 0)
		goto fail;
	mtx = 1;
	if ((errno = pthread_mutex_init(&j->j_sync_mtx, NULL)) != 0)
		goto fail;
	sync_mtx = 1;
	if (id_map_init(&j->j_ids, blocks) == -1)
		goto fail;
	if (repo_point_id(j->j_id, &j->j_created) == -1)
		goto fail;
	if (repo_tenant_dirs(r, tenant) == -1 ||
	    repo_key(j->j_tmp, sizeof(j->j_tmp), "tenants/%s/tmp/%s",
	    tenant, j->j_id) == -1)
		goto fail;
	if (mkdirat(r->r_fd, j->j_tmp, 0700) == -1)
		goto fail;	/* EEXIST: the same id twice, retry */
	/* Marks the job live, so resume never takes or drops it. */
	if ((j->j_tmp_fd = openat(r->r_fd, j->j_tmp, O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1 || flock(j->j_tmp_fd, LOCK_EX | LOCK_NB) == -1)
		goto fail;
	log_debug("repository %s: job %s/%s/%s begun, %llu blocks",
	    r->r_path, tenant, name, j->j_id, (unsigned long long)blocks);
	return j;
 fail:
	save = errno;
	if (sync_mtx)
		pthread_mutex_destroy(&j->j_sync_mtx);
	if (mtx)
		pthread_mutex_destroy(&j->j_mtx);
	if (j->j_tmp_fd != -1)
		close(j->j_tmp_fd);
	id_map_free(&j->j_ids);
	free(j);
	errno = save;
	return NULL;
}

/*
 * The header's checksum of a chunk's stored bytes for its version:
 * CHUNK_HDR_LEN - CHUNK_SUM_OFF bytes into sum.
 */
static void
chunk_sum(int version, const void *data, size_t len,
    uint8_t sum[CHUNK_HDR_LEN - CHUNK_SUM_OFF])
{
	XXH128_canonical_t	 c;

	if (version == CHUNK_VERSION_SHA256) {
		crypto_sha256(data, len, sum);
		return;
	}
	XXH128_canonicalFromHash(&c, XXH3_128bits(data, len));
	memset(sum, 0, CHUNK_HDR_LEN - CHUNK_SUM_OFF);
	memcpy(sum, c.digest, sizeof(c.digest));
}

static int	job_defers_chunks(const struct repo_job *);

/*
 * Notes that the job's point needs the key of id, which seals a chunk
 * it stores or deduplicates against (the key id leads a sealed
 * payload), or an unchanged block's.  The commit lists these of the
 * keys the job was given (job_keep_used_keys), so that a point's list
 * follows its chunks, not every backup of its tenant or chain.  0, or
 * -1 with errno ENOMEM, or EINVAL past the keys a key list can hold.
 */
static int
job_use_key(struct repo_job *j, const uint8_t id[KEY_ID_LEN])
{
	int	 rv = 0;

	pthread_mutex_lock(&j->j_mtx);
	if (j->j_nused_keys >= KEYCHAIN_KEYS_MAX &&
	    tfind(id, &j->j_used_keys, key_id_cmp) == NULL) {
		log_warnx("repository %s: job %s/%s/%s: its chunks are sealed "
		    "under more than %d keys, more than a chain holds",
		    j->j_repo->r_path, j->j_tenant, j->j_name, j->j_id,
		    KEYCHAIN_KEYS_MAX);
		errno = EINVAL;
		rv = -1;
	} else if ((rv = key_id_set_add(&j->j_used_keys, id)) == 1) {
		j->j_nused_keys++;
		rv = 0;
	}
	pthread_mutex_unlock(&j->j_mtx);
	return rv;
}

/*
 * At rest: job_use_key for one of the tenant's at-rest keys.  1 (noted),
 * 0 if id is none of them, -1 with errno.
 */
static int
job_use_tenant_key(struct repo_job *j, const uint8_t id[KEY_ID_LEN])
{
	if (bsearch(id, j->j_seal_ids, j->j_nseal_ids, KEY_ID_LEN,
	    key_id_cmp) == NULL)
		return 0;
	return job_use_key(j, id) == -1 ? -1 : 1;
}

/*
 * Whether the chunk stored at key is of the kind job j stores with
 * flags: sealed (CHUNK_ENCRYPTED) or not as they say, and for an
 * at-rest job, sealed under one of the tenant's at-rest keys (the key
 * id leads a sealed payload), which the job's point then lists; a
 * source-side job's point lists its key whatever it is.  1, or 0 if
 * not, or if its header is damaged; -1 on error.
 */
static int
chunk_same_kind(struct repo_job *j, const char *key, uint32_t flags)
{
	struct be_obj	 o = { -1, 0 };
	uint8_t		 hdr[CHUNK_HDR_LEN + KEY_ID_LEN];
	size_t		 len = CHUNK_HDR_LEN;
	int		 rv = -1, sealed = flags & CHUNK_ENCRYPTED;

	if (be_open(j->j_repo, key, &o) == -1)
		return -1;
	if (j->j_nseal_ids > 0 || (sealed && job_defers_chunks(j)))
		len += KEY_ID_LEN;
	if (o.bo_size < len)
		rv = 0;
	else if (be_read(&o, 0, hdr, len) == 0) {
		rv = memcmp(hdr, CHUNK_MAGIC, 4) == 0 &&
		    ((hdr[5] ^ flags) & CHUNK_ENCRYPTED) == 0;
		if (rv && j->j_nseal_ids > 0)
			rv = job_use_tenant_key(j, hdr + CHUNK_HDR_LEN);
		else if (rv && sealed && job_defers_chunks(j) &&
		    job_use_key(j, hdr + CHUNK_HDR_LEN) == -1)
			rv = -1;
	}
	be_close(&o);
	return rv;
}

/* The size of the index file the job's commit writes. */
static uint64_t
job_index_bytes(const struct repo_job *j)
{
	return INDEX_HDR_LEN + j->j_blocks * CHUNK_ID_LEN;
}

/*
 * Counts n more bytes the job stores against its tenant's quota: 0, or
 * -1 with EDQUOT past it.  Nothing without a quota (repo_job_set_quota).
 */
static int
usage_reserve(struct repo_job *j, uint64_t n)
{
	uint64_t	 prev;

	if (j->j_usage == NULL)
		return 0;
	prev = atomic_fetch_add(&j->j_usage->ru_bytes, n);
	if (prev + n > j->j_quota) {
		atomic_fetch_sub(&j->j_usage->ru_bytes, n);
		errno = EDQUOT;
		return -1;
	}
	atomic_fetch_add(&j->j_unpublished, n);
	return 0;
}

/* Takes back n bytes usage_reserve counted: they were not stored. */
static void
usage_release(struct repo_job *j, uint64_t n)
{
	if (j->j_usage == NULL)
		return;
	atomic_fetch_sub(&j->j_usage->ru_bytes, n);
	atomic_fetch_sub(&j->j_unpublished, n);
}

/*
 * Stores one chunk of the job: payload is len bytes as they will be
 * stored (flags CHUNK_COMPRESSED/CHUNK_ENCRYPTED), raw_len the
 * plaintext length.  A chunk the tenant holds already, or this job
 * has put already, is counted as deduplicated and not written; but one
 * stored sealed where this is not (or the reverse) is replaced by a
 * job whose ids the target checks, and fails a source-side job (EEXIST).
 * The chunk becomes durable with the next repo_job_sync.
 * Thread-safe: called from worker threads, concurrently with each
 * other and with repo_job_sync.  Returns 0, or -1 with errno EINVAL,
 * EEXIST, ENOSPC, EDQUOT, EIO.
 */
int
repo_job_put_chunk(struct repo_job *j, const uint8_t *chunk_id,
    uint32_t flags, uint32_t raw_len, const void *payload, size_t len)
{
	struct repo	*r;
	struct pending	*pd = NULL, **found;
	uint8_t		 hdr[CHUNK_HDR_LEN];
	struct iovec	 iov[2];
	char		 key[REPO_KEY_MAX], stage[REPO_KEY_MAX];
	uint64_t	 seq, size = CHUNK_HDR_LEN + len;
	int		 rv = -1, save, staged = 0, same, replace = 0;
	int		 reserved = 0;

	if (j == NULL || chunk_id == NULL || payload == NULL ||
	    memcmp(chunk_id, zero_id, CHUNK_ID_LEN) == 0 ||
	    (flags & ~CHUNK_FLAGS_ALL) != 0 || raw_len == 0 ||
	    raw_len > BLOCK_SIZE_MAX || len == 0 || len > CHUNK_STORED_MAX ||
	    (flags == 0 && len != raw_len)) {
		errno = EINVAL;
		return -1;
	}
	if ((errno = atomic_load(&j->j_err)) != 0)
		return -1;
	r = j->j_repo;

	pthread_mutex_lock(&j->j_mtx);
	found = tfind(chunk_id, &j->j_tree, chunk_id_cmp);
	seq = j->j_seq++;
	pthread_mutex_unlock(&j->j_mtx);
	if (found != NULL)
		goto dedup;
	if (chunk_key(key, sizeof(key), j->j_tenant, chunk_id) == -1)
		goto fail;
	switch (be_exists(r, key)) {
	case 1:
		if ((same = chunk_same_kind(j, key, flags)) == -1)
			goto fail;
		if (same)
			goto dedup;
		/*
		 * Sealed where this one is not, or the reverse: a false id
		 * from a source-side job of the tenant (the target cannot
		 * check those), or a plaintext job's chunk from before the
		 * tenant turned to at rest.  A job whose ids the target
		 * checked puts its own copy in its place; a source-side one
		 * cannot prove its copy right, and fails.
		 */
		if (job_defers_chunks(j)) {
			errno = EEXIST;
			goto fail;
		}
		log_warnx("repository %s: tenant %s: chunk %s was stored %s "
		    "by another kind of backup; replaced by the %s copy of "
		    "job %s/%s, whose id was checked", r->r_path, j->j_tenant,
		    key, flags & CHUNK_ENCRYPTED ? "unsealed, or sealed under "
		    "a key that is not the tenant's at rest," : "sealed",
		    flags & CHUNK_ENCRYPTED ? "sealed" : "unsealed",
		    j->j_name, j->j_id);
		replace = 1;
		break;
	case 0:
		break;
	default:
		goto fail;
	}

	if (job_defers_chunks(j) && (flags & CHUNK_ENCRYPTED) &&
	    len >= KEY_ID_LEN && job_use_key(j, payload) == -1)
		goto fail;
	if ((pd = calloc(1, sizeof(*pd))) == NULL)
		goto fail;
	pd->pd_replace = replace;
	pd->pd_flags = flags;
	memcpy(pd->pd_id, chunk_id, CHUNK_ID_LEN);
	pd->pd_seq = seq;
	pd->pd_size = CHUNK_HDR_LEN + len;
	memcpy(hdr, CHUNK_MAGIC, 4);
	hdr[4] = CHUNK_VERSION;
	hdr[5] = flags;
	put_be16(hdr + 6, 0);
	put_be32(hdr + 8, raw_len);
	put_be32(hdr + 12, len);
	chunk_sum(CHUNK_VERSION, payload, len, hdr + CHUNK_SUM_OFF);
	iov[0].iov_base = hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = (void *)payload;
	iov[1].iov_len = len;
	if (usage_reserve(j, size) == -1)
		goto fail;
	reserved = 1;
	if (repo_key(stage, sizeof(stage), "%s/c%llu", j->j_tmp,
	    (unsigned long long)seq) == -1 ||
	    be_stage(r, stage, iov, 2) == -1)
		goto fail;
	staged = 1;

	pthread_mutex_lock(&j->j_mtx);
	if ((found = tsearch(pd, &j->j_tree, chunk_id_cmp)) == NULL) {
		pthread_mutex_unlock(&j->j_mtx);
		errno = ENOMEM;
		goto fail;
	}
	if (*found != pd) {
		/* Another worker put the same chunk meanwhile. */
		pthread_mutex_unlock(&j->j_mtx);
		be_remove(r, stage);
		usage_release(j, size);
		free(pd);
		goto dedup;
	}
	pd->pd_next = j->j_pending;
	j->j_pending = pd;
	atomic_fetch_add(&j->j_new, 1);
	atomic_fetch_add(&j->j_bytes, pd->pd_size);
	pthread_mutex_unlock(&j->j_mtx);
	return 0;
 dedup:
	atomic_fetch_add(&j->j_dedup, 1);
	return 0;
 fail:
	save = errno;
	if (staged)
		be_remove(r, stage);
	if (reserved)
		usage_release(j, size);
	free(pd);
	errno = save;
	return rv;
}

/*
 * Records that block index holds chunk_id (all zero: the zero block).
 * Not locked: call it from one thread (the session's; the page bits
 * are shared by neighbouring blocks), never during repo_job_commit.
 * Returns 0, or -1 with EINVAL if index is beyond the disk.
 */
int
repo_job_set_block(struct repo_job *j, uint64_t index,
    const uint8_t *chunk_id)
{
	if (j == NULL || chunk_id == NULL || index >= j->j_blocks) {
		errno = EINVAL;
		return -1;
	}
	id_map_set(&j->j_ids, index, chunk_id);
	return 0;
}

/*
 * Source-side chunks are sealed under the job's own data key, which the
 * target learns (wrapped) only with the chain's key file at the end.  A
 * chunk published before that file holds its key would, if the job
 * died, stay in the store under a key no point can list, and every
 * later backup of the chain that deduplicates against it would fail
 * (its key is not among those sent: job_check_sent_keys).  So such a
 * job's chunks stay staged until its commit, which stores the key file
 * first, and it writes no journal (a source-side job never resumes:
 * its data key dies with it).
 */
static int
job_defers_chunks(const struct repo_job *j)
{
	return j->j_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE;
}

static int	job_sync(struct repo_job *, int);

/* Whether the job keeps a journal to resume from (repo_job_checkpoint). */
int
repo_job_journals(const struct repo_job *j)
{
	return !job_defers_chunks(j);
}

/*
 * Makes every chunk whose repo_job_put_chunk returned before this call
 * durable and visible under chunks/ (a source-side job's wait for its
 * commit: see job_defers_chunks).  May run concurrently with puts;
 * syncs are serialised.  Returns 0, or -1 with errno (ENOSPC, EDQUOT,
 * EIO, ...): the job is then failed for good and must be aborted.
 */
int
repo_job_sync(struct repo_job *j)
{
	return job_sync(j, 0);
}

static int
job_sync(struct repo_job *j, int commit)
{
	struct repo	*r;
	struct pending	*list, *pd, *next;
	char		(*stage)[REPO_KEY_MAX] = NULL;
	char		(*key)[REPO_KEY_MAX] = NULL;
	int		*existed = NULL, *replace = NULL;
	size_t		 i, n = 0;
	int		 rv = -1, save, err, same;

	if (j == NULL) {
		errno = EINVAL;
		return -1;
	}
	r = j->j_repo;
	pthread_mutex_lock(&j->j_sync_mtx);
	if ((err = atomic_load(&j->j_err)) != 0) {
		errno = err;
		goto out;
	}
	if (!commit && job_defers_chunks(j)) {
		/*
		 * Nothing to publish yet, but the staged chunks are made
		 * durable now, while the job runs, so that the commit's
		 * own syncfs (which the source waits for) finds little
		 * left to write.  Its error fails the job: the commit's
		 * syncfs would not report it again.
		 */
		if (be_flush_staged(r, j->j_tmp_fd) == -1)
			goto fail;
		rv = 0;
		goto out;
	}

	/* Take the batch; its entries stay findable until published. */
	pthread_mutex_lock(&j->j_mtx);
	list = j->j_pending;
	j->j_pending = NULL;
	for (pd = list; pd != NULL; pd = pd->pd_next)
		n++;
	pthread_mutex_unlock(&j->j_mtx);
	if (n == 0) {
		rv = 0;
		goto out;
	}

	if ((stage = calloc(n, sizeof(*stage))) == NULL ||
	    (key = calloc(n, sizeof(*key))) == NULL ||
	    (replace = calloc(n, sizeof(*replace))) == NULL ||
	    (existed = calloc(n, sizeof(*existed))) == NULL)
		goto fail;
	for (pd = list, i = 0; pd != NULL; pd = pd->pd_next, i++) {
		if (repo_key(stage[i], sizeof(stage[i]), "%s/c%llu",
		    j->j_tmp, (unsigned long long)pd->pd_seq) == -1 ||
		    chunk_key(key[i], sizeof(key[i]), j->j_tenant,
		    pd->pd_id) == -1)
			goto fail;
		replace[i] = pd->pd_replace;
	}
	if (be_publish(r, j->j_tmp_fd, n, stage, key, replace, existed) == -1)
		goto fail;
	/*
	 * Another job linked the same id first: ours only if it is of this
	 * job's kind, as repo_job_put_chunk checks a chunk already there.
	 * Else fail (EEXIST): the next attempt finds it there and replaces
	 * it.
	 */
	for (pd = list, i = 0; pd != NULL; pd = pd->pd_next, i++)
		if (existed[i] && (same = chunk_same_kind(j, key[i],
		    pd->pd_flags)) != 1) {
			if (same == 0)
				errno = EEXIST;
			goto fail;
		}

	pthread_mutex_lock(&j->j_mtx);
	for (pd = list, i = 0; pd != NULL; pd = next, i++) {
		next = pd->pd_next;
		if (existed[i]) {
			/* Another job stored it first: not ours after all. */
			atomic_fetch_sub(&j->j_new, 1);
			atomic_fetch_sub(&j->j_bytes, pd->pd_size);
			atomic_fetch_add(&j->j_dedup, 1);
			usage_release(j, pd->pd_size);
		} else if (j->j_usage != NULL)
			atomic_fetch_sub(&j->j_unpublished, pd->pd_size);
		tdelete(pd, &j->j_tree, chunk_id_cmp);
		free(pd);
	}
	pthread_mutex_unlock(&j->j_mtx);
	rv = 0;
	goto out;
 fail:
	/* The entries stay in the tree, which repo_job_abort frees. */
	save = errno;
	if (save == 0)
		save = EIO;
	atomic_store(&j->j_err, save);
	log_warnx("repository %s: job %s/%s/%s: sync failed: %s",
	    r->r_path, j->j_tenant, j->j_name, j->j_id, strerror(save));
	errno = save;
 out:
	save = errno;
	pthread_mutex_unlock(&j->j_sync_mtx);
	free(stage);
	free(key);
	free(replace);
	free(existed);
	errno = save;
	return rv;
}

/* Orders block numbers by the chunk id they hold. */
static int
index_pos_cmp(const void *a, const void *b, void *arg)
{
	const uint8_t	*index = arg;
	uint32_t	 pa = *(const uint32_t *)a, pb = *(const uint32_t *)b;

	return memcmp(index + (uint64_t)pa * CHUNK_ID_LEN,
	    index + (uint64_t)pb * CHUNK_ID_LEN, CHUNK_ID_LEN);
}

/* Whether block i of the job's index holds a chunk (untouched: no). */
static int
job_block_set(const struct repo_job *j, uint64_t i)
{
	return !id_map_is_zero(&j->j_ids, i);
}

/*
 * Counts the zero blocks and the distinct chunks of the job's index,
 * and checks that every chunk it references is in the tenant's
 * store: a point never references a chunk that is not durable.
 * ENODATA (logged, naming the block and the chunk) if one is missing:
 * not ENOENT, which the caller takes for a missing file of its own.
 */
static int
job_count_chunks(struct repo_job *j, uint64_t *zero, uint64_t *distinct)
{
	/* Only blocks that are set are read: no untouched page. */
	const uint8_t	*index = j->j_ids.im_ids, *id;
	uint32_t	*pos = NULL;
	uint64_t	 i, n = 0;
	char		 key[REPO_KEY_MAX];
	int		 rv = -1, save;

	*zero = *distinct = 0;
	for (i = 0; i < j->j_blocks; i++)
		if (!job_block_set(j, i))
			(*zero)++;
	if (j->j_blocks == *zero)
		return 0;
	if ((pos = calloc(j->j_blocks - *zero, sizeof(*pos))) == NULL)
		return -1;
	for (i = 0; i < j->j_blocks; i++)
		if (job_block_set(j, i))
			pos[n++] = (uint32_t)i;
	qsort_r(pos, n, sizeof(*pos), index_pos_cmp, (void *)index);
	for (i = 0; i < n; i++) {
		if (i > 0 && index_pos_cmp(&pos[i - 1], &pos[i],
		    (void *)index) == 0)
			continue;
		(*distinct)++;
		id = index + (uint64_t)pos[i] * CHUNK_ID_LEN;
		if (chunk_key(key, sizeof(key), j->j_tenant, id) == -1)
			goto fail;
		switch (be_exists(j->j_repo, key)) {
		case 1:
			break;
		case 0:
			log_warnx("repository %s: job %s/%s/%s: block %u "
			    "references chunk %s, which is not in the store "
			    "(lost since it was stored, or never stored)",
			    j->j_repo->r_path, j->j_tenant, j->j_name,
			    j->j_id, pos[i], key);
			errno = ENODATA;
			goto fail;
		default:
			goto fail;
		}
	}
	rv = 0;
 fail:
	save = errno;
	free(pos);
	errno = save;
	return rv;
}

static void
index_header(uint8_t hdr[INDEX_HDR_LEN], uint32_t block_size,
    uint64_t blocks)
{
	memcpy(hdr, INDEX_MAGIC, 4);
	hdr[4] = INDEX_VERSION;
	hdr[5] = 0;
	put_be16(hdr + 6, 0);
	put_be32(hdr + 8, block_size);
	put_be64(hdr + 12, blocks);
}

/* What repo_chain_names collects: the names of a name's manifests. */
struct names_walk {
	struct iovec	*nw_names;	/* each with its NUL */
	size_t		 nw_n;
	size_t		 nw_cap;
};

static int
names_cb(void *arg, const char *file)
{
	struct names_walk	*nw = arg;
	struct iovec		*more;
	size_t			 len = strlen(file);
	char			*copy;

	if (len <= strlen(".manifest") ||
	    strcmp(file + len - strlen(".manifest"), ".manifest") != 0)
		return 0;
	if (nw->nw_n == nw->nw_cap) {
		nw->nw_cap = nw->nw_cap > 0 ? 2 * nw->nw_cap : 64;
		if ((more = reallocarray(nw->nw_names, nw->nw_cap,
		    sizeof(*more))) == NULL)
			return -1;
		nw->nw_names = more;
	}
	if ((copy = strdup(file)) == NULL)
		return -1;
	nw->nw_names[nw->nw_n++] = (struct iovec){ copy, len + 1 };
	return 0;
}

static int
iov_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct iovec *)a)->iov_base,
	    ((const struct iovec *)b)->iov_base);
}

/*
 * The SHA-256 of the sorted names of tenant/name's manifests, into
 * digest: the same digest, the same points (a manifest is never
 * rewritten, and only prune, which takes the repository's lock,
 * removes one).  0, or -1 with errno.
 */
int
repo_chain_names(struct repo *r, const char *tenant, const char *name,
    uint8_t digest[CHUNK_ID_LEN])
{
	struct names_walk	 nw = { NULL, 0, 0 };
	char			 key[REPO_KEY_MAX];
	size_t			 i;
	int			 rv = -1, save;

	if (!repo_name_ok(tenant) || !repo_name_ok(name)) {
		errno = EINVAL;
		return -1;
	}
	if (repo_key(key, sizeof(key), "tenants/%s/points/%s", tenant,
	    name) == -1 || (be_list(r, key, names_cb, &nw) == -1 &&
	    errno != ENOENT))
		goto out;
	if (nw.nw_n > INT_MAX) {
		errno = EOVERFLOW;
		goto out;
	}
	if (nw.nw_n > 0)
		qsort(nw.nw_names, nw.nw_n, sizeof(*nw.nw_names),
		    iov_name_cmp);
	rv = crypto_sha256_iov(nw.nw_names, (int)nw.nw_n, digest);
 out:
	save = errno;
	for (i = 0; i < nw.nw_n; i++)
		free(nw.nw_names[i].iov_base);
	free(nw.nw_names);
	errno = save;
	return rv;
}

/*
 * The chain of the job's name as its start found it: names, from
 * repo_chain_names, taken before the n points pts (sorted, as
 * repo_list_keys returns them) were listed.  Its commit links to the
 * newest of them without reading the name's manifests again if the
 * names have not changed since (chain_link).
 */
void
repo_job_link_hint(struct repo_job *j, const uint8_t names[CHUNK_ID_LEN],
    const struct repo_point *pts, size_t n)
{
	size_t	 i;

	memcpy(j->j_link_names, names, CHUNK_ID_LEN);
	j->j_link_sequence = 0;
	for (i = 0; i < n; i++)
		if (pts[i].rp_sequence > j->j_link_sequence)
			j->j_link_sequence = pts[i].rp_sequence;
	j->j_link_id[0] = '\0';
	if (n > 0) {
		snprintf(j->j_link_id, sizeof(j->j_link_id), "%s",
		    pts[n - 1].rp_id);
		memcpy(j->j_link_digest, pts[n - 1].rp_digest, CHUNK_ID_LEN);
	}
	j->j_link_hint = 1;
}

/*
 * Links p, the point of job j, to the newest point of its name: the
 * next sequence number, that point's id and the digest its manifest
 * ends with.  A point of a name is never rewritten, so the link is how
 * a deleted middle point is found: its successor still names it.
 * (Prune keeps this true: it renames a pruned point's manifest to its
 * tombstone and rewrites nothing, so that a pruned point is told from a
 * lost one.)  From the job's hint if the name's manifests are the ones
 * it saw, else from all of them.  Call with chain_mtx held.
 */
static int
chain_link(struct repo_job *j, struct repo_point *p)
{
	struct repo_point	*points = NULL, *prev;
	uint8_t			 names[CHUNK_ID_LEN];
	char			 key[REPO_KEY_MAX];
	uint64_t		 max = 0;
	size_t			 n = 0, i;

	/*
	 * The hint's newest must still be there: a commit that failed
	 * after its manifest was linked takes it back, and the start may
	 * have listed it in between (commits hold chain_mtx, as this).
	 */
	if (j->j_link_hint && repo_chain_names(j->j_repo, j->j_tenant,
	    j->j_name, names) == 0 &&
	    memcmp(names, j->j_link_names, CHUNK_ID_LEN) == 0 &&
	    (j->j_link_id[0] == '\0' || (repo_key(key, sizeof(key),
	    "tenants/%s/points/%s/%s.manifest", j->j_tenant, j->j_name,
	    j->j_link_id) == 0 && be_exists(j->j_repo, key) == 1))) {
		p->rp_sequence = j->j_link_sequence + 1;
		if (j->j_link_id[0] != '\0') {
			snprintf(p->rp_previous_id, sizeof(p->rp_previous_id),
			    "%s", j->j_link_id);
			memcpy(p->rp_previous_digest, j->j_link_digest,
			    CHUNK_ID_LEN);
		}
		return 0;
	}
	if (repo_list_keys(j->j_repo, j->j_tenant, p->rp_name,
	    &repo_keys_none, &points, &n) == -1)
		return -1;
	for (i = 0; i < n; i++)
		if (points[i].rp_sequence > max)
			max = points[i].rp_sequence;
	p->rp_sequence = max + 1;
	if (n > 0) {
		prev = &points[n - 1];	/* sorted: the newest last */
		snprintf(p->rp_previous_id, sizeof(p->rp_previous_id), "%s",
		    prev->rp_id);
		memcpy(p->rp_previous_digest, prev->rp_digest, CHUNK_ID_LEN);
	}
	repo_points_free(points, n);
	return 0;
}

static void
point_from_job(const struct repo_job *j, struct repo_point *p)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->rp_name, sizeof(p->rp_name), "%s", j->j_name);
	snprintf(p->rp_id, sizeof(p->rp_id), "%s", j->j_id);
	p->rp_created = j->j_created;
	p->rp_disk_size = j->j_disk_size;
	p->rp_block_size = j->j_block_size;
	p->rp_blocks = j->j_blocks;
	p->rp_stored_bytes = atomic_load(&j->j_bytes);
	p->rp_mode = j->j_mode;
	snprintf(p->rp_transport, sizeof(p->rp_transport), "%s",
	    j->j_transport);
	snprintf(p->rp_dirty_bitmap, sizeof(p->rp_dirty_bitmap), "%s",
	    j->j_dirty_bitmap);
	p->rp_keys = j->j_keys;		/* borrowed until the commit ends */
	p->rp_keys_len = j->j_keys_len;
}

/* Builds the manifest file's bytes; *out is malloc'd. */
static int
manifest_encode(const struct repo_point *p,
    const uint8_t digest[CHUNK_ID_LEN], uint64_t chunks, uint8_t **out,
    size_t *outlen)
{
	Manifest	 m = MANIFEST__INIT;
	PointInfo	 pi = POINT_INFO__INIT;
	KeyChain	*kc = NULL;
	uint8_t		*buf;
	size_t		 len;

	pi.name = (char *)p->rp_name;
	pi.point_id = (char *)p->rp_id;
	pi.created = p->rp_created;
	pi.disk_size = p->rp_disk_size;
	pi.block_size = p->rp_block_size;
	pi.stored_bytes = p->rp_stored_bytes;
	pi.mode = (EncryptionMode)p->rp_mode;
	pi.blocks = p->rp_blocks;
	pi.zero_blocks = p->rp_zero_blocks;
	pi.transport = (char *)p->rp_transport;
	pi.dirty_bitmap = (char *)p->rp_dirty_bitmap;
	pi.sequence = p->rp_sequence;
	pi.previous_id = (char *)p->rp_previous_id;
	if (p->rp_previous_id[0] != '\0') {
		pi.previous_digest.data = (uint8_t *)p->rp_previous_digest;
		pi.previous_digest.len = CHUNK_ID_LEN;
	}
	if (p->rp_keys != NULL) {
		if ((kc = key_chain__unpack(NULL, p->rp_keys_len,
		    p->rp_keys)) == NULL) {
			errno = EINVAL;
			return -1;
		}
		pi.n_keys = kc->n_keys;
		pi.keys = kc->keys;
	}
	m.format = MANIFEST_FORMAT;
	m.point = &pi;
	m.index_digest.data = (uint8_t *)digest;
	m.index_digest.len = CHUNK_ID_LEN;
	m.chunks = chunks;
	len = manifest__get_packed_size(&m);
	if (len > MANIFEST_MAX - 8 - CHUNK_ID_LEN ||
	    (buf = malloc(8 + len + CHUNK_ID_LEN)) == NULL) {
		if (kc != NULL)
			key_chain__free_unpacked(kc, NULL);
		errno = len > MANIFEST_MAX - 8 - CHUNK_ID_LEN ? EINVAL : ENOMEM;
		return -1;
	}
	memcpy(buf, MANIFEST_MAGIC, 4);
	put_be32(buf + 4, len);
	manifest__pack(&m, buf + 8);
	if (kc != NULL)
		key_chain__free_unpacked(kc, NULL);
	crypto_sha256(buf, 8 + len, buf + 8 + len);
	*out = buf;
	*outlen = 8 + len + CHUNK_ID_LEN;
	return 0;
}

/* What job_check_sent_keys looks for: a noted id the given keys lack. */
struct unsent {
	void		*us_sent;	/* the given keys' ids (tsearch) */
	const uint8_t	*us_missing;
};

static void
unsent_visit(const void *node, VISIT v, void *arg)
{
	struct unsent	*us = arg;
	const uint8_t	*id = *(const uint8_t *const *)node;

	if ((v == postorder || v == leaf) && us->us_missing == NULL &&
	    tfind(id, &us->us_sent, key_id_cmp) == NULL)
		us->us_missing = id;
}

/*
 * Fails with ENOKEY (logged) if a key the job's chunks are sealed under
 * (job_use_key) is not in the set sent, the ids of the keys the job
 * was given: a point without it could not be read.  0, or -1.
 */
static int
job_unsent_key(struct repo_job *j, void *sent)
{
	struct unsent	 us = { sent, NULL };
	char		 hex[2 * KEY_ID_LEN + 1];

	pthread_mutex_lock(&j->j_mtx);
	twalk_r(j->j_used_keys, unsent_visit, &us);
	pthread_mutex_unlock(&j->j_mtx);
	if (us.us_missing == NULL)
		return 0;
	hex_encode(us.us_missing, KEY_ID_LEN, hex);
	log_warnx("repository %s: job %s/%s/%s: a chunk it needs is sealed "
	    "under key %.16s, which is not among the keys %s",
	    j->j_repo->r_path, j->j_tenant, j->j_name, j->j_id, hex,
	    job_defers_chunks(j) ? "the source sent" : "of the tenant");
	errno = ENOKEY;
	return -1;
}

/*
 * Source-side, before anything is published: job_unsent_key over the
 * keys the source sent.  0, or -1 with errno ENOKEY or ENOMEM.  No put
 * may be running.
 */
static int
job_check_sent_keys(struct repo_job *j)
{
	KeyChain	*kc;
	void		*sent = NULL;
	size_t		 i;
	int		 rv = -1;

	if ((kc = key_chain__unpack(NULL, j->j_keys_len, j->j_keys)) == NULL) {
		errno = EINVAL;
		return -1;
	}
	for (i = 0; i < kc->n_keys; i++)
		if (kc->keys[i]->key_id.len == KEY_ID_LEN && key_id_set_add(
		    &sent, kc->keys[i]->key_id.data) == -1)
			goto out;
	rv = job_unsent_key(j, sent);
 out:
	tdestroy(sent, free);
	key_chain__free_unpacked(kc, NULL);
	return rv;
}

/*
 * At the commit, once every chunk is in: of the keys the job was given
 * (at rest every key of the tenant's key file, source-side every key of
 * the chain), the point lists those its chunks are sealed under
 * (job_use_key), each once, and source-side the chain's chunk-id key (a
 * restore checks the ids with it), so that what a point lists grows
 * with what its chunks use, not with the tenant or the chain.  A noted
 * key not among them fails it (job_unsent_key): source-side, one of a
 * chunk another job published since job_check_sent_keys.  0, or -1 with
 * errno.
 */
static int
job_keep_used_keys(struct repo_job *j)
{
	KeyChain		*kc, out = KEY_CHAIN__INIT;
	WrappedKey		**kept = NULL;
	const WrappedKey	*wk;
	void			*ids = NULL;
	uint8_t			*buf = NULL;
	size_t			 i, packed, found = 0;
	int			 rv = -1, add, chunk_id;

	if ((kc = key_chain__unpack(NULL, j->j_keys_len, j->j_keys)) == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (kc->n_keys > 0 &&
	    (kept = calloc(kc->n_keys, sizeof(*kept))) == NULL)
		goto out;
	pthread_mutex_lock(&j->j_mtx);
	for (i = 0; i < kc->n_keys; i++) {
		wk = kc->keys[i];
		chunk_id = job_defers_chunks(j) &&
		    wk->purpose == KEY_PURPOSE_CHUNK_ID;
		if (wk->key_id.len != KEY_ID_LEN)
			continue;
		add = 0;
		if (tfind(wk->key_id.data, &j->j_used_keys,
		    key_id_cmp) != NULL &&
		    (add = key_id_set_add(&ids, wk->key_id.data)) == -1)
			break;
		found += add;
		if (add || chunk_id)
			kept[out.n_keys++] = kc->keys[i];
	}
	pthread_mutex_unlock(&j->j_mtx);
	if (i < kc->n_keys ||
	    (found < j->j_nused_keys && job_unsent_key(j, ids) == -1))
		goto out;
	out.format = kc->format;
	out.name = kc->name;
	out.keys = kept;
	packed = key_chain__get_packed_size(&out);
	if ((buf = malloc(packed)) == NULL)
		goto out;
	key_chain__pack(&out, buf);
	free(j->j_keys);
	j->j_keys = buf;
	j->j_keys_len = packed;
	buf = NULL;
	rv = 0;
 out:
	tdestroy(ids, free);
	free(buf);
	free(kept);
	key_chain__free_unpacked(kc, NULL);
	return rv;
}

/*
 * Commits the job: writes the chain's key file (source-side), syncs
 * its chunks, writes the index and then the manifest, each durably
 * (a failed fsync fails the commit); the point exists from the manifest's
 * rename on.  Fills p (rp_index NULL) on success.  Frees the job in
 * every case; on failure nothing is listed and errno is set (ENOSPC,
 * EDQUOT, EIO, ENOMEM; ENODATA if a block references a chunk that is
 * not in the store: never put, or lost since the base point).
 */
int
repo_job_commit(struct repo_job *j, struct repo_point *p)
{
	struct repo	*r;
	uint8_t		 hdr[INDEX_HDR_LEN], digest[CHUNK_ID_LEN];
	struct iovec	 iov[1], *iiov = NULL;
	char		 dir[REPO_KEY_MAX], key[REPO_KEY_MAX];
	char		 stage[REPO_KEY_MAX], mkey[REPO_KEY_MAX];
	struct repo_point point;
	uint8_t		*man = NULL;
	size_t		 manlen;
	uint64_t	 chunks;
	int		 rv = -1, save, indexed = 0, published = 0;
	int		 chained = 0, niov;

	if (j == NULL || p == NULL) {
		repo_job_abort(j);
		errno = EINVAL;
		return -1;
	}
	r = j->j_repo;
	/*
	 * Source-side: a key of its chunks not sent fails it before any
	 * is published (and job_keep_used_keys again after, for chunks
	 * other jobs published meanwhile).
	 */
	if (job_defers_chunks(j) && j->j_keys != NULL &&
	    job_check_sent_keys(j) == -1)
		goto fail;
	if (repo_key(dir, sizeof(dir), "tenants/%s/points/%s", j->j_tenant,
	    j->j_name) == -1 || be_mkdir(r, dir) == -1)
		goto fail;
	/*
	 * The chain's key file, replaced whole before any chunk sealed
	 * under the new key is published (job_defers_chunks).  Older
	 * points read with it: it holds every key of the chain.
	 */
	if (j->j_keychain != NULL && repo_keychain_write(j, dir) == -1)
		goto fail;
	if (job_sync(j, 1) == -1)
		goto fail;
	if ((j->j_nseal_ids > 0 || job_defers_chunks(j)) &&
	    j->j_keys != NULL && job_keep_used_keys(j) == -1)
		goto fail;
	if (j->j_keys_len > POINT_KEYS_MAX) {
		log_warnx("repository %s: job %s/%s/%s: its point would list "
		    "%zu bytes of keys, more than %u", r->r_path, j->j_tenant,
		    j->j_name, j->j_id, j->j_keys_len, POINT_KEYS_MAX);
		errno = EFBIG;
		goto fail;
	}

	point_from_job(j, &point);
	if (job_count_chunks(j, &point.rp_zero_blocks, &chunks) == -1)
		goto fail;

	/* The index. */
	index_header(hdr, j->j_block_size, j->j_blocks);
	if ((iiov = id_map_iov(&j->j_ids, 1, &niov)) == NULL)
		goto fail;
	iiov[0].iov_base = hdr;
	iiov[0].iov_len = sizeof(hdr);
	niov--;		/* no trailer */
	if (crypto_sha256_iov(iiov, niov, digest) == -1 ||
	    repo_key(stage, sizeof(stage), "%s/index", j->j_tmp) == -1 ||
	    repo_key(key, sizeof(key), "%s/%s.index", dir, j->j_id) == -1)
		goto fail;
	if (be_put(r, stage, key, iiov, niov) == -1) {
		/* Linked but its directory not synced: no orphan index. */
		save = errno;
		if (save != EEXIST && be_exists(r, key) == 1)
			indexed = 1;
		errno = save;
		goto fail;
	}
	indexed = 1;

	/* The manifest, last: the commit point. */
	pthread_mutex_lock(&chain_mtx);
	chained = 1;
	if (chain_link(j, &point) == -1)
		goto fail;
	if (manifest_encode(&point, digest, chunks, &man, &manlen) == -1)
		goto fail;
	iov[0].iov_base = man;
	iov[0].iov_len = manlen;
	if (repo_key(stage, sizeof(stage), "%s/manifest", j->j_tmp) == -1 ||
	    repo_key(mkey, sizeof(mkey), "%s/%s.manifest", dir,
	    j->j_id) == -1)
		goto fail;
	if (be_put(r, stage, mkey, iov, 1) == -1) {
		/* Linked but its directory not synced: take it back. */
		save = errno;
		if (save != EEXIST && be_exists(r, mkey) == 1)
			published = 1;
		errno = save;
		goto fail;
	}
	log_info("repository %s: point %s/%s/%s committed, %llu blocks, "
	    "%llu chunks, %llu bytes new", r->r_path, j->j_tenant,
	    j->j_name, j->j_id, (unsigned long long)point.rp_blocks,
	    (unsigned long long)chunks,
	    (unsigned long long)point.rp_stored_bytes);
	point.rp_keys = NULL;	/* the job's; freed with it */
	point.rp_keys_len = 0;
	*p = point;
	if (j->j_usage != NULL) {	/* the index was counted before */
		atomic_fetch_sub(&j->j_unpublished, job_index_bytes(j));
		atomic_fetch_add(&j->j_usage->ru_bytes, manlen);
	}
	rv = 0;
 fail:
	save = errno;
	if (rv == -1) {
		if (published)
			be_remove(r, mkey);
		if (indexed)
			be_remove(r, key);
	}
	if (chained)
		pthread_mutex_unlock(&chain_mtx);
	free(man);
	free(iiov);
	repo_job_abort(j);
	errno = save;
	return rv;
}

/*
 * Drops the job: removes its tmp files and frees it.  Chunks already
 * synced stay (they are valid and may be shared).  No put or sync may
 * be running.  NULL is fine.
 */
void
repo_job_abort(struct repo_job *j)
{
	if (j == NULL)
		return;
	if (j->j_tmp[0] != '\0' &&
	    be_remove_tree(j->j_repo, j->j_tmp, REPO_TREE_DEPTH) == -1)
		log_warn("repository %s: cannot remove %s",
		    j->j_repo->r_path, j->j_tmp);
	if (j->j_tmp_fd != -1)
		close(j->j_tmp_fd);
	/* Staged, never linked: not stored after all. */
	if (j->j_usage != NULL)
		atomic_fetch_sub(&j->j_usage->ru_bytes,
		    atomic_load(&j->j_unpublished));
	tdestroy(j->j_tree, free);
	j->j_tree = NULL;
	j->j_pending = NULL;
	tdestroy(j->j_used_keys, free);
	id_map_free(&j->j_ids);
	free(j->j_keys);
	free(j->j_keychain);
	free(j->j_seal_ids);
	pthread_mutex_destroy(&j->j_mtx);
	pthread_mutex_destroy(&j->j_sync_mtx);
	free(j);
}

/* Header and payload bytes of the chunks this job added. */
uint64_t
repo_job_bytes_stored(const struct repo_job *j)
{
	return atomic_load(&j->j_bytes);
}

uint64_t
repo_job_chunks_new(const struct repo_job *j)
{
	return atomic_load(&j->j_new);
}

uint64_t
repo_job_chunks_dedup(const struct repo_job *j)
{
	return atomic_load(&j->j_dedup);
}

/*
 * Reading restore points.
 */

/*
 * Reads and verifies the manifest of tenant/name/id into p (rp_index
 * NULL) and the index digest it records.  ENOENT if absent, EBADMSG
 * if it does not verify or does not describe that point; then *why
 * (if why is not NULL) says what is wrong, a static string.  A
 * manifest from before chains (no sequence) loads with rp_sequence 0.
 * suffix "pruned" reads the tombstone of a pruned point instead.
 */
static int
manifest_load_file(struct repo *r, const char *tenant, const char *name,
    const char *id, const char *suffix, struct repo_point *p,
    uint8_t digest[CHUNK_ID_LEN], const char **why)
{
	struct be_obj	 o = { -1, 0 };
	Manifest	*m = NULL;
	PointInfo	*pi;
	uint8_t		*buf = NULL, sum[CHUNK_ID_LEN];
	char		 key[REPO_KEY_MAX];
	uint32_t	 len;
	uint64_t	 blocks;
	int		 rv = -1, save;

	if (repo_key(key, sizeof(key), "tenants/%s/points/%s/%s.%s",
	    tenant, name, id, suffix) == -1 || be_open(r, key, &o) == -1)
		goto fail;
	if (why != NULL)
		*why = "manifest unreadable";
	if (o.bo_size < 8 + CHUNK_ID_LEN || o.bo_size > MANIFEST_MAX) {
		if (why != NULL)
			*why = "manifest of an impossible size";
		errno = EBADMSG;
		goto fail;
	}
	if ((buf = malloc(o.bo_size)) == NULL ||
	    be_read(&o, 0, buf, o.bo_size) == -1)
		goto fail;
	len = get_be32(buf + 4);
	if (memcmp(buf, MANIFEST_MAGIC, 4) != 0 ||
	    len != o.bo_size - 8 - CHUNK_ID_LEN) {
		if (why != NULL)
			*why = "manifest header (magic or length) damaged";
		errno = EBADMSG;
		goto fail;
	}
	crypto_sha256(buf, 8 + len, sum);
	if (memcmp(sum, buf + 8 + len, CHUNK_ID_LEN) != 0) {
		if (why != NULL)
			*why = "manifest checksum mismatch (its bytes changed)";
		errno = EBADMSG;
		goto fail;
	}
	if ((m = manifest__unpack(NULL, len, buf + 8)) == NULL) {
		if (why != NULL)
			*why = "manifest does not decode";
		errno = EBADMSG;
		goto fail;
	}
	if (why != NULL)
		*why = "manifest fields are impossible or name another point";
	pi = m->point;
	errno = EBADMSG;
	if (m->format != MANIFEST_FORMAT || pi == NULL ||
	    m->index_digest.len != CHUNK_ID_LEN ||
	    pi->name == NULL || strcmp(pi->name, name) != 0 ||
	    pi->point_id == NULL || strcmp(pi->point_id, id) != 0 ||
	    pi->block_size < BLOCK_SIZE_MIN ||
	    pi->block_size > BLOCK_SIZE_MAX ||
	    (pi->block_size & (pi->block_size - 1)) != 0 ||
	    pi->disk_size == 0 ||
	    (unsigned)pi->mode > ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE ||
	    (pi->previous_id[0] != '\0' && (!point_id_ok(pi->previous_id) ||
	    pi->previous_digest.len != CHUNK_ID_LEN)) ||
	    (pi->previous_id[0] == '\0' && (pi->sequence > 1 ||
	    pi->previous_digest.len != 0)))
		goto fail;
	blocks = pi->disk_size / pi->block_size +
	    (pi->disk_size % pi->block_size != 0);
	if (pi->blocks != blocks || blocks > REPO_BLOCKS_MAX ||
	    pi->zero_blocks > blocks || m->chunks > blocks - pi->zero_blocks)
		goto fail;
	memset(p, 0, sizeof(*p));
	snprintf(p->rp_name, sizeof(p->rp_name), "%s", pi->name);
	snprintf(p->rp_id, sizeof(p->rp_id), "%s", pi->point_id);
	p->rp_created = pi->created;
	p->rp_disk_size = pi->disk_size;
	p->rp_block_size = pi->block_size;
	p->rp_blocks = pi->blocks;
	p->rp_zero_blocks = pi->zero_blocks;
	p->rp_stored_bytes = pi->stored_bytes;
	p->rp_mode = pi->mode;
	snprintf(p->rp_transport, sizeof(p->rp_transport), "%s",
	    pi->transport);
	snprintf(p->rp_dirty_bitmap, sizeof(p->rp_dirty_bitmap), "%s",
	    pi->dirty_bitmap);
	p->rp_sequence = pi->sequence;
	snprintf(p->rp_previous_id, sizeof(p->rp_previous_id), "%s",
	    pi->previous_id);
	if (pi->previous_digest.len == CHUNK_ID_LEN)
		memcpy(p->rp_previous_digest, pi->previous_digest.data,
		    CHUNK_ID_LEN);
	memcpy(p->rp_digest, sum, CHUNK_ID_LEN);
	if (pi->n_keys > 0) {
		KeyChain	 kc = KEY_CHAIN__INIT;

		kc.n_keys = pi->n_keys;
		kc.keys = pi->keys;
		p->rp_keys_len = key_chain__get_packed_size(&kc);
		if ((p->rp_keys = malloc(p->rp_keys_len)) == NULL)
			goto fail;
		key_chain__pack(&kc, p->rp_keys);
	}
	memcpy(digest, m->index_digest.data, CHUNK_ID_LEN);
	if (why != NULL)
		*why = NULL;
	rv = 0;
 fail:
	save = errno;
	if (m != NULL)
		manifest__free_unpacked(m, NULL);
	free(buf);
	be_close(&o);
	errno = save;
	return rv;
}

static int
manifest_load(struct repo *r, const char *tenant, const char *name,
    const char *id, struct repo_point *p, uint8_t digest[CHUNK_ID_LEN],
    const char **why)
{
	return manifest_load_file(r, tenant, name, id, "manifest", p, digest,
	    why);
}

/* How many of the n chunk ids at ids are zero (a block never written). */
static uint64_t
index_zero_ids(const uint8_t *ids, uint64_t n)
{
	uint64_t	 zero = 0, i;

	for (i = 0; i < n; i++)
		if (memcmp(ids + i * CHUNK_ID_LEN, zero_id, CHUNK_ID_LEN) == 0)
			zero++;
	return zero;
}

/*
 * Opens the index of p into o and checks its header, read into hdr,
 * against the manifest's values.  0, or -1 with errno (EBADMSG if the
 * header is wrong, *why set as for index_load).
 */
static int
index_open(struct repo *r, const char *tenant, const struct repo_point *p,
    struct be_obj *o, uint8_t hdr[INDEX_HDR_LEN], const char **why)
{
	char		 key[REPO_KEY_MAX];
	uint64_t	 blocks;
	int		 save;

	o->bo_fd = -1;
	if (repo_key(key, sizeof(key), "tenants/%s/points/%s/%s.index",
	    tenant, p->rp_name, p->rp_id) == -1 || be_open(r, key, o) == -1)
		return -1;
	if (why != NULL)
		*why = "index header (magic, sizes or length) damaged";
	if (o->bo_size < INDEX_HDR_LEN) {
		errno = EBADMSG;
		goto fail;
	}
	if (be_read(o, 0, hdr, INDEX_HDR_LEN) == -1)
		goto fail;
	blocks = get_be64(hdr + 12);
	if (memcmp(hdr, INDEX_MAGIC, 4) != 0 || hdr[4] != INDEX_VERSION ||
	    hdr[5] != 0 || get_be16(hdr + 6) != 0 ||
	    get_be32(hdr + 8) != p->rp_block_size ||
	    blocks != p->rp_blocks || blocks == 0 ||
	    blocks > REPO_BLOCKS_MAX ||
	    o->bo_size - INDEX_HDR_LEN != blocks * CHUNK_ID_LEN) {
		errno = EBADMSG;
		goto fail;
	}
	return 0;
 fail:
	save = errno;
	be_close(o);
	errno = save;
	return -1;
}

/*
 * Reads the index of p, checking it against the manifest's values
 * and digest; fills p->rp_index.  EBADMSG if it does not verify; with
 * keep, an index whose header is sound but whose digest is not is
 * still left in p->rp_index (verify walks it to name the block).
 */
static int
index_load(struct repo *r, const char *tenant, struct repo_point *p,
    const uint8_t digest[CHUNK_ID_LEN], const char **why, int keep)
{
	struct be_obj	 o = { -1, 0 };
	uint8_t		 hdr[INDEX_HDR_LEN], sum[CHUNK_ID_LEN];
	struct iovec	 iov[2];
	uint8_t		*index = NULL;
	uint64_t	 blocks = p->rp_blocks;
	int		 rv = -1, save;

	if (index_open(r, tenant, p, &o, hdr, why) == -1)
		goto fail;
	if ((index = malloc(blocks * CHUNK_ID_LEN)) == NULL ||
	    be_read(&o, INDEX_HDR_LEN, index, blocks * CHUNK_ID_LEN) == -1)
		goto fail;
	iov[0].iov_base = hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = index;
	iov[1].iov_len = blocks * CHUNK_ID_LEN;
	if (crypto_sha256_iov(iov, 2, sum) == -1)
		goto fail;
	if (why != NULL)
		*why = "index does not match the digest its manifest records";
	if (memcmp(sum, digest, CHUNK_ID_LEN) != 0 ||
	    index_zero_ids(index, blocks) != p->rp_zero_blocks) {
		if (keep) {
			p->rp_index = index;
			index = NULL;
		}
		errno = EBADMSG;
		goto fail;
	}
	if (why != NULL)
		*why = NULL;
	p->rp_index = index;
	index = NULL;
	rv = 0;
 fail:
	save = errno;
	free(index);
	be_close(&o);
	errno = save;
	return rv;
}

/*
 * A point's index read a window at a time, so that the target's memory
 * does not grow with the disk: opening reads the file once to check it
 * against its manifest as index_load does, keeping each window's
 * SHA-256; a window read again must match its own, so an index changed
 * under a job fails it rather than feed it other ids.  A few windows
 * are held (slots), the least recently used one read over.
 */
struct repo_index {
	struct be_obj	 ix_obj;
	uint64_t	 ix_blocks;
	uint8_t		*ix_sums;	/* each window's SHA-256 */
	uint64_t	 ix_reads;	/* windows read again since the open */
	uint64_t	 ix_tick;
	size_t		 ix_nslots;
	struct {
		uint8_t		*sl_ids;	/* a window's chunk ids */
		uint64_t	 sl_window;	/* which, or UINT64_MAX */
		uint64_t	 sl_used;	/* ix_tick when last used */
	}		 ix_slots[INDEX_SLOTS_MAX];
};

static size_t
index_window_ids(uint64_t blocks, uint64_t w)
{
	uint64_t	 left = blocks - w * INDEX_WINDOW_IDS;

	return left < INDEX_WINDOW_IDS ? (size_t)left : INDEX_WINDOW_IDS;
}

/* Reads window w into slot k: 0, or -1 with errno. */
static int
index_window_read(struct repo_index *ix, size_t k, uint64_t w)
{
	ix->ix_slots[k].sl_window = UINT64_MAX;
	if (be_read(&ix->ix_obj, INDEX_HDR_LEN + w * INDEX_WINDOW_IDS *
	    CHUNK_ID_LEN, ix->ix_slots[k].sl_ids,
	    index_window_ids(ix->ix_blocks, w) * CHUNK_ID_LEN) == -1)
		return -1;
	ix->ix_slots[k].sl_window = w;
	return 0;
}

static void
index_windows_free(struct repo_index *ix)
{
	size_t	 k;

	if (ix == NULL)
		return;
	be_close(&ix->ix_obj);
	for (k = 0; k < ix->ix_nslots; k++)
		free(ix->ix_slots[k].sl_ids);
	free(ix->ix_sums);
	free(ix);
}

/* index_load with windows: fills p->rp_ix instead of p->rp_index. */
static int
index_windows_open(struct repo *r, const char *tenant, struct repo_point *p,
    const uint8_t digest[CHUNK_ID_LEN], size_t slots)
{
	struct repo_index	*ix;
	EVP_MD_CTX		*ctx = NULL;
	uint8_t			 hdr[INDEX_HDR_LEN], sum[CHUNK_ID_LEN];
	const uint8_t		*ids;
	uint64_t		 windows, w, zero = 0;
	size_t			 n, k;
	int			 rv = -1, save;

	if ((ix = calloc(1, sizeof(*ix))) == NULL)
		return -1;
	if (index_open(r, tenant, p, &ix->ix_obj, hdr, NULL) == -1)
		goto out;
	ix->ix_blocks = p->rp_blocks;
	windows = (ix->ix_blocks + INDEX_WINDOW_IDS - 1) / INDEX_WINDOW_IDS;
	ix->ix_nslots = slots < 1 ? 1 : slots > INDEX_SLOTS_MAX ?
	    INDEX_SLOTS_MAX : slots;
	if (ix->ix_nslots > windows)
		ix->ix_nslots = (size_t)windows;
	for (k = 0; k < ix->ix_nslots; k++) {
		ix->ix_slots[k].sl_window = UINT64_MAX;
		/* Window 0 is the largest. */
		if ((ix->ix_slots[k].sl_ids = malloc(index_window_ids(
		    ix->ix_blocks, 0) * CHUNK_ID_LEN)) == NULL) {
			errno = ENOMEM;
			goto out;
		}
	}
	if ((ix->ix_sums = malloc(windows * CHUNK_ID_LEN)) == NULL ||
	    (ctx = EVP_MD_CTX_new()) == NULL) {
		errno = ENOMEM;
		goto out;
	}
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, hdr, sizeof(hdr)) != 1)
		goto broken;
	for (w = 0; w < windows; w++) {
		n = index_window_ids(ix->ix_blocks, w);
		if (index_window_read(ix, 0, w) == -1)
			goto out;
		ids = ix->ix_slots[0].sl_ids;
		if (EVP_DigestUpdate(ctx, ids, n * CHUNK_ID_LEN) != 1)
			goto broken;
		crypto_sha256(ids, n * CHUNK_ID_LEN, ix->ix_sums +
		    w * CHUNK_ID_LEN);
		zero += index_zero_ids(ids, n);
	}
	if (EVP_DigestFinal_ex(ctx, sum, NULL) != 1)
		goto broken;
	if (memcmp(sum, digest, CHUNK_ID_LEN) != 0 ||
	    zero != p->rp_zero_blocks) {
		errno = EBADMSG;
		goto out;
	}
	/* Slot 0 holds the last window: the empty slots go first. */
	ix->ix_slots[0].sl_used = ++ix->ix_tick;
	p->rp_ix = ix;
	ix = NULL;
	rv = 0;
	goto out;
 broken:
	errno = EIO;
 out:
	save = errno;
	EVP_MD_CTX_free(ctx);
	index_windows_free(ix);
	errno = save;
	return rv;
}

/*
 * The n (>= 1) chunk ids of p from block first on: in the index that
 * repo_point_open loaded, or, after repo_point_open_windowed, within
 * one window of INDEX_WINDOW_IDS ids (a BaseIndex piece is one), read
 * again if no slot holds it.  Good until the next call.  NULL with
 * errno EINVAL (out of range), EBADMSG (the window no longer matches
 * what was verified) or the read's.
 */
const uint8_t *
repo_point_ids(struct repo_point *p, uint64_t first, uint64_t n)
{
	struct repo_index	*ix = p->rp_ix;
	uint64_t		 w = first / INDEX_WINDOW_IDS;
	uint8_t			 sum[CHUNK_ID_LEN];
	size_t			 k, lru = 0;

	if (n == 0 || first >= p->rp_blocks || n > p->rp_blocks - first ||
	    (ix == NULL && p->rp_index == NULL) ||
	    (ix != NULL && (first + n - 1) / INDEX_WINDOW_IDS != w)) {
		errno = EINVAL;
		return NULL;
	}
	if (ix == NULL)
		return p->rp_index + first * CHUNK_ID_LEN;
	for (k = 0; k < ix->ix_nslots; k++) {
		if (ix->ix_slots[k].sl_window == w)
			break;
		if (ix->ix_slots[k].sl_used < ix->ix_slots[lru].sl_used)
			lru = k;
	}
	if (k == ix->ix_nslots) {
		k = lru;
		ix->ix_reads++;
		if (index_window_read(ix, k, w) == -1)
			return NULL;
		crypto_sha256(ix->ix_slots[k].sl_ids, index_window_ids(
		    ix->ix_blocks, w) * CHUNK_ID_LEN, sum);
		if (memcmp(sum, ix->ix_sums + w * CHUNK_ID_LEN,
		    CHUNK_ID_LEN) != 0) {
			ix->ix_slots[k].sl_window = UINT64_MAX;
			errno = EBADMSG;
			return NULL;
		}
	}
	ix->ix_slots[k].sl_used = ++ix->ix_tick;
	return ix->ix_slots[k].sl_ids + (first - w * INDEX_WINDOW_IDS) *
	    CHUNK_ID_LEN;
}

/* How many windows p's index read again since it was opened. */
uint64_t
repo_point_window_reads(const struct repo_point *p)
{
	return p->rp_ix != NULL ? p->rp_ix->ix_reads : 0;
}

/* Why repo_point_ids failed with error, for a message. */
const char *
repo_point_ids_error(int error)
{
	return error == EBADMSG ? "it changed on disk after it was verified; "
	    "run 'target-transporter verify' on the repository" :
	    strerror(error);
}

/*
 * Keeps of p's keys what a caller of repo_list_keys asked for (NULL:
 * all).  An incremental point lists its base's keys too, so a long
 * chain's points each list about every key of the chain, and all of
 * them at once grow as the square of the chain; those that need less
 * keep less.  0, or -1.
 */
const struct repo_keys repo_keys_none = { REPO_KEYS_NONE, NULL, NULL };

static int
repo_point_trim_keys(struct repo_point *p, const struct repo_keys *rk)
{
	KeyChain	*kc;
	WrappedKey	**keep, **all, *wk;
	KekRef		*keks[POINT_KEKS_MAX];
	uint8_t		*buf;
	size_t		 i, n = 0, nkeks = 0, nall, len;

	if (rk == NULL || p->rp_keys == NULL)
		return 0;
	if (rk->rk_what == REPO_KEYS_NONE || (kc = key_chain__unpack(NULL,
	    p->rp_keys_len, p->rp_keys)) == NULL) {
		free(p->rp_keys);	/* unreadable: as if none */
		p->rp_keys = NULL;
		p->rp_keys_len = 0;
		return 0;
	}
	if ((keep = calloc(kc->n_keys + 1, sizeof(*keep))) == NULL) {
		key_chain__free_unpacked(kc, NULL);
		return -1;
	}
	/* The first key of each KEK, and those rk_keep asks for. */
	for (i = 0; i < kc->n_keys; i++) {
		wk = kc->keys[i];
		if (kek_refs_add(keks, &nkeks, POINT_KEKS_MAX, wk->kek) ||
		    (rk->rk_what == REPO_KEYS_SOME &&
		    rk->rk_keep(wk, rk->rk_arg)))
			keep[n++] = wk;
	}
	/* The few in a buffer of their own: the old one goes. */
	all = kc->keys;
	nall = kc->n_keys;
	kc->keys = keep;
	kc->n_keys = n;
	len = key_chain__get_packed_size(kc);
	if ((buf = malloc(len > 0 ? len : 1)) != NULL) {
		free(p->rp_keys);
		p->rp_keys = buf;
		p->rp_keys_len = key_chain__pack(kc, buf);
	}
	kc->keys = all;
	kc->n_keys = nall;
	free(keep);
	key_chain__free_unpacked(kc, NULL);
	return buf == NULL ? -1 : 0;
}

struct list_walk {
	struct repo		*lw_repo;
	const char		*lw_tenant;
	const char		*lw_name;
	const struct repo_keys	*lw_keys;	/* NULL: all */
	struct repo_point	*lw_points;
	size_t			 lw_n;
	size_t			 lw_cap;
};

static int
repo_list_point_cb(void *arg, const char *file)
{
	struct list_walk	*lw = arg;
	struct repo_point	*np;
	uint8_t			 digest[CHUNK_ID_LEN];
	char			 id[POINT_ID_LEN + 1];
	size_t			 len = strlen(file), cap;

	if (len != POINT_ID_LEN + strlen(".manifest") ||
	    strcmp(file + POINT_ID_LEN, ".manifest") != 0)
		return 0;
	memcpy(id, file, POINT_ID_LEN);
	id[POINT_ID_LEN] = '\0';
	if (!point_id_ok(id))
		return 0;
	if (lw->lw_n == lw->lw_cap) {
		cap = lw->lw_cap == 0 ? 16 : lw->lw_cap * 2;
		if ((np = reallocarray(lw->lw_points, cap,
		    sizeof(*np))) == NULL)
			return -1;
		lw->lw_points = np;
		lw->lw_cap = cap;
	}
	if (manifest_load(lw->lw_repo, lw->lw_tenant, lw->lw_name, id,
	    &lw->lw_points[lw->lw_n], digest, NULL) == -1) {
		if (errno == EBADMSG) {
			log_warnx("repository %s: tenants/%s/points/%s/%s: "
			    "corrupt manifest, point skipped",
			    lw->lw_repo->r_path, lw->lw_tenant, lw->lw_name,
			    file);
			return 0;
		}
		return errno == ENOENT ? 0 : -1;
	}
	if (repo_point_trim_keys(&lw->lw_points[lw->lw_n], lw->lw_keys) ==
	    -1) {
		repo_point_clear(&lw->lw_points[lw->lw_n]);
		errno = ENOMEM;
		return -1;
	}
	lw->lw_n++;
	return 0;
}

static int
repo_list_name(struct list_walk *lw, const char *name)
{
	char	 key[REPO_KEY_MAX];

	lw->lw_name = name;
	if (repo_key(key, sizeof(key), "tenants/%s/points/%s",
	    lw->lw_tenant, name) == -1)
		return -1;
	if (be_list(lw->lw_repo, key, repo_list_point_cb, lw) == -1)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
	return 0;
}

static int
repo_list_name_cb(void *arg, const char *name)
{
	if (!repo_name_ok(name))
		return 0;
	return repo_list_name(arg, name);
}

static int
point_cmp(const void *a, const void *b)
{
	const struct repo_point	*pa = a, *pb = b;
	int			 c;

	if ((c = strcmp(pa->rp_name, pb->rp_name)) != 0)
		return c;
	/* The chain's order; points from before chains come first. */
	if (pa->rp_sequence != pb->rp_sequence)
		return pa->rp_sequence < pb->rp_sequence ? -1 : 1;
	if (pa->rp_created != pb->rp_created)
		return pa->rp_created < pb->rp_created ? -1 : 1;
	return strcmp(pa->rp_id, pb->rp_id);
}

/*
 * Sets rp_previous_pruned on each of the n points (sorted by point_cmp)
 * whose predecessor is not among them but was pruned.
 */
static void
list_mark_pruned(struct repo *r, const char *tenant, struct repo_point *pts,
    size_t n)
{
	struct repo_point	*p;
	size_t			 i, j;

	for (i = 0; i < n; i++) {
		p = &pts[i];
		if (p->rp_previous_id[0] == '\0' || (i > 0 &&
		    strcmp(pts[i - 1].rp_id, p->rp_previous_id) == 0))
			continue;	/* the usual case: just before it */
		for (j = 0; j < n; j++)
			if (strcmp(pts[j].rp_name, p->rp_name) == 0 &&
			    strcmp(pts[j].rp_id, p->rp_previous_id) == 0)
				break;
		if (j == n)
			p->rp_previous_pruned = repo_point_pruned(r, tenant, p);
	}
}

/*
 * Lists tenant's restore points (of one name, or all if name is
 * NULL): those whose manifest verifies, sorted by name, sequence
 * (points from before chains first), creation time and id.  *points is
 * malloc'd (NULL when *n is 0), the caller frees it with
 * repo_points_free(); rp_index is NULL.  Returns 0, or -1 with errno
 * EINVAL (bad tenant or name), EIO, ENOMEM.
 */
int
repo_list(struct repo *r, const char *tenant, const char *name,
    struct repo_point **points, size_t *n)
{
	return repo_list_keys(r, tenant, name, NULL, points, n);
}

/* repo_list, with of each point's keys only what rk says (NULL: all). */
int
repo_list_keys(struct repo *r, const char *tenant, const char *name,
    const struct repo_keys *rk, struct repo_point **points, size_t *n)
{
	struct list_walk	 lw;
	char			 key[REPO_KEY_MAX];
	int			 rv = -1, save;

	memset(&lw, 0, sizeof(lw));
	lw.lw_keys = rk;
	if (points != NULL)
		*points = NULL;
	if (n != NULL)
		*n = 0;
	if (r == NULL || points == NULL || n == NULL ||
	    !repo_name_ok(tenant) || (name != NULL && !repo_name_ok(name))) {
		errno = EINVAL;
		return -1;
	}
	lw.lw_repo = r;
	lw.lw_tenant = tenant;
	if (name != NULL) {
		if (repo_list_name(&lw, name) == -1)
			goto fail;
	} else {
		if (repo_key(key, sizeof(key), "tenants/%s/points",
		    tenant) == -1)
			goto fail;
		if (be_list(r, key, repo_list_name_cb, &lw) == -1 &&
		    errno != ENOENT)
			goto fail;
	}
	if (lw.lw_n > 0) {
		qsort(lw.lw_points, lw.lw_n, sizeof(*lw.lw_points),
		    point_cmp);
		list_mark_pruned(r, tenant, lw.lw_points, lw.lw_n);
	} else {
		free(lw.lw_points);
		lw.lw_points = NULL;
	}
	*points = lw.lw_points;
	*n = lw.lw_n;
	lw.lw_points = NULL;
	rv = 0;
 fail:
	save = errno;
	free(lw.lw_points);
	errno = save;
	return rv;
}

/*
 * Opens restore point id (NULL: the newest) of tenant's backup name:
 * verifies its manifest and index and fills p, with p->rp_index
 * malloc'd (slots 0), or with p->rp_ix holding up to slots windows
 * instead (free either with repo_point_clear).  Returns 0, or -1 with
 * errno ENOENT (no such name or point), EBADMSG (manifest or index
 * corrupt or tampered), EINVAL, EIO, ENOMEM.
 */
static int
point_open(struct repo *r, const char *tenant, const char *name,
    const char *id, struct repo_point *p, size_t slots)
{
	struct repo_point	*points = NULL;
	uint8_t			 digest[CHUNK_ID_LEN];
	char			 newest[sizeof(points->rp_id)];
	size_t			 n = 0;
	int			 rv = -1, save;

	if (p != NULL)
		memset(p, 0, sizeof(*p));
	if (r == NULL || p == NULL || !repo_name_ok(tenant) ||
	    !repo_name_ok(name) || (id != NULL && !point_id_ok(id))) {
		errno = EINVAL;
		return -1;
	}
	if (id == NULL) {
		if (repo_list_keys(r, tenant, name, &repo_keys_none, &points,
		    &n) == -1)
			goto fail;
		if (n == 0) {
			errno = ENOENT;
			goto fail;
		}
		snprintf(newest, sizeof(newest), "%s", points[n - 1].rp_id);
		id = newest;
	}
	if (manifest_load(r, tenant, name, id, p, digest, NULL) == -1)
		goto fail;
	if ((slots > 0 ? index_windows_open(r, tenant, p, digest, slots) :
	    index_load(r, tenant, p, digest, NULL, 0)) == -1) {
		if (errno == ENOENT)
			errno = EBADMSG;	/* manifest without index */
		goto fail;
	}
	rv = 0;
 fail:
	save = errno;
	repo_points_free(points, n);
	if (rv == -1 && p != NULL) {
		repo_point_clear(p);
		memset(p, 0, sizeof(*p));
	}
	errno = save;
	return rv;
}

/* The whole index in p->rp_index. */
int
repo_point_open(struct repo *r, const char *tenant, const char *name,
    const char *id, struct repo_point *p)
{
	return point_open(r, tenant, name, id, p, 0);
}

/*
 * The index read a window at a time (repo_point_ids), holding up to
 * slots windows: a restore's, and an incremental's base.
 */
int
repo_point_open_windowed(struct repo *r, const char *tenant,
    const char *name, const char *id, struct repo_point *p, size_t slots)
{
	return point_open(r, tenant, name, id, p, slots > 0 ? slots : 1);
}

/*
 * Calls cb(arg, ids, n) with the chunk ids of tenant/name/id, a window
 * at a time, reading and hashing its index once (prune).  The index is
 * checked against its manifest only after the last window: nothing may
 * act on the ids before this returns 0.  -1 with errno ENOENT (no such
 * point), EBADMSG (manifest or index do not verify), cb's, or the
 * read's.
 */
int
repo_point_scan_ids(struct repo *r, const char *tenant, const char *name,
    const char *id, int (*cb)(void *, const uint8_t *, uint64_t), void *arg)
{
	struct repo_point	 p;
	struct be_obj		 o = { -1, 0 };
	EVP_MD_CTX		*ctx = NULL;
	uint8_t			 hdr[INDEX_HDR_LEN], digest[CHUNK_ID_LEN];
	uint8_t			 sum[CHUNK_ID_LEN], *ids = NULL;
	uint64_t		 w, windows, zero = 0;
	size_t			 n;
	int			 rv = -1, save;

	memset(&p, 0, sizeof(p));
	if (!repo_name_ok(tenant) || !repo_name_ok(name) || !point_id_ok(id)) {
		errno = EINVAL;
		return -1;
	}
	if (manifest_load(r, tenant, name, id, &p, digest, NULL) == -1)
		goto out;
	if (index_open(r, tenant, &p, &o, hdr, NULL) == -1) {
		if (errno == ENOENT)
			errno = EBADMSG;	/* manifest without index */
		goto out;
	}
	windows = (p.rp_blocks + INDEX_WINDOW_IDS - 1) / INDEX_WINDOW_IDS;
	if ((ids = malloc(index_window_ids(p.rp_blocks, 0) *
	    CHUNK_ID_LEN)) == NULL || (ctx = EVP_MD_CTX_new()) == NULL) {
		errno = ENOMEM;
		goto out;
	}
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, hdr, sizeof(hdr)) != 1)
		goto broken;
	for (w = 0; w < windows; w++) {
		n = index_window_ids(p.rp_blocks, w);
		if (be_read(&o, INDEX_HDR_LEN + w * INDEX_WINDOW_IDS *
		    CHUNK_ID_LEN, ids, n * CHUNK_ID_LEN) == -1)
			goto out;
		if (EVP_DigestUpdate(ctx, ids, n * CHUNK_ID_LEN) != 1)
			goto broken;
		zero += index_zero_ids(ids, n);
		if (cb(arg, ids, n) == -1)
			goto out;
	}
	if (EVP_DigestFinal_ex(ctx, sum, NULL) != 1)
		goto broken;
	if (memcmp(sum, digest, CHUNK_ID_LEN) != 0 ||
	    zero != p.rp_zero_blocks) {
		errno = EBADMSG;
		goto out;
	}
	rv = 0;
	goto out;
 broken:
	errno = EIO;
 out:
	save = errno;
	EVP_MD_CTX_free(ctx);
	free(ids);
	be_close(&o);
	repo_point_clear(&p);
	errno = save;
	return rv;
}

/* Frees p's index, keeping the rest (its keys, for the chain). */
void
repo_point_drop_index(struct repo_point *p)
{
	free(p->rp_index);
	p->rp_index = NULL;
	index_windows_free(p->rp_ix);
	p->rp_ix = NULL;
}

/* Frees p's index and keys; safe on a cleared or zeroed point. */
void
repo_point_clear(struct repo_point *p)
{
	if (p == NULL)
		return;
	repo_point_drop_index(p);
	free(p->rp_keys);
	p->rp_keys = NULL;
	p->rp_keys_len = 0;
}

/* Frees an array from repo_list. */
void
repo_points_free(struct repo_point *points, size_t n)
{
	size_t	 i;

	for (i = 0; i < n && points != NULL; i++)
		repo_point_clear(&points[i]);
	free(points);
}

enum { CHUNK_HDR_OK, CHUNK_HDR_BAD, CHUNK_HDR_BAD_LEN };

/*
 * Checks a chunk's header against itself and the object's size: magic,
 * version, flags, reserved bytes, lengths.  CHUNK_HDR_OK, or what is
 * wrong: CHUNK_HDR_BAD (bytes 0-7) or CHUNK_HDR_BAD_LEN (8-15, size).
 */
static int
chunk_hdr_check(const uint8_t hdr[CHUNK_HDR_LEN], uint64_t size)
{
	uint32_t	 flags = hdr[5], raw_len = get_be32(hdr + 8);
	uint32_t	 stored_len = get_be32(hdr + 12);

	if (memcmp(hdr, CHUNK_MAGIC, 4) != 0 || (hdr[4] != CHUNK_VERSION &&
	    hdr[4] != CHUNK_VERSION_SHA256) ||
	    (flags & ~CHUNK_FLAGS_ALL) != 0 || get_be16(hdr + 6) != 0)
		return CHUNK_HDR_BAD;
	if (raw_len == 0 || raw_len > BLOCK_SIZE_MAX ||
	    stored_len == 0 || stored_len > CHUNK_STORED_MAX ||
	    size < CHUNK_HDR_LEN || stored_len != size - CHUNK_HDR_LEN ||
	    (flags == 0 && stored_len != raw_len))
		return CHUNK_HDR_BAD_LEN;
	return CHUNK_HDR_OK;
}

/*
 * The id of the key the chunk stored at key is sealed under, into id:
 * 1, or 0 if it is not sealed; -1 with errno (EBADMSG: its header is
 * damaged).
 */
static int
chunk_seal_key(struct repo *r, const char *key, uint8_t id[KEY_ID_LEN])
{
	struct be_obj	 o = { -1, 0 };
	uint8_t		 hdr[CHUNK_HDR_LEN + KEY_ID_LEN];
	int		 rv = -1, save;

	if (be_open(r, key, &o) == -1)
		return -1;
	if (o.bo_size >= CHUNK_HDR_LEN && be_read(&o, 0, hdr,
	    o.bo_size < sizeof(hdr) ? CHUNK_HDR_LEN : sizeof(hdr)) == -1)
		;	/* the read's errno */
	else if (o.bo_size < CHUNK_HDR_LEN ||
	    chunk_hdr_check(hdr, o.bo_size) != CHUNK_HDR_OK ||
	    ((hdr[5] & CHUNK_ENCRYPTED) && o.bo_size < CHUNK_HDR_LEN +
	    SEALED_OVERHEAD))
		errno = EBADMSG;
	else if ((rv = (hdr[5] & CHUNK_ENCRYPTED) != 0))
		memcpy(id, hdr + CHUNK_HDR_LEN, KEY_ID_LEN);
	save = errno;
	be_close(&o);
	errno = save;
	return rv;
}

/* chunk_read's reason for an EBADMSG, with the byte offset in it. */
#define CHUNK_WHY(...) do {						\
	if (why != NULL)						\
		snprintf(why, whylen, __VA_ARGS__);			\
} while (0)

static int
chunk_read(struct repo *r, const char *tenant, const uint8_t *chunk_id,
    struct repo_chunk *c, char *why, size_t whylen)
{
	struct be_obj	 o = { -1, 0 };
	uint8_t		 hdr[CHUNK_HDR_LEN];
	uint8_t		 sum[CHUNK_HDR_LEN - CHUNK_SUM_OFF];
	char		 key[REPO_KEY_MAX];
	uint8_t		*data = NULL;
	uint32_t	 flags, raw_len, stored_len;
	int		 version;
	int		 rv = -1, save;

	if (c != NULL)
		memset(c, 0, sizeof(*c));
	if (r == NULL || c == NULL || chunk_id == NULL ||
	    !repo_name_ok(tenant) ||
	    memcmp(chunk_id, zero_id, CHUNK_ID_LEN) == 0) {
		errno = EINVAL;
		return -1;
	}
	if (chunk_key(key, sizeof(key), tenant, chunk_id) == -1 ||
	    be_open(r, key, &o) == -1)
		goto fail;
	if (o.bo_size < CHUNK_HDR_LEN) {
		CHUNK_WHY("truncated to %llu bytes, shorter than its header",
		    (unsigned long long)o.bo_size);
		errno = EBADMSG;
		goto fail;
	}
	if (be_read(&o, 0, hdr, sizeof(hdr)) == -1)
		goto fail;
	version = hdr[4];
	flags = hdr[5];
	raw_len = get_be32(hdr + 8);
	stored_len = get_be32(hdr + 12);
	switch (chunk_hdr_check(hdr, o.bo_size)) {
	case CHUNK_HDR_OK:
		break;
	case CHUNK_HDR_BAD:
		CHUNK_WHY("header damaged (magic, version or flags at bytes "
		    "0-7)");
		errno = EBADMSG;
		goto fail;
	default:
		CHUNK_WHY("header lengths damaged or object truncated (bytes "
		    "8-15: raw %u, stored %u; object %llu bytes)", raw_len,
		    stored_len, (unsigned long long)o.bo_size);
		errno = EBADMSG;
		goto fail;
	}
	if ((data = malloc(stored_len)) == NULL ||
	    be_read(&o, CHUNK_HDR_LEN, data, stored_len) == -1)
		goto fail;
	chunk_sum(version, data, stored_len, sum);
	if (memcmp(sum, hdr + CHUNK_SUM_OFF, sizeof(sum)) != 0) {
		CHUNK_WHY("stored payload (bytes %d-%llu) does not match the "
		    "%s in its header", CHUNK_HDR_LEN,
		    (unsigned long long)o.bo_size - 1,
		    version == CHUNK_VERSION_SHA256 ? "SHA-256" : "XXH3-128");
		errno = EBADMSG;
		goto fail;
	}
	c->rc_flags = flags;
	c->rc_raw_len = raw_len;
	c->rc_data = data;
	c->rc_len = stored_len;
	data = NULL;
	rv = 0;
 fail:
	save = errno;
	free(data);
	be_close(&o);
	errno = save;
	return rv;
}

/*
 * Reads chunk chunk_id of tenant into c (c->rc_data malloc'd, free
 * with repo_chunk_clear), verifying its header and the digest of its
 * stored payload (no key needed).  Thread-safe.  Returns 0, or -1
 * with errno ENOENT (absent), EBADMSG (corrupt, truncated or
 * tampered), EINVAL, EIO, ENOMEM.
 */
int
repo_chunk_read(struct repo *r, const char *tenant, const uint8_t *chunk_id,
    struct repo_chunk *c)
{
	return chunk_read(r, tenant, chunk_id, c, NULL, 0);
}

/*
 * repo_chunk_read for verify: on EBADMSG, why holds what is wrong and
 * at which byte offset of the chunk object.
 */
int
repo_chunk_inspect(struct repo *r, const char *tenant,
    const uint8_t *chunk_id, struct repo_chunk *c, char *why, size_t whylen)
{
	if (whylen > 0)
		why[0] = '\0';
	return chunk_read(r, tenant, chunk_id, c, why, whylen);
}

/*
 * Walks for verify.  Each calls cb(arg, name) for every valid tenant,
 * backup name of a tenant, or restore point id (a file <id>.manifest)
 * of a name, in no order; a cb returning -1 stops the walk.  Returns
 * 0, or -1 with errno (ENOENT if the directory is absent).
 */
struct name_filter {
	int		(*nf_cb)(void *, const char *);
	void		*nf_arg;
};

static int
name_filter_cb(void *arg, const char *name)
{
	struct name_filter	*nf = arg;

	return repo_name_ok(name) ? nf->nf_cb(nf->nf_arg, name) : 0;
}

static int
point_filter_cb(void *arg, const char *file)
{
	struct name_filter	*nf = arg;
	char			 id[POINT_ID_LEN + 1];

	if (strlen(file) != POINT_ID_LEN + strlen(".manifest") ||
	    strcmp(file + POINT_ID_LEN, ".manifest") != 0)
		return 0;
	memcpy(id, file, POINT_ID_LEN);
	id[POINT_ID_LEN] = '\0';
	return point_id_ok(id) ? nf->nf_cb(nf->nf_arg, id) : 0;
}

int
repo_tenants(struct repo *r, int (*cb)(void *, const char *), void *arg)
{
	struct name_filter	 nf = { cb, arg };

	return be_list(r, "tenants", name_filter_cb, &nf);
}

int
repo_names(struct repo *r, const char *tenant,
    int (*cb)(void *, const char *), void *arg)
{
	struct name_filter	 nf = { cb, arg };
	char			 key[REPO_KEY_MAX];

	if (!repo_name_ok(tenant)) {
		errno = EINVAL;
		return -1;
	}
	if (repo_key(key, sizeof(key), "tenants/%s/points", tenant) == -1)
		return -1;
	return be_list(r, key, name_filter_cb, &nf);
}

int
repo_point_files(struct repo *r, const char *tenant, const char *name,
    int (*cb)(void *, const char *), void *arg)
{
	struct name_filter	 nf = { cb, arg };
	char			 key[REPO_KEY_MAX];

	if (!repo_name_ok(tenant) || !repo_name_ok(name)) {
		errno = EINVAL;
		return -1;
	}
	if (repo_key(key, sizeof(key), "tenants/%s/points/%s", tenant,
	    name) == -1)
		return -1;
	return be_list(r, key, point_filter_cb, &nf);
}

/*
 * One exact point for verify, its index read a window at a time
 * (repo_point_ids) so that verify's memory does not grow with the
 * disk: on EBADMSG *why says whether the manifest or the index is
 * damaged, and how; a manifest that verifies while its index does not
 * is still filled into p, so that its chain can be checked, with
 * rp_index set (whole) if the index is whole but does not match its
 * digest.  The caller clears p in every case (repo_point_clear).
 */
int
repo_point_inspect(struct repo *r, const char *tenant, const char *name,
    const char *id, struct repo_point *p, const char **why)
{
	uint8_t		 digest[CHUNK_ID_LEN];

	*why = NULL;
	memset(p, 0, sizeof(*p));
	if (!repo_name_ok(tenant) || !repo_name_ok(name) || !point_id_ok(id)) {
		errno = EINVAL;
		return -1;
	}
	if (manifest_load(r, tenant, name, id, p, digest, why) == -1) {
		repo_point_clear(p);
		memset(p, 0, sizeof(*p));
		return -1;
	}
	if (index_windows_open(r, tenant, p, digest, 1) == 0)
		return 0;
	/* Damaged or unreadable: read it again whole, to say how. */
	if (index_load(r, tenant, p, digest, why, 1) == -1) {
		if (errno == ENOENT) {
			*why = "index missing (the manifest names it)";
			errno = EBADMSG;
		}
		return -1;
	}
	return 0;
}

/* Frees c's payload; safe on a cleared or zeroed chunk. */
void
repo_chunk_clear(struct repo_chunk *c)
{
	if (c == NULL)
		return;
	free(c->rc_data);
	c->rc_data = NULL;
	c->rc_len = 0;
}

/*
 * Resume.  After each sync the receiving side checkpoints the job: the
 * chunk ids of every block whose chunk is durable go to tmp/<job>/
 * journal (written whole, fsync, rename, fsync of the directory).  A
 * job cut off by a lost connection or a crash keeps its tmp directory
 * and journal; the next backup of the same name uses the journal as
 * part of its base, so nothing durable travels again.
 *
 *	"TRJN" u8 version u8 0 u16 name length | u32 block size
 *	u32 mode | u64 disk size | u64 blocks | name | blocks * 32 ids
 *	| u32 keys | keys * 16 key ids (version 2) | SHA-256 of everything
 *	before
 *
 * The key ids: at rest, those the job's chunks may be sealed under
 * (repo_job_resume); none in flight.
 */

/* Removes everything in a journaled job's directory but the journal. */
static int
journal_prune_cb(void *arg, const char *name)
{
	struct { struct repo *r; const char *dir; } *w = arg;
	char	 key[REPO_KEY_MAX];

	if (strcmp(name, JOURNAL_NAME) != 0 &&
	    repo_key(key, sizeof(key), "%s/%s", w->dir, name) == 0)
		(void)be_remove(w->r, key);
	return 0;
}

static int
journal_prune(struct repo *r, const char *dir)
{
	struct { struct repo *r; const char *dir; } w = { r, dir };

	return be_list(r, dir, journal_prune_cb, &w);
}

/* Collects the ids of a tree of key ids (twalk_r). */
struct key_ids {
	uint8_t		*kw_ids;
	size_t		 kw_n;
};

static void
key_ids_visit(const void *node, VISIT v, void *arg)
{
	struct key_ids	*kw = arg;

	if (v == postorder || v == leaf)
		memcpy(kw->kw_ids + kw->kw_n++ * KEY_ID_LEN,
		    *(const uint8_t *const *)node, KEY_ID_LEN);
}

/*
 * Writes the job's journal from snapshot (j_blocks chunk ids, taken
 * when the sync that made them durable began): header, name, ids, then
 * (version 2) the count and ids of the keys its chunks are sealed
 * under, at rest: every key noted so far (job_use_key), a superset of
 * those of the snapshot's chunks, which a resumed job's point must
 * list.  Returns 0
 * or -1.
 */
int
repo_job_checkpoint(struct repo_job *j, const struct repo_snapshot *sn)
{
	uint8_t		 hdr[JOURNAL_HDR_LEN], digest[CHUNK_ID_LEN];
	uint8_t		 nkeys[4], *keys = NULL;
	struct key_ids	 kw = { NULL, 0 };
	struct iovec	*iov = NULL, *more;
	char		 stage[REPO_KEY_MAX], key[REPO_KEY_MAX];
	size_t		 namelen = strlen(j->j_name);
	int		 save, n, rv = -1;

	/* Nothing of a source-side job is durable before its commit. */
	if (!repo_job_journals(j))
		return 0;

	memset(hdr, 0, sizeof(hdr));
	memcpy(hdr, JOURNAL_MAGIC, 4);
	hdr[4] = JOURNAL_VERSION;
	put_be16(hdr + 6, (uint16_t)namelen);
	put_be32(hdr + 8, j->j_block_size);
	put_be32(hdr + 12, j->j_mode);
	put_be64(hdr + 16, j->j_disk_size);
	put_be64(hdr + 24, j->j_blocks);
	if (sn->sn_ids.im_blocks != j->j_blocks) {
		errno = EINVAL;
		return -1;
	}
	pthread_mutex_lock(&j->j_mtx);
	if ((kw.kw_ids = malloc(j->j_nused_keys * KEY_ID_LEN + 1)) != NULL)
		twalk_r(j->j_used_keys, key_ids_visit, &kw);
	pthread_mutex_unlock(&j->j_mtx);
	if ((keys = kw.kw_ids) == NULL)
		return -1;
	put_be32(nkeys, (uint32_t)kw.kw_n);
	if ((iov = id_map_iov(&sn->sn_ids, 2, &n)) == NULL ||
	    (more = reallocarray(iov, (size_t)n + 2, sizeof(*iov))) == NULL)
		goto out;
	iov = more;
	iov[n - 1] = (struct iovec){ nkeys, sizeof(nkeys) };
	iov[n] = (struct iovec){ keys, kw.kw_n * KEY_ID_LEN };
	n += 2;
	iov[0].iov_base = hdr;
	iov[0].iov_len = sizeof(hdr);
	iov[1].iov_base = j->j_name;
	iov[1].iov_len = namelen;
	if (crypto_sha256_iov(iov, n - 1, digest) == -1)
		goto out;
	iov[n - 1].iov_base = digest;
	iov[n - 1].iov_len = sizeof(digest);
	if (repo_key(stage, sizeof(stage), "%s/" JOURNAL_STAGE,
	    j->j_tmp) == -1 || repo_key(key, sizeof(key), "%s/" JOURNAL_NAME,
	    j->j_tmp) == -1)
		goto out;
	rv = be_replace(j->j_repo, stage, key, iov, n);
 out:
	save = errno;
	free(iov);
	free(keys);
	errno = save;
	return rv;
}

/*
 * Drops the job but keeps its journal, if it has one, for a later
 * resume; without a journal this is repo_job_abort.
 */
void
repo_job_suspend(struct repo_job *j)
{
	char	 key[REPO_KEY_MAX];

	if (j == NULL)
		return;
	if (repo_key(key, sizeof(key), "%s/" JOURNAL_NAME, j->j_tmp) == 0 &&
	    be_exists(j->j_repo, key) == 1) {
		(void)journal_prune(j->j_repo, j->j_tmp);
		/* An empty tmp path makes abort keep the directory. */
		j->j_tmp[0] = '\0';
		log_info("repository %s: job %s/%s/%s suspended; the next "
		    "backup of '%s' resumes it", j->j_repo->r_path,
		    j->j_tenant, j->j_name, j->j_id, j->j_name);
	}
	repo_job_abort(j);
}

/* What journal_read takes of a journal. */
struct journal {
	uint8_t		*jn_ids;	/* its blocks' chunk ids */
	uint64_t	 jn_blocks;
	uint8_t		*jn_keys;	/* the key ids it records */
	size_t		 jn_nkeys;
	int		 jn_version;
};

static void
journal_free(struct journal *jn)
{
	free(jn->jn_ids);
	free(jn->jn_keys);
	memset(jn, 0, sizeof(*jn));
}

/*
 * Reads and checks one journal of name (NULL: of any name), block_size
 * and mode (0: any) into jn; 0, or -1 with errno (EBADMSG: damaged,
 * ESRCH: another's).
 */
static int
journal_read(struct repo *r, const char *key, const char *name,
    uint32_t block_size, uint32_t mode, struct journal *jn)
{
	struct be_obj	 o;
	uint8_t		 hdr[JOURNAL_HDR_LEN], digest[CHUNK_ID_LEN];
	uint8_t		 want[CHUNK_ID_LEN], nkeys[4];
	uint8_t		*buf = NULL;
	uint64_t	 n, len, idslen, k = 0;
	size_t		 namelen;
	char		 jname[NAME_MAX_LEN];
	int		 rv = -1;

	memset(jn, 0, sizeof(*jn));
	if (be_open(r, key, &o) == -1)
		return -1;
	if (o.bo_size < JOURNAL_HDR_LEN + CHUNK_ID_LEN ||
	    be_read(&o, 0, hdr, sizeof(hdr)) == -1 ||
	    memcmp(hdr, JOURNAL_MAGIC, 4) != 0 || hdr[4] < 1 ||
	    hdr[4] > JOURNAL_VERSION)
		goto bad;
	namelen = get_be16(hdr + 6);
	n = get_be64(hdr + 24);
	if (n == 0 || n > REPO_BLOCKS_MAX || namelen == 0 ||
	    namelen > NAME_MAX_LEN)
		goto bad;
	idslen = JOURNAL_HDR_LEN + namelen + n * CHUNK_ID_LEN;
	len = idslen;
	if (hdr[4] >= 2) {
		if (o.bo_size < idslen + sizeof(nkeys) + CHUNK_ID_LEN ||
		    be_read(&o, idslen, nkeys, sizeof(nkeys)) == -1)
			goto bad;
		if ((k = get_be32(nkeys)) > KEYCHAIN_KEYS_MAX)
			goto bad;
		len += sizeof(nkeys) + k * KEY_ID_LEN;
	}
	if (o.bo_size != len + CHUNK_ID_LEN ||
	    be_read(&o, JOURNAL_HDR_LEN, jname, namelen) == -1)
		goto bad;
	/*
	 * Another name's job, block size or mode: not for us, and not read
	 * further (a journal holds 32 bytes per block of its disk).
	 */
	if ((name != NULL && (namelen != strlen(name) ||
	    memcmp(jname, name, namelen) != 0)) ||
	    (block_size != 0 && get_be32(hdr + 8) != block_size) ||
	    (mode != 0 && get_be32(hdr + 12) != mode)) {
		errno = ESRCH;
		goto out;
	}
	if ((buf = malloc(len)) == NULL)
		goto out;
	if (be_read(&o, 0, buf, len) == -1 ||
	    be_read(&o, len, want, sizeof(want)) == -1)
		goto bad;
	crypto_sha256(buf, len, digest);
	if (memcmp(digest, want, sizeof(digest)) != 0)
		goto bad;
	if ((jn->jn_ids = malloc(n * CHUNK_ID_LEN)) == NULL ||
	    (jn->jn_keys = malloc(k * KEY_ID_LEN + 1)) == NULL) {
		journal_free(jn);
		goto out;
	}
	memcpy(jn->jn_ids, buf + JOURNAL_HDR_LEN + namelen, n * CHUNK_ID_LEN);
	if (k > 0)
		memcpy(jn->jn_keys, buf + idslen + sizeof(nkeys),
		    k * KEY_ID_LEN);
	jn->jn_blocks = n;
	jn->jn_nkeys = k;
	jn->jn_version = hdr[4];
	rv = 0;
	goto out;
 bad:
	errno = EBADMSG;
 out:
	free(buf);
	be_close(&o);
	return rv;
}

/* 1 if a job of this process or another holds the lock of dir. */
static int
job_is_live(struct repo *r, const char *dir)
{
	int	 fd, live;

	if ((fd = openat(r->r_fd, dir, O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1)
		return 1;	/* gone or unreadable: leave it alone */
	live = flock(fd, LOCK_EX | LOCK_NB) == -1;
	close(fd);
	return live;
}

struct resume_walk {
	struct repo	*rw_repo;
	const char	*rw_tenant;
	const char	*rw_name;
	uint32_t	 rw_block_size;
	uint32_t	 rw_mode;
	char		 rw_best[POINT_ID_LEN + 1];
	struct journal	 rw_journal;
	int		 rw_drop;	/* remove instead of load */
};

static int
repo_resume_cb(void *arg, const char *job)
{
	struct resume_walk	*rw = arg;
	char			 key[REPO_KEY_MAX];
	struct journal		 jn;

	if (!point_id_ok(job) || repo_key(key, sizeof(key),
	    "tenants/%s/tmp/%s", rw->rw_tenant, job) == -1 ||
	    job_is_live(rw->rw_repo, key) || repo_key(key, sizeof(key),
	    "tenants/%s/tmp/%s/" JOURNAL_NAME, rw->rw_tenant, job) == -1)
		return 0;
	if (rw->rw_drop) {
		/* Only this name's: read the journal to know whose it is. */
		if (journal_read(rw->rw_repo, key, rw->rw_name,
		    rw->rw_block_size, 0, &jn) == 0 || errno == EBADMSG) {
			journal_free(&jn);
			if (repo_key(key, sizeof(key), "tenants/%s/tmp/%s",
			    rw->rw_tenant, job) == 0)
				(void)be_remove_tree(rw->rw_repo, key,
				    REPO_TREE_DEPTH);
		}
		return 0;
	}
	/* The newest journal of this name wins. */
	if (strcmp(job, rw->rw_best) <= 0)
		return 0;
	if (journal_read(rw->rw_repo, key, rw->rw_name, rw->rw_block_size,
	    rw->rw_mode, &jn) == -1)
		return 0;
	journal_free(&rw->rw_journal);
	rw->rw_journal = jn;
	snprintf(rw->rw_best, sizeof(rw->rw_best), "%s", job);
	return 0;
}

/*
 * At rest: notes the keys the chunks of jn (the journal of job, an
 * interrupted job) are sealed under, which j's point will need.  The
 * journal records every key its job had noted, a superset; if the
 * tenant's key file no longer holds one of them (prune drops the keys
 * no chunk uses: one a base listed, say), the header of each chunk the
 * journal holds says which it needs, read once per chunk, and not for
 * a block that is base's (j's base, whose keys j notes already).  0,
 * or -1 with errno ENOKEY (logged) if one is sealed under a key the
 * file lacks or does not read, ENOMEM.
 */
static int
journal_use_keys(struct repo_job *j, const struct journal *jn,
    struct repo_point *base, const char *job)
{
	char		 key[REPO_KEY_MAX], hex[2 * KEY_ID_LEN + 1];
	uint8_t		 kid[KEY_ID_LEN];
	const uint8_t	*id, *was;
	void		*seen = NULL;
	uint64_t	 b;
	size_t		 i, lost = 0;
	int		 noted, rv = -1;

	for (i = 0; i < jn->jn_nkeys; i++) {
		if ((noted = job_use_tenant_key(j, jn->jn_keys +
		    i * KEY_ID_LEN)) == -1)
			return -1;
		lost += noted == 0;
	}
	for (b = 0; lost > 0 && b < jn->jn_blocks; b++) {
		id = jn->jn_ids + b * CHUNK_ID_LEN;
		if (buf_is_zero(id, CHUNK_ID_LEN))
			continue;
		if (b < base->rp_blocks) {
			if ((was = repo_point_ids(base, b, 1)) == NULL)
				goto out;
			if (memcmp(was, id, CHUNK_ID_LEN) == 0)
				continue;
		}
		if ((noted = id_set_add(&seen, id, CHUNK_ID_LEN,
		    chunk_id_cmp)) == -1)
			goto out;
		if (noted == 0)
			continue;	/* its header was read */
		if (chunk_key(key, sizeof(key), j->j_tenant, id) == -1)
			goto out;
		switch (chunk_seal_key(j->j_repo, key, kid)) {
		case 1:
			if ((noted = job_use_tenant_key(j, kid)) == 1)
				continue;
			if (noted == -1)
				goto out;
			hex_encode(kid, KEY_ID_LEN, hex);
			log_warnx("repository %s: the interrupted backup "
			    "%s/%s/%s needs key %.16s, which the tenant's key "
			    "file no longer holds; the backup starts over",
			    j->j_repo->r_path, j->j_tenant, j->j_name, job,
			    hex);
			break;
		default:
			log_warnx("repository %s: the interrupted backup "
			    "%s/%s/%s: chunk %s is not sealed or does not "
			    "read; the backup starts over", j->j_repo->r_path,
			    j->j_tenant, j->j_name, job, key);
			break;
		}
		errno = ENOKEY;
		goto out;
	}
	rv = 0;
 out:
	tdestroy(seen, free);
	return rv;
}

/*
 * Finds the newest interrupted job of the tenant/name, block size and
 * mode of job j and returns the chunk ids it made durable (*ids
 * malloc'd, *blocks of them, zero ids for blocks it never stored).  At
 * rest, j's point will need the keys those chunks are sealed under:
 * they are noted (job_use_key), and a journal that does not record
 * them (version 1) or records one the tenant's key file no longer
 * holds is not resumed from.  -1 with ENOENT if none, ENOKEY (logged)
 * if one is not resumed from for its keys, ENOMEM.
 */
int
repo_job_resume(struct repo_job *j, struct repo_point *base, uint8_t **ids,
    uint64_t *blocks)
{
	struct resume_walk	 rw;
	char			 key[REPO_KEY_MAX];
	struct journal		*jn = &rw.rw_journal;

	memset(&rw, 0, sizeof(rw));
	rw.rw_repo = j->j_repo;
	rw.rw_tenant = j->j_tenant;
	rw.rw_name = j->j_name;
	rw.rw_block_size = j->j_block_size;
	rw.rw_mode = j->j_mode;
	if (repo_key(key, sizeof(key), "tenants/%s/tmp", j->j_tenant) == -1 ||
	    be_list(j->j_repo, key, repo_resume_cb, &rw) == -1 ||
	    jn->jn_ids == NULL) {
		journal_free(jn);
		errno = ENOENT;
		return -1;
	}
	if (j->j_nseal_ids > 0 && jn->jn_version < 2) {
		log_warnx("repository %s: the interrupted backup %s/%s/%s "
		    "does not record its keys; the backup starts over",
		    j->j_repo->r_path, j->j_tenant, j->j_name, rw.rw_best);
		journal_free(jn);
		errno = ENOKEY;
		return -1;
	}
	if (j->j_nseal_ids > 0 && journal_use_keys(j, jn, base,
	    rw.rw_best) == -1) {
		journal_free(jn);
		return -1;
	}
	*ids = jn->jn_ids;
	*blocks = jn->jn_blocks;
	free(jn->jn_keys);
	return 0;
}

/* Removes every interrupted job of tenant/name (a backup committed). */
void
repo_resume_drop(struct repo *r, const char *tenant, const char *name)
{
	struct resume_walk	 rw;
	char			 key[REPO_KEY_MAX];

	memset(&rw, 0, sizeof(rw));
	rw.rw_repo = r;
	rw.rw_tenant = tenant;
	rw.rw_name = name;
	rw.rw_block_size = 0;	/* any block size */
	rw.rw_drop = 1;
	if (repo_key(key, sizeof(key), "tenants/%s/tmp", tenant) == 0)
		(void)be_list(r, key, repo_resume_cb, &rw);
}

/*
 * A copy of the job's index as it is now (its written pages only), for
 * repo_job_checkpoint after the next sync.  Call from the thread that
 * sets blocks.
 */
struct repo_snapshot *
repo_job_snapshot(const struct repo_job *j)
{
	struct repo_snapshot	*sn;

	if ((sn = calloc(1, sizeof(*sn))) == NULL)
		return NULL;
	if (id_map_copy(&sn->sn_ids, &j->j_ids) == -1) {
		free(sn);
		return NULL;
	}
	return sn;
}

void
repo_snapshot_free(struct repo_snapshot *sn)
{
	if (sn == NULL)
		return;
	id_map_free(&sn->sn_ids);
	free(sn);
}

/*
 * Source-side keys.  The target keeps them without being able to use
 * them: each point's manifest lists the wrapped keys it needs, and
 * points/<name>/keychain holds every key of the chain wrapped by the
 * newest KEK the source used (a TRKC file, opaque here).
 */

/*
 * An at-rest job: keys (a packed KeyChain, len bytes) is every key of
 * the tenant's at-rest key file.  A sealed chunk stored under any other
 * key (a source-side job's: the target cannot check its id) is then
 * replaced by this job's copy, not deduplicated against; and of these
 * keys, the commit lists those the job's chunks need (job_use_key).
 * Before the first chunk.  0, or -1 with errno EINVAL or ENOMEM.
 */
int
repo_job_set_seal_keys(struct repo_job *j, const uint8_t *keys, size_t len)
{
	KeyChain	*kc;
	size_t		 i, n = 0;

	if (j == NULL || keys == NULL || len > KEYCHAIN_FILE_MAX ||
	    (kc = key_chain__unpack(NULL, len, keys)) == NULL) {
		errno = EINVAL;
		return -1;
	}
	free(j->j_keys);
	free(j->j_seal_ids);
	j->j_keys_len = j->j_nseal_ids = 0;
	if ((j->j_keys = malloc(len)) == NULL ||
	    (j->j_seal_ids = calloc(kc->n_keys + 1, KEY_ID_LEN)) == NULL) {
		key_chain__free_unpacked(kc, NULL);
		return -1;	/* repo_job_abort frees what was made */
	}
	memcpy(j->j_keys, keys, len);
	j->j_keys_len = len;
	for (i = 0; i < kc->n_keys; i++)
		if (kc->keys[i]->key_id.len == KEY_ID_LEN)
			memcpy(j->j_seal_ids + n++ * KEY_ID_LEN,
			    kc->keys[i]->key_id.data, KEY_ID_LEN);
	key_chain__free_unpacked(kc, NULL);
	qsort(j->j_seal_ids, n, KEY_ID_LEN, key_id_cmp);
	j->j_nseal_ids = n;
	return 0;
}

/*
 * The keys the job's point needs besides those of the chunks it stores
 * or deduplicates against (repo_job_put_chunk and chunk_same_kind note
 * those): at rest its own data key (own), and every key its base lists
 * (its Unchanged blocks are the base's chunks; but a source-side
 * base's chunk-id key, which job_keep_used_keys keeps anyway).  own and
 * base are NULL for none.  At rest, the ids of keys that are not the
 * tenant's are ignored.  0, or -1 with errno (job_use_key's).
 */
int
repo_job_use_keys(struct repo_job *j, const uint8_t *own,
    const struct repo_point *base)
{
	KeyChain	*kc;
	size_t		 i;
	int		 rv = 0;

	if (own != NULL && job_use_tenant_key(j, own) == -1)
		return -1;
	if (base == NULL || base->rp_keys == NULL)
		return 0;
	if ((kc = key_chain__unpack(NULL, base->rp_keys_len,
	    base->rp_keys)) == NULL) {
		errno = ENOMEM;		/* packed here: it decoded before */
		return -1;
	}
	for (i = 0; i < kc->n_keys && rv == 0; i++) {
		if (kc->keys[i]->key_id.len != KEY_ID_LEN)
			continue;
		if (!job_defers_chunks(j))
			rv = job_use_tenant_key(j, kc->keys[i]->key_id.data) ==
			    -1 ? -1 : 0;
		else if (kc->keys[i]->purpose != KEY_PURPOSE_CHUNK_ID)
			rv = job_use_key(j, kc->keys[i]->key_id.data);
	}
	key_chain__free_unpacked(kc, NULL);
	return rv;
}

/* Adds the sizes of the files under key, depth levels down, to *bytes. */
static int
be_tree_bytes(struct repo *r, const char *key, int depth, uint64_t *bytes)
{
	char		 child[REPO_KEY_MAX];
	struct stat	 st;
	DIR		*d;
	struct dirent	*de;
	int		 fd, rv = 0, save;

	if ((fd = openat(r->r_fd, key,
	    O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return errno == ENOENT ? 0 : -1;
	if ((d = fdopendir(fd)) == NULL) {
		save = errno;
		close(fd);
		errno = save;
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st,
		    AT_SYMLINK_NOFOLLOW) == -1) {
			if (errno == ENOENT)
				continue;	/* gone meanwhile */
			rv = -1;
			break;
		}
		if (S_ISREG(st.st_mode))
			*bytes += (uint64_t)st.st_size;
		else if (S_ISDIR(st.st_mode) && depth > 0 &&
		    (repo_key(child, sizeof(child), "%s/%s", key,
		    de->d_name) == -1 ||
		    be_tree_bytes(r, child, depth - 1, bytes) == -1)) {
			rv = -1;
			break;
		}
	}
	save = errno;
	closedir(d);
	errno = save;
	return rv;
}

/*
 * The job's tenant has a quota of quota bytes: from now on every chunk
 * the job stores is counted, and refused (EDQUOT) past it.  With quota
 * 0 (none) the job is only counted, and only if the tenant's count was
 * started (it had a quota before a reload took it away), so that the
 * count is right if a reload brings one back.  What the
 * tenant stores is summed from its files the first time in this
 * process (a walk of its directory), then kept up by every such job:
 * its index at once, its new chunks as they are put, its manifest at
 * the commit.  *used gets the count before this job.  0, or -1 with
 * errno (EDQUOT: not even the index fits).
 */
int
repo_job_set_quota(struct repo_job *j, uint64_t quota, uint64_t *used)
{
	struct repo		*r = j->j_repo;
	struct repo_usage	*ru, *mine = NULL;
	char			 key[REPO_KEY_MAX];
	uint64_t		 bytes = 0;

	for (;;) {
		pthread_mutex_lock(&r->r_usage_mtx);
		for (ru = r->r_usage; ru != NULL; ru = ru->ru_next)
			if (strcmp(ru->ru_tenant, j->j_tenant) == 0)
				break;
		if (ru == NULL && quota == 0) {
			/* Never counted: nothing to keep up. */
			pthread_mutex_unlock(&r->r_usage_mtx);
			*used = 0;
			return 0;
		}
		if (ru == NULL && mine != NULL) {
			ru = mine;
			ru->ru_next = r->r_usage;
			r->r_usage = ru;
			mine = NULL;
		}
		pthread_mutex_unlock(&r->r_usage_mtx);
		if (ru != NULL)
			break;
		/* Counted without the lock: other tenants' jobs go on. */
		if (repo_key(key, sizeof(key), "tenants/%s",
		    j->j_tenant) == -1 || be_tree_bytes(r, key,
		    REPO_TREE_DEPTH, &bytes) == -1 ||
		    (mine = calloc(1, sizeof(*mine))) == NULL)
			return -1;
		snprintf(mine->ru_tenant, sizeof(mine->ru_tenant), "%s",
		    j->j_tenant);
		atomic_init(&mine->ru_bytes, bytes);
	}
	free(mine);		/* another job of the tenant counted first */
	j->j_usage = ru;
	j->j_quota = quota > 0 ? quota : UINT64_MAX;
	*used = atomic_load(&ru->ru_bytes);
	/* The index the commit writes, counted now: it must fit too. */
	return usage_reserve(j, job_index_bytes(j));
}

/*
 * What tenant stores, as counted for its quota: 0, or -1 with ENOENT if
 * no backup of it has counted yet in this process.
 */
int
repo_tenant_usage(struct repo *r, const char *tenant, uint64_t *bytes)
{
	struct repo_usage	*ru;

	pthread_mutex_lock(&r->r_usage_mtx);
	for (ru = r->r_usage; ru != NULL; ru = ru->ru_next)
		if (strcmp(ru->ru_tenant, tenant) == 0) {
			*bytes = atomic_load(&ru->ru_bytes);
			break;
		}
	pthread_mutex_unlock(&r->r_usage_mtx);
	if (ru == NULL) {
		errno = ENOENT;
		return -1;
	}
	return 0;
}

/*
 * Gives the job the keys its point needs (a packed KeyChain) and the
 * chain's new key file; both are copied and written by the commit.
 */
int
repo_job_set_keys(struct repo_job *j, const uint8_t *keys, size_t keys_len,
    const uint8_t *keychain, size_t keychain_len)
{
	if (keys_len > POINT_KEYS_MAX || keychain_len > KEYCHAIN_FILE_MAX) {
		errno = EINVAL;
		return -1;
	}
	free(j->j_keys);
	free(j->j_keychain);
	j->j_keys = j->j_keychain = NULL;
	j->j_keys_len = j->j_keychain_len = 0;
	if (keys_len > 0) {
		if ((j->j_keys = malloc(keys_len)) == NULL)
			return -1;
		memcpy(j->j_keys, keys, keys_len);
		j->j_keys_len = keys_len;
	}
	if (keychain_len > 0) {
		if ((j->j_keychain = malloc(keychain_len)) == NULL)
			return -1;
		memcpy(j->j_keychain, keychain, keychain_len);
		j->j_keychain_len = keychain_len;
	}
	return 0;
}

/* Replaces points/<name>/keychain durably with the job's. */
static int
repo_keychain_write(struct repo_job *j, const char *dir)
{
	char		 stage[REPO_KEY_MAX], key[REPO_KEY_MAX];
	struct iovec	 iov = { j->j_keychain, j->j_keychain_len };

	if (repo_key(stage, sizeof(stage), "%s/keychain", j->j_tmp) == -1 ||
	    repo_key(key, sizeof(key), "%s/keychain", dir) == -1)
		return -1;
	return be_replace(j->j_repo, stage, key, &iov, 1);
}

/*
 * Replaces tenant/name's key file outside a backup (a password change).
 * The name must have restore points.  0, or -1 with errno (ENOENT,
 * EINVAL, ENOSPC, EIO).
 */
int
repo_keychain_store(struct repo *r, const char *tenant, const char *name,
    const uint8_t *buf, size_t len)
{
	char		 dir[REPO_KEY_MAX], stage[REPO_KEY_MAX];
	char		 key[REPO_KEY_MAX];
	struct iovec	 iov = { (void *)buf, len };

	if (!repo_name_ok(tenant) || !repo_name_ok(name) || len == 0 ||
	    len > KEYCHAIN_FILE_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (repo_key(dir, sizeof(dir), "tenants/%s/points/%s", tenant,
	    name) == -1 || repo_key(stage, sizeof(stage),
	    "%s/.keychain.tmp", dir) == -1 || repo_key(key, sizeof(key),
	    "%s/keychain", dir) == -1)
		return -1;
	if (be_exists(r, dir) != 1) {
		errno = ENOENT;
		return -1;
	}
	return be_replace(r, stage, key, &iov, 1);
}

/*
 * Reads tenant/name's key file into *buf (malloc'd), checking only its
 * size.  -1 with ENOENT if the chain has none.
 */
int
repo_keychain_read(struct repo *r, const char *tenant, const char *name,
    uint8_t **buf, size_t *len)
{
	struct be_obj	 o;
	char		 key[REPO_KEY_MAX];
	int		 save;

	if (!repo_name_ok(tenant) || !repo_name_ok(name) ||
	    repo_key(key, sizeof(key), "tenants/%s/points/%s/keychain", tenant,
	    name) == -1 || be_open(r, key, &o) == -1)
		return -1;
	if (o.bo_size == 0 || o.bo_size > KEYCHAIN_FILE_MAX) {
		be_close(&o);
		errno = EBADMSG;
		return -1;
	}
	if ((*buf = malloc(o.bo_size)) == NULL ||
	    be_read(&o, 0, *buf, o.bo_size) == -1) {
		save = errno;
		free(*buf);
		*buf = NULL;
		be_close(&o);
		errno = save;
		return -1;
	}
	*len = o.bo_size;
	be_close(&o);
	return 0;
}

/* Records how the source read the disk and the bitmap it tracks with. */
void
repo_job_set_source(struct repo_job *j, const char *transport,
    const char *dirty_bitmap)
{
	snprintf(j->j_transport, sizeof(j->j_transport), "%s",
	    transport != NULL ? transport : "");
	snprintf(j->j_dirty_bitmap, sizeof(j->j_dirty_bitmap), "%s",
	    dirty_bitmap != NULL ? dirty_bitmap : "");
}

/*
 * Pruning (target-transporter prune, with the repository's lock: no job
 * runs meanwhile).  A pruned point's manifest is renamed <id>.pruned:
 * the point is gone at once (a point exists iff its manifest does), and
 * the bytes its successor was chained to stay as its tombstone, which
 * tells a pruned predecessor from a lost one.  Nothing is rewritten.
 * Chunks no index or journal of the tenant names are then removed.
 */

/*
 * 1 if p's predecessor was pruned: its tombstone is the manifest p was
 * chained to, one sequence number lower.  0 otherwise.
 */
int
repo_point_pruned(struct repo *r, const char *tenant,
    const struct repo_point *p)
{
	struct repo_point	 t;
	uint8_t			 digest[CHUNK_ID_LEN];
	int			 yes;

	if (p->rp_previous_id[0] == '\0' || manifest_load_file(r, tenant,
	    p->rp_name, p->rp_previous_id, "pruned", &t, digest, NULL) == -1)
		return 0;
	yes = memcmp(t.rp_digest, p->rp_previous_digest, CHUNK_ID_LEN) == 0 &&
	    t.rp_sequence + 1 == p->rp_sequence;
	repo_point_clear(&t);
	return yes;
}

/* 1 if tenant/name/id was pruned (its tombstone is there), else 0. */
int
repo_point_was_pruned(struct repo *r, const char *tenant, const char *name,
    const char *id)
{
	char	 key[REPO_KEY_MAX];

	return repo_name_ok(tenant) && repo_name_ok(name) && point_id_ok(id) &&
	    repo_key(key, sizeof(key), "tenants/%s/points/%s/%s.pruned",
	    tenant, name, id) == 0 && be_exists(r, key) == 1;
}

/*
 * Prunes tenant/name/id: its manifest becomes its tombstone, then its
 * index goes; durable when it returns.  A prune cut off between the two
 * is finished by the next (the index of a tombstone goes).  0, or -1
 * with errno.
 */
int
repo_point_prune(struct repo *r, const char *tenant, const char *name,
    const char *id)
{
	char	 dir[REPO_KEY_MAX], from[REPO_KEY_MAX], to[REPO_KEY_MAX];
	char	 ix[REPO_KEY_MAX];

	if (r->r_readonly || !repo_name_ok(tenant) || !repo_name_ok(name) ||
	    !point_id_ok(id)) {
		errno = EINVAL;
		return -1;
	}
	if (repo_key(dir, sizeof(dir), "tenants/%s/points/%s", tenant,
	    name) == -1 ||
	    repo_key(from, sizeof(from), "%s/%s.manifest", dir, id) == -1 ||
	    repo_key(to, sizeof(to), "%s/%s.pruned", dir, id) == -1 ||
	    repo_key(ix, sizeof(ix), "%s/%s.index", dir, id) == -1)
		return -1;
	if (renameat(r->r_fd, from, r->r_fd, to) == -1 && (errno != ENOENT ||
	    be_exists(r, to) != 1))
		return -1;
	if (be_sync_dir(r, dir) == -1 || be_remove(r, ix) == -1)
		return -1;
	return be_sync_dir(r, dir);
}

struct prune_walk {
	struct repo	*pw_repo;
	char		 pw_dir[REPO_KEY_MAX];
	int		 (*pw_cb)(void *, const uint8_t *, uint64_t);
	void		*pw_arg;
	const uint8_t	*pw_keep;	/* sorted chunk ids */
	size_t		 pw_nkeep;
	struct sweep_keys *pw_keys;	/* or NULL */
	int		 pw_dry_run;
	int		 pw_removed;	/* in pw_dir */
	uint64_t	 pw_files;
	uint64_t	 pw_bytes;
};

/* The index of a tombstone left by a prune that was cut off. */
static int
prune_leftover_cb(void *arg, const char *file)
{
	struct prune_walk	*pw = arg;
	char			 id[POINT_ID_LEN + 1], key[REPO_KEY_MAX];

	if (strlen(file) != POINT_ID_LEN + strlen(".pruned") ||
	    strcmp(file + POINT_ID_LEN, ".pruned") != 0)
		return 0;
	memcpy(id, file, POINT_ID_LEN);
	id[POINT_ID_LEN] = '\0';
	if (!point_id_ok(id) || repo_key(key, sizeof(key), "%s/%s.manifest",
	    pw->pw_dir, id) == -1 || be_exists(pw->pw_repo, key) != 0 ||
	    repo_key(key, sizeof(key), "%s/%s.index", pw->pw_dir, id) == -1 ||
	    be_exists(pw->pw_repo, key) != 1)
		return 0;
	if (!pw->pw_dry_run && be_remove(pw->pw_repo, key) == -1)
		return -1;
	pw->pw_removed = 1;
	return 0;
}

/* Removes the indexes of tenant/name's tombstones.  0, or -1. */
int
repo_prune_leftovers(struct repo *r, const char *tenant, const char *name)
{
	struct prune_walk	 pw;

	memset(&pw, 0, sizeof(pw));
	pw.pw_repo = r;
	if (r->r_readonly || !repo_name_ok(tenant) || !repo_name_ok(name)) {
		errno = EINVAL;
		return -1;
	}
	if (repo_key(pw.pw_dir, sizeof(pw.pw_dir), "tenants/%s/points/%s",
	    tenant, name) == -1)
		return -1;
	if (be_list(r, pw.pw_dir, prune_leftover_cb, &pw) == -1)
		return errno == ENOENT ? 0 : -1;
	return pw.pw_removed ? be_sync_dir(r, pw.pw_dir) : 0;
}

static int
prune_journal_cb(void *arg, const char *job)
{
	struct prune_walk	*pw = arg;
	char			 key[REPO_KEY_MAX];
	struct journal		 jn;
	int			 rv;

	if (!point_id_ok(job) || repo_key(key, sizeof(key), "%s/%s/"
	    JOURNAL_NAME, pw->pw_dir, job) == -1)
		return 0;
	if (journal_read(pw->pw_repo, key, NULL, 0, 0, &jn) == -1)
		return errno == ENOENT || errno == EBADMSG ? 0 : -1;
	rv = pw->pw_cb(pw->pw_arg, jn.jn_ids, jn.jn_blocks);
	journal_free(&jn);
	return rv;
}

/*
 * Calls cb(arg, ids, n) with the chunk ids of every interrupted job of
 * tenant that can resume (a damaged journal never resumes, so it is
 * skipped).  0, or -1 with errno (or cb's -1).
 */
int
repo_journal_ids(struct repo *r, const char *tenant,
    int (*cb)(void *, const uint8_t *, uint64_t), void *arg)
{
	struct prune_walk	 pw;

	memset(&pw, 0, sizeof(pw));
	pw.pw_repo = r;
	pw.pw_cb = cb;
	pw.pw_arg = arg;
	if (!repo_name_ok(tenant)) {
		errno = EINVAL;
		return -1;
	}
	if (repo_key(pw.pw_dir, sizeof(pw.pw_dir), "tenants/%s/tmp",
	    tenant) == -1)
		return -1;
	if (be_list(r, pw.pw_dir, prune_journal_cb, &pw) == -1)
		return errno == ENOENT ? 0 : -1;
	return 0;
}

/*
 * At rest: marks the key a kept chunk (at key) is sealed under, if it
 * is one of sk_ids.  A chunk whose header does not read counts in
 * sk_unknown: which key it needs is not known.
 */
static void
sweep_note_key(struct prune_walk *pw, const char *key)
{
	struct sweep_keys	*sk = pw->pw_keys;
	uint8_t			 kid[KEY_ID_LEN];
	const uint8_t		*id;

	if (sk->sk_left == 0)
		return;		/* every key is used already */
	switch (chunk_seal_key(pw->pw_repo, key, kid)) {
	case -1:
		if (errno != ENOENT)
			sk->sk_unknown++;
		return;
	case 0:
		return;
	}
	if ((id = bsearch(kid, sk->sk_ids, sk->sk_n, KEY_ID_LEN,
	    key_id_cmp)) != NULL && !sk->sk_used[(id - sk->sk_ids) /
	    KEY_ID_LEN]) {
		sk->sk_used[(id - sk->sk_ids) / KEY_ID_LEN] = 1;
		sk->sk_left--;
	}
}

static int
sweep_file_cb(void *arg, const char *file)
{
	struct prune_walk	*pw = arg;
	uint8_t			 id[CHUNK_ID_LEN];
	char			 hex[2 * CHUNK_ID_LEN + 1], key[REPO_KEY_MAX];
	struct stat		 st;
	int			 keep;

	/* Only what the repository names a chunk; anything else stays. */
	if (hex_decode(file, id, sizeof(id)) == -1)
		return 0;
	id_hex(id, hex);
	if (strcmp(hex, file) != 0 || repo_key(key, sizeof(key), "%s/%s",
	    pw->pw_dir, file) == -1)
		return 0;
	keep = bsearch(id, pw->pw_keep, pw->pw_nkeep, CHUNK_ID_LEN,
	    chunk_id_cmp) != NULL;
	if (keep && pw->pw_keys != NULL)
		sweep_note_key(pw, key);
	if (keep)
		return 0;
	if (fstatat(pw->pw_repo->r_fd, key, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISREG(st.st_mode) || strncmp(file, pw->pw_dir +
	    strlen(pw->pw_dir) - 2, 2) != 0)
		return 0;
	if (!pw->pw_dry_run && be_remove(pw->pw_repo, key) == -1)
		return -1;
	pw->pw_removed = 1;
	pw->pw_files++;
	pw->pw_bytes += (uint64_t)st.st_size;
	return 0;
}

static int
sweep_dir_cb(void *arg, const char *sub)
{
	struct prune_walk	*pw = arg;
	size_t			 len = strlen(pw->pw_dir);
	int			 rv;

	if (strlen(sub) != 2 || repo_key(pw->pw_dir + len,
	    sizeof(pw->pw_dir) - len, "/%s", sub) == -1)
		return 0;
	pw->pw_removed = 0;
	rv = be_list(pw->pw_repo, pw->pw_dir, sweep_file_cb, pw);
	if (rv == 0 && pw->pw_removed && !pw->pw_dry_run)
		rv = be_sync_dir(pw->pw_repo, pw->pw_dir);
	pw->pw_dir[len] = '\0';
	return rv == -1 && errno == ENOTDIR ? 0 : rv;
}

/*
 * Removes every chunk of tenant whose id is not among the nkeep sorted
 * ids at keep (with dry_run, only counts them): *files of them, *bytes
 * on disk.  With keys (may be NULL), also marks which of its key ids
 * the chunks that stay are sealed under.  0, or -1 with errno (what was
 * removed stays removed).
 */
int
repo_chunks_sweep(struct repo *r, const char *tenant, const uint8_t *keep,
    size_t nkeep, int dry_run, struct sweep_keys *keys, uint64_t *files,
    uint64_t *bytes)
{
	struct prune_walk	 pw;
	int			 rv;

	memset(&pw, 0, sizeof(pw));
	pw.pw_repo = r;
	pw.pw_keep = keep;
	pw.pw_nkeep = nkeep;
	pw.pw_dry_run = dry_run;
	pw.pw_keys = keys;
	*files = *bytes = 0;
	if ((r->r_readonly && !dry_run) || !repo_name_ok(tenant)) {
		errno = EINVAL;
		return -1;
	}
	if (repo_key(pw.pw_dir, sizeof(pw.pw_dir), "tenants/%s/chunks",
	    tenant) == -1)
		return -1;
	rv = be_list(r, pw.pw_dir, sweep_dir_cb, &pw);
	*files = pw.pw_files;
	*bytes = pw.pw_bytes;
	return rv == -1 && errno == ENOENT ? 0 : rv;
}
