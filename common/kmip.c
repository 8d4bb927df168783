/*
 * kmip.c: a KMIP 1.2 client for key-encrypting keys.
 *
 * One blocking exchange at a time over TLS 1.2+ with a client
 * certificate: the request is one TTLV Request Message with one batch
 * item; the response is read as an 8-byte TTLV header, its length
 * checked against TTLV_MSG_MAX, then the body.  The socket is
 * non-blocking underneath so that every exchange, and the connection
 * itself, has a deadline.
 *
 * The operations are those a KEK needs: Create (AES-256), Activate,
 * Locate by name, Get Attributes, Get, Revoke, Destroy; and
 * kmip_newest_active() on top.  docs/KMIP.md tells what PyKMIP 0.10
 * does with them.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common.h"
#include "kmip.h"
#include "metrics.h"

/* Tags (KMIP 1.2, 9.1.3.1). */
#define TAG_ACTIVATION_DATE		0x420001
#define TAG_ATTRIBUTE			0x420008
#define TAG_ATTRIBUTE_NAME		0x42000a
#define TAG_ATTRIBUTE_VALUE		0x42000b
#define TAG_BATCH_COUNT			0x42000d
#define TAG_BATCH_ITEM			0x42000f
#define TAG_COMPROMISE_OCCURRENCE_DATE	0x420021
#define TAG_CRYPTOGRAPHIC_ALGORITHM	0x420028
#define TAG_CRYPTOGRAPHIC_LENGTH	0x42002a
#define TAG_INITIAL_DATE		0x420039
#define TAG_KEY				0x42003f
#define TAG_KEY_BLOCK			0x420040
#define TAG_KEY_FORMAT_TYPE		0x420042
#define TAG_KEY_MATERIAL		0x420043
#define TAG_KEY_VALUE			0x420045
#define TAG_KEY_WRAPPING_DATA		0x420046
#define TAG_MAXIMUM_RESPONSE_SIZE	0x420050
#define TAG_NAME			0x420053
#define TAG_NAME_TYPE			0x420054
#define TAG_NAME_VALUE			0x420055
#define TAG_OBJECT_TYPE			0x420057
#define TAG_OPERATION			0x42005c
#define TAG_PROTOCOL_VERSION		0x420069
#define TAG_PROTOCOL_VERSION_MAJOR	0x42006a
#define TAG_PROTOCOL_VERSION_MINOR	0x42006b
#define TAG_REQUEST_HEADER		0x420077
#define TAG_REQUEST_MESSAGE		0x420078
#define TAG_REQUEST_PAYLOAD		0x420079
#define TAG_RESPONSE_HEADER		0x42007a
#define TAG_RESPONSE_MESSAGE		0x42007b
#define TAG_RESPONSE_PAYLOAD		0x42007c
#define TAG_RESULT_MESSAGE		0x42007d
#define TAG_RESULT_REASON		0x42007e
#define TAG_RESULT_STATUS		0x42007f
#define TAG_REVOCATION_REASON		0x420081
#define TAG_REVOCATION_REASON_CODE	0x420082
#define TAG_STATE			0x42008d
#define TAG_SYMMETRIC_KEY		0x42008f
#define TAG_TEMPLATE_ATTRIBUTE		0x420091
#define TAG_UNIQUE_IDENTIFIER		0x420094

/* Enumerations. */
#define OP_CREATE			0x01
#define OP_LOCATE			0x08
#define OP_GET				0x0a
#define OP_GET_ATTRIBUTES		0x0b
#define OP_ACTIVATE			0x12
#define OP_REVOKE			0x13
#define OP_DESTROY			0x14
#define OBJECT_SYMMETRIC_KEY		0x02
#define ALG_AES				0x03
#define NAME_TYPE_TEXT			0x01
#define USAGE_ENCRYPT			0x04
#define USAGE_DECRYPT			0x08
#define FORMAT_RAW			0x01
#define FORMAT_TRANSPARENT_SYMMETRIC	0x07
#define STATUS_SUCCESS			0
#define STATUS_PENDING			2

#define KMIP_PROTO_MAJOR		1
#define KMIP_PROTO_MINOR		2
#define KMIP_ERR_MAX			1024

struct kmip_conn {
	SSL_CTX		*kc_ctx;
	SSL		*kc_ssl;
	int		 kc_fd;
	int		 kc_timeout_ms;
	int		 kc_broken;	/* stream out of step: no more requests */
	char		 kc_peer[256];	/* "host:port" in messages */
	char		 kc_err[KMIP_ERR_MAX];
};

/* A parsed response; kr_buf may hold a key and is wiped on free. */
struct kmip_resp {
	uint8_t			*kr_buf;
	size_t			 kr_len;
	struct ttlv_item	*kr_tree;
	const struct ttlv_item	*kr_payload;	/* NULL if none was sent */
};

