/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Node-API binding for the vop data plane. This layer only converts
 * arguments, owns handles and forwards events; all ring logic lives in
 * native/core and native/devices. The export table below is mirrored, in the
 * same order, by agent/src/native/native.ts (the one declare-only contract).
 * Only what the agent uses is exported: tests drive the same functions.
 */
#include <stdlib.h>

#include "link_binding.h"
#include "napi_util.h"
#include "vop/dev_backend.h"
#include "vop/path.h"
#include "vop/version.h"
#include "vop/vq.h"
#include "vop/window_size.h"

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

/*
 * constants() -> the limits and tables of the C layer the façade needs, exported once
 * (TypeScript repeats none of them): { queueMaxSize, defaultQueueSize, maxDevices,
 * maxQueues, pathMax, netnsNameMax, windowSizeMax, blkLatencyBoundsNs }.
 */
static napi_value constants(napi_env env, napi_callback_info info)
{
	napi_value obj, bounds;

	(void)info;
	NODE_API_CALL(env, napi_create_object(env, &obj));
	bounds = vop_u64_array(env, vop_blk_lat_bounds_ns, VOP_BLK_LAT_BOUNDS);
	if (!bounds || !vop_set_u32(env, obj, "queueMaxSize", VOP_QUEUE_MAX_SIZE) ||
	    !vop_set_u32(env, obj, "defaultQueueSize", VOP_DEVBACK_QUEUE_SIZE) ||
	    !vop_set_u32(env, obj, "maxDevices", VOP_MAX_DEVICES) || !vop_set_u32(env, obj, "maxQueues", VOP_MAX_QUEUES) ||
	    !vop_set_u32(env, obj, "pathMax", VOP_PATH_MAX) || !vop_set_u32(env, obj, "netnsNameMax", VOP_NETNS_NAME_MAX))
		return NULL;
	NODE_API_CALL(env, napi_set_named_property(env, obj, "blkLatencyBoundsNs", bounds));
	{
		napi_value v;

		NODE_API_CALL(env, napi_create_double(env, (double)VOP_WINDOW_SIZE_MAX, &v));
		NODE_API_CALL(env, napi_set_named_property(env, obj, "windowSizeMax", v));
	}
	return obj;
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
		EXPORT("constants", constants),
		EXPORT("windowCreate", vop_b_window_create),
		EXPORT("windowAttach", vop_b_window_attach),
		EXPORT("windowReattach", vop_b_window_reattach),
		EXPORT("windowInfo", vop_b_window_info),
		EXPORT("windowClose", vop_b_window_close),
		EXPORT("windowLayout", vop_b_window_layout),
		EXPORT("start", vop_b_start),
		EXPORT("stop", vop_b_stop),
		EXPORT("onEvent", vop_b_on_event),
		EXPORT("linkStats", vop_b_link_stats),
		EXPORT("devicePublish", vop_b_device_publish),
		EXPORT("deviceRemove", vop_b_device_remove),
		EXPORT("deviceAttach", vop_b_device_attach),
		EXPORT("deviceDetach", vop_b_device_detach),
		EXPORT("deviceReset", vop_b_device_reset),
		EXPORT("deviceState", vop_b_device_state),
		EXPORT("deviceInfo", vop_b_device_info),
		EXPORT("queueStats", vop_b_queue_stats),
		EXPORT("deviceCounters", vop_b_device_counters),
		EXPORT("deviceEndpoints", vop_b_device_endpoints),
		EXPORT("consoleRead", vop_b_console_read),
		EXPORT("consoleWrite", vop_b_console_write),
		EXPORT("vhostOpen", vop_b_vhost_open),
		EXPORT("vhostClose", vop_b_vhost_close),
		EXPORT("vhostStatus", vop_b_vhost_status),
		EXPORT("vhostQueueStats", vop_b_vhost_queue_stats),
		EXPORT("vhostCounters", vop_b_vhost_counters),
		EXPORT("vhostEndpoints", vop_b_vhost_endpoints),
	};


	if (!a) {
		napi_throw_error(env, "ENOMEM", "vop addon state");
		return NULL;
	}
	NODE_API_CALL(env, napi_set_instance_data(env, a, addon_free, NULL));
	NODE_API_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
	return exports;
}
