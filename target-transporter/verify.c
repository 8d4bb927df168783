/*
 * verify.c: `target-transporter verify`, an offline check of the
 * repository that needs no network and no key.  It reads the files
 * directly, read-only and without the repository's lock, so it is safe
 * while the daemon runs:
 *
 *  - each manifest's own checksum and fields, each index against the
 *    digest its manifest records;
 *  - every chunk a point references: present, a sound header, and its
 *    stored payload against the SHA-256 in that header (this covers
 *    source-side and at-rest chunks without their keys);
 *  - a chunk stored unsealed (in-flight mode): decompressed, its
 *    SHA-256 against its chunk id, so a chunk moved under another id is
 *    found; a sealed one: its length against the block's and its key id
 *    against the keys the point records, so a chunk of another tenant
 *    or chain is found;
 *  - the chain of each name: a point whose predecessor is gone (a
 *    deleted middle point; one pruned left the manifest it was chained
 *    to as its tombstone), a gap or a repeat in the sequence, a
 *    predecessor whose manifest is not the one it was chained to.
 *
 * One line per damage naming the tenant, point, block and byte offset;
 * a summary line; exit 0 clean, 5 damage.
 */
#include <errno.h>
#include <getopt.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "target.h"

/* What one chunk of the tenant was found to be; checked once. */
struct vchunk {
	uint8_t		 vc_id[CHUNK_ID_LEN];
	int		 vc_state;	/* VC_* */
	uint32_t	 vc_flags;
	uint32_t	 vc_raw_len;
	uint8_t		 vc_key_id[KEY_ID_LEN];	/* sealed chunks */
	char		*vc_why;	/* VC_BAD */
};
#define VC_OK		0
#define VC_ABSENT	1
#define VC_BAD		2	/* header or stored digest */
#define VC_WRONG_ID	3	/* unsealed, holds another block */

/* One point of the name being checked. */
struct vpoint {
	char			 vp_id[64];
	int			 vp_manifest_ok;
	struct repo_point	 vp_point;
};

struct verify {
	struct repo	*v_repo;
	const char	*v_tenant;	/* being checked */
	const char	*v_name;
	const char	*v_only_point;	/* --point */
	const char	*v_only_name;	/* --name */
	void		*v_chunks;	/* of v_tenant (tsearch) */
	struct vpoint	*v_points;	/* of v_name */
	size_t		 v_npoints;
	size_t		 v_cap;
	uint64_t	 v_tenants;
	uint64_t	 v_names;
	uint64_t	 v_seen;	/* points found */
	uint64_t	 v_checked;	/* points whose blocks were read */
	uint64_t	 v_blocks;
	uint64_t	 v_chunks_read;
	uint64_t	 v_damaged;	/* block references */
	uint64_t	 v_bad_points;	/* manifests and indexes */
	uint64_t	 v_missing;	/* middle points gone */
	uint64_t	 v_chain;	/* other chain faults */
	int		 v_error;	/* could not read something */
	int		 v_found;	/* the --point asked for */
};

static void
vchunk_free(void *p)
{
	struct vchunk	*vc = p;

	free(vc->vc_why);
	free(vc);
}

static int
is_zero_id(const uint8_t *id)
{
	static const uint8_t	 zero[CHUNK_ID_LEN];

	return memcmp(id, zero, CHUNK_ID_LEN) == 0;
}

