/*
 * mkcorpus.c: writes the binary seed corpora of the fuzz harnesses with
 * the project's own encoders, so that every seed is a real object:
 * frames from frame_pack(), a block sealed and compressed as the source
 * does it, KMIP messages from the TTLV encoder, and chunk, index and
 * manifest files that the repository itself wrote.
 *
 *	build-fuzz/mkcorpus tests/fuzz/corpus
 *
 * The configuration seeds (corpus/conf/) are hand-written text files.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "target.h"
#include "kmip.h"
#include "fuzz.h"

static const char	*outdir;

static void __attribute__((noreturn))
die(const char *what)
{
	perror(what);
	exit(1);
}

/* Writes outdir/sub/name: the optional prefix byte, then buf. */
static void
seed(const char *sub, const char *name, int prefix, const void *buf,
    size_t len)
{
	char	 path[1024];
	FILE	*fp;

	snprintf(path, sizeof(path), "%s/%s", outdir, sub);
	if (mkdir(path, 0755) == -1 && errno != EEXIST)
		die(path);
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, sub, name);
	if ((fp = fopen(path, "w")) == NULL)
		die(path);
	if ((prefix >= 0 && fputc(prefix, fp) == EOF) ||
	    (len > 0 && fwrite(buf, len, 1, fp) != 1) || fclose(fp) == EOF)
		die(path);
}

static uint8_t *
slurp(const char *path, size_t *lenp)
{
	struct stat	 st;
	uint8_t		*buf;
	int		 fd;

	if ((fd = open(path, O_RDONLY)) == -1 || fstat(fd, &st) == -1)
		die(path);
	if ((buf = malloc(st.st_size + 1)) == NULL ||
	    read(fd, buf, st.st_size) != st.st_size)
		die(path);
	close(fd);
	*lenp = st.st_size;
	return buf;
}

/* Some compressible text. */
static void
fill_text(uint8_t *buf, size_t len)
{
	static const char	 text[] = "transporter moves VM disks across "
	    "sites; every block is hashed, compressed and sealed. ";
	size_t			 i;

	for (i = 0; i < len; i++)
		buf[i] = text[i % (sizeof(text) - 1)] + (i / 997) % 3;
}

/*
 * Frames.
 */

static size_t	 stream_len;
static uint8_t	 stream[1 << 16];

static void
frame_seed(const char *name, Frame *f)
{
	uint8_t	*buf;
	size_t	 len;

	if ((buf = frame_pack(f, &len)) == NULL)
		die("frame_pack");
	seed("frame", name, -1, buf, len);
	if (stream_len + len <= sizeof(stream)) {
		memcpy(stream + stream_len, buf, len);
		stream_len += len;
	}
	free(buf);
}

