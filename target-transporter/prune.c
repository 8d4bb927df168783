/*
 * prune.c: `target-transporter prune`, the retention of restore points.
 * It keeps the newest --keep-last points of each backup name, and those
 * made within --keep-within, and prunes the others, then removes the
 * chunks no remaining point and no resumable job names.  It runs with the daemon stopped: it takes the
 * repository's lock, so no backup can deduplicate against a chunk it is
 * removing.
 *
 * Nothing is removed unless every remaining point of the tenant was
 * read whole first: a manifest that does not verify or an index that
 * does not match means its chunks are unknown, and the tenant is left
 * as it is (exit 5).  A pruned point's manifest becomes its tombstone
 * (repo_point_prune), so the chain of its name stays whole for list
 * and both verifies.  With --dry-run it only says what it would do, and
 * needs no lock.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keys.h"
#include "target.h"

#define KEEP_LAST_MAX	1000000

struct prune {
	struct repo	*pr_repo;
	const char	*pr_tenant;	/* being pruned */
	const char	*pr_name;	/* --name, or NULL: every name */
	const char	*pr_point;	/* --point: that one alone */
	uint64_t	 pr_keep;	/* --keep-last */
	int64_t		 pr_since;	/* --keep-within: kept if made since */
	int		 pr_dry_run;
	uint8_t		*pr_ids;	/* chunk ids still named */
	size_t		 pr_nids;
	size_t		 pr_sorted;	/* the first pr_sorted: sorted, unique */
	size_t		 pr_cap;
	uint64_t	 pr_manifests;	/* files, to compare with the list */
	uint64_t	 pr_points;	/* matched --tenant and --name */
	uint64_t	 pr_pruned;
	uint64_t	 pr_kept;
	uint64_t	 pr_files;	/* chunks removed */
	uint64_t	 pr_bytes;
	int		 pr_damaged;
	int		 pr_error;
	int		 pr_refused;	/* --point is the newest */
};

/*
 * A tenant's at-rest key file, as prune read it before the sweep: the
 * keys it may drop (every data key but the newest) and which of them
 * the chunks that stay need.
 */
struct prune_keys {
	char		 pk_path[PATH_MAX];
	uint8_t		*pk_file;	/* its bytes, NULL if it has none */
	size_t		 pk_len;
	struct keychain	*pk_chain;
	uint8_t		*pk_ids;	/* sorted: struct sweep_keys */
	struct sweep_keys pk_sweep;
};

/* Sorts the ids added since the last call and drops repeats. */
static void
ids_compact(struct prune *pr)
{
	size_t	 i, n = 0;

	if (pr->pr_nids == pr->pr_sorted)
		return;
	qsort(pr->pr_ids, pr->pr_nids, CHUNK_ID_LEN, chunk_id_cmp);
	for (i = 0; i < pr->pr_nids; i++)
		if (n == 0 || memcmp(pr->pr_ids + (n - 1) * CHUNK_ID_LEN,
		    pr->pr_ids + i * CHUNK_ID_LEN, CHUNK_ID_LEN) != 0)
			memmove(pr->pr_ids + n++ * CHUNK_ID_LEN,
			    pr->pr_ids + i * CHUNK_ID_LEN, CHUNK_ID_LEN);
	pr->pr_nids = pr->pr_sorted = n;
}

/* Adds the n chunk ids at ids (zero ids name no chunk).  0, or -1. */
static int
ids_add(void *arg, const uint8_t *ids, uint64_t n)
{
	static const uint8_t	 zero[CHUNK_ID_LEN];
	struct prune		*pr = arg;
	uint8_t			*p;
	uint64_t		 i;
	size_t			 cap;

	for (i = 0; i < n; i++) {
		if (memcmp(ids + i * CHUNK_ID_LEN, zero, CHUNK_ID_LEN) == 0)
			continue;
		if (pr->pr_nids == pr->pr_cap) {
			/* Full of repeats (a point shares most of them)? */
			ids_compact(pr);
			if (pr->pr_nids > pr->pr_cap / 2 || pr->pr_cap == 0) {
				cap = pr->pr_cap == 0 ? 65536 : pr->pr_cap * 2;
				if ((p = reallocarray(pr->pr_ids, cap,
				    CHUNK_ID_LEN)) == NULL)
					return -1;
				pr->pr_ids = p;
				pr->pr_cap = cap;
			}
		}
		memcpy(pr->pr_ids + pr->pr_nids++ * CHUNK_ID_LEN,
		    ids + i * CHUNK_ID_LEN, CHUNK_ID_LEN);
	}
	return 0;
}

