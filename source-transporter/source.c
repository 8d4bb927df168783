/*
 * source.c: source-transporter's command line.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "source.h"

static void
usage(FILE *fp)
{
	fprintf(fp,
	    "usage: source-transporter [-v] [-f config] [--log-format text|json]\n"
	    "                          command [options]\n"
	    "\n"
	    "Backs VM disks up to a target-transporter over mutual TLS and\n"
	    "restores them.\n"
	    "\n"
	    "commands (COMMAND --help lists all of its options):\n"
	    "  backup  --disk PATH|NBD-URI --name NAME [--encryption MODE] [--full]\n"
	    "          [--dirty-bitmap NAME] [--transport MODE] [--json]\n"
	    "          [--accept-rollback]\n"
	    "          back a disk up as a new restore point (see backup --help)\n"
	    "  list    [--name NAME] [--check-keys] [--json] [--keys]\n"
	    "          [--accept-rollback]\n"
	    "          list the restore points on the target\n"
	    "  status  [--json]\n"
	    "          the target's version and each backup's newest point\n"
	    "  agent   run the [job NAME] backups of the configuration on their\n"
	    "          schedules, as a service (systemd: source-transporter.service)\n"
	    "  restore --name NAME [--point ID] --output PATH [--force] [--json]\n"
	    "          [--key-file FILE --passphrase-file FILE]\n"
	    "          write a restore point back to a file or block device\n"
	    "  verify  --name NAME [--point ID] [--json] [--accept-rollback]\n"
	    "  verify  --all [--name NAME] [--json] [--accept-rollback]\n"
	    "          read a restore point (--all: every point of the name, or\n"
	    "          of every name) back and check every block and the chain\n"
	    "          of points, writing nothing; names each damage (exit 5)\n"
	    "  keys export --name NAME --output FILE --passphrase-file FILE\n"
	    "          save a backup's keys under a passphrase, for disaster\n"
	    "          recovery without the KMS\n"
	    "  keys change-password --name NAME --new-password-file FILE\n"
	    "          wrap a password backup's keys under a new password\n"
	    "  benchmark [--seconds N] [--json]\n"
	    "          this machine's speed at each stage (needs no config)\n"
	    "\n"
	    "options:\n"
	    "  -f config  configuration file (default %s)\n"
	    "  -v         verbose\n"
	    "  -h, --help this text\n"
	    "  --log-format json  messages as one JSON object per line\n"
	    "  -V         print the version and exit\n"
	    "\n"
	    "exit codes: 0 ok, 1 error, 2 usage or configuration, 3 connection,\n"
	    "TLS or identity refused, 4 no such backup or restore point,\n"
	    "5 integrity failure, 6 disk or output unreadable/unwritable,\n"
	    "7 target storage full or failing, or the tenant's quota reached,\n"
	    "8 key unavailable, 9 the target went back: it lacks the newest\n"
	    "point this source committed (rolled back; --accept-rollback goes\n"
	    "on).\n",
	    SOURCE_CONF_DEFAULT);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "log-format",	required_argument, NULL, 'L' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ "version",	no_argument,	   NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	struct source_conf	*sc;
	const char		*conffile = SOURCE_CONF_DEFAULT;
	const char		*cmd;
	int			 ch, verbose = 0, rv, json = 0, stats_fd;

	/* '+': options after the command belong to the command. */
	while ((ch = getopt_long(argc, argv, "+f:hvV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'L':
			if (log_format_arg("source-transporter", optarg,
			    &json) == -1)
				return EXIT_USAGE;
			break;
		case 'f':
			conffile = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case 'v':
			verbose++;
			break;
		case 'V':
			printf("source-transporter %s\n", TRANSPORTER_VERSION);
			return EXIT_OK;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[0];
	log_init("source-transporter", 1, verbose);
	tune_malloc();
	log_set_format(json);
	if (strcmp(cmd, "help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(cmd, "backup") != 0 && strcmp(cmd, "restore") != 0 &&
	    strcmp(cmd, "list") != 0 && strcmp(cmd, "keys") != 0 &&
	    strcmp(cmd, "status") != 0 && strcmp(cmd, "benchmark") != 0 &&
	    strcmp(cmd, "agent") != 0 && strcmp(cmd, "verify") != 0) {
		log_warnx("unknown command '%s'; try 'source-transporter -h'",
		    cmd);
		return EXIT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	sc = NULL;
	for (ch = 1; ch < argc; ch++)
		if (strcmp(argv[ch], "--help") == 0)
			break;
	/* A command's --help needs no configuration, nor does benchmark. */
	if (ch == argc && strcmp(cmd, "benchmark") != 0 &&
	    (sc = source_conf_load(conffile)) == NULL)
		return EXIT_USAGE;
	if (strcmp(cmd, "backup") == 0) {
		/* A backup the agent runs counts for the agent's metrics. */
		stats_fd = agent_stats_fd();
		rv = cmd_backup(sc, argc, argv);
		agent_stats_send(stats_fd);
	}
	else if (strcmp(cmd, "restore") == 0)
		rv = cmd_restore(sc, argc, argv);
	else if (strcmp(cmd, "keys") == 0)
		rv = cmd_keys(sc, argc, argv);
	else if (strcmp(cmd, "status") == 0)
		rv = cmd_status(sc, argc, argv);
	else if (strcmp(cmd, "agent") == 0)
		rv = cmd_agent(sc, argc, argv);
	else if (strcmp(cmd, "verify") == 0)
		rv = cmd_verify(sc, argc, argv);
	else if (strcmp(cmd, "benchmark") == 0)
		rv = cmd_benchmark(sc, argc, argv);
	else
		rv = cmd_list(sc, argc, argv);
	source_conf_free(sc);
	return rv;
}
