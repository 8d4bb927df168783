/*
 * source.h: source-transporter's structures, defaults and prototypes,
 * grouped by the file that defines them.
 */
#ifndef SOURCE_H
#define SOURCE_H

#include <stdint.h>

#include "common.h"
#include "keys.h"

#define SOURCE_CONF_DEFAULT	"/etc/transporter/source.conf"
#define SOURCE_PORT_DEFAULT	"7878"
#define SOURCE_WINDOW_DEFAULT	(256u << 20)	/* unacknowledged bytes */
#define SOURCE_WINDOW_MIN	(64u << 20)
#define SOURCE_OUT_MAX		(8u << 20)	/* queued on the socket */
#define SOURCE_CONNECTIONS_DEFAULT 1		/* docs/PERFORMANCE.md */
#define SOURCE_CREDIT_STEP	(8u << 20)	/* restore credit grants */
#define COMPRESSION_LEVEL_DEFAULT 1	/* docs/PERFORMANCE.md */
#define RESUME_TIMEOUT_DEFAULT	1800	/* seconds */
#define RECONNECT_DELAY_MAX	30	/* seconds between attempts */
#define SOURCE_STATE_DIR_DEFAULT "/var/lib/transporter-source"
#define STATE_FILE_MAX		(4u << 20)

/* A scheduled backup the agent runs ([job NAME] in source.conf). */
struct source_job {
	char		*sj_name;
	char		*sj_disk;
	uint64_t	 sj_every;	/* seconds */
	char		*sj_encryption;	/* NULL: the configured default */
	char		*sj_dirty_bitmap;
	char		*sj_bandwidth;	/* NULL: the configured default */
	char		*sj_connections;	/* NULL: the configured default */
	struct source_job *sj_next;
	/* agent state */
	struct agent	*sj_agent;
	struct event	*sj_timer;
	int		 sj_due;
	uint64_t	 sj_runs;
	uint64_t	 sj_failures;
};

/*
 * roundtrip_check: which blocks are decompressed (and, source-side,
 * opened) again and compared with the block read before they are sent.
 * auto: source-side blocks, which nobody else can check before a
 * restore; the target checks in-flight blocks' chunk ids on receipt.
 */
#define ROUNDTRIP_AUTO		0
#define ROUNDTRIP_YES		1
#define ROUNDTRIP_NO		2

struct source_conf {
	char		*sc_path;
	char		*sc_target;		/* host:port */
	char		*sc_server_name;	/* checked against its cert */
	char		*sc_cert;
	char		*sc_key;
	char		*sc_ca;
	char		*sc_crl;
	uint64_t	 sc_block_size;
	uint64_t	 sc_compression_level;
	int		 sc_roundtrip_check;	/* ROUNDTRIP_* */
	int		 sc_direct_io;		/* O_DIRECT disk reads */
	uint64_t	 sc_workers;		/* 0: one per core */
	uint64_t	 sc_window;
	uint64_t	 sc_connections;	/* per backup job */
	uint64_t	 sc_resume_timeout;	/* seconds of reconnecting */
	uint64_t	 sc_bandwidth;		/* bytes/s each way, 0: none */
	uint32_t	 sc_encryption;		/* EncryptionMode of backups */
	uint32_t	 sc_key_provider;	/* KeyProvider */
	char		*sc_kms;		/* host:port */
	char		*sc_kms_cert;		/* default: certificate */
	char		*sc_kms_key;		/* default: key */
	char		*sc_kms_ca;		/* default: ca */
	char		*sc_kms_server_name;
	char		*sc_kek_name;
	char		*sc_password_file;
	char		*sc_metrics;		/* agent: host:port of /metrics */
	char		*sc_state_dir;		/* newest point committed, per name */
	struct source_job *sc_jobs;
	int		 sc_resume_set;
};

struct agent;
struct client;
struct event;

/* A progress line on a terminal (progress.c). */
struct progress {
	int		 pg_on;
	int		 pg_drawn;
	const char	*pg_what;
	uint64_t	 pg_total;
	uint64_t	 pg_start_ms;
	uint64_t	 pg_last_ms;
};

/* Source-side keys of one backup or restore (envelope.c). */
struct envelope {
	struct source_conf	*ev_conf;
	char			*ev_password;
	struct kek		*ev_newest;	/* wraps new keys */
	struct kek		**ev_keks;	/* every KEK fetched */
	size_t			 ev_nkeks;
	struct keychain		*ev_chain;
	const char		*ev_key_file;	/* ev_chain came from it */
	struct key_buf		 ev_chunk_key;	/* backup: HMAC key of ids */
	struct key_buf		 ev_dek;	/* backup: this point's DEK */
	uint8_t			 ev_dek_id[KEY_ID_LEN];
	struct key_buf		*ev_keys;	/* restore: opened keys */
	uint8_t			*ev_key_ids;
	size_t			 ev_nkeys;
	int			 ev_chunk_idx;	/* restore: the chunk-id key */
};