/* Adds every chunk id of a point that stays.  0, or -1 (said why). */
static int
prune_mark(struct prune *pr, const struct repo_point *kp)
{
	const char	*tenant = pr->pr_tenant;

	if (repo_point_scan_ids(pr->pr_repo, tenant, kp->rp_name, kp->rp_id,
	    ids_add, pr) == 0)
		return 0;
	if (errno == EBADMSG)
		pr->pr_damaged = 1;
	else
		pr->pr_error = 1;
	log_warnx("prune: tenant %s: cannot read the index of %s/%s: %s; "
	    "nothing of the tenant pruned. Run 'target-transporter verify "
	    "--tenant %s'", tenant, kp->rp_name, kp->rp_id, errno == EBADMSG ?
	    "it is damaged" : strerror(errno), tenant);
	return -1;
}

/*
 * Reads the tenant's at-rest key file, if it has one.  0, or -1 (said
 * why) if it cannot be read, or is damaged (exit 5): nothing of the
 * tenant is pruned then, since its keys are not known.
 */
static int
keys_load(struct prune *pr, struct prune_keys *pk)
{
	struct keychain	*kc;
	const WrappedKey *wk;
	char		 why[KEY_ERR_MAX];
	size_t		 i, last = SIZE_MAX, n = 0;

	memset(pk, 0, sizeof(*pk));
	if ((size_t)snprintf(pk->pk_path, sizeof(pk->pk_path),
	    "%s/tenants/%s/at-rest.keychain", repo_path(pr->pr_repo),
	    pr->pr_tenant) >= sizeof(pk->pk_path)) {
		log_warnx("prune: tenant %s: path too long", pr->pr_tenant);
		pr->pr_error = 1;
		return -1;
	}
	if (access(pk->pk_path, F_OK) == -1 && errno == ENOENT)
		return 0;
	if (keychain_read_file(pk->pk_path, &pk->pk_file, &pk->pk_len, why,
	    sizeof(why)) == -1) {
		log_warnx("prune: tenant %s: cannot read the at-rest key file: "
		    "%s; nothing of the tenant pruned", pr->pr_tenant, why);
		pr->pr_error = 1;
		return -1;
	}
	if ((pk->pk_chain = kc = keychain_unpack(pk->pk_file, pk->pk_len, why,
	    sizeof(why))) == NULL) {
		log_warnx("prune: tenant %s: the at-rest key file is damaged: "
		    "%s; nothing of the tenant pruned. Restore %s from a copy",
		    pr->pr_tenant, why, pk->pk_path);
		pr->pr_damaged = 1;
		return -1;
	}
	/* The newest data key stays: the last a backup start added. */
	for (i = 0; i < kc->kc_nkeys; i++)
		if (kc->kc_keys[i]->purpose == KEY_PURPOSE_DATA)
			last = i;
	if ((pk->pk_ids = calloc(kc->kc_nkeys + 1, KEY_ID_LEN)) == NULL ||
	    (pk->pk_sweep.sk_used = calloc(kc->kc_nkeys + 1, 1)) == NULL)
		fatal("calloc");
	for (i = 0; i < kc->kc_nkeys; i++) {
		wk = kc->kc_keys[i];
		if (wk->purpose == KEY_PURPOSE_DATA && i != last)
			memcpy(pk->pk_ids + n++ * KEY_ID_LEN, wk->key_id.data,
			    KEY_ID_LEN);
	}
	qsort(pk->pk_ids, n, KEY_ID_LEN, key_id_cmp);
	pk->pk_sweep.sk_ids = pk->pk_ids;
	pk->pk_sweep.sk_n = pk->pk_sweep.sk_left = n;
	return 0;
}

