/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The table shape of a typed device config (vop_devback_spec): queue_size 0
 * means 256 for every kind and a blk queue holds queue_size / 4 requests;
 * event_idx off keeps VIRTIO_F_EVENT_IDX out of the offer; offloads off
 * keeps every checksum/TSO/ECN bit out of a net device's offer (MRG_RXBUF,
 * MTU, MAC stay); out-of-range fields are -EINVAL; the device side follows
 * the role. And a network namespace name is checked before anything is
 * opened (vop_net_move_netns: no "/", ".", "..").
 */
#include "helpers.h"
#include "vop/dev_backend.h"

#define BIT(b) (1ull << (b))
#define OFFLOADS                                                                                     \
	(BIT(VOP_NET_F_CSUM) | BIT(VOP_NET_F_GUEST_CSUM) | BIT(VOP_NET_F_GUEST_TSO4) |                 \
	 BIT(VOP_NET_F_GUEST_TSO6) | BIT(VOP_NET_F_GUEST_ECN) | BIT(VOP_NET_F_HOST_TSO4) |             \
	 BIT(VOP_NET_F_HOST_TSO6) | BIT(VOP_NET_F_HOST_ECN))

static struct vop_devback_config cfg(enum vop_devback_kind kind, enum vop_role role, uint16_t qs)
{
	struct vop_devback_config c;

	memset(&c, 0, sizeof(c));
	c.dev_id = 7;
	c.kind = kind;
	c.role = role;
	c.queue_size = qs;
	c.event_idx = true;
	return c;
}

int main(void)
{
	struct vop_devback_config c;
	struct vop_dev_spec s;

	/* 0 means 256 for every kind; a blk queue of N entries holds N / 4 requests. */
	c = cfg(VOP_DEVBACK_CONSOLE, VOP_ROLE_DEVICE, 0);
	CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
	CHECK_EQ(s.queue_size[0], 256);
	CHECK_EQ(s.queue_size[1], 256);
	CHECK_EQ(s.device_side, 0);
	c = cfg(VOP_DEVBACK_BLK, VOP_ROLE_DRIVER, 0);
	CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
	CHECK_EQ(s.queue_size[0], 256);
	CHECK_EQ(s.device_side, 1); /* the driver's peer implements it */
	c = cfg(VOP_DEVBACK_BLK, VOP_ROLE_DEVICE, 64);
	CHECK_EQ(vop_devback_spec(&c, 1, &s), 0);
	CHECK_EQ(s.queue_size[0], 64);
	CHECK_EQ(s.device_side, 1);
	c = cfg(VOP_DEVBACK_NET, VOP_ROLE_DEVICE, 0);
	CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
	CHECK_EQ(s.queue_size[0], 256);
	c = cfg(VOP_DEVBACK_NET, VOP_ROLE_DEVICE, 1024);
	CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
	CHECK_EQ(s.queue_size[1], 1024);

	/* event_idx: offered only when asked for, on every kind. */
	for (enum vop_devback_kind k = VOP_DEVBACK_NET; k <= VOP_DEVBACK_CONSOLE; k++) {
		c = cfg(k, VOP_ROLE_DEVICE, 0);
		c.net.offloads = true;
		CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
		CHECK(s.features & BIT(VOP_F_EVENT_IDX));
		c.event_idx = false;
		CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
		CHECK(!(s.features & BIT(VOP_F_EVENT_IDX)));
	}

	/* offloads: all of them, or none; the rest of the net offer stays. */
	c = cfg(VOP_DEVBACK_NET, VOP_ROLE_DEVICE, 0);
	c.net.offloads = true;
	CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
	CHECK_EQ(s.features & OFFLOADS, OFFLOADS);
	c.net.offloads = false;
	CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
	CHECK_EQ(s.features & OFFLOADS, 0);
	CHECK(s.features & BIT(VOP_NET_F_MRG_RXBUF));
	CHECK(s.features & BIT(VOP_NET_F_MAC));

	/* Out of range: -EINVAL. */
	c = cfg(VOP_DEVBACK_BLK, VOP_ROLE_DEVICE, 2); /* less than one request */
	CHECK_EQ(vop_devback_spec(&c, 0, &s), -EINVAL);
	c = cfg(VOP_DEVBACK_CONSOLE, VOP_ROLE_DEVICE, 100); /* not a power of two */
	CHECK_EQ(vop_devback_spec(&c, 0, &s), -EINVAL);
	c = cfg(VOP_DEVBACK_NET, VOP_ROLE_DEVICE, 0);
	c.net.mac[0] = 0x53; /* multicast */
	CHECK_EQ(vop_devback_spec(&c, 0, &s), -EINVAL);
	c = cfg(VOP_DEVBACK_NET, VOP_ROLE_DEVICE, 0);
	c.net.mtu = 40;
	CHECK_EQ(vop_devback_spec(&c, 0, &s), -EINVAL);
	c = cfg(VOP_DEVBACK_BLK, VOP_ROLE_DEVICE, 0);
	c.blk.seg_bytes = 1000; /* not whole pages */
	CHECK_EQ(vop_devback_spec(&c, 0, &s), -EINVAL);
	c = cfg(VOP_DEVBACK_CONSOLE, (enum vop_role)3, 0);
	CHECK_EQ(vop_devback_spec(&c, 0, &s), -EINVAL);
	c = cfg(VOP_DEVBACK_CONSOLE, VOP_ROLE_DEVICE, 0);
	c.dev_id = 0;
	CHECK_EQ(vop_devback_spec(&c, 0, &s), -EINVAL);

	/* Namespace names are checked before anything is opened or sent. */
	CHECK_EQ(vop_net_move_netns("lo", "../x"), -EINVAL);
	CHECK_EQ(vop_net_move_netns("lo", ".."), -EINVAL);
	CHECK_EQ(vop_net_move_netns("lo", "."), -EINVAL);
	CHECK_EQ(vop_net_move_netns("lo", ""), -EINVAL);
	CHECK_EQ(vop_net_move_netns("lo", "a/b"), -EINVAL);
	CHECK_EQ(vop_net_move_netns("lo", "0123456789012345678901234567890123456789012345678901234567890123"), -EINVAL);
	CHECK_EQ(vop_net_move_netns("no-such-if0", "x"), -ENODEV);
	return T_PASS;
}
