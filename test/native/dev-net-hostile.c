/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-net device role against a hostile driver: transmitted frames with
 * malformed virtio-net headers (unknown gso_type, csum_start/offset outside
 * the frame, GSO without NEEDS_CSUM or gso_size 0, unknown flags, frames
 * shorter than the header or than an Ethernet header) are dropped and
 * counted in bad_headers; a good frame afterwards still reaches the TAP,
 * byte for byte (read back from a packet socket on the TAP), and nothing
 * else does. Runs in a private network namespace (unshare). Without root
 * or /dev/net/tun the TAP half is SKIP on a developer's machine and FAIL
 * when $CI is set.
 */
#include "devhand.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include "vop/dev_net.h"

static void hdr_unit(void)
{
	struct vop_net_hdr h;

	memset(&h, 0, sizeof(h));
	CHECK_EQ(vop_net_hdr_check(&h, 60), 0);
	CHECK(vop_net_hdr_check(&h, 13) < 0);                 /* shorter than Ethernet */
	CHECK(vop_net_hdr_check(&h, 70000) < 0);              /* longer than any frame */
	h.flags = 0x80;
	CHECK(vop_net_hdr_check(&h, 60) < 0);                 /* unknown flag */
	h.flags = VOP_NET_HDR_F_NEEDS_CSUM;
	h.csum_start = 50;
	h.csum_offset = 16;
	CHECK(vop_net_hdr_check(&h, 60) < 0);                 /* checksum field outside */
	h.csum_start = 34;
	h.csum_offset = 16;
	CHECK_EQ(vop_net_hdr_check(&h, 60), 0);
	h.gso_type = 2;
	CHECK(vop_net_hdr_check(&h, 60) < 0);                 /* unknown gso type */
	h.gso_type = VOP_NET_HDR_GSO_TCPV4;
	h.gso_size = 0;
	CHECK(vop_net_hdr_check(&h, 60) < 0);                 /* gso without size */
	h.gso_size = 1448;
	h.hdr_len = 54;
	CHECK_EQ(vop_net_hdr_check(&h, 60), 0);
	h.flags = 0;
	CHECK(vop_net_hdr_check(&h, 60) < 0);                 /* gso without NEEDS_CSUM */
	h.flags = VOP_NET_HDR_F_NEEDS_CSUM;
	h.hdr_len = 61;
	CHECK(vop_net_hdr_check(&h, 60) < 0);                 /* header length past the frame */
	h.hdr_len = 54;
	h.gso_type = VOP_NET_HDR_GSO_NONE | VOP_NET_HDR_GSO_ECN;
	CHECK(vop_net_hdr_check(&h, 60) < 0);                 /* ECN without GSO */
}

#define GOOD_ETHERTYPE 0x88b5 /* IEEE local experimental */
static const char good_payload[] = "vop dev-net-hostile: the good frame";

/* A packet socket that sees every frame the TAP's interface receives. */
static int tap_sniffer(const char *ifname)
{
	struct sockaddr_ll sll;
	struct ifreq ifr;
	int s = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, htons(ETH_P_ALL));

	CHECK(s >= 0);
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
	CHECK(ioctl(s, SIOCGIFINDEX, &ifr) == 0);
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = ifr.ifr_ifindex;
	CHECK(bind(s, (struct sockaddr *)&sll, sizeof(sll)) == 0);
	return s;
}

/*
 * Frames of GOOD_ETHERTYPE the interface received within ms (stops early at
 * `enough`); each must be the good frame.
 */
static int good_frames_seen(int s, unsigned ms, int enough)
{
	uint8_t f[2048];
	struct sockaddr_ll from;
	socklen_t fl;
	uint64_t end = t_now_ms() + ms;
	int seen = 0;

	for (;;) {
		struct pollfd p = { s, POLLIN, 0 };
		uint64_t now = t_now_ms();
		ssize_t r;

		if (seen >= enough || now >= end || poll(&p, 1, (int)(end - now)) <= 0)
			return seen;
		fl = sizeof(from);
		r = recvfrom(s, f, sizeof(f), 0, (struct sockaddr *)&from, &fl);
		if (r < 14 || from.sll_pkttype == PACKET_OUTGOING)
			continue;
		if (((unsigned)f[12] << 8 | f[13]) != GOOD_ETHERTYPE)
			continue; /* e.g. nothing: the namespace is private and the bad frames were dropped */
		CHECK(r >= 14 + (ssize_t)sizeof(good_payload));
		CHECK(memcmp(f + 14, good_payload, sizeof(good_payload)) == 0);
		seen++;
	}
}

