/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host peer API against a hostile ivshmem server (a fake one in a thread): a wrong version,
 * an id beyond 65535, shared memory without an fd or as a pipe, two fds on one message, an fd in
 * the middle of a message, a negative peer id after the handshake, silence (time-out) and a close
 * mid-handshake are each refused with -EPROTO / -ETIMEDOUT / -ECONNRESET; floods of peers and
 * vectors beyond the tables are dropped and counted. No fd leaks in any case.
 */
#include "ivshmem-helpers.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

struct fake {
	int listen_fd;
	int scenario;
	int memfd;
	int sent[2]; /* scenario 9: the server says "first half sent" */
	int go[2];   /* scenario 9: the client has read it; send the second half */
};

static int count_own_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	CHECK(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", "..", and the fd of the DIR itself */
}

/* Sends value with fds (n of them, may be 0); the fake server sends nothing partial. */
static void send_msg(int s, int64_t value, const int *fds, int n)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} cm;
	unsigned char b[8];
	struct iovec iov = { b, 8 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)((uint64_t)value >> (8 * i));
	if (n > 0) {
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.buf;
		mh.msg_controllen = CMSG_SPACE((size_t)n * sizeof(int));
		struct cmsghdr *h = CMSG_FIRSTHDR(&mh);

		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN((size_t)n * sizeof(int));
		memcpy(CMSG_DATA(h), fds, (size_t)n * sizeof(int));
	}
	CHECK(sendmsg(s, &mh, MSG_NOSIGNAL) == 8);
}

static void send_efd(int s, int64_t value)
{
	int e = eventfd(0, EFD_CLOEXEC);

	send_msg(s, value, &e, 1);
	close(e);
}

/* The good preamble: version 0, id 7, shared memory. */
static void hello(struct fake *f, int s)
{
	send_msg(s, 0, NULL, 0);
	send_msg(s, 7, NULL, 0);
	send_msg(s, -1, &f->memfd, 1);
}

static void *serve(void *arg)
{
	struct fake *f = arg;
	int s = accept(f->listen_fd, NULL, NULL);
	int p[2], two[2];

	CHECK(s >= 0);
	switch (f->scenario) {
	case 0: /* version 1 */
		send_msg(s, 1, NULL, 0);
		break;
	case 1: /* id out of range */
		send_msg(s, 0, NULL, 0);
		send_msg(s, 65536, NULL, 0);
		break;
	case 2: /* shm message without an fd */
		send_msg(s, 0, NULL, 0);
		send_msg(s, 7, NULL, 0);
		send_msg(s, -1, NULL, 0);
		break;
	case 3: /* shm is a pipe */
		CHECK(pipe(p) == 0);
		send_msg(s, 0, NULL, 0);
		send_msg(s, 7, NULL, 0);
		send_msg(s, -1, &p[0], 1);
		close(p[0]);
		close(p[1]);
		break;
	case 4: /* two fds on one message */
		two[0] = eventfd(0, 0);
		two[1] = eventfd(0, 0);
		send_msg(s, 0, NULL, 0);
		send_msg(s, 7, NULL, 0);
		send_msg(s, -1, two, 2);
		close(two[0]);
		close(two[1]);
		break;
	case 5: /* good handshake, then a negative peer id */
		hello(f, s);
		send_efd(s, 7);
		send_efd(s, 3);
		t_sleep_ms(100); /* after open() has returned */
		send_msg(s, -5, NULL, 0);
		break;
	case 6: /* silence */
		t_sleep_ms(400);
		break;
	case 7: /* closes after the version */
		send_msg(s, 0, NULL, 0);
		break;
	case 8: /* MAX_PEERS + 44 peers, one with 70 vectors: the tables cap them */
		hello(f, s);
		send_efd(s, 7);
		for (int id = 100; id < 100 + VOP_IVSHMEM_MAX_PEERS + 44; id++)
			for (int v = 0; v < (id == 100 ? 70 : 1); v++)
				send_efd(s, id);
		send_msg(s, 100, NULL, 0); /* peer 100 leaves */
		t_sleep_ms(300);
		break;
	case 9: /* an fd that arrives with the 2nd half of a message */
		hello(f, s);
		send_efd(s, 7);
		{
			unsigned char b[4] = { 3, 0, 0, 0 };
			int e = eventfd(0, 0);

			char one = 1;

			CHECK(write(s, b, 4) == 4);
			/* The client reads the first half before the second exists (else one read may return both). */
			CHECK(write(f->sent[1], &one, 1) == 1);
			CHECK(read(f->go[0], &one, 1) == 1);
			union {
				struct cmsghdr h;
				char buf[CMSG_SPACE(sizeof(int))];
			} cm;
			unsigned char z[4] = { 0 };
			struct iovec iov = { z, 4 };
			struct msghdr mh = { .msg_iov = &iov,
					     .msg_iovlen = 1,
					     .msg_control = cm.buf,
					     .msg_controllen = sizeof(cm.buf) };
			struct cmsghdr *h = CMSG_FIRSTHDR(&mh);

			memset(cm.buf, 0, sizeof(cm.buf));
			h->cmsg_level = SOL_SOCKET;
			h->cmsg_type = SCM_RIGHTS;
			h->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(h), &e, sizeof(int));
			CHECK(sendmsg(s, &mh, MSG_NOSIGNAL) == 4);
			close(e);
		}
		t_sleep_ms(200);
		break;
	}
	t_sleep_ms(50);
	close(s);
	return NULL;
}

