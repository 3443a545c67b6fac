/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: A chain has more descriptors than the device accepts (D11). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	struct vop_vring_desc *t = (struct vop_vring_desc *)(void *)h.pool;
	unsigned i;

	for (i = 0; i < 65; i++)
		h_ind(t, (uint16_t)i, h.pool_peer + 16384 + i, 1, i < 64 ? VOP_VRING_DESC_F_NEXT : 0, (uint16_t)(i + 1));
	h_desc(&h, 0, h.pool_peer, 65 * 16, VOP_VRING_DESC_F_INDIRECT, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_CHAIN_TOO_LONG);
	hostile_close(&h);
	return T_PASS;
}
