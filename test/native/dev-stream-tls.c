/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS 1.3 on the stream transport (vop/stream_tls.h): certificates made
 * with the openssl CLI at test time (a CA, a second CA, agent certificates
 * with the agent's name as a DNS subjectAltName, an expired one, one with
 * the name only in its CN).
 *  - The byte pipe moves verified messages both ways through TLS (alone,
 *    and TLS with the HMAC secret on top), many chains per frame.
 *  - Each wrong certificate is refused by the handshake with its reason on
 *    the refusing end, and the refused end learns why: a certificate of
 *    another CA, an expired one, one for another agent, one naming the
 *    agent only in its CN, a plaintext peer, a TLS 1.2 peer.
 *  - A key file readable by others is refused, naming its mode.
 *  - vsock addresses: malformed ones are refused (-EINVAL).
 */
#include "streamside.h"

#include <openssl/ssl.h>
#include <sys/stat.h>

#include "vop/stream_tls.h"

#define DEV 5u

static char dir[200];

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (system(cmd) != 0) {
		fprintf(stderr, "failed: %s\n", cmd);
		exit(T_FAIL);
	}
}

/* name: file stem; ca: ca or ca2; san: DNS SAN ("" none); cn; days (-1: expired). */
static void cert(const char *name, const char *ca, const char *san, const char *cn, int days)
{
	sh("cd %s && printf '[v3]\\nbasicConstraints=CA:FALSE\\nkeyUsage=digitalSignature\\n"
	   "extendedKeyUsage=serverAuth,clientAuth\\n%s%s\\n' > %s.cnf && "
	   "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key -out %s.csr "
	   "-subj /CN=%s 2>/dev/null && openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key "
	   "-CAcreateserial -days %d -extfile %s.cnf -extensions v3 -out %s.pem 2>/dev/null && chmod 600 %s.key",
	   dir, san[0] ? "subjectAltName=DNS:" : "", san, name, name, name, cn, name, ca, ca, days, name,
	   name, name);
}

