/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A vhost-user device: the vhost-user back-end (core/vhost_user.c) hosting
 * one device backend through a host device context. Contract in
 * vop/dev_vhost.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vop/dev_sink.h"
#include "vop/dev_vhost.h"

/* One queue group (net: a queue pair) served by its own backend instance. */
struct vhost_grp {
	struct vop_vhost *h;
	unsigned k;              /* group index: its queue q is ring k * per + q */
	struct vop_devctx *ctx;
	struct vop_devback *b;   /* NET, BLK */
	struct vop_sink *sink;   /* SINK */
};

struct vop_vhost {
	enum vop_vhost_kind kind;
	struct vop_vhu *vhu;
	unsigned ngroups;
	unsigned per;            /* rings per group */
	struct vhost_grp g[VOP_VHU_MAX_QUEUES];
	struct vop_dev_info di;  /* the entry each backend finds (read-only after open) */
};

/* ---- host ops of the device context ---- */

static int h_find(void *arg, uint32_t dev_id, uint32_t type, struct vop_dev_info *out)
{
	struct vop_vhost *h = ((struct vhost_grp *)arg)->h;

	if (dev_id != h->di.dev_id)
		return -ENOENT;
	*out = h->di;
	return type == h->di.device_type ? 0 : -EPROTO;
}

static int h_queue(void *arg, const struct vop_dev_info *di, unsigned q, uint64_t features,
		   struct vop_devq_geom *g)
{
	struct vhost_grp *gr = arg;
	struct vop_vhu_qstart st;
	int rc;

	(void)di;
	if (q >= gr->h->per)
		return -EINVAL;
	rc = vop_vhu_queue(gr->h->vhu, gr->k * gr->h->per + q, features, &g->cfg, &st);
	if (rc)
		return rc;
	g->resume = true; /* the front-end owns the ring's history */
	g->last_avail = st.last_avail;
	g->used_idx = st.used_idx;
	g->journal = st.journal;
	g->journal_bytes = st.journal_bytes;
	return 0;
}

static void h_notify(void *arg, unsigned q)
{
	struct vhost_grp *gr = arg;

	if (q < gr->h->per)
		vop_vhu_notify(gr->h->vhu, gr->k * gr->h->per + q);
}

static void h_wake(void *arg)
{
	struct vhost_grp *gr = arg;

	vop_vhu_wake(gr->h->vhu);
}

static void h_config_write(void *arg, const void *cfg, uint32_t len)
{
	struct vhost_grp *gr = arg;

	if (gr->k == 0) /* every group holds the same config space */
		vop_vhu_config_write(gr->h->vhu, cfg, len);
}

static const struct vop_devctx_host_ops host_ops = {
	.find = h_find,
	.queue = h_queue,
	.notify = h_notify,
	.wake = h_wake,
	.config_write = h_config_write,
};

/* ---- open / close ---- */

/*
 * The sink's entry: a plain virtio-net device without offloads. It pushes
 * every chain right after popping it, so it offers VIRTIO_F_IN_ORDER (as
 * DPDK's vhost PMD does; DPDK's virtio-user then uses its in-order transmit
 * path). The ring code's checks do not depend on it.
 */
static void sink_spec(struct vop_dev_spec *spec, uint32_t dev_id)
{
	static const uint8_t mac[6] = { 0x52, 0x54, 0x00, 0x76, 0x6f, 0x73 };

	vop_net_spec(spec, dev_id, 0, 256, 1500, mac);
	spec->features = (1ull << VOP_NET_F_MAC) | (1ull << VOP_NET_F_STATUS) | (1ull << VOP_NET_F_MRG_RXBUF) |
			 (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_IN_ORDER);
}

