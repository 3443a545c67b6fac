/* SPDX-License-Identifier: Apache-2.0 */
/*
 * shm transport: one file-backed window mapped MAP_SHARED in both
 * processes. Everything a PCI BAR would not give stays in this file
 * (architecture rule 9): futexes on window memory, the OFD side claims,
 * atomic read-modify-write on private doorbell counters.
 *
 * Doorbells (the protocol of core/doorbell.h, edges D1/D2 in
 * docs/memory-ordering.md). Each side writes only its own doorbell line:
 *   ringer:  kick = fresh value (release); fence; if (peer.waiting)
 *            FUTEX_WAKE(&me.kick): the peer sleeps on our kick word
 *   self:    wake_word += 1 (private); if (me.waiting) FUTEX_WAKE_PRIVATE
 *   waiter:  snap = (peer.kick, wake_word); ...re-check rings...;
 *            waiting = 1; fence; if unchanged:
 *            futex_waitv({&peer.kick, snap}, {&wake_word, snap}); waiting = 0
 * The waiter sleeps on two words at once (futex_waitv, Linux 5.16): the
 * peer's kick word (shared: the futex key is the file page) and a private
 * word that this process's other threads bump to wake their own worker, so
 * no window word is written by both sides. On an older kernel (ENOSYS) a
 * self-wake bumps the peer's kick word instead (an RMW on a word the peer
 * also writes), the waiter sleeps on that word alone: the one exception to
 * the single-writer rule, possible only on shm and only there.
 *
 * Reservation: the creator reserves the whole file (fallocate) before
 * mapping it, so a window that does not fit its tmpfs is -ENOSPC at create
 * instead of SIGBUS at first touch. The attacher does not reserve again (a
 * creator that shrank or never reserved its file can make its own peer
 * fault: an shm peer runs as the same user and can always kill its
 * partner; see docs/security.md).
 *
 * Population: a first touch of a page costs ~11 us here (and allocating a
 * tmpfs page about 1 ms per MiB), so the data path should not fault, but
 * populating a 64 MiB window before the link comes up would cost tens of
 * milliseconds of bring-up, and resident memory for pools an idle device
 * never touches. The first POP_SYNC_BYTES (header, side blocks, device
 * table) are populated before map returns;
 * further ranges only on request (prefault: the link asks for the rings and
 * pools of the devices it serves), by a populate thread that works through
 * them in POP_CHUNK steps and is stopped and joined before unmap.
 *
 * Side claims: each side holder takes an open-file-description lock on byte
 * <side> of the window file (F_OFD_SETLK). The kernel drops it when the
 * holder dies, so a restarted agent knows at once whether the side is free
 * instead of watching a heartbeat for 4 periods. Only for files this
 * process opened itself: a passed fd may share its description with the
 * live holder.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "doorbell.h"
#include "vop/layout.h"
#include "vop/xport.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define POP_SYNC_BYTES (32ull << 10) /* header, side blocks, device table (layout.h) */
#define POP_CHUNK (2ull << 20)
#define POP_MAX_RANGES 64

/* The shm transport: the public part first, then the populate thread. */
struct shm_xport {
	struct vop_xport x;
	pthread_mutex_t pop_lock;  /* protects everything below */
	pthread_cond_t pop_cond;   /* work queued or stop */
	pthread_t pop;             /* populate thread, valid while pop_running */
	bool pop_running;
	bool pop_stop;
	uint64_t pop_off[POP_MAX_RANGES], pop_end[POP_MAX_RANGES]; /* queued ranges */
	unsigned pop_n;
	bool own_ofd;              /* fd opened by us (not passed): claim() can decide */
	/* doorbells (after bind) */
	struct vop_win_side *me;   /* our side block */
	struct vop_win_side *peer; /* the peer's side block */
	_Atomic uint32_t kick_seq; /* fresh values for our kick word (private) */
	_Atomic uint32_t wake_word; /* private futex word: our threads wake our worker */
};

/* futex_waitv (Linux 5.16); 0 = untested, 1 = works, -1 = ENOSYS (fallback). */
static _Atomic int waitv_state;

/* Fault [off, end) of the mapping in writable, without touching the data. */
static void populate(struct vop_xport *x, uint64_t off, uint64_t end)
{
	if (end > off && madvise(x->base + off, end - off, MADV_POPULATE_WRITE) != 0) {
		/* Before Linux 5.14 (EINVAL): the pages fault in on first use instead. */
	}
}

