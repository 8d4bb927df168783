/*
 * keys.c: key management.  Locked key memory, KEKs from a KMS (KMIP) or
 * a password (Argon2id), envelope encryption of DEKs with AES-256-GCM,
 * key chains and passphrase-protected key files.  See docs/KEYS.md.
 *
 * Protobuf messages this file hands out (KekRef, WrappedKey) are always
 * made by protobuf-c's unpack, never by hand, so that
 * *__free_unpacked(msg, NULL) frees every one of them correctly: a copy
 * is a pack followed by an unpack.  They hold no secret.
 */
#include <sys/types.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <search.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common.h"
#include "keys.h"
#include "kmip.h"

/* wrap AAD: format (1) | purpose (1) | key id (16) | KEK identity (32) */
#define KEY_AAD_LEN		(2 + KEY_ID_LEN + 32)
#define KEYCHAIN_HDR_LEN	8	/* magic, u32 length */
#define KEYCHAIN_SUM_LEN	32	/* SHA-256 trailer */
#define KMS_STR_MAX		300	/* "host:port", "[v6]:port" */
#define KEK_REF_NAME_MAX	(KMIP_NAME_MAX - 1)
#define KEK_REF_ID_MAX		(KMIP_UID_MAX - 1)

#define LABEL_KEK_ID		"transporter kek identity v1"
#define LABEL_VERIFIER		"transporter password verifier v1"
#define LABEL_KCV		"transporter key check value v1"

_Static_assert(KEY_LEN == AEAD_KEY_LEN, "keys are AES-256 keys");
_Static_assert(KEY_LEN == KMIP_KEY_LEN, "KMIP KEKs are AES-256 keys");
_Static_assert(KEY_WRAPPED_LEN == AEAD_NONCE_LEN + KEY_LEN + AEAD_TAG_LEN,
    "wrapped key layout");

static void	 keys_err(char *, size_t, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

/*
 * Writes one line to err: control characters (the KMS's text, names
 * from a file) become '?'.
 */
static void
keys_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 i;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	for (i = 0; err[i] != '\0'; i++)
		if ((unsigned char)err[i] < 0x20 || err[i] == 0x7f)
			err[i] = '?';
}

static const char *
str_or_empty(const char *s)
{
	return s != NULL ? s : "";
}

/* Printable ASCII of at most max bytes (empty allowed). */
static int
str_ok(const char *s, size_t max)
{
	size_t	 i;

	if (s == NULL)
		return 1;
	for (i = 0; s[i] != '\0'; i++)
		if (i >= max || (unsigned char)s[i] < 0x20 ||
		    (unsigned char)s[i] >= 0x7f)
			return 0;
	return 1;
}

static void
key_id_hex(const uint8_t *id, size_t len, char out[2 * KEY_ID_LEN + 1])
{
	if (id == NULL || len != KEY_ID_LEN) {
		(void)snprintf(out, 2 * KEY_ID_LEN + 1, "(bad id)");
		return;
	}
	hex_encode(id, KEY_ID_LEN, out);
}

/* --- locked key memory ------------------------------------------------ */

int
key_buf_alloc(struct key_buf *kb)
{
	static atomic_int	 warned;
	void			*p;
	long			 pg;

	if (kb->kb_key != NULL) {
		OPENSSL_cleanse(kb->kb_key, KEY_LEN);
		return 0;
	}
	if ((pg = sysconf(_SC_PAGESIZE)) <= 0)
		pg = 4096;
	p = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -1;
	if (mlock(p, (size_t)pg) == -1 && atomic_exchange(&warned, 1) == 0)
		log_warn("mlock of key memory (keys may be swapped out; "
		    "raise RLIMIT_MEMLOCK or systemd's LimitMEMLOCK=)");
	/* Best effort: no key in a core dump or a forked child. */
	(void)madvise(p, (size_t)pg, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
	(void)madvise(p, (size_t)pg, MADV_WIPEONFORK);
#endif
	kb->kb_key = p;
	kb->kb_maplen = (size_t)pg;
	return 0;
}

void
key_buf_free(struct key_buf *kb)
{
	if (kb == NULL || kb->kb_key == NULL)
		return;
	OPENSSL_cleanse(kb->kb_key, KEY_LEN);
	(void)munlock(kb->kb_key, kb->kb_maplen);
	(void)munmap(kb->kb_key, kb->kb_maplen);
	kb->kb_key = NULL;
	kb->kb_maplen = 0;
}

int
key_buf_copy(struct key_buf *dst, const struct key_buf *src)
{
	if (src->kb_key == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (key_buf_alloc(dst) == -1)
		return -1;
	memcpy(dst->kb_key, src->kb_key, KEY_LEN);
	return 0;
}

int
key_check_value(const struct key_buf *kb, char out[2 * KEY_KCV_LEN + 1])
{
	EVP_MD_CTX	*ctx = NULL;
	uint8_t		 sum[EVP_MAX_MD_SIZE];
	unsigned int	 len = 0;
	int		 rv = -1;

	(void)snprintf(out, 2 * KEY_KCV_LEN + 1, "%s", "-");
	if (kb->kb_key == NULL)
		goto fail;
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, LABEL_KCV, sizeof(LABEL_KCV) - 1) != 1 ||
	    EVP_DigestUpdate(ctx, kb->kb_key, KEY_LEN) != 1 ||
	    EVP_DigestFinal_ex(ctx, sum, &len) != 1 || len < KEY_KCV_LEN) {
		log_ssl("key check value: SHA-256");
		goto fail;
	}
	hex_encode(sum, KEY_KCV_LEN, out);
	rv = 0;
 fail:
	EVP_MD_CTX_free(ctx);
	OPENSSL_cleanse(sum, sizeof(sum));
	return rv;
}

/* --- KEK references ---------------------------------------------------- */

/* A deep copy of a (possibly hand-built) KekRef, owned by protobuf-c. */
KekRef *
kek_ref_dup(const KekRef *src)
{
	KekRef	*r = NULL;
	uint8_t	*buf;
	size_t	 len;

	len = kek_ref__get_packed_size(src);
	if ((buf = malloc(len > 0 ? len : 1)) == NULL)
		return NULL;
	if (kek_ref__pack(src, buf) == len)
		r = kek_ref__unpack(NULL, len, buf);
	free(buf);
	return r;
}

/*
 * The identity of a KEK that a wrap is bound to: SHA-256 of a label,
 * provider, key id, version and KDF salt and parameters.  Neither the
 * KMS address nor the key name: a KMS may move, a key be renamed.
 */
static int
kek_identity(const KekRef *r, uint8_t out[32])
{
	EVP_MD_CTX	*ctx = NULL;
	const char	*id = str_or_empty(r->key_id);
	uint8_t		 b[8];
	unsigned int	 len = 0;
	uint64_t	 v = (uint64_t)r->version;
	int		 rv = -1;

	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, LABEL_KEK_ID, sizeof(LABEL_KEK_ID) - 1) != 1)
		goto sslfail;
	put_be32(b, (uint32_t)r->provider);
	if (EVP_DigestUpdate(ctx, b, 4) != 1)
		goto sslfail;
	put_be32(b, (uint32_t)strlen(id));
	if (EVP_DigestUpdate(ctx, b, 4) != 1 ||
	    EVP_DigestUpdate(ctx, id, strlen(id)) != 1)
		goto sslfail;
	put_be32(b, (uint32_t)(v >> 32));
	put_be32(b + 4, (uint32_t)v);
	if (EVP_DigestUpdate(ctx, b, 8) != 1)
		goto sslfail;
	put_be32(b, (uint32_t)r->kdf_salt.len);
	if (EVP_DigestUpdate(ctx, b, 4) != 1 || (r->kdf_salt.len > 0 &&
	    EVP_DigestUpdate(ctx, r->kdf_salt.data, r->kdf_salt.len) != 1))
		goto sslfail;
	put_be32(b, r->kdf_t_cost);
	put_be32(b + 4, r->kdf_m_cost_kib);
	if (EVP_DigestUpdate(ctx, b, 8) != 1)
		goto sslfail;
	put_be32(b, r->kdf_parallelism);
	if (EVP_DigestUpdate(ctx, b, 4) != 1 ||
	    EVP_DigestFinal_ex(ctx, out, &len) != 1 || len != 32)
		goto sslfail;
	rv = 0;
	goto fail;
 sslfail:
	log_ssl("KEK identity: SHA-256");
 fail:
	EVP_MD_CTX_free(ctx);
	return rv;
}