static void
frames(void)
{
	Frame		 f = FRAME__INIT;
	Hello		 h = HELLO__INIT;
	BackupBegin	 bb = BACKUP_BEGIN__INIT;
	Block		 b = BLOCK__INIT;
	Ack		 ack = ACK__INIT;
	BackupEnd	 be = BACKUP_END__INIT;
	Committed	 c = COMMITTED__INIT;
	ListRequest	 lr = LIST_REQUEST__INIT;
	ListReply	 lrep = LIST_REPLY__INIT;
	PointInfo	 pi[2], *pis[2];
	RestoreRequest	 rr = RESTORE_REQUEST__INIT;
	RestoreBegin	 rb = RESTORE_BEGIN__INIT;
	Credit		 cr = CREDIT__INIT;
	RestoreEnd	 re = RESTORE_END__INIT;
	Error		 e = ERROR__INIT;
	BaseIndex	 bi = BASE_INDEX__INIT;
	Unchanged	 u = UNCHANGED__INIT;
	JoinJob		 jj = JOIN_JOB__INIT;
	uint64_t	 ublocks[] = { 0, 1, 7, 1000000 };
	uint64_t	 resend[] = { 3, 17 };
	uint8_t		*buf, *payload;
	size_t		 len;
	uint8_t		 key[AEAD_KEY_LEN] = { 0 }, nonce[AEAD_NONCE_LEN];
	uint8_t		 raw[300], packed[400], sealed[400 + AEAD_TAG_LEN];
	uint8_t		 id[CHUNK_ID_LEN], aad[AAD_MAX_LEN], ids[3 * 32];
	size_t		 aadlen;
	ssize_t		 n;

	h.version = PROTOCOL_VERSION;
	h.software = "source-transporter " TRANSPORTER_VERSION;
	h.max_frame = FRAME_MAX;
	f.msg_case = FRAME__MSG_HELLO;
	f.hello = &h;
	frame_seed("hello", &f);

	bb.name = "vm1";
	bb.disk_size = 64ull << 20;
	bb.block_size = BLOCK_SIZE_DEFAULT;
	bb.mode = ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT;
	bb.source_path = "/var/lib/images/vm1.img";
	bb.window = 256u << 20;
	bb.incremental = 1;
	f.msg_case = FRAME__MSG_BACKUP_BEGIN;
	f.backup_begin = &bb;
	frame_seed("backup_begin", &f);

	/* A block as the source sends it: compressed, then sealed. */
	fill_text(raw, sizeof(raw));
	crypto_sha256(raw, sizeof(raw), id);
	if ((n = compress_block(3, raw, sizeof(raw), packed,
	    sizeof(packed))) <= 0)
		die("compress_block");
	crypto_nonce(nonce, 1, 0);
	aadlen = crypto_aad(aad, AAD_BLOCK_TO_TARGET, NULL, id, 5);
	if (crypto_seal(key, nonce, aad, aadlen, packed, n, sealed) == -1)
		die("crypto_seal");
	b.index = 5;
	b.chunk_id.data = id;
	b.chunk_id.len = sizeof(id);
	b.raw_len = sizeof(raw);
	b.compressed = 1;
	b.nonce.data = nonce;
	b.nonce.len = sizeof(nonce);
	b.payload.data = sealed;
	b.payload.len = n + AEAD_TAG_LEN;
	f.msg_case = FRAME__MSG_BLOCK;
	f.block = &b;
	frame_seed("block", &f);

	ack.blocks_durable = 64;
	ack.bytes_durable = 64ull << 20;
	f.msg_case = FRAME__MSG_ACK;
	f.ack = &ack;
	frame_seed("ack", &f);

	u.n_blocks = sizeof(ublocks) / sizeof(ublocks[0]);
	u.blocks = ublocks;
	f.msg_case = FRAME__MSG_UNCHANGED;
	f.unchanged = &u;
	frame_seed("unchanged", &f);

	be.blocks_sent = 60;
	be.zero_blocks = 3;
	be.blocks_unchanged = 1;
	f.msg_case = FRAME__MSG_BACKUP_END;
	f.backup_end = &be;
	frame_seed("backup_end", &f);

	c.point_id = FUZZ_POINT_ID;
	c.bytes_stored = 12345678;
	c.chunks_new = 50;
	c.chunks_dedup = 10;
	f.msg_case = FRAME__MSG_COMMITTED;
	f.committed = &c;
	frame_seed("committed", &f);

	lr.name = "vm1";
	f.msg_case = FRAME__MSG_LIST_REQUEST;
	f.list_request = &lr;
	frame_seed("list_request", &f);

	point_info__init(&pi[0]);
	pi[0].name = "vm1";
	pi[0].point_id = FUZZ_POINT_ID;
	pi[0].created = 1704067200;
	pi[0].disk_size = 64ull << 20;
	pi[0].block_size = BLOCK_SIZE_DEFAULT;
	pi[0].stored_bytes = 1 << 20;
	pi[0].mode = ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT;
	pi[0].blocks = 64;
	pi[0].zero_blocks = 3;
	pi[1] = pi[0];
	pi[1].name = "db";
	pis[0] = &pi[0];
	pis[1] = &pi[1];
	lrep.n_points = 2;
	lrep.points = pis;
	f.msg_case = FRAME__MSG_LIST_REPLY;
	f.list_reply = &lrep;
	frame_seed("list_reply", &f);

	rr.name = "vm1";
	rr.point_id = FUZZ_POINT_ID;
	f.msg_case = FRAME__MSG_RESTORE_REQUEST;
	f.restore_request = &rr;
	frame_seed("restore_request", &f);

	rb.point = &pi[0];
	rb.blocks = 61;
	f.msg_case = FRAME__MSG_RESTORE_BEGIN;
	f.restore_begin = &rb;
	frame_seed("restore_begin", &f);

	cr.bytes = 8u << 20;
	f.msg_case = FRAME__MSG_CREDIT;
	f.credit = &cr;
	frame_seed("credit", &f);

	re.blocks_sent = 61;
	f.msg_case = FRAME__MSG_RESTORE_END;
	f.restore_end = &re;
	frame_seed("restore_end", &f);

	e.code = ERROR__CODE__INTEGRITY;
	e.message = "backup of 'vm1': block 5 failed authentication";
	f.msg_case = FRAME__MSG_ERROR;
	f.error = &e;
	frame_seed("error", &f);

	memset(ids, 0, sizeof(ids));
	memcpy(ids + 32, id, sizeof(id));
	bi.point_id = FUZZ_POINT_ID;
	bi.blocks = 3;
	bi.first = 0;
	bi.ids.data = ids;
	bi.ids.len = sizeof(ids);
	bi.last = 1;
	f.msg_case = FRAME__MSG_BASE_INDEX;
	f.base_index = &bi;
	frame_seed("base_index", &f);

	/* A resumed restore: from a block on, two earlier ones again. */
	rr.from = 40;
	rr.n_resend = sizeof(resend) / sizeof(resend[0]);
	rr.resend = resend;
	f.msg_case = FRAME__MSG_RESTORE_REQUEST;
	f.restore_request = &rr;
	frame_seed("restore_resume", &f);

	/* A Block as the restoring target packs it: payload last. */
	b.payload.data = NULL;
	b.payload.len = 0;
	if ((buf = frame_pack_block(&b, n + AEAD_TAG_LEN, &payload,
	    &len)) == NULL)
		die("frame_pack_block");
	memcpy(payload, sealed, n + AEAD_TAG_LEN);
	seed("frame", "block_payload_last", -1, buf, len);
	free(buf);

	/* An extra connection of a job, naming its token. */
	memset(ids, 0x5a, JOB_TOKEN_LEN);
	jj.job_token.data = ids;
	jj.job_token.len = JOB_TOKEN_LEN;
	f.msg_case = FRAME__MSG_JOIN_JOB;
	f.join_job = &jj;
	frame_seed("join_job", &f);

	seed("frame", "stream", -1, stream, stream_len);
}

