/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small vhost-user front-end for the native tests: connect to a
 * back-end's socket, send any bytes with any fds, read replies, and (as a
 * well-behaved front-end) set up a split-ring net device in a sealed memfd
 * and post transmit buffers. Hostile messages are built by hand with
 * vhuc_send_raw().
 */
#ifndef VOP_TEST_VHUCLIENT_H
#define VOP_TEST_VHUCLIENT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "vop/layout.h"
#include "vop/vhost_user.h"

static inline int vhuc_connect(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int tries;

	if (fd < 0)
		return -errno;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	for (tries = 0; tries < 200; tries++) {
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
			return fd;
		usleep(10000);
	}
	close(fd);
	return -ETIMEDOUT;
}

/* Send raw bytes with nfds fds in one sendmsg. 0 or -errno. */
static inline int vhuc_send_raw(int s, const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 32)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;

	if (nfds) {
		struct cmsghdr *c;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	n = sendmsg(s, &mh, MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

/* A message: header (version 1, flags) and payload. */
static inline int vhuc_send(int s, uint32_t req, uint32_t flags, const void *payload, uint32_t size,
			    const int *fds, unsigned nfds)
{
	uint8_t buf[12 + 512];
	uint32_t hdr[3] = { req, VOP_VHU_VERSION | flags, size };

	if (size > 512)
		return -EINVAL;
	memcpy(buf, hdr, 12);
	if (size)
		memcpy(buf + 12, payload, size);
	return vhuc_send_raw(s, buf, 12 + size, fds, nfds);
}

static inline int vhuc_send_u64(int s, uint32_t req, uint64_t v, const int *fds, unsigned nfds)
{
	return vhuc_send(s, req, 0, &v, 8, fds, nfds);
}

static inline int vhuc_send_state(int s, uint32_t req, uint32_t index, uint32_t num)
{
	uint32_t p[2] = { index, num };

	return vhuc_send(s, req, 0, p, 8, NULL, 0);
}

/* Read one reply (header + up to cap payload bytes) within ms. payload size, or -errno (-EPIPE: closed). */
static inline int vhuc_recv(int s, uint32_t *req, void *payload, uint32_t cap, int ms)
{
	uint8_t buf[12 + 512];
	size_t got = 0, want = 12;
	uint32_t hdr[3] = { 0, 0, 0 };

	while (got < want) {
		struct pollfd p = { s, POLLIN, 0 };
		ssize_t n;

		if (poll(&p, 1, ms) <= 0)
			return -ETIMEDOUT;
		n = recv(s, buf + got, want - got, 0);
		if (n == 0)
			return -EPIPE;
		if (n < 0)
			return errno == ECONNRESET ? -EPIPE : -errno;
		got += (size_t)n;
		if (got == 12) {
			memcpy(hdr, buf, 12);
			if (hdr[2] > 512)
				return -EMSGSIZE;
			want = 12 + hdr[2];
		}
	}
	if (req)
		*req = hdr[0];
	if (payload)
		memcpy(payload, buf + 12, hdr[2] < cap ? hdr[2] : cap);
	return (int)hdr[2];
}

/* True when the back-end closed the connection within ms (any pending replies are skipped). */
static inline bool vhuc_closed(int s, int ms)
{
	for (;;) {
		int rc = vhuc_recv(s, NULL, NULL, 0, ms);

		if (rc == -EPIPE)
			return true;
		if (rc < 0)
			return false;
	}
}

/* Guest memory of the well-behaved front-end: one sealed memfd. */
#define VHUC_MEM_SIZE (1u << 20)
#define VHUC_GPA 0x100000ull          /* guest-physical base */
#define VHUC_UVA 0x7f0000000000ull    /* the front-end's "user address" of it */
#define VHUC_QSIZE 64u

struct vhuc_ring {
	uint64_t desc, avail, used; /* offsets in the memfd */
	int kick, call;
	uint16_t avail_idx;
};

struct vhuc_dev {
	int s;
	int memfd;
	uint8_t *mem;
	struct vhuc_ring r[2];
};

static inline int vhuc_memfd(size_t size, bool sealable)
{
	int fd = memfd_create("vhuc-mem", MFD_CLOEXEC | (sealable ? MFD_ALLOW_SEALING : 0));

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size)) {
		close(fd);
		return -errno;
	}
	return fd;
}

/* One region: all of d->memfd at VHUC_GPA / VHUC_UVA. */
static inline int vhuc_set_mem(struct vhuc_dev *d)
{
	uint8_t p[8 + 32];
	uint32_t n[2] = { 1, 0 };
	uint64_t r[4] = { VHUC_GPA, VHUC_MEM_SIZE, VHUC_UVA, 0 };

	memcpy(p, n, 8);
	memcpy(p + 8, r, 32);
	return vhuc_send(d->s, VOP_VHU_SET_MEM_TABLE, 0, p, sizeof(p), &d->memfd, 1);
}

/*
 * Negotiate VERSION_1 only (no protocol features: rings start on kick),
 * share memory, set up queues 0 and 1 of VHUC_QSIZE. 0 or -errno.
 */
