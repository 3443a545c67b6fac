/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop shared-window ABI. THIS HEADER IS FROZEN: both peers (possibly built
 * from different releases, possibly different OSes) compile against it.
 * Changing any offset or meaning requires a new VOP_LAYOUT_VERSION_MAJOR.
 * New fields go into reserved space and bump VOP_LAYOUT_VERSION_MINOR.
 *
 * Rules:
 *  - every field is fixed width and little-endian (VIRTIO_F_VERSION_1);
 *  - no pointers: every location is a byte offset from the window base
 *    (the "peer address" space of a shm window is [0, window_size));
 *  - every field has exactly ONE writer side, named in its comment (major
 *    2): the other side only reads it, treats it as hostile input and
 *    validates it after reading it once. Nothing needs an atomic
 *    read-modify-write, which a PCI BAR does not give (architecture rule 9;
 *    the table, field by field, is docs/native-layout.md);
 *  - a record becomes visible through ONE publishing word written last
 *    with release order (see docs/memory-ordering.md).
 *
 * Window map (offsets in bytes, see docs/native-layout.md):
 *
 *   0x0000 +-------------------------------------------+
 *          | struct vop_win_hdr            (128 B)     |  creator writes once;
 *          |   magic written last (release)            |  magic publishes it
 *   0x0080 +-------------------------------------------+
 *          | struct vop_win_side side[0]   (128 B)     |  side 0 = creator
 *   0x0100 | struct vop_win_side side[1]   (128 B)     |  side 1 = attacher
 *          |   line 0: heartbeat/epoch/state (owner)   |  each written only
 *          |   line 1: kick/waiting doorbell (owner)   |  by its own side
 *   0x0180 +-------------------------------------------+
 *          | reserved (zero)                           |
 *   0x1000 +-------------------------------------------+  devtab_off
 *          | struct vop_devtab_hdr          (64 B)     |
 *          | struct vop_dev_entry [max_entries] (768 B)|  state word publishes;
 *          |   owner part | sides[0] | sides[1] | queues|  sides[k]: side k only
 *          +-------------------------------------------+  ring_off
 *          | per queue: desc table | avail | used      |  64 B aligned each
 *          +-------------------------------------------+  data_off
 *          | data area: buffer pools + indirect tables |  the ONLY memory a
 *          |   (one pool per queue, named in the entry)|  descriptor may name
 *          +-------------------------------------------+  window_size
 *
 * Virtqueue rings are VIRTIO 1.2 split rings (section 2.7), with
 * VIRTIO_F_EVENT_IDX trailers (used_event after avail->ring[num],
 * avail_event after used->ring[num]).
 */
#ifndef VOP_LAYOUT_H
#define VOP_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
/* FIXME: add le*_to_cpu swaps in win_access.h accessors before enabling. */
#error "vop core currently supports little-endian hosts only"
#endif

/* Little-endian wire types (documentation aliases; hosts are LE, see above). */
typedef uint16_t vop_le16;
typedef uint32_t vop_le32;
typedef uint64_t vop_le64;

/* ------------------------------------------------------------------ */
/* Constants                                                           */
/* ------------------------------------------------------------------ */

#define VOP_WIN_MAGIC 0x4e57504fu /* "OPWN" read as LE bytes 'O','P','W','N' */
#define VOP_DEVTAB_MAGIC 0x5444504fu /* "OPDT" */
/*
 * 2.0: every field has one writer side (the device status, reset handshake
 * and config moved into per-side blocks of each entry; the side block's
 * doorbell line is written by its owner only). 1.x (1.1: VOP_F_INFLIGHT
 * region, kept in 2.0) had fields both sides wrote.
 */
#define VOP_LAYOUT_VERSION_MAJOR 2u
#define VOP_LAYOUT_VERSION_MINOR 0u

#define VOP_CACHELINE 64u
#define VOP_WIN_PAGE 4096u
#define VOP_WIN_MIN_SIZE (64u * 1024u)
#define VOP_DEVTAB_OFF 0x1000u
#define VOP_RING_ALIGN 64u /* each desc/avail/used part starts on a line */
#define VOP_MAX_DEVICES 32u
#define VOP_MAX_QUEUES 8u
#define VOP_CONFIG_MAX 96u /* config space bytes per device (virtio-blk 60, -net 12..40, -console 12) */
#define VOP_QUEUE_MAX_SIZE 32768u /* VIRTIO 1.2 split ring maximum */

