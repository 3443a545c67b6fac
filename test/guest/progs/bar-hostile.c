/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bar-hostile: a hostile peer inside a QEMU guest, for test/guest/card.test.ts. It maps a vop
 * window through a BAR file (sysfs resourceN) next to the vop-card that serves the link, and for
 * MS milliseconds rewrites, with random values, what a buggy or malicious card could write:
 *   - the rings of every queue of every live device: descriptors (address, length, flags, next),
 *     the available ring's entries and its index;
 *   - the device table (which belongs to the window's creator, here the host): queue sizes and
 *     offsets, queue counts, config lengths, device types.
 * It never writes the window header (so the host keeps recognising the window) and prints
 * "hostile rings=N table=M" at the end. Test-only: not part of any product.
 *
 *   bar-hostile /sys/bus/pci/devices/0000:00:06.0/resource2 MS [OFFSET]
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../../../native/include/vop/layout.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv)
{
	struct stat st;
	uint64_t end, off = 0, rings = 0, table = 0;
	uint8_t *map, *w;
	int fd;

	if (argc < 3) {
		fprintf(stderr, "usage: bar-hostile RESOURCE MS [OFFSET]\n");
		return 2;
	}
	if (argc > 3)
		off = strtoull(argv[3], NULL, 0);
	fd = open(argv[1], O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[1]);
		return 1;
	}
	map = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	w = map + off;
	rng ^= (uint64_t)getpid() << 32 | (uint64_t)time(NULL);
	end = now_ms() + strtoull(argv[2], NULL, 0);
	while (now_ms() < end) {
		volatile struct vop_win_hdr *h = (volatile struct vop_win_hdr *)w;
		uint64_t size = h->window_size;
		volatile struct vop_devtab_hdr *dt;
		uint32_t stride, max;

		if (h->magic != VOP_WIN_MAGIC || size > (uint64_t)st.st_size - off ||
		    h->devtab_off >= size) {
			usleep(1000);
			continue;
		}
		dt = (volatile struct vop_devtab_hdr *)(w + h->devtab_off);
		stride = dt->entry_size;
		max = dt->max_entries;
		if (stride < sizeof(struct vop_dev_entry) || max > VOP_MAX_DEVICES) {
			usleep(1000);
			continue;
		}
		for (uint32_t i = 0; i < max; i++) {
			volatile struct vop_dev_entry *e =
				(volatile struct vop_dev_entry *)((uint8_t *)dt + sizeof(*dt) +
								  (uint64_t)i * stride);

			if ((uint8_t *)e + stride > w + size || e->state != VOP_DEV_LIVE)
				continue;
			for (uint32_t q = 0; q < VOP_MAX_QUEUES && q < e->num_queues; q++) {
				volatile struct vop_queue_desc *qd = &e->queues[q];
				uint32_t n = qd->size;
				uint64_t d = qd->desc_off, a = qd->avail_off;

				/* Rings only (never the header, the side blocks or the table). */
				if (n == 0 || (n & (n - 1)) || n > VOP_QUEUE_MAX_SIZE ||
				    d < h->ring_off || a < h->ring_off || d + 16ull * n > size ||
				    a + 6ull + 2ull * n > size)
					continue;
				volatile struct vop_vring_desc *desc =
					(volatile struct vop_vring_desc *)(w + d);
				volatile struct vop_vring_avail *av =
					(volatile struct vop_vring_avail *)(w + a);
				uint32_t k = (uint32_t)(rnd() % n);

				desc[k].addr = rnd();
				desc[k].len = (uint32_t)rnd();
				desc[k].flags = (uint16_t)(rnd() & 7);
				desc[k].next = (uint16_t)rnd();
				av->ring[rnd() % n] = (uint16_t)rnd();
				av->idx = (uint16_t)(av->idx + rnd() % 300);
				rings++;
			}
			if (rnd() % 8 == 0) {
				/* The creator's device table: nobody but the host may write it. */
				uint32_t q = (uint32_t)(rnd() % VOP_MAX_QUEUES);

				e->queues[q].size = (uint16_t)rnd();
				e->queues[q].desc_off = rnd();
				e->queues[q].avail_off = h->ring_off + rnd() % (size - h->ring_off);
				e->num_queues = (uint16_t)rnd();
				e->config_len = (uint32_t)rnd();
				table++;
			}
		}
		usleep(200);
	}
	printf("hostile rings=%llu table=%llu\n", (unsigned long long)rings,
	       (unsigned long long)table);
	return 0;
}
