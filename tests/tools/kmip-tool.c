/*
 * kmip-tool: the KMIP client of common/kmip.c on the command line, for
 * tests and for operators who manage transporter's key-encrypting keys.
 *
 *   kmip-tool [-v] [-t seconds] -H host -p port -c cert -k key -C ca
 *       [-n servername] command [argument]
 *
 * Exit status: 0 done, 1 the KMS refused or failed, 2 usage,
 * 3 cannot connect (network, TLS, certificates).
 */
#include <sys/types.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common.h"
#include "kmip.h"

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr,
	    "usage: kmip-tool [-v] [-t seconds] -H host -p port -c cert "
	    "-k key -C ca\n"
	    "                 [-n servername] command [argument]\n"
	    "commands:\n"
	    "  create NAME        new AES-256 key, Pre-Active; prints its id\n"
	    "  activate UID       Pre-Active -> Active\n"
	    "  locate NAME        ids of the keys named NAME, one a line\n"
	    "  versions NAME      id, state, initial and activation date of\n"
	    "                     each key named NAME, oldest first\n"
	    "  attrs UID          id, state, initial and activation date\n"
	    "  get UID            the key, in hex\n"
	    "  newest NAME        id, version and key (hex) of the newest\n"
	    "                     Active key named NAME\n"
	    "  revoke UID [superseded|cessation|compromise|unspecified]\n"
	    "  destroy UID        (not while Active)\n");
	exit(EXIT_USAGE);
}

static void
print_key(const uint8_t *key, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		printf("%02x", key[i]);
}

static void
print_info(const struct kmip_key_info *ki)
{
	printf("%s %s %lld %lld\n", ki->ki_uid,
	    kmip_state_name(ki->ki_state), (long long)ki->ki_initial_date,
	    (long long)ki->ki_activation_date);
}

static int
revoke_reason(const char *s, uint32_t *reason)
{
	if (s == NULL || strcmp(s, "superseded") == 0)
		*reason = KMIP_REVOKE_SUPERSEDED;
	else if (strcmp(s, "cessation") == 0)
		*reason = KMIP_REVOKE_CESSATION;
	else if (strcmp(s, "compromise") == 0)
		*reason = KMIP_REVOKE_COMPROMISE;
	else if (strcmp(s, "unspecified") == 0)
		*reason = KMIP_REVOKE_UNSPECIFIED;
	else
		return -1;
	return 0;
}

int
main(int argc, char *argv[])
{
	struct kmip_conn	*kc = NULL;
	struct kmip_key_info	 ki, *keys = NULL;
	const char		*host = NULL, *port = "5696", *cert = NULL;
	const char		*key = NULL, *ca = NULL, *servername = NULL;
	const char		*cmd, *arg, *extra;
	char			 uid[KMIP_UID_MAX], **uids = NULL;
	uint8_t			 kbuf[KMIP_KEY_LEN];
	int64_t			 version;
	uint32_t		 reason = 0;
	size_t			 n = 0, i;
	long			 secs;
	char			*end;
	int			 ch, verbose = 0, timeout_ms = KMIP_TIMEOUT_MS;
	int			 rv = EXIT_ERROR, r;

	while ((ch = getopt(argc, argv, "C:c:H:k:n:p:t:v")) != -1) {
		switch (ch) {
		case 'C':
			ca = optarg;
			break;
		case 'c':
			cert = optarg;
			break;
		case 'H':
			host = optarg;
			break;
		case 'k':
			key = optarg;
			break;
		case 'n':
			servername = optarg;
			break;
		case 'p':
			port = optarg;
			break;
		case 't':
			secs = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || secs < 1 ||
			    secs > 3600)
				usage();
			timeout_ms = (int)secs * 1000;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 2 || argc > 3 || host == NULL || cert == NULL ||
	    key == NULL || ca == NULL)
		usage();
	cmd = argv[0];
	arg = argv[1];
	extra = argc == 3 ? argv[2] : NULL;
	if (strcmp(cmd, "revoke") == 0) {
		if (revoke_reason(extra, &reason) == -1)
			usage();
	} else if (extra != NULL)
		usage();
	if (strcmp(cmd, "create") != 0 && strcmp(cmd, "activate") != 0 &&
	    strcmp(cmd, "locate") != 0 && strcmp(cmd, "versions") != 0 &&
	    strcmp(cmd, "attrs") != 0 && strcmp(cmd, "get") != 0 &&
	    strcmp(cmd, "newest") != 0 && strcmp(cmd, "revoke") != 0 &&
	    strcmp(cmd, "destroy") != 0)
		usage();

	log_init("kmip-tool", 1, verbose);
	signal(SIGPIPE, SIG_IGN);

	/* kmip.c has logged why. */
	if ((kc = kmip_connect_timeout(host, port, cert, key, ca, servername,
	    timeout_ms)) == NULL)
		return EXIT_CONNECT;

	if (strcmp(cmd, "create") == 0) {
		if ((r = kmip_create(kc, arg, uid)) == 0)
			printf("%s\n", uid);
	} else if (strcmp(cmd, "activate") == 0) {
		r = kmip_activate(kc, arg);
	} else if (strcmp(cmd, "locate") == 0) {
		if ((r = kmip_locate(kc, arg, &uids, &n)) == 0)
			for (i = 0; i < n; i++)
				printf("%s\n", uids[i]);
	} else if (strcmp(cmd, "versions") == 0) {
		if ((r = kmip_versions(kc, arg, &keys, &n)) == 0)
			for (i = 0; i < n; i++)
				print_info(&keys[i]);
	} else if (strcmp(cmd, "attrs") == 0) {
		if ((r = kmip_get_attributes(kc, arg, &ki)) == 0)
			print_info(&ki);
	} else if (strcmp(cmd, "get") == 0) {
		if ((r = kmip_get(kc, arg, kbuf)) == 0) {
			print_key(kbuf, sizeof(kbuf));
			printf("\n");
		}
	} else if (strcmp(cmd, "newest") == 0) {
		if ((r = kmip_newest_active(kc, arg, uid, kbuf,
		    &version)) == 0) {
			printf("%s %lld ", uid, (long long)version);
			print_key(kbuf, sizeof(kbuf));
			printf("\n");
		}
	} else if (strcmp(cmd, "revoke") == 0) {
		r = kmip_revoke(kc, arg, reason);
	} else
		r = kmip_destroy(kc, arg);

	if (r == 0 && fflush(stdout) == 0)
		rv = EXIT_OK;
	OPENSSL_cleanse(kbuf, sizeof(kbuf));
	kmip_uids_free(uids, n);
	free(keys);
	kmip_close(kc);
	return rv;
}
