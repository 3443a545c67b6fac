/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A hostile vhost-user front-end against a vop vhost-user device (the
 * counting sink behind vop/vhost_user.h): overlapping, wrapping, empty,
 * too many and too large memory regions, memory that could shrink or is
 * not memory at all, ring addresses outside the regions, absurd queue
 * sizes and indices, too many fds, a truncated message, an oversized
 * payload, packed rings, features never offered, a bad version and an
 * unknown request. Each one: the connection is cut, the device counts a
 * protocol error naming the rule, no fd it was sent stays open and no
 * memory stays mapped. Then a well-behaved front-end on the same socket
 * transmits three frames: all counted, all returned in the order they were
 * made available (the sink offers VIRTIO_F_IN_ORDER), the call eventfd
 * fires, and GET_VRING_BASE reports where the ring stopped.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <signal.h>
#include <sys/stat.h>

#include "helpers.h"
#include "vhuattack.h"
#include "vhuclient.h"
#include "vop/dev_vhost.h"

static char g_dir[256], g_sock[300];

/*
 * The attack just sent on s must end the connection with a protocol error
 * whose rule contains want; nothing sent may stay open or mapped.
 */
static void expect_refused(const char *name, int s, const char *want, int *ours, unsigned nours)
{
	unsigned i;

	if (!vhuc_closed(s, 5000)) {
		fprintf(stderr, "attack %s: the connection stayed open\n", name);
		exit(T_FAIL);
	}
	close(s);
	for (i = 0; i < nours; i++)
		close(ours[i]);
	check_refused(name, want);
}

static int conn(void)
{
	int s = vhuc_connect(g_sock);

	CHECK(s >= 0);
	return s;
}

/* SET_MEM_TABLE with n regions r[] and fds. */
static void send_mem(int s, unsigned n, const uint64_t (*r)[4], const int *fds, unsigned nfds)
{
	uint8_t p[8 + 32 * 9];
	uint32_t hdr[2] = { n, 0 };
	unsigned i;

	memcpy(p, hdr, 8);
	if (n > 8)
		n = 8; /* "nine regions" in a payload that holds eight: the count alone is refused */
	for (i = 0; i < n; i++)
		memcpy(p + 8 + 32 * i, r[i], 32);
	CHECK(vhuc_send(s, VOP_VHU_SET_MEM_TABLE, 0, p, 8 + 32 * n, fds, nfds) == 0);
}

static void attack_regions(const char *name, unsigned n, const uint64_t (*r)[4], const char *want)
{
	int fds[8], s = conn();
	unsigned i, nf = n > 8 ? 8 : n;

	for (i = 0; i < nf; i++)
		CHECK((fds[i] = vhuc_memfd(1u << 20, true)) >= 0);
	send_mem(s, n, r, fds, nf);
	expect_refused(name, s, want, fds, nf);
}

static void attack_memfd(const char *name, int fd, uint64_t size, const char *want)
{
	const uint64_t r[1][4] = { { 0, size, 0x10000000, 0 } };
	int s = conn();

	send_mem(s, 1, r, &fd, 1);
	expect_refused(name, s, want, &fd, 1);
}

/* A valid table of one 1 MiB region (gpa 0, uva VHUC_UVA), then the attack's messages. */
static int conn_with_mem(int *memfd)
{
	const uint64_t r[1][4] = { { 0, 1u << 20, VHUC_UVA, 0 } };
	int s = conn();

	CHECK((*memfd = vhuc_memfd(1u << 20, true)) >= 0);
	send_mem(s, 1, r, memfd, 1);
	return s;
}

static void attack_ring_addr(const char *name, uint64_t desc, uint64_t avail, uint64_t used, const char *want)
{
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} a = { 0, 0, desc, used, avail, 0 };
	int memfd, s = conn_with_mem(&memfd);

	CHECK(vhuc_send_state(s, VOP_VHU_SET_VRING_NUM, 0, 256) == 0);
	CHECK(vhuc_send(s, VOP_VHU_SET_VRING_ADDR, 0, &a, sizeof(a), NULL, 0) == 0);
	expect_refused(name, s, want, &memfd, 1);
}

