/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: A buffer points at the rings, outside the data area (D10). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_desc(&h, 0, h.info.queues[0].desc_off, 64, 0, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_ADDR_RANGE);
	hostile_close(&h);
	return T_PASS;
}
