/*
 * fuzz_ttlv.c: the KMIP TTLV decoder (common/ttlv.c), the layer under
 * every KMS response.
 *
 * Input: one message as a KMS would send it.  When ttlv_parse() takes
 * it, every item is read with every getter (only the one of its type
 * may succeed), looked up with ttlv_find(), and the tree is encoded
 * again with the encoder: the decoder accepts only canonical messages,
 * so the result must be the input byte for byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kmip.h"
#include "fuzz.h"

static volatile uint64_t fuzz_sink;

/* Calls every getter on it; exactly the one of its type works. */
static void
getters(const struct ttlv_item *it)
{
	const uint8_t	*p;
	char		*text;
	int64_t		 l;
	int32_t		 i;
	uint32_t	 u;
	size_t		 len;
	int		 b, ok = 0;

	if (ttlv_get_int(it, &i) == 0)
		ok++, fuzz_sink += (uint32_t)i;
	if (ttlv_get_long(it, &l) == 0)
		ok++, fuzz_sink += (uint64_t)l;
	if (ttlv_get_bigint(it, &p, &len) == 0) {
		FUZZ_CHECK(len > 0 && len % 8 == 0);
		ok++, fuzz_sink += p[len - 1];
	}
	if (ttlv_get_enum(it, &u) == 0)
		ok++, fuzz_sink += u;
	if (ttlv_get_bool(it, &b) == 0) {
		FUZZ_CHECK(b == 0 || b == 1);
		ok++;
	}
	if (ttlv_get_bytes(it, &p, &len) == 0) {
		FUZZ_CHECK(len == it->ti_len);
		ok++, fuzz_sink += len > 0 ? p[len - 1] : 0;
	}
	if (ttlv_get_datetime(it, &l) == 0)
		ok++, fuzz_sink += (uint64_t)l;
	if (ttlv_get_interval(it, &u) == 0)
		ok++, fuzz_sink += u;
	/* Text: exactly its length plus a NUL, and one byte too little. */
	text = malloc((size_t)it->ti_len + 1);
	FUZZ_CHECK(text != NULL);
	if (ttlv_get_text(it, text, (size_t)it->ti_len + 1) == 0) {
		FUZZ_CHECK(strlen(text) == it->ti_len);
		FUZZ_CHECK(ttlv_get_text(it, text, it->ti_len) == -1);
		ok++;
	}
	free(text);
	FUZZ_CHECK(it->ti_type == TTLV_STRUCTURE ? ok == 0 :
	    it->ti_type == TTLV_TEXT ? ok <= 1 : ok == 1);
}

/*
 * Walks the tree under it: getters on each item, ttlv_find of each
 * child's tag, and the item encoded again into te.  *canonical is
 * cleared when a text holds a NUL (ttlv_add_text stops there).
 */
static void
walk(const struct ttlv_item *it, struct ttlv_enc *te, int *canonical)
{
	const struct ttlv_item	*c, *found;
	const uint8_t		*p;
	char			*text;
	size_t			 len;
	int64_t			 l;
	int32_t			 i;
	uint32_t		 u;
	int			 b;

	getters(it);
	switch (it->ti_type) {
	case TTLV_STRUCTURE:
		(void)ttlv_begin(te, it->ti_tag);
		for (c = it->ti_child; c != NULL; c = c->ti_next) {
			found = ttlv_find(it, c->ti_tag);
			FUZZ_CHECK(found != NULL && found->ti_tag == c->ti_tag);
			(void)ttlv_find_next(found, c->ti_tag);
			walk(c, te, canonical);
		}
		(void)ttlv_end(te);
		break;
	case TTLV_INTEGER:
		if (ttlv_get_int(it, &i) == 0)
			(void)ttlv_add_int(te, it->ti_tag, i);
		break;
	case TTLV_LONG:
		if (ttlv_get_long(it, &l) == 0)
			(void)ttlv_add_long(te, it->ti_tag, l);
		break;
	case TTLV_BIGINT:
		if (ttlv_get_bigint(it, &p, &len) == 0)
			(void)ttlv_add_bigint(te, it->ti_tag, p, len);
		break;
	case TTLV_ENUM:
		if (ttlv_get_enum(it, &u) == 0)
			(void)ttlv_add_enum(te, it->ti_tag, u);
		break;
	case TTLV_BOOL:
		if (ttlv_get_bool(it, &b) == 0)
			(void)ttlv_add_bool(te, it->ti_tag, b);
		break;
	case TTLV_TEXT:
		text = malloc((size_t)it->ti_len + 1);
		FUZZ_CHECK(text != NULL);
		if (ttlv_get_text(it, text, (size_t)it->ti_len + 1) == 0)
			(void)ttlv_add_text(te, it->ti_tag, text);
		else
			*canonical = 0;
		free(text);
		break;
	case TTLV_BYTES:
		if (ttlv_get_bytes(it, &p, &len) == 0)
			(void)ttlv_add_bytes(te, it->ti_tag, p, len);
		break;
	case TTLV_DATETIME:
		if (ttlv_get_datetime(it, &l) == 0)
			(void)ttlv_add_datetime(te, it->ti_tag, l);
		break;
	case TTLV_INTERVAL:
		if (ttlv_get_interval(it, &u) == 0)
			(void)ttlv_add_interval(te, it->ti_tag, u);
		break;
	default:
		FUZZ_CHECK(!"unknown type accepted by ttlv_parse");
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ttlv_item	*root;
	struct ttlv_enc		 te;
	const uint8_t		*enc;
	char			 err[256];
	size_t			 total, len;
	int			 canonical = 1, hdr_ok = -1;

	if (size >= TTLV_HDR_LEN) {
		hdr_ok = ttlv_msg_len(data, 0, &total);
		if (hdr_ok == 0)
			FUZZ_CHECK(total >= TTLV_HDR_LEN &&
			    total <= TTLV_MSG_MAX);
	}
	err[0] = 'x';
	if ((root = ttlv_parse(data, size, err, sizeof(err))) == NULL) {
		FUZZ_CHECK(err[0] != '\0' && strlen(err) < sizeof(err));
		return 0;
	}
	FUZZ_CHECK(err[0] == '\0');
	/* A structure that parses has a header the reader accepts. */
	if (root->ti_type == TTLV_STRUCTURE)
		FUZZ_CHECK(hdr_ok == 0 && total == size);

	ttlv_enc_init(&te);
	walk(root, &te, &canonical);
	enc = ttlv_enc_finish(&te, &len);
	if (canonical) {
		FUZZ_CHECK(enc != NULL);
		FUZZ_CHECK(len == size && memcmp(enc, data, size) == 0);
	}
	ttlv_enc_free(&te);
	ttlv_free(root);
	return 0;
}
