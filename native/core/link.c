/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Link worker: one thread per link side that serves every attached device
 * (a backend, struct vop_devback_ops) with adaptive polling (bounded spin,
 * then sleep on the doorbell), heartbeat and peer liveness, device-table
 * changes (hot unplug), and the control API. The device lifecycle over the
 * shared entry (reset handshake, DRIVER_OK, DEVICE_NEEDS_RESET) is
 * core/devreset.c; the byte pipe is a backend in native/devices/dev_pipe.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "link_internal.h"
#include "win_access.h"

#define PEER_GONE_MIN_NS (500ull * 1000 * 1000) /* tolerate scheduling hiccups on busy hosts */
/* Longer than the idle worker's 100 ms sleep: a table changing at every scan is "churning". */
#define DEVTAB_QUIET_NS (250ull * 1000 * 1000)

const char *vop_link_fail_name(unsigned reason)
{
	static const char *const names[VOP_LINK_FAIL_COUNT] = { "none", "devtab_unstable" };

	return reason < VOP_LINK_FAIL_COUNT ? names[reason] : "unknown";
}

unsigned vop_link_failed(struct vop_link *l)
{
	return atomic_load_explicit(&l->failed, memory_order_acquire);
}

struct vop_window *vop_link_window(struct vop_link *l)
{
	return l->w;
}

uint64_t vop_link_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void vop_link_emit(struct vop_link *l, uint32_t type, uint32_t dev_id, uint32_t queue,
		   uint32_t reason, uint32_t epoch)
{
	struct vop_event ev = { type, dev_id, queue, reason, epoch };

	if (l->cfg.on_event)
		l->cfg.on_event(l->cfg.ctx, &ev);
}

void vop_link_notify_peer(struct vop_link *l)
{
	int rc = vop_window_notify_peer(l->w);

	vop_stat_add(&l->ls[VOP_LS_DOORBELLS], 1);
	if (rc > 0)
		vop_stat_add(&l->ls[VOP_LS_SIGNALS], 1);
}

/* ------------------------------------------------------------------ */
/* Backends (worker thread, link lock held)                             */
/* ------------------------------------------------------------------ */

static void check_broken(struct vop_link *l, struct link_dev *d, unsigned qi)
{
	struct vop_vq *vq = d->ops->queue(d->be, qi);
	unsigned reason = vq ? vq->broken : 0;

	if (!reason || d->reported[qi])
		return;
	d->reported[qi] = true;
	d->run = VOP_DEVRUN_BROKEN;
	if (d->role == VOP_ROLE_DEVICE)
		vop_devreset_needs_reset(l, d);
	vop_link_emit(l, VOP_EV_QUEUE_BROKEN, d->dev_id, qi, reason, 0);
}

/* One poll round, then the queue-broken check of every queue. */
static unsigned service_backend(struct vop_link *l, struct link_dev *d)
{
	int rc = d->ops->poll(d->be);
	unsigned i;

	for (i = 0; i < d->info.num_queues; i++)
		check_broken(l, d, i);
	if (rc < 0) {
		d->be_failed = true;
		d->run = VOP_DEVRUN_BROKEN;
		if (d->role == VOP_ROLE_DEVICE)
			vop_devreset_needs_reset(l, d);
		vop_link_emit(l, VOP_EV_BACKEND_FAILED, d->dev_id, 0, (uint32_t)-rc, 0);
	}
	return rc > 0 ? (unsigned)rc : 0;
}

/*
 * Stop using the rings if started (reset, removal, detach). The worker
 * never waits (0 or -EINPROGRESS: call again later); wait is for the
 * control thread without the link lock (detach), which must see it done.
 */
int vop_link_backend_stop(struct link_dev *d, bool wait)
{
	int rc = 0;

	if (!d->be_started)
		return 0;
	while ((rc = d->ops->stop(d->be)) == -EINPROGRESS && wait)
		usleep(1000);
	if (rc == 0)
		d->be_started = false;
	return rc;
}

/* Start with the negotiated features; on failure the device is BROKEN. 0 or -errno. */
int vop_link_backend_start(struct vop_link *l, struct link_dev *d, bool resume)
{
	int rc = d->ops->start(d->be, d->features, resume);

	memset(d->reported, 0, sizeof(d->reported));
	d->be_started = true; /* even when it failed: stop() cleans up what it set up */
	d->be_failed = rc != 0;
	if (rc) {
		d->run = VOP_DEVRUN_BROKEN;
		vop_link_emit(l, VOP_EV_BACKEND_FAILED, d->dev_id, 0, (uint32_t)-rc, 0);
		return rc;
	}
	return 0;
}

