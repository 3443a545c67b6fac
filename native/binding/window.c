/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Window/link handles for JavaScript. Converts arguments, owns the handle
 * (type-tagged napi_wrap; finalizer and env cleanup hook stop and join the
 * worker) and forwards worker events through one threadsafe function per
 * link. Devices are byte pipes (attachPipe) or hosted device backends
 * (hostedAttach: virtio-net, -console, -blk of native/devices, served by
 * the same link worker). No ring or device logic here.
 *
 * Ownership: struct bwin is freed by the wrap finalizer only. The worker
 * thread touches only b->ev_lock/b->tsfn (in on_event); event items are
 * malloc'ed by on_event and freed by call_js (or by on_event if queueing
 * fails). Hosted devices and their device context belong to the handle and
 * are closed with it (JS thread only).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "devices_binding.h"
#include "napi_util.h"
#include "vop/dev_host.h"
#include "vop/link.h"
#include "vop/window.h"
#include "vop/xport.h"
#include "window_binding.h"

struct bwin {
	struct vop_window *w;         /* JS thread; NULL after close */
	struct vop_link *l;           /* JS thread; NULL after close */
	pthread_mutex_t ev_lock;      /* guards tsfn between JS thread and worker */
	napi_threadsafe_function tsfn; /* event sink, or NULL */
	napi_env env;                 /* env that owns the handle (JS thread only) */
	bool hook;                    /* env cleanup hook registered */
	struct vop_devctx *ctx;       /* JS thread; created with the first hosted device */
	struct vop_hosted *hosted[VOP_MAX_DEVICES]; /* JS thread */
	unsigned nhosted;
};

static const napi_type_tag bwin_tag = { 0x766f702d77696e64ull, 0x6f772d68616e646cull };

/* ---- events (worker thread -> JS) ---- */

static void on_event(void *ctx, const struct vop_event *ev)
{
	struct bwin *b = ctx;
	struct vop_event *copy;

	pthread_mutex_lock(&b->ev_lock);
	if (b->tsfn) {
		copy = malloc(sizeof(*copy));
		if (copy) {
			*copy = *ev;
			if (napi_call_threadsafe_function(b->tsfn, copy, napi_tsfn_nonblocking) != napi_ok)
				free(copy); /* queue full or closing: drop, counters still tell */
		}
	}
	pthread_mutex_unlock(&b->ev_lock);
}

static void set_u32(napi_env env, napi_value obj, const char *name, uint32_t v)
{
	napi_value x;

	if (napi_create_uint32(env, v, &x) == napi_ok)
		napi_set_named_property(env, obj, name, x);
}

/* JS thread: deliver one event; env is NULL at teardown (then only free). */
static void call_js(napi_env env, napi_value cb, void *context, void *data)
{
	struct vop_event *ev = data;
	napi_value obj, undef;

	(void)context;
	if (env && cb && napi_create_object(env, &obj) == napi_ok) {
		set_u32(env, obj, "type", ev->type);
		set_u32(env, obj, "devId", ev->dev_id);
		set_u32(env, obj, "queue", ev->queue);
		set_u32(env, obj, "reason", ev->reason);
		set_u32(env, obj, "epoch", ev->epoch);
		napi_get_undefined(env, &undef);
		napi_call_function(env, undef, cb, 1, &obj, NULL);
	}
	free(ev);
}

/* ---- lifecycle ---- */

static void release_tsfn(struct bwin *b)
{
	napi_threadsafe_function t;

	pthread_mutex_lock(&b->ev_lock);
	t = b->tsfn;
	b->tsfn = NULL;
	pthread_mutex_unlock(&b->ev_lock);
	if (t)
		napi_release_threadsafe_function(t, napi_tsfn_release);
}

/* Stop accepting work, join the worker, release the tsfn, unmap. Idempotent. */
static void bwin_close(struct bwin *b, bool unlink)
{
	if (!b->l)
		return;
	vop_link_stop(b->l); /* joins: no on_event after this */
	release_tsfn(b);
	while (b->nhosted)
		vop_hosted_close(b->l, b->hosted[--b->nhosted]);
	vop_link_destroy(b->l);
	b->l = NULL;
	vop_devctx_destroy(b->ctx);
	b->ctx = NULL;
	if (!unlink)
		b->w->x->unlink_on_destroy = 0;
	vop_window_close(b->w);
	b->w = NULL;
}

