/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The device lifecycle over the shared entry: the reset handshake, DRIVER_OK
 * and DEVICE_NEEDS_RESET (edges R1..R3 in docs/memory-ordering.md):
 *   driver: status = 0; reset_req = r (release, R1); ring
 *   device: reset_req != reset_ack (acquire, R1) -> stop the backend, zero
 *           its device areas, reset_ack = r (release, R2); ring
 *   driver: reset_ack == r (acquire, R2) -> start the backend (it zeroes its
 *           driver areas), features_accepted, status = ...|DRIVER_OK
 *           (release, R3); ring
 *   device: DRIVER_OK (acquire, R3) -> start the backend with the accepted
 *           features
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
#include <string.h>

#include "barrier.h"
#include "link_internal.h"

void vop_devreset_needs_reset(struct vop_link *l, struct link_dev *d)
{
	/* Tell the driver (virtio 2.1.2): it must reset us. */
	vop_fetch_or_u32(&d->info.entry->status, VOP_STATUS_DEVICE_NEEDS_RESET);
	vop_link_notify_peer(l);
}

void vop_devreset_attached(struct vop_link *l, struct link_dev *d)
{
	if (d->role == VOP_ROLE_DRIVER) {
		vop_devreset_begin(l, d);
		return;
	}
	d->run = VOP_DEVRUN_WAIT_DRIVER;
	/* Ack only resets requested after we attached (see the file comment). */
	d->acked = vop_read_once_u32(&d->info.entry->reset_req) !=
		   vop_read_once_u32(&d->info.entry->reset_ack);
}

void vop_devreset_begin(struct vop_link *l, struct link_dev *d)
{
	struct vop_dev_entry *e = d->info.entry;

	vop_link_backend_stop(d, false); /* nothing new enters the rings while the device resets */
	vop_write_once_u32(&e->status, 0);
	d->reset_val = vop_read_once_u32(&e->reset_req) + 1;
	if (d->reset_val == 0)
		d->reset_val = 1;
	/*
	 * R1: release. Orders status = 0 before the new reset_req. Pairs with
	 * the acquire load of reset_req in vop_devreset_device_step().
	 */
	vop_store_release_u32(&e->reset_req, d->reset_val);
	d->run = VOP_DEVRUN_RESETTING;
	d->reset_deadline = vop_link_now_ns() + (uint64_t)l->cfg.reset_timeout_ms * 1000000u;
	d->timeout_reported = false;
	vop_link_notify_peer(l);
}

unsigned vop_devreset_driver_step(struct vop_link *l, struct link_dev *d, uint64_t now)
{
	struct vop_dev_entry *e = d->info.entry;

	if (d->run == VOP_DEVRUN_RESETTING) {
		/* R2 pair: acquire; the device's ring reset precedes its ack. */
		if (vop_load_acquire_u32(&e->reset_ack) != d->reset_val) {
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
		vop_write_once_u64(&e->features_accepted, d->features);
		/*
		 * R3: release. Orders our zeroed driver area and
		 * features_accepted before DRIVER_OK. Pairs with the acquire
		 * load of status in vop_devreset_device_step().
		 */
		vop_store_release_u32(&e->status, VOP_STATUS_ACKNOWLEDGE | VOP_STATUS_DRIVER |
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
	    (vop_read_once_u32(&e->status) & VOP_STATUS_DEVICE_NEEDS_RESET)) {
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
	unsigned i;

	if (vop_link_backend_stop(d, false) != 0)
		return 0; /* its threads still finish requests: ack when they are done */
	for (i = 0; i < d->info.num_queues; i++) {
		/*
		 * Zero our whole device area even if we never ran the queue (a
		 * previous incarnation may have): the driver reads used->idx
		 * right after our ack.
		 */
		uint64_t ub = vop_vring_used_bytes(d->info.queues[i].size);
		void *used = vop_window_ptr(l->w, d->info.queues[i].used_off, ub);

		if (used)
			memset(used, 0, ub);
	}
	memset(d->reported, 0, sizeof(d->reported));
	/* R2: release. Orders the ring reset above before the ack. Pairs with the driver step. */
	vop_store_release_u32(&d->info.entry->reset_ack, req);
	d->reset_val = req;
	d->acked = true;
	d->run = VOP_DEVRUN_WAIT_DRIVER;
	vop_link_notify_peer(l);
	return 1;
}

unsigned vop_devreset_device_step(struct vop_link *l, struct link_dev *d)
{
	struct vop_dev_entry *e = d->info.entry;
	uint32_t req = vop_load_acquire_u32(&e->reset_req); /* R1 pair */
	uint32_t st;
	uint64_t acc;

	if (req != vop_read_once_u32(&e->reset_ack))
		return device_reset(l, d, req);
	if (d->run != VOP_DEVRUN_WAIT_DRIVER)
		return 0;
	st = vop_load_acquire_u32(&e->status); /* R3 pair */
	if (!(st & VOP_STATUS_DRIVER_OK))
		return 0;
	acc = vop_read_once_u64(&e->features_accepted);
	if (!d->acked && (acc >> VOP_F_INFLIGHT & 1) && !(acc & ~d->info.features_offered) &&
	    !(st & VOP_STATUS_DEVICE_NEEDS_RESET)) {
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
		if (!(st & VOP_STATUS_DEVICE_NEEDS_RESET))
			vop_devreset_needs_reset(l, d);
		return 0;
	}
	if (acc & ~d->info.features_offered) {
		d->run = VOP_DEVRUN_BROKEN;
		vop_fetch_or_u32(&e->status, VOP_STATUS_DEVICE_NEEDS_RESET);
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
