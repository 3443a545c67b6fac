/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pci-bar transport: a window that is a PCI BAR, an NTB memory window,
 * or the memory behind one, shared by two OS instances that share nothing
 * else (no filesystem, no futex, no atomics across the link). Both ends use
 * the ops of vop/xport.h; what differs is how each maps the memory and how
 * its doorbells travel (docs/transports.md):
 *
 *  - the side that HOLDS the memory (the host of an ivshmem device, whose
 *    memory the vop ivshmem server hands out; a card's own RAM behind its
 *    BAR): maps it write-back, sleeps on the eventfd of its own ivshmem
 *    vector and rings the peer by writing the peer's eventfd for that
 *    vector (ivshmem server protocol v0; docs/ivshmem-server.md);
 *  - the side that MAPS A BAR: the window is BAR memory through sysfs
 *    `resourceN` (uncached) or `resourceN_wc` (write-combining), or a vfio
 *    region; it rings the peer with a doorbell register write (ivshmem:
 *    `peer << 16 | vector` at BAR0 + 12) and takes the peer's rings as an
 *    MSI-X vector delivered to an eventfd (vfio, VFIO_DEVICE_SET_IRQS), or,
 *    with no interrupt path (sysfs), polls the peer's kick word in the
 *    window, backing off adaptively so that an idle link costs well under
 *    1 % of a core.
 *
 * Either side can create the window or attach to it, and either can be the
 * device or the driver of any device: that is the window and link layer's
 * business, not the transport's. A side whose peer has not joined yet (or
 * left) simply cannot signal it; liveness comes from the window's
 * heartbeat and kick words.
 */
#ifndef VOP_XPORT_PCI_H
#define VOP_XPORT_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "vop/xport.h"

/* How a side learns that the peer rang. */
enum vop_pci_doorbell {
	VOP_PCI_DB_EVENT = 0, /* an interrupt eventfd (ivshmem vector, vfio MSI-X): sleep on it */
	VOP_PCI_DB_POLL = 1,  /* no interrupt path: poll the peer's kick word, adaptive back-off */
};

/*
 * Longest nap between two looks of a polled side (default of poll_max_us):
 * what the first message after a long idle spell may wait, and what keeps
 * an idle polled link under 1 % of a core (npm run bench:pci measures it).
 */
#define VOP_PCI_POLL_MAX_US 20000u

/* The side that holds the memory, as a peer of vop-ivshmem-server. */
struct vop_pci_ivshmem_config {
	const char *socket;    /* the server's Unix socket */
	int peer_id;           /* the peer's ivshmem id (0..65535), or -1: the one other peer */
	uint64_t offset;       /* window offset in the shared memory (multiple of 4096) */
	uint64_t size;         /* window bytes (multiple of 4096, >= 64 KiB); 0 = the rest */
	unsigned vector;       /* the vector both sides ring and wait on (< server's --vectors) */
	unsigned vectors;      /* the server's --vectors (what the handshake waits for); 0 = vector + 1 */
	uint32_t doorbell;     /* enum vop_pci_doorbell */
	uint32_t poll_max_us;  /* polled: longest nap; 0 = VOP_PCI_POLL_MAX_US */
	int timeout_ms;        /* the server handshake; 0 = 5000 */
};

/*
 * vop_pci_ivshmem_open - join the ivshmem server at cfg->socket and map
 * [offset, offset + size) of its memory as the window (write-back). The
 * peer need not be there yet: its eventfd is learned when the server
 * announces it. Returns 0 and *out, or -errno: the server's (see
 * vop_ivshmem_client_open), -EINVAL (geometry, vector, peer id).
 */
int vop_pci_ivshmem_open(const struct vop_pci_ivshmem_config *cfg, struct vop_xport **out);

/* The side that maps a BAR (sysfs resource file, or vfio). */
struct vop_pci_bar_config {
	/*
	 * The window's BAR as a file to mmap: /sys/bus/pci/devices/BDF/resourceN
	 * (uncached), resourceN_wc (write-combining: set wc), or any file the
	 * memory is shared through (tests). NULL with vfio_bdf: vfio region `bar`.
	 */
	const char *bar_path;
	const char *vfio_bdf;  /* "0000:00:04.0": a device bound to vfio-pci (NULL: sysfs) */
	unsigned bar;          /* vfio: the window BAR's region index (ivshmem: 2) */
	bool wc;               /* bar_path is write-combining */
	uint64_t offset;       /* window offset in the BAR (multiple of 4096) */
	uint64_t size;         /* window bytes; 0 = the rest of the BAR */
	/*
	 * Doorbell registers (ivshmem-doorbell BAR0: IVPosition at 8, Doorbell
	 * at 12): a sysfs resource0 file to mmap, or NULL: vfio region 0 when
	 * vfio_bdf, else none (then the peer cannot be rung: it must poll).
	 */
	const char *regs_path;
	/*
	 * Allowed roots (the agent's hostPaths.barDirs): bar_path and regs_path
	 * are opened beneath them (openat2 RESOLVE_BENEATH, vop/path.h), so a
	 * symlink cannot lead out; -EXDEV when a path lies outside or resolves
	 * out. NULL: opened as given (vop-card's own config, the C tests).
	 */
	const char *bar_root;
	const char *regs_root;
	int peer_id;           /* the peer's id, written as peer_id << 16 | vector */
	unsigned vector;       /* the vector we ring and, with vfio, take as MSI-X */
	uint32_t doorbell;     /* enum vop_pci_doorbell; EVENT needs vfio_bdf (MSI-X) */
	uint32_t poll_max_us;  /* polled: longest nap; 0 = VOP_PCI_POLL_MAX_US */
};

/*
 * vop_pci_bar_open - map the window BAR (and the doorbell registers), set
 * up the MSI-X eventfd when cfg->doorbell is EVENT. Returns 0 and *out, or
 * -errno (-ENODEV no such device or region, -EINVAL geometry, -EPERM).
 */
int vop_pci_bar_open(const struct vop_pci_bar_config *cfg, struct vop_xport **out);

/* Our own ivshmem id (ivshmem: from the server; BAR with registers: IVPosition), or -1. */
int vop_pci_own_id(const struct vop_xport *x);

/* The peer's id this side rings (-1 while an ivshmem side has not met it yet). */
int vop_pci_peer_id(const struct vop_xport *x);

/* Counters of a pci-bar transport (any thread, relaxed). */
struct vop_pci_stats {
	uint64_t signals;    /* doorbells sent (eventfd writes or register writes) */
	uint64_t interrupts; /* wake-ups by the interrupt eventfd */
	uint64_t polls;      /* looks at the peer's kick word while polling */
};
void vop_pci_stats(const struct vop_xport *x, struct vop_pci_stats *out);

#endif /* VOP_XPORT_PCI_H */
