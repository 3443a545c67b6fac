/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The link handle (one side of one window plus its link worker and the
 * device backends it serves) shared by link_binding.c (windows, the worker,
 * events, link counters) and device_binding.c (devices on the link), and
 * the exported callbacks of both, registered by addon.c in the order of
 * agent/src/native/native.ts.
 */
#ifndef VOP_BINDING_LINK_H
#define VOP_BINDING_LINK_H

#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>

#include "vop/dev_backend.h"
#include "vop/link.h"
#include "vop/stream.h"
#include "vop/window.h"

struct bwin {
	struct vop_window *w;          /* JS thread; NULL after close */
	struct vop_link *l;            /* JS thread; NULL after close */
	pthread_mutex_t ev_lock;       /* guards tsfn between JS thread and worker */
	napi_threadsafe_function tsfn; /* event sink, or NULL */
	napi_env env;                  /* env that owns the handle (JS thread only) */
	bool hook;                     /* env cleanup hook registered */
	struct vop_devctx *ctx;        /* JS thread; created with the first device backend */
	struct vop_devback *backends[VOP_MAX_DEVICES]; /* JS thread */
	unsigned nbackends;
	/* stream transport (stream_binding.c): side 1 of the private window and its proxy link */
	struct vop_window *pw;      /* JS thread; NULL unless a stream window */
	struct vop_link *pl;        /* the bridge's proxy link on pw */
	struct vop_sconn *sconn;    /* the connection thread, once started */
	uint32_t stream_max_chain;  /* device side: the largest chain slot of any device; 0 = not */
	uint32_t stream_base_chain; /* device side: the slot of a device that needs no larger one */
};

struct vop_devcfg;
/*
 * Device side of a stream link: bytes of one chain slot of device c, base for most devices; a blk
 * device gets its segment plus 4 KiB (a request is one chain: header, data, status).
 */
uint32_t vop_b_stream_slot_bytes(const struct vop_devcfg *c, uint32_t base);

/* Unwrap a link handle after checking its type tag; NULL with a pending exception (EBADF if closed and open). */
struct bwin *vop_b_handle(napi_env env, napi_value v, bool open);

/* Fetch the handle (argv[0]) plus up to n-1 more args into argv, b. */
#define GET_ARGS(n)                                                                         \
	size_t argc = (n);                                                                  \
	napi_value argv[(n)];                                                               \
	struct bwin *b;                                                                     \
	NODE_API_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));           \
	if (argc < (n)) {                                                                   \
		napi_throw_type_error(env, "EINVAL", "missing arguments");                  \
		return NULL;                                                                \
	}                                                                                   \
	b = vop_b_handle(env, argv[0], true);                                               \
	if (!b)                                                                             \
		return NULL

/* link_binding.c */
napi_value vop_b_window_create(napi_env env, napi_callback_info info);
napi_value vop_b_window_attach(napi_env env, napi_callback_info info);
napi_value vop_b_window_reattach(napi_env env, napi_callback_info info);
napi_value vop_b_window_info(napi_env env, napi_callback_info info);
napi_value vop_b_window_close(napi_env env, napi_callback_info info);
napi_value vop_b_window_layout(napi_env env, napi_callback_info info);
napi_value vop_b_start(napi_env env, napi_callback_info info);
napi_value vop_b_stop(napi_env env, napi_callback_info info);
napi_value vop_b_link_stats(napi_env env, napi_callback_info info);
napi_value vop_b_on_event(napi_env env, napi_callback_info info);

/* link_binding.c: wrap a fresh window side (created by the caller) as a handle; NULL with an exception. */
napi_value vop_b_wrap_window(napi_env env, struct vop_window *w, uint64_t spin_ns, bool poll_only,
			     uint32_t reset_timeout_ms);
/* Unwrap a handle for the stream calls (stream_binding.c). */
void vop_b_stream_close(struct bwin *b);

/* stream_binding.c */
napi_value vop_b_stream_open(napi_env env, napi_callback_info info);
napi_value vop_b_stream_start(napi_env env, napi_callback_info info);
napi_value vop_b_stream_status(napi_env env, napi_callback_info info);

/* device_binding.c */
napi_value vop_b_device_publish(napi_env env, napi_callback_info info);
napi_value vop_b_device_remove(napi_env env, napi_callback_info info);
napi_value vop_b_device_attach(napi_env env, napi_callback_info info);
napi_value vop_b_device_detach(napi_env env, napi_callback_info info);
napi_value vop_b_device_reset(napi_env env, napi_callback_info info);
napi_value vop_b_device_state(napi_env env, napi_callback_info info);
napi_value vop_b_device_info(napi_env env, napi_callback_info info);
napi_value vop_b_queue_stats(napi_env env, napi_callback_info info);
napi_value vop_b_device_counters(napi_env env, napi_callback_info info);
napi_value vop_b_device_endpoints(napi_env env, napi_callback_info info);
napi_value vop_b_console_read(napi_env env, napi_callback_info info);
napi_value vop_b_console_write(napi_env env, napi_callback_info info);

/* Shared by the device and vhost-user bindings (device_binding.c). */
struct vop_vq_stats;
struct vop_devback_counters;
napi_value vop_b_vq_stats_object(napi_env env, const struct vop_vq_stats *s);
napi_value vop_b_counters_object(napi_env env, const struct vop_devback_counters *c);

/* vhost-user devices (vhost_binding.c) */
napi_value vop_b_vhost_open(napi_env env, napi_callback_info info);
napi_value vop_b_vhost_close(napi_env env, napi_callback_info info);
napi_value vop_b_vhost_status(napi_env env, napi_callback_info info);
napi_value vop_b_vhost_queue_stats(napi_env env, napi_callback_info info);
napi_value vop_b_vhost_counters(napi_env env, napi_callback_info info);
napi_value vop_b_vhost_endpoints(napi_env env, napi_callback_info info);

/* Close every device backend of b (worker stopped first by the caller). */
void vop_b_close_backends(struct bwin *b);

#endif /* VOP_BINDING_LINK_H */