static void attack_state(const char *name, uint32_t req, uint32_t index, uint32_t num, const char *want)
{
	int s = conn();

	CHECK(vhuc_send_state(s, req, index, num) == 0);
	expect_refused(name, s, want, NULL, 0);
}

static void attack_raw(const char *name, const void *buf, size_t len, bool shut, const char *want)
{
	int s = conn();

	CHECK(vhuc_send_raw(s, buf, len, NULL, 0) == 0);
	if (shut)
		shutdown(s, SHUT_WR);
	expect_refused(name, s, want, NULL, 0);
}

static void good_frontend(void)
{
	struct vhuc_dev d;
	struct vop_devback_counters c;
	struct vop_vq_stats qs;
	uint64_t calls = 0, feat = 0;
	uint32_t st[2] = { 0, 0 }, req = 0;
	struct vop_vring_used *used;
	struct pollfd p;

	CHECK(vhuc_setup_net(&d, g_sock) == 0);
	/* heads made available out of their numeric order: 2, 0, 1 */
	vhuc_post_tx(&d, 2, 60, 0xa1);
	vhuc_post_tx(&d, 0, 1000, 0xa2);
	vhuc_post_tx(&d, 1, 1500, 0xa3);
	CHECK(vhuc_wait_used(&d, 1, 3, 10000));
	/* the sink offers VIRTIO_F_IN_ORDER: it used them in the order they were made available */
	used = (struct vop_vring_used *)(void *)(d.mem + d.r[1].used);
	CHECK_EQ(__atomic_load_n(&used->ring[0].id, __ATOMIC_RELAXED), 2);
	CHECK_EQ(__atomic_load_n(&used->ring[1].id, __ATOMIC_RELAXED), 0);
	CHECK_EQ(__atomic_load_n(&used->ring[2].id, __ATOMIC_RELAXED), 1);
	CHECK(vhuc_send(d.s, VOP_VHU_GET_FEATURES, 0, NULL, 0, NULL, 0) == 0);
	CHECK(vhuc_recv(d.s, &req, &feat, 8, 5000) == 8);
	CHECK_EQ(req, VOP_VHU_GET_FEATURES);
	CHECK((feat >> VOP_F_IN_ORDER) & 1);
	vop_vhost_counters(g_dev, &c);
	CHECK_EQ(c.net.tx_frames, 3);
	CHECK_EQ(c.net.tx_bytes, 60 + 1000 + 1500);
	CHECK(vop_vhu_queue_stats(vop_vhost_vhu(g_dev), 1, &qs) == 0);
	CHECK_EQ(qs.c[VOP_VQS_BUFFERS], 3);
	/* the driver asked for interrupts (no EVENT_IDX, flags 0): the call eventfd fired */
	p = (struct pollfd){ d.r[1].call, POLLIN, 0 };
	CHECK(poll(&p, 1, 5000) == 1);
	CHECK(read(d.r[1].call, &calls, 8) == 8 && calls >= 1);
	CHECK(status().running);
	/* GET_VRING_BASE stops the ring and says where it stopped */
	st[0] = 1;
	CHECK(vhuc_send(d.s, VOP_VHU_GET_VRING_BASE, 0, st, 8, NULL, 0) == 0);
	CHECK(vhuc_recv(d.s, &req, st, 8, 5000) == 8);
	CHECK_EQ(req, VOP_VHU_GET_VRING_BASE);
	CHECK_EQ(st[0], 1);
	CHECK_EQ(st[1], 3);
	CHECK(!status().running);
	CHECK_EQ(status().protocol_errors, g_attacks); /* the good front-end broke no rule */
	vhuc_close(&d);
	wait_disconnects(g_attacks + 1);
	CHECK_EQ(count_fds(), g_baseline_fds);
	printf("served: a well-behaved front-end after %u refused attacks (3 frames, call fired, base 3)\n",
	       g_attacks);
}

