/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the stream protocol's frame parser (vop/stream.h) on a
 * byte stream of input-chosen frames, the way the bridge thread reads a
 * hostile peer: every header checked against negotiated limits chosen by
 * the input, then the payload of each known type parsed and, for CHAINS
 * and USED, walked entry by entry, and CONFIG re-encoded. Each payload is copied into a buffer of
 * exactly its size so that ASan catches any read past it. Invariants: an
 * accepted header's length is within max_frame and fixed messages have
 * their size; an accepted batch walks exactly count entries whose segments
 * and data lie inside the payload; chain segment counts stay within
 * max_segs and no segment is empty.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz-common.h"
#include "vop/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void payload(const struct vop_stream_limits *lim, const struct vop_sframe *f,
		    const uint8_t *p)
{
	const char *why = NULL;

	switch (f->type) {
	case VOP_SMSG_HELLO: {
		struct vop_shello h;
		uint8_t back[VOP_SMSG_HELLO_LEN];

		if (vop_shello_parse(p, f->len, &h, &why) == 0) {
			FZ_ASSERT(h.max_frame >= VOP_STREAM_MIN_FRAME && h.max_frame <= VOP_STREAM_MAX_FRAME);
			FZ_ASSERT(h.max_segs >= 1 && h.max_segs <= VOP_STREAM_MAX_SEGS);
			vop_shello_encode(back, &h);
			FZ_ASSERT(memcmp(back, p, VOP_SMSG_HELLO_LEN) == 0);
		} else {
			FZ_ASSERT(why != NULL);
		}
		break;
	}
	case VOP_SMSG_DEV_INFO: {
		struct vop_sdev_info d;
		uint8_t back[VOP_SMSG_DEV_INFO_MAX];

		if (vop_sdev_info_parse(p, f->len, lim, &d, &why) == 0) {
			FZ_ASSERT(d.num_queues >= 1 && d.num_queues <= VOP_MAX_QUEUES);
			FZ_ASSERT(vop_sdev_info_encode(back, &d) == f->len);
			FZ_ASSERT(memcmp(back, p, f->len) == 0);
		}
		break;
	}
	case VOP_SMSG_CONFIG: {
		struct vop_sconfig c;
		uint8_t back[VOP_SMSG_CONFIG_MAX];

		FZ_ASSERT(f->len >= VOP_SMSG_CONFIG_FIXED && f->len <= VOP_SMSG_CONFIG_MAX);
		if (vop_sconfig_parse(p, f->len, &c, &why) == 0) {
			FZ_ASSERT(c.dev_id != 0 && c.generation >= 2 && !(c.generation & 1u));
			FZ_ASSERT(c.config_len <= VOP_CONFIG_MAX &&
				  f->len == VOP_SMSG_CONFIG_FIXED + c.config_len);
			FZ_ASSERT(vop_sconfig_encode(back, &c) == f->len);
			FZ_ASSERT(memcmp(back, p, f->len) == 0);
		} else {
			FZ_ASSERT(why != NULL);
		}
		break;
	}
	case VOP_SMSG_CHAINS:
	case VOP_SMSG_USED: {
		struct vop_sbatch b;
		unsigned n = 0;
		int rc;

		if (vop_sbatch_parse(f->type, p, f->len, lim, &b, &why) != 0) {
			FZ_ASSERT(why != NULL);
			break;
		}
		FZ_ASSERT(b.count >= 1 && b.queue < VOP_MAX_QUEUES);
		if (f->type == VOP_SMSG_CHAINS) {
			struct vop_schain c;

			while ((rc = vop_sbatch_next_chain(&b, lim, &c, &why)) == 1) {
				unsigned i, segs = (unsigned)c.n_out + c.n_in;
				uint64_t o = 0, in = 0;

				FZ_ASSERT(segs >= 1 && segs <= lim->max_segs);
				for (i = 0; i < segs; i++) {
					FZ_ASSERT(c.seg[i] > 0);
					if (i < c.n_out)
						o += c.seg[i];
					else
						in += c.seg[i];
				}
				FZ_ASSERT(o == c.out_bytes && in == c.in_bytes);
				FZ_ASSERT(c.data >= p && c.data + c.out_bytes <= p + f->len);
				n++;
			}
		} else {
			struct vop_sused u;

			while ((rc = vop_sbatch_next_used(&b, &u, &why)) == 1) {
				FZ_ASSERT(u.data >= p && u.data + u.len <= p + f->len);
				n++;
			}
		}
		FZ_ASSERT(rc == 0 && n == b.count);
		break;
	}
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct vop_stream_limits lim;
	size_t off = 2;

	if (size < 2)
		return 0;
	/* Negotiated limits chosen by the input: max_frame 4 KiB .. 68 KiB, 1 .. 64 segments. */
	lim.max_frame = VOP_STREAM_MIN_FRAME + (uint32_t)data[0] * 256u;
	lim.max_segs = data[1] % VOP_STREAM_MAX_SEGS + 1;
	while (size - off >= VOP_SFRAME_HDR) {
		struct vop_sframe f;
		const char *why = NULL;
		uint8_t *copy;

		if (vop_sframe_header(data + off, &lim, &f, &why) != 0) {
			FZ_ASSERT(why != NULL);
			break; /* the bridge ends the link here */
		}
		FZ_ASSERT(f.len <= lim.max_frame);
		if (size - off - VOP_SFRAME_HDR < f.len)
			break; /* incomplete: the bridge waits for more */
		copy = malloc(f.len ? f.len : 1);
		if (!copy)
			return 0;
		memcpy(copy, data + off + VOP_SFRAME_HDR, f.len);
		payload(&lim, &f, copy);
		free(copy);
		off += VOP_SFRAME_HDR + f.len;
	}
	return 0;
}
