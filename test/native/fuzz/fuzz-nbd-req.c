/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: the NBD request header parser (vop_nbd_req_parse) with
 * input-chosen headers and export limits. Invariants: a bad magic is
 * -EPROTO; an accepted request (error 0, slots > 0) has a known type, is
 * 512-byte aligned and inside the export, READ/WRITE fit max_req and the
 * slots cover exactly the payload within max_slots, a read-only export
 * takes only READ and FLUSH; a WRITE always reports its payload (skipped on
 * error) so the stream stays in sync.
 */
#include "fuzz-common.h"
#include "vop/dev_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_reader r = { data, size };
	struct vop_nbd_limits lim;
	struct vop_nbd_req_info info;
	uint8_t raw[VOP_NBD_REQ_BYTES];
	uint8_t mode = fz_u8(&r);
	unsigned i;
	int rc;

	for (i = 0; i < sizeof(raw); i++)
		raw[i] = fz_u8(&r);
	if (mode & 1) { /* a valid magic most of the time */
		raw[0] = 0x25;
		raw[1] = 0x60;
		raw[2] = 0x95;
		raw[3] = 0x13;
	}
	memset(&lim, 0, sizeof(lim));
	lim.cap = (mode & 2) ? fz_u64(&r) & ~511ull : ((uint64_t)fz_u16(&r) << 9);
	lim.max_req = (uint32_t)fz_u16(&r) << 9;
	lim.seg = (mode & 4) ? 4096u : (uint32_t)(fz_u16(&r) % 65536);
	lim.max_slots = fz_u8(&r) % 65;
	lim.ro = mode & 8;
	rc = vop_nbd_req_parse(raw, &lim, &info);
	if (!(raw[0] == 0x25 && raw[1] == 0x60 && raw[2] == 0x95 && raw[3] == 0x13)) {
		FZ_ASSERT(rc == -EPROTO);
		return 0;
	}
	FZ_ASSERT(rc == 0);
	FZ_ASSERT(info.payload == (info.type == 1 ? info.len : 0));
	if (info.disconnect) {
		FZ_ASSERT(info.type == 2);
		return 0;
	}
	if (info.error || info.nslots == 0)
		return 0;
	FZ_ASSERT(info.type == 0 || info.type == 1 || info.type == 3 || info.type == 4 || info.type == 6);
	if (info.type != 3) {
		FZ_ASSERT(info.off % 512 == 0 && info.len % 512 == 0 && info.len > 0);
		FZ_ASSERT(info.off <= lim.cap && info.len <= lim.cap - info.off);
	}
	if (info.type == 0 || info.type == 1) {
		FZ_ASSERT(info.len <= lim.max_req);
		FZ_ASSERT(lim.seg > 0 && info.nslots <= lim.max_slots);
		FZ_ASSERT((uint64_t)info.nslots * lim.seg >= info.len);
		FZ_ASSERT((uint64_t)(info.nslots - 1) * lim.seg < info.len);
	} else {
		FZ_ASSERT(info.nslots == 1);
	}
	if (lim.ro)
		FZ_ASSERT(info.type == 0 || info.type == 3);
	return 0;
}
