/*
 * faultinject.so: a test-only LD_PRELOAD shim that crashes a program, or
 * fails one of its storage calls, at an exact step.  Never linked into
 * the daemons; tests/integration/crashpoints.sh, faults.sh and
 * diskfull.sh preload it into the target.
 *
 * A step is one call of the program's own (through the PLT) to
 *
 *	create	open/openat with O_CREAT
 *	write	write, pwrite, writev, pwritev (and their 64 names)
 *	fsync	fsync/fdatasync of a regular file
 *	dirsync	fsync/fdatasync of a directory
 *	syncfs	syncfs
 *	link	rename, renameat, renameat2, link, linkat (the new name)
 *	unlink	unlink, unlinkat, rmdir
 *	mkdir	mkdir, mkdirat
 *
 * on a path under FAULT_PATH (a file descriptor's path is read from
 * /proc/self/fd, so no descriptor table can go stale).  A create with
 * O_DIRECT is logged as "openat(O_DIRECT)" (or "open(O_DIRECT)").
 * Environment:
 *
 *	FAULT_PATH	directory whose files count (required)
 *	FAULT_PROG	only in a program of this name (default: any)
 *	FAULT_CLASS	comma-separated classes that count (default: all)
 *	FAULT_MATCH	fnmatch(3) pattern the path must match (default *)
 *	FAULT_AT	the counted step that fails (1 = first; 0 = none)
 *	FAULT_TIMES	how many counted steps fail from FAULT_AT on
 *			(default 1; 0: every one after it)
 *	FAULT_ACTION	kill: SIGKILL before the step runs (a crash
 *			exactly there); tear: a write writes half its bytes
 *			(on an O_DIRECT descriptor rounded down to 4 KiB),
 *			then SIGKILL; eio, enospc, einval: the call fails
 *			with that errno and does nothing (einval on a create
 *			with O_DIRECT: a file system without O_DIRECT)
 *	FAULT_LOG	append "N class op path [action]" for each
 *			counted step (counting mode: FAULT_AT unset)
 *
 * Threads: the counter is atomic and the real functions are looked up
 * in the constructor, before the program starts any thread.
 */
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
	FC_CREATE = 1 << 0,
	FC_WRITE = 1 << 1,
	FC_FSYNC = 1 << 2,
	FC_DIRSYNC = 1 << 3,
	FC_SYNCFS = 1 << 4,
	FC_LINK = 1 << 5,
	FC_UNLINK = 1 << 6,
	FC_MKDIR = 1 << 7,
};

static const char *const fc_names[] = {
	"create", "write", "fsync", "dirsync", "syncfs", "link", "unlink",
	"mkdir",
};

enum { FA_NONE, FA_KILL, FA_TEAR, FA_EIO, FA_ENOSPC, FA_EINVAL };

/* FAULT_ACTION's words, by action; the errno of each error action. */
static const char *const fa_names[] = {
	"", "kill", "tear", "eio", "enospc", "einval",
};
static const int fa_errno[] = { 0, 0, 0, EIO, ENOSPC, EINVAL };

static int		 fi_on;
static char		 fi_path[PATH_MAX];
static size_t		 fi_pathlen;
static unsigned		 fi_classes = ~0u;
static char		 fi_match[PATH_MAX] = "*";
static unsigned long	 fi_at, fi_times = 1;
static int		 fi_action = FA_NONE;
static int		 fi_log = -1;
static atomic_ulong	 fi_count;

