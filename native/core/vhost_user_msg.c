/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vhost-user message parser: one complete front-end message in, a
 * checked private copy out, or -errno naming the rule it broke. Pure (no
 * I/O, no allocation, no state), so libFuzzer drives it directly
 * (test/native/fuzz/fuzz-vhu-msg.c). Contract in vop/vhost_user.h.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "vop/vhost_user.h"

static const char *const request_names[VOP_VHU_REQUEST_MAX] = {
	[1] = "GET_FEATURES",
	[2] = "SET_FEATURES",
	[3] = "SET_OWNER",
	[4] = "RESET_OWNER",
	[5] = "SET_MEM_TABLE",
	[6] = "SET_LOG_BASE",
	[7] = "SET_LOG_FD",
	[8] = "SET_VRING_NUM",
	[9] = "SET_VRING_ADDR",
	[10] = "SET_VRING_BASE",
	[11] = "GET_VRING_BASE",
	[12] = "SET_VRING_KICK",
	[13] = "SET_VRING_CALL",
	[14] = "SET_VRING_ERR",
	[15] = "GET_PROTOCOL_FEATURES",
	[16] = "SET_PROTOCOL_FEATURES",
	[17] = "GET_QUEUE_NUM",
	[18] = "SET_VRING_ENABLE",
	[19] = "SEND_RARP",
	[20] = "NET_SET_MTU",
	[21] = "SET_BACKEND_REQ_FD",
	[22] = "IOTLB_MSG",
	[23] = "SET_VRING_ENDIAN",
	[24] = "GET_CONFIG",
	[25] = "SET_CONFIG",
	[26] = "CREATE_CRYPTO_SESSION",
	[27] = "CLOSE_CRYPTO_SESSION",
	[28] = "POSTCOPY_ADVISE",
	[29] = "POSTCOPY_LISTEN",
	[30] = "POSTCOPY_END",
	[31] = "GET_INFLIGHT_FD",
	[32] = "SET_INFLIGHT_FD",
	[33] = "GPU_SET_SOCKET",
	[34] = "RESET_DEVICE",
	[35] = "VRING_KICK",
	[36] = "GET_MAX_MEM_SLOTS",
	[37] = "ADD_MEM_REG",
	[38] = "REM_MEM_REG",
	[39] = "SET_STATUS",
	[40] = "GET_STATUS",
};

const char *vop_vhu_request_name(uint32_t request)
{
	return request < VOP_VHU_REQUEST_MAX && request_names[request] ? request_names[request] : "UNKNOWN";
}

/* Little helpers over the payload: the caller checked the size first. */
static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static uint16_t get_u16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

static int fail(const char **why, const char *msg, int err)
{
	if (why)
		*why = msg;
	return err;
}

/* [a, a + as) and [b, b + bs) intersect; sizes > 0 and neither wraps. */
static bool overlap(uint64_t a, uint64_t as, uint64_t b, uint64_t bs)
{
	return a < b ? b - a < as : a - b < bs;
}

/* A request without payload: some front-ends send a u64 0 anyway. */
static int no_payload(const struct vop_vhu_msg *m, const char **why)
{
	if (m->size != 0 && m->size != 8)
		return fail(why, "payload size (none or 8 bytes)", -EBADMSG);
	if (m->nfds != 0)
		return fail(why, "fd count (none)", -EBADMSG);
	return 0;
}

static int ring_index(uint32_t index, const struct vop_vhu_limits *lim, const char **why)
{
	return index < lim->max_queues ? 0 : fail(why, "ring index (>= the device's queues)", -EINVAL);
}

static int parse_state(struct vop_vhu_msg *m, const uint8_t *p, const struct vop_vhu_limits *lim,
		       const char **why)
{
	if (m->size != 8)
		return fail(why, "payload size (vring state: 8 bytes)", -EBADMSG);
	if (m->nfds != 0)
		return fail(why, "fd count (none)", -EBADMSG);
	m->state.index = get_u32(p);
	m->state.num = get_u32(p + 4);
	return ring_index(m->state.index, lim, why);
}

