/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Split virtqueue (VIRTIO 1.2 section 2.7), both roles, against a hostile
 * peer. One struct vop_vq per queue per side; it is owned by ONE thread
 * (the link worker, or a test) and is not thread-safe, except the stats
 * block, which any thread may read with vop_vq_stats_read().
 *
 * Driver role: vop_vq_add() / vop_vq_kick_prepare() / vop_vq_get_used().
 * Device role: vop_vq_pop() / vop_vq_push() / vop_vq_publish_used().
 * Both: vop_vq_enable_notify() before sleeping, vop_vq_disable_notify()
 * after waking.
 *
 * Every value read from the ring is read once into private memory and
 * checked. A violation marks the queue broken with a reason (counted in
 * stats), returns a distinct -errno once (-ELOOP for loops, -EFAULT for
 * address violations, -EPROTO otherwise) and -EIO from every later call
 * until vop_vq_reset_*(). Nothing the peer writes can crash us or touch
 * another queue.
 */
#ifndef VOP_VQ_H
#define VOP_VQ_H

#include <stdbool.h>
#include <stdint.h>

#include "vop/layout.h"
#include "vop/region.h"

/* Why a queue broke. Stable numbers (exported to JS and metrics labels). */
enum vop_vq_reason {
	VOP_VQ_OK = 0,
	VOP_VQ_BAD_RING_SIZE = 1,          /* D1: size 0, not a power of 2, > 32768 */
	VOP_VQ_AVAIL_IDX_JUMP = 2,         /* D3: avail->idx moved more than num */
	VOP_VQ_HEAD_RANGE = 3,             /* D4: head >= num */
	VOP_VQ_HEAD_BUSY = 4,              /* head already popped and not yet used */
	VOP_VQ_NEXT_RANGE = 5,             /* D6: next >= table size */
	VOP_VQ_CHAIN_LOOP = 6,             /* D7: walk longer than the table */
	VOP_VQ_INDIRECT_NOT_NEGOTIATED = 7, /* D8: F_INDIRECT without the feature */
	VOP_VQ_INDIRECT_NESTED = 8,        /* D8: indirect inside an indirect table */
	VOP_VQ_INDIRECT_WITH_NEXT = 9,     /* D8: F_INDIRECT together with F_NEXT */
	VOP_VQ_INDIRECT_LEN = 10,          /* D8: len 0, not a multiple of 16, too big */
	VOP_VQ_READ_AFTER_WRITE = 11,      /* D9: readable descriptor after a writable one */
	VOP_VQ_ADDR_RANGE = 12,            /* D10: buffer outside the region table / wrong prot */
	VOP_VQ_ZERO_LEN = 13,              /* zero-length buffer (CVE-2020-10725 class) */
	VOP_VQ_CHAIN_TOO_LONG = 14,        /* D11: more descriptors than max_chain_descs */
	VOP_VQ_CHAIN_TOTAL_LEN = 15,       /* D11: sum of lengths > max_chain_bytes */
	VOP_VQ_DIRECTION = 16,             /* device got readable where it needs writable or back */
	VOP_VQ_USED_IDX_JUMP = 17,         /* driver: used->idx moved more than in flight */
	VOP_VQ_USED_ID_RANGE = 18,         /* driver: used id >= num */
	VOP_VQ_USED_ID_NOT_HEAD = 19,      /* driver: used id is not an in-flight head */
	VOP_VQ_USED_LEN = 20,              /* driver: used len > writable bytes of the chain */
	VOP_VQ_LAYOUT = 21,                /* queue geometry in the device table is invalid */
	VOP_VQ_PAYLOAD = 22,               /* device-specific payload check failed */
	VOP_VQ_PEER_RESET = 23,            /* the peer restarted or reset the device */
	VOP_VQ_REASON_COUNT = 24
};

/* Stable short name ("avail_idx_jump") for a reason; "unknown" if out of range. */
const char *vop_vq_reason_name(unsigned reason);

