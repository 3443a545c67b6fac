/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config-space changes travel as CONFIG messages (docs/stream-protocol.md, CONFIG).
 *
 *  1. A net device over a stream link, published with its status link DOWN: the real net
 *     device writes LINK_UP when it starts (after the handshake), and the driver side's window
 *     shows LINK_UP with its generation advanced past the handshake's; a later change made on
 *     the device side (the test writes the device's config block, as a device would) arrives
 *     too, and so does the last of two changes made back to back.
 *  2. A raw driver whose HELLO says minor 0 (an older peer) never gets a CONFIG; one that says
 *     minor 1 gets it, with the device's bytes and an even generation >= 2.
 *  3. A hostile device side (raw) against a driver-side bridge: CONFIG for an unknown dev_id,
 *     with a config_len other than DEV_INFO's, with a generation that does not advance, a
 *     flood of them, one before READY, one with an odd generation, and CONFIG sent to the
 *     device side: each ends that link with its reason.
 */
#include "streamside.h"

#include <fcntl.h>
#include <poll.h>

#include "vop/dev_common.h"
#include "vop/dev_net.h"

#define NDEV 5u
#define NQS 16u
#define PDEV 9u
#define PQS 64u

static char dir[128];

/* ------------------------------------------------------------------ */
/* A net device over a stream link                                     */
/* ------------------------------------------------------------------ */

struct nside {
	struct vop_window *wa, *wb;
	struct vop_link *real, *proxy;
	struct vop_devctx *ctx;
	struct vop_net *net;
	struct vop_stream *s;
	/*
	 * The device's entry as the real backend's mapping of the window has it (device side: wb,
	 * driver side: wa): the test reads and writes config through the mapping the real backend
	 * uses, never the proxy's (TSan sees two mappings of the memfd as different memory, and a
	 * seqlock's byte copies race by design).
	 */
	struct vop_dev_info info;
	bool device;
};

/* The net spec with the link status DOWN in the config space as published. */
static void net_spec_down(struct vop_dev_spec *spec, struct vop_net_config_space *cs, bool device)
{
	static const uint8_t mac[6] = { 0x02, 0, 0, 0, 0, 0x05 };
	unsigned i;

	vop_net_spec(spec, NDEV, 1, NQS, 1500, mac);
	memcpy(cs, spec->config, sizeof(*cs));
	cs->status = 0;
	spec->config = cs;
	if (device)
		for (i = 0; i < spec->num_queues; i++)
			spec->pool_size[i] = vop_stream_pool_size(NQS, 65536 + 4096);
}

/* One side: the real net backend (datagram sockets in dir) on one side of a private window, the bridge on fd. */
static void net_open(struct nside *n, bool device, int fd)
{
	struct vop_xport *x0, *x1;
	struct vop_link_config c;
	struct vop_dev_spec spec;
	struct vop_net_config_space cs;
	struct vop_stream_config sc;
	struct vop_net_config nc;
	char local[192], peer[192];

	memset(n, 0, sizeof(*n));
	n->device = device;
	CHECK_EQ(vop_shm_create(NULL, 8u << 20, &x0), 0);
	CHECK_EQ(vop_window_create(x0, NULL, &n->wa), 0);
	CHECK_EQ(vop_shm_open_fd(x0->fd, &x1), 0);
	CHECK_EQ(vop_window_attach(x1, &n->wb), 0);
	net_spec_down(&spec, &cs, device);
	CHECK(vop_devtab_publish(n->wa, &spec) >= 0);
	memset(&c, 0, sizeof(c));
	c.spin_ns = 20000;
	/* device_side 1: the real device (device side) or the proxy (driver side) is on wb */
	CHECK_EQ(vop_link_create(n->wa, &c, device ? &n->proxy : &n->real), 0);
	CHECK_EQ(vop_link_create(n->wb, &c, device ? &n->real : &n->proxy), 0);
	CHECK_EQ(vop_devtab_find_bounded(device ? n->wb : n->wa, NDEV, &n->info), 0);
	memset(&sc, 0, sizeof(sc));
	sc.fd = fd;
	sc.device_side = device;
	sc.allow_plain = true;
	CHECK_EQ(vop_stream_create(n->proxy, &sc, &n->s), 0);
	CHECK_EQ(vop_stream_add(n->s, NDEV), 0);
	CHECK_EQ(vop_devctx_create(device ? n->wb : n->wa, &n->ctx), 0);
	memset(&nc, 0, sizeof(nc));
	snprintf(local, sizeof(local), "%s/%s.sock", dir, device ? "dev" : "drv");
	snprintf(peer, sizeof(peer), "%s/%s-peer.sock", dir, device ? "dev" : "drv");
	nc.dgram_local = local;
	nc.dgram_peer = peer;
	nc.find_timeout_ms = 1000;
	if (device)
		CHECK_EQ(vop_net_device_create(n->ctx, NDEV, &nc, &n->net), 0);
	else
		CHECK_EQ(vop_net_driver_create(n->ctx, NDEV, &nc, &n->net), 0);
	CHECK_EQ(vop_link_attach_backend(n->real, NDEV, device ? VOP_ROLE_DEVICE : VOP_ROLE_DRIVER,
					 &vop_net_ops, n->net),
		 0);
	CHECK_EQ(vop_link_start(n->real), 0);
	CHECK_EQ(vop_link_start(n->proxy), 0);
	CHECK_EQ(vop_stream_start(n->s), 0);
}

static void net_close(struct nside *n)
{
	vop_link_stop(n->proxy);
	vop_stream_destroy(n->s);
	vop_link_destroy(n->proxy);
	vop_link_destroy(n->real);
	vop_net_destroy(n->net);
	vop_devctx_destroy(n->ctx);
	vop_window_close(n->wb);
	vop_window_close(n->wa);
}

static struct vop_stream_status nstatus(struct nside *n)
{
	struct vop_stream_status st;

	vop_stream_status(n->s, &st);
	return st;
}

/* The device's config space as n's window has it (the device side's block), and its generation. */
static uint32_t net_cfg(struct nside *n, struct vop_net_config_space *cs)
{
	uint32_t gen = 0;

	CHECK_EQ(vop_devtab_config_read(n->device ? n->wb : n->wa, &n->info, cs, sizeof(*cs), &gen), 0);
	return gen;
}

static bool drv_sees(struct nside *drv, uint16_t status, uint16_t mtu, uint32_t min_gen)
{
	struct vop_net_config_space cs;
	uint32_t gen = net_cfg(drv, &cs);

	return gen >= min_gen && cs.status == status && cs.mtu == mtu;
}

static void net_link(void)
{
	struct nside dev, drv;
	struct vop_net_config_space cs;
	uint32_t g_dev, g_drv;
	int fds[2];

	ts_connect(0, fds);
	net_open(&dev, true, fds[0]);
	net_open(&drv, false, fds[1]);
	/* The handshake wrote generation 2 on the driver side (status DOWN, as published); LINK_UP comes later. */
	CHECK(T_WAIT_UNTIL(drv_sees(&drv, VOP_NET_S_LINK_UP, 1500, 4), 20000));
	g_dev = net_cfg(&dev, &cs);
	CHECK(g_dev >= 2 && cs.status == VOP_NET_S_LINK_UP);
	CHECK(nstatus(&dev).config_tx >= 1);
	CHECK(nstatus(&drv).config_rx >= 1);
	CHECK_EQ(nstatus(&drv).peer_minor, VOP_STREAM_VERSION_MINOR);
	g_drv = net_cfg(&drv, &cs);
	printf("LINK_UP after start: device generation %u, driver side generation %u\n", g_dev, g_drv);

	/* A later change on the device side: link down, MTU 1400. */
	cs.status = 0;
	cs.mtu = 1400;
	CHECK_EQ(vop_devtab_config_write(dev.wb, &dev.info, 0, &cs, sizeof(cs)), 0);
	CHECK(T_WAIT_UNTIL(drv_sees(&drv, 0, 1400, g_drv + 2), 20000));
	g_drv = net_cfg(&drv, &cs);
	printf("link down, mtu 1400: driver side generation %u\n", g_drv);

	/* Two changes back to back: the last one is what the driver side ends with. */
	cs.status = 0;
	cs.mtu = 9000;
	CHECK_EQ(vop_devtab_config_write(dev.wb, &dev.info, 0, &cs, sizeof(cs)), 0);
	cs.status = VOP_NET_S_LINK_UP;
	CHECK_EQ(vop_devtab_config_write(dev.wb, &dev.info, 0, &cs, sizeof(cs)), 0);
	CHECK(T_WAIT_UNTIL(drv_sees(&drv, VOP_NET_S_LINK_UP, 9000, g_drv + 2), 20000));
	printf("two changes back to back: driver side generation %u, %llu CONFIG sent\n",
	       net_cfg(&drv, &cs), (unsigned long long)nstatus(&dev).config_tx);
	CHECK_EQ(nstatus(&dev).state, VOP_STREAM_READY);
	CHECK_EQ(nstatus(&drv).state, VOP_STREAM_READY);
	net_close(&drv);
	net_close(&dev);
}

/* ------------------------------------------------------------------ */
/* The wire, by hand                                                    */
/* ------------------------------------------------------------------ */

static void raw_send(int fd, uint8_t type, const uint8_t *p, uint32_t len)
{
	uint8_t f[VOP_SFRAME_HDR + 4096];

	CHECK(len <= 4096);
	vop_sframe_put_hdr(f, type, len);
	if (len)
		memcpy(f + VOP_SFRAME_HDR, p, len);
	CHECK_EQ(send(fd, f, VOP_SFRAME_HDR + len, MSG_NOSIGNAL), (long)(VOP_SFRAME_HDR + len));
}

/* 1 with n bytes, 0 on timeout. */
static int read_exact(int fd, uint8_t *p, size_t n, int ms)
{
	while (n) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t k;

		if (poll(&pf, 1, ms) != 1)
			return 0;
		k = recv(fd, p, n, 0);
		CHECK(k > 0);
		p += k;
		n -= (size_t)k;
	}
	return 1;
}