static void cleanup_hook(void *arg)
{
	struct bwin *b = arg;

	b->hook = false;
	bwin_close(b, true);
}

static void finalize(napi_env env, void *data, void *hint)
{
	struct bwin *b = data;

	(void)hint;
	if (b->hook)
		napi_remove_env_cleanup_hook(env, cleanup_hook, b);
	bwin_close(b, true);
	pthread_mutex_destroy(&b->ev_lock);
	free(b);
}

/* Unwrap a handle after checking its type tag; NULL with a pending exception. */
static struct bwin *handle(napi_env env, napi_value v, bool open)
{
	bool ok = false;
	struct bwin *b = NULL;

	if (napi_check_object_type_tag(env, v, &bwin_tag, &ok) != napi_ok || !ok ||
	    napi_unwrap(env, v, (void **)&b) != napi_ok || !b) {
		napi_throw_type_error(env, "EINVAL", "not a vop window handle");
		return NULL;
	}
	if (open && !b->l) {
		vop_throw_errno(env, -EBADF, "window is closed");
		return NULL;
	}
	return b;
}

struct open_opts {
	char path[256];
	bool has_path;
	uint64_t size;
	uint32_t max_devices;
	struct vop_link_config cfg;
};

enum open_mode { OPEN_ATTACH, OPEN_CREATE, OPEN_FD };

static bool parse_open(napi_env env, napi_value o, struct open_opts *op, enum open_mode mode)
{
	bool create = mode == OPEN_CREATE;
	napi_value v;
	napi_valuetype t;
	size_t n = 0;
	uint64_t spin;
	uint32_t rt;
	bool poll;

	memset(op, 0, sizeof(*op));
	if (mode == OPEN_FD)
		t = napi_null; /* no path: the window comes as an fd */
	else if (napi_get_named_property(env, o, "path", &v) != napi_ok ||
		 napi_typeof(env, v, &t) != napi_ok)
		return false;
	if (t == napi_string) {
		if (napi_get_value_string_utf8(env, v, op->path, sizeof(op->path), &n) != napi_ok ||
		    n >= sizeof(op->path) - 1) {
			napi_throw_range_error(env, "EINVAL", "path too long");
			return false;
		}
		op->has_path = n > 0;
	} else if (t != napi_null || mode == OPEN_ATTACH) {
		napi_throw_type_error(env, "EINVAL", "path must be a string");
		return false;
	}
	if (create && (!vop_arg_u64(env, o, "sizeBytes", &op->size) ||
		       !vop_arg_u32(env, o, "maxDevices", &op->max_devices)))
		return false;
	if (!vop_arg_u64(env, o, "spinNs", &spin) || !vop_arg_bool(env, o, "pollOnly", &poll) ||
	    !vop_arg_u32(env, o, "resetTimeoutMs", &rt))
		return false;
	op->cfg.spin_ns = spin;
	op->cfg.poll_only = poll;
	op->cfg.reset_timeout_ms = rt;
	return true;
}

static napi_value wrap_new(napi_env env, struct vop_window *w, const struct open_opts *op)
{
	struct bwin *b = calloc(1, sizeof(*b));
	struct vop_link_config cfg = op->cfg;
	napi_value obj;
	int rc;

	if (!b) {
		vop_window_close(w);
		vop_throw_errno(env, -ENOMEM, "window");
		return NULL;
	}
	pthread_mutex_init(&b->ev_lock, NULL);
	b->env = env;
	b->w = w;
	cfg.on_event = on_event;
	cfg.ctx = b;
	rc = vop_link_create(w, &cfg, &b->l);
	if (rc) {
		vop_window_close(w);
		pthread_mutex_destroy(&b->ev_lock);
		free(b);
		vop_throw_errno(env, rc, "link");
		return NULL;
	}
	if (napi_create_object(env, &obj) != napi_ok ||
	    napi_type_tag_object(env, obj, &bwin_tag) != napi_ok ||
	    napi_wrap(env, obj, b, finalize, NULL, NULL) != napi_ok) {
		bwin_close(b, true);
		pthread_mutex_destroy(&b->ev_lock);
		free(b);
		vop_throw_errno(env, -ENOMEM, "wrap");
		return NULL;
	}
	if (napi_add_env_cleanup_hook(env, cleanup_hook, b) == napi_ok)
		b->hook = true;
	return obj;
}

