/*
 * ttlv.c: the KMIP TTLV encoding (KMIP 1.2, section 9.1).
 *
 * The encoder appends to a growable buffer and back-patches the length
 * of each structure when it is closed.  The decoder runs twice over a
 * message: a first pass checks everything and counts the items, a
 * second fills one array of exactly that many items, so nothing is
 * allocated before the whole message is known to be well formed.
 */
#include <sys/types.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "bytes.h"
#include "kmip.h"

#define TTLV_PAD(n)	(((uint64_t)(n) + 7) & ~(uint64_t)7)
#define TTLV_ENC_MIN	512

struct ttlv_parser {
	const uint8_t		*tp_base;	/* for offsets in errors */
	struct ttlv_item	*tp_items;	/* NULL while counting */
	size_t			 tp_n;
	char			*tp_err;
	size_t			 tp_errlen;
};

static int	 ttlv_reserve(struct ttlv_enc *, size_t);
static int	 ttlv_put(struct ttlv_enc *, uint32_t, uint8_t, const void *,
		    size_t);
static int	 ttlv_items(struct ttlv_parser *, const uint8_t *, size_t,
		    int, struct ttlv_item **);
static int	 ttlv_check_value(uint8_t, const uint8_t *, uint32_t,
		    const char **);
static void	 ttlv_errf(struct ttlv_parser *, const uint8_t *, uint32_t,
		    const char *);

static uint32_t
get24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

/* KMIP tags are 0x42xxxx (standard) or 0x54xxxx (extensions). */
static int
ttlv_tag_valid(uint32_t tag)
{
	return (tag >> 16) == 0x42 || (tag >> 16) == 0x54;
}

void
ttlv_enc_init(struct ttlv_enc *te)
{
	memset(te, 0, sizeof(*te));
}

/* Wipes (the buffer may hold key material) and frees; safe twice. */
void
ttlv_enc_free(struct ttlv_enc *te)
{
	if (te->te_buf != NULL) {
		OPENSSL_cleanse(te->te_buf, te->te_cap);
		free(te->te_buf);
	}
	memset(te, 0, sizeof(*te));
}

/*
 * Makes room for n more bytes.  Grows by allocate, copy, wipe, free so
 * that no copy of a key is left behind in freed memory.
 */
static int
ttlv_reserve(struct ttlv_enc *te, size_t n)
{
	uint8_t	*p;
	size_t	 cap;

	if (te->te_err)
		return -1;
	if (n > TTLV_MSG_MAX || te->te_len > TTLV_MSG_MAX - n)
		goto fail;
	if (te->te_len + n <= te->te_cap)
		return 0;
	cap = te->te_cap != 0 ? te->te_cap : TTLV_ENC_MIN;
	while (cap < te->te_len + n)
		cap *= 2;
	if ((p = malloc(cap)) == NULL)
		goto fail;
	if (te->te_len > 0)
		memcpy(p, te->te_buf, te->te_len);
	if (te->te_buf != NULL) {
		OPENSSL_cleanse(te->te_buf, te->te_cap);
		free(te->te_buf);
	}
	te->te_buf = p;
	te->te_cap = cap;
	return 0;
 fail:
	te->te_err = 1;
	return -1;
}

/* Appends one item: header, len bytes of value, zero padding. */
static int
ttlv_put(struct ttlv_enc *te, uint32_t tag, uint8_t type, const void *val,
    size_t len)
{
	uint8_t		*p;
	uint64_t	 padded;

	if (te->te_err)
		return -1;
	if (!ttlv_tag_valid(tag) || len > TTLV_MSG_MAX) {
		te->te_err = 1;
		return -1;
	}
	padded = TTLV_PAD(len);
	if (ttlv_reserve(te, TTLV_HDR_LEN + padded) == -1)
		return -1;
	p = te->te_buf + te->te_len;
	p[0] = tag >> 16;
	p[1] = tag >> 8;
	p[2] = tag;
	p[3] = type;
	put_be32(p + 4, (uint32_t)len);
	if (val != NULL && len > 0)
		memcpy(p + TTLV_HDR_LEN, val, len);
	else
		memset(p + TTLV_HDR_LEN, 0, len);	/* filled by the caller */
	memset(p + TTLV_HDR_LEN + len, 0, padded - len);
	te->te_len += TTLV_HDR_LEN + padded;
	return 0;
}

/* Opens a structure; its length is written by the matching ttlv_end(). */
int
ttlv_begin(struct ttlv_enc *te, uint32_t tag)
{
	size_t	 off;

	if (te->te_err)
		return -1;
	if (te->te_depth >= TTLV_DEPTH_MAX) {
		te->te_err = 1;
		return -1;
	}
	off = te->te_len;
	if (ttlv_put(te, tag, TTLV_STRUCTURE, NULL, 0) == -1)
		return -1;
	te->te_open[te->te_depth++] = off;
	return 0;
}