/* One frame; its type, or -1 on timeout. */
static int raw_recv(int fd, uint8_t *p, uint32_t cap, uint32_t *len, int ms)
{
	uint8_t h[VOP_SFRAME_HDR];

	if (!read_exact(fd, h, sizeof(h), ms))
		return -1;
	*len = vop_sget32(h);
	CHECK(*len <= cap);
	CHECK(read_exact(fd, p, *len, 10000));
	return h[4];
}

/*
 * Handshake without authentication as `side` with HELLO minor `minor`. As the device side it
 * describes dev with a config space of cfg_len bytes; before READY it may send one extra frame.
 */
static void raw_handshake(int fd, uint8_t side, uint16_t minor, uint32_t dev, uint16_t qs,
			  uint16_t nq, uint16_t cfg_len, int extra_type, const uint8_t *extra,
			  uint32_t extra_len)
{
	struct vop_shello me, peer;
	uint8_t buf[4096];
	uint32_t len;
	const char *why;

	memset(&me, 0, sizeof(me));
	me.version_major = 1;
	me.version_minor = minor;
	me.side = side;
	me.max_frame = 1u << 20;
	me.max_segs = 64;
	memset(me.nonce, 0x5a, sizeof(me.nonce));
	vop_shello_encode(buf, &me);
	raw_send(fd, VOP_SMSG_HELLO, buf, VOP_SMSG_HELLO_LEN);
	CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len, 10000), VOP_SMSG_HELLO);
	CHECK_EQ(vop_shello_parse(buf, len, &peer, &why), 0);
	CHECK_EQ(peer.version_minor, VOP_STREAM_VERSION_MINOR);
	if (side == 1) {
		struct vop_sdev_info di;
		unsigned i;

		memset(&di, 0, sizeof(di));
		di.dev_id = dev;
		di.device_type = VOP_DEVTYPE_BYTE_PIPE;
		di.num_queues = nq;
		for (i = 0; i < nq; i++) {
			di.queue_size[i] = qs;
			di.max_chain[i] = 4096;
		}
		di.config_len = cfg_len;
		memset(di.config, 0x11, cfg_len);
		raw_send(fd, VOP_SMSG_DEV_INFO, buf, vop_sdev_info_encode(buf, &di));
		if (extra_type >= 0)
			raw_send(fd, (uint8_t)extra_type, extra, extra_len);
		vop_sput32(buf, 1);
		raw_send(fd, VOP_SMSG_READY, buf, 4);
		if (extra_type < 0)
			CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len, 10000), VOP_SMSG_READY);
	} else {
		CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len, 10000), VOP_SMSG_DEV_INFO);
		CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len, 10000), VOP_SMSG_READY);
		vop_sput32(buf, 1);
		raw_send(fd, VOP_SMSG_READY, buf, 4);
	}
}

