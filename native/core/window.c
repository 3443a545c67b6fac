/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Window setup/attach and the device table. Publication edges W1 (window
 * header), T1/T2 (device entries) are listed in docs/memory-ordering.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vop/window.h"
#include "win_access.h"

#define DEFAULT_HB_PERIOD_MS 100u /* link.c beats at least this often, even when idle */

static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/*
 * True if [off, off + len) lies inside [base, base + size), where the area
 * itself was validated (base + size does not wrap). Overflow-safe: never
 * computes off + len.
 */
static bool range_inside(uint64_t off, uint64_t len, uint64_t base, uint64_t size)
{
	if (off < base)
		return false;
	off -= base;
	return off <= size && len <= size - off;
}

/* True if [off, off + len) lies inside [lo, hi) (lo <= hi). Overflow-safe. */
static bool range_within(uint64_t off, uint64_t len, uint64_t lo, uint64_t hi)
{
	return off >= lo && off <= hi && len <= hi - off;
}

/*
 * Why a window of another layout major is refused, naming both versions.
 * The text lives in a per-thread buffer (valid until this thread checks the
 * next window); every other reason is a static string.
 */
static const char *version_problem(uint16_t major, uint16_t minor)
{
	static _Thread_local char buf[192];

	snprintf(buf, sizeof(buf),
		 "version_major: the window has layout %u.%u, this side speaks layout %u.%u "
		 "(sides of different majors cannot share a window: run the same vop release on both)",
		 (unsigned)major, (unsigned)minor, VOP_LAYOUT_VERSION_MAJOR, VOP_LAYOUT_VERSION_MINOR);
	return buf;
}

/* Refuse with -EPROTO, naming the field (why is a static string). */
#define LAYOUT_FAIL(msg)                \
	do {                            \
		if (why)                \
			*why = (msg);   \
		return -EPROTO;         \
	} while (0)

int vop_window_layout_check(const uint8_t *base, uint64_t size, struct vop_window_layout *out,
			    const char **why)
{
	const struct vop_win_hdr *h = (const struct vop_win_hdr *)(const void *)base;
	const struct vop_devtab_hdr *dt;
	struct vop_window_layout l;
	uint32_t magic;
	uint64_t dt_end, ring_end;

	if (why)
		*why = NULL;
	/* The header and the table header must be inside the mapping before we read them. */
	if (!base || size < VOP_WIN_MIN_SIZE)
		LAYOUT_FAIL("window_size: mapping smaller than the 64 KiB minimum");
	dt = (const struct vop_devtab_hdr *)(const void *)(base + VOP_DEVTAB_OFF);
	/* W1 pair: acquire; everything the creator wrote before magic is visible. */
	magic = vop_load_acquire_u32(&h->magic);
	if (magic == 0)
		return -EAGAIN;
	if (magic != VOP_WIN_MAGIC)
		LAYOUT_FAIL("magic: not a vop window");
	if (vop_read_once_u16(&h->version_major) != VOP_LAYOUT_VERSION_MAJOR) {
		if (why)
			*why = version_problem(vop_read_once_u16(&h->version_major),
					       vop_read_once_u16(&h->version_minor));
		return -EPROTO;
	}
	if (vop_read_once_u64(&h->window_size) != size)
		LAYOUT_FAIL("window_size: differs from the size mapped");
	if (vop_read_once_u32(&h->side_off) != VOP_WIN_SIDE_OFF ||
	    vop_read_once_u32(&h->side_size) != sizeof(struct vop_win_side))
		LAYOUT_FAIL("side_off/side_size: side blocks not at 0x80/128");
	if (vop_read_once_u32(&h->devtab_off) != VOP_DEVTAB_OFF)
		LAYOUT_FAIL("devtab_off: device table not at 0x1000");
	/* Read every geometry field once into private memory; only the copies are used. */
	memset(&l, 0, sizeof(l));
	l.size = size;
	l.devtab_size = vop_read_once_u32(&h->devtab_size);
	l.ring_off = vop_read_once_u64(&h->ring_off);
	l.ring_size = vop_read_once_u64(&h->ring_size);
	l.data_off = vop_read_once_u64(&h->data_off);
	l.data_size = vop_read_once_u64(&h->data_size);
	l.max_entries = vop_read_once_u32(&dt->max_entries);
	l.entry_size = vop_read_once_u32(&dt->entry_size);
	if (l.devtab_size < sizeof(struct vop_devtab_hdr))
		LAYOUT_FAIL("devtab_size: smaller than the device table header");
	if (!range_within(VOP_DEVTAB_OFF, l.devtab_size, VOP_DEVTAB_OFF, size))
		LAYOUT_FAIL("devtab_size: device table past the end of the window");
	dt_end = VOP_DEVTAB_OFF + (uint64_t)l.devtab_size;
	if (l.ring_off < dt_end)
		LAYOUT_FAIL("ring_off: ring area overlaps the device table");
	if (l.ring_size == 0)
		LAYOUT_FAIL("ring_size: empty ring area");
	if (!range_within(l.ring_off, l.ring_size, dt_end, size))
		LAYOUT_FAIL("ring_off/ring_size: ring area past the end of the window");
	ring_end = l.ring_off + l.ring_size; /* <= size: no wrap */
	if (l.data_off < ring_end)
		LAYOUT_FAIL("data_off: data area overlaps the ring area");
	if (l.data_size == 0)
		LAYOUT_FAIL("data_size: empty data area");
	if (!range_within(l.data_off, l.data_size, ring_end, size))
		LAYOUT_FAIL("data_off/data_size: data area past the end of the window");
	if (vop_read_once_u32(&dt->magic) != VOP_DEVTAB_MAGIC)
		LAYOUT_FAIL("devtab magic: not a vop device table");
	if (l.entry_size < sizeof(struct vop_dev_entry) || l.entry_size % 8 != 0 ||
	    l.entry_size > 65536)
		LAYOUT_FAIL("entry_size: not a multiple of 8 in [768, 65536]");
	if (l.max_entries == 0 || l.max_entries > 1024)
		LAYOUT_FAIL("max_entries: not in [1, 1024]");
	if ((uint64_t)l.max_entries * l.entry_size > l.devtab_size - sizeof(struct vop_devtab_hdr))
		LAYOUT_FAIL("max_entries * entry_size: entries past the end of the device table");
	if (out)
		*out = l;
	return 0;
}

