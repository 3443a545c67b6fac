/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: A zero-length buffer (CVE-2020-10725 class). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_desc(&h, 0, h.pool_peer + 16384, 0, 0, 0);
	h_post(&h, 0, 0);
	}
	hostile_expect(&h, VOP_VQ_ZERO_LEN);
	hostile_close(&h);
	return T_PASS;
}
