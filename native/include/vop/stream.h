/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The stream transport (docs/stream-protocol.md): virtio between two
 * processes that share no memory, over a connected byte stream (TCP, Unix,
 * vsock). Each side keeps its rings in PRIVATE memory: a window that only
 * its own process maps (a memfd), laid out exactly like a shm window, so
 * that the ring code, the device backends and the link worker run
 * unchanged. A bridge on each side joins that private window to the socket:
 *
 *  - driver side (dials): the real driver backends (net-driver, blk-driver,
 *    console, the byte pipe) drive the private window's rings as usual; the
 *    bridge plays the DEVICE role on those rings: it pops each available
 *    chain and sends it as a CHAINS message (readable bytes plus the sizes
 *    of the writable segments); USED messages bring back the bytes written,
 *    which it copies into the writable segments before it pushes the used
 *    entry.
 *  - device side (listens): the bridge plays the DRIVER role on its private
 *    window: it materialises each received chain in a buffer of its own
 *    pool, posts it for the real device backend (net to TAP, blk, console)
 *    and returns each used entry with its written bytes as a USED message.
 *
 * Transport operations (device table, feature negotiation, start/reset) are
 * messages too. Frames are length-prefixed and versioned; every length, id,
 * count and offset a peer sends is checked against what was negotiated, an
 * unknown type or a chain id that is not outstanding ends the link with a
 * reason, and the memory a link holds is bounded whatever the peer sends.
 *
 * This header holds the wire format and the pure parser (fuzzed by
 * test/native/fuzz/fuzz-stream-frame.c) and the bridge API.
 */
#ifndef VOP_STREAM_H
#define VOP_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vop/link.h"
#include "vop/window.h"

#define VOP_STREAM_MAGIC 0x53504f56u /* "VOPS" little-endian */
#define VOP_STREAM_VERSION_MAJOR 1u
/*
 * Minor versions add optional messages; a peer sends one only when the other's HELLO minor says it
 * understands it (an older peer ends the link on an unknown type). 1: CONFIG.
 */
#define VOP_STREAM_VERSION_MINOR 1u
#define VOP_STREAM_MINOR_CONFIG 1u /* the first minor that understands CONFIG */

#define VOP_SFRAME_HDR 8u                  /* le32 len, u8 type, u8 flags, le16 reserved */
#define VOP_STREAM_MIN_FRAME 4096u         /* smallest max_frame a peer may propose */
#define VOP_STREAM_MAX_FRAME (16u << 20)   /* largest max_frame we accept */
#define VOP_STREAM_DEF_FRAME (1u << 20)    /* default max_frame */
#define VOP_STREAM_MAX_SEGS 64u            /* segments per chain (VOP_CHAIN_MAX_IOV) */
#define VOP_STREAM_NONCE 32u
#define VOP_STREAM_MAC 32u                 /* HMAC-SHA256 */
#define VOP_STREAM_REASON_MAX 200u
#define VOP_STREAM_MAX_SECRET 256u

/* Message types. Stable numbers; anything else ends the link ("unknown type"). */
enum vop_smsg_type {
	VOP_SMSG_HELLO = 0x01,     /* both: magic, version, side, auth, limits, nonce */
	VOP_SMSG_AUTH = 0x02,      /* both: HMAC over both nonces and the sender's side */
	VOP_SMSG_DEV_INFO = 0x03,  /* device -> driver: one device of the table */
	VOP_SMSG_READY = 0x04,     /* both: end of the handshake (device count) */
	VOP_SMSG_DEV_START = 0x10, /* driver -> device: features accepted, DRIVER_OK, generation */
	VOP_SMSG_DEV_RESET = 0x11, /* driver -> device: status 0 (reset) */
	VOP_SMSG_CONFIG = 0x12,    /* device -> driver: the config space changed (minor >= 1) */
	VOP_SMSG_CHAINS = 0x20,    /* driver -> device: available chains of one queue */
	VOP_SMSG_USED = 0x21,      /* device -> driver: used entries of one queue */
	VOP_SMSG_PING = 0x30,      /* both: round-trip probe / keepalive */
	VOP_SMSG_PONG = 0x31,      /* both: answer to PING (same token) */
	VOP_SMSG_ERROR = 0x3f,     /* both: the sender ends the link; code and reason */
};

