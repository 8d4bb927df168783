/*
 * test_ttlv.c: the TTLV codec against the encoding examples of the KMIP
 * 1.2 specification (section 9.1.2), and hostile input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kmip.h"

#define TAG	0x420020	/* the tag of the specification's examples */

/* KMIP 1.2, 9.1.2: each example, byte for byte. */
static const uint8_t ex_int[] = {
	0x42, 0x00, 0x20, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t ex_long[] = {
	0x42, 0x00, 0x20, 0x03, 0x00, 0x00, 0x00, 0x08,
	0x01, 0xb6, 0x9b, 0x4b, 0xa5, 0x74, 0x92, 0x00,
};
static const uint8_t ex_bigint[] = {
	0x42, 0x00, 0x20, 0x04, 0x00, 0x00, 0x00, 0x10,
	0x00, 0x00, 0x00, 0x00, 0x03, 0xfd, 0x35, 0xeb,
	0x6b, 0xc2, 0xdf, 0x46, 0x18, 0x08, 0x00, 0x00,
};
static const uint8_t ex_enum[] = {
	0x42, 0x00, 0x20, 0x05, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t ex_bool[] = {
	0x42, 0x00, 0x20, 0x06, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
};
static const uint8_t ex_text[] = {
	0x42, 0x00, 0x20, 0x07, 0x00, 0x00, 0x00, 0x0b,
	0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x57, 0x6f,
	0x72, 0x6c, 0x64, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t ex_bytes[] = {
	0x42, 0x00, 0x20, 0x08, 0x00, 0x00, 0x00, 0x03,
	0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t ex_datetime[] = {	/* Fri Mar 14 11:56:40 2008 UTC */
	0x42, 0x00, 0x20, 0x09, 0x00, 0x00, 0x00, 0x08,
	0x00, 0x00, 0x00, 0x00, 0x47, 0xda, 0x67, 0xf8,
};
static const uint8_t ex_interval[] = {	/* 10 days */
	0x42, 0x00, 0x20, 0x0a, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x0d, 0x2f, 0x00, 0x00, 0x00, 0x00, 0x00,
};
static const uint8_t ex_struct[] = {
	0x42, 0x00, 0x20, 0x01, 0x00, 0x00, 0x00, 0x20,
	0x42, 0x00, 0x04, 0x05, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0xfe, 0x00, 0x00, 0x00, 0x00,
	0x42, 0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x04,
	0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00,
};

/* The big integer 1234567890000000000000000000, minimal two's complement. */
static const uint8_t bigint_val[] = {
	0x03, 0xfd, 0x35, 0xeb, 0x6b, 0xc2, 0xdf, 0x46, 0x18, 0x08, 0x00, 0x00,
};

static void
assert_encoding(struct ttlv_enc *te, const uint8_t *want, size_t wantlen)
{
	const uint8_t	*got;
	size_t		 len = 0;

	got = ttlv_enc_finish(te, &len);
	assert_non_null(got);
	assert_int_equal(len, wantlen);
	assert_memory_equal(got, want, wantlen);
	ttlv_enc_free(te);
}

static struct ttlv_item *
parse_ok(const uint8_t *buf, size_t len)
{
	struct ttlv_item	*root;
	char			 err[128];

	root = ttlv_parse(buf, len, err, sizeof(err));
	if (root == NULL)
		fail_msg("parse failed: %s", err);
	assert_int_equal(root->ti_tag, TAG);
	return root;
}

static void
parse_bad(const uint8_t *buf, size_t len, const char *why)
{
	struct ttlv_item	*root;
	char			 err[128];

	err[0] = '\0';
	root = ttlv_parse(buf, len, err, sizeof(err));
	if (root != NULL) {
		ttlv_free(root);
		fail_msg("accepted: %s", why);
	}
	assert_true(err[0] != '\0');
}

static void
test_encode_examples(void **state)
{
	struct ttlv_enc	 te;

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_int(&te, TAG, 8), 0);
	assert_encoding(&te, ex_int, sizeof(ex_int));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_long(&te, TAG, 123456789000000000LL), 0);
	assert_encoding(&te, ex_long, sizeof(ex_long));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_bigint(&te, TAG, bigint_val,
	    sizeof(bigint_val)), 0);
	assert_encoding(&te, ex_bigint, sizeof(ex_bigint));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_enum(&te, TAG, 255), 0);
	assert_encoding(&te, ex_enum, sizeof(ex_enum));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_bool(&te, TAG, 1), 0);
	assert_encoding(&te, ex_bool, sizeof(ex_bool));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_text(&te, TAG, "Hello World"), 0);
	assert_encoding(&te, ex_text, sizeof(ex_text));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_bytes(&te, TAG, "\x01\x02\x03", 3), 0);
	assert_encoding(&te, ex_bytes, sizeof(ex_bytes));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_datetime(&te, TAG, 0x47da67f8), 0);
	assert_encoding(&te, ex_datetime, sizeof(ex_datetime));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_interval(&te, TAG, 864000), 0);
	assert_encoding(&te, ex_interval, sizeof(ex_interval));

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_begin(&te, TAG), 0);
	assert_int_equal(ttlv_add_enum(&te, 0x420004, 254), 0);
	assert_int_equal(ttlv_add_int(&te, 0x420005, 255), 0);
	assert_int_equal(ttlv_end(&te), 0);
	assert_encoding(&te, ex_struct, sizeof(ex_struct));
}

