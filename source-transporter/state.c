/*
 * state.c: what this source remembers between runs, under
 * state_directory: per target and client identity (which fixes the
 * tenant), the newest restore point it committed of each backup name,
 * with its sequence number.  A target cannot know that its repository
 * was put back to an older copy; the source can (chain.c).
 *
 *	STATE_DIR/points-<16 hex>	one per target and identity
 *	    # target HOST:PORT identity SUBJECT
 *	    NAME SEQUENCE POINT-ID
 *
 * Written whole (temporary file, fsync, rename, fsync of the
 * directory) under an flock of STATE_DIR/points-<16 hex>.lock, so that
 * backups of several names at once lose no update.
 *
 *	STATE_DIR/points-<16 hex>.password
 *	    the KekRef (Argon2id salt, costs, verifier: no key) of the
 *	    password key this source's source-side backups use there, so
 *	    that a new backup name under another password is refused
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "source.h"

struct state {
	char			 st_path[PATH_MAX];
	char			 st_header[1024];
	struct state_entry	*st_entries;
	size_t			 st_n;
	int			 st_lock;	/* fd, flock'd */
};

/*
 * The file of this target and identity.  The identity is the subject
 * of the client certificate (stable across renewals), or its path if
 * it cannot be read.
 */
static int
state_path(struct source_conf *sc, struct state *st)
{
	X509		*x = NULL;
	FILE		*fp;
	uint8_t		 sum[CHUNK_ID_LEN];
	char		 ident[512], hex[2 * CHUNK_ID_LEN + 1], *buf = NULL;
	int		 n;

	snprintf(ident, sizeof(ident), "%s", sc->sc_cert);
	if ((fp = fopen(sc->sc_cert, "r")) != NULL) {
		if ((x = PEM_read_X509(fp, NULL, NULL, NULL)) != NULL)
			X509_NAME_oneline(X509_get_subject_name(x), ident,
			    sizeof(ident));
		X509_free(x);
		fclose(fp);
	}
	if (asprintf(&buf, "%s\n%s", sc->sc_target, ident) == -1)
		fatal("asprintf");
	crypto_sha256(buf, strlen(buf), sum);
	free(buf);
	hex_encode(sum, 8, hex);
	hex[16] = '\0';
	n = snprintf(st->st_path, sizeof(st->st_path), "%s/points-%s",
	    sc->sc_state_dir, hex);
	snprintf(st->st_header, sizeof(st->st_header), "# target %s identity "
	    "%s\n", sc->sc_target, ident);
	if (n < 0 || (size_t)n + 8 >= sizeof(st->st_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static void
state_close(struct state *st)
{
	free(st->st_entries);
	st->st_entries = NULL;
	st->st_n = 0;
	if (st->st_lock != -1)
		close(st->st_lock);	/* drops the flock */
	st->st_lock = -1;
}

/*
 * Reads the state of this target; to update it (update set), creates
 * state_directory 0700 if need be and locks it first.  Reading alone
 * creates nothing and needs no lock: the file is only ever replaced
 * whole.  0, or -1 after a one-line warning.
 */
static int
state_open(struct source_conf *sc, struct state *st, int update)
{
	char		 lock[PATH_MAX + 8], line[512], name[NAME_MAX_LEN + 2];
	char		 id[64];
	unsigned long long seq;
	struct state_entry *ne;
	FILE		*fp = NULL;
	int		 lineno = 0, rv = -1;

	memset(st, 0, sizeof(*st));
	st->st_lock = -1;
	if (state_path(sc, st) == -1) {
		log_warn("state_directory %s", sc->sc_state_dir);
		return -1;
	}
	if (!update)
		goto read;
	if (mkdir(sc->sc_state_dir, 0700) == -1 && errno != EEXIST) {
		log_warn("cannot create state_directory %s (set "
		    "state_directory in %s)", sc->sc_state_dir, sc->sc_path);
		return -1;
	}
	snprintf(lock, sizeof(lock), "%s.lock", st->st_path);
	if ((st->st_lock = open(lock, O_RDWR | O_CREAT | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) == -1 || flock(st->st_lock, LOCK_EX) == -1) {
		log_warn("%s", lock);
		goto fail;
	}
 read:
	if ((fp = fopen(st->st_path, "re")) == NULL) {
		if (errno == ENOENT)
			rv = 0;
		else
			log_warn("%s", st->st_path);
		goto fail;
	}
	while (fgets(line, sizeof(line), fp) != NULL) {
		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, "%129s %llu %63s", name, &seq, id) != 3 ||
		    strlen(name) > NAME_MAX_LEN || !name_is_valid(name) ||
		    lineno > (int)(STATE_FILE_MAX / 32)) {
			log_warnx("%s:%d: not a state line; remove the file "
			    "to start afresh", st->st_path, lineno);
			goto fail;
		}
		if ((ne = reallocarray(st->st_entries, st->st_n + 1,
		    sizeof(*ne))) == NULL)
			fatal("reallocarray");
		st->st_entries = ne;
		ne = &st->st_entries[st->st_n++];
		snprintf(ne->se_name, sizeof(ne->se_name), "%s", name);
		ne->se_sequence = seq;
		snprintf(ne->se_id, sizeof(ne->se_id), "%s", id);
	}
	if (ferror(fp)) {
		log_warn("%s", st->st_path);
		goto fail;
	}
	rv = 0;
 fail:
	if (fp != NULL)
		fclose(fp);
	if (rv == -1)
		state_close(st);
	return rv;
}

static int
state_write(struct state *st)
{
	char		 tmp[PATH_MAX + 8], dir[PATH_MAX], *slash;
	FILE		*fp = NULL;
	size_t		 i;
	int		 fd = -1, rv = -1;

	snprintf(tmp, sizeof(tmp), "%s.tmp", st->st_path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
	    O_NOFOLLOW, 0600)) == -1 || (fp = fdopen(fd, "w")) == NULL)
		goto fail;
	fd = -1;
	fputs(st->st_header, fp);
	for (i = 0; i < st->st_n; i++)
		fprintf(fp, "%s %llu %s\n", st->st_entries[i].se_name,
		    (unsigned long long)st->st_entries[i].se_sequence,
		    st->st_entries[i].se_id);
	if (fflush(fp) == EOF || fsync(fileno(fp)) == -1)
		goto fail;
	if (fclose(fp) == EOF) {
		fp = NULL;
		goto fail;
	}
	fp = NULL;
	if (rename(tmp, st->st_path) == -1)
		goto fail;
	snprintf(dir, sizeof(dir), "%s", st->st_path);
	if ((slash = strrchr(dir, '/')) != NULL)
		*slash = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) != -1)
		(void)fsync(fd);
	rv = 0;
 fail:
	if (rv == -1) {
		log_warn("cannot write %s", tmp);
		unlink(tmp);
	}
	if (fp != NULL)
		fclose(fp);
	if (fd != -1)
		close(fd);
	return rv;
}

