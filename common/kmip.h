/*
 * kmip.h: a KMIP 1.2 client for key-encrypting keys, and the TTLV
 * codec under it.  No KMIP library: OpenSSL 3 for TLS, the rest here.
 *
 * See docs/KMIP.md for what is implemented and what PyKMIP supports.
 */
#ifndef TRANSPORTER_KMIP_H
#define TRANSPORTER_KMIP_H

#include <stddef.h>
#include <stdint.h>

/*
 * ttlv.c: Tag (3 bytes) Type (1) Length (4, big-endian) Value, the
 * value padded with zeros to a multiple of 8 bytes (KMIP 1.2, 9.1).
 */
#define TTLV_HDR_LEN		8
#define TTLV_MSG_MAX		(1u << 20)	/* cap on any whole message */
#define TTLV_DEPTH_MAX		16		/* structures inside structures */

#define TTLV_STRUCTURE		0x01
#define TTLV_INTEGER		0x02
#define TTLV_LONG		0x03
#define TTLV_BIGINT		0x04
#define TTLV_ENUM		0x05
#define TTLV_BOOL		0x06
#define TTLV_TEXT		0x07
#define TTLV_BYTES		0x08
#define TTLV_DATETIME		0x09
#define TTLV_INTERVAL		0x0a

/*
 * Encoder: appends items to a buffer that grows (by copy and wipe, never
 * realloc, since it may hold keys) up to TTLV_MSG_MAX.  Errors are
 * sticky: after the first failure every call returns -1 and
 * ttlv_enc_finish() returns NULL, so a caller may check only at the end.
 * Initialise with ttlv_enc_init(); ttlv_enc_free() wipes and frees.
 */
struct ttlv_enc {
	uint8_t		*te_buf;
	size_t		 te_len;
	size_t		 te_cap;
	size_t		 te_open[TTLV_DEPTH_MAX];	/* open structures */
	int		 te_depth;
	int		 te_err;
};

void		 ttlv_enc_init(struct ttlv_enc *);
void		 ttlv_enc_free(struct ttlv_enc *);
int		 ttlv_begin(struct ttlv_enc *, uint32_t);
int		 ttlv_end(struct ttlv_enc *);
int		 ttlv_add_int(struct ttlv_enc *, uint32_t, int32_t);
int		 ttlv_add_long(struct ttlv_enc *, uint32_t, int64_t);
int		 ttlv_add_bigint(struct ttlv_enc *, uint32_t, const uint8_t *,
		    size_t);
int		 ttlv_add_enum(struct ttlv_enc *, uint32_t, uint32_t);
int		 ttlv_add_bool(struct ttlv_enc *, uint32_t, int);
int		 ttlv_add_text(struct ttlv_enc *, uint32_t, const char *);
int		 ttlv_add_bytes(struct ttlv_enc *, uint32_t, const void *,
		    size_t);
int		 ttlv_add_datetime(struct ttlv_enc *, uint32_t, int64_t);
int		 ttlv_add_interval(struct ttlv_enc *, uint32_t, uint32_t);
const uint8_t	*ttlv_enc_finish(struct ttlv_enc *, size_t *);

/*
 * Decoder: ttlv_parse() checks a whole message (exactly one top-level
 * item filling the buffer, every length against what remains, padding
 * zero, fixed-size types of their size, booleans 0 or 1, nesting at most
 * TTLV_DEPTH_MAX, at most TTLV_MSG_MAX bytes) before it allocates, then
 * returns a tree of items that point into the caller's buffer: keep the
 * buffer until ttlv_free().  On error it returns NULL and writes a
 * one-line reason to err.
 */
struct ttlv_item {
	uint32_t		 ti_tag;
	uint8_t			 ti_type;
	uint32_t		 ti_len;	/* value length, without padding */
	const uint8_t		*ti_val;	/* into the parsed buffer */
	struct ttlv_item	*ti_child;	/* first item of a structure */
	struct ttlv_item	*ti_next;	/* next item of the same parent */
};

struct ttlv_item	*ttlv_parse(const uint8_t *, size_t, char *, size_t);
void		 ttlv_free(struct ttlv_item *);
int		 ttlv_msg_len(const uint8_t [TTLV_HDR_LEN], uint32_t,
		    size_t *);

/*
 * Look-ups.  All accept NULL and then fail, so calls chain:
 * ttlv_get_enum(ttlv_find(payload, TAG), &v) is -1 if the item is
 * absent or not an enumeration.  ttlv_get_text() copies a NUL-terminated
 * string and fails if it does not fit or holds a NUL byte.
 * ttlv_get_bytes() and ttlv_get_bigint() point into the parsed buffer.
 */
const struct ttlv_item	*ttlv_find(const struct ttlv_item *, uint32_t);
const struct ttlv_item	*ttlv_find_next(const struct ttlv_item *, uint32_t);
int		 ttlv_get_int(const struct ttlv_item *, int32_t *);
int		 ttlv_get_long(const struct ttlv_item *, int64_t *);
int		 ttlv_get_bigint(const struct ttlv_item *, const uint8_t **,
		    size_t *);
int		 ttlv_get_enum(const struct ttlv_item *, uint32_t *);
int		 ttlv_get_bool(const struct ttlv_item *, int *);
int		 ttlv_get_text(const struct ttlv_item *, char *, size_t);
int		 ttlv_get_bytes(const struct ttlv_item *, const uint8_t **,
		    size_t *);
int		 ttlv_get_datetime(const struct ttlv_item *, int64_t *);
int		 ttlv_get_interval(const struct ttlv_item *, uint32_t *);

