/*
 * pki.c: a daemon's certificate files (its certificate chain and key,
 * the CA certificates, the CRLs): loaded with one clear line for each
 * usual mistake, and their dates watched, since a certificate or CRL
 * past its end makes every handshake fail.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "metrics.h"

#define EXPIRY_WARN_DAYS	30	/* warn this long before an end */
#define REISSUE_HINT	"re-issue it (docs/OPERATIONS.md, \"Re-issuing a " \
			"certificate\")"
#define REGEN_CRL_HINT	"write a new one ('mint-pki.sh -o DIR -C') and " \
			"reload"

/* The kinds of PEM block a file holds, by their BEGIN lines. */
#define PEM_ANY		0x01
#define PEM_CERT	0x02
#define PEM_KEY		0x04
#define PEM_CRL		0x08

static int
pem_kinds(const char *path)
{
	FILE	*fp;
	char	 line[256];
	int	 kinds = 0;

	if ((fp = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (strncmp(line, "-----BEGIN ", 11) != 0)
			continue;
		kinds |= PEM_ANY;
		if (strncmp(line + 11, "CERTIFICATE-----", 16) == 0 ||
		    strncmp(line + 11, "TRUSTED CERTIFICATE-----", 24) == 0)
			kinds |= PEM_CERT;
		else if (strstr(line, "PRIVATE KEY-----") != NULL)
			kinds |= PEM_KEY;
		else if (strncmp(line + 11, "X509 CRL-----", 13) == 0)
			kinds |= PEM_CRL;
	}
	(void)fclose(fp);
	return kinds;
}

static const char *
pem_kind_name(int kind)
{
	return kind & PEM_CERT ? "a certificate" : kind & PEM_KEY ?
	    "a private key" : kind & PEM_CRL ? "a CRL" : "other PEM data";
}

/*
 * Why path, the what of a setting, did not load as want (a PEM_ kind),
 * into err: unreadable, not PEM (der: the command that converts it),
 * another kind of file, or damaged (OpenSSL's words).
 */
static void
pki_file_error(char *err, size_t errlen, const char *what, const char *path,
    int want, const char *der)
{
	unsigned long	 e = ERR_peek_error();
	char		 errs[512];
	int		 kinds;

	if (ERR_GET_LIB(e) == ERR_LIB_SYS) {
		(void)snprintf(err, errlen, "cannot read %s %s: %s", what,
		    path, strerror(ERR_GET_REASON(e)));
		return;
	}
	kinds = pem_kinds(path);
	if (!(kinds & PEM_ANY))
		(void)snprintf(err, errlen, "%s %s is not a PEM file (one with "
		    "\"-----BEGIN\" lines); if it is DER, convert it: '%s -in "
		    "%s -out NEW.pem'", what, path, der, path);
	else if (!(kinds & want))
		(void)snprintf(err, errlen, "%s %s holds %s, not %s; check "
		    "which file the setting names", what, path,
		    pem_kind_name(kinds & ~want), pem_kind_name(want));
	else {
		ssl_error_string(errs, sizeof(errs));
		(void)snprintf(err, errlen, "%s %s is damaged, or of a kind "
		    "OpenSSL cannot read: %s", what, path, errs);
	}
}

/* Our key does not go with our certificate: which mistake, into err. */
static void
pki_mismatch(SSL_CTX *ctx, const char *cert, const char *key, char *err,
    size_t errlen)
{
	X509		*leaf = SSL_CTX_get0_certificate(ctx);
	STACK_OF(X509)	*chain = NULL;

	/* Only a file with a chain can be in the wrong order. */
	(void)SSL_CTX_get0_chain_certs(ctx, &chain);
	if (leaf != NULL && sk_X509_num(chain) > 0 && X509_check_ca(leaf) > 0)
		(void)snprintf(err, errlen, "certificate %s starts with a CA "
		    "certificate; put this daemon's own certificate first, "
		    "then the chain", cert);
	else
		(void)snprintf(err, errlen, "private key %s is not the key of "
		    "certificate %s; give the key the certificate was made "
		    "for", key, cert);
}

/*
 * Asked for a private key's passphrase: a daemon has no one to ask (and
 * OpenSSL would prompt on a terminal).  Notes it and refuses.
 */
static int
pki_no_passphrase(char *buf, int size, int rwflag, void *asked)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	*(int *)asked = 1;
	return -1;
}

