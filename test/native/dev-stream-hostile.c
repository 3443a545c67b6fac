/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A hostile stream peer (this test, speaking the wire protocol by hand)
 * ends the link with a reason, and only that link: an oversized frame
 * length, an unknown message type, chains for a device the driver never
 * started, a chain id beyond the queue, a chain id already outstanding, a
 * used id that is not outstanding, a slow-loris handshake, a flood of tiny
 * frames it never reads the answers to. After each, a healthy link in the
 * same process still carries the byte pipe.
 */
#include "streamside.h"

#include <fcntl.h>
#include <poll.h>

#define DEV 9u
#define QS 64u
#define SECRET "hostile-test-secret"

static void raw_send(int fd, uint8_t type, const uint8_t *p, uint32_t len)
{
	uint8_t h[VOP_SFRAME_HDR];

	vop_sframe_put_hdr(h, type, len);
	CHECK_EQ(send(fd, h, sizeof(h), MSG_NOSIGNAL), (long)sizeof(h));
	if (len)
		CHECK_EQ(send(fd, p, len, MSG_NOSIGNAL), (long)len);
}

static void read_exact(int fd, uint8_t *p, size_t n)
{
	while (n) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t k;

		CHECK(poll(&pf, 1, 10000) == 1);
		k = recv(fd, p, n, 0);
		CHECK(k > 0);
		p += k;
		n -= (size_t)k;
	}
}

/* Read one frame (payload up to cap bytes). Returns its type. */
static uint8_t raw_recv(int fd, uint8_t *p, uint32_t cap, uint32_t *len)
{
	uint8_t h[VOP_SFRAME_HDR];

	read_exact(fd, h, sizeof(h));
	*len = vop_sget32(h);
	CHECK(*len <= cap);
	read_exact(fd, p, *len);
	return h[4];
}

/* Handshake as `side` against the bridge at fd (its device table: the byte pipe DEV). */
static void raw_handshake(int fd, uint8_t side)
{
	struct vop_shello me, peer;
	uint8_t buf[4096], mac[VOP_STREAM_MAC];
	uint32_t len;
	const char *why;

	memset(&me, 0, sizeof(me));
	me.version_major = 1;
	me.side = side;
	me.auth = 1;
	me.max_frame = 1u << 20;
	me.max_segs = 64;
	memset(me.nonce, 0x5a, sizeof(me.nonce));
	vop_shello_encode(buf, &me);
	raw_send(fd, VOP_SMSG_HELLO, buf, VOP_SMSG_HELLO_LEN);
	CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len), VOP_SMSG_HELLO);
	CHECK_EQ(vop_shello_parse(buf, len, &peer, &why), 0);
	CHECK_EQ(vop_stream_mac((const uint8_t *)SECRET, strlen(SECRET), side, me.nonce, peer.nonce,
				mac), 0);
	raw_send(fd, VOP_SMSG_AUTH, mac, sizeof(mac));
	CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len), VOP_SMSG_AUTH);
	if (side == 1) {
		struct vop_sdev_info di;

		memset(&di, 0, sizeof(di));
		di.dev_id = DEV;
		di.device_type = VOP_DEVTYPE_BYTE_PIPE;
		di.features = (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC) |
			      (1ull << VOP_F_VERSION_1);
		di.num_queues = 2;
		di.queue_size[0] = di.queue_size[1] = QS;
		di.max_chain[0] = di.max_chain[1] = 4096;
		raw_send(fd, VOP_SMSG_DEV_INFO, buf, vop_sdev_info_encode(buf, &di));
		vop_sput32(buf, 1);
		raw_send(fd, VOP_SMSG_READY, buf, 4);
		CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len), VOP_SMSG_READY);
	} else {
		CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len), VOP_SMSG_DEV_INFO);
		CHECK_EQ(raw_recv(fd, buf, sizeof(buf), &len), VOP_SMSG_READY);
		vop_sput32(buf, 1);
		raw_send(fd, VOP_SMSG_READY, buf, 4);
	}
}

/* Wait for the bridge to fail; its reason must contain want. */
static void expect_failed(struct ts_side *t, const char *what, const char *want)
{
	char r[256];

	CHECK(T_WAIT_UNTIL(ts_state(t, NULL, 0) == VOP_STREAM_FAILED, 20000));
	ts_state(t, r, sizeof(r));
	printf("%-28s -> %s\n", what, r);
	if (!strstr(r, want)) {
		fprintf(stderr, "reason \"%s\" does not say \"%s\"\n", r, want);
		CHECK(0);
	}
}

