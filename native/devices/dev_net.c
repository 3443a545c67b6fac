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
#include <arpa/inet.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../core/win_access.h"
#include "vop/dev_net.h"
#include "vop/path.h"
#include "vop/dev_parse.h"

#define NET_RXQ 0u
#define NET_TXQ 1u
#define NET_HDR 12u
#define NET_BUDGET 64      /* frames per queue per round */
#define NET_SLOT ((VOP_NET_RXBUF + 63u) & ~63u)
#define NET_MAX_PIECES 48u  /* receive buffers one frame may span (64 KiB / 1.5 KiB) */
#define NET_MRG_IOV 1024    /* IOV_MAX */

struct vop_net {
	bool driver;              /* role; set at create */
	struct vop_devctx *ctx;   /* set at create */
	struct vop_window *w;     /* set at create */
	struct vop_dev_info di;   /* set at create */
	int tap;                  /* TAP fd, non-blocking */
	_Atomic int in_fired;     /* the TAP/socket may be readable (set by the watcher) */
	char ifname[IFNAMSIZ];
	/* worker thread */
	bool started;             /* between start and stop */
	uint64_t feat;
	struct vop_devq q[2];
	struct vop_chain *stash;  /* device: [NET_BUDGET] popped rx buffers not yet filled */
	int nstash;
	struct vop_chain *chains; /* device: [NET_BUDGET] tx chains of one round */
	struct mmsghdr msgs[NET_BUDGET];
	struct iovec iovs[NET_BUDGET][VOP_CHAIN_MAX_IOV + 1];
	struct vop_net_hdr hdrs[NET_BUDGET]; /* checked private header copies */
	uint32_t lens[NET_BUDGET];
	int pend_cnt, pend_off;      /* send batch not fully taken by the socket (EAGAIN) */
	int pend_npop;               /* device: chains of that batch (pushed when done) */
	struct mmsghdr rmsgs[NET_BUDGET];  /* receive side of the port */
	struct iovec riovs[NET_BUDGET][VOP_CHAIN_MAX_IOV + 1];
	bool mrg;                 /* VIRTIO_NET_F_MRG_RXBUF negotiated */
	uint32_t max_frame;       /* device: header + largest frame the TAP may hand us */
	uint64_t stash_bytes;     /* device: writable bytes of the stashed rx chains */
	struct iovec *miov;       /* device: [NET_MRG_IOV] iovec of one mergeable read */
	uint32_t rxbuf;           /* driver: bytes posted per receive buffer */
	uint16_t fslots[NET_BUDGET][NET_MAX_PIECES]; /* driver: slots of each frame in a send batch */
	uint8_t fnslots[NET_BUDGET];
	bool dgram;               /* datagram socket instead of a TAP */
	struct vop_path_sock lsock; /* bound Unix datagram socket (removed on destroy if still ours) */
	struct vop_path_sock psock; /* directory of the Unix peer (kept open: the peer address names it) */
	struct sockaddr_storage peer; /* datagram: where frames go */
	socklen_t peer_len;
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

/* Offered by the device and wanted by the driver (a constant expression: it seeds vop_net_ops). */
#define NET_FEATURES                                                                                  \
	((1ull << VOP_NET_F_CSUM) | (1ull << VOP_NET_F_GUEST_CSUM) | (1ull << VOP_NET_F_MTU) |     \
	 (1ull << VOP_NET_F_MAC) | (1ull << VOP_NET_F_GUEST_TSO4) | (1ull << VOP_NET_F_GUEST_TSO6) | \
	 (1ull << VOP_NET_F_GUEST_ECN) | (1ull << VOP_NET_F_HOST_TSO4) |                           \
	 (1ull << VOP_NET_F_HOST_TSO6) | (1ull << VOP_NET_F_HOST_ECN) |                            \
	 (1ull << VOP_NET_F_MRG_RXBUF) | (1ull << VOP_NET_F_STATUS) | (1ull << VOP_F_EVENT_IDX))

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
	spec->features = NET_FEATURES;
	spec->device_side = device_side;
	spec->num_queues = 2;
	spec->queue_size[NET_RXQ] = qsize;
	spec->queue_size[NET_TXQ] = qsize;
	spec->pool_size[NET_RXQ] = (uint64_t)qsize * NET_SLOT + 64;
	spec->pool_size[NET_TXQ] = (uint64_t)qsize * NET_SLOT + 64;
	spec->config_len = sizeof(cs);
	spec->config = &cs;
}

