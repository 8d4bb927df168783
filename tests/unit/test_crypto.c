/*
 * test_crypto.c: AES-256-GCM seal/open, known-answer vectors, AAD and
 * nonce layouts, hex encoding.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common.h"

/* Decodes a hex literal of a test vector into a malloc'd buffer. */
static uint8_t *
unhex(const char *hex, size_t *lenp)
{
	size_t	 len = strlen(hex) / 2;
	uint8_t	*buf;

	assert_int_equal(strlen(hex) % 2, 0);
	buf = malloc(len > 0 ? len : 1);
	assert_non_null(buf);
	assert_int_equal(hex_decode(hex, buf, len), 0);
	*lenp = len;
	return buf;
}

struct fixture {
	uint8_t		 key[AEAD_KEY_LEN];
	uint8_t		 nonce[AEAD_NONCE_LEN];
	uint8_t		 aad[AAD_MAX_LEN];
	size_t		 aadlen;
	uint8_t		 pt[1000];
	uint8_t		 ct[1000 + AEAD_TAG_LEN];
	uint8_t		 out[1000];
};

static int
setup(void **state)
{
	struct fixture	*f;
	uint8_t		 chunk[CHUNK_ID_LEN];

	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -1;
	if (crypto_random(f->key, sizeof(f->key)) == -1 ||
	    crypto_random(f->pt, sizeof(f->pt)) == -1)
		return -1;
	crypto_nonce(f->nonce, 7, 42);
	crypto_sha256(f->pt, sizeof(f->pt), chunk);
	f->aadlen = crypto_aad(f->aad, AAD_BLOCK_TO_TARGET, NULL, chunk, 3);
	if (crypto_seal(f->key, f->nonce, f->aad, f->aadlen, f->pt,
	    sizeof(f->pt), f->ct) == -1)
		return -1;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	free(*state);
	return 0;
}

static void
test_round_trip(void **state)
{
	struct fixture	*f = *state;

	/* Ciphertext differs from plaintext and opens back to it. */
	assert_memory_not_equal(f->ct, f->pt, sizeof(f->pt));
	assert_int_equal(crypto_open(f->key, f->nonce, f->aad, f->aadlen,
	    f->ct, sizeof(f->ct), f->out), 0);
	assert_memory_equal(f->out, f->pt, sizeof(f->pt));
}

static void
test_in_place(void **state)
{
	struct fixture	*f = *state;
	uint8_t		 buf[sizeof(f->pt) + AEAD_TAG_LEN];

	memcpy(buf, f->pt, sizeof(f->pt));
	assert_int_equal(crypto_seal(f->key, f->nonce, f->aad, f->aadlen, buf,
	    sizeof(f->pt), buf), 0);
	assert_memory_equal(buf, f->ct, sizeof(buf));
	assert_int_equal(crypto_open(f->key, f->nonce, f->aad, f->aadlen, buf,
	    sizeof(buf), buf), 0);
	assert_memory_equal(buf, f->pt, sizeof(f->pt));
}

/* Opening must fail and leave no plaintext behind. */
static void
assert_open_fails(const uint8_t *key, const uint8_t *nonce,
    const uint8_t *aad, size_t aadlen, const uint8_t *ct, size_t ctlen,
    const uint8_t *pt)
{
	uint8_t	 out[1000];
	size_t	 ptlen = ctlen >= AEAD_TAG_LEN ? ctlen - AEAD_TAG_LEN : 0;

	memset(out, 0xa5, sizeof(out));
	assert_int_equal(crypto_open(key, nonce, aad, aadlen, ct, ctlen, out),
	    -1);
	if (ptlen > 0)
		assert_memory_not_equal(out, pt, ptlen);
}

static void
test_tampered_tag(void **state)
{
	struct fixture	*f = *state;

	f->ct[sizeof(f->ct) - 1] ^= 0x01;
	assert_open_fails(f->key, f->nonce, f->aad, f->aadlen, f->ct,
	    sizeof(f->ct), f->pt);
}

static void
test_tampered_ciphertext(void **state)
{
	struct fixture	*f = *state;

	f->ct[500] ^= 0x80;
	assert_open_fails(f->key, f->nonce, f->aad, f->aadlen, f->ct,
	    sizeof(f->ct), f->pt);
}

static void
test_tampered_nonce(void **state)
{
	struct fixture	*f = *state;

	f->nonce[11] ^= 0x01;
	assert_open_fails(f->key, f->nonce, f->aad, f->aadlen, f->ct,
	    sizeof(f->ct), f->pt);
}