int
kek_ref_same(const KekRef *a, const KekRef *b)
{
	if (a == NULL || b == NULL)
		return 0;
	return a->provider == b->provider &&
	    strcmp(str_or_empty(a->key_id), str_or_empty(b->key_id)) == 0 &&
	    a->version == b->version &&
	    a->kdf_salt.len == b->kdf_salt.len &&
	    (a->kdf_salt.len == 0 ||
	    memcmp(a->kdf_salt.data, b->kdf_salt.data, a->kdf_salt.len) == 0) &&
	    a->kdf_t_cost == b->kdf_t_cost &&
	    a->kdf_m_cost_kib == b->kdf_m_cost_kib &&
	    a->kdf_parallelism == b->kdf_parallelism;
}

int
kek_refs_add(KekRef **refs, size_t *n, size_t max, KekRef *ref)
{
	size_t	 i;

	if (*n >= max)
		return 0;
	for (i = 0; i < *n; i++)
		if (kek_ref_same(refs[i], ref))
			return 0;
	refs[(*n)++] = ref;
	return 1;
}

int
kek_ref_cmp(const KekRef *a, const KekRef *b)
{
	struct kmip_key_info	 ka, kb;

	if (a->provider != b->provider)
		return a->provider < b->provider ? -1 : 1;
	/* The order kmip.c chooses the newest version by. */
	memset(&ka, 0, sizeof(ka));
	memset(&kb, 0, sizeof(kb));
	(void)snprintf(ka.ki_uid, sizeof(ka.ki_uid), "%s",
	    str_or_empty(a->key_id));
	(void)snprintf(kb.ki_uid, sizeof(kb.ki_uid), "%s",
	    str_or_empty(b->key_id));
	ka.ki_initial_date = a->version;
	kb.ki_initial_date = b->version;
	return kmip_key_cmp(&ka, &kb);
}

void
kek_ref_describe(const KekRef *r, char *out, size_t outlen)
{
	const char	*name;
	size_t		 i;

	if (outlen == 0)
		return;
	if (r == NULL) {
		(void)snprintf(out, outlen, "no KEK");
		return;
	}
	name = str_or_empty(r->key_name);
	switch (r->provider) {
	case KEY_PROVIDER__KEY_PROVIDER_KMIP:
		(void)snprintf(out, outlen, "KMIP key %s '%s' version %lld "
		    "on KMS %s", str_or_empty(r->key_id), name,
		    (long long)r->version, str_or_empty(r->kms));
		break;
	case KEY_PROVIDER__KEY_PROVIDER_PASSWORD:
		(void)snprintf(out, outlen, "password key %s%s%s%s",
		    str_or_empty(r->key_id), *name != '\0' ? " ('" : "", name,
		    *name != '\0' ? "')" : "");
		break;
	default:
		(void)snprintf(out, outlen, "KEK of unknown provider %d",
		    (int)r->provider);
		break;
	}
	for (i = 0; out[i] != '\0'; i++)
		if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
			out[i] = '?';
}

int
kek_ref_check(const KekRef *r, char *err, size_t errlen)
{
	if (r == NULL) {
		keys_err(err, errlen, "no KEK reference");
		return -1;
	}
	if (!str_ok(r->kms, KMS_STR_MAX) ||
	    !str_ok(r->key_name, KEK_REF_NAME_MAX) ||
	    !str_ok(r->key_id, KEK_REF_ID_MAX)) {
		keys_err(err, errlen, "KEK reference: KMS, key name or key id "
		    "too long or not printable");
		return -1;
	}
	switch (r->provider) {
	case KEY_PROVIDER__KEY_PROVIDER_KMIP:
		if (*str_or_empty(r->key_id) == '\0' ||
		    r->kdf_salt.len != 0 || r->kdf_t_cost != 0 ||
		    r->kdf_m_cost_kib != 0 || r->kdf_parallelism != 0 ||
		    r->verifier.len != 0) {
			keys_err(err, errlen, "KMIP KEK reference without a "
			    "key id, or with password parameters");
			return -1;
		}
		break;
	case KEY_PROVIDER__KEY_PROVIDER_PASSWORD:
		if (r->kdf_salt.len < KEK_KDF_SALT_LEN ||
		    r->kdf_salt.len > KEK_KDF_SALT_MAX ||
		    r->kdf_t_cost < 1 || r->kdf_t_cost > KEK_KDF_T_MAX ||
		    r->kdf_parallelism < 1 ||
		    r->kdf_parallelism > KEK_KDF_P_MAX ||
		    r->kdf_m_cost_kib < KEK_KDF_M_MIN_KIB ||
		    r->kdf_m_cost_kib > KEK_KDF_M_MAX_KIB ||
		    r->kdf_m_cost_kib < 8 * r->kdf_parallelism ||
		    r->verifier.len != KEK_VERIFIER_LEN) {
			keys_err(err, errlen, "password KEK reference with "
			    "Argon2id parameters out of range (t %u, m %u KiB, "
			    "p %u, salt %zu bytes, verifier %zu bytes)",
			    r->kdf_t_cost, r->kdf_m_cost_kib,
			    r->kdf_parallelism, r->kdf_salt.len,
			    r->verifier.len);
			return -1;
		}
		break;
	default:
		keys_err(err, errlen, "KEK reference of unknown provider %d",
		    (int)r->provider);
		return -1;
	}
	return 0;
}

void
kek_free(struct kek *kek)
{
	if (kek == NULL)
		return;
	key_buf_free(&kek->k_key);
	if (kek->k_ref != NULL)
		kek_ref__free_unpacked(kek->k_ref, NULL);
	kek->k_ref = NULL;
}

int
kek_set_name(struct kek *kek, const char *name, char *err, size_t errlen)
{
	KekRef	 r, *nr;

	if (kek->k_ref == NULL || !str_ok(name, KEK_REF_NAME_MAX)) {
		keys_err(err, errlen, "KEK name '%.40s...' not printable or "
		    "longer than %d bytes", str_or_empty(name),
		    KEK_REF_NAME_MAX);
		return -1;
	}
	r = *kek->k_ref;
	r.key_name = (char *)str_or_empty(name);
	if ((nr = kek_ref_dup(&r)) == NULL) {
		keys_err(err, errlen, "KEK name: out of memory");
		return -1;
	}
	kek_ref__free_unpacked(kek->k_ref, NULL);
	kek->k_ref = nr;
	return 0;
}

static int
kek_usable(const struct kek *kek, char *err, size_t errlen)
{
	if (kek == NULL || kek->k_key.kb_key == NULL || kek->k_ref == NULL) {
		keys_err(err, errlen, "no key-encrypting key loaded");
		return -1;
	}
	return 0;
}

/* --- KMIP provider ----------------------------------------------------- */

static const char *
kms_port(const struct kmip_settings *ks)
{
	return ks->ks_port != NULL && *ks->ks_port != '\0' ? ks->ks_port :
	    "5696";
}

static void
kms_string(const struct kmip_settings *ks, char out[KMS_STR_MAX])
{
	const char	*host = str_or_empty(ks->ks_host);

	if (strchr(host, ':') != NULL)
		(void)snprintf(out, KMS_STR_MAX, "[%s]:%s", host, kms_port(ks));
	else
		(void)snprintf(out, KMS_STR_MAX, "%s:%s", host, kms_port(ks));
}

/* Connects, or NULL with err written (kmip.c has logged the reason). */
static struct kmip_conn *
kms_connect(const struct kmip_settings *ks, const char *kms, const char *what,
    char *err, size_t errlen)
{
	struct kmip_conn	*kc;

	if (ks == NULL || ks->ks_host == NULL || *ks->ks_host == '\0' ||
	    ks->ks_cert == NULL || ks->ks_key == NULL || ks->ks_ca == NULL) {
		keys_err(err, errlen, "%s: no KMS configured (host, client "
		    "certificate, key and CA are needed)", what);
		return NULL;
	}
	kc = kmip_connect_timeout(ks->ks_host, kms_port(ks), ks->ks_cert,
	    ks->ks_key, ks->ks_ca, ks->ks_server_name, ks->ks_timeout_ms);
	if (kc == NULL)
		keys_err(err, errlen, "%s: cannot use KMS %s (see the line "
		    "logged before: down, unreachable or refusing this "
		    "client's certificate); check the KMS and retry", what, kms);
	return kc;
}