static void	 kmip_fail(struct kmip_conn *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static int	 kmip_io_wait(struct kmip_conn *, int, uint64_t,
		    const char *);
static int	 kmip_exchange(struct kmip_conn *, struct ttlv_enc *,
		    uint32_t, const char *, struct kmip_resp *);

static const char *
kmip_reason_name(uint32_t reason)
{
	switch (reason) {
	case 0x01:	return "Item Not Found";
	case 0x02:	return "Response Too Large";
	case 0x03:	return "Authentication Not Successful";
	case 0x04:	return "Invalid Message";
	case 0x05:	return "Operation Not Supported";
	case 0x06:	return "Missing Data";
	case 0x07:	return "Invalid Field";
	case 0x08:	return "Feature Not Supported";
	case 0x09:	return "Operation Canceled By Requester";
	case 0x0a:	return "Cryptographic Failure";
	case 0x0b:	return "Illegal Operation";
	case 0x0c:	return "Permission Denied";
	case 0x0d:	return "Object Archived";
	case 0x0e:	return "Index Out of Bounds";
	case 0x0f:	return "Application Namespace Not Supported";
	case 0x10:	return "Key Format Type Not Supported";
	case 0x11:	return "Key Compression Type Not Supported";
	case 0x12:	return "Encoding Option Error";
	case 0x13:	return "Key Value Not Present";
	case 0x14:	return "Attestation Required";
	case 0x15:	return "Attestation Failed";
	case 0x100:	return "General Failure";
	default:	return "unknown reason";
	}
}

const char *
kmip_state_name(uint32_t state)
{
	switch (state) {
	case KMIP_STATE_PRE_ACTIVE:	return "Pre-Active";
	case KMIP_STATE_ACTIVE:		return "Active";
	case KMIP_STATE_DEACTIVATED:	return "Deactivated";
	case KMIP_STATE_COMPROMISED:	return "Compromised";
	case KMIP_STATE_DESTROYED:	return "Destroyed";
	case KMIP_STATE_DESTROYED_COMPROMISED: return "Destroyed Compromised";
	default:			return "unknown";
	}
}

/*
 * Records "KMS host:port: message" as this connection's error, with
 * control characters (the message may quote the server) replaced, and
 * logs it once.
 */
static void
kmip_fail(struct kmip_conn *kc, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 off, i;
	int	 n;

	n = snprintf(kc->kc_err, sizeof(kc->kc_err), "KMS %s: ", kc->kc_peer);
	off = n < 0 ? 0 : (size_t)n;
	if (off >= sizeof(kc->kc_err))
		off = sizeof(kc->kc_err) - 1;
	va_start(ap, fmt);
	(void)vsnprintf(kc->kc_err + off, sizeof(kc->kc_err) - off, fmt, ap);
	va_end(ap);
	for (i = 0; kc->kc_err[i] != '\0'; i++)
		if ((unsigned char)kc->kc_err[i] < 0x20 ||
		    kc->kc_err[i] == 0x7f)
			kc->kc_err[i] = '?';
	log_warnx("%s", kc->kc_err);
}

const char *
kmip_error(const struct kmip_conn *kc)
{
	return kc != NULL ? kc->kc_err : "no KMS connection";
}

static uint64_t
kmip_now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline: 0, or -1 with errno. */
static int
kmip_poll(int fd, short events, uint64_t deadline)
{
	struct pollfd	 pfd;
	uint64_t	 now;
	int		 n;

	for (;;) {
		now = kmip_now_ms();
		if (now >= deadline) {
			errno = ETIMEDOUT;
			return -1;
		}
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		n = poll(&pfd, 1, (int)(deadline - now));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		return 0;
	}
}

/*
 * After an SSL call returned ret <= 0: waits until it may be retried
 * (0) or records why it failed (-1).  what names the step for errors.
 */
static int
kmip_io_wait(struct kmip_conn *kc, int ret, uint64_t deadline,
    const char *what)
{
	char	 errs[512];
	short	 events;
	int	 e, saved = errno;

	e = SSL_get_error(kc->kc_ssl, ret);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		events = POLLIN;
		break;
	case SSL_ERROR_WANT_WRITE:
		events = POLLOUT;
		break;
	case SSL_ERROR_ZERO_RETURN:
		kmip_fail(kc, "%s: connection closed by the server", what);
		return -1;
	case SSL_ERROR_SYSCALL:
		if (ssl_error_string(errs, sizeof(errs)) > 0)
			kmip_fail(kc, "%s: %s", what, errs);
		else if (saved == 0)
			kmip_fail(kc, "%s: connection closed by the server",
			    what);
		else
			kmip_fail(kc, "%s: %s", what, strerror(saved));
		return -1;
	default:
		if (ssl_error_string(errs, sizeof(errs)) == 0)
			(void)snprintf(errs, sizeof(errs), "TLS error %d", e);
		kmip_fail(kc, "%s: %s", what, errs);
		return -1;
	}
	if (kmip_poll(kc->kc_fd, events, deadline) == -1) {
		if (errno == ETIMEDOUT)
			kmip_fail(kc, "%s: no answer within %d ms", what,
			    kc->kc_timeout_ms);
		else
			kmip_fail(kc, "%s: poll: %s", what, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Sends len bytes from out, or (out NULL) reads exactly len bytes into
 * in, waiting for the socket until deadline.  0, or -1 after kmip_fail.
 */
static int
kmip_transfer(struct kmip_conn *kc, const uint8_t *out, uint8_t *in,
    size_t len, uint64_t deadline, const char *what)
{
	size_t	 chunk, done = 0;
	int	 n;

	while (done < len) {
		chunk = len - done > INT32_MAX ? INT32_MAX : len - done;
		ERR_clear_error();
		errno = 0;
		if (out != NULL)
			n = SSL_write(kc->kc_ssl, out + done, (int)chunk);
		else
			n = SSL_read(kc->kc_ssl, in + done, (int)chunk);
		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (kmip_io_wait(kc, n, deadline, what) == -1)
			return -1;
	}
	return 0;
}

/* A non-blocking TCP connection to host:port, made before deadline. */
static int
kmip_tcp_connect(struct kmip_conn *kc, const char *host, const char *port,
    uint64_t deadline)
{
	struct addrinfo	 hints, *res = NULL, *ai;
	socklen_t	 sl;
	int		 fd = -1, e, soerr, one = 1, saved = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if ((e = getaddrinfo(host, port, &hints, &res)) != 0) {
		kmip_fail(kc, "cannot resolve: %s", gai_strerror(e));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, ai->ai_protocol);
		if (fd == -1) {
			saved = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			if (kmip_poll(fd, POLLOUT, deadline) == 0) {
				soerr = 0;
				sl = sizeof(soerr);
				if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr,
				    &sl) == -1)
					soerr = errno;
				if (soerr == 0)
					break;
				errno = soerr;
			}
		}
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		if (saved == ETIMEDOUT)
			kmip_fail(kc, "cannot connect: no answer within %d ms",
			    kc->kc_timeout_ms);
		else
			kmip_fail(kc, "cannot connect: %s", strerror(saved));
		return -1;
	}
	/* Small request/response messages: do not wait for Nagle. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	kc->kc_fd = fd;
	return 0;
}

/*
 * The client context (TLS 1.2+, our certificate, the server's CA) and
 * the connection object expecting name, before any socket exists.
 */
static int
kmip_tls_setup(struct kmip_conn *kc, const char *cert, const char *key,
    const char *ca, const char *name)
{
	X509_VERIFY_PARAM	*param;
	unsigned char		 addr[sizeof(struct in6_addr)];
	char			 errs[1024];
	int			 is_ip;

	ERR_clear_error();
	if ((kc->kc_ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		ssl_error_string(errs, sizeof(errs));
		kmip_fail(kc, "SSL_CTX_new: %s", errs);
		return -1;
	}
	if (SSL_CTX_set_min_proto_version(kc->kc_ctx, TLS1_2_VERSION) != 1) {
		ssl_error_string(errs, sizeof(errs));
		kmip_fail(kc, "cannot require TLS 1.2: %s", errs);
		return -1;
	}
	if (pki_use_files(kc->kc_ctx, cert, key, ca, errs,
	    sizeof(errs)) == -1) {
		kmip_fail(kc, "%s", errs);
		return -1;
	}
	SSL_CTX_set_verify(kc->kc_ctx, SSL_VERIFY_PEER, NULL);

	if ((kc->kc_ssl = SSL_new(kc->kc_ctx)) == NULL) {
		ssl_error_string(errs, sizeof(errs));
		kmip_fail(kc, "SSL_new: %s", errs);
		return -1;
	}
	is_ip = inet_pton(AF_INET, name, addr) == 1 ||
	    inet_pton(AF_INET6, name, addr) == 1;
	if (is_ip) {
		param = SSL_get0_param(kc->kc_ssl);
		if (X509_VERIFY_PARAM_set1_ip_asc(param, name) != 1) {
			ssl_error_string(errs, sizeof(errs));
			kmip_fail(kc, "cannot expect address %s: %s", name,
			    errs);
			return -1;
		}
	} else {
		if (SSL_set_tlsext_host_name(kc->kc_ssl, name) != 1 ||
		    SSL_set1_host(kc->kc_ssl, name) != 1) {
			ssl_error_string(errs, sizeof(errs));
			kmip_fail(kc, "cannot expect name %s: %s", name, errs);
			return -1;
		}
	}
	return 0;
}

/* Did the server end the handshake over our certificate? */
static int
kmip_cert_alert(unsigned long e)
{
	return ERR_GET_LIB(e) == ERR_LIB_SSL &&
	    ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET &&
	    tls_alert_on_cert(ERR_GET_REASON(e) - SSL_AD_REASON_OFFSET);
}

struct kmip_conn *
kmip_connect(const char *host, const char *port, const char *cert,
    const char *key, const char *ca, const char *server_name)
{
	return kmip_connect_timeout(host, port, cert, key, ca, server_name,
	    KMIP_TIMEOUT_MS);
}

struct kmip_conn *
kmip_connect_timeout(const char *host, const char *port, const char *cert,
    const char *key, const char *ca, const char *server_name,
    int timeout_ms)
{
	struct kmip_conn	*kc = NULL;
	const char		*name;
	char			 errs[512];
	uint64_t		 deadline;
	long			 vr;
	int			 n;

	if ((kc = calloc(1, sizeof(*kc))) == NULL) {
		log_warn("KMS %s:%s: calloc", host, port);
		return NULL;
	}
	kc->kc_fd = -1;
	kc->kc_timeout_ms = timeout_ms > 0 ? timeout_ms : KMIP_TIMEOUT_MS;
	if (strchr(host, ':') != NULL)
		(void)snprintf(kc->kc_peer, sizeof(kc->kc_peer), "[%s]:%s",
		    host, port);
	else
		(void)snprintf(kc->kc_peer, sizeof(kc->kc_peer), "%s:%s",
		    host, port);
	name = server_name != NULL && *server_name != '\0' ? server_name :
	    host;
	deadline = kmip_now_ms() + (uint64_t)kc->kc_timeout_ms;

	/* Files first: a bad path is reported even with the KMS down. */
	if (kmip_tls_setup(kc, cert, key, ca, name) == -1)
		goto fail;
	if (kmip_tcp_connect(kc, host, port, deadline) == -1)
		goto fail;
	if (SSL_set_fd(kc->kc_ssl, kc->kc_fd) != 1) {
		ssl_error_string(errs, sizeof(errs));
		kmip_fail(kc, "SSL_set_fd: %s", errs);
		goto fail;
	}
	for (;;) {
		ERR_clear_error();
		errno = 0;
		if ((n = SSL_connect(kc->kc_ssl)) == 1)
			break;
		vr = SSL_get_verify_result(kc->kc_ssl);
		if (vr != X509_V_OK) {
			kmip_fail(kc, "server certificate refused (expected "
			    "%s, CA %s): %s", name, ca,
			    X509_verify_cert_error_string(vr));
			goto fail;
		}
		if (SSL_get_error(kc->kc_ssl, n) == SSL_ERROR_SSL &&
		    kmip_cert_alert(ERR_peek_last_error())) {
			ssl_error_string(errs, sizeof(errs));
			kmip_fail(kc, "the KMS refused this client's "
			    "certificate %s: %s", cert, errs);
			goto fail;
		}
		if (kmip_io_wait(kc, n, deadline, "TLS handshake") == -1)
			goto fail;
	}
	log_debug("KMS %s: connected, %s %s", kc->kc_peer,
	    SSL_get_version(kc->kc_ssl), SSL_get_cipher_name(kc->kc_ssl));
	return kc;
 fail:
	METRICS_INC(metrics.mt_errors, "kms");
	kc->kc_broken = 1;
	kmip_close(kc);
	return NULL;
}

void
kmip_close(struct kmip_conn *kc)
{
	if (kc == NULL)
		return;
	if (kc->kc_ssl != NULL) {
		/* One close_notify, not waiting for the server's. */
		if (!kc->kc_broken)
			(void)SSL_shutdown(kc->kc_ssl);
		SSL_free(kc->kc_ssl);
		kc->kc_ssl = NULL;
	}
	ERR_clear_error();
	if (kc->kc_fd != -1) {
		close(kc->kc_fd);
		kc->kc_fd = -1;
	}
	SSL_CTX_free(kc->kc_ctx);
	kc->kc_ctx = NULL;
	free(kc);
}

static void
kmip_resp_free(struct kmip_resp *kr)
{
	ttlv_free(kr->kr_tree);
	if (kr->kr_buf != NULL) {
		OPENSSL_cleanse(kr->kr_buf, kr->kr_len);
		free(kr->kr_buf);
	}
	memset(kr, 0, sizeof(*kr));
}

/*
 * Starts a request of one batch item for operation op, and opens its
 * Request Payload for the caller to fill.  kmip_exchange() closes it.
 */
static void
kmip_req_begin(struct ttlv_enc *te, uint32_t op)
{
	ttlv_enc_init(te);
	ttlv_begin(te, TAG_REQUEST_MESSAGE);
	ttlv_begin(te, TAG_REQUEST_HEADER);
	ttlv_begin(te, TAG_PROTOCOL_VERSION);
	ttlv_add_int(te, TAG_PROTOCOL_VERSION_MAJOR, KMIP_PROTO_MAJOR);
	ttlv_add_int(te, TAG_PROTOCOL_VERSION_MINOR, KMIP_PROTO_MINOR);
	ttlv_end(te);
	ttlv_add_int(te, TAG_MAXIMUM_RESPONSE_SIZE, TTLV_MSG_MAX);
	ttlv_add_int(te, TAG_BATCH_COUNT, 1);
	ttlv_end(te);
	ttlv_begin(te, TAG_BATCH_ITEM);
	ttlv_add_enum(te, TAG_OPERATION, op);
	ttlv_begin(te, TAG_REQUEST_PAYLOAD);
}

/* The operation's name in KMIP 1.x, for the latency metric's label. */
static const char *
kmip_op_name(uint32_t op)
{
	switch (op) {
	case OP_CREATE:		return "Create";
	case OP_LOCATE:		return "Locate";
	case OP_GET:		return "Get";
	case OP_GET_ATTRIBUTES:	return "GetAttributes";
	case OP_ACTIVATE:	return "Activate";
	case OP_REVOKE:		return "Revoke";
	case OP_DESTROY:	return "Destroy";
	default:		return "other";
	}
}

/* One exchange, as kmip_exchange() describes; not counted. */
static int
kmip_exchange_once(struct kmip_conn *kc, struct ttlv_enc *te, uint32_t op,
    const char *what, struct kmip_resp *kr)
{
	const struct ttlv_item	*hdr, *item;
	const uint8_t		*req;
	uint8_t			 h[TTLV_HDR_LEN];
	char			 err[256], msg[512];
	size_t			 reqlen, total;
	uint64_t		 deadline;
	uint32_t		 status, reason, rop;
	int32_t			 count;

	memset(kr, 0, sizeof(*kr));
	ttlv_end(te);		/* Request Payload */
	ttlv_end(te);		/* Batch Item */
	ttlv_end(te);		/* Request Message */
	if ((req = ttlv_enc_finish(te, &reqlen)) == NULL) {
		kmip_fail(kc, "%s: cannot encode the request", what);
		goto fail;
	}
	if (kc->kc_broken) {
		kmip_fail(kc, "%s: connection unusable after an earlier "
		    "error", what);
		goto fail;
	}

	deadline = kmip_now_ms() + (uint64_t)kc->kc_timeout_ms;
	if (kmip_transfer(kc, req, NULL, reqlen, deadline, what) == -1)
		goto broken;
	ttlv_enc_free(te);
	if (kmip_transfer(kc, NULL, h, sizeof(h), deadline, what) == -1)
		goto broken;
	if (ttlv_msg_len(h, TAG_RESPONSE_MESSAGE, &total) == -1) {
		kmip_fail(kc, "%s: response is not a KMIP Response Message "
		    "of at most %u bytes", what, TTLV_MSG_MAX);
		goto broken;
	}
	if ((kr->kr_buf = malloc(total)) == NULL) {
		kmip_fail(kc, "%s: out of memory", what);
		goto broken;
	}
	kr->kr_len = total;
	memcpy(kr->kr_buf, h, sizeof(h));
	if (kmip_transfer(kc, NULL, kr->kr_buf + sizeof(h),
	    total - sizeof(h), deadline, what) == -1)
		goto broken;
	if ((kr->kr_tree = ttlv_parse(kr->kr_buf, kr->kr_len, err,
	    sizeof(err))) == NULL) {
		kmip_fail(kc, "%s: malformed response: %s", what, err);
		goto fail;
	}

	hdr = ttlv_find(kr->kr_tree, TAG_RESPONSE_HEADER);
	if (ttlv_get_int(ttlv_find(hdr, TAG_BATCH_COUNT), &count) == -1 ||
	    count != 1 ||
	    (item = ttlv_find(kr->kr_tree, TAG_BATCH_ITEM)) == NULL ||
	    ttlv_find_next(item, TAG_BATCH_ITEM) != NULL) {
		kmip_fail(kc, "%s: response without exactly one batch item",
		    what);
		goto fail;
	}
	if (ttlv_get_enum(ttlv_find(item, TAG_RESULT_STATUS), &status) ==
	    -1) {
		kmip_fail(kc, "%s: response without a result status", what);
		goto fail;
	}
	if (status != STATUS_SUCCESS) {
		if (ttlv_get_enum(ttlv_find(item, TAG_RESULT_REASON),
		    &reason) == -1)
			reason = 0;
		if (ttlv_get_text(ttlv_find(item, TAG_RESULT_MESSAGE), msg,
		    sizeof(msg)) == -1)
			(void)snprintf(msg, sizeof(msg), "no message");
		if (status == STATUS_PENDING)
			kmip_fail(kc, "%s: the server answered asynchronously,"
			    " which this client does not support", what);
		else
			kmip_fail(kc, "%s failed: %s: %s", what,
			    kmip_reason_name(reason), msg);
		goto fail;
	}
	/* The operation is optional in a response, but must match. */
	if (ttlv_find(item, TAG_OPERATION) != NULL &&
	    (ttlv_get_enum(ttlv_find(item, TAG_OPERATION), &rop) == -1 ||
	    rop != op)) {
		kmip_fail(kc, "%s: response for another operation", what);
		goto fail;
	}
	kr->kr_payload = ttlv_find(item, TAG_RESPONSE_PAYLOAD);
	kc->kc_err[0] = '\0';
	return 0;
 broken:
	kc->kc_broken = 1;
 fail:
	ttlv_enc_free(te);
	kmip_resp_free(kr);
	return -1;
}

/*
 * Sends the request in te (payload still open; te is freed here),
 * reads and parses the response, and checks it is the one successful
 * batch item of operation op.  what ("Locate 'acme-kek'") names the
 * request in errors.  On success kr holds the response, to free with
 * kmip_resp_free(); on failure it is empty.  Each request's latency
 * goes into the metrics, and each failure counts as a "kms" error.
 */
static int
kmip_exchange(struct kmip_conn *kc, struct ttlv_enc *te, uint32_t op,
    const char *what, struct kmip_resp *kr)
{
	uint64_t	 t0 = kmip_now_ms();
	int		 rv;

	rv = kmip_exchange_once(kc, te, op, what, kr);
	metrics_observe(metrics_series(metrics.mt_kms_seconds,
	    kmip_op_name(op), NULL), (double)(kmip_now_ms() - t0) / 1000);
	if (rv == -1)
		METRICS_INC(metrics.mt_errors, "kms");
	return rv;
}

/* Names are text we send and print: printable, bounded. */
static int
kmip_check_text(struct kmip_conn *kc, const char *what, const char *s,
    size_t max)
{
	size_t	 i, len;

	len = strlen(s);
	if (len == 0 || len >= max) {
		kmip_fail(kc, "%s '%.64s': empty or longer than %zu bytes",
		    what, s, max - 1);
		return -1;
	}
	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			kmip_fail(kc, "%s: control character in '%.64s'",
			    what, s);
			return -1;
		}
	}
	return 0;
}

