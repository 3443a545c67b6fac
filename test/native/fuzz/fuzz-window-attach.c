/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: attaching a window a hostile creator wrote (header,
 * device table, entries, config space). A valid window with two devices is
 * laid out in memory followed by a PROT_NONE guard page; the input then
 * overwrites bytes of the header, side blocks and device table (offsets
 * biased towards the fields) and picks the size the attacher believes it
 * mapped. Then: layout check, attach as side 1 and side 0, look up every
 * entry, read and write its config space, and set up every queue of an
 * accepted entry for both roles. Invariants: every range an accepted
 * window or entry names lies inside what was mapped (also checked by the
 * guard page: an access past it crashes), the region table holds only the
 * data area, config access never exceeds the validated length.
 */
#include <sys/mman.h>

#include "fuzz-common.h"
#include "vop/window.h"
#include "vop/xport.h"

#define WIN (160u * 1024u)
#define HEAD (VOP_DEVTAB_OFF + 28672u) /* header, sides and the 32-entry table */

static int nop_map(struct vop_xport *x)
{
	(void)x;
	return 0;
}
static void nop_unmap(struct vop_xport *x)
{
	(void)x;
}
static int nop_bind(struct vop_xport *x, unsigned side)
{
	(void)x;
	(void)side;
	return 0;
}
static int nop_kick(struct vop_xport *x, unsigned vector)
{
	(void)x;
	(void)vector;
	return 0;
}
static int nop_wake(struct vop_xport *x)
{
	(void)x;
	return 0;
}
static uint64_t nop_snapshot(struct vop_xport *x)
{
	(void)x;
	return 0;
}
static int nop_wait(struct vop_xport *x, uint64_t snap, uint64_t ns)
{
	(void)x;
	(void)snap;
	(void)ns;
	return -ETIMEDOUT;
}
static int yes_claim(struct vop_xport *x, unsigned side)
{
	(void)x;
	(void)side;
	return 0; /* claimed: no heartbeat watching (no sleeps while fuzzing) */
}
static void view_destroy(struct vop_xport *x)
{
	free(x);
}

static const struct vop_xport_ops ops = {
	.name = "fuzz",
	.map = nop_map,
	.unmap = nop_unmap,
	.bind = nop_bind,
	.kick = nop_kick,
	.wake = nop_wake,
	.snapshot = nop_snapshot,
	.wait = nop_wait,
	.claim = yes_claim,
	.destroy = view_destroy,
};

static uint8_t *mem;             /* WIN bytes, then a guard page */
static uint8_t template_[HEAD];  /* the valid window's first HEAD bytes */

static struct vop_xport *view(uint64_t size)
{
	struct vop_xport *x = calloc(1, sizeof(*x));

	FZ_ASSERT(x != NULL);
	x->ops = &ops;
	x->base = mem;
	x->size = size;
	x->fd = -1;
	return x;
}

