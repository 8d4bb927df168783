/*
 * fuzz_frame.c: the wire framing (common/frame.c) and the protobuf
 * decoding of every message.
 *
 * The input is a byte stream as it would arrive on a connection.  It
 * is taken apart twice, once added whole and once dribbled in small
 * pieces; both must yield the same frames.  Every frame that decodes is
 * walked field by field through its descriptor (each member of the
 * oneof, every string, bytes and repeated field, nested messages), then
 * packed again, and what frame_pack produces must decode again to the
 * same message type.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common.h"
#include "fuzz.h"

#define FUZZ_FRAMES_MAX	64	/* frames compared between the passes */

static volatile uint64_t fuzz_sink;
static int	 tag_zero;	/* an unknown field numbered 0 was seen */

static uint64_t	walk_message(const ProtobufCMessage *, int);

/* Reads one value of field fd at p; returns something of it. */
static uint64_t
walk_value(const ProtobufCFieldDescriptor *fd, const void *p, int depth)
{
	const ProtobufCBinaryData	*bd;
	const char			*s;
	uint64_t			 sum = 0;
	size_t				 i;

	switch (fd->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return *(const uint32_t *)p;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return *(const uint64_t *)p;
	case PROTOBUF_C_TYPE_BOOL:
		return *(const protobuf_c_boolean *)p != 0;
	case PROTOBUF_C_TYPE_ENUM:
		return (uint64_t)*(const int *)p;
	case PROTOBUF_C_TYPE_STRING:
		s = *(char * const *)p;
		return s != NULL ? strlen(s) : 0;
	case PROTOBUF_C_TYPE_BYTES:
		bd = p;
		FUZZ_CHECK(bd->len == 0 || bd->data != NULL);
		for (i = 0; i < bd->len; i++)
			sum += bd->data[i];
		return sum + bd->len;
	case PROTOBUF_C_TYPE_MESSAGE:
		return walk_message(*(ProtobufCMessage * const *)p, depth + 1);
	}
	return 0;
}

/* The size of one element of a repeated field of fd's type. */
static size_t
value_size(const ProtobufCFieldDescriptor *fd)
{
	switch (fd->type) {
	case PROTOBUF_C_TYPE_INT32:
	case PROTOBUF_C_TYPE_SINT32:
	case PROTOBUF_C_TYPE_SFIXED32:
	case PROTOBUF_C_TYPE_UINT32:
	case PROTOBUF_C_TYPE_FIXED32:
	case PROTOBUF_C_TYPE_FLOAT:
		return 4;
	case PROTOBUF_C_TYPE_INT64:
	case PROTOBUF_C_TYPE_SINT64:
	case PROTOBUF_C_TYPE_SFIXED64:
	case PROTOBUF_C_TYPE_UINT64:
	case PROTOBUF_C_TYPE_FIXED64:
	case PROTOBUF_C_TYPE_DOUBLE:
		return 8;
	case PROTOBUF_C_TYPE_BOOL:
		return sizeof(protobuf_c_boolean);
	case PROTOBUF_C_TYPE_ENUM:
		return sizeof(int);
	case PROTOBUF_C_TYPE_STRING:
		return sizeof(char *);
	case PROTOBUF_C_TYPE_BYTES:
		return sizeof(ProtobufCBinaryData);
	case PROTOBUF_C_TYPE_MESSAGE:
		return sizeof(ProtobufCMessage *);
	}
	abort();
}

/* Touches every field that is set in m and in its sub-messages. */
static uint64_t
walk_message(const ProtobufCMessage *m, int depth)
{
	const ProtobufCMessageDescriptor	*d;
	const ProtobufCFieldDescriptor		*fd;
	const uint8_t				*base = (const uint8_t *)m;
	const uint8_t				*arr;
	uint64_t				 sum = 0;
	size_t					 i, j, n;

	if (m == NULL)
		return 0;
	FUZZ_CHECK(depth < 16);
	d = m->descriptor;
	FUZZ_CHECK(d != NULL && d->magic == PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC);
	for (i = 0; i < m->n_unknown_fields; i++)
		if (m->unknown_fields[i].tag == 0)
			tag_zero = 1;
	for (i = 0; i < d->n_fields; i++) {
		fd = &d->fields[i];
		if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
		    *(const uint32_t *)(base + fd->quantifier_offset) != fd->id)
			continue;
		if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
			n = *(const size_t *)(base + fd->quantifier_offset);
			arr = *(const uint8_t * const *)(base + fd->offset);
			FUZZ_CHECK(n == 0 || arr != NULL);
			for (j = 0; j < n; j++)
				sum += walk_value(fd, arr + j * value_size(fd),
				    depth);
			continue;
		}
		sum += walk_value(fd, base + fd->offset, depth);
	}
	return sum;
}

