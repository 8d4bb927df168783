/*
 * list.c: the list command: the restore points the target keeps for
 * this source's tenant.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "source.h"

struct list {
	struct client	*ls_client;
	const char	*ls_name;
	int		 ls_json;
	int		 ls_check_keys;	/* ask the KMS for each KEK */
	int		 ls_keys;	/* --keys: every key of each point */
	int		 ls_unavailable; /* and one was not available */
	int		 ls_accept;	/* --accept-rollback */
	struct envelope	 ls_env;
};

/* How an established backup product names the mode (README). */
const char *
mode_name(uint32_t mode)
{
	switch (mode) {
	case ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT:
		return "in-flight";
	case ENCRYPTION_MODE__ENCRYPTION_AT_REST:
		return "at-rest";
	case ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE:
		return "source-side";
	default:
		return "none";
	}
}

static void
format_time(int64_t t, char *buf, size_t len)
{
	struct tm	 tm;
	time_t		 tt = (time_t)t;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
}

/*
 * Whether the KEK a key needs can be had now (KMS or password), for a
 * disaster-recovery check; "" when not asked.
 */
static const char *
list_kek_status(struct list *ls, const KekRef *ref, char *buf, size_t len)
{
	char	 err[KEY_ERR_MAX];

	if (!ls->ls_check_keys)
		return "";
	if (envelope_check_kek(&ls->ls_env, ref, err, sizeof(err)) == 0)
		return "available";
	snprintf(buf, len, "not available: %s", err);
	ls->ls_unavailable = 1;
	return buf;
}

/*
 * The distinct KEKs the keys of a source-side point need: its keks, or
 * from a target older than ListRequest.brief, those of its keys.  *refs
 * to free(); returns how many.
 */
static size_t
list_point_keks(const PointInfo *pi, KekRef ***refs)
{
	KekRef		*ref;
	size_t		 i, n = 0;

	*refs = NULL;
	if (pi->n_keks == 0 && pi->n_keys == 0)
		return 0;
	if ((*refs = calloc(pi->n_keks + pi->n_keys, sizeof(**refs))) == NULL)
		fatal("calloc");
	for (i = 0; i < pi->n_keks + pi->n_keys; i++) {
		ref = i < pi->n_keks ? pi->keks[i] :
		    pi->keys[i - pi->n_keks]->kek;
		if (ref != NULL)
			(void)kek_refs_add(*refs, &n, pi->n_keks + pi->n_keys,
			    ref);
	}
	return n;
}

/*
 * ref's members of a JSON object: "kek_provider", "kek_id" and
 * "kek_version", with all also "kek_name" and "kms", in the order of
 * source-transporter(8).
 */
static void
kek_ref_json(const KekRef *ref, int all)
{
	printf("\"kek_provider\":\"%s\"", ref->provider ==
	    KEY_PROVIDER__KEY_PROVIDER_KMIP ? "kmip" : "password");
	if (all) {
		printf(",\"kek_name\":");
		json_print_string(ref->key_name);
	}
	printf(",\"kek_id\":");
	json_print_string(ref->key_id);
	printf(",\"kek_version\":%lld", (long long)ref->version);
	if (all) {
		printf(",\"kms\":");
		json_print_string(ref->kms);
	}
}

/* The KEKs a source-side point needs, as a JSON array. */
static void
list_keks_json(struct list *ls, const PointInfo *pi)
{
	KekRef		**refs;
	const KekRef	*ref;
	char		 st[KEY_ERR_MAX + 32];
	const char	*status;
	size_t		 i, n;

	n = list_point_keks(pi, &refs);
	printf(",\"keks\":[");
	for (i = 0; i < n; i++) {
		ref = refs[i];
		printf("%s{", i ? "," : "");
		kek_ref_json(ref, 1);
		if (ls->ls_check_keys) {
			status = list_kek_status(ls, ref, st, sizeof(st));
			printf(",\"available\":%s,\"status\":",
			    strcmp(status, "available") == 0 ? "true" :
			    "false");
			json_print_string(status);
		}
		printf("}");
	}
	printf("]");
	free(refs);
}

