/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-pci-pipe: one side of a verified byte pipe over the pci-bar transport,
 * for tests that put the two sides in different places (a host process and a
 * QEMU guest). Built for the host by `make -C native tools`
 * (out/tools/vop-pci-pipe) and for a guest as a static program.
 *
 *   vop-pci-pipe (--ivshmem SOCK | --bar FILE | --vfio BDF) [--regs FILE] [--bar-index N]
 *                [--offset BYTES] [--peer ID] [--vector V] [--poll] [--create]
 *                (--driver | --device) [--count N] [--msg BYTES] [--timeout-ms MS]
 *                [--echo] [--inflight N] [--spin-ns NS]
 *
 * --ivshmem: the memory-holding side, a peer of vop-ivshmem-server. --bar: a BAR
 * through a file to mmap (sysfs resourceN), polled. --vfio: a device bound to
 * vfio-pci, the window in region --bar-index (2), MSI-X doorbells unless --poll.
 * --create lays the window out and publishes the pipe (the other side
 * attaches). The driver produces --count messages on queue 0 and consumes
 * --count on queue 1, the device the reverse; every message is verified.
 * --echo (device): copy each queue-0 message back on queue 1 instead; with
 * the driver's --inflight 1 that is a ping-pong in which every message needs
 * a doorbell each way once the workers sleep at once (--spin-ns 0; default
 * 20000).
 *
 * Prints "ready id=<own ivshmem id>" once its window side is up, then
 * "done rx=.. tx=.. bad=.. signals=.. interrupts=.. polls=.." and exits 0
 * when both directions are complete; exit 1 with a message on stderr on a
 * failure or after --timeout-ms (default 60000).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vop/dev_pipe.h"
#include "vop/link.h"
#include "vop/window.h"
#include "vop/xport_pci.h"

#define DEV 7u

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "vop-pci-pipe: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

