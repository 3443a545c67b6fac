/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Multiqueue against a vop vhost-user device with two queue pairs (the
 * counting sink, four rings: rx 0, tx 1, rx1 2, tx1 3).
 *
 * Hostile front-ends, each on its own connection: a ring index beyond the
 * two pairs on SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_KICK (with an
 * eventfd), GET_VRING_BASE and SET_VRING_ENABLE; pair 1 sized above the
 * limit while pair 0 runs; pair 1 with a ring base more than a ring ahead
 * of its used index while pair 0 runs. Each ends its connection with a
 * protocol error naming the rule, keeps no fd and no mapping.
 * SET_VRING_ENABLE on a ring that is not set up is not a violation (the
 * vhost-user protocol lets a front-end enable a ring at any time; QEMU
 * sends enables for pairs a guest never configured): it is remembered,
 * nothing starts, the pair starts once its rings are set up.
 *
 * Then a well-behaved front-end: pairs of different ring sizes (64 and
 * 256) both carry frames; pair 1 is stopped (GET_VRING_BASE) and set up
 * again with another size (SET_VRING_NUM/BASE/ADDR/CALL/KICK), and after
 * every one of those messages a frame sent on pair 0 completes; over the
 * whole re-setup the rings started once (pair 1) and stopped once (pair
 * 1): pair 0 never stopped. SET_VRING_ENABLE 0 on pair 1 stops pair 1 only.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "helpers.h"
#include "vhuattack.h"
#include "vhuclient.h"
#include "vop/dev_vhost.h"

static char g_dir[64], g_sock[100];
static atomic_uint g_stopped, g_started;

static void on_event(void *ctx, const struct vop_vhu_event *ev)
{
	(void)ctx;
	if (ev->type == VOP_VHU_EV_STOPPED)
		atomic_fetch_add(&g_stopped, 1);
	else if (ev->type == VOP_VHU_EV_STARTED)
		atomic_fetch_add(&g_started, 1);
}

/* The front-end of this test: four rings in one sealed memfd, any size up to 256. */
#define MQ_RINGS 4u

struct mq_ring {
	uint64_t desc, avail, used; /* offsets in the memfd */
	uint32_t num;
	int kick, call;
	uint16_t avail_idx;
};

struct mq_dev {
	int s, memfd;
	uint8_t *mem;
	struct mq_ring r[MQ_RINGS];
};

static int conn(void)
{
	int s = vhuc_connect(g_sock);

	CHECK(s >= 0);
	return s;
}

/* Features (VERSION_1), owner, the memory table. */
static void mq_open(struct mq_dev *d)
{
	uint64_t feat = 0;
	uint32_t req = 0;
	unsigned q;

	memset(d, 0, sizeof(*d));
	CHECK((d->memfd = vhuc_memfd(VHUC_MEM_SIZE, true)) >= 0);
	d->mem = mmap(NULL, VHUC_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, d->memfd, 0);
	CHECK(d->mem != MAP_FAILED);
	d->s = conn();
	CHECK(vhuc_send(d->s, VOP_VHU_GET_FEATURES, 0, NULL, 0, NULL, 0) == 0);
	CHECK(vhuc_recv(d->s, &req, &feat, 8, 5000) == 8 && req == VOP_VHU_GET_FEATURES);
	CHECK((feat >> VOP_F_VERSION_1) & 1);
	CHECK(vhuc_send_u64(d->s, VOP_VHU_SET_OWNER, 0, NULL, 0) == 0);
	CHECK(vhuc_send_u64(d->s, VOP_VHU_SET_FEATURES, 1ull << VOP_F_VERSION_1, NULL, 0) == 0);
	CHECK(vhuc_set_mem(&(struct vhuc_dev){ .s = d->s, .memfd = d->memfd }) == 0);
	for (q = 0; q < MQ_RINGS; q++) {
		d->r[q].kick = d->r[q].call = -1;
		d->r[q].desc = 0x1000 + q * 0x4000;
		d->r[q].avail = d->r[q].desc + 0x1000;
		d->r[q].used = d->r[q].desc + 0x2000;
	}
}