static int parse_mem(struct vop_vhu_msg *m, const uint8_t *p, const char **why)
{
	uint32_t n, i, j;

	if (m->size < 8)
		return fail(why, "payload size (memory table header)", -EBADMSG);
	n = get_u32(p);
	if (n == 0)
		return fail(why, "memory table: no region", -EINVAL);
	if (n > VOP_VHU_MAX_REGIONS)
		return fail(why, "memory table: more than 8 regions", -E2BIG);
	if (m->size != 8u + 32u * n)
		return fail(why, "payload size (8 + 32 bytes per region)", -EBADMSG);
	if (m->nfds != n)
		return fail(why, "fd count (one per region)", -EBADMSG);
	m->mem.nregions = n;
	for (i = 0; i < n; i++) {
		struct vop_vhu_region *r = &m->mem.r[i];
		const uint8_t *q = p + 8 + 32u * i;

		r->gpa = get_u64(q);
		r->size = get_u64(q + 8);
		r->uva = get_u64(q + 16);
		r->mmap_offset = get_u64(q + 24);
		if (r->size == 0)
			return fail(why, "memory region: size 0", -EINVAL);
		/* the last byte of each range must be addressable: X + size - 1 does not wrap */
		if (UINT64_MAX - r->gpa < r->size - 1)
			return fail(why, "memory region: guest address + size wraps", -EOVERFLOW);
		if (UINT64_MAX - r->uva < r->size - 1)
			return fail(why, "memory region: user address + size wraps", -EOVERFLOW);
		/* mmap offset + size must fit an off_t (the fd is mapped from 0 to there) */
		if (r->mmap_offset > (uint64_t)INT64_MAX || (uint64_t)INT64_MAX - r->mmap_offset < r->size)
			return fail(why, "memory region: mmap offset + size overflows", -EOVERFLOW);
		for (j = 0; j < i; j++) {
			const struct vop_vhu_region *o = &m->mem.r[j];

			if (overlap(r->gpa, r->size, o->gpa, o->size))
				return fail(why, "memory regions overlap (guest addresses)", -ENOTUNIQ);
			if (overlap(r->uva, r->size, o->uva, o->size))
				return fail(why, "memory regions overlap (user addresses)", -ENOTUNIQ);
		}
	}
	return 0;
}

static int parse_config(struct vop_vhu_msg *m, const uint8_t *p, const char **why)
{
	if (m->size < VOP_VHU_CONFIG_HDR)
		return fail(why, "payload size (config header)", -EBADMSG);
	if (m->nfds != 0)
		return fail(why, "fd count (none)", -EBADMSG);
	m->config.offset = get_u32(p);
	m->config.size = get_u32(p + 4);
	m->config.flags = get_u32(p + 8);
	if (m->config.size > VOP_VHU_CONFIG_MAX || m->config.size == 0)
		return fail(why, "config size (1 .. 256 bytes)", -EINVAL);
	if (m->size != VOP_VHU_CONFIG_HDR + m->config.size)
		return fail(why, "payload size (config header + config size)", -EBADMSG);
	if (m->config.offset > VOP_VHU_CONFIG_MAX - m->config.size)
		return fail(why, "config offset + size (past 256 bytes)", -EINVAL);
	if (m->config.flags > 1)
		return fail(why, "config flags (0 or 1)", -EINVAL);
	memcpy(m->config.data, p + VOP_VHU_CONFIG_HDR, m->config.size);
	return 0;
}

static int parse_inflight(struct vop_vhu_msg *m, const uint8_t *p, const struct vop_vhu_limits *lim,
			  unsigned want_fds, const char **why)
{
	uint16_t qs;

	if (m->size != 24)
		return fail(why, "payload size (inflight description: 24 bytes)", -EBADMSG);
	if (m->nfds != want_fds)
		return fail(why, want_fds ? "fd count (one)" : "fd count (none)", -EBADMSG);
	m->inflight.mmap_size = get_u64(p);
	m->inflight.mmap_offset = get_u64(p + 8);
	m->inflight.num_queues = get_u16(p + 16);
	m->inflight.queue_size = get_u16(p + 18);
	qs = m->inflight.queue_size;
	if (m->inflight.num_queues == 0 || m->inflight.num_queues > lim->max_queues)
		return fail(why, "inflight: queue count (1 .. the device's queues)", -EINVAL);
	if (qs == 0 || (qs & (qs - 1)) != 0 || qs > lim->max_queue_size)
		return fail(why, "inflight: queue size (power of two <= the queue size limit)", -EINVAL);
	if (want_fds) {
		if (m->inflight.mmap_size == 0)
			return fail(why, "inflight: mmap size 0", -EINVAL);
		if (m->inflight.mmap_offset > (uint64_t)INT64_MAX ||
		    (uint64_t)INT64_MAX - m->inflight.mmap_offset < m->inflight.mmap_size)
			return fail(why, "inflight: mmap offset + size overflows", -EOVERFLOW);
	}
	return 0;
}

int vop_vhu_msg_parse(const uint8_t *buf, size_t len, unsigned nfds, const struct vop_vhu_limits *lim,
		      struct vop_vhu_msg *out, const char **why)
{
	const uint8_t *p = buf + VOP_VHU_HDR_SIZE;
	struct vop_vhu_msg *m = out;
	int rc;

	if (why)
		*why = NULL;
	if (!buf || !lim || !out || lim->max_queues == 0 || lim->max_queues > VOP_VHU_MAX_QUEUES)
		return fail(why, "arguments", -EINVAL);
	memset(m, 0, sizeof(*m));
	if (len < VOP_VHU_HDR_SIZE)
		return fail(why, "truncated header (12 bytes)", -EBADMSG);
	m->request = get_u32(buf);
	m->flags = get_u32(buf + 4);
	m->size = get_u32(buf + 8);
	m->nfds = nfds;
	if ((m->flags & 3u) != VOP_VHU_VERSION)
		return fail(why, "version (flags bits 0-1 must be 1)", -EBADMSG);
	if (m->flags & ~(3u | VOP_VHU_FLAG_NEED_REPLY))
		return fail(why, "flags (only version and need_reply)", -EBADMSG);
	m->need_reply = (m->flags & VOP_VHU_FLAG_NEED_REPLY) != 0;
	if (m->size > VOP_VHU_MAX_PAYLOAD)
		return fail(why, "payload size (at most 268 bytes)", -EBADMSG);
	if (len - VOP_VHU_HDR_SIZE != m->size)
		return fail(why, "payload size (not what the header announced)", -EBADMSG);
	if (nfds > VOP_VHU_MAX_FDS)
		return fail(why, "fd count (at most 8)", -EBADMSG);

