/*
 * test_frame.c: the wire framing (common/frame.c).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/buffer.h>

#include "common.h"

static uint8_t *
pack_block(uint64_t index, size_t payload_len, size_t *lenp)
{
	Frame		 f = FRAME__INIT;
	Block		 b = BLOCK__INIT;
	uint8_t		 id[CHUNK_ID_LEN], nonce[AEAD_NONCE_LEN];
	uint8_t		*payload, *buf;

	memset(id, 0xab, sizeof(id));
	memset(nonce, 0x01, sizeof(nonce));
	payload = malloc(payload_len);
	assert_non_null(payload);
	memset(payload, 0x5a, payload_len);
	b.index = index;
	b.chunk_id.data = id;
	b.chunk_id.len = sizeof(id);
	b.raw_len = (uint32_t)payload_len;
	b.nonce.data = nonce;
	b.nonce.len = sizeof(nonce);
	b.payload.data = payload;
	b.payload.len = payload_len;
	f.msg_case = FRAME__MSG_BLOCK;
	f.block = &b;
	buf = frame_pack(&f, lenp);
	free(payload);
	return buf;
}

/* A packed frame comes back whole, with its fields intact. */
static void
test_round_trip(void **state)
{
	struct evbuffer	*in = evbuffer_new();
	uint8_t		*buf, *got;
	size_t		 len, glen;
	Frame		*f;

	buf = pack_block(42, 1000, &len);
	assert_non_null(buf);
	/* The prefix is the big-endian length of the rest. */
	assert_int_equal(((size_t)buf[0] << 24 | buf[1] << 16 | buf[2] << 8 |
	    buf[3]), len - FRAME_HDR_LEN);
	evbuffer_add(in, buf, len);
	assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), 1);
	assert_int_equal(glen, len - FRAME_HDR_LEN);
	assert_int_equal(evbuffer_get_length(in), 0);
	f = frame_unpack(got, glen);
	assert_non_null(f);
	assert_int_equal(f->msg_case, FRAME__MSG_BLOCK);
	assert_int_equal(f->block->index, 42);
	assert_int_equal(f->block->payload.len, 1000);
	assert_int_equal(f->block->payload.data[999], 0x5a);
	assert_string_equal(frame_name(f), "block");
	/* The block tag is the first byte: the daemons route on it. */
	assert_int_equal(got[0], (3 << 3) | 2);
	frame_free(f);
	free(got);
	free(buf);
	evbuffer_free(in);
}

/* Frames arriving a byte at a time are taken only when whole. */
static void
test_partial(void **state)
{
	struct evbuffer	*in = evbuffer_new();
	uint8_t		*buf, *got = NULL;
	size_t		 len, glen, i;

	buf = pack_block(7, 300, &len);
	for (i = 0; i < len - 1; i++) {
		evbuffer_add(in, buf + i, 1);
		assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), 0);
	}
	evbuffer_add(in, buf + len - 1, 1);
	assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), 1);
	assert_memory_equal(got, buf + FRAME_HDR_LEN, glen);
	free(got);
	free(buf);
	evbuffer_free(in);
}

/* Two frames back to back come out one after the other. */
static void
test_two_frames(void **state)
{
	struct evbuffer	*in = evbuffer_new();
	uint8_t		*a, *b, *got;
	size_t		 alen, blen, glen;
	Frame		*f;

	a = pack_block(1, 10, &alen);
	b = pack_block(2, 20, &blen);
	evbuffer_add(in, a, alen);
	evbuffer_add(in, b, blen);
	assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), 1);
	f = frame_unpack(got, glen);
	assert_int_equal(f->block->index, 1);
	frame_free(f);
	free(got);
	assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), 1);
	f = frame_unpack(got, glen);
	assert_int_equal(f->block->index, 2);
	frame_free(f);
	free(got);
	assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), 0);
	free(a);
	free(b);
	evbuffer_free(in);
}

