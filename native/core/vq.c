/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Split virtqueue, driver and device roles. See vop/vq.h for the contract
 * and docs/memory-ordering.md for the edges labelled P*, C*, U*, G*, E*.
 *
 * Index arithmetic: avail->idx and used->idx are free-running u16 values;
 * the number of entries between two of them is their difference computed
 * in u16, which is exact modulo 2^16 and so stays in [0, 65535] across
 * wraparound; since num <= 32768 a difference > num is always a violation.
 * Ring slots are idx & mask (num is a power of two).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "win_access.h"
#include "vop/vq.h"

static const char *const reason_names[VOP_VQ_REASON_COUNT] = {
	[VOP_VQ_OK] = "ok",
	[VOP_VQ_BAD_RING_SIZE] = "bad_ring_size",
	[VOP_VQ_AVAIL_IDX_JUMP] = "avail_idx_jump",
	[VOP_VQ_HEAD_RANGE] = "head_range",
	[VOP_VQ_HEAD_BUSY] = "head_busy",
	[VOP_VQ_NEXT_RANGE] = "next_range",
	[VOP_VQ_CHAIN_LOOP] = "chain_loop",
	[VOP_VQ_INDIRECT_NOT_NEGOTIATED] = "indirect_not_negotiated",
	[VOP_VQ_INDIRECT_NESTED] = "indirect_nested",
	[VOP_VQ_INDIRECT_WITH_NEXT] = "indirect_with_next",
	[VOP_VQ_INDIRECT_LEN] = "indirect_len",
	[VOP_VQ_READ_AFTER_WRITE] = "read_after_write",
	[VOP_VQ_ADDR_RANGE] = "addr_range",
	[VOP_VQ_ZERO_LEN] = "zero_len",
	[VOP_VQ_CHAIN_TOO_LONG] = "chain_too_long",
	[VOP_VQ_CHAIN_TOTAL_LEN] = "chain_total_len",
	[VOP_VQ_DIRECTION] = "direction",
	[VOP_VQ_USED_IDX_JUMP] = "used_idx_jump",
	[VOP_VQ_USED_ID_RANGE] = "used_id_range",
	[VOP_VQ_USED_ID_NOT_HEAD] = "used_id_not_head",
	[VOP_VQ_USED_LEN] = "used_len",
	[VOP_VQ_LAYOUT] = "layout",
	[VOP_VQ_PAYLOAD] = "payload",
	[VOP_VQ_PEER_RESET] = "peer_reset",
};

const char *vop_vq_reason_name(unsigned reason)
{
	return reason < VOP_VQ_REASON_COUNT ? reason_names[reason] : "unknown";
}

static void stat_add(struct vop_vq *vq, unsigned idx, uint64_t v)
{
	vop_stat_add(&vq->stats.c[idx], v);
}

void vop_vq_stats_read(const struct vop_vq *vq, struct vop_vq_stats *out)
{
	unsigned i;

	for (i = 0; i < VOP_VQS_COUNT; i++)
		out->c[i] = vop_read_once_u64(&vq->stats.c[i]);
}

int vop_vq_fail(struct vop_vq *vq, unsigned reason)
{
	if (reason == VOP_VQ_OK || reason >= VOP_VQ_REASON_COUNT)
		reason = VOP_VQ_PAYLOAD;
	stat_add(vq, VOP_VQS_ERRORS, 1);
	stat_add(vq, VOP_VQS_ERR_BASE + reason, 1);
	if (vq->broken)
		return -EIO;
	vq->broken = reason;
	vop_write_once_u64(&vq->stats.c[VOP_VQS_BROKEN], reason);
	switch (reason) {
	case VOP_VQ_CHAIN_LOOP:
		return -ELOOP;
	case VOP_VQ_ADDR_RANGE:
		return -EFAULT;
	default:
		return -EPROTO;
	}
}

void vop_vq_account(struct vop_vq *vq, uint64_t bytes)
{
	stat_add(vq, VOP_VQS_BYTES, bytes);
}

/* ------------------------------------------------------------------ */
/* Common setup                                                         */
/* ------------------------------------------------------------------ */

