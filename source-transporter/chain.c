/*
 * chain.c: the restore points of a name as a chain, checked from the
 * source.  The target numbers the points of a name 1, 2, ... and each
 * names the one before it, so a deleted middle point is named by its
 * successor.  What the target cannot know, a repository put back to an
 * older copy, the source can: it remembers the newest point it
 * committed of each name (state.c) and refuses to go on (exit 9,
 * EXIT_ROLLBACK) when the target no longer has it, unless told
 * --accept-rollback.  backup, list and verify all check; verify --all
 * reads every point of a name, or of every name.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source.h"

/* A point id as the target makes them; anything else is not stored. */
static int
chain_id_ok(const char *id)
{
	size_t	 i, len = strlen(id);

	if (len == 0 || len >= sizeof(((struct state_entry *)0)->se_id))
		return 0;
	for (i = 0; i < len; i++)
		if (!((id[i] >= '0' && id[i] <= '9') ||
		    (id[i] >= 'a' && id[i] <= 'z') ||
		    (id[i] >= 'A' && id[i] <= 'Z') || id[i] == '-'))
			return 0;
	return 1;
}

/* The newest point of name in lr (the target sorts: newest last). */
static const PointInfo *
chain_newest(const ListReply *lr, const char *name)
{
	const PointInfo	*newest = NULL;
	size_t		 i;

	for (i = 0; i < lr->n_points; i++)
		if (strcmp(lr->points[i]->name, name) == 0)
			newest = lr->points[i];
	return newest;
}

static const PointInfo *
chain_find(const ListReply *lr, const char *name, const char *id)
{
	size_t	 i;

	for (i = 0; i < lr->n_points; i++)
		if (strcmp(lr->points[i]->name, name) == 0 &&
		    strcmp(lr->points[i]->point_id, id) == 0)
			return lr->points[i];
	return NULL;
}

/*
 * Warns of every point whose predecessor is gone from lr; returns how
 * many.  Only name's points when name is not NULL.
 */
static size_t
chain_gaps(const ListReply *lr, const char *name)
{
	const PointInfo	*pi;
	size_t		 i, gaps = 0;

	for (i = 0; i < lr->n_points; i++) {
		pi = lr->points[i];
		if ((name != NULL && strcmp(pi->name, name) != 0) ||
		    pi->previous_id[0] == '\0' ||
		    chain_find(lr, pi->name, pi->previous_id) != NULL)
			continue;
		if (pi->sequence > 1)
			log_warnx("restore point %s/%s (#%llu) is missing; "
			    "referenced by %s/%s (#%llu)", pi->name,
			    pi->previous_id,
			    (unsigned long long)pi->sequence - 1, pi->name,
			    pi->point_id, (unsigned long long)pi->sequence);
		else
			log_warnx("restore point %s/%s is missing; referenced "
			    "by %s/%s", pi->name, pi->previous_id, pi->name,
			    pi->point_id);
		gaps++;
	}
	return gaps;
}

/*
 * Checks lr (the target's points, of name or of every name) against
 * what this source committed.  A name whose committed point is gone,
 * with no newer point in its place, went back: exit 9 after a one-line
 * error, or with accept, the target's state is taken as the new truth.
 * Missing middle points are warned of.  Returns EXIT_OK, EXIT_ROLLBACK,
 * or EXIT_INTEGRITY if a middle point is missing (and nothing went
 * back).
 */
