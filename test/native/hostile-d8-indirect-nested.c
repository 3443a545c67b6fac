/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: An indirect table contains another indirect descriptor (D8). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	struct vop_vring_desc *t = (struct vop_vring_desc *)(void *)h.pool;

	h_ind(t, 0, h.pool_peer + 1024, 32, VOP_VRING_DESC_F_INDIRECT, 0);
	h_desc(&h, 0, h.pool_peer, 2 * 16, VOP_VRING_DESC_F_INDIRECT, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_INDIRECT_NESTED);
	hostile_close(&h);
	return T_PASS;
}
