/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-ivshmem-peer: a host process as an ivshmem peer (include/vop/ivshmem.h), driven by lines on
 * stdin; for tests and for poking at a running server by hand. docs/ivshmem-server.md.
 *
 *   vop-ivshmem-peer --socket PATH [--vectors N]
 *
 * stdout, one line each (flushed):
 *   hello <own id> <vectors> <shm size>     after the handshake
 *   join <peer> <vector>                    a peer's eventfd for that vector arrived
 *   leave <peer>
 *   irq <vector> <count>                    a peer rang this one (count rings since the last line)
 *   ok | data <hex> | peers <id>... | error <text>   replies to commands, in order
 *   server-gone <reason>                    the server connection ended (rings still work)
 * stdin commands:
 *   ring <peer> <vector>     write <offset> <hex>     read <offset> <length>
 *   fill <offset> <length> <byte>           peers           quit
 * Offsets and lengths are checked against the shared memory's size; read returns at most 64 KiB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vop/ivshmem.h"

#define MAX_READ (64u << 10)

static struct vop_ivshmem_client *C;
static unsigned char *shm;
static uint64_t shm_size;

static int range_ok(uint64_t off, uint64_t len)
{
	return off <= shm_size && len <= shm_size - off;
}

static int hexval(int ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static void command(char *line)
{
	char *argv[4] = { 0 };
	int argc = 0;
	unsigned long long a, b;
	char *end;

	for (char *tok = strtok(line, " \t\r\n"); tok && argc < 4; tok = strtok(NULL, " \t\r\n"))
		argv[argc++] = tok;
	if (argc == 0)
		return;
	if (!strcmp(argv[0], "quit")) {
		vop_ivshmem_client_close(C);
		exit(0);
	}
	if (!strcmp(argv[0], "peers")) {
		uint16_t ids[VOP_IVSHMEM_MAX_PEERS];
		int n = vop_ivshmem_client_peers(C, ids, VOP_IVSHMEM_MAX_PEERS);

		printf("peers");
		for (int i = 0; i < n && i < VOP_IVSHMEM_MAX_PEERS; i++)
			printf(" %u", ids[i]);
		printf("\n");
		return;
	}
	if (argc < 3)
		goto usage;
	a = strtoull(argv[1], &end, 0);
	if (*end)
		goto usage;
	if (!strcmp(argv[0], "ring")) {
		b = strtoull(argv[2], &end, 0);
		if (*end || a > VOP_IVSHMEM_MAX_ID || b >= VOP_IVSHMEM_MAX_VECTORS)
			goto usage;
		int err = vop_ivshmem_client_ring(C, (unsigned)a, (unsigned)b);

		if (err)
			printf("error ring %llu %llu: %s\n", a, b, strerror(-err));
		else
			printf("ok\n");
		return;
	}
	if (!strcmp(argv[0], "write")) {
		size_t n = strlen(argv[2]);

		if (n % 2 || !range_ok(a, n / 2))
			goto range;
		for (size_t i = 0; i < n / 2; i++) {
			int hi = hexval(argv[2][2 * i]), lo = hexval(argv[2][2 * i + 1]);

			if (hi < 0 || lo < 0)
				goto usage;
			shm[a + i] = (unsigned char)(hi << 4 | lo);
		}
		printf("ok\n");
		return;
	}
	if (!strcmp(argv[0], "read")) {
		b = strtoull(argv[2], &end, 0);
		if (*end || b > MAX_READ || !range_ok(a, b))
			goto range;
		printf("data ");
		for (uint64_t i = 0; i < b; i++)
			printf("%02x", shm[a + i]);
		printf("\n");
		return;
	}
	if (!strcmp(argv[0], "fill") && argc == 4) {
		char *end2;
		unsigned long v = strtoul(argv[3], &end2, 0);

		b = strtoull(argv[2], &end, 0);
		if (*end || *end2 || v > 255)
			goto usage;
		if (!range_ok(a, b))
			goto range;
		memset(shm + a, (int)v, b);
		printf("ok\n");
		return;
	}
usage:
	printf("error bad command\n");
	return;
range:
	printf("error out of range (shared memory is %" PRIu64 " bytes)\n", shm_size);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "vectors", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = NULL;
	unsigned vectors = 1;
	char line[1 << 18];
	size_t have = 0;
	int o, err;

	while ((o = getopt_long(argc, argv, "s:n:", opts, NULL)) != -1) {
		if (o == 's')
			sock = optarg;
		else if (o == 'n')
			vectors = (unsigned)strtoul(optarg, NULL, 10);
		else
			return 2;
	}
	if (!sock) {
		fprintf(stderr, "usage: vop-ivshmem-peer --socket PATH [--vectors N]\n");
		return 2;
	}
	err = vop_ivshmem_client_open(sock, vectors, 10000, &C);
	if (err) {
		fprintf(stderr, "vop-ivshmem-peer: %s: %s\n", sock, strerror(-err));
		return 1;
	}
	shm_size = vop_ivshmem_client_shm_size(C);
	shm = mmap(NULL, shm_size, PROT_READ | PROT_WRITE, MAP_SHARED, vop_ivshmem_client_shm_fd(C),
		   0);
	if (shm == MAP_FAILED) {
		fprintf(stderr, "vop-ivshmem-peer: mmap: %s\n", strerror(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("hello %u %u %" PRIu64 "\n", vop_ivshmem_client_id(C), vectors, shm_size);

	/* The peers met during the handshake are reported first: pretend the socket is readable. */
	for (int gone = 0, first = 1;; first = 0) {
		struct pollfd pfd[2 + VOP_IVSHMEM_MAX_VECTORS];
		struct vop_ivshmem_event ev[64];
		int n;

		pfd[0] = (struct pollfd){ .fd = 0, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = gone ? -1 : vop_ivshmem_client_fd(C),
					  .events = POLLIN };
		for (unsigned v = 0; v < vectors; v++)
			pfd[2 + v] = (struct pollfd){ .fd = vop_ivshmem_client_own_eventfd(C, v),
						      .events = POLLIN };
		if (poll(pfd, 2 + vectors, first ? 0 : -1) < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		if ((pfd[1].revents || first) && !gone) {
			while ((n = vop_ivshmem_client_process(C, ev, 64)) > 0)
				for (int i = 0; i < n; i++) {
					if (ev[i].kind == VOP_IVSHMEM_PEER_VECTOR)
						printf("join %u %u\n", ev[i].peer, ev[i].vector);
					else
						printf("leave %u\n", ev[i].peer);
				}
			if (n < 0) {
				printf("server-gone %s\n", strerror(-n));
				gone = 1;
			}
		}
		for (unsigned v = 0; v < vectors; v++) {
			int64_t k;

			if (!pfd[2 + v].revents)
				continue;
			k = vop_ivshmem_client_ack(C, v);
			if (k > 0)
				printf("irq %u %" PRId64 "\n", v, k);
		}
		if (pfd[0].revents) {
			ssize_t r = read(0, line + have, sizeof(line) - 1 - have);
			char *nl;

			if (r <= 0) {
				vop_ivshmem_client_close(C);
				return 0;
			}
			have += (size_t)r;
			line[have] = 0;
			while ((nl = memchr(line, '\n', have))) {
				size_t len = (size_t)(nl - line) + 1;

				*nl = 0;
				command(line);
				memmove(line, line + len, have - len);
				have -= len;
				line[have] = 0;
			}
			if (have == sizeof(line) - 1)
				have = 0; /* a line longer than the buffer: dropped */
		}
	}
}
