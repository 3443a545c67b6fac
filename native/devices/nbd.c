/* SPDX-License-Identifier: Apache-2.0 */
/*
 * NBD server on top of the virtio-blk driver role. Contract in
 * vop/dev_nbd.h. Wire format: the NBD protocol document (newstyle fixed
 * handshake, simple replies); every integer is big-endian.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "vop/dev_nbd.h"
#include "vop/nbd_tls.h"
#include "vop/path.h"
#include "vop/dev_parse.h"

#define NBD_MAGIC 0x4e42444d41474943ull
#define NBD_IHAVEOPT 0x49484156454f5054ull
#define NBD_REP_MAGIC 0x3e889045565a9ull
#define NBD_REQ_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u

#define NBD_FLAG_FIXED_NEWSTYLE 1u
#define NBD_FLAG_NO_ZEROES 2u

#define NBD_OPT_EXPORT_NAME 1u
#define NBD_OPT_ABORT 2u
#define NBD_OPT_LIST 3u
#define NBD_OPT_STARTTLS 5u
#define NBD_OPT_INFO 6u
#define NBD_OPT_GO 7u

#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_ERR_UNSUP 0x80000001u
#define NBD_REP_ERR_POLICY 0x80000002u
#define NBD_REP_ERR_INVALID 0x80000003u
#define NBD_REP_ERR_TLS_REQD 0x80000005u
#define NBD_REP_ERR_UNKNOWN 0x80000006u

#define NBD_INFO_EXPORT 0u
#define NBD_INFO_BLOCK_SIZE 3u

#define NBD_TF_HAS_FLAGS (1u << 0)
#define NBD_TF_READ_ONLY (1u << 1)
#define NBD_TF_SEND_FLUSH (1u << 2)
#define NBD_TF_SEND_TRIM (1u << 5)
#define NBD_TF_SEND_WRITE_ZEROES (1u << 6)
#define NBD_TF_CAN_MULTI_CONN (1u << 8)

#define NBD_CMD_READ 0u
#define NBD_CMD_WRITE 1u
#define NBD_CMD_DISC 2u
#define NBD_CMD_FLUSH 3u
#define NBD_CMD_TRIM 4u
#define NBD_CMD_WRITE_ZEROES 6u

#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_EINVAL 22u
#define NBD_ENOSPC 28u
#define NBD_ESHUTDOWN 108u

#define NBD_MAX_CONNS 16
/* TLS required: options an unauthenticated client may send before STARTTLS, and their size */
#define NBD_MAX_OPTS_BEFORE_TLS 16
#define NBD_MAX_OPT_LEN_BEFORE_TLS 4096u
#define NBD_MAX_SLOTS_PER_CMD 64
#define NBD_SNDBUF (4 << 20) /* requested send buffer of a client connection */
#define NBD_MAX_OPTS 64 /* options per handshake (nbdinfo --list sends a handful) */

struct nbd_conn;

/* One NBD command in flight; freed by the writer after the reply. */
struct nbd_cmd {
	struct nbd_conn *conn;   /* owner */
	uint64_t handle;         /* client's cookie, echoed */
	uint16_t type;           /* NBD_CMD_* */
	uint32_t len;            /* data bytes (READ reply payload) */
	uint32_t error;          /* NBD error, 0 = ok; set under conn->lock */
	unsigned nslots;         /* slots held */
	unsigned remaining;      /* virtio requests not yet completed (under conn->lock) */
	struct vop_blk_req *slots[NBD_MAX_SLOTS_PER_CMD];
	uint64_t done_mask;      /* slots whose virtio request completed (under conn->lock) */
	bool queued;             /* on the reply queue or held by the writer (under conn->lock) */
	unsigned nsent;          /* READ: slots whose bytes were sent (the writer's; set under conn->lock) */
	struct nbd_cmd *next;    /* reply queue link */
};

struct nbd_conn {
	struct vop_nbd *srv;     /* server */
	int fd;                  /* socket (after STARTTLS: the cleartext end of the TLS pump);
				  * reader reads, writer writes; swapped under lock by the reader */
	struct vop_nbd_tls_conn *tls; /* after STARTTLS; set and cleared under lock by the reader */
	bool tcp;                /* accepted on the TCP listener (listener sets it) */
	pthread_t reader, writer;
	pthread_mutex_t lock;    /* protects replies, outstanding, closing */
	pthread_cond_t cond;     /* replies non-empty, or closing */
	struct nbd_cmd *replies, **replies_tail;
	unsigned outstanding;    /* commands read and not yet replied */
	bool closing;            /* reader finished (DISC or error) */
	bool done;               /* both threads exited (under srv->lock) */
	unsigned waking;         /* on_done calls between their unlock and their signal: c stays (under lock) */
};

