/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The creator (side 0, device-table owner, driver here) goes away without
 * removing the window file and comes back with vop_window_attach_side(0):
 * the attacher sees a restart (PEER_RESET), the driver re-runs the reset
 * handshake and verified data flows again; a device published after the
 * restart gets rings that do not overlap the existing ones; a side held by
 * a live process is refused with -EBUSY.
 */
#include "helpers.h"

int main(void)
{
	struct t_pair p;
	struct vop_xport *x;
	struct vop_window *w;
	struct vop_link_config c;
	struct vop_pipe_config drv = t_pipe_cfg(64, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	struct vop_pipe_config dev = t_pipe_cfg(64, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);
	struct vop_dev_spec spec;
	struct vop_dev_info a, b;
	uint32_t k, j;

	t_pair_open(&p, "crestart", 8u << 20, 20000);
	t_pair_run_pipe(&p, 1, 128, 64);
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 1) > 10000, 10000));

	/* A live side cannot be taken over. */
	CHECK_EQ(vop_shm_open(p.path, &x), 0);
	CHECK_EQ(vop_window_attach_side(x, 1, &w), -EBUSY);
	CHECK_EQ(vop_window_attach_side(x, 0, &w), -EBUSY);
	CHECK_EQ(vop_window_attach_side(x, 2, &w), -EINVAL);
	vop_xport_destroy(x);

	/* The creator stops without unlinking, then comes back. */
	vop_link_destroy(p.l0);
	p.w0->x->unlink_on_destroy = 0;
	vop_window_close(p.w0);
	CHECK_EQ(vop_shm_open(p.path, &x), 0);
	CHECK_EQ(vop_window_attach_side(x, 0, &p.w0), 0);
	p.w0->x->unlink_on_destroy = 1;
	CHECK_EQ(p.w0->side, 0);
	CHECK_EQ(p.w0->epoch, 2);
	memset(&c, 0, sizeof(c));
	c.spin_ns = 20000;
	c.on_event = t_on_event;
	c.ctx = &p.ev0;
	CHECK_EQ(vop_link_create(p.w0, &c, &p.l0), 0);
	CHECK_EQ(vop_link_attach_pipe(p.l0, 1, VOP_ROLE_DRIVER, &drv), 0);
	CHECK_EQ(vop_link_start(p.l0), 0);
	CHECK(T_WAIT_UNTIL(t_evlog_has(&p.ev1, VOP_EV_PEER_RESET, -1, NULL), 5000));
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 1) > 10000 && t_rx(p.l1, 1) > 10000, 10000));

	/* New device after the restart: rings and pools don't overlap device 1's. */
	vop_pipe_spec(&spec, 2, 1, 128, 64, 1ull << VOP_F_EVENT_IDX);
	CHECK(vop_devtab_publish(p.w0, &spec) >= 0);
	CHECK_EQ(vop_devtab_find(p.w0, 1, &a), 0);
	CHECK_EQ(vop_devtab_find(p.w0, 2, &b), 0);
	for (k = 0; k < 2; k++)
		for (j = 0; j < 2; j++) {
			CHECK(b.queues[k].desc_off >= a.queues[j].used_off + vop_vring_used_bytes(128) ||
			      b.queues[k].desc_off + vop_vring_desc_bytes(128) <= a.queues[j].desc_off);
			CHECK(b.queues[k].pool_off >= a.queues[j].pool_off + a.queues[j].pool_size ||
			      b.queues[k].pool_off + b.queues[k].pool_size <= a.queues[j].pool_off);
		}
	CHECK_EQ(vop_link_attach_pipe(p.l0, 2, VOP_ROLE_DRIVER, &drv), 0);
	CHECK_EQ(vop_link_attach_pipe(p.l1, 2, VOP_ROLE_DEVICE, &dev), 0);
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 2) > 10000 && t_rx(p.l1, 2) > 10000 && t_rx(p.l0, 1) > 20000, 10000));
	CHECK(!t_evlog_has(&p.ev0, VOP_EV_QUEUE_BROKEN, -1, NULL));
	CHECK(!t_evlog_has(&p.ev1, VOP_EV_QUEUE_BROKEN, -1, NULL));
	t_pair_close(&p);
	return T_PASS;
}
