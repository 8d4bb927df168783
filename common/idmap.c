/*
 * idmap.c: a disk's chunk ids, 32 bytes a block, held so that the ids
 * of its holes take no memory.
 *
 * The ids live in a private anonymous mapping with a bit per
 * ID_MAP_PAGE saying which pages were ever written.  A zero id (a hole
 * or a zero block) is never written to an untouched page, and an
 * untouched page is never read either: its ids are handed out, hashed
 * and written from a static run of zeros.  Reading it would do on most
 * kernels, but not every kernel maps its shared zero page for such a
 * read (docs/PERFORMANCE.md, 2026-12-06), and calloc may clear recycled
 * heap memory, writing every page.  So a sparse disk of any size costs
 * 32 bytes per block with data, plus a bit per 128 blocks.
 *
 * Both daemons hold their per-block ids this way: the target a
 * backup's index and its checkpoint snapshots, the source a restore
 * point's ids and an incremental's base.
 */

#include <sys/mman.h>
#include <sys/uio.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define ID_MAP_PAGE	4096		/* pages tracked as written */
#define ID_MAP_ZERO_RUN	(64u << 10)	/* untouched bytes per iovec */

static const uint8_t	 id_map_zeros[ID_MAP_ZERO_RUN];

static size_t
id_map_len(uint64_t blocks)
{
	return (size_t)blocks * CHUNK_ID_LEN;
}

static size_t
id_map_pages(uint64_t blocks)
{
	return (id_map_len(blocks) + ID_MAP_PAGE - 1) / ID_MAP_PAGE;
}

static int
id_map_touched(const struct id_map *m, size_t page)
{
	return (m->im_touched[page / 8] >> (page % 8)) & 1;
}

/*
 * m holds blocks zero ids.  Returns 0, or -1 with errno ENOMEM (or
 * EFBIG if the array would not fit in memory's addresses).
 */
int
id_map_init(struct id_map *m, uint64_t blocks)
{
	void	*p;

	memset(m, 0, sizeof(*m));
	if (blocks > SIZE_MAX / CHUNK_ID_LEN) {
		errno = EFBIG;
		return -1;
	}
	p = mmap(NULL, blocks > 0 ? id_map_len(blocks) : 1, PROT_READ |
	    PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return -1;
	}
	m->im_ids = p;
	m->im_blocks = blocks;
	if ((m->im_touched = calloc(id_map_pages(blocks) / 8 + 1, 1)) ==
	    NULL) {
		id_map_free(m);
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

/* Safe on a zeroed or freed map. */
void
id_map_free(struct id_map *m)
{
	if (m->im_ids != NULL)
		(void)munmap(m->im_ids, m->im_blocks > 0 ?
		    id_map_len(m->im_blocks) : 1);
	free(m->im_touched);
	memset(m, 0, sizeof(*m));
}

/* The id of block i (< im_blocks); good while m lives. */
const uint8_t *
id_map_get(const struct id_map *m, uint64_t i)
{
	/* An id never spans two pages: ID_MAP_PAGE is a multiple of it. */
	if (!id_map_touched(m, i * CHUNK_ID_LEN / ID_MAP_PAGE))
		return id_map_zeros;
	return m->im_ids + i * CHUNK_ID_LEN;
}

/* Whether block i (< im_blocks) has the zero id: a hole or zeros. */
int
id_map_is_zero(const struct id_map *m, uint64_t i)
{
	return memcmp(id_map_get(m, i), id_map_zeros, CHUNK_ID_LEN) == 0;
}

/* Block i (< im_blocks) holds id; a zero id touches no page. */
void
id_map_set(struct id_map *m, uint64_t i, const uint8_t *id)
{
	size_t	 page = i * CHUNK_ID_LEN / ID_MAP_PAGE;

	if (!id_map_touched(m, page)) {
		if (memcmp(id, id_map_zeros, CHUNK_ID_LEN) == 0)
			return;
		m->im_touched[page / 8] |= 1u << (page % 8);
	}
	memcpy(m->im_ids + i * CHUNK_ID_LEN, id, CHUNK_ID_LEN);
}

/* Blocks first .. first + n - 1 (within im_blocks) hold ids. */
void
id_map_put(struct id_map *m, uint64_t first, const uint8_t *ids, size_t n)
{
	size_t	 k;

	for (k = 0; k < n; k++)
		id_map_set(m, first + k, ids + k * CHUNK_ID_LEN);
}

/*
 * dst becomes a copy of src, its written pages only.  Returns 0, or
 * -1 with errno as id_map_init (dst is then zeroed).
 */
int
id_map_copy(struct id_map *dst, const struct id_map *src)
{
	size_t	 page, pages = id_map_pages(src->im_blocks);
	size_t	 len = id_map_len(src->im_blocks), off;

	if (id_map_init(dst, src->im_blocks) == -1)
		return -1;
	memcpy(dst->im_touched, src->im_touched, pages / 8 + 1);
	for (page = 0; page < pages; page++) {
		if (!id_map_touched(src, page))
			continue;
		off = page * ID_MAP_PAGE;
		memcpy(dst->im_ids + off, src->im_ids + off,
		    len - off < ID_MAP_PAGE ? len - off : ID_MAP_PAGE);
	}
	return 0;
}

/*
 * The whole array as iovecs, for hashing and writing: runs of written
 * pages from the mapping, runs of untouched ones from id_map_zeros.
 * The array has `before` free slots first and one free slot last for
 * the caller; *n counts all.  NULL (ENOMEM) on failure; free() it.
 */
struct iovec *
id_map_iov(const struct id_map *m, int before, int *n)
{
	struct iovec	*iov;
	size_t		 pages = id_map_pages(m->im_blocks);
	size_t		 len = id_map_len(m->im_blocks);
	size_t		 page, run, off, end;
	int		 k = before, t;

	if (pages + before + 1 > INT_MAX ||
	    (iov = calloc(pages + before + 1, sizeof(*iov))) == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	for (page = 0; page < pages; page = run) {
		t = id_map_touched(m, page);
		for (run = page + 1; run < pages &&
		    id_map_touched(m, run) == t &&
		    (t || (run - page) * ID_MAP_PAGE < ID_MAP_ZERO_RUN); run++)
			;
		off = page * ID_MAP_PAGE;
		end = run * ID_MAP_PAGE < len ? run * ID_MAP_PAGE : len;
		iov[k].iov_base = t ? (void *)(m->im_ids + off) :
		    (void *)id_map_zeros;
		iov[k].iov_len = end - off;
		k++;
	}
	*n = k + 1;
	return iov;
}

/* SHA-256 of the whole array.  Returns 0, or -1 with errno. */
int
id_map_sha256(const struct id_map *m, uint8_t out[CHUNK_ID_LEN])
{
	struct iovec	*iov;
	int		 n, rv;

	if ((iov = id_map_iov(m, 0, &n)) == NULL)
		return -1;
	rv = crypto_sha256_iov(iov, n - 1, out);
	free(iov);
	return rv;
}
