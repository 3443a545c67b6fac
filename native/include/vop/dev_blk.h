/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-blk across a link (VIRTIO 1.2 section 5.2), both roles.
 *
 * Device role: a backend on a regular file or a block device: read, write,
 * flush, discard, write-zeroes, get-id, read-only mode, capacity from the
 * file, several requests in flight (a small I/O thread pool doing
 * preadv/pwritev straight between the file and the window), optional
 * O_DIRECT; an I/O thread completes its request into the used ring itself,
 * under the device's ring lock. With VOP_F_INFLIGHT the device journals popped heads in the
 * queue's in-flight region (layout.h) and a restarted device process
 * resumes the ring: in-flight requests are re-executed and completed
 * exactly once. A write is completed (used) only after pwritev returned
 * (the data is in the file); a flush only after fdatasync returned.
 *
 * Driver role: posts requests from other threads (the NBD server, nbd.c)
 * through a slot API: one slot = one virtio request with its buffer in the
 * queue pool.
 *
 * Hostile driver: bad headers, out-of-range sectors, lengths that are not
 * a multiple of 512, chains without room for the status byte get
 * VIRTIO_BLK_S_IOERR (or UNSUPP for unknown types) and are counted in
 * bad_requests; nothing crashes and the queue keeps working.
 */
#ifndef VOP_DEV_BLK_H
#define VOP_DEV_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "vop/dev_common.h"

/* Feature bits, request types and status (VIRTIO 1.2 5.2.3, 5.2.6). */
#define VOP_BLK_F_SIZE_MAX 1u
#define VOP_BLK_F_SEG_MAX 2u
#define VOP_BLK_F_RO 5u
#define VOP_BLK_F_BLK_SIZE 6u
#define VOP_BLK_F_FLUSH 9u
#define VOP_BLK_F_DISCARD 13u
#define VOP_BLK_F_WRITE_ZEROES 14u

#define VOP_BLK_T_IN 0u
#define VOP_BLK_T_OUT 1u
#define VOP_BLK_T_FLUSH 4u
#define VOP_BLK_T_GET_ID 8u
#define VOP_BLK_T_DISCARD 11u
#define VOP_BLK_T_WRITE_ZEROES 13u

#define VOP_BLK_S_OK 0u
#define VOP_BLK_S_IOERR 1u
#define VOP_BLK_S_UNSUPP 2u

#define VOP_BLK_ID_BYTES 20u
#define VOP_BLK_SECTOR 512u

/* Request header, device-readable (virtio_blk_outhdr). */
struct vop_blk_outhdr {
	vop_le32 type;     /* VOP_BLK_T_* */
	vop_le32 reserved; /* 0 (ioprio) */
	vop_le64 sector;   /* 512-byte units */
};

/* One discard / write-zeroes segment. */
struct vop_blk_dwz_seg {
	vop_le64 sector;
	vop_le32 num_sectors;
	vop_le32 flags; /* bit 0: unmap */
};

/* The part of struct virtio_blk_config we fill (offsets as in the spec). */
struct vop_blk_config {
	vop_le64 capacity;                 /* 0: 512-byte sectors */
	vop_le32 size_max;                 /* 8 */
	vop_le32 seg_max;                  /* 12 */
	uint8_t geometry[4];               /* 16 */
	vop_le32 blk_size;                 /* 20 */
	uint8_t topology[8];               /* 24 */
	uint8_t writeback;                 /* 32 */
	uint8_t unused0;                   /* 33 */
	vop_le16 num_queues;               /* 34 */
	vop_le32 max_discard_sectors;      /* 36 */
	vop_le32 max_discard_seg;          /* 40 */
	vop_le32 discard_sector_alignment; /* 44 */
	vop_le32 max_write_zeroes_sectors; /* 48 */
	vop_le32 max_write_zeroes_seg;     /* 52 */
	uint8_t write_zeroes_may_unmap;    /* 56 */
	uint8_t unused1[3];                /* 57 */
};
_Static_assert(offsetof(struct vop_blk_config, unused1) == 57, "virtio_blk_config prefix");

