/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hostile-peer harness. Window A carries a healthy byte pipe (both sides in
 * this process). Window B has one real side and one FAKE side played by the
 * test, which writes one exact corruption into the rings. The test then
 * expects: B's queue broken with the right reason (event + per-reason
 * counter), A still moving data, and a reset handshake on B clearing it.
 */
#ifndef VOP_TEST_HOSTILE_H
#define VOP_TEST_HOSTILE_H

#include "helpers.h"

#define H_DEV 9u
#define H_QSIZE 16u
#define H_BUF 4096u

struct hostile {
	struct t_pair good;          /* window A: healthy pipe, dev 1 */
	char path[256];
	struct vop_window *w0, *w1;  /* window B sides: 0 creator, 1 attacher */
	struct vop_window *fake_w;   /* the side the test plays */
	struct vop_link *real;       /* the real link side on B */
	struct t_evlog ev;           /* its events */
	struct vop_dev_info info;    /* B's device entry */
	unsigned q;                  /* queue under attack */
	struct vop_vring_desc *desc; /* queue q rings, as the fake side sees them */
	struct vop_vring_avail *avail;
	struct vop_vring_used *used;
	uint8_t *pool;               /* queue q pool, local */
	uint64_t pool_peer;          /* and its peer address */
	uint16_t avail_idx;          /* fake driver: next avail idx */
	uint16_t used_idx;           /* fake device: next used idx */
};

static inline void h_bind_queue(struct hostile *h, unsigned q)
{
	struct vop_queue_desc *qd = &h->info.queues[q];

	h->q = q;
	h->desc = vop_window_ptr(h->fake_w, qd->desc_off, vop_vring_desc_bytes(qd->size));
	h->avail = vop_window_ptr(h->fake_w, qd->avail_off, vop_vring_avail_bytes(qd->size));
	h->used = vop_window_ptr(h->fake_w, qd->used_off, vop_vring_used_bytes(qd->size));
	h->pool = vop_window_ptr(h->fake_w, qd->pool_off, qd->pool_size);
	h->pool_peer = qd->pool_off;
}

static inline void h_open_window_b(struct hostile *h, uint64_t offered,
				   struct vop_link_config *c)
{
	struct vop_xport *x0, *x1;
	struct vop_dev_spec spec;

	t_pair_open(&h->good, "hgood", 4u << 20, 20000);
	t_pair_run_pipe(&h->good, 1, 256, 64);
	t_path(h->path, sizeof(h->path), "hbad");
	CHECK_EQ(vop_shm_create(h->path, 4u << 20, &x0), 0);
	CHECK_EQ(vop_window_create(x0, NULL, &h->w0), 0);
	CHECK_EQ(vop_shm_open(h->path, &x1), 0);
	CHECK_EQ(vop_window_attach(x1, &h->w1), 0);
	vop_pipe_spec(&spec, H_DEV, 1, H_QSIZE, H_BUF, offered);
	CHECK(vop_devtab_publish(h->w0, &spec) >= 0);
	CHECK_EQ(vop_devtab_find(h->w0, H_DEV, &h->info), 0);
	t_evlog_init(&h->ev);
	memset(c, 0, sizeof(*c));
	c->spin_ns = 20000;
	c->on_event = t_on_event;
	c->ctx = &h->ev;
	c->reset_timeout_ms = 2000;
}

