/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device loop, fd watcher, queue set-up and status handshake shared by
 * the device backends. See vop/dev_common.h for the contracts.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../core/barrier.h"
#include "vop/dev_common.h"

#define LOOP_MAX_BACKENDS 16
#define LOOP_MAX_WATCH 64

struct watch {
	int fd;             /* watched fd */
	short events;       /* POLLIN / POLLOUT */
	_Atomic int *flag;  /* set to 1 when it fires, or NULL */
};

struct vop_devloop {
	struct vop_window *w;       /* window (not owned); set at create */
	uint64_t spin_ns;           /* set at create */
	uint64_t hb_ns;             /* set at create */
	const struct vop_devback_ops *ops[LOOP_MAX_BACKENDS]; /* set before start */
	void *dev[LOOP_MAX_BACKENDS];                         /* set before start */
	int failed[LOOP_MAX_BACKENDS]; /* loop thread: error of a backend, 0 = ok */
	unsigned n;                 /* backends; set before start */
	_Atomic int error;          /* first backend error; any thread reads */
	_Atomic bool stop;          /* control thread sets, loop + watcher read */
	bool running;               /* control thread */
	pthread_t thread;           /* loop thread */
	pthread_t wthread;          /* watcher thread */
	int efd;                    /* eventfd: re-arm / stop signal for the watcher */
	pthread_mutex_t wlock;      /* protects watch[] and nwatch */
	struct watch watch[LOOP_MAX_WATCH]; /* armed watches (under wlock) */
	unsigned nwatch;            /* under wlock */
};

uint64_t vop_dev_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int vop_devloop_create(struct vop_window *w, const struct vop_devloop_config *cfg,
		       struct vop_devloop **out)
{
	struct vop_devloop *l = calloc(1, sizeof(*l));

	*out = NULL;
	if (!l)
		return -ENOMEM;
	l->w = w;
	l->spin_ns = cfg && cfg->spin_ns ? cfg->spin_ns : 20000;
	l->hb_ns = (uint64_t)(cfg && cfg->hb_ms ? cfg->hb_ms : 500) * 1000000ull;
	l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->efd < 0) {
		int rc = -errno;

		free(l);
		return rc;
	}
	pthread_mutex_init(&l->wlock, NULL);
	*out = l;
	return 0;
}

int vop_devloop_add(struct vop_devloop *l, const struct vop_devback_ops *ops, void *dev)
{
	if (l->n >= LOOP_MAX_BACKENDS)
		return -ENOSPC;
	l->ops[l->n] = ops;
	l->dev[l->n] = dev;
	l->n++;
	return 0;
}

struct vop_window *vop_devloop_window(struct vop_devloop *l)
{
	return l->w;
}

int vop_devloop_error(struct vop_devloop *l)
{
	return atomic_load(&l->error);
}

void vop_devloop_wake(struct vop_devloop *l)
{
	struct vop_xport *x = l->w->x;

	/* Our own doorbell; the ring side orders whatever the caller published before. */
	x->ops->notify(x, l->w->side);
}

int vop_devloop_watch(struct vop_devloop *l, int fd, short events)
{
	return vop_devloop_watch_flag(l, fd, events, NULL);
}