static uint64_t nonce(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
	       ((uint64_t)getpid() << 32);
}

static void side_up(struct vop_window *w)
{
	uint32_t epoch = vop_read_once_u32(&w->me->epoch) + 1;

	if (epoch == 0)
		epoch = 1;
	w->epoch = epoch;
	vop_write_once_u32(&w->me->pid, (uint32_t)getpid());
	vop_write_once_u32(&w->me->hb_period_ms, DEFAULT_HB_PERIOD_MS);
	vop_write_once_u32(&w->me->epoch, epoch);
	/*
	 * S1: release. Orders pid/epoch/hb_period before state UP. Pairs with
	 * the acquire load of state in vop_window_peer().
	 */
	vop_store_release_u32(&w->me->state, VOP_SIDE_UP);
}

static void bind_sides(struct vop_window *w)
{
	struct vop_win_side *sides = (struct vop_win_side *)(void *)(w->x->base + VOP_WIN_SIDE_OFF);

	w->me = &sides[w->side];
	w->peer = &sides[w->side ^ 1u];
	w->hdr = (struct vop_win_hdr *)(void *)w->x->base;
	w->dt = (struct vop_devtab_hdr *)(void *)(w->x->base + VOP_DEVTAB_OFF);
}

/*
 * The region table of w: the data area only (the one range a descriptor may
 * name), clamped to what the transport mapped. 0 or -EPROTO.
 */
static int window_regions(struct vop_window *w)
{
	vop_region_table_init(&w->regions);
	if (!range_inside(w->data_off, w->data_size, 0, w->x->size) || w->data_size == 0)
		return -EPROTO;
	if (vop_region_add(&w->regions, w->data_off, w->data_size, w->x->base + w->data_off,
			   VOP_PROT_READ | VOP_PROT_WRITE) != 0)
		return -EPROTO;
	return 0;
}

int vop_window_create(struct vop_xport *x, const struct vop_window_geometry *g,
		      struct vop_window **out)
{
	struct vop_window *w;
	uint32_t max = g && g->max_devices ? g->max_devices : VOP_MAX_DEVICES;
	uint64_t dt_size, ring_size;