int
chain_check(struct source_conf *sc, const ListReply *lr, const char *name,
    int accept)
{
	struct state_entry	*st = NULL, *e;
	const PointInfo		*pi, *newest;
	size_t			 n = 0, i, gaps;
	int			 rv = EXIT_OK;
	char			 now[256];

	gaps = chain_gaps(lr, name);
	if (state_load(sc, &st, &n) == -1)
		log_warnx("cannot check the target against the points this "
		    "source committed; going on without");
	for (i = 0; i < n; i++) {
		e = &st[i];
		if (name != NULL && strcmp(e->se_name, name) != 0)
			continue;
		newest = chain_newest(lr, e->se_name);
		if ((pi = chain_find(lr, e->se_name, e->se_id)) != NULL &&
		    (e->se_sequence == 0 || pi->sequence == 0 ||
		    pi->sequence == e->se_sequence))
			continue;
		/* Gone, but newer points follow: a missing middle point. */
		if (pi == NULL && newest != NULL && e->se_sequence > 0 &&
		    newest->sequence > e->se_sequence)
			continue;
		if (newest == NULL)
			snprintf(now, sizeof(now), "it has no restore point "
			    "of %s", e->se_name);
		else
			snprintf(now, sizeof(now), "its newest is %s (#%llu)",
			    newest->point_id,
			    (unsigned long long)newest->sequence);
		if (accept) {
			log_warnx("accepted: %s/%s (#%llu) is gone from the "
			    "target, %s", e->se_name, e->se_id,
			    (unsigned long long)e->se_sequence, now);
			if ((newest == NULL ? state_drop(sc, e->se_name) :
			    state_set(sc, e->se_name, newest->sequence,
			    newest->point_id)) == -1)
				rv = EXIT_ERROR;
			continue;
		}
		log_warnx("the target went back: this source committed "
		    "%s/%s (#%llu), %s (the repository was restored from an "
		    "older copy, or that point deleted or damaged: "
		    "'target-transporter verify' tells which); rerun with "
		    "--accept-rollback to go on from the target's state",
		    e->se_name, e->se_id, (unsigned long long)e->se_sequence,
		    now);
		rv = EXIT_ROLLBACK;
	}
	free(st);
	if (rv == EXIT_OK && gaps > 0)
		rv = EXIT_INTEGRITY;
	return rv;
}

/*
 * A ListRequest on a connection of its own, for the checks around a
 * backup or a verify.
 */
struct chain_list {
	const char	*cl_name;
	ListReply	*cl_reply;	/* an unpacked copy */
};

static void
chain_list_ready(struct client *cl, void *arg)
{
	struct chain_list	*cli = arg;
	Frame			 f = FRAME__INIT;
	ListRequest		 lr = LIST_REQUEST__INIT;

	lr.name = (char *)(cli->cl_name != NULL ? cli->cl_name : "");
	f.msg_case = FRAME__MSG_LIST_REQUEST;
	f.list_request = &lr;
	client_send(cl, &f);
}

static void
chain_list_frame(struct client *cl, const Frame *f, void *arg)
{
	struct chain_list	*cli = arg;
	uint8_t			*buf;
	size_t			 len;

	if (f->msg_case != FRAME__MSG_LIST_REPLY) {
		client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected "
		    "%s frame", cl->cl_addr, frame_name(f));
		return;
	}
	/* The frame is freed on return: keep a copy. */
	len = list_reply__get_packed_size(f->list_reply);
	if ((buf = malloc(len + 1)) == NULL)
		fatal("malloc");
	list_reply__pack(f->list_reply, buf);
	cli->cl_reply = list_reply__unpack(NULL, len, buf);
	free(buf);
	if (cli->cl_reply == NULL)
		fatal("list_reply__unpack");
	client_finish(cl, EXIT_OK, NULL);
}

static const struct client_ops chain_list_ops = {
	.co_ready = chain_list_ready,
	.co_frame = chain_list_frame,
};

/*
 * The target's points of name (NULL: all); EXIT_OK and *out, or why
 * not.  With retry, a target that is busy or drops the connection is
 * tried again with the backup's own backoff, for resume_timeout: the
 * check is the first step of a backup.
 */
static int
chain_list(struct source_conf *sc, const char *name, ListReply **out,
    int retry)
{
	struct chain_list	 cli = { name, NULL };
	struct client		*cl;
	uint64_t		 deadline = 0, delay = 1;
	int			 rv, lost, attempt;

	*out = NULL;
	for (attempt = 1;; attempt++) {
		if ((cl = client_new(sc, &chain_list_ops, &cli)) == NULL)
			return EXIT_USAGE;
		rv = client_run(cl);
		lost = cl->cl_lost;
		client_free(cl);
		if (rv == EXIT_OK || !lost || !retry)
			break;
		if (deadline == 0)
			deadline = now_ms() + sc->sc_resume_timeout * 1000;
		if (now_ms() + delay * 1000 > deadline) {
			log_warnx("backup of '%s' gave up reconnecting after "
			    "%d attempt(s) (resume_timeout)", name, attempt);
			break;
		}
		log_warnx("backup of '%s' interrupted (attempt %d); "
		    "reconnecting in %llu s", name, attempt,
		    (unsigned long long)delay);
		sleep((unsigned int)delay);
		delay = delay * 2 > RECONNECT_DELAY_MAX ? RECONNECT_DELAY_MAX :
		    delay * 2;
	}
	if (rv != EXIT_OK || cli.cl_reply == NULL) {
		if (cli.cl_reply != NULL)
			list_reply__free_unpacked(cli.cl_reply, NULL);
		return rv != EXIT_OK ? rv : EXIT_ERROR;
	}
	*out = cli.cl_reply;
	return EXIT_OK;
}

