/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The byte pipe: a test and benchmark device (type VOP_DEVTYPE_BYTE_PIPE,
 * outside the virtio id space) with two queues, queue 0 driver->device
 * and queue 1 device->driver, that produces, consumes, echoes and verifies
 * numbered messages. A backend like net, console and blk (struct
 * vop_devback_ops, vop/link.h), served by the link worker; the link runs
 * the reset handshake, the pipe moves the buffers (native/devices/dev_pipe.c).
 *
 * The pipe is owned by the link it is attached to: vop_link_attach_pipe()
 * creates it and vop_link_detach() / vop_link_destroy() free it.
 */
#ifndef VOP_DEV_PIPE_H
#define VOP_DEV_PIPE_H

#include <stdbool.h>
#include <stdint.h>

#include "vop/link.h"
#include "vop/window.h"

/* What a byte pipe does with one of its two queues. */
enum vop_pipe_mode {
	VOP_PIPE_OFF = 0,
	VOP_PIPE_SOURCE = 1, /* produce messages (driver: q0; device: q1) */
	VOP_PIPE_SINK = 2,   /* consume messages (device: q0; driver: q1) */
	VOP_PIPE_ECHO = 3,   /* device only, on q0: copy each q0 message into a q1 buffer */
};

/* Byte pipe: queue 0 carries driver->device, queue 1 device->driver. */
#define VOP_PIPE_TXQ 0u
#define VOP_PIPE_RXQ 1u

struct vop_pipe_config {
	uint32_t msg_size;     /* bytes per message; >= 16 when verify */
	uint32_t buf_size;     /* driver: pool bytes per buffer (>= msg_size); 0 = pool/qsize */
	uint16_t segs;         /* driver: descriptors per buffer, 1 .. 16 */
	uint8_t tx_mode;       /* enum vop_pipe_mode for queue 0 */
	uint8_t rx_mode;       /* enum vop_pipe_mode for queue 1 */
	bool verify;           /* stamp / check sequence numbers and checksums */
	uint64_t features;     /* driver: features wanted (VOP_F_* bits), masked by offer */
	uint64_t count;        /* SOURCE: stop after count messages; 0 = unlimited */
	uint32_t max_inflight; /* driver SOURCE + SINK: unanswered messages bound; 0 = none */
	uint32_t batch;        /* chains per publish; 0 = half the queue size */
};

/* Byte pipe counters (per attached device, read by any thread). */
struct vop_pipe_stats {
	uint64_t tx_msgs;  /* messages produced (SOURCE) or echoed */
	uint64_t rx_msgs;  /* messages consumed (SINK) */
	uint64_t bad_msgs; /* verification failures */
	uint64_t state;    /* enum vop_dev_run_state */
};

/*
 * vop_link_attach_pipe - serve the byte pipe dev_id (must be LIVE in the
 * device table, type VOP_DEVTYPE_BYTE_PIPE, 2 queues) in role. Allowed
 * while running. The driver role starts the reset handshake at once.
 * Returns 0, -ENOENT, -EPROTO (bad table entry), -EINVAL (bad config or
 * role does not match device_side), -EEXIST (already attached), -ENOMEM,
 * -EAGAIN (the entry kept changing while we copied it, bounded retries),
 * -ENOLINK (this side failed).
 */
int vop_link_attach_pipe(struct vop_link *l, uint32_t dev_id, enum vop_role role,
			 const struct vop_pipe_config *pc);

/*
 * vop_link_pipe_stats - counters of the pipe dev_id; any thread. 0,
 * -ENOENT, -EINVAL (dev_id is another kind of backend).
 */
int vop_link_pipe_stats(struct vop_link *l, uint32_t dev_id, struct vop_pipe_stats *out);

/*
 * vop_pipe_spec - fill a device-table spec for a byte pipe whose queues
 * have qsize entries and buffers of buf_size bytes (pool includes room for
 * indirect tables). features: offered VOP_F_* bits.
 */
void vop_pipe_spec(struct vop_dev_spec *spec, uint32_t dev_id, uint8_t device_side,
		   uint16_t qsize, uint32_t buf_size, uint64_t features);

#endif /* VOP_DEV_PIPE_H */
