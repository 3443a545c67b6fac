/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The device lifecycle over the shared entry: the reset handshake, DRIVER_OK
 * and DEVICE_NEEDS_RESET. Each side writes only its own block of the entry
 * (layout.h struct vop_dev_side: D = the driver's, V = the device's) and
 * reads the other's; nothing is read-modify-written (edges B1, R1..R3 in
 * docs/memory-ordering.md):
 *   driver: D.status = 0; D.reset = r (release, R1); ring
 *   device: D.reset != V.reset (acquire, R1) -> stop the backend, zero its
 *           device areas, V.status = 0, V.reset = r (release, R2); ring
 *   driver: V.reset == r (acquire, R2) -> start the backend (it zeroes its
 *           driver areas), D.features, D.status = ...|DRIVER_OK (release,
 *           R3); ring
 *   device: D.status has DRIVER_OK (acquire, R3) -> start the backend with
 *           D.features
 *   device needs a reset: V.status = DEVICE_NEEDS_RESET (release); ring.
 *           The driver sees it in V.status; the device clears it when it
 *           completes the next reset (R2 orders that before the ack).
 * The virtio status a driver would read is D.status | V.status.
 *
 * A device that attaches to an entry it did not ack in this session sets
 * DEVICE_NEEDS_RESET; the driver resets automatically when the peer's
 * epoch changes (restart, link.c) and on vop_link_reset_device().
 * Exception: a device whose driver negotiated VOP_F_INFLIGHT resumes the
 * rings instead (start with resume = true), and its driver does not reset
 * on a peer restart (the journal makes every posted request complete once).
 *
 * Worker thread with the link lock held, except vop_devreset_begin() and
 * vop_devreset_attached(), which the control thread also calls (under the
 * lock) when a device is attached or a reset is asked for.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "link_internal.h"
#include "win_access.h"

/* Our block of d's entry (claimed at attach). */
static struct vop_dev_side *mine(struct vop_link *l, struct link_dev *d)
{
	return &d->info.entry->sides[l->w->side];
}

/*
 * One word of the peer's block (acquire), 0 while the block answers for
 * another occupant (B1 pair): what the steady-state checks of every worker
 * pass need, without copying the whole block.
 */
static uint32_t peer_word(struct vop_link *l, struct link_dev *d, size_t off)
{
	const struct vop_dev_side *b = &d->info.entry->sides[l->w->side ^ 1u];

	if (vop_load_acquire_u32(&b->seq) != d->info.seq)
		return 0;
	return vop_load_acquire_u32((const uint8_t *)b + off);
}

void vop_devreset_needs_reset(struct vop_link *l, struct link_dev *d)
{
	/* Tell the driver (virtio 2.1.2): it must reset us. Our own word: a store, no OR. */
	vop_store_release_u32(&mine(l, d)->status, VOP_STATUS_DEVICE_NEEDS_RESET);
	vop_link_notify_peer(l);
}

void vop_devreset_attached(struct vop_link *l, struct link_dev *d)
{
	struct vop_dev_side_view drv;

	/*
	 * Our block must answer for this occupant before we rely on it (a
	 * block of an earlier occupant of the slot is zeroed); a restarted
	 * side finds its own block as its previous incarnation left it.
	 */
	vop_devtab_side_claim(&d->info, l->w->side);
	if (d->role == VOP_ROLE_DRIVER) {
		vop_devreset_begin(l, d);
		return;
	}
	d->run = VOP_DEVRUN_WAIT_DRIVER;
	/* Ack only resets requested after we attached (see the file comment). */
	vop_devtab_side_read(&d->info, l->w->side ^ 1u, &drv);
	d->acked = drv.reset != vop_read_once_u32(&mine(l, d)->reset);
}

void vop_devreset_begin(struct vop_link *l, struct link_dev *d)
{
	struct vop_dev_side *b = mine(l, d);

	vop_link_backend_stop(d, false); /* nothing new enters the rings while the device resets */
	vop_write_once_u32(&b->status, 0);
	d->reset_val = vop_read_once_u32(&b->reset) + 1;
	if (d->reset_val == 0)
		d->reset_val = 1;
	/*
	 * R1: release. Orders D.status = 0 before the new request. Pairs with
	 * the acquire load of D.reset in peer_word() on the device.
	 */
	vop_store_release_u32(&b->reset, d->reset_val);
	d->run = VOP_DEVRUN_RESETTING;
	d->reset_deadline = vop_link_now_ns() + (uint64_t)l->cfg.reset_timeout_ms * 1000000u;
	d->timeout_reported = false;
	vop_link_notify_peer(l);
}