/* Reads and judges one chunk on its own (not yet against a block). */
static struct vchunk *
vchunk_check(struct verify *v, const uint8_t *id)
{
	struct repo_chunk	 c;
	struct vchunk		*vc, **found;
	uint8_t			*raw = NULL, sum[CHUNK_ID_LEN];
	char			 why[256];

	if ((found = tfind(id, &v->v_chunks, chunk_id_cmp)) != NULL)
		return *found;
	if ((vc = calloc(1, sizeof(*vc))) == NULL)
		fatal("calloc");
	memcpy(vc->vc_id, id, CHUNK_ID_LEN);
	v->v_chunks_read++;
	if (repo_chunk_inspect(v->v_repo, v->v_tenant, id, &c, why,
	    sizeof(why)) == -1) {
		if (errno == ENOENT)
			vc->vc_state = VC_ABSENT;
		else {
			vc->vc_state = VC_BAD;
			if (errno != EBADMSG)
				snprintf(why, sizeof(why), "unreadable: %s",
				    strerror(errno));
			if ((vc->vc_why = strdup(why)) == NULL)
				fatal("strdup");
		}
		goto done;
	}
	vc->vc_flags = c.rc_flags;
	vc->vc_raw_len = c.rc_raw_len;
	if (c.rc_flags & CHUNK_ENCRYPTED) {
		/* key id | nonce | AES-GCM: the key id is in the clear. */
		if (c.rc_len < SEALED_OVERHEAD) {
			vc->vc_state = VC_BAD;
			if ((vc->vc_why = strdup("sealed payload shorter than "
			    "its key id, nonce and tag")) == NULL)
				fatal("strdup");
		} else
			memcpy(vc->vc_key_id, c.rc_data, KEY_ID_LEN);
	} else {
		if (c.rc_flags & CHUNK_COMPRESSED) {
			if ((raw = malloc(c.rc_raw_len)) == NULL)
				fatal("malloc");
			if (decompress_block(c.rc_data, c.rc_len, raw,
			    c.rc_raw_len) == -1) {
				vc->vc_state = VC_BAD;
				snprintf(why, sizeof(why), "payload (bytes "
				    "48-%zu) does not decompress to %u bytes",
				    47 + c.rc_len, c.rc_raw_len);
				if ((vc->vc_why = strdup(why)) == NULL)
					fatal("strdup");
				goto clear;
			}
			crypto_sha256(raw, c.rc_raw_len, sum);
		} else
			crypto_sha256(c.rc_data, c.rc_len, sum);
		if (memcmp(sum, id, CHUNK_ID_LEN) != 0)
			vc->vc_state = VC_WRONG_ID;
	}
 clear:
	free(raw);
	repo_chunk_clear(&c);
 done:
	if (tsearch(vc, &v->v_chunks, chunk_id_cmp) == NULL)
		fatal("tsearch");
	return vc;
}

static int
point_has_key(const KeyChain *kc, const uint8_t *key_id)
{
	size_t	 i;

	for (i = 0; kc != NULL && i < kc->n_keys; i++)
		if (kc->keys[i]->key_id.len == KEY_ID_LEN &&
		    memcmp(kc->keys[i]->key_id.data, key_id, KEY_ID_LEN) == 0)
			return 1;
	return 0;
}

static void
point_label(const struct verify *v, const struct repo_point *p, char *buf,
    size_t len)
{
	if (p->rp_sequence > 0)
		snprintf(buf, len, "%s/%s/%s (#%llu)", v->v_tenant, p->rp_name,
		    p->rp_id, (unsigned long long)p->rp_sequence);
	else
		snprintf(buf, len, "%s/%s/%s", v->v_tenant, p->rp_name,
		    p->rp_id);
}

/*
 * Every block of p against the chunk it references.  index_bad: the
 * index failed its digest, so a block whose chunk is absent points at
 * the damaged entry (named by its bytes in the .index file).
 */
