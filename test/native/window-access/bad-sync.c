#include <stdint.h>
uint32_t swap(uint32_t *w);
uint32_t swap(uint32_t *w)
{
	return __sync_lock_test_and_set(w, 1u);
}