/*
 * Decompression and AEAD.
 */

static void
decompress_seeds(void)
{
	uint8_t	 raw[4096], out[4 + 4096];
	ssize_t	 n;

	fill_text(raw, sizeof(raw));
	if ((n = compress_block(3, raw, sizeof(raw), out + 4,
	    sizeof(out) - 4)) <= 0)
		die("compress_block");
	out[0] = 0;
	out[1] = 0;
	out[2] = sizeof(raw) >> 8;
	out[3] = sizeof(raw) & 0xff;
	seed("decompress", "text4k", -1, out, 4 + n);

	memset(raw, 0, sizeof(raw));
	if ((n = compress_block(1, raw, sizeof(raw), out + 4,
	    sizeof(out) - 4)) <= 0)
		die("compress_block");
	seed("decompress", "zeros4k", -1, out, 4 + n);
}

static void
aead_seeds(void)
{
	uint8_t	 key[AEAD_KEY_LEN], nonce[AEAD_NONCE_LEN], id[CHUNK_ID_LEN];
	uint8_t	 buf[AEAD_NONCE_LEN + 1 + AAD_MAX_LEN + 256 + AEAD_TAG_LEN];
	uint8_t	 pt[256], *p;
	size_t	 aadlen;

	memset(key, FUZZ_AEAD_KEY_BYTE, sizeof(key));
	fill_text(pt, sizeof(pt));
	crypto_sha256(pt, sizeof(pt), id);
	crypto_nonce(nonce, 0x7a7a7a7a, 42);
	p = buf;
	memcpy(p, nonce, sizeof(nonce));
	p += sizeof(nonce);
	aadlen = crypto_aad(p + 1, AAD_BLOCK_TO_SOURCE, NULL, id, 42);
	*p++ = (uint8_t)aadlen;
	p += aadlen;
	if (crypto_seal(key, nonce, buf + sizeof(nonce) + 1, aadlen, pt,
	    sizeof(pt), p) == -1)
		die("crypto_seal");
	p += sizeof(pt) + AEAD_TAG_LEN;
	seed("aead", "sealed_block", -1, buf, p - buf);

	/* No AAD, empty plaintext: a lone tag. */
	p = buf + sizeof(nonce);
	*p++ = 0;
	if (crypto_seal(key, nonce, NULL, 0, pt, 0, p) == -1)
		die("crypto_seal");
	seed("aead", "tag_only", -1, buf, sizeof(nonce) + 1 + AEAD_TAG_LEN);
}

