/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Region table: the set of peer-address ranges a link's peer may name, and
 * where each is mapped locally. Every (addr, len) the peer hands us goes
 * through vop_region_xlate(); nothing else converts peer addresses.
 *
 * Used by shm today (one region: the window's data area); PCI BARs, NTB
 * memory windows and vhost-user memory tables add several regions.
 */
#ifndef VOP_REGION_H
#define VOP_REGION_H

#include <stdint.h>

#define VOP_MAX_REGIONS 16u

#define VOP_PROT_READ 1u  /* the device side may read the range */
#define VOP_PROT_WRITE 2u /* the device side may write the range */

/* One region; all fields set at add time and read-only afterwards. */
struct vop_region {
	uint64_t peer_addr; /* first peer address of the range */
	uint64_t size;      /* bytes, > 0; peer_addr + size does not wrap */
	uint8_t *local;     /* local mapping of peer_addr */
	uint32_t prot;      /* VOP_PROT_* allowed */
};

/*
 * Fixed-capacity table. Built before the worker starts and read-only while
 * any worker uses it, so lookups need no lock.
 */
struct vop_region_table {
	uint32_t count;                            /* valid entries */
	struct vop_region regions[VOP_MAX_REGIONS]; /* sorted by nothing; linear scan */
};

/* Empty the table. */
void vop_region_table_init(struct vop_region_table *t);

/*
 * vop_region_add - add [peer_addr, peer_addr + size) mapped at local.
 * Returns 0, -EINVAL (size 0, wrap, NULL local, prot 0 or overlap with an
 * existing region) or -ENOSPC (table full). Not thread-safe.
 */
int vop_region_add(struct vop_region_table *t, uint64_t peer_addr, uint64_t size, void *local,
		   uint32_t prot);

/*
 * vop_region_xlate - translate a peer range to a local pointer.
 * The whole range [addr, addr + len) must lie inside ONE region whose prot
 * includes all bits of need. Overflow-safe for any addr/len (no addr + len
 * is ever computed). len 0 is rejected. Returns the local pointer or NULL.
 * Lock-free, safe from any thread while the table is not modified.
 */
void *vop_region_xlate(const struct vop_region_table *t, uint64_t addr, uint64_t len,
		       uint32_t need);

/* vop_region_xlate() that also stores the index of the region hit in *idx (unchanged on NULL). */
void *vop_region_xlate_idx(const struct vop_region_table *t, uint64_t addr, uint64_t len,
			   uint32_t need, uint32_t *idx);

/*
 * vop_region_xlate_hint - vop_region_xlate() trying region *hint first.
 * Regions do not overlap, so a range that lies in region *hint is found
 * there by the scan too: the result is the same for any hint value. The
 * hint is only an index (checked against count), every bound and prot
 * check is made on the table's entry as in the scan. On a miss the scan
 * runs and *hint becomes the index it hit. For the per-descriptor path,
 * where consecutive buffers almost always lie in one region.
 */
static inline void *vop_region_xlate_hint(const struct vop_region_table *t, uint64_t addr,
					  uint64_t len, uint32_t need, uint32_t *hint)
{
	uint32_t i = *hint;

	if (i < t->count && len != 0) {
		const struct vop_region *r = &t->regions[i];

		/* the same checks as the scan: start inside, whole range inside, prot */
		if (addr >= r->peer_addr && addr - r->peer_addr < r->size) {
			uint64_t off = addr - r->peer_addr;

			if (len > r->size - off || (r->prot & need) != need)
				return NULL;
			return r->local + off;
		}
	}
	return vop_region_xlate_idx(t, addr, len, need, hint);
}

#endif /* VOP_REGION_H */
