/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vopdev: a standalone process that serves device backends on one side of
 * an shm window, so that two real processes can carry a disk, a network
 * interface and a console before (and besides) the agent. Used by the
 * integration tests and benchmarks in test/devices and test/bench.
 *
 *   vopdev --window PATH (--create MIB | --attach) [--spin-us N] DEVICE...
 *
 * DEVICE (ID is the link-unique device id, options separated by ':'):
 *   --blk-device ID:file=PATH[:ro][:direct][:threads=N][:serial=S]
 *   --blk-driver ID:[unix=PATH][:tcp=PORT][:qsize=N][:seg=KIB][:ro]
 *   --net-device ID:tap=NAME | sock=PATH:peer=PATH | udp=PORT:udppeer=PORT
 *   --net-driver ID:(same)[:qsize=N][:mtu=N][:mac=52-54-00-..]  (mac uses '-')
 *   --con-device ID:[pty=LINK][:log=FILE][:logmax=BYTES][:unix=PATH]
 *   --con-driver ID:[pty=LINK]
 * The creating side (--create) publishes every device it is given in the
 * device table (device side = its own side for *-device, the peer's for
 * *-driver); the attaching side only serves. Options that shape the table
 * entry (qsize, seg, ro, mtu, mac) are read on the creating side.
 *
 * Prints "ready" plus one "key value" line per endpoint to stdout once
 * serving; SIGTERM/SIGINT stop cleanly and print counters as JSON on
 * stderr. Exit status 0, or 1 with a message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vop/dev_blk.h"
#include "vop/dev_common.h"
#include "vop/dev_console.h"
#include "vop/dev_nbd.h"
#include "vop/dev_net.h"
#include "vop/xport.h"

#define MAX_DEVS 16

enum kind { BLK_DEV, BLK_DRV, NET_DEV, NET_DRV, CON_DEV, CON_DRV };

struct devarg {
	enum kind kind;
	uint32_t id;
	char opts[512];
	void *obj;      /* backend */
	void *extra;    /* nbd server */
};

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "vopdev: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

/* Find option key in "a=1:b:c=x"; copies its value (or "" for a flag) into out. */
static bool opt(const char *opts, const char *key, char *out, size_t outlen)
{
	size_t kl = strlen(key);
	const char *p = opts;

	while (p && *p) {
		const char *end = strchr(p, ':');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len >= kl && !strncmp(p, key, kl) && (len == kl || p[kl] == '=')) {
			size_t vl = len == kl ? 0 : len - kl - 1;

			if (vl >= outlen)
				vl = outlen - 1;
			memcpy(out, len == kl ? "" : p + kl + 1, vl);
			out[vl] = 0;
			return true;
		}
		p = end ? end + 1 : NULL;
	}
	return false;
}

static long opt_num(const char *opts, const char *key, long dflt)
{
	char v[64];

	return opt(opts, key, v, sizeof(v)) && v[0] ? strtol(v, NULL, 0) : dflt;
}