/* Payload sizes of the fixed messages. */
#define VOP_SMSG_HELLO_LEN 52u
#define VOP_SMSG_DEV_INFO_FIXED 20u /* then num_queues x 8, then le16 config_len, le16 0, config */
#define VOP_SMSG_DEV_INFO_MAX (VOP_SMSG_DEV_INFO_FIXED + 8u * VOP_MAX_QUEUES + 4u + VOP_CONFIG_MAX)
#define VOP_SMSG_READY_LEN 4u
#define VOP_SMSG_DEV_START_LEN 16u
#define VOP_SMSG_DEV_RESET_LEN 8u
#define VOP_SMSG_CONFIG_FIXED 12u /* dev_id, generation, le16 config_len, le16 0; then config */
#define VOP_SMSG_CONFIG_MAX (VOP_SMSG_CONFIG_FIXED + VOP_CONFIG_MAX)
#define VOP_SMSG_BATCH_HDR 12u /* dev_id, gen, queue, count */
/* Largest max_chain a queue may announce with frames of max_frame bytes: a chain fits one frame with its batch and chain headers. */
#define VOP_STREAM_CHAIN_FIT(max_frame) ((max_frame) - VOP_SMSG_BATCH_HDR - 4u - 4u * VOP_STREAM_MAX_SEGS)
#define VOP_SMSG_PING_LEN 8u

/* Negotiated limits the parser checks against. */
struct vop_stream_limits {
	uint32_t max_frame; /* payload bytes of one frame */
	uint32_t max_segs;  /* segments per chain, <= VOP_STREAM_MAX_SEGS */
};

/* A frame header, checked. */
struct vop_sframe {
	uint8_t type;
	uint8_t flags;
	uint32_t len; /* payload bytes that follow the header */
};

/*
 * vop_sframe_header - check an 8-byte frame header against the limits:
 * payload length <= max_frame, a known type, flags and reserved 0, the
 * fixed messages exactly their size. Returns 0, or -EMSGSIZE / -EPROTO with
 * *why naming the field and bound (a static string). Pure.
 */
int vop_sframe_header(const uint8_t hdr[VOP_SFRAME_HDR], const struct vop_stream_limits *lim,
		      struct vop_sframe *out, const char **why);

struct vop_shello {
	uint16_t version_major, version_minor;
	uint8_t side; /* 0 driver side (dials), 1 device side (listens) */
	uint8_t auth; /* 1: HMAC-SHA256 challenge-response required */
	uint32_t max_frame;
	uint32_t max_segs;
	uint8_t nonce[VOP_STREAM_NONCE];
};
int vop_shello_parse(const uint8_t *p, uint32_t len, struct vop_shello *out, const char **why);
void vop_shello_encode(uint8_t out[VOP_SMSG_HELLO_LEN], const struct vop_shello *h);

struct vop_sdev_info {
	uint32_t dev_id;
	uint32_t device_type;
	uint64_t features;
	uint16_t num_queues;
	uint16_t queue_size[VOP_MAX_QUEUES];
	uint32_t max_chain[VOP_MAX_QUEUES]; /* bytes one chain of the queue may carry */
	uint16_t config_len;                /* <= VOP_CONFIG_MAX */
	uint8_t config[VOP_CONFIG_MAX];     /* the device's config space as the device side has it */
};
int vop_sdev_info_parse(const uint8_t *p, uint32_t len, const struct vop_stream_limits *lim,
			struct vop_sdev_info *out, const char **why);
/* Returns the payload length (<= VOP_SMSG_DEV_INFO_MAX). */
uint32_t vop_sdev_info_encode(uint8_t *out, const struct vop_sdev_info *d);