static void
test_decode_examples(void **state)
{
	struct ttlv_item	*r;
	const uint8_t		*p;
	char			 s[16];
	size_t			 len;
	int64_t			 l;
	uint32_t		 u;
	int32_t			 i;
	int			 b;

	r = parse_ok(ex_int, sizeof(ex_int));
	assert_int_equal(ttlv_get_int(r, &i), 0);
	assert_int_equal(i, 8);
	assert_int_equal(ttlv_get_enum(r, &u), -1);	/* wrong type */
	ttlv_free(r);

	r = parse_ok(ex_long, sizeof(ex_long));
	assert_int_equal(ttlv_get_long(r, &l), 0);
	assert_true(l == 123456789000000000LL);
	ttlv_free(r);

	r = parse_ok(ex_bigint, sizeof(ex_bigint));
	assert_int_equal(ttlv_get_bigint(r, &p, &len), 0);
	assert_int_equal(len, 16);
	assert_memory_equal(p + 4, bigint_val, sizeof(bigint_val));
	ttlv_free(r);

	r = parse_ok(ex_enum, sizeof(ex_enum));
	assert_int_equal(ttlv_get_enum(r, &u), 0);
	assert_int_equal(u, 255);
	ttlv_free(r);

	r = parse_ok(ex_bool, sizeof(ex_bool));
	assert_int_equal(ttlv_get_bool(r, &b), 0);
	assert_int_equal(b, 1);
	ttlv_free(r);

	r = parse_ok(ex_text, sizeof(ex_text));
	assert_int_equal(ttlv_get_text(r, s, sizeof(s)), 0);
	assert_string_equal(s, "Hello World");
	assert_int_equal(ttlv_get_text(r, s, 11), -1);	/* no room for NUL */
	ttlv_free(r);

	r = parse_ok(ex_bytes, sizeof(ex_bytes));
	assert_int_equal(ttlv_get_bytes(r, &p, &len), 0);
	assert_int_equal(len, 3);
	assert_memory_equal(p, "\x01\x02\x03", 3);
	ttlv_free(r);

	r = parse_ok(ex_datetime, sizeof(ex_datetime));
	assert_int_equal(ttlv_get_datetime(r, &l), 0);
	assert_true(l == 0x47da67f8);
	ttlv_free(r);

	r = parse_ok(ex_interval, sizeof(ex_interval));
	assert_int_equal(ttlv_get_interval(r, &u), 0);
	assert_int_equal(u, 864000);
	ttlv_free(r);

	r = parse_ok(ex_struct, sizeof(ex_struct));
	assert_int_equal(r->ti_type, TTLV_STRUCTURE);
	assert_int_equal(ttlv_get_enum(ttlv_find(r, 0x420004), &u), 0);
	assert_int_equal(u, 254);
	assert_int_equal(ttlv_get_int(ttlv_find(r, 0x420005), &i), 0);
	assert_int_equal(i, 255);
	assert_null(ttlv_find(r, 0x420006));
	assert_int_equal(ttlv_get_int(ttlv_find(r, 0x420006), &i), -1);
	ttlv_free(r);
}