/*
 * Throw for a failed attach of x (not yet destroyed): a refused layout
 * names the field it broke ("attach window: data_off/data_size: data area
 * past the end of the window: Protocol error (EPROTO)").
 */
static void throw_attach(napi_env env, struct vop_xport *x, int rc, const char *what)
{
	const char *why = NULL;
	char msg[200];

	if (rc == -EPROTO && vop_window_layout_check(x->base, x->size, NULL, &why) == -EPROTO && why) {
		snprintf(msg, sizeof(msg), "%s: %s", what, why);
		vop_throw_errno(env, rc, msg);
		return;
	}
	vop_throw_errno(env, rc, what);
}

/* Throw for a failed device attach; a refused table entry names its field. */
static void throw_entry(napi_env env, struct bwin *b, int rc, const char *what)
{
	const char *why = rc == -EPROTO ? atomic_load(&b->w->entry_problem) : NULL;
	char msg[200];

	if (why) {
		snprintf(msg, sizeof(msg), "%s: %s", what, why);
		vop_throw_errno(env, rc, msg);
		return;
	}
	vop_throw_errno(env, rc, what);
}

/* windowCreate({path|null, sizeBytes, maxDevices, spinNs, pollOnly, resetTimeoutMs}) */
napi_value vop_b_window_create(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	struct open_opts op;
	struct vop_window_geometry g = { 0, 0 };
	struct vop_xport *x;
	struct vop_window *w;
	int rc;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1 || !parse_open(env, argv[0], &op, OPEN_CREATE))
		return NULL;
	rc = vop_shm_create(op.has_path ? op.path : NULL, op.size, &x);
	if (rc) {
		vop_throw_errno(env, rc, "create window");
		return NULL;
	}
	g.max_devices = op.max_devices;
	rc = vop_window_create(x, &g, &w);
	if (rc) {
		vop_xport_destroy(x);
		vop_throw_errno(env, rc, "lay out window");
		return NULL;
	}
	return wrap_new(env, w, &op);
}

/* windowAttach({path, spinNs, pollOnly, resetTimeoutMs}) */
napi_value vop_b_window_attach(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	struct open_opts op;
	struct vop_xport *x;
	struct vop_window *w;
	int rc;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1 || !parse_open(env, argv[0], &op, OPEN_ATTACH))
		return NULL;
	if (!op.has_path) {
		vop_throw_errno(env, -EINVAL, "attach needs a path");
		return NULL;
	}
	rc = vop_shm_open(op.path, &x);
	if (rc) {
		vop_throw_errno(env, rc, "open window");
		return NULL;
	}
	rc = vop_window_attach(x, &w);
	if (rc) {
		throw_attach(env, x, rc, "attach window");
		vop_xport_destroy(x);
		return NULL;
	}
	return wrap_new(env, w, &op);
}

/* windowReattach({path, side, spinNs, pollOnly, resetTimeoutMs}): take a side back after a restart. */
napi_value vop_b_window_reattach(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	struct open_opts op;
	struct vop_xport *x;
	struct vop_window *w;
	uint32_t side;
	int rc;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1 || !parse_open(env, argv[0], &op, OPEN_ATTACH) ||
	    !vop_arg_u32(env, argv[0], "side", &side))
		return NULL;
	if (!op.has_path || side > 1) {
		vop_throw_errno(env, -EINVAL, "reattach needs a path and side 0 or 1");
		return NULL;
	}
	rc = vop_shm_open(op.path, &x);
	if (rc) {
		vop_throw_errno(env, rc, "open window");
		return NULL;
	}
	rc = vop_window_attach_side(x, side, &w);
	if (rc) {
		throw_attach(env, x, rc, "reattach window");
		vop_xport_destroy(x);
		return NULL;
	}
	return wrap_new(env, w, &op);
}

