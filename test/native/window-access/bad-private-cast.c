/* Passing a window field to a private-atomic helper needs this cast, which is refused. */
#include "private_atomic.h"
#include "vop/layout.h"
void count(struct vop_win_side *s);
void count(struct vop_win_side *s)
{
	vop_private_add_u64((struct vop_private_u64 *)&s->heartbeat, 1);
}
