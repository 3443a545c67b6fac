/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the virtio-blk request parser (vop_blk_req_parse) on
 * chains of input-chosen shape and contents, for input-chosen disk sizes.
 * Invariants for an accepted request: the data it names fits the chain's
 * readable (OUT) or writable (IN, before the status byte) bytes, is a
 * non-zero multiple of 512 and lies inside the disk; discard / write-zeroes
 * segments are 1..256, each inside the disk. A refusal is one of the
 * documented codes.
 */
#include <sys/uio.h>

#include "fuzz-chain.h"
#include "vop/dev_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_reader r = { data, size };
	struct vop_blk_req_info info;
	struct fz_chain f;
	struct iovec iov[VOP_CHAIN_MAX_IOV];
	uint8_t mode = fz_u8(&r);
	uint64_t cap = (mode & 1) ? fz_u64(&r) : (uint64_t)fz_u16(&r);
	bool ro = mode & 2;
	int rc;

	fz_chain_build(&f, &r);
	rc = vop_blk_req_parse(&f.c, cap, ro, &info);
	FZ_ASSERT(rc == 0 || rc == -EINVAL || rc == -EROFS || rc == -EOPNOTSUPP);
	if (rc == -EROFS)
		FZ_ASSERT(ro && (info.type == VOP_BLK_T_OUT || info.type == VOP_BLK_T_DISCARD ||
				 info.type == VOP_BLK_T_WRITE_ZEROES));
	if (rc == 0 || rc == -EROFS) {
		FZ_ASSERT(f.c.out_bytes >= 16 && f.c.in_bytes >= 1);
		switch (info.type) {
		case VOP_BLK_T_IN:
			FZ_ASSERT(info.data + 1 == f.c.in_bytes);
			/* fallthrough */
		case VOP_BLK_T_OUT:
			if (info.type == VOP_BLK_T_OUT)
				FZ_ASSERT(info.data + 16 == f.c.out_bytes);
			FZ_ASSERT(info.data > 0 && info.data % 512 == 0);
			FZ_ASSERT(info.sector <= cap && info.data / 512 <= cap - info.sector);
			/* What the I/O thread will do: an iovec over exactly that data. */
			FZ_ASSERT(vop_chain_iov(&f.c, info.type == VOP_BLK_T_IN, info.type == VOP_BLK_T_IN ? 0 : 16,
						info.data, iov, VOP_CHAIN_MAX_IOV) >= 0);
			break;
		case VOP_BLK_T_DISCARD:
		case VOP_BLK_T_WRITE_ZEROES: {
			uint32_t i;

			FZ_ASSERT(info.nseg >= 1 && info.nseg <= VOP_BLK_MAX_DWZ_SEG);
			FZ_ASSERT(info.data == info.nseg * 16u && info.data + 16 == f.c.out_bytes);
			for (i = 0; i < info.nseg; i++) {
				struct vop_blk_dwz_seg s;

				FZ_ASSERT(vop_chain_read(&f.c, 16 + i * 16u, &s, sizeof(s)) == sizeof(s));
				FZ_ASSERT(s.sector <= cap && s.num_sectors <= cap - s.sector && !(s.flags & ~1u));
			}
			break;
		}
		case VOP_BLK_T_FLUSH:
		case VOP_BLK_T_GET_ID:
			FZ_ASSERT(rc == 0);
			break;
		default:
			FZ_ASSERT(0);
		}
	}
	fz_chain_free(&f);
	return 0;
}