int
kek_from_kmip(const struct kmip_settings *ks, const char *name,
    struct kek *kek, char *err, size_t errlen)
{
	struct kmip_conn	*kc = NULL;
	KekRef			 ref = KEK_REF__INIT;
	char			 kms[KMS_STR_MAX] = "(no KMS)", uid[KMIP_UID_MAX];
	char			 what[KMIP_NAME_MAX + 16];
	int64_t			 version = 0;
	int			 rv = -1;

	if (name == NULL || *name == '\0' || !str_ok(name, KEK_REF_NAME_MAX)) {
		keys_err(err, errlen, "KEK name '%.40s' empty, too long or not "
		    "printable", str_or_empty(name));
		goto fail;
	}
	(void)snprintf(what, sizeof(what), "KEK '%s'", name);
	if (ks != NULL)
		kms_string(ks, kms);
	if ((kc = kms_connect(ks, kms, what, err, errlen)) == NULL)
		goto fail;
	if (key_buf_alloc(&kek->k_key) == -1) {
		keys_err(err, errlen, "%s: key memory: %s", what,
		    strerror(errno));
		goto fail;
	}
	if (kmip_newest_active(kc, name, uid, kek->k_key.kb_key,
	    &version) == -1) {
		keys_err(err, errlen, "%s", kmip_error(kc));
		goto fail;
	}
	ref.provider = KEY_PROVIDER__KEY_PROVIDER_KMIP;
	ref.kms = kms;
	ref.key_name = (char *)name;
	ref.key_id = uid;
	ref.version = version;
	if ((kek->k_ref = kek_ref_dup(&ref)) == NULL) {
		keys_err(err, errlen, "%s: out of memory", what);
		goto fail;
	}
	rv = 0;
 fail:
	kmip_close(kc);
	if (rv == -1)
		kek_free(kek);
	return rv;
}

int
kek_from_kmip_ref(const struct kmip_settings *ks, const KekRef *want,
    struct kek *kek, char *err, size_t errlen)
{
	struct kmip_conn	*kc = NULL;
	struct kmip_key_info	 ki;
	KekRef			 ref;
	char			 kms[KMS_STR_MAX], what[KMS_STR_MAX * 2 + 300];
	char			 why[KEY_ERR_MAX];
	const char		*uid;
	int			 rv = -1;

	why[0] = '\0';
	if (kek_ref_check(want, err, errlen) == -1)
		goto fail;
	if (want->provider != KEY_PROVIDER__KEY_PROVIDER_KMIP) {
		kek_ref_describe(want, why, sizeof(why));
		keys_err(err, errlen, "%s is not a KMS key", why);
		goto fail;
	}
	uid = want->key_id;
	if (ks != NULL)
		kms_string(ks, kms);
	else
		(void)snprintf(kms, sizeof(kms), "%s", str_or_empty(want->kms));
	if (*str_or_empty(want->kms) != '\0' && strcmp(want->kms, kms) != 0)
		(void)snprintf(what, sizeof(what), "key %s '%s' on KMS %s "
		    "(recorded as %s)", uid, str_or_empty(want->key_name), kms,
		    want->kms);
	else
		(void)snprintf(what, sizeof(what), "key %s '%s' on KMS %s",
		    uid, str_or_empty(want->key_name), kms);

	if ((kc = kms_connect(ks, kms, what, why, sizeof(why))) == NULL) {
		(void)snprintf(why, sizeof(why), "no connection to the KMS "
		    "(see the line logged before)");
		goto unavailable;
	}
	if (kmip_get_attributes(kc, uid, &ki) == -1) {
		(void)snprintf(why, sizeof(why), "%s", kmip_error(kc));
		goto unavailable;
	}
	/* Deactivated (superseded) keys still unwrap old restore points. */
	if (ki.ki_state != KMIP_STATE_ACTIVE &&
	    ki.ki_state != KMIP_STATE_DEACTIVATED) {
		(void)snprintf(why, sizeof(why), "it is %s in the KMS",
		    kmip_state_name(ki.ki_state));
		goto unavailable;
	}
	if (want->version != 0 && ki.ki_initial_date != 0 &&
	    ki.ki_initial_date != want->version)
		log_warnx("%s: the KMS dates it %lld, the wrapped key "
		    "%lld; trying it anyway", what,
		    (long long)ki.ki_initial_date, (long long)want->version);
	if (key_buf_alloc(&kek->k_key) == -1) {
		keys_err(err, errlen, "%s: key memory: %s", what,
		    strerror(errno));
		goto fail;
	}
	if (kmip_get(kc, uid, kek->k_key.kb_key) == -1) {
		(void)snprintf(why, sizeof(why), "%s", kmip_error(kc));
		goto unavailable;
	}
	ref = *want;
	ref.kms = kms;
	if ((kek->k_ref = kek_ref_dup(&ref)) == NULL) {
		keys_err(err, errlen, "%s: out of memory", what);
		goto fail;
	}
	rv = 0;
	goto fail;
 unavailable:
	keys_err(err, errlen, "%s is not available: %s; restore it in the KMS "
	    "or use an exported key file", what, why);
 fail:
	kmip_close(kc);
	if (rv == -1)
		kek_free(kek);
	return rv;
}

/* --- password provider ------------------------------------------------- */

static int
kdf_memory(uint32_t *m, char *err, size_t errlen)
{
	const char	*s = getenv(KEK_KDF_ENV_MEMORY);
	unsigned long	 v;
	char		*end;

	*m = KEK_KDF_M_COST_KIB;
	if (s == NULL || *s == '\0')
		return 0;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno != 0 || *end != '\0' || *s < '0' || *s > '9' ||
	    v < KEK_KDF_M_MIN_KIB * KEK_KDF_PARALLELISM ||
	    v > KEK_KDF_M_MAX_KIB) {
		keys_err(err, errlen, "%s=%.20s: not a memory size in KiB from "
		    "%d to %u", KEK_KDF_ENV_MEMORY, s,
		    KEK_KDF_M_MIN_KIB * KEK_KDF_PARALLELISM, KEK_KDF_M_MAX_KIB);
		return -1;
	}
	*m = (uint32_t)v;
	return 0;
}

/*
 * Argon2id's memory (64 MiB by default): its own mapping in 2 MiB pages
 * where the kernel has them, so the lanes take 32 page faults instead
 * of 16384 (a third of the derivation's time, which every source-side
 * job waits for before its first block), and out of core dumps.  The
 * library wipes it before handing it back.
 */
static int
kdf_alloc(uint8_t **memory, size_t len)
{
	void	*p;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	    -1, 0);
	if (p == MAP_FAILED)
		return ARGON2_MEMORY_ALLOCATION_ERROR;
	(void)madvise(p, len, MADV_HUGEPAGE);
	(void)madvise(p, len, MADV_DONTDUMP);
	*memory = p;
	return ARGON2_OK;
}

static void
kdf_free(uint8_t *memory, size_t len)
{
	(void)munmap(memory, len);
}

/*
 * Argon2id into key, its p lanes on at most as many threads as there are
 * cores: the lanes decide the key, the threads only the wall time (the
 * library's argon2id_hash_raw runs one thread per lane).
 */
