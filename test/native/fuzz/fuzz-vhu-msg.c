/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the vhost-user message parser (vop_vhu_msg_parse) on
 * any bytes, any fd count and any device limits. Input: fd count, queue
 * limit, queue-size limit, then the message as the socket delivered it.
 * Invariants for an accepted message: the framing matched (version 1, no
 * reply flag, size == bytes after the header, within the payload limit,
 * the request's fd count), every ring index is below the device's queues,
 * ring sizes are powers of two within the limit, bases fit 16 bits, and a
 * memory table holds 1..8 regions, none empty, none wrapping, none
 * overlapping another in guest or user addresses: a region table built
 * from them accepts every one and translates each region's last byte.
 * A refused message always names its rule.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vop/region.h"
#include "vop/vhost_user.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_ASSERT(c)                                                                            \
	do {                                                                                    \
		if (!(c)) {                                                                     \
			fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); \
			abort();                                                                \
		}                                                                               \
	} while (0)

static bool pow2(uint32_t x)
{
	return x && (x & (x - 1)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t backing[1]; /* region tables need a local address; never dereferenced past it */
	struct vop_vhu_limits lim;
	struct vop_vhu_msg m;
	const char *why = (const char *)1;
	unsigned nfds, i;
	uint32_t announced;
	int rc;

	if (size < 4)
		return 0;
	nfds = data[0] % 12u; /* also more than a message may carry */
	lim.max_queues = (uint16_t)(data[1] % VOP_VHU_MAX_QUEUES + 1);
	lim.max_queue_size = (uint16_t)(1u << (data[2] % 16u)); /* 1 .. 32768 */
	data += 3;
	size -= 3;
	rc = vop_vhu_msg_parse(data, size, nfds, &lim, &m, &why);
	if (rc) {
		FZ_ASSERT(rc == -EBADMSG || rc == -EOPNOTSUPP || rc == -EINVAL || rc == -E2BIG ||
			  rc == -EOVERFLOW || rc == -ENOTUNIQ);
		FZ_ASSERT(why != NULL && why != (const char *)1 && why[0] != '\0');
		return 0;
	}
	FZ_ASSERT(why == NULL);
	FZ_ASSERT(size >= VOP_VHU_HDR_SIZE);
	memcpy(&announced, data + 8, 4);
	FZ_ASSERT(announced == size - VOP_VHU_HDR_SIZE && announced <= VOP_VHU_MAX_PAYLOAD);
	FZ_ASSERT(m.size == announced && (m.flags & 3u) == VOP_VHU_VERSION && !(m.flags & VOP_VHU_FLAG_REPLY));
	FZ_ASSERT(nfds <= VOP_VHU_MAX_FDS && m.nfds == nfds);
	FZ_ASSERT(strcmp(vop_vhu_request_name(m.request), "UNKNOWN") != 0);
	switch (m.request) {
	case VOP_VHU_SET_VRING_NUM:
		FZ_ASSERT(m.state.index < lim.max_queues);
		FZ_ASSERT(pow2(m.state.num) && m.state.num <= lim.max_queue_size);
		FZ_ASSERT(nfds == 0);
		break;
	case VOP_VHU_SET_VRING_BASE:
		FZ_ASSERT(m.state.index < lim.max_queues && m.state.num <= 0xffff && nfds == 0);
		break;
	case VOP_VHU_GET_VRING_BASE:
	case VOP_VHU_SET_VRING_ENABLE:
		FZ_ASSERT(m.state.index < lim.max_queues && nfds == 0);
		break;
	case VOP_VHU_SET_VRING_ADDR:
		FZ_ASSERT(m.addr.index < lim.max_queues && m.addr.flags == 0 && nfds == 0);
		break;
	case VOP_VHU_SET_VRING_KICK:
	case VOP_VHU_SET_VRING_CALL:
	case VOP_VHU_SET_VRING_ERR:
		FZ_ASSERT(m.vfd.index < lim.max_queues);
		FZ_ASSERT(nfds == (m.vfd.nofd ? 0u : 1u));
		break;
	case VOP_VHU_SET_MEM_TABLE: {
		struct vop_region_table gpa, uva;

		FZ_ASSERT(m.mem.nregions >= 1 && m.mem.nregions <= VOP_VHU_MAX_REGIONS);
		FZ_ASSERT(nfds == m.mem.nregions);
		vop_region_table_init(&gpa);
		vop_region_table_init(&uva);
		for (i = 0; i < m.mem.nregions; i++) {
			const struct vop_vhu_region *r = &m.mem.r[i];

			FZ_ASSERT(r->size > 0);
			FZ_ASSERT(r->gpa + (r->size - 1) >= r->gpa && r->uva + (r->size - 1) >= r->uva);
			FZ_ASSERT(r->mmap_offset <= (uint64_t)INT64_MAX - r->size);
			FZ_ASSERT(vop_region_add(&gpa, r->gpa, r->size, backing, VOP_PROT_READ) == 0);
			FZ_ASSERT(vop_region_add(&uva, r->uva, r->size, backing, VOP_PROT_READ) == 0);
		}
		for (i = 0; i < m.mem.nregions; i++) {
			const struct vop_vhu_region *r = &m.mem.r[i];

			/* each region translates as a whole, from its own entry */
			FZ_ASSERT(vop_region_xlate(&gpa, r->gpa, r->size, VOP_PROT_READ) == backing);
			FZ_ASSERT(vop_region_xlate(&uva, r->uva, r->size, VOP_PROT_READ) == backing);
		}
		break;
	}
	case VOP_VHU_GET_CONFIG:
	case VOP_VHU_SET_CONFIG:
		FZ_ASSERT(m.config.size >= 1 && m.config.size <= VOP_VHU_CONFIG_MAX);
		FZ_ASSERT(m.config.offset + m.config.size <= VOP_VHU_CONFIG_MAX && nfds == 0);
		break;
	case VOP_VHU_GET_INFLIGHT_FD:
	case VOP_VHU_SET_INFLIGHT_FD:
		FZ_ASSERT(m.inflight.num_queues >= 1 && m.inflight.num_queues <= lim.max_queues);
		FZ_ASSERT(pow2(m.inflight.queue_size) && m.inflight.queue_size <= lim.max_queue_size);
		FZ_ASSERT(nfds == (m.request == VOP_VHU_SET_INFLIGHT_FD ? 1u : 0u));
		break;
	default:
		FZ_ASSERT(nfds == 0);
		break;
	}
	return 0;
}
