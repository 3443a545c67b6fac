/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checked Node-API calls for the binding: a failing call becomes a pending
 * JS exception and an early return (never abort), as in Node's own
 * test/js-native-api/common.h.
 */
#ifndef VOP_BINDING_NAPI_UTIL_H
#define VOP_BINDING_NAPI_UTIL_H

#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

#define NODE_API_CALL_BASE(env, call, ret)                                                  \
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
			return ret;                                                         \
		}                                                                           \
	} while (0)

#define NODE_API_CALL(env, call) NODE_API_CALL_BASE(env, call, NULL)

/* Per-instance addon state (napi_set_instance_data); JS thread only. */
struct vop_addon {
	napi_ref error_ctor; /* NativeError constructor registered by the façade, or NULL */
};

/*
 * Throw the façade's NativeError(message, code, errno) (or a plain Error
 * with .code/.errno before the façade registered it) for a -errno value.
 * Never throws twice: does nothing if an exception is already pending.
 */
void vop_throw_errno(napi_env env, int neg_errno, const char *what);

/* Stable code string for -errno ("EPROTO", ..., "UNKNOWN_<n>"); buf >= 24 bytes. */
const char *vop_errno_code(int neg_errno, char *buf, unsigned len);

/* Argument helpers: return false with a pending exception on a bad value. */
bool vop_arg_u32(napi_env env, napi_value obj, const char *name, uint32_t *out);
bool vop_arg_u64(napi_env env, napi_value obj, const char *name, uint64_t *out);
bool vop_arg_bool(napi_env env, napi_value obj, const char *name, bool *out);
bool vop_value_u32(napi_env env, napi_value v, uint32_t *out);
bool vop_value_u64(napi_env env, napi_value v, uint64_t *out);

#endif /* VOP_BINDING_NAPI_UTIL_H */