static int check_config(const struct vop_vq_config *cfg)
{
	if (cfg->num == 0 || cfg->num > VOP_QUEUE_MAX_SIZE || (cfg->num & (cfg->num - 1)) != 0)
		return -EINVAL;
	if (!cfg->desc || !cfg->avail || !cfg->used)
		return -EINVAL;
	if (((uintptr_t)cfg->desc % VOP_VRING_DESC_ALIGN) != 0 ||
	    ((uintptr_t)cfg->avail % VOP_VRING_AVAIL_ALIGN) != 0 ||
	    ((uintptr_t)cfg->used % VOP_VRING_USED_ALIGN) != 0)
		return -EINVAL;
	return 0;
}

static void init_common(struct vop_vq *vq, const struct vop_vq_config *cfg, bool driver)
{
	memset(vq, 0, sizeof(*vq));
	vq->num = cfg->num;
	vq->mask = (uint16_t)(cfg->num - 1);
	vq->is_driver = driver;
	vq->event_idx = (cfg->features >> VOP_F_EVENT_IDX) & 1;
	vq->wc_stores = cfg->wc_stores;
	vq->indirect = (cfg->features >> VOP_F_INDIRECT_DESC) & 1;
	vq->desc = cfg->desc;
	vq->avail = cfg->avail;
	vq->used = cfg->used;
	vq->used_event = &vq->avail->ring[cfg->num];
	vq->avail_event = (uint16_t *)(void *)&vq->used->ring[cfg->num];
}

void vop_vq_destroy(struct vop_vq *vq)
{
	free(vq->desc_next);
	free(vq->avail_ring_shadow);
	free(vq->desc_shadow);
	free(vq->slots);
	free(vq->busy);
	free(vq->busy_in);
	free(vq->busy_out);
	vq->desc_next = NULL;
	vq->avail_ring_shadow = NULL;
	vq->desc_shadow = NULL;
	vq->slots = NULL;
	vq->busy = NULL;
	vq->busy_in = NULL;
	vq->busy_out = NULL;
}

/* ------------------------------------------------------------------ */
/* Driver role                                                          */
/* ------------------------------------------------------------------ */

void vop_vq_reset_driver(struct vop_vq *vq)
{
	uint16_t i;

	/* We own desc[] and the driver area: zero them (peer is quiesced). */
	vop_win_zero(vq->desc, vop_vring_desc_bytes(vq->num));
	memset(vq->desc_shadow, 0, sizeof(*vq->desc_shadow) * vq->num);
	memset(vq->avail_ring_shadow, 0, sizeof(uint16_t) * vq->num);
	memset(vq->slots, 0, sizeof(*vq->slots) * vq->num);
	vop_win_zero(vq->avail->ring, 2u * vq->num);
	vop_write_once_u16(vq->used_event, 0);
	vop_write_once_u16(&vq->avail->flags, 0);
	for (i = 0; i < vq->num; i++)
		vq->desc_next[i] = (uint16_t)(i + 1); /* last one is never followed */
	vq->free_head = 0;
	vq->num_free = vq->num;
	vq->inflight = 0;
	vq->avail_shadow = 0;
	vq->avail_published = 0;
	vq->last_used = 0;
	vq->used_cache = 0;
	/* Release: the zeroed ring above is visible before idx 0 (pairs with C1). */
	vop_store_release_u16(&vq->avail->idx, 0);
	if (vq->broken)
		stat_add(vq, VOP_VQS_RESETS, 1);
	vq->broken = 0;
	vop_write_once_u64(&vq->stats.c[VOP_VQS_BROKEN], 0);
}

int vop_vq_init_driver(struct vop_vq *vq, const struct vop_vq_config *cfg)
{
	int rc = check_config(cfg);

	if (rc)
		return rc;
	if (cfg->indirect_local && ((uintptr_t)cfg->indirect_local % VOP_VRING_DESC_ALIGN) != 0)
		return -EINVAL;
	init_common(vq, cfg, true);
	vq->ind_local = cfg->indirect_local;
	vq->ind_peer = cfg->indirect_peer_addr;
	vq->prefer_indirect = cfg->prefer_indirect && vq->indirect && cfg->indirect_local;
	vq->desc_next = calloc(cfg->num, sizeof(uint16_t));
	vq->avail_ring_shadow = calloc(cfg->num, sizeof(uint16_t));
	vq->desc_shadow = calloc(cfg->num, sizeof(struct vop_vring_desc));
	vq->slots = calloc(cfg->num, sizeof(struct vop_vq_slot));
	if (!vq->desc_next || !vq->avail_ring_shadow || !vq->desc_shadow || !vq->slots) {
		vop_vq_destroy(vq);
		return -ENOMEM;
	}
	vop_vq_reset_driver(vq);
	vq->stats.c[VOP_VQS_RESETS] = 0;
	return 0;
}

