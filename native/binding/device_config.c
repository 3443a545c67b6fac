/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DeviceConfigDto (JS) -> struct vop_devcfg (C): see device_config.h. Type
 * and range errors name the property; the semantic checks (queue sizes a
 * power of two, MTU, a unicast MAC...) are re-done cheaply by
 * vop_devback_spec() and vop_devtab_publish(), after the TypeScript façade
 * checked them with exact messages.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "device_config.h"
#include "napi_util.h"

static const char *const KINDS[] = { "pipe", "blk", "net", "console" };
static const char *const ROLES[] = { "driver", "device" };
static const char *const PIPE_MODES[] = { "off", "source", "sink", "echo" };

/* A nullable string into the next free slot of c->str; *out NULL when null. */
static bool str_slot(napi_env env, napi_value obj, const char *path, const char *name, bool nullable,
		     struct vop_devcfg *c, const char **out)
{
	bool present = false;
	char *buf;

	*out = NULL;
	if (c->nstr >= VOP_DEVCFG_STRS) {
		vop_throw_prop_range(env, path, name, "is one string too many");
		return false;
	}
	buf = c->str[c->nstr];
	if (!vop_get_str(env, obj, path, name, nullable, buf, VOP_PATH_MAX, &present))
		return false;
	if (present) {
		c->nstr++;
		*out = buf;
	}
	return true;
}

static bool read_pipe(napi_env env, napi_value o, const char *path, struct vop_devcfg *c, bool event_idx)
{
	uint32_t segs, tx, rx, buf;
	bool indirect;

	c->pipe = true;
	if (!vop_get_u32(env, o, path, "bufSize", 1, 64u << 20, &buf) ||
	    !vop_get_bool(env, o, path, "indirect", &indirect) ||
	    !vop_get_u32(env, o, path, "msgSize", 1, 64u << 20, &c->pc.msg_size) ||
	    !vop_get_u32(env, o, path, "segs", 1, 16, &segs) ||
	    !vop_get_enum(env, o, path, "tx", PIPE_MODES, 4, &tx) ||
	    !vop_get_enum(env, o, path, "rx", PIPE_MODES, 4, &rx) ||
	    !vop_get_bool(env, o, path, "verify", &c->pc.verify) ||
	    !vop_get_u64(env, o, path, "count", UINT64_MAX, &c->pc.count) ||
	    !vop_get_u32(env, o, path, "maxInflight", 0, UINT32_MAX, &c->pc.max_inflight) ||
	    !vop_get_u32(env, o, path, "batch", 0, VOP_QUEUE_MAX_SIZE, &c->pc.batch))
		return false;
	c->buf_size = buf;
	c->features = (event_idx ? 1ull << VOP_F_EVENT_IDX : 0) | (indirect ? 1ull << VOP_F_INDIRECT_DESC : 0);
	c->pc.features = c->features;
	c->pc.segs = (uint16_t)segs;
	c->pc.tx_mode = (uint8_t)tx;
	c->pc.rx_mode = (uint8_t)rx;
	c->pc.buf_size = 0; /* a pool share per buffer */
	return true;
}

