/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile device: The device returns a used id >= ring size. */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_driver(&h);
	h_used(&h, H_QSIZE, 0, 0);
	hostile_expect(&h, VOP_VQ_USED_ID_RANGE);
	hostile_close(&h);
	return T_PASS;
}
