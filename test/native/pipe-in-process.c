/* SPDX-License-Identifier: Apache-2.0 */
/* A byte pipe between two link sides in one process moves verified data both ways. */
#include "helpers.h"

int main(void)
{
	struct t_pair p;
	struct vop_pipe_stats s0, s1;

	t_pair_open(&p, "inproc", 4u << 20, 20000);
	t_pair_run_pipe(&p, 7, 256, 64);
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 7) > 200000 && t_rx(p.l1, 7) > 200000, 30000));
	CHECK_EQ(vop_link_pipe_stats(p.l0, 7, &s0), 0);
	CHECK_EQ(vop_link_pipe_stats(p.l1, 7, &s1), 0);
	CHECK_EQ(s0.bad_msgs, 0);
	CHECK_EQ(s1.bad_msgs, 0);
	CHECK_EQ(s0.state, VOP_DEVRUN_RUNNING);
	CHECK_EQ(s1.state, VOP_DEVRUN_RUNNING);
	CHECK(!t_evlog_has(&p.ev0, VOP_EV_QUEUE_BROKEN, -1, NULL));
	CHECK(!t_evlog_has(&p.ev1, VOP_EV_QUEUE_BROKEN, -1, NULL));
	t_pair_close(&p);
	return T_PASS;
}