struct vop_nbd {
	struct vop_blk_driver *d;  /* set at start */
	char export_name[256];
	uint32_t max_req;          /* bytes */
	uint32_t seg;              /* bytes per slot */
	int lfd[2];                /* listening sockets, -1 if unused */
	char unix_path[108];       /* the socket's path as configured ("" if none) */
	struct vop_path_sock usock; /* where lfd[0] is bound (unlinked only if still ours) */
	int port;
	struct vop_nbd_tls *tls;   /* TLS settings, NULL without certificates; read-only after start */
	bool tcp_tls_required;     /* TCP clients must STARTTLS before anything else */
	pthread_t lthread[2];
	bool lrunning[2];
	_Atomic bool stop;
	pthread_mutex_t lock;      /* protects conns */
	struct nbd_conn *conns[NBD_MAX_CONNS];
};

static int read_full(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r = read(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -ECONNRESET;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static int writev_full(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t r = writev(fd, iov, n > 1024 ? 1024 : n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	struct iovec iov = { (void *)(uintptr_t)buf, len };

	return writev_full(fd, &iov, 1);
}

static int skip_bytes(int fd, uint64_t len)
{
	uint8_t buf[4096];

	while (len) {
		size_t n = len > sizeof(buf) ? sizeof(buf) : (size_t)len;
		int rc = read_full(fd, buf, n);

		if (rc)
			return rc;
		len -= n;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Handshake                                                            */
/* ------------------------------------------------------------------ */

static int opt_reply(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len)
{
	uint8_t h[20];
	uint64_t m = htobe64(NBD_REP_MAGIC);
	uint32_t v;
	struct iovec iov[2] = { { h, sizeof(h) }, { (void *)(uintptr_t)data, len } };

	memcpy(h, &m, 8);
	v = htobe32(opt);
	memcpy(h + 8, &v, 4);
	v = htobe32(type);
	memcpy(h + 12, &v, 4);
	v = htobe32(len);
	memcpy(h + 16, &v, 4);
	return writev_full(fd, iov, len ? 2 : 1);
}

static uint16_t tflags(struct vop_nbd *s)
{
	uint16_t f = NBD_TF_HAS_FLAGS | NBD_TF_SEND_FLUSH | NBD_TF_SEND_TRIM |
		     NBD_TF_SEND_WRITE_ZEROES | NBD_TF_CAN_MULTI_CONN;

	if (vop_blk_driver_ro(s->d))
		f |= NBD_TF_READ_ONLY;
	return f;
}

static int send_info(struct nbd_conn *c, uint32_t opt)
{
	struct vop_nbd *s = c->srv;
	uint8_t b[18];
	uint16_t t16;
	uint32_t t32;
	uint64_t t64;
	int rc;

	t16 = htobe16(NBD_INFO_EXPORT);
	memcpy(b, &t16, 2);
	t64 = htobe64(vop_blk_driver_capacity(s->d));
	memcpy(b + 2, &t64, 8);
	t16 = htobe16(tflags(s));
	memcpy(b + 10, &t16, 2);
	rc = opt_reply(c->fd, opt, NBD_REP_INFO, b, 12);
	if (rc)
		return rc;
	t16 = htobe16(NBD_INFO_BLOCK_SIZE);
	memcpy(b, &t16, 2);
	t32 = htobe32(VOP_BLK_SECTOR); /* minimum */
	memcpy(b + 2, &t32, 4);
	t32 = htobe32(4096); /* preferred */
	memcpy(b + 6, &t32, 4);
	t32 = htobe32(s->max_req); /* maximum payload */
	memcpy(b + 10, &t32, 4);
	return opt_reply(c->fd, opt, NBD_REP_INFO, b, 14);
}

/*
 * NBD_OPT_STARTTLS (option data already read: len bytes): ACK, then the TLS
 * handshake; from then on c->fd is the cleartext end of the TLS pump. 0 to
 * go on with the options (after an error reply, or upgraded), < 0 to close
 * (the handshake failed: too late for an error reply).
 */
static int starttls(struct nbd_conn *c, uint32_t len)
{
	struct vop_nbd_tls_conn *tc;
	uint32_t err = 0;
	int pfd, rc;

	if (len || c->tls)
		err = NBD_REP_ERR_INVALID;
	else if (!c->srv->tls)
		err = NBD_REP_ERR_POLICY;
	if (err)
		return opt_reply(c->fd, NBD_OPT_STARTTLS, err, NULL, 0);
	rc = opt_reply(c->fd, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0);
	if (rc)
		return rc;
	rc = vop_nbd_tls_accept(c->srv->tls, c->fd, &tc, &pfd);
	if (rc)
		return rc;
	pthread_mutex_lock(&c->lock);
	c->fd = pfd; /* the network socket now belongs to tc */
	c->tls = tc;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* Returns 1 when transmission starts, 0 to close quietly, < 0 on error. */
static int handshake(struct nbd_conn *c)
{
	struct vop_nbd *s = c->srv;
	uint8_t hello[18];
	uint64_t m;
	uint16_t hf = htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	uint32_t cflags;
	bool no_zeroes, tls_reqd = c->tcp && s->tcp_tls_required;
	unsigned before_tls = 0;
	int rc;

	/* the export's size is the device's capacity: known once the device runs */
	rc = vop_blk_driver_wait_ready(s->d, 10000);
	if (rc)
		return rc;
	m = htobe64(NBD_MAGIC);
	memcpy(hello, &m, 8);
	m = htobe64(NBD_IHAVEOPT);
	memcpy(hello + 8, &m, 8);
	memcpy(hello + 16, &hf, 2);
	rc = write_full(c->fd, hello, sizeof(hello));
	if (rc)
		return rc;
	rc = read_full(c->fd, &cflags, 4);
	if (rc)
		return rc;
	cflags = be32toh(cflags);
	if (!(cflags & NBD_FLAG_FIXED_NEWSTYLE))
		return -EPROTO;
	no_zeroes = cflags & NBD_FLAG_NO_ZEROES;
	for (unsigned nopt = 0;; nopt++) {
		uint8_t oh[16];
		uint32_t opt, len;
		uint8_t *data = NULL;

		if (nopt >= NBD_MAX_OPTS)
			return -EPROTO; /* a client that never finishes the handshake holds a connection slot */
		rc = read_full(c->fd, oh, sizeof(oh));
		if (rc)
			return rc;
		memcpy(&m, oh, 8);
		memcpy(&opt, oh + 8, 4);
		memcpy(&len, oh + 12, 4);
		opt = be32toh(opt);
		len = be32toh(len);
		if (be64toh(m) != NBD_IHAVEOPT)
			return -EPROTO;
		/* FORCEDTLS: nothing but STARTTLS or ABORT until TLS runs; a flood is closed */
		if (tls_reqd && !c->tls &&
		    (++before_tls > NBD_MAX_OPTS_BEFORE_TLS || len > NBD_MAX_OPT_LEN_BEFORE_TLS))
			return -EPROTO;
		if (tls_reqd && !c->tls && opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT) {
			if (opt == NBD_OPT_EXPORT_NAME)
				return -EACCES; /* it cannot be answered with an error: close */
			rc = skip_bytes(c->fd, len);
			rc = rc ? rc : opt_reply(c->fd, opt, NBD_REP_ERR_TLS_REQD, NULL, 0);
			if (rc)
				return rc;
			continue;
		}
		if (len > 65536) {
			rc = skip_bytes(c->fd, len);
			rc = rc ? rc : opt_reply(c->fd, opt, NBD_REP_ERR_INVALID, NULL, 0);
			if (rc)
				return rc;
			continue;
		}
		if (len) {
			data = malloc(len);
			if (!data)
				return -ENOMEM;
			rc = read_full(c->fd, data, len);
			if (rc) {
				free(data);
				return rc;
			}
		}
		switch (opt) {
		case NBD_OPT_EXPORT_NAME: {
			uint8_t r[10 + 124];
			uint64_t sz = htobe64(vop_blk_driver_capacity(s->d));
			uint16_t f = htobe16(tflags(s));
			bool ok = (len == 0) || (len == strlen(s->export_name) &&
						 !memcmp(data, s->export_name, len));

			free(data);
			if (!ok)
				return -ENOENT; /* the protocol has no error reply here: close */
			memset(r, 0, sizeof(r));
			memcpy(r, &sz, 8);
			memcpy(r + 8, &f, 2);
			rc = write_full(c->fd, r, no_zeroes ? 10 : sizeof(r));
			return rc ? rc : 1;
		}
		case NBD_OPT_ABORT:
			free(data);
			opt_reply(c->fd, opt, NBD_REP_ACK, NULL, 0);
			return 0;
		case NBD_OPT_STARTTLS:
			free(data);
			rc = starttls(c, len);
			if (rc)
				return rc;
			continue;
		case NBD_OPT_LIST: {
			uint32_t nl = (uint32_t)strlen(s->export_name), be = htobe32(nl);
			uint8_t r[4 + 256];

			free(data);
			memcpy(r, &be, 4);
			memcpy(r + 4, s->export_name, nl);
			rc = opt_reply(c->fd, opt, NBD_REP_SERVER, r, 4 + nl);
			rc = rc ? rc : opt_reply(c->fd, opt, NBD_REP_ACK, NULL, 0);
			if (rc)
				return rc;
			continue;
		}
		case NBD_OPT_INFO:
		case NBD_OPT_GO: {
			uint32_t nl;
			uint16_t ninfo;
			bool ok;

			if (len < 6) {
				free(data);
				rc = opt_reply(c->fd, opt, NBD_REP_ERR_INVALID, NULL, 0);
				if (rc)
					return rc;
				continue;
			}
			memcpy(&nl, data, 4);
			nl = be32toh(nl);
			if ((uint64_t)nl + 6 > len) {
				free(data);
				rc = opt_reply(c->fd, opt, NBD_REP_ERR_INVALID, NULL, 0);
				if (rc)
					return rc;
				continue;
			}
			memcpy(&ninfo, data + 4 + nl, 2);
			ninfo = be16toh(ninfo);
			ok = (nl == 0) || (nl == strlen(s->export_name) &&
					   !memcmp(data + 4, s->export_name, nl));
			free(data);
			if (!ok || (uint64_t)nl + 6 + 2ull * ninfo != len) {
				rc = opt_reply(c->fd, opt, ok ? NBD_REP_ERR_INVALID : NBD_REP_ERR_UNKNOWN,
					       NULL, 0);
				if (rc)
					return rc;
				continue;
			}
			rc = send_info(c, opt);
			rc = rc ? rc : opt_reply(c->fd, opt, NBD_REP_ACK, NULL, 0);
			if (rc)
				return rc;
			if (opt == NBD_OPT_GO)
				return 1;
			continue;
		}
		default:
			free(data);
			rc = opt_reply(c->fd, opt, NBD_REP_ERR_UNSUP, NULL, 0);
			if (rc)
				return rc;
			continue;
		}
	}
}

/* ------------------------------------------------------------------ */
/* Transmission                                                         */
/* ------------------------------------------------------------------ */

/* Under conn->lock: cmd on the reply queue; true if the writer must be woken (after the unlock). */
static bool enqueue_reply(struct nbd_conn *c, struct nbd_cmd *cmd)
{
	if (cmd->queued)
		return false;
	cmd->queued = true;
	cmd->next = NULL;
	*c->replies_tail = cmd;
	c->replies_tail = &cmd->next;
	return true;
}

static void queue_reply(struct nbd_conn *c, struct nbd_cmd *cmd)
{
	if (enqueue_reply(c, cmd))
		pthread_cond_signal(&c->cond);
}

/* Slots at the front of cmd whose requests completed (under conn->lock). */
static unsigned done_prefix(const struct nbd_cmd *cmd)
{
	uint64_t m = ~cmd->done_mask;

	return m ? (unsigned)__builtin_ctzll(m) : 64u;
}

/* A READ of several slots streams: its reply starts once its first slot is read. */
static bool streams(const struct nbd_cmd *cmd)
{
	return cmd->type == NBD_CMD_READ && cmd->nslots > 1;
}

/* Loop thread: one virtio request of cmd completed. */
static void on_done(void *ctx, struct vop_blk_req *r, unsigned status)
{
	struct nbd_cmd *cmd = ctx;
	struct nbd_conn *c = cmd->conn;
	bool wake = false;
	unsigned i;

	pthread_mutex_lock(&c->lock);
	if (status != VOP_BLK_S_OK && !cmd->error)
		cmd->error = status == VOP_BLK_S_UNSUPP ? NBD_EINVAL : NBD_EIO;
	for (i = 0; i < cmd->nslots; i++)
		if (cmd->slots[i] == r)
			cmd->done_mask |= 1ull << i;
	--cmd->remaining;
	if (cmd->queued)
		wake = true; /* the writer may be streaming cmd */
	else if (cmd->remaining == 0 || (streams(cmd) && !cmd->error && done_prefix(cmd) > cmd->nsent))
		wake = enqueue_reply(c, cmd);
	if (wake)
		c->waking++; /* cmd may finish, and c end, before the signal below */
	pthread_mutex_unlock(&c->lock);
	/* after the unlock, so the writer does not wake into a held lock; only the writer waits on cond */
	if (wake) {
		pthread_cond_signal(&c->cond);
		pthread_mutex_lock(&c->lock);
		c->waking--;
		pthread_mutex_unlock(&c->lock);
	}
}

static void reply_now(struct nbd_conn *c, struct nbd_cmd *cmd, uint32_t error)
{
	pthread_mutex_lock(&c->lock);
	cmd->error = error;
	queue_reply(c, cmd);
	pthread_mutex_unlock(&c->lock);
}

/* Writer: slots of cmd back to the driver, cmd done. */
static void cmd_finish(struct nbd_conn *c, struct nbd_cmd *cmd)
{
	unsigned i;

	for (i = 0; i < cmd->nslots; i++)
		vop_blk_req_put(c->srv->d, cmd->slots[i]);
	free(cmd);
	pthread_mutex_lock(&c->lock);
	c->outstanding--; /* the writer's own wait reads it: no one to wake */
	pthread_mutex_unlock(&c->lock);
}

/*
 * Writer: send what cmd has ready. A streamed READ sends its header with its
 * first slot and then each slot as soon as every slot before it is read, so
 * the client receives while the rest is still in flight. Replies are never
 * interleaved: a started reply owns the connection until its last byte (the
 * writer waits for its slots). An error after the first byte cannot be told
 * in a simple reply, so the connection is closed hard (the NBD protocol's
 * rule). Everything else is sent whole once done. cmd stays "queued" while
 * the writer holds it, so on_done never queues it twice; the writer clears
 * that under the lock when cmd must wait for completions (on_done queues it
 * again).
 */
enum reply_step { REPLY_DONE, REPLY_WAIT, REPLY_ABANDON };

static enum reply_step send_reply(struct nbd_conn *c, struct nbd_cmd *cmd, int fd, bool *dead)
{
	struct vop_nbd *s = c->srv;

	for (;;) {
		struct iovec iov[1 + NBD_MAX_SLOTS_PER_CMD];
		unsigned i, n = 0, upto;
		uint32_t error, v;
		uint8_t h[16];
		uint64_t hv;
		bool complete, wait;

		pthread_mutex_lock(&c->lock);
		upto = done_prefix(cmd);
		if (upto > cmd->nslots)
			upto = cmd->nslots;
		complete = cmd->remaining == 0;
		error = cmd->error;
		if (error && cmd->nsent > 0 && !*dead) {
			/* the header said success: nothing else can tell the client */
			pthread_mutex_unlock(&c->lock);
			shutdown(fd, SHUT_RDWR);
			*dead = true;
			continue; /* wait for the rest of its slots, then finish it */
		}
		if (!streams(cmd) || error || *dead)
			wait = !complete; /* whole replies, errors, a dead connection: every slot back first */
		else
			wait = upto == cmd->nsent && !complete;
		if (wait && cmd->nsent > 0 && !*dead) {
			/* started: nothing else may be sent before its last byte */
			while (!(done_prefix(cmd) > cmd->nsent || cmd->remaining == 0) &&
			       !(c->closing && atomic_load(&s->stop)))
				pthread_cond_wait(&c->cond, &c->lock);
			wait = !(done_prefix(cmd) > cmd->nsent || cmd->remaining == 0);
			pthread_mutex_unlock(&c->lock);
			if (wait)
				return REPLY_ABANDON; /* server stop: requests in the ring are abandoned */
			continue;
		}
		if (wait)
			cmd->queued = false;
		pthread_mutex_unlock(&c->lock);
		if (wait)
			return REPLY_WAIT;
		if (*dead)
			return REPLY_DONE; /* complete: the slots may go */
		if (cmd->nsent == 0) {
			v = htobe32(NBD_SIMPLE_REPLY_MAGIC);
			memcpy(h, &v, 4);
			v = htobe32(error);
			memcpy(h + 4, &v, 4);
			hv = cmd->handle; /* opaque: echoed as received */
			memcpy(h + 8, &hv, 8);
			iov[n].iov_base = h;
			iov[n++].iov_len = 16;
		}
		if (cmd->type == NBD_CMD_READ && !error) {
			for (i = cmd->nsent; i < upto; i++) {
				uint32_t off = i * s->seg;
				uint32_t take = cmd->len - off > s->seg ? s->seg : cmd->len - off;

				iov[n].iov_base = vop_blk_req_buf(cmd->slots[i]);
				iov[n++].iov_len = take;
			}
		}
		if (n && writev_full(fd, iov, (int)n)) {
			/* a reply cut short: the client must see the connection end, not wait for the rest */
			shutdown(fd, SHUT_RDWR);
			*dead = true; /* keep draining so every slot comes back */
		}
		if (cmd->type != NBD_CMD_READ || error)
			return REPLY_DONE;
		pthread_mutex_lock(&c->lock);
		cmd->nsent = upto;
		pthread_mutex_unlock(&c->lock);
		if (upto == cmd->nslots)
			return REPLY_DONE;
	}
}

static void *writer_main(void *arg)
{
	struct nbd_conn *c = arg;
	struct vop_nbd *s = c->srv;
	bool dead = false;

	for (;;) {
		struct nbd_cmd *cmd;
		enum reply_step step;
		int fd;

		pthread_mutex_lock(&c->lock);
		/* at server stop, requests still in the ring are abandoned (the loop is stopped) */
		while (!c->replies && !(c->closing && (c->outstanding == 0 || atomic_load(&s->stop))))
			pthread_cond_wait(&c->cond, &c->lock);
		cmd = c->replies;
		if (!cmd) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		c->replies = cmd->next;
		if (!c->replies)
			c->replies_tail = &c->replies;
		fd = c->fd;
		pthread_mutex_unlock(&c->lock);
		step = send_reply(c, cmd, fd, &dead);
		if (step == REPLY_WAIT)
			continue; /* on_done queues it again */
		if (step == REPLY_ABANDON)
			break;
		cmd_finish(c, cmd);
	}
	return NULL;
}

/* Reader: parse one command (vop_nbd_req_parse) and submit it. Returns 0 to continue, 1 on DISC, < 0 on error. */
static int handle_cmd(struct nbd_conn *c)
{
	struct vop_nbd *s = c->srv;
	struct vop_nbd_limits lim = { vop_blk_driver_capacity(s->d), s->max_req, s->seg,
				      NBD_MAX_SLOTS_PER_CMD, vop_blk_driver_ro(s->d) };
	struct vop_nbd_req_info r;
	uint8_t rq[VOP_NBD_REQ_BYTES];
	uint32_t len;
	uint16_t type;
	uint64_t off;
	struct nbd_cmd *cmd;
	unsigned i, nslots;
	bool has_payload;
	int rc;

	rc = read_full(c->fd, rq, sizeof(rq));
	if (rc)
		return rc;
	if (vop_nbd_req_parse(rq, &lim, &r))
		return -EPROTO; /* out of sync: close */
	if (r.disconnect)
		return 1;
	type = r.type;
	off = r.off;
	len = r.len;
	has_payload = r.payload != 0;
	cmd = calloc(1, sizeof(*cmd));
	if (!cmd)
		return -ENOMEM;
	cmd->conn = c;
	cmd->handle = r.handle;
	cmd->type = type;
	cmd->len = len;
	pthread_mutex_lock(&c->lock);
	c->outstanding++;
	pthread_mutex_unlock(&c->lock);
	if (r.error) {
		rc = has_payload ? skip_bytes(c->fd, r.payload) : 0;
		reply_now(c, cmd, r.error); /* the writer frees cmd */
		return rc;
	}
	if (r.nslots == 0) { /* zero-length request: nothing to do */
		reply_now(c, cmd, 0);
		return 0;
	}
	nslots = r.nslots;
	rc = vop_blk_req_get(s->d, nslots, cmd->slots);
	if (rc) {
		if (has_payload)
			skip_bytes(c->fd, len);
		reply_now(c, cmd, NBD_ESHUTDOWN);
		return rc;
	}
	cmd->nslots = nslots;
	cmd->remaining = nslots;
	switch (type) {
	case NBD_CMD_READ:
	case NBD_CMD_WRITE: {
		uint32_t left = len;
		uint64_t o = off;

		for (i = 0; i < nslots; i++) {
			uint32_t take = left > s->seg ? s->seg : left;

			if (type == NBD_CMD_WRITE) {
				/* payload straight from the socket into the shared slot */
				rc = read_full(c->fd, vop_blk_req_buf(cmd->slots[i]), take);
				if (rc) {
					/* finish accounting: complete the unsubmitted parts as errors */
					pthread_mutex_lock(&c->lock);
					cmd->error = NBD_EIO;
					cmd->remaining -= nslots - i;
					if (cmd->remaining == 0)
						queue_reply(c, cmd);
					pthread_mutex_unlock(&c->lock);
					return rc;
				}
			}
			vop_blk_req_submit(s->d, cmd->slots[i],
					   type == NBD_CMD_READ ? VOP_BLK_T_IN : VOP_BLK_T_OUT,
					   o / VOP_BLK_SECTOR, take, on_done, cmd);
			o += take;
			left -= take;
		}
		break;
	}
	case NBD_CMD_FLUSH:
		vop_blk_req_submit(s->d, cmd->slots[0], VOP_BLK_T_FLUSH, 0, 0, on_done, cmd);
		break;
	case NBD_CMD_TRIM:
	case NBD_CMD_WRITE_ZEROES: {
		struct vop_blk_dwz_seg seg;

		seg.sector = off / VOP_BLK_SECTOR;
		seg.num_sectors = len / VOP_BLK_SECTOR;
		seg.flags = 0; /* never unmap for write-zeroes: reads must see zeroes either way */
		memcpy(vop_blk_req_buf(cmd->slots[0]), &seg, sizeof(seg));
		vop_blk_req_submit(s->d, cmd->slots[0],
				   type == NBD_CMD_TRIM ? VOP_BLK_T_DISCARD : VOP_BLK_T_WRITE_ZEROES, 0,
				   sizeof(seg), on_done, cmd);
		break;
	}
	}
	return 0;
}

static void *reader_main(void *arg)
{
	struct nbd_conn *c = arg;
	int rc = handshake(c);

	while (rc == 1 && !atomic_load(&c->srv->stop)) {
		rc = handle_cmd(c);
		if (rc == 0)
			rc = 1;
		else if (rc == 1)
			break;
	}
	pthread_mutex_lock(&c->lock);
	c->closing = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	pthread_join(c->writer, NULL);
	shutdown(c->fd, SHUT_RDWR);
	if (c->tls) {
		struct vop_nbd_tls_conn *tc;

		pthread_mutex_lock(&c->lock);
		tc = c->tls;
		c->tls = NULL;
		pthread_mutex_unlock(&c->lock);
		vop_nbd_tls_conn_free(tc); /* sends what the writer left, then close_notify */
	}
	pthread_mutex_lock(&c->srv->lock);
	c->done = true;
	pthread_mutex_unlock(&c->srv->lock);
	return NULL;
}

static void reap(struct vop_nbd *s, bool all)
{
	unsigned i;

	for (i = 0; i < NBD_MAX_CONNS; i++) {
		struct nbd_conn *c;
		bool done;

		pthread_mutex_lock(&s->lock);
		c = s->conns[i];
		done = c && c->done;
		pthread_mutex_unlock(&s->lock);
		if (!c || (!done && !all))
			continue;
		if (!done) {
			pthread_mutex_lock(&c->lock); /* c->fd and c->tls change at STARTTLS */
			shutdown(c->fd, SHUT_RDWR);
			vop_nbd_tls_conn_shutdown(c->tls);
			pthread_mutex_unlock(&c->lock);
		}
		pthread_join(c->reader, NULL);
		pthread_mutex_lock(&c->lock);
		while (c->waking) { /* an on_done still signalling the finished writer */
			pthread_mutex_unlock(&c->lock);
			sched_yield();
			pthread_mutex_lock(&c->lock);
		}
		pthread_mutex_unlock(&c->lock);
		close(c->fd);
		pthread_mutex_destroy(&c->lock);
		pthread_cond_destroy(&c->cond);
		free(c);
		pthread_mutex_lock(&s->lock);
		s->conns[i] = NULL;
		pthread_mutex_unlock(&s->lock);
	}
}

static void *listener_main(void *arg)
{
	struct vop_nbd *s = ((void **)arg)[0];
	int lfd = (int)(intptr_t)((void **)arg)[1];

	free(arg);
	while (!atomic_load(&s->stop)) {
		struct pollfd p = { lfd, POLLIN, 0 };
		struct nbd_conn *c;
		unsigned i;
		int fd, one = 1, sndbuf = NBD_SNDBUF;

		if (poll(&p, 1, 200) <= 0)
			continue;
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on unix: fine */
		/* Unix: room for several whole read replies, so the writer is not held up by each one.
		 * TCP keeps its send-buffer autotuning. Capped at net.core.wmem_max. */
		if (lfd != s->lfd[1])
			setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		reap(s, false);
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->srv = s;
		c->fd = fd;
		c->tcp = lfd == s->lfd[1];
		c->replies_tail = &c->replies;
		pthread_mutex_init(&c->lock, NULL);
		pthread_cond_init(&c->cond, NULL);
		pthread_mutex_lock(&s->lock);
		for (i = 0; i < NBD_MAX_CONNS && s->conns[i]; i++)
			;
		if (i < NBD_MAX_CONNS)
			s->conns[i] = c;
		pthread_mutex_unlock(&s->lock);
		if (i == NBD_MAX_CONNS || pthread_create(&c->writer, NULL, writer_main, c)) {
			close(fd);
			pthread_mutex_lock(&s->lock);
			if (i < NBD_MAX_CONNS)
				s->conns[i] = NULL;
			pthread_mutex_unlock(&s->lock);
			free(c);
			continue;
		}
		if (pthread_create(&c->reader, NULL, reader_main, c)) {
			/* writer exits once closing is set and nothing is outstanding */
			pthread_mutex_lock(&c->lock);
			c->closing = true;
			pthread_cond_broadcast(&c->cond);
			pthread_mutex_unlock(&c->lock);
			pthread_join(c->writer, NULL);
			close(fd);
			pthread_mutex_lock(&s->lock);
			s->conns[i] = NULL;
			pthread_mutex_unlock(&s->lock);
			free(c);
		}
	}
	return NULL;
}

static int start_listener(struct vop_nbd *s, int idx, int fd)
{
	void **arg = malloc(2 * sizeof(void *));

	if (!arg)
		return -ENOMEM;
	arg[0] = s;
	arg[1] = (void *)(intptr_t)fd;
	if (pthread_create(&s->lthread[idx], NULL, listener_main, arg)) {
		free(arg);
		return -EAGAIN;
	}
	s->lrunning[idx] = true;
	return 0;
}

int vop_nbd_start(struct vop_blk_driver *d, const struct vop_nbd_config *cfg, struct vop_nbd **out)
{
	struct vop_nbd *s = calloc(1, sizeof(*s));
	unsigned half;
	int rc;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	s->d = d;
	s->lfd[0] = s->lfd[1] = -1;
	vop_path_sock_init(&s->usock);
	pthread_mutex_init(&s->lock, NULL);
	snprintf(s->export_name, sizeof(s->export_name), "%s",
		 cfg->export_name ? cfg->export_name : "vop");
	s->seg = vop_blk_driver_seg(d);
	half = vop_blk_driver_slots(d) / 2;
	if (half > NBD_MAX_SLOTS_PER_CMD)
		half = NBD_MAX_SLOTS_PER_CMD;
	if (half == 0)
		half = 1;
	s->max_req = (uint64_t)half * s->seg > (32u << 20) ? (32u << 20) : half * s->seg;
	if (cfg->unix_path) {
		if (strlen(cfg->unix_path) >= sizeof(s->unix_path)) {
			rc = -ENAMETOOLONG;
			goto fail;
		}
		s->lfd[0] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s->lfd[0] < 0)
			goto fail_errno;
		/* beneath the socket directory; only a stale socket of ours is replaced */
		rc = vop_path_bind_unix(s->lfd[0], cfg->unix_root, cfg->unix_path, 0600, &s->usock);
		if (rc)
			goto fail;
		if (listen(s->lfd[0], 16))
			goto fail_errno;
		snprintf(s->unix_path, sizeof(s->unix_path), "%s", cfg->unix_path);
	}
	if (cfg->tls_cert || cfg->tls_key) {
		struct vop_nbd_tls_config tc = { cfg->tls_cert, cfg->tls_key, cfg->tls_ca,
						 cfg->tls_clients };

		rc = vop_nbd_tls_new(&tc, &s->tls);
		if (rc)
			goto fail;
	}
	if (cfg->tcp_port) {
		struct sockaddr_storage a;
		struct sockaddr_in *a4 = (struct sockaddr_in *)&a;
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&a;
		const char *host = cfg->tcp_host && cfg->tcp_host[0] ? cfg->tcp_host : "127.0.0.1";
		uint16_t port = htons(cfg->tcp_port < 0 ? 0 : (uint16_t)cfg->tcp_port);
		socklen_t al;
		bool loopback;
		int one = 1;

		memset(&a, 0, sizeof(a));
		if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
			a4->sin_family = AF_INET;
			a4->sin_port = port;
			al = sizeof(*a4);
			loopback = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
		} else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
			a6->sin6_family = AF_INET6;
			a6->sin6_port = port;
			al = sizeof(*a6);
			loopback = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
		} else {
			rc = -EINVAL;
			goto fail;
		}
		/* plaintext TCP only when asked for, and never beyond loopback */
		if (!s->tls && (!cfg->tcp_plaintext || !loopback)) {
			rc = -EPERM;
			goto fail;
		}
		s->tcp_tls_required = s->tls && (!cfg->tcp_plaintext || !loopback);
		s->lfd[1] = socket(a.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s->lfd[1] < 0)
			goto fail_errno;
		setsockopt(s->lfd[1], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(s->lfd[1], (struct sockaddr *)&a, al) || listen(s->lfd[1], 16) ||
		    getsockname(s->lfd[1], (struct sockaddr *)&a, &al))
			goto fail_errno;
		s->port = ntohs(a.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
	}
	if (s->lfd[0] >= 0 && (rc = start_listener(s, 0, s->lfd[0])))
		goto fail;
	if (s->lfd[1] >= 0 && (rc = start_listener(s, 1, s->lfd[1])))
		goto fail;
	*out = s;
	return 0;
fail_errno:
	rc = -errno;
fail:
	vop_nbd_stop(s);
	return rc;
}

int vop_nbd_port(struct vop_nbd *n)
{
	return n->port;
}

const char *vop_nbd_unix_path(struct vop_nbd *n)
{
	return n->unix_path;
}

uint32_t vop_nbd_max_request(struct vop_nbd *n)
{
	return n->max_req;
}

void vop_nbd_stop(struct vop_nbd *s)
{
	int i;

	if (!s)
		return;
	atomic_store_explicit(&s->stop, true, memory_order_release);
	vop_blk_driver_shutdown(s->d); /* readers blocked on slots return -ESHUTDOWN */
	for (i = 0; i < 2; i++)
		if (s->lrunning[i])
			pthread_join(s->lthread[i], NULL);
	reap(s, true);
	for (i = 0; i < 2; i++)
		if (s->lfd[i] >= 0)
			close(s->lfd[i]);
	vop_path_unlink_socket(&s->usock);
	vop_nbd_tls_free(s->tls); /* after reap: no handshake runs any more */
	pthread_mutex_destroy(&s->lock);
	free(s);
}
