/*
 * fuzz_conf.c: the configuration parser (common/conf.c) and both
 * daemons' configuration loaders on top of it.
 *
 * The input is written to a memfd and read back through its
 * /proc/self/fd path, as conf_parse_file() reads any file.  Every
 * key = value the parser hands out goes through the value helpers
 * (size, integer, boolean, host:port); then target_conf_load() and
 * source_conf_load() read the same file with their own checks.
 */
#include <sys/mman.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "target.h"
#include "source.h"
#include "fuzz.h"

static int	 conf_fd = -1;
static char	 conf_path[64];
static volatile uint64_t fuzz_sink;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	if ((conf_fd = memfd_create("fuzz_conf", MFD_CLOEXEC)) == -1) {
		perror("memfd_create");
		abort();
	}
	snprintf(conf_path, sizeof(conf_path), "/proc/self/fd/%d", conf_fd);
	return 0;
}

/* Checks what the parser promises of every line it hands out. */
static int
fuzz_conf_cb(void *arg, const char *section, const char *section_arg,
    const char *key, const char *value, int line)
{
	uint64_t	 v;
	char		*host = NULL, *port = NULL;
	int		 b;

	FUZZ_CHECK(key != NULL && key[0] != '\0' && value != NULL);
	FUZZ_CHECK(section != NULL || section_arg == NULL);
	FUZZ_CHECK(line > 0);
	fuzz_sink += strlen(key) + strlen(value);
	if (section != NULL)
		fuzz_sink += strlen(section);
	if (section_arg != NULL)
		fuzz_sink += strlen(section_arg);
	if (conf_parse_size(value, &v) == 0)
		fuzz_sink += v;
	if (conf_parse_uint(value, 1, 65535, &v) == 0)
		FUZZ_CHECK(v >= 1 && v <= 65535);
	if (conf_parse_bool(value, &b) == 0)
		FUZZ_CHECK(b == 0 || b == 1);
	if (conf_split_hostport(value, &host, &port) == 0) {
		FUZZ_CHECK(host != NULL && host[0] != '\0');
		fuzz_sink += strlen(host) + (port != NULL ? strlen(port) : 0);
	} else
		FUZZ_CHECK(host == NULL && port == NULL);
	free(host);
	free(port);
	/* Every other line is refused, to exercise error counting. */
	return line % 2 == 0 ? 0 : -1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct target_conf	*tc;
	struct source_conf	*sc;

	if (ftruncate(conf_fd, 0) == -1 ||
	    pwrite(conf_fd, data, size, 0) != (ssize_t)size)
		abort();
	(void)conf_parse_file(conf_path, fuzz_conf_cb, NULL);
	if ((tc = target_conf_load(conf_path)) != NULL) {
		FUZZ_CHECK(tc->tc_cert != NULL && tc->tc_key != NULL &&
		    tc->tc_ca != NULL && tc->tc_repository != NULL);
		target_conf_free(tc);
	}
	if ((sc = source_conf_load(conf_path)) != NULL) {
		FUZZ_CHECK(sc->sc_target != NULL && sc->sc_ca != NULL);
		source_conf_free(sc);
	}
	return 0;
}
