/*
 * log.c: logging to stderr (foreground) or syslog (daemon).
 *
 * Worker threads log too: every message is formatted into a local
 * buffer and written with a single call, so lines never interleave.
 */
#include <sys/types.h>

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common.h"

#define LOG_LINE_MAX	4096
#define LOG_SSL_MAX	1024

static const char	*log_progname;
static int		 log_foreground = 1;
static atomic_int	 log_verbose;

static size_t	 log_append(char *, size_t, size_t, const char *, ...)
		    __attribute__((format(printf, 4, 5)));
static size_t	 log_vappend(char *, size_t, size_t, const char *, va_list)
		    __attribute__((format(printf, 4, 0)));
static void	 log_vemit(int, const char *, const char *, va_list)
		    __attribute__((format(printf, 3, 0)));

/*
 * Sets the program name and destination.  Called once at start-up,
 * before any thread is started; progname must outlive the program.
 */
void
log_init(const char *progname, int foreground, int verbose)
{
	log_progname = progname;
	log_foreground = foreground;
	atomic_store(&log_verbose, verbose);
	if (!foreground)
		openlog(progname, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

/* Turns debug messages on or off; safe from any thread. */
void
log_setverbose(int verbose)
{
	atomic_store(&log_verbose, verbose);
}

/*
 * Formats into buf at offset off, never past len - 1, and returns the
 * new offset (clamped on truncation).
 */
static size_t
log_vappend(char *buf, size_t len, size_t off, const char *fmt, va_list ap)
{
	int	 n;

	if (len == 0 || off >= len - 1)
		return off;
	n = vsnprintf(buf + off, len - off, fmt, ap);
	if (n < 0) {
		buf[off] = '\0';
		return off;
	}
	if ((size_t)n >= len - off)
		return len - 1;
	return off + (size_t)n;
}

static size_t
log_append(char *buf, size_t len, size_t off, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	off = log_vappend(buf, len, off, fmt, ap);
	va_end(ap);
	return off;
}

/*
 * Formats one message, followed by ": suffix" when suffix is not NULL,
 * and writes it in one call.  Control characters in the message (which
 * may quote a peer) are replaced so that nobody can forge log lines.
 */
static void
log_vemit(int pri, const char *suffix, const char *fmt, va_list ap)
{
	char		 buf[LOG_LINE_MAX];
	const char	*name;
	size_t		 off = 0, start, i;
	ssize_t		 n;

	if (log_foreground) {
		name = log_progname != NULL ? log_progname :
		    program_invocation_short_name;
		off = log_append(buf, sizeof(buf), off, "%s: ", name);
	}
	start = off;
	off = log_vappend(buf, sizeof(buf), off, fmt, ap);
	if (suffix != NULL)
		off = log_append(buf, sizeof(buf), off, ": %s", suffix);
	for (i = start; i < off; i++) {
		if ((unsigned char)buf[i] < 0x20 && buf[i] != '\t')
			buf[i] = '?';
		else if (buf[i] == 0x7f)
			buf[i] = '?';
	}

	if (!log_foreground) {
		syslog(pri, "%s", buf);
		return;
	}
	/* Room for the newline: truncate the message if need be. */
	if (off >= sizeof(buf) - 1)
		off = sizeof(buf) - 2;
	buf[off++] = '\n';
	do {
		n = write(STDERR_FILENO, buf, off);
	} while (n == -1 && errno == EINTR);
}

/* Logs a warning followed by ": strerror(errno)"; preserves errno. */
void
log_warn(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vemit(LOG_WARNING, strerror(saved), fmt, ap);
	va_end(ap);
	errno = saved;
}

/* Logs a warning; preserves errno. */
void
log_warnx(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vemit(LOG_WARNING, NULL, fmt, ap);
	va_end(ap);
	errno = saved;
}

/* Logs an informational message; preserves errno. */
void
log_info(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vemit(LOG_INFO, NULL, fmt, ap);
	va_end(ap);
	errno = saved;
}

/* Logs a debug message, only when verbose; preserves errno. */
void
log_debug(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	if (!atomic_load(&log_verbose))
		return;
	va_start(ap, fmt);
	log_vemit(LOG_DEBUG, NULL, fmt, ap);
	va_end(ap);
	errno = saved;
}

/*
 * Logs a warning followed by the OpenSSL error queue of this thread,
 * which it drains.  The one helper for reporting OpenSSL failures.
 */
void
log_ssl(const char *fmt, ...)
{
	char	 errs[LOG_SSL_MAX];
	va_list	 ap;
	int	 saved = errno;

	if (ssl_error_string(errs, sizeof(errs)) == 0)
		(void)snprintf(errs, sizeof(errs), "no OpenSSL error reported");
	va_start(ap, fmt);
	log_vemit(LOG_WARNING, errs, fmt, ap);
	va_end(ap);
	errno = saved;
}

/* Logs a message with ": strerror(errno)" and exits with EXIT_ERROR. */
void
fatal(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vemit(LOG_CRIT, strerror(saved), fmt, ap);
	va_end(ap);
	exit(EXIT_ERROR);
}

/* Logs a message and exits with EXIT_ERROR. */
void
fatalx(const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	log_vemit(LOG_CRIT, NULL, fmt, ap);
	va_end(ap);
	exit(EXIT_ERROR);
}

/*
 * Drains this thread's OpenSSL error queue into buf, entries joined
 * with "; ", and returns the length written (excluding the NUL).  The
 * whole queue is drained even when buf is too small.
 */
size_t
ssl_error_string(char *buf, size_t len)
{
	char		 one[256];
	const char	*data, *sep = "";
	unsigned long	 e;
	size_t		 off = 0;
	int		 flags;

	if (len > 0)
		buf[0] = '\0';
	while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
		ERR_error_string_n(e, one, sizeof(one));
		if (data != NULL && *data != '\0' && (flags & ERR_TXT_STRING))
			off = log_append(buf, len, off, "%s%s (%s)", sep, one,
			    data);
		else
			off = log_append(buf, len, off, "%s%s", sep, one);
		sep = "; ";
	}
	return off;
}
