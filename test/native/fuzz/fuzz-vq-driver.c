/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: driver-side used-ring handling (vop_vq_get_used)
 * against a device whose used elements and used->idx come from the input,
 * with a peer thread rewriting the used ring concurrently. A shadow of
 * in-flight tokens checks: every returned token was in flight and is
 * returned once, len <= its writable bytes, descriptor accounting stays
 * exact, and a broken queue only ever returns -EIO.
 */
#include "fuzz-common.h"

static struct fz_mem mem;

static void peer_op(struct fz_peer *p, struct fz_reader *r)
{
	struct vop_vring_used *used = (struct vop_vring_used *)(void *)p->m->used;
	uint8_t op = fz_u8(r);

	switch (op % 4) {
	case 0: {
		uint8_t slot = fz_u8(r);
		__atomic_store_n(&used->ring[slot % p->num].id, (uint32_t)fz_u16(r) % (p->num + 3),
				 __ATOMIC_RELAXED);
		break;
	}
	case 1: {
		uint8_t slot = fz_u8(r);
		__atomic_store_n(&used->ring[slot % p->num].len, (uint32_t)fz_u16(r), __ATOMIC_RELAXED);
		break;
	}
	case 2:
		__atomic_add_fetch(&used->idx, (uint16_t)(fz_u8(r) % (p->num + 2)), __ATOMIC_RELEASE);
		break;
	default:
		__atomic_store_n(&used->idx, fz_u16(r), __ATOMIC_RELEASE);
		break;
	}
}

struct shadow {
	uint32_t wlen[FZ_MAXQ + 1]; /* per token (1-based) */
	uint8_t live[FZ_MAXQ + 1];
	unsigned descs[FZ_MAXQ + 1];
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_reader r = { data, size };
	struct vop_vq_config c;
	struct vop_vq vq;
	struct fz_peer peer;
	struct shadow sh;
	size_t half;
	uint16_t num = (uint16_t)(1u << (fz_u8(&r) % 5));
	uint8_t fl = fz_u8(&r);
	unsigned used_descs = 0, tok_next = 1;

	memset(&mem, 0, sizeof(mem));
	memset(&sh, 0, sizeof(sh));
	memset(&c, 0, sizeof(c));
	c.num = num;
	c.features = ((fl & 1) ? 1ull << VOP_F_EVENT_IDX : 0) | ((fl & 2) ? 1ull << VOP_F_INDIRECT_DESC : 0);
	c.desc = mem.desc;
	c.avail = mem.avail;
	c.used = mem.used;
	c.indirect_local = mem.data;
	c.indirect_peer_addr = FZ_DATA_PEER;
	c.prefer_indirect = (fl & 4) != 0;
	if (vop_vq_init_driver(&vq, &c) != 0)
		return 0;
	memset(&peer, 0, sizeof(peer));
	peer.m = &mem;
	peer.num = num;
	peer.apply = peer_op;
	half = r.n / 2;
	peer.script = r.p + half;
	peer.len = r.n - half;
	r.n = half;
	while (r.n) {
		uint8_t op = fz_u8(&r);

		if (op < 100) {
			peer_op(&peer, &r);
		} else if (op < 180) {
			/* Post a chain of 1..3 sg with some writable part. */
			struct vop_sg sg[3];
			unsigned n = op % 3 + 1, nin = fz_u8(&r) % (n + 1), i, tok;
			uint32_t w = 0;
			int h;

			for (i = 0; i < n; i++) {
				sg[i].addr = FZ_DATA_PEER + 4096 + 64 * i;
				sg[i].len = (uint32_t)(fz_u8(&r) % 64 + 1);
				if (i >= n - nin)
					w += sg[i].len;
			}
			for (tok = 1; tok <= FZ_MAXQ && sh.live[tok]; tok++)
				;
			if (tok > FZ_MAXQ)
				continue;
			h = vop_vq_add(&vq, sg, n - nin, nin, (void *)(uintptr_t)tok);
			if (h >= 0) {
				sh.live[tok] = 1;
				sh.wlen[tok] = w;
				sh.descs[tok] = vq.slots[h].ndesc;
				used_descs += sh.descs[tok];
			} else {
				FZ_ASSERT(h == -ENOSPC || h == -EIO || (h == -EINVAL && n > num));
			}
			vop_vq_kick_prepare(&vq);
		} else {
			void *t;
			uint32_t len;
			int rc;

			while ((rc = vop_vq_get_used(&vq, &t, &len)) == 1) {
				uintptr_t tok = (uintptr_t)t;

				FZ_ASSERT(tok >= 1 && tok <= FZ_MAXQ && sh.live[tok]);
				FZ_ASSERT(len <= sh.wlen[tok]);
				sh.live[tok] = 0;
				used_descs -= sh.descs[tok];
			}
			if (rc < 0) {
				FZ_ASSERT(vq.broken != 0);
				FZ_ASSERT(vop_vq_get_used(&vq, &t, &len) == -EIO);
			}
			FZ_ASSERT(vq.num_free + used_descs == num);
			vop_vq_enable_notify(&vq);
		}
		(void)tok_next;
	}
	if (peer.len && !vq.broken && pthread_create(&peer.th, NULL, fz_peer_main, &peer) == 0) {
		unsigned i;

		for (i = 0; i < 2000 && !vq.broken; i++) {
			void *t;
			uint32_t len;

			if (vop_vq_get_used(&vq, &t, &len) == 1) {
				uintptr_t tok = (uintptr_t)t;

				FZ_ASSERT(tok >= 1 && tok <= FZ_MAXQ && sh.live[tok]);
				FZ_ASSERT(len <= sh.wlen[tok]);
				sh.live[tok] = 0;
				used_descs -= sh.descs[tok];
			}
		}
		peer.stop = 1;
		pthread_join(peer.th, NULL);
		FZ_ASSERT(vq.num_free + used_descs == num);
	}
	vop_vq_destroy(&vq);
	return 0;
}
