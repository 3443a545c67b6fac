/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stream transport for JavaScript (vop/stream.h, docs/stream-protocol.md):
 * a link handle whose window is PRIVATE (a memfd only this process maps);
 * the handle's link worker serves the real backends on side 0 as with any
 * window, and side 1 belongs to the bridge's proxy link. streamStart starts
 * the connection thread (listen or dial, a bridge per connection);
 * streamStatus reads it. Argument conversion only; no protocol logic here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_config.h"
#include "link_binding.h"
#include "napi_util.h"
#include "vop/path.h"
#include "vop/stream_tls.h"
#include "vop/window_size.h"
#include "vop/xport.h"

#define DEFAULT_MAX_CHAIN (65536u + 4096u)

void vop_b_stream_close(struct bwin *b)
{
	vop_sconn_stop(b->sconn); /* ends the bridge: the proxy backends are detached */
	b->sconn = NULL;
	if (b->pl) {
		vop_link_stop(b->pl);
		vop_link_destroy(b->pl);
		b->pl = NULL;
	}
	vop_window_close(b->pw);
	b->pw = NULL;
}

/*
 * streamOpen({devices: DeviceConfigDto[], deviceSide, maxChain, spinNs, pollOnly, resetTimeoutMs})
 * -> handle. The window holds the devices (the device side's pools sized for whole chains).
 */
napi_value vop_b_stream_open(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1], devs, h;
	struct vop_dev_spec *specs = NULL;
	struct vop_devcfg *cfg = NULL;
	struct vop_window_plan plan;
	struct vop_xport *x = NULL, *x1 = NULL;
	struct vop_window *w = NULL;
	struct vop_link_config lc;
	struct bwin *b;
	uint32_t n = 0, i, max_chain, link_max_chain, rt;
	uint64_t spin;
	bool is_array = false, device_side, poll;
	int rc = 0;

	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
	if (argc < 1 || !vop_get_obj(env, argv[0], "stream", "devices", false, &devs) ||
	    !vop_get_bool(env, argv[0], "stream", "deviceSide", &device_side) ||
	    !vop_get_u32(env, argv[0], "stream", "maxChain", 0, VOP_STREAM_CHAIN_FIT(VOP_STREAM_DEF_FRAME), &max_chain) ||
	    !vop_get_u64(env, argv[0], "stream", "spinNs", 10000000000ull, &spin) ||
	    !vop_get_bool(env, argv[0], "stream", "pollOnly", &poll) ||
	    !vop_get_u32(env, argv[0], "stream", "resetTimeoutMs", 0, 600000, &rt))
		return NULL;
	if (max_chain == 0)
		max_chain = DEFAULT_MAX_CHAIN;
	link_max_chain = max_chain;
	if (napi_is_array(env, devs, &is_array) != napi_ok || !is_array ||
	    napi_get_array_length(env, devs, &n) != napi_ok || n > VOP_MAX_DEVICES) {
		napi_throw_type_error(env, "EINVAL", "stream.devices must be an array of at most 32 devices");
		return NULL;
	}
	specs = calloc(n ? n : 1, sizeof(*specs));
	cfg = malloc(sizeof(*cfg));
	if (!specs || !cfg)
		rc = -ENOMEM;
	for (i = 0; i < n && rc == 0; i++) {
		napi_value d;
		char path[32];
		unsigned q;

		snprintf(path, sizeof(path), "stream.devices[%u]", i);
		if (napi_get_element(env, devs, i, &d) != napi_ok || !vop_devcfg_read(env, d, path, cfg)) {
			free(specs);
			free(cfg);
			return NULL;
		}
		rc = vop_devcfg_spec(cfg, 0, &specs[i]);
		if (rc == 0 && device_side) {
			uint32_t mc = vop_b_stream_slot_bytes(cfg, max_chain);

			if (mc > VOP_STREAM_CHAIN_FIT(VOP_STREAM_DEF_FRAME))
				rc = -EINVAL; /* a chain travels in one frame of at most max_frame */
			if (mc > link_max_chain)
				link_max_chain = mc;
			for (q = 0; rc == 0 && q < specs[i].num_queues; q++)
				specs[i].pool_size[q] = vop_stream_pool_size(specs[i].queue_size[q], mc);
		}
	}
	free(cfg);
	if (rc == 0)
		rc = vop_window_plan_for(specs, n, 0, &plan);
	free(specs);
	if (rc == 0)
		rc = vop_shm_create(NULL, plan.size + (1u << 20), &x);
	if (rc == 0) {
		rc = vop_window_create(x, NULL, &w);
		if (rc)
			vop_xport_destroy(x);
	}
	if (rc) {
		vop_throw_errno(env, rc, "stream window");
		return NULL;
	}
	h = vop_b_wrap_window(env, w, spin, poll, rt);
	if (!h)
		return NULL;
	b = vop_b_handle(env, h, true);
	if (!b)
		return NULL;
	b->stream_max_chain = device_side ? link_max_chain : 0;
	b->stream_base_chain = device_side ? max_chain : 0;
	/* Side 1: the bridge's proxy link. */
	rc = vop_shm_open_fd(b->w->x->fd, &x1);
	if (rc == 0) {
		rc = vop_window_attach(x1, &b->pw);
		if (rc)
			vop_xport_destroy(x1);
	}
	memset(&lc, 0, sizeof(lc));
	lc.spin_ns = spin;
	lc.poll_only = poll;
	lc.reset_timeout_ms = rt;
	if (rc == 0)
		rc = vop_link_create(b->pw, &lc, &b->pl);
	if (rc == 0)
		rc = vop_link_start(b->pl);
	if (rc) {
		vop_b_stream_close(b);
		vop_throw_errno(env, rc, "stream proxy side");
		return NULL;
	}
	return h;
}

