/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: addr + len wraps around 2^64 (D10, overflow-safe check). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_desc(&h, 0, UINT64_MAX - 10, 64, 0, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_ADDR_RANGE);
	hostile_close(&h);
	return T_PASS;
}
