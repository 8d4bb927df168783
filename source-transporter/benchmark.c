/*
 * benchmark.c: the benchmark command.  Measures this machine's speed at
 * each stage a block passes through (SHA-256, zstd, AES-256-GCM, TLS 1.3
 * over loopback) on one core and on every worker, with the project's own
 * functions, so that a user sees which stage bounds a backup.
 *
 * The data is realistic: blocks of text (/usr/share/doc), binaries
 * (/usr/bin, /usr/lib) and random bytes, two fifths, two fifths and one
 * fifth, like the file systems of tests/tools/mkimage.sh --fs.  Text is
 * generated where the directories cannot be read.  The TLS stage uses a
 * throwaway self-signed certificate made in memory: no files.
 */
#include <sys/socket.h>
#include <sys/stat.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <zstd.h>

#include "source.h"

#define BENCH_DATA_MIN		(16u << 20)	/* corpus size, at least */
#define BENCH_BLOCKS_MIN	4
#define BENCH_FILE_MAX		(4u << 20)	/* larger files are skipped */
#define BENCH_DEPTH_MAX		8		/* directory recursion */
#define BENCH_TLS_CHUNK		16384		/* libevent's write size */
#define BENCH_TLS_STALL_MS	5000
#define BENCH_SECONDS_DEFAULT	1.0

struct bench;
struct bench_worker;

/* One stage: processes block i, returns the bytes it counts or -1. */
struct bench_stage {
	const char	*bs_key;	/* JSON name */
	const char	*bs_label;
	ssize_t		(*bs_run)(struct bench *, struct bench_worker *,
			    int);
	int		 bs_tls;	/* needs a loopback TLS pair */
	int		 bs_level;	/* compression level, 0: none */
	/* results, in bytes per second */
	double		 bs_one;
	double		 bs_all;
	double		 bs_ratio;	/* output/input, 0: not shown */
};

struct bench_worker {
	struct bench	*bw_bench;
	pthread_t	 bw_thread;
	int		 bw_id;
	uint8_t		*bw_out;	/* compress_bound(block size) */
	uint64_t	 bw_nonce;
	int		 bw_level;
	SSL		*bw_cli;
	SSL		*bw_srv;
	int		 bw_cfd;
	int		 bw_sfd;
	/* results */
	uint64_t	 bw_bytes;
	uint64_t	 bw_outbytes;
	double		 bw_secs;
	int		 bw_failed;
};

struct bench {
	size_t		 b_bsize;
	int		 b_nblocks;
	int		 b_threads;
	int		 b_level;
	double		 b_seconds;
	int		 b_json;
	uint8_t		*b_raw;		/* nblocks * bsize */
	uint8_t		*b_comp;	/* nblocks * b_cbound, at b_level */
	size_t		*b_clen;	/* 0: stored raw */
	size_t		 b_cbound;
	uint8_t		*b_sealed;	/* nblocks * (bsize + tag) */
	uint8_t		 b_key[AEAD_KEY_LEN];
	char		 b_text_from[64];
	char		 b_bin_from[64];
	int		 b_ntext;
	int		 b_nbin;
	int		 b_nrand;
	SSL_CTX		*b_srv_ctx;
	SSL_CTX		*b_cli_ctx;
	char		 b_cipher[64];
	pthread_barrier_t b_barrier;
	struct bench_worker *b_workers;
	const struct bench_stage *b_stage;	/* being measured */
};

/* Filling a buffer from the files under some directories. */
struct bench_fill {
	uint8_t		*bf_buf;
	size_t		 bf_len;
	size_t		 bf_have;
	int		 bf_text;	/* skip files that are not text */
};

static double
bench_now(void)
{
	struct timespec	 ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Already compressed files say nothing about a disk's compressibility. */
static int
bench_skip_name(const char *name)
{
	static const char *const sfx[] = { ".gz", ".xz", ".bz2", ".zst",
	    ".lz4", ".png", ".jpg", ".zip", NULL };
	size_t	 n = strlen(name), m;
	int	 i;

	for (i = 0; sfx[i] != NULL; i++) {
		m = strlen(sfx[i]);
		if (n >= m && strcmp(name + n - m, sfx[i]) == 0)
			return 1;
	}
	return 0;
}

/* Appends one file to bf; unreadable files are skipped. */
static void
bench_fill_file(struct bench_fill *bf, int dirfd, const char *name)
{
	ssize_t	 n;
	int	 fd;

	if ((fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW |
	    O_NONBLOCK)) == -1)
		return;
	while (bf->bf_have < bf->bf_len) {
		n = read(fd, bf->bf_buf + bf->bf_have,
		    bf->bf_len - bf->bf_have);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		bf->bf_have += (size_t)n;
	}
	close(fd);
}