/* --keys: the wrapped keys of a source-side point, as a JSON array. */
static void
list_keys_json(const PointInfo *pi)
{
	const WrappedKey	*wk;
	char			 hex[2 * KEY_ID_LEN + 1];
	size_t			 i, n = 0;

	printf(",\"keys\":[");
	for (i = 0; i < pi->n_keys; i++) {
		wk = pi->keys[i];
		if (wk->key_id.len != KEY_ID_LEN || wk->kek == NULL)
			continue;
		hex_encode(wk->key_id.data, KEY_ID_LEN, hex);
		printf("%s{\"key_id\":\"%s\",\"purpose\":\"%s\",",
		    n++ ? "," : "", hex, key_purpose_name(wk->purpose));
		kek_ref_json(wk->kek, 0);
		printf("}");
	}
	printf("]");
}

/* The KEKs a source-side point needs, one line each. */
static void
list_keks_text(struct list *ls, const PointInfo *pi)
{
	KekRef		**refs;
	char		 desc[512], st[KEY_ERR_MAX + 32];
	size_t		 i, n;

	n = list_point_keks(pi, &refs);
	for (i = 0; i < n; i++) {
		kek_ref_describe(refs[i], desc, sizeof(desc));
		printf("    needs %s%s%s\n", desc, ls->ls_check_keys ? ": " :
		    "", list_kek_status(ls, refs[i], st, sizeof(st)));
	}
	free(refs);
}

/*
 * Whether pi's predecessor is gone from lr (a deleted middle point),
 * and not by a prune.
 */
static int
list_previous_missing(const ListReply *lr, const PointInfo *pi)
{
	size_t	 i;

	if (pi->previous_id[0] == '\0' || pi->previous_pruned)
		return 0;
	for (i = 0; i < lr->n_points; i++)
		if (strcmp(lr->points[i]->name, pi->name) == 0 &&
		    strcmp(lr->points[i]->point_id, pi->previous_id) == 0)
			return 0;
	return 1;
}

static void
list_print(struct list *ls, const ListReply *lr)
{
	const PointInfo	*pi;
	char		 when[32], size[32], stored[32];
	size_t		 i;

	if (ls->ls_json) {
		printf("[");
		for (i = 0; i < lr->n_points; i++) {
			pi = lr->points[i];
			format_time(pi->created, when, sizeof(when));
			printf("%s\n  {\"name\":", i ? "," : "");
			json_print_string(pi->name);
			printf(",\"point_id\":");
			json_print_string(pi->point_id);
			printf(",\"created\":\"%s\",\"disk_size\":%llu,"
			    "\"block_size\":%u,\"stored_bytes\":%llu,"
			    "\"blocks\":%llu,\"zero_blocks\":%llu,"
			    "\"encryption\":\"%s\"", when,
			    (unsigned long long)pi->disk_size, pi->block_size,
			    (unsigned long long)pi->stored_bytes,
			    (unsigned long long)pi->blocks,
			    (unsigned long long)pi->zero_blocks,
			    mode_name(pi->mode));
			printf(",\"sequence\":%llu,\"previous_id\":",
			    (unsigned long long)pi->sequence);
			json_print_string(pi->previous_id);
			printf(",\"previous_missing\":%s,"
			    "\"previous_pruned\":%s",
			    list_previous_missing(lr, pi) ? "true" : "false",
			    pi->previous_pruned ? "true" : "false");
			if (pi->n_keks > 0 || pi->n_keys > 0)
				list_keks_json(ls, pi);
			if (ls->ls_keys && pi->n_keys > 0)
				list_keys_json(pi);
			printf("}");
		}
		printf("%s]\n", lr->n_points ? "\n" : "");
		return;
	}
	if (lr->n_points == 0) {
		printf("no restore points%s%s\n", ls->ls_name ? " for " : "",
		    ls->ls_name ? ls->ls_name : "");
		return;
	}
	printf("%-20s %-26s %-20s %10s %10s  %s\n", "NAME", "POINT",
	    "CREATED", "SIZE", "STORED", "ENCRYPTION");
	for (i = 0; i < lr->n_points; i++) {
		pi = lr->points[i];
		format_time(pi->created, when, sizeof(when));
		format_bytes(pi->disk_size, size, sizeof(size));
		format_bytes(pi->stored_bytes, stored, sizeof(stored));
		if (list_previous_missing(lr, pi)) {
			if (pi->sequence > 1)
				printf("%-20s %-26s MISSING (#%llu), referenced "
				    "by the next\n", pi->name,
				    pi->previous_id,
				    (unsigned long long)pi->sequence - 1);
			else
				printf("%-20s %-26s MISSING, referenced by the "
				    "next\n", pi->name, pi->previous_id);
		}
		printf("%-20s %-26s %-20s %10s %10s  %s\n", pi->name,
		    pi->point_id, when, size, stored, mode_name(pi->mode));
		list_keks_text(ls, pi);
	}
}

