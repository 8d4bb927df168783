/*
 * checkcost.c: what the source's round-trip check costs next to the
 * other stages of a block, on one core, with the product's functions
 * and the non-zero 1 MiB blocks of a real image (docs/PERFORMANCE.md).
 *
 *   cc -O2 -Icommon -Ibuild/proto -o build/checkcost tests/bench/checkcost.c \
 *       build/libcommon.a $(pkg-config --libs libzstd libcrypto libevent \
 *       libprotobuf-c) -lpthread
 *   build/checkcost IMAGE [MAXBLOCKS]
 *
 * Prints process CPU seconds per stage over the same blocks: SHA-256,
 * zstd -1, the check (decompress + compare), AES-256-GCM seal and open.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define BS	(1u << 20)

static double
cpu_s(void)
{
	struct timespec	 t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int
main(int argc, char **argv)
{
	uint8_t		**raw, **comp, *buf, *chk, *sealed, id[CHUNK_ID_LEN];
	uint8_t		 key[AEAD_KEY_LEN] = { 1 }, nonce[AEAD_NONCE_LEN] = { 0 };
	uint8_t		 aad[AAD_MAX_LEN] = { 0 };
	size_t		*clen, n = 0, max, i, plen, total = 0;
	double		 t[6];
	off_t		 off = 0;
	int		 fd, bad = 0;

	if (argc < 2 || (fd = open(argv[1], O_RDONLY)) == -1) {
		fprintf(stderr, "usage: checkcost IMAGE [MAXBLOCKS]\n");
		return 2;
	}
	max = argc > 2 ? strtoul(argv[2], NULL, 10) : 1024;
	raw = calloc(max, sizeof(*raw));
	comp = calloc(max, sizeof(*comp));
	clen = calloc(max, sizeof(*clen));
	chk = malloc(BS);
	sealed = malloc(BS + AEAD_TAG_LEN);
	buf = malloc(BS);
	if (!raw || !comp || !clen || !chk || !sealed || !buf)
		return 1;
	while (n < max && pread(fd, buf, BS, off) == (ssize_t)BS) {
		off += BS;
		if (buf[0] == 0 && memcmp(buf, buf + 1, BS - 1) == 0)
			continue;
		raw[n++] = buf;
		if ((buf = malloc(BS)) == NULL)
			return 1;
	}
	t[0] = cpu_s();
	for (i = 0; i < n; i++)
		crypto_sha256(raw[i], BS, id);
	t[1] = cpu_s();
	for (i = 0; i < n; i++) {
		if ((comp[i] = malloc(compress_bound(BS))) == NULL)
			return 1;
		clen[i] = (size_t)compress_block(1, raw[i], BS, comp[i],
		    compress_bound(BS));
		total += clen[i] > 0 ? clen[i] : BS;
	}
	t[2] = cpu_s();
	for (i = 0; i < n; i++)
		if (clen[i] > 0 && compress_verify(comp[i], clen[i], raw[i], BS,
		    chk) != 0)
			bad++;
	t[3] = cpu_s();
	for (i = 0; i < n; i++) {
		plen = clen[i] > 0 ? clen[i] : BS;
		(void)crypto_seal(key, nonce, aad, 58, clen[i] > 0 ? comp[i] :
		    raw[i], plen, sealed);
	}
	t[4] = cpu_s();
	for (i = 0; i < n; i++) {
		plen = clen[i] > 0 ? clen[i] : BS;
		(void)crypto_open(key, nonce, aad, 58, sealed, plen +
		    AEAD_TAG_LEN, chk);	/* fails: timing only */
	}
	t[5] = cpu_s();
	printf("%zu non-zero blocks, %zu bytes compressed, %d failed the "
	    "check\n", n, total, bad);
	printf("sha256 %.3f s\nzstd -1 %.3f s\ncheck (decompress + compare) "
	    "%.3f s\nseal %.3f s\nopen %.3f s\n", t[1] - t[0], t[2] - t[1],
	    t[3] - t[2], t[4] - t[3], t[5] - t[4]);
	return bad != 0;
}
