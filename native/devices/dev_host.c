/* SPDX-License-Identifier: Apache-2.0 */
/* Hosted devices and device hosts: see vop/dev_host.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/private_atomic.h"
#include "vop/dev_blk.h"
#include "vop/dev_host.h"
#include "vop/dev_nbd.h"
#include "vop/dev_net.h"
#include "vop/path.h"
#include "vop/xport.h"

struct vop_hosted {
	enum vop_dev_kind kind;
	uint32_t id;
	char opts[2048];  /* several paths with their roots (VOP_PATH_MAX each), a blk driver TLS file paths */
	void *obj;        /* backend */
	bool attached;    /* served by the link */
	struct vop_nbd *nbd; /* blk driver: NBD server */
};

struct vop_dev_host {
	struct vop_window *w;
	struct vop_link *l;
	struct vop_devctx *ctx;
	struct vop_private_once error; /* first backend failure (-errno), from the link's events */
	struct vop_hosted *dev[VOP_DEV_HOST_MAX];
	unsigned n;
};

static const char *const kind_names[] = { "blk-device", "blk-driver", "net-device",
					  "net-driver", "con-device", "con-driver" };

int vop_dev_kind_parse(const char *name)
{
	unsigned i;

	for (i = 0; i < sizeof(kind_names) / sizeof(kind_names[0]); i++)
		if (!strcmp(name, kind_names[i]))
			return (int)i;
	return -EINVAL;
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

/*
 * A path option: 1 and the value in out[VOP_PATH_MAX], 0 if absent, or
 * -ENAMETOOLONG: a path is refused, never truncated.
 */
static int opt_path(const char *opts, const char *key, char out[VOP_PATH_MAX])
{
	char v[VOP_PATH_MAX + 1];

	if (!opt(opts, key, v, sizeof(v)))
		return 0;
	if (strlen(v) >= VOP_PATH_MAX)
		return -ENAMETOOLONG;
	memcpy(out, v, strlen(v) + 1);
	return 1;
}

/*
 * A string option: 1 found (copied), 0 absent, -ENAMETOOLONG if it does
 * not fit in out (refused, never truncated).
 */
static int opt_str(const char *opts, const char *key, char *out, size_t outlen)
{
	if (!opt(opts, key, out, outlen))
		return 0;
	return strlen(out) >= outlen - 1 ? -ENAMETOOLONG : 1;
}

static long opt_num(const char *opts, const char *key, long dflt)
{
	char v[64];

	return opt(opts, key, v, sizeof(v)) && v[0] ? strtol(v, NULL, 0) : dflt;
}

static bool is_device(enum vop_dev_kind k)
{
	return k == VOP_DK_BLK_DEVICE || k == VOP_DK_NET_DEVICE || k == VOP_DK_CON_DEVICE;
}

/* Split "ID:opts" into the id and the options (copied into opts). 0 or -EINVAL. */
static int split_desc(const char *desc, uint32_t *id, char *opts, size_t len)
{
	const char *colon;

	*id = vop_dev_desc_id(desc);
	if (*id == 0)
		return -EINVAL;
	colon = strchr(desc, ':');
	if (colon && strlen(colon + 1) >= len)
		return -EINVAL;
	snprintf(opts, len, "%s", colon ? colon + 1 : "");
	return 0;
}

uint32_t vop_dev_desc_id(const char *desc)
{
	char *end;
	unsigned long v;

	if (!desc || desc[0] < '0' || desc[0] > '9')
		return 0;
	v = strtoul(desc, &end, 0);
	if ((*end != ':' && *end != 0) || v == 0 || v > UINT32_MAX)
		return 0;
	return (uint32_t)v;
}

int vop_hosted_spec(enum vop_dev_kind kind, const char *desc, unsigned side, struct vop_dev_spec *spec)
{
	struct vop_hosted hd, *a = &hd;
	uint8_t dside = is_device(kind) ? (uint8_t)(side & 1u) : (uint8_t)((side & 1u) ^ 1u);
	char v[64];
	long q;

	if ((unsigned)kind > VOP_DK_CON_DRIVER)
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	a->kind = kind;
	if (split_desc(desc, &a->id, a->opts, sizeof(a->opts)))
		return -EINVAL;
	switch (a->kind) {
	case VOP_DK_BLK_DEVICE:
	case VOP_DK_BLK_DRIVER:
		q = opt_num(a->opts, "qsize", 64);
		if (q < 1 || q > 8192 || (q & (q - 1)))
			return -EINVAL;
		vop_blk_spec(spec, a->id, dside, (uint16_t)q,
			     (uint32_t)opt_num(a->opts, "seg", 512) * 1024u, opt(a->opts, "ro", v, sizeof(v)));
		break;
	case VOP_DK_NET_DEVICE:
	case VOP_DK_NET_DRIVER: {
		uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x76, 0x6f, (uint8_t)a->id };

		if (opt(a->opts, "mac", v, sizeof(v)) &&
		    sscanf(v, "%hhx-%hhx-%hhx-%hhx-%hhx-%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
			   &mac[4], &mac[5]) != 6)
			return -EINVAL;
		q = opt_num(a->opts, "qsize", 256);
		if (q < 1 || q > VOP_QUEUE_MAX_SIZE || (q & (q - 1)))
			return -EINVAL;
		vop_net_spec(spec, a->id, dside, (uint16_t)q, (uint16_t)opt_num(a->opts, "mtu", 1500), mac);
		break;
	}
	default:
		q = opt_num(a->opts, "qsize", 64);
		if (q < 1 || q > VOP_QUEUE_MAX_SIZE || (q & (q - 1)))
			return -EINVAL;
		vop_console_spec(spec, a->id, dside, (uint16_t)q);
		break;
	}
	return 0;
}