/* CONFIG: a device's config space after a change, as the device side's seqlock gave it. */
struct vop_sconfig {
	uint32_t dev_id;
	uint32_t generation;            /* the device side's config generation: even, >= 2 */
	uint16_t config_len;            /* <= VOP_CONFIG_MAX */
	uint8_t config[VOP_CONFIG_MAX];
};
/*
 * vop_sconfig_parse - structure only: dev_id nonzero, generation even and >= 2, config_len <= 96,
 * reserved 0, the length exactly 12 + config_len. 0 or -EPROTO with *why. Pure.
 */
int vop_sconfig_parse(const uint8_t *p, uint32_t len, struct vop_sconfig *out, const char **why);
/* Returns the payload length (<= VOP_SMSG_CONFIG_MAX). */
uint32_t vop_sconfig_encode(uint8_t *out, const struct vop_sconfig *c);

/* A CHAINS or USED batch, walked with vop_sbatch_next_*. */
struct vop_sbatch {
	uint32_t dev_id;
	uint32_t gen;
	uint16_t queue;
	uint16_t count;
	const uint8_t *p, *end; /* the entries not yet walked */
	uint16_t walked;
};

/* One chain of a CHAINS batch (pointers into the frame). */
struct vop_schain {
	uint16_t id;
	uint8_t n_out, n_in;
	uint32_t seg[VOP_STREAM_MAX_SEGS]; /* lengths: n_out readable, then n_in writable; each > 0 */
	uint64_t out_bytes, in_bytes;
	const uint8_t *data; /* out_bytes readable bytes */
};

/* One used entry of a USED batch. */
struct vop_sused {
	uint16_t id;
	uint32_t len;        /* bytes written */
	const uint8_t *data; /* len bytes */
};

/*
 * vop_sbatch_parse - the batch header of a CHAINS/USED payload (count >= 1)
 * and then every entry walked once (structure only: segment counts and
 * lengths, data inside the frame, exactly count entries and no trailing
 * byte). On 0, *b is rewound to the first entry. -EPROTO with *why. Pure.
 */
int vop_sbatch_parse(uint8_t type, const uint8_t *p, uint32_t len,
		     const struct vop_stream_limits *lim, struct vop_sbatch *b, const char **why);
/* Next entry of a parsed batch: 1, 0 at the end, -EPROTO (never after vop_sbatch_parse said 0). */
int vop_sbatch_next_chain(struct vop_sbatch *b, const struct vop_stream_limits *lim,
			  struct vop_schain *c, const char **why);
int vop_sbatch_next_used(struct vop_sbatch *b, struct vop_sused *u, const char **why);

/* Little-endian helpers for encoders. */
static inline void vop_sput16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void vop_sput32(uint8_t *p, uint32_t v)
{
	vop_sput16(p, (uint16_t)v);
	vop_sput16(p + 2, (uint16_t)(v >> 16));
}
static inline void vop_sput64(uint8_t *p, uint64_t v)
{
	vop_sput32(p, (uint32_t)v);
	vop_sput32(p + 4, (uint32_t)(v >> 32));
}
static inline uint16_t vop_sget16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}
static inline uint32_t vop_sget32(const uint8_t *p)
{
	return vop_sget16(p) | (uint32_t)vop_sget16(p + 2) << 16;
}
static inline uint64_t vop_sget64(const uint8_t *p)
{
	return vop_sget32(p) | (uint64_t)vop_sget32(p + 4) << 32;
}
static inline void vop_sframe_put_hdr(uint8_t *p, uint8_t type, uint32_t len)
{
	vop_sput32(p, len);
	p[4] = type;
	p[5] = 0;
	vop_sput16(p + 6, 0);
}

/* Stable short name of a message type ("chains"), "unknown" otherwise. */
const char *vop_smsg_name(unsigned type);

/*
 * vop_stream_mac - HMAC-SHA256(secret, "vop-stream-auth-v1" || side ||
 * nonce_of_side || nonce_of_other): what `side` sends to prove it knows the
 * secret. The side byte stops a reflected MAC. 0 or -EIO.
 */
