/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhost-user back-end device: socket, message handling, guest memory,
 * rings, eventfds, the worker that hosts a device backend. Contract in
 * vop/vhost_user.h; the messages and the checks on each are listed in
 * docs/transports.md ("vhost-user").
 *
 * Locks:
 *   mu        the backends (their ops never run concurrently), running and
 *             each group's running, be_failed, be_started, the translated
 *             ring pointers, the kick fds in the
 *             worker's epoll set. The control thread takes it to start and
 *             stop the backend; the worker for every poll round.
 *   call_lock the call and err fds (vop_vhu_notify() runs on the worker and
 *             on backend I/O threads, which do not hold mu).
 *   cfg_lock  the config space.
 * Everything else of the protocol state (features, memory table, ring
 * set-up) belongs to the control thread; what the worker and the host calls
 * read of it is only changed while the backend is stopped (mu held).
 * Lock order: mu before call_lock and cfg_lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "private_atomic.h"
#include "win_access.h"
#include "vop/layout.h"
#include "vop/path.h"
#include "vop/vhost_user.h"

#define VHU_DEFAULT_MAX_MEM (64ull << 30)
#define VHU_EP_WAKE 0xffffffffu
#define VHU_IDLE_SLEEP_MS 100
#define VHU_INFLIGHT_ALIGN 64u

/* One mapped region of the memory table. */
struct vhu_map {
	void *base;     /* mmap of the fd from mmap_offset rounded down to the fd's block size */
	size_t len;     /* (mmap_offset - that) + size: only the region, never the fd from 0 */
	struct vop_vhu_region r;
};

struct vhu_mem {
	unsigned n;
	struct vhu_map m[VOP_VHU_MAX_REGIONS];
	struct vop_region_table gpa; /* descriptors name guest-physical addresses */
	struct vop_region_table uva; /* rings are named by front-end user addresses */
	uint64_t bytes;
};

struct vhu_ring {
	uint32_t num;         /* SET_VRING_NUM; 0 = not set */
	bool addr_set;
	uint64_t desc, avail, used; /* front-end user addresses */
	uint16_t base;        /* SET_VRING_BASE, or where the ring stopped */
	bool kick_set;        /* SET_VRING_KICK since the ring last stopped */
	bool enabled;         /* SET_VRING_ENABLE */
	bool enable_set;      /* SET_VRING_ENABLE was sent for this ring */
	int kick, call, err;  /* eventfds, -1 = none (kick: polling) */
	uint32_t kick_gen;    /* changes with the kick fd (epoll data) */
	/* translated at start, valid while running */
	void *pdesc, *pavail;
	struct vop_vring_used *pused;
};

struct vop_vhu {
	struct vop_vhu_config cfg;
	char path[VOP_PATH_MAX];
	char root[VOP_PATH_MAX];
	struct vop_vhu_limits lim;
	uint64_t offered;   /* virtio features for GET_FEATURES */
	uint64_t offered_pf; /* protocol features for GET_PROTOCOL_FEATURES */

	/* sockets and threads */
	struct vop_path_sock sock; /* server: the bound socket (unlinked on destroy) */
	int lfd;                   /* server: listening socket */
	int dirfd;                 /* client: the path's directory (O_PATH) */
	char name[VOP_PATH_MAX];   /* client: the socket's name in dirfd */
	int cfd;                   /* the connection, -1 */
	int stopfd;                /* eventfd: ends the control thread's waits */
	int wakefd;                /* eventfd: wakes the worker */
	int epfd;                  /* worker: wakefd + the running rings' kick fds */
	pthread_t ctl, wrk;
	bool threads;
	_Atomic int stop;

	/* backend (mu) */
	pthread_mutex_t mu;
	struct vop_private_u64 waiters; /* threads waiting for mu: the busy worker lets go at its next round */
	const struct vop_devback_ops *ops;
	/*
	 * Queue groups: group g serves rings [g * per, (g + 1) * per) with its
	 * own backend instance (net: one per queue pair). A group starts when
	 * all of its rings are ready, independently of the others, so a
	 * front-end that enables only some of the pairs it set up is served.
	 */
	unsigned per;     /* rings per group: cfg.num_queues */
	unsigned ngroups; /* cfg.groups (0 = 1) */
	unsigned nrings;  /* per * ngroups */
	struct vhu_group {
		void *be;
		bool running;
		bool be_failed;
		bool be_started; /* start() called and stop() not yet completed */
	} grp[VOP_VHU_MAX_QUEUES];
	bool running;     /* some group runs */
	bool reported[VOP_VHU_MAX_QUEUES];
	const char *start_why; /* vop_vhu_queue() refused the front-end's ring state */

	/* protocol state (control thread; read by others while stopped) */
	uint64_t features;
	uint64_t pfeatures;
	bool features_set;
	struct vhu_mem mem;
	struct vhu_ring ring[VOP_VHU_MAX_QUEUES];
	int inflight_fd;
	void *inflight_map;
	size_t inflight_len;
	uint8_t *inflight; /* inflight_map + mmap_offset */
	uint16_t inflight_nq, inflight_qs;

	pthread_mutex_t call_lock;
	pthread_mutex_t cfg_lock;
	uint8_t config[VOP_VHU_CONFIG_MAX];
	uint32_t config_len;

	/* status (relaxed atomics) */
	_Atomic bool connected;
	struct vop_private_u64 n_connections, n_disconnects, n_protoerr, n_messages, n_starts;
	_Atomic uint64_t mem_bytes;
	_Atomic uint32_t mem_regions;
	_Atomic uint32_t last_request;
	_Atomic int32_t last_error;
	_Atomic(const char *) last_why;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Take mu from anything but the worker (which holds it while busy). */
static void lock_mu(struct vop_vhu *v)
{
	vop_private_add_u64(&v->waiters, 1);
	pthread_mutex_lock(&v->mu);
	vop_private_add_u64(&v->waiters, UINT64_MAX); /* -1 */
}

static void emit(struct vop_vhu *v, const struct vop_vhu_event *ev)
{
	if (v->cfg.on_event)
		v->cfg.on_event(v->cfg.ctx, ev);
}

static void emit_type(struct vop_vhu *v, uint32_t type, int32_t error)
{
	struct vop_vhu_event ev = { .type = type, .error = error };

	emit(v, &ev);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void efd_signal(int fd)
{
	uint64_t one = 1;

	if (fd >= 0 && write(fd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, a signal is pending anyway */
	}
}

static void efd_drain(int fd)
{
	uint64_t v;

	if (fd >= 0 && read(fd, &v, sizeof(v)) < 0) {
		/* EAGAIN: nothing pending (a spurious epoll report) */
	}
}

/* ------------------------------------------------------------------ */
/* Guest memory                                                         */
/* ------------------------------------------------------------------ */

static void mem_unmap(struct vhu_mem *m)
{
	unsigned i;

	for (i = 0; i < m->n; i++)
		munmap(m->m[i].base, m->m[i].len);
	memset(m, 0, sizeof(*m));
	vop_region_table_init(&m->gpa);
	vop_region_table_init(&m->uva);
}

/*
 * Make sure the front-end cannot shrink the file under our mapping (a
 * shrink turns every later access into SIGBUS for the whole process): it
 * is sealed already (QEMU's memfd backend seals by default), or we seal it
 * now. 0, or -EPERM when it cannot be sealed (allowed only by
 * cfg.allow_unsealed).
 */
static int seal_shrink(int fd)
{
	int seals = fcntl(fd, F_GET_SEALS);

	if (seals >= 0 && (seals & F_SEAL_SHRINK))
		return 0;
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) == 0)
		return 0;
	return -EPERM;
}

/*
 * Check an fd we are asked to map: a regular file large enough, that cannot shrink. *align is the
 * granule an mmap offset into it must have (the page size; a hugetlbfs file's huge page size).
 */
static int check_map_fd(struct vop_vhu *v, int fd, uint64_t end, uint64_t *align, const char **why)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	struct stat st;

	if (fstat(fd, &st)) {
		*why = "memory fd: fstat failed";
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		*why = "memory fd: not a regular file (memfd, tmpfs or hugetlbfs)";
		return -EINVAL;
	}
	if ((uint64_t)st.st_size < end) {
		*why = "memory fd: smaller than mmap offset + size";
		return -EINVAL;
	}
	*align = page;
	if (st.st_blksize > 0 && (uint64_t)st.st_blksize > page && !((uint64_t)st.st_blksize & ((uint64_t)st.st_blksize - 1)))
		*align = (uint64_t)st.st_blksize;
	if (seal_shrink(fd) && !v->cfg.allow_unsealed) {
		*why = "memory fd: cannot be sealed against shrinking (F_SEAL_SHRINK)";
		return -EPERM;
	}
	return 0;
}

