/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net on TAP devices, both roles. Contract in vop/dev_net.h.
 *
 * Device role, per loop round:
 *   transmitq: pop, check the header (private copy), writev(header copy +
 *              frame straight from the window) to the TAP, push len 0;
 *   receiveq:  pop a buffer, readv the next frame from the TAP straight
 *              into it, set num_buffers = 1, push; a popped buffer that met
 *              EAGAIN is kept for the next round.
 * Driver role:
 *   receiveq:  every pool buffer is posted once; on used, check the header,
 *              write the frame to the TAP, post the buffer again;
 *   transmitq: read a frame from the TAP into a free pool slot, post it;
 *              the slot is free again when the device returns it.
 * Both: one publish (and at most one doorbell) per queue per round; TAP
 * EAGAIN arms the loop's fd watcher.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../core/barrier.h"
#include "vop/dev_net.h"

#define NET_RXQ 0u
#define NET_TXQ 1u
#define NET_HDR 12u
#define NET_BUDGET 64      /* frames per queue per round */
#define NET_SLOT ((VOP_NET_RXBUF + 63u) & ~63u)

struct vop_net {
	bool driver;              /* role; set at create */
	struct vop_devloop *loop; /* set at create */
	struct vop_window *w;     /* set at create */
	struct vop_dev_info di;   /* set at create */
	int tap;                  /* TAP fd, non-blocking */
	char ifname[IFNAMSIZ];
	/* loop thread */
	bool started;
	uint64_t feat;
	struct vop_devq q[2];
	struct vop_chain stash;   /* device: popped rx buffer not yet filled */
	bool have_stash;
	uint16_t *tx_free;        /* driver: free tx slot indices */
	unsigned tx_nfree;
	unsigned tx_slots, rx_slots;
	struct vop_net_stats st;  /* loop thread writes (relaxed), any thread reads */
};

static void st_add(uint64_t *p, uint64_t v)
{
	vop_stat_add(p, v);
}

