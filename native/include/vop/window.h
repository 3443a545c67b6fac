/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A window: the shared layout of layout.h on top of a transport, seen from
 * one side (0 = creator and device-table owner, 1 = attacher), plus the
 * device table operations.
 *
 * Threading: create/attach/close and devtab publish/remove are control
 * operations for one thread at a time (the owner serialises them). The
 * devtab readers and the side/heartbeat accessors may run on the worker.
 */
#ifndef VOP_WINDOW_H
#define VOP_WINDOW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "vop/layout.h"
#include "vop/region.h"
#include "vop/xport.h"

/* Geometry chosen by the creator. */
struct vop_window_geometry {
	uint32_t max_devices; /* <= VOP_MAX_DEVICES; 0 = VOP_MAX_DEVICES */
	uint64_t ring_size;   /* bytes for rings; 0 = 1/16 of the window (>= 64 KiB) */
};

/*
 * The geometry of a window as validated against a mapping: private copies
 * of the header and device-table header fields, never re-read from shared
 * memory once checked.
 */
struct vop_window_layout {
	uint64_t size;                /* bytes mapped (== header window_size) */
	uint32_t devtab_size;         /* bytes of the device table at VOP_DEVTAB_OFF */
	uint32_t max_entries;         /* entry slots */
	uint32_t entry_size;          /* stride of the entries */
	uint64_t ring_off, ring_size; /* ring area: after the table, inside the mapping */
	uint64_t data_off, data_size; /* data area: after the ring area, inside the mapping */
};

/*
 * vop_window_layout_check - validate the window header and the device
 * table header found in base[0, size) (a mapping of exactly size bytes)
 * without touching anything outside it: magic, version, window_size ==
 * size, side and table offsets, and every area in order devtab < rings <
 * data, each [off, off + len) inside the mapping (overflow-safe), the
 * entries inside the table. Every field is read once. Pure: no side
 * effects, any thread. Returns 0 (and *out if non-NULL), -EAGAIN (magic
 * still 0: not yet published) or -EPROTO; on -EPROTO *why (if non-NULL)
 * names the field and the bound it broke (a static string).
 */
int vop_window_layout_check(const uint8_t *base, uint64_t size, struct vop_window_layout *out,
			    const char **why);

/* One side's view of a window. Fields are set at create/attach. */
struct vop_window {
	struct vop_xport *x;          /* transport (owned, destroyed on close) */
	unsigned side;                /* 0 creator, 1 attacher */
	struct vop_win_hdr *hdr;      /* &base[0] */
	struct vop_win_side *me;      /* our side block */
	struct vop_win_side *peer;    /* the peer's side block */
	struct vop_devtab_hdr *dt;    /* device table header */
	uint32_t max_entries;         /* validated copy of dt->max_entries */
	uint32_t entry_size;          /* validated copy of dt->entry_size */
	uint64_t ring_off, ring_size; /* validated copies of the header */
	uint64_t data_off, data_size; /* validated copies of the header */
	uint64_t ring_next;           /* side 0: bump allocator in the ring area */
	uint64_t data_next;           /* side 0: bump allocator in the data area */
	uint32_t epoch;               /* our epoch (after our increment) */
	struct vop_region_table regions; /* peer-nameable memory: the data area, RW */
	/*
	 * Why the last table entry was refused (-EPROTO from vop_devtab_find):
	 * a static string naming the field, or NULL. Any thread writes (the
	 * worker and the control thread both look entries up); diagnostics only.
	 */
	_Atomic(const char *) entry_problem;
};

/*
 * vop_window_create - lay out a fresh window on x (side 0): header, side
 * blocks, empty device table; magic is published last. Takes ownership of
 * x on success. Returns 0 or -errno (-EINVAL geometry, -ENOMEM).
 */
int vop_window_create(struct vop_xport *x, const struct vop_window_geometry *g,
		      struct vop_window **out);

/*
 * vop_window_attach - validate an existing window (vop_window_layout_check
 * against x->size: magic, version, every offset and size inside what x
 * mapped) and join it as side 1. Takes ownership of x on success. Every
 * attach validates afresh: nothing from an earlier attach is trusted.
 * Returns 0, -EPROTO (bad/unknown layout), -EAGAIN (not yet published),
 * -EBUSY (a live process holds side 1).
 */
int vop_window_attach(struct vop_xport *x, struct vop_window **out);

