/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device context (window, wake-up, fd watcher), queue set-up and config
 * space shared by the device backends. Contracts in vop/dev_common.h.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../core/win_access.h"
#include "vop/dev_common.h"

#define CTX_MAX_WATCH 64

/*
 * fd watcher: an epoll set of one-shot watches (EPOLLONESHOT). Arming a
 * watch is one epoll_ctl by the worker, and none at all while the fd is
 * still armed with those events (a busy worker re-arms after every
 * EAGAIN); the watcher thread sleeps in epoll_wait and never has to be
 * woken to learn about a new watch.
 */
struct watch {
	int fd;             /* watched fd */
	uint32_t events;    /* EPOLLIN / EPOLLOUT currently armed (0: fired, disarmed) */
	_Atomic int *flag;  /* set to 1 when it fires, or NULL */
};

struct vop_devctx {
	struct vop_window *w;       /* window (not owned), or NULL for a host; set at create */
	const struct vop_devctx_host_ops *host; /* host ops when there is no window; set at create */
	void *host_arg;
	int epfd;                   /* epoll set of the watched fds */
	int efd;                    /* eventfd in epfd: stop signal for the watcher */
	pthread_mutex_t wlock;      /* protects everything below */
	bool running;               /* watcher thread started */
	bool stop;                  /* watcher must exit */
	pthread_t wthread;          /* watcher thread, valid while running */
	struct watch watch[CTX_MAX_WATCH]; /* every fd in epfd */
	unsigned nwatch;
};

uint64_t vop_dev_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int ctx_new(struct vop_window *w, const struct vop_devctx_host_ops *host, void *arg,
		   struct vop_devctx **out)
{
	struct vop_devctx *c = calloc(1, sizeof(*c));
	struct epoll_event ev = { .events = EPOLLIN, .data = { .fd = -1 } };
	int rc;

	*out = NULL;
	if (!c)
		return -ENOMEM;
	c->w = w;
	c->host = host;
	c->host_arg = arg;
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	c->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->epfd < 0 || c->efd < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->efd, &ev) < 0) {
		rc = -errno;
		if (c->epfd >= 0)
			close(c->epfd);
		if (c->efd >= 0)
			close(c->efd);
		free(c);
		return rc;
	}
	pthread_mutex_init(&c->wlock, NULL);
	*out = c;
	return 0;
}

int vop_devctx_create(struct vop_window *w, struct vop_devctx **out)
{
	return ctx_new(w, NULL, NULL, out);
}

int vop_devctx_create_host(const struct vop_devctx_host_ops *ops, void *arg, struct vop_devctx **out)
{
	if (!ops || !ops->find || !ops->queue || !ops->notify || !ops->wake || !ops->config_write) {
		*out = NULL;
		return -EINVAL;
	}
	return ctx_new(NULL, ops, arg, out);
}

unsigned vop_devctx_side(struct vop_devctx *c)
{
	return c->w ? c->w->side : 0;
}

struct vop_window *vop_devctx_window(struct vop_devctx *c)
{
	return c->w;
}

void vop_devctx_wake(struct vop_devctx *c)
{
	if (c->host) {
		c->host->wake(c->host_arg);
		return;
	}
	/* Our own worker; the transport's wake orders whatever the caller published before. */
	vop_window_wake(c->w);
}

/* Watcher thread: wait for armed fds; mark them fired (disarmed) and wake the worker. */
static void *watcher_main(void *arg)
{
	struct vop_devctx *c = arg;
	struct epoll_event evs[16];

	for (;;) {
		bool fired = false;
		int n = epoll_wait(c->epfd, evs, 16, -1), i;
		unsigned j;

		pthread_mutex_lock(&c->wlock);
		if (c->stop) {
			pthread_mutex_unlock(&c->wlock);
			break;
		}
		for (i = 0; i < n; i++) {
			for (j = 0; j < c->nwatch; j++) {
				if (c->watch[j].fd != evs[i].data.fd)
					continue;
				c->watch[j].events = 0; /* EPOLLONESHOT disarmed it */
				if (c->watch[j].flag) /* private flag; the wake-up below orders it */
					atomic_store_explicit(c->watch[j].flag, 1, memory_order_release);
				fired = true;
				break;
			}
		}
		pthread_mutex_unlock(&c->wlock);
		if (fired)
			vop_devctx_wake(c);
	}
	return NULL;
}

