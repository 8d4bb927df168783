/*
 * target.h: target-transporter's structures, defaults and prototypes,
 * grouped by the file that defines them.
 */
#ifndef TARGET_H
#define TARGET_H

#include <sys/queue.h>
#include <sys/socket.h>

#include <netdb.h>

#include <stdint.h>

#include "common.h"

#define TARGET_CONF_DEFAULT	"/etc/transporter/target.conf"
#define TARGET_PORT_DEFAULT	"7878"
#define TARGET_SYNC_BYTES	(64u << 20)	/* fsync batch */
#define TARGET_MAX_TENANTS	256
#define TARGET_MAX_SESSIONS	256		/* default max_sessions */
#define TARGET_MAX_TENANT_SESSIONS 64		/* default max_sessions_per_tenant */
#define TARGET_HANDSHAKE_TIMEOUT 30		/* seconds, default */
#define TARGET_FRAME_TIMEOUT	120		/* seconds, default */
#define TARGET_IDLE_TIMEOUT	600		/* seconds, default */
#define TARGET_REFUSE_SLACK	16	/* over max_sessions: told BUSY */
#define BASE_IDS_MAX		32768		/* chunk ids per BaseIndex frame */
#define INDEX_WINDOW_IDS	BASE_IDS_MAX	/* an index window: one piece */
#define INDEX_SLOTS_MAX		4		/* windows held at once */
/* A session's write callback runs when its output drains to this. */
#define SESSION_OUT_LOW		(4u << 20)
/*
 * Above what a source that reads its replies ever lets queue (a
 * restore's 8 MiB and one frame): past it, a session stops reading
 * until its output drains to SESSION_OUT_LOW.
 */
#define SESSION_OUT_MAX		(32u << 20)

struct tenant {
	char			*tn_name;
	char			*tn_identity;	/* SAN or CN of its sources */
	/* At-rest encryption (atrest.c); paths are absolute. */
	uint32_t		 tn_at_rest;	/* KeyProvider; 0: none */
	int			 tn_at_rest_line;
	int			 tn_at_rest_bad;	/* not kmip, password, none */
	int			 tn_secret_line[2];	/* kms_key, password_file */
	char			*tn_kms;	/* host:port */
	char			*tn_kms_cert;	/* default: the target's */
	char			*tn_kms_key;
	char			*tn_kms_ca;
	char			*tn_kms_server_name;
	char			*tn_kek_name;
	char			*tn_password_file;
	char			*tn_keychain;	/* the tenant's at-rest key file */
	uint64_t		 tn_quota;	/* bytes it may store; 0: any */
	TAILQ_ENTRY(tenant)	 tn_entry;
};
TAILQ_HEAD(tenant_list, tenant);

struct target_conf {
	char			*tc_path;
	char			*tc_listen;	/* host:port */
	char			*tc_cert;
	char			*tc_key;
	char			*tc_ca;
	char			*tc_crl;
	char			*tc_repository;
	uint64_t		 tc_workers;	/* 0: one per core */
	int			 tc_direct_io;	/* chunks with O_DIRECT */
	uint64_t		 tc_max_sessions;
	uint64_t		 tc_max_tenant_sessions;
	char			*tc_metrics;	/* host:port, or NULL: off */
	uint64_t		 tc_bandwidth;	/* bytes/s, all sessions; 0: none */
	uint64_t		 tc_handshake_timeout;	/* seconds */
	uint64_t		 tc_frame_timeout;	/* seconds */
	uint64_t		 tc_idle_timeout;	/* seconds */
	struct tenant_list	 tc_tenants;
	struct target_conf	*tc_previous;	/* replaced by a reload */
};

/* Chunk object flags (repo.c). */
#define CHUNK_COMPRESSED	0x1	/* payload is zstd */
#define CHUNK_ENCRYPTED		0x2	/* payload is sealed (at rest / source-side) */

/* A chunk read back from the repository. */
struct repo_chunk {
	uint32_t	 rc_flags;
	uint32_t	 rc_raw_len;	/* plaintext length */
	uint8_t		*rc_data;	/* stored payload, malloc'd */
	size_t		 rc_len;
};