int main(void)
{
	struct vop_window *w0, *w1;
	struct t_host host;
	struct vop_net *net;
	struct vop_net_config nc;
	struct vop_dev_spec spec;
	struct vop_dev_info di;
	struct vop_devq txq;
	struct vop_net_stats st;
	static const uint8_t mac[6] = { 0x52, 0x54, 0, 1, 2, 3 };
	struct ifreq ifr;
	uint64_t feat, end;
	uint8_t *buf;
	int s, i, sniff;
	struct {
		struct vop_net_hdr h;
		uint32_t flen;
	} cases[] = {
		{ { 0x40, 0, 0, 0, 0, 0, 0 }, 60 },                     /* unknown flag */
		{ { 0, 9, 0, 0, 0, 0, 0 }, 60 },                        /* unknown gso type */
		{ { 1, 0, 0, 0, 58, 4, 0 }, 60 },                       /* csum outside */
		{ { 1, 1, 54, 0, 34, 16, 0 }, 60 },                     /* gso size 0 */
		{ { 0, 4, 54, 1400, 0, 0, 0 }, 60 },                    /* gso without csum */
		{ { 0, 0, 0, 0, 0, 0, 0 }, 10 },                        /* runt frame */
	};

	hdr_unit();
	if (geteuid() != 0)
		return t_missing("root (TAP part)", "not running as root");
	if (access("/dev/net/tun", R_OK | W_OK) != 0)
		return t_missing("/dev/net/tun (TAP part)", strerror(errno));
	if (unshare(CLONE_NEWNET) != 0)
		return t_missing("a private network namespace (TAP part)", strerror(errno));
	vop_net_spec(&spec, 1, 1, 16, 1500, mac);
	t_mem_windows(40u << 20, &spec, &w0, &w1);
	t_host_open(&host, w1);
	memset(&nc, 0, sizeof(nc));
	nc.tap_name = "vophostile0";
	CHECK(vop_net_device_create(host.ctx, 1, &nc, &net) == 0);
	s = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "vophostile0");
	CHECK(ioctl(s, SIOCGIFFLAGS, &ifr) == 0);
	ifr.ifr_flags |= IFF_UP;
	CHECK(ioctl(s, SIOCSIFFLAGS, &ifr) == 0);
	close(s);
	sniff = tap_sniffer("vophostile0");
	t_host_serve(&host, 1, VOP_ROLE_DEVICE, &vop_net_ops, net);

	CHECK(vop_devtab_find(w0, 1, &di) == 0);
	feat = t_hand_driver_reset(w0, &di, ~0ull);
	CHECK(vop_devq_init(w0, &di, 1, true, feat, &txq) == 0);
	t_hand_driver_ok(w0, &di, feat);
	CHECK(T_WAIT_UNTIL(t_host_running(&host, 1), 5000));
	buf = txq.pool;
	for (i = 0; i < (int)(sizeof(cases) / sizeof(cases[0])) + 1; i++) {
		struct vop_sg sg = { txq.pool_off + (uint64_t)i * 2048, 12 };
		uint8_t *f = buf + (uint64_t)i * 2048;

		if (i < (int)(sizeof(cases) / sizeof(cases[0]))) {
			memcpy(f, &cases[i].h, 12);
			sg.len += cases[i].flen;
		} else { /* a good broadcast frame */
			memset(f, 0, 12 + 60);
			memset(f + 12, 0xff, 6);
			f[12 + 6] = 0x02; /* locally administered source */
			f[12 + 12] = GOOD_ETHERTYPE >> 8;
			f[12 + 13] = GOOD_ETHERTYPE & 0xff;
			memcpy(f + 12 + 14, good_payload, sizeof(good_payload));
			sg.len += 60;
		}
		CHECK(vop_vq_add(&txq.vq, &sg, 1, 0, (void *)(uintptr_t)(i + 1)) >= 0);
	}
	vop_vq_kick_prepare(&txq.vq);
	vop_window_notify_peer(w0);
	end = t_now_ms() + 5000;
	for (;;) {
		vop_net_stats(net, &st);
		if (st.bad_headers + st.tx_frames + st.tx_dropped >= 7)
			break;
		CHECK(t_now_ms() < end);
		t_sleep_ms(2);
	}
	CHECK_EQ(st.bad_headers, 6);
	CHECK_EQ(st.tx_frames, 1); /* the good frame was handed to the TAP, not dropped */
	CHECK_EQ(st.tx_dropped, 0);
	/* and the interface received it, exactly once and intact (a second look waits 500 ms more) */
	CHECK_EQ(good_frames_seen(sniff, 10000, 1), 1);
	CHECK_EQ(good_frames_seen(sniff, 300, 1), 0);
	close(sniff);
	CHECK(txq.vq.broken == 0);
	CHECK(t_host_running(&host, 1));
	t_host_close(&host);
	vop_net_destroy(net);
	t_host_free(&host);
	vop_devq_destroy(&txq);
	vop_window_close(w1);
	vop_window_close(w0);
	printf("PASS dev-net-hostile\n");
	return T_PASS;
}
