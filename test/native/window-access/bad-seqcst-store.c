/* A seq_cst store through an _Atomic pointer compiles to xchg: a locked RMW on a BAR. */
#include <stdint.h>
void publish(void *win);
void publish(void *win)
{
	_Atomic uint32_t *p = win;

	*p = 1;
}
