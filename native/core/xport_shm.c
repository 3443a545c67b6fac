/* SPDX-License-Identifier: Apache-2.0 */
/*
 * shm transport: one file-backed window mapped MAP_SHARED in both
 * processes; doorbells are futex words inside the window (vop_win_side).
 *
 * Doorbell protocol (edges D1/D2, see docs/memory-ordering.md):
 *   ringer:  doorbell += 1 (seq_cst RMW); if (waiting) FUTEX_WAKE
 *   waiter:  snap = doorbell; ...re-check rings...; waiting = 1 (seq_cst);
 *            if (doorbell == snap) FUTEX_WAIT(doorbell, snap); waiting = 0
 * Both sides use seq_cst for the store and the following load, so either
 * the ringer sees waiting == 1 (and wakes) or the waiter sees the new
 * doorbell value (and doesn't sleep): a wake-up is never lost, and the
 * ringer pays no syscall while the waiter is polling.
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

#include "barrier.h"
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
};

static struct vop_win_side *side_block(struct vop_xport *x, unsigned side)
{
	return (struct vop_win_side *)(void *)(x->base + VOP_WIN_SIDE_OFF +
					       (side & 1u) * sizeof(struct vop_win_side));
}

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

static long futex(uint32_t *uaddr, int op, uint32_t val, const struct timespec *ts)
{
	/* Shared (not FUTEX_PRIVATE_FLAG): the word is in a MAP_SHARED file. */
	return syscall(SYS_futex, uaddr, op, val, ts, NULL, 0);
}

static int shm_notify(struct vop_xport *x, unsigned side)
{
	struct vop_win_side *s = side_block(x, side);

	/*
	 * D1: seq_cst RMW then seq_cst load of waiting. Pairs with D2 in
	 * shm_wait(). The ring updates that this doorbell announces were
	 * published before (P1/U1 + P2/U2 in vq.c).
	 */
	vop_fetch_add_u32(&s->doorbell, 1);
	if (!atomic_load_explicit((_Atomic uint32_t *)&s->waiting, memory_order_seq_cst))
		return 0;
	if (futex(&s->doorbell, FUTEX_WAKE, 1, NULL) < 0)
		return -errno;
	return 1;
}

static uint32_t shm_snapshot(struct vop_xport *x, unsigned side)
{
	/* Acquire: anything the ringer published before its increment is seen after. */
	return vop_load_acquire_u32(&side_block(x, side)->doorbell);
}

static int shm_wait(struct vop_xport *x, unsigned side, uint32_t snap, uint64_t timeout_ns)
{
	struct vop_win_side *s = side_block(x, side);
	struct timespec ts;
	int rc = 0;

	ts.tv_sec = (time_t)(timeout_ns / 1000000000u);
	ts.tv_nsec = (long)(timeout_ns % 1000000000u);
	/* D2: seq_cst store of waiting, then seq_cst load of doorbell. Pairs with D1. */
	atomic_store_explicit((_Atomic uint32_t *)&s->waiting, 1, memory_order_seq_cst);
	if (atomic_load_explicit((_Atomic uint32_t *)&s->doorbell, memory_order_seq_cst) == snap) {
		if (futex(&s->doorbell, FUTEX_WAIT, snap, &ts) < 0) {
			if (errno == ETIMEDOUT)
				rc = -ETIMEDOUT;
			else if (errno == EINTR)
				rc = -EINTR;
			/* EAGAIN: the doorbell moved before we slept: a wake-up. */
		}
	}
	atomic_store_explicit((_Atomic uint32_t *)&s->waiting, 0, memory_order_relaxed);
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
	.notify = shm_notify,
	.snapshot = shm_snapshot,
	.wait = shm_wait,
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
