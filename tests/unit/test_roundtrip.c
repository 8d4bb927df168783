/*
 * test_roundtrip.c: the source's round-trip check of a block before it
 * is sent (compress_verify): a good block passes; a compressed buffer
 * with any byte spoiled, cut short or grown, or compared with another
 * block, is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common.h"

#define BLOCK		(1u << 20)

struct rt {
	uint8_t	*raw;
	uint8_t	*comp;
	uint8_t	*scratch;
	size_t	 clen;
};

/* A block of text and numbers, like a file system's, compressed. */
static int
setup(void **state)
{
	struct rt	*rt = calloc(1, sizeof(*rt));
	ssize_t		 n;
	size_t		 i;

	assert_non_null(rt);
	rt->raw = malloc(BLOCK);
	rt->comp = malloc(compress_bound(BLOCK));
	rt->scratch = malloc(BLOCK);
	assert_non_null(rt->raw);
	assert_non_null(rt->comp);
	assert_non_null(rt->scratch);
	for (i = 0; i < BLOCK; i++)
		rt->raw[i] = (uint8_t)("line of a log file: "[i % 20] ^
		    (i % 4096 == 0 ? (i >> 12) : 0));
	n = compress_block(1, rt->raw, BLOCK, rt->comp, compress_bound(BLOCK));
	assert_true(n > 0);
	rt->clen = (size_t)n;
	*state = rt;
	return 0;
}

static int
teardown(void **state)
{
	struct rt	*rt = *state;

	free(rt->raw);
	free(rt->comp);
	free(rt->scratch);
	free(rt);
	return 0;
}

/* The normal path: what was compressed gives the block back. */
static void
test_good_block_passes(void **state)
{
	struct rt	*rt = *state;

	assert_int_equal(compress_verify(rt->comp, rt->clen, rt->raw, BLOCK,
	    rt->scratch), 0);
}

/*
 * One flipped bit anywhere in the compressed bytes is refused.  Some of
 * these flips still decode to a block of the right size (zstd frames
 * carry no checksum here): only the comparison with the block read
 * catches those, and the test insists that such flips occur.
 */
static void
test_spoiled_byte_refused(void **state)
{
	struct rt	*rt = *state;
	uint8_t		*bad = malloc(rt->clen);
	size_t		 pos, step, decoded = 0, tried = 0;

	assert_non_null(bad);
	step = rt->clen / 97 + 1;
	for (pos = 0; pos < rt->clen; pos += step) {
		memcpy(bad, rt->comp, rt->clen);
		bad[pos] ^= 0x10;
		tried++;
		assert_int_equal(compress_verify(bad, rt->clen, rt->raw, BLOCK,
		    rt->scratch), -1);
		if (decompress_block(bad, rt->clen, rt->scratch, BLOCK) == 0)
			decoded++;
	}
	assert_true(tried > 50);
	assert_true(decoded > 0);
	free(bad);
}

/* Cut short, or with bytes behind the frame: refused. */
static void
test_wrong_length_refused(void **state)
{
	struct rt	*rt = *state;
	uint8_t		*big = malloc(rt->clen + 8);

	assert_non_null(big);
	assert_int_equal(compress_verify(rt->comp, rt->clen - 1, rt->raw,
	    BLOCK, rt->scratch), -1);
	assert_int_equal(compress_verify(rt->comp, 0, rt->raw, BLOCK,
	    rt->scratch), -1);
	memcpy(big, rt->comp, rt->clen);
	memset(big + rt->clen, 0, 8);
	assert_int_equal(compress_verify(big, rt->clen + 8, rt->raw, BLOCK,
	    rt->scratch), -1);
	/* Another length than the block's. */
	assert_int_equal(compress_verify(rt->comp, rt->clen, rt->raw,
	    BLOCK - 1, rt->scratch), -1);
	free(big);
}

/* A good frame of another block (memory changed under it): refused. */
static void
test_other_block_refused(void **state)
{
	struct rt	*rt = *state;

	rt->raw[BLOCK / 3] ^= 0x01;
	assert_int_equal(compress_verify(rt->comp, rt->clen, rt->raw, BLOCK,
	    rt->scratch), -1);
	rt->raw[BLOCK / 3] ^= 0x01;
	assert_int_equal(compress_verify(rt->comp, rt->clen, rt->raw, BLOCK,
	    rt->scratch), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_block_passes),
		cmocka_unit_test(test_spoiled_byte_refused),
		cmocka_unit_test(test_wrong_length_refused),
		cmocka_unit_test(test_other_block_refused),
	};

	log_init("test_roundtrip", 1, 0);
	return cmocka_run_group_tests(tests, setup, teardown);
}
