/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk in-flight journal: a device process "died" at the three
 * awkward moments at once, and the restarted device must complete every
 * request exactly once.
 *
 * The driver posts three writes A, B, C (avail 0, 1, 2). The journal is
 * written as a dead device instance left it:
 *   A: popped, executed, pushed and PUBLISHED (used->idx = 1), but the
 *      process died before clearing its in-flight flag (J2 done, J3 not);
 *   B: popped and journalled (last_avail = 2), never completed;
 *   C: flag and avail_pos written, but the process died before storing
 *      last_avail (J1 incomplete).
 * The restarted device must: not execute A again (its data must not reach
 * the file: the dead instance "completed" it without writing), re-execute
 * B from the journal, pop C normally from the avail ring, and publish used
 * entries for B and C only (used->idx 3). The driver never reset the
 * device (it ran with the dead instance), so the restarted device's link
 * must resume the rings instead of asking for a reset.
 */
#include <fcntl.h>

#include "devhand.h"
#include "vop/dev_blk.h"

#define DISK (1u << 20)

int main(void)
{
	struct vop_xport *x0, *x1;
	struct vop_window *w0, *w1;
	struct t_host host;
	struct vop_blk_device *dev;
	struct vop_blk_device_config dc;
	struct vop_dev_spec spec;
	struct vop_blk_stats st;
	struct vop_dev_info di;
	struct vop_devq q;
	struct vop_inflight_hdr *jh;
	struct vop_inflight_desc *jd;
	struct vop_vring_used *used;
	int heads[3], fd, i;
	uint64_t feat, end;
	char path[256];
	uint8_t buf[4096];

	t_path(path, sizeof(path), "jdisk");
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, DISK) == 0);
	CHECK(vop_shm_create(NULL, 16u << 20, &x0) == 0);
	CHECK(vop_window_create(x0, NULL, &w0) == 0);
	vop_blk_spec(&spec, 1, 1, 8, 64 * 1024, false);
	CHECK(vop_devtab_publish(w0, &spec) >= 0);

	/* driver: three writes of 512 bytes, A at sector 0, B at 8, C at 16 */
	CHECK(vop_devtab_find(w0, 1, &di) == 0);
	feat = di.features_offered | (1ull << VOP_F_VERSION_1); /* negotiated with the dead instance */
	CHECK(feat & (1ull << VOP_F_INFLIGHT));
	CHECK(vop_devq_init(w0, &di, 0, true, feat, &q) == 0);
	memset(q.pool + q.pool_size - vop_inflight_bytes(q.num), 0, vop_inflight_bytes(q.num));
	for (i = 0; i < 3; i++) {
		uint8_t *slot = q.pool + (uint64_t)i * 4096;
		struct vop_blk_outhdr h = { VOP_BLK_T_OUT, 0, (uint64_t)i * 8 };
		struct vop_sg sg[3] = { { q.pool_off + (uint64_t)i * 4096, 16 },
					{ q.pool_off + (uint64_t)i * 4096 + 512, 512 },
					{ q.pool_off + (uint64_t)i * 4096 + 1024, 1 } };

		memcpy(slot, &h, sizeof(h));
		memset(slot + 512, 'A' + i, 512);
		slot[1024] = 0xee;
		heads[i] = vop_vq_add(&q.vq, sg, 2, 1, (void *)(uintptr_t)(i + 1));
		CHECK(heads[i] >= 0);
	}
	vop_vq_kick_prepare(&q.vq);
	t_hand_driver_ok(w0, &di, feat);

	/* the journal and used ring as the dead device instance left them */
	used = vop_window_ptr(w0, di.queues[0].used_off, vop_vring_used_bytes(di.queues[0].size));
	jh = (struct vop_inflight_hdr *)(void *)(q.pool + q.pool_size - vop_inflight_bytes(q.num));
	jd = (struct vop_inflight_desc *)(void *)(jh + 1);
	jh->magic = VOP_INFLIGHT_MAGIC;
	jh->num = q.num;
	jh->counter = 3;
	for (i = 0; i < 3; i++) {
		jd[heads[i]].inflight = 1;
		jd[heads[i]].avail_pos = (uint16_t)i;
		jd[heads[i]].counter = (uint64_t)i + 1;
	}
	jh->last_avail = 2;                    /* C's J1 never finished */
	used->ring[0].id = (uint32_t)heads[0]; /* A completed and published... */
	used->ring[0].len = 1;
	q.pool[1024] = VOP_BLK_S_OK;
	jh->used_pending = 1;
	jh->used_done = 0;                     /* ...but its flag was never cleared */
	used->idx = 1;

	/* the restarted device */
	CHECK(vop_shm_open_fd(x0->fd, &x1) == 0);
	CHECK(vop_window_attach(x1, &w1) == 0);
	t_host_open(&host, w1);
	memset(&dc, 0, sizeof(dc));
	dc.path = path;
	CHECK(vop_blk_device_create(host.ctx, 1, &dc, &dev) == 0);
	t_host_serve(&host, 1, VOP_ROLE_DEVICE, &vop_blk_device_ops, dev);
	vop_window_notify_peer(w0);

	/* the driver reclaims A (published before the crash), then B and C */
	{
		unsigned got = 0, seen[4] = { 0, 0, 0, 0 };
		void *tok;
		uint32_t len;

		end = t_now_ms() + 5000;
		while (got < 3) {
			int rc = vop_vq_get_used(&q.vq, &tok, &len);

			CHECK(rc >= 0);
			if (rc == 1) {
				seen[(uintptr_t)tok]++;
				got++;
				continue;
			}
			CHECK(t_now_ms() < end);
			t_sleep_ms(1);
		}
		CHECK_EQ(seen[1], 1);
		CHECK_EQ(seen[2], 1);
		CHECK_EQ(seen[3], 1);
	}
	CHECK_EQ(__atomic_load_n(&used->idx, __ATOMIC_ACQUIRE), 3);
	for (i = 0; i < 3; i++)
		CHECK_EQ(q.pool[(uint64_t)i * 4096 + 1024], VOP_BLK_S_OK);
	t_sleep_ms(50); /* let any (wrong) extra execution show up */
	vop_blk_device_stats(dev, &st);
	CHECK_EQ(st.writes, 2);    /* B and C, not A */
	CHECK_EQ(st.recovered, 1); /* B from the journal */
	CHECK(pread(fd, buf, 512, 0) == 512);
	for (i = 0; i < 512; i++)
		CHECK(buf[i] == 0); /* A was not executed again */
	CHECK(pread(fd, buf, 512, 8 * 512) == 512 && buf[0] == 'B' && buf[511] == 'B');
	CHECK(pread(fd, buf, 512, 16 * 512) == 512 && buf[0] == 'C' && buf[511] == 'C');
	CHECK_EQ(jh->used_done, 3);
	for (i = 0; i < 3; i++)
		CHECK_EQ(jd[heads[i]].inflight, 0);
	CHECK(t_host_running(&host, 1));
	CHECK(!(__atomic_load_n(&di.entry->sides[1].status, __ATOMIC_ACQUIRE) & VOP_STATUS_DEVICE_NEEDS_RESET));

	t_host_close(&host);
	vop_blk_device_destroy(dev);
	t_host_free(&host);
	vop_devq_destroy(&q);
	vop_window_close(w1);
	vop_window_close(w0);
	close(fd);
	unlink(path);
	printf("PASS dev-blk-journal-resume\n");
	return T_PASS;
}