/* vop_net_hdr_check() and vop_net_tx_parse() live in net_parse.c (pure, fuzzed). */

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
	/*
	 * A deeper TAP queue (default 1000 frames) absorbs the time our loop
	 * needs to wake up (10-20 us here) under bursts instead of dropping
	 * at the TAP; measured: 70 k of 107 k UDP frames lost at the driver's
	 * TAP at 200 Mbit/s with 1000, none with 10000. Best effort.
	 */
	{
		int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

		if (s >= 0) {
			struct ifreq q;

			memset(&q, 0, sizeof(q));
			memcpy(q.ifr_name, ifname, IFNAMSIZ);
			q.ifr_qlen = 10000;
			ioctl(s, SIOCSIFTXQLEN, &q);
			close(s);
		}
	}
	return fd;
}

/* "PATH" (Unix datagram, starts with '/') or "HOST:PORT" (UDP) into a sockaddr. */
static int parse_addr(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (spec[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;

		if (strlen(spec) >= sizeof(un->sun_path))
			return -ENAMETOOLONG;
		un->sun_family = AF_UNIX;
		strcpy(un->sun_path, spec);
		*len = sizeof(*un);
		return AF_UNIX;
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;
		char host[64];
		const char *colon = strrchr(spec, ':');

		if (!colon || (size_t)(colon - spec) >= sizeof(host))
			return -EINVAL;
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = 0;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)atoi(colon + 1));
		if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
			return -EINVAL;
		*len = sizeof(*in);
		return AF_INET;
	}
}

/*
 * Datagram port: bound to local, frames go to peer (same family). Unix paths
 * lie beneath root (vop/path.h): bound and addressed through a directory fd.
 * Returns fd or -errno.
 */
static int dgram_open(struct vop_net *n, const char *local, const char *peer, const char *root)
{
	struct sockaddr_storage ls;
	socklen_t ll;
	int fam = parse_addr(local, &ls, &ll), fam2, fd, buf = 4 << 20;

	if (fam < 0)
		return fam;
	fam2 = parse_addr(peer, &n->peer, &n->peer_len);
	if (fam2 < 0 || fam2 != fam)
		return fam2 < 0 ? fam2 : -EINVAL;
	if (fam == AF_UNIX) {
		int rc = vop_path_peer_unix(root, peer, &n->psock, (struct sockaddr_un *)&n->peer, &n->peer_len);

		if (rc)
			return rc;
	}
	fd = socket(fam, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	/* big socket buffers: the FORCE variants pass rmem_max/wmem_max when we may */
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf)))
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf)))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	if (fam == AF_UNIX) {
		/* a stale socket of ours is replaced; anything else at that name is refused */
		int rc = vop_path_bind_unix(fd, root, local, 0600, &n->lsock);

		if (rc) {
			close(fd);
			return rc;
		}
	} else if (bind(fd, (struct sockaddr *)&ls, ll)) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	snprintf(n->ifname, sizeof(n->ifname), "dgram");
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

/*
 * After EAGAIN on the TAP: stop reading it until the watcher says it is
 * readable (an EAGAIN read costs a system call, ~1.5 us here, and a busy
 * worker would otherwise retry on every pass).
 */
static void arm_tap(struct vop_net *n)
{
	atomic_store_explicit(&n->in_fired, 0, memory_order_release);
	vop_devctx_watch_flag(n->ctx, n->tap, POLLIN, &n->in_fired);
}

/* ------------------------------------------------------------------ */
/* Frame port: TAP (one syscall per frame, the kernel has no batch for   */
/* TAP) or datagram socket (sendmmsg/recvmmsg, one syscall per batch)    */
/* ------------------------------------------------------------------ */

/*
 * Send cnt frames (msgs[i].msg_iov set). Returns how many were consumed:
 * sent, or failed for good (counted in *failed: EMSGSIZE, a TAP refusing
 * a frame...; msg_len 0 marks which). Fewer than cnt only when a datagram
 * peer would block.
 */
static int port_send(struct vop_net *n, struct mmsghdr *msgs, int cnt, int *failed)
{
	int i, done = 0;

	*failed = 0;
	if (cnt == 0)
		return 0;
	if (n->dgram) {
		for (i = 0; i < cnt; i++) {
			msgs[i].msg_hdr.msg_name = &n->peer;
			msgs[i].msg_hdr.msg_namelen = n->peer_len;
		}
		while (done < cnt) {
			int r = sendmmsg(n->tap, msgs + done, (unsigned)(cnt - done), MSG_DONTWAIT);

			if (r > 0) {
				done += r;
				continue;
			}
			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && (errno == EAGAIN || errno == ENOBUFS))
				break;
			msgs[done].msg_len = 0;
			done++; /* this one failed for good (EMSGSIZE, no peer...): skip it */
			(*failed)++;
		}
		return done;
	}
	for (i = 0; i < cnt; i++) {
		ssize_t r = writev(n->tap, msgs[i].msg_hdr.msg_iov, (int)msgs[i].msg_hdr.msg_iovlen);

		msgs[i].msg_len = r < 0 ? 0 : (unsigned)r;
		if (r < 0)
			(*failed)++;
	}
	return cnt;
}