int vop_vq_next_head(const struct vop_vq *vq)
{
	if (vq->broken)
		return -EIO;
	return vq->num_free ? vq->free_head : -ENOSPC;
}

/*
 * Write a descriptor, skipping fields that already hold the value (saves
 * dirtying a cache line the device must then re-fetch). We never read the
 * shared descriptor back: the shadow is our own record.
 */
static void write_desc(struct vop_vring_desc *shared, struct vop_vring_desc *shadow,
		       uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	if (shadow->addr != addr) {
		shadow->addr = addr;
		vop_write_once_u64(&shared->addr, addr);
	}
	if (shadow->len != len) {
		shadow->len = len;
		vop_write_once_u32(&shared->len, len);
	}
	if (shadow->flags != flags || shadow->next != next) {
		shadow->flags = flags;
		shadow->next = next;
		vop_write_once_u32(&shared->flags, (uint32_t)flags | ((uint32_t)next << 16));
	}
}

int vop_vq_add(struct vop_vq *vq, const struct vop_sg *sg, unsigned n_out, unsigned n_in,
	       void *token)
{
	unsigned total = n_out + n_in, k, need;
	uint32_t wlen = 0, olen = 0;
	uint16_t head, i, last = 0, slot;
	bool use_ind;

	if (vq->broken)
		return -EIO;
	if (!token || total == 0 || total > vq->num || n_out > vq->num)
		return -EINVAL;
	for (k = 0; k < total; k++) {
		if (sg[k].len == 0)
			return -EINVAL;
		if (k < n_out)
			olen += sg[k].len;
		else
			wlen += sg[k].len;
	}
	use_ind = vq->prefer_indirect && total > 1 && total <= VOP_INDIRECT_MAX;
	need = use_ind ? 1 : total;
	if (vq->num_free < need)
		return -ENOSPC;
	head = vq->free_head;
	if (use_ind) {
		/* Each head owns a fixed indirect table: head * VOP_INDIRECT_MAX entries. */
		uint64_t toff = (uint64_t)head * VOP_INDIRECT_MAX * sizeof(struct vop_vring_desc);
		struct vop_vring_desc *t = (struct vop_vring_desc *)(void *)(vq->ind_local + toff);

		for (k = 0; k < total; k++) {
			uint16_t fl = (uint16_t)((k + 1 < total ? VOP_VRING_DESC_F_NEXT : 0) |
						 (k >= n_out ? VOP_VRING_DESC_F_WRITE : 0));
			vop_write_once_u64(&t[k].addr, sg[k].addr);
			vop_write_once_u32(&t[k].len, sg[k].len);
			vop_write_once_u32(&t[k].flags, (uint32_t)fl | ((uint32_t)(k + 1) << 16));
		}
		write_desc(&vq->desc[head], &vq->desc_shadow[head], vq->ind_peer + toff,
			   (uint32_t)(total * sizeof(struct vop_vring_desc)),
			   VOP_VRING_DESC_F_INDIRECT, 0);
		last = head;
	} else {
		i = head;
		for (k = 0; k < total; k++) {
			uint16_t fl = (uint16_t)((k + 1 < total ? VOP_VRING_DESC_F_NEXT : 0) |
						 (k >= n_out ? VOP_VRING_DESC_F_WRITE : 0));
			write_desc(&vq->desc[i], &vq->desc_shadow[i], sg[k].addr, sg[k].len, fl,
				   vq->desc_next[i]);
			last = i;
			i = vq->desc_next[i];
		}
	}
	vq->free_head = vq->desc_next[last];
	vq->num_free = (uint16_t)(vq->num_free - need);
	vq->slots[head].token = token;
	vq->slots[head].wlen = wlen;
	vq->slots[head].olen = olen;
	vq->slots[head].ndesc = (uint16_t)need;
	slot = vq->avail_shadow & vq->mask;
	if (vq->avail_ring_shadow[slot] != head) {
		vq->avail_ring_shadow[slot] = head;
		vop_write_once_u16(&vq->avail->ring[slot], head);
	}
	vq->avail_shadow++;
	vq->inflight++;
	return head;
}

