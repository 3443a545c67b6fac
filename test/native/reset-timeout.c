/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The driver's reset handshake is bounded: with no device side attached it
 * reports RESET_TIMEOUT (and keeps waiting); a device that attaches later
 * acks and data flows. vop_link_reset_device() restarts a running device.
 */
#include "helpers.h"

int main(void)
{
	struct t_pair p;
	struct vop_dev_spec spec;
	struct vop_link_config c;
	struct vop_pipe_config drv = t_pipe_cfg(64, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	struct vop_pipe_config dev = t_pipe_cfg(64, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);
	struct vop_pipe_stats s;
	uint64_t t0;
	unsigned done;

	t_pair_open(&p, "rtimeout", 4u << 20, 20000);
	vop_link_destroy(p.l0);
	memset(&c, 0, sizeof(c));
	c.spin_ns = 20000;
	c.reset_timeout_ms = 100;
	c.on_event = t_on_event;
	c.ctx = &p.ev0;
	CHECK_EQ(vop_link_create(p.w0, &c, &p.l0), 0);
	vop_pipe_spec(&spec, 4, 1, 64, 64, 1ull << VOP_F_EVENT_IDX);
	CHECK(vop_devtab_publish(p.w0, &spec) >= 0);
	CHECK_EQ(vop_link_attach_pipe(p.l0, 4, VOP_ROLE_DRIVER, &drv), 0);
	CHECK_EQ(vop_link_start(p.l0), 0);
	t0 = t_now_ms();
	CHECK(T_WAIT_UNTIL(t_evlog_has(&p.ev0, VOP_EV_RESET_TIMEOUT, -1, NULL), 2000));
	CHECK(t_now_ms() - t0 >= 90);
	CHECK_EQ(vop_link_pipe_stats(p.l0, 4, &s), 0);
	CHECK_EQ(s.state, VOP_DEVRUN_RESETTING);
	CHECK_EQ(vop_link_attach_pipe(p.l1, 4, VOP_ROLE_DEVICE, &dev), 0);
	CHECK_EQ(vop_link_start(p.l1), 0);
	CHECK(T_WAIT_UNTIL(t_evlog_has(&p.ev0, VOP_EV_RESET_DONE, -1, NULL), 2000));
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 4) > 10000 && t_rx(p.l1, 4) > 10000, 10000));
	/* Explicit reset while running: counters restart, data flows again. */
	CHECK_EQ(vop_link_reset_device(p.l1, 4), -EINVAL); /* device side can't */
	CHECK_EQ(vop_link_reset_device(p.l0, 99), -ENOENT);
	done = t_evlog_count(&p.ev0, VOP_EV_RESET_DONE);
	CHECK_EQ(vop_link_reset_device(p.l0, 4), 0);
	/* an event, not a sample of the counter: traffic may pass 10000 again between two samples */
	CHECK(T_WAIT_UNTIL(t_evlog_count(&p.ev0, VOP_EV_RESET_DONE) > done, 5000));
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 4) > 10000 && t_rx(p.l1, 4) > 10000, 10000));
	CHECK_EQ(vop_link_pipe_stats(p.l0, 4, &s), 0);
	CHECK_EQ(s.bad_msgs, 0);
	CHECK(!t_evlog_has(&p.ev0, VOP_EV_QUEUE_BROKEN, -1, NULL));
	CHECK(!t_evlog_has(&p.ev1, VOP_EV_QUEUE_BROKEN, -1, NULL));
	t_pair_close(&p);
	return T_PASS;
}