/* Populate thread: one POP_CHUNK of the oldest queued range at a time. */
static void *populate_main(void *arg)
{
	struct shm_xport *s = arg;

	pthread_mutex_lock(&s->pop_lock);
	for (;;) {
		uint64_t off, end;

		while (!s->pop_stop && s->pop_n == 0)
			pthread_cond_wait(&s->pop_cond, &s->pop_lock);
		if (s->pop_stop)
			break;
		off = s->pop_off[0];
		end = off + POP_CHUNK < s->pop_end[0] ? off + POP_CHUNK : s->pop_end[0];
		s->pop_off[0] = end;
		if (end >= s->pop_end[0]) {
			memmove(s->pop_off, s->pop_off + 1, (s->pop_n - 1) * sizeof(uint64_t));
			memmove(s->pop_end, s->pop_end + 1, (s->pop_n - 1) * sizeof(uint64_t));
			s->pop_n--;
		}
		pthread_mutex_unlock(&s->pop_lock);
		populate(&s->x, off, end);
		pthread_mutex_lock(&s->pop_lock);
	}
	pthread_mutex_unlock(&s->pop_lock);
	return NULL;
}

static void shm_prefault(struct vop_xport *x, uint64_t off, uint64_t len)
{
	struct shm_xport *s = (struct shm_xport *)x;
	uint64_t end;

	if (off >= x->size || len == 0)
		return;
	end = len > x->size - off ? x->size : off + len;
	if (end <= POP_SYNC_BYTES)
		return; /* populated at map time */
	if (off < POP_SYNC_BYTES)
		off = POP_SYNC_BYTES;
	pthread_mutex_lock(&s->pop_lock);
	if (!s->pop_running && !s->pop_stop)
		s->pop_running = pthread_create(&s->pop, NULL, populate_main, s) == 0;
	if (s->pop_running && s->pop_n < POP_MAX_RANGES) {
		s->pop_off[s->pop_n] = off;
		s->pop_end[s->pop_n] = end;
		s->pop_n++;
		pthread_cond_signal(&s->pop_cond);
		off = end; /* queued */
	}
	pthread_mutex_unlock(&s->pop_lock);
	if (off < end)
		populate(x, off, end); /* no thread or queue full: do it now */
}

static int shm_claim(struct vop_xport *x, unsigned side)
{
	struct flock fl;

	if (!((struct shm_xport *)x)->own_ofd)
		return -EOPNOTSUPP;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)(side & 1u);
	fl.l_len = 1;
	if (fcntl(x->fd, F_OFD_SETLK, &fl) == 0)
		return 0;
	return errno == EAGAIN || errno == EACCES ? -EBUSY : -EOPNOTSUPP;
}

