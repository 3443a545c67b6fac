/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Devices on a link handle: publish (creator), attach (a byte pipe, or a
 * device backend of native/devices served by the handle's link worker),
 * detach, remove, reset, and what JavaScript reads back at scrape time as
 * plain objects: run state, table facts (queue sizes, features), queue and
 * backend counters, local endpoints, the console stream. Converts arguments
 * and results only; the devices live in native/devices and native/core.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_config.h"
#include "link_binding.h"
#include "napi_util.h"
#include "vop/dev_backend.h"

/* Index of the backend dev_id in b->backends, or -1. */
static int backend_index(const struct bwin *b, uint32_t dev_id)
{
	unsigned i;

	for (i = 0; i < b->nbackends; i++)
		if (vop_devback_id(b->backends[i]) == dev_id)
			return (int)i;
	return -1;
}

void vop_b_close_backends(struct bwin *b)
{
	while (b->nbackends)
		vop_devback_close(b->l, b->backends[--b->nbackends]);
}

/* The device id at argv[1], or false with a pending exception. */
static bool dev_id_arg(napi_env env, napi_value v, uint32_t *out)
{
	if (!vop_value_u32(env, v, "devId", out))
		return false;
	if (*out == 0) {
		vop_throw_prop_range(env, NULL, "devId", "must be in [1, 2^32)");
		return false;
	}
	return true;
}

/* The backend of device argv[1], or NULL with a pending exception (ENOENT). */
static struct vop_devback *backend_arg(napi_env env, struct bwin *b, napi_value v)
{
	uint32_t dev_id;
	int i;

	if (!dev_id_arg(env, v, &dev_id))
		return NULL;
	i = backend_index(b, dev_id);
	if (i < 0) {
		vop_throw_errno(env, -ENOENT, "no device backend with that id on this link");
		return NULL;
	}
	return b->backends[i];
}

/* Read a DeviceConfigDto into a heap struct (it holds a few KiB of strings). NULL with a pending exception. */
static struct vop_devcfg *config_arg(napi_env env, napi_value v)
{
	struct vop_devcfg *c = malloc(sizeof(*c));

	if (!c) {
		vop_throw_errno(env, -ENOMEM, "device config");
		return NULL;
	}
	if (!vop_devcfg_read(env, v, "device", c)) {
		free(c);
		return NULL;
	}
	return c;
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

/* devicePublish(h, device: DeviceConfigDto) -> slot: the creator publishes the table entry */
napi_value vop_b_device_publish(napi_env env, napi_callback_info info)
{
	struct vop_devcfg *c;
	struct vop_dev_spec spec;
	napi_value r;
	int rc;

	GET_ARGS(2);
	c = config_arg(env, argv[1]);
	if (!c)
		return NULL;
	rc = vop_devcfg_spec(c, b->w->side, &spec);
	if (rc == 0 && b->stream_max_chain && spec.device_side == b->w->side) {
		uint32_t slot = vop_b_stream_slot_bytes(c, b->stream_base_chain);
		unsigned q;

		/* Stream device side: the bridge lays each received chain out in one slot per entry. */
		if (slot > b->stream_max_chain)
			rc = -EINVAL; /* a device the window was not planned for */
		for (q = 0; rc == 0 && q < spec.num_queues; q++)
			spec.pool_size[q] = vop_stream_pool_size(spec.queue_size[q], slot);
	}
	free(c);
	if (rc == 0)
		rc = vop_devtab_publish(b->w, &spec);
	if (rc < 0) {
		vop_throw_errno(env, rc, rc == -EINVAL ? "publish device: a field is out of range" : "publish device");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_int32(env, rc, &r));
	return r;
}

/* deviceRemove(h, devId): the creator tombstones the entry (hot unplug) */
napi_value vop_b_device_remove(napi_env env, napi_callback_info info)
{
	uint32_t dev_id;
	int rc;

	GET_ARGS(2);
	if (!dev_id_arg(env, argv[1], &dev_id))
		return NULL;
	rc = vop_devtab_remove(b->w, dev_id);
	if (rc < 0) {
		vop_throw_errno(env, rc, "remove device");
		return NULL;
	}
	return vop_undefined(env);
}

/* deviceAttach(h, device: DeviceConfigDto): serve the device on this link (ENOENT until published) */
napi_value vop_b_device_attach(napi_env env, napi_callback_info info)
{
	struct vop_devcfg *c;
	struct vop_devback *be = NULL;
	const char *err = NULL;
	int rc;

	GET_ARGS(2);
	c = config_arg(env, argv[1]);
	if (!c)
		return NULL;
	atomic_store(&b->w->entry_problem, NULL); /* a refusal below names its own field */
	if (c->pipe) {
		rc = vop_link_attach_pipe(b->l, c->dev_id, c->role, &c->pc);
		err = "attach device";
	} else if (backend_index(b, c->dev_id) >= 0 || b->nbackends >= VOP_MAX_DEVICES) {
		rc = b->nbackends >= VOP_MAX_DEVICES ? -ENOSPC : -EEXIST;
		err = "attach device";
	} else {
		rc = b->ctx ? 0 : vop_devctx_create(b->w, &b->ctx);
		err = "device context";
		if (rc == 0)
			rc = vop_devback_open(b->ctx, b->l, &c->be, &be, &err);
	}
	free(c);
	if (rc) {
		throw_entry(env, b, rc, err ? err : "attach device");
		return NULL;
	}
	if (be)
		b->backends[b->nbackends++] = be;
	return vop_undefined(env);
}

/* deviceDetach(h, devId): stop serving a byte pipe, or close a backend with its surfaces */
napi_value vop_b_device_detach(napi_env env, napi_callback_info info)
{
	uint32_t dev_id;
	int i, rc;

	GET_ARGS(2);
	if (!dev_id_arg(env, argv[1], &dev_id))
		return NULL;
	i = backend_index(b, dev_id);
	if (i >= 0) {
		vop_devback_close(b->l, b->backends[i]);
		b->backends[i] = b->backends[--b->nbackends];
		return vop_undefined(env);
	}
	rc = vop_link_detach(b->l, dev_id);
	if (rc < 0) {
		vop_throw_errno(env, rc, "detach device");
		return NULL;
	}
	return vop_undefined(env);
}

/* deviceReset(h, devId): driver role, the reset handshake */
napi_value vop_b_device_reset(napi_env env, napi_callback_info info)
{
	uint32_t dev_id;
	int rc;

	GET_ARGS(2);
	if (!dev_id_arg(env, argv[1], &dev_id))
		return NULL;
	rc = vop_link_reset_device(b->l, dev_id);
	if (rc < 0) {
		vop_throw_errno(env, rc, "reset device");
		return NULL;
	}
	return vop_undefined(env);
}

/* enum vop_dev_run_state by number (link.h). */
static const char *run_state_name(int s)
{
	switch (s) {
	case VOP_DEVRUN_RESETTING:
		return "resetting";
	case VOP_DEVRUN_WAIT_DRIVER:
		return "wait-driver";
	case VOP_DEVRUN_RUNNING:
		return "running";
	case VOP_DEVRUN_BROKEN:
		return "broken";
	case VOP_DEVRUN_REMOVED:
		return "removed";
	default:
		return "unknown";
	}
}

/* deviceState(h, devId) -> 'resetting' | 'wait-driver' | 'running' | 'broken' | 'removed' | 'unknown' */
napi_value vop_b_device_state(napi_env env, napi_callback_info info)
{
	uint32_t dev_id;
	napi_value r;
	int rc;

	GET_ARGS(2);
	if (!dev_id_arg(env, argv[1], &dev_id))
		return NULL;
	rc = vop_link_dev_state(b->l, dev_id);
	if (rc < 0) {
		vop_throw_errno(env, rc, "device state");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_string_utf8(env, run_state_name(rc), NAPI_AUTO_LENGTH, &r));
	return r;
}

/*
 * deviceInfo(h, devId) -> { deviceType, queueSizes, featuresOffered, featuresAccepted }: the
 * device's table entry as this side validated it, and the features its driver accepted.
 */
napi_value vop_b_device_info(napi_env env, napi_callback_info info)
{
	struct vop_dev_info di;
	struct vop_dev_side_view drv;
	uint64_t accepted;
	uint32_t dev_id;
	napi_value obj, sizes, v;
	unsigned k;
	int rc;

	GET_ARGS(2);
	if (!dev_id_arg(env, argv[1], &dev_id))
		return NULL;
	rc = vop_devtab_find_bounded(b->w, dev_id, &di);
	if (rc) {
		vop_throw_errno(env, rc, "device info");
		return NULL;
	}
	/* The driver side's block: features accepted, current once it claimed this occupant. */
	vop_devtab_side_read(&di, di.device_side ^ 1u, &drv);
	accepted = drv.features;
	NODE_API_CALL(env, napi_create_object(env, &obj));
	NODE_API_CALL(env, napi_create_array_with_length(env, di.num_queues, &sizes));
	for (k = 0; k < di.num_queues; k++) {
		NODE_API_CALL(env, napi_create_uint32(env, di.queues[k].size, &v));
		NODE_API_CALL(env, napi_set_element(env, sizes, k, v));
	}
	NODE_API_CALL(env, napi_set_named_property(env, obj, "queueSizes", sizes));
	if (!vop_set_u32(env, obj, "deviceType", di.device_type) ||
	    !vop_set_u64(env, obj, "featuresOffered", di.features_offered) ||
	    !vop_set_u64(env, obj, "featuresAccepted", accepted))
		return NULL;
	return obj;
}

/* A vq.h counter block as a QueueStatsDto. NULL with a pending exception. */
napi_value vop_b_vq_stats_object(napi_env env, const struct vop_vq_stats *sp)
{
	const struct vop_vq_stats s = *sp;
	napi_value obj, errs;
	unsigned r;

	NODE_API_CALL(env, napi_create_object(env, &obj));
	NODE_API_CALL(env, napi_create_object(env, &errs));
	/* Violations and local errors by stable reason name, nonzero ones only. */
	for (r = 1; r < VOP_VQ_REASON_COUNT; r++)
		if (s.c[VOP_VQS_ERR_BASE + r] && !vop_set_u64(env, errs, vop_vq_reason_name(r), s.c[VOP_VQS_ERR_BASE + r]))
			return NULL;
	NODE_API_CALL(env, napi_set_named_property(env, obj, "errorsByReason", errs));
	if (!vop_set_u64(env, obj, "buffers", s.c[VOP_VQS_BUFFERS]) || !vop_set_u64(env, obj, "bytes", s.c[VOP_VQS_BYTES]) ||
	    !vop_set_u64(env, obj, "notificationsSent", s.c[VOP_VQS_NOTIFY_SENT]) ||
	    !vop_set_u64(env, obj, "notificationsSuppressed", s.c[VOP_VQS_NOTIFY_SUPPRESSED]) ||
	    !vop_set_u64(env, obj, "wakeups", s.c[VOP_VQS_WAKEUPS]) || !vop_set_u64(env, obj, "pollNs", s.c[VOP_VQS_POLL_NS]) ||
	    !vop_set_u64(env, obj, "sleepNs", s.c[VOP_VQS_SLEEP_NS]) || !vop_set_u64(env, obj, "errors", s.c[VOP_VQS_ERRORS]) ||
	    !vop_set_u64(env, obj, "resets", s.c[VOP_VQS_RESETS]) ||
	    !vop_set_str(env, obj, "broken",
			 s.c[VOP_VQS_BROKEN] ? vop_vq_reason_name((unsigned)s.c[VOP_VQS_BROKEN]) : NULL))
		return NULL;
	return obj;
}

/* queueStats(h, devId, queue) -> QueueStatsDto (the vq.h counter block, named) */
napi_value vop_b_queue_stats(napi_env env, napi_callback_info info)
{
	struct vop_vq_stats s;
	uint32_t dev_id, q;
	int rc;

	GET_ARGS(3);
	if (!dev_id_arg(env, argv[1], &dev_id) || !vop_value_u32(env, argv[2], "queue", &q))
		return NULL;
	rc = vop_link_queue_stats(b->l, dev_id, q, &s);
	if (rc) {
		vop_throw_errno(env, rc, "queue stats");
		return NULL;
	}
	return vop_b_vq_stats_object(env, &s);
}

#define SET(name, v)                                      \
	do {                                              \
		if (!vop_set_u64(env, obj, (name), (v))) \
			return NULL;                      \
	} while (0)

/* A blk device's latency histograms: [{ op, bucketCounts: BigUint64Array, sumNs }] for ops seen. */
static napi_value blk_latency(napi_env env, const struct vop_blk_stats *s)
{
	napi_value arr, item, counts;
	unsigned op, k, n = 0;

	NODE_API_CALL(env, napi_create_array(env, &arr));
	for (op = 0; op < VOP_BLK_OPS; op++) {
		uint64_t total = 0;

		for (k = 0; k <= VOP_BLK_LAT_BOUNDS; k++)
			total += s->lat_count[op][k];
		if (total == 0)
			continue;
		NODE_API_CALL(env, napi_create_object(env, &item));
		counts = vop_u64_array(env, s->lat_count[op], VOP_BLK_LAT_BOUNDS + 1);
		if (!counts || !vop_set_str(env, item, "op", vop_blk_op_name(op)) ||
		    !vop_set_u64(env, item, "sumNs", s->lat_sum_ns[op]))
			return NULL;
		NODE_API_CALL(env, napi_set_named_property(env, item, "bucketCounts", counts));
		NODE_API_CALL(env, napi_set_element(env, arr, n++, item));
	}
	return arr;
}

/* A backend's counters as a DeviceCountersDto (null when not valid). NULL with a pending exception. */
napi_value vop_b_counters_object(napi_env env, const struct vop_devback_counters *cp)
{
	const struct vop_devback_counters c = *cp;
	napi_value obj;

	if (!c.valid) {
		NODE_API_CALL(env, napi_get_null(env, &obj));
		return obj;
	}
	NODE_API_CALL(env, napi_create_object(env, &obj));
	switch (c.kind) {
	case VOP_DEVBACK_BLK: {
		napi_value lat = blk_latency(env, &c.blk);

		if (!lat || !vop_set_str(env, obj, "kind", "blk"))
			return NULL;
		SET("reads", c.blk.reads);
		SET("writes", c.blk.writes);
		SET("flushes", c.blk.flushes);
		SET("discards", c.blk.discards);
		SET("writeZeroes", c.blk.write_zeroes);
		SET("getIds", c.blk.get_ids);
		SET("bytesRead", c.blk.bytes_read);
		SET("bytesWritten", c.blk.bytes_written);
		SET("ioErrors", c.blk.ioerr);
		SET("unsupported", c.blk.unsupp);
		SET("badRequests", c.blk.bad_requests);
		SET("recovered", c.blk.recovered);
		NODE_API_CALL(env, napi_set_named_property(env, obj, "latency", lat));
		break;
	}
	case VOP_DEVBACK_NET:
		if (!vop_set_str(env, obj, "kind", "net"))
			return NULL;
		SET("txFrames", c.net.tx_frames);
		SET("rxFrames", c.net.rx_frames);
		SET("txBytes", c.net.tx_bytes);
		SET("rxBytes", c.net.rx_bytes);
		SET("txDropped", c.net.tx_dropped);
		SET("rxDropped", c.net.rx_dropped);
		SET("badHeaders", c.net.bad_headers);
		SET("gsoFrames", c.net.gso_frames);
		SET("rxBuffers", c.net.rx_buffers);
		break;
	case VOP_DEVBACK_CONSOLE:
		if (!vop_set_str(env, obj, "kind", "console"))
			return NULL;
		SET("inBytes", c.console.in_bytes);
		SET("outBytes", c.console.out_bytes);
		SET("dropped", c.console.dropped);
		SET("logBytes", c.console.log_bytes);
		SET("rotations", c.console.rotations);
		SET("zeroLen", c.console.zero_len);
		break;
	}
	return obj;
}

/* deviceCounters(h, devId) -> DeviceCountersDto | null: a pipe's or a backend's own counters */
napi_value vop_b_device_counters(napi_env env, napi_callback_info info)
{
	struct vop_devback_counters c;
	uint32_t dev_id;
	napi_value obj;
	int i;

	GET_ARGS(2);
	if (!dev_id_arg(env, argv[1], &dev_id))
		return NULL;
	i = backend_index(b, dev_id);
	if (i < 0) {
		struct vop_pipe_stats p;
		int rc = vop_link_pipe_stats(b->l, dev_id, &p);

		if (rc) {
			vop_throw_errno(env, rc, "device counters");
			return NULL;
		}
		NODE_API_CALL(env, napi_create_object(env, &obj));
		if (!vop_set_str(env, obj, "kind", "pipe"))
			return NULL;
		SET("txMsgs", p.tx_msgs);
		SET("rxMsgs", p.rx_msgs);
		SET("badMsgs", p.bad_msgs);
		return obj;
	}
	vop_devback_counters(b->backends[i], &c);
	return vop_b_counters_object(env, &c);
}
#undef SET

/* deviceEndpoints(h, devId) -> DeviceEndpointsDto: a backend's local surfaces (null where none) */
napi_value vop_b_device_endpoints(napi_env env, napi_callback_info info)
{
	struct vop_devback_endpoints e;
	struct vop_devback *be;
	bool console;
	napi_value obj;

	GET_ARGS(2);
	be = backend_arg(env, b, argv[1]);
	if (!be)
		return NULL;
	vop_devback_endpoints(be, &e);
	console = vop_devback_kind(be) == VOP_DEVBACK_CONSOLE;
	NODE_API_CALL(env, napi_create_object(env, &obj));
	if (!vop_set_str(env, obj, "tap", e.tap[0] ? e.tap : NULL) ||
	    !vop_set_str(env, obj, "netns", e.netns[0] ? e.netns : NULL) ||
	    !vop_set_str(env, obj, "pty", console ? e.pty : NULL) ||
	    !vop_set_str(env, obj, "nbdSocket", e.nbd_socket[0] ? e.nbd_socket : NULL) ||
	    !(e.nbd_port ? vop_set_u32(env, obj, "nbdPort", (uint32_t)e.nbd_port) : vop_set_null(env, obj, "nbdPort")) ||
	    !(e.has_nbd_size ? vop_set_u64(env, obj, "nbdSizeBytes", e.nbd_size) : vop_set_null(env, obj, "nbdSizeBytes")))
		return NULL;
	return obj;
}

/* The console of device argv[1], or NULL with a pending exception. */
static struct vop_console *console_arg(napi_env env, struct bwin *b, napi_value v)
{
	struct vop_devback *be = backend_arg(env, b, v);
	struct vop_console *c = be ? vop_devback_console(be) : NULL;

	if (be && !c)
		vop_throw_errno(env, -EINVAL, "not a console device");
	return c;
}

/* consoleRead(h, devId, reader, maxBytes) -> { data: Buffer, lost: bigint } */
napi_value vop_b_console_read(napi_env env, napi_callback_info info)
{
	struct vop_console *c;
	uint32_t reader, max, n;
	uint64_t lost = 0;
	napi_value obj, data, sliced, subarray, args[2];
	void *p;

	GET_ARGS(4);
	c = console_arg(env, b, argv[1]);
	if (!c || !vop_value_u32(env, argv[2], "reader", &reader) || !vop_value_u32(env, argv[3], "maxBytes", &max))
		return NULL;
	if (reader >= 4) {
		vop_throw_prop_range(env, NULL, "reader", "must be in [0, 3]");
		return NULL;
	}
	if (max > (1u << 20))
		max = 1u << 20;
	NODE_API_CALL(env, napi_create_buffer(env, max, &p, &data));
	n = vop_console_read_out(c, reader, p, max, &lost);
	/* data.subarray(0, n): the bytes actually read */
	NODE_API_CALL(env, napi_get_named_property(env, data, "subarray", &subarray));
	NODE_API_CALL(env, napi_create_uint32(env, 0, &args[0]));
	NODE_API_CALL(env, napi_create_uint32(env, n, &args[1]));
	NODE_API_CALL(env, napi_call_function(env, data, subarray, 2, args, &sliced));
	NODE_API_CALL(env, napi_create_object(env, &obj));
	NODE_API_CALL(env, napi_set_named_property(env, obj, "data", sliced));
	if (!vop_set_u64(env, obj, "lost", lost))
		return NULL;
	return obj;
}

/* consoleWrite(h, devId, data: Uint8Array) -> bytes accepted (0 while the input buffer is full) */
napi_value vop_b_console_write(napi_env env, napi_callback_info info)
{
	struct vop_console *c;
	napi_value res, ab;
	void *p = NULL;
	size_t len = 0, off;
	bool is_ta = false;
	napi_typedarray_type tt;

	GET_ARGS(3);
	c = console_arg(env, b, argv[1]);
	if (!c)
		return NULL;
	if (napi_is_typedarray(env, argv[2], &is_ta) != napi_ok || !is_ta ||
	    napi_get_typedarray_info(env, argv[2], &tt, &len, &p, &ab, &off) != napi_ok || tt != napi_uint8_array) {
		vop_throw_prop_type(env, NULL, "data", "must be a Uint8Array");
		return NULL;
	}
	NODE_API_CALL(env, napi_create_uint32(env, vop_console_write_in(c, p, (uint32_t)(len > UINT32_MAX ? UINT32_MAX : len)),
					      &res));
	return res;
}
