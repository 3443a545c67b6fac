/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <string.h>

#include "vop/region.h"

void vop_region_table_init(struct vop_region_table *t)
{
	memset(t, 0, sizeof(*t));
}

/* True when [a, a + as) and [b, b + bs) intersect; sizes > 0, no wrap. */
static int ranges_overlap(uint64_t a, uint64_t as, uint64_t b, uint64_t bs)
{
	return a < b ? b - a < as : a - b < bs;
}

int vop_region_add(struct vop_region_table *t, uint64_t peer_addr, uint64_t size, void *local,
		   uint32_t prot)
{
	uint32_t i;

	if (size == 0 || local == NULL || (prot & (VOP_PROT_READ | VOP_PROT_WRITE)) == 0 ||
	    (prot & ~(VOP_PROT_READ | VOP_PROT_WRITE)) != 0)
		return -EINVAL;
	if (UINT64_MAX - peer_addr < size - 1) /* last byte peer_addr + size - 1 must not wrap */
		return -EINVAL;
	for (i = 0; i < t->count; i++)
		if (ranges_overlap(peer_addr, size, t->regions[i].peer_addr, t->regions[i].size))
			return -EINVAL;
	if (t->count >= VOP_MAX_REGIONS)
		return -ENOSPC;
	t->regions[t->count].peer_addr = peer_addr;
	t->regions[t->count].size = size;
	t->regions[t->count].local = local;
	t->regions[t->count].prot = prot;
	t->count++;
	return 0;
}

void *vop_region_xlate_idx(const struct vop_region_table *t, uint64_t addr, uint64_t len,
			   uint32_t need, uint32_t *idx)
{
	uint32_t i;

	if (len == 0)
		return NULL;
	for (i = 0; i < t->count; i++) {
		const struct vop_region *r = &t->regions[i];
		uint64_t off;

		if (addr < r->peer_addr)
			continue;
		off = addr - r->peer_addr; /* no wrap: addr >= peer_addr */
		if (off >= r->size)
			continue;
		/* Whole range inside: len <= size - off, written without addr + len. */
		if (len > r->size - off)
			return NULL;
		if ((r->prot & need) != need)
			return NULL;
		*idx = i;
		return r->local + off;
	}
	return NULL;
}

void *vop_region_xlate(const struct vop_region_table *t, uint64_t addr, uint64_t len,
		       uint32_t need)
{
	uint32_t idx;

	return vop_region_xlate_idx(t, addr, len, need, &idx);
}