int vop_vq_kick_prepare(struct vop_vq *vq)
{
	uint16_t old = vq->avail_published, new_idx = vq->avail_shadow;
	bool need;

	if (vq->broken)
		return -EIO;
	if (old == new_idx)
		return 0;
	/*
	 * P1: release. Orders the descriptor and avail->ring[] writes of
	 * vop_vq_add() before the new avail->idx. Pairs with C1 (acquire
	 * fence after the device reads avail->idx in vop_vq_pop()). On a
	 * write-combining mapping the earlier stores are drained first (W1C).
	 */
	if (vq->wc_stores)
		vop_wc_fence();
	vop_store_release_u16(&vq->avail->idx, new_idx);
	vq->avail_published = new_idx;
	/*
	 * P2: full fence. Orders the avail->idx store before the load of
	 * avail_event / used->flags below (store->load). Pairs with E2 in
	 * vop_vq_enable_notify() on the device side: either the device sees
	 * our new idx when it re-checks, or we see its new avail_event.
	 */
	vop_mb();
	if (vq->event_idx)
		need = vop_vring_need_event(vop_read_once_u16(vq->avail_event), new_idx, old);
	else
		need = !(vop_read_once_u16(&vq->used->flags) & VOP_VRING_USED_F_NO_NOTIFY);
	stat_add(vq, need ? VOP_VQS_NOTIFY_SENT : VOP_VQS_NOTIFY_SUPPRESSED, 1);
	return need;
}

int vop_vq_get_used(struct vop_vq *vq, void **token, uint32_t *len)
{
	struct vop_vring_used_elem *e;
	uint32_t id, ulen;
	uint16_t head, i, k;
	struct vop_vq_slot *s;

	if (vq->broken)
		return -EIO;
	if (vq->last_used == vq->used_cache) {
		uint16_t idx = vop_read_once_u16(&vq->used->idx);

		if (idx == vq->last_used)
			return 0;
		/* More completions than chains we posted: the device lies. */
		if ((uint16_t)(idx - vq->last_used) > vq->inflight)
			return vop_vq_fail(vq, VOP_VQ_USED_IDX_JUMP);
		vq->used_cache = idx;
		/*
		 * G1: acquire fence. Orders the used->idx load above before the
		 * used->ring[] loads below. Pairs with U1 (release store of
		 * used->idx in vop_vq_publish_used()).
		 */
		vop_rmb();
	}
	e = &vq->used->ring[vq->last_used & vq->mask];
	id = vop_read_once_u32(&e->id); /* read once, then only the private copy */
	ulen = vop_read_once_u32(&e->len);
	if (id >= vq->num)
		return vop_vq_fail(vq, VOP_VQ_USED_ID_RANGE);
	head = (uint16_t)id;
	s = &vq->slots[head];
	if (!s->token)
		return vop_vq_fail(vq, VOP_VQ_USED_ID_NOT_HEAD);
	if (ulen > s->wlen)
		return vop_vq_fail(vq, VOP_VQ_USED_LEN);
	/* Return the chain's descriptors to the free list via private links. */
	for (i = head, k = 1; k < s->ndesc; k++)
		i = vq->desc_next[i];
	vq->desc_next[i] = vq->free_head;
	vq->free_head = head;
	vq->num_free = (uint16_t)(vq->num_free + s->ndesc);
	*token = s->token;
	*len = ulen;
	stat_add(vq, VOP_VQS_BUFFERS, 1);
	stat_add(vq, VOP_VQS_BYTES, (uint64_t)s->olen + ulen);
	s->token = NULL;
	vq->last_used++;
	vq->inflight--;
	return 1;
}

/* ------------------------------------------------------------------ */
/* Device role                                                          */
/* ------------------------------------------------------------------ */

void vop_vq_reset_device(struct vop_vq *vq)
{
	/* We own the device area: zero it (peer is quiesced). */
	vop_win_zero(vq->used->ring, 8u * vq->num);
	vop_write_once_u16(vq->avail_event, 0);
	vop_write_once_u16(&vq->used->flags, 0);
	memset(vq->busy, 0, vq->num);
	memset(vq->busy_in, 0, sizeof(uint32_t) * vq->num);
	memset(vq->busy_out, 0, sizeof(uint32_t) * vq->num);
	vq->last_avail = 0;
	vq->avail_cache = 0;
	vq->used_shadow = 0;
	vq->used_published = 0;
	/* Release: the zeroed ring is visible before idx 0 (pairs with G1). */
	vop_store_release_u16(&vq->used->idx, 0);
	if (vq->broken)
		stat_add(vq, VOP_VQS_RESETS, 1);
	vq->broken = 0;
	vop_write_once_u64(&vq->stats.c[VOP_VQS_BROKEN], 0);
}

