/*
 * log.c: logging to stderr (foreground) or syslog (daemon), as plain
 * text or as one JSON object per line (log_set_format).
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
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common.h"

#define LOG_LINE_MAX	4096
#define LOG_SSL_MAX	1024
#define LOG_JSON_MAX	(2 * LOG_LINE_MAX)	/* escaped message + fields */

static const char	*log_progname;
static int		 log_foreground = 1;
static atomic_int	 log_verbose;
static atomic_int	 log_json;

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
 * Plain lines (0, the default) or one JSON object per line (1), on
 * stderr and in syslog alike; safe from any thread.
 */
void
log_set_format(int json)
{
	atomic_store(&log_json, json != 0);
}

/*
 * The argument of --log-format: *json set, 0; or -1 after saying on
 * stderr what progname accepts (logging is not set up yet).
 */
int
log_format_arg(const char *progname, const char *arg, int *json)
{
	if (strcmp(arg, "json") == 0 || strcmp(arg, "text") == 0) {
		*json = strcmp(arg, "json") == 0;
		return 0;
	}
	fprintf(stderr, "%s: --log-format must be text or json\n", progname);
	return -1;
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

static const char *
log_level_name(int pri)
{
	switch (pri) {
	case LOG_DEBUG:
		return "debug";
	case LOG_INFO:
		return "info";
	case LOG_WARNING:
		return "warning";
	case LOG_ERR:
		return "error";
	default:
		return "fatal";
	}
}

/*
 * Length of the well-formed UTF-8 sequence at s (at most n bytes), or
 * 0 when it is not one: overlong forms, surrogates and code points
 * past U+10FFFF are refused, as JSON requires.
 */
static size_t
log_utf8_len(const unsigned char *s, size_t n)
{
	uint32_t	 cp;
	size_t		 len, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		cp = s[0] & 0x07;
	} else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
		return 0;
	return len;
}

/*
 * Appends msg[0..len) to buf at off as the body of a JSON string:
 * quotes, backslashes and control characters escaped, bytes that are
 * not UTF-8 replaced by U+FFFD.  Stops before an escape that would not
 * fit in len - reserve, so the caller always has room to close the
 * object.  Returns the new offset.
 */
static size_t
log_json_escape(char *buf, size_t size, size_t off, size_t reserve,
    const char *msg, size_t len)
{
	const unsigned char	*s = (const unsigned char *)msg;
	char			 esc[8];
	const char		*rep;
	size_t			 i = 0, n, k;

	while (i < len) {
		rep = NULL;
		n = 1;
		if (s[i] == '"')
			rep = "\\\"";
		else if (s[i] == '\\')
			rep = "\\\\";
		else if (s[i] == '\n')
			rep = "\\n";
		else if (s[i] == '\r')
			rep = "\\r";
		else if (s[i] == '\t')
			rep = "\\t";
		else if (s[i] < 0x20 || s[i] == 0x7f) {
			(void)snprintf(esc, sizeof(esc), "\\u%04x", s[i]);
			rep = esc;
		} else if (s[i] >= 0x80 &&
		    (n = log_utf8_len(s + i, len - i)) == 0) {
			rep = "\\ufffd";
			n = 1;
		}
		k = rep != NULL ? strlen(rep) : n;
		if (off + k + reserve > size)
			break;
		memcpy(buf + off, rep != NULL ? rep : (const char *)s + i, k);
		off += k;
		i += n;
	}
	return off;
}

/*
 * Writes msg as one JSON object: {"ts", "level", "prog", "session"
 * (when msg starts with "session N"), "msg"}, on one line to stderr,
 * or as the message to syslog.
 */
static void
log_emit_json(int pri, const char *msg, size_t len)
{
	char		 buf[LOG_JSON_MAX], ts[40];
	struct timespec	 now;
	struct tm	 tm;
	const char	*name, *p;
	unsigned long long id = 0;
	size_t		 off;
	ssize_t		 n;
	int		 has_id = 0;

	name = log_progname != NULL ? log_progname :
	    program_invocation_short_name;
	(void)clock_gettime(CLOCK_REALTIME, &now);
	if (gmtime_r(&now.tv_sec, &tm) == NULL ||
	    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
		(void)snprintf(ts, sizeof(ts), "1970-01-01T00:00:00");
	/* Session lines start with "session N"; N becomes a field. */
	if (strncmp(msg, "session ", 8) == 0 && msg[8] >= '0' &&
	    msg[8] <= '9') {
		for (p = msg + 8; *p >= '0' && *p <= '9' &&
		    id < 1000000000000000ULL; p++)
			id = id * 10 + (unsigned long long)(*p - '0');
		has_id = (*p == ' ' || *p == ':' || *p == '\0');
	}
	off = log_append(buf, sizeof(buf), 0,
	    "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"prog\":\"", ts,
	    now.tv_nsec / 1000000, log_level_name(pri));
	off = log_json_escape(buf, sizeof(buf), off, 64, name, strlen(name));
	off = log_append(buf, sizeof(buf), off, "\",");
	if (has_id)
		off = log_append(buf, sizeof(buf), off, "\"session\":%llu,",
		    id);
	off = log_append(buf, sizeof(buf), off, "\"msg\":\"");
	/* Reserve room for "}\n and the NUL. */
	off = log_json_escape(buf, sizeof(buf), off, 4, msg, len);
	off = log_append(buf, sizeof(buf), off, "\"}");

	if (!log_foreground) {
		syslog(pri, "%s", buf);
		return;
	}
	buf[off++] = '\n';
	do {
		n = write(STDERR_FILENO, buf, off);
	} while (n == -1 && errno == EINTR);
}

/*
 * Formats one message, followed by ": suffix" when suffix is not NULL,
 * and writes it in one call.  Control characters in a plain message
 * (which may quote a peer) are replaced so that nobody can forge log
 * lines; a JSON message escapes them instead.
 */
static void
log_vemit(int pri, const char *suffix, const char *fmt, va_list ap)
{
	char		 buf[LOG_LINE_MAX];
	const char	*name;
	size_t		 off = 0, start, i;
	ssize_t		 n;

	if (atomic_load(&log_json)) {
		off = log_vappend(buf, sizeof(buf), off, fmt, ap);
		if (suffix != NULL)
			off = log_append(buf, sizeof(buf), off, ": %s",
			    suffix);
		log_emit_json(pri, buf, off);
		return;
	}
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

/* Logs why a command failed (level "error"); preserves errno. */
void
log_errx(const char *fmt, ...)
{
	va_list	 ap;
	int	 saved = errno;

	va_start(ap, fmt);
	log_vemit(LOG_ERR, NULL, fmt, ap);
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
