/*
 * disk.c: the disks a backup reads, behind one interface: a local file
 * or block device read directly (pread, holes from SEEK_DATA and
 * SEEK_HOLE), or an NBD export (nbd.c).  This file chooses the
 * transport from the spec and the options, and enforces the rules of
 * docs/DISKS.md: never plain NBD across a network unless told, never a
 * silent change of transport the operator ruled out.
 */
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <linux/fs.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "source.h"

struct disk {
	char			*dk_spec;	/* for messages */
	enum disk_transport	 dk_transport;	/* DIRECT or NBD */
	int			 dk_fd;		/* direct */
	int			 dk_dfd;	/* direct_io: O_DIRECT, or -1 */
	int			 dk_blockdev;
	atomic_int		 dk_noseek;	/* no SEEK_DATA here */
	struct nbd_disk		*dk_nbd;	/* NBD */
	uint64_t		 dk_size;
	atomic_uint_least64_t	 dk_bytes_read;
};

/* What a spec names. */
enum spec_kind {
	SPEC_PATH,
	SPEC_NBD_URI,
	SPEC_OTHER_URI,
};

static const char	*nbd_schemes[] = {
	"nbd", "nbds", "nbd+unix", "nbds+unix", "nbd+vsock", "nbds+vsock"
};

/* URI or path?  A URI has a scheme followed by "://". */
static enum spec_kind
spec_kind(const char *spec)
{
	size_t	 i, n;

	n = strspn(spec, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
	if (n == 0 || strncmp(spec + n, "://", 3) != 0)
		return SPEC_PATH;
	for (i = 0; i < sizeof(nbd_schemes) / sizeof(nbd_schemes[0]); i++)
		if (strlen(nbd_schemes[i]) == n &&
		    strncmp(spec, nbd_schemes[i], n) == 0)
			return SPEC_NBD_URI;
	return SPEC_OTHER_URI;
}

/*
 * Is host (n bytes, no brackets) a loopback name or address?  Only
 * "localhost", 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 count; any
 * other name may resolve anywhere.
 */
static int
host_is_loopback(const char *host, size_t n)
{
	struct in_addr	 a4;
	struct in6_addr	 a6;
	char		 buf[64];

	if (n == 0)
		return 1;	/* libnbd's default host: localhost */
	if (n >= sizeof(buf))
		return 0;
	memcpy(buf, host, n);
	buf[n] = '\0';
	if (strcasecmp(buf, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, buf, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, buf, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6) ||
		    (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
	return 0;
}

/*
 * Plain nbd:// (TCP without TLS) to a host that is not loopback?  The
 * authority is parsed strictly; anything unusual (percent-encoding,
 * two '@', a bad port) counts as remote, so that nothing slips through
 * a difference between this parser and libnbd's.  Writes the host part
 * into host for the message.
 */
static int
uri_is_insecure(const char *uri, char *host, size_t hostlen)
{
	const char	*auth, *at, *h, *port;
	size_t		 alen, hlen;

	snprintf(host, hostlen, "?");
	if (strncmp(uri, "nbd://", 6) != 0)
		return 0;	/* TLS, Unix socket or vsock */
	auth = uri + 6;
	alen = strcspn(auth, "/?#");
	snprintf(host, hostlen, "%.*s", (int)alen, auth);
	if (strspn(auth, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:[]@") < alen)
		return 1;
	h = auth;
	if ((at = memchr(auth, '@', alen)) != NULL) {
		if (memchr(at + 1, '@', alen - (size_t)(at + 1 - auth)) !=
		    NULL)
			return 1;
		h = at + 1;
	}
	hlen = alen - (size_t)(h - auth);
	snprintf(host, hostlen, "%.*s", (int)hlen, h);
	if (hlen > 0 && h[0] == '[') {
		const char *close = memchr(h, ']', hlen);

		if (close == NULL)
			return 1;
		port = close + 1;
		if (port < h + hlen && *port != ':')
			return 1;
		hlen = (size_t)(close - h) - 1;
		h++;
	} else {
		port = memchr(h, ':', hlen);
		if (port != NULL)
			hlen = (size_t)(port - h);
	}
	if (port != NULL && port < auth + alen) {
		size_t plen = (size_t)(auth + alen - port) - 1;

		if (strspn(port + 1, "0123456789") < plen)
			return 1;
	}
	return !host_is_loopback(h, hlen);
}

/* Does the URI's authority name a user ("nbds://alice@host/")? */
static int
uri_has_user(const char *uri)
{
	const char	*auth = strstr(uri, "://");

	if (auth == NULL)
		return 0;
	auth += 3;
	return memchr(auth, '@', strcspn(auth, "/?#")) != NULL;
}

static const char *
transport_option(enum disk_transport t)
{
	switch (t) {
	case DISK_TRANSPORT_DIRECT:
		return "direct";
	case DISK_TRANSPORT_NBD:
		return "nbd";
	default:
		return "auto";
	}
}

/* Opens a file or block device for direct reads; 0 or -1 after a log. */
static int
disk_open_direct(struct disk *dk, const struct disk_opts *opts)
{
	struct stat	 st;
	uint64_t	 size;

	if ((dk->dk_fd = open(dk->dk_spec, O_RDONLY | O_CLOEXEC)) == -1) {
		log_warnx("cannot open disk %s: %s%s", dk->dk_spec,
		    strerror(errno), errno == EACCES || errno == EPERM ?
		    "; run as a user that may read it" : "");
		return -1;
	}
	if (fstat(dk->dk_fd, &st) == -1) {
		log_warnx("cannot stat disk %s: %s", dk->dk_spec,
		    strerror(errno));
		return -1;
	}
	if (S_ISREG(st.st_mode))
		size = (uint64_t)st.st_size;
	else if (S_ISBLK(st.st_mode)) {
		if (ioctl(dk->dk_fd, BLKGETSIZE64, &size) == -1) {
			log_warnx("cannot get the size of block device %s: %s",
			    dk->dk_spec, strerror(errno));
			return -1;
		}
		dk->dk_blockdev = 1;
	} else {
		log_warnx("disk %s is %s, not a regular file or a block "
		    "device; give a disk image, a block device or an NBD URI",
		    dk->dk_spec, S_ISDIR(st.st_mode) ? "a directory" :
		    "a special file");
		return -1;
	}
	if (size == 0) {
		log_warnx("disk %s is empty (0 bytes); nothing to read",
		    dk->dk_spec);
		return -1;
	}
	dk->dk_size = size;
	dk->dk_transport = DISK_TRANSPORT_DIRECT;
	(void)posix_fadvise(dk->dk_fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	/*
	 * direct_io: aligned reads bypass the page cache (a second
	 * descriptor; the rest, such as a disk's short last block, still
	 * goes through the first).  Not every file system has O_DIRECT.
	 */
	if (opts->do_direct_io) {
		if ((dk->dk_dfd = open(dk->dk_spec, O_RDONLY | O_CLOEXEC |
		    O_DIRECT)) == -1)
			log_warnx("disk %s: no O_DIRECT here (%s); reading "
			    "through the page cache", dk->dk_spec,
			    strerror(errno));
		else
			log_debug("disk %s: reading with O_DIRECT",
			    dk->dk_spec);
	}
	return 0;
}

static int
disk_open_nbd(struct disk *dk, const char *uri, const char *sock,
    const struct disk_opts *opts)
{
	if ((dk->dk_nbd = nbd_disk_open(dk->dk_spec, uri, sock, opts)) == NULL)
		return -1;
	dk->dk_size = nbd_disk_size(dk->dk_nbd);
	dk->dk_transport = DISK_TRANSPORT_NBD;
	return 0;
}

/*
 * Opens the disk named by spec (see docs/DISKS.md for the transport
 * rules).  Returns the disk (disk_close frees it), or NULL after one
 * log line that names the disk and what to do.
 */
struct disk *
disk_open(const char *spec, const struct disk_opts *opts)
{
	static const struct disk_opts	 defaults;
	struct disk	*dk = NULL;
	struct stat	 st;
	char		 host[256];
	enum spec_kind	 kind;

	if (opts == NULL)
		opts = &defaults;
	if (spec == NULL || spec[0] == '\0') {
		log_warnx("no disk given; give a disk image, a block device "
		    "or an NBD URI");
		return NULL;
	}
	if ((dk = calloc(1, sizeof(*dk))) == NULL ||
	    (dk->dk_spec = strdup(spec)) == NULL) {
		log_warnx("disk %s: out of memory", spec);
		goto fail;
	}
	dk->dk_fd = dk->dk_dfd = -1;
	kind = spec_kind(spec);
	switch (kind) {
	case SPEC_OTHER_URI:
		log_warnx("disk %s: unknown URI scheme; give a path or an "
		    "nbd://, nbds://, nbd+unix:// or nbd+vsock:// URI", spec);
		goto fail;
	case SPEC_NBD_URI:
		if (opts->do_transport == DISK_TRANSPORT_DIRECT) {
			log_warnx("disk %s is an NBD URI but --transport "
			    "direct reads only local files and block devices; "
			    "use --transport nbd or auto", spec);
			goto fail;
		}
		if (!opts->do_allow_insecure_nbd &&
		    uri_is_insecure(spec, host, sizeof(host))) {
			log_warnx("disk %s: refusing plain NBD to %s, which is "
			    "not loopback: the disk would cross the network "
			    "unencrypted; use nbds:// (NBD over TLS), or "
			    "--allow-insecure-nbd on a trusted network", spec,
			    host);
			goto fail;
		}
		/* libnbd would fall back to the login name, if any. */
		if (opts->do_tls_psk_file != NULL &&
		    strncmp(spec, "nbds", 4) == 0 && !uri_has_user(spec)) {
			log_warnx("disk %s: a TLS pre-shared key needs its "
			    "identity in the URI, as in nbds://IDENTITY@host/"
			    "export", spec);
			goto fail;
		}
		if (disk_open_nbd(dk, spec, NULL, opts) == -1)
			goto fail;
		return dk;
	case SPEC_PATH:
		break;
	}

	/*
	 * A path: a file or block device is read directly; the Unix
	 * socket of an NBD server is read over NBD, which auto takes as
	 * its fallback when the path is not directly readable.
	 */
	if (stat(spec, &st) == 0 && S_ISSOCK(st.st_mode)) {
		if (opts->do_transport == DISK_TRANSPORT_DIRECT ||
		    (opts->do_transport == DISK_TRANSPORT_AUTO &&
		    opts->do_no_fallback)) {
			log_warnx("disk %s is a Unix socket, not a file or "
			    "block device: --transport %s%s cannot read it; "
			    "use --transport nbd to read the NBD server "
			    "behind it", spec,
			    transport_option(opts->do_transport),
			    opts->do_no_fallback ? " --no-fallback" : "");
			goto fail;
		}
		if (disk_open_nbd(dk, NULL, spec, opts) == -1)
			goto fail;
		return dk;
	}
	if (opts->do_transport == DISK_TRANSPORT_NBD) {
		log_warnx("disk %s is a local path: --transport nbd reads NBD "
		    "exports only (a URI, or an NBD server's Unix socket); "
		    "use --transport direct or auto, or export the disk with "
		    "qemu-nbd and give its URI", spec);
		goto fail;
	}
	if (disk_open_direct(dk, opts) == -1)
		goto fail;
	return dk;
 fail:
	disk_close(dk);
	return NULL;
}

uint64_t
disk_size(const struct disk *dk)
{
	return dk->dk_size;
}

/* "direct", "nbd" or "nbds" (NBD over TLS): what the caller prints. */
const char *
disk_transport_name(const struct disk *dk)
{
	if (dk->dk_transport == DISK_TRANSPORT_DIRECT)
		return "direct";
	return nbd_disk_tls(dk->dk_nbd) ? "nbds" : "nbd";
}

/* Reads len bytes at off from the file, retrying short reads. */
static int
direct_read(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	ssize_t	 n;
	size_t	 done = 0;

	while (done < len) {
		n = pread(fd, buf + done, len - done, (off_t)(off + done));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0) {
			errno = EIO;	/* the disk shrank under us */
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

/*
 * Reads exactly len bytes at off, which must lie within the disk.
 * With direct_io, buf, off and len aligned to DISK_DIRECT_ALIGN read
 * past the page cache.  Safe from several threads at once.  0, or -1
 * with errno.
 */
int
disk_read(struct disk *dk, void *buf, size_t len, uint64_t off)
{
	int	 rv;

	if (off > dk->dk_size || len > dk->dk_size - off) {
		errno = EINVAL;
		return -1;
	}
	if (len == 0)
		return 0;
	if (dk->dk_dfd != -1 && ((uintptr_t)buf | off | len) %
	    DISK_DIRECT_ALIGN == 0) {
		rv = direct_read(dk->dk_dfd, buf, len, off);
		/* Refused (an alignment this device does not take): cached. */
		if (rv == -1 && errno == EINVAL)
			rv = direct_read(dk->dk_fd, buf, len, off);
	} else if (dk->dk_transport == DISK_TRANSPORT_DIRECT)
		rv = direct_read(dk->dk_fd, buf, len, off);
	else
		rv = nbd_disk_read(dk->dk_nbd, buf, len, off);
	if (rv == 0)
		atomic_fetch_add(&dk->dk_bytes_read, len);
	return rv;
}

/* SEEK_DATA and SEEK_HOLE; the whole rest is data where unsupported. */
static int
direct_next_data(struct disk *dk, uint64_t off, uint64_t *start,
    uint64_t *end)
{
	off_t	 data, hole;

	if (dk->dk_blockdev || atomic_load(&dk->dk_noseek))
		goto all;
	if ((data = lseek(dk->dk_fd, (off_t)off, SEEK_DATA)) == -1) {
		if (errno == ENXIO)
			return 1;	/* only a hole is left */
		if (errno != EINVAL && errno != EOPNOTSUPP)
			return -1;
		atomic_store(&dk->dk_noseek, 1);
		goto all;
	}
	if ((uint64_t)data >= dk->dk_size)
		return 1;
	hole = lseek(dk->dk_fd, data, SEEK_HOLE);
	*start = (uint64_t)data;
	*end = hole == -1 || (uint64_t)hole > dk->dk_size ? dk->dk_size :
	    (uint64_t)hole;
	return 0;
 all:
	*start = off;
	*end = dk->dk_size;
	return 0;
}

/*
 * The next extent that may hold data at or after off, as [*start,
 * *end) with off <= *start < *end <= size: 0.  1 if only holes or
 * zeros remain; -1 with errno.  Everything outside the extents reads
 * as zeros.
 */
int
disk_next_data(struct disk *dk, uint64_t off, uint64_t *start, uint64_t *end)
{
	if (off >= dk->dk_size)
		return 1;
	if (dk->dk_transport == DISK_TRANSPORT_DIRECT)
		return direct_next_data(dk, off, start, end);
	return nbd_disk_next_data(dk->dk_nbd, off, start, end);
}

/*
 * Changed-block tracking: the dirty bitmap named by do_dirty_bitmap
 * over the whole disk, one bit per block_size bytes (block b is bit
 * b % 8 of byte b / 8), set where the block changed since the bitmap
 * started.  0 with *map (malloc'd, the caller frees), or -1 with a
 * one-line reason in why: the caller then reads the whole disk.
 * Whether the bitmap belongs to the previous restore point is the
 * caller's to decide.
 */
int
disk_dirty_map(struct disk *dk, uint32_t block_size, uint8_t **map,
    char *why, size_t whylen)
{
	*map = NULL;
	if (dk->dk_transport != DISK_TRANSPORT_NBD) {
		snprintf(why, whylen, "disk %s is read directly, and dirty "
		    "bitmaps come only from an NBD server (qemu-nbd -B NAME)",
		    dk->dk_spec);
		return -1;
	}
	return nbd_disk_dirty_map(dk->dk_nbd, block_size, map, why, whylen);
}

/* Bytes returned by disk_read so far, across all threads. */
uint64_t
disk_bytes_read(const struct disk *dk)
{
	return atomic_load(&dk->dk_bytes_read);
}

/* Closes and frees everything; safe on NULL and half-open disks. */
void
disk_close(struct disk *dk)
{
	if (dk == NULL)
		return;
	if (dk->dk_fd != -1)
		close(dk->dk_fd);
	if (dk->dk_dfd != -1)
		close(dk->dk_dfd);
	dk->dk_fd = dk->dk_dfd = -1;
	nbd_disk_close(dk->dk_nbd);
	dk->dk_nbd = NULL;
	free(dk->dk_spec);
	free(dk);
}