/* windowAttachFd({fd, spinNs, pollOnly, resetTimeoutMs}): attach to a passed window fd (memfd). */
napi_value vop_b_window_attach_fd(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	struct open_opts op;
	struct vop_xport *x;
	struct vop_window *w;
	uint32_t fd;
	int rc;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1 || !vop_arg_u32(env, argv[0], "fd", &fd))
		return NULL;
	if (!parse_open(env, argv[0], &op, OPEN_FD))
		return NULL;
	if (fd > (uint32_t)INT32_MAX) {
		vop_throw_errno(env, -EBADF, "attach window fd");
		return NULL;
	}
	rc = vop_shm_open_fd((int)fd, &x);
	if (rc) {
		vop_throw_errno(env, rc, "open window fd");
		return NULL;
	}
	rc = vop_window_attach(x, &w);
	if (rc) {
		throw_attach(env, x, rc, "attach window");
		vop_xport_destroy(x);
		return NULL;
	}
	return wrap_new(env, w, &op);
}

/* Fetch handle (argv[0]) plus up to n-1 more args. */
#define GET_ARGS(n)                                                                         \
	size_t argc = (n);                                                                  \
	napi_value argv[(n)];                                                               \
	struct bwin *b;                                                                     \
	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));           \
	if (argc < (n)) {                                                                   \
		napi_throw_type_error(env, "EINVAL", "missing arguments");                  \
		return NULL;                                                                \
	}                                                                                   \
	b = handle(env, argv[0], true);                                                     \
	if (!b)                                                                             \
		return NULL

static napi_value undefined(napi_env env)
{
	napi_value u;

	NODE_API_CALL(env, napi_get_undefined(env, &u));
	return u;
}

/* windowClose(h, unlink) */
napi_value vop_b_window_close(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	struct bwin *b;
	bool unlink = true;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1)
		return NULL;
	b = handle(env, argv[0], false);
	if (!b)
		return NULL;
	if (argc > 1)
		napi_get_value_bool(env, argv[1], &unlink);
	if (b->hook) {
		napi_remove_env_cleanup_hook(env, cleanup_hook, b);
		b->hook = false;
	}
	bwin_close(b, unlink);
	return undefined(env);
}

/* windowInfo(h) -> {side, epoch, sizeBytes, fd, path, peerState, peerEpoch, peerHeartbeat, failed} */
napi_value vop_b_window_info(napi_env env, napi_callback_info info)
{
	struct vop_peer_view pv;
	napi_value obj, v;

	GET_ARGS(1);
	vop_window_peer(b->w, &pv);
	NODE_API_CALL(env, napi_create_object(env, &obj));
	set_u32(env, obj, "side", b->w->side);
	set_u32(env, obj, "epoch", b->w->epoch);
	set_u32(env, obj, "peerState", pv.state);
	set_u32(env, obj, "peerEpoch", pv.epoch);
	set_u32(env, obj, "fd", (uint32_t)b->w->x->fd);
	set_u32(env, obj, "failed", vop_link_failed(b->l));
	NODE_API_CALL(env, napi_create_bigint_uint64(env, b->w->x->size, &v));
	NODE_API_CALL(env, napi_set_named_property(env, obj, "sizeBytes", v));
	NODE_API_CALL(env, napi_create_bigint_uint64(env, pv.heartbeat, &v));
	NODE_API_CALL(env, napi_set_named_property(env, obj, "peerHeartbeat", v));
	NODE_API_CALL(env, napi_create_string_utf8(env, b->w->x->path, NAPI_AUTO_LENGTH, &v));
	NODE_API_CALL(env, napi_set_named_property(env, obj, "path", v));
	return obj;
}

