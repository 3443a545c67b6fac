/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Link handles for JavaScript: one side of a window and its link worker.
 * Converts arguments, owns the handle (type-tagged napi_wrap; finalizer and
 * env cleanup hook stop and join the worker) and forwards worker events
 * through one threadsafe function per link as typed objects (the event
 * type, reasons and errno names as strings: TypeScript mirrors no C enum).
 * Devices on the link: device_binding.c. No ring or device logic here.
 *
 * Ownership: struct bwin is freed by the wrap finalizer only. The worker
 * thread touches only b->ev_lock/b->tsfn (in on_event); event items are
 * malloc'ed by on_event and freed by call_js (or by on_event if queueing
 * fails). Device backends and their device context belong to the handle
 * and are closed with it (JS thread only).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_config.h"
#include "link_binding.h"
#include "napi_util.h"
#include "window_transport.h"
#include "vop/link.h"
#include "vop/window.h"
#include "vop/window_size.h"
#include "vop/xport.h"


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

/* enum vop_event_type by number (link.h): the one place these names are written. */
static const char *const EVENT_NAMES[] = {
	[VOP_EV_QUEUE_BROKEN] = "queue-broken",   [VOP_EV_PEER_RESET] = "peer-reset",
	[VOP_EV_PEER_GONE] = "peer-gone",         [VOP_EV_DEVICE_REMOVED] = "device-removed",
	[VOP_EV_RESET_DONE] = "reset-done",       [VOP_EV_RESET_TIMEOUT] = "reset-timeout",
	[VOP_EV_NEEDS_RESET] = "needs-reset",     [VOP_EV_PEER_UP] = "peer-up",
	[VOP_EV_BACKEND_FAILED] = "backend-failed", [VOP_EV_LINK_FAILED] = "link-failed",
};

/* The LinkEventDto of ev (native.ts), or false (unknown type: dropped). */
static bool event_object(napi_env env, const struct vop_event *ev, napi_value *out)
{
	char buf[24];
	napi_value obj;

	if (ev->type >= sizeof(EVENT_NAMES) / sizeof(EVENT_NAMES[0]) || !EVENT_NAMES[ev->type] ||
	    napi_create_object(env, &obj) != napi_ok || !vop_set_str(env, obj, "type", EVENT_NAMES[ev->type]))
		return false;
	switch (ev->type) {
	case VOP_EV_QUEUE_BROKEN:
		if (!vop_set_u32(env, obj, "devId", ev->dev_id) || !vop_set_u32(env, obj, "queue", ev->queue) ||
		    !vop_set_str(env, obj, "reason", vop_vq_reason_name(ev->reason)))
			return false;
		break;
	case VOP_EV_PEER_RESET:
	case VOP_EV_PEER_GONE:
	case VOP_EV_PEER_UP:
		if (!vop_set_u32(env, obj, "epoch", ev->epoch))
			return false;
		break;
	case VOP_EV_BACKEND_FAILED:
		if (!vop_set_u32(env, obj, "devId", ev->dev_id) ||
		    !vop_set_str(env, obj, "error", vop_errno_code(-(int)ev->reason, buf, sizeof(buf))))
			return false;
		break;
	case VOP_EV_LINK_FAILED:
		if (!vop_set_str(env, obj, "reason", vop_link_fail_name(ev->reason)))
			return false;
		break;
	default:
		if (!vop_set_u32(env, obj, "devId", ev->dev_id))
			return false;
		break;
	}
	*out = obj;
	return true;
}

/* JS thread: deliver one event; env is NULL at teardown (then only free). */
static void call_js(napi_env env, napi_value cb, void *context, void *data)
{
	struct vop_event *ev = data;
	napi_value obj, undef;

	(void)context;
	if (env && cb && event_object(env, ev, &obj) && napi_get_undefined(env, &undef) == napi_ok)
		napi_call_function(env, undef, cb, 1, &obj, NULL);
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
	vop_b_stream_close(b); /* the connection and the proxy side first: they use the window */
	vop_link_stop(b->l); /* joins: no on_event after this */
	release_tsfn(b);
	vop_b_close_backends(b);
	vop_link_destroy(b->l);
	b->l = NULL;
	vop_devctx_destroy(b->ctx);
	b->ctx = NULL;
	if (unlink && b->w->side == 0 && vop_b_xport_is_pci(b->w->x))
		vop_b_window_retire(b->w);
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

struct bwin *vop_b_handle(napi_env env, napi_value v, bool open)
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
	struct vop_b_pci pci; /* pci.on: a pci-bar window, else shm at path */
};

enum open_mode { OPEN_ATTACH, OPEN_CREATE };

