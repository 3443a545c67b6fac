/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stream connections (vop/stream.h, docs/stream-protocol.md "Reconnects"):
 * one thread per link that listens (device side) or dials (driver side) and
 * runs one bridge per connection, resetting the devices between
 * connections. The private window, its backends and both link workers
 * outlive connections; only the bridge and the socket are per connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include <openssl/crypto.h>

#include "vop/path.h"
#include "vop/stream.h"
#include "vop/stream_tls.h"

#define MAX_DEVS 32u

struct vop_sconn {
	struct vop_link *proxy;
	struct vop_sconn_config cfg;
	char address[128];
	char unix_root[VOP_PATH_MAX]; /* "" = none (trusted path) */
	struct vop_path_sock usock;   /* the device side's bound Unix socket */
	uint8_t secret[VOP_STREAM_MAX_SECRET];
	uint32_t dev_ids[MAX_DEVS];
	struct sockaddr_storage ss;
	socklen_t sslen;
	bool tcp;
	/* TLS: the files and the expected peer identity (copied), or none */
	bool has_tls;
	char *tls_str[4];
	struct vop_stls_config tls;
	int lfd;
	pthread_t thr;

	pthread_mutex_t mu; /* protects everything below */
	bool stop;
	struct vop_stream *cur; /* the current connection's bridge, or NULL */
	struct vop_sconn_status st;
	uint64_t done_tx, done_rx; /* bytes of connections that ended */
};

static int parse_addr(struct vop_sconn *c, const char *s)
{
	memset(&c->ss, 0, sizeof(c->ss));
	if (!strncmp(s, "unix:", 5)) {
		struct sockaddr_un *u = (struct sockaddr_un *)&c->ss;

		if (strlen(s + 5) == 0 || strlen(s + 5) >= sizeof(u->sun_path))
			return -EINVAL;
		u->sun_family = AF_UNIX;
		strcpy(u->sun_path, s + 5);
		c->sslen = sizeof(*u);
		return 0;
	}
	if (!strncmp(s, "tcp:", 4)) {
		struct sockaddr_in *in = (struct sockaddr_in *)&c->ss;
		char host[64];
		const char *colon = strrchr(s + 4, ':');
		char *end;
		long port;

		if (!colon || (size_t)(colon - (s + 4)) >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 4, (size_t)(colon - (s + 4)));
		host[colon - (s + 4)] = 0;
		port = strtol(colon + 1, &end, 10);
		if (*end || port <= 0 || port > 65535 || inet_pton(AF_INET, host, &in->sin_addr) != 1)
			return -EINVAL;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		c->sslen = sizeof(*in);
		c->tcp = true;
		return 0;
	}
	if (!strncmp(s, "vsock:", 6)) {
		struct sockaddr_vm *vm = (struct sockaddr_vm *)&c->ss;
		const char *colon = strchr(s + 6, ':');
		char *end;
		unsigned long cid, port;

		if (!colon || colon == s + 6)
			return -EINVAL;
		if ((size_t)(colon - (s + 6)) == 3 && !strncmp(s + 6, "any", 3)) {
			cid = VMADDR_CID_ANY;
		} else {
			errno = 0;
			cid = strtoul(s + 6, &end, 10);
			if (end != colon || errno || cid > 0xffffffffu || s[6] == '-' || s[6] == '+')
				return -EINVAL;
		}
		errno = 0;
		port = strtoul(colon + 1, &end, 10);
		if (*end || errno || colon[1] == 0 || colon[1] == '-' || colon[1] == '+' || port == 0 ||
		    port >= 0xffffffffu)
			return -EINVAL;
		vm->svm_family = AF_VSOCK;
		vm->svm_cid = (unsigned)cid;
		vm->svm_port = (unsigned)port;
		c->sslen = sizeof(*vm);
		return 0;
	}
	return -EINVAL;
}