/* An announced length over the maximum, or zero, is refused at once. */
static void
test_oversized(void **state)
{
	struct evbuffer	*in = evbuffer_new();
	uint8_t		 hdr[4] = { 0x7f, 0xff, 0xff, 0xff };
	uint8_t		 zero[4] = { 0, 0, 0, 0 };
	uint8_t		*got = NULL;
	size_t		 glen = 0;

	evbuffer_add(in, hdr, sizeof(hdr));
	errno = 0;
	assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), -1);
	assert_int_equal(errno, EMSGSIZE);
	assert_int_equal(glen, 0x7fffffff);
	assert_null(got);
	evbuffer_drain(in, 4);

	/* A caller's own smaller maximum applies too. */
	hdr[0] = 0;
	hdr[1] = 0;
	hdr[2] = 0x10;
	hdr[3] = 0x01;
	evbuffer_add(in, hdr, sizeof(hdr));
	assert_int_equal(frame_take(in, 4096, &got, &glen), -1);
	evbuffer_drain(in, 4);

	evbuffer_add(in, zero, sizeof(zero));
	assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), -1);
	evbuffer_free(in);
}

/* Garbage and an empty Frame do not decode. */
static void
test_malformed(void **state)
{
	static const uint8_t	 garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f };
	static const uint8_t	 truncated[] = { 0x1a, 0x10, 0x08 };
	static const uint8_t	 unknown_only[] = { 0xf8, 0x07, 0x01 };

	assert_null(frame_unpack(garbage, sizeof(garbage)));
	assert_null(frame_unpack(truncated, sizeof(truncated)));
	/* Decodes, but carries no message: refused. */
	assert_null(frame_unpack(unknown_only, sizeof(unknown_only)));
}

/*
 * Frames that would cost many times their size once decoded (a field
 * protobuf-c does not know, or an element of a repeated message, is a
 * block of its own) are refused; large well-formed ones are not.
 */
static void
test_unpack_cost(void **state)
{
	Frame		 f = FRAME__INIT, *g;
	BackupEnd	 be = BACKUP_END__INIT;
	WrappedKey	 keys[1000], *kp[1000];
	uint8_t		 kid[KEY_ID_LEN], wrapped[60], *buf;
	size_t		 len, i, n;

	/* A Keepalive, then 1 MiB of unknown 3-byte fields (#100 = 0). */
	n = 1 << 20;
	assert_non_null(buf = malloc(n));
	buf[0] = 0x9a;
	buf[1] = 0x01;
	buf[2] = 0x00;
	for (i = 3; i + 3 <= n; i += 3) {
		buf[i] = 0xa0;
		buf[i + 1] = 0x06;
		buf[i + 2] = 0x00;
	}
	assert_null(frame_unpack(buf, i));
	/* The same with a few of them decodes. */
	assert_non_null(g = frame_unpack(buf, 3 + 3 * 100));
	assert_int_equal(g->msg_case, FRAME__MSG_KEEPALIVE);
	frame_free(g);
	/* A BackupEnd of 500000 empty keys (2 bytes each). */
	buf[0] = 0x2a;		/* Frame.backup_end */
	buf[1] = 0xa0;		/* 1000000 bytes: varint a0 8d 3d */
	buf[2] = 0x8d;
	buf[3] = 0x3d;
	for (i = 4; i < 4 + 1000000; i += 2) {
		buf[i] = 0x32;	/* BackupEnd.keys */
		buf[i + 1] = 0x00;
	}
	assert_null(frame_unpack(buf, i));
	free(buf);

	/* A BackupEnd with 1000 real keys, and a 16 MiB block, decode. */
	memset(kid, 0x11, sizeof(kid));
	memset(wrapped, 0x22, sizeof(wrapped));
	for (i = 0; i < 1000; i++) {
		wrapped_key__init(&keys[i]);
		keys[i].key_id.data = kid;
		keys[i].key_id.len = sizeof(kid);
		keys[i].wrapped.data = wrapped;
		keys[i].wrapped.len = sizeof(wrapped);
		kp[i] = &keys[i];
	}
	be.n_keys = 1000;
	be.keys = kp;
	f.msg_case = FRAME__MSG_BACKUP_END;
	f.backup_end = &be;
	assert_non_null(buf = frame_pack(&f, &len));
	assert_non_null(g = frame_unpack(buf + FRAME_HDR_LEN,
	    len - FRAME_HDR_LEN));
	assert_int_equal(g->backup_end->n_keys, 1000);
	frame_free(g);
	free(buf);
	assert_non_null(buf = pack_block(7, 16u << 20, &len));
	assert_non_null(g = frame_unpack(buf + FRAME_HDR_LEN,
	    len - FRAME_HDR_LEN));
	assert_int_equal(g->block->payload.len, 16u << 20);
	frame_free(g);
	free(buf);
}

