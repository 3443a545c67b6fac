/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stream protocol's frame parser and encoders (vop/stream.h,
 * docs/stream-protocol.md). Pure functions: no state, no I/O, every value
 * read once from the peer's bytes and checked before use. Fuzzed by
 * test/native/fuzz/fuzz-stream-frame.c.
 */
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "vop/stream.h"

#define FAIL(msg)                \
	do {                     \
		if (why)         \
			*why = msg; \
		return -EPROTO;  \
	} while (0)

const char *vop_smsg_name(unsigned type)
{
	switch (type) {
	case VOP_SMSG_HELLO: return "hello";
	case VOP_SMSG_AUTH: return "auth";
	case VOP_SMSG_DEV_INFO: return "dev_info";
	case VOP_SMSG_READY: return "ready";
	case VOP_SMSG_DEV_START: return "dev_start";
	case VOP_SMSG_DEV_RESET: return "dev_reset";
	case VOP_SMSG_CONFIG: return "config";
	case VOP_SMSG_CHAINS: return "chains";
	case VOP_SMSG_USED: return "used";
	case VOP_SMSG_PING: return "ping";
	case VOP_SMSG_PONG: return "pong";
	case VOP_SMSG_ERROR: return "error";
	default: return "unknown";
	}
}

int vop_sframe_header(const uint8_t hdr[VOP_SFRAME_HDR], const struct vop_stream_limits *lim,
		      struct vop_sframe *out, const char **why)
{
	uint32_t len = vop_sget32(hdr), want = UINT32_MAX;
	uint8_t type = hdr[4];

	if (len > lim->max_frame) {
		if (why)
			*why = "frame length exceeds the negotiated max_frame";
		return -EMSGSIZE;
	}
	if (hdr[5] != 0 || vop_sget16(hdr + 6) != 0)
		FAIL("frame flags/reserved not zero");
	switch (type) {
	case VOP_SMSG_HELLO: want = VOP_SMSG_HELLO_LEN; break;
	case VOP_SMSG_AUTH: want = VOP_STREAM_MAC; break;
	case VOP_SMSG_READY: want = VOP_SMSG_READY_LEN; break;
	case VOP_SMSG_DEV_START: want = VOP_SMSG_DEV_START_LEN; break;
	case VOP_SMSG_DEV_RESET: want = VOP_SMSG_DEV_RESET_LEN; break;
	case VOP_SMSG_PING:
	case VOP_SMSG_PONG: want = VOP_SMSG_PING_LEN; break;
	case VOP_SMSG_DEV_INFO:
		if (len < VOP_SMSG_DEV_INFO_FIXED + 8u + 4u || len > VOP_SMSG_DEV_INFO_MAX)
			FAIL("dev_info length out of range");
		break;
	case VOP_SMSG_CHAINS:
	case VOP_SMSG_USED:
		if (len < VOP_SMSG_BATCH_HDR)
			FAIL("batch shorter than its header");
		break;
	case VOP_SMSG_CONFIG:
		if (len < VOP_SMSG_CONFIG_FIXED || len > VOP_SMSG_CONFIG_MAX)
			FAIL("config length out of range");
		break;
	case VOP_SMSG_ERROR:
		if (len < 4 || len > 4 + VOP_STREAM_REASON_MAX)
			FAIL("error length out of range");
		break;
	default:
		FAIL("unknown message type");
	}
	if (want != UINT32_MAX && len != want)
		FAIL("fixed message with a wrong length");
	out->type = type;
	out->flags = 0;
	out->len = len;
	return 0;
}

int vop_shello_parse(const uint8_t *p, uint32_t len, struct vop_shello *out, const char **why)
{
	if (len != VOP_SMSG_HELLO_LEN)
		FAIL("hello length");
	if (vop_sget32(p) != VOP_STREAM_MAGIC)
		FAIL("hello magic is not VOPS");
	out->version_major = vop_sget16(p + 4);
	out->version_minor = vop_sget16(p + 6);
	out->side = p[8];
	out->auth = p[9];
	if (vop_sget16(p + 10) != 0)
		FAIL("hello reserved not zero");
	out->max_frame = vop_sget32(p + 12);
	out->max_segs = vop_sget32(p + 16);
	memcpy(out->nonce, p + 20, VOP_STREAM_NONCE);
	if (out->version_major != VOP_STREAM_VERSION_MAJOR)
		FAIL("unsupported protocol major version");
	if (out->side > 1)
		FAIL("hello side not 0 or 1");
	if (out->auth > 1)
		FAIL("hello auth not 0 or 1");
	if (out->max_frame < VOP_STREAM_MIN_FRAME || out->max_frame > VOP_STREAM_MAX_FRAME)
		FAIL("hello max_frame outside [4096, 16 MiB]");
	if (out->max_segs < 1 || out->max_segs > VOP_STREAM_MAX_SEGS)
		FAIL("hello max_segs outside [1, 64]");
	return 0;
}

