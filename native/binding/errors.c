/* SPDX-License-Identifier: Apache-2.0 */
/* Native error -> JS error mapping and argument helpers. */
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

static bool get_prop(napi_env env, napi_value obj, const char *name, napi_value *out)
{
	bool has = false;

	if (napi_has_named_property(env, obj, name, &has) != napi_ok || !has) {
		char msg[128];

		snprintf(msg, sizeof(msg), "missing property \"%s\"", name);
		napi_throw_type_error(env, "EINVAL", msg);
		return false;
	}
	return napi_get_named_property(env, obj, name, out) == napi_ok;
}

bool vop_value_u32(napi_env env, napi_value v, uint32_t *out)
{
	double d;

	if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0 && d <= 4294967295.0) ||
	    d != (double)(uint32_t)d) {
		napi_throw_type_error(env, "EINVAL", "expected an integer in [0, 2^32)");
		return false;
	}
	*out = (uint32_t)d;
	return true;
}

bool vop_value_u64(napi_env env, napi_value v, uint64_t *out)
{
	napi_valuetype t;
	bool lossless = false;

	if (napi_typeof(env, v, &t) != napi_ok)
		return false;
	if (t == napi_bigint) {
		if (napi_get_value_bigint_uint64(env, v, out, &lossless) != napi_ok || !lossless) {
			napi_throw_range_error(env, "EINVAL", "bigint out of u64 range");
			return false;
		}
		return true;
	}
	if (t == napi_number) {
		double d;

		napi_get_value_double(env, v, &d);
		if (!(d >= 0 && d <= 9007199254740991.0) || d != (double)(uint64_t)d) {
			napi_throw_range_error(env, "EINVAL", "expected a safe non-negative integer");
			return false;
		}
		*out = (uint64_t)d;
		return true;
	}
	napi_throw_type_error(env, "EINVAL", "expected a number or bigint");
	return false;
}

bool vop_arg_u32(napi_env env, napi_value obj, const char *name, uint32_t *out)
{
	napi_value v;

	return get_prop(env, obj, name, &v) && vop_value_u32(env, v, out);
}

bool vop_arg_u64(napi_env env, napi_value obj, const char *name, uint64_t *out)
{
	napi_value v;

	return get_prop(env, obj, name, &v) && vop_value_u64(env, v, out);
}

bool vop_arg_bool(napi_env env, napi_value obj, const char *name, bool *out)
{
	napi_value v;

	if (!get_prop(env, obj, name, &v))
		return false;
	if (napi_get_value_bool(env, v, out) != napi_ok) {
		napi_throw_type_error(env, "EINVAL", "expected a boolean");
		return false;
	}
	return true;
}