int vop_stream_mac(const uint8_t *secret, uint32_t secret_len, uint8_t side,
		   const uint8_t nonce_side[VOP_STREAM_NONCE],
		   const uint8_t nonce_other[VOP_STREAM_NONCE], uint8_t out[VOP_STREAM_MAC]);

/* ------------------------------------------------------------------ */
/* The bridge                                                           */
/* ------------------------------------------------------------------ */

enum vop_stream_state {
	VOP_STREAM_HANDSHAKE = 1, /* hello, auth, device table */
	VOP_STREAM_READY = 2,     /* carrying virtio messages */
	VOP_STREAM_FAILED = 3,    /* ended; reason says why (then only destroy remains) */
};

struct vop_stls;

struct vop_stream_config {
	int fd;                 /* connected stream socket; the bridge owns it from create on */
	/*
	 * A TLS session on fd after its handshake (vop/stream_tls.h), or NULL: every byte then
	 * goes through it. Owned by the bridge from create on (freed even when create fails). A
	 * session authenticates the peer, so secret_len may be 0 without allow_plain.
	 */
	struct vop_stls *tls;
	bool device_side;       /* true: the virtio device side (listens); false: driver side */
	const uint8_t *secret;  /* per-link secret (copied), or NULL */
	uint32_t secret_len;    /* 1 .. VOP_STREAM_MAX_SECRET; 0 only with allow_plain */
	bool allow_plain;       /* no authentication: only when the config says so explicitly */
	uint32_t max_frame;     /* proposed payload bytes per frame; 0 = VOP_STREAM_DEF_FRAME */
	uint32_t handshake_ms;  /* whole handshake deadline (slow-loris bound); 0 = 5000 */
	uint32_t idle_ms;       /* nothing received for this long ends the link; 0 = 15000 */
	uint32_t ping_ms;       /* PING period (RTT, keepalive); 0 = 1000 */
	uint32_t max_chain;     /* device side: bytes per chain slot; 0 = 65536 + 4096 */
};

struct vop_stream_status {
	uint32_t state;        /* enum vop_stream_state */
	uint64_t bytes_tx, bytes_rx;
	uint64_t frames_tx, frames_rx;
	uint64_t chains_tx, chains_rx;  /* chains sent (driver side) / received (device side) */
	uint64_t used_tx, used_rx;
	uint64_t stale_used;   /* USED of an earlier generation, dropped */
	uint64_t config_tx, config_rx; /* CONFIG messages sent (device side) / applied (driver side) */
	uint16_t peer_minor;   /* the peer's HELLO version_minor (after HELLO) */
	uint64_t rtt_ns;       /* last measured PING round trip; 0 = none yet */
	char reason[VOP_STREAM_REASON_MAX + 1]; /* why FAILED ("peer: ..." if the peer said so) */
};

struct vop_stream;

/*
 * vop_stream_create - a bridge between the link side proxy (the side of
 * the private window the real backends do NOT use) and the socket cfg->fd.
 * Takes ownership of the fd even when it fails. 0, -EINVAL, -ENOMEM.
 */
int vop_stream_create(struct vop_link *proxy, const struct vop_stream_config *cfg,
		      struct vop_stream **out);

/*
 * vop_stream_add - carry dev_id (LIVE in the private window, published
 * before; on the device side with pools from vop_stream_pool_size()).
 * Before vop_stream_start only. 0, -ENOENT, -EINVAL, -ENOSPC, -ENOMEM.
 */
int vop_stream_add(struct vop_stream *s, uint32_t dev_id);

/* The pool bytes a device-side queue of qsize entries needs for max_chain-byte chains. */
uint64_t vop_stream_pool_size(uint16_t qsize, uint32_t max_chain);

/*
 * vop_stream_start - start the bridge thread: handshake, then relay. The
 * proxy link must be started by the caller. 0 or -errno.
 */
int vop_stream_start(struct vop_stream *s);

