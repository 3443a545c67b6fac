/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The BAR side of the pci-bar transport on the host: the child maps the
 * window the way a card maps a BAR through sysfs (mmap of a resource file;
 * here the ivshmem server's --shm file stands in for
 * /sys/bus/pci/devices/BDF/resource2), with no interrupt path and no
 * doorbell registers, so both sides poll each other's kick word. The
 * parent holds the memory as an ivshmem peer with the polled doorbell. A
 * verified byte pipe goes both ways, no signal is ever sent (neither side
 * asks for one), the BAR side counts as an uncached mapping, and the
 * window sits at an offset inside the BAR. Refusals: an interrupt path
 * without vfio, offsets and sizes that do not fit the BAR.
 */
#include "ivshmem-helpers.h"

#include <signal.h>
#include <sys/wait.h>

#include "vop/dev_pipe.h"
#include "vop/xport_pci.h"

#define SIZE (4u << 20)
#define OFF (1u << 20) /* the window starts 1 MiB into the BAR */
#define DEV 5u
#define COUNT 5000u
#define MSG 100u

struct report {
	uint64_t rx, tx, bad, signals, interrupts, polls;
	uint32_t map_kind;
};

static void child(const char *shm, int out_fd)
{
	struct vop_pci_bar_config c = { .bar_path = shm, .offset = OFF, .peer_id = -1,
					.doorbell = VOP_PCI_DB_POLL, .poll_max_us = 500 };
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
	CHECK_EQ(vop_pci_bar_open(&c, &x), 0);
	CHECK_EQ(x->size, SIZE - OFF);
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
			     x->map_kind };
	CHECK(write(out_fd, &r, sizeof(r)) == sizeof(r));
	pause();
	_exit(0);
}

int main(void)
{
	struct t_server s;
	struct vop_pci_ivshmem_config c = { .peer_id = -1, .offset = OFF, .doorbell = VOP_PCI_DB_POLL,
					    .poll_max_us = 500 };
	struct vop_pci_bar_config bad;
	struct vop_link_config lc = { .spin_ns = 0 };
	struct vop_pipe_config pc = t_pipe_cfg(MSG, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	struct vop_dev_spec spec;
	struct vop_xport *x;
	struct vop_window *w;
	struct vop_link *l;
	struct vop_pipe_stats ps;
	struct vop_pci_stats xs;
	struct report r;
	char sizearg[32], shm[300];
	int pfd[2], st;
	pid_t pid;

	t_mkdir(s.dir, sizeof(s.dir), "pci-bar");
	snprintf(s.sock, sizeof(s.sock), "%s/sock", s.dir);
	snprintf(shm, sizeof(shm), "%s/bar2", s.dir);
	snprintf(sizearg, sizeof(sizearg), "%u", SIZE);
	const char *args[] = { "--socket", s.sock, "--size", sizearg, "--shm", shm, NULL };

	CHECK(t_server_start(&s, args, "ready ") == 0);

	/* Refusals: nothing is mapped, nothing is created. */
	memset(&bad, 0, sizeof(bad));
	bad.bar_path = shm;
	bad.peer_id = -1;
	bad.doorbell = VOP_PCI_DB_EVENT; /* MSI-X needs vfio */
	CHECK_EQ(vop_pci_bar_open(&bad, &x), -EINVAL);
	bad.doorbell = VOP_PCI_DB_POLL;
	bad.offset = 100; /* not page aligned */
	CHECK_EQ(vop_pci_bar_open(&bad, &x), -EINVAL);
	bad.offset = SIZE; /* past the BAR */
	CHECK_EQ(vop_pci_bar_open(&bad, &x), -EINVAL);
	bad.offset = 0;
	bad.size = SIZE + 4096; /* larger than the BAR */
	CHECK_EQ(vop_pci_bar_open(&bad, &x), -EINVAL);
	bad.size = 4096; /* smaller than a window */
	CHECK_EQ(vop_pci_bar_open(&bad, &x), -EINVAL);
	bad.size = 0;
	bad.bar_path = "/nonexistent/resource2";
	CHECK_EQ(vop_pci_bar_open(&bad, &x), -ENOENT);

	CHECK(pipe(pfd) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		close(pfd[0]);
		child(shm, pfd[1]);
	}
	close(pfd[1]);

	c.socket = s.sock;
	CHECK_EQ(vop_pci_ivshmem_open(&c, &x), 0);
	CHECK_EQ(vop_window_create(x, NULL, &w), 0);
	vop_pipe_spec(&spec, DEV, 1, 64, MSG, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	CHECK(vop_devtab_publish(w, &spec) >= 0);
	CHECK_EQ(vop_link_create(w, &lc, &l), 0);
	pc.count = COUNT;
	CHECK_EQ(vop_link_attach_pipe(l, DEV, VOP_ROLE_DRIVER, &pc), 0);
	CHECK_EQ(vop_link_start(l), 0);
	CHECK(T_WAIT_UNTIL(vop_link_pipe_stats(l, DEV, &ps) == 0 && ps.rx_msgs >= COUNT, 60000));
	CHECK_EQ(ps.tx_msgs, COUNT);
	CHECK_EQ(ps.bad_msgs, 0);
	CHECK(read(pfd[0], &r, sizeof(r)) == sizeof(r));
	vop_pci_stats(x, &xs);
	fprintf(stderr, "bar side: rx %llu tx %llu bad %llu signals %llu polls %llu; holder: signals %llu polls %llu\n",
		(unsigned long long)r.rx, (unsigned long long)r.tx, (unsigned long long)r.bad,
		(unsigned long long)r.signals, (unsigned long long)r.polls, (unsigned long long)xs.signals,
		(unsigned long long)xs.polls);
	CHECK_EQ(r.rx, COUNT);
	CHECK_EQ(r.tx, COUNT);
	CHECK_EQ(r.bad, 0);
	CHECK_EQ(r.map_kind, VOP_MAP_UC);
	CHECK(r.polls > 0 && xs.polls > 0);
	CHECK_EQ(r.signals + xs.signals, 0); /* neither side asked to be signalled */
	CHECK_EQ(r.interrupts + xs.interrupts, 0);
	/* The window lives 1 MiB into the memory: the magic is there, not at 0. */
	{
		uint32_t magic;
		int fd = open(shm, O_RDONLY);

		CHECK(fd >= 0);
		CHECK(pread(fd, &magic, 4, OFF) == 4 && magic == VOP_WIN_MAGIC);
		CHECK(pread(fd, &magic, 4, 0) == 4 && magic == 0);
		close(fd);
	}

	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	vop_link_destroy(l);
	vop_window_close(w);
	t_server_stop(&s);
	unlink(shm);
	rmdir(s.dir);
	return T_PASS;
}
