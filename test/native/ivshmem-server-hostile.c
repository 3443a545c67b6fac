/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-ivshmem-server against hostile or broken clients: a client that writes (the protocol is
 * one-way) is dropped and the others are told it left; a client that never reads is dropped once
 * its bounded queue overflows, and the server's fd count stays bounded; peers beyond --max-peers
 * are refused until a slot frees; a client that connects and closes at once costs nothing. The
 * server keeps serving well-behaved peers throughout.
 */
#include "ivshmem-helpers.h"

#include <dirent.h>

/* Takes whatever events the server sent a (a well-behaved peer reads its socket). */
static void t_client_drain(struct vop_ivshmem_client *c)
{
	struct vop_ivshmem_event ev[64];

	while (vop_ivshmem_client_process(c, ev, 64) > 0)
		;
}

static int count_fds(pid_t pid)
{
	char p[64];
	DIR *d;
	int n = 0;

	snprintf(p, sizeof(p), "/proc/%d/fd", (int)pid);
	d = opendir(p);
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 2;
}

/* Id from the latest "connect N" line the server printed (after t_server_wait("connect ")). */
static unsigned last_connect_id(struct t_server *s)
{
	char *p = s->buf + s->seen;

	while (p > s->buf && p[-1] == '\n')
		p--;
	while (p > s->buf && p[-1] != '\n')
		p--;
	CHECK(strncmp(p, "connect ", 8) == 0);
	return (unsigned)atoi(p + 8);
}

int main(void)
{
	struct t_server s;
	struct vop_ivshmem_client *a, *b, *c, *x;
	char line[64];
	unsigned idr;

	t_mkdir(s.dir, sizeof(s.dir), "ivs-hostile");
	snprintf(s.sock, sizeof(s.sock), "%s/sock", s.dir);
	const char *argv[] = { "--socket", s.sock,	  "--size", "64K", "--vectors",
			       "64",	   "--max-peers", "3",	    NULL };

	CHECK(t_server_start(&s, argv, "ready ") == 0);
	CHECK_EQ(vop_ivshmem_client_open(s.sock, 64, 5000, &a), 0);
	CHECK_EQ(t_server_wait(&s, "connect ", 5000), 0);

	/* 1. A client that writes is dropped; a hears that it left. */
	CHECK_EQ(vop_ivshmem_client_open(s.sock, 64, 5000, &b), 0);
	CHECK_EQ(t_server_wait(&s, "connect ", 5000), 0);
	unsigned idb = vop_ivshmem_client_id(b);

	CHECK(write(vop_ivshmem_client_fd(b), "hello", 5) == 5);
	snprintf(line, sizeof(line), "disconnect %u sent data", idb);
	CHECK_EQ(t_server_wait(&s, line, 5000), 0);
	CHECK_EQ(t_client_wait(a, VOP_IVSHMEM_PEER_LEFT, idb, -1, 5000), 0);
	vop_ivshmem_client_close(b);

	/* 2. Connect-and-close before reading anything: the server just notices. */
	for (int i = 0; i < 20; i++) {
		close(t_raw_connect(s.sock));
		CHECK_EQ(t_server_wait(&s, "disconnect ", 5000), 0);
		t_client_drain(a);
	}

	/* 3. --max-peers 3: a fourth is refused (closed at once), and admitted once a slot frees.
	 */
	CHECK_EQ(vop_ivshmem_client_open(s.sock, 64, 5000, &b), 0);
	CHECK_EQ(vop_ivshmem_client_open(s.sock, 64, 5000, &c), 0);
	CHECK_EQ(vop_ivshmem_client_open(s.sock, 64, 5000, &x), -ECONNRESET);
	CHECK_EQ(t_server_wait(&s, "reject full", 5000), 0);
	unsigned idc = vop_ivshmem_client_id(c);

	vop_ivshmem_client_close(c);
	CHECK_EQ(t_client_wait(a, VOP_IVSHMEM_PEER_LEFT, idc, -1, 5000), 0);
	CHECK_EQ(vop_ivshmem_client_open(s.sock, 64, 5000, &x), 0);
	vop_ivshmem_client_close(x);
	vop_ivshmem_client_close(b);
	/* Both gone before the next part, which needs the slots. */
	CHECK_EQ(t_server_wait(&s, "disconnect ", 5000), 0);
	CHECK_EQ(t_server_wait(&s, "disconnect ", 5000), 0);

	/*
	 * 4. A client that never reads: every join and leave of others adds to its queue (64 fds
	 * per join); it is dropped when the queue is full, not kept growing.
	 */
	int r = t_raw_connect(s.sock);

	CHECK(r >= 0);
	s.seen = s.len; /* skip the lines so far */
	CHECK_EQ(t_server_wait(&s, "connect ", 5000), 0);
	idr = last_connect_id(&s);
	snprintf(line, sizeof(line), "disconnect %u not reading", idr);
	int dropped = 0, maxfds = 0;

	for (int i = 0; i < 400 && !dropped; i++) {
		CHECK_EQ(vop_ivshmem_client_open(s.sock, 64, 5000, &x), 0);
		unsigned idx = vop_ivshmem_client_id(x);

		vop_ivshmem_client_close(x);
		/* x's slot is free again before the next round; a well-behaved peer keeps up. */
		CHECK_EQ(t_client_wait(a, VOP_IVSHMEM_PEER_LEFT, idx, -1, 5000), 0);
		int n = count_fds(s.pid);

		if (n > maxfds)
			maxfds = n;
		size_t mark = s.seen;

		dropped = strstr(s.buf + s.seen, line) != NULL;
		t_server_pump(&s);
		dropped = dropped || strstr(s.buf + mark, line) != NULL;
	}
	CHECK(dropped);
	/* Bound: sockets + eventfds + a full queue of dup()s for 3 peers, with 64 vectors. */
	fprintf(stderr, "server fds at most %d while a client did not read\n", maxfds);
	CHECK(maxfds < 3 * (1 + 64 + 3 + 4 * 3 * 65) + 32);
	close(r);
	/* a is told: r leaves its peer table (the event itself may have gone by in the loop). */
	int present = 1;

	for (uint64_t t0 = t_now_ms(); present && t_now_ms() - t0 < 5000; t_sleep_ms(5)) {
		uint16_t ids[8];
		int np;

		t_client_drain(a);
		np = vop_ivshmem_client_peers(a, ids, 8);
		present = 0;
		for (int i = 0; i < np && i < 8; i++)
			present |= ids[i] == idr;
	}
	CHECK(!present);

	/* Still serving: a new peer and a ring both ways. */
	CHECK_EQ(vop_ivshmem_client_open(s.sock, 64, 5000, &b), 0);
	CHECK_EQ(t_client_wait(a, VOP_IVSHMEM_PEER_VECTOR, vop_ivshmem_client_id(b), 63, 5000), 0);
	CHECK_EQ(vop_ivshmem_client_ring(a, vop_ivshmem_client_id(b), 63), 0);
	CHECK_EQ(t_wait_ring(b, 63, 2000), 1);
	CHECK_EQ(vop_ivshmem_client_ring(b, vop_ivshmem_client_id(a), 0), 0);
	CHECK_EQ(t_wait_ring(a, 0, 2000), 1);

	vop_ivshmem_client_close(a);
	vop_ivshmem_client_close(b);
	t_server_stop(&s);
	rmdir(s.dir);
	return T_PASS;
}