/* A CONFIG payload. */
static uint32_t config_msg(uint8_t *p, uint32_t dev, uint32_t gen, uint16_t cfg_len, uint8_t fill)
{
	struct vop_sconfig c;

	memset(&c, 0, sizeof(c));
	c.dev_id = dev;
	c.generation = gen;
	c.config_len = cfg_len;
	memset(c.config, fill, cfg_len);
	return vop_sconfig_encode(p, &c);
}

/* ------------------------------------------------------------------ */
/* 2. Only a peer that understands CONFIG gets it                       */
/* ------------------------------------------------------------------ */

static void minor_gate(uint16_t minor)
{
	struct nside dev;
	uint8_t buf[4096], p[VOP_SMSG_DEV_START_LEN];
	uint32_t len;
	uint64_t end;
	int fds[2], t, configs = 0, pings = 0;

	ts_connect(0, fds);
	net_open(&dev, true, fds[0]);
	raw_handshake(fds[1], 0, minor, 0, 0, 0, 0, -1, NULL, 0);
	vop_sput32(p, NDEV);
	vop_sput32(p + 4, 1);
	vop_sput64(p + 8, (1ull << VOP_F_VERSION_1) | (1ull << VOP_NET_F_STATUS) | (1ull << VOP_NET_F_MAC));
	raw_send(fds[1], VOP_SMSG_DEV_START, p, sizeof(p));
	/* The net device starts and writes LINK_UP on the device side. */
	{
		struct vop_net_config_space cs;

		CHECK(T_WAIT_UNTIL(net_cfg(&dev, &cs) >= 2, 20000));
	}
	/* Frames for 1.5 s: PINGs (answered, so the link stays up) and, for minor >= 1, CONFIG. */
	end = t_now_ms() + 1500;
	while (t_now_ms() < end) {
		t = raw_recv(fds[1], buf, sizeof(buf), &len, 100);
		if (t == VOP_SMSG_PING) {
			raw_send(fds[1], VOP_SMSG_PONG, buf, len);
			pings++;
		}
		if (t == VOP_SMSG_CONFIG) {
			struct vop_sconfig c;
			struct vop_net_config_space cs;
			const char *why;

			CHECK_EQ(vop_sconfig_parse(buf, len, &c, &why), 0);
			CHECK_EQ(c.dev_id, NDEV);
			CHECK_EQ(c.config_len, dev.info.config_len);
			memcpy(&cs, c.config, sizeof(cs));
			CHECK_EQ(cs.status, VOP_NET_S_LINK_UP);
			CHECK(c.generation >= 2 && !(c.generation & 1));
			configs++;
		}
	}
	printf("peer minor %u: %d CONFIG, %d PING in 1.5 s\n", minor, configs, pings);
	CHECK(pings >= 1);
	CHECK_EQ(configs, minor >= VOP_STREAM_MINOR_CONFIG ? 1 : 0);
	CHECK_EQ(nstatus(&dev).state, VOP_STREAM_READY);
	CHECK_EQ(nstatus(&dev).peer_minor, minor);
	close(fds[1]);
	net_close(&dev);
}

