/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS for the NBD export (NBD_OPT_STARTTLS), on OpenSSL. Internal to
 * native/devices: nbd.c uses it, nothing else.
 *
 * The server side settings (struct vop_nbd_tls) hold one SSL_CTX built
 * from PEM files: certificate chain, key and, when a CA is given, the CA
 * every client certificate must chain to (a client certificate is then
 * required, and its name - subject CN, else the first DNS SAN, as the
 * agent names gRPC callers - must be in the allowed list unless that list
 * is "*"). TLS 1.2 at least, no renegotiation, no session resumption.
 * The files are checked again before each handshake and the context is
 * rebuilt when one of them changed (certificate rotation without a
 * restart); a rebuild that fails keeps the previous context.
 *
 * An upgraded connection (struct vop_nbd_tls_conn) is served by one pump
 * thread that alone owns the SSL object: it decrypts what arrives on the
 * network socket into one end of a socket pair and encrypts what the NBD
 * code writes into the other end. The NBD code keeps its blocking
 * read()/writev() on that plain end, so its reader and writer threads
 * never share an SSL object (OpenSSL allows one thread per SSL at a time).
 */
#ifndef VOP_NBD_TLS_H
#define VOP_NBD_TLS_H

#include <stdbool.h>

struct vop_nbd_tls_config {
	const char *cert;    /* PEM certificate chain of the server (required) */
	const char *key;     /* PEM private key (required) */
	const char *ca;	     /* PEM CA bundle for client certificates; NULL = none asked */
	const char *clients; /* comma-separated certificate names allowed; NULL or "*" = any the CA
			      * signed, "" = none */
};

struct vop_nbd_tls;
struct vop_nbd_tls_conn;

/*
 * vop_nbd_tls_new - load the files and build the context. Returns 0,
 * -EINVAL (cert or key missing in cfg, or a file that is not valid PEM,
 * or a key that does not match the certificate), -errno of opening a file
 * (-ENOENT, -EACCES), -ENOMEM. Control thread.
 */
int vop_nbd_tls_new(const struct vop_nbd_tls_config *cfg, struct vop_nbd_tls **out);

/* Free the settings (connections hold their own reference to the context). NULL ok. */
void vop_nbd_tls_free(struct vop_nbd_tls *t);

/*
 * vop_nbd_tls_accept - run the server side of the TLS handshake on the
 * connected blocking socket fd (the caller has sent the NBD_REP_ACK to
 * NBD_OPT_STARTTLS), bounded to 10 s, then start the pump thread. On
 * success *plain is the socket to read and write cleartext on (owned by
 * the caller, who closes it) and fd belongs to *out (closed by
 * vop_nbd_tls_conn_free). On failure fd stays the caller's. Returns 0,
 * -ECONNABORTED (handshake failed or refused: bad or missing client
 * certificate, name not allowed, protocol error, timeout), -ENOMEM,
 * -errno (socketpair, thread). Thread: the connection's reader.
 */
int vop_nbd_tls_accept(struct vop_nbd_tls *t, int fd, struct vop_nbd_tls_conn **out, int *plain);

/* Stop the pump at once (shutdown of both sockets); any thread, idempotent. */
void vop_nbd_tls_conn_shutdown(struct vop_nbd_tls_conn *c);

/*
 * vop_nbd_tls_conn_free - wait for the pump (after the plain end was shut
 * down it sends what is left, at most 5 s, then a TLS close_notify), close
 * the network socket, free. NULL ok.
 */
void vop_nbd_tls_conn_free(struct vop_nbd_tls_conn *c);

#endif /* VOP_NBD_TLS_H */
