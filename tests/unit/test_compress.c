/*
 * test_compress.c: zstd block compression round trips, the "does not
 * shrink" rule, and hostile frames (wrong sizes, bombs, garbage).
 */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common.h"

#define BLOCK		(256u << 10)
#define GUARD		64

/* Compresses and decompresses src; returns the compressed length. */
static size_t
round_trip(const uint8_t *src, size_t len)
{
	uint8_t	*c, *d;
	ssize_t	 n;

	c = malloc(compress_bound(len));
	d = malloc(len + GUARD);
	assert_non_null(c);
	assert_non_null(d);
	n = compress_block(3, src, len, c, compress_bound(len));
	assert_true(n > 0);
	assert_true((size_t)n < len);
	memset(d, 0xee, len + GUARD);
	assert_int_equal(decompress_block(c, (size_t)n, d, len), 0);
	assert_memory_equal(d, src, len);
	/* Nothing written past the expected length. */
	assert_int_equal(d[len], 0xee);
	assert_int_equal(d[len + GUARD - 1], 0xee);
	free(c);
	free(d);
	return (size_t)n;
}

static void
test_text(void **state)
{
	const char	*line = "The quick brown fox jumps over the lazy dog. ";
	uint8_t		*buf = malloc(BLOCK);
	size_t		 i, n;

	assert_non_null(buf);
	for (i = 0; i < BLOCK; i++)
		buf[i] = (uint8_t)line[i % strlen(line)];
	n = round_trip(buf, BLOCK);
	assert_true(n < BLOCK / 10);
	free(buf);
}

static void
test_zeros(void **state)
{
	uint8_t	*buf = calloc(1, BLOCK);

	assert_non_null(buf);
	assert_true(round_trip(buf, BLOCK) < 1024);
	free(buf);
}

static void
test_random_does_not_shrink(void **state)
{
	uint8_t	*buf = malloc(BLOCK);
	uint8_t	*c = malloc(compress_bound(BLOCK));

	assert_non_null(buf);
	assert_non_null(c);
	assert_int_equal(crypto_random(buf, BLOCK), 0);
	assert_int_equal(compress_block(3, buf, BLOCK, c, compress_bound(BLOCK)),
	    0);
	/* Also with a destination only as large as the source. */
	assert_int_equal(compress_block(3, buf, BLOCK, c, BLOCK), 0);
	assert_int_equal(compress_block(3, buf, 0, c, BLOCK), 0);
	free(buf);
	free(c);
}

/* A random block with a compressible half: shrinks, but not much. */
static void
test_half_random(void **state)
{
	uint8_t	*buf = calloc(1, BLOCK);

	assert_non_null(buf);
	assert_int_equal(crypto_random(buf, BLOCK / 2), 0);
	assert_true(round_trip(buf, BLOCK) > BLOCK / 2);
	free(buf);
}

static void
test_levels(void **state)
{
	uint8_t	 buf[4096];
	size_t	 i;

	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)(i % 7);
	assert_true(round_trip(buf, sizeof(buf)) > 0);
	for (i = 1; i <= 19; i += 6) {
		uint8_t	 c[8192], d[4096];
		ssize_t	 n;

		n = compress_block((int)i, buf, sizeof(buf), c, sizeof(c));
		assert_true(n > 0);
		assert_int_equal(decompress_block(c, (size_t)n, d, sizeof(d)),
		    0);
		assert_memory_equal(d, buf, sizeof(buf));
	}
}

static void
test_wrong_expected_len(void **state)
{
	uint8_t	 buf[4096], c[8192], d[8192];
	ssize_t	 n;

	memset(buf, 'a', sizeof(buf));
	n = compress_block(3, buf, sizeof(buf), c, sizeof(c));
	assert_true(n > 0);
	assert_int_equal(decompress_block(c, (size_t)n, d, sizeof(buf) - 1),
	    -1);
	assert_int_equal(decompress_block(c, (size_t)n, d, sizeof(buf) + 1),
	    -1);
	assert_int_equal(decompress_block(c, (size_t)n, d, 0), -1);
	assert_int_equal(decompress_block(c, (size_t)n, d, sizeof(buf)), 0);
}

static void
test_truncated_and_garbage(void **state)
{
	uint8_t	 buf[4096], c[8192], d[4096];
	ssize_t	 n;
	size_t	 cut;

	for (cut = 0; cut < sizeof(buf); cut++)
		buf[cut] = (uint8_t)(cut * cut);
	n = compress_block(3, buf, sizeof(buf), c, sizeof(c));
	assert_true(n > 8);
	for (cut = 0; cut < (size_t)n; cut++)
		assert_int_equal(decompress_block(c, cut, d, sizeof(d)), -1);
	/* Trailing bytes after the frame. */
	c[n] = 0;
	assert_int_equal(decompress_block(c, (size_t)n + 1, d, sizeof(d)), -1);
	/* Garbage and nothing. */
	memset(c, 0x5a, sizeof(c));
	assert_int_equal(decompress_block(c, 100, d, sizeof(d)), -1);
	assert_int_equal(decompress_block(c, 0, d, sizeof(d)), -1);
}

/* Two frames whose sizes add up are still not one block. */
static void
test_two_frames(void **state)
{
	uint8_t	 buf[2048], c[8192], d[4096];
	ssize_t	 n, m;

	memset(buf, 'q', sizeof(buf));
	n = compress_block(3, buf, sizeof(buf), c, sizeof(c));
	assert_true(n > 0);
	m = compress_block(3, buf, sizeof(buf), c + n, sizeof(c) - (size_t)n);
	assert_int_equal(m, n);
	assert_int_equal(decompress_block(c, (size_t)(n + m), d, sizeof(d)),
	    -1);
	assert_int_equal(decompress_block(c, (size_t)(n + m), d, sizeof(buf)),
	    -1);
	assert_int_equal(decompress_block(c, (size_t)n, d, sizeof(buf)), 0);
}

