/* SPDX-License-Identifier: Apache-2.0 */
#include "vop/version.h"

#define VOP_STR2(x) #x
#define VOP_STR(x) VOP_STR2(x)

const char *vop_version_string(void)
{
	return VOP_STR(VOP_NATIVE_VERSION_MAJOR) "." VOP_STR(VOP_NATIVE_VERSION_MINOR) "." VOP_STR(
		VOP_NATIVE_VERSION_PATCH);
}