static void mq_addr(struct mq_dev *d, unsigned q)
{
	struct {
		uint32_t index, flags;
		uint64_t desc, used, avail, log;
	} a = { q, 0, VHUC_UVA + d->r[q].desc, VHUC_UVA + d->r[q].used, VHUC_UVA + d->r[q].avail, 0 };

	CHECK(vhuc_send(d->s, VOP_VHU_SET_VRING_ADDR, 0, &a, sizeof(a), NULL, 0) == 0);
}

static void mq_eventfds(struct mq_dev *d, unsigned q)
{
	if (d->r[q].kick >= 0)
		close(d->r[q].kick);
	if (d->r[q].call >= 0)
		close(d->r[q].call);
	CHECK((d->r[q].kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) >= 0);
	CHECK((d->r[q].call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) >= 0);
}

/* Ring q of num entries, fresh (its used index is wherever the device left it: base = that). */
static void mq_ring(struct mq_dev *d, unsigned q, uint32_t num)
{
	struct vop_vring_used *used = (struct vop_vring_used *)(void *)(d->mem + d->r[q].used);

	d->r[q].num = num;
	d->r[q].avail_idx = __atomic_load_n(&used->idx, __ATOMIC_ACQUIRE);
	mq_eventfds(d, q);
	CHECK(vhuc_send_state(d->s, VOP_VHU_SET_VRING_NUM, q, num) == 0);
	CHECK(vhuc_send_state(d->s, VOP_VHU_SET_VRING_BASE, q, d->r[q].avail_idx) == 0);
	mq_addr(d, q);
	CHECK(vhuc_send_u64(d->s, VOP_VHU_SET_VRING_CALL, q, &d->r[q].call, 1) == 0);
	CHECK(vhuc_send_u64(d->s, VOP_VHU_SET_VRING_KICK, q, &d->r[q].kick, 1) == 0);
}

/* Post one 60-byte frame on pair p's transmit ring and kick. */
static void mq_post(struct mq_dev *d, unsigned p)
{
	struct mq_ring *r = &d->r[2 * p + 1];
	struct vop_vring_desc *desc = (struct vop_vring_desc *)(void *)(d->mem + r->desc);
	struct vop_vring_avail *avail = (struct vop_vring_avail *)(void *)(d->mem + r->avail);
	uint16_t head = (uint16_t)(r->avail_idx % r->num);
	uint64_t buf = 0x20000 + (uint64_t)p * 0x40000 + (uint64_t)(head % 64) * 2048;
	uint64_t one = 1;

	memset(d->mem + buf, 0, 12);
	memset(d->mem + buf + 12, 0xb0 + (int)p, 60);
	desc[head].addr = VHUC_GPA + buf;
	desc[head].len = 12 + 60;
	desc[head].flags = 0;
	desc[head].next = 0;
	avail->ring[head] = head;
	__atomic_store_n(&avail->idx, (uint16_t)(r->avail_idx + 1), __ATOMIC_RELEASE);
	r->avail_idx++;
	CHECK(write(r->kick, &one, 8) == 8);
}

/* Pair p's transmit ring: every posted frame returned (within 10 s). */
static bool mq_done(struct mq_dev *d, unsigned p)
{
	struct mq_ring *r = &d->r[2 * p + 1];
	struct vop_vring_used *used = (struct vop_vring_used *)(void *)(d->mem + r->used);
	uint64_t end = t_now_ms() + 10000;

	while (__atomic_load_n(&used->idx, __ATOMIC_ACQUIRE) != r->avail_idx) {
		if (t_now_ms() > end)
			return false;
		t_sleep_ms(1);
	}
	return true;
}

/* One frame on pair 0 goes through while pair 1 is being set up. */
/*
 * Every message sent on d so far has been handled: the device answers GET_FEATURES after them (one
 * session thread, messages in order). Kicks travel by eventfd, not by the socket, so without this a
 * frame on pair 0 could complete before the message under test was even read.
 */
static void ctl_sync(struct mq_dev *d)
{
	uint64_t features = 0;
	uint32_t req = 0;

	CHECK(vhuc_send(d->s, VOP_VHU_GET_FEATURES, 0, NULL, 0, NULL, 0) == 0);
	CHECK(vhuc_recv(d->s, &req, &features, 8, 5000) == 8);
	CHECK_EQ(req, VOP_VHU_GET_FEATURES);
}