int vop_vhost_open(const struct vop_vhost_config *cfg, struct vop_vhost **out, const char **err)
{
	struct vop_vhost *h;
	struct vop_devback_config dev = cfg->dev;
	struct vop_vhu_config vc = cfg->vhu;
	struct vop_dev_spec spec;
	const struct vop_devback_ops *ops = NULL;
	void *obj = NULL;
	const char *dummy;
	void *objs[VOP_VHU_MAX_QUEUES];
	unsigned q, k, pairs = cfg->queue_pairs ? cfg->queue_pairs : 1u;
	int rc;

	*out = NULL;
	if (!err)
		err = &dummy;
	*err = "arguments";
	if (dev.dev_id == 0)
		dev.dev_id = 1;
	dev.role = VOP_ROLE_DEVICE;
	switch (cfg->kind) {
	case VOP_VHOST_NET:
		dev.kind = VOP_DEVBACK_NET;
		rc = vop_devback_spec(&dev, 0, &spec);
		break;
	case VOP_VHOST_BLK:
		dev.kind = VOP_DEVBACK_BLK;
		rc = vop_devback_spec(&dev, 0, &spec);
		break;
	case VOP_VHOST_SINK:
		sink_spec(&spec, dev.dev_id);
		if (!dev.event_idx)
			spec.features &= ~(1ull << VOP_F_EVENT_IDX);
		rc = 0;
		break;
	default:
		rc = -EINVAL;
	}
	if (rc)
		return rc;
	/* queue pairs: net and sink only, each pair a backend instance on the same surface */
	if (pairs > 1 && (cfg->kind == VOP_VHOST_BLK || pairs * spec.num_queues > VOP_VHU_MAX_QUEUES))
		return -EINVAL;
	if (pairs > 1)
		spec.features |= 1ull << VOP_NET_F_MQ;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->kind = cfg->kind;
	h->di.dev_id = dev.dev_id;
	h->di.device_type = spec.device_type;
	h->di.features_offered = spec.features | (1ull << VOP_F_VERSION_1);
	h->di.device_side = 0;
	h->di.num_queues = spec.num_queues;
	for (q = 0; q < spec.num_queues; q++)
		h->di.queues[q].size = spec.queue_size[q];
	h->di.config_len = spec.config_len;
	if (spec.config && spec.config_len <= sizeof(h->di.config))
		memcpy(h->di.config, spec.config, spec.config_len);
	if (pairs > 1 && h->di.config_len >= sizeof(struct vop_net_config_space)) {
		struct vop_net_config_space cs;

		memcpy(&cs, h->di.config, sizeof(cs));
		cs.max_virtqueue_pairs = (vop_le16)pairs; /* little-endian hosts, as vop_net_spec() */
		memcpy(h->di.config, &cs, sizeof(cs));
	}

	vc.num_queues = spec.num_queues;
	vc.groups = (uint16_t)pairs;
	h->per = spec.num_queues;
	h->ngroups = pairs;
	/* the split ring code validates indirect tables: offer them */
	vc.features = spec.features | (1ull << VOP_F_INDIRECT_DESC);
	vc.config_space = cfg->kind == VOP_VHOST_BLK;
	vc.inflight = cfg->kind == VOP_VHOST_BLK;
	vc.in_order = cfg->kind != VOP_VHOST_BLK; /* the blk I/O pool completes out of order */
	*err = "socket";
	rc = vop_vhu_create(&vc, &h->vhu);
	if (rc)
		goto fail;
	vop_vhu_config_write(h->vhu, h->di.config, h->di.config_len);
	for (k = 0; k < pairs; k++) {
		struct vhost_grp *gr = &h->g[k];

		gr->h = h;
		gr->k = k;
		*err = "context";
		rc = vop_devctx_create_host(&host_ops, gr, &gr->ctx);
		if (rc)
			goto fail;
		if (cfg->kind == VOP_VHOST_SINK) {
			*err = "net-sink";
			rc = vop_sink_create(gr->ctx, dev.dev_id, &gr->sink);
			if (rc == 0 && cfg->sink_copy)
				rc = vop_sink_set_copy(gr->sink, true);
			if (rc)
				goto fail;
			ops = &vop_sink_ops;
			objs[k] = gr->sink;
		} else {
			struct vop_devback_config dk = dev;

			/* the second and further pairs serve the first one's TAP or socket */
			if (k > 0)
				dk.net.backend.share = vop_devback_net(h->g[0].b);
			rc = vop_devback_open(gr->ctx, NULL, &dk, &gr->b, err);
			if (rc)
				goto fail;
			vop_devback_serve(gr->b, &ops, &obj);
			objs[k] = obj;
		}
	}
	*err = "start";
	rc = vop_vhu_start_groups(h->vhu, ops, objs, pairs);
	if (rc)
		goto fail;
	*err = NULL;
	*out = h;
	return 0;
fail:
	vop_vhost_close(h);
	return rc;
}

void vop_vhost_close(struct vop_vhost *h)
{
	if (!h)
		return;
	unsigned k;

	/* the connection ends and the backends stop before anything they use goes */
	vop_vhu_stop(h->vhu);
	for (k = VOP_VHU_MAX_QUEUES; k-- > 0;) { /* the first pair's surface last: the others share it */
		vop_devback_close(NULL, h->g[k].b);
		vop_sink_destroy(h->g[k].sink);
		vop_devctx_destroy(h->g[k].ctx); /* its fd watcher may still wake the (stopped) device */
	}
	vop_vhu_destroy(h->vhu);
	free(h);
}

struct vop_vhu *vop_vhost_vhu(struct vop_vhost *h)
{
	return h->vhu;
}

enum vop_vhost_kind vop_vhost_kind(const struct vop_vhost *h)
{
	return h->kind;
}

/* Sum of the net counters of every pair. */
static void net_add(struct vop_net_stats *a, const struct vop_net_stats *b)
{
	a->tx_frames += b->tx_frames;
	a->rx_frames += b->rx_frames;
	a->tx_bytes += b->tx_bytes;
	a->rx_bytes += b->rx_bytes;
	a->tx_dropped += b->tx_dropped;
	a->rx_dropped += b->rx_dropped;
	a->bad_headers += b->bad_headers;
	a->gso_frames += b->gso_frames;
	a->rx_buffers += b->rx_buffers;
}

void vop_vhost_counters(struct vop_vhost *h, struct vop_devback_counters *out)
{
	unsigned k;

	if (h->g[0].b) {
		vop_devback_counters(h->g[0].b, out);
		for (k = 1; k < h->ngroups && out->kind == VOP_DEVBACK_NET; k++) {
			struct vop_devback_counters c;

			vop_devback_counters(h->g[k].b, &c);
			net_add(&out->net, &c.net);
		}
		return;
	}
	memset(out, 0, sizeof(*out));
	out->kind = VOP_DEVBACK_NET;
	out->role = VOP_ROLE_DEVICE;
	out->valid = true;
	for (k = 0; k < h->ngroups; k++) {
		struct vop_net_stats st;

		vop_sink_stats(h->g[k].sink, &st);
		net_add(&out->net, &st);
	}
}

unsigned vop_vhost_rings(const struct vop_vhost *h)
{
	return h->ngroups * h->per;
}

void vop_vhost_endpoints(struct vop_vhost *h, struct vop_devback_endpoints *out)
{
	if (h->g[0].b)
		vop_devback_endpoints(h->g[0].b, out);
	else
		memset(out, 0, sizeof(*out));
}