	*out = NULL;
	if (max > VOP_MAX_DEVICES || (g && g->ring_size > x->size))
		return -EINVAL;
	dt_size = round_up(sizeof(struct vop_devtab_hdr) + (uint64_t)max * sizeof(struct vop_dev_entry),
			   VOP_WIN_PAGE);
	ring_size = g && g->ring_size ? round_up(g->ring_size, VOP_WIN_PAGE)
				      : round_up(x->size / 16, VOP_WIN_PAGE);
	if (ring_size < 64 * 1024)
		ring_size = 64 * 1024;
	if (VOP_DEVTAB_OFF + dt_size + ring_size + 64 * 1024 > x->size)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->x = x;
	w->side = 0;
	bind_sides(w);
	vop_win_zero(x->base, VOP_DEVTAB_OFF + dt_size);
	w->max_entries = max;
	w->entry_size = sizeof(struct vop_dev_entry);
	w->ring_off = VOP_DEVTAB_OFF + dt_size;
	w->ring_size = ring_size;
	w->data_off = w->ring_off + ring_size;
	w->data_size = x->size - w->data_off;
	w->ring_next = w->ring_off;
	w->data_next = w->data_off;
	if (window_regions(w) != 0) {
		free(w);
		return -EINVAL;
	}

	w->hdr->version_major = VOP_LAYOUT_VERSION_MAJOR;
	w->hdr->version_minor = VOP_LAYOUT_VERSION_MINOR;
	w->hdr->window_size = x->size;
	w->hdr->side_off = VOP_WIN_SIDE_OFF;
	w->hdr->side_size = sizeof(struct vop_win_side);
	w->hdr->devtab_off = VOP_DEVTAB_OFF;
	w->hdr->devtab_size = (uint32_t)dt_size;
	w->hdr->ring_off = w->ring_off;
	w->hdr->ring_size = w->ring_size;
	w->hdr->data_off = w->data_off;
	w->hdr->data_size = w->data_size;
	w->hdr->create_nonce = nonce();
	w->dt->magic = VOP_DEVTAB_MAGIC;
	w->dt->entry_size = sizeof(struct vop_dev_entry);
	w->dt->max_entries = max;
	if (x->ops->claim)
		x->ops->claim(x, 0); /* a fresh file: nobody else can hold it yet */
	if (x->ops->bind(x, 0) != 0) {
		free(w);
		return -EINVAL;
	}
	side_up(w);
	/*
	 * W1: release. Orders every header, side and device-table write above
	 * before the magic. Pairs with the acquire load of magic in
	 * vop_window_attach().
	 */
	vop_store_release_u32(&w->hdr->magic, VOP_WIN_MAGIC);
	*out = w;
	return 0;
}

/*
 * True if another process still holds our side: state UP and its heartbeat
 * moves within 4 heartbeat periods. (A side whose worker is not running
 * does not beat and counts as gone.) Only when the transport cannot claim
 * the side; this sleeps 4 periods.
 */
static bool side_alive(struct vop_window *w)
{
	uint32_t period;
	uint64_t hb;
	struct timespec ts;

	if (vop_load_acquire_u32(&w->me->state) != VOP_SIDE_UP)
		return false;
	/*
	 * The period is read from shared memory the peer could have rewritten:
	 * clamp it so the caller (often the JS thread) sleeps at most 1 s.
	 */
	period = vop_read_once_u32(&w->me->hb_period_ms);
	period = period < 1 ? 1 : period > 250 ? 250 : period;
	hb = vop_read_once_u64(&w->me->heartbeat);
	ts.tv_sec = (time_t)(4 * period / 1000);
	ts.tv_nsec = (long)(4 * period % 1000) * 1000000L;
	nanosleep(&ts, NULL);
	return vop_read_once_u64(&w->me->heartbeat) != hb;
}

static const char *queue_problem(const struct vop_window *w, const struct vop_queue_desc *q);
static struct vop_dev_entry *entry_at(struct vop_window *w, uint32_t i);

/*
 * Side 0 re-opened: continue the bump allocators after every allocation in
 * the table. Entries are read once into private copies and only queues
 * that validate count (the peer may have rewritten the table while we were
 * away): a bogus entry can move nothing outside the areas.
 */
