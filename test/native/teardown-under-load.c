/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Teardown under load: the device side is destroyed mid-flight; the driver
 * side sees PEER_GONE. A new device side attaches (new epoch); the driver
 * sees PEER_RESET, re-runs the reset handshake and verified data flows from
 * sequence 0 again. Everything is then destroyed under load; LeakSanitizer
 * checks nothing leaked.
 */
#include "helpers.h"

int main(void)
{
	struct t_pair p;
	struct vop_xport *x;
	struct vop_link_config c;
	struct vop_pipe_config dev = t_pipe_cfg(200, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);
	struct vop_pipe_stats s;
	int round;

	t_pair_open(&p, "teardown", 4u << 20, 20000);
	t_pair_run_pipe(&p, 5, 128, 200);
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 5) > 50000, 10000));
	for (round = 0; round < 3; round++) {
		/* Kill the device side under load. */
		vop_link_destroy(p.l1);
		vop_window_close(p.w1);
		p.l1 = NULL;
		p.w1 = NULL;
		CHECK(T_WAIT_UNTIL(t_evlog_has(&p.ev0, VOP_EV_PEER_GONE, -1, NULL), 2000));
		/* A new incarnation attaches. */
		CHECK_EQ(vop_shm_open(p.path, &x), 0);
		CHECK_EQ(vop_window_attach(x, &p.w1), 0);
		CHECK_EQ(p.w1->epoch, (uint32_t)round + 2);
		memset(&c, 0, sizeof(c));
		c.spin_ns = 20000;
		c.on_event = t_on_event;
		c.ctx = &p.ev1;
		CHECK_EQ(vop_link_create(p.w1, &c, &p.l1), 0);
		CHECK_EQ(vop_link_attach_pipe(p.l1, 5, VOP_ROLE_DEVICE, &dev), 0);
		CHECK_EQ(vop_link_start(p.l1), 0);
		CHECK(T_WAIT_UNTIL(t_evlog_has(&p.ev0, VOP_EV_PEER_RESET, -1, NULL), 2000));
		if (!T_WAIT_UNTIL(t_rx(p.l0, 5) > 20000 && t_rx(p.l1, 5) > 20000, 10000)) {
			struct vop_pipe_stats s1;

			vop_link_pipe_stats(p.l0, 5, &s);
			vop_link_pipe_stats(p.l1, 5, &s1);
			fprintf(stderr, "round %d drv state %llu rx %llu tx %llu; dev state %llu rx %llu tx %llu\n",
				round, (unsigned long long)s.state, (unsigned long long)s.rx_msgs,
				(unsigned long long)s.tx_msgs, (unsigned long long)s1.state,
				(unsigned long long)s1.rx_msgs, (unsigned long long)s1.tx_msgs);
			t_evlog_dump(&p.ev0, "drv");
			t_evlog_dump(&p.ev1, "dev");
			return T_FAIL;
		}
		CHECK_EQ(vop_link_pipe_stats(p.l0, 5, &s), 0);
		CHECK_EQ(s.bad_msgs, 0);
		CHECK_EQ(s.state, VOP_DEVRUN_RUNNING);
		pthread_mutex_lock(&p.ev0.mu);
		p.ev0.n = 0; /* fresh log for the next round */
		pthread_mutex_unlock(&p.ev0.mu);
	}
	CHECK(!t_evlog_has(&p.ev1, VOP_EV_QUEUE_BROKEN, -1, NULL));
	/* Destroy both sides while data is moving. */
	t_pair_close(&p);
	return T_PASS;
}
