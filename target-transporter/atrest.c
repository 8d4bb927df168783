/*
 * atrest.c: at-rest encryption, a property of a tenant's namespace.
 *
 * A tenant with a key provider (at_rest = kmip | password) has every
 * chunk of its in-flight backups sealed by the target under a data key
 * (DEK) of the restore point: key id | nonce | AES-256-GCM | tag, the
 * format of source-side chunks, AAD binding the key id and chunk id.
 * Chunk ids stay the SHA-256 of the plaintext, so a chunk is shared by
 * every backup name of the tenant that holds the same block.  That is
 * why the keys are kept per tenant, not per name: tenants/T/at-rest.
 * keychain holds every DEK the tenant ever used, wrapped by the newest
 * KEK.  A job's DEK is written there, durably, before the job stores
 * its first chunk, so no chunk outlives its key, not even one of a job
 * that is cut off (the next backup may deduplicate against it).  Each
 * point's manifest lists the keys of that file as they were at its
 * start, under the KEK of that time, for when the file is lost.
 *
 * A namespace never mixes plaintext and at-rest chunks, since both are
 * named alike and deduplicated by name: the key file marks a namespace
 * as at rest.  Its first at-rest job refuses a namespace that holds
 * in-flight points; an in-flight backup without at_rest refuses a
 * namespace that has the file (receive.c).
 *
 * Everything here runs on worker threads; the KMS is never asked from
 * the event loop.  Unwrapped keys live in key_bufs only.
 */
#include <sys/stat.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keys.h"
#include "target.h"

/* The read-modify-write of key files is one at a time. */
static pthread_mutex_t	 atrest_mtx = PTHREAD_MUTEX_INITIALIZER;

/* KEKs fetched for one job, and those that could not be had. */
struct atrest_keks {
	const struct tenant	*ak_tenant;
	struct kmip_settings	 ak_ks;
	char			*ak_host;
	char			*ak_port;
	char			*ak_password;
	struct kek		**ak_keks;
	size_t			 ak_nkeks;
	KekRef			**ak_failed;	/* ... and why, in ak_why */
	char			**ak_why;
	size_t			 ak_nfailed;
};

/* The opened data keys of a restore. */
struct atrest_keys {
	uint8_t		*ak_ids;	/* ak_n * KEY_ID_LEN */
	struct key_buf	*ak_keys;
	size_t		 ak_n;
	char		 ak_why[KEY_ERR_MAX];	/* why an optional key failed */
};

static void
atrest_keks_init(struct atrest_keks *ak, const struct tenant *tn)
{
	memset(ak, 0, sizeof(*ak));
	ak->ak_tenant = tn;
	if (tn->tn_kms != NULL)
		(void)conf_split_hostport(tn->tn_kms, &ak->ak_host,
		    &ak->ak_port);
	ak->ak_ks.ks_host = ak->ak_host;
	ak->ak_ks.ks_port = ak->ak_port;
	ak->ak_ks.ks_cert = tn->tn_kms_cert;
	ak->ak_ks.ks_key = tn->tn_kms_key;
	ak->ak_ks.ks_ca = tn->tn_kms_ca;
	ak->ak_ks.ks_server_name = tn->tn_kms_server_name;
}

static void
atrest_keks_free(struct atrest_keks *ak)
{
	size_t	 i;

	for (i = 0; i < ak->ak_nkeks; i++) {
		kek_free(ak->ak_keks[i]);
		free(ak->ak_keks[i]);
	}
	free(ak->ak_keks);
	for (i = 0; i < ak->ak_nfailed; i++) {
		kek_ref__free_unpacked(ak->ak_failed[i], NULL);
		free(ak->ak_why[i]);
	}
	free(ak->ak_failed);
	free(ak->ak_why);
	kek_password_free(ak->ak_password);
	free(ak->ak_host);
	free(ak->ak_port);
	memset(ak, 0, sizeof(*ak));
}

