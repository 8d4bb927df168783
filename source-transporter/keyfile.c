/*
 * keyfile.c: the keys command.  `keys export` writes every key of a
 * backup chain, wrapped again under a passphrase, to a file an operator
 * keeps apart from the KMS: with it, `restore --key-file` works on a new
 * site where neither the KMS nor the old password is reachable.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "source.h"

struct keys_export {
	struct client	*kx_client;
	struct envelope	 kx_env;
	const char	*kx_name;
	const char	*kx_output;
	char		*kx_passphrase;	/* export: its passphrase */
	int		 kx_passwd;	/* change-password */
	char		*kx_new_password;
	KekRef		*kx_new_ref;	/* change-password: the new KEK */
	size_t		 kx_nkeys;
};

/* Reads a passphrase file's first line (the same rules as passwords). */
static int
keyfile_passphrase(const char *path, char **out)
{
	struct source_conf	 sc;
	struct envelope		 ev;
	char			 err[KEY_ERR_MAX];

	memset(&sc, 0, sizeof(sc));
	sc.sc_password_file = (char *)path;
	envelope_init(&ev, &sc);
	if (envelope_load_password(&ev, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		return -1;
	}
	*out = ev.ev_password;	/* taken over: not wiped by a free */
	ev.ev_password = NULL;
	envelope_free(&ev);
	return 0;
}

static void
export_ready(struct client *cl, void *arg)
{
	struct keys_export	*kx = arg;
	Frame			 f = FRAME__INIT;
	ListRequest		 lr = LIST_REQUEST__INIT;

	lr.name = (char *)kx->kx_name;
	lr.keychain = 1;
	lr.brief = 1;	/* the points' keys only where the file lacks them */
	f.msg_case = FRAME__MSG_LIST_REQUEST;
	f.list_request = &lr;
	client_send(cl, &f);
}

/*
 * The chain to export: the key file if the target keeps one, plus every
 * key the points list (a point's own copy only where the file lacks it).
 */
static struct keychain *
export_chain(struct keys_export *kx, const ListReply *lr, char *err,
    size_t errlen)
{
	struct keychain	*kc;
	size_t		 i, j;

	if (lr->keychain.len > 0)
		kc = keychain_unpack(lr->keychain.data, lr->keychain.len, err,
		    errlen);
	else
		kc = keychain_new(kx->kx_name);
	if (kc == NULL)
		return NULL;
	for (i = 0; i < lr->n_points; i++)
		for (j = 0; j < lr->points[i]->n_keys; j++)
			if (keychain_add(kc, lr->points[i]->keys[j], err,
			    errlen) == -1) {
				keychain_free(kc);
				return NULL;
			}
	return kc;
}

static void
export_frame(struct client *cl, const Frame *f, void *arg)
{
	struct keys_export	*kx = arg;
	struct keychain		*kc = NULL;
	const struct kek	**keks = NULL;
	KekRef			**refs = NULL;
	uint8_t			*buf = NULL;
	size_t			 nrefs = 0, len, i;
	char			 err[KEY_ERR_MAX];
	int			 code = EXIT_KEY;

	if (f->msg_case != FRAME__MSG_LIST_REPLY) {
		client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected "
		    "%s frame", cl->cl_addr, frame_name(f));
		return;
	}
	if (f->list_reply->n_points == 0) {
		client_finish(cl, EXIT_NOT_FOUND, "no backup named '%s'",
		    kx->kx_name);
		return;
	}
	if ((kc = export_chain(kx, f->list_reply, err, sizeof(err))) == NULL)
		goto fail;
	if (kc->kc_nkeys == 0) {
		snprintf(err, sizeof(err), "backup '%s' has no source-side "
		    "keys to export", kx->kx_name);
		code = EXIT_NOT_FOUND;
		goto fail;
	}
	if (keychain_needed_keks(kc, &refs, &nrefs, err, sizeof(err)) == -1 ||
	    (keks = calloc(nrefs + 1, sizeof(*keks))) == NULL)
		goto fail;
	for (i = 0; i < nrefs; i++)
		if ((keks[i] = envelope_get_kek(&kx->kx_env, refs[i], err,
		    sizeof(err))) == NULL)
			goto fail;
	if (keychain_export(kc, (const struct kek *const *)keks, nrefs,
	    kx->kx_passphrase, &buf, &len, err, sizeof(err)) == -1 ||
	    keychain_write_file(kx->kx_output, buf, len, err,
	    sizeof(err)) == -1) {
		code = EXIT_INPUT;
		goto fail;
	}
	printf("exported %zu key(s) of backup '%s' to %s\n", kc->kc_nkeys,
	    kx->kx_name, kx->kx_output);
	code = EXIT_OK;
	err[0] = '\0';
 fail:
	if (code == EXIT_OK)
		client_finish(cl, EXIT_OK, NULL);
	else
		client_finish(cl, code, "keys export of '%s': %s", kx->kx_name,
		    err);
	free(buf);
	free(keks);
	keychain_refs_free(refs, nrefs);
	keychain_free(kc);
}

