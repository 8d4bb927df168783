/*
 * fuzz.h: what the libFuzzer harnesses in tests/fuzz/ and their seed
 * generator (mkcorpus.c) share: the on-disk layouts the repository
 * harness rebuilds, and a check that aborts so libFuzzer records it.
 *
 * The layouts are private to target-transporter/repo.c; they are
 * repeated here, and a harness that stops finding anything after a
 * format change is the sign to update them.
 */
#ifndef TRANSPORTER_FUZZ_H
#define TRANSPORTER_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* A broken invariant: abort, so that libFuzzer saves the input. */
#define FUZZ_CHECK(cond) do {						\
	if (!(cond)) {							\
		fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,	\
		    __LINE__, #cond);					\
		abort();						\
	}								\
} while (0)

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

/* fuzz_aead: the one key every input is opened with. */
#define FUZZ_AEAD_KEY_BYTE	0x5c

/* fuzz_decompress: largest expected length tried. */
#define FUZZ_DECOMPRESS_MAX	(16u << 20)	/* BLOCK_SIZE_MAX */

/*
 * fuzz_repo: the first input byte picks what the rest is (modulo
 * FUZZ_REPO_MODES); the files go to a fixed tenant, name and point id.
 */
#define FUZZ_REPO_CHUNK		0	/* a chunk object, as is */
#define FUZZ_REPO_CHUNK_SUM	1	/* a chunk, payload digest fixed up */
#define FUZZ_REPO_MANIFEST	2	/* a manifest file, as is */
#define FUZZ_REPO_MANIFEST_PB	3	/* a Manifest message, framed by us */
#define FUZZ_REPO_INDEX		4	/* an index, with a manifest to match */
#define FUZZ_REPO_MODES		5

#define FUZZ_TENANT		"t"
#define FUZZ_NAME		"vm"
#define FUZZ_POINT_ID		"20240101T000000Z-00000001"
#define FUZZ_CHUNK_BYTE		0xab	/* the chunk id: 32 times this */

/* repo.c's layouts. */
#define FUZZ_CHUNK_MAGIC	"TRCK"
#define FUZZ_CHUNK_HDR_LEN	48
#define FUZZ_CHUNK_SUM_OFF	16	/* payload checksum: to the header's end */
#define FUZZ_CHUNK_VERSION_SHA256 1	/* SHA-256; 2 is XXH3-128 */
#define FUZZ_INDEX_MAGIC	"TRIX"
#define FUZZ_INDEX_HDR_LEN	20	/* block size at 8, blocks at 12 */
#define FUZZ_MANIFEST_MAGIC	"TRMF"
#define FUZZ_MANIFEST_FORMAT	1

#endif /* TRANSPORTER_FUZZ_H */
