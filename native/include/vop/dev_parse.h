/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pure parsers of what a peer (or a local client) sends the device
 * backends: no I/O, no locks, no global state, so each can be fuzzed on
 * its own (test/native/fuzz/). They read their input once into private
 * memory, check every size and offset against the bounds they are given
 * (overflow-safe) and return 0 or -errno.
 *
 *   vop_blk_req_parse   a virtio-blk request chain (device role)
 *   vop_net_tx_parse    the virtio-net header of a transmitted frame (device role)
 *   vop_nbd_req_parse   an NBD request header from a client of the export
 */
#ifndef VOP_DEV_PARSE_H
#define VOP_DEV_PARSE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vop/dev_blk.h"
#include "vop/dev_net.h"

/* ------------------------------------------------------------------ */
/* virtio-blk                                                           */
/* ------------------------------------------------------------------ */

/* Segments per discard / write-zeroes request (max_discard_seg, max_write_zeroes_seg). */
#define VOP_BLK_MAX_DWZ_SEG 256u

/* A request that passed vop_blk_req_parse(). */
struct vop_blk_req_info {
	uint32_t type;   /* VOP_BLK_T_IN, _OUT, _FLUSH, _GET_ID, _DISCARD, _WRITE_ZEROES */
	uint64_t sector; /* first sector (IN/OUT) */
	uint32_t data;   /* IN: bytes to read (writable bytes before the status byte);
			  * OUT: bytes to write (readable bytes after the header);
			  * DISCARD/WRITE_ZEROES: segment bytes; else 0 */
	uint32_t nseg;   /* DISCARD/WRITE_ZEROES: segments, each inside the disk */
};

/*
 * vop_blk_req_parse - validate a popped request chain c (private iov copy;
 * the bytes it points at are shared memory, read once here) for a disk of
 * cap_sectors sectors: a 16-byte header in the readable part, a status
 * byte at the end of the writable part, IN/OUT lengths a non-zero multiple
 * of 512 inside the disk, DISCARD/WRITE_ZEROES segments (1 ..
 * VOP_BLK_MAX_DWZ_SEG, flags bit 0 only) each inside the disk.
 * Returns 0 (*out filled), -EINVAL (malformed: complete with IOERR, count
 * as a bad request), -EROFS (a write to a read-only disk: IOERR, not
 * counted as bad), -EOPNOTSUPP (unknown type: UNSUPP, bad request).
 */
int vop_blk_req_parse(const struct vop_chain *c, uint64_t cap_sectors, bool ro,
		      struct vop_blk_req_info *out);

/* True if [sector, sector + nsec) lies inside a disk of cap sectors (overflow-safe). */
static inline bool vop_blk_range_ok(uint64_t cap, uint64_t sector, uint64_t nsec)
{
	return sector <= cap && nsec <= cap - sector;
}

/* ------------------------------------------------------------------ */
/* virtio-net                                                           */
/* ------------------------------------------------------------------ */

/*
 * vop_net_tx_parse - the device side's view of a transmitted chain c: copy
 * the 12-byte header out of the readable part once into *h, check it for a
 * frame of the remaining readable bytes (vop_net_hdr_check) and describe
 * the frame as at most max iovecs into the chain (iov[0..n)). Writable
 * descriptors are ignored (a transmit buffer has none). Returns the number
 * of frame iovecs (>= 1), -EPROTO (no room for the header, or a malformed
 * header: drop, count bad_headers) or -EMSGSIZE (more pieces than max:
 * drop, count tx_dropped). *flen is the frame length on success.
 */
int vop_net_tx_parse(const struct vop_chain *c, struct vop_net_hdr *h, uint32_t *flen,
		     struct iovec *iov, int max);

/* ------------------------------------------------------------------ */
/* NBD (the export of a blk driver; its client is local but untrusted)  */
/* ------------------------------------------------------------------ */

#define VOP_NBD_REQ_BYTES 28u

/* What the server decided about one request header. */
struct vop_nbd_req_info {
	uint16_t flags;    /* command flags (echo only) */
	uint16_t type;     /* NBD_CMD_* */
	uint64_t handle;   /* client's cookie, echoed as received (opaque) */
	uint64_t off;      /* byte offset */
	uint32_t len;      /* byte length */
	uint32_t error;    /* NBD error to answer at once without I/O; 0 = submit */
	uint32_t payload;  /* bytes that follow the header on the wire (WRITE): read or skip them */
	unsigned nslots;   /* request slots of seg bytes needed (error == 0) */
	bool disconnect;   /* NBD_CMD_DISC: close after what is in flight */
};

/* Limits the NBD server applies, from the device it exports. */
struct vop_nbd_limits {
	uint64_t cap;      /* export size in bytes (a multiple of 512) */
	uint32_t max_req;  /* largest READ/WRITE payload */
	uint32_t seg;      /* bytes per request slot (> 0) */
	unsigned max_slots; /* slots one command may take */
	bool ro;           /* export is read-only */
};

/*
 * vop_nbd_req_parse - decode and validate one 28-byte request header
 * (big-endian) against lim: known type, 512-byte alignment, [off, off +
 * len) inside the export (overflow-safe), READ/WRITE at most max_req bytes
 * and max_slots slots, no write to a read-only export. Returns 0 with
 * *out (out->error != 0: answer that error, after skipping out->payload
 * bytes) or -EPROTO (bad magic: the stream is out of sync, close it).
 */
int vop_nbd_req_parse(const uint8_t raw[VOP_NBD_REQ_BYTES], const struct vop_nbd_limits *lim,
		      struct vop_nbd_req_info *out);

#endif /* VOP_DEV_PARSE_H */