static void setup(void)
{
	struct vop_xport *x;
	struct vop_window *w;
	struct vop_dev_spec spec;
	static const uint8_t cfg[16] = { 1, 2, 3, 4 };
	unsigned i;

	mem = mmap(NULL, WIN + 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	FZ_ASSERT(mem != MAP_FAILED);
	FZ_ASSERT(mprotect(mem, WIN, PROT_READ | PROT_WRITE) == 0);
	x = view(WIN);
	FZ_ASSERT(vop_window_create(x, NULL, &w) == 0);
	for (i = 1; i <= 2; i++) {
		memset(&spec, 0, sizeof(spec));
		spec.dev_id = i;
		spec.device_type = 1;
		spec.device_side = (uint8_t)(i & 1);
		spec.num_queues = 2;
		spec.queue_size[0] = spec.queue_size[1] = 8;
		spec.pool_size[0] = spec.pool_size[1] = 4096;
		spec.config_len = sizeof(cfg);
		spec.config = cfg;
		FZ_ASSERT(vop_devtab_publish(w, &spec) >= 0);
	}
	memcpy(template_, mem, HEAD);
	free(w); /* keep the memory as it is (no close: nothing to undo) */
	free(x);
}

/* [off, off + len) inside [0, size)? */
static int inside(uint64_t off, uint64_t len, uint64_t size)
{
	return off <= size && len <= size - off;
}

static void check_entry(struct vop_window *w, uint64_t size, const struct vop_dev_info *d)
{
	uint8_t buf[VOP_CONFIG_MAX + 1];
	uint32_t gen;
	unsigned k;

	FZ_ASSERT(d->config_len <= VOP_CONFIG_MAX && d->num_queues >= 1 && d->num_queues <= VOP_MAX_QUEUES);
	FZ_ASSERT(vop_devtab_config_read(w, d, buf, d->config_len, &gen) == 0 ||
		  vop_devtab_config_read(w, d, buf, d->config_len, &gen) == -EAGAIN);
	FZ_ASSERT(vop_devtab_config_read(w, d, buf, d->config_len + 1, &gen) == -EINVAL);
	FZ_ASSERT(vop_devtab_config_write(w, d, 0, buf, d->config_len) == 0);
	FZ_ASSERT(vop_devtab_config_write(w, d, d->config_len, buf, 1) == -EINVAL);
	for (k = 0; k < d->num_queues; k++) {
		const struct vop_queue_desc *q = &d->queues[k];
		uint64_t db = vop_vring_desc_bytes(q->size), ab = vop_vring_avail_bytes(q->size),
			 ub = vop_vring_used_bytes(q->size);
		struct vop_vq_config c;
		struct vop_vq vq;

		FZ_ASSERT(inside(q->desc_off, db, size) && inside(q->avail_off, ab, size) &&
			  inside(q->used_off, ub, size) && inside(q->pool_off, q->pool_size, size));
		FZ_ASSERT(q->desc_off >= w->ring_off && q->pool_off >= w->data_off);
		FZ_ASSERT(vop_region_xlate(&w->regions, q->pool_off, q->pool_size, VOP_PROT_WRITE) != NULL);
		/* Both roles set the queue up (each zeroes its own area): touches every part. */
		memset(&c, 0, sizeof(c));
		c.num = q->size;
		c.desc = vop_window_ptr(w, q->desc_off, db);
		c.avail = vop_window_ptr(w, q->avail_off, ab);
		c.used = vop_window_ptr(w, q->used_off, ub);
		c.regions = &w->regions;
		FZ_ASSERT(c.desc && c.avail && c.used);
		if (vop_vq_init_device(&vq, &c) == 0)
			vop_vq_destroy(&vq);
		c.indirect_local = vop_window_ptr(w, q->pool_off, q->pool_size);
		c.indirect_peer_addr = q->pool_off;
		if (vop_vq_init_driver(&vq, &c) == 0)
			vop_vq_destroy(&vq);
	}
}

static void attach(unsigned side, uint64_t size)
{
	struct vop_xport *x = view(size);
	struct vop_window *w;
	struct vop_dev_info d;
	uint32_t id;
	int rc = vop_window_attach_side(x, side, &w);

	if (rc) {
		FZ_ASSERT(rc == -EPROTO || rc == -EAGAIN);
		free(x);
		return;
	}
	/* The validated geometry is inside the mapping, in order, and the region table holds the data area only. */
	FZ_ASSERT(inside(w->ring_off, w->ring_size, size) && inside(w->data_off, w->data_size, size));
	FZ_ASSERT(w->ring_off + w->ring_size <= w->data_off);
	FZ_ASSERT(w->regions.count == 1 && w->regions.regions[0].peer_addr == w->data_off &&
		  w->regions.regions[0].size == w->data_size);
	FZ_ASSERT(inside(VOP_DEVTAB_OFF + sizeof(struct vop_devtab_hdr),
			 (uint64_t)w->max_entries * w->entry_size, size));
	for (id = 0; id <= 3; id++) {
		rc = vop_devtab_find_bounded(w, id, &d);
		FZ_ASSERT(rc == 0 || rc == -ENOENT || rc == -EPROTO || rc == -EAGAIN);
		if (rc == 0)
			check_entry(w, size, &d);
		else if (rc == -EPROTO)
			FZ_ASSERT(atomic_load(&w->entry_problem) != NULL);
	}
	if (side == 0) {
		/* A restarted creator allocates only inside its areas. */
		FZ_ASSERT(w->ring_next <= w->ring_off + w->ring_size && w->data_next <= w->data_off + w->data_size);
	}
	free(w);
	free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_reader r = { data, size };
	uint64_t msize;
	const char *why = NULL;
	uint8_t m;

	if (!mem)
		setup();
	memcpy(mem, template_, HEAD);
	memset(mem + HEAD, 0, WIN - HEAD);
	m = fz_u8(&r);
	/* The size the attacher mapped: the real one, or less (the header then disagrees). */
	msize = (m & 3) == 0 ? WIN - (uint64_t)(fz_u8(&r) % 32) * 4096 : WIN;
	while (r.n >= 3) {
		uint8_t kind = fz_u8(&r);
		uint32_t off;

		/* Where to write: header fields, table header, entry fields, or anywhere in HEAD. */
		switch (kind & 3) {
		case 0:
			off = fz_u8(&r) % sizeof(struct vop_win_hdr);
			break;
		case 1:
			off = VOP_DEVTAB_OFF + fz_u8(&r) % sizeof(struct vop_devtab_hdr);
			break;
		case 2:
			off = VOP_DEVTAB_OFF + sizeof(struct vop_devtab_hdr) + fz_u16(&r) % (2 * sizeof(struct vop_dev_entry));
			break;
		default:
			off = fz_u16(&r) % HEAD;
			break;
		}
		if (kind & 4) { /* an 8-byte value (offsets and sizes) */
			uint64_t v = fz_u64(&r);

			if (off + 8 <= HEAD)
				memcpy(mem + off, &v, 8);
		} else {
			mem[off] = fz_u8(&r);
		}
	}
	if (vop_window_layout_check(mem, msize, NULL, &why) == -EPROTO)
		FZ_ASSERT(why != NULL);
	attach(1, msize);
	attach(0, msize);
	return 0;
}