/* Removes a flag without argument from argv; 1 if it was there. */
static int
argv_take(int *argc, char **argv, const char *flag)
{
	int	 i, j, found = 0;

	for (i = 1; i < *argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], flag) != 0)
			continue;
		for (j = i; j < *argc - 1; j++)
			argv[j] = argv[j + 1];
		(*argc)--;
		argv[*argc] = NULL;
		found = 1;
		i--;
	}
	return found;
}

/* The value of --opt VALUE or --opt=VALUE in argv, or NULL. */
static const char *
argv_value(int argc, char **argv, const char *opt)
{
	size_t	 len = strlen(opt);
	int	 i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], opt) == 0 && i + 1 < argc)
			return argv[i + 1];
		if (strncmp(argv[i], opt, len) == 0 && argv[i][len] == '=')
			return argv[i] + len + 1;
	}
	return NULL;
}

static int
argv_has(int argc, char **argv, const char *flag)
{
	int	 i;

	for (i = 1; i < argc; i++)
		if (strcmp(argv[i], flag) == 0)
			return 1;
	return 0;
}

/*
 * backup, checked: before it, the target must still have the newest
 * point this source committed of the name (else exit 9, or with
 * --accept-rollback go on from what the target has); after it, the new
 * point is remembered.  The agent's backups run through here too.
 */
int
cmd_backup_checked(struct source_conf *sc, int argc, char **argv)
{
	ListReply	*lr = NULL;
	const PointInfo	*newest;
	const char	*name;
	int		 accept, rv;

	accept = argv_take(&argc, argv, "--accept-rollback");
	name = argv_value(argc, argv, "--name");
	if (argv_has(argc, argv, "--help")) {
		rv = cmd_backup(sc, argc, argv);
		printf("  --accept-rollback  go on when the target no longer "
		    "has the newest\n"
		    "                point this source committed of the name "
		    "(exit 9 otherwise)\n");
		return rv;
	}
	if (sc == NULL || name == NULL || !name_is_valid(name))
		return cmd_backup(sc, argc, argv);	/* its usage */
	if ((rv = chain_list(sc, name, &lr, 1)) != EXIT_OK)
		return rv;
	rv = chain_check(sc, lr, name, accept);
	list_reply__free_unpacked(lr, NULL);
	lr = NULL;
	/* A missing middle point was warned of; it does not stop a backup. */
	if (rv != EXIT_OK && rv != EXIT_INTEGRITY)
		return rv;
	if ((rv = cmd_backup(sc, argc, argv)) != EXIT_OK)
		return rv;
	if (chain_list(sc, name, &lr, 1) != EXIT_OK ||
	    (newest = chain_newest(lr, name)) == NULL ||
	    !chain_id_ok(newest->point_id) ||
	    state_set(sc, name, newest->sequence, newest->point_id) == -1)
		log_warnx("backup %s committed, but its restore point could "
		    "not be remembered in %s: a later rollback of the target "
		    "may go unnoticed", name, sc->sc_state_dir);
	if (lr != NULL)
		list_reply__free_unpacked(lr, NULL);
	return EXIT_OK;
}

/*
 * verify, checked: the chain of the name (or of every name with --all
 * and no --name) first, then one point as before, or with --all every
 * point, each on its own connection through cmd_verify.  Exit 9 if the
 * target went back, 5 if a point is damaged or missing.
 */
