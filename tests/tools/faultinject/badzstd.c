/*
 * badzstd.so: a test-only LD_PRELOAD shim that plays a compressor which
 * gets one block wrong.  It wraps libzstd's ZSTD_compressCCtx: when the
 * input starts with the bytes of BADZSTD_PREFIX, one bit in the middle
 * of the compressed output is flipped, so the block no longer
 * decompresses to what was read.  Never linked into the daemons;
 * tests/integration/roundtrip.sh preloads it into the source to show
 * that the round-trip check keeps such a block from being sent.
 *
 *	BADZSTD_PREFIX	the first bytes of the block(s) to spoil (required;
 *			without it the shim changes nothing)
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

size_t
ZSTD_compressCCtx(ZSTD_CCtx *cctx, void *dst, size_t cap, const void *src,
    size_t len, int level)
{
	static size_t	(*real)(ZSTD_CCtx *, void *, size_t, const void *,
			    size_t, int);
	const char	*prefix = getenv("BADZSTD_PREFIX");
	size_t		 n, plen;

	if (real == NULL)
		*(void **)&real = dlsym(RTLD_NEXT, "ZSTD_compressCCtx");
	if (real == NULL)
		abort();
	n = real(cctx, dst, cap, src, len, level);
	plen = prefix != NULL ? strlen(prefix) : 0;
	if (!ZSTD_isError(n) && n > 0 && plen > 0 && plen <= len &&
	    memcmp(src, prefix, plen) == 0)
		((unsigned char *)dst)[n / 2] ^= 0x01;
	return n;
}
