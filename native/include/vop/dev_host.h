/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hosted devices: the virtio-net, -console and -blk backends of one window
 * side set up from compact per-device descriptions and served by that
 * side's link worker (vop/link.h). The Node binding hosts them on an agent's
 * link windows (native/binding/window.c); vopdev and the device-host handle
 * wrap a whole side (window + link + devices) as struct vop_dev_host.
 *
 * A device description is "ID:opt[=value]:opt..." for one kind:
 *   blk-device  file=PATH fileroot=DIR|blkdev ro direct threads=N serial=S
 *   blk-driver  unix=PATH sockroot=DIR tcp=PORT|-1 tcphost=IP (IPv6 with "-" for ":")
 *               name=EXPORT qsize=N seg=KIB ro
 *               tlscert=PEM tlskey=PEM tlsca=PEM tlsnames=NAME,NAME|* tcpplain
 *               (TCP needs tlscert+tlskey, or tcpplain on a loopback tcphost:
 *               vop/dev_nbd.h; a value too long is -ENAMETOOLONG, not cut)
 *   net-device / net-driver  tap=NAME | sock=PATH:peer=PATH:sockroot=DIR |
 *               udp=PORT:udppeer=PORT   qsize=N mtu=N mac=52-54-00-.. rxbuf=N
 *   con-device  pty[=LINK] ptyroot=DIR log=FILE logroot=DIR logmax=BYTES
 *               logfiles=N unix=PATH sockroot=DIR qsize=N
 *   con-driver  pty[=LINK] ptyroot=DIR qsize=N
 * The *root options name the directory each path must lie in (vop/path.h:
 * resolved beneath it, never through a symlink out of it; without one, the
 * path's own directory); blkdev says file is an operator-allowed block
 * device opened by name. Paths of VOP_PATH_MAX bytes or more are refused.
 * The window creator publishes every device (device side = its own side for
 * *-device, the peer's for *-driver); the table-shaping options (qsize, seg,
 * ro, mtu, mac) are read there, so both sides should pass the same ones.
 *
 * Threading: publish/open/close from one control thread; endpoints, stats
 * and the console stream from any thread.
 */
#ifndef VOP_DEV_HOST_H
#define VOP_DEV_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "vop/dev_common.h"
#include "vop/dev_console.h"
#include "vop/link.h"

enum vop_dev_kind {
	VOP_DK_BLK_DEVICE = 0,
	VOP_DK_BLK_DRIVER = 1,
	VOP_DK_NET_DEVICE = 2,
	VOP_DK_NET_DRIVER = 3,
	VOP_DK_CON_DEVICE = 4,
	VOP_DK_CON_DRIVER = 5,
};

#define VOP_DEV_HOST_MAX 16u

/* Kind from its name ("blk-device"...), or -EINVAL. */
int vop_dev_kind_parse(const char *name);

/* Device id of a description ("ID:..."), 0 if it does not start with a nonzero id. */
uint32_t vop_dev_desc_id(const char *desc);

/* ------------------------------------------------------------------ */
/* One hosted device                                                    */
/* ------------------------------------------------------------------ */

struct vop_hosted;

/*
 * vop_hosted_spec - the device table entry desc describes, as the window
 * creator on side would publish it (queue sizes, pool bytes: what a window
 * must hold for it). 0 or -EINVAL (bad description). Not thread-safe (the
 * config bytes of a net spec live in static storage until published).
 */
int vop_hosted_spec(enum vop_dev_kind kind, const char *desc, unsigned side, struct vop_dev_spec *spec);

/*
 * vop_hosted_publish - window creator (side 0): publish the device table
 * entry of desc. Returns 0, -EINVAL (bad description), or the errors of
 * vop_devtab_publish (-EEXIST, -ENOSPC...).
 */
int vop_hosted_publish(struct vop_window *w, enum vop_dev_kind kind, const char *desc);

/*
 * vop_hosted_open - create the backend of desc on ctx's window (waiting up
 * to find_timeout_ms for its table entry; 0 = look once), open its local
 * surfaces, attach it to l and, for a blk driver, start its NBD server.
 * On error *err (if not NULL) names the failing step. Returns 0, -ENOENT
 * (not published yet), -EINVAL, -errno of the backend.
 */
int vop_hosted_open(struct vop_devctx *ctx, struct vop_link *l, enum vop_dev_kind kind,
		    const char *desc, uint32_t find_timeout_ms, struct vop_hosted **out,
		    const char **err);

/* Detach from l (stopping the backend), stop NBD, close surfaces, free. NULL ok. */
void vop_hosted_close(struct vop_link *l, struct vop_hosted *h);

uint32_t vop_hosted_id(const struct vop_hosted *h);
enum vop_dev_kind vop_hosted_kind(const struct vop_hosted *h);

/*
 * Local surfaces as "key value\n" lines ("nbd1-port 40331", "tap1 vop0",
 * "pty2 /dev/pts/3"...). Returns the length written (truncated to len-1).
 */
size_t vop_hosted_endpoints(struct vop_hosted *h, char *buf, size_t len);

/* Counters as one JSON member ("blk1":{...}); same truncation rule. */
size_t vop_hosted_stats_json(struct vop_hosted *h, char *buf, size_t len);

/* The console backend (either role), or NULL for other kinds. */
struct vop_console *vop_hosted_console(struct vop_hosted *h);

/* ------------------------------------------------------------------ */
/* A whole window side (vopdev, device-host handles)                    */
/* ------------------------------------------------------------------ */

struct vop_dev_host_dev {
	enum vop_dev_kind kind;
	const char *desc; /* "ID:opts" */
};

struct vop_dev_host;

/*
 * vop_dev_host_open - create (create_bytes > 0: side 0, path must not
 * exist) or attach to (create_bytes == 0: side 1, waits up to 10 s for the
 * window) the window at path, publish (creator), create the link worker
 * (spin_ns 0 = 20 us) and every device, and start; a blk driver side then
 * waits up to 60 s for the device to run (the export's size is known). On
 * error *err (if not NULL) names the failing step. Returns 0 or -errno.
 */
int vop_dev_host_open(const char *path, uint64_t create_bytes, uint64_t spin_ns,
		      const struct vop_dev_host_dev *devs, unsigned n, struct vop_dev_host **out,
		      const char **err);

/* Endpoints of every device, as vop_hosted_endpoints(). */
size_t vop_dev_host_endpoints(struct vop_dev_host *h, char *buf, size_t len);

/* Counters of every device as one JSON object; same truncation rule. */
size_t vop_dev_host_stats_json(struct vop_dev_host *h, char *buf, size_t len);

/*
 * vop_dev_host_queue_stats - ring counters of queue q of device id, whatever
 * its kind and role (vq.h counter block). Any thread. 0, -ENOENT (no such
 * device) or -EINVAL (no such queue).
 */
int vop_dev_host_queue_stats(struct vop_dev_host *h, uint32_t id, unsigned q, struct vop_vq_stats *out);

/* First backend failure reported by the link (-errno), or 0. */
int vop_dev_host_error(struct vop_dev_host *h);

/* The console backend of device id (device or driver role), or NULL. */
struct vop_console *vop_dev_host_console(struct vop_dev_host *h, uint32_t id);

/* Stop the link, close every device, close the window. NULL ok. */
void vop_dev_host_close(struct vop_dev_host *h);

#endif /* VOP_DEV_HOST_H */