static int	(*real_open)(const char *, int, ...);
static int	(*real_openat)(int, const char *, int, ...);
static ssize_t	(*real_write)(int, const void *, size_t);
static ssize_t	(*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t	(*real_writev)(int, const struct iovec *, int);
static ssize_t	(*real_pwritev)(int, const struct iovec *, int, off_t);
static int	(*real_fsync)(int);
static int	(*real_fdatasync)(int);
static int	(*real_syncfs)(int);
static int	(*real_rename)(const char *, const char *);
static int	(*real_renameat)(int, const char *, int, const char *);
static int	(*real_renameat2)(int, const char *, int, const char *,
		    unsigned);
static int	(*real_link)(const char *, const char *);
static int	(*real_linkat)(int, const char *, int, const char *, int);
static int	(*real_unlink)(const char *);
static int	(*real_unlinkat)(int, const char *, int);
static int	(*real_rmdir)(const char *);
static int	(*real_mkdir)(const char *, mode_t);
static int	(*real_mkdirat)(int, const char *, mode_t);

static void *
fi_sym(const char *name)
{
	void	*p;

	if ((p = dlsym(RTLD_NEXT, name)) == NULL) {
		fprintf(stderr, "faultinject: no %s\n", name);
		_exit(127);
	}
	return p;
}

static const char *
fi_prog(void)
{
	extern char	*program_invocation_short_name;

	return program_invocation_short_name;
}

/* Looks the real functions up; the constructor calls it first. */
static void
fi_resolve(void)
{
	real_open = fi_sym("open");
	real_openat = fi_sym("openat");
	real_write = fi_sym("write");
	real_pwrite = fi_sym("pwrite");
	real_writev = fi_sym("writev");
	real_pwritev = fi_sym("pwritev");
	real_fsync = fi_sym("fsync");
	real_fdatasync = fi_sym("fdatasync");
	real_syncfs = fi_sym("syncfs");
	real_rename = fi_sym("rename");
	real_renameat = fi_sym("renameat");
	real_renameat2 = fi_sym("renameat2");
	real_link = fi_sym("link");
	real_linkat = fi_sym("linkat");
	real_unlink = fi_sym("unlink");
	real_unlinkat = fi_sym("unlinkat");
	real_rmdir = fi_sym("rmdir");
	real_mkdir = fi_sym("mkdir");
	real_mkdirat = fi_sym("mkdirat");
}

#define RESOLVE(f)	do { if ((f) == NULL) fi_resolve(); } while (0)

__attribute__((constructor)) static void
fi_init(void)
{
	const char	*v;
	char		*end, *tok, *save, buf[256];
	size_t		 i;

	RESOLVE(real_mkdirat);
	if ((v = getenv("FAULT_PATH")) == NULL || v[0] == '\0' ||
	    realpath(v, fi_path) == NULL)
		return;
	fi_pathlen = strlen(fi_path);
	if ((v = getenv("FAULT_PROG")) != NULL && v[0] != '\0' &&
	    strcmp(v, fi_prog()) != 0)
		return;
	if ((v = getenv("FAULT_CLASS")) != NULL && v[0] != '\0' &&
	    strcmp(v, "any") != 0) {
		fi_classes = 0;
		snprintf(buf, sizeof(buf), "%s", v);
		for (tok = strtok_r(buf, ",", &save); tok != NULL;
		    tok = strtok_r(NULL, ",", &save)) {
			for (i = 0; i < sizeof(fc_names) / sizeof(*fc_names);
			    i++)
				if (strcmp(tok, fc_names[i]) == 0)
					break;
			if (i == sizeof(fc_names) / sizeof(*fc_names)) {
				fprintf(stderr, "faultinject: bad class %s\n",
				    tok);
				_exit(127);
			}
			fi_classes |= 1u << i;
		}
	}
	if ((v = getenv("FAULT_MATCH")) != NULL && v[0] != '\0')
		snprintf(fi_match, sizeof(fi_match), "%s", v);
	if ((v = getenv("FAULT_AT")) != NULL && v[0] != '\0')
		fi_at = strtoul(v, &end, 10);
	if ((v = getenv("FAULT_TIMES")) != NULL && v[0] != '\0')
		fi_times = strtoul(v, &end, 10);
	if ((v = getenv("FAULT_ACTION")) != NULL && v[0] != '\0') {
		for (i = 1; i < sizeof(fa_names) / sizeof(*fa_names); i++)
			if (strcmp(v, fa_names[i]) == 0)
				break;
		if (i == sizeof(fa_names) / sizeof(*fa_names)) {
			fprintf(stderr, "faultinject: bad action %s\n", v);
			_exit(127);
		}
		fi_action = (int)i;
	}
	if ((v = getenv("FAULT_LOG")) != NULL && v[0] != '\0')
		fi_log = real_open(v, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
		    0600);
	fi_on = 1;
}

/* The path of fd, or "" (sockets, pipes, anything unreadable). */
static void
fd_path(int fd, char *out, size_t len)
{
	char	 link[64];
	ssize_t	 n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	if ((n = readlink(link, out, len - 1)) <= 0)
		n = 0;
	out[n] = '\0';
}

/* The absolute path of (dirfd, path). */
static void
at_path(int dirfd, const char *path, char *out, size_t len)
{
	char	 dir[PATH_MAX];

	if (path == NULL) {
		out[0] = '\0';
		return;
	}
	if (path[0] == '/') {
		snprintf(out, len, "%s", path);
		return;
	}
	if (dirfd == AT_FDCWD) {
		if (getcwd(dir, sizeof(dir)) == NULL)
			dir[0] = '\0';
	} else
		fd_path(dirfd, dir, sizeof(dir));
	snprintf(out, len, "%s/%s", dir, path);
}

static int
under(const char *p)
{
	return strncmp(p, fi_path, fi_pathlen) == 0 &&
	    (p[fi_pathlen] == '/' || p[fi_pathlen] == '\0');
}

static int
fd_is_dir(int fd)
{
	struct stat	 st;

	return fstat(fd, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * Decides a step: FA_NONE to let it run, or the action to take now.
 * Kill is done here; the caller does tear and the errors.
 */
static int
step(int class, const char *op, const char *path)
{
	unsigned long	 n;
	char		 line[PATH_MAX + 128];
	int		 act = FA_NONE, len, i;

	if (!fi_on || (fi_classes & class) == 0 || !under(path) ||
	    fnmatch(fi_match, path, 0) != 0)
		return FA_NONE;
	n = atomic_fetch_add(&fi_count, 1) + 1;
	if (fi_at != 0 && n >= fi_at && (fi_times == 0 || n - fi_at < fi_times))
		act = fi_action;
	if (fi_log != -1) {
		for (i = 0; (1 << i) != class; i++)
			;
		len = snprintf(line, sizeof(line), "%lu %s %s %s%s%s\n", n,
		    fc_names[i], op, path, act != FA_NONE ? " " : "",
		    fa_names[act]);
		if (len > 0)
			(void)real_write(fi_log, line,
			    (size_t)len < sizeof(line) ? (size_t)len :
			    sizeof(line) - 1);
	}
	if (act == FA_KILL) {
		kill(getpid(), SIGKILL);
		for (;;)
			pause();
	}
	return act;
}

static void
fi_die(void)
{
	kill(getpid(), SIGKILL);
	for (;;)
		pause();
}

/* -1 with errno for an error action, else 0. */
static int
fail(int act)
{
	if (fa_errno[act] != 0) {
		errno = fa_errno[act];
		return -1;
	}
	return 0;
}

static int
fd_step(int class, const char *op, int fd)
{
	char	 p[PATH_MAX];

	RESOLVE(real_mkdirat);
	if (!fi_on)
		return FA_NONE;
	fd_path(fd, p, sizeof(p));
	return step(class, op, p);
}

static int
at_step(int class, const char *op, int dirfd, const char *path)
{
	char	 p[PATH_MAX];

	RESOLVE(real_mkdirat);
	if (!fi_on)
		return FA_NONE;
	at_path(dirfd, path, p, sizeof(p));
	return step(class, op, p);
}

/* open and openat: only a create is a step. */
static int
open_common(int dirfd, const char *path, int flags, mode_t mode, int at)
{
	int	 act;

	RESOLVE(real_mkdirat);
	if ((flags & O_CREAT) != 0) {
		act = at_step(FC_CREATE, (flags & O_DIRECT) != 0 ?
		    (at ? "openat(O_DIRECT)" : "open(O_DIRECT)") :
		    (at ? "openat" : "open"), dirfd, path);
		if (fail(act) == -1)
			return -1;
	}
	return at ? real_openat(dirfd, path, flags, mode) :
	    real_open(path, flags, mode);
}

#define MODE_ARG(flags, mode) do {					\
	va_list	 ap;							\
	if ((flags) & (O_CREAT | __O_TMPFILE)) {			\
		va_start(ap, flags);					\
		mode = va_arg(ap, int);					\
		va_end(ap);						\
	}								\
} while (0)

int open(const char *, int, ...);
int open64(const char *, int, ...);
int openat(int, const char *, int, ...);
int openat64(int, const char *, int, ...);
int __open_2(const char *, int);
int __open64_2(const char *, int);
int __openat_2(int, const char *, int);
int __openat64_2(int, const char *, int);

int
open(const char *path, int flags, ...)
{
	mode_t	 mode = 0;

	MODE_ARG(flags, mode);
	return open_common(AT_FDCWD, path, flags, mode, 0);
}

int
open64(const char *path, int flags, ...)
{
	mode_t	 mode = 0;

	MODE_ARG(flags, mode);
	return open_common(AT_FDCWD, path, flags, mode, 0);
}

int
openat(int dirfd, const char *path, int flags, ...)
{
	mode_t	 mode = 0;

	MODE_ARG(flags, mode);
	return open_common(dirfd, path, flags, mode, 1);
}

int
openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t	 mode = 0;

	MODE_ARG(flags, mode);
	return open_common(dirfd, path, flags, mode, 1);
}

int
__open_2(const char *path, int flags)
{
	return open_common(AT_FDCWD, path, flags, 0, 0);
}

int
__open64_2(const char *path, int flags)
{
	return open_common(AT_FDCWD, path, flags, 0, 0);
}

int
__openat_2(int dirfd, const char *path, int flags)
{
	return open_common(dirfd, path, flags, 0, 1);
}

int
__openat64_2(int dirfd, const char *path, int flags)
{
	return open_common(dirfd, path, flags, 0, 1);
}

/*
 * Half of len for a tear; on an O_DIRECT descriptor rounded down to 4 KiB,
 * so that the kernel takes the half instead of refusing it (EINVAL).
 */
static size_t
tear_len(int fd, size_t len)
{
	int	 fl = fcntl(fd, F_GETFL);

	return fl != -1 && (fl & O_DIRECT) != 0 ? (len / 2) & ~(size_t)4095 :
	    len / 2;
}

ssize_t
write(int fd, const void *buf, size_t len)
{
	int	 act = fd_step(FC_WRITE, "write", fd);

	if (act == FA_TEAR) {
		(void)real_write(fd, buf, tear_len(fd, len));
		fi_die();
	}
	if (fail(act) == -1)
		return -1;
	return real_write(fd, buf, len);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	int	 act = fd_step(FC_WRITE, "pwrite", fd);

	if (act == FA_TEAR) {
		(void)real_pwrite(fd, buf, tear_len(fd, len), off);
		fi_die();
	}
	if (fail(act) == -1)
		return -1;
	return real_pwrite(fd, buf, len, off);
}

ssize_t pwrite64(int, const void *, size_t, off_t);
ssize_t
pwrite64(int fd, const void *buf, size_t len, off_t off)
{
	return pwrite(fd, buf, len, off);
}

ssize_t
writev(int fd, const struct iovec *iov, int n)
{
	int	 act = fd_step(FC_WRITE, "writev", fd);

	if (act == FA_TEAR) {
		if (n > 0)
			(void)real_write(fd, iov[0].iov_base,
			    iov[0].iov_len / 2);
		fi_die();
	}
	if (fail(act) == -1)
		return -1;
	return real_writev(fd, iov, n);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
	int	 act = fd_step(FC_WRITE, "pwritev", fd);

	if (act == FA_TEAR) {
		if (n > 0)
			(void)real_pwrite(fd, iov[0].iov_base,
			    iov[0].iov_len / 2, off);
		fi_die();
	}
	if (fail(act) == -1)
		return -1;
	return real_pwritev(fd, iov, n, off);
}

ssize_t pwritev64(int, const struct iovec *, int, off_t);
ssize_t
pwritev64(int fd, const struct iovec *iov, int n, off_t off)
{
	return pwritev(fd, iov, n, off);
}

int
fsync(int fd)
{
	int	 dir = fi_on && fd_is_dir(fd);

	if (fail(fd_step(dir ? FC_DIRSYNC : FC_FSYNC, "fsync", fd)) == -1)
		return -1;
	return real_fsync(fd);
}

int
fdatasync(int fd)
{
	int	 dir = fi_on && fd_is_dir(fd);

	if (fail(fd_step(dir ? FC_DIRSYNC : FC_FSYNC, "fdatasync",
	    fd)) == -1)
		return -1;
	return real_fdatasync(fd);
}

int
syncfs(int fd)
{
	if (fail(fd_step(FC_SYNCFS, "syncfs", fd)) == -1)
		return -1;
	return real_syncfs(fd);
}

int
rename(const char *from, const char *to)
{
	if (fail(at_step(FC_LINK, "rename", AT_FDCWD, to)) == -1)
		return -1;
	return real_rename(from, to);
}

int
renameat(int fromfd, const char *from, int tofd, const char *to)
{
	if (fail(at_step(FC_LINK, "renameat", tofd, to)) == -1)
		return -1;
	return real_renameat(fromfd, from, tofd, to);
}

int
renameat2(int fromfd, const char *from, int tofd, const char *to,
    unsigned flags)
{
	if (fail(at_step(FC_LINK, "renameat2", tofd, to)) == -1)
		return -1;
	return real_renameat2(fromfd, from, tofd, to, flags);
}

int
link(const char *from, const char *to)
{
	if (fail(at_step(FC_LINK, "link", AT_FDCWD, to)) == -1)
		return -1;
	return real_link(from, to);
}

int
linkat(int fromfd, const char *from, int tofd, const char *to, int flags)
{
	if (fail(at_step(FC_LINK, "linkat", tofd, to)) == -1)
		return -1;
	return real_linkat(fromfd, from, tofd, to, flags);
}

int
unlink(const char *path)
{
	if (fail(at_step(FC_UNLINK, "unlink", AT_FDCWD, path)) == -1)
		return -1;
	return real_unlink(path);
}

int
unlinkat(int dirfd, const char *path, int flags)
{
	if (fail(at_step(FC_UNLINK, "unlinkat", dirfd, path)) == -1)
		return -1;
	return real_unlinkat(dirfd, path, flags);
}

int
rmdir(const char *path)
{
	if (fail(at_step(FC_UNLINK, "rmdir", AT_FDCWD, path)) == -1)
		return -1;
	return real_rmdir(path);
}

int
mkdir(const char *path, mode_t mode)
{
	if (fail(at_step(FC_MKDIR, "mkdir", AT_FDCWD, path)) == -1)
		return -1;
	return real_mkdir(path, mode);
}

int
mkdirat(int dirfd, const char *path, mode_t mode)
{
	if (fail(at_step(FC_MKDIR, "mkdirat", dirfd, path)) == -1)
		return -1;
	return real_mkdirat(dirfd, path, mode);
}