/* Attribute {Attribute Name, Attribute Value} of the simple types. */
static void
kmip_attr_enum(struct ttlv_enc *te, const char *name, uint32_t v)
{
	ttlv_begin(te, TAG_ATTRIBUTE);
	ttlv_add_text(te, TAG_ATTRIBUTE_NAME, name);
	ttlv_add_enum(te, TAG_ATTRIBUTE_VALUE, v);
	ttlv_end(te);
}

static void
kmip_attr_int(struct ttlv_enc *te, const char *name, int32_t v)
{
	ttlv_begin(te, TAG_ATTRIBUTE);
	ttlv_add_text(te, TAG_ATTRIBUTE_NAME, name);
	ttlv_add_int(te, TAG_ATTRIBUTE_VALUE, v);
	ttlv_end(te);
}

static void
kmip_attr_name(struct ttlv_enc *te, const char *name)
{
	ttlv_begin(te, TAG_ATTRIBUTE);
	ttlv_add_text(te, TAG_ATTRIBUTE_NAME, "Name");
	ttlv_begin(te, TAG_ATTRIBUTE_VALUE);
	ttlv_add_text(te, TAG_NAME_VALUE, name);
	ttlv_add_enum(te, TAG_NAME_TYPE, NAME_TYPE_TEXT);
	ttlv_end(te);
	ttlv_end(te);
}

