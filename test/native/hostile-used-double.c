/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile device: The device completes the same head twice. */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_driver(&h);
	h_used(&h, 0, 0, 0);
	h_used(&h, 0, 0, 0);
	hostile_expect(&h, VOP_VQ_USED_ID_NOT_HEAD);
	hostile_close(&h);
	return T_PASS;
}
