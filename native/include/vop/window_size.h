/* SPDX-License-Identifier: Apache-2.0 */
/*
 * How big a window must be: the one place that knows how a creator lays a
 * window out (vop_window_create with the default geometry) and how
 * vop_devtab_publish allocates rings and pools in it, so that callers (the
 * agent's automatic window size) never repeat that arithmetic.
 * test/native/dev-window-size-fits.c checks it against real windows.
 */
#ifndef VOP_WINDOW_SIZE_H
#define VOP_WINDOW_SIZE_H

#include <stdint.h>

#include "vop/window.h"

/* Largest window vop_window_size_for() reports (1 TiB). */
#define VOP_WINDOW_SIZE_MAX (1ull << 40)

/*
 * vop_window_size_for - the smallest window size (a multiple of 4096, at
 * least 64 KiB) in which a creator with a device table of max_devices
 * entries (0 = VOP_MAX_DEVICES) and the default ring area can publish every
 * spec of specs[0, n), in that order. Pure; any thread. Returns 0 and
 * *size, -EINVAL (a bad spec, or more specs than table entries) or -EFBIG
 * (more than VOP_WINDOW_SIZE_MAX).
 */
int vop_window_size_for(const struct vop_dev_spec *specs, unsigned n, uint32_t max_devices, uint64_t *size);

#endif /* VOP_WINDOW_SIZE_H */
