/*
 * keys.h: key management.  Locked key memory, key-encrypting keys (KEK)
 * from a KMS (KMIP) or a password (Argon2id), envelope encryption of
 * data keys (DEK), key chains and passphrase-protected key files.
 *
 * See docs/KEYS.md for the key hierarchy, the formats and the AAD.
 *
 * Conventions: int functions return 0 or -1; on -1 they write one line
 * to err (what failed, which key or KMS, what to do) and log nothing
 * themselves, except kmip.c, which logs KMS failures as it sees them.
 * Key bytes are never logged, printed or written unwrapped.  Every
 * function is thread-safe on distinct objects.
 */
#ifndef TRANSPORTER_KEYS_H
#define TRANSPORTER_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define KEY_LEN			32	/* AES-256 and HMAC-SHA256 keys */
#define KEY_KCV_LEN		8	/* key check value, bytes */
#define KEY_ERR_MAX		512	/* a good size for err buffers */

/* What a wrapped key is for (WrappedKey.purpose); bound into its AAD. */
#define KEY_PURPOSE_DATA	1	/* a restore point's DEK */
#define KEY_PURPOSE_CHUNK_ID	2	/* a chain's HMAC key for chunk ids */

/* WrappedKey.wrapped: nonce (12) | AES-256-GCM(key) (32) | tag (16). */
#define KEY_WRAPPED_LEN		60
#define KEY_WRAP_FORMAT		1	/* first byte of the wrap AAD */

/*
 * Password KEKs: Argon2id parameters of new KEKs.  The memory cost of
 * new KEKs may be lowered (tests) or raised with the environment
 * variable KEK_KDF_ENV_MEMORY, in KiB.  Reopening uses the stored
 * parameters, which must lie within the _MIN/_MAX bounds.
 */
#define KEK_KDF_T_COST		3
#define KEK_KDF_M_COST_KIB	65536	/* 64 MiB */
#define KEK_KDF_PARALLELISM	4	/* RFC 9106 4.: t 3, p 4, 64 MiB */
#define KEK_KDF_SALT_LEN	16
#define KEK_KDF_ENV_MEMORY	"TRANSPORTER_ARGON2_MEMORY_KIB"
#define KEK_KDF_T_MAX		64
#define KEK_KDF_M_MIN_KIB	8
#define KEK_KDF_M_MAX_KIB	(4u << 20)	/* 4 GiB */
#define KEK_KDF_P_MAX		16
#define KEK_KDF_SALT_MAX	64
#define KEK_VERIFIER_LEN	32
#define KEK_PASSWORD_MAX	1024	/* bytes */

/* Key chain (TRKC) and exported key file (TRKX): see keychain_pack(). */
#define KEYCHAIN_FORMAT		1
#define KEYCHAIN_MAGIC		"TRKC"
#define KEYCHAIN_EXPORT_MAGIC	"TRKX"
#define KEYCHAIN_MAX		(16u << 20)	/* whole file */
#define KEYCHAIN_KEYS_MAX	65536

/*
 * A 32-byte key in a page of its own: mlock'd (a failure is warned about
 * once per process, then ignored), excluded from core dumps, zero in a
 * forked child, wiped on free.  A zeroed struct is empty; functions that
 * fill a key_buf allocate it when empty.
 */
struct key_buf {
	uint8_t		*kb_key;	/* KEY_LEN bytes, or NULL */
	size_t		 kb_maplen;
};

/* Allocates an empty key_buf's page (zeros): 0, or -1 (errno). */
int		 key_buf_alloc(struct key_buf *);
/* Wipes, unlocks and unmaps; the key_buf is empty afterwards.  NULL ok. */
void		 key_buf_free(struct key_buf *);
/* Copies src into dst (allocated when empty): 0, or -1 (errno). */
int		 key_buf_copy(struct key_buf *, const struct key_buf *);
/*
 * The key check value: 2 * KEY_KCV_LEN hex digits and a NUL of a
 * labelled SHA-256 of the key, to compare keys without showing them.
 * 0, or -1 (logged) if the library fails.
 */
int		 key_check_value(const struct key_buf *,
		    char [2 * KEY_KCV_LEN + 1]);

/* How to reach a KMS: kmip_connect_timeout()'s arguments. */
struct kmip_settings {
	const char	*ks_host;
	const char	*ks_port;		/* NULL: 5696 */
	const char	*ks_cert;		/* client certificate (PEM) */
	const char	*ks_key;		/* its private key */
	const char	*ks_ca;			/* CA bundle for the server */
	const char	*ks_server_name;	/* NULL: ks_host */
	int		 ks_timeout_ms;		/* 0: KMIP_TIMEOUT_MS */
};