static void recompute_allocators(struct vop_window *w)
{
	uint32_t i, k;

	w->ring_next = w->ring_off;
	w->data_next = w->data_off;
	for (i = 0; i < w->max_entries; i++) {
		const struct vop_dev_entry *e = entry_at(w, i);
		uint16_t nq;

		if (vop_read_once_u32(&e->state) == VOP_DEV_FREE)
			continue;
		nq = vop_read_once_u16(&e->num_queues);
		for (k = 0; k < nq && k < VOP_MAX_QUEUES; k++) {
			struct vop_queue_desc q;
			uint64_t ends[3];
			unsigned j;

			memset(&q, 0, sizeof(q));
			q.size = vop_read_once_u16(&e->queues[k].size);
			q.desc_off = vop_read_once_u64(&e->queues[k].desc_off);
			q.avail_off = vop_read_once_u64(&e->queues[k].avail_off);
			q.used_off = vop_read_once_u64(&e->queues[k].used_off);
			q.pool_off = vop_read_once_u64(&e->queues[k].pool_off);
			q.pool_size = vop_read_once_u64(&e->queues[k].pool_size);
			if (queue_problem(w, &q))
				continue;
			/* Valid: every end below lies inside its area, no wrap. */
			ends[0] = q.desc_off + vop_vring_desc_bytes(q.size);
			ends[1] = q.avail_off + vop_vring_avail_bytes(q.size);
			ends[2] = q.used_off + vop_vring_used_bytes(q.size);
			for (j = 0; j < 3; j++)
				if (ends[j] > w->ring_next)
					w->ring_next = ends[j];
			if (q.pool_off + q.pool_size > w->data_next)
				w->data_next = q.pool_off + q.pool_size;
		}
	}
}

int vop_window_attach_side(struct vop_xport *x, unsigned side, struct vop_window **out)
{
	struct vop_window_layout l;
	struct vop_window *w;
	int rc;

	*out = NULL;
	if (side > 1)
		return -EINVAL;
	/* Everything afresh, against what x mapped: a re-attach trusts nothing from before. */
	rc = vop_window_layout_check(x->base, x->size, &l, NULL);
	if (rc)
		return rc;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->x = x;
	w->side = side;
	bind_sides(w);
	w->max_entries = l.max_entries;
	w->entry_size = l.entry_size;
	w->ring_off = l.ring_off;
	w->ring_size = l.ring_size;
	w->data_off = l.data_off;
	w->data_size = l.data_size;
	if (window_regions(w) != 0) {
		free(w);
		return -EPROTO;
	}
	/* The transport's claim says at once; otherwise watch the side's heartbeat. */
	rc = x->ops->claim ? x->ops->claim(x, side) : -EOPNOTSUPP;
	if (rc == -EBUSY || (rc != 0 && side_alive(w))) {
		free(w);
		return -EBUSY;
	}
	if (side == 0)
		recompute_allocators(w);
	rc = x->ops->bind(x, side);
	if (rc) {
		free(w);
		return rc;
	}
	side_up(w);
	/* Liveness travels in the window: ring the peer so that a sleeping worker sees our epoch now. */
	x->ops->kick(x, 0);
	*out = w;
	return 0;
}

int vop_window_attach(struct vop_xport *x, struct vop_window **out)
{
	return vop_window_attach_side(x, 1, out);
}

void vop_window_close(struct vop_window *w)
{
	if (!w)
		return;
	/* Release: our last ring/used writes precede GONE (peer acquires state). */
	vop_store_release_u32(&w->me->state, VOP_SIDE_GONE);
	vop_window_notify_peer(w); /* let a sleeping peer notice promptly */
	vop_xport_destroy(w->x);
	free(w);
}

int vop_window_notify_peer(struct vop_window *w)
{
	return w->x->ops->kick(w->x, 0);
}

int vop_window_wake(struct vop_window *w)
{
	return w->x->ops->wake(w->x);
}

void vop_window_flush(struct vop_window *w)
{
	if (w->x->ops->flush)
		w->x->ops->flush(w->x);
}

void vop_window_heartbeat(struct vop_window *w)
{
	vop_write_once_u64(&w->me->heartbeat, vop_read_once_u64(&w->me->heartbeat) + 1);
}

