/* No RMW function named anywhere: a pointer to an _Atomic type and the ++ / |= operators. */
#include <stdint.h>
#include "vop/layout.h"
typedef _Atomic uint32_t word_t;
void mark(struct vop_dev_entry *e);
void mark(struct vop_dev_entry *e)
{
	word_t *w = (void *)&e->state;

	(*w)++;
	*w |= 0x40u;
}
