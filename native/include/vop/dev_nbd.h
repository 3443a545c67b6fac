/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NBD export of a remote virtio-blk disk (driver role). Newstyle fixed
 * handshake with NBD_OPT_GO / NBD_OPT_INFO / NBD_OPT_EXPORT_NAME /
 * NBD_OPT_LIST / NBD_OPT_ABORT / NBD_OPT_STARTTLS, simple replies only
 * (structured replies are refused with NBD_REP_ERR_UNSUP, which every
 * client accepts), over a Unix socket and/or TCP. Commands: READ, WRITE, FLUSH,
 * TRIM, WRITE_ZEROES, DISC; requests must be 512-byte aligned (announced
 * with NBD_INFO_BLOCK_SIZE) and at most vop_nbd_max_request() bytes.
 *
 * TLS (vop/nbd_tls.h): with a certificate, STARTTLS is offered on both
 * sockets; on TCP it is required (FORCEDTLS: any other option before it
 * gets NBD_REP_ERR_TLS_REQD, NBD_OPT_EXPORT_NAME closes the connection, more
 * than 16 options or one over 4 KiB before it close the connection) unless
 * tcp_plaintext on a loopback address. Without a certificate, TCP needs
 * tcp_plaintext and a loopback address.
 *
 * Threads: one listener per socket, one reader and one writer per
 * connection, plus a TLS pump per upgraded connection. A reply is sent only after every virtio request of the NBD
 * command completed (i.e. after the device's pwritev/fdatasync returned).
 */
#ifndef VOP_DEV_NBD_H
#define VOP_DEV_NBD_H

#include <stdbool.h>
#include <stdint.h>

#include "vop/dev_blk.h"

struct vop_nbd_config {
	const char *unix_path;   /* socket path (created 0600), or NULL */
	const char *unix_root;   /* directory unix_path must lie in (vop/path.h); NULL = its own directory */
	const char *tcp_host;    /* listen address (IPv4 or IPv6 literal), NULL = "127.0.0.1" */
	int tcp_port;            /* TCP port, 0 = no TCP; -1 = any free port */
	const char *export_name; /* export name; NULL = "vop" ("" also accepted) */
	const char *tls_cert;    /* PEM certificate chain: enables STARTTLS; NULL = no TLS */
	const char *tls_key;     /* PEM key of tls_cert */
	const char *tls_ca;      /* PEM CA: client certificates required and verified; NULL = none */
	const char *tls_clients; /* comma-separated client names allowed; NULL/"*" = any, "" = none */
	bool tcp_plaintext;      /* TCP without TLS allowed (loopback address only) */
};

struct vop_nbd;

/*
 * Start serving. 0 or -errno: bind, listen, thread; -EPERM for TCP without
 * TLS when not tcp_plaintext or not on loopback; -EINVAL (bad address, bad
 * PEM, key not matching the certificate), -ENOENT/-EACCES (TLS files).
 */
int vop_nbd_start(struct vop_blk_driver *d, const struct vop_nbd_config *cfg, struct vop_nbd **out);

/* The TCP port actually bound (for tcp_port -1), 0 without TCP. */
int vop_nbd_port(struct vop_nbd *n);

/* The Unix socket's path ("" without one). */
const char *vop_nbd_unix_path(struct vop_nbd *n);

/* Largest request accepted (bytes). */
uint32_t vop_nbd_max_request(struct vop_nbd *n);

/*
 * Stop listening, close connections, join threads, free. NULL ok. Call it
 * after vop_link_detach() of the blk driver: requests still in the ring
 * are then completed (IOERR) before the connections are freed.
 */
void vop_nbd_stop(struct vop_nbd *n);

#endif /* VOP_DEV_NBD_H */