/* 1 if the sweep found no chunk that stays sealed under the key id. */
static int
keys_unused(const struct prune_keys *pk, const uint8_t *id)
{
	const uint8_t	*at;

	if ((at = bsearch(id, pk->pk_ids, pk->pk_sweep.sk_n, KEY_ID_LEN,
	    key_id_cmp)) == NULL)
		return 0;
	return !pk->pk_sweep.sk_used[(at - pk->pk_ids) / KEY_ID_LEN];
}

/*
 * The ids the file records as dropped from now on: those it recorded
 * and those dropped now, as far as at-rest points that stay list them
 * (a restore of such a point may skip them, atrest_restore_keys).
 * *out (to free()) gets *n ids.  0, or -1.
 */
static int
keys_still_listed(const struct prune_keys *pk, const struct repo_point *pts,
    const int *prune, size_t npts, uint8_t **out, size_t *n)
{
	const struct keychain	*kc = pk->pk_chain;
	const uint8_t		*id, *at;
	KeyChain		*lk;
	/* Candidates: the ids recorded, then the ids of pk_ids. */
	size_t			 ncand = kc->kc_ndropped + pk->pk_sweep.sk_n;
	uint8_t			*listed;	/* per candidate */
	size_t			 i, j;

	*out = NULL;
	*n = 0;
	if ((listed = calloc(ncand + 1, 1)) == NULL)
		return -1;
	for (i = 0; i < npts; i++) {
		if (prune[i] || pts[i].rp_mode !=
		    ENCRYPTION_MODE__ENCRYPTION_AT_REST || pts[i].rp_keys == NULL ||
		    (lk = key_chain__unpack(NULL, pts[i].rp_keys_len,
		    pts[i].rp_keys)) == NULL)
			continue;
		for (j = 0; j < lk->n_keys; j++) {
			if (lk->keys[j]->key_id.len != KEY_ID_LEN)
				continue;
			id = lk->keys[j]->key_id.data;
			if (kc->kc_ndropped > 0 && (at = bsearch(id,
			    kc->kc_dropped, kc->kc_ndropped, KEY_ID_LEN,
			    key_id_cmp)) != NULL)
				listed[(at - kc->kc_dropped) / KEY_ID_LEN] = 1;
			if (pk->pk_sweep.sk_n > 0 && (at = bsearch(id,
			    pk->pk_ids, pk->pk_sweep.sk_n, KEY_ID_LEN,
			    key_id_cmp)) != NULL)
				listed[kc->kc_ndropped +
				    (at - pk->pk_ids) / KEY_ID_LEN] = 1;
		}
		key_chain__free_unpacked(lk, NULL);
	}
	if ((*out = calloc(ncand + 1, KEY_ID_LEN)) == NULL) {
		free(listed);
		return -1;
	}
	for (i = 0; i < ncand; i++) {
		id = i < kc->kc_ndropped ? kc->kc_dropped + i * KEY_ID_LEN :
		    pk->pk_ids + (i - kc->kc_ndropped) * KEY_ID_LEN;
		if (listed[i] && (i < kc->kc_ndropped || keys_unused(pk, id)))
			memcpy(*out + (*n)++ * KEY_ID_LEN, id, KEY_ID_LEN);
	}
	free(listed);
	return 0;
}

/*
 * After the sweep: drops from the key file the data keys no chunk that
 * stays is sealed under (a chunk is sealed under the key of the job that
 * stored it, not of every point that names it), and records their ids
 * while points that stay list them.  The file is rewritten durably, and
 * only if it did not change since keys_load.
 */
