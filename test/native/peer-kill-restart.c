/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The device process is killed with SIGKILL mid-traffic (its side block
 * still says UP): the driver notices the stalled heartbeat (PEER_GONE),
 * and when a new device process attaches (new epoch) it notices the
 * restart (PEER_RESET), resets the device and verified data flows again.
 * The device process is this binary re-executed (fork + exec): forking a
 * multi-threaded, sanitized process and carrying on in the child can
 * deadlock on locks other threads held at fork time.
 */
#include "helpers.h"

#include <signal.h>
#include <sys/wait.h>

static char self_path[4096];

static int device_main(const char *path)
{
	{
		struct vop_xport *x = NULL;
		struct vop_window *w = NULL;
		struct vop_link *l;
		struct vop_link_config c;
		struct vop_pipe_config pc = t_pipe_cfg(128, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);

		CHECK_EQ(vop_shm_open(path, &x), 0);
		CHECK_EQ(vop_window_attach(x, &w), 0);
		memset(&c, 0, sizeof(c));
		c.spin_ns = 20000;
		CHECK_EQ(vop_link_create(w, &c, &l), 0);
		CHECK_EQ(vop_link_attach_pipe(l, 1, VOP_ROLE_DEVICE, &pc), 0);
		CHECK_EQ(vop_link_start(l), 0);
		for (;;)
			pause(); /* until SIGKILL */
	}
	return T_FAIL;
}

static pid_t spawn_device(const char *path)
{
	pid_t pid = fork();

	CHECK(pid >= 0);
	if (pid == 0) {
		execl(self_path, self_path, "--device", path, (char *)NULL);
		_exit(T_FAIL);
	}
	return pid;
}

int main(int argc, char **argv)
{
	char path[256];
	struct vop_xport *x;
	struct vop_window *w;
	struct vop_link *l;
	struct vop_link_config c;
	struct vop_dev_spec spec;
	struct vop_pipe_config pc = t_pipe_cfg(128, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	struct t_evlog ev;
	struct vop_pipe_stats s;
	pid_t pid;
	int round;

	if (argc == 3 && strcmp(argv[1], "--device") == 0)
		return device_main(argv[2]);
	CHECK(readlink("/proc/self/exe", self_path, sizeof(self_path) - 1) > 0);
	t_path(path, sizeof(path), "kill");
	CHECK_EQ(vop_shm_create(path, 4u << 20, &x), 0);
	CHECK_EQ(vop_window_create(x, NULL, &w), 0);
	vop_pipe_spec(&spec, 1, 1, 128, 128, 1ull << VOP_F_EVENT_IDX);
	CHECK(vop_devtab_publish(w, &spec) >= 0);
	t_evlog_init(&ev);
	memset(&c, 0, sizeof(c));
	c.spin_ns = 20000;
	c.on_event = t_on_event;
	c.ctx = &ev;
	CHECK_EQ(vop_link_create(w, &c, &l), 0);
	CHECK_EQ(vop_link_attach_pipe(l, 1, VOP_ROLE_DRIVER, &pc), 0);
	CHECK_EQ(vop_link_start(l), 0);
	for (round = 0; round < 2; round++) {
		pid = spawn_device(path);
		if (round > 0)
			CHECK(T_WAIT_UNTIL(t_evlog_has(&ev, VOP_EV_PEER_RESET, -1, NULL), 5000));
		if (!T_WAIT_UNTIL(t_rx(l, 1) > 20000, 10000)) {
			CHECK_EQ(vop_link_pipe_stats(l, 1, &s), 0);
			fprintf(stderr, "round %d: state %llu rx %llu tx %llu\n", round,
				(unsigned long long)s.state, (unsigned long long)s.rx_msgs,
				(unsigned long long)s.tx_msgs);
			t_evlog_dump(&ev, "driver");
			return T_FAIL;
		}
		kill(pid, SIGKILL);
		CHECK(waitpid(pid, NULL, 0) == pid);
		CHECK(T_WAIT_UNTIL(t_evlog_has(&ev, VOP_EV_PEER_GONE, -1, NULL), 3000));
		CHECK_EQ(vop_link_pipe_stats(l, 1, &s), 0);
		CHECK_EQ(s.bad_msgs, 0);
		pthread_mutex_lock(&ev.mu);
		ev.n = 0;
		pthread_mutex_unlock(&ev.mu);
	}
	vop_link_destroy(l);
	vop_window_close(w);
	pthread_mutex_destroy(&ev.mu);
	return T_PASS;
}