/* ------------------------------------------------------------------ */
/* 3. Hostile CONFIG                                                    */
/* ------------------------------------------------------------------ */

static void expect_failed(struct ts_side *t, const char *what, const char *want)
{
	char r[256];

	CHECK(T_WAIT_UNTIL(ts_state(t, NULL, 0) == VOP_STREAM_FAILED, 20000));
	ts_state(t, r, sizeof(r));
	printf("%-32s -> %s\n", what, r);
	if (!strstr(r, want)) {
		fprintf(stderr, "reason \"%s\" does not say \"%s\"\n", r, want);
		CHECK(0);
	}
}

static void a_flood(int fd);

/* The generation of dev's config space in t's window (the driver side: read as its real driver, on wa). */
static uint32_t pipe_cfg_gen(struct ts_side *t)
{
	struct vop_dev_info info;
	uint8_t b[1];
	uint32_t gen = 0;

	CHECK_EQ(vop_devtab_find_bounded(t->wa, PDEV, &info), 0);
	CHECK_EQ(vop_devtab_config_read(t->wa, &info, b, 0, &gen), 0);
	return gen;
}

/*
 * A driver-side bridge (byte pipe PDEV) under a raw device side announcing an 8-byte config
 * space. applied: how many of the attack's CONFIG frames were valid; exactly those were applied
 * (counted, and the window's config generation advanced once each past the handshake's), the
 * refused one not.
 */
