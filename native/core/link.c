/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Link worker and the byte pipe device. One worker thread per link side.
 *
 * Device lifecycle over the shared entry (edges R1..R4 in
 * docs/memory-ordering.md):
 *   driver: status = 0; reset_req = r (release, R1); ring
 *   device: reset_req != reset_ack (acquire, R1) -> reset its ring side,
 *           reset_ack = r (release, R2); wait for DRIVER_OK
 *   driver: reset_ack == r (acquire, R2) -> reset its ring side,
 *           features_accepted; status = FEATURES_OK|DRIVER_OK (release, R3)
 *   device: DRIVER_OK (acquire, R3) -> init queues with accepted features
 * A device that attaches to an entry it did not ack in this session sets
 * DEVICE_NEEDS_RESET; the driver resets automatically when the peer's
 * epoch changes (restart) and on vop_link_reset_device(). Exception: a
 * backend device whose driver negotiated VOP_F_INFLIGHT resumes the rings
 * instead (start with resume = true), and its driver does not reset on a
 * peer restart (the journal makes every posted request complete once).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "barrier.h"
#include "vop/link.h"

#define PIPE_MAX_SEGS 16u
#define PIPE_HDR 16u
#define PEER_GONE_MIN_NS (500ull * 1000 * 1000) /* tolerate scheduling hiccups on busy hosts */
#define PATTERN_K 0x9e3779b97f4a7c15ull
/* Longer than the idle worker's 100 ms sleep: a table changing at every scan is "churning". */
#define DEVTAB_QUIET_NS (250ull * 1000 * 1000)

struct pipe_q {
	struct vop_vq vq;      /* the ring (worker-owned) */
	bool ready;            /* vq initialised */
	uint8_t mode;          /* enum vop_pipe_mode */
	uint8_t *pool;         /* driver: local base of this queue's pool */
	uint64_t pool_peer;    /* driver: peer address of the pool */
	uint64_t ind_bytes;    /* driver: bytes of indirect tables at the pool start */
	uint32_t buf_size;     /* driver: bytes per head slot */
	uint64_t seq;          /* next sequence number to produce / expect */
};

struct link_dev {
	uint32_t dev_id;          /* key */
	enum vop_role role;       /* our role */
	struct vop_pipe_config pc; /* validated config */
	struct vop_dev_info info; /* table copy at attach */
	uint32_t run;             /* enum vop_dev_run_state */
	uint32_t reset_val;       /* driver: reset_req we wait for; device: last acked */
	bool acked;               /* device: we acked a reset in this session */
	bool timeout_reported;    /* driver: RESET_TIMEOUT event sent */
	bool needs_reset_reported;
	uint64_t reset_deadline;  /* driver: ns */
	uint64_t features;        /* negotiated */
	bool reported[VOP_MAX_QUEUES]; /* queue-broken event sent */
	/* backend devices (ops != NULL); otherwise a byte pipe */
	const struct vop_devback_ops *ops;
	void *be;                 /* backend object (owned by the caller) */
	bool be_started;          /* between ops->start and ops->stop */
	bool be_failed;           /* poll failed: not polled again until the next start */
	struct pipe_q q[2];
	struct vop_chain *echo_rx; /* device ECHO: a popped q1 chain waiting for data */
	bool echo_rx_valid;
	uint8_t *scratch;         /* private copy-in/out buffer */
	uint32_t scratch_size;
	struct vop_pipe_stats ps; /* counters (relaxed, worker writes) */
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
	uint64_t peer_hb_ns;           /* worker: when it last changed */
	bool peer_gone;                /* worker: gone reported for this epoch */
	uint64_t last_hb_ns;           /* worker: our last heartbeat */
	uint64_t devtab_change_ns;     /* worker: when a table change was last seen */
	uint64_t devtab_churn_ns;      /* worker: start of the current run of changes */
	_Atomic unsigned failed;       /* enum vop_link_fail; worker sets once, anyone reads */
	uint64_t ls[VOP_LS_COUNT];     /* counters (relaxed, worker writes) */
};

const char *vop_link_fail_name(unsigned reason)
{
	static const char *const names[VOP_LINK_FAIL_COUNT] = { "none", "devtab_unstable" };

	return reason < VOP_LINK_FAIL_COUNT ? names[reason] : "unknown";
}