static void
test_bigint_sign_extension(void **state)
{
	struct ttlv_enc		 te;
	static const uint8_t	 neg[] = { 0x80, 0x01 };
	static const uint8_t	 want[] = {
		0x42, 0x00, 0x20, 0x04, 0x00, 0x00, 0x00, 0x08,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80, 0x01,
	};

	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_bigint(&te, TAG, neg, sizeof(neg)), 0);
	assert_encoding(&te, want, sizeof(want));
}

/* A request as kmip.c builds them: nested, repeated tags, text. */
static void
test_roundtrip_nested(void **state)
{
	struct ttlv_enc		 te;
	struct ttlv_item	*r;
	const struct ttlv_item	*a, *b;
	const uint8_t		*buf;
	char			 s[32];
	size_t			 len;
	int32_t			 i;

	ttlv_enc_init(&te);
	ttlv_begin(&te, TAG);
	ttlv_begin(&te, 0x420077);
	ttlv_add_int(&te, 0x42000d, 1);
	ttlv_end(&te);
	ttlv_add_text(&te, 0x420094, "1");
	ttlv_add_text(&te, 0x420094, "22");
	ttlv_add_text(&te, 0x420094, "");
	ttlv_add_bytes(&te, 0x420043, NULL, 0);
	ttlv_end(&te);
	buf = ttlv_enc_finish(&te, &len);
	assert_non_null(buf);
	assert_int_equal(len % 8, 0);

	r = parse_ok(buf, len);
	assert_int_equal(ttlv_get_int(ttlv_find(ttlv_find(r, 0x420077),
	    0x42000d), &i), 0);
	assert_int_equal(i, 1);
	a = ttlv_find(r, 0x420094);
	assert_int_equal(ttlv_get_text(a, s, sizeof(s)), 0);
	assert_string_equal(s, "1");
	b = ttlv_find_next(a, 0x420094);
	assert_int_equal(ttlv_get_text(b, s, sizeof(s)), 0);
	assert_string_equal(s, "22");
	b = ttlv_find_next(b, 0x420094);
	assert_int_equal(ttlv_get_text(b, s, sizeof(s)), 0);
	assert_string_equal(s, "");
	assert_null(ttlv_find_next(b, 0x420094));
	assert_null(ttlv_find(a, 0x420094));	/* not a structure */
	ttlv_free(r);
	ttlv_enc_free(&te);
	ttlv_enc_free(&te);			/* safe twice */
}

static void
test_encoder_errors(void **state)
{
	struct ttlv_enc	 te;
	uint8_t		*big;
	size_t		 len;
	int		 d;

	/* An open structure is not a message. */
	ttlv_enc_init(&te);
	ttlv_begin(&te, TAG);
	assert_null(ttlv_enc_finish(&te, &len));
	ttlv_enc_free(&te);

	/* An end without a begin is sticky. */
	ttlv_enc_init(&te);
	assert_int_equal(ttlv_end(&te), -1);
	assert_int_equal(ttlv_add_int(&te, TAG, 1), -1);
	assert_null(ttlv_enc_finish(&te, &len));
	ttlv_enc_free(&te);

	/* Nesting beyond TTLV_DEPTH_MAX. */
	ttlv_enc_init(&te);
	for (d = 0; d < TTLV_DEPTH_MAX; d++)
		assert_int_equal(ttlv_begin(&te, TAG), 0);
	assert_int_equal(ttlv_begin(&te, TAG), -1);
	ttlv_enc_free(&te);

	/* Tags outside the KMIP ranges. */
	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_int(&te, 0x010203, 1), -1);
	ttlv_enc_free(&te);

	/* A message over TTLV_MSG_MAX. */
	big = calloc(1, TTLV_MSG_MAX);
	assert_non_null(big);
	ttlv_enc_init(&te);
	assert_int_equal(ttlv_add_bytes(&te, TAG, big, TTLV_MSG_MAX - 16), 0);
	assert_int_equal(ttlv_add_bytes(&te, TAG, big, 16), -1);
	assert_null(ttlv_enc_finish(&te, &len));
	ttlv_enc_free(&te);
	free(big);
}