static void tune(int fd, bool tcp)
{
	int one = 1, idle = 5, intvl = 2, cnt = 3;

	if (!tcp)
		return;
	/* Latency matters (a ping, a console byte): no Nagle. Keepalive finds a dead path. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static bool stopping(struct vop_sconn *c)
{
	bool s;

	pthread_mutex_lock(&c->mu);
	s = c->stop;
	pthread_mutex_unlock(&c->mu);
	return s;
}

static void set_state(struct vop_sconn *c, uint32_t state)
{
	pthread_mutex_lock(&c->mu);
	c->st.state = state;
	pthread_mutex_unlock(&c->mu);
}

/* Sleep ms unless stopped. */
static void nap(struct vop_sconn *c, unsigned ms)
{
	while (ms && !stopping(c)) {
		unsigned k = ms < 50 ? ms : 50;

		usleep(k * 1000u);
		ms -= k;
	}
}

/* connect with a 3 s bound (a dead path would hold a blocking connect for minutes). */
static int dial(struct vop_sconn *c)
{
	struct pollfd pf;
	int fd = socket(c->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), err = 0;
	socklen_t el = sizeof(err);

	if (fd < 0)
		return -1;
	if (c->ss.ss_family == AF_UNIX) {
		struct vop_path_sock dir;
		struct sockaddr_un a;
		socklen_t al;
		int rc;

		/* resolved beneath the root at every dial: the directory may be replaced meanwhile */
		rc = vop_path_peer_unix(c->unix_root[0] ? c->unix_root : NULL,
					((struct sockaddr_un *)&c->ss)->sun_path, &dir, &a, &al);
		if (rc == 0 && connect(fd, (const struct sockaddr *)&a, al) == 0) {
			vop_path_unlink_socket(&dir); /* a peer's: only closes the directory */
			return fd;
		}
		vop_path_unlink_socket(&dir);
		close(fd);
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)&c->ss, c->sslen) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	pf.fd = fd;
	pf.events = POLLOUT;
	if (poll(&pf, 1, 3000) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
		close(fd);
		return -1;
	}
	return fd;
}

static void peer_name(int fd, char *out, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);

	out[0] = 0;
	if (getpeername(fd, (struct sockaddr *)&ss, &l) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
		char a[INET_ADDRSTRLEN];

		if (inet_ntop(AF_INET, &in->sin_addr, a, sizeof(a)))
			snprintf(out, n, "%s:%u", a, ntohs(in->sin_port));
	} else if (ss.ss_family == AF_UNIX) {
		snprintf(out, n, "unix");
	} else if (ss.ss_family == AF_VSOCK) {
		const struct sockaddr_vm *vm = (const struct sockaddr_vm *)&ss;

		snprintf(out, n, "vsock:%u:%u", vm->svm_cid, vm->svm_port);
	}
}