void vop_net_stats(struct vop_net *n, struct vop_net_stats *out)
{
	const uint64_t *src = (const uint64_t *)&n->st;
	uint64_t *dst = (uint64_t *)out;
	size_t i;

	for (i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = vop_read_once_u64(&src[i]);
}

const char *vop_net_ifname(struct vop_net *n)
{
	return n->ifname;
}

static const uint64_t net_features =
	(1ull << VOP_NET_F_CSUM) | (1ull << VOP_NET_F_GUEST_CSUM) | (1ull << VOP_NET_F_MTU) |
	(1ull << VOP_NET_F_MAC) | (1ull << VOP_NET_F_GUEST_TSO4) | (1ull << VOP_NET_F_GUEST_TSO6) |
	(1ull << VOP_NET_F_GUEST_ECN) | (1ull << VOP_NET_F_HOST_TSO4) |
	(1ull << VOP_NET_F_HOST_TSO6) | (1ull << VOP_NET_F_HOST_ECN) |
	(1ull << VOP_NET_F_MRG_RXBUF) | (1ull << VOP_NET_F_STATUS) | (1ull << VOP_F_EVENT_IDX);

void vop_net_spec(struct vop_dev_spec *spec, uint32_t dev_id, uint8_t device_side, uint16_t qsize,
		  uint16_t mtu, const uint8_t mac[6])
{
	static struct vop_net_config_space cs; /* publish copies it before returning */

	memset(spec, 0, sizeof(*spec));
	memcpy(cs.mac, mac, 6);
	cs.status = VOP_NET_S_LINK_UP;
	cs.max_virtqueue_pairs = 1;
	cs.mtu = mtu;
	spec->dev_id = dev_id;
	spec->device_type = VOP_VIRTIO_ID_NET;
	spec->features = net_features;
	spec->device_side = device_side;
	spec->num_queues = 2;
	spec->queue_size[NET_RXQ] = qsize;
	spec->queue_size[NET_TXQ] = qsize;
	spec->pool_size[NET_RXQ] = (uint64_t)qsize * NET_SLOT + 64;
	spec->pool_size[NET_TXQ] = (uint64_t)qsize * NET_SLOT + 64;
	spec->config_len = sizeof(cs);
	spec->config = &cs;
}

int vop_net_hdr_check(const struct vop_net_hdr *h, uint32_t len)
{
	uint8_t gso = h->gso_type & (uint8_t)~VOP_NET_HDR_GSO_ECN;

	if (len < 14 || len > 65535 + 14 + 4)
		return -EPROTO;
	if (h->flags & ~(VOP_NET_HDR_F_NEEDS_CSUM | VOP_NET_HDR_F_DATA_VALID))
		return -EPROTO;
	if (h->flags & VOP_NET_HDR_F_NEEDS_CSUM) {
		if ((uint32_t)h->csum_start + h->csum_offset + 2u > len)
			return -EPROTO;
	}
	switch (gso) {
	case VOP_NET_HDR_GSO_NONE:
		if (h->gso_type & VOP_NET_HDR_GSO_ECN)
			return -EPROTO;
		break;
	case VOP_NET_HDR_GSO_TCPV4:
	case VOP_NET_HDR_GSO_TCPV6:
	case VOP_NET_HDR_GSO_UDP:
		if (h->gso_size == 0 || !(h->flags & VOP_NET_HDR_F_NEEDS_CSUM) || h->hdr_len > len)
			return -EPROTO;
		break;
	default:
		return -EPROTO;
	}
	return 0;
}

static int tap_open(const char *name, char *ifname)
{
	struct ifreq ifr;
	int fd, sz = NET_HDR, rc;

	fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (name && name[0])
		snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
	if (ioctl(fd, TUNSETIFF, &ifr) || ioctl(fd, TUNSETVNETHDRSZ, &sz)) {
		rc = -errno;
		close(fd);
		return rc;
	}
	memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
	ifname[IFNAMSIZ - 1] = 0;
	return fd;
}

/* TUNSETOFFLOAD: which offloaded frames we accept when reading the TAP. */
static int tap_offload(int fd, uint64_t f, bool driver)
{
	unsigned off = 0;
	bool csum = driver ? (f >> VOP_NET_F_CSUM) & 1 : (f >> VOP_NET_F_GUEST_CSUM) & 1;

	if (csum) {
		off |= TUN_F_CSUM;
		if ((f >> (driver ? VOP_NET_F_HOST_TSO4 : VOP_NET_F_GUEST_TSO4)) & 1)
			off |= TUN_F_TSO4;
		if ((f >> (driver ? VOP_NET_F_HOST_TSO6 : VOP_NET_F_GUEST_TSO6)) & 1)
			off |= TUN_F_TSO6;
		if ((off & (TUN_F_TSO4 | TUN_F_TSO6)) &&
		    ((f >> (driver ? VOP_NET_F_HOST_ECN : VOP_NET_F_GUEST_ECN)) & 1))
			off |= TUN_F_TSO_ECN;
	}
	return ioctl(fd, TUNSETOFFLOAD, off) ? -errno : 0;
}

/* After EAGAIN on the TAP: let the watcher wake the loop when it is readable. */
static void arm_tap(struct vop_net *n)
{
	vop_devloop_watch(n->loop, n->tap, POLLIN);
}

/* ------------------------------------------------------------------ */
/* Device role                                                          */
/* ------------------------------------------------------------------ */

static int dev_tx(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_TXQ];
	struct vop_chain c;
	int k, rc, progress = 0;

	for (k = 0; k < NET_BUDGET; k++) {
		struct vop_net_hdr h;
		struct iovec iov[VOP_CHAIN_MAX_IOV + 1];
		int niov;
		uint32_t flen;

		rc = vop_vq_pop(&q->vq, &c);
		if (rc <= 0)
			break;
		progress = 1;
		flen = c.out_bytes >= NET_HDR ? c.out_bytes - NET_HDR : 0;
		if (c.out_bytes < NET_HDR || vop_chain_read(&c, 0, &h, NET_HDR) != NET_HDR ||
		    vop_net_hdr_check(&h, flen)) {
			st_add(&n->st.bad_headers, 1);
			vop_vq_push(&q->vq, c.head, 0);
			continue;
		}
		h.num_buffers = 0;
		iov[0].iov_base = &h; /* the checked private copy goes to the kernel */
		iov[0].iov_len = NET_HDR;
		niov = vop_chain_iov(&c, false, NET_HDR, flen, iov + 1, VOP_CHAIN_MAX_IOV);
		if (niov < 0 || writev(n->tap, iov, niov + 1) < 0) {
			st_add(&n->st.tx_dropped, 1);
		} else {
			st_add(&n->st.tx_frames, 1);
			st_add(&n->st.tx_bytes, flen);
			if (h.gso_type != VOP_NET_HDR_GSO_NONE)
				st_add(&n->st.gso_frames, 1);
		}
		vop_vq_push(&q->vq, c.head, 0);
	}
	if (progress)
		vop_devq_notify_if(n->w, vop_vq_publish_used(&q->vq));
	return progress;
}