/* Keeps k (taken over, freed on failure).  k, or NULL. */
static struct kek *
atrest_kek_keep(struct atrest_keks *ak, struct kek *k, char *err,
    size_t errlen)
{
	struct kek	**keks;

	if ((keks = reallocarray(ak->ak_keks, ak->ak_nkeks + 1,
	    sizeof(*keks))) == NULL) {
		snprintf(err, errlen, "out of memory");
		kek_free(k);
		free(k);
		return NULL;
	}
	ak->ak_keks = keks;
	ak->ak_keks[ak->ak_nkeks++] = k;
	return k;
}

/* Remembers that ref cannot be had, so it is asked for only once. */
static void
atrest_kek_failed(struct atrest_keks *ak, const KekRef *ref, const char *why)
{
	KekRef	**refs;
	char	**whys;

	if ((refs = reallocarray(ak->ak_failed, ak->ak_nfailed + 1,
	    sizeof(*refs))) == NULL)
		return;
	ak->ak_failed = refs;
	if ((whys = reallocarray(ak->ak_why, ak->ak_nfailed + 1,
	    sizeof(*whys))) == NULL)
		return;
	ak->ak_why = whys;
	if ((refs[ak->ak_nfailed] = kek_ref_dup(ref)) == NULL)
		return;
	if ((whys[ak->ak_nfailed] = strdup(why)) == NULL) {
		kek_ref__free_unpacked(refs[ak->ak_nfailed], NULL);
		return;
	}
	ak->ak_nfailed++;
}

static int
atrest_password(struct atrest_keks *ak, char *err, size_t errlen)
{
	const struct tenant	*tn = ak->ak_tenant;

	if (ak->ak_password != NULL)
		return 0;
	if (tn->tn_password_file == NULL) {
		snprintf(err, errlen, "a key is wrapped by a password, but "
		    "tenant '%s' has no 'password_file'", tn->tn_name);
		return -1;
	}
	return kek_password_read_file(tn->tn_password_file, &ak->ak_password,
	    err, errlen);
}

/*
 * The KEK ref names: from those fetched, the KMS (that very version)
 * or the password.  NULL with a message naming the key and the KMS.
 */
static const struct kek *
atrest_kek_for(struct atrest_keks *ak, const KekRef *ref, char *err,
    size_t errlen)
{
	const struct tenant	*tn = ak->ak_tenant;
	struct kek		*k;
	size_t			 i;
	int			 rv = -1;

	for (i = 0; i < ak->ak_nkeks; i++)
		if (kek_ref_same(ak->ak_keks[i]->k_ref, ref))
			return ak->ak_keks[i];
	for (i = 0; i < ak->ak_nfailed; i++)
		if (kek_ref_same(ak->ak_failed[i], ref)) {
			snprintf(err, errlen, "%s", ak->ak_why[i]);
			return NULL;
		}
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	switch (ref->provider) {
	case KEY_PROVIDER__KEY_PROVIDER_KMIP:
		if (tn->tn_kms == NULL) {
			snprintf(err, errlen, "a key is wrapped by a KMS key, "
			    "but tenant '%s' has no 'kms'", tn->tn_name);
			break;
		}
		rv = kek_from_kmip_ref(&ak->ak_ks, ref, k, err, errlen);
		break;
	case KEY_PROVIDER__KEY_PROVIDER_PASSWORD:
		if (atrest_password(ak, err, errlen) == 0)
			rv = kek_from_password(ak->ak_password, ref, k, err,
			    errlen);
		break;
	default:
		snprintf(err, errlen, "a key names an unknown key provider %d",
		    ref->provider);
		break;
	}
	if (rv == -1) {
		atrest_kek_failed(ak, ref, err);
		kek_free(k);
		free(k);
		return NULL;
	}
	return atrest_kek_keep(ak, k, err, errlen);
}

/*
 * The KEK new keys go under: the newest Active version of kek_name, or
 * the password's KEK (the one of the tenant's chain kc, checked by its
 * verifier, or a new one for a new chain).
 */
