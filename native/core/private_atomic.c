/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private-memory atomics (private_atomic.h). The only transport-neutral
 * file allowed to do atomic read-modify-write (native/tools/check-window-access.sh).
 */
#include "private_atomic.h"

uint64_t vop_private_add_u64(struct vop_private_u64 *c, uint64_t v)
{
	return atomic_fetch_add_explicit(&c->v, v, memory_order_relaxed) + v;
}

uint32_t vop_private_next_u32(struct vop_private_u32 *c)
{
	return atomic_fetch_add_explicit(&c->v, 1, memory_order_seq_cst) + 1u;
}

uint64_t vop_private_load_u64(const struct vop_private_u64 *c)
{
	return atomic_load_explicit(&c->v, memory_order_relaxed);
}

uint32_t vop_private_load_u32(const struct vop_private_u32 *c)
{
	return atomic_load_explicit(&c->v, memory_order_acquire);
}

void vop_private_store_u32(struct vop_private_u32 *c, uint32_t v)
{
	atomic_store_explicit(&c->v, v, memory_order_relaxed);
}

int vop_private_set_once(struct vop_private_once *o, int v)
{
	int expected = 0;

	if (atomic_compare_exchange_strong_explicit(&o->v, &expected, v, memory_order_acq_rel,
						    memory_order_acquire))
		return v;
	return expected;
}

int vop_private_get_once(const struct vop_private_once *o)
{
	return atomic_load_explicit(&o->v, memory_order_acquire);
}