/* Copies the payload's Unique Identifier to uid (KMIP_UID_MAX bytes). */
static int
kmip_resp_uid(struct kmip_conn *kc, const struct kmip_resp *kr,
    const char *what, char *uid)
{
	if (ttlv_get_text(ttlv_find(kr->kr_payload, TAG_UNIQUE_IDENTIFIER),
	    uid, KMIP_UID_MAX) == -1 || uid[0] == '\0') {
		kmip_fail(kc, "%s: response without a valid unique "
		    "identifier", what);
		return -1;
	}
	return 0;
}

int
kmip_create(struct kmip_conn *kc, const char *name, char uid[KMIP_UID_MAX])
{
	struct ttlv_enc		 te;
	struct kmip_resp	 kr;
	char			 what[KMIP_NAME_MAX + 32];
	int			 rv = -1;

	memset(&kr, 0, sizeof(kr));
	uid[0] = '\0';
	if (kmip_check_text(kc, "Create", name, KMIP_NAME_MAX) == -1)
		return -1;
	(void)snprintf(what, sizeof(what), "Create '%s'", name);

	kmip_req_begin(&te, OP_CREATE);
	ttlv_add_enum(&te, TAG_OBJECT_TYPE, OBJECT_SYMMETRIC_KEY);
	ttlv_begin(&te, TAG_TEMPLATE_ATTRIBUTE);
	kmip_attr_enum(&te, "Cryptographic Algorithm", ALG_AES);
	kmip_attr_int(&te, "Cryptographic Length", KMIP_KEY_LEN * 8);
	kmip_attr_int(&te, "Cryptographic Usage Mask",
	    USAGE_ENCRYPT | USAGE_DECRYPT);
	kmip_attr_name(&te, name);
	ttlv_end(&te);
	if (kmip_exchange(kc, &te, OP_CREATE, what, &kr) == -1)
		goto fail;
	if (kmip_resp_uid(kc, &kr, what, uid) == -1)
		goto fail;
	rv = 0;
 fail:
	kmip_resp_free(&kr);
	return rv;
}

