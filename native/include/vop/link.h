/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A link side: one worker thread that serves every device attached on one
 * side of a window, in either role, with adaptive polling (bounded spin,
 * then sleep on the doorbell), heartbeat/epoch watching, the device reset
 * handshake (core/devreset.c) and hot unplug. Every device is a backend of
 * native/devices (virtio-net, -console, -blk, and the byte pipe used by
 * tests and benchmarks, vop/dev_pipe.h) plugged in through struct
 * vop_devback_ops: the link runs the handshake, the backend moves the
 * buffers.
 *
 * Threading: vop_link_* control calls may come from any one thread at a
 * time (the binding's JS thread); they take the link lock briefly. The
 * worker holds the link lock only for bounded work (a batch of buffers per
 * queue, handshake steps); the device-table rescan, whose length a peer
 * could influence, runs without it. The worker thread calls cfg.on_event;
 * the callback must not block and must not call vop_link_* (it may run
 * under the link lock).
 */
#ifndef VOP_LINK_H
#define VOP_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include "vop/vq.h"
#include "vop/window.h"

enum vop_role {
	VOP_ROLE_DRIVER = 1, /* we post buffers (virtio driver) */
	VOP_ROLE_DEVICE = 2, /* we serve buffers (virtio device) */
};

enum vop_dev_run_state {
	VOP_DEVRUN_RESETTING = 1,  /* driver: reset requested, waiting for ack */
	VOP_DEVRUN_WAIT_DRIVER = 2, /* device: waiting for DRIVER_OK */
	VOP_DEVRUN_RUNNING = 3,
	VOP_DEVRUN_BROKEN = 4,     /* a queue broke; needs a reset */
	VOP_DEVRUN_REMOVED = 5,    /* tombstoned (hot unplug) */
};

/* Per-link-side counters. */
enum vop_link_stat {
	VOP_LS_WAKEUPS = 0,     /* returns from doorbell sleep */
	VOP_LS_SLEEPS = 1,      /* doorbell waits entered */
	VOP_LS_POLL_NS = 2,     /* ns spent spinning without work */
	VOP_LS_SLEEP_NS = 3,    /* ns spent asleep on the doorbell */
	VOP_LS_DOORBELLS = 4,   /* notifications sent to the peer */
	VOP_LS_SIGNALS = 5,     /* of which sent a signal (wake syscall, eventfd, doorbell register) */
	VOP_LS_HEARTBEATS = 6,  /* heartbeats written */
	VOP_LS_PEER_RESETS = 7, /* peer epoch changes seen */
	VOP_LS_PEER_GONE = 8,   /* peer-gone detections */
	VOP_LS_COUNT = 9
};

enum vop_event_type {
	VOP_EV_QUEUE_BROKEN = 1,   /* dev_id, queue, reason */
	VOP_EV_PEER_RESET = 2,     /* peer epoch changed (restart); epoch = new */
	VOP_EV_PEER_GONE = 3,      /* peer detached or heartbeat stopped */
	VOP_EV_DEVICE_REMOVED = 4, /* dev_id tombstoned */
	VOP_EV_RESET_DONE = 5,     /* dev_id reset handshake completed */
	VOP_EV_RESET_TIMEOUT = 6,  /* dev_id: no ack within reset_timeout_ms (still waiting) */
	VOP_EV_NEEDS_RESET = 7,    /* dev_id: peer set DEVICE_NEEDS_RESET */
	VOP_EV_PEER_UP = 8,        /* peer attached (first heartbeat seen); epoch */
	VOP_EV_BACKEND_FAILED = 9, /* dev_id: the backend failed (reason = errno, positive) */
	VOP_EV_LINK_FAILED = 10,   /* this link side stopped for good (reason = enum vop_link_fail) */
};

/*
 * Why a link side failed (reason of VOP_EV_LINK_FAILED). Stable numbers.
 * A failed side's worker has stopped: it serves nothing and no longer
 * heartbeats (the peer sees it gone); only closing it remains. Other links
 * and the process are not affected.
 */
enum vop_link_fail {
	VOP_LINK_FAIL_NONE = 0,
	/*
	 * The device table kept changing (the generation moved again less than
	 * 250 ms after each change seen, or entries never copied consistently
	 * within the bounded retries) for longer than devtab_unstable_ms: an
	 * honest table owner changes it only on publish/remove.
	 */
	VOP_LINK_FAIL_DEVTAB_UNSTABLE = 1,
	VOP_LINK_FAIL_COUNT = 2
};

/* Stable short name ("devtab_unstable") of a vop_link_fail, "unknown" if out of range. */
const char *vop_link_fail_name(unsigned reason);

struct vop_event {
	uint32_t type;   /* enum vop_event_type */
	uint32_t dev_id; /* 0 for link-wide events */
	uint32_t queue;  /* queue index for QUEUE_BROKEN */
	uint32_t reason; /* enum vop_vq_reason for QUEUE_BROKEN */
	uint32_t epoch;  /* peer epoch for PEER_* */
};

struct vop_link_config {
	uint64_t spin_ns;          /* busy-poll time after the last work before sleeping; 0 = sleep at once */
	uint32_t reset_timeout_ms; /* device reset handshake timeout; 0 = 1000 */
	bool poll_only;            /* never sleep (benchmark "polling" mode) */
	/*
	 * Driver role: answer a device's DEVICE_NEEDS_RESET with a reset at
	 * once, for hosts without a control plane to decide (vopdev); the
	 * agent leaves it off and resets with its own backoff.
	 */
	bool reset_on_needs_reset;
	/*
	 * How long the device table may keep changing before the link fails
	 * with VOP_LINK_FAIL_DEVTAB_UNSTABLE; 0 = VOP_DEVTAB_UNSTABLE_MS.
	 */
	uint32_t devtab_unstable_ms;
	void (*on_event)(void *ctx, const struct vop_event *ev); /* worker thread; may be NULL */
	void *ctx;                 /* passed to on_event */
};

/* Default bound on a continuously changing device table. */
#define VOP_DEVTAB_UNSTABLE_MS 2000u

struct vop_link;

/*
 * A device backend served by the link worker. The link owns the device's
 * lifecycle over its shared entry (reset_req/reset_ack, features, status,
 * tombstone, peer restarts, queue-broken reporting); the backend owns its
 * queues and local surfaces. Every op runs on the worker thread with the
 * link lock held, so none may block for long; start and stop may wait for
 * the backend's own I/O threads.
 */
struct vop_devback_ops {
	const char *name;        /* "blk-device", "net-driver", ... */
	uint64_t driver_features; /* driver role: VOP_F_* and device bits wanted */
	/*
	 * start - set up our side of the queues with the negotiated features
	 * and begin serving. Driver role: called once the device acked a
	 * reset; the backend zeroes and fills its driver areas, and the link
	 * writes DRIVER_OK after start returns. Device role: called on
	 * DRIVER_OK; resume is true when the driver kept running the rings
	 * with a previous incarnation of this side (only offered when
	 * VOP_F_INFLIGHT was negotiated). 0 or -errno: the device is then
	 * BROKEN and the link calls stop before any later start (a failed
	 * start may leave part of its state set up).
	 */
	int (*start)(void *dev, uint64_t features, bool resume);
	/*
	 * stop - stop using the queues (reset, removal, detach, or after a
	 * failed start). Returns 0 once no thread of the backend touches the
	 * rings or buffers (until the next start), or -EINPROGRESS while its
	 * own threads still finish what they took (a blk write in flight): the
	 * link then calls it again later (the backend rings our doorbell when
	 * it is done) and acks a reset only after 0. Must not block on I/O.
	 * Local surfaces (TAP, pty, sockets) stay open.
	 */
	int (*stop)(void *dev);
	/* poll - do ready work without blocking: > 0 progress, 0 idle, < 0 failed. */
	int (*poll)(void *dev);
	/* prepare_sleep - arm ring notifications, re-check sources; 1 if work is pending. */
	int (*prepare_sleep)(void *dev);
	/* queue - ring state of queue q (counters stay valid across restarts), NULL if q is out of range. */
	struct vop_vq *(*queue)(void *dev, unsigned q);
	/*
	 * wants_prefault - whether the link should make the device's buffer
	 * pools resident ahead of traffic (rings always are). Control thread.
	 * NULL = no: pool pages fault in as traffic first reaches them, so an
	 * idle link holds only its rings.
	 */
	bool (*wants_prefault)(void *dev);
	/*
	 * release - the attachment ended (detach, destroy, or a failed
	 * attach): free dev. Only for backends the link owns (the byte pipe);
	 * NULL = the caller owns dev. Control thread, after stop returned 0.
	 */
	void (*release)(void *dev);
};

/*
 * vop_link_create - a link side over window w (not owned: close it after
 * vop_link_destroy). Returns 0 and *out, -EINVAL, -ENOMEM.
 */
int vop_link_create(struct vop_window *w, const struct vop_link_config *cfg, struct vop_link **out);

/* Stop the worker if running, detach everything, free. NULL ok. */
void vop_link_destroy(struct vop_link *l);

/*
 * vop_link_attach_backend - serve dev_id (LIVE in the table, role matching
 * its device_side) with a backend; dev stays owned by the caller and must
 * outlive the attachment. Allowed while running; the driver role starts
 * the reset handshake at once. Returns 0, -ENOENT, -EINVAL, -EEXIST,
 * -ENOSPC, -ENOMEM, -EPROTO, -EAGAIN (bounded retries), -ENOLINK. When it
 * fails, ops->release (if any) has been called on dev.
 */
int vop_link_attach_backend(struct vop_link *l, uint32_t dev_id, enum vop_role role,
			    const struct vop_devback_ops *ops, void *dev);

/*
 * vop_link_call_backend - run fn(dev, arg) under the link lock for the
 * backend attached as dev_id, if its ops have the given start function
 * (how a backend kind recognises its own objects, e.g. to read counters).
 * Returns fn's result, -ENOENT (no such device) or -EINVAL (another kind).
 */
int vop_link_call_backend(struct vop_link *l, uint32_t dev_id,
			  int (*start)(void *dev, uint64_t features, bool resume),
			  int (*fn)(void *dev, void *arg), void *arg);

/*
 * Stop serving dev_id (its queues go quiet; a backend is stopped and
 * handed back to its owner, not freed). 0 or -ENOENT.
 */
int vop_link_detach(struct vop_link *l, uint32_t dev_id);

/*
 * vop_link_reset_device - driver role: start the reset handshake for
 * dev_id (clears broken queues once the device acks). 0, -ENOENT, -EINVAL.
 */
int vop_link_reset_device(struct vop_link *l, uint32_t dev_id);

/*
 * vop_link_failed - enum vop_link_fail of this side: 0 while healthy. Any
 * thread. Attaching devices to a failed side returns -ENOLINK.
 */
unsigned vop_link_failed(struct vop_link *l);

/* The window of this link side (as given to vop_link_create). */
struct vop_window *vop_link_window(struct vop_link *l);

/* Start / stop (and join) the worker thread. 0, -EALREADY, -errno. */
int vop_link_start(struct vop_link *l);
int vop_link_stop(struct vop_link *l);

/*
 * Counters; any thread. Return 0 or -ENOENT / -EINVAL (queue out of
 * range).
 */
int vop_link_queue_stats(struct vop_link *l, uint32_t dev_id, unsigned queue,
			 struct vop_vq_stats *out);
/* enum vop_dev_run_state of dev_id, or -ENOENT. */
int vop_link_dev_state(struct vop_link *l, uint32_t dev_id);
void vop_link_stats(struct vop_link *l, uint64_t out[VOP_LS_COUNT]);

#endif /* VOP_LINK_H */

/*
 * The byte pipe (vop_link_attach_pipe, vop_link_pipe_stats, vop_pipe_spec
 * and its types) moved to native/devices (vop/dev_pipe.h); included here so
 * that callers of the link API that use it keep compiling.
 */
#include "vop/dev_pipe.h"