static void
keys_trim(struct prune *pr, struct prune_keys *pk,
    const struct repo_point *pts, const int *prune, size_t npts)
{
	struct keychain	*kc = pk->pk_chain;
	uint8_t		*now = NULL, *out = NULL, *dropped = NULL;
	size_t		 nowlen, outlen, ndropped, i, m, data = 0;
	size_t		 drop = pk->pk_sweep.sk_left;
	char		 why[KEY_ERR_MAX];

	if (kc == NULL)
		return;
	if (pk->pk_sweep.sk_unknown > 0) {
		log_warnx("prune: tenant %s: %llu chunk(s) that stay have a "
		    "header that does not read; every at-rest key stays. Run "
		    "'target-transporter verify --tenant %s'", pr->pr_tenant,
		    (unsigned long long)pk->pk_sweep.sk_unknown,
		    pr->pr_tenant);
		return;
	}
	if (keys_still_listed(pk, pts, prune, npts, &dropped, &ndropped) == -1)
		fatal("keys_still_listed");
	if (ndropped > KEYCHAIN_KEYS_MAX) {
		/* Restores of points listing the others fail closed. */
		log_warnx("prune: tenant %s: %zu dropped keys are still listed; "
		    "the key file records %d of them", pr->pr_tenant, ndropped,
		    KEYCHAIN_KEYS_MAX);
		ndropped = KEYCHAIN_KEYS_MAX;
	}
	if (drop == 0 && (ndropped == kc->kc_ndropped && (ndropped == 0 ||
	    memcmp(dropped, kc->kc_dropped, ndropped * KEY_ID_LEN) == 0)))
		goto out;	/* nothing changes */
	for (i = 0; i < kc->kc_nkeys; i++)
		data += kc->kc_keys[i]->purpose == KEY_PURPOSE_DATA;
	if (!pr->pr_dry_run) {
		if (keychain_read_file(pk->pk_path, &now, &nowlen, why,
		    sizeof(why)) == -1) {
			log_warnx("prune: tenant %s: cannot read the at-rest "
			    "key file again: %s; its keys stay", pr->pr_tenant,
			    why);
			pr->pr_error = 1;
			goto out;
		}
		if (nowlen != pk->pk_len || memcmp(now, pk->pk_file,
		    nowlen) != 0) {
			log_warnx("prune: tenant %s: the at-rest key file "
			    "changed while prune ran; its keys stay",
			    pr->pr_tenant);
			pr->pr_error = 1;
			goto out;
		}
		for (i = m = 0; i < kc->kc_nkeys; i++)
			if (kc->kc_keys[i]->purpose == KEY_PURPOSE_DATA &&
			    keys_unused(pk, kc->kc_keys[i]->key_id.data))
				key_wrapped_free(kc->kc_keys[i]);
			else
				kc->kc_keys[m++] = kc->kc_keys[i];
		kc->kc_nkeys = m;
		if (keychain_set_dropped(kc, dropped, ndropped) == -1) {
			snprintf(why, sizeof(why), "%s", strerror(errno));
			goto fail;
		}
		if (keychain_pack(kc, &out, &outlen, why, sizeof(why)) == -1 ||
		    keychain_write_file(pk->pk_path, out, outlen, why,
		    sizeof(why)) == -1)
			goto fail;
	}
	if (drop > 0)
		printf("%s: tenant %s: %zu of %zu at-rest data key(s): no "
		    "remaining chunk is sealed under them\n", pr->pr_dry_run ?
		    "would drop" : "dropped", pr->pr_tenant, drop, data);
	goto out;
 fail:
	log_warnx("prune: tenant %s: cannot rewrite the at-rest key file: "
	    "%s; its keys stay", pr->pr_tenant, why);
	pr->pr_error = 1;
 out:
	free(dropped);
	free(out);
	free(now);
}

static void
keys_free(struct prune_keys *pk)
{
	keychain_free(pk->pk_chain);
	free(pk->pk_file);
	free(pk->pk_ids);
	free(pk->pk_sweep.sk_used);
}

static int
count_manifest_cb(void *arg, const char *id)
{
	(void)id;
	((struct prune *)arg)->pr_manifests++;
	return 0;
}

static int
count_name_cb(void *arg, const char *name)
{
	struct prune	*pr = arg;

	return repo_point_files(pr->pr_repo, pr->pr_tenant, name,
	    count_manifest_cb, pr);
}