void
kmip_uids_free(char **uids, size_t n)
{
	size_t	 i;

	if (uids == NULL)
		return;
	for (i = 0; i < n; i++)
		free(uids[i]);
	free(uids);
}

int
kmip_locate(struct kmip_conn *kc, const char *name, char ***uidsp,
    size_t *np)
{
	struct ttlv_enc		 te;
	struct kmip_resp	 kr;
	const struct ttlv_item	*it;
	char			 what[KMIP_NAME_MAX + 32], uid[KMIP_UID_MAX];
	char			**uids = NULL;
	size_t			 n = 0, count = 0, i;
	int			 rv = -1, dup;

	memset(&kr, 0, sizeof(kr));
	*uidsp = NULL;
	*np = 0;
	if (kmip_check_text(kc, "Locate", name, KMIP_NAME_MAX) == -1)
		return -1;
	(void)snprintf(what, sizeof(what), "Locate '%s'", name);

	kmip_req_begin(&te, OP_LOCATE);
	kmip_attr_enum(&te, "Object Type", OBJECT_SYMMETRIC_KEY);
	kmip_attr_name(&te, name);
	if (kmip_exchange(kc, &te, OP_LOCATE, what, &kr) == -1)
		goto fail;

	/* Count before allocating: the count is bounded by the message. */
	for (it = ttlv_find(kr.kr_payload, TAG_UNIQUE_IDENTIFIER); it != NULL;
	    it = ttlv_find_next(it, TAG_UNIQUE_IDENTIFIER))
		count++;
	if (count > KMIP_LOCATE_MAX) {
		kmip_fail(kc, "%s: %zu keys, more than the %d this client "
		    "handles", what, count, KMIP_LOCATE_MAX);
		goto fail;
	}
	if (count == 0)
		goto done;
	if ((uids = calloc(count, sizeof(*uids))) == NULL) {
		kmip_fail(kc, "%s: out of memory", what);
		goto fail;
	}
	for (it = ttlv_find(kr.kr_payload, TAG_UNIQUE_IDENTIFIER);
	    it != NULL && n < count;
	    it = ttlv_find_next(it, TAG_UNIQUE_IDENTIFIER)) {
		if (ttlv_get_text(it, uid, sizeof(uid)) == -1 ||
		    uid[0] == '\0') {
			kmip_fail(kc, "%s: invalid unique identifier in the "
			    "response", what);
			goto fail;
		}
		for (dup = 0, i = 0; i < n && !dup; i++)
			dup = strcmp(uids[i], uid) == 0;
		if (dup)
			continue;
		if ((uids[n] = strdup(uid)) == NULL) {
			kmip_fail(kc, "%s: out of memory", what);
			goto fail;
		}
		n++;
	}
 done:
	*uidsp = uids;
	*np = n;
	uids = NULL;
	rv = 0;
 fail:
	kmip_uids_free(uids, n);
	kmip_resp_free(&kr);
	return rv;
}

