/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared plumbing of the device backends (native/devices): a device loop
 * (one worker thread per window side that serves every backend attached
 * to it, with a bounded spin and then a sleep on our doorbell), an fd
 * watcher that turns "a blocking fd became ready" into a doorbell ring of
 * our own side, queue set-up helpers for both roles and the virtio status
 * handshake.
 *
 * Threading: the loop thread owns every struct vop_devq and calls the
 * backend ops. Backend I/O threads hand results back through their own
 * locked lists and call vop_devloop_wake(), which rings our doorbell (a
 * syscall only if the loop is asleep); a backend may instead let its I/O
 * threads use its queue under a lock it also takes in its ops (blk does).
 */
#ifndef VOP_DEV_COMMON_H
#define VOP_DEV_COMMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vop/vq.h"
#include "vop/window.h"

/* virtio device ids (VIRTIO 1.2 section 5). */
#define VOP_VIRTIO_ID_NET 1u
#define VOP_VIRTIO_ID_BLK 2u
#define VOP_VIRTIO_ID_CONSOLE 3u

struct vop_devloop;

/* One backend served by a loop. Every op runs on the loop thread. */
struct vop_devback_ops {
	const char *name; /* "blk-device", "net-driver", ... */
	/*
	 * poll - do whatever work is ready without blocking (pop/push, read
	 * completions, read/write nonblocking fds). Returns > 0 if progress
	 * was made, 0 if idle, < 0 if the backend failed (it is then no
	 * longer polled; the error is kept for vop_devloop_error()).
	 */
	int (*poll)(void *dev);
	/*
	 * prepare_sleep - the loop is about to sleep on the doorbell: enable
	 * ring notifications and re-check every source of work (rings and
	 * completion lists). Returns 1 if work is pending (do not sleep).
	 */
	int (*prepare_sleep)(void *dev);
};

struct vop_devloop_config {
	uint64_t spin_ns;  /* busy-poll after the last progress before sleeping; 0 = 20 us */
	uint32_t hb_ms;    /* heartbeat period (also the longest sleep); 0 = 500 */
};

/*
 * vop_devloop_create - a loop for window w (not owned). Returns 0 and
 * *out, or -ENOMEM / -errno (eventfd, thread).
 */
int vop_devloop_create(struct vop_window *w, const struct vop_devloop_config *cfg,
		       struct vop_devloop **out);

/* Add a backend before vop_devloop_start(). 0, -ENOSPC (max 16). */
int vop_devloop_add(struct vop_devloop *l, const struct vop_devback_ops *ops, void *dev);

/* Start / stop (join) the loop and fd-watcher threads. 0 or -errno. */
int vop_devloop_start(struct vop_devloop *l);
void vop_devloop_stop(struct vop_devloop *l);

/* Stop if running and free. NULL ok. */
void vop_devloop_destroy(struct vop_devloop *l);

/* First backend error (< 0) or 0. Any thread. */
int vop_devloop_error(struct vop_devloop *l);

/* Any thread: make the loop run a poll round soon (rings our own doorbell). */
void vop_devloop_wake(struct vop_devloop *l);

/*
 * vop_devloop_watch - loop thread: one-shot watch of fd for events
 * (POLLIN/POLLOUT). When the fd is ready the watcher wakes the loop once
 * and forgets the watch; re-arm after the next EAGAIN. Re-arming an
 * armed fd merges the events. Returns 0 or -ENOSPC (64 fds).
 */
int vop_devloop_watch(struct vop_devloop *l, int fd, short events);

/* Same, and set *flag = 1 (seq_cst) when the fd fires (tells the backend which fd). */
int vop_devloop_watch_flag(struct vop_devloop *l, int fd, short events, _Atomic int *flag);

/* The window the loop serves. */
struct vop_window *vop_devloop_window(struct vop_devloop *l);

/* Monotonic clock in ns. */
uint64_t vop_dev_now_ns(void);

/* ------------------------------------------------------------------ */
/* Queues                                                               */
/* ------------------------------------------------------------------ */

/* One queue of an attached device, either role. Owned by the loop thread. */
struct vop_devq {
	struct vop_vq vq;  /* ring state */
	uint8_t *pool;     /* local pointer to the queue's buffer pool */
	uint64_t pool_off; /* its peer address (window offset) */
	uint64_t pool_size; /* bytes */
	uint16_t num;      /* ring size */
	bool ready;        /* initialised */
};

/*
 * vop_devq_init - set up queue q of device di for our role with the
 * negotiated features. Device role translates through the window's
 * region table. Returns 0 or -errno from vop_vq_init_*().
 */
int vop_devq_init(struct vop_window *w, const struct vop_dev_info *di, unsigned q, bool driver,
		  uint64_t features, struct vop_devq *out);

/* Free private ring state (NULL-safe on a zeroed devq). */
void vop_devq_destroy(struct vop_devq *q);

/*
 * vop_devq_notify_if - after vop_vq_kick_prepare()/vop_vq_publish_used()
 * returned rc: ring the peer's doorbell when rc > 0.
 */
void vop_devq_notify_if(struct vop_window *w, int rc);

/* ------------------------------------------------------------------ */
/* Status handshake                                                     */
/* ------------------------------------------------------------------ */

/*
 * vop_dev_find_wait - wait up to timeout_ms for dev_id to be LIVE with the
 * expected device type. 0, -ETIMEDOUT, -EPROTO (type mismatch or bad entry).
 */
int vop_dev_find_wait(struct vop_window *w, uint32_t dev_id, uint32_t type, uint32_t timeout_ms,
		      struct vop_dev_info *out);

/*
 * Driver role: accept offered & wanted (VERSION_1 always) and set
 * ACKNOWLEDGE|DRIVER|FEATURES_OK; *accepted gets the result.
 */
void vop_dev_driver_features(struct vop_dev_info *di, uint64_t wanted, uint64_t *accepted);

/* Driver role: set DRIVER_OK (release: queues and in-flight regions first). */
void vop_dev_driver_ok(struct vop_dev_info *di);

/*
 * Device role: 1 and *accepted (masked by what was offered) once the
 * driver set DRIVER_OK, 0 before.
 */
int vop_dev_device_ready(struct vop_dev_info *di, uint64_t *accepted);

/*
 * Device role: write config bytes [0, len) under config_generation (odd
 * while writing). Driver role: vop_dev_config_read() waits up to
 * timeout_ms for the device to have written it (generation >= 2, even)
 * and copies a consistent snapshot. 0, -ETIMEDOUT, -EINVAL.
 */
void vop_dev_config_write(struct vop_dev_info *di, const void *cfg, uint32_t len);
int vop_dev_config_read(struct vop_dev_info *di, void *cfg, uint32_t len, uint32_t timeout_ms);

/* ------------------------------------------------------------------ */
/* iovec helpers over a popped chain                                    */
/* ------------------------------------------------------------------ */

/* Copy up to len bytes from the readable part of c starting at off. Returns bytes copied. */
uint32_t vop_chain_read(const struct vop_chain *c, uint32_t off, void *dst, uint32_t len);

/* Copy up to len bytes into the writable part of c starting at off. Returns bytes copied. */
uint32_t vop_chain_write(const struct vop_chain *c, uint32_t off, const void *src, uint32_t len);

/*
 * Build an iovec for [off, off + len) of the readable (in = false) or
 * writable (in = true) part of c. Returns the number of iovec entries
 * (<= max) or -EINVAL if the range does not fit.
 */
int vop_chain_iov(const struct vop_chain *c, bool in, uint32_t off, uint32_t len,
		  struct iovec *iov, int max);

#endif /* VOP_DEV_COMMON_H */