static int
kdf_argon2id(uint32_t t, uint32_t m, uint32_t p, const char *password,
    size_t pwlen, const uint8_t *salt, size_t saltlen, uint8_t key[KEY_LEN])
{
	argon2_context	 ctx;
	long		 cores = sysconf(_SC_NPROCESSORS_ONLN);

	memset(&ctx, 0, sizeof(ctx));
	ctx.out = key;
	ctx.outlen = KEY_LEN;
	ctx.pwd = (uint8_t *)(uintptr_t)password;
	ctx.pwdlen = (uint32_t)pwlen;
	ctx.salt = (uint8_t *)(uintptr_t)salt;
	ctx.saltlen = (uint32_t)saltlen;
	ctx.t_cost = t;
	ctx.m_cost = m;
	ctx.lanes = p;
	ctx.threads = cores > 0 && (unsigned long)cores < p ?
	    (uint32_t)cores : p;
	ctx.version = ARGON2_VERSION_13;
	ctx.flags = ARGON2_DEFAULT_FLAGS;
	ctx.allocate_cbk = kdf_alloc;
	ctx.free_cbk = kdf_free;
	return argon2_ctx(&ctx, Argon2_id);
}

/* HMAC-SHA256 of a fixed label under the derived key. */
static int
kdf_verifier(const uint8_t key[KEY_LEN], uint8_t out[KEK_VERIFIER_LEN])
{
	unsigned int	 len = 0;

	if (HMAC(EVP_sha256(), key, KEY_LEN, (const uint8_t *)LABEL_VERIFIER,
	    sizeof(LABEL_VERIFIER) - 1, out, &len) == NULL ||
	    len != KEK_VERIFIER_LEN) {
		log_ssl("password verifier: HMAC-SHA256");
		return -1;
	}
	return 0;
}

/*
 * kek_from_password with the word the user knows it by ("password",
 * "passphrase") in a wrong-password message.
 */
static int
kek_derive(const char *password, const KekRef *existing, struct kek *kek,
    const char *word, char *err, size_t errlen)
{
	KekRef		 ref = KEK_REF__INIT;
	uint8_t		 salt[KEK_KDF_SALT_LEN], ver[KEK_VERIFIER_LEN];
	const uint8_t	*s;
	char		 id[3 + 2 * 6 + 1], desc[KEY_ERR_MAX];
	size_t		 pwlen, slen;
	uint32_t	 t, m, p;
	int		 rc, wrong = 0, rv = -1;

	if (password == NULL || *password == '\0' ||
	    (pwlen = strnlen(password, KEK_PASSWORD_MAX + 1)) >
	    KEK_PASSWORD_MAX) {
		keys_err(err, errlen, "a %s of 1 to %d bytes is needed", word,
		    KEK_PASSWORD_MAX);
		goto fail;
	}
	if (existing != NULL) {
		if (kek_ref_check(existing, err, errlen) == -1)
			goto fail;
		if (existing->provider != KEY_PROVIDER__KEY_PROVIDER_PASSWORD) {
			kek_ref_describe(existing, desc, sizeof(desc));
			keys_err(err, errlen, "%s is not a %s key", desc, word);
			goto fail;
		}
		t = existing->kdf_t_cost;
		m = existing->kdf_m_cost_kib;
		p = existing->kdf_parallelism;
		s = existing->kdf_salt.data;
		slen = existing->kdf_salt.len;
	} else {
		t = KEK_KDF_T_COST;
		p = KEK_KDF_PARALLELISM;
		if (kdf_memory(&m, err, errlen) == -1)
			goto fail;
		if (crypto_random(salt, sizeof(salt)) == -1) {
			keys_err(err, errlen, "%s key: no random salt (the "
			    "random number generator failed)", word);
			goto fail;
		}
		s = salt;
		slen = sizeof(salt);
	}
	if (key_buf_alloc(&kek->k_key) == -1) {
		keys_err(err, errlen, "%s key: key memory: %s", word,
		    strerror(errno));
		goto fail;
	}
	if ((rc = kdf_argon2id(t, m, p, password, pwlen, s, slen,
	    kek->k_key.kb_key)) != ARGON2_OK) {
		keys_err(err, errlen, "%s key: Argon2id (t %u, m %u KiB, p %u) "
		    "failed: %s", word, t, m, p, argon2_error_message(rc));
		goto fail;
	}
	if (kdf_verifier(kek->k_key.kb_key, ver) == -1) {
		keys_err(err, errlen, "%s key: HMAC-SHA256 failed", word);
		goto fail;
	}
	if (existing != NULL) {
		if (CRYPTO_memcmp(ver, existing->verifier.data,
		    KEK_VERIFIER_LEN) != 0) {
			kek_ref_describe(existing, desc, sizeof(desc));
			keys_err(err, errlen, "wrong %s for %s; nothing was "
			    "read or changed", word, desc);
			wrong = 1;
			goto fail;
		}
		kek->k_ref = kek_ref_dup(existing);
	} else {
		memcpy(id, "pw-", 3);
		hex_encode(salt, 6, id + 3);
		ref.provider = KEY_PROVIDER__KEY_PROVIDER_PASSWORD;
		ref.key_id = id;
		ref.version = (int64_t)time(NULL);
		ref.kdf_salt.data = salt;
		ref.kdf_salt.len = sizeof(salt);
		ref.kdf_t_cost = t;
		ref.kdf_m_cost_kib = m;
		ref.kdf_parallelism = p;
		ref.verifier.data = ver;
		ref.verifier.len = sizeof(ver);
		kek->k_ref = kek_ref_dup(&ref);
	}
	if (kek->k_ref == NULL) {
		keys_err(err, errlen, "%s key: out of memory", word);
		goto fail;
	}
	rv = 0;
 fail:
	if (rv == -1) {
		kek_free(kek);
		if (wrong)
			errno = EKEYREJECTED;	/* after kek_free's calls */
	}
	return rv;
}

int
kek_from_password(const char *password, const KekRef *existing,
    struct kek *kek, char *err, size_t errlen)
{
	return kek_derive(password, existing, kek, "password", err, errlen);
}

