/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS 1.3 for stream connections (docs/stream-protocol.md "TLS"), on
 * OpenSSL. Internal to native/devices: stream_conn.c runs the handshake on
 * each new connection, stream_bridge.c moves its bytes through the session.
 *
 * TLS 1.3 only (no downgrade), mutual: both ends present a certificate
 * that chains to the configured CA, and each end checks that the peer's
 * certificate carries the expected peer identity (the other endpoint's
 * agent name) as a DNS subjectAltName (exact, no wildcards, the subject CN
 * is never used). No session tickets, no resumption. The files are read at
 * each handshake (a rotated certificate is used by the next connection);
 * the key file must be a regular file with no group or other permission
 * bits.
 *
 * Data path: the session sits on a BIO pair (256 KiB each way), so that
 * records are batched: many records are decrypted from one recv() and many
 * are encrypted into one send(), never a syscall per record or per
 * message. Every call is on the connection's own thread (the bridge thread
 * once the handshake is done); OpenSSL needs no lock for one SSL object on
 * one thread.
 */
#ifndef VOP_STREAM_TLS_H
#define VOP_STREAM_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define VOP_STLS_PATH_MAX 4095u
#define VOP_STLS_ID_MAX 253u

struct vop_stls_config {
	const char *ca;      /* PEM CA bundle the peer's certificate must chain to */
	const char *cert;    /* PEM certificate (chain) of this end */
	const char *key;     /* PEM private key: a regular file of mode 0600 or 0400 */
	const char *peer_id; /* the DNS subjectAltName the peer's certificate must carry */
};

struct vop_stls;

/*
 * vop_stls_check - load the files as a handshake would (key mode, PEM,
 * key matches certificate, CA parses). 0, or -errno with why ("tls key
 * /x/key.pem has mode 0644: ..."). Any thread.
 */
int vop_stls_check(const struct vop_stls_config *cfg, char *why, size_t whylen);

/*
 * vop_stls_handshake - the TLS 1.3 handshake on the connected socket fd
 * (made non-blocking), as the server (the device side, which listens) or
 * the client, within timeout_ms. 0 with *out (fd stays the caller's: it is
 * closed after vop_stls_free), or -errno with why naming the cause
 * ("peer certificate refused: certificate has expired", "the peer does not
 * speak TLS 1.3 (...)", "the peer refused our certificate: tlsv1 alert
 * unknown ca", "TLS handshake timed out").
 */
int vop_stls_handshake(const struct vop_stls_config *cfg, int fd, bool server, unsigned timeout_ms,
		       struct vop_stls **out, char *why, size_t whylen);

/*
 * vop_stls_send - encrypt up to n plaintext bytes and send what the socket
 * takes (one send for many records). Returns the plaintext bytes accepted
 * (> 0), -EAGAIN (no room: poll for vop_stls_events), or -errno.
 */
ssize_t vop_stls_send(struct vop_stls *t, const void *p, size_t n);

/*
 * vop_stls_recv - at most one recv() from the socket, then decrypt into p
 * as much as fits. Returns > 0 bytes, 0 (the peer closed), -EAGAIN, or
 * -EPROTO (a TLS error: vop_stls_error says what).
 */
ssize_t vop_stls_recv(struct vop_stls *t, void *p, size_t n);

/* Send ciphertext still queued (0: none left, -EAGAIN, -errno). */
int vop_stls_flush(struct vop_stls *t);

/* POLLOUT while ciphertext waits for the socket, else 0. */
short vop_stls_events(const struct vop_stls *t);

/* True when the last recv stopped because p was full: more plaintext may be ready without a poll. */
bool vop_stls_buffered(const struct vop_stls *t);

/* Syscalls and bytes of a session (any thread; relaxed counters). */
struct vop_stls_stats {
	uint64_t sends, recvs;         /* send() / recv() calls that moved bytes */
	uint64_t wire_out, wire_in;    /* ciphertext bytes */
	uint64_t plain_out, plain_in;  /* plaintext bytes */
};
void vop_stls_stats(const struct vop_stls *t, struct vop_stls_stats *out);

/* The last TLS error, as a reason ("" if none). */
const char *vop_stls_error(const struct vop_stls *t);

/* The TLS version and cipher of the session ("TLSv1.3 TLS_AES_256_GCM_SHA384"). */
const char *vop_stls_describe(const struct vop_stls *t);

/* Free the session (the fd is not closed). NULL ok. */
void vop_stls_free(struct vop_stls *t);

#endif /* VOP_STREAM_TLS_H */