/* Per-queue counters, indices into vop_vq_stats.c[]. Stable numbers. */
enum vop_vq_stat {
	VOP_VQS_BUFFERS = 0,           /* chains completed (driver: reclaimed, device: pushed) */
	VOP_VQS_BYTES = 1,             /* payload bytes moved through those chains */
	VOP_VQS_NOTIFY_SENT = 2,       /* publishes that required a notification */
	VOP_VQS_NOTIFY_SUPPRESSED = 3, /* publishes where the peer didn't want one */
	VOP_VQS_WAKEUPS = 4,           /* worker wakeups that found work on this queue */
	VOP_VQS_POLL_NS = 5,           /* filled by the worker (per link, copied per queue) */
	VOP_VQS_SLEEP_NS = 6,          /* filled by the worker (per link, copied per queue) */
	VOP_VQS_ERRORS = 7,            /* violations detected (sum of ERR_BASE + reason) */
	VOP_VQS_BROKEN = 8,            /* current broken reason, 0 if healthy */
	VOP_VQS_RESETS = 9,            /* completed resets */
	VOP_VQS_ERR_BASE = 10,         /* c[ERR_BASE + reason]: violations per reason */
	VOP_VQS_COUNT = VOP_VQS_ERR_BASE + VOP_VQ_REASON_COUNT
};

/* Counter block. Written only by the owning thread (relaxed), read by anyone. */
struct vop_vq_stats {
	uint64_t c[VOP_VQS_COUNT];
};

#define VOP_CHAIN_MAX_IOV 64u     /* device side: descriptors per chain we accept */
#define VOP_INDIRECT_MAX 64u      /* driver side: entries per indirect table */

/* A scatter-gather element posted by the driver: a peer address range. */
struct vop_sg {
	uint64_t addr; /* peer address (window offset for shm) */
	uint32_t len;  /* bytes, > 0 */
};

/* Device side: one translated, validated buffer of a chain (private copy). */
struct vop_iov {
	uint8_t *base; /* local pointer into the peer-shared region */
	uint32_t len;  /* bytes */
};

/* Device side: a popped chain. Readable iov first, then writable. */
struct vop_chain {
	uint16_t head;      /* head index to hand back to vop_vq_push() */
	uint16_t n_out;     /* iov[0 .. n_out) are device-readable */
	uint16_t n_in;      /* iov[n_out .. n_out + n_in) are device-writable */
	uint32_t out_bytes; /* sum of readable lengths */
	uint32_t in_bytes;  /* sum of writable lengths */
	struct vop_iov iov[VOP_CHAIN_MAX_IOV];
};

/* Geometry and policy for one queue. */
struct vop_vq_config {
	uint16_t num;       /* ring size, power of two, <= 32768 */
	uint64_t features;  /* negotiated bits (VOP_F_EVENT_IDX, VOP_F_INDIRECT_DESC) */
	void *desc;         /* local pointer to the descriptor table (16 B aligned) */
	void *avail;        /* local pointer to the driver area (2 B aligned) */
	void *used;         /* local pointer to the device area (4 B aligned) */
	/* device role */
	const struct vop_region_table *regions; /* where descriptors may point; required */
	uint32_t max_chain_descs;  /* <= VOP_CHAIN_MAX_IOV; 0 = VOP_CHAIN_MAX_IOV */
	uint64_t max_chain_bytes;  /* 0 = 1 GiB */
	/* the window is mapped write-combining: drain stores before publishing an index */
	bool wc_stores;
	/* driver role */
	uint8_t *indirect_local;     /* num * VOP_INDIRECT_MAX * 16 bytes, or NULL */
	uint64_t indirect_peer_addr; /* peer address of indirect_local */
	bool prefer_indirect;        /* use one indirect descriptor for multi-sg chains */
};

/* Per-head driver bookkeeping (private memory). */
struct vop_vq_slot {
	void *token;   /* caller's token, NULL when the head is free */
	uint32_t wlen; /* writable bytes of the chain (bound for used len) */
	uint32_t olen; /* readable bytes of the chain (stats) */
	uint16_t ndesc; /* descriptors taken from the table */
};

/*
 * Queue state. All fields are owned by the single thread that drives the
 * queue; only stats is read by other threads.
 */
