#include <stdint.h>
void inc(uint32_t *w);
void inc(uint32_t *w)
{
	__asm__ __volatile__("lock incl %0" : "+m"(*w));
}
