/*
 * test_log.c: foreground log lines, debug gating, errno handling and
 * the OpenSSL error queue helper.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_ssl_error_string),
		cmocka_unit_test(test_log_ssl),
	};

	log_init("test_log", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