/* Counters (per device, any thread reads). */
/*
 * Request latency histogram (pop to push): bucket b < VOP_BLK_LAT_BOUNDS counts
 * requests that took <= vop_blk_lat_bounds_ns[b] and more than the bound before
 * it (not cumulative); bucket VOP_BLK_LAT_BOUNDS counts the rest (+Inf).
 */
#define VOP_BLK_LAT_BOUNDS 11
extern const uint64_t vop_blk_lat_bounds_ns[VOP_BLK_LAT_BOUNDS];

/* Request kinds of the latency histogram. Stable numbers. */
enum vop_blk_op {
	VOP_BLK_OP_READ = 0,
	VOP_BLK_OP_WRITE = 1,
	VOP_BLK_OP_FLUSH = 2,
	VOP_BLK_OP_DISCARD = 3,
	VOP_BLK_OP_WRITE_ZEROES = 4,
	VOP_BLK_OP_GET_ID = 5,
	VOP_BLK_OP_OTHER = 6,
	VOP_BLK_OPS = 7
};

/* Stable short name of an op ("read", "write_zeroes", ...). */
const char *vop_blk_op_name(unsigned op);

struct vop_blk_stats {
	uint64_t reads, writes, flushes, discards, write_zeroes, get_ids;
	uint64_t bytes_read, bytes_written;
	uint64_t ioerr;        /* requests completed with IOERR (backend or bad request) */
	uint64_t unsupp;       /* requests completed with UNSUPP */
	uint64_t bad_requests; /* malformed by the driver (subset of ioerr/unsupp) */
	uint64_t recovered;    /* in-flight heads re-executed after a restart */
	uint64_t lat_count[VOP_BLK_OPS][VOP_BLK_LAT_BOUNDS + 1]; /* latency buckets per op */
	uint64_t lat_sum_ns[VOP_BLK_OPS];                       /* latency sum per op */
};

/*
 * vop_blk_spec - device-table spec of a blk device (table owner, either
 * role): qsize request slots of seg_bytes of data each, in one queue of
 * 4 x qsize entries (a request uses up to 3 descriptors) (plus headers, alignment and the in-flight
 * region). ro offers VIRTIO_BLK_F_RO.
 */
void vop_blk_spec(struct vop_dev_spec *spec, uint32_t dev_id, uint8_t device_side, uint16_t qsize,
		  uint32_t seg_bytes, bool ro);

/* ---------------------------- device role ---------------------------- */

struct vop_blk_device_config {
	const char *path;    /* regular file or block device */
	/*
	 * Directory path must lie in (vop/path.h): opened beneath it without
	 * following a symlink out, and it must be a regular file; NULL = the
	 * file's own directory. With block_device the path is instead an
	 * operator-allowed block device opened by name, and must be one.
	 */
	const char *root;
	bool block_device;
	bool ro;             /* refuse writes (IOERR), offer VIRTIO_BLK_F_RO */
	bool direct;         /* O_DIRECT */
	unsigned io_threads; /* 1 .. 32; 0 = 4 */
	const char *serial;  /* GET_ID answer (<= 20 bytes used); NULL = "vop-<dev_id>" */
	uint32_t find_timeout_ms; /* wait for the device entry; 0 = look once */
};

struct vop_blk_device;

/*
 * vop_blk_device_create - open the backing file, find dev_id in the window
 * of ctx (type blk, our side must be the device side), write the config
 * space (capacity) and start the I/O threads. Serve it with
 * vop_link_attach_backend(l, dev_id, VOP_ROLE_DEVICE, &vop_blk_device_ops,
 * d): the queue starts when the driver sets DRIVER_OK; if the ring was in
 * use (our restart, VOP_F_INFLIGHT negotiated), it resumes from the
 * in-flight journal. On a reset, stop waits for the requests the I/O
 * threads are running. Returns 0, -errno of open,
 * -ENOENT/-ETIMEDOUT/-EPROTO/-EINVAL.
 */