/*
 * change-password: the key file's keys, all under the configured
 * password, are wrapped again under the new one and stored back.  No
 * data is touched.  Points keep their own copies under the old password
 * (manifests are immutable); the key file is what restores read first.
 */
static void
passwd_frame(struct client *cl, const Frame *f, void *arg)
{
	struct keys_export	*kx = arg;
	struct keychain		*kc = NULL;
	Frame			 out = FRAME__INIT;
	KeychainUpdate		 ku = KEYCHAIN_UPDATE__INIT;
	uint8_t			*buf = NULL;
	size_t			 len;
	char			 err[KEY_ERR_MAX];

	if (f->msg_case == FRAME__MSG_KEYCHAIN_STORED) {
		printf("password of backup '%s' changed: %zu key(s) wrapped "
		    "again, no data re-encrypted; put the new password in %s\n",
		    kx->kx_name, kx->kx_nkeys,
		    kx->kx_env.ev_conf->sc_password_file);
		/* New backup names go under the new password. */
		if (kx->kx_new_ref != NULL)
			state_password_remember(kx->kx_env.ev_conf,
			    kx->kx_new_ref, 0);
		client_finish(cl, EXIT_OK, NULL);
		return;
	}
	if (f->msg_case != FRAME__MSG_LIST_REPLY) {
		client_finish(cl, EXIT_ERROR, "%s: protocol error: unexpected "
		    "%s frame", cl->cl_addr, frame_name(f));
		return;
	}
	if (f->list_reply->n_points == 0 || f->list_reply->keychain.len == 0) {
		client_finish(cl, EXIT_NOT_FOUND, "backup '%s' has no "
		    "source-side key file on the target", kx->kx_name);
		return;
	}
	if ((kc = keychain_unpack(f->list_reply->keychain.data,
	    f->list_reply->keychain.len, err, sizeof(err))) == NULL ||
	    keychain_change_password(kc, kx->kx_env.ev_password,
	    kx->kx_new_password, NULL, err, sizeof(err)) == -1 ||
	    keychain_pack(kc, &buf, &len, err, sizeof(err)) == -1) {
		client_finish(cl, EXIT_KEY, "password change of '%s': %s",
		    kx->kx_name, err);
		goto out;
	}
	kx->kx_nkeys = kc->kc_nkeys;
	if (kc->kc_nkeys > 0 && (kx->kx_new_ref =
	    kek_ref_dup(kc->kc_keys[0]->kek)) == NULL)
		fatal("kek_ref_dup");
	ku.name = (char *)kx->kx_name;
	ku.keychain.data = buf;
	ku.keychain.len = len;
	out.msg_case = FRAME__MSG_KEYCHAIN_UPDATE;
	out.keychain_update = &ku;
	client_send(cl, &out);
 out:
	free(buf);
	keychain_free(kc);
}

static const struct client_ops export_ops = {
	.co_ready = export_ready,
	.co_frame = export_frame,
};

static const struct client_ops passwd_ops = {
	.co_ready = export_ready,
	.co_frame = passwd_frame,
};

/* which: "export", "change-password", or NULL for both. */
static void
keys_usage(FILE *fp, const char *which)
{
	int	 exp = which == NULL || strcmp(which, "export") == 0;
	int	 pw = which == NULL || strcmp(which, "change-password") == 0;

	if (exp)
		fprintf(fp, "%s source-transporter [-f config] keys export "
		    "--name NAME --output FILE --passphrase-file FILE\n",
		    "usage:");
	if (pw)
		fprintf(fp, "%s source-transporter [-f config] keys "
		    "change-password --name NAME --new-password-file FILE\n",
		    exp ? "      " : "usage:");
	if (exp)
		fprintf(fp, "  export writes every key of backup NAME, wrapped "
		    "under the\n"
		    "  passphrase (Argon2id), to FILE.  'restore --key-file "
		    "FILE\n"
		    "  --passphrase-file FILE' then needs neither the KMS nor "
		    "the\n"
		    "  backup's password.\n");
	if (pw)
		fprintf(fp, "  change-password wraps the keys of NAME's key "
		    "file again under\n"
		    "  a new password (the configured password_file is the old "
		    "one);\n"
		    "  no data is re-encrypted.\n");
}

