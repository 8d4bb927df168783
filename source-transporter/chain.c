/*
 * chain.c: the restore points of a name as a chain, checked from the
 * source.  The target numbers the points of a name 1, 2, ... and each
 * names the one before it, so a deleted middle point is named by its
 * successor.  What the target cannot know, a repository put back to an
 * older copy, the source can: it remembers the newest point it
 * committed of each name (state.c) and refuses to go on (exit 9,
 * EXIT_ROLLBACK) when the target no longer has it, unless told
 * --accept-rollback.  backup, list and verify all check: a backup on
 * the chain the target sends with its base index (one connection, and
 * the new point remembered from Committed), list and verify on the
 * ListReply; verify --all reads every point of a name, or of every name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source.h"

/* A point id as the target makes them; anything else is not stored. */
int
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
 * Warns of every point whose predecessor is gone from lr, and not by a
 * prune; returns how many.  Only name's points when name is not NULL.
 */
static size_t
chain_gaps(const ListReply *lr, const char *name)
{
	const PointInfo	*pi;
	size_t		 i, gaps = 0;

	for (i = 0; i < lr->n_points; i++) {
		pi = lr->points[i];
		if ((name != NULL && strcmp(pi->name, name) != 0) ||
		    pi->previous_id[0] == '\0' || pi->previous_pruned ||
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
 * What this source committed of a name (e) is gone from the target,
 * whose newest point of it is newest_id (#newest_seq; NULL: none).  One
 * line and EXIT_ROLLBACK, or with accept the target's state becomes the
 * remembered one: EXIT_OK, or EXIT_ERROR if it cannot be written.
 */
static int
chain_went_back(struct source_conf *sc, const struct state_entry *e,
    const char *newest_id, uint64_t newest_seq, int accept)
{
	char	 now[256];

	if (newest_id != NULL && !chain_id_ok(newest_id)) {
		log_warnx("the target reported a malformed newest restore "
		    "point of %s; nothing was changed", e->se_name);
		return EXIT_ERROR;
	}
	if (newest_id == NULL)
		snprintf(now, sizeof(now), "it has no restore point of %s",
		    e->se_name);
	else
		snprintf(now, sizeof(now), "its newest is %s (#%llu)",
		    newest_id, (unsigned long long)newest_seq);
	if (accept) {
		log_warnx("accepted: %s/%s (#%llu) is gone from the target, %s",
		    e->se_name, e->se_id, (unsigned long long)e->se_sequence,
		    now);
		if ((newest_id == NULL ? state_drop(sc, e->se_name) :
		    state_set(sc, e->se_name, newest_seq, newest_id)) == -1)
			return EXIT_ERROR;
		return EXIT_OK;
	}
	log_warnx("the target went back: this source committed %s/%s "
	    "(#%llu), %s (the repository was restored from an older copy, or "
	    "that point deleted or damaged: 'target-transporter verify' tells "
	    "which); rerun with --accept-rollback to go on from the target's "
	    "state", e->se_name, e->se_id, (unsigned long long)e->se_sequence,
	    now);
	return EXIT_ROLLBACK;
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
	int			 rv = EXIT_OK, one;

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
		one = chain_went_back(sc, e, newest ? newest->point_id : NULL,
		    newest ? newest->sequence : 0, accept);
		if (one != EXIT_OK && rv != EXIT_ROLLBACK)
			rv = one;
	}
	free(st);
	if (rv == EXIT_OK && gaps > 0)
		rv = EXIT_INTEGRITY;
	return rv;
}

/* The newest point of name this source committed: 1 and *e, or 0. */
int
chain_known(struct source_conf *sc, const char *name, struct state_entry *e)
{
	struct state_entry	*st = NULL;
	size_t			 n = 0, i;
	int			 found = 0;

	if (state_load(sc, &st, &n) == -1)
		log_warnx("cannot check the target against the points this "
		    "source committed; going on without");
	for (i = 0; i < n && !found; i++)
		if (strcmp(st[i].se_name, name) == 0) {
			*e = st[i];
			found = 1;
		}
	free(st);
	return found;
}

/*
 * The backup's rollback check, on the chain the target sent with the
 * base index (known: the point this source remembers, if any).
 * EXIT_OK, EXIT_ROLLBACK or EXIT_ERROR, each said in one line.
 */
int
chain_check_base(struct source_conf *sc, const char *name,
    const struct state_entry *known, const BaseIndex *bi, int accept)
{
	if (!bi->chain) {
		log_warnx("the target does not report its restore points of %s "
		    "(an older target-transporter): no rollback check for "
		    "this backup", name);
		return EXIT_OK;
	}
	if (bi->missing > 0)
		log_warnx("%llu restore point(s) of %s miss the point before "
		    "them on the target; 'source-transporter list --name %s' "
		    "names it", (unsigned long long)bi->missing, name, name);
	if (known == NULL || bi->known ||
	    (known->se_sequence > 0 && bi->newest_id[0] != '\0' &&
	    bi->newest_sequence > known->se_sequence))
		return EXIT_OK;
	return chain_went_back(sc, known, bi->newest_id[0] != '\0' ?
	    bi->newest_id : NULL, bi->newest_sequence, accept);
}

/* After a commit: remember the new point as the newest of name. */
void
chain_remember(struct source_conf *sc, const char *name, const Committed *c)
{
	if (!chain_id_ok(c->point_id) ||
	    state_set(sc, name, c->sequence, c->point_id) == -1)
		log_warnx("backup %s committed, but its restore point could "
		    "not be remembered in %s: a later rollback of the target "
		    "may go unnoticed", name, sc->sc_state_dir);
}

/*
 * A ListRequest on a connection of its own, for the check before a
 * verify.
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
	lr.brief = 1;
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

/* The target's points of name (NULL: all): EXIT_OK and *out, or why not. */
static int
chain_list(struct source_conf *sc, const char *name, ListReply **out)
{
	struct chain_list	 cli = { name, NULL };
	struct client		*cl;
	int			 rv;

	*out = NULL;
	if ((cl = client_new(sc, &chain_list_ops, &cli)) == NULL)
		return EXIT_USAGE;
	rv = client_run(cl);
	client_free(cl);
	if (rv != EXIT_OK || cli.cl_reply == NULL) {
		if (cli.cl_reply != NULL)
			list_reply__free_unpacked(cli.cl_reply, NULL);
		return rv != EXIT_OK ? rv : EXIT_ERROR;
	}
	*out = cli.cl_reply;
	return EXIT_OK;
}

/*
 * verify, checked: the chain of the name (or of every name with --all
 * and no --name) first, then one point, or with --all every point, each
 * on its own connection.  Exit 9 if the target went back, 5 if a point
 * is damaged or missing.
 */
int
verify_chain(struct source_conf *sc, const struct verify_opts *vo)
{
	ListReply	*lr = NULL;
	const PointInfo	*pi;
	uint64_t	 damaged = 0, failed = 0, names = 0;
	size_t		 i;
	int		 rv, chain, one;

	if ((rv = chain_list(sc, vo->vo_name, &lr)) != EXIT_OK)
		return rv;
	chain = chain_check(sc, lr, vo->vo_name, vo->vo_accept_rollback);
	if (chain != EXIT_OK && chain != EXIT_INTEGRITY) {
		list_reply__free_unpacked(lr, NULL);
		return chain;
	}
	if (!vo->vo_all) {
		list_reply__free_unpacked(lr, NULL);
		rv = verify_point(sc, vo, vo->vo_name, vo->vo_point);
		fflush(stdout);
		if (rv == EXIT_OK && chain == EXIT_INTEGRITY) {
			log_warnx("verify of %s: a restore point of its chain "
			    "is missing (named above)", vo->vo_name);
			rv = EXIT_INTEGRITY;
		}
		return rv;
	}
	if (vo->vo_name != NULL && lr->n_points == 0) {
		log_warnx("no restore points of %s on the target; see "
		    "'source-transporter list'", vo->vo_name);
		list_reply__free_unpacked(lr, NULL);
		return EXIT_NOT_FOUND;
	}
	rv = EXIT_OK;
	for (i = 0; i < lr->n_points; i++) {
		pi = lr->points[i];
		if (i == 0 || strcmp(pi->name, lr->points[i - 1]->name) != 0)
			names++;
		fflush(stdout);
		one = verify_point(sc, vo, pi->name, pi->point_id);
		fflush(stdout);
		if (one == EXIT_INTEGRITY)
			damaged++;
		else if (one != EXIT_OK) {
			failed++;
			if (rv == EXIT_OK)
				rv = one;
		}
	}
	if (vo->vo_json)
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
