/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Native error -> JS error mapping (the one errno name table: every code a
 * NativeError or a backend-failed event carries comes from here), the typed
 * property readers and the object builders of napi_util.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "napi_util.h"

static const struct {
	int err;
	const char *code;
} codes[] = {
	{ EINVAL, "EINVAL" },   { ENOENT, "ENOENT" },     { EEXIST, "EEXIST" },
	{ ENOSPC, "ENOSPC" },   { EPROTO, "EPROTO" },     { EIO, "EIO" },
	{ ELOOP, "ELOOP" },     { EFAULT, "EFAULT" },     { EAGAIN, "EAGAIN" },
	{ EPERM, "EPERM" },     { ENOMEM, "ENOMEM" },     { EALREADY, "EALREADY" },
	{ ETIMEDOUT, "ETIMEDOUT" }, { ENAMETOOLONG, "ENAMETOOLONG" }, { EBUSY, "EBUSY" },
	{ EACCES, "EACCES" },   { EBADF, "EBADF" },       { EMFILE, "EMFILE" },
	/* host path policy (vop/path.h) */
	{ EXDEV, "EXDEV" },     { EADDRINUSE, "EADDRINUSE" }, { ENOTDIR, "ENOTDIR" },
	{ ENOLINK, "ENOLINK" },
	/* device backends */
	{ ENODEV, "ENODEV" },   { EPIPE, "EPIPE" },       { ENOTCONN, "ENOTCONN" },
	{ ENAMETOOLONG, "ENAMETOOLONG" }, { ECONNRESET, "ECONNRESET" }, { EFBIG, "EFBIG" },
	{ ESHUTDOWN, "ESHUTDOWN" }, { EINPROGRESS, "EINPROGRESS" }, { ECANCELED, "ECANCELED" },
};

const char *vop_errno_code(int neg_errno, char *buf, unsigned len)
{
	unsigned i;
	int e = neg_errno < 0 ? -neg_errno : neg_errno;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (codes[i].err == e)
			return codes[i].code;
	snprintf(buf, len, "UNKNOWN_%d", e);
	return buf;
}

void vop_throw_errno(napi_env env, int neg_errno, const char *what)
{
	struct vop_addon *a = NULL;
	bool pending = false;
	char buf[24], msg[256];
	const char *code = vop_errno_code(neg_errno, buf, sizeof(buf));
	napi_value ctor = NULL, argv[3], err, errno_v, code_v;

	if (napi_is_exception_pending(env, &pending) != napi_ok || pending)
		return;
	snprintf(msg, sizeof(msg), "%s: %s (%s)", what, strerror(neg_errno < 0 ? -neg_errno : neg_errno),
		 code);
	if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &argv[0]) != napi_ok ||
	    napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v) != napi_ok ||
	    napi_create_int32(env, neg_errno < 0 ? -neg_errno : neg_errno, &errno_v) != napi_ok)
		goto fallback;
	argv[1] = code_v;
	argv[2] = errno_v;
	napi_get_instance_data(env, (void **)&a);
	if (a && a->error_ctor && napi_get_reference_value(env, a->error_ctor, &ctor) == napi_ok &&
	    ctor && napi_new_instance(env, ctor, 3, argv, &err) == napi_ok) {
		napi_throw(env, err);
		return;
	}
	if (napi_create_error(env, code_v, argv[0], &err) != napi_ok)
		goto fallback;
	napi_set_named_property(env, err, "errno", errno_v);
	napi_throw(env, err);
	return;
fallback:
	napi_throw_error(env, code, what);
}


static void throw_prop(napi_env env, bool range, const char *path, const char *name, const char *message)
{
	bool pending = false;
	char msg[320];

	if (napi_is_exception_pending(env, &pending) != napi_ok || pending)
		return;
	snprintf(msg, sizeof(msg), "%s%s%s %s", path ? path : "", path && path[0] ? "." : "", name, message);
	if (range)
		napi_throw_range_error(env, "EINVAL", msg);
	else
		napi_throw_type_error(env, "EINVAL", msg);
}

void vop_throw_prop_type(napi_env env, const char *path, const char *name, const char *message)
{
	throw_prop(env, false, path, name, message);
}

void vop_throw_prop_range(napi_env env, const char *path, const char *name, const char *message)
{
	throw_prop(env, true, path, name, message);
}