/*
 * Receive up to cnt frames into msgs (msg_iov set); lengths in msg_len.
 * Returns the count; 0 means nothing ready (the watcher is armed).
 */
static int port_recv(struct vop_net *n, struct mmsghdr *msgs, int cnt)
{
	int got = 0;

	if (cnt == 0 || !atomic_load(&n->in_fired))
		return 0;
	if (n->dgram) {
		int r = recvmmsg(n->tap, msgs, (unsigned)cnt, MSG_DONTWAIT, NULL);

		if (r > 0)
			return r;
		arm_tap(n);
		return 0;
	}
	while (got < cnt) {
		ssize_t r = readv(n->tap, msgs[got].msg_hdr.msg_iov, (int)msgs[got].msg_hdr.msg_iovlen);

		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				arm_tap(n);
			break;
		}
		msgs[got].msg_len = (unsigned)r;
		got++;
	}
	return got;
}

/* ------------------------------------------------------------------ */
/* Device role                                                          */
/* ------------------------------------------------------------------ */

/*
 * Device: hand the current send batch to the port. A datagram peer that
 * is not reading (EAGAIN) holds the batch: its chains stay popped (the
 * driver sees back-pressure, nothing is dropped) until the socket is
 * writable again. Returns 1 when the batch completed.
 */
static int dev_tx_flush(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_TXQ];
	int sent, k, failed;

	sent = port_send(n, n->msgs + n->pend_off, n->pend_cnt - n->pend_off, &failed);
	st_add(&n->st.tx_frames, (uint64_t)(sent - failed));
	st_add(&n->st.tx_dropped, (uint64_t)failed);
	n->pend_off += sent;
	if (n->pend_off < n->pend_cnt) {
		vop_devctx_watch(n->ctx, n->tap, POLLOUT);
		return sent > 0;
	}
	/* the frames left the window: hand every chain of the batch back */
	for (k = 0; k < n->pend_npop; k++)
		vop_vq_push(&q->vq, n->chains[k].head, 0);
	n->pend_cnt = n->pend_off = n->pend_npop = 0;
	vop_devq_notify(n->ctx, q, vop_vq_publish_used(&q->vq));
	return 1;
}

static int dev_tx(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_TXQ];
	int k, rc, cnt = 0, npop = 0;

	if (n->pend_npop)
		return dev_tx_flush(n);

	for (k = 0; k < NET_BUDGET; k++) {
		struct vop_chain *c = &n->chains[k];
		struct vop_net_hdr *h = &n->hdrs[cnt];
		struct iovec *iov = n->iovs[cnt];
		int niov;
		uint32_t flen;

		rc = vop_vq_pop(&q->vq, c);
		if (rc <= 0)
			break;
		npop++;
		niov = vop_net_tx_parse(c, h, &flen, iov + 1, VOP_CHAIN_MAX_IOV);
		if (niov < 0) {
			st_add(niov == -EPROTO ? &n->st.bad_headers : &n->st.tx_dropped, 1);
			continue;
		}
		h->num_buffers = 0;
		iov[0].iov_base = h; /* the checked private copy goes to the kernel */
		iov[0].iov_len = NET_HDR;
		memset(&n->msgs[cnt], 0, sizeof(n->msgs[cnt]));
		n->msgs[cnt].msg_hdr.msg_iov = iov;
		n->msgs[cnt].msg_hdr.msg_iovlen = (size_t)niov + 1;
		n->lens[cnt] = flen;
		if (h->gso_type != VOP_NET_HDR_GSO_NONE)
			st_add(&n->st.gso_frames, 1);
		cnt++;
	}
	if (npop == 0)
		return 0;
	for (k = 0; k < cnt; k++)
		st_add(&n->st.tx_bytes, n->lens[k]);
	n->pend_cnt = cnt;
	n->pend_off = 0;
	n->pend_npop = npop;
	return dev_tx_flush(n) | 1;
}

/*
 * Device, TAP, VIRTIO_NET_F_MRG_RXBUF: one readv per frame straight into as
 * many receive buffers as cover the largest possible frame; the frame then
 * uses the first num_buffers of them (pushed consecutively, header in the
 * first), the rest stay stashed for the next frame. Works with big buffers
 * (one per frame) and with the small buffers stock drivers post.
 */