int vop_devloop_watch_flag(struct vop_devloop *l, int fd, short events, _Atomic int *flag)
{
	unsigned i;
	uint64_t one = 1;
	int rc = 0;

	pthread_mutex_lock(&l->wlock);
	for (i = 0; i < l->nwatch; i++)
		if (l->watch[i].fd == fd)
			break;
	if (i < l->nwatch) {
		l->watch[i].events |= events;
		if (flag)
			l->watch[i].flag = flag;
	} else if (l->nwatch < LOOP_MAX_WATCH) {
		l->watch[l->nwatch].fd = fd;
		l->watch[l->nwatch].events = events;
		l->watch[l->nwatch].flag = flag;
		l->nwatch++;
	} else {
		rc = -ENOSPC;
	}
	pthread_mutex_unlock(&l->wlock);
	if (rc == 0 && write(l->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		rc = -errno;
	return rc;
}

/* Watcher thread: poll armed fds; on readiness disarm them and wake the loop. */
static void *watcher_main(void *arg)
{
	struct vop_devloop *l = arg;
	struct pollfd pfd[LOOP_MAX_WATCH + 1];
	unsigned n, i, j;
	uint64_t v;

	while (!atomic_load(&l->stop)) {
		pfd[0].fd = l->efd;
		pfd[0].events = POLLIN;
		pthread_mutex_lock(&l->wlock);
		n = l->nwatch;
		for (i = 0; i < n; i++) {
			pfd[i + 1].fd = l->watch[i].fd;
			pfd[i + 1].events = l->watch[i].events;
			pfd[i + 1].revents = 0;
		}
		pthread_mutex_unlock(&l->wlock);
		if (poll(pfd, n + 1, -1) <= 0) /* re-arm and stop both write the eventfd */
			continue;
		if (pfd[0].revents & POLLIN) {
			if (read(l->efd, &v, sizeof(v)) < 0) { /* drained; nothing else to do */
			}
		}
		bool fired = false;

		pthread_mutex_lock(&l->wlock);
		for (i = 1; i <= n; i++) {
			if (!pfd[i].revents)
				continue;
			fired = true;
			for (j = 0; j < l->nwatch; j++) {
				if (l->watch[j].fd == pfd[i].fd) {
					if (l->watch[j].flag)
						atomic_store(l->watch[j].flag, 1);
					l->watch[j] = l->watch[l->nwatch - 1];
					l->nwatch--;
					break;
				}
			}
		}
		pthread_mutex_unlock(&l->wlock);
		if (fired)
			vop_devloop_wake(l);
	}
	return NULL;
}

static int poll_all(struct vop_devloop *l)
{
	int progress = 0;
	unsigned i;

	for (i = 0; i < l->n; i++) {
		int rc;

		if (l->failed[i])
			continue;
		rc = l->ops[i]->poll(l->dev[i]);
		if (rc > 0) {
			progress = 1;
		} else if (rc < 0) {
			int zero = 0;

			l->failed[i] = rc;
			atomic_compare_exchange_strong(&l->error, &zero, rc);
		}
	}
	return progress;
}

static void *loop_main(void *arg)
{
	struct vop_devloop *l = arg;
	struct vop_xport *x = l->w->x;
	unsigned side = l->w->side;
	uint64_t now = vop_dev_now_ns(), last_work = now, last_hb = 0;

	while (!atomic_load(&l->stop)) {
		int pending = 0;
		unsigned i;
		uint32_t snap;

		if (poll_all(l)) {
			last_work = vop_dev_now_ns();
			continue;
		}
		now = vop_dev_now_ns();
		if (now - last_hb >= l->hb_ns) {
			vop_window_heartbeat(l->w);
			last_hb = now;
		}
		if (now - last_work < l->spin_ns) {
			vop_cpu_relax();
			continue;
		}
		/*
		 * Snapshot first, then re-arm and re-check every source: a wake
		 * that lands after the snapshot makes wait() return at once.
		 */
		snap = x->ops->snapshot(x, side);
		for (i = 0; i < l->n; i++)
			if (!l->failed[i] && l->ops[i]->prepare_sleep(l->dev[i]))
				pending = 1;
		if (pending)
			continue;
		x->ops->wait(x, side, snap, l->hb_ns);
		last_work = vop_dev_now_ns(); /* spin again after a wake-up */
	}
	return NULL;
}

int vop_devloop_start(struct vop_devloop *l)
{
	int rc;

	if (l->running)
		return -EALREADY;
	atomic_store(&l->stop, false);
	rc = -pthread_create(&l->wthread, NULL, watcher_main, l);
	if (rc)
		return rc;
	rc = -pthread_create(&l->thread, NULL, loop_main, l);
	if (rc) {
		uint64_t one = 1;

		atomic_store(&l->stop, true);
		if (write(l->efd, &one, sizeof(one)) < 0) { /* cannot fail on a fresh eventfd; nothing to do */
		}
		pthread_join(l->wthread, NULL);
		return rc;
	}
	l->running = true;
	return 0;
}

void vop_devloop_stop(struct vop_devloop *l)
{
	uint64_t one = 1;

	if (!l->running)
		return;
	atomic_store(&l->stop, true);
	vop_devloop_wake(l);
	if (write(l->efd, &one, sizeof(one)) < 0) { /* cannot fail on a fresh eventfd; nothing to do */
	}
	pthread_join(l->thread, NULL);
	pthread_join(l->wthread, NULL);
	l->running = false;
}

void vop_devloop_destroy(struct vop_devloop *l)
{
	if (!l)
		return;
	vop_devloop_stop(l);
	close(l->efd);
	pthread_mutex_destroy(&l->wlock);
	free(l);
}

/* ------------------------------------------------------------------ */
/* Queues                                                               */
/* ------------------------------------------------------------------ */

int vop_devq_init(struct vop_window *w, const struct vop_dev_info *di, unsigned q, bool driver,
		  uint64_t features, struct vop_devq *out)
{
	const struct vop_queue_desc *qd = &di->queues[q];
	struct vop_vq_config cfg;
	int rc;

	memset(out, 0, sizeof(*out));
	if (q >= di->num_queues || qd->size == 0)
		return -EINVAL;
	memset(&cfg, 0, sizeof(cfg));
	cfg.num = qd->size;
	cfg.features = features;
	cfg.desc = vop_window_ptr(w, qd->desc_off);
	cfg.avail = vop_window_ptr(w, qd->avail_off);
	cfg.used = vop_window_ptr(w, qd->used_off);
	cfg.regions = &w->regions;
	rc = driver ? vop_vq_init_driver(&out->vq, &cfg) : vop_vq_init_device(&out->vq, &cfg);
	if (rc)
		return rc;
	out->pool = vop_window_ptr(w, qd->pool_off);
	out->pool_off = qd->pool_off;
	out->pool_size = qd->pool_size;
	out->num = qd->size;
	out->ready = true;
	return 0;
}

void vop_devq_destroy(struct vop_devq *q)
{
	if (q->ready)
		vop_vq_destroy(&q->vq);
	q->ready = false;
}

void vop_devq_notify_if(struct vop_window *w, int rc)
{
	if (rc > 0)
		vop_window_notify_peer(w);
}

/* ------------------------------------------------------------------ */
/* Status handshake                                                     */
/* ------------------------------------------------------------------ */

int vop_dev_find_wait(struct vop_window *w, uint32_t dev_id, uint32_t type, uint32_t timeout_ms,
		      struct vop_dev_info *out)
{
	uint64_t deadline = vop_dev_now_ns() + (uint64_t)timeout_ms * 1000000ull;

	for (;;) {
		int rc = vop_devtab_find(w, dev_id, out);

		if (rc == 0)
			return out->device_type == type ? 0 : -EPROTO;
		if (rc == -EPROTO)
			return rc;
		if (vop_dev_now_ns() > deadline)
			return -ETIMEDOUT;
		usleep(2000);
	}
}

void vop_dev_driver_features(struct vop_dev_info *di, uint64_t wanted, uint64_t *accepted)
{
	uint64_t f = di->features_offered & (wanted | (1ull << VOP_F_VERSION_1));

	vop_write_once_u64(&di->entry->features_accepted, f);
	/* Release: features_accepted before FEATURES_OK (device acquires status). */
	vop_store_release_u32(&di->entry->status,
			      VOP_STATUS_ACKNOWLEDGE | VOP_STATUS_DRIVER | VOP_STATUS_FEATURES_OK);
	*accepted = f;
}

void vop_dev_driver_ok(struct vop_dev_info *di)
{
	/*
	 * Release: the zeroed driver areas and in-flight regions are visible
	 * before DRIVER_OK. Pairs with the acquire in vop_dev_device_ready().
	 */
	vop_store_release_u32(&di->entry->status, VOP_STATUS_ACKNOWLEDGE | VOP_STATUS_DRIVER |
							  VOP_STATUS_FEATURES_OK |
							  VOP_STATUS_DRIVER_OK);
}

int vop_dev_device_ready(struct vop_dev_info *di, uint64_t *accepted)
{
	/* Acquire: pairs with the release in vop_dev_driver_ok(). */
	uint32_t st = vop_load_acquire_u32(&di->entry->status);

	if (!(st & VOP_STATUS_DRIVER_OK) || !(st & VOP_STATUS_FEATURES_OK))
		return 0;
	*accepted = vop_read_once_u64(&di->entry->features_accepted) & di->features_offered;
	return 1;
}

void vop_dev_config_write(struct vop_dev_info *di, const void *cfg, uint32_t len)
{
	struct vop_dev_entry *e = di->entry;
	uint32_t gen = vop_read_once_u32(&e->config_generation);
	uint32_t i;

	if (len > VOP_CONFIG_MAX)
		len = VOP_CONFIG_MAX;
	if (gen & 1)
		gen++; /* a previous writer died mid-write */
	vop_write_once_u32(&e->config_generation, gen + 1);
	/* Release fence: the odd generation is visible before the new bytes (seqlock). */
	vop_wmb();
	for (i = 0; i < len; i++)
		vop_write_once_u8(&e->config[i], ((const uint8_t *)cfg)[i]);
	/* Release: the bytes before the even generation; pairs with config_read's acquire. */
	vop_store_release_u32(&e->config_generation, gen + 2);
}

int vop_dev_config_read(struct vop_dev_info *di, void *cfg, uint32_t len, uint32_t timeout_ms)
{
	struct vop_dev_entry *e = di->entry;
	uint64_t deadline = vop_dev_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	uint32_t i;

	if (len > VOP_CONFIG_MAX)
		return -EINVAL;
	for (;;) {
		/* Acquire: pairs with the final release in vop_dev_config_write(). */
		uint32_t g1 = vop_load_acquire_u32(&e->config_generation);

		if (g1 >= 2 && !(g1 & 1)) {
			for (i = 0; i < len; i++)
				((uint8_t *)cfg)[i] = vop_read_once_u8(&e->config[i]);
			/* Acquire fence: the byte loads before the re-read of generation. */
			vop_rmb();
			if (vop_read_once_u32(&e->config_generation) == g1)
				return 0;
		}
		if (vop_dev_now_ns() > deadline)
			return -ETIMEDOUT;
		usleep(1000);
	}
}

/* ------------------------------------------------------------------ */
/* Chain helpers                                                        */
/* ------------------------------------------------------------------ */

static uint32_t chain_copy(const struct vop_chain *c, bool in, uint32_t off, uint8_t *buf,
			   uint32_t len, bool to_chain)
{
	unsigned i = in ? c->n_out : 0, end = in ? c->n_out + c->n_in : c->n_out;
	uint32_t done = 0;

	for (; i < end && done < len; i++) {
		uint32_t l = c->iov[i].len, n;

		if (off >= l) {
			off -= l;
			continue;
		}
		n = l - off;
		if (n > len - done)
			n = len - done;
		if (to_chain)
			memcpy(c->iov[i].base + off, buf + done, n);
		else
			memcpy(buf + done, c->iov[i].base + off, n);
		done += n;
		off = 0;
	}
	return done;
}

uint32_t vop_chain_read(const struct vop_chain *c, uint32_t off, void *dst, uint32_t len)
{
	return chain_copy(c, false, off, dst, len, false);
}

uint32_t vop_chain_write(const struct vop_chain *c, uint32_t off, const void *src, uint32_t len)
{
	return chain_copy(c, true, off, (uint8_t *)(uintptr_t)src, len, true);
}

int vop_chain_iov(const struct vop_chain *c, bool in, uint32_t off, uint32_t len,
		  struct iovec *iov, int max)
{
	unsigned i = in ? c->n_out : 0, end = in ? c->n_out + c->n_in : c->n_out;
	int n = 0;

	for (; i < end && len > 0; i++) {
		uint32_t l = c->iov[i].len, take;

		if (off >= l) {
			off -= l;
			continue;
		}
		if (n >= max)
			return -EINVAL;
		take = l - off;
		if (take > len)
			take = len;
		iov[n].iov_base = c->iov[i].base + off;
		iov[n].iov_len = take;
		n++;
		len -= take;
		off = 0;
	}
	return len ? -EINVAL : n;
}