/* Fake DRIVER on side 0; real DEVICE (pipe SINK on q0, SOURCE on q1) on side 1. */
static inline void hostile_open_device(struct hostile *h, uint64_t accepted)
{
	struct vop_link_config c;
	struct vop_pipe_config pc = t_pipe_cfg(64, VOP_PIPE_SINK, VOP_PIPE_OFF, 0);
	struct vop_dev_entry *e;

	memset(h, 0, sizeof(*h));
	h_open_window_b(h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC), &c);
	CHECK_EQ(vop_link_create(h->w1, &c, &h->real), 0);
	CHECK_EQ(vop_link_attach_pipe(h->real, H_DEV, VOP_ROLE_DEVICE, &pc), 0);
	CHECK_EQ(vop_link_start(h->real), 0);
	h->fake_w = h->w0;
	h_bind_queue(h, 0);
	/*
	 * Fake driver handshake in its own block of the entry (side 0): claim
	 * it for this occupant, reset, wait for the device's ack in its block
	 * (side 1), features, DRIVER_OK.
	 */
	e = h->info.entry;
	__atomic_store_n(&e->sides[0].status, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&e->sides[0].seq, h->info.seq, __ATOMIC_RELEASE);
	__atomic_store_n(&e->sides[0].reset, 1, __ATOMIC_RELEASE);
	vop_window_notify_peer(h->w0);
	CHECK(T_WAIT_UNTIL(__atomic_load_n(&e->sides[1].seq, __ATOMIC_ACQUIRE) == h->info.seq &&
				   __atomic_load_n(&e->sides[1].reset, __ATOMIC_ACQUIRE) == 1,
			   5000));
	__atomic_store_n(&e->sides[0].features, accepted | (1ull << VOP_F_VERSION_1),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&e->sides[0].status, VOP_STATUS_DRIVER_OK | VOP_STATUS_FEATURES_OK,
			 __ATOMIC_RELEASE);
	vop_window_notify_peer(h->w0);
	CHECK(T_WAIT_UNTIL(({
		struct vop_pipe_stats s__;
		vop_link_pipe_stats(h->real, H_DEV, &s__) == 0 && s__.state == VOP_DEVRUN_RUNNING;
	}), 5000));
}

/* Fake driver: write descriptor i. */
static inline void h_desc(struct hostile *h, uint16_t i, uint64_t addr, uint32_t len,
			  uint16_t flags, uint16_t next)
{
	h->desc[i].addr = addr;
	h->desc[i].len = len;
	h->desc[i].flags = flags;
	h->desc[i].next = next;
}

/* Fake driver: write an indirect table entry at local table t. */
static inline void h_ind(struct vop_vring_desc *t, uint16_t i, uint64_t addr, uint32_t len,
			 uint16_t flags, uint16_t next)
{
	t[i].addr = addr;
	t[i].len = len;
	t[i].flags = flags;
	t[i].next = next;
}

/* Fake driver: make head available, publish avail idx + delta_extra, ring. */
static inline void h_post(struct hostile *h, uint16_t head, uint16_t extra)
{
	h->avail->ring[h->avail_idx % H_QSIZE] = head;
	h->avail_idx = (uint16_t)(h->avail_idx + 1 + extra);
	__atomic_store_n(&h->avail->idx, h->avail_idx, __ATOMIC_RELEASE);
	vop_window_notify_peer(h->fake_w);
}

/* Fake DEVICE on side 1; real DRIVER (pipe SOURCE on q0, verify off) on side 0. */
static inline void hostile_open_driver(struct hostile *h)
{
	struct vop_link_config c;
	struct vop_pipe_config pc = t_pipe_cfg(64, VOP_PIPE_SOURCE, VOP_PIPE_OFF, 0);
	struct vop_dev_entry *e;
	uint32_t req;

	memset(h, 0, sizeof(*h));
	h_open_window_b(h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC), &c);
	pc.count = 4; /* four chains in flight, heads 0..3 */
	CHECK_EQ(vop_link_create(h->w0, &c, &h->real), 0);
	CHECK_EQ(vop_link_attach_pipe(h->real, H_DEV, VOP_ROLE_DRIVER, &pc), 0);
	CHECK_EQ(vop_link_start(h->real), 0);
	h->fake_w = h->w1;
	h_bind_queue(h, 0);
	e = h->info.entry;
	/* The real driver asks for a reset in its block (side 0); the fake device acks in its own. */
	CHECK(T_WAIT_UNTIL(__atomic_load_n(&e->sides[0].seq, __ATOMIC_ACQUIRE) == h->info.seq &&
				   (req = __atomic_load_n(&e->sides[0].reset, __ATOMIC_ACQUIRE)) != 0,
			   5000));
	__atomic_store_n(&e->sides[1].status, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&e->sides[1].seq, h->info.seq, __ATOMIC_RELEASE);
	__atomic_store_n(&e->sides[1].reset, req, __ATOMIC_RELEASE);
	vop_window_notify_peer(h->w1);
	CHECK(T_WAIT_UNTIL(__atomic_load_n(&h->avail->idx, __ATOMIC_ACQUIRE) == 4, 5000));
}