static int dev_rx_mrg(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_RXQ];
	int f, pushed = 0;

	for (f = 0; f < NET_BUDGET; f++) {
		int niov = 0, k, nb = 0;
		uint64_t cover = 0;
		ssize_t r;
		uint32_t left;
		struct vop_net_hdr *h;

		while (n->nstash < NET_BUDGET && n->stash_bytes < n->max_frame) {
			struct vop_chain *c = &n->stash[n->nstash];

			if (vop_vq_pop(&q->vq, c) <= 0)
				break; /* the driver's kick brings more */
			if (c->n_in == 0 || c->iov[c->n_out].len < NET_HDR) {
				st_add(&n->st.bad_headers, 1); /* cannot hold a header */
				vop_vq_push(&q->vq, c->head, 0);
				pushed = 1;
				continue;
			}
			n->stash_bytes += c->in_bytes;
			n->nstash++;
		}
		if (n->stash_bytes < n->max_frame)
			break; /* not enough room for the largest frame: never truncate */
		if (!atomic_load(&n->in_fired))
			break; /* the watcher tells when the TAP has a frame */
		for (k = 0; k < n->nstash && cover < n->max_frame; k++) {
			int m = vop_chain_iov(&n->stash[k], true, 0, n->stash[k].in_bytes, n->miov + niov,
					      NET_MRG_IOV - niov);

			if (m < 0)
				break;
			niov += m;
			cover += n->stash[k].in_bytes;
		}
		r = readv(n->tap, n->miov, niov);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				arm_tap(n);
			break;
		}
		if ((size_t)r < NET_HDR + 14) { /* cannot happen with a vnet-hdr TAP */
			st_add(&n->st.rx_dropped, 1);
			continue; /* buffers stay stashed */
		}
		left = (uint32_t)r;
		h = (struct vop_net_hdr *)(void *)n->stash[0].iov[n->stash[0].n_out].base;
		for (k = 0; k < n->nstash && left; k++)
			nb++, left -= left < n->stash[k].in_bytes ? left : n->stash[k].in_bytes;
		vop_write_once_u16(&h->num_buffers, (uint16_t)nb);
		left = (uint32_t)r;
		for (k = 0; k < nb; k++) {
			uint32_t take = left < n->stash[k].in_bytes ? left : n->stash[k].in_bytes;

			vop_vq_push(&q->vq, n->stash[k].head, take);
			n->stash_bytes -= n->stash[k].in_bytes;
			left -= take;
		}
		memmove(&n->stash[0], &n->stash[nb], sizeof(n->stash[0]) * (size_t)(n->nstash - nb));
		n->nstash -= nb;
		st_add(&n->st.rx_frames, 1);
		st_add(&n->st.rx_buffers, (uint64_t)nb);
		st_add(&n->st.rx_bytes, (uint64_t)r - NET_HDR);
		pushed = 1;
	}
	if (pushed)
		vop_devq_notify(n->ctx, q, vop_vq_publish_used(&q->vq));
	return pushed;
}

static int dev_rx(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_RXQ];
	int k, got, pushed = 0;

	/* top up the stash of receive buffers */
	while (n->nstash < NET_BUDGET) {
		struct vop_chain *c = &n->stash[n->nstash];

		if (vop_vq_pop(&q->vq, c) <= 0)
			break; /* no buffer: the driver's kick wakes us */
		if (c->in_bytes < NET_HDR + 1514 || c->iov[c->n_out].len < NET_HDR) {
			st_add(&n->st.bad_headers, 1); /* buffer too small for a frame */
			vop_vq_push(&q->vq, c->head, 0);
			pushed = 1;
			continue;
		}
		n->nstash++;
	}
	for (k = 0; k < n->nstash; k++) {
		int niov = vop_chain_iov(&n->stash[k], true, 0, n->stash[k].in_bytes, n->riovs[k],
					 VOP_CHAIN_MAX_IOV);

		memset(&n->rmsgs[k], 0, sizeof(n->rmsgs[k]));
		n->rmsgs[k].msg_hdr.msg_iov = n->riovs[k];
		n->rmsgs[k].msg_hdr.msg_iovlen = niov > 0 ? (size_t)niov : 0;
	}
	got = port_recv(n, n->rmsgs, n->nstash);
	for (k = 0; k < got; k++) {
		struct vop_chain *c = &n->stash[k];
		struct vop_net_hdr *h = (struct vop_net_hdr *)(void *)c->iov[c->n_out].base;
		uint32_t r = n->rmsgs[k].msg_len;

		if (r < NET_HDR + 14 || (n->dgram && (n->rmsgs[k].msg_hdr.msg_flags & MSG_TRUNC))) {
			st_add(&n->st.rx_dropped, 1);
			vop_vq_push(&q->vq, c->head, 0);
			continue;
		}
		vop_write_once_u16(&h->num_buffers, 1);
		st_add(&n->st.rx_frames, 1);
		st_add(&n->st.rx_buffers, 1);
		st_add(&n->st.rx_bytes, r - NET_HDR);
		vop_vq_push(&q->vq, c->head, r);
	}
	if (got > 0) {
		memmove(&n->stash[0], &n->stash[got], sizeof(n->stash[0]) * (size_t)(n->nstash - got));
		n->nstash -= got;
		pushed = 1;
	}
	if (pushed)
		vop_devq_notify(n->ctx, q, vop_vq_publish_used(&q->vq));
	return pushed;
}