/*
 * Chooses the points of the tenant to prune: of each name (or of
 * --name), all but the newest pr_keep and those made since pr_since;
 * or the --point alone, never the newest of its name (the next backup
 * is based on it, and its source would take its loss for a rollback).
 * repo_list sorts them by name, oldest first.  Sets prune[i] for each,
 * and *kept to how many points of the names chosen from stay.
 */
static void
prune_choose(struct prune *pr, const struct repo_point *pts, size_t n,
    int *prune, uint64_t *kept)
{
	size_t	 i, j, first, chosen = 0, group;

	*kept = 0;
	for (first = 0; first < n; first = i) {
		for (i = first; i < n && strcmp(pts[i].rp_name,
		    pts[first].rp_name) == 0; i++)
			;
		if (pr->pr_name != NULL &&
		    strcmp(pts[first].rp_name, pr->pr_name) != 0)
			continue;
		group = chosen;
		for (j = first; j < i; j++) {
			if (pr->pr_point != NULL) {
				if (strcmp(pts[j].rp_id, pr->pr_point) != 0)
					continue;
				pr->pr_points++;
				if (j == i - 1) {
					log_warnx("prune: %s/%s/%s is the newest "
					    "point of '%s' and stays; back '%s' "
					    "up again first", pr->pr_tenant,
					    pts[j].rp_name, pts[j].rp_id,
					    pts[j].rp_name, pts[j].rp_name);
					pr->pr_refused = 1;
					continue;
				}
			} else if (i - j <= pr->pr_keep ||
			    pts[j].rp_created >= pr->pr_since)
				continue;
			prune[j] = 1;
			chosen++;
		}
		if (pr->pr_point == NULL)
			pr->pr_points += i - first;
		*kept += (i - first) - (chosen - group);
	}
}

/*
 * Prunes one tenant: reads every point that stays (and every resumable
 * job), prunes the chosen points, then sweeps the chunks nothing names.
 */
static int
prune_tenant_cb(void *arg, const char *tenant)
{
	struct prune		*pr = arg;
	struct repo_point	*pts = NULL;
	struct prune_keys	 pk;
	size_t			 n = 0, i;
	uint64_t		 files, bytes, matched, kept;
	int			*prune = NULL;

	memset(&pk, 0, sizeof(pk));
	pr->pr_tenant = tenant;
	pr->pr_manifests = 0;
	pr->pr_nids = pr->pr_sorted = 0;
	if (repo_list(pr->pr_repo, tenant, NULL, &pts, &n) == -1 ||
	    (repo_names(pr->pr_repo, tenant, count_name_cb, pr) == -1 &&
	    errno != ENOENT)) {
		log_warn("prune: tenant %s: cannot list its restore points",
		    tenant);
		pr->pr_error = 1;
		goto out;
	}
	/* repo_list skips a manifest that does not verify. */
	if (pr->pr_manifests > n) {
		log_warnx("prune: tenant %s: %llu manifest(s) do not verify; "
		    "nothing of the tenant pruned. Run 'target-transporter "
		    "verify --tenant %s'", tenant,
		    (unsigned long long)(pr->pr_manifests - n), tenant);
		pr->pr_damaged = 1;
		goto out;
	}
	if (n > 0 && (prune = calloc(n, sizeof(*prune))) == NULL)
		fatal("calloc");
	matched = pr->pr_points;
	prune_choose(pr, pts, n, prune, &kept);
	if (pr->pr_points == matched || pr->pr_refused)
		goto out;	/* not a name (or point) of this tenant */
	for (i = 0; i < n; i++)
		if (!prune[i] && prune_mark(pr, &pts[i]) == -1)
			goto out;
	if (repo_journal_ids(pr->pr_repo, tenant, ids_add, pr) == -1) {
		log_warn("prune: tenant %s: cannot read its interrupted jobs",
		    tenant);
		pr->pr_error = 1;
		goto out;
	}
	ids_compact(pr);
	if (keys_load(pr, &pk) == -1)
		goto out;

	for (i = 0; i < n; i++) {
		if (!prune[i])
			continue;
		if (!pr->pr_dry_run && repo_point_prune(pr->pr_repo, tenant,
		    pts[i].rp_name, pts[i].rp_id) == -1) {
			log_warn("prune: %s/%s/%s", tenant, pts[i].rp_name,
			    pts[i].rp_id);
			pr->pr_error = 1;
			goto out;
		}
		printf("%s: %s/%s/%s (#%llu)\n", pr->pr_dry_run ?
		    "would prune" : "pruned", tenant, pts[i].rp_name,
		    pts[i].rp_id, (unsigned long long)pts[i].rp_sequence);
		pr->pr_pruned++;
	}
	pr->pr_kept += kept;
	for (i = 0; !pr->pr_dry_run && i < n; i++)
		if ((i == 0 || strcmp(pts[i].rp_name, pts[i - 1].rp_name) != 0)
		    && repo_prune_leftovers(pr->pr_repo, tenant,
		    pts[i].rp_name) == -1)
			log_warn("prune: %s/%s: leftover index", tenant,
			    pts[i].rp_name);
	/*
	 * Keys fall out of use with pruned points, and with failed or
	 * abandoned jobs (each at-rest backup start adds one).
	 */
	if (repo_chunks_sweep(pr->pr_repo, tenant, pr->pr_ids, pr->pr_nids,
	    pr->pr_dry_run, pk.pk_sweep.sk_n > 0 ? &pk.pk_sweep : NULL,
	    &files, &bytes) == -1) {
		log_warn("prune: tenant %s: removing unused chunks", tenant);
		pr->pr_error = 1;
	} else
		keys_trim(pr, &pk, pts, prune, n);
	pr->pr_files += files;
	pr->pr_bytes += bytes;
 out:
	keys_free(&pk);
	free(prune);
	repo_points_free(pts, n);
	return 0;
}