/*
 * KMIP messages (tags and enumerations of KMIP 1.2).
 */

static void
ttlv_seed(const char *name, struct ttlv_enc *te)
{
	const uint8_t	*buf;
	size_t		 len;

	if ((buf = ttlv_enc_finish(te, &len)) == NULL)
		die("ttlv_enc_finish");
	seed("ttlv", name, -1, buf, len);
	ttlv_enc_free(te);
}

static void
response_header(struct ttlv_enc *te, int batch)
{
	ttlv_begin(te, 0x42007A);		/* Response Header */
	ttlv_begin(te, 0x420069);		/* Protocol Version */
	ttlv_add_int(te, 0x42006A, 1);
	ttlv_add_int(te, 0x42006B, 2);
	ttlv_end(te);
	ttlv_add_datetime(te, 0x420092, 1704067200);	/* Time Stamp */
	ttlv_add_int(te, 0x42000D, batch);	/* Batch Count */
	ttlv_end(te);
}

static void
ttlv_seeds(void)
{
	struct ttlv_enc	 te;
	uint8_t		 key[KMIP_KEY_LEN], big[16];

	memset(key, 0x42, sizeof(key));
	memset(big, 0x81, sizeof(big));

	/* Get: a symmetric key. */
	ttlv_enc_init(&te);
	ttlv_begin(&te, 0x42007B);		/* Response Message */
	response_header(&te, 1);
	ttlv_begin(&te, 0x42000F);		/* Batch Item */
	ttlv_add_enum(&te, 0x42005C, 0x0A);	/* Operation: Get */
	ttlv_add_enum(&te, 0x42007F, 0);	/* Result Status: Success */
	ttlv_begin(&te, 0x42007C);		/* Response Payload */
	ttlv_add_enum(&te, 0x420057, 2);	/* Object Type: Symmetric Key */
	ttlv_add_text(&te, 0x420094, "17");	/* Unique Identifier */
	ttlv_begin(&te, 0x42008F);		/* Symmetric Key */
	ttlv_begin(&te, 0x420040);		/* Key Block */
	ttlv_add_enum(&te, 0x420042, 1);	/* Key Format Type: Raw */
	ttlv_begin(&te, 0x420045);		/* Key Value */
	ttlv_add_bytes(&te, 0x420043, key, sizeof(key));
	ttlv_end(&te);
	ttlv_add_enum(&te, 0x420028, 3);	/* Algorithm: AES */
	ttlv_add_int(&te, 0x42002A, 256);	/* Cryptographic Length */
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_seed("get_response", &te);

	/* Locate: several identifiers, two batch items. */
	ttlv_enc_init(&te);
	ttlv_begin(&te, 0x42007B);
	response_header(&te, 2);
	ttlv_begin(&te, 0x42000F);
	ttlv_add_enum(&te, 0x42005C, 0x08);	/* Operation: Locate */
	ttlv_add_enum(&te, 0x42007F, 0);
	ttlv_begin(&te, 0x42007C);
	ttlv_add_text(&te, 0x420094, "3");
	ttlv_add_text(&te, 0x420094, "12");
	ttlv_add_text(&te, 0x420094, "140");
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_begin(&te, 0x42000F);
	ttlv_add_enum(&te, 0x42005C, 0x0B);	/* Get Attributes */
	ttlv_add_enum(&te, 0x42007F, 0);
	ttlv_begin(&te, 0x42007C);
	ttlv_add_text(&te, 0x420094, "12");
	ttlv_begin(&te, 0x420008);		/* Attribute */
	ttlv_add_text(&te, 0x42000A, "State");
	ttlv_add_enum(&te, 0x42000B, 2);
	ttlv_end(&te);
	ttlv_begin(&te, 0x420008);
	ttlv_add_text(&te, 0x42000A, "Initial Date");
	ttlv_add_datetime(&te, 0x42000B, 1704067200);
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_seed("locate_attributes", &te);

	/* A failure, and one item of every other type. */
	ttlv_enc_init(&te);
	ttlv_begin(&te, 0x42007B);
	response_header(&te, 1);
	ttlv_begin(&te, 0x42000F);
	ttlv_add_enum(&te, 0x42005C, 0x14);	/* Destroy */
	ttlv_add_enum(&te, 0x42007F, 1);	/* Operation Failed */
	ttlv_add_enum(&te, 0x42007E, 1);	/* Item Not Found */
	ttlv_add_text(&te, 0x42007D, "no such object");
	ttlv_add_long(&te, 0x540001, -2);
	ttlv_add_bigint(&te, 0x540002, big, 13);
	ttlv_add_bool(&te, 0x540003, 1);
	ttlv_add_interval(&te, 0x540004, 86400);
	ttlv_end(&te);
	ttlv_end(&te);
	ttlv_seed("failure_types", &te);
}