static int shm_map(struct vop_xport *x)
{
	void *p = mmap(NULL, x->size, PROT_READ | PROT_WRITE, MAP_SHARED, x->fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	x->base = p;
	populate(x, 0, x->size < POP_SYNC_BYTES ? x->size : POP_SYNC_BYTES);
	return 0;
}

static void shm_unmap(struct vop_xport *x)
{
	struct shm_xport *s = (struct shm_xport *)x;
	bool running;

	pthread_mutex_lock(&s->pop_lock);
	s->pop_stop = true;
	running = s->pop_running;
	pthread_cond_signal(&s->pop_cond);
	pthread_mutex_unlock(&s->pop_lock);
	if (running)
		pthread_join(s->pop, NULL); /* at most one chunk in progress */
	s->pop_running = false;
	if (x->base)
		munmap(x->base, x->size);
	x->base = NULL;
}

static long futex(void *uaddr, int op, uint32_t val, const struct timespec *ts)
{
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

static int shm_bind(struct vop_xport *x, unsigned side)
{
	struct shm_xport *s = (struct shm_xport *)x;

	if (side > 1 || !x->base)
		return -EINVAL;
	s->me = vop_doorbell_side(x->base, side);
	s->peer = vop_doorbell_side(x->base, side ^ 1u);
	/* Fresh values continue from what a previous holder of the side stored. */
	atomic_store_explicit(&s->kick_seq, vop_read_once_u32(&s->me->kick), memory_order_relaxed);
	vop_doorbell_disarm(s->me);
	return 0;
}

static int shm_kick(struct vop_xport *x, unsigned vector)
{
	struct shm_xport *s = (struct shm_xport *)x;
	uint32_t fresh = atomic_fetch_add_explicit(&s->kick_seq, 1, memory_order_relaxed) + 1;

	(void)vector; /* one doorbell per side */
	if (!s->me)
		return -ENOTCONN;
	if (!vop_doorbell_ring(s->me, s->peer, fresh)) /* D1 */
		return 0;
	/* The peer sleeps on our kick word (shared futex: the key is the file page). */
	if (futex(&s->me->kick, FUTEX_WAKE, 1, NULL) < 0)
		return -errno;
	return 1;
}

static int shm_wake(struct vop_xport *x)
{
	struct shm_xport *s = (struct shm_xport *)x;

	if (!s->me)
		return -ENOTCONN;
	if (atomic_load_explicit(&waitv_state, memory_order_relaxed) < 0) {
		/* Fallback (no futex_waitv): the worker sleeps on the peer's kick word alone. */
		atomic_fetch_add_explicit((_Atomic uint32_t *)&s->peer->kick, 1, memory_order_seq_cst);
		if (!vop_read_once_u32(&s->me->waiting))
			return 0;
		return futex(&s->peer->kick, FUTEX_WAKE, 1, NULL) < 0 ? -errno : 1;
	}
	/* seq_cst RMW then the load of waiting: pairs with D2 (the worker's fence). */
	atomic_fetch_add_explicit(&s->wake_word, 1, memory_order_seq_cst);
	if (!atomic_load_explicit((_Atomic uint32_t *)&s->me->waiting, memory_order_seq_cst))
		return 0;
	if (futex(&s->wake_word, FUTEX_WAKE_PRIVATE, 1, NULL) < 0)
		return -errno;
	return 1;
}

static uint64_t shm_snapshot(struct vop_xport *x)
{
	struct shm_xport *s = (struct shm_xport *)x;
	uint32_t wake = atomic_load_explicit(&s->wake_word, memory_order_acquire);

	return (uint64_t)wake << 32 | vop_doorbell_snapshot(s->peer);
}

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#ifndef FUTEX_32
#define FUTEX_32 2
struct futex_waitv {
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t __reserved;
};
#endif

/* Sleep on both words until either differs from snap or abs (CLOCK_MONOTONIC) passes. */
static int sleep_two(struct shm_xport *s, uint64_t snap, const struct timespec *abs)
{
	struct futex_waitv w[2];

	memset(w, 0, sizeof(w));
	w[0].uaddr = (uintptr_t)&s->peer->kick;
	w[0].val = (uint32_t)snap;
	w[0].flags = FUTEX_32; /* shared: the peer's word in the file */
	w[1].uaddr = (uintptr_t)&s->wake_word;
	w[1].val = (uint32_t)(snap >> 32);
	w[1].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
	if (syscall(SYS_futex_waitv, w, 2, 0, abs, CLOCK_MONOTONIC) >= 0)
		return 0;
	return -errno;
}

static int shm_wait(struct vop_xport *x, uint64_t snap, uint64_t timeout_ns)
{
	struct shm_xport *s = (struct shm_xport *)x;
	struct timespec ts;
	int rc = 0, st;

	if (!s->me)
		return -ENOTCONN;
	/* D2 inside vop_doorbell_arm: waiting, fence, the peer's kick again. */
	if (vop_doorbell_arm(s->me, s->peer, (uint32_t)snap) ||
	    atomic_load_explicit(&s->wake_word, memory_order_seq_cst) != (uint32_t)(snap >> 32)) {
		vop_doorbell_disarm(s->me);
		return 0;
	}
	st = atomic_load_explicit(&waitv_state, memory_order_relaxed);
	if (st >= 0) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)(timeout_ns / 1000000000u);
		ts.tv_nsec += (long)(timeout_ns % 1000000000u);
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		rc = sleep_two(s, snap, &ts);
		if (rc == -ENOSYS) {
			atomic_store_explicit(&waitv_state, -1, memory_order_relaxed);
			st = -1;
		} else {
			if (st == 0)
				atomic_store_explicit(&waitv_state, 1, memory_order_relaxed);
			/* EAGAIN: a word moved before we slept: a wake-up. */
			rc = rc == -ETIMEDOUT ? -ETIMEDOUT : rc == -EINTR ? -EINTR : 0;
		}
	}
	if (st < 0) {
		ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
		ts.tv_nsec = (long)(timeout_ns % 1000000000u);
		rc = 0;
		if (futex(&s->peer->kick, FUTEX_WAIT, (uint32_t)snap, &ts) < 0)
			rc = errno == ETIMEDOUT ? -ETIMEDOUT : errno == EINTR ? -EINTR : 0;
	}
	vop_doorbell_disarm(s->me);
	return rc;
}

static void shm_destroy(struct vop_xport *x)
{
	if (!x)
		return;
	shm_unmap(x);
	if (x->fd >= 0)
		close(x->fd);
	if (x->unlink_on_destroy && x->path[0])
		unlink(x->path);
	pthread_mutex_destroy(&((struct shm_xport *)x)->pop_lock);
	pthread_cond_destroy(&((struct shm_xport *)x)->pop_cond);
	free(x);
}