/* A device-side bridge under attack by a raw driver; attack(fd) after the handshake. */
static void attack_device(const char *what, const char *want, void (*attack)(int fd))
{
	struct ts_side dev;
	int fds[2];

	ts_connect(0, fds);
	ts_open(&dev, true, fds[0], SECRET, DEV, QS, 256, 5000);
	raw_handshake(fds[1], 0);
	attack(fds[1]);
	expect_failed(&dev, what, want);
	close(fds[1]);
	ts_close(&dev);
}

static void a_oversized(int fd)
{
	uint8_t h[VOP_SFRAME_HDR];

	vop_sframe_put_hdr(h, VOP_SMSG_CHAINS, 64u << 20);
	CHECK_EQ(send(fd, h, sizeof(h), MSG_NOSIGNAL), (long)sizeof(h));
}

static void a_unknown(int fd)
{
	uint8_t f[VOP_SFRAME_HDR + 8] = { 0 };

	/* Header and payload in one send: the bridge refuses the header alone and shuts the socket. */
	vop_sframe_put_hdr(f, 0x77, 8);
	CHECK_EQ(send(fd, f, sizeof(f), MSG_NOSIGNAL), (long)sizeof(f));
}

/* A CHAINS frame with the given (id, id2) chains of one readable 16-byte segment each. */
static void send_chains(int fd, uint32_t gen, uint16_t id, int id2)
{
	uint8_t p[256];
	uint32_t n = VOP_SMSG_BATCH_HDR, k, cnt = id2 >= 0 ? 2 : 1;
	int ids[2] = { id, id2 };

	vop_sput32(p, DEV);
	vop_sput32(p + 4, gen);
	vop_sput16(p + 8, 0);
	vop_sput16(p + 10, (uint16_t)cnt);
	for (k = 0; k < cnt; k++) {
		vop_sput16(p + n, (uint16_t)ids[k]);
		p[n + 2] = 1;
		p[n + 3] = 0;
		vop_sput32(p + n + 4, 16);
		memset(p + n + 8, 0xab, 16);
		n += 8 + 16;
	}
	raw_send(fd, VOP_SMSG_CHAINS, p, n);
}

static void dev_start(int fd)
{
	uint8_t p[VOP_SMSG_DEV_START_LEN];

	vop_sput32(p, DEV);
	vop_sput32(p + 4, 1);
	vop_sput64(p + 8, 1ull << VOP_F_VERSION_1);
	raw_send(fd, VOP_SMSG_DEV_START, p, sizeof(p));
}

static void a_not_started(int fd)
{
	send_chains(fd, 1, 0, -1);
}

static void a_id_range(int fd)
{
	dev_start(fd);
	send_chains(fd, 1, QS, -1);
}

static void a_id_twice(int fd)
{
	dev_start(fd);
	send_chains(fd, 1, 3, 3);
}

static void a_features(int fd)
{
	uint8_t p[VOP_SMSG_DEV_START_LEN];

	vop_sput32(p, DEV);
	vop_sput32(p + 4, 1);
	vop_sput64(p + 8, 1ull << 40);
	raw_send(fd, VOP_SMSG_DEV_START, p, sizeof(p));
}

static void a_handshake_again(int fd)
{
	uint8_t p[VOP_SMSG_HELLO_LEN] = { 0 };

	raw_send(fd, VOP_SMSG_AUTH, p, VOP_STREAM_MAC);
}

/*
 * Driver-side bridge: a raw device returns one used id twice (gen_bump 0), or once for a generation
 * gen_bump above the one the driver started (a generation nobody started).
 */
