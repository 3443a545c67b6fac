/* SPDX-License-Identifier: Apache-2.0 */
#ifndef VOP_VERSION_H
#define VOP_VERSION_H

#define VOP_NATIVE_VERSION_MAJOR 0
#define VOP_NATIVE_VERSION_MINOR 1
#define VOP_NATIVE_VERSION_PATCH 0

/* Returns a static NUL-terminated "MAJOR.MINOR.PATCH" string; never NULL. */
const char *vop_version_string(void);

#endif /* VOP_VERSION_H */