static int dev_start(struct vop_net *n)
{
	struct vop_net_config_space cs;
	int rc;

	rc = vop_devq_start(n->ctx, &n->di, NET_RXQ, n->feat, &n->q[NET_RXQ]);
	rc = rc ? rc : vop_devq_start(n->ctx, &n->di, NET_TXQ, n->feat, &n->q[NET_TXQ]);
	rc = rc ? rc : (n->dgram ? 0 : tap_offload(n->tap, n->feat, false));
	if (rc)
		return rc;
	memcpy(&cs, n->di.config, sizeof(cs));
	cs.status = VOP_NET_S_LINK_UP;
	vop_devctx_config_write(n->ctx, &n->di, &cs, sizeof(cs));
	n->mrg = (n->feat >> VOP_NET_F_MRG_RXBUF) & 1;
	/* with guest TSO the TAP may hand us 64 KiB frames; else MTU + Ethernet + VLAN */
	n->max_frame = (n->feat & ((1ull << VOP_NET_F_GUEST_TSO4) | (1ull << VOP_NET_F_GUEST_TSO6)))
			       ? VOP_NET_RXBUF
			       : NET_HDR + (cs.mtu >= 68 ? cs.mtu : 1500u) + 18u;
	return 0;
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
	struct vop_sg sg = { q->pool_off + (uint64_t)i * NET_SLOT, n->rxbuf };

	return vop_vq_add(&q->vq, &sg, 0, 1, (void *)(uintptr_t)(i + 1));
}

/* Driver: send the batch of received frames; held (not dropped) on EAGAIN. */
static int drv_rx_flush(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_RXQ];
	int sent, k, j, first = n->pend_off, failed;

	sent = port_send(n, n->msgs + n->pend_off, n->pend_cnt - n->pend_off, &failed);
	st_add(&n->st.rx_frames, (uint64_t)(sent - failed));
	st_add(&n->st.rx_dropped, (uint64_t)failed);
	n->pend_off += sent;
	for (k = first; k < n->pend_off; k++) {
		if (n->msgs[k].msg_len)
			st_add(&n->st.rx_buffers, n->fnslots[k]); /* a frame the port took */
		for (j = 0; j < n->fnslots[k]; j++)
			post_rx(n, n->fslots[k][j]); /* buffers free again */
	}
	/* also publishes buffers re-posted after a bad header */
	vop_devq_notify_if(n->w, vop_vq_kick_prepare(&q->vq));
	if (n->pend_off < n->pend_cnt) {
		vop_devctx_watch(n->ctx, n->tap, POLLOUT);
		return sent > 0;
	}
	n->pend_cnt = n->pend_off = 0;
	return 1;
}

/*
 * Driver: collect received frames (with MRG_RXBUF a frame spans
 * num_buffers consecutive used buffers, header in the first), check each
 * header, hand the batch to the port. A frame whose pieces are not all
 * published in the same round is dropped (counted in rx_dropped): a device
 * publishes a frame's buffers together.
 */
