/*
 * test_idmap.c: a disk's chunk ids with the pages of its holes never
 * touched (common/idmap.c).  Each case compares the map with a flat
 * array of the same ids, and mincore(2) shows which pages of the
 * mapping ever became memory: a read of an untouched page would map
 * one too (the zero page), so "not resident" means "never read".
 */
#include <sys/mman.h>
#include <sys/uio.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common.h"

#define BLOCKS		(1u << 20)	/* a 1 TiB disk in 1 MiB blocks */
#define IDS_PER_PAGE	(4096 / CHUNK_ID_LEN)

/* Resident pages of m's mapping. */
static size_t
resident_pages(const struct id_map *m)
{
	size_t		 len = (size_t)m->im_blocks * CHUNK_ID_LEN;
	size_t		 pg = (size_t)sysconf(_SC_PAGESIZE);
	size_t		 n = (len + pg - 1) / pg, i, count = 0;
	unsigned char	*vec;

	assert_non_null(vec = malloc(n));
	assert_int_equal(mincore(m->im_ids, len, vec), 0);
	for (i = 0; i < n; i++)
		count += vec[i] & 1;
	free(vec);
	return count;
}

/* A distinct non-zero id for block i. */
static void
make_id(uint64_t i, uint8_t id[CHUNK_ID_LEN])
{
	crypto_sha256(&i, sizeof(i), id);
}

/*
 * Ids at the start and the end of a 1 TiB disk, zero ids in between
 * (as the target sends its holes): only the pages with data become
 * memory, through every read of the whole map.
 */
static void
test_sparse(void **state)
{
	struct id_map	 m, c;
	uint8_t		*flat, *piece, sum[CHUNK_ID_LEN], want[CHUNK_ID_LEN];
	struct iovec	*iov;
	uint64_t	 i, first;
	size_t		 n = 32768, len = 0, off = 0;
	int		 niov, k;

	assert_int_equal(id_map_init(&m, BLOCKS), 0);
	assert_non_null(flat = calloc(BLOCKS, CHUNK_ID_LEN));
	assert_non_null(piece = calloc(n, CHUNK_ID_LEN));
	/* Every piece goes in, as BaseIndex pieces do: mostly zeros. */
	for (first = 0; first < BLOCKS; first += n) {
		memset(piece, 0, n * CHUNK_ID_LEN);
		for (i = first; i < first + n; i++)
			if (i < 1000 || i >= BLOCKS - 300)
				make_id(i, piece + (i - first) * CHUNK_ID_LEN);
		memcpy(flat + first * CHUNK_ID_LEN, piece, n * CHUNK_ID_LEN);
		id_map_put(&m, first, piece, n);
	}
	for (i = 0; i < BLOCKS; i++) {
		assert_memory_equal(id_map_get(&m, i), flat + i * CHUNK_ID_LEN,
		    CHUNK_ID_LEN);
		assert_int_equal(id_map_is_zero(&m, i),
		    !(i < 1000 || i >= BLOCKS - 300));
	}
	/* The whole map hashes as the flat array. */
	crypto_sha256(flat, (size_t)BLOCKS * CHUNK_ID_LEN, want);
	assert_int_equal(id_map_sha256(&m, sum), 0);
	assert_memory_equal(sum, want, CHUNK_ID_LEN);
	/* ... and reads as it through iovecs, with the free slots asked. */
	assert_non_null(iov = id_map_iov(&m, 2, &niov));
	for (k = 2; k < niov - 1; k++) {
		assert_memory_equal(iov[k].iov_base, flat + off,
		    iov[k].iov_len);
		off += iov[k].iov_len;
	}
	len = off;
	assert_int_equal(len, (size_t)BLOCKS * CHUNK_ID_LEN);
	free(iov);
	/* A copy holds the same, its written pages only. */
	assert_int_equal(id_map_copy(&c, &m), 0);
	assert_int_equal(id_map_sha256(&c, sum), 0);
	assert_memory_equal(sum, want, CHUNK_ID_LEN);
	/* 1000 ids fill 8 pages (7.8), the last 300 fill 3 (2.3). */
	assert_in_range(resident_pages(&m), 10, 12);
	assert_in_range(resident_pages(&c), 10, 12);
	id_map_free(&c);
	id_map_free(&m);
	assert_null(m.im_ids);
	id_map_free(&m);	/* twice: safe */
	free(piece);
	free(flat);
}

/* Setting a zero id clears a written one; on an untouched page, no-op. */
static void
test_set(void **state)
{
	struct id_map	 m;
	uint8_t		 id[CHUNK_ID_LEN], zero[CHUNK_ID_LEN] = { 0 };

	assert_int_equal(id_map_init(&m, 4 * IDS_PER_PAGE + 3), 0);
	make_id(7, id);
	id_map_set(&m, IDS_PER_PAGE + 5, id);
	assert_memory_equal(id_map_get(&m, IDS_PER_PAGE + 5), id,
	    CHUNK_ID_LEN);
	assert_int_equal(id_map_is_zero(&m, IDS_PER_PAGE + 4), 1);
	id_map_set(&m, IDS_PER_PAGE + 5, zero);
	assert_int_equal(id_map_is_zero(&m, IDS_PER_PAGE + 5), 1);
	id_map_set(&m, 3 * IDS_PER_PAGE, zero);
	assert_int_equal(resident_pages(&m), 1);
	/* The last, partial page. */
	id_map_set(&m, 4 * IDS_PER_PAGE + 2, id);
	assert_memory_equal(id_map_get(&m, 4 * IDS_PER_PAGE + 2), id,
	    CHUNK_ID_LEN);
	assert_int_equal(resident_pages(&m), 2);
	id_map_free(&m);
}

/* An empty map, and one too large for the address space. */
static void
test_edges(void **state)
{
	struct id_map	 m;
	uint8_t		 sum[CHUNK_ID_LEN], want[CHUNK_ID_LEN];

	assert_int_equal(id_map_init(&m, 0), 0);
	crypto_sha256("", 0, want);
	assert_int_equal(id_map_sha256(&m, sum), 0);
	assert_memory_equal(sum, want, CHUNK_ID_LEN);
	id_map_free(&m);
	assert_int_equal(id_map_init(&m, UINT64_MAX / 2), -1);
	assert_null(m.im_ids);
	id_map_free(&m);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sparse),
		cmocka_unit_test(test_set),
		cmocka_unit_test(test_edges),
	};

	log_init("test_idmap", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
