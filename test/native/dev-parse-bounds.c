/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The request parsers of vop/dev_parse.h at each bound and one unit past
 * it: a blk request one sector past the disk or with a 513-byte payload, a
 * 257th discard segment; a net header whose checksum field ends one byte
 * past the frame; an NBD request one sector past the export, one sector
 * over max_req, or with an offset that would wrap.
 */
#include <endian.h>

#include "helpers.h"
#include "vop/dev_parse.h"

static uint8_t hdrbuf[16 + 16 * 260], data[4096], status;

/* A chain: header (+ segments) readable, then data (IN: writable, OUT: readable), then status. */
static void blk_chain(struct vop_chain *c, uint32_t type, uint64_t sector, uint32_t hdr_extra,
		      uint32_t dlen, bool in)
{
	struct vop_blk_outhdr h = { type, 0, sector };

	memset(c, 0, sizeof(*c));
	memcpy(hdrbuf, &h, sizeof(h));
	c->iov[0] = (struct vop_iov){ hdrbuf, 16 + hdr_extra };
	c->n_out = 1;
	if (dlen && !in)
		c->iov[c->n_out++] = (struct vop_iov){ data, dlen };
	c->iov[c->n_out].base = data;
	c->iov[c->n_out].len = dlen;
	if (dlen && in)
		c->n_in++;
	c->iov[c->n_out + c->n_in] = (struct vop_iov){ &status, 1 };
	c->n_in++;
	c->out_bytes = 16 + hdr_extra + (in ? 0 : dlen);
	c->in_bytes = 1 + (in ? dlen : 0);
}

static void blk(void)
{
	struct vop_chain c;
	struct vop_blk_req_info r;
	const uint64_t cap = 8; /* sectors */
	unsigned i;

	/* IN: the last 512 bytes of the disk, then one sector further. */
	blk_chain(&c, VOP_BLK_T_IN, cap - 1, 0, 512, true);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), 0);
	CHECK_EQ(r.data, 512);
	blk_chain(&c, VOP_BLK_T_IN, cap, 0, 512, true);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	blk_chain(&c, VOP_BLK_T_IN, cap - 1, 0, 1024, true);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	blk_chain(&c, VOP_BLK_T_IN, UINT64_MAX, 0, 512, true);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	/* OUT: 512 bytes fine, 513 not a multiple of the sector, read-only refused. */
	blk_chain(&c, VOP_BLK_T_OUT, 0, 0, 512, false);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), 0);
	CHECK_EQ(vop_blk_req_parse(&c, cap, true, &r), -EROFS);
	blk_chain(&c, VOP_BLK_T_OUT, 0, 0, 513, false);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	/* A header one byte short; no status byte. */
	blk_chain(&c, VOP_BLK_T_OUT, 0, 0, 512, false);
	c.iov[0].len = 15;
	c.out_bytes -= 1;
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	blk_chain(&c, VOP_BLK_T_FLUSH, 0, 0, 0, false);
	c.n_in = 0;
	c.in_bytes = 0;
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	/* Discard: 256 segments inside the disk, then a 257th; one segment one sector too long. */
	for (i = 0; i < 257; i++) {
		struct vop_blk_dwz_seg s = { i % cap, 1, 0 };

		memcpy(hdrbuf + 16 + 16 * i, &s, sizeof(s));
	}
	blk_chain(&c, VOP_BLK_T_DISCARD, 0, 16 * 256, 0, false);
	memcpy(hdrbuf + 16, &(struct vop_blk_dwz_seg){ 0, 1, 0 }, 16);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), 0);
	CHECK_EQ(r.nseg, 256);
	c.iov[0].len += 16;
	c.out_bytes += 16;
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	blk_chain(&c, VOP_BLK_T_WRITE_ZEROES, 0, 16, 0, false);
	memcpy(hdrbuf + 16, &(struct vop_blk_dwz_seg){ 2, (uint32_t)cap - 2, 1 }, 16);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), 0);
	memcpy(hdrbuf + 16, &(struct vop_blk_dwz_seg){ 2, (uint32_t)cap - 1, 1 }, 16);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	memcpy(hdrbuf + 16, &(struct vop_blk_dwz_seg){ 2, 1, 2 }, 16); /* unknown flag */
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EINVAL);
	blk_chain(&c, 99, 0, 0, 0, false);
	CHECK_EQ(vop_blk_req_parse(&c, cap, false, &r), -EOPNOTSUPP);
}

