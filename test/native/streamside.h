/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One side of a stream link for tests: a private window (a memfd only this
 * process maps), the link side of the real backend, the proxy link side and
 * the bridge on a socket. Sockets: socketpair, Unix path, TCP loopback.
 */
#ifndef VOP_TEST_STREAMSIDE_H
#define VOP_TEST_STREAMSIDE_H

#include "helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "vop/stream.h"

#define TS_MAX_CHAIN 20480u /* 16 KiB messages plus room (dev-stream-pipe) */

struct ts_side {
	struct vop_window *wa, *wb; /* side 0 (creator), side 1 */
	struct vop_link *real, *proxy;
	struct vop_stream *s;
	struct t_evlog ev_real, ev_proxy;
	bool device;
};

/*
 * Open one side: a byte pipe dev_id published in a private window, the real
 * pipe backend on one side, the bridge's proxy on the other. The device
 * side's pools hold a TS_MAX_CHAIN slot per head.
 */
static inline void ts_open_tls(struct ts_side *t, bool device, int fd, struct vop_stls *tls,
			       const char *secret, uint32_t dev_id, uint16_t qsize, uint32_t msg,
			       uint32_t handshake_ms)
{
	struct vop_xport *x0, *x1;
	struct vop_link_config c;
	struct vop_dev_spec spec;
	struct vop_stream_config sc;
	struct vop_pipe_config pc = device ? t_pipe_cfg(msg, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1)
					   : t_pipe_cfg(msg, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	unsigned i;

	memset(t, 0, sizeof(*t));
	t->device = device;
	CHECK_EQ(vop_shm_create(NULL, 8u << 20, &x0), 0);
	CHECK_EQ(vop_window_create(x0, NULL, &t->wa), 0);
	CHECK_EQ(vop_shm_open_fd(x0->fd, &x1), 0);
	CHECK_EQ(vop_window_attach(x1, &t->wb), 0);
	/* device_side 1: the real device backend (device side) or the proxy (driver side) is on wb. */
	vop_pipe_spec(&spec, dev_id, 1, qsize, msg,
		      (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	if (device)
		for (i = 0; i < spec.num_queues; i++)
			spec.pool_size[i] = vop_stream_pool_size(qsize, TS_MAX_CHAIN);
	CHECK(vop_devtab_publish(t->wa, &spec) >= 0);
	t_evlog_init(&t->ev_real);
	t_evlog_init(&t->ev_proxy);
	memset(&c, 0, sizeof(c));
	c.spin_ns = 20000;
	c.on_event = t_on_event;
	c.ctx = device ? &t->ev_proxy : &t->ev_real;
	CHECK_EQ(vop_link_create(t->wa, &c, device ? &t->proxy : &t->real), 0);
	c.ctx = device ? &t->ev_real : &t->ev_proxy;
	CHECK_EQ(vop_link_create(t->wb, &c, device ? &t->real : &t->proxy), 0);
	memset(&sc, 0, sizeof(sc));
	sc.fd = fd;
	sc.device_side = device;
	sc.secret = (const uint8_t *)secret;
	sc.secret_len = secret ? (uint32_t)strlen(secret) : 0;
	sc.allow_plain = secret == NULL && tls == NULL;
	sc.tls = tls;
	sc.max_chain = TS_MAX_CHAIN;
	sc.handshake_ms = handshake_ms;
	CHECK_EQ(vop_stream_create(t->proxy, &sc, &t->s), 0);
	CHECK_EQ(vop_stream_add(t->s, dev_id), 0);
	CHECK_EQ(vop_link_attach_pipe(t->real, dev_id, device ? VOP_ROLE_DEVICE : VOP_ROLE_DRIVER, &pc),
		 0);
	CHECK_EQ(vop_link_start(t->real), 0);
	CHECK_EQ(vop_link_start(t->proxy), 0);
	CHECK_EQ(vop_stream_start(t->s), 0);
}

/* A side without TLS (HMAC with secret, or plaintext when secret is NULL). */
static inline void ts_open(struct ts_side *t, bool device, int fd, const char *secret,
			   uint32_t dev_id, uint16_t qsize, uint32_t msg, uint32_t handshake_ms)
{
	ts_open_tls(t, device, fd, NULL, secret, dev_id, qsize, msg, handshake_ms);
}

static inline void ts_close(struct ts_side *t)
{
	vop_link_stop(t->proxy);
	vop_stream_destroy(t->s);
	vop_link_destroy(t->proxy);
	vop_link_destroy(t->real);
	vop_window_close(t->wb);
	vop_window_close(t->wa);
	pthread_mutex_destroy(&t->ev_real.mu);
	pthread_mutex_destroy(&t->ev_proxy.mu);
}

static inline uint32_t ts_state(struct ts_side *t, char *reason, size_t n)
{
	struct vop_stream_status st;

	vop_stream_status(t->s, &st);
	if (reason)
		snprintf(reason, n, "%s", st.reason);
	return st.state;
}

/* A connected pair of stream sockets: kind 0 socketpair, 1 Unix path, 2 TCP loopback. */
static inline void ts_connect(int kind, int fds[2])
{
	int l, one = 1;

	if (kind == 0) {
		CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
		return;
	}
	if (kind == 1) {
		struct sockaddr_un a;

		memset(&a, 0, sizeof(a));
		a.sun_family = AF_UNIX;
		t_path(a.sun_path, sizeof(a.sun_path), "stream-sock");
		l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(l >= 0);
		CHECK_EQ(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
		CHECK_EQ(listen(l, 1), 0);
		fds[1] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK_EQ(connect(fds[1], (struct sockaddr *)&a, sizeof(a)), 0);
		fds[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		CHECK(fds[0] >= 0);
		unlink(a.sun_path);
	} else {
		struct sockaddr_in a;
		socklen_t al = sizeof(a);

		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK(l >= 0);
		CHECK_EQ(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
		CHECK_EQ(getsockname(l, (struct sockaddr *)&a, &al), 0);
		CHECK_EQ(listen(l, 1), 0);
		fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		CHECK_EQ(connect(fds[1], (struct sockaddr *)&a, sizeof(a)), 0);
		fds[0] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		CHECK(fds[0] >= 0);
		setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	close(l);
}

#endif /* VOP_TEST_STREAMSIDE_H */