int
kek_password_read_file(const char *path, char **password, char *err,
    size_t errlen)
{
	char	*buf = NULL;
	size_t	 off = 0, len;
	ssize_t	 n;
	int	 fd, rv = -1;

	*password = NULL;
	/* No stdio: its buffer would keep a copy we cannot wipe. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		keys_err(err, errlen, "cannot read password file %s: %s", path,
		    strerror(errno));
		return -1;
	}
	if ((buf = calloc(1, KEK_PASSWORD_MAX + 2)) == NULL) {
		keys_err(err, errlen, "password file %s: out of memory", path);
		goto fail;
	}
	while (off < KEK_PASSWORD_MAX + 1) {
		if ((n = read(fd, buf + off, KEK_PASSWORD_MAX + 1 - off)) ==
		    -1) {
			if (errno == EINTR)
				continue;
			keys_err(err, errlen, "cannot read password file %s: "
			    "%s", path, strerror(errno));
			goto fail;
		}
		if (n == 0 || memchr(buf + off, '\n', (size_t)n) != NULL) {
			off += (size_t)n;
			break;
		}
		off += (size_t)n;
	}
	len = strcspn(buf, "\r\n");
	if (len > KEK_PASSWORD_MAX) {
		keys_err(err, errlen, "password file %s: the password is longer "
		    "than %d bytes", path, KEK_PASSWORD_MAX);
		goto fail;
	}
	OPENSSL_cleanse(buf + len, KEK_PASSWORD_MAX + 2 - len);
	if (len == 0) {
		keys_err(err, errlen, "password file %s is empty", path);
		goto fail;
	}
	*password = buf;
	buf = NULL;
	rv = 0;
 fail:
	if (buf != NULL) {
		OPENSSL_cleanse(buf, KEK_PASSWORD_MAX + 2);
		free(buf);
	}
	close(fd);
	return rv;
}

void
kek_password_free(char *password)
{
	if (password == NULL)
		return;
	OPENSSL_cleanse(password, strlen(password));
	free(password);
}

/* --- envelope ---------------------------------------------------------- */

int
dek_new(struct key_buf *kb, uint8_t key_id[KEY_ID_LEN])
{
	if (key_buf_alloc(kb) == -1) {
		log_warn("new data key: key memory");
		return -1;
	}
	if (crypto_random(kb->kb_key, KEY_LEN) == -1 ||
	    crypto_random(key_id, KEY_ID_LEN) == -1) {
		key_buf_free(kb);
		return -1;
	}
	return 0;
}

const char *
key_purpose_name(uint32_t purpose)
{
	switch (purpose) {
	case KEY_PURPOSE_DATA:		return "data";
	case KEY_PURPOSE_CHUNK_ID:	return "chunk-id";
	default:			return "unknown";
	}
}

static int
key_purpose_valid(uint32_t purpose)
{
	return purpose == KEY_PURPOSE_DATA || purpose == KEY_PURPOSE_CHUNK_ID;
}

static int
wrap_aad(uint8_t aad[KEY_AAD_LEN], uint32_t purpose,
    const uint8_t key_id[KEY_ID_LEN], const KekRef *ref)
{
	aad[0] = KEY_WRAP_FORMAT;
	aad[1] = (uint8_t)purpose;
	memcpy(aad + 2, key_id, KEY_ID_LEN);
	return kek_identity(ref, aad + 2 + KEY_ID_LEN);
}

WrappedKey *
key_wrapped_dup(const WrappedKey *src)
{
	WrappedKey	*w = NULL;
	uint8_t		*buf;
	size_t		 len;

	len = wrapped_key__get_packed_size(src);
	if ((buf = malloc(len > 0 ? len : 1)) == NULL)
		return NULL;
	if (wrapped_key__pack(src, buf) == len)
		w = wrapped_key__unpack(NULL, len, buf);
	free(buf);
	return w;
}

void
key_wrapped_free(WrappedKey *wk)
{
	if (wk != NULL)
		wrapped_key__free_unpacked(wk, NULL);
}

int
key_wrapped_check(const WrappedKey *wk, char *err, size_t errlen)
{
	char	 id[2 * KEY_ID_LEN + 1], why[KEY_ERR_MAX];

	if (wk == NULL) {
		keys_err(err, errlen, "no wrapped key");
		return -1;
	}
	key_id_hex(wk->key_id.data, wk->key_id.len, id);
	if (wk->key_id.len != KEY_ID_LEN) {
		keys_err(err, errlen, "wrapped key: id of %zu bytes, not %d",
		    wk->key_id.len, KEY_ID_LEN);
		return -1;
	}
	if (!key_purpose_valid(wk->purpose)) {
		keys_err(err, errlen, "wrapped key %s: unknown purpose %u", id,
		    wk->purpose);
		return -1;
	}
	if (wk->wrapped.len != KEY_WRAPPED_LEN) {
		keys_err(err, errlen, "wrapped key %s: %zu bytes, not %d", id,
		    wk->wrapped.len, KEY_WRAPPED_LEN);
		return -1;
	}
	if (kek_ref_check(wk->kek, why, sizeof(why)) == -1) {
		keys_err(err, errlen, "wrapped key %s: %s", id, why);
		return -1;
	}
	return 0;
}

int
key_wrap(const struct kek *kek, uint32_t purpose,
    const uint8_t key_id[KEY_ID_LEN], const struct key_buf *key,
    WrappedKey **out, char *err, size_t errlen)
{
	WrappedKey	 w = WRAPPED_KEY__INIT;
	uint8_t		 aad[KEY_AAD_LEN], buf[KEY_WRAPPED_LEN];
	char		 id[2 * KEY_ID_LEN + 1];
	int		 rv = -1;

	*out = NULL;
	key_id_hex(key_id, KEY_ID_LEN, id);
	if (kek_usable(kek, err, errlen) == -1)
		goto fail;
	if (key == NULL || key->kb_key == NULL ||
	    !key_purpose_valid(purpose)) {
		keys_err(err, errlen, "wrap key %s: no key, or unknown purpose "
		    "%u", id, purpose);
		goto fail;
	}
	if (crypto_random(buf, AEAD_NONCE_LEN) == -1 ||
	    wrap_aad(aad, purpose, key_id, kek->k_ref) == -1 ||
	    crypto_seal(kek->k_key.kb_key, buf, aad, sizeof(aad), key->kb_key,
	    KEY_LEN, buf + AEAD_NONCE_LEN) == -1) {
		keys_err(err, errlen, "wrap key %s: AES-256-GCM failed (see "
		    "the log)", id);
		goto fail;
	}
	w.key_id.data = (uint8_t *)key_id;
	w.key_id.len = KEY_ID_LEN;
	w.purpose = purpose;
	w.kek = kek->k_ref;
	w.wrapped.data = buf;
	w.wrapped.len = sizeof(buf);
	if ((*out = key_wrapped_dup(&w)) == NULL) {
		keys_err(err, errlen, "wrap key %s: out of memory", id);
		goto fail;
	}
	rv = 0;
 fail:
	return rv;
}

int
key_unwrap(const struct kek *kek, const WrappedKey *wk, struct key_buf *key,
    char *err, size_t errlen)
{
	uint8_t		 aad[KEY_AAD_LEN];
	char		 id[2 * KEY_ID_LEN + 1], want[KEY_ERR_MAX];
	char		 have[KEY_ERR_MAX];

	if (key_wrapped_check(wk, err, errlen) == -1 ||
	    kek_usable(kek, err, errlen) == -1)
		return -1;
	key_id_hex(wk->key_id.data, wk->key_id.len, id);
	kek_ref_describe(wk->kek, want, sizeof(want));
	if (!kek_ref_same(wk->kek, kek->k_ref)) {
		kek_ref_describe(kek->k_ref, have, sizeof(have));
		keys_err(err, errlen, "key %s is wrapped by %s, not by %s", id,
		    want, have);
		return -1;
	}
	if (wrap_aad(aad, wk->purpose, wk->key_id.data, kek->k_ref) == -1 ||
	    key_buf_alloc(key) == -1) {
		keys_err(err, errlen, "unwrap key %s: library or memory "
		    "failure (see the log)", id);
		return -1;
	}
	if (crypto_open(kek->k_key.kb_key, wk->wrapped.data, aad, sizeof(aad),
	    wk->wrapped.data + AEAD_NONCE_LEN, KEY_LEN + AEAD_TAG_LEN,
	    key->kb_key) == -1) {
		keys_err(err, errlen, "%s key %s does not authenticate under "
		    "%s: it was altered, or that KEK is not the one that "
		    "wrapped it; use an intact copy of the key file",
		    key_purpose_name(wk->purpose), id, want);
		return -1;
	}
	return 0;
}

int
key_rewrap(const struct kek *from, const struct kek *to, const WrappedKey *wk,
    WrappedKey **out, char *err, size_t errlen)
{
	struct key_buf	 k = { NULL, 0 };
	int		 rv = -1;

	*out = NULL;
	if (key_unwrap(from, wk, &k, err, errlen) == -1 ||
	    key_wrap(to, wk->purpose, wk->key_id.data, &k, out, err,
	    errlen) == -1)
		goto fail;
	rv = 0;
 fail:
	key_buf_free(&k);
	return rv;
}

int
chunk_id_keyed(const struct key_buf *key, const void *data, size_t len,
    uint8_t out[32])
{
	unsigned int	 outlen = 0;

	if (key == NULL || key->kb_key == NULL) {
		log_warnx("keyed chunk id: no key");
		return -1;
	}
	if (HMAC(EVP_sha256(), key->kb_key, KEY_LEN,
	    len > 0 ? data : (const void *)"", len, out, &outlen) == NULL ||
	    outlen != 32) {
		log_ssl("keyed chunk id: HMAC-SHA256");
		return -1;
	}
	return 0;
}

/* --- key chains -------------------------------------------------------- */

struct keychain *
keychain_new(const char *name)
{
	struct keychain	*kc;

	if (!str_ok(name, NAME_MAX_LEN)) {
		errno = EINVAL;
		return NULL;
	}
	if ((kc = calloc(1, sizeof(*kc))) == NULL)
		return NULL;
	if ((kc->kc_name = strdup(str_or_empty(name))) == NULL) {
		free(kc);
		return NULL;
	}
	return kc;
}

void
keychain_free(struct keychain *kc)
{
	size_t	 i;

	if (kc == NULL)
		return;
	for (i = 0; i < kc->kc_nkeys; i++)
		key_wrapped_free(kc->kc_keys[i]);
	free(kc->kc_keys);
	free(kc->kc_dropped);
	free(kc->kc_name);
	free(kc);
}

int
key_id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, KEY_ID_LEN);
}

int
key_id_set_add(void **set, const uint8_t id[KEY_ID_LEN])
{
	return id_set_add(set, id, KEY_ID_LEN, key_id_cmp);
}