/*
 * vop_window_attach_side - join an existing window as side (0 or 1): how
 * a restarted creator takes its side back (its devices, rings and the
 * device table are kept; our epoch increments so the peer sees a restart).
 * Side 0 continues the ring/data allocators after every allocation in the
 * table that is still valid (entries the peer may have rewritten while we
 * were away are validated like any other and skipped if invalid). The
 * header is validated afresh, exactly as vop_window_attach() does.
 * Returns 0, -EBUSY (that side is held by a live process: state UP and
 * heartbeat moving; takes up to 4 x 250 ms to decide when the transport
 * cannot claim sides), -EPROTO, -EAGAIN, -EINVAL.
 */
int vop_window_attach_side(struct vop_xport *x, unsigned side, struct vop_window **out);

/*
 * vop_window_close - mark our side GONE (peer sees it), release the
 * transport and free w. NULL ok. Workers using w must be stopped first.
 */
void vop_window_close(struct vop_window *w);

/* Ring the peer's doorbell (xport kick, vector 0); returns as kick. Any thread. */
int vop_window_notify_peer(struct vop_window *w);

/* Wake our own side's worker from another thread (xport wake). Any thread. */
int vop_window_wake(struct vop_window *w);

/*
 * The barrier stores to this window need before a publishing store when
 * the mapping is write-combining (xport flush); nothing otherwise.
 */
void vop_window_flush(struct vop_window *w);

/* Peer-visible liveness (worker thread): bump our heartbeat. */
void vop_window_heartbeat(struct vop_window *w);

/* Snapshot of the peer side block (read once each). */
struct vop_peer_view {
	uint64_t heartbeat; /* peer's heartbeat counter */
	uint32_t epoch;     /* peer's epoch, 0 = never attached */
	uint32_t state;     /* enum vop_side_state (unvalidated; compare only) */
	uint32_t hb_period_ms; /* clamped to [1, 60000] */
	uint32_t kick;      /* peer's doorbell kick word: moves whenever it rings us */
};
void vop_window_peer(struct vop_window *w, struct vop_peer_view *out);

/* ------------------------------------------------------------------ */
/* Device table                                                         */
/* ------------------------------------------------------------------ */

/* What the table owner publishes for one device. */
struct vop_dev_spec {
	uint32_t dev_id;       /* nonzero, unique among LIVE entries */
	uint32_t device_type;  /* virtio id or VOP_DEVTYPE_BYTE_PIPE */
	uint64_t features;     /* offered (VERSION_1 is always added) */
	uint8_t device_side;   /* 0 or 1 */
	uint16_t num_queues;   /* 1 .. VOP_MAX_QUEUES */
	uint16_t queue_size[VOP_MAX_QUEUES]; /* power of two <= 32768 */
	uint64_t pool_size[VOP_MAX_QUEUES];  /* driver buffer pool per queue (>0) */
	uint32_t config_len;   /* <= VOP_CONFIG_MAX */
	const void *config;    /* config_len bytes or NULL */
};

/* A validated private copy of one LIVE entry. */
struct vop_dev_info {
	uint32_t slot;          /* entry index */
	uint32_t seq;           /* entry seq at copy time */
	uint32_t dev_id;
	uint32_t device_type;
	uint64_t features_offered;
	uint8_t device_side;
	uint16_t num_queues;
	struct vop_queue_desc queues[VOP_MAX_QUEUES]; /* validated geometry */
	uint32_t config_len;
	uint8_t config[VOP_CONFIG_MAX]; /* config at copy time: the device side's once written, else as published */
	struct vop_dev_entry *entry; /* the shared entry (for the per-side blocks) */
};

/* Private copy of one side's block of an entry (struct vop_dev_side). */
struct vop_dev_side_view {
	bool current;               /* the block answers for this occupant (seq matches) */
	uint32_t status;            /* driver: virtio status; device: DEVICE_NEEDS_RESET or 0 */
	uint32_t reset;             /* driver: reset request generation; device: generation acked */
	uint32_t config_generation; /* device: config seqlock */
	uint64_t features;          /* driver: accepted */
};

/*
 * vop_devtab_side_claim - our block (side) of the entry info was copied
 * from: if it still answers for an earlier occupant of the slot, zero it
 * and store its seq (release, edge B1). Returns the block to write; only
 * side `side` may call it and write the block, one thread at a time.
 */
struct vop_dev_side *vop_devtab_side_claim(const struct vop_dev_info *info, unsigned side);

