/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A host process as an ivshmem peer: the client side of the ivshmem server protocol v0 (QEMU's
 * docs/specs/ivshmem-spec.txt; vop's server is native/tools/vop-ivshmem-server.c, documented in
 * docs/ivshmem-server.md). Joining gives the shared memory's fd (map it MAP_SHARED: the same bytes
 * as BAR2 of every guest's ivshmem-doorbell device on that server), this peer's id, one eventfd
 * per vector that becomes readable when a peer rings this one, and each peer's eventfds, written
 * to ring that peer (a guest sees an MSI-X interrupt on that vector).
 *
 * The protocol is one-way (server to client): messages are a little-endian int64 each, some with
 * one fd (SCM_RIGHTS). The server is not trusted more than any peer: every value is range-checked,
 * a message with an unexpected fd or too many fds is a protocol error (-EPROTO) and every fd
 * received is either kept in a bounded table or closed.
 *
 * Threading: a client object is not locked; one thread uses it (a data-path thread that must ring
 * from elsewhere takes the eventfd from vop_ivshmem_client_peer_eventfd() and writes to it itself,
 * and learns from the owner thread when that peer leaves). Return values: 0 or a count >= 0, or
 * -errno; errno itself is never the channel for our own errors.
 */
#ifndef VOP_IVSHMEM_H
#define VOP_IVSHMEM_H

#include <stdint.h>

#define VOP_IVSHMEM_PROTOCOL	0     /* the only version this code speaks */
#define VOP_IVSHMEM_MAX_ID	65535 /* the doorbell register has 16 bits for the peer id */
#define VOP_IVSHMEM_MAX_VECTORS 64    /* per peer */
#define VOP_IVSHMEM_MAX_PEERS	256   /* peers one client tracks; more are ignored (counted) */

struct vop_ivshmem_client;

enum vop_ivshmem_event_kind {
	/* A peer's eventfd for `vector` arrived; vector 0 arriving means the peer joined. */
	VOP_IVSHMEM_PEER_VECTOR = 1,
	/* The peer left (its fds are closed; ringing it now returns -ENOENT). */
	VOP_IVSHMEM_PEER_LEFT = 2,
};

struct vop_ivshmem_event {
	uint16_t kind;	 /* enum vop_ivshmem_event_kind */
	uint16_t peer;	 /* peer id */
	uint16_t vector; /* PEER_VECTOR only */
};

/*
 * vop_ivshmem_client_open - connect to the server at sock_path and complete the handshake:
 * version, own id, shared memory fd, the peers already there, and `nvectors` own eventfds
 * (1..VOP_IVSHMEM_MAX_VECTORS; the server's --vectors: extra vectors the server sends are closed,
 * missing ones make the handshake time out). Waits at most timeout_ms in total.
 * Returns 0 and *out, or -errno: -ECONNREFUSED/-ENOENT (no server), -EPROTO (version other than
 * 0, bad id, no or wrong fd), -ECONNRESET (server closed: e.g. it is full), -ETIMEDOUT, -EINVAL.
 * Peers met during the handshake are reported by the first vop_ivshmem_client_process() calls.
 */
int vop_ivshmem_client_open(const char *sock_path, unsigned nvectors, int timeout_ms,
			    struct vop_ivshmem_client **out);

/* vop_ivshmem_client_close - leave (the server tells the other peers) and free. NULL is fine. */
void vop_ivshmem_client_close(struct vop_ivshmem_client *c);

/* The server socket: poll it for POLLIN, then call vop_ivshmem_client_process(). */
int vop_ivshmem_client_fd(const struct vop_ivshmem_client *c);

/* This peer's id (0..65535): the value a guest writes as `id << 16 | vector` to ring it. */
unsigned vop_ivshmem_client_id(const struct vop_ivshmem_client *c);

/* Number of own vectors (the nvectors given to open). */
unsigned vop_ivshmem_client_vectors(const struct vop_ivshmem_client *c);

/*
 * The shared memory: its fd (owned by the client: dup() it to keep it past close) and size
 * (st_size when the handshake received it; a regular file or memfd, never 0).
 */
int vop_ivshmem_client_shm_fd(const struct vop_ivshmem_client *c);
uint64_t vop_ivshmem_client_shm_size(const struct vop_ivshmem_client *c);

/*
 * The eventfd that becomes readable when a peer rings this peer's `vector` (non-blocking, owned
 * by the client). Returns the fd or -EINVAL.
 */
int vop_ivshmem_client_own_eventfd(const struct vop_ivshmem_client *c, unsigned vector);

/*
 * vop_ivshmem_client_ack - read and clear own vector's eventfd: returns how many rings arrived
 * since the last ack (0 if none), or -errno.
 */
int64_t vop_ivshmem_client_ack(struct vop_ivshmem_client *c, unsigned vector);

/*
 * The eventfd to write to ring `peer` on `vector` (owned by the client). Returns the fd, or
 * -ENOENT (no such peer, or it has fewer vectors), -EINVAL.
 */
int vop_ivshmem_client_peer_eventfd(const struct vop_ivshmem_client *c, unsigned peer,
				    unsigned vector);

/* vop_ivshmem_client_ring - ring `peer` on `vector`: 0, -ENOENT, or -errno of the write. */
int vop_ivshmem_client_ring(struct vop_ivshmem_client *c, unsigned peer, unsigned vector);

/*
 * vop_ivshmem_client_process - take what the server has sent (never blocks) and report up to `max`
 * events, oldest first (events beyond `max` wait for the next call). Returns the number of events
 * written, or -ECONNRESET once the server has gone (the shared memory and the eventfds stay valid:
 * the peers can go on, as the spec says, but no join or leave is reported any more), -EPROTO on a
 * protocol violation (the connection is closed), or another -errno.
 */
int vop_ivshmem_client_process(struct vop_ivshmem_client *c, struct vop_ivshmem_event *ev,
			       unsigned max);

/*
 * vop_ivshmem_client_peers - ids of the peers known now (at most max written, ascending);
 * returns how many there are. Events are notifications; this is the current state.
 */
int vop_ivshmem_client_peers(const struct vop_ivshmem_client *c, uint16_t *ids, unsigned max);

/* Peers (or their vectors) the client ignored because a table was full. */
uint64_t vop_ivshmem_client_dropped(const struct vop_ivshmem_client *c);

#endif /* VOP_IVSHMEM_H */
