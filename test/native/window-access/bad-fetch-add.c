/* A plain C11 RMW on a window field. */
#include <stdatomic.h>
#include <stdint.h>
#include "vop/layout.h"
void bump(struct vop_win_side *s);
void bump(struct vop_win_side *s)
{
	atomic_fetch_add_explicit((_Atomic uint64_t *)&s->heartbeat, 1, memory_order_relaxed);
}
