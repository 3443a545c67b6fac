/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-console (single port), both roles. Contract in vop/dev_console.h.
 *
 * Every fd is non-blocking. An input source is read only while a receive
 * buffer is in hand (held input: the kernel buffer back-pressures the
 * writer); output is offered once to every reader and dropped for a
 * reader that cannot take it now (counted), except the log file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "../core/private_atomic.h"
#include "../core/win_access.h"
#include "vop/dev_console.h"
#include "vop/path.h"

#define CON_RXQ 0u /* device -> driver */
#define CON_TXQ 1u /* driver -> device */
#define CON_BUF 4096u
#define CON_MAX_CLIENTS 8
#define CON_RING (1u << 20)  /* JS output ring */
#define CON_IN_RING (64u << 10) /* JS input ring */
#define CON_READERS 4
#define CON_BUDGET 64

struct vop_console {
	bool driver;              /* role; set at create */
	struct vop_devctx *ctx;   /* set at create */
	struct vop_window *w;     /* set at create */
	struct vop_dev_info di;   /* set at create */
	int ptm, pts;             /* pty master / our slave fd (-1 if none) */
	char pts_name[128];
	int pty_dirfd;            /* directory of the pty link (O_PATH), -1 if none */
	char pty_link[VOP_PATH_MAX]; /* the link's name in pty_dirfd ("" if none) */
	/* device role: log */
	int logfd;                /* -1 if none */
	int log_dirfd;            /* the log's directory (O_PATH): rotation stays in it */
	char log_path[VOP_PATH_MAX]; /* the log's name in log_dirfd */
	uint64_t log_max, log_size;
	unsigned log_files;       /* rotated generations kept (FILE.1 .. FILE.n) */
	/* device role: unix socket */
	int lfd;                  /* listener, -1 if none */
	struct vop_path_sock usock; /* where lfd is bound (unlinked only if still ours) */
	int cl[CON_MAX_CLIENTS];  /* clients, -1 = free */
	_Atomic int lfd_fired, ptm_fired, cl_fired;
	bool lfd_armed, ptm_armed, cl_armed;
	/* worker thread */
	bool started;             /* between start and stop */
	uint64_t feat;
	struct vop_devq q[2];
	struct vop_chain stash;   /* device: rx buffer in hand */
	bool have_stash;
	/* driver role */
	unsigned nslots;          /* per queue */
	uint16_t *tx_free;
	unsigned tx_nfree;
	uint16_t pend_slot;       /* rx slot whose bytes are not all written to the pty */
	uint32_t pend_off, pend_len;
	bool have_pend;
	bool ptm_out_armed;
	/* JS stream (any thread, under lock) */
	pthread_mutex_t lock;
	uint8_t *ring;            /* CON_RING bytes of output */
	uint64_t ring_head;       /* total bytes ever written */
	uint64_t rpos[CON_READERS];
	uint8_t *in_ring;         /* CON_IN_RING bytes of input */
	uint32_t in_head, in_tail; /* free-running */
	/* Counters, added to from several threads: private atomics (core/private_atomic.h). */
	union {
		struct vop_console_stats s;                                     /* names, offsets */
		struct vop_private_u64 c[sizeof(struct vop_console_stats) / 8]; /* the counters */
	} st;
};

_Static_assert(sizeof(struct vop_console_stats) % 8 == 0, "vop_console_stats is all uint64_t");

/* Add v to the counter at field (a member of c->st.s). */
#define st_add(field, v) vop_private_add_u64(&c->st.c[(field) - (uint64_t *)&c->st.s], (v))