static void
verify_blocks(struct verify *v, struct repo_point *p, int index_bad)
{
	const struct vchunk	*vc;
	KeyChain		*kc = NULL;
	const uint8_t		*ids = NULL, *id;
	char			 label[256], hex[2 * CHUNK_ID_LEN + 1];
	char			 khex[2 * KEY_ID_LEN + 1], why[512];
	uint64_t		 i, left, bad = 0;
	uint32_t		 want;
	int			 sealed_mode;

	sealed_mode = p->rp_mode == ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE ||
	    p->rp_mode == ENCRYPTION_MODE__ENCRYPTION_AT_REST;
	if (sealed_mode && p->rp_keys != NULL &&
	    (kc = key_chain__unpack(NULL, p->rp_keys_len, p->rp_keys)) ==
	    NULL) {
		point_label(v, p, label, sizeof(label));
		printf("damaged: %s: its manifest's key list does not decode\n",
		    label);
		v->v_bad_points++;
	}
	point_label(v, p, label, sizeof(label));
	v->v_checked++;
	for (i = 0; i < p->rp_blocks; i++) {
		/* A window of the index at a time (whole if it is damaged). */
		if (i % INDEX_WINDOW_IDS == 0 && (ids = repo_point_ids(p, i,
		    p->rp_blocks - i < INDEX_WINDOW_IDS ? p->rp_blocks - i :
		    INDEX_WINDOW_IDS)) == NULL) {
			if (errno == EBADMSG) {
				printf("damaged: %s: its index changed on disk "
				    "while it was verified (at block %llu)\n",
				    label, (unsigned long long)i);
				v->v_bad_points++;
			} else {
				printf("error: %s: cannot read its index at "
				    "block %llu: %s\n", label,
				    (unsigned long long)i, strerror(errno));
				v->v_error = 1;
			}
			break;
		}
		id = ids + i % INDEX_WINDOW_IDS * CHUNK_ID_LEN;
		if (is_zero_id(id))
			continue;
		v->v_blocks++;
		left = p->rp_disk_size - i * p->rp_block_size;
		want = left < p->rp_block_size ? (uint32_t)left :
		    p->rp_block_size;
		vc = vchunk_check(v, id);
		why[0] = '\0';
		switch (vc->vc_state) {
		case VC_ABSENT:
			if (index_bad)	/* after its 20-byte header */
				snprintf(why, sizeof(why), "is missing: the "
				    "index entry (bytes %llu-%llu of %s.index) "
				    "is damaged",
				    (unsigned long long)(20 + i * CHUNK_ID_LEN),
				    (unsigned long long)(19 + (i + 1) *
				    CHUNK_ID_LEN), p->rp_id);
			else
				snprintf(why, sizeof(why), "is missing");
			break;
		case VC_BAD:
			snprintf(why, sizeof(why), "%s", vc->vc_why);
			break;
		case VC_WRONG_ID:
			snprintf(why, sizeof(why), "does not hold the block "
			    "its id names (a chunk moved or swapped under "
			    "this id)");
			break;
		default:
			if (vc->vc_raw_len != want)
				snprintf(why, sizeof(why), "holds %u bytes, "
				    "the block %u (a chunk moved or swapped "
				    "under this id)", vc->vc_raw_len, want);
			else if (!(vc->vc_flags & CHUNK_ENCRYPTED) &&
			    p->rp_mode ==
			    ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE)
				snprintf(why, sizeof(why), "is stored "
				    "unsealed in a source-side point");
			else if ((vc->vc_flags & CHUNK_ENCRYPTED) &&
			    kc != NULL && !point_has_key(kc, vc->vc_key_id)) {
				hex_encode(vc->vc_key_id, KEY_ID_LEN, khex);
				khex[2 * KEY_ID_LEN] = '\0';
				snprintf(why, sizeof(why), "is sealed under key "
				    "%s, which this point does not record (a "
				    "chunk of another tenant or chain)", khex);
			}
			break;
		}
		if (why[0] == '\0')
			continue;
		hex_encode(id, CHUNK_ID_LEN, hex);
		hex[2 * CHUNK_ID_LEN] = '\0';
		printf("damaged: %s block %llu (offset %llu): chunk "
		    "tenants/%s/chunks/%.2s/%s %s\n", label,
		    (unsigned long long)i,
		    (unsigned long long)i * p->rp_block_size, v->v_tenant,
		    hex, hex, why);
		bad++;
	}
	v->v_damaged += bad;
	if (kc != NULL)
		key_chain__free_unpacked(kc, NULL);
}

