/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A vhost-user device: the vhost-user back-end of vop/vhost_user.h serving
 * one of the device backends of native/devices (virtio-net on a TAP or a
 * datagram socket, virtio-blk on a file or block device) to a stock virtio
 * driver, or a counting sink (vop/dev_sink.h) for benchmarks. The backends
 * are the ones a link serves, unchanged: they reach their queues, the
 * front-end's notifications and their config space through a device
 * context whose host is the vhost-user device (vop_devctx_create_host()).
 *
 * What the front-end is offered comes from the same table shape a link
 * would publish (vop_devback_spec()): the device's feature bits,
 * VIRTIO_F_EVENT_IDX unless disabled, plus INDIRECT_DESC and VERSION_1
 * (the sink also VIRTIO_F_IN_ORDER: it completes every chain in order);
 * blk adds the config space (PROTOCOL_F_CONFIG) and its in-flight journal
 * in an inflight area the front-end keeps (PROTOCOL_F_INFLIGHT_SHMFD).
 *
 * Threading: open/close from one control thread; counters and endpoints
 * from any thread.
 */
#ifndef VOP_DEV_VHOST_H
#define VOP_DEV_VHOST_H

#include "vop/dev_backend.h"
#include "vop/vhost_user.h"

enum vop_vhost_kind {
	VOP_VHOST_NET = 1,  /* virtio-net: cfg.dev.net (TAP or datagram socket) */
	VOP_VHOST_BLK = 2,  /* virtio-blk: cfg.dev.blk.device (file or block device) */
	VOP_VHOST_SINK = 3, /* virtio-net whose transmitted frames are counted and dropped */
};

struct vop_vhost_config {
	enum vop_vhost_kind kind;
	/*
	 * The socket and its limits (path, root, server, socket_mode,
	 * socket_gid, reconnect_ms, max_queue_size, max_mem_bytes,
	 * allow_unsealed, spin_ns, on_event, ctx). num_queues, features,
	 * config_space, inflight and in_order are set here from the kind.
	 */
	struct vop_vhu_config vhu;
	/*
	 * NET, BLK: the device as a link would describe it (dev_id, event_idx,
	 * net.mtu/mac/offloads/backend, blk.ro/device); the role is the device
	 * role. queue_size is unused: the front-end sizes its rings (up to
	 * vhu.max_queue_size).
	 */
	struct vop_devback_config dev;
	/*
	 * NET, SINK: queue pairs offered (VIRTIO_NET_F_MQ and PROTOCOL_F_MQ's
	 * GET_QUEUE_NUM when > 1); 0 = 1, at most VOP_VHU_MAX_QUEUES / 2. Each
	 * pair is served by its own backend instance on the same TAP or socket
	 * (a dup of the first one's fd; frames the TAP hands over go to
	 * whichever pair reads first, the first in each poll round) and the one
	 * worker thread polls them all. BLK: must be 0 or 1.
	 */
	uint16_t queue_pairs;
	/* SINK: copy every frame's bytes into a private buffer (vop_sink_set_copy()). */
	bool sink_copy;
};

struct vop_vhost;

/*
 * vop_vhost_open - open the backend's surfaces (TAP, backing file), bind or
 * resolve the socket and start serving. On error *err names the step.
 * Returns 0 and *out, or -errno.
 */
int vop_vhost_open(const struct vop_vhost_config *cfg, struct vop_vhost **out, const char **err);

/* End the connection, stop the backend, close its surfaces, free. NULL ok. */
void vop_vhost_close(struct vop_vhost *h);

/* The vhost-user device (status, queue counters). */
struct vop_vhu *vop_vhost_vhu(struct vop_vhost *h);

enum vop_vhost_kind vop_vhost_kind(const struct vop_vhost *h);

/* Rings of the device over all pairs (vop_vhu_queue_stats() indices). */
unsigned vop_vhost_rings(const struct vop_vhost *h);

/* Backend counters (net and sink: the net block, summed over the pairs; blk: the blk block). */
void vop_vhost_counters(struct vop_vhost *h, struct vop_devback_counters *out);

/* Local surfaces (net: the TAP and its namespace). */
void vop_vhost_endpoints(struct vop_vhost *h, struct vop_devback_endpoints *out);

#endif /* VOP_DEV_VHOST_H */