/* vop_win_side.state, written by the owning side. */
enum vop_side_state {
	VOP_SIDE_ABSENT = 0, /* never attached */
	VOP_SIDE_UP = 1,     /* attached, heartbeat running */
	VOP_SIDE_GONE = 2,   /* detached cleanly */
};

/* vop_dev_entry.state: the publishing word of an entry. */
enum vop_dev_state {
	VOP_DEV_FREE = 0,      /* slot never used */
	VOP_DEV_LIVE = 1,      /* entry fully written, may be attached */
	VOP_DEV_TOMBSTONE = 2, /* hot-unplugged; slot may be reused later */
};

/* virtio device status bits (VIRTIO 1.2 section 2.1). */
#define VOP_STATUS_ACKNOWLEDGE 0x01u
#define VOP_STATUS_DRIVER 0x02u
#define VOP_STATUS_DRIVER_OK 0x04u
#define VOP_STATUS_FEATURES_OK 0x08u
#define VOP_STATUS_DEVICE_NEEDS_RESET 0x40u
#define VOP_STATUS_FAILED 0x80u

/* virtio feature bits used by the ring code. */
#define VOP_F_INDIRECT_DESC 28u
#define VOP_F_EVENT_IDX 29u
#define VOP_F_VERSION_1 32u
#define VOP_F_IN_ORDER 35u /* the device uses buffers in the order they were made available */

/* Device type of the raw byte pipe test device (outside the virtio id space). */
#define VOP_DEVTYPE_BYTE_PIPE 0xfff0u

/* ------------------------------------------------------------------ */
/* Window header and per-side blocks                                    */
/* ------------------------------------------------------------------ */

/* Offset 0. Written once by the creator (side 0); magic last, with release. */
struct vop_win_hdr {
	vop_le32 magic;           /* VOP_WIN_MAGIC; publishes the header */
	vop_le16 version_major;   /* VOP_LAYOUT_VERSION_MAJOR; reader rejects others */
	vop_le16 version_minor;   /* VOP_LAYOUT_VERSION_MINOR; newer minors are accepted */
	vop_le64 window_size;     /* total bytes of the window */
	vop_le32 side_off;        /* offset of side[0] (0x80) */
	vop_le32 side_size;       /* sizeof(struct vop_win_side) (128) */
	vop_le32 devtab_off;      /* offset of struct vop_devtab_hdr (0x1000) */
	vop_le32 devtab_size;     /* bytes reserved for the device table */
	vop_le64 ring_off;        /* start of the ring area */
	vop_le64 ring_size;       /* bytes of the ring area */
	vop_le64 data_off;        /* start of the data area */
	vop_le64 data_size;       /* bytes of the data area */
	vop_le64 create_nonce;    /* random per creation; attacher records it */
	vop_le32 flags;           /* reserved, 0 */
	vop_le32 reserved0;       /* 0 */
	uint8_t reserved[48];     /* 0; future minor versions */
};

/*
 * One per side, written ONLY by its owner (the side it describes); the peer
 * reads it. Line 0 is liveness; line 1 the doorbell line, kept on its own
 * cache line so that heartbeats do not bounce it.
 *
 * Doorbell protocol (every transport; docs/memory-ordering.md D1/D2):
 *   ringer (side A): kick = a fresh value (release store, never an RMW:
 *            a private per-process counter supplies the value); full fence;
 *            if peer.waiting: signal it through the transport (futex wake
 *            for shm, an eventfd write or a doorbell register write for
 *            pci-bar). A polling peer costs the ringer nothing.
 *   waiter (side B): snap = peer.kick; ...arm the rings, re-check them...;
 *            waiting = 1; full fence; if peer.kick == snap: sleep on the
 *            transport's doorbell (or poll peer.kick); waiting = 0.
 * A side that only polls never sets waiting.
 */
struct vop_win_side {
	/* line 0: liveness */
	vop_le64 heartbeat;  /* owner increments at least every heartbeat period */
	vop_le32 epoch;      /* owner increments on every attach; 0 = never */
	vop_le32 state;      /* enum vop_side_state */
	vop_le32 pid;        /* informational only, never trusted */
	vop_le32 hb_period_ms; /* owner's heartbeat period; peer derives its timeout */
	uint8_t reserved0[40]; /* 0 */
	/* line 1: doorbell */
	vop_le32 kick;       /* owner stores a new value each time it rings the peer */
	vop_le32 waiting;    /* owner: 1 while it (is about to) sleep waiting for the peer's kick */
	uint8_t reserved1[56]; /* 0 */
};

