/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device host: one side of an shm window with a device loop and a set of
 * device backends, set up from compact per-device descriptions. vopdev and
 * the Node binding (native/binding/devices.c) are thin shells around it.
 *
 * A device description is "ID:opt[=value]:opt..." for one kind:
 *   blk-device  file=PATH ro direct threads=N serial=S
 *   blk-driver  unix=PATH tcp=PORT|-1 qsize=N seg=KIB ro
 *   net-device / net-driver  tap=NAME | sock=PATH:peer=PATH |
 *               udp=PORT:udppeer=PORT   qsize=N mtu=N mac=52-54-00-..
 *   con-device  pty=LINK log=FILE logmax=BYTES unix=PATH
 *   con-driver  pty=LINK
 * The creating side publishes every device (device side = its own side for
 * *-device, the peer's for *-driver); table-shaping options (qsize, seg,
 * ro, mtu, mac) are read there.
 *
 * Threading: open/close/stats from one control thread; console stream
 * calls from any thread.
 */
#ifndef VOP_DEV_HOST_H
#define VOP_DEV_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "vop/dev_console.h"

enum vop_dev_kind {
	VOP_DK_BLK_DEVICE = 0,
	VOP_DK_BLK_DRIVER = 1,
	VOP_DK_NET_DEVICE = 2,
	VOP_DK_NET_DRIVER = 3,
	VOP_DK_CON_DEVICE = 4,
	VOP_DK_CON_DRIVER = 5,
};

#define VOP_DEV_HOST_MAX 16u

struct vop_dev_host_dev {
	enum vop_dev_kind kind;
	const char *desc; /* "ID:opts" */
};

struct vop_dev_host;

/* Kind from its name ("blk-device"...), or -EINVAL. */
int vop_dev_kind_parse(const char *name);

/*
 * vop_dev_host_open - create (create_bytes > 0: side 0, path must not
 * exist) or attach to (create_bytes == 0: side 1, waits up to 10 s for the
 * window) the window at path, publish (creator), start the backends and the
 * loop. spin_ns 0 = 20 us. On error *err (if not NULL) names the failing
 * step. Returns 0 or -errno.
 */
int vop_dev_host_open(const char *path, uint64_t create_bytes, uint64_t spin_ns,
		      const struct vop_dev_host_dev *devs, unsigned n, struct vop_dev_host **out,
		      const char **err);

/*
 * Endpoints as "key value\n" lines ("nbd1-port 40331", "tap1 vop0",
 * "pty2 /dev/pts/3"...). Returns the length written (truncated to len-1).
 */
size_t vop_dev_host_endpoints(struct vop_dev_host *h, char *buf, size_t len);

/* Counters of every device as one JSON object; same truncation rule. */
size_t vop_dev_host_stats_json(struct vop_dev_host *h, char *buf, size_t len);

/*
 * vop_dev_host_queue_stats - ring counters of queue q of device id, whatever
 * its kind and role (vq.h counter block). Any thread. 0, -ENOENT (no such
 * device) or -EINVAL (no such queue, or not started yet).
 */
int vop_dev_host_queue_stats(struct vop_dev_host *h, uint32_t id, unsigned q, struct vop_vq_stats *out);

/* First backend failure of the loop, or 0. */
int vop_dev_host_error(struct vop_dev_host *h);

/* The console backend of device id (device or driver role), or NULL. */
struct vop_console *vop_dev_host_console(struct vop_dev_host *h, uint32_t id);

/* Stop NBD servers and the loop, destroy backends, close the window. NULL ok. */
void vop_dev_host_close(struct vop_dev_host *h);

#endif /* VOP_DEV_HOST_H */