void vop_shello_encode(uint8_t out[VOP_SMSG_HELLO_LEN], const struct vop_shello *h)
{
	vop_sput32(out, VOP_STREAM_MAGIC);
	vop_sput16(out + 4, h->version_major);
	vop_sput16(out + 6, h->version_minor);
	out[8] = h->side;
	out[9] = h->auth;
	vop_sput16(out + 10, 0);
	vop_sput32(out + 12, h->max_frame);
	vop_sput32(out + 16, h->max_segs);
	memcpy(out + 20, h->nonce, VOP_STREAM_NONCE);
}

int vop_sdev_info_parse(const uint8_t *p, uint32_t len, const struct vop_stream_limits *lim,
			struct vop_sdev_info *out, const char **why)
{
	unsigned i;

	if (len < VOP_SMSG_DEV_INFO_FIXED)
		FAIL("dev_info length");
	memset(out, 0, sizeof(*out));
	out->dev_id = vop_sget32(p);
	out->device_type = vop_sget32(p + 4);
	out->features = vop_sget64(p + 8);
	out->num_queues = vop_sget16(p + 16);
	if (vop_sget16(p + 18) != 0)
		FAIL("dev_info reserved not zero");
	if (out->dev_id == 0)
		FAIL("dev_info dev_id 0");
	if (out->num_queues < 1 || out->num_queues > VOP_MAX_QUEUES)
		FAIL("dev_info num_queues outside [1, 8]");
	if (len < VOP_SMSG_DEV_INFO_FIXED + 8u * out->num_queues + 4u)
		FAIL("dev_info shorter than its queues and config header");
	for (i = 0; i < out->num_queues; i++) {
		const uint8_t *q = p + VOP_SMSG_DEV_INFO_FIXED + 8u * i;
		uint16_t sz = vop_sget16(q);

		if (sz == 0 || sz > 32768 || (sz & (sz - 1)))
			FAIL("dev_info queue size not a power of two <= 32768");
		if (vop_sget16(q + 2) != 0)
			FAIL("dev_info queue reserved not zero");
		out->queue_size[i] = sz;
		out->max_chain[i] = vop_sget32(q + 4);
		/* A chain must fit one frame with its batch and chain headers. */
		if (out->max_chain[i] == 0 || out->max_chain[i] > VOP_STREAM_CHAIN_FIT(lim->max_frame))
			FAIL("dev_info max_chain does not fit max_frame");
	}
	{
		const uint8_t *c = p + VOP_SMSG_DEV_INFO_FIXED + 8u * out->num_queues;

		out->config_len = vop_sget16(c);
		if (vop_sget16(c + 2) != 0)
			FAIL("dev_info config reserved not zero");
		if (out->config_len > VOP_CONFIG_MAX)
			FAIL("dev_info config_len > 96");
		if (len != VOP_SMSG_DEV_INFO_FIXED + 8u * out->num_queues + 4u + out->config_len)
			FAIL("dev_info length does not match num_queues and config_len");
		memcpy(out->config, c + 4, out->config_len);
	}
	return 0;
}

uint32_t vop_sdev_info_encode(uint8_t *out, const struct vop_sdev_info *d)
{
	unsigned i;

	vop_sput32(out, d->dev_id);
	vop_sput32(out + 4, d->device_type);
	vop_sput64(out + 8, d->features);
	vop_sput16(out + 16, d->num_queues);
	vop_sput16(out + 18, 0);
	for (i = 0; i < d->num_queues; i++) {
		uint8_t *q = out + VOP_SMSG_DEV_INFO_FIXED + 8u * i;

		vop_sput16(q, d->queue_size[i]);
		vop_sput16(q + 2, 0);
		vop_sput32(q + 4, d->max_chain[i]);
	}
	{
		uint8_t *c = out + VOP_SMSG_DEV_INFO_FIXED + 8u * d->num_queues;
		uint16_t n = d->config_len <= VOP_CONFIG_MAX ? d->config_len : VOP_CONFIG_MAX;

		vop_sput16(c, n);
		vop_sput16(c + 2, 0);
		memcpy(c + 4, d->config, n);
		return VOP_SMSG_DEV_INFO_FIXED + 8u * d->num_queues + 4u + n;
	}
}

int vop_sconfig_parse(const uint8_t *p, uint32_t len, struct vop_sconfig *out, const char **why)
{
	if (len < VOP_SMSG_CONFIG_FIXED || len > VOP_SMSG_CONFIG_MAX)
		FAIL("config length out of range");
	memset(out, 0, sizeof(*out));
	out->dev_id = vop_sget32(p);
	out->generation = vop_sget32(p + 4);
	out->config_len = vop_sget16(p + 8);
	if (vop_sget16(p + 10) != 0)
		FAIL("config reserved not zero");
	if (out->dev_id == 0)
		FAIL("config dev_id 0");
	if (out->generation < 2 || (out->generation & 1u))
		FAIL("config generation not even and >= 2");
	if (out->config_len > VOP_CONFIG_MAX)
		FAIL("config config_len > 96");
	if (len != VOP_SMSG_CONFIG_FIXED + out->config_len)
		FAIL("config length does not match config_len");
	memcpy(out->config, p + VOP_SMSG_CONFIG_FIXED, out->config_len);
	return 0;
}

