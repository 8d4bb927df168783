/*
 * test_log.c: foreground log lines, debug gating, errno handling, the
 * OpenSSL error queue helper, and JSON lines (--log-format json) read
 * back with a small parser of flat JSON objects.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "common.h"

static FILE	*capture_file;
static int	 capture_saved = -1;

static void
capture_begin(void)
{
	capture_file = tmpfile();
	assert_non_null(capture_file);
	capture_saved = dup(STDERR_FILENO);
	assert_true(capture_saved != -1);
	assert_true(dup2(fileno(capture_file), STDERR_FILENO) != -1);
}

static void
capture_end(char *out, size_t len)
{
	size_t	 n;

	assert_true(dup2(capture_saved, STDERR_FILENO) != -1);
	assert_int_equal(close(capture_saved), 0);
	rewind(capture_file);
	n = fread(out, 1, len - 1, capture_file);
	out[n] = '\0';
	assert_int_equal(fclose(capture_file), 0);
}

static void
test_lines(void **state)
{
	char	 out[1024];

	log_setverbose(0);
	capture_begin();
	log_warnx("plain %d", 1);
	errno = ENOENT;
	log_warn("open %s", "/x");
	assert_int_equal(errno, ENOENT);
	log_info("info");
	log_debug("hidden");
	log_setverbose(1);
	log_debug("shown");
	log_warnx("evil\nforged line\r");
	capture_end(out, sizeof(out));
	log_setverbose(0);

	assert_string_equal(out,
	    "test_log: plain 1\n"
	    "test_log: open /x: No such file or directory\n"
	    "test_log: info\n"
	    "test_log: shown\n"
	    "test_log: evil?forged line?\n");
}

static void
test_long_line(void **state)
{
	char	 big[10000], out[16384];

	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	capture_begin();
	log_warnx("%s", big);
	capture_end(out, sizeof(out));
	/* Truncated, but still one whole line. */
	assert_true(strlen(out) < sizeof(big));
	assert_true(strlen(out) > 1000);
	assert_int_equal(out[strlen(out) - 1], '\n');
	assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static void
test_ssl_error_string(void **state)
{
	char	 buf[1024], small[8];
	size_t	 n;

	ERR_clear_error();
	assert_int_equal(ssl_error_string(buf, sizeof(buf)), 0);
	assert_string_equal(buf, "");

	/* Two failures: an unknown digest, an unknown cipher. */
	assert_null(EVP_MD_fetch(NULL, "no-such-digest", NULL));
	assert_null(EVP_CIPHER_fetch(NULL, "no-such-cipher", NULL));
	n = ssl_error_string(buf, sizeof(buf));
	assert_int_equal(n, strlen(buf));
	assert_non_null(strstr(buf, "no-such-digest"));
	assert_non_null(strstr(buf, "; "));
	assert_non_null(strstr(buf, "no-such-cipher"));
	/* Drained. */
	assert_int_equal(ERR_peek_error(), 0);

	/* Truncated into a small buffer, still drained. */
	assert_null(EVP_MD_fetch(NULL, "no-such-digest", NULL));
	n = ssl_error_string(small, sizeof(small));
	assert_int_equal(n, sizeof(small) - 1);
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_int_equal(ERR_peek_error(), 0);
}

static void
test_log_ssl(void **state)
{
	char	 out[2048];

	ERR_clear_error();
	assert_null(EVP_MD_fetch(NULL, "no-such-digest", NULL));
	capture_begin();
	log_ssl("loading %s", "digest");
	log_ssl("nothing queued");
	capture_end(out, sizeof(out));
	assert_non_null(strstr(out, "test_log: loading digest: error:"));
	assert_non_null(strstr(out, "no-such-digest"));
	assert_non_null(strstr(out,
	    "test_log: nothing queued: no OpenSSL error reported\n"));
	assert_int_equal(ERR_peek_error(), 0);
}

/*
 * A parser of flat JSON objects, strict enough to catch what a log
 * shipper would choke on: string and integer values only, no
 * whitespace (log.c writes none), escapes decoded to UTF-8, raw
 * control characters refused.
 */
#define JF_MAX		8
#define JF_LEN		8192

struct jfield {
	char	 jf_key[32];
	char	 jf_val[JF_LEN];
	int	 jf_string;
};

static int
json_hex4(const char *p, unsigned int *cp)
{
	int	 i;

	*cp = 0;
	for (i = 0; i < 4; i++) {
		*cp <<= 4;
		if (p[i] >= '0' && p[i] <= '9')
			*cp |= (unsigned int)(p[i] - '0');
		else if (p[i] >= 'a' && p[i] <= 'f')
			*cp |= (unsigned int)(p[i] - 'a' + 10);
		else if (p[i] >= 'A' && p[i] <= 'F')
			*cp |= (unsigned int)(p[i] - 'A' + 10);
		else
			return -1;
	}
	return 0;
}