static int
verify_point_cb(void *arg, const char *id)
{
	struct verify	*v = arg;
	struct vpoint	*np;
	size_t		 cap;

	if (v->v_npoints == v->v_cap) {
		cap = v->v_cap == 0 ? 16 : v->v_cap * 2;
		if ((np = reallocarray(v->v_points, cap, sizeof(*np))) == NULL)
			fatal("reallocarray");
		v->v_points = np;
		v->v_cap = cap;
	}
	memset(&v->v_points[v->v_npoints], 0, sizeof(*v->v_points));
	snprintf(v->v_points[v->v_npoints].vp_id,
	    sizeof(v->v_points->vp_id), "%s", id);
	v->v_npoints++;
	return 0;
}

static int
vpoint_cmp(const void *a, const void *b)
{
	const struct vpoint	*pa = a, *pb = b;

	return strcmp(pa->vp_id, pb->vp_id);
}

static struct vpoint *
vpoint_find(struct verify *v, const char *id)
{
	struct vpoint	 key;

	snprintf(key.vp_id, sizeof(key.vp_id), "%s", id);
	return bsearch(&key, v->v_points, v->v_npoints, sizeof(key),
	    vpoint_cmp);
}

/*
 * The chain of the name: each point's predecessor must be there, one
 * sequence number lower, with the manifest it was chained to.
 */
static void
verify_chain(struct verify *v)
{
	const struct repo_point	*p, *q;
	struct vpoint		*prev;
	char			 label[256], plabel[256];
	size_t			 i, j;

	for (i = 0; i < v->v_npoints; i++) {
		if (!v->v_points[i].vp_manifest_ok)
			continue;
		p = &v->v_points[i].vp_point;
		point_label(v, p, label, sizeof(label));
		for (j = i + 1; j < v->v_npoints; j++) {
			q = &v->v_points[j].vp_point;
			if (v->v_points[j].vp_manifest_ok &&
			    p->rp_sequence > 0 &&
			    q->rp_sequence == p->rp_sequence) {
				printf("damaged: %s and %s/%s share sequence "
				    "number #%llu\n", label, q->rp_name,
				    q->rp_id,
				    (unsigned long long)p->rp_sequence);
				v->v_chain++;
			}
		}
		if (p->rp_previous_id[0] == '\0')
			continue;
		if ((prev = vpoint_find(v, p->rp_previous_id)) == NULL) {
			if (repo_point_pruned(v->v_repo, v->v_tenant, p))
				continue;	/* its tombstone is the link */
			if (p->rp_sequence > 1)
				printf("missing: restore point %s/%s/%s (#%llu) "
				    "is missing; referenced by %s\n",
				    v->v_tenant, p->rp_name,
				    p->rp_previous_id,
				    (unsigned long long)p->rp_sequence - 1,
				    label);
			else
				printf("missing: restore point %s/%s/%s is "
				    "missing; referenced by %s\n", v->v_tenant,
				    p->rp_name, p->rp_previous_id, label);
			v->v_missing++;
			continue;
		}
		if (!prev->vp_manifest_ok)
			continue;	/* its manifest is reported already */
		point_label(v, &prev->vp_point, plabel, sizeof(plabel));
		if (memcmp(prev->vp_point.rp_digest, p->rp_previous_digest,
		    CHUNK_ID_LEN) != 0) {
			printf("damaged: the manifest of %s is not the one %s "
			    "was chained to (replaced)\n", plabel, label);
			v->v_chain++;
		} else if (prev->vp_point.rp_sequence > 0 &&
		    prev->vp_point.rp_sequence + 1 != p->rp_sequence) {
			printf("damaged: %s follows %s: a gap in the sequence\n",
			    label, plabel);
			v->v_chain++;
		}
	}
}

