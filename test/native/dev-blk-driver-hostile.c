/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk driver role (the NBD export's side) against a hostile device:
 * a used element naming a head that is not in flight breaks the ring; the
 * request in flight is failed with IOERR instead of hanging its NBD client,
 * and later requests fail at once.
 */
#include "devhand.h"
#include "vop/dev_blk.h"

static _Atomic int done_status = -1;

static void on_done(void *ctx, struct vop_blk_req *r, unsigned status)
{
	(void)ctx;
	(void)r;
	atomic_store(&done_status, (int)status);
}

int main(void)
{
	struct vop_xport *x0, *x1;
	struct vop_window *w0, *w1;
	struct vop_dev_spec spec;
	struct vop_dev_info di;
	struct vop_blk_config bc;
	struct vop_blk_driver *drv;
	struct vop_blk_req *r;
	struct vop_vring_used *used;
	struct t_host h;
	uint64_t end;

	CHECK(vop_shm_create(NULL, 16u << 20, &x0) == 0);
	CHECK(vop_window_create(x0, NULL, &w0) == 0);
	vop_blk_spec(&spec, 1, 1, 4, 64 * 1024, false);
	CHECK(vop_devtab_publish(w0, &spec) >= 0);

	/* the "device": attach and write a config before the driver starts */
	CHECK(vop_shm_open_fd(x0->fd, &x1) == 0);
	CHECK(vop_window_attach(x1, &w1) == 0);
	CHECK(vop_devtab_find(w1, 1, &di) == 0);
	memset(&bc, 0, sizeof(bc));
	bc.capacity = 2048;
	vop_dev_config_write(&di, &bc, sizeof(bc));

	t_host_open(&h, w0);
	CHECK_EQ(vop_blk_driver_create(h.ctx, 1, 0, &drv), 0);
	t_host_serve(&h, 1, VOP_ROLE_DRIVER, &vop_blk_driver_ops, drv);
	t_hand_device_handshake(w1, &di);
	CHECK_EQ(vop_blk_driver_wait_ready(drv, 5000), 0);
	CHECK_EQ(vop_blk_driver_capacity(drv), 2048ull * 512);

	CHECK(vop_blk_req_get(drv, 1, &r) == 0);
	CHECK(vop_blk_req_submit(drv, r, VOP_BLK_T_IN, 0, 4096, on_done, NULL) == 0);
	t_sleep_ms(50); /* posted */
	used = vop_window_ptr(w1, di.queues[0].used_off, vop_vring_used_bytes(di.queues[0].size));
	used->ring[0].id = 999; /* not a head at all */
	used->ring[0].len = 1;
	__atomic_store_n(&used->idx, 1, __ATOMIC_RELEASE);
	vop_window_notify_peer(w1);
	end = t_now_ms() + 5000;
	while (atomic_load(&done_status) < 0) {
		CHECK(t_now_ms() < end);
		t_sleep_ms(2);
	}
	CHECK_EQ(atomic_load(&done_status), VOP_BLK_S_IOERR);

	/* a later request fails at once */
	atomic_store(&done_status, -1);
	CHECK(vop_blk_req_submit(drv, r, VOP_BLK_T_IN, 0, 4096, on_done, NULL) == 0);
	end = t_now_ms() + 5000;
	while (atomic_load(&done_status) < 0) {
		CHECK(t_now_ms() < end);
		t_sleep_ms(2);
	}
	CHECK_EQ(atomic_load(&done_status), VOP_BLK_S_IOERR);
	vop_blk_req_put(drv, r);

	CHECK(T_WAIT_UNTIL(t_evlog_has(&h.ev, VOP_EV_QUEUE_BROKEN, VOP_VQ_USED_ID_RANGE, NULL), 5000));
	t_host_close(&h);
	vop_blk_driver_destroy(drv);
	t_host_free(&h);
	vop_window_close(w1);
	vop_window_close(w0);
	printf("PASS dev-blk-driver-hostile\n");
	return T_PASS;
}