struct vop_vq {
	/* set at init, read-only afterwards */
	uint16_t num;                      /* ring size */
	uint16_t mask;                     /* num - 1 */
	bool is_driver;                    /* role of this side */
	bool event_idx;                    /* VIRTIO_F_EVENT_IDX negotiated */
	bool indirect;                     /* VIRTIO_F_INDIRECT_DESC negotiated */
	bool prefer_indirect;              /* driver: use indirect for multi-sg */
	bool wc_stores;                    /* write-combining mapping: vop_wc_fence before publishing */
	struct vop_vring_desc *desc;       /* shared descriptor table */
	struct vop_vring_avail *avail;     /* shared driver area */
	struct vop_vring_used *used;       /* shared device area */
	uint16_t *used_event;              /* &avail->ring[num] */
	uint16_t *avail_event;             /* (uint16_t *)&used->ring[num] */
	const struct vop_region_table *rt; /* device: translation table */
	uint32_t max_chain_descs;          /* device: per-chain descriptor bound */
	uint64_t max_chain_bytes;          /* device: per-chain byte bound */
	uint8_t *ind_local;                /* driver: indirect tables base */
	uint64_t ind_peer;                 /* driver: their peer address */

	/* driver private state */
	uint16_t avail_shadow;        /* next avail->idx to publish */
	uint16_t avail_published;     /* last value stored to avail->idx */
	uint16_t last_used;           /* next used entry to consume */
	uint16_t used_cache;          /* last used->idx read (valid entries up to it) */
	uint16_t free_head;           /* first free descriptor */
	uint16_t num_free;            /* free descriptors */
	uint16_t inflight;            /* chains posted and not yet reclaimed */
	uint16_t *desc_next;          /* private free-list / chain links */
	uint16_t *avail_ring_shadow;  /* what we last wrote into avail->ring[] */
	struct vop_vring_desc *desc_shadow; /* what we last wrote into desc[] */
	struct vop_vq_slot *slots;    /* per head */

	/* device private state */
	uint16_t last_avail;    /* next avail entry to consume */
	uint16_t avail_cache;   /* last avail->idx read (valid entries up to it) */
	uint16_t used_shadow;   /* next used->idx to publish */
	uint16_t used_published; /* last value stored to used->idx */
	uint32_t rt_hint;       /* index of the region the last translation hit (a hint, checked each use) */
	uint8_t *busy;          /* per head: popped and not yet pushed */
	uint32_t *busy_in;      /* per head: writable bytes (bound for push len) */
	uint32_t *busy_out;     /* per head: readable bytes (accounted at push) */

	/* health */
	unsigned broken;        /* enum vop_vq_reason, 0 if healthy */
	struct vop_vq_stats stats; /* counters; see vop_vq_stats_read() */
};

/*
 * vop_vq_init_driver / vop_vq_init_device - set up one side of a queue.
 * The driver side zeroes the driver area and descriptor table; the device
 * side zeroes the device area. Returns 0, -EINVAL (bad config) or -ENOMEM.
 * On error nothing needs freeing. Call vop_vq_destroy() when done.
 */
int vop_vq_init_driver(struct vop_vq *vq, const struct vop_vq_config *cfg);
int vop_vq_init_device(struct vop_vq *vq, const struct vop_vq_config *cfg);

/*
 * vop_vq_init_device_resume - device side of a ring the driver kept using
 * while this side restarted: nothing in shared memory is touched; the next
 * pop reads avail->ring[last_avail] and the next push writes
 * used->ring[used_idx] (both from the in-flight journal, the caller checks
 * them against the ring size). Returns as vop_vq_init_device().
 */
int vop_vq_init_device_resume(struct vop_vq *vq, const struct vop_vq_config *cfg,
			      uint16_t last_avail, uint16_t used_idx);

/* Free private memory; does not touch shared memory. Safe on a zeroed vq. */
void vop_vq_destroy(struct vop_vq *vq);

/*
 * vop_vq_reset_driver / vop_vq_reset_device - forget all in-flight state,
 * zero this side's shared ring parts and clear the broken state. In-flight
 * tokens are dropped (the caller owns what they point to). The caller must
 * make sure the peer has quiesced (device reset handshake).
 */
void vop_vq_reset_driver(struct vop_vq *vq);
void vop_vq_reset_device(struct vop_vq *vq);

