/*
 * common.h: what both transporter daemons share.
 *
 * Prototypes are grouped by the file that defines them.
 */
#ifndef TRANSPORTER_COMMON_H
#define TRANSPORTER_COMMON_H

#include <sys/types.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "bytes.h"
#include "transporter.pb-c.h"

struct event_base;
struct bufferevent;
struct evbuffer;
struct iovec;

#define TRANSPORTER_VERSION	"0.1.0"
#define PROTOCOL_VERSION	1

/*
 * Exit codes of both programs (documented in README.md and the man
 * pages).  Keep them stable: scripts depend on them.
 */
#define EXIT_OK			0
#define EXIT_ERROR		1	/* anything not listed below */
#define EXIT_USAGE		2	/* bad command line or configuration */
#define EXIT_CONNECT		3	/* cannot connect, TLS or identity refused */
#define EXIT_NOT_FOUND		4	/* no such backup name or restore point */
#define EXIT_INTEGRITY		5	/* data failed a check; nothing wrong written */
#define EXIT_INPUT		6	/* disk image or output unreadable/unwritable */
#define EXIT_TARGET		7	/* target storage full or failing */
#define EXIT_KEY		8	/* key missing, wrong password, KMS down */
#define EXIT_ROLLBACK		9	/* the target went back past a point we committed */

#define FRAME_HDR_LEN		4
#define FRAME_MAX		(17u << 20)	/* hard maximum frame size */
#define BLOCK_SIZE_DEFAULT	(1u << 20)
#define BLOCK_SIZE_MIN		(64u << 10)
#define BLOCK_SIZE_MAX		(16u << 20)
#define NAME_MAX_LEN		128	/* backup names */
#define RESTORE_RESEND_MAX	65536	/* RestoreRequest.resend entries */
#define JOB_CONNECTIONS_MAX	16	/* connections carrying one backup */
#define JOB_TOKEN_LEN		32	/* BaseIndex.job_token, JoinJob */

#define CHUNK_ID_LEN		32
#define AEAD_KEY_LEN		32
#define AEAD_NONCE_LEN		12
#define AEAD_TAG_LEN		16
#define KEY_ID_LEN		16
#define AAD_MAX_LEN		64
/* A chunk sealed under a data key: key id | nonce | ciphertext | tag. */
#define SEALED_OVERHEAD		(KEY_ID_LEN + AEAD_NONCE_LEN + AEAD_TAG_LEN)

/* AAD purposes: what a sealed buffer is, bound into its AAD. */
#define AAD_BLOCK_TO_TARGET	1	/* in-flight block, source -> target */
#define AAD_BLOCK_TO_SOURCE	2	/* in-flight block, target -> source */
#define AAD_CHUNK_STORED	3	/* chunk at rest in a repository */