static void bad_used(const char *name, uint32_t gen_bump, const char *want)
{
	struct ts_side drv;
	uint8_t buf[1u << 20], p[64];
	uint32_t len, gen = 0;
	int fds[2], id = -1;

	ts_connect(0, fds);
	ts_open(&drv, false, fds[0], SECRET, DEV, QS, 256, 5000);
	raw_handshake(fds[1], 1);
	/* DEV_START, then chains of queue 0 (readable messages, no writable part). */
	while (id < 0) {
		uint8_t t = raw_recv(fds[1], buf, sizeof(buf), &len);

		if (t == VOP_SMSG_DEV_START)
			gen = vop_sget32(buf + 4);
		if (t == VOP_SMSG_CHAINS && vop_sget16(buf + 8) == 0)
			id = vop_sget16(buf + VOP_SMSG_BATCH_HDR);
	}
	CHECK(gen != 0);
	vop_sput32(p, DEV);
	vop_sput32(p + 4, gen + gen_bump);
	vop_sput16(p + 8, 0);
	vop_sput16(p + 10, gen_bump ? 1 : 2);
	vop_sput16(p + 12, (uint16_t)id);
	vop_sput16(p + 14, 0);
	vop_sput32(p + 16, 0);
	memcpy(p + 20, p + 12, 8);
	raw_send(fds[1], VOP_SMSG_USED, p, gen_bump ? 20 : 28);
	expect_failed(&drv, name, want);
	close(fds[1]);
	ts_close(&drv);
}

static void slow_loris(void)
{
	struct ts_side dev;
	uint8_t h[3] = { VOP_SMSG_HELLO_LEN, 0, 0 };
	int fds[2];

	ts_connect(0, fds);
	ts_open(&dev, true, fds[0], SECRET, DEV, QS, 256, 500);
	CHECK_EQ(send(fds[1], h, sizeof(h), MSG_NOSIGNAL), 3);
	expect_failed(&dev, "slow-loris handshake", "handshake timed out");
	close(fds[1]);
	ts_close(&dev);
}

/* Tiny PING frames, never reading the PONGs: the link ends, memory stays bounded. */
/* A flood of tiny frames of one type: PINGs (whose PONGs we never read) or unsolicited PONGs. */
static void ping_flood(uint8_t type, const char *name)
{
	struct ts_side dev;
	uint8_t f[16 * 256];
	int fds[2], i, fl;
	uint64_t sent = 0;

	ts_connect(0, fds);
	ts_open(&dev, true, fds[0], SECRET, DEV, QS, 256, 5000);
	raw_handshake(fds[1], 0);
	for (i = 0; i < 256; i++) {
		vop_sframe_put_hdr(f + 16 * i, type, 8);
		vop_sput64(f + 16 * i + 8, (uint64_t)i);
	}
	fl = fcntl(fds[1], F_GETFL);
	fcntl(fds[1], F_SETFL, fl | O_NONBLOCK);
	while (ts_state(&dev, NULL, 0) != VOP_STREAM_FAILED && sent < (64ull << 20)) {
		ssize_t k = send(fds[1], f, sizeof(f), MSG_NOSIGNAL);

		if (k > 0)
			sent += (uint64_t)k;
		else
			t_sleep_ms(1);
	}
	expect_failed(&dev, name, "control flood");
	close(fds[1]);
	ts_close(&dev);
}

/* A healthy link in the same process still works. */
static void healthy(void)
{
	struct ts_side drv, dev;
	int fds[2];

	ts_connect(0, fds);
	ts_open(&dev, true, fds[0], SECRET, DEV, QS, 256, 5000);
	ts_open(&drv, false, fds[1], SECRET, DEV, QS, 256, 5000);
	CHECK(T_WAIT_UNTIL(t_rx(drv.real, DEV) > 5000 && t_rx(dev.real, DEV) > 5000, 60000));
	ts_close(&drv);
	ts_close(&dev);
}

int main(void)
{
	attack_device("oversized frame length", "exceeds the negotiated max_frame", a_oversized);
	attack_device("unknown message type", "unknown message type", a_unknown);
	attack_device("chains before dev_start", "not started", a_not_started);
	attack_device("chain id beyond the queue", ">= queue size", a_id_range);
	attack_device("chain id already outstanding", "already outstanding", a_id_twice);
	attack_device("features not offered", "not offered", a_features);
	attack_device("handshake message later", "after the handshake", a_handshake_again);
	bad_used("used id not outstanding", 0, "is not outstanding");
	bad_used("used for a generation never started", 7, "newer than the");
	slow_loris();
	ping_flood(VOP_SMSG_PING, "flood of tiny PINGs");
	ping_flood(VOP_SMSG_PONG, "flood of unsolicited PONGs");
	healthy();
	return T_PASS;
}