/* Device side set-up without touching shared memory. */
static int init_device_private(struct vop_vq *vq, const struct vop_vq_config *cfg)
{
	int rc = check_config(cfg);

	if (rc)
		return rc;
	if (!cfg->regions || cfg->max_chain_descs > VOP_CHAIN_MAX_IOV)
		return -EINVAL;
	init_common(vq, cfg, false);
	vq->rt = cfg->regions;
	vq->max_chain_descs = cfg->max_chain_descs ? cfg->max_chain_descs : VOP_CHAIN_MAX_IOV;
	vq->max_chain_bytes = cfg->max_chain_bytes ? cfg->max_chain_bytes : (1ull << 30);
	vq->busy = calloc(cfg->num, 1);
	vq->busy_in = calloc(cfg->num, sizeof(uint32_t));
	vq->busy_out = calloc(cfg->num, sizeof(uint32_t));
	if (!vq->busy || !vq->busy_in || !vq->busy_out) {
		vop_vq_destroy(vq);
		return -ENOMEM;
	}
	return 0;
}

int vop_vq_init_device(struct vop_vq *vq, const struct vop_vq_config *cfg)
{
	int rc = init_device_private(vq, cfg);

	if (rc == 0)
		vop_vq_reset_device(vq);
	return rc;
}

int vop_vq_init_device_resume(struct vop_vq *vq, const struct vop_vq_config *cfg,
			      uint16_t last_avail, uint16_t used_idx)
{
	int rc = init_device_private(vq, cfg);

	if (rc)
		return rc;
	vq->last_avail = last_avail;
	vq->avail_cache = last_avail;
	vq->used_shadow = used_idx;
	vq->used_published = used_idx;
	return 0;
}

/* A private copy of one descriptor: each shared field loaded exactly once. */
struct desc_copy {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static void read_desc(const struct vop_vring_desc *d, struct desc_copy *out)
{
	uint32_t fn;

	out->addr = vop_read_once_u64(&d->addr);
	out->len = vop_read_once_u32(&d->len);
	fn = vop_read_once_u32(&d->flags); /* flags and next in one load */
	out->flags = (uint16_t)fn;
	out->next = (uint16_t)(fn >> 16);
}

/*
 * Classify an over-long chain: keep following next (private copies only,
 * nothing collected) until the table bound; running past it is a loop.
 */
static unsigned classify_long_chain(const struct vop_vring_desc *table, uint32_t tmax,
				    uint16_t i, uint32_t count)
{
	struct desc_copy d;

	for (;;) {
		if (count > tmax)
			return VOP_VQ_CHAIN_LOOP;
		read_desc(&table[i], &d);
		count++;
		if (!(d.flags & VOP_VRING_DESC_F_NEXT))
			return VOP_VQ_CHAIN_TOO_LONG;
		if (d.next >= tmax)
			return VOP_VQ_NEXT_RANGE;
		i = d.next;
	}
}

/*
 * Walk and validate the chain at head into *c (D5-D11) and mark head busy.
 * Returns 1 or a negative errno (queue broken).
 */
static inline __attribute__((always_inline)) int walk_chain(struct vop_vq *vq, uint16_t head,
							     struct vop_chain *c)
{
	const struct vop_vring_desc *table = vq->desc;
	uint32_t tmax = vq->num, count = 0;
	uint64_t total = 0, in_bytes = 0, out_bytes = 0;
	bool in_indirect = false, seen_write = false;
	uint16_t i;
	unsigned n = 0, nout = 0;
	struct desc_copy d;

