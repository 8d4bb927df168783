/*
 * keytool: common/keys.c on the command line, for tests and for
 * operators debugging keys: key chains, wrapped keys, KEKs from a KMS or
 * a password, exported key files.  It prints key ids and key check
 * values, never key bytes (but for --reveal-for-test, which tests use to
 * search files for a key).
 *
 *   keytool [options] command [arguments]
 *
 * Exit status: 0 done, 1 other failure, 2 usage, 5 a damaged file,
 * 8 a key problem (missing, wrong password, KMS down or refusing).
 */
#include <sys/types.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common.h"
#include "keys.h"
#include "kmip.h"

#define KEKS_MAX	1024

static struct kmip_settings	 ks;
static const char		*kek_spec, *new_spec, *pass_spec;
static int			 only_given, reveal;
static char			 err[KEY_ERR_MAX];

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr,
	    "usage: keytool [-vx] [-t seconds] [-H host] [-p port] [-c cert] "
	    "[-k key] [-C ca]\n"
	    "               [-n servername] [-K kek] [-N kek] [-P secret] "
	    "command [argument ...]\n"
	    "kek:    kmip:NAME           newest Active key NAME of the KMS "
	    "(-H -p -c -k -C)\n"
	    "        password:SECRET     a password KEK\n"
	    "secret: env:VARIABLE or file:PATH (its first line)\n"
	    "-x: use only -K, fetch no other KEK version from the KMS\n"
	    "commands:\n"
	    "  kmip-newest NAME       id and version of the newest Active key\n"
	    "  new [data|chunk-id] CHAIN\n"
	    "                         a new random key under -K added to CHAIN "
	    "(made if\n"
	    "                         missing); prints its id and check value\n"
	    "  add CHAIN FILE ...     copies the keys of FILEs into CHAIN\n"
	    "  list FILE              id, purpose and KEK of each key\n"
	    "  needs FILE ...         the KEKs the keys of FILEs need, oldest "
	    "first\n"
	    "                         (with -H: whether the KMS has each)\n"
	    "  rewrap CHAIN           every key wrapped again under -K\n"
	    "  unwrap CHAIN           id and check value of each key\n"
	    "  export CHAIN OUT       OUT: the keys under the passphrase -P\n"
	    "  import FILE            checks -P and each key of an exported "
	    "file\n"
	    "  passwd CHAIN           from password -K to password -N\n"
	    "  chunk-id CHAIN FILE    keyed chunk id of FILE under CHAIN's "
	    "chunk-id key\n");
	exit(EXIT_USAGE);
}