/* A corrupted frame body must fail, not decode to something else. */
static void
test_corrupt_body(void **state)
{
	uint8_t	 buf[4096], c[8192], d[4096];
	ssize_t	 n;

	memset(buf, 0, sizeof(buf));
	memcpy(buf, "header", 6);
	memcpy(buf + 3000, "middle", 6);
	n = compress_block(3, buf, sizeof(buf), c, sizeof(c));
	assert_true(n > 12);
	c[n - 3] ^= 0xff;
	c[n - 4] ^= 0xff;
	/* Either rejected or, if zstd cannot tell, still never overlong. */
	if (decompress_block(c, (size_t)n, d, sizeof(d)) == 0)
		assert_memory_not_equal(d, buf, sizeof(buf));
}

/*
 * A hand-made frame: magic, single-segment descriptor with an 8-byte
 * content size of 1 TiB, then one tiny raw block.  It must be refused
 * from its header, without an attempt to allocate or decode.
 */
static void
test_huge_content_size(void **state)
{
	uint8_t		 frame[64], d[1024];
	uint64_t	 size = 1ull << 40;
	size_t		 i, len = 0;

	frame[len++] = 0x28;
	frame[len++] = 0xb5;
	frame[len++] = 0x2f;
	frame[len++] = 0xfd;
	frame[len++] = 0xe0;		/* FCS 8 bytes, single segment */
	for (i = 0; i < 8; i++)
		frame[len++] = (uint8_t)(size >> (8 * i));
	frame[len++] = 0x21;		/* last, raw, 4 bytes */
	frame[len++] = 0x00;
	frame[len++] = 0x00;
	memcpy(frame + len, "abcd", 4);
	len += 4;
	assert_int_equal(decompress_block(frame, len, d, sizeof(d)), -1);
}

/*
 * A lying frame: its header claims 100 bytes but its raw block holds
 * 200.  The declared size matches, so only the capacity limit stops the
 * write: nothing may land past the 100 bytes.
 */
static void
test_lying_header(void **state)
{
	uint8_t	 frame[300], d[100 + GUARD];
	size_t	 len = 0;

	frame[len++] = 0x28;
	frame[len++] = 0xb5;
	frame[len++] = 0x2f;
	frame[len++] = 0xfd;
	frame[len++] = 0x20;		/* FCS 1 byte, single segment */
	frame[len++] = 100;
	frame[len++] = (uint8_t)((200 << 3) | 1);	/* last, raw, 200 */
	frame[len++] = (uint8_t)(200 >> 5);
	frame[len++] = 0x00;
	memset(frame + len, 'x', 200);
	len += 200;
	memset(d, 0xee, sizeof(d));
	assert_int_equal(decompress_block(frame, len, d, 100), -1);
	assert_int_equal(d[100], 0xee);
	assert_int_equal(d[sizeof(d) - 1], 0xee);

	/* The same frame, honest: 100 bytes of 'x'. */
	frame[6] = (uint8_t)((100 << 3) | 1);
	frame[7] = (uint8_t)(100 >> 5);
	assert_int_equal(decompress_block(frame, 9 + 100, d, 100), 0);
	assert_int_equal(d[0], 'x');
	assert_int_equal(d[99], 'x');
	assert_int_equal(d[100], 0xee);
}

/* A frame without a declared content size is refused. */
static void
test_unknown_content_size(void **state)
{
	uint8_t	 frame[32], d[16];
	size_t	 len = 0;

	frame[len++] = 0x28;
	frame[len++] = 0xb5;
	frame[len++] = 0x2f;
	frame[len++] = 0xfd;
	frame[len++] = 0x00;		/* no FCS, window descriptor follows */
	frame[len++] = 0x00;		/* 1 KiB window */
	frame[len++] = (uint8_t)((4 << 3) | 1);
	frame[len++] = 0x00;
	frame[len++] = 0x00;
	memcpy(frame + len, "abcd", 4);
	len += 4;
	assert_int_equal(decompress_block(frame, len, d, 4), -1);
}

static void *
thread_main(void *arg)
{
	uint8_t	 buf[8192], c[16384], d[8192];
	size_t	 i, round;
	ssize_t	 n;

	for (round = 0; round < 50; round++) {
		for (i = 0; i < sizeof(buf); i++)
			buf[i] = (uint8_t)((i / 16 + round) & 0xff);
		n = compress_block(1, buf, sizeof(buf), c, sizeof(c));
		if (n <= 0 ||
		    decompress_block(c, (size_t)n, d, sizeof(d)) != 0 ||
		    memcmp(d, buf, sizeof(buf)) != 0)
			return arg;
	}
	return NULL;
}

/* Worker threads each get their own contexts (and free them at exit). */
static void
test_threads(void **state)
{
	pthread_t	 t[4];
	void		*ret;
	size_t		 i;

	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, thread_main,
		    t), 0);
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], &ret), 0);
		assert_null(ret);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text),
		cmocka_unit_test(test_zeros),
		cmocka_unit_test(test_random_does_not_shrink),
		cmocka_unit_test(test_half_random),
		cmocka_unit_test(test_levels),
		cmocka_unit_test(test_wrong_expected_len),
		cmocka_unit_test(test_truncated_and_garbage),
		cmocka_unit_test(test_two_frames),
		cmocka_unit_test(test_corrupt_body),
		cmocka_unit_test(test_huge_content_size),
		cmocka_unit_test(test_lying_header),
		cmocka_unit_test(test_unknown_content_size),
		cmocka_unit_test(test_threads),
	};

	log_init("test_compress", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
