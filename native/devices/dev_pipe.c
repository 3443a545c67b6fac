/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The byte pipe (vop/dev_pipe.h): a backend (struct vop_devback_ops) that
 * produces, consumes, echoes and verifies numbered messages on two queues.
 * Tests and benchmarks use it to drive the rings without a real device.
 *
 * Queue 0 carries driver->device, queue 1 device->driver. The driver posts
 * buffers from the queue's pool (indirect tables first, then one slot of
 * buf_size bytes per head), the device copies out of / into the chains.
 * Everything runs on the link worker with the link lock held (the backend
 * contract); the counters are read by any thread (relaxed, one writer).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../core/win_access.h"
#include "vop/dev_pipe.h"

#define PIPE_MAX_SEGS 16u
#define PIPE_HDR 16u
#define PATTERN_K 0x9e3779b97f4a7c15ull

struct pipe_q {
	struct vop_vq vq;   /* the ring (worker-owned) */
	bool ready;         /* vq initialised */
	uint8_t mode;       /* enum vop_pipe_mode */
	uint8_t *pool;      /* driver: local base of this queue's pool */
	uint64_t pool_peer; /* driver: peer address of the pool */
	uint64_t ind_bytes; /* driver: bytes of indirect tables at the pool start */
	uint32_t buf_size;  /* driver: bytes per head slot */
	uint64_t seq;       /* next sequence number to produce / expect */
};

struct vop_pipe {
	struct vop_devback_ops ops;  /* this pipe's ops (driver_features differ per pipe) */
	struct vop_window *w;        /* the link's window (not owned) */
	enum vop_role role;          /* our role */
	struct vop_pipe_config pc;   /* validated config */
	struct vop_dev_info info;    /* table copy at attach */
	uint64_t features;           /* negotiated (start) */
	struct pipe_q q[2];
	struct vop_chain *echo_rx;   /* device ECHO: a popped q1 chain waiting for data */
	bool echo_rx_valid;
	uint8_t *scratch;            /* private copy-in/out buffer */
	uint32_t scratch_size;
	struct vop_pipe_stats ps;    /* counters (relaxed, worker writes); state unused */
};

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
		vop_win_copy_from(dst + n, c->iov[i].base, k);
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
		vop_win_copy_to(c->iov[i].base, src + n, k);
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

static int init_queue(struct vop_pipe *p, unsigned qi)
{
	const struct vop_queue_desc *qd = &p->info.queues[qi];
	struct pipe_q *q = &p->q[qi];
	struct vop_vq_config c;
	struct vop_vq_stats saved;
	int rc;

	memset(&c, 0, sizeof(c));
	c.num = qd->size;
	c.features = p->features;
	c.wc_stores = p->w->x->map_kind == VOP_MAP_WC;
	/* Validated by vop_devtab_find(); NULL would mean outside the mapping. */
	c.desc = vop_window_ptr(p->w, qd->desc_off, vop_vring_desc_bytes(qd->size));
	c.avail = vop_window_ptr(p->w, qd->avail_off, vop_vring_avail_bytes(qd->size));
	c.used = vop_window_ptr(p->w, qd->used_off, vop_vring_used_bytes(qd->size));
	if (!c.desc || !c.avail || !c.used)
		return -EPROTO;
	saved = q->vq.stats; /* counters survive resets */
	if (p->role == VOP_ROLE_DRIVER) {
		q->pool = vop_window_ptr(p->w, qd->pool_off, qd->pool_size);
		if (!q->pool)
			return -EPROTO;
		q->pool_peer = qd->pool_off; /* peer address == window offset */
		q->ind_bytes = ind_bytes_for(qd->size);
		c.indirect_local = q->pool;
		c.indirect_peer_addr = q->pool_peer;
		c.prefer_indirect = p->pc.segs > 1 && (p->features >> VOP_F_INDIRECT_DESC & 1) &&
				    p->pc.features >> VOP_F_INDIRECT_DESC & 1;
		rc = vop_vq_init_driver(&q->vq, &c);
	} else {
		c.regions = &p->w->regions;
		/* D11 per-device bound: the pipe never handles more than its scratch buffer. */
		c.max_chain_bytes = p->scratch_size;
		rc = vop_vq_init_device(&q->vq, &c);
	}
	if (rc == 0) {
		q->ready = true;
		saved.c[VOP_VQS_BROKEN] = 0;
		q->vq.stats = saved;
	}
	return rc;
}