/* A job's index at one moment: its written pages (repo.c). */
struct repo_snapshot {
	struct id_map	 sn_ids;	/* its written pages only */
};

/* What a restore point is; filled by repo_list and repo_point_open. */
struct repo_point {
	char		 rp_name[NAME_MAX_LEN + 1];
	char		 rp_id[64];
	int64_t		 rp_created;
	uint64_t	 rp_disk_size;
	uint32_t	 rp_block_size;
	uint64_t	 rp_blocks;	/* blocks in the image */
	uint64_t	 rp_zero_blocks;
	uint64_t	 rp_stored_bytes;
	uint32_t	 rp_mode;	/* EncryptionMode */
	uint8_t		*rp_index;	/* rp_blocks * CHUNK_ID_LEN, or NULL */
	struct repo_index *rp_ix;	/* or read in windows */
	uint8_t		*rp_keys;	/* source-side: packed KeyChain */
	size_t		 rp_keys_len;
	char		 rp_transport[16];	/* how the disk was read */
	char		 rp_dirty_bitmap[NAME_MAX_LEN + 1];
	/* The chain of the name; 0 and "" for a point made before it. */
	uint64_t	 rp_sequence;
	char		 rp_previous_id[64];
	uint8_t		 rp_previous_digest[CHUNK_ID_LEN];
	uint8_t		 rp_digest[CHUNK_ID_LEN];	/* its manifest's */
	int		 rp_previous_pruned;	/* repo_list: its tombstone */
};

struct repo;
struct repo_index;
struct repo_job;
struct key_buf;
struct event;
struct evconnlistener;
struct receive;
struct restore;
struct ev_token_bucket_cfg;
struct bufferevent_rate_limit_group;

/* The daemon. */
struct target {
	struct target_conf	*tg_conf;
	struct event_base	*tg_base;
	SSL_CTX			*tg_ctx;
	struct repo		*tg_repo;
	struct pool		*tg_pool;
	struct evconnlistener	*tg_listener;
	struct event		*tg_sigterm;
	struct event		*tg_sigint;
	struct event		*tg_sighup;
	TAILQ_HEAD(, session)	 tg_sessions;
	TAILQ_HEAD(, session)	 tg_starved;	/* waiting for a job slot */
	int			 tg_nsessions;
	uint64_t		 tg_refused;	/* not yet logged (flood) */
	int64_t			 tg_refused_logged;	/* when, seconds */
	int			 tg_jobs;	/* block jobs in the pool */
	int			 tg_max_jobs;
	uint64_t		 tg_next_id;
	int			 tg_stopping;
	struct ev_token_bucket_cfg *tg_rate_cfg;	/* bandwidth_limit */
	struct bufferevent_rate_limit_group *tg_rate_group;
};

enum session_state {
	SESSION_HANDSHAKE,	/* TLS handshake under way */
	SESSION_HELLO,		/* waiting for the source's Hello */
	SESSION_IDLE,		/* between requests */
	SESSION_BACKUP,		/* receiving blocks */
	SESSION_RESTORE,	/* sending blocks */
	SESSION_INDEX,		/* sending a point's chunk ids (restore) */
	SESSION_CLOSING,	/* flushing a last frame, then freed */
};

