/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared plumbing of the device backends (native/devices): the device
 * context a backend gets from its host (the window, a way to wake the link
 * worker that serves it, and an fd watcher that turns "a non-blocking fd
 * became ready" into a doorbell ring of our own side), queue set-up
 * helpers for both roles and config-space access.
 *
 * Backends are served by the link worker of native/core/link.c through
 * struct vop_devback_ops (vop/link.h): the link runs the device handshake
 * and calls start/stop/poll/prepare_sleep on its thread. Backend I/O
 * threads hand results back through their own locked lists and call
 * vop_devctx_wake(), which rings our doorbell (a syscall only if the worker
 * sleeps); a backend may instead let its I/O threads use its queue under a
 * lock it also takes in its ops (blk does).
 */
#ifndef VOP_DEV_COMMON_H
#define VOP_DEV_COMMON_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vop/link.h"
#include "vop/vq.h"
#include "vop/window.h"

/* virtio device ids (VIRTIO 1.2 section 5). */
#define VOP_VIRTIO_ID_NET 1u
#define VOP_VIRTIO_ID_BLK 2u
#define VOP_VIRTIO_ID_CONSOLE 3u

struct vop_devctx;

/*
 * vop_devctx_create - the context of the backends on one side of window w
 * (not owned). The fd watcher thread starts at the first watch. Returns 0
 * and *out, or -ENOMEM / -errno (eventfd).
 */
int vop_devctx_create(struct vop_window *w, struct vop_devctx **out);

/* Stop the fd watcher and free. Call after the backends stopped. NULL ok. */
void vop_devctx_destroy(struct vop_devctx *c);

/* Any thread: make the link worker run a poll round soon (rings our own doorbell). */
void vop_devctx_wake(struct vop_devctx *c);

/*
 * vop_devctx_watch - worker thread: one-shot watch of fd for events
 * (POLLIN/POLLOUT). When the fd is ready the watcher wakes the worker once
 * and disarms the watch; re-arm after the next EAGAIN. Re-arming an armed
 * fd merges the events and costs nothing when they are armed already.
 * Returns 0, -ENOSPC (64 fds) or -errno (thread, epoll_ctl).
 */
int vop_devctx_watch(struct vop_devctx *c, int fd, short events);

/* Same, and set *flag = 1 (seq_cst) when the fd fires (tells the backend which fd). */
int vop_devctx_watch_flag(struct vop_devctx *c, int fd, short events, _Atomic int *flag);

/* Stop watching fd (before closing it). Any thread. */
void vop_devctx_unwatch(struct vop_devctx *c, int fd);

/* The window the context belongs to. */
struct vop_window *vop_devctx_window(struct vop_devctx *c);

/* Monotonic clock in ns. */
uint64_t vop_dev_now_ns(void);

/* ------------------------------------------------------------------ */
/* Queues                                                               */
/* ------------------------------------------------------------------ */

/* One queue of an attached device, either role. Owned by the worker thread. */
struct vop_devq {
	struct vop_vq vq;  /* ring state */
	uint8_t *pool;     /* local pointer to the queue's buffer pool */
	uint64_t pool_off; /* its peer address (window offset) */
	uint64_t pool_size; /* bytes */
	uint16_t num;      /* ring size */
	uint16_t index;    /* queue index in its device (vop_devq_notify) */
	bool ready;        /* initialised */
};

/*
 * Where the device side of queue q finds its ring and how it starts on it:
 * the window's table entry (shm, pci-bar), or a host that is not a window
 * (vhost-user: the front-end's rings in its own memory).
 */
struct vop_devq_geom {
	struct vop_vq_config cfg; /* num, features, desc/avail/used pointers, region table */
	/*
	 * resume: start at last_avail with used_idx published, without touching
	 * the device area (the front-end owns the ring's history); otherwise
	 * the device area is ours to zero (a window after the reset handshake).
	 */
	bool resume;
	uint16_t last_avail, used_idx;
	uint8_t *pool;            /* window: the driver's buffer pool (NULL on a host) */
	uint64_t pool_off, pool_size;
	void *journal;            /* VOP_F_INFLIGHT journal area of this queue, or NULL */
	uint64_t journal_bytes;
};

/*
 * A device context whose device does not live in a window. The backends of
 * native/devices reach their queues, the peer's notification, config space
 * and their own worker only through the context, so the same backends serve
 * a window and such a host. Device role only.
 */
struct vop_devctx_host_ops {
	/* the device's entry (features offered, queues, initial config); 0 or -errno */
	int (*find)(void *arg, uint32_t dev_id, uint32_t type, struct vop_dev_info *out);
	/* geometry of queue q for the negotiated features; 0 or -errno */
	int (*queue)(void *arg, const struct vop_dev_info *di, unsigned q, uint64_t features,
		     struct vop_devq_geom *g);
	/* the driver must be told queue q has used buffers (any thread) */
	void (*notify)(void *arg, unsigned q);
	/* run the worker that serves the backend soon (any thread) */
	void (*wake)(void *arg);
	/* the device's config space changed: bytes [0, len) */
	void (*config_write)(void *arg, const void *cfg, uint32_t len);
};

/* vop_devctx_create_host - a context served by host ops (arg is theirs). 0 or -errno. */
int vop_devctx_create_host(const struct vop_devctx_host_ops *ops, void *arg, struct vop_devctx **out);

/* The side the context serves (the window's side; 0 for a host). */
unsigned vop_devctx_side(struct vop_devctx *c);

/*
 * vop_devctx_find - the device entry of dev_id: vop_dev_find_wait() on a
 * window, the host's entry otherwise. Same returns.
 */
int vop_devctx_find(struct vop_devctx *c, uint32_t dev_id, uint32_t type, uint32_t timeout_ms,
		    struct vop_dev_info *out);

/*
 * vop_devq_geom - where queue q of di is (window: the validated table
 * entry; journal = the last vop_inflight_bytes() of its pool when
 * VOP_F_INFLIGHT is negotiated and the pool holds it). 0, -EINVAL, -EPROTO.
 */
int vop_devq_geom(struct vop_devctx *c, const struct vop_dev_info *di, unsigned q, uint64_t features,
		  struct vop_devq_geom *g);

/*
 * vop_devq_start - device role: set up queue q from its geometry (zeroed
 * device area on a window, resumed where the front-end left it on a host).
 * Counters survive as with vop_devq_init(). 0 or -errno.
 */
int vop_devq_start(struct vop_devctx *c, const struct vop_dev_info *di, unsigned q, uint64_t features,
		   struct vop_devq *out);

/* After a publish that returned rc: notify the driver of q when rc > 0 (window or host). */
void vop_devq_notify(struct vop_devctx *c, const struct vop_devq *q, int rc);

/* Device role: write config bytes [0, len) (vop_dev_config_write on a window). */
void vop_devctx_config_write(struct vop_devctx *c, struct vop_dev_info *di, const void *cfg, uint32_t len);

/*
 * vop_devq_init - set up queue q of device di for our role with the
 * negotiated features. Device role translates through the window's
 * region table. The counters in out->vq.stats survive (a restart of the
 * queue keeps counting). Returns 0 or -errno from vop_vq_init_*().
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
/* Device entry and config space                                        */
/* ------------------------------------------------------------------ */

/*
 * vop_dev_find_wait - wait up to timeout_ms (0: look once) for dev_id to
 * be LIVE with the expected device type. 0, -ENOENT / -ETIMEDOUT, -EPROTO
 * (type mismatch or bad entry).
 */
int vop_dev_find_wait(struct vop_window *w, uint32_t dev_id, uint32_t type, uint32_t timeout_ms,
		      struct vop_dev_info *out);

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