static inline int vhuc_setup_net(struct vhuc_dev *d, const char *path)
{
	uint64_t feat = 0;
	uint32_t req;
	unsigned q;
	int rc;

	memset(d, 0, sizeof(*d));
	d->memfd = vhuc_memfd(VHUC_MEM_SIZE, true);
	if (d->memfd < 0)
		return d->memfd;
	d->mem = mmap(NULL, VHUC_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, d->memfd, 0);
	if (d->mem == MAP_FAILED)
		return -errno;
	d->s = vhuc_connect(path);
	if (d->s < 0)
		return d->s;
	rc = vhuc_send(d->s, VOP_VHU_GET_FEATURES, 0, NULL, 0, NULL, 0);
	if (rc || vhuc_recv(d->s, &req, &feat, 8, 5000) != 8 || req != VOP_VHU_GET_FEATURES)
		return -EPROTO;
	if (!((feat >> VOP_F_VERSION_1) & 1))
		return -EPROTO;
	rc = vhuc_send_u64(d->s, VOP_VHU_SET_OWNER, 0, NULL, 0);
	rc = rc ? rc : vhuc_send_u64(d->s, VOP_VHU_SET_FEATURES, 1ull << VOP_F_VERSION_1, NULL, 0);
	rc = rc ? rc : vhuc_set_mem(d);
	for (q = 0; q < 2 && rc == 0; q++) {
		struct vhuc_ring *r = &d->r[q];
		struct {
			uint32_t index, flags;
			uint64_t desc, used, avail, log;
		} a;

		r->desc = 0x1000 + q * 0x4000;
		r->avail = r->desc + 0x1000;
		r->used = r->desc + 0x2000;
		r->kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		r->call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		a.index = q;
		a.flags = 0;
		a.desc = VHUC_UVA + r->desc;
		a.used = VHUC_UVA + r->used;
		a.avail = VHUC_UVA + r->avail;
		a.log = 0;
		rc = vhuc_send_state(d->s, VOP_VHU_SET_VRING_NUM, q, VHUC_QSIZE);
		rc = rc ? rc : vhuc_send_state(d->s, VOP_VHU_SET_VRING_BASE, q, 0);
		rc = rc ? rc : vhuc_send(d->s, VOP_VHU_SET_VRING_ADDR, 0, &a, sizeof(a), NULL, 0);
		rc = rc ? rc : vhuc_send_u64(d->s, VOP_VHU_SET_VRING_CALL, q, &r->call, 1);
		rc = rc ? rc : vhuc_send_u64(d->s, VOP_VHU_SET_VRING_KICK, q, &r->kick, 1);
	}
	return rc;
}

/* Post one transmit buffer (12-byte header + len frame bytes of value fill) on queue 1 and kick. */
static inline void vhuc_post_tx(struct vhuc_dev *d, uint16_t head, uint32_t len, uint8_t fill)
{
	struct vhuc_ring *r = &d->r[1];
	struct vop_vring_desc *desc = (struct vop_vring_desc *)(void *)(d->mem + r->desc);
	struct vop_vring_avail *avail = (struct vop_vring_avail *)(void *)(d->mem + r->avail);
	uint64_t buf = 0x20000 + (uint64_t)head * 2048;
	uint64_t one = 1;

	memset(d->mem + buf, 0, 12);
	memset(d->mem + buf + 12, fill, len);
	desc[head].addr = VHUC_GPA + buf;
	desc[head].len = 12 + len;
	desc[head].flags = 0;
	desc[head].next = 0;
	avail->ring[r->avail_idx % VHUC_QSIZE] = head;
	__atomic_store_n(&avail->idx, (uint16_t)(r->avail_idx + 1), __ATOMIC_RELEASE);
	r->avail_idx++;
	if (write(r->kick, &one, 8) != 8) {
		/* an eventfd write of 1 does not fail */
	}
}

/* Wait until queue q's used index reaches want (ms). */
static inline bool vhuc_wait_used(struct vhuc_dev *d, unsigned q, uint16_t want, int ms)
{
	struct vop_vring_used *used = (struct vop_vring_used *)(void *)(d->mem + d->r[q].used);
	int i;

	for (i = 0; i < ms; i++) {
		if (__atomic_load_n(&used->idx, __ATOMIC_ACQUIRE) == want)
			return true;
		usleep(1000);
	}
	return false;
}

static inline void vhuc_close(struct vhuc_dev *d)
{
	unsigned q;

	if (d->s > 0)
		close(d->s);
	for (q = 0; q < 2; q++) {
		if (d->r[q].kick > 0)
			close(d->r[q].kick);
		if (d->r[q].call > 0)
			close(d->r[q].call);
	}
	if (d->mem && d->mem != MAP_FAILED)
		munmap(d->mem, VHUC_MEM_SIZE);
	if (d->memfd > 0)
		close(d->memfd);
	memset(d, 0, sizeof(*d));
}

#endif /* VOP_TEST_VHUCLIENT_H */
