/*
 * compress.c: zstd compression of blocks.
 *
 * Each thread keeps one compression and one decompression context in
 * thread-specific storage, so worker threads reuse them block after
 * block; they are freed when the thread exits.
 */
#include <sys/types.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <zstd.h>
#include <zstd_errors.h>

#include "common.h"

static pthread_once_t	 compress_once = PTHREAD_ONCE_INIT;
static pthread_key_t	 compress_cctx_key;
static pthread_key_t	 compress_dctx_key;

static void
compress_cctx_free(void *cctx)
{
	ZSTD_freeCCtx(cctx);
}

static void
compress_dctx_free(void *dctx)
{
	ZSTD_freeDCtx(dctx);
}

/* Only fails when the process is out of keys: a broken invariant. */
static void
compress_keys_init(void)
{
	if (pthread_key_create(&compress_cctx_key, compress_cctx_free) != 0 ||
	    pthread_key_create(&compress_dctx_key, compress_dctx_free) != 0)
		fatalx("compress: cannot create thread keys");
}

/* Returns this thread's compression context, or NULL (logged). */
static ZSTD_CCtx *
compress_cctx(void)
{
	ZSTD_CCtx	*cctx;

	if (pthread_once(&compress_once, compress_keys_init) != 0)
		fatalx("compress: pthread_once failed");
	if ((cctx = pthread_getspecific(compress_cctx_key)) != NULL)
		return cctx;
	if ((cctx = ZSTD_createCCtx()) == NULL) {
		log_warnx("compress: cannot allocate a zstd context");
		return NULL;
	}
	if (pthread_setspecific(compress_cctx_key, cctx) != 0) {
		log_warnx("compress: cannot keep the zstd context");
		ZSTD_freeCCtx(cctx);
		return NULL;
	}
	return cctx;
}

/* Returns this thread's decompression context, or NULL (logged). */
static ZSTD_DCtx *
compress_dctx(void)
{
	ZSTD_DCtx	*dctx;

	if (pthread_once(&compress_once, compress_keys_init) != 0)
		fatalx("compress: pthread_once failed");
	if ((dctx = pthread_getspecific(compress_dctx_key)) != NULL)
		return dctx;
	if ((dctx = ZSTD_createDCtx()) == NULL) {
		log_warnx("compress: cannot allocate a zstd context");
		return NULL;
	}
	if (pthread_setspecific(compress_dctx_key, dctx) != 0) {
		log_warnx("compress: cannot keep the zstd context");
		ZSTD_freeDCtx(dctx);
		return NULL;
	}
	return dctx;
}

/* Returns the worst-case compressed size of srclen bytes. */
size_t
compress_bound(size_t srclen)
{
	return ZSTD_compressBound(srclen);
}

/*
 * Compresses src into dst at the given zstd level (0: zstd's default).
 * Returns the compressed length when it is strictly smaller than
 * srclen, 0 when compression would not shrink the block (the caller
 * stores it raw), or -1 on error (logged).  dstcap should be at least
 * srclen - 1; a smaller dst that turns out too small is an error.
 */
ssize_t
compress_block(int level, const void *src, size_t srclen, void *dst,
    size_t dstcap)
{
	ZSTD_CCtx	*cctx;
	size_t		 cap, n;

	if (srclen == 0)
		return 0;
	if ((cctx = compress_cctx()) == NULL)
		return -1;
	/* Capped below srclen: zstd gives up as soon as it cannot win. */
	cap = dstcap < srclen - 1 ? dstcap : srclen - 1;
	n = ZSTD_compressCCtx(cctx, dst, cap, src, srclen, level);
	if (ZSTD_isError(n)) {
		if (ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall &&
		    cap == srclen - 1)
			return 0;
		log_warnx("compress: %s", ZSTD_getErrorName(n));
		return -1;
	}
	if (n >= srclen)
		return 0;
	return (ssize_t)n;
}

/*
 * Decompresses one zstd frame of srclen bytes into dst.  Returns 0 only
 * if src is exactly one frame that declares and yields expected_len
 * bytes; -1 otherwise (not logged: the caller names the chunk).  Never
 * writes past dst + expected_len and never allocates by what the frame
 * claims.
 */
int
decompress_block(const void *src, size_t srclen, void *dst,
    size_t expected_len)
{
	ZSTD_DCtx		*dctx;
	unsigned long long	 content;
	size_t			 n;

	/* The declared size is checked before anything is decoded. */
	content = ZSTD_getFrameContentSize(src, srclen);
	if (content == ZSTD_CONTENTSIZE_UNKNOWN ||
	    content == ZSTD_CONTENTSIZE_ERROR || content != expected_len)
		return -1;
	/* No second frame or trailing bytes may hide behind the first. */
	n = ZSTD_findFrameCompressedSize(src, srclen);
	if (ZSTD_isError(n) || n != srclen)
		return -1;
	if ((dctx = compress_dctx()) == NULL)
		return -1;
	n = ZSTD_decompressDCtx(dctx, dst, expected_len, src, srclen);
	if (ZSTD_isError(n) || n != expected_len)
		return -1;
	return 0;
}

/*
 * The round-trip check of a block before it leaves: 0 only if comp,
 * clen bytes of zstd, decompresses to exactly the len bytes of raw.
 * scratch must hold len bytes.  A mismatch means a compressor or memory
 * fault on this machine, not bad input; not logged (the caller names
 * the block).
 */
int
compress_verify(const void *comp, size_t clen, const void *raw, size_t len,
    void *scratch)
{
	if (decompress_block(comp, clen, scratch, len) == -1 ||
	    memcmp(scratch, raw, len) != 0)
		return -1;
	return 0;
}