int
cmd_verify_checked(struct source_conf *sc, int argc, char **argv)
{
	ListReply	*lr = NULL;
	const PointInfo	*pi;
	const char	*name, *keyfile, *passfile;
	char		*sub[12];
	uint64_t	 damaged = 0, failed = 0, names = 0;
	size_t		 i;
	int		 all, accept, json, rv, chain, one, n;

	all = argv_take(&argc, argv, "--all");
	accept = argv_take(&argc, argv, "--accept-rollback");
	name = argv_value(argc, argv, "--name");
	if (argv_has(argc, argv, "--help")) {
		rv = cmd_verify(sc, argc, argv);
		printf("  --all          every restore point of the name, or "
		    "of every name\n"
		    "                 without --name; a summary line at the "
		    "end\n"
		    "  --accept-rollback  go on when the target no longer "
		    "has the newest\n"
		    "                 point this source committed (exit 9 "
		    "otherwise)\n");
		return rv;
	}
	if (sc == NULL || (!all && name == NULL) ||
	    (name != NULL && !name_is_valid(name)) ||
	    (all && argv_value(argc, argv, "--point") != NULL)) {
		if (all)
			fprintf(stderr, "usage: source-transporter [-f config] "
			    "verify --all [--name NAME] [--json]\n");
		return all ? EXIT_USAGE : cmd_verify(sc, argc, argv);
	}
	if ((rv = chain_list(sc, name, &lr, 0)) != EXIT_OK)
		return rv;
	chain = chain_check(sc, lr, name, accept);
	if (chain != EXIT_OK && chain != EXIT_INTEGRITY) {
		list_reply__free_unpacked(lr, NULL);
		return chain;
	}
	if (!all) {
		list_reply__free_unpacked(lr, NULL);
		rv = cmd_verify(sc, argc, argv);
		fflush(stdout);
		if (rv == EXIT_OK && chain == EXIT_INTEGRITY) {
			log_warnx("verify of %s: a restore point of its chain "
			    "is missing (named above)", name);
			rv = EXIT_INTEGRITY;
		}
		return rv;
	}
	if (name != NULL && lr->n_points == 0) {
		log_warnx("no restore points of %s on the target; see "
		    "'source-transporter list'", name);
		list_reply__free_unpacked(lr, NULL);
		return EXIT_NOT_FOUND;
	}
	json = argv_has(argc, argv, "--json");
	keyfile = argv_value(argc, argv, "--key-file");
	passfile = argv_value(argc, argv, "--passphrase-file");
	rv = EXIT_OK;
	for (i = 0; i < lr->n_points; i++) {
		pi = lr->points[i];
		if (i == 0 || strcmp(pi->name, lr->points[i - 1]->name) != 0)
			names++;
		n = 0;
		sub[n++] = "verify";
		sub[n++] = "--name";
		sub[n++] = pi->name;
		sub[n++] = "--point";
		sub[n++] = pi->point_id;
		if (json)
			sub[n++] = "--json";
		if (keyfile != NULL && passfile != NULL) {
			sub[n++] = "--key-file";
			sub[n++] = (char *)keyfile;
			sub[n++] = "--passphrase-file";
			sub[n++] = (char *)passfile;
		}
		sub[n] = NULL;
		fflush(stdout);
		one = cmd_verify(sc, n, sub);
		fflush(stdout);
		if (one == EXIT_INTEGRITY)
			damaged++;
		else if (one != EXIT_OK) {
			failed++;
			if (rv == EXIT_OK)
				rv = one;
		}
	}
	if (json)
		printf("{\"points\":%zu,\"names\":%llu,\"damaged\":%llu,"
		    "\"failed\":%llu,\"chain_intact\":%s}\n", lr->n_points,
		    (unsigned long long)names, (unsigned long long)damaged,
		    (unsigned long long)failed,
		    chain == EXIT_OK ? "true" : "false");
	else
		printf("verify: %zu restore point(s) of %llu name(s): %llu "
		    "damaged, %llu could not be checked, %s\n", lr->n_points,
		    (unsigned long long)names, (unsigned long long)damaged,
		    (unsigned long long)failed, chain == EXIT_OK ?
		    "every chain whole" : "a point is missing (named above)");
	if (damaged > 0 || chain == EXIT_INTEGRITY)
		rv = EXIT_INTEGRITY;
	list_reply__free_unpacked(lr, NULL);
	return rv;
}