/* devicePublish(h, {devId, deviceSide, queueSize, bufSize, features}) -> slot */
napi_value vop_b_device_publish(napi_env env, napi_callback_info info)
{
	struct vop_dev_spec spec;
	uint32_t dev_id, side, qsize, buf;
	uint64_t features;
	napi_value r;
	int rc;

	GET_ARGS(2);
	if (!vop_arg_u32(env, argv[1], "devId", &dev_id) ||
	    !vop_arg_u32(env, argv[1], "deviceSide", &side) ||
	    !vop_arg_u32(env, argv[1], "queueSize", &qsize) ||
	    !vop_arg_u32(env, argv[1], "bufSize", &buf) ||
	    !vop_arg_u64(env, argv[1], "features", &features))
		return NULL;
	if (side > 1 || qsize == 0 || qsize > VOP_QUEUE_MAX_SIZE) {
		vop_throw_errno(env, -EINVAL, "device spec");
		return NULL;
	}
	vop_pipe_spec(&spec, dev_id, (uint8_t)side, (uint16_t)qsize, buf, features);
	rc = vop_devtab_publish(b->w, &spec);
	if (rc < 0) {
		vop_throw_errno(env, rc, "publish device");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_int32(env, rc, &r));
	return r;
}

static napi_value rc_result(napi_env env, int rc, const char *what)
{
	if (rc < 0) {
		vop_throw_errno(env, rc, what);
		return NULL;
	}
	return undefined(env);
}

/* deviceRemove(h, devId) */
napi_value vop_b_device_remove(napi_env env, napi_callback_info info)
{
	uint32_t dev_id;

	GET_ARGS(2);
	if (!vop_value_u32(env, argv[1], &dev_id))
		return NULL;
	return rc_result(env, vop_devtab_remove(b->w, dev_id), "remove device");
}

/* attachPipe(h, devId, role, {msgSize, bufSize, segs, txMode, rxMode, verify, features, count, maxInflight, batch}) */
napi_value vop_b_attach_pipe(napi_env env, napi_callback_info info)
{
	struct vop_pipe_config pc;
	uint32_t dev_id, role, segs, tx, rx;
	int rc;

	GET_ARGS(4);
	memset(&pc, 0, sizeof(pc));
	if (!vop_value_u32(env, argv[1], &dev_id) || !vop_value_u32(env, argv[2], &role) ||
	    !vop_arg_u32(env, argv[3], "msgSize", &pc.msg_size) ||
	    !vop_arg_u32(env, argv[3], "bufSize", &pc.buf_size) ||
	    !vop_arg_u32(env, argv[3], "segs", &segs) || !vop_arg_u32(env, argv[3], "txMode", &tx) ||
	    !vop_arg_u32(env, argv[3], "rxMode", &rx) ||
	    !vop_arg_bool(env, argv[3], "verify", &pc.verify) ||
	    !vop_arg_u64(env, argv[3], "features", &pc.features) ||
	    !vop_arg_u64(env, argv[3], "count", &pc.count) ||
	    !vop_arg_u32(env, argv[3], "maxInflight", &pc.max_inflight) ||
	    !vop_arg_u32(env, argv[3], "batch", &pc.batch))
		return NULL;
	if (segs > 0xffff || tx > 3 || rx > 3) {
		vop_throw_errno(env, -EINVAL, "pipe config");
		return NULL;
	}
	pc.segs = (uint16_t)segs;
	pc.tx_mode = (uint8_t)tx;
	pc.rx_mode = (uint8_t)rx;
	atomic_store(&b->w->entry_problem, NULL); /* a refusal below names its own field */
	rc = vop_link_attach_pipe(b->l, dev_id, (enum vop_role)role, &pc);
	if (rc) {
		throw_entry(env, b, rc, "attach device");
		return NULL;
	}
	return undefined(env);
}

/* Index of the hosted device dev_id in b->hosted, or -1. */
static int hosted_index(const struct bwin *b, uint32_t dev_id)
{
	unsigned i;

	for (i = 0; i < b->nhosted; i++)
		if (vop_hosted_id(b->hosted[i]) == dev_id)
			return (int)i;
	return -1;
}

/* The hosted device named by argv[1], or NULL with a pending exception. */
static struct vop_hosted *hosted_arg(napi_env env, struct bwin *b, napi_value v)
{
	uint32_t dev_id;
	int i;

	if (!vop_value_u32(env, v, &dev_id))
		return NULL;
	i = hosted_index(b, dev_id);
	if (i < 0) {
		vop_throw_errno(env, -ENOENT, "no hosted device with that id");
		return NULL;
	}
	return b->hosted[i];
}

