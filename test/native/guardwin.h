/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A window in anonymous memory with a PROT_NONE guard page right after it,
 * seen through as many transport views as a test wants: any access past
 * the mapping faults at once instead of touching neighbouring memory. The
 * test plays the hostile peer by writing the memory directly.
 */
#ifndef VOP_TEST_GUARDWIN_H
#define VOP_TEST_GUARDWIN_H

#include <sys/mman.h>

#include "helpers.h"

#define GW_GUARD 4096u

struct gw_xport {
	struct vop_xport x;
	bool owner; /* unmaps on destroy */
};

static int gw_map(struct vop_xport *x)
{
	(void)x;
	return 0;
}

static void gw_unmap(struct vop_xport *x)
{
	(void)x;
}

static int gw_bind(struct vop_xport *x, unsigned side)
{
	(void)x;
	(void)side;
	return 0;
}

static int gw_kick(struct vop_xport *x, unsigned vector)
{
	(void)x;
	(void)vector;
	return 0;
}

static int gw_wake(struct vop_xport *x)
{
	(void)x;
	return 0;
}

static uint64_t gw_snapshot(struct vop_xport *x)
{
	(void)x;
	return 0;
}

static int gw_wait(struct vop_xport *x, uint64_t snap, uint64_t timeout_ns)
{
	(void)x;
	(void)snap;
	t_sleep_ms(timeout_ns > 1000000u ? 1 : 0);
	return -ETIMEDOUT;
}

static void gw_destroy(struct vop_xport *x)
{
	struct gw_xport *g = (struct gw_xport *)x;

	if (g->owner)
		munmap(x->base, x->size + GW_GUARD);
	free(g);
}

static const struct vop_xport_ops gw_ops = {
	.name = "guard",
	.caps = VOP_XPORT_CAP_SHARED_MEM,
	.map = gw_map,
	.unmap = gw_unmap,
	.bind = gw_bind,
	.kick = gw_kick,
	.wake = gw_wake,
	.snapshot = gw_snapshot,
	.wait = gw_wait,
	.prefault = NULL,
	.claim = NULL,
	.destroy = gw_destroy,
};

/* Fresh zeroed memory of size bytes followed by a PROT_NONE page; the returned view owns it. */
static inline struct vop_xport *gw_create(uint64_t size)
{
	struct gw_xport *g = calloc(1, sizeof(*g));
	uint8_t *p;

	CHECK(g != NULL);
	p = mmap(NULL, size + GW_GUARD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(p != MAP_FAILED);
	CHECK_EQ(mprotect(p, size, PROT_READ | PROT_WRITE), 0);
	g->x.ops = &gw_ops;
	g->x.base = p;
	g->x.size = size;
	g->x.fd = -1;
	g->owner = true;
	return &g->x;
}

/* Another view of the same memory (does not unmap it). */
static inline struct vop_xport *gw_view(const struct vop_xport *of)
{
	struct gw_xport *g = calloc(1, sizeof(*g));

	CHECK(g != NULL);
	g->x.ops = &gw_ops;
	g->x.base = of->base;
	g->x.size = of->size;
	g->x.fd = -1;
	return &g->x;
}

/* Read the first and the last byte of [p, p + len): faults if any lies past the mapping. */
static inline void gw_touch(const void *p, uint64_t len)
{
	const volatile uint8_t *b = p;

	CHECK(p != NULL);
	if (len) {
		(void)b[0];
		(void)b[len - 1];
	}
}

#endif /* VOP_TEST_GUARDWIN_H */