int
keychain_dropped(const struct keychain *kc, const uint8_t key_id[KEY_ID_LEN])
{
	return kc->kc_ndropped > 0 && bsearch(key_id, kc->kc_dropped,
	    kc->kc_ndropped, KEY_ID_LEN, key_id_cmp) != NULL;
}

int
keychain_set_dropped(struct keychain *kc, const uint8_t *ids, size_t n)
{
	uint8_t	*d = NULL;
	size_t	 i, m = 0;

	if (n > KEYCHAIN_KEYS_MAX) {
		errno = E2BIG;
		return -1;
	}
	if (n > 0 && (d = malloc(n * KEY_ID_LEN)) == NULL)
		return -1;
	if (n > 0) {
		memcpy(d, ids, n * KEY_ID_LEN);
		qsort(d, n, KEY_ID_LEN, key_id_cmp);
	}
	for (i = 0; i < n; i++)
		if (m == 0 || memcmp(d + (m - 1) * KEY_ID_LEN,
		    d + i * KEY_ID_LEN, KEY_ID_LEN) != 0)
			memmove(d + m++ * KEY_ID_LEN, d + i * KEY_ID_LEN,
			    KEY_ID_LEN);
	free(kc->kc_dropped);
	kc->kc_dropped = d;
	kc->kc_ndropped = m;
	return 0;
}

const WrappedKey *
keychain_find(const struct keychain *kc, const uint8_t key_id[KEY_ID_LEN])
{
	size_t	 i;

	for (i = 0; i < kc->kc_nkeys; i++)
		if (kc->kc_keys[i]->key_id.len == KEY_ID_LEN &&
		    memcmp(kc->kc_keys[i]->key_id.data, key_id,
		    KEY_ID_LEN) == 0)
			return kc->kc_keys[i];
	return NULL;
}

const WrappedKey *
keychain_chunk_key(const struct keychain *kc)
{
	size_t	 i;

	for (i = 0; i < kc->kc_nkeys; i++)
		if (kc->kc_keys[i]->purpose == KEY_PURPOSE_CHUNK_ID)
			return kc->kc_keys[i];
	return NULL;
}

int
keychain_add(struct keychain *kc, const WrappedKey *wk, char *err,
    size_t errlen)
{
	WrappedKey	**keys, *w;

	if (key_wrapped_check(wk, err, errlen) == -1)
		return -1;
	if (keychain_find(kc, wk->key_id.data) != NULL)
		return 0;
	if (kc->kc_nkeys >= KEYCHAIN_KEYS_MAX) {
		keys_err(err, errlen, "key chain '%s' is full (%d keys)",
		    kc->kc_name, KEYCHAIN_KEYS_MAX);
		return -1;
	}
	if ((w = key_wrapped_dup(wk)) == NULL ||
	    (keys = reallocarray(kc->kc_keys, kc->kc_nkeys + 1,
	    sizeof(*keys))) == NULL) {
		key_wrapped_free(w);
		keys_err(err, errlen, "key chain '%s': out of memory",
		    kc->kc_name);
		return -1;
	}
	keys[kc->kc_nkeys++] = w;
	kc->kc_keys = keys;
	return 0;
}

int
keychain_rewrap(struct keychain *kc, const struct kek *const *old,
    size_t nold, const struct kek *newk, size_t *nrewrapped, char *err,
    size_t errlen)
{
	WrappedKey	**nw = NULL;
	const struct kek *from;
	char		 id[2 * KEY_ID_LEN + 1], want[KEY_ERR_MAX];
	size_t		 i, j, n = 0;
	int		 rv = -1;

	if (nrewrapped != NULL)
		*nrewrapped = 0;
	if (kek_usable(newk, err, errlen) == -1)
		goto fail;
	if (kc->kc_nkeys > 0 &&
	    (nw = calloc(kc->kc_nkeys, sizeof(*nw))) == NULL) {
		keys_err(err, errlen, "key chain '%s': out of memory",
		    kc->kc_name);
		goto fail;
	}
	for (i = 0; i < kc->kc_nkeys; i++) {
		if (kek_ref_same(kc->kc_keys[i]->kek, newk->k_ref))
			continue;
		from = NULL;
		for (j = 0; j < nold && from == NULL; j++)
			if (old[j] != NULL &&
			    kek_ref_same(kc->kc_keys[i]->kek, old[j]->k_ref))
				from = old[j];
		if (from == NULL) {
			key_id_hex(kc->kc_keys[i]->key_id.data,
			    kc->kc_keys[i]->key_id.len, id);
			kek_ref_describe(kc->kc_keys[i]->kek, want,
			    sizeof(want));
			keys_err(err, errlen, "key chain '%s': key %s needs %s, "
			    "which is not loaded; nothing was changed",
			    kc->kc_name, id, want);
			goto fail;
		}
		if (key_rewrap(from, newk, kc->kc_keys[i], &nw[i], err,
		    errlen) == -1)
			goto fail;
	}
	/* Every key wrapped again: only now change the chain. */
	for (i = 0; i < kc->kc_nkeys; i++) {
		if (nw[i] == NULL)
			continue;
		key_wrapped_free(kc->kc_keys[i]);
		kc->kc_keys[i] = nw[i];
		nw[i] = NULL;
		n++;
	}
	if (nrewrapped != NULL)
		*nrewrapped = n;
	rv = 0;
 fail:
	if (nw != NULL)
		for (i = 0; i < kc->kc_nkeys; i++)
			key_wrapped_free(nw[i]);
	free(nw);
	return rv;
}

static int
ref_ptr_cmp(const void *a, const void *b)
{
	return kek_ref_cmp(*(const KekRef *const *)a,
	    *(const KekRef *const *)b);
}

void
keychain_refs_free(KekRef **refs, size_t n)
{
	size_t	 i;

	if (refs == NULL)
		return;
	for (i = 0; i < n; i++)
		if (refs[i] != NULL)
			kek_ref__free_unpacked(refs[i], NULL);
	free(refs);
}

int
keychain_needed_keks(const struct keychain *kc, KekRef ***refsp,
    size_t *np, char *err, size_t errlen)
{
	KekRef		**seen = NULL, **refs = NULL;
	size_t		 i, n = 0;
	int		 rv = -1;

	*refsp = NULL;
	*np = 0;
	if (kc->kc_nkeys == 0)
		return 0;
	if ((seen = calloc(kc->kc_nkeys, sizeof(*seen))) == NULL)
		goto nomem;
	for (i = 0; i < kc->kc_nkeys; i++)
		(void)kek_refs_add(seen, &n, kc->kc_nkeys,
		    kc->kc_keys[i]->kek);
	qsort(seen, n, sizeof(*seen), ref_ptr_cmp);
	if ((refs = calloc(n, sizeof(*refs))) == NULL)
		goto nomem;
	for (i = 0; i < n; i++)
		if ((refs[i] = kek_ref_dup(seen[i])) == NULL)
			goto nomem;
	*refsp = refs;
	*np = n;
	refs = NULL;
	rv = 0;
	goto fail;
 nomem:
	keys_err(err, errlen, "key chain '%s': out of memory", kc->kc_name);
 fail:
	keychain_refs_free(refs, n);
	free(seen);
	return rv;
}