/* A frame above the hard maximum is never packed. */
static void
test_pack_too_big(void **state)
{
	uint8_t	*buf;
	size_t	 len;

	buf = pack_block(0, FRAME_MAX, &len);
	assert_null(buf);
}

/*
 * frame_pack_block: a payload written in place behind the other fields
 * decodes as the same Block frame_pack would send, at every varint
 * width of the lengths.
 */
static void
test_pack_block_in_place(void **state)
{
	static const size_t	 sizes[] = { 0, 1, 100, 127, 128, 16383,
				    16384, (1u << 20) + 44, 2097152 + 7 };
	Block		 b = BLOCK__INIT;
	struct evbuffer	*in;
	uint8_t		 id[CHUNK_ID_LEN], nonce[AEAD_NONCE_LEN];
	uint8_t		*buf, *got, *payload;
	size_t		 i, j, len, glen;
	Frame		*f;

	memset(id, 0xab, sizeof(id));
	memset(nonce, 0x01, sizeof(nonce));
	b.chunk_id.data = id;
	b.chunk_id.len = sizeof(id);
	b.nonce.data = nonce;
	b.nonce.len = sizeof(nonce);
	b.compressed = 1;
	b.encrypted = 1;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		b.index = 1000 + i;
		b.raw_len = (uint32_t)sizes[i] + 3;
		buf = frame_pack_block(&b, sizes[i], &payload, &len);
		assert_non_null(buf);
		/* The payload is the frame's last bytes. */
		assert_ptr_equal(payload + sizes[i], buf + len);
		for (j = 0; j < sizes[i]; j++)
			payload[j] = (uint8_t)(j * 7 + i);
		in = evbuffer_new();
		evbuffer_add(in, buf, len);
		assert_int_equal(frame_take(in, FRAME_MAX, &got, &glen), 1);
		assert_int_equal(glen, len - FRAME_HDR_LEN);
		assert_int_equal(got[0], (3 << 3) | 2);
		f = frame_unpack(got, glen);
		assert_non_null(f);
		assert_int_equal(f->msg_case, FRAME__MSG_BLOCK);
		assert_int_equal(f->block->index, 1000 + i);
		assert_int_equal(f->block->raw_len, sizes[i] + 3);
		assert_true(f->block->compressed);
		assert_true(f->block->encrypted);
		assert_memory_equal(f->block->chunk_id.data, id, sizeof(id));
		assert_memory_equal(f->block->nonce.data, nonce, sizeof(nonce));
		assert_int_equal(f->block->payload.len, sizes[i]);
		if (sizes[i] > 0)
			assert_memory_equal(f->block->payload.data, payload,
			    sizes[i]);
		frame_free(f);
		free(got);
		free(buf);
		evbuffer_free(in);
	}
	/* Too large, or a payload set as well: refused. */
	assert_null(frame_pack_block(&b, FRAME_MAX, &payload, &len));
	b.payload.data = id;
	b.payload.len = sizeof(id);
	assert_null(frame_pack_block(&b, 10, &payload, &len));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_partial),
		cmocka_unit_test(test_two_frames),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_unpack_cost),
		cmocka_unit_test(test_pack_too_big),
		cmocka_unit_test(test_pack_block_in_place),
	};

	log_init("test_frame", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