/* Kind name ("blk-device"...) and description strings of argv[1], argv[2]. */
static bool kind_desc_args(napi_env env, napi_value *argv, int *kind, char *desc, size_t len)
{
	char name[32];
	size_t n = 0;

	if (napi_get_value_string_utf8(env, argv[1], name, sizeof(name), &n) != napi_ok ||
	    (*kind = vop_dev_kind_parse(name)) < 0) {
		napi_throw_type_error(env, "EINVAL", "kind must be blk-device, blk-driver, net-device, "
						     "net-driver, con-device or con-driver");
		return false;
	}
	if (napi_get_value_string_utf8(env, argv[2], desc, len, &n) != napi_ok || n >= len - 1 ||
	    vop_dev_desc_id(desc) == 0) {
		napi_throw_type_error(env, "EINVAL", "desc must be a string \"ID:options\"");
		return false;
	}
	return true;
}

/* hostedSpec(kind, desc) -> { deviceType, queueSizes: number[], poolBytes: number[] }: what a window must hold */
napi_value vop_b_hosted_spec(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[3], obj, sizes, pools, v;
	struct vop_dev_spec spec;
	char desc[2048]; /* room for several host paths and their roots */
	int kind, rc;
	unsigned i;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv + 1, NULL, NULL));
	if (argc < 2) {
		napi_throw_type_error(env, "EINVAL", "missing arguments");
		return NULL;
	}
	if (!kind_desc_args(env, argv, &kind, desc, sizeof(desc)))
		return NULL;
	rc = vop_hosted_spec((enum vop_dev_kind)kind, desc, 0, &spec);
	if (rc) {
		vop_throw_errno(env, rc, "device description");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_object(env, &obj));
	NODE_API_CALL(env, napi_create_array_with_length(env, spec.num_queues, &sizes));
	NODE_API_CALL(env, napi_create_array_with_length(env, spec.num_queues, &pools));
	for (i = 0; i < spec.num_queues; i++) {
		NODE_API_CALL(env, napi_create_uint32(env, spec.queue_size[i], &v));
		NODE_API_CALL(env, napi_set_element(env, sizes, i, v));
		NODE_API_CALL(env, napi_create_double(env, (double)spec.pool_size[i], &v));
		NODE_API_CALL(env, napi_set_element(env, pools, i, v));
	}
	set_u32(env, obj, "deviceType", spec.device_type);
	NODE_API_CALL(env, napi_set_named_property(env, obj, "queueSizes", sizes));
	NODE_API_CALL(env, napi_set_named_property(env, obj, "poolBytes", pools));
	return obj;
}

/* hostedPublish(h, kind, desc) -> slot: the creator publishes a real device's table entry */
napi_value vop_b_hosted_publish(napi_env env, napi_callback_info info)
{
	char desc[2048]; /* room for several host paths and their roots */
	int kind, rc;
	napi_value r;

	GET_ARGS(3);
	if (!kind_desc_args(env, argv, &kind, desc, sizeof(desc)))
		return NULL;
	rc = vop_hosted_publish(b->w, (enum vop_dev_kind)kind, desc);
	if (rc < 0) {
		vop_throw_errno(env, rc, "publish device");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_int32(env, rc, &r));
	return r;
}

/* hostedAttach(h, kind, desc): open the backend's surfaces and serve it on this link */
napi_value vop_b_hosted_attach(napi_env env, napi_callback_info info)
{
	struct vop_hosted *hd;
	const char *err = NULL;
	char desc[2048]; /* room for several host paths and their roots */
	int kind, rc;

	GET_ARGS(3);
	if (!kind_desc_args(env, argv, &kind, desc, sizeof(desc)))
		return NULL;
	if (hosted_index(b, vop_dev_desc_id(desc)) >= 0 || b->nhosted >= VOP_MAX_DEVICES) {
		vop_throw_errno(env, b->nhosted >= VOP_MAX_DEVICES ? -ENOSPC : -EEXIST, "attach device");
		return NULL;
	}
	if (!b->ctx) {
		rc = vop_devctx_create(b->w, &b->ctx);
		if (rc) {
			vop_throw_errno(env, rc, "device context");
			return NULL;
		}
	}
	atomic_store(&b->w->entry_problem, NULL); /* a refusal below names its own field */
	rc = vop_hosted_open(b->ctx, b->l, (enum vop_dev_kind)kind, desc, 0, &hd, &err);
	if (rc) {
		throw_entry(env, b, rc, err ? err : "attach device");
		return NULL;
	}
	b->hosted[b->nhosted++] = hd;
	return undefined(env);
}

