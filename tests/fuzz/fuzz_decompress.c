/*
 * fuzz_decompress.c: zstd decompression of blocks (common/compress.c)
 * with its output cap, and the compression round trip.
 *
 * Input: a 4-byte big-endian expected length (taken modulo
 * FUZZ_DECOMPRESS_MAX + 1), then a compressed block.  The output buffer
 * is exactly the expected length, so AddressSanitizer sees any write
 * past the cap; a frame that claims more, less or nothing must fail
 * without allocating by its claim.  Then the input itself goes through
 * compress_block() and must decompress to the same bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fuzz.h"

static void
round_trip(const uint8_t *src, size_t len, int level)
{
	uint8_t	*packed, *back;
	size_t	 cap;
	ssize_t	 n;

	if (len == 0)
		return;
	cap = compress_bound(len);
	packed = malloc(cap);
	back = malloc(len);
	FUZZ_CHECK(packed != NULL && back != NULL);
	n = compress_block(level, src, len, packed, cap);
	FUZZ_CHECK(n >= 0 && (size_t)n < len);
	if (n > 0) {
		FUZZ_CHECK(decompress_block(packed, (size_t)n, back,
		    len) == 0);
		FUZZ_CHECK(memcmp(back, src, len) == 0);
		/* One byte short or long of what it declares: refused. */
		if (len > 1)
			FUZZ_CHECK(decompress_block(packed, (size_t)n, back,
			    len - 1) == -1);
		FUZZ_CHECK(decompress_block(packed, (size_t)n - 1, back,
		    len) == -1);
	}
	free(back);
	free(packed);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int	 levels[] = { 1, 3, -1 };
	uint8_t			*dst;
	size_t			 want;

	if (size < 4)
		return 0;
	want = ((size_t)data[0] << 24 | (size_t)data[1] << 16 |
	    (size_t)data[2] << 8 | data[3]) % (FUZZ_DECOMPRESS_MAX + 1);
	/* malloc(0) may be NULL: keep one byte, tell the callee 0. */
	dst = malloc(want > 0 ? want : 1);
	FUZZ_CHECK(dst != NULL);
	if (decompress_block(data + 4, size - 4, dst, want) == 0)
		round_trip(dst, want, levels[data[3] % 3]);
	free(dst);

	round_trip(data + 4, size - 4, levels[data[0] % 3]);
	return 0;
}
