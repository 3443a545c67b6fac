/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The client side of the ivshmem server protocol v0 (include/vop/ivshmem.h).
 *
 * Stream framing: each message is 8 bytes, and an fd travels with the first byte of its message
 * (the kernel never merges a message carrying SCM_RIGHTS with the bytes after it into one read,
 * but a read may still stop inside a message), so the reader keeps a partial message and the fd
 * that came with it until the 8 bytes are complete.
 *
 * Message sequence (after connect): version (0, no fd); own id (no fd); -1 with the shm fd; then
 * any order of: <peer id> + fd (that peer's next vector), <own id> + fd (own next vector),
 * <peer id> without fd (that peer left).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "vop/ivshmem.h"

#define EVQ_CAP 1024 /* events waiting for process(); older ones are dropped (counted) */

struct ivs_peer {
	uint16_t id;			  /* peer id */
	uint16_t nfds;			  /* vectors received so far */
	int fds[VOP_IVSHMEM_MAX_VECTORS]; /* eventfds to ring it, [0, nfds) valid */
};

struct vop_ivshmem_client {
	int sock;			  /* server connection, -1 after it went away */
	int id;				  /* own id, -1 until received */
	int shm_fd;			  /* shared memory, -1 until received */
	uint64_t shm_size;		  /* st_size of shm_fd */
	unsigned nvectors;		  /* own vectors wanted */
	unsigned nown;			  /* own vectors received */
	int own[VOP_IVSHMEM_MAX_VECTORS]; /* own eventfds (non-blocking) */
	int hello;			  /* messages of the fixed preamble received (0..3) */
	unsigned char part[8];		  /* partial message */
	unsigned npart;			  /* bytes in part */
	int part_fd;			  /* fd that came with the partial message, or -1 */
	unsigned npeers;		  /* entries in peers */
	struct ivs_peer peers[VOP_IVSHMEM_MAX_PEERS]; /* sorted by id */
	struct vop_ivshmem_event evq[EVQ_CAP];	      /* pending events: ring buffer */
	unsigned evq_head, evq_len;		      /* oldest index, count */
	uint64_t dropped; /* peers/vectors/events ignored: table or queue full */
	int error;	  /* why the connection ended (-ECONNRESET, -EPROTO...) */
};

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void push_event(struct vop_ivshmem_client *c, uint16_t kind, uint16_t peer, uint16_t vector)
{
	if (c->evq_len == EVQ_CAP) {
		c->evq_head = (c->evq_head + 1) % EVQ_CAP;
		c->evq_len--;
		c->dropped++;
	}
	c->evq[(c->evq_head + c->evq_len) % EVQ_CAP] =
		(struct vop_ivshmem_event){ .kind = kind, .peer = peer, .vector = vector };
	c->evq_len++;
}

static struct ivs_peer *find_peer(const struct vop_ivshmem_client *c, unsigned id)
{
	for (unsigned i = 0; i < c->npeers; i++)
		if (c->peers[i].id == id)
			return (struct ivs_peer *)&c->peers[i];
	return NULL;
}

static void peer_vector(struct vop_ivshmem_client *c, uint16_t id, int fd)
{
	struct ivs_peer *p = find_peer(c, id);

	if (!p) {
		unsigned at = 0;

		if (c->npeers == VOP_IVSHMEM_MAX_PEERS) {
			c->dropped++;
			close(fd);
			return;
		}
		while (at < c->npeers && c->peers[at].id < id)
			at++;
		memmove(&c->peers[at + 1], &c->peers[at], (c->npeers - at) * sizeof(c->peers[0]));
		c->npeers++;
		p = &c->peers[at];
		p->id = id;
		p->nfds = 0;
	}
	if (p->nfds == VOP_IVSHMEM_MAX_VECTORS) {
		c->dropped++;
		close(fd);
		return;
	}
	p->fds[p->nfds] = fd;
	push_event(c, VOP_IVSHMEM_PEER_VECTOR, id, p->nfds);
	p->nfds++;
}

static void peer_left(struct vop_ivshmem_client *c, uint16_t id)
{
	struct ivs_peer *p = find_peer(c, id);
	unsigned at;

	if (!p)
		return; /* never seen (or dropped): nothing to report */
	for (unsigned v = 0; v < p->nfds; v++)
		close(p->fds[v]);
	at = (unsigned)(p - c->peers);
	memmove(&c->peers[at], &c->peers[at + 1], (c->npeers - at - 1) * sizeof(c->peers[0]));
	c->npeers--;
	push_event(c, VOP_IVSHMEM_PEER_LEFT, id, 0);
}

/* Handles one complete message; takes ownership of fd. Returns 0 or -EPROTO. */
static int handle(struct vop_ivshmem_client *c, int64_t v, int fd)
{
	struct stat st;

	switch (c->hello) {
	case 0: /* protocol version */
		c->hello++;
		if (fd >= 0 || v != VOP_IVSHMEM_PROTOCOL)
			goto bad;
		return 0;
	case 1: /* own id */
		c->hello++;
		if (fd >= 0 || v < 0 || v > VOP_IVSHMEM_MAX_ID)
			goto bad;
		c->id = (int)v;
		return 0;
	case 2: /* -1 + shared memory */
		c->hello++;
		if (fd < 0 || v != -1 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
		    st.st_size <= 0)
			goto bad;
		c->shm_fd = fd;
		c->shm_size = (uint64_t)st.st_size;
		return 0;
	}
	if (v < 0 || v > VOP_IVSHMEM_MAX_ID)
		goto bad;
	if (v == c->id) {
		if (fd < 0)
			goto bad; /* "you left" makes no sense */
		if (c->nown < c->nvectors) {
			int fl = fcntl(fd, F_GETFL);

			if (fl >= 0)
				fcntl(fd, F_SETFL, fl | O_NONBLOCK);
			c->own[c->nown++] = fd;
		} else {
			close(fd); /* the server has more vectors than we use: spec says close */
		}
		return 0;
	}
	if (fd >= 0)
		peer_vector(c, (uint16_t)v, fd);
	else
		peer_left(c, (uint16_t)v);
	return 0;
bad:
	if (fd >= 0)
		close(fd);
	return -EPROTO;
}

/* Reads what is there; returns 0 (would block), -ECONNRESET (EOF), -EPROTO, -errno. */
static int pump(struct vop_ivshmem_client *c)
{
	for (;;) {
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(4 * sizeof(int))];
		} cm;
		struct iovec iov = { c->part + c->npart, sizeof(c->part) - c->npart };
		struct msghdr msg = { .msg_iov = &iov,
				      .msg_iovlen = 1,
				      .msg_control = cm.buf,
				      .msg_controllen = sizeof(cm.buf) };
		int err = 0, nfd = 0, got = -1;
		ssize_t r;

		if (c->sock < 0)
			return -ECONNRESET;
		r = recvmsg(c->sock, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
		}
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
			if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
				continue;
			int n = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			int *fds = (int *)CMSG_DATA(h);

			for (int i = 0; i < n; i++) {
				if (got < 0 && nfd == 0)
					got = fds[i];
				else
					close(fds[i]);
				nfd++;
			}
		}
		if (msg.msg_flags & MSG_CTRUNC)
			err = -EPROTO; /* more fds than any message carries */
		if (nfd > 1 || (got >= 0 && (c->part_fd >= 0 || c->npart != 0)))
			err = -EPROTO; /* an fd belongs to the first byte of a message, one per
					  message */
		if (err) {
			if (got >= 0)
				close(got);
			return err;
		}
		if (r == 0)
			return -ECONNRESET;
		if (got >= 0)
			c->part_fd = got;
		c->npart += (unsigned)r;
		if (c->npart == sizeof(c->part)) {
			uint64_t u = 0;

			for (int i = 7; i >= 0; i--)
				u = u << 8 | c->part[i];
			c->npart = 0;
			err = handle(c, (int64_t)u, c->part_fd);
			c->part_fd = -1;
			if (err)
				return err;
		}
	}
}