/*
 * A key-encrypting key in memory and what it is (k_ref: provider, KMS,
 * name, id, version, KDF parameters, verifier).  A zeroed struct is
 * empty; kek_free() wipes and empties it.
 */
struct kek {
	struct key_buf	 k_key;
	KekRef		*k_ref;		/* owned; free with kek_free() */
};

void		 kek_free(struct kek *);
/*
 * The newest Active key named name in the KMS (kmip_newest_active()):
 * k_ref = {KMIP, "host:port", name, its unique id, its version (Initial
 * Date)}.  kek must be empty.
 */
int		 kek_from_kmip(const struct kmip_settings *, const char *,
		    struct kek *, char *, size_t);
/*
 * The exact KMIP key a KekRef names, by its unique id, to unwrap keys
 * wrapped by an older version.  Active and Deactivated keys are usable;
 * Compromised, Destroyed, Pre-Active or missing ones are not ("key 7
 * 'acme-kek' on KMS h:p is not available: ...").  k_ref is the given
 * ref with kms set to the KMS actually asked.
 */
int		 kek_from_kmip_ref(const struct kmip_settings *,
		    const KekRef *, struct kek *, char *, size_t);
/*
 * Argon2id of password.  existing NULL: a new KEK (random salt, default
 * parameters, version = now, a verifier); else the KEK that existing
 * describes, failing at once with "wrong password for ..." and errno
 * EKEYREJECTED when the verifier does not match.
 */
int		 kek_from_password(const char *, const KekRef *, struct kek *,
		    char *, size_t);
/*
 * Reads a password file: its first line without the line end, at most
 * KEK_PASSWORD_MAX bytes.  *password is malloc'd; free it with
 * kek_password_free(), which wipes it.  0, or -1 and why.
 */
int		 kek_password_read_file(const char *, char **, char *, size_t);
void		 kek_password_free(char *);
/* Sets k_ref->key_name (a label for password KEKs; <= 127 bytes). */
int		 kek_set_name(struct kek *, const char *, char *, size_t);

/* 1 if two refs name the same key (provider, id, version, KDF), else 0. */
int		 kek_ref_same(const KekRef *, const KekRef *);
/*
 * Adds a ref to the *n distinct ones of an array with room for max
 * unless one is the same (kek_ref_same: a NULL ref never is) or the
 * array is full: 1 if it added it, else 0.  The array holds the
 * caller's pointers, no copies.
 */
int		 kek_refs_add(KekRef **, size_t *, size_t, KekRef *);
/* Version order (version, then id as kmip_key_cmp()): <0, 0, >0. */
int		 kek_ref_cmp(const KekRef *, const KekRef *);
/* "KMIP key 7 'acme-kek' version 1712345678 on KMS h:p" and the like. */
void		 kek_ref_describe(const KekRef *, char *, size_t);
/* Checks a ref read from disk or the wire: 0, or -1 and why. */
int		 kek_ref_check(const KekRef *, char *, size_t);
/* A deep copy, to free with kek_ref__free_unpacked(ref, NULL); NULL. */
KekRef		*kek_ref_dup(const KekRef *);

/* Orders raw key ids (KEY_ID_LEN bytes), for qsort() and bsearch(). */
int		 key_id_cmp(const void *, const void *);
/*
 * Adds a copy of id to a tsearch tree of key ids (free it with
 * tdestroy(set, free)): 1 if it was not there, 0 if it was, -1 ENOMEM.
 */
int		 key_id_set_add(void **, const uint8_t [KEY_ID_LEN]);

/* A new random key and a new random key id: 0, or -1 (logged). */
int		 dek_new(struct key_buf *, uint8_t [KEY_ID_LEN]);

/*
 * Wraps key under kek with AES-256-GCM (random nonce), its AAD binding
 * KEY_WRAP_FORMAT, purpose, key_id and the KEK's identity.  *out is a
 * new WrappedKey{key_id, purpose, copy of k_ref, nonce|ct|tag}, to free
 * with key_wrapped_free().
 */
int		 key_wrap(const struct kek *, uint32_t,
		    const uint8_t [KEY_ID_LEN], const struct key_buf *,
		    WrappedKey **, char *, size_t);
/*
 * Unwraps wk into key (allocated when empty): checks wk, that its
 * KekRef names kek, and the GCM tag.  On -1 key holds no key material.
 */
int		 key_unwrap(const struct kek *, const WrappedKey *,
		    struct key_buf *, char *, size_t);
/* Unwraps wk with from and wraps it again under to into *out. */
int		 key_rewrap(const struct kek *, const struct kek *,
		    const WrappedKey *, WrappedKey **, char *, size_t);