static void
test_hostile_lengths(void **state)
{
	uint8_t	 m[64];

	/* Truncated header. */
	parse_bad(ex_int, 0, "empty");
	parse_bad(ex_int, 5, "5-byte header");
	parse_bad(ex_int, 8, "header only");

	/* The value runs past the buffer. */
	memcpy(m, ex_text, sizeof(ex_text));
	m[7] = 0x40;
	parse_bad(m, sizeof(ex_text), "text length past the end");
	m[4] = 0xff; m[5] = 0xff; m[6] = 0xff; m[7] = 0xff;
	parse_bad(m, sizeof(ex_text), "length 0xffffffff");

	/* Trailing bytes after the one top-level item. */
	memcpy(m, ex_int, sizeof(ex_int));
	memset(m + sizeof(ex_int), 0, 8);
	parse_bad(m, sizeof(ex_int) + 8, "trailing bytes");

	/* The buffer ends inside the structure. */
	parse_bad(ex_struct, 24, "buffer cut inside the structure");

	/* A child longer than its structure. */
	memcpy(m, ex_struct, sizeof(ex_struct));
	m[8 + 7] = 0x30;		/* first child claims 48 bytes */
	parse_bad(m, sizeof(ex_struct), "child past its structure");
	memcpy(m, ex_struct, sizeof(ex_struct));
	m[8 + 16 + 7] = 0x10;		/* last child claims 16 bytes */
	parse_bad(m, sizeof(ex_struct), "last child past its structure");

	/* A structure that ends inside an item header. */
	memcpy(m, ex_struct, 8);
	m[7] = 0x18;
	memcpy(m + 8, "\x42\x00\x21\x01\x00\x00\x00\x0c", 8);
	memcpy(m + 16, ex_int, sizeof(ex_int));
	parse_bad(m, 32, "inner structure of 12 bytes");
	memcpy(m, ex_struct, sizeof(ex_struct));
	m[7] = 0x18;
	parse_bad(m, 8 + 0x18, "structure ending with a bare header");

	/* Messages larger than the cap. */
	parse_bad(ex_struct, (size_t)TTLV_MSG_MAX + 8, "over 1 MiB");
}

