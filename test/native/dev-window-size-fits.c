/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop_window_plan_for() (the agent's automatic window size) agrees with the
 * layout code it mirrors: for sets of real device specs (byte pipes, blk,
 * net, console, several queue sizes), a fresh memfd window of exactly the
 * reported size takes every device, and one page less does not (the size is
 * the smallest, so a change to vop_window_create or vop_devtab_publish that
 * the sizing does not follow fails here).
 */
#include "helpers.h"
#include "vop/dev_backend.h"
#include "vop/window_size.h"

#define MAXSPECS 12

/* 0 if a window of size bytes (max_devices entries) takes all of specs, else the failing rc. */
static int fits(const struct vop_dev_spec *specs, unsigned n, uint32_t max_devices, uint64_t size)
{
	struct vop_window_geometry g = { max_devices, 0 };
	struct vop_xport *x;
	struct vop_window *w;
	unsigned i;
	int rc;

	CHECK_EQ(vop_shm_create(NULL, size, &x), 0);
	rc = vop_window_create(x, &g, &w);
	if (rc) {
		vop_xport_destroy(x);
		return rc;
	}
	for (i = 0; i < n && rc >= 0; i++)
		rc = vop_devtab_publish(w, &specs[i]);
	vop_window_close(w);
	return rc < 0 ? rc : 0;
}

static void check_set(const char *what, const struct vop_dev_spec *specs, unsigned n, uint32_t max_devices)
{
	struct vop_window_plan p;
	struct vop_dev_footprint f;
	uint64_t size, ring = 0, data = 0;
	unsigned i;

	CHECK_EQ(vop_window_plan_for(specs, n, max_devices, &p), 0);
	size = p.size;
	CHECK(size % 4096 == 0 && size >= 65536);
	/* The areas add up, and the devices' footprints are what they take of them. */
	CHECK_EQ(p.table_bytes + p.ring_bytes + p.data_bytes, size);
	CHECK(p.ring_used <= p.ring_bytes && p.data_used <= p.data_bytes);
	for (i = 0; i < n; i++) {
		CHECK_EQ(vop_dev_footprint_of(&specs[i], &f), 0);
		ring += f.ring_bytes;
		data += f.pool_bytes;
	}
	CHECK(ring >= p.ring_used - 64 * n && ring <= p.ring_used + 64 * n);
	CHECK(data >= p.data_used - 64 * n && data <= p.data_used + 64 * n);
	if (fits(specs, n, max_devices, size) != 0) {
		fprintf(stderr, "%s: %llu bytes do not fit\n", what, (unsigned long long)size);
		exit(T_FAIL);
	}
	if (size > 65536 && fits(specs, n, max_devices, size - 4096) == 0) {
		fprintf(stderr, "%s: %llu bytes is not the smallest\n", what, (unsigned long long)size);
		exit(T_FAIL);
	}
	printf("%-40s %10llu bytes\n", what, (unsigned long long)size);
}

/* The spec a typed device config publishes as (the binding's path). */
static struct vop_dev_spec backend_spec(enum vop_devback_kind kind, uint32_t id, uint16_t qsize, bool offloads)
{
	struct vop_devback_config c;
	struct vop_dev_spec s;

	memset(&c, 0, sizeof(c));
	c.dev_id = id;
	c.kind = kind;
	c.role = VOP_ROLE_DEVICE;
	c.queue_size = qsize;
	c.event_idx = true;
	c.net.offloads = offloads;
	CHECK_EQ(vop_devback_spec(&c, 0, &s), 0);
	return s;
}

int main(void)
{
	struct vop_dev_spec s[MAXSPECS];
	struct vop_window_plan p;
	unsigned i;

	/* One small byte pipe. */
	vop_pipe_spec(&s[0], 1, 1, 64, 64, 0);
	check_set("pipe 64 x 64 B", s, 1, 0);
	/* Byte pipes of every ring size class, and many of them. */
	for (i = 0; i < 8; i++)
		vop_pipe_spec(&s[i], i + 1, 1, (uint16_t)(2u << (i * 2 % 15)), 512u + 300u * i, 0);
	check_set("8 pipes, mixed sizes", s, 8, 0);
	/* Real devices at their default and extreme queue sizes. */
	s[0] = backend_spec(VOP_DEVBACK_BLK, 1, 0, false);
	s[1] = backend_spec(VOP_DEVBACK_NET, 2, 0, true);
	s[2] = backend_spec(VOP_DEVBACK_CONSOLE, 3, 0, false);
	check_set("blk + net + console, defaults", s, 3, 0);
	s[3] = backend_spec(VOP_DEVBACK_CONSOLE, 4, 2, false);
	s[4] = backend_spec(VOP_DEVBACK_NET, 5, 1024, false);
	s[5] = backend_spec(VOP_DEVBACK_BLK, 6, 4, false);
	check_set("six devices, queues 2..1024", s, 6, 0);
	check_set("six devices, an 8-entry table", s, 6, 8);
	/* A ring-heavy set: the ring area (size/16) decides, not the pools. */
	for (i = 0; i < 8; i++)
		vop_pipe_spec(&s[i], i + 1, 1, 32768, 16, 0);
	check_set("8 pipes of 32768 entries, 16 B buffers", s, 8, 0);
	/* Refusals: more devices than entries, a bad queue size. */
	CHECK_EQ(vop_window_plan_for(s, 8, 4, &p), -EINVAL);
	s[0].queue_size[0] = 3;
	CHECK_EQ(vop_window_plan_for(s, 1, 0, &p), -EINVAL);
	return T_PASS;
}
