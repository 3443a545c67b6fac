/* SPDX-License-Identifier: Apache-2.0 */
/* A counting sink net device (benchmarks): see vop/dev_sink.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../core/win_access.h"
#include "vop/dev_sink.h"

#define SINK_RXQ 0u
#define SINK_TXQ 1u
#define SINK_HDR 12u
#define SINK_BUDGET 256 /* chains per round */
#define SINK_COPY_MAX (65536u + 14u) /* copy mode: the largest frame a virtio-net header may announce */

struct vop_sink {
	struct vop_devctx *ctx;  /* set at create */
	struct vop_dev_info di;  /* set at create */
	bool started;            /* worker */
	uint64_t feat;           /* worker */
	struct vop_devq q[2];    /* worker; counters read by any thread */
	struct vop_chain chain;  /* worker: the chain being counted */
	uint8_t *copy;           /* copy mode: private buffer each frame is copied into, else NULL */
	uint64_t frames, bytes;  /* worker writes (relaxed), any thread reads */
};

static void add(uint64_t *p, uint64_t v)
{
	vop_stat_add(p, v); /* private counter, one writer */
}

void vop_sink_stats(struct vop_sink *s, struct vop_net_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->tx_frames = vop_read_once_u64(&s->frames);
	out->tx_bytes = vop_read_once_u64(&s->bytes);
}

static int sink_start(void *arg, uint64_t feat, bool resume)
{
	struct vop_sink *s = arg;
	int rc;

	(void)resume;
	s->feat = feat;
	rc = vop_devq_start(s->ctx, &s->di, SINK_RXQ, feat, &s->q[SINK_RXQ]);
	rc = rc ? rc : vop_devq_start(s->ctx, &s->di, SINK_TXQ, feat, &s->q[SINK_TXQ]);
	if (rc)
		return rc;
	s->started = true;
	return 0;
}

static int sink_stop(void *arg)
{
	struct vop_sink *s = arg;

	s->started = false;
	vop_devq_destroy(&s->q[SINK_RXQ]);
	vop_devq_destroy(&s->q[SINK_TXQ]);
	return 0;
}

/*
 * Copy mode: the frame's bytes after the header into the private buffer
 * (what DPDK's vhost PMD does into an mbuf), so that a comparison with it
 * pays for the same reads of guest memory. Frames beyond the buffer are
 * cut there (the checks of vq.h bound a chain anyway).
 */
static void copy_frame(struct vop_sink *s)
{
	uint32_t skip = SINK_HDR, off = 0;
	unsigned i;

	for (i = 0; i < s->chain.n_out && off < SINK_COPY_MAX; i++) {
		const struct vop_iov *v = &s->chain.iov[i];
		uint32_t len = v->len, n;

		if (skip >= len) {
			skip -= len;
			continue;
		}
		n = len - skip;
		if (n > SINK_COPY_MAX - off)
			n = SINK_COPY_MAX - off;
		vop_win_copy_from(s->copy + off, v->base + skip, n);
		off += n;
		skip = 0;
	}
}

static int sink_poll(void *arg)
{
	struct vop_sink *s = arg;
	struct vop_devq *q = &s->q[SINK_TXQ];
	uint64_t frames = 0, bytes = 0;
	int k, rc = 0;

	if (!s->started)
		return 0;
	for (k = 0; k < SINK_BUDGET; k++) {
		rc = vop_vq_pop(&q->vq, &s->chain);
		if (rc <= 0)
			break;
		frames++;
		bytes += s->chain.out_bytes > SINK_HDR ? s->chain.out_bytes - SINK_HDR : 0;
		if (s->copy)
			copy_frame(s);
		vop_vq_push(&q->vq, s->chain.head, 0);
	}
	if (frames == 0)
		return 0; /* nothing, or the queue broke (counted in its stats; the host reports it) */
	add(&s->frames, frames);
	add(&s->bytes, bytes);
	vop_devq_notify(s->ctx, q, vop_vq_publish_used(&q->vq));
	return 1;
}

static int sink_prepare_sleep(void *arg)
{
	struct vop_sink *s = arg;

	if (!s->started || s->q[SINK_TXQ].vq.broken)
		return 0;
	return vop_vq_enable_notify(&s->q[SINK_TXQ].vq); /* the receiveq never has work */
}

static struct vop_vq *sink_queue(void *arg, unsigned q)
{
	struct vop_sink *s = arg;

	return q < 2 ? &s->q[q].vq : NULL;
}

const struct vop_devback_ops vop_sink_ops = {
	.name = "net-sink",
	.start = sink_start,
	.stop = sink_stop,
	.poll = sink_poll,
	.prepare_sleep = sink_prepare_sleep,
	.queue = sink_queue,
};

int vop_sink_create(struct vop_devctx *ctx, uint32_t dev_id, struct vop_sink **out)
{
	struct vop_sink *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->ctx = ctx;
	rc = vop_devctx_find(ctx, dev_id, VOP_VIRTIO_ID_NET, 0, &s->di);
	if (rc == 0 && (s->di.num_queues < 2 || s->di.device_side != vop_devctx_side(ctx)))
		rc = -EINVAL;
	if (rc) {
		free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int vop_sink_set_copy(struct vop_sink *s, bool copy)
{
	if (!copy) {
		free(s->copy);
		s->copy = NULL;
		return 0;
	}
	if (!s->copy)
		s->copy = malloc(SINK_COPY_MAX);
	return s->copy ? 0 : -ENOMEM;
}

void vop_sink_destroy(struct vop_sink *s)
{
	if (!s)
		return;
	free(s->copy);
	vop_devq_destroy(&s->q[SINK_RXQ]);
	vop_devq_destroy(&s->q[SINK_TXQ]);
	free(s);
}