/* magic | u32 length | KeyChain | SHA-256 of what precedes it */
static int
keychain_frame(const struct keychain *kc, const char *magic, uint8_t **out,
    size_t *outlen, char *err, size_t errlen)
{
	KeyChain	 m = KEY_CHAIN__INIT;
	ProtobufCBinaryData *dropped = NULL;
	uint8_t		*buf;
	size_t		 len, i;

	*out = NULL;
	*outlen = 0;
	if (kc->kc_ndropped > 0 && (dropped = calloc(kc->kc_ndropped,
	    sizeof(*dropped))) == NULL) {
		keys_err(err, errlen, "key chain '%s': out of memory",
		    kc->kc_name);
		return -1;
	}
	for (i = 0; i < kc->kc_ndropped; i++) {
		dropped[i].data = kc->kc_dropped + i * KEY_ID_LEN;
		dropped[i].len = KEY_ID_LEN;
	}
	m.format = KEYCHAIN_FORMAT;
	m.name = kc->kc_name;
	m.n_keys = kc->kc_nkeys;
	m.keys = kc->kc_keys;
	m.n_dropped = kc->kc_ndropped;
	m.dropped = dropped;
	len = key_chain__get_packed_size(&m);
	if (len > KEYCHAIN_MAX - KEYCHAIN_HDR_LEN - KEYCHAIN_SUM_LEN) {
		keys_err(err, errlen, "key chain '%s': %zu bytes, more than "
		    "%u", kc->kc_name, len, KEYCHAIN_MAX);
		free(dropped);
		return -1;
	}
	if ((buf = malloc(KEYCHAIN_HDR_LEN + len + KEYCHAIN_SUM_LEN)) == NULL) {
		keys_err(err, errlen, "key chain '%s': out of memory",
		    kc->kc_name);
		free(dropped);
		return -1;
	}
	memcpy(buf, magic, 4);
	put_be32(buf + 4, (uint32_t)len);
	if (key_chain__pack(&m, buf + KEYCHAIN_HDR_LEN) != len) {
		free(dropped);
		free(buf);
		keys_err(err, errlen, "key chain '%s': protobuf packing failed",
		    kc->kc_name);
		return -1;
	}
	free(dropped);
	crypto_sha256(buf, KEYCHAIN_HDR_LEN + len, buf + KEYCHAIN_HDR_LEN + len);
	*out = buf;
	*outlen = KEYCHAIN_HDR_LEN + len + KEYCHAIN_SUM_LEN;
	return 0;
}

static int
wrapped_key_id_cmp(const void *a, const void *b)
{
	const WrappedKey	*x = *(const WrappedKey *const *)a;
	const WrappedKey	*y = *(const WrappedKey *const *)b;

	return memcmp(x->key_id.data, y->key_id.data, KEY_ID_LEN);
}

/* Checks framing, checksum, format and every key; the chain or NULL. */
static struct keychain *
keychain_unframe(const uint8_t *buf, size_t len, const char *magic,
    const char *what, char *err, size_t errlen)
{
	KeyChain	*m = NULL;
	struct keychain	*kc = NULL;
	const WrappedKey **sorted = NULL;
	uint8_t		 sum[KEYCHAIN_SUM_LEN];
	char		 why[KEY_ERR_MAX], id[2 * KEY_ID_LEN + 1];
	uint32_t	 plen;
	size_t		 i;
	int		 ok = 0;

	if (len < KEYCHAIN_HDR_LEN + KEYCHAIN_SUM_LEN || len > KEYCHAIN_MAX) {
		keys_err(err, errlen, "%s: %zu bytes, not a %s file", what, len,
		    magic);
		goto fail;
	}
	plen = get_be32(buf + 4);
	if (memcmp(buf, magic, 4) != 0 ||
	    plen != len - KEYCHAIN_HDR_LEN - KEYCHAIN_SUM_LEN) {
		keys_err(err, errlen, "%s: not a %s file, or truncated (header "
		    "says %u bytes, %zu there)", what, magic, plen,
		    len - KEYCHAIN_HDR_LEN - KEYCHAIN_SUM_LEN);
		goto fail;
	}
	crypto_sha256(buf, KEYCHAIN_HDR_LEN + plen, sum);
	if (CRYPTO_memcmp(sum, buf + KEYCHAIN_HDR_LEN + plen,
	    KEYCHAIN_SUM_LEN) != 0) {
		keys_err(err, errlen, "%s: checksum mismatch, the file is "
		    "damaged; use a copy", what);
		goto fail;
	}
	if ((m = key_chain__unpack(NULL, plen, buf + KEYCHAIN_HDR_LEN)) ==
	    NULL) {
		keys_err(err, errlen, "%s: malformed protobuf KeyChain", what);
		goto fail;
	}
	if (m->format != KEYCHAIN_FORMAT) {
		keys_err(err, errlen, "%s: format %u, this program reads %d",
		    what, m->format, KEYCHAIN_FORMAT);
		goto fail;
	}
	if (!str_ok(m->name, NAME_MAX_LEN) || m->n_keys > KEYCHAIN_KEYS_MAX ||
	    m->n_dropped > KEYCHAIN_KEYS_MAX) {
		keys_err(err, errlen, "%s: bad chain name or more than %d keys",
		    what, KEYCHAIN_KEYS_MAX);
		goto fail;
	}
	for (i = 0; i < m->n_dropped; i++)
		if (m->dropped[i].len != KEY_ID_LEN || (i > 0 &&
		    memcmp(m->dropped[i - 1].data, m->dropped[i].data,
		    KEY_ID_LEN) >= 0)) {
			keys_err(err, errlen, "%s: malformed list of dropped "
			    "keys", what);
			goto fail;
		}
	for (i = 0; i < m->n_keys; i++)
		if (key_wrapped_check(m->keys[i], why, sizeof(why)) == -1) {
			keys_err(err, errlen, "%s: %s", what, why);
			goto fail;
		}
	if (m->n_keys > 1) {
		if ((sorted = calloc(m->n_keys, sizeof(*sorted))) == NULL)
			goto nomem;
		memcpy(sorted, m->keys, m->n_keys * sizeof(*sorted));
		qsort(sorted, m->n_keys, sizeof(*sorted), wrapped_key_id_cmp);
		for (i = 1; i < m->n_keys; i++)
			if (wrapped_key_id_cmp(&sorted[i - 1], &sorted[i]) == 0) {
				key_id_hex(sorted[i]->key_id.data, KEY_ID_LEN,
				    id);
				keys_err(err, errlen, "%s: key %s appears twice",
				    what, id);
				goto fail;
			}
	}
	if ((kc = keychain_new(m->name)) == NULL)
		goto nomem;
	if (m->n_keys > 0 &&
	    (kc->kc_keys = calloc(m->n_keys, sizeof(*kc->kc_keys))) == NULL)
		goto nomem;
	for (i = 0; i < m->n_keys; i++) {
		if ((kc->kc_keys[i] = key_wrapped_dup(m->keys[i])) == NULL)
			goto nomem;
		kc->kc_nkeys++;
	}
	if (m->n_dropped > 0) {
		if ((kc->kc_dropped = malloc(m->n_dropped * KEY_ID_LEN)) ==
		    NULL)
			goto nomem;
		for (i = 0; i < m->n_dropped; i++)
			memcpy(kc->kc_dropped + i * KEY_ID_LEN,
			    m->dropped[i].data, KEY_ID_LEN);
		kc->kc_ndropped = m->n_dropped;
	}
	ok = 1;
	goto fail;
 nomem:
	keys_err(err, errlen, "%s: out of memory", what);
 fail:
	free(sorted);
	if (m != NULL)
		key_chain__free_unpacked(m, NULL);
	if (!ok) {
		keychain_free(kc);
		kc = NULL;
	}
	return kc;
}

int
keychain_pack(const struct keychain *kc, uint8_t **out, size_t *outlen,
    char *err, size_t errlen)
{
	return keychain_frame(kc, KEYCHAIN_MAGIC, out, outlen, err, errlen);
}

struct keychain *
keychain_unpack(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	return keychain_unframe(buf, len, KEYCHAIN_MAGIC, "key chain", err,
	    errlen);
}

static const struct kek *
kek_for(const WrappedKey *wk, const struct kek *const *keks, size_t nkeks)
{
	size_t	 i;

	for (i = 0; i < nkeks; i++)
		if (keks[i] != NULL && kek_ref_same(wk->kek, keks[i]->k_ref))
			return keks[i];
	return NULL;
}