/*
 * vop_devtab_side_read - copy the block of side (either side's); a block
 * whose seq is not info->seq (stale, or never claimed) reads as all zeros
 * with current = false. Each word is read once (acquire).
 */
void vop_devtab_side_read(const struct vop_dev_info *info, unsigned side,
			  struct vop_dev_side_view *out);

/*
 * vop_devtab_publish - side 0 only: allocate rings and pools, write the
 * entry, publish it (state LIVE with release, then generation). Returns
 * the slot index, -EEXIST (dev_id live), -ENOSPC (no slot or space),
 * -EINVAL (bad spec), -EPERM (not side 0).
 */
int vop_devtab_publish(struct vop_window *w, const struct vop_dev_spec *spec);

/* vop_devtab_remove - side 0 only: tombstone dev_id. 0, -ENOENT, -EPERM. */
int vop_devtab_remove(struct vop_window *w, uint32_t dev_id);

/*
 * vop_devtab_find - either side: copy and validate the LIVE entry of
 * dev_id. Returns 0, -ENOENT (no such live entry), -EPROTO (entry
 * geometry invalid: hostile or corrupt table; w->entry_problem says
 * which field), -EAGAIN (entry changed while copying; retry a bounded
 * number of times, see vop_devtab_find_bounded()).
 */
int vop_devtab_find(struct vop_window *w, uint32_t dev_id, struct vop_dev_info *out);

/*
 * How many copies vop_devtab_find_bounded() tries before it gives up. A
 * copy takes well under a microsecond; an honest owner rewrites an entry
 * only on publish/remove, so a few tries always suffice for it.
 */
#define VOP_DEVTAB_FIND_TRIES 64u

/*
 * vop_devtab_find_bounded - vop_devtab_find() retried while it returns
 * -EAGAIN, at most VOP_DEVTAB_FIND_TRIES times: a peer that keeps
 * rewriting the entry cannot keep the caller busy. Returns as
 * vop_devtab_find(); -EAGAIN once the tries are spent.
 */
int vop_devtab_find_bounded(struct vop_window *w, uint32_t dev_id, struct vop_dev_info *out);

/*
 * vop_devtab_check_info - validate a private entry copy against the
 * window's validated geometry (what vop_devtab_find() does after its
 * copy): device_side, num_queues, config_len and every queue (size a power
 * of two, each ring part aligned and inside the ring area, the three parts
 * disjoint, the pool aligned, non-empty and inside the data area).
 * Returns 0 or -EPROTO with *why naming the field (static string).
 */
int vop_devtab_check_info(const struct vop_window *w, const struct vop_dev_info *info,
			  const char **why);

/*
 * vop_devtab_config_write - device side only: replace config[off, off +
 * len) in its block of the LIVE entry info (from vop_devtab_find) under
 * the generation counter (odd while writing); the first write starts from
 * the config space as published. w may be NULL. Returns 0 or -EINVAL
 * (range beyond config_len).
 */
int vop_devtab_config_write(struct vop_window *w, const struct vop_dev_info *info, uint32_t off,
			    const void *data, uint32_t len);

/*
 * vop_devtab_config_read - either side: consistent copy of config[0, len)
 * and its generation: the device side's block once it wrote it (generation
 * >= 2), else the config space published with the entry (generation 0).
 * Retries a bounded number of times while the device writes; w may be
 * NULL. Returns 0, -EINVAL (len > config_len) or -EAGAIN (still changing).
 */
int vop_devtab_config_read(struct vop_window *w, const struct vop_dev_info *info, void *out,
			   uint32_t len, uint32_t *generation);

/* Current table generation (acquire); changes on every publish/remove. */
uint32_t vop_devtab_generation(struct vop_window *w);

/*
 * vop_window_ptr - local pointer to [off, off + len) of the window, or NULL
 * unless that whole range lies inside what the transport mapped
 * (overflow-safe; len 0 is allowed and needs off <= size). The offsets
 * passed come from validated copies (vop_dev_info); the check here is the
 * last line of defence, so callers treat NULL as a broken layout (-EPROTO).
 */
static inline void *vop_window_ptr(struct vop_window *w, uint64_t off, uint64_t len)
{
	uint64_t size = w->x->size;

	if (off > size || len > size - off)
		return NULL;
	return w->x->base + off;
}

#endif /* VOP_WINDOW_H */
