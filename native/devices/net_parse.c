/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-net header validation (pure). Contracts in vop/dev_net.h and vop/dev_parse.h. */
#include <errno.h>
#include <string.h>

#include "vop/dev_parse.h"

#define NET_HDR ((uint32_t)sizeof(struct vop_net_hdr))

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

int vop_net_tx_parse(const struct vop_chain *c, struct vop_net_hdr *h, uint32_t *flen,
		     struct iovec *iov, int max)
{
	uint32_t len;

	*flen = 0;
	if (c->out_bytes < NET_HDR || vop_chain_read(c, 0, h, NET_HDR) != NET_HDR) /* read once */
		return -EPROTO;
	len = c->out_bytes - NET_HDR;
	if (vop_net_hdr_check(h, len))
		return -EPROTO;
	*flen = len;
	/* The frame straight from the window: an iovec per piece after the header. */
	{
		int n = vop_chain_iov(c, false, NET_HDR, len, iov, max);

		return n < 0 ? -EMSGSIZE : n;
	}
}