/* Decodes, walks and re-packs one frame body. */
static void
one_frame(const uint8_t *buf, size_t len)
{
	Frame	*f, *again;
	uint8_t	*packed;
	size_t	 plen;

	if ((f = frame_unpack(buf, len)) == NULL)
		return;
	FUZZ_CHECK(f->msg_case != FRAME__MSG__NOT_SET);
	fuzz_sink += strlen(frame_name(f));
	tag_zero = 0;
	fuzz_sink += walk_message(&f->base, 0);
	/*
	 * protobuf-c 1.4 takes an overlong tag varint of field number 0
	 * ("80 00") as an unknown field, but refuses the "00" it packs it
	 * back to.  Harmless here (unknown fields are ignored, frames are
	 * never forwarded), so such frames skip the round trip.
	 */
	if (!tag_zero && (packed = frame_pack(f, &plen)) != NULL) {
		FUZZ_CHECK(plen > FRAME_HDR_LEN);
		again = frame_unpack(packed + FRAME_HDR_LEN,
		    plen - FRAME_HDR_LEN);
		FUZZ_CHECK(again != NULL);
		FUZZ_CHECK(again->msg_case == f->msg_case);
		frame_free(again);
		free(packed);
	}
	frame_free(f);
}

/*
 * Takes every whole frame off in; lens gets the length of each (the
 * first FUZZ_FRAMES_MAX), *nframes their count, *bad 1 if the stream
 * hit a length the reader refuses.
 */
static void
drain(struct evbuffer *in, size_t *lens, size_t *nframes, int *bad,
    int decode)
{
	uint8_t	*buf;
	size_t	 len;
	int	 r;

	while (!*bad) {
		len = 0;
		r = frame_take(in, FRAME_MAX, &buf, &len);
		if (r == 0)
			break;
		if (r == -1) {
			FUZZ_CHECK(len == 0 || len > FRAME_MAX);
			*bad = 1;
			break;
		}
		FUZZ_CHECK(r == 1 && len > 0 && len <= FRAME_MAX);
		if (*nframes < FUZZ_FRAMES_MAX)
			lens[*nframes] = len;
		(*nframes)++;
		if (decode)
			one_frame(buf, len);
		free(buf);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct evbuffer	*whole, *dribble;
	size_t		 lens1[FUZZ_FRAMES_MAX], lens2[FUZZ_FRAMES_MAX];
	size_t		 n1 = 0, n2 = 0, off, step, i;
	int		 bad1 = 0, bad2 = 0;

	whole = evbuffer_new();
	dribble = evbuffer_new();
	FUZZ_CHECK(whole != NULL && dribble != NULL);

	FUZZ_CHECK(evbuffer_add(whole, data, size) == 0);
	drain(whole, lens1, &n1, &bad1, 1);

	/* The same bytes in pieces of 1 to 7 bytes. */
	step = size % 7 + 1;
	for (off = 0; off < size && !bad2; off += step) {
		FUZZ_CHECK(evbuffer_add(dribble, data + off,
		    size - off < step ? size - off : step) == 0);
		drain(dribble, lens2, &n2, &bad2, 0);
	}
	FUZZ_CHECK(n1 == n2 && bad1 == bad2);
	for (i = 0; i < n1 && i < FUZZ_FRAMES_MAX; i++)
		FUZZ_CHECK(lens1[i] == lens2[i]);

	evbuffer_free(whole);
	evbuffer_free(dribble);
	return 0;
}
