/*
 * test_keys.c: common/keys.c without a KMS.  Wrap/unwrap and what must
 * fail, password KEKs, key chains (round trip, hostile input, rewrap),
 * exported key files, keyed chunk ids, no key byte in any output.
 * KMIP KEKs are made by hand here; tests/integration/keys.sh fetches
 * them from a real PyKMIP server.
 */
#include <sys/stat.h>

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <argon2.h>

#include "common.h"
#include "keys.h"

#define TEST_MEMORY_KIB	"64"	/* Argon2id memory for fast tests */

/* A KMIP-like KEK with a random key, as kek_from_kmip() would fill it. */
static void
fake_kmip_kek(struct kek *kek, const char *uid, int64_t version)
{
	KekRef	 r = KEK_REF__INIT;

	memset(kek, 0, sizeof(*kek));
	assert_int_equal(key_buf_alloc(&kek->k_key), 0);
	assert_int_equal(crypto_random(kek->k_key.kb_key, KEY_LEN), 0);
	r.provider = KEY_PROVIDER__KEY_PROVIDER_KMIP;
	r.kms = "127.0.0.1:5696";
	r.key_name = "acme-kek";
	r.key_id = (char *)uid;
	r.version = version;
	assert_non_null(kek->k_ref = kek_ref_dup(&r));
}

/* Does needle (len bytes) occur in hay, or any 8-byte window of it? */
static int
contains(const uint8_t *hay, size_t haylen, const uint8_t *needle,
    size_t len)
{
	size_t	 i, j;

	for (j = 0; j + 8 <= len; j++)
		for (i = 0; i + 8 <= haylen; i++)
			if (memcmp(hay + i, needle + j, 8) == 0)
				return 1;
	return 0;
}

static void
test_key_buf(void **state)
{
	struct key_buf	 a = { NULL, 0 }, b = { NULL, 0 };
	uint8_t		 id[KEY_ID_LEN];
	char		 ka[2 * KEY_KCV_LEN + 1], kb[2 * KEY_KCV_LEN + 1];

	assert_int_equal(dek_new(&a, id), 0);
	assert_non_null(a.kb_key);
	assert_true(a.kb_maplen >= KEY_LEN);
	assert_int_equal(key_buf_copy(&b, &a), 0);
	assert_memory_equal(a.kb_key, b.kb_key, KEY_LEN);
	assert_int_equal(key_check_value(&a, ka), 0);
	assert_int_equal(key_check_value(&b, kb), 0);
	assert_string_equal(ka, kb);
	assert_int_equal(strlen(ka), 2 * KEY_KCV_LEN);
	b.kb_key[0] ^= 1;
	assert_int_equal(key_check_value(&b, kb), 0);
	assert_string_not_equal(ka, kb);
	key_buf_free(&a);
	assert_null(a.kb_key);
	assert_int_equal(a.kb_maplen, 0);
	key_buf_free(&a);		/* twice is fine */
	key_buf_free(NULL);
	key_buf_free(&b);
}

static void
test_wrap_round_trip(void **state)
{
	struct kek	 kek;
	struct key_buf	 dek = { NULL, 0 }, out = { NULL, 0 };
	WrappedKey	*w1 = NULL, *w2 = NULL;
	uint8_t		 id[KEY_ID_LEN];
	char		 err[KEY_ERR_MAX];

	fake_kmip_kek(&kek, "7", 1700000000);
	assert_int_equal(dek_new(&dek, id), 0);
	assert_int_equal(key_wrap(&kek, KEY_PURPOSE_DATA, id, &dek, &w1, err,
	    sizeof(err)), 0);
	assert_int_equal(key_wrapped_check(w1, err, sizeof(err)), 0);
	assert_int_equal(w1->key_id.len, KEY_ID_LEN);
	assert_memory_equal(w1->key_id.data, id, KEY_ID_LEN);
	assert_int_equal(w1->purpose, KEY_PURPOSE_DATA);
	assert_int_equal(w1->wrapped.len, KEY_WRAPPED_LEN);
	assert_true(kek_ref_same(w1->kek, kek.k_ref));
	assert_string_equal(w1->kek->key_id, "7");
	assert_string_equal(w1->kek->key_name, "acme-kek");
	assert_int_equal(key_unwrap(&kek, w1, &out, err, sizeof(err)), 0);
	assert_memory_equal(out.kb_key, dek.kb_key, KEY_LEN);

	/* A fresh nonce each time: two wraps of one key differ. */
	assert_int_equal(key_wrap(&kek, KEY_PURPOSE_DATA, id, &dek, &w2, err,
	    sizeof(err)), 0);
	assert_memory_not_equal(w1->wrapped.data, w2->wrapped.data,
	    KEY_WRAPPED_LEN);
	assert_false(contains(w1->wrapped.data, KEY_WRAPPED_LEN, dek.kb_key,
	    KEY_LEN));

	key_wrapped_free(w1);
	key_wrapped_free(w2);
	key_buf_free(&dek);
	key_buf_free(&out);
	kek_free(&kek);
	kek_free(&kek);			/* twice is fine */
}