static void net(void)
{
	struct vop_net_hdr h = { 0 }, out;
	struct vop_chain c;
	struct iovec iov[4];
	uint32_t flen;

	h.flags = VOP_NET_HDR_F_NEEDS_CSUM;
	h.csum_start = 40;
	h.csum_offset = 18; /* 40 + 18 + 2 == 60: the last two bytes of a 60-byte frame */
	memset(&c, 0, sizeof(c));
	memcpy(hdrbuf, &h, sizeof(h));
	c.iov[0] = (struct vop_iov){ hdrbuf, 12 };
	c.iov[1] = (struct vop_iov){ data, 60 };
	c.n_out = 2;
	c.out_bytes = 72;
	CHECK_EQ(vop_net_tx_parse(&c, &out, &flen, iov, 4), 1);
	CHECK_EQ(flen, 60);
	h.csum_offset = 19; /* one byte past the frame */
	memcpy(hdrbuf, &h, sizeof(h));
	CHECK_EQ(vop_net_tx_parse(&c, &out, &flen, iov, 4), -EPROTO);
	/* A header split across descriptors is read whole; a frame in more pieces than allowed is refused. */
	h.csum_offset = 18;
	memcpy(hdrbuf, &h, sizeof(h));
	c.iov[0].len = 5;
	c.iov[1] = (struct vop_iov){ hdrbuf + 5, 7 };
	c.iov[2] = (struct vop_iov){ data, 30 };
	c.iov[3] = (struct vop_iov){ data + 30, 30 };
	c.n_out = 4;
	CHECK_EQ(vop_net_tx_parse(&c, &out, &flen, iov, 2), 2);
	CHECK_EQ(vop_net_tx_parse(&c, &out, &flen, iov, 1), -EMSGSIZE);
	c.iov[0].len = 11; /* 11 bytes in all before the frame: no room for the header */
	c.n_out = 1;
	c.out_bytes = 11;
	CHECK_EQ(vop_net_tx_parse(&c, &out, &flen, iov, 4), -EPROTO);
}

static struct vop_nbd_req_info nbd(uint16_t type, uint64_t off, uint32_t len, bool ro)
{
	const struct vop_nbd_limits lim = { 1u << 20, 64u << 10, 4096, 64, ro };
	uint8_t raw[VOP_NBD_REQ_BYTES];
	uint32_t m = htobe32(0x25609513u), l = htobe32(len);
	uint16_t t = htobe16(type), f = 0;
	uint64_t h = 7, o = htobe64(off);
	struct vop_nbd_req_info r;

	memcpy(raw, &m, 4);
	memcpy(raw + 4, &f, 2);
	memcpy(raw + 6, &t, 2);
	memcpy(raw + 8, &h, 8);
	memcpy(raw + 16, &o, 8);
	memcpy(raw + 24, &l, 4);
	CHECK_EQ(vop_nbd_req_parse(raw, &lim, &r), 0);
	return r;
}

static void nbd_bounds(void)
{
	uint8_t raw[VOP_NBD_REQ_BYTES] = { 0 };
	const struct vop_nbd_limits lim = { 1u << 20, 64u << 10, 4096, 64, false };
	struct vop_nbd_req_info r;

	/* The last sector of the export; one sector further. */
	r = nbd(0, (1u << 20) - 512, 512, false);
	CHECK_EQ(r.error, 0);
	CHECK_EQ(r.nslots, 1);
	CHECK_EQ(nbd(0, 1u << 20, 512, false).error, 22);
	CHECK_EQ(nbd(1, (1u << 20) - 512, 1024, false).error, 28); /* write: ENOSPC */
	CHECK_EQ(nbd(1, (1u << 20) - 512, 1024, false).payload, 1024); /* still skipped */
	/* max_req exactly, then one sector more. */
	r = nbd(0, 0, 64u << 10, false);
	CHECK_EQ(r.error, 0);
	CHECK_EQ(r.nslots, 16);
	CHECK_EQ(nbd(0, 0, (64u << 10) + 512, false).error, 22);
	/* Offsets that would wrap; misaligned; unknown type; read-only; disconnect. */
	CHECK_EQ(nbd(0, UINT64_MAX - 511, 1024, false).error, 22);
	CHECK_EQ(nbd(1, UINT64_MAX - 511, 1024, false).error, 28);
	CHECK_EQ(nbd(0, 1, 512, false).error, 22);
	CHECK_EQ(nbd(9, 0, 512, false).error, 22);
	CHECK_EQ(nbd(6, 0, 512, true).error, 1);
	CHECK_EQ(nbd(0, 0, 512, true).error, 0);
	CHECK(nbd(2, 0, 0, false).disconnect);
	r = nbd(4, 0, 0, false); /* zero-length trim: nothing to do */
	CHECK_EQ(r.error, 0);
	CHECK_EQ(r.nslots, 0);
	/* A bad magic puts the stream out of sync. */
	CHECK_EQ(vop_nbd_req_parse(raw, &lim, &r), -EPROTO);
}

int main(void)
{
	blk();
	net();
	nbd_bounds();
	return T_PASS;
}