static void
test_tampered_aad(void **state)
{
	struct fixture	*f = *state;
	uint8_t		 chunk[CHUNK_ID_LEN];
	uint8_t		 aad[AAD_MAX_LEN];
	size_t		 aadlen;

	/* Another block index: a replayed or reordered block. */
	crypto_sha256(f->pt, sizeof(f->pt), chunk);
	aadlen = crypto_aad(aad, AAD_BLOCK_TO_TARGET, NULL, chunk, 4);
	assert_open_fails(f->key, f->nonce, aad, aadlen, f->ct,
	    sizeof(f->ct), f->pt);
	/* Another purpose: a block reflected back to its sender. */
	aadlen = crypto_aad(aad, AAD_BLOCK_TO_SOURCE, NULL, chunk, 3);
	assert_open_fails(f->key, f->nonce, aad, aadlen, f->ct,
	    sizeof(f->ct), f->pt);
	/* A truncated AAD. */
	assert_open_fails(f->key, f->nonce, f->aad, f->aadlen - 1, f->ct,
	    sizeof(f->ct), f->pt);
}

static void
test_wrong_key(void **state)
{
	struct fixture	*f = *state;

	f->key[0] ^= 0x01;
	assert_open_fails(f->key, f->nonce, f->aad, f->aadlen, f->ct,
	    sizeof(f->ct), f->pt);
}

static void
test_short_ciphertext(void **state)
{
	struct fixture	*f = *state;

	assert_open_fails(f->key, f->nonce, f->aad, f->aadlen, f->ct,
	    AEAD_TAG_LEN - 1, f->pt);
	assert_open_fails(f->key, f->nonce, f->aad, f->aadlen, f->ct, 0,
	    f->pt);
	/* Truncated by one byte: the tag is then taken from the wrong place. */
	assert_open_fails(f->key, f->nonce, f->aad, f->aadlen, f->ct,
	    sizeof(f->ct) - 1, f->pt);
}

static void
test_empty_plaintext(void **state)
{
	struct fixture	*f = *state;
	uint8_t		 ct[AEAD_TAG_LEN], out[1];

	assert_int_equal(crypto_seal(f->key, f->nonce, f->aad, f->aadlen,
	    NULL, 0, ct), 0);
	assert_int_equal(crypto_open(f->key, f->nonce, f->aad, f->aadlen, ct,
	    sizeof(ct), out), 0);
	ct[0] ^= 1;
	assert_int_equal(crypto_open(f->key, f->nonce, f->aad, f->aadlen, ct,
	    sizeof(ct), out), -1);
}

/* Checks one known-answer vector both ways. */
static void
check_gcm_vector(const char *khex, const char *ivhex, const char *ahex,
    const char *phex, const char *chex, const char *thex)
{
	uint8_t	*k, *iv, *a, *p, *c, *t, *out, *back;
	size_t	 klen, ivlen, alen, plen, clen, tlen;

	k = unhex(khex, &klen);
	iv = unhex(ivhex, &ivlen);
	a = unhex(ahex, &alen);
	p = unhex(phex, &plen);
	c = unhex(chex, &clen);
	t = unhex(thex, &tlen);
	assert_int_equal(klen, AEAD_KEY_LEN);
	assert_int_equal(ivlen, AEAD_NONCE_LEN);
	assert_int_equal(clen, plen);
	assert_int_equal(tlen, AEAD_TAG_LEN);
	out = malloc(plen + AEAD_TAG_LEN);
	back = malloc(plen + 1);
	assert_non_null(out);
	assert_non_null(back);

	assert_int_equal(crypto_seal(k, iv, a, alen, p, plen, out), 0);
	assert_memory_equal(out, c, clen);
	assert_memory_equal(out + plen, t, AEAD_TAG_LEN);
	assert_int_equal(crypto_open(k, iv, a, alen, out, plen + AEAD_TAG_LEN,
	    back), 0);
	assert_memory_equal(back, p, plen);

	free(k);
	free(iv);
	free(a);
	free(p);
	free(c);
	free(t);
	free(out);
	free(back);
}

/* McGrew & Viega, "The Galois/Counter Mode of Operation", test cases. */
static void
test_gcm_known_answers(void **state)
{
	/* Test case 14: 256-bit zero key, one zero block. */
	check_gcm_vector(
	    "0000000000000000000000000000000000000000000000000000000000000000",
	    "000000000000000000000000", "",
	    "00000000000000000000000000000000",
	    "cea7403d4d606b6e074ec5d3baf39d18",
	    "d0d1c8a799996bf0265b98b5d48ab919");
	/* Test case 15: no AAD, four blocks. */
	check_gcm_vector(
	    "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
	    "cafebabefacedbaddecaf888", "",
	    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
	    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
	    "b094dac5d93471bdec1a502270e3cc6c");
	/* Test case 16: AAD and a partial last block. */
	check_gcm_vector(
	    "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
	    "cafebabefacedbaddecaf888",
	    "feedfacedeadbeeffeedfacedeadbeefabaddad2",
	    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
	    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
	    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
	    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
	    "76fc6ece0f4e1768cddf8853bb2d551b");
}

