/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vopdev: a standalone process that serves device backends on one side of
 * an shm window, so that two real processes can carry a disk, a network
 * interface and a console before (and besides) the agent. Used by the
 * integration tests and benchmarks in test/devices and test/bench.
 *
 *   vopdev --window PATH (--create MIB | --attach) [--spin-us N] DEVICE...
 *
 * DEVICE is --KIND ID:opts with KIND one of blk-device, blk-driver,
 * net-device, net-driver, con-device, con-driver and the options of
 * vop/dev_host.h (e.g. --blk-device 1:file=/var/lib/disk.img:direct).
 * The creating side publishes every device it is given.
 *
 * Prints one "key value" line per endpoint then "ready" to stdout once
 * serving; SIGTERM/SIGINT stop cleanly and print the counters as one JSON
 * line on stderr. Exit status 0, or 1 with a message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vop/dev_host.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *err = NULL;
	long create_mib = 0, spin_us = 20;
	bool attach = false;
	struct vop_dev_host_dev devs[VOP_DEV_HOST_MAX];
	struct vop_dev_host *h;
	unsigned ndev = 0;
	struct sigaction sa;
	static char buf[8192];
	int i, rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--attach")) {
			attach = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "vopdev: %s needs a value\n", a);
			return 1;
		}
		i++;
		if (!strcmp(a, "--window")) {
			path = v;
		} else if (!strcmp(a, "--create")) {
			create_mib = strtol(v, NULL, 0);
		} else if (!strcmp(a, "--spin-us")) {
			spin_us = strtol(v, NULL, 0);
		} else if (!strncmp(a, "--", 2) && vop_dev_kind_parse(a + 2) >= 0 && ndev < VOP_DEV_HOST_MAX) {
			devs[ndev].kind = (enum vop_dev_kind)vop_dev_kind_parse(a + 2);
			devs[ndev].desc = v;
			ndev++;
		} else {
			fprintf(stderr, "vopdev: unknown or too many: %s\n", a);
			return 1;
		}
	}
	if (!path || (create_mib <= 0) == !attach) {
		fprintf(stderr, "usage: vopdev --window PATH (--create MIB | --attach) DEVICE...\n");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	rc = vop_dev_host_open(path, attach ? 0 : (uint64_t)create_mib << 20,
			       (uint64_t)(spin_us > 0 ? spin_us : 1) * 1000u, devs, ndev, &h, &err);
	if (rc) {
		fprintf(stderr, "vopdev: %s: %s\n", err ? err : "open", strerror(-rc));
		return 1;
	}
	vop_dev_host_endpoints(h, buf, sizeof(buf));
	fputs(buf, stdout);
	printf("ready\n");
	while (!g_stop) {
		usleep(100000);
		rc = vop_dev_host_error(h);
		if (rc) {
			fprintf(stderr, "vopdev: backend failed: %s\n", strerror(-rc));
			break;
		}
	}
	vop_dev_host_stats_json(h, buf, sizeof(buf));
	vop_dev_host_close(h);
	fprintf(stderr, "%s\n", buf);
	return 0;
}