/* detach(h, devId): a byte pipe, or a hosted device (closed with its surfaces) */
napi_value vop_b_detach(napi_env env, napi_callback_info info)
{
	uint32_t dev_id;
	int i;

	GET_ARGS(2);
	if (!vop_value_u32(env, argv[1], &dev_id))
		return NULL;
	i = hosted_index(b, dev_id);
	if (i >= 0) {
		vop_hosted_close(b->l, b->hosted[i]);
		b->hosted[i] = b->hosted[--b->nhosted];
		return undefined(env);
	}
	return rc_result(env, vop_link_detach(b->l, dev_id), "detach device");
}

/* hostedEndpoints(h, devId) -> "key value\n" lines */
napi_value vop_b_hosted_endpoints(napi_env env, napi_callback_info info)
{
	struct vop_hosted *hd;
	char buf[2048];
	napi_value s;

	GET_ARGS(2);
	hd = hosted_arg(env, b, argv[1]);
	if (!hd)
		return NULL;
	vop_hosted_endpoints(hd, buf, sizeof(buf));
	NODE_API_CALL(env, napi_create_string_utf8(env, buf, NAPI_AUTO_LENGTH, &s));
	return s;
}

/* hostedStats(h, devId) -> JSON object text {"blk1":{...}} */
napi_value vop_b_hosted_stats(napi_env env, napi_callback_info info)
{
	struct vop_hosted *hd;
	char buf[8192];
	size_t n;
	napi_value s;

	GET_ARGS(2);
	hd = hosted_arg(env, b, argv[1]);
	if (!hd)
		return NULL;
	buf[0] = '{';
	n = 1 + vop_hosted_stats_json(hd, buf + 1, sizeof(buf) - 2);
	buf[n++] = '}';
	NODE_API_CALL(env, napi_create_string_utf8(env, buf, n, &s));
	return s;
}

/* devState(h, devId) -> enum vop_dev_run_state of a pipe or hosted device */
napi_value vop_b_dev_state(napi_env env, napi_callback_info info)
{
	uint32_t dev_id;
	napi_value r;
	int rc;

	GET_ARGS(2);
	if (!vop_value_u32(env, argv[1], &dev_id))
		return NULL;
	rc = vop_link_dev_state(b->l, dev_id);
	if (rc < 0) {
		vop_throw_errno(env, rc, "device state");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_uint32(env, (uint32_t)rc, &r));
	return r;
}

/* The console of hosted device argv[1], or NULL with a pending exception. */
static struct vop_console *hosted_console_arg(napi_env env, struct bwin *b, napi_value v)
{
	struct vop_hosted *hd = hosted_arg(env, b, v);
	struct vop_console *c = hd ? vop_hosted_console(hd) : NULL;

	if (hd && !c)
		vop_throw_errno(env, -EINVAL, "not a console device");
	return c;
}

/* hostedConsoleRead(h, devId, reader, maxBytes) -> { data: Buffer, lost: bigint } */
napi_value vop_b_hosted_console_read(napi_env env, napi_callback_info info)
{
	struct vop_console *c;
	uint32_t reader, max;

	GET_ARGS(4);
	c = hosted_console_arg(env, b, argv[1]);
	if (!c || !vop_value_u32(env, argv[2], &reader) || !vop_value_u32(env, argv[3], &max))
		return NULL;
	return vop_b_console_read(env, c, reader, max);
}

/* hostedConsoleWrite(h, devId, data: Uint8Array) -> bytes accepted */
napi_value vop_b_hosted_console_write(napi_env env, napi_callback_info info)
{
	struct vop_console *c;

	GET_ARGS(3);
	c = hosted_console_arg(env, b, argv[1]);
	if (!c)
		return NULL;
	return vop_b_console_write(env, c, argv[2]);
}