void vop_window_peer(struct vop_window *w, struct vop_peer_view *out)
{
	uint32_t p;

	out->state = vop_load_acquire_u32(&w->peer->state); /* S1 pair */
	out->epoch = vop_read_once_u32(&w->peer->epoch);
	out->heartbeat = vop_read_once_u64(&w->peer->heartbeat);
	p = vop_read_once_u32(&w->peer->hb_period_ms);
	out->hb_period_ms = p < 1 ? 1 : p > 60000 ? 60000 : p;
	out->kick = vop_read_once_u32(&w->peer->kick);
}

/* ------------------------------------------------------------------ */
/* Device table                                                         */
/* ------------------------------------------------------------------ */

/* Table changed: wake both workers so they rescan now rather than at their next timeout. */
static void notify_both(struct vop_window *w)
{
	w->x->ops->kick(w->x, 0);
	w->x->ops->wake(w->x);
}

static struct vop_dev_entry *entry_at(struct vop_window *w, uint32_t i)
{
	return (struct vop_dev_entry *)(void *)((uint8_t *)w->dt + sizeof(struct vop_devtab_hdr) +
						(uint64_t)i * w->entry_size);
}

uint32_t vop_devtab_generation(struct vop_window *w)
{
	return vop_load_acquire_u32(&w->dt->generation); /* T2 pair */
}

static int alloc_area(uint64_t *next, uint64_t base, uint64_t size, uint64_t len, uint64_t *off)
{
	uint64_t o = round_up(*next, VOP_RING_ALIGN);

	if (!range_inside(o, len, base, size))
		return -ENOSPC;
	*off = o;
	*next = o + len;
	return 0;
}

int vop_devtab_publish(struct vop_window *w, const struct vop_dev_spec *spec)
{
	struct vop_dev_entry *e = NULL;
	struct vop_queue_desc q[VOP_MAX_QUEUES];
	uint64_t ring_next = w->ring_next, data_next = w->data_next;
	uint32_t i, slot = 0, seq;
	int rc;

	if (w->side != 0)
		return -EPERM;
	if (spec->dev_id == 0 || spec->num_queues == 0 || spec->num_queues > VOP_MAX_QUEUES ||
	    spec->device_side > 1 || spec->config_len > VOP_CONFIG_MAX ||
	    (spec->config_len && !spec->config))
		return -EINVAL;
	for (i = 0; i < w->max_entries; i++) {
		struct vop_dev_entry *c = entry_at(w, i);
		uint32_t st = vop_read_once_u32(&c->state);

		if (st == VOP_DEV_LIVE && vop_read_once_u32(&c->dev_id) == spec->dev_id)
			return -EEXIST;
		if (!e && st != VOP_DEV_LIVE) {
			e = c;
			slot = i;
		}
	}
	if (!e)
		return -ENOSPC;
	memset(q, 0, sizeof(q));
	for (i = 0; i < spec->num_queues; i++) {
		uint16_t n = spec->queue_size[i];

		if (n == 0 || n > VOP_QUEUE_MAX_SIZE || (n & (n - 1)) || spec->pool_size[i] == 0)
			return -EINVAL;
		q[i].size = n;
		rc = alloc_area(&ring_next, w->ring_off, w->ring_size, vop_vring_desc_bytes(n),
				&q[i].desc_off);
		rc = rc ? rc : alloc_area(&ring_next, w->ring_off, w->ring_size,
					  vop_vring_avail_bytes(n), &q[i].avail_off);
		rc = rc ? rc : alloc_area(&ring_next, w->ring_off, w->ring_size,
					  vop_vring_used_bytes(n), &q[i].used_off);
		rc = rc ? rc : alloc_area(&data_next, w->data_off, w->data_size,
					  spec->pool_size[i], &q[i].pool_off);
		if (rc)
			return rc;
		q[i].pool_size = spec->pool_size[i];
	}
	/*
	 * The rings are not zeroed here: each part is zeroed by its one writer
	 * before the other side reads it (the driver its descriptor table and
	 * avail ring when it starts, the device its used ring before it acks a
	 * reset), so the table owner writes nothing of the other roles.
	 * T0: seq bump then release fence: a reader that copied the old body
	 * and re-reads seq after its acquire fence sees the change (seqlock).
	 */
	seq = vop_read_once_u32(&e->seq) + 1;
	vop_write_once_u32(&e->seq, seq);
	vop_wmb();
	vop_write_once_u32(&e->dev_id, spec->dev_id);
	vop_write_once_u32(&e->device_type, spec->device_type);
	vop_write_once_u64(&e->features_offered, spec->features | (1ull << VOP_F_VERSION_1));
	vop_write_once_u32(&e->config_len, spec->config_len);
	vop_write_once_u16(&e->num_queues, spec->num_queues);
	vop_write_once_u8(&e->device_side, spec->device_side);
	vop_write_once_u8(&e->reserved0, 0);
	vop_win_copy_to(e->queues, q, sizeof(q));
	/*
	 * The config space as published: the device side starts from it and
	 * keeps its live config in its own block (readers switch over once the
	 * device has written it, generation >= 2).
	 */
	vop_win_zero(e->config_init, sizeof(e->config_init));
	if (spec->config_len)
		vop_win_copy_to(e->config_init, spec->config, spec->config_len);
	/*
	 * T1: release. Orders the entry body (and the zeroed rings) before
	 * state LIVE. Pairs with the acquire load of state in vop_devtab_find().
	 */
	vop_store_release_u32(&e->state, VOP_DEV_LIVE);
	/* T2: release. Generation bump after the entry; pairs with vop_devtab_generation(). */
	vop_store_release_u32(&w->dt->generation, vop_read_once_u32(&w->dt->generation) + 1);
	notify_both(w);
	w->ring_next = ring_next;
	w->data_next = data_next;
	return (int)slot;
}

