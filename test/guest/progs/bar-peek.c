/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bar-peek: read and write a PCI BAR from guest user space through sysfs resourceN (mmap; the
 * guest kernel has STRICT_DEVMEM, so /dev/mem is not an option). For the ivshmem tests.
 *
 *   bar-peek [-a BDF | -d VENDOR:DEVICE -i INDEX] [-b BAR] read OFF LEN   -> hex on stdout
 *   bar-peek ... write OFF HEX
 *   bar-peek ... wait OFF HEX TIMEOUT_MS                            -> exit 0 when the bytes match
 *   bar-peek ... info                                               -> "bdf size"
 * Defaults: 1af4:1110 (ivshmem), index 0, BAR 2. Exit 1 on any error, with a message on stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pci-find.h"

static void fail(const char *what)
{
	fprintf(stderr, "bar-peek: %s: %s\n", what, errno ? strerror(errno) : "bad arguments");
	exit(1);
}

static size_t unhex(const char *s, unsigned char *out, size_t max)
{
	size_t n = strlen(s) / 2;

	if (strlen(s) % 2 || n > max)
		fail("hex");
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			fail("hex");
		out[i] = (unsigned char)v;
	}
	return n;
}

int main(int argc, char **argv)
{
	unsigned vendor = 0x1af4, device = 0x1110;
	int index = 0, bar = 2, o;
	char bdf[256], path[512];
	volatile unsigned char *m;
	struct stat st;
	int fd;

	bdf[0] = 0;
	while ((o = getopt(argc, argv, "a:d:i:b:")) != -1) {
		if (o == 'a') {
			snprintf(bdf, sizeof(bdf), "%s", optarg);
			continue;
		}
		if (o == 'd' && sscanf(optarg, "%x:%x", &vendor, &device) == 2)
			continue;
		if (o == 'i')
			index = atoi(optarg);
		else if (o == 'b')
			bar = atoi(optarg);
		else
			fail("usage");
	}
	if (optind >= argc)
		fail("usage");
	errno = 0;
	if (!bdf[0] && pci_find(vendor, device, index, bdf, sizeof(bdf)))
		fail("no such PCI device");
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%.64s/resource%d", bdf, bar);
	fd = open(path, O_RDWR | O_SYNC);
	if (fd < 0 || fstat(fd, &st) < 0)
		fail(path);
	m = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		fail("mmap");
	const char *cmd = argv[optind];
	uint64_t off = optind + 1 < argc ? strtoull(argv[optind + 1], NULL, 0) : 0;

	if (!strcmp(cmd, "info")) {
		printf("%s %lld\n", bdf, (long long)st.st_size);
		return 0;
	}
	if (optind + 2 >= argc || off >= (uint64_t)st.st_size)
		fail("usage or offset");
	if (!strcmp(cmd, "read")) {
		uint64_t len = strtoull(argv[optind + 2], NULL, 0);

		if (len > (uint64_t)st.st_size - off)
			fail("length");
		for (uint64_t i = 0; i < len; i++)
			printf("%02x", m[off + i]);
		printf("\n");
		return 0;
	}
	static unsigned char want[65536];
	size_t n = unhex(argv[optind + 2], want, sizeof(want));

	if (n > (uint64_t)st.st_size - off)
		fail("length");
	if (!strcmp(cmd, "write")) {
		for (size_t i = 0; i < n; i++)
			m[off + i] = want[i];
		__sync_synchronize();
		return 0;
	}
	if (!strcmp(cmd, "wait") && optind + 3 < argc) {
		long timeout_ms = atol(argv[optind + 3]);
		struct timespec t0, t;

		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (;;) {
			size_t i = 0;

			while (i < n && m[off + i] == want[i])
				i++;
			if (i == n)
				return 0;
			clock_gettime(CLOCK_MONOTONIC, &t);
			if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 >
			    timeout_ms) {
				errno = ETIMEDOUT;
				fail("wait");
			}
			usleep(1000);
		}
	}
	fail("usage");
	return 1;
}