static void
prune_usage(FILE *fp)
{
	fprintf(fp, "usage: target-transporter prune [-f config | "
	    "--repository DIR] [--tenant T]\n"
	    "                                [--name NAME] [--keep-last N] "
	    "[--keep-within AGE]\n"
	    "                                [--dry-run]\n"
	    "       target-transporter prune [...] [--tenant T] --name NAME "
	    "--point ID [--dry-run]\n"
	    "  keeps the newest N restore points of each backup name (of "
	    "every tenant,\n"
	    "  or of T; of every name, or of NAME) and those younger than "
	    "AGE (30d, 12h;\n"
	    "  with AGE alone N is 1), prunes the others and removes the "
	    "chunks nothing\n"
	    "  else uses.  Stop the daemon first: prune takes the "
	    "repository's lock.\n"
	    "  --point prunes that restore point alone (not the newest of "
	    "its name).\n"
	    "  --dry-run says what it would do, and needs no lock.\n"
	    "  exit 0 done, 5 damage found (nothing of that tenant pruned), "
	    "4 nothing\n"
	    "  matched, 1 error, 2 usage\n");
}

/* `target-transporter prune ...`; returns the exit code. */
int
prune_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "repository",	required_argument, NULL, 'r' },
		{ "tenant",	required_argument, NULL, 't' },
		{ "name",	required_argument, NULL, 'n' },
		{ "keep-last",	required_argument, NULL, 'k' },
		{ "keep-within", required_argument, NULL, 'w' },
		{ "point",	required_argument, NULL, 'p' },
		{ "dry-run",	no_argument,	   NULL, 'D' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct target_conf	*tc = NULL;
	struct prune		 pr;
	const char		*conffile = NULL, *path = NULL, *tenant = NULL;
	const char		*keep = NULL, *within = NULL;
	uint64_t		 age = 0;
	char			 err[512], freed[32];
	int			 ch, rv = EXIT_USAGE;

	memset(&pr, 0, sizeof(pr));
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
			pr.pr_name = optarg;
			break;
		case 'k':
			keep = optarg;
			break;
		case 'w':
			within = optarg;
			break;
		case 'p':
			pr.pr_point = optarg;
			break;
		case 'D':
			pr.pr_dry_run = 1;
			break;
		case 'h':
			prune_usage(stdout);
			return EXIT_OK;
		default:
			prune_usage(stderr);
			return EXIT_USAGE;
		}
	}
	log_init("target-transporter", 1, 0);
	if (optind != argc || (conffile != NULL && path != NULL) ||
	    (tenant != NULL && !name_is_valid(tenant)) ||
	    (pr.pr_name != NULL && !name_is_valid(pr.pr_name))) {
		prune_usage(stderr);
		return EXIT_USAGE;
	}
	if (pr.pr_point != NULL && (pr.pr_name == NULL || keep != NULL ||
	    within != NULL)) {
		log_warnx("prune: --point ID goes with --name NAME, and without "
		    "--keep-last or --keep-within");
		return EXIT_USAGE;
	}
	if (keep == NULL && within == NULL && pr.pr_point == NULL) {
		log_warnx("prune: say what to keep: --keep-last N (the newest "
		    "N points of each name) or --keep-within AGE (e.g. 30d)");
		return EXIT_USAGE;
	}
	pr.pr_keep = 1;		/* the newest point of a name always stays */
	if (keep != NULL && conf_parse_uint(keep, 1, KEEP_LAST_MAX,
	    &pr.pr_keep) == -1) {
		log_warnx("prune: --keep-last %s: give how many restore points "
		    "of each name to keep, 1 to %d", keep, KEEP_LAST_MAX);
		return EXIT_USAGE;
	}
	if (within != NULL && (conf_parse_duration(within, &age) == -1 ||
	    age == 0 || age > (uint64_t)time(NULL))) {
		log_warnx("prune: --keep-within %s: give an age such as 30d, "
		    "12h or 90m", within);
		return EXIT_USAGE;
	}
	/* Without --keep-within no point is kept for its age. */
	pr.pr_since = within != NULL ? (int64_t)time(NULL) - (int64_t)age :
	    INT64_MAX;
	if ((path = target_conf_repository(path, conffile, &tc)) == NULL)
		return EXIT_USAGE;
	/* A repository that exists: repo_open would make a new one. */
	if ((pr.pr_repo = repo_open_readonly(path, err, sizeof(err))) !=
	    NULL && !pr.pr_dry_run) {
		repo_close(pr.pr_repo);
		pr.pr_repo = repo_open(path, err, sizeof(err));
	}
	if (pr.pr_repo == NULL) {
		log_warnx("prune: %s%s", err, strstr(err, "in use") != NULL ?
		    "; stop target-transporter first (or use --dry-run)" : "");
		rv = EXIT_ERROR;
		goto out;
	}
	if (tenant != NULL)
		prune_tenant_cb(&pr, tenant);
	else if (repo_tenants(pr.pr_repo, prune_tenant_cb, &pr) == -1 &&
	    errno != ENOENT) {
		log_warn("prune: %s/tenants", path);
		rv = EXIT_ERROR;
		goto out;
	}
	format_bytes(pr.pr_bytes, freed, sizeof(freed));
	if (!pr.pr_refused || pr.pr_pruned > 0)
		printf("prune of %s: %llu restore point(s) %s, %llu kept; %llu "
	    "unused chunk(s), %s, %s\n", path,
	    (unsigned long long)pr.pr_pruned, pr.pr_dry_run ? "to prune" :
	    "pruned", (unsigned long long)pr.pr_kept,
	    (unsigned long long)pr.pr_files, freed, pr.pr_dry_run ?
	    "to remove" : "removed");
	if (pr.pr_damaged)
		rv = EXIT_INTEGRITY;
	else if (pr.pr_error || pr.pr_refused)
		rv = EXIT_ERROR;
	else if ((tenant != NULL || pr.pr_name != NULL) && pr.pr_points == 0) {
		target_no_match(pr.pr_repo, "prune", tenant, pr.pr_name,
		    pr.pr_point);
		rv = EXIT_NOT_FOUND;
	} else
		rv = EXIT_OK;
 out:
	free(pr.pr_ids);
	repo_close(pr.pr_repo);
	target_conf_free(tc);
	return rv;
}
