/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: INDIRECT is used although the feature was not accepted (D8). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX));
	{
	struct vop_vring_desc *t = (struct vop_vring_desc *)(void *)h.pool;

	h_ind(t, 0, h.pool_peer + 16384, 64, 0, 0);
	h_desc(&h, 0, h.pool_peer, 16, VOP_VRING_DESC_F_INDIRECT, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_INDIRECT_NOT_NEGOTIATED);
	hostile_close(&h);
	return T_PASS;
}