static void
test_unwrap_failures(void **state)
{
	struct kek	 kek, other, samekey;
	struct key_buf	 dek = { NULL, 0 }, out = { NULL, 0 };
	WrappedKey	*w = NULL;
	uint8_t		 id[KEY_ID_LEN], save;
	char		 err[KEY_ERR_MAX];
	size_t		 i;
	int64_t		 v;

	fake_kmip_kek(&kek, "7", 1700000000);
	fake_kmip_kek(&other, "7", 1700000000);	/* same ref, other key */
	assert_int_equal(dek_new(&dek, id), 0);
	assert_int_equal(key_wrap(&kek, KEY_PURPOSE_DATA, id, &dek, &w, err,
	    sizeof(err)), 0);

	/* Every bit of nonce, ciphertext and tag is authenticated. */
	for (i = 0; i < KEY_WRAPPED_LEN; i++) {
		w->wrapped.data[i] ^= 0x40;
		assert_int_equal(key_unwrap(&kek, w, &out, err, sizeof(err)),
		    -1);
		assert_non_null(strstr(err, "does not authenticate"));
		w->wrapped.data[i] ^= 0x40;
	}
	/* out holds nothing after a failure. */
	assert_non_null(out.kb_key);
	assert_memory_not_equal(out.kb_key, dek.kb_key, KEY_LEN);

	/* A different key under the same reference. */
	assert_int_equal(key_unwrap(&other, w, &out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not authenticate"));

	/* The key id and the purpose are bound into the AAD. */
	save = w->key_id.data[3];
	w->key_id.data[3] ^= 1;
	assert_int_equal(key_unwrap(&kek, w, &out, err, sizeof(err)), -1);
	w->key_id.data[3] = save;
	w->purpose = KEY_PURPOSE_CHUNK_ID;
	assert_int_equal(key_unwrap(&kek, w, &out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "chunk-id key"));
	w->purpose = KEY_PURPOSE_DATA;

	/* So is the KEK's version: the same key bytes as another version. */
	memset(&samekey, 0, sizeof(samekey));
	assert_int_equal(key_buf_copy(&samekey.k_key, &kek.k_key), 0);
	v = kek.k_ref->version;
	kek.k_ref->version = v + 1;
	assert_non_null(samekey.k_ref = kek_ref_dup(kek.k_ref));
	kek.k_ref->version = v;
	assert_int_equal(key_unwrap(&samekey, w, &out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is wrapped by KMIP key 7 'acme-kek' "
	    "version 1700000000"));
	w->kek->version = v + 1;	/* the reference lies */
	assert_int_equal(key_unwrap(&samekey, w, &out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "does not authenticate"));
	w->kek->version = v;

	/* A wrong KEK reference is named. */
	assert_int_equal(key_unwrap(&samekey, w, &out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "on KMS 127.0.0.1:5696"));

	/* Lengths and purposes are checked before anything else. */
	w->wrapped.len--;
	assert_int_equal(key_unwrap(&kek, w, &out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "59 bytes"));
	w->wrapped.len++;
	w->key_id.len--;
	assert_int_equal(key_unwrap(&kek, w, &out, err, sizeof(err)), -1);
	w->key_id.len++;
	w->purpose = 9;
	assert_int_equal(key_unwrap(&kek, w, &out, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "unknown purpose 9"));
	w->purpose = KEY_PURPOSE_DATA;
	key_wrapped_free(w);
	assert_int_equal(key_wrap(&kek, 9, id, &dek, &w, err, sizeof(err)),
	    -1);
	assert_null(w);
	assert_int_equal(key_unwrap(&kek, NULL, &out, err, sizeof(err)), -1);

	key_buf_free(&dek);
	key_buf_free(&out);
	kek_free(&kek);
	kek_free(&other);
	kek_free(&samekey);
}

static void
test_password(void **state)
{
	struct kek	 a, b, c, d;
	char		 err[KEY_ERR_MAX];
	KekRef		*hostile;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	memset(&c, 0, sizeof(c));
	memset(&d, 0, sizeof(d));
	assert_int_equal(kek_from_password("correct horse", NULL, &a, err,
	    sizeof(err)), 0);
	assert_int_equal(a.k_ref->provider,
	    KEY_PROVIDER__KEY_PROVIDER_PASSWORD);
	assert_int_equal(a.k_ref->kdf_salt.len, KEK_KDF_SALT_LEN);
	assert_int_equal(a.k_ref->kdf_t_cost, KEK_KDF_T_COST);
	assert_int_equal(a.k_ref->kdf_m_cost_kib, atoi(TEST_MEMORY_KIB));
	assert_int_equal(a.k_ref->kdf_parallelism, KEK_KDF_PARALLELISM);
	assert_int_equal(a.k_ref->verifier.len, KEK_VERIFIER_LEN);
	assert_int_equal(strncmp(a.k_ref->key_id, "pw-", 3), 0);

	/* Same password and salt: same KEK. */
	assert_int_equal(kek_from_password("correct horse", a.k_ref, &b, err,
	    sizeof(err)), 0);
	assert_memory_equal(a.k_key.kb_key, b.k_key.kb_key, KEY_LEN);
	assert_true(kek_ref_same(a.k_ref, b.k_ref));
	/* Same password, fresh salt: another KEK. */
	assert_int_equal(kek_from_password("correct horse", NULL, &c, err,
	    sizeof(err)), 0);
	assert_memory_not_equal(a.k_key.kb_key, c.k_key.kb_key, KEY_LEN);
	assert_false(kek_ref_same(a.k_ref, c.k_ref));

	/* Wrong password: the verifier says so, nothing is loaded. */
	assert_int_equal(kek_set_name(&a, "backup vm1", err, sizeof(err)), 0);
	assert_int_equal(kek_from_password("battery staple", a.k_ref, &d, err,
	    sizeof(err)), -1);
	assert_int_equal(errno, EKEYREJECTED);
	assert_non_null(strstr(err, "wrong password for password key pw-"));
	assert_non_null(strstr(err, "'backup vm1'"));
	assert_null(d.k_key.kb_key);
	assert_null(d.k_ref);
	assert_int_equal(kek_from_password("", NULL, &d, err, sizeof(err)),
	    -1);
	assert_int_equal(kek_from_password(NULL, NULL, &d, err, sizeof(err)),
	    -1);

	/* Hostile parameters are refused before Argon2id runs. */
	assert_non_null(hostile = kek_ref_dup(a.k_ref));
	hostile->kdf_m_cost_kib = 1u << 30;
	assert_int_equal(kek_from_password("correct horse", hostile, &d, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "out of range"));
	hostile->kdf_m_cost_kib = a.k_ref->kdf_m_cost_kib;
	hostile->kdf_t_cost = 0;
	assert_int_equal(kek_from_password("correct horse", hostile, &d, err,
	    sizeof(err)), -1);
	hostile->kdf_t_cost = a.k_ref->kdf_t_cost;
	hostile->verifier.len = 3;
	assert_int_equal(kek_from_password("correct horse", hostile, &d, err,
	    sizeof(err)), -1);
	kek_ref__free_unpacked(hostile, NULL);

	/* A KMIP ref is not a password. */
	kek_free(&c);
	fake_kmip_kek(&c, "3", 5);
	assert_int_equal(kek_from_password("x", c.k_ref, &d, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "is not a password key"));

	/* The environment override is checked. */
	setenv(KEK_KDF_ENV_MEMORY, "lots", 1);
	assert_int_equal(kek_from_password("x", NULL, &d, err, sizeof(err)),
	    -1);
	assert_non_null(strstr(err, KEK_KDF_ENV_MEMORY));
	setenv(KEK_KDF_ENV_MEMORY, "4", 1);
	assert_int_equal(kek_from_password("x", NULL, &d, err, sizeof(err)),
	    -1);
	setenv(KEK_KDF_ENV_MEMORY, TEST_MEMORY_KIB, 1);

	kek_free(&a);
	kek_free(&b);
	kek_free(&c);
	kek_free(&d);
}

/* Without the override a new KEK gets the documented parameters. */
static void
test_password_defaults(void **state)
{
	struct kek	 a;
	char		 err[KEY_ERR_MAX];

	memset(&a, 0, sizeof(a));
	unsetenv(KEK_KDF_ENV_MEMORY);
	assert_int_equal(kek_from_password("pw", NULL, &a, err, sizeof(err)),
	    0);
	setenv(KEK_KDF_ENV_MEMORY, TEST_MEMORY_KIB, 1);
	assert_int_equal(a.k_ref->kdf_t_cost, 3);
	assert_int_equal(a.k_ref->kdf_m_cost_kib, 65536);
	assert_int_equal(a.k_ref->kdf_parallelism, 4);
	kek_free(&a);
}

/*
 * The lanes decide the key, not the threads that run them: a KEK derived
 * on fewer threads than lanes is the one the reference function (a
 * thread per lane) gives, and the stored parallelism is the one used.
 */
static void
test_password_lanes(void **state)
{
	struct kek	 a, b;
	KekRef		*other;
	uint8_t		 ref[KEY_LEN];
	char		 err[KEY_ERR_MAX];

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	assert_int_equal(kek_from_password("lanes", NULL, &a, err,
	    sizeof(err)), 0);
	assert_int_equal(argon2id_hash_raw(a.k_ref->kdf_t_cost,
	    a.k_ref->kdf_m_cost_kib, a.k_ref->kdf_parallelism, "lanes", 5,
	    a.k_ref->kdf_salt.data, a.k_ref->kdf_salt.len, ref, KEY_LEN),
	    ARGON2_OK);
	assert_memory_equal(a.k_key.kb_key, ref, KEY_LEN);
	/* Another parallelism is another key: the verifier refuses it. */
	assert_non_null(other = kek_ref_dup(a.k_ref));
	other->kdf_parallelism = 1;
	assert_int_equal(kek_from_password("lanes", other, &b, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "wrong password"));
	kek_ref__free_unpacked(other, NULL);
	kek_free(&a);
}

/* A chain of n data keys and one chunk-id key, all under kek. */
static struct keychain *
make_chain(const struct kek *kek, struct key_buf *deks, uint8_t ids[][KEY_ID_LEN],
    size_t n)
{
	struct keychain	*kc;
	WrappedKey	*w;
	char		 err[KEY_ERR_MAX];
	size_t		 i;

	assert_non_null(kc = keychain_new("vm1"));
	for (i = 0; i < n; i++) {
		assert_int_equal(dek_new(&deks[i], ids[i]), 0);
		assert_int_equal(key_wrap(kek, i == n - 1 ? KEY_PURPOSE_CHUNK_ID :
		    KEY_PURPOSE_DATA, ids[i], &deks[i], &w, err, sizeof(err)), 0);
		assert_int_equal(keychain_add(kc, w, err, sizeof(err)), 0);
		key_wrapped_free(w);
	}
	return kc;
}

/* Frames body as a TRKC file, with a correct checksum. */
static uint8_t *
frame(const char *magic, const uint8_t *body, size_t len, size_t *outlen)
{
	uint8_t	*buf;

	assert_non_null(buf = malloc(8 + len + 32));
	memcpy(buf, magic, 4);
	buf[4] = (uint8_t)(len >> 24);
	buf[5] = (uint8_t)(len >> 16);
	buf[6] = (uint8_t)(len >> 8);
	buf[7] = (uint8_t)len;
	memcpy(buf + 8, body, len);
	crypto_sha256(buf, 8 + len, buf + 8 + len);
	*outlen = 8 + len + 32;
	return buf;
}

static void
test_keychain_round_trip(void **state)
{
	struct kek	 kek;
	struct key_buf	 deks[4], out = { NULL, 0 };
	struct keychain	*kc, *kc2;
	WrappedKey	*dup;
	uint8_t		 ids[4][KEY_ID_LEN], *buf, *buf2, missing[KEY_ID_LEN];
	char		 err[KEY_ERR_MAX];
	size_t		 len, len2, i;

	memset(deks, 0, sizeof(deks));
	fake_kmip_kek(&kek, "7", 1700000000);
	kc = make_chain(&kek, deks, ids, 4);
	assert_int_equal(kc->kc_nkeys, 4);

	/* Adding a key already there changes nothing. */
	assert_non_null(dup = key_wrapped_dup(kc->kc_keys[1]));
	assert_int_equal(keychain_add(kc, dup, err, sizeof(err)), 0);
	assert_int_equal(kc->kc_nkeys, 4);
	key_wrapped_free(dup);

	assert_int_equal(keychain_pack(kc, &buf, &len, err, sizeof(err)), 0);
	assert_memory_equal(buf, KEYCHAIN_MAGIC, 4);
	assert_non_null(kc2 = keychain_unpack(buf, len, err, sizeof(err)));
	assert_string_equal(kc2->kc_name, "vm1");
	assert_int_equal(kc2->kc_nkeys, 4);
	assert_int_equal(keychain_pack(kc2, &buf2, &len2, err, sizeof(err)),
	    0);
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);
	for (i = 0; i < 4; i++) {
		assert_non_null(keychain_find(kc2, ids[i]));
		assert_int_equal(key_unwrap(&kek, keychain_find(kc2, ids[i]),
		    &out, err, sizeof(err)), 0);
		assert_memory_equal(out.kb_key, deks[i].kb_key, KEY_LEN);
		/* No key byte in the file. */
		assert_false(contains(buf, len, deks[i].kb_key, KEY_LEN));
	}
	assert_false(contains(buf, len, kek.k_key.kb_key, KEY_LEN));
	assert_non_null(keychain_chunk_key(kc2));
	assert_memory_equal(keychain_chunk_key(kc2)->key_id.data, ids[3],
	    KEY_ID_LEN);
	memset(missing, 0xee, sizeof(missing));
	assert_null(keychain_find(kc2, missing));
	assert_false(keychain_dropped(kc2, missing));

	/* The ids prune dropped: sorted, repeats gone, kept by a round trip. */
	keychain_free(kc2);
	free(buf2);
	{
		uint8_t	 d[3][KEY_ID_LEN];

		memset(d[0], 0xee, KEY_ID_LEN);
		memset(d[1], 0x11, KEY_ID_LEN);
		memset(d[2], 0xee, KEY_ID_LEN);
		assert_int_equal(keychain_set_dropped(kc, d[0], 3), 0);
		assert_int_equal(kc->kc_ndropped, 2);
		assert_memory_equal(kc->kc_dropped, d[1], KEY_ID_LEN);
	}
	assert_int_equal(keychain_pack(kc, &buf2, &len2, err, sizeof(err)),
	    0);
	assert_non_null(kc2 = keychain_unpack(buf2, len2, err, sizeof(err)));
	assert_int_equal(kc2->kc_ndropped, 2);
	assert_true(keychain_dropped(kc2, missing));
	assert_false(keychain_dropped(kc2, ids[0]));
	assert_int_equal(keychain_set_dropped(kc, NULL, 0), 0);
	assert_int_equal(kc->kc_ndropped, 0);

	/* An empty chain round-trips too. */
	keychain_free(kc2);
	free(buf2);
	assert_non_null(kc2 = keychain_new(""));
	assert_null(keychain_chunk_key(kc2));
	assert_int_equal(keychain_pack(kc2, &buf2, &len2, err, sizeof(err)),
	    0);
	keychain_free(kc2);
	assert_non_null(kc2 = keychain_unpack(buf2, len2, err, sizeof(err)));
	assert_int_equal(kc2->kc_nkeys, 0);
	keychain_free(kc2);
	free(buf2);

	free(buf);
	keychain_free(kc);
	for (i = 0; i < 4; i++)
		key_buf_free(&deks[i]);
	key_buf_free(&out);
	kek_free(&kek);
}

static void
test_keychain_hostile(void **state)
{
	struct kek	 kek;
	struct key_buf	 deks[2];
	struct keychain	*kc, *bad;
	KeyChain	 m = KEY_CHAIN__INIT;
	WrappedKey	**many;
	uint8_t		 ids[2][KEY_ID_LEN], *buf, *body, *f;
	char		 err[KEY_ERR_MAX];
	size_t		 len, blen, flen, i;

	memset(deks, 0, sizeof(deks));
	fake_kmip_kek(&kek, "7", 1700000000);
	kc = make_chain(&kek, deks, ids, 2);
	assert_int_equal(keychain_pack(kc, &buf, &len, err, sizeof(err)), 0);

	/* Every prefix and every single-byte change is refused. */
	for (i = 0; i < len; i++) {
		assert_null(bad = keychain_unpack(buf, i, err, sizeof(err)));
		assert_true(err[0] != '\0');
	}
	for (i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		assert_null(keychain_unpack(buf, len, err, sizeof(err)));
		buf[i] ^= 0x01;
	}
	/* A huge length field fails before anything is allocated. */
	buf[4] = 0xff;
	assert_null(keychain_unpack(buf, len, err, sizeof(err)));
	assert_non_null(strstr(err, "header says 42"));
	buf[4] = 0;
	/* An exported key file is not a chain, nor the reverse. */
	memcpy(buf, KEYCHAIN_EXPORT_MAGIC, 4);
	assert_null(keychain_unpack(buf, len, err, sizeof(err)));
	memcpy(buf, KEYCHAIN_MAGIC, 4);
	assert_null(keychain_unpack(buf, KEYCHAIN_MAX + 1, err, sizeof(err)));

	/* Checksums right, content wrong. */
	m.format = KEYCHAIN_FORMAT;
	m.name = "vm1";
	m.n_keys = kc->kc_nkeys;
	m.keys = kc->kc_keys;
	kc->kc_keys[1]->wrapped.len = 59;
	blen = key_chain__get_packed_size(&m);
	assert_non_null(body = malloc(blen));
	key_chain__pack(&m, body);
	f = frame(KEYCHAIN_MAGIC, body, blen, &flen);
	assert_null(keychain_unpack(f, flen, err, sizeof(err)));
	assert_non_null(strstr(err, "59 bytes, not 60"));
	free(f);
	free(body);
	kc->kc_keys[1]->wrapped.len = 60;

	memcpy(kc->kc_keys[1]->key_id.data, kc->kc_keys[0]->key_id.data,
	    KEY_ID_LEN);
	blen = key_chain__get_packed_size(&m);
	assert_non_null(body = malloc(blen));
	key_chain__pack(&m, body);
	f = frame(KEYCHAIN_MAGIC, body, blen, &flen);
	assert_null(keychain_unpack(f, flen, err, sizeof(err)));
	assert_non_null(strstr(err, "appears twice"));
	free(f);
	free(body);

	m.format = 2;
	blen = key_chain__get_packed_size(&m);
	assert_non_null(body = malloc(blen));
	key_chain__pack(&m, body);
	f = frame(KEYCHAIN_MAGIC, body, blen, &flen);
	assert_null(keychain_unpack(f, flen, err, sizeof(err)));
	assert_non_null(strstr(err, "format 2"));
	free(f);
	free(body);
	m.format = KEYCHAIN_FORMAT;

	/* A list of dropped ids out of order, or of the wrong size. */
	{
		ProtobufCBinaryData	 d[2];
		uint8_t			 a[KEY_ID_LEN], b[KEY_ID_LEN];

		memset(a, 0x22, sizeof(a));
		memset(b, 0x11, sizeof(b));
		d[0].data = a;
		d[0].len = KEY_ID_LEN;
		d[1].data = b;
		d[1].len = KEY_ID_LEN;
		m.n_dropped = 2;
		m.dropped = d;
		for (i = 0; i < 2; i++) {
			blen = key_chain__get_packed_size(&m);
			assert_non_null(body = malloc(blen));
			key_chain__pack(&m, body);
			f = frame(KEYCHAIN_MAGIC, body, blen, &flen);
			assert_null(keychain_unpack(f, flen, err,
			    sizeof(err)));
			assert_non_null(strstr(err, "dropped"));
			free(f);
			free(body);
			d[1].data = a;		/* sorted now, */
			d[1].len = KEY_ID_LEN - 1;	/* but short */
			d[0].data = b;
		}
		m.n_dropped = 0;
		m.dropped = NULL;
	}

	f = frame(KEYCHAIN_MAGIC, (const uint8_t *)"\xff\xff\xff", 3, &flen);
	assert_null(keychain_unpack(f, flen, err, sizeof(err)));
	assert_non_null(strstr(err, "malformed"));
	free(f);

	/* More keys than allowed. */
	assert_non_null(many = calloc(KEYCHAIN_KEYS_MAX + 1, sizeof(*many)));
	for (i = 0; i <= KEYCHAIN_KEYS_MAX; i++)
		many[i] = kc->kc_keys[0];
	m.n_keys = KEYCHAIN_KEYS_MAX + 1;
	m.keys = many;
	blen = key_chain__get_packed_size(&m);
	assert_true(blen < KEYCHAIN_MAX - 40);
	assert_non_null(body = malloc(blen));
	key_chain__pack(&m, body);
	f = frame(KEYCHAIN_MAGIC, body, blen, &flen);
	assert_null(keychain_unpack(f, flen, err, sizeof(err)));
	assert_non_null(strstr(err, "more than 65536 keys"));
	free(f);
	free(body);
	free(many);

	free(buf);
	keychain_free(kc);
	for (i = 0; i < 2; i++)
		key_buf_free(&deks[i]);
	kek_free(&kek);
}

static void
test_rewrap(void **state)
{
	struct kek	 k1, k2, k3;
	const struct kek *old[2];
	struct key_buf	 deks[3], out = { NULL, 0 };
	struct keychain	*kc;
	WrappedKey	*w;
	KekRef		**refs;
	uint8_t		 ids[3][KEY_ID_LEN], *before, *after;
	char		 err[KEY_ERR_MAX];
	size_t		 i, n, blen, alen;

	memset(deks, 0, sizeof(deks));
	/* Same second: the ids break the tie, numerically (9 < 10). */
	fake_kmip_kek(&k1, "9", 1700000000);
	fake_kmip_kek(&k2, "10", 1700000000);
	fake_kmip_kek(&k3, "11", 1700000100);
	assert_true(kek_ref_cmp(k1.k_ref, k2.k_ref) < 0);
	assert_true(kek_ref_cmp(k2.k_ref, k3.k_ref) < 0);
	assert_true(kek_ref_cmp(k3.k_ref, k1.k_ref) > 0);
	assert_int_equal(kek_ref_cmp(k2.k_ref, k2.k_ref), 0);

	/* One point per version, newest first into the chain. */
	assert_non_null(kc = keychain_new("vm1"));
	for (i = 0; i < 3; i++) {
		const struct kek *k = i == 0 ? &k3 : i == 1 ? &k1 : &k2;

		assert_int_equal(dek_new(&deks[i], ids[i]), 0);
		assert_int_equal(key_wrap(k, KEY_PURPOSE_DATA, ids[i], &deks[i],
		    &w, err, sizeof(err)), 0);
		assert_int_equal(keychain_add(kc, w, err, sizeof(err)), 0);
		key_wrapped_free(w);
	}
	assert_int_equal(keychain_needed_keks(kc, &refs, &n, err, sizeof(err)),
	    0);
	assert_int_equal(n, 3);
	assert_string_equal(refs[0]->key_id, "9");
	assert_string_equal(refs[1]->key_id, "10");
	assert_string_equal(refs[2]->key_id, "11");
	keychain_refs_free(refs, n);

	/* A missing old KEK: an error naming it, the chain unchanged. */
	assert_int_equal(keychain_pack(kc, &before, &blen, err, sizeof(err)),
	    0);
	old[0] = &k1;
	assert_int_equal(keychain_rewrap(kc, old, 1, &k3, &n, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "needs KMIP key 10 'acme-kek'"));
	assert_int_equal(n, 0);
	assert_int_equal(keychain_pack(kc, &after, &alen, err, sizeof(err)),
	    0);
	assert_int_equal(blen, alen);
	assert_memory_equal(before, after, blen);
	free(before);
	free(after);

	old[1] = &k2;
	assert_int_equal(keychain_rewrap(kc, old, 2, &k3, &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 2);
	assert_int_equal(keychain_needed_keks(kc, &refs, &n, err, sizeof(err)),
	    0);
	assert_int_equal(n, 1);
	assert_string_equal(refs[0]->key_id, "11");
	keychain_refs_free(refs, n);
	/* Everything reads with only the newest. */
	for (i = 0; i < 3; i++) {
		assert_int_equal(key_unwrap(&k3, keychain_find(kc, ids[i]), &out,
		    err, sizeof(err)), 0);
		assert_memory_equal(out.kb_key, deks[i].kb_key, KEY_LEN);
	}
	/* Again: nothing to do. */
	assert_int_equal(keychain_rewrap(kc, NULL, 0, &k3, &n, err,
	    sizeof(err)), 0);
	assert_int_equal(n, 0);

	keychain_free(kc);
	for (i = 0; i < 3; i++)
		key_buf_free(&deks[i]);
	key_buf_free(&out);
	kek_free(&k1);
	kek_free(&k2);
	kek_free(&k3);
}

static void
test_change_password(void **state)
{
	struct kek	 pw, newk, oldk;
	struct key_buf	 deks[3], out = { NULL, 0 };
	struct keychain	*kc;
	uint8_t		 ids[3][KEY_ID_LEN];
	char		 err[KEY_ERR_MAX];
	size_t		 i;

	memset(deks, 0, sizeof(deks));
	memset(&pw, 0, sizeof(pw));
	memset(&newk, 0, sizeof(newk));
	memset(&oldk, 0, sizeof(oldk));
	assert_int_equal(kek_from_password("old secret", NULL, &pw, err,
	    sizeof(err)), 0);
	assert_int_equal(kek_set_name(&pw, "chain vm1", err, sizeof(err)), 0);
	kc = make_chain(&pw, deks, ids, 3);

	assert_int_equal(keychain_change_password(kc, "not it", "new secret",
	    &newk, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "wrong password for"));
	assert_null(newk.k_ref);
	assert_true(kek_ref_same(kc->kc_keys[0]->kek, pw.k_ref));

	assert_int_equal(keychain_change_password(kc, "old secret",
	    "new secret", &newk, err, sizeof(err)), 0);
	assert_string_equal(newk.k_ref->key_name, "chain vm1");
	for (i = 0; i < 3; i++) {
		assert_true(kek_ref_same(kc->kc_keys[i]->kek, newk.k_ref));
		assert_int_equal(key_unwrap(&newk, kc->kc_keys[i], &out, err,
		    sizeof(err)), 0);
		assert_memory_equal(out.kb_key, deks[i].kb_key, KEY_LEN);
	}
	/* The old password no longer opens the chain's keys. */
	assert_int_equal(kek_from_password("new secret",
	    kc->kc_keys[0]->kek, &oldk, err, sizeof(err)), 0);
	kek_free(&oldk);
	assert_int_equal(kek_from_password("old secret",
	    kc->kc_keys[0]->kek, &oldk, err, sizeof(err)), -1);

	keychain_free(kc);
	for (i = 0; i < 3; i++)
		key_buf_free(&deks[i]);
	key_buf_free(&out);
	kek_free(&pw);
	kek_free(&newk);
}

static void
test_export_import(void **state)
{
	struct kek	 k1, k2, xk;
	const struct kek *keks[2];
	struct key_buf	 deks[3], out = { NULL, 0 };
	struct keychain	*kc, *imp = NULL;
	WrappedKey	*w;
	uint8_t		 ids[3][KEY_ID_LEN], *buf, *cbuf;
	char		 err[KEY_ERR_MAX];
	size_t		 len, clen, i;

	memset(deks, 0, sizeof(deks));
	memset(&xk, 0, sizeof(xk));
	fake_kmip_kek(&k1, "1", 100);
	fake_kmip_kek(&k2, "2", 200);
	assert_non_null(kc = keychain_new("vm1"));
	for (i = 0; i < 3; i++) {
		assert_int_equal(dek_new(&deks[i], ids[i]), 0);
		assert_int_equal(key_wrap(i == 0 ? &k1 : &k2, KEY_PURPOSE_DATA,
		    ids[i], &deks[i], &w, err, sizeof(err)), 0);
		assert_int_equal(keychain_add(kc, w, err, sizeof(err)), 0);
		key_wrapped_free(w);
	}

	keks[0] = &k2;
	assert_int_equal(keychain_export(kc, keks, 1, "pass phrase", &buf, &len,
	    err, sizeof(err)), -1);
	assert_non_null(strstr(err, "needs KMIP key 1 'acme-kek'"));
	keks[1] = &k1;
	assert_int_equal(keychain_export(kc, keks, 2, "", &buf, &len, err,
	    sizeof(err)), -1);
	assert_int_equal(keychain_export(kc, keks, 2, "pass phrase", &buf,
	    &len, err, sizeof(err)), 0);
	assert_memory_equal(buf, KEYCHAIN_EXPORT_MAGIC, 4);
	for (i = 0; i < 3; i++)
		assert_false(contains(buf, len, deks[i].kb_key, KEY_LEN));
	assert_false(contains(buf, len, k1.k_key.kb_key, KEY_LEN));
	assert_false(contains(buf, len, k2.k_key.kb_key, KEY_LEN));
	/* Not a chain file. */
	assert_null(keychain_unpack(buf, len, err, sizeof(err)));

	assert_int_equal(keychain_import(buf, len, "wrong phrase", &imp, &xk,
	    err, sizeof(err)), -1);
	assert_non_null(strstr(err, "wrong passphrase for password key pw-"));
	assert_non_null(strstr(err, "exported key file"));
	assert_null(imp);
	assert_null(xk.k_ref);

	assert_int_equal(keychain_import(buf, len, "pass phrase", &imp, &xk,
	    err, sizeof(err)), 0);
	assert_string_equal(imp->kc_name, "vm1");
	assert_int_equal(imp->kc_nkeys, 3);
	for (i = 0; i < 3; i++) {
		assert_int_equal(key_unwrap(&xk, keychain_find(imp, ids[i]),
		    &out, err, sizeof(err)), 0);
		assert_memory_equal(out.kb_key, deks[i].kb_key, KEY_LEN);
	}

	/* A chain file is not a key file; a damaged key file is refused. */
	assert_int_equal(keychain_pack(kc, &cbuf, &clen, err, sizeof(err)), 0);
	kek_free(&xk);
	keychain_free(imp);
	imp = NULL;
	assert_int_equal(keychain_import(cbuf, clen, "pass phrase", &imp, &xk,
	    err, sizeof(err)), -1);
	buf[len / 2] ^= 1;
	assert_int_equal(keychain_import(buf, len, "pass phrase", &imp, &xk,
	    err, sizeof(err)), -1);
	assert_non_null(strstr(err, "checksum"));

	free(cbuf);
	free(buf);
	keychain_free(kc);
	for (i = 0; i < 3; i++)
		key_buf_free(&deks[i]);
	key_buf_free(&out);
	kek_free(&k1);
	kek_free(&k2);
}

static void
test_chunk_id_keyed(void **state)
{
	struct key_buf	 k1 = { NULL, 0 }, k2 = { NULL, 0 };
	uint8_t		 id[KEY_ID_LEN], data[4096], a[32], b[32], plain[32];

	assert_int_equal(dek_new(&k1, id), 0);
	assert_int_equal(dek_new(&k2, id), 0);
	assert_int_equal(crypto_random(data, sizeof(data)), 0);
	crypto_sha256(data, sizeof(data), plain);
	assert_int_equal(chunk_id_keyed(&k1, data, sizeof(data), a), 0);
	assert_memory_not_equal(a, plain, 32);
	assert_int_equal(chunk_id_keyed(&k1, data, sizeof(data), b), 0);
	assert_memory_equal(a, b, 32);		/* stable for a key */
	assert_int_equal(chunk_id_keyed(&k2, data, sizeof(data), b), 0);
	assert_memory_not_equal(a, b, 32);	/* differs between keys */
	data[100] ^= 1;
	assert_int_equal(chunk_id_keyed(&k1, data, sizeof(data), b), 0);
	assert_memory_not_equal(a, b, 32);
	assert_int_equal(chunk_id_keyed(&k1, NULL, 0, b), 0);
	key_buf_free(&k1);
	assert_int_equal(chunk_id_keyed(&k1, data, sizeof(data), b), -1);
	key_buf_free(&k2);
}

/* HMAC-SHA256 known answer, computed with Python's hmac module. */
static void
test_chunk_id_known_answer(void **state)
{
	struct key_buf	 k = { NULL, 0 };
	uint8_t		 out[32], want[32];
	size_t		 i;

	assert_int_equal(key_buf_alloc(&k), 0);
	for (i = 0; i < KEY_LEN; i++)
		k.kb_key[i] = (uint8_t)(i + 1);
	/* python3: hmac.new(bytes(range(1, 33)), b"chunk", "sha256") */
	assert_int_equal(hex_decode("2ebaa6d03b5f374a3f2648abcb9bcb78b1e1d20"
	    "bfdb20cd0058237842c1d2b7c", want, sizeof(want)), 0);
	assert_int_equal(chunk_id_keyed(&k, "chunk", 5, out), 0);
	assert_memory_equal(out, want, 32);
	key_buf_free(&k);
}

static void
test_ref_describe_check(void **state)
{
	struct kek	 k;
	KekRef		*r;
	char		 buf[KEY_ERR_MAX], err[KEY_ERR_MAX];

	fake_kmip_kek(&k, "42", 1712345678);
	kek_ref_describe(k.k_ref, buf, sizeof(buf));
	assert_string_equal(buf, "KMIP key 42 'acme-kek' version 1712345678 "
	    "on KMS 127.0.0.1:5696");
	assert_int_equal(kek_ref_check(k.k_ref, err, sizeof(err)), 0);
	assert_non_null(r = kek_ref_dup(k.k_ref));
	/* The KMS address and the name are not the key's identity. */
	free(r->kms);
	r->kms = strdup("kms2.example:5696");
	assert_true(kek_ref_same(r, k.k_ref));
	r->kdf_t_cost = 3;
	assert_int_equal(kek_ref_check(r, err, sizeof(err)), -1);
	r->kdf_t_cost = 0;
	r->provider = 7;
	assert_int_equal(kek_ref_check(r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "unknown provider 7"));
	r->provider = KEY_PROVIDER__KEY_PROVIDER_KMIP;
	r->key_name[0] = '\n';
	assert_int_equal(kek_ref_check(r, err, sizeof(err)), -1);
	kek_ref__free_unpacked(r, NULL);
	assert_int_equal(kek_ref_check(NULL, err, sizeof(err)), -1);
	kek_free(&k);
}

/* The distinct KEKs of a list: each once, NULL never the same, capped. */
static void
test_refs_add(void **state)
{
	struct kek	 a, b;
	KekRef		*refs[2], *dup;
	size_t		 n = 0;

	fake_kmip_kek(&a, "42", 1712345678);
	fake_kmip_kek(&b, "43", 1712345678);
	assert_non_null(dup = kek_ref_dup(a.k_ref));
	assert_int_equal(kek_refs_add(refs, &n, 2, a.k_ref), 1);
	assert_int_equal(kek_refs_add(refs, &n, 2, dup), 0);
	assert_int_equal(n, 1);
	assert_int_equal(kek_refs_add(refs, &n, 2, NULL), 1);
	assert_null(refs[1]);
	n = 1;
	assert_int_equal(kek_refs_add(refs, &n, 1, b.k_ref), 0);
	assert_int_equal(kek_refs_add(refs, &n, 2, b.k_ref), 1);
	assert_ptr_equal(refs[0], a.k_ref);
	assert_ptr_equal(refs[1], b.k_ref);
	assert_int_equal(n, 2);
	kek_ref__free_unpacked(dup, NULL);
	kek_free(&a);
	kek_free(&b);
}

static void
test_kmip_unreachable(void **state)
{
	struct kmip_settings	 ks;
	struct kek		 k;
	KekRef			 r = KEK_REF__INIT;
	char			 err[KEY_ERR_MAX];

	memset(&k, 0, sizeof(k));
	memset(&ks, 0, sizeof(ks));
	assert_int_equal(kek_from_kmip(NULL, "acme-kek", &k, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "no KMS configured"));
	ks.ks_host = "127.0.0.1";
	ks.ks_port = "1";
	ks.ks_cert = "/nonexistent/c.crt";
	ks.ks_key = "/nonexistent/c.key";
	ks.ks_ca = "/nonexistent/ca.crt";
	ks.ks_timeout_ms = 1000;
	assert_int_equal(kek_from_kmip(&ks, "acme-kek", &k, err, sizeof(err)),
	    -1);
	assert_non_null(strstr(err, "KEK 'acme-kek': cannot use KMS "
	    "127.0.0.1:1"));
	assert_null(k.k_ref);
	assert_null(k.k_key.kb_key);
	assert_int_equal(kek_from_kmip(&ks, "", &k, err, sizeof(err)), -1);

	r.provider = KEY_PROVIDER__KEY_PROVIDER_KMIP;
	r.kms = "10.1.1.1:5696";
	r.key_name = "acme-kek";
	r.key_id = "7";
	assert_int_equal(kek_from_kmip_ref(&ks, &r, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "key 7 'acme-kek' on KMS 127.0.0.1:1 "
	    "(recorded as 10.1.1.1:5696) is not available"));
	assert_non_null(strstr(err, "use an exported key file"));
	r.provider = KEY_PROVIDER__KEY_PROVIDER_PASSWORD;
	assert_int_equal(kek_from_kmip_ref(&ks, &r, &k, err, sizeof(err)), -1);
}

static void
test_files(void **state)
{
	char		 dir[] = "/tmp/test_keys.XXXXXX", path[64], err[KEY_ERR_MAX];
	uint8_t		*buf;
	size_t		 len;
	struct stat	 st;
	FILE		*fp;

	assert_non_null(mkdtemp(dir));
	(void)snprintf(path, sizeof(path), "%s/chain", dir);
	assert_int_equal(keychain_write_file(path, (const uint8_t *)"hello", 5,
	    err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(keychain_read_file(path, &buf, &len, err,
	    sizeof(err)), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "hello", 5);
	free(buf);
	/* A file larger than any chain is refused before reading. */
	assert_non_null(fp = fopen(path, "w"));
	assert_int_equal(fseek(fp, KEYCHAIN_MAX + 1, SEEK_SET), 0);
	assert_int_equal(fputc('x', fp), 'x');
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(keychain_read_file(path, &buf, &len, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file of at most"));
	assert_int_equal(keychain_read_file(dir, &buf, &len, err,
	    sizeof(err)), -1);
	unlink(path);
	assert_int_equal(keychain_read_file(path, &buf, &len, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "No such file"));
	rmdir(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_buf),
		cmocka_unit_test(test_wrap_round_trip),
		cmocka_unit_test(test_unwrap_failures),
		cmocka_unit_test(test_password),
		cmocka_unit_test(test_password_defaults),
		cmocka_unit_test(test_password_lanes),
		cmocka_unit_test(test_keychain_round_trip),
		cmocka_unit_test(test_keychain_hostile),
		cmocka_unit_test(test_rewrap),
		cmocka_unit_test(test_change_password),
		cmocka_unit_test(test_export_import),
		cmocka_unit_test(test_chunk_id_keyed),
		cmocka_unit_test(test_chunk_id_known_answer),
		cmocka_unit_test(test_ref_describe_check),
		cmocka_unit_test(test_refs_add),
		cmocka_unit_test(test_kmip_unreachable),
		cmocka_unit_test(test_files),
	};

	log_init("test_keys", 1, 0);
	setenv(KEK_KDF_ENV_MEMORY, TEST_MEMORY_KIB, 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
