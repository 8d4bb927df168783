/*
 * disk-read.c: drives source-transporter's disk interface (disk.c,
 * nbd.c) from the shell, for tests/integration/nbd.sh and for the
 * NBD-versus-direct benchmark.
 *
 *   disk-read [options] SPEC OUT     copy every data extent of SPEC
 *                                    into OUT (a sparse raw image)
 *   disk-read [options] --dirty SPEC OUT
 *                                    copy only the blocks the dirty
 *                                    bitmap marks into OUT (which holds
 *                                    the previous copy)
 *   disk-read [options] --map SPEC   print the dirty bitmap's blocks
 *   disk-read [options] --bench N [--hash|--pipeline] SPEC
 *                                    read every data extent N times,
 *                                    print the best throughput; --hash
 *                                    hashes each block with SHA-256,
 *                                    --pipeline also compresses (zstd
 *                                    -3) and seals it (AES-256-GCM) as
 *                                    backup.c's workers do
 *
 * Options: --transport auto|direct|nbd, --no-fallback,
 * --allow-insecure-nbd, --dirty-bitmap NAME, --tls-cert FILE,
 * --tls-key FILE, --tls-ca FILE, --tls-psk-file FILE, --block-size N,
 * --threads N (readers, default 4).  Prints one JSON object on stdout.
 * Exit: 0 done, 1 the disk did not open, 2 usage, 3 no dirty map
 * (the reason in "error"), 4 a read or write failed.
 *
 * The Makefile links tools against libcommon only, so the disk sources
 * are compiled in here.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source.h"

#include "disk.c"
#include "nbd.c"

#define THREADS_MAX	64

struct piece {
	uint64_t	 pc_off;
	uint64_t	 pc_len;
};

struct job {
	struct disk	*jb_disk;
	struct piece	*jb_pieces;
	size_t		 jb_npieces;
	atomic_size_t	 jb_next;
	uint32_t	 jb_block;
	int		 jb_out;	/* -1: read only */
	int		 jb_hash;	/* SHA-256 each block */
	int		 jb_pipeline;	/* and zstd -3, AES-256-GCM */
	atomic_int	 jb_failed;
};

static void
usage(void)
{
	fprintf(stderr, "usage: disk-read [--transport auto|direct|nbd] "
	    "[--no-fallback] [--allow-insecure-nbd]\n"
	    "       [--dirty-bitmap NAME] [--tls-cert F --tls-key F] "
	    "[--tls-ca F] [--tls-psk-file F]\n"
	    "       [--block-size N] [--threads N]\n"
	    "       SPEC OUT | --dirty SPEC OUT | --map SPEC | "
	    "--bench N SPEC\n");
	exit(2);
}

/* Adds [off, off + len) in pieces of at most one block. */
static int
add_pieces(struct job *jb, size_t *cap, uint64_t off, uint64_t len)
{
	struct piece	*p;
	uint64_t	 n;

	while (len > 0) {
		n = jb->jb_block - off % jb->jb_block;
		if (n > len)
			n = len;
		if (jb->jb_npieces == *cap) {
			*cap = *cap ? *cap * 2 : 1024;
			if ((p = reallocarray(jb->jb_pieces, *cap,
			    sizeof(*p))) == NULL)
				return -1;
			jb->jb_pieces = p;
		}
		jb->jb_pieces[jb->jb_npieces].pc_off = off;
		jb->jb_pieces[jb->jb_npieces].pc_len = n;
		jb->jb_npieces++;
		off += n;
		len -= n;
	}
	return 0;
}

static void *
worker(void *arg)
{
	struct job	*jb = arg;
	static const uint8_t key[AEAD_KEY_LEN];
	struct piece	*p;
	uint8_t		*buf, *comp = NULL, *sealed = NULL, id[CHUNK_ID_LEN];
	uint8_t		 nonce[AEAD_NONCE_LEN], aad[AAD_MAX_LEN];
	size_t		 i, cap = compress_bound(jb->jb_block), aadlen;
	ssize_t		 w, clen;

	if ((buf = malloc(jb->jb_block)) == NULL || (jb->jb_pipeline &&
	    ((comp = malloc(cap)) == NULL || (sealed = malloc(cap +
	    AEAD_TAG_LEN)) == NULL))) {
		atomic_store(&jb->jb_failed, ENOMEM);
		goto out;
	}
	while ((i = atomic_fetch_add(&jb->jb_next, 1)) < jb->jb_npieces &&
	    atomic_load(&jb->jb_failed) == 0) {
		p = &jb->jb_pieces[i];
		if (disk_read(jb->jb_disk, buf, p->pc_len, p->pc_off) == -1) {
			fprintf(stderr, "disk-read: read %llu+%llu: %s\n",
			    (unsigned long long)p->pc_off,
			    (unsigned long long)p->pc_len, strerror(errno));
			atomic_store(&jb->jb_failed, errno);
			break;
		}
		if (jb->jb_hash || jb->jb_pipeline)
			crypto_sha256(buf, p->pc_len, id);
		/* What backup.c's workers do with a block. */
		if (jb->jb_pipeline) {
			clen = compress_block(3, buf, p->pc_len, comp, cap);
			crypto_nonce(nonce, AAD_BLOCK_TO_TARGET, i);
			aadlen = crypto_aad(aad, AAD_BLOCK_TO_TARGET, NULL, id,
			    i);
			if (clen < 0 || crypto_seal(key, nonce, aad, aadlen,
			    clen > 0 ? comp : buf, clen > 0 ? (size_t)clen :
			    p->pc_len, sealed) == -1) {
				atomic_store(&jb->jb_failed, EIO);
				break;
			}
		}
		if (jb->jb_out == -1)
			continue;
		w = pwrite(jb->jb_out, buf, p->pc_len, (off_t)p->pc_off);
		if (w != (ssize_t)p->pc_len) {
			fprintf(stderr, "disk-read: write: %s\n",
			    w == -1 ? strerror(errno) : "short write");
			atomic_store(&jb->jb_failed, EIO);
			break;
		}
	}
 out:
	free(buf);
	free(comp);
	free(sealed);
	return NULL;
}

