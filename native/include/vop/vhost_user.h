/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user back-end: the device side of a virtio device served to a stock
 * virtio driver in a QEMU guest (or to DPDK's virtio-user) over a Unix
 * socket, as QEMU's docs/interop/vhost-user.rst describes it. The front-end
 * shares its memory (SET_MEM_TABLE: one fd per region), places the split
 * rings in it (SET_VRING_ADDR: front-end user addresses) and signals with
 * eventfds (kick: front-end -> us, call: us -> front-end).
 *
 * The front-end is as hostile as any peer: every message is parsed by the
 * pure function vop_vhu_msg_parse() (sizes, fd counts, indices, queue
 * sizes, region overflow and overlap) and checked again against the
 * connection's state (ring addresses inside the memory table, features
 * offered, shared memory that cannot shrink under us). A message that breaks
 * a rule ends that connection (a reply saying so first when the front-end
 * asked for one); the device resets, the agent and its other devices carry
 * on, and the socket takes the next connection.
 *
 * Guest memory becomes region-table entries (vop/region.h): guest-physical
 * addresses for descriptors, front-end user addresses for the rings, each
 * translated overflow-safely exactly like a window. Rings are served by the
 * split-virtqueue code of vq.h and a device backend through struct
 * vop_devback_ops (vop/link.h): the same virtio-net and virtio-blk
 * backends a link serves (native/devices/dev_vhost.c wires them).
 *
 * Threading: each device has a control thread (socket, messages) and a
 * worker thread (polls the backend, sleeps on the kick eventfds). The
 * backend's ops run under the device's lock, from either thread, never
 * concurrently. vop_vhu_* calls below are thread-safe unless noted.
 */
#ifndef VOP_VHOST_USER_H
#define VOP_VHOST_USER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vop/link.h"
#include "vop/region.h"
#include "vop/vq.h"

/* ------------------------------------------------------------------ */
/* Wire format                                                          */
/* ------------------------------------------------------------------ */

#define VOP_VHU_HDR_SIZE 12u           /* request, flags, size: u32 each, native order */
#define VOP_VHU_VERSION 1u             /* flags bits 0-1 */
#define VOP_VHU_FLAG_REPLY (1u << 2)   /* set on every back-end reply */
#define VOP_VHU_FLAG_NEED_REPLY (1u << 3)
#define VOP_VHU_MAX_REGIONS 8u         /* SET_MEM_TABLE without CONFIGURE_MEM_SLOTS */
#define VOP_VHU_MAX_FDS 8u             /* fds one message may carry */
#define VOP_VHU_CONFIG_MAX 256u        /* virtio config space bytes we serve */
#define VOP_VHU_CONFIG_HDR 12u         /* offset, size, flags */
/* Largest payload of any request we accept: a config message of 256 bytes. */
#define VOP_VHU_MAX_PAYLOAD (VOP_VHU_CONFIG_HDR + VOP_VHU_CONFIG_MAX)
#define VOP_VHU_MAX_QUEUES 8u          /* virtqueues of one device (VOP_MAX_QUEUES) */

enum vop_vhu_request {
	VOP_VHU_GET_FEATURES = 1,
	VOP_VHU_SET_FEATURES = 2,
	VOP_VHU_SET_OWNER = 3,
	VOP_VHU_RESET_OWNER = 4,
	VOP_VHU_SET_MEM_TABLE = 5,
	VOP_VHU_SET_LOG_BASE = 6,
	VOP_VHU_SET_LOG_FD = 7,
	VOP_VHU_SET_VRING_NUM = 8,
	VOP_VHU_SET_VRING_ADDR = 9,
	VOP_VHU_SET_VRING_BASE = 10,
	VOP_VHU_GET_VRING_BASE = 11,
	VOP_VHU_SET_VRING_KICK = 12,
	VOP_VHU_SET_VRING_CALL = 13,
	VOP_VHU_SET_VRING_ERR = 14,
	VOP_VHU_GET_PROTOCOL_FEATURES = 15,
	VOP_VHU_SET_PROTOCOL_FEATURES = 16,
	VOP_VHU_GET_QUEUE_NUM = 17,
	VOP_VHU_SET_VRING_ENABLE = 18,
	VOP_VHU_GET_CONFIG = 24,
	VOP_VHU_SET_CONFIG = 25,
	VOP_VHU_GET_INFLIGHT_FD = 31,
	VOP_VHU_SET_INFLIGHT_FD = 32,
	VOP_VHU_RESET_DEVICE = 34,
	VOP_VHU_REQUEST_MAX = 41, /* requests are < this; names by number below */
};

