/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every bound a hostile window creator controls, at the limit and exactly
 * one byte past it: header areas (devtab_size, ring_off/size, data_off/size,
 * window_size, max_entries * entry_size), each queue's desc/avail/used/pool
 * placement and the config space. At the limit the window is accepted and
 * every validated range is touched; one byte more is refused with -EPROTO
 * naming the field. The window sits in memory followed by a PROT_NONE guard
 * page, so any access past the mapping would crash this test.
 *
 * Regression: range_inside() used to compare an offset relative to the
 * area base against the whole window size, so rings and pools could lie up
 * to ~2x the window past the mapping (the attacher died with SIGSEGV).
 */
#include "guardwin.h"

#define WIN (256u * 1024u)
#define QSIZE 16u

static struct vop_xport *mem;
static uint8_t *base;
static uint8_t saved[VOP_DEVTAB_OFF + 32768];
static struct vop_window_layout L;
static struct vop_dev_entry *E;

static struct vop_win_hdr *hdr(void)
{
	return (struct vop_win_hdr *)(void *)base;
}

static struct vop_devtab_hdr *dt(void)
{
	return (struct vop_devtab_hdr *)(void *)(base + VOP_DEVTAB_OFF);
}

static void restore(void)
{
	memcpy(base, saved, sizeof(saved));
}

/* The header as it is now must be refused, with why starting with field. */
static void refused(const char *field, int line)
{
	struct vop_xport *x = gw_view(mem);
	struct vop_window *w = NULL;
	const char *why = NULL;
	int rc = vop_window_layout_check(base, WIN, NULL, &why);

	if (rc != -EPROTO || !why || strncmp(why, field, strlen(field)) != 0) {
		fprintf(stderr, "line %d: want -EPROTO on \"%s\", got %d \"%s\"\n", line, field, rc,
			why ? why : "(null)");
		exit(T_FAIL);
	}
	CHECK_EQ(vop_window_attach(x, &w), -EPROTO);
	CHECK(w == NULL);
	CHECK_EQ(vop_window_attach_side(x, 0, &w), -EPROTO);
	vop_xport_destroy(x);
}
#define REFUSED(field) refused(field, __LINE__)

/* The header as it is now is accepted; every area it names is touched. */
static struct vop_window *accepted(int line)
{
	struct vop_xport *x = gw_view(mem);
	struct vop_window *w = NULL;
	const char *why = NULL;
	int rc = vop_window_attach(x, &w);

	if (rc != 0) {
		vop_window_layout_check(base, WIN, NULL, &why);
		fprintf(stderr, "line %d: attach refused (%d): %s\n", line, rc, why ? why : "?");
		exit(T_FAIL);
	}
	gw_touch(vop_window_ptr(w, w->ring_off, w->ring_size), w->ring_size);
	gw_touch(vop_window_ptr(w, w->data_off, w->data_size), w->data_size);
	gw_touch(vop_region_xlate(&w->regions, w->data_off, w->data_size, VOP_PROT_WRITE), w->data_size);
	gw_touch((const uint8_t *)w->dt, sizeof(struct vop_devtab_hdr) + (uint64_t)w->max_entries * w->entry_size);
	return w;
}
#define ACCEPTED() accepted(__LINE__)

static void accept_and_close(int line)
{
	vop_window_close(accepted(line));
}
#define ACCEPT() accept_and_close(__LINE__)

/* The entry as it is now: accepted, and every queue part touched. */
static void entry_ok(int line)
{
	struct vop_window *w = accepted(line);
	struct vop_dev_info info;
	unsigned k;
	int rc = vop_devtab_find(w, 1, &info);

	if (rc != 0) {
		fprintf(stderr, "line %d: entry refused (%d): %s\n", line, rc,
			atomic_load(&w->entry_problem) ? atomic_load(&w->entry_problem) : "?");
		exit(T_FAIL);
	}
	for (k = 0; k < info.num_queues; k++) {
		const struct vop_queue_desc *q = &info.queues[k];

		gw_touch(vop_window_ptr(w, q->desc_off, vop_vring_desc_bytes(q->size)),
			 vop_vring_desc_bytes(q->size));
		gw_touch(vop_window_ptr(w, q->avail_off, vop_vring_avail_bytes(q->size)),
			 vop_vring_avail_bytes(q->size));
		gw_touch(vop_window_ptr(w, q->used_off, vop_vring_used_bytes(q->size)),
			 vop_vring_used_bytes(q->size));
		gw_touch(vop_region_xlate(&w->regions, q->pool_off, q->pool_size, VOP_PROT_WRITE),
			 q->pool_size);
	}
	vop_window_close(w);
}
#define ENTRY_OK() entry_ok(__LINE__)

