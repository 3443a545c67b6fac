/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net across a link (VIRTIO 1.2 section 5.1), both roles, on TAP
 * devices opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte
 * vnet header (TUNSETVNETHDRSZ), so the virtio_net_hdr_v1 of every frame
 * goes to and comes from the kernel unchanged and checksum/segmentation
 * offloads cross the link: 64 KiB TSO segments instead of 1500 B frames.
 *
 * Queues: 0 = receiveq (device -> driver), 1 = transmitq (driver -> device).
 * Receive buffers: VIRTIO_NET_F_MRG_RXBUF is negotiated; the device reads a
 * frame from its TAP straight into as many of the driver's buffers as it
 * needs (num_buffers in the first header). Our driver posts 64 KiB + header
 * buffers by default (one per frame); rx_buf_bytes makes them smaller.
 *
 * Device role: TAP in, TAP out; offloads enabled on the TAP (TUNSETOFFLOAD)
 * are exactly the GUEST_* features the driver accepted. Driver role: the
 * same on the other OS, with TUNSETOFFLOAD from the HOST_* features.
 *
 * Hostile peer: a transmitted frame whose header is malformed (unknown
 * gso_type, csum_start/offset outside the frame, gso without room) or
 * that is shorter than the header is dropped and counted (bad_headers);
 * frames the TAP refuses are counted in tx_dropped. Nothing blocks: TAP fds
 * are non-blocking and watched by the loop's fd watcher.
 */
#ifndef VOP_DEV_NET_H
#define VOP_DEV_NET_H

#include <stdint.h>

#include "vop/dev_common.h"

#define VOP_NET_F_CSUM 0u
#define VOP_NET_F_GUEST_CSUM 1u
#define VOP_NET_F_MTU 3u
#define VOP_NET_F_MAC 5u
#define VOP_NET_F_GUEST_TSO4 7u
#define VOP_NET_F_GUEST_TSO6 8u
#define VOP_NET_F_GUEST_ECN 9u
#define VOP_NET_F_HOST_TSO4 11u
#define VOP_NET_F_HOST_TSO6 12u
#define VOP_NET_F_HOST_ECN 13u
#define VOP_NET_F_MRG_RXBUF 15u
#define VOP_NET_F_STATUS 16u
#define VOP_NET_F_MQ 22u /* vhost-user only (dev_vhost.c): several queue pairs */

#define VOP_NET_S_LINK_UP 1u

#define VOP_NET_HDR_F_NEEDS_CSUM 1u
#define VOP_NET_HDR_F_DATA_VALID 2u
#define VOP_NET_HDR_GSO_NONE 0u
#define VOP_NET_HDR_GSO_TCPV4 1u
#define VOP_NET_HDR_GSO_UDP 3u
#define VOP_NET_HDR_GSO_TCPV6 4u
#define VOP_NET_HDR_GSO_ECN 0x80u

/* virtio_net_hdr_v1 (12 bytes), the first bytes of every buffer. */
struct vop_net_hdr {
	uint8_t flags;
	uint8_t gso_type;
	vop_le16 hdr_len;
	vop_le16 gso_size;
	vop_le16 csum_start;
	vop_le16 csum_offset;
	vop_le16 num_buffers;
};
_Static_assert(sizeof(struct vop_net_hdr) == 12, "virtio_net_hdr_v1");

/* virtio_net_config prefix we fill. */
struct vop_net_config_space {
	uint8_t mac[6];
	vop_le16 status;
	vop_le16 max_virtqueue_pairs;
	vop_le16 mtu;
};
_Static_assert(sizeof(struct vop_net_config_space) == 12, "virtio_net_config prefix");

#define VOP_NET_RXBUF (65536u + 12u + 14u + 4u) /* biggest GSO frame + header */

/* Network namespace names (a file under /run/netns): at most this many bytes, NUL excluded. */
#define VOP_NETNS_NAME_MAX 63u

