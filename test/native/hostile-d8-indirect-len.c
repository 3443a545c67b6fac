/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: An indirect table length is not a multiple of 16 (D8). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_desc(&h, 0, h.pool_peer, 24, VOP_VRING_DESC_F_INDIRECT, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_INDIRECT_LEN);
	hostile_close(&h);
	return T_PASS;
}
