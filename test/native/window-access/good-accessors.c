/* What transport-neutral code may do: single loads and stores, fences, private atomics. */
#include "private_atomic.h"
#include "win_access.h"
#include "vop/layout.h"
struct counters {
	struct vop_private_u64 kicks;
};
uint32_t step(struct vop_win_side *me, const struct vop_win_side *peer, struct counters *c);
uint32_t step(struct vop_win_side *me, const struct vop_win_side *peer, struct counters *c)
{
	vop_write_once_u64(&me->heartbeat, vop_read_once_u64(&me->heartbeat) + 1);
	vop_store_release_u32(&me->state, VOP_SIDE_UP);
	vop_mb();
	vop_private_add_u64(&c->kicks, 1);
	return vop_load_acquire_u32(&peer->state);
}
