/* SPDX-License-Identifier: Apache-2.0 */
/* TLS for the NBD export: see vop/nbd_tls.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "vop/nbd_tls.h"

#define TLS_HANDSHAKE_MS 10000	       /* whole handshake, not per read */
#define TLS_FLUSH_MS	 5000	       /* what is left after one side ended */
#define PUMP_BUF	 (256u * 1024) /* per direction */
#define TLS_NAME_MAX	 256	       /* certificate names compared (longer: not allowed) */

/* Identity of a file as loaded: a change of any field means "reload". */
struct file_id {
	bool present;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

struct vop_nbd_tls {
	char *path[3];	      /* cert, key, ca (NULL if none); immutable after new */
	char *clients;	      /* allowed names, NULL = any; immutable after new */
	pthread_mutex_t lock; /* protects ctx and id */
	SSL_CTX *ctx;	      /* current context; each SSL holds its own reference */
	struct file_id id[3]; /* the files ctx was built from */
};

struct vop_nbd_tls_conn {
	SSL *ssl;     /* the handshake's thread, then the pump's alone */
	int net;      /* network socket (owned) */
	int pump_end; /* pump's end of the socket pair (owned) */
	pthread_t thread;
	bool running;	   /* thread started (set before the caller sees the conn) */
	_Atomic bool stop; /* any thread: leave now */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------ */
/* Settings and context                                                 */
/* ------------------------------------------------------------------ */

static int file_id_of(const char *path, struct file_id *id)
{
	struct stat st;

	memset(id, 0, sizeof(*id));
	if (!path)
		return 0;
	if (stat(path, &st))
		return -errno;
	id->present = true;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	id->size = st.st_size;
	id->mtime = st.st_mtim;
	id->ctime = st.st_ctim;
	return 0;
}

static bool file_id_eq(const struct file_id *a, const struct file_id *b)
{
	return a->present == b->present && a->dev == b->dev && a->ino == b->ino &&
	       a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
	       a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* The name the agent gives a peer: its one subject CN, else its first DNS SAN. */
static bool peer_name(X509 *cert, char *out, size_t len)
{
	X509_NAME *subj = X509_get_subject_name(cert);
	GENERAL_NAMES *sans;
	int i, idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
	bool found = false;

	if (idx >= 0 && X509_NAME_get_index_by_NID(subj, NID_commonName, idx) < 0) {
		ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
		unsigned char *u = NULL;
		int n = cn ? ASN1_STRING_to_UTF8(&u, cn) : -1;

		/* an embedded NUL or an over-long name never matches */
		if (n > 0 && (size_t)n < len && memchr(u, 0, (size_t)n) == NULL) {
			memcpy(out, u, (size_t)n);
			out[n] = 0;
			found = true;
		}
		OPENSSL_free(u);
		if (n > 0)
			return found;
	}
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		const unsigned char *d;
		int n;

		if (g->type != GEN_DNS)
			continue;
		d = ASN1_STRING_get0_data(g->d.dNSName);
		n = ASN1_STRING_length(g->d.dNSName);
		if (n > 0 && (size_t)n < len && memchr(d, 0, (size_t)n) == NULL) {
			memcpy(out, d, (size_t)n);
			out[n] = 0;
			found = true;
		}
		break;
	}
	GENERAL_NAMES_free(sans);
	return found;
}

/* True when name is one of the comma-separated list ("*" anyone, "" nobody). */
static bool name_allowed(const char *list, const char *name)
{
	size_t nl = strlen(name);
	const char *p = list;

	if (!strcmp(list, "*"))
		return true;
	while (p && *p) {
		const char *end = strchr(p, ',');
		size_t l = end ? (size_t)(end - p) : strlen(p);

		if ((l == nl && !memcmp(p, name, nl)) || (l == 1 && *p == '*'))
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}

/* Chain verified by OpenSSL; on the leaf, also the name against the allowed list. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl;
	const struct vop_nbd_tls *t;
	X509 *leaf;
	char name[TLS_NAME_MAX];

	if (!ok || X509_STORE_CTX_get_error_depth(x) != 0)
		return ok;
	ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	t = ssl ? SSL_get_app_data(ssl) : NULL;
	leaf = X509_STORE_CTX_get_current_cert(x);
	if (!t || !t->clients || !strcmp(t->clients, "*"))
		return 1;
	if (leaf && peer_name(leaf, name, sizeof(name)) && name_allowed(t->clients, name))
		return 1;
	X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
	return 0;
}

/* Build a context from the files; ids are taken before loading (a later change reloads). */
static int build_ctx(const struct vop_nbd_tls *t, SSL_CTX **out, struct file_id id[3])
{
	static const unsigned char sid_ctx[] = "vop-nbd";
	SSL_CTX *ctx;
	int i, rc;

	*out = NULL;
	for (i = 0; i < 3; i++) {
		int fd;

		rc = file_id_of(t->path[i], &id[i]);
		if (rc)
			return rc;
		if (!t->path[i])
			continue;
		fd = open(t->path[i], O_RDONLY | O_CLOEXEC); /* errno for a file we may not read */
		if (fd < 0)
			return -errno;
		close(fd);
	}
	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx)
		return -ENOMEM;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
					 SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(ctx, t->path[0]) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, t->path[1], SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		goto inval;
	if (t->path[2]) {
		STACK_OF(X509_NAME) * names;

		if (SSL_CTX_load_verify_locations(ctx, t->path[2], NULL) != 1)
			goto inval;
		names = SSL_load_client_CA_file(t->path[2]);
		if (!names)
			goto inval;
		SSL_CTX_set_client_CA_list(ctx, names);
		/* a client certificate is required; the purpose check (clientAuth) is OpenSSL's
		 * default */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
				   verify_cb);
		SSL_CTX_set_verify_depth(ctx, 8);
	}
	ERR_clear_error();
	*out = ctx;
	return 0;
inval:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return -EINVAL;
}

static char *dup_or_null(const char *s, bool *fail)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*fail = true;
	return d;
}

