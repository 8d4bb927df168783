/*
 * tls.c: TLS 1.3 contexts with mutual certificate authentication, and
 * the per-session keys both ends derive from the TLS exporter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent_ssl.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common.h"

#define EXPORTER_LABEL	"EXPORTER-transporter-in-flight-v1"

/* The parts both sides share: TLS 1.3 only, our certificate, the CA. */
static SSL_CTX *
tls_ctx_common(const SSL_METHOD *method, const struct tls_conf *tc)
{
	SSL_CTX	*ctx;
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
	if (pki_use_files(ctx, tc->tc_cert, tc->tc_key, tc->tc_ca, err,
	    sizeof(err)) == -1) {
		log_warnx("%s", err);
		goto fail;
	}
	pki_warn_dates(ctx, tc->tc_cert);
	if (tc->tc_crl != NULL && pki_load_crl(ctx, tc->tc_crl) == -1)
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
 * verdict) if one of them is one, else -1.  *gone says whether the peer
 * closed the connection without TLS's close (it stopped or failed).
 */
int
tls_bev_errors(struct bufferevent *bev, char *buf, size_t len, int *gone)
{
	unsigned long	 e;
	size_t		 n = 0;
	int		 alert = -1;

	buf[0] = '\0';
	*gone = 0;
	while ((e = bufferevent_get_openssl_error(bev)) != 0 && n + 2 < len) {
		if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		    ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET)
			alert = ERR_GET_REASON(e) - SSL_AD_REASON_OFFSET;
		if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) ==
		    SSL_R_UNEXPECTED_EOF_WHILE_READING)
			*gone = 1;
		if (n > 0) {
			buf[n++] = ';';
			buf[n++] = ' ';
		}
		ERR_error_string_n(e, buf + n, len - n);
		n = strlen(buf);
	}
	if (alert != -1)
		*gone = 0;	/* the alert is the word */
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