/* 1 if the store holds a certificate, else 0. */
static int
store_has_cert(X509_STORE *store)
{
	STACK_OF(X509_OBJECT)	*objs = X509_STORE_get0_objects(store);
	int			 i;

	for (i = 0; i < sk_X509_OBJECT_num(objs); i++)
		if (X509_OBJECT_get_type(sk_X509_OBJECT_value(objs, i)) ==
		    X509_LU_X509)
			return 1;
	return 0;
}

/*
 * Loads our certificate chain, its private key and the CA certificates
 * into ctx.  On failure err gets one line naming the file and what to
 * do; OpenSSL's own words only where the cause is not one of the usual
 * mix-ups.  0, or -1.
 */
int
pki_use_files(SSL_CTX *ctx, const char *cert, const char *key,
    const char *ca, char *err, size_t errlen)
{
	unsigned long	 e;
	int		 asked = 0, rv = -1;

	ERR_clear_error();
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		pki_file_error(err, errlen, "certificate", cert, PEM_CERT,
		    "openssl x509 -inform der");
		goto out;
	}
	SSL_CTX_set_default_passwd_cb(ctx, pki_no_passphrase);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		e = ERR_peek_error();
		if (asked)
			(void)snprintf(err, errlen, "private key %s is "
			    "encrypted with a passphrase, which a daemon cannot "
			    "type; store it decrypted: 'openssl pkey -in %s "
			    "-out NEW.key && chmod 600 NEW.key'", key, key);
		else if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			pki_mismatch(ctx, cert, key, err, errlen);
		else
			pki_file_error(err, errlen, "private key", key, PEM_KEY,
			    "openssl pkey -inform der");
		goto out;
	}
	/* A key of another type than the certificate's lands here. */
	if (SSL_CTX_check_private_key(ctx) != 1) {
		pki_mismatch(ctx, cert, key, err, errlen);
		goto out;
	}
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
	    !store_has_cert(SSL_CTX_get_cert_store(ctx))) {
		pki_file_error(err, errlen, "CA file", ca, PEM_CERT,
		    "openssl x509 -inform der");
		goto out;
	}
	rv = 0;
 out:
	SSL_CTX_set_default_passwd_cb(ctx, NULL);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	ERR_clear_error();
	return rv;
}

/* t as Unix time, or 0 if there is none. */
static int64_t
asn1_unix(const ASN1_TIME *t)
{
	struct tm	 tm;

	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

/*
 * The CRL at i of objs, if no newer CRL of its issuer is there.  (OpenSSL
 * prefers one valid now: a CRL dated in the future beside the current
 * one gives dates it does not use, for the warning and metric only.)
 */
static X509_CRL *
store_newest_crl(STACK_OF(X509_OBJECT) *objs, int i)
{
	X509_CRL	*crl, *o;
	int		 j;

	if ((crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs,
	    i))) == NULL)
		return NULL;
	for (j = 0; j < sk_X509_OBJECT_num(objs); j++)
		if ((o = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs,
		    j))) != NULL && o != crl &&
		    X509_NAME_cmp(X509_CRL_get_issuer(o),
		    X509_CRL_get_issuer(crl)) == 0 &&
		    asn1_unix(X509_CRL_get0_lastUpdate(o)) >
		    asn1_unix(X509_CRL_get0_lastUpdate(crl)))
			return NULL;
	return crl;
}

/*
 * The latest start and the soonest end (0: none) of the CRLs the store
 * checks against: each issuer's newest, as OpenSSL picks (a file that
 * kept last month's CRL beside this month's is not expired).  0 if it
 * checks none, else 1.
 */