void vop_console_stats(struct vop_console *c, struct vop_console_stats *out)
{
	uint64_t *dst = (uint64_t *)out;
	size_t i;

	for (i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
		dst[i] = vop_private_load_u64(&c->st.c[i]);
}

const char *vop_console_pty_name(struct vop_console *c)
{
	return c->pts_name;
}

void vop_console_spec(struct vop_dev_spec *spec, uint32_t dev_id, uint8_t device_side,
		      uint16_t qsize)
{
	static const uint8_t zero_cfg[12]; /* cols, rows, max_nr_ports, emerg_wr */

	memset(spec, 0, sizeof(*spec));
	spec->dev_id = dev_id;
	spec->device_type = VOP_VIRTIO_ID_CONSOLE;
	spec->features = 1ull << VOP_F_EVENT_IDX;
	spec->device_side = device_side;
	spec->num_queues = 2;
	spec->queue_size[CON_RXQ] = qsize;
	spec->queue_size[CON_TXQ] = qsize;
	spec->pool_size[CON_RXQ] = (uint64_t)qsize * CON_BUF;
	spec->pool_size[CON_TXQ] = (uint64_t)qsize * CON_BUF;
	spec->config_len = sizeof(zero_cfg);
	spec->config = zero_cfg;
}

static int pty_open(struct vop_console *c, const char *link, const char *root)
{
	struct termios t;
	int rc;

	c->ptm = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (c->ptm < 0)
		return -errno;
	if (grantpt(c->ptm) || unlockpt(c->ptm) || ptsname_r(c->ptm, c->pts_name, sizeof(c->pts_name)))
		return -errno;
	/*
	 * Keep a slave fd open ourselves: the master then never reads EIO or
	 * polls HUP while nobody is attached; output to an absent reader just
	 * fills the pty buffer and is dropped (EAGAIN).
	 */
	c->pts = open(c->pts_name, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
	if (c->pts < 0)
		return -errno;
	if (tcgetattr(c->pts, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(c->pts, TCSANOW, &t);
	}
	if (link) {
		const char *name;

		c->pty_dirfd = vop_path_open_dir(root, link, &name);
		if (c->pty_dirfd < 0) {
			rc = c->pty_dirfd;
			c->pty_dirfd = -1;
			return rc;
		}
		/* only a stale link of ours (into /dev/pts) is replaced, never a file */
		rc = vop_path_symlink(c->pty_dirfd, name, c->pts_name, "/dev/pts/");
		if (rc)
			return rc;
		snprintf(c->pty_link, sizeof(c->pty_link), "%s", name);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* JS stream                                                            */
/* ------------------------------------------------------------------ */

uint32_t vop_console_read_out(struct vop_console *c, unsigned r, void *buf, uint32_t len,
			      uint64_t *lost)
{
	uint32_t n = 0;

	*lost = 0;
	if (r >= CON_READERS)
		return 0;
	pthread_mutex_lock(&c->lock);
	if (c->ring_head - c->rpos[r] > CON_RING) {
		*lost = c->ring_head - c->rpos[r] - CON_RING;
		c->rpos[r] = c->ring_head - CON_RING;
	}
	while (n < len && c->rpos[r] < c->ring_head) {
		uint32_t off = (uint32_t)(c->rpos[r] % CON_RING);
		uint32_t chunk = CON_RING - off;

		if (chunk > c->ring_head - c->rpos[r])
			chunk = (uint32_t)(c->ring_head - c->rpos[r]);
		if (chunk > len - n)
			chunk = len - n;
		memcpy((uint8_t *)buf + n, c->ring + off, chunk);
		n += chunk;
		c->rpos[r] += chunk;
	}
	pthread_mutex_unlock(&c->lock);
	return n;
}

uint32_t vop_console_write_in(struct vop_console *c, const void *buf, uint32_t len)
{
	uint32_t n = 0;

	pthread_mutex_lock(&c->lock);
	while (n < len && c->in_head - c->in_tail < CON_IN_RING) {
		c->in_ring[c->in_head % CON_IN_RING] = ((const uint8_t *)buf)[n++];
		c->in_head++;
	}
	pthread_mutex_unlock(&c->lock);
	if (n)
		vop_devctx_wake(c->ctx);
	return n;
}

static void ring_put(struct vop_console *c, const uint8_t *p, uint32_t len)
{
	pthread_mutex_lock(&c->lock);
	while (len) {
		uint32_t off = (uint32_t)(c->ring_head % CON_RING), chunk = CON_RING - off;

		if (chunk > len)
			chunk = len;
		memcpy(c->ring + off, p, chunk);
		c->ring_head += chunk;
		p += chunk;
		len -= chunk;
	}
	pthread_mutex_unlock(&c->lock);
}

/* ------------------------------------------------------------------ */
/* Device role                                                          */
/* ------------------------------------------------------------------ */

static void log_write(struct vop_console *c, const uint8_t *p, uint32_t len)
{
	if (c->logfd < 0)
		return;
	if (c->log_size + len > c->log_max && c->log_size > 0) {
		char from[sizeof(c->log_path) + 12], to[sizeof(c->log_path) + 12];
		unsigned k;

		/* FILE.(n-1) -> FILE.n ... FILE -> FILE.1, all inside the log's directory; the oldest falls off */
		for (k = c->log_files; k > 1; k--) {
			snprintf(from, sizeof(from), "%s.%u", c->log_path, k - 1);
			snprintf(to, sizeof(to), "%s.%u", c->log_path, k);
			renameat(c->log_dirfd, from, c->log_dirfd, to);
		}
		snprintf(to, sizeof(to), "%s.1", c->log_path);
		if (renameat(c->log_dirfd, c->log_path, c->log_dirfd, to) == 0 || errno == ENOENT) {
			close(c->logfd);
			/* the name is free now: create a new file, never open one somebody put there */
			c->logfd = openat(c->log_dirfd, c->log_path,
					  O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
			c->log_size = 0;
			st_add(&c->st.s.rotations, 1);
			if (c->logfd < 0)
				return;
		} else {
			c->log_size = 0; /* cannot rotate now: keep appending, try again after log_max bytes */
		}
	}
	while (len) {
		ssize_t r = write(c->logfd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return; /* disk full: the log is best effort, the link is not */
		c->log_size += (uint64_t)r;
		st_add(&c->st.s.log_bytes, (uint64_t)r);
		p += r;
		len -= (uint32_t)r;
	}
}

/* One chunk of console output to every reader. */
static void out_fanout(struct vop_console *c, const uint8_t *p, uint32_t len)
{
	int i;

	log_write(c, p, len);
	ring_put(c, p, len);
	if (c->ptm >= 0) {
		ssize_t r = write(c->ptm, p, len);

		if (r < (ssize_t)len)
			st_add(&c->st.s.dropped, len - (r > 0 ? (uint64_t)r : 0));
	}
	for (i = 0; i < CON_MAX_CLIENTS; i++) {
		ssize_t r;

		if (c->cl[i] < 0)
			continue;
		r = send(c->cl[i], p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r < 0 && errno != EAGAIN) {
			vop_devctx_unwatch(c->ctx, c->cl[i]); /* before the number can be reused */
			close(c->cl[i]);
			c->cl[i] = -1;
		} else if (r < (ssize_t)len) {
			st_add(&c->st.s.dropped, len - (r > 0 ? (uint64_t)r : 0));
		}
	}
}

static int dev_tx(struct vop_console *c)
{
	struct vop_devq *q = &c->q[CON_TXQ];
	struct vop_chain ch;
	int k, progress = 0;

	for (k = 0; k < CON_BUDGET; k++) {
		unsigned i;

		if (vop_vq_pop(&q->vq, &ch) <= 0)
			break;
		progress = 1;
		for (i = 0; i < ch.n_out; i++)
			out_fanout(c, ch.iov[i].base, ch.iov[i].len);
		st_add(&c->st.s.out_bytes, ch.out_bytes);
		vop_vq_push(&q->vq, ch.head, 0);
	}
	if (progress)
		vop_devq_notify_if(c->w, vop_vq_publish_used(&q->vq));
	return progress;
}

static void accept_clients(struct vop_console *c)
{
	for (;;) {
		int fd = accept4(c->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK), i;

		if (fd < 0)
			return;
		for (i = 0; i < CON_MAX_CLIENTS && c->cl[i] >= 0; i++)
			;
		if (i == CON_MAX_CLIENTS) {
			close(fd);
			continue;
		}
		c->cl[i] = fd;
		atomic_store_explicit(&c->cl_fired, 1, memory_order_release); /* read it at once */
	}
}

/* Read input from a source into the stashed rx buffer; returns bytes or 0. */
static uint32_t fill_from_fd(struct vop_console *c, int fd, bool *eagain, bool *dead)
{
	struct iovec iov[VOP_CHAIN_MAX_IOV];
	int niov = vop_chain_iov(&c->stash, true, 0, c->stash.in_bytes, iov, VOP_CHAIN_MAX_IOV);
	ssize_t r;

	*eagain = *dead = false;
	if (niov <= 0)
		return 0;
	r = readv(fd, iov, niov);
	if (r > 0)
		return (uint32_t)r;
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		*eagain = true;
	else
		*dead = true;
	return 0;
}

static int dev_rx(struct vop_console *c)
{
	struct vop_devq *q = &c->q[CON_RXQ];
	int k, progress = 0;

	for (k = 0; k < CON_BUDGET; k++) {
		uint32_t n = 0;
		bool eagain, dead;
		int i;

		if (!c->have_stash) {
			if (vop_vq_pop(&q->vq, &c->stash) <= 0)
				break; /* hold input until the driver posts buffers */
			if (c->stash.in_bytes == 0) {
				st_add(&c->st.s.zero_len, 1);
				vop_vq_push(&q->vq, c->stash.head, 0);
				progress = 1;
				continue;
			}
			c->have_stash = true;
		}
		/* JS input first (it was accepted already), then pty, then sockets */
		pthread_mutex_lock(&c->lock);
		while (n < c->stash.in_bytes && c->in_tail != c->in_head) {
			uint8_t b = c->in_ring[c->in_tail % CON_IN_RING];

			vop_chain_write(&c->stash, n, &b, 1);
			n++;
			c->in_tail++;
		}
		pthread_mutex_unlock(&c->lock);
		if (!n && c->ptm >= 0 && atomic_load(&c->ptm_fired)) {
			n = fill_from_fd(c, c->ptm, &eagain, &dead);
			if (!n) {
				atomic_store_explicit(&c->ptm_fired, 0, memory_order_release);
				vop_devctx_watch_flag(c->ctx, c->ptm, POLLIN, &c->ptm_fired);
			}
		}
		if (!n && atomic_load(&c->cl_fired)) {
			atomic_store_explicit(&c->cl_fired, 0, memory_order_release);
			for (i = 0; i < CON_MAX_CLIENTS && !n; i++) {
				if (c->cl[i] < 0)
					continue;
				n = fill_from_fd(c, c->cl[i], &eagain, &dead);
				if (dead) {
					vop_devctx_unwatch(c->ctx, c->cl[i]); /* before the number can be reused */
					close(c->cl[i]);
					c->cl[i] = -1;
				}
			}
			if (n)
				atomic_store_explicit(&c->cl_fired, 1, memory_order_release); /* more may be waiting */
			else
				for (i = 0; i < CON_MAX_CLIENTS; i++)
					if (c->cl[i] >= 0)
						vop_devctx_watch_flag(c->ctx, c->cl[i], POLLIN, &c->cl_fired);
		}
		if (!n)
			break;
		c->have_stash = false;
		st_add(&c->st.s.in_bytes, n);
		vop_vq_push(&q->vq, c->stash.head, n);
		progress = 1;
	}
	if (progress)
		vop_devq_notify_if(c->w, vop_vq_publish_used(&q->vq));
	return progress;
}

/* ------------------------------------------------------------------ */
/* Driver role                                                          */
/* ------------------------------------------------------------------ */

static uint8_t *slot(struct vop_devq *q, unsigned i)
{
	return q->pool + (uint64_t)i * CON_BUF;
}

static void post_rx(struct vop_console *c, unsigned i)
{
	struct vop_devq *q = &c->q[CON_RXQ];
	struct vop_sg sg = { q->pool_off + (uint64_t)i * CON_BUF, CON_BUF };

	vop_vq_add(&q->vq, &sg, 0, 1, (void *)(uintptr_t)(i + 1));
}

static int drv_rx(struct vop_console *c)
{
	struct vop_devq *q = &c->q[CON_RXQ];
	int progress = 0, k;
	void *tok;
	uint32_t len;

	for (k = 0; k < CON_BUDGET; k++) {
		if (!c->have_pend) {
			if (vop_vq_get_used(&q->vq, &tok, &len) <= 0)
				break;
			c->pend_slot = (uint16_t)((uintptr_t)tok - 1);
			c->pend_off = 0;
			c->pend_len = len;
			c->have_pend = true;
			st_add(&c->st.s.in_bytes, len);
			progress = 1;
		}
		while (c->pend_off < c->pend_len) {
			ssize_t r = write(c->ptm, slot(q, c->pend_slot) + c->pend_off,
					  c->pend_len - c->pend_off);

			if (r <= 0)
				break;
			c->pend_off += (uint32_t)r;
		}
		if (c->pend_off < c->pend_len) {
			/* hold: the card's reader is slow; retry when the pty drains */
			vop_devctx_watch(c->ctx, c->ptm, POLLOUT);
			break;
		}
		c->have_pend = false;
		post_rx(c, c->pend_slot);
		progress = 1;
	}
	if (progress)
		vop_devq_notify_if(c->w, vop_vq_kick_prepare(&q->vq));
	return progress;
}

static int drv_tx(struct vop_console *c)
{
	struct vop_devq *q = &c->q[CON_TXQ];
	int progress = 0, posted = 0, k;
	void *tok;
	uint32_t len;

	while (vop_vq_get_used(&q->vq, &tok, &len) > 0) {
		c->tx_free[c->tx_nfree++] = (uint16_t)((uintptr_t)tok - 1);
		progress = 1;
	}
	if (!atomic_load(&c->ptm_fired))
		return progress;
	for (k = 0; k < CON_BUDGET && c->tx_nfree; k++) {
		unsigned i = c->tx_free[c->tx_nfree - 1];
		struct vop_sg sg;
		ssize_t r = read(c->ptm, slot(q, i), CON_BUF);

		if (r <= 0) {
			atomic_store_explicit(&c->ptm_fired, 0, memory_order_release);
			vop_devctx_watch_flag(c->ctx, c->ptm, POLLIN, &c->ptm_fired);
			break;
		}
		sg.addr = q->pool_off + (uint64_t)i * CON_BUF;
		sg.len = (uint32_t)r;
		if (vop_vq_add(&q->vq, &sg, 1, 0, (void *)(uintptr_t)(i + 1)) < 0)
			break;
		c->tx_nfree--;
		st_add(&c->st.s.out_bytes, (uint64_t)r);
		posted = progress = 1;
	}
	if (posted)
		vop_devq_notify_if(c->w, vop_vq_kick_prepare(&q->vq));
	return progress;
}

/* ------------------------------------------------------------------ */
/* Loop ops                                                             */
/* ------------------------------------------------------------------ */

static int con_start(void *arg, uint64_t feat, bool resume)
{
	struct vop_console *c = arg;
	unsigned i;
	int rc;

	(void)resume; /* never offered: the console does not negotiate VOP_F_INFLIGHT */
	c->feat = feat;
	rc = vop_devq_init(c->w, &c->di, CON_RXQ, c->driver, feat, &c->q[CON_RXQ]);
	rc = rc ? rc : vop_devq_init(c->w, &c->di, CON_TXQ, c->driver, feat, &c->q[CON_TXQ]);
	if (rc)
		return rc;
	c->have_stash = false;
	c->have_pend = false;
	if (c->driver) {
		c->tx_nfree = 0;
		for (i = 0; i < c->nslots; i++) {
			c->tx_free[c->tx_nfree++] = (uint16_t)i;
			post_rx(c, i);
		}
		vop_vq_kick_prepare(&c->q[CON_RXQ].vq); /* the device reads it after DRIVER_OK */
	}
	c->started = true;
	return 0;
}

static int con_stop(void *arg)
{
	struct vop_console *c = arg;

	c->started = false;
	c->have_stash = false;
	c->have_pend = false;
	vop_devq_destroy(&c->q[CON_RXQ]);
	vop_devq_destroy(&c->q[CON_TXQ]);
	return 0;
}

static struct vop_vq *con_queue(void *arg, unsigned q)
{
	struct vop_console *c = arg;

	return q < 2 ? &c->q[q].vq : NULL;
}

static int con_poll(void *arg)
{
	struct vop_console *c = arg;
	int p = 0;

	if (!c->started)
		return 0;
	if (c->lfd >= 0 && atomic_load(&c->lfd_fired)) {
		atomic_store_explicit(&c->lfd_fired, 0, memory_order_release);
		accept_clients(c);
		vop_devctx_watch_flag(c->ctx, c->lfd, POLLIN, &c->lfd_fired);
	}
	if (c->driver)
		return drv_tx(c) | drv_rx(c) | p;
	return dev_tx(c) | dev_rx(c) | p;
}

static int con_prepare_sleep(void *arg)
{
	struct vop_console *c = arg;
	int pending = 0;

	if (!c->started)
		return 0;
	/* device receiveq: while we hold a buffer we wait for input, not for buffers */
	if (c->driver || !c->have_stash)
		pending |= vop_vq_enable_notify(&c->q[CON_RXQ].vq);
	pending |= vop_vq_enable_notify(&c->q[CON_TXQ].vq);
	pthread_mutex_lock(&c->lock);
	if (!c->driver && c->in_head != c->in_tail && c->have_stash)
		pending = 1;
	pthread_mutex_unlock(&c->lock);
	return pending;
}

const struct vop_devback_ops vop_console_ops = {
	.name = "console",
	.driver_features = 1ull << VOP_F_EVENT_IDX,
	.start = con_start,
	.stop = con_stop,
	.poll = con_poll,
	.prepare_sleep = con_prepare_sleep,
	.queue = con_queue,
};

/*
 * Open (append) or create the console log at path beneath root, keeping its
 * directory for rotation. Only a regular file with one link is written: a
 * symlink, a FIFO, a device or a directory at that name is refused (-EEXIST
 * or -ELOOP) and left alone.
 */
static int log_open(struct vop_console *c, const char *path, const char *root)
{
	const char *name;
	struct stat sb;

	c->log_dirfd = vop_path_open_dir(root, path, &name);
	if (c->log_dirfd < 0) {
		int rc = c->log_dirfd;

		c->log_dirfd = -1;
		return rc;
	}
	if (strlen(name) + 5 > sizeof(c->log_path)) /* room for ".100" */
		return -ENAMETOOLONG;
	snprintf(c->log_path, sizeof(c->log_path), "%s", name);
	if (fstatat(c->log_dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && (!S_ISREG(sb.st_mode) || sb.st_nlink > 1))
		return -EEXIST;
	c->logfd = openat(c->log_dirfd, name,
			  O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0600);
	if (c->logfd < 0)
		return errno == ELOOP ? -ELOOP : -errno;
	if (fstat(c->logfd, &sb) || !S_ISREG(sb.st_mode) || sb.st_nlink > 1)
		return -EEXIST; /* replaced between the check and the open */
	c->log_size = (uint64_t)sb.st_size;
	return 0;
}

static int con_create(struct vop_devctx *ctx, uint32_t dev_id, const struct vop_console_config *cfg,
		      bool driver, struct vop_console **out)
{
	struct vop_console *c = calloc(1, sizeof(*c));
	int rc, i;

	*out = NULL;
	if (!c)
		return -ENOMEM;
	c->driver = driver;
	c->ctx = ctx;
	c->w = vop_devctx_window(ctx);
	c->ptm = c->pts = c->logfd = c->lfd = c->pty_dirfd = c->log_dirfd = -1;
	vop_path_sock_init(&c->usock);
	for (i = 0; i < CON_MAX_CLIENTS; i++)
		c->cl[i] = -1;
	pthread_mutex_init(&c->lock, NULL);
	c->ring = malloc(CON_RING);
	c->in_ring = malloc(CON_IN_RING);
	if (!c->ring || !c->in_ring) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = vop_dev_find_wait(c->w, dev_id, VOP_VIRTIO_ID_CONSOLE, cfg->find_timeout_ms, &c->di);
	if (rc)
		goto fail;
	if ((c->di.device_side == c->w->side) == driver || c->di.num_queues < 2) {
		rc = -EINVAL;
		goto fail;
	}
	if (cfg->want_pty || driver) {
		rc = pty_open(c, cfg->pty_link, cfg->pty_root);
		if (rc)
			goto fail;
		atomic_store_explicit(&c->ptm_fired, 1, memory_order_release);
	}
	if (!driver && cfg->log_path) {
		rc = log_open(c, cfg->log_path, cfg->log_root);
		if (rc)
			goto fail;
		c->log_max = cfg->log_max ? cfg->log_max : (1u << 20);
		c->log_files = cfg->log_files ? (cfg->log_files > 100 ? 100 : cfg->log_files) : 1;
	}
	if (!driver && cfg->unix_path) {
		c->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (c->lfd < 0) {
			rc = -errno;
			goto fail;
		}
		rc = vop_path_bind_unix(c->lfd, cfg->unix_root, cfg->unix_path, 0600, &c->usock);
		if (rc)
			goto fail;
		if (listen(c->lfd, 8)) {
			rc = -errno;
			goto fail;
		}
		atomic_store_explicit(&c->lfd_fired, 1, memory_order_release);
	}
	if (driver) {
		const struct vop_queue_desc *rq = &c->di.queues[CON_RXQ], *tq = &c->di.queues[CON_TXQ];

		/* one 4 KiB slot per ring entry, the same slots in both pools */
		c->nslots = (unsigned)(rq->pool_size / CON_BUF);
		if (c->nslots > rq->size)
			c->nslots = rq->size;
		if (tq->pool_size / CON_BUF < c->nslots || tq->size < c->nslots || !c->nslots) {
			rc = -EPROTO;
			goto fail;
		}
		c->tx_free = calloc(c->nslots, sizeof(uint16_t));
		if (!c->tx_free) {
			rc = -ENOMEM;
			goto fail;
		}
	}
	*out = c;
	return 0;
fail:
	vop_console_destroy(c);
	return rc;
}

int vop_console_device_create(struct vop_devctx *ctx, uint32_t dev_id,
			      const struct vop_console_config *c, struct vop_console **out)
{
	return con_create(ctx, dev_id, c, false, out);
}

int vop_console_driver_create(struct vop_devctx *ctx, uint32_t dev_id,
			      const struct vop_console_config *c, struct vop_console **out)
{
	return con_create(ctx, dev_id, c, true, out);
}

void vop_console_destroy(struct vop_console *c)
{
	int i;

	if (!c)
		return;
	vop_devq_destroy(&c->q[0]);
	vop_devq_destroy(&c->q[1]);
	/* the watcher must not poll fds we close */
	vop_devctx_unwatch(c->ctx, c->ptm);
	vop_devctx_unwatch(c->ctx, c->lfd);
	for (i = 0; i < CON_MAX_CLIENTS; i++)
		vop_devctx_unwatch(c->ctx, c->cl[i]);
	if (c->pty_link[0])
		vop_path_unlink_symlink(c->pty_dirfd, c->pty_link, c->pts_name);
	if (c->pty_dirfd >= 0)
		close(c->pty_dirfd);
	if (c->log_dirfd >= 0)
		close(c->log_dirfd);
	if (c->ptm >= 0)
		close(c->ptm);
	if (c->pts >= 0)
		close(c->pts);
	if (c->logfd >= 0)
		close(c->logfd);
	if (c->lfd >= 0)
		close(c->lfd);
	vop_path_unlink_socket(&c->usock);
	for (i = 0; i < CON_MAX_CLIENTS; i++)
		if (c->cl[i] >= 0)
			close(c->cl[i]);
	free(c->tx_free);
	free(c->ring);
	free(c->in_ring);
	pthread_mutex_destroy(&c->lock);
	free(c);
}
