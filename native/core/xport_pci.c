/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pci-bar transport (vop/xport_pci.h): a window that is a PCI BAR, an NTB
 * memory window or the memory behind one. Transport-neutral code in the
 * sense of architecture rule 9: nothing here assumes more of the window
 * than a BAR gives (loads and stores through win_access.h, the doorbell
 * protocol of doorbell.h on our own side block, no RMW, no futex), and the
 * window-access check holds it to that. Atomic counters are private
 * (private_atomic.h).
 *
 * Doorbells (edges D1/D2 in docs/memory-ordering.md):
 *   kick:  fresh value into our kick word; if the peer's waiting word is
 *          set, signal it: write the peer's eventfd for our vector (the
 *          memory-holding side, an ivshmem server peer) or write
 *          peer << 16 | vector to the Doorbell register at BAR0 + 12 (the
 *          BAR side; posted behind our window stores, so they arrive first).
 *   wait:  interrupt path: set waiting, re-check the peer's kick, then
 *          poll() our interrupt eventfd (our ivshmem vector, or the MSI-X
 *          vector vfio delivers to an eventfd). Polled: never set waiting
 *          (so the peer never signals us) and look at the peer's kick word
 *          with naps that double from 10 us up to poll_max_us and stay
 *          there while nothing happens; an idle link then wakes about 50
 *          times a second per side at the default 20 ms, a busy one reacts
 *          within tens of microseconds.
 *   wake:  a private sequence number plus a write to our own eventfd if
 *          our worker sleeps (threads of one process; never the window).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/vfio.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "doorbell.h"
#include "private_atomic.h"
#include "vop/ivshmem.h"
#include "vop/path.h"
#include "vop/xport_pci.h"

#define REG_IVPOSITION 8u /* ivshmem-doorbell BAR0: own id (read-only) */
#define REG_DOORBELL 12u  /* ivshmem-doorbell BAR0: write peer << 16 | vector */
#define POLL_MIN_NS 10000ull

