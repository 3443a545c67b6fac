/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-stream: a TEST TOOL (not shipped): one side of a stream link
 * (docs/stream-protocol.md) with real device backends and no agent, so that
 * two processes in two network namespaces can carry a network interface and
 * a console over TCP or a Unix socket. test/stream/ starts it;
 * `make -C native tools` builds it as out/tools/vop-stream.
 *
 *   vop-stream (--listen ADDR | --connect ADDR) (--secret-file F | --plain | --tls-*)
 *              [--tls-ca F --tls-cert F --tls-key F --tls-peer ID]
 *              [--max-chain BYTES] [--handshake-ms N] [--idle-ms N] DEVICE...
 *
 * ADDR is tcp:IPV4:PORT, unix:PATH or vsock:CID:PORT. With the four --tls-*
 * options every connection runs TLS 1.3 with mutual certificates (the peer's
 * must carry ID as a DNS subjectAltName); a secret may be added on top. The device side listens, the driver
 * side dials. DEVICE is as for vopdev (--net-device 1:tap=vs0, --con-driver
 * 2:..., test/native/devside.h); every DEVICE must have the same role, the
 * one --listen (device) or --connect (driver) implies. The secret file must
 * be a regular file of mode 0600 (the secret is never printed).
 *
 * The private window (a memfd), the backends and both link sides live as
 * long as the process; each connection gets a fresh bridge. A lost
 * connection resets the devices and the driver side dials again with
 * jittered exponential backoff (100 ms doubling to 5 s, +-50 %); the device
 * side accepts the next connection. stdout, one line each: endpoints as
 * vopdev prints them, "listening ADDR" or "dialing ADDR", then per
 * connection "ready" (then "security TLSv1.3 ... + hmac") or "failed REASON" (and "stats {json}" on request:
 * SIGUSR1). SIGTERM/SIGINT stop; exit 0, or 1 with a message.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "devside.h"
#include "vop/stream.h"
#include "vop/stream_tls.h"
#include "vop/window_size.h"

static volatile sig_atomic_t g_stop, g_stats;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		g_stats = 1;
	else
		g_stop = 1;
}

static int read_secret(const char *path, uint8_t *out, uint32_t *len)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 0077)) {
		close(fd);
		fprintf(stderr, "vop-stream: %s must be a regular file of mode 0600\n", path);
		return -EPERM;
	}
	n = read(fd, out, VOP_STREAM_MAX_SECRET);
	close(fd);
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		n--;
	if (n <= 0)
		return -EINVAL;
	*len = (uint32_t)n;
	return 0;
}