/* Stable name of a request ("SET_MEM_TABLE"), "UNKNOWN" for others. */
const char *vop_vhu_request_name(uint32_t request);

/* Virtio feature bits the transport itself decides. */
#define VOP_VHU_F_PROTOCOL_FEATURES 30u /* vhost-user: GET/SET_PROTOCOL_FEATURES exist */
#define VOP_VHU_F_LOG_ALL 26u           /* dirty logging (migration): not offered */
#define VOP_VHU_F_IOMMU_PLATFORM 33u    /* IOTLB: not offered */
#define VOP_VHU_F_RING_PACKED 34u       /* packed rings: not offered, refused */

/* Protocol feature bits (vhost-user.rst "Protocol features"). */
#define VOP_VHU_PF_MQ 0u
#define VOP_VHU_PF_REPLY_ACK 3u
#define VOP_VHU_PF_CONFIG 9u
#define VOP_VHU_PF_INFLIGHT_SHMFD 12u
#define VOP_VHU_PF_RESET_DEVICE 13u

/* SET_VRING_KICK/CALL/ERR payload: bits 0-7 index, bit 8 "no fd" (poll). */
#define VOP_VHU_VRING_IDX_MASK 0xffu
#define VOP_VHU_VRING_NOFD (1u << 8)
/* SET_VRING_ADDR flags: bit 0 asks for used-ring logging (migration): refused. */
#define VOP_VHU_VRING_F_LOG 1u

/* One region of SET_MEM_TABLE, as sent. */
struct vop_vhu_region {
	uint64_t gpa;         /* guest-physical address (descriptors name these) */
	uint64_t size;        /* bytes, > 0 */
	uint64_t uva;         /* front-end user address (rings are named by these) */
	uint64_t mmap_offset; /* where the region starts in its fd */
};

/* A parsed, bounds-checked front-end message (a private copy of the payload). */
struct vop_vhu_msg {
	uint32_t request;  /* enum vop_vhu_request */
	uint32_t flags;    /* as sent */
	uint32_t size;     /* payload bytes */
	bool need_reply;   /* NEED_REPLY set (answer only once REPLY_ACK is negotiated) */
	unsigned nfds;     /* fds that came with it (checked against the request) */
	union {
		uint64_t u64;                            /* SET_FEATURES, SET_PROTOCOL_FEATURES */
		struct {
			uint32_t index, num;
		} state;                                 /* VRING_NUM/BASE/ENABLE, GET_VRING_BASE */
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log; /* front-end user addresses */
		} addr;                                  /* SET_VRING_ADDR */
		struct {
			uint32_t index;
			bool nofd;
		} vfd;                                   /* SET_VRING_KICK/CALL/ERR */
		struct {
			uint32_t nregions;
			struct vop_vhu_region r[VOP_VHU_MAX_REGIONS];
		} mem;                                   /* SET_MEM_TABLE */
		struct {
			uint32_t offset, size, flags;
			uint8_t data[VOP_VHU_CONFIG_MAX];
		} config;                                /* GET_CONFIG, SET_CONFIG */
		struct {
			uint64_t mmap_size, mmap_offset;
			uint16_t num_queues, queue_size;
		} inflight;                              /* GET/SET_INFLIGHT_FD */
	};
};

/* What the parser checks indices and sizes against. */
struct vop_vhu_limits {
	uint16_t max_queues;     /* ring index bound, 1 .. VOP_VHU_MAX_QUEUES */
	uint16_t max_queue_size; /* largest SET_VRING_NUM, a power of two <= 32768 */
};

/*
 * vop_vhu_msg_parse - check one complete message (header plus the size
 * bytes it announced, len bytes in all) that arrived with nfds file
 * descriptors, and copy it into *out. Pure: no I/O, no allocation, no state.
 * Checks: header present, version 1, no reply flag, size == len - 12 and
 * within this request's payload size, the request known and supported, the
 * fd count this request takes, ring indices < max_queues, ring sizes powers
 * of two <= max_queue_size, ring bases <= 0xffff, no logging, memory tables
 * of 1..8 regions each non-empty, not wrapping (guest, user and mmap
 * offset) and not overlapping another (in guest or user addresses), config
 * windows inside 256 bytes, inflight geometries in range.
 * Returns 0, -EBADMSG (framing: size, version, flags, fd count),
 * -EOPNOTSUPP (a request we do not implement or did not offer), -EINVAL (a
 * field out of range), -E2BIG (too many regions), -EOVERFLOW (a region
 * wraps) or -ENOTUNIQ (regions overlap); *why (if not NULL) names the field
 * (a static string).
 */