uint32_t vop_sconfig_encode(uint8_t *out, const struct vop_sconfig *c)
{
	uint16_t n = c->config_len <= VOP_CONFIG_MAX ? c->config_len : VOP_CONFIG_MAX;

	vop_sput32(out, c->dev_id);
	vop_sput32(out + 4, c->generation);
	vop_sput16(out + 8, n);
	vop_sput16(out + 10, 0);
	memcpy(out + VOP_SMSG_CONFIG_FIXED, c->config, n);
	return VOP_SMSG_CONFIG_FIXED + n;
}

int vop_sbatch_next_chain(struct vop_sbatch *b, const struct vop_stream_limits *lim,
			  struct vop_schain *c, const char **why)
{
	size_t left = (size_t)(b->end - b->p);
	unsigned i, n;

	if (b->walked == b->count) {
		if (left)
			FAIL("bytes after the last chain");
		return 0;
	}
	if (left < 4)
		FAIL("chain header beyond the frame");
	c->id = vop_sget16(b->p);
	c->n_out = b->p[2];
	c->n_in = b->p[3];
	n = (unsigned)c->n_out + c->n_in;
	if (n < 1 || n > lim->max_segs)
		FAIL("chain segment count outside [1, max_segs]");
	if (left - 4 < 4u * n)
		FAIL("chain segment lengths beyond the frame");
	c->out_bytes = c->in_bytes = 0;
	for (i = 0; i < n; i++) {
		c->seg[i] = vop_sget32(b->p + 4 + 4 * i);
		if (c->seg[i] == 0)
			FAIL("zero-length chain segment");
		if (i < c->n_out)
			c->out_bytes += c->seg[i];
		else
			c->in_bytes += c->seg[i];
	}
	left -= 4 + 4u * n;
	if (c->out_bytes > left)
		FAIL("chain readable bytes beyond the frame");
	c->data = b->p + 4 + 4u * n;
	b->p = c->data + c->out_bytes;
	b->walked++;
	return 1;
}

int vop_sbatch_next_used(struct vop_sbatch *b, struct vop_sused *u, const char **why)
{
	size_t left = (size_t)(b->end - b->p);

	if (b->walked == b->count) {
		if (left)
			FAIL("bytes after the last used entry");
		return 0;
	}
	if (left < 8)
		FAIL("used entry header beyond the frame");
	u->id = vop_sget16(b->p);
	if (vop_sget16(b->p + 2) != 0)
		FAIL("used entry reserved not zero");
	u->len = vop_sget32(b->p + 4);
	if (u->len > left - 8)
		FAIL("used bytes beyond the frame");
	u->data = b->p + 8;
	b->p = u->data + u->len;
	b->walked++;
	return 1;
}

int vop_sbatch_parse(uint8_t type, const uint8_t *p, uint32_t len,
		     const struct vop_stream_limits *lim, struct vop_sbatch *b, const char **why)
{
	struct vop_sbatch w;
	int rc;

	if (type != VOP_SMSG_CHAINS && type != VOP_SMSG_USED)
		FAIL("not a batch message");
	if (len < VOP_SMSG_BATCH_HDR)
		FAIL("batch shorter than its header");
	b->dev_id = vop_sget32(p);
	b->gen = vop_sget32(p + 4);
	b->queue = vop_sget16(p + 8);
	b->count = vop_sget16(p + 10);
	b->p = p + VOP_SMSG_BATCH_HDR;
	b->end = p + len;
	b->walked = 0;
	if (b->count == 0)
		FAIL("batch of zero entries");
	if (b->queue >= VOP_MAX_QUEUES)
		FAIL("batch queue index >= 8");
	w = *b;
	if (type == VOP_SMSG_CHAINS) {
		struct vop_schain c;

		while ((rc = vop_sbatch_next_chain(&w, lim, &c, why)) == 1)
			;
	} else {
		struct vop_sused u;

		while ((rc = vop_sbatch_next_used(&w, &u, why)) == 1)
			;
	}
	return rc;
}

int vop_stream_mac(const uint8_t *secret, uint32_t secret_len, uint8_t side,
		   const uint8_t nonce_side[VOP_STREAM_NONCE],
		   const uint8_t nonce_other[VOP_STREAM_NONCE], uint8_t out[VOP_STREAM_MAC])
{
	static const char label[] = "vop-stream-auth-v1";
	uint8_t msg[sizeof(label) - 1 + 1 + 2 * VOP_STREAM_NONCE];
	unsigned int outlen = 0;

	memcpy(msg, label, sizeof(label) - 1);
	msg[sizeof(label) - 1] = side;
	memcpy(msg + sizeof(label), nonce_side, VOP_STREAM_NONCE);
	memcpy(msg + sizeof(label) + VOP_STREAM_NONCE, nonce_other, VOP_STREAM_NONCE);
	if (!HMAC(EVP_sha256(), secret, (int)secret_len, msg, sizeof(msg), out, &outlen) ||
	    outlen != VOP_STREAM_MAC)
		return -EIO;
	return 0;
}
