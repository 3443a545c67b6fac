/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile device: The device moves used->idx past the chains in flight. */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_driver(&h);
	h_used(&h, 0, 0, 10);
	hostile_expect(&h, VOP_VQ_USED_IDX_JUMP);
	hostile_close(&h);
	return T_PASS;
}
