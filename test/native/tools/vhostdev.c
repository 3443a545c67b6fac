/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhostdev: a TEST TOOL (not shipped): one vhost-user device of
 * vop/dev_vhost.h in a process of its own, for the vhost-user tests and
 * `npm run bench:vhost`. `make -C native tools` builds out/tools/vhostdev.
 *
 *   vhostdev --socket PATH [--client] [--mode OCTAL] [--spin-us N]
 *            [--max-queue-size N] [--allow-unsealed] [--no-event-idx]
 *            [--stats-ms N] [--offloads] [--mtu N] [--queue-pairs N]
 *            (--tap NAME [--netns NS] | --dgram LOCAL,PEER | --blk FILE [--ro] | --sink | --sink-copy)
 *
 * Prints "ready" once the socket is bound (server) or resolved (client),
 * then one line per device event ("event connected 1", "event started
 * 0x...", "event protocol-error SET_MEM_TABLE -22 why...", ...), and with
 * --stats-ms a line "stats FRAMES BYTES" that often (transmitted frames of
 * a net device or the sink). SIGTERM/SIGINT: the counters as one JSON line
 * on stderr, exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vop/dev_vhost.h"

static volatile sig_atomic_t g_stop;
static pthread_mutex_t g_out = PTHREAD_MUTEX_INITIALIZER;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static const char *ev_name(uint32_t t)
{
	switch (t) {
	case VOP_VHU_EV_CONNECTED:
		return "connected";
	case VOP_VHU_EV_DISCONNECTED:
		return "disconnected";
	case VOP_VHU_EV_PROTOCOL_ERROR:
		return "protocol-error";
	case VOP_VHU_EV_STARTED:
		return "started";
	case VOP_VHU_EV_STOPPED:
		return "stopped";
	case VOP_VHU_EV_QUEUE_BROKEN:
		return "queue-broken";
	case VOP_VHU_EV_BACKEND_FAILED:
		return "backend-failed";
	default:
		return "unknown";
	}
}

static void on_event(void *ctx, const struct vop_vhu_event *ev)
{
	(void)ctx;
	pthread_mutex_lock(&g_out);
	switch (ev->type) {
	case VOP_VHU_EV_CONNECTED:
		printf("event connected %llu\n", (unsigned long long)ev->count);
		break;
	case VOP_VHU_EV_STARTED:
		printf("event started 0x%llx\n", (unsigned long long)ev->features);
		break;
	case VOP_VHU_EV_PROTOCOL_ERROR:
		printf("event protocol-error %s %d %s\n", vop_vhu_request_name(ev->request), ev->error,
		       ev->why ? ev->why : "");
		break;
	case VOP_VHU_EV_QUEUE_BROKEN:
		printf("event queue-broken %u %s\n", ev->queue, vop_vq_reason_name(ev->reason));
		break;
	default:
		printf("event %s %d\n", ev_name(ev->type), ev->error);
		break;
	}
	fflush(stdout);
	pthread_mutex_unlock(&g_out);
}

static void print_json(struct vop_vhost *h)
{
	struct vop_devback_counters c;
	struct vop_vhu_status st;
	struct vop_vq_stats qs[VOP_VHU_MAX_QUEUES];
	unsigned q, nq = vop_vhost_rings(h);

	vop_vhost_counters(h, &c);
	vop_vhu_status(vop_vhost_vhu(h), &st);
	memset(qs, 0, sizeof(qs));
	for (q = 0; q < nq; q++)
		vop_vhu_queue_stats(vop_vhost_vhu(h), q, &qs[q]);
	fprintf(stderr,
		"{\"connections\":%llu,\"disconnects\":%llu,\"protocol_errors\":%llu,\"messages\":%llu,"
		"\"starts\":%llu,\"q0_buffers\":%llu,\"q1_buffers\":%llu,\"q1_notify\":%llu,",
		(unsigned long long)st.connections, (unsigned long long)st.disconnects,
		(unsigned long long)st.protocol_errors, (unsigned long long)st.messages,
		(unsigned long long)st.starts, (unsigned long long)qs[0].c[VOP_VQS_BUFFERS],
		(unsigned long long)qs[1].c[VOP_VQS_BUFFERS], (unsigned long long)qs[1].c[VOP_VQS_NOTIFY_SENT]);
	for (q = 2; q < nq; q++) /* further queue pairs */
		fprintf(stderr, "\"q%u_buffers\":%llu,", q, (unsigned long long)qs[q].c[VOP_VQS_BUFFERS]);
	if (c.kind == VOP_DEVBACK_BLK)
		fprintf(stderr, "\"reads\":%llu,\"writes\":%llu,\"flushes\":%llu,\"recovered\":%llu,\"ioerr\":%llu}\n",
			(unsigned long long)c.blk.reads, (unsigned long long)c.blk.writes,
			(unsigned long long)c.blk.flushes, (unsigned long long)c.blk.recovered,
			(unsigned long long)c.blk.ioerr);
	else
		fprintf(stderr,
			"\"tx_frames\":%llu,\"tx_bytes\":%llu,\"rx_frames\":%llu,\"rx_bytes\":%llu,"
			"\"tx_dropped\":%llu,\"rx_dropped\":%llu,\"bad_headers\":%llu}\n",
			(unsigned long long)c.net.tx_frames, (unsigned long long)c.net.tx_bytes,
			(unsigned long long)c.net.rx_frames, (unsigned long long)c.net.rx_bytes,
			(unsigned long long)c.net.tx_dropped, (unsigned long long)c.net.rx_dropped,
			(unsigned long long)c.net.bad_headers);
}

int main(int argc, char **argv)
{
	static struct vop_vhost_config cfg;
	static char dgram_local[256], dgram_peer[256];
	struct vop_vhost *h;
	const char *err = NULL;
	long stats_ms = 0;
	struct sigaction sa;
	int i, rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	cfg.vhu.server = true;
	cfg.vhu.socket_gid = -1;
	cfg.vhu.spin_ns = 50000;
	cfg.vhu.on_event = on_event;
	cfg.dev.event_idx = true;
	cfg.kind = 0;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--client")) {
			cfg.vhu.server = false;
		} else if (!strcmp(a, "--allow-unsealed")) {
			cfg.vhu.allow_unsealed = true;
		} else if (!strcmp(a, "--no-event-idx")) {
			cfg.dev.event_idx = false;
		} else if (!strcmp(a, "--offloads")) {
			cfg.dev.net.offloads = true;
		} else if (!strcmp(a, "--ro")) {
			cfg.dev.blk.ro = true;
			cfg.dev.blk.device.ro = true;
		} else if (!strcmp(a, "--sink")) {
			cfg.kind = VOP_VHOST_SINK;
		} else if (!strcmp(a, "--sink-copy")) {
			cfg.kind = VOP_VHOST_SINK;
			cfg.sink_copy = true;
		} else if (!v) {
			fprintf(stderr, "vhostdev: %s needs a value\n", a);
			return 1;
		} else {
			i++;
			if (!strcmp(a, "--socket")) {
				cfg.vhu.path = v;
			} else if (!strcmp(a, "--mode")) {
				cfg.vhu.socket_mode = (uint32_t)strtoul(v, NULL, 8);
			} else if (!strcmp(a, "--spin-us")) {
				cfg.vhu.spin_ns = (uint64_t)strtoul(v, NULL, 0) * 1000u;
			} else if (!strcmp(a, "--max-queue-size")) {
				cfg.vhu.max_queue_size = (uint16_t)strtoul(v, NULL, 0);
			} else if (!strcmp(a, "--stats-ms")) {
				stats_ms = strtol(v, NULL, 0);
			} else if (!strcmp(a, "--queue-pairs")) {
				cfg.queue_pairs = (uint16_t)strtoul(v, NULL, 0);
			} else if (!strcmp(a, "--mtu")) {
				cfg.dev.net.mtu = (uint16_t)strtoul(v, NULL, 0);
			} else if (!strcmp(a, "--netns")) {
				cfg.dev.net.backend.netns = v;
			} else if (!strcmp(a, "--tap")) {
				cfg.kind = VOP_VHOST_NET;
				cfg.dev.net.backend.tap_name = v;
			} else if (!strcmp(a, "--dgram")) {
				const char *comma = strchr(v, ',');

				if (!comma || (size_t)(comma - v) >= sizeof(dgram_local)) {
					fprintf(stderr, "vhostdev: --dgram LOCAL,PEER\n");
					return 1;
				}
				memcpy(dgram_local, v, (size_t)(comma - v));
				snprintf(dgram_peer, sizeof(dgram_peer), "%s", comma + 1);
				cfg.kind = VOP_VHOST_NET;
				cfg.dev.net.backend.dgram_local = dgram_local;
				cfg.dev.net.backend.dgram_peer = dgram_peer;
			} else if (!strcmp(a, "--blk")) {
				cfg.kind = VOP_VHOST_BLK;
				cfg.dev.blk.device.path = v;
			} else {
				fprintf(stderr, "vhostdev: unknown option %s\n", a);
				return 1;
			}
		}
	}
	if (!cfg.vhu.path || !cfg.kind) {
		fprintf(stderr, "usage: vhostdev --socket PATH (--tap NAME | --dgram L,P | --blk FILE | --sink) ...\n");
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	rc = vop_vhost_open(&cfg, &h, &err);
	if (rc) {
		fprintf(stderr, "vhostdev: %s: %s\n", err ? err : "open", strerror(-rc));
		return 1;
	}
	{
		struct vop_devback_endpoints ep;

		vop_vhost_endpoints(h, &ep);
		pthread_mutex_lock(&g_out);
		if (ep.tap[0])
			printf("tap %s\n", ep.tap);
		printf("ready\n");
		pthread_mutex_unlock(&g_out);
	}
	while (!g_stop) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		static long waited;

		nanosleep(&ts, NULL);
		waited += 20;
		if (stats_ms > 0 && waited >= stats_ms) {
			struct vop_devback_counters c;

			waited = 0;
			vop_vhost_counters(h, &c);
			pthread_mutex_lock(&g_out);
			if (c.kind == VOP_DEVBACK_BLK)
				printf("stats blk reads=%llu writes=%llu flushes=%llu ioerr=%llu\n",
				       (unsigned long long)c.blk.reads, (unsigned long long)c.blk.writes,
				       (unsigned long long)c.blk.flushes, (unsigned long long)c.blk.ioerr);
			else
				printf("stats %llu %llu rx %llu %llu\n", (unsigned long long)c.net.tx_frames,
				       (unsigned long long)c.net.tx_bytes, (unsigned long long)c.net.rx_frames,
				       (unsigned long long)c.net.rx_bytes);
			pthread_mutex_unlock(&g_out);
		}
	}
	print_json(h);
	vop_vhost_close(h);
	return 0;
}
