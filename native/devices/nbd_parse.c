/* SPDX-License-Identifier: Apache-2.0 */
/* NBD request header validation (pure). Contract in vop/dev_parse.h. */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "vop/dev_parse.h"

/* Wire constants (the NBD protocol document); nbd.c speaks the rest of the protocol. */
#define REQ_MAGIC 0x25609513u
#define CMD_READ 0u
#define CMD_WRITE 1u
#define CMD_DISC 2u
#define CMD_FLUSH 3u
#define CMD_TRIM 4u
#define CMD_WRITE_ZEROES 6u
#define E_PERM 1u
#define E_INVAL 22u
#define E_NOSPC 28u

int vop_nbd_req_parse(const uint8_t raw[VOP_NBD_REQ_BYTES], const struct vop_nbd_limits *lim,
		      struct vop_nbd_req_info *out)
{
	uint32_t magic, len;
	uint16_t flags, type;
	uint64_t handle, off;
	bool rw, inside;

	memset(out, 0, sizeof(*out));
	memcpy(&magic, raw, 4);
	memcpy(&flags, raw + 4, 2);
	memcpy(&type, raw + 6, 2);
	memcpy(&handle, raw + 8, 8);
	memcpy(&off, raw + 16, 8);
	memcpy(&len, raw + 24, 4);
	if (be32toh(magic) != REQ_MAGIC)
		return -EPROTO;
	out->flags = be16toh(flags);
	out->type = type = be16toh(type);
	out->handle = handle; /* opaque: echoed exactly as received */
	out->off = off = be64toh(off);
	out->len = len = be32toh(len);
	out->payload = type == CMD_WRITE ? len : 0;
	if (type == CMD_DISC) {
		out->disconnect = true;
		return 0;
	}
	rw = type == CMD_READ || type == CMD_WRITE;
	if (!rw && type != CMD_FLUSH && type != CMD_TRIM && type != CMD_WRITE_ZEROES) {
		out->error = E_INVAL;
		return 0;
	}
	if (type != CMD_FLUSH) {
		/* [off, off + len) inside the export, written without off + len. */
		inside = off <= lim->cap && len <= lim->cap - off;
		if (off % VOP_BLK_SECTOR || len % VOP_BLK_SECTOR) {
			out->error = E_INVAL;
			return 0;
		}
		if (!inside) {
			out->error = type == CMD_WRITE ? E_NOSPC : E_INVAL;
			return 0;
		}
	}
	if (rw && len > lim->max_req) {
		out->error = E_INVAL;
		return 0;
	}
	if (lim->ro && type != CMD_READ && type != CMD_FLUSH) {
		out->error = E_PERM;
		return 0;
	}
	if (type != CMD_FLUSH && len == 0)
		return 0; /* nothing to do: nslots 0, answer success at once */
	if (!rw) {
		out->nslots = 1; /* FLUSH, TRIM, WRITE_ZEROES: one request, no data slots */
		return 0;
	}
	if (lim->seg == 0 || (len + (uint64_t)lim->seg - 1) / lim->seg > lim->max_slots) {
		out->error = E_INVAL;
		return 0;
	}
	out->nslots = (unsigned)((len + (uint64_t)lim->seg - 1) / lim->seg);
	return 0;
}