int
ttlv_end(struct ttlv_enc *te)
{
	size_t	 off;

	if (te->te_err)
		return -1;
	if (te->te_depth == 0) {
		te->te_err = 1;
		return -1;
	}
	off = te->te_open[--te->te_depth];
	put_be32(te->te_buf + off + 4,
	    (uint32_t)(te->te_len - off - TTLV_HDR_LEN));
	return 0;
}

int
ttlv_add_int(struct ttlv_enc *te, uint32_t tag, int32_t v)
{
	uint8_t	 b[4];

	put_be32(b, (uint32_t)v);
	return ttlv_put(te, tag, TTLV_INTEGER, b, sizeof(b));
}

int
ttlv_add_long(struct ttlv_enc *te, uint32_t tag, int64_t v)
{
	uint8_t	 b[8];

	put_be64(b, (uint64_t)v);
	return ttlv_put(te, tag, TTLV_LONG, b, sizeof(b));
}

/*
 * A big integer from its big-endian two's complement bytes; sign-extended
 * on the left to a multiple of 8 bytes, as the encoding requires.
 */
int
ttlv_add_bigint(struct ttlv_enc *te, uint32_t tag, const uint8_t *v,
    size_t len)
{
	uint8_t		*p;
	uint64_t	 padded;
	size_t		 ext;

	if (te->te_err)
		return -1;
	if (len == 0 || len > TTLV_MSG_MAX) {
		te->te_err = 1;
		return -1;
	}
	padded = TTLV_PAD(len);
	ext = padded - len;
	if (ttlv_put(te, tag, TTLV_BIGINT, NULL, padded) == -1)
		return -1;
	p = te->te_buf + te->te_len - padded;
	memset(p, (v[0] & 0x80) ? 0xff : 0x00, ext);
	memcpy(p + ext, v, len);
	return 0;
}

int
ttlv_add_enum(struct ttlv_enc *te, uint32_t tag, uint32_t v)
{
	uint8_t	 b[4];

	put_be32(b, v);
	return ttlv_put(te, tag, TTLV_ENUM, b, sizeof(b));
}

int
ttlv_add_bool(struct ttlv_enc *te, uint32_t tag, int v)
{
	uint8_t	 b[8];

	put_be64(b, v ? 1 : 0);
	return ttlv_put(te, tag, TTLV_BOOL, b, sizeof(b));
}

int
ttlv_add_text(struct ttlv_enc *te, uint32_t tag, const char *s)
{
	return ttlv_put(te, tag, TTLV_TEXT, s, strlen(s));
}

int
ttlv_add_bytes(struct ttlv_enc *te, uint32_t tag, const void *v, size_t len)
{
	return ttlv_put(te, tag, TTLV_BYTES, v, len);
}

int
ttlv_add_datetime(struct ttlv_enc *te, uint32_t tag, int64_t t)
{
	uint8_t	 b[8];

	put_be64(b, (uint64_t)t);
	return ttlv_put(te, tag, TTLV_DATETIME, b, sizeof(b));
}

int
ttlv_add_interval(struct ttlv_enc *te, uint32_t tag, uint32_t v)
{
	uint8_t	 b[4];

	put_be32(b, v);
	return ttlv_put(te, tag, TTLV_INTERVAL, b, sizeof(b));
}

/*
 * The encoded message and its length, or NULL if any call failed or a
 * structure is still open.  The buffer stays owned by te.
 */
const uint8_t *
ttlv_enc_finish(struct ttlv_enc *te, size_t *len)
{
	if (te->te_err || te->te_depth != 0 || te->te_len == 0)
		return NULL;
	*len = te->te_len;
	return te->te_buf;
}

static void
ttlv_errf(struct ttlv_parser *tp, const uint8_t *p, uint32_t tag,
    const char *what)
{
	if (tp->tp_err == NULL || tp->tp_errlen == 0)
		return;
	snprintf(tp->tp_err, tp->tp_errlen,
	    "TTLV item %06x at offset %zu: %s", tag,
	    (size_t)(p - tp->tp_base), what);
}

/*
 * Checks one value of type type and length len (padding included in the
 * buffer behind val).  Structures are checked by the caller.
 */
