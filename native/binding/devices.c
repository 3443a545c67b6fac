/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device-host handles for JavaScript (native/devices/dev_host.c): open a
 * window side with its device backends (async: attaching and waiting for the
 * peer's config may take seconds), read endpoints and counters, the console
 * stream, close. Converts arguments and owns the handle; no device logic.
 *
 * Ownership: struct bhost is freed by the wrap finalizer only; the native
 * host inside is closed by devHostClose(), the finalizer or the env cleanup
 * hook, whichever comes first. The async open work owns its request until
 * complete() hands the host to a new handle (or closes it on error).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "devices_binding.h"
#include "napi_util.h"
#include "vop/dev_host.h"

struct bhost {
	struct vop_dev_host *h; /* JS thread; NULL after close */
	napi_env env;
	bool hook;              /* env cleanup hook registered */
};

static const napi_type_tag bhost_tag = { 0x766f702d64657668ull, 0x6f73742d68616e64ull };

static void host_close(struct bhost *b)
{
	if (b->h) {
		vop_dev_host_close(b->h);
		b->h = NULL;
	}
}

static void cleanup_hook(void *arg)
{
	host_close(arg);
}

static void host_finalize(napi_env env, void *data, void *hint)
{
	struct bhost *b = data;

	(void)env;
	(void)hint;
	if (b->hook)
		napi_remove_env_cleanup_hook(b->env, cleanup_hook, b);
	host_close(b);
	free(b);
}

static struct bhost *unwrap(napi_env env, napi_value v)
{
	bool ok = false;
	struct bhost *b = NULL;

	if (napi_check_object_type_tag(env, v, &bhost_tag, &ok) != napi_ok || !ok ||
	    napi_unwrap(env, v, (void **)&b) != napi_ok || !b) {
		napi_throw_type_error(env, "EINVAL", "expected a device host handle");
		return NULL;
	}
	if (!b->h) {
		vop_throw_errno(env, -EBADF, "device host is closed");
		return NULL;
	}
	return b;
}

/* ---- devHostOpen(opts): Promise<handle> ---- */

struct open_req {
	char path[4096];
	uint64_t create_bytes, spin_ns;
	struct vop_dev_host_dev devs[VOP_DEV_HOST_MAX];
	char desc[VOP_DEV_HOST_MAX][2048]; /* room for several host paths and their roots */
	unsigned n;
	int rc;
	const char *err;
	struct vop_dev_host *h;
	napi_deferred deferred;
	napi_async_work work;
};

static void open_execute(napi_env env, void *data)
{
	struct open_req *r = data;

	(void)env;
	r->rc = vop_dev_host_open(r->path, r->create_bytes, r->spin_ns, r->devs, r->n, &r->h, &r->err);
}

static void open_complete(napi_env env, napi_status status, void *data)
{
	struct open_req *r = data;
	napi_value obj, errv;
	struct bhost *b;

	if (status != napi_ok && r->rc == 0)
		r->rc = -ECANCELED;
	if (r->rc == 0 && napi_create_object(env, &obj) == napi_ok && (b = calloc(1, sizeof(*b)))) {
		b->h = r->h;
		b->env = env;
		if (napi_wrap(env, obj, b, host_finalize, NULL, NULL) == napi_ok) {
			napi_type_tag_object(env, obj, &bhost_tag);
			b->hook = napi_add_env_cleanup_hook(env, cleanup_hook, b) == napi_ok;
			napi_resolve_deferred(env, r->deferred, obj);
			goto out;
		}
		free(b);
	}
	if (r->h)
		vop_dev_host_close(r->h);
	if (r->rc == 0)
		r->rc = -ENOMEM;
	vop_throw_errno(env, r->rc, r->err ? r->err : "devHostOpen");
	if (napi_get_and_clear_last_exception(env, &errv) == napi_ok)
		napi_reject_deferred(env, r->deferred, errv);
out:
	napi_delete_async_work(env, r->work);
	free(r);
}

static bool get_string(napi_env env, napi_value obj, const char *name, char *buf, size_t len)
{
	napi_value v;
	size_t got = 0;

	if (napi_get_named_property(env, obj, name, &v) != napi_ok ||
	    napi_get_value_string_utf8(env, v, buf, len, &got) != napi_ok || got + 1 >= len) {
		napi_throw_type_error(env, "EINVAL", name);
		return false;
	}
	return true;
}

napi_value vop_b_dev_host_open(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1], arr, promise, name;
	struct open_req *r;
	uint32_t n, i;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1) {
		napi_throw_type_error(env, "EINVAL", "devHostOpen(options)");
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		napi_throw_error(env, "ENOMEM", "devHostOpen");
		return NULL;
	}
	if (!get_string(env, argv[0], "path", r->path, sizeof(r->path)) ||
	    !vop_arg_u64(env, argv[0], "createBytes", &r->create_bytes) ||
	    !vop_arg_u64(env, argv[0], "spinNs", &r->spin_ns) ||
	    napi_get_named_property(env, argv[0], "devices", &arr) != napi_ok ||
	    napi_get_array_length(env, arr, &n) != napi_ok || n > VOP_DEV_HOST_MAX) {
		free(r);
		napi_throw_type_error(env, "EINVAL", "devHostOpen: bad options");
		return NULL;
	}
	for (i = 0; i < n; i++) {
		napi_value d;
		char kind[32];
		int k;

		if (napi_get_element(env, arr, i, &d) != napi_ok ||
		    !get_string(env, d, "kind", kind, sizeof(kind)) ||
		    !get_string(env, d, "desc", r->desc[i], sizeof(r->desc[i]))) {
			free(r);
			return NULL;
		}
		k = vop_dev_kind_parse(kind);
		if (k < 0) {
			free(r);
			napi_throw_type_error(env, "EINVAL", "devHostOpen: unknown device kind");
			return NULL;
		}
		r->devs[i].kind = (enum vop_dev_kind)k;
		r->devs[i].desc = r->desc[i];
	}
	r->n = n;
	NODE_API_CALL(env, napi_create_promise(env, &r->deferred, &promise));
	NODE_API_CALL(env, napi_create_string_utf8(env, "vop.devHostOpen", NAPI_AUTO_LENGTH, &name));
	NODE_API_CALL(env, napi_create_async_work(env, NULL, name, open_execute, open_complete, r, &r->work));
	NODE_API_CALL(env, napi_queue_async_work(env, r->work));
	return promise;
}