/* ------------------------------------------------------------------ */
/* Device table                                                         */
/* ------------------------------------------------------------------ */

/* At devtab_off. Written by the table owner (side 0). */
struct vop_devtab_hdr {
	vop_le32 magic;       /* VOP_DEVTAB_MAGIC */
	vop_le32 entry_size;  /* sizeof(struct vop_dev_entry); readers use it as stride */
	vop_le32 max_entries; /* number of entry slots after this header */
	vop_le32 generation;  /* owner bumps (release) after each publish/tombstone */
	uint8_t reserved[48]; /* 0 */
};

/* Per queue, inside an entry. Written by the table owner before publish. */
struct vop_queue_desc {
	vop_le16 size;       /* ring size, power of two, 0 = queue absent */
	vop_le16 flags;      /* reserved, 0 */
	vop_le32 reserved;   /* 0 */
	vop_le64 desc_off;   /* descriptor table (16 * size bytes), 16 B aligned */
	vop_le64 avail_off;  /* driver area (6 + 2 * size bytes), 2 B aligned */
	vop_le64 used_off;   /* device area (6 + 8 * size bytes), 4 B aligned */
	vop_le64 pool_off;   /* driver's buffer pool for this queue, in data area */
	vop_le64 pool_size;  /* bytes of that pool */
};

/*
 * Inside an entry, one block per window side: sides[k] is written ONLY by
 * side k, whatever its role for this device (the role decides which fields
 * it uses). A block speaks for the entry's current occupant only while its
 * seq equals the entry's seq: a side writes its block's fields, then stores
 * seq (release), before it relies on them ("claims" the block); a reader
 * treats a block whose seq differs from the entry's as all zeros. So the
 * table owner never writes the other side's block, not even when it
 * republishes a slot.
 */
struct vop_dev_side {
	vop_le32 seq;               /* entry seq this block answers for; other values: stale */
	vop_le32 status;            /* driver role: virtio status (ACKNOWLEDGE|DRIVER|FEATURES_OK|
	                               DRIVER_OK, 0 = reset); device role: DEVICE_NEEDS_RESET or 0 */
	vop_le32 reset;             /* driver role: reset request generation (a new value asks for a
	                               reset); device role: the generation it last completed */
	vop_le32 config_generation; /* device role: config seqlock, odd while config[] is written;
	                               0 = not written yet (readers use the entry's config_init) */
	vop_le64 features;          /* driver role: features accepted; device role: 0 */
	vop_le64 reserved0;         /* 0 */
	uint8_t config[VOP_CONFIG_MAX]; /* device role: the live virtio config space, under
	                                   config_generation (>= 2 once written) */
};

/*
 * One device. The table owner (side 0) writes the owner part (with the
 * config space as published, config_init) and the queues, then sets state
 * = LIVE with release; sides[k] belongs to side k. The device side starts
 * from config_init and keeps its live config space in its own block; a
 * reader takes the device side's block once its config_generation is >= 2
 * and config_init before. A reader loads state with acquire and then
 * copies the entry privately.
 */
struct vop_dev_entry {
	vop_le32 state;             /* owner: enum vop_dev_state; publishing word, written last */
	vop_le32 seq;               /* owner: bumped on every (re)publish of the slot */
	vop_le32 dev_id;            /* owner: link-unique id, nonzero */
	vop_le32 device_type;       /* owner: virtio device id (or VOP_DEVTYPE_BYTE_PIPE) */
	vop_le64 features_offered;  /* owner, on behalf of the device side */
	vop_le32 config_len;        /* owner: <= VOP_CONFIG_MAX */
	vop_le16 num_queues;        /* owner: <= VOP_MAX_QUEUES */
	uint8_t device_side;        /* owner: which side (0/1) is the device */
	uint8_t reserved0;          /* 0 */
	uint8_t config_init[VOP_CONFIG_MAX];          /* owner: config space as published */
	struct vop_dev_side sides[2];                 /* sides[k]: written by side k only */
	struct vop_queue_desc queues[VOP_MAX_QUEUES]; /* owner */
};

/* ------------------------------------------------------------------ */
/* VIRTIO 1.2 split virtqueue (section 2.7)                             */
/* ------------------------------------------------------------------ */

