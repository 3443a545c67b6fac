/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Atomic read-modify-write on PRIVATE memory only: counters and flags that
 * several threads of one process update (statistics, a doorbell sequence,
 * "first error wins"). Never window memory: a PCI BAR has no atomics unless
 * both ends support PCIe AtomicOps (architecture rule 9).
 *
 * The types are distinct structs, so a window pointer (a plain uint32_t *
 * or uint64_t * into the layout of vop/layout.h) cannot be passed without
 * a cast to `struct vop_private_*`, and such a cast is refused by the
 * window-access check (native/tools/check-window-access.sh) everywhere
 * except this header and private_atomic.c. The functions are out of line
 * (private_atomic.c) so that the compiled transport-neutral objects hold no
 * locked instruction at all: the check disassembles them and fails on any.
 * A call costs a few nanoseconds; none of these is on a per-buffer path of
 * the rings (per request at most, next to a syscall).
 */
#ifndef VOP_CORE_PRIVATE_ATOMIC_H
#define VOP_CORE_PRIVATE_ATOMIC_H

#include <stdatomic.h>
#include <stdint.h>

/* A 64-bit counter in private memory. Zero-initialise (calloc / = {0}). */
struct vop_private_u64 {
	_Atomic uint64_t v;
};

/* A 32-bit counter in private memory. */
struct vop_private_u32 {
	_Atomic uint32_t v;
};

/* A "first value wins" int in private memory (0 = unset). */
struct vop_private_once {
	_Atomic int v;
};

_Static_assert(sizeof(struct vop_private_u64) == 8, "vop_private_u64 is one word");
_Static_assert(sizeof(struct vop_private_u32) == 4, "vop_private_u32 is one word");

/* *c += v (relaxed; no ordering with other memory); returns the new value. */
uint64_t vop_private_add_u64(struct vop_private_u64 *c, uint64_t v);

/* *c += 1 (seq_cst); returns the new value (a fresh number per call, wraps at 2^32). */
uint32_t vop_private_next_u32(struct vop_private_u32 *c);

/* Current value: relaxed (u64, counters) / acquire (u32, sequence numbers). */
uint64_t vop_private_load_u64(const struct vop_private_u64 *c);
uint32_t vop_private_load_u32(const struct vop_private_u32 *c);

/* Set the value (relaxed), e.g. to seed a counter; not an RMW. */
void vop_private_store_u32(struct vop_private_u32 *c, uint32_t v);

/* Store v (non-zero) if nothing was stored yet; returns the value that stays (acq_rel). */
int vop_private_set_once(struct vop_private_once *o, int v);
int vop_private_get_once(const struct vop_private_once *o);

#endif /* VOP_CORE_PRIVATE_ATOMIC_H */