int vop_devtab_remove(struct vop_window *w, uint32_t dev_id)
{
	uint32_t i;

	if (w->side != 0)
		return -EPERM;
	for (i = 0; i < w->max_entries; i++) {
		struct vop_dev_entry *e = entry_at(w, i);

		if (vop_read_once_u32(&e->state) == VOP_DEV_LIVE &&
		    vop_read_once_u32(&e->dev_id) == dev_id) {
			/* Release: pairs with the acquire load of state in find. */
			vop_store_release_u32(&e->state, VOP_DEV_TOMBSTONE);
			vop_store_release_u32(&w->dt->generation,
					      vop_read_once_u32(&w->dt->generation) + 1);
			notify_both(w);
			return 0;
		}
	}
	return -ENOENT;
}

/*
 * Why queue q (a private copy) is invalid for w, or NULL: size a power of
 * two <= 32768, each ring part aligned and inside the ring area, the three
 * parts disjoint, the pool aligned, non-empty and inside the data area.
 * The areas were validated against the mapping, so inside an area means
 * inside the mapping.
 */
static const char *queue_problem(const struct vop_window *w, const struct vop_queue_desc *q)
{
	uint16_t n = q->size;
	uint64_t db, ab, ub;

	if (n == 0 || n > VOP_QUEUE_MAX_SIZE || (n & (n - 1)))
		return "queue size: not a power of two in [1, 32768]";
	db = vop_vring_desc_bytes(n);
	ab = vop_vring_avail_bytes(n);
	ub = vop_vring_used_bytes(n);
	if (q->desc_off % VOP_VRING_DESC_ALIGN)
		return "queue desc_off: not 16-byte aligned";
	if (q->avail_off % VOP_VRING_AVAIL_ALIGN)
		return "queue avail_off: not 2-byte aligned";
	if (q->used_off % VOP_VRING_USED_ALIGN)
		return "queue used_off: not 4-byte aligned";
	if (q->pool_off % 16)
		return "queue pool_off: not 16-byte aligned";
	if (!range_inside(q->desc_off, db, w->ring_off, w->ring_size))
		return "queue desc_off: descriptor table outside the ring area";
	if (!range_inside(q->avail_off, ab, w->ring_off, w->ring_size))
		return "queue avail_off: driver area outside the ring area";
	if (!range_inside(q->used_off, ub, w->ring_off, w->ring_size))
		return "queue used_off: device area outside the ring area";
	if (q->pool_size == 0)
		return "queue pool_size: empty pool";
	if (!range_inside(q->pool_off, q->pool_size, w->data_off, w->data_size))
		return "queue pool_off/pool_size: pool outside the data area";
	/* The three parts of one queue must not overlap (all ends are in range: no wrap). */
	if (!(q->desc_off + db <= q->avail_off || q->avail_off + ab <= q->desc_off) ||
	    !(q->desc_off + db <= q->used_off || q->used_off + ub <= q->desc_off) ||
	    !(q->avail_off + ab <= q->used_off || q->used_off + ub <= q->avail_off))
		return "queue desc_off/avail_off/used_off: ring parts overlap";
	return NULL;
}

