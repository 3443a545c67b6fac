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

#endif /* VOP_BINDING_DEVICES_H */
