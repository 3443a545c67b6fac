/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-stream: a TEST TOOL (not shipped): one side of a stream link
 * (docs/stream-protocol.md) with real device backends and no agent, so that
 * two processes in two network namespaces can carry a network interface and
 * a console over TCP or a Unix socket. test/stream/ starts it;
 * `make -C native tools` builds it as out/tools/vop-stream.
 *
 *   vop-stream (--listen ADDR | --connect ADDR) (--secret-file F | --plain)
 *              [--max-chain BYTES] [--handshake-ms N] [--idle-ms N] DEVICE...
 *
 * ADDR is tcp:IPV4:PORT or unix:PATH. The device side listens, the driver
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
 * connection "ready" or "failed REASON" (and "stats {json}" on request:
 * SIGUSR1). SIGTERM/SIGINT stop; exit 0, or 1 with a message.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "devside.h"
#include "vop/stream.h"
#include "vop/window_size.h"

static volatile sig_atomic_t g_stop, g_stats;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		g_stats = 1;
	else
		g_stop = 1;
}

struct addr {
	struct sockaddr_storage ss;
	socklen_t len;
	bool tcp;
};

static int parse_addr(const char *s, struct addr *a)
{
	memset(a, 0, sizeof(*a));
	if (!strncmp(s, "unix:", 5)) {
		struct sockaddr_un *u = (struct sockaddr_un *)&a->ss;

		if (strlen(s + 5) == 0 || strlen(s + 5) >= sizeof(u->sun_path))
			return -EINVAL;
		u->sun_family = AF_UNIX;
		strcpy(u->sun_path, s + 5);
		a->len = sizeof(*u);
		return 0;
	}
	if (!strncmp(s, "tcp:", 4)) {
		struct sockaddr_in *in = (struct sockaddr_in *)&a->ss;
		char host[64];
		const char *colon = strrchr(s + 4, ':');
		long port;

		if (!colon || (size_t)(colon - (s + 4)) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 4, (size_t)(colon - (s + 4)));
		host[colon - (s + 4)] = 0;
		port = strtol(colon + 1, NULL, 10);
		if (port <= 0 || port > 65535 || inet_pton(AF_INET, host, &in->sin_addr) != 1)
			return -EINVAL;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		a->len = sizeof(*in);
		a->tcp = true;
		return 0;
	}
	return -EINVAL;
}

static void tune(int fd, bool tcp)
{
	int one = 1, idle = 5, intvl = 2, cnt = 3;

	if (!tcp)
		return;
	/* Latency matters (a ping, a console byte): no Nagle. Keepalive finds a dead path. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
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

/* connect with a 3 s bound (a dead path would hold a blocking connect for minutes). */
static int dial(const struct addr *a)
{
	struct pollfd pf;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), err = 0;
	socklen_t el = sizeof(err);

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	pf.fd = fd;
	pf.events = POLLOUT;
	if (poll(&pf, 1, 3000) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Sleep ms unless stopped. */
static void nap(unsigned ms)
{
	while (ms && !g_stop) {
		unsigned k = ms < 50 ? ms : 50;

		usleep(k * 1000u);
		ms -= k;
	}
}

int main(int argc, char **argv)
{
	static struct devside_dev devs[DEVSIDE_MAX];
	static char buf[8192];
	const char *listen_s = NULL, *connect_s = NULL, *secret_file = NULL;
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
	struct addr ad;
	struct sigaction sa;
	const char *err = NULL;
	unsigned ndev = 0, i, backoff = 100;
	int lfd = -1, rc;

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
	if (!listen_s == !connect_s || !secret_file == !plain || ndev == 0) {
		fprintf(stderr, "usage: vop-stream (--listen ADDR | --connect ADDR) (--secret-file F | --plain) DEVICE...\n");
		return 1;
	}
	device = listen_s != NULL;
	if (parse_addr(device ? listen_s : connect_s, &ad)) {
		fprintf(stderr, "vop-stream: address must be tcp:IPV4:PORT or unix:PATH\n");
		return 1;
	}
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

	if (device) {
		int one = 1;

		lfd = socket(ad.ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (ad.tcp)
			setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		else
			unlink(((struct sockaddr_un *)&ad.ss)->sun_path);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&ad.ss, ad.len) < 0 || listen(lfd, 4) < 0) {
			fprintf(stderr, "vop-stream: listen %s: %s\n", listen_s, strerror(errno));
			return 1;
		}
		printf("listening %s\n", listen_s);
	} else {
		printf("dialing %s\n", connect_s);
	}

	while (!g_stop) {
		struct vop_stream_config sc;
		struct vop_stream *s;
		struct vop_stream_status st;
		bool was_ready = false;
		int fd;

		if (device) {
			struct pollfd pf = { .fd = lfd, .events = POLLIN };

			if (poll(&pf, 1, 200) <= 0)
				continue;
			fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
		} else {
			fd = dial(&ad);
			if (fd < 0) {
				uint32_t r = 0;
				unsigned d;

				/* Jittered: two driver sides that lost the same peer do not dial in step. */
				if (getrandom(&r, sizeof(r), 0) != sizeof(r))
					r = 0;
				d = backoff / 2 + r % (backoff + 1);
				nap(d);
				backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
				continue;
			}
		}
		tune(fd, ad.tcp);
		memset(&sc, 0, sizeof(sc));
		sc.fd = fd;
		sc.device_side = device;
		sc.secret = secret_len ? secret : NULL;
		sc.secret_len = secret_len;
		sc.allow_plain = plain;
		sc.max_chain = max_chain;
		sc.handshake_ms = handshake_ms;
		sc.idle_ms = idle_ms;
		if ((rc = vop_stream_create(proxy, &sc, &s))) {
			fprintf(stderr, "vop-stream: bridge: %s\n", strerror(-rc));
			return 1;
		}
		for (i = 0; i < ndev; i++) {
			if ((rc = vop_stream_add(s, devs[i].cfg.dev_id))) {
				fprintf(stderr, "vop-stream: bridge device %u: %s\n", devs[i].cfg.dev_id,
					strerror(-rc));
				return 1;
			}
			/* A fresh connection starts every device afresh: the link reset of a reconnect. */
			if (!device)
				vop_link_reset_device(h->l, devs[i].cfg.dev_id);
		}
		vop_stream_start(s);
		for (;;) {
			vop_stream_status(s, &st);
			if (st.state == VOP_STREAM_READY && !was_ready) {
				was_ready = true;
				backoff = 100;
				printf("ready\n");
			}
			if (st.state == VOP_STREAM_FAILED || g_stop)
				break;
			if (g_stats) {
				g_stats = 0;
				devside_stats_json(h, buf, sizeof(buf));
				printf("stats {\"rtt_ns\":%llu,\"bytes_tx\":%llu,\"bytes_rx\":%llu,\"devices\":%s}\n",
				       (unsigned long long)st.rtt_ns, (unsigned long long)st.bytes_tx,
				       (unsigned long long)st.bytes_rx, buf);
			}
			usleep(20000);
		}
		if (st.state == VOP_STREAM_FAILED)
			printf("failed %s\n", st.reason);
		vop_stream_destroy(s);
		if (!device && !g_stop)
			nap(backoff);
	}
	vop_link_stop(proxy);
	vop_link_destroy(proxy);
	devside_close(h); /* closes wb or wa (the real side's window) */
	vop_window_close(device ? wa : wb);
	if (lfd >= 0)
		close(lfd);
	if (!ad.tcp && device)
		unlink(((struct sockaddr_un *)&ad.ss)->sun_path);
	return 0;
}