static void attack_driver(const char *what, const char *want, void (*attack)(int fd), unsigned applied)
{
	struct ts_side drv;
	struct vop_stream_status st;
	uint32_t g0;
	int fds[2];

	bool flood = attack == a_flood;

	ts_connect(0, fds);
	ts_open(&drv, false, fds[0], NULL, PDEV, PQS, 256, 5000);
	raw_handshake(fds[1], 1, VOP_STREAM_VERSION_MINOR, PDEV, PQS, 2, 8, -1, NULL, 0);
	g0 = pipe_cfg_gen(&drv);
	CHECK_EQ(g0, 2u); /* DEV_INFO's config, written once */
	attack(fds[1]);
	expect_failed(&drv, what, want);
	vop_stream_status(drv.s, &st);
	/* a flood: at least the limit's worth went through (more only if a second had passed) */
	if (flood)
		CHECK(st.config_rx >= applied);
	else
		CHECK_EQ(st.config_rx, (uint64_t)applied);
	CHECK_EQ(pipe_cfg_gen(&drv), g0 + 2u * (uint32_t)st.config_rx);
	close(fds[1]);
	ts_close(&drv);
}

static void a_unknown_dev(int fd)
{
	uint8_t p[VOP_SMSG_CONFIG_MAX];

	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV + 1, 2, 8, 0x22));
}

static void a_wrong_len(int fd)
{
	uint8_t p[VOP_SMSG_CONFIG_MAX];

	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 2, 12, 0x22));
}

static void a_stale(int fd)
{
	uint8_t p[VOP_SMSG_CONFIG_MAX];

	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 6, 8, 0x22));
	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 4, 8, 0x33));
}

static void a_same(int fd)
{
	uint8_t p[VOP_SMSG_CONFIG_MAX];

	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 4, 8, 0x22));
	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 4, 8, 0x22));
}

static void a_odd(int fd)
{
	uint8_t p[VOP_SMSG_CONFIG_MAX];

	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 2, 8, 0x22));
	vop_sput32(p + 4, 5); /* encoded as given: the parser refuses it */
	raw_send(fd, VOP_SMSG_CONFIG, p, VOP_SMSG_CONFIG_FIXED + 8);
}

