/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Checked Node-API calls for the binding: a failing call becomes a pending
 * JS exception and an early return (never abort), as in Node's own
 * test/js-native-api/common.h. Plus the typed argument readers every
 * binding file uses: each names the property it refused
 * ("device.net.mtu must be an integer in [68, 65535], got 9").
 */
#ifndef VOP_BINDING_NAPI_UTIL_H
#define VOP_BINDING_NAPI_UTIL_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
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
#define NODE_API_OK(env, call) NODE_API_CALL_BASE(env, call, false)

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

/* TypeError / RangeError "<path>.<name> <message>" (code EINVAL), unless one is pending. */
void vop_throw_prop_type(napi_env env, const char *path, const char *name, const char *message);
void vop_throw_prop_range(napi_env env, const char *path, const char *name, const char *message);

/*
 * Property readers: obj.name, reported as "<path>.<name>". Each returns
 * false with a pending exception when the property is missing, has the
 * wrong type or is out of range (TypeError / RangeError naming it).
 */
bool vop_get_u32(napi_env env, napi_value obj, const char *path, const char *name, uint32_t min, uint32_t max,
		 uint32_t *out);
bool vop_get_i32(napi_env env, napi_value obj, const char *path, const char *name, int32_t min, int32_t max,
		 int32_t *out);
/* A number (a safe integer) or a bigint in [0, max]. */
bool vop_get_u64(napi_env env, napi_value obj, const char *path, const char *name, uint64_t max, uint64_t *out);
bool vop_get_bool(napi_env env, napi_value obj, const char *path, const char *name, bool *out);
/*
 * A string of at most len - 1 bytes into buf, no NUL inside. With nullable,
 * null is accepted and *present says which; otherwise a string is required.
 * Too long: RangeError (refused, never cut).
 */
bool vop_get_str(napi_env env, napi_value obj, const char *path, const char *name, bool nullable, char *buf,
		 size_t len, bool *present);
/* A string that must be one of names[0, n): its index in *out. */
bool vop_get_enum(napi_env env, napi_value obj, const char *path, const char *name, const char *const *names,
		  unsigned n, unsigned *out);
/* An object (or null when nullable: *out = NULL). */
bool vop_get_obj(napi_env env, napi_value obj, const char *path, const char *name, bool nullable, napi_value *out);

/* Positional arguments (reported as "<name>"). */
bool vop_value_u32(napi_env env, napi_value v, const char *name, uint32_t *out);

/* Object builders (the object is left as it was on failure; a pending exception says why). */
bool vop_set_u32(napi_env env, napi_value obj, const char *name, uint32_t v);
bool vop_set_i32(napi_env env, napi_value obj, const char *name, int32_t v);
bool vop_set_u64(napi_env env, napi_value obj, const char *name, uint64_t v); /* bigint */
bool vop_set_str(napi_env env, napi_value obj, const char *name, const char *s); /* NULL -> null */
bool vop_set_null(napi_env env, napi_value obj, const char *name);
bool vop_set_bool(napi_env env, napi_value obj, const char *name, bool v);

/* A BigUint64Array copy of v[0, n). NULL with a pending exception. */
napi_value vop_u64_array(napi_env env, const uint64_t *v, size_t n);

napi_value vop_undefined(napi_env env);

#endif /* VOP_BINDING_NAPI_UTIL_H */