	if (vq->busy[head])
		return vop_vq_fail(vq, VOP_VQ_HEAD_BUSY);
	i = head;
	for (;;) {
		read_desc(&table[i], &d); /* D5: private copy, fields read once */
		if (++count > tmax) /* D7: bound the walk by the table size */
			return vop_vq_fail(vq, VOP_VQ_CHAIN_LOOP);
		if (d.flags & VOP_VRING_DESC_F_INDIRECT) {
			if (!vq->indirect) /* D8 */
				return vop_vq_fail(vq, VOP_VQ_INDIRECT_NOT_NEGOTIATED);
			if (in_indirect)
				return vop_vq_fail(vq, VOP_VQ_INDIRECT_NESTED);
			if (d.flags & VOP_VRING_DESC_F_NEXT)
				return vop_vq_fail(vq, VOP_VQ_INDIRECT_WITH_NEXT);
			if (d.len == 0 || d.len % sizeof(struct vop_vring_desc) != 0 ||
			    d.len / sizeof(struct vop_vring_desc) > VOP_QUEUE_MAX_SIZE)
				return vop_vq_fail(vq, VOP_VQ_INDIRECT_LEN);
			table = vop_region_xlate(vq->rt, d.addr, d.len, VOP_PROT_READ); /* D10 */
			if (!table || ((uintptr_t)table % 8u) != 0)
				return vop_vq_fail(vq, VOP_VQ_ADDR_RANGE);
			/* D7: separate counter for the indirect table, bounded by its size. */
			tmax = d.len / (uint32_t)sizeof(struct vop_vring_desc);
			count = 0;
			in_indirect = true;
			i = 0;
			continue;
		}
		if (d.len == 0)
			return vop_vq_fail(vq, VOP_VQ_ZERO_LEN);
		if (d.flags & VOP_VRING_DESC_F_WRITE) {
			seen_write = true;
		} else if (seen_write) { /* D9 */
			return vop_vq_fail(vq, VOP_VQ_READ_AFTER_WRITE);
		}
		if (n >= vq->max_chain_descs) /* D11 */
			return vop_vq_fail(vq, classify_long_chain(table, tmax, i, count - 1));
		c->iov[n].base = vop_region_xlate_hint(vq->rt, d.addr, d.len,
						       (d.flags & VOP_VRING_DESC_F_WRITE) ? VOP_PROT_WRITE
											: VOP_PROT_READ,
						       &vq->rt_hint);
		if (!c->iov[n].base) /* D10 */
			return vop_vq_fail(vq, VOP_VQ_ADDR_RANGE);
		c->iov[n].len = d.len;
		n++;
		total += d.len;
		if (total > vq->max_chain_bytes) /* D11 */
			return vop_vq_fail(vq, VOP_VQ_CHAIN_TOTAL_LEN);
		if (d.flags & VOP_VRING_DESC_F_WRITE)
			in_bytes += d.len;
		else
			out_bytes += d.len, nout++;
		if (!(d.flags & VOP_VRING_DESC_F_NEXT))
			break;
		if (d.next >= tmax) /* D6 */
			return vop_vq_fail(vq, VOP_VQ_NEXT_RANGE);
		i = d.next;
	}
	if (in_bytes > UINT32_MAX || out_bytes > UINT32_MAX)
		return vop_vq_fail(vq, VOP_VQ_CHAIN_TOTAL_LEN);
	c->head = head;
	c->n_out = (uint16_t)nout; /* readable iov precede writable ones (D9) */
	c->n_in = (uint16_t)(n - nout);
	c->out_bytes = (uint32_t)out_bytes;
	c->in_bytes = (uint32_t)in_bytes;
	vq->busy[head] = 1;
	vq->busy_in[head] = c->in_bytes;
	vq->busy_out[head] = c->out_bytes;
	return 1;
}

int vop_vq_pop(struct vop_vq *vq, struct vop_chain *c)
{
	uint16_t head;
	int rc;

	if (vq->broken)
		return -EIO;
	if (vq->last_avail == vq->avail_cache) {
		uint16_t idx = vop_read_once_u16(&vq->avail->idx); /* D2: read once */

		if (idx == vq->last_avail)
			return 0;
		if ((uint16_t)(idx - vq->last_avail) > vq->num) /* D3 */
			return vop_vq_fail(vq, VOP_VQ_AVAIL_IDX_JUMP);
		vq->avail_cache = idx;
		/*
		 * C1: acquire fence. Orders the avail->idx load above before the
		 * avail->ring[] and descriptor loads below. Pairs with P1
		 * (release store of avail->idx in vop_vq_kick_prepare()).
		 */
		vop_rmb();
	}
	head = vop_read_once_u16(&vq->avail->ring[vq->last_avail & vq->mask]);
	if (head >= vq->num) /* D4 */
		return vop_vq_fail(vq, VOP_VQ_HEAD_RANGE);
	rc = walk_chain(vq, head, c);
	if (rc == 1)
		vq->last_avail++;
	return rc;
}

int vop_vq_pop_head(struct vop_vq *vq, uint16_t head, struct vop_chain *c)
{
	if (vq->broken)
		return -EIO;
	if (head >= vq->num) /* D4: the head comes from a journal the peer can write */
		return vop_vq_fail(vq, VOP_VQ_HEAD_RANGE);
	return walk_chain(vq, head, c);
}

int vop_vq_push(struct vop_vq *vq, uint16_t head, uint32_t len)
{
	struct vop_vring_used_elem *e;

	if (vq->broken)
		return -EIO;
	if (head >= vq->num || !vq->busy[head] || len > vq->busy_in[head])
		return -EINVAL;
	e = &vq->used->ring[vq->used_shadow & vq->mask];
	vop_write_once_u32(&e->id, head);
	vop_write_once_u32(&e->len, len);
	vq->busy[head] = 0;
	vq->used_shadow++;
	stat_add(vq, VOP_VQS_BUFFERS, 1);
	/* Payload moved by this chain: what we read plus what we wrote (as the driver counts it). */
	stat_add(vq, VOP_VQS_BYTES, (uint64_t)vq->busy_out[head] + len);
	return 0;
}

int vop_vq_publish_used(struct vop_vq *vq)
{
	uint16_t old = vq->used_published, new_idx = vq->used_shadow;
	bool need;

	if (vq->broken)
		return -EIO;
	if (old == new_idx)
		return 0;
	/*
	 * U1: release. Orders the used->ring[] writes of vop_vq_push() (and
	 * our reads/writes of the chain's buffers) before the new used->idx.
	 * Pairs with G1 (acquire fence in vop_vq_get_used()). On a
	 * write-combining mapping the earlier stores are drained first (W1C).
	 */
	if (vq->wc_stores)
		vop_wc_fence();
	vop_store_release_u16(&vq->used->idx, new_idx);
	vq->used_published = new_idx;
	/*
	 * U2: full fence. Orders the used->idx store before the used_event /
	 * avail->flags load (store->load). Pairs with E1 in
	 * vop_vq_enable_notify() on the driver side.
	 */
	vop_mb();
	if (vq->event_idx)
		need = vop_vring_need_event(vop_read_once_u16(vq->used_event), new_idx, old);
	else
		need = !(vop_read_once_u16(&vq->avail->flags) & VOP_VRING_AVAIL_F_NO_INTERRUPT);
	stat_add(vq, need ? VOP_VQS_NOTIFY_SENT : VOP_VQS_NOTIFY_SUPPRESSED, 1);
	return need;
}

/* ------------------------------------------------------------------ */
/* Notification control (both roles)                                    */
/* ------------------------------------------------------------------ */

int vop_vq_enable_notify(struct vop_vq *vq)
{
	if (vq->broken)
		return 0;
	if (vq->is_driver) {
		if (vq->event_idx)
			vop_write_once_u16(vq->used_event, vq->last_used);
		else
			vop_write_once_u16(&vq->avail->flags, 0);
		/*
		 * E1: full fence. Orders the used_event/flags store before
		 * re-reading used->idx. Pairs with U2 in vop_vq_publish_used().
		 */
		vop_mb();
		return vop_read_once_u16(&vq->used->idx) != vq->last_used;
	}
	if (vq->event_idx)
		vop_write_once_u16(vq->avail_event, vq->last_avail);
	else
		vop_write_once_u16(&vq->used->flags, 0);
	/*
	 * E2: full fence. Orders the avail_event/flags store before re-reading
	 * avail->idx. Pairs with P2 in vop_vq_kick_prepare().
	 */
	vop_mb();
	return vop_read_once_u16(&vq->avail->idx) != vq->last_avail;
}

void vop_vq_disable_notify(struct vop_vq *vq)
{
	/* With EVENT_IDX a stale event index already suppresses notifications. */
	if (vq->event_idx || vq->broken)
		return;
	if (vq->is_driver)
		vop_write_once_u16(&vq->avail->flags, VOP_VRING_AVAIL_F_NO_INTERRUPT);
	else
		vop_write_once_u16(&vq->used->flags, VOP_VRING_USED_F_NO_NOTIFY);
}

bool vop_vq_has_work(struct vop_vq *vq)
{
	if (vq->broken)
		return false;
	if (vq->is_driver)
		return vq->last_used != vq->used_cache ||
		       vop_read_once_u16(&vq->used->idx) != vq->last_used;
	return vq->last_avail != vq->avail_cache ||
	       vop_read_once_u16(&vq->avail->idx) != vq->last_avail;
}
