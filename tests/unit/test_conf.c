/*
 * test_conf.c: the configuration parser (sections, comments, quotes,
 * every error reported with its line) and the value helpers.
 */
#include <sys/stat.h>

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

#include "common.h"

#define MAX_SEEN	32

struct seen {
	char	*s_section;
	char	*s_arg;
	char	*s_key;
	char	*s_value;
	int	 s_line;
};

struct collector {
	const char	*c_path;
	struct seen	 c_seen[MAX_SEEN];
	int		 c_count;
};

static char *
dup_or_null(const char *s)
{
	char	*d;

	if (s == NULL)
		return NULL;
	d = strdup(s);
	assert_non_null(d);
	return d;
}

/* Records every pair; refuses the key "reject" as a real caller would. */
static int
collect(void *arg, const char *section, const char *section_arg,
    const char *key, const char *value, int line)
{
	struct collector	*c = arg;
	struct seen		*s;

	assert_true(c->c_count < MAX_SEEN);
	s = &c->c_seen[c->c_count++];
	s->s_section = dup_or_null(section);
	s->s_arg = dup_or_null(section_arg);
	s->s_key = dup_or_null(key);
	s->s_value = dup_or_null(value);
	s->s_line = line;
	if (strcmp(key, "reject") == 0) {
		log_warnx("%s:%d: %s: not accepted", c->c_path, line, key);
		return -1;
	}
	return 0;
}

static void
collector_free(struct collector *c)
{
	int	 i;

	for (i = 0; i < c->c_count; i++) {
		free(c->c_seen[i].s_section);
		free(c->c_seen[i].s_arg);
		free(c->c_seen[i].s_key);
		free(c->c_seen[i].s_value);
	}
	c->c_count = 0;
}

static void
assert_seen(const struct seen *s, const char *section, const char *arg,
    const char *key, const char *value, int line)
{
	if (section == NULL)
		assert_null(s->s_section);
	else
		assert_string_equal(s->s_section, section);
	if (arg == NULL)
		assert_null(s->s_arg);
	else
		assert_string_equal(s->s_arg, arg);
	assert_string_equal(s->s_key, key);
	assert_string_equal(s->s_value, value);
	assert_int_equal(s->s_line, line);
}

/* Writes len bytes to a new temporary file; returns its malloc'd path. */
static char *
write_temp(const void *data, size_t len)
{
	char	*path;
	int	 fd;

	path = strdup("/tmp/test_conf.XXXXXX");
	assert_non_null(path);
	fd = mkstemp(path);
	assert_true(fd != -1);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
	return path;
}

/* Runs the parser with stderr captured into out. */
static int
parse_captured(const char *path, struct collector *c, char *out,
    size_t outlen)
{
	FILE	*tmp;
	size_t	 n;
	int	 saved, ret;

	tmp = tmpfile();
	assert_non_null(tmp);
	saved = dup(STDERR_FILENO);
	assert_true(saved != -1);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) != -1);
	c->c_path = path;
	ret = conf_parse_file(path, collect, c);
	assert_true(dup2(saved, STDERR_FILENO) != -1);
	assert_int_equal(close(saved), 0);
	rewind(tmp);
	n = fread(out, 1, outlen - 1, tmp);
	out[n] = '\0';
	assert_int_equal(fclose(tmp), 0);
	return ret;
}

static int
count_lines(const char *s)
{
	int	 n = 0;

	for (; *s != '\0'; s++)
		if (*s == '\n')
			n++;
	return n;
}

/* True if out has a line holding "path:line:". */
static int
has_error_at(const char *out, const char *path, int line)
{
	char	 want[256];

	(void)snprintf(want, sizeof(want), "%s:%d: ", path, line);
	return strstr(out, want) != NULL;
}

