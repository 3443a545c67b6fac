/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pci-bar transport between two processes joined through
 * vop-ivshmem-server, both as ivshmem peers (the memory-holding side of
 * pci-bar): the parent creates the window in the server's memory and
 * drives a byte pipe, the child attaches and is its device. Verified
 * messages go both ways (driver -> device on queue 0, device -> driver on
 * queue 1) with event-driven workers (no spin), so every wake-up is an
 * eventfd doorbell through the server protocol: both sides count signals
 * sent and interrupts taken. Then the child is killed: the parent learns
 * it is gone from the window's heartbeat alone (no filesystem), and the
 * server from its socket.
 *
 * Built a second time as pci-ivshmem-polled (PCI_POLLED 1, or with the
 * argument "poll"): the child waits with the polled doorbell (no interrupt
 * path) instead; it never asks to be signalled, so the parent sends it no
 * signal, and the pipe still moves.
 */
#include "ivshmem-helpers.h"

#ifndef PCI_POLLED
#define PCI_POLLED 0
#endif

#include <signal.h>
#include <sys/wait.h>

#include "vop/dev_pipe.h"
#include "vop/xport_pci.h"

#define SIZE (4u << 20)
#define DEV 3u
#define COUNT 20000u
#define MSG 200u

struct report {
	uint64_t rx, tx, bad;
	uint64_t signals, interrupts, polls;
	int own_id, peer_id;
};

static void child(const char *sock, int out_fd, bool polled)
{
	struct vop_pci_ivshmem_config c = { .socket = sock, .peer_id = -1, .doorbell = polled };
	struct vop_link_config lc = { .spin_ns = 0 };
	struct vop_pipe_config pc = t_pipe_cfg(MSG, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);
	struct vop_xport *x;
	struct vop_window *w = NULL;
	struct vop_link *l;
	struct vop_pipe_stats ps;
	struct vop_pci_stats xs;
	struct report r;
	int rc;

	pc.count = COUNT;
	CHECK_EQ(vop_pci_ivshmem_open(&c, &x), 0);
	/* The window appears when the parent publishes its magic. */
	CHECK(T_WAIT_UNTIL((rc = vop_window_attach(x, &w)) != -EAGAIN, 10000));
	CHECK_EQ(rc, 0);
	CHECK_EQ(vop_link_create(w, &lc, &l), 0);
	CHECK(T_WAIT_UNTIL(vop_link_attach_pipe(l, DEV, VOP_ROLE_DEVICE, &pc) == 0, 10000));
	CHECK_EQ(vop_link_start(l), 0);
	CHECK(T_WAIT_UNTIL(vop_link_pipe_stats(l, DEV, &ps) == 0 && ps.rx_msgs >= COUNT &&
				   ps.tx_msgs >= COUNT,
			   60000));
	vop_pci_stats(x, &xs);
	r = (struct report){ ps.rx_msgs, ps.tx_msgs, ps.bad_msgs, xs.signals, xs.interrupts, xs.polls,
			     vop_pci_own_id(x), vop_pci_peer_id(x) };
	CHECK(write(out_fd, &r, sizeof(r)) == sizeof(r));
	pause(); /* until the parent kills us: the link must notice from the window */
	_exit(0);
}