/* The entry as it is now is refused with -EPROTO naming field; the window itself is fine. */
static void entry_refused(const char *field, int line)
{
	struct vop_window *w = accepted(line);
	struct vop_dev_info info;
	const char *why;
	int rc = vop_devtab_find(w, 1, &info);

	why = atomic_load(&w->entry_problem);
	if (rc != -EPROTO || !why || strncmp(why, field, strlen(field)) != 0) {
		fprintf(stderr, "line %d: want -EPROTO on \"%s\", got %d \"%s\"\n", line, field, rc,
			why ? why : "(null)");
		exit(T_FAIL);
	}
	CHECK_EQ(vop_devtab_find_bounded(w, 1, &info), -EPROTO);
	vop_window_close(w);
}
#define ENTRY_REFUSED(field) entry_refused(field, __LINE__)

static void header_bounds(void)
{
	uint64_t ring_end = L.ring_off + L.ring_size, dt_end = VOP_DEVTAB_OFF + (uint64_t)L.devtab_size;

	ACCEPT();

	/* window_size must be what was mapped. */
	hdr()->window_size = WIN + 1;
	REFUSED("window_size");
	restore();

	/* devtab_size: up to ring_off is fine, one more overlaps the rings; past the window is refused. */
	hdr()->devtab_size = (uint32_t)(L.ring_off - VOP_DEVTAB_OFF);
	ACCEPT();
	hdr()->devtab_size = (uint32_t)(L.ring_off - VOP_DEVTAB_OFF + 1);
	REFUSED("ring_off: ring area overlaps");
	hdr()->devtab_size = WIN - VOP_DEVTAB_OFF + 1;
	REFUSED("devtab_size");
	hdr()->devtab_size = 0xffffffffu;
	REFUSED("devtab_size");
	restore();

	/* max_entries * entry_size must fit the table: exactly fits, then one byte short. */
	hdr()->devtab_size = (uint32_t)(sizeof(struct vop_devtab_hdr) + (uint64_t)L.max_entries * L.entry_size);
	ACCEPT();
	hdr()->devtab_size -= 1;
	REFUSED("max_entries * entry_size");
	restore();
	dt()->max_entries = L.max_entries + 1; /* the table has slack: grow until one entry no longer fits */
	while (sizeof(struct vop_devtab_hdr) + (uint64_t)dt()->max_entries * L.entry_size <= L.devtab_size)
		dt()->max_entries++;
	REFUSED("max_entries * entry_size");
	dt()->max_entries = 0xffffffffu;
	REFUSED("max_entries");
	restore();
	dt()->entry_size = 0x80000000u;
	REFUSED("entry_size");
	restore();

	/* ring_off / ring_size: the ring area ends at data_off; one byte more overlaps the data area. */
	hdr()->ring_off = L.ring_off + 1;
	REFUSED("data_off: data area overlaps");
	restore();
	hdr()->ring_size = L.ring_size + 1;
	REFUSED("data_off: data area overlaps");
	restore();
	hdr()->ring_off = dt_end - 1;
	REFUSED("ring_off: ring area overlaps");
	restore();
	/* The old bug: rings "inside" [dt_end, dt_end + size) but past the mapping. */
	hdr()->ring_size = WIN - L.ring_off + 1;
	REFUSED("ring_off/ring_size");
	hdr()->ring_size = UINT64_MAX;
	REFUSED("ring_off/ring_size");
	hdr()->ring_off = UINT64_MAX - 0xfff;
	hdr()->ring_size = 0x2000;
	REFUSED("ring_off/ring_size");
	restore();

	/* data_off / data_size: the data area ends at the mapping; one byte more is past it. */
	hdr()->data_size = WIN - L.data_off;
	ACCEPT();
	hdr()->data_size = WIN - L.data_off + 1;
	REFUSED("data_off/data_size");
	restore();
	hdr()->data_off = L.data_off + 1;
	REFUSED("data_off/data_size");
	hdr()->data_size = WIN - L.data_off - 1;
	ACCEPT(); /* shifted by one and one shorter: still inside */
	restore();
	hdr()->data_off = ring_end - 1;
	REFUSED("data_off: data area overlaps");
	hdr()->data_off = UINT64_MAX;
	hdr()->data_size = 1;
	REFUSED("data_off/data_size");
	hdr()->data_off = L.data_off;
	hdr()->data_size = UINT64_MAX;
	REFUSED("data_off/data_size");
	restore();
	hdr()->data_size = 0;
	REFUSED("data_size");
	restore();

	/* Fixed offsets and identity. */
	hdr()->side_off = VOP_WIN_SIDE_OFF + 1;
	REFUSED("side_off");
	restore();
	hdr()->devtab_off = VOP_DEVTAB_OFF + 1;
	REFUSED("devtab_off");
	restore();
	hdr()->version_major = VOP_LAYOUT_VERSION_MAJOR + 1;
	REFUSED("version_major");
	restore();
	dt()->magic ^= 1;
	REFUSED("devtab magic");
	restore();
	hdr()->magic = 0;
	{
		struct vop_xport *x = gw_view(mem);
		struct vop_window *w;

		CHECK_EQ(vop_window_layout_check(base, WIN, NULL, NULL), -EAGAIN);
		CHECK_EQ(vop_window_attach(x, &w), -EAGAIN);
		vop_xport_destroy(x);
	}
	restore();
	/* A mapping smaller than the header itself is never read. */
	CHECK_EQ(vop_window_layout_check(base, VOP_WIN_MIN_SIZE - 1, NULL, NULL), -EPROTO);
}