static void
test_parse_good(void **state)
{
	const char	 text[] =
	    "# comment\n"
	    "; another comment\n"
	    "top = level            # before any section\n"
	    "[global]\n"
	    "listen = 0.0.0.0:7700\n"
	    "  name   =   spaced value   \n"
	    "quoted = \"a # not a comment \\\"q\\\" \\\\ end\"   # trailing\n"
	    "empty =\n"
	    "hash=#x\n"
	    "\n"
	    "   [tenant acme]   # a tenant\n"
	    "quota = 2TiB\n"
	    "[tenant \"big corp\"]\n"
	    "k = v\r\n"
	    "path = /a;b\n"
	    "last.key-x_y=\"\"";
	struct collector c = { 0 };
	char		 out[4096];
	char		*path;

	path = write_temp(text, sizeof(text) - 1);
	assert_int_equal(parse_captured(path, &c, out, sizeof(out)), 0);
	assert_string_equal(out, "");
	assert_int_equal(c.c_count, 10);
	assert_seen(&c.c_seen[0], NULL, NULL, "top", "level", 3);
	assert_seen(&c.c_seen[1], "global", NULL, "listen", "0.0.0.0:7700", 5);
	assert_seen(&c.c_seen[2], "global", NULL, "name", "spaced value", 6);
	assert_seen(&c.c_seen[3], "global", NULL, "quoted",
	    "a # not a comment \"q\" \\ end", 7);
	assert_seen(&c.c_seen[4], "global", NULL, "empty", "", 8);
	assert_seen(&c.c_seen[5], "global", NULL, "hash", "#x", 9);
	assert_seen(&c.c_seen[6], "tenant", "acme", "quota", "2TiB", 12);
	assert_seen(&c.c_seen[7], "tenant", "big corp", "k", "v", 14);
	assert_seen(&c.c_seen[8], "tenant", "big corp", "path", "/a;b", 15);
	assert_seen(&c.c_seen[9], "tenant", "big corp", "last.key-x_y", "",
	    16);
	collector_free(&c);
	assert_int_equal(unlink(path), 0);
	free(path);
}

static void
test_parse_errors(void **state)
{
	struct collector c = { 0 };
	char		 out[8192], longline[5000];
	char		*text, *path;
	size_t		 len;

	memset(longline, 'x', sizeof(longline));
	memcpy(longline, "long = ", 7);
	longline[4097] = '\0';		/* 4097 characters */
	len = (size_t)asprintf(&text,
	    "good = 1\n"				/* 1 */
	    "this line has no equals sign\n"		/* 2: error */
	    "[broken\n"					/* 3: error */
	    "skipped = 1\n"				/* 4: skipped */
	    "[ok]\n"					/* 5 */
	    "bad = \"unterminated\n"			/* 6: error */
	    "reject = me\n"				/* 7: callback */
	    "also = \"x\" trailing\n"			/* 8: error */
	    "%s\n"					/* 9: too long */
	    "esc = \"\\n\"\n"				/* 10: error */
	    "[a b c]\n"					/* 11: error */
	    "[ok] junk\n"				/* 12: error */
	    "[b@d]\n"					/* 13: error */
	    "last = 1\n",				/* 14: skipped */
	    longline);
	assert_true(len > 4097);
	path = write_temp(text, len);
	free(text);

	assert_int_equal(parse_captured(path, &c, out, sizeof(out)), -1);
	/* Every error reported, each once, with its line. */
	assert_int_equal(count_lines(out), 10);
	assert_true(has_error_at(out, path, 2));
	assert_true(has_error_at(out, path, 3));
	assert_false(has_error_at(out, path, 4));
	assert_true(has_error_at(out, path, 6));
	assert_true(has_error_at(out, path, 7));
	assert_true(has_error_at(out, path, 8));
	assert_true(has_error_at(out, path, 9));
	assert_true(has_error_at(out, path, 10));
	assert_true(has_error_at(out, path, 11));
	assert_true(has_error_at(out, path, 12));
	assert_true(has_error_at(out, path, 13));
	assert_non_null(strstr(out, "longer than 4096"));
	assert_non_null(strstr(out, "missing ']'"));

	/* Valid lines around the errors still reach the callback. */
	assert_int_equal(c.c_count, 2);
	assert_seen(&c.c_seen[0], NULL, NULL, "good", "1", 1);
	assert_seen(&c.c_seen[1], "ok", NULL, "reject", "me", 7);
	collector_free(&c);
	assert_int_equal(unlink(path), 0);
	free(path);
}

static void
test_parse_line_limit(void **state)
{
	struct collector c = { 0 };
	char		 out[1024], text[4096 + 2];
	char		*path;

	/* Exactly 4096 characters is allowed. */
	memset(text, 'v', sizeof(text));
	memcpy(text, "k = ", 4);
	text[4096] = '\n';
	path = write_temp(text, 4097);
	assert_int_equal(parse_captured(path, &c, out, sizeof(out)), 0);
	assert_int_equal(c.c_count, 1);
	assert_int_equal(strlen(c.c_seen[0].s_value), 4096 - 4);
	collector_free(&c);
	assert_int_equal(unlink(path), 0);
	free(path);
}

