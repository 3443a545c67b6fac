/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: The driver moves avail->idx by more than the ring size (D3). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_desc(&h, 0, h.pool_peer + 16384, 64, 0, 0);
	h_post(&h, 0, 100);
	}
	hostile_expect(&h, VOP_VQ_AVAIL_IDX_JUMP);
	hostile_close(&h);
	return T_PASS;
}