#define VOP_VRING_DESC_F_NEXT 1u     /* chain continues via next */
#define VOP_VRING_DESC_F_WRITE 2u    /* buffer is device-writable */
#define VOP_VRING_DESC_F_INDIRECT 4u /* buffer holds a table of descriptors */
#define VOP_VRING_AVAIL_F_NO_INTERRUPT 1u /* driver: don't notify me (no EVENT_IDX) */
#define VOP_VRING_USED_F_NO_NOTIFY 1u     /* device: don't notify me (no EVENT_IDX) */
#define VOP_VRING_DESC_ALIGN 16u
#define VOP_VRING_AVAIL_ALIGN 2u
#define VOP_VRING_USED_ALIGN 4u

/* Descriptor: 16 bytes. Written by the driver, read (once) by the device. */
struct vop_vring_desc {
	vop_le64 addr;  /* peer address (window offset) of the buffer */
	vop_le32 len;   /* buffer length in bytes */
	vop_le16 flags; /* VOP_VRING_DESC_F_* */
	vop_le16 next;  /* next descriptor index if F_NEXT */
};

/* Driver area. Written by the driver. used_event follows ring[num]. */
struct vop_vring_avail {
	vop_le16 flags;  /* VOP_VRING_AVAIL_F_* */
	vop_le16 idx;    /* free-running; publishes ring[] entries (release) */
	vop_le16 ring[]; /* heads; then vop_le16 used_event */
};

/* One used element. Written by the device. */
struct vop_vring_used_elem {
	vop_le32 id;  /* head index of the completed chain */
	vop_le32 len; /* bytes written into the chain's writable part */
};

/* Device area. Written by the device. avail_event follows ring[num]. */
struct vop_vring_used {
	vop_le16 flags; /* VOP_VRING_USED_F_* */
	vop_le16 idx;   /* free-running; publishes ring[] entries (release) */
	struct vop_vring_used_elem ring[]; /* then vop_le16 avail_event */
};

/* Byte sizes of the three parts for a ring of num entries (with trailers). */
static inline uint64_t vop_vring_desc_bytes(uint32_t num) { return 16ull * num; }
static inline uint64_t vop_vring_avail_bytes(uint32_t num) { return 6ull + 2ull * num; }
static inline uint64_t vop_vring_used_bytes(uint32_t num) { return 6ull + 8ull * num; }

/* ------------------------------------------------------------------ */
/* Frozen offsets                                                       */
/* ------------------------------------------------------------------ */