/* Reads a JSON string at *pp into out; advances *pp past it. */
static int
json_string(const char **pp, char *out, size_t len)
{
	const char	*p = *pp;
	size_t		 o = 0;
	unsigned int	 cp;

	if (*p++ != '"')
		return -1;
	while (*p != '"') {
		if (*p == '\0' || (unsigned char)*p < 0x20 || o + 4 >= len)
			return -1;
		if (*p != '\\') {
			out[o++] = *p++;
			continue;
		}
		p++;
		switch (*p) {
		case '"': case '\\': case '/':
			out[o++] = *p;
			break;
		case 'b': out[o++] = '\b'; break;
		case 'f': out[o++] = '\f'; break;
		case 'n': out[o++] = '\n'; break;
		case 'r': out[o++] = '\r'; break;
		case 't': out[o++] = '\t'; break;
		case 'u':
			if (json_hex4(p + 1, &cp) == -1 ||
			    (cp >= 0xd800 && cp <= 0xdfff))
				return -1;
			p += 4;
			if (cp < 0x80)
				out[o++] = (char)cp;
			else if (cp < 0x800) {
				out[o++] = (char)(0xc0 | (cp >> 6));
				out[o++] = (char)(0x80 | (cp & 0x3f));
			} else {
				out[o++] = (char)(0xe0 | (cp >> 12));
				out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
				out[o++] = (char)(0x80 | (cp & 0x3f));
			}
			break;
		default:
			return -1;
		}
		p++;
	}
	out[o] = '\0';
	*pp = p + 1;
	return 0;
}

/* Parses one line "{...}\n"; returns the number of fields or -1. */
static int
json_parse_line(const char *line, struct jfield *f, int max)
{
	const char	*p = line;
	size_t		 o;
	int		 n = 0;

	if (*p++ != '{')
		return -1;
	while (*p != '}') {
		if (n == max || (n > 0 && *p++ != ','))
			return -1;
		if (json_string(&p, f[n].jf_key, sizeof(f[n].jf_key)) == -1 ||
		    *p++ != ':')
			return -1;
		if (*p == '"') {
			if (json_string(&p, f[n].jf_val,
			    sizeof(f[n].jf_val)) == -1)
				return -1;
			f[n].jf_string = 1;
		} else {
			for (o = 0; *p >= '0' && *p <= '9' &&
			    o + 1 < sizeof(f[n].jf_val); o++)
				f[n].jf_val[o] = *p++;
			if (o == 0)
				return -1;
			f[n].jf_val[o] = '\0';
			f[n].jf_string = 0;
		}
		n++;
	}
	if (strcmp(p, "}\n") != 0 && strcmp(p, "}") != 0)
		return -1;
	return n;
}

static const char *
json_get(struct jfield *f, int n, const char *key)
{
	int	 i;

	for (i = 0; i < n; i++)
		if (strcmp(f[i].jf_key, key) == 0)
			return f[i].jf_val;
	return NULL;
}

/* Splits out into lines and parses line number nth (from 0). */
static int
json_line(const char *out, int nth, struct jfield *f)
{
	static char	 line[JF_LEN * 2];
	const char	*p = out, *nl;
	int		 i;

	for (i = 0; i < nth; i++) {
		if ((p = strchr(p, '\n')) == NULL)
			return -1;
		p++;
	}
	if ((nl = strchr(p, '\n')) == NULL ||
	    (size_t)(nl - p) + 2 > sizeof(line))
		return -1;
	memcpy(line, p, (size_t)(nl - p) + 1);
	line[nl - p + 1] = '\0';
	return json_parse_line(line, f, JF_MAX);
}

static void
test_json_parser(void **state)
{
	static struct jfield	 f[JF_MAX];

	/* The parser itself refuses what it should. */
	assert_int_equal(json_parse_line("{\"a\":\"b\",\"n\":12}\n", f,
	    JF_MAX), 2);
	assert_string_equal(json_get(f, 2, "n"), "12");
	assert_int_equal(json_parse_line("{\"a\":\"b\n\"}\n", f, JF_MAX), -1);
	assert_int_equal(json_parse_line("{\"a\":\"b\\x\"}\n", f, JF_MAX),
	    -1);
	assert_int_equal(json_parse_line("{\"a\":\"b\"", f, JF_MAX), -1);
	assert_int_equal(json_parse_line("{\"a\":\"b\"}x", f, JF_MAX), -1);
}

