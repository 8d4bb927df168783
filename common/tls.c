/*
 * tls.c: TLS 1.3 contexts with mutual certificate authentication, and
 * the per-session keys both ends derive from the TLS exporter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/bufferevent_ssl.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "metrics.h"

#define EXPORTER_LABEL	"EXPORTER-transporter-in-flight-v1"
#define EXPIRY_WARN_DAYS	30	/* warn this long before an end */
#define REISSUE_HINT	"re-issue it (docs/OPERATIONS.md, \"Re-issuing a " \
			"certificate\")"
#define REGEN_CRL_HINT	"write a new one ('mint-pki.sh -o DIR -C') and " \
			"reload"

/* 1 if OpenSSL's error e says a file held nothing of the kind asked. */
static int
pem_none_found(unsigned long e)
{
	return (ERR_GET_LIB(e) == ERR_LIB_PEM &&
	    ERR_GET_REASON(e) == PEM_R_NO_START_LINE) ||
	    (ERR_GET_LIB(e) == ERR_LIB_X509 &&
	    ERR_GET_REASON(e) == X509_R_NO_CERTIFICATE_OR_CRL_FOUND) ||
	    ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER;
}

/* Any other failure to load path, the what of tls_ctx_use_pki, into err. */
static void
pki_load_error(char *err, size_t errlen, const char *what, const char *path)
{
	unsigned long	 e = ERR_peek_error();
	char		 errs[512];

	if (ERR_GET_LIB(e) == ERR_LIB_SYS)
		(void)snprintf(err, errlen, "cannot read %s %s: %s", what,
		    path, strerror(ERR_GET_REASON(e)));
	else {
		ssl_error_string(errs, sizeof(errs));
		(void)snprintf(err, errlen, "cannot load %s %s: %s", what,
		    path, errs);
	}
}

/*
 * Asked for a private key's passphrase: a daemon has no one to ask (and
 * OpenSSL would prompt on a terminal).  Notes it and refuses.
 */
static int
tls_no_passphrase(char *buf, int size, int rwflag, void *asked)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	*(int *)asked = 1;
	return -1;
}

/*
 * Loads our certificate chain, its private key and the CA certificates
 * into ctx.  On failure err gets one line naming the file and what to
 * do; OpenSSL's own words only where the cause is not one of the usual
 * mix-ups.  0, or -1.
 */
int
tls_ctx_use_pki(SSL_CTX *ctx, const char *cert, const char *key,
    const char *ca, char *err, size_t errlen)
{
	int	 asked = 0, rv = -1;

	ERR_clear_error();
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		if (pem_none_found(ERR_peek_error()))
			(void)snprintf(err, errlen, "certificate %s holds no "
			    "PEM certificate (\"-----BEGIN CERTIFICATE-----\"); "
			    "give the certificate, not its key (DER: convert it "
			    "with 'openssl x509 -inform der')", cert);
		else
			pki_load_error(err, errlen, "certificate", cert);
		goto out;
	}
	SSL_CTX_set_default_passwd_cb(ctx, tls_no_passphrase);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		unsigned long	 e = ERR_peek_error();

		if (asked)
			(void)snprintf(err, errlen, "private key %s is "
			    "encrypted with a passphrase, which a daemon cannot "
			    "type; store it decrypted with mode 600 ('openssl "
			    "pkey -in %s -out NEW.key')", key, key);
		else if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
		    ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			(void)snprintf(err, errlen, "private key %s is not the "
			    "key of certificate %s; give the key the "
			    "certificate was made for", key, cert);
		else if (pem_none_found(e))
			(void)snprintf(err, errlen, "private key %s holds no "
			    "PEM private key (\"-----BEGIN ... PRIVATE "
			    "KEY-----\"); give the key, not the certificate",
			    key);
		else
			pki_load_error(err, errlen, "private key", key);
		goto out;
	}
	if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
		if (pem_none_found(ERR_peek_error()))
			(void)snprintf(err, errlen, "CA file %s holds no PEM "
			    "certificate (\"-----BEGIN CERTIFICATE-----\"); "
			    "give the certificate of the CA that signed the "
			    "peer's", ca);
		else
			pki_load_error(err, errlen, "CA file", ca);
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