int vop_devtab_check_info(const struct vop_window *w, const struct vop_dev_info *info,
			  const char **why)
{
	const char *p = NULL;
	uint32_t k;

	if (info->device_side > 1)
		p = "device_side: not 0 or 1";
	else if (info->num_queues == 0 || info->num_queues > VOP_MAX_QUEUES)
		p = "num_queues: not in [1, 8]";
	else if (info->config_len > VOP_CONFIG_MAX)
		p = "config_len: larger than the 96-byte config space";
	for (k = 0; !p && k < info->num_queues; k++)
		p = queue_problem(w, &info->queues[k]);
	if (why)
		*why = p;
	return p ? -EPROTO : 0;
}

int vop_devtab_find(struct vop_window *w, uint32_t dev_id, struct vop_dev_info *out)
{
	uint32_t i, k;

	for (i = 0; i < w->max_entries; i++) {
		struct vop_dev_entry *e = entry_at(w, i);
		const char *why;
		uint32_t seq;

		/* T1 pair: acquire; the body written before LIVE is visible. */
		if (vop_load_acquire_u32(&e->state) != VOP_DEV_LIVE ||
		    vop_read_once_u32(&e->dev_id) != dev_id)
			continue;
		seq = vop_read_once_u32(&e->seq);
		memset(out, 0, sizeof(*out));
		out->slot = i;
		out->seq = seq;
		out->dev_id = dev_id;
		out->device_type = vop_read_once_u32(&e->device_type);
		out->features_offered = vop_read_once_u64(&e->features_offered);
		out->device_side = vop_read_once_u8(&e->device_side);
		out->num_queues = vop_read_once_u16(&e->num_queues);
		out->config_len = vop_read_once_u32(&e->config_len);
		for (k = 0; k < VOP_MAX_QUEUES; k++) {
			const struct vop_queue_desc *s = &e->queues[k];

			out->queues[k].size = vop_read_once_u16(&s->size);
			out->queues[k].desc_off = vop_read_once_u64(&s->desc_off);
			out->queues[k].avail_off = vop_read_once_u64(&s->avail_off);
			out->queues[k].used_off = vop_read_once_u64(&s->used_off);
			out->queues[k].pool_off = vop_read_once_u64(&s->pool_off);
			out->queues[k].pool_size = vop_read_once_u64(&s->pool_size);
		}
		out->entry = e;
		/*
		 * The config space (a fixed 96-byte array: never more than that):
		 * the device side's live copy once it wrote it, else the one
		 * published with the entry (covered by the entry seqlock). A
		 * snapshot: vop_devtab_config_read() gives a consistent copy.
		 */
		if (out->config_len <= VOP_CONFIG_MAX && out->device_side <= 1) {
			const struct vop_dev_side *b = &e->sides[out->device_side];

			if (vop_load_acquire_u32(&b->seq) == seq &&
			    vop_load_acquire_u32(&b->config_generation) >= 2)
				vop_win_copy_from(out->config, b->config, out->config_len);
			else
				vop_win_copy_from(out->config, e->config_init, out->config_len);
		}
		/* Seqlock check: acquire fence, then the slot must be unchanged. */
		vop_rmb();
		if (vop_read_once_u32(&e->seq) != seq || vop_read_once_u32(&e->state) != VOP_DEV_LIVE)
			return -EAGAIN;
		/* Only the private copy is validated and used from here on. */
		if (vop_devtab_check_info(w, out, &why) != 0) {
			atomic_store_explicit(&w->entry_problem, why, memory_order_relaxed);
			return -EPROTO;
		}
		return 0;
	}
	return -ENOENT;
}