static void
test_json_lines(void **state)
{
	static struct jfield	 f[JF_MAX];
	char			 out[8192];
	const char		*ts;
	int			 n;

	log_setverbose(0);
	log_set_format(1);
	capture_begin();
	log_info("plain %d", 1);				/* 0 */
	errno = ENOENT;
	log_warn("open %s", "/x");				/* 1 */
	assert_int_equal(errno, ENOENT);
	log_debug("hidden");
	log_warnx("quote \" back \\ nl\nforged\r tab\t bell\a"); /* 2 */
	log_info("session 42 10.0.0.1:5000: authenticated");	/* 3 */
	log_info("session 7: closing");				/* 4 */
	log_info("sessions 3 open");				/* 5 */
	log_info("utf8 caf\xc3\xa9 bad \xff\xc3 end");		/* 6 */
	log_info("overlong \xc0\xaf surrogate \xed\xa0\x80");	/* 7 */
	log_errx("backup of %s failed", "vm");			/* 8 */
	capture_end(out, sizeof(out));
	log_set_format(0);

	n = json_line(out, 0, f);
	assert_true(n >= 4);
	assert_string_equal(json_get(f, n, "level"), "info");
	assert_string_equal(json_get(f, n, "prog"), "test_log");
	assert_string_equal(json_get(f, n, "msg"), "plain 1");
	assert_null(json_get(f, n, "session"));
	/* RFC 3339 UTC with milliseconds: 2024-01-02T03:04:05.678Z */
	ts = json_get(f, n, "ts");
	assert_non_null(ts);
	assert_int_equal(strlen(ts), 24);
	assert_true(ts[4] == '-' && ts[10] == 'T' && ts[19] == '.' &&
	    ts[23] == 'Z');

	n = json_line(out, 1, f);
	assert_true(n >= 4);
	assert_string_equal(json_get(f, n, "level"), "warning");
	assert_string_equal(json_get(f, n, "msg"),
	    "open /x: No such file or directory");

	n = json_line(out, 2, f);
	assert_true(n >= 4);
	assert_string_equal(json_get(f, n, "msg"),
	    "quote \" back \\ nl\nforged\r tab\t bell\a");

	n = json_line(out, 3, f);
	assert_true(n >= 5);
	assert_string_equal(json_get(f, n, "session"), "42");
	assert_string_equal(json_get(f, n, "msg"),
	    "session 42 10.0.0.1:5000: authenticated");
	n = json_line(out, 4, f);
	assert_string_equal(json_get(f, n, "session"), "7");
	n = json_line(out, 5, f);
	assert_null(json_get(f, n, "session"));

	n = json_line(out, 6, f);
	assert_true(n >= 4);
	assert_string_equal(json_get(f, n, "msg"),
	    "utf8 caf\xc3\xa9 bad \xef\xbf\xbd\xef\xbf\xbd end");
	n = json_line(out, 7, f);
	assert_true(n >= 4);
	assert_string_equal(json_get(f, n, "msg"), "overlong "
	    "\xef\xbf\xbd\xef\xbf\xbd surrogate "
	    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
	n = json_line(out, 8, f);
	assert_true(n >= 4);
	assert_string_equal(json_get(f, n, "level"), "error");
	assert_string_equal(json_get(f, n, "msg"), "backup of vm failed");
	/* Nine lines, nothing else. */
	assert_int_equal(json_line(out, 9, f), -1);
}

static void
test_json_long_line(void **state)
{
	static struct jfield	 f[JF_MAX];
	static char		 big[10000], out[32768];
	int			 n;

	/* Quotes escape to two bytes each: the worst plain case. */
	memset(big, '"', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_set_format(1);
	capture_begin();
	log_warnx("%s", big);
	log_warnx("%s", "\x01\x01\x01\x01\x01\x01\x01\x01");
	capture_end(out, sizeof(out));
	log_set_format(0);

	/* Truncated, but each is still one whole, valid object. */
	n = json_line(out, 0, f);
	assert_true(n >= 4);
	assert_true(strlen(json_get(f, n, "msg")) > 1000);
	assert_true(strspn(json_get(f, n, "msg"), "\"") ==
	    strlen(json_get(f, n, "msg")));
	n = json_line(out, 1, f);
	assert_true(n >= 4);
	assert_string_equal(json_get(f, n, "msg"),
	    "\x01\x01\x01\x01\x01\x01\x01\x01");
	assert_int_equal(json_line(out, 2, f), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_ssl_error_string),
		cmocka_unit_test(test_log_ssl),
		cmocka_unit_test(test_json_parser),
		cmocka_unit_test(test_json_lines),
		cmocka_unit_test(test_json_long_line),
	};

	log_init("test_log", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