/* Mark the queue broken with reason (first reason wins); returns its -errno. */
int vop_vq_fail(struct vop_vq *vq, unsigned reason);

/* Driver: index of the head the next vop_vq_add() will use, or -ENOSPC/-EIO. */
int vop_vq_next_head(const struct vop_vq *vq);

/* Driver: free descriptors. */
static inline unsigned vop_vq_num_free(const struct vop_vq *vq)
{
	return vq->num_free;
}

/*
 * vop_vq_add - driver: post one chain. sg[0 .. n_out) are device-readable,
 * sg[n_out .. n_out + n_in) device-writable. token (non-NULL) comes back
 * from vop_vq_get_used(). Not visible to the peer until
 * vop_vq_kick_prepare(). Returns the head index (>= 0), -ENOSPC (no room),
 * -EINVAL (bad arguments) or -EIO (broken).
 */
int vop_vq_add(struct vop_vq *vq, const struct vop_sg *sg, unsigned n_out, unsigned n_in,
	       void *token);

/*
 * vop_vq_kick_prepare - driver: publish everything added since the last
 * call. Returns 1 if the device must be notified (doorbell), 0 if the
 * notification is suppressed (EVENT_IDX or NO_NOTIFY) or nothing was
 * added, -EIO if broken. Counts NOTIFY_SENT/NOTIFY_SUPPRESSED.
 */
int vop_vq_kick_prepare(struct vop_vq *vq);

/*
 * vop_vq_get_used - driver: reclaim one used chain. Returns 1 with *token
 * and *len (bytes the device wrote, checked <= writable bytes), 0 if none,
 * or a negative errno when the device violated the protocol (queue broken).
 */
int vop_vq_get_used(struct vop_vq *vq, void **token, uint32_t *len);

/*
 * vop_vq_pop - device: take the next available chain, walk and validate
 * it completely into *c (private copy, translated pointers). Returns 1, 0
 * if none available, or a negative errno (queue broken, reason counted).
 */
int vop_vq_pop(struct vop_vq *vq, struct vop_chain *c);

/*
 * vop_vq_pop_head - device: walk and validate the chain at head, as
 * vop_vq_pop() does for the next available one, without consuming the avail
 * ring (re-executing a head an in-flight journal names after a restart).
 * Returns 1 or a negative errno (queue broken: head out of range or busy,
 * or any chain violation).
 */
int vop_vq_pop_head(struct vop_vq *vq, uint16_t head, struct vop_chain *c);

/*
 * vop_vq_push - device: return a popped chain with len bytes written.
 * Not visible until vop_vq_publish_used(). Returns 0, -EINVAL if head is
 * not popped or len > its writable bytes (our bug, queue not broken), -EIO.
 */
int vop_vq_push(struct vop_vq *vq, uint16_t head, uint32_t len);

/*
 * Device: add bytes to the BYTES counter beyond what vop_vq_push() already
 * counts (the chain's readable bytes plus the used length).
 */
void vop_vq_account(struct vop_vq *vq, uint64_t bytes);

/*
 * vop_vq_publish_used - device: publish pushed entries. Returns 1 if the
 * driver must be notified, 0 if suppressed or nothing pushed, -EIO.
 */
int vop_vq_publish_used(struct vop_vq *vq);

/*
 * vop_vq_enable_notify - ask the peer to notify us on new work (before
 * sleeping). Returns 1 if work already arrived (don't sleep), 0 otherwise.
 * vop_vq_disable_notify - tell the peer we are polling (after waking).
 */
int vop_vq_enable_notify(struct vop_vq *vq);
void vop_vq_disable_notify(struct vop_vq *vq);

/* True if the peer has published work we have not consumed (cheap, no checks). */
bool vop_vq_has_work(struct vop_vq *vq);

/* Copy the counters (each read atomically) into *out; any thread. */
void vop_vq_stats_read(const struct vop_vq *vq, struct vop_vq_stats *out);

/* VIRTIO need_event: true if the peer asked to be notified when idx passes event. */
static inline bool vop_vring_need_event(uint16_t event, uint16_t new_idx, uint16_t old)
{
	return (uint16_t)(new_idx - event - 1) < (uint16_t)(new_idx - old);
}

#endif /* VOP_VQ_H */
