/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transport ops table. A transport maps the shared window (or the regions
 * of it), moves doorbells, waits for them and knows the barriers its
 * mapping needs; rings and devices never see anything else. Transport-
 * neutral code assumes only what a PCI BAR gives (architecture rule 9):
 * loads and stores of window fields through core/win_access.h, each field
 * with one writer side, no atomic read-modify-write and no futex on window
 * memory (native/tools/check-window-access.sh). Implemented: shm (a file
 * both processes map; futex doorbells inside xport_shm.c) and pci-bar (a
 * PCI BAR, an NTB window or the ivshmem server's memory; eventfd, MSI-X or
 * doorbell-register doorbells, or polling; xport_pci.c, vop/xport_pci.h).
 *
 * Doorbells use the doorbell line of each side block (layout.h): ringing
 * stores a fresh value into OUR kick word and signals the peer only when
 * its waiting word says it sleeps; waiting compares the PEER's kick word
 * with a snapshot. Each transport decides what "signal" and "sleep" are.
 */
#ifndef VOP_XPORT_H
#define VOP_XPORT_H

#include <stdint.h>

#include "vop/region.h"

#define VOP_XPORT_CAP_SHARED_MEM 0x1u      /* rings live in memory both sides map */
#define VOP_XPORT_CAP_CROSS_PROCESS 0x2u   /* the peer may be another process */
#define VOP_XPORT_CAP_FUTEX_DOORBELL 0x4u  /* shm: sleeps on futex words (inside the transport) */
#define VOP_XPORT_CAP_FD_PASSING 0x8u      /* window is an fd that can be passed (memfd) */
#define VOP_XPORT_CAP_CROSS_HOST 0x10u     /* the peer may be another OS (PCIe, NTB, a VM) */
#define VOP_XPORT_CAP_POLLED 0x20u         /* no interrupt reaches us: wait polls the peer's kick */

/* How the window is mapped: decides the barriers stores need (docs/memory-ordering.md). */
enum vop_map_kind {
	VOP_MAP_WB = 0, /* cacheable, coherent with the peer: shm, host memory of a BAR */
	VOP_MAP_UC = 1, /* uncached (a BAR through sysfs resourceN or vfio): stores stay in order */
	VOP_MAP_WC = 2, /* write-combining (resourceN_wc): stores may merge and reorder */
};

struct vop_xport;