int vop_hosted_publish(struct vop_window *w, enum vop_dev_kind kind, const char *desc)
{
	struct vop_dev_spec spec;
	int rc = vop_hosted_spec(kind, desc, w->side, &spec);

	if (rc)
		return rc;
	rc = vop_devtab_publish(w, &spec);
	return rc < 0 ? rc : 0;
}

static const struct vop_devback_ops *ops_of(enum vop_dev_kind k)
{
	switch (k) {
	case VOP_DK_BLK_DEVICE:
		return &vop_blk_device_ops;
	case VOP_DK_BLK_DRIVER:
		return &vop_blk_driver_ops;
	case VOP_DK_NET_DEVICE:
	case VOP_DK_NET_DRIVER:
		return &vop_net_ops;
	default:
		return &vop_console_ops;
	}
}

/* Create the backend object of a (surfaces open, not yet served). */
static int create_backend(struct vop_devctx *ctx, struct vop_hosted *a, uint32_t timeout_ms)
{
	char v[VOP_PATH_MAX], v2[256], root[VOP_PATH_MAX];
	int rc;

	switch (a->kind) {
	case VOP_DK_BLK_DEVICE: {
		struct vop_blk_device_config c;
		char serial[32];

		memset(&c, 0, sizeof(c));
		rc = opt_path(a->opts, "file", v);
		if (rc <= 0)
			return rc ? rc : -EINVAL;
		c.path = v;
		rc = opt_path(a->opts, "fileroot", root);
		if (rc < 0)
			return rc;
		c.root = rc ? root : NULL;
		c.block_device = opt(a->opts, "blkdev", v2, sizeof(v2));
		c.ro = opt(a->opts, "ro", v2, sizeof(v2));
		c.direct = opt(a->opts, "direct", v2, sizeof(v2));
		c.io_threads = (unsigned)opt_num(a->opts, "threads", 4);
		c.find_timeout_ms = timeout_ms;
		if (opt(a->opts, "serial", serial, sizeof(serial)))
			c.serial = serial;
		return vop_blk_device_create(ctx, a->id, &c, (struct vop_blk_device **)&a->obj);
	}
	case VOP_DK_BLK_DRIVER:
		return vop_blk_driver_create(ctx, a->id, timeout_ms, (struct vop_blk_driver **)&a->obj);
	case VOP_DK_NET_DEVICE:
	case VOP_DK_NET_DRIVER: {
		struct vop_net_config c;
		char loc[VOP_PATH_MAX], peer[VOP_PATH_MAX];

		memset(&c, 0, sizeof(c));
		if (opt(a->opts, "sock", loc, sizeof(loc)) && opt(a->opts, "peer", peer, sizeof(peer))) {
			if (opt_path(a->opts, "sock", loc) < 0 || opt_path(a->opts, "peer", peer) < 0)
				return -ENAMETOOLONG;
			c.dgram_local = loc;
			c.dgram_peer = peer;
			rc = opt_path(a->opts, "sockroot", root);
			if (rc < 0)
				return rc;
			c.dgram_root = rc ? root : NULL;
		} else if (opt(a->opts, "udp", v2, sizeof(v2)) && opt(a->opts, "udppeer", peer, sizeof(peer))) {
			snprintf(loc, sizeof(loc), "127.0.0.1:%.16s", v2);
			snprintf(v2, sizeof(v2), "127.0.0.1:%.16s", peer);
			c.dgram_local = loc;
			c.dgram_peer = v2;
		} else if (opt(a->opts, "tap", v, sizeof(v))) {
			c.tap_name = v;
		} else {
			return -EINVAL;
		}
		c.rx_buf_bytes = (uint32_t)opt_num(a->opts, "rxbuf", 0);
		c.find_timeout_ms = timeout_ms;
		return a->kind == VOP_DK_NET_DEVICE
			       ? vop_net_device_create(ctx, a->id, &c, (struct vop_net **)&a->obj)
			       : vop_net_driver_create(ctx, a->id, &c, (struct vop_net **)&a->obj);
	}
	default: {
		struct vop_console_config c;
		char lg[VOP_PATH_MAX], ux[VOP_PATH_MAX], proot[VOP_PATH_MAX], lroot[VOP_PATH_MAX];

		memset(&c, 0, sizeof(c));
		c.want_pty = opt(a->opts, "pty", v2, sizeof(v2));
		if (c.want_pty && (rc = opt_path(a->opts, "pty", v)) < 0)
			return rc;
		c.pty_link = c.want_pty && v[0] ? v : NULL;
		if ((rc = opt_path(a->opts, "log", lg)) < 0)
			return rc;
		if (rc)
			c.log_path = lg;
		c.log_max = (uint64_t)opt_num(a->opts, "logmax", 1 << 20);
		c.log_files = (unsigned)opt_num(a->opts, "logfiles", 1);
		if ((rc = opt_path(a->opts, "unix", ux)) < 0)
			return rc;
		if (rc)
			c.unix_path = ux;
		if ((rc = opt_path(a->opts, "ptyroot", proot)) < 0)
			return rc;
		c.pty_root = rc ? proot : NULL;
		if ((rc = opt_path(a->opts, "logroot", lroot)) < 0)
			return rc;
		c.log_root = rc ? lroot : NULL;
		if ((rc = opt_path(a->opts, "sockroot", root)) < 0)
			return rc;
		c.unix_root = rc ? root : NULL;
		c.find_timeout_ms = timeout_ms;
		return a->kind == VOP_DK_CON_DEVICE
			       ? vop_console_device_create(ctx, a->id, &c, (struct vop_console **)&a->obj)
			       : vop_console_driver_create(ctx, a->id, &c, (struct vop_console **)&a->obj);
	}
	}
}

