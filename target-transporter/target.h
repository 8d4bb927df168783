/*
 * target.h: target-transporter's structures, defaults and prototypes,
 * grouped by the file that defines them.
 */
#ifndef TARGET_H
#define TARGET_H

#include <sys/queue.h>

#include <stdint.h>

#include "common.h"

#define TARGET_CONF_DEFAULT	"/etc/transporter/target.conf"
#define TARGET_PORT_DEFAULT	"7878"
#define TARGET_SYNC_BYTES	(64u << 20)	/* fsync batch */
#define TARGET_MAX_TENANTS	256

struct tenant {
	char			*tn_name;
	char			*tn_identity;	/* SAN or CN of its sources */
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
	uint64_t		 tc_max_sessions;
	struct tenant_list	 tc_tenants;
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
};

struct repo;
struct repo_job;

/* repo.c */
struct repo	*repo_open(const char *, char *, size_t);
void		 repo_close(struct repo *);
struct repo_job	*repo_job_begin(struct repo *, const char *, const char *,
		    uint64_t, uint32_t, uint32_t);
int		 repo_job_put_chunk(struct repo_job *, const uint8_t *,
		    uint32_t, uint32_t, const void *, size_t);
void		 repo_job_set_block(struct repo_job *, uint64_t,
		    const uint8_t *);
int		 repo_job_sync(struct repo_job *);
int		 repo_job_commit(struct repo_job *, struct repo_point *);
void		 repo_job_abort(struct repo_job *);
uint64_t	 repo_job_bytes_stored(const struct repo_job *);
uint64_t	 repo_job_chunks_new(const struct repo_job *);
uint64_t	 repo_job_chunks_dedup(const struct repo_job *);
int		 repo_list(struct repo *, const char *, const char *,
		    struct repo_point **, size_t *);
int		 repo_point_open(struct repo *, const char *, const char *,
		    const char *, struct repo_point *);
void		 repo_point_clear(struct repo_point *);
int		 repo_chunk_read(struct repo *, const char *, const uint8_t *,
		    struct repo_chunk *);
void		 repo_chunk_clear(struct repo_chunk *);

#endif /* TARGET_H */
