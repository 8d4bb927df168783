/*
 * crypto.c: hashing, randomness and the AES-256-GCM seal/open of blocks
 * and chunks, plus the AAD and nonce layouts they are bound to.
 *
 * Every function is thread-safe: each seal/open uses its own cipher
 * context, and OpenSSL errors are drained into the log by this thread.
 */
#include <sys/types.h>
#include <sys/uio.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "common.h"

#define AAD_FORMAT_VERSION	1
#define AAD_LEN			(2 + KEY_ID_LEN + CHUNK_ID_LEN + 8)

_Static_assert(AAD_LEN <= AAD_MAX_LEN, "AAD does not fit AAD_MAX_LEN");

/*
 * Writes the SHA-256 of data to out.  A failing digest is a broken
 * library, not bad input, hence fatal.
 */
void
crypto_sha256(const void *data, size_t len, uint8_t out[CHUNK_ID_LEN])
{
	unsigned int	 outlen = 0;

	if (EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) != 1 ||
	    outlen != CHUNK_ID_LEN) {
		log_ssl("SHA-256");
		fatalx("SHA-256 failed");
	}
}

/* SHA-256 over several buffers.  Returns 0, or -1 with errno. */
int
crypto_sha256_iov(const struct iovec *iov, int iovcnt,
    uint8_t out[CHUNK_ID_LEN])
{
	EVP_MD_CTX	*ctx;
	int		 i, rv = -1;

	if ((ctx = EVP_MD_CTX_new()) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto fail;
	for (i = 0; i < iovcnt; i++)
		if (EVP_DigestUpdate(ctx, iov[i].iov_base,
		    iov[i].iov_len) != 1)
			goto fail;
	if (EVP_DigestFinal_ex(ctx, out, NULL) != 1)
		goto fail;
	rv = 0;
 fail:
	EVP_MD_CTX_free(ctx);
	if (rv == -1)
		errno = EIO;
	return rv;
}

/* Fills buf with len bytes from the CSPRNG.  Returns 0, or -1 (logged). */
int
crypto_random(void *buf, size_t len)
{
	uint8_t	*p = buf;
	int	 n;

	while (len > 0) {
		n = len > INT_MAX ? INT_MAX : (int)len;
		if (RAND_bytes(p, n) != 1) {
			log_ssl("random number generator");
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Erases a key or password in a way the compiler cannot optimise out. */
void
crypto_wipe(void *buf, size_t len)
{
	if (buf != NULL && len > 0)
		OPENSSL_cleanse(buf, len);
}

/*
 * Builds the AAD that binds a sealed buffer to what it is: format
 * version, purpose (AAD_*), key id (NULL: all zero), chunk id and block
 * index, 58 bytes.  Returns the length written to out.
 */
size_t
crypto_aad(uint8_t out[AAD_MAX_LEN], uint8_t purpose, const uint8_t *key_id,
    const uint8_t chunk_id[CHUNK_ID_LEN], uint64_t block_index)
{
	uint8_t	*p = out;

	*p++ = AAD_FORMAT_VERSION;
	*p++ = purpose;
	if (key_id != NULL)
		memcpy(p, key_id, KEY_ID_LEN);
	else
		memset(p, 0, KEY_ID_LEN);
	p += KEY_ID_LEN;
	memcpy(p, chunk_id, CHUNK_ID_LEN);
	p += CHUNK_ID_LEN;
	put_be64(p, block_index);
	p += 8;
	return (size_t)(p - out);
}

/*
 * Builds a 96-bit GCM nonce: 4 bytes big-endian prefix (which sender or
 * key use), then 8 bytes big-endian counter.  The caller keeps the
 * counter unique per key.
 */
void
crypto_nonce(uint8_t out[AEAD_NONCE_LEN], uint32_t prefix, uint64_t counter)
{
	put_be32(out, prefix);
	put_be64(out + 4, counter);
}

/*
 * AES-256-GCM encryption.  Writes ptlen bytes of ciphertext followed by
 * the AEAD_TAG_LEN-byte tag to out (which may equal pt).  Returns 0, or
 * -1 (logged) on a library failure or a length above INT_MAX.
 */
int
crypto_seal(const uint8_t key[AEAD_KEY_LEN],
    const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t *aad, size_t aadlen,
    const void *pt, size_t ptlen, uint8_t *out)
{
	EVP_CIPHER_CTX	*ctx = NULL;
	int		 len, ret = -1;

	if (ptlen > INT_MAX || aadlen > INT_MAX) {
		log_warnx("crypto_seal: buffer too large");
		goto fail;
	}
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL,
	    NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, AEAD_NONCE_LEN,
	    NULL) != 1 ||
	    EVP_EncryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
		goto sslfail;
	if (aadlen > 0 &&
	    EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)aadlen) != 1)
		goto sslfail;
	if (ptlen > 0) {
		if (EVP_EncryptUpdate(ctx, out, &len, pt, (int)ptlen) != 1 ||
		    (size_t)len != ptlen)
			goto sslfail;
	}
	/* GCM is a stream mode: final produces no further bytes. */
	if (EVP_EncryptFinal_ex(ctx, out + ptlen, &len) != 1 || len != 0 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AEAD_TAG_LEN,
	    out + ptlen) != 1)
		goto sslfail;
	ret = 0;
	goto fail;
 sslfail:
	log_ssl("crypto_seal: AES-256-GCM encryption");
 fail:
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}