/* One connection from a source. */
struct session {
	uint64_t		 se_id;
	struct target		*se_target;
	struct bufferevent	*se_bev;
	SSL			*se_ssl;
	char			 se_addr[NI_MAXHOST + NI_MAXSERV + 4];
	struct tenant		*se_tenant;
	enum session_state	 se_state;
	uint8_t			 se_key_in[AEAD_KEY_LEN];  /* source -> target */
	uint8_t			 se_key_out[AEAD_KEY_LEN]; /* target -> source */
	uint64_t		 se_nonce_out;
	int			 se_jobs;	/* jobs of this session in the pool */
	int			 se_starved;	/* on tg_starved */
	int			 se_read_paused;
	int			 se_out_paused;	/* ... for its unread output */
	int			 se_waiting;	/* ... for a job of its own */
	uint8_t			*se_held;	/* a block frame awaiting a slot */
	size_t			 se_held_len;
	int			 se_lingering;	/* close_notify sent, awaiting EOF */
	int			 se_dead;	/* closing and the socket is gone */
	uint64_t		 se_tls_sent;	/* since the last TLS key update */
	struct event		*se_deadline;	/* handshake and Hello, then idle */
	struct event		*se_frame_timer;	/* a frame under way */
	struct event		*se_turn;	/* its next turn */
	int			 se_frame_armed;
	int			 se_refuse;	/* over max_sessions: BUSY */
	uint64_t		 se_progress;	/* now_ms() of the latest */
	Error__Code		 se_fail_code;	/* why session_fail closed it */
	struct receive		*se_recv;	/* the backup it carries */
	/* This connection's part of the backup (receive.c). */
	uint64_t		 se_blocks_in;	/* block frames taken */
	uint64_t		 se_done_blocks;	/* ... and stored */
	uint64_t		 se_done_bytes;	/* their frame bytes */
	uint64_t		 se_sync_blocks;	/* durable after the sync */
	uint64_t		 se_sync_bytes;
	int			 se_ended;	/* its BackupEnd arrived */
	TAILQ_ENTRY(session)	 se_join_entry;	/* joined another's job */
	/* This connection's part of a restore (restore.c). */
	uint64_t		 se_credit;	/* bytes the source allows */
	uint64_t		 se_out_bytes;	/* block frame bytes queued */
	uint64_t		 se_out_blocks;
	uint64_t		 se_reserved;	/* for its jobs in the pool */
	struct restore		*se_restore;
	TAILQ_ENTRY(session)	 se_entry;
	TAILQ_ENTRY(session)	 se_starve_entry;
};

#define SESSION_MAX_JOBS	8	/* per session, bounds its memory */
#define SESSION_FRAMES_PER_TURN	32	/* then the other sessions' turn */

/* The connections that carry one backup or restore (jobconn.c). */
struct job_conns {
	struct session		*jc_first;	/* opened it */
	TAILQ_HEAD(, session)	 jc_joined;	/* joined it (JoinJob) */
	int			 jc_refs;	/* sessions that point at it */
	int			 jc_failed;	/* ended on every connection */
	uint32_t		 jc_asked;	/* connections, the first included */
	uint32_t		 jc_count;	/* joined so far */
	uint8_t			 jc_token[JOB_TOKEN_LEN];
	char			 jc_what[NAME_MAX_LEN + 96];	/* for messages */
	const char		*jc_kind;	/* counted as running: "backup" */
	uint64_t		 jc_start_ms;	/* now_ms() when it started */
};

/* config.c */
struct target_conf *target_conf_load(const char *);
void		 target_conf_free(struct target_conf *);
void		 target_conf_warn_unconfigured(const struct target_conf *);
const char	*target_conf_repository(const char *, const char *,
		    struct target_conf **);
struct tenant	*target_tenant_for(struct target_conf *, SSL *);