/* Checks a WrappedKey read from disk or the wire: 0, or -1 and why. */
int		 key_wrapped_check(const WrappedKey *, char *, size_t);
/* A deep copy (key_wrapped_free()), or NULL. */
WrappedKey	*key_wrapped_dup(const WrappedKey *);
void		 key_wrapped_free(WrappedKey *);
/* "data", "chunk-id" or "unknown". */
const char	*key_purpose_name(uint32_t);

/*
 * The keyed chunk id: HMAC-SHA256 of data under key (a chain's
 * KEY_PURPOSE_CHUNK_ID key).  0, or -1 (logged).
 */
int		 chunk_id_keyed(const struct key_buf *, const void *, size_t,
		    uint8_t [32]);

/*
 * A key chain: every key of a backup chain (KeyChain in the .proto), as
 * the chain metadata file holds them.  Keys are owned by the chain.
 */
struct keychain {
	char		*kc_name;
	WrappedKey	**kc_keys;
	size_t		 kc_nkeys;
	uint8_t		*kc_dropped;	/* ids prune dropped, ascending */
	size_t		 kc_ndropped;
};

/* A new empty chain named name (may be ""), or NULL. */
struct keychain	*keychain_new(const char *);
void		 keychain_free(struct keychain *);
/*
 * Adds a copy of wk.  A key whose id is already in the chain is left as
 * it is (the chain's copy may be wrapped under a newer KEK): still 0.
 */
int		 keychain_add(struct keychain *, const WrappedKey *, char *,
		    size_t);
/* The key of that id, or NULL.  Valid until the chain changes. */
const WrappedKey *keychain_find(const struct keychain *,
		    const uint8_t [KEY_ID_LEN]);
/*
 * At rest: whether prune dropped the key of that id from the chain (no
 * chunk was sealed under it); and the ids it dropped that points still
 * list (n ids, any order; copied).  0, or -1 (out of memory, too many).
 */
int		 keychain_dropped(const struct keychain *,
		    const uint8_t [KEY_ID_LEN]);
int		 keychain_set_dropped(struct keychain *, const uint8_t *,
		    size_t);
/* The chain's first KEY_PURPOSE_CHUNK_ID key, or NULL. */
const WrappedKey *keychain_chunk_key(const struct keychain *);
/*
 * Wraps every key not already under newk again under newk, unwrapping
 * each with the one of old[0..nold) its KekRef names.  All or nothing:
 * on -1 (a needed KEK missing, a key failing) the chain is unchanged.
 * *nrewrapped (may be NULL) counts the keys wrapped again.
 */
int		 keychain_rewrap(struct keychain *, const struct kek *const *,
		    size_t, const struct kek *, size_t *, char *, size_t);
/*
 * The distinct KEKs the chain's keys need, oldest first: *refs is an
 * array of *nrefs copies, to free with keychain_refs_free().
 */
int		 keychain_needed_keks(const struct keychain *, KekRef ***,
		    size_t *, char *, size_t);
void		 keychain_refs_free(KekRef **, size_t);
/*
 * The chain metadata file: "TRKC", u32 big-endian length n, n bytes of
 * protobuf KeyChain, SHA-256 of everything before it.  *out to free().
 */
int		 keychain_pack(const struct keychain *, uint8_t **, size_t *,
		    char *, size_t);
/* Parses and checks a TRKC file; the chain, or NULL and why. */
struct keychain	*keychain_unpack(const uint8_t *, size_t, char *, size_t);
/*
 * An exported key file ("TRKX", same framing): every key wrapped again
 * under a KEK derived from passphrase (Argon2id, fresh salt), each
 * unwrapped with the one of keks[0..nkeks) its KekRef names.
 */
int		 keychain_export(const struct keychain *,
		    const struct kek *const *, size_t, const char *,
		    uint8_t **, size_t *, char *, size_t);
/*
 * Reads an exported key file: checks the passphrase (a wrong one fails
 * at once) and that every key unwraps; *chainp and kek (empty) get the
 * chain and the passphrase KEK that unwraps its keys.
 */
int		 keychain_import(const uint8_t *, size_t, const char *,
		    struct keychain **, struct kek *, char *, size_t);
/*
 * Password change: the chain's keys, all under one password KEK, are
 * wrapped again under a KEK derived from the new password.  The old
 * password is checked first.  newk (empty, may be NULL) gets the new KEK.
 */
int		 keychain_change_password(struct keychain *, const char *,
		    const char *, struct kek *, char *, size_t);
/*
 * Files: read at most KEYCHAIN_MAX bytes (checked before allocating;
 * *buf to free()); write durably (temporary file, fsync, rename, fsync
 * of the directory), mode 0600, with the owner of the file it replaces.
 */
int		 keychain_read_file(const char *, uint8_t **, size_t *, char *,
		    size_t);
int		 keychain_write_file(const char *, const uint8_t *, size_t,
		    char *, size_t);

#endif /* TRANSPORTER_KEYS_H */
