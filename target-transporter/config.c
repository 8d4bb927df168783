/*
 * config.c: target-transporter's configuration file.
 *
 * Every error is reported as "file:line: message", all of them in one
 * pass, so an operator fixes a file in one edit.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "target.h"

struct conf_state {
	struct target_conf	*cs_conf;
	struct tenant		*cs_tenant;	/* section being read */
	int			 cs_errors;
};

static int
conf_global(struct conf_state *cs, const char *key, const char *value,
    int line)
{
	struct target_conf	*tc = cs->cs_conf;

	if (strcmp(key, "listen") == 0)
		return conf_set_string(cs->cs_conf->tc_path, line, key,
		    value, &tc->tc_listen);
	if (strcmp(key, "certificate") == 0)
		return conf_set_file(tc->tc_path, line, key, value, 0,
		    &tc->tc_cert);
	if (strcmp(key, "key") == 0)
		return conf_set_file(tc->tc_path, line, key, value, 1,
		    &tc->tc_key);
	if (strcmp(key, "ca") == 0)
		return conf_set_file(tc->tc_path, line, key, value, 0,
		    &tc->tc_ca);
	if (strcmp(key, "crl") == 0)
		return conf_set_file(tc->tc_path, line, key, value, 0,
		    &tc->tc_crl);
	if (strcmp(key, "repository") == 0)
		return conf_set_string(cs->cs_conf->tc_path, line, key,
		    value, &tc->tc_repository);
	if (strcmp(key, "workers") == 0) {
		if (conf_parse_uint(value, 0, 64, &tc->tc_workers) == -1) {
			log_warnx("%s:%d: workers must be 0 (one per core) "
			    "to 64, not '%s'", tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "direct_io") == 0) {
		if (conf_parse_bool(value, &tc->tc_direct_io) == -1) {
			log_warnx("%s:%d: direct_io must be yes or no, not '%s'",
			    tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "metrics") == 0)
		return conf_set_string(cs->cs_conf->tc_path, line, key,
		    value, &tc->tc_metrics);
	if (strcmp(key, "handshake_timeout") == 0) {
		if (conf_parse_duration(value, &tc->tc_handshake_timeout) == -1 ||
		    tc->tc_handshake_timeout < 1 ||
		    tc->tc_handshake_timeout > 600) {
			log_warnx("%s:%d: handshake_timeout must be 1s to 10m, "
			    "not '%s'", tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "frame_timeout") == 0) {
		if (conf_parse_duration(value, &tc->tc_frame_timeout) == -1 ||
		    tc->tc_frame_timeout < 1 || tc->tc_frame_timeout > 3600) {
			log_warnx("%s:%d: frame_timeout must be 1s to 1h, not "
			    "'%s'", tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "idle_timeout") == 0) {
		if (conf_parse_duration(value, &tc->tc_idle_timeout) == -1 ||
		    tc->tc_idle_timeout < 1 || tc->tc_idle_timeout > 86400) {
			log_warnx("%s:%d: idle_timeout must be 1s to 1d, not "
			    "'%s'", tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "bandwidth_limit") == 0) {
		if (conf_parse_size(value, &tc->tc_bandwidth) == -1 ||
		    (tc->tc_bandwidth != 0 && tc->tc_bandwidth < (64u << 10))) {
			log_warnx("%s:%d: bandwidth_limit must be 0 (none) or at "
			    "least 64K bytes per second, not '%s'", tc->tc_path,
			    line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "max_sessions") == 0) {
		if (conf_parse_uint(value, 1, 100000,
		    &tc->tc_max_sessions) == -1) {
			log_warnx("%s:%d: max_sessions must be 1 to 100000, "
			    "not '%s'", tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "max_sessions_per_tenant") == 0) {
		if (conf_parse_uint(value, 1, 100000,
		    &tc->tc_max_tenant_sessions) == -1) {
			log_warnx("%s:%d: max_sessions_per_tenant must be 1 to "
			    "100000, not '%s'", tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	log_warnx("%s:%d: unknown key '%s'", tc->tc_path, line, key);
	return -1;
}

/* The at-rest keys of a [tenant] section. */
static int
conf_tenant_at_rest(struct conf_state *cs, struct tenant *tn, const char *key,
    const char *value, int line)
{
	static const struct {
		const char	*name;
		size_t		 off;
	} strs[] = {
		{ "kms",		offsetof(struct tenant, tn_kms) },
		{ "kms_certificate",	offsetof(struct tenant, tn_kms_cert) },
		{ "kms_key",		offsetof(struct tenant, tn_kms_key) },
		{ "kms_ca",		offsetof(struct tenant, tn_kms_ca) },
		{ "kms_server_name",	offsetof(struct tenant,
					    tn_kms_server_name) },
		{ "kek_name",		offsetof(struct tenant, tn_kek_name) },
		{ "password_file",	offsetof(struct tenant,
					    tn_password_file) },
	};
	const char	*path = cs->cs_conf->tc_path;
	size_t		 i;

	if (strcmp(key, "at_rest") == 0) {
		if (tn->tn_at_rest_line != 0) {
			log_warnx("%s:%d: at_rest is set twice in [tenant %s]",
			    path, line, tn->tn_name);
			return -1;
		}
		tn->tn_at_rest_line = line;
		if (strcmp(value, "kmip") == 0)
			tn->tn_at_rest = KEY_PROVIDER__KEY_PROVIDER_KMIP;
		else if (strcmp(value, "password") == 0)
			tn->tn_at_rest = KEY_PROVIDER__KEY_PROVIDER_PASSWORD;
		else if (strcmp(value, "none") != 0) {
			log_warnx("%s:%d: at_rest must be kmip, password or "
			    "none, not '%s'", path, line, value);
			tn->tn_at_rest_bad = 1;
			return -1;
		}
		return 0;
	}
	for (i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		if (strcmp(key, strs[i].name) == 0) {
			/* Their checks come later, and name the line. */
			if (strcmp(key, "kms_key") == 0)
				tn->tn_secret_line[0] = line;
			else if (strcmp(key, "password_file") == 0)
				tn->tn_secret_line[1] = line;
			return conf_set_string(path, line, key, value,
			    (char **)((char *)tn + strs[i].off));
		}
	log_warnx("%s:%d: unknown key '%s' in [tenant %s]", path, line, key,
	    tn->tn_name);
	return -1;
}

static int
conf_line(void *arg, const char *section, const char *section_arg,
    const char *key, const char *value, int line)
{
	struct conf_state	*cs = arg;
	struct target_conf	*tc = cs->cs_conf;
	struct tenant		*tn;
	int			 rv = 0;

	if (section == NULL) {
		rv = conf_global(cs, key, value, line);
		goto out;
	}
	if (strcmp(section, "tenant") != 0) {
		log_warnx("%s:%d: unknown section [%s]", tc->tc_path, line,
		    section);
		rv = -1;
		goto out;
	}
	if (section_arg == NULL || !name_is_valid(section_arg)) {
		log_warnx("%s:%d: a tenant section needs a name of letters, "
		    "digits, '.', '_' or '-': [tenant NAME]", tc->tc_path,
		    line);
		rv = -1;
		goto out;
	}
	/* A new [tenant] header starts a new tenant. */
	if (cs->cs_tenant == NULL ||
	    strcmp(cs->cs_tenant->tn_name, section_arg) != 0) {
		TAILQ_FOREACH(tn, &tc->tc_tenants, tn_entry) {
			if (strcmp(tn->tn_name, section_arg) == 0) {
				log_warnx("%s:%d: tenant '%s' is defined "
				    "twice", tc->tc_path, line, section_arg);
				rv = -1;
				goto out;
			}
		}
		if ((tn = calloc(1, sizeof(*tn))) == NULL ||
		    (tn->tn_name = strdup(section_arg)) == NULL)
			fatal("calloc");
		TAILQ_INSERT_TAIL(&tc->tc_tenants, tn, tn_entry);
		cs->cs_tenant = tn;
	}
	tn = cs->cs_tenant;
	if (strcmp(key, "identity") == 0) {
		if (tn->tn_identity != NULL) {
			log_warnx("%s:%d: tenant '%s' has two identities",
			    tc->tc_path, line, tn->tn_name);
			rv = -1;
		} else if ((tn->tn_identity = strdup(value)) == NULL)
			fatal("strdup");
		goto out;
	}
	if (strcmp(key, "quota") == 0) {
		if (conf_parse_size(value, &tn->tn_quota) == -1 ||
		    tn->tn_quota < (1u << 20)) {
			log_warnx("%s:%d: tenant '%s': quota must be a size "
			    "of 1M or more, such as 500G or 2T, not '%s'",
			    tc->tc_path, line, tn->tn_name, value);
			rv = -1;
		}
		goto out;
	}
	rv = conf_tenant_at_rest(cs, tn, key, value, line);
 out:
	if (rv == -1)
		cs->cs_errors++;
	return rv;
}

/* *p made absolute against the working directory (the daemon chdirs). */
static int
conf_abs_path(char **p)
{
	char	 cwd[PATH_MAX], *abs;

	if (*p == NULL || (*p)[0] == '/')
		return 0;
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return -1;
	if (asprintf(&abs, "%s/%s", cwd, *p) == -1)
		fatal("asprintf");
	free(*p);
	*p = abs;
	return 0;
}

/* A copy of dflt into *p when *p is unset. */
static void
conf_default(char **p, const char *dflt)
{
	if (*p == NULL && dflt != NULL && (*p = strdup(dflt)) == NULL)
		fatal("strdup");
}

/*
 * A tenant's at-rest settings: what the provider needs, nothing it does
 * not use, defaults from the target's own certificate, key and CA, and
 * absolute paths.  Returns the number of errors logged.
 */
static int
conf_finish_at_rest(struct target_conf *tc, struct tenant *tn)
{
	char		 err[512], where[64], *host = NULL, *port = NULL;
	const char	*unused = NULL;
	int		 errors = 0;

	if (tn->tn_at_rest_line != 0)
		snprintf(where, sizeof(where), ":%d", tn->tn_at_rest_line);
	else
		where[0] = '\0';
	if (tc->tc_repository != NULL) {
		if (asprintf(&tn->tn_keychain, "%s/tenants/%s/at-rest.keychain",
		    tc->tc_repository, tn->tn_name) == -1)
			fatal("asprintf");
		if (conf_abs_path(&tn->tn_keychain) == -1) {
			log_warn("%s: getcwd", tc->tc_path);
			errors++;
		}
	}
	switch (tn->tn_at_rest) {
	case KEY_PROVIDER__KEY_PROVIDER_KMIP:
		if (tn->tn_kms == NULL || tn->tn_kek_name == NULL) {
			log_warnx("%s%s: tenant '%s': at_rest = kmip needs "
			    "'kms = HOST:PORT' and 'kek_name = NAME'",
			    tc->tc_path, where, tn->tn_name);
			errors++;
		} else if (conf_split_hostport(tn->tn_kms, &host,
		    &port) == -1) {
			log_warnx("%s%s: tenant '%s': kms must be HOST:PORT, "
			    "not '%s'", tc->tc_path, where, tn->tn_name,
			    tn->tn_kms);
			errors++;
		}
		if (tn->tn_password_file != NULL)
			unused = "password_file";
		break;
	case KEY_PROVIDER__KEY_PROVIDER_PASSWORD:
		if (tn->tn_password_file == NULL) {
			log_warnx("%s%s: tenant '%s': at_rest = password needs "
			    "'password_file = PATH'", tc->tc_path, where,
			    tn->tn_name);
			errors++;
		}
		if (tn->tn_kms != NULL || tn->tn_kek_name != NULL)
			unused = tn->tn_kms != NULL ? "kms" : "kek_name";
		break;
	default:
		if (!tn->tn_at_rest_bad && (tn->tn_kms != NULL ||
		    tn->tn_kek_name != NULL || tn->tn_password_file != NULL))
			unused = tn->tn_kms != NULL ? "kms" :
			    tn->tn_kek_name != NULL ? "kek_name" :
			    "password_file";
		break;
	}
	free(host);
	free(port);
	if (unused != NULL) {
		log_warnx("%s%s: tenant '%s': '%s' is not used with at_rest = "
		    "%s; remove it or change at_rest", tc->tc_path, where,
		    tn->tn_name, unused, tn->tn_at_rest ==
		    KEY_PROVIDER__KEY_PROVIDER_KMIP ? "kmip" : tn->tn_at_rest ==
		    KEY_PROVIDER__KEY_PROVIDER_PASSWORD ? "password" : "none");
		errors++;
	}
	if (tn->tn_at_rest == KEY_PROVIDER__KEY_PROVIDER_KMIP) {
		conf_default(&tn->tn_kms_cert, tc->tc_cert);
		conf_default(&tn->tn_kms_key, tc->tc_key);
		conf_default(&tn->tn_kms_ca, tc->tc_ca);
	}
	if (conf_abs_path(&tn->tn_kms_cert) == -1 ||
	    conf_abs_path(&tn->tn_kms_key) == -1 ||
	    conf_abs_path(&tn->tn_kms_ca) == -1 ||
	    conf_abs_path(&tn->tn_password_file) == -1) {
		log_warn("%s: getcwd", tc->tc_path);
		errors++;
	}
	/* Secrets: not readable by group or others. */
	if (tn->tn_at_rest == KEY_PROVIDER__KEY_PROVIDER_KMIP &&
	    tn->tn_kms_key != NULL &&
	    conf_check_key_file(tn->tn_kms_key, err, sizeof(err)) == -1) {
		if (tn->tn_secret_line[0] > 0)
			snprintf(where, sizeof(where), ":%d",
			    tn->tn_secret_line[0]);
		log_warnx("%s%s: tenant '%s': kms_key: %s", tc->tc_path,
		    where, tn->tn_name, err);
		errors++;
	}
	if (tn->tn_at_rest == KEY_PROVIDER__KEY_PROVIDER_PASSWORD &&
	    tn->tn_password_file != NULL && conf_check_key_file(
	    tn->tn_password_file, err, sizeof(err)) == -1) {
		if (tn->tn_secret_line[1] > 0)
			snprintf(where, sizeof(where), ":%d",
			    tn->tn_secret_line[1]);
		log_warnx("%s%s: tenant '%s': password_file: %s",
		    tc->tc_path, where, tn->tn_name, err);
		errors++;
	}
	return errors;
}

/*
 * 1 (and why in err) if path does not exist and neither does the
 * directory it would be made in, else 0.
 */
static int
repository_parent_missing(const char *path, char *err, size_t errlen)
{
	struct stat	 st;
	char		*dir;
	int		 missing;

	if (stat(path, &st) == 0 || errno != ENOENT)
		return 0;
	if ((dir = strdup(path)) == NULL)
		fatal("strdup");
	missing = stat(dirname(dir), &st) == -1 || !S_ISDIR(st.st_mode);
	if (missing)
		snprintf(err, errlen, "neither it nor %s exists; create %s "
		    "(the daemon makes the repository in it)", dir, dir);
	free(dir);
	return missing;
}

/*
 * Warns of each tenant directory of the repository that no [tenant]
 * section names (a disaster-recovery target configured by hand, say):
 * the daemon's sources would see no backups.  Not for the offline
 * tools, which see every tenant.
 */
void
target_conf_warn_unconfigured(const struct target_conf *tc)
{
	const struct tenant	*tn;
	struct dirent		*de;
	DIR			*dir;
	char			 path[PATH_MAX];

	if ((size_t)snprintf(path, sizeof(path), "%s/tenants",
	    tc->tc_repository) >= sizeof(path) ||
	    (dir = opendir(path)) == NULL)
		return;
	while ((de = readdir(dir)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		TAILQ_FOREACH(tn, &tc->tc_tenants, tn_entry)
			if (strcmp(tn->tn_name, de->d_name) == 0)
				break;
		if (tn == NULL)
			log_warnx("%s: the repository holds tenant '%s', which "
			    "no section names: its sources see none of its "
			    "backups; add '[tenant %s]' (a section's name is "
			    "its directory's)", tc->tc_path, de->d_name,
			    de->d_name);
	}
	(void)closedir(dir);
}

/* Checks what a line cannot: required keys, the tenants, key modes. */
static int
conf_finish(struct target_conf *tc)
{
	struct tenant	*tn, *other;
	char		 err[512];
	int		 errors = 0;

	if (tc->tc_listen == NULL &&
	    (tc->tc_listen = strdup("0.0.0.0:" TARGET_PORT_DEFAULT)) == NULL)
		fatal("strdup");
	if (tc->tc_max_sessions == 0)
		tc->tc_max_sessions = TARGET_MAX_SESSIONS;
	if (tc->tc_max_tenant_sessions == 0)
		tc->tc_max_tenant_sessions = TARGET_MAX_TENANT_SESSIONS;
	if (tc->tc_handshake_timeout == 0)
		tc->tc_handshake_timeout = TARGET_HANDSHAKE_TIMEOUT;
	if (tc->tc_frame_timeout == 0)
		tc->tc_frame_timeout = TARGET_FRAME_TIMEOUT;
	if (tc->tc_idle_timeout == 0)
		tc->tc_idle_timeout = TARGET_IDLE_TIMEOUT;
#define REQUIRE(field, key)						\
	if (tc->field == NULL) {					\
		log_warnx("%s: '" key "' is missing; add a line "	\
		    "'" key " = ...'", tc->tc_path);			\
		errors++;						\
	}
	REQUIRE(tc_cert, "certificate");
	REQUIRE(tc_key, "key");
	REQUIRE(tc_ca, "ca");
	REQUIRE(tc_repository, "repository");
#undef REQUIRE
	/* The daemon makes the repository, not the directories above it. */
	if (tc->tc_repository != NULL && repository_parent_missing(
	    tc->tc_repository, err, sizeof(err))) {
		log_warnx("%s: repository = %s: %s", tc->tc_path,
		    tc->tc_repository, err);
		errors++;
	}
	if (TAILQ_EMPTY(&tc->tc_tenants)) {
		log_warnx("%s: no tenant is defined; add a section "
		    "'[tenant NAME]' with 'identity = CERTIFICATE-NAME'",
		    tc->tc_path);
		errors++;
	}
	TAILQ_FOREACH(tn, &tc->tc_tenants, tn_entry) {
		errors += conf_finish_at_rest(tc, tn);
		if (tn->tn_identity == NULL) {
			log_warnx("%s: tenant '%s' has no identity line",
			    tc->tc_path, tn->tn_name);
			errors++;
			continue;
		}
		for (other = TAILQ_NEXT(tn, tn_entry); other != NULL;
		    other = TAILQ_NEXT(other, tn_entry)) {
			if (other->tn_identity != NULL &&
			    strcmp(other->tn_identity, tn->tn_identity) == 0) {
				log_warnx("%s: tenants '%s' and '%s' share the "
				    "identity '%s'", tc->tc_path, tn->tn_name,
				    other->tn_name, tn->tn_identity);
				errors++;
			}
		}
	}
	return errors == 0 ? 0 : -1;
}

/*
 * Reads and checks the configuration at path.  Returns the
 * configuration, or NULL after logging every error found.
 */
struct target_conf *
target_conf_load(const char *path)
{
	struct conf_state	 cs;
	struct target_conf	*tc;

	if ((tc = calloc(1, sizeof(*tc))) == NULL ||
	    (tc->tc_path = strdup(path)) == NULL)
		fatal("calloc");
	tc->tc_direct_io = 1;
	TAILQ_INIT(&tc->tc_tenants);
	memset(&cs, 0, sizeof(cs));
	cs.cs_conf = tc;
	if (conf_parse_file(path, conf_line, &cs) == -1) {
		cs.cs_errors++;
		/* An unreadable file has said all there is to say. */
		if (access(path, R_OK) == -1) {
			target_conf_free(tc);
			return NULL;
		}
	}
	if (conf_finish(tc) == -1)
		cs.cs_errors++;
	if (cs.cs_errors > 0) {
		target_conf_free(tc);
		return NULL;
	}
	return tc;
}

void
target_conf_free(struct target_conf *tc)
{
	struct tenant	*tn;

	if (tc == NULL)
		return;
	while ((tn = TAILQ_FIRST(&tc->tc_tenants)) != NULL) {
		TAILQ_REMOVE(&tc->tc_tenants, tn, tn_entry);
		free(tn->tn_name);
		free(tn->tn_identity);
		free(tn->tn_kms);
		free(tn->tn_kms_cert);
		free(tn->tn_kms_key);
		free(tn->tn_kms_ca);
		free(tn->tn_kms_server_name);
		free(tn->tn_kek_name);
		free(tn->tn_password_file);
		free(tn->tn_keychain);
		free(tn);
	}
	free(tc->tc_path);
	free(tc->tc_listen);
	free(tc->tc_cert);
	free(tc->tc_key);
	free(tc->tc_ca);
	free(tc->tc_crl);
	free(tc->tc_repository);
	free(tc->tc_metrics);
	target_conf_free(tc->tc_previous);
	free(tc);
}

/* The tenant whose identity the verified peer certificate carries. */
struct tenant *
target_tenant_for(struct target_conf *tc, SSL *ssl)
{
	struct tenant	*tn;

	TAILQ_FOREACH(tn, &tc->tc_tenants, tn_entry) {
		if (tls_peer_has_identity(ssl, tn->tn_identity))
			return tn;
	}
	return NULL;
}

/*
 * The repository of an offline command (verify, prune): path if given
 * (--repository), else the one conffile (or the default) names, with
 * *tc holding it until target_conf_free.  NULL if that does not load.
 */
const char *
target_conf_repository(const char *path, const char *conffile,
    struct target_conf **tc)
{
	*tc = NULL;
	if (path != NULL)
		return path;
	if ((*tc = target_conf_load(conffile != NULL ? conffile :
	    TARGET_CONF_DEFAULT)) == NULL)
		return NULL;
	return (*tc)->tc_repository;
}