static void
test_hostile_values(void **state)
{
	uint8_t	 m[64];

	memcpy(m, ex_text, sizeof(ex_text));
	m[sizeof(ex_text) - 1] = 0x01;
	parse_bad(m, sizeof(ex_text), "non-zero padding of text");

	memcpy(m, ex_int, sizeof(ex_int));
	m[15] = 0x01;
	parse_bad(m, sizeof(ex_int), "non-zero padding of integer");

	memcpy(m, ex_int, sizeof(ex_int));
	m[7] = 0x08;
	parse_bad(m, sizeof(ex_int), "integer of 8 bytes");

	memcpy(m, ex_long, sizeof(ex_long));
	m[7] = 0x04;
	parse_bad(m, sizeof(ex_long), "long integer of 4 bytes");

	memcpy(m, ex_bool, sizeof(ex_bool));
	m[15] = 0x02;
	parse_bad(m, sizeof(ex_bool), "boolean 2");

	memcpy(m, ex_bigint, sizeof(ex_bigint));
	m[7] = 0x0c;
	parse_bad(m, sizeof(ex_bigint), "big integer of 12 bytes");

	memcpy(m, ex_int, sizeof(ex_int));
	m[3] = 0x0b;
	parse_bad(m, sizeof(ex_int), "unknown type 0x0b");
	m[3] = 0x00;
	parse_bad(m, sizeof(ex_int), "type 0");

	memcpy(m, ex_int, sizeof(ex_int));
	m[0] = 0x43;
	parse_bad(m, sizeof(ex_int), "tag outside the KMIP ranges");

	memcpy(m, ex_struct, sizeof(ex_struct));
	m[8 + 3] = 0x08;		/* byte string of length 4: fine */
	m[8 + 8 + 3] = 0x00;		/* "\0\0\0\xfe" */
	{
		struct ttlv_item	*r;
		char			 s[8];

		r = parse_ok(m, sizeof(ex_struct));
		assert_int_equal(ttlv_get_text(ttlv_find(r, 0x420004), s,
		    sizeof(s)), -1);		/* not text */
		ttlv_free(r);
	}

	/* Text holding a NUL byte is refused by ttlv_get_text(). */
	memcpy(m, ex_text, sizeof(ex_text));
	m[8 + 5] = 0x00;
	{
		struct ttlv_item	*r;
		char			 s[16];

		r = parse_ok(m, sizeof(ex_text));
		assert_int_equal(ttlv_get_text(r, s, sizeof(s)), -1);
		ttlv_free(r);
	}
}

/* depth structures, each the only child of the one before. */
static uint8_t *
nested(int depth, size_t *lenp)
{
	uint8_t	*m;
	size_t	 len = (size_t)depth * 8;
	int	 d;

	m = calloc(1, len);
	assert_non_null(m);
	for (d = 0; d < depth; d++) {
		uint8_t	*p = m + (size_t)d * 8;
		size_t	 inner = len - (size_t)(d + 1) * 8;

		p[0] = 0x42;
		p[1] = 0x00;
		p[2] = 0x20;
		p[3] = TTLV_STRUCTURE;
		p[4] = inner >> 24;
		p[5] = inner >> 16;
		p[6] = inner >> 8;
		p[7] = inner;
	}
	*lenp = len;
	return m;
}

static void
test_hostile_nesting(void **state)
{
	struct ttlv_item	*r;
	uint8_t			*m;
	size_t			 len;

	m = nested(TTLV_DEPTH_MAX, &len);
	r = parse_ok(m, len);
	ttlv_free(r);
	free(m);

	m = nested(TTLV_DEPTH_MAX + 1, &len);
	parse_bad(m, len, "nesting one too deep");
	free(m);

	m = nested(10000, &len);
	parse_bad(m, len, "absurd nesting");
	free(m);
}

/*
 * Every prefix, and every single-byte change, of a valid message is
 * either refused or parsed; under ASan nothing may be read out of
 * bounds (each copy is allocated to its exact size).
 */
static void
test_mutations(void **state)
{
	struct ttlv_enc		 te;
	struct ttlv_item	*r;
	const uint8_t		*msg;
	uint8_t			*m;
	static const uint8_t	 vals[] = { 0x00, 0x01, 0x07, 0x08, 0x0b,
				    0x42, 0x7f, 0x80, 0xff };
	char			 err[128];
	size_t			 len, i, k;

	ttlv_enc_init(&te);
	ttlv_begin(&te, TAG);
	ttlv_add_int(&te, 0x420001, 7);
	ttlv_begin(&te, 0x420002);
	ttlv_add_text(&te, 0x420003, "abc");
	ttlv_add_bytes(&te, 0x420004, "0123456789", 10);
	ttlv_add_bool(&te, 0x420005, 0);
	ttlv_end(&te);
	ttlv_add_long(&te, 0x420006, -1);
	ttlv_add_bigint(&te, 0x420007, (const uint8_t *)"\x01", 1);
	ttlv_end(&te);
	msg = ttlv_enc_finish(&te, &len);
	assert_non_null(msg);

	for (i = 0; i < len; i++) {
		m = malloc(i + 1);
		assert_non_null(m);
		memcpy(m, msg, i);
		assert_null(ttlv_parse(m, i, err, sizeof(err)));
		free(m);
	}
	for (i = 0; i < len; i++) {
		for (k = 0; k < sizeof(vals); k++) {
			m = malloc(len);
			assert_non_null(m);
			memcpy(m, msg, len);
			m[i] = vals[k];
			r = ttlv_parse(m, len, err, sizeof(err));
			ttlv_free(r);
			free(m);
		}
	}
	ttlv_enc_free(&te);
}

