/*
 * conf.c: the INI-style configuration parser and the value helpers the
 * daemons' configuration code uses.
 *
 *	# comment
 *	; comment
 *	listen = 0.0.0.0:7700		# trailing comment after a blank
 *	[tenant acme]
 *	quota = 2TiB
 *	password = "quoted # not a comment, \" and \\ escaped"
 *
 * The parser checks syntax and reports its errors as "path:line: ...";
 * it hands every key = value to a callback that checks meaning and
 * reports its own errors the same way, with the path its caller passed
 * to conf_parse_file().  Every error is reported, not just the first,
 * so that an administrator can fix a file in one pass.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common.h"

#define CONF_LINE_MAX	4096

struct conf_parser {
	const char	*cp_path;
	conf_cb		 cp_cb;
	void		*cp_arg;
	int		 cp_line;
	int		 cp_errors;
	int		 cp_skip;	/* after a bad header: ignore keys */
	int		 cp_has_section;
	int		 cp_has_arg;
	char		 cp_section[CONF_LINE_MAX + 1];
	char		 cp_section_arg[CONF_LINE_MAX + 1];
};

static void	 conf_error(struct conf_parser *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

/* Reports a syntax error at the current line and counts it. */
static void
conf_error(struct conf_parser *cp, const char *fmt, ...)
{
	char	 msg[256];
	va_list	 ap;

	va_start(ap, fmt);
	(void)vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warnx("%s:%d: %s", cp->cp_path, cp->cp_line, msg);
	cp->cp_errors++;
}

static int
conf_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Characters of section and key names. */
static int
conf_is_name(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

static char *
conf_skip_blanks(char *p)
{
	while (conf_is_blank(*p))
		p++;
	return p;
}

/* True if only blanks and perhaps a '#' comment remain at p. */
static int
conf_at_end(char *p)
{
	p = conf_skip_blanks(p);
	return *p == '\0' || *p == '#';
}

/*
 * Reads one line, without its newline, into buf of size bytes.  Returns
 * 1 for a line, 0 at end of file, -1 on a read error (errno set).  A
 * longer line is consumed whole and flagged in *toolong; a NUL byte is
 * flagged in *nul.
 */
static int
conf_read_line(FILE *fp, char *buf, size_t size, int *toolong, int *nul)
{
	size_t	 len = 0;
	int	 c, any = 0;

	*toolong = *nul = 0;
	while ((c = getc(fp)) != EOF) {
		any = 1;
		if (c == '\n')
			break;
		if (c == '\0')
			*nul = 1;
		if (len < size - 1)
			buf[len++] = (char)c;
		else
			*toolong = 1;
	}
	buf[len] = '\0';
	if (c == EOF && ferror(fp))
		return -1;
	if (len > 0 && buf[len - 1] == '\r')
		buf[len - 1] = '\0';
	return any;
}

/*
 * Unquotes the double-quoted string at p (p[0] == '"') in place, with
 * \" and \\ escapes.  Returns the string and sets *endp past the closing
 * quote, or returns NULL after reporting the error.
 */
static char *
conf_unquote(struct conf_parser *cp, char *p, char **endp)
{
	char	*r = p + 1, *w = p;

	for (;;) {
		if (*r == '\0') {
			conf_error(cp, "unterminated quoted string");
			return NULL;
		}
		if (*r == '"')
			break;
		if (*r == '\\') {
			r++;
			if (*r != '"' && *r != '\\') {
				conf_error(cp, "unknown escape in quoted "
				    "string (only \\\" and \\\\ are known)");
				return NULL;
			}
		}
		*w++ = *r++;
	}
	*endp = r + 1;
	*w = '\0';
	return p;
}

/*
 * Parses "[name]" or "[name arg]" (arg may be quoted) at p and makes it
 * the current section.  Returns 0, or -1 after reporting the error.
 */
static int
conf_header(struct conf_parser *cp, char *p)
{
	char	*name, *arg = NULL, *end, *bare_end = NULL;
	size_t	 len;

	p = conf_skip_blanks(p + 1);
	name = p;
	while (conf_is_name(*p))
		p++;
	if (p == name || (*p != ']' && !conf_is_blank(*p))) {
		if (strchr(p, ']') == NULL)
			conf_error(cp, "section header is missing ']'");
		else
			conf_error(cp, "invalid section name (use letters, "
			    "digits, '.', '_' and '-')");
		return -1;
	}
	len = (size_t)(p - name);
	p = conf_skip_blanks(p);
	if (*p == '"') {
		if ((arg = conf_unquote(cp, p, &end)) == NULL)
			return -1;
		p = conf_skip_blanks(end);
	} else if (*p != ']' && *p != '\0') {
		arg = p;
		while (*p != '\0' && *p != ']' && *p != '"' &&
		    !conf_is_blank(*p))
			p++;
		bare_end = p;
		p = conf_skip_blanks(p);
		if (*p != ']' && *p != '\0') {
			conf_error(cp, "section argument must be one word "
			    "or quoted");
			return -1;
		}
	}
	if (*p != ']') {
		conf_error(cp, "section header is missing ']'");
		return -1;
	}
	if (!conf_at_end(p + 1)) {
		conf_error(cp, "unexpected text after section header");
		return -1;
	}
	/* Terminated last: bare_end may point at the ']' checked above. */
	if (bare_end != NULL)
		*bare_end = '\0';
	memcpy(cp->cp_section, name, len);
	cp->cp_section[len] = '\0';
	cp->cp_has_section = 1;
	cp->cp_has_arg = arg != NULL;
	if (arg != NULL)
		(void)snprintf(cp->cp_section_arg, sizeof(cp->cp_section_arg),
		    "%s", arg);
	return 0;
}

/*
 * Parses "key = value" at p and hands it to the callback.  Returns 0,
 * or -1 after the error was reported (by us or by the callback).
 */
static int
conf_key_value(struct conf_parser *cp, char *p)
{
	char	*key, *keyend, *value, *end, *q;

	key = p;
	while (conf_is_name(*p))
		p++;
	keyend = p;
	p = conf_skip_blanks(p);
	if (keyend == key || *p != '=') {
		conf_error(cp, "expected 'key = value' or '[section]'");
		return -1;
	}
	*keyend = '\0';
	p = conf_skip_blanks(p + 1);
	if (*p == '"') {
		if ((value = conf_unquote(cp, p, &end)) == NULL)
			return -1;
		if (!conf_at_end(end)) {
			conf_error(cp, "unexpected text after closing quote");
			return -1;
		}
	} else {
		value = p;
		/* A '#' starts a comment only after a blank ("a=#b" is "#b"). */
		for (q = p; *q != '\0'; q++)
			if (*q == '#' && conf_is_blank(q[-1]))
				break;
		while (q > value && conf_is_blank(q[-1]))
			q--;
		*q = '\0';
	}
	if (cp->cp_skip)
		return 0;
	if (cp->cp_cb(cp->cp_arg,
	    cp->cp_has_section ? cp->cp_section : NULL,
	    cp->cp_has_arg ? cp->cp_section_arg : NULL,
	    key, value, cp->cp_line) == -1) {
		cp->cp_errors++;
		return -1;
	}
	return 0;
}

/*
 * Parses the configuration file at path, calling cb(arg, section,
 * section_arg, key, value, line) for each key = value; section and
 * section_arg are NULL before the first header and where absent.  The
 * strings are valid during the call only.  cb returns 0, or -1 after
 * reporting its own error as "path:line: ...".  Parsing goes on after
 * errors, so that all of them are reported; keys under a malformed
 * section header are skipped.  Returns 0, or -1 if there was any error
 * (an unreadable file is reported as one line naming it).
 */
int
conf_parse_file(const char *path, conf_cb cb, void *arg)
{
	struct conf_parser	*cp = NULL;
	FILE			*fp = NULL;
	char			 buf[CONF_LINE_MAX + 1];
	char			*p;
	int			 r, toolong, nul, ret = -1;

	if ((fp = fopen(path, "re")) == NULL) {
		log_warnx("%s: cannot read configuration: %s", path,
		    strerror(errno));
		goto fail;
	}
	if ((cp = calloc(1, sizeof(*cp))) == NULL) {
		log_warn("%s: cannot read configuration", path);
		goto fail;
	}
	cp->cp_path = path;
	cp->cp_cb = cb;
	cp->cp_arg = arg;

	while ((r = conf_read_line(fp, buf, sizeof(buf), &toolong,
	    &nul)) == 1) {
		cp->cp_line++;
		if (toolong) {
			conf_error(cp, "line longer than %d characters",
			    CONF_LINE_MAX);
			continue;
		}
		if (nul) {
			conf_error(cp, "NUL byte in line");
			continue;
		}
		p = conf_skip_blanks(buf);
		if (*p == '\0' || *p == '#' || *p == ';')
			continue;
		if (*p == '[')
			cp->cp_skip = conf_header(cp, p) == -1;
		else
			(void)conf_key_value(cp, p);
	}
	if (r == -1) {
		log_warnx("%s: cannot read configuration: %s", path,
		    strerror(errno));
		goto fail;
	}
	if (cp->cp_errors == 0)
		ret = 0;
 fail:
	if (fp != NULL)
		(void)fclose(fp);
	free(cp);
	return ret;
}

/*
 * Parses a byte size: decimal digits, optionally followed (blanks
 * allowed) by a binary unit B, K, KB, KiB, M, MB, MiB, G..., T...
 * (any case; K means 1024).  Returns 0, or -1 on bad syntax or a value
 * that does not fit 64 bits.
 */
int
conf_parse_size(const char *str, uint64_t *out)
{
	static const struct {
		const char	*su_name;
		unsigned int	 su_shift;
	} units[] = {
		{ "", 0 }, { "b", 0 },
		{ "k", 10 }, { "kb", 10 }, { "kib", 10 },
		{ "m", 20 }, { "mb", 20 }, { "mib", 20 },
		{ "g", 30 }, { "gb", 30 }, { "gib", 30 },
		{ "t", 40 }, { "tb", 40 }, { "tib", 40 },
	};
	unsigned long long	 v;
	char			*end;
	size_t			 i;

	if (str == NULL || str[0] < '0' || str[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(str, &end, 10);
	if (errno == ERANGE || v > UINT64_MAX)
		return -1;
	while (conf_is_blank(*end))
		end++;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcasecmp(end, units[i].su_name) != 0)
			continue;
		if (v > (UINT64_MAX >> units[i].su_shift))
			return -1;
		*out = (uint64_t)v << units[i].su_shift;
		return 0;
	}
	return -1;
}

/*
 * Parses a decimal integer in [min, max] (no sign, no blanks).  Returns
 * 0, or -1 on bad syntax, overflow or a value out of range.
 */
int
conf_parse_uint(const char *str, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned long long	 v;
	char			*end;

	if (str == NULL || str[0] < '0' || str[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(str, &end, 10);
	if (errno == ERANGE || *end != '\0' || v > UINT64_MAX ||
	    v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * Parses a duration in seconds: a whole number with an optional unit,
 * s, m, h or d ("90", "90s", "30m", "2h").  Returns 0, or -1 on bad
 * syntax or overflow.
 */
int
conf_parse_duration(const char *str, uint64_t *out)
{
	char		 num[32];
	size_t		 len;
	uint64_t	 v, mult = 1;

	if (str == NULL || (len = strlen(str)) == 0 || len >= sizeof(num))
		return -1;
	memcpy(num, str, len + 1);
	switch (num[len - 1]) {
	case 's':
		break;
	case 'm':
		mult = 60;
		break;
	case 'h':
		mult = 3600;
		break;
	case 'd':
		mult = 86400;
		break;
	default:
		len++;	/* no unit */
		break;
	}
	num[len - 1] = '\0';
	if (conf_parse_uint(num, 0, UINT64_MAX / mult, &v) == -1)
		return -1;
	*out = v * mult;
	return 0;
}

/*
 * Parses yes/no, true/false, on/off, 1/0 (any case) into *out as 1/0.
 * Returns 0, or -1 if str is none of them.
 */
int
conf_parse_bool(const char *str, int *out)
{
	static const char	*yes[] = { "yes", "true", "on", "1" };
	static const char	*no[] = { "no", "false", "off", "0" };
	size_t			 i;

	if (str == NULL)
		return -1;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(str, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(str, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/*
 * Splits "host:port", "[v6addr]:port", "[v6addr]", "host" or a bare
 * IPv6 address (two colons or more, no port) into a malloc'd host and
 * port (NULL when absent); the caller frees both.  The port must be a
 * number 0..65535.  Returns 0, or -1 with both set to NULL.
 */
int
conf_split_hostport(const char *str, char **hostp, char **portp)
{
	const char	*host, *port = NULL, *colon, *p;
	uint64_t	 num;
	size_t		 hostlen;

	*hostp = NULL;
	*portp = NULL;
	if (str == NULL)
		goto fail;
	if (str[0] == '[') {
		host = str + 1;
		if ((p = strchr(host, ']')) == NULL)
			goto fail;
		hostlen = (size_t)(p - host);
		if (p[1] == ':')
			port = p + 2;
		else if (p[1] != '\0')
			goto fail;
	} else {
		host = str;
		colon = strchr(str, ':');
		if (colon != NULL && strchr(colon + 1, ':') == NULL) {
			hostlen = (size_t)(colon - str);
			port = colon + 1;
		} else
			hostlen = strlen(str);
	}
	if (hostlen == 0)
		goto fail;
	for (p = host; p < host + hostlen; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '[' ||
		    *p == ']' || *p == '/')
			goto fail;
	if (port != NULL && conf_parse_uint(port, 0, 65535, &num) == -1)
		goto fail;
	if ((*hostp = strndup(host, hostlen)) == NULL)
		goto fail;
	if (port != NULL && (*portp = strdup(port)) == NULL)
		goto fail;
	return 0;
 fail:
	free(*hostp);
	*hostp = NULL;
	return -1;
}

/*
 * Checks that a private key file exists, is a regular file (symbolic
 * links are followed) and cannot be read or written by group or others.
 * Returns 0, or -1 with a one-line reason and remedy in err.
 */
int
conf_check_key_file(const char *path, char *err, size_t errlen)
{
	struct stat	 st;
	const char	*how;
	mode_t		 r, w;

	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (stat(path, &st) == -1) {
		if (err != NULL)
			(void)snprintf(err, errlen, "key file %s: %s", path,
			    strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		if (err != NULL)
			(void)snprintf(err, errlen, "key file %s is not a "
			    "regular file", path);
		return -1;
	}
	r = st.st_mode & (S_IRGRP | S_IROTH);
	w = st.st_mode & (S_IWGRP | S_IWOTH);
	if (r == 0 && w == 0)
		return 0;
	if (r != 0 && w != 0)
		how = "readable and writable";
	else if (r != 0)
		how = "readable";
	else
		how = "writable";
	if (err != NULL)
		(void)snprintf(err, errlen, "key file %s is %s by group or "
		    "others (mode %04o); run: chmod 600 %s", path, how,
		    (unsigned int)(st.st_mode & 07777), path);
	return -1;
}

/*
 * Checks that path is a regular file (symbolic links are followed) this
 * process can read.  Returns 0, or -1 with a one-line reason in err.
 */
int
conf_check_read_file(const char *path, char *err, size_t errlen)
{
	struct stat	 st;

	if (stat(path, &st) == -1 || (S_ISREG(st.st_mode) &&
	    access(path, R_OK) == -1)) {
		(void)snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		(void)snprintf(err, errlen, "%s is not a regular file", path);
		return -1;
	}
	return 0;
}

/*
 * A setting given once: *dst gets a copy of value; a second line for the
 * same key is an error, said as "conf:line: ...".  0, or -1.
 */
int
conf_set_string(const char *conf, int line, const char *key,
    const char *value, char **dst)
{
	if (*dst != NULL) {
		log_warnx("%s:%d: %s is set twice", conf, line, key);
		return -1;
	}
	if ((*dst = strdup(value)) == NULL)
		fatal("strdup");
	return 0;
}

/*
 * A file the daemon reads when it starts (its certificate, key, CA,
 * CRL): *dst gets a copy of value, which must name a file this process
 * can read, and with secret one that group and others cannot read or
 * write.  Errors are said as "conf:line: ...".  0, or -1.
 */
int
conf_set_file(const char *conf, int line, const char *key, const char *value,
    int secret, char **dst)
{
	char	 err[512];

	if (conf_set_string(conf, line, key, value, dst) == -1)
		return -1;
	if ((secret ? conf_check_key_file(value, err, sizeof(err)) :
	    conf_check_read_file(value, err, sizeof(err))) == -1) {
		log_warnx("%s:%d: %s: %s", conf, line, key, err);
		return -1;
	}
	return 0;
}