/* obj.name (present, maybe undefined/null) and its type. */
static bool prop(napi_env env, napi_value obj, const char *path, const char *name, napi_value *v, napi_valuetype *t)
{
	bool has = false;
	napi_valuetype ot;

	if (napi_typeof(env, obj, &ot) != napi_ok || (ot != napi_object && ot != napi_function)) {
		vop_throw_prop_type(env, NULL, path && path[0] ? path : "argument", "must be an object");
		return false;
	}
	if (napi_has_named_property(env, obj, name, &has) != napi_ok || !has) {
		vop_throw_prop_type(env, path, name, "is missing");
		return false;
	}
	return napi_get_named_property(env, obj, name, v) == napi_ok && napi_typeof(env, *v, t) == napi_ok;
}

static bool integer(napi_env env, napi_value v, napi_valuetype t, double *d)
{
	return t == napi_number && napi_get_value_double(env, v, d) == napi_ok && *d == (double)(int64_t)*d &&
	       *d >= -9007199254740991.0 && *d <= 9007199254740991.0;
}

bool vop_get_u32(napi_env env, napi_value obj, const char *path, const char *name, uint32_t min, uint32_t max,
		 uint32_t *out)
{
	napi_value v;
	napi_valuetype t;
	double d;
	char msg[96];

	if (!prop(env, obj, path, name, &v, &t))
		return false;
	if (!integer(env, v, t, &d)) {
		vop_throw_prop_type(env, path, name, "must be an integer");
		return false;
	}
	if (d < (double)min || d > (double)max) {
		snprintf(msg, sizeof(msg), "must be in [%u, %u], got %.0f", min, max, d);
		vop_throw_prop_range(env, path, name, msg);
		return false;
	}
	*out = (uint32_t)d;
	return true;
}

bool vop_get_i32(napi_env env, napi_value obj, const char *path, const char *name, int32_t min, int32_t max,
		 int32_t *out)
{
	napi_value v;
	napi_valuetype t;
	double d;
	char msg[96];

	if (!prop(env, obj, path, name, &v, &t))
		return false;
	if (!integer(env, v, t, &d)) {
		vop_throw_prop_type(env, path, name, "must be an integer");
		return false;
	}
	if (d < (double)min || d > (double)max) {
		snprintf(msg, sizeof(msg), "must be in [%d, %d], got %.0f", min, max, d);
		vop_throw_prop_range(env, path, name, msg);
		return false;
	}
	*out = (int32_t)d;
	return true;
}

bool vop_get_u64(napi_env env, napi_value obj, const char *path, const char *name, uint64_t max, uint64_t *out)
{
	napi_value v;
	napi_valuetype t;
	bool lossless = false;
	double d;
	char msg[96];

	if (!prop(env, obj, path, name, &v, &t))
		return false;
	if (t == napi_bigint) {
		if (napi_get_value_bigint_uint64(env, v, out, &lossless) != napi_ok || !lossless) {
			vop_throw_prop_range(env, path, name, "must be a non-negative 64-bit integer");
			return false;
		}
	} else if (integer(env, v, t, &d) && d >= 0) {
		*out = (uint64_t)d;
	} else {
		vop_throw_prop_type(env, path, name, "must be a non-negative integer or bigint");
		return false;
	}
	if (*out > max) {
		snprintf(msg, sizeof(msg), "must be at most %llu", (unsigned long long)max);
		vop_throw_prop_range(env, path, name, msg);
		return false;
	}
	return true;
}

bool vop_get_bool(napi_env env, napi_value obj, const char *path, const char *name, bool *out)
{
	napi_value v;
	napi_valuetype t;

	if (!prop(env, obj, path, name, &v, &t))
		return false;
	if (t != napi_boolean || napi_get_value_bool(env, v, out) != napi_ok) {
		vop_throw_prop_type(env, path, name, "must be a boolean");
		return false;
	}
	return true;
}

bool vop_get_str(napi_env env, napi_value obj, const char *path, const char *name, bool nullable, char *buf,
		 size_t len, bool *present)
{
	napi_value v;
	napi_valuetype t;
	size_t n = 0, got = 0;
	char msg[96];

	if (present)
		*present = false;
	buf[0] = 0;
	if (!prop(env, obj, path, name, &v, &t))
		return false;
	if (t == napi_null && nullable)
		return true;
	if (t != napi_string) {
		vop_throw_prop_type(env, path, name, nullable ? "must be a string or null" : "must be a string");
		return false;
	}
	if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok)
		return false;
	if (n >= len) {
		snprintf(msg, sizeof(msg), "must be at most %zu bytes, got %zu", len - 1, n);
		vop_throw_prop_range(env, path, name, msg);
		return false;
	}
	if (napi_get_value_string_utf8(env, v, buf, len, &got) != napi_ok)
		return false;
	if (strlen(buf) != got) {
		vop_throw_prop_type(env, path, name, "must not contain NUL");
		return false;
	}
	if (present)
		*present = true;
	return true;
}

