/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Node-API binding for the vop data plane. This layer only converts
 * arguments, owns handles and forwards events; all ring logic lives in
 * native/core. The export table below is mirrored, in the same order, by
 * agent/src/native/native.ts.
 */
#include <stdlib.h>

#include "napi_util.h"
#include "vop/version.h"
#include "vop/vq.h"
#include "window_binding.h"
#include "devices_binding.h"

static napi_value version(napi_env env, napi_callback_info info)
{
	napi_value result;
	(void)info;
	NODE_API_CALL(env, napi_create_string_utf8(env, vop_version_string(), NAPI_AUTO_LENGTH, &result));
	return result;
}

/* setErrorClass(ctor): native errors are thrown as `new ctor(message, code, errno)`. */
static napi_value set_error_class(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1], u;
	napi_valuetype t;
	struct vop_addon *a = NULL;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	NODE_API_CALL(env, napi_get_instance_data(env, (void **)&a));
	if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function || !a) {
		napi_throw_type_error(env, "EINVAL", "setErrorClass expects a constructor");
		return NULL;
	}
	if (a->error_ctor)
		napi_delete_reference(env, a->error_ctor);
	a->error_ctor = NULL;
	NODE_API_CALL(env, napi_create_reference(env, argv[0], 1, &a->error_ctor));
	NODE_API_CALL(env, napi_get_undefined(env, &u));
	return u;
}

/* reasonNames(): stable names of enum vop_vq_reason, index = reason number. */
static napi_value reason_names(napi_env env, napi_callback_info info)
{
	napi_value arr, s;
	unsigned i;

	(void)info;
	NODE_API_CALL(env, napi_create_array_with_length(env, VOP_VQ_REASON_COUNT, &arr));
	for (i = 0; i < VOP_VQ_REASON_COUNT; i++) {
		NODE_API_CALL(env, napi_create_string_utf8(env, vop_vq_reason_name(i), NAPI_AUTO_LENGTH, &s));
		NODE_API_CALL(env, napi_set_element(env, arr, i, s));
	}
	return arr;
}

static void addon_free(napi_env env, void *data, void *hint)
{
	struct vop_addon *a = data;

	(void)hint;
	if (a->error_ctor)
		napi_delete_reference(env, a->error_ctor);
	free(a);
}

#define EXPORT(name, fn) { name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL }

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */)
{
	struct vop_addon *a = calloc(1, sizeof(*a));
	napi_property_descriptor props[] = {
		EXPORT("version", version),
		EXPORT("setErrorClass", set_error_class),
		EXPORT("reasonNames", reason_names),
		EXPORT("windowCreate", vop_b_window_create),
		EXPORT("windowAttach", vop_b_window_attach),
		EXPORT("windowAttachFd", vop_b_window_attach_fd),
		EXPORT("windowReattach", vop_b_window_reattach),
		EXPORT("windowInfo", vop_b_window_info),
		EXPORT("windowClose", vop_b_window_close),
		EXPORT("devicePublish", vop_b_device_publish),
		EXPORT("deviceRemove", vop_b_device_remove),
		EXPORT("attachPipe", vop_b_attach_pipe),
		EXPORT("detach", vop_b_detach),
		EXPORT("resetDevice", vop_b_reset_device),
		EXPORT("start", vop_b_start),
		EXPORT("stop", vop_b_stop),
		EXPORT("queueStats", vop_b_queue_stats),
		EXPORT("pipeStats", vop_b_pipe_stats),
		EXPORT("linkStats", vop_b_link_stats),
		EXPORT("onEvent", vop_b_on_event),
		EXPORT("hostedSpec", vop_b_hosted_spec),
		EXPORT("hostedPublish", vop_b_hosted_publish),
		EXPORT("hostedAttach", vop_b_hosted_attach),
		EXPORT("hostedEndpoints", vop_b_hosted_endpoints),
		EXPORT("hostedStats", vop_b_hosted_stats),
		EXPORT("devState", vop_b_dev_state),
		EXPORT("hostedConsoleRead", vop_b_hosted_console_read),
		EXPORT("hostedConsoleWrite", vop_b_hosted_console_write),
		EXPORT("devHostOpen", vop_b_dev_host_open),
		EXPORT("devHostEndpoints", vop_b_dev_host_endpoints),
		EXPORT("devHostStats", vop_b_dev_host_stats),
		EXPORT("devHostQueueStats", vop_b_dev_host_queue_stats),
		EXPORT("devConsoleRead", vop_b_dev_console_read),
		EXPORT("devConsoleWrite", vop_b_dev_console_write),
		EXPORT("devHostClose", vop_b_dev_host_close),
	};

	if (!a) {
		napi_throw_error(env, "ENOMEM", "vop addon state");
		return NULL;
	}
	NODE_API_CALL(env, napi_set_instance_data(env, a, addon_free, NULL));
	NODE_API_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
	return exports;
}
