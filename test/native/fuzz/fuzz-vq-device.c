/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the device-side chain parser (vop_vq_pop/push) against
 * a driver whose descriptors, avail ring, indirect tables and avail->idx
 * come from the input; the second half of the input is replayed by a peer
 * thread concurrently with the pops (TOCTOU). Invariants checked for every
 * popped chain: head < num, every iov lies inside the data region with the
 * right direction, counts and byte totals add up, readable before writable.
 */
#include "fuzz-common.h"

static struct fz_mem mem;

static void write_desc(struct vop_vring_desc *d, struct fz_reader *r, uint64_t raw_addr)
{
	uint16_t off = fz_u16(r);

	__atomic_store_n(&d->addr, raw_addr ? raw_addr : FZ_DATA_PEER + off, __ATOMIC_RELAXED);
	__atomic_store_n(&d->len, (uint32_t)fz_u16(r), __ATOMIC_RELAXED);
	__atomic_store_n(&d->flags, (uint16_t)(fz_u8(r) & 7), __ATOMIC_RELAXED);
	__atomic_store_n(&d->next, (uint16_t)fz_u8(r), __ATOMIC_RELAXED);
}

/* One driver-side write; shared by the sequential part and the peer thread. */
static void peer_op(struct fz_peer *p, struct fz_reader *r)
{
	struct vop_vring_desc *desc = (struct vop_vring_desc *)(void *)p->m->desc;
	struct vop_vring_avail *avail = (struct vop_vring_avail *)(void *)p->m->avail;
	struct vop_vring_desc *ind = (struct vop_vring_desc *)(void *)p->m->data;
	uint8_t op = fz_u8(r);

	switch (op % 6) {
	case 0:
		write_desc(&desc[fz_u8(r) % p->num], r, 0);
		break;
	case 1:
		write_desc(&desc[fz_u8(r) % p->num], r, fz_u64(r) | 1);
		break;
	case 2: {
		uint8_t slot = fz_u8(r);
		__atomic_store_n(&avail->ring[slot % p->num], fz_u16(r) % (p->num + 2), __ATOMIC_RELAXED);
		break;
	}
	case 3:
		__atomic_add_fetch(&avail->idx, (uint16_t)(fz_u8(r) % (p->num + 2)), __ATOMIC_RELEASE);
		break;
	case 4:
		write_desc(&ind[fz_u8(r) % 80], r, 0);
		break;
	default:
		__atomic_store_n(&avail->idx, fz_u16(r), __ATOMIC_RELEASE);
		break;
	}
}

static void check_chain(const struct vop_vq *vq, const struct vop_chain *c)
{
	uint64_t in = 0, out = 0;
	unsigned i;

	FZ_ASSERT(c->head < vq->num);
	FZ_ASSERT((unsigned)c->n_out + c->n_in <= VOP_CHAIN_MAX_IOV);
	FZ_ASSERT(c->n_out + c->n_in > 0);
	for (i = 0; i < (unsigned)c->n_out + c->n_in; i++) {
		const uint8_t *b = c->iov[i].base;

		FZ_ASSERT(c->iov[i].len > 0);
		FZ_ASSERT(b >= mem.data && b < mem.data + sizeof(mem.data));
		FZ_ASSERT(c->iov[i].len <= (uint64_t)(mem.data + sizeof(mem.data) - b));
		if (i < c->n_out)
			out += c->iov[i].len;
		else
			in += c->iov[i].len;
	}
	FZ_ASSERT(out == c->out_bytes && in == c->in_bytes);
	FZ_ASSERT(out + in <= vq->max_chain_bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_reader r = { data, size };
	struct vop_region_table rt;
	struct vop_vq_config c;
	struct vop_vq vq;
	struct vop_chain ch;
	struct fz_peer peer;
	size_t half;
	uint16_t num = (uint16_t)(1u << (fz_u8(&r) % 5)); /* 1 .. 16 */
	uint8_t fl = fz_u8(&r);
	unsigned steps = 0;

	memset(&mem, 0, sizeof(mem));
	vop_region_table_init(&rt);
	vop_region_add(&rt, FZ_DATA_PEER, sizeof(mem.data), mem.data, VOP_PROT_READ | VOP_PROT_WRITE);
	memset(&c, 0, sizeof(c));
	c.num = num;
	c.features = ((fl & 1) ? 1ull << VOP_F_EVENT_IDX : 0) | ((fl & 2) ? 1ull << VOP_F_INDIRECT_DESC : 0);
	c.desc = mem.desc;
	c.avail = mem.avail;
	c.used = mem.used;
	c.regions = &rt;
	c.max_chain_descs = (fl >> 2) % VOP_CHAIN_MAX_IOV + 1;
	c.max_chain_bytes = (fl & 0x80) ? 4096 : 0;
	if (vop_vq_init_device(&vq, &c) != 0)
		return 0;
	memset(&peer, 0, sizeof(peer));
	peer.m = &mem;
	peer.num = num;
	peer.apply = peer_op;
	half = r.n / 2;
	peer.script = r.p + half;
	peer.len = r.n - half;
	r.n = half;
	/* Sequential driver writes interleaved with device pops. */
	while (r.n) {
		uint8_t op = fz_u8(&r);

		if (op < 200) {
			peer_op(&peer, &r);
			continue;
		}
		while (vop_vq_pop(&vq, &ch) == 1) {
			check_chain(&vq, &ch);
			FZ_ASSERT(vop_vq_push(&vq, ch.head, ch.in_bytes) == 0);
			if (++steps > 64)
				break;
		}
		vop_vq_publish_used(&vq);
		if (vq.broken && (op & 1))
			vop_vq_reset_device(&vq);
		vop_vq_enable_notify(&vq);
	}
	/* Concurrent phase: the peer rewrites rings while we keep popping. */
	if (peer.len && pthread_create(&peer.th, NULL, fz_peer_main, &peer) == 0) {
		unsigned i;

		for (i = 0; i < 2000; i++) {
			int rc = vop_vq_pop(&vq, &ch);

			if (rc == 1) {
				check_chain(&vq, &ch);
				FZ_ASSERT(vop_vq_push(&vq, ch.head, 0) == 0);
				vop_vq_publish_used(&vq);
			} else if (rc < 0) {
				FZ_ASSERT(vq.broken != 0);
				vop_vq_reset_device(&vq);
			}
		}
		peer.stop = 1;
		pthread_join(peer.th, NULL);
	}
	vop_vq_destroy(&vq);
	return 0;
}