/* Address space of this process, KiB (VmSize). */
static uint64_t vm_size_kib(void)
{
	char line[256];
	uint64_t kib = 0;
	FILE *f = fopen("/proc/self/status", "r");

	CHECK(f != NULL);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmSize: %" SCNu64, &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/*
 * A valid 1 MiB region 16 TiB into a sparse memfd: accepted, and only the region is mapped. Mapping
 * the fd from offset 0 would take 16 TiB of address space per connection (the memory limit counts
 * sizes, not offsets), and a few such front-ends would leave the agent unable to map anything.
 */
static void far_offset_maps_region_only(uint64_t disconnects)
{
	const uint64_t off = 16ull << 40;
	const uint64_t r[1][4] = { { 0, 1u << 20, VHUC_UVA, off } };
	uint64_t features = 0, before = vm_size_kib(), during;
	uint32_t req = 0;
	int fd = vhuc_memfd((size_t)(off + (1u << 20)), true), s;

	CHECK(fd >= 0);
	s = conn();
	send_mem(s, 1, r, &fd, 1);
	/* the table is handled before the next message is answered */
	CHECK(vhuc_send(s, VOP_VHU_GET_FEATURES, 0, NULL, 0, NULL, 0) == 0);
	CHECK(vhuc_recv(s, &req, &features, 8, 5000) == 8);
	CHECK_EQ(status().regions, 1);
	during = vm_size_kib();
	if (during > before + (64u << 10)) {
		fprintf(stderr, "a 1 MiB region at offset 16 TiB grew the address space by %" PRIu64 " KiB\n",
			during - before);
		exit(T_FAIL);
	}
	CHECK_EQ(status().protocol_errors, g_attacks);
	close(s);
	close(fd);
	wait_disconnects(disconnects);
	CHECK_EQ(count_fds(), g_baseline_fds);
	printf("mapped: a 1 MiB region 16 TiB into its memfd (address space +%" PRIu64 " KiB)\n", during - before);
}

int main(void)
{
	static struct vop_vhost_config cfg;
	const char *err = NULL;
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	int rc;

	signal(SIGPIPE, SIG_IGN);
	snprintf(g_dir, sizeof(g_dir), "%s/vhu-hostile-XXXXXX", tmp);
	CHECK(mkdtemp(g_dir) != NULL);
	snprintf(g_sock, sizeof(g_sock), "%s/dev.sock", g_dir);
	cfg.kind = VOP_VHOST_SINK;
	cfg.vhu.path = g_sock;
	cfg.vhu.server = true;
	cfg.vhu.socket_gid = -1;
	cfg.vhu.max_mem_bytes = 4u << 20;
	cfg.vhu.max_queue_size = 1024;
	rc = vop_vhost_open(&cfg, &g_dev, &err);
	if (rc) {
		fprintf(stderr, "open: %s: %s\n", err ? err : "?", strerror(-rc));
		return T_FAIL;
	}
	g_baseline_fds = count_fds();

	/* memory tables */
	{
		const uint64_t overlap_gpa[2][4] = { { 0, 0x2000, 0x10000000, 0 }, { 0x1000, 0x2000, 0x20000000, 0 } };
		const uint64_t overlap_uva[2][4] = { { 0, 0x2000, 0x10000000, 0 }, { 0x100000, 0x2000, 0x10001000, 0 } };
		const uint64_t wrap_gpa[1][4] = { { UINT64_MAX - 0xfff, 0x2000, 0x10000000, 0 } };
		const uint64_t wrap_uva[1][4] = { { 0, 0x2000, UINT64_MAX - 0xfff, 0 } };
		const uint64_t wrap_off[1][4] = { { 0, 0x2000, 0x10000000, UINT64_MAX - 0xfff } };
		const uint64_t empty[1][4] = { { 0, 0, 0x10000000, 0 } };
		const uint64_t past_fd[1][4] = { { 0, 2u << 20, 0x10000000, 0 } };
		const uint64_t offset_past_fd[1][4] = { { 0, 0x1000, 0x10000000, 1u << 20 } };
		uint64_t nine[9][4];
		unsigned i;

		for (i = 0; i < 9; i++) {
			nine[i][0] = (uint64_t)i << 24;
			nine[i][1] = 0x1000;
			nine[i][2] = 0x10000000 + ((uint64_t)i << 24);
			nine[i][3] = 0;
		}
		attack_regions("overlapping regions (guest)", 2, overlap_gpa, "overlap (guest");
		attack_regions("overlapping regions (user)", 2, overlap_uva, "overlap (user");
		attack_regions("guest address + size wraps", 1, wrap_gpa, "guest address + size wraps");
		attack_regions("user address + size wraps", 1, wrap_uva, "user address + size wraps");
		attack_regions("mmap offset + size overflows", 1, wrap_off, "mmap offset + size overflows");
		attack_regions("region of size 0", 1, empty, "size 0");
		attack_regions("nine regions", 9, (const uint64_t(*)[4])nine, "more than 8 regions");
		attack_regions("region larger than its fd", 1, past_fd, "smaller than mmap offset + size");
		attack_regions("offset past the end of its fd", 1, offset_past_fd, "smaller than mmap offset + size");
	}
	/* memory that is not memory, or could shrink under us, or is too much */
	{
		int fd = vhuc_memfd(1u << 20, false);

		CHECK(fd >= 0);
		attack_memfd("memfd that cannot be sealed", fd, 1u << 20, "F_SEAL_SHRINK");
		fd = eventfd(0, EFD_CLOEXEC);
		attack_memfd("an eventfd as guest memory", fd, 0x1000, "not a regular file");
		fd = vhuc_memfd(8u << 20, true);
		attack_memfd("more memory than the limit", fd, 8u << 20, "memory limit");
	}
	/* rings */
	attack_ring_addr("descriptor table outside", VHUC_UVA + (1u << 20) - 16, VHUC_UVA + 0x1000,
			 VHUC_UVA + 0x2000, "outside the memory table");
	attack_ring_addr("used ring before the region", VHUC_UVA, VHUC_UVA + 0x1000, VHUC_UVA - 0x1000,
			 "outside the memory table");
	attack_ring_addr("avail ring wraps the address space", VHUC_UVA, UINT64_MAX - 2, VHUC_UVA + 0x2000,
			 "outside the memory table");
	attack_ring_addr("misaligned descriptor table", VHUC_UVA + 8, VHUC_UVA + 0x1000, VHUC_UVA + 0x2000,
			 "misaligned");
	attack_state("queue size 65536", VOP_VHU_SET_VRING_NUM, 0, 65536, "ring size");
	attack_state("queue size 4096 above the limit", VOP_VHU_SET_VRING_NUM, 0, 4096, "ring size");
	attack_state("queue size 3", VOP_VHU_SET_VRING_NUM, 0, 3, "ring size");
	attack_state("queue size 0", VOP_VHU_SET_VRING_NUM, 1, 0, "ring size");
	attack_state("queue index 200", VOP_VHU_SET_VRING_NUM, 200, 256, "ring index");
	attack_state("ring base above 16 bits", VOP_VHU_SET_VRING_BASE, 0, 0x10000, "ring base");
	/* fds */
	{
		int fds[12], s = conn();
		unsigned i;

		for (i = 0; i < 12; i++)
			CHECK((fds[i] = eventfd(0, EFD_CLOEXEC)) >= 0);
		CHECK(vhuc_send_u64(s, VOP_VHU_SET_VRING_KICK, 0, fds, 12) == 0);
		expect_refused("twelve fds on one message", s, "fd count", fds, 12);
		s = conn();
		CHECK((fds[0] = eventfd(0, EFD_CLOEXEC)) >= 0);
		CHECK((fds[1] = eventfd(0, EFD_CLOEXEC)) >= 0);
		CHECK(vhuc_send_u64(s, VOP_VHU_SET_VRING_CALL, 0, fds, 2) == 0);
		expect_refused("two fds on SET_VRING_CALL", s, "fd count", fds, 2);
		s = conn();
		CHECK((fds[0] = eventfd(0, EFD_CLOEXEC)) >= 0);
		CHECK(vhuc_send(s, VOP_VHU_GET_FEATURES, 0, NULL, 0, fds, 1) == 0);
		expect_refused("an fd on GET_FEATURES", s, "fd count", fds, 1);
		s = conn();
		CHECK(vhuc_send_u64(s, VOP_VHU_SET_VRING_KICK, 0, NULL, 0) == 0);
		expect_refused("SET_VRING_KICK without its fd", s, "fd count", NULL, 0);
	}
	/* framing */
	{
		uint32_t trunc[4] = { VOP_VHU_SET_FEATURES, VOP_VHU_VERSION, 8, 0 };
		uint32_t big[3] = { VOP_VHU_SET_MEM_TABLE, VOP_VHU_VERSION, 0x10000 };
		uint32_t badver[5] = { VOP_VHU_SET_FEATURES, 2, 8, 0, 0 };
		uint32_t reply[5] = { VOP_VHU_SET_FEATURES, VOP_VHU_VERSION | VOP_VHU_FLAG_REPLY, 8, 0, 0 };
		uint32_t unknown[3] = { 99, VOP_VHU_VERSION, 0 };
		uint32_t short_state[4] = { VOP_VHU_SET_VRING_NUM, VOP_VHU_VERSION, 4, 0 };
		uint32_t half_header[2] = { VOP_VHU_GET_FEATURES, VOP_VHU_VERSION };

		attack_raw("truncated message", trunc, sizeof(trunc), true, "truncated");
		attack_raw("truncated header", half_header, sizeof(half_header), true, "truncated");
		attack_raw("payload of 64 KiB", big, sizeof(big), false, "payload size");
		attack_raw("version 2", badver, sizeof(badver), false, "version");
		attack_raw("a reply flag from the front-end", reply, sizeof(reply), false, "flags");
		attack_raw("unknown request 99", unknown, sizeof(unknown), false, "unknown request");
		attack_raw("vring state of 4 bytes", short_state, sizeof(short_state), false, "payload size");
	}
	/* features */
	{
		int s = conn();

		CHECK(vhuc_send_u64(s, VOP_VHU_SET_FEATURES, (1ull << VOP_F_VERSION_1) | (1ull << 34), NULL, 0) == 0);
		expect_refused("packed rings", s, "RING_PACKED", NULL, 0);
		s = conn();
		CHECK(vhuc_send_u64(s, VOP_VHU_SET_FEATURES, (1ull << VOP_F_VERSION_1) | (1ull << 60), NULL, 0) == 0);
		expect_refused("features never offered", s, "not offered", NULL, 0);
		s = conn();
		CHECK(vhuc_send_u64(s, VOP_VHU_SET_PROTOCOL_FEATURES, 1ull << 40, NULL, 0) == 0);
		expect_refused("protocol features never offered", s, "not offered", NULL, 0);
		s = conn();
		CHECK(vhuc_send(s, VOP_VHU_GET_CONFIG, 0, (uint32_t[]){ 0, 8, 0, 0, 0 }, 20, NULL, 0) == 0);
		expect_refused("GET_CONFIG on a device without config", s, "PROTOCOL_F_CONFIG", NULL, 0);
	}
	good_frontend();
	far_offset_maps_region_only(g_attacks + 2);
	vop_vhost_close(g_dev);
	/* the socket went with the device */
	{
		struct stat sb;

		CHECK(stat(g_sock, &sb) != 0 && errno == ENOENT);
	}
	rmdir(g_dir);
	printf("PASS: %u hostile messages refused, each cutting only its own connection\n", g_attacks);
	return T_PASS;
}
