/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hostile table owner: a queue size that is not a power of two (D1), and
 * ring offsets outside the ring area, are refused at attach with -EPROTO;
 * the healthy link keeps moving.
 */
#include "hostile.h"

int main(void)
{
	struct hostile h;
	struct vop_link_config c;
	struct vop_link *l;
	struct vop_pipe_config pc = t_pipe_cfg(64, VOP_PIPE_SINK, VOP_PIPE_OFF, 0);
	struct vop_dev_entry *e;
	uint64_t before;

	memset(&h, 0, sizeof(h));
	h_open_window_b(&h, 0, &c);
	e = h.info.entry;
	CHECK_EQ(vop_link_create(h.w1, &c, &l), 0);
	e->queues[0].size = 3;
	CHECK_EQ(vop_link_attach_pipe(l, H_DEV, VOP_ROLE_DEVICE, &pc), -EPROTO);
	e->queues[0].size = 0;
	CHECK_EQ(vop_link_attach_pipe(l, H_DEV, VOP_ROLE_DEVICE, &pc), -EPROTO);
	e->queues[0].size = H_QSIZE;
	e->queues[1].used_off = h.w0->data_off; /* outside the ring area */
	CHECK_EQ(vop_link_attach_pipe(l, H_DEV, VOP_ROLE_DEVICE, &pc), -EPROTO);
	e->queues[1].used_off = UINT64_MAX - 8; /* wraps */
	CHECK_EQ(vop_link_attach_pipe(l, H_DEV, VOP_ROLE_DEVICE, &pc), -EPROTO);
	before = t_rx(h.good.l1, 1);
	CHECK(T_WAIT_UNTIL(t_rx(h.good.l1, 1) > before + 1000, 5000));
	vop_link_destroy(l);
	h.real = NULL;
	hostile_close(&h);
	return T_PASS;
}
