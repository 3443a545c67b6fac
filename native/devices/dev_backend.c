/* SPDX-License-Identifier: Apache-2.0 */
/* Device backends on a link from typed configurations: see vop/dev_backend.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vop/dev_backend.h"

struct vop_devback {
	enum vop_devback_kind kind;
	enum vop_role role;
	uint32_t id;
	void *obj;           /* backend */
	bool attached;       /* served by the link */
	struct vop_nbd *nbd; /* blk driver: NBD server */
	char netns[VOP_NETNS_NAME_MAX + 1]; /* net: the namespace the TAP was moved into */
};

/* Offloads a net device offers only when cfg->net.offloads (checksum, TSO, ECN both ways). */
#define NET_OFFLOAD_FEATURES                                                                      \
	((1ull << VOP_NET_F_CSUM) | (1ull << VOP_NET_F_GUEST_CSUM) | (1ull << VOP_NET_F_GUEST_TSO4) | \
	 (1ull << VOP_NET_F_GUEST_TSO6) | (1ull << VOP_NET_F_GUEST_ECN) |                             \
	 (1ull << VOP_NET_F_HOST_TSO4) | (1ull << VOP_NET_F_HOST_TSO6) | (1ull << VOP_NET_F_HOST_ECN))

static bool pow2_in(uint32_t v, uint32_t min, uint32_t max)
{
	return v >= min && v <= max && (v & (v - 1)) == 0;
}

static bool is_role(enum vop_role r)
{
	return r == VOP_ROLE_DEVICE || r == VOP_ROLE_DRIVER;
}

int vop_devback_spec(const struct vop_devback_config *cfg, unsigned side, struct vop_dev_spec *spec)
{
	uint32_t qs = cfg->queue_size ? cfg->queue_size : VOP_DEVBACK_QUEUE_SIZE;
	uint8_t dside;

	if (cfg->dev_id == 0 || !is_role(cfg->role))
		return -EINVAL;
	dside = cfg->role == VOP_ROLE_DEVICE ? (uint8_t)(side & 1u) : (uint8_t)((side & 1u) ^ 1u);
	switch (cfg->kind) {
	case VOP_DEVBACK_BLK: {
		uint32_t seg = cfg->blk.seg_bytes ? cfg->blk.seg_bytes : VOP_DEVBACK_BLK_SEG_BYTES;

		if (!pow2_in(qs, VOP_DEVBACK_BLK_ENTRIES_PER_REQUEST, VOP_QUEUE_MAX_SIZE) || seg % 4096u ||
		    seg < 4096u || seg > (16u << 20))
			return -EINVAL;
		vop_blk_spec(spec, cfg->dev_id, dside, (uint16_t)(qs / VOP_DEVBACK_BLK_ENTRIES_PER_REQUEST), seg,
			     cfg->blk.ro);
		break;
	}
	case VOP_DEVBACK_NET: {
		static const uint8_t zero[6];
		uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x76, 0x6f, (uint8_t)cfg->dev_id };
		uint32_t mtu = cfg->net.mtu ? cfg->net.mtu : 1500u;

		if (!pow2_in(qs, 1, VOP_QUEUE_MAX_SIZE) || mtu < 68 || (cfg->net.mac[0] & 1u))
			return -EINVAL;
		if (memcmp(cfg->net.mac, zero, 6) != 0)
			memcpy(mac, cfg->net.mac, 6);
		vop_net_spec(spec, cfg->dev_id, dside, (uint16_t)qs, (uint16_t)mtu, mac);
		if (!cfg->net.offloads)
			spec->features &= ~NET_OFFLOAD_FEATURES;
		break;
	}
	case VOP_DEVBACK_CONSOLE:
		if (!pow2_in(qs, 1, VOP_QUEUE_MAX_SIZE))
			return -EINVAL;
		vop_console_spec(spec, cfg->dev_id, dside, (uint16_t)qs);
		break;
	default:
		return -EINVAL;
	}
	if (!cfg->event_idx)
		spec->features &= ~(1ull << VOP_F_EVENT_IDX);
	return 0;
}