int
kmip_get_attributes(struct kmip_conn *kc, const char *uid,
    struct kmip_key_info *ki)
{
	struct ttlv_enc		 te;
	struct kmip_resp	 kr;
	const struct ttlv_item	*it, *val;
	char			 what[KMIP_UID_MAX + 32], name[64];
	int			 rv = -1;

	memset(&kr, 0, sizeof(kr));
	memset(ki, 0, sizeof(*ki));
	if (kmip_check_text(kc, "Get Attributes", uid, KMIP_UID_MAX) == -1)
		return -1;
	(void)snprintf(what, sizeof(what), "Get Attributes %s", uid);
	(void)snprintf(ki->ki_uid, sizeof(ki->ki_uid), "%s", uid);

	kmip_req_begin(&te, OP_GET_ATTRIBUTES);
	ttlv_add_text(&te, TAG_UNIQUE_IDENTIFIER, uid);
	ttlv_add_text(&te, TAG_ATTRIBUTE_NAME, "State");
	ttlv_add_text(&te, TAG_ATTRIBUTE_NAME, "Initial Date");
	ttlv_add_text(&te, TAG_ATTRIBUTE_NAME, "Activation Date");
	if (kmip_exchange(kc, &te, OP_GET_ATTRIBUTES, what, &kr) == -1)
		goto fail;