unsigned vop_link_failed(struct vop_link *l)
{
	return atomic_load_explicit(&l->failed, memory_order_acquire);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void emit(struct vop_link *l, uint32_t type, uint32_t dev_id, uint32_t queue,
		 uint32_t reason, uint32_t epoch)
{
	struct vop_event ev = { type, dev_id, queue, reason, epoch };

	if (l->cfg.on_event)
		l->cfg.on_event(l->cfg.ctx, &ev);
}

static void notify_peer(struct vop_link *l)
{
	int rc = vop_window_notify_peer(l->w);

	vop_stat_add(&l->ls[VOP_LS_DOORBELLS], 1);
	if (rc > 0)
		vop_stat_add(&l->ls[VOP_LS_FUTEX_WAKES], 1);
}

/* ------------------------------------------------------------------ */
/* Message pattern                                                      */
/* ------------------------------------------------------------------ */

/* Fill len bytes at p with the message seq: 16 B header, then a seq-derived pattern. */
static void msg_fill(uint8_t *p, uint64_t seq, uint32_t len)
{
	uint64_t sum = 0, w;
	uint32_t i, words = (len - PIPE_HDR) / 8, hdr[2];

	for (i = 0; i < words; i++) {
		w = seq * PATTERN_K + i;
		memcpy(p + PIPE_HDR + 8u * i, &w, 8);
		sum += w;
	}
	for (i = PIPE_HDR + 8u * words; i < len; i++) {
		p[i] = (uint8_t)(seq + i);
		sum += p[i];
	}
	memcpy(p, &seq, 8);
	hdr[0] = len;
	hdr[1] = (uint32_t)(sum ^ (sum >> 32));
	memcpy(p + 8, hdr, 8);
}

/* Check a message: seq, length and checksum (of the bytes received and of the pattern). */
static bool msg_check(const uint8_t *p, uint32_t len, uint64_t seq)
{
	uint64_t s, sum = 0, w;
	uint32_t i, words, hdr[2];

	if (len < PIPE_HDR)
		return false;
	memcpy(&s, p, 8);
	memcpy(hdr, p + 8, 8);
	if (s != seq || hdr[0] != len)
		return false;
	words = (len - PIPE_HDR) / 8;
	for (i = 0; i < words; i++) {
		memcpy(&w, p + PIPE_HDR + 8u * i, 8);
		if (w != seq * PATTERN_K + i)
			return false;
		sum += w;
	}
	for (i = PIPE_HDR + 8u * words; i < len; i++) {
		if (p[i] != (uint8_t)(seq + i))
			return false;
		sum += p[i];
	}
	return hdr[1] == (uint32_t)(sum ^ (sum >> 32));
}

/* Copy the readable part of a chain into dst (at most cap bytes); returns bytes. */
static uint32_t gather(const struct vop_chain *c, uint8_t *dst, uint32_t cap)
{
	uint32_t i, n = 0, k;

	for (i = 0; i < c->n_out && n < cap; i++) {
		k = c->iov[i].len < cap - n ? c->iov[i].len : cap - n;
		memcpy(dst + n, c->iov[i].base, k);
		n += k;
	}
	return n;
}

/* Copy len bytes of src into the writable part of a chain; returns bytes. */
static uint32_t scatter(const struct vop_chain *c, const uint8_t *src, uint32_t len)
{
	uint32_t i, n = 0, k;

	for (i = c->n_out; i < (uint32_t)c->n_out + c->n_in && n < len; i++) {
		k = c->iov[i].len < len - n ? c->iov[i].len : len - n;
		memcpy(c->iov[i].base, src + n, k);
		n += k;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* Queue setup                                                          */
/* ------------------------------------------------------------------ */

static uint64_t ind_bytes_for(uint16_t qsize)
{
	return (uint64_t)qsize * VOP_INDIRECT_MAX * sizeof(struct vop_vring_desc);
}

void vop_pipe_spec(struct vop_dev_spec *spec, uint32_t dev_id, uint8_t device_side,
		   uint16_t qsize, uint32_t buf_size, uint64_t features)
{
	uint64_t bs = (buf_size + 63ull) / 64 * 64;
	unsigned i;

	memset(spec, 0, sizeof(*spec));
	spec->dev_id = dev_id;
	spec->device_type = VOP_DEVTYPE_BYTE_PIPE;
	spec->features = features;
	spec->device_side = device_side;
	spec->num_queues = 2;
	for (i = 0; i < 2; i++) {
		spec->queue_size[i] = qsize;
		spec->pool_size[i] = ind_bytes_for(qsize) + bs * qsize;
	}
}

static int init_queue(struct vop_link *l, struct link_dev *d, unsigned qi)
{
	const struct vop_queue_desc *qd = &d->info.queues[qi];
	struct pipe_q *q = &d->q[qi];
	struct vop_vq_config c;
	struct vop_vq_stats saved;
	int rc;

	memset(&c, 0, sizeof(c));
	c.num = qd->size;
	c.features = d->features;
	/* Validated by vop_devtab_find(); NULL would mean outside the mapping. */
	c.desc = vop_window_ptr(l->w, qd->desc_off, vop_vring_desc_bytes(qd->size));
	c.avail = vop_window_ptr(l->w, qd->avail_off, vop_vring_avail_bytes(qd->size));
	c.used = vop_window_ptr(l->w, qd->used_off, vop_vring_used_bytes(qd->size));
	if (!c.desc || !c.avail || !c.used)
		return -EPROTO;
	saved = q->vq.stats; /* counters survive resets */
	if (d->role == VOP_ROLE_DRIVER) {
		q->pool = vop_window_ptr(l->w, qd->pool_off, qd->pool_size);
		if (!q->pool)
			return -EPROTO;
		q->pool_peer = qd->pool_off; /* shm: peer address == window offset */
		q->ind_bytes = ind_bytes_for(qd->size);
		c.indirect_local = q->pool;
		c.indirect_peer_addr = q->pool_peer;
		c.prefer_indirect = d->pc.segs > 1 && (d->features >> VOP_F_INDIRECT_DESC & 1) &&
				    d->pc.features >> VOP_F_INDIRECT_DESC & 1;
		rc = vop_vq_init_driver(&q->vq, &c);
	} else {
		c.regions = &l->w->regions;
		/* D11 per-device bound: the pipe never handles more than its scratch buffer. */
		c.max_chain_bytes = d->scratch_size;
		rc = vop_vq_init_device(&q->vq, &c);
	}
	if (rc == 0) {
		q->ready = true;
		saved.c[VOP_VQS_BROKEN] = 0;
		q->vq.stats = saved;
	}
	return rc;
}

static void destroy_queues(struct link_dev *d)
{
	unsigned i;

	for (i = 0; i < 2; i++) {
		if (d->q[i].ready)
			vop_vq_destroy(&d->q[i].vq);
		d->q[i].ready = false;
	}
}

/* ------------------------------------------------------------------ */
/* Byte pipe service (worker thread)                                     */
/* ------------------------------------------------------------------ */

/* The ring of queue qi of d, or NULL (backend queue out of range). */
static struct vop_vq *dev_vq(struct link_dev *d, unsigned qi)
{
	if (d->ops)
		return d->ops->queue(d->be, qi);
	return qi < 2 ? &d->q[qi].vq : NULL;
}

static unsigned dev_nqueues(const struct link_dev *d)
{
	return d->ops ? d->info.num_queues : 2u;
}

static void check_broken(struct vop_link *l, struct link_dev *d, unsigned qi)
{
	struct vop_vq *vq = dev_vq(d, qi);
	unsigned reason = vq ? vq->broken : 0;

	if (!reason || d->reported[qi])
		return;
	d->reported[qi] = true;
	d->run = VOP_DEVRUN_BROKEN;
	if (d->role == VOP_ROLE_DEVICE) {
		/* Tell the driver (virtio 2.1.2): it must reset us. */
		vop_fetch_or_u32(&d->info.entry->status, VOP_STATUS_DEVICE_NEEDS_RESET);
		notify_peer(l);
	}
	emit(l, VOP_EV_QUEUE_BROKEN, d->dev_id, qi, reason, 0);
}

/*
 * Chains per publish. Half the ring by default: with a whole ring per
 * publish the two sides take turns (one fills while the other waits)
 * instead of overlapping, which halves throughput (docs/benchmarks-ring.md).
 */
static unsigned batch_of(struct link_dev *d, struct pipe_q *q)
{
	if (d->pc.batch)
		return d->pc.batch;
	return q->vq.num > 1 ? q->vq.num / 2u : 1u;
}

static uint8_t *slot_buf(struct pipe_q *q, uint16_t head)
{
	return q->pool + q->ind_bytes + (uint64_t)head * q->buf_size;
}

static uint64_t slot_peer(struct pipe_q *q, uint16_t head)
{
	return q->pool_peer + q->ind_bytes + (uint64_t)head * q->buf_size;
}

/* Split [addr, addr + len) into segs descriptors. */
static unsigned make_sg(struct vop_sg *sg, uint64_t addr, uint32_t len, unsigned segs)
{
	uint32_t per = len / segs, off = 0;
	unsigned i;

	if (per == 0)
		segs = 1, per = len;
	for (i = 0; i < segs; i++) {
		sg[i].addr = addr + off;
		sg[i].len = i + 1 == segs ? len - off : per;
		off += sg[i].len;
	}
	return segs;
}

/* Driver, queue 0, SOURCE: reclaim, then produce and post. */
static unsigned drv_source(struct vop_link *l, struct link_dev *d)
{
	struct pipe_q *q = &d->q[VOP_PIPE_TXQ];
	struct vop_sg sg[PIPE_MAX_SEGS];
	unsigned n = 0, done = 0, batch = batch_of(d, q), segs;
	void *tok;
	uint32_t len;
	int rc;

	while ((rc = vop_vq_get_used(&q->vq, &tok, &len)) == 1)
		done++;
	if (rc < 0)
		return done;
	while (n < batch && (d->pc.count == 0 || q->seq < d->pc.count)) {
		int h;
		uint8_t *buf;

		if (d->pc.max_inflight &&
		    q->seq - vop_read_once_u64(&d->ps.rx_msgs) >= d->pc.max_inflight)
			break;
		h = vop_vq_next_head(&q->vq);
		if (h < 0)
			break;
		buf = slot_buf(q, (uint16_t)h);
		if (d->pc.verify)
			msg_fill(buf, q->seq, d->pc.msg_size);
		else
			memcpy(buf, d->scratch, d->pc.msg_size); /* copy into the window */
		segs = make_sg(sg, slot_peer(q, (uint16_t)h), d->pc.msg_size, d->pc.segs);
		if (vop_vq_add(&q->vq, sg, segs, 0, (void *)(uintptr_t)(h + 1)) < 0)
			break;
		q->seq++;
		n++;
	}
	if (n) {
		vop_stat_add(&d->ps.tx_msgs, n);
		if (vop_vq_kick_prepare(&q->vq) == 1)
			notify_peer(l);
	}
	return n + done;
}

/* Driver, queue 1, SINK: consume used buffers and re-post them writable. */
static unsigned drv_sink(struct vop_link *l, struct link_dev *d)
{
	struct pipe_q *q = &d->q[VOP_PIPE_RXQ];
	struct vop_sg sg[PIPE_MAX_SEGS];
	unsigned n = 0, posted = 0, batch = batch_of(d, q), segs;
	void *tok;
	uint32_t len;
	int rc, h;

	while (n < batch && (rc = vop_vq_get_used(&q->vq, &tok, &len)) == 1) {
		uint8_t *buf = slot_buf(q, (uint16_t)((uintptr_t)tok - 1));

		if (d->pc.verify) {
			if (!msg_check(buf, len, q->seq)) {
				vop_stat_add(&d->ps.bad_msgs, 1);
				vop_vq_fail(&q->vq, VOP_VQ_PAYLOAD);
				return n;
			}
		} else {
			memcpy(d->scratch, buf, len < d->scratch_size ? len : d->scratch_size);
		}
		q->seq++;
		n++;
	}
	if (n)
		vop_stat_add(&d->ps.rx_msgs, n);
	while ((h = vop_vq_next_head(&q->vq)) >= 0) {
		segs = make_sg(sg, slot_peer(q, (uint16_t)h), q->buf_size, d->pc.segs);
		if (vop_vq_add(&q->vq, sg, 0, segs, (void *)(uintptr_t)(h + 1)) < 0)
			break;
		posted++;
	}
	if (posted && vop_vq_kick_prepare(&q->vq) == 1)
		notify_peer(l);
	return n + posted;
}

/* Device, queue 0, SINK: consume readable chains. */
static unsigned dev_sink(struct vop_link *l, struct link_dev *d)
{
	struct pipe_q *q = &d->q[VOP_PIPE_TXQ];
	struct vop_chain c;
	unsigned n = 0, batch = batch_of(d, q);
	int rc;

	while (n < batch && (rc = vop_vq_pop(&q->vq, &c)) == 1) {
		if (c.n_in != 0 || c.n_out == 0) {
			vop_vq_fail(&q->vq, VOP_VQ_DIRECTION);
			return n;
		}
		if (d->pc.verify) {
			const uint8_t *p = c.iov[0].base;

			if (c.n_out > 1 || c.out_bytes > d->scratch_size) {
				if (c.out_bytes > d->scratch_size) {
					vop_vq_fail(&q->vq, VOP_VQ_PAYLOAD);
					return n;
				}
				gather(&c, d->scratch, d->scratch_size);
				p = d->scratch;
			}
			if (!msg_check(p, c.out_bytes, q->seq)) {
				vop_stat_add(&d->ps.bad_msgs, 1);
				vop_vq_fail(&q->vq, VOP_VQ_PAYLOAD);
				return n;
			}
		} else {
			gather(&c, d->scratch, d->scratch_size); /* copy out of the window */
		}
		q->seq++;
		vop_vq_push(&q->vq, c.head, 0);
		n++;
	}
	if (n) {
		vop_stat_add(&d->ps.rx_msgs, n);
		if (vop_vq_publish_used(&q->vq) == 1)
			notify_peer(l);
	}
	return n;
}

/* Device, queue 1, SOURCE: fill writable chains with messages. */
static unsigned dev_source(struct vop_link *l, struct link_dev *d)
{
	struct pipe_q *q = &d->q[VOP_PIPE_RXQ];
	struct vop_chain c;
	unsigned n = 0, batch = batch_of(d, q);
	uint32_t len = d->pc.msg_size;

	while (n < batch && (d->pc.count == 0 || q->seq < d->pc.count) &&
	       vop_vq_pop(&q->vq, &c) == 1) {
		if (c.n_out != 0 || c.in_bytes < len) {
			vop_vq_fail(&q->vq, VOP_VQ_DIRECTION);
			return n;
		}
		if (c.n_in == 1) {
			if (d->pc.verify)
				msg_fill(c.iov[0].base, q->seq, len);
			else
				memcpy(c.iov[0].base, d->scratch, len);
		} else {
			if (d->pc.verify)
				msg_fill(d->scratch, q->seq, len);
			scatter(&c, d->scratch, len);
		}
		q->seq++;
		vop_vq_push(&q->vq, c.head, len);
		n++;
	}
	if (n) {
		vop_stat_add(&d->ps.tx_msgs, n);
		if (vop_vq_publish_used(&q->vq) == 1)
			notify_peer(l);
	}
	return n;
}

/* Device, queue 0 ECHO: each readable q0 chain is copied into a writable q1 chain. */
static unsigned dev_echo(struct vop_link *l, struct link_dev *d)
{
	struct pipe_q *tx = &d->q[VOP_PIPE_TXQ], *rx = &d->q[VOP_PIPE_RXQ];
	struct vop_chain c;
	unsigned n = 0, batch = batch_of(d, tx);
	uint32_t len;

	while (n < batch) {
		if (!d->echo_rx_valid) {
			if (vop_vq_pop(&rx->vq, d->echo_rx) != 1)
				break;
			if (d->echo_rx->n_out != 0) {
				vop_vq_fail(&rx->vq, VOP_VQ_DIRECTION);
				break;
			}
			d->echo_rx_valid = true;
		}
		if (vop_vq_pop(&tx->vq, &c) != 1)
			break;
		if (c.n_in != 0 || c.out_bytes > d->echo_rx->in_bytes) {
			vop_vq_fail(&tx->vq, VOP_VQ_DIRECTION);
			break;
		}
		len = gather(&c, d->scratch, d->scratch_size);
		scatter(d->echo_rx, d->scratch, len);
		vop_vq_push(&tx->vq, c.head, 0);
		vop_vq_push(&rx->vq, d->echo_rx->head, len);
		d->echo_rx_valid = false;
		n++;
	}
	if (n) {
		vop_stat_add(&d->ps.rx_msgs, n);
		vop_stat_add(&d->ps.tx_msgs, n);
		if (vop_vq_publish_used(&rx->vq) == 1)
			notify_peer(l);
		if (vop_vq_publish_used(&tx->vq) == 1)
			notify_peer(l);
	}
	return n;
}

static unsigned service_running(struct vop_link *l, struct link_dev *d)
{
	unsigned n = 0, i;

	if (d->role == VOP_ROLE_DRIVER) {
		if (d->q[0].mode == VOP_PIPE_SOURCE)
			n += drv_source(l, d);
		if (d->q[1].mode == VOP_PIPE_SINK)
			n += drv_sink(l, d);
	} else {
		if (d->q[0].mode == VOP_PIPE_SINK)
			n += dev_sink(l, d);
		else if (d->q[0].mode == VOP_PIPE_ECHO)
			n += dev_echo(l, d);
		if (d->q[1].mode == VOP_PIPE_SOURCE)
			n += dev_source(l, d);
	}
	for (i = 0; i < 2; i++)
		check_broken(l, d, i);
	return n;
}

/* Backend: one poll round, then the queue-broken check of every queue. */
static unsigned service_backend(struct vop_link *l, struct link_dev *d)
{
	int rc = d->ops->poll(d->be);
	unsigned i;

	for (i = 0; i < dev_nqueues(d); i++)
		check_broken(l, d, i);
	if (rc < 0) {
		d->be_failed = true;
		d->run = VOP_DEVRUN_BROKEN;
		if (d->role == VOP_ROLE_DEVICE) {
			vop_fetch_or_u32(&d->info.entry->status, VOP_STATUS_DEVICE_NEEDS_RESET);
			notify_peer(l);
		}
		emit(l, VOP_EV_BACKEND_FAILED, d->dev_id, 0, (uint32_t)-rc, 0);
	}
	return rc > 0 ? (unsigned)rc : 0;
}

/*
 * Backend: stop using the rings if started (reset, removal, detach). The
 * worker never waits (0 or -EINPROGRESS: call again later); wait is for the
 * control thread without the link lock (detach), which must see it done.
 */
static int backend_stop(struct link_dev *d, bool wait)
{
	int rc = 0;

	if (!d->ops || !d->be_started)
		return 0;
	while ((rc = d->ops->stop(d->be)) == -EINPROGRESS && wait)
		usleep(1000);
	if (rc == 0)
		d->be_started = false;
	return rc;
}

/* Backend: start with features; on failure the device is BROKEN. 0 or -errno. */
static int backend_start(struct vop_link *l, struct link_dev *d, bool resume)
{
	int rc = d->ops->start(d->be, d->features, resume);

	memset(d->reported, 0, sizeof(d->reported));
	d->be_started = true; /* even when it failed: stop() cleans up what it set up */
	d->be_failed = rc != 0;
	if (rc) {
		d->run = VOP_DEVRUN_BROKEN;
		emit(l, VOP_EV_BACKEND_FAILED, d->dev_id, 0, (uint32_t)-rc, 0);
		return rc;
	}
	return 0;
}

/*
 * Whether the worker polls d now. A backend keeps serving its healthy
 * queues after one broke (the device asked for a reset, the driver decides
 * when), so console output still reaches the log and the other direction
 * of a net device still moves; a byte pipe stops at once.
 */
static bool serving(const struct link_dev *d)
{
	if (d->run == VOP_DEVRUN_RUNNING)
		return !d->ops || !d->be_failed;
	return d->run == VOP_DEVRUN_BROKEN && d->ops && d->be_started && !d->be_failed;
}

/* ------------------------------------------------------------------ */
/* Device state machine (worker thread, link lock held)                 */
/* ------------------------------------------------------------------ */

static void driver_begin_reset(struct vop_link *l, struct link_dev *d)
{
	struct vop_dev_entry *e = d->info.entry;

	backend_stop(d, false); /* nothing new enters the rings while the device resets */
	vop_write_once_u32(&e->status, 0);
	d->reset_val = vop_read_once_u32(&e->reset_req) + 1;
	if (d->reset_val == 0)
		d->reset_val = 1;
	/*
	 * R1: release. Orders status = 0 before the new reset_req. Pairs with
	 * the acquire load of reset_req in device_step().
	 */
	vop_store_release_u32(&e->reset_req, d->reset_val);
	d->run = VOP_DEVRUN_RESETTING;
	d->reset_deadline = now_ns() + (uint64_t)l->cfg.reset_timeout_ms * 1000000u;
	d->timeout_reported = false;
	notify_peer(l);
}

static unsigned driver_step(struct vop_link *l, struct link_dev *d, uint64_t now)
{
	struct vop_dev_entry *e = d->info.entry;
	unsigned i;

	if (d->run == VOP_DEVRUN_RESETTING) {
		/* R2 pair: acquire; the device's ring reset precedes its ack. */
		if (vop_load_acquire_u32(&e->reset_ack) != d->reset_val) {
			if (!d->timeout_reported && now > d->reset_deadline) {
				d->timeout_reported = true;
				emit(l, VOP_EV_RESET_TIMEOUT, d->dev_id, 0, 0, 0);
			}
			return 0;
		}
		if (d->ops) {
			if (backend_stop(d, false) != 0)
				return 0; /* still finishing: start once it stopped */
			if (backend_start(l, d, false) != 0)
				return 0;
		} else {
			for (i = 0; i < 2; i++) {
				struct pipe_q *q = &d->q[i];

				if (q->ready) {
					vop_vq_reset_driver(&q->vq);
				} else if (init_queue(l, d, i) != 0) {
					d->run = VOP_DEVRUN_BROKEN;
					return 0;
				}
				q->seq = 0;
			}
			memset(d->reported, 0, sizeof(d->reported));
			vop_write_once_u64(&d->ps.tx_msgs, 0);
			vop_write_once_u64(&d->ps.rx_msgs, 0);
		}
		vop_write_once_u64(&e->features_accepted, d->features);
		/*
		 * R3: release. Orders our zeroed driver area and
		 * features_accepted before DRIVER_OK. Pairs with the acquire
		 * load of status in device_step().
		 */
		vop_store_release_u32(&e->status, VOP_STATUS_ACKNOWLEDGE | VOP_STATUS_DRIVER |
							  VOP_STATUS_FEATURES_OK | VOP_STATUS_DRIVER_OK);
		d->run = VOP_DEVRUN_RUNNING;
		d->needs_reset_reported = false;
		notify_peer(l);
		emit(l, VOP_EV_RESET_DONE, d->dev_id, 0, 0, 0);
		return 1;
	}
	if (d->run != VOP_DEVRUN_RUNNING && d->run != VOP_DEVRUN_BROKEN)
		return 0;
	if (!d->needs_reset_reported &&
	    (vop_read_once_u32(&e->status) & VOP_STATUS_DEVICE_NEEDS_RESET)) {
		d->needs_reset_reported = true;
		emit(l, VOP_EV_NEEDS_RESET, d->dev_id, 0, 0, 0);
		if (l->cfg.reset_on_needs_reset) {
			driver_begin_reset(l, d);
			return 1;
		}
	}
	if (!serving(d))
		return 0;
	return d->ops ? service_backend(l, d) : service_running(l, d);
}

static unsigned device_step(struct vop_link *l, struct link_dev *d)
{
	struct vop_dev_entry *e = d->info.entry;
	uint32_t req = vop_load_acquire_u32(&e->reset_req); /* R1 pair */
	unsigned i;

	if (req != vop_read_once_u32(&e->reset_ack)) {
		/* Reset: our ring side to zero, then ack (the driver owns the rest). */
		if (backend_stop(d, false) != 0)
			return 0; /* its threads still finish requests: ack when they are done */
		for (i = 0; i < dev_nqueues(d); i++) {
			if (!d->ops && d->q[i].ready) {
				vop_vq_destroy(&d->q[i].vq);
				d->q[i].ready = false;
			}
			/*
			 * Zero our whole device area even if we never ran the
			 * queue (a previous incarnation may have): the driver
			 * reads used->idx right after our ack.
			 */
			{
				uint64_t ub = vop_vring_used_bytes(d->info.queues[i].size);
				void *used = vop_window_ptr(l->w, d->info.queues[i].used_off, ub);

				if (used)
					memset(used, 0, ub);
			}
			if (!d->ops) {
				if (d->q[i].vq.broken)
					vop_stat_add(&d->q[i].vq.stats.c[VOP_VQS_RESETS], 1);
				d->q[i].vq.broken = 0;
				vop_write_once_u64(&d->q[i].vq.stats.c[VOP_VQS_BROKEN], 0);
				d->q[i].seq = 0;
			}
		}
		memset(d->reported, 0, sizeof(d->reported));
		d->echo_rx_valid = false;
		vop_write_once_u64(&d->ps.tx_msgs, 0);
		vop_write_once_u64(&d->ps.rx_msgs, 0);
		/* R2: release. Orders the ring reset above before the ack. Pairs with driver_step(). */
		vop_store_release_u32(&e->reset_ack, req);
		d->reset_val = req;
		d->acked = true;
		d->run = VOP_DEVRUN_WAIT_DRIVER;
		notify_peer(l);
		return 1;
	}
	if (d->run == VOP_DEVRUN_WAIT_DRIVER) {
		uint32_t st = vop_load_acquire_u32(&e->status); /* R3 pair */
		uint64_t acc;

		if (!(st & VOP_STATUS_DRIVER_OK))
			return 0;
		acc = vop_read_once_u64(&e->features_accepted);
		if (!d->acked && d->ops && (acc >> VOP_F_INFLIGHT & 1) &&
		    !(acc & ~d->info.features_offered) && !(st & VOP_STATUS_DEVICE_NEEDS_RESET)) {
			/* The driver kept our rings running across our restart: resume them. */
			d->features = acc;
			if (backend_start(l, d, true) != 0) {
				vop_fetch_or_u32(&e->status, VOP_STATUS_DEVICE_NEEDS_RESET);
				notify_peer(l);
				return 0;
			}
			d->acked = true;
			d->run = VOP_DEVRUN_RUNNING;
			return 1;
		}
		if (!d->acked) {
			/* The driver ran with a previous incarnation of us: ask for a reset. */
			if (!(st & VOP_STATUS_DEVICE_NEEDS_RESET)) {
				vop_fetch_or_u32(&e->status, VOP_STATUS_DEVICE_NEEDS_RESET);
				notify_peer(l);
			}
			return 0;
		}
		if (acc & ~d->info.features_offered) {
			d->run = VOP_DEVRUN_BROKEN;
			vop_fetch_or_u32(&e->status, VOP_STATUS_DEVICE_NEEDS_RESET);
			emit(l, VOP_EV_QUEUE_BROKEN, d->dev_id, 0, VOP_VQ_LAYOUT, 0);
			return 0;
		}
		d->features = acc;
		if (d->ops) {
			if (backend_start(l, d, false) != 0) {
				vop_fetch_or_u32(&e->status, VOP_STATUS_DEVICE_NEEDS_RESET);
				notify_peer(l);
				return 0;
			}
		} else {
			for (i = 0; i < 2; i++) {
				if (init_queue(l, d, i) != 0) {
					d->run = VOP_DEVRUN_BROKEN;
					return 0;
				}
			}
		}
		d->run = VOP_DEVRUN_RUNNING;
		return 1;
	}
	if (!serving(d))
		return 0;
	return d->ops ? service_backend(l, d) : service_running(l, d);
}

/* ------------------------------------------------------------------ */
/* Worker                                                               */
/* ------------------------------------------------------------------ */

static struct link_dev *find_dev(struct vop_link *l, uint32_t dev_id, unsigned *idx);

static void mark_removed(struct vop_link *l, struct link_dev *d)
{
	if (d->run == VOP_DEVRUN_REMOVED)
		return;
	backend_stop(d, false); /* detach waits for whatever is still finishing */
	d->run = VOP_DEVRUN_REMOVED;
	emit(l, VOP_EV_DEVICE_REMOVED, d->dev_id, 0, 0, 0);
}

/* Periodic checks: heartbeat, peer liveness/restart, device table changes. */
static void housekeeping(struct vop_link *l, uint64_t now)
{
	struct vop_peer_view pv;
	unsigned i;

	if (now - l->last_hb_ns >= 50ull * 1000 * 1000) { /* twice per advertised period */
		vop_window_heartbeat(l->w);
		l->last_hb_ns = now;
		vop_stat_add(&l->ls[VOP_LS_HEARTBEATS], 1);
	}
	vop_window_peer(l->w, &pv);
	if (pv.epoch != l->peer_epoch) {
		bool restart = l->peer_epoch != 0;

		/*
		 * Answer a new peer at once: it counts us as alive only once our
		 * heartbeat moves, and an idle worker beats only every 100 ms.
		 */
		vop_window_heartbeat(l->w);
		l->last_hb_ns = now;
		vop_stat_add(&l->ls[VOP_LS_HEARTBEATS], 1);

		l->peer_epoch = pv.epoch;
		l->peer_gone = false;
		l->peer_hb = pv.heartbeat;
		l->peer_hb_ns = now;
		if (restart) {
			vop_stat_add(&l->ls[VOP_LS_PEER_RESETS], 1);
			emit(l, VOP_EV_PEER_RESET, 0, 0, 0, pv.epoch);
			/* The driver side re-runs the handshake with the new device. */
			for (i = 0; i < l->ndevs; i++) {
				struct link_dev *d = l->devs[i];

				/* An in-flight journal lets the restarted device resume our rings. */
				if (d->role == VOP_ROLE_DRIVER && d->run != VOP_DEVRUN_REMOVED &&
				    !(d->ops && d->run == VOP_DEVRUN_RUNNING &&
				      (d->features >> VOP_F_INFLIGHT & 1)))
					driver_begin_reset(l, d);
			}
		} else if (pv.epoch) {
			emit(l, VOP_EV_PEER_UP, 0, 0, 0, pv.epoch);
		}
	} else if (pv.heartbeat != l->peer_hb) {
		l->peer_hb = pv.heartbeat;
		l->peer_hb_ns = now;
	}
	if (pv.epoch && !l->peer_gone) {
		uint64_t limit = 4ull * pv.hb_period_ms * 1000000u;

		if (limit < PEER_GONE_MIN_NS)
			limit = PEER_GONE_MIN_NS;
		if (pv.state == VOP_SIDE_GONE || now - l->peer_hb_ns > limit) {
			l->peer_gone = true;
			vop_stat_add(&l->ls[VOP_LS_PEER_GONE], 1);
			emit(l, VOP_EV_PEER_GONE, 0, 0, 0, pv.epoch);
		}
	}
}

/*
 * Worker, WITHOUT the link lock: notice hot unplug (and re-publication) in
 * the device table. The entries are copied with bounded retries outside the
 * lock (the peer decides how often a copy must be retried), then the lock
 * is taken briefly to mark what went away. A table that keeps changing
 * (no pause of DEVTAB_QUIET_NS) for longer than devtab_unstable_ms fails
 * the link (not the process).
 * Returns true when the link failed.
 */
static bool devtab_check(struct vop_link *l, uint64_t now)
{
	struct {
		uint32_t dev_id, slot, seq;
		bool gone;
	} snap[VOP_MAX_DEVICES];
	uint32_t gen = vop_devtab_generation(l->w);
	uint64_t limit = (uint64_t)l->cfg.devtab_unstable_ms * 1000000u;
	unsigned i, n = 0;
	bool unstable = false;

	if (gen == l->devtab_gen)
		return false;
	/*
	 * A run of changes: each seen less than DEVTAB_QUIET_NS after the one
	 * before. A pause that short does not end it (a churning peer that
	 * yields the CPU now and then is still churning); a longer one does,
	 * and then the peer costs us at most one scan per quiet period.
	 */
	if (now - l->devtab_change_ns > DEVTAB_QUIET_NS)
		l->devtab_churn_ns = now;
	l->devtab_change_ns = now;
	pthread_mutex_lock(&l->lock);
	for (i = 0; i < l->ndevs && n < VOP_MAX_DEVICES; i++) {
		struct link_dev *d = l->devs[i];

		if (d->run == VOP_DEVRUN_REMOVED)
			continue;
		snap[n].dev_id = d->dev_id;
		snap[n].slot = d->info.slot;
		snap[n].seq = d->info.seq;
		snap[n].gone = false;
		n++;
	}
	pthread_mutex_unlock(&l->lock);
	for (i = 0; i < n; i++) {
		struct vop_dev_info info;
		int rc = vop_devtab_find_bounded(l->w, snap[i].dev_id, &info);

		if (rc == -EAGAIN) {
			unstable = true; /* undecided: look again at the next scan */
			continue;
		}
		snap[i].gone = rc != 0 || info.slot != snap[i].slot || info.seq != snap[i].seq;
	}
	pthread_mutex_lock(&l->lock);
	for (i = 0; i < n; i++) {
		/* Only the attachment we looked at: a detach + re-attach meanwhile has a new copy. */
		struct link_dev *d = snap[i].gone ? find_dev(l, snap[i].dev_id, NULL) : NULL;

		if (d && d->info.slot == snap[i].slot && d->info.seq == snap[i].seq)
			mark_removed(l, d);
	}
	pthread_mutex_unlock(&l->lock);
	if (!unstable)
		l->devtab_gen = gen;
	if (now - l->devtab_churn_ns <= limit)
		return false;
	atomic_store_explicit(&l->failed, VOP_LINK_FAIL_DEVTAB_UNSTABLE, memory_order_release);
	pthread_mutex_lock(&l->lock);
	emit(l, VOP_EV_LINK_FAILED, 0, 0, VOP_LINK_FAIL_DEVTAB_UNSTABLE, 0);
	pthread_mutex_unlock(&l->lock);
	return true;
}

/*
 * Whether queue k can make progress when the peer notifies it. Arming a
 * queue we can't serve (a source that reached its count, an echo without
 * a receive buffer) would report "pending" forever and spin the worker.
 */
static bool wants_notify(struct link_dev *d, unsigned k)
{
	struct pipe_q *q = &d->q[k];
	bool done = d->pc.count && q->seq >= d->pc.count;

	if (d->role == VOP_ROLE_DRIVER) {
		if (q->mode == VOP_PIPE_SOURCE)
			/* Completions only matter when we ran out of descriptors
			 * (as virtio-net keeps tx interrupts off). */
			return !done && vop_vq_num_free(&q->vq) == 0;
		return q->mode == VOP_PIPE_SINK;
	}
	if (d->q[0].mode == VOP_PIPE_ECHO)
		return k == VOP_PIPE_TXQ ? d->echo_rx_valid : !d->echo_rx_valid;
	if (q->mode == VOP_PIPE_SOURCE)
		return !done;
	return q->mode == VOP_PIPE_SINK;
}

/* Arm notifications on every active queue; true if work is already pending. */
static bool arm_all(struct vop_link *l, bool arm)
{
	bool pending = false;
	unsigned i, k;

	for (i = 0; i < l->ndevs; i++) {
		struct link_dev *d = l->devs[i];

		if (d->run == VOP_DEVRUN_RESETTING || d->run == VOP_DEVRUN_WAIT_DRIVER)
			continue; /* polled by housekeeping timeouts; peer rings on progress */
		if (!serving(d))
			continue;
		if (d->ops) {
			/* Backends re-arm what they wait for; with EVENT_IDX nothing needs disarming. */
			if (arm)
				pending |= d->ops->prepare_sleep(d->be) != 0;
			continue;
		}
		for (k = 0; k < 2; k++) {
			struct pipe_q *q = &d->q[k];
			bool want = wants_notify(d, k);

			if (!q->ready || !want)
				continue;
			if (arm)
				pending |= vop_vq_enable_notify(&d->q[k].vq) != 0;
			else
				vop_vq_disable_notify(&d->q[k].vq);
		}
	}
	return pending;
}

static unsigned service_all(struct vop_link *l, uint64_t now)
{
	unsigned n = 0, i;

	for (i = 0; i < l->ndevs; i++) {
		struct link_dev *d = l->devs[i];

		if (d->run == VOP_DEVRUN_REMOVED)
			continue;
		n += d->role == VOP_ROLE_DRIVER ? driver_step(l, d, now) : device_step(l, d);
	}
	return n;
}

static void *worker(void *arg)
{
	struct vop_link *l = arg;
	struct vop_xport *x = l->w->x;
	uint64_t idle_since = 0, now, t0, iter = 0;
	unsigned work;

	pthread_mutex_lock(&l->lock);
	now = now_ns();
	l->last_hb_ns = 0;
	housekeeping(l, now);
	pthread_mutex_unlock(&l->lock);
	if (devtab_check(l, now))
		return NULL;
	while (!atomic_load_explicit(&l->stop, memory_order_acquire)) {
		bool kept = false;

		pthread_mutex_lock(&l->lock);
		work = service_all(l, 0);
		if (work == 0 || (++iter & 15) == 0) { /* heartbeat even when always busy */
			now = now_ns();
			housekeeping(l, now);
			kept = true;
			if (work == 0)
				work += service_all(l, now); /* reset timeouts use now */
		}
		pthread_mutex_unlock(&l->lock);
		/* Table scan without the lock; a failed link stops its worker for good. */
		if (kept && devtab_check(l, now))
			break;
		if (work) {
			idle_since = 0;
			continue;
		}
		now = now_ns();
		if (idle_since == 0)
			idle_since = now;
		if (l->cfg.poll_only || now - idle_since < l->cfg.spin_ns) {
			vop_cpu_relax();
			continue;
		}
		vop_stat_add(&l->ls[VOP_LS_POLL_NS], now - idle_since);
		/* Sleep: snapshot the doorbell, arm, re-check, then wait (D2 in xport_shm.c). */
		{
			uint32_t snap = x->ops->snapshot(x, l->w->side);
			bool pending;
			int rc = -ETIMEDOUT;

			pthread_mutex_lock(&l->lock);
			pending = arm_all(l, true);
			pthread_mutex_unlock(&l->lock);
			if (!pending && !atomic_load_explicit(&l->stop, memory_order_acquire)) {
				t0 = now_ns();
				vop_stat_add(&l->ls[VOP_LS_SLEEPS], 1);
				/*
				 * Wake at least every 100 ms (the advertised heartbeat
				 * period) for heartbeat, liveness and reset timeouts:
				 * 10 wakeups/s is what an idle link costs.
				 */
				rc = x->ops->wait(x, l->w->side, snap, 100ull * 1000 * 1000);
				now = now_ns();
				vop_stat_add(&l->ls[VOP_LS_SLEEP_NS], now - t0);
				if (rc == 0)
					vop_stat_add(&l->ls[VOP_LS_WAKEUPS], 1);
			}
			pthread_mutex_lock(&l->lock);
			arm_all(l, false);
			pthread_mutex_unlock(&l->lock);
			/*
			 * Rung (or work pending): spin again after the next work.
			 * Timeout: go straight back to sleep, an idle link must
			 * not spin 50 times a second.
			 */
			if (rc != -ETIMEDOUT)
				idle_since = 0;
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Control API                                                          */
/* ------------------------------------------------------------------ */

int vop_link_create(struct vop_window *w, const struct vop_link_config *cfg, struct vop_link **out)
{
	struct vop_link *l;

	*out = NULL;
	if (!w)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->w = w;
	if (cfg)
		l->cfg = *cfg;
	if (l->cfg.reset_timeout_ms == 0)
		l->cfg.reset_timeout_ms = 1000;
	if (l->cfg.devtab_unstable_ms == 0)
		l->cfg.devtab_unstable_ms = VOP_DEVTAB_UNSTABLE_MS;
	if (pthread_mutex_init(&l->lock, NULL) != 0) {
		free(l);
		return -ENOMEM;
	}
	atomic_init(&l->stop, 0);
	atomic_init(&l->failed, 0);
	*out = l;
	return 0;
}

static void free_dev(struct link_dev *d)
{
	backend_stop(d, true);
	destroy_queues(d);
	free(d->echo_rx);
	free(d->scratch);
	free(d);
}

void vop_link_destroy(struct vop_link *l)
{
	unsigned i;

	if (!l)
		return;
	vop_link_stop(l);
	for (i = 0; i < l->ndevs; i++)
		free_dev(l->devs[i]);
	pthread_mutex_destroy(&l->lock);
	free(l);
}

static struct link_dev *find_dev(struct vop_link *l, uint32_t dev_id, unsigned *idx)
{
	unsigned i;

	for (i = 0; i < l->ndevs; i++) {
		if (l->devs[i]->dev_id == dev_id) {
			if (idx)
				*idx = i;
			return l->devs[i];
		}
	}
	return NULL;
}

static int check_pipe_config(const struct vop_pipe_config *pc, enum vop_role role)
{
	if (pc->segs < 1 || pc->segs > PIPE_MAX_SEGS || pc->msg_size == 0)
		return -EINVAL;
	if (pc->verify && pc->msg_size < PIPE_HDR)
		return -EINVAL;
	if (pc->msg_size < pc->segs)
		return -EINVAL;
	if (role == VOP_ROLE_DRIVER) {
		if ((pc->tx_mode != VOP_PIPE_OFF && pc->tx_mode != VOP_PIPE_SOURCE) ||
		    (pc->rx_mode != VOP_PIPE_OFF && pc->rx_mode != VOP_PIPE_SINK))
			return -EINVAL;
	} else if (role == VOP_ROLE_DEVICE) {
		if ((pc->tx_mode != VOP_PIPE_OFF && pc->tx_mode != VOP_PIPE_SINK &&
		     pc->tx_mode != VOP_PIPE_ECHO) ||
		    (pc->rx_mode != VOP_PIPE_OFF && pc->rx_mode != VOP_PIPE_SOURCE) ||
		    (pc->tx_mode == VOP_PIPE_ECHO && pc->rx_mode != VOP_PIPE_OFF))
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	return 0;
}

/* Copy dev_id's table entry into d; the entry's device side must match role. */
static int find_entry(struct vop_link *l, uint32_t dev_id, enum vop_role role, struct link_dev *d)
{
	int rc;

	if (vop_link_failed(l))
		return -ENOLINK;
	/* Bounded: a peer rewriting the entry cannot keep this (JS) thread busy. */
	rc = vop_devtab_find_bounded(l->w, dev_id, &d->info);
	if (rc)
		return rc;
	if ((d->info.device_side == l->w->side) != (role == VOP_ROLE_DEVICE))
		return -EINVAL;
	d->dev_id = dev_id;
	d->role = role;
	return 0;
}

/*
 * Ask the transport to make d's rings and pools resident before traffic
 * needs them, for devices that carry traffic: backends, and byte pipes that
 * produce messages (an idle stand-in never touches its pools).
 */
static void prefault_dev(struct vop_link *l, const struct link_dev *d)
{
	struct vop_xport *x = l->w->x;
	unsigned i;

	if (!x->ops->prefault)
		return;
	if (!d->ops && d->pc.tx_mode != VOP_PIPE_SOURCE && d->pc.rx_mode != VOP_PIPE_SOURCE &&
	    d->pc.tx_mode != VOP_PIPE_ECHO)
		return;
	for (i = 0; i < d->info.num_queues; i++) {
		const struct vop_queue_desc *q = &d->info.queues[i];

		x->ops->prefault(x, q->desc_off, vop_vring_desc_bytes(q->size));
		x->ops->prefault(x, q->avail_off, vop_vring_avail_bytes(q->size));
		x->ops->prefault(x, q->used_off, vop_vring_used_bytes(q->size));
		x->ops->prefault(x, q->pool_off, q->pool_size);
	}
}

/* Publish d to the worker: the driver role starts the reset handshake. */
static int add_dev(struct vop_link *l, struct link_dev *d)
{
	pthread_mutex_lock(&l->lock);
	if (vop_link_failed(l)) {
		pthread_mutex_unlock(&l->lock);
		return -ENOLINK;
	}
	if (find_dev(l, d->dev_id, NULL) || l->ndevs >= VOP_MAX_DEVICES) {
		int rc = l->ndevs >= VOP_MAX_DEVICES ? -ENOSPC : -EEXIST;

		pthread_mutex_unlock(&l->lock);
		return rc;
	}
	if (d->role == VOP_ROLE_DRIVER) {
		driver_begin_reset(l, d);
	} else {
		d->run = VOP_DEVRUN_WAIT_DRIVER;
		/* Ack only resets requested after we attached (see the file comment). */
		d->acked = vop_read_once_u32(&d->info.entry->reset_req) !=
			   vop_read_once_u32(&d->info.entry->reset_ack);
	}
	l->devs[l->ndevs++] = d;
	pthread_mutex_unlock(&l->lock);
	prefault_dev(l, d);
	vop_window_notify_peer(l->w);
	/* Wake our own worker so it services the new device promptly. */
	l->w->x->ops->notify(l->w->x, l->w->side);
	return 0;
}

int vop_link_attach_pipe(struct vop_link *l, uint32_t dev_id, enum vop_role role,
			 const struct vop_pipe_config *pc)
{
	struct link_dev *d;
	unsigned i;
	int rc;

	rc = check_pipe_config(pc, role);
	if (rc)
		return rc;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	rc = find_entry(l, dev_id, role, d);
	if (rc)
		goto err;
	rc = -EINVAL;
	if (d->info.device_type != VOP_DEVTYPE_BYTE_PIPE || d->info.num_queues != 2)
		goto err;
	d->pc = *pc;
	d->q[0].mode = pc->tx_mode;
	d->q[1].mode = pc->rx_mode;
	if (role == VOP_ROLE_DRIVER) {
		for (i = 0; i < 2; i++) {
			const struct vop_queue_desc *qd = &d->info.queues[i];
			uint64_t room = qd->pool_size - ind_bytes_for(qd->size);
			uint64_t bs = pc->buf_size ? (pc->buf_size + 63ull) / 64 * 64
						   : room / qd->size / 64 * 64;

			if (qd->pool_size < ind_bytes_for(qd->size) || bs < pc->msg_size ||
			    bs * qd->size > room || bs > UINT32_MAX)
				goto err;
			d->q[i].buf_size = (uint32_t)bs;
		}
		d->features = d->info.features_offered & (pc->features | (1ull << VOP_F_VERSION_1));
	}
	d->scratch_size = pc->msg_size > d->q[1].buf_size ? pc->msg_size : d->q[1].buf_size;
	if (d->scratch_size < 65536 + PIPE_HDR)
		d->scratch_size = 65536 + PIPE_HDR;
	d->scratch = calloc(1, d->scratch_size);
	d->echo_rx = calloc(1, sizeof(*d->echo_rx));
	rc = -ENOMEM;
	if (!d->scratch || !d->echo_rx)
		goto err;
	for (i = 0; i < d->scratch_size; i++)
		d->scratch[i] = (uint8_t)(i * 7u + 1u);
	rc = add_dev(l, d);
	if (rc)
		goto err;
	return 0;
err:
	free_dev(d);
	return rc;
}

int vop_link_attach_backend(struct vop_link *l, uint32_t dev_id, enum vop_role role,
			    const struct vop_devback_ops *ops, void *dev)
{
	struct link_dev *d;
	int rc;

	if (!ops || !dev || !ops->start || !ops->stop || !ops->poll || !ops->prepare_sleep ||
	    !ops->queue || (role != VOP_ROLE_DRIVER && role != VOP_ROLE_DEVICE))
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	rc = find_entry(l, dev_id, role, d);
	if (rc)
		goto err;
	d->ops = ops;
	d->be = dev;
	if (role == VOP_ROLE_DRIVER)
		d->features = d->info.features_offered &
			      (ops->driver_features | (1ull << VOP_F_VERSION_1));
	rc = add_dev(l, d);
	if (rc)
		goto err;
	return 0;
err:
	free(d);
	return rc;
}

int vop_link_detach(struct vop_link *l, uint32_t dev_id)
{
	struct link_dev *d;
	unsigned idx;

	pthread_mutex_lock(&l->lock);
	d = find_dev(l, dev_id, &idx);
	if (!d) {
		pthread_mutex_unlock(&l->lock);
		return -ENOENT;
	}
	l->devs[idx] = l->devs[--l->ndevs];
	l->devs[l->ndevs] = NULL;
	pthread_mutex_unlock(&l->lock);
	free_dev(d); /* the worker no longer sees d: a backend is stopped from this thread */
	return 0;
}

int vop_link_reset_device(struct vop_link *l, uint32_t dev_id)
{
	struct link_dev *d;
	int rc = 0;

	pthread_mutex_lock(&l->lock);
	d = find_dev(l, dev_id, NULL);
	if (!d)
		rc = -ENOENT;
	else if (d->role != VOP_ROLE_DRIVER || d->run == VOP_DEVRUN_REMOVED)
		rc = -EINVAL;
	else
		driver_begin_reset(l, d);
	pthread_mutex_unlock(&l->lock);
	return rc;
}

int vop_link_start(struct vop_link *l)
{
	int rc;

	if (l->running)
		return -EALREADY;
	atomic_store_explicit(&l->stop, 0, memory_order_release);
	rc = pthread_create(&l->thread, NULL, worker, l);
	if (rc)
		return -rc;
	l->running = true;
	return 0;
}

int vop_link_stop(struct vop_link *l)
{
	if (!l->running)
		return -EALREADY;
	/* Release: pairs with the worker's acquire load of stop. */
	atomic_store_explicit(&l->stop, 1, memory_order_release);
	l->w->x->ops->notify(l->w->x, l->w->side); /* wake it if asleep */
	pthread_join(l->thread, NULL);
	l->running = false;
	return 0;
}

int vop_link_queue_stats(struct vop_link *l, uint32_t dev_id, unsigned queue,
			 struct vop_vq_stats *out)
{
	struct link_dev *d;
	int rc = 0;

	pthread_mutex_lock(&l->lock);
	d = find_dev(l, dev_id, NULL);
	if (!d) {
		rc = -ENOENT;
	} else if (queue >= dev_nqueues(d) || !dev_vq(d, queue)) {
		rc = -EINVAL;
	} else {
		vop_vq_stats_read(dev_vq(d, queue), out);
		out->c[VOP_VQS_WAKEUPS] = vop_read_once_u64(&l->ls[VOP_LS_WAKEUPS]);
		out->c[VOP_VQS_POLL_NS] = vop_read_once_u64(&l->ls[VOP_LS_POLL_NS]);
		out->c[VOP_VQS_SLEEP_NS] = vop_read_once_u64(&l->ls[VOP_LS_SLEEP_NS]);
	}
	pthread_mutex_unlock(&l->lock);
	return rc;
}

int vop_link_pipe_stats(struct vop_link *l, uint32_t dev_id, struct vop_pipe_stats *out)
{
	struct link_dev *d;
	int rc = 0;

	pthread_mutex_lock(&l->lock);
	d = find_dev(l, dev_id, NULL);
	if (!d) {
		rc = -ENOENT;
	} else if (d->ops) {
		rc = -EINVAL;
	} else {
		out->tx_msgs = vop_read_once_u64(&d->ps.tx_msgs);
		out->rx_msgs = vop_read_once_u64(&d->ps.rx_msgs);
		out->bad_msgs = vop_read_once_u64(&d->ps.bad_msgs);
		out->state = vop_read_once_u32(&d->run);
	}
	pthread_mutex_unlock(&l->lock);
	return rc;
}

int vop_link_dev_state(struct vop_link *l, uint32_t dev_id)
{
	struct link_dev *d;
	int rc;

	pthread_mutex_lock(&l->lock);
	d = find_dev(l, dev_id, NULL);
	rc = d ? (int)vop_read_once_u32(&d->run) : -ENOENT;
	pthread_mutex_unlock(&l->lock);
	return rc;
}

void vop_link_stats(struct vop_link *l, uint64_t out[VOP_LS_COUNT])
{
	unsigned i;

	for (i = 0; i < VOP_LS_COUNT; i++)
		out[i] = vop_read_once_u64(&l->ls[i]);
}
