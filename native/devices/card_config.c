/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-card's configuration parser (vop/card_config.h): key=value lines,
 * strict, bounded, no allocation. Fuzzed by test/native/fuzz/card-config.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vop/card_config.h"
#include "vop/xport_pci.h"

uint32_t vop_card_dev_id(const char *name)
{
	uint32_t h = 2166136261u;

	for (; *name; name++) {
		h ^= (uint8_t)*name;
		h *= 16777619u;
	}
	return h ? h : 1u;
}

struct ctx {
	unsigned line;
	char *err;
	size_t errlen;
};

static int fail(struct ctx *c, const char *key, const char *fmt, ...)
{
	va_list ap;
	size_t o;

	if (c->errlen == 0)
		return -EINVAL;
	o = c->line ? (size_t)snprintf(c->err, c->errlen, "line %u: %.80s: ", c->line, key)
		    : (size_t)snprintf(c->err, c->errlen, "%.80s: ", key);
	if (o < c->errlen) {
		va_start(ap, fmt);
		vsnprintf(c->err + o, c->errlen - o, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/* Decimal digits only (a leading '-' when min < 0), within [min, max]. */
static bool num(const char *v, int64_t min, uint64_t max, int64_t *out_s, uint64_t *out_u)
{
	bool neg = false;
	uint64_t x = 0;

	if (*v == '-' && min < 0) {
		neg = true;
		v++;
	}
	if (!*v)
		return false;
	for (; *v; v++) {
		if (*v < '0' || *v > '9' || x > (UINT64_MAX - 9) / 10)
			return false;
		x = x * 10 + (uint64_t)(*v - '0');
	}
	if (neg) {
		if (x > (uint64_t)(-(min + 1)) + 1)
			return false;
		if (out_s)
			*out_s = -(int64_t)x;
		return true;
	}
	if (x > max)
		return false;
	if (out_s)
		*out_s = (int64_t)x;
	if (out_u)
		*out_u = x;
	return true;
}

static bool boolean(const char *v, bool *out)
{
	if (!strcmp(v, "0") || !strcmp(v, "1")) {
		*out = v[0] == '1';
		return true;
	}
	return false;
}

static int copy_str(struct ctx *c, const char *key, const char *v, char *dst, size_t cap)
{
	size_t n = strlen(v);

	if (n >= cap)
		return fail(c, key, "longer than %zu bytes", cap - 1);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			return fail(c, key, "control character");
	memcpy(dst, v, n + 1);
	return 0;
}

/* Bits of the window keys already seen. */
enum {
	W_ACCESS = 1u << 0, W_PATH = 1u << 1, W_DBPATH = 1u << 2, W_BAR = 1u << 3, W_OFFSET = 1u << 4,
	W_SIZE = 1u << 5, W_SIDE = 1u << 6, W_PEER = 1u << 7, W_VECTOR = 1u << 8, W_VECTORS = 1u << 9,
	W_DOORBELL = 1u << 10, W_POLLMAX = 1u << 11, W_WC = 1u << 12,
};

static int window_key(struct ctx *c, struct vop_card_window *w, unsigned *seen, const char *key, const char *k,
		      const char *v)
{
	static const char *const names[] = { "access", "path", "doorbell_path", "bar", "offset", "size", "side",
					     "peer_id", "vector", "vectors", "doorbell", "poll_max_us",
					     "write_combining" };
	unsigned i;
	uint64_t u;
	int64_t s;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(k, names[i]))
			break;
	if (i == sizeof(names) / sizeof(names[0]))
		return fail(c, key, "unknown key");
	if (*seen & (1u << i))
		return fail(c, key, "given twice");
	*seen |= 1u << i;
	switch (1u << i) {
	case W_ACCESS:
		if (!strcmp(v, "vfio"))
			w->access = VOP_CARD_VFIO;
		else if (!strcmp(v, "bar"))
			w->access = VOP_CARD_BAR;
		else if (!strcmp(v, "ivshmem"))
			w->access = VOP_CARD_IVSHMEM;
		else if (!strcmp(v, "stream"))
			w->access = VOP_CARD_STREAM;
		else
			return fail(c, key, "must be vfio, bar, ivshmem or stream");
		return 0;
	case W_PATH:
		if (!*v)
			return fail(c, key, "is empty");
		return copy_str(c, key, v, w->path, sizeof(w->path));
	case W_DBPATH:
		return copy_str(c, key, v, w->doorbell_path, sizeof(w->doorbell_path));
	case W_BAR:
		if (!num(v, 0, 5, NULL, &u))
			return fail(c, key, "must be 0-5");
		w->bar = (uint32_t)u;
		return 0;
	case W_OFFSET:
	case W_SIZE:
		if (!num(v, 0, 1ull << 40, NULL, &u) || u % 4096u)
			return fail(c, key, "must be a multiple of 4096 up to 2^40");
		*((1u << i) == W_OFFSET ? &w->offset : &w->size) = u;
		return 0;
	case W_SIDE:
		if (strcmp(v, "creator") && strcmp(v, "attacher"))
			return fail(c, key, "must be creator or attacher");
		w->creator = v[0] == 'c';
		return 0;
	case W_PEER:
		if (!num(v, -1, 65535, &s, NULL))
			return fail(c, key, "must be -1 (any / none) or 0-65535");
		w->peer_id = (int32_t)s;
		return 0;
	case W_VECTOR:
	case W_VECTORS:
		if (!num(v, 0, 64, NULL, &u) || ((1u << i) == W_VECTOR && u > 63))
			return fail(c, key, "must be 0-63 (vector) or 0-64 (vectors)");
		*((1u << i) == W_VECTOR ? &w->vector : &w->vectors) = (uint32_t)u;
		return 0;
	case W_DOORBELL:
		if (!strcmp(v, "interrupt"))
			w->doorbell = VOP_PCI_DB_EVENT;
		else if (!strcmp(v, "poll"))
			w->doorbell = VOP_PCI_DB_POLL;
		else
			return fail(c, key, "must be interrupt or poll");
		return 0;
	case W_POLLMAX:
		if (!num(v, 0, 1000000, NULL, &u))
			return fail(c, key, "must be 0-1000000");
		w->poll_max_us = (uint32_t)u;
		return 0;
	default: /* W_WC */
		if (!boolean(v, &w->wc))
			return fail(c, key, "must be 0 or 1");
		return 0;
	}
}

/* stream.* keys (window.access=stream). */
static int stream_key(struct ctx *c, struct vop_card_stream *st, unsigned *seen, const char *key, const char *k,
		      const char *v)
{
	static const char *const names[] = { "secret_file", "allow_plaintext", "tls_ca", "tls_cert", "tls_key",
					     "tls_peer" };
	char *dst[] = { st->secret_file, NULL, st->tls_ca, st->tls_cert, st->tls_key, st->tls_peer };
	unsigned i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(k, names[i]))
			break;
	if (i == sizeof(names) / sizeof(names[0]))
		return fail(c, key, "unknown key");
	if (*seen & (1u << i))
		return fail(c, key, "given twice");
	*seen |= 1u << i;
	if (i == 1) {
		if (!boolean(v, &st->allow_plain))
			return fail(c, key, "must be 0 or 1");
		return 0;
	}
	if (!*v)
		return fail(c, key, "is empty");
	return copy_str(c, key, v, dst[i], VOP_CARD_STR_MAX + 1);
}

static struct vop_card_device *device_named(struct vop_card_config *cfg, const char *name, size_t n)
{
	unsigned i;

	for (i = 0; i < cfg->ndev; i++)
		if (strlen(cfg->dev[i].name) == n && !memcmp(cfg->dev[i].name, name, n))
			return &cfg->dev[i];
	return NULL;
}

/* A string the backend config points at: kept in d->s[]. */
static int dev_str(struct ctx *c, struct vop_card_device *d, const char *key, const char *v, const char **dst)
{
	int rc;

	if (d->ns >= sizeof(d->s) / sizeof(d->s[0]))
		return fail(c, key, "too many strings for one device");
	rc = copy_str(c, key, v, d->s[d->ns], sizeof(d->s[0]));
	if (rc)
		return rc;
	*dst = d->s[d->ns++];
	return 0;
}

/* The keys each kind takes, after kind and role. */
static const char *const CONSOLE_KEYS[] = { "pty", "log", "unix", NULL };
static const char *const BLK_KEYS[] = { "file", "ro", "direct", "serial", "nbd_unix", "nbd_name", "nbd_device", NULL };
static const char *const NET_KEYS[] = { "tap", "mtu", "mac", "offloads", NULL };
static const char *const COMMON_KEYS[] = { "kind", "role", "queue_size", "event_idx", NULL };

static int key_index(const char *const *keys, const char *k)
{
	int i;

	for (i = 0; keys[i]; i++)
		if (!strcmp(keys[i], k))
			return i;
	return -1;
}

struct dev_seen {
	unsigned common, kind;
};

static int device_key(struct ctx *c, struct vop_card_device *d, struct dev_seen *seen, const char *key,
		      const char *k, const char *v)
{
	struct vop_devback_config *cfg = &d->cfg;
	const char *const *kk;
	int ci = key_index(COMMON_KEYS, k), ki;
	uint64_t u;
	bool b;

	if (ci >= 0) {
		if (seen->common & (1u << ci))
			return fail(c, key, "given twice");
		seen->common |= 1u << ci;
		switch (ci) {
		case 0:
			if (!strcmp(v, "console"))
				cfg->kind = VOP_DEVBACK_CONSOLE;
			else if (!strcmp(v, "blk"))
				cfg->kind = VOP_DEVBACK_BLK;
			else if (!strcmp(v, "net"))
				cfg->kind = VOP_DEVBACK_NET;
			else
				return fail(c, key, "must be console, blk or net");
			d->has_kind = true;
			return 0;
		case 1:
			if (!strcmp(v, "device"))
				cfg->role = VOP_ROLE_DEVICE;
			else if (!strcmp(v, "driver"))
				cfg->role = VOP_ROLE_DRIVER;
			else
				return fail(c, key, "must be device or driver");
			d->has_role = true;
			return 0;
		case 2:
			if (!num(v, 0, 32768, NULL, &u) || (u & (u - 1)))
				return fail(c, key, "must be 0 (256) or a power of two up to 32768");
			cfg->queue_size = (uint16_t)u;
			return 0;
		default:
			if (!boolean(v, &cfg->event_idx))
				return fail(c, key, "must be 0 or 1");
			return 0;
		}
	}
	if (!d->has_kind)
		return fail(c, key, "unknown key, or before this device's kind");
	kk = cfg->kind == VOP_DEVBACK_CONSOLE ? CONSOLE_KEYS : cfg->kind == VOP_DEVBACK_BLK ? BLK_KEYS : NET_KEYS;
	ki = key_index(kk, k);
	if (ki < 0)
		return fail(c, key, "unknown key for this kind");
	if (seen->kind & (1u << ki))
		return fail(c, key, "given twice");
	seen->kind |= 1u << ki;
	if (cfg->kind == VOP_DEVBACK_CONSOLE) {
		struct vop_console_config *k2 = &cfg->console.backend;

		switch (ki) {
		case 0:
			k2->want_pty = true;
			if (!*v)
				return 0;
			return dev_str(c, d, key, v, &k2->pty_link);
		case 1:
			return dev_str(c, d, key, v, &k2->log_path);
		default:
			return dev_str(c, d, key, v, &k2->unix_path);
		}
	}
	if (cfg->kind == VOP_DEVBACK_BLK) {
		switch (ki) {
		case 0:
			return dev_str(c, d, key, v, &cfg->blk.device.path);
		case 1:
		case 2:
			if (!boolean(v, &b))
				return fail(c, key, "must be 0 or 1");
			if (ki == 1)
				cfg->blk.ro = cfg->blk.device.ro = b;
			else
				cfg->blk.device.direct = b;
			return 0;
		case 3:
			return dev_str(c, d, key, v, &cfg->blk.device.serial);
		case 4:
			return dev_str(c, d, key, v, &cfg->blk.nbd.unix_path);
		case 5:
			return dev_str(c, d, key, v, &cfg->blk.nbd.export_name);
		default:
			if (strncmp(v, "/dev/nbd", 8) != 0)
				return fail(c, key, "must be a /dev/nbdN device");
			return copy_str(c, key, v, d->nbd_device, sizeof(d->nbd_device));
		}
	}
	switch (ki) {
	case 0:
		return dev_str(c, d, key, v, &cfg->net.backend.tap_name);
	case 1:
		if (!num(v, 68, 65535, NULL, &u))
			return fail(c, key, "must be 68-65535");
		cfg->net.mtu = (uint16_t)u;
		return 0;
	case 2: {
		unsigned m[6];
		char tail;

		if (strlen(v) != 17 ||
		    sscanf(v, "%2x:%2x:%2x:%2x:%2x:%2x%c", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5], &tail) != 6 ||
		    (m[0] & 1u))
			return fail(c, key, "must be a unicast MAC aa:bb:cc:dd:ee:ff");
		for (unsigned i = 0; i < 6; i++)
			cfg->net.mac[i] = (uint8_t)m[i];
		return 0;
	}
	default:
		if (!boolean(v, &cfg->net.offloads))
			return fail(c, key, "must be 0 or 1");
		return 0;
	}
}