static void destroy_queues(struct vop_pipe *p)
{
	unsigned i;

	for (i = 0; i < 2; i++) {
		if (p->q[i].ready)
			vop_vq_destroy(&p->q[i].vq);
		p->q[i].ready = false;
	}
}

/* ------------------------------------------------------------------ */
/* Service (worker thread)                                              */
/* ------------------------------------------------------------------ */

static void notify(struct vop_pipe *p, int rc)
{
	if (rc == 1)
		vop_window_notify_peer(p->w);
}

/*
 * Chains per publish. Half the ring by default: with a whole ring per
 * publish the two sides take turns (one fills while the other waits)
 * instead of overlapping, which halves throughput (docs/benchmarks-ring.md).
 */
static unsigned batch_of(struct vop_pipe *p, struct pipe_q *q)
{
	if (p->pc.batch)
		return p->pc.batch;
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
static unsigned drv_source(struct vop_pipe *p)
{
	struct pipe_q *q = &p->q[VOP_PIPE_TXQ];
	struct vop_sg sg[PIPE_MAX_SEGS];
	unsigned n = 0, done = 0, batch = batch_of(p, q), segs;
	void *tok;
	uint32_t len;
	int rc;

	while ((rc = vop_vq_get_used(&q->vq, &tok, &len)) == 1)
		done++;
	if (rc < 0)
		return done;
	while (n < batch && (p->pc.count == 0 || q->seq < p->pc.count)) {
		int h;
		uint8_t *buf;

		if (p->pc.max_inflight &&
		    q->seq - vop_read_once_u64(&p->ps.rx_msgs) >= p->pc.max_inflight)
			break;
		h = vop_vq_next_head(&q->vq);
		if (h < 0)
			break;
		buf = slot_buf(q, (uint16_t)h);
		if (p->pc.verify)
			msg_fill(buf, q->seq, p->pc.msg_size);
		else
			vop_win_copy_to(buf, p->scratch, p->pc.msg_size); /* copy into the window */
		segs = make_sg(sg, slot_peer(q, (uint16_t)h), p->pc.msg_size, p->pc.segs);
		if (vop_vq_add(&q->vq, sg, segs, 0, (void *)(uintptr_t)(h + 1)) < 0)
			break;
		q->seq++;
		n++;
	}
	if (n) {
		vop_stat_add(&p->ps.tx_msgs, n);
		notify(p, vop_vq_kick_prepare(&q->vq));
	}
	return n + done;
}

/* Driver, queue 1, SINK: consume used buffers and re-post them writable. */
static unsigned drv_sink(struct vop_pipe *p)
{
	struct pipe_q *q = &p->q[VOP_PIPE_RXQ];
	struct vop_sg sg[PIPE_MAX_SEGS];
	unsigned n = 0, posted = 0, batch = batch_of(p, q), segs;
	void *tok;
	uint32_t len;
	int rc, h;

	while (n < batch && (rc = vop_vq_get_used(&q->vq, &tok, &len)) == 1) {
		uint8_t *buf = slot_buf(q, (uint16_t)((uintptr_t)tok - 1));

		if (p->pc.verify) {
			if (!msg_check(buf, len, q->seq)) {
				vop_stat_add(&p->ps.bad_msgs, 1);
				vop_vq_fail(&q->vq, VOP_VQ_PAYLOAD);
				return n;
			}
		} else {
			vop_win_copy_from(p->scratch, buf, len < p->scratch_size ? len : p->scratch_size);
		}
		q->seq++;
		n++;
	}
	if (n)
		vop_stat_add(&p->ps.rx_msgs, n);
	while ((h = vop_vq_next_head(&q->vq)) >= 0) {
		segs = make_sg(sg, slot_peer(q, (uint16_t)h), q->buf_size, p->pc.segs);
		if (vop_vq_add(&q->vq, sg, 0, segs, (void *)(uintptr_t)(h + 1)) < 0)
			break;
		posted++;
	}
	if (posted)
		notify(p, vop_vq_kick_prepare(&q->vq));
	return n + posted;
}

/* Device, queue 0, SINK: consume readable chains. */
static unsigned dev_sink(struct vop_pipe *p)
{
	struct pipe_q *q = &p->q[VOP_PIPE_TXQ];
	struct vop_chain c;
	unsigned n = 0, batch = batch_of(p, q);
	int rc;

	while (n < batch && (rc = vop_vq_pop(&q->vq, &c)) == 1) {
		if (c.n_in != 0 || c.n_out == 0) {
			vop_vq_fail(&q->vq, VOP_VQ_DIRECTION);
			return n;
		}
		if (p->pc.verify) {
			const uint8_t *m = c.iov[0].base;

			if (c.n_out > 1 || c.out_bytes > p->scratch_size) {
				if (c.out_bytes > p->scratch_size) {
					vop_vq_fail(&q->vq, VOP_VQ_PAYLOAD);
					return n;
				}
				gather(&c, p->scratch, p->scratch_size);
				m = p->scratch;
			}
			if (!msg_check(m, c.out_bytes, q->seq)) {
				vop_stat_add(&p->ps.bad_msgs, 1);
				vop_vq_fail(&q->vq, VOP_VQ_PAYLOAD);
				return n;
			}
		} else {
			gather(&c, p->scratch, p->scratch_size); /* copy out of the window */
		}
		q->seq++;
		vop_vq_push(&q->vq, c.head, 0);
		n++;
	}
	if (n) {
		vop_stat_add(&p->ps.rx_msgs, n);
		notify(p, vop_vq_publish_used(&q->vq));
	}
	return n;
}

/* Device, queue 1, SOURCE: fill writable chains with messages. */
static unsigned dev_source(struct vop_pipe *p)
{
	struct pipe_q *q = &p->q[VOP_PIPE_RXQ];
	struct vop_chain c;
	unsigned n = 0, batch = batch_of(p, q);
	uint32_t len = p->pc.msg_size;

	while (n < batch && (p->pc.count == 0 || q->seq < p->pc.count) &&
	       vop_vq_pop(&q->vq, &c) == 1) {
		if (c.n_out != 0 || c.in_bytes < len) {
			vop_vq_fail(&q->vq, VOP_VQ_DIRECTION);
			return n;
		}
		if (c.n_in == 1) {
			if (p->pc.verify)
				msg_fill(c.iov[0].base, q->seq, len);
			else
				vop_win_copy_to(c.iov[0].base, p->scratch, len);
		} else {
			if (p->pc.verify)
				msg_fill(p->scratch, q->seq, len);
			scatter(&c, p->scratch, len);
		}
		q->seq++;
		vop_vq_push(&q->vq, c.head, len);
		n++;
	}
	if (n) {
		vop_stat_add(&p->ps.tx_msgs, n);
		notify(p, vop_vq_publish_used(&q->vq));
	}
	return n;
}

/* Device, queue 0 ECHO: each readable q0 chain is copied into a writable q1 chain. */
static unsigned dev_echo(struct vop_pipe *p)
{
	struct pipe_q *tx = &p->q[VOP_PIPE_TXQ], *rx = &p->q[VOP_PIPE_RXQ];
	struct vop_chain c;
	unsigned n = 0, batch = batch_of(p, tx);
	uint32_t len;

	while (n < batch) {
		if (!p->echo_rx_valid) {
			if (vop_vq_pop(&rx->vq, p->echo_rx) != 1)
				break;
			if (p->echo_rx->n_out != 0) {
				vop_vq_fail(&rx->vq, VOP_VQ_DIRECTION);
				break;
			}
			p->echo_rx_valid = true;
		}
		if (vop_vq_pop(&tx->vq, &c) != 1)
			break;
		if (c.n_in != 0 || c.out_bytes > p->echo_rx->in_bytes) {
			vop_vq_fail(&tx->vq, VOP_VQ_DIRECTION);
			break;
		}
		len = gather(&c, p->scratch, p->scratch_size);
		scatter(p->echo_rx, p->scratch, len);
		vop_vq_push(&tx->vq, c.head, 0);
		vop_vq_push(&rx->vq, p->echo_rx->head, len);
		p->echo_rx_valid = false;
		n++;
	}
	if (n) {
		vop_stat_add(&p->ps.rx_msgs, n);
		vop_stat_add(&p->ps.tx_msgs, n);
		notify(p, vop_vq_publish_used(&rx->vq));
		notify(p, vop_vq_publish_used(&tx->vq));
	}
	return n;
}

/* A pipe whose queue broke stops at once (a backend may go on with its healthy queues). */
static bool pipe_broken(const struct vop_pipe *p)
{
	return p->q[0].vq.broken || p->q[1].vq.broken;
}

/*
 * Whether queue k can make progress when the peer notifies it. Arming a
 * queue we can't serve (a source that reached its count, an echo without
 * a receive buffer) would report "pending" forever and spin the worker.
 */
static bool wants_notify(struct vop_pipe *p, unsigned k)
{
	struct pipe_q *q = &p->q[k];
	bool done = p->pc.count && q->seq >= p->pc.count;

	if (p->role == VOP_ROLE_DRIVER) {
		if (q->mode == VOP_PIPE_SOURCE)
			/* Completions only matter when we ran out of descriptors
			 * (as virtio-net keeps tx interrupts off). */
			return !done && vop_vq_num_free(&q->vq) == 0;
		return q->mode == VOP_PIPE_SINK;
	}
	if (p->q[0].mode == VOP_PIPE_ECHO)
		return k == VOP_PIPE_TXQ ? p->echo_rx_valid : !p->echo_rx_valid;
	if (q->mode == VOP_PIPE_SOURCE)
		return !done;
	return q->mode == VOP_PIPE_SINK;
}

/* ------------------------------------------------------------------ */
/* Backend ops                                                          */
/* ------------------------------------------------------------------ */

static int pipe_start(void *dev, uint64_t features, bool resume)
{
	struct vop_pipe *p = dev;
	unsigned i;
	int rc;

	if (resume)
		return -EOPNOTSUPP; /* no in-flight journal: the driver must reset us */
	p->features = features;
	for (i = 0; i < 2; i++) {
		struct pipe_q *q = &p->q[i];

		if (p->role == VOP_ROLE_DRIVER && q->ready) {
			vop_vq_reset_driver(&q->vq);
		} else {
			if (q->ready) {
				vop_vq_destroy(&q->vq);
				q->ready = false;
			}
			rc = init_queue(p, i);
			if (rc)
				return rc;
		}
		q->seq = 0;
	}
	p->echo_rx_valid = false;
	vop_write_once_u64(&p->ps.tx_msgs, 0);
	vop_write_once_u64(&p->ps.rx_msgs, 0);
	return 0;
}

static int pipe_stop(void *dev)
{
	struct vop_pipe *p = dev;
	unsigned i;

	if (p->role == VOP_ROLE_DRIVER)
		return 0; /* the driver resets its rings in place when it starts again */
	for (i = 0; i < 2; i++) {
		struct pipe_q *q = &p->q[i];

		if (q->ready) {
			vop_vq_destroy(&q->vq);
			q->ready = false;
		}
		if (q->vq.broken)
			vop_stat_add(&q->vq.stats.c[VOP_VQS_RESETS], 1);
		q->vq.broken = 0;
		vop_write_once_u64(&q->vq.stats.c[VOP_VQS_BROKEN], 0);
		q->seq = 0;
	}
	p->echo_rx_valid = false;
	vop_write_once_u64(&p->ps.tx_msgs, 0);
	vop_write_once_u64(&p->ps.rx_msgs, 0);
	return 0;
}

static int pipe_poll(void *dev)
{
	struct vop_pipe *p = dev;
	unsigned n = 0, k;

	if (pipe_broken(p))
		return 0;
	/* Awake: without EVENT_IDX tell the peer not to notify us (a no-op with it). */
	for (k = 0; k < 2; k++)
		if (p->q[k].ready)
			vop_vq_disable_notify(&p->q[k].vq);
	if (p->role == VOP_ROLE_DRIVER) {
		if (p->q[0].mode == VOP_PIPE_SOURCE)
			n += drv_source(p);
		if (p->q[1].mode == VOP_PIPE_SINK)
			n += drv_sink(p);
	} else {
		if (p->q[0].mode == VOP_PIPE_SINK)
			n += dev_sink(p);
		else if (p->q[0].mode == VOP_PIPE_ECHO)
			n += dev_echo(p);
		if (p->q[1].mode == VOP_PIPE_SOURCE)
			n += dev_source(p);
	}
	return (int)n;
}

static int pipe_prepare_sleep(void *dev)
{
	struct vop_pipe *p = dev;
	int pending = 0;
	unsigned k;

	if (pipe_broken(p))
		return 0;
	for (k = 0; k < 2; k++) {
		struct pipe_q *q = &p->q[k];

		if (q->ready && wants_notify(p, k) && vop_vq_enable_notify(&q->vq) != 0)
			pending = 1;
	}
	return pending;
}

static struct vop_vq *pipe_queue(void *dev, unsigned q)
{
	struct vop_pipe *p = dev;

	return q < 2 ? &p->q[q].vq : NULL;
}

static bool pipe_wants_prefault(void *dev)
{
	const struct vop_pipe *p = dev;

	/* Only pipes that carry traffic: an idle stand-in never touches its pools. */
	return p->pc.tx_mode == VOP_PIPE_SOURCE || p->pc.rx_mode == VOP_PIPE_SOURCE ||
	       p->pc.tx_mode == VOP_PIPE_ECHO;
}

static void pipe_release(void *dev)
{
	struct vop_pipe *p = dev;

	if (!p)
		return;
	destroy_queues(p);
	free(p->echo_rx);
	free(p->scratch);
	free(p);
}

/* ------------------------------------------------------------------ */
/* Link API                                                             */
/* ------------------------------------------------------------------ */

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

int vop_link_attach_pipe(struct vop_link *l, uint32_t dev_id, enum vop_role role,
			 const struct vop_pipe_config *pc)
{
	struct vop_pipe *p;
	unsigned i;
	int rc;

	rc = check_pipe_config(pc, role);
	if (rc)
		return rc;
	if (vop_link_failed(l))
		return -ENOLINK;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->w = vop_link_window(l);
	p->role = role;
	/* Bounded: a peer rewriting the entry cannot keep this (JS) thread busy. */
	rc = vop_devtab_find_bounded(p->w, dev_id, &p->info);
	if (rc)
		goto err;
	rc = -EINVAL;
	if ((p->info.device_side == p->w->side) != (role == VOP_ROLE_DEVICE))
		goto err;
	if (p->info.device_type != VOP_DEVTYPE_BYTE_PIPE || p->info.num_queues != 2)
		goto err;
	p->pc = *pc;
	p->q[0].mode = pc->tx_mode;
	p->q[1].mode = pc->rx_mode;
	if (role == VOP_ROLE_DRIVER) {
		for (i = 0; i < 2; i++) {
			const struct vop_queue_desc *qd = &p->info.queues[i];
			uint64_t room = qd->pool_size - ind_bytes_for(qd->size);
			uint64_t bs = pc->buf_size ? (pc->buf_size + 63ull) / 64 * 64
						   : room / qd->size / 64 * 64;

			if (qd->pool_size < ind_bytes_for(qd->size) || bs < pc->msg_size ||
			    bs * qd->size > room || bs > UINT32_MAX)
				goto err;
			p->q[i].buf_size = (uint32_t)bs;
		}
	}
	p->scratch_size = pc->msg_size > p->q[1].buf_size ? pc->msg_size : p->q[1].buf_size;
	if (p->scratch_size < 65536 + PIPE_HDR)
		p->scratch_size = 65536 + PIPE_HDR;
	p->scratch = calloc(1, p->scratch_size);
	p->echo_rx = calloc(1, sizeof(*p->echo_rx));
	rc = -ENOMEM;
	if (!p->scratch || !p->echo_rx)
		goto err;
	for (i = 0; i < p->scratch_size; i++)
		p->scratch[i] = (uint8_t)(i * 7u + 1u);
	p->ops = (struct vop_devback_ops){
		.name = role == VOP_ROLE_DRIVER ? "pipe-driver" : "pipe-device",
		.driver_features = pc->features,
		.start = pipe_start,
		.stop = pipe_stop,
		.poll = pipe_poll,
		.prepare_sleep = pipe_prepare_sleep,
		.queue = pipe_queue,
		.wants_prefault = pipe_wants_prefault,
		.release = pipe_release,
	};
	/* From here the link owns p: it calls release on failure too. */
	return vop_link_attach_backend(l, dev_id, role, &p->ops, p);
err:
	pipe_release(p);
	return rc;
}

static int read_stats(void *dev, void *arg)
{
	const struct vop_pipe *p = dev;
	struct vop_pipe_stats *out = arg;

	out->tx_msgs = vop_read_once_u64(&p->ps.tx_msgs);
	out->rx_msgs = vop_read_once_u64(&p->ps.rx_msgs);
	out->bad_msgs = vop_read_once_u64(&p->ps.bad_msgs);
	return 0;
}

int vop_link_pipe_stats(struct vop_link *l, uint32_t dev_id, struct vop_pipe_stats *out)
{
	int rc = vop_link_call_backend(l, dev_id, pipe_start, read_stats, out);

	if (rc == 0) {
		int st = vop_link_dev_state(l, dev_id);

		out->state = st < 0 ? 0 : (uint64_t)st;
	}
	return rc;
}
