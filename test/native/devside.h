/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test support, not product code: one window side with its device backends
 * for vopdev (test/native/tools/vopdev.c) and the C device tests, set up
 * from the compact "ID:opt[=value]:opt..." descriptions the tests and
 * benchmarks write on vopdev's command line. The descriptions are parsed
 * here into the typed configs of vop/dev_backend.h; the agent never sees
 * this format (its binding fills the same structs from typed JS objects).
 *
 * Description options per kind:
 *   blk-device  file=PATH fileroot=DIR|blkdev ro direct threads=N serial=S
 *   blk-driver  unix=PATH sockroot=DIR tcp=PORT|-1 tcphost=IP (IPv6 with "-" for ":")
 *               name=EXPORT qsize=SLOTS seg=KIB ro
 *               tlscert=PEM tlskey=PEM tlsca=PEM tlsnames=NAME,NAME|* tcpplain
 *               (a value too long for its field is -ENAMETOOLONG, never cut)
 *   net-device / net-driver  tap=NAME netns=NS | sock=PATH:peer=PATH:sockroot=DIR |
 *               udp=PORT:udppeer=PORT   qsize=N mtu=N mac=52-54-00-.. rxbuf=N nooffloads
 *   con-device  pty[=LINK] ptyroot=DIR log=FILE logroot=DIR logmax=BYTES
 *               logfiles=N unix=PATH sockroot=DIR qsize=N
 *   con-driver  pty[=LINK] ptyroot=DIR qsize=N
 *   every kind  noeventidx
 * blk qsize counts request slots (the ring holds 4 entries per slot;
 * default 64 slots = 256 entries); the other kinds' qsize is the ring size
 * (default 256 for net, 64 for a console: vopdev's own defaults, unchanged).
 */
#ifndef VOP_TEST_DEVSIDE_H
#define VOP_TEST_DEVSIDE_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vop/dev_backend.h"
#include "vop/xport.h"

#define DEVSIDE_MAX 16u

/* One parsed description: the typed config and the strings it points into. */
struct devside_dev {
	struct vop_devback_config cfg;
	char s[24][VOP_PATH_MAX]; /* string storage */
	char tls[4][1024];
	unsigned ns, ntls;
};

struct devside {
	struct vop_window *w;
	struct vop_link *l;
	struct vop_devctx *ctx;
	_Atomic int error; /* first backend failure (-errno), from the link's events */
	struct vop_devback *dev[DEVSIDE_MAX];
	unsigned n;
};

/* Find option key in "a=1:b:c=x"; copies its value (or "" for a flag) into out. */
static inline bool devside_opt(const char *opts, const char *key, char *out, size_t outlen)
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

/* A string option into fresh storage of d: 1 found, 0 absent, -ENAMETOOLONG (never cut). */
static inline int devside_str(struct devside_dev *d, const char *opts, const char *key, const char **out)
{
	char v[4096];
	char *dst;
	size_t cap, room;

	*out = NULL;
	if (!devside_opt(opts, key, v, sizeof(v)))
		return 0;
	if (!strncmp(key, "tls", 3)) {
		if (d->ntls >= 4)
			return -ENOSPC;
		dst = d->tls[d->ntls++];
		cap = strcmp(key, "tlsnames") ? 512 : sizeof(d->tls[0]); /* PEM paths, client names */
		room = cap - 1;
	} else {
		if (d->ns >= 24)
			return -ENOSPC;
		dst = d->s[d->ns++];
		cap = VOP_PATH_MAX;
		room = cap;
	}
	if (strlen(v) >= room)
		return -ENAMETOOLONG;
	memcpy(dst, v, strlen(v) + 1);
	*out = dst;
	return 1;
}

static inline long devside_num(const char *opts, const char *key, long dflt)
{
	char v[64];

	return devside_opt(opts, key, v, sizeof(v)) && v[0] ? strtol(v, NULL, 0) : dflt;
}

/* Kind name ("blk-device", ...) into kind and role; false if unknown. */
static inline bool devside_kind(const char *name, enum vop_devback_kind *kind, enum vop_role *role)
{
	static const struct {
		const char *name;
		enum vop_devback_kind kind;
		enum vop_role role;
	} k[] = {
		{ "blk-device", VOP_DEVBACK_BLK, VOP_ROLE_DEVICE }, { "blk-driver", VOP_DEVBACK_BLK, VOP_ROLE_DRIVER },
		{ "net-device", VOP_DEVBACK_NET, VOP_ROLE_DEVICE }, { "net-driver", VOP_DEVBACK_NET, VOP_ROLE_DRIVER },
		{ "con-device", VOP_DEVBACK_CONSOLE, VOP_ROLE_DEVICE },
		{ "con-driver", VOP_DEVBACK_CONSOLE, VOP_ROLE_DRIVER },
	};
	unsigned i;

	for (i = 0; i < sizeof(k) / sizeof(k[0]); i++)
		if (!strcmp(name, k[i].name)) {
			*kind = k[i].kind;
			*role = k[i].role;
			return true;
		}
	return false;
}

#define DEVSIDE_STR(key, dst)                                      \
	do {                                                       \
		int r__ = devside_str(d, opts, (key), &(dst));     \
		if (r__ < 0)                                       \
			return r__;                                \
	} while (0)

/* Parse kind name + "ID:opts" into d. 0, -EINVAL, -ENAMETOOLONG. */
static inline int devside_parse(const char *kind_name, const char *desc, struct devside_dev *d)
{
	struct vop_devback_config *c = &d->cfg;
	const char *opts = strchr(desc, ':');
	char v[64];
	unsigned long id;
	char *end;

	memset(d, 0, sizeof(*d));
	if (!devside_kind(kind_name, &c->kind, &c->role) || desc[0] < '1' || desc[0] > '9')
		return -EINVAL;
	id = strtoul(desc, &end, 0);
	if ((*end != ':' && *end != 0) || id == 0 || id > UINT32_MAX)
		return -EINVAL;
	c->dev_id = (uint32_t)id;
	opts = opts ? opts + 1 : "";
	c->event_idx = !devside_opt(opts, "noeventidx", v, sizeof(v));
	switch (c->kind) {
	case VOP_DEVBACK_BLK:
		c->queue_size = (uint16_t)(devside_num(opts, "qsize", 64) * VOP_DEVBACK_BLK_ENTRIES_PER_REQUEST);
		c->blk.seg_bytes = (uint32_t)devside_num(opts, "seg", 512) * 1024u;
		c->blk.ro = devside_opt(opts, "ro", v, sizeof(v));
		if (c->role == VOP_ROLE_DEVICE) {
			struct vop_blk_device_config *b = &c->blk.device;

			DEVSIDE_STR("file", b->path);
			if (!b->path)
				return -EINVAL;
			DEVSIDE_STR("fileroot", b->root);
			DEVSIDE_STR("serial", b->serial);
			b->block_device = devside_opt(opts, "blkdev", v, sizeof(v));
			b->ro = c->blk.ro;
			b->direct = devside_opt(opts, "direct", v, sizeof(v));
			b->io_threads = (unsigned)devside_num(opts, "threads", 4);
		} else {
			struct vop_nbd_config *nc = &c->blk.nbd;
			const char *host;
			char *h;

			DEVSIDE_STR("unix", nc->unix_path);
			DEVSIDE_STR("sockroot", nc->unix_root);
			nc->tcp_port = (int)devside_num(opts, "tcp", 0);
			DEVSIDE_STR("name", nc->export_name);
			DEVSIDE_STR("tcphost", host);
			if (host) {
				nc->tcp_host = h = (char *)host;
				for (; *h; h++)
					if (*h == '-')
						*h = ':'; /* IPv6 "::1" travels as "--1" */
			}
			DEVSIDE_STR("tlscert", nc->tls_cert);
			DEVSIDE_STR("tlskey", nc->tls_key);
			DEVSIDE_STR("tlsca", nc->tls_ca);
			DEVSIDE_STR("tlsnames", nc->tls_clients);
			nc->tcp_plaintext = devside_opt(opts, "tcpplain", v, sizeof(v));
		}
		return 0;
	case VOP_DEVBACK_NET: {
		struct vop_net_config *n = &c->net.backend;
		const char *udp, *udppeer;
		unsigned m[6];

		c->queue_size = (uint16_t)devside_num(opts, "qsize", 256);
		c->net.mtu = (uint16_t)devside_num(opts, "mtu", 1500);
		c->net.offloads = !devside_opt(opts, "nooffloads", v, sizeof(v));
		if (devside_opt(opts, "mac", v, sizeof(v))) {
			if (sscanf(v, "%x-%x-%x-%x-%x-%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6)
				return -EINVAL;
			for (unsigned i = 0; i < 6; i++)
				c->net.mac[i] = (uint8_t)m[i];
		}
		n->rx_buf_bytes = (uint32_t)devside_num(opts, "rxbuf", 0);
		DEVSIDE_STR("sock", n->dgram_local);
		DEVSIDE_STR("peer", n->dgram_peer);
		DEVSIDE_STR("sockroot", n->dgram_root);
		DEVSIDE_STR("udp", udp);
		DEVSIDE_STR("udppeer", udppeer);
		if (udp && udppeer && d->ns + 2 <= 24) {
			char *l = d->s[d->ns++], *p = d->s[d->ns++];

			snprintf(l, VOP_PATH_MAX, "127.0.0.1:%.16s", udp);
			snprintf(p, VOP_PATH_MAX, "127.0.0.1:%.16s", udppeer);
			n->dgram_local = l;
			n->dgram_peer = p;
		}
		DEVSIDE_STR("tap", n->tap_name);
		DEVSIDE_STR("netns", n->netns);
		if (!(n->dgram_local && n->dgram_peer) && !n->tap_name)
			return -EINVAL;
		return 0;
	}
	case VOP_DEVBACK_CONSOLE: {
		struct vop_console_config *k = &c->console.backend;
		const char *pty;

		c->queue_size = (uint16_t)devside_num(opts, "qsize", 64);
		DEVSIDE_STR("pty", pty);
		k->want_pty = pty != NULL;
		k->pty_link = pty && pty[0] ? pty : NULL;
		DEVSIDE_STR("ptyroot", k->pty_root);
		DEVSIDE_STR("log", k->log_path);
		DEVSIDE_STR("logroot", k->log_root);
		k->log_max = (uint64_t)devside_num(opts, "logmax", 1 << 20);
		k->log_files = (unsigned)devside_num(opts, "logfiles", 1);
		DEVSIDE_STR("unix", k->unix_path);
		DEVSIDE_STR("sockroot", k->unix_root);
		return 0;
	}
	}
	return -EINVAL;
}
#undef DEVSIDE_STR

/* Link worker: remember the first backend failure (vopdev exits on it). */
static inline void devside_event(void *ctx, const struct vop_event *ev)
{
	struct devside *h = ctx;
	int zero = 0;

	if (ev->type == VOP_EV_BACKEND_FAILED)
		atomic_compare_exchange_strong(&h->error, &zero, -(int)ev->reason);
}

static inline void devside_close(struct devside *h)
{
	unsigned i;

	if (!h)
		return;
	if (h->l)
		vop_link_stop(h->l);
	for (i = 0; i < h->n; i++)
		vop_devback_close(h->l, h->dev[i]);
	vop_link_destroy(h->l);
	vop_devctx_destroy(h->ctx);
	vop_window_close(h->w);
	free(h);
}

/*
 * devside_open - create (create_bytes > 0: side 0, path must not exist) or
 * attach to (create_bytes == 0: side 1, waits up to 10 s for the window) the
 * window at path, publish (creator), create the link worker (spin_ns 0 =
 * 20 us) and every device, and start; a blk driver side then waits up to
 * 60 s for the device to run (the export's size is known). On error *err
 * names the failing step. Returns 0 or -errno.
 */
static inline int devside_open(const char *path, uint64_t create_bytes, uint64_t spin_ns,
			       const struct devside_dev *devs, unsigned n, struct devside **out, const char **err)
{
	struct devside *h;
	struct vop_xport *x = NULL;
	struct vop_link_config lc;
	const char *dummy;
	unsigned i;
	int rc;

	*out = NULL;
	if (!err)
		err = &dummy;
	*err = "arguments";
	if (!path || n > DEVSIDE_MAX)
		return -EINVAL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	if (create_bytes == 0) {
		uint64_t deadline = vop_dev_now_ns() + 10000000000ull;

		*err = "attach";
		for (;;) {
			rc = vop_shm_open(path, &x);
			if (rc == 0) {
				rc = vop_window_attach(x, &h->w);
				if (rc == 0)
					break;
				vop_xport_destroy(x);
				x = NULL;
			}
			if (vop_dev_now_ns() > deadline)
				goto fail;
			usleep(10000);
		}
	} else {
		*err = "create window";
		rc = vop_shm_create(path, create_bytes, &x);
		if (rc)
			goto fail;
		rc = vop_window_create(x, NULL, &h->w);
		if (rc) {
			vop_xport_destroy(x);
			goto fail;
		}
		*err = "publish";
		for (i = 0; i < n; i++) {
			rc = vop_devback_publish(h->w, &devs[i].cfg);
			if (rc < 0)
				goto fail;
		}
	}
	memset(&lc, 0, sizeof(lc));
	lc.spin_ns = spin_ns ? spin_ns : 20000;
	lc.reset_on_needs_reset = true; /* no control plane here to decide */
	lc.on_event = devside_event;
	lc.ctx = h;
	*err = "link";
	rc = vop_link_create(h->w, &lc, &h->l);
	if (rc)
		goto fail;
	rc = vop_devctx_create(h->w, &h->ctx);
	if (rc)
		goto fail;
	for (i = 0; i < n; i++) {
		struct vop_devback_config c = devs[i].cfg;

		c.find_timeout_ms = 10000;
		rc = vop_devback_open(h->ctx, h->l, &c, &h->dev[i], err);
		if (rc)
			goto fail;
		h->n++;
	}
	*err = "start";
	rc = vop_link_start(h->l);
	if (rc)
		goto fail;
	/* A disk export is usable (its size known) once the device runs: wait for it. */
	for (i = 0; i < h->n; i++) {
		struct vop_blk_driver *bd = vop_devback_blk_driver(h->dev[i]);

		if (!bd)
			continue;
		*err = "wait for the disk";
		rc = vop_blk_driver_wait_ready(bd, 60000);
		if (rc)
			goto fail;
	}
	*err = NULL;
	*out = h;
	return 0;
fail:
	devside_close(h);
	return rc;
}

/* Endpoints as "key value\n" lines ("nbd1-port 40331", "tap1 vop0", "pty2 /dev/pts/3"). */
static inline size_t devside_endpoints(struct devside *h, char *buf, size_t len)
{
	size_t o = 0;
	unsigned i;

#define EP(...)                                                              \
	do {                                                                 \
		int r__ = snprintf(buf + o, len - o, __VA_ARGS__);          \
		if (r__ > 0)                                                 \
			o += (size_t)r__ < len - o ? (size_t)r__ : len - o - 1; \
	} while (0)
	if (len)
		buf[0] = 0;
	for (i = 0; i < h->n && o + 1 < len; i++) {
		struct vop_devback_endpoints e;
		uint32_t id = vop_devback_id(h->dev[i]);

		vop_devback_endpoints(h->dev[i], &e);
		if (e.has_nbd_size)
			EP("nbd%u-size %llu\n", id, (unsigned long long)e.nbd_size);
		if (e.nbd_socket[0])
			EP("nbd%u-socket %s\n", id, e.nbd_socket);
		if (e.nbd_port)
			EP("nbd%u-port %d\n", id, e.nbd_port);
		if (e.tap[0])
			EP("tap%u %s\n", id, e.tap);
		if (vop_devback_kind(h->dev[i]) == VOP_DEVBACK_CONSOLE)
			EP("pty%u %s\n", id, e.pty);
	}
#undef EP
	return o;
}

/* Counters of every device as one JSON object {"blk1":{...},"net2":{...}} (vopdev prints it). */
static inline size_t devside_stats_json(struct devside *h, char *buf, size_t len)
{
	size_t o = 0;
	unsigned i;

#define EMIT(...)                                                            \
	do {                                                                 \
		int r__ = snprintf(buf + o, len - o, __VA_ARGS__);          \
		if (r__ > 0)                                                 \
			o += (size_t)r__ < len - o ? (size_t)r__ : len - o - 1; \
	} while (0)
#define U(x) ((unsigned long long)(x))
	if (len < 3)
		return 0;
	EMIT("{");
	for (i = 0; i < h->n; i++) {
		struct vop_devback_counters c;
		uint32_t id = vop_devback_id(h->dev[i]);

		vop_devback_counters(h->dev[i], &c);
		if (i)
			EMIT(",");
		if (!c.valid)
			EMIT("\"blkdrv%u\":{}", id);
		else if (c.kind == VOP_DEVBACK_BLK)
			EMIT("\"blk%u\":{\"reads\":%llu,\"writes\":%llu,\"flushes\":%llu,\"discards\":%llu,"
			     "\"write_zeroes\":%llu,\"bytes_read\":%llu,\"bytes_written\":%llu,\"ioerr\":%llu,"
			     "\"unsupp\":%llu,\"bad_requests\":%llu,\"recovered\":%llu}",
			     id, U(c.blk.reads), U(c.blk.writes), U(c.blk.flushes), U(c.blk.discards),
			     U(c.blk.write_zeroes), U(c.blk.bytes_read), U(c.blk.bytes_written), U(c.blk.ioerr),
			     U(c.blk.unsupp), U(c.blk.bad_requests), U(c.blk.recovered));
		else if (c.kind == VOP_DEVBACK_NET)
			EMIT("\"net%u\":{\"tx_frames\":%llu,\"rx_frames\":%llu,\"tx_bytes\":%llu,\"rx_bytes\":%llu,"
			     "\"tx_dropped\":%llu,\"rx_dropped\":%llu,\"bad_headers\":%llu,\"gso_frames\":%llu}",
			     id, U(c.net.tx_frames), U(c.net.rx_frames), U(c.net.tx_bytes), U(c.net.rx_bytes),
			     U(c.net.tx_dropped), U(c.net.rx_dropped), U(c.net.bad_headers), U(c.net.gso_frames));
		else
			EMIT("\"con%u\":{\"in_bytes\":%llu,\"out_bytes\":%llu,\"dropped\":%llu,\"log_bytes\":%llu,"
			     "\"rotations\":%llu,\"zero_len\":%llu}",
			     id, U(c.console.in_bytes), U(c.console.out_bytes), U(c.console.dropped),
			     U(c.console.log_bytes), U(c.console.rotations), U(c.console.zero_len));
	}
	EMIT("}");
#undef U
#undef EMIT
	return o;
}

#endif /* VOP_TEST_DEVSIDE_H */
