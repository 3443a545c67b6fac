/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Window sizing (vop/window_size.h). Mirrors, and must stay in step with,
 * vop_window_create() (table rounded to pages, ring area max(64 KiB, size/16)
 * rounded to pages, at least 64 KiB of data area) and vop_devtab_publish()
 * (bump allocation of desc/avail/used parts and pools, each aligned to
 * VOP_RING_ALIGN). test/native/dev-window-size-fits.c holds the two together.
 */
#include <errno.h>

#include "vop/window_size.h"

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/* Ring and data area sizes of a window of size bytes (default geometry). */
static void areas(uint64_t size, uint64_t dt_size, uint64_t *ring, uint64_t *data)
{
	uint64_t r = round_up(size / 16, VOP_WIN_PAGE);
	uint64_t used;

	*ring = r < 64 * 1024 ? 64 * 1024 : r;
	used = VOP_DEVTAB_OFF + dt_size + *ring;
	*data = size > used ? size - used : 0;
}

/*
 * Add spec's allocations to the bump offsets *ring and *data (both counted
 * from an area start: the areas start on pages, so the allocators' alignment
 * is the same counted from 0). 0 or -EINVAL.
 */
static int allocate(const struct vop_dev_spec *s, uint64_t *ring, uint64_t *data)
{
	unsigned k;

	if (s->num_queues == 0 || s->num_queues > VOP_MAX_QUEUES)
		return -EINVAL;
	for (k = 0; k < s->num_queues; k++) {
		uint16_t q = s->queue_size[k];

		if (q == 0 || q > VOP_QUEUE_MAX_SIZE || (q & (q - 1)) || s->pool_size[k] == 0 ||
		    s->pool_size[k] > VOP_WINDOW_SIZE_MAX)
			return -EINVAL;
		*ring = round_up(*ring, VOP_RING_ALIGN) + vop_vring_desc_bytes(q);
		*ring = round_up(*ring, VOP_RING_ALIGN) + vop_vring_avail_bytes(q);
		*ring = round_up(*ring, VOP_RING_ALIGN) + vop_vring_used_bytes(q);
		*data = round_up(*data, VOP_RING_ALIGN) + s->pool_size[k];
	}
	return 0;
}

int vop_dev_footprint_of(const struct vop_dev_spec *spec, struct vop_dev_footprint *out)
{
	uint64_t ring = 0, data = 0;
	int rc = allocate(spec, &ring, &data);

	if (rc)
		return rc;
	out->ring_bytes = ring;
	out->pool_bytes = data;
	return 0;
}

int vop_window_plan_for(const struct vop_dev_spec *specs, unsigned n, uint32_t max_devices,
			struct vop_window_plan *out)
{
	uint32_t max = max_devices ? max_devices : VOP_MAX_DEVICES;
	uint64_t dt_size, ring_used = 0, data_used = 0, data_need, lo, hi, ring, data;
	unsigned i;

	if (max > VOP_MAX_DEVICES || n > max)
		return -EINVAL;
	dt_size = round_up(sizeof(struct vop_devtab_hdr) + (uint64_t)max * sizeof(struct vop_dev_entry), VOP_WIN_PAGE);
	for (i = 0; i < n; i++)
		if (allocate(&specs[i], &ring_used, &data_used))
			return -EINVAL;
	/* vop_window_create wants at least 64 KiB of data area. */
	data_need = data_used < 64 * 1024 ? 64 * 1024 : data_used;
	/* Ring and data areas only grow with the size: search the smallest page count that fits. */
	lo = VOP_WIN_MIN_SIZE / VOP_WIN_PAGE;
	hi = VOP_WINDOW_SIZE_MAX / VOP_WIN_PAGE;
	areas(hi * VOP_WIN_PAGE, dt_size, &ring, &data);
	if (ring < ring_used || data < data_need)
		return -EFBIG;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;

		areas(mid * VOP_WIN_PAGE, dt_size, &ring, &data);
		if (ring >= ring_used && data >= data_need)
			hi = mid;
		else
			lo = mid + 1;
	}
	out->size = lo * VOP_WIN_PAGE;
	areas(out->size, dt_size, &out->ring_bytes, &out->data_bytes);
	out->table_bytes = VOP_DEVTAB_OFF + dt_size;
	out->ring_used = ring_used;
	out->data_used = data_used;
	return 0;
}