static int
ttlv_check_value(uint8_t type, const uint8_t *val, uint32_t len,
    const char **why)
{
	uint64_t	 padded = TTLV_PAD(len), i;

	switch (type) {
	case TTLV_STRUCTURE:
		if (len % 8 != 0) {
			*why = "structure length not a multiple of 8";
			return -1;
		}
		return 0;
	case TTLV_INTEGER:
	case TTLV_ENUM:
	case TTLV_INTERVAL:
		if (len != 4) {
			*why = "4-byte value of another length";
			return -1;
		}
		break;
	case TTLV_LONG:
	case TTLV_DATETIME:
		if (len != 8) {
			*why = "8-byte value of another length";
			return -1;
		}
		break;
	case TTLV_BOOL:
		if (len != 8) {
			*why = "boolean of another length than 8";
			return -1;
		}
		if (get_be64(val) > 1) {
			*why = "boolean neither 0 nor 1";
			return -1;
		}
		break;
	case TTLV_BIGINT:
		if (len == 0 || len % 8 != 0) {
			*why = "big integer length not a multiple of 8";
			return -1;
		}
		break;
	case TTLV_TEXT:
	case TTLV_BYTES:
		break;
	default:
		*why = "unknown item type";
		return -1;
	}
	for (i = len; i < padded; i++) {
		if (val[i] != 0) {
			*why = "non-zero padding";
			return -1;
		}
	}
	return 0;
}

/*
 * Parses the items that fill exactly len bytes at p, at nesting depth
 * depth.  While counting (tp_items NULL) only checks and counts; else
 * fills items in the same order and links them from *link.
 */
static int
ttlv_items(struct ttlv_parser *tp, const uint8_t *p, size_t len, int depth,
    struct ttlv_item **link)
{
	struct ttlv_item	*it;
	const char		*why = NULL;
	uint64_t		 padded;
	uint32_t		 tag, vlen;
	uint8_t			 type;

	while (len > 0) {
		if (len < TTLV_HDR_LEN) {
			ttlv_errf(tp, p, 0, "truncated item header");
			return -1;
		}
		tag = get24(p);
		type = p[3];
		vlen = get_be32(p + 4);
		if (!ttlv_tag_valid(tag)) {
			ttlv_errf(tp, p, tag, "tag outside the KMIP ranges");
			return -1;
		}
		padded = TTLV_PAD(vlen);
		if (padded > len - TTLV_HDR_LEN) {
			ttlv_errf(tp, p, tag, "length beyond the end of its "
			    "container");
			return -1;
		}
		if (ttlv_check_value(type, p + TTLV_HDR_LEN, vlen, &why) ==
		    -1) {
			ttlv_errf(tp, p, tag, why);
			return -1;
		}
		/* Every item takes 8 bytes or more: n <= TTLV_MSG_MAX / 8. */
		it = NULL;
		if (tp->tp_items != NULL && link != NULL) {
			it = &tp->tp_items[tp->tp_n];
			it->ti_tag = tag;
			it->ti_type = type;
			it->ti_len = vlen;
			it->ti_val = p + TTLV_HDR_LEN;
			it->ti_child = NULL;
			it->ti_next = NULL;
			*link = it;
			link = &it->ti_next;
		}
		tp->tp_n++;
		if (type == TTLV_STRUCTURE) {
			if (depth >= TTLV_DEPTH_MAX) {
				ttlv_errf(tp, p, tag, "structures nested "
				    "too deeply");
				return -1;
			}
			if (ttlv_items(tp, p + TTLV_HDR_LEN, vlen, depth + 1,
			    it != NULL ? &it->ti_child : NULL) == -1)
				return -1;
		}
		p += TTLV_HDR_LEN + padded;
		len -= TTLV_HDR_LEN + padded;
	}
	return 0;
}

/*
 * Parses one message of len bytes: exactly one item, of at most
 * TTLV_MSG_MAX bytes.  Returns its tree (free with ttlv_free(); it
 * points into buf) or NULL with the reason in err.
 */
struct ttlv_item *
ttlv_parse(const uint8_t *buf, size_t len, char *err, size_t errlen)
{
	struct ttlv_parser	 tp;
	struct ttlv_item	*root = NULL, *first = NULL;
	uint32_t		 vlen;

	memset(&tp, 0, sizeof(tp));
	tp.tp_base = buf;
	tp.tp_err = err;
	tp.tp_errlen = errlen;
	if (err != NULL && errlen > 0)
		err[0] = '\0';

	if (len < TTLV_HDR_LEN) {
		ttlv_errf(&tp, buf, 0, "message shorter than an item header");
		goto fail;
	}
	if (len > TTLV_MSG_MAX) {
		ttlv_errf(&tp, buf, get24(buf), "message larger than 1 MiB");
		goto fail;
	}
	vlen = get_be32(buf + 4);
	if (TTLV_PAD(vlen) != len - TTLV_HDR_LEN) {
		ttlv_errf(&tp, buf, get24(buf), "message length does not "
		    "match its header");
		goto fail;
	}
	if (ttlv_items(&tp, buf, len, 0, NULL) == -1)
		goto fail;

	/* tp_n >= 1 and tp_n <= len / 8 here. */
	if ((root = calloc(tp.tp_n, sizeof(*root))) == NULL) {
		ttlv_errf(&tp, buf, 0, "out of memory");
		goto fail;
	}
	tp.tp_items = root;
	tp.tp_n = 0;
	if (ttlv_items(&tp, buf, len, 0, &first) == -1)
		goto fail;
	return root;
 fail:
	free(root);
	return NULL;
}

