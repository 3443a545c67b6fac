/* A futex wait on a window word, spelled out. */
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
long sleep_on(uint32_t *doorbell, uint32_t seen);
long sleep_on(uint32_t *doorbell, uint32_t seen)
{
	return syscall(SYS_futex, doorbell, FUTEX_WAIT, seen, 0, 0, 0);
}