int vop_vhu_msg_parse(const uint8_t *buf, size_t len, unsigned nfds, const struct vop_vhu_limits *lim,
		      struct vop_vhu_msg *out, const char **why);

/* ------------------------------------------------------------------ */
/* A back-end device on one socket                                      */
/* ------------------------------------------------------------------ */

struct vop_vhu;

enum vop_vhu_event_type {
	VOP_VHU_EV_CONNECTED = 1,      /* a front-end connected (count = connections so far) */
	VOP_VHU_EV_DISCONNECTED = 2,   /* it went away or was cut off (error = errno, 0 on EOF); the device reset */
	VOP_VHU_EV_PROTOCOL_ERROR = 3, /* a message broke a rule: request, error, why; the connection ends */
	VOP_VHU_EV_STARTED = 4,        /* the rings run (features = negotiated) */
	VOP_VHU_EV_STOPPED = 5,        /* the rings stopped (GET_VRING_BASE, disable, reset, disconnect) */
	VOP_VHU_EV_QUEUE_BROKEN = 6,   /* queue, reason (enum vop_vq_reason) */
	VOP_VHU_EV_BACKEND_FAILED = 7, /* the backend's poll failed (error = errno) */
};

struct vop_vhu_event {
	uint32_t type;      /* enum vop_vhu_event_type */
	uint32_t queue;     /* QUEUE_BROKEN */
	uint32_t reason;    /* QUEUE_BROKEN: enum vop_vq_reason */
	int32_t error;      /* negative errno or 0 */
	uint32_t request;   /* PROTOCOL_ERROR: the request */
	const char *why;    /* PROTOCOL_ERROR: static string naming the rule */
	uint64_t features;  /* STARTED */
	uint64_t count;     /* CONNECTED: connections so far */
};

struct vop_vhu_config {
	const char *path;          /* the socket, absolute, fits sun_path */
	const char *root;          /* directory path must lie in (vop/path.h); NULL: its own directory */
	bool server;               /* we listen (the front-end connects) or we connect (front-end listens) */
	uint32_t socket_mode;      /* server: mode of the socket file; 0 = 0600 */
	int64_t socket_gid;        /* server: group of the socket file; -1 = ours */
	uint32_t reconnect_ms;     /* client: retry period while the front-end is away; 0 = 1000 */
	uint16_t num_queues;       /* virtqueues of one group (net: 2, a queue pair; blk: 1) */
	/*
	 * Queue groups, each served by its own backend instance
	 * (vop_vhu_start_groups()); 0 = 1. num_queues * groups rings in all, at
	 * most VOP_VHU_MAX_QUEUES. GET_QUEUE_NUM answers groups (net: the queue
	 * pairs of PROTOCOL_F_MQ). A group starts as soon as its own rings are
	 * ready and enabled: the pairs a front-end leaves disabled are not
	 * needed for the others to run.
	 */
	uint16_t groups;
	uint16_t max_queue_size;   /* largest ring accepted; 0 = 32768 */
	uint64_t max_mem_bytes;    /* bound on the sum of region sizes; 0 = 64 GiB */
	/*
	 * Virtio feature bits offered (device bits, VIRTIO_F_EVENT_IDX,
	 * INDIRECT_DESC; VERSION_1 and PROTOCOL_FEATURES are added). What the
	 * front-end accepts goes to the backend's start(), plus VOP_F_INFLIGHT
	 * when an inflight area is in place (blk journal).
	 */
	uint64_t features;
	bool config_space;         /* offer PROTOCOL_F_CONFIG (GET_CONFIG serves the config space) */
	bool inflight;             /* offer PROTOCOL_F_INFLIGHT_SHMFD (the blk journal lives there) */
	/*
	 * The backend completes every queue's buffers in the order it took
	 * them (net): a ring that stops is rewound to its used index. Otherwise
	 * (blk) stopping a ring first waits up to drain_ms for what was taken to
	 * complete.
	 */
	bool in_order;
	uint32_t drain_ms;         /* 0 = 5000 */
	/*
	 * Accept guest memory whose size the front-end could still shrink (an
	 * fd we cannot seal with F_SEAL_SHRINK): a shrink would kill the whole
	 * process with SIGBUS. Off by default; QEMU's memory-backend-memfd is
	 * sealed (seal=on), other memfds are sealed by us when they allow it.
	 */
	bool allow_unsealed;
	uint64_t spin_ns;          /* worker: busy-poll after the last work before sleeping; 0 = none */
	void (*on_event)(void *ctx, const struct vop_vhu_event *ev); /* any of our threads; must not block */
	void *ctx;
};