/* After the message `during` was handled, a frame sent on pair 0 completes. */
static void pair0_moves(struct mq_dev *d, const char *during)
{
	ctl_sync(d);
	mq_post(d, 0);
	if (!mq_done(d, 0)) {
		fprintf(stderr, "pair 0 stopped moving during %s\n", during);
		exit(T_FAIL);
	}
}

static uint64_t ring_buffers(unsigned q)
{
	struct vop_vq_stats qs;

	CHECK(vop_vhu_queue_stats(vop_vhost_vhu(g_dev), q, &qs) == 0);
	return qs.c[VOP_VQS_BUFFERS];
}

static void mq_close(struct mq_dev *d)
{
	unsigned q;

	if (d->s >= 0)
		close(d->s);
	for (q = 0; q < MQ_RINGS; q++) {
		if (d->r[q].kick >= 0)
			close(d->r[q].kick);
		if (d->r[q].call >= 0)
			close(d->r[q].call);
	}
	munmap(d->mem, VHUC_MEM_SIZE);
	close(d->memfd);
	memset(d, 0, sizeof(*d));
	d->s = -1;
}

/* The connection must have been ended for a rule containing want; nothing kept. */
static void expect_refused(const char *name, struct mq_dev *d, int s, const char *want, int *ours, unsigned nours)
{
	unsigned i;

	if (!vhuc_closed(d ? d->s : s, 5000)) {
		fprintf(stderr, "attack %s: the connection stayed open\n", name);
		exit(T_FAIL);
	}
	if (d)
		mq_close(d);
	else
		close(s);
	for (i = 0; i < nours; i++)
		close(ours[i]);
	check_refused(name, want);
}

static void attack_index(const char *name, uint32_t req, uint32_t index)
{
	int s = conn();

	CHECK(vhuc_send_state(s, req, index, 64) == 0);
	expect_refused(name, NULL, s, "ring index", NULL, 0);
}

static void attacks(void)
{
	struct mq_dev d;
	int fd, s;

	attack_index("SET_VRING_NUM on ring 4 (two pairs: 0-3)", VOP_VHU_SET_VRING_NUM, 4);
	attack_index("GET_VRING_BASE on ring 4", VOP_VHU_GET_VRING_BASE, 4);
	attack_index("SET_VRING_ENABLE on ring 7", VOP_VHU_SET_VRING_ENABLE, 7);
	attack_index("SET_VRING_BASE on ring 200", VOP_VHU_SET_VRING_BASE, 200);
	{
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} a = { 6, 0, VHUC_UVA + 0x1000, VHUC_UVA + 0x3000, VHUC_UVA + 0x2000, 0 };

		s = conn();
		CHECK(vhuc_send(s, VOP_VHU_SET_VRING_ADDR, 0, &a, sizeof(a), NULL, 0) == 0);
		expect_refused("SET_VRING_ADDR on ring 6", NULL, s, "ring index", NULL, 0);
	}
	s = conn();
	CHECK((fd = eventfd(0, EFD_CLOEXEC)) >= 0);
	CHECK(vhuc_send_u64(s, VOP_VHU_SET_VRING_KICK, 5, &fd, 1) == 0);
	expect_refused("a kick fd for ring 5, which does not exist", NULL, s, "ring index", &fd, 1);

	/* pair 1 sized above the limit while pair 0 runs: the connection ends, both pairs reset */
	mq_open(&d);
	mq_ring(&d, 0, 64);
	mq_ring(&d, 1, 64);
	pair0_moves(&d, "the set-up");
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_NUM, 2, 2048) == 0);
	expect_refused("pair 1 ring of 2048 (limit 1024) while pair 0 runs", &d, -1, "ring size", NULL, 0);

	/* pair 1's base more than a ring ahead of its used index: refused when pair 1 would start */
	mq_open(&d);
	mq_ring(&d, 0, 64);
	mq_ring(&d, 1, 64);
	pair0_moves(&d, "the set-up");
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_NUM, 2, 64) == 0);
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_NUM, 3, 64) == 0);
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_BASE, 2, 0) == 0);
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_BASE, 3, 1000) == 0);
	mq_addr(&d, 2);
	mq_addr(&d, 3);
	mq_eventfds(&d, 2);
	mq_eventfds(&d, 3);
	CHECK(vhuc_send_u64(d.s, VOP_VHU_SET_VRING_KICK, 2, &d.r[2].kick, 1) == 0);
	CHECK(vhuc_send_u64(d.s, VOP_VHU_SET_VRING_KICK, 3, &d.r[3].kick, 1) == 0);
	expect_refused("pair 1 base 1000 on a fresh ring of 64 while pair 0 runs", &d, -1, "ring base", NULL, 0);
}