static int
store_crl_dates(X509_STORE *store, int64_t *from, int64_t *until)
{
	STACK_OF(X509_OBJECT)	*objs = X509_STORE_get0_objects(store);
	X509_CRL		*crl;
	int64_t			 t;
	int			 i;

	*from = *until = 0;
	if ((X509_VERIFY_PARAM_get_flags(X509_STORE_get0_param(store)) &
	    X509_V_FLAG_CRL_CHECK) == 0)
		return 0;
	for (i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		if ((crl = store_newest_crl(objs, i)) == NULL)
			continue;
		if ((t = asn1_unix(X509_CRL_get0_lastUpdate(crl))) > *from)
			*from = t;
		if ((t = asn1_unix(X509_CRL_get0_nextUpdate(crl))) != 0 &&
		    (*until == 0 || t < *until))
			*until = t;
	}
	return 1;
}

/*
 * Warns when what (our certificate, the CRL) at path is not valid yet,
 * past its end, or ends within EXPIRY_WARN_DAYS: then, says refused,
 * every handshake fails.  fix says what to do about an end.
 */
static void
warn_dates(const char *what, const char *path, int64_t from, int64_t until,
    const char *refused, const char *fix)
{
	int64_t		 now = (int64_t)time(NULL);
	time_t		 t;
	struct tm	 tm;
	char		 day[32], left[32];

	t = (time_t)(from > now ? from : until);
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(day, sizeof(day), "%Y-%m-%d %H:%M UTC", &tm) == 0)
		(void)snprintf(day, sizeof(day), "%lld", (long long)t);
	if (until - now < 86400)
		(void)snprintf(left, sizeof(left), "in less than a day");
	else
		(void)snprintf(left, sizeof(left), "in %lld day(s)",
		    (long long)((until - now) / 86400));
	if (from > now)
		log_warnx("%s %s is valid only from %s: %s until then; check "
		    "this host's clock", what, path, day, refused);
	else if (until != 0 && until <= now)
		log_warnx("%s %s expired on %s: %s; %s", what, path, day,
		    refused, fix);
	else if (until != 0 && until - now < EXPIRY_WARN_DAYS * 86400)
		log_warnx("%s %s expires on %s, %s, and then %s; %s before "
		    "then", what, path, day, left, refused, fix);
}

/* Warns when our certificate in ctx, from the file path, is near its end. */
void
pki_warn_dates(SSL_CTX *ctx, const char *path)
{
	X509	*cert;

	if ((cert = SSL_CTX_get0_certificate(ctx)) != NULL)
		warn_dates("our certificate", path,
		    asn1_unix(X509_get0_notBefore(cert)),
		    asn1_unix(X509_get0_notAfter(cert)), "peers refuse it",
		    REISSUE_HINT);
}

/*
 * Publishes when our certificate in ctx and the soonest of the CRLs it
 * checks (NaN: none) end, for alerts.
 */
void
pki_publish_expiry(SSL_CTX *ctx)
{
	X509	*cert;
	int64_t	 from, until;

	if ((cert = SSL_CTX_get0_certificate(ctx)) != NULL)
		metrics_set(metrics_series(metrics.mt_tls_expiry,
		    "certificate", NULL),
		    (double)asn1_unix(X509_get0_notAfter(cert)));
	(void)store_crl_dates(SSL_CTX_get_cert_store(ctx), &from, &until);
	metrics_set(metrics_series(metrics.mt_tls_expiry, "crl", NULL),
	    until != 0 ? (double)until : NAN);
}

/*
 * Loads the CRL file into the context's store and turns checking on;
 * warns when it is near its end.  0, or -1 (logged).
 */
int
pki_load_crl(SSL_CTX *ctx, const char *crl)
{
	X509_STORE	*store;
	X509_LOOKUP	*lookup;
	char		 err[1024];
	int64_t		 from, until;

	store = SSL_CTX_get_cert_store(ctx);
	ERR_clear_error();
	if ((lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file())) ==
	    NULL || X509_load_crl_file(lookup, crl, X509_FILETYPE_PEM) < 1) {
		pki_file_error(err, sizeof(err), "CRL file", crl, PEM_CRL,
		    "openssl crl -inform der");
		log_warnx("%s", err);
		ERR_clear_error();
		return -1;
	}
	X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK |
	    X509_V_FLAG_CRL_CHECK_ALL);
	if (store_crl_dates(store, &from, &until) == 1)
		warn_dates("CRL", crl, from, until, "every peer is refused",
		    REGEN_CRL_HINT);
	return 0;
}
