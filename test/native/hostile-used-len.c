/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile device: The device claims to have written more than the chain's writable bytes. */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_driver(&h);
	h_used(&h, 0, 100, 0);
	hostile_expect(&h, VOP_VQ_USED_LEN);
	hostile_close(&h);
	return T_PASS;
}
