/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vnet-capture IFNAME RXBUF - what an interface receives, as the kernel holds
 * it: a packet socket bound to IFNAME with PACKET_VNET_HDR, so every frame
 * arrives with the virtio-net header the kernel built from its skb (gso_type
 * and gso_size of a TSO frame written to a TAP). Counts inbound frames only
 * (not PACKET_OUTGOING). Runs until SIGTERM/SIGINT, then prints one JSON line:
 *
 *   {"frames":N,"bytes":N,"max_len":N,"gso_tcpv4":N,"gso_tcpv6":N,"gso_other":N,
 *    "max_gso_size":N,"big_frames":N,"buffers":N,"drops":N}
 *
 * big_frames: frames longer than one receive buffer of RXBUF bytes (header
 * of 12 bytes included); buffers: the receive buffers of RXBUF bytes these
 * frames need, ceil((len + 12) / RXBUF) each; drops: frames the socket lost
 * (PACKET_STATISTICS), which makes the other figures incomplete.
 * A test tool (test/devices/net.test.ts builds it); needs CAP_NET_RAW.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define VNET_HDR 10u /* struct virtio_net_hdr: what PACKET_VNET_HDR prepends */
#define MRG_HDR 12u  /* the header in a receive buffer (with num_buffers) */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

int main(int argc, char **argv)
{
	struct sockaddr_ll sll;
	struct tpacket_stats st;
	socklen_t stl = sizeof(st);
	uint64_t frames = 0, bytes = 0, max_len = 0, v4 = 0, v6 = 0, other = 0, max_gso = 0, big = 0, bufs = 0;
	unsigned long rxbuf;
	uint64_t drops = 0;
	int s, one = 1, rcv = 256 << 20;
	uint8_t buf[VNET_HDR + 64];

	if (argc != 3 || (rxbuf = strtoul(argv[2], NULL, 10)) == 0) {
		fprintf(stderr, "usage: vnet-capture IFNAME RXBUF\n");
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	/* protocol 0: nothing arrives until bind() names the interface and ETH_P_ALL */
	s = socket(AF_PACKET, SOCK_RAW, 0);
	if (s < 0 || setsockopt(s, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one)) != 0) {
		perror("vnet-capture: packet socket with PACKET_VNET_HDR");
		return 1;
	}
	/* room for a few seconds of 64 KiB frames if this process is starved for a while */
	if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) != 0)
		setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	memset(&sll, 0, sizeof(sll));
	sll.sll_family = AF_PACKET;
	sll.sll_protocol = htons(ETH_P_ALL);
	sll.sll_ifindex = (int)if_nametoindex(argv[1]);
	if (sll.sll_ifindex == 0 || bind(s, (struct sockaddr *)&sll, sizeof(sll)) != 0) {
		fprintf(stderr, "vnet-capture: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	getsockopt(s, SOL_PACKET, PACKET_STATISTICS, &st, &stl); /* resets the counters */
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		struct pollfd p = { s, POLLIN, 0 };
		struct sockaddr_ll from;
		socklen_t fl = sizeof(from);
		struct virtio_net_hdr h;
		ssize_t r;
		uint64_t len;

		if (!g_stop && poll(&p, 1, 100) <= 0)
			continue;
		/* MSG_TRUNC: the frame's real length, though only its first bytes are copied */
		r = recvfrom(s, buf, sizeof(buf), MSG_TRUNC | MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (r < 0 && g_stop && errno == EAGAIN)
			break; /* stopped, and what was queued is read */
		if (r < (ssize_t)VNET_HDR || from.sll_pkttype == PACKET_OUTGOING)
			continue;
		memcpy(&h, buf, sizeof(h));
		len = (uint64_t)r - VNET_HDR;
		frames++;
		bytes += len;
		if (len > max_len)
			max_len = len;
		if (len + MRG_HDR > rxbuf)
			big++;
		bufs += (len + MRG_HDR + rxbuf - 1) / rxbuf;
		switch (h.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) {
		case VIRTIO_NET_HDR_GSO_NONE:
			break;
		case VIRTIO_NET_HDR_GSO_TCPV4:
			v4++;
			break;
		case VIRTIO_NET_HDR_GSO_TCPV6:
			v6++;
			break;
		default:
			other++;
		}
		if (h.gso_type != VIRTIO_NET_HDR_GSO_NONE && h.gso_size > max_gso)
			max_gso = h.gso_size;
	}
	stl = sizeof(st);
	if (getsockopt(s, SOL_PACKET, PACKET_STATISTICS, &st, &stl) == 0)
		drops = st.tp_drops;
	printf("{\"frames\":%llu,\"bytes\":%llu,\"max_len\":%llu,\"gso_tcpv4\":%llu,\"gso_tcpv6\":%llu,"
	       "\"gso_other\":%llu,\"max_gso_size\":%llu,\"big_frames\":%llu,\"buffers\":%llu,\"drops\":%llu}\n",
	       (unsigned long long)frames, (unsigned long long)bytes, (unsigned long long)max_len,
	       (unsigned long long)v4, (unsigned long long)v6, (unsigned long long)other,
	       (unsigned long long)max_gso, (unsigned long long)big, (unsigned long long)bufs,
	       (unsigned long long)drops);
	close(s);
	return 0;
}
