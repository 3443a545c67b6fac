/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device-backend test harness: one window side hosts a real backend of
 * native/devices on a link worker (struct t_host); the test plays the
 * other side "by hand", including the link's device handshake over the
 * per-side blocks of the entry (edges R1..R3 of native/core/devreset.c).
 */
#ifndef VOP_TEST_DEVHAND_H
#define VOP_TEST_DEVHAND_H

#include "helpers.h" /* first: it sets _GNU_SOURCE */

#include <fcntl.h>

#include "vop/dev_common.h"

/* A disk image of bytes under $TMPDIR; its path in path. */
static inline void t_disk(char *path, size_t n, const char *tag, uint64_t bytes)
{
	int fd;

	t_path(path, n, tag);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, (off_t)bytes) == 0);
	close(fd);
}

/* A memfd window of size bytes: side 0 publishes spec, side 1 attaches through the fd. */
static inline void t_mem_windows(uint64_t size, const struct vop_dev_spec *spec, struct vop_window **w0,
				 struct vop_window **w1)
{
	struct vop_xport *x0, *x1;

	CHECK_EQ(vop_shm_create(NULL, size, &x0), 0);
	CHECK_EQ(vop_window_create(x0, NULL, w0), 0);
	CHECK(vop_devtab_publish(*w0, spec) >= 0);
	CHECK_EQ(vop_shm_open_fd(x0->fd, &x1), 0);
	CHECK_EQ(vop_window_attach(x1, w1), 0);
}

/* A link side serving one backend, with its device context and events. */
struct t_host {
	struct vop_link *l;
	struct vop_devctx *ctx;
	struct t_evlog ev;
};

static inline void t_host_open(struct t_host *h, struct vop_window *w)
{
	struct vop_link_config c;

	memset(h, 0, sizeof(*h));
	t_evlog_init(&h->ev);
	memset(&c, 0, sizeof(c));
	c.spin_ns = 20000;
	c.on_event = t_on_event;
	c.ctx = &h->ev;
	CHECK_EQ(vop_link_create(w, &c, &h->l), 0);
	CHECK_EQ(vop_devctx_create(w, &h->ctx), 0);
}

/* Attach backend dev (ops) for dev_id in role and start the worker. */
static inline void t_host_serve(struct t_host *h, uint32_t dev_id, enum vop_role role,
				const struct vop_devback_ops *ops, void *dev)
{
	CHECK_EQ(vop_link_attach_backend(h->l, dev_id, role, ops, dev), 0);
	CHECK_EQ(vop_link_start(h->l), 0);
}

/* Stop and free the link (which stops the backend); the caller then destroys the backend. */
static inline void t_host_close(struct t_host *h)
{
	vop_link_destroy(h->l);
	h->l = NULL;
}

/* After the backend is destroyed. */
static inline void t_host_free(struct t_host *h)
{
	vop_devctx_destroy(h->ctx);
	pthread_mutex_destroy(&h->ev.mu);
}

/* True once dev_id runs on the host's link. */
static inline int t_host_running(struct t_host *h, uint32_t dev_id)
{
	return vop_link_dev_state(h->l, dev_id) == VOP_DEVRUN_RUNNING;
}

/*
 * Driver by hand, part 1: reset the device and wait for its ack (R1, R2):
 * in our own block of the entry (sides[w->side]); the device answers in its.
 * Returns the features to accept: offered & wanted, plus VERSION_1.
 */
static inline uint64_t t_hand_driver_reset(struct vop_window *w, struct vop_dev_info *di, uint64_t wanted)
{
	struct vop_dev_side *me = vop_devtab_side_claim(di, w->side);
	struct vop_dev_side_view dev;
	uint32_t req = __atomic_load_n(&me->reset, __ATOMIC_RELAXED) + 1;

	__atomic_store_n(&me->status, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&me->reset, req, __ATOMIC_RELEASE);
	vop_window_notify_peer(w);
	CHECK(T_WAIT_UNTIL((vop_devtab_side_read(di, w->side ^ 1u, &dev), dev.reset == req), 5000));
	return di->features_offered & (wanted | (1ull << VOP_F_VERSION_1));
}

/* Driver by hand, part 2: rings are set up; accept feat and set DRIVER_OK (R3). */
static inline void t_hand_driver_ok(struct vop_window *w, struct vop_dev_info *di, uint64_t feat)
{
	struct vop_dev_side *me = vop_devtab_side_claim(di, w->side);

	__atomic_store_n(&me->features, feat, __ATOMIC_RELAXED);
	__atomic_store_n(&me->status,
			 VOP_STATUS_ACKNOWLEDGE | VOP_STATUS_DRIVER | VOP_STATUS_FEATURES_OK |
				 VOP_STATUS_DRIVER_OK,
			 __ATOMIC_RELEASE);
	vop_window_notify_peer(w);
}

/*
 * Device by hand: wait for the driver's reset request, zero our device
 * areas, ack it, then wait for DRIVER_OK. Returns the accepted features.
 */
static inline uint64_t t_hand_device_handshake(struct vop_window *w, struct vop_dev_info *di)
{
	struct vop_dev_side *me = vop_devtab_side_claim(di, w->side);
	struct vop_dev_side_view drv;
	unsigned q;

	CHECK(T_WAIT_UNTIL((vop_devtab_side_read(di, w->side ^ 1u, &drv),
			    drv.reset != __atomic_load_n(&me->reset, __ATOMIC_RELAXED)),
			   5000));
	for (q = 0; q < di->num_queues; q++)
		memset(vop_window_ptr(w, di->queues[q].used_off, vop_vring_used_bytes(di->queues[q].size)), 0,
		       vop_vring_used_bytes(di->queues[q].size));
	__atomic_store_n(&me->status, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&me->reset, drv.reset, __ATOMIC_RELEASE);
	vop_window_notify_peer(w);
	CHECK(T_WAIT_UNTIL((vop_devtab_side_read(di, w->side ^ 1u, &drv), drv.status & VOP_STATUS_DRIVER_OK),
			   5000));
	return drv.features;
}

#endif /* VOP_TEST_DEVHAND_H */
