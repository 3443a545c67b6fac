/* SPDX-License-Identifier: Apache-2.0 */
/* Hostile device: The device returns an id that is not an in-flight head. */
#include "hostile.h"

int main(void)
{
	struct hostile h;

	hostile_open_driver(&h);
	h_used(&h, 9, 0, 0);
	hostile_expect(&h, VOP_VQ_USED_ID_NOT_HEAD);
	hostile_close(&h);
	return T_PASS;
}