/*
 * Every name's newest committed point for this target and identity;
 * *entries is malloc'd (NULL if *n is 0), free it with free().  0, or
 * -1 after a one-line warning (the state cannot be read).
 */
int
state_load(struct source_conf *sc, struct state_entry **entries, size_t *n)
{
	struct state	 st;

	*entries = NULL;
	*n = 0;
	if (state_open(sc, &st, 0) == -1)
		return -1;
	*entries = st.st_entries;
	*n = st.st_n;
	st.st_entries = NULL;
	st.st_n = 0;
	state_close(&st);
	return 0;
}

/* Sets (id not NULL) or drops the entry of name; 0 or -1 (warned). */
static int
state_update(struct source_conf *sc, const char *name, uint64_t seq,
    const char *id)
{
	struct state		 st;
	struct state_entry	*e = NULL;
	size_t			 i;
	int			 rv = -1;

	if (state_open(sc, &st, 1) == -1)
		return -1;
	for (i = 0; i < st.st_n; i++)
		if (strcmp(st.st_entries[i].se_name, name) == 0)
			e = &st.st_entries[i];
	if (id == NULL) {
		if (e == NULL) {
			rv = 0;
			goto out;
		}
		*e = st.st_entries[--st.st_n];
	} else {
		if (e == NULL) {
			if ((e = reallocarray(st.st_entries, st.st_n + 1,
			    sizeof(*e))) == NULL)
				fatal("reallocarray");
			st.st_entries = e;
			e = &st.st_entries[st.st_n++];
			snprintf(e->se_name, sizeof(e->se_name), "%s", name);
		}
		e->se_sequence = seq;
		snprintf(e->se_id, sizeof(e->se_id), "%s", id);
	}
	rv = state_write(&st);
 out:
	state_close(&st);
	return rv;
}