static const struct vop_xport_ops shm_ops = {
	.name = "shm",
	.caps = VOP_XPORT_CAP_SHARED_MEM | VOP_XPORT_CAP_CROSS_PROCESS |
		VOP_XPORT_CAP_FUTEX_DOORBELL | VOP_XPORT_CAP_FD_PASSING,
	.map = shm_map,
	.unmap = shm_unmap,
	.bind = shm_bind,
	.kick = shm_kick,
	.wake = shm_wake,
	.snapshot = shm_snapshot,
	.wait = shm_wait,
	.wait_fd = NULL,
	.flush = NULL, /* write-back memory: release order suffices */
	.prefault = shm_prefault,
	.claim = shm_claim,
	.destroy = shm_destroy,
};

static struct vop_xport *xport_alloc(void)
{
	struct shm_xport *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->x.ops = &shm_ops;
	s->x.fd = -1;
	s->x.map_kind = VOP_MAP_WB;
	pthread_mutex_init(&s->pop_lock, NULL);
	pthread_cond_init(&s->pop_cond, NULL);
	return &s->x;
}

/*
 * Reserve the backing store of the whole window before it is mapped: on a
 * tmpfs without room for it, a page first touched later would raise
 * SIGBUS in whichever thread touched it (and kill the agent); here it is
 * -ENOSPC for this window only. fallocate(2) mode 0 (keeps the size);
 * filesystems without it get posix_fallocate's emulation.
 */
static int reserve(int fd, uint64_t size)
{
	int rc;

	if (fallocate(fd, 0, 0, (off_t)size) == 0)
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	rc = posix_fallocate(fd, 0, (off_t)size); /* returns the error, not -1 */
	return -rc;
}

int vop_shm_create(const char *path, uint64_t size, struct vop_xport **out)
{
	struct vop_xport *x;
	int rc;

	*out = NULL;
	if (size < VOP_WIN_MIN_SIZE || size % VOP_WIN_PAGE != 0 || size > (1ull << 40))
		return -EINVAL;
	if (path && strlen(path) >= sizeof(x->path))
		return -ENAMETOOLONG;
	x = xport_alloc();
	if (!x)
		return -ENOMEM;
	if (path) {
		x->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (x->fd < 0) {
			rc = -errno;
			shm_destroy(x);
			return rc;
		}
		strcpy(x->path, path);
		x->unlink_on_destroy = 1;
		((struct shm_xport *)x)->own_ofd = true;
	} else {
		x->fd = memfd_create("vop-window", MFD_CLOEXEC);
		if (x->fd < 0) {
			rc = -errno;
			shm_destroy(x);
			return rc;
		}
	}
	x->size = size;
	if (ftruncate(x->fd, (off_t)size) < 0) {
		rc = -errno;
		goto err;
	}
	rc = reserve(x->fd, size);
	if (rc)
		goto err;
	rc = x->ops->map(x);
	if (rc)
		goto err;
	*out = x;
	return 0;
err:
	shm_destroy(x);
	return rc;
}

static int open_common(struct vop_xport *x, int check_owner)
{
	struct stat st;

	if (fstat(x->fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	/* A passed fd is already a capability; a path must be private to us. */
	if (check_owner && (st.st_uid != geteuid() || (st.st_mode & 077) != 0))
		return -EPERM;
	/* The same bounds as vop_shm_create(): a peer's file is no bigger than we would make. */
	if ((uint64_t)st.st_size < VOP_WIN_MIN_SIZE || st.st_size % VOP_WIN_PAGE != 0 ||
	    (uint64_t)st.st_size > (1ull << 40))
		return -EINVAL;
	x->size = (uint64_t)st.st_size;
	return x->ops->map(x);
}

int vop_shm_open(const char *path, struct vop_xport **out)
{
	struct vop_xport *x;
	int rc;

	*out = NULL;
	if (strlen(path) >= sizeof(x->path))
		return -ENAMETOOLONG;
	x = xport_alloc();
	if (!x)
		return -ENOMEM;
	x->fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (x->fd < 0) {
		rc = -errno;
		shm_destroy(x);
		return rc;
	}
	strcpy(x->path, path);
	((struct shm_xport *)x)->own_ofd = true;
	rc = open_common(x, 1);
	if (rc) {
		shm_destroy(x);
		return rc;
	}
	*out = x;
	return 0;
}

int vop_shm_open_fd(int fd, struct vop_xport **out)
{
	struct vop_xport *x;
	int rc;

	*out = NULL;
	x = xport_alloc();
	if (!x)
		return -ENOMEM;
	x->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (x->fd < 0) {
		rc = -errno;
		shm_destroy(x);
		return rc;
	}
	rc = open_common(x, 0);
	if (rc) {
		shm_destroy(x);
		return rc;
	}
	*out = x;
	return 0;
}