static void destroy_backend(struct vop_hosted *a)
{
	if (!a->obj)
		return;
	switch (a->kind) {
	case VOP_DK_BLK_DEVICE:
		vop_blk_device_destroy(a->obj);
		break;
	case VOP_DK_BLK_DRIVER:
		vop_blk_driver_destroy(a->obj);
		break;
	case VOP_DK_NET_DEVICE:
	case VOP_DK_NET_DRIVER:
		vop_net_destroy(a->obj);
		break;
	default:
		vop_console_destroy(a->obj);
		break;
	}
	a->obj = NULL;
}

int vop_hosted_open(struct vop_devctx *ctx, struct vop_link *l, enum vop_dev_kind kind,
		    const char *desc, uint32_t find_timeout_ms, struct vop_hosted **out,
		    const char **err)
{
	struct vop_hosted *a;
	const char *dummy;
	int rc;

	*out = NULL;
	if (!err)
		err = &dummy;
	*err = "arguments";
	if ((unsigned)kind > VOP_DK_CON_DRIVER)
		return -EINVAL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->kind = kind;
	rc = split_desc(desc, &a->id, a->opts, sizeof(a->opts));
	if (rc)
		goto fail;
	*err = kind_names[kind];
	rc = create_backend(ctx, a, find_timeout_ms);
	if (rc)
		goto fail;
	*err = "attach";
	rc = vop_link_attach_backend(l, a->id, is_device(kind) ? VOP_ROLE_DEVICE : VOP_ROLE_DRIVER,
				     ops_of(kind), a->obj);
	if (rc)
		goto fail;
	a->attached = true;
	if (kind == VOP_DK_BLK_DRIVER) {
		struct vop_nbd_config nc;
		char ux[VOP_PATH_MAX], uroot[VOP_PATH_MAX], name[200], host[64], flag[8];
		char cert[512], key[512], ca[512], names[1024];
		unsigned i;
		int r[5];

		memset(&nc, 0, sizeof(nc));
		*err = "nbd";
		rc = opt_path(a->opts, "unix", ux);
		if (rc < 0)
			goto fail;
		if (rc)
			nc.unix_path = ux;
		rc = opt_path(a->opts, "sockroot", uroot);
		if (rc < 0)
			goto fail;
		nc.unix_root = rc ? uroot : NULL;
		nc.tcp_port = (int)opt_num(a->opts, "tcp", 0);
		if (opt(a->opts, "name", name, sizeof(name)) && name[0])
			nc.export_name = name;
		*err = "nbd-tls";
		r[0] = opt_str(a->opts, "tcphost", host, sizeof(host));
		r[1] = opt_str(a->opts, "tlscert", cert, sizeof(cert));
		r[2] = opt_str(a->opts, "tlskey", key, sizeof(key));
		r[3] = opt_str(a->opts, "tlsca", ca, sizeof(ca));
		r[4] = opt_str(a->opts, "tlsnames", names, sizeof(names));
		for (i = 0; i < 5; i++)
			if (r[i] < 0) {
				rc = r[i];
				goto fail;
			}
		for (i = 0; r[0] && host[i]; i++)
			if (host[i] == '-')
				host[i] = ':'; /* IPv6 "::1" travels as "--1" */
		nc.tcp_host = r[0] ? host : NULL;
		nc.tls_cert = r[1] ? cert : NULL;
		nc.tls_key = r[2] ? key : NULL;
		nc.tls_ca = r[3] ? ca : NULL;
		nc.tls_clients = r[4] ? names : NULL;
		nc.tcp_plaintext = opt(a->opts, "tcpplain", flag, sizeof(flag));
		*err = "nbd";
		rc = vop_nbd_start(a->obj, &nc, &a->nbd);
		if (rc)
			goto fail;
	}
	*err = NULL;
	*out = a;
	return 0;
fail:
	vop_hosted_close(l, a);
	return rc;
}

