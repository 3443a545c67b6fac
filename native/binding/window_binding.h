/* SPDX-License-Identifier: Apache-2.0 */
/* Exported callbacks of window.c, registered by addon.c (same order as native.ts). */
#ifndef VOP_BINDING_WINDOW_H
#define VOP_BINDING_WINDOW_H

#include <node_api.h>

napi_value vop_b_window_create(napi_env env, napi_callback_info info);
napi_value vop_b_window_attach(napi_env env, napi_callback_info info);
napi_value vop_b_window_attach_fd(napi_env env, napi_callback_info info);
napi_value vop_b_window_reattach(napi_env env, napi_callback_info info);
napi_value vop_b_window_info(napi_env env, napi_callback_info info);
napi_value vop_b_window_close(napi_env env, napi_callback_info info);
napi_value vop_b_device_publish(napi_env env, napi_callback_info info);
napi_value vop_b_device_remove(napi_env env, napi_callback_info info);
napi_value vop_b_attach_pipe(napi_env env, napi_callback_info info);
napi_value vop_b_detach(napi_env env, napi_callback_info info);
napi_value vop_b_reset_device(napi_env env, napi_callback_info info);
napi_value vop_b_start(napi_env env, napi_callback_info info);
napi_value vop_b_stop(napi_env env, napi_callback_info info);
napi_value vop_b_queue_stats(napi_env env, napi_callback_info info);
napi_value vop_b_pipe_stats(napi_env env, napi_callback_info info);
napi_value vop_b_link_stats(napi_env env, napi_callback_info info);
napi_value vop_b_on_event(napi_env env, napi_callback_info info);
napi_value vop_b_hosted_spec(napi_env env, napi_callback_info info);
napi_value vop_b_hosted_publish(napi_env env, napi_callback_info info);
napi_value vop_b_hosted_attach(napi_env env, napi_callback_info info);
napi_value vop_b_hosted_endpoints(napi_env env, napi_callback_info info);
napi_value vop_b_hosted_stats(napi_env env, napi_callback_info info);
napi_value vop_b_dev_state(napi_env env, napi_callback_info info);
napi_value vop_b_hosted_console_read(napi_env env, napi_callback_info info);
napi_value vop_b_hosted_console_write(napi_env env, napi_callback_info info);

#endif /* VOP_BINDING_WINDOW_H */