static const uint64_t part_align[3] = { VOP_VRING_DESC_ALIGN, VOP_VRING_AVAIL_ALIGN, VOP_VRING_USED_ALIGN };

static uint64_t part_bytes(unsigned part)
{
	return part == 0 ? vop_vring_desc_bytes(QSIZE)
	       : part == 1 ? vop_vring_avail_bytes(QSIZE) : vop_vring_used_bytes(QSIZE);
}

static uint64_t *part_off(unsigned part)
{
	struct vop_queue_desc *q = &E->queues[0];

	return part == 0 ? &q->desc_off : part == 1 ? &q->avail_off : &q->used_off;
}

/* Place part (0 desc, 1 avail, 2 used) of queue 0 as close to the ring area's end as its alignment allows. */
static uint64_t part_near_ring_end(unsigned part)
{
	uint64_t end = L.ring_off + L.ring_size, off;

	off = (end - part_bytes(part)) & ~(part_align[part] - 1);
	*part_off(part) = off;
	return off;
}

static void queue_bounds(void)
{
	static const char *const field[3] = { "queue desc_off", "queue avail_off", "queue used_off" };
	uint64_t data_end = L.data_off + L.data_size;
	unsigned part;

	ENTRY_OK();
	for (part = 0; part < 3; part++) {
		uint64_t off = part_near_ring_end(part), fit = off + part_bytes(part) - L.ring_off;

		/* As far out as it goes: accepted and touched. */
		ENTRY_OK();
		/* The ring area ending exactly at the part's last byte: still accepted. */
		hdr()->ring_size = fit;
		ENTRY_OK();
		/* The ring area one byte shorter: the part is one byte too far. */
		hdr()->ring_size = fit - 1;
		ENTRY_REFUSED(field[part]);
		hdr()->ring_size = L.ring_size;
		/* One byte further: misaligned. One alignment step further: past the area. */
		*part_off(part) = off + 1;
		ENTRY_REFUSED(field[part]);
		*part_off(part) = off + part_align[part];
		ENTRY_REFUSED(field[part]);
		/* Offsets that would wrap. */
		*part_off(part) = UINT64_MAX & ~(part_align[part] - 1);
		ENTRY_REFUSED(field[part]);
		restore();
	}
	/* Two parts of the same queue overlapping by one byte. */
	E->queues[0].avail_off = E->queues[0].desc_off + vop_vring_desc_bytes(QSIZE) - 2;
	ENTRY_REFUSED("queue desc_off/avail_off/used_off");
	restore();

	/* Pool: ending exactly at the data area's end (the mapping's end), then one byte longer. */
	E->queues[0].pool_size = data_end - E->queues[0].pool_off;
	ENTRY_OK();
	E->queues[0].pool_size += 1;
	ENTRY_REFUSED("queue pool_off/pool_size");
	E->queues[0].pool_size = UINT64_MAX;
	ENTRY_REFUSED("queue pool_off/pool_size");
	restore();
	E->queues[0].pool_off = data_end - 16;
	E->queues[0].pool_size = 16;
	ENTRY_OK();
	E->queues[0].pool_off += 16;
	ENTRY_REFUSED("queue pool_off/pool_size");
	E->queues[0].pool_off = data_end - 15;
	E->queues[0].pool_size = 15;
	ENTRY_REFUSED("queue pool_off"); /* misaligned */
	E->queues[0].pool_off = L.data_off - 16;
	E->queues[0].pool_size = 16;
	ENTRY_REFUSED("queue pool_off/pool_size"); /* in the ring area, not the data area */
	restore();
	E->queues[0].pool_size = 0;
	ENTRY_REFUSED("queue pool_size");
	restore();

	/* Queue geometry and entry fields. */
	E->queues[1].size = QSIZE + 1;
	ENTRY_REFUSED("queue size");
	E->queues[1].size = 0;
	ENTRY_REFUSED("queue size");
	restore();
	E->num_queues = VOP_MAX_QUEUES + 1;
	ENTRY_REFUSED("num_queues");
	E->num_queues = 0;
	ENTRY_REFUSED("num_queues");
	restore();
	E->device_side = 2;
	ENTRY_REFUSED("device_side");
	restore();
}