int vop_nbd_tls_new(const struct vop_nbd_tls_config *cfg, struct vop_nbd_tls **out)
{
	struct vop_nbd_tls *t;
	bool fail = false;
	int rc;

	*out = NULL;
	if (!cfg->cert || !cfg->key || !cfg->cert[0] || !cfg->key[0] || (cfg->ca && !cfg->ca[0]))
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	pthread_mutex_init(&t->lock, NULL);
	t->path[0] = dup_or_null(cfg->cert, &fail);
	t->path[1] = dup_or_null(cfg->key, &fail);
	t->path[2] = dup_or_null(cfg->ca, &fail);
	t->clients = dup_or_null(cfg->clients, &fail);
	rc = fail ? -ENOMEM : build_ctx(t, &t->ctx, t->id);
	if (rc) {
		vop_nbd_tls_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

void vop_nbd_tls_free(struct vop_nbd_tls *t)
{
	int i;

	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	for (i = 0; i < 3; i++)
		free(t->path[i]);
	free(t->clients);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

/* The context to use now (a new reference), rebuilt first if a file changed. */
static SSL_CTX *current_ctx(struct vop_nbd_tls *t)
{
	struct file_id now[3];
	SSL_CTX *ctx;
	bool changed = false;
	int i;

	pthread_mutex_lock(&t->lock);
	for (i = 0; i < 3; i++) {
		if (file_id_of(t->path[i], &now[i]) || !file_id_eq(&now[i], &t->id[i]))
			changed = true;
	}
	if (changed && build_ctx(t, &ctx, now) == 0) {
		SSL_CTX_free(t->ctx);
		t->ctx = ctx;
		memcpy(t->id, now, sizeof(now));
	}
	/* a rebuild that failed (a rotation half done) keeps the previous context and retries next
	 * time */
	ctx = t->ctx;
	SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&t->lock);
	return ctx;
}

/* ------------------------------------------------------------------ */
/* Connections                                                          */
/* ------------------------------------------------------------------ */

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

static void *pump_main(void *arg);

int vop_nbd_tls_accept(struct vop_nbd_tls *t, int fd, struct vop_nbd_tls_conn **out, int *plain)
{
	struct vop_nbd_tls_conn *c;
	SSL_CTX *ctx;
	uint64_t deadline = now_ms() + TLS_HANDSHAKE_MS;
	int sv[2] = { -1, -1 }, rc;

	*out = NULL;
	*plain = -1;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->net = -1;
	c->pump_end = -1;
	ctx = current_ctx(t);
	c->ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (!c->ssl) {
		rc = -ENOMEM;
		goto fail;
	}
	SSL_set_app_data(c->ssl, t); /* for verify_cb; t outlives every handshake */
	rc = set_nonblock(fd);
	if (rc)
		goto fail;
	if (SSL_set_fd(c->ssl, fd) != 1) {
		rc = -ENOMEM;
		goto fail;
	}
	for (;;) {
		int r, e;
		int64_t left;

		ERR_clear_error();
		r = SSL_accept(c->ssl);
		if (r == 1)
			break;
		e = SSL_get_error(c->ssl, r);
		left = (int64_t)(deadline - now_ms());
		if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && left > 0) {
			struct pollfd p = { fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0 };

			if (poll(&p, 1, (int)left) >= 0 || errno == EINTR)
				continue;
		}
		ERR_clear_error();
		rc = -ECONNABORTED;
		goto fail;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		rc = -errno;
		goto fail;
	}
	rc = set_nonblock(sv[1]);
	if (rc)
		goto fail;
	c->net = fd;
	c->pump_end = sv[1];
	if (pthread_create(&c->thread, NULL, pump_main, c)) {
		c->net = -1;
		c->pump_end = -1;
		rc = -EAGAIN;
		goto fail;
	}
	c->running = true;
	*plain = sv[0];
	*out = c;
	return 0;
fail:
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	SSL_free(c->ssl); /* does not close fd */
	free(c);
	return rc;
}

/*
 * The pump: network (TLS records) <-> pump_end (cleartext). Both sockets
 * are non-blocking; it sleeps in poll() on whatever it is waiting for.
 * When the network side ends it delivers what it has and leaves; when the
 * NBD side ends it sends what is left and a close_notify, then leaves;
 * either at most TLS_FLUSH_MS after the end.
 */
static void *pump_main(void *arg)
{
	struct vop_nbd_tls_conn *c = arg;
	uint8_t *in = malloc(PUMP_BUF), *out = malloc(PUMP_BUF);
	size_t in_off = 0, in_len = 0, out_off = 0, out_len = 0;
	short rd_want = POLLIN, wr_want = 0; /* what SSL_read / SSL_write last waited for */
	bool net_end = false;		     /* nothing more comes from the network */
	bool net_dead = false;		     /* nothing more can go to the network */
	bool plain_end = false;		     /* the NBD side closed its end */
	uint64_t deadline = 0;
	sigset_t ss;

	/* a peer that reset the connection makes write() raise SIGPIPE in this thread: EPIPE
	 * instead */
	sigemptyset(&ss);
	sigaddset(&ss, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &ss, NULL);
	if (!in || !out)
		goto done;
	while (!atomic_load(&c->stop)) {
		struct pollfd p[2];
		bool progress = false;
		int r;

		/* network -> plain: decrypt while there is room (made when empty or full) */
		if (in_off > 0 && (in_off == in_len || in_len == PUMP_BUF)) {
			memmove(in, in + in_off, in_len - in_off);
			in_len -= in_off;
			in_off = 0;
		}
		if (!net_end && in_len < PUMP_BUF) {
			ERR_clear_error();
			r = SSL_read(c->ssl, in + in_len, (int)(PUMP_BUF - in_len));
			if (r > 0) {
				in_len += (size_t)r;
				progress = true;
			} else {
				switch (SSL_get_error(c->ssl, r)) {
				case SSL_ERROR_WANT_READ:
					rd_want = POLLIN;
					break;
				case SSL_ERROR_WANT_WRITE:
					rd_want = POLLOUT;
					break;
				case SSL_ERROR_ZERO_RETURN: /* close_notify */
					net_end = true;
					progress = true;
					break;
				default: /* reset, EOF without close_notify, bad record */
					net_end = net_dead = true;
					progress = true;
					break;
				}
			}
		}
		if (in_off < in_len && !plain_end) {
			ssize_t w = send(c->pump_end, in + in_off, in_len - in_off,
					 MSG_NOSIGNAL | MSG_DONTWAIT);

			if (w > 0) {
				in_off += (size_t)w;
				progress = true;
			} else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
				   errno != EINTR) {
				plain_end = true; /* the NBD side is gone: nothing to deliver to */
				progress = true;
			}
		}
		/* plain -> network: take a batch only when the last one is sent (SSL_write retries
		 * need it) */
		if (!plain_end && !net_dead && out_off == out_len) {
			ssize_t n = recv(c->pump_end, out, PUMP_BUF, MSG_DONTWAIT);

			if (n > 0) {
				out_off = 0;
				out_len = (size_t)n;
				progress = true;
			} else if (n == 0 ||
				   (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
				plain_end = true;
				progress = true;
			}
		}
		if (out_off < out_len && !net_dead) {
			ERR_clear_error();
			r = SSL_write(c->ssl, out + out_off, (int)(out_len - out_off));
			if (r > 0) {
				out_off += (size_t)r;
				progress = true;
			} else {
				switch (SSL_get_error(c->ssl, r)) {
				case SSL_ERROR_WANT_WRITE:
					wr_want = POLLOUT;
					break;
				case SSL_ERROR_WANT_READ:
					wr_want = POLLIN;
					break;
				default:
					net_end = net_dead = true;
					progress = true;
					break;
				}
			}
		}
		/* endings */
		if ((net_end || plain_end) && deadline == 0)
			deadline = now_ms() + TLS_FLUSH_MS;
		if (net_end && (in_off == in_len || plain_end))
			break; /* the client is gone and has been heard out */
		if (plain_end && (out_off == out_len || net_dead)) {
			if (!net_dead) {
				ERR_clear_error();
				SSL_shutdown(c->ssl); /* close_notify, best effort, not waiting for
							 the reply */
			}
			break;
		}
		if (progress)
			continue;
		if (deadline && now_ms() >= deadline)
			break;
		/* nothing moved: sleep on what each direction waits for */
		p[0].fd = net_dead ? -1 : c->net;
		p[0].events = 0;
		if (!net_end && in_len < PUMP_BUF)
			p[0].events |= rd_want;
		if (out_off < out_len)
			p[0].events |= wr_want;
		p[0].revents = 0;
		p[1].fd = plain_end ? -1 : c->pump_end;
		p[1].events = (short)((in_off < in_len ? POLLOUT : 0) |
				      (out_off == out_len && !net_dead ? POLLIN : 0));
		p[1].revents = 0;
		if (deadline) {
			int64_t left = (int64_t)(deadline - now_ms());

			r = poll(p, 2, left > 0 ? (int)left + 1 : 0);
		} else {
			r = poll(p, 2, -1);
		}
		if (r < 0 && errno != EINTR)
			break;
		if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			net_end = net_dead =
				true; /* reset, or shut down by vop_nbd_tls_conn_shutdown */
		if (p[1].revents & (POLLERR | POLLNVAL))
			plain_end = true;
	}
done:
	/* the NBD side sees EOF (reader) and EPIPE (writer); the client sees the TCP close */
	shutdown(c->pump_end, SHUT_RDWR);
	shutdown(c->net, SHUT_RDWR);
	free(in);
	free(out);
	return NULL;
}

void vop_nbd_tls_conn_shutdown(struct vop_nbd_tls_conn *c)
{
	if (!c)
		return;
	atomic_store_explicit(&c->stop, true, memory_order_release);
	shutdown(c->net, SHUT_RDWR); /* wakes the pump's poll (POLLHUP) */
	shutdown(c->pump_end, SHUT_RDWR);
}

void vop_nbd_tls_conn_free(struct vop_nbd_tls_conn *c)
{
	if (!c)
		return;
	if (c->running)
		pthread_join(c->thread, NULL);
	SSL_free(c->ssl);
	if (c->net >= 0)
		close(c->net);
	if (c->pump_end >= 0)
		close(c->pump_end);
	free(c);
}
