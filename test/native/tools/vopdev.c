/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vopdev: a TEST TOOL (not shipped, not the card-side binary): a standalone
 * process that serves device backends on one side of an shm window, so that
 * two real processes can carry a disk, a network interface and a console
 * without an agent. The device tests and benchmarks in test/devices and
 * test/bench start it; `make -C native tools` builds it as out/tools/vopdev.
 *
 *   vopdev --window PATH (--create MIB | --attach) [--spin-us N] DEVICE...
 *
 * DEVICE is --KIND ID:opts with KIND one of blk-device, blk-driver,
 * net-device, net-driver, con-device, con-driver and the options listed in
 * test/native/devside.h (e.g. --blk-device 1:file=/var/lib/disk.img:direct),
 * parsed there into the typed configs of vop/dev_backend.h. The creating
 * side publishes every device it is given.
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

#include "devside.h"

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
	static struct devside_dev devs[DEVSIDE_MAX];
	struct devside *h;
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
		} else if (!strncmp(a, "--", 2) && ndev < DEVSIDE_MAX) {
			rc = devside_parse(a + 2, v, &devs[ndev]);
			if (rc) {
				fprintf(stderr, "vopdev: %s %s: %s\n", a, v, strerror(-rc));
				return 1;
			}
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
	rc = devside_open(path, attach ? 0 : (uint64_t)create_mib << 20, (uint64_t)(spin_us > 0 ? spin_us : 1) * 1000u,
			  devs, ndev, &h, &err);
	if (rc) {
		fprintf(stderr, "vopdev: %s: %s\n", err ? err : "open", strerror(-rc));
		return 1;
	}
	devside_endpoints(h, buf, sizeof(buf));
	fputs(buf, stdout);
	printf("ready\n");
	while (!g_stop) {
		usleep(100000);
		rc = atomic_load(&h->error);
		if (rc) {
			fprintf(stderr, "vopdev: backend failed: %s\n", strerror(-rc));
			break;
		}
	}
	devside_stats_json(h, buf, sizeof(buf));
	devside_close(h);
	fprintf(stderr, "%s\n", buf);
	return 0;
}