static void
list_ready(struct client *cl, void *arg)
{
	struct list	*ls = arg;
	Frame		 f = FRAME__INIT;
	ListRequest	 lr = LIST_REQUEST__INIT;

	lr.name = (char *)(ls->ls_name ? ls->ls_name : "");
	lr.brief = !ls->ls_keys;
	f.msg_case = FRAME__MSG_LIST_REQUEST;
	f.list_request = &lr;
	client_send(cl, &f);
}

static void
list_frame(struct client *cl, const Frame *f, void *arg)
{
	struct list	*ls = arg;
	int		 rv;

	if (f->msg_case != FRAME__MSG_LIST_REPLY) {
		client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected "
		    "%s frame", cl->cl_addr, frame_name(f));
		return;
	}
	/*
	 * Missing middle points are warned of.  A rollback is exit 9, after
	 * the target's points (read-only: the operator picks a --point or
	 * accepts them), so that exit 0 never means this source agreed.
	 */
	rv = chain_check(cl->cl_conf, f->list_reply, ls->ls_name,
	    ls->ls_accept);
	if (rv == EXIT_ERROR) {
		client_finish(cl, rv, NULL);
		return;
	}
	list_print(ls, f->list_reply);
	if (rv == EXIT_ROLLBACK) {
		client_finish(cl, rv, NULL);
		return;
	}
	if (ls->ls_name != NULL && f->list_reply->n_points == 0)
		client_finish(cl, EXIT_NOT_FOUND, NULL);
	else if (ls->ls_unavailable)
		client_finish(cl, EXIT_KEY, "a KEK some points need for "
		    "their own copies of their keys is not available (\"not "
		    "available\" above)");
	else
		client_finish(cl, rv == EXIT_INTEGRITY ? EXIT_OK : rv, NULL);
}

static const struct client_ops list_ops = {
	.co_ready = list_ready,
	.co_frame = list_frame,
};

int
cmd_list(struct source_conf *sc, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name",	required_argument, NULL, 'n' },
		{ "json",	no_argument,	   NULL, 'j' },
		{ "check-keys",	no_argument,	   NULL, 'k' },
		{ "keys",	no_argument,	   NULL, 'K' },
		{ "accept-rollback", no_argument,  NULL, 'A' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct list	 ls;
	char		 err[KEY_ERR_MAX];
	int		 ch, rv = EXIT_USAGE;

	memset(&ls, 0, sizeof(ls));
	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			ls.ls_name = optarg;
			break;
		case 'j':
			ls.ls_json = 1;
			break;
		case 'k':
			ls.ls_check_keys = 1;
			break;
		case 'K':
			ls.ls_keys = 1;
			break;
		case 'A':
			ls.ls_accept = 1;
			break;
		case 'h':
			printf("usage: source-transporter [-f config] list "
			    "[--name NAME] [--check-keys] [--json]\n"
			    "       [--keys] [--accept-rollback]\n"
			    "  --name NAME   only the points of that backup (exit 4 "
			    "if it has none)\n"
			    "  --json        one JSON array of the points\n"
			    "  --check-keys  ask the KMS (or check the password) "
			    "whether each key\n"
			    "                a source-side point needs is "
			    "available\n"
			    "  --keys        with --json, every wrapped key each "
			    "point lists (a long\n"
			    "                chain's lists grow as its square: one "
			    "name at a time)\n"
			    "  --accept-rollback  take the target's points as "
			    "they are when it no\n"
			    "                longer has the newest one this source "
			    "committed (exit 9\n"
			    "                otherwise)\n");
			return EXIT_OK;
		default:
			fprintf(stderr, "usage: source-transporter [-f config] "
			    "list [--name NAME] [--check-keys] [--json]\n");
			return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "usage: source-transporter [-f config] list "
		    "[--name NAME] [--json]\n");
		return EXIT_USAGE;
	}
	if (ls.ls_keys && !ls.ls_json) {
		log_warnx("list: --keys goes with --json (the keys are "
		    "printed only there)");
		return EXIT_USAGE;
	}
	envelope_init(&ls.ls_env, sc);
	if (ls.ls_check_keys && envelope_load_password(&ls.ls_env, err,
	    sizeof(err)) == -1) {
		log_warnx("%s", err);
		return EXIT_KEY;
	}
	if ((ls.ls_client = client_new(sc, &list_ops, &ls)) == NULL) {
		envelope_free(&ls.ls_env);
		return EXIT_USAGE;
	}
	rv = client_run(ls.ls_client);
	client_free(ls.ls_client);
	envelope_free(&ls.ls_env);
	return rv;
}