static int
run_job(struct job *jb, int threads)
{
	pthread_t	 tids[THREADS_MAX];
	int		 i;

	atomic_store(&jb->jb_next, 0);
	for (i = 0; i < threads; i++)
		if (pthread_create(&tids[i], NULL, worker, jb) != 0) {
			fprintf(stderr, "disk-read: pthread_create failed\n");
			exit(4);
		}
	for (i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	return atomic_load(&jb->jb_failed) == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "transport",		required_argument, NULL, 't' },
		{ "no-fallback",	no_argument,	   NULL, 'F' },
		{ "allow-insecure-nbd", no_argument,	   NULL, 'I' },
		{ "dirty-bitmap",	required_argument, NULL, 'B' },
		{ "tls-cert",		required_argument, NULL, 'c' },
		{ "tls-key",		required_argument, NULL, 'k' },
		{ "tls-ca",		required_argument, NULL, 'a' },
		{ "tls-psk-file",	required_argument, NULL, 'p' },
		{ "block-size",		required_argument, NULL, 'b' },
		{ "threads",		required_argument, NULL, 'T' },
		{ "dirty",		no_argument,	   NULL, 'd' },
		{ "map",		no_argument,	   NULL, 'm' },
		{ "bench",		required_argument, NULL, 'n' },
		{ "hash",		no_argument,	   NULL, 'H' },
		{ "pipeline",		no_argument,	   NULL, 'P' },
		{ NULL, 0, NULL, 0 }
	};
	struct disk_opts opts;
	struct job	 jb;
	struct disk	*dk;
	uint64_t	 start, end, off, b, nblocks, t0, best = 0, dt;
	uint64_t	 extents = 0, data = 0;
	uint8_t		*map = NULL;
	size_t		 cap = 0;
	char		 why[512];
	int		 ch, rv, threads = 4, dirty = 0, showmap = 0;
	int		 bench = 0;
	int		 i, first;

	memset(&opts, 0, sizeof(opts));
	memset(&jb, 0, sizeof(jb));
	jb.jb_block = 1u << 20;
	jb.jb_out = -1;
	log_init("disk-read", 1, getenv("DISK_READ_DEBUG") != NULL);
	while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 't':
			if (strcmp(optarg, "auto") == 0)
				opts.do_transport = DISK_TRANSPORT_AUTO;
			else if (strcmp(optarg, "direct") == 0)
				opts.do_transport = DISK_TRANSPORT_DIRECT;
			else if (strcmp(optarg, "nbd") == 0)
				opts.do_transport = DISK_TRANSPORT_NBD;
			else
				usage();
			break;
		case 'F':
			opts.do_no_fallback = 1;
			break;
		case 'I':
			opts.do_allow_insecure_nbd = 1;
			break;
		case 'B':
			opts.do_dirty_bitmap = optarg;
			break;
		case 'c':
			opts.do_tls_cert = optarg;
			break;
		case 'k':
			opts.do_tls_key = optarg;
			break;
		case 'a':
			opts.do_tls_ca = optarg;
			break;
		case 'p':
			opts.do_tls_psk_file = optarg;
			break;
		case 'b':
			jb.jb_block = (uint32_t)strtoul(optarg, NULL, 0);
			if (jb.jb_block == 0 || jb.jb_block > (64u << 20))
				usage();
			break;
		case 'T':
			threads = atoi(optarg);
			if (threads < 1 || threads > THREADS_MAX)
				usage();
			break;
		case 'd':
			dirty = 1;
			break;
		case 'm':
			showmap = 1;
			break;
		case 'n':
			if ((bench = atoi(optarg)) < 1)
				usage();
			break;
		case 'H':
			jb.jb_hash = 1;
			break;
		case 'P':
			jb.jb_pipeline = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc != (showmap || bench ? 1 : 2) || dirty + showmap +
	    (bench > 0) > 1)
		usage();

	if ((dk = disk_open(argv[0], &opts)) == NULL)
		return 1;
	jb.jb_disk = dk;
	nblocks = (disk_size(dk) + jb.jb_block - 1) / jb.jb_block;

	if (dirty || showmap) {
		if (disk_dirty_map(dk, jb.jb_block, &map, why,
		    sizeof(why)) == -1) {
			printf("{\"transport\":\"%s\",\"error\":\"%s\"}\n",
			    disk_transport_name(dk), why);
			disk_close(dk);
			return 3;
		}
	}
	if (showmap) {
		printf("{\"transport\":\"%s\",\"blocks\":%llu,\"dirty\":[",
		    disk_transport_name(dk), (unsigned long long)nblocks);
		for (first = 1, b = 0; b < nblocks; b++)
			if (map[b / 8] & (1u << (b % 8))) {
				printf("%s%llu", first ? "" : ",",
				    (unsigned long long)b);
				first = 0;
			}
		printf("]}\n");
		free(map);
		disk_close(dk);
		return 0;
	}

	t0 = now_ms();
	if (dirty) {
		for (b = 0; b < nblocks; b++) {
			if (!(map[b / 8] & (1u << (b % 8))))
				continue;
			off = b * jb.jb_block;
			end = off + jb.jb_block > disk_size(dk) ?
			    disk_size(dk) : off + jb.jb_block;
			extents++;
			data += end - off;
			if (add_pieces(&jb, &cap, off, end - off) == -1)
				goto nomem;
		}
	} else {
		for (off = 0; (rv = disk_next_data(dk, off, &start,
		    &end)) == 0; off = end) {
			if (start < off || end <= start ||
			    end > disk_size(dk)) {
				fprintf(stderr, "disk-read: bad extent "
				    "[%llu, %llu) after %llu\n",
				    (unsigned long long)start,
				    (unsigned long long)end,
				    (unsigned long long)off);
				goto fail;
			}
			extents++;
			data += end - start;
			if (add_pieces(&jb, &cap, start, end - start) == -1)
				goto nomem;
		}
		if (rv == -1) {
			fprintf(stderr, "disk-read: extents: %s\n",
			    strerror(errno));
			goto fail;
		}
	}
	dt = now_ms() - t0;	/* time to learn the extents */

	if (bench) {
		for (i = 0; i < bench; i++) {
			t0 = now_ms();
			if (run_job(&jb, threads) == -1)
				goto fail;
			dt = now_ms() - t0;
			if (dt == 0)
				dt = 1;
			if (best == 0 || dt < best)
				best = dt;
		}
		printf("{\"transport\":\"%s\",\"size\":%llu,\"data\":%llu,"
		    "\"threads\":%d,\"block\":%u,\"work\":\"%s\",\"runs\":%d,"
		    "\"best_ms\":%llu,\"mib_per_s\":%.0f,"
		    "\"bytes_read\":%llu}\n",
		    disk_transport_name(dk), (unsigned long long)disk_size(dk),
		    (unsigned long long)data, threads, jb.jb_block,
		    jb.jb_pipeline ? "pipeline" : jb.jb_hash ? "hash" : "read",
		    bench,
		    (unsigned long long)best,
		    (double)data / (1 << 20) / ((double)best / 1000),
		    (unsigned long long)disk_bytes_read(dk));
		disk_close(dk);
		return 0;
	}

	if ((jb.jb_out = open(argv[1], O_WRONLY | O_CREAT | O_CLOEXEC |
	    (dirty ? 0 : O_TRUNC), 0644)) == -1 ||
	    ftruncate(jb.jb_out, (off_t)disk_size(dk)) == -1) {
		fprintf(stderr, "disk-read: %s: %s\n", argv[1],
		    strerror(errno));
		goto fail;
	}
	t0 = now_ms();
	rv = run_job(&jb, threads);
	if (close(jb.jb_out) == -1)
		rv = -1;
	if (rv == -1)
		goto fail;
	printf("{\"transport\":\"%s\",\"size\":%llu,\"extents\":%llu,"
	    "\"data\":%llu,\"bytes_read\":%llu,\"extent_ms\":%llu,"
	    "\"read_ms\":%llu}\n", disk_transport_name(dk),
	    (unsigned long long)disk_size(dk), (unsigned long long)extents,
	    (unsigned long long)data, (unsigned long long)disk_bytes_read(dk),
	    (unsigned long long)dt, (unsigned long long)(now_ms() - t0));
	free(map);
	free(jb.jb_pieces);
	disk_close(dk);
	return 0;
 nomem:
	fprintf(stderr, "disk-read: out of memory\n");
 fail:
	free(map);
	free(jb.jb_pieces);
	disk_close(dk);
	return 4;
}
