/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transport ops table. A transport maps the shared window (or the regions
 * of it) and moves doorbells; rings and devices never see anything else.
 * shm implements it now; pci-bar, pci-epf, stream and vhost-user plug in
 * by providing another ops table and constructor.
 */
#ifndef VOP_XPORT_H
#define VOP_XPORT_H

#include <stdint.h>

#include "vop/region.h"

#define VOP_XPORT_CAP_SHARED_MEM 0x1u      /* rings live in memory both sides map */
#define VOP_XPORT_CAP_CROSS_PROCESS 0x2u   /* the peer may be another process */
#define VOP_XPORT_CAP_FUTEX_DOORBELL 0x4u  /* doorbells are futex words in the window */
#define VOP_XPORT_CAP_FD_PASSING 0x8u      /* window is an fd that can be passed (memfd) */

struct vop_xport;

struct vop_xport_ops {
	const char *name; /* "shm", later "pci-bar", "pci-epf", "stream", "vhost-user" */
	uint32_t caps;    /* VOP_XPORT_CAP_* */
	/*
	 * map - make the window accessible: sets x->base/x->size.
	 * Returns 0 or -errno. Called once by the constructor.
	 */
	int (*map)(struct vop_xport *x);
	/* unmap - undo map; x->base becomes NULL. */
	void (*unmap)(struct vop_xport *x);
	/*
	 * notify - ring side's doorbell (wake its worker if it sleeps).
	 * Returns 1 if a wake syscall was made, 0 if the waiter was not
	 * sleeping (no syscall), -errno on failure. Any thread.
	 */
	int (*notify)(struct vop_xport *x, unsigned side);
	/* snapshot - current value of side's doorbell, to pass to wait. */
	uint32_t (*snapshot)(struct vop_xport *x, unsigned side);
	/*
	 * wait - sleep until side's doorbell differs from snap or timeout_ns
	 * passes. Returns 0 (rung or spurious), -ETIMEDOUT, -EINTR. Only the
	 * owner of side calls it (one waiter per side).
	 */
	int (*wait)(struct vop_xport *x, unsigned side, uint32_t snap, uint64_t timeout_ns);
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
	 * side's heartbeat). NULL = always -EOPNOTSUPP. Control thread.
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