	switch (m->request) {
	case VOP_VHU_GET_FEATURES:
	case VOP_VHU_SET_OWNER:
	case VOP_VHU_RESET_OWNER:
	case VOP_VHU_GET_PROTOCOL_FEATURES:
	case VOP_VHU_GET_QUEUE_NUM:
	case VOP_VHU_RESET_DEVICE:
		return no_payload(m, why);
	case VOP_VHU_SET_FEATURES:
	case VOP_VHU_SET_PROTOCOL_FEATURES:
		if (m->size != 8)
			return fail(why, "payload size (u64: 8 bytes)", -EBADMSG);
		if (nfds != 0)
			return fail(why, "fd count (none)", -EBADMSG);
		m->u64 = get_u64(p);
		return 0;
	case VOP_VHU_SET_MEM_TABLE:
		return parse_mem(m, p, why);
	case VOP_VHU_SET_VRING_NUM:
		rc = parse_state(m, p, lim, why);
		if (rc)
			return rc;
		if (m->state.num == 0 || (m->state.num & (m->state.num - 1)) != 0 ||
		    m->state.num > lim->max_queue_size)
			return fail(why, "ring size (a power of two <= the queue size limit)", -EINVAL);
		return 0;
	case VOP_VHU_SET_VRING_BASE:
		rc = parse_state(m, p, lim, why);
		if (rc)
			return rc;
		if (m->state.num > 0xffffu)
			return fail(why, "ring base (16 bits: packed rings are not supported)", -EINVAL);
		return 0;
	case VOP_VHU_GET_VRING_BASE:
		return parse_state(m, p, lim, why);
	case VOP_VHU_SET_VRING_ENABLE:
		rc = parse_state(m, p, lim, why);
		if (rc)
			return rc;
		return m->state.num <= 1 ? 0 : fail(why, "ring enable (0 or 1)", -EINVAL);
	case VOP_VHU_SET_VRING_ADDR:
		if (m->size != 40)
			return fail(why, "payload size (vring address: 40 bytes)", -EBADMSG);
		if (nfds != 0)
			return fail(why, "fd count (none)", -EBADMSG);
		m->addr.index = get_u32(p);
		m->addr.flags = get_u32(p + 4);
		m->addr.desc = get_u64(p + 8);
		m->addr.used = get_u64(p + 16);
		m->addr.avail = get_u64(p + 24);
		m->addr.log = get_u64(p + 32);
		rc = ring_index(m->addr.index, lim, why);
		if (rc)
			return rc;
		if (m->addr.flags & VOP_VHU_VRING_F_LOG)
			return fail(why, "vring address flags (used-ring logging is not supported)", -EOPNOTSUPP);
		if (m->addr.flags != 0)
			return fail(why, "vring address flags (unknown bits)", -EINVAL);
		return 0;
	case VOP_VHU_SET_VRING_KICK:
	case VOP_VHU_SET_VRING_CALL:
	case VOP_VHU_SET_VRING_ERR: {
		uint64_t v;

		if (m->size != 8)
			return fail(why, "payload size (u64: 8 bytes)", -EBADMSG);
		v = get_u64(p);
		if (v & ~(uint64_t)(VOP_VHU_VRING_IDX_MASK | VOP_VHU_VRING_NOFD))
			return fail(why, "vring fd payload (only index and the no-fd bit)", -EINVAL);
		m->vfd.index = (uint32_t)(v & VOP_VHU_VRING_IDX_MASK);
		m->vfd.nofd = (v & VOP_VHU_VRING_NOFD) != 0;
		if (nfds != (m->vfd.nofd ? 0u : 1u))
			return fail(why, m->vfd.nofd ? "fd count (none with the no-fd bit)" : "fd count (one)",
				    -EBADMSG);
		return ring_index(m->vfd.index, lim, why);
	}
	case VOP_VHU_GET_CONFIG:
	case VOP_VHU_SET_CONFIG:
		return parse_config(m, p, why);
	case VOP_VHU_GET_INFLIGHT_FD:
		return parse_inflight(m, p, lim, 0, why);
	case VOP_VHU_SET_INFLIGHT_FD:
		return parse_inflight(m, p, lim, 1, why);
	default:
		if (m->request < VOP_VHU_REQUEST_MAX && request_names[m->request])
			return fail(why, "request not supported (its feature was not offered)", -EOPNOTSUPP);
		return fail(why, "unknown request", -EOPNOTSUPP);
	}
}