static int drv_rx(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_RXQ];
	int cnt = 0, got = 0, j;
	unsigned pieces = 0, need = 0;
	uint32_t total = 0;
	void *tok;
	uint32_t len;

	if (n->pend_cnt)
		return drv_rx_flush(n);
	while (cnt < NET_BUDGET) {
		unsigned i;
		struct vop_net_hdr *h = &n->hdrs[cnt];
		struct iovec *iov = n->iovs[cnt];

		if (vop_vq_get_used(&q->vq, &tok, &len) <= 0)
			break;
		got = 1;
		i = (unsigned)(uintptr_t)tok - 1;
		if (pieces == 0) {
			memcpy(h, slot_ptr(q, i), NET_HDR); /* private copy: read once, checked */
			need = n->mrg ? h->num_buffers : 1;
			if (len < NET_HDR || need == 0 || need > NET_MAX_PIECES) {
				st_add(&n->st.bad_headers, 1);
				post_rx(n, i);
				continue;
			}
			iov[0].iov_base = h;
			iov[0].iov_len = NET_HDR;
			iov[1].iov_base = slot_ptr(q, i) + NET_HDR;
			iov[1].iov_len = len - NET_HDR;
			total = len - NET_HDR;
		} else {
			iov[1 + pieces].iov_base = slot_ptr(q, i);
			iov[1 + pieces].iov_len = len;
			total += len;
		}
		n->fslots[cnt][pieces++] = (uint16_t)i;
		if (pieces < need)
			continue;
		if (vop_net_hdr_check(h, total)) {
			st_add(&n->st.bad_headers, 1);
			for (j = 0; j < (int)pieces; j++)
				post_rx(n, n->fslots[cnt][j]);
			pieces = 0;
			continue;
		}
		h->num_buffers = 0;
		memset(&n->msgs[cnt], 0, sizeof(n->msgs[cnt]));
		n->msgs[cnt].msg_hdr.msg_iov = iov;
		n->msgs[cnt].msg_hdr.msg_iovlen = 1 + pieces;
		n->lens[cnt] = total;
		n->fnslots[cnt] = (uint8_t)pieces;
		st_add(&n->st.rx_bytes, total);
		cnt++;
		pieces = 0;
	}
	if (pieces) { /* incomplete frame at the end of what was published */
		st_add(&n->st.rx_dropped, 1);
		for (j = 0; j < (int)pieces; j++)
			post_rx(n, n->fslots[cnt][j]);
	}
	if (!got)
		return 0;
	n->pend_cnt = cnt;
	n->pend_off = 0;
	return drv_rx_flush(n) | 1;
}

static int drv_tx(struct vop_net *n)
{
	struct vop_devq *q = &n->q[NET_TXQ];
	int progress = 0, posted = 0, k, got, cnt;
	unsigned idx[NET_BUDGET];
	void *tok;
	uint32_t len;

	while (vop_vq_get_used(&q->vq, &tok, &len) > 0) {
		n->tx_free[n->tx_nfree++] = (uint16_t)((uintptr_t)tok - 1);
		progress = 1;
	}
	cnt = n->tx_nfree < NET_BUDGET ? (int)n->tx_nfree : NET_BUDGET;
	for (k = 0; k < cnt; k++) {
		unsigned i = n->tx_free[n->tx_nfree - 1 - (unsigned)k];

		idx[k] = i;
		n->riovs[k][0].iov_base = slot_ptr(q, i);
		n->riovs[k][0].iov_len = VOP_NET_RXBUF;
		memset(&n->rmsgs[k], 0, sizeof(n->rmsgs[k]));
		n->rmsgs[k].msg_hdr.msg_iov = n->riovs[k];
		n->rmsgs[k].msg_hdr.msg_iovlen = 1;
	}
	got = port_recv(n, n->rmsgs, cnt);
	n->tx_nfree -= (unsigned)got; /* idx[0 .. got) leave the free list */
	for (k = 0; k < got; k++) {
		unsigned i = idx[k];
		uint32_t r = n->rmsgs[k].msg_len;
		struct vop_sg sg;

		progress = 1;
		if (r <= NET_HDR + 14 || (n->dgram && (n->rmsgs[k].msg_hdr.msg_flags & MSG_TRUNC))) {
			n->tx_free[n->tx_nfree++] = (uint16_t)i; /* runt or truncated: drop */
			st_add(&n->st.tx_dropped, 1);
			continue;
		}
		sg.addr = q->pool_off + (uint64_t)i * NET_SLOT;
		sg.len = r;
		if (vop_vq_add(&q->vq, &sg, 1, 0, (void *)(uintptr_t)(i + 1)) < 0) {
			n->tx_free[n->tx_nfree++] = (uint16_t)i;
			st_add(&n->st.tx_dropped, 1);
			continue;
		}
		st_add(&n->st.tx_frames, 1);
		st_add(&n->st.tx_bytes, (uint64_t)r - NET_HDR);
		if (((struct vop_net_hdr *)(void *)slot_ptr(q, i))->gso_type)
			st_add(&n->st.gso_frames, 1);
		posted = 1;
	}
	if (posted)
		vop_devq_notify_if(n->w, vop_vq_kick_prepare(&q->vq));
	return progress | posted;
}