#define VOP_ABI_ASSERT(type, field, off) \
	_Static_assert(offsetof(struct type, field) == (off), #type "." #field " moved")

VOP_ABI_ASSERT(vop_win_hdr, magic, 0);
VOP_ABI_ASSERT(vop_win_hdr, version_major, 4);
VOP_ABI_ASSERT(vop_win_hdr, version_minor, 6);
VOP_ABI_ASSERT(vop_win_hdr, window_size, 8);
VOP_ABI_ASSERT(vop_win_hdr, side_off, 16);
VOP_ABI_ASSERT(vop_win_hdr, side_size, 20);
VOP_ABI_ASSERT(vop_win_hdr, devtab_off, 24);
VOP_ABI_ASSERT(vop_win_hdr, devtab_size, 28);
VOP_ABI_ASSERT(vop_win_hdr, ring_off, 32);
VOP_ABI_ASSERT(vop_win_hdr, ring_size, 40);
VOP_ABI_ASSERT(vop_win_hdr, data_off, 48);
VOP_ABI_ASSERT(vop_win_hdr, data_size, 56);
VOP_ABI_ASSERT(vop_win_hdr, create_nonce, 64);
VOP_ABI_ASSERT(vop_win_hdr, flags, 72);
VOP_ABI_ASSERT(vop_win_hdr, reserved0, 76);
VOP_ABI_ASSERT(vop_win_hdr, reserved, 80);
_Static_assert(sizeof(struct vop_win_hdr) == 128, "vop_win_hdr size");

VOP_ABI_ASSERT(vop_win_side, heartbeat, 0);
VOP_ABI_ASSERT(vop_win_side, epoch, 8);
VOP_ABI_ASSERT(vop_win_side, state, 12);
VOP_ABI_ASSERT(vop_win_side, pid, 16);
VOP_ABI_ASSERT(vop_win_side, hb_period_ms, 20);
VOP_ABI_ASSERT(vop_win_side, reserved0, 24);
VOP_ABI_ASSERT(vop_win_side, kick, 64);
VOP_ABI_ASSERT(vop_win_side, waiting, 68);
VOP_ABI_ASSERT(vop_win_side, reserved1, 72);
_Static_assert(sizeof(struct vop_win_side) == 128, "vop_win_side size");
#define VOP_WIN_SIDE_OFF 0x80u
_Static_assert(VOP_WIN_SIDE_OFF + 2 * sizeof(struct vop_win_side) <= VOP_DEVTAB_OFF, "sides fit");

VOP_ABI_ASSERT(vop_devtab_hdr, magic, 0);
VOP_ABI_ASSERT(vop_devtab_hdr, entry_size, 4);
VOP_ABI_ASSERT(vop_devtab_hdr, max_entries, 8);
VOP_ABI_ASSERT(vop_devtab_hdr, generation, 12);
VOP_ABI_ASSERT(vop_devtab_hdr, reserved, 16);
_Static_assert(sizeof(struct vop_devtab_hdr) == 64, "vop_devtab_hdr size");

VOP_ABI_ASSERT(vop_queue_desc, size, 0);
VOP_ABI_ASSERT(vop_queue_desc, flags, 2);
VOP_ABI_ASSERT(vop_queue_desc, reserved, 4);
VOP_ABI_ASSERT(vop_queue_desc, desc_off, 8);
VOP_ABI_ASSERT(vop_queue_desc, avail_off, 16);
VOP_ABI_ASSERT(vop_queue_desc, used_off, 24);
VOP_ABI_ASSERT(vop_queue_desc, pool_off, 32);
VOP_ABI_ASSERT(vop_queue_desc, pool_size, 40);
_Static_assert(sizeof(struct vop_queue_desc) == 48, "vop_queue_desc size");

VOP_ABI_ASSERT(vop_dev_side, seq, 0);
VOP_ABI_ASSERT(vop_dev_side, status, 4);
VOP_ABI_ASSERT(vop_dev_side, reset, 8);
VOP_ABI_ASSERT(vop_dev_side, config_generation, 12);
VOP_ABI_ASSERT(vop_dev_side, features, 16);
VOP_ABI_ASSERT(vop_dev_side, reserved0, 24);
VOP_ABI_ASSERT(vop_dev_side, config, 32);
_Static_assert(sizeof(struct vop_dev_side) == 128, "vop_dev_side size");

VOP_ABI_ASSERT(vop_dev_entry, state, 0);
VOP_ABI_ASSERT(vop_dev_entry, seq, 4);
VOP_ABI_ASSERT(vop_dev_entry, dev_id, 8);
VOP_ABI_ASSERT(vop_dev_entry, device_type, 12);
VOP_ABI_ASSERT(vop_dev_entry, features_offered, 16);
VOP_ABI_ASSERT(vop_dev_entry, config_len, 24);
VOP_ABI_ASSERT(vop_dev_entry, num_queues, 28);
VOP_ABI_ASSERT(vop_dev_entry, device_side, 30);
VOP_ABI_ASSERT(vop_dev_entry, reserved0, 31);
VOP_ABI_ASSERT(vop_dev_entry, config_init, 32);
VOP_ABI_ASSERT(vop_dev_entry, sides, 128);
VOP_ABI_ASSERT(vop_dev_entry, queues, 384);
_Static_assert(sizeof(struct vop_dev_entry) == 768, "vop_dev_entry size");

VOP_ABI_ASSERT(vop_vring_desc, addr, 0);
VOP_ABI_ASSERT(vop_vring_desc, len, 8);
VOP_ABI_ASSERT(vop_vring_desc, flags, 12);
VOP_ABI_ASSERT(vop_vring_desc, next, 14);
_Static_assert(sizeof(struct vop_vring_desc) == 16, "vop_vring_desc size");
VOP_ABI_ASSERT(vop_vring_avail, flags, 0);
VOP_ABI_ASSERT(vop_vring_avail, idx, 2);
VOP_ABI_ASSERT(vop_vring_avail, ring, 4);
VOP_ABI_ASSERT(vop_vring_used_elem, id, 0);
VOP_ABI_ASSERT(vop_vring_used_elem, len, 4);
_Static_assert(sizeof(struct vop_vring_used_elem) == 8, "vop_vring_used_elem size");
VOP_ABI_ASSERT(vop_vring_used, flags, 0);
VOP_ABI_ASSERT(vop_vring_used, idx, 2);
VOP_ABI_ASSERT(vop_vring_used, ring, 4);

/* ------------------------------------------------------------------ */
/* In-flight region (since 1.1, feature VOP_F_INFLIGHT)                  */
/* ------------------------------------------------------------------ */

/*
 * VOP_F_INFLIGHT: a vop transport feature bit (virtio reserves bits 42-49
 * for future extensions; vop takes 47 and never gives it to a virtio
 * driver it does not control). Offered by the device side of a device
 * that keeps requests across its own restarts (virtio-blk). When the
 * driver accepts it, the LAST vop_inflight_bytes(size) bytes of each
 * queue's pool [pool_off, pool_off + pool_size) are the queue's in-flight
 * region, in the spirit of vhost-user's VHOST_USER_GET_INFLIGHT_FD:
 *  - the driver never places buffers there, never writes it and never
 *    reads it: ONLY the device side writes it (2.0; in 1.x the driver
 *    zeroed it), zeroing it itself whenever it starts the queue afresh
 *    (not when it resumes);
 *  - it records which heads the device popped and has not yet published
 *    as used, so that a device-side process that dies and restarts (new
 *    epoch) resumes the ring instead of resetting it: heads marked in
 *    flight are re-executed and completed exactly once, the avail ring is
 *    consumed from last_avail, and used->idx continues from its value in
 *    shared memory.
 * The device treats the region as its own crash journal, not as peer
 * input: still, every value it reads back is range-checked (a hostile
 * driver could have scribbled on it), and a bad journal fails the queue.
 */
#define VOP_F_INFLIGHT 47u
#define VOP_INFLIGHT_MAGIC 0x4c464e49u /* "INFL" */

/* Head of a queue's in-flight region. Device side writes (and zeroes on a fresh start). */
struct vop_inflight_hdr {
	vop_le32 magic;        /* VOP_INFLIGHT_MAGIC once the device used it; 0 = fresh */
	vop_le16 num;          /* queue size the region was laid out for */
	vop_le16 last_avail;   /* device: next avail index to consume */
	vop_le16 used_pending; /* device: used->idx about to be published (J2) */
	vop_le16 used_done;    /* device: used->idx whose heads are all cleared (J4) */
	vop_le32 reserved0;    /* 0 */
	vop_le64 counter;      /* device: pop counter (orders re-execution) */
	uint8_t reserved[40];  /* 0 */
};

/* One per descriptor head, after the header. Device side writes. */
struct vop_inflight_desc {
	uint8_t inflight;    /* 1 while the head is popped and not yet published */
	uint8_t reserved0;   /* 0 */
	vop_le16 avail_pos;  /* avail index the head was popped from */
	vop_le32 reserved1;  /* 0 */
	vop_le64 counter;    /* hdr.counter at pop time */
};

/* Bytes of the in-flight region of a queue of num entries (64 B multiple). */
static inline uint64_t vop_inflight_bytes(uint32_t num)
{
	return (64ull + 16ull * num + 63ull) & ~63ull;
}

VOP_ABI_ASSERT(vop_inflight_hdr, magic, 0);
VOP_ABI_ASSERT(vop_inflight_hdr, num, 4);
VOP_ABI_ASSERT(vop_inflight_hdr, last_avail, 6);
VOP_ABI_ASSERT(vop_inflight_hdr, used_pending, 8);
VOP_ABI_ASSERT(vop_inflight_hdr, used_done, 10);
VOP_ABI_ASSERT(vop_inflight_hdr, reserved0, 12);
VOP_ABI_ASSERT(vop_inflight_hdr, counter, 16);
VOP_ABI_ASSERT(vop_inflight_hdr, reserved, 24);
_Static_assert(sizeof(struct vop_inflight_hdr) == 64, "vop_inflight_hdr size");
VOP_ABI_ASSERT(vop_inflight_desc, inflight, 0);
VOP_ABI_ASSERT(vop_inflight_desc, reserved0, 1);
VOP_ABI_ASSERT(vop_inflight_desc, avail_pos, 2);
VOP_ABI_ASSERT(vop_inflight_desc, reserved1, 4);
VOP_ABI_ASSERT(vop_inflight_desc, counter, 8);
_Static_assert(sizeof(struct vop_inflight_desc) == 16, "vop_inflight_desc size");

#endif /* VOP_LAYOUT_H */