static int dev_rx(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_RXQ];
	int k, rc, progress = 0, pushed = 0;

	for (k = 0; k < NET_BUDGET; k++) {
		struct iovec iov[VOP_CHAIN_MAX_IOV];
		struct vop_net_hdr *h;
		ssize_t r;
		int niov;

		if (!n->have_stash) {
			rc = vop_vq_pop(&q->vq, &n->stash);
			if (rc <= 0)
				break; /* no buffer: the driver's kick wakes us */
			if (n->stash.in_bytes < NET_HDR + 1514 || n->stash.iov[n->stash.n_out].len < NET_HDR) {
				st_add(&n->st.bad_headers, 1); /* buffer too small for a frame */
				vop_vq_push(&q->vq, n->stash.head, 0);
				pushed = 1;
				continue;
			}
			n->have_stash = true;
		}
		niov = vop_chain_iov(&n->stash, true, 0, n->stash.in_bytes, iov, VOP_CHAIN_MAX_IOV);
		r = readv(n->tap, iov, niov);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				arm_tap(n);
			}
			break;
		}
		progress = 1;
		n->have_stash = false;
		h = (struct vop_net_hdr *)(void *)n->stash.iov[n->stash.n_out].base;
		vop_write_once_u16(&h->num_buffers, 1);
		if ((size_t)r < NET_HDR) { /* cannot happen with a vnet-hdr TAP */
			st_add(&n->st.rx_dropped, 1);
			vop_vq_push(&q->vq, n->stash.head, 0);
		} else {
			st_add(&n->st.rx_frames, 1);
			st_add(&n->st.rx_bytes, (uint64_t)r - NET_HDR);
			vop_vq_push(&q->vq, n->stash.head, (uint32_t)r);
		}
		pushed = 1;
	}
	if (pushed)
		vop_devq_notify_if(n->w, vop_vq_publish_used(&q->vq));
	return progress | pushed;
}

static int dev_start(struct vop_net *n)
{
	struct vop_net_config_space cs;
	int rc;

	if (!vop_dev_device_ready(&n->di, &n->feat))
		return 0;
	rc = vop_devq_init(n->w, &n->di, NET_RXQ, false, n->feat, &n->q[NET_RXQ]);
	rc = rc ? rc : vop_devq_init(n->w, &n->di, NET_TXQ, false, n->feat, &n->q[NET_TXQ]);
	rc = rc ? rc : tap_offload(n->tap, n->feat, false);
	if (rc)
		return rc;
	memcpy(&cs, n->di.config, sizeof(cs));
	cs.status = VOP_NET_S_LINK_UP;
	vop_dev_config_write(&n->di, &cs, sizeof(cs));
	n->started = true;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Driver role                                                          */
/* ------------------------------------------------------------------ */

static uint8_t *slot_ptr(struct vop_devq *q, unsigned i)
{
	return q->pool + (uint64_t)i * NET_SLOT;
}

static int post_rx(struct vop_net *n, unsigned i)
{
	struct vop_devq *q = &n->q[NET_RXQ];
	struct vop_sg sg = { q->pool_off + (uint64_t)i * NET_SLOT, VOP_NET_RXBUF };

	return vop_vq_add(&q->vq, &sg, 0, 1, (void *)(uintptr_t)(i + 1));
}

static int drv_rx(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_RXQ];
	int progress = 0, k, rc;
	void *tok;
	uint32_t len;

	for (k = 0; k < NET_BUDGET; k++) {
		unsigned i;
		struct vop_net_hdr h;

		rc = vop_vq_get_used(&q->vq, &tok, &len);
		if (rc <= 0)
			break;
		i = (unsigned)(uintptr_t)tok - 1;
		memcpy(&h, slot_ptr(q, i), NET_HDR);
		if (len < NET_HDR || vop_net_hdr_check(&h, len - NET_HDR)) {
			st_add(&n->st.bad_headers, 1);
		} else {
			struct iovec iov[2] = { { &h, NET_HDR }, { slot_ptr(q, i) + NET_HDR, len - NET_HDR } };

			h.num_buffers = 0;
			if (writev(n->tap, iov, 2) < 0) {
				st_add(&n->st.rx_dropped, 1);
			} else {
				st_add(&n->st.rx_frames, 1);
				st_add(&n->st.rx_bytes, len - NET_HDR);
			}
		}
		post_rx(n, i);
		progress = 1;
	}
	if (progress)
		vop_devq_notify_if(n->w, vop_vq_kick_prepare(&q->vq));
	return progress;
}