/* Run one connection to its end. */
static void serve(struct vop_sconn *c, int fd)
{
	struct vop_stream_config sc;
	struct vop_stream_status st;
	struct vop_stream *s;
	char peer[80];
	bool counted = false;
	unsigned i;
	int rc;

	tune(fd, c->tcp);
	peer_name(fd, peer, sizeof(peer));
	memset(&sc, 0, sizeof(sc));
	if (c->has_tls) {
		/* TLS first, on this thread: no virtio message before the peer's certificate is checked. */
		char why[VOP_STREAM_REASON_MAX + 1];

		pthread_mutex_lock(&c->mu);
		c->st.state = VOP_SCONN_HANDSHAKE;
		snprintf(c->st.peer, sizeof(c->st.peer), "%s", peer);
		pthread_mutex_unlock(&c->mu);
		rc = vop_stls_handshake(&c->tls, fd, c->cfg.device_side,
					c->cfg.handshake_ms ? c->cfg.handshake_ms : 5000, &sc.tls, why,
					sizeof(why));
		if (rc) {
			close(fd);
			pthread_mutex_lock(&c->mu);
			c->st.failures++;
			c->st.peer[0] = 0;
			snprintf(c->st.last_reason, sizeof(c->st.last_reason), "%s", why);
			pthread_mutex_unlock(&c->mu);
			return;
		}
	}
	pthread_mutex_lock(&c->mu);
	snprintf(c->st.security, sizeof(c->st.security), "%s%s%s",
		 sc.tls ? vop_stls_describe(sc.tls) : "", sc.tls && c->cfg.secret_len ? " + " : "",
		 c->cfg.secret_len ? "hmac" : sc.tls ? "" : "none");
	pthread_mutex_unlock(&c->mu);
	sc.fd = fd;
	sc.device_side = c->cfg.device_side;
	sc.secret = c->cfg.secret_len ? c->secret : NULL;
	sc.secret_len = c->cfg.secret_len;
	sc.allow_plain = c->cfg.allow_plain;
	sc.max_chain = c->cfg.max_chain;
	sc.handshake_ms = c->cfg.handshake_ms;
	sc.idle_ms = c->cfg.idle_ms;
	rc = vop_stream_create(c->proxy, &sc, &s);
	for (i = 0; rc == 0 && i < c->cfg.ndevs; i++) {
		rc = vop_stream_add(s, c->dev_ids[i]);
	}
	if (rc == 0)
		rc = vop_stream_start(s);
	if (rc) {
		pthread_mutex_lock(&c->mu);
		c->st.failures++;
		snprintf(c->st.last_reason, sizeof(c->st.last_reason), "setting up the bridge: %s",
			 strerror(-rc));
		pthread_mutex_unlock(&c->mu);
		vop_stream_destroy(s);
		return;
	}
	pthread_mutex_lock(&c->mu);
	c->cur = s;
	c->st.state = VOP_SCONN_HANDSHAKE;
	snprintf(c->st.peer, sizeof(c->st.peer), "%s", peer);
	pthread_mutex_unlock(&c->mu);
	for (;;) {
		vop_stream_status(s, &st);
		pthread_mutex_lock(&c->mu);
		if (st.state == VOP_STREAM_READY && !counted) {
			counted = true;
			c->st.connections++;
			c->st.state = VOP_SCONN_READY;
			/*
			 * A fresh connection starts every device afresh (the link reset of a reconnect),
			 * once the handshake brought the device's config space over: the driver reads it
			 * when it starts.
			 */
			if (!c->cfg.device_side && c->cfg.real) {
				pthread_mutex_unlock(&c->mu);
				for (i = 0; i < c->cfg.ndevs; i++)
					vop_link_reset_device(c->cfg.real, c->dev_ids[i]);
				pthread_mutex_lock(&c->mu);
			}
		}
		c->st.rtt_ns = st.rtt_ns;
		c->st.bytes_tx = c->done_tx + st.bytes_tx;
		c->st.bytes_rx = c->done_rx + st.bytes_rx;
		pthread_mutex_unlock(&c->mu);
		if (st.state == VOP_STREAM_FAILED || stopping(c))
			break;
		usleep(20000);
	}
	pthread_mutex_lock(&c->mu);
	c->cur = NULL;
	c->done_tx += st.bytes_tx;
	c->done_rx += st.bytes_rx;
	c->st.bytes_tx = c->done_tx;
	c->st.bytes_rx = c->done_rx;
	c->st.rtt_ns = 0;
	c->st.peer[0] = 0;
	c->st.security[0] = 0;
	if (st.state == VOP_STREAM_FAILED) {
		c->st.failures++;
		snprintf(c->st.last_reason, sizeof(c->st.last_reason), "%s", st.reason);
	}
	pthread_mutex_unlock(&c->mu);
	vop_stream_destroy(s);
}

static void *conn_main(void *arg)
{
	struct vop_sconn *c = arg;
	unsigned backoff = 100;

	while (!stopping(c)) {
		int fd;

		if (c->cfg.device_side) {
			struct pollfd pf = { .fd = c->lfd, .events = POLLIN };

			set_state(c, VOP_SCONN_LISTENING);
			if (poll(&pf, 1, 200) <= 0)
				continue;
			fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			serve(c, fd);
		} else {
			uint64_t ready_before;

			set_state(c, VOP_SCONN_DIALING);
			fd = dial(c);
			if (fd >= 0) {
				pthread_mutex_lock(&c->mu);
				ready_before = c->st.connections;
				pthread_mutex_unlock(&c->mu);
				serve(c, fd);
				pthread_mutex_lock(&c->mu);
				if (c->st.connections != ready_before)
					backoff = 100; /* it worked: start over */
				pthread_mutex_unlock(&c->mu);
			}
			if (!stopping(c)) {
				uint32_t r = 0;

				/* Jittered: driver sides that lost the same peer do not dial in step. */
				if (getrandom(&r, sizeof(r), 0) != sizeof(r))
					r = 0;
				nap(c, backoff / 2 + r % (backoff + 1));
				backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
			}
		}
	}
	set_state(c, VOP_SCONN_STOPPED);
	return NULL;
}

