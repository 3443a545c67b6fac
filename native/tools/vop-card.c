/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-card: the card side of a pci-bar link with no agent (docs/card.md). One
 * static binary for a card's small Linux (or a QEMU guest): it maps the
 * window (a BAR through vfio-pci or sysfs, or the memory of an ivshmem
 * server), creates or attaches to it, and serves the device backends the
 * agent serves (native/devices: console pty, blk file or NBD export, net
 * TAP) with the same link worker, configured by a small key=value file that
 * mirrors the device part of a LinkSpec (vop/card_config.h). A blk driver
 * can surface its disk as a kernel block device: vop-card connects
 * /dev/nbdN to its own NBD export with the kernel's NBD ioctls.
 *
 *   vop-card --config FILE [--spin-us N] [--timeout-ms N] [--check]
 *
 * --check parses the file and exits (0, or 1 with the error). stdout, one
 * line each, flushed: "endpoint NAME KEY VALUE" per local surface, then
 * "ready id=OWN peer=PEER"; the link's events on stderr. SIGTERM/SIGINT
 * stop cleanly (the window side is marked gone, a window we created is
 * retired; an NBD device is disconnected). Exit status 0, or 1 with a
 * message.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/nbd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "vop/card_config.h"
#include "vop/dev_backend.h"
#include "vop/link.h"
#include "vop/stream.h"
#include "vop/stream_tls.h"
#include "vop/window.h"
#include "vop/window_size.h"
#include "vop/xport.h"
#include "vop/xport_pci.h"
#include "win_access.h"

static volatile sig_atomic_t g_stop;
static struct vop_card_config g_cfg; /* large; its device configs point into itself */

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *const EVENTS[] = {
	[VOP_EV_QUEUE_BROKEN] = "queue-broken",     [VOP_EV_PEER_RESET] = "peer-reset",
	[VOP_EV_PEER_GONE] = "peer-gone",           [VOP_EV_DEVICE_REMOVED] = "device-removed",
	[VOP_EV_RESET_DONE] = "reset-done",         [VOP_EV_RESET_TIMEOUT] = "reset-timeout",
	[VOP_EV_NEEDS_RESET] = "needs-reset",       [VOP_EV_PEER_UP] = "peer-up",
	[VOP_EV_BACKEND_FAILED] = "backend-failed", [VOP_EV_LINK_FAILED] = "link-failed",
};

static _Atomic int g_failed;

static void on_event(void *ctx, const struct vop_event *ev)
{
	(void)ctx;
	fprintf(stderr, "vop-card: event %s dev=%u queue=%u epoch=%u\n",
		ev->type < sizeof(EVENTS) / sizeof(EVENTS[0]) && EVENTS[ev->type] ? EVENTS[ev->type] : "?",
		ev->dev_id, ev->queue, ev->epoch);
	if (ev->type == VOP_EV_LINK_FAILED)
		atomic_store(&g_failed, 1);
}

static int open_xport(const struct vop_card_window *w, struct vop_xport **x)
{
	if (w->access == VOP_CARD_IVSHMEM) {
		struct vop_pci_ivshmem_config c = {
			.socket = w->path,
			.peer_id = w->peer_id,
			.offset = w->offset,
			.size = w->size,
			.vector = w->vector,
			.vectors = w->vectors,
			.doorbell = w->doorbell,
			.poll_max_us = w->poll_max_us,
			.timeout_ms = 5000,
		};

		return vop_pci_ivshmem_open(&c, x);
	} else {
		struct vop_pci_bar_config c = {
			.bar_path = w->access == VOP_CARD_BAR ? w->path : NULL,
			.vfio_bdf = w->access == VOP_CARD_VFIO ? w->path : NULL,
			.bar = w->bar,
			.wc = w->wc,
			.offset = w->offset,
			.size = w->size,
			.regs_path = w->doorbell_path[0] ? w->doorbell_path : NULL,
			.peer_id = w->peer_id,
			.vector = w->vector,
			.doorbell = w->doorbell,
			.poll_max_us = w->poll_max_us,
		};

		return vop_pci_bar_open(&c, x);
	}
}

