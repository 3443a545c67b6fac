/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user devices for JavaScript (vop/dev_vhost.h): vhostOpen() binds or
 * resolves the socket and serves one device (a net or blk device config
 * exactly as a link's device role takes it, or the counting sink);
 * vhostStatus/QueueStats/Counters/Endpoints read it; vhostClose() ends it.
 * The handle is a type-tagged wrapped object; the finalizer and an env
 * cleanup hook close a device JavaScript forgot. Every call is a cheap
 * control operation: buffers move in the device's own threads.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_config.h"
#include "link_binding.h"
#include "napi_util.h"
#include "vop/dev_vhost.h"

struct bvhost {
	struct vop_vhost *h; /* NULL once closed */
	unsigned nq;         /* the device's queues */
	bool hook;
};

static const napi_type_tag bvhost_tag = { 0x766f70766875736full, 0x6465766963650001ull };

static void bvhost_close(struct bvhost *b)
{
	vop_vhost_close(b->h);
	b->h = NULL;
}

static void cleanup_hook(void *arg)
{
	struct bvhost *b = arg;

	b->hook = false;
	bvhost_close(b);
}

static void finalize(napi_env env, void *data, void *hint)
{
	struct bvhost *b = data;

	(void)hint;
	if (b->hook)
		napi_remove_env_cleanup_hook(env, cleanup_hook, b);
	bvhost_close(b);
	free(b);
}

static struct bvhost *handle_arg(napi_env env, napi_value v, bool open)
{
	bool ok = false;
	struct bvhost *b = NULL;

	if (napi_check_object_type_tag(env, v, &bvhost_tag, &ok) != napi_ok || !ok ||
	    napi_unwrap(env, v, (void **)&b) != napi_ok || !b) {
		napi_throw_type_error(env, "EINVAL", "not a vop vhost-user handle");
		return NULL;
	}
	if (open && !b->h) {
		vop_throw_errno(env, -EBADF, "vhost-user device is closed");
		return NULL;
	}
	return b;
}

#define VH_ARGS(n, open)                                                                    \
	size_t argc = (n);                                                                  \
	napi_value argv[(n)];                                                               \
	struct bvhost *b;                                                                   \
	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));           \
	if (argc < (n)) {                                                                   \
		napi_throw_type_error(env, "EINVAL", "missing arguments");                  \
		return NULL;                                                                \
	}                                                                                   \
	b = handle_arg(env, argv[0], (open));                                               \
	if (!b)                                                                             \
		return NULL

/*
 * vhostOpen(opts: VhostOpenDto, device: DeviceConfigDto | null) -> handle.
 * opts: socketPath, root (string | null), server, socketMode, socketGid
 * (-1: ours), reconnectMs, maxQueueSize, maxMemBytes (bigint), allowUnsealed,
 * spinNs (bigint), queuePairs (net and sink: 0 or 1 = one pair, up to 4).
 * device null: the counting sink.
 */
napi_value vop_b_vhost_open(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2], obj;
	napi_valuetype t;
	static char path[VOP_PATH_MAX], root[VOP_PATH_MAX]; /* the JS thread only */
	struct vop_vhost_config cfg;
	struct vop_devcfg *dc = NULL;
	struct bvhost *b;
	bool has_root = false, present = false;
	uint32_t mode, reconnect, qs, pairs;
	int32_t gid;
	uint64_t mem, spin;
	const char *err = NULL;
	int rc;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 2) {
		napi_throw_type_error(env, "EINVAL", "vhostOpen(opts, device)");
		return NULL;
	}
	memset(&cfg, 0, sizeof(cfg));
	if (!vop_get_str(env, argv[0], "vhost", "socketPath", false, path, sizeof(path), &present) ||
	    !vop_get_str(env, argv[0], "vhost", "root", true, root, sizeof(root), &has_root) ||
	    !vop_get_bool(env, argv[0], "vhost", "server", &cfg.vhu.server) ||
	    !vop_get_u32(env, argv[0], "vhost", "socketMode", 0, 0777, &mode) ||
	    !vop_get_i32(env, argv[0], "vhost", "socketGid", -1, INT32_MAX, &gid) ||
	    !vop_get_u32(env, argv[0], "vhost", "reconnectMs", 0, 3600000, &reconnect) ||
	    !vop_get_u32(env, argv[0], "vhost", "maxQueueSize", 0, 32768, &qs) ||
	    !vop_get_u64(env, argv[0], "vhost", "maxMemBytes", UINT64_MAX, &mem) ||
	    !vop_get_bool(env, argv[0], "vhost", "allowUnsealed", &cfg.vhu.allow_unsealed) ||
	    !vop_get_u64(env, argv[0], "vhost", "spinNs", 10000000000ull, &spin) ||
	    !vop_get_u32(env, argv[0], "vhost", "queuePairs", 0, VOP_VHU_MAX_QUEUES / 2, &pairs))
		return NULL;
	cfg.vhu.path = path;
	cfg.vhu.root = has_root && root[0] ? root : NULL;
	cfg.vhu.socket_mode = mode;
	cfg.vhu.socket_gid = gid;
	cfg.vhu.reconnect_ms = reconnect;
	cfg.vhu.max_queue_size = (uint16_t)qs;
	cfg.vhu.max_mem_bytes = mem;
	cfg.vhu.spin_ns = spin;
	cfg.queue_pairs = (uint16_t)pairs;
	NODE_API_CALL(env, napi_typeof(env, argv[1], &t));
	if (t == napi_null || t == napi_undefined) {
		cfg.kind = VOP_VHOST_SINK;
		cfg.dev.event_idx = true;
	} else {
		dc = malloc(sizeof(*dc));
		if (!dc) {
			vop_throw_errno(env, -ENOMEM, "device config");
			return NULL;
		}
		if (!vop_devcfg_read(env, argv[1], "device", dc)) {
			free(dc);
			return NULL;
		}
		if (dc->pipe || dc->role != VOP_ROLE_DEVICE ||
		    (dc->be.kind != VOP_DEVBACK_NET && dc->be.kind != VOP_DEVBACK_BLK)) {
			free(dc);
			vop_throw_errno(env, -EINVAL, "vhost-user serves net and blk devices in the device role only");
			return NULL;
		}
		cfg.kind = dc->be.kind == VOP_DEVBACK_NET ? VOP_VHOST_NET : VOP_VHOST_BLK;
		cfg.dev = dc->be;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		free(dc);
		vop_throw_errno(env, -ENOMEM, "vhost-user");
		return NULL;
	}
	rc = vop_vhost_open(&cfg, &b->h, &err);
	free(dc); /* the device copied what it keeps (strings are used while opening only) */
	if (rc) {
		char what[120];

		snprintf(what, sizeof(what), "vhost-user %s", err ? err : "open");
		free(b);
		vop_throw_errno(env, rc, what);
		return NULL;
	}
	b->nq = vop_vhost_rings(b->h);
	if (napi_create_object(env, &obj) != napi_ok || napi_type_tag_object(env, obj, &bvhost_tag) != napi_ok ||
	    napi_wrap(env, obj, b, finalize, NULL, NULL) != napi_ok) {
		bvhost_close(b);
		free(b);
		vop_throw_errno(env, -ENOMEM, "wrap");
		return NULL;
	}
	if (napi_add_env_cleanup_hook(env, cleanup_hook, b) == napi_ok)
		b->hook = true;
	return obj;
}