int vop_devctx_watch(struct vop_devctx *c, int fd, short events)
{
	return vop_devctx_watch_flag(c, fd, events, NULL);
}

int vop_devctx_watch_flag(struct vop_devctx *c, int fd, short events, _Atomic int *flag)
{
	uint32_t want = ((events & POLLIN) ? EPOLLIN : 0) | ((events & POLLOUT) ? EPOLLOUT : 0);
	struct epoll_event ev;
	unsigned i;
	int rc = 0, op = EPOLL_CTL_MOD;

	pthread_mutex_lock(&c->wlock);
	if (!c->running && !c->stop) {
		rc = -pthread_create(&c->wthread, NULL, watcher_main, c);
		c->running = rc == 0;
	}
	for (i = 0; rc == 0 && i < c->nwatch; i++)
		if (c->watch[i].fd == fd)
			break;
	if (rc) {
		/* no watcher thread: report it */
	} else if (i == c->nwatch && c->nwatch >= CTX_MAX_WATCH) {
		rc = -ENOSPC;
	} else {
		if (i == c->nwatch) {
			c->watch[c->nwatch++] = (struct watch){ fd, 0, NULL };
			op = EPOLL_CTL_ADD;
		}
		if (flag)
			c->watch[i].flag = flag;
		if ((c->watch[i].events | want) != c->watch[i].events || op == EPOLL_CTL_ADD) {
			/* Not armed with these yet: (re)arm with what is armed plus what is asked. */
			int r;

			ev.events = c->watch[i].events | want | EPOLLONESHOT;
			ev.data.fd = fd;
			r = epoll_ctl(c->epfd, op, fd, &ev);
			if (r < 0 && op == EPOLL_CTL_MOD && errno == ENOENT) {
				/* closed without unwatch and the number reused: a new fd, added afresh */
				ev.events = want | EPOLLONESHOT;
				c->watch[i].events = 0;
				r = epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
			}
			if (r < 0) {
				rc = -errno;
				if (op == EPOLL_CTL_ADD)
					c->nwatch--;
			} else {
				c->watch[i].events |= want;
			}
		}
	}
	pthread_mutex_unlock(&c->wlock);
	return rc;
}

void vop_devctx_unwatch(struct vop_devctx *c, int fd)
{
	unsigned j;

	if (!c || fd < 0)
		return;
	pthread_mutex_lock(&c->wlock);
	for (j = 0; j < c->nwatch; j++) {
		if (c->watch[j].fd == fd) {
			epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, NULL);
			c->watch[j] = c->watch[c->nwatch - 1];
			c->nwatch--;
			break;
		}
	}
	pthread_mutex_unlock(&c->wlock);
}