/* What a command does with the connection. */
struct client_ops {
	/* The Hello exchange is done: send the request. */
	void	(*co_ready)(struct client *, void *);
	/* A decoded frame other than Error arrived. */
	void	(*co_frame)(struct client *, const Frame *, void *);
	/* A Block frame arrived undecoded; the callee owns buf. */
	void	(*co_block)(struct client *, uint8_t *, size_t, void *);
	/* The socket drained below its low-water mark. */
	void	(*co_drained)(struct client *, void *);
	/* Closing: jobs still in the pool must be waited for. */
	int	(*co_busy)(struct client *, void *);
	/* An extra connection (client_add) failed before it joined. */
	void	(*co_left)(struct client *, void *);
};

struct client {
	struct source_conf	*cl_conf;
	struct event_base	*cl_base;
	SSL_CTX			*cl_ctx;
	SSL			*cl_ssl;
	struct bufferevent	*cl_bev;
	struct pool		*cl_pool;
	const struct client_ops	*cl_ops;
	void			*cl_arg;
	char			 cl_addr[300];	/* host:port, for messages */
	char			*cl_host;
	char			*cl_port;
	int			 cl_hello;	/* the target's Hello arrived */
	int			 cl_done;
	int			 cl_paused;	/* client_pause: take no frame */
	int			 cl_exit;	/* EXIT_* once done */
	uint8_t			 cl_key_out[AEAD_KEY_LEN];	/* to target */
	uint8_t			 cl_key_in[AEAD_KEY_LEN];	/* to source */
	uint64_t		 cl_nonce;
	int			 cl_json;
	int			 cl_lost;	/* worth reconnecting */
	int			 cl_busy;	/* ... the target said BUSY */
	int			 cl_answered;	/* a job's frame came */
	char			 cl_peer_software[64];	/* from its Hello */
	struct ev_token_bucket_cfg *cl_rate;	/* bandwidth_limit */
	struct bufferevent_rate_limit_group *cl_rate_group;	/* ... shared */
	/* More connections of one job (client_add): they share the first's
	 * loop, pool and TLS context, and its end is theirs. */
	struct client		*cl_first;	/* NULL: this is the first */
	int			 cl_optional;	/* not joined yet: may fail alone */
	struct client		*cl_more[JOB_CONNECTIONS_MAX];
	int			 cl_nmore;
	uint64_t		 cl_tls_sent;	/* since the last key update */
	struct event		*cl_keepalive;	/* when nothing else is sent */
	int			 cl_queued;	/* a frame since the last tick */
};

/* Reconnecting with backoff between attempts (client_retry). */
struct retry {
	uint64_t		 rt_deadline;	/* ms; 0: not lost yet */
	uint64_t		 rt_delay;	/* s before the next attempt */
	int			 rt_attempts;	/* that failed so far */
};

/* How to reach a disk (disk.c, nbd.c). */
enum disk_transport {
	DISK_TRANSPORT_AUTO,	/* direct if local and readable, else NBD */
	DISK_TRANSPORT_DIRECT,	/* file or block device */
	DISK_TRANSPORT_NBD,
};

struct disk_opts {
	enum disk_transport	 do_transport;
	int			 do_no_fallback;
	int			 do_allow_insecure_nbd;
	const char		*do_dirty_bitmap;	/* NULL: none */
	const char		*do_tls_cert;		/* nbds:// client cert */
	const char		*do_tls_key;
	const char		*do_tls_ca;
	const char		*do_tls_psk_file;
	int			 do_direct_io;		/* O_DIRECT reads */
};

/* Buffers, offsets and lengths of O_DIRECT reads are multiples of it. */
#define DISK_DIRECT_ALIGN	4096

struct disk;

/* config.c */
struct source_conf *source_conf_load(const char *);
int		 source_parse_encryption(const char *, uint32_t *);
int		 source_parse_bandwidth(const char *, uint64_t *);
int		 source_bandwidth_option(const char *, uint64_t *);
int		 source_connections_option(const char *, uint64_t *);
void		 source_conf_free(struct source_conf *);

/* client.c */
struct client	*client_new(struct source_conf *, const struct client_ops *,
		    void *);
int		 client_run(struct client *);
struct client	*client_add(struct client *, const struct client_ops *,
		    void *);
