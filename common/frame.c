/*
 * frame.c: the wire framing.  Every message is a 4-byte big-endian
 * length followed by one protobuf Frame.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "common.h"
#include "metrics.h"

static void
frame_buf_free(const void *data, size_t len, void *arg)
{
	free(arg);
}

/*
 * Packs f behind its length prefix into a new buffer (the caller frees
 * it); *lenp gets the total length.  Returns NULL if f is too large.
 */
uint8_t *
frame_pack(const Frame *f, size_t *lenp)
{
	uint8_t	*buf;
	size_t	 len;

	len = frame__get_packed_size(f);
	if (len == 0 || len > FRAME_MAX) {
		log_warnx("refusing to send a %zu-byte frame", len);
		return NULL;
	}
	if ((buf = malloc(FRAME_HDR_LEN + len)) == NULL)
		return NULL;
	buf[0] = len >> 24;
	buf[1] = len >> 16;
	buf[2] = len >> 8;
	buf[3] = len;
	frame__pack(f, buf + FRAME_HDR_LEN);
	*lenp = FRAME_HDR_LEN + len;
	return buf;
}

/* Bytes of v as a protobuf varint. */
static size_t
varint_len(size_t v)
{
	size_t	 n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *
varint_put(uint8_t *p, size_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

/* Wire tags (field number << 3 | length-delimited). */
#define TAG_FRAME_BLOCK		(3 << 3 | 2)
#define TAG_BLOCK_PAYLOAD	(6 << 3 | 2)

/*
 * Packs a Block frame whose payload the caller writes in place, so that
 * a block is sealed straight into the frame instead of being copied
 * there.  b->payload must be empty; the payload field, payload_len bytes,
 * goes last (protobuf readers take fields in any order) and *payloadp
 * points at it.  Returns the buffer (the caller frees it) with *lenp its
 * total length, or NULL if the frame would be too large.
 */
uint8_t *
frame_pack_block(const Block *b, size_t payload_len, uint8_t **payloadp,
    size_t *lenp)
{
	uint8_t	*buf, *p;
	size_t	 blen, flen;

	if (b->payload.len != 0 || payload_len > FRAME_MAX) {
		log_warnx("refusing to send a block of %zu bytes", payload_len);
		return NULL;
	}
	blen = block__get_packed_size(b) + 1 + varint_len(payload_len) +
	    payload_len;
	flen = 1 + varint_len(blen) + blen;
	if (flen > FRAME_MAX) {
		log_warnx("refusing to send a %zu-byte frame", flen);
		return NULL;
	}
	if ((buf = malloc(FRAME_HDR_LEN + flen)) == NULL)
		return NULL;
	buf[0] = flen >> 24;
	buf[1] = flen >> 16;
	buf[2] = flen >> 8;
	buf[3] = flen;
	p = buf + FRAME_HDR_LEN;
	*p++ = TAG_FRAME_BLOCK;
	p = varint_put(p, blen);
	p += block__pack(b, p);
	*p++ = TAG_BLOCK_PAYLOAD;
	p = varint_put(p, payload_len);
	*payloadp = p;
	*lenp = FRAME_HDR_LEN + flen;
	return buf;
}

#define FRAME_COPY_MAX	4096	/* smaller frames are queued by copy */

/*
 * Queues buf, a frame of len bytes from frame_pack or frame_pack_block,
 * on out, and frees it once sent.  Large frames go by reference, not
 * copied; small ones are copied, so that many of them share a buffer
 * and the output's length is what it costs in memory.  Counted in the
 * metrics as sent.  Returns 0, or -1 (buf is still the caller's).
 */
int
frame_queue(struct evbuffer *out, uint8_t *buf, size_t len)
{
	if (len < FRAME_COPY_MAX) {
		if (evbuffer_add(out, buf, len) == -1)
			return -1;
		free(buf);
	} else if (evbuffer_add_reference(out, buf, len, frame_buf_free,
	    buf) == -1)
		return -1;
	METRICS_ADD(metrics.mt_bytes_sent, NULL, len);
	return 0;
}

/* Queues f on bev without copying its packed bytes.  Returns 0 or -1. */
int
frame_send(struct bufferevent *bev, const Frame *f)
{
	uint8_t	*buf;
	size_t	 len;

	if ((buf = frame_pack(f, &len)) == NULL)
		return -1;
	if (frame_queue(bufferevent_get_output(bev), buf, len) == -1) {
		free(buf);
		return -1;
	}
	return 0;
}

/* Sends an Error frame with a printf-style message. */
int
frame_send_error(struct bufferevent *bev, Error__Code code,
    const char *fmt, ...)
{
	Frame	 f = FRAME__INIT;
	Error	 e = ERROR__INIT;
	char	 msg[512];
	va_list	 ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	e.code = code;
	e.message = msg;
	f.msg_case = FRAME__MSG_ERROR;
	f.error = &e;
	return frame_send(bev, &f);
}

/*
 * Takes one whole frame off in, without its length prefix.  Returns 1
 * with a malloc'd *bufp of *lenp bytes, 0 if the frame is not complete
 * yet, -1 if the announced length is zero or above max (errno EMSGSIZE):
 * the caller closes the session, nothing was allocated.
 */
int
frame_take(struct evbuffer *in, size_t max, uint8_t **bufp, size_t *lenp)
{
	uint8_t	 hdr[FRAME_HDR_LEN];
	uint8_t	*buf;
	size_t	 len;

	if (evbuffer_get_length(in) < FRAME_HDR_LEN)
		return 0;
	if (evbuffer_copyout(in, hdr, sizeof(hdr)) != sizeof(hdr))
		return -1;
	len = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 |
	    (size_t)hdr[2] << 8 | hdr[3];
	if (len == 0 || len > max || len > FRAME_MAX) {
		*lenp = len;
		errno = EMSGSIZE;
		return -1;
	}
	if (evbuffer_get_length(in) < FRAME_HDR_LEN + len)
		return 0;
	if ((buf = malloc(len)) == NULL)
		return -1;
	evbuffer_drain(in, FRAME_HDR_LEN);
	if (evbuffer_remove(in, buf, len) != (int)len) {
		free(buf);
		return -1;
	}
	*bufp = buf;
	*lenp = len;
	return 1;
}

/*
 * protobuf-c allocates each field it does not know, and each element of
 * a repeated message, apart: a frame of 2-byte fields would cost 30 to
 * 50 times its size once decoded.  A frame may cost FRAME_UNPACK_FACTOR
 * times its size (and 64 KiB), counting malloc's own 16 bytes a block,
 * which is several times what any well-formed frame needs.
 */
#define FRAME_UNPACK_FACTOR	8

struct unpack_budget {
	size_t	ub_left;
};

static void *
unpack_alloc(void *data, size_t size)
{
	struct unpack_budget	*ub = data;

	if (size > ub->ub_left || size + 16 > ub->ub_left)
		return NULL;
	ub->ub_left -= size + 16;
	return malloc(size);
}

static void
unpack_free(void *data, void *p)
{
	free(p);
}

/*
 * Decodes a frame; NULL if malformed, empty or too costly to decode.
 * Free with frame_free.
 */
Frame *
frame_unpack(const uint8_t *buf, size_t len)
{
	struct unpack_budget	 ub = { FRAME_UNPACK_FACTOR * len + 65536 };
	ProtobufCAllocator	 a = { unpack_alloc, unpack_free, &ub };
	Frame			*f;

	/* Its blocks are malloc's: frame_free gives them back with free. */
	if ((f = frame__unpack(&a, len, buf)) == NULL)
		return NULL;
	if (f->msg_case == FRAME__MSG__NOT_SET) {
		frame__free_unpacked(f, NULL);
		return NULL;
	}
	return f;
}

void
frame_free(Frame *f)
{
	if (f != NULL)
		frame__free_unpacked(f, NULL);
}

/* A frame's type for log messages. */
const char *
frame_name(const Frame *f)
{
	const ProtobufCFieldDescriptor	*fd;

	fd = protobuf_c_message_descriptor_get_field(&frame__descriptor,
	    f->msg_case);
	return fd != NULL ? fd->name : "unknown";
}