/* ---- sync calls ---- */

static struct bhost *arg_host(napi_env env, napi_callback_info info, size_t want, napi_value *argv)
{
	size_t argc = want;

	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
		napi_throw_type_error(env, "EINVAL", "missing arguments");
		return NULL;
	}
	return unwrap(env, argv[0]);
}

napi_value vop_b_dev_host_endpoints(napi_env env, napi_callback_info info)
{
	napi_value argv[1], s;
	struct bhost *b = arg_host(env, info, 1, argv);
	char buf[4096];

	if (!b)
		return NULL;
	vop_dev_host_endpoints(b->h, buf, sizeof(buf));
	NODE_API_CALL(env, napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &s));
	return s;
}

napi_value vop_b_dev_host_stats(napi_env env, napi_callback_info info)
{
	napi_value argv[1], s;
	struct bhost *b = arg_host(env, info, 1, argv);
	char buf[8192];

	if (!b)
		return NULL;
	vop_dev_host_stats_json(b->h, buf, sizeof(buf));
	NODE_API_CALL(env, napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &s));
	return s;
}

/* devHostQueueStats(h, devId, queue) -> BigUint64Array(VOP_VQS_COUNT), or null while not started */
napi_value vop_b_dev_host_queue_stats(napi_env env, napi_callback_info info)
{
	napi_value argv[3], ab, arr, nul;
	struct bhost *b = arg_host(env, info, 3, argv);
	struct vop_vq_stats s;
	uint32_t id, q;
	void *p;
	int rc;

	if (!b)
		return NULL;
	NODE_API_CALL(env, napi_get_value_uint32(env, argv[1], &id));
	NODE_API_CALL(env, napi_get_value_uint32(env, argv[2], &q));
	rc = vop_dev_host_queue_stats(b->h, id, q, &s);
	if (rc == -EINVAL) {
		NODE_API_CALL(env, napi_get_null(env, &nul));
		return nul;
	}
	if (rc) {
		vop_throw_errno(env, rc, "device queue stats");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_arraybuffer(env, sizeof(s.c), &p, &ab));
	memcpy(p, s.c, sizeof(s.c));
	NODE_API_CALL(env, napi_create_typedarray(env, napi_biguint64_array, VOP_VQS_COUNT, ab, 0, &arr));
	return arr;
}