static const struct kek *
atrest_kek_newest(struct atrest_keks *ak, const struct keychain *kc,
    char *err, size_t errlen)
{
	const struct tenant	*tn = ak->ak_tenant;
	const KekRef		*ref = NULL;
	struct kek		*k;
	size_t			 i;

	if (tn->tn_at_rest == KEY_PROVIDER__KEY_PROVIDER_PASSWORD) {
		for (i = 0; kc != NULL && i < kc->kc_nkeys; i++)
			if (kc->kc_keys[i]->kek->provider ==
			    KEY_PROVIDER__KEY_PROVIDER_PASSWORD)
				ref = kc->kc_keys[i]->kek;
		if (ref != NULL)
			return atrest_kek_for(ak, ref, err, errlen);
	}
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (tn->tn_at_rest == KEY_PROVIDER__KEY_PROVIDER_KMIP) {
		if (kek_from_kmip(&ak->ak_ks, tn->tn_kek_name, k, err,
		    errlen) == -1)
			goto fail;
	} else if (atrest_password(ak, err, errlen) == -1 ||
	    kek_from_password(ak->ak_password, NULL, k, err, errlen) == -1 ||
	    kek_set_name(k, tn->tn_name, err, errlen) == -1)
		goto fail;
	return atrest_kek_keep(ak, k, err, errlen);
 fail:
	kek_free(k);
	free(k);
	return NULL;
}

/* Newest first: creation time, then id (ids sort by creation). */
static int
atrest_point_newer(const void *a, const void *b)
{
	const struct repo_point	*pa = a, *pb = b;

	if (pa->rp_created != pb->rp_created)
		return pa->rp_created > pb->rp_created ? -1 : 1;
	return -strcmp(pa->rp_id, pb->rp_id);
}

/*
 * A tenant's first at-rest job: refuses a namespace holding plaintext
 * points (errno EPERM), and rebuilds the chain from the manifests of
 * at-rest points if the key file was lost.  The chain, or NULL and why.
 */