static void config_bounds(void)
{
	struct vop_window *w;
	struct vop_dev_info info;
	uint8_t buf[VOP_CONFIG_MAX + 1];
	uint32_t gen;

	E->config_len = VOP_CONFIG_MAX;
	ENTRY_OK();
	E->config_len = VOP_CONFIG_MAX + 1;
	ENTRY_REFUSED("config_len");
	E->config_len = 0xffffffffu;
	ENTRY_REFUSED("config_len");
	restore();

	/* Reads and writes are bounded by the validated config_len, never by the shared one. */
	E->config_len = 12;
	w = ACCEPTED();
	CHECK_EQ(vop_devtab_find(w, 1, &info), 0);
	E->config_len = VOP_CONFIG_MAX; /* rewritten after the copy: the copy wins */
	CHECK_EQ(vop_devtab_config_read(w, &info, buf, 12, &gen), 0);
	CHECK_EQ(vop_devtab_config_read(w, &info, buf, 13, &gen), -EINVAL);
	CHECK_EQ(vop_devtab_config_write(w, &info, 0, buf, 12), 0);
	CHECK_EQ(vop_devtab_config_write(w, &info, 0, buf, 13), -EINVAL);
	CHECK_EQ(vop_devtab_config_write(w, &info, 12, buf, 1), -EINVAL);
	CHECK_EQ(vop_devtab_config_write(w, &info, 0xffffffffu, buf, 2), -EINVAL);
	/* A config generation stuck odd (writer mid-update forever): bounded, -EAGAIN. */
	E->sides[info.device_side].config_generation = 1; /* the device side's block (claimed by the write) */
	CHECK_EQ(vop_devtab_config_read(w, &info, buf, 12, &gen), -EAGAIN);
	vop_window_close(w);
	restore();
}

int main(void)
{
	struct vop_window *w0;
	struct vop_dev_spec spec;
	struct vop_xport *x0;
	int slot;

	mem = gw_create(WIN);
	base = mem->base;
	x0 = gw_view(mem);
	CHECK_EQ(vop_window_create(x0, NULL, &w0), 0);
	vop_pipe_spec(&spec, 1, 1, QSIZE, 256, 1ull << VOP_F_EVENT_IDX);
	static const uint8_t cfg[12] = { 1, 2, 3 };

	spec.config_len = sizeof(cfg);
	spec.config = cfg;
	slot = vop_devtab_publish(w0, &spec);
	CHECK(slot >= 0);
	CHECK_EQ(vop_window_layout_check(base, WIN, &L, NULL), 0);
	CHECK(sizeof(saved) >= VOP_DEVTAB_OFF + (uint64_t)L.devtab_size);
	CHECK(L.data_off + L.data_size == WIN);
	E = (struct vop_dev_entry *)(void *)(base + VOP_DEVTAB_OFF + sizeof(struct vop_devtab_hdr) +
					     (uint64_t)slot * L.entry_size);
	memcpy(saved, base, sizeof(saved));

	header_bounds();
	queue_bounds();
	config_bounds();

	vop_window_close(w0);
	vop_xport_destroy(mem);
	return T_PASS;
}
