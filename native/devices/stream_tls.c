/* SPDX-License-Identifier: Apache-2.0 */
/* TLS 1.3 for stream connections: see vop/stream_tls.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "vop/stream_tls.h"
#include "../core/private_atomic.h"

#define STLS_BIO_BUF (256u * 1024) /* ciphertext buffered per direction */
#define STLS_RECORD_ROOM (16384u + 256u) /* one full record with its overhead */

struct vop_stls {
	SSL *ssl;
	BIO *net; /* our end of the BIO pair: ciphertext to send, received ciphertext */
	int fd;
	bool more; /* the last recv filled the caller's buffer */
	struct vop_private_u64 sends, recvs, wire_out, wire_in, plain_out, plain_in;
	char err[VOP_STLS_ID_MAX + 200];
	char desc[96];
	char peer_id[VOP_STLS_ID_MAX + 1];
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The last OpenSSL error's reason ("tlsv1 alert unknown ca"), "" if none; clears the queue. */
static void ssl_reason(char *out, size_t n)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	snprintf(out, n, "%s", r ? r : "");
	ERR_clear_error();
}

/* ------------------------------------------------------------------ */
/* Context                                                              */
/* ------------------------------------------------------------------ */

/* The key, read from a regular file without group/other permission bits (checked on the fd). */
static int load_key(SSL_CTX *ctx, const char *path, char *why, size_t n)
{
	struct stat st;
	EVP_PKEY *k;
	BIO *b;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0) {
		rc = -errno;
		snprintf(why, n, "tls key %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(why, n, "tls key %s is not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (st.st_mode & 0077) {
		snprintf(why, n,
			 "tls key %s has mode %04o: it must not be readable by group or others (chmod 600)",
			 path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EPERM;
	}
	b = BIO_new_fd(fd, BIO_CLOSE);
	if (!b) {
		close(fd);
		return -ENOMEM;
	}
	k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
	BIO_free(b);
	if (!k) {
		snprintf(why, n, "tls key %s is not a PEM private key", path);
		ERR_clear_error();
		return -EINVAL;
	}
	if (SSL_CTX_use_PrivateKey(ctx, k) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(why, n, "tls key %s does not match the certificate", path);
		rc = -EINVAL;
	}
	EVP_PKEY_free(k);
	ERR_clear_error();
	return rc;
}

static int readable(const char *what, const char *path, char *why, size_t n)
{
	int fd;

	if (!path || !path[0] || strlen(path) > VOP_STLS_PATH_MAX) {
		snprintf(why, n, "tls %s: no file given", what);
		return -EINVAL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		snprintf(why, n, "tls %s %s: %s", what, path, strerror(e));
		return -e;
	}
	close(fd);
	return 0;
}

static int build_ctx(const struct vop_stls_config *cfg, bool server, SSL_CTX **out, char *why, size_t n)
{
	SSL_CTX *ctx;
	int rc;

	*out = NULL;
	if ((rc = readable("ca", cfg->ca, why, n)) || (rc = readable("cert", cfg->cert, why, n)) ||
	    (rc = readable("key", cfg->key, why, n)))
		return rc;
	ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx)
		return -ENOMEM;
	/* TLS 1.3 and nothing else: a peer that offers less fails the handshake (no downgrade). */
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
		snprintf(why, n, "this OpenSSL has no TLS 1.3");
		rc = -ENOTSUP;
		goto fail;
	}
	/*
	 * A peer that goes away without close_notify is "peer closed the connection", as on a plain
	 * socket (frames are length-prefixed: a cut stream only ends the link).
	 */
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
					 SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	/* Partial writes: one record per SSL_write; the bridge's buffer may move between calls. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(ctx, 1);
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->cert) != 1) {
		snprintf(why, n, "tls cert %s is not a PEM certificate", cfg->cert);
		rc = -EINVAL;
		goto fail;
	}
	if ((rc = load_key(ctx, cfg->key, why, n)))
		goto fail;
	/* Only the configured CA: never the system's default trust store. */
	if (SSL_CTX_load_verify_file(ctx, cfg->ca) != 1) {
		snprintf(why, n, "tls ca %s holds no PEM certificate", cfg->ca);
		rc = -EINVAL;
		goto fail;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_verify_depth(ctx, 8);
	ERR_clear_error();
	*out = ctx;
	return 0;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return rc;
}

int vop_stls_check(const struct vop_stls_config *cfg, char *why, size_t whylen)
{
	SSL_CTX *ctx;
	int rc = build_ctx(cfg, true, &ctx, why, whylen);

	if (rc == 0 && (!cfg->peer_id || !cfg->peer_id[0] || strlen(cfg->peer_id) > VOP_STLS_ID_MAX)) {
		snprintf(why, whylen, "tls: the expected peer identity must be 1..%u bytes", VOP_STLS_ID_MAX);
		rc = -EINVAL;
	}
	SSL_CTX_free(ctx);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Moving ciphertext between the BIO pair and the socket               */
/* ------------------------------------------------------------------ */

static ssize_t fill(struct vop_stls *t);
static void explain(struct vop_stls *t, const char *when);

/*
 * The peer reset the connection while we were sending: it may have said why
 * first (a TLS 1.3 client learns that its certificate was refused only
 * now). Read what is left and let OpenSSL parse it: -EPROTO with the alert
 * in t->err, else err.
 */
static int why_reset(struct vop_stls *t, int err)
{
	uint8_t junk[256];
	size_t k;
	int i;

	for (i = 0; i < 8 && fill(t) > 0; i++) {
	}
	ERR_clear_error();
	if (SSL_read_ex(t->ssl, junk, sizeof(junk), &k) != 1 &&
	    SSL_get_error(t->ssl, 0) == SSL_ERROR_SSL) {
		explain(t, "read");
		return -EPROTO;
	}
	ERR_clear_error();
	return err;
}

int vop_stls_flush(struct vop_stls *t)
{
	while (BIO_ctrl_pending(t->net) > 0) {
		char *p;
		int n = BIO_nread0(t->net, &p);
		ssize_t k;

		if (n <= 0)
			return 0;
		k = send(t->fd, p, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return -EAGAIN;
			return errno == EPIPE || errno == ECONNRESET ? why_reset(t, -errno) : -errno;
		}
		BIO_nread(t->net, &p, (int)k);
		vop_private_add_u64(&t->sends, 1);
		vop_private_add_u64(&t->wire_out, (uint64_t)k);
	}
	return 0;
}

void vop_stls_stats(const struct vop_stls *t, struct vop_stls_stats *out)
{
	out->sends = vop_private_load_u64(&t->sends);
	out->recvs = vop_private_load_u64(&t->recvs);
	out->wire_out = vop_private_load_u64(&t->wire_out);
	out->wire_in = vop_private_load_u64(&t->wire_in);
	out->plain_out = vop_private_load_u64(&t->plain_out);
	out->plain_in = vop_private_load_u64(&t->plain_in);
}

/* One recv() into the pair: > 0 bytes, 0 the peer closed, 1 when the pair is full, -EAGAIN, -errno. */
static ssize_t fill(struct vop_stls *t)
{
	char *p;
	int room = BIO_nwrite0(t->net, &p);
	ssize_t k;

	if (room <= 0)
		return 1;
	k = recv(t->fd, p, (size_t)room, MSG_DONTWAIT);
	if (k > 0) {
		BIO_nwrite(t->net, &p, (int)k);
		vop_private_add_u64(&t->recvs, 1);
		vop_private_add_u64(&t->wire_in, (uint64_t)k);
		return k;
	}
	if (k == 0)
		return 0;
	return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
}

short vop_stls_events(const struct vop_stls *t)
{
	return BIO_ctrl_pending(t->net) > 0 ? POLLOUT : 0;
}

bool vop_stls_buffered(const struct vop_stls *t)
{
	return t->more;
}

const char *vop_stls_error(const struct vop_stls *t)
{
	return t->err;
}

const char *vop_stls_describe(const struct vop_stls *t)
{
	return t->desc;
}

/* A TLS failure as a reason the link's status can show. */
static void explain(struct vop_stls *t, const char *when)
{
	char r[160];
	long v = SSL_get_verify_result(t->ssl);

	ssl_reason(r, sizeof(r));
	if (v != X509_V_OK) {
		if (v == X509_V_ERR_HOSTNAME_MISMATCH)
			snprintf(t->err, sizeof(t->err),
				 "peer certificate refused: it does not name %s (a DNS subjectAltName is required)",
				 t->peer_id);
		else
			snprintf(t->err, sizeof(t->err), "peer certificate refused: %s",
				 X509_verify_cert_error_string(v));
		return;
	}
	if (strstr(r, "alert"))
		snprintf(t->err, sizeof(t->err), "the peer refused our TLS handshake (%s)", r);
	else if (strstr(r, "wrong version number") || strstr(r, "packet length too long") ||
		 strstr(r, "record layer failure") || strstr(r, "unsupported protocol") ||
		 strstr(r, "http request"))
		snprintf(t->err, sizeof(t->err), "the peer does not speak TLS 1.3 (%s)", r);
	else if (strstr(r, "peer did not return a certificate") || strstr(r, "certificate required"))
		snprintf(t->err, sizeof(t->err), "the peer presented no certificate (%s)", r);
	else
		snprintf(t->err, sizeof(t->err), "TLS %s failed (%s)", when, r[0] ? r : "unknown error");
}

/* ------------------------------------------------------------------ */
/* Handshake                                                            */
/* ------------------------------------------------------------------ */

int vop_stls_handshake(const struct vop_stls_config *cfg, int fd, bool server, unsigned timeout_ms,
		       struct vop_stls **out, char *why, size_t whylen)
{
	uint64_t deadline = now_ms() + (timeout_ms ? timeout_ms : 5000);
	struct vop_stls *t;
	SSL_CTX *ctx;
	BIO *inner = NULL;
	int rc, fl;

	*out = NULL;
	why[0] = 0;
	if (!cfg->peer_id || !cfg->peer_id[0] || strlen(cfg->peer_id) > VOP_STLS_ID_MAX) {
		snprintf(why, whylen, "tls: no expected peer identity");
		return -EINVAL;
	}
	rc = build_ctx(cfg, server, &ctx, why, whylen);
	if (rc)
		return rc;
	t = calloc(1, sizeof(*t));
	if (!t) {
		SSL_CTX_free(ctx);
		return -ENOMEM;
	}
	t->fd = fd;
	snprintf(t->peer_id, sizeof(t->peer_id), "%s", cfg->peer_id);
	t->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (!t->ssl || BIO_new_bio_pair(&inner, STLS_BIO_BUF, &t->net, STLS_BIO_BUF) != 1) {
		vop_stls_free(t);
		return -ENOMEM;
	}
	SSL_set_bio(t->ssl, inner, inner);
	/* The peer's identity: an exact DNS subjectAltName, never the CN, no wildcards. */
	X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(t->ssl),
					X509_CHECK_FLAG_NO_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
	if (X509_VERIFY_PARAM_set1_host(SSL_get0_param(t->ssl), cfg->peer_id, 0) != 1) {
		snprintf(why, whylen, "tls: bad peer identity");
		vop_stls_free(t);
		return -EINVAL;
	}
	if (server) {
		SSL_set_accept_state(t->ssl);
	} else {
		SSL_set_tlsext_host_name(t->ssl, cfg->peer_id);
		SSL_set_connect_state(t->ssl);
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		rc = -errno;
		vop_stls_free(t);
		return rc;
	}
	for (;;) {
		int r, e, f;
		uint64_t now;
		struct pollfd pf = { .fd = fd, .events = 0 };

		ERR_clear_error();
		r = SSL_do_handshake(t->ssl);
		e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
		if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			explain(t, "handshake");
			(void)vop_stls_flush(t); /* the alert, so that the peer learns why (best effort) */
			snprintf(why, whylen, "%s", t->err);
			vop_stls_free(t);
			return -ECONNREFUSED;
		}
		f = vop_stls_flush(t);
		if (f && f != -EAGAIN) {
			snprintf(why, whylen, "TLS handshake: send: %s", strerror(-f));
			vop_stls_free(t);
			return f;
		}
		if (e == SSL_ERROR_NONE && f == 0)
			break;
		if (e == SSL_ERROR_WANT_READ) {
			ssize_t k = fill(t);

			if (k > 0)
				continue;
			if (k == 0) {
				snprintf(why, whylen, "peer closed the connection during the TLS handshake");
				vop_stls_free(t);
				return -ECONNRESET;
			}
			if (k != -EAGAIN) {
				snprintf(why, whylen, "TLS handshake: recv: %s", strerror((int)-k));
				vop_stls_free(t);
				return (int)k;
			}
			pf.events |= POLLIN;
		}
		if (vop_stls_events(t))
			pf.events |= POLLOUT;
		now = now_ms();
		if (now >= deadline) {
			snprintf(why, whylen, "TLS handshake timed out");
			vop_stls_free(t);
			return -ETIMEDOUT;
		}
		if (pf.events)
			poll(&pf, 1, (int)(deadline - now) + 1);
	}
	snprintf(t->desc, sizeof(t->desc), "%s %s", SSL_get_version(t->ssl),
		 SSL_CIPHER_get_name(SSL_get_current_cipher(t->ssl)));
	*out = t;
	return 0;
}

/* ------------------------------------------------------------------ */
/* Data                                                                 */
/* ------------------------------------------------------------------ */

ssize_t vop_stls_send(struct vop_stls *t, const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t done = 0;
	int f = vop_stls_flush(t);

	if (f && f != -EAGAIN)
		return f;
	while (done < n) {
		size_t want = n - done < 16384 ? n - done : 16384, w = 0;

		/*
		 * Only as much as the pair surely holds, so that SSL_write never stops inside a
		 * record: records pile up in the pair and go out in one send below.
		 */
		if (BIO_ctrl_get_write_guarantee(SSL_get_wbio(t->ssl)) < want + 256) {
			f = vop_stls_flush(t);
			if (f == -EAGAIN)
				break;
			if (f)
				return f;
			if (BIO_ctrl_get_write_guarantee(SSL_get_wbio(t->ssl)) < want + 256)
				break;
		}
		ERR_clear_error();
		if (SSL_write_ex(t->ssl, b + done, want, &w) != 1) {
			int e = SSL_get_error(t->ssl, 0);

			if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
				break;
			explain(t, "write");
			return -EPROTO;
		}
		done += w;
	}
	f = vop_stls_flush(t);
	if (f && f != -EAGAIN)
		return f;
	vop_private_add_u64(&t->plain_out, done);
	return done ? (ssize_t)done : -EAGAIN;
}

ssize_t vop_stls_recv(struct vop_stls *t, void *p, size_t n)
{
	uint8_t *b = p;
	size_t got = 0;
	bool filled = false;

	t->more = false;
	if (n == 0)
		return -EAGAIN;
	while (got < n) {
		size_t k = 0;
		int e;

		ERR_clear_error();
		if (SSL_read_ex(t->ssl, b + got, n - got, &k) == 1) {
			got += k;
			continue;
		}
		e = SSL_get_error(t->ssl, 0);
		if (e == SSL_ERROR_WANT_READ) {
			ssize_t r;

			if (filled)
				break; /* one recv per call: the caller polls again */
			filled = true;
			r = fill(t);
			if (r > 0)
				continue;
			if (r == -EAGAIN)
				break;
			if (got)
				break;
			return r == 0 ? 0 : r;
		}
		if (e == SSL_ERROR_ZERO_RETURN) {
			if (got)
				break;
			return 0;
		}
		if (e == SSL_ERROR_WANT_WRITE)
			break; /* a post-handshake message waits for the socket; flushed below */
		explain(t, "read");
		if (got)
			break;
		return -EPROTO;
	}
	if (got == n)
		t->more = true;
	(void)vop_stls_flush(t); /* a KeyUpdate answer, if any */
	vop_private_add_u64(&t->plain_in, got);
	return got ? (ssize_t)got : -EAGAIN;
}

void vop_stls_free(struct vop_stls *t)
{
	if (!t)
		return;
	SSL_free(t->ssl); /* frees the inner end of the pair */
	BIO_free(t->net);
	free(t);
}