/* Map the regions of a parsed SET_MEM_TABLE into *m (empty on failure). */
static int mem_map(struct vop_vhu *v, const struct vop_vhu_msg *msg, const int *fds, struct vhu_mem *m,
		   const char **why)
{
	uint32_t i;
	int rc;

	memset(m, 0, sizeof(*m));
	vop_region_table_init(&m->gpa);
	vop_region_table_init(&m->uva);
	for (i = 0; i < msg->mem.nregions; i++) {
		const struct vop_vhu_region *r = &msg->mem.r[i];
		uint64_t end = r->mmap_offset + r->size; /* the parser checked it fits an off_t */
		uint64_t align, skip;
		void *p;

		if (m->bytes + r->size > v->cfg.max_mem_bytes || m->bytes + r->size < m->bytes) {
			*why = "memory table: larger than the device's memory limit";
			rc = -E2BIG;
			goto fail;
		}
		if (end > SIZE_MAX) {
			*why = "memory region: too large to map";
			rc = -E2BIG;
			goto fail;
		}
		rc = check_map_fd(v, fds[i], end, &align, why);
		if (rc)
			goto fail;
		/*
		 * Map the region only: an offset of many TiB into a sparse memfd must not reserve that
		 * much of our address space (the memory limit above counts sizes, not offsets).
		 */
		skip = r->mmap_offset & (align - 1);
		p = mmap(NULL, (size_t)(skip + r->size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fds[i],
			 (off_t)(r->mmap_offset - skip));
		if (p == MAP_FAILED) {
			*why = "memory region: mmap failed";
			rc = -errno;
			goto fail;
		}
		m->m[m->n].base = p;
		m->m[m->n].len = (size_t)(skip + r->size);
		m->m[m->n].r = *r;
		m->n++;
		m->bytes += r->size;
		/* The parser refused overlaps and wraps; the tables check again. */
		rc = vop_region_add(&m->gpa, r->gpa, r->size, (uint8_t *)p + skip, VOP_PROT_READ | VOP_PROT_WRITE);
		if (rc == 0)
			rc = vop_region_add(&m->uva, r->uva, r->size, (uint8_t *)p + skip,
					    VOP_PROT_READ | VOP_PROT_WRITE);
		if (rc) {
			*why = "memory regions overlap";
			goto fail;
		}
	}
	return 0;
fail:
	mem_unmap(m);
	return rc;
}

/* The three parts of ring r inside the memory table (user addresses), or NULL. */
static int ring_xlate(const struct vhu_mem *m, const struct vhu_ring *r, void **desc, void **avail,
		      void **used)
{
	uint32_t num = r->num ? r->num : 1;

	*desc = vop_region_xlate(&m->uva, r->desc, vop_vring_desc_bytes(num), VOP_PROT_READ);
	*avail = vop_region_xlate(&m->uva, r->avail, vop_vring_avail_bytes(num), VOP_PROT_READ);
	*used = vop_region_xlate(&m->uva, r->used, vop_vring_used_bytes(num), VOP_PROT_READ | VOP_PROT_WRITE);
	if (!*desc || !*avail || !*used)
		return -EFAULT;
	/* split ring alignment (VIRTIO 1.2 2.7): descriptor table 16, driver area 2, device area 4 */
	if ((uintptr_t)*desc % 16u || (uintptr_t)*avail % 2u || (uintptr_t)*used % 4u)
		return -EINVAL;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Backend start / stop (control thread)                                */
/* ------------------------------------------------------------------ */

static bool protocol_features_negotiated(const struct vop_vhu *v)
{
	return (v->features >> VOP_VHU_F_PROTOCOL_FEATURES) & 1;
}

static bool ring_ready(const struct vop_vhu *v, const struct vhu_ring *r)
{
	/*
	 * Enabled: as SET_VRING_ENABLE last said; without one, enabled at its
	 * kick unless VHOST_USER_F_PROTOCOL_FEATURES was negotiated (then rings
	 * start disabled). QEMU 7.2 sends SET_VRING_ENABLE even when it left
	 * that bit out of SET_FEATURES; DPDK accepts that too.
	 */
	bool enabled = r->enable_set ? r->enabled : !protocol_features_negotiated(v);

	return r->num && r->addr_set && r->kick_set && enabled;
}

static uint16_t used_idx_of(const struct vhu_ring *r)
{
	return vop_load_acquire_u16(&r->pused->idx);
}

/* The group ring q belongs to. */
static struct vhu_group *grp_of(struct vop_vhu *v, unsigned q)
{
	return &v->grp[q / v->per];
}

/* The backend's queue behind ring q, or NULL (mu held). */
static struct vop_vq *ring_vq(struct vop_vhu *v, unsigned q)
{
	struct vhu_group *g = grp_of(v, q);

	return g->be ? v->ops->queue(g->be, q % v->per) : NULL;
}

static bool any_running(const struct vop_vhu *v)
{
	unsigned g;

	for (g = 0; g < v->ngroups; g++)
		if (v->grp[g].running)
			return true;
	return false;
}

/* Rings [q0, q1) drained: nothing taken that is not completed, nothing new posted (mu held). */
static bool rings_drained(struct vop_vhu *v, unsigned q0, unsigned q1)
{
	unsigned q;

	for (q = q0; q < q1; q++) {
		struct vhu_ring *r = &v->ring[q];
		struct vop_vq *vq = ring_vq(v, q);
		uint16_t avail;

		if (!vq || !r->pused || !vq->num || vq->broken)
			continue;
		avail = vop_load_acquire_u16(&((struct vop_vring_avail *)r->pavail)->idx);
		if (vq->last_avail != used_idx_of(r) || avail != vq->last_avail)
			return false;
	}
	return true;
}

/* Every queue drained (mu held). */
static bool drained(struct vop_vhu *v)
{
	return rings_drained(v, 0, v->nrings);
}

static void check_broken(struct vop_vhu *v);

/* Call the backend's stop until it says no thread of it touches the rings (mu held; may drop it). */
static void backend_stop_locked(struct vop_vhu *v, struct vhu_group *g)
{
	int rc;

	if (!g->be_started)
		return;
	while ((rc = v->ops->stop(g->be)) == -EINPROGRESS) {
		pthread_mutex_unlock(&v->mu);
		usleep(1000);
		lock_mu(v);
	}
	g->be_started = false;
}

static bool any_started(const struct vop_vhu *v)
{
	unsigned g;

	for (g = 0; g < v->ngroups; g++)
		if (v->grp[g].be_started)
			return true;
	return false;
}

/* One poll round of every running group (mu held): > 0 work, 0 idle, < 0 a backend failed. */
static int poll_groups(struct vop_vhu *v)
{
	unsigned g;
	int work = 0, err = 0;

	for (g = 0; g < v->ngroups; g++) {
		struct vhu_group *gr = &v->grp[g];
		int rc;

		if (!gr->running || gr->be_failed)
			continue;
		rc = v->ops->poll(gr->be);
		if (rc < 0) {
			struct vop_vhu_event ev = { .type = VOP_VHU_EV_BACKEND_FAILED, .error = rc };

			gr->be_failed = true;
			emit(v, &ev);
			err = rc;
		} else if (rc > 0)
			work = 1;
	}
	return err ? err : work;
}

/*
 * Stop the rings. drain: give a backend that completes out of order
 * (blk) up to drain_ms to finish what it took. Every ring's base becomes
 * its used index: an in-order backend rewinds what it took and did not
 * complete (taken again after the restart), a drained one has nothing
 * outstanding.
 */
static void dev_stop(struct vop_vhu *v, bool drain)
{
	unsigned q;

	lock_mu(v);
	if (!v->running && !any_started(v)) {
		pthread_mutex_unlock(&v->mu);
		return;
	}
	if (drain && v->running) {
		uint64_t deadline = now_ns() + (uint64_t)v->cfg.drain_ms * 1000000ull;

		/*
		 * The front-end is there and asked the rings to stop: serve what
		 * it posted first (its counters then match ours). An in-order
		 * backend is done at its first idle round (receive buffers waiting
		 * for frames stay posted: the rewind below returns them); one
		 * that completes out of order also waits for what it took.
		 */
		for (;;) {
			int rc = poll_groups(v);

			check_broken(v);
			if (rc < 0 || now_ns() >= deadline)
				break;
			if (v->cfg.in_order ? rc == 0 : drained(v))
				break;
			if (rc == 0) { /* I/O threads still at work */
				pthread_mutex_unlock(&v->mu);
				usleep(500);
				lock_mu(v);
			}
		}
	}
	v->running = false; /* the worker stops polling */
	for (q = 0; q < v->ngroups; q++) {
		v->grp[q].running = false;
		backend_stop_locked(v, &v->grp[q]);
	}
	for (q = 0; q < v->nrings; q++) {
		struct vhu_ring *r = &v->ring[q];

		if (r->pused)
			r->base = used_idx_of(r);
		if (r->kick >= 0)
			epoll_ctl(v->epfd, EPOLL_CTL_DEL, r->kick, NULL);
		r->pdesc = r->pavail = NULL;
		r->pused = NULL;
	}
	pthread_mutex_unlock(&v->mu);
	emit_type(v, VOP_VHU_EV_STOPPED, 0);
}

/* The rings of group g, [*q0, *q1). */
static void group_rings(const struct vop_vhu *v, unsigned g, unsigned *q0, unsigned *q1)
{
	*q0 = g * v->per;
	*q1 = *q0 + v->per;
}

static void group_unxlate(struct vop_vhu *v, unsigned g)
{
	unsigned q, q0, q1;

	group_rings(v, g, &q0, &q1);
	for (q = q0; q < q1; q++) {
		v->ring[q].pdesc = v->ring[q].pavail = NULL;
		v->ring[q].pused = NULL;
	}
}

/*
 * Stop one group (a queue pair) for a message about one of its rings
 * (SET_VRING_NUM/ADDR/BASE, GET_VRING_BASE, SET_VRING_ENABLE 0); the
 * other groups keep running. This is safe because:
 *  - each group is its own backend instance: its own rings, queues,
 *    batch and stash state; stop() touches only that instance (a second
 *    or later net pair holds a dup of the first pair's TAP or socket fd
 *    and does not close the shared one);
 *  - mu is held: the worker is between poll rounds, and it polls, arms
 *    and checks only groups whose running flag is set, which is cleared
 *    before the backend stops (backend_stop_locked() may drop mu while
 *    the backend's own threads finish: the worker then skips this group);
 *  - what the stopped group's rings use in common with the others, the
 *    memory table and the epoll set, does not change: only this group's
 *    kick fds leave the epoll set, and only its ring pointers are
 *    forgotten.
 * Messages that change what every group uses (SET_FEATURES with other
 * bits, SET_MEM_TABLE, the inflight area, RESET_*) still stop them all
 * (dev_stop()). drain: as dev_stop(), for this group's rings only.
 */
static void grp_stop(struct vop_vhu *v, unsigned g, bool drain)
{
	struct vhu_group *gr = &v->grp[g];
	unsigned q, q0, q1;

	group_rings(v, g, &q0, &q1);
	lock_mu(v);
	if (!gr->running && !gr->be_started) {
		pthread_mutex_unlock(&v->mu);
		return;
	}
	if (drain && gr->running && !gr->be_failed) {
		uint64_t deadline = now_ns() + (uint64_t)v->cfg.drain_ms * 1000000ull;

		for (;;) {
			int rc = v->ops->poll(gr->be);

			check_broken(v);
			if (rc < 0) {
				struct vop_vhu_event ev = { .type = VOP_VHU_EV_BACKEND_FAILED, .error = rc };

				gr->be_failed = true;
				emit(v, &ev);
				break;
			}
			if (now_ns() >= deadline)
				break;
			if (v->cfg.in_order ? rc == 0 : rings_drained(v, q0, q1))
				break;
			if (rc == 0) { /* I/O threads still at work */
				pthread_mutex_unlock(&v->mu);
				usleep(500);
				lock_mu(v);
			}
		}
	}
	gr->running = false; /* the worker stops polling this group */
	v->running = any_running(v);
	backend_stop_locked(v, gr);
	for (q = q0; q < q1; q++) {
		struct vhu_ring *r = &v->ring[q];

		if (r->pused)
			r->base = used_idx_of(r);
		if (r->kick >= 0)
			epoll_ctl(v->epfd, EPOLL_CTL_DEL, r->kick, NULL);
	}
	group_unxlate(v, g);
	pthread_mutex_unlock(&v->mu);
	emit_type(v, VOP_VHU_EV_STOPPED, 0);
}

/*
 * Start every group whose rings are all in place and that does not run
 * yet (the others keep running). Returns 0 (started, or nothing ready
 * yet), or -errno with *why when the front-end's set-up breaks a rule (the
 * connection then ends).
 */
static int dev_start(struct vop_vhu *v, const char **why)
{
	bool want[VOP_VHU_MAX_QUEUES] = { false }, any = false, started = false;
	int failed = 0;
	uint64_t feat;
	unsigned g, q, q0, q1;
	int rc;

	if (v->mem.n == 0)
		return 0;
	for (g = 0; g < v->ngroups; g++) {
		if (v->grp[g].running)
			continue;
		want[g] = true;
		group_rings(v, g, &q0, &q1);
		for (q = q0; q < q1; q++)
			if (!ring_ready(v, &v->ring[q]))
				want[g] = false;
		any |= want[g];
	}
	if (!any)
		return 0;
	if (!((v->features >> VOP_F_VERSION_1) & 1)) {
		*why = "VIRTIO_F_VERSION_1 was not negotiated (legacy devices are not supported)";
		return -EPROTO;
	}
	lock_mu(v);
	for (g = 0; g < v->ngroups; g++) {
		if (!want[g])
			continue;
		group_rings(v, g, &q0, &q1);
		for (q = q0; q < q1; q++) {
			struct vhu_ring *r = &v->ring[q];
			void *d, *a, *u;

			if (ring_xlate(&v->mem, r, &d, &a, &u)) {
				unsigned k;

				for (k = 0; k <= g; k++)
					if (want[k])
						group_unxlate(v, k);
				pthread_mutex_unlock(&v->mu);
				*why = "ring address outside the memory table (or misaligned)";
				return -EFAULT;
			}
			r->pdesc = d;
			r->pavail = a;
			r->pused = u;
		}
	}
	feat = v->features & ~((1ull << VOP_VHU_F_PROTOCOL_FEATURES) | (1ull << VOP_VHU_F_LOG_ALL));
	if (v->inflight)
		feat |= 1ull << VOP_F_INFLIGHT;
	for (g = 0; g < v->ngroups; g++) {
		struct vhu_group *gr = &v->grp[g];

		if (!want[g])
			continue;
		group_rings(v, g, &q0, &q1);
		v->start_why = NULL;
		gr->be_failed = false;
		for (q = q0; q < q1; q++)
			v->reported[q] = false;
		/*
		 * resume: the inflight area is the front-end's and outlives us (a fresh
		 * one from GET_INFLIGHT_FD is all zeroes); the backend must not zero it.
		 */
		rc = v->ops->start(gr->be, feat, v->inflight != NULL);
		gr->be_started = true; /* even when it failed: stop() cleans up what it set up */
		if (rc) {
			const char *sw = v->start_why;

			backend_stop_locked(v, gr);
			group_unxlate(v, g);
			if (sw) { /* the front-end's ring state: its fault (the connection ends) */
				for (q = g + 1; q < v->ngroups; q++)
					if (want[q])
						group_unxlate(v, q);
				v->running = any_running(v);
				pthread_mutex_unlock(&v->mu);
				*why = sw;
				return -EPROTO;
			}
			failed = rc; /* ours: the connection stays, this group does not run */
			continue;
		}
		for (q = q0; q < q1; q++) {
			struct vhu_ring *r = &v->ring[q];

			if (r->kick >= 0) {
				struct epoll_event ev = { .events = EPOLLIN,
							  .data = { .u64 = q | ((uint64_t)r->kick_gen << 32) } };

				epoll_ctl(v->epfd, EPOLL_CTL_ADD, r->kick, &ev);
			}
		}
		gr->running = true;
		started = true;
	}
	v->running = any_running(v);
	pthread_mutex_unlock(&v->mu);
	if (failed) {
		struct vop_vhu_event ev = { .type = VOP_VHU_EV_BACKEND_FAILED, .error = failed };

		emit(v, &ev);
	}
	if (started) {
		struct vop_vhu_event ev = { .type = VOP_VHU_EV_STARTED, .features = feat };

		vop_private_add_u64(&v->n_starts, 1);
		efd_signal(v->wakefd);
		emit(v, &ev);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Host calls for the backend                                           */
/* ------------------------------------------------------------------ */

int vop_vhu_queue(struct vop_vhu *v, unsigned q, uint64_t features, struct vop_vq_config *cfg,
		  struct vop_vhu_qstart *st)
{
	struct vhu_ring *r;
	uint16_t used;

	if (q >= v->nrings)
		return -EINVAL;
	r = &v->ring[q];
	if (!r->pused || !r->num)
		return -EINVAL;
	memset(cfg, 0, sizeof(*cfg));
	memset(st, 0, sizeof(*st));
	cfg->num = (uint16_t)r->num;
	cfg->features = features;
	cfg->desc = r->pdesc;
	cfg->avail = r->pavail;
	cfg->used = r->pused;
	cfg->regions = &v->mem.gpa;
	used = used_idx_of(r);
	if ((uint16_t)(r->base - used) > r->num) {
		v->start_why = "ring base more than a ring ahead of the used index";
		return -EPROTO;
	}
	st->last_avail = r->base;
	st->used_idx = used;
	if (v->inflight && q < v->inflight_nq && r->num <= v->inflight_qs) {
		uint64_t stride = (vop_inflight_bytes(v->inflight_qs) + VHU_INFLIGHT_ALIGN - 1) &
				  ~(uint64_t)(VHU_INFLIGHT_ALIGN - 1);

		st->journal = v->inflight + stride * q;
		st->journal_bytes = vop_inflight_bytes(r->num);
	}
	return 0;
}

void vop_vhu_notify(struct vop_vhu *v, unsigned q)
{
	if (q >= v->nrings)
		return;
	pthread_mutex_lock(&v->call_lock);
	efd_signal(v->ring[q].call);
	pthread_mutex_unlock(&v->call_lock);
}

void vop_vhu_wake(struct vop_vhu *v)
{
	efd_signal(v->wakefd);
}

void vop_vhu_config_write(struct vop_vhu *v, const void *cfg, uint32_t len)
{
	if (len > VOP_VHU_CONFIG_MAX)
		len = VOP_VHU_CONFIG_MAX;
	pthread_mutex_lock(&v->cfg_lock);
	memcpy(v->config, cfg, len);
	if (len > v->config_len)
		v->config_len = len;
	pthread_mutex_unlock(&v->cfg_lock);
}

/* ------------------------------------------------------------------ */
/* Worker                                                               */
/* ------------------------------------------------------------------ */

/* After a poll round (mu held): report newly broken queues; tell the front-end through its err fd. */
static void check_broken(struct vop_vhu *v)
{
	unsigned q;

	for (q = 0; q < v->nrings; q++) {
		struct vop_vq *vq = ring_vq(v, q);
		struct vop_vhu_event ev = { .type = VOP_VHU_EV_QUEUE_BROKEN, .queue = q };

		if (!vq || !vq->broken || v->reported[q])
			continue;
		v->reported[q] = true;
		ev.reason = vq->broken;
		pthread_mutex_lock(&v->call_lock);
		efd_signal(v->ring[q].err);
		pthread_mutex_unlock(&v->call_lock);
		emit(v, &ev);
	}
}

/*
 * After a wake-up (mu held): rings without VIRTIO_F_EVENT_IDX keep asking
 * for kicks until told otherwise (used->flags); we poll now, so say so.
 * With EVENT_IDX the stale event index suppresses them already.
 */
static void disable_notify(struct vop_vhu *v)
{
	unsigned q;

	if (!v->running)
		return;
	for (q = 0; q < v->nrings; q++) {
		struct vop_vq *vq;

		if (!grp_of(v, q)->running || grp_of(v, q)->be_failed)
			continue;
		vq = ring_vq(v, q);
		if (vq && vq->num && !vq->event_idx)
			vop_vq_disable_notify(vq);
	}
}

static void *worker_main(void *arg)
{
	struct vop_vhu *v = arg;
	uint64_t idle_since = 0;
	unsigned idle_rounds = 0;

	pthread_mutex_lock(&v->mu);
	while (!atomic_load_explicit(&v->stop, memory_order_acquire)) {
		struct epoll_event evs[VOP_VHU_MAX_QUEUES + 1];
		int work = 0, pending = 0, n = 0, i;
		uint64_t now;

		/*
		 * The worker keeps mu across busy rounds (no lock traffic per
		 * batch); anyone who wants it says so in waiters and gets it
		 * at the next round.
		 */
		if (vop_private_load_u64(&v->waiters)) {
			pthread_mutex_unlock(&v->mu);
			while (vop_private_load_u64(&v->waiters))
				sched_yield();
			pthread_mutex_lock(&v->mu);
			continue;
		}
		if (v->running) {
			work = poll_groups(v) > 0; /* a failed backend is reported there and not polled again */
			check_broken(v);
		}
		if (work) {
			idle_since = 0;
			idle_rounds = 0;
			continue;
		}
		/* bounded spin after the last work; the clock is read every 32 idle rounds */
		if ((++idle_rounds & 31u) != 0 && v->cfg.spin_ns) {
			vop_cpu_relax();
			continue;
		}
		now = now_ns();
		if (idle_since == 0)
			idle_since = now;
		if (now - idle_since < v->cfg.spin_ns) {
			vop_cpu_relax();
			continue;
		}
		/* Sleep: arm the rings' notifications, re-check, then wait for a kick or a wake. */
		if (v->running) {
			unsigned g;

			for (g = 0; g < v->ngroups; g++)
				if (v->grp[g].running && !v->grp[g].be_failed)
					pending |= v->ops->prepare_sleep(v->grp[g].be) != 0;
		}
		pthread_mutex_unlock(&v->mu);
		if (!pending && !atomic_load_explicit(&v->stop, memory_order_acquire))
			n = epoll_wait(v->epfd, evs, (int)(sizeof(evs) / sizeof(evs[0])), VHU_IDLE_SLEEP_MS);
		pthread_mutex_lock(&v->mu);
		for (i = 0; i < n; i++) {
			uint64_t d = evs[i].data.u64;
			uint32_t q = (uint32_t)d;

			if (q == VHU_EP_WAKE)
				efd_drain(v->wakefd);
			else if (q < v->nrings && v->ring[q].kick_gen == (uint32_t)(d >> 32))
				efd_drain(v->ring[q].kick); /* level-triggered: clear it */
		}
		if (n > 0 || pending) {
			idle_since = 0;
			idle_rounds = 0;
			disable_notify(v);
		}
	}
	pthread_mutex_unlock(&v->mu);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Replies                                                              */
/* ------------------------------------------------------------------ */

static int send_all(int fd, const void *buf, size_t len, int sendfd)
{
	struct iovec iov = { (void *)(uintptr_t)buf, len };
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (sendfd >= 0) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.b;
		mh.msg_controllen = sizeof(u.b);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &sendfd, sizeof(int));
	}
	while (iov.iov_len) {
		n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		iov.iov_base = (uint8_t *)iov.iov_base + n;
		iov.iov_len -= (size_t)n;
		mh.msg_control = NULL; /* the fd went with the first byte */
		mh.msg_controllen = 0;
	}
	return 0;
}

static int reply(struct vop_vhu *v, uint32_t request, const void *payload, uint32_t size, int sendfd)
{
	uint8_t buf[VOP_VHU_HDR_SIZE + VOP_VHU_MAX_PAYLOAD];
	uint32_t hdr[3] = { request, VOP_VHU_VERSION | VOP_VHU_FLAG_REPLY, size };

	memcpy(buf, hdr, sizeof(hdr));
	if (size)
		memcpy(buf + VOP_VHU_HDR_SIZE, payload, size);
	return send_all(v->cfd, buf, VOP_VHU_HDR_SIZE + size, sendfd);
}

static int reply_u64(struct vop_vhu *v, uint32_t request, uint64_t val)
{
	return reply(v, request, &val, sizeof(val), -1);
}

/* REPLY_ACK: answer a request without its own reply when the front-end asked. */
static int ack(struct vop_vhu *v, const struct vop_vhu_msg *m, bool ok)
{
	if (!m->need_reply || !((v->pfeatures >> VOP_VHU_PF_REPLY_ACK) & 1))
		return 0;
	return reply_u64(v, m->request, ok ? 0 : 1);
}

/* ------------------------------------------------------------------ */
/* Message handlers (control thread)                                    */
/* ------------------------------------------------------------------ */

static void inflight_unmap(struct vop_vhu *v)
{
	if (v->inflight_map)
		munmap(v->inflight_map, v->inflight_len);
	close_fd(&v->inflight_fd);
	v->inflight_map = NULL;
	v->inflight = NULL;
	v->inflight_len = 0;
	v->inflight_nq = v->inflight_qs = 0;
}

static uint64_t inflight_size(uint16_t nq, uint16_t qs)
{
	uint64_t stride = (vop_inflight_bytes(qs) + VHU_INFLIGHT_ALIGN - 1) & ~(uint64_t)(VHU_INFLIGHT_ALIGN - 1);

	return stride * nq;
}

/* Forget every ring's set-up and fds (the backend is stopped). */
static void rings_reset(struct vop_vhu *v)
{
	unsigned q;

	pthread_mutex_lock(&v->call_lock);
	for (q = 0; q < VOP_VHU_MAX_QUEUES; q++) {
		struct vhu_ring *r = &v->ring[q];

		close_fd(&r->kick);
		close_fd(&r->call);
		close_fd(&r->err);
		memset(r, 0, sizeof(*r));
		r->kick = r->call = r->err = -1;
	}
	pthread_mutex_unlock(&v->call_lock);
}

static int h_set_features(struct vop_vhu *v, const struct vop_vhu_msg *m, const char **why)
{
	uint64_t f = m->u64;

	if ((f >> VOP_VHU_F_RING_PACKED) & 1) {
		*why = "VIRTIO_F_RING_PACKED: packed rings are not supported";
		return -EOPNOTSUPP;
	}
	if (f & ~v->offered) {
		*why = "features that were not offered";
		return -EINVAL;
	}
	if (v->running && f != v->features)
		dev_stop(v, true);
	v->features = f;
	v->features_set = true;
	return 0;
}

static int h_set_mem_table(struct vop_vhu *v, const struct vop_vhu_msg *m, const int *fds, const char **why)
{
	struct vhu_mem nm;
	unsigned q;
	int rc = mem_map(v, m, fds, &nm, why);

	if (rc)
		return rc;
	dev_stop(v, true); /* nothing may touch the old mapping past here */
	mem_unmap(&v->mem);
	v->mem = nm;
	/* the region tables moved with the copy: nothing points into nm */
	atomic_store_explicit(&v->mem_bytes, nm.bytes, memory_order_relaxed);
	atomic_store_explicit(&v->mem_regions, nm.n, memory_order_relaxed);
	for (q = 0; q < v->nrings; q++) {
		void *d, *a, *u;

		if (v->ring[q].addr_set && ring_xlate(&v->mem, &v->ring[q], &d, &a, &u)) {
			*why = "ring address outside the new memory table";
			return -EFAULT;
		}
	}
	return 0;
}

static int h_set_vring_addr(struct vop_vhu *v, const struct vop_vhu_msg *m, const char **why)
{
	struct vhu_ring *r = &v->ring[m->addr.index];

	grp_stop(v, m->addr.index / v->per, true); /* this pair only: the others keep running */
	r->desc = m->addr.desc;
	r->avail = m->addr.avail;
	r->used = m->addr.used;
	r->addr_set = true;
	if (v->mem.n) {
		void *d, *a, *u;
		int rc = ring_xlate(&v->mem, r, &d, &a, &u);

		if (rc) {
			r->addr_set = false;
			*why = rc == -EFAULT ? "ring address outside the memory table" : "ring address misaligned";
			return rc;
		}
	}
	return 0;
}

/* SET_VRING_KICK/CALL/ERR: take over the fd (or none). */
static int h_set_vring_fd(struct vop_vhu *v, const struct vop_vhu_msg *m, int *fds)
{
	struct vhu_ring *r = &v->ring[m->vfd.index];
	int fd = m->vfd.nofd ? -1 : fds[0];

	if (fd >= 0)
		fds[0] = -1; /* ours now */
	if (m->request == VOP_VHU_SET_VRING_KICK) {
		bool running;

		lock_mu(v);
		running = grp_of(v, m->vfd.index)->running;
		if (running && r->kick >= 0)
			epoll_ctl(v->epfd, EPOLL_CTL_DEL, r->kick, NULL);
		close_fd(&r->kick);
		r->kick = fd;
		r->kick_gen++;
		r->kick_set = true;
		if (running && fd >= 0) {
			struct epoll_event ev = { .events = EPOLLIN,
						  .data = { .u64 = m->vfd.index | ((uint64_t)r->kick_gen << 32) } };

			epoll_ctl(v->epfd, EPOLL_CTL_ADD, fd, &ev);
		}
		pthread_mutex_unlock(&v->mu);
		if (fd >= 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
			/* a non-eventfd the front-end gave us: reads may block; epoll still works */
		}
		efd_signal(v->wakefd);
		return 0;
	}
	pthread_mutex_lock(&v->call_lock);
	if (m->request == VOP_VHU_SET_VRING_CALL) {
		close_fd(&r->call);
		r->call = fd;
	} else {
		close_fd(&r->err);
		r->err = fd;
	}
	if (fd >= 0)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); /* a full pipe must not block us */
	pthread_mutex_unlock(&v->call_lock);
	return 0;
}

static int h_get_inflight(struct vop_vhu *v, const struct vop_vhu_msg *m, const char **why)
{
	struct {
		uint64_t mmap_size, mmap_offset;
		uint16_t num_queues, queue_size;
		uint32_t pad;
	} out;
	uint64_t size;
	int fd, rc;
	void *p;

	if (!((v->pfeatures >> VOP_VHU_PF_INFLIGHT_SHMFD) & 1)) {
		*why = "GET_INFLIGHT_FD without PROTOCOL_F_INFLIGHT_SHMFD";
		return -EOPNOTSUPP;
	}
	if (m->inflight.num_queues > v->nrings) {
		*why = "inflight: more queues than the device has";
		return -EINVAL;
	}
	size = inflight_size(m->inflight.num_queues, m->inflight.queue_size);
	fd = memfd_create("vop-vhost-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)) {
		rc = -errno;
		close(fd);
		return rc;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		close(fd);
		return rc;
	}
	dev_stop(v, true);
	inflight_unmap(v);
	v->inflight_fd = fd;
	v->inflight_map = p;
	v->inflight_len = size;
	v->inflight = p;
	v->inflight_nq = m->inflight.num_queues;
	v->inflight_qs = m->inflight.queue_size;
	memset(&out, 0, sizeof(out));
	out.mmap_size = size;
	out.num_queues = m->inflight.num_queues;
	out.queue_size = m->inflight.queue_size;
	return reply(v, m->request, &out, 24, fd);
}

static int h_set_inflight(struct vop_vhu *v, const struct vop_vhu_msg *m, int *fds, const char **why)
{
	uint64_t size = inflight_size(m->inflight.num_queues, m->inflight.queue_size);
	uint64_t end, align, skip;
	void *p;
	int rc;

	if (!((v->pfeatures >> VOP_VHU_PF_INFLIGHT_SHMFD) & 1)) {
		*why = "SET_INFLIGHT_FD without PROTOCOL_F_INFLIGHT_SHMFD";
		return -EOPNOTSUPP;
	}
	if (m->inflight.num_queues > v->nrings) {
		*why = "inflight: more queues than the device has";
		return -EINVAL;
	}
	if (m->inflight.mmap_size != size) {
		*why = "inflight: mmap size is not what GET_INFLIGHT_FD gave for this geometry";
		return -EINVAL;
	}
	end = m->inflight.mmap_offset + size; /* the parser checked the sum */
	rc = check_map_fd(v, fds[0], end, &align, why);
	if (rc)
		return rc;
	if (end > SIZE_MAX)
		return -E2BIG;
	skip = m->inflight.mmap_offset & (align - 1); /* the area only, as mem_map */
	p = mmap(NULL, (size_t)(skip + size), PROT_READ | PROT_WRITE, MAP_SHARED, fds[0],
		 (off_t)(m->inflight.mmap_offset - skip));
	if (p == MAP_FAILED) {
		*why = "inflight: mmap failed";
		return -errno;
	}
	dev_stop(v, true);
	inflight_unmap(v);
	v->inflight_fd = fds[0];
	fds[0] = -1;
	v->inflight_map = p;
	v->inflight_len = (size_t)(skip + size);
	v->inflight = (uint8_t *)p + skip;
	v->inflight_nq = m->inflight.num_queues;
	v->inflight_qs = m->inflight.queue_size;
	return 0;
}

static int h_get_config(struct vop_vhu *v, const struct vop_vhu_msg *m, const char **why)
{
	uint8_t out[VOP_VHU_CONFIG_HDR + VOP_VHU_CONFIG_MAX];
	uint32_t hdr[3] = { m->config.offset, m->config.size, m->config.flags };

	if (!((v->pfeatures >> VOP_VHU_PF_CONFIG) & 1)) {
		*why = "GET_CONFIG without PROTOCOL_F_CONFIG";
		return -EOPNOTSUPP;
	}
	memcpy(out, hdr, sizeof(hdr));
	memset(out + VOP_VHU_CONFIG_HDR, 0, m->config.size);
	pthread_mutex_lock(&v->cfg_lock);
	if (m->config.offset < v->config_len) {
		uint32_t n = v->config_len - m->config.offset;

		memcpy(out + VOP_VHU_CONFIG_HDR, v->config + m->config.offset, n < m->config.size ? n : m->config.size);
	}
	pthread_mutex_unlock(&v->cfg_lock);
	return reply(v, m->request, out, VOP_VHU_CONFIG_HDR + m->config.size, -1);
}

/* Disable every ring and forget its set-up (RESET_DEVICE, RESET_OWNER). */
static void device_reset(struct vop_vhu *v)
{
	dev_stop(v, true);
	rings_reset(v);
}

/*
 * One parsed message. Returns 0, 1 (refused without ending the
 * connection: the front-end gets a failure reply) or -errno with *why
 * (the connection ends). Handlers that reply themselves do it here.
 */
static int handle(struct vop_vhu *v, const struct vop_vhu_msg *m, int *fds, const char **why)
{
	struct vhu_ring *r;
	int rc;

	switch (m->request) {
	case VOP_VHU_GET_FEATURES:
		return reply_u64(v, m->request, v->offered);
	case VOP_VHU_SET_FEATURES:
		rc = h_set_features(v, m, why);
		return rc ? rc : dev_start(v, why);
	case VOP_VHU_SET_OWNER:
		return 0;
	case VOP_VHU_RESET_OWNER: /* deprecated: "disable all rings" */
	case VOP_VHU_RESET_DEVICE:
		if (m->request == VOP_VHU_RESET_DEVICE && !((v->pfeatures >> VOP_VHU_PF_RESET_DEVICE) & 1)) {
			*why = "RESET_DEVICE without PROTOCOL_F_RESET_DEVICE";
			return -EOPNOTSUPP;
		}
		device_reset(v);
		return 0;
	case VOP_VHU_SET_MEM_TABLE:
		rc = h_set_mem_table(v, m, fds, why);
		return rc ? rc : dev_start(v, why);
	case VOP_VHU_GET_PROTOCOL_FEATURES:
		return reply_u64(v, m->request, v->offered_pf);
	case VOP_VHU_SET_PROTOCOL_FEATURES:
		if (m->u64 & ~v->offered_pf) {
			*why = "protocol features that were not offered";
			return -EINVAL;
		}
		v->pfeatures = m->u64;
		return 0;
	case VOP_VHU_GET_QUEUE_NUM:
		/* net: queue pairs (one group each); blk: queues */
		return reply_u64(v, m->request, v->ngroups);
	case VOP_VHU_SET_VRING_NUM:
		r = &v->ring[m->state.index];
		grp_stop(v, m->state.index / v->per, true);
		r->num = m->state.num;
		if (r->addr_set && v->mem.n) {
			void *d, *a, *u;

			if (ring_xlate(&v->mem, r, &d, &a, &u)) {
				*why = "ring of this size runs past its memory region";
				return -EFAULT;
			}
		}
		return 0;
	case VOP_VHU_SET_VRING_ADDR:
		rc = h_set_vring_addr(v, m, why);
		return rc ? rc : dev_start(v, why);
	case VOP_VHU_SET_VRING_BASE:
		grp_stop(v, m->state.index / v->per, true);
		v->ring[m->state.index].base = (uint16_t)m->state.num;
		return 0;
	case VOP_VHU_GET_VRING_BASE: {
		uint32_t st[2];

		r = &v->ring[m->state.index];
		grp_stop(v, m->state.index / v->per, true); /* its pair only */
		/* the ring is stopped until its next SET_VRING_KICK */
		lock_mu(v);
		r->kick_set = false;
		close_fd(&r->kick);
		r->kick_gen++;
		pthread_mutex_unlock(&v->mu);
		st[0] = m->state.index;
		st[1] = r->base;
		rc = reply(v, m->request, st, sizeof(st), -1);
		return rc ? rc : dev_start(v, why);
	}
	case VOP_VHU_SET_VRING_KICK:
		h_set_vring_fd(v, m, fds);
		return dev_start(v, why);
	case VOP_VHU_SET_VRING_CALL:
	case VOP_VHU_SET_VRING_ERR:
		return h_set_vring_fd(v, m, fds);
	case VOP_VHU_SET_VRING_ENABLE:
		/* we always offer PROTOCOL_FEATURES: accepted whether or not SET_FEATURES repeated it */
		v->ring[m->state.index].enable_set = true;
		v->ring[m->state.index].enabled = m->state.num != 0;
		if (!m->state.num)
			grp_stop(v, m->state.index / v->per, true); /* its pair only */
		return dev_start(v, why);
	case VOP_VHU_GET_CONFIG:
		return h_get_config(v, m, why);
	case VOP_VHU_SET_CONFIG:
		if (!((v->pfeatures >> VOP_VHU_PF_CONFIG) & 1)) {
			*why = "SET_CONFIG without PROTOCOL_F_CONFIG";
			return -EOPNOTSUPP;
		}
		return 1; /* the config space is read-only: refused, the connection stays */
	case VOP_VHU_GET_INFLIGHT_FD:
		return h_get_inflight(v, m, why);
	case VOP_VHU_SET_INFLIGHT_FD:
		return h_set_inflight(v, m, fds, why);
	default:
		*why = "request not supported";
		return -EOPNOTSUPP;
	}
}

/* Requests whose answer is their own reply (no REPLY_ACK on top). */
static bool has_reply(uint32_t request)
{
	return request == VOP_VHU_GET_FEATURES || request == VOP_VHU_GET_PROTOCOL_FEATURES ||
	       request == VOP_VHU_GET_QUEUE_NUM || request == VOP_VHU_GET_VRING_BASE ||
	       request == VOP_VHU_GET_CONFIG || request == VOP_VHU_GET_INFLIGHT_FD;
}

/* ------------------------------------------------------------------ */
/* Connections                                                          */
/* ------------------------------------------------------------------ */

/*
 * Read exactly len bytes into buf, collecting any fds (at most
 * VOP_VHU_MAX_FDS in all; more is -EBADMSG). 0, -ECONNRESET (EOF),
 * -ECANCELED (stopping), -errno.
 */
static int read_full(struct vop_vhu *v, uint8_t *buf, size_t len, int *fds, unsigned *nfds, bool first)
{
	size_t got = 0;
	int rc = 0;

	while (got < len) {
		struct pollfd p[3] = { { v->cfd, POLLIN, 0 }, { v->stopfd, POLLIN, 0 }, { v->lfd, POLLIN, 0 } };
		union {
			char b[CMSG_SPACE(sizeof(int) * VOP_VHU_MAX_FDS)];
			struct cmsghdr align;
		} u;
		struct iovec iov = { buf + got, len - got };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b, .msg_controllen = sizeof(u.b) };
		struct cmsghdr *c;
		ssize_t n;
		nfds_t np = (first && got == 0 && v->lfd >= 0) ? 3 : 2;

		if (poll(p, np, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents)
			return -ECANCELED;
		if (np == 3 && (p[2].revents & POLLIN)) {
			/* another front-end while this one is served: refused at once */
			int extra = accept4(v->lfd, NULL, NULL, SOCK_CLOEXEC);

			if (extra >= 0)
				close(extra);
			if (!(p[0].revents))
				continue;
		}
		if (!p[0].revents)
			continue;
		n = recvmsg(v->cfd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
			unsigned k, cnt;

			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
				continue;
			cnt = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			for (k = 0; k < cnt; k++) {
				int fd;

				memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
				if (*nfds < VOP_VHU_MAX_FDS)
					fds[(*nfds)++] = fd;
				else {
					close(fd);
					rc = -EBADMSG;
				}
			}
		}
		if (mh.msg_flags & MSG_CTRUNC)
			rc = -EBADMSG; /* more fds than any message may carry: the kernel dropped the rest */
		if (n == 0)
			return got == 0 && first ? -ECONNRESET : -EPIPE; /* EOF; mid-message: truncated */
		got += (size_t)n;
	}
	return rc;
}

static void close_fds(int *fds, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static void protocol_error(struct vop_vhu *v, uint32_t request, int err, const char *why)
{
	struct vop_vhu_event ev = { .type = VOP_VHU_EV_PROTOCOL_ERROR, .error = err, .request = request, .why = why };

	vop_private_add_u64(&v->n_protoerr, 1);
	atomic_store_explicit(&v->last_request, request, memory_order_relaxed);
	atomic_store_explicit(&v->last_error, err, memory_order_relaxed);
	atomic_store_explicit(&v->last_why, why, memory_order_relaxed);
	emit(v, &ev);
}

/* Serve one connection until it ends. Returns the reason (-errno; -ECONNRESET on EOF). */
static int session(struct vop_vhu *v)
{
	uint8_t buf[VOP_VHU_HDR_SIZE + VOP_VHU_MAX_PAYLOAD];
	struct vop_vhu_msg *m = calloc(1, sizeof(*m));
	int rc = 0;

	if (!m)
		return -ENOMEM;
	for (;;) {
		int fds[VOP_VHU_MAX_FDS];
		unsigned nfds = 0;
		uint32_t size, request;
		const char *why = NULL;

		rc = read_full(v, buf, VOP_VHU_HDR_SIZE, fds, &nfds, true);
		if (rc == -EPIPE) { /* EOF after part of a header */
			memcpy(&request, buf, 4);
			protocol_error(v, request, rc, "truncated header (the connection closed mid-header)");
			close_fds(fds, nfds);
			break;
		}
		if (rc && rc != -EBADMSG) {
			close_fds(fds, nfds);
			break;
		}
		memcpy(&request, buf, 4);
		memcpy(&size, buf + 8, 4);
		if (size > VOP_VHU_MAX_PAYLOAD) {
			/* never read an absurd payload: the connection ends here */
			protocol_error(v, request, -EBADMSG, "payload size (at most 268 bytes)");
			close_fds(fds, nfds);
			rc = -EBADMSG;
			break;
		}
		{
			int rc2 = read_full(v, buf + VOP_VHU_HDR_SIZE, size, fds, &nfds, false);

			if (rc2 == -EPIPE) {
				protocol_error(v, request, rc2, "truncated message (the connection closed mid-message)");
				close_fds(fds, nfds);
				rc = rc2;
				break;
			}
			if (rc2 && rc2 != -EBADMSG) {
				close_fds(fds, nfds);
				rc = rc2;
				break;
			}
			if (rc2)
				rc = rc2;
		}
		if (rc == -EBADMSG) {
			protocol_error(v, request, rc, "fd count (more than 8 fds)");
			close_fds(fds, nfds);
			break;
		}
		memcpy(&size, buf + 8, 4);
		rc = vop_vhu_msg_parse(buf, VOP_VHU_HDR_SIZE + size, nfds, &v->lim, m, &why);
		vop_private_add_u64(&v->n_messages, 1);
		if (rc == 0)
			rc = handle(v, m, fds, &why);
		else
			memcpy(&m->request, buf, 4);
		close_fds(fds, nfds); /* what the handlers did not take */
		if (rc < 0) {
			protocol_error(v, m->request, rc, why ? why : "rejected");
			if (!has_reply(m->request))
				ack(v, m, false);
			break;
		}
		if (!has_reply(m->request) && ack(v, m, rc == 0) < 0) {
			rc = -EPIPE;
			break;
		}
		rc = 0;
	}
	free(m);
	return rc;
}

/* End of a connection: the device resets (backend stopped before the memory goes). */
static void end_session(struct vop_vhu *v, int why)
{
	dev_stop(v, false);
	lock_mu(v);
	/* mu: the worker reads nothing below while stopped, but host calls must see it consistent */
	mem_unmap(&v->mem);
	inflight_unmap(v);
	v->features = 0;
	v->pfeatures = 0;
	v->features_set = false;
	{
		unsigned g;

		for (g = 0; g < v->ngroups; g++)
			v->grp[g].be_failed = false;
	}
	pthread_mutex_unlock(&v->mu);
	rings_reset(v);
	atomic_store_explicit(&v->mem_bytes, 0, memory_order_relaxed);
	atomic_store_explicit(&v->mem_regions, 0, memory_order_relaxed);
	close_fd(&v->cfd);
	atomic_store_explicit(&v->connected, false, memory_order_relaxed);
	vop_private_add_u64(&v->n_disconnects, 1);
	emit_type(v, VOP_VHU_EV_DISCONNECTED, why == -ECONNRESET ? 0 : why);
}

/* Wait up to ms for the stop fd; true when stopping. */
static bool wait_stop(struct vop_vhu *v, int ms)
{
	struct pollfd p = { v->stopfd, POLLIN, 0 };

	if (atomic_load_explicit(&v->stop, memory_order_acquire))
		return true;
	return poll(&p, 1, ms) > 0 || atomic_load_explicit(&v->stop, memory_order_acquire);
}

/* Next connection: accept one (server) or connect (client, retrying). -ECANCELED when stopping. */
static int next_connection(struct vop_vhu *v)
{
	for (;;) {
		if (atomic_load_explicit(&v->stop, memory_order_acquire))
			return -ECANCELED;
		if (v->cfg.server) {
			struct pollfd p[2] = { { v->lfd, POLLIN, 0 }, { v->stopfd, POLLIN, 0 } };
			int fd;

			if (poll(p, 2, -1) < 0 && errno != EINTR)
				return -errno;
			if (p[1].revents)
				return -ECANCELED;
			if (!p[0].revents)
				continue;
			fd = accept4(v->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				return fd;
			if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
				wait_stop(v, 100); /* out of resources: do not spin */
		} else {
			struct sockaddr_un a;
			socklen_t al;
			int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

			if (fd >= 0 && vop_path_sockaddr(v->dirfd, v->name, &a, &al) == 0 &&
			    connect(fd, (struct sockaddr *)&a, al) == 0)
				return fd;
			if (fd >= 0)
				close(fd);
			if (wait_stop(v, (int)v->cfg.reconnect_ms))
				return -ECANCELED;
		}
	}
}

static void *ctl_main(void *arg)
{
	struct vop_vhu *v = arg;

	for (;;) {
		int fd = next_connection(v), rc;

		if (fd < 0)
			break;
		v->cfd = fd;
		atomic_store_explicit(&v->connected, true, memory_order_relaxed);
		{
			struct vop_vhu_event ev = { .type = VOP_VHU_EV_CONNECTED };

			ev.count = vop_private_add_u64(&v->n_connections, 1);
			emit(v, &ev);
		}
		rc = session(v);
		end_session(v, rc);
		if (rc == -ECANCELED)
			break;
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Lifecycle                                                            */
/* ------------------------------------------------------------------ */

static int listen_socket(struct vop_vhu *v)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), rc;

	if (fd < 0)
		return -errno;
	rc = vop_path_bind_unix(fd, v->root[0] ? v->root : NULL, v->path,
				v->cfg.socket_mode ? v->cfg.socket_mode : 0600, &v->sock);
	if (rc) {
		close(fd);
		return rc;
	}
	/* group before listen: nobody connects before the permissions are right */
	if (v->cfg.socket_gid >= 0 &&
	    fchownat(v->sock.dirfd, v->sock.name, (uid_t)-1, (gid_t)v->cfg.socket_gid, AT_SYMLINK_NOFOLLOW)) {
		rc = -errno;
		vop_path_unlink_socket(&v->sock);
		close(fd);
		return rc;
	}
	if (listen(fd, 4)) {
		rc = -errno;
		vop_path_unlink_socket(&v->sock);
		close(fd);
		return rc;
	}
	v->lfd = fd;
	return 0;
}

int vop_vhu_create(const struct vop_vhu_config *cfg, struct vop_vhu **out)
{
	struct vop_vhu *v;
	int rc;

	*out = NULL;
	if (!cfg || !cfg->path || cfg->num_queues == 0 ||
	    (unsigned)cfg->num_queues * (cfg->groups ? cfg->groups : 1u) > VOP_VHU_MAX_QUEUES ||
	    strlen(cfg->path) >= sizeof(((struct sockaddr_un *)0)->sun_path) ||
	    (cfg->root && strlen(cfg->root) >= VOP_PATH_MAX))
		return -EINVAL;
	if (cfg->max_queue_size && (cfg->max_queue_size & (cfg->max_queue_size - 1)))
		return -EINVAL;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->cfg = *cfg;
	snprintf(v->path, sizeof(v->path), "%s", cfg->path);
	if (cfg->root)
		snprintf(v->root, sizeof(v->root), "%s", cfg->root);
	v->cfg.path = v->path;
	v->cfg.root = v->root[0] ? v->root : NULL;
	if (!v->cfg.reconnect_ms)
		v->cfg.reconnect_ms = 1000;
	if (!v->cfg.max_queue_size)
		v->cfg.max_queue_size = VOP_QUEUE_MAX_SIZE;
	if (!v->cfg.max_mem_bytes)
		v->cfg.max_mem_bytes = VHU_DEFAULT_MAX_MEM;
	if (!v->cfg.drain_ms)
		v->cfg.drain_ms = 5000;
	v->per = cfg->num_queues;
	v->ngroups = cfg->groups ? cfg->groups : 1u;
	v->nrings = v->per * v->ngroups;
	v->lim.max_queues = (uint16_t)v->nrings;
	v->lim.max_queue_size = v->cfg.max_queue_size;
	v->offered = (cfg->features & ~((1ull << VOP_F_INFLIGHT) | (1ull << VOP_VHU_F_RING_PACKED) |
					(1ull << VOP_VHU_F_IOMMU_PLATFORM) | (1ull << VOP_VHU_F_LOG_ALL))) |
		     (1ull << VOP_F_VERSION_1) | (1ull << VOP_VHU_F_PROTOCOL_FEATURES);
	v->offered_pf = (1ull << VOP_VHU_PF_MQ) | (1ull << VOP_VHU_PF_REPLY_ACK) | (1ull << VOP_VHU_PF_RESET_DEVICE) |
			(cfg->config_space ? 1ull << VOP_VHU_PF_CONFIG : 0) |
			(cfg->inflight ? 1ull << VOP_VHU_PF_INFLIGHT_SHMFD : 0);
	v->lfd = v->dirfd = v->cfd = v->stopfd = v->wakefd = v->epfd = v->inflight_fd = -1;
	vop_path_sock_init(&v->sock);
	vop_region_table_init(&v->mem.gpa);
	vop_region_table_init(&v->mem.uva);
	{
		unsigned q;

		for (q = 0; q < VOP_VHU_MAX_QUEUES; q++)
			v->ring[q].kick = v->ring[q].call = v->ring[q].err = -1;
	}
	pthread_mutex_init(&v->mu, NULL);
	pthread_mutex_init(&v->call_lock, NULL);
	pthread_mutex_init(&v->cfg_lock, NULL);
	atomic_init(&v->stop, 0);
	v->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	v->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	v->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (v->stopfd < 0 || v->wakefd < 0 || v->epfd < 0) {
		rc = -errno;
		goto fail;
	}
	{
		struct epoll_event ev = { .events = EPOLLIN, .data = { .u64 = VHU_EP_WAKE } };

		if (epoll_ctl(v->epfd, EPOLL_CTL_ADD, v->wakefd, &ev)) {
			rc = -errno;
			goto fail;
		}
	}
	if (v->cfg.server) {
		rc = listen_socket(v);
		if (rc)
			goto fail;
	} else {
		const char *name;
		struct sockaddr_un a;
		socklen_t al;

		rc = vop_path_open_dir(v->cfg.root, v->path, &name);
		if (rc < 0)
			goto fail;
		v->dirfd = rc;
		snprintf(v->name, sizeof(v->name), "%s", name);
		rc = vop_path_sockaddr(v->dirfd, v->name, &a, &al);
		if (rc)
			goto fail;
	}
	*out = v;
	return 0;
fail:
	vop_vhu_destroy(v);
	return rc;
}

int vop_vhu_start(struct vop_vhu *v, const struct vop_devback_ops *ops, void *be)
{
	return vop_vhu_start_groups(v, ops, &be, 1);
}

int vop_vhu_start_groups(struct vop_vhu *v, const struct vop_devback_ops *ops, void *const *bes, unsigned n)
{
	unsigned g;
	int rc;

	if (v->threads)
		return -EALREADY;
	if (!ops || !bes || n != v->ngroups || !ops->start || !ops->stop || !ops->poll || !ops->prepare_sleep ||
	    !ops->queue)
		return -EINVAL;
	for (g = 0; g < n; g++)
		if (!bes[g])
			return -EINVAL;
	v->ops = ops;
	for (g = 0; g < n; g++)
		v->grp[g].be = bes[g];
	rc = -pthread_create(&v->wrk, NULL, worker_main, v);
	if (rc)
		return rc;
	rc = -pthread_create(&v->ctl, NULL, ctl_main, v);
	if (rc) {
		atomic_store_explicit(&v->stop, 1, memory_order_release);
		efd_signal(v->wakefd);
		pthread_join(v->wrk, NULL);
		return rc;
	}
	v->threads = true;
	return 0;
}

void vop_vhu_stop(struct vop_vhu *v)
{
	if (!v)
		return;
	if (v->threads) {
		atomic_store_explicit(&v->stop, 1, memory_order_release);
		efd_signal(v->stopfd);
		pthread_join(v->ctl, NULL); /* ends the session: backend stopped, memory unmapped */
		efd_signal(v->wakefd);
		pthread_join(v->wrk, NULL);
		v->threads = false;
	}
	mem_unmap(&v->mem);
	inflight_unmap(v);
	rings_reset(v);
	close_fd(&v->cfd);
	close_fd(&v->lfd);
	vop_path_unlink_socket(&v->sock);
	close_fd(&v->dirfd);
}

void vop_vhu_destroy(struct vop_vhu *v)
{
	if (!v)
		return;
	vop_vhu_stop(v);
	close_fd(&v->stopfd);
	close_fd(&v->wakefd);
	close_fd(&v->epfd);
	pthread_mutex_destroy(&v->mu);
	pthread_mutex_destroy(&v->call_lock);
	pthread_mutex_destroy(&v->cfg_lock);
	free(v);
}

void vop_vhu_status(struct vop_vhu *v, struct vop_vhu_status *out)
{
	memset(out, 0, sizeof(*out));
	lock_mu(v);
	out->running = v->running;
	{
		unsigned g;

		for (g = 0; g < v->ngroups; g++)
			out->failed |= v->grp[g].be_failed;
	}
	out->features = v->features;
	out->protocol_features = v->pfeatures;
	pthread_mutex_unlock(&v->mu);
	out->connected = atomic_load_explicit(&v->connected, memory_order_relaxed);
	out->connections = vop_private_load_u64(&v->n_connections);
	out->disconnects = vop_private_load_u64(&v->n_disconnects);
	out->protocol_errors = vop_private_load_u64(&v->n_protoerr);
	out->messages = vop_private_load_u64(&v->n_messages);
	out->starts = vop_private_load_u64(&v->n_starts);
	out->mem_bytes = atomic_load_explicit(&v->mem_bytes, memory_order_relaxed);
	out->regions = atomic_load_explicit(&v->mem_regions, memory_order_relaxed);
	out->last_request = atomic_load_explicit(&v->last_request, memory_order_relaxed);
	out->last_error = atomic_load_explicit(&v->last_error, memory_order_relaxed);
	out->last_why = atomic_load_explicit(&v->last_why, memory_order_relaxed);
}

int vop_vhu_queue_stats(struct vop_vhu *v, unsigned q, struct vop_vq_stats *out)
{
	struct vop_vq *vq;

	if (q >= v->nrings || !v->ops)
		return -EINVAL;
	lock_mu(v);
	vq = ring_vq(v, q);
	if (vq)
		vop_vq_stats_read(vq, out);
	pthread_mutex_unlock(&v->mu);
	return vq ? 0 : -EINVAL;
}