/* The latest start and the soonest end of the CRLs in store (0: none). */
static void
crl_dates(X509_STORE *store, int64_t *from, int64_t *until)
{
	STACK_OF(X509_OBJECT)	*objs;
	const X509_CRL		*crl;
	int64_t			 t;
	int			 i;

	*from = *until = 0;
	objs = X509_STORE_get0_objects(store);
	for (i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		if ((crl = X509_OBJECT_get0_X509_CRL(
		    sk_X509_OBJECT_value(objs, i))) == NULL)
			continue;
		if ((t = asn1_unix(X509_CRL_get0_lastUpdate(crl))) > *from)
			*from = t;
		if ((t = asn1_unix(X509_CRL_get0_nextUpdate(crl))) != 0 &&
		    (*until == 0 || t < *until))
			*until = t;
	}
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
	char		 day[32];

	t = (time_t)(from > now ? from : until);
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(day, sizeof(day), "%Y-%m-%d %H:%M UTC", &tm) == 0)
		(void)snprintf(day, sizeof(day), "%lld", (long long)t);
	if (from > now)
		log_warnx("%s %s is valid only from %s: %s until then; check "
		    "this host's clock", what, path, day, refused);
	else if (until != 0 && until <= now)
		log_warnx("%s %s expired on %s: %s; %s", what, path, day,
		    refused, fix);
	else if (until != 0 && until - now < EXPIRY_WARN_DAYS * 86400)
		log_warnx("%s %s expires on %s, in %lld day(s), and then %s; "
		    "%s before then", what, path, day, (long long)((until -
		    now) / 86400), refused, fix);
}

/*
 * Publishes when our certificate and the soonest CRL in ctx end, for
 * alerts (transporter_tls_expiry_timestamp_seconds).
 */
void
tls_ctx_publish_expiry(SSL_CTX *ctx)
{
	X509	*cert;
	int64_t	 from, until;

	if ((cert = SSL_CTX_get0_certificate(ctx)) != NULL)
		metrics_set(metrics_series(metrics.mt_tls_expiry,
		    "certificate", NULL),
		    (double)asn1_unix(X509_get0_notAfter(cert)));
	crl_dates(SSL_CTX_get_cert_store(ctx), &from, &until);
	if (until != 0)
		metrics_set(metrics_series(metrics.mt_tls_expiry, "crl",
		    NULL), (double)until);
}

/* Loads the CRL file into the context's store and turns checking on. */
static int
tls_load_crl(SSL_CTX *ctx, const char *crl)
{
	X509_STORE	*store;
	X509_LOOKUP	*lookup;
	int64_t		 from, until;

	store = SSL_CTX_get_cert_store(ctx);
	ERR_clear_error();
	if ((lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file())) ==
	    NULL || X509_load_crl_file(lookup, crl, X509_FILETYPE_PEM) < 1) {
		if (pem_none_found(ERR_peek_error())) {
			log_warnx("CRL file %s holds no PEM CRL (\"-----BEGIN "
			    "X509 CRL-----\"); give the CA's CRL (DER: convert "
			    "it with 'openssl crl -inform der')", crl);
			ERR_clear_error();
		} else
			log_ssl("cannot load CRL %s", crl);
		return -1;
	}
	X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK |
	    X509_V_FLAG_CRL_CHECK_ALL);
	crl_dates(store, &from, &until);
	warn_dates("CRL", crl, from, until, "every peer is refused",
	    REGEN_CRL_HINT);
	return 0;
}

