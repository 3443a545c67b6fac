/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: The sum of a chain's lengths exceeds the device's bound (D11). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_desc(&h, 0, h.pool_peer + 16384, 40000, VOP_VRING_DESC_F_NEXT, 1);
	h_desc(&h, 1, h.pool_peer + 16384, 40000, 0, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_CHAIN_TOTAL_LEN);
	hostile_close(&h);
	return T_PASS;
}
