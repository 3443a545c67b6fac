/* The builtin hidden behind a macro defined in another header would expand to this. */
#include <stdint.h>
#define BUMP(p) __atomic_add_fetch((p), 1, __ATOMIC_SEQ_CST)
uint32_t ring(uint32_t *doorbell);
uint32_t ring(uint32_t *doorbell)
{
	return BUMP(doorbell);
}