/*
 * Repository files, written by the repository.
 */

static char	 repo_dir[256];

static int
rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* Copies every chunk object of the tenant: a compressed and a raw one. */
static void
chunk_seeds(void)
{
	char		 path[1024], sub[1200], name[64];
	struct dirent	*de, *fe;
	DIR		*d, *fd;
	uint8_t		*buf;
	size_t		 len;

	snprintf(path, sizeof(path), "%s/tenants/%s/chunks", repo_dir,
	    FUZZ_TENANT);
	if ((d = opendir(path)) == NULL)
		die(path);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		if ((fd = opendir(sub)) == NULL)
			die(sub);
		while ((fe = readdir(fd)) != NULL) {
			if (fe->d_name[0] == '.')
				continue;
			snprintf(sub, sizeof(sub), "%s/%s/%s", path,
			    de->d_name, fe->d_name);
			buf = slurp(sub, &len);
			snprintf(name, sizeof(name), "chunk_%.8s",
			    fe->d_name);
			seed("repo", name, FUZZ_REPO_CHUNK, buf, len);
			snprintf(name, sizeof(name), "chunksum_%.8s",
			    fe->d_name);
			seed("repo", name, FUZZ_REPO_CHUNK_SUM, buf, len);
			free(buf);
		}
		closedir(fd);
	}
	closedir(d);
}

