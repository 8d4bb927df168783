/*
 * config.c: target-transporter's configuration file.
 *
 * Every error is reported as "file:line: message", all of them in one
 * pass, so an operator fixes a file in one edit.
 */
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
conf_set_string(struct conf_state *cs, char **dst, const char *key,
    const char *value, int line)
{
	if (*dst != NULL) {
		log_warnx("%s:%d: %s is set twice", cs->cs_conf->tc_path,
		    line, key);
		return -1;
	}
	if ((*dst = strdup(value)) == NULL)
		fatal("strdup");
	return 0;
}

static int
conf_global(struct conf_state *cs, const char *key, const char *value,
    int line)
{
	struct target_conf	*tc = cs->cs_conf;

	if (strcmp(key, "listen") == 0)
		return conf_set_string(cs, &tc->tc_listen, key, value, line);
	if (strcmp(key, "certificate") == 0)
		return conf_set_string(cs, &tc->tc_cert, key, value, line);
	if (strcmp(key, "key") == 0)
		return conf_set_string(cs, &tc->tc_key, key, value, line);
	if (strcmp(key, "ca") == 0)
		return conf_set_string(cs, &tc->tc_ca, key, value, line);
	if (strcmp(key, "crl") == 0)
		return conf_set_string(cs, &tc->tc_crl, key, value, line);
	if (strcmp(key, "repository") == 0)
		return conf_set_string(cs, &tc->tc_repository, key, value,
		    line);
	if (strcmp(key, "workers") == 0) {
		if (conf_parse_uint(value, 0, 64, &tc->tc_workers) == -1) {
			log_warnx("%s:%d: workers must be 0 (one per core) "
			    "to 64, not '%s'", tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "metrics") == 0)
		return conf_set_string(cs, &tc->tc_metrics, key, value, line);
	if (strcmp(key, "max_sessions") == 0) {
		if (conf_parse_uint(value, 1, 100000,
		    &tc->tc_max_sessions) == -1) {
			log_warnx("%s:%d: max_sessions must be 1 to 100000, "
			    "not '%s'", tc->tc_path, line, value);
			return -1;
		}
		return 0;
	}
	log_warnx("%s:%d: unknown key '%s'", tc->tc_path, line, key);
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
	log_warnx("%s:%d: unknown key '%s' in [tenant %s]", tc->tc_path, line,
	    key, tn->tn_name);
	rv = -1;
 out:
	if (rv == -1)
		cs->cs_errors++;
	return rv;
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
	if (tc->tc_key != NULL &&
	    conf_check_key_file(tc->tc_key, err, sizeof(err)) == -1) {
		log_warnx("%s: %s", tc->tc_path, err);
		errors++;
	}
	if (TAILQ_EMPTY(&tc->tc_tenants)) {
		log_warnx("%s: no tenant is defined; add a section "
		    "'[tenant NAME]' with 'identity = CERTIFICATE-NAME'",
		    tc->tc_path);
		errors++;
	}
	TAILQ_FOREACH(tn, &tc->tc_tenants, tn_entry) {
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
