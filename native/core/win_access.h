/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Window access: the ONE way transport-neutral code touches memory shared
 * with the peer (the window of vop/layout.h), built on C11 <stdatomic.h>.
 * Private header of native/core (native/devices includes it too).
 *
 * Only what a PCI BAR gives (architecture rule 9): single loads and stores
 * of naturally aligned 8/16/32/64-bit fields, with or without acquire /
 * release order, fences, and plain byte copies for payloads and zeroing.
 * NO read-modify-write: a BAR mapped uncached or write-combining has no
 * atomics across PCIe unless both ends support AtomicOps, so every window
 * field has exactly one writer side (docs/native-layout.md) and needs none.
 * Atomic RMW on private memory (statistics, sequence numbers) goes through
 * private_atomic.h instead, whose types a window pointer cannot take; the
 * window-access check (native/tools/check-window-access.sh, part of
 * `make -C native check`) enforces both, in the source and in the objects.
 *
 * Shared fields are plain fixed-width integers in layout.h; these helpers
 * cast them to the _Atomic type of the same size (lock-free and identically
 * represented on every supported compiler):
 *
 *  - vop_read_once_*: a relaxed atomic load. Guarantees ONE load (no
 *    compiler re-read, no tearing), so a value read from the hostile peer
 *    is checked and used as the same value (TOCTOU, D5).
 *  - vop_write_once_*: the matching relaxed store.
 *  - vop_load_acquire_* / vop_store_release_*: publication edges.
 *  - vop_rmb/vop_wmb/vop_mb: fences; acquire, release and seq_cst.
 *  - vop_wc_fence: drains write-combining buffers (sfence / dmb oshst); only
 *    a write-combining mapping needs it, see docs/memory-ordering.md.
 *  - vop_win_zero / vop_win_copy_to / vop_win_copy_from: byte copies of
 *    payloads and ring areas (no ordering; publish them with a release).
 *
 * The same load/store helpers serve private fields that another thread
 * reads (counters with one writer: vop_stat_add). Every use site on window
 * memory names the edge it creates and its partner; the full list is
 * docs/memory-ordering.md. The fences are correct on weakly ordered CPUs
 * (arm64 emits dmb ish*), not just on x86 where rmb/wmb are free.
 */
#ifndef VOP_CORE_WIN_ACCESS_H
#define VOP_CORE_WIN_ACCESS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define VOP_DEFINE_ONCE(bits)                                                              \
	static inline uint##bits##_t vop_read_once_u##bits(const void *p)                  \
	{                                                                                  \
		return atomic_load_explicit((const _Atomic uint##bits##_t *)p,             \
					    memory_order_relaxed);                         \
	}                                                                                  \
	static inline void vop_write_once_u##bits(void *p, uint##bits##_t v)               \
	{                                                                                  \
		atomic_store_explicit((_Atomic uint##bits##_t *)p, v, memory_order_relaxed); \
	}                                                                                  \
	static inline uint##bits##_t vop_load_acquire_u##bits(const void *p)               \
	{                                                                                  \
		return atomic_load_explicit((const _Atomic uint##bits##_t *)p,             \
					    memory_order_acquire);                         \
	}                                                                                  \
	static inline void vop_store_release_u##bits(void *p, uint##bits##_t v)            \
	{                                                                                  \
		atomic_store_explicit((_Atomic uint##bits##_t *)p, v, memory_order_release); \
	}

VOP_DEFINE_ONCE(8)
VOP_DEFINE_ONCE(16)
VOP_DEFINE_ONCE(32)
VOP_DEFINE_ONCE(64)

/* Later loads are not satisfied before earlier loads (acquire fence). */
static inline void vop_rmb(void)
{
	atomic_thread_fence(memory_order_acquire);
}

/* Earlier loads and stores complete before later stores (release fence). */
static inline void vop_wmb(void)
{
	atomic_thread_fence(memory_order_release);
}

/*
 * Full fence: orders earlier stores against later loads (store->load). On
 * x86 the compiler emits mfence or a locked no-op on the stack (lock or
 * $0,(%rsp)): a fence, not an RMW on shared memory; on an uncached or
 * write-combining mapping it also drains the stores.
 */
static inline void vop_mb(void)
{
	atomic_thread_fence(memory_order_seq_cst);
}

/*
 * Write-combining store fence: stores to a write-combining mapping before
 * it reach the device before stores after it (x86 sfence; arm64 a store
 * barrier to the outer shareable domain, which Device/Normal-NC mappings of
 * a BAR need). Not needed for write-back (shm, host memory) or uncached
 * mappings, whose stores are not combined or reordered among themselves.
 */
static inline void vop_wc_fence(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("sfence" ::: "memory");
#elif defined(__aarch64__)
	__asm__ __volatile__("dmb oshst" ::: "memory");
#else
	atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Spin-wait hint; no ordering. */
static inline void vop_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

/* Zero n bytes of the window (ring areas at reset, fresh entries). No ordering. */
static inline void vop_win_zero(void *win, size_t n)
{
	memset(win, 0, n);
}

/* Copy n private bytes into the window / out of it (payloads, config). No ordering. */
static inline void vop_win_copy_to(void *win, const void *src, size_t n)
{
	memcpy(win, src, n);
}

static inline void vop_win_copy_from(void *dst, const void *win, size_t n)
{
	memcpy(dst, win, n);
}

/*
 * Relaxed counter update by a single writer thread, read concurrently by
 * others: load + store (no RMW needed, only the owner writes). Private
 * memory only; several writers use private_atomic.h.
 */
static inline void vop_stat_add(uint64_t *p, uint64_t v)
{
	vop_write_once_u64(p, vop_read_once_u64(p) + v);
}

#endif /* VOP_CORE_WIN_ACCESS_H */
