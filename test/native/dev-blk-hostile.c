/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk device role against a hostile driver: out-of-range sectors
 * (including sector * 512 overflow), lengths that are not a multiple of
 * 512, short headers, no room for the status byte, unknown types, bad
 * discard segments, writes to a read-only disk. Each gets IOERR/UNSUPP
 * (or a zero-length completion when there is no status byte), is counted
 * in bad_requests, and the queue keeps serving good requests afterwards.
 * Finally the driver breaks the ring itself (avail index jump): the queue
 * is marked broken with that reason and the backend stays up, quiet.
 */
#include <fcntl.h>

#include "devhand.h"
#include "vop/dev_blk.h"

#define DISK_BYTES (1u << 20)

struct drv {
	struct vop_window *w;
	struct vop_dev_info di;
	struct vop_devq q;
	uint8_t *buf;     /* scratch in the pool */
	uint64_t buf_off; /* its peer address */
};

/* Post one chain of sg (n_out readable first), kick, wait for completion. */
static uint32_t submit(struct drv *d, struct vop_sg *sg, unsigned n_out, unsigned n_in)
{
	void *tok;
	uint32_t len = 0;
	uint64_t end = t_now_ms() + 5000;
	int rc = vop_vq_add(&d->q.vq, sg, n_out, n_in, (void *)1);

	CHECK(rc >= 0);
	if (vop_vq_kick_prepare(&d->q.vq) > 0)
		vop_window_notify_peer(d->w);
	vop_window_notify_peer(d->w);
	for (;;) {
		rc = vop_vq_get_used(&d->q.vq, &tok, &len);
		CHECK(rc >= 0);
		if (rc == 1)
			return len;
		CHECK(t_now_ms() < end);
		t_sleep_ms(1);
	}
}

/* A request: header at buf, data at buf+4096, status at buf+8191. */
static uint8_t req(struct drv *d, uint32_t type, uint64_t sector, uint32_t hdr_len, uint32_t data_len,
		   bool data_in, bool with_status, uint32_t *used)
{
	struct vop_blk_outhdr h = { type, 0, sector };
	struct vop_sg sg[3];
	unsigned n_out = 0, n_in = 0;

	memcpy(d->buf, &h, sizeof(h));
	d->buf[8191] = 0xee;
	sg[n_out++] = (struct vop_sg){ d->buf_off, hdr_len };
	if (data_len && !data_in)
		sg[n_out++] = (struct vop_sg){ d->buf_off + 4096, data_len };
	if (data_len && data_in)
		sg[n_out + n_in++] = (struct vop_sg){ d->buf_off + 4096, data_len };
	if (with_status)
		sg[n_out + n_in++] = (struct vop_sg){ d->buf_off + 8191, 1 };
	*used = submit(d, sg, n_out, n_in);
	return d->buf[8191];
}