/* ------------------------------------------------------------------ */
/* Loop ops                                                             */
/* ------------------------------------------------------------------ */

/* Driver: set up both queues, post every receive buffer. */
static int drv_start(struct vop_net *n)
{
	unsigned i;
	int rc;

	n->mrg = (n->feat >> VOP_NET_F_MRG_RXBUF) & 1;
	rc = vop_devq_init(n->w, &n->di, NET_RXQ, true, n->feat, &n->q[NET_RXQ]);
	rc = rc ? rc : vop_devq_init(n->w, &n->di, NET_TXQ, true, n->feat, &n->q[NET_TXQ]);
	rc = rc ? rc : (n->dgram ? 0 : tap_offload(n->tap, n->feat, true));
	if (rc)
		return rc;
	n->tx_nfree = 0;
	for (i = 0; i < n->tx_slots; i++)
		n->tx_free[n->tx_nfree++] = (uint16_t)i;
	for (i = 0; i < n->rx_slots; i++)
		post_rx(n, i);
	vop_vq_kick_prepare(&n->q[NET_RXQ].vq); /* the device reads it after DRIVER_OK */
	return 0;
}

static int net_start(void *arg, uint64_t feat, bool resume)
{
	struct vop_net *n = arg;
	int rc;

	(void)resume; /* never offered: net does not negotiate VOP_F_INFLIGHT */
	n->feat = feat;
	n->nstash = 0;
	n->stash_bytes = 0;
	n->pend_cnt = n->pend_off = n->pend_npop = 0;
	atomic_store_explicit(&n->in_fired, 1, memory_order_release); /* read until the first EAGAIN */
	rc = n->driver ? drv_start(n) : dev_start(n);
	if (rc)
		return rc;
	n->started = true;
	return 0;
}

static int net_stop(void *arg)
{
	struct vop_net *n = arg;

	n->started = false;
	n->nstash = 0;
	n->stash_bytes = 0;
	n->pend_cnt = n->pend_off = n->pend_npop = 0;
	vop_devq_destroy(&n->q[NET_RXQ]);
	vop_devq_destroy(&n->q[NET_TXQ]);
	return 0;
}

static struct vop_vq *net_queue(void *arg, unsigned q)
{
	struct vop_net *n = arg;

	return q < 2 ? &n->q[q].vq : NULL;
}

static int net_poll(void *arg)
{
	struct vop_net *n = arg;

	if (!n->started)
		return 0;
	if (n->driver)
		return drv_tx(n) | drv_rx(n);
	return dev_tx(n) | ((n->mrg && !n->dgram) ? dev_rx_mrg(n) : dev_rx(n));
}