void vop_hosted_close(struct vop_link *l, struct vop_hosted *a)
{
	if (!a)
		return;
	/* detach first: requests in flight complete (IOERR) before NBD frees its connections */
	if (a->attached)
		vop_link_detach(l, a->id);
	if (a->nbd)
		vop_nbd_stop(a->nbd);
	destroy_backend(a);
	free(a);
}

uint32_t vop_hosted_id(const struct vop_hosted *a)
{
	return a->id;
}

enum vop_dev_kind vop_hosted_kind(const struct vop_hosted *a)
{
	return a->kind;
}

struct vop_console *vop_hosted_console(struct vop_hosted *a)
{
	return a->kind == VOP_DK_CON_DEVICE || a->kind == VOP_DK_CON_DRIVER ? a->obj : NULL;
}

size_t vop_hosted_endpoints(struct vop_hosted *a, char *buf, size_t len)
{
	size_t o = 0;
	int r = 0;

	if (len == 0)
		return 0;
	buf[0] = 0;
	switch (a->kind) {
	case VOP_DK_BLK_DRIVER:
		r = snprintf(buf, len, "nbd%u-size %llu\n", a->id,
			     (unsigned long long)vop_blk_driver_capacity(a->obj));
		if (r > 0 && (size_t)r < len && a->nbd && vop_nbd_unix_path(a->nbd)[0]) {
			o = (size_t)r;
			r = snprintf(buf + o, len - o, "nbd%u-socket %s\n", a->id, vop_nbd_unix_path(a->nbd));
		}
		if (r > 0 && (size_t)r < len - o && a->nbd && vop_nbd_port(a->nbd)) {
			o += (size_t)r;
			r = snprintf(buf + o, len - o, "nbd%u-port %d\n", a->id, vop_nbd_port(a->nbd));
		}
		break;
	case VOP_DK_NET_DEVICE:
	case VOP_DK_NET_DRIVER:
		r = snprintf(buf, len, "tap%u %s\n", a->id, vop_net_ifname(a->obj));
		break;
	case VOP_DK_CON_DEVICE:
	case VOP_DK_CON_DRIVER:
		r = snprintf(buf, len, "pty%u %s\n", a->id, vop_console_pty_name(a->obj));
		break;
	default:
		break;
	}
	if (r < 0)
		return o;
	return o + ((size_t)r < len - o ? (size_t)r : len - o - 1);
}

