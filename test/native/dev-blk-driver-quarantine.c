/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk driver role: a reset fails the request in flight at once (the
 * NBD client gets EIO instead of waiting), but its slot is not handed to a
 * new request until the device acked the reset: until then an honest device
 * may still be reading or writing that slot's buffer for the old request.
 */
#include "devhand.h"
#include "vop/dev_blk.h"

static _Atomic int done_status = -1;
static struct vop_blk_driver *drv;

/* What the NBD writer does: the reply is sent, the slot goes back. */
static void on_done(void *ctx, struct vop_blk_req *r, unsigned status)
{
	(void)ctx;
	atomic_store(&done_status, (int)status);
	vop_blk_req_put(drv, r);
}

static _Atomic int got_slot;

static void *taker(void *arg)
{
	struct vop_blk_req *r;

	(void)arg;
	if (vop_blk_req_get(drv, 1, &r) == 0) {
		atomic_store(&got_slot, 1);
		vop_blk_req_put(drv, r);
	}
	return NULL;
}

int main(void)
{
	struct vop_window *w0, *w1;
	struct vop_dev_spec spec;
	struct vop_dev_info di;
	struct vop_blk_config bc;
	struct vop_blk_req *r;
	struct t_host h;
	pthread_t th;

	vop_blk_spec(&spec, 1, 1, 1, 64 * 1024, false); /* one slot */
	t_mem_windows(4u << 20, &spec, &w0, &w1);
	CHECK(vop_devtab_find(w1, 1, &di) == 0);
	memset(&bc, 0, sizeof(bc));
	bc.capacity = 2048;
	vop_dev_config_write(&di, &bc, sizeof(bc));
	t_host_open(&h, w0);
	CHECK_EQ(vop_blk_driver_create(h.ctx, 1, 0, &drv), 0);
	CHECK_EQ(vop_blk_driver_slots(drv), 1u);
	t_host_serve(&h, 1, VOP_ROLE_DRIVER, &vop_blk_driver_ops, drv);
	t_hand_device_handshake(w1, &di);
	CHECK_EQ(vop_blk_driver_wait_ready(drv, 5000), 0);

	/* one read in flight; the device (by hand) never completes it */
	CHECK_EQ(vop_blk_req_get(drv, 1, &r), 0);
	CHECK_EQ(vop_blk_req_submit(drv, r, VOP_BLK_T_IN, 0, 4096, on_done, NULL), 0);
	t_sleep_ms(20);
	CHECK_EQ(atomic_load(&done_status), -1);

	/* the driver resets the device: the request fails now ... */
	CHECK_EQ(vop_link_reset_device(h.l, 1), 0);
	CHECK(T_WAIT_UNTIL(atomic_load(&done_status) >= 0, 5000));
	CHECK_EQ(atomic_load(&done_status), VOP_BLK_S_IOERR);
	/* ... but its slot is parked while the device has not acked */
	CHECK(pthread_create(&th, NULL, taker, NULL) == 0);
	t_sleep_ms(150);
	CHECK_EQ(atomic_load(&got_slot), 0);
	/* the device acks (its rings quiesced): the slot is free again */
	t_hand_device_handshake(w1, &di);
	CHECK(T_WAIT_UNTIL(atomic_load(&got_slot) == 1, 5000));
	pthread_join(th, NULL);
	CHECK_EQ(vop_blk_driver_wait_ready(drv, 5000), 0);

	t_host_close(&h);
	vop_blk_driver_destroy(drv);
	t_host_free(&h);
	vop_window_close(w1);
	vop_window_close(w0);
	printf("PASS dev-blk-driver-quarantine\n");
	return T_PASS;
}
