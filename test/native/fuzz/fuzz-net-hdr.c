/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the virtio-net transmit header parser
 * (vop_net_tx_parse, and vop_net_hdr_check under it) on chains of
 * input-chosen shape, header and length. Invariants for an accepted frame:
 * the header is the first 12 readable bytes, the frame is the rest of the
 * readable bytes, every iovec lies inside one readable segment and they
 * add up to the frame; the checked header keeps its checksum and GSO
 * fields inside the frame.
 */
#include "fuzz-chain.h"
#include "vop/dev_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_reader r = { data, size };
	struct vop_net_hdr h, raw;
	struct fz_chain f;
	struct iovec iov[VOP_CHAIN_MAX_IOV];
	int max = fz_u8(&r) % VOP_CHAIN_MAX_IOV + 1, n, i;
	uint32_t flen = 0, len;
	uint64_t sum = 0;

	/* The checker on its own: any header, any length. */
	memset(&raw, 0, sizeof(raw));
	raw.flags = fz_u8(&r);
	raw.gso_type = fz_u8(&r);
	raw.hdr_len = fz_u16(&r);
	raw.gso_size = fz_u16(&r);
	raw.csum_start = fz_u16(&r);
	raw.csum_offset = fz_u16(&r);
	len = (uint32_t)fz_u16(&r) * ((fz_u8(&r) & 3) + 1);
	if (vop_net_hdr_check(&raw, len) == 0) {
		FZ_ASSERT(len >= 14 && len <= 65535 + 18);
		if (raw.flags & VOP_NET_HDR_F_NEEDS_CSUM)
			FZ_ASSERT((uint32_t)raw.csum_start + raw.csum_offset + 2 <= len);
		if ((raw.gso_type & 0x7f) != VOP_NET_HDR_GSO_NONE)
			FZ_ASSERT(raw.gso_size > 0 && raw.hdr_len <= len);
	}
	/* The chain parser. */
	fz_chain_build(&f, &r);
	n = vop_net_tx_parse(&f.c, &h, &flen, iov, max);
	FZ_ASSERT(n == -EPROTO || n == -EMSGSIZE || (n >= 0 && n <= max));
	if (n >= 0) {
		FZ_ASSERT(f.c.out_bytes >= 12 && flen == f.c.out_bytes - 12);
		FZ_ASSERT(vop_net_hdr_check(&h, flen) == 0);
		for (i = 0; i < n; i++) {
			FZ_ASSERT(iov[i].iov_len > 0);
			FZ_ASSERT(fz_chain_holds(&f, 0, iov[i].iov_base, iov[i].iov_len));
			sum += iov[i].iov_len;
		}
		FZ_ASSERT(sum == flen);
	}
	fz_chain_free(&f);
	return 0;
}