/* The used index of ring q (the device's). */
static uint16_t used_of(struct mq_dev *d, unsigned q)
{
	return __atomic_load_n(&((struct vop_vring_used *)(void *)(d->mem + d->r[q].used))->idx, __ATOMIC_ACQUIRE);
}

static void well_behaved(void)
{
	struct mq_dev d;
	uint64_t tx0, tx1, starts0, base0 = ring_buffers(1), base1 = ring_buffers(3); /* counters outlive connections */
	unsigned stopped0, started0, k;
	uint32_t st[2] = { 2, 0 }, req = 0;

	mq_open(&d);
	/* SET_VRING_ENABLE 1 on pair 1's rings before they are set up: remembered, nothing starts */
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_ENABLE, 2, 1) == 0);
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_ENABLE, 3, 1) == 0);
	mq_ring(&d, 0, 64);
	mq_ring(&d, 1, 64);
	pair0_moves(&d, "pair 0's set-up");
	CHECK(status().connected && status().running);
	CHECK_EQ(status().protocol_errors, g_attacks);
	/* pair 1 of another size (256): it starts once its rings are there, both pairs carry frames */
	mq_ring(&d, 2, 256);
	mq_ring(&d, 3, 256);
	for (k = 0; k < 5; k++) {
		mq_post(&d, 0);
		mq_post(&d, 1);
	}
	CHECK(mq_done(&d, 0) && mq_done(&d, 1));
	tx0 = ring_buffers(1);
	tx1 = ring_buffers(3);
	CHECK_EQ(tx0 - base0, 6);
	CHECK_EQ(tx1 - base1, 5);

	/* pair 1 re-set up while pair 0 runs: pair 0 moves after every message */
	stopped0 = atomic_load(&g_stopped);
	started0 = atomic_load(&g_started);
	starts0 = status().starts;
	CHECK(vhuc_send(d.s, VOP_VHU_GET_VRING_BASE, 0, st, 8, NULL, 0) == 0);
	CHECK(vhuc_recv(d.s, &req, st, 8, 5000) == 8 && req == VOP_VHU_GET_VRING_BASE);
	CHECK_EQ(st[0], 2);
	CHECK_EQ(st[1], used_of(&d, 2)); /* rx1 took nothing: base = its used index */
	CHECK(status().running);         /* pair 0 still runs */
	pair0_moves(&d, "GET_VRING_BASE on ring 2");
	st[0] = 3;
	CHECK(vhuc_send(d.s, VOP_VHU_GET_VRING_BASE, 0, st, 8, NULL, 0) == 0);
	CHECK(vhuc_recv(d.s, &req, st, 8, 5000) == 8 && req == VOP_VHU_GET_VRING_BASE);
	CHECK_EQ(st[1], 5); /* tx1 stopped after its five frames */
	pair0_moves(&d, "GET_VRING_BASE on ring 3");
	for (k = 2; k < 4; k++) {
		d.r[k].num = 128;
		d.r[k].avail_idx = used_of(&d, k);
		CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_NUM, k, 128) == 0);
		pair0_moves(&d, "SET_VRING_NUM on pair 1");
		CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_BASE, k, d.r[k].avail_idx) == 0);
		pair0_moves(&d, "SET_VRING_BASE on pair 1");
		mq_addr(&d, k);
		pair0_moves(&d, "SET_VRING_ADDR on pair 1");
		mq_eventfds(&d, k);
		CHECK(vhuc_send_u64(d.s, VOP_VHU_SET_VRING_CALL, k, &d.r[k].call, 1) == 0);
		pair0_moves(&d, "SET_VRING_CALL on pair 1");
		CHECK(vhuc_send_u64(d.s, VOP_VHU_SET_VRING_KICK, k, &d.r[k].kick, 1) == 0);
		pair0_moves(&d, "SET_VRING_KICK on pair 1");
	}
	mq_post(&d, 1);
	CHECK(mq_done(&d, 1));
	/* over the whole re-setup: one stop (pair 1) and one start (pair 1); pair 0 never stopped */
	if (atomic_load(&g_stopped) - stopped0 != 1 || atomic_load(&g_started) - started0 != 1 ||
	    status().starts - starts0 != 1) {
		fprintf(stderr, "re-setting pair 1: %u stops, %u starts (%llu counted), want 1 and 1\n",
			atomic_load(&g_stopped) - stopped0, atomic_load(&g_started) - started0,
			(unsigned long long)(status().starts - starts0));
		exit(T_FAIL);
	}
	CHECK_EQ(ring_buffers(1), tx0 + 2 + 10); /* pair 0's frames during the re-setup, none lost */
	CHECK_EQ(ring_buffers(3), tx1 + 1);

	/* SET_VRING_ENABLE 0 on pair 1 stops pair 1 only; 1 starts it again */
	stopped0 = atomic_load(&g_stopped);
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_ENABLE, 3, 0) == 0);
	pair0_moves(&d, "SET_VRING_ENABLE 0 on ring 3");
	{
		uint64_t end = t_now_ms() + 5000; /* the stop event may come from the worker */

		while (atomic_load(&g_stopped) - stopped0 < 1 && t_now_ms() < end)
			t_sleep_ms(2);
	}
	CHECK_EQ(atomic_load(&g_stopped) - stopped0, 1);
	CHECK(vhuc_send_state(d.s, VOP_VHU_SET_VRING_ENABLE, 3, 1) == 0);
	mq_post(&d, 1);
	CHECK(mq_done(&d, 1));
	pair0_moves(&d, "SET_VRING_ENABLE 1 on ring 3");
	CHECK_EQ(status().protocol_errors, g_attacks); /* the good front-end broke no rule */
	mq_close(&d);
	wait_disconnects(g_attacks + 1);
	CHECK_EQ(count_fds(), g_baseline_fds);
	printf("served: two pairs of 64 and 256 entries; pair 1 stopped and set up again with 128 while pair 0 "
	       "moved a frame after each of its 12 messages (1 stop, 1 start); ENABLE 0 stopped pair 1 only\n");
}