int
cmd_keys(struct source_conf *sc, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name",		required_argument, NULL, 'n' },
		{ "output",		required_argument, NULL, 'o' },
		{ "passphrase-file",	required_argument, NULL, 'p' },
		{ "new-password-file",	required_argument, NULL, 'w' },
		{ "help",		no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct keys_export	 kx;
	const char		*passfile = NULL, *newfile = NULL;
	char			 err[KEY_ERR_MAX];
	int			 ch, rv = EXIT_USAGE;

	memset(&kx, 0, sizeof(kx));
	if (argc >= 2 && strcmp(argv[1], "change-password") == 0)
		kx.kx_passwd = 1;
	else if (argc < 2 || strcmp(argv[1], "export") != 0) {
		if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
			keys_usage(stdout, NULL);
			return EXIT_OK;
		}
		keys_usage(stderr, NULL);
		if (argc >= 2)
			log_warnx("keys: no subcommand '%s'; say export or "
			    "change-password", argv[1]);
		return EXIT_USAGE;
	}
	optind = 1;
	while ((ch = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			kx.kx_name = optarg;
			break;
		case 'o':
			kx.kx_output = optarg;
			break;
		case 'p':
			passfile = optarg;
			break;
		case 'w':
			newfile = optarg;
			break;
		case 'h':
			keys_usage(stdout, argv[1]);
			return EXIT_OK;
		default:
			keys_usage(stderr, argv[1]);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1 || kx.kx_name == NULL || (kx.kx_passwd ?
	    newfile == NULL || kx.kx_output != NULL || passfile != NULL :
	    kx.kx_output == NULL || passfile == NULL || newfile != NULL)) {
		keys_usage(stderr, argv[1]);
		log_warnx("keys %s: %s", argv[1], optind != argc - 1 ?
		    "unexpected arguments after the options" :
		    kx.kx_name == NULL ? "say which backup: --name NAME" :
		    kx.kx_passwd ? (newfile == NULL ? "say where the new "
		    "password is: --new-password-file FILE" : "--output and "
		    "--passphrase-file are export's options") :
		    kx.kx_output == NULL ? "say where to write the keys: "
		    "--output FILE" : passfile == NULL ? "say where the "
		    "passphrase is: --passphrase-file FILE" :
		    "--new-password-file is change-password's option");
		return EXIT_USAGE;
	}
	if (kx.kx_passwd && sc->sc_password_file == NULL) {
		log_warnx("%s: changing a password needs 'password_file' (the "
		    "current password)", sc->sc_path);
		return EXIT_USAGE;
	}
	/* It becomes password_file, which must be 0600 or 0400. */
	if (kx.kx_passwd && conf_check_key_file(newfile, err,
	    sizeof(err)) == -1) {
		log_warnx("keys change-password: %s", err);
		return EXIT_USAGE;
	}
	if (keyfile_passphrase(kx.kx_passwd ? newfile : passfile,
	    kx.kx_passwd ? &kx.kx_new_password : &kx.kx_passphrase) == -1)
		return EXIT_KEY;
	envelope_init(&kx.kx_env, sc);
	if (envelope_load_password(&kx.kx_env, err, sizeof(err)) == -1) {
		log_warnx("%s", err);
		rv = EXIT_KEY;
		goto out;
	}
	if ((kx.kx_client = client_new(sc, kx.kx_passwd ? &passwd_ops :
	    &export_ops, &kx)) == NULL)
		goto out;
	rv = client_run(kx.kx_client);
 out:
	client_free(kx.kx_client);
	envelope_free(&kx.kx_env);
	if (kx.kx_passphrase != NULL) {
		crypto_wipe(kx.kx_passphrase, strlen(kx.kx_passphrase));
		free(kx.kx_passphrase);
	}
	if (kx.kx_new_password != NULL) {
		crypto_wipe(kx.kx_new_password, strlen(kx.kx_new_password));
		free(kx.kx_new_password);
	}
	if (kx.kx_new_ref != NULL)
		kek_ref__free_unpacked(kx.kx_new_ref, NULL);
	return rv;
}

/*
 * restore --key-file: the chain and its passphrase KEK replace the
 * target's key file and the KMS.  0, or -1 with a message.
 */
int
keyfile_load(struct envelope *ev, const char *path, const char *passfile,
    char *err, size_t errlen)
{
	struct kek	*k = NULL;
	uint8_t		*buf = NULL;
	char		*pass = NULL;
	size_t		 len;
	int		 rv = -1;

	if (keyfile_passphrase(passfile, &pass) == -1) {
		snprintf(err, errlen, "cannot read the passphrase file %s",
		    passfile);
		return -1;
	}
	if ((k = calloc(1, sizeof(*k))) == NULL)
		goto out;
	if (keychain_read_file(path, &buf, &len, err, errlen) == -1 ||
	    keychain_import(buf, len, pass, &ev->ev_chain, k, err,
	    errlen) == -1)
		goto out;
	if (envelope_add_kek(ev, k) == -1) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	ev->ev_key_file = path;
	k = NULL;
	rv = 0;
 out:
	if (k != NULL) {
		kek_free(k);
		free(k);
	}
	free(buf);
	crypto_wipe(pass, strlen(pass));
	free(pass);
	return rv;
}