struct vop_net_config {
	const char *tap_name;  /* TAP interface name ("" = kernel picks vopN) */
	/*
	 * Network namespace the TAP goes into (a name under /run/netns, as
	 * `ip netns` makes them), or NULL/"" for ours. The TAP is created here
	 * (MTU, MAC and queue length set), then moved with RTM_NEWLINK
	 * IFLA_NET_NS_FD: that needs CAP_NET_ADMIN only (setns would need
	 * CAP_SYS_ADMIN), and our fd keeps working across the move. Closing
	 * it removes the TAP from that namespace.
	 */
	const char *netns;
	/*
	 * Datagram backend instead of a TAP (no CAP_NET_ADMIN needed): bind
	 * dgram_local, send frames to dgram_peer; each is a Unix datagram
	 * socket path (starts with '/') or "HOST:PORT" (UDP). One datagram =
	 * one frame WITH its 12-byte virtio-net header (offloads pass through;
	 * over UDP a GSO frame over 65507 bytes is dropped, counted). Batched:
	 * sendmmsg/recvmmsg, up to 64 frames per system call.
	 */
	const char *dgram_local;
	const char *dgram_peer;
	/* Directory both Unix datagram paths must lie in (vop/path.h); NULL = each one's own directory. */
	const char *dgram_root;
	/*
	 * Driver role: bytes per receive buffer (64 .. VOP_NET_RXBUF; 0 =
	 * VOP_NET_RXBUF, one buffer per frame). Smaller buffers exercise
	 * VIRTIO_NET_F_MRG_RXBUF: a frame spans num_buffers of them.
	 */
	uint32_t rx_buf_bytes;
	uint32_t find_timeout_ms; /* wait for the device entry; 0 = look once */
	/*
	 * Device role only: serve the TAP or datagram socket of this net
	 * device instead of opening one (a further queue pair of one
	 * vhost-user device, dev_vhost.c): a dup of its fd, the same peer;
	 * nothing is created, moved or removed. It must outlive this one.
	 */
	struct vop_net *share;
};

struct vop_net_stats {
	uint64_t tx_frames;   /* driver -> device frames handed to the TAP (device) / posted (driver) */
	uint64_t rx_frames;   /* device -> driver frames */
	uint64_t tx_bytes, rx_bytes;
	uint64_t tx_dropped;  /* refused by the TAP or no buffer */
	uint64_t rx_dropped;  /* frames read from the TAP with no room on the link */
	uint64_t bad_headers; /* malformed virtio-net headers from the peer (dropped) */
	uint64_t gso_frames;  /* frames carrying a GSO type (>1 MSS) */
	uint64_t rx_buffers;  /* receive buffers of the rx frames: num_buffers each (MRG_RXBUF), else 1 */
};

struct vop_net;

/* Spec for the table owner: 2 queues of qsize, mtu and mac in config space. */
void vop_net_spec(struct vop_dev_spec *spec, uint32_t dev_id, uint8_t device_side, uint16_t qsize,
		  uint16_t mtu, const uint8_t mac[6]);

/*
 * Find dev_id in the window of ctx and open the TAP or datagram socket
 * (the driver role also sets MAC and MTU from config space). Serve it with
 * vop_link_attach_backend(l, dev_id, role, &vop_net_ops, net). 0 or -errno
 * (-EPERM without CAP_NET_ADMIN).
 */
int vop_net_device_create(struct vop_devctx *ctx, uint32_t dev_id, const struct vop_net_config *c,
			  struct vop_net **out);
int vop_net_driver_create(struct vop_devctx *ctx, uint32_t dev_id, const struct vop_net_config *c,
			  struct vop_net **out);

/* Link backend ops of a net device (either role). */
extern const struct vop_devback_ops vop_net_ops;

/* TAP interface name. */
const char *vop_net_ifname(struct vop_net *n);

void vop_net_stats(struct vop_net *n, struct vop_net_stats *out);

/* After vop_link_detach() (or the link's destruction). NULL ok. */
void vop_net_destroy(struct vop_net *n);

/*
 * vop_net_move_netns - move interface ifname into the network namespace
 * /run/netns/<netns> (a name matching [A-Za-z0-9_.-]+, not "." or "..",
 * at most VOP_NETNS_NAME_MAX bytes). 0, -EINVAL (bad name, or the file is
 * not a network namespace), -ENOENT (no such namespace), -EEXIST (the
 * name is taken there), -EPERM (no CAP_NET_ADMIN), -errno.
 */
int vop_net_move_netns(const char *ifname, const char *netns);

/*
 * vop_net_hdr_check - validate a peer's header for a frame of len bytes
 * (after the header). 0 or -EPROTO. Exposed for the tests.
 */
int vop_net_hdr_check(const struct vop_net_hdr *h, uint32_t len);

#endif /* VOP_DEV_NET_H */