void		 client_join(struct client *, const uint8_t *);
void		 client_free(struct client *);
void		 client_send(struct client *, const Frame *);
void		 client_finish(struct client *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
struct evbuffer	*client_output(struct client *);
void		 client_pause(struct client *);
void		 client_resume(struct client *);
int		 client_exit_for(Error__Code);
int		 client_retry(struct client *, struct retry *, const char *);

/* disk.c */
struct disk	*disk_open(const char *, const struct disk_opts *);
uint64_t	 disk_size(const struct disk *);
const char	*disk_transport_name(const struct disk *);
int		 disk_read(struct disk *, void *, size_t, uint64_t);
int		 disk_next_data(struct disk *, uint64_t, uint64_t *,
		    uint64_t *);
int		 disk_dirty_map(struct disk *, uint32_t, uint8_t **, char *,
		    size_t);
uint64_t	 disk_bytes_read(const struct disk *);
void		 disk_close(struct disk *);

/* nbd.c: disk.c's NBD transport */
struct nbd_disk;
struct nbd_disk	*nbd_disk_open(const char *, const char *, const char *,
		    const struct disk_opts *);
uint64_t	 nbd_disk_size(const struct nbd_disk *);
int		 nbd_disk_tls(const struct nbd_disk *);
int		 nbd_disk_read(struct nbd_disk *, void *, size_t, uint64_t);
int		 nbd_disk_next_data(struct nbd_disk *, uint64_t, uint64_t *,
		    uint64_t *);
int		 nbd_disk_dirty_map(struct nbd_disk *, uint32_t, uint8_t **,
		    char *, size_t);
void		 nbd_disk_close(struct nbd_disk *);

/* envelope.c */
void		 envelope_init(struct envelope *, struct source_conf *);
int		 envelope_prepare(struct envelope *, struct source_conf *,
		    char *, size_t);
int		 envelope_load_password(struct envelope *, char *, size_t);
int		 envelope_check_kek(struct envelope *, const KekRef *, char *,
		    size_t);
int		 envelope_add_kek(struct envelope *, struct kek *);
const struct kek *envelope_get_kek(struct envelope *, const KekRef *, char *,
		    size_t);
int		 envelope_begin(struct envelope *, const char *,
		    const uint8_t *, size_t, char *, size_t);
int		 envelope_open(struct envelope *, const PointInfo *,
		    const uint8_t *, size_t, char *, size_t);
const struct key_buf *envelope_key(const struct envelope *, const uint8_t *);
const struct key_buf *envelope_chunk_key(const struct envelope *);
int		 envelope_end(struct envelope *, uint8_t **, size_t *, char *,
		    size_t);
void		 envelope_free(struct envelope *);

/* agent.c */
int		 cmd_agent(struct source_conf *, int, char **);
int		 agent_stats_fd(void);
void		 agent_stats_send(int);

/* benchmark.c */
int		 cmd_benchmark(struct source_conf *, int, char **);

/* backup.c */
int		 cmd_backup(struct source_conf *, int, char **);

/* verify's options, for one point or, with vo_all, every point. */
struct verify_opts {
	const char	*vo_name;	/* NULL: every name (vo_all) */
	const char	*vo_point;	/* NULL: the newest */
	const char	*vo_key_file;
	const char	*vo_passphrase_file;
	int		 vo_json;
	int		 vo_all;
	int		 vo_accept_rollback;
};

/* restore.c */
int		 cmd_restore(struct source_conf *, int, char **);
int		 cmd_verify(struct source_conf *, int, char **);
int		 verify_point(struct source_conf *, const struct verify_opts *,
		    const char *, const char *);

/* keyfile.c */
int		 cmd_keys(struct source_conf *, int, char **);
int		 keyfile_load(struct envelope *, const char *, const char *,
		    char *, size_t);

/* progress.c */
void		 progress_start(struct progress *, const char *, uint64_t, int);
void		 progress_update(struct progress *, uint64_t, uint64_t);
void		 progress_end(struct progress *);

/* The newest restore point this source committed of a name (state.c). */
struct state_entry {
	char		 se_name[NAME_MAX_LEN + 1];
	uint64_t	 se_sequence;	/* 0: a target without chains */
	char		 se_id[64];
};

/* state.c */
int		 state_load(struct source_conf *, struct state_entry **,
		    size_t *);
int		 state_set(struct source_conf *, const char *, uint64_t,
		    const char *);
int		 state_drop(struct source_conf *, const char *);
KekRef		*state_password_ref(struct source_conf *, char *, size_t);
void		 state_password_remember(struct source_conf *,
		    const KekRef *, int);

/* chain.c */
int		 chain_id_ok(const char *);
int		 chain_check(struct source_conf *, const ListReply *,
		    const char *, int);
int		 chain_known(struct source_conf *, const char *,
		    struct state_entry *);
int		 chain_check_base(struct source_conf *, const char *,
		    const struct state_entry *, const BaseIndex *, int);
void		 chain_remember(struct source_conf *, const char *,
		    const Committed *);
int		 verify_chain(struct source_conf *, const struct verify_opts *);

/* list.c */
int		 cmd_list(struct source_conf *, int, char **);
int		 cmd_status(struct source_conf *, int, char **);
const char	*mode_name(uint32_t);

#endif /* SOURCE_H */