static void __attribute__((noreturn, format(printf, 2, 3)))
die(int code, const char *fmt, ...)
{
	va_list	 ap;

	fprintf(stderr, "keytool: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(code);
}

/*
 * A secret from "env:VAR" or "file:PATH" (first line), malloc'd; wipe
 * and free with secret_free().
 */
static char *
secret_get(const char *spec, const char *what)
{
	char	*s = NULL, *nl;
	size_t	 cap = 0;
	FILE	*fp;

	if (spec == NULL)
		die(EXIT_USAGE, "%s needed", what);
	if (strncmp(spec, "env:", 4) == 0) {
		if ((nl = getenv(spec + 4)) == NULL)
			die(EXIT_KEY, "%s: environment variable %s is not set",
			    what, spec + 4);
		if ((s = strdup(nl)) == NULL)
			die(EXIT_ERROR, "out of memory");
	} else if (strncmp(spec, "file:", 5) == 0) {
		if ((fp = fopen(spec + 5, "r")) == NULL)
			die(EXIT_KEY, "%s: %s: %s", what, spec + 5,
			    strerror(errno));
		if (getline(&s, &cap, fp) == -1) {
			fclose(fp);
			die(EXIT_KEY, "%s: %s is empty", what, spec + 5);
		}
		fclose(fp);
		if ((nl = strchr(s, '\n')) != NULL)
			*nl = '\0';
	} else
		die(EXIT_USAGE, "%s: '%s' is neither env:VARIABLE nor "
		    "file:PATH", what, spec);
	return s;
}

static void
secret_free(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

static struct keychain *
chain_load(const char *path, int must_exist)
{
	struct keychain	*kc;
	uint8_t		*buf;
	size_t		 len;
	const char	*base;
	char		 name[NAME_MAX_LEN + 1], *dot;

	if (!must_exist && access(path, F_OK) == -1 && errno == ENOENT) {
		base = strrchr(path, '/') != NULL ? strrchr(path, '/') + 1 :
		    path;
		(void)snprintf(name, sizeof(name), "%s", base);
		if ((dot = strchr(name, '.')) != NULL)
			*dot = '\0';
		if ((kc = keychain_new(name)) == NULL &&
		    (kc = keychain_new("")) == NULL)
			die(EXIT_ERROR, "out of memory");
		return kc;
	}
	if (keychain_read_file(path, &buf, &len, err, sizeof(err)) == -1)
		die(EXIT_ERROR, "%s", err);
	if (len >= 4 && memcmp(buf, KEYCHAIN_EXPORT_MAGIC, 4) == 0)
		die(EXIT_USAGE, "%s is an exported key file: use import", path);
	if ((kc = keychain_unpack(buf, len, err, sizeof(err))) == NULL)
		die(EXIT_INTEGRITY, "%s: %s", path, err);
	free(buf);
	return kc;
}

static void
chain_save(const struct keychain *kc, const char *path)
{
	uint8_t	*buf;
	size_t	 len;

	if (keychain_pack(kc, &buf, &len, err, sizeof(err)) == -1 ||
	    keychain_write_file(path, buf, len, err, sizeof(err)) == -1)
		die(EXIT_ERROR, "%s: %s", path, err);
	free(buf);
}

static void
print_key(const uint8_t *id, const struct key_buf *k)
{
	char	 hid[2 * KEY_ID_LEN + 1], kcv[2 * KEY_KCV_LEN + 1];
	char	 hk[2 * KEY_LEN + 1];

	hex_encode(id, KEY_ID_LEN, hid);
	if (reveal) {
		hex_encode(k->kb_key, KEY_LEN, hk);
		printf("%s %s\n", hid, hk);
		OPENSSL_cleanse(hk, sizeof(hk));
	} else {
		if (key_check_value(k, kcv) == -1)
			die(EXIT_ERROR, "key check value failed");
		printf("%s %s\n", hid, kcv);
	}
}

/*
 * The KEK -K names.  For "password:", existing (may be NULL) is the ref
 * to reopen; a new password KEK otherwise.
 */
static void
kek_get(const char *spec, const KekRef *existing, struct kek *k)
{
	char	*pw;
	int	 rc;

	if (spec == NULL)
		die(EXIT_USAGE, "no KEK: give -K kmip:NAME or -K password:...");
	if (strncmp(spec, "kmip:", 5) == 0) {
		if (kek_from_kmip(&ks, spec + 5, k, err, sizeof(err)) == -1)
			die(EXIT_KEY, "%s", err);
	} else if (strncmp(spec, "password:", 9) == 0) {
		pw = secret_get(spec + 9, "password");
		rc = kek_from_password(pw, existing, k, err, sizeof(err));
		secret_free(pw);
		if (rc == -1)
			die(EXIT_KEY, "%s", err);
	} else
		die(EXIT_USAGE, "KEK '%s' is neither kmip:NAME nor "
		    "password:SECRET", spec);
}

/* The chain's first password KEK reference, or NULL. */
static const KekRef *
chain_password_ref(const struct keychain *kc)
{
	size_t	 i;

	for (i = 0; i < kc->kc_nkeys; i++)
		if (kc->kc_keys[i]->kek->provider ==
		    KEY_PROVIDER__KEY_PROVIDER_PASSWORD)
			return kc->kc_keys[i]->kek;
	return NULL;
}

/*
 * Every KEK the chain needs: -K's where it matches, KMIP versions by id
 * from the KMS (not with -x), password KEKs from -K's password.
 * Returns the number loaded into keks[].
 */
static size_t
keks_load(const struct keychain *kc, const struct kek *primary,
    struct kek *keks)
{
	KekRef	**refs;
	char	 desc[KEY_ERR_MAX], *pw = NULL;
	size_t	 n, i, nk = 0;

	if (keychain_needed_keks(kc, &refs, &n, err, sizeof(err)) == -1)
		die(EXIT_ERROR, "%s", err);
	if (n > KEKS_MAX)
		die(EXIT_ERROR, "more than %d KEKs", KEKS_MAX);
	for (i = 0; i < n; i++) {
		if (primary != NULL && kek_ref_same(refs[i], primary->k_ref))
			continue;
		kek_ref_describe(refs[i], desc, sizeof(desc));
		if (refs[i]->provider == KEY_PROVIDER__KEY_PROVIDER_KMIP) {
			if (only_given)
				die(EXIT_KEY, "a key needs %s, not loaded (-x: "
				    "only -K)", desc);
			if (kek_from_kmip_ref(&ks, refs[i], &keks[nk], err,
			    sizeof(err)) == -1)
				die(EXIT_KEY, "%s", err);
		} else {
			if (kek_spec == NULL ||
			    strncmp(kek_spec, "password:", 9) != 0)
				die(EXIT_KEY, "a key needs %s: give -K "
				    "password:...", desc);
			if (pw == NULL)
				pw = secret_get(kek_spec + 9, "password");
			if (kek_from_password(pw, refs[i], &keks[nk], err,
			    sizeof(err)) == -1)
				die(EXIT_KEY, "%s", err);
		}
		nk++;
	}
	secret_free(pw);
	keychain_refs_free(refs, n);
	return nk;
}

/* -K for commands that only unwrap: kmip: fetched, password: per ref. */
static int
primary_get(struct kek *k)
{
	if (kek_spec == NULL || strncmp(kek_spec, "kmip:", 5) != 0)
		return 0;
	kek_get(kek_spec, NULL, k);
	return 1;
}

static const struct kek **
kek_ptrs(struct kek *primary, int have_primary, struct kek *keks, size_t nk,
    size_t *np)
{
	static const struct kek	*p[KEKS_MAX + 1];
	size_t			 i, n = 0;

	if (have_primary)
		p[n++] = primary;
	for (i = 0; i < nk; i++)
		p[n++] = &keks[i];
	*np = n;
	return p;
}

static int
cmd_new(int argc, char **argv)
{
	struct keychain	*kc;
	struct key_buf	 k = { NULL, 0 };
	struct kek	 kek = { { NULL, 0 }, NULL };
	WrappedKey	*w;
	uint8_t		 id[KEY_ID_LEN];
	uint32_t	 purpose = KEY_PURPOSE_DATA;
	const char	*path;

	if (argc == 2) {
		if (strcmp(argv[0], "chunk-id") == 0)
			purpose = KEY_PURPOSE_CHUNK_ID;
		else if (strcmp(argv[0], "data") != 0)
			usage();
		path = argv[1];
	} else if (argc == 1)
		path = argv[0];
	else
		usage();
	kc = chain_load(path, 0);
	kek_get(kek_spec, chain_password_ref(kc), &kek);
	if (kek.k_ref->provider == KEY_PROVIDER__KEY_PROVIDER_PASSWORD &&
	    *kek.k_ref->key_name == '\0' &&
	    kek_set_name(&kek, kc->kc_name, err, sizeof(err)) == -1)
		die(EXIT_ERROR, "%s", err);
	if (dek_new(&k, id) == -1)
		die(EXIT_ERROR, "no new key");
	if (key_wrap(&kek, purpose, id, &k, &w, err, sizeof(err)) == -1 ||
	    keychain_add(kc, w, err, sizeof(err)) == -1)
		die(EXIT_ERROR, "%s", err);
	chain_save(kc, path);
	print_key(id, &k);
	key_wrapped_free(w);
	key_buf_free(&k);
	kek_free(&kek);
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_add(int argc, char **argv)
{
	struct keychain	*kc, *from;
	size_t		 i, before;
	int		 a;

	if (argc < 2)
		usage();
	kc = chain_load(argv[0], 0);
	before = kc->kc_nkeys;
	for (a = 1; a < argc; a++) {
		from = chain_load(argv[a], 1);
		for (i = 0; i < from->kc_nkeys; i++)
			if (keychain_add(kc, from->kc_keys[i], err,
			    sizeof(err)) == -1)
				die(EXIT_ERROR, "%s", err);
		keychain_free(from);
	}
	chain_save(kc, argv[0]);
	printf("%zu keys added, %zu in all\n", kc->kc_nkeys - before,
	    kc->kc_nkeys);
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_list(int argc, char **argv)
{
	struct keychain	*kc;
	char		 hid[2 * KEY_ID_LEN + 1], desc[KEY_ERR_MAX];
	size_t		 i;

	if (argc != 1)
		usage();
	kc = chain_load(argv[0], 1);
	for (i = 0; i < kc->kc_nkeys; i++) {
		hex_encode(kc->kc_keys[i]->key_id.data, KEY_ID_LEN, hid);
		kek_ref_describe(kc->kc_keys[i]->kek, desc, sizeof(desc));
		printf("%s %s %s\n", hid,
		    key_purpose_name(kc->kc_keys[i]->purpose), desc);
	}
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_needs(int argc, char **argv)
{
	struct keychain	*kc;
	struct kek	 k = { { NULL, 0 }, NULL };
	KekRef		**refs;
	char		 desc[KEY_ERR_MAX];
	size_t		 n, i;
	int		 a, missing = 0;

	if (argc < 1)
		usage();
	for (a = 0; a < argc; a++) {
		kc = chain_load(argv[a], 1);
		if (keychain_needed_keks(kc, &refs, &n, err,
		    sizeof(err)) == -1)
			die(EXIT_ERROR, "%s", err);
		for (i = 0; i < n; i++) {
			kek_ref_describe(refs[i], desc, sizeof(desc));
			printf("%s: %s", argv[a], desc);
			if (ks.ks_host != NULL && refs[i]->provider ==
			    KEY_PROVIDER__KEY_PROVIDER_KMIP) {
				if (kek_from_kmip_ref(&ks, refs[i], &k, err,
				    sizeof(err)) == 0)
					printf(": available");
				else {
					printf(": NOT AVAILABLE: %s", err);
					missing = 1;
				}
				kek_free(&k);
			}
			printf("\n");
		}
		keychain_refs_free(refs, n);
		keychain_free(kc);
	}
	return missing ? EXIT_KEY : EXIT_OK;
}

static int
cmd_rewrap(int argc, char **argv)
{
	struct keychain	*kc;
	struct kek	 newk = { { NULL, 0 }, NULL }, keks[KEKS_MAX];
	const struct kek **p;
	char		 desc[KEY_ERR_MAX];
	size_t		 nk, np, n, i;

	if (argc != 1)
		usage();
	memset(keks, 0, sizeof(keks));
	kc = chain_load(argv[0], 1);
	kek_get(kek_spec, NULL, &newk);
	nk = keks_load(kc, &newk, keks);
	p = kek_ptrs(&newk, 0, keks, nk, &np);
	if (keychain_rewrap(kc, p, np, &newk, &n, err, sizeof(err)) == -1)
		die(EXIT_KEY, "%s", err);
	chain_save(kc, argv[0]);
	kek_ref_describe(newk.k_ref, desc, sizeof(desc));
	printf("%zu of %zu keys wrapped again under %s\n", n, kc->kc_nkeys,
	    desc);
	for (i = 0; i < nk; i++)
		kek_free(&keks[i]);
	kek_free(&newk);
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_unwrap(int argc, char **argv)
{
	struct keychain	*kc;
	struct kek	 primary = { { NULL, 0 }, NULL }, keks[KEKS_MAX];
	const struct kek **p;
	struct key_buf	 k = { NULL, 0 };
	size_t		 nk, np, i, j;
	int		 have;

	if (argc != 1)
		usage();
	memset(keks, 0, sizeof(keks));
	kc = chain_load(argv[0], 1);
	have = primary_get(&primary);
	nk = keks_load(kc, have ? &primary : NULL, keks);
	p = kek_ptrs(&primary, have, keks, nk, &np);
	for (i = 0; i < kc->kc_nkeys; i++) {
		for (j = 0; j < np; j++)
			if (kek_ref_same(kc->kc_keys[i]->kek, p[j]->k_ref))
				break;
		if (j == np)
			die(EXIT_KEY, "no KEK for a key (internal)");
		if (key_unwrap(p[j], kc->kc_keys[i], &k, err,
		    sizeof(err)) == -1)
			die(EXIT_KEY, "%s", err);
		print_key(kc->kc_keys[i]->key_id.data, &k);
	}
	key_buf_free(&k);
	for (i = 0; i < nk; i++)
		kek_free(&keks[i]);
	kek_free(&primary);
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_export(int argc, char **argv)
{
	struct keychain	*kc;
	struct kek	 primary = { { NULL, 0 }, NULL }, keks[KEKS_MAX];
	const struct kek **p;
	uint8_t		*buf;
	size_t		 len, nk, np, i;
	char		*pass;
	int		 have, rc;

	if (argc != 2)
		usage();
	memset(keks, 0, sizeof(keks));
	kc = chain_load(argv[0], 1);
	pass = secret_get(pass_spec, "passphrase (-P)");
	have = primary_get(&primary);
	nk = keks_load(kc, have ? &primary : NULL, keks);
	p = kek_ptrs(&primary, have, keks, nk, &np);
	rc = keychain_export(kc, p, np, pass, &buf, &len, err, sizeof(err));
	secret_free(pass);
	if (rc == -1)
		die(EXIT_KEY, "%s", err);
	if (keychain_write_file(argv[1], buf, len, err, sizeof(err)) == -1)
		die(EXIT_ERROR, "%s", err);
	printf("%zu keys exported to %s\n", kc->kc_nkeys, argv[1]);
	free(buf);
	for (i = 0; i < nk; i++)
		kek_free(&keks[i]);
	kek_free(&primary);
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_import(int argc, char **argv)
{
	struct keychain	*kc;
	struct kek	 xk = { { NULL, 0 }, NULL };
	struct key_buf	 k = { NULL, 0 };
	uint8_t		*buf;
	size_t		 len, i;
	char		*pass;
	int		 rc;

	if (argc != 1)
		usage();
	if (keychain_read_file(argv[0], &buf, &len, err, sizeof(err)) == -1)
		die(EXIT_ERROR, "%s", err);
	pass = secret_get(pass_spec, "passphrase (-P)");
	rc = keychain_import(buf, len, pass, &kc, &xk, err, sizeof(err));
	secret_free(pass);
	if (rc == -1)
		die(strstr(err, "wrong passphrase") != NULL ? EXIT_KEY :
		    EXIT_INTEGRITY, "%s: %s", argv[0], err);
	for (i = 0; i < kc->kc_nkeys; i++) {
		if (key_unwrap(&xk, kc->kc_keys[i], &k, err, sizeof(err)) == -1)
			die(EXIT_KEY, "%s", err);
		print_key(kc->kc_keys[i]->key_id.data, &k);
	}
	free(buf);
	key_buf_free(&k);
	kek_free(&xk);
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_passwd(int argc, char **argv)
{
	struct keychain	*kc;
	char		*oldpw, *newpw;
	int		 rc;

	if (argc != 1)
		usage();
	if (kek_spec == NULL || strncmp(kek_spec, "password:", 9) != 0 ||
	    new_spec == NULL || strncmp(new_spec, "password:", 9) != 0)
		die(EXIT_USAGE, "passwd needs -K password:... and "
		    "-N password:...");
	kc = chain_load(argv[0], 1);
	oldpw = secret_get(kek_spec + 9, "old password");
	newpw = secret_get(new_spec + 9, "new password");
	rc = keychain_change_password(kc, oldpw, newpw, NULL, err,
	    sizeof(err));
	secret_free(oldpw);
	secret_free(newpw);
	if (rc == -1)
		die(EXIT_KEY, "%s", err);
	chain_save(kc, argv[0]);
	printf("%zu keys wrapped under the new password\n", kc->kc_nkeys);
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_chunk_id(int argc, char **argv)
{
	struct keychain	*kc;
	struct kek	 primary = { { NULL, 0 }, NULL }, keks[KEKS_MAX];
	const struct kek **p;
	const WrappedKey *wk;
	struct key_buf	 k = { NULL, 0 };
	uint8_t		*data, id[32];
	char		 hid[65];
	size_t		 len, nk, np, i, j;
	int		 have;

	if (argc != 2)
		usage();
	memset(keks, 0, sizeof(keks));
	kc = chain_load(argv[0], 1);
	if ((wk = keychain_chunk_key(kc)) == NULL)
		die(EXIT_KEY, "%s has no chunk-id key", argv[0]);
	if (keychain_read_file(argv[1], &data, &len, err, sizeof(err)) == -1)
		die(EXIT_ERROR, "%s", err);
	have = primary_get(&primary);
	nk = keks_load(kc, have ? &primary : NULL, keks);
	p = kek_ptrs(&primary, have, keks, nk, &np);
	for (j = 0; j < np; j++)
		if (kek_ref_same(wk->kek, p[j]->k_ref))
			break;
	if (j == np || key_unwrap(p[j], wk, &k, err, sizeof(err)) == -1)
		die(EXIT_KEY, "%s", err);
	if (chunk_id_keyed(&k, data, len, id) == -1)
		die(EXIT_ERROR, "HMAC failed");
	hex_encode(id, sizeof(id), hid);
	printf("%s\n", hid);
	free(data);
	key_buf_free(&k);
	for (i = 0; i < nk; i++)
		kek_free(&keks[i]);
	kek_free(&primary);
	keychain_free(kc);
	return EXIT_OK;
}

static int
cmd_kmip_newest(int argc, char **argv)
{
	struct kek	 k = { { NULL, 0 }, NULL };

	if (argc != 1)
		usage();
	if (kek_from_kmip(&ks, argv[0], &k, err, sizeof(err)) == -1)
		die(EXIT_KEY, "%s", err);
	printf("%s %lld\n", k.k_ref->key_id, (long long)k.k_ref->version);
	kek_free(&k);
	return EXIT_OK;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "reveal-for-test", no_argument, NULL, 'R' },
		{ NULL, 0, NULL, 0 }
	};
	const char	*cmd;
	long		 secs;
	char		*end;
	int		 ch, verbose = 0, rv;

	while ((ch = getopt_long(argc, argv, "+C:c:H:K:k:N:n:P:p:t:vx",
	    longopts, NULL)) != -1) {
		switch (ch) {
		case 'C':
			ks.ks_ca = optarg;
			break;
		case 'c':
			ks.ks_cert = optarg;
			break;
		case 'H':
			ks.ks_host = optarg;
			break;
		case 'K':
			kek_spec = optarg;
			break;
		case 'k':
			ks.ks_key = optarg;
			break;
		case 'N':
			new_spec = optarg;
			break;
		case 'n':
			ks.ks_server_name = optarg;
			break;
		case 'P':
			pass_spec = optarg;
			break;
		case 'p':
			ks.ks_port = optarg;
			break;
		case 'R':
			reveal = 1;
			break;
		case 't':
			secs = strtol(optarg, &end, 10);
			if (*optarg == '\0' || *end != '\0' || secs < 1 ||
			    secs > 3600)
				usage();
			ks.ks_timeout_ms = (int)secs * 1000;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'x':
			only_given = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	cmd = argv[0];
	argc--;
	argv++;

	log_init("keytool", 1, verbose);
	signal(SIGPIPE, SIG_IGN);

	if (strcmp(cmd, "kmip-newest") == 0)
		rv = cmd_kmip_newest(argc, argv);
	else if (strcmp(cmd, "new") == 0)
		rv = cmd_new(argc, argv);
	else if (strcmp(cmd, "add") == 0)
		rv = cmd_add(argc, argv);
	else if (strcmp(cmd, "list") == 0)
		rv = cmd_list(argc, argv);
	else if (strcmp(cmd, "needs") == 0)
		rv = cmd_needs(argc, argv);
	else if (strcmp(cmd, "rewrap") == 0)
		rv = cmd_rewrap(argc, argv);
	else if (strcmp(cmd, "unwrap") == 0)
		rv = cmd_unwrap(argc, argv);
	else if (strcmp(cmd, "export") == 0)
		rv = cmd_export(argc, argv);
	else if (strcmp(cmd, "import") == 0)
		rv = cmd_import(argc, argv);
	else if (strcmp(cmd, "passwd") == 0)
		rv = cmd_passwd(argc, argv);
	else if (strcmp(cmd, "chunk-id") == 0)
		rv = cmd_chunk_id(argc, argv);
	else
		usage();
	if (fflush(stdout) != 0)
		rv = EXIT_ERROR;
	return rv;
}
