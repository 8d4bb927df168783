/*
 * config.c: source-transporter's configuration file.  All errors are
 * reported at once as "file:line: message".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source.h"

struct conf_state {
	struct source_conf	*cs_conf;
	struct source_job	*cs_job;	/* section being read */
	int			 cs_errors;
};

/* "in-flight" or "source-side" into an EncryptionMode: 0 or -1. */
int
source_parse_encryption(const char *value, uint32_t *mode)
{
	if (strcmp(value, "in-flight") == 0)
		*mode = ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT;
	else if (strcmp(value, "source-side") == 0)
		*mode = ENCRYPTION_MODE__ENCRYPTION_SOURCE_SIDE;
	else
		return -1;
	return 0;
}

static int
conf_key(struct source_conf *sc, const char *key, const char *value,
    int line)
{
	int	 on;

	if (strcmp(key, "target") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_target);
	if (strcmp(key, "server_name") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_server_name);
	if (strcmp(key, "certificate") == 0)
		return conf_set_file(sc->sc_path, line, key, value, 0,
		    &sc->sc_cert);
	if (strcmp(key, "key") == 0)
		return conf_set_file(sc->sc_path, line, key, value, 1,
		    &sc->sc_key);
	if (strcmp(key, "ca") == 0)
		return conf_set_file(sc->sc_path, line, key, value, 0,
		    &sc->sc_ca);
	if (strcmp(key, "crl") == 0)
		return conf_set_file(sc->sc_path, line, key, value, 0,
		    &sc->sc_crl);
	if (strcmp(key, "block_size") == 0) {
		if (conf_parse_size(value, &sc->sc_block_size) == -1 ||
		    sc->sc_block_size < BLOCK_SIZE_MIN ||
		    sc->sc_block_size > BLOCK_SIZE_MAX ||
		    (sc->sc_block_size & (sc->sc_block_size - 1)) != 0) {
			log_warnx("%s:%d: block_size must be a power of two "
			    "from 64K to 16M, not '%s'", sc->sc_path, line,
			    value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "compression_level") == 0) {
		if (conf_parse_uint(value, 1, 19,
		    &sc->sc_compression_level) == -1) {
			log_warnx("%s:%d: compression_level must be 1 to 19, "
			    "not '%s'", sc->sc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "roundtrip_check") == 0) {
		if (strcmp(value, "auto") == 0)
			sc->sc_roundtrip_check = ROUNDTRIP_AUTO;
		else if (conf_parse_bool(value, &on) == 0)
			sc->sc_roundtrip_check = on ? ROUNDTRIP_YES :
			    ROUNDTRIP_NO;
		else {
			log_warnx("%s:%d: roundtrip_check must be auto, yes or "
			    "no, not '%s'", sc->sc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "direct_io") == 0) {
		if (conf_parse_bool(value, &sc->sc_direct_io) == -1) {
			log_warnx("%s:%d: direct_io must be yes or no, not '%s'",
			    sc->sc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "workers") == 0) {
		if (conf_parse_uint(value, 0, 64, &sc->sc_workers) == -1) {
			log_warnx("%s:%d: workers must be 0 (one per core) to "
			    "64, not '%s'", sc->sc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "connections") == 0) {
		if (conf_parse_uint(value, 1, JOB_CONNECTIONS_MAX,
		    &sc->sc_connections) == -1) {
			log_warnx("%s:%d: connections must be 1 to %d, not '%s'",
			    sc->sc_path, line, JOB_CONNECTIONS_MAX, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "window") == 0) {
		if (conf_parse_size(value, &sc->sc_window) == -1 ||
		    sc->sc_window < SOURCE_WINDOW_MIN ||
		    sc->sc_window > (8ull << 30)) {
			log_warnx("%s:%d: window must be 64M to 8G, not '%s'",
			    sc->sc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "kms") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_kms);
	if (strcmp(key, "kms_certificate") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_kms_cert);
	if (strcmp(key, "kms_key") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_kms_key);
	if (strcmp(key, "kms_ca") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_kms_ca);
	if (strcmp(key, "kms_server_name") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_kms_server_name);
	if (strcmp(key, "metrics") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_metrics);
	if (strcmp(key, "state_directory") == 0) {
		if (value[0] != '/') {
			log_warnx("%s:%d: state_directory must be an absolute "
			    "path, not '%s'", sc->sc_path, line, value);
			return -1;
		}
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_state_dir);
	}
	if (strcmp(key, "bandwidth_limit") == 0) {
		if (source_parse_bandwidth(value, &sc->sc_bandwidth) == -1) {
			log_warnx("%s:%d: bandwidth_limit must be 0 (none) or at "
			    "least 64K bytes per second, not '%s'", sc->sc_path,
			    line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "kek_name") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sc->sc_kek_name);
	if (strcmp(key, "password_file") == 0)
		return conf_set_file(sc->sc_path, line, key, value, 1,
		    &sc->sc_password_file);
	if (strcmp(key, "encryption") == 0) {
		if (source_parse_encryption(value, &sc->sc_encryption) == -1) {
			log_warnx("%s:%d: encryption must be in-flight or "
			    "source-side, not '%s'", sc->sc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "key_provider") == 0) {
		if (strcmp(value, "kmip") == 0)
			sc->sc_key_provider = KEY_PROVIDER__KEY_PROVIDER_KMIP;
		else if (strcmp(value, "password") == 0)
			sc->sc_key_provider =
			    KEY_PROVIDER__KEY_PROVIDER_PASSWORD;
		else {
			log_warnx("%s:%d: key_provider must be kmip or "
			    "password, not '%s'", sc->sc_path, line, value);
			return -1;
		}
		return 0;
	}
	if (strcmp(key, "resume_timeout") == 0) {
		if (conf_parse_duration(value, &sc->sc_resume_timeout) == -1 ||
		    sc->sc_resume_timeout > 7 * 86400) {
			log_warnx("%s:%d: resume_timeout must be a duration "
			    "such as 0, 90s, 30m or 2h (at most 7 days), not "
			    "'%s'", sc->sc_path, line, value);
			return -1;
		}
		sc->sc_resume_set = 1;
		return 0;
	}
	log_warnx("%s:%d: unknown key '%s'", sc->sc_path, line, key);
	return -1;
}

/* A key of a [job NAME] section. */
/* A bandwidth limit: 0 (none) or at least 64K bytes per second. */
int
source_parse_bandwidth(const char *value, uint64_t *rate)
{
	if (conf_parse_size(value, rate) == -1 ||
	    (*rate != 0 && *rate < (64u << 10)))
		return -1;
	return 0;
}

/* --bandwidth-limit's argument; -1 after a message. */
int
source_bandwidth_option(const char *arg, uint64_t *rate)
{
	if (source_parse_bandwidth(arg, rate) == 0)
		return 0;
	log_warnx("--bandwidth-limit must be 0 (none) or at least 64K bytes "
	    "per second, not '%s'", arg);
	return -1;
}

/* --connections N of backup, restore and verify: 0, or -1 after a message. */
int
source_connections_option(const char *arg, uint64_t *n)
{
	if (conf_parse_uint(arg, 1, JOB_CONNECTIONS_MAX, n) == 0)
		return 0;
	log_warnx("--connections must be 1 to %d, not '%s'",
	    JOB_CONNECTIONS_MAX, arg);
	return -1;
}

static int
conf_job(struct conf_state *cs, const char *name, const char *key,
    const char *value, int line)
{
	struct source_conf	*sc = cs->cs_conf;
	struct source_job	*sj, **tail;
	uint32_t		 mode;

	if (!name_is_valid(name)) {
		log_warnx("%s:%d: a job needs a backup name: [job NAME]",
		    sc->sc_path, line);
		return -1;
	}
	if (cs->cs_job == NULL || strcmp(cs->cs_job->sj_name, name) != 0) {
		for (sj = sc->sc_jobs; sj != NULL; sj = sj->sj_next)
			if (strcmp(sj->sj_name, name) == 0) {
				log_warnx("%s:%d: job '%s' is defined twice",
				    sc->sc_path, line, name);
				return -1;
			}
		if ((sj = calloc(1, sizeof(*sj))) == NULL ||
		    (sj->sj_name = strdup(name)) == NULL)
			fatal("calloc");
		for (tail = &sc->sc_jobs; *tail != NULL;
		    tail = &(*tail)->sj_next)
			;
		*tail = sj;
		cs->cs_job = sj;
	}
	sj = cs->cs_job;
	if (strcmp(key, "disk") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sj->sj_disk);
	if (strcmp(key, "dirty_bitmap") == 0)
		return conf_set_string(sc->sc_path, line, key, value,
		    &sj->sj_dirty_bitmap);
	if (strcmp(key, "bandwidth_limit") == 0) {
		uint64_t	 rate;

		if (source_parse_bandwidth(value, &rate) == -1) {
			log_warnx("%s:%d: bandwidth_limit must be 0 (none) or "
			    "at least 64K bytes per second, not '%s'",
			    sc->sc_path, line, value);
			return -1;
		}
		return conf_set_string(sc->sc_path, line, key, value,
		    &sj->sj_bandwidth);
	}
	if (strcmp(key, "connections") == 0) {
		uint64_t	 n;

		if (conf_parse_uint(value, 1, JOB_CONNECTIONS_MAX, &n) == -1) {
			log_warnx("%s:%d: connections must be 1 to %d, not '%s'",
			    sc->sc_path, line, JOB_CONNECTIONS_MAX, value);
			return -1;
		}
		return conf_set_string(sc->sc_path, line, key, value,
		    &sj->sj_connections);
	}
	if (strcmp(key, "encryption") == 0) {
		if (source_parse_encryption(value, &mode) == -1) {
			log_warnx("%s:%d: encryption must be in-flight or "
			    "source-side, not '%s'", sc->sc_path, line, value);
			return -1;
		}
		return conf_set_string(sc->sc_path, line, key, value,
		    &sj->sj_encryption);
	}
	if (strcmp(key, "every") == 0) {
		if (conf_parse_duration(value, &sj->sj_every) == -1 ||
		    sj->sj_every < 60 || sj->sj_every > 366 * 86400) {
			log_warnx("%s:%d: every must be a duration from 60s to "
			    "366d, such as 30m, 6h or 1d, not '%s'",
			    sc->sc_path, line, value);
			return -1;
		}
		return 0;
	}
	log_warnx("%s:%d: unknown key '%s' in [job %s]", sc->sc_path, line,
	    key, name);
	return -1;
}

static int
conf_line(void *arg, const char *section, const char *section_arg,
    const char *key, const char *value, int line)
{
	struct conf_state	*cs = arg;
	int			 rv;

	if (section == NULL)
		rv = conf_key(cs->cs_conf, key, value, line);
	else if (strcmp(section, "job") == 0)
		rv = conf_job(cs, section_arg ? section_arg : "", key, value,
		    line);
	else {
		log_warnx("%s:%d: unknown section [%s]", cs->cs_conf->sc_path,
		    line, section);
		rv = -1;
	}
	if (rv == -1)
		cs->cs_errors++;
	return rv;
}

static int
conf_finish(struct source_conf *sc)
{
	struct source_job	*sj;
	char			 err[512];
	int			 errors = 0;

#define REQUIRE(field, key)						\
	if (sc->field == NULL) {					\
		log_warnx("%s: '" key "' is missing; add a line "	\
		    "'" key " = ...'", sc->sc_path);			\
		errors++;						\
	}
	REQUIRE(sc_target, "target");
	REQUIRE(sc_cert, "certificate");
	REQUIRE(sc_key, "key");
	REQUIRE(sc_ca, "ca");
#undef REQUIRE
	for (sj = sc->sc_jobs; sj != NULL; sj = sj->sj_next) {
		if (sj->sj_disk == NULL || sj->sj_every == 0) {
			log_warnx("%s: job '%s' needs 'disk' and 'every'",
			    sc->sc_path, sj->sj_name);
			errors++;
		}
	}
	if (sc->sc_block_size == 0)
		sc->sc_block_size = BLOCK_SIZE_DEFAULT;
	if (sc->sc_compression_level == 0)
		sc->sc_compression_level = COMPRESSION_LEVEL_DEFAULT;
	if (sc->sc_window == 0)
		sc->sc_window = SOURCE_WINDOW_DEFAULT;
	if (sc->sc_connections == 0)
		sc->sc_connections = SOURCE_CONNECTIONS_DEFAULT;
	if (!sc->sc_resume_set)
		sc->sc_resume_timeout = RESUME_TIMEOUT_DEFAULT;
	if (sc->sc_encryption == 0)
		sc->sc_encryption = ENCRYPTION_MODE__ENCRYPTION_IN_FLIGHT;
	if (sc->sc_state_dir == NULL &&
	    (sc->sc_state_dir = strdup(SOURCE_STATE_DIR_DEFAULT)) == NULL)
		fatal("strdup");
	if (sc->sc_kms_key != NULL &&
	    conf_check_key_file(sc->sc_kms_key, err, sizeof(err)) == -1) {
		log_warnx("%s: %s", sc->sc_path, err);
		errors++;
	}
	return errors ? -1 : 0;
}

/* Reads and checks path; NULL after logging every error. */
struct source_conf *
source_conf_load(const char *path)
{
	struct conf_state	 cs;
	struct source_conf	*sc;

	if ((sc = calloc(1, sizeof(*sc))) == NULL ||
	    (sc->sc_path = strdup(path)) == NULL)
		fatal("calloc");
	memset(&cs, 0, sizeof(cs));
	cs.cs_conf = sc;
	if (conf_parse_file(path, conf_line, &cs) == -1) {
		cs.cs_errors++;
		/* An unreadable file has said all there is to say. */
		if (access(path, R_OK) == -1) {
			source_conf_free(sc);
			return NULL;
		}
	}
	if (conf_finish(sc) == -1)
		cs.cs_errors++;
	if (cs.cs_errors) {
		source_conf_free(sc);
		return NULL;
	}
	return sc;
}

void
source_conf_free(struct source_conf *sc)
{
	struct source_job	*sj;

	if (sc == NULL)
		return;
	free(sc->sc_path);
	free(sc->sc_target);
	free(sc->sc_server_name);
	free(sc->sc_cert);
	free(sc->sc_key);
	free(sc->sc_ca);
	free(sc->sc_crl);
	free(sc->sc_kms);
	free(sc->sc_kms_cert);
	free(sc->sc_kms_key);
	free(sc->sc_kms_ca);
	free(sc->sc_kms_server_name);
	free(sc->sc_kek_name);
	free(sc->sc_password_file);
	free(sc->sc_metrics);
	free(sc->sc_state_dir);
	while ((sj = sc->sc_jobs) != NULL) {
		sc->sc_jobs = sj->sj_next;
		free(sj->sj_name);
		free(sj->sj_disk);
		free(sj->sj_encryption);
		free(sj->sj_dirty_bitmap);
		free(sj->sj_bandwidth);
		free(sj->sj_connections);
		free(sj);
	}
	free(sc);
}