static int run(const char *sock, int listen_fd, int memfd, int scenario,
	       struct vop_ivshmem_client **out)
{
	struct fake f = { .listen_fd = listen_fd, .scenario = scenario, .memfd = memfd };
	pthread_t t;
	int err;

	CHECK(pthread_create(&t, NULL, serve, &f) == 0);
	err = vop_ivshmem_client_open(sock, 1, 300, out);
	pthread_join(t, NULL);
	return err;
}

/* After the handshake: process until an error (or 2 s). */
static int drain_err(struct vop_ivshmem_client *c)
{
	struct vop_ivshmem_event ev[64];

	for (uint64_t t0 = t_now_ms(); t_now_ms() - t0 < 2000; t_sleep_ms(5)) {
		int n = vop_ivshmem_client_process(c, ev, 64);

		if (n < 0)
			return n;
	}
	return 0;
}

int main(void)
{
	char dir[160], sock[220];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vop_ivshmem_client *c;
	int l, memfd, base;

	t_mkdir(dir, sizeof(dir), "ivc-hostile");
	snprintf(sock, sizeof(sock), "%s/sock", dir);
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(l, 4) == 0);
	memfd = memfd_create("fake-ivshmem", MFD_CLOEXEC);
	CHECK(memfd >= 0 && ftruncate(memfd, 65536) == 0);
	base = count_own_fds();

	CHECK_EQ(run(sock, l, memfd, 0, &c), -EPROTO);
	CHECK_EQ(run(sock, l, memfd, 1, &c), -EPROTO);
	CHECK_EQ(run(sock, l, memfd, 2, &c), -EPROTO);
	CHECK_EQ(run(sock, l, memfd, 3, &c), -EPROTO);
	CHECK_EQ(run(sock, l, memfd, 4, &c), -EPROTO);
	CHECK(c == NULL);
	CHECK_EQ(count_own_fds(), base);

	CHECK_EQ(run(sock, l, memfd, 5, &c), 0);
	CHECK_EQ(vop_ivshmem_client_id(c), 7);
	CHECK_EQ(vop_ivshmem_client_shm_size(c), 65536);
	CHECK_EQ(drain_err(c), -EPROTO);
	CHECK_EQ(drain_err(c), -EPROTO); /* stays failed */
	vop_ivshmem_client_close(c);
	CHECK_EQ(count_own_fds(), base);

	CHECK_EQ(run(sock, l, memfd, 6, &c), -ETIMEDOUT);
	CHECK_EQ(run(sock, l, memfd, 7, &c), -ECONNRESET);
	CHECK_EQ(count_own_fds(), base);

	/* Floods: kept within the tables, the rest closed and counted. */
	{
		struct fake f = { .listen_fd = l, .scenario = 8, .memfd = memfd };
		pthread_t t;

		CHECK(pthread_create(&t, NULL, serve, &f) == 0);
		CHECK_EQ(vop_ivshmem_client_open(sock, 1, 2000, &c), 0);
		CHECK_EQ(drain_err(c), -ECONNRESET);
		pthread_join(t, NULL);
		uint16_t ids[VOP_IVSHMEM_MAX_PEERS];

		/* 100 left; the table held MAX_PEERS, so MAX_PEERS - 1 remain. */
		CHECK_EQ(vop_ivshmem_client_peers(c, ids, VOP_IVSHMEM_MAX_PEERS),
			 VOP_IVSHMEM_MAX_PEERS - 1);
		CHECK_EQ(vop_ivshmem_client_dropped(c), 44 + (70 - VOP_IVSHMEM_MAX_VECTORS) + 0);
		CHECK(count_own_fds() <= base + 2 + VOP_IVSHMEM_MAX_PEERS);
		vop_ivshmem_client_close(c);
		CHECK_EQ(count_own_fds(), base);
	}
	/* An fd with the second half of a message. */
	{
		struct fake f = { .listen_fd = l, .scenario = 9, .memfd = memfd };
		struct vop_ivshmem_event ev[64];
		pthread_t t;
		char one = 1;

		CHECK(pipe(f.sent) == 0 && pipe(f.go) == 0);
		CHECK(pthread_create(&t, NULL, serve, &f) == 0);
		CHECK_EQ(vop_ivshmem_client_open(sock, 1, 2000, &c), 0);
		CHECK(read(f.sent[0], &one, 1) == 1);
		CHECK(vop_ivshmem_client_process(c, ev, 64) >= 0); /* takes the first half: no message yet */
		CHECK(write(f.go[1], &one, 1) == 1);
		CHECK_EQ(drain_err(c), -EPROTO);
		pthread_join(t, NULL);
		vop_ivshmem_client_close(c);
		close(f.sent[0]);
		close(f.sent[1]);
		close(f.go[0]);
		close(f.go[1]);
	}
	CHECK_EQ(count_own_fds(), base);

	close(l);
	close(memfd);
	unlink(sock);
	rmdir(dir);
	return T_PASS;
}