static int
verify_name_cb(void *arg, const char *name)
{
	struct verify	*v = arg;
	struct vpoint	*vp;
	const char	*why;
	size_t		 i;

	v->v_name = name;
	v->v_npoints = 0;
	if (repo_point_files(v->v_repo, v->v_tenant, name, verify_point_cb,
	    v) == -1 && errno != ENOENT && errno != ENOTDIR) {
		printf("error: %s/%s: cannot list its points: %s\n",
		    v->v_tenant, name, strerror(errno));
		v->v_error = 1;
		return 0;
	}
	v->v_seen += v->v_npoints;
	if (v->v_npoints > 0)
		v->v_names++;
	if (v->v_npoints > 0)
		qsort(v->v_points, v->v_npoints, sizeof(*v->v_points),
		    vpoint_cmp);
	for (i = 0; i < v->v_npoints; i++) {
		vp = &v->v_points[i];
		if (repo_point_inspect(v->v_repo, v->v_tenant, name, vp->vp_id,
		    &vp->vp_point, &why) == -1) {
			vp->vp_manifest_ok = vp->vp_point.rp_id[0] != '\0';
			if (errno == EBADMSG) {
				printf("damaged: %s/%s/%s: %s\n", v->v_tenant,
				    name, vp->vp_id, why != NULL ? why :
				    "corrupt");
				v->v_bad_points++;
				/* Walk what is there to name the block. */
				if (vp->vp_point.rp_index != NULL &&
				    (v->v_only_point == NULL || strcmp(
				    vp->vp_id, v->v_only_point) == 0))
					verify_blocks(v, &vp->vp_point, 1);
			} else if (errno != ENOENT) {
				printf("error: %s/%s/%s: %s\n", v->v_tenant,
				    name, vp->vp_id, strerror(errno));
				v->v_error = 1;
			}
			if (v->v_only_point != NULL &&
			    strcmp(vp->vp_id, v->v_only_point) == 0)
				v->v_found = 1;
			continue;
		}
		vp->vp_manifest_ok = 1;
		if (v->v_only_point != NULL &&
		    strcmp(vp->vp_id, v->v_only_point) != 0)
			continue;
		v->v_found = 1;
		verify_blocks(v, &vp->vp_point, 0);
		/* The chain needs the rest. */
		repo_point_drop_index(&vp->vp_point);
	}
	verify_chain(v);
	for (i = 0; i < v->v_npoints; i++)
		repo_point_clear(&v->v_points[i].vp_point);
	return 0;
}

static int
verify_tenant_cb(void *arg, const char *tenant)
{
	struct verify	*v = arg;

	v->v_tenant = tenant;
	v->v_tenants++;
	if (v->v_only_name != NULL)
		verify_name_cb(v, v->v_only_name);
	else if (repo_names(v->v_repo, tenant, verify_name_cb, v) == -1 &&
	    errno != ENOENT) {
		printf("error: tenant %s: cannot list its backups: %s\n",
		    tenant, strerror(errno));
		v->v_error = 1;
	}
	tdestroy(v->v_chunks, vchunk_free);
	v->v_chunks = NULL;
	return 0;
}

static void
verify_usage(FILE *fp)
{
	fprintf(fp, "usage: target-transporter verify [-f config | "
	    "--repository DIR] [--tenant T]\n"
	    "                                 [--name NAME [--point ID]]\n"
	    "  checks the repository offline, with no key: manifests, "
	    "indexes, every\n"
	    "  referenced chunk and the chain of each name; safe while the "
	    "daemon runs.\n"
	    "  exit 0 intact, 5 damage found, 4 nothing matched, 2 usage\n");
}

/*
 * verify and prune: says that nothing matched their --tenant, --name and
 * --point (any may be NULL), and whether the point was pruned.
 */