void vop_devctx_destroy(struct vop_devctx *c)
{
	uint64_t one = 1;
	bool running;

	if (!c)
		return;
	pthread_mutex_lock(&c->wlock);
	c->stop = true;
	running = c->running;
	pthread_mutex_unlock(&c->wlock);
	if (write(c->efd, &one, sizeof(one)) < 0) { /* cannot fail on a fresh eventfd: nothing to do */
	}
	if (running)
		pthread_join(c->wthread, NULL);
	close(c->epfd);
	close(c->efd);
	pthread_mutex_destroy(&c->wlock);
	free(c);
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

	struct vop_vq_stats saved = out->vq.stats; /* counters survive restarts */

	memset(out, 0, sizeof(*out));
	out->vq.stats = saved;
	if (q >= di->num_queues || qd->size == 0)
		return -EINVAL;
	memset(&cfg, 0, sizeof(cfg));
	cfg.num = qd->size;
	cfg.features = features;
	cfg.wc_stores = w->x->map_kind == VOP_MAP_WC;
	/* Offsets validated by vop_devtab_find(); NULL would mean outside the mapping. */
	cfg.desc = vop_window_ptr(w, qd->desc_off, vop_vring_desc_bytes(qd->size));
	cfg.avail = vop_window_ptr(w, qd->avail_off, vop_vring_avail_bytes(qd->size));
	cfg.used = vop_window_ptr(w, qd->used_off, vop_vring_used_bytes(qd->size));
	cfg.regions = &w->regions;
	out->pool = vop_window_ptr(w, qd->pool_off, qd->pool_size);
	if (!cfg.desc || !cfg.avail || !cfg.used || !out->pool)
		return -EPROTO;
	rc = driver ? vop_vq_init_driver(&out->vq, &cfg) : vop_vq_init_device(&out->vq, &cfg);
	if (rc)
		return rc;
	if (saved.c[VOP_VQS_BROKEN])
		saved.c[VOP_VQS_RESETS]++; /* as in vq.c: a reset that cleared a broken queue */
	saved.c[VOP_VQS_BROKEN] = 0;
	out->vq.stats = saved;
	out->pool_off = qd->pool_off;
	out->pool_size = qd->pool_size;
	out->num = qd->size;
	out->index = (uint16_t)q;
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

int vop_devq_geom(struct vop_devctx *c, const struct vop_dev_info *di, unsigned q, uint64_t features,
		  struct vop_devq_geom *g)
{
	const struct vop_queue_desc *qd;
	struct vop_window *w = c->w;

	memset(g, 0, sizeof(*g));
	if (c->host)
		return c->host->queue(c->host_arg, di, q, features, g);
	if (q >= di->num_queues || di->queues[q].size == 0)
		return -EINVAL;
	qd = &di->queues[q];
	g->cfg.num = qd->size;
	g->cfg.features = features;
	g->cfg.wc_stores = w->x->map_kind == VOP_MAP_WC;
	/* Offsets validated by vop_devtab_find(); NULL would mean outside the mapping. */
	g->cfg.desc = vop_window_ptr(w, qd->desc_off, vop_vring_desc_bytes(qd->size));
	g->cfg.avail = vop_window_ptr(w, qd->avail_off, vop_vring_avail_bytes(qd->size));
	g->cfg.used = vop_window_ptr(w, qd->used_off, vop_vring_used_bytes(qd->size));
	g->cfg.regions = &w->regions;
	g->pool = vop_window_ptr(w, qd->pool_off, qd->pool_size);
	if (!g->cfg.desc || !g->cfg.avail || !g->cfg.used || !g->pool)
		return -EPROTO;
	g->pool_off = qd->pool_off;
	g->pool_size = qd->pool_size;
	if ((features >> VOP_F_INFLIGHT & 1) && qd->pool_size >= vop_inflight_bytes(qd->size)) {
		/* the last bytes of the queue's pool (layout.h) */
		g->journal_bytes = vop_inflight_bytes(qd->size);
		g->journal = g->pool + qd->pool_size - g->journal_bytes;
	}
	return 0;
}

int vop_devq_start(struct vop_devctx *c, const struct vop_dev_info *di, unsigned q, uint64_t features,
		   struct vop_devq *out)
{
	struct vop_vq_stats saved = out->vq.stats; /* counters survive restarts */
	struct vop_devq_geom g;
	int rc;

	if (!c->host) /* a window: exactly what vop_devq_init() does */
		rc = vop_devq_init(c->w, di, q, false, features, out);
	else {
		memset(out, 0, sizeof(*out));
		out->vq.stats = saved;
		rc = vop_devq_geom(c, di, q, features, &g);
		if (rc)
			return rc;
		rc = g.resume ? vop_vq_init_device_resume(&out->vq, &g.cfg, g.last_avail, g.used_idx)
			      : vop_vq_init_device(&out->vq, &g.cfg);
		if (rc)
			return rc;
		if (saved.c[VOP_VQS_BROKEN])
			saved.c[VOP_VQS_RESETS]++;
		saved.c[VOP_VQS_BROKEN] = 0;
		out->vq.stats = saved;
		out->pool = g.pool;
		out->pool_off = g.pool_off;
		out->pool_size = g.pool_size;
		out->num = g.cfg.num;
		out->ready = true;
	}
	if (rc == 0)
		out->index = (uint16_t)q;
	return rc;
}

void vop_devq_notify(struct vop_devctx *c, const struct vop_devq *q, int rc)
{
	if (rc <= 0)
		return;
	if (c->host)
		c->host->notify(c->host_arg, q->index);
	else
		vop_window_notify_peer(c->w);
}

int vop_devctx_find(struct vop_devctx *c, uint32_t dev_id, uint32_t type, uint32_t timeout_ms,
		    struct vop_dev_info *out)
{
	if (c->host) {
		int rc = c->host->find(c->host_arg, dev_id, type, out);

		return rc ? rc : (out->device_type == type ? 0 : -EPROTO);
	}
	return vop_dev_find_wait(c->w, dev_id, type, timeout_ms, out);
}

void vop_devctx_config_write(struct vop_devctx *c, struct vop_dev_info *di, const void *cfg, uint32_t len)
{
	if (c->host)
		c->host->config_write(c->host_arg, cfg, len);
	else
		vop_dev_config_write(di, cfg, len);
}

/* ------------------------------------------------------------------ */
/* Device entry and config space                                        */
/* ------------------------------------------------------------------ */

int vop_dev_find_wait(struct vop_window *w, uint32_t dev_id, uint32_t type, uint32_t timeout_ms,
		      struct vop_dev_info *out)
{
	uint64_t deadline = vop_dev_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	unsigned tries = 0;

	for (;;) {
		int rc = vop_devtab_find(w, dev_id, out);

		if (rc == 0)
			return out->device_type == type ? 0 : -EPROTO;
		if (rc == -EPROTO)
			return rc;
		if (timeout_ms == 0) {
			/* EAGAIN: the entry changed while we copied it; a few retries, then give up */
			if (rc != -EAGAIN || ++tries >= 100)
				return rc == -EAGAIN ? -EAGAIN : -ENOENT;
			continue;
		}
		if (vop_dev_now_ns() > deadline)
			return -ETIMEDOUT;
		usleep(2000);
	}
}

void vop_dev_config_write(struct vop_dev_info *di, const void *cfg, uint32_t len)
{
	/* The device side's own block of the entry (edges K0/K1, B1 in docs/memory-ordering.md). */
	if (len > di->config_len)
		len = di->config_len;
	vop_devtab_config_write(NULL, di, 0, cfg, len);
}

int vop_dev_config_read(struct vop_dev_info *di, void *cfg, uint32_t len, uint32_t timeout_ms)
{
	uint64_t deadline = vop_dev_now_ns() + (uint64_t)timeout_ms * 1000000ull;

	if (len > VOP_CONFIG_MAX || len > di->config_len)
		return -EINVAL;
	for (;;) {
		uint32_t gen = 0;

		/* Generation >= 2: the device side has written its config at least once. */
		if (vop_devtab_config_read(NULL, di, cfg, len, &gen) == 0 && gen >= 2)
			return 0;
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
		if (to_chain) /* payload bytes in the window */
			vop_win_copy_to(c->iov[i].base + off, buf + done, n);
		else
			vop_win_copy_from(buf + done, c->iov[i].base + off, n);
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