/*
 * vop_vhu_create - a device on cfg->path. Server: the socket is bound
 * beneath cfg->root (a stale socket there is replaced, anything else is
 * refused), given its mode and group, and only then listens. Client: the
 * path's directory is resolved beneath cfg->root now. No thread runs until
 * vop_vhu_start(). Returns 0 and *out, or -EINVAL, -ENOMEM, -errno of the
 * socket (-EADDRINUSE, -EEXIST, -EXDEV, -ENAMETOOLONG, ...).
 */
int vop_vhu_create(const struct vop_vhu_config *cfg, struct vop_vhu **out);

/*
 * vop_vhu_start - serve the device with backend (ops, be): starts the
 * control and worker threads. be stays the caller's; it must outlive the
 * device. Returns 0, -EALREADY or -errno (threads).
 */
int vop_vhu_start(struct vop_vhu *v, const struct vop_devback_ops *ops, void *be);

/*
 * vop_vhu_start_groups - the same for cfg.groups backends: bes[g] serves
 * rings [g * num_queues, (g + 1) * num_queues) (its queue q is ring
 * g * num_queues + q in vop_vhu_queue() and vop_vhu_notify()); n must be
 * cfg.groups. One worker thread polls every running group.
 */
int vop_vhu_start_groups(struct vop_vhu *v, const struct vop_devback_ops *ops, void *const *bes, unsigned n);

/*
 * vop_vhu_stop - end any connection (the backend is stopped first, then
 * guest memory is unmapped), join the threads, close and remove our socket
 * (server). The backend is not used after this; host calls stay harmless
 * until vop_vhu_destroy(). Idempotent; NULL ok.
 */
void vop_vhu_stop(struct vop_vhu *v);

/* vop_vhu_destroy - vop_vhu_stop() and free. NULL ok. */
void vop_vhu_destroy(struct vop_vhu *v);

/* Where the backend's queue q starts (see vop_vhu_queue()). */
struct vop_vhu_qstart {
	uint16_t last_avail;  /* the front-end's ring base */
	uint16_t used_idx;    /* used->idx as the ring holds it */
	void *journal;        /* the queue's part of the inflight area, or NULL */
	uint64_t journal_bytes;
};

/*
 * Backend-facing host calls (the device context's host ops of dev_vhost.c);
 * valid while the backend is being started or runs.
 * vop_vhu_queue - the ring of queue q: cfg gets num, the negotiated
 * features, the translated desc/avail/used pointers and the guest-physical
 * region table; st where the device side resumes. 0, -EINVAL (q out of
 * range or not set up), -EPROTO (base more than a ring ahead of used).
 */
int vop_vhu_queue(struct vop_vhu *v, unsigned q, uint64_t features, struct vop_vq_config *cfg,
		  struct vop_vhu_qstart *st);
/* Signal queue q's call eventfd (if the front-end gave one). Any thread. */
void vop_vhu_notify(struct vop_vhu *v, unsigned q);
/* Make the worker run a poll round soon. Any thread. */
void vop_vhu_wake(struct vop_vhu *v);
/* Replace config space [0, len) (len <= VOP_VHU_CONFIG_MAX; GET_CONFIG serves it). */
void vop_vhu_config_write(struct vop_vhu *v, const void *cfg, uint32_t len);

/* State of a device, any thread. */
struct vop_vhu_status {
	bool connected;           /* a front-end is on the socket */
	bool running;             /* the rings run */
	bool failed;              /* the backend failed; nothing is polled until the next start */
	uint64_t features;        /* negotiated virtio features (0 until SET_FEATURES) */
	uint64_t protocol_features;
	uint64_t connections;     /* front-ends accepted so far */
	uint64_t disconnects;     /* connections that ended */
	uint64_t protocol_errors; /* connections ended for a bad message */
	uint64_t messages;        /* messages handled */
	uint64_t starts;          /* times the rings started */
	uint64_t mem_bytes;       /* guest memory mapped now */
	uint32_t regions;         /* regions mapped now */
	uint32_t last_request;    /* request of the last protocol error, 0 if none */
	int32_t last_error;       /* its -errno */
	const char *last_why;     /* its rule (static string), or NULL */
};
void vop_vhu_status(struct vop_vhu *v, struct vop_vhu_status *out);

/* Counters of ring q (vq.h; q over all groups), any thread. 0, -EINVAL (q out of range). */
int vop_vhu_queue_stats(struct vop_vhu *v, unsigned q, struct vop_vq_stats *out);

#endif /* VOP_VHOST_USER_H */