static int drv_tx(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_TXQ];
	int progress = 0, posted = 0, k, rc;
	void *tok;
	uint32_t len;

	while ((rc = vop_vq_get_used(&q->vq, &tok, &len)) > 0) {
		n->tx_free[n->tx_nfree++] = (uint16_t)((uintptr_t)tok - 1);
		progress = 1;
	}
	for (k = 0; k < NET_BUDGET && n->tx_nfree; k++) {
		unsigned i = n->tx_free[n->tx_nfree - 1];
		struct vop_sg sg;
		ssize_t r = read(n->tap, slot_ptr(q, i), VOP_NET_RXBUF);

		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				arm_tap(n);
			}
			break;
		}
		progress = 1;
		if ((size_t)r <= NET_HDR)
			continue;
		sg.addr = q->pool_off + (uint64_t)i * NET_SLOT;
		sg.len = (uint32_t)r;
		if (vop_vq_add(&q->vq, &sg, 1, 0, (void *)(uintptr_t)(i + 1)) < 0) {
			st_add(&n->st.tx_dropped, 1);
			continue;
		}
		n->tx_nfree--;
		st_add(&n->st.tx_frames, 1);
		st_add(&n->st.tx_bytes, (uint64_t)r - NET_HDR);
		if (((struct vop_net_hdr *)(void *)slot_ptr(q, i))->gso_type)
			st_add(&n->st.gso_frames, 1);
		posted = 1;
	}
	if (posted)
		vop_devq_notify_if(n->w, vop_vq_kick_prepare(&q->vq));
	return progress;
}

/* ------------------------------------------------------------------ */
/* Loop ops                                                             */
/* ------------------------------------------------------------------ */

static int net_poll(void *arg)
{
	struct vop_net *n = arg;
	int p = 0;

	if (!n->started) {
		if (n->driver)
			return 0;
		p = dev_start(n);
		if (p <= 0)
			return p;
	}
	if (n->driver)
		return drv_tx(n) | drv_rx(n);
	return dev_tx(n) | dev_rx(n) | p;
}

static int net_prepare_sleep(void *arg)
{
	struct vop_net *n = arg;
	int pending = 0;

	if (!n->started)
		return 0;
	if (!n->q[NET_RXQ].vq.broken)
		pending |= vop_vq_enable_notify(&n->q[NET_RXQ].vq);
	if (!n->q[NET_TXQ].vq.broken)
		pending |= vop_vq_enable_notify(&n->q[NET_TXQ].vq);
	/*
	 * The TAP needs nothing here: every path that could read it and
	 * stopped on EAGAIN armed the watcher; a path that stopped for lack
	 * of buffers waits for the peer's notification enabled above.
	 */
	return pending;
}

static const struct vop_devback_ops net_ops = {
	.name = "net",
	.poll = net_poll,
	.prepare_sleep = net_prepare_sleep,
};