int main(int argc, char **argv)
{
	bool polled = PCI_POLLED || (argc > 1 && !strcmp(argv[1], "poll"));
	struct t_server s;
	struct vop_pci_ivshmem_config c = { .peer_id = -1 };
	struct vop_link_config lc = { .spin_ns = 0, .on_event = t_on_event };
	struct vop_pipe_config pc = t_pipe_cfg(MSG, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	struct vop_dev_spec spec;
	struct vop_xport *x;
	struct vop_window *w;
	struct vop_link *l;
	struct vop_pipe_stats ps;
	struct vop_pci_stats xs;
	struct t_evlog ev;
	struct report r;
	char sizearg[32];
	int pfd[2], st;
	pid_t pid;

	t_mkdir(s.dir, sizeof(s.dir), "pci-ivs");
	snprintf(s.sock, sizeof(s.sock), "%s/sock", s.dir);
	snprintf(sizearg, sizeof(sizearg), "%u", SIZE);
	const char *args[] = { "--socket", s.sock, "--size", sizearg, "--vectors", "1", NULL };

	CHECK(t_server_start(&s, args, "ready ") == 0);
	CHECK(pipe(pfd) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		child(s.sock, pfd[1], polled);
	}
	close(pfd[1]);

	/* Parent: the memory-holding side that creates the window and drives the pipe. */
	c.socket = s.sock;
	CHECK_EQ(vop_pci_ivshmem_open(&c, &x), 0);
	CHECK_EQ(x->size, SIZE);
	CHECK_EQ(x->map_kind, VOP_MAP_WB);
	CHECK_EQ(vop_window_create(x, NULL, &w), 0);
	vop_pipe_spec(&spec, DEV, 1, 64, MSG, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	CHECK(vop_devtab_publish(w, &spec) >= 0);
	t_evlog_init(&ev);
	lc.ctx = &ev;
	CHECK_EQ(vop_link_create(w, &lc, &l), 0);
	pc.count = COUNT;
	CHECK_EQ(vop_link_attach_pipe(l, DEV, VOP_ROLE_DRIVER, &pc), 0);
	CHECK_EQ(vop_link_start(l), 0);
	CHECK(T_WAIT_UNTIL(vop_link_pipe_stats(l, DEV, &ps) == 0 && ps.rx_msgs >= COUNT, 60000));
	CHECK_EQ(ps.tx_msgs, COUNT);
	CHECK_EQ(ps.bad_msgs, 0);
	CHECK(read(pfd[0], &r, sizeof(r)) == sizeof(r));
	fprintf(stderr,
		"parent: id %d peer %d; child: id %d peer %d rx %llu tx %llu bad %llu signals %llu interrupts %llu polls %llu\n",
		vop_pci_own_id(x), vop_pci_peer_id(x), r.own_id, r.peer_id, (unsigned long long)r.rx,
		(unsigned long long)r.tx, (unsigned long long)r.bad, (unsigned long long)r.signals,
		(unsigned long long)r.interrupts, (unsigned long long)r.polls);
	CHECK_EQ(r.rx, COUNT); /* driver -> device, each message verified by the device */
	CHECK_EQ(r.tx, COUNT); /* device -> driver, each verified by our sink */
	CHECK_EQ(r.bad, 0);
	/* Each side knows the other by the id the server gave it. */
	CHECK_EQ(r.peer_id, vop_pci_own_id(x));
	CHECK_EQ(vop_pci_peer_id(x), r.own_id);
	vop_pci_stats(x, &xs);
	fprintf(stderr, "parent: signals %llu interrupts %llu\n", (unsigned long long)xs.signals,
		(unsigned long long)xs.interrupts);
	if (polled) {
		/* The child never asked to be signalled: all its wake-ups came from looking. */
		CHECK(r.polls > 0);
		CHECK_EQ(xs.signals, 0);
		CHECK_EQ(r.interrupts, 0);
	} else {
		/* Event-driven both ways: rings travelled as eventfd doorbells. */
		CHECK(xs.signals > 0 && r.signals > 0);
		CHECK(xs.interrupts > 0 && r.interrupts > 0);
	}

	/* The peer dies: its heartbeat stops, and the link says so (nothing asked of a filesystem). */
	CHECK(!t_evlog_has(&ev, VOP_EV_PEER_GONE, -1, NULL));
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	CHECK(T_WAIT_UNTIL(t_evlog_has(&ev, VOP_EV_PEER_GONE, -1, NULL), 10000));
	CHECK_EQ(t_server_wait(&s, "disconnect ", 5000), 0);

	vop_link_destroy(l);
	vop_window_close(w);
	pthread_mutex_destroy(&ev.mu);
	t_server_stop(&s);
	rmdir(s.dir);
	return T_PASS;
}