static bool parse_open(napi_env env, napi_value o, struct open_opts *op, enum open_mode mode)
{
	bool create = mode == OPEN_CREATE;
	bool present = false;
	uint64_t spin;
	uint32_t rt;
	bool poll;

	memset(op, 0, sizeof(*op));
	if (!vop_get_str(env, o, "window", "path", mode != OPEN_ATTACH, op->path, sizeof(op->path), &present))
		return false;
	op->has_path = present && op->path[0];
	if (create && (!vop_get_u64(env, o, "window", "sizeBytes", VOP_WINDOW_SIZE_MAX, &op->size) ||
		       !vop_get_u32(env, o, "window", "maxDevices", 0, VOP_MAX_DEVICES, &op->max_devices)))
		return false;
	if (!vop_get_u64(env, o, "window", "spinNs", 10000000000ull, &spin) ||
	    !vop_get_bool(env, o, "window", "pollOnly", &poll) ||
	    !vop_get_u32(env, o, "window", "resetTimeoutMs", 0, 600000, &rt))
		return false;
	op->cfg.spin_ns = spin;
	op->cfg.poll_only = poll;
	op->cfg.reset_timeout_ms = rt;
	return vop_b_pci_parse(env, o, &op->pci);
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

napi_value vop_b_wrap_window(napi_env env, struct vop_window *w, uint64_t spin_ns, bool poll_only,
			     uint32_t reset_timeout_ms)
{
	struct open_opts op;

	memset(&op, 0, sizeof(op));
	op.cfg.spin_ns = spin_ns;
	op.cfg.poll_only = poll_only;
	op.cfg.reset_timeout_ms = reset_timeout_ms;
	return wrap_new(env, w, &op);
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
	if (op.pci.on) {
		rc = vop_b_pci_open(&op.pci, &x);
		/* A window from an earlier life: the caller takes it back (reattach) or replaces it. */
		if (rc == 0 && !op.pci.replace && vop_b_window_holds_layout(x)) {
			vop_xport_destroy(x);
			rc = -EEXIST;
		}
	} else {
		rc = vop_shm_create(op.has_path ? op.path : NULL, op.size, &x);
	}
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
	if (!op.has_path && !op.pci.on) {
		vop_throw_errno(env, -EINVAL, "attach needs a path");
		return NULL;
	}
	rc = op.pci.on ? vop_b_pci_open(&op.pci, &x) : vop_shm_open(op.path, &x);
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
	    !vop_get_u32(env, argv[0], "window", "side", 0, 1, &side))
		return NULL;
	if ((!op.has_path && !op.pci.on) || side > 1) {
		vop_throw_errno(env, -EINVAL, "reattach needs a path and side 0 or 1");
		return NULL;
	}
	rc = op.pci.on ? vop_b_pci_open(&op.pci, &x) : vop_shm_open(op.path, &x);
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
	b = vop_b_handle(env, argv[0], false);
	if (!b)
		return NULL;
	if (argc > 1)
		napi_get_value_bool(env, argv[1], &unlink);
	if (b->hook) {
		napi_remove_env_cleanup_hook(env, cleanup_hook, b);
		b->hook = false;
	}
	bwin_close(b, unlink);
	return vop_undefined(env);
}

static const char *const SIDE_STATES[] = { "absent", "up", "gone" };

/* windowInfo(h) -> WindowInfoDto {side, epoch, sizeBytes, fd, path, peerState, peerEpoch, peerHeartbeat, failed} */
napi_value vop_b_window_info(napi_env env, napi_callback_info info)
{
	struct vop_peer_view pv;
	unsigned failed;
	napi_value obj;

	GET_ARGS(1);
	vop_window_peer(b->w, &pv);
	failed = vop_link_failed(b->l);
	NODE_API_CALL(env, napi_create_object(env, &obj));
	if (!vop_set_str(env, obj, "side", b->w->side == 0 ? "creator" : "attacher") ||
	    !vop_set_u32(env, obj, "epoch", b->w->epoch) ||
	    /* the peer's state word is unvalidated: anything else counts as gone */
	    !vop_set_str(env, obj, "peerState", pv.state < 3 ? SIDE_STATES[pv.state] : "gone") ||
	    !vop_set_u32(env, obj, "peerEpoch", pv.epoch) || !vop_set_u32(env, obj, "fd", (uint32_t)b->w->x->fd) ||
	    !vop_set_str(env, obj, "failed", failed ? vop_link_fail_name(failed) : NULL) ||
	    !vop_set_u64(env, obj, "sizeBytes", b->w->x->size) ||
	    !vop_set_u64(env, obj, "peerHeartbeat", pv.heartbeat) || !vop_set_str(env, obj, "path", b->w->x->path) ||
	    !vop_b_transport_info(env, obj, b->w))
		return NULL;
	return obj;
}

static bool set_num(napi_env env, napi_value obj, const char *name, uint64_t v)
{
	napi_value x;

	/* Window sizes stay below 2^40: exact as a double. */
	return napi_create_double(env, (double)v, &x) == napi_ok && napi_set_named_property(env, obj, name, x) == napi_ok;
}