void
target_no_match(struct repo *r, const char *cmd, const char *tenant,
    const char *name, const char *point)
{
	log_warnx("%s: no restore point of %s%s%s%s%s in %s%s; the names are "
	    "the directories under tenants/TENANT/points", cmd,
	    tenant != NULL ? "tenant " : "every tenant", tenant != NULL ?
	    tenant : "", name != NULL ? " named " : "", name != NULL ? name :
	    "", point != NULL ? " with that id" : "", repo_path(r),
	    tenant != NULL && name != NULL && point != NULL &&
	    repo_point_was_pruned(r, tenant, name, point) ?
	    " (it was pruned)" : "");
}

/* `target-transporter verify ...`; returns the exit code. */
int
verify_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repository",	required_argument, NULL, 'r' },
		{ "tenant",	required_argument, NULL, 't' },
		{ "name",	required_argument, NULL, 'n' },
		{ "point",	required_argument, NULL, 'p' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct target_conf	*tc = NULL;
	struct verify		 v;
	const char		*conffile = NULL, *path = NULL, *tenant = NULL;
	char			 err[512];
	uint64_t		 faults;
	int			 ch, nothing, rv = EXIT_USAGE;

	memset(&v, 0, sizeof(v));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'f':
			conffile = optarg;
			break;
		case 'r':
			path = optarg;
			break;
		case 't':
			tenant = optarg;
			break;
		case 'n':
			v.v_only_name = optarg;
			break;
		case 'p':
			v.v_only_point = optarg;
			break;
		case 'h':
			verify_usage(stdout);
			return EXIT_OK;
		default:
			verify_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc || (conffile != NULL && path != NULL) ||
	    (v.v_only_point != NULL && v.v_only_name == NULL) ||
	    (tenant != NULL && !name_is_valid(tenant)) ||
	    (v.v_only_name != NULL && !name_is_valid(v.v_only_name))) {
		verify_usage(stderr);
		return EXIT_USAGE;
	}
	log_init("target-transporter", 1, 0);
	if ((path = target_conf_repository(path, conffile, &tc)) == NULL)
		return EXIT_USAGE;
	if ((v.v_repo = repo_open_readonly(path, err, sizeof(err))) == NULL) {
		log_warnx("%s", err);
		rv = EXIT_ERROR;
		goto out;
	}
	if (tenant != NULL)
		verify_tenant_cb(&v, tenant);
	else if (repo_tenants(v.v_repo, verify_tenant_cb, &v) == -1 &&
	    errno != ENOENT) {
		log_warn("%s/tenants", path);
		rv = EXIT_ERROR;
		goto out;
	}
	faults = v.v_damaged + v.v_bad_points + v.v_missing + v.v_chain;
	nothing = (v.v_only_point != NULL && !v.v_found) ||
	    ((v.v_only_name != NULL || tenant != NULL) && v.v_seen == 0);
	printf("verify of %s: %llu point(s) read in %llu backup name(s) of "
	    "%llu tenant(s), %llu block(s), %llu chunk(s): ", path,
	    (unsigned long long)v.v_checked, (unsigned long long)v.v_names,
	    (unsigned long long)v.v_tenants, (unsigned long long)v.v_blocks,
	    (unsigned long long)v.v_chunks_read);
	if (faults == 0 && !v.v_error)
		printf("%s\n", nothing ? "nothing matched" : "intact");
	else
		printf("%llu damaged block(s), %llu damaged manifest(s) or "
		    "index(es), %llu missing point(s), %llu chain fault(s)%s\n",
		    (unsigned long long)v.v_damaged,
		    (unsigned long long)v.v_bad_points,
		    (unsigned long long)v.v_missing,
		    (unsigned long long)v.v_chain,
		    v.v_error ? ", and read errors (above)" : "");
	if (faults > 0)
		rv = EXIT_INTEGRITY;
	else if (v.v_error)
		rv = EXIT_ERROR;
	else if (nothing) {
		target_no_match(v.v_repo, "verify", tenant, v.v_only_name,
		    v.v_only_point);
		rv = EXIT_NOT_FOUND;
	} else
		rv = EXIT_OK;
 out:
	free(v.v_points);
	repo_close(v.v_repo);
	target_conf_free(tc);
	return rv;
}