static void make_certs(void)
{
	snprintf(dir, sizeof(dir), "%s/vop-stls-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir) != NULL);
	sh("cd %s && for c in ca ca2; do openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	   "-nodes -keyout $c.key -out $c.pem -days 2 -subj /CN=vop-test-$c 2>/dev/null || exit 1; done",
	   dir);
	cert("host-a", "ca", "host-a", "host-a", 1);
	cert("card-b", "ca", "card-b", "card-b", 1);
	cert("other-ca", "ca2", "card-b", "card-b", 1);
	cert("expired", "ca", "card-b", "card-b", -1);
	cert("cn-only", "ca", "", "card-b", 1);
}

struct files {
	char ca[256], cert[256], key[256];
	struct vop_stls_config c;
};

static void files(struct files *f, const char *ca, const char *me, const char *peer)
{
	snprintf(f->ca, sizeof(f->ca), "%s/%s.pem", dir, ca);
	snprintf(f->cert, sizeof(f->cert), "%s/%s.pem", dir, me);
	snprintf(f->key, sizeof(f->key), "%s/%s.key", dir, me);
	f->c.ca = f->ca;
	f->c.cert = f->cert;
	f->c.key = f->key;
	f->c.peer_id = peer;
}

struct hs {
	const struct vop_stls_config *cfg;
	int fd;
	bool server;
	struct vop_stls *out;
	int rc;
	char why[512];
};

static void *hs_main(void *arg)
{
	struct hs *h = arg;

	h->rc = vop_stls_handshake(h->cfg, h->fd, h->server, 5000, &h->out, h->why, sizeof(h->why));
	return NULL;
}

/* Both handshakes over a fresh socketpair at once: dev is the server, drv the client. */
static void handshake(const struct vop_stls_config *dev_cfg, const struct vop_stls_config *drv_cfg,
		      struct hs *dev, struct hs *drv)
{
	pthread_t t0, t1;
	int fds[2];

	ts_connect(0, fds);
	memset(dev, 0, sizeof(*dev));
	memset(drv, 0, sizeof(*drv));
	dev->cfg = dev_cfg;
	dev->fd = fds[0];
	dev->server = true;
	drv->cfg = drv_cfg;
	drv->fd = fds[1];
	CHECK_EQ(pthread_create(&t0, NULL, hs_main, dev), 0);
	CHECK_EQ(pthread_create(&t1, NULL, hs_main, drv), 0);
	pthread_join(t0, NULL);
	pthread_join(t1, NULL);
}

static void carry(const char *secret)
{
	struct files fa, fb;
	struct hs a, b;
	struct ts_side drv, dev;
	struct vop_pipe_stats s0, s1;
	struct vop_stream_status st0, st1;
	uint64_t t0, t1, rx0;

	files(&fa, "ca", "host-a", "card-b");
	files(&fb, "ca", "card-b", "host-a");
	handshake(&fa.c, &fb.c, &a, &b);
	if (a.rc || b.rc)
		fprintf(stderr, "handshake: device %d %s / driver %d %s\n", a.rc, a.why, b.rc, b.why);
	CHECK_EQ(a.rc, 0);
	CHECK_EQ(b.rc, 0);
	printf("tls: %s\n", vop_stls_describe(a.out));
	CHECK(strstr(vop_stls_describe(a.out), "TLSv1.3") != NULL);
	ts_open_tls(&dev, true, a.fd, a.out, secret, DEV, 64, 4000, 5000);
	ts_open_tls(&drv, false, b.fd, b.out, secret, DEV, 64, 4000, 5000);
	CHECK(T_WAIT_UNTIL(t_rx(drv.real, DEV) > 2000 && t_rx(dev.real, DEV) > 2000, 60000));
	t0 = t_now_ms();
	rx0 = t_rx(dev.real, DEV);
	CHECK(T_WAIT_UNTIL(t_rx(dev.real, DEV) > rx0 + 20000, 60000));
	t1 = t_now_ms();
	CHECK_EQ(vop_link_pipe_stats(drv.real, DEV, &s0), 0);
	CHECK_EQ(vop_link_pipe_stats(dev.real, DEV, &s1), 0);
	CHECK_EQ(s0.bad_msgs, 0);
	CHECK_EQ(s1.bad_msgs, 0);
	vop_stream_status(drv.s, &st0);
	vop_stream_status(dev.s, &st1);
	CHECK_EQ(st0.state, VOP_STREAM_READY);
	CHECK_EQ(st1.state, VOP_STREAM_READY);
	CHECK(st0.frames_tx * 4 < st0.chains_tx);
	{
		/* Records batch: many 16 KiB records per send() and per recv(), not one per message. */
		struct vop_stls_stats ta, tb;

		vop_stls_stats(b.out, &tb); /* the driver side sends the chains */
		vop_stls_stats(a.out, &ta);
		printf("tls syscalls: driver %llu sends for %llu bytes (%llu per send), device %llu recvs for %llu bytes (%llu per recv)\n",
		       (unsigned long long)tb.sends, (unsigned long long)tb.wire_out,
		       (unsigned long long)(tb.wire_out / (tb.sends ? tb.sends : 1)), (unsigned long long)ta.recvs,
		       (unsigned long long)ta.wire_in, (unsigned long long)(ta.wire_in / (ta.recvs ? ta.recvs : 1)));
		CHECK(tb.sends > 0 && ta.recvs > 0);
		CHECK(tb.wire_out / tb.sends > 16384u);
		CHECK(ta.wire_in / ta.recvs > 16384u);
	}
	printf("tls%s: %llu chains in %llu frames; 20000 messages of 4000 bytes one way in %.0f ms (ASan build)\n",
	       secret ? " + hmac" : "", (unsigned long long)st0.chains_tx, (unsigned long long)st0.frames_tx,
	       (double)(t1 - t0));
	/* The device side goes away (no close_notify): the driver side says the peer closed. */
	{
		char r0[256];

		ts_close(&dev);
		CHECK(T_WAIT_UNTIL(ts_state(&drv, NULL, 0) == VOP_STREAM_FAILED, 10000));
		ts_state(&drv, r0, sizeof(r0));
		printf("device side gone: driver side \"%s\"\n", r0);
		/* EOF, or the reset our next send ran into: never a TLS error */
		CHECK(strstr(r0, "peer closed the connection") || strstr(r0, "Broken pipe") ||
		      strstr(r0, "Connection reset"));
		CHECK(strstr(r0, "TLS") == NULL);
	}
	ts_close(&drv);
}

/* The refused end names why; the other end learns it (at once, or at its first read). */
static void refused(const char *dev_ca, const char *dev_cert, const char *dev_peer, const char *drv_ca,
		    const char *drv_cert, const char *drv_peer, bool dev_refuses, const char *why,
		    const char *other_why)
{
	struct files fa, fb;
	struct hs a, b;
	struct hs *r, *o;

	files(&fa, dev_ca, dev_cert, dev_peer);
	files(&fb, drv_ca, drv_cert, drv_peer);
	handshake(&fa.c, &fb.c, &a, &b);
	r = dev_refuses ? &a : &b;
	o = dev_refuses ? &b : &a;
	CHECK(r->rc != 0);
	if (o->rc == 0) {
		/* TLS 1.3: the client finishes before the server checked its certificate. */
		uint8_t buf[64];
		ssize_t k;
		uint64_t end = t_now_ms() + 5000;

		while ((k = vop_stls_recv(o->out, buf, sizeof(buf))) == -EAGAIN && t_now_ms() < end)
			usleep(1000);
		CHECK(k < 0);
		snprintf(o->why, sizeof(o->why), "%s", vop_stls_error(o->out));
		vop_stls_free(o->out);
	}
	printf("%-40s -> %s / other end: %s\n", why, r->why, o->why);
	if (!strstr(r->why, why) || !strstr(o->why, other_why)) {
		fprintf(stderr, "expected \"%s\" and \"%s\"\n", why, other_why);
		CHECK(0);
	}
	close(a.fd);
	close(b.fd);
}

static void plaintext_peer(void)
{
	static const uint8_t hello[8] = { 52, 0, 0, 0, 1, 0, 0, 0 };
	struct files fa;
	struct hs a;
	pthread_t t;
	int fds[2];

	files(&fa, "ca", "host-a", "card-b");
	ts_connect(0, fds);
	memset(&a, 0, sizeof(a));
	a.cfg = &fa.c;
	a.fd = fds[0];
	a.server = true;
	CHECK_EQ(pthread_create(&t, NULL, hs_main, &a), 0);
	CHECK_EQ(write(fds[1], hello, sizeof(hello)), (ssize_t)sizeof(hello));
	pthread_join(t, NULL);
	printf("%-40s -> %s\n", "a plaintext peer", a.why);
	CHECK(a.rc != 0 && strstr(a.why, "does not speak TLS 1.3"));
	close(fds[0]);
	close(fds[1]);
}

static void *tls12_client(void *arg)
{
	int fd = *(int *)arg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;

	SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	(void)SSL_connect(ssl); /* fails: the server speaks 1.3 only */
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	shutdown(fd, SHUT_RDWR);
	return NULL;
}

static void tls12_peer(void)
{
	struct files fa;
	struct hs a;
	pthread_t t0, t1;
	int fds[2];

	files(&fa, "ca", "host-a", "card-b");
	ts_connect(0, fds);
	memset(&a, 0, sizeof(a));
	a.cfg = &fa.c;
	a.fd = fds[0];
	a.server = true;
	CHECK_EQ(pthread_create(&t0, NULL, hs_main, &a), 0);
	CHECK_EQ(pthread_create(&t1, NULL, tls12_client, &fds[1]), 0);
	pthread_join(t0, NULL);
	pthread_join(t1, NULL);
	printf("%-40s -> %s\n", "a TLS 1.2 peer", a.why);
	CHECK(a.rc != 0 && strstr(a.why, "does not speak TLS 1.3"));
	close(fds[0]);
	close(fds[1]);
}

static void key_mode(void)
{
	struct files f;
	char why[512];

	files(&f, "ca", "host-a", "card-b");
	CHECK_EQ(vop_stls_check(&f.c, why, sizeof(why)), 0);
	CHECK_EQ(chmod(f.key, 0644), 0);
	CHECK_EQ(vop_stls_check(&f.c, why, sizeof(why)), -EPERM);
	printf("%-40s -> %s\n", "a key readable by others", why);
	CHECK(strstr(why, "mode 0644") != NULL);
	CHECK_EQ(chmod(f.key, 0600), 0);
}

static void vsock_addresses(void)
{
	static const char *const bad[] = { "vsock:", "vsock:1", "vsock::5", "vsock:x:5", "vsock:1:0",
					   "vsock:1:-3", "vsock:-1:5", "vsock:1:5x", "vsock:99999999999:5" };
	struct vop_sconn_config cc;
	struct vop_sconn *c;
	unsigned i;

	static const uint32_t ids[1] = { DEV };

	memset(&cc, 0, sizeof(cc));
	cc.allow_plain = true;
	cc.dev_ids = ids;
	cc.ndevs = 1;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cc.address = bad[i];
		/* the proxy is only stored before the address is parsed: any non-NULL pointer */
		CHECK_EQ(vop_sconn_start((struct vop_link *)&cc, &cc, &c), -EINVAL);
	}
}

int main(void)
{
	if (system("openssl version >/dev/null 2>&1") != 0)
		return t_missing("openssl", "the openssl CLI makes the test certificates");
	make_certs();
	carry(NULL);
	carry("link-secret-1");
	refused("ca", "host-a", "card-b", "ca", "other-ca", "host-a", true,
		"unable to get local issuer certificate", "unknown ca");
	refused("ca", "host-a", "card-b", "ca", "expired", "host-a", true, "certificate has expired",
		"certificate expired");
	refused("ca", "host-a", "card-b", "ca", "host-a", "host-a", true, "does not name card-b",
		"bad certificate");
	refused("ca", "host-a", "card-b", "ca", "cn-only", "host-a", true, "does not name card-b",
		"bad certificate");
	refused("ca", "host-a", "card-b", "ca", "card-b", "someone-else", false,
		"does not name someone-else", "refused our TLS handshake");
	plaintext_peer();
	tls12_peer();
	key_mode();
	vsock_addresses();
	sh("rm -rf %s", dir);
	return T_PASS;
}