/* log.c */
void	 log_init(const char *, int, int);
void	 log_setverbose(int);
void	 log_set_format(int);	/* 1: JSON lines */
int	 log_format_arg(const char *, const char *, int *);
void	 log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_errx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_ssl(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	 fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
size_t	 ssl_error_string(char *, size_t);

/* crypto.c */
void	 crypto_sha256(const void *, size_t, uint8_t [CHUNK_ID_LEN]);
int	 crypto_sha256_iov(const struct iovec *, int, uint8_t [CHUNK_ID_LEN]);
int	 crypto_random(void *, size_t);
void	 crypto_wipe(void *, size_t);
size_t	 crypto_aad(uint8_t [AAD_MAX_LEN], uint8_t, const uint8_t *,
	    const uint8_t [CHUNK_ID_LEN], uint64_t);
int	 crypto_seal(const uint8_t [AEAD_KEY_LEN],
	    const uint8_t [AEAD_NONCE_LEN], const uint8_t *, size_t,
	    const void *, size_t, uint8_t *);
int	 crypto_open(const uint8_t [AEAD_KEY_LEN],
	    const uint8_t [AEAD_NONCE_LEN], const uint8_t *, size_t,
	    const void *, size_t, uint8_t *);
void	 crypto_nonce(uint8_t [AEAD_NONCE_LEN], uint32_t, uint64_t);
void	 hex_encode(const uint8_t *, size_t, char *);
int	 hex_decode(const char *, uint8_t *, size_t);

/* idmap.c: a disk's chunk ids, the pages of its holes never touched */
struct id_map {
	uint8_t		*im_ids;	/* im_blocks * CHUNK_ID_LEN, mapped */
	uint8_t		*im_touched;	/* its pages ever written: bits */
	uint64_t	 im_blocks;
};
int	 id_map_init(struct id_map *, uint64_t);
void	 id_map_free(struct id_map *);
const uint8_t	*id_map_get(const struct id_map *, uint64_t);
int	 id_map_is_zero(const struct id_map *, uint64_t);
void	 id_map_set(struct id_map *, uint64_t, const uint8_t *);
void	 id_map_put(struct id_map *, uint64_t, const uint8_t *, size_t);
int	 id_map_copy(struct id_map *, const struct id_map *);
struct iovec	*id_map_iov(const struct id_map *, int, int *);
int	 id_map_sha256(const struct id_map *, uint8_t [CHUNK_ID_LEN]);

/* compress.c */
size_t	 compress_bound(size_t);
ssize_t	 compress_block(int, const void *, size_t, void *, size_t);
int	 decompress_block(const void *, size_t, void *, size_t);
int	 compress_verify(const void *, size_t, const void *, size_t, void *);

/* conf.c */
typedef int (*conf_cb)(void *, const char *, const char *, const char *,
	    const char *, int);
int	 conf_parse_file(const char *, conf_cb, void *);
int	 conf_parse_size(const char *, uint64_t *);
int	 conf_parse_uint(const char *, uint64_t, uint64_t, uint64_t *);
int	 conf_parse_bool(const char *, int *);
int	 conf_parse_duration(const char *, uint64_t *);
int	 conf_split_hostport(const char *, char **, char **);
int	 conf_check_key_file(const char *, char *, size_t);
int	 conf_check_read_file(const char *, char *, size_t);
int	 conf_set_string(const char *, int, const char *, const char *,
	    char **);
int	 conf_set_file(const char *, int, const char *, const char *, int,
	    char **);

/* frame.c */
int	 frame_send(struct bufferevent *, const Frame *);
int	 frame_queue(struct evbuffer *, uint8_t *, size_t);
uint8_t	*frame_pack(const Frame *, size_t *);
uint8_t	*frame_pack_block(const Block *, size_t, uint8_t **, size_t *);
int	 frame_take(struct evbuffer *, size_t, uint8_t **, size_t *);
Frame	*frame_unpack(const uint8_t *, size_t);
void	 frame_free(Frame *);
int	 frame_send_error(struct bufferevent *, Error__Code, const char *, ...)
	    __attribute__((format(printf, 3, 4)));
const char *frame_name(const Frame *);

/* pki.c */
int	 pki_use_files(SSL_CTX *, const char *, const char *, const char *,
	    char *, size_t);
int	 pki_load_crl(SSL_CTX *, const char *);
void	 pki_warn_dates(SSL_CTX *, const char *);
void	 pki_publish_expiry(SSL_CTX *);

/* tls.c */
struct tls_conf {
	const char	*tc_cert;
	const char	*tc_key;
	const char	*tc_ca;
	const char	*tc_crl;	/* may be NULL */
};
SSL_CTX	*tls_ctx_server(const struct tls_conf *);
SSL_CTX	*tls_ctx_client(const struct tls_conf *);
SSL	*tls_client_ssl(SSL_CTX *, const char *);
int	 tls_session_keys(SSL *, uint8_t [AEAD_KEY_LEN],
	    uint8_t [AEAD_KEY_LEN]);
int	 tls_peer_has_identity(SSL *, const char *);
void	 tls_peer_describe(SSL *, char *, size_t);
const char *tls_verify_reason(SSL *);
void	 tls_count_sent(SSL *, uint64_t *, size_t);
int	 tls_bev_errors(struct bufferevent *, char *, size_t, int *);
int	 tls_alert_on_cert(int);

/* pool.c */
struct pool;
struct pool_job {
	void		(*pj_work)(struct pool_job *);	/* on a worker */
	void		(*pj_done)(struct pool_job *);	/* on the loop */
	struct pool_job	*pj_next;
};
struct pool	*pool_new(struct event_base *, int);
void	 pool_submit(struct pool *, struct pool_job *);
int	 pool_threads(const struct pool *);
void	 pool_free(struct pool *);
int	 pool_default_threads(void);

/* util.c */
uint64_t	 now_ms(void);
int	 name_is_valid(const char *);
void	 format_bytes(uint64_t, char *, size_t);
long	 peak_rss_kib(void);
void	 tune_malloc(void);
void	 json_print_string(const char *);
int	 buf_is_zero(const void *, size_t);
int	 id_set_add(void **, const void *, size_t,
	    int (*)(const void *, const void *));

#endif /* TRANSPORTER_COMMON_H */