static int net_prepare_sleep(void *arg)
{
	struct vop_net *n = arg;
	int pending = 0;

	if (!n->started)
		return 0;
	/*
	 * Device receiveq: buffers the driver posted are not work by
	 * themselves; while we hold enough of them we wait for the TAP (the
	 * watcher is armed). Asking for a notification there would report
	 * the unconsumed buffers as pending and the loop would never sleep.
	 */
	if (!n->q[NET_RXQ].vq.broken &&
	    (n->driver || ((n->mrg && !n->dgram) ? n->stash_bytes < n->max_frame : n->nstash == 0)))
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

const struct vop_devback_ops vop_net_ops = {
	.name = "net",
	.driver_features = NET_FEATURES,
	.start = net_start,
	.stop = net_stop,
	.poll = net_poll,
	.prepare_sleep = net_prepare_sleep,
	.queue = net_queue,
};

static int net_create(struct vop_devctx *ctx, uint32_t dev_id, const struct vop_net_config *c,
		      bool driver, struct vop_net **out)
{
	struct vop_net *n = calloc(1, sizeof(*n));
	int rc;

	*out = NULL;
	if (!n)
		return -ENOMEM;
	n->driver = driver;
	n->ctx = ctx;
	n->w = vop_devctx_window(ctx);
	n->tap = -1;
	vop_path_sock_init(&n->lsock);
	vop_path_sock_init(&n->psock);
	rc = vop_devctx_find(ctx, dev_id, VOP_VIRTIO_ID_NET, c->find_timeout_ms, &n->di);
	if (rc)
		goto fail;
	if ((n->di.device_side == vop_devctx_side(ctx)) == driver || (driver && !n->w) || n->di.num_queues < 2) {
		rc = -EINVAL;
		goto fail;
	}
	if (c->share) {
		/* a further queue pair of one device: the same TAP or socket, through its own fd */
		n->dgram = c->share->dgram;
		memcpy(n->ifname, c->share->ifname, IFNAMSIZ);
		n->peer = c->share->peer;
		n->peer_len = c->share->peer_len;
		rc = fcntl(c->share->tap, F_DUPFD_CLOEXEC, 0);
		if (rc < 0)
			rc = -errno;
	} else {
		n->dgram = c->dgram_local && c->dgram_peer;
		rc = n->dgram ? dgram_open(n, c->dgram_local, c->dgram_peer, c->dgram_root)
			      : tap_open(c->tap_name, n->ifname);
	}
	if (rc < 0)
		goto fail;
	n->tap = rc;
	n->stash = calloc(NET_BUDGET, sizeof(*n->stash));
	n->chains = calloc(NET_BUDGET, sizeof(*n->chains));
	n->miov = calloc(NET_MRG_IOV, sizeof(*n->miov));
	n->rxbuf = c->rx_buf_bytes ? c->rx_buf_bytes : VOP_NET_RXBUF;
	if (n->rxbuf < 64 || n->rxbuf > VOP_NET_RXBUF) {
		rc = -EINVAL;
		goto fail;
	}
	if (!n->stash || !n->chains || !n->miov) {
		rc = -ENOMEM;
		goto fail;
	}
	if (driver) {
		const struct vop_queue_desc *rq = &n->di.queues[NET_RXQ], *tq = &n->di.queues[NET_TXQ];
		uint64_t feat = n->di.features_offered & NET_FEATURES; /* what the link will negotiate */
		struct ifreq ifr;
		struct vop_net_config_space cs;
		int s;

		n->rx_slots = (unsigned)(rq->pool_size / NET_SLOT);
		if (n->rx_slots > rq->size)
			n->rx_slots = rq->size;
		n->tx_slots = (unsigned)(tq->pool_size / NET_SLOT);
		if (n->tx_slots > tq->size)
			n->tx_slots = tq->size;
		n->tx_free = calloc(n->tx_slots ? n->tx_slots : 1, sizeof(uint16_t));
		if (!n->tx_free || !n->rx_slots || !n->tx_slots) {
			rc = n->tx_free ? -EPROTO : -ENOMEM;
			goto fail;
		}
		/* MAC and MTU from config space onto the TAP */
		memcpy(&cs, n->di.config, sizeof(cs));
		s = n->dgram ? -1 : socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (s >= 0) {
			memset(&ifr, 0, sizeof(ifr));
			memcpy(ifr.ifr_name, n->ifname, IFNAMSIZ);
			if ((feat >> VOP_NET_F_MTU) & 1 && cs.mtu >= 68) {
				ifr.ifr_mtu = cs.mtu;
				ioctl(s, SIOCSIFMTU, &ifr);
			}
			if ((feat >> VOP_NET_F_MAC) & 1 && !(cs.mac[0] & 1)) {
				ifr.ifr_hwaddr.sa_family = 1; /* ARPHRD_ETHER */
				memcpy(ifr.ifr_hwaddr.sa_data, cs.mac, 6);
				ioctl(s, SIOCSIFHWADDR, &ifr);
			}
			close(s);
		}
	}
	/* Configured here, then moved: the fd keeps serving it in its new namespace. */
	if (!n->dgram && !c->share && c->netns && c->netns[0]) {
		rc = vop_net_move_netns(n->ifname, c->netns);
		if (rc)
			goto fail;
	}
	*out = n;
	return 0;
fail:
	vop_net_destroy(n);
	return rc;
}

int vop_net_device_create(struct vop_devctx *ctx, uint32_t dev_id, const struct vop_net_config *c,
			  struct vop_net **out)
{
	return net_create(ctx, dev_id, c, false, out);
}

int vop_net_driver_create(struct vop_devctx *ctx, uint32_t dev_id, const struct vop_net_config *c,
			  struct vop_net **out)
{
	return net_create(ctx, dev_id, c, true, out);
}

void vop_net_destroy(struct vop_net *n)
{
	if (!n)
		return;
	vop_devq_destroy(&n->q[0]);
	vop_devq_destroy(&n->q[1]);
	vop_devctx_unwatch(n->ctx, n->tap); /* the watcher must not poll a closed fd */
	if (n->tap >= 0)
		close(n->tap);
	vop_path_unlink_socket(&n->lsock);
	vop_path_unlink_socket(&n->psock); /* not ours (no inode recorded): only closes the directory */
	free(n->stash);
	free(n->chains);
	free(n->miov);
	free(n->tx_free);
	free(n);
}