struct vop_xport_ops {
	const char *name; /* "shm", "pci-bar"; later "pci-epf", "stream", "vhost-user" */
	uint32_t caps;    /* VOP_XPORT_CAP_* */
	/*
	 * map - make the window accessible: sets x->base/x->size.
	 * Returns 0 or -errno. Called once by the constructor.
	 */
	int (*map)(struct vop_xport *x);
	/* unmap - undo map; x->base becomes NULL. */
	void (*unmap)(struct vop_xport *x);
	/*
	 * bind - this process is side (0 or 1) of the window: the transport
	 * learns which side block is its own (kick, waiting) and which the
	 * peer's. Called by the window layer once the layout is validated,
	 * before any kick, wake, snapshot or wait. 0 or -errno.
	 */
	int (*bind)(struct vop_xport *x, unsigned side);
	/*
	 * kick - ring the peer's doorbell `vector` (0: its link worker): store
	 * a fresh value into our kick word, then signal the peer if it waits
	 * for one. Everything this thread wrote to the window before is
	 * visible to the peer before it sees the kick. Returns 1 if a signal
	 * was sent (a wake syscall, an eventfd write, a doorbell register
	 * write), 0 if the peer was polling (nothing to send), -errno. Any
	 * thread.
	 */
	int (*kick)(struct vop_xport *x, unsigned vector);
	/*
	 * wake - wake our own waiter (the worker of this side) from another
	 * thread of this process: a new device, a stop, a backend's I/O thread
	 * that completed work. Returns 1 if a wake syscall was made, 0 if the
	 * waiter was not asleep, -errno. Any thread.
	 */
	int (*wake)(struct vop_xport *x);
	/* snapshot - the doorbell state to pass to wait (the peer's kick, our wakes). */
	uint64_t (*snapshot)(struct vop_xport *x);
	/*
	 * wait - sleep until the peer kicked or we were woken after snap was
	 * taken, or timeout_ns passed. Returns 0 (rung or spurious),
	 * -ETIMEDOUT, -EINTR. Only the worker of the bound side calls it.
	 */
	int (*wait)(struct vop_xport *x, uint64_t snap, uint64_t timeout_ns);
	/*
	 * wait_fd - an fd that becomes readable when a doorbell for us arrives
	 * (for callers that poll it with other fds), or -EOPNOTSUPP (shm: a
	 * futex, no fd; a polled BAR). NULL = -EOPNOTSUPP.
	 */
	int (*wait_fd)(struct vop_xport *x);
	/*
	 * flush - the barrier stores to this mapping need before a publishing
	 * store or a doorbell: sfence for a write-combining mapping; NULL when
	 * ordinary release order suffices (write-back and uncached mappings).
	 */
	void (*flush)(struct vop_xport *x);
	/*
	 * prefault - make [off, off + len) of the window resident soon without
	 * blocking the caller (a hint; ranges out of the window are clipped).
	 * NULL when mapping is already eager. Control thread.
	 */
	void (*prefault)(struct vop_xport *x, uint64_t off, uint64_t len);
	/*
	 * claim - take side for this process for as long as x stays open:
	 * 0 (claimed: any earlier holder is gone), -EBUSY (a live holder has
	 * it), -EOPNOTSUPP (cannot tell; the window layer then watches the
	 * side's heartbeat). NULL = always -EOPNOTSUPP. An optimisation only:
	 * liveness itself comes from heartbeats and doorbells in the window.
	 * Control thread.
	 */
	int (*claim)(struct vop_xport *x, unsigned side);
	/* destroy - unmap, close and free x. */
	void (*destroy)(struct vop_xport *x);
};

/* A transport instance. Fields are set by the constructor, read-only after. */
struct vop_xport {
	const struct vop_xport_ops *ops; /* behaviour */
	uint8_t *base;                   /* local mapping of the window */
	uint64_t size;                   /* bytes mapped */
	int fd;                          /* backing fd (shm), -1 if none */
	int unlink_on_destroy;           /* creator of a path-backed window removes it */
	uint32_t map_kind;               /* enum vop_map_kind */
	char path[256];                  /* backing file path, "" for memfd */
};

/*
 * vop_shm_create - create a new window of size bytes. If path is NULL the
 * window is a memfd (pass x->fd to the peer); otherwise a new file created
 * with O_EXCL and mode 0600 (the directory must belong to the caller).
 * The whole file is reserved (fallocate) before it is mapped, so a window
 * larger than the free space of its filesystem is -ENOSPC here, never a
 * SIGBUS later. The header and device table are populated before this
 * returns; the rest faults in on first use unless prefault() is asked for
 * it (the link does for the rings and pools of the devices it serves).
 * Returns 0 and *out, or -errno (-EEXIST, -EINVAL for size < 64 KiB,
 * -ENOSPC; a path-backed file is removed again on failure).
 */
int vop_shm_create(const char *path, uint64_t size, struct vop_xport **out);

/*
 * vop_shm_open - map an existing window file. Refuses files not owned by
 * the caller or accessible by group/others (-EPERM), and non-regular
 * files (-EINVAL). Returns 0 and *out, or -errno.
 */
int vop_shm_open(const char *path, struct vop_xport **out);

/*
 * vop_shm_open_fd - map a window from an fd (dup'ed; caller keeps fd). A
 * passed fd may share its open file description with a live holder, so
 * claim() cannot decide for it (-EOPNOTSUPP).
 */
int vop_shm_open_fd(int fd, struct vop_xport **out);

/* Release a transport (NULL ok). */
static inline void vop_xport_destroy(struct vop_xport *x)
{
	if (x)
		x->ops->destroy(x);
}

#endif /* VOP_XPORT_H */
