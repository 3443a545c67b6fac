/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-hostile-peer: a window creator that attacks the process attaching its
 * window (the tests in test/security/). Built with `make -C native tools`.
 *
 *   vop-hostile-peer tamper PATH FIELD DEVID QSIZE
 *       Creates a valid 1 MiB window at PATH with a byte-pipe device DEVID
 *       (the agent's stand-in geometry: QSIZE entries, 512-byte buffers),
 *       then makes FIELD exactly one byte too large:
 *         data_size   the data area ends one byte past the window
 *         ring_size   the ring area runs one byte into the data area
 *         pool_size   queue 0's pool ends one byte past the data area
 *         config_len  97 bytes of a 96-byte config space
 *       and keeps its side alive (heartbeat) until SIGTERM/SIGINT.
 *   vop-hostile-peer churn PATH DEVID QSIZE
 *       Creates a valid window and serves DEVID as its device side (the
 *       attacher's driver can bring it up); after "churn" arrives on stdin
 *       (or at once with no stdin) it rewrites the device table without end:
 *       seq, entry body and generation, ringing the peer's doorbell.
 *
 * Prints "ready" once the window is published (and "churning" once the
 * churn started); exits 0 on SIGTERM/SIGINT, removing the window file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vop/link.h"
#include "vop/window.h"
#include "vop/xport.h"

#define WIN_BYTES (1u << 20)

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static struct vop_window *create(const char *path, uint32_t dev_id, uint16_t qsize, int *slot)
{
	struct vop_xport *x;
	struct vop_window *w;
	struct vop_dev_spec spec;
	int rc;

	unlink(path); /* a leftover of an earlier run */
	rc = vop_shm_create(path, WIN_BYTES, &x);
	if (rc) {
		fprintf(stderr, "create %s: %s\n", path, strerror(-rc));
		exit(2);
	}
	rc = vop_window_create(x, NULL, &w);
	if (rc) {
		fprintf(stderr, "lay out: %s\n", strerror(-rc));
		exit(2);
	}
	vop_pipe_spec(&spec, dev_id, 0, qsize, 512, 1ull << VOP_F_EVENT_IDX);
	*slot = vop_devtab_publish(w, &spec);
	if (*slot < 0) {
		fprintf(stderr, "publish: %s\n", strerror(-*slot));
		exit(2);
	}
	return w;
}

static struct vop_dev_entry *entry(struct vop_window *w, int slot)
{
	return (struct vop_dev_entry *)(void *)((uint8_t *)w->dt + sizeof(struct vop_devtab_hdr) +
						(uint64_t)slot * w->entry_size);
}

static int tamper(const char *path, const char *field, uint32_t dev_id, uint16_t qsize)
{
	int slot;
	struct vop_window *w = create(path, dev_id, qsize, &slot);
	struct vop_dev_entry *e = entry(w, slot);

	if (!strcmp(field, "data_size"))
		w->hdr->data_size = w->hdr->window_size - w->hdr->data_off + 1;
	else if (!strcmp(field, "ring_size"))
		w->hdr->ring_size = w->hdr->data_off - w->hdr->ring_off + 1;
	else if (!strcmp(field, "pool_size"))
		e->queues[0].pool_size = w->hdr->data_off + w->hdr->data_size - e->queues[0].pool_off + 1;
	else if (!strcmp(field, "config_len"))
		e->config_len = VOP_CONFIG_MAX + 1;
	else {
		fprintf(stderr, "unknown field %s\n", field);
		return 2;
	}
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		vop_window_heartbeat(w); /* a live, "healthy" peer */
		sleep_ms(50);
	}
	vop_window_close(w);
	return 0;
}

static int churn(const char *path, uint32_t dev_id, uint16_t qsize)
{
	struct vop_link_config c;
	struct vop_pipe_config pc;
	struct vop_link *l;
	struct vop_dev_entry *e;
	struct pollfd p = { 0, POLLIN, 0 };
	uint32_t i = 0;
	int slot, rc;
	bool churning = false;
	struct vop_window *w = create(path, dev_id, qsize, &slot);

	/* Serve the device honestly (our own worker must not give up on our own churn). */
	memset(&c, 0, sizeof(c));
	c.spin_ns = 50000;
	c.devtab_unstable_ms = 0xffffffffu;
	rc = vop_link_create(w, &c, &l);
	memset(&pc, 0, sizeof(pc));
	pc.msg_size = 256;
	pc.segs = 1;
	pc.tx_mode = VOP_PIPE_SINK;
	pc.rx_mode = VOP_PIPE_OFF;
	pc.verify = true;
	rc = rc ? rc : vop_link_attach_pipe(l, dev_id, VOP_ROLE_DEVICE, &pc);
	rc = rc ? rc : vop_link_start(l);
	if (rc) {
		fprintf(stderr, "serve: %s\n", strerror(-rc));
		return 2;
	}
	e = entry(w, slot);
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		if (!churning) {
			char buf[64];
			int n = poll(&p, 1, 50);

			if (n > 0) {
				ssize_t r = read(0, buf, sizeof(buf));

				/* "churn" on stdin (or stdin closed) starts it */
				churning = r <= 0 || memmem(buf, (size_t)r, "churn", 5) != NULL;
				if (r <= 0)
					p.fd = -1;
			} else if (n < 0 && errno != EINTR) {
				churning = true;
			}
			if (churning) {
				printf("churning\n");
				fflush(stdout);
			}
			continue;
		}
		/* The body changes under a moving seq (never a consistent copy for long) ... */
		__atomic_fetch_add(&e->seq, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&e->features_offered,
				 (1ull << VOP_F_VERSION_1) | (1ull << VOP_F_EVENT_IDX) | ((uint64_t)(i & 1) << 28),
				 __ATOMIC_RELAXED);
		__atomic_store_n(&e->sides[0].config[i % VOP_CONFIG_MAX], (uint8_t)i, __ATOMIC_RELAXED);
		__atomic_fetch_add(&e->seq, 1, __ATOMIC_RELEASE);
		/* ... and the generation says "look again" every time. */
		__atomic_fetch_add(&w->dt->generation, 1, __ATOMIC_RELEASE);
		if ((++i & 4095) == 0) {
			vop_window_notify_peer(w);
			sleep_ms(1); /* leave the CPU to others now and then (2 vCPUs in CI) */
		}
	}
	vop_link_destroy(l);
	vop_window_close(w);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (argc == 6 && !strcmp(argv[1], "tamper"))
		return tamper(argv[2], argv[3], (uint32_t)strtoul(argv[4], NULL, 0),
			      (uint16_t)strtoul(argv[5], NULL, 0));
	if (argc == 5 && !strcmp(argv[1], "churn"))
		return churn(argv[2], (uint32_t)strtoul(argv[3], NULL, 0), (uint16_t)strtoul(argv[4], NULL, 0));
	fprintf(stderr, "usage: %s tamper PATH FIELD DEVID QSIZE | churn PATH DEVID QSIZE\n", argv[0]);
	return 2;
}