/* The point's manifest, moved to the fixed id the harness uses. */
static void
manifest_seeds(const char *id)
{
	char		 path[1024];
	Manifest	*m;
	uint8_t		*buf, *pb, *file;
	char		*orig;
	size_t		 len, pblen;

	snprintf(path, sizeof(path), "%s/tenants/%s/points/%s/%s.manifest",
	    repo_dir, FUZZ_TENANT, FUZZ_NAME, id);
	buf = slurp(path, &len);
	if (len < 8 + CHUNK_ID_LEN || memcmp(buf, FUZZ_MANIFEST_MAGIC, 4) ||
	    (m = manifest__unpack(NULL, len - 8 - CHUNK_ID_LEN,
	    buf + 8)) == NULL || m->point == NULL)
		die("manifest");
	orig = m->point->point_id;
	m->point->point_id = FUZZ_POINT_ID;
	pblen = manifest__get_packed_size(m);
	if ((pb = malloc(pblen)) == NULL ||
	    (file = malloc(8 + pblen + CHUNK_ID_LEN)) == NULL)
		die("malloc");
	manifest__pack(m, pb);
	m->point->point_id = orig;
	manifest__free_unpacked(m, NULL);
	seed("repo", "manifest_pb", FUZZ_REPO_MANIFEST_PB, pb, pblen);
	memcpy(file, FUZZ_MANIFEST_MAGIC, 4);
	file[4] = pblen >> 24;
	file[5] = pblen >> 16;
	file[6] = pblen >> 8;
	file[7] = pblen;
	memcpy(file + 8, pb, pblen);
	crypto_sha256(file, 8 + pblen, file + 8 + pblen);
	seed("repo", "manifest", FUZZ_REPO_MANIFEST, file,
	    8 + pblen + CHUNK_ID_LEN);
	free(file);
	free(pb);
	free(buf);

	snprintf(path, sizeof(path), "%s/tenants/%s/points/%s/%s.index",
	    repo_dir, FUZZ_TENANT, FUZZ_NAME, id);
	buf = slurp(path, &len);
	seed("repo", "index", FUZZ_REPO_INDEX, buf, len);
	free(buf);
}

/*
 * A point of four 64 KiB blocks and a 700-byte tail: text, zeros, the
 * text again (deduplicated) and noise (stored raw).
 */
static void
repo_seeds(void)
{
	const uint32_t	 bs = BLOCK_SIZE_MIN, tail = 700;
	struct repo	*r;
	struct repo_job	*j;
	struct repo_point p;
	uint8_t		*text, *packed, rnd[700], id[CHUNK_ID_LEN];
	char		 err[512];
	uint64_t	 x;
	size_t		 cap, i;
	ssize_t		 n;

	snprintf(repo_dir, sizeof(repo_dir), "/tmp/mkcorpus.XXXXXX");
	if (mkdtemp(repo_dir) == NULL)
		die(repo_dir);
	if ((r = repo_open(repo_dir, err, sizeof(err))) == NULL) {
		fprintf(stderr, "mkcorpus: %s\n", err);
		exit(1);
	}
	if ((j = repo_job_begin(r, FUZZ_TENANT, FUZZ_NAME, 3ull * bs + tail,
	    bs, ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT)) == NULL)
		die("repo_job_begin");
	cap = compress_bound(bs);
	if ((text = malloc(bs)) == NULL || (packed = malloc(cap)) == NULL)
		die("malloc");
	fill_text(text, bs);
	crypto_sha256(text, bs, id);
	if ((n = compress_block(3, text, bs, packed, cap)) <= 0 ||
	    repo_job_put_chunk(j, id, CHUNK_COMPRESSED, bs, packed, n) ==
	    -1 || repo_job_set_block(j, 0, id) == -1 ||
	    repo_job_put_chunk(j, id, CHUNK_COMPRESSED, bs, packed, n) ==
	    -1 || repo_job_set_block(j, 2, id) == -1)
		die("repo: text block");
	for (i = 0, x = 88172645463325252ull; i < sizeof(rnd); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;	/* xorshift64 */
		rnd[i] = (uint8_t)x;
	}
	crypto_sha256(rnd, tail, id);
	if (repo_job_put_chunk(j, id, 0, tail, rnd, tail) == -1 ||
	    repo_job_set_block(j, 3, id) == -1)
		die("repo: raw block");
	if (repo_job_commit(j, &p) == -1)
		die("repo_job_commit");
	chunk_seeds();
	manifest_seeds(p.rp_id);
	repo_close(r);
	free(text);
	free(packed);
	(void)nftw(repo_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int
main(int argc, char *argv[])
{
	if (argc != 2) {
		fprintf(stderr, "usage: mkcorpus CORPUS-DIR\n");
		return 2;
	}
	outdir = argv[1];
	if (mkdir(outdir, 0755) == -1 && errno != EEXIST)
		die(outdir);
	log_init("mkcorpus", 1, 0);
	frames();
	decompress_seeds();
	aead_seeds();
	ttlv_seeds();
	repo_seeds();
	return 0;
}