/* Status snapshot; any thread. */
void vop_stream_status(struct vop_stream *s, struct vop_stream_status *out);

/*
 * vop_stream_destroy - stop the bridge thread, close the socket, detach
 * the proxy backends from the proxy link (the caller destroys the link and
 * window after). NULL ok.
 */
void vop_stream_destroy(struct vop_stream *s);

/* ------------------------------------------------------------------ */
/* Connections: listen or dial, a bridge per connection, reconnects     */
/* ------------------------------------------------------------------ */

enum vop_sconn_state {
	VOP_SCONN_LISTENING = 1, /* device side: waiting for a connection */
	VOP_SCONN_DIALING = 2,   /* driver side: connecting (with backoff) */
	VOP_SCONN_HANDSHAKE = 3, /* connected, handshake running */
	VOP_SCONN_READY = 4,     /* carrying virtio messages */
	VOP_SCONN_STOPPED = 5,
};

struct vop_stls_config;

struct vop_sconn_config {
	/*
	 * tcp:IPV4:PORT, unix:PATH or vsock:CID:PORT (copied). vsock listens on CID "any"
	 * (VMADDR_CID_ANY) or a number; 1 is the local loopback, 2 the host.
	 */
	const char *address;
	bool device_side;      /* true: listen (the device side); false: dial */
	/*
	 * unix: the directory the socket path must lie beneath (resolved with RESOLVE_BENEATH,
	 * vop/path.h), or NULL when the caller trusts the path (a tool's own). The device side
	 * binds there, replacing only a stale socket, and removes only its own socket at stop.
	 */
	const char *unix_root;
	const uint8_t *secret; /* as struct vop_stream_config (copied) */
	uint32_t secret_len;
	bool allow_plain;
	/*
	 * TLS 1.3 with mutual certificates on every connection (vop/stream_tls.h), or NULL
	 * (copied; the files are read at each handshake). TLS authenticates the peer, so no
	 * secret is needed with it; a secret given too is checked inside TLS as well.
	 */
	const struct vop_stls_config *tls;
	uint32_t max_chain, handshake_ms, idle_ms; /* as struct vop_stream_config; 0 = defaults */
	const uint32_t *dev_ids; /* the devices the link carries (copied) */
	unsigned ndevs;
	/*
	 * Driver side: the link side of the real driver backends; each new connection resets
	 * every device on it (vop_link_reset_device) so both ends start from clean rings.
	 */
	struct vop_link *real;
};

struct vop_sconn_status {
	uint32_t state;            /* enum vop_sconn_state */
	uint64_t rtt_ns;           /* last RTT of the current connection, 0 = none */
	uint64_t bytes_tx, bytes_rx; /* over every connection */
	uint64_t connections;      /* connections that reached READY */
	uint64_t failures;         /* connections that ended (handshake refused included) */
	char peer[80];             /* the current peer's address, "" when none */
	char security[112];        /* the current connection's protection ("TLSv1.3 TLS_AES_256_GCM_SHA384
				    * + hmac", "hmac", "none"), "" when none */
	char last_reason[VOP_STREAM_REASON_MAX + 1]; /* why the last connection ended */
};

struct vop_sconn;

/*
 * vop_sconn_start - carry the devices of proxy's window over connections to
 * cfg->address: the device side binds and listens before this returns (so
 * -EADDRINUSE, -EACCES, -EINVAL for a bad address come back here); the
 * driver side dials in the background, again with jittered exponential
 * backoff (100 ms doubling to 5 s, +-50 %; 3 s connect bound) whenever a
 * connection ends. TCP gets TCP_NODELAY and keepalive. 0 or -errno.
 */
int vop_sconn_start(struct vop_link *proxy, const struct vop_sconn_config *cfg, struct vop_sconn **out);

/* Status snapshot; any thread. */
void vop_sconn_status(struct vop_sconn *c, struct vop_sconn_status *out);

/* Stop (ends the current connection), join, free. NULL ok. */
void vop_sconn_stop(struct vop_sconn *c);

#endif /* VOP_STREAM_H */