static void disconnect(struct vop_ivshmem_client *c)
{
	close_fd(&c->sock);
	close_fd(&c->part_fd);
	c->npart = 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vop_ivshmem_client_open(const char *sock_path, unsigned nvectors, int timeout_ms,
			    struct vop_ivshmem_client **out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct vop_ivshmem_client *c;
	int64_t deadline;
	int err;

	*out = NULL;
	if (!sock_path || strlen(sock_path) >= sizeof(sa.sun_path) || nvectors == 0 ||
	    nvectors > VOP_IVSHMEM_MAX_VECTORS || timeout_ms < 0)
		return -EINVAL;
	strcpy(sa.sun_path, sock_path);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->id = -1;
	c->shm_fd = -1;
	c->part_fd = -1;
	c->nvectors = nvectors;
	c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->sock < 0) {
		err = -errno;
		goto fail;
	}
	if (connect(c->sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = -errno;
		goto fail;
	}
	deadline = now_ms() + timeout_ms;
	while (c->hello < 3 || c->nown < c->nvectors) {
		struct pollfd pfd = { .fd = c->sock, .events = POLLIN };
		int64_t left = deadline - now_ms();

		if (left <= 0) {
			err = -ETIMEDOUT;
			goto fail;
		}
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR) {
			err = -errno;
			goto fail;
		}
		err = pump(c);
		if (err < 0)
			goto fail;
	}
	*out = c;
	return 0;
fail:
	vop_ivshmem_client_close(c);
	return err;
}

