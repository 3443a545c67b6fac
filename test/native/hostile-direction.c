/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: The device's transmit queue gets a device-writable buffer. */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_desc(&h, 0, h.pool_peer + 16384, 64, VOP_VRING_DESC_F_WRITE, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_DIRECTION);
	hostile_close(&h);
	return T_PASS;
}