static int net_create(struct vop_devloop *l, uint32_t dev_id, const struct vop_net_config *c,
		      bool driver, struct vop_net **out)
{
	struct vop_net *n = calloc(1, sizeof(*n));
	int rc;

	*out = NULL;
	if (!n)
		return -ENOMEM;
	n->driver = driver;
	n->loop = l;
	n->w = vop_devloop_window(l);
	n->tap = -1;
	rc = vop_dev_find_wait(n->w, dev_id, VOP_VIRTIO_ID_NET,
			       c->find_timeout_ms ? c->find_timeout_ms : 10000, &n->di);
	if (rc)
		goto fail;
	if ((n->di.device_side == n->w->side) == driver || n->di.num_queues < 2) {
		rc = -EINVAL;
		goto fail;
	}
	rc = tap_open(c->tap_name, n->ifname);
	if (rc < 0)
		goto fail;
	n->tap = rc;
	if (driver) {
		unsigned i;
		struct ifreq ifr;
		struct vop_net_config_space cs;
		int s;

		vop_dev_driver_features(&n->di, net_features, &n->feat);
		rc = vop_devq_init(n->w, &n->di, NET_RXQ, true, n->feat, &n->q[NET_RXQ]);
		rc = rc ? rc : vop_devq_init(n->w, &n->di, NET_TXQ, true, n->feat, &n->q[NET_TXQ]);
		rc = rc ? rc : tap_offload(n->tap, n->feat, true);
		if (rc)
			goto fail;
		n->rx_slots = (unsigned)(n->q[NET_RXQ].pool_size / NET_SLOT);
		if (n->rx_slots > n->q[NET_RXQ].num)
			n->rx_slots = n->q[NET_RXQ].num;
		n->tx_slots = (unsigned)(n->q[NET_TXQ].pool_size / NET_SLOT);
		if (n->tx_slots > n->q[NET_TXQ].num)
			n->tx_slots = n->q[NET_TXQ].num;
		n->tx_free = calloc(n->tx_slots ? n->tx_slots : 1, sizeof(uint16_t));
		if (!n->tx_free || !n->rx_slots || !n->tx_slots) {
			rc = n->tx_free ? -EPROTO : -ENOMEM;
			goto fail;
		}
		for (i = 0; i < n->tx_slots; i++)
			n->tx_free[n->tx_nfree++] = (uint16_t)i;
		for (i = 0; i < n->rx_slots; i++)
			post_rx(n, i);
		vop_vq_kick_prepare(&n->q[NET_RXQ].vq);
		/* MAC and MTU from config space onto the TAP */
		memcpy(&cs, n->di.config, sizeof(cs));
		s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (s >= 0) {
			memset(&ifr, 0, sizeof(ifr));
			memcpy(ifr.ifr_name, n->ifname, IFNAMSIZ);
			if ((n->feat >> VOP_NET_F_MTU) & 1 && cs.mtu >= 68) {
				ifr.ifr_mtu = cs.mtu;
				ioctl(s, SIOCSIFMTU, &ifr);
			}
			if ((n->feat >> VOP_NET_F_MAC) & 1 && !(cs.mac[0] & 1)) {
				ifr.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
				memcpy(ifr.ifr_hwaddr.sa_data, cs.mac, 6);
				ioctl(s, SIOCSIFHWADDR, &ifr);
			}
			close(s);
		}
		vop_dev_driver_ok(&n->di);
		n->started = true;
		vop_window_notify_peer(n->w);
	}
	rc = vop_devloop_add(l, &net_ops, n);
	if (rc)
		goto fail;
	*out = n;
	return 0;
fail:
	vop_net_destroy(n);
	return rc;
}

int vop_net_device_create(struct vop_devloop *l, uint32_t dev_id, const struct vop_net_config *c,
			  struct vop_net **out)
{
	return net_create(l, dev_id, c, false, out);
}

int vop_net_driver_create(struct vop_devloop *l, uint32_t dev_id, const struct vop_net_config *c,
			  struct vop_net **out)
{
	return net_create(l, dev_id, c, true, out);
}

void vop_net_destroy(struct vop_net *n)
{
	if (!n)
		return;
	vop_devq_destroy(&n->q[0]);
	vop_devq_destroy(&n->q[1]);
	if (n->tap >= 0)
		close(n->tap);
	free(n->tx_free);
	free(n);
}

int vop_net_queue_stats(struct vop_net *d, unsigned q, struct vop_vq_stats *out)
{
	if (q >= 2 || !(d->q[q]).ready)
		return -EINVAL;
	vop_vq_stats_read(&(d->q[q]).vq, out);
	return 0;
}