static bool read_blk(napi_env env, napi_value o, const char *path, struct vop_devcfg *c)
{
	char p[48];
	napi_value f, n, tls;
	bool present;

	if (!vop_get_u32(env, o, path, "segBytes", 0, 16u << 20, &c->be.blk.seg_bytes) ||
	    !vop_get_bool(env, o, path, "readOnly", &c->be.blk.ro) ||
	    !vop_get_obj(env, o, path, "file", true, &f) || !vop_get_obj(env, o, path, "nbd", true, &n))
		return false;
	if (c->role == VOP_ROLE_DEVICE) {
		struct vop_blk_device_config *d = &c->be.blk.device;
		uint32_t threads;

		snprintf(p, sizeof(p), "%s.file", path);
		if (!f) {
			vop_throw_prop_type(env, path, "file", "must be an object for the device role");
			return false;
		}
		if (!str_slot(env, f, p, "path", false, c, &d->path) || !str_slot(env, f, p, "root", true, c, &d->root) ||
		    !vop_get_bool(env, f, p, "blockDevice", &d->block_device) ||
		    !vop_get_bool(env, f, p, "direct", &d->direct) ||
		    !vop_get_u32(env, f, p, "ioThreads", 0, 32, &threads) ||
		    !vop_get_str(env, f, p, "serial", true, c->serial, 21, &present))
			return false;
		d->io_threads = threads;
		d->serial = present ? c->serial : NULL;
		d->ro = c->be.blk.ro;
		return true;
	}
	{
		struct vop_nbd_config *nc = &c->be.blk.nbd;
		int32_t port;

		snprintf(p, sizeof(p), "%s.nbd", path);
		if (!n) {
			vop_throw_prop_type(env, path, "nbd", "must be an object for the driver role");
			return false;
		}
		if (!str_slot(env, n, p, "unixPath", true, c, &nc->unix_path) ||
		    !str_slot(env, n, p, "unixRoot", true, c, &nc->unix_root) ||
		    !vop_get_str(env, n, p, "tcpHost", true, c->tcp_host, sizeof(c->tcp_host), &present))
			return false;
		nc->tcp_host = present ? c->tcp_host : NULL;
		if (!vop_get_i32(env, n, p, "tcpPort", -1, 65535, &port) ||
		    !vop_get_str(env, n, p, "exportName", true, c->export_name, sizeof(c->export_name), &present))
			return false;
		nc->tcp_port = port;
		nc->export_name = present ? c->export_name : NULL;
		if (!vop_get_bool(env, n, p, "tcpPlaintext", &nc->tcp_plaintext) ||
		    !vop_get_obj(env, n, p, "tls", true, &tls))
			return false;
		if (tls) {
			char tp[56];
			napi_value names;
			uint32_t count, i;
			size_t o = 0;

			snprintf(tp, sizeof(tp), "%s.tls", p);
			if (!vop_get_str(env, tls, tp, "cert", false, c->pem[0], sizeof(c->pem[0]), NULL) ||
			    !vop_get_str(env, tls, tp, "key", false, c->pem[1], sizeof(c->pem[1]), NULL) ||
			    !vop_get_str(env, tls, tp, "ca", true, c->pem[2], sizeof(c->pem[2]), &present) ||
			    !vop_get_obj(env, tls, tp, "clients", false, &names))
				return false;
			nc->tls_cert = c->pem[0];
			nc->tls_key = c->pem[1];
			nc->tls_ca = present ? c->pem[2] : NULL;
			if (napi_get_array_length(env, names, &count) != napi_ok) {
				vop_throw_prop_type(env, tp, "clients", "must be an array of names");
				return false;
			}
			/* The C config takes them comma-separated ("" = nobody). */
			c->clients[0] = 0;
			for (i = 0; i < count; i++) {
				napi_value v;
				char name[256];
				size_t got = 0;

				if (napi_get_element(env, names, i, &v) != napi_ok ||
				    napi_get_value_string_utf8(env, v, name, sizeof(name), &got) != napi_ok ||
				    got == 0 || got >= sizeof(name) - 1 || strchr(name, ',') ||
				    o + got + 2 > sizeof(c->clients)) {
					vop_throw_prop_range(env, tp, "clients",
							     "must be names of 1..254 bytes without ',', at most 1023 "
							     "bytes joined");
					return false;
				}
				o += (size_t)snprintf(c->clients + o, sizeof(c->clients) - o, "%s%s", i ? "," : "",
						      name);
			}
			nc->tls_clients = c->clients;
		}
		return true;
	}
}

static bool read_net(napi_env env, napi_value o, const char *path, struct vop_devcfg *c)
{
	struct vop_net_config *nb = &c->be.net.backend;
	char p[48], mac[24];
	napi_value tap, dg;
	uint32_t mtu;
	bool present;

	if (!vop_get_u32(env, o, path, "mtu", 0, 65535, &mtu) ||
	    !vop_get_str(env, o, path, "mac", false, mac, sizeof(mac), NULL) ||
	    !vop_get_bool(env, o, path, "offloads", &c->be.net.offloads) ||
	    !vop_get_u32(env, o, path, "rxBufBytes", 0, VOP_NET_RXBUF, &nb->rx_buf_bytes) ||
	    !vop_get_obj(env, o, path, "tap", true, &tap) || !vop_get_obj(env, o, path, "datagram", true, &dg))
		return false;
	c->be.net.mtu = (uint16_t)mtu;
	if (mac[0]) {
		unsigned m[6], i;
		char end;

		if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x%c", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5], &end) != 6) {
			vop_throw_prop_type(env, path, "mac", "must look like 02:00:00:00:00:01 (or be '')");
			return false;
		}
		for (i = 0; i < 6; i++)
			c->be.net.mac[i] = (uint8_t)m[i];
	}
	if (!tap == !dg) {
		vop_throw_prop_type(env, path, "tap", "or datagram must be set, not both");
		return false;
	}
	if (tap) {
		snprintf(p, sizeof(p), "%s.tap", path);
		if (!vop_get_str(env, tap, p, "name", false, c->tap, sizeof(c->tap), NULL) ||
		    !vop_get_str(env, tap, p, "netns", true, c->netns, sizeof(c->netns), &present))
			return false;
		nb->tap_name = c->tap;
		nb->netns = present ? c->netns : NULL;
		return true;
	}
	snprintf(p, sizeof(p), "%s.datagram", path);
	return str_slot(env, dg, p, "local", false, c, &nb->dgram_local) &&
	       str_slot(env, dg, p, "peer", false, c, &nb->dgram_peer) &&
	       str_slot(env, dg, p, "root", true, c, &nb->dgram_root);
}