int main(void)
{
	struct vop_window *w0, *w1;
	struct t_host host;
	struct vop_blk_device *dev;
	struct vop_blk_device_config dc;
	struct vop_dev_spec spec;
	struct vop_blk_stats st;
	struct drv d;
	struct vop_blk_dwz_seg seg;
	char path[256];
	uint64_t feat;
	uint32_t used;

	t_disk(path, sizeof(path), "blkdisk", DISK_BYTES);
	vop_blk_spec(&spec, 1, 1, 8, 64 * 1024, false);
	t_mem_windows(16u << 20, &spec, &w0, &w1);
	t_host_open(&host, w1);
	memset(&dc, 0, sizeof(dc));
	dc.path = path;
	CHECK(vop_blk_device_create(host.ctx, 1, &dc, &dev) == 0);
	t_host_serve(&host, 1, VOP_ROLE_DEVICE, &vop_blk_device_ops, dev);

	/* driver side by hand */
	memset(&d, 0, sizeof(d));
	d.w = w0;
	CHECK(vop_devtab_find(w0, 1, &d.di) == 0);
	feat = t_hand_driver_reset(w0, &d.di, ~0ull);
	CHECK(vop_devq_init(w0, &d.di, 0, true, feat, &d.q) == 0);
	memset(d.q.pool + d.q.pool_size - vop_inflight_bytes(d.q.num), 0, vop_inflight_bytes(d.q.num));
	d.buf = d.q.pool;
	d.buf_off = d.q.pool_off;
	t_hand_driver_ok(w0, &d.di, feat);
	CHECK(T_WAIT_UNTIL(t_host_running(&host, 1), 5000));

	/* good write + read first */
	memset(d.buf + 4096, 0x5a, 1024);
	CHECK_EQ(req(&d, VOP_BLK_T_OUT, 2, 16, 1024, false, true, &used), VOP_BLK_S_OK);
	memset(d.buf + 4096, 0, 1024);
	CHECK_EQ(req(&d, VOP_BLK_T_IN, 2, 16, 1024, true, true, &used), VOP_BLK_S_OK);
	CHECK_EQ(used, 1025);
	CHECK(d.buf[4096] == 0x5a && d.buf[4096 + 1023] == 0x5a);

	/* out of range: first sector past the end, a range crossing it, overflow */
	CHECK_EQ(req(&d, VOP_BLK_T_IN, DISK_BYTES / 512, 16, 512, true, true, &used), VOP_BLK_S_IOERR);
	CHECK_EQ(req(&d, VOP_BLK_T_OUT, DISK_BYTES / 512 - 1, 16, 1024, false, true, &used), VOP_BLK_S_IOERR);
	CHECK_EQ(req(&d, VOP_BLK_T_IN, UINT64_MAX / 512 + 1, 16, 512, true, true, &used), VOP_BLK_S_IOERR);
	CHECK_EQ(req(&d, VOP_BLK_T_OUT, UINT64_MAX, 16, 512, false, true, &used), VOP_BLK_S_IOERR);
	/* wrong lengths */
	CHECK_EQ(req(&d, VOP_BLK_T_IN, 0, 16, 100, true, true, &used), VOP_BLK_S_IOERR);
	CHECK_EQ(req(&d, VOP_BLK_T_OUT, 0, 16, 513, false, true, &used), VOP_BLK_S_IOERR);
	CHECK_EQ(req(&d, VOP_BLK_T_IN, 0, 8, 512, true, true, &used), VOP_BLK_S_IOERR); /* short header */
	/* no status byte: a read whose only writable buffer is the data (len 512) */
	{
		struct vop_blk_outhdr h = { VOP_BLK_T_OUT, 0, 0 };
		struct vop_sg sg[2] = { { d.buf_off, 16 }, { d.buf_off + 4096, 512 } };

		memcpy(d.buf, &h, sizeof(h));
		CHECK_EQ(submit(&d, sg, 2, 0), 0);
	}
	/* unknown type */
	CHECK_EQ(req(&d, 99, 0, 16, 0, false, true, &used), VOP_BLK_S_UNSUPP);
	/* discard: segment out of range, bad flags, length not a multiple of 16 */
	seg = (struct vop_blk_dwz_seg){ DISK_BYTES / 512 - 1, 2, 0 };
	memcpy(d.buf + 4096, &seg, sizeof(seg));
	CHECK_EQ(req(&d, VOP_BLK_T_DISCARD, 0, 16, 16, false, true, &used), VOP_BLK_S_IOERR);
	seg = (struct vop_blk_dwz_seg){ 0, 1, 0x80 };
	memcpy(d.buf + 4096, &seg, sizeof(seg));
	CHECK_EQ(req(&d, VOP_BLK_T_WRITE_ZEROES, 0, 16, 16, false, true, &used), VOP_BLK_S_IOERR);
	CHECK_EQ(req(&d, VOP_BLK_T_DISCARD, 0, 16, 10, false, true, &used), VOP_BLK_S_IOERR);

	/* still serving: get-id, flush, write-zeroes, read back */
	CHECK_EQ(req(&d, VOP_BLK_T_GET_ID, 0, 16, 20, true, true, &used), VOP_BLK_S_OK);
	CHECK(memcmp(d.buf + 4096, "vop-1", 5) == 0);
	CHECK_EQ(req(&d, VOP_BLK_T_FLUSH, 0, 16, 0, false, true, &used), VOP_BLK_S_OK);
	seg = (struct vop_blk_dwz_seg){ 2, 1, 0 };
	memcpy(d.buf + 4096, &seg, sizeof(seg));
	CHECK_EQ(req(&d, VOP_BLK_T_WRITE_ZEROES, 0, 16, 16, false, true, &used), VOP_BLK_S_OK);
	CHECK_EQ(req(&d, VOP_BLK_T_IN, 2, 16, 1024, true, true, &used), VOP_BLK_S_OK);
	CHECK(d.buf[4096] == 0 && d.buf[4096 + 511] == 0 && d.buf[4096 + 512] == 0x5a);

	vop_blk_device_stats(dev, &st);
	CHECK_EQ(st.bad_requests, 12);
	CHECK_EQ(st.unsupp, 1);
	CHECK(d.q.vq.broken == 0);

	/* a driver that breaks the ring itself: avail->idx jumps past the ring */
	{
		struct vop_vq_stats vs;
		uint64_t end2 = t_now_ms() + 5000;

		((struct vop_vring_avail *)d.q.vq.avail)->idx = (uint16_t)(d.q.vq.avail_published + d.q.num + 5);
		vop_window_notify_peer(w0);
		for (;;) {
			if (vop_link_queue_stats(host.l, 1, 0, &vs) == 0 && vs.c[VOP_VQS_BROKEN])
				break;
			CHECK(t_now_ms() < end2);
			t_sleep_ms(2);
		}
		CHECK_EQ(vs.c[VOP_VQS_BROKEN], VOP_VQ_AVAIL_IDX_JUMP);
		t_sleep_ms(20);
		/* the backend stays, quiet: the link reports the queue and asks for a reset */
		CHECK(t_evlog_has(&host.ev, VOP_EV_QUEUE_BROKEN, VOP_VQ_AVAIL_IDX_JUMP, NULL));
		CHECK(!t_evlog_has(&host.ev, VOP_EV_BACKEND_FAILED, -1, NULL));
		CHECK(__atomic_load_n(&d.di.entry->sides[1].status, __ATOMIC_ACQUIRE) & VOP_STATUS_DEVICE_NEEDS_RESET);
	}

	/* the driver resets the device: it serves again on clean rings */
	vop_devq_destroy(&d.q);
	feat = t_hand_driver_reset(w0, &d.di, ~0ull);
	CHECK(vop_devq_init(w0, &d.di, 0, true, feat, &d.q) == 0);
	memset(d.q.pool + d.q.pool_size - vop_inflight_bytes(d.q.num), 0, vop_inflight_bytes(d.q.num));
	t_hand_driver_ok(w0, &d.di, feat);
	CHECK(T_WAIT_UNTIL(t_host_running(&host, 1), 5000));
	CHECK_EQ(req(&d, VOP_BLK_T_IN, 2, 16, 1024, true, true, &used), VOP_BLK_S_OK);
	{
		struct vop_vq_stats vs;

		CHECK_EQ(vop_link_queue_stats(host.l, 1, 0, &vs), 0);
		CHECK_EQ(vs.c[VOP_VQS_BROKEN], 0);
		CHECK_EQ(vs.c[VOP_VQS_RESETS], 1);
		CHECK(vs.c[VOP_VQS_ERR_BASE + VOP_VQ_AVAIL_IDX_JUMP] == 1);
	}

	t_host_close(&host);
	vop_blk_device_destroy(dev);
	t_host_free(&host);
	vop_devq_destroy(&d.q);
	vop_window_close(w1);
	vop_window_close(w0);
	unlink(path);
	printf("PASS dev-blk-hostile\n");
	return T_PASS;
}