uint32_t vop_b_stream_slot_bytes(const struct vop_devcfg *c, uint32_t base)
{
	if (!c->pipe && c->be.kind == VOP_DEVBACK_BLK && c->be.blk.seg_bytes + 4096u > base)
		return c->be.blk.seg_bytes + 4096u;
	return base;
}

/*
 * streamStart(h, {address, deviceSide, secret: Uint8Array | null, allowPlain, handshakeMs, idleMs,
 * devIds: number[], tls?: {ca, cert, key, peerId} | null, unixRoot?: string | null}): listen (device side, bound before this
 * returns) or dial, for every device published so far. With tls every connection runs TLS 1.3
 * with mutual certificates first (vop/stream_tls.h).
 */
napi_value vop_b_stream_start(napi_env env, napi_callback_info info)
{
	struct vop_sconn_config cc;
	char address[128], unix_root[VOP_PATH_MAX];
	uint8_t *secret = NULL;
	size_t secret_len = 0;
	uint32_t ids[VOP_MAX_DEVICES], n = 0, i;
	static char tls_str[4][VOP_STLS_PATH_MAX + 1]; /* the JS thread only; copied by start */
	struct vop_stls_config tls;
	napi_value sv, idv, tv;
	napi_valuetype t;
	bool present, is_array = false;
	int rc;

	GET_ARGS(2);
	if (b->sconn || !b->pl) {
		vop_throw_errno(env, b->sconn ? -EALREADY : -EINVAL, "stream start");
		return NULL;
	}
	memset(&cc, 0, sizeof(cc));
	bool has_root = false;

	if (!vop_get_str(env, argv[1], "stream", "address", false, address, sizeof(address), &present) ||
	    !vop_get_str(env, argv[1], "stream", "unixRoot", true, unix_root, sizeof(unix_root), &has_root) ||
	    !vop_get_bool(env, argv[1], "stream", "deviceSide", &cc.device_side) ||
	    !vop_get_bool(env, argv[1], "stream", "allowPlain", &cc.allow_plain) ||
	    !vop_get_u32(env, argv[1], "stream", "handshakeMs", 0, 600000, &cc.handshake_ms) ||
	    !vop_get_u32(env, argv[1], "stream", "idleMs", 0, 600000, &cc.idle_ms) ||
	    !vop_get_obj(env, argv[1], "stream", "devIds", false, &idv))
		return NULL;
	NODE_API_CALL(env, napi_get_named_property(env, argv[1], "secret", &sv));
	NODE_API_CALL(env, napi_typeof(env, sv, &t));
	if (t != napi_null && t != napi_undefined) {
		bool is_ta = false;
		napi_typedarray_type tt;
		void *data;

		if (napi_is_typedarray(env, sv, &is_ta) != napi_ok || !is_ta ||
		    napi_get_typedarray_info(env, sv, &tt, &secret_len, &data, NULL, NULL) != napi_ok ||
		    tt != napi_uint8_array || secret_len == 0 || secret_len > VOP_STREAM_MAX_SECRET) {
			napi_throw_type_error(env, "EINVAL", "stream.secret must be a Uint8Array of 1..256 bytes or null");
			return NULL;
		}
		secret = data;
	}
	NODE_API_CALL(env, napi_get_named_property(env, argv[1], "tls", &tv));
	NODE_API_CALL(env, napi_typeof(env, tv, &t));
	if (t != napi_null && t != napi_undefined) {
		if (!vop_get_str(env, tv, "stream.tls", "ca", false, tls_str[0], sizeof(tls_str[0]), &present) ||
		    !vop_get_str(env, tv, "stream.tls", "cert", false, tls_str[1], sizeof(tls_str[1]), &present) ||
		    !vop_get_str(env, tv, "stream.tls", "key", false, tls_str[2], sizeof(tls_str[2]), &present) ||
		    !vop_get_str(env, tv, "stream.tls", "peerId", false, tls_str[3], VOP_STLS_ID_MAX + 1, &present))
			return NULL;
		tls.ca = tls_str[0];
		tls.cert = tls_str[1];
		tls.key = tls_str[2];
		tls.peer_id = tls_str[3];
		cc.tls = &tls;
	}
	if (napi_is_array(env, idv, &is_array) != napi_ok || !is_array ||
	    napi_get_array_length(env, idv, &n) != napi_ok || n > VOP_MAX_DEVICES) {
		napi_throw_type_error(env, "EINVAL", "stream.devIds must be an array of at most 32 ids");
		return NULL;
	}
	for (i = 0; i < n; i++) {
		napi_value e;

		if (napi_get_element(env, idv, i, &e) != napi_ok || !vop_value_u32(env, e, "stream.devIds[]", &ids[i]))
			return NULL;
	}
	cc.address = address;
	cc.unix_root = has_root ? unix_root : NULL;
	cc.secret = secret;
	cc.secret_len = (uint32_t)secret_len;
	cc.max_chain = b->stream_max_chain;
	cc.dev_ids = ids;
	cc.ndevs = n;
	cc.real = b->l;
	rc = vop_sconn_start(b->pl, &cc, &b->sconn);
	if (rc) {
		vop_throw_errno(env, rc, cc.device_side ? "stream listen" : "stream dial");
		return NULL;
	}
	return vop_undefined(env);
}