int
state_set(struct source_conf *sc, const char *name, uint64_t seq,
    const char *id)
{
	return state_update(sc, name, seq, id);
}

int
state_drop(struct source_conf *sc, const char *name)
{
	return state_update(sc, name, 0, NULL);
}

/* The password file of this target and identity; -1 if none can be. */
static int
state_password_path(struct source_conf *sc, char *path, size_t len)
{
	struct state	 st;

	memset(&st, 0, sizeof(st));
	if (state_path(sc, &st) == -1 || (size_t)snprintf(path, len,
	    "%s.password", st.st_path) >= len)
		return -1;
	return 0;
}

/* The password key remembered in path, or NULL: state_password_ref. */
static KekRef *
state_password_read(const char *path)
{
	KekRef		*ref = NULL;
	uint8_t		*buf;
	size_t		 len;
	char		 err[KEY_ERR_MAX];

	if (access(path, F_OK) == -1)
		return NULL;
	/* The key file's reader: a regular file, its size checked first. */
	if (keychain_read_file(path, &buf, &len, err, sizeof(err)) == -1) {
		log_warnx("%s; a new backup name is not checked against the "
		    "password of the others", err);
		return NULL;
	}
	if ((ref = kek_ref__unpack(NULL, len, buf)) == NULL ||
	    ref->provider != KEY_PROVIDER__KEY_PROVIDER_PASSWORD ||
	    kek_ref_check(ref, err, sizeof(err)) == -1) {
		log_warnx("%s: not a password key reference; remove it to "
		    "start afresh (a new backup name is not checked against "
		    "the password of the others)", path);
		if (ref != NULL)
			kek_ref__free_unpacked(ref, NULL);
		ref = NULL;
	}
	free(buf);
	return ref;
}

/*
 * The password key this source's backups to this target use, or NULL
 * (none remembered, or it does not read: then nothing is checked, as
 * for a new host, after a warning).  Free with kek_ref__free_unpacked.
 */
KekRef *
state_password_ref(struct source_conf *sc, char *path, size_t pathlen)
{
	if (state_password_path(sc, path, pathlen) == -1)
		return NULL;
	return state_password_read(path);
}

/*
 * Remembers ref as the password key of this source's backups to this
 * target: with first set, only if none is remembered yet (a backup of
 * a name still under an older password does not undo a change), else
 * if it is not already.  Warns on failure: the backup or password
 * change it follows is done all the same.
 */
void
state_password_remember(struct source_conf *sc, const KekRef *ref,
    int first)
{
	KekRef		*now;
	uint8_t		*buf;
	size_t		 len;
	char		 path[PATH_MAX], err[KEY_ERR_MAX];
	int		 same;

	/* Once: state_path reads the client certificate. */
	if (state_password_path(sc, path, sizeof(path)) == -1)
		return;
	if ((now = state_password_read(path)) != NULL) {
		same = first || kek_ref_same(now, ref);
		kek_ref__free_unpacked(now, NULL);
		if (same)
			return;
	}
	if (mkdir(sc->sc_state_dir, 0700) == -1 && errno != EEXIST) {
		log_warn("cannot create state_directory %s", sc->sc_state_dir);
		return;
	}
	len = kek_ref__get_packed_size(ref);
	if ((buf = malloc(len > 0 ? len : 1)) == NULL)
		fatal("malloc");
	kek_ref__pack(ref, buf);
	/* The key file's writer: whole or not at all, and durable. */
	if (keychain_write_file(path, buf, len, err, sizeof(err)) == -1)
		log_warnx("cannot remember the password key: %s", err);
	free(buf);
}