/* ---- /dev/nbdN: the kernel's NBD client on our own export ---- */

struct nbd_dev {
	int nbd;     /* /dev/nbdN */
	int sock;    /* our end of the export */
	pthread_t thread;
	bool running;
	int rc;      /* NBD_DO_IT's result */
};

static int read_full(int fd, void *buf, size_t n)
{
	size_t o = 0;

	while (o < n) {
		ssize_t r = read(fd, (char *)buf + o, n - o);

		if (r == 0)
			return -ECONNRESET;
		if (r < 0 && errno != EINTR)
			return -errno;
		if (r > 0)
			o += (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
	size_t o = 0;

	while (o < n) {
		ssize_t w = write(fd, (const char *)buf + o, n - o);

		if (w < 0 && errno != EINTR)
			return -errno;
		if (w > 0)
			o += (size_t)w;
	}
	return 0;
}

static void *nbd_do_it(void *arg)
{
	struct nbd_dev *d = arg;

	/* Blocks until the device is disconnected (NBD_DISCONNECT) or the socket dies. */
	d->rc = ioctl(d->nbd, NBD_DO_IT) < 0 ? -errno : 0;
	return NULL;
}

/*
 * Newstyle handshake with NBD_OPT_EXPORT_NAME (the kernel takes over after
 * it: transmission phase), then hand the socket to /dev/nbdN.
 */
static int nbd_connect(const char *dev, const char *sock_path, const char *name, struct nbd_dev *d)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct {
		uint64_t magic, opt_magic;
		uint16_t flags;
	} __attribute__((packed)) hello;
	struct {
		uint64_t magic;
		uint32_t opt, len;
	} __attribute__((packed)) opt;
	struct {
		uint64_t size;
		uint16_t flags;
	} __attribute__((packed)) reply;
	uint32_t cflags = htobe32(3); /* FIXED_NEWSTYLE | NO_ZEROES */
	size_t nl = strlen(name);
	int rc;

	memset(d, 0, sizeof(*d));
	d->nbd = d->sock = -1;
	if (strlen(sock_path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	d->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (d->sock < 0)
		return -errno;
	if (connect(d->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -errno;
	if ((rc = read_full(d->sock, &hello, sizeof(hello))) != 0)
		return rc;
	if (be64toh(hello.magic) != 0x4e42444d41474943ull || be64toh(hello.opt_magic) != 0x49484156454f5054ull ||
	    !(be16toh(hello.flags) & 1u))
		return -EPROTO;
	opt.magic = htobe64(0x49484156454f5054ull);
	opt.opt = htobe32(1); /* NBD_OPT_EXPORT_NAME */
	opt.len = htobe32((uint32_t)nl);
	if ((rc = write_full(d->sock, &cflags, 4)) != 0 || (rc = write_full(d->sock, &opt, sizeof(opt))) != 0 ||
	    (rc = write_full(d->sock, name, nl)) != 0)
		return rc;
	if ((rc = read_full(d->sock, &reply, sizeof(reply))) != 0)
		return rc; /* the server closes on an unknown export */
	d->nbd = open(dev, O_RDWR | O_CLOEXEC);
	if (d->nbd < 0)
		return -errno;
	if (ioctl(d->nbd, NBD_SET_BLKSIZE, 512UL) < 0 ||
	    ioctl(d->nbd, NBD_SET_SIZE_BLOCKS, (unsigned long)(be64toh(reply.size) / 512u)) < 0 ||
	    ioctl(d->nbd, NBD_SET_FLAGS, (unsigned long)be16toh(reply.flags)) < 0 ||
	    ioctl(d->nbd, NBD_SET_SOCK, (unsigned long)d->sock) < 0)
		return -errno;
	if (pthread_create(&d->thread, NULL, nbd_do_it, d) != 0)
		return -EAGAIN;
	d->running = true;
	return 0;
}

static void nbd_close(struct nbd_dev *d)
{
	if (d->running) {
		ioctl(d->nbd, NBD_DISCONNECT);
		pthread_join(d->thread, NULL);
		ioctl(d->nbd, NBD_CLEAR_SOCK);
	}
	if (d->nbd >= 0)
		close(d->nbd);
	if (d->sock >= 0)
		close(d->sock);
	d->nbd = d->sock = -1;
	d->running = false;
}

/* ---- window.access=stream: a private window carried over a socket ---- */

static int die(const char *what, int rc);

/* The link secret: a regular file of mode 0600 or 0400 (trailing newlines dropped). */
static int read_secret(const char *path, uint8_t *out, uint32_t *len)
{
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 0077)) {
		close(fd);
		fprintf(stderr, "vop-card: %s must be a regular file of mode 0600\n", path);
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

/*
 * The stream transport (docs/stream-protocol.md): this side's rings live in a
 * private window (a memfd) whose other side is the bridge's proxy; device
 * roles listen on window.path, driver roles dial it (and dial again after a
 * lost connection). stdout: "listening ADDR" or "dialing ADDR", then per
 * connection "connected SECURITY" or "failed REASON"; after the first
 * connection the endpoints and "ready stream ADDR".
 */
static int run_stream(struct vop_card_config *cfg, long spin_us)
{
	static struct vop_devback *be[VOP_CARD_MAX_DEVICES];
	static struct nbd_dev nbd[VOP_CARD_MAX_DEVICES];
	const uint32_t max_chain = 65536 + 4096;
	const bool device = cfg->dev[0].cfg.role == VOP_ROLE_DEVICE;
	struct vop_card_stream *sc = &cfg->stream;
	struct vop_dev_spec specs[VOP_CARD_MAX_DEVICES];
	struct vop_window_plan plan;
	struct vop_xport *x0 = NULL, *x1 = NULL;
	struct vop_window *wa = NULL, *wb = NULL;
	struct vop_link *real = NULL, *proxy = NULL;
	struct vop_devctx *ctx = NULL;
	struct vop_link_config lc;
	struct vop_sconn_config cc;
	struct vop_sconn *conn = NULL;
	struct vop_sconn_status cs;
	struct vop_stls_config tls;
	uint8_t secret[VOP_STREAM_MAX_SECRET];
	uint32_t secret_len = 0, ids[VOP_CARD_MAX_DEVICES];
	uint64_t seen_ready = 0, seen_failed = 0;
	bool shown = false;
	const char *err = NULL;
	char msg[300];
	unsigned i, nbe = 0;
	int rc;

	if (sc->secret_file[0] && (rc = read_secret(sc->secret_file, secret, &secret_len)))
		return die(sc->secret_file, rc);
	for (i = 0; i < cfg->ndev; i++) {
		struct vop_devback_config *c = &cfg->dev[i].cfg;
		unsigned q;

		/* A blk request must fit one chain slot of the device side (max_chain): 64 KiB segments. */
		if (c->kind == VOP_DEVBACK_BLK && (c->blk.seg_bytes == 0 || c->blk.seg_bytes > 65536))
			c->blk.seg_bytes = 65536;
		if ((rc = vop_devback_spec(c, device ? 1 : 0, &specs[i]))) {
			snprintf(msg, sizeof(msg), "device %s: table entry", cfg->dev[i].name);
			return die(msg, rc);
		}
		if (device)
			for (q = 0; q < specs[i].num_queues; q++)
				specs[i].pool_size[q] = vop_stream_pool_size(specs[i].queue_size[q], max_chain);
		ids[i] = c->dev_id;
	}
	if ((rc = vop_window_plan_for(specs, cfg->ndev, 0, &plan)) ||
	    (rc = vop_shm_create(NULL, plan.size + (1u << 20), &x0)) || (rc = vop_window_create(x0, NULL, &wa)) ||
	    (rc = vop_shm_open_fd(x0->fd, &x1)) || (rc = vop_window_attach(x1, &wb)))
		return die("private window", rc);
	for (i = 0; i < cfg->ndev; i++)
		if ((rc = vop_devtab_publish(wa, &specs[i])) < 0)
			return die("publish", rc);
	/* device_side 1 in every entry: the real device (device roles) or the proxy device sits on wb. */
	memset(&lc, 0, sizeof(lc));
	lc.spin_ns = (uint64_t)(spin_us > 0 ? spin_us : 1) * 1000u;
	lc.reset_on_needs_reset = true;
	lc.on_event = on_event;
	if ((rc = vop_link_create(device ? wb : wa, &lc, &real))) {
		err = "link";
		goto out;
	}
	lc.on_event = NULL;
	if ((rc = vop_link_create(device ? wa : wb, &lc, &proxy))) {
		err = "proxy link";
		goto out;
	}
	if ((rc = vop_devctx_create(device ? wb : wa, &ctx))) {
		err = "device context";
		goto out;
	}
	for (i = 0; i < cfg->ndev; i++) {
		struct vop_devback_config c = cfg->dev[i].cfg;

		c.find_timeout_ms = 1000;
		err = NULL;
		if ((rc = vop_devback_open(ctx, real, &c, &be[i], &err))) {
			snprintf(msg, sizeof(msg), "device %s: %s", cfg->dev[i].name, err ? err : "open");
			err = msg;
			goto out;
		}
		nbe++;
	}
	if ((rc = vop_link_start(real)) || (rc = vop_link_start(proxy))) {
		err = "start";
		goto out;
	}
	memset(&cc, 0, sizeof(cc));
	cc.address = cfg->window.path;
	cc.device_side = device;
	cc.secret = secret_len ? secret : NULL;
	cc.secret_len = secret_len;
	cc.allow_plain = sc->allow_plain;
	if (sc->tls_ca[0]) {
		tls.ca = sc->tls_ca;
		tls.cert = sc->tls_cert;
		tls.key = sc->tls_key;
		tls.peer_id = sc->tls_peer;
		cc.tls = &tls;
	}
	cc.max_chain = max_chain;
	cc.dev_ids = ids;
	cc.ndevs = cfg->ndev;
	cc.real = real;
	if ((rc = vop_sconn_start(proxy, &cc, &conn))) {
		snprintf(msg, sizeof(msg), "%s %s", device ? "listen on" : "dial", cfg->window.path);
		err = msg;
		goto out;
	}
	printf("%s %s\n", device ? "listening" : "dialing", cfg->window.path);
	while (!g_stop && !atomic_load(&g_failed)) {
		vop_sconn_status(conn, &cs);
		if (cs.failures != seen_failed) {
			seen_failed = cs.failures;
			printf("failed %s\n", cs.last_reason);
		}
		if (cs.connections != seen_ready) {
			seen_ready = cs.connections;
			printf("connected %s\n", cs.security);
		}
		if (!shown && seen_ready) {
			shown = true;
			for (i = 0; i < nbe; i++) {
				struct vop_card_device *d = &cfg->dev[i];
				struct vop_devback_endpoints ep;
				struct vop_blk_driver *bd = vop_devback_blk_driver(be[i]);

				if (bd && (rc = vop_blk_driver_wait_ready(bd, 60000))) {
					snprintf(msg, sizeof(msg), "device %s: wait for the disk", d->name);
					err = msg;
					goto out;
				}
				vop_devback_endpoints(be[i], &ep);
				if (ep.pty[0])
					printf("endpoint %s pty %s\n", d->name, ep.pty);
				if (ep.tap[0])
					printf("endpoint %s tap %s\n", d->name, ep.tap);
				if (ep.nbd_socket[0])
					printf("endpoint %s nbd %s\n", d->name, ep.nbd_socket);
				if (bd && d->nbd_device[0]) {
					rc = nbd_connect(d->nbd_device, d->cfg.blk.nbd.unix_path,
							 d->cfg.blk.nbd.export_name ? d->cfg.blk.nbd.export_name : "vop",
							 &nbd[i]);
					if (rc) {
						snprintf(msg, sizeof(msg), "device %s: connect %s", d->name, d->nbd_device);
						err = msg;
						goto out;
					}
					printf("endpoint %s block %s\n", d->name, d->nbd_device);
				}
			}
			printf("ready stream %s\n", cfg->window.path);
		}
		usleep(20000);
	}
	rc = atomic_load(&g_failed) ? -EPROTO : 0;
	if (rc)
		err = "the link failed";
out:
	for (i = 0; i < VOP_CARD_MAX_DEVICES; i++)
		if (nbd[i].running || nbd[i].sock > 0 || nbd[i].nbd > 0)
			nbd_close(&nbd[i]);
	vop_sconn_stop(conn);
	if (proxy)
		vop_link_stop(proxy);
	vop_link_destroy(proxy);
	if (real)
		vop_link_stop(real);
	for (i = 0; i < nbe; i++)
		vop_devback_close(real, be[i]);
	vop_link_destroy(real);
	vop_devctx_destroy(ctx);
	OPENSSL_cleanse(secret, sizeof(secret));
	vop_window_close(wb);
	vop_window_close(wa);
	if (rc)
		return die(err ? err : "vop-card", rc);
	return 0;
}

/* ---- main ---- */

static int read_file(const char *path, char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t r;

	*len = 0;
	if (fd < 0)
		return -errno;
	while ((r = read(fd, buf + *len, cap - *len)) > 0)
		*len += (size_t)r;
	close(fd);
	if (r < 0)
		return -errno;
	return *len >= cap ? -E2BIG : 0;
}

static int die(const char *what, int rc)
{
	fprintf(stderr, "vop-card: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	return 1;
}

int main(int argc, char **argv)
{
	static char text[VOP_CARD_TEXT_MAX + 1];
	static struct vop_devback *be[VOP_CARD_MAX_DEVICES];
	static struct nbd_dev nbd[VOP_CARD_MAX_DEVICES];
	const char *cfg_path = NULL, *err = NULL;
	long spin_us = 20, timeout_ms = 0;
	bool check = false;
	struct vop_card_config *cfg = &g_cfg;
	struct vop_xport *x = NULL;
	struct vop_window *w = NULL;
	struct vop_link *l = NULL;
	struct vop_devctx *ctx = NULL;
	struct vop_link_config lc;
	struct sigaction sa;
	char msg[256];
	size_t len;
	unsigned i, nbe = 0;
	int rc, status = 1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < (unsigned)argc; i++) {
		const char *a = argv[i], *v = i + 1 < (unsigned)argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--check")) {
			check = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "usage: vop-card --config FILE [--spin-us N] [--timeout-ms N] [--check]\n");
			return 1;
		}
		i++;
		if (!strcmp(a, "--config"))
			cfg_path = v;
		else if (!strcmp(a, "--spin-us"))
			spin_us = strtol(v, NULL, 10);
		else if (!strcmp(a, "--timeout-ms"))
			timeout_ms = strtol(v, NULL, 10);
		else {
			fprintf(stderr, "vop-card: unknown option %s\n", a);
			return 1;
		}
	}
	if (!cfg_path) {
		fprintf(stderr, "usage: vop-card --config FILE [--spin-us N] [--timeout-ms N] [--check]\n");
		return 1;
	}
	rc = read_file(cfg_path, text, sizeof(text), &len);
	if (rc)
		return die(cfg_path, rc);
	rc = vop_card_config_parse(text, len, cfg, msg, sizeof(msg));
	if (rc) {
		fprintf(stderr, "vop-card: %s: %s\n", cfg_path, msg);
		return 1;
	}
	if (check) {
		printf("ok %u devices\n", cfg->ndev);
		return 0;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (cfg->window.access == VOP_CARD_STREAM)
		return run_stream(cfg, spin_us);
	rc = open_xport(&cfg->window, &x);
	if (rc)
		return die("open the window", rc);
	if (cfg->window.creator) {
		rc = vop_window_create(x, NULL, &w);
		if (rc) {
			vop_xport_destroy(x);
			return die("lay out the window", rc);
		}
		for (i = 0; i < cfg->ndev; i++) {
			rc = vop_devback_publish(w, &cfg->dev[i].cfg);
			if (rc < 0) {
				snprintf(msg, sizeof(msg), "publish %s", cfg->dev[i].name);
				vop_window_close(w);
				return die(msg, rc);
			}
		}
	} else {
		uint64_t deadline = timeout_ms > 0 ? now_ms() + (uint64_t)timeout_ms : UINT64_MAX;

		/* The peer lays the window out when it is ready: look until it is there. */
		while ((rc = vop_window_attach(x, &w)) == -EAGAIN || rc == -EPROTO || rc == -EBUSY) {
			if (g_stop || now_ms() > deadline)
				break;
			usleep(50000);
		}
		if (rc) {
			vop_xport_destroy(x);
			return die("attach to the window", rc);
		}
	}
	memset(&lc, 0, sizeof(lc));
	lc.spin_ns = (uint64_t)(spin_us > 0 ? spin_us : 1) * 1000u;
	lc.reset_on_needs_reset = true; /* no control plane here to decide */
	lc.on_event = on_event;
	rc = vop_link_create(w, &lc, &l);
	if (rc) {
		vop_window_close(w);
		return die("link", rc);
	}
	rc = vop_devctx_create(w, &ctx);
	if (rc) {
		err = "device context";
		goto out;
	}
	for (i = 0; i < cfg->ndev; i++) {
		struct vop_devback_config c = cfg->dev[i].cfg;

		c.find_timeout_ms = 60000;
		err = NULL;
		rc = vop_devback_open(ctx, l, &c, &be[i], &err);
		if (rc) {
			const char *why = atomic_load(&w->entry_problem);

			/* A refused table entry names its field (the peer's table; nothing of it is used). */
			snprintf(msg, sizeof(msg), "device %s: %s%s%s", cfg->dev[i].name, err ? err : "open",
				 rc == -EPROTO && why ? ": " : "", rc == -EPROTO && why ? why : "");
			err = msg;
			goto out;
		}
		nbe++;
	}
	rc = vop_link_start(l);
	if (rc) {
		err = "start";
		goto out;
	}
	for (i = 0; i < nbe; i++) {
		struct vop_card_device *d = &cfg->dev[i];
		struct vop_devback_endpoints ep;
		struct vop_blk_driver *bd = vop_devback_blk_driver(be[i]);

		if (bd) {
			rc = vop_blk_driver_wait_ready(bd, 120000);
			if (rc) {
				snprintf(msg, sizeof(msg), "device %s: wait for the disk", d->name);
				err = msg;
				goto out;
			}
		}
		vop_devback_endpoints(be[i], &ep);
		if (ep.pty[0])
			printf("endpoint %s pty %s\n", d->name, ep.pty);
		if (ep.tap[0])
			printf("endpoint %s tap %s\n", d->name, ep.tap);
		if (ep.nbd_socket[0])
			printf("endpoint %s nbd %s\n", d->name, ep.nbd_socket);
		if (bd && d->nbd_device[0]) {
			rc = nbd_connect(d->nbd_device, d->cfg.blk.nbd.unix_path,
					 d->cfg.blk.nbd.export_name ? d->cfg.blk.nbd.export_name : "vop", &nbd[i]);
			if (rc) {
				snprintf(msg, sizeof(msg), "device %s: connect %s", d->name, d->nbd_device);
				err = msg;
				goto out;
			}
			printf("endpoint %s block %s\n", d->name, d->nbd_device);
		}
	}
	printf("ready id=%d peer=%d\n", vop_pci_own_id(x), vop_pci_peer_id(x));
	while (!g_stop && !atomic_load(&g_failed))
		usleep(100000);
	status = atomic_load(&g_failed) ? 1 : 0;
	if (status)
		fprintf(stderr, "vop-card: the link failed\n");
	rc = 0;
out:
	for (i = 0; i < VOP_CARD_MAX_DEVICES; i++)
		if (nbd[i].running || nbd[i].sock > 0 || nbd[i].nbd > 0)
			nbd_close(&nbd[i]);
	if (l)
		vop_link_stop(l);
	for (i = 0; i < nbe; i++)
		vop_devback_close(l, be[i]);
	vop_link_destroy(l);
	vop_devctx_destroy(ctx);
	/* The creator leaving cleanly retires its window: a later creator lays out a fresh one. */
	if (w && cfg->window.creator && g_stop)
		vop_store_release_u32(&w->hdr->magic, 0);
	vop_window_close(w);
	if (rc)
		return die(err ? err : "vop-card", rc);
	return status;
}
