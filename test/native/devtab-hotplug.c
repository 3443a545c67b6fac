/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device table: publish/find contracts, refusal of bad windows, and hot
 * unplug by tombstone while another device keeps moving data; the slot is
 * then reused by a new device.
 */
#include "helpers.h"

int main(void)
{
	struct t_pair p;
	struct vop_dev_spec spec;
	struct vop_dev_info info;
	struct vop_pipe_config drv = t_pipe_cfg(64, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	struct vop_pipe_config dev = t_pipe_cfg(64, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);
	struct vop_pipe_stats s;
	struct vop_xport *x;
	struct vop_window *w;
	uint64_t before;
	int slot2;

	t_pair_open(&p, "hotplug", 8u << 20, 20000);
	t_pair_run_pipe(&p, 1, 128, 64);
	vop_pipe_spec(&spec, 2, 1, 64, 256, 1ull << VOP_F_EVENT_IDX);
	CHECK_EQ(vop_devtab_publish(p.w1, &spec), -EPERM); /* only the table owner publishes */
	slot2 = vop_devtab_publish(p.w0, &spec);
	CHECK(slot2 > 0);
	CHECK_EQ(vop_devtab_publish(p.w0, &spec), -EEXIST);
	CHECK_EQ(vop_devtab_find(p.w1, 2, &info), 0);
	CHECK_EQ(info.device_type, VOP_DEVTYPE_BYTE_PIPE);
	CHECK(info.features_offered & (1ull << VOP_F_VERSION_1));
	CHECK_EQ(vop_devtab_find(p.w1, 77, &info), -ENOENT);
	CHECK_EQ(vop_link_attach_pipe(p.l0, 2, VOP_ROLE_DEVICE, &dev), -EINVAL); /* wrong side */
	CHECK_EQ(vop_link_attach_pipe(p.l0, 2, VOP_ROLE_DRIVER, &drv), 0);
	CHECK_EQ(vop_link_attach_pipe(p.l0, 2, VOP_ROLE_DRIVER, &drv), -EEXIST);
	CHECK_EQ(vop_link_attach_pipe(p.l1, 2, VOP_ROLE_DEVICE, &dev), 0);
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 2) > 10000 && t_rx(p.l1, 2) > 10000, 10000));

	/* Hot unplug dev 2: both sides see DEVICE_REMOVED, dev 1 keeps going. */
	CHECK_EQ(vop_devtab_remove(p.w0, 2), 0);
	CHECK_EQ(vop_devtab_remove(p.w0, 2), -ENOENT);
	CHECK(T_WAIT_UNTIL(t_evlog_has(&p.ev0, VOP_EV_DEVICE_REMOVED, -1, NULL) &&
				   t_evlog_has(&p.ev1, VOP_EV_DEVICE_REMOVED, -1, NULL),
			   5000));
	CHECK_EQ(vop_link_pipe_stats(p.l1, 2, &s), 0);
	CHECK_EQ(s.state, VOP_DEVRUN_REMOVED);
	CHECK_EQ(vop_devtab_find(p.w1, 2, &info), -ENOENT);
	before = t_rx(p.l1, 1);
	CHECK(T_WAIT_UNTIL(t_rx(p.l1, 1) > before + 10000, 5000));
	CHECK_EQ(vop_link_detach(p.l0, 2), 0);
	CHECK_EQ(vop_link_detach(p.l1, 2), 0);
	CHECK_EQ(vop_link_detach(p.l1, 2), -ENOENT);

	/* The tombstoned slot is reused by a new device. */
	vop_pipe_spec(&spec, 3, 1, 64, 256, 1ull << VOP_F_EVENT_IDX);
	CHECK_EQ(vop_devtab_publish(p.w0, &spec), slot2);
	CHECK_EQ(vop_link_attach_pipe(p.l0, 3, VOP_ROLE_DRIVER, &drv), 0);
	CHECK_EQ(vop_link_attach_pipe(p.l1, 3, VOP_ROLE_DEVICE, &dev), 0);
	CHECK(T_WAIT_UNTIL(t_rx(p.l0, 3) > 10000 && t_rx(p.l1, 3) > 10000, 10000));
	CHECK(!t_evlog_has(&p.ev0, VOP_EV_QUEUE_BROKEN, -1, NULL));
	CHECK(!t_evlog_has(&p.ev1, VOP_EV_QUEUE_BROKEN, -1, NULL));

	/* A window with a wrong magic or version is refused; an unpublished one is -EAGAIN. */
	CHECK_EQ(vop_shm_open(p.path, &x), 0);
	p.w0->hdr->version_major = 99;
	CHECK_EQ(vop_window_attach(x, &w), -EPROTO);
	p.w0->hdr->version_major = VOP_LAYOUT_VERSION_MAJOR;
	p.w0->hdr->magic = 0;
	CHECK_EQ(vop_window_attach(x, &w), -EAGAIN);
	p.w0->hdr->magic = VOP_WIN_MAGIC;
	p.w0->hdr->data_size = UINT64_MAX;
	CHECK_EQ(vop_window_attach(x, &w), -EPROTO);
	vop_xport_destroy(x);
	t_pair_close(&p);
	return T_PASS;
}
