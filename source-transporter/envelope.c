/*
 * envelope.c: the source's side of envelope encryption.
 *
 * A source-side backup seals every chunk with a fresh data key (DEK) of
 * its restore point and names chunks by HMAC-SHA256 under the chain's
 * chunk-id key.  Both keys live wrapped in the chain's key file, which
 * the target keeps without being able to open it; every key there is
 * wrapped by the newest key-encrypting key (KEK), so a chain reads with
 * the newest KEK alone.  Each point's manifest also lists the wrapped
 * keys it needs, under the KEK versions that wrapped them, for when the
 * key file is lost.  Keys exist unwrapped only here, in locked memory.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keys.h"
#include "source.h"

/* KEKs fetched so far, by the key they name. */
static struct kek *
envelope_kek_cached(struct envelope *ev, const KekRef *ref)
{
	size_t	 i;

	for (i = 0; i < ev->ev_nkeks; i++)
		if (kek_ref_same(ev->ev_keks[i]->k_ref, ref))
			return ev->ev_keks[i];
	return NULL;
}

/* Keeps k (taken over) among the KEKs at hand: 0, or -1 (ENOMEM). */
int
envelope_add_kek(struct envelope *ev, struct kek *k)
{
	struct kek	**keks;

	if ((keks = reallocarray(ev->ev_keks, ev->ev_nkeks + 1,
	    sizeof(*keks))) == NULL)
		return -1;
	ev->ev_keks = keks;
	ev->ev_keks[ev->ev_nkeks++] = k;
	return 0;
}

static void
envelope_kmip_settings(const struct source_conf *sc, struct kmip_settings *ks,
    char **host, char **port)
{
	memset(ks, 0, sizeof(*ks));
	*host = *port = NULL;
	(void)conf_split_hostport(sc->sc_kms, host, port);
	ks->ks_host = *host;
	ks->ks_port = *port;
	ks->ks_cert = sc->sc_kms_cert ? sc->sc_kms_cert : sc->sc_cert;
	ks->ks_key = sc->sc_kms_key ? sc->sc_kms_key : sc->sc_key;
	ks->ks_ca = sc->sc_kms_ca ? sc->sc_kms_ca : sc->sc_ca;
	ks->ks_server_name = sc->sc_kms_server_name;
}

/* Reads a password file: its first line, without the newline. */
static int
envelope_read_password(const char *path, char **out, char *err,
    size_t errlen)
{
	return kek_password_read_file(path, out, err, errlen);
}

/*
 * Gets the KEK a wrapped key names: from the cache, the KMS (that exact
 * version) or the password.  NULL with a message in err (errno
 * EKEYREJECTED: the password is not that KEK's).
 */