size_t vop_hosted_stats_json(struct vop_hosted *a, char *buf, size_t len)
{
	size_t o = 0;
	int r;

#define EMIT(...)                                                                 \
	do {                                                                      \
		r = snprintf(buf + o, len - o, __VA_ARGS__);                      \
		if (r < 0)                                                        \
			return o;                                                 \
		o += (size_t)r < len - o ? (size_t)r : len - o - 1;               \
	} while (0)
	if (len == 0)
		return 0;
	buf[0] = 0;
	if (a->kind == VOP_DK_BLK_DEVICE) {
		struct vop_blk_stats s;
		unsigned op, b;

		vop_blk_device_stats(a->obj, &s);
		EMIT("\"blk%u\":{\"reads\":%llu,\"writes\":%llu,\"flushes\":%llu,\"discards\":%llu,"
		     "\"write_zeroes\":%llu,\"bytes_read\":%llu,\"bytes_written\":%llu,\"ioerr\":%llu,"
		     "\"unsupp\":%llu,\"bad_requests\":%llu,\"recovered\":%llu",
		     a->id, (unsigned long long)s.reads, (unsigned long long)s.writes,
		     (unsigned long long)s.flushes, (unsigned long long)s.discards,
		     (unsigned long long)s.write_zeroes, (unsigned long long)s.bytes_read,
		     (unsigned long long)s.bytes_written, (unsigned long long)s.ioerr,
		     (unsigned long long)s.unsupp, (unsigned long long)s.bad_requests,
		     (unsigned long long)s.recovered);
		/* Latency histogram, only ops that completed at least once: lat_<op>_b<k> (non-cumulative), lat_<op>_sum_ns. */
		for (op = 0; op < VOP_BLK_OPS; op++) {
			uint64_t n = 0;

			for (b = 0; b <= VOP_BLK_LAT_BOUNDS; b++)
				n += s.lat_count[op][b];
			if (n == 0)
				continue;
			for (b = 0; b <= VOP_BLK_LAT_BOUNDS; b++)
				if (s.lat_count[op][b])
					EMIT(",\"lat_%s_b%u\":%llu", vop_blk_op_name(op), b,
					     (unsigned long long)s.lat_count[op][b]);
			EMIT(",\"lat_%s_sum_ns\":%llu", vop_blk_op_name(op), (unsigned long long)s.lat_sum_ns[op]);
		}
		EMIT("}");
	} else if (a->kind == VOP_DK_BLK_DRIVER) {
		EMIT("\"blkdrv%u\":{}", a->id);
	} else if (a->kind == VOP_DK_NET_DEVICE || a->kind == VOP_DK_NET_DRIVER) {
		struct vop_net_stats s;

		vop_net_stats(a->obj, &s);
		EMIT("\"net%u\":{\"tx_frames\":%llu,\"rx_frames\":%llu,\"tx_bytes\":%llu,\"rx_bytes\":%llu,"
		     "\"tx_dropped\":%llu,\"rx_dropped\":%llu,\"bad_headers\":%llu,\"gso_frames\":%llu}",
		     a->id, (unsigned long long)s.tx_frames, (unsigned long long)s.rx_frames,
		     (unsigned long long)s.tx_bytes, (unsigned long long)s.rx_bytes,
		     (unsigned long long)s.tx_dropped, (unsigned long long)s.rx_dropped,
		     (unsigned long long)s.bad_headers, (unsigned long long)s.gso_frames);
	} else {
		struct vop_console_stats s;

		vop_console_stats(a->obj, &s);
		EMIT("\"con%u\":{\"in_bytes\":%llu,\"out_bytes\":%llu,\"dropped\":%llu,\"log_bytes\":%llu,"
		     "\"rotations\":%llu,\"zero_len\":%llu}",
		     a->id, (unsigned long long)s.in_bytes, (unsigned long long)s.out_bytes,
		     (unsigned long long)s.dropped, (unsigned long long)s.log_bytes,
		     (unsigned long long)s.rotations, (unsigned long long)s.zero_len);
	}
#undef EMIT
	return o;
}

/* ------------------------------------------------------------------ */
/* Device host: one window side                                         */
/* ------------------------------------------------------------------ */