static void
test_parse_nul_byte(void **state)
{
	const char	 text[] = "a = 1\nb = x\0y\nc = 3\n";
	struct collector c = { 0 };
	char		 out[1024];
	char		*path;

	path = write_temp(text, sizeof(text) - 1);
	assert_int_equal(parse_captured(path, &c, out, sizeof(out)), -1);
	assert_int_equal(count_lines(out), 1);
	assert_true(has_error_at(out, path, 2));
	assert_int_equal(c.c_count, 2);
	assert_seen(&c.c_seen[1], NULL, NULL, "c", "3", 3);
	collector_free(&c);
	assert_int_equal(unlink(path), 0);
	free(path);
}

static void
test_parse_unreadable(void **state)
{
	struct collector c = { 0 };
	char		 out[1024];

	assert_int_equal(parse_captured("/nonexistent/transporter.conf", &c,
	    out, sizeof(out)), -1);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "/nonexistent/transporter.conf: cannot "
	    "read configuration: No such file or directory"));

	assert_int_equal(parse_captured("/tmp", &c, out, sizeof(out)), -1);
	assert_int_equal(count_lines(out), 1);
	assert_non_null(strstr(out, "/tmp: cannot read configuration: "));
	assert_int_equal(c.c_count, 0);
}

static void
test_parse_empty(void **state)
{
	struct collector c = { 0 };
	char		 out[1024];
	char		*path;

	path = write_temp("", 0);
	assert_int_equal(parse_captured(path, &c, out, sizeof(out)), 0);
	assert_int_equal(c.c_count, 0);
	assert_int_equal(unlink(path), 0);
	free(path);
}

