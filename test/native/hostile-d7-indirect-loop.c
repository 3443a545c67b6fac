/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: A loop inside an indirect table is bounded by the table's own size (D7). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	struct vop_vring_desc *t = (struct vop_vring_desc *)(void *)h.pool;
	unsigned i;

	for (i = 0; i < 4; i++)
		h_ind(t, (uint16_t)i, h.pool_peer + 16384, 64, VOP_VRING_DESC_F_NEXT, (uint16_t)((i + 1) % 4));
	h_desc(&h, 0, h.pool_peer, 4 * 16, VOP_VRING_DESC_F_INDIRECT, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_CHAIN_LOOP);
	hostile_close(&h);
	return T_PASS;
}