static struct keychain *
atrest_chain_new(struct repo *r, const struct tenant *tn, char *err,
    size_t errlen)
{
	struct repo_point	*points = NULL;
	struct keychain		*kc = NULL;
	KeyChain		*pk;
	char			 names[256], why[KEY_ERR_MAX];
	size_t			 n = 0, i, j, off = 0, plain = 0, seeded = 0;
	int			 refused = 0;

	if (repo_list(r, tn->tn_name, NULL, &points, &n) == -1) {
		snprintf(err, errlen, "cannot list the restore points of "
		    "tenant '%s': %s", tn->tn_name, strerror(errno));
		goto fail;
	}
	names[0] = '\0';
	for (i = 0; i < n; i++) {
		if (points[i].rp_mode != ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT &&
		    points[i].rp_mode != ENCRYPTION_MODE__ENCRYPTION_NONE)
			continue;
		if ((plain++ == 0 || strcmp(points[i].rp_name,
		    points[i - 1].rp_name) != 0) && off < sizeof(names))
			off += snprintf(names + off, sizeof(names) - off,
			    "%s%s", off ? ", " : "", points[i].rp_name);
	}
	if (plain > 0) {
		snprintf(err, errlen, "tenant '%s' already holds %zu restore "
		    "point(s) stored without at-rest encryption (%s); at-rest "
		    "points would share their plaintext chunks. Give at-rest "
		    "backups a [tenant] of their own, or remove those points",
		    tn->tn_name, plain, names);
		refused = 1;
		goto fail;
	}
	if ((kc = keychain_new(tn->tn_name)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/*
	 * The file is gone but points are not: their keys are the chain,
	 * each in the copy of the newest point (under the newest KEK).
	 */
	if (n > 1)
		qsort(points, n, sizeof(*points), atrest_point_newer);
	for (i = 0; i < n; i++) {
		if (points[i].rp_mode != ENCRYPTION_MODE__ENCRYPTION_AT_REST ||
		    points[i].rp_keys == NULL)
			continue;
		if ((pk = key_chain__unpack(NULL, points[i].rp_keys_len,
		    points[i].rp_keys)) == NULL)
			continue;
		for (j = 0; j < pk->n_keys; j++)
			if (key_wrapped_check(pk->keys[j], why,
			    sizeof(why)) == 0 &&
			    keychain_add(kc, pk->keys[j], why, sizeof(why)) == 0)
				seeded++;
		key_chain__free_unpacked(pk, NULL);
	}
	if (seeded > 0)
		log_warnx("tenant %s: at-rest key file %s is missing; rebuilt "
		    "from the keys its restore points list", tn->tn_name,
		    tn->tn_keychain);
	repo_points_free(points, n);
	return kc;
 fail:
	keychain_free(kc);
	repo_points_free(points, n);
	errno = refused ? EPERM : ENOKEY;
	return NULL;
}

/*
 * Removes the keys of kc wrapped under ref, whose KEK is gone, and
 * records their ids as dropped, as prune does: a restore of a point that
 * lists one but has no chunk sealed under it need not open it
 * (atrest_restore_keys).  How many.
 */
static size_t
atrest_chain_leave_out(struct keychain *kc, const KekRef *ref)
{
	uint8_t	*ids;
	size_t	 i, m, n = kc->kc_ndropped;

	if ((ids = calloc(kc->kc_ndropped + kc->kc_nkeys + 1,
	    KEY_ID_LEN)) == NULL)
		fatal("calloc");
	if (n > 0)
		memcpy(ids, kc->kc_dropped, n * KEY_ID_LEN);
	for (i = m = 0; i < kc->kc_nkeys; i++)
		if (kek_ref_same(kc->kc_keys[i]->kek, ref)) {
			if (kc->kc_keys[i]->key_id.len == KEY_ID_LEN)
				memcpy(ids + n++ * KEY_ID_LEN,
				    kc->kc_keys[i]->key_id.data, KEY_ID_LEN);
			key_wrapped_free(kc->kc_keys[i]);
		} else
			kc->kc_keys[m++] = kc->kc_keys[i];
	i = kc->kc_nkeys - m;
	kc->kc_nkeys = m;
	if (keychain_set_dropped(kc, ids, n) == -1)
		log_warn("cannot record the %zu key(s) left out; restores of "
		    "points that list them fail before they start", i);
	free(ids);
	return i;
}

/* Reads the tenant's key file; a new chain if it has none yet. */
static struct keychain *
atrest_chain_load(struct repo *r, const struct tenant *tn, char *err,
    size_t errlen)
{
	struct keychain	*kc;
	struct stat	 st;
	uint8_t		*buf = NULL;
	size_t		 len;
	char		 why[KEY_ERR_MAX];

	if (stat(tn->tn_keychain, &st) == -1) {
		if (errno == ENOENT)
			return atrest_chain_new(r, tn, err, errlen);
		snprintf(err, errlen, "cannot read the at-rest key file %s: "
		    "%s", tn->tn_keychain, strerror(errno));
		return NULL;
	}
	if (keychain_read_file(tn->tn_keychain, &buf, &len, why,
	    sizeof(why)) == -1 ||
	    (kc = keychain_unpack(buf, len, why, sizeof(why))) == NULL) {
		/* Never replaced: it may hold the only copy of a key. */
		snprintf(err, errlen, "the at-rest key file is damaged: %s; "
		    "restore %s from a copy", why, tn->tn_keychain);
		free(buf);
		return NULL;
	}
	free(buf);
	return kc;
}

/*
 * Packs the chain's keys, of which the commit keeps those the point
 * needs (repo.c, job_keep_used_keys): *out to free().
 */
static int
atrest_point_keys(const struct keychain *kc, uint8_t **out, size_t *outlen,
    char *err, size_t errlen)
{
	KeyChain	 pk = KEY_CHAIN__INIT;
	size_t		 len;

	pk.format = KEYCHAIN_FORMAT;
	pk.name = kc->kc_name;
	pk.n_keys = kc->kc_nkeys;
	pk.keys = kc->kc_keys;
	len = key_chain__get_packed_size(&pk);
	if ((*out = malloc(len)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	key_chain__pack(&pk, *out);
	*outlen = len;
	return 0;
}

/*
 * Worker: the keys of a new at-rest job of tenant tn.  Gets the newest
 * KEK, wraps every key of the tenant's key file again under it, makes
 * the job's DEK (into dek, empty, and dek_id), adds it and writes the
 * file durably.  *keys (to free()) gets what the point lists: every
 * key of the file.  Fails closed: 0, or -1 with why in err, dek empty,
 * nothing changed and errno EPERM if the namespace cannot go at rest
 * (it holds plaintext points), else ENOKEY.
 */
int
atrest_backup_keys(struct repo *r, const struct tenant *tn,
    struct key_buf *dek, uint8_t dek_id[KEY_ID_LEN], uint8_t **keys,
    size_t *keyslen, char *err, size_t errlen)
{
	struct atrest_keks	 ak;
	struct keychain		*kc = NULL;
	const struct kek	*newest = NULL, **old = NULL;
	WrappedKey		*wk = NULL;
	KekRef			**refs = NULL;
	uint8_t			*file = NULL;
	size_t			 filelen, nrefs = 0, i, rewrapped = 0;
	int			 locked = 0, refused = 0, rebuilt, rv = -1;

	*keys = NULL;
	*keyslen = 0;
	atrest_keks_init(&ak, tn);
	/* The KMS first, outside the lock: it may take its timeout. */
	if (tn->tn_at_rest == KEY_PROVIDER__KEY_PROVIDER_KMIP &&
	    (newest = atrest_kek_newest(&ak, NULL, err, errlen)) == NULL)
		goto out;
	pthread_mutex_lock(&atrest_mtx);
	locked = 1;
	if ((kc = atrest_chain_load(r, tn, err, errlen)) == NULL) {
		refused = errno == EPERM;
		goto out;
	}
	if (newest == NULL &&
	    (newest = atrest_kek_newest(&ak, kc, err, errlen)) == NULL)
		goto out;

	/* Rotation: every key goes under the newest KEK. */
	rebuilt = access(tn->tn_keychain, F_OK) == -1 && errno == ENOENT;
	if (keychain_needed_keks(kc, &refs, &nrefs, err, errlen) == -1)
		goto out;
	if ((old = calloc(nrefs + 1, sizeof(*old))) == NULL)
		goto nomem;
	for (i = 0; i < nrefs; i++) {
		if (kek_ref_same(refs[i], newest->k_ref) ||
		    (old[i] = atrest_kek_for(&ak, refs[i], err, errlen)) !=
		    NULL)
			continue;
		if (!rebuilt)
			goto out;
		/*
		 * Rebuilt from old points' copies: a key whose KEK is gone
		 * stays in those copies alone.  Its chunks are not
		 * deduplicated against (their key is not in the file), and
		 * a restore tries the point's copy, as before.
		 */
		log_warnx("tenant %s: rebuilding the at-rest key file: %zu "
		    "key(s) left out: %s", tn->tn_name,
		    atrest_chain_leave_out(kc, refs[i]), err);
	}
	if (keychain_rewrap(kc, (const struct kek *const *)old, nrefs,
	    newest, &rewrapped, err, errlen) == -1)
		goto out;

	/* This point's data key, durable before any chunk it seals. */
	if (kc->kc_nkeys >= KEYCHAIN_KEYS_MAX) {
		snprintf(err, errlen, "its key file %s holds %zu keys, the "
		    "most it can; prune old restore points ('target-transporter "
		    "prune') to drop the keys their chunks were sealed under",
		    tn->tn_keychain, kc->kc_nkeys);
		goto out;
	}
	if (dek_new(dek, dek_id) == -1)
		goto nomem;
	if (key_wrap(newest, KEY_PURPOSE_DATA, dek_id, dek, &wk, err,
	    errlen) == -1 || keychain_add(kc, wk, err, errlen) == -1 ||
	    atrest_point_keys(kc, keys, keyslen, err, errlen) == -1 ||
	    keychain_pack(kc, &file, &filelen, err, errlen) == -1 ||
	    keychain_write_file(tn->tn_keychain, file, filelen, err,
	    errlen) == -1)
		goto out;
	if (rewrapped > 0)
		log_info("tenant %s: %zu at-rest key(s) wrapped again under "
		    "the newest key", tn->tn_name, rewrapped);
	rv = 0;
	goto out;
 nomem:
	snprintf(err, errlen, "out of memory");
 out:
	if (locked)
		pthread_mutex_unlock(&atrest_mtx);
	if (rv == -1) {
		key_buf_free(dek);
		free(*keys);
		*keys = NULL;
		*keyslen = 0;
	}
	free(file);
	key_wrapped_free(wk);
	keychain_refs_free(refs, nrefs);
	free(old);
	keychain_free(kc);
	atrest_keks_free(&ak);
	if (rv == -1)
		errno = refused ? EPERM : ENOKEY;
	return rv;
}

/*
 * Seals len bytes of chunk_id's stored payload under dek into out
 * (len + SEALED_OVERHEAD bytes): key id | nonce | ciphertext | tag.
 * counter must never repeat under dek.  0, or -1 (logged).
 */
int
atrest_seal(const struct key_buf *dek, const uint8_t dek_id[KEY_ID_LEN],
    const uint8_t chunk_id[CHUNK_ID_LEN], uint64_t counter, const void *in,
    size_t len, uint8_t *out)
{
	uint8_t	 aad[AAD_MAX_LEN];
	size_t	 aadlen;

	memcpy(out, dek_id, KEY_ID_LEN);
	crypto_nonce(out + KEY_ID_LEN, AAD_CHUNK_STORED, counter);
	aadlen = crypto_aad(aad, AAD_CHUNK_STORED, dek_id, chunk_id, 0);
	return crypto_seal(dek->kb_key, out + KEY_ID_LEN, aad, aadlen, in, len,
	    out + KEY_ID_LEN + AEAD_NONCE_LEN);
}

/* Unwraps wk into the next slot of keys: 0, or -1 and why. */
static int
atrest_keys_add(struct atrest_keys *keys, struct atrest_keks *ak,
    const WrappedKey *wk, char *err, size_t errlen)
{
	const struct kek	*k;

	if (key_wrapped_check(wk, err, errlen) == -1)
		return -1;
	if (wk->purpose != KEY_PURPOSE_DATA) {
		snprintf(err, errlen, "not a data key");
		return -1;
	}
	if ((k = atrest_kek_for(ak, wk->kek, err, errlen)) == NULL)
		return -1;
	if (key_unwrap(k, wk, &keys->ak_keys[keys->ak_n], err, errlen) == -1) {
		key_buf_free(&keys->ak_keys[keys->ak_n]);
		return -1;
	}
	memcpy(keys->ak_ids + keys->ak_n * KEY_ID_LEN, wk->key_id.data,
	    KEY_ID_LEN);
	keys->ak_n++;
	return 0;
}

static const struct key_buf *
atrest_key(const struct atrest_keys *keys, const uint8_t *id)
{
	size_t	 i;

	for (i = 0; i < keys->ak_n; i++)
		if (memcmp(keys->ak_ids + i * KEY_ID_LEN, id, KEY_ID_LEN) == 0)
			return &keys->ak_keys[i];
	return NULL;
}

/*
 * Worker: opens the data keys an at-rest point needs, before anything
 * is streamed.  Every key the point lists must open, each from the
 * tenant's key file (newest KEK) if it is there, else from the point's
 * own copy (the KEK version of its backup); with the file intact, a
 * listed key prune dropped from it (no chunk is sealed under it) may
 * fail.  The file's other keys are opened too if
 * they can be (chunks shared with a job that started after this
 * point's): their failures matter only if a chunk needs one.  The keys
 * (atrest_keys_free), or NULL with the key ids that failed and why in
 * err.
 */
struct atrest_keys *
atrest_restore_keys(const struct tenant *tn, const struct repo_point *rp,
    char *err, size_t errlen)
{
	struct atrest_keks	 ak;
	struct atrest_keys	*keys = NULL;
	struct keychain		*kc = NULL;
	KeyChain		*pk = NULL;
	const WrappedKey	*wk;
	uint8_t			*buf = NULL;
	size_t			 len, i, n, off = 0, failed = 0;
	char			 why[KEY_ERR_MAX], last[KEY_ERR_MAX];
	char			 hex[2 * KEY_ID_LEN + 1];

	atrest_keks_init(&ak, tn);
	if (tn->tn_at_rest == 0) {
		snprintf(err, errlen, "the point is encrypted at rest, but "
		    "tenant '%s' has no 'at_rest' key provider; configure the "
		    "one its keys were made with", tn->tn_name);
		goto fail;
	}
	if (rp->rp_keys == NULL || (pk = key_chain__unpack(NULL,
	    rp->rp_keys_len, rp->rp_keys)) == NULL || pk->n_keys == 0 ||
	    pk->n_keys > KEYCHAIN_KEYS_MAX) {
		snprintf(err, errlen, "restore point %s/%s lists no keys",
		    rp->rp_name, rp->rp_id);
		goto fail;
	}
	/* A damaged or missing file: the point's own copies will do. */
	if (access(tn->tn_keychain, F_OK) == 0 &&
	    (keychain_read_file(tn->tn_keychain, &buf, &len, why,
	    sizeof(why)) == -1 ||
	    (kc = keychain_unpack(buf, len, why, sizeof(why))) == NULL))
		log_warnx("tenant %s: at-rest key file: %s; using the keys "
		    "restore point %s/%s lists", tn->tn_name, why, rp->rp_name,
		    rp->rp_id);
	free(buf);
	n = pk->n_keys + (kc != NULL ? kc->kc_nkeys : 0);
	if ((keys = calloc(1, sizeof(*keys))) == NULL ||
	    (keys->ak_ids = calloc(n, KEY_ID_LEN)) == NULL ||
	    (keys->ak_keys = calloc(n, sizeof(*keys->ak_keys))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	err[0] = last[0] = '\0';
	for (i = 0; i < pk->n_keys; i++) {
		wk = pk->keys[i];
		if (wk->key_id.len == KEY_ID_LEN && kc != NULL &&
		    keychain_find(kc, wk->key_id.data) != NULL)
			wk = keychain_find(kc, wk->key_id.data);
		if (wk->key_id.len == KEY_ID_LEN &&
		    atrest_key(keys, wk->key_id.data) != NULL)
			continue;
		if (atrest_keys_add(keys, &ak, wk, why, sizeof(why)) == 0)
			continue;
		/*
		 * Prune drops from the file the keys no chunk is sealed
		 * under, and records their ids; a point may still list one
		 * (its base's), and its own copy may need a KEK version
		 * destroyed since.  A chunk sealed under it would still
		 * fail (atrest_open).
		 */
		if (kc != NULL && wk->key_id.len == KEY_ID_LEN &&
		    keychain_find(kc, wk->key_id.data) == NULL &&
		    keychain_dropped(kc, wk->key_id.data)) {
			hex_encode(wk->key_id.data, KEY_ID_LEN, hex);
			log_debug("restore of %s/%s: data key %.16s was "
			    "dropped by prune (no chunk is sealed under it) "
			    "and its copy in the point does not open: %s",
			    rp->rp_name, rp->rp_id, hex, why);
			if (keys->ak_why[0] == '\0')
				snprintf(keys->ak_why, sizeof(keys->ak_why),
				    "prune dropped it from the tenant's key "
				    "file, and the restore point's copy: "
				    "%.400s", why);
			continue;
		}
		/* One reason per run of keys that share it. */
		if (wk->key_id.len == KEY_ID_LEN)
			hex_encode(wk->key_id.data, KEY_ID_LEN, hex);
		else
			snprintf(hex, sizeof(hex), "(malformed)");
		if (off >= errlen)
			;
		else if (failed && strcmp(why, last) == 0)
			off += snprintf(err + off, errlen - off, ", %.16s", hex);
		else
			off += snprintf(err + off, errlen - off, "%s%s: data "
			    "key %.16s", failed ? "; " : "", why, hex);
		snprintf(last, sizeof(last), "%s", why);
		failed++;
	}
	if (failed > 0)
		goto fail;
	for (i = 0; kc != NULL && i < kc->kc_nkeys; i++) {
		wk = kc->kc_keys[i];
		if (wk->purpose != KEY_PURPOSE_DATA ||
		    atrest_key(keys, wk->key_id.data) != NULL)
			continue;
		if (atrest_keys_add(keys, &ak, wk, why, sizeof(why)) == -1 &&
		    keys->ak_why[0] == '\0')
			snprintf(keys->ak_why, sizeof(keys->ak_why), "%s", why);
	}
	keychain_free(kc);
	key_chain__free_unpacked(pk, NULL);
	atrest_keks_free(&ak);
	return keys;
 fail:
	atrest_keys_free(keys);
	keychain_free(kc);
	if (pk != NULL)
		key_chain__free_unpacked(pk, NULL);
	atrest_keks_free(&ak);
	return NULL;
}

/*
 * Opens a chunk sealed at rest (in, len bytes) into out (len -
 * SEALED_OVERHEAD bytes).  0, or -1 with errno ENOKEY (its key is not
 * open) or EBADMSG (too short, or it fails authentication) and what is
 * wrong with it in msg.  Thread-safe.
 */
int
atrest_open(const struct atrest_keys *keys,
    const uint8_t chunk_id[CHUNK_ID_LEN], const uint8_t *in, size_t len,
    uint8_t *out, char *msg, size_t msglen)
{
	const struct key_buf	*kb;
	uint8_t			 aad[AAD_MAX_LEN];
	char			 hex[2 * KEY_ID_LEN + 1];
	size_t			 aadlen;

	if (len < SEALED_OVERHEAD) {
		snprintf(msg, msglen, "is too short to be sealed");
		errno = EBADMSG;
		return -1;
	}
	if ((kb = atrest_key(keys, in)) == NULL) {
		hex_encode(in, KEY_ID_LEN, hex);
		snprintf(msg, msglen, "is sealed under data key %.16s, which "
		    "is not available%s%s", hex, keys->ak_why[0] ? ": " : "",
		    keys->ak_why);
		errno = ENOKEY;
		return -1;
	}
	aadlen = crypto_aad(aad, AAD_CHUNK_STORED, in, chunk_id, 0);
	if (crypto_open(kb->kb_key, in + KEY_ID_LEN, aad, aadlen,
	    in + KEY_ID_LEN + AEAD_NONCE_LEN, len - KEY_ID_LEN -
	    AEAD_NONCE_LEN, out) == -1) {
		snprintf(msg, msglen, "failed authentication under its "
		    "at-rest data key (AES-GCM tag)");
		errno = EBADMSG;
		return -1;
	}
	return 0;
}

/* Wipes and frees the keys; NULL is fine. */
void
atrest_keys_free(struct atrest_keys *keys)
{
	size_t	 i;

	if (keys == NULL)
		return;
	for (i = 0; keys->ak_keys != NULL && i < keys->ak_n; i++)
		key_buf_free(&keys->ak_keys[i]);
	free(keys->ak_keys);
	free(keys->ak_ids);
	free(keys);
}

/*
 * 1 if the tenant's namespace holds at-rest chunks (its key file
 * exists), else 0.  A stat: cheap enough for the event loop.
 */
int
atrest_tenant_used(const struct tenant *tn)
{
	return tn->tn_keychain != NULL && access(tn->tn_keychain, F_OK) == 0;
}
