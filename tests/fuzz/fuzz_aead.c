/*
 * fuzz_aead.c: the AES-256-GCM open path (common/crypto.c) on
 * arbitrary nonces, AAD and ciphertext, plus hex_decode().
 *
 * Input: a 12-byte nonce, one byte of AAD length (modulo AAD_MAX_LEN
 * + 1), the AAD, then ciphertext and tag.  Opening must not crash, must
 * write no more than the plaintext length, and must leave no plaintext
 * behind when it fails.  Then the same bytes are sealed and must open
 * again, in place too, while any single flipped bit must not.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fuzz.h"

static uint8_t	 fuzz_key[AEAD_KEY_LEN];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	memset(fuzz_key, FUZZ_AEAD_KEY_BYTE, sizeof(fuzz_key));
	return 0;
}

static int
all_zero(const uint8_t *p, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

/* Seals pt and checks that it opens, and that a flipped bit does not. */
static void
seal_open(const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t *aad,
    size_t aadlen, const uint8_t *pt, size_t ptlen, size_t flip)
{
	uint8_t	*sealed, *out;
	size_t	 len = ptlen + AEAD_TAG_LEN;

	sealed = malloc(len);
	out = malloc(ptlen > 0 ? ptlen : 1);
	FUZZ_CHECK(sealed != NULL && out != NULL);
	FUZZ_CHECK(crypto_seal(fuzz_key, nonce, aad, aadlen, pt, ptlen,
	    sealed) == 0);
	FUZZ_CHECK(crypto_open(fuzz_key, nonce, aad, aadlen, sealed, len,
	    out) == 0);
	FUZZ_CHECK(ptlen == 0 || memcmp(out, pt, ptlen) == 0);

	sealed[flip % len] ^= (uint8_t)(1u << (flip % 8));
	FUZZ_CHECK(crypto_open(fuzz_key, nonce, aad, aadlen, sealed, len,
	    out) == -1);
	FUZZ_CHECK(all_zero(out, ptlen));
	sealed[flip % len] ^= (uint8_t)(1u << (flip % 8));

	/* In place, as the daemons may do. */
	FUZZ_CHECK(crypto_open(fuzz_key, nonce, aad, aadlen, sealed, len,
	    sealed) == 0);
	FUZZ_CHECK(ptlen == 0 || memcmp(sealed, pt, ptlen) == 0);
	free(out);
	free(sealed);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t		 nonce[AEAD_NONCE_LEN], aad[AAD_MAX_LEN];
	uint8_t		 id[CHUNK_ID_LEN], aadbuf[AAD_MAX_LEN];
	uint8_t		*out, *ct;
	char		*str;
	size_t		 aadlen, ctlen, ptlen, n;

	/* hex_decode of the whole input as a string. */
	if ((str = malloc(size + 1)) == NULL)
		abort();
	memcpy(str, data, size);
	str[size] = '\0';
	if (hex_decode(str, id, sizeof(id)) == 0)
		FUZZ_CHECK(size >= 2 * sizeof(id));
	free(str);

	if (size < AEAD_NONCE_LEN + 1)
		return 0;
	memcpy(nonce, data, AEAD_NONCE_LEN);
	aadlen = data[AEAD_NONCE_LEN] % (AAD_MAX_LEN + 1);
	data += AEAD_NONCE_LEN + 1;
	size -= AEAD_NONCE_LEN + 1;
	if (size < aadlen)
		return 0;
	memcpy(aad, data, aadlen);
	data += aadlen;
	size -= aadlen;

	/* Exactly the bytes given, and an output of exactly ptlen. */
	ctlen = size;
	ptlen = ctlen >= AEAD_TAG_LEN ? ctlen - AEAD_TAG_LEN : 0;
	ct = malloc(ctlen > 0 ? ctlen : 1);
	out = malloc(ptlen > 0 ? ptlen : 1);
	FUZZ_CHECK(ct != NULL && out != NULL);
	memcpy(ct, data, ctlen);
	if (crypto_open(fuzz_key, nonce, aad, aadlen, ct, ctlen, out) == -1)
		FUZZ_CHECK(all_zero(out, ptlen) || ctlen < AEAD_TAG_LEN);
	/* Short ciphertext: no tag to check, nothing written. */
	if (ctlen < AEAD_TAG_LEN)
		FUZZ_CHECK(crypto_open(fuzz_key, nonce, aad, aadlen, ct,
		    ctlen, out) == -1);
	free(out);

	seal_open(nonce, aad, aadlen, ct, ctlen, ctlen * 31 + aadlen);

	/* The AAD layout binds what it is given, in a fixed length. */
	memset(id, 0, sizeof(id));
	memcpy(id, ct, ctlen < sizeof(id) ? ctlen : sizeof(id));
	n = crypto_aad(aadbuf, (uint8_t)aadlen, ctlen >= KEY_ID_LEN ? ct :
	    NULL, id, ctlen);
	FUZZ_CHECK(n > 0 && n <= AAD_MAX_LEN);
	free(ct);
	return 0;
}