	for (it = ttlv_find(kr.kr_payload, TAG_ATTRIBUTE); it != NULL;
	    it = ttlv_find_next(it, TAG_ATTRIBUTE)) {
		if (ttlv_get_text(ttlv_find(it, TAG_ATTRIBUTE_NAME), name,
		    sizeof(name)) == -1)
			continue;
		val = ttlv_find(it, TAG_ATTRIBUTE_VALUE);
		if (strcmp(name, "State") == 0) {
			if (ttlv_get_enum(val, &ki->ki_state) == -1)
				goto bad;
		} else if (strcmp(name, "Initial Date") == 0) {
			if (ttlv_get_datetime(val, &ki->ki_initial_date) == -1)
				goto bad;
		} else if (strcmp(name, "Activation Date") == 0) {
			if (ttlv_get_datetime(val,
			    &ki->ki_activation_date) == -1)
				goto bad;
		}
	}
	if (ki->ki_state == 0) {
		kmip_fail(kc, "%s: the server did not report the State", what);
		goto fail;
	}
	rv = 0;
	goto fail;
 bad:
	kmip_fail(kc, "%s: attribute %s of the wrong type", what, name);
 fail:
	kmip_resp_free(&kr);
	return rv;
}

/*
 * The 32 bytes of an AES-256 key from a Get response: a Symmetric Key
 * whose Key Block is in Raw or Transparent Symmetric Key format and not
 * wrapped.
 */
static int
kmip_key_material(struct kmip_conn *kc, const struct ttlv_item *payload,
    const char *what, uint8_t key[KMIP_KEY_LEN])
{
	const struct ttlv_item	*block, *value, *material;
	const uint8_t		*p;
	size_t			 len;
	uint32_t		 type, format, alg;
	int32_t			 bits;

	if (ttlv_get_enum(ttlv_find(payload, TAG_OBJECT_TYPE), &type) == -1 ||
	    type != OBJECT_SYMMETRIC_KEY) {
		kmip_fail(kc, "%s: the object is not a symmetric key", what);
		return -1;
	}
	block = ttlv_find(ttlv_find(payload, TAG_SYMMETRIC_KEY),
	    TAG_KEY_BLOCK);
	if (block == NULL || ttlv_get_enum(ttlv_find(block,
	    TAG_KEY_FORMAT_TYPE), &format) == -1) {
		kmip_fail(kc, "%s: response without a key block", what);
		return -1;
	}
	if (ttlv_find(block, TAG_KEY_WRAPPING_DATA) != NULL) {
		kmip_fail(kc, "%s: the key came wrapped", what);
		return -1;
	}
	if (ttlv_find(block, TAG_CRYPTOGRAPHIC_ALGORITHM) != NULL &&
	    (ttlv_get_enum(ttlv_find(block, TAG_CRYPTOGRAPHIC_ALGORITHM),
	    &alg) == -1 || alg != ALG_AES)) {
		kmip_fail(kc, "%s: not an AES key", what);
		return -1;
	}
	if (ttlv_find(block, TAG_CRYPTOGRAPHIC_LENGTH) != NULL &&
	    (ttlv_get_int(ttlv_find(block, TAG_CRYPTOGRAPHIC_LENGTH),
	    &bits) == -1 || bits != KMIP_KEY_LEN * 8)) {
		kmip_fail(kc, "%s: not a 256-bit key", what);
		return -1;
	}
	value = ttlv_find(block, TAG_KEY_VALUE);
	material = ttlv_find(value, TAG_KEY_MATERIAL);
	if (format == FORMAT_TRANSPARENT_SYMMETRIC)
		material = ttlv_find(material, TAG_KEY);
	else if (format != FORMAT_RAW) {
		kmip_fail(kc, "%s: key in format %u, neither Raw nor "
		    "Transparent Symmetric Key", what, format);
		return -1;
	}
	if (ttlv_get_bytes(material, &p, &len) == -1) {
		kmip_fail(kc, "%s: response without key material", what);
		return -1;
	}
	if (len != KMIP_KEY_LEN) {
		kmip_fail(kc, "%s: key of %zu bytes, not %d", what, len,
		    KMIP_KEY_LEN);
		return -1;
	}
	memcpy(key, p, KMIP_KEY_LEN);
	return 0;
}

int
kmip_get(struct kmip_conn *kc, const char *uid, uint8_t key[KMIP_KEY_LEN])
{
	struct ttlv_enc		 te;
	struct kmip_resp	 kr;
	char			 what[KMIP_UID_MAX + 16], ruid[KMIP_UID_MAX];
	int			 rv = -1;

	memset(&kr, 0, sizeof(kr));
	OPENSSL_cleanse(key, KMIP_KEY_LEN);
	if (kmip_check_text(kc, "Get", uid, KMIP_UID_MAX) == -1)
		return -1;
	(void)snprintf(what, sizeof(what), "Get %s", uid);

	kmip_req_begin(&te, OP_GET);
	ttlv_add_text(&te, TAG_UNIQUE_IDENTIFIER, uid);
	if (kmip_exchange(kc, &te, OP_GET, what, &kr) == -1)
		goto fail;
	if (kmip_resp_uid(kc, &kr, what, ruid) == -1)
		goto fail;
	if (strcmp(ruid, uid) != 0) {
		kmip_fail(kc, "%s: response for another object (%s)", what,
		    ruid);
		goto fail;
	}
	if (kmip_key_material(kc, kr.kr_payload, what, key) == -1)
		goto fail;
	rv = 0;
 fail:
	if (rv == -1)
		OPENSSL_cleanse(key, KMIP_KEY_LEN);
	kmip_resp_free(&kr);
	return rv;
}

