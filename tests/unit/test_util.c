/*
 * test_util.c: name validation, human-readable sizes, clocks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common.h"

static void
test_name_is_valid(void **state)
{
	char	 name[NAME_MAX_LEN + 2];

	assert_int_equal(name_is_valid("vm-01"), 1);
	assert_int_equal(name_is_valid("a"), 1);
	assert_int_equal(name_is_valid("Web_Server.disk0"), 1);
	assert_int_equal(name_is_valid("0day"), 1);

	assert_int_equal(name_is_valid(""), 0);
	assert_int_equal(name_is_valid(NULL), 0);
	assert_int_equal(name_is_valid("."), 0);
	assert_int_equal(name_is_valid(".."), 0);
	assert_int_equal(name_is_valid(".hidden"), 0);
	assert_int_equal(name_is_valid("-rf"), 0);
	assert_int_equal(name_is_valid("a/b"), 0);
	assert_int_equal(name_is_valid("../etc"), 0);
	assert_int_equal(name_is_valid("a b"), 0);
	assert_int_equal(name_is_valid("a\nb"), 0);
	assert_int_equal(name_is_valid("caf\xc3\xa9"), 0);

	memset(name, 'n', sizeof(name));
	name[NAME_MAX_LEN] = '\0';
	assert_int_equal(name_is_valid(name), 1);
	name[NAME_MAX_LEN] = 'n';
	name[NAME_MAX_LEN + 1] = '\0';
	assert_int_equal(name_is_valid(name), 0);
}

static void
assert_bytes(uint64_t n, const char *want)
{
	char	 buf[32];

	format_bytes(n, buf, sizeof(buf));
	assert_string_equal(buf, want);
}

static void
test_format_bytes(void **state)
{
	char	 small[4];

	assert_bytes(0, "0 B");
	assert_bytes(1023, "1023 B");
	assert_bytes(1024, "1.0 KiB");
	assert_bytes(1536, "1.5 KiB");
	assert_bytes(1048575, "1.0 MiB");
	assert_bytes(1ull << 20, "1.0 MiB");
	assert_bytes(3ull << 29, "1.5 GiB");
	assert_bytes(5ull << 40, "5.0 TiB");
	assert_bytes(UINT64_MAX, "16777216.0 TiB");

	format_bytes(1536, small, sizeof(small));
	assert_string_equal(small, "1.5");
}

static void
test_now_ms(void **state)
{
	struct timespec	 ts = { 0, 20 * 1000 * 1000 };
	uint64_t	 a, b;

	a = now_ms();
	assert_int_equal(nanosleep(&ts, NULL), 0);
	b = now_ms();
	assert_true(b >= a + 20);
	assert_true(b < a + 5000);
}

/* Every length and every position of a single non-zero byte. */
static void
test_buf_is_zero(void **state)
{
	static uint8_t	 buf[4096 + 1];
	size_t		 lens[] = { 0, 1, 63, 64, 65, 128, 4096, 4097 };
	size_t		 i, pos;

	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		assert_true(buf_is_zero(buf, lens[i]));
		for (pos = 0; pos < lens[i]; pos++) {
			buf[pos] = 0x01;
			assert_false(buf_is_zero(buf, lens[i]));
			buf[pos] = 0;
		}
		/* A byte just past the end does not count. */
		if (lens[i] < sizeof(buf)) {
			buf[lens[i]] = 0xff;
			assert_true(buf_is_zero(buf, lens[i]));
			buf[lens[i]] = 0;
		}
	}
}

static void
test_peak_rss(void **state)
{
	long	 kib = peak_rss_kib();

	/* Any process is bigger than 100 KiB and smaller than 1 TiB. */
	assert_true(kib > 100);
	assert_true(kib < (1L << 30));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_is_valid),
		cmocka_unit_test(test_format_bytes),
		cmocka_unit_test(test_now_ms),
		cmocka_unit_test(test_peak_rss),
		cmocka_unit_test(test_buf_is_zero),
	};

	log_init("test_util", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
