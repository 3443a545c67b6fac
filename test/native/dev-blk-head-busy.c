/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hostile driver: a head made available again while the device still holds
 * it (a blk write in flight in an I/O thread). The device must not run the
 * chain twice or hand its buffers to two requests: the request queue breaks
 * with reason head_busy, the write in flight completes into nothing (the
 * ring is broken), no thread touches the window after the reset, and a
 * byte-pipe link in the same process keeps moving verified data.
 */
#include <fcntl.h>

#include "devhand.h"
#include "vop/dev_blk.h"

#define DISK_BYTES (1u << 20)

int main(void)
{
	struct vop_window *w0, *w1;
	struct t_host host;
	struct t_pair good;
	struct vop_blk_device *dev;
	struct vop_blk_device_config dc;
	struct vop_dev_spec spec;
	struct vop_dev_info di;
	struct vop_devq q;
	struct vop_vq_stats vs;
	struct vop_blk_outhdr hdr = { VOP_BLK_T_OUT, 0, 0 };
	struct vop_vring_avail *avail;
	char path[256];
	uint64_t feat, before;
	int head;

	t_pair_open(&good, "busy-good", 4u << 20, 20000);
	t_pair_run_pipe(&good, 1, 256, 64);
	t_disk(path, sizeof(path), "busydisk", DISK_BYTES);
	vop_blk_spec(&spec, 1, 1, 8, 64 * 1024, false);
	t_mem_windows(16u << 20, &spec, &w0, &w1);
	setenv("VOP_BLK_TEST_DELAY_US", "300000", 1); /* keep the write in flight */
	t_host_open(&host, w1);
	memset(&dc, 0, sizeof(dc));
	dc.path = path;
	CHECK(vop_blk_device_create(host.ctx, 1, &dc, &dev) == 0);
	unsetenv("VOP_BLK_TEST_DELAY_US");
	t_host_serve(&host, 1, VOP_ROLE_DEVICE, &vop_blk_device_ops, dev);

	/* driver by hand: handshake, then one write, posted twice with the same head */
	CHECK(vop_devtab_find(w0, 1, &di) == 0);
	feat = t_hand_driver_reset(w0, &di, ~0ull);
	CHECK(vop_devq_init(w0, &di, 0, true, feat, &q) == 0);
	memset(q.pool + q.pool_size - vop_inflight_bytes(q.num), 0, vop_inflight_bytes(q.num));
	t_hand_driver_ok(w0, &di, feat);
	CHECK(T_WAIT_UNTIL(t_host_running(&host, 1), 5000));
	memcpy(q.pool, &hdr, sizeof(hdr));
	memset(q.pool + 4096, 0x5a, 512);
	{
		struct vop_sg sg[3] = { { q.pool_off, 16 }, { q.pool_off + 4096, 512 }, { q.pool_off + 8191, 1 } };

		head = vop_vq_add(&q.vq, sg, 2, 1, (void *)1);
		CHECK(head >= 0);
	}
	vop_vq_kick_prepare(&q.vq);
	vop_window_notify_peer(w0);
	t_sleep_ms(50); /* popped: in flight in an I/O thread for 300 ms */
	avail = (struct vop_vring_avail *)q.vq.avail;
	avail->ring[q.vq.avail_shadow & q.vq.mask] = (uint16_t)head; /* the same head again */
	__atomic_store_n(&avail->idx, (uint16_t)(q.vq.avail_shadow + 1), __ATOMIC_RELEASE);
	vop_window_notify_peer(w0);

	CHECK(T_WAIT_UNTIL(t_evlog_has(&host.ev, VOP_EV_QUEUE_BROKEN, VOP_VQ_HEAD_BUSY, NULL), 5000));
	CHECK_EQ(vop_link_queue_stats(host.l, 1, 0, &vs), 0);
	CHECK_EQ(vs.c[VOP_VQS_BROKEN], VOP_VQ_HEAD_BUSY);
	CHECK_EQ(vs.c[VOP_VQS_ERR_BASE + VOP_VQ_HEAD_BUSY], 1);
	/* the device asks for a reset in its own block of the entry (side 1) */
	CHECK(__atomic_load_n(&di.entry->sides[1].status, __ATOMIC_ACQUIRE) & VOP_STATUS_DEVICE_NEEDS_RESET);
	/* the other link is not disturbed */
	before = t_rx(good.l1, 1);
	CHECK(T_WAIT_UNTIL(t_rx(good.l1, 1) > before + 1000, 5000));
	CHECK(!t_evlog_has(&good.ev1, VOP_EV_QUEUE_BROKEN, -1, NULL));

	/*
	 * A reset waits for the write in flight before the device acks it, but
	 * without holding up the link's control calls (a hung disk must not
	 * stall the agent): the ack comes only after the write's delay, while
	 * state and counters answer at once meanwhile.
	 */
	vop_devq_destroy(&q);
	{
		struct vop_dev_side *drv = vop_devtab_side_claim(&di, 0), *devb = &di.entry->sides[1];
		uint32_t req = __atomic_load_n(&devb->reset, __ATOMIC_ACQUIRE) + 1;
		uint64_t t0;

		__atomic_store_n(&drv->status, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&drv->reset, req, __ATOMIC_RELEASE);
		vop_window_notify_peer(w0);
		t_sleep_ms(20);
		CHECK(__atomic_load_n(&devb->reset, __ATOMIC_ACQUIRE) != req); /* the write still runs */
		t0 = t_now_ms();
		CHECK(vop_link_dev_state(host.l, 1) >= 0);
		CHECK_EQ(vop_link_queue_stats(host.l, 1, 0, &vs), 0);
		CHECK(t_now_ms() - t0 < 50);
		CHECK(T_WAIT_UNTIL(__atomic_load_n(&devb->reset, __ATOMIC_ACQUIRE) == req, 5000));
	}
	feat = t_hand_driver_reset(w0, &di, ~0ull);
	CHECK_EQ(__atomic_load_n(&((struct vop_vring_used *)vop_window_ptr(w0, di.queues[0].used_off, 4))->idx,
				 __ATOMIC_ACQUIRE),
		 0);
	CHECK(vop_devq_init(w0, &di, 0, true, feat, &q) == 0);
	memset(q.pool + q.pool_size - vop_inflight_bytes(q.num), 0, vop_inflight_bytes(q.num));
	t_hand_driver_ok(w0, &di, feat);
	CHECK(T_WAIT_UNTIL(t_host_running(&host, 1), 5000));
	CHECK_EQ(vop_link_queue_stats(host.l, 1, 0, &vs), 0);
	CHECK_EQ(vs.c[VOP_VQS_BROKEN], 0);

	t_host_close(&host);
	vop_blk_device_destroy(dev);
	t_host_free(&host);
	vop_devq_destroy(&q);
	vop_window_close(w1);
	vop_window_close(w0);
	t_pair_close(&good);
	unlink(path);
	printf("PASS dev-blk-head-busy\n");
	return T_PASS;
}