/*
 * status: is the target reachable, who is it, and the newest restore
 * point of every backup name of this tenant.
 */
static void
status_print(struct list *ls, const ListReply *lr)
{
	struct client	*cl = ls->ls_client;
	const PointInfo	*pi, *newest;
	char		 when[32], stored[32];
	uint64_t	 total;
	size_t		 i, j, n, names = 0;

	for (i = 0; i < lr->n_points; i = j) {
		for (j = i; j < lr->n_points && strcmp(lr->points[j]->name,
		    lr->points[i]->name) == 0; j++)
			;
		names++;
	}
	if (ls->ls_json) {
		printf("{\"target\":");
		json_print_string(cl->cl_addr);
		printf(",\"software\":");
		json_print_string(cl->cl_peer_software);
		printf(",\"tls\":\"%s\",\"backups\":[",
		    SSL_get_version(cl->cl_ssl));
	} else {
		printf("target    %s (%s, %s)\n", cl->cl_addr,
		    cl->cl_peer_software, SSL_get_version(cl->cl_ssl));
		printf("backups   %zu name(s), %zu restore point(s)\n", names,
		    lr->n_points);
		if (lr->n_points > 0)
			printf("%-20s %6s  %-26s %-20s %10s  %s\n", "NAME",
			    "POINTS", "NEWEST", "CREATED", "STORED",
			    "ENCRYPTION");
	}
	n = 0;
	for (i = 0; i < lr->n_points; i = j) {
		total = 0;
		for (j = i; j < lr->n_points && strcmp(lr->points[j]->name,
		    lr->points[i]->name) == 0; j++)
			total += lr->points[j]->stored_bytes;
		newest = lr->points[j - 1];	/* sorted: newest last */
		pi = newest;
		format_time(pi->created, when, sizeof(when));
		if (ls->ls_json) {
			printf("%s{\"name\":", n++ ? "," : "");
			json_print_string(pi->name);
			printf(",\"points\":%zu,\"newest\":", j - i);
			json_print_string(pi->point_id);
			printf(",\"created\":\"%s\",\"stored_bytes\":%llu,"
			    "\"encryption\":\"%s\"}", when,
			    (unsigned long long)total, mode_name(pi->mode));
		} else {
			format_bytes(total, stored, sizeof(stored));
			printf("%-20s %6zu  %-26s %-20s %10s  %s\n", pi->name,
			    j - i, pi->point_id, when, stored,
			    mode_name(pi->mode));
		}
	}
	if (ls->ls_json)
		printf("]}\n");
}

static void
status_frame(struct client *cl, const Frame *f, void *arg)
{
	if (f->msg_case != FRAME__MSG_LIST_REPLY) {
		client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected "
		    "%s frame", cl->cl_addr, frame_name(f));
		return;
	}
	status_print(arg, f->list_reply);
	client_finish(cl, EXIT_OK, NULL);
}

static const struct client_ops status_ops = {
	.co_ready = list_ready,
	.co_frame = status_frame,
};

int
cmd_status(struct source_conf *sc, int argc, char **argv)
{
	struct list	 ls;
	int		 rv;

	memset(&ls, 0, sizeof(ls));
	if (argc == 2 && strcmp(argv[1], "--json") == 0)
		ls.ls_json = 1;
	else if (argc == 2 && strcmp(argv[1], "--help") == 0) {
		printf("usage: source-transporter [-f config] status [--json]\n"
		    "  whether the target answers, its version, and the newest\n"
		    "  restore point of each backup\n");
		return EXIT_OK;
	} else if (argc != 1) {
		fprintf(stderr, "usage: source-transporter [-f config] status "
		    "[--json]\n");
		return EXIT_USAGE;
	}
	envelope_init(&ls.ls_env, sc);
	if ((ls.ls_client = client_new(sc, &status_ops, &ls)) == NULL)
		return EXIT_USAGE;
	rv = client_run(ls.ls_client);
	client_free(ls.ls_client);
	envelope_free(&ls.ls_env);
	return rv;
}