/* Activate and Destroy: a Unique Identifier in, the same one out. */
static int
kmip_uid_op(struct kmip_conn *kc, uint32_t op, const char *opname,
    const char *uid, uint32_t reason)
{
	struct ttlv_enc		 te;
	struct kmip_resp	 kr;
	char			 what[KMIP_UID_MAX + 32];
	int			 rv = -1;

	memset(&kr, 0, sizeof(kr));
	if (kmip_check_text(kc, opname, uid, KMIP_UID_MAX) == -1)
		return -1;
	(void)snprintf(what, sizeof(what), "%s %s", opname, uid);

	kmip_req_begin(&te, op);
	ttlv_add_text(&te, TAG_UNIQUE_IDENTIFIER, uid);
	if (op == OP_REVOKE) {
		ttlv_begin(&te, TAG_REVOCATION_REASON);
		ttlv_add_enum(&te, TAG_REVOCATION_REASON_CODE, reason);
		ttlv_end(&te);
		/* Required with Key Compromise: we learn of it now. */
		if (reason == KMIP_REVOKE_COMPROMISE)
			ttlv_add_datetime(&te, TAG_COMPROMISE_OCCURRENCE_DATE,
			    (int64_t)time(NULL));
	}
	if (kmip_exchange(kc, &te, op, what, &kr) == -1)
		goto fail;
	rv = 0;
 fail:
	kmip_resp_free(&kr);
	return rv;
}

int
kmip_activate(struct kmip_conn *kc, const char *uid)
{
	return kmip_uid_op(kc, OP_ACTIVATE, "Activate", uid, 0);
}

int
kmip_revoke(struct kmip_conn *kc, const char *uid, uint32_t reason)
{
	return kmip_uid_op(kc, OP_REVOKE, "Revoke", uid, reason);
}

int
kmip_destroy(struct kmip_conn *kc, const char *uid)
{
	return kmip_uid_op(kc, OP_DESTROY, "Destroy", uid, 0);
}

/* Decimal identifiers compare as numbers, others byte-wise. */
static int
kmip_uid_cmp(const char *a, const char *b)
{
	size_t	 la, lb;

	if (a[strspn(a, "0123456789")] != '\0' ||
	    b[strspn(b, "0123456789")] != '\0')
		return strcmp(a, b);
	a += strspn(a, "0");
	b += strspn(b, "0");
	la = strlen(a);
	lb = strlen(b);
	if (la != lb)
		return la < lb ? -1 : 1;
	return strcmp(a, b);
}

int
kmip_key_cmp(const void *va, const void *vb)
{
	const struct kmip_key_info	*a = va, *b = vb;

	if (a->ki_initial_date != b->ki_initial_date)
		return a->ki_initial_date < b->ki_initial_date ? -1 : 1;
	if (a->ki_activation_date != b->ki_activation_date)
		return a->ki_activation_date < b->ki_activation_date ? -1 : 1;
	return kmip_uid_cmp(a->ki_uid, b->ki_uid);
}

int
kmip_versions(struct kmip_conn *kc, const char *name,
    struct kmip_key_info **keysp, size_t *np)
{
	struct kmip_key_info	*keys = NULL;
	char			**uids = NULL;
	size_t			 n = 0, i;
	int			 rv = -1;

	*keysp = NULL;
	*np = 0;
	if (kmip_locate(kc, name, &uids, &n) == -1)
		goto fail;
	if (n > 0 && (keys = calloc(n, sizeof(*keys))) == NULL) {
		kmip_fail(kc, "key '%s': out of memory", name);
		goto fail;
	}
	for (i = 0; i < n; i++)
		if (kmip_get_attributes(kc, uids[i], &keys[i]) == -1)
			goto fail;
	if (n > 1)
		qsort(keys, n, sizeof(*keys), kmip_key_cmp);
	*keysp = keys;
	*np = n;
	keys = NULL;
	rv = 0;
 fail:
	free(keys);
	kmip_uids_free(uids, n);
	return rv;
}

int
kmip_newest_active(struct kmip_conn *kc, const char *name,
    char uid[KMIP_UID_MAX], uint8_t key[KMIP_KEY_LEN], int64_t *version)
{
	struct kmip_key_info	*keys = NULL;
	const struct kmip_key_info *best = NULL;
	size_t			 n = 0, i;
	int			 rv = -1;

	uid[0] = '\0';
	OPENSSL_cleanse(key, KMIP_KEY_LEN);
	if (kmip_versions(kc, name, &keys, &n) == -1)
		goto fail;
	for (i = n; i > 0 && best == NULL; i--)
		if (keys[i - 1].ki_state == KMIP_STATE_ACTIVE)
			best = &keys[i - 1];
	if (n == 0) {
		kmip_fail(kc, "no key named '%s' (create one, or check the "
		    "name and this client's certificate)", name);
		goto fail;
	}
	if (best == NULL) {
		kmip_fail(kc, "key '%s': none of its %zu versions is Active "
		    "(newest %s is %s)", name, n, keys[n - 1].ki_uid,
		    kmip_state_name(keys[n - 1].ki_state));
		goto fail;
	}
	if (kmip_get(kc, best->ki_uid, key) == -1)
		goto fail;
	(void)snprintf(uid, KMIP_UID_MAX, "%s", best->ki_uid);
	if (version != NULL)
		*version = best->ki_initial_date;
	log_debug("KMS %s: key '%s': newest Active version %s of %zu",
	    kc->kc_peer, name, uid, n);
	rv = 0;
 fail:
	free(keys);
	return rv;
}
