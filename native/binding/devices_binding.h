/* SPDX-License-Identifier: Apache-2.0 */
/* Exported callbacks of devices.c (device backends), registered by addon.c. */
#ifndef VOP_BINDING_DEVICES_H
#define VOP_BINDING_DEVICES_H

#include <node_api.h>

napi_value vop_b_dev_host_open(napi_env env, napi_callback_info info);
napi_value vop_b_dev_host_endpoints(napi_env env, napi_callback_info info);
napi_value vop_b_dev_host_stats(napi_env env, napi_callback_info info);
napi_value vop_b_dev_host_queue_stats(napi_env env, napi_callback_info info);
napi_value vop_b_dev_console_read(napi_env env, napi_callback_info info);
napi_value vop_b_dev_console_write(napi_env env, napi_callback_info info);
napi_value vop_b_dev_host_close(napi_env env, napi_callback_info info);

struct vop_console;

/* Shared by device-host and window handles: one console stream read / write. */
napi_value vop_b_console_read(napi_env env, struct vop_console *c, uint32_t reader, uint32_t max);
napi_value vop_b_console_write(napi_env env, struct vop_console *c, napi_value data);

#endif /* VOP_BINDING_DEVICES_H */