int main(int argc, char **argv)
{
	const char *sock = NULL, *bar = NULL, *vfio = NULL, *regs = NULL;
	unsigned bar_index = 2, vector = 0, msg = 256;
	uint64_t offset = 0, count = 10000, timeout_ms = 60000, t0;
	int peer = -1, role = 0, create = 0, poll = 0, echo = 0, rc, i;
	unsigned inflight = 0;
	struct vop_xport *x = NULL;
	struct vop_window *w = NULL;
	struct vop_link *l;
	struct vop_link_config lc = { .spin_ns = 20000 };
	struct vop_pipe_config pc;
	struct vop_pipe_stats ps;
	struct vop_pci_stats xs;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--create")) {
			create = 1;
		} else if (!strcmp(a, "--poll")) {
			poll = 1;
		} else if (!strcmp(a, "--driver")) {
			role = VOP_ROLE_DRIVER;
		} else if (!strcmp(a, "--device")) {
			role = VOP_ROLE_DEVICE;
		} else if (!strcmp(a, "--echo")) {
			echo = 1;
		} else if (v && !strcmp(a, "--inflight")) {
			inflight = (unsigned)strtoul(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--spin-ns")) {
			lc.spin_ns = strtoull(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--ivshmem")) {
			sock = v, i++;
		} else if (v && !strcmp(a, "--bar")) {
			bar = v, i++;
		} else if (v && !strcmp(a, "--vfio")) {
			vfio = v, i++;
		} else if (v && !strcmp(a, "--regs")) {
			regs = v, i++;
		} else if (v && !strcmp(a, "--bar-index")) {
			bar_index = (unsigned)strtoul(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--offset")) {
			offset = strtoull(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--peer")) {
			peer = atoi(v), i++;
		} else if (v && !strcmp(a, "--vector")) {
			vector = (unsigned)strtoul(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--count")) {
			count = strtoull(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--msg")) {
			msg = (unsigned)strtoul(v, NULL, 0), i++;
		} else if (v && !strcmp(a, "--timeout-ms")) {
			timeout_ms = strtoull(v, NULL, 0), i++;
		} else {
			fprintf(stderr, "usage: see the comment at the top of pci-pipe.c\n");
			return 2;
		}
	}
	if (!role || (!!sock + !!bar + !!vfio) != 1 || msg < 16) {
		fprintf(stderr, "usage: see the comment at the top of pci-pipe.c\n");
		return 2;
	}
	if (sock) {
		struct vop_pci_ivshmem_config c = { .socket = sock, .peer_id = peer, .offset = offset,
						    .vector = vector, .doorbell = poll ? VOP_PCI_DB_POLL : VOP_PCI_DB_EVENT };

		rc = vop_pci_ivshmem_open(&c, &x);
	} else {
		struct vop_pci_bar_config c = { .bar_path = bar, .vfio_bdf = vfio, .bar = bar_index,
						.offset = offset, .regs_path = regs, .peer_id = peer,
						.vector = vector,
						.doorbell = poll || bar ? VOP_PCI_DB_POLL : VOP_PCI_DB_EVENT };

		rc = vop_pci_bar_open(&c, &x);
	}
	if (rc)
		die("open the pci-bar window", rc);
	t0 = now_ms();
	if (create) {
		struct vop_dev_spec spec;

		rc = vop_window_create(x, NULL, &w);
		if (rc)
			die("lay out the window", rc);
		vop_pipe_spec(&spec, DEV, role == VOP_ROLE_DEVICE ? 0 : 1, 64, msg,
			      (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
		rc = vop_devtab_publish(w, &spec);
		if (rc < 0)
			die("publish the pipe", rc);
	} else {
		while ((rc = vop_window_attach(x, &w)) == -EAGAIN && now_ms() - t0 < timeout_ms)
			usleep(2000);
		if (rc)
			die("attach the window", rc);
	}
	printf("ready id=%d\n", vop_pci_own_id(x));
	fflush(stdout);
	rc = vop_link_create(w, &lc, &l);
	if (rc)
		die("link", rc);
	pc = (struct vop_pipe_config){ .msg_size = msg, .segs = 1, .verify = true, .count = count,
				       .features = (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC) };
	pc.tx_mode = role == VOP_ROLE_DRIVER ? VOP_PIPE_SOURCE : echo ? VOP_PIPE_ECHO : VOP_PIPE_SINK;
	pc.rx_mode = role == VOP_ROLE_DRIVER ? VOP_PIPE_SINK : echo ? VOP_PIPE_OFF : VOP_PIPE_SOURCE;
	pc.max_inflight = inflight;
	if (echo)
		pc.verify = false; /* an echo copies, it does not check (the driver's sink does) */
	while ((rc = vop_link_attach_pipe(l, DEV, role, &pc)) == -ENOENT && now_ms() - t0 < timeout_ms)
		usleep(2000);
	if (rc)
		die("attach the pipe", rc);
	rc = vop_link_start(l);
	if (rc)
		die("start the worker", rc);
	for (;;) {
		if (vop_link_pipe_stats(l, DEV, &ps) == 0 && ps.rx_msgs >= count && ps.tx_msgs >= count)
			break;
		if (ps.bad_msgs)
			die("a message failed verification", EPROTO);
		if (now_ms() - t0 > timeout_ms) {
			fprintf(stderr, "vop-pci-pipe: timed out: rx %llu tx %llu of %llu\n",
				(unsigned long long)ps.rx_msgs, (unsigned long long)ps.tx_msgs,
				(unsigned long long)count);
			return 1;
		}
		usleep(10000);
	}
	/* Let the peer take our last completions before we go (it sees us GONE, not the data). */
	usleep(300000);
	vop_pci_stats(x, &xs);
	printf("done rx=%llu tx=%llu bad=%llu signals=%llu interrupts=%llu polls=%llu\n",
	       (unsigned long long)ps.rx_msgs, (unsigned long long)ps.tx_msgs,
	       (unsigned long long)ps.bad_msgs, (unsigned long long)xs.signals,
	       (unsigned long long)xs.interrupts, (unsigned long long)xs.polls);
	fflush(stdout);
	vop_link_destroy(l);
	vop_window_close(w);
	return 0;
}