/* Valid, ever newer CONFIGs as fast as the socket takes them. */
static void a_flood(int fd)
{
	uint8_t f[(VOP_SFRAME_HDR + VOP_SMSG_CONFIG_FIXED + 8) * 128];
	uint32_t gen = 2, i;
	int fl = fcntl(fd, F_GETFL);
	uint64_t end = t_now_ms() + 10000;

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	while (t_now_ms() < end) {
		uint8_t *q = f;
		ssize_t k;

		for (i = 0; i < 128; i++, gen += 2) {
			vop_sframe_put_hdr(q, VOP_SMSG_CONFIG, VOP_SMSG_CONFIG_FIXED + 8);
			q += VOP_SFRAME_HDR;
			q += config_msg(q, PDEV, gen, 8, (uint8_t)gen);
		}
		k = send(fd, f, sizeof(f), MSG_NOSIGNAL);
		if (k < 0)
			break; /* the bridge ended the link and shut the socket */
		if ((size_t)k < sizeof(f))
			break; /* a partial frame would follow: stop here, the flood was sent */
	}
}

/* CONFIG between DEV_INFO and READY. */
static void config_before_ready(void)
{
	struct ts_side drv;
	uint8_t p[VOP_SMSG_CONFIG_MAX];
	uint32_t n = config_msg(p, PDEV, 2, 8, 0x22);
	int fds[2];

	ts_connect(0, fds);
	ts_open(&drv, false, fds[0], NULL, PDEV, PQS, 256, 5000);
	raw_handshake(fds[1], 1, VOP_STREAM_VERSION_MINOR, PDEV, PQS, 2, 8, VOP_SMSG_CONFIG, p, n);
	expect_failed(&drv, "config before ready", "unexpected config during the handshake");
	close(fds[1]);
	ts_close(&drv);
}

/* A raw driver sends CONFIG to a device-side bridge. */
static void config_to_device(void)
{
	struct ts_side dev;
	uint8_t p[VOP_SMSG_CONFIG_MAX];
	int fds[2];

	ts_connect(0, fds);
	ts_open(&dev, true, fds[0], NULL, PDEV, PQS, 256, 5000);
	raw_handshake(fds[1], 0, VOP_STREAM_VERSION_MINOR, 0, 0, 0, 0, -1, NULL, 0);
	raw_send(fds[1], VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 2, 0, 0));
	expect_failed(&dev, "config sent to the device side", "config sent to the device side");
	close(fds[1]);
	ts_close(&dev);
}

/* An honest CONFIG first: applied, counted, the link stays up. */
static void a_valid_then_unknown(int fd)
{
	uint8_t p[VOP_SMSG_CONFIG_MAX];

	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 2, 8, 0x22));
	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, PDEV, 4, 8, 0x33));
	raw_send(fd, VOP_SMSG_CONFIG, p, config_msg(p, 77, 6, 8, 0x33));
}

int main(void)
{
	snprintf(dir, sizeof(dir), "%s/vop-test-stream-config-XXXXXX",
		 getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	CHECK(mkdtemp(dir) != NULL);
	net_link();
	minor_gate(0);
	minor_gate(VOP_STREAM_VERSION_MINOR);
	attack_driver("config for an unknown dev_id", "config for unknown dev 10", a_unknown_dev, 0);
	attack_driver("config_len other than dev_info's", "config of 12 bytes for dev 9, whose config space is 8 bytes",
		      a_wrong_len, 0);
	attack_driver("config generation going back", "config generation 4 did not advance past 6", a_stale, 1);
	attack_driver("config generation repeated", "config generation 4 did not advance past 4", a_same, 1);
	attack_driver("config generation odd", "config generation not even", a_odd, 1);
	attack_driver("a flood of config", "config flood: more than 64 CONFIG frames", a_flood, 64);
	attack_driver("valid config, then unknown dev", "config for unknown dev 77", a_valid_then_unknown, 2);
	config_before_ready();
	config_to_device();
	rmdir(dir);
	return T_PASS;
}
