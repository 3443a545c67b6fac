/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-console device role against a driver that posts a zero-length
 * receive buffer: the receive queue is marked broken with reason zero_len
 * (counted, no crash, nothing written anywhere), and the transmit queue
 * keeps carrying console output to the log.
 */
#include <fcntl.h>

#include "devhand.h"
#include "vop/dev_console.h"

int main(void)
{
	struct vop_window *w0, *w1;
	struct t_host host;
	struct vop_console *con;
	struct vop_console_config cc;
	struct vop_dev_spec spec;
	struct vop_dev_info di;
	struct vop_devq rxq, txq;
	struct vop_vq_stats vs;
	struct vop_console_stats st;
	char log[256], got[16];
	uint64_t feat, end;
	int head, fd;

	t_path(log, sizeof(log), "conlog");
	vop_console_spec(&spec, 3, 1, 8);
	t_mem_windows(4u << 20, &spec, &w0, &w1);
	t_host_open(&host, w1);
	memset(&cc, 0, sizeof(cc));
	cc.log_path = log;
	CHECK(vop_console_device_create(host.ctx, 3, &cc, &con) == 0);
	t_host_serve(&host, 3, VOP_ROLE_DEVICE, &vop_console_ops, con);

	CHECK(vop_devtab_find(w0, 3, &di) == 0);
	feat = t_hand_driver_reset(w0, &di, ~0ull);
	CHECK(vop_devq_init(w0, &di, 0, true, feat, &rxq) == 0);
	CHECK(vop_devq_init(w0, &di, 1, true, feat, &txq) == 0);
	{
		struct vop_sg sg = { rxq.pool_off, 1 };

		head = vop_vq_add(&rxq.vq, &sg, 0, 1, (void *)1);
		CHECK(head >= 0);
		/* the hostile part: the shared descriptor now says length 0 */
		((struct vop_vring_desc *)rxq.vq.desc)[head].len = 0;
		vop_vq_kick_prepare(&rxq.vq);
	}
	t_hand_driver_ok(w0, &di, feat);
	{
		struct vop_sg sg = { txq.pool_off, 5 };

		memcpy(txq.pool, "hello", 5);
		CHECK(vop_vq_add(&txq.vq, &sg, 1, 0, (void *)1) >= 0);
		vop_vq_kick_prepare(&txq.vq);
		vop_window_notify_peer(w0);
	}
	end = t_now_ms() + 5000;
	for (;;) {
		vop_console_stats(con, &st);
		if (st.log_bytes >= 5 && vop_link_queue_stats(host.l, 3, 0, &vs) == 0 && vs.c[VOP_VQS_BROKEN])
			break;
		CHECK(t_now_ms() < end);
		t_sleep_ms(2);
	}
	CHECK_EQ(vs.c[VOP_VQS_BROKEN], VOP_VQ_ZERO_LEN);
	CHECK_EQ(vs.c[VOP_VQS_ERR_BASE + VOP_VQ_ZERO_LEN], 1);
	CHECK_EQ(st.in_bytes, 0);
	fd = open(log, O_RDONLY);
	CHECK(fd >= 0 && read(fd, got, sizeof(got)) == 5 && memcmp(got, "hello", 5) == 0);
	close(fd);
	CHECK(t_evlog_has(&host.ev, VOP_EV_QUEUE_BROKEN, VOP_VQ_ZERO_LEN, NULL));
	t_host_close(&host);
	vop_console_destroy(con);
	t_host_free(&host);
	vop_devq_destroy(&rxq);
	vop_devq_destroy(&txq);
	vop_window_close(w1);
	vop_window_close(w0);
	unlink(log);
	printf("PASS dev-console-zero-len\n");
	return T_PASS;
}
