/* SPDX-License-Identifier: Apache-2.0 */
/*
 * 4 KiB random-read IOPS, the same access pattern two ways:
 *   blk-bench-rand file PATH DEPTH SECONDS   DEPTH threads doing pread()
 *   blk-bench-rand nbd SOCKET DEPTH SECONDS  one NBD connection (Unix
 *                                            socket, NBD_OPT_GO) with DEPTH
 *                                            requests in flight
 * Prints "iops N". Used by npm run bench:blk (test/bench/blk-bench.ts).
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

struct targ {
	int fd;
	uint64_t blocks, deadline, done;
	uint64_t seed;
};

static void *file_worker(void *p)
{
	struct targ *a = p;
	char buf[4096] __attribute__((aligned(4096)));

	while (now_ns() < a->deadline) {
		for (int i = 0; i < 64; i++) {
			if (pread(a->fd, buf, 4096, (off_t)(rnd(&a->seed) % a->blocks) * 4096) != 4096)
				exit(1);
			a->done++;
		}
	}
	return NULL;
}

static void full(int fd, void *b, size_t n, int wr)
{
	uint8_t *p = b;

	while (n) {
		ssize_t r = wr ? write(fd, p, n) : read(fd, p, n);

		if (r <= 0) {
			fprintf(stderr, "nbd io: %s\n", r < 0 ? strerror(errno) : "eof");
			exit(1);
		}
		p += r;
		n -= (size_t)r;
	}
}

static uint64_t nbd_connect(int s)
{
	uint8_t hello[18], opt[16], data[4 + 3 + 2], h[20], body[256];
	uint32_t v, cflags = htobe32(3);
	uint64_t size = 0;

	full(s, hello, 18, 0);
	memcpy(opt, "IHAVEOPT", 8);
	v = htobe32(7);
	memcpy(opt + 8, &v, 4);
	v = htobe32(sizeof(data));
	memcpy(opt + 12, &v, 4);
	v = htobe32(3);
	memcpy(data, &v, 4);
	memcpy(data + 4, "vop", 3);
	data[7] = data[8] = 0;
	full(s, &cflags, 4, 1);
	full(s, opt, 16, 1);
	full(s, data, sizeof(data), 1);
	for (;;) {
		uint32_t type, len;

		full(s, h, 20, 0);
		memcpy(&type, h + 12, 4);
		memcpy(&len, h + 16, 4);
		type = be32toh(type);
		len = be32toh(len);
		if (len > sizeof(body))
			exit(1);
		full(s, body, len, 0);
		if (type == 1)
			return size;
		if (type == 3 && len >= 12 && body[0] == 0 && body[1] == 0) {
			memcpy(&size, body + 2, 8);
			size = be64toh(size);
		} else if (type >= 0x80000000u) {
			exit(1);
		}
	}
}

static void nbd_send_read(int s, uint64_t handle, uint64_t off)
{
	uint8_t rq[28];
	uint32_t v = htobe32(0x25609513u), len = htobe32(4096);
	uint16_t z = 0;
	uint64_t o = htobe64(off);

	memcpy(rq, &v, 4);
	memcpy(rq + 4, &z, 2);
	memcpy(rq + 6, &z, 2);
	memcpy(rq + 8, &handle, 8);
	memcpy(rq + 16, &o, 8);
	memcpy(rq + 24, &len, 4);
	full(s, rq, 28, 1);
}

int main(int argc, char **argv)
{
	int depth, secs;
	uint64_t seed = 0x9e3779b97f4a7c15ull, total = 0, t0;

	if (argc != 5)
		return 2;
	depth = atoi(argv[3]);
	secs = atoi(argv[4]);
	if (!strcmp(argv[1], "file")) {
		struct targ a[64];
		pthread_t th[64];
		struct stat sb;
		int fd = open(argv[2], O_RDONLY | (getenv("BENCH_ODIRECT") ? O_DIRECT : 0));

		if (fd < 0 || fstat(fd, &sb) || depth < 1 || depth > 64)
			return 1;
		t0 = now_ns();
		for (int i = 0; i < depth; i++) {
			a[i] = (struct targ){ fd, (uint64_t)sb.st_size / 4096, t0 + (uint64_t)secs * 1000000000ull, 0,
					      seed + (uint64_t)i * 7919 };
			pthread_create(&th[i], NULL, file_worker, &a[i]);
		}
		for (int i = 0; i < depth; i++) {
			pthread_join(th[i], NULL);
			total += a[i].done;
		}
	} else {
		struct sockaddr_un sa;
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		uint64_t blocks, deadline, handle = 1, inflight = 0;
		char buf[4096];

		memset(&sa, 0, sizeof(sa));
		sa.sun_family = AF_UNIX;
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", argv[2]);
		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)))
			return 1;
		blocks = nbd_connect(s) / 4096;
		t0 = now_ns();
		deadline = t0 + (uint64_t)secs * 1000000000ull;
		for (; inflight < (uint64_t)depth; inflight++)
			nbd_send_read(s, handle++, (rnd(&seed) % blocks) * 4096);
		while (inflight) {
			uint8_t rep[16];

			full(s, rep, 16, 0);
			if (rep[4] | rep[5] | rep[6] | rep[7])
				return 1;
			full(s, buf, 4096, 0);
			inflight--;
			total++;
			if (now_ns() < deadline) {
				nbd_send_read(s, handle++, (rnd(&seed) % blocks) * 4096);
				inflight++;
			}
		}
	}
	printf("iops %.0f\n", (double)total * 1e9 / (double)(now_ns() - t0));
	return 0;
}
