/* SPDX-License-Identifier: Apache-2.0 */
/* virtio-blk request validation (pure). Contract in vop/dev_parse.h. */
#include <errno.h>
#include <string.h>

#include "vop/dev_parse.h"

#define BLK_HDR_BYTES ((uint32_t)sizeof(struct vop_blk_outhdr))
#define SEG_BYTES ((uint32_t)sizeof(struct vop_blk_dwz_seg))

_Static_assert(sizeof(struct vop_blk_outhdr) == 16, "virtio_blk_outhdr");
_Static_assert(sizeof(struct vop_blk_dwz_seg) == 16, "virtio_blk_discard_write_zeroes");

/* [sector, sector + bytes / 512) inside the disk, bytes a non-zero multiple of 512. */
static bool data_ok(uint64_t cap, uint64_t sector, uint32_t bytes)
{
	return bytes != 0 && bytes % VOP_BLK_SECTOR == 0 && vop_blk_range_ok(cap, sector, bytes / VOP_BLK_SECTOR);
}

int vop_blk_req_parse(const struct vop_chain *c, uint64_t cap_sectors, bool ro,
		      struct vop_blk_req_info *out)
{
	struct vop_blk_outhdr h;
	uint32_t data, i;

	memset(out, 0, sizeof(*out));
	/* A header to read and a status byte to write, at least. */
	if (c->out_bytes < BLK_HDR_BYTES || c->in_bytes < 1)
		return -EINVAL;
	if (vop_chain_read(c, 0, &h, sizeof(h)) != sizeof(h)) /* private copy: read once */
		return -EINVAL;
	out->type = h.type;
	out->sector = h.sector;
	switch (h.type) {
	case VOP_BLK_T_IN:
		data = c->in_bytes - 1; /* the last writable byte is the status */
		if (!data_ok(cap_sectors, h.sector, data))
			return -EINVAL;
		out->data = data;
		return 0;
	case VOP_BLK_T_OUT:
		data = c->out_bytes - BLK_HDR_BYTES;
		if (!data_ok(cap_sectors, h.sector, data))
			return -EINVAL;
		out->data = data;
		return ro ? -EROFS : 0;
	case VOP_BLK_T_FLUSH:
	case VOP_BLK_T_GET_ID:
		return 0;
	case VOP_BLK_T_DISCARD:
	case VOP_BLK_T_WRITE_ZEROES:
		data = c->out_bytes - BLK_HDR_BYTES;
		if (data == 0 || data % SEG_BYTES || data / SEG_BYTES > VOP_BLK_MAX_DWZ_SEG)
			return -EINVAL;
		out->data = data;
		out->nseg = data / SEG_BYTES;
		for (i = 0; i < out->nseg; i++) {
			struct vop_blk_dwz_seg s;

			if (vop_chain_read(c, BLK_HDR_BYTES + i * SEG_BYTES, &s, sizeof(s)) != sizeof(s))
				return -EINVAL;
			/*
			 * The I/O thread reads the segments again from shared memory and
			 * checks them again: a driver that rewrites them after this
			 * check only hurts itself, never the disk outside its range.
			 */
			if (!vop_blk_range_ok(cap_sectors, s.sector, s.num_sectors) || (s.flags & ~1u))
				return -EINVAL;
		}
		return ro ? -EROFS : 0;
	default:
		return -EOPNOTSUPP;
	}
}