/*
 * Whether the worker polls d now. A backend keeps serving its healthy
 * queues after one broke (the device asked for a reset, the driver decides
 * when), so console output still reaches the log and the other direction
 * of a net device still moves (the byte pipe stops at once by itself).
 */
static bool serving(const struct link_dev *d)
{
	if (d->run == VOP_DEVRUN_RUNNING)
		return !d->be_failed;
	return d->run == VOP_DEVRUN_BROKEN && d->be_started && !d->be_failed;
}

/* ------------------------------------------------------------------ */
/* Worker                                                               */
/* ------------------------------------------------------------------ */

static struct link_dev *find_dev(struct vop_link *l, uint32_t dev_id, unsigned *idx);

static void mark_removed(struct vop_link *l, struct link_dev *d)
{
	if (d->run == VOP_DEVRUN_REMOVED)
		return;
	vop_link_backend_stop(d, false); /* detach waits for whatever is still finishing */
	d->run = VOP_DEVRUN_REMOVED;
	vop_link_emit(l, VOP_EV_DEVICE_REMOVED, d->dev_id, 0, 0, 0);
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
		l->peer_kick = pv.kick;
		l->peer_hb_ns = now;
		if (restart) {
			vop_stat_add(&l->ls[VOP_LS_PEER_RESETS], 1);
			vop_link_emit(l, VOP_EV_PEER_RESET, 0, 0, 0, pv.epoch);
			/* The driver side re-runs the handshake with the new device. */
			for (i = 0; i < l->ndevs; i++) {
				struct link_dev *d = l->devs[i];

				/* An in-flight journal lets the restarted device resume our rings. */
				if (d->role == VOP_ROLE_DRIVER && d->run != VOP_DEVRUN_REMOVED &&
				    !(d->run == VOP_DEVRUN_RUNNING &&
				      (d->features >> VOP_F_INFLIGHT & 1)))
					vop_devreset_begin(l, d);
			}
		} else if (pv.epoch) {
			vop_link_emit(l, VOP_EV_PEER_UP, 0, 0, 0, pv.epoch);
		}
	} else if (pv.heartbeat != l->peer_hb || pv.kick != l->peer_kick) {
		/* Liveness is what the peer writes into the window: its heartbeat, or a doorbell. */
		l->peer_hb = pv.heartbeat;
		l->peer_kick = pv.kick;
		l->peer_hb_ns = now;
	}
	if (pv.epoch && !l->peer_gone) {
		uint64_t limit = 4ull * pv.hb_period_ms * 1000000u;

		if (limit < PEER_GONE_MIN_NS)
			limit = PEER_GONE_MIN_NS;
		if (pv.state == VOP_SIDE_GONE || now - l->peer_hb_ns > limit) {
			l->peer_gone = true;
			vop_stat_add(&l->ls[VOP_LS_PEER_GONE], 1);
			vop_link_emit(l, VOP_EV_PEER_GONE, 0, 0, 0, pv.epoch);
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
	vop_link_emit(l, VOP_EV_LINK_FAILED, 0, 0, VOP_LINK_FAIL_DEVTAB_UNSTABLE, 0);
	pthread_mutex_unlock(&l->lock);
	return true;
}

/* Arm notifications of every served device; true if work is already pending. */
static bool arm_all(struct vop_link *l)
{
	bool pending = false;
	unsigned i;

	for (i = 0; i < l->ndevs; i++) {
		struct link_dev *d = l->devs[i];

		if (d->run == VOP_DEVRUN_RESETTING || d->run == VOP_DEVRUN_WAIT_DRIVER)
			continue; /* polled by housekeeping timeouts; peer rings on progress */
		/* Backends re-arm what they wait for; with EVENT_IDX nothing needs disarming. */
		if (serving(d))
			pending |= d->ops->prepare_sleep(d->be) != 0;
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
		n += d->role == VOP_ROLE_DRIVER ? vop_devreset_driver_step(l, d, now)
						: vop_devreset_device_step(l, d);
		if (serving(d))
			n += service_backend(l, d);
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
	now = vop_link_now_ns();
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
			now = vop_link_now_ns();
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
		now = vop_link_now_ns();
		if (idle_since == 0)
			idle_since = now;
		if (l->cfg.poll_only || now - idle_since < l->cfg.spin_ns) {
			vop_cpu_relax();
			continue;
		}
		vop_stat_add(&l->ls[VOP_LS_POLL_NS], now - idle_since);
		/* Sleep: snapshot the doorbell, arm, re-check, then wait (D1/D2, core/doorbell.h). */
		{
			uint64_t snap = x->ops->snapshot(x);
			bool pending;
			int rc = -ETIMEDOUT;

			pthread_mutex_lock(&l->lock);
			pending = arm_all(l);
			pthread_mutex_unlock(&l->lock);
			if (!pending && !atomic_load_explicit(&l->stop, memory_order_acquire)) {
				t0 = vop_link_now_ns();
				vop_stat_add(&l->ls[VOP_LS_SLEEPS], 1);
				/*
				 * Wake at least every 100 ms (the advertised heartbeat
				 * period) for heartbeat, liveness and reset timeouts:
				 * 10 wakeups/s is what an idle link costs.
				 */
				rc = x->ops->wait(x, snap, 100ull * 1000 * 1000);
				now = vop_link_now_ns();
				vop_stat_add(&l->ls[VOP_LS_SLEEP_NS], now - t0);
				if (rc == 0)
					vop_stat_add(&l->ls[VOP_LS_WAKEUPS], 1);
			}
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

/* Control thread, d no longer visible to the worker: stop the backend and end the attachment. */
static void free_dev(struct link_dev *d)
{
	vop_link_backend_stop(d, true);
	if (d->ops->release)
		d->ops->release(d->be);
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
 * Ask the transport to make d's rings resident before traffic needs them,
 * and its buffer pools too when the backend asks (wants_prefault): a pool
 * can be megabytes (a net device's receive buffers) that an idle link never
 * touches, so by default pool pages fault in as traffic first reaches them.
 */
static void prefault_dev(struct vop_link *l, const struct link_dev *d)
{
	struct vop_xport *x = l->w->x;
	bool pools = d->ops->wants_prefault && d->ops->wants_prefault(d->be);
	unsigned i;

	if (!x->ops->prefault)
		return;
	for (i = 0; i < d->info.num_queues; i++) {
		const struct vop_queue_desc *q = &d->info.queues[i];

		x->ops->prefault(x, q->desc_off, vop_vring_desc_bytes(q->size));
		x->ops->prefault(x, q->avail_off, vop_vring_avail_bytes(q->size));
		x->ops->prefault(x, q->used_off, vop_vring_used_bytes(q->size));
		if (pools)
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
	vop_devreset_attached(l, d);
	l->devs[l->ndevs++] = d;
	pthread_mutex_unlock(&l->lock);
	prefault_dev(l, d);
	vop_window_notify_peer(l->w);
	/* Wake our own worker so it services the new device promptly. */
	vop_window_wake(l->w);
	return 0;
}


int vop_link_attach_backend(struct vop_link *l, uint32_t dev_id, enum vop_role role,
			    const struct vop_devback_ops *ops, void *dev)
{
	struct link_dev *d;
	int rc;

	if (!ops || !dev || !ops->start || !ops->stop || !ops->poll || !ops->prepare_sleep ||
	    !ops->queue || (role != VOP_ROLE_DRIVER && role != VOP_ROLE_DEVICE)) {
		rc = -EINVAL;
		goto err_release;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		rc = -ENOMEM;
		goto err_release;
	}
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
err_release:
	if (ops && dev && ops->release)
		ops->release(dev);
	return rc;
}

int vop_link_call_backend(struct vop_link *l, uint32_t dev_id,
			  int (*start)(void *dev, uint64_t features, bool resume),
			  int (*fn)(void *dev, void *arg), void *arg)
{
	struct link_dev *d;
	int rc;

	pthread_mutex_lock(&l->lock);
	d = find_dev(l, dev_id, NULL);
	if (!d)
		rc = -ENOENT;
	else if (d->ops->start != start)
		rc = -EINVAL;
	else
		rc = fn(d->be, arg);
	pthread_mutex_unlock(&l->lock);
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
		vop_devreset_begin(l, d);
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
	vop_window_wake(l->w); /* wake it if asleep */
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
	} else if (queue >= d->info.num_queues || !d->ops->queue(d->be, queue)) {
		rc = -EINVAL;
	} else {
		vop_vq_stats_read(d->ops->queue(d->be, queue), out);
		out->c[VOP_VQS_WAKEUPS] = vop_read_once_u64(&l->ls[VOP_LS_WAKEUPS]);
		out->c[VOP_VQS_POLL_NS] = vop_read_once_u64(&l->ls[VOP_LS_POLL_NS]);
		out->c[VOP_VQS_SLEEP_NS] = vop_read_once_u64(&l->ls[VOP_LS_SLEEP_NS]);
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
