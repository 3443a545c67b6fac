/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk, device role (file backend with an I/O thread pool and the
 * in-flight journal) and driver role (slot API used by the NBD server).
 * Contracts in vop/dev_blk.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../core/private_atomic.h"
#include "../core/win_access.h"
#include "vop/dev_blk.h"
#include "vop/path.h"
#include "vop/dev_parse.h"

#define BLK_HDR_BYTES 16u
#define BLK_SLOT_ALIGN 4096u
#define BLK_MAX_IOV VOP_CHAIN_MAX_IOV
#define BLK_BATCH 64
#define BLK_DESC_PER_SLOT 4u /* header + data + status, rounded to a power of 2 */

static uint64_t round_up64(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

static uint64_t slot_stride(uint32_t seg)
{
	/* data (seg, 4 KiB aligned), then the 16 B header and the status byte */
	return round_up64((uint64_t)seg + BLK_HDR_BYTES + 1, BLK_SLOT_ALIGN);
}

static const struct vop_blk_config zero_config;

void vop_blk_spec(struct vop_dev_spec *spec, uint32_t dev_id, uint8_t device_side, uint16_t qsize,
		  uint32_t seg_bytes, bool ro)
{
	memset(spec, 0, sizeof(*spec));
	spec->dev_id = dev_id;
	spec->device_type = VOP_VIRTIO_ID_BLK;
	spec->features = (1ull << VOP_BLK_F_SEG_MAX) | (1ull << VOP_BLK_F_BLK_SIZE) |
			 (1ull << VOP_BLK_F_FLUSH) | (1ull << VOP_BLK_F_DISCARD) |
			 (1ull << VOP_BLK_F_WRITE_ZEROES) | (1ull << VOP_F_EVENT_IDX) |
			 (1ull << VOP_F_INFLIGHT) | (ro ? 1ull << VOP_BLK_F_RO : 0);
	spec->device_side = device_side;
	spec->num_queues = 1;
	/* a request takes up to 3 descriptors: ring = 4 x slots */
	spec->queue_size[0] = (uint16_t)(qsize * BLK_DESC_PER_SLOT);
	spec->pool_size[0] = (uint64_t)qsize * slot_stride(seg_bytes) + BLK_SLOT_ALIGN +
			     vop_inflight_bytes(qsize * BLK_DESC_PER_SLOT);
	spec->config_len = sizeof(struct vop_blk_config);
	spec->config = &zero_config; /* the device side writes it (capacity) */
}

/* ==================================================================== */
/* Device role                                                           */
/* ==================================================================== */

/* One popped request; indexed by head. Loop thread fills, one I/O thread runs it. */
struct blk_job {
	struct vop_chain c;   /* validated chain (private copy) */
	uint32_t type;        /* request type */
	uint64_t sector;      /* request sector */
	uint32_t used_len;    /* bytes written into the writable part */
	uint8_t status;       /* VOP_BLK_S_* */
	uint64_t t0_ns;       /* CLOCK_MONOTONIC at pop; 0 for requests replayed from the journal */
	struct blk_job *next; /* list link (pending or done list) */
};

struct vop_blk_device {
	struct vop_devctx *ctx;     /* set at create */
	struct vop_window *w;       /* set at create */
	struct vop_dev_info di;     /* set at create */
	int fd;                     /* backing file */
	bool ro, direct;            /* set at create */
	uint64_t cap_sectors;       /* capacity; set at create */
	char serial[VOP_BLK_ID_BYTES]; /* GET_ID answer */
	/* worker thread (and I/O threads under qlock) */
	bool started;               /* between start and stop; under qlock */
	struct vop_devq q;          /* request queue */
	struct vop_inflight_hdr *jh;   /* journal header, NULL without VOP_F_INFLIGHT */
	struct vop_inflight_desc *jd;  /* journal entries [num] */
	struct blk_job *jobs;       /* [num], by head */
	uint16_t pushed[BLK_BATCH]; /* heads pushed in the current batch */
	/*
	 * qlock: the ring (q) and the journal. Held by the loop while it pops
	 * and journals, and by an I/O thread while it completes its request
	 * straight into the used ring (no hop through the loop). Lock order:
	 * qlock before lock.
	 */
	pthread_mutex_t qlock;
	/* I/O pool */
	pthread_mutex_t lock;       /* protects pending, done, stop, running */
	pthread_cond_t cond;        /* pending non-empty or stop */
	unsigned running;           /* jobs an I/O thread took and has not completed */
	bool wake_when_idle;        /* a stop waits: the last running job wakes the worker */
	struct blk_job *pending, **pending_tail; /* FIFO for the I/O threads */
	struct blk_job *done;       /* completed, for the loop thread */
	bool stop;                  /* under lock */
	unsigned nthreads;          /* started I/O threads */
	pthread_t threads[32];
	uint8_t *zeroes;            /* 1 MiB of zeroes for write-zeroes fallback */
	unsigned test_delay_us;     /* VOP_BLK_TEST_DELAY_US: sleep before each write (tests) */
	/*
	 * Counters: added to by whichever thread completes a request, so each
	 * is a private atomic (core/private_atomic.h); s names the fields.
	 */
	union {
		struct vop_blk_stats s;                                       /* names, offsets */
		struct vop_private_u64 c[sizeof(struct vop_blk_stats) / 8];   /* the counters */
	} st;
};

_Static_assert(sizeof(struct vop_blk_stats) % 8 == 0, "vop_blk_stats is all uint64_t");

/* Add v to the counter at field (a member of d->st.s). */
#define st_add(field, v) vop_private_add_u64(&d->st.c[(field) - (uint64_t *)&d->st.s], (v))

const uint64_t vop_blk_lat_bounds_ns[VOP_BLK_LAT_BOUNDS] = {
	10000, 50000, 100000, 500000, 1000000, 5000000, 10000000, 50000000, 100000000, 500000000, 1000000000,
};

const char *vop_blk_op_name(unsigned op)
{
	static const char *const names[VOP_BLK_OPS] = { "read", "write", "flush", "discard", "write_zeroes", "get_id", "other" };

	return op < VOP_BLK_OPS ? names[op] : "other";
}

static uint64_t blk_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static unsigned blk_op_of(uint32_t type)
{
	switch (type) {
	case VOP_BLK_T_IN:
		return VOP_BLK_OP_READ;
	case VOP_BLK_T_OUT:
		return VOP_BLK_OP_WRITE;
	case VOP_BLK_T_FLUSH:
		return VOP_BLK_OP_FLUSH;
	case VOP_BLK_T_DISCARD:
		return VOP_BLK_OP_DISCARD;
	case VOP_BLK_T_WRITE_ZEROES:
		return VOP_BLK_OP_WRITE_ZEROES;
	case VOP_BLK_T_GET_ID:
		return VOP_BLK_OP_GET_ID;
	default:
		return VOP_BLK_OP_OTHER;
	}
}

/* Records the pop-to-push latency of a request about to be pushed (any thread). */
static void blk_lat_observe(struct vop_blk_device *d, const struct blk_job *j)
{
	unsigned op = blk_op_of(j->type), b = 0;
	uint64_t dt;

	if (j->t0_ns == 0)
		return; /* replayed after a restart: its pop time is gone */
	dt = blk_now_ns() - j->t0_ns;
	while (b < VOP_BLK_LAT_BOUNDS && dt > vop_blk_lat_bounds_ns[b])
		b++;
	st_add(&d->st.s.lat_count[op][b], 1);
	st_add(&d->st.s.lat_sum_ns[op], dt);
}

void vop_blk_device_stats(struct vop_blk_device *d, struct vop_blk_stats *out)
{
	uint64_t *dst = (uint64_t *)out;
	size_t i;

	for (i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = vop_private_load_u64(&d->st.c[i]);
}

static int full_rw(int fd, struct iovec *iov, int n, uint64_t off, bool write, uint64_t *done)
{
	*done = 0;
	while (n > 0) {
		ssize_t r = write ? pwritev(fd, iov, n, (off_t)off) : preadv(fd, iov, n, (off_t)off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0) {
			if (write)
				return -EIO;
			/* EOF inside capacity (file shrank): zero the rest */
			for (int i = 0; i < n; i++)
				memset(iov[i].iov_base, 0, iov[i].iov_len);
			return 0;
		}
		*done += (uint64_t)r;
		off += (uint64_t)r;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

static int do_zero(struct vop_blk_device *d, uint64_t off, uint64_t len, bool unmap, bool discard)
{
	int mode = discard || unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
				    : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

	if (fallocate(d->fd, mode, (off_t)off, (off_t)len) == 0)
		return 0;
	if (discard)
		return 0; /* discard is a hint: unsupported means nothing to do */
	if (fallocate(d->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
		return 0;
	while (len > 0) {
		size_t n = len > (1u << 20) ? (1u << 20) : (size_t)len;
		ssize_t r = pwrite(d->fd, d->zeroes, n, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		off += (uint64_t)r;
		len -= (uint64_t)r;
	}
	return 0;
}

/* I/O thread body for one job: sets status and used_len. */
static void run_job(struct vop_blk_device *d, struct blk_job *j)
{
	struct vop_chain *c = &j->c;
	struct iovec iov[BLK_MAX_IOV];
	uint32_t data;
	uint64_t n;
	int niov, rc = 0;

	if (d->test_delay_us && j->type == VOP_BLK_T_OUT)
		usleep(d->test_delay_us); /* tests: keep requests in flight for a kill -9 */
	switch (j->type) {
	case VOP_BLK_T_IN:
		data = c->in_bytes - 1;
		niov = vop_chain_iov(c, true, 0, data, iov, BLK_MAX_IOV);
		rc = niov < 0 ? niov : full_rw(d->fd, iov, niov, j->sector * VOP_BLK_SECTOR, false, &n);
		j->used_len = data + 1;
		st_add(&d->st.s.reads, 1);
		st_add(&d->st.s.bytes_read, data);
		break;
	case VOP_BLK_T_OUT:
		data = c->out_bytes - BLK_HDR_BYTES;
		niov = vop_chain_iov(c, false, BLK_HDR_BYTES, data, iov, BLK_MAX_IOV);
		rc = niov < 0 ? niov : full_rw(d->fd, iov, niov, j->sector * VOP_BLK_SECTOR, true, &n);
		j->used_len = 1;
		st_add(&d->st.s.writes, 1);
		st_add(&d->st.s.bytes_written, data);
		break;
	case VOP_BLK_T_FLUSH:
		rc = fdatasync(d->fd) ? -errno : 0;
		j->used_len = 1;
		st_add(&d->st.s.flushes, 1);
		break;
	case VOP_BLK_T_DISCARD:
	case VOP_BLK_T_WRITE_ZEROES: {
		uint32_t nseg = (c->out_bytes - BLK_HDR_BYTES) / sizeof(struct vop_blk_dwz_seg), i;

		for (i = 0; i < nseg && rc == 0; i++) {
			struct vop_blk_dwz_seg s;

			vop_chain_read(c, BLK_HDR_BYTES + i * (uint32_t)sizeof(s), &s, sizeof(s));
			if (!vop_blk_range_ok(d->cap_sectors, s.sector, s.num_sectors)) { /* re-read: check again */
				rc = -EINVAL;
				break;
			}
			rc = do_zero(d, s.sector * VOP_BLK_SECTOR,
				     (uint64_t)s.num_sectors * VOP_BLK_SECTOR, s.flags & 1,
				     j->type == VOP_BLK_T_DISCARD);
		}
		j->used_len = 1;
		st_add(j->type == VOP_BLK_T_DISCARD ? &d->st.s.discards : &d->st.s.write_zeroes, 1);
		break;
	}
	default:
		rc = -EINVAL;
		break;
	}
	j->status = rc ? VOP_BLK_S_IOERR : VOP_BLK_S_OK;
	if (rc)
		st_add(&d->st.s.ioerr, 1);
}

/* Any thread, qlock held: complete one request (push, J2, publish, J3, J4). */
static void complete_locked(struct vop_blk_device *d, struct blk_job *j)
{
	struct vop_chain *c = &j->c;
	int rc;

	if (!d->started || d->q.vq.broken)
		return; /* stopped (reset), or the driver broke the ring: nowhere to go */
	if (c->in_bytes)
		vop_chain_write(c, c->in_bytes - 1, &j->status, 1);
	if (vop_vq_push(&d->q.vq, c->head, j->used_len) < 0)
		return;
	blk_lat_observe(d, j);
	if (d->jh) /* J2: the idx we are about to publish */
		vop_store_release_u16(&d->jh->used_pending, d->q.vq.used_shadow);
	rc = vop_vq_publish_used(&d->q.vq);
	if (rc < 0)
		return;
	vop_devq_notify(d->ctx, &d->q, rc);
	if (d->jh) {
		vop_write_once_u8(&d->jd[c->head].inflight, 0); /* J3 */
		/* J4: release: cleared flag before used_done */
		vop_store_release_u16(&d->jh->used_done, d->q.vq.used_shadow);
	}
}

static void *io_main(void *arg)
{
	struct vop_blk_device *d = arg;

	for (;;) {
		struct blk_job *j;
		bool wake;

		pthread_mutex_lock(&d->lock);
		while (!d->pending && !d->stop)
			pthread_cond_wait(&d->cond, &d->lock);
		if (!d->pending) {
			pthread_mutex_unlock(&d->lock);
			return NULL;
		}
		j = d->pending;
		d->pending = j->next;
		if (!d->pending)
			d->pending_tail = &d->pending;
		d->running++;
		pthread_mutex_unlock(&d->lock);
		run_job(d, j);
		pthread_mutex_lock(&d->qlock);
		complete_locked(d, j);
		pthread_mutex_unlock(&d->qlock);
		pthread_mutex_lock(&d->lock);
		wake = --d->running == 0 && d->wake_when_idle;
		if (wake)
			d->wake_when_idle = false;
		pthread_mutex_unlock(&d->lock);
		if (wake)
			vop_devctx_wake(d->ctx); /* the worker finishes the stop */
	}
}

/* Loop thread: complete j now (bad request), without the pool. */
static void finish_local(struct vop_blk_device *d, struct blk_job *j, uint8_t status, bool bad)
{
	j->status = status;
	j->used_len = j->c.in_bytes ? 1 : 0; /* status byte if there is room */
	if (status == VOP_BLK_S_UNSUPP)
		st_add(&d->st.s.unsupp, 1);
	else
		st_add(&d->st.s.ioerr, 1);
	if (bad)
		st_add(&d->st.s.bad_requests, 1);
	pthread_mutex_lock(&d->lock);
	j->next = d->done;
	d->done = j;
	pthread_mutex_unlock(&d->lock);
}

/* Loop thread: validate a popped request (vop_blk_req_parse) and hand it to the pool. */
static void dispatch(struct vop_blk_device *d, struct blk_job *j)
{
	struct vop_chain *c = &j->c;
	struct vop_blk_req_info r;
	int rc = vop_blk_req_parse(c, d->cap_sectors, d->ro, &r);

	if (rc) {
		finish_local(d, j, rc == -EOPNOTSUPP ? VOP_BLK_S_UNSUPP : VOP_BLK_S_IOERR, rc != -EROFS);
		return;
	}
	j->type = r.type;
	j->sector = r.sector;
	if (j->type == VOP_BLK_T_GET_ID) {
		uint32_t n = c->in_bytes - 1 < VOP_BLK_ID_BYTES ? c->in_bytes - 1 : VOP_BLK_ID_BYTES;

		vop_chain_write(c, 0, d->serial, n);
		j->status = VOP_BLK_S_OK;
		j->used_len = n + 1;
		st_add(&d->st.s.get_ids, 1);
		pthread_mutex_lock(&d->lock);
		j->next = d->done;
		d->done = j;
		pthread_mutex_unlock(&d->lock);
		return;
	}
	pthread_mutex_lock(&d->lock);
	j->next = NULL;
	*d->pending_tail = j;
	d->pending_tail = &j->next;
	pthread_mutex_unlock(&d->lock);
	pthread_cond_signal(&d->cond); /* after the unlock: the woken thread takes the lock at once */
}

/*
 * Worker thread, qlock held: set up the device side of the queue, resuming
 * from the journal when resume (the driver kept the rings running across
 * our restart). A fresh start zeroes the journal first: it is ours alone
 * (the driver never writes it), so an old one must not look resumable.
 */
static int blk_start(struct vop_blk_device *d, uint64_t feat, bool resume)
{
	struct vop_devq_geom g;
	struct vop_vq_config cfg;
	struct vop_vq_stats saved = d->q.vq.stats; /* counters survive restarts */
	struct vop_vring_used *used;
	uint16_t num, used_idx, i;
	bool journal;
	int rc;

	/* the window's table entry, or the host's ring (vhost-user) */
	rc = vop_devq_geom(d->ctx, &d->di, 0, feat, &g);
	if (rc)
		return rc;
	cfg = g.cfg;
	num = cfg.num;
	used = cfg.used;
	journal = (feat & (1ull << VOP_F_INFLIGHT)) && g.journal && g.journal_bytes >= vop_inflight_bytes(num);
	d->q.pool = g.pool;
	d->q.pool_off = g.pool_off;
	d->q.pool_size = g.pool_size;
	d->q.num = num;
	d->q.index = 0;
	d->jh = journal ? (struct vop_inflight_hdr *)g.journal : NULL;
	d->jd = d->jh ? (struct vop_inflight_desc *)(void *)(d->jh + 1) : NULL;
	used_idx = vop_read_once_u16(&used->idx);
	if (d->jh && !resume)
		vop_win_zero(d->jh, vop_inflight_bytes(num));
	if (!d->jh || vop_read_once_u32(&d->jh->magic) != VOP_INFLIGHT_MAGIC) {
		/*
		 * No journal, or a fresh one (zeroed just above): a fresh ring
		 * is the only state we can serve. Our device area was zeroed by
		 * the reset we acked; anything else means the driver ran it with
		 * someone else.
		 */
		if (g.resume) /* a host's ring: it starts where the front-end says */
			rc = vop_vq_init_device_resume(&d->q.vq, &cfg, g.last_avail, used_idx);
		else
			rc = used_idx != 0 ? vop_vq_init_device_resume(&d->q.vq, &cfg, 0, used_idx) /* don't touch it */
					   : vop_vq_init_device(&d->q.vq, &cfg);
		if (rc)
			return rc;
		d->q.ready = true;
		if (saved.c[VOP_VQS_BROKEN])
			saved.c[VOP_VQS_RESETS]++;
		saved.c[VOP_VQS_BROKEN] = 0;
		d->q.vq.stats = saved;
		d->jobs = calloc(num, sizeof(*d->jobs));
		if (!d->jobs)
			return -ENOMEM;
		if (used_idx != 0 && !g.resume)
			return vop_vq_fail(&d->q.vq, VOP_VQ_PEER_RESET);
		if (d->jh) {
			vop_write_once_u16(&d->jh->num, num);
			vop_write_once_u32(&d->jh->magic, VOP_INFLIGHT_MAGIC);
		}
		return 0;
	}
	/* Restart: resume the ring from the journal (values re-checked). */
	{
		uint16_t last_avail = vop_read_once_u16(&d->jh->last_avail);
		uint16_t pending = vop_read_once_u16(&d->jh->used_pending);
		uint16_t done = vop_read_once_u16(&d->jh->used_done);
		uint16_t *order;
		uint64_t *cnt;
		unsigned nre = 0, k;

		/* The driver keeps using the shared device area: initialise without touching it. */
		rc = vop_vq_init_device_resume(&d->q.vq, &cfg, last_avail, used_idx);
		if (rc)
			return rc;
		d->q.ready = true;
		d->q.vq.stats = saved;
		d->jobs = calloc(num, sizeof(*d->jobs));
		if (!d->jobs)
			return -ENOMEM;
		if (vop_read_once_u16(&d->jh->num) != num || (uint16_t)(last_avail - used_idx) > num)
			return vop_vq_fail(&d->q.vq, VOP_VQ_LAYOUT);
		order = malloc(sizeof(*order) * num);
		cnt = malloc(sizeof(*cnt) * num);
		if (!order || !cnt) {
			free(order);
			free(cnt);
			return -ENOMEM;
		}
		/* J2..J4 window: entries [done, pending) were published; clear them. */
		if (used_idx == pending && (uint16_t)(pending - done) <= num) {
			for (i = done; i != pending; i++) {
				uint32_t h = vop_read_once_u32(&used->ring[i & (num - 1)].id);

				if (h < num)
					vop_write_once_u8(&d->jd[h].inflight, 0);
			}
		}
		vop_write_once_u16(&d->jh->used_pending, used_idx);
		vop_write_once_u16(&d->jh->used_done, used_idx);
		for (i = 0; i < num; i++) {
			uint16_t pos;

			if (!vop_read_once_u8(&d->jd[i].inflight))
				continue;
			pos = vop_read_once_u16(&d->jd[i].avail_pos);
			/* popped at or after last_avail: J1 incomplete, it is popped again */
			if ((uint16_t)(pos - last_avail) < 0x8000u) {
				vop_write_once_u8(&d->jd[i].inflight, 0);
				continue;
			}
			order[nre] = i;
			cnt[nre] = vop_read_once_u64(&d->jd[i].counter);
			nre++;
		}
		/* re-execute in pop order (insertion sort, nre <= num) */
		for (k = 1; k < nre; k++) {
			uint16_t h = order[k];
			uint64_t cv = cnt[k];
			unsigned m = k;

			while (m > 0 && cnt[m - 1] > cv) {
				order[m] = order[m - 1];
				cnt[m] = cnt[m - 1];
				m--;
			}
			order[m] = h;
			cnt[m] = cv;
		}
		if (getenv("VOP_BLK_DEBUG"))
			fprintf(stderr, "blk: resume used_idx=%u last_avail=%u pending=%u done=%u re-execute=%u\n",
				used_idx, last_avail, pending, done, nre);
		rc = 0;
		for (k = 0; k < nre && rc == 0; k++) {
			struct blk_job *j = &d->jobs[order[k]];

			rc = vop_vq_pop_head(&d->q.vq, order[k], &j->c); /* re-walked and re-validated */
			if (rc <= 0) {
				rc = rc < 0 ? rc : vop_vq_fail(&d->q.vq, VOP_VQ_LAYOUT);
				break;
			}
			rc = 0;
			st_add(&d->st.s.recovered, 1);
			j->t0_ns = 0; /* its pop time died with the previous process */
			dispatch(d, j);
		}
		free(order);
		free(cnt);
		if (rc)
			return rc;
	}
	return 0;
}

/* Loop thread: push completed jobs, publish, then clear their journal entries. */
static int blk_complete(struct vop_blk_device *d)
{
	struct blk_job *list, *j;
	int n = 0, rc;

	pthread_mutex_lock(&d->lock);
	list = d->done;
	d->done = NULL;
	pthread_mutex_unlock(&d->lock);
	if (d->q.vq.broken)
		return 0; /* the driver broke the ring: completions have nowhere to go */
	while (list) {
		unsigned k = 0;

		for (j = list; j && k < BLK_BATCH; j = j->next, k++) {
			struct vop_chain *c = &j->c;

			if (c->in_bytes)
				vop_chain_write(c, c->in_bytes - 1, &j->status, 1);
			if (vop_vq_push(&d->q.vq, c->head, j->used_len) < 0)
				return -EIO;
			blk_lat_observe(d, j);
			d->pushed[k] = c->head;
		}
		list = j;
		n += (int)k;
		if (d->jh) /* J2: the idx we are about to publish */
			vop_store_release_u16(&d->jh->used_pending, d->q.vq.used_shadow);
		rc = vop_vq_publish_used(&d->q.vq);
		if (rc < 0)
			return rc;
		vop_devq_notify(d->ctx, &d->q, rc);
		if (d->jh) {
			unsigned m;

			for (m = 0; m < k; m++) /* J3 */
				vop_write_once_u8(&d->jd[d->pushed[m]].inflight, 0);
			/* J4: release: cleared flags before used_done */
			vop_store_release_u16(&d->jh->used_done, d->q.vq.used_shadow);
		}
	}
	return n;
}

static int blk_dev_poll_locked(struct vop_blk_device *d);

static int blk_dev_poll(void *arg)
{
	struct vop_blk_device *d = arg;
	int rc;

	pthread_mutex_lock(&d->qlock);
	rc = blk_dev_poll_locked(d);
	pthread_mutex_unlock(&d->qlock);
	return rc;
}

static int blk_dev_poll_locked(struct vop_blk_device *d)
{
	int progress = 0, rc, k;

	if (!d->started)
		return 0;
	rc = blk_complete(d);
	if (rc < 0)
		return rc;
	progress |= rc > 0;
	for (k = 0; k < 256; k++) {
		struct blk_job tmp, *j;
		uint16_t pos = d->q.vq.last_avail;

		rc = vop_vq_pop(&d->q.vq, &tmp.c);
		if (rc < 0)
			return 0; /* queue broken: counted in vq stats; stays quiet until reset */
		if (rc == 0)
			break;
		j = &d->jobs[tmp.c.head];
		memcpy(&j->c, &tmp.c, sizeof(tmp.c));
		j->t0_ns = blk_now_ns();
		if (d->jh) {
			/* J1: entry, then last_avail (release): crash-consistent order */
			uint64_t cnt = vop_read_once_u64(&d->jh->counter) + 1;

			vop_write_once_u64(&d->jh->counter, cnt);
			vop_write_once_u16(&d->jd[j->c.head].avail_pos, pos);
			vop_write_once_u64(&d->jd[j->c.head].counter, cnt);
			vop_store_release_u8(&d->jd[j->c.head].inflight, 1);
			vop_store_release_u16(&d->jh->last_avail, d->q.vq.last_avail);
		}
		dispatch(d, j);
		progress = 1;
	}
	return progress;
}

static int blk_dev_prepare_sleep(void *arg)
{
	struct vop_blk_device *d = arg;
	int pending;

	if (!d->started)
		return 0;
	pthread_mutex_lock(&d->lock);
	pending = d->done != NULL;
	pthread_mutex_unlock(&d->lock);
	if (d->q.vq.broken)
		return pending;
	pthread_mutex_lock(&d->qlock);
	pending |= vop_vq_enable_notify(&d->q.vq);
	pthread_mutex_unlock(&d->qlock);
	return pending;
}

/*
 * Stop using the ring: queued jobs are dropped; jobs an I/O thread is
 * running finish (their completions are dropped: the driver resets the
 * ring) and the last one wakes the worker, which calls us again. 0 once no
 * I/O thread touches the window, -EINPROGRESS before.
 */
static int blk_dev_stop(void *arg)
{
	struct vop_blk_device *d = arg;
	bool busy;

	pthread_mutex_lock(&d->qlock);
	d->started = false;
	pthread_mutex_unlock(&d->qlock);
	pthread_mutex_lock(&d->lock);
	d->pending = NULL;
	d->pending_tail = &d->pending;
	d->done = NULL;
	busy = d->running != 0;
	d->wake_when_idle = busy;
	pthread_mutex_unlock(&d->lock);
	if (busy)
		return -EINPROGRESS;
	vop_devq_destroy(&d->q);
	free(d->jobs);
	d->jobs = NULL;
	d->jh = NULL;
	d->jd = NULL;
	return 0;
}

/* Set up the ring (fresh, or resumed from the journal after our restart). */
static int blk_dev_start(void *arg, uint64_t feat, bool resume)
{
	struct vop_blk_device *d = arg;
	int rc;

	pthread_mutex_lock(&d->qlock);
	rc = blk_start(d, feat, resume);
	if (rc == 0)
		d->started = true; /* resumed jobs complete once we drop qlock */
	pthread_mutex_unlock(&d->qlock);
	return rc; /* on failure the link calls stop, which drains jobs re-dispatched from the journal */
}

static struct vop_vq *blk_dev_queue(void *arg, unsigned q)
{
	struct vop_blk_device *d = arg;

	return q == 0 ? &d->q.vq : NULL;
}

const struct vop_devback_ops vop_blk_device_ops = {
	.name = "blk-device",
	.start = blk_dev_start,
	.stop = blk_dev_stop,
	.poll = blk_dev_poll,
	.prepare_sleep = blk_dev_prepare_sleep,
	.queue = blk_dev_queue,
};

int vop_blk_device_create(struct vop_devctx *ctx, uint32_t dev_id,
			  const struct vop_blk_device_config *cfg, struct vop_blk_device **out)
{
	struct vop_blk_device *d;
	struct vop_blk_config bc;
	struct stat stb;
	unsigned i, nt = cfg->io_threads ? cfg->io_threads : 4;
	int rc;

	*out = NULL;
	if (nt > 32)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->ctx = ctx;
	d->w = vop_devctx_window(ctx);
	d->fd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_mutex_init(&d->qlock, NULL);
	pthread_cond_init(&d->cond, NULL);
	d->pending_tail = &d->pending;
	rc = vop_devctx_find(ctx, dev_id, VOP_VIRTIO_ID_BLK, cfg->find_timeout_ms, &d->di);
	if (rc)
		goto fail;
	if (d->di.device_side != vop_devctx_side(ctx) || d->di.num_queues < 1) {
		rc = -EINVAL;
		goto fail;
	}
	d->ro = cfg->ro || (d->di.features_offered & (1ull << VOP_BLK_F_RO));
	d->direct = cfg->direct;
	{
		/* O_NONBLOCK: a FIFO put in the disk directory must not hang the open; cleared below */
		int fl = (d->ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (d->direct ? O_DIRECT : 0);

		d->fd = cfg->block_device ? open(cfg->path, fl) : vop_path_open(cfg->root, cfg->path, fl, 0);
		if (d->fd < 0) {
			rc = cfg->block_device ? -errno : d->fd;
			d->fd = -1;
			goto fail;
		}
	}
	if (fstat(d->fd, &stb)) {
		rc = -errno;
		goto fail;
	}
	/* only an operator-listed block device, or a regular file: never another special file */
	if (cfg->block_device ? !S_ISBLK(stb.st_mode) : !S_ISREG(stb.st_mode)) {
		rc = -EINVAL;
		goto fail;
	}
	if (fcntl(d->fd, F_SETFL, fcntl(d->fd, F_GETFL) & ~O_NONBLOCK)) {
		rc = -errno;
		goto fail;
	}
	if (S_ISBLK(stb.st_mode)) {
		uint64_t bytes;

		if (ioctl(d->fd, BLKGETSIZE64, &bytes)) {
			rc = -errno;
			goto fail;
		}
		d->cap_sectors = bytes / VOP_BLK_SECTOR;
	} else if (S_ISREG(stb.st_mode)) {
		d->cap_sectors = (uint64_t)stb.st_size / VOP_BLK_SECTOR;
	} else {
		rc = -EINVAL;
		goto fail;
	}
	if (getenv("VOP_BLK_TEST_DELAY_US"))
		d->test_delay_us = (unsigned)strtoul(getenv("VOP_BLK_TEST_DELAY_US"), NULL, 0);
	d->zeroes = calloc(1, 1u << 20);
	if (!d->zeroes) {
		rc = -ENOMEM;
		goto fail;
	}
	if (cfg->serial)
		memcpy(d->serial, cfg->serial, strnlen(cfg->serial, sizeof(d->serial)));
	else
		snprintf(d->serial, sizeof(d->serial), "vop-%u", dev_id);
	memset(&bc, 0, sizeof(bc));
	bc.capacity = d->cap_sectors;
	bc.seg_max = BLK_MAX_IOV - 2;
	bc.blk_size = VOP_BLK_SECTOR;
	bc.writeback = 1;
	bc.num_queues = 1;
	bc.max_discard_sectors = UINT32_MAX;
	bc.max_discard_seg = 256;
	bc.discard_sector_alignment = 1;
	bc.max_write_zeroes_sectors = UINT32_MAX;
	bc.max_write_zeroes_seg = 256;
	bc.write_zeroes_may_unmap = 1;
	vop_devctx_config_write(ctx, &d->di, &bc, sizeof(bc));
	for (i = 0; i < nt; i++) {
		rc = -pthread_create(&d->threads[i], NULL, io_main, d);
		if (rc)
			goto fail;
		d->nthreads++;
	}
	*out = d;
	return 0;
fail:
	vop_blk_device_destroy(d);
	return rc;
}

void vop_blk_device_destroy(struct vop_blk_device *d)
{
	unsigned i;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	for (i = 0; i < d->nthreads; i++)
		pthread_join(d->threads[i], NULL);
	vop_devq_destroy(&d->q);
	if (d->fd >= 0)
		close(d->fd);
	free(d->jobs);
	free(d->zeroes);
	pthread_mutex_destroy(&d->qlock);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	free(d);
}

/* ==================================================================== */
/* Driver role                                                           */
/* ==================================================================== */

struct vop_blk_req {
	uint8_t *data;         /* slot data (seg bytes), 4 KiB aligned in the window */
	uint64_t data_off;     /* peer address of data */
	uint8_t *hdr;          /* 16 B header, right after the data */
	uint8_t *status;       /* status byte after the header */
	unsigned type;         /* submitter sets */
	uint32_t len;          /* submitter sets */
	uint64_t sector;       /* submitter sets */
	vop_blk_done_fn done;  /* submitter sets */
	void *ctx;             /* submitter sets */
	bool posted;           /* in the ring, not yet completed (under qlock) */
	/*
	 * Failed while posted (reset, broken ring): the device may still touch
	 * its buffers, so a put parks it until the device acked a reset.
	 */
	bool quarantined;      /* under the driver lock */
	struct vop_blk_req *next; /* free or quarantine list (under the driver lock) */
};

struct vop_blk_driver {
	struct vop_devctx *ctx;     /* set at create */
	struct vop_window *w;       /* set at create */
	struct vop_dev_info di;     /* set at create */
	struct vop_devq q;          /* under qlock */
	bool started;               /* between start and stop; under qlock (read under lock too) */
	struct vop_blk_config cfg;  /* device config snapshot, read at start */
	bool ro;
	uint32_t seg;               /* data bytes per slot */
	unsigned nslots;            /* = ring size */
	struct vop_blk_req *slots;  /* [nslots] */
	/*
	 * qlock: the ring. Submitting threads (NBD readers) post and kick under
	 * it, the loop reclaims used entries under it: a request reaches the
	 * device without a hop through our loop. Lock order: qlock before any
	 * lock a completion callback takes.
	 */
	pthread_mutex_t qlock;
	pthread_mutex_t lock;       /* protects free list, nfree, stop, ready */
	pthread_cond_t cond;        /* slots freed, ready changed or stop */
	bool ready;                 /* started (copy under lock for vop_blk_driver_wait_ready) */
	struct vop_blk_req *free_list;
	struct vop_blk_req *quarantine; /* slots back from requests failed in flight */
	unsigned nfree;
	unsigned free_waiters;      /* vop_blk_req_get callers waiting for slots (under lock) */
	bool stop;
};

uint64_t vop_blk_driver_capacity(struct vop_blk_driver *d)
{
	uint64_t cap;

	pthread_mutex_lock(&d->lock);
	cap = d->ready ? d->cfg.capacity * VOP_BLK_SECTOR : 0;
	pthread_mutex_unlock(&d->lock);
	return cap;
}

bool vop_blk_driver_ro(struct vop_blk_driver *d)
{
	bool ro;

	pthread_mutex_lock(&d->lock);
	ro = d->ro;
	pthread_mutex_unlock(&d->lock);
	return ro;
}

int vop_blk_driver_wait_ready(struct vop_blk_driver *d, uint32_t timeout_ms)
{
	struct timespec ts;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)(timeout_ms / 1000u);
	ts.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&d->lock);
	while (!d->ready && !d->stop && rc == 0)
		rc = pthread_cond_timedwait(&d->cond, &d->lock, &ts);
	rc = d->stop ? -ESHUTDOWN : d->ready ? 0 : -ETIMEDOUT;
	pthread_mutex_unlock(&d->lock);
	return rc;
}

uint32_t vop_blk_driver_seg(struct vop_blk_driver *d)
{
	return d->seg;
}

unsigned vop_blk_driver_slots(struct vop_blk_driver *d)
{
	return d->nslots;
}

uint8_t *vop_blk_req_buf(struct vop_blk_req *r)
{
	return r->data;
}

int vop_blk_req_get(struct vop_blk_driver *d, unsigned n, struct vop_blk_req **reqs)
{
	unsigned i;

	if (n == 0 || n > d->nslots)
		return -EINVAL;
	pthread_mutex_lock(&d->lock);
	while (d->nfree < n && !d->stop) {
		d->free_waiters++;
		pthread_cond_wait(&d->cond, &d->lock);
		d->free_waiters--;
	}
	if (d->stop) {
		pthread_mutex_unlock(&d->lock);
		return -ESHUTDOWN;
	}
	for (i = 0; i < n; i++) {
		reqs[i] = d->free_list;
		d->free_list = reqs[i]->next;
	}
	d->nfree -= n;
	pthread_mutex_unlock(&d->lock);
	return 0;
}

void vop_blk_req_put(struct vop_blk_driver *d, struct vop_blk_req *r)
{
	bool wake = false;

	pthread_mutex_lock(&d->lock);
	if (r->quarantined) {
		r->next = d->quarantine;
		d->quarantine = r;
	} else {
		r->next = d->free_list;
		d->free_list = r;
		d->nfree++;
		wake = d->free_waiters != 0; /* slots are put once per request: no futex call when nobody waits */
	}
	pthread_mutex_unlock(&d->lock);
	if (wake)
		pthread_cond_broadcast(&d->cond);
}

/* qlock held: put r in the ring (or fail it when the ring is broken). */
static int post_locked(struct vop_blk_driver *d, struct vop_blk_req *r)
{
	struct vop_blk_outhdr h;
	struct vop_sg sg[3];
	unsigned nout = 1, nin = 0;
	uint64_t hdr_off = r->data_off + d->seg;

	h.type = r->type;
	h.reserved = 0;
	h.sector = r->sector;
	memcpy(r->hdr, &h, sizeof(h));
	*r->status = 0xff;
	if (!d->started) {
		/* the device is resetting or gone: fail now rather than hang the client */
		r->done(r->ctx, r, VOP_BLK_S_IOERR);
		return 0;
	}
	sg[0].addr = hdr_off;
	sg[0].len = BLK_HDR_BYTES;
	if (r->len) {
		sg[1].addr = r->data_off;
		sg[1].len = r->len;
		if (r->type == VOP_BLK_T_IN || r->type == VOP_BLK_T_GET_ID)
			nin++;
		else
			nout++;
	}
	sg[nout + nin].addr = hdr_off + BLK_HDR_BYTES;
	sg[nout + nin].len = 1;
	nin++;
	if (vop_vq_add(&d->q.vq, sg, nout, nin, r) < 0) {
		/* ring broken (or, impossible, full): fail the request */
		r->done(r->ctx, r, VOP_BLK_S_IOERR);
		return 0;
	}
	r->posted = true;
	return 1;
}

int vop_blk_req_submit(struct vop_blk_driver *d, struct vop_blk_req *r, unsigned type,
		       uint64_t sector, uint32_t len, vop_blk_done_fn done, void *ctx)
{
	if (len > d->seg)
		return -EINVAL;
	r->type = type;
	r->sector = sector;
	r->len = len;
	r->done = done;
	r->ctx = ctx;
	pthread_mutex_lock(&d->qlock);
	if (post_locked(d, r))
		vop_devq_notify_if(d->w, vop_vq_kick_prepare(&d->q.vq));
	pthread_mutex_unlock(&d->qlock);
	return 0;
}

/*
 * qlock held: complete everything in flight with IOERR (it will never
 * complete otherwise), so clients get EIO now; its slots stay quarantined
 * until the device acked a reset, since an honest device may still be
 * reading or writing them until then.
 */
static int fail_posted_locked(struct vop_blk_driver *d)
{
	unsigned i;
	int n = 0;

	for (i = 0; i < d->nslots; i++) {
		if (d->slots[i].posted) {
			d->slots[i].posted = false;
			pthread_mutex_lock(&d->lock);
			d->slots[i].quarantined = true;
			pthread_mutex_unlock(&d->lock);
			d->slots[i].done(d->slots[i].ctx, &d->slots[i], VOP_BLK_S_IOERR);
			n++;
		}
	}
	return n;
}

/* The device acked a reset: quarantined slots are free again (and those not yet put will be). */
static void release_quarantine(struct vop_blk_driver *d)
{
	unsigned i;

	pthread_mutex_lock(&d->lock);
	for (i = 0; i < d->nslots; i++)
		d->slots[i].quarantined = false;
	while (d->quarantine) {
		struct vop_blk_req *r = d->quarantine;

		d->quarantine = r->next;
		r->quarantined = false;
		r->next = d->free_list;
		d->free_list = r;
		d->nfree++;
	}
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

static int blk_drv_poll(void *arg)
{
	struct vop_blk_driver *d = arg;
	int progress = 0, rc;
	void *tok;
	uint32_t len;

	pthread_mutex_lock(&d->qlock);
	if (!d->started) {
		pthread_mutex_unlock(&d->qlock);
		return 0;
	}
	while ((rc = vop_vq_get_used(&d->q.vq, &tok, &len)) > 0) {
		struct vop_blk_req *r = tok;
		uint8_t st = vop_read_once_u8(r->status);

		if (len < 1 || st > VOP_BLK_S_UNSUPP)
			st = VOP_BLK_S_IOERR;
		r->posted = false;
		r->done(r->ctx, r, st);
		progress = 1;
	}
	/*
	 * The device broke the ring (bad used index, id or length): what is in
	 * flight will never complete. Fail it so that NBD clients get EIO
	 * instead of hanging; later submissions fail at once (vq.c).
	 */
	if (rc < 0 && fail_posted_locked(d))
		progress = 1;
	pthread_mutex_unlock(&d->qlock);
	return progress;
}

static int blk_drv_prepare_sleep(void *arg)
{
	struct vop_blk_driver *d = arg;
	int pending;

	pthread_mutex_lock(&d->qlock);
	pending = d->started ? vop_vq_enable_notify(&d->q.vq) : 0;
	pthread_mutex_unlock(&d->qlock);
	return pending;
}

/*
 * The device acked a reset: zero and set up the request queue and the
 * in-flight journal, take the device's config (written before its ack).
 */
static int blk_drv_start(void *arg, uint64_t feat, bool resume)
{
	struct vop_blk_driver *d = arg;
	struct vop_blk_config cfg;
	int rc;

	(void)resume; /* the driver role always starts from a reset */
	rc = vop_dev_config_read(&d->di, &cfg, sizeof(cfg), 0);
	if (rc)
		return rc;
	/* The device writes the capacity: one whose byte size does not fit 64 bits is refused. */
	if (cfg.capacity > UINT64_MAX / VOP_BLK_SECTOR)
		return -EPROTO;
	/* Called once the device acked the reset: it no longer touches any slot. */
	release_quarantine(d);
	pthread_mutex_lock(&d->qlock);
	rc = vop_devq_init(d->w, &d->di, 0, true, feat, &d->q);
	if (rc == 0) {
		/* The journal at the end of the pool is the device's alone: we never write it. */
		d->started = true;
	}
	pthread_mutex_unlock(&d->qlock);
	if (rc)
		return rc;
	pthread_mutex_lock(&d->lock);
	d->cfg = cfg;
	d->ro = feat & (1ull << VOP_BLK_F_RO);
	d->ready = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

/* Reset or detach: requests in flight complete with IOERR, new ones fail until the next start. */
static int blk_drv_stop(void *arg)
{
	struct vop_blk_driver *d = arg;

	pthread_mutex_lock(&d->lock);
	d->ready = false;
	pthread_mutex_unlock(&d->lock);
	pthread_mutex_lock(&d->qlock);
	d->started = false;
	fail_posted_locked(d);
	vop_devq_destroy(&d->q);
	pthread_mutex_unlock(&d->qlock);
	return 0;
}

static struct vop_vq *blk_drv_queue(void *arg, unsigned q)
{
	struct vop_blk_driver *d = arg;

	return q == 0 ? &d->q.vq : NULL;
}

const struct vop_devback_ops vop_blk_driver_ops = {
	.name = "blk-driver",
	.driver_features = (1ull << VOP_BLK_F_SEG_MAX) | (1ull << VOP_BLK_F_BLK_SIZE) |
			   (1ull << VOP_BLK_F_FLUSH) | (1ull << VOP_BLK_F_DISCARD) |
			   (1ull << VOP_BLK_F_WRITE_ZEROES) | (1ull << VOP_BLK_F_RO) |
			   (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INFLIGHT),
	.start = blk_drv_start,
	.stop = blk_drv_stop,
	.poll = blk_drv_poll,
	.prepare_sleep = blk_drv_prepare_sleep,
	.queue = blk_drv_queue,
};

int vop_blk_driver_create(struct vop_devctx *ctx, uint32_t dev_id, uint32_t timeout_ms,
			  struct vop_blk_driver **out)
{
	struct vop_blk_driver *d;
	const struct vop_queue_desc *qd;
	uint64_t first, stride;
	uint8_t *pool;
	unsigned i;
	int rc;

	*out = NULL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->ctx = ctx;
	d->w = vop_devctx_window(ctx);
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	pthread_mutex_init(&d->qlock, NULL);
	rc = d->w ? vop_dev_find_wait(d->w, dev_id, VOP_VIRTIO_ID_BLK, timeout_ms, &d->di) : -EINVAL;
	if (rc)
		goto fail;
	if (d->di.device_side == d->w->side || d->di.num_queues < 1) {
		rc = -EINVAL;
		goto fail;
	}
	qd = &d->di.queues[0];
	pool = vop_window_ptr(d->w, qd->pool_off, qd->pool_size);
	if (!pool) {
		rc = -EPROTO;
		goto fail;
	}
	d->ro = (d->di.features_offered >> VOP_BLK_F_RO) & 1; /* until start reads the negotiated bit */
	d->nslots = qd->size / BLK_DESC_PER_SLOT;
	if (d->nslots == 0) {
		rc = -EPROTO;
		goto fail;
	}
	/* carve slots: data 4 KiB aligned in the window, then header and status */
	first = round_up64(qd->pool_off, BLK_SLOT_ALIGN) - qd->pool_off;
	if (qd->pool_size < first + vop_inflight_bytes(qd->size) + (uint64_t)d->nslots * BLK_SLOT_ALIGN) {
		rc = -EPROTO;
		goto fail;
	}
	stride = (qd->pool_size - first - vop_inflight_bytes(qd->size)) / d->nslots;
	stride -= stride % BLK_SLOT_ALIGN;
	d->seg = (uint32_t)((stride - BLK_HDR_BYTES - 1) / BLK_SLOT_ALIGN * BLK_SLOT_ALIGN);
	if (stride > (1u << 26) || d->seg == 0) {
		rc = -EPROTO;
		goto fail;
	}
	d->slots = calloc(d->nslots, sizeof(*d->slots));
	if (!d->slots) {
		rc = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < d->nslots; i++) {
		struct vop_blk_req *r = &d->slots[i];
		uint64_t off = first + i * stride;

		r->data = pool + off;
		r->data_off = qd->pool_off + off;
		r->hdr = r->data + d->seg;
		r->status = r->hdr + BLK_HDR_BYTES;
		r->next = d->free_list;
		d->free_list = r;
	}
	d->nfree = d->nslots;
	*out = d;
	return 0;
fail:
	vop_blk_driver_destroy(d);
	return rc;
}

void vop_blk_driver_shutdown(struct vop_blk_driver *d)
{
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
}

void vop_blk_driver_destroy(struct vop_blk_driver *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->stop = true;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	vop_devq_destroy(&d->q);
	free(d->slots);
	pthread_mutex_destroy(&d->qlock);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->cond);
	free(d);
}