static void
test_size(void **state)
{
	uint64_t	 v;

	assert_int_equal(conf_parse_size("1048576", &v), 0);
	assert_int_equal(v, 1048576);
	assert_int_equal(conf_parse_size("1M", &v), 0);
	assert_int_equal(v, 1u << 20);
	assert_int_equal(conf_parse_size("4MiB", &v), 0);
	assert_int_equal(v, 4u << 20);
	assert_int_equal(conf_parse_size("512k", &v), 0);
	assert_int_equal(v, 512u << 10);
	assert_int_equal(conf_parse_size("2G", &v), 0);
	assert_int_equal(v, 2ull << 30);
	assert_int_equal(conf_parse_size("3 TiB", &v), 0);
	assert_int_equal(v, 3ull << 40);
	assert_int_equal(conf_parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(conf_parse_size("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(conf_parse_size("16777215T", &v), 0);
	assert_true(v == 16777215ull << 40);

	v = 77;
	assert_int_equal(conf_parse_size("18446744073709551616", &v), -1);
	assert_int_equal(conf_parse_size("16777216T", &v), -1);
	assert_int_equal(conf_parse_size("17179869184G", &v), -1);
	assert_int_equal(conf_parse_size("", &v), -1);
	assert_int_equal(conf_parse_size("M", &v), -1);
	assert_int_equal(conf_parse_size("-1", &v), -1);
	assert_int_equal(conf_parse_size(" 1", &v), -1);
	assert_int_equal(conf_parse_size("+1", &v), -1);
	assert_int_equal(conf_parse_size("1X", &v), -1);
	assert_int_equal(conf_parse_size("1.5G", &v), -1);
	assert_int_equal(conf_parse_size("1MiBx", &v), -1);
	assert_int_equal(conf_parse_size("0x10", &v), -1);
	assert_int_equal(v, 77);
}

static void
test_uint(void **state)
{
	uint64_t	 v;

	assert_int_equal(conf_parse_uint("5", 1, 10, &v), 0);
	assert_int_equal(v, 5);
	assert_int_equal(conf_parse_uint("1", 1, 10, &v), 0);
	assert_int_equal(conf_parse_uint("10", 1, 10, &v), 0);
	assert_int_equal(v, 10);
	assert_int_equal(conf_parse_uint("18446744073709551615", 0, UINT64_MAX,
	    &v), 0);
	assert_true(v == UINT64_MAX);

	v = 77;
	assert_int_equal(conf_parse_uint("0", 1, 10, &v), -1);
	assert_int_equal(conf_parse_uint("11", 1, 10, &v), -1);
	assert_int_equal(conf_parse_uint("18446744073709551616", 0,
	    UINT64_MAX, &v), -1);
	assert_int_equal(conf_parse_uint("-1", 0, UINT64_MAX, &v), -1);
	assert_int_equal(conf_parse_uint("", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint("5 ", 0, 10, &v), -1);
	assert_int_equal(conf_parse_uint("5k", 0, 10, &v), -1);
	assert_int_equal(v, 77);
}

static void
test_bool(void **state)
{
	const char	*yes[] = { "yes", "true", "on", "1", "YES", "True" };
	const char	*no[] = { "no", "false", "off", "0", "NO", "Off" };
	size_t		 i;
	int		 b;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		b = -1;
		assert_int_equal(conf_parse_bool(yes[i], &b), 0);
		assert_int_equal(b, 1);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		b = -1;
		assert_int_equal(conf_parse_bool(no[i], &b), 0);
		assert_int_equal(b, 0);
	}
	b = -1;
	assert_int_equal(conf_parse_bool("", &b), -1);
	assert_int_equal(conf_parse_bool("y", &b), -1);
	assert_int_equal(conf_parse_bool("2", &b), -1);
	assert_int_equal(conf_parse_bool("yes ", &b), -1);
	assert_int_equal(b, -1);
}

static void
assert_hostport(const char *str, const char *host, const char *port)
{
	char	*h, *p;

	assert_int_equal(conf_split_hostport(str, &h, &p), 0);
	assert_string_equal(h, host);
	if (port == NULL)
		assert_null(p);
	else
		assert_string_equal(p, port);
	free(h);
	free(p);
}

static void
assert_hostport_fails(const char *str)
{
	char	*h = (char *)1, *p = (char *)1;

	assert_int_equal(conf_split_hostport(str, &h, &p), -1);
	assert_null(h);
	assert_null(p);
}

static void
test_hostport(void **state)
{
	assert_hostport("backup.example.com:7700", "backup.example.com",
	    "7700");
	assert_hostport("10.0.0.1:443", "10.0.0.1", "443");
	assert_hostport("localhost", "localhost", NULL);
	assert_hostport("[::1]:7700", "::1", "7700");
	assert_hostport("[2001:db8::1]", "2001:db8::1", NULL);
	assert_hostport("2001:db8::1", "2001:db8::1", NULL);
	assert_hostport("[fe80::1%eth0]:65535", "fe80::1%eth0", "65535");
	assert_hostport("0.0.0.0:0", "0.0.0.0", "0");

	assert_hostport_fails("");
	assert_hostport_fails(":7700");
	assert_hostport_fails("host:");
	assert_hostport_fails("host:65536");
	assert_hostport_fails("host:http");
	assert_hostport_fails("host:-1");
	assert_hostport_fails("[::1");
	assert_hostport_fails("[::1]7700");
	assert_hostport_fails("[]:7700");
	assert_hostport_fails("[::1]:");
	assert_hostport_fails("ho st:7700");
}

static void
test_key_file(void **state)
{
	char	 err[512], want[512];
	char	*path;

	path = write_temp("key", 3);
	/* mkstemp creates 0600. */
	assert_int_equal(conf_check_key_file(path, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_int_equal(chmod(path, 0400), 0);
	assert_int_equal(conf_check_key_file(path, err, sizeof(err)), 0);

	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(conf_check_key_file(path, err, sizeof(err)), -1);
	(void)snprintf(want, sizeof(want), "key file %s is readable by group "
	    "or others (mode 0644); run: chmod 600 %s", path, path);
	assert_string_equal(err, want);

	assert_int_equal(chmod(path, 0604), 0);
	assert_int_equal(conf_check_key_file(path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "readable by group or others (mode 0604)"));

	assert_int_equal(chmod(path, 0620), 0);
	assert_int_equal(conf_check_key_file(path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is writable by group"));

	assert_int_equal(chmod(path, 0666), 0);
	assert_int_equal(conf_check_key_file(path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "readable and writable"));

	assert_int_equal(unlink(path), 0);
	assert_int_equal(conf_check_key_file(path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "No such file or directory"));
	free(path);

	assert_int_equal(conf_check_key_file("/tmp", err, sizeof(err)), -1);
	assert_string_equal(err, "key file /tmp is not a regular file");
	/* A tiny error buffer is truncated, not overrun. */
	assert_int_equal(conf_check_key_file("/tmp", err, 5), -1);
	assert_string_equal(err, "key ");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_line_limit),
		cmocka_unit_test(test_parse_nul_byte),
		cmocka_unit_test(test_parse_unreadable),
		cmocka_unit_test(test_parse_empty),
		cmocka_unit_test(test_size),
		cmocka_unit_test(test_uint),
		cmocka_unit_test(test_bool),
		cmocka_unit_test(test_hostport),
		cmocka_unit_test(test_key_file),
	};

	log_init("test_conf", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