static void publish(struct vop_window *w, const struct devarg *a)
{
	struct vop_dev_spec spec;
	bool dev = a->kind == BLK_DEV || a->kind == NET_DEV || a->kind == CON_DEV;
	uint8_t dside = dev ? (uint8_t)w->side : (uint8_t)(w->side ^ 1u);
	char v[64];
	int rc;

	switch (a->kind) {
	case BLK_DEV:
	case BLK_DRV:
		vop_blk_spec(&spec, a->id, dside, (uint16_t)opt_num(a->opts, "qsize", 64),
			     (uint32_t)opt_num(a->opts, "seg", 512) * 1024u, opt(a->opts, "ro", v, sizeof(v)));
		break;
	case NET_DEV:
	case NET_DRV: {
		uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x76, 0x6f, (uint8_t)a->id };

		if (opt(a->opts, "mac", v, sizeof(v)))
			sscanf(v, "%hhx-%hhx-%hhx-%hhx-%hhx-%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
			       &mac[4], &mac[5]);
		vop_net_spec(&spec, a->id, dside, (uint16_t)opt_num(a->opts, "qsize", 256),
			     (uint16_t)opt_num(a->opts, "mtu", 1500), mac);
		break;
	}
	default:
		vop_console_spec(&spec, a->id, dside, (uint16_t)opt_num(a->opts, "qsize", 64));
		break;
	}
	rc = vop_devtab_publish(w, &spec);
	if (rc < 0)
		die("publish", rc);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	long create_mib = 0, spin_us = 20;
	bool attach = false;
	struct devarg devs[MAX_DEVS];
	unsigned ndev = 0, i;
	struct vop_xport *x = NULL;
	struct vop_window *w = NULL;
	struct vop_devloop *loop = NULL;
	struct vop_devloop_config lc;
	struct sigaction sa;
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < (unsigned)argc; i++) {
		const char *a = argv[i], *v = i + 1 < (unsigned)argc ? argv[i + 1] : NULL;
		static const struct {
			const char *name;
			enum kind kind;
		} kinds[] = { { "--blk-device", BLK_DEV }, { "--blk-driver", BLK_DRV },
			      { "--net-device", NET_DEV }, { "--net-driver", NET_DRV },
			      { "--con-device", CON_DEV }, { "--con-driver", CON_DRV } };
		unsigned k;

		if (!strcmp(a, "--attach")) {
			attach = true;
			continue;
		}
		if (!v) {
			fprintf(stderr, "vopdev: %s needs a value\n", a);
			return 1;
		}
		if (!strcmp(a, "--window")) {
			path = v;
			i++;
			continue;
		}
		if (!strcmp(a, "--create")) {
			create_mib = strtol(v, NULL, 0);
			i++;
			continue;
		}
		if (!strcmp(a, "--spin-us")) {
			spin_us = strtol(v, NULL, 0);
			i++;
			continue;
		}
		for (k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
			if (!strcmp(a, kinds[k].name))
				break;
		if (k == sizeof(kinds) / sizeof(kinds[0]) || ndev == MAX_DEVS) {
			fprintf(stderr, "vopdev: unknown or too many: %s\n", a);
			return 1;
		}
		memset(&devs[ndev], 0, sizeof(devs[ndev]));
		devs[ndev].kind = kinds[k].kind;
		devs[ndev].id = (uint32_t)strtoul(v, NULL, 0);
		if (strchr(v, ':'))
			snprintf(devs[ndev].opts, sizeof(devs[ndev].opts), "%s", strchr(v, ':') + 1);
		ndev++;
		i++;
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

	if (attach) {
		uint64_t deadline = vop_dev_now_ns() + 10000000000ull;

		for (;;) {
			rc = vop_shm_open(path, &x);
			if (rc == 0) {
				rc = vop_window_attach(x, &w);
				if (rc == 0)
					break;
				vop_xport_destroy(x);
				x = NULL;
			}
			if (vop_dev_now_ns() > deadline)
				die("attach", rc);
			usleep(10000);
		}
	} else {
		rc = vop_shm_create(path, (uint64_t)create_mib << 20, &x);
		if (rc)
			die("create window", rc);
		rc = vop_window_create(x, NULL, &w);
		if (rc)
			die("lay out window", rc);
		for (i = 0; i < ndev; i++)
			publish(w, &devs[i]);
	}
	memset(&lc, 0, sizeof(lc));
	lc.spin_ns = (uint64_t)(spin_us > 0 ? spin_us : 1) * 1000u;
	rc = vop_devloop_create(w, &lc, &loop);
	if (rc)
		die("devloop", rc);
	for (i = 0; i < ndev; i++) {
		struct devarg *a = &devs[i];
		char v[256], v2[256];

		switch (a->kind) {
		case BLK_DEV: {
			struct vop_blk_device_config c;
			char serial[32];

			memset(&c, 0, sizeof(c));
			if (!opt(a->opts, "file", v, sizeof(v)))
				die("--blk-device needs file=", -EINVAL);
			c.path = v;
			c.ro = opt(a->opts, "ro", v2, sizeof(v2));
			c.direct = opt(a->opts, "direct", v2, sizeof(v2));
			c.io_threads = (unsigned)opt_num(a->opts, "threads", 4);
			if (opt(a->opts, "serial", serial, sizeof(serial)))
				c.serial = serial;
			rc = vop_blk_device_create(loop, a->id, &c, (struct vop_blk_device **)&a->obj);
			if (rc)
				die("blk device", rc);
			break;
		}
		case BLK_DRV:
			/* the driver starts serving NBD after the loop runs (below) */
			rc = vop_blk_driver_create(loop, a->id, 60000, (struct vop_blk_driver **)&a->obj);
			if (rc)
				die("blk driver", rc);
			break;
		case NET_DEV:
		case NET_DRV: {
			struct vop_net_config c;

			char loc[300], peer[128];

			memset(&c, 0, sizeof(c));
			if (opt(a->opts, "sock", loc, sizeof(loc)) && opt(a->opts, "peer", peer, sizeof(peer))) {
				c.dgram_local = loc; /* Unix datagram paths */
				c.dgram_peer = peer;
			} else if (opt(a->opts, "udp", v2, sizeof(v2)) && opt(a->opts, "udppeer", peer, sizeof(peer))) {
				snprintf(loc, sizeof(loc), "127.0.0.1:%.16s", v2);
				snprintf(v2, sizeof(v2), "127.0.0.1:%.16s", peer);
				c.dgram_local = loc;
				c.dgram_peer = v2;
			} else if (opt(a->opts, "tap", v, sizeof(v))) {
				c.tap_name = v;
			} else {
				die("--net-* needs tap=NAME, sock=PATH:peer=PATH or udp=PORT:udppeer=PORT", -EINVAL);
			}
			rc = a->kind == NET_DEV ? vop_net_device_create(loop, a->id, &c, (struct vop_net **)&a->obj)
						: vop_net_driver_create(loop, a->id, &c, (struct vop_net **)&a->obj);
			if (rc)
				die("net", rc);
			printf("tap%u %s\n", a->id, vop_net_ifname((struct vop_net *)a->obj));
			break;
		}
		case CON_DEV:
		case CON_DRV: {
			struct vop_console_config c;
			char lg[256], ux[256];

			memset(&c, 0, sizeof(c));
			if (opt(a->opts, "pty", v, sizeof(v)))
				c.pty_link = v;
			else
				c.pty_link = NULL;
			c.want_pty = true;
			if (opt(a->opts, "log", lg, sizeof(lg)))
				c.log_path = lg;
			c.log_max = (uint64_t)opt_num(a->opts, "logmax", 1 << 20);
			if (opt(a->opts, "unix", ux, sizeof(ux)))
				c.unix_path = ux;
			rc = a->kind == CON_DEV
				     ? vop_console_device_create(loop, a->id, &c, (struct vop_console **)&a->obj)
				     : vop_console_driver_create(loop, a->id, &c, (struct vop_console **)&a->obj);
			if (rc)
				die("console", rc);
			printf("pty%u %s\n", a->id, vop_console_pty_name((struct vop_console *)a->obj));
			break;
		}
		}
	}
	rc = vop_devloop_start(loop);
	if (rc)
		die("start", rc);
	for (i = 0; i < ndev; i++) {
		struct devarg *a = &devs[i];
		struct vop_nbd_config nc;
		char ux[256];

		if (a->kind != BLK_DRV)
			continue;
		memset(&nc, 0, sizeof(nc));
		if (opt(a->opts, "unix", ux, sizeof(ux)))
			nc.unix_path = ux;
		nc.tcp_port = (int)opt_num(a->opts, "tcp", 0);
		rc = vop_nbd_start(a->obj, &nc, (struct vop_nbd **)&a->extra);
		if (rc)
			die("nbd", rc);
		printf("nbd%u-size %llu\n", a->id,
		       (unsigned long long)vop_blk_driver_capacity(a->obj));
		if (nc.tcp_port)
			printf("nbd%u-port %d\n", a->id, vop_nbd_port(a->extra));
	}
	printf("ready\n");
	while (!g_stop) {
		usleep(100000);
		rc = vop_devloop_error(loop);
		if (rc) {
			fprintf(stderr, "vopdev: backend failed: %s\n", strerror(-rc));
			break;
		}
	}
	for (i = 0; i < ndev; i++)
		if (devs[i].kind == BLK_DRV)
			vop_nbd_stop(devs[i].extra);
	vop_devloop_stop(loop);
	fprintf(stderr, "{");
	for (i = 0; i < ndev; i++) {
		struct devarg *a = &devs[i];

		if (i)
			fprintf(stderr, ",");
		if (a->kind == BLK_DEV) {
			struct vop_blk_stats s;

			vop_blk_device_stats(a->obj, &s);
			fprintf(stderr,
				"\"blk%u\":{\"reads\":%llu,\"writes\":%llu,\"flushes\":%llu,\"ioerr\":%llu,"
				"\"unsupp\":%llu,\"bad_requests\":%llu,\"recovered\":%llu}",
				a->id, (unsigned long long)s.reads, (unsigned long long)s.writes,
				(unsigned long long)s.flushes, (unsigned long long)s.ioerr,
				(unsigned long long)s.unsupp, (unsigned long long)s.bad_requests,
				(unsigned long long)s.recovered);
			vop_blk_device_destroy(a->obj);
		} else if (a->kind == BLK_DRV) {
			fprintf(stderr, "\"blkdrv%u\":{}", a->id);
			vop_blk_driver_destroy(a->obj);
		} else if (a->kind == NET_DEV || a->kind == NET_DRV) {
			struct vop_net_stats s;

			vop_net_stats(a->obj, &s);
			fprintf(stderr,
				"\"net%u\":{\"tx_frames\":%llu,\"rx_frames\":%llu,\"tx_dropped\":%llu,"
				"\"rx_dropped\":%llu,\"bad_headers\":%llu}",
				a->id, (unsigned long long)s.tx_frames, (unsigned long long)s.rx_frames,
				(unsigned long long)s.tx_dropped, (unsigned long long)s.rx_dropped,
				(unsigned long long)s.bad_headers);
			vop_net_destroy(a->obj);
		} else {
			struct vop_console_stats s;

			vop_console_stats(a->obj, &s);
			fprintf(stderr,
				"\"con%u\":{\"in_bytes\":%llu,\"out_bytes\":%llu,\"dropped\":%llu,"
				"\"log_bytes\":%llu,\"zero_len\":%llu}",
				a->id, (unsigned long long)s.in_bytes, (unsigned long long)s.out_bytes,
				(unsigned long long)s.dropped, (unsigned long long)s.log_bytes,
				(unsigned long long)s.zero_len);
			vop_console_destroy(a->obj);
		}
	}
	fprintf(stderr, "}\n");
	vop_devloop_destroy(loop);
	vop_window_close(w);
	return 0;
}