int vop_devtab_find_bounded(struct vop_window *w, uint32_t dev_id, struct vop_dev_info *out)
{
	unsigned tries;
	int rc = -EAGAIN;

	for (tries = 0; tries < VOP_DEVTAB_FIND_TRIES && rc == -EAGAIN; tries++) {
		if (tries)
			vop_cpu_relax();
		rc = vop_devtab_find(w, dev_id, out);
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* Per-side blocks of an entry                                          */
/* ------------------------------------------------------------------ */

struct vop_dev_side *vop_devtab_side_claim(const struct vop_dev_info *info, unsigned side)
{
	struct vop_dev_side *b = &info->entry->sides[side & 1u];

	/* Our own field: only this side writes it, so a relaxed read of it is ours. */
	if (vop_read_once_u32(&b->seq) != info->seq) {
		vop_write_once_u32(&b->status, 0);
		vop_write_once_u32(&b->reset, 0);
		vop_write_once_u32(&b->config_generation, 0);
		vop_write_once_u64(&b->features, 0);
		vop_write_once_u64(&b->reserved0, 0);
		vop_win_zero(b->config, sizeof(b->config));
		/*
		 * B1: release. Orders the zeroed block before its seq. Pairs with
		 * the acquire load of seq in vop_devtab_side_read() (and find).
		 */
		vop_store_release_u32(&b->seq, info->seq);
	}
	return b;
}

void vop_devtab_side_read(const struct vop_dev_info *info, unsigned side,
			  struct vop_dev_side_view *out)
{
	const struct vop_dev_side *b = &info->entry->sides[side & 1u];

	memset(out, 0, sizeof(*out));
	/* B1 pair: acquire; a block of another occupant (other seq) reads as zeros. */
	if (vop_load_acquire_u32(&b->seq) != info->seq)
		return;
	out->current = true;
	/* Acquire each: R1..R3 publish through these words (docs/memory-ordering.md). */
	out->reset = vop_load_acquire_u32(&b->reset);
	out->status = vop_load_acquire_u32(&b->status);
	out->config_generation = vop_load_acquire_u32(&b->config_generation);
	out->features = vop_read_once_u64(&b->features);
}

int vop_devtab_config_write(struct vop_window *w, const struct vop_dev_info *info, uint32_t off,
			    const void *data, uint32_t len)
{
	struct vop_dev_side *b;
	uint32_t gen;

	(void)w;
	if (off > info->config_len || len > info->config_len - off || info->config_len > VOP_CONFIG_MAX)
		return -EINVAL;
	b = vop_devtab_side_claim(info, info->device_side); /* the device side's own block */
	gen = vop_read_once_u32(&b->config_generation);
	if (gen & 1u)
		gen++; /* a previous writer died mid-update: start from even */
	if (gen == 0) {
		/* First write: start from the config space as published (a partial write keeps the rest). */
		vop_win_copy_to(b->config, info->entry->config_init, info->config_len);
	}
	/*
	 * K0: odd generation, then release fence: a reader that copied new
	 * bytes sees the changed generation on its re-check.
	 */
	vop_write_once_u32(&b->config_generation, gen + 1);
	vop_wmb();
	vop_win_copy_to(b->config + off, data, len);
	/*
	 * K1: release. Orders the config bytes before the even generation;
	 * pairs with the acquire load in vop_devtab_config_read().
	 */
	vop_store_release_u32(&b->config_generation, gen + 2);
	return 0;
}

int vop_devtab_config_read(struct vop_window *w, const struct vop_dev_info *info, void *out,
			   uint32_t len, uint32_t *generation)
{
	const struct vop_dev_side *b;
	unsigned tries;

	(void)w;
	if (len > info->config_len || info->config_len > VOP_CONFIG_MAX || info->device_side > 1)
		return -EINVAL;
	b = &info->entry->sides[info->device_side];
	for (tries = 0; tries < 1000; tries++) {
		uint32_t g1;

		/*
		 * B1 pair: until the device side has claimed its block for this
		 * occupant and written it (generation >= 2), the config space is
		 * the one published with the entry (owner-written before LIVE,
		 * never after: no seqlock needed).
		 */
		g1 = vop_load_acquire_u32(&b->seq) == info->seq
			     ? vop_load_acquire_u32(&b->config_generation) /* K1 pair */
			     : 0;
		if (g1 == 0) {
			vop_win_copy_from(out, info->entry->config_init, len);
			if (generation)
				*generation = 0;
			return 0;
		}
		if (g1 & 1u) {
			vop_cpu_relax();
			continue;
		}
		vop_win_copy_from(out, b->config, len);
		vop_rmb(); /* the copy completes before the re-check (pairs with K0) */
		if (vop_read_once_u32(&b->config_generation) == g1 &&
		    vop_read_once_u32(&b->seq) == info->seq) {
			if (generation)
				*generation = g1;
			return 0;
		}
	}
	return -EAGAIN;
}