/* The parts both sides share: TLS 1.3 only, our certificate, the CA. */
static SSL_CTX *
tls_ctx_common(const SSL_METHOD *method, const struct tls_conf *tc)
{
	SSL_CTX	*ctx;
	X509	*cert;
	char	 err[1024];

	if ((ctx = SSL_CTX_new(method)) == NULL) {
		log_ssl("SSL_CTX_new");
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)) {
		log_ssl("cannot restrict TLS to version 1.3");
		goto fail;
	}
	if (tls_ctx_use_pki(ctx, tc->tc_cert, tc->tc_key, tc->tc_ca, err,
	    sizeof(err)) == -1) {
		log_warnx("%s", err);
		goto fail;
	}
	if ((cert = SSL_CTX_get0_certificate(ctx)) != NULL)
		warn_dates("our certificate", tc->tc_cert,
		    asn1_unix(X509_get0_notBefore(cert)),
		    asn1_unix(X509_get0_notAfter(cert)), "peers refuse it",
		    REISSUE_HINT);
	if (tc->tc_crl != NULL && tls_load_crl(ctx, tc->tc_crl) == -1)
		goto fail;
	/* Session tickets buy nothing for long bulk sessions. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	return ctx;
 fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* A server context that demands a client certificate from our CA. */
SSL_CTX *
tls_ctx_server(const struct tls_conf *tc)
{
	SSL_CTX	*ctx;

	if ((ctx = tls_ctx_common(TLS_server_method(), tc)) == NULL)
		return NULL;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER |
	    SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
}