/* Link worker: remember the first backend failure (vopdev exits on it). */
static void host_event(void *ctx, const struct vop_event *ev)
{
	struct vop_dev_host *h = ctx;

	if (ev->type == VOP_EV_BACKEND_FAILED)
		vop_private_set_once(&h->error, -(int)ev->reason);
}

int vop_dev_host_open(const char *path, uint64_t create_bytes, uint64_t spin_ns,
		      const struct vop_dev_host_dev *devs, unsigned n, struct vop_dev_host **out,
		      const char **err)
{
	struct vop_dev_host *h;
	struct vop_xport *x = NULL;
	struct vop_link_config lc;
	const char *dummy;
	unsigned i;
	int rc;

	*out = NULL;
	if (!err)
		err = &dummy;
	*err = "arguments";
	if (!path || n > VOP_DEV_HOST_MAX)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if ((unsigned)devs[i].kind > VOP_DK_CON_DRIVER || vop_dev_desc_id(devs[i].desc) == 0)
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
			rc = vop_hosted_publish(h->w, devs[i].kind, devs[i].desc);
			if (rc)
				goto fail;
		}
	}
	memset(&lc, 0, sizeof(lc));
	lc.spin_ns = spin_ns ? spin_ns : 20000;
	lc.reset_on_needs_reset = true; /* no control plane here to decide */
	lc.on_event = host_event;
	lc.ctx = h;
	*err = "link";
	rc = vop_link_create(h->w, &lc, &h->l);
	if (rc)
		goto fail;
	rc = vop_devctx_create(h->w, &h->ctx);
	if (rc)
		goto fail;
	for (i = 0; i < n; i++) {
		rc = vop_hosted_open(h->ctx, h->l, devs[i].kind, devs[i].desc, 10000, &h->dev[i], err);
		if (rc)
			goto fail;
		h->n++;
	}
	*err = "start";
	rc = vop_link_start(h->l);
	if (rc)
		goto fail;
	/* A disk export is usable (its size known) once the device runs: wait for it, as before. */
	for (i = 0; i < h->n; i++) {
		if (h->dev[i]->kind != VOP_DK_BLK_DRIVER)
			continue;
		*err = "wait for the disk";
		rc = vop_blk_driver_wait_ready(h->dev[i]->obj, 60000);
		if (rc)
			goto fail;
	}
	*err = NULL;
	*out = h;
	return 0;
fail:
	vop_dev_host_close(h);
	return rc;
}

size_t vop_dev_host_endpoints(struct vop_dev_host *h, char *buf, size_t len)
{
	size_t o = 0;
	unsigned i;

	if (len)
		buf[0] = 0;
	for (i = 0; i < h->n && o + 1 < len; i++)
		o += vop_hosted_endpoints(h->dev[i], buf + o, len - o);
	return o;
}

size_t vop_dev_host_stats_json(struct vop_dev_host *h, char *buf, size_t len)
{
	size_t o = 0;
	unsigned i;

	if (len < 3)
		return 0;
	buf[o++] = '{';
	for (i = 0; i < h->n && o + 2 < len; i++) {
		if (i)
			buf[o++] = ',';
		o += vop_hosted_stats_json(h->dev[i], buf + o, len - o - 1);
	}
	buf[o++] = '}';
	buf[o] = 0;
	return o;
}

int vop_dev_host_error(struct vop_dev_host *h)
{
	return vop_private_get_once(&h->error);
}

struct vop_console *vop_dev_host_console(struct vop_dev_host *h, uint32_t id)
{
	unsigned i;

	for (i = 0; i < h->n; i++)
		if (h->dev[i]->id == id && vop_hosted_console(h->dev[i]))
			return vop_hosted_console(h->dev[i]);
	return NULL;
}

void vop_dev_host_close(struct vop_dev_host *h)
{
	unsigned i;

	if (!h)
		return;
	if (h->l)
		vop_link_stop(h->l);
	for (i = 0; i < h->n; i++)
		vop_hosted_close(h->l, h->dev[i]);
	vop_link_destroy(h->l);
	vop_devctx_destroy(h->ctx);
	vop_window_close(h->w);
	free(h);
}

int vop_dev_host_queue_stats(struct vop_dev_host *h, uint32_t id, unsigned q, struct vop_vq_stats *out)
{
	return vop_link_queue_stats(h->l, id, q, out);
}
