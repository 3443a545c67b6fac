/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: A device-readable descriptor follows a writable one (D9). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_desc(&h, 0, h.pool_peer + 16384, 64, VOP_VRING_DESC_F_WRITE | VOP_VRING_DESC_F_NEXT, 1);
	h_desc(&h, 1, h.pool_peer + 20480, 64, 0, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_READ_AFTER_WRITE);
	hostile_close(&h);
	return T_PASS;
}