int
keychain_export(const struct keychain *kc, const struct kek *const *keks,
    size_t nkeks, const char *passphrase, uint8_t **out, size_t *outlen,
    char *err, size_t errlen)
{
	struct kek	 xk = { { NULL, 0 }, NULL };
	struct keychain	*x = NULL;
	WrappedKey	*w = NULL;
	const struct kek *from;
	char		 id[2 * KEY_ID_LEN + 1], want[KEY_ERR_MAX];
	size_t		 i;
	int		 rv = -1;

	*out = NULL;
	*outlen = 0;
	if (kc->kc_nkeys == 0) {
		keys_err(err, errlen, "key chain '%s' holds no key to export",
		    kc->kc_name);
		goto fail;
	}
	/* Every key must be at hand before the slow derivation. */
	for (i = 0; i < kc->kc_nkeys; i++)
		if (kek_for(kc->kc_keys[i], keks, nkeks) == NULL) {
			key_id_hex(kc->kc_keys[i]->key_id.data, KEY_ID_LEN, id);
			kek_ref_describe(kc->kc_keys[i]->kek, want,
			    sizeof(want));
			keys_err(err, errlen, "export of '%s': key %s needs %s, "
			    "which is not loaded", kc->kc_name, id, want);
			goto fail;
		}
	if (kek_derive(passphrase, NULL, &xk, "passphrase", err,
	    errlen) == -1 ||
	    kek_set_name(&xk, "exported key file", err, errlen) == -1)
		goto fail;
	if ((x = keychain_new(kc->kc_name)) == NULL) {
		keys_err(err, errlen, "export: out of memory");
		goto fail;
	}
	for (i = 0; i < kc->kc_nkeys; i++) {
		from = kek_for(kc->kc_keys[i], keks, nkeks);
		if (key_rewrap(from, &xk, kc->kc_keys[i], &w, err,
		    errlen) == -1 || keychain_add(x, w, err, errlen) == -1)
			goto fail;
		key_wrapped_free(w);
		w = NULL;
	}
	if (keychain_frame(x, KEYCHAIN_EXPORT_MAGIC, out, outlen, err,
	    errlen) == -1)
		goto fail;
	rv = 0;
 fail:
	key_wrapped_free(w);
	keychain_free(x);
	kek_free(&xk);
	return rv;
}

int
keychain_import(const uint8_t *buf, size_t len, const char *passphrase,
    struct keychain **chainp, struct kek *kek, char *err, size_t errlen)
{
	struct keychain	*kc = NULL;
	struct key_buf	 k = { NULL, 0 };
	char		 why[KEY_ERR_MAX];
	size_t		 i;
	int		 rv = -1;

	*chainp = NULL;
	if ((kc = keychain_unframe(buf, len, KEYCHAIN_EXPORT_MAGIC, "key file",
	    err, errlen)) == NULL)
		goto fail;
	if (kc->kc_nkeys == 0) {
		keys_err(err, errlen, "key file holds no key");
		goto fail;
	}
	for (i = 0; i < kc->kc_nkeys; i++)
		if (kc->kc_keys[i]->kek->provider !=
		    KEY_PROVIDER__KEY_PROVIDER_PASSWORD ||
		    !kek_ref_same(kc->kc_keys[i]->kek, kc->kc_keys[0]->kek)) {
			keys_err(err, errlen, "key file: its keys are not all "
			    "under one passphrase; not an exported key file");
			goto fail;
		}
	if (kek_derive(passphrase, kc->kc_keys[0]->kek, kek, "passphrase",
	    err, errlen) == -1)
		goto fail;
	/* Every key must open now, not in the middle of a restore. */
	for (i = 0; i < kc->kc_nkeys; i++) {
		if (key_unwrap(kek, kc->kc_keys[i], &k, why,
		    sizeof(why)) == -1) {
			keys_err(err, errlen, "key file: %s", why);
			goto fail;
		}
		key_buf_free(&k);
	}
	*chainp = kc;
	kc = NULL;
	rv = 0;
 fail:
	key_buf_free(&k);
	keychain_free(kc);
	if (rv == -1)
		kek_free(kek);
	return rv;
}

int
keychain_change_password(struct keychain *kc, const char *oldpw,
    const char *newpw, struct kek *newkp, char *err, size_t errlen)
{
	struct kek	 oldk = { { NULL, 0 }, NULL };
	struct kek	 newk = { { NULL, 0 }, NULL };
	const struct kek *oldks[1];
	const KekRef	*ref;
	size_t		 i;
	int		 rv = -1;

	if (kc->kc_nkeys == 0) {
		keys_err(err, errlen, "key chain '%s' holds no key",
		    kc->kc_name);
		goto fail;
	}
	ref = kc->kc_keys[0]->kek;
	for (i = 0; i < kc->kc_nkeys; i++)
		if (ref->provider != KEY_PROVIDER__KEY_PROVIDER_PASSWORD ||
		    !kek_ref_same(kc->kc_keys[i]->kek, ref)) {
			keys_err(err, errlen, "key chain '%s': its keys are not "
			    "all under one password; nothing was changed",
			    kc->kc_name);
			goto fail;
		}
	if (kek_from_password(oldpw, ref, &oldk, err, errlen) == -1 ||
	    kek_from_password(newpw, NULL, &newk, err, errlen) == -1 ||
	    kek_set_name(&newk, ref->key_name, err, errlen) == -1)
		goto fail;
	oldks[0] = &oldk;
	if (keychain_rewrap(kc, oldks, 1, &newk, NULL, err, errlen) == -1)
		goto fail;
	if (newkp != NULL) {
		*newkp = newk;
		memset(&newk, 0, sizeof(newk));
	}
	rv = 0;
 fail:
	kek_free(&oldk);
	kek_free(&newk);
	return rv;
}

/* --- files ------------------------------------------------------------- */

int
keychain_read_file(const char *path, uint8_t **bufp, size_t *lenp, char *err,
    size_t errlen)
{
	struct stat	 st;
	uint8_t		*buf = NULL;
	size_t		 off = 0, len;
	ssize_t		 n;
	int		 fd, rv = -1;

	*bufp = NULL;
	*lenp = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 ||
	    fstat(fd, &st) == -1) {
		keys_err(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_size < 0 ||
	    (uint64_t)st.st_size > KEYCHAIN_MAX) {
		keys_err(err, errlen, "%s: not a regular file of at most %u "
		    "bytes", path, KEYCHAIN_MAX);
		goto fail;
	}
	len = (size_t)st.st_size;
	if ((buf = malloc(len > 0 ? len : 1)) == NULL) {
		keys_err(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	while (off < len) {
		if ((n = read(fd, buf + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			keys_err(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (n == 0) {
			keys_err(err, errlen, "%s: shrank while being read",
			    path);
			goto fail;
		}
		off += (size_t)n;
	}
	*bufp = buf;
	*lenp = len;
	buf = NULL;
	rv = 0;
 fail:
	free(buf);
	if (fd != -1)
		close(fd);
	return rv;
}

int
keychain_write_file(const char *path, const uint8_t *buf, size_t len,
    char *err, size_t errlen)
{
	struct stat	 st;
	char		 tmp[PATH_MAX], dir[PATH_MAX], *slash;
	size_t		 off = 0;
	ssize_t		 n;
	int		 fd = -1, dfd = -1, made = 0, rv = -1;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path,
	    (long)getpid()) >= sizeof(tmp)) {
		keys_err(err, errlen, "%s: path too long", path);
		goto fail;
	}
	(void)snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL)
		(void)snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0600)) == -1) {
		keys_err(err, errlen, "%s: %s", tmp, strerror(errno));
		goto fail;
	}
	made = 1;
	/* A rewrite by root (prune) stays readable by the daemon's user. */
	if (geteuid() == 0 && stat(path, &st) == 0 && (st.st_uid != 0 ||
	    st.st_gid != getegid()) && fchown(fd, st.st_uid, st.st_gid) == -1) {
		keys_err(err, errlen, "%s: cannot give it the owner of %s: %s",
		    tmp, path, strerror(errno));
		goto fail;
	}
	while (off < len) {
		if ((n = write(fd, buf + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			keys_err(err, errlen, "%s: %s", tmp, strerror(errno));
			goto fail;
		}
		off += (size_t)n;
	}
	if (fsync(fd) == -1 || close(fd) == -1) {
		fd = -1;
		keys_err(err, errlen, "%s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) == -1) {
		keys_err(err, errlen, "rename %s to %s: %s", tmp, path,
		    strerror(errno));
		goto fail;
	}
	made = 0;
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fsync(dfd) == -1) {
		keys_err(err, errlen, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	rv = 0;
 fail:
	if (fd != -1)
		close(fd);
	if (dfd != -1)
		close(dfd);
	if (made)
		(void)unlink(tmp);
	return rv;
}