/*
 * kmip.c: one blocking TLS 1.2+ connection to a KMS, mutual certificate
 * authentication, one request in flight.  Not thread-safe: one
 * connection per thread.  Every operation gets the whole timeout for
 * its request and response.  Writes to a closed peer raise SIGPIPE:
 * callers ignore SIGPIPE, as both daemons do.
 *
 * Errors: every function that fails logs one line with log_warnx()
 * ("KMS host:port: Locate 'acme-kek' failed: Item Not Found: ...") and
 * keeps it for kmip_error(); callers need not log it again.  Keys are
 * never logged; every buffer that held one is wiped.
 */
#define KMIP_KEY_LEN		32	/* AES-256 */
#define KMIP_UID_MAX		128	/* unique identifier, with its NUL */
#define KMIP_NAME_MAX		128	/* key name, with its NUL */
#define KMIP_LOCATE_MAX		1024	/* identifiers kept from a Locate */
#define KMIP_TIMEOUT_MS		10000

/* Object states (KMIP 1.2, 9.1.3.2.17). */
#define KMIP_STATE_PRE_ACTIVE	1
#define KMIP_STATE_ACTIVE	2
#define KMIP_STATE_DEACTIVATED	3
#define KMIP_STATE_COMPROMISED	4
#define KMIP_STATE_DESTROYED	5
#define KMIP_STATE_DESTROYED_COMPROMISED 6

/* Revocation reason codes (9.1.3.2.19). */
#define KMIP_REVOKE_UNSPECIFIED	1
#define KMIP_REVOKE_COMPROMISE	2	/* any state -> Compromised */
#define KMIP_REVOKE_SUPERSEDED	5	/* Active -> Deactivated */
#define KMIP_REVOKE_CESSATION	6	/* Active -> Deactivated */

struct kmip_conn;

/* What Get Attributes told about a key; a date is 0 when not reported. */
struct kmip_key_info {
	char		 ki_uid[KMIP_UID_MAX];
	uint32_t	 ki_state;		/* KMIP_STATE_*, 0 unknown */
	int64_t		 ki_initial_date;	/* seconds since the epoch */
	int64_t		 ki_activation_date;
};

/*
 * Connects to host:port (a name or an address), loads the client
 * certificate chain and key (PEM) and the CA bundle, and completes a
 * TLS 1.2+ handshake that verifies the server's chain against ca and
 * its name or IP address against server_name (host when NULL).
 * kmip_connect() waits KMIP_TIMEOUT_MS at most, kmip_connect_timeout()
 * timeout_ms (which also bounds every later operation; name resolution
 * is not bounded).  port is a number or service name, as for
 * getaddrinfo().  Returns the connection, to be closed with
 * kmip_close(), or NULL after logging why.
 */
struct kmip_conn	*kmip_connect(const char *, const char *, const char *,
		    const char *, const char *, const char *);
struct kmip_conn	*kmip_connect_timeout(const char *, const char *,
		    const char *, const char *, const char *, const char *,
		    int);
/* Shuts the connection down and frees it; NULL is fine. */
void		 kmip_close(struct kmip_conn *);
/* The last error of this connection, "" if none; valid until the next call. */
const char	*kmip_error(const struct kmip_conn *);

/*
 * Operations: 0 on success, -1 on any failure (network, TLS, malformed
 * response, or the server's Operation Failed with its reason).
 *
 * kmip_create: a new AES-256 symmetric key named name, usage
 *   encrypt|decrypt, Pre-Active; its identifier goes to uid.
 * kmip_locate: the identifiers of every symmetric key named name that
 *   this client may see, in the server's order; *uids is an array of
 *   *nuids strings (possibly 0) to free with kmip_uids_free().
 * kmip_get_attributes: state and dates of one key.
 * kmip_get: the raw 32-byte AES key into key (wiped on failure); fails
 *   unless the object is a symmetric AES key of exactly 32 bytes.
 * kmip_activate / kmip_revoke / kmip_destroy: state changes.
 */
int		 kmip_create(struct kmip_conn *, const char *,
		    char [KMIP_UID_MAX]);
int		 kmip_locate(struct kmip_conn *, const char *, char ***,
		    size_t *);
void		 kmip_uids_free(char **, size_t);
int		 kmip_get_attributes(struct kmip_conn *, const char *,
		    struct kmip_key_info *);
int		 kmip_get(struct kmip_conn *, const char *,
		    uint8_t [KMIP_KEY_LEN]);
int		 kmip_activate(struct kmip_conn *, const char *);
int		 kmip_revoke(struct kmip_conn *, const char *, uint32_t);
int		 kmip_destroy(struct kmip_conn *, const char *);

/*
 * kmip_versions: every key named name with its attributes, sorted oldest
 * first by kmip_key_cmp(); *keys to free(), *nkeys may be 0.
 * kmip_key_cmp: the version order.  Initial Date (set by the server at
 * creation, never changed), then Activation Date, then the identifier:
 * numerically when both are decimal digits (PyKMIP counts up), else
 * byte-wise, so every client picks the same key.  qsort-compatible.
 * kmip_newest_active: Locate name, Get Attributes of each, choose the
 * last Active key in that order and Get it: its identifier to uid, the
 * key to key, its Initial Date to *version when version is not NULL.
 * Fails, naming the key, if no version is Active.
 */
int		 kmip_versions(struct kmip_conn *, const char *,
		    struct kmip_key_info **, size_t *);
int		 kmip_key_cmp(const void *, const void *);
int		 kmip_newest_active(struct kmip_conn *, const char *,
		    char [KMIP_UID_MAX], uint8_t [KMIP_KEY_LEN], int64_t *);
const char	*kmip_state_name(uint32_t);

#endif /* TRANSPORTER_KMIP_H */