/* devConsoleRead(h, devId, reader, maxBytes): { data: Buffer, lost: bigint } */
napi_value vop_b_dev_console_read(napi_env env, napi_callback_info info)
{
	napi_value argv[4];
	struct bhost *b = arg_host(env, info, 4, argv);
	struct vop_console *c;
	uint32_t id, reader, max;

	if (!b || !vop_value_u32(env, argv[1], &id) || !vop_value_u32(env, argv[2], &reader) ||
	    !vop_value_u32(env, argv[3], &max))
		return NULL;
	c = vop_dev_host_console(b->h, id);
	if (!c) {
		vop_throw_errno(env, -ENOENT, "no console with that id");
		return NULL;
	}
	return vop_b_console_read(env, c, reader, max);
}

napi_value vop_b_console_read(napi_env env, struct vop_console *c, uint32_t reader, uint32_t max)
{
	napi_value obj, data, lostv;
	uint64_t lost = 0;
	uint32_t n;
	void *p;

	if (reader >= 4) {
		vop_throw_errno(env, -EINVAL, "console reader must be 0..3");
		return NULL;
	}
	if (max > (1u << 20))
		max = 1u << 20;
	NODE_API_CALL(env, napi_create_buffer(env, max, &p, &data));
	n = vop_console_read_out(c, reader, p, max, &lost);
	NODE_API_CALL(env, napi_create_object(env, &obj));
	{
		napi_value sliced, subarray, args[2];

		/* data.subarray(0, n): the bytes actually read */
		NODE_API_CALL(env, napi_get_named_property(env, data, "subarray", &subarray));
		NODE_API_CALL(env, napi_create_uint32(env, 0, &args[0]));
		NODE_API_CALL(env, napi_create_uint32(env, n, &args[1]));
		NODE_API_CALL(env, napi_call_function(env, data, subarray, 2, args, &sliced));
		NODE_API_CALL(env, napi_set_named_property(env, obj, "data", sliced));
	}
	NODE_API_CALL(env, napi_create_bigint_uint64(env, lost, &lostv));
	NODE_API_CALL(env, napi_set_named_property(env, obj, "lost", lostv));
	return obj;
}

/* devConsoleWrite(h, devId, data: Uint8Array): number of bytes accepted */
napi_value vop_b_dev_console_write(napi_env env, napi_callback_info info)
{
	napi_value argv[3];
	struct bhost *b = arg_host(env, info, 3, argv);
	struct vop_console *c;
	uint32_t id;

	if (!b || !vop_value_u32(env, argv[1], &id))
		return NULL;
	c = vop_dev_host_console(b->h, id);
	if (!c) {
		vop_throw_errno(env, -ENOENT, "no console with that id");
		return NULL;
	}
	return vop_b_console_write(env, c, argv[2]);
}

napi_value vop_b_console_write(napi_env env, struct vop_console *c, napi_value v)
{
	napi_value res, ab;
	void *p = NULL;
	size_t len = 0, off;
	bool is_ta = false;
	napi_typedarray_type tt;

	if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
	    napi_get_typedarray_info(env, v, &tt, &len, &p, &ab, &off) != napi_ok ||
	    tt != napi_uint8_array) {
		napi_throw_type_error(env, "EINVAL", "console write expects a Uint8Array");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_uint32(env, vop_console_write_in(c, p, (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len)), &res));
	return res;
}

napi_value vop_b_dev_host_close(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1], u;
	bool ok = false;
	struct bhost *b = NULL;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc >= 1 && napi_check_object_type_tag(env, argv[0], &bhost_tag, &ok) == napi_ok && ok &&
	    napi_unwrap(env, argv[0], (void **)&b) == napi_ok && b)
		host_close(b); /* idempotent */
	NODE_API_CALL(env, napi_get_undefined(env, &u));
	return u;
}