/* session.c */
void		 session_accept(struct target *, int, struct sockaddr *, int);
void		 session_close(struct session *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
void		 session_fail(struct session *, Error__Code, const char *, ...)
		    __attribute__((format(printf, 3, 4)));
int		 session_job_slot(struct session *);
void		 session_job_hold(struct session *);
void		 session_submit(struct session *, struct pool_job *);
void		 session_wait_end(struct session *);
void		 session_job_done(struct session *, int);
void		 session_resume(struct session *);
void		 session_send(struct session *, const Frame *);
void		 session_send_packed(struct session *, uint8_t *, size_t);
int		 session_send_pieces(struct session *, const BaseIndex *,
		    struct repo_point *, uint64_t *);
void		 session_log(struct session *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
Error__Code	 session_errno_code(int);

/* jobconn.c */
void		 jobconn_init(struct job_conns *, struct session *, uint32_t);
int		 jobconn_token(struct job_conns *);
struct session	*jobconn_next(struct job_conns *, struct session *);
int		 jobconn_may_join(const struct job_conns *,
		    const struct session *, const struct session *,
		    const uint8_t *);
void		 jobconn_join(struct job_conns *, struct session *);
void		 jobconn_abort(struct job_conns *, struct session *,
		    const char *);
int		 jobconn_leave(struct job_conns *, struct session *);
void		 jobconn_count_start(struct job_conns *, const char *);
void		 jobconn_count_end(struct job_conns *, int);

/* receive.c */
int		 receive_begin(struct session *, const BackupBegin *);
int		 receive_block(struct session *, uint8_t *, size_t);
int		 receive_unchanged(struct session *, const Unchanged *, size_t);
int		 receive_end(struct session *, const BackupEnd *);
int		 receive_join(struct session *, const uint8_t *);
int		 receive_chain_busy(const struct session *, const char *);
void		 receive_abort(struct session *, const char *);
void		 receive_release(struct session *);
void		 receive_drained(struct session *);

/* restore.c */
int		 restore_begin(struct session *, const RestoreRequest *);
int		 restore_credit(struct session *, const Credit *);
int		 restore_join(struct session *, const uint8_t *);
int		 restore_joined(struct session *, const Joined *);
void		 restore_pump(struct session *);
void		 restore_index_more(struct session *);
void		 restore_abort(struct session *, const char *);
void		 restore_release(struct session *);
int		 list_points(struct session *, const ListRequest *);
KeyChain	*point_info_fill(PointInfo *, const struct repo_point *);

/* atrest.c */
struct atrest_keys;
int		 atrest_backup_keys(struct repo *, const struct tenant *,
		    struct key_buf *, uint8_t [KEY_ID_LEN], uint8_t **,
		    size_t *, char *, size_t);
int		 atrest_seal(const struct key_buf *, const uint8_t [KEY_ID_LEN],
		    const uint8_t [CHUNK_ID_LEN], uint64_t, const void *, size_t,
		    uint8_t *);
struct atrest_keys *atrest_restore_keys(const struct tenant *,
		    const struct repo_point *, char *, size_t);
int		 atrest_open(const struct atrest_keys *,
		    const uint8_t [CHUNK_ID_LEN], const uint8_t *, size_t,
		    uint8_t *, char *, size_t);
void		 atrest_keys_free(struct atrest_keys *);
int		 atrest_tenant_used(const struct tenant *);

/* repo.c */
struct repo	*repo_open(const char *, char *, size_t);
void		 repo_close(struct repo *);
void		 repo_set_direct_io(struct repo *, int);
struct repo_job	*repo_job_begin(struct repo *, const char *, const char *,
		    uint64_t, uint32_t, uint32_t);
int		 repo_job_put_chunk(struct repo_job *, const uint8_t *,
		    uint32_t, uint32_t, const void *, size_t);
int		 repo_job_set_block(struct repo_job *, uint64_t,
		    const uint8_t *);
int		 repo_job_sync(struct repo_job *);
int		 repo_job_commit(struct repo_job *, struct repo_point *);
void		 repo_job_abort(struct repo_job *);
int		 repo_job_checkpoint(struct repo_job *,
		    const struct repo_snapshot *);
int		 repo_job_journals(const struct repo_job *);
struct repo_snapshot *repo_job_snapshot(const struct repo_job *);
void		 repo_snapshot_free(struct repo_snapshot *);
void		 repo_job_suspend(struct repo_job *);
int		 repo_job_resume(struct repo_job *, struct repo_point *,
		    uint8_t **, uint64_t *);
void		 repo_resume_drop(struct repo *, const char *, const char *);
uint64_t	 repo_job_bytes_stored(const struct repo_job *);
uint64_t	 repo_job_chunks_new(const struct repo_job *);
uint64_t	 repo_job_chunks_dedup(const struct repo_job *);
int		 repo_list(struct repo *, const char *, const char *,
		    struct repo_point **, size_t *);
/*
 * The distinct KEKs a point's keys are looked through for (a point's own
 * copies are under one; a source could name thousands, each compared
 * with the others).
 */
#define POINT_KEKS_MAX	64

/* What repo_list_keys keeps of each point's keys. */
struct repo_keys {
	int	 rk_what;
#define REPO_KEYS_NONE	0	/* none: sequence, ids, sizes only */
#define REPO_KEYS_KEKS	1	/* the first under each distinct KEK */
#define REPO_KEYS_SOME	2	/* those and the ones rk_keep says 1 of */
	int	(*rk_keep)(const WrappedKey *, void *);
	void	*rk_arg;
};
extern const struct repo_keys repo_keys_none;
int		 repo_chain_names(struct repo *, const char *, const char *,
		    uint8_t [CHUNK_ID_LEN]);
void		 repo_job_link_hint(struct repo_job *,
		    const uint8_t [CHUNK_ID_LEN], const struct repo_point *,
		    size_t);
int		 repo_list_keys(struct repo *, const char *, const char *,
		    const struct repo_keys *, struct repo_point **, size_t *);
int		 repo_point_open(struct repo *, const char *, const char *,
		    const char *, struct repo_point *);
int		 repo_point_open_windowed(struct repo *, const char *,
		    const char *, const char *, struct repo_point *, size_t);
const uint8_t	*repo_point_ids(struct repo_point *, uint64_t, uint64_t);
int		 repo_point_scan_ids(struct repo *, const char *, const char *,
		    const char *, int (*)(void *, const uint8_t *, uint64_t),
		    void *);
uint64_t	 repo_point_window_reads(const struct repo_point *);
const char	*repo_point_ids_error(int);
void		 repo_point_clear(struct repo_point *);
void		 repo_point_drop_index(struct repo_point *);
void		 repo_points_free(struct repo_point *, size_t);
int		 chunk_id_cmp(const void *, const void *);
int		 repo_point_pruned(struct repo *, const char *,
		    const struct repo_point *);
int		 repo_point_prune(struct repo *, const char *, const char *,
		    const char *);
int		 repo_point_was_pruned(struct repo *, const char *,
		    const char *, const char *);
int		 repo_prune_leftovers(struct repo *, const char *,
		    const char *);
int		 repo_journal_ids(struct repo *, const char *,
		    int (*)(void *, const uint8_t *, uint64_t), void *);
/* At rest: the key ids a sweep looks for in the chunks that stay. */
struct sweep_keys {
	const uint8_t	*sk_ids;	/* sorted, KEY_ID_LEN bytes each */
	size_t		 sk_n;
	uint8_t		*sk_used;	/* sk_n flags: a chunk needs it */
	size_t		 sk_left;	/* not found yet */
	uint64_t	 sk_unknown;	/* chunks whose header did not read */
};
int		 repo_chunks_sweep(struct repo *, const char *, const uint8_t *,
		    size_t, int, struct sweep_keys *, uint64_t *, uint64_t *);
int		 repo_job_set_keys(struct repo_job *, const uint8_t *, size_t,
		    const uint8_t *, size_t);
int		 repo_job_set_seal_keys(struct repo_job *, const uint8_t *,
		    size_t);
int		 repo_job_use_keys(struct repo_job *, const uint8_t *,
		    const struct repo_point *);
int		 repo_job_set_quota(struct repo_job *, uint64_t, uint64_t *);
int		 repo_tenant_usage(struct repo *, const char *, uint64_t *);
void		 repo_job_set_source(struct repo_job *, const char *,
		    const char *);
int		 repo_keychain_read(struct repo *, const char *, const char *,
		    uint8_t **, size_t *);
int		 repo_keychain_store(struct repo *, const char *, const char *,
		    const uint8_t *, size_t);
int		 repo_chunk_read(struct repo *, const char *, const uint8_t *,
		    struct repo_chunk *);
void		 repo_chunk_clear(struct repo_chunk *);
struct repo	*repo_open_readonly(const char *, char *, size_t);
int		 repo_tenants(struct repo *, int (*)(void *, const char *),
		    void *);
int		 repo_names(struct repo *, const char *,
		    int (*)(void *, const char *), void *);
int		 repo_point_files(struct repo *, const char *, const char *,
		    int (*)(void *, const char *), void *);
int		 repo_point_inspect(struct repo *, const char *, const char *,
		    const char *, struct repo_point *, const char **);
int		 repo_chunk_inspect(struct repo *, const char *,
		    const uint8_t *, struct repo_chunk *, char *, size_t);
const char	*repo_path(const struct repo *);

/* verify.c and prune.c */
int		 verify_main(int, char **);
void		 target_no_match(struct repo *, const char *, const char *,
		    const char *, const char *);
int		 prune_main(int, char **);

#endif /* TARGET_H */