int vop_devback_publish(struct vop_window *w, const struct vop_devback_config *cfg)
{
	struct vop_dev_spec spec;
	int rc = vop_devback_spec(cfg, w->side, &spec);

	return rc ? rc : vop_devtab_publish(w, &spec);
}

static const struct vop_devback_ops *ops_of(const struct vop_devback *b)
{
	switch (b->kind) {
	case VOP_DEVBACK_BLK:
		return b->role == VOP_ROLE_DEVICE ? &vop_blk_device_ops : &vop_blk_driver_ops;
	case VOP_DEVBACK_NET:
		return &vop_net_ops;
	default:
		return &vop_console_ops;
	}
}

/* Create the backend object of b (surfaces open, not yet served). */
static int create_backend(struct vop_devctx *ctx, struct vop_devback *b, const struct vop_devback_config *cfg)
{
	bool device = b->role == VOP_ROLE_DEVICE;

	switch (b->kind) {
	case VOP_DEVBACK_BLK:
		if (device) {
			struct vop_blk_device_config c = cfg->blk.device;

			c.find_timeout_ms = cfg->find_timeout_ms;
			return vop_blk_device_create(ctx, b->id, &c, (struct vop_blk_device **)&b->obj);
		}
		return vop_blk_driver_create(ctx, b->id, cfg->find_timeout_ms, (struct vop_blk_driver **)&b->obj);
	case VOP_DEVBACK_NET: {
		struct vop_net_config c = cfg->net.backend;

		c.find_timeout_ms = cfg->find_timeout_ms;
		if (c.netns && c.netns[0])
			snprintf(b->netns, sizeof(b->netns), "%s", c.netns);
		return device ? vop_net_device_create(ctx, b->id, &c, (struct vop_net **)&b->obj)
			      : vop_net_driver_create(ctx, b->id, &c, (struct vop_net **)&b->obj);
	}
	case VOP_DEVBACK_CONSOLE: {
		struct vop_console_config c = cfg->console.backend;

		c.find_timeout_ms = cfg->find_timeout_ms;
		return device ? vop_console_device_create(ctx, b->id, &c, (struct vop_console **)&b->obj)
			      : vop_console_driver_create(ctx, b->id, &c, (struct vop_console **)&b->obj);
	}
	default:
		return -EINVAL;
	}
}

static void destroy_backend(struct vop_devback *b)
{
	if (!b->obj)
		return;
	switch (b->kind) {
	case VOP_DEVBACK_BLK:
		if (b->role == VOP_ROLE_DEVICE)
			vop_blk_device_destroy(b->obj);
		else
			vop_blk_driver_destroy(b->obj);
		break;
	case VOP_DEVBACK_NET:
		vop_net_destroy(b->obj);
		break;
	default:
		vop_console_destroy(b->obj);
		break;
	}
	b->obj = NULL;
}

static const char *step_name(const struct vop_devback *b)
{
	bool device = b->role == VOP_ROLE_DEVICE;

	switch (b->kind) {
	case VOP_DEVBACK_BLK:
		return device ? "blk-device" : "blk-driver";
	case VOP_DEVBACK_NET:
		return device ? "net-device" : "net-driver";
	default:
		return device ? "console-device" : "console-driver";
	}
}

int vop_devback_open(struct vop_devctx *ctx, struct vop_link *l, const struct vop_devback_config *cfg,
		     struct vop_devback **out, const char **err)
{
	struct vop_devback *b;
	const char *dummy;
	int rc;