/* Fake device: publish a used element and ring. */
static inline void h_used(struct hostile *h, uint32_t id, uint32_t len, uint16_t extra)
{
	h->used->ring[h->used_idx % H_QSIZE].id = id;
	h->used->ring[h->used_idx % H_QSIZE].len = len;
	h->used_idx = (uint16_t)(h->used_idx + 1 + extra);
	__atomic_store_n(&h->used->idx, h->used_idx, __ATOMIC_RELEASE);
	vop_window_notify_peer(h->fake_w);
}

/*
 * Expect queue h->q of the real side broken with reason; the healthy link
 * keeps moving; then (fake driver case) a reset handshake clears it.
 */
static inline void hostile_expect(struct hostile *h, unsigned reason)
{
	struct vop_vq_stats st;
	uint32_t q = 99;
	uint64_t before;

	if (!T_WAIT_UNTIL(t_evlog_has(&h->ev, VOP_EV_QUEUE_BROKEN, -1, NULL), 5000)) {
		fprintf(stderr, "no QUEUE_BROKEN event (expected %s)\n", vop_vq_reason_name(reason));
		exit(T_FAIL);
	}
	if (!t_evlog_has(&h->ev, VOP_EV_QUEUE_BROKEN, (int)reason, &q)) {
		t_evlog_dump(&h->ev, "bad-link");
		fprintf(stderr, "expected reason %s\n", vop_vq_reason_name(reason));
		exit(T_FAIL);
	}
	CHECK_EQ(q, h->q);
	CHECK_EQ(vop_link_queue_stats(h->real, H_DEV, h->q, &st), 0);
	CHECK_EQ(st.c[VOP_VQS_BROKEN], reason);
	CHECK(st.c[VOP_VQS_ERR_BASE + reason] >= 1);
	/* The other link is not disturbed: it keeps moving verified data. */
	before = t_rx(h->good.l1, 1);
	CHECK(T_WAIT_UNTIL(t_rx(h->good.l1, 1) > before + 1000, 5000));
	CHECK(!t_evlog_has(&h->good.ev0, VOP_EV_QUEUE_BROKEN, -1, NULL));
	CHECK(!t_evlog_has(&h->good.ev1, VOP_EV_QUEUE_BROKEN, -1, NULL));
	if (h->fake_w == h->w0) {
		/* Device side broke: it asked for a reset; a reset clears it. */
		struct vop_dev_entry *e = h->info.entry;

		/* In the device's own block; the reset ack clears it. */
		CHECK(__atomic_load_n(&e->sides[1].status, __ATOMIC_ACQUIRE) & VOP_STATUS_DEVICE_NEEDS_RESET);
		__atomic_store_n(&e->sides[0].status, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&e->sides[0].reset, 2, __ATOMIC_RELEASE);
		vop_window_notify_peer(h->w0);
		CHECK(T_WAIT_UNTIL(__atomic_load_n(&e->sides[1].reset, __ATOMIC_ACQUIRE) == 2, 5000));
		CHECK_EQ(__atomic_load_n(&e->sides[1].status, __ATOMIC_ACQUIRE), 0);
		CHECK_EQ(vop_link_queue_stats(h->real, H_DEV, h->q, &st), 0);
		CHECK_EQ(st.c[VOP_VQS_BROKEN], 0);
	}
}

static inline void hostile_close(struct hostile *h)
{
	vop_link_destroy(h->real);
	vop_window_close(h->w1);
	vop_window_close(h->w0);
	pthread_mutex_destroy(&h->ev.mu);
	t_pair_close(&h->good);
}

#endif /* VOP_TEST_HOSTILE_H */