bool vop_get_enum(napi_env env, napi_value obj, const char *path, const char *name, const char *const *names,
		  unsigned n, unsigned *out)
{
	char buf[32], msg[200];
	size_t o;
	unsigned i;

	if (!vop_get_str(env, obj, path, name, false, buf, sizeof(buf), NULL))
		return false;
	for (i = 0; i < n; i++)
		if (!strcmp(buf, names[i])) {
			*out = i;
			return true;
		}
	o = (size_t)snprintf(msg, sizeof(msg), "must be one of");
	for (i = 0; i < n && o < sizeof(msg); i++)
		o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%s '%s'", i ? "," : "", names[i]);
	vop_throw_prop_range(env, path, name, msg);
	return false;
}

bool vop_get_obj(napi_env env, napi_value obj, const char *path, const char *name, bool nullable, napi_value *out)
{
	napi_valuetype t;

	*out = NULL;
	if (!prop(env, obj, path, name, out, &t))
		return false;
	if (t == napi_null && nullable) {
		*out = NULL;
		return true;
	}
	if (t != napi_object) {
		vop_throw_prop_type(env, path, name, nullable ? "must be an object or null" : "must be an object");
		return false;
	}
	return true;
}

bool vop_value_u32(napi_env env, napi_value v, const char *name, uint32_t *out)
{
	napi_valuetype t;
	double d;

	if (napi_typeof(env, v, &t) != napi_ok || !integer(env, v, t, &d)) {
		vop_throw_prop_type(env, NULL, name, "must be an integer");
		return false;
	}
	if (d < 0 || d > 4294967295.0) {
		vop_throw_prop_range(env, NULL, name, "must be in [0, 2^32)");
		return false;
	}
	*out = (uint32_t)d;
	return true;
}

bool vop_set_u32(napi_env env, napi_value obj, const char *name, uint32_t v)
{
	napi_value x;

	return napi_create_uint32(env, v, &x) == napi_ok && napi_set_named_property(env, obj, name, x) == napi_ok;
}

bool vop_set_i32(napi_env env, napi_value obj, const char *name, int32_t v)
{
	napi_value x;

	return napi_create_int32(env, v, &x) == napi_ok && napi_set_named_property(env, obj, name, x) == napi_ok;
}

bool vop_set_u64(napi_env env, napi_value obj, const char *name, uint64_t v)
{
	napi_value x;

	return napi_create_bigint_uint64(env, v, &x) == napi_ok &&
	       napi_set_named_property(env, obj, name, x) == napi_ok;
}

bool vop_set_str(napi_env env, napi_value obj, const char *name, const char *s)
{
	napi_value x;

	if (!s)
		return vop_set_null(env, obj, name);
	return napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &x) == napi_ok &&
	       napi_set_named_property(env, obj, name, x) == napi_ok;
}

bool vop_set_null(napi_env env, napi_value obj, const char *name)
{
	napi_value x;

	return napi_get_null(env, &x) == napi_ok && napi_set_named_property(env, obj, name, x) == napi_ok;
}

bool vop_set_bool(napi_env env, napi_value obj, const char *name, bool v)
{
	napi_value x;

	return napi_get_boolean(env, v, &x) == napi_ok && napi_set_named_property(env, obj, name, x) == napi_ok;
}

napi_value vop_u64_array(napi_env env, const uint64_t *v, size_t n)
{
	napi_value ab, arr;
	void *data;

	NODE_API_CALL(env, napi_create_arraybuffer(env, n * 8, &data, &ab));
	if (n)
		memcpy(data, v, n * 8);
	NODE_API_CALL(env, napi_create_typedarray(env, napi_biguint64_array, n, ab, 0, &arr));
	return arr;
}

napi_value vop_undefined(napi_env env)
{
	napi_value u;

	NODE_API_CALL(env, napi_get_undefined(env, &u));
	return u;
}