	*out = NULL;
	if (!err)
		err = &dummy;
	*err = "arguments";
	if (cfg->dev_id == 0 || !is_role(cfg->role) || cfg->kind < VOP_DEVBACK_NET || cfg->kind > VOP_DEVBACK_CONSOLE ||
	    (!l && (cfg->role != VOP_ROLE_DEVICE || cfg->kind == VOP_DEVBACK_CONSOLE)))
		return -EINVAL; /* a host other than a link serves net and blk devices only */
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->kind = cfg->kind;
	b->role = cfg->role;
	b->id = cfg->dev_id;
	*err = step_name(b);
	rc = create_backend(ctx, b, cfg);
	if (rc)
		goto fail;
	if (!l) { /* served by a host that is not a link (vhost-user): vop_devback_serve() */
		*err = NULL;
		*out = b;
		return 0;
	}
	*err = "attach";
	rc = vop_link_attach_backend(l, b->id, b->role, ops_of(b), b->obj);
	if (rc)
		goto fail;
	b->attached = true;
	if (b->kind == VOP_DEVBACK_BLK && b->role == VOP_ROLE_DRIVER) {
		*err = "nbd";
		rc = vop_nbd_start(b->obj, &cfg->blk.nbd, &b->nbd);
		if (rc)
			goto fail;
	}
	*err = NULL;
	*out = b;
	return 0;
fail:
	vop_devback_close(l, b);
	return rc;
}

void vop_devback_close(struct vop_link *l, struct vop_devback *b)
{
	if (!b)
		return;
	/* detach first: requests in flight complete (IOERR) before NBD frees its connections */
	if (b->attached)
		vop_link_detach(l, b->id);
	if (b->nbd)
		vop_nbd_stop(b->nbd);
	destroy_backend(b);
	free(b);
}

void vop_devback_serve(struct vop_devback *b, const struct vop_devback_ops **ops, void **obj)
{
	*ops = ops_of(b);
	*obj = b->obj;
}

uint32_t vop_devback_id(const struct vop_devback *b)
{
	return b->id;
}

enum vop_devback_kind vop_devback_kind(const struct vop_devback *b)
{
	return b->kind;
}

enum vop_role vop_devback_role(const struct vop_devback *b)
{
	return b->role;
}

struct vop_console *vop_devback_console(struct vop_devback *b)
{
	return b->kind == VOP_DEVBACK_CONSOLE ? b->obj : NULL;
}

struct vop_net *vop_devback_net(struct vop_devback *b)
{
	return b->kind == VOP_DEVBACK_NET ? b->obj : NULL;
}

struct vop_blk_driver *vop_devback_blk_driver(struct vop_devback *b)
{
	return b->kind == VOP_DEVBACK_BLK && b->role == VOP_ROLE_DRIVER ? b->obj : NULL;
}

void vop_devback_endpoints(struct vop_devback *b, struct vop_devback_endpoints *out)
{
	memset(out, 0, sizeof(*out));
	switch (b->kind) {
	case VOP_DEVBACK_BLK:
		if (b->role != VOP_ROLE_DRIVER)
			break;
		out->has_nbd_size = true;
		out->nbd_size = vop_blk_driver_capacity(b->obj);
		if (b->nbd) {
			snprintf(out->nbd_socket, sizeof(out->nbd_socket), "%s", vop_nbd_unix_path(b->nbd));
			out->nbd_port = vop_nbd_port(b->nbd);
		}
		break;
	case VOP_DEVBACK_NET:
		snprintf(out->tap, sizeof(out->tap), "%s", vop_net_ifname(b->obj));
		snprintf(out->netns, sizeof(out->netns), "%s", b->netns);
		break;
	case VOP_DEVBACK_CONSOLE:
		snprintf(out->pty, sizeof(out->pty), "%s", vop_console_pty_name(b->obj));
		break;
	}
}

void vop_devback_counters(struct vop_devback *b, struct vop_devback_counters *out)
{
	memset(out, 0, sizeof(*out));
	out->kind = b->kind;
	out->role = b->role;
	switch (b->kind) {
	case VOP_DEVBACK_BLK:
		if (b->role == VOP_ROLE_DEVICE) {
			vop_blk_device_stats(b->obj, &out->blk);
			out->valid = true;
		}
		break;
	case VOP_DEVBACK_NET:
		vop_net_stats(b->obj, &out->net);
		out->valid = true;
		break;
	case VOP_DEVBACK_CONSOLE:
		vop_console_stats(b->obj, &out->console);
		out->valid = true;
		break;
	}
}