int main(void)
{
	static struct vop_vhost_config cfg;
	const char *err = NULL;
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	int rc;

	signal(SIGPIPE, SIG_IGN);
	snprintf(g_dir, sizeof(g_dir), "%s/vhu-mq-XXXXXX", tmp);
	CHECK(mkdtemp(g_dir) != NULL);
	snprintf(g_sock, sizeof(g_sock), "%s/dev.sock", g_dir);
	cfg.kind = VOP_VHOST_SINK;
	cfg.queue_pairs = 2;
	cfg.vhu.path = g_sock;
	cfg.vhu.server = true;
	cfg.vhu.socket_gid = -1;
	cfg.vhu.max_mem_bytes = 4u << 20;
	cfg.vhu.max_queue_size = 1024;
	cfg.vhu.on_event = on_event;
	rc = vop_vhost_open(&cfg, &g_dev, &err);
	if (rc) {
		fprintf(stderr, "open: %s: %s\n", err ? err : "?", strerror(-rc));
		return T_FAIL;
	}
	CHECK_EQ(vop_vhost_rings(g_dev), 4);
	g_baseline_fds = count_fds();
	attacks();
	well_behaved();
	vop_vhost_close(g_dev);
	rmdir(g_dir);
	printf("PASS: %u multiqueue attacks refused; a two-pair front-end served, pairs stopped one at a time\n",
	       g_attacks);
	return T_PASS;
}