/* Walks dir depth first, appending regular files until bf is full. */
static void
bench_fill_dir(struct bench_fill *bf, int parent, const char *path,
    int depth)
{
	DIR		*d = NULL;
	struct dirent	*de;
	struct stat	 st;
	int		 fd;

	if (depth > BENCH_DEPTH_MAX || bf->bf_have >= bf->bf_len)
		return;
	if ((fd = openat(parent, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
	    O_NOFOLLOW)) == -1)
		return;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return;
	}
	while (bf->bf_have < bf->bf_len && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0 ||
		    fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1)
			continue;
		if (S_ISDIR(st.st_mode))
			bench_fill_dir(bf, fd, de->d_name, depth + 1);
		else if (S_ISREG(st.st_mode) && st.st_size > 0 &&
		    st.st_size <= BENCH_FILE_MAX &&
		    !bench_skip_name(de->d_name))
			bench_fill_file(bf, fd, de->d_name);
	}
	closedir(d);
}

/* Generated English-like text, for machines without /usr/share/doc. */
static void
bench_fill_generated(uint8_t *buf, size_t len, uint64_t seed)
{
	static const char *const words[] = { "the", "block", "of", "a",
	    "disk", "is", "read", "and", "compressed", "before", "it",
	    "leaves", "for", "target", "backup", "restore", "point", "with",
	    "every", "file", "system", "kernel", "package", "license",
	    "copyright", "software", "under", "terms", "version", "data",
	    "which", "may", "be", "not", "this", "program", "free", "GNU" };
	const size_t	 nwords = sizeof(words) / sizeof(words[0]);
	size_t		 i = 0, col = 0, n;
	uint64_t	 x = seed | 1;
	const char	*w;

	while (i < len) {
		/* xorshift64: reproducible, not random */
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w = words[x % nwords];
		n = strlen(w);
		if (col + n + 1 > 72) {
			buf[i++] = '\n';
			col = 0;
			continue;
		}
		while (*w != '\0' && i < len)
			buf[i++] = (uint8_t)*w++;
		if (i < len)
			buf[i++] = ' ';
		col += n + 1;
	}
}

/*
 * Fills len bytes of buf from the directories (a NULL-terminated list),
 * or with generated text if they give less than half of it; what they
 * gave is repeated to the end.  Writes where it came from to from.
 */
static void
bench_fill(uint8_t *buf, size_t len, const char *const *dirs, char *from,
    size_t fromlen)
{
	struct bench_fill	 bf = { buf, len, 0, 0 };
	size_t			 got;
	int			 i;

	for (i = 0; dirs[i] != NULL && bf.bf_have < len; i++)
		bench_fill_dir(&bf, AT_FDCWD, dirs[i], 0);
	if (bf.bf_have < len / 2) {
		bench_fill_generated(buf, len, 0x9e3779b97f4a7c15ull);
		snprintf(from, fromlen, "generated text");
		return;
	}
	for (got = bf.bf_have; bf.bf_have < len; bf.bf_have++)
		buf[bf.bf_have] = buf[bf.bf_have % got];
	snprintf(from, fromlen, "%s", dirs[0]);
	for (i = 1; dirs[i] != NULL; i++) {
		if (strlen(from) + strlen(dirs[i]) + 2 >= fromlen)
			break;
		strcat(from, ",");
		strcat(from, dirs[i]);
	}
}

/* The stages. */

static ssize_t
stage_sha256(struct bench *b, struct bench_worker *bw, int i)
{
	uint8_t	 id[CHUNK_ID_LEN];

	crypto_sha256(b->b_raw + (size_t)i * b->b_bsize, b->b_bsize, id);
	return (ssize_t)b->b_bsize;
}

static ssize_t
stage_compress(struct bench *b, struct bench_worker *bw, int i)
{
	ssize_t	 n;

	n = compress_block(bw->bw_level, b->b_raw + (size_t)i * b->b_bsize,
	    b->b_bsize, bw->bw_out, b->b_cbound);
	if (n == -1)
		return -1;
	/* Stored raw when it does not shrink, as the product does. */
	bw->bw_outbytes += n > 0 ? (uint64_t)n : b->b_bsize;
	return (ssize_t)b->b_bsize;
}

/* Blocks stored raw are never decompressed: the next one is taken. */
static ssize_t
stage_decompress(struct bench *b, struct bench_worker *bw, int i)
{
	int	 j, k;

	for (k = 0; k < b->b_nblocks; k++) {
		j = (i + k) % b->b_nblocks;
		if (b->b_clen[j] == 0)
			continue;
		if (decompress_block(b->b_comp + (size_t)j * b->b_cbound,
		    b->b_clen[j], bw->bw_out, b->b_bsize) == -1) {
			log_warnx("benchmark: block %d does not decompress",
			    j);
			return -1;
		}
		return (ssize_t)b->b_bsize;
	}
	return 0;
}

