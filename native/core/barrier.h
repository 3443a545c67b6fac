/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory-ordering primitives for memory shared with the peer, built on
 * C11 <stdatomic.h>. Private header of native/core.
 *
 * Shared fields are plain fixed-width integers in layout.h; we access them
 * through these helpers, which cast to the _Atomic type of the same size
 * (lock-free and identically represented on every supported compiler).
 *
 *  - vop_read_once_*: a relaxed atomic load. Guarantees ONE load (no
 *    compiler re-read, no tearing), so a value read from the hostile peer
 *    is checked and used as the same value (TOCTOU, D5).
 *  - vop_write_once_*: the matching relaxed store.
 *  - vop_load_acquire_* / vop_store_release_*: publication edges.
 *  - vop_rmb/vop_wmb/vop_mb: fences; acquire, release and seq_cst.
 *
 * Every use site names the edge it creates and its partner; the full list
 * is docs/memory-ordering.md. These fences are correct on weakly ordered
 * CPUs (arm64 emits dmb ish*), not just on x86 where rmb/wmb are free.
 */
#ifndef VOP_CORE_BARRIER_H
#define VOP_CORE_BARRIER_H

#include <stdatomic.h>
#include <stdint.h>

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

/* Sequentially consistent read-modify-write; returns the old value. */
static inline uint32_t vop_fetch_add_u32(void *p, uint32_t v)
{
	return atomic_fetch_add_explicit((_Atomic uint32_t *)p, v, memory_order_seq_cst);
}

static inline uint32_t vop_fetch_or_u32(void *p, uint32_t v)
{
	return atomic_fetch_or_explicit((_Atomic uint32_t *)p, v, memory_order_seq_cst);
}

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

/* Full fence: orders earlier stores against later loads (store->load). */
static inline void vop_mb(void)
{
	atomic_thread_fence(memory_order_seq_cst);
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

/*
 * Relaxed counter update by a single writer thread, read concurrently by
 * others: load + store (no RMW needed, only the owner writes).
 */
static inline void vop_stat_add(uint64_t *p, uint64_t v)
{
	vop_write_once_u64(p, vop_read_once_u64(p) + v);
}

#endif /* VOP_CORE_BARRIER_H */