/* vhostClose(h): ends the connection, stops the backend, removes a server socket. Idempotent. */
napi_value vop_b_vhost_close(napi_env env, napi_callback_info info)
{
	VH_ARGS(1, false);
	bvhost_close(b);
	return vop_undefined(env);
}

/* vhostStatus(h) -> VhostStatusDto */
napi_value vop_b_vhost_status(napi_env env, napi_callback_info info)
{
	struct vop_vhu_status s;
	napi_value obj;

	VH_ARGS(1, true);
	vop_vhu_status(vop_vhost_vhu(b->h), &s);
	NODE_API_CALL(env, napi_create_object(env, &obj));
	if (!vop_set_bool(env, obj, "connected", s.connected) || !vop_set_bool(env, obj, "running", s.running) ||
	    !vop_set_bool(env, obj, "failed", s.failed) || !vop_set_u64(env, obj, "features", s.features) ||
	    !vop_set_u64(env, obj, "protocolFeatures", s.protocol_features) ||
	    !vop_set_u64(env, obj, "connections", s.connections) || !vop_set_u64(env, obj, "disconnects", s.disconnects) ||
	    !vop_set_u64(env, obj, "protocolErrors", s.protocol_errors) ||
	    !vop_set_u64(env, obj, "messages", s.messages) || !vop_set_u64(env, obj, "starts", s.starts) ||
	    !vop_set_u64(env, obj, "memBytes", s.mem_bytes) || !vop_set_u32(env, obj, "regions", s.regions) ||
	    !vop_set_str(env, obj, "lastRequest", s.last_request ? vop_vhu_request_name(s.last_request) : NULL) ||
	    !vop_set_i32(env, obj, "lastError", s.last_error) || !vop_set_str(env, obj, "lastWhy", s.last_why) ||
	    !vop_set_u32(env, obj, "queues", b->nq))
		return NULL;
	return obj;
}

/* vhostQueueStats(h, queue) -> QueueStatsDto */
napi_value vop_b_vhost_queue_stats(napi_env env, napi_callback_info info)
{
	struct vop_vq_stats s;
	uint32_t q;
	int rc;

	VH_ARGS(2, true);
	if (!vop_value_u32(env, argv[1], "queue", &q))
		return NULL;
	rc = vop_vhu_queue_stats(vop_vhost_vhu(b->h), q, &s);
	if (rc) {
		vop_throw_errno(env, rc, "queue stats");
		return NULL;
	}
	return vop_b_vq_stats_object(env, &s);
}

/* vhostCounters(h) -> DeviceCountersDto (net: the sink counts transmitted frames) */
napi_value vop_b_vhost_counters(napi_env env, napi_callback_info info)
{
	struct vop_devback_counters *c;
	napi_value r;

	VH_ARGS(1, true);
	c = malloc(sizeof(*c));
	if (!c) {
		vop_throw_errno(env, -ENOMEM, "counters");
		return NULL;
	}
	vop_vhost_counters(b->h, c);
	r = vop_b_counters_object(env, c);
	free(c);
	return r;
}

/* vhostEndpoints(h) -> { tap, netns } (null where none) */
napi_value vop_b_vhost_endpoints(napi_env env, napi_callback_info info)
{
	struct vop_devback_endpoints e;
	napi_value obj;

	VH_ARGS(1, true);
	vop_vhost_endpoints(b->h, &e);
	NODE_API_CALL(env, napi_create_object(env, &obj));
	if (!vop_set_str(env, obj, "tap", e.tap[0] ? e.tap : NULL) ||
	    !vop_set_str(env, obj, "netns", e.netns[0] ? e.netns : NULL))
		return NULL;
	return obj;
}