static bool read_console(napi_env env, napi_value o, const char *path, struct vop_devcfg *c)
{
	struct vop_console_config *k = &c->be.console.backend;
	napi_value log;
	uint32_t files;
	char p[48];

	if (!vop_get_bool(env, o, path, "pty", &k->want_pty) || !str_slot(env, o, path, "ptyLink", true, c, &k->pty_link) ||
	    !str_slot(env, o, path, "ptyRoot", true, c, &k->pty_root) ||
	    !str_slot(env, o, path, "unixPath", true, c, &k->unix_path) ||
	    !str_slot(env, o, path, "unixRoot", true, c, &k->unix_root) || !vop_get_obj(env, o, path, "log", true, &log))
		return false;
	if (!log)
		return true;
	snprintf(p, sizeof(p), "%s.log", path);
	if (!str_slot(env, log, p, "path", false, c, &k->log_path) || !str_slot(env, log, p, "root", true, c, &k->log_root) ||
	    !vop_get_u64(env, log, p, "maxBytes", 1ull << 40, &k->log_max) ||
	    !vop_get_u32(env, log, p, "files", 0, 100, &files))
		return false;
	k->log_files = files;
	return true;
}

bool vop_devcfg_read(napi_env env, napi_value obj, const char *path, struct vop_devcfg *c)
{
	unsigned kind, role;
	uint32_t qs;
	bool event_idx;

	memset(c, 0, sizeof(*c));
	if (!vop_get_enum(env, obj, path, "kind", KINDS, 4, &kind) ||
	    !vop_get_u32(env, obj, path, "devId", 1, UINT32_MAX, &c->dev_id) ||
	    !vop_get_enum(env, obj, path, "role", ROLES, 2, &role) ||
	    !vop_get_u32(env, obj, path, "queueSize", 0, VOP_QUEUE_MAX_SIZE, &qs) ||
	    !vop_get_bool(env, obj, path, "eventIdx", &event_idx))
		return false;
	c->role = role == 1 ? VOP_ROLE_DEVICE : VOP_ROLE_DRIVER;
	if (kind == 0) {
		c->queue_size = (uint16_t)(qs ? qs : VOP_DEVBACK_QUEUE_SIZE);
		return read_pipe(env, obj, path, c, event_idx);
	}
	c->be.dev_id = c->dev_id;
	c->be.role = c->role;
	c->be.queue_size = (uint16_t)qs;
	c->be.event_idx = event_idx;
	switch (kind) {
	case 1:
		c->be.kind = VOP_DEVBACK_BLK;
		return read_blk(env, obj, path, c);
	case 2:
		c->be.kind = VOP_DEVBACK_NET;
		return read_net(env, obj, path, c);
	default:
		c->be.kind = VOP_DEVBACK_CONSOLE;
		return read_console(env, obj, path, c);
	}
}

int vop_devcfg_spec(const struct vop_devcfg *c, unsigned side, struct vop_dev_spec *spec)
{
	if (!c->pipe)
		return vop_devback_spec(&c->be, side, spec);
	if (c->queue_size == 0 || (c->queue_size & (c->queue_size - 1)) || c->buf_size == 0)
		return -EINVAL;
	vop_pipe_spec(spec, c->dev_id,
		      c->role == VOP_ROLE_DEVICE ? (uint8_t)(side & 1u) : (uint8_t)((side & 1u) ^ 1u),
		      c->queue_size, c->buf_size, c->features);
	return 0;
}