/* Frees a tree from ttlv_parse(); NULL is fine. */
void
ttlv_free(struct ttlv_item *root)
{
	free(root);
}

/*
 * Checks the 8-byte header of a message about to be read: a structure
 * of tag tag (any tag when 0) whose whole length (header included) fits
 * TTLV_MSG_MAX; that length goes to *total.  Returns 0 or -1.
 */
int
ttlv_msg_len(const uint8_t hdr[TTLV_HDR_LEN], uint32_t tag, size_t *total)
{
	uint32_t	 vlen;

	if (tag != 0 && get24(hdr) != tag)
		return -1;
	if (!ttlv_tag_valid(get24(hdr)) || hdr[3] != TTLV_STRUCTURE)
		return -1;
	vlen = get_be32(hdr + 4);
	if (vlen % 8 != 0 || vlen > TTLV_MSG_MAX - TTLV_HDR_LEN)
		return -1;
	*total = TTLV_HDR_LEN + (size_t)vlen;
	return 0;
}

/* The first item tagged tag inside structure parent, or NULL. */
const struct ttlv_item *
ttlv_find(const struct ttlv_item *parent, uint32_t tag)
{
	const struct ttlv_item	*it;

	if (parent == NULL || parent->ti_type != TTLV_STRUCTURE)
		return NULL;
	for (it = parent->ti_child; it != NULL; it = it->ti_next)
		if (it->ti_tag == tag)
			return it;
	return NULL;
}

/* The next item tagged tag after prev in the same structure, or NULL. */
const struct ttlv_item *
ttlv_find_next(const struct ttlv_item *prev, uint32_t tag)
{
	const struct ttlv_item	*it;

	if (prev == NULL)
		return NULL;
	for (it = prev->ti_next; it != NULL; it = it->ti_next)
		if (it->ti_tag == tag)
			return it;
	return NULL;
}

int
ttlv_get_int(const struct ttlv_item *it, int32_t *v)
{
	if (it == NULL || it->ti_type != TTLV_INTEGER)
		return -1;
	*v = (int32_t)get_be32(it->ti_val);
	return 0;
}

int
ttlv_get_long(const struct ttlv_item *it, int64_t *v)
{
	if (it == NULL || it->ti_type != TTLV_LONG)
		return -1;
	*v = (int64_t)get_be64(it->ti_val);
	return 0;
}

int
ttlv_get_bigint(const struct ttlv_item *it, const uint8_t **v, size_t *len)
{
	if (it == NULL || it->ti_type != TTLV_BIGINT)
		return -1;
	*v = it->ti_val;
	*len = it->ti_len;
	return 0;
}

int
ttlv_get_enum(const struct ttlv_item *it, uint32_t *v)
{
	if (it == NULL || it->ti_type != TTLV_ENUM)
		return -1;
	*v = get_be32(it->ti_val);
	return 0;
}

int
ttlv_get_bool(const struct ttlv_item *it, int *v)
{
	if (it == NULL || it->ti_type != TTLV_BOOL)
		return -1;
	*v = get_be64(it->ti_val) != 0;
	return 0;
}

int
ttlv_get_text(const struct ttlv_item *it, char *s, size_t size)
{
	if (it == NULL || it->ti_type != TTLV_TEXT)
		return -1;
	if (size == 0 || it->ti_len >= size)
		return -1;
	if (memchr(it->ti_val, '\0', it->ti_len) != NULL)
		return -1;
	memcpy(s, it->ti_val, it->ti_len);
	s[it->ti_len] = '\0';
	return 0;
}

int
ttlv_get_bytes(const struct ttlv_item *it, const uint8_t **v, size_t *len)
{
	if (it == NULL || it->ti_type != TTLV_BYTES)
		return -1;
	*v = it->ti_val;
	*len = it->ti_len;
	return 0;
}

int
ttlv_get_datetime(const struct ttlv_item *it, int64_t *t)
{
	if (it == NULL || it->ti_type != TTLV_DATETIME)
		return -1;
	*t = (int64_t)get_be64(it->ti_val);
	return 0;
}

int
ttlv_get_interval(const struct ttlv_item *it, uint32_t *v)
{
	if (it == NULL || it->ti_type != TTLV_INTERVAL)
		return -1;
	*v = get_be32(it->ti_val);
	return 0;
}