struct pci_xport {
	struct vop_xport x;
	uint8_t *map;                 /* the whole mapping; the window is map + offset */
	uint64_t map_len;
	struct vop_win_side *me;      /* our side block (after bind) */
	struct vop_win_side *peer;    /* the peer's side block */
	struct vop_private_u32 kick_seq; /* fresh values for our kick word */
	struct vop_private_u32 wake_seq; /* self-wakes (another thread of ours) */
	_Atomic int sleeping;         /* private: our worker is (about to be) in poll() */
	bool polled;                  /* no interrupt path: poll the peer's kick */
	int irq_fd;                   /* readable on a doorbell for us, or a self-wake */
	bool irq_owned;               /* we created irq_fd */
	uint64_t poll_max_ns;
	unsigned vector;              /* the vector we ring and wait on */
	/* the ring path */
	pthread_mutex_t lock;         /* cli, peer_id, peer_efd */
	struct vop_ivshmem_client *cli; /* memory-holding side: the server connection */
	int peer_id;                  /* -1: not known yet */
	bool peer_any;                /* take the one other peer, whoever it is */
	int peer_efd;                 /* ivshmem: our dup of the peer's eventfd for vector */
	volatile uint32_t *regs;      /* BAR side: BAR0 mapped (sysfs), or NULL */
	size_t regs_len;
	int regs_fd;                  /* vfio: device fd for pread/pwrite of region 0 */
	uint64_t regs_off;            /* vfio: region 0's offset in the device fd */
	int own_id;                   /* our ivshmem id, -1 if unknown */
	/* vfio */
	int vfio_container, vfio_group, vfio_dev;
	/* counters */
	struct vop_private_u64 signals, interrupts, polls;
	uint64_t nap_ns;              /* worker only: the current polled nap (kept across waits) */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int write_efd(int fd)
{
	const uint64_t one = 1;
	ssize_t w;

	do
		w = write(fd, &one, sizeof(one));
	while (w < 0 && errno == EINTR);
	if (w < 0)
		return errno == EAGAIN ? 0 : -errno; /* EAGAIN: counter full, already readable */
	return 0;
}

static void drain_efd(int fd)
{
	uint64_t n;

	while (read(fd, &n, sizeof(n)) == (ssize_t)sizeof(n))
		;
}

/* ------------------------------------------------------------------ */
/* The peer (memory-holding side: what the ivshmem server tells us)     */
/* ------------------------------------------------------------------ */

/* Lock held: take the server's news; adopt, replace or drop the peer's eventfd. */
static void learn_peers(struct pci_xport *p)
{
	struct vop_ivshmem_event ev[16];
	int n, i;

	if (!p->cli)
		return;
	while ((n = vop_ivshmem_client_process(p->cli, ev, 16)) > 0) {
		for (i = 0; i < n; i++) {
			if (ev[i].kind == VOP_IVSHMEM_PEER_LEFT && (int)ev[i].peer == p->peer_id) {
				if (p->peer_efd >= 0)
					close(p->peer_efd);
				p->peer_efd = -1;
				if (p->peer_any)
					p->peer_id = -1;
				continue;
			}
			if (ev[i].kind != VOP_IVSHMEM_PEER_VECTOR || ev[i].vector != p->vector)
				continue;
			if (p->peer_id < 0 && p->peer_any)
				p->peer_id = ev[i].peer;
			if ((int)ev[i].peer == p->peer_id) {
				int fd = vop_ivshmem_client_peer_eventfd(p->cli, ev[i].peer, p->vector);

				if (p->peer_efd >= 0)
					close(p->peer_efd);
				/* Our own copy: the client closes its fd when the peer leaves. */
				p->peer_efd = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
			}
		}
	}
}

/* ------------------------------------------------------------------ */
/* Ops                                                                  */
/* ------------------------------------------------------------------ */

static int pci_map(struct vop_xport *x)
{
	(void)x;
	return 0; /* the constructors map: the memory comes from the server or a BAR */
}

static void pci_unmap(struct vop_xport *x)
{
	struct pci_xport *p = (struct pci_xport *)x;

	if (p->map)
		munmap(p->map, p->map_len);
	p->map = NULL;
	x->base = NULL;
}

static int pci_bind(struct vop_xport *x, unsigned side)
{
	struct pci_xport *p = (struct pci_xport *)x;

	if (side > 1 || !x->base)
		return -EINVAL;
	p->me = vop_doorbell_side(x->base, side);
	p->peer = vop_doorbell_side(x->base, side ^ 1u);
	/* Fresh values continue from what a previous holder of the side stored. */
	vop_private_store_u32(&p->kick_seq, vop_read_once_u32(&p->me->kick));
	vop_doorbell_disarm(p->me);
	return 0;
}

/* Signal the peer (it sleeps): 1 if a doorbell went out, 0 if none could, -errno. */
static int signal_peer(struct pci_xport *p)
{
	int rc = 0;

	if (p->cli) {
		pthread_mutex_lock(&p->lock);
		if (p->peer_efd < 0)
			learn_peers(p); /* it may have joined since we last looked */
		if (p->peer_efd >= 0)
			rc = write_efd(p->peer_efd) == 0 ? 1 : -EIO;
		pthread_mutex_unlock(&p->lock);
	} else if (p->peer_id >= 0 && (p->regs || p->regs_fd >= 0)) {
		uint32_t v = (uint32_t)p->peer_id << 16 | p->vector;

		if (p->regs) {
			/* Uncached register store, posted behind every window store we made. */
			p->regs[REG_DOORBELL / 4] = v;
			rc = 1;
		} else {
			rc = pwrite(p->regs_fd, &v, 4, (off_t)(p->regs_off + REG_DOORBELL)) == 4 ? 1 : -EIO;
		}
	}
	if (rc > 0)
		vop_private_add_u64(&p->signals, 1);
	return rc;
}

static int pci_kick(struct vop_xport *x, unsigned vector)
{
	struct pci_xport *p = (struct pci_xport *)x;

	(void)vector; /* 0: the link's doorbell, the one vector both sides use */
	if (!p->me)
		return -ENOTCONN;
	/* A write-combining mapping: drain our stores before the kick that announces them. */
	if (x->map_kind == VOP_MAP_WC)
		vop_wc_fence();
	if (!vop_doorbell_ring(p->me, p->peer, vop_private_next_u32(&p->kick_seq))) /* D1 */
		return 0;
	return signal_peer(p);
}

static int pci_wake(struct vop_xport *x)
{
	struct pci_xport *p = (struct pci_xport *)x;

	/* A seq_cst RMW (private), then the sleeping flag: pairs with the fence in pci_wait. */
	vop_private_next_u32(&p->wake_seq);
	if (!atomic_load_explicit(&p->sleeping, memory_order_seq_cst))
		return 0;
	return write_efd(p->irq_fd) == 0 ? 1 : -EIO;
}

static uint64_t pci_snapshot(struct vop_xport *x)
{
	struct pci_xport *p = (struct pci_xport *)x;

	return (uint64_t)vop_private_load_u32(&p->wake_seq) << 32 | vop_doorbell_snapshot(p->peer);
}

static int pci_wait_fd(struct vop_xport *x)
{
	struct pci_xport *p = (struct pci_xport *)x;

	return p->polled ? -EOPNOTSUPP : p->irq_fd;
}

/* poll() irq_fd (and the server socket) for up to ns; 1 if a doorbell or wake arrived. */
static int nap(struct pci_xport *p, uint64_t ns)
{
	struct pollfd pfd[2] = { { .fd = p->irq_fd, .events = POLLIN },
				 { .fd = p->cli ? vop_ivshmem_client_fd(p->cli) : -1, .events = POLLIN } };
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
	int n = ppoll(pfd, 2, &ts, NULL);

	if (n <= 0)
		return n < 0 && errno == EINTR ? -EINTR : 0;
	if (pfd[1].revents) {
		pthread_mutex_lock(&p->lock);
		learn_peers(p);
		pthread_mutex_unlock(&p->lock);
	}
	if (pfd[0].revents) {
		drain_efd(p->irq_fd);
		vop_private_add_u64(&p->interrupts, 1);
		return 1;
	}
	return 0;
}

static int pci_wait(struct vop_xport *x, uint64_t snap, uint64_t timeout_ns)
{
	struct pci_xport *p = (struct pci_xport *)x;
	uint32_t ksnap = (uint32_t)snap, wsnap = (uint32_t)(snap >> 32);
	uint64_t deadline = now_ns() + timeout_ns, t;
	int rc = -ETIMEDOUT;

	if (!p->me)
		return -ENOTCONN;
	atomic_store_explicit(&p->sleeping, 1, memory_order_relaxed);
	if (!p->polled) {
		/* D2 inside vop_doorbell_arm: waiting, fence, the peer's kick again. */
		if (vop_doorbell_arm(p->me, p->peer, ksnap) || vop_private_load_u32(&p->wake_seq) != wsnap) {
			rc = 0;
		} else {
			for (;;) {
				int r;

				t = now_ns();
				if (t >= deadline)
					break;
				r = nap(p, deadline - t);
				if (r != 0) {
					rc = r > 0 ? 0 : r;
					break;
				}
				/* The socket spoke (a peer joined or left): look again. */
				if (vop_load_acquire_u32(&p->peer->kick) != ksnap) {
					rc = 0;
					break;
				}
			}
		}
		vop_doorbell_disarm(p->me);
	} else {
		/*
		 * Full fence: the sleeping flag before the wake_seq load (pairs
		 * with pci_wake). The nap doubles from POLL_MIN_NS up to
		 * poll_max_ns while nothing happens and stays there across waits
		 * (an idle link wakes poll_max_ns apart); anything seen resets it.
		 */
		vop_mb();
		if (p->nap_ns < POLL_MIN_NS)
			p->nap_ns = POLL_MIN_NS;
		for (;;) {
			int r;

			vop_private_add_u64(&p->polls, 1);
			if (vop_load_acquire_u32(&p->peer->kick) != ksnap ||
			    vop_private_load_u32(&p->wake_seq) != wsnap) {
				rc = 0;
				break;
			}
			t = now_ns();
			if (t >= deadline)
				break;
			r = nap(p, p->nap_ns < deadline - t ? p->nap_ns : deadline - t);
			if (r != 0) {
				rc = r > 0 ? 0 : r;
				break;
			}
			p->nap_ns = p->nap_ns * 2 < p->poll_max_ns ? p->nap_ns * 2 : p->poll_max_ns;
		}
		if (rc == 0)
			p->nap_ns = POLL_MIN_NS; /* activity: look often again */
	}
	atomic_store_explicit(&p->sleeping, 0, memory_order_relaxed);
	return rc;
}

static void pci_flush(struct vop_xport *x)
{
	(void)x;
	vop_wc_fence(); /* only installed for write-combining mappings */
}

static void vfio_close(struct pci_xport *p)
{
	if (p->vfio_dev >= 0)
		close(p->vfio_dev);
	if (p->vfio_group >= 0)
		close(p->vfio_group);
	if (p->vfio_container >= 0)
		close(p->vfio_container);
	p->vfio_dev = p->vfio_group = p->vfio_container = -1;
}

static void pci_destroy(struct vop_xport *x)
{
	struct pci_xport *p = (struct pci_xport *)x;

	if (!p)
		return;
	pci_unmap(x);
	if (p->regs)
		munmap((void *)p->regs, p->regs_len);
	if (p->peer_efd >= 0)
		close(p->peer_efd);
	if (p->irq_owned && p->irq_fd >= 0)
		close(p->irq_fd);
	vfio_close(p); /* after the irq eventfd: closing the device tears MSI-X down */
	vop_ivshmem_client_close(p->cli);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

static const struct vop_xport_ops pci_ops = {
	.name = "pci-bar",
	.caps = VOP_XPORT_CAP_SHARED_MEM | VOP_XPORT_CAP_CROSS_PROCESS | VOP_XPORT_CAP_CROSS_HOST,
	.map = pci_map,
	.unmap = pci_unmap,
	.bind = pci_bind,
	.kick = pci_kick,
	.wake = pci_wake,
	.snapshot = pci_snapshot,
	.wait = pci_wait,
	.wait_fd = pci_wait_fd,
	.flush = NULL,
	.prefault = NULL,
	.claim = NULL, /* no filesystem in common: the window's heartbeat decides */
	.destroy = pci_destroy,
};

/* Ops of a write-combining mapping: the same, plus the flush barrier. */
static const struct vop_xport_ops pci_wc_ops = {
	.name = "pci-bar",
	.caps = VOP_XPORT_CAP_SHARED_MEM | VOP_XPORT_CAP_CROSS_PROCESS | VOP_XPORT_CAP_CROSS_HOST,
	.map = pci_map,
	.unmap = pci_unmap,
	.bind = pci_bind,
	.kick = pci_kick,
	.wake = pci_wake,
	.snapshot = pci_snapshot,
	.wait = pci_wait,
	.wait_fd = pci_wait_fd,
	.flush = pci_flush,
	.prefault = NULL,
	.claim = NULL,
	.destroy = pci_destroy,
};

static struct pci_xport *pci_alloc(uint32_t doorbell, uint32_t poll_max_us, unsigned vector)
{
	struct pci_xport *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->x.ops = &pci_ops;
	p->x.fd = -1;
	p->x.map_kind = VOP_MAP_WB;
	p->irq_fd = -1;
	p->peer_id = -1;
	p->peer_efd = -1;
	p->regs_fd = -1;
	p->own_id = -1;
	p->vfio_container = p->vfio_group = p->vfio_dev = -1;
	p->polled = doorbell == VOP_PCI_DB_POLL;
	p->poll_max_ns = (uint64_t)(poll_max_us ? poll_max_us : VOP_PCI_POLL_MAX_US) * 1000u;
	if (p->poll_max_ns < POLL_MIN_NS)
		p->poll_max_ns = POLL_MIN_NS;
	p->vector = vector;
	atomic_init(&p->sleeping, 0);
	pthread_mutex_init(&p->lock, NULL);
	return p;
}

/* The window [offset, offset + size) of a mapping of len bytes: checked, then x->base/size. */
static int set_window(struct pci_xport *p, uint64_t len, uint64_t offset, uint64_t size)
{
	if (offset % VOP_WIN_PAGE || offset >= len)
		return -EINVAL;
	if (size == 0)
		size = (len - offset) / VOP_WIN_PAGE * VOP_WIN_PAGE;
	if (size > len - offset || size < VOP_WIN_MIN_SIZE || size % VOP_WIN_PAGE || size > (1ull << 40))
		return -EINVAL;
	p->x.base = p->map + offset;
	p->x.size = size;
	return 0;
}

int vop_pci_ivshmem_open(const struct vop_pci_ivshmem_config *cfg, struct vop_xport **out)
{
	struct pci_xport *p;
	unsigned vectors;
	uint64_t len;
	int rc;

	*out = NULL;
	vectors = cfg->vectors ? cfg->vectors : cfg->vector + 1;
	if (!cfg->socket || cfg->vector >= vectors || vectors > VOP_IVSHMEM_MAX_VECTORS ||
	    cfg->peer_id < -1 || cfg->peer_id > VOP_IVSHMEM_MAX_ID || cfg->doorbell > VOP_PCI_DB_POLL)
		return -EINVAL;
	p = pci_alloc(cfg->doorbell, cfg->poll_max_us, cfg->vector);
	if (!p)
		return -ENOMEM;
	rc = vop_ivshmem_client_open(cfg->socket, vectors, cfg->timeout_ms ? cfg->timeout_ms : 5000, &p->cli);
	if (rc)
		goto fail;
	len = vop_ivshmem_client_shm_size(p->cli);
	p->map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, vop_ivshmem_client_shm_fd(p->cli), 0);
	if (p->map == MAP_FAILED) {
		p->map = NULL;
		rc = -errno;
		goto fail;
	}
	p->map_len = len;
	rc = set_window(p, len, cfg->offset, cfg->size);
	if (rc)
		goto fail;
	/* Our vector's eventfd: the peer's rings, and our own threads' wakes. Owned by the client. */
	p->irq_fd = vop_ivshmem_client_own_eventfd(p->cli, cfg->vector);
	if (p->irq_fd < 0) {
		rc = -EINVAL;
		goto fail;
	}
	p->own_id = (int)vop_ivshmem_client_id(p->cli);
	p->peer_id = cfg->peer_id;
	p->peer_any = cfg->peer_id < 0;
	learn_peers(p); /* the peers met during the handshake */
	*out = &p->x;
	return 0;
fail:
	pci_destroy(&p->x);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The BAR side                                                          */
/* ------------------------------------------------------------------ */

static int vfio_region(int dev, unsigned index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	return ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, ri) < 0 ? -errno : 0;
}

/*
 * Open a device bound to vfio-pci (type1 IOMMU: the guest needs a vIOMMU),
 * map the window BAR, keep region 0 for the doorbell registers, enable bus
 * mastering (MSI-X messages are memory writes by the device) and, with an
 * interrupt path, deliver MSI-X vector `vector` to a fresh eventfd.
 */
static int vfio_open(struct pci_xport *p, const struct vop_pci_bar_config *cfg)
{
	char path[512], link[512];
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	struct vfio_region_info bar, r0, conf;
	ssize_t n;
	uint16_t cmd;
	int rc;

	p->vfio_container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	if (p->vfio_container < 0)
		return -errno;
	if (ioctl(p->vfio_container, VFIO_GET_API_VERSION) != VFIO_API_VERSION ||
	    !ioctl(p->vfio_container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU))
		return -ENOTSUP;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%.64s/iommu_group", cfg->vfio_bdf);
	n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return -ENODEV;
	link[n] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/%.64s", basename(link));
	p->vfio_group = open(path, O_RDWR | O_CLOEXEC);
	if (p->vfio_group < 0)
		return -errno;
	if (ioctl(p->vfio_group, VFIO_GROUP_GET_STATUS, &gs) < 0 || !(gs.flags & VFIO_GROUP_FLAGS_VIABLE))
		return -EBUSY;
	if (ioctl(p->vfio_group, VFIO_GROUP_SET_CONTAINER, &p->vfio_container) < 0 ||
	    ioctl(p->vfio_container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0)
		return -errno;
	p->vfio_dev = ioctl(p->vfio_group, VFIO_GROUP_GET_DEVICE_FD, cfg->vfio_bdf);
	if (p->vfio_dev < 0)
		return -errno;
	if ((rc = vfio_region(p->vfio_dev, cfg->bar, &bar)) != 0 ||
	    (rc = vfio_region(p->vfio_dev, VFIO_PCI_BAR0_REGION_INDEX, &r0)) != 0 ||
	    (rc = vfio_region(p->vfio_dev, VFIO_PCI_CONFIG_REGION_INDEX, &conf)) != 0)
		return rc;
	if (!(bar.flags & VFIO_REGION_INFO_FLAG_MMAP) || bar.size == 0)
		return -ENODEV;
	p->map = mmap(NULL, bar.size, PROT_READ | PROT_WRITE, MAP_SHARED, p->vfio_dev, (off_t)bar.offset);
	if (p->map == MAP_FAILED) {
		p->map = NULL;
		return -errno;
	}
	p->map_len = bar.size;
	p->x.map_kind = VOP_MAP_UC; /* vfio maps BARs uncached */
	if (r0.size >= REG_DOORBELL + 4) {
		uint32_t id;

		p->regs_fd = p->vfio_dev;
		p->regs_off = r0.offset;
		if (pread(p->vfio_dev, &id, 4, (off_t)(r0.offset + REG_IVPOSITION)) == 4)
			p->own_id = (int)id;
	}
	if (pread(p->vfio_dev, &cmd, 2, (off_t)(conf.offset + 4)) != 2)
		return -EIO;
	cmd |= 0x4; /* PCI_COMMAND_MASTER */
	if (pwrite(p->vfio_dev, &cmd, 2, (off_t)(conf.offset + 4)) != 2)
		return -EIO;
	if (!p->polled) {
		struct vfio_irq_info ii = { .argsz = sizeof(ii), .index = VFIO_PCI_MSIX_IRQ_INDEX };
		struct {
			struct vfio_irq_set s;
			int fd;
		} set;

		if (ioctl(p->vfio_dev, VFIO_DEVICE_GET_IRQ_INFO, &ii) < 0 || ii.count <= cfg->vector)
			return -ENODEV; /* no MSI-X vector for us: poll instead */
		p->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (p->irq_fd < 0)
			return -errno;
		p->irq_owned = true;
		memset(&set, 0, sizeof(set));
		set.s.argsz = sizeof(set);
		set.s.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
		set.s.index = VFIO_PCI_MSIX_IRQ_INDEX;
		set.s.start = cfg->vector;
		set.s.count = 1;
		memcpy(set.s.data, &p->irq_fd, sizeof(int));
		if (ioctl(p->vfio_dev, VFIO_DEVICE_SET_IRQS, &set) < 0)
			return -errno;
	}
	return 0;
}

/*
 * mmap a sysfs resource file (or any file) whole; its size is the BAR's. With a
 * root, the file is opened beneath it (vop/path.h).
 */
static int map_file(const char *root, const char *path, uint8_t **out, uint64_t *len)
{
	struct stat st;
	void *m;
	int fd = root ? vop_path_open(root, path, O_RDWR, 0) : open(path, O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return root ? fd : -errno;
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		close(fd);
		return -EINVAL;
	}
	*len = ((uint64_t)st.st_size + VOP_WIN_PAGE - 1) / VOP_WIN_PAGE * VOP_WIN_PAGE;
	m = mmap(NULL, *len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd); /* the mapping stays */
	if (m == MAP_FAILED)
		return -errno;
	*out = m;
	return 0;
}

int vop_pci_bar_open(const struct vop_pci_bar_config *cfg, struct vop_xport **out)
{
	struct pci_xport *p;
	int rc;

	*out = NULL;
	if ((!cfg->bar_path && !cfg->vfio_bdf) || cfg->doorbell > VOP_PCI_DB_POLL ||
	    cfg->peer_id < -1 || cfg->peer_id > VOP_IVSHMEM_MAX_ID || cfg->vector > 0xffffu ||
	    (cfg->doorbell == VOP_PCI_DB_EVENT && !cfg->vfio_bdf))
		return -EINVAL; /* an interrupt path needs vfio (MSI-X); sysfs polls */
	p = pci_alloc(cfg->doorbell, cfg->poll_max_us, cfg->vector);
	if (!p)
		return -ENOMEM;
	p->peer_id = cfg->peer_id;
	if (cfg->bar_path) {
		rc = map_file(cfg->bar_root, cfg->bar_path, &p->map, &p->map_len);
		if (rc)
			goto fail;
		p->x.map_kind = cfg->wc ? VOP_MAP_WC : VOP_MAP_UC;
		if (cfg->wc)
			p->x.ops = &pci_wc_ops;
	}
	if (cfg->vfio_bdf) {
		if (p->map) {
			rc = -EINVAL; /* one or the other */
			goto fail;
		}
		rc = vfio_open(p, cfg);
		if (rc)
			goto fail;
	}
	if (cfg->regs_path) {
		uint8_t *r;
		uint64_t rlen;

		rc = map_file(cfg->regs_root, cfg->regs_path, &r, &rlen);
		if (rc)
			goto fail;
		p->regs = (volatile uint32_t *)(void *)r;
		p->regs_len = rlen;
		if (rlen >= REG_DOORBELL + 4)
			p->own_id = (int)p->regs[REG_IVPOSITION / 4];
	}
	rc = set_window(p, p->map_len, cfg->offset, cfg->size);
	if (rc)
		goto fail;
	if (p->irq_fd < 0) {
		/* Polled: an eventfd of our own carries self-wakes only. */
		p->irq_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (p->irq_fd < 0) {
			rc = -errno;
			goto fail;
		}
		p->irq_owned = true;
	}
	*out = &p->x;
	return 0;
fail:
	pci_destroy(&p->x);
	return rc;
}

int vop_pci_own_id(const struct vop_xport *x)
{
	return ((const struct pci_xport *)x)->own_id;
}

int vop_pci_peer_id(const struct vop_xport *x)
{
	struct pci_xport *p = (struct pci_xport *)(uintptr_t)x;
	int id;

	pthread_mutex_lock(&p->lock);
	id = p->peer_id;
	pthread_mutex_unlock(&p->lock);
	return id;
}

void vop_pci_stats(const struct vop_xport *x, struct vop_pci_stats *out)
{
	const struct pci_xport *p = (const struct pci_xport *)x;

	out->signals = vop_private_load_u64(&p->signals);
	out->interrupts = vop_private_load_u64(&p->interrupts);
	out->polls = vop_private_load_u64(&p->polls);
}
