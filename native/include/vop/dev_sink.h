/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A counting sink: a virtio-net device (receiveq 0, transmitq 1) whose
 * transmitted frames are counted and handed back at once, untouched, and
 * whose receiveq never gets a frame. What a benchmark of the ring path
 * needs: every cost left is the ring's (pop with its checks, push,
 * publish, notification). Device role, served like any backend.
 */
#ifndef VOP_DEV_SINK_H
#define VOP_DEV_SINK_H

#include "vop/dev_common.h"
#include "vop/dev_net.h"

struct vop_sink;

/* Find dev_id (type net, two queues) in ctx and set up; 0 or -errno. */
int vop_sink_create(struct vop_devctx *ctx, uint32_t dev_id, struct vop_sink **out);

/*
 * Copy mode (before the host starts it): every transmitted frame's bytes
 * after the header are also copied into a private buffer of the sink, as
 * DPDK's vhost PMD copies each frame into an mbuf; off (the default), only
 * descriptors and lengths are read. 0 or -ENOMEM.
 */
int vop_sink_set_copy(struct vop_sink *s, bool copy);

/* Link or host ops of the sink. */
extern const struct vop_devback_ops vop_sink_ops;

/* tx_frames, tx_bytes (frame bytes after the 12-byte header); the rest stays 0. */
void vop_sink_stats(struct vop_sink *s, struct vop_net_stats *out);

/* After the host stopped it. NULL ok. */
void vop_sink_destroy(struct vop_sink *s);

#endif /* VOP_DEV_SINK_H */