unsigned vop_devreset_driver_step(struct vop_link *l, struct link_dev *d, uint64_t now)
{
	struct vop_dev_side *b;

	if (d->run == VOP_DEVRUN_RESETTING) {
		/* R2 pair: acquire; the device's ring reset precedes its ack. */
		if (peer_word(l, d, offsetof(struct vop_dev_side, reset)) != d->reset_val) {
			if (!d->timeout_reported && now > d->reset_deadline) {
				d->timeout_reported = true;
				vop_link_emit(l, VOP_EV_RESET_TIMEOUT, d->dev_id, 0, 0, 0);
			}
			return 0;
		}
		if (vop_link_backend_stop(d, false) != 0)
			return 0; /* still finishing: start once it stopped */
		if (vop_link_backend_start(l, d, false) != 0)
			return 0;
		b = mine(l, d);
		vop_write_once_u64(&b->features, d->features);
		/* Write-combining mapping: the driver areas and features reach the device first. */
		vop_window_flush(l->w);
		/*
		 * R3: release. Orders our zeroed driver area and D.features
		 * before DRIVER_OK. Pairs with the acquire load of D.status in
		 * vop_devtab_side_read() on the device.
		 */
		vop_store_release_u32(&b->status, VOP_STATUS_ACKNOWLEDGE | VOP_STATUS_DRIVER |
							  VOP_STATUS_FEATURES_OK | VOP_STATUS_DRIVER_OK);
		d->run = VOP_DEVRUN_RUNNING;
		d->needs_reset_reported = false;
		vop_link_notify_peer(l);
		vop_link_emit(l, VOP_EV_RESET_DONE, d->dev_id, 0, 0, 0);
		return 1;
	}
	if (d->run != VOP_DEVRUN_RUNNING && d->run != VOP_DEVRUN_BROKEN)
		return 0;
	if (!d->needs_reset_reported &&
	    (peer_word(l, d, offsetof(struct vop_dev_side, status)) & VOP_STATUS_DEVICE_NEEDS_RESET)) {
		d->needs_reset_reported = true;
		vop_link_emit(l, VOP_EV_NEEDS_RESET, d->dev_id, 0, 0, 0);
		if (l->cfg.reset_on_needs_reset) {
			vop_devreset_begin(l, d);
			return 1;
		}
	}
	return 0;
}

/* Device: a reset was asked for; stop, zero our device areas, ack. 1 once acked, 0 to retry. */
static unsigned device_reset(struct vop_link *l, struct link_dev *d, uint32_t req)
{
	struct vop_dev_side *b = mine(l, d);
	unsigned i;

	if (vop_link_backend_stop(d, false) != 0)
		return 0; /* its threads still finish requests: ack when they are done */
	for (i = 0; i < d->info.num_queues; i++) {
		/*
		 * Zero our whole device area even if we never ran the queue (a
		 * previous incarnation may have, and the table owner no longer
		 * zeroes rings): the driver reads used->idx right after our ack.
		 */
		uint64_t ub = vop_vring_used_bytes(d->info.queues[i].size);
		void *used = vop_window_ptr(l->w, d->info.queues[i].used_off, ub);

		if (used)
			vop_win_zero(used, ub);
	}
	memset(d->reported, 0, sizeof(d->reported));
	vop_write_once_u32(&b->status, 0); /* the reset clears DEVICE_NEEDS_RESET */
	vop_window_flush(l->w);
	/* R2: release. Orders the ring reset and V.status above before the ack. */
	vop_store_release_u32(&b->reset, req);
	d->reset_val = req;
	d->acked = true;
	d->run = VOP_DEVRUN_WAIT_DRIVER;
	vop_link_notify_peer(l);
	return 1;
}

unsigned vop_devreset_device_step(struct vop_link *l, struct link_dev *d)
{
	struct vop_dev_side_view drv;
	uint32_t own_status, req;
	uint64_t acc;

	req = peer_word(l, d, offsetof(struct vop_dev_side, reset)); /* R1 pair: acquire */
	if (req != vop_read_once_u32(&mine(l, d)->reset))
		return device_reset(l, d, req);
	if (d->run != VOP_DEVRUN_WAIT_DRIVER)
		return 0;
	vop_devtab_side_read(&d->info, l->w->side ^ 1u, &drv); /* R3 pair: acquire */
	if (!(drv.status & VOP_STATUS_DRIVER_OK) || drv.reset != req)
		return 0;
	acc = drv.features;
	own_status = vop_read_once_u32(&mine(l, d)->status);
	if (!d->acked && (acc >> VOP_F_INFLIGHT & 1) && !(acc & ~d->info.features_offered) &&
	    !(own_status & VOP_STATUS_DEVICE_NEEDS_RESET)) {
		/* The driver kept our rings running across our restart: resume them. */
		d->features = acc;
		if (vop_link_backend_start(l, d, true) != 0) {
			vop_devreset_needs_reset(l, d);
			return 0;
		}
		d->acked = true;
		d->run = VOP_DEVRUN_RUNNING;
		return 1;
	}
	if (!d->acked) {
		/* The driver ran with a previous incarnation of us: ask for a reset. */
		if (!(own_status & VOP_STATUS_DEVICE_NEEDS_RESET))
			vop_devreset_needs_reset(l, d);
		return 0;
	}
	if (acc & ~d->info.features_offered) {
		d->run = VOP_DEVRUN_BROKEN;
		vop_devreset_needs_reset(l, d);
		vop_link_emit(l, VOP_EV_QUEUE_BROKEN, d->dev_id, 0, VOP_VQ_LAYOUT, 0);
		return 0;
	}
	d->features = acc;
	if (vop_link_backend_start(l, d, false) != 0) {
		vop_devreset_needs_reset(l, d);
		return 0;
	}
	d->run = VOP_DEVRUN_RUNNING;
	return 1;
}