/* resetDevice(h, devId) */
napi_value vop_b_reset_device(napi_env env, napi_callback_info info)
{
	uint32_t dev_id;

	GET_ARGS(2);
	if (!vop_value_u32(env, argv[1], &dev_id))
		return NULL;
	return rc_result(env, vop_link_reset_device(b->l, dev_id), "reset device");
}

/* start(h) / stop(h) */
napi_value vop_b_start(napi_env env, napi_callback_info info)
{
	GET_ARGS(1);
	return rc_result(env, vop_link_start(b->l), "start worker");
}

napi_value vop_b_stop(napi_env env, napi_callback_info info)
{
	GET_ARGS(1);
	return rc_result(env, vop_link_stop(b->l), "stop worker");
}

static napi_value u64_array(napi_env env, const uint64_t *v, size_t n)
{
	napi_value ab, arr;
	void *data;

	NODE_API_CALL(env, napi_create_arraybuffer(env, n * 8, &data, &ab));
	memcpy(data, v, n * 8);
	NODE_API_CALL(env, napi_create_typedarray(env, napi_biguint64_array, n, ab, 0, &arr));
	return arr;
}

/* queueStats(h, devId, queue) -> BigUint64Array(VOP_VQS_COUNT) */
napi_value vop_b_queue_stats(napi_env env, napi_callback_info info)
{
	struct vop_vq_stats s;
	uint32_t dev_id, q;
	int rc;

	GET_ARGS(3);
	if (!vop_value_u32(env, argv[1], &dev_id) || !vop_value_u32(env, argv[2], &q))
		return NULL;
	rc = vop_link_queue_stats(b->l, dev_id, q, &s);
	if (rc) {
		vop_throw_errno(env, rc, "queue stats");
		return NULL;
	}
	return u64_array(env, s.c, VOP_VQS_COUNT);
}

/* pipeStats(h, devId) -> BigUint64Array(4): tx, rx, bad, state */
napi_value vop_b_pipe_stats(napi_env env, napi_callback_info info)
{
	struct vop_pipe_stats s;
	uint64_t v[4];
	uint32_t dev_id;
	int rc;

	GET_ARGS(2);
	if (!vop_value_u32(env, argv[1], &dev_id))
		return NULL;
	rc = vop_link_pipe_stats(b->l, dev_id, &s);
	if (rc) {
		vop_throw_errno(env, rc, "pipe stats");
		return NULL;
	}
	v[0] = s.tx_msgs;
	v[1] = s.rx_msgs;
	v[2] = s.bad_msgs;
	v[3] = s.state;
	return u64_array(env, v, 4);
}

/* linkStats(h) -> BigUint64Array(VOP_LS_COUNT) */
napi_value vop_b_link_stats(napi_env env, napi_callback_info info)
{
	uint64_t v[VOP_LS_COUNT];

	GET_ARGS(1);
	vop_link_stats(b->l, v);
	return u64_array(env, v, VOP_LS_COUNT);
}

/* onEvent(h, cb | null): one threadsafe function per link; replaces the previous one. */
napi_value vop_b_on_event(napi_env env, napi_callback_info info)
{
	napi_valuetype t;
	napi_value name;
	napi_threadsafe_function tsfn = NULL, old;

	GET_ARGS(2);
	NODE_API_CALL(env, napi_typeof(env, argv[1], &t));
	if (t == napi_function) {
		NODE_API_CALL(env, napi_create_string_utf8(env, "vop-link-events", NAPI_AUTO_LENGTH, &name));
		NODE_API_CALL(env, napi_create_threadsafe_function(env, argv[1], NULL, name, 1024, 1, NULL,
								   NULL, NULL, call_js, &tsfn));
		/* Events must not keep the process alive on their own. */
		NODE_API_CALL(env, napi_unref_threadsafe_function(env, tsfn));
	} else if (t != napi_null && t != napi_undefined) {
		napi_throw_type_error(env, "EINVAL", "callback must be a function or null");
		return NULL;
	}
	pthread_mutex_lock(&b->ev_lock);
	old = b->tsfn;
	b->tsfn = tsfn;
	pthread_mutex_unlock(&b->ev_lock);
	if (old)
		napi_release_threadsafe_function(old, napi_tsfn_release);
	return undefined(env);
}