/*
 * windowLayout(devices: DeviceConfigDto[], maxDevices) -> WindowLayoutDto: the smallest window that
 * holds the devices (vop_window_plan_for), its areas, and each device's footprint.
 */
napi_value vop_b_window_layout(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2], obj, arr, item;
	struct vop_dev_spec *specs;
	struct vop_devcfg *cfg;
	struct vop_window_plan plan;
	uint32_t n = 0, max, i;
	bool is_array = false;
	int rc = 0;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 2 || napi_is_array(env, argv[0], &is_array) != napi_ok || !is_array ||
	    napi_get_array_length(env, argv[0], &n) != napi_ok) {
		napi_throw_type_error(env, "EINVAL", "devices must be an array");
		return NULL;
	}
	if (!vop_value_u32(env, argv[1], "maxDevices", &max))
		return NULL;
	if (max > VOP_MAX_DEVICES || n > (max ? max : VOP_MAX_DEVICES)) {
		napi_throw_range_error(env, "EINVAL", "devices must hold at most maxDevices (<= 32) entries");
		return NULL;
	}
	specs = calloc(n ? n : 1, sizeof(*specs));
	cfg = malloc(sizeof(*cfg));
	if (!specs || !cfg) {
		free(specs);
		free(cfg);
		vop_throw_errno(env, -ENOMEM, "window layout");
		return NULL;
	}
	for (i = 0; i < n && rc == 0; i++) {
		napi_value d;
		char path[24];

		snprintf(path, sizeof(path), "devices[%u]", i);
		if (napi_get_element(env, argv[0], i, &d) != napi_ok || !vop_devcfg_read(env, d, path, cfg)) {
			rc = -EINVAL;
			break;
		}
		rc = vop_devcfg_spec(cfg, 0, &specs[i]);
		if (rc)
			vop_throw_errno(env, rc, path);
	}
	free(cfg);
	if (rc == 0) {
		rc = vop_window_plan_for(specs, n, max, &plan);
		if (rc)
			vop_throw_errno(env, rc, "window layout");
	}
	if (rc == 0 && (napi_create_object(env, &obj) != napi_ok || napi_create_array_with_length(env, n, &arr) != napi_ok))
		rc = -ENOMEM;
	for (i = 0; i < n && rc == 0; i++) {
		struct vop_dev_footprint f;

		if (vop_dev_footprint_of(&specs[i], &f) || napi_create_object(env, &item) != napi_ok ||
		    !set_num(env, item, "ringBytes", f.ring_bytes) || !set_num(env, item, "poolBytes", f.pool_bytes) ||
		    napi_set_element(env, arr, i, item) != napi_ok)
			rc = -ENOMEM;
	}
	free(specs);
	if (rc)
		return NULL;
	if (!set_num(env, obj, "sizeBytes", plan.size) || !set_num(env, obj, "tableBytes", plan.table_bytes) ||
	    !set_num(env, obj, "ringBytes", plan.ring_bytes) || !set_num(env, obj, "dataBytes", plan.data_bytes) ||
	    !set_num(env, obj, "ringUsedBytes", plan.ring_used) || !set_num(env, obj, "dataUsedBytes", plan.data_used))
		return NULL;
	NODE_API_CALL(env, napi_set_named_property(env, obj, "devices", arr));
	return obj;
}

static napi_value rc_result(napi_env env, int rc, const char *what)
{
	if (rc < 0) {
		vop_throw_errno(env, rc, what);
		return NULL;
	}
	return vop_undefined(env);
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

/* linkStats(h) -> LinkStatsDto (enum vop_link_stat, named) */
napi_value vop_b_link_stats(napi_env env, napi_callback_info info)
{
	static const char *const NAMES[VOP_LS_COUNT] = {
		[VOP_LS_WAKEUPS] = "wakeups",       [VOP_LS_SLEEPS] = "sleeps",
		[VOP_LS_POLL_NS] = "pollNs",        [VOP_LS_SLEEP_NS] = "sleepNs",
		[VOP_LS_DOORBELLS] = "doorbells",   [VOP_LS_SIGNALS] = "signals",
		[VOP_LS_HEARTBEATS] = "heartbeats", [VOP_LS_PEER_RESETS] = "peerResets",
		[VOP_LS_PEER_GONE] = "peerGone",
	};
	uint64_t v[VOP_LS_COUNT];
	napi_value obj;
	unsigned i;

	GET_ARGS(1);
	vop_link_stats(b->l, v);
	NODE_API_CALL(env, napi_create_object(env, &obj));
	for (i = 0; i < VOP_LS_COUNT; i++)
		if (!vop_set_u64(env, obj, NAMES[i], v[i]))
			return NULL;
	return obj;
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
	return vop_undefined(env);
}
