/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to native/core: the state a link side keeps per attached device
 * and per link, shared by the worker (link.c) and the device lifecycle
 * over the shared entry (devreset.c). Nothing outside core includes it.
 */
#ifndef VOP_CORE_LINK_INTERNAL_H
#define VOP_CORE_LINK_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "vop/link.h"

/* One device served by a link side: always a backend (struct vop_devback_ops). */
struct link_dev {
	uint32_t dev_id;               /* key */
	enum vop_role role;            /* our role */
	struct vop_dev_info info;      /* table copy at attach */
	uint32_t run;                  /* enum vop_dev_run_state (relaxed: control threads read it) */
	uint32_t reset_val;            /* driver: reset generation we wait for; device: last acked */
	bool acked;                    /* device: we acked a reset in this session */
	bool timeout_reported;         /* driver: RESET_TIMEOUT event sent */
	bool needs_reset_reported;     /* driver: NEEDS_RESET event sent for this run */
	uint64_t reset_deadline;       /* driver: ns */
	uint64_t features;             /* negotiated */
	bool reported[VOP_MAX_QUEUES]; /* queue-broken event sent */
	const struct vop_devback_ops *ops;
	void *be;                      /* backend object */
	bool be_started;               /* between ops->start and ops->stop */
	bool be_failed;                /* poll failed: not polled again until the next start */
};

struct vop_link {
	struct vop_window *w;          /* not owned */
	struct vop_link_config cfg;    /* copy */
	pthread_mutex_t lock;          /* protects devs/ndevs vs control calls */
	struct link_dev *devs[VOP_MAX_DEVICES]; /* attached devices */
	unsigned ndevs;
	pthread_t thread;              /* worker, valid while running */
	bool running;                  /* control thread only */
	_Atomic int stop;              /* control -> worker */
	uint32_t devtab_gen;           /* worker: last generation seen */
	uint32_t peer_epoch;           /* worker: last peer epoch seen */
	uint64_t peer_hb;              /* worker: last peer heartbeat seen */
	uint32_t peer_kick;            /* worker: last peer kick word seen */
	uint64_t peer_hb_ns;           /* worker: when the heartbeat or the kick last moved */
	bool peer_gone;                /* worker: gone reported for this epoch */
	uint64_t last_hb_ns;           /* worker: our last heartbeat */
	uint64_t devtab_change_ns;     /* worker: when a table change was last seen */
	uint64_t devtab_churn_ns;      /* worker: start of the current run of changes */
	_Atomic unsigned failed;       /* enum vop_link_fail; worker sets once, anyone reads */
	uint64_t ls[VOP_LS_COUNT];     /* counters (relaxed, worker writes) */
};

/* link.c */
uint64_t vop_link_now_ns(void);
void vop_link_emit(struct vop_link *l, uint32_t type, uint32_t dev_id, uint32_t queue,
		   uint32_t reason, uint32_t epoch);
void vop_link_notify_peer(struct vop_link *l);
int vop_link_backend_stop(struct link_dev *d, bool wait);
int vop_link_backend_start(struct vop_link *l, struct link_dev *d, bool resume);

/*
 * devreset.c: the device lifecycle over the shared entry (reset handshake,
 * DRIVER_OK, DEVICE_NEEDS_RESET). Worker thread (or the control thread for
 * begin_reset / attached), link lock held. The step functions return the
 * work done (> 0 when something moved).
 */
void vop_devreset_attached(struct vop_link *l, struct link_dev *d);
void vop_devreset_begin(struct vop_link *l, struct link_dev *d);
unsigned vop_devreset_driver_step(struct vop_link *l, struct link_dev *d, uint64_t now);
unsigned vop_devreset_device_step(struct vop_link *l, struct link_dev *d);
void vop_devreset_needs_reset(struct vop_link *l, struct link_dev *d);

#endif /* VOP_CORE_LINK_INTERNAL_H */
