/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device backends on a link from typed configurations: the virtio-net,
 * -console and -blk backends of native/devices, described by one struct
 * (struct vop_devback_config: the device-table shape both sides agree on
 * plus the role's own backend config struct), published by the window
 * creator and served by a side's link worker (vop/link.h). This is what
 * the Node binding calls (native/binding/link_binding.c); it parses
 * nothing: every field arrives typed.
 *
 * Table shape (read by the window creator when it publishes; both sides
 * should pass the same values, because both derive them from one spec):
 *   queue_size  entries per virtqueue, a power of two; 0 = 256
 *               (VOP_DEVBACK_QUEUE_SIZE). A blk request takes up to 4
 *               entries: the queue holds queue_size / 4 request slots, so
 *               blk needs at least 4.
 *   event_idx   offer VIRTIO_F_EVENT_IDX (notification suppression)
 *   blk         seg_bytes (data per request slot; 0 = 512 KiB), ro
 *   net         mtu (0 = 1500), mac, offloads (checksum and TSO/ECN in
 *               both directions; off: the device offers none of them and
 *               the TAPs get TUNSETOFFLOAD 0)
 * Backend (opened by the side that plays role): the config struct of the
 * backend's own header (dev_blk.h, dev_nbd.h, dev_net.h, dev_console.h);
 * its find_timeout_ms is set from the one here.
 *
 * Threading: spec/publish/open/close from one control thread; endpoints,
 * counters and the console stream from any thread.
 */
#ifndef VOP_DEV_BACKEND_H
#define VOP_DEV_BACKEND_H

#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vop/dev_blk.h"
#include "vop/dev_common.h"
#include "vop/dev_console.h"
#include "vop/dev_nbd.h"
#include "vop/dev_net.h"
#include "vop/link.h"
#include "vop/path.h"

/* Default entries per virtqueue (proto: Device.queue_size 0 means 256). */
#define VOP_DEVBACK_QUEUE_SIZE 256u
/* Entries a blk request may take (header, data, status; a power of two). */
#define VOP_DEVBACK_BLK_ENTRIES_PER_REQUEST 4u
/* Default data bytes per blk request slot. */
#define VOP_DEVBACK_BLK_SEG_BYTES (512u * 1024u)

enum vop_devback_kind {
	VOP_DEVBACK_NET = 1,     /* virtio-net (VIRTIO 1.2 5.1) */
	VOP_DEVBACK_BLK = 2,     /* virtio-blk (5.2) */
	VOP_DEVBACK_CONSOLE = 3, /* virtio-console (5.3) */
};

/* One device of a link, as one side serves it. */
struct vop_devback_config {
	uint32_t dev_id;            /* nonzero */
	enum vop_devback_kind kind;
	enum vop_role role;         /* the role this side plays for the device */
	uint16_t queue_size;        /* table shape: see the top of this file */
	bool event_idx;             /* table shape */
	uint32_t find_timeout_ms;   /* open: wait for the table entry; 0 = look once */
	union {
		struct {
			uint32_t seg_bytes;                  /* table shape; 0 = default */
			bool ro;                             /* table shape: offer VIRTIO_BLK_F_RO */
			struct vop_blk_device_config device; /* device role */
			struct vop_nbd_config nbd;           /* driver role: the NBD export */
		} blk;
		struct {
			uint16_t mtu;                  /* table shape; 0 = 1500 */
			uint8_t mac[6];                /* table shape; unicast */
			bool offloads;                 /* table shape */
			struct vop_net_config backend; /* TAP (maybe in a netns) or datagram socket */
		} net;
		struct {
			struct vop_console_config backend;
		} console;
	};
};

/*
 * vop_devback_spec - the device-table entry cfg describes, as a window
 * creator on side would publish it (the device side is side for the device
 * role, the other one for the driver role). Returns 0 or -EINVAL (a field
 * out of range: queue_size not a power of two or past its kind's limit,
 * seg_bytes, mtu, a multicast mac). Not thread-safe: the config bytes of a
 * net spec live in static storage until published.
 */
int vop_devback_spec(const struct vop_devback_config *cfg, unsigned side, struct vop_dev_spec *spec);

/*
 * vop_devback_publish - window creator (side 0): publish the entry of cfg.
 * Returns the table slot, -EINVAL, or the errors of vop_devtab_publish
 * (-EEXIST, -ENOSPC, ...).
 */
int vop_devback_publish(struct vop_window *w, const struct vop_devback_config *cfg);

struct vop_devback;

/*
 * vop_devback_open - create the backend of cfg on ctx's window (waiting up
 * to cfg->find_timeout_ms for its table entry), open its local surfaces
 * (a TAP created in the agent's network namespace and then moved into
 * cfg->net.backend.netns when one is named, a pty, a backing file, the NBD
 * sockets), attach it to l and, for a blk driver, start its NBD server. On
 * error *err (if not NULL) names the failing step (static string).
 * Returns 0, -ENOENT (not published yet), -EINVAL, -errno of the backend.
 */
int vop_devback_open(struct vop_devctx *ctx, struct vop_link *l, const struct vop_devback_config *cfg,
		     struct vop_devback **out, const char **err);

/*
 * With l NULL (device role only) the backend is created but served by no
 * link: a host that is not a window (vhost-user, vop/vhost_user.h) serves
 * it through the ops vop_devback_serve() gives, on a context made with
 * vop_devctx_create_host().
 */
void vop_devback_serve(struct vop_devback *b, const struct vop_devback_ops **ops, void **obj);

/*
 * Detach from l (stopping the backend), stop NBD, close surfaces, free. NULL
 * ok. With l NULL the host has stopped the backend already.
 */
void vop_devback_close(struct vop_link *l, struct vop_devback *b);

uint32_t vop_devback_id(const struct vop_devback *b);
enum vop_devback_kind vop_devback_kind(const struct vop_devback *b);
enum vop_role vop_devback_role(const struct vop_devback *b);

/* Local surfaces of a backend; a field that does not apply is empty / 0 (has_* false). */
struct vop_devback_endpoints {
	char tap[IFNAMSIZ];                    /* net: the TAP (or "dgram") */
	char netns[VOP_NETNS_NAME_MAX + 1];    /* net: the namespace the TAP lives in ("" = ours) */
	char pty[VOP_PATH_MAX];                /* console: the pty slave */
	char nbd_socket[VOP_PATH_MAX];         /* blk driver: the NBD Unix socket */
	int nbd_port;                          /* blk driver: the NBD TCP port, 0 = none */
	bool has_nbd_size;                     /* blk driver */
	uint64_t nbd_size;                     /* blk driver: export size in bytes, 0 while not running */
};

/* Any thread. */
void vop_devback_endpoints(struct vop_devback *b, struct vop_devback_endpoints *out);

/* Counters of a backend (any thread). kind/role say which member is valid; a blk driver has none. */
struct vop_devback_counters {
	enum vop_devback_kind kind;
	enum vop_role role;
	bool valid; /* false: this backend keeps no counters (blk driver) */
	union {
		struct vop_blk_stats blk;
		struct vop_net_stats net;
		struct vop_console_stats console;
	};
};

void vop_devback_counters(struct vop_devback *b, struct vop_devback_counters *out);

/* The console backend (either role), or NULL for other kinds. */
struct vop_console *vop_devback_console(struct vop_devback *b);

/* The net backend (either role), or NULL for other kinds. */
struct vop_net *vop_devback_net(struct vop_devback *b);

/* The blk driver backend (to wait until it runs), or NULL for other kinds and roles. */
struct vop_blk_driver *vop_devback_blk_driver(struct vop_devback *b);

#endif /* VOP_DEV_BACKEND_H */