/* A client context that verifies the server against our CA. */
SSL_CTX *
tls_ctx_client(const struct tls_conf *tc)
{
	SSL_CTX	*ctx;

	if ((ctx = tls_ctx_common(TLS_client_method(), tc)) == NULL)
		return NULL;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

/*
 * A client SSL that checks the server certificate against name (a DNS
 * name or an IP address literal).  Returns NULL on failure.
 */
SSL *
tls_client_ssl(SSL_CTX *ctx, const char *name)
{
	X509_VERIFY_PARAM	*param;
	SSL			*ssl;
	int			 is_ip;

	if ((ssl = SSL_new(ctx)) == NULL) {
		log_ssl("SSL_new");
		return NULL;
	}
	param = SSL_get0_param(ssl);
	is_ip = X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1;
	if (!is_ip) {
		ERR_clear_error();
		if (SSL_set1_host(ssl, name) != 1 ||
		    SSL_set_tlsext_host_name(ssl, name) != 1) {
			log_ssl("cannot set server name %s", name);
			SSL_free(ssl);
			return NULL;
		}
	}
	return ssl;
}

/*
 * Derives the two in-flight keys of this session from the TLS exporter
 * (RFC 8446 section 7.5): one per direction, so a nonce counter never
 * repeats under one key.  Both ends get the same keys.  Returns 0 or -1.
 */
int
tls_session_keys(SSL *ssl, uint8_t to_target[AEAD_KEY_LEN],
    uint8_t to_source[AEAD_KEY_LEN])
{
	uint8_t	 km[2 * AEAD_KEY_LEN];

	if (SSL_export_keying_material(ssl, km, sizeof(km), EXPORTER_LABEL,
	    strlen(EXPORTER_LABEL), NULL, 0, 0) != 1) {
		log_ssl("TLS exporter");
		return -1;
	}
	memcpy(to_target, km, AEAD_KEY_LEN);
	memcpy(to_source, km + AEAD_KEY_LEN, AEAD_KEY_LEN);
	crypto_wipe(km, sizeof(km));
	return 0;
}

/* Returns 1 if the peer certificate's subject CN equals identity. */
static int
tls_cn_is(X509 *cert, const char *identity)
{
	X509_NAME	*subj;
	char		 cn[256];
	int		 len;

	if ((subj = X509_get_subject_name(cert)) == NULL)
		return 0;
	len = X509_NAME_get_text_by_NID(subj, NID_commonName, cn, sizeof(cn));
	return len > 0 && (size_t)len == strlen(identity) &&
	    strcmp(cn, identity) == 0;
}

/*
 * Returns 1 if the verified peer certificate carries identity as a DNS
 * subject alternative name or as its subject CN, else 0.
 */
int
tls_peer_has_identity(SSL *ssl, const char *identity)
{
	X509	*cert;
	int	 match = 0;

	if ((cert = SSL_get1_peer_certificate(ssl)) == NULL)
		return 0;
	if (SSL_get_verify_result(ssl) == X509_V_OK) {
		match = X509_check_host(cert, identity, 0,
		    X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
		    X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1 ||
		    tls_cn_is(cert, identity);
	}
	X509_free(cert);
	return match;
}

/* Writes the peer certificate's subject (or "no certificate") to buf. */
void
tls_peer_describe(SSL *ssl, char *buf, size_t len)
{
	X509	*cert;

	if ((cert = SSL_get1_peer_certificate(ssl)) == NULL) {
		snprintf(buf, len, "no certificate");
		return;
	}
	X509_NAME_oneline(X509_get_subject_name(cert), buf, (int)len);
	X509_free(cert);
}

/* Why certificate verification failed, or NULL if it did not. */
const char *
tls_verify_reason(SSL *ssl)
{
	long	 res;

	res = SSL_get_verify_result(ssl);
	if (res == X509_V_OK)
		return NULL;
	return X509_verify_cert_error_string(res);
}

/*
 * TLS 1.3 key update.  AES-GCM under one traffic key is safe for a
 * bounded number of records (RFC 8446 section 5.5: 2^24.5 full records
 * for AES-GCM), and OpenSSL does not rotate on its own, so a long
 * session asks for a key update every TLS_KEY_UPDATE_BYTES it sends
 * (the environment variable TRANSPORTER_TLS_KEY_UPDATE_BYTES lowers it
 * for tests).  *since counts the bytes queued since the last update.
 */
#define TLS_KEY_UPDATE_BYTES	(64ull << 30)	/* ~4M records: far below */

static uint64_t
tls_key_update_bytes(void)
{
	static uint64_t	 limit;
	const char	*env;
	uint64_t	 v;

	if (limit == 0) {
		env = getenv("TRANSPORTER_TLS_KEY_UPDATE_BYTES");
		if (env != NULL && conf_parse_size(env, &v) == 0 && v >= 4096)
			limit = v;
		else
			limit = TLS_KEY_UPDATE_BYTES;
	}
	return limit;
}

/* Counts n bytes queued for ssl; updates the keys past the limit. */
void
tls_count_sent(SSL *ssl, uint64_t *since, size_t n)
{
	*since += n;
	if (*since < tls_key_update_bytes() ||
	    SSL_get_key_update_type(ssl) != SSL_KEY_UPDATE_NONE)
		return;
	/*
	 * Refused while a record is half written ("bad write retry"):
	 * not an error, the next frame tries again.
	 */
	if (SSL_key_update(ssl, SSL_KEY_UPDATE_NOT_REQUESTED) != 1) {
		ERR_clear_error();
		return;
	}
	log_debug("TLS key update after %llu bytes",
	    (unsigned long long)*since);
	*since = 0;
}

/*
 * The OpenSSL errors a bufferevent collected, joined with "; " into buf
 * ("" if none).  Returns the alert the peer sent (SSL_AD_*, a TLS
 * verdict) if one of them is one, else -1 (an end of the connection, or
 * our own error).
 */
int
tls_bev_errors(struct bufferevent *bev, char *buf, size_t len)
{
	unsigned long	 e;
	size_t		 n = 0;
	int		 alert = -1;

	buf[0] = '\0';
	while ((e = bufferevent_get_openssl_error(bev)) != 0 && n + 2 < len) {
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET)
			alert = ERR_GET_REASON(e) - SSL_AD_REASON_OFFSET;
		if (n > 0) {
			buf[n++] = ';';
			buf[n++] = ' ';
		}
		ERR_error_string_n(e, buf + n, len - n);
		n = strlen(buf);
	}
	return alert;
}

/*
 * 1 if a TLS alert (its description, as tls_bev_errors returns it) says
 * the peer refused our certificate, else 0.
 */
int
tls_alert_on_cert(int alert)
{
	switch (alert) {
	case SSL_AD_BAD_CERTIFICATE:
	case SSL_AD_UNSUPPORTED_CERTIFICATE:
	case SSL_AD_CERTIFICATE_REVOKED:
	case SSL_AD_CERTIFICATE_EXPIRED:
	case SSL_AD_CERTIFICATE_UNKNOWN:
	case SSL_AD_UNKNOWN_CA:
	case SSL_AD_ACCESS_DENIED:
	case SSL_AD_CERTIFICATE_REQUIRED:
		return 1;
	default:
		return 0;
	}
}