int main(int argc, char **argv)
{
	static struct devside_dev devs[DEVSIDE_MAX];
	static char buf[8192];
	const char *listen_s = NULL, *connect_s = NULL, *secret_file = NULL;
	struct vop_stls_config tls = { 0 };
	bool plain = false, device;
	uint32_t max_chain = 65536 + 4096, handshake_ms = 5000, idle_ms = 0, secret_len = 0;
	uint8_t secret[VOP_STREAM_MAX_SECRET];
	struct vop_dev_spec specs[DEVSIDE_MAX];
	struct vop_window_plan plan;
	struct vop_xport *x0, *x1;
	struct vop_window *wa, *wb;
	struct vop_link *proxy;
	struct vop_link_config lc;
	struct devside *h;
	struct vop_sconn_config cc;
	struct vop_sconn *conn;
	struct vop_sconn_status cs;
	uint64_t seen_ready = 0, seen_failed = 0;
	uint32_t ids[DEVSIDE_MAX];
	struct sigaction sa;
	const char *err = NULL;
	unsigned ndev = 0, i;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < (unsigned)argc; i++) {
		const char *a = argv[i], *v = i + 1 < (unsigned)argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--plain")) {
			plain = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "vop-stream: %s needs a value\n", a);
			return 1;
		}
		i++;
		if (!strcmp(a, "--listen"))
			listen_s = v;
		else if (!strcmp(a, "--connect"))
			connect_s = v;
		else if (!strcmp(a, "--secret-file"))
			secret_file = v;
		else if (!strcmp(a, "--tls-ca"))
			tls.ca = v;
		else if (!strcmp(a, "--tls-cert"))
			tls.cert = v;
		else if (!strcmp(a, "--tls-key"))
			tls.key = v;
		else if (!strcmp(a, "--tls-peer"))
			tls.peer_id = v;
		else if (!strcmp(a, "--max-chain"))
			max_chain = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--handshake-ms"))
			handshake_ms = (uint32_t)strtoul(v, NULL, 0);
		else if (!strcmp(a, "--idle-ms"))
			idle_ms = (uint32_t)strtoul(v, NULL, 0);
		else if (!strncmp(a, "--", 2) && ndev < DEVSIDE_MAX) {
			rc = devside_parse(a + 2, v, &devs[ndev]);
			if (rc) {
				fprintf(stderr, "vop-stream: %s %s: %s\n", a, v, strerror(-rc));
				return 1;
			}
			ndev++;
		} else {
			fprintf(stderr, "vop-stream: unknown or too many: %s\n", a);
			return 1;
		}
	}
	if (!listen_s == !connect_s || (secret_file && plain) ||
	    (!secret_file && !plain && !tls.ca) || ndev == 0 ||
	    (tls.ca || tls.cert || tls.key || tls.peer_id) != (tls.ca && tls.cert && tls.key && tls.peer_id)) {
		fprintf(stderr, "usage: vop-stream (--listen ADDR | --connect ADDR) (--secret-file F | --plain) DEVICE...\n");
		return 1;
	}
	device = listen_s != NULL;
	if (secret_file && (rc = read_secret(secret_file, secret, &secret_len))) {
		fprintf(stderr, "vop-stream: secret file %s: %s\n", secret_file, strerror(-rc));
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	/*
	 * The private window: the real backends on one side, the bridge's proxy on the
	 * other. device_side is 1 in every entry: the real device (device side) or the
	 * proxy device (driver side) sits on side 1. The device side's pools hold one
	 * max_chain slot per head (chains arrive whole from the peer).
	 */
	for (i = 0; i < ndev; i++) {
		unsigned q;

		if ((devs[i].cfg.role == VOP_ROLE_DEVICE) != device) {
			fprintf(stderr, "vop-stream: device %u: --listen serves device roles, --connect driver roles\n",
				devs[i].cfg.dev_id);
			return 1;
		}
		if (vop_devback_spec(&devs[i].cfg, device ? 1 : 0, &specs[i])) {
			fprintf(stderr, "vop-stream: device %u: bad description\n", devs[i].cfg.dev_id);
			return 1;
		}
		if (device)
			for (q = 0; q < specs[i].num_queues; q++)
				specs[i].pool_size[q] = vop_stream_pool_size(specs[i].queue_size[q], max_chain);
	}
	if ((rc = vop_window_plan_for(specs, ndev, 0, &plan)) ||
	    (rc = vop_shm_create(NULL, plan.size + (1u << 20), &x0)) ||
	    (rc = vop_window_create(x0, NULL, &wa)) || (rc = vop_shm_open_fd(x0->fd, &x1)) ||
	    (rc = vop_window_attach(x1, &wb))) {
		fprintf(stderr, "vop-stream: private window: %s\n", strerror(-rc));
		return 1;
	}
	for (i = 0; i < ndev; i++) {
		if ((rc = vop_devtab_publish(wa, &specs[i])) < 0) {
			fprintf(stderr, "vop-stream: publish %u: %s\n", devs[i].cfg.dev_id, strerror(-rc));
			return 1;
		}
	}
	h = calloc(1, sizeof(*h));
	memset(&lc, 0, sizeof(lc));
	lc.spin_ns = 20000;
	lc.reset_on_needs_reset = true;
	lc.on_event = devside_event;
	lc.ctx = h;
	h->w = device ? wb : wa;
	if (!h || (rc = vop_link_create(h->w, &lc, &h->l)) || (rc = vop_devctx_create(h->w, &h->ctx))) {
		fprintf(stderr, "vop-stream: link: %s\n", strerror(rc ? -rc : ENOMEM));
		return 1;
	}
	lc.on_event = NULL;
	lc.ctx = NULL;
	if ((rc = vop_link_create(device ? wa : wb, &lc, &proxy))) {
		fprintf(stderr, "vop-stream: proxy link: %s\n", strerror(-rc));
		return 1;
	}
	for (i = 0; i < ndev; i++) {
		struct vop_devback_config c = devs[i].cfg;

		c.find_timeout_ms = 1000;
		if ((rc = vop_devback_open(h->ctx, h->l, &c, &h->dev[i], &err))) {
			fprintf(stderr, "vop-stream: device %u: %s: %s\n", c.dev_id, err ? err : "open",
				strerror(-rc));
			return 1;
		}
		h->n++;
	}
	if ((rc = vop_link_start(h->l)) || (rc = vop_link_start(proxy))) {
		fprintf(stderr, "vop-stream: start: %s\n", strerror(-rc));
		return 1;
	}
	devside_endpoints(h, buf, sizeof(buf));
	fputs(buf, stdout);

	memset(&cc, 0, sizeof(cc));
	cc.address = device ? listen_s : connect_s;
	cc.device_side = device;
	cc.secret = secret_len ? secret : NULL;
	cc.secret_len = secret_len;
	cc.allow_plain = plain;
	cc.tls = tls.ca ? &tls : NULL;
	cc.max_chain = max_chain;
	cc.handshake_ms = handshake_ms;
	cc.idle_ms = idle_ms;
	for (i = 0; i < ndev; i++)
		ids[i] = devs[i].cfg.dev_id;
	cc.dev_ids = ids;
	cc.ndevs = ndev;
	cc.real = h->l;
	if ((rc = vop_sconn_start(proxy, &cc, &conn))) {
		fprintf(stderr, "vop-stream: %s %s: %s\n", device ? "listen" : "dial", cc.address, strerror(-rc));
		return 1;
	}
	printf("%s %s\n", device ? "listening" : "dialing", cc.address);
	while (!g_stop) {
		vop_sconn_status(conn, &cs);
		if (cs.failures != seen_failed) {
			seen_failed = cs.failures;
			printf("failed %s\n", cs.last_reason);
		}
		if (cs.connections != seen_ready) {
			seen_ready = cs.connections;
			printf("ready\nsecurity %s\n", cs.security);
		}
		if (g_stats) {
			g_stats = 0;
			devside_stats_json(h, buf, sizeof(buf));
			printf("stats {\"rtt_ns\":%llu,\"bytes_tx\":%llu,\"bytes_rx\":%llu,\"devices\":%s}\n",
			       (unsigned long long)cs.rtt_ns, (unsigned long long)cs.bytes_tx,
			       (unsigned long long)cs.bytes_rx, buf);
		}
		usleep(20000);
	}
	vop_sconn_stop(conn);
	vop_link_stop(proxy);
	vop_link_destroy(proxy);
	devside_close(h); /* closes wb or wa (the real side's window) */
	vop_window_close(device ? wa : wb);
	return 0;
}
