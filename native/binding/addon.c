/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Node-API binding for the vop data plane. This file only converts arguments,
 * owns handles and forwards events; all ring logic lives in native/core.
 */
#include <node_api.h>

#include "vop/version.h"

#define NODE_API_CALL(env, call)                                                            \
	do {                                                                                \
		napi_status status__ = (call);                                              \
		if (status__ != napi_ok) {                                                  \
			const napi_extended_error_info *info__ = NULL;                      \
			bool pending__ = false;                                             \
			napi_get_last_error_info((env), &info__);                           \
			napi_is_exception_pending((env), &pending__);                       \
			if (!pending__)                                                     \
				napi_throw_error((env), "ERR_NAPI",                         \
						 info__ && info__->error_message            \
							 ? info__->error_message            \
							 : "Node-API call failed");         \
			return NULL;                                                        \
		}                                                                           \
	} while (0)

static napi_value version(napi_env env, napi_callback_info info)
{
	napi_value result;
	(void)info;
	NODE_API_CALL(env, napi_create_string_utf8(env, vop_version_string(), NAPI_AUTO_LENGTH, &result));
	return result;
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */)
{
	napi_property_descriptor props[] = {
		{ "version", NULL, version, NULL, NULL, NULL, napi_enumerable, NULL },
	};
	NODE_API_CALL(env, napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
	return exports;
}
