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
};

/*
 * vop_window_create - lay out a fresh window on x (side 0): header, side
 * blocks, empty device table; magic is published last. Takes ownership of
 * x on success. Returns 0 or -errno (-EINVAL geometry, -ENOMEM).
 */
int vop_window_create(struct vop_xport *x, const struct vop_window_geometry *g,
		      struct vop_window **out);

/*
 * vop_window_attach - validate an existing window (magic, version, every
 * offset and size) and join it as side 1. Takes ownership of x on success.
 * Returns 0, -EPROTO (bad/unknown layout), -EAGAIN (not yet published),
 * -EBUSY (a live process holds side 1).
 */
int vop_window_attach(struct vop_xport *x, struct vop_window **out);

/*
 * vop_window_attach_side - join an existing window as side (0 or 1): how
 * a restarted creator takes its side back (its devices, rings and the
 * device table are kept; our epoch increments so the peer sees a restart).
 * Side 0 continues the ring/data allocators after every allocation in the
 * table. Returns 0, -EBUSY (that side is held by a live process: state UP
 * and heartbeat moving; takes up to 4 heartbeat periods to decide),
 * -EPROTO, -EAGAIN, -EINVAL.
 */
int vop_window_attach_side(struct vop_xport *x, unsigned side, struct vop_window **out);

/*
 * vop_window_close - mark our side GONE (peer sees it), release the
 * transport and free w. NULL ok. Workers using w must be stopped first.
 */
void vop_window_close(struct vop_window *w);

/* Ring the peer's doorbell; returns as xport notify. */
int vop_window_notify_peer(struct vop_window *w);

/* Peer-visible liveness (worker thread): bump our heartbeat. */
void vop_window_heartbeat(struct vop_window *w);

/* Snapshot of the peer side block (read once each). */
struct vop_peer_view {
	uint64_t heartbeat; /* peer's heartbeat counter */
	uint32_t epoch;     /* peer's epoch, 0 = never attached */
	uint32_t state;     /* enum vop_side_state (unvalidated; compare only) */
	uint32_t hb_period_ms; /* clamped to [1, 60000] */
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
	uint8_t config[VOP_CONFIG_MAX];
	struct vop_dev_entry *entry; /* the shared entry (for status/reset words) */
};

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
 * geometry invalid: hostile or corrupt table), -EAGAIN (entry changed
 * while copying; retry).
 */
int vop_devtab_find(struct vop_window *w, uint32_t dev_id, struct vop_dev_info *out);

/*
 * vop_devtab_config_write - device side: replace config[off, off + len) of
 * the LIVE entry info (from vop_devtab_find) under the generation counter
 * (odd while writing). Returns 0 or -EINVAL (range beyond config_len).
 */
int vop_devtab_config_write(struct vop_window *w, const struct vop_dev_info *info, uint32_t off,
			    const void *data, uint32_t len);

/*
 * vop_devtab_config_read - either side: consistent copy of config[0, len)
 * and its generation. Retries a bounded number of times while the device
 * writes; returns 0, -EINVAL (len > config_len) or -EAGAIN (still changing).
 */
int vop_devtab_config_read(struct vop_window *w, const struct vop_dev_info *info, void *out,
			   uint32_t len, uint32_t *generation);

/* Current table generation (acquire); changes on every publish/remove. */
uint32_t vop_devtab_generation(struct vop_window *w);

/* Local pointer for a validated window offset (no check; offsets come from vop_dev_info). */
static inline void *vop_window_ptr(struct vop_window *w, uint64_t off)
{
	return w->x->base + off;
}

#endif /* VOP_WINDOW_H */