static const char *const SCONN_STATES[] = { "stopped", "listening", "dialing", "handshake", "ready", "stopped" };

/* streamStatus(h) -> StreamStatusDto | null (not started) */
napi_value vop_b_stream_status(napi_env env, napi_callback_info info)
{
	struct vop_sconn_status st;
	napi_value obj;

	GET_ARGS(1);
	if (!b->sconn) {
		NODE_API_CALL(env, napi_get_null(env, &obj));
		return obj;
	}
	vop_sconn_status(b->sconn, &st);
	NODE_API_CALL(env, napi_create_object(env, &obj));
	if (!vop_set_str(env, obj, "state", st.state < 6 ? SCONN_STATES[st.state] : "stopped") ||
	    !vop_set_str(env, obj, "peer", st.peer) || !vop_set_u64(env, obj, "rttNs", st.rtt_ns) ||
	    !vop_set_u64(env, obj, "bytesSent", st.bytes_tx) || !vop_set_u64(env, obj, "bytesReceived", st.bytes_rx) ||
	    !vop_set_u64(env, obj, "connections", st.connections) ||
	    !vop_set_u64(env, obj, "disconnects", st.failures) || !vop_set_str(env, obj, "lastError", st.last_reason) ||
	    !vop_set_str(env, obj, "security", st.security))
		return NULL;
	return obj;
}
