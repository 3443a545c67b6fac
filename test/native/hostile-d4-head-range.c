/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile driver: The driver makes a head >= ring size available (D4). */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	{
	h_post(&h, H_QSIZE, 0);
	}
	hostile_expect(&h, VOP_VQ_HEAD_RANGE);
	hostile_close(&h);
	return T_PASS;
}