void vop_ivshmem_client_close(struct vop_ivshmem_client *c)
{
	if (!c)
		return;
	disconnect(c);
	close_fd(&c->shm_fd);
	for (unsigned v = 0; v < c->nown; v++)
		close(c->own[v]);
	for (unsigned i = 0; i < c->npeers; i++)
		for (unsigned v = 0; v < c->peers[i].nfds; v++)
			close(c->peers[i].fds[v]);
	free(c);
}

int vop_ivshmem_client_fd(const struct vop_ivshmem_client *c)
{
	return c->sock;
}

unsigned vop_ivshmem_client_id(const struct vop_ivshmem_client *c)
{
	return (unsigned)c->id;
}

unsigned vop_ivshmem_client_vectors(const struct vop_ivshmem_client *c)
{
	return c->nvectors;
}

int vop_ivshmem_client_shm_fd(const struct vop_ivshmem_client *c)
{
	return c->shm_fd;
}

uint64_t vop_ivshmem_client_shm_size(const struct vop_ivshmem_client *c)
{
	return c->shm_size;
}

int vop_ivshmem_client_own_eventfd(const struct vop_ivshmem_client *c, unsigned vector)
{
	return vector < c->nown ? c->own[vector] : -EINVAL;
}

int64_t vop_ivshmem_client_ack(struct vop_ivshmem_client *c, unsigned vector)
{
	uint64_t n;
	ssize_t r;

	if (vector >= c->nown)
		return -EINVAL;
	do
		r = read(c->own[vector], &n, sizeof(n));
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return errno == EAGAIN ? 0 : -errno;
	if (r != sizeof(n))
		return -EIO;
	return n > INT64_MAX ? INT64_MAX : (int64_t)n;
}

int vop_ivshmem_client_peer_eventfd(const struct vop_ivshmem_client *c, unsigned peer,
				    unsigned vector)
{
	const struct ivs_peer *p;

	if (peer > VOP_IVSHMEM_MAX_ID || vector >= VOP_IVSHMEM_MAX_VECTORS)
		return -EINVAL;
	p = find_peer(c, peer);
	if (!p || vector >= p->nfds)
		return -ENOENT;
	return p->fds[vector];
}

int vop_ivshmem_client_ring(struct vop_ivshmem_client *c, unsigned peer, unsigned vector)
{
	const uint64_t one = 1;
	int fd = vop_ivshmem_client_peer_eventfd(c, peer, vector);
	ssize_t w;

	if (fd < 0)
		return fd;
	do
		w = write(fd, &one, sizeof(one));
	while (w < 0 && errno == EINTR);
	if (w < 0)
		return -errno;
	return w == sizeof(one) ? 0 : -EIO;
}

int vop_ivshmem_client_process(struct vop_ivshmem_client *c, struct vop_ivshmem_event *ev,
			       unsigned max)
{
	int err = 0;
	unsigned n = 0;

	if (c->sock >= 0) {
		err = pump(c);
		if (err < 0) {
			c->error = err;
			disconnect(c);
		}
	} else {
		err = c->error ? c->error : -ECONNRESET;
	}
	while (n < max && c->evq_len > 0) {
		ev[n++] = c->evq[c->evq_head];
		c->evq_head = (c->evq_head + 1) % EVQ_CAP;
		c->evq_len--;
	}
	/* Report what happened before the error first; the error comes with the next call. */
	if (n > 0)
		return (int)n;
	return err;
}

int vop_ivshmem_client_peers(const struct vop_ivshmem_client *c, uint16_t *ids, unsigned max)
{
	for (unsigned i = 0; i < c->npeers && i < max; i++)
		ids[i] = c->peers[i].id;
	return (int)c->npeers;
}

uint64_t vop_ivshmem_client_dropped(const struct vop_ivshmem_client *c)
{
	return c->dropped;
}
