/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The doorbell protocol on the side blocks' doorbell lines (layout.h), the
 * part every transport shares; edges D1/D2 in docs/memory-ordering.md.
 * Each side writes only its own line: `kick` (a fresh value every time it
 * rings) and `waiting` (1 while it sleeps for the peer's kick). What a
 * signal and a sleep are is the transport's business (a futex for shm, an
 * eventfd, an MSI-X vector or a doorbell register for pci-bar, nothing at
 * all for a polled BAR); the transport calls these around them.
 *
 *   ringer: vop_doorbell_ring() -> true: signal the peer
 *   waiter: snap = vop_doorbell_snapshot(); ...arm the rings, re-check...;
 *           if (!vop_doorbell_arm(snap)) sleep until signalled;
 *           vop_doorbell_disarm()
 * Either the ringer sees waiting (and signals) or the waiter sees the new
 * kick (and does not sleep): a wake-up is never lost, and a polling peer
 * costs the ringer no signal.
 */
#ifndef VOP_CORE_DOORBELL_H
#define VOP_CORE_DOORBELL_H

#include <stdbool.h>

#include "vop/layout.h"
#include "win_access.h"

/* The side block of side (0/1) in a window mapped at base. */
static inline struct vop_win_side *vop_doorbell_side(uint8_t *base, unsigned side)
{
	return (struct vop_win_side *)(void *)(base + VOP_WIN_SIDE_OFF +
					       (side & 1u) * sizeof(struct vop_win_side));
}

/*
 * Ringer: publish a fresh kick value (fresh: from a private per-process
 * counter, never equal to the value before). Returns true if the peer
 * announced that it sleeps and must be signalled.
 */
static inline bool vop_doorbell_ring(struct vop_win_side *me, const struct vop_win_side *peer,
				     uint32_t fresh)
{
	/*
	 * D1: release store of kick: everything we published before (ring
	 * indices, entries, status words) is visible to a waiter whose
	 * snapshot (acquire) reads this value. Then a full fence: the kick
	 * store before the load of the peer's waiting word (store->load,
	 * pairs with the fence in vop_doorbell_arm, D2).
	 */
	vop_store_release_u32(&me->kick, fresh);
	vop_mb();
	return vop_read_once_u32(&peer->waiting) != 0;
}

/* Waiter: the peer's kick now (acquire: pairs with the release in vop_doorbell_ring). */
static inline uint32_t vop_doorbell_snapshot(const struct vop_win_side *peer)
{
	return vop_load_acquire_u32(&peer->kick);
}

/*
 * Waiter: announce the sleep, then re-check. Returns true if the peer
 * kicked since snap (do not sleep; call vop_doorbell_disarm()).
 */
static inline bool vop_doorbell_arm(struct vop_win_side *me, const struct vop_win_side *peer,
				    uint32_t snap)
{
	vop_write_once_u32(&me->waiting, 1);
	/* D2: full fence: the waiting store before the kick load (pairs with D1). */
	vop_mb();
	return vop_load_acquire_u32(&peer->kick) != snap;
}

/* Waiter: awake again (the peer may stop signalling; a late signal is harmless). */
static inline void vop_doorbell_disarm(struct vop_win_side *me)
{
	vop_write_once_u32(&me->waiting, 0);
}

#endif /* VOP_CORE_DOORBELL_H */