int vop_blk_device_create(struct vop_devctx *ctx, uint32_t dev_id,
			  const struct vop_blk_device_config *cfg, struct vop_blk_device **out);

/* Link backend ops of the device role. */
extern const struct vop_devback_ops vop_blk_device_ops;

/* After vop_link_detach(): join I/O threads, close, free. NULL ok. */
void vop_blk_device_destroy(struct vop_blk_device *d);

void vop_blk_device_stats(struct vop_blk_device *d, struct vop_blk_stats *out);

/* ---------------------------- driver role ---------------------------- */

struct vop_blk_driver;
struct vop_blk_req;

/*
 * Called when a request completes (on the link worker, or on the
 * submitting thread when the ring cannot take it); must not block.
 */
typedef void (*vop_blk_done_fn)(void *ctx, struct vop_blk_req *r, unsigned status);

/*
 * vop_blk_driver_create - find dev_id (waiting up to timeout_ms; 0 = look
 * once) and carve the request slots from its pool geometry. Serve it with
 * vop_link_attach_backend(l, dev_id, VOP_ROLE_DRIVER, &vop_blk_driver_ops,
 * d): each start (after a device reset) zeroes the queue and the in-flight
 * journal and reads the device's config (capacity); each stop completes
 * the requests in flight with IOERR. 0 or -errno.
 */
int vop_blk_driver_create(struct vop_devctx *ctx, uint32_t dev_id, uint32_t timeout_ms,
			  struct vop_blk_driver **out);

/* Link backend ops of the driver role. */
extern const struct vop_devback_ops vop_blk_driver_ops;

/*
 * vop_blk_driver_wait_ready - any thread: wait up to timeout_ms until the
 * device runs (capacity known). 0, -ETIMEDOUT, -ESHUTDOWN.
 */
int vop_blk_driver_wait_ready(struct vop_blk_driver *d, uint32_t timeout_ms);

/* After vop_link_detach(). NULL ok. */
void vop_blk_driver_destroy(struct vop_blk_driver *d);

/* Any thread: make blocked and later vop_blk_req_get() calls return -ESHUTDOWN. */
void vop_blk_driver_shutdown(struct vop_blk_driver *d);

uint64_t vop_blk_driver_capacity(struct vop_blk_driver *d); /* bytes; 0 while not running */
bool vop_blk_driver_ro(struct vop_blk_driver *d);
uint32_t vop_blk_driver_seg(struct vop_blk_driver *d);   /* data bytes per slot */
unsigned vop_blk_driver_slots(struct vop_blk_driver *d); /* slots (= ring size / 4) */

/*
 * vop_blk_req_get - any thread: take n free slots at once (no hold and
 * wait), blocking until they are free. 0, -EINVAL (n > slots), -ESHUTDOWN.
 */
int vop_blk_req_get(struct vop_blk_driver *d, unsigned n, struct vop_blk_req **reqs);

/* Return a slot (after its completion was handled). Any thread. */
void vop_blk_req_put(struct vop_blk_driver *d, struct vop_blk_req *r);

/* Data buffer of a slot (vop_blk_driver_seg() bytes, 4 KiB aligned). */
uint8_t *vop_blk_req_buf(struct vop_blk_req *r);

/*
 * vop_blk_req_submit - any thread: post slot r as a request of type at
 * sector with len data bytes (IN: read into buf; OUT/DISCARD/WRITE_ZEROES:
 * buf holds the data / segments; FLUSH: len 0; GET_ID: len 20). done runs
 * when it completes (IOERR at once while the device is not running).
 * Returns 0 or -EINVAL (len > seg).
 */
int vop_blk_req_submit(struct vop_blk_driver *d, struct vop_blk_req *r, unsigned type,
		       uint64_t sector, uint32_t len, vop_blk_done_fn done, void *ctx);

#endif /* VOP_DEV_BLK_H */