static void
test_sha256(void **state)
{
	uint8_t	 md[CHUNK_ID_LEN];
	char	 hex[2 * CHUNK_ID_LEN + 1];

	crypto_sha256("abc", 3, md);
	hex_encode(md, sizeof(md), hex);
	assert_string_equal(hex,
	    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	crypto_sha256("", 0, md);
	hex_encode(md, sizeof(md), hex);
	assert_string_equal(hex,
	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void
test_hex(void **state)
{
	const uint8_t	 bin[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
	uint8_t		 back[sizeof(bin)];
	char		 hex[2 * sizeof(bin) + 1];

	hex_encode(bin, sizeof(bin), hex);
	assert_string_equal(hex, "00017f80abff");
	assert_int_equal(hex_decode(hex, back, sizeof(back)), 0);
	assert_memory_equal(back, bin, sizeof(bin));
	assert_int_equal(hex_decode("00017F80ABFF", back, sizeof(back)), 0);
	assert_memory_equal(back, bin, sizeof(bin));

	/* Wrong length either way, odd length, non-hex digits. */
	assert_int_equal(hex_decode("00017f80ab", back, sizeof(back)), -1);
	assert_int_equal(hex_decode("00017f80abff00", back, sizeof(back)), -1);
	assert_int_equal(hex_decode("00017f80abf", back, sizeof(back)), -1);
	assert_int_equal(hex_decode("00017f80abfg", back, sizeof(back)), -1);
	assert_int_equal(hex_decode(" 0017f80abff", back, sizeof(back)), -1);
	assert_int_equal(hex_decode("", back, 0), 0);
	assert_int_equal(hex_decode("00", back, 0), -1);
}

static void
test_nonce_layout(void **state)
{
	const uint8_t	 want[AEAD_NONCE_LEN] = {
		0x01, 0x02, 0x03, 0x04,
		0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c,
	};
	uint8_t		 nonce[AEAD_NONCE_LEN];

	crypto_nonce(nonce, 0x01020304u, 0x05060708090a0b0cull);
	assert_memory_equal(nonce, want, sizeof(want));
}

static void
test_aad_layout(void **state)
{
	uint8_t	 aad[AAD_MAX_LEN], key_id[KEY_ID_LEN], chunk[CHUNK_ID_LEN];
	uint8_t	 zero[KEY_ID_LEN] = { 0 };
	size_t	 i, len;

	for (i = 0; i < sizeof(key_id); i++)
		key_id[i] = (uint8_t)(0x10 + i);
	for (i = 0; i < sizeof(chunk); i++)
		chunk[i] = (uint8_t)(0x80 + i);
	len = crypto_aad(aad, AAD_CHUNK_STORED, key_id, chunk,
	    0x0102030405060708ull);
	assert_int_equal(len, 58);
	assert_int_equal(aad[0], 1);
	assert_int_equal(aad[1], AAD_CHUNK_STORED);
	assert_memory_equal(aad + 2, key_id, KEY_ID_LEN);
	assert_memory_equal(aad + 18, chunk, CHUNK_ID_LEN);
	for (i = 0; i < 8; i++)
		assert_int_equal(aad[50 + i], i + 1);

	len = crypto_aad(aad, AAD_BLOCK_TO_SOURCE, NULL, chunk, 0);
	assert_int_equal(len, 58);
	assert_int_equal(aad[1], AAD_BLOCK_TO_SOURCE);
	assert_memory_equal(aad + 2, zero, KEY_ID_LEN);
}

static void
test_random(void **state)
{
	uint8_t	 a[32], b[32];

	assert_int_equal(crypto_random(a, sizeof(a)), 0);
	assert_int_equal(crypto_random(b, sizeof(b)), 0);
	assert_memory_not_equal(a, b, sizeof(a));
	crypto_wipe(a, sizeof(a));
	memset(b, 0, sizeof(b));
	assert_memory_equal(a, b, sizeof(a));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_in_place, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered_tag, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tampered_ciphertext, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tampered_nonce, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_tampered_aad, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_wrong_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_ciphertext, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_empty_plaintext, setup,
		    teardown),
		cmocka_unit_test(test_gcm_known_answers),
		cmocka_unit_test(test_sha256),
		cmocka_unit_test(test_hex),
		cmocka_unit_test(test_nonce_layout),
		cmocka_unit_test(test_aad_layout),
		cmocka_unit_test(test_random),
	};

	log_init("test_crypto", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
