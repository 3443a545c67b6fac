/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Split virtqueue in one thread, both roles on private memory: chains in
 * every shape, index wraparound past 2^16, EVENT_IDX suppression math,
 * HEAD_BUSY (a head made available twice), and -EIO after breaking.
 */
#include "helpers.h"

#define N 8u

static _Alignas(64) uint8_t ring_mem[4096];
static _Alignas(64) uint8_t data[N * VOP_INDIRECT_MAX * 16 + 65536];

static void setup(struct vop_vq *drv, struct vop_vq *dev, struct vop_region_table *rt,
		  uint64_t features, bool indirect)
{
	struct vop_vq_config c;

	memset(ring_mem, 0, sizeof(ring_mem));
	vop_region_table_init(rt);
	CHECK_EQ(vop_region_add(rt, 0x100000, sizeof(data), data, VOP_PROT_READ | VOP_PROT_WRITE), 0);
	memset(&c, 0, sizeof(c));
	c.num = N;
	c.features = features;
	c.desc = ring_mem;
	c.avail = ring_mem + 1024;
	c.used = ring_mem + 2048;
	c.regions = rt;
	c.indirect_local = data;
	c.indirect_peer_addr = 0x100000;
	c.prefer_indirect = indirect;
	CHECK_EQ(vop_vq_init_driver(drv, &c), 0);
	CHECK_EQ(vop_vq_init_device(dev, &c), 0);
}

int main(void)
{
	struct vop_vq drv, dev;
	struct vop_region_table rt;
	struct vop_chain c;
	struct vop_sg sg[3];
	uint64_t feats = (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC);
	uint32_t len, i;
	void *tok;
	int mode;

	/* need_event: the VIRTIO formula. */
	CHECK(vop_vring_need_event(5, 6, 5));
	CHECK(!vop_vring_need_event(5, 5, 4));
	CHECK(vop_vring_need_event(0xffff, 0, 0xfffe)); /* across the wrap */
	CHECK(!vop_vring_need_event(10, 20, 15));

	for (mode = 0; mode < 2; mode++) {
		setup(&drv, &dev, &rt, feats, mode == 1);
		uint64_t base = 0x100000 + N * VOP_INDIRECT_MAX * 16;
		for (i = 0; i < 70000; i++) { /* > 2^16: indices wrap */
			sg[0].addr = base;
			sg[0].len = 10;
			sg[1].addr = base + 100;
			sg[1].len = 20;
			sg[2].addr = base + 200;
			sg[2].len = 30;
			CHECK(vop_vq_add(&drv, sg, 1, 2, (void *)(uintptr_t)(i + 1)) >= 0);
			CHECK(vop_vq_kick_prepare(&drv) >= 0);
			CHECK_EQ(vop_vq_pop(&dev, &c), 1);
			CHECK_EQ(c.n_out, 1);
			CHECK_EQ(c.n_in, 2);
			CHECK_EQ(c.out_bytes, 10);
			CHECK_EQ(c.in_bytes, 50);
			CHECK(c.iov[1].base == data + N * VOP_INDIRECT_MAX * 16 + 100);
			CHECK_EQ(vop_vq_push(&dev, c.head, 50), 0);
			CHECK_EQ(vop_vq_push(&dev, c.head, 1), -EINVAL); /* not in flight any more */
			CHECK(vop_vq_publish_used(&dev) >= 0);
			CHECK_EQ(vop_vq_get_used(&drv, &tok, &len), 1);
			CHECK_EQ((uintptr_t)tok, i + 1);
			CHECK_EQ(len, 50);
			CHECK_EQ(vop_vq_get_used(&drv, &tok, &len), 0);
		}
		CHECK_EQ(vop_vq_num_free(&drv), N);
		/* EVENT_IDX: device asleep at last_avail -> next kick notifies, later ones don't. */
		CHECK_EQ(vop_vq_enable_notify(&dev), 0);
		sg[0].len = 10;
		CHECK(vop_vq_add(&drv, sg, 1, 0, (void *)1) >= 0);
		CHECK_EQ(vop_vq_kick_prepare(&drv), 1);
		CHECK(vop_vq_add(&drv, sg, 1, 0, (void *)2) >= 0);
		CHECK_EQ(vop_vq_kick_prepare(&drv), 0);
		vop_vq_destroy(&drv);
		vop_vq_destroy(&dev);
	}

	/* Full ring: -ENOSPC, then HEAD_BUSY when the driver re-offers a popped head. */
	setup(&drv, &dev, &rt, feats, false);
	sg[0].addr = 0x100000 + 60000;
	sg[0].len = 8;
	for (i = 0; i < N; i++)
		CHECK(vop_vq_add(&drv, sg, 1, 0, (void *)(uintptr_t)(i + 1)) >= 0);
	CHECK_EQ(vop_vq_add(&drv, sg, 1, 0, (void *)99), -ENOSPC);
	CHECK_EQ(vop_vq_add(&drv, sg, 0, 0, (void *)99), -EINVAL);
	CHECK_EQ(vop_vq_add(&drv, sg, 1, 0, NULL), -EINVAL);
	vop_vq_kick_prepare(&drv);
	CHECK_EQ(vop_vq_pop(&dev, &c), 1);
	/* Hostile driver: the next avail slot names the head just popped. */
	((struct vop_vring_avail *)(void *)(ring_mem + 1024))->ring[1] = c.head;
	CHECK_EQ(vop_vq_pop(&dev, &c), -EPROTO);
	CHECK_EQ(dev.broken, VOP_VQ_HEAD_BUSY);
	CHECK_EQ(vop_vq_pop(&dev, &c), -EIO);
	CHECK_EQ(vop_vq_publish_used(&dev), -EIO);
	CHECK_EQ(vop_vq_fail(&dev, VOP_VQ_ZERO_LEN), -EIO); /* first reason wins */
	CHECK_EQ(dev.broken, VOP_VQ_HEAD_BUSY);
	vop_vq_reset_device(&dev);
	CHECK_EQ(dev.broken, 0);
	CHECK_EQ(dev.stats.c[VOP_VQS_ERR_BASE + VOP_VQ_HEAD_BUSY], 1);
	CHECK(strcmp(vop_vq_reason_name(VOP_VQ_HEAD_BUSY), "head_busy") == 0);
	CHECK(strcmp(vop_vq_reason_name(999), "unknown") == 0);
	vop_vq_destroy(&drv);
	vop_vq_destroy(&dev);
	return T_PASS;
}
