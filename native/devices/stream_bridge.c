/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stream bridge (vop/stream.h, docs/stream-protocol.md): joins the
 * proxy side of a private window to a connected socket.
 *
 * Threads:
 *  - the proxy link's worker runs the proxy backends (struct
 *    vop_devback_ops below): on the driver side it plays the DEVICE role
 *    (pops chains, encodes CHAINS, applies USED), on the device side the
 *    DRIVER role (materialises CHAINS in its pool, posts them, encodes
 *    USED). Large readable segments (driver side) and written bytes (device
 *    side) are sent from the window itself (sendmsg, struct txseg); the
 *    driver side's bridge reads used bytes into the chains (readv, ur_*);
 *    the device side copies CHAINS' readable bytes into its slots.
 *  - the bridge thread owns the socket: handshake, then it writes the tx
 *    buffer out and reads frames, checks each against the negotiated limits
 *    and queues CHAINS/USED to the device they name (bounded), handles
 *    control messages itself (DEV_START/DEV_RESET attach and detach the
 *    device side's proxy driver on the proxy link), PING/PONG, ERROR.
 * s->mu protects the tx buffer, the rx lists, the status and the state.
 * A violation anywhere ends the link: state FAILED with a reason, an ERROR
 * frame to the peer (best effort), the socket shut down. Memory per link:
 * the rx buffer (max_frame), the tx buffer (4 x max_frame + a control
 * reserve) with TXSEG_MAX slot segments, a SCRATCH_LEN buffer and at most
 * 4 x max_frame of queued frames (CHAINS only: USED is never queued),
 * whatever the peer sends; per device O(queue size) bookkeeping. Lock
 * order: fmu before mu.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "../core/win_access.h"
#include "vop/dev_common.h"
#include "vop/stream.h"
#include "vop/stream_tls.h"

#define RING_BITS ((1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC))
#define INFLIGHT_BIT (1ull << 47)
#define CTRL_RESERVE (64u * 1024u) /* tx room only control frames may use */
#define RXMSG_OVERHEAD 64u         /* accounted per queued frame (a flood of tiny frames) */
#define MAX_DEVS 32u
#define STREAM_MAX_CTRL_PER_SEC 1024u /* PING/PONG frames a peer may send a second */
#define STREAM_MAX_CONFIG_PER_SEC 64u /* CONFIG frames a peer may send a second, per device */
#define CONFIG_GAP_NS (100ull * 1000 * 1000) /* device side: at most one CONFIG per device per 100 ms */
#define UR_DIRECT 4096u  /* a used payload with at least this much left is read in place */
#define UR_TAIL 64u      /* rxbuf bytes read behind a streamed used payload (the next headers) */
#define TXSEG_MAX 4096u  /* written bytes sent from their slots, not yet sent */
#define TXSEG_MIN 4096u  /* smaller used payloads are copied into the tx buffer */
#define TX_IOV 64u       /* iovecs per sendmsg */
#define SCRATCH_LEN (64u * 1024u) /* where the payload of a stale used entry is read and dropped */

/* Driver side: q->out[head] */
enum { OUT_FREE = 0, OUT_SENT = 1, OUT_FILLING = 2, OUT_DONE = 3 };

struct rxmsg {
	struct rxmsg *next;
	uint8_t type;
	uint32_t len;
	uint8_t data[];
};

struct slot_rec {
	uint16_t remote_id; /* the driver side's head */
	uint32_t in_off;    /* writable part's offset in the slot */
	uint32_t in_bytes;  /* writable bytes */
};

struct squeue {
	struct vop_devq dq;
	uint16_t num;
	uint32_t max_chain;      /* bytes per chain (driver side: from DEV_INFO) */
	/* driver side (we are the device of the private ring) */
	struct vop_chain *chains; /* [num] popped and sent, by head */
	uint8_t *out;             /* [num] OUT_*: SENT while the peer holds head (under s->mu) */
	uint16_t *done_id;        /* [num] used entries the bridge filled, for the worker (s->mu) */
	uint32_t *done_len;
	uint16_t ndone;
	uint16_t *take_id;        /* [num] the worker's half of the double buffer */
	uint32_t *take_len;
	/* device side (we are the driver of the private ring) */
	uint8_t *rbusy;           /* [num] remote id outstanding */
	struct slot_rec *recs;    /* [num] by slot */
	uint16_t *free_slots;
	uint16_t nfree;
	uint32_t slot_size;
	uint16_t *rel;            /* [num] slots whose used bytes the bridge has sent (s->mu) */
	uint16_t nrel;
	uint32_t epoch;           /* queues_init count (s->mu): a release of an older epoch is dropped */
};

/* Device side: a used entry's written bytes, sent by the bridge from the slot itself. */
struct txseg {
	size_t at;          /* position in the tx buffer: after tx[..at) */
	const uint8_t *p;   /* in the slot (private window memory) */
	uint32_t len, sent;
	struct sdev *d;
	uint16_t queue, slot;
	uint32_t epoch;
};

struct sdev {
	struct vop_stream *s;
	struct vop_devback_ops ops;
	uint32_t dev_id;
	struct vop_dev_info info;
	struct squeue q[VOP_MAX_QUEUES];
	bool info_seen;      /* driver side: DEV_INFO received (bridge thread, before READY) */
	/* driver side, bridge thread: the config space the device announced and its last change applied */
	uint16_t cfg_len;     /* DEV_INFO's config_len: a CONFIG must carry exactly that many bytes */
	uint32_t cfg_applied; /* the device side's generation of the last CONFIG applied (0: none) */
	uint64_t cfg_window_ns; /* start of the second cfg_frames counts */
	uint32_t cfg_frames;
	/*
	 * device side: the config generation the peer has (DEV_INFO's, written by the bridge thread
	 * before READY; then the worker's), and when the next CONFIG may go
	 */
	uint32_t cfg_sent;
	uint64_t cfg_next_ns;
	/* worker */
	uint32_t gen;        /* driver side: generation of the current start */
	bool started;
	struct rxmsg *cur;   /* device side: a CHAINS frame partly posted (ring full) */
	struct vop_sbatch cur_b;
	/* bridge thread (device side) */
	uint32_t rgen;
	bool attached;
	/* under s->mu */
	struct rxmsg *rx_head, *rx_tail;
	/* set under s->mu when rx_head or a queue's rel/done list is filled; read without it by the worker's poll */
	_Atomic bool rx_any;
	_Atomic bool done_any; /* likewise for the queues' done (driver side) and rel (device side) lists */
};

struct vop_stream {
	struct vop_link *proxy;
	struct vop_window *w;
	struct vop_stream_config cfg;
	uint8_t secret[VOP_STREAM_MAX_SECRET];
	uint8_t side; /* 0 driver side, 1 device side */
	uint16_t peer_minor; /* the peer's HELLO version_minor (bridge thread before READY; read-only after) */
	int fd, efd;
	struct vop_stls *tls; /* NULL: plain socket I/O */
	pthread_t thr;
	bool thr_started;
	struct vop_stream_limits lim; /* negotiated (bridge thread writes before READY) */
	struct sdev *devs[MAX_DEVS];
	unsigned ndevs;
	uint8_t *rxbuf;
	size_t rxcap, rxlen;
	/*
	 * Driver side: the USED frame being received (bridge thread). Its payloads go
	 * straight into the writable buffers of the chains they complete (readv into the
	 * ring's own buffers; bytes that already sat in rxbuf are copied), entry by entry.
	 */
	struct {
		bool active;        /* inside a USED frame */
		bool in_entry;      /* inside an entry's payload */
		bool sink;          /* this entry's bytes are dropped (a stale generation) */
		struct sdev *d;
		uint16_t queue;
		uint32_t gen;
		uint32_t left;      /* entries still to come, this one included */
		uint32_t frame_left; /* payload bytes of the frame not yet consumed */
		uint16_t id;
		uint32_t len, done;
	} ur;
	uint8_t *scratch;
	bool ur_wake;
	bool ur_big; /* the last used entry was read in place: read the next headers alone, not its payload */
	/* fmu: held by the bridge while it writes into chain buffers, by the worker to start/stop a device */
	pthread_mutex_t fmu;
	uint64_t last_rx_ns, next_ping_ns;
	uint64_t ping_token;  /* the last PING we sent; only its PONG measures the RTT */
	uint64_t ctrl_window_ns; /* start of the second ctrl_frames counts (bridge thread) */
	uint32_t ctrl_frames;    /* PING/PONG received in that second */

	pthread_mutex_t mu;
	uint8_t *tx;
	size_t txcap, txhead, txtail;
	struct txseg *segs; /* FIFO ring [TXSEG_MAX] by position: sent between the tx buffer's bytes */
	unsigned seg_head, nseg;
	bool tx_blocked;  /* the worker ran out of tx room: wake it when drained */
	size_t rx_queued; /* bytes of frames queued to devices */
	bool throttled;   /* rx_queued over the bound: stop reading */
	bool stop;
	_Atomic uint32_t state;
	struct vop_stream_status st;
};

static uint64_t now_ns(void)
{
	return vop_dev_now_ns();
}

static void signal_efd(struct vop_stream *s)
{
	uint64_t one = 1;

	if (write(s->efd, &one, sizeof(one)) < 0) {
		/* counter saturated: already readable */
	}
}

/* End the link with reason (first reason wins). Any thread; takes s->mu. */
static void fail_locked(struct vop_stream *s, const char *fmt, va_list ap)
{
	if (atomic_load_explicit(&s->state, memory_order_acquire) == VOP_STREAM_FAILED)
		return;
	vsnprintf(s->st.reason, sizeof(s->st.reason), fmt, ap);
	atomic_store_explicit(&s->state, VOP_STREAM_FAILED, memory_order_release);
}

__attribute__((format(printf, 2, 3))) static void sfail(struct vop_stream *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	pthread_mutex_lock(&s->mu);
	fail_locked(s, fmt, ap);
	pthread_mutex_unlock(&s->mu);
	va_end(ap);
	signal_efd(s);
	vop_window_wake(s->w);
}

static bool failed(struct vop_stream *s)
{
	return atomic_load_explicit(&s->state, memory_order_acquire) == VOP_STREAM_FAILED;
}

static struct sdev *find_dev(struct vop_stream *s, uint32_t dev_id)
{
	unsigned i;

	for (i = 0; i < s->ndevs; i++)
		if (s->devs[i]->dev_id == dev_id)
			return s->devs[i];
	return NULL;
}

/* ------------------------------------------------------------------ */
/* tx buffer (s->mu held)                                               */
/* ------------------------------------------------------------------ */

/* Room for data frames (the control reserve excluded). */
static size_t tx_room(struct vop_stream *s)
{
	size_t lim = s->txcap - CTRL_RESERVE;

	return s->txtail >= lim ? 0 : lim - s->txtail;
}

/* Nothing waits to be sent (s->mu held). */
static bool tx_idle(struct vop_stream *s)
{
	return s->txhead == s->txtail && s->nseg == 0;
}

/* Append a control frame (may use the reserve). Returns false when even that is full. */
static bool tx_ctrl(struct vop_stream *s, uint8_t type, const uint8_t *p, uint32_t len)
{
	bool was_empty;

	pthread_mutex_lock(&s->mu);
	if (s->txcap - s->txtail < VOP_SFRAME_HDR + len) {
		pthread_mutex_unlock(&s->mu);
		return false;
	}
	was_empty = tx_idle(s);
	vop_sframe_put_hdr(s->tx + s->txtail, type, len);
	memcpy(s->tx + s->txtail + VOP_SFRAME_HDR, p, len);
	s->txtail += VOP_SFRAME_HDR + len;
	s->st.frames_tx++;
	pthread_mutex_unlock(&s->mu);
	if (was_empty)
		signal_efd(s);
	return true;
}

/* ------------------------------------------------------------------ */
/* rx lists                                                             */
/* ------------------------------------------------------------------ */

static void free_list(struct rxmsg *m)
{
	while (m) {
		struct rxmsg *n = m->next;

		free(m);
		m = n;
	}
}

/* Take dev's queued frames (worker). */
static struct rxmsg *take_rx(struct vop_stream *s, struct sdev *d)
{
	struct rxmsg *m, *it;
	bool unthrottle = false;

	if (!atomic_load_explicit(&d->rx_any, memory_order_acquire))
		return NULL; /* nothing queued: no lock in the worker's spin loop */
	pthread_mutex_lock(&s->mu);
	atomic_store_explicit(&d->rx_any, false, memory_order_relaxed);
	m = d->rx_head;
	d->rx_head = d->rx_tail = NULL;
	for (it = m; it; it = it->next)
		s->rx_queued -= it->len + RXMSG_OVERHEAD;
	if (s->throttled && s->rx_queued < 2u * s->lim.max_frame) {
		s->throttled = false;
		unthrottle = true;
	}
	pthread_mutex_unlock(&s->mu);
	if (unthrottle)
		signal_efd(s);
	return m;
}

static void flush_rx(struct vop_stream *s, struct sdev *d)
{
	free_list(take_rx(s, d));
}

/* ------------------------------------------------------------------ */
/* Queues                                                               */
/* ------------------------------------------------------------------ */

static void queues_destroy(struct sdev *d)
{
	unsigned i;

	for (i = 0; i < d->info.num_queues; i++) {
		struct squeue *q = &d->q[i];

		vop_devq_destroy(&q->dq);
		free(q->chains);
		free(q->out);
		free(q->done_id);
		free(q->done_len);
		free(q->take_id);
		free(q->take_len);
		q->done_id = q->take_id = NULL;
		q->done_len = q->take_len = NULL;
		free(q->rbusy);
		free(q->recs);
		free(q->free_slots);
		free(q->rel);
		q->rel = NULL;
		q->chains = NULL;
		q->out = q->rbusy = NULL;
		q->recs = NULL;
		q->free_slots = NULL;
	}
}

static int queues_init(struct sdev *d, uint64_t features)
{
	struct vop_stream *s = d->s;
	unsigned i, k;
	int rc;

	for (i = 0; i < d->info.num_queues; i++) {
		struct squeue *q = &d->q[i];

		vop_devq_destroy(&q->dq);
		rc = vop_devq_init(s->w, &d->info, i, s->side == 1, features, &q->dq);
		if (rc)
			return rc;
		q->num = q->dq.num;
		if (s->side == 0) {
			if (!q->chains)
				q->chains = calloc(q->num, sizeof(*q->chains));
			if (!q->out)
				q->out = calloc(q->num, 1);
			if (!q->done_id)
				q->done_id = calloc(q->num, sizeof(*q->done_id));
			if (!q->done_len)
				q->done_len = calloc(q->num, sizeof(*q->done_len));
			if (!q->take_id)
				q->take_id = calloc(q->num, sizeof(*q->take_id));
			if (!q->take_len)
				q->take_len = calloc(q->num, sizeof(*q->take_len));
			if (!q->chains || !q->out || !q->done_id || !q->done_len || !q->take_id || !q->take_len)
				return -ENOMEM;
			pthread_mutex_lock(&s->mu);
			memset(q->out, 0, q->num);
			q->ndone = 0;
			pthread_mutex_unlock(&s->mu);
		} else {
			if (!q->rbusy)
				q->rbusy = calloc(q->num, 1);
			if (!q->recs)
				q->recs = calloc(q->num, sizeof(*q->recs));
			if (!q->free_slots)
				q->free_slots = calloc(q->num, sizeof(*q->free_slots));
			if (!q->rel)
				q->rel = calloc(q->num, sizeof(*q->rel));
			if (!q->rbusy || !q->recs || !q->free_slots || !q->rel)
				return -ENOMEM;
			pthread_mutex_lock(&s->mu);
			q->nrel = 0;
			q->epoch++; /* slots still being sent from belong to the old ring: not returned */
			pthread_mutex_unlock(&s->mu);
			memset(q->rbusy, 0, q->num);
			for (k = 0; k < q->num; k++)
				q->free_slots[k] = (uint16_t)(q->num - 1 - k);
			q->nfree = q->num;
		}
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Driver side: we are the device of the private ring                   */
/* ------------------------------------------------------------------ */

static int drvside_start(void *dev, uint64_t features, bool resume)
{
	struct sdev *d = dev;
	uint8_t m[VOP_SMSG_DEV_START_LEN];
	int rc;

	if (resume)
		return -EOPNOTSUPP;
	pthread_mutex_lock(&d->s->fmu);
	rc = queues_init(d, features);
	if (rc) {
		pthread_mutex_unlock(&d->s->fmu);
		return rc;
	}
	d->gen++;
	d->started = true;
	pthread_mutex_unlock(&d->s->fmu);
	vop_sput32(m, d->dev_id);
	vop_sput32(m + 4, d->gen);
	/* Ring mechanics are each side's own: only the device's feature bits travel. */
	vop_sput64(m + 8, features & ~(RING_BITS | INFLIGHT_BIT));
	if (!tx_ctrl(d->s, VOP_SMSG_DEV_START, m, sizeof(m)))
		sfail(d->s, "tx control backlog full");
	return 0;
}

static int drvside_stop(void *dev)
{
	struct sdev *d = dev;
	uint8_t m[VOP_SMSG_DEV_RESET_LEN];
	unsigned i;

	if (d->started) {
		vop_sput32(m, d->dev_id);
		vop_sput32(m + 4, d->gen);
		if (!tx_ctrl(d->s, VOP_SMSG_DEV_RESET, m, sizeof(m)))
			sfail(d->s, "tx control backlog full");
	}
	/* The bridge writes into chain buffers only under fmu and while started: none after this. */
	pthread_mutex_lock(&d->s->fmu);
	d->started = false;
	for (i = 0; i < d->info.num_queues; i++)
		vop_devq_destroy(&d->q[i].dq);
	pthread_mutex_unlock(&d->s->fmu);
	flush_rx(d->s, d);
	return 0;
}

/*
 * Push the used entries the bridge thread filled (their bytes are already in the chains'
 * writable buffers, checked against the chain as it was sent: see ur_entry).
 */
static unsigned drvside_complete(struct sdev *d)
{
	struct vop_stream *s = d->s;
	unsigned n = 0, qi;

	if (!atomic_load_explicit(&d->done_any, memory_order_acquire))
		return 0;
	atomic_store_explicit(&d->done_any, false, memory_order_relaxed);
	for (qi = 0; qi < d->info.num_queues; qi++) {
		struct squeue *q = &d->q[qi];
		unsigned k, i;
		uint16_t *ids;
		uint32_t *lens;

		if (!q->dq.ready || !q->done_id)
			continue;
		pthread_mutex_lock(&s->mu);
		k = q->ndone;
		ids = q->done_id;
		lens = q->done_len;
		q->done_id = q->take_id;
		q->done_len = q->take_len;
		q->take_id = ids;
		q->take_len = lens;
		q->ndone = 0;
		for (i = 0; i < k; i++)
			q->out[ids[i]] = OUT_FREE;
		s->st.used_rx += k;
		pthread_mutex_unlock(&s->mu);
		/* Only this thread pops heads again: the chains stay as they were sent. */
		for (i = 0; i < k; i++)
			vop_vq_push(&q->dq.vq, q->chains[ids[i]].head, lens[i]);
		if (k)
			vop_devq_notify_if(s->w, vop_vq_publish_used(&q->dq.vq));
		n += k;
	}
	return n;
}

/* Pop available chains of queue qi into one CHAINS frame. */
static unsigned drvside_send(struct sdev *d, unsigned qi)
{
	struct vop_stream *s = d->s;
	struct squeue *q = &d->q[qi];
	size_t start, pos, flen = VOP_SMSG_BATCH_HDR, worst = 4 + 4 * VOP_STREAM_MAX_SEGS + (size_t)q->max_chain;
	unsigned n = 0;
	bool was_empty;

	pthread_mutex_lock(&s->mu);
	if (tx_room(s) < VOP_SFRAME_HDR + VOP_SMSG_BATCH_HDR + worst) {
		s->tx_blocked = true;
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	was_empty = tx_idle(s);
	start = s->txtail;
	pos = start + VOP_SFRAME_HDR + VOP_SMSG_BATCH_HDR;
	while (n < 0xffffu && pos + worst <= s->txcap - CTRL_RESERVE && flen + worst <= s->lim.max_frame) {
		struct vop_chain *c;
		uint32_t i;
		int h = -1, rc;

		/* Pop into a free bookkeeping slot: the head is only known after the pop. */
		struct vop_chain tmp;

		rc = vop_vq_pop(&q->dq.vq, &tmp);
		if (rc != 1)
			break;
		h = tmp.head;
		if ((uint64_t)tmp.out_bytes + tmp.in_bytes > q->max_chain) {
			/* Our own driver posted more than the peer can hold: its queue breaks here. */
			vop_vq_fail(&q->dq.vq, VOP_VQ_PAYLOAD);
			break;
		}
		c = &q->chains[h];
		*c = tmp;
		s->tx[pos] = (uint8_t)h;
		s->tx[pos + 1] = (uint8_t)(h >> 8);
		s->tx[pos + 2] = (uint8_t)c->n_out;
		s->tx[pos + 3] = (uint8_t)c->n_in;
		pos += 4;
		for (i = 0; i < (uint32_t)c->n_out + c->n_in; i++, pos += 4)
			vop_sput32(s->tx + pos, c->iov[i].len);
		for (i = 0; i < c->n_out; i++) {
			/*
			 * A large readable segment is sent from the chain itself (it stays ours until
			 * its USED arrives, which cannot precede these bytes); small ones are copied.
			 */
			if (c->iov[i].len >= TXSEG_MIN && s->nseg < TXSEG_MAX) {
				struct txseg *g = &s->segs[(s->seg_head + s->nseg) % TXSEG_MAX];

				*g = (struct txseg){ pos, (const uint8_t *)c->iov[i].base, c->iov[i].len, 0, NULL, 0, 0, 0 };
				s->nseg++;
				continue;
			}
			vop_win_copy_from(s->tx + pos, c->iov[i].base, c->iov[i].len);
			pos += c->iov[i].len;
		}
		flen += 4 + 4 * ((size_t)c->n_out + c->n_in) + c->out_bytes;
		q->out[h] = OUT_SENT;
		n++;
	}
	if (n) {
		vop_sframe_put_hdr(s->tx + start, VOP_SMSG_CHAINS, (uint32_t)flen);
		vop_sput32(s->tx + start + VOP_SFRAME_HDR, d->dev_id);
		vop_sput32(s->tx + start + VOP_SFRAME_HDR + 4, d->gen);
		vop_sput16(s->tx + start + VOP_SFRAME_HDR + 8, (uint16_t)qi);
		vop_sput16(s->tx + start + VOP_SFRAME_HDR + 10, (uint16_t)n);
		s->txtail = pos;
		s->st.chains_tx += n;
		s->st.frames_tx++;
	}
	pthread_mutex_unlock(&s->mu);
	if (n && was_empty)
		signal_efd(s);
	return n;
}

/* ------------------------------------------------------------------ */
/* Device side: we are the driver of the private ring                   */
/* ------------------------------------------------------------------ */

static int devside_start(void *dev, uint64_t features, bool resume)
{
	struct sdev *d = dev;
	int rc;

	(void)resume;
	rc = queues_init(d, features);
	if (rc)
		return rc;
	d->gen = d->rgen; /* set by the bridge thread before it attached us */
	d->started = true;
	return 0;
}

static int devside_stop(void *dev)
{
	struct sdev *d = dev;

	d->started = false;
	free_list(d->cur);
	d->cur = NULL;
	return 0;
}

/*
 * Where each segment of a chain goes in its slot (offsets into the slot); returns the
 * writable part's offset (the writable segments stay contiguous: USED copies them back in
 * one piece). A device that opens its file with O_DIRECT (blk `direct`) needs its data on
 * 4 KiB boundaries of memory, so the largest segment, when it is a multiple of 512 bytes and
 * at least 4 KiB (a blk request's data), starts on one; the other segments are packed into the
 * gap before it when they fit there, else after it. For a blk request of 64 KiB of data in a
 * 68 KiB slot both always fit (the gap is < 4 KiB, the rest 17 bytes). Anything else, or a
 * layout that would not fit the slot: packed, readable then writable (always fits: the chain
 * is <= slot_size).
 */
static uint32_t slot_layout(const uint8_t *base, uint32_t slot_size, const struct vop_schain *c,
			    uint32_t off[VOP_STREAM_MAX_SEGS])
{
	uint32_t n = (uint32_t)c->n_out + c->n_in, i, big = 0, in_at, pos;
	uint64_t pre = 0, start, others, end;
	uintptr_t b = (uintptr_t)base;

	for (i = 1; i < n; i++)
		if (c->seg[i] > c->seg[big])
			big = i;
	if (c->seg[big] >= 4096 && c->seg[big] % 512 == 0) {
		/* The block that holds `big`: the writable part, or `big` alone when it is readable. */
		if (big >= c->n_out)
			for (i = c->n_out; i < big; i++)
				pre += c->seg[i];
		others = c->out_bytes + c->in_bytes -
			 (big >= c->n_out ? c->in_bytes : c->seg[big]);
		start = ((b + pre + 4095) & ~(uintptr_t)4095) - b - pre;
		end = start + (big >= c->n_out ? c->in_bytes : c->seg[big]);
		pos = others <= start ? 0 : (uint32_t)end;
		if ((others <= start ? end : end + others) <= slot_size) {
			in_at = 0;
			for (i = 0; i < c->n_out; i++) {
				if (i == big) {
					off[i] = (uint32_t)start;
					continue;
				}
				off[i] = pos;
				pos += c->seg[i];
			}
			if (big >= c->n_out) {
				in_at = (uint32_t)start;
			} else {
				in_at = pos;
			}
			for (i = c->n_out, pos = in_at; i < n; i++) {
				off[i] = pos;
				pos += c->seg[i];
			}
			return in_at;
		}
	}
	for (i = 0, pos = 0; i < n; i++) {
		off[i] = pos;
		pos += c->seg[i];
	}
	return (uint32_t)c->out_bytes;
}

/*
 * The device's config space changed since the peer last got it (worker, from every poll: the
 * link worker polls at least every 100 ms even when idle). One load of the generation when
 * nothing changed; on a new even generation a consistent snapshot (the seqlock read) goes out
 * as CONFIG, at most one per device per CONFIG_GAP_NS (a device that keeps changing its config
 * is coalesced, not sent at every change). Only to a peer whose HELLO minor understands CONFIG.
 */
static void devside_config(struct sdev *d)
{
	struct vop_stream *s = d->s;
	struct vop_dev_side_view v;
	struct vop_sconfig c;
	uint8_t m[VOP_SMSG_CONFIG_MAX];
	uint32_t gen = 0;
	uint64_t t;

	if (s->peer_minor < VOP_STREAM_MINOR_CONFIG || d->info.config_len == 0 ||
	    d->info.config_len > VOP_CONFIG_MAX)
		return;
	vop_devtab_side_read(&d->info, d->info.device_side, &v);
	if (!v.current || v.config_generation < 2 || (v.config_generation & 1u) ||
	    v.config_generation <= d->cfg_sent)
		return; /* unchanged, or being written (the next poll sees it whole) */
	t = now_ns();
	if (t < d->cfg_next_ns)
		return;
	memset(&c, 0, sizeof(c));
	if (vop_devtab_config_read(s->w, &d->info, c.config, d->info.config_len, &gen) != 0 ||
	    gen < 2 || gen <= d->cfg_sent)
		return;
	c.dev_id = d->dev_id;
	c.generation = gen;
	c.config_len = (uint16_t)d->info.config_len;
	if (!tx_ctrl(s, VOP_SMSG_CONFIG, m, vop_sconfig_encode(m, &c)))
		return; /* no room now: the next poll tries again */
	d->cfg_sent = gen;
	d->cfg_next_ns = t + CONFIG_GAP_NS;
	pthread_mutex_lock(&s->mu);
	s->st.config_tx++;
	pthread_mutex_unlock(&s->mu);
}

/* Slots whose bytes the bridge has sent, back to the free list (worker). */
static void devside_reclaim(struct sdev *d)
{
	struct vop_stream *s = d->s;
	unsigned i, k;

	if (!atomic_load_explicit(&d->done_any, memory_order_acquire))
		return; /* nothing sent back: no lock in the worker's spin loop */
	pthread_mutex_lock(&s->mu);
	atomic_store_explicit(&d->done_any, false, memory_order_relaxed);
	for (i = 0; i < d->info.num_queues; i++) {
		struct squeue *q = &d->q[i];

		if (!q->rel)
			continue;
		for (k = 0; k < q->nrel; k++)
			q->free_slots[q->nfree++] = q->rel[k];
		q->nrel = 0;
	}
	pthread_mutex_unlock(&s->mu);
}

/* Post the chains of d->cur (from its cursor); false when the ring is full (retry later). */
static bool devside_post(struct sdev *d, unsigned *posted)
{
	struct vop_stream *s = d->s;
	struct squeue *q = &d->q[d->cur_b.queue];
	struct vop_sbatch save;
	struct vop_schain c;
	const char *why = NULL;
	int rc;

	for (;;) {
		struct vop_sg sg[VOP_STREAM_MAX_SEGS];
		uint32_t i, off[VOP_STREAM_MAX_SEGS], in_off, slot;
		uint64_t src = 0;
		uint8_t *base;

		save = d->cur_b;
		rc = vop_sbatch_next_chain(&d->cur_b, &s->lim, &c, &why);
		if (rc == 0)
			return true;
		if (rc < 0) {
			sfail(s, "chains batch: %s", why);
			return true;
		}
		if (c.id >= q->num) {
			sfail(s, "chain id %u >= queue size %u (dev %u queue %u)", c.id, q->num,
			      d->dev_id, d->cur_b.queue);
			return true;
		}
		if (q->rbusy[c.id]) {
			sfail(s, "chain id %u is already outstanding (dev %u queue %u)", c.id, d->dev_id,
			      d->cur_b.queue);
			return true;
		}
		if (c.out_bytes + c.in_bytes > q->slot_size) {
			sfail(s, "chain of %llu bytes exceeds max_chain %u (dev %u queue %u)",
			      (unsigned long long)(c.out_bytes + c.in_bytes), q->slot_size, d->dev_id,
			      d->cur_b.queue);
			return true;
		}
		if (q->nfree == 0)
			devside_reclaim(d); /* slots the bridge sent from since this poll began */
		if (q->nfree == 0) {
			sfail(s, "more chains outstanding than queue size %u (dev %u queue %u)", q->num,
			      d->dev_id, d->cur_b.queue);
			return true;
		}
		if (vop_vq_num_free(&q->dq.vq) < (unsigned)c.n_out + c.n_in) {
			d->cur_b = save; /* descriptors run out: the device must complete some first */
			return false;
		}
		slot = q->free_slots[--q->nfree];
		base = q->dq.pool + (uint64_t)slot * q->slot_size;
		in_off = slot_layout(base, q->slot_size, &c, off);
		for (i = 0; i < (uint32_t)c.n_out + c.n_in; i++) {
			sg[i].addr = q->dq.pool_off + (uint64_t)slot * q->slot_size + off[i];
			sg[i].len = c.seg[i];
		}
		for (i = 0; i < c.n_out; i++) {
			vop_win_copy_to(base + off[i], c.data + src, c.seg[i]);
			src += c.seg[i];
		}
		q->recs[slot] = (struct slot_rec){ c.id, in_off, (uint32_t)c.in_bytes };
		rc = vop_vq_add(&q->dq.vq, sg, c.n_out, c.n_in, (void *)(uintptr_t)(slot + 1));
		if (rc < 0) {
			q->free_slots[q->nfree++] = (uint16_t)slot;
			if (rc == -ENOSPC) {
				d->cur_b = save;
				return false;
			}
			return true; /* the queue broke (reported by the link) */
		}
		q->rbusy[c.id] = 1;
		(*posted)++;
	}
}

/*
 * Return completed chains of queue qi as one USED frame. Written bytes of TXSEG_MIN or more
 * stay in their slot: the frame refers to them (struct txseg) and the bridge sends them from
 * there with the headers around them in one sendmsg; the slot is reused once they are sent.
 * Smaller ones are copied into the tx buffer.
 */
static unsigned devside_send(struct sdev *d, unsigned qi)
{
	struct vop_stream *s = d->s;
	struct squeue *q = &d->q[qi];
	size_t start, pos, flen, worst = 8 + (size_t)q->slot_size;
	unsigned n = 0;
	bool was_empty;

	if (!q->dq.ready)
		return 0;
	pthread_mutex_lock(&s->mu);
	if (tx_room(s) < VOP_SFRAME_HDR + VOP_SMSG_BATCH_HDR + worst) {
		s->tx_blocked = true;
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	was_empty = tx_idle(s);
	start = s->txtail;
	pos = start + VOP_SFRAME_HDR + VOP_SMSG_BATCH_HDR;
	flen = VOP_SMSG_BATCH_HDR;
	while (n < 0xffffu && flen + worst <= s->lim.max_frame) {
		bool ext = s->nseg < TXSEG_MAX;
		void *tok;
		uint32_t len, slot;
		struct slot_rec *r;
		const uint8_t *src;
		int rc;

		if (pos + (ext ? 8 + TXSEG_MIN : worst) > s->txcap - CTRL_RESERVE)
			break;
		rc = vop_vq_get_used(&q->dq.vq, &tok, &len);
		if (rc != 1)
			break;
		slot = (uint32_t)((uintptr_t)tok - 1);
		r = &q->recs[slot];
		src = q->dq.pool + (uint64_t)slot * q->slot_size + r->in_off;
		vop_sput16(s->tx + pos, r->remote_id);
		vop_sput16(s->tx + pos + 2, 0);
		vop_sput32(s->tx + pos + 4, len);
		pos += 8;
		if (ext && len >= TXSEG_MIN) {
			struct txseg *g = &s->segs[(s->seg_head + s->nseg) % TXSEG_MAX];

			*g = (struct txseg){ pos, src, len, 0, d, (uint16_t)qi, (uint16_t)slot, q->epoch };
			s->nseg++;
		} else {
			vop_win_copy_from(s->tx + pos, src, len);
			pos += len;
			q->free_slots[q->nfree++] = (uint16_t)slot;
		}
		flen += 8 + (size_t)len;
		q->rbusy[r->remote_id] = 0;
		n++;
	}
	if (n) {
		vop_sframe_put_hdr(s->tx + start, VOP_SMSG_USED, (uint32_t)flen);
		vop_sput32(s->tx + start + VOP_SFRAME_HDR, d->dev_id);
		vop_sput32(s->tx + start + VOP_SFRAME_HDR + 4, d->gen);
		vop_sput16(s->tx + start + VOP_SFRAME_HDR + 8, (uint16_t)qi);
		vop_sput16(s->tx + start + VOP_SFRAME_HDR + 10, (uint16_t)n);
		s->txtail = pos;
		s->st.used_tx += n;
		s->st.frames_tx++;
	}
	pthread_mutex_unlock(&s->mu);
	if (n && was_empty)
		signal_efd(s);
	return n;
}

/* ------------------------------------------------------------------ */
/* Backend ops (worker thread, proxy link lock held)                    */
/* ------------------------------------------------------------------ */

static int sb_poll(void *dev)
{
	struct sdev *d = dev;
	struct vop_stream *s = d->s;
	unsigned n = 0, i;

	if (failed(s) || atomic_load_explicit(&s->state, memory_order_acquire) != VOP_STREAM_READY)
		return 0;
	if (s->side == 1)
		devside_config(d);
	if (!d->started)
		return 0;
	for (i = 0; i < d->info.num_queues; i++)
		if (d->q[i].dq.ready)
			vop_vq_disable_notify(&d->q[i].dq.vq);
	if (s->side == 0) {
		n += drvside_complete(d);
		for (i = 0; i < d->info.num_queues && !failed(s); i++)
			if (d->q[i].dq.ready && !d->q[i].dq.vq.broken)
				n += drvside_send(d, i);
	} else {
		unsigned posted = 0;

		devside_reclaim(d);
		for (i = 0; i < d->info.num_queues && !failed(s); i++)
			if (d->q[i].dq.ready)
				n += devside_send(d, i);
		/* Chains: a frame left over (ring was full) first, then the new ones, in order. */
		if (!d->cur) {
			d->cur = take_rx(s, d);
			if (d->cur) {
				const char *why = NULL;

				vop_sbatch_parse(d->cur->type, d->cur->data, d->cur->len, &s->lim, &d->cur_b,
						 &why);
			}
		} else {
			/* keep the rest queued behind cur */
		}
		while (d->cur && !failed(s)) {
			struct rxmsg *next;

			if (!devside_post(d, &posted))
				break;
			next = d->cur->next;
			free(d->cur);
			d->cur = next;
			if (!d->cur) {
				d->cur = take_rx(s, d);
			}
			if (d->cur) {
				const char *why = NULL;

				vop_sbatch_parse(d->cur->type, d->cur->data, d->cur->len, &s->lim, &d->cur_b,
						 &why);
			}
		}
		if (posted) {
			for (i = 0; i < d->info.num_queues; i++)
				if (d->q[i].dq.ready)
					vop_devq_notify_if(s->w, vop_vq_kick_prepare(&d->q[i].dq.vq));
			pthread_mutex_lock(&s->mu);
			s->st.chains_rx += posted;
			pthread_mutex_unlock(&s->mu);
		}
		n += posted;
	}
	return (int)n;
}

static int sb_prepare_sleep(void *dev)
{
	struct sdev *d = dev;
	struct vop_stream *s = d->s;
	int pending = 0;
	unsigned i;
	bool blocked, queued;

	if (failed(s) || atomic_load_explicit(&s->state, memory_order_acquire) != VOP_STREAM_READY || !d->started)
		return 0;
	pthread_mutex_lock(&s->mu);
	blocked = s->tx_blocked;
	queued = d->rx_head != NULL;
	for (i = 0; s->side == 0 && i < d->info.num_queues; i++)
		if (d->q[i].done_id && d->q[i].ndone)
			queued = true;
	pthread_mutex_unlock(&s->mu);
	if (queued)
		pending = 1;
	for (i = 0; i < d->info.num_queues; i++) {
		struct squeue *q = &d->q[i];

		if (!q->dq.ready || q->dq.vq.broken)
			continue;
		/* Out of tx room: the bridge thread wakes us when it drained; don't spin on the ring. */
		if (blocked)
			continue;
		if (vop_vq_enable_notify(&q->dq.vq) != 0)
			pending = 1;
	}
	return pending;
}

static struct vop_vq *sb_queue(void *dev, unsigned qi)
{
	struct sdev *d = dev;

	return qi < d->info.num_queues ? &d->q[qi].dq.vq : NULL;
}

/* ------------------------------------------------------------------ */
/* Bridge thread: socket I/O                                            */
/* ------------------------------------------------------------------ */

/*
 * The socket I/O of the bridge thread, plain or through the TLS session
 * (vop/stream_tls.h; many records per syscall). > 0 bytes, 0 (recv: the
 * peer closed), -EAGAIN, -errno (TLS: -EPROTO, vop_stls_error says why).
 */
static ssize_t io_send(struct vop_stream *s, const uint8_t *p, size_t n)
{
	ssize_t k;

	if (s->tls)
		return vop_stls_send(s->tls, p, n);
	k = send(s->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
	return k >= 0 ? k : (errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno);
}

static ssize_t io_recv(struct vop_stream *s, uint8_t *p, size_t n)
{
	ssize_t k;

	if (s->tls)
		return vop_stls_recv(s->tls, p, n);
	k = recv(s->fd, p, n, MSG_DONTWAIT);
	return k >= 0 ? k : (errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno);
}

/* Poll events the TLS session needs on top of the caller's (ciphertext waiting to go out). */
static short io_events(struct vop_stream *s)
{
	return s->tls ? vop_stls_events(s->tls) : 0;
}

/* A socket error as a reason: the TLS session's own when it has one. */
static const char *io_error(struct vop_stream *s, ssize_t k)
{
	if (s->tls && k == -EPROTO && vop_stls_error(s->tls)[0])
		return vop_stls_error(s->tls);
	return strerror((int)-k);
}

/*
 * What to send next, as iovecs (s->mu held): the tx buffer's bytes from txhead with the
 * pending slot segments between them, in order. Returns the iovec count.
 */
static unsigned tx_iov(struct vop_stream *s, struct iovec *iov, unsigned max)
{
	size_t cur = s->txhead;
	unsigned i, n = 0;

	for (i = 0; i < s->nseg && n + 2 <= max; i++) {
		const struct txseg *g = &s->segs[(s->seg_head + i) % TXSEG_MAX];

		if (g->at > cur) {
			iov[n].iov_base = s->tx + cur;
			iov[n++].iov_len = g->at - cur;
			cur = g->at;
		}
		iov[n].iov_base = (void *)(uintptr_t)(g->p + g->sent);
		iov[n++].iov_len = g->len - g->sent;
	}
	if (i == s->nseg && s->txtail > cur && n < max) {
		iov[n].iov_base = s->tx + cur;
		iov[n++].iov_len = s->txtail - cur;
	}
	return n;
}

/* k bytes of what tx_iov described went out (s->mu held): advance, release sent slots. */
static void tx_advance(struct vop_stream *s, size_t k)
{
	while (k) {
		struct txseg *g = s->nseg ? &s->segs[s->seg_head] : NULL;
		size_t t;

		if (g && s->txhead == g->at) {
			t = g->len - g->sent < k ? g->len - g->sent : k;
			g->sent += (uint32_t)t;
			k -= t;
			if (g->sent == g->len) {
				struct squeue *q = g->d ? &g->d->q[g->queue] : NULL;

				if (q && q->rel && q->epoch == g->epoch) {
					q->rel[q->nrel++] = g->slot;
					atomic_store_explicit(&g->d->done_any, true, memory_order_release);
				}
				s->seg_head = (s->seg_head + 1) % TXSEG_MAX;
				s->nseg--;
			}
			continue;
		}
		t = (g ? g->at : s->txtail) - s->txhead;
		if (t > k)
			t = k;
		s->txhead += t;
		k -= t;
	}
	if (tx_idle(s)) {
		s->txhead = s->txtail = 0;
	} else if (s->txhead > s->txcap / 2) {
		unsigned i;

		memmove(s->tx, s->tx + s->txhead, s->txtail - s->txhead);
		for (i = 0; i < s->nseg; i++)
			s->segs[(s->seg_head + i) % TXSEG_MAX].at -= s->txhead;
		s->txtail -= s->txhead;
		s->txhead = 0;
	}
}

/* Send iovecs: one sendmsg on a plain socket; through the TLS session piece by piece. */
static ssize_t io_sendv(struct vop_stream *s, const struct iovec *iov, unsigned n)
{
	struct msghdr mh;
	ssize_t k, total = 0;
	unsigned i;

	if (!s->tls) {
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = (struct iovec *)(uintptr_t)iov;
		mh.msg_iovlen = n;
		k = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		return k >= 0 ? k : (errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno);
	}
	for (i = 0; i < n; i++) {
		k = vop_stls_send(s->tls, iov[i].iov_base, iov[i].iov_len);
		if (k < 0)
			return total ? total : k;
		total += k;
		if ((size_t)k < iov[i].iov_len)
			break;
	}
	return total;
}

/* Write the whole buffer before deadline (handshake). 0 or -errno. */
static int send_all(struct vop_stream *s, const uint8_t *p, size_t n, uint64_t deadline)
{
	while (n || io_events(s)) {
		ssize_t k = n ? io_send(s, p, n) : (s->tls ? vop_stls_flush(s->tls) : 0);

		if (k > 0) {
			p += k;
			n -= (size_t)k;
			pthread_mutex_lock(&s->mu);
			s->st.bytes_tx += (uint64_t)k;
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		if (k < 0 && k != -EAGAIN)
			return (int)k;
		{
			uint64_t t = now_ns();
			struct pollfd pf = { .fd = s->fd, .events = POLLOUT };

			if (t >= deadline)
				return -ETIMEDOUT;
			poll(&pf, 1, (int)((deadline - t) / 1000000u) + 1);
		}
	}
	return 0;
}

static int send_frame(struct vop_stream *s, uint8_t type, const uint8_t *p, uint32_t len,
		      uint64_t deadline)
{
	uint8_t h[VOP_SFRAME_HDR];
	int rc;

	vop_sframe_put_hdr(h, type, len);
	rc = send_all(s, h, sizeof(h), deadline);
	if (rc == 0 && len)
		rc = send_all(s, p, len, deadline);
	pthread_mutex_lock(&s->mu);
	s->st.frames_tx++;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/*
 * Read until one whole frame is at the start of rxbuf (handshake), checked
 * against lim. Returns 0 with *f, or -errno with *why.
 */
static int recv_frame(struct vop_stream *s, const struct vop_stream_limits *lim, uint64_t deadline,
		      struct vop_sframe *f, const char **why)
{
	for (;;) {
		if (s->rxlen >= VOP_SFRAME_HDR) {
			int rc = vop_sframe_header(s->rxbuf, lim, f, why);

			if (rc)
				return rc;
			if (s->rxlen >= VOP_SFRAME_HDR + f->len)
				return 0;
		}
		{
			ssize_t k = io_recv(s, s->rxbuf + s->rxlen, s->rxcap - s->rxlen);
			uint64_t t;
			struct pollfd pf = { .fd = s->fd, .events = (short)(POLLIN | io_events(s)) };

			if (k > 0) {
				s->rxlen += (size_t)k;
				pthread_mutex_lock(&s->mu);
				s->st.bytes_rx += (uint64_t)k;
				pthread_mutex_unlock(&s->mu);
				continue;
			}
			if (k == 0) {
				*why = "peer closed the connection during the handshake";
				return -ECONNRESET;
			}
			if (s->tls && k == -EPROTO) {
				*why = vop_stls_error(s->tls);
				return -EPROTO;
			}
			if (k != -EAGAIN) {
				*why = "socket error during the handshake";
				return (int)k;
			}
			if (s->tls && vop_stls_buffered(s->tls))
				continue;
			t = now_ns();
			if (t >= deadline) {
				*why = "handshake timed out";
				return -ETIMEDOUT;
			}
			poll(&pf, 1, (int)((deadline - t) / 1000000u) + 1);
		}
	}
}

static void consume(struct vop_stream *s, size_t n)
{
	memmove(s->rxbuf, s->rxbuf + n, s->rxlen - n);
	s->rxlen -= n;
	pthread_mutex_lock(&s->mu);
	s->st.frames_rx++;
	pthread_mutex_unlock(&s->mu);
}

/* The peer's ERROR payload as a printable reason. */
static void peer_reason(const uint8_t *p, uint32_t len, char *out, size_t n)
{
	uint32_t i, k = 0;

	for (i = 4; i < len && k + 1 < n; i++)
		out[k++] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
	out[k] = 0;
}

static void send_error(struct vop_stream *s, const char *reason)
{
	uint8_t m[4 + VOP_STREAM_REASON_MAX];
	size_t n = strlen(reason);

	if (n > VOP_STREAM_REASON_MAX)
		n = VOP_STREAM_REASON_MAX;
	vop_sput32(m, 1);
	memcpy(m + 4, reason, n);
	send_frame(s, VOP_SMSG_ERROR, m, (uint32_t)(4 + n), now_ns() + 200000000ull);
}

static void dev_info_of(struct vop_stream *s, struct sdev *d, struct vop_sdev_info *o)
{
	unsigned i;
	uint32_t cap = s->lim.max_frame - VOP_SMSG_BATCH_HDR - 4 - 4 * VOP_STREAM_MAX_SEGS;

	memset(o, 0, sizeof(*o));
	o->dev_id = d->dev_id;
	o->device_type = d->info.device_type;
	o->features = d->info.features_offered;
	o->num_queues = d->info.num_queues;
	/* The device's live config space (written by the backend when it opened), else as published. */
	o->config_len = (uint16_t)d->info.config_len;
	{
		uint32_t gen = 0;

		if (vop_devtab_config_read(s->w, &d->info, o->config, d->info.config_len, &gen) != 0 || gen < 2) {
			memcpy(o->config, d->info.config, d->info.config_len);
			gen = 0;
		}
		d->cfg_sent = gen; /* the peer has this generation: only a newer one is sent as CONFIG */
	}
	for (i = 0; i < o->num_queues; i++) {
		o->queue_size[i] = d->info.queues[i].size;
		o->max_chain[i] = d->q[i].slot_size < cap ? d->q[i].slot_size : cap;
		d->q[i].slot_size = o->max_chain[i];
	}
}

#define HS_FAIL(...)                                  \
	do {                                          \
		snprintf(reason, sizeof(reason), __VA_ARGS__); \
		goto fail;                            \
	} while (0)

static int handshake(struct vop_stream *s)
{
	uint64_t deadline = now_ns() + (uint64_t)s->cfg.handshake_ms * 1000000ull;
	struct vop_stream_limits hl = { VOP_STREAM_MAX_FRAME, VOP_STREAM_MAX_SEGS };
	struct vop_shello me, peer;
	struct vop_sframe f;
	uint8_t buf[VOP_SMSG_DEV_INFO_MAX], mac[VOP_STREAM_MAC];
	char reason[VOP_STREAM_REASON_MAX + 1];
	const char *why = NULL;
	unsigned i, seen = 0;
	int rc;

	memset(&me, 0, sizeof(me));
	me.version_major = VOP_STREAM_VERSION_MAJOR;
	me.version_minor = VOP_STREAM_VERSION_MINOR;
	me.side = s->side;
	me.auth = s->cfg.secret_len ? 1 : 0;
	me.max_frame = s->cfg.max_frame;
	me.max_segs = VOP_STREAM_MAX_SEGS;
	if (getrandom(me.nonce, sizeof(me.nonce), 0) != (ssize_t)sizeof(me.nonce))
		HS_FAIL("no randomness for the nonce");
	vop_shello_encode(buf, &me);
	if ((rc = send_frame(s, VOP_SMSG_HELLO, buf, VOP_SMSG_HELLO_LEN, deadline)))
		HS_FAIL("sending hello: %s", io_error(s, rc));
	/* Before HELLO nothing is negotiated: only a HELLO-sized frame is read. */
	hl.max_frame = VOP_SMSG_HELLO_LEN > 4 + VOP_STREAM_REASON_MAX ? VOP_SMSG_HELLO_LEN
								       : 4 + VOP_STREAM_REASON_MAX;
	if ((rc = recv_frame(s, &hl, deadline, &f, &why)))
		HS_FAIL("hello: %s", why);
	if (f.type == VOP_SMSG_ERROR) {
		char pr[VOP_STREAM_REASON_MAX - 16];

		peer_reason(s->rxbuf + VOP_SFRAME_HDR, f.len, pr, sizeof(pr));
		HS_FAIL("peer: %s", pr);
	}
	if (f.type != VOP_SMSG_HELLO)
		HS_FAIL("expected hello, got %s", vop_smsg_name(f.type));
	if (vop_shello_parse(s->rxbuf + VOP_SFRAME_HDR, f.len, &peer, &why))
		HS_FAIL("hello: %s", why);
	consume(s, VOP_SFRAME_HDR + f.len);
	s->peer_minor = peer.version_minor;
	pthread_mutex_lock(&s->mu);
	s->st.peer_minor = peer.version_minor;
	pthread_mutex_unlock(&s->mu);
	if (peer.side == me.side)
		HS_FAIL("both ends are the %s side", me.side ? "device" : "driver");
	if (me.auth && !peer.auth)
		HS_FAIL("peer offers no authentication and a secret is configured");
	if (!me.auth && peer.auth)
		HS_FAIL("peer requires authentication and no secret is configured");
	s->lim.max_frame = me.max_frame < peer.max_frame ? me.max_frame : peer.max_frame;
	s->lim.max_segs = peer.max_segs < me.max_segs ? peer.max_segs : me.max_segs;
	if (me.auth) {
		if (vop_stream_mac(s->secret, s->cfg.secret_len, me.side, me.nonce, peer.nonce, mac))
			HS_FAIL("hmac failed");
		if ((rc = send_frame(s, VOP_SMSG_AUTH, mac, sizeof(mac), deadline)))
			HS_FAIL("sending auth: %s", io_error(s, rc));
		if ((rc = recv_frame(s, &s->lim, deadline, &f, &why)))
			HS_FAIL("auth: %s", why);
		if (f.type == VOP_SMSG_ERROR) {
			char pr[VOP_STREAM_REASON_MAX - 16];

			peer_reason(s->rxbuf + VOP_SFRAME_HDR, f.len, pr, sizeof(pr));
			HS_FAIL("peer: %s", pr);
		}
		if (f.type != VOP_SMSG_AUTH)
			HS_FAIL("expected auth, got %s", vop_smsg_name(f.type));
		if (vop_stream_mac(s->secret, s->cfg.secret_len, peer.side, peer.nonce, me.nonce, mac))
			HS_FAIL("hmac failed");
		if (CRYPTO_memcmp(mac, s->rxbuf + VOP_SFRAME_HDR, VOP_STREAM_MAC) != 0) {
			consume(s, VOP_SFRAME_HDR + f.len);
			HS_FAIL("authentication failed: the peer does not know the link secret");
		}
		consume(s, VOP_SFRAME_HDR + f.len);
	}
	if (s->side == 1) {
		struct vop_sdev_info di;

		for (i = 0; i < s->ndevs; i++) {
			uint32_t n;

			dev_info_of(s, s->devs[i], &di);
			n = vop_sdev_info_encode(buf, &di);
			if ((rc = send_frame(s, VOP_SMSG_DEV_INFO, buf, n, deadline)))
				HS_FAIL("sending dev_info: %s", io_error(s, rc));
		}
		vop_sput32(buf, s->ndevs);
		if ((rc = send_frame(s, VOP_SMSG_READY, buf, 4, deadline)))
			HS_FAIL("sending ready: %s", io_error(s, rc));
	}
	/* Driver side: the device table, then READY. Device side: the driver's READY. */
	for (;;) {
		struct vop_sdev_info di;
		struct sdev *d;

		if ((rc = recv_frame(s, &s->lim, deadline, &f, &why)))
			HS_FAIL("device table: %s", why);
		if (f.type == VOP_SMSG_ERROR) {
			char pr[VOP_STREAM_REASON_MAX - 16];

			peer_reason(s->rxbuf + VOP_SFRAME_HDR, f.len, pr, sizeof(pr));
			HS_FAIL("peer: %s", pr);
		}
		if (f.type == VOP_SMSG_READY) {
			uint32_t cnt = vop_sget32(s->rxbuf + VOP_SFRAME_HDR);

			consume(s, VOP_SFRAME_HDR + f.len);
			if (cnt != s->ndevs || (s->side == 0 && seen != s->ndevs))
				HS_FAIL("device table mismatch: peer has %u devices, we have %u", cnt,
					s->ndevs);
			break;
		}
		if (f.type != VOP_SMSG_DEV_INFO || s->side != 0)
			HS_FAIL("unexpected %s during the handshake", vop_smsg_name(f.type));
		if (vop_sdev_info_parse(s->rxbuf + VOP_SFRAME_HDR, f.len, &s->lim, &di, &why))
			HS_FAIL("dev_info: %s", why);
		consume(s, VOP_SFRAME_HDR + f.len);
		d = find_dev(s, di.dev_id);
		if (!d)
			HS_FAIL("device table mismatch: peer has dev %u, we do not", di.dev_id);
		if (d->info_seen)
			HS_FAIL("dev_info for dev %u twice", di.dev_id);
		if (di.device_type != d->info.device_type || di.num_queues != d->info.num_queues)
			HS_FAIL("device table mismatch: dev %u type/queues differ", di.dev_id);
		for (i = 0; i < di.num_queues; i++) {
			if (di.queue_size[i] != d->info.queues[i].size)
				HS_FAIL("device table mismatch: dev %u queue %u size %u != %u", di.dev_id,
					i, di.queue_size[i], d->info.queues[i].size);
			d->q[i].max_chain = di.max_chain[i];
		}
		/*
		 * The device's config space, into our window's device block (the proxy is the device
		 * side there): the real driver reads it when it starts, after the reset that follows READY.
		 */
		if (di.config_len)
			vop_devtab_config_write(s->w, &d->info, 0, di.config,
						di.config_len < d->info.config_len ? di.config_len : d->info.config_len);
		d->cfg_len = di.config_len; /* the size never changes: every CONFIG must carry exactly this */
		d->cfg_applied = 0;
		d->info_seen = true;
		seen++;
	}
	if (s->side == 0) {
		vop_sput32(buf, s->ndevs);
		if ((rc = send_frame(s, VOP_SMSG_READY, buf, 4, deadline)))
			HS_FAIL("sending ready: %s", io_error(s, rc));
	}
	return 0;
fail:
	if (s->tls && vop_stls_error(s->tls)[0]) {
		/* TLS broke (the peer refused our certificate): that is the cause, whatever we were doing */
		snprintf(reason, sizeof(reason), "%s", vop_stls_error(s->tls));
		sfail(s, "%s", reason);
		return -EPROTO;
	}
	if (strncmp(reason, "peer: ", 6) != 0)
		send_error(s, reason);
	sfail(s, "%s", reason);
	return -EPROTO;
}

/* Queue a data frame to its device (bridge thread). */
static void enqueue(struct vop_stream *s, struct sdev *d, uint8_t type, const uint8_t *p, uint32_t len)
{
	struct rxmsg *m = malloc(sizeof(*m) + len);

	if (!m) {
		sfail(s, "out of memory queueing a frame");
		return;
	}
	m->next = NULL;
	m->type = type;
	m->len = len;
	memcpy(m->data, p, len);
	pthread_mutex_lock(&s->mu);
	if (d->rx_tail)
		d->rx_tail->next = m;
	else
		d->rx_head = m;
	d->rx_tail = m;
	atomic_store_explicit(&d->rx_any, true, memory_order_release);
	s->rx_queued += len + RXMSG_OVERHEAD;
	if (s->rx_queued >= 4u * (size_t)s->lim.max_frame)
		s->throttled = true;
	pthread_mutex_unlock(&s->mu);
	vop_window_wake(s->w);
}

/* One checked frame of the data phase (bridge thread). */
static void dispatch(struct vop_stream *s, const struct vop_sframe *f, const uint8_t *p)
{
	struct vop_sbatch b;
	struct sdev *d;
	const char *why = NULL;

	switch (f->type) {
	case VOP_SMSG_PING:
	case VOP_SMSG_PONG:
		/* an honest peer pinging every second sends two a second; a flood costs us CPU */
		if (now_ns() - s->ctrl_window_ns >= 1000000000ull) {
			s->ctrl_window_ns = now_ns();
			s->ctrl_frames = 0;
		}
		if (++s->ctrl_frames > STREAM_MAX_CTRL_PER_SEC) {
			sfail(s, "control flood: more than %u PING/PONG frames in a second", STREAM_MAX_CTRL_PER_SEC);
			return;
		}
		break;
	default:
		break;
	}
	switch (f->type) {
	case VOP_SMSG_PING: {
		if (!tx_ctrl(s, VOP_SMSG_PONG, p, 8))
			sfail(s, "peer does not read: control backlog full");
		return;
	}
	case VOP_SMSG_PONG: {
		uint64_t t = vop_sget64(p), n = now_ns();

		/* only the echo of our last PING: a peer cannot make up the RTT status shows */
		if (t == s->ping_token && t <= n && n - t < 60000000000ull) {
			s->ping_token = 0;
			pthread_mutex_lock(&s->mu);
			s->st.rtt_ns = n - t;
			pthread_mutex_unlock(&s->mu);
		}
		return;
	}
	case VOP_SMSG_ERROR: {
		char pr[VOP_STREAM_REASON_MAX - 16];

		peer_reason(p, f->len, pr, sizeof(pr));
		sfail(s, "peer: %s", pr);
		return;
	}
	case VOP_SMSG_DEV_START:
	case VOP_SMSG_DEV_RESET: {
		uint32_t id = vop_sget32(p), gen = vop_sget32(p + 4);

		if (s->side != 1) {
			sfail(s, "%s sent to the driver side", vop_smsg_name(f->type));
			return;
		}
		d = find_dev(s, id);
		if (!d) {
			sfail(s, "%s for unknown dev %u", vop_smsg_name(f->type), id);
			return;
		}
		if (f->type == VOP_SMSG_DEV_START) {
			uint64_t feat = vop_sget64(p + 8);
			int rc;

			if (gen <= d->rgen) {
				sfail(s, "dev_start generation %u did not advance past %u (dev %u)", gen,
				      d->rgen, id);
				return;
			}
			if (feat & ~d->info.features_offered) {
				sfail(s, "dev_start features 0x%llx not offered (dev %u)",
				      (unsigned long long)feat, id);
				return;
			}
			if (d->attached)
				vop_link_detach(s->proxy, id);
			d->attached = false;
			flush_rx(s, d);
			d->rgen = gen;
			d->ops.driver_features = (feat & ~(RING_BITS | INFLIGHT_BIT)) |
						 (d->info.features_offered & RING_BITS);
			rc = vop_link_attach_backend(s->proxy, id, VOP_ROLE_DRIVER, &d->ops, d);
			if (rc) {
				sfail(s, "attaching the proxy driver of dev %u: %s", id, strerror(-rc));
				return;
			}
			d->attached = true;
		} else {
			if (gen != d->rgen) {
				sfail(s, "dev_reset generation %u is not the current %u (dev %u)", gen,
				      d->rgen, id);
				return;
			}
			if (d->attached)
				vop_link_detach(s->proxy, id);
			d->attached = false;
			flush_rx(s, d);
		}
		return;
	}
	case VOP_SMSG_CONFIG: {
		struct vop_sconfig c;
		uint64_t t = now_ns();

		if (s->side != 0) {
			sfail(s, "config sent to the device side");
			return;
		}
		if (vop_sconfig_parse(p, f->len, &c, &why)) {
			sfail(s, "config: %s", why);
			return;
		}
		d = find_dev(s, c.dev_id);
		if (!d) {
			sfail(s, "config for unknown dev %u", c.dev_id);
			return;
		}
		/* an honest device side sends at most one per CONFIG_GAP_NS: 10 a second, so 64 leaves room for a burst */
		if (t - d->cfg_window_ns >= 1000000000ull) {
			d->cfg_window_ns = t;
			d->cfg_frames = 0;
		}
		if (++d->cfg_frames > STREAM_MAX_CONFIG_PER_SEC) {
			sfail(s, "config flood: more than %u CONFIG frames in a second (dev %u)",
			      STREAM_MAX_CONFIG_PER_SEC, c.dev_id);
			return;
		}
		if (c.config_len != d->cfg_len) {
			sfail(s, "config of %u bytes for dev %u, whose config space is %u bytes (dev_info)",
			      c.config_len, c.dev_id, d->cfg_len);
			return;
		}
		if (c.generation <= d->cfg_applied) {
			sfail(s, "config generation %u did not advance past %u (dev %u)", c.generation,
			      d->cfg_applied, c.dev_id);
			return;
		}
		d->cfg_applied = c.generation;
		/* Our window's device block, as the handshake wrote it: our generation advances. */
		if (c.config_len)
			vop_devtab_config_write(s->w, &d->info, 0, c.config,
						c.config_len < d->info.config_len ? c.config_len : d->info.config_len);
		pthread_mutex_lock(&s->mu);
		s->st.config_rx++;
		pthread_mutex_unlock(&s->mu);
		return;
	}
	case VOP_SMSG_CHAINS:
	case VOP_SMSG_USED:
		if (vop_sbatch_parse(f->type, p, f->len, &s->lim, &b, &why)) {
			sfail(s, "%s: %s", vop_smsg_name(f->type), why);
			return;
		}
		if ((f->type == VOP_SMSG_CHAINS) != (s->side == 1)) {
			sfail(s, "%s sent to the %s side", vop_smsg_name(f->type),
			      s->side ? "device" : "driver");
			return;
		}
		d = find_dev(s, b.dev_id);
		if (!d) {
			sfail(s, "%s for unknown dev %u", vop_smsg_name(f->type), b.dev_id);
			return;
		}
		if (b.queue >= d->info.num_queues) {
			sfail(s, "%s for queue %u of dev %u (it has %u)", vop_smsg_name(f->type), b.queue,
			      b.dev_id, d->info.num_queues);
			return;
		}
		if (f->type == VOP_SMSG_CHAINS && (!d->attached || b.gen != d->rgen)) {
			sfail(s, "chains for dev %u generation %u, which is not started", b.dev_id, b.gen);
			return;
		}
		enqueue(s, d, f->type, p, f->len);
		return;
	default:
		sfail(s, "%s after the handshake", vop_smsg_name(f->type));
		return;
	}
}

/* ------------------------------------------------------------------ */
/* Driver side: USED frames straight into the chains' buffers           */
/* ------------------------------------------------------------------ */

/*
 * The chain the current used entry fills, or NULL (sink: its bytes are dropped) when the
 * device stopped or restarted since the entry was checked. Caller holds fmu: while it does,
 * no stop can run, so every write into the chain happens while the chain is outstanding.
 */
static struct vop_chain *ur_chain(struct vop_stream *s)
{
	struct sdev *d = s->ur.d;
	struct squeue *q = &d->q[s->ur.queue];
	struct vop_chain *c = NULL;

	if (s->ur.sink)
		return NULL;
	pthread_mutex_lock(&s->mu);
	if (d->started && d->gen == s->ur.gen && q->out && s->ur.id < q->num &&
	    q->out[s->ur.id] == OUT_FILLING)
		c = &q->chains[s->ur.id];
	pthread_mutex_unlock(&s->mu);
	if (!c)
		s->ur.sink = true;
	return c;
}

/* An entry header: the same checks as a whole USED frame had (docs/stream-protocol.md). */
static void ur_begin(struct vop_stream *s, uint16_t id, uint32_t len)
{
	struct sdev *d = s->ur.d;
	struct squeue *q = &d->q[s->ur.queue];
	char why[VOP_STREAM_REASON_MAX + 1];

	why[0] = 0;
	s->ur.id = id;
	s->ur.len = len;
	s->ur.done = 0;
	s->ur.in_entry = true;
	s->ur.sink = false;
	pthread_mutex_lock(&s->fmu);
	pthread_mutex_lock(&s->mu);
	if (s->ur.gen > d->gen) {
		/* we never started that generation: no honest device can have served it */
		snprintf(why, sizeof(why), "used for generation %u, newer than the %u we started (dev %u)",
			 s->ur.gen, d->gen, d->dev_id);
	} else if (!d->started || s->ur.gen != d->gen) {
		/* the device answered before it saw our reset: dropped and counted */
		s->st.stale_used++;
		s->ur.sink = true;
	} else if (q->out && id >= q->num) {
		snprintf(why, sizeof(why), "used id %u >= queue size %u (dev %u queue %u)", id, q->num,
			 d->dev_id, s->ur.queue);
	} else if (!q->out || q->out[id] != OUT_SENT) {
		snprintf(why, sizeof(why), "used id %u is not outstanding (dev %u queue %u)", id,
			 d->dev_id, s->ur.queue);
	} else if (len > q->chains[id].in_bytes) {
		snprintf(why, sizeof(why),
			 "used len %u exceeds the %u writable bytes of id %u (dev %u queue %u)", len,
			 q->chains[id].in_bytes, id, d->dev_id, s->ur.queue);
	} else {
		q->out[id] = OUT_FILLING;
	}
	pthread_mutex_unlock(&s->mu);
	pthread_mutex_unlock(&s->fmu);
	if (why[0])
		sfail(s, "%s", why);
}

/* The entry is whole: hand it to the worker, which pushes it. */
static void ur_finish(struct vop_stream *s)
{
	struct sdev *d = s->ur.d;
	struct squeue *q = &d->q[s->ur.queue];

	if (!s->ur.sink) {
		pthread_mutex_lock(&s->fmu);
		if (ur_chain(s)) {
			pthread_mutex_lock(&s->mu);
			q->out[s->ur.id] = OUT_DONE;
			q->done_id[q->ndone] = s->ur.id;
			q->done_len[q->ndone] = s->ur.len;
			q->ndone++;
			atomic_store_explicit(&d->done_any, true, memory_order_release);
			pthread_mutex_unlock(&s->mu);
			s->ur_wake = true;
		}
		pthread_mutex_unlock(&s->fmu);
	}
	s->ur.in_entry = false;
	s->ur_big = s->ur.len >= UR_DIRECT;
	if (--s->ur.left == 0) {
		if (s->ur.frame_left)
			sfail(s, "USED: bytes after the last used entry");
		s->ur.active = false;
	}
}

/* Copy n payload bytes that arrived in rxbuf into the entry's writable segments. */
static void ur_copy(struct vop_stream *s, const uint8_t *p, uint32_t n)
{
	struct vop_chain *c;

	pthread_mutex_lock(&s->fmu);
	c = ur_chain(s);
	if (c) {
		uint32_t i, off = s->ur.done, left = n;

		for (i = c->n_out; i < (uint32_t)c->n_out + c->n_in && left; i++) {
			uint32_t l = c->iov[i].len, k;

			if (off >= l) {
				off -= l;
				continue;
			}
			k = l - off < left ? l - off : left;
			vop_win_copy_to((uint8_t *)c->iov[i].base + off, p, k);
			p += k;
			left -= k;
			off = 0;
		}
	}
	pthread_mutex_unlock(&s->fmu);
	s->ur.done += n;
	s->ur.frame_left -= n;
}

/* A USED frame starts (its 12-byte batch header is at p): the checks dispatch makes. */
static void ur_start(struct vop_stream *s, const struct vop_sframe *f, const uint8_t *p)
{
	uint32_t dev_id = vop_sget32(p), gen = vop_sget32(p + 4);
	uint16_t queue = vop_sget16(p + 8), count = vop_sget16(p + 10);
	struct sdev *d;

	if (count == 0) {
		sfail(s, "USED: batch of zero entries");
		return;
	}
	if (queue >= VOP_MAX_QUEUES) {
		sfail(s, "USED: batch queue index >= 8");
		return;
	}
	d = find_dev(s, dev_id);
	if (!d) {
		sfail(s, "USED for unknown dev %u", dev_id);
		return;
	}
	if (queue >= d->info.num_queues) {
		sfail(s, "USED for queue %u of dev %u (it has %u)", queue, dev_id, d->info.num_queues);
		return;
	}
	s->ur.active = true;
	s->ur.in_entry = false;
	s->ur.d = d;
	s->ur.queue = queue;
	s->ur.gen = gen;
	s->ur.left = count;
	s->ur.frame_left = f->len - VOP_SMSG_BATCH_HDR;
}

/* Consume what rxbuf holds of the current USED frame; returns the bytes used (0: need more). */
static size_t ur_step(struct vop_stream *s, const uint8_t *p, size_t have)
{
	if (!s->ur.in_entry) {
		uint16_t id;
		uint32_t len;

		if (s->ur.frame_left < 8) {
			sfail(s, "USED: used entry header beyond the frame");
			return 0;
		}
		if (have < 8)
			return 0;
		id = vop_sget16(p);
		len = vop_sget32(p + 4);
		if (vop_sget16(p + 2) != 0) {
			sfail(s, "USED: used entry reserved not zero");
			return 0;
		}
		if (len > s->ur.frame_left - 8) {
			sfail(s, "USED: used bytes beyond the frame");
			return 0;
		}
		s->ur.frame_left -= 8;
		ur_begin(s, id, len);
		if (!failed(s) && len == 0)
			ur_finish(s);
		return 8;
	}
	{
		uint32_t k = s->ur.len - s->ur.done;

		if (k > have)
			k = (uint32_t)have;
		if (k == 0)
			return 0;
		ur_copy(s, p, k);
		if (s->ur.done == s->ur.len)
			ur_finish(s);
		return k;
	}
}

/* Whether the next read should go straight into the current entry's buffers (plain sockets). */
static bool ur_direct(struct vop_stream *s)
{
	return !s->tls && s->ur.active && s->ur.in_entry && s->rxlen == 0 &&
	       s->ur.len - s->ur.done >= UR_DIRECT;
}

/*
 * readv the rest of the current entry's payload into its writable segments (the scratch
 * buffer when it is dropped), and at most UR_TAIL bytes after it into rxbuf (the next
 * headers). The iovecs are the chain's own, as popped and checked by the ring code; fmu is
 * held across the call so a stop cannot free the chain meanwhile.
 */
static ssize_t ur_readv(struct vop_stream *s)
{
	struct iovec iov[VOP_STREAM_MAX_SEGS + 1];
	uint32_t want = s->ur.len - s->ur.done, got;
	struct vop_chain *c;
	ssize_t k;
	int n = 0;

	pthread_mutex_lock(&s->fmu);
	c = ur_chain(s);
	if (c) {
		uint32_t i, off = s->ur.done, left = want;

		for (i = c->n_out; i < (uint32_t)c->n_out + c->n_in && left && n < (int)VOP_STREAM_MAX_SEGS; i++) {
			uint32_t l = c->iov[i].len;

			if (off >= l) {
				off -= l;
				continue;
			}
			iov[n].iov_base = (uint8_t *)c->iov[i].base + off;
			iov[n].iov_len = l - off < left ? l - off : left;
			left -= (uint32_t)iov[n].iov_len;
			off = 0;
			n++;
		}
		want -= left;
	} else {
		if (want > SCRATCH_LEN)
			want = SCRATCH_LEN;
		iov[n].iov_base = s->scratch;
		iov[n].iov_len = want;
		n++;
	}
	iov[n].iov_base = s->rxbuf + s->rxlen;
	iov[n].iov_len = s->rxcap - s->rxlen < UR_TAIL ? s->rxcap - s->rxlen : UR_TAIL;
	n++;
	k = readv(s->fd, iov, n);
	pthread_mutex_unlock(&s->fmu);
	if (k < 0)
		return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
	got = (size_t)k < want ? (uint32_t)k : want;
	s->ur.done += got;
	s->ur.frame_left -= got;
	s->rxlen += (size_t)k - got;
	if (got && s->ur.done == s->ur.len)
		ur_finish(s);
	return k;
}

/* Every whole frame in the rx buffer (driver side: USED frames as they come, see ur_step). */
static void process_rx(struct vop_stream *s)
{
	size_t off = 0;

	while (!failed(s)) {
		struct vop_sframe f;
		const char *why = NULL;
		size_t have = s->rxlen - off;

		if (s->ur.active) {
			size_t k = ur_step(s, s->rxbuf + off, have);

			if (!k)
				break;
			off += k;
			continue;
		}
		if (have < VOP_SFRAME_HDR)
			break;
		if (vop_sframe_header(s->rxbuf + off, &s->lim, &f, &why)) {
			sfail(s, "frame %s: %s", vop_smsg_name(s->rxbuf[off + 4]), why);
			break;
		}
		if (f.type == VOP_SMSG_USED && s->side == 0) {
			if (have < VOP_SFRAME_HDR + VOP_SMSG_BATCH_HDR)
				break;
			ur_start(s, &f, s->rxbuf + off + VOP_SFRAME_HDR);
			off += VOP_SFRAME_HDR + VOP_SMSG_BATCH_HDR;
		} else {
			if (have < VOP_SFRAME_HDR + f.len)
				break;
			dispatch(s, &f, s->rxbuf + off + VOP_SFRAME_HDR);
			off += VOP_SFRAME_HDR + f.len;
		}
		pthread_mutex_lock(&s->mu);
		s->st.frames_rx++;
		pthread_mutex_unlock(&s->mu);
	}
	memmove(s->rxbuf, s->rxbuf + off, s->rxlen - off);
	s->rxlen -= off;
	if (s->ur_wake) {
		s->ur_wake = false;
		vop_window_wake(s->w);
	}
}

/* Bytes from the peer wait unread: in our socket, or decrypted in the TLS session. */
static bool rx_waiting(struct vop_stream *s)
{
	int n = 0;

	if (s->tls && vop_stls_buffered(s->tls))
		return true;
	return ioctl(s->fd, FIONREAD, &n) == 0 && n > 0;
}

static void relay(struct vop_stream *s)
{
	s->last_rx_ns = now_ns();
	s->next_ping_ns = s->last_rx_ns;
	process_rx(s); /* what arrived with the end of the handshake */
	while (!failed(s)) {
		struct pollfd pf[2];
		struct iovec iov[TX_IOV];
		unsigned niov, i;
		size_t want;
		bool throttled, stop;
		uint64_t t = now_ns();
		int timeout;

		if (t >= s->next_ping_ns) {
			uint8_t m[8];

			vop_sput64(m, t);
			if (!tx_ctrl(s, VOP_SMSG_PING, m, 8)) {
				sfail(s, "peer does not read: control backlog full");
				break;
			}
			s->ping_token = t;
			s->next_ping_ns = t + (uint64_t)s->cfg.ping_ms * 1000000ull;
		}
		pthread_mutex_lock(&s->mu);
		niov = tx_iov(s, iov, TX_IOV);
		for (i = 0, want = 0; i < niov; i++)
			want += iov[i].iov_len;
		throttled = s->throttled;
		stop = s->stop;
		pthread_mutex_unlock(&s->mu);
		if (stop)
			break;
		/*
		 * Silence is only the peer's while we read: throttled with its bytes waiting in our
		 * socket (TCP backpressure), the clock restarts. Throttled with nothing waiting, the
		 * peer is as silent as ever (a dead path must still end the link).
		 */
		if (throttled && rx_waiting(s)) {
			s->last_rx_ns = t;
		} else if (t - s->last_rx_ns > (uint64_t)s->cfg.idle_ms * 1000000ull) {
			sfail(s, "peer silent for %u ms", s->cfg.idle_ms);
			break;
		}
		if (niov) {
			ssize_t k = io_sendv(s, iov, niov);

			if (k < 0 && k != -EAGAIN) {
				sfail(s, "send: %s", io_error(s, k));
				break;
			}
			if (k > 0) {
				bool wake = false;

				pthread_mutex_lock(&s->mu);
				tx_advance(s, (size_t)k);
				s->st.bytes_tx += (uint64_t)k;
				if (s->tx_blocked && s->txtail < s->txcap / 2) {
					s->tx_blocked = false;
					wake = true;
				}
				pthread_mutex_unlock(&s->mu);
				if (wake)
					vop_window_wake(s->w);
				if ((size_t)k == want)
					continue;
			}
		}
		if (s->tls && !niov && io_events(s)) {
			int f = vop_stls_flush(s->tls); /* records of an earlier send still queued */

			if (f && f != -EAGAIN) {
				sfail(s, "send: %s", strerror(-f));
				break;
			}
		}
		pf[0].fd = s->fd;
		pf[0].events = (short)((throttled ? 0 : POLLIN) | (niov ? POLLOUT : 0) | io_events(s));
		pf[1].fd = s->efd;
		pf[1].events = POLLIN;
		t = now_ns();
		timeout = s->next_ping_ns > t ? (int)((s->next_ping_ns - t) / 1000000u) + 1 : 0;
		if (!throttled && s->tls && vop_stls_buffered(s->tls))
			timeout = 0; /* decrypted bytes wait in the session: no poll would wake us */
		if (poll(pf, 2, timeout) < 0 && errno != EINTR) {
			sfail(s, "poll: %s", strerror(errno));
			break;
		}
		if (pf[1].revents & POLLIN) {
			uint64_t v;

			if (read(s->efd, &v, sizeof(v)) < 0) {
				/* nothing pending */
			}
		}
		if (!throttled && ((pf[0].revents & (POLLIN | POLLHUP | POLLERR)) ||
				   (s->tls && vop_stls_buffered(s->tls)))) {
			bool direct = ur_direct(s);
			size_t cap = s->rxcap - s->rxlen;
			ssize_t k;

			/* After a large used entry the next is likely large too: its headers first, alone. */
			if (!s->tls && s->ur_big && cap > 4 * UR_TAIL)
				cap = 4 * UR_TAIL;
			k = direct ? ur_readv(s) : io_recv(s, s->rxbuf + s->rxlen, cap);

			if (k == 0) {
				sfail(s, "peer closed the connection");
				break;
			}
			if (k < 0) {
				if (k != -EAGAIN) {
					sfail(s, "recv: %s", io_error(s, k));
					break;
				}
				continue;
			}
			if (!direct)
				s->rxlen += (size_t)k; /* ur_readv placed its bytes itself */
			s->last_rx_ns = now_ns();
			pthread_mutex_lock(&s->mu);
			s->st.bytes_rx += (uint64_t)k;
			pthread_mutex_unlock(&s->mu);
			process_rx(s);
		}
	}
}

static void *bridge_main(void *arg)
{
	struct vop_stream *s = arg;

	if (handshake(s) != 0) {
		shutdown(s->fd, SHUT_RDWR);
		return NULL; /* the handshake told the peer why */
	}
	atomic_store_explicit(&s->state, VOP_STREAM_READY, memory_order_release);
	vop_window_wake(s->w);
	relay(s);
	if (failed(s)) {
		char reason[VOP_STREAM_REASON_MAX + 1];

		pthread_mutex_lock(&s->mu);
		memcpy(reason, s->st.reason, sizeof(reason));
		pthread_mutex_unlock(&s->mu);
		if (strncmp(reason, "peer", 4) != 0 && atomic_load_explicit(&s->state, memory_order_acquire) == VOP_STREAM_FAILED)
			send_error(s, reason);
	}
	shutdown(s->fd, SHUT_RDWR);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* API                                                                  */
/* ------------------------------------------------------------------ */

uint64_t vop_stream_pool_size(uint16_t qsize, uint32_t max_chain)
{
	return (uint64_t)qsize * ((max_chain + 63ull) / 64 * 64);
}

int vop_stream_create(struct vop_link *proxy, const struct vop_stream_config *cfg,
		      struct vop_stream **out)
{
	struct vop_stream *s;
	int fl;

	*out = NULL;
	if (!proxy || cfg->fd < 0 || cfg->secret_len > VOP_STREAM_MAX_SECRET ||
	    (cfg->secret_len == 0 && !cfg->allow_plain && !cfg->tls) || (cfg->secret_len && !cfg->secret) ||
	    (cfg->max_frame && (cfg->max_frame < VOP_STREAM_MIN_FRAME ||
				cfg->max_frame > VOP_STREAM_MAX_FRAME))) {
		vop_stls_free(cfg->tls);
		if (cfg->fd >= 0)
			close(cfg->fd);
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		vop_stls_free(cfg->tls);
		close(cfg->fd);
		return -ENOMEM;
	}
	s->cfg = *cfg;
	s->cfg.secret = NULL;
	if (cfg->secret_len)
		memcpy(s->secret, cfg->secret, cfg->secret_len);
	if (!s->cfg.max_frame)
		s->cfg.max_frame = VOP_STREAM_DEF_FRAME;
	if (!s->cfg.handshake_ms)
		s->cfg.handshake_ms = 5000;
	if (!s->cfg.idle_ms)
		s->cfg.idle_ms = 15000;
	if (!s->cfg.ping_ms)
		s->cfg.ping_ms = 1000;
	if (!s->cfg.max_chain)
		s->cfg.max_chain = 65536 + 4096;
	s->proxy = proxy;
	s->w = vop_link_window(proxy);
	s->side = cfg->device_side ? 1 : 0;
	s->fd = cfg->fd;
	s->tls = cfg->tls;
	s->cfg.tls = NULL;
	s->lim.max_frame = s->cfg.max_frame;
	s->lim.max_segs = VOP_STREAM_MAX_SEGS;
	atomic_store_explicit(&s->state, VOP_STREAM_HANDSHAKE, memory_order_release);
	s->st.state = VOP_STREAM_HANDSHAKE;
	pthread_mutex_init(&s->mu, NULL);
	pthread_mutex_init(&s->fmu, NULL);
	s->scratch = malloc(SCRATCH_LEN);
	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	s->rxcap = VOP_SFRAME_HDR + (size_t)s->cfg.max_frame;
	s->rxbuf = malloc(s->rxcap);
	s->txcap = 4u * (size_t)s->cfg.max_frame + CTRL_RESERVE;
	s->tx = malloc(s->txcap);
	s->segs = calloc(TXSEG_MAX, sizeof(*s->segs));
	fl = fcntl(s->fd, F_GETFL);
	if (s->efd < 0 || !s->rxbuf || !s->tx || !s->scratch || !s->segs || fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		vop_stream_destroy(s);
		return -ENOMEM;
	}
	*out = s;
	return 0;
}

int vop_stream_add(struct vop_stream *s, uint32_t dev_id)
{
	struct sdev *d;
	unsigned i;
	int rc;

	if (s->thr_started)
		return -EINVAL;
	if (s->ndevs >= MAX_DEVS)
		return -ENOSPC;
	if (find_dev(s, dev_id))
		return -EEXIST;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->s = s;
	d->dev_id = dev_id;
	rc = vop_devtab_find_bounded(s->w, dev_id, &d->info);
	if (rc) {
		free(d);
		return rc;
	}
	/* The bridge takes the role the real backends do not have on this window. */
	if ((d->info.device_side == s->w->side) != (s->side == 0)) {
		free(d);
		return -EINVAL;
	}
	for (i = 0; i < d->info.num_queues; i++) {
		uint64_t slot = d->info.queues[i].pool_size / d->info.queues[i].size / 64 * 64;

		if (slot > s->cfg.max_chain)
			slot = s->cfg.max_chain;
		if (s->side == 1 && slot < 64) {
			free(d);
			return -EINVAL;
		}
		d->q[i].slot_size = (uint32_t)slot;
	}
	d->ops = (struct vop_devback_ops){
		.name = s->side ? "stream-driver" : "stream-device",
		.start = s->side ? devside_start : drvside_start,
		.stop = s->side ? devside_stop : drvside_stop,
		.poll = sb_poll,
		.prepare_sleep = sb_prepare_sleep,
		.queue = sb_queue,
	};
	s->devs[s->ndevs++] = d;
	if (s->side == 0) {
		rc = vop_link_attach_backend(s->proxy, dev_id, VOP_ROLE_DEVICE, &d->ops, d);
		if (rc) {
			s->ndevs--;
			free(d);
			return rc;
		}
		d->attached = true;
	}
	return 0;
}

int vop_stream_start(struct vop_stream *s)
{
	int rc;

	if (s->thr_started)
		return -EALREADY;
	rc = -pthread_create(&s->thr, NULL, bridge_main, s);
	if (rc == 0)
		s->thr_started = true;
	return rc;
}

void vop_stream_status(struct vop_stream *s, struct vop_stream_status *out)
{
	pthread_mutex_lock(&s->mu);
	*out = s->st;
	out->state = atomic_load_explicit(&s->state, memory_order_acquire);
	pthread_mutex_unlock(&s->mu);
}

void vop_stream_destroy(struct vop_stream *s)
{
	unsigned i;

	if (!s)
		return;
	if (s->thr_started) {
		pthread_mutex_lock(&s->mu);
		s->stop = true;
		pthread_mutex_unlock(&s->mu);
		shutdown(s->fd, SHUT_RDWR);
		signal_efd(s);
		pthread_join(s->thr, NULL);
	}
	for (i = 0; i < s->ndevs; i++) {
		struct sdev *d = s->devs[i];

		if (d->attached)
			vop_link_detach(s->proxy, d->dev_id);
		free_list(d->rx_head);
		free(d->cur);
		queues_destroy(d);
		free(d);
	}
	vop_stls_free(s->tls);
	if (s->fd >= 0)
		close(s->fd);
	if (s->efd >= 0)
		close(s->efd);
	OPENSSL_cleanse(s->secret, sizeof(s->secret));
	free(s->rxbuf);
	free(s->tx);
	free(s->scratch);
	free(s->segs);
	pthread_mutex_destroy(&s->fmu);
	pthread_mutex_destroy(&s->mu);
	free(s);
}