static bool label_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-';
}

int vop_card_config_parse(const char *text, size_t len, struct vop_card_config *out, char *err, size_t errlen)
{
	struct dev_seen dseen[VOP_CARD_MAX_DEVICES];
	struct ctx c = { 0, err, errlen };
	char line[VOP_CARD_STR_MAX + 128];
	unsigned wseen = 0, sseen = 0, i;
	size_t pos = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	memset(dseen, 0, sizeof(dseen));
	out->window.peer_id = -1;
	if (errlen)
		err[0] = 0;
	if (len > VOP_CARD_TEXT_MAX) {
		fail(&c, "config", "longer than %u bytes", VOP_CARD_TEXT_MAX);
		return -E2BIG;
	}
	while (pos < len) {
		size_t n = 0;
		char *eq, *k;

		c.line++;
		while (pos < len && text[pos] != '\n') {
			if (n + 1 >= sizeof(line) || text[pos] == 0)
				return fail(&c, "config", text[pos] ? "line too long" : "NUL byte");
			line[n++] = text[pos++];
		}
		pos++; /* the newline */
		line[n] = 0;
		if (n == 0 || line[0] == '#')
			continue;
		eq = strchr(line, '=');
		if (!eq)
			return fail(&c, "config", "not a key=value line");
		*eq = 0;
		k = line;
		for (char *p = k; *p; p++)
			if (!label_char(*p) && *p != '.' && *p != '_')
				return fail(&c, "config", "bad character in key");
		if (!strncmp(k, "window.", 7)) {
			rc = window_key(&c, &out->window, &wseen, k, k + 7, eq + 1);
		} else if (!strncmp(k, "stream.", 7)) {
			rc = stream_key(&c, &out->stream, &sseen, k, k + 7, eq + 1);
		} else if (!strncmp(k, "device.", 7)) {
			const char *name = k + 7, *dot = strchr(name, '.');
			struct vop_card_device *d;
			size_t nl;

			if (!dot || dot == name || (size_t)(dot - name) > VOP_CARD_NAME_MAX)
				return fail(&c, k, "must be device.NAME.KEY with NAME a DNS label of 1-63 characters");
			nl = (size_t)(dot - name);
			for (i = 0; i < nl; i++)
				if (!label_char(name[i]) || name[i] == '_')
					return fail(&c, k, "device name must be a DNS label");
			if (name[0] == '-' || name[nl - 1] == '-')
				return fail(&c, k, "device name must be a DNS label");
			d = device_named(out, name, nl);
			if (!d) {
				if (out->ndev >= VOP_CARD_MAX_DEVICES) {
					fail(&c, k, "more than %u devices", VOP_CARD_MAX_DEVICES);
					return -E2BIG;
				}
				d = &out->dev[out->ndev++];
				memcpy(d->name, name, nl);
				d->name[nl] = 0;
				d->cfg.dev_id = vop_card_dev_id(d->name);
				d->cfg.event_idx = true;
			}
			rc = device_key(&c, d, &dseen[d - out->dev], k, dot + 1, eq + 1);
		} else {
			rc = fail(&c, k, "unknown key (window.*, stream.* or device.NAME.*)");
		}
		if (rc)
			return rc;
	}
	c.line = 0;
	if (!(wseen & W_ACCESS) || !(wseen & W_PATH))
		return fail(&c, "window", "window.access and window.path are required");
	if (out->window.access == VOP_CARD_STREAM) {
		struct vop_card_stream *st = &out->stream;
		unsigned ntls = !!st->tls_ca[0] + !!st->tls_cert[0] + !!st->tls_key[0] + !!st->tls_peer[0];

		if (wseen & ~(unsigned)(W_ACCESS | W_PATH))
			return fail(&c, "window", "only window.access and window.path apply to a stream");
		if (strncmp(out->window.path, "tcp:", 4) && strncmp(out->window.path, "unix:", 5) &&
		    strncmp(out->window.path, "vsock:", 6))
			return fail(&c, "window.path", "a stream address is tcp:IPV4:PORT, unix:PATH or vsock:CID:PORT");
		if (ntls != 0 && ntls != 4)
			return fail(&c, "stream.tls_ca", "TLS needs stream.tls_ca, tls_cert, tls_key and tls_peer");
		if (!ntls && !st->secret_file[0] && !st->allow_plain)
			return fail(&c, "stream", "needs stream.secret_file or the stream.tls_* keys (or stream.allow_plaintext=1)");
		if (st->allow_plain && (ntls || st->secret_file[0]))
			return fail(&c, "stream.allow_plaintext", "contradicts a secret or TLS");
	} else if (sseen) {
		return fail(&c, "stream", "stream.* keys need window.access=stream");
	}
	if (out->window.access == VOP_CARD_VFIO && (wseen & W_DBPATH))
		return fail(&c, "window.doorbell_path", "only with window.access=bar (vfio uses BAR0 itself)");
	if (out->window.access == VOP_CARD_BAR && out->window.doorbell == VOP_PCI_DB_EVENT)
		return fail(&c, "window.doorbell", "must be poll with window.access=bar (no interrupt path without vfio)");
	if (out->window.wc && out->window.access != VOP_CARD_BAR)
		return fail(&c, "window.write_combining", "only with window.access=bar");
	if (out->ndev == 0)
		return fail(&c, "device", "at least one device.NAME.kind is required");
	for (i = 0; i < out->ndev; i++) {
		struct vop_card_device *d = &out->dev[i];
		struct vop_devback_config *cfg = &d->cfg;

		for (unsigned j = 0; j < i; j++)
			if (out->dev[j].cfg.dev_id == cfg->dev_id)
				return fail(&c, d->name, "collides with device %s in the device table", out->dev[j].name);
		if (!d->has_kind || !d->has_role)
			return fail(&c, d->name, "needs kind and role");
		if (out->window.access == VOP_CARD_STREAM && cfg->role != out->dev[0].cfg.role)
			return fail(&c, d->name, "a stream carries devices of one role (device roles listen, driver roles dial)");
		if (cfg->kind == VOP_DEVBACK_BLK && cfg->role == VOP_ROLE_DEVICE && !cfg->blk.device.path)
			return fail(&c, d->name, "a blk device needs file");
		if (cfg->kind == VOP_DEVBACK_BLK && cfg->role == VOP_ROLE_DRIVER && !cfg->blk.nbd.unix_path)
			return fail(&c, d->name, "a blk driver needs nbd_unix (nbd_device connects to it)");
		if (cfg->kind == VOP_DEVBACK_BLK && (cfg->queue_size == 2 || cfg->queue_size == 1))
			return fail(&c, d->name, "queue_size must be at least 4 for blk");
		if (cfg->kind != VOP_DEVBACK_BLK && d->nbd_device[0])
			return fail(&c, d->name, "nbd_device is for blk");
		if (cfg->kind == VOP_DEVBACK_BLK && cfg->role == VOP_ROLE_DEVICE &&
		    (cfg->blk.nbd.unix_path || cfg->blk.nbd.export_name || d->nbd_device[0]))
			return fail(&c, d->name, "nbd_* keys are for the driver role");
		if (cfg->kind == VOP_DEVBACK_BLK && cfg->role == VOP_ROLE_DRIVER &&
		    (cfg->blk.device.path || cfg->blk.device.serial || cfg->blk.device.direct))
			return fail(&c, d->name, "file, serial and direct are for the device role");
		if (cfg->kind == VOP_DEVBACK_NET && !cfg->net.backend.tap_name)
			return fail(&c, d->name, "a net device needs tap");
		if (cfg->kind == VOP_DEVBACK_CONSOLE && cfg->role == VOP_ROLE_DRIVER &&
		    (cfg->console.backend.log_path || cfg->console.backend.unix_path))
			return fail(&c, d->name, "log and unix are for the device role");
	}
	return 0;
}