static ssize_t
stage_seal(struct bench *b, struct bench_worker *bw, int i)
{
	uint8_t	 nonce[AEAD_NONCE_LEN], aad[AAD_MAX_LEN], id[CHUNK_ID_LEN];
	size_t	 aadlen;

	memset(id, i, sizeof(id));
	crypto_nonce(nonce, (uint32_t)bw->bw_id, bw->bw_nonce++);
	aadlen = crypto_aad(aad, AAD_BLOCK_TO_TARGET, NULL, id, (uint64_t)i);
	if (crypto_seal(b->b_key, nonce, aad, aadlen,
	    b->b_raw + (size_t)i * b->b_bsize, b->b_bsize, bw->bw_out) == -1)
		return -1;
	return (ssize_t)b->b_bsize;
}

/* The nonce and AAD of the pre-sealed block i. */
static size_t
bench_sealed_params(int i, uint8_t nonce[AEAD_NONCE_LEN],
    uint8_t aad[AAD_MAX_LEN])
{
	uint8_t	 id[CHUNK_ID_LEN];

	memset(id, i, sizeof(id));
	crypto_nonce(nonce, 0xffffffffu, (uint64_t)i);
	return crypto_aad(aad, AAD_BLOCK_TO_TARGET, NULL, id, (uint64_t)i);
}

static ssize_t
stage_open(struct bench *b, struct bench_worker *bw, int i)
{
	uint8_t	 nonce[AEAD_NONCE_LEN], aad[AAD_MAX_LEN];
	size_t	 aadlen, slen = b->b_bsize + AEAD_TAG_LEN;

	aadlen = bench_sealed_params(i, nonce, aad);
	if (crypto_open(b->b_key, nonce, aad, aadlen,
	    b->b_sealed + (size_t)i * slen, slen, bw->bw_out) == -1) {
		log_warnx("benchmark: block %d does not authenticate", i);
		return -1;
	}
	return (ssize_t)b->b_bsize;
}

/* Waits for either end of a TLS pair; 0, or -1 when nothing moves. */
static int
bench_tls_wait(struct bench_worker *bw)
{
	struct pollfd	 pfd[2];

	pfd[0].fd = bw->bw_cfd;
	pfd[0].events = POLLIN | POLLOUT;
	pfd[1].fd = bw->bw_sfd;
	pfd[1].events = POLLIN | POLLOUT;
	if (poll(pfd, 2, BENCH_TLS_STALL_MS) <= 0) {
		log_warnx("benchmark: the loopback TLS connection stalled");
		return -1;
	}
	return 0;
}

/*
 * Moves one block from the client to the server of this worker's pair,
 * both ends on this thread, in writes of libevent's size.
 */
static ssize_t
stage_tls(struct bench *b, struct bench_worker *bw, int i)
{
	const uint8_t	*src = b->b_sealed + (size_t)i * (b->b_bsize +
			    AEAD_TAG_LEN);
	size_t		 sent = 0, got = 0, n;
	int		 r, moved;

	while (got < b->b_bsize) {
		moved = 0;
		while (sent < b->b_bsize) {
			n = b->b_bsize - sent < BENCH_TLS_CHUNK ?
			    b->b_bsize - sent : BENCH_TLS_CHUNK;
			r = SSL_write(bw->bw_cli, src + sent, (int)n);
			if (r <= 0) {
				r = SSL_get_error(bw->bw_cli, r);
				if (r == SSL_ERROR_WANT_WRITE ||
				    r == SSL_ERROR_WANT_READ)
					break;
				log_ssl("benchmark: TLS write");
				return -1;
			}
			sent += (size_t)r;
			moved = 1;
		}
		while (got < sent) {
			n = sent - got < BENCH_TLS_CHUNK ? sent - got :
			    BENCH_TLS_CHUNK;
			r = SSL_read(bw->bw_srv, bw->bw_out, (int)n);
			if (r <= 0) {
				r = SSL_get_error(bw->bw_srv, r);
				if (r == SSL_ERROR_WANT_READ ||
				    r == SSL_ERROR_WANT_WRITE)
					break;
				log_ssl("benchmark: TLS read");
				return -1;
			}
			got += (size_t)r;
			moved = 1;
		}
		if (!moved && bench_tls_wait(bw) == -1)
			return -1;
	}
	return (ssize_t)b->b_bsize;
}