static struct kek *
envelope_kek_for(struct envelope *ev, const KekRef *ref, char *err,
    size_t errlen)
{
	struct kmip_settings	 ks;
	struct kek		*k;
	char			*host, *port;
	int			 rv = -1, save;

	if ((k = envelope_kek_cached(ev, ref)) != NULL)
		return k;
	if ((k = calloc(1, sizeof(*k))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	switch (ref->provider) {
	case KEY_PROVIDER__KEY_PROVIDER_KMIP:
		if (ev->ev_conf->sc_kms == NULL) {
			snprintf(err, errlen, "a key is wrapped by a KMS key "
			    "but no 'kms' is configured in %s",
			    ev->ev_conf->sc_path);
			break;
		}
		envelope_kmip_settings(ev->ev_conf, &ks, &host, &port);
		rv = kek_from_kmip_ref(&ks, ref, k, err, errlen);
		free(host);
		free(port);
		break;
	case KEY_PROVIDER__KEY_PROVIDER_PASSWORD:
		if (ev->ev_password == NULL) {
			snprintf(err, errlen, "a key is wrapped by a password "
			    "but no 'password_file' is configured in %s",
			    ev->ev_conf->sc_path);
			break;
		}
		rv = kek_from_password(ev->ev_password, ref, k, err, errlen);
		break;
	default:
		snprintf(err, errlen, "a key names an unknown key provider %d",
		    ref->provider);
		break;
	}
	if (rv == -1 || envelope_add_kek(ev, k) == -1) {
		save = errno;
		kek_free(k);
		free(k);
		errno = save;
		return NULL;
	}
	return k;
}

/* An empty envelope for sc. */
void
envelope_init(struct envelope *ev, struct source_conf *sc)
{
	memset(ev, 0, sizeof(*ev));
	ev->ev_conf = sc;
	ev->ev_chunk_idx = -1;
}

/*
 * Reads the configured password, if any, for the KEKs a restore needs.
 * 0, or -1 with a message.
 */
int
envelope_load_password(struct envelope *ev, char *err, size_t errlen)
{
	if (ev->ev_conf->sc_password_file == NULL || ev->ev_password != NULL)
		return 0;
	return envelope_read_password(ev->ev_conf->sc_password_file,
	    &ev->ev_password, err, errlen);
}

/*
 * Before any data is read: gets the newest KEK (KMIP), or reads the
 * password (whose KEK needs the chain's salt, see envelope_begin).
 * Fails closed: 0, or -1 with a message naming the key and provider.
 */
int
envelope_prepare(struct envelope *ev, struct source_conf *sc, char *err,
    size_t errlen)
{
	struct kmip_settings	 ks;
	char			*host, *port;
	int			 rv = -1;

	envelope_init(ev, sc);
	if (sc->sc_password_file != NULL &&
	    envelope_read_password(sc->sc_password_file, &ev->ev_password,
	    err, errlen) == -1)
		return -1;
	switch (sc->sc_key_provider) {
	case KEY_PROVIDER__KEY_PROVIDER_KMIP:
		if (sc->sc_kms == NULL || sc->sc_kek_name == NULL) {
			snprintf(err, errlen, "%s: key_provider kmip needs 'kms' "
			    "and 'kek_name'", sc->sc_path);
			return -1;
		}
		if ((ev->ev_newest = calloc(1, sizeof(*ev->ev_newest))) ==
		    NULL)
			return -1;
		envelope_kmip_settings(sc, &ks, &host, &port);
		rv = kek_from_kmip(&ks, sc->sc_kek_name, ev->ev_newest, err,
		    errlen);
		free(host);
		free(port);
		if (rv == -1 || envelope_add_kek(ev, ev->ev_newest) == -1) {
			kek_free(ev->ev_newest);
			free(ev->ev_newest);
			ev->ev_newest = NULL;
			return -1;
		}
		return 0;
	case KEY_PROVIDER__KEY_PROVIDER_PASSWORD:
		if (ev->ev_password == NULL) {
			snprintf(err, errlen, "%s: key_provider password needs "
			    "'password_file'", sc->sc_path);
			return -1;
		}
		return 0;
	default:
		snprintf(err, errlen, "%s: source-side encryption needs "
		    "'key_provider = kmip' or 'key_provider = password'",
		    sc->sc_path);
		return -1;
	}
}

/*
 * The password KEK: the chain's, checked by its verifier; for a new
 * chain the one this source's other backups to this target use, so
 * that a wrong password_file cannot start a backup nobody can restore
 * with the password on record; else a new one.
 */
static int
envelope_password_kek(struct envelope *ev, const char *name, char *err,
    size_t errlen)
{
	const KekRef	*ref = NULL;
	KekRef		*known;
	size_t		 i;
	char		 path[PATH_MAX], why[KEY_ERR_MAX];
	int		 wrong;

	for (i = 0; ev->ev_chain != NULL && i < ev->ev_chain->kc_nkeys; i++)
		if (ev->ev_chain->kc_keys[i]->kek->provider ==
		    KEY_PROVIDER__KEY_PROVIDER_PASSWORD)
			ref = ev->ev_chain->kc_keys[i]->kek;
	if (ref != NULL) {
		if ((ev->ev_newest = envelope_kek_for(ev, ref, err, errlen)) ==
		    NULL)
			return -1;
		return 0;
	}
	if ((known = state_password_ref(ev->ev_conf, path, sizeof(path))) !=
	    NULL) {
		/* Only the verifier's no says it is another password. */
		errno = 0;
		ev->ev_newest = envelope_kek_for(ev, known, why, sizeof(why));
		wrong = ev->ev_newest == NULL && errno == EKEYREJECTED;
		kek_ref__free_unpacked(known, NULL);
		if (wrong)
			snprintf(err, errlen, "'%s' is a new backup and the "
			    "password in %s is not the one this source's other "
			    "backups to this target use (%s): put theirs in "
			    "it; if it changed on purpose (keys "
			    "change-password), remove %s", name,
			    ev->ev_conf->sc_password_file, why, path);
		else if (ev->ev_newest == NULL)
			snprintf(err, errlen, "%s", why);
		return ev->ev_newest == NULL ? -1 : 0;
	}
	if ((ev->ev_newest = calloc(1, sizeof(*ev->ev_newest))) == NULL)
		return -1;
	if (kek_from_password(ev->ev_password, NULL, ev->ev_newest, err,
	    errlen) == -1 || envelope_add_kek(ev, ev->ev_newest) == -1) {
		kek_free(ev->ev_newest);
		free(ev->ev_newest);
		ev->ev_newest = NULL;
		return -1;
	}
	return 0;
}

/* Whether the KEK ref names can be had now: 0, or -1 and why. */
int
envelope_check_kek(struct envelope *ev, const KekRef *ref, char *err,
    size_t errlen)
{
	return envelope_kek_for(ev, ref, err, errlen) == NULL ? -1 : 0;
}

/* The KEK ref names, fetched if need be (the envelope keeps it). */
const struct kek *
envelope_get_kek(struct envelope *ev, const KekRef *ref, char *err,
    size_t errlen)
{
	return envelope_kek_for(ev, ref, err, errlen);
}

/* Unwraps the key of that id from the chain (or *wk) into kb. */
static int
envelope_unwrap(struct envelope *ev, const WrappedKey *wk,
    struct key_buf *kb, char *err, size_t errlen)
{
	struct kek	*k;

	if ((k = envelope_kek_for(ev, wk->kek, err, errlen)) == NULL)
		return -1;
	return key_unwrap(k, wk, kb, err, errlen);
}

/*
 * Starts a source-side backup once the target sent the chain's key file
 * (or none, for a new chain): every key of the chain is wrapped again
 * under the newest KEK, the chain's chunk-id key is opened (or made),
 * and a new DEK is made and added.  0, or -1 with a message.
 */
int
envelope_begin(struct envelope *ev, const char *name, const uint8_t *chain,
    size_t chainlen, char *err, size_t errlen)
{
	const WrappedKey	*ck;
	WrappedKey		*wk = NULL;
	const struct kek	**old = NULL;
	uint8_t			 id[KEY_ID_LEN];
	size_t			 i, rewrapped = 0;
	KekRef			**refs = NULL;
	size_t			 nrefs = 0;
	int			 rv = -1;

	if (chainlen > 0) {
		if ((ev->ev_chain = keychain_unpack(chain, chainlen, err,
		    errlen)) == NULL)
			return -1;
	} else if ((ev->ev_chain = keychain_new(name)) == NULL)
		goto nomem;
	if (ev->ev_newest == NULL && envelope_password_kek(ev, name, err,
	    errlen) == -1)
		goto out;

	/* Rotation: every key goes under the newest KEK. */
	if (keychain_needed_keks(ev->ev_chain, &refs, &nrefs, err,
	    errlen) == -1)
		goto out;
	if ((old = calloc(nrefs + 1, sizeof(*old))) == NULL)
		goto nomem;
	for (i = 0; i < nrefs; i++)
		if ((old[i] = envelope_kek_for(ev, refs[i], err, errlen)) ==
		    NULL)
			goto out;
	if (keychain_rewrap(ev->ev_chain, (const struct kek *const *)old,
	    nrefs, ev->ev_newest, &rewrapped, err, errlen) == -1)
		goto out;
	if (rewrapped > 0)
		log_info("key file of '%s': %zu key(s) wrapped again under the "
		    "newest key", name, rewrapped);

	/* The chain's chunk-id key, made with its first backup. */
	if ((ck = keychain_chunk_key(ev->ev_chain)) != NULL) {
		if (envelope_unwrap(ev, ck, &ev->ev_chunk_key, err,
		    errlen) == -1)
			goto out;
	} else {
		if (dek_new(&ev->ev_chunk_key, id) == -1 ||
		    key_wrap(ev->ev_newest, KEY_PURPOSE_CHUNK_ID, id,
		    &ev->ev_chunk_key, &wk, err, errlen) == -1 ||
		    keychain_add(ev->ev_chain, wk, err, errlen) == -1)
			goto out;
		key_wrapped_free(wk);
		wk = NULL;
	}

	/* This point's data key. */
	if (dek_new(&ev->ev_dek, ev->ev_dek_id) == -1 ||
	    key_wrap(ev->ev_newest, KEY_PURPOSE_DATA, ev->ev_dek_id,
	    &ev->ev_dek, &wk, err, errlen) == -1 ||
	    keychain_add(ev->ev_chain, wk, err, errlen) == -1)
		goto out;
	rv = 0;
	goto out;
 nomem:
	snprintf(err, errlen, "out of memory");
 out:
	key_wrapped_free(wk);
	keychain_refs_free(refs, nrefs);
	free(old);
	return rv;
}

/*
 * Opens the keys a source-side restore point needs: each from the
 * chain's key file if it has it (newest KEK), else the point's own
 * wrapped copy (the KEK version that wrapped it); or from an imported
 * key file.  All must open before any block is written: 0, or -1 with
 * the key ids that could not be opened.
 */
int
envelope_open(struct envelope *ev, const PointInfo *pi, const uint8_t *chain,
    size_t chainlen, char *err, size_t errlen)
{
	const WrappedKey	*wk;
	char			 why[KEY_ERR_MAX], last[KEY_ERR_MAX];
	char			 hex[2 * KEY_ID_LEN + 1];
	size_t			 i, off = 0, failed = 0;

	if (ev->ev_chain == NULL && chainlen > 0 &&
	    (ev->ev_chain = keychain_unpack(chain, chainlen, err,
	    errlen)) == NULL)
		return -1;
	if (pi->n_keys == 0) {
		snprintf(err, errlen, "restore point %s lists no keys",
		    pi->point_id);
		return -1;
	}
	if ((ev->ev_keys = calloc(pi->n_keys, sizeof(*ev->ev_keys))) == NULL ||
	    (ev->ev_key_ids = calloc(pi->n_keys, KEY_ID_LEN)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	why[0] = last[0] = '\0';
	for (i = 0; i < pi->n_keys; i++) {
		wk = pi->keys[i];
		if (wk->key_id.len != KEY_ID_LEN)
			continue;
		if (ev->ev_chain != NULL && keychain_find(ev->ev_chain,
		    wk->key_id.data) != NULL)
			wk = keychain_find(ev->ev_chain, wk->key_id.data);
		memcpy(ev->ev_key_ids + ev->ev_nkeys * KEY_ID_LEN,
		    wk->key_id.data, KEY_ID_LEN);
		if (envelope_unwrap(ev, wk, &ev->ev_keys[ev->ev_nkeys], why,
		    sizeof(why)) == -1) {
			if (ev->ev_key_file != NULL && wk == pi->keys[i])
				snprintf(why, sizeof(why), "not in the key file "
				    "%s (exported before point %s was made, or "
				    "from another backup); export the keys "
				    "again ('keys export')", ev->ev_key_file,
				    pi->point_id);
			/* One reason per run of keys that share it. */
			hex_encode(wk->key_id.data, KEY_ID_LEN, hex);
			if (failed && strcmp(why, last) == 0)
				off += snprintf(err + off, off < errlen ?
				    errlen - off : 0, ", %.16s", hex);
			else
				off += snprintf(err + off, off < errlen ?
				    errlen - off : 0, "%s%s: key %.16s",
				    failed ? "; " : "", why, hex);
			snprintf(last, sizeof(last), "%s", why);
			failed++;
			continue;
		}
		if (wk->purpose == KEY_PURPOSE_CHUNK_ID)
			ev->ev_chunk_idx = (int)ev->ev_nkeys;
		ev->ev_nkeys++;
	}
	if (failed > 0)
		return -1;
	if (ev->ev_chunk_idx < 0) {
		snprintf(err, errlen, "restore point %s lists no chunk-id key",
		    pi->point_id);
		return -1;
	}
	return 0;
}

/* The opened data key of that id, or NULL.  Thread-safe once open. */
const struct key_buf *
envelope_key(const struct envelope *ev, const uint8_t *key_id)
{
	size_t	 i;

	for (i = 0; i < ev->ev_nkeys; i++)
		if (memcmp(ev->ev_key_ids + i * KEY_ID_LEN, key_id,
		    KEY_ID_LEN) == 0)
			return &ev->ev_keys[i];
	return NULL;
}

/* The chunk-id key of a restore. */
const struct key_buf *
envelope_chunk_key(const struct envelope *ev)
{
	if (ev->ev_chunk_key.kb_key != NULL)
		return &ev->ev_chunk_key;
	if (ev->ev_chunk_idx >= 0)
		return &ev->ev_keys[ev->ev_chunk_idx];
	return NULL;
}

/*
 * What BackupEnd carries: the packed key file and the keys the point
 * may need (every key of the chain: a chunk may come from any earlier
 * point through deduplication; the target lists those its chunks
 * use).  *chain to free().
 */
int
envelope_end(struct envelope *ev, uint8_t **chain, size_t *chainlen,
    char *err, size_t errlen)
{
	return keychain_pack(ev->ev_chain, chain, chainlen, err, errlen);
}

/* Wipes and frees everything; safe on a zeroed envelope. */
void
envelope_free(struct envelope *ev)
{
	size_t	 i;

	for (i = 0; i < ev->ev_nkeks; i++) {
		kek_free(ev->ev_keks[i]);
		free(ev->ev_keks[i]);
	}
	free(ev->ev_keks);
	for (i = 0; ev->ev_keys != NULL && i < ev->ev_nkeys; i++)
		key_buf_free(&ev->ev_keys[i]);
	free(ev->ev_keys);
	free(ev->ev_key_ids);
	key_buf_free(&ev->ev_dek);
	key_buf_free(&ev->ev_chunk_key);
	keychain_free(ev->ev_chain);
	if (ev->ev_password != NULL) {
		crypto_wipe(ev->ev_password, strlen(ev->ev_password));
		free(ev->ev_password);
	}
	envelope_init(ev, ev->ev_conf);
}
