/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How big a window must be, and how it would be laid out: the one place that
 * knows how a creator lays a window out (vop_window_create with the default
 * geometry) and how vop_devtab_publish allocates rings and pools in it, so
 * that callers (the agent's automatic window size) never repeat that
 * arithmetic. test/native/dev-window-size-fits.c checks it against real
 * windows.
 */
#ifndef VOP_WINDOW_SIZE_H
#define VOP_WINDOW_SIZE_H

#include <stdint.h>

#include "vop/window.h"

/* Largest window vop_window_plan_for() plans (1 TiB). */
#define VOP_WINDOW_SIZE_MAX (1ull << 40)

/* What one device takes of a window's areas, alignment included. */
struct vop_dev_footprint {
	uint64_t ring_bytes; /* descriptor tables, driver and device areas of its queues */
	uint64_t pool_bytes; /* its queues' buffer pools (data area) */
};

/* The smallest window that holds a set of devices, and its areas. */
struct vop_window_plan {
	uint64_t size;        /* window bytes: a multiple of 4096, >= 64 KiB */
	uint64_t table_bytes; /* header page and device table */
	uint64_t ring_bytes;  /* ring area (max(64 KiB, size / 16)) */
	uint64_t data_bytes;  /* data area (the rest) */
	uint64_t ring_used;   /* what the devices take of the ring area */
	uint64_t data_used;   /* what the devices take of the data area */
};

/*
 * vop_dev_footprint_of - what spec takes of a window's ring and data areas
 * when published alone. Returns 0 or -EINVAL (a bad queue size or pool).
 */
int vop_dev_footprint_of(const struct vop_dev_spec *spec, struct vop_dev_footprint *out);

/*
 * vop_window_plan_for - the smallest window (a multiple of 4096, at least
 * 64 KiB) in which a creator with a device table of max_devices entries
 * (0 = VOP_MAX_DEVICES) and the default ring area can publish every spec of
 * specs[0, n), in that order, and that window's areas. Pure; any thread.
 * Returns 0 and *out, -EINVAL (a bad spec, or more specs than table entries)
 * or -EFBIG (more than VOP_WINDOW_SIZE_MAX).
 */
int vop_window_plan_for(const struct vop_dev_spec *specs, unsigned n, uint32_t max_devices,
			struct vop_window_plan *out);

#endif /* VOP_WINDOW_SIZE_H */