/* A throwaway P-256 key and self-signed certificate, in memory. */
static int
bench_tls_cert(EVP_PKEY **pkeyp, X509 **certp)
{
	EVP_PKEY	*pkey = NULL;
	X509		*x = NULL;
	X509_NAME	*name;
	int		 ret = -1;

	if ((pkey = EVP_EC_gen("P-256")) == NULL ||
	    (x = X509_new()) == NULL ||
	    X509_set_version(x, X509_VERSION_3) != 1 ||
	    ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1 ||
	    X509_gmtime_adj(X509_getm_notBefore(x), -60) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x), 3600) == NULL ||
	    X509_set_pubkey(x, pkey) != 1 ||
	    (name = X509_get_subject_name(x)) == NULL ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"transporter-benchmark", -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, name) != 1 ||
	    X509_sign(x, pkey, EVP_sha256()) == 0) {
		log_ssl("benchmark: cannot make a certificate");
		goto fail;
	}
	*pkeyp = pkey;
	*certp = x;
	pkey = NULL;
	x = NULL;
	ret = 0;
 fail:
	X509_free(x);
	EVP_PKEY_free(pkey);
	return ret;
}

/* TLS 1.3 contexts like the daemons', with the in-memory certificate. */
static int
bench_tls_init(struct bench *b)
{
	EVP_PKEY	*pkey = NULL;
	X509		*cert = NULL;
	int		 ret = -1;

	if (bench_tls_cert(&pkey, &cert) == -1)
		goto fail;
	if ((b->b_srv_ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    (b->b_cli_ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    !SSL_CTX_set_min_proto_version(b->b_srv_ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(b->b_srv_ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_min_proto_version(b->b_cli_ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(b->b_cli_ctx, TLS1_3_VERSION) ||
	    SSL_CTX_use_certificate(b->b_srv_ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey(b->b_srv_ctx, pkey) != 1) {
		log_ssl("benchmark: cannot make TLS contexts");
		goto fail;
	}
	SSL_CTX_set_num_tickets(b->b_srv_ctx, 0);
	/* The certificate is our own, minted a moment ago. */
	SSL_CTX_set_verify(b->b_cli_ctx, SSL_VERIFY_NONE, NULL);
	ret = 0;
 fail:
	X509_free(cert);
	EVP_PKEY_free(pkey);
	return ret;
}

static void
bench_tls_close(struct bench_worker *bw)
{
	SSL_free(bw->bw_cli);
	SSL_free(bw->bw_srv);
	bw->bw_cli = bw->bw_srv = NULL;
	if (bw->bw_cfd != -1)
		close(bw->bw_cfd);
	if (bw->bw_sfd != -1)
		close(bw->bw_sfd);
	bw->bw_cfd = bw->bw_sfd = -1;
}

/* Connects a client and a server over 127.0.0.1 and shakes hands. */
static int
bench_tls_open(struct bench *b, struct bench_worker *bw)
{
	struct sockaddr_in	 sin;
	socklen_t		 slen = sizeof(sin);
	int			 lfd = -1, one = 1, rc, sc, tries;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(lfd, 1) == -1 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &slen) == -1 ||
	    (bw->bw_cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC,
	    0)) == -1 ||
	    connect(bw->bw_cfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    (bw->bw_sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) == -1 ||
	    fcntl(bw->bw_cfd, F_SETFL, O_NONBLOCK) == -1 ||
	    fcntl(bw->bw_sfd, F_SETFL, O_NONBLOCK) == -1) {
		log_warn("benchmark: loopback connection");
		goto fail;
	}
	(void)setsockopt(bw->bw_cfd, IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one));
	(void)setsockopt(bw->bw_sfd, IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one));
	if ((bw->bw_cli = SSL_new(b->b_cli_ctx)) == NULL ||
	    (bw->bw_srv = SSL_new(b->b_srv_ctx)) == NULL ||
	    SSL_set_fd(bw->bw_cli, bw->bw_cfd) != 1 ||
	    SSL_set_fd(bw->bw_srv, bw->bw_sfd) != 1) {
		log_ssl("benchmark: SSL_new");
		goto fail;
	}
	SSL_set_connect_state(bw->bw_cli);
	SSL_set_accept_state(bw->bw_srv);
	for (tries = 0;; tries++) {
		rc = SSL_do_handshake(bw->bw_cli);
		sc = SSL_do_handshake(bw->bw_srv);
		if (rc == 1 && sc == 1)
			break;
		if ((rc != 1 && SSL_get_error(bw->bw_cli, rc) !=
		    SSL_ERROR_WANT_READ && SSL_get_error(bw->bw_cli, rc) !=
		    SSL_ERROR_WANT_WRITE) || (sc != 1 &&
		    SSL_get_error(bw->bw_srv, sc) != SSL_ERROR_WANT_READ &&
		    SSL_get_error(bw->bw_srv, sc) != SSL_ERROR_WANT_WRITE) ||
		    tries > 100) {
			log_ssl("benchmark: TLS handshake over loopback");
			goto fail;
		}
		if (bench_tls_wait(bw) == -1)
			goto fail;
	}
	snprintf(b->b_cipher, sizeof(b->b_cipher), "%s",
	    SSL_get_cipher_name(bw->bw_cli));
	close(lfd);
	return 0;
 fail:
	if (lfd != -1)
		close(lfd);
	bench_tls_close(bw);
	return -1;
}

static void *
bench_thread(void *arg)
{
	struct bench_worker		*bw = arg;
	struct bench			*b = bw->bw_bench;
	const struct bench_stage	*bs = b->b_stage;
	double				 start, now;
	ssize_t				 n;
	int				 i = bw->bw_id;

	(void)pthread_barrier_wait(&b->b_barrier);
	start = bench_now();
	do {
		if ((n = bs->bs_run(b, bw, i % b->b_nblocks)) == -1) {
			bw->bw_failed = 1;
			break;
		}
		bw->bw_bytes += (uint64_t)n;
		i++;
		now = bench_now();
	} while (now - start < b->b_seconds);
	bw->bw_secs = bench_now() - start;
	return NULL;
}

/*
 * Runs stage bs on nthreads threads at once for b_seconds.  Returns the
 * total bytes per second, or -1.  *ratio gets the output/input ratio
 * where the stage has one.
 */
static double
bench_measure(struct bench *b, const struct bench_stage *bs, int nthreads,
    double *ratio)
{
	struct bench_worker	*bw;
	uint64_t		 bytes = 0, outbytes = 0;
	double			 secs = 0, rate = -1;
	int			 i, started = 0, barrier = 0;

	b->b_stage = bs;
	for (i = 0; i < nthreads; i++) {
		bw = &b->b_workers[i];
		bw->bw_bytes = bw->bw_outbytes = 0;
		bw->bw_secs = 0;
		bw->bw_failed = 0;
		bw->bw_level = bs->bs_level;
		if (bs->bs_tls && bench_tls_open(b, bw) == -1)
			goto fail;
	}
	if ((errno = pthread_barrier_init(&b->b_barrier, NULL,
	    (unsigned int)nthreads)) != 0) {
		log_warn("benchmark: pthread_barrier_init");
		goto fail;
	}
	barrier = 1;
	for (i = 0; i < nthreads; i++) {
		if ((errno = pthread_create(&b->b_workers[i].bw_thread, NULL,
		    bench_thread, &b->b_workers[i])) != 0) {
			/* The barrier would never open: a broken start. */
			fatal("benchmark: pthread_create");
		}
		started++;
	}
	for (i = 0; i < started; i++) {
		bw = &b->b_workers[i];
		pthread_join(bw->bw_thread, NULL);
		if (bw->bw_failed)
			goto fail;
		bytes += bw->bw_bytes;
		outbytes += bw->bw_outbytes;
		if (bw->bw_secs > secs)
			secs = bw->bw_secs;
	}
	if (secs > 0)
		rate = (double)bytes / secs;
	*ratio = bytes > 0 && outbytes > 0 ? (double)outbytes / bytes : 0;
 fail:
	if (barrier)
		pthread_barrier_destroy(&b->b_barrier);
	for (i = 0; i < nthreads; i++)
		bench_tls_close(&b->b_workers[i]);
	return rate;
}

/* Reads the corpus, compresses and seals it once for the reverse stages. */
static int
bench_data(struct bench *b)
{
	static const char *const text_dirs[] = { "/usr/share/doc",
	    "/usr/share/common-licenses", NULL };
	static const char *const bin_dirs[] = { "/usr/bin", "/usr/lib",
	    NULL };
	uint8_t		 nonce[AEAD_NONCE_LEN], aad[AAD_MAX_LEN];
	size_t		 aadlen, slen = b->b_bsize + AEAD_TAG_LEN;
	ssize_t		 n;
	int		 i;

	b->b_nblocks = (int)(BENCH_DATA_MIN / b->b_bsize);
	if (b->b_nblocks < BENCH_BLOCKS_MIN)
		b->b_nblocks = BENCH_BLOCKS_MIN;
	b->b_ntext = b->b_nblocks * 2 / 5;
	b->b_nrand = b->b_nblocks / 5;
	b->b_nbin = b->b_nblocks - b->b_ntext - b->b_nrand;
	b->b_cbound = compress_bound(b->b_bsize);
	if ((b->b_raw = malloc((size_t)b->b_nblocks * b->b_bsize)) == NULL ||
	    (b->b_comp = malloc((size_t)b->b_nblocks * b->b_cbound)) == NULL ||
	    (b->b_clen = calloc((size_t)b->b_nblocks,
	    sizeof(*b->b_clen))) == NULL ||
	    (b->b_sealed = malloc((size_t)b->b_nblocks * slen)) == NULL) {
		log_warnx("benchmark: out of memory");
		return -1;
	}
	bench_fill(b->b_raw, (size_t)b->b_ntext * b->b_bsize, text_dirs,
	    b->b_text_from, sizeof(b->b_text_from));
	bench_fill(b->b_raw + (size_t)b->b_ntext * b->b_bsize,
	    (size_t)b->b_nbin * b->b_bsize, bin_dirs, b->b_bin_from,
	    sizeof(b->b_bin_from));
	if (crypto_random(b->b_raw + (size_t)(b->b_ntext + b->b_nbin) *
	    b->b_bsize, (size_t)b->b_nrand * b->b_bsize) == -1 ||
	    crypto_random(b->b_key, sizeof(b->b_key)) == -1)
		return -1;
	for (i = 0; i < b->b_nblocks; i++) {
		n = compress_block(b->b_level, b->b_raw + (size_t)i *
		    b->b_bsize, b->b_bsize, b->b_comp + (size_t)i *
		    b->b_cbound, b->b_cbound);
		if (n == -1)
			return -1;
		b->b_clen[i] = (size_t)n;
		aadlen = bench_sealed_params(i, nonce, aad);
		if (crypto_seal(b->b_key, nonce, aad, aadlen, b->b_raw +
		    (size_t)i * b->b_bsize, b->b_bsize, b->b_sealed +
		    (size_t)i * slen) == -1)
			return -1;
	}
	return 0;
}

static void
bench_free(struct bench *b)
{
	int	 i;

	if (b->b_workers != NULL) {
		for (i = 0; i < b->b_threads; i++) {
			bench_tls_close(&b->b_workers[i]);
			free(b->b_workers[i].bw_out);
		}
		free(b->b_workers);
		b->b_workers = NULL;
	}
	free(b->b_raw);
	free(b->b_comp);
	free(b->b_clen);
	free(b->b_sealed);
	b->b_raw = b->b_comp = b->b_sealed = NULL;
	b->b_clen = NULL;
	crypto_wipe(b->b_key, sizeof(b->b_key));
	SSL_CTX_free(b->b_srv_ctx);
	SSL_CTX_free(b->b_cli_ctx);
	b->b_srv_ctx = b->b_cli_ctx = NULL;
}

/* The CPU model from /proc/cpuinfo, or "unknown". */
static void
bench_cpu_model(char *buf, size_t len)
{
	FILE	*fp;
	char	 line[256], *p;

	snprintf(buf, len, "unknown");
	if ((fp = fopen("/proc/cpuinfo", "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (strncmp(line, "model name", 10) != 0 ||
		    (p = strchr(line, ':')) == NULL)
			continue;
		for (p++; *p == ' ' || *p == '\t'; p++)
			;
		p[strcspn(p, "\n")] = '\0';
		snprintf(buf, len, "%s", p);
		break;
	}
	fclose(fp);
}

/* Seconds per byte of one core, summed over the stages given. */
static double
bench_chain(const struct bench_stage *st, const int *idx, int n)
{
	double	 t = 0;
	int	 i;

	for (i = 0; i < n; i++) {
		if (st[idx[i]].bs_one <= 0)
			return 0;
		t += 1 / st[idx[i]].bs_one;
	}
	return t;
}

static void
bench_print(struct bench *b, struct bench_stage *st, int nst)
{
	/* Indices into st: what each daemon does to a block. */
	static const int	 src_chain[] = { 0, 1, 4 };
	static const int	 tgt_chain[] = { 5, 3, 0 };
	char			 cpu[128];
	double			 tsrc, ttgt, worst = 0;
	int			 i, iworst = 0;

	bench_cpu_model(cpu, sizeof(cpu));
	tsrc = bench_chain(st, src_chain, 3);
	ttgt = bench_chain(st, tgt_chain, 3);
	for (i = 0; i < 3; i++)
		if (st[src_chain[i]].bs_one > 0 &&
		    1 / st[src_chain[i]].bs_one > worst) {
			worst = 1 / st[src_chain[i]].bs_one;
			iworst = src_chain[i];
		}
	if (b->b_json) {
		printf("{\"cpu\":");
		json_print_string(cpu);
		printf(",\"cores\":%d,\"threads\":%d,\"block_size\":%zu,"
		    "\"level\":%d,\"seconds\":%.2f,\"openssl\":",
		    pool_default_threads(), b->b_threads, b->b_bsize,
		    b->b_level, b->b_seconds);
		json_print_string(OpenSSL_version(OPENSSL_VERSION));
		printf(",\"zstd\":");
		json_print_string(ZSTD_versionString());
		printf(",\"tls_cipher\":");
		json_print_string(b->b_cipher);
		printf(",\"data\":{\"blocks\":%d,\"text\":%d,\"binary\":%d,"
		    "\"random\":%d,\"text_from\":", b->b_nblocks, b->b_ntext,
		    b->b_nbin, b->b_nrand);
		json_print_string(b->b_text_from);
		printf(",\"binary_from\":");
		json_print_string(b->b_bin_from);
		printf("},\"stages\":[");
		for (i = 0; i < nst; i++) {
			printf("%s{\"stage\":\"%s\",\"label\":", i ? "," : "",
			    st[i].bs_key);
			json_print_string(st[i].bs_label);
			printf(",\"one_core_mb_s\":%.1f,"
			    "\"all_workers_mb_s\":%.1f", st[i].bs_one / 1e6,
			    st[i].bs_all / 1e6);
			if (st[i].bs_ratio > 0)
				printf(",\"ratio\":%.3f", st[i].bs_ratio);
			printf("}");
		}
		printf("],\"source_per_core_mb_s\":%.1f,"
		    "\"target_per_core_mb_s\":%.1f,\"bottleneck\":\"%s\"}\n",
		    tsrc > 0 ? 1 / tsrc / 1e6 : 0.0,
		    ttgt > 0 ? 1 / ttgt / 1e6 : 0.0, st[iworst].bs_key);
		return;
	}
	printf("transporter benchmark: %s, %d cores, %d workers\n", cpu,
	    pool_default_threads(), b->b_threads);
	printf("%s, zstd %s, TLS cipher %s\n",
	    OpenSSL_version(OPENSSL_VERSION), ZSTD_versionString(),
	    b->b_cipher);
	printf("data: %d blocks of %zu KiB: %d text (%s), %d binary (%s), "
	    "%d random; %.1f s per figure\n\n", b->b_nblocks,
	    b->b_bsize >> 10, b->b_ntext, b->b_text_from, b->b_nbin,
	    b->b_bin_from, b->b_nrand, b->b_seconds);
	printf("%-34s %12s %12s %8s\n", "stage (MB/s of block data)",
	    "1 core", "all workers", "out/in");
	for (i = 0; i < nst; i++) {
		printf("%-34s %12.0f %12.0f", st[i].bs_label,
		    st[i].bs_one / 1e6, st[i].bs_all / 1e6);
		if (st[i].bs_ratio > 0)
			printf(" %8.3f", st[i].bs_ratio);
		printf("\n");
	}
	printf("\nper block on one core:\n");
	if (tsrc > 0)
		printf("  source  SHA-256 + zstd -%d + seal  %6.0f MB/s; "
		    "%s takes %.0f%% of it\n", b->b_level, 1 / tsrc / 1e6,
		    st[iworst].bs_label, 100 * worst / tsrc);
	if (ttgt > 0)
		printf("  target  open + decompress + SHA-256 %5.0f MB/s\n",
		    1 / ttgt / 1e6);
	printf("  TLS runs on each daemon's one event-loop thread: "
	    "%.0f MB/s both ends on one core\n", st[nst - 1].bs_one / 1e6);
}

static void
benchmark_usage(FILE *fp)
{
	fprintf(fp, "usage: source-transporter benchmark [--seconds N] "
	    "[--level N] [--block-size SIZE]\n"
	    "                                    [--threads N] [--json]\n"
	    "  --seconds N        time per figure (default 1)\n"
	    "  --level N          zstd level, as compression_level in "
	    "source.conf (default %d)\n"
	    "  --block-size SIZE  block size, as in source.conf (default "
	    "1M)\n"
	    "  --threads N        workers for the all-workers column "
	    "(default: one per core)\n"
	    "  --json             print the figures as one JSON object\n"
	    "Needs no configuration file and no target.\n",
	    COMPRESSION_LEVEL_DEFAULT);
}

/*
 * Measures every stage on one core and on all workers and prints the
 * table.  sc may be NULL (no configuration); when given, its level,
 * block size and workers are the defaults.  Returns the exit code.
 */
int
cmd_benchmark(struct source_conf *sc, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds",	required_argument, NULL, 's' },
		{ "level",	required_argument, NULL, 'l' },
		{ "block-size",	required_argument, NULL, 'b' },
		{ "threads",	required_argument, NULL, 't' },
		{ "json",	no_argument,	   NULL, 'j' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct bench_stage	 st[] = {
		{ "sha256", "SHA-256 (chunk id)", stage_sha256, 0, 0,
		    0, 0, 0 },
		{ "zstd_compress", "zstd compress, level N", stage_compress,
		    0, 0, 0, 0, 0 },
		{ "zstd_compress_other", "zstd compress, level M",
		    stage_compress, 0, 1, 0, 0, 0 },
		{ "zstd_decompress", "zstd decompress", stage_decompress, 0, 0,
		    0, 0, 0 },
		{ "aes_gcm_seal", "AES-256-GCM seal", stage_seal, 0, 0,
		    0, 0, 0 },
		{ "aes_gcm_open", "AES-256-GCM open", stage_open, 0, 0,
		    0, 0, 0 },
		{ "tls13_loopback", "TLS 1.3 127.0.0.1 (both ends)",
		    stage_tls, 1, 0, 0, 0, 0 },
	};
	const int		 nst = (int)(sizeof(st) / sizeof(st[0]));
	struct bench		 b;
	char			 label[64], label2[64], *end;
	uint64_t		 v;
	double			 ratio;
	int			 ch, i, rv = EXIT_ERROR;

	memset(&b, 0, sizeof(b));
	b.b_seconds = BENCH_SECONDS_DEFAULT;
	b.b_level = sc != NULL ? (int)sc->sc_compression_level :
	    COMPRESSION_LEVEL_DEFAULT;
	b.b_bsize = sc != NULL ? (size_t)sc->sc_block_size :
	    BLOCK_SIZE_DEFAULT;
	b.b_threads = sc != NULL ? (int)sc->sc_workers : 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			b.b_seconds = strtod(optarg, &end);
			if (*end != '\0' || !(b.b_seconds >= 0.05 &&
			    b.b_seconds <= 600)) {
				log_warnx("--seconds must be 0.05 to 600, "
				    "not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'l':
			if (conf_parse_uint(optarg, 1, 19, &v) == -1) {
				log_warnx("--level must be 1 to 19, not '%s'",
				    optarg);
				return EXIT_USAGE;
			}
			b.b_level = (int)v;
			break;
		case 'b':
			if (conf_parse_size(optarg, &v) == -1 ||
			    v < BLOCK_SIZE_MIN || v > BLOCK_SIZE_MAX ||
			    (v & (v - 1)) != 0) {
				log_warnx("--block-size must be a power of two "
				    "from 64K to 16M, not '%s'", optarg);
				return EXIT_USAGE;
			}
			b.b_bsize = (size_t)v;
			break;
		case 't':
			if (conf_parse_uint(optarg, 1, 64, &v) == -1) {
				log_warnx("--threads must be 1 to 64, not '%s'",
				    optarg);
				return EXIT_USAGE;
			}
			b.b_threads = (int)v;
			break;
		case 'j':
			b.b_json = 1;
			break;
		case 'h':
			benchmark_usage(stdout);
			return EXIT_OK;
		default:
			benchmark_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		benchmark_usage(stderr);
		return EXIT_USAGE;
	}
	if (b.b_threads < 1)
		b.b_threads = pool_default_threads();
	if (b.b_bsize == 0)
		b.b_bsize = BLOCK_SIZE_DEFAULT;
	st[1].bs_level = b.b_level;
	snprintf(label, sizeof(label), "zstd compress, level %d", b.b_level);
	st[1].bs_label = label;
	/* For comparison, the other level users choose between: 1 and 3. */
	st[2].bs_level = b.b_level == 1 ? 3 : 1;
	snprintf(label2, sizeof(label2), "zstd compress, level %d",
	    st[2].bs_level);
	st[2].bs_label = label2;
	if ((b.b_workers = calloc((size_t)b.b_threads,
	    sizeof(*b.b_workers))) == NULL) {
		log_warnx("benchmark: out of memory");
		goto out;
	}
	for (i = 0; i < b.b_threads; i++) {
		b.b_workers[i].bw_bench = &b;
		b.b_workers[i].bw_id = i;
		b.b_workers[i].bw_cfd = b.b_workers[i].bw_sfd = -1;
		if ((b.b_workers[i].bw_out =
		    malloc(compress_bound(b.b_bsize) + AEAD_TAG_LEN)) == NULL) {
			log_warnx("benchmark: out of memory");
			goto out;
		}
	}
	if (bench_data(&b) == -1 || bench_tls_init(&b) == -1)
		goto out;
	for (i = 0; i < nst; i++) {
		if (!b.b_json && isatty(STDERR_FILENO))
			fprintf(stderr, "measuring %s...\n", st[i].bs_label);
		if ((st[i].bs_one = bench_measure(&b, &st[i], 1,
		    &st[i].bs_ratio)) < 0 ||
		    (st[i].bs_all = bench_measure(&b, &st[i], b.b_threads,
		    &ratio)) < 0) {
			log_warnx("benchmark: %s failed", st[i].bs_label);
			goto out;
		}
	}
	bench_print(&b, st, nst);
	rv = EXIT_OK;
 out:
	bench_free(&b);
	return rv;
}