static void
test_msg_len(void **state)
{
	uint8_t	 h[8] = { 0x42, 0x00, 0x7b, 0x01, 0x00, 0x00, 0x01, 0x00 };
	size_t	 total = 0;

	assert_int_equal(ttlv_msg_len(h, 0x42007b, &total), 0);
	assert_int_equal(total, 8 + 256);
	assert_int_equal(ttlv_msg_len(h, 0x420078, &total), -1);
	h[3] = TTLV_TEXT;
	assert_int_equal(ttlv_msg_len(h, 0, &total), -1);
	h[3] = TTLV_STRUCTURE;
	h[7] = 0x04;				/* not a multiple of 8 */
	assert_int_equal(ttlv_msg_len(h, 0, &total), -1);
	h[4] = 0x00; h[5] = 0x10; h[6] = 0x00; h[7] = 0x00;	/* 1 MiB */
	assert_int_equal(ttlv_msg_len(h, 0, &total), -1);
	h[5] = 0x0f; h[6] = 0xff; h[7] = 0xf8;	/* 1 MiB with header */
	assert_int_equal(ttlv_msg_len(h, 0, &total), 0);
	assert_int_equal(total, TTLV_MSG_MAX);
	h[4] = 0xff;
	assert_int_equal(ttlv_msg_len(h, 0, &total), -1);
}

/* The version order of kmip_newest_active(). */
static void
test_key_order(void **state)
{
	struct kmip_key_info	 k[6];
	size_t			 i;

	memset(k, 0, sizeof(k));
	strcpy(k[0].ki_uid, "10");
	k[0].ki_initial_date = 100;
	strcpy(k[1].ki_uid, "9");
	k[1].ki_initial_date = 100;
	strcpy(k[2].ki_uid, "2");
	k[2].ki_initial_date = 200;
	strcpy(k[3].ki_uid, "1");
	k[3].ki_initial_date = 200;
	k[3].ki_activation_date = 300;
	strcpy(k[4].ki_uid, "b-uuid");
	k[4].ki_initial_date = 50;
	strcpy(k[5].ki_uid, "a-uuid");
	k[5].ki_initial_date = 50;

	qsort(k, 6, sizeof(k[0]), kmip_key_cmp);
	assert_string_equal(k[0].ki_uid, "a-uuid");
	assert_string_equal(k[1].ki_uid, "b-uuid");
	assert_string_equal(k[2].ki_uid, "9");	/* 9 < 10 as numbers */
	assert_string_equal(k[3].ki_uid, "10");
	assert_string_equal(k[4].ki_uid, "2");	/* no activation date */
	assert_string_equal(k[5].ki_uid, "1");	/* activated later */
	for (i = 0; i + 1 < 6; i++)
		assert_true(kmip_key_cmp(&k[i], &k[i + 1]) < 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encode_examples),
		cmocka_unit_test(test_decode_examples),
		cmocka_unit_test(test_bigint_sign_extension),
		cmocka_unit_test(test_roundtrip_nested),
		cmocka_unit_test(test_encoder_errors),
		cmocka_unit_test(test_hostile_lengths),
		cmocka_unit_test(test_hostile_values),
		cmocka_unit_test(test_hostile_nesting),
		cmocka_unit_test(test_mutations),
		cmocka_unit_test(test_msg_len),
		cmocka_unit_test(test_key_order),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