int vop_sconn_start(struct vop_link *proxy, const struct vop_sconn_config *cfg, struct vop_sconn **out)
{
	struct vop_sconn *c;
	unsigned i;
	int rc, one = 1;

	*out = NULL;
	if (!proxy || !cfg->address || strlen(cfg->address) >= sizeof(c->address) ||
	    (cfg->unix_root && strlen(cfg->unix_root) >= VOP_PATH_MAX) ||
	    cfg->ndevs > MAX_DEVS || cfg->secret_len > VOP_STREAM_MAX_SECRET ||
	    (cfg->secret_len == 0 && !cfg->allow_plain && !cfg->tls) ||
	    (cfg->tls && (!cfg->tls->ca || !cfg->tls->cert || !cfg->tls->key || !cfg->tls->peer_id ||
			  !cfg->tls->peer_id[0] || strlen(cfg->tls->peer_id) > VOP_STLS_ID_MAX)))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->proxy = proxy;
	c->cfg = *cfg;
	c->lfd = -1;
	vop_path_sock_init(&c->usock);
	snprintf(c->address, sizeof(c->address), "%s", cfg->address);
	c->cfg.address = c->address;
	if (cfg->unix_root)
		snprintf(c->unix_root, sizeof(c->unix_root), "%s", cfg->unix_root);
	c->cfg.unix_root = NULL;
	if (cfg->secret_len)
		memcpy(c->secret, cfg->secret, cfg->secret_len);
	c->cfg.secret = NULL;
	memcpy(c->dev_ids, cfg->dev_ids, sizeof(uint32_t) * cfg->ndevs);
	c->cfg.dev_ids = NULL;
	pthread_mutex_init(&c->mu, NULL);
	if (cfg->tls) {
		const char *src[4] = { cfg->tls->ca, cfg->tls->cert, cfg->tls->key, cfg->tls->peer_id };
		unsigned k;

		c->has_tls = true;
		for (k = 0; k < 4; k++) {
			c->tls_str[k] = strdup(src[k]);
			if (!c->tls_str[k]) {
				rc = -ENOMEM;
				goto fail;
			}
		}
		c->tls.ca = c->tls_str[0];
		c->tls.cert = c->tls_str[1];
		c->tls.key = c->tls_str[2];
		c->tls.peer_id = c->tls_str[3];
	}
	c->cfg.tls = NULL;
	rc = parse_addr(c, c->address);
	if (rc)
		goto fail;
	if (cfg->device_side) {
		c->lfd = socket(c->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->lfd < 0) {
			rc = -errno;
			goto fail;
		}
		if (c->tcp)
			setsockopt(c->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (c->ss.ss_family == AF_UNIX) {
			/* beneath the root; replaces only a stale socket of an earlier life */
			rc = vop_path_bind_unix(c->lfd, c->unix_root[0] ? c->unix_root : NULL,
						((struct sockaddr_un *)&c->ss)->sun_path, 0600, &c->usock);
			if (rc)
				goto fail;
		} else if (bind(c->lfd, (struct sockaddr *)&c->ss, c->sslen) < 0) {
			rc = -errno;
			goto fail;
		}
		if (listen(c->lfd, 4) < 0) {
			rc = -errno;
			goto fail;
		}
		c->st.state = VOP_SCONN_LISTENING;
	} else {
		c->st.state = VOP_SCONN_DIALING;
	}
	rc = -pthread_create(&c->thr, NULL, conn_main, c);
	if (rc)
		goto fail;
	*out = c;
	return 0;
fail:
	if (c->lfd >= 0)
		close(c->lfd);
	vop_path_unlink_socket(&c->usock);
	for (i = 0; i < 4; i++)
		free(c->tls_str[i]);
	OPENSSL_cleanse(c->secret, sizeof(c->secret));
	pthread_mutex_destroy(&c->mu);
	free(c);
	return rc;
}

void vop_sconn_status(struct vop_sconn *c, struct vop_sconn_status *out)
{
	pthread_mutex_lock(&c->mu);
	*out = c->st;
	pthread_mutex_unlock(&c->mu);
}

void vop_sconn_stop(struct vop_sconn *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_mutex_unlock(&c->mu);
	pthread_join(c->thr, NULL);
	if (c->lfd >= 0)
		close(c->lfd);
	vop_path_unlink_socket(&c->usock); /* only if the name is still our socket */
	for (unsigned i = 0; i < 4; i++)
		free(c->tls_str[i]);
	OPENSSL_cleanse(c->secret, sizeof(c->secret));
	pthread_mutex_destroy(&c->mu);
	free(c);
}
