/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-console device role, Unix-socket clients: a client that leaves and
 * a new one that connects (and gets the same fd number in the device
 * process) is still heard: input typed after the connection settled reaches
 * the driver's receive queue. (A closed client's watch must not linger in
 * the fd watcher under its old number.)
 */
#include <sys/socket.h>
#include <sys/un.h>

#include "devhand.h"
#include "vop/dev_console.h"

static int connect_unix(const char *path)
{
	struct sockaddr_un a;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	return fd;
}

/* Driver by hand: wait for console input on the receive queue; repost the buffer. */
static void expect_input(struct vop_window *w, struct vop_devq *rxq, const char *want)
{
	uint64_t end = t_now_ms() + 5000;
	size_t n = strlen(want);

	for (;;) {
		void *tok;
		uint32_t len;
		int rc = vop_vq_get_used(&rxq->vq, &tok, &len);

		CHECK(rc >= 0);
		if (rc == 1) {
			struct vop_sg sg = { rxq->pool_off + ((uintptr_t)tok - 1) * 4096, 4096 };

			CHECK(len == n && memcmp(rxq->pool + ((uintptr_t)tok - 1) * 4096, want, n) == 0);
			CHECK(vop_vq_add(&rxq->vq, &sg, 0, 1, tok) >= 0);
			if (vop_vq_kick_prepare(&rxq->vq) > 0)
				vop_window_notify_peer(w);
			return;
		}
		CHECK(t_now_ms() < end);
		t_sleep_ms(2);
	}
}

int main(void)
{
	struct vop_window *w0, *w1;
	struct vop_dev_spec spec;
	struct vop_dev_info di;
	struct vop_console *con;
	struct vop_console_config cc;
	struct vop_devq rxq, txq;
	struct t_host host;
	char sock[256];
	uint64_t feat;
	unsigned i;
	int a, b;

	t_path(sock, sizeof(sock), "consock");
	vop_console_spec(&spec, 3, 1, 8);
	t_mem_windows(4u << 20, &spec, &w0, &w1);
	t_host_open(&host, w1);
	memset(&cc, 0, sizeof(cc));
	cc.unix_path = sock;
	CHECK_EQ(vop_console_device_create(host.ctx, 3, &cc, &con), 0);
	t_host_serve(&host, 3, VOP_ROLE_DEVICE, &vop_console_ops, con);

	/* driver by hand: both queues, eight receive buffers of 4 KiB */
	CHECK(vop_devtab_find(w0, 3, &di) == 0);
	feat = t_hand_driver_reset(w0, &di, ~0ull);
	CHECK(vop_devq_init(w0, &di, 0, true, feat, &rxq) == 0);
	CHECK(vop_devq_init(w0, &di, 1, true, feat, &txq) == 0);
	for (i = 0; i < 8; i++) {
		struct vop_sg sg = { rxq.pool_off + (uint64_t)i * 4096, 4096 };

		CHECK(vop_vq_add(&rxq.vq, &sg, 0, 1, (void *)(uintptr_t)(i + 1)) >= 0);
	}
	vop_vq_kick_prepare(&rxq.vq);
	t_hand_driver_ok(w0, &di, feat);
	CHECK(T_WAIT_UNTIL(t_host_running(&host, 3), 5000));

	a = connect_unix(sock);
	t_sleep_ms(100); /* accepted, read until EAGAIN, watched */
	CHECK(write(a, "one", 3) == 3);
	expect_input(w0, &rxq, "one");
	close(a);
	t_sleep_ms(100); /* the device notices the hang-up and closes its end */
	b = connect_unix(sock);
	t_sleep_ms(100);
	CHECK(write(b, "two", 3) == 3);
	expect_input(w0, &rxq, "two");
	close(b);

	t_host_close(&host);
	vop_console_destroy(con);
	t_host_free(&host);
	vop_devq_destroy(&rxq);
	vop_devq_destroy(&txq);
	vop_window_close(w1);
	vop_window_close(w0);
	printf("PASS dev-console-reconnect\n");
	return T_PASS;
}