/*
 * AES-256-GCM decryption of ct (ctlen includes the trailing tag) into
 * out, which receives ctlen - AEAD_TAG_LEN bytes and may equal ct.
 * Returns 0, or -1 if ct is shorter than a tag, fails authentication
 * (not logged: the caller names the object) or the library fails
 * (logged).  On -1 out holds no plaintext: it is cleansed.
 */
int
crypto_open(const uint8_t key[AEAD_KEY_LEN],
    const uint8_t nonce[AEAD_NONCE_LEN], const uint8_t *aad, size_t aadlen,
    const void *ct, size_t ctlen, uint8_t *out)
{
	EVP_CIPHER_CTX	*ctx = NULL;
	uint8_t		 tag[AEAD_TAG_LEN];
	size_t		 ptlen = 0;
	int		 len, ret = -1;

	if (ctlen < AEAD_TAG_LEN)
		goto fail;
	ptlen = ctlen - AEAD_TAG_LEN;
	if (ptlen > INT_MAX || aadlen > INT_MAX) {
		log_warnx("crypto_open: buffer too large");
		ptlen = 0;
		goto fail;
	}
	/* Copied first: out may overlap ct. */
	memcpy(tag, (const uint8_t *)ct + ptlen, AEAD_TAG_LEN);
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL,
	    NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, AEAD_NONCE_LEN,
	    NULL) != 1 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) != 1)
		goto sslfail;
	if (aadlen > 0 &&
	    EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aadlen) != 1)
		goto sslfail;
	if (ptlen > 0) {
		if (EVP_DecryptUpdate(ctx, out, &len, ct, (int)ptlen) != 1 ||
		    (size_t)len != ptlen)
			goto sslfail;
	}
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, AEAD_TAG_LEN,
	    tag) != 1)
		goto sslfail;
	/* Fails without queueing an error when the tag does not match. */
	if (EVP_DecryptFinal_ex(ctx, out + ptlen, &len) != 1)
		goto fail;
	ret = 0;
	goto done;
 sslfail:
	log_ssl("crypto_open: AES-256-GCM decryption");
 fail:
	if (ptlen > 0)
		OPENSSL_cleanse(out, ptlen);
 done:
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}

/*
 * Writes 2 * len lowercase hex digits and a NUL to out, which must
 * hold 2 * len + 1 bytes.
 */
void
hex_encode(const uint8_t *bin, size_t len, char *out)
{
	static const char	 digits[] = "0123456789abcdef";
	size_t			 i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[bin[i] >> 4];
		out[2 * i + 1] = digits[bin[i] & 0x0f];
	}
	out[2 * len] = '\0';
}

static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Decodes str into outlen bytes.  Returns 0 only if str is exactly
 * 2 * outlen hex digits (either case); on -1 out is left untouched.
 */
int
hex_decode(const char *str, uint8_t *out, size_t outlen)
{
	size_t	 i;

	if (outlen > SIZE_MAX / 2 - 1 ||
	    strnlen(str, 2 * outlen + 1) != 2 * outlen)
		return -1;
	for (i = 0; i < 2 * outlen; i++)
		if (hex_value(str[i]) == -1)
			return -1;
	for (i = 0; i < outlen; i++)
		out[i] = (uint8_t)(hex_value(str[2 * i]) << 4 |
		    hex_value(str[2 * i + 1]));
	return 0;
}
