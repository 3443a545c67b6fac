/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-ivshmem-server: an ivshmem server speaking protocol v0 (QEMU's docs/specs/ivshmem-spec.txt)
 * for QEMU's ivshmem-doorbell devices and host peers (include/vop/ivshmem.h). Debian's QEMU ships
 * none. docs/ivshmem-server.md documents the options, the output and the limits.
 *
 * For each client that connects, the server picks an id, makes one eventfd per vector and sends:
 * the version (0), the id, -1 with the shared memory fd, every other peer's id once per vector
 * with that peer's eventfd, then the new peer's own id once per vector with its own eventfds; the
 * other peers get the new id with the new eventfds. When a client goes, the others get its id
 * without an fd.
 *
 * Clients are not trusted. The protocol is one-way, so any byte a client sends ends that client.
 * Sockets are non-blocking; what a client has not read yet waits in its own queue (the fds in it
 * are dup()s, so a peer leaving does not invalidate them), which is bounded: a client that lets it
 * overflow is disconnected. Peers, vectors, queue lengths and the fds all that needs are bounded
 * and checked against RLIMIT_NOFILE at start. Single-threaded: one poll loop.
 *
 * stdout (one line each, flushed): "ready <socket> <size> <vectors>", "connect <id>",
 * "disconnect <id> <reason>", "reject <reason>". Errors and -v detail go to stderr.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PROTOCOL_VERSION 0
#define MAX_ID		 65535
#define MAX_VECTORS	 64
#define MAX_PEERS	 1024
#define MIN_SIZE	 4096ull
#define MAX_SIZE	 (64ull << 30)
#define SPARE_FDS	 32 /* stdio, listener, signalfd, shm, slack */

struct msg {
	int64_t value; /* the 8-byte little-endian number */
	int fd;	       /* dup()ed fd to pass, owned by the queue, or -1 */
};

struct client {
	int sock;	  /* -1 = free slot */
	uint16_t id;	  /* peer id */
	int *efd;	  /* [vectors] eventfds: peers write to ring this client */
	struct msg *q;	  /* queue of messages not sent yet (ring buffer, qcap entries) */
	unsigned qhead;	  /* oldest message */
	unsigned qlen;	  /* messages queued */
	unsigned qsent;	  /* bytes of the oldest message already sent (its fd went with byte 0) */
	const char *dead; /* reason to drop it at the end of this loop turn, NULL while alive */
};

static struct {
	const char *sock_path;
	const char *shm_path;
	uint64_t size;
	unsigned vectors;
	unsigned max_peers;
	int verbose;
	int listen_fd;
	dev_t sock_dev;
	ino_t sock_ino;
	int shm_fd;
	unsigned qcap;		/* queue entries per client */
	struct client *clients; /* [max_peers] */
	unsigned nclients;
	unsigned next_id;
} S = { .vectors = 1, .max_peers = 16, .listen_fd = -1, .shm_fd = -1 };

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void verbose(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void verbose(const char *fmt, ...)
{
	va_list ap;

	if (!S.verbose)
		return;
	va_start(ap, fmt);
	fputs("vop-ivshmem-server: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("vop-ivshmem-server: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void usage(FILE *f)
{
	fputs("usage: vop-ivshmem-server --socket PATH --size BYTES [--shm PATH] [--vectors N]\n"
	      "                          [--max-peers N] [--verbose]\n"
	      "  --socket PATH    Unix socket to create (mode 0600); an existing socket nobody\n"
	      "                   listens on is replaced, anything else there is refused\n"
	      "  --size BYTES     shared memory size: a power of two, 4K..64G (K, M, G suffixes)\n"
	      "  --shm PATH       back it with this file (created 0600, or reused if its size\n"
	      "                   matches); default: an anonymous sealed memfd\n"
	      "  --vectors N      interrupt vectors per peer, 1..64 (default 1)\n"
	      "  --max-peers N    peers at once, 1..1024 (default 16); more are refused\n"
	      "  --verbose        log each message to stderr\n",
	      f);
}

static uint64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || s[0] == '-')
		die("--size: not a number: %s", s);
	switch (*end) {
	case 'K':
	case 'k':
		v <<= 10;
		end++;
		break;
	case 'M':
	case 'm':
		v <<= 20;
		end++;
		break;
	case 'G':
	case 'g':
		v <<= 30;
		end++;
		break;
	}
	if (*end)
		die("--size: bad suffix in %s", s);
	if (v < MIN_SIZE || v > MAX_SIZE || (v & (v - 1)))
		die("--size: %s is not a power of two between 4K and 64G (a PCI BAR's size is a "
		    "power of two)",
		    s);
	return v;
}

static unsigned parse_uint(const char *opt, const char *s, unsigned lo, unsigned hi)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
		die("%s: %s is not a number in %u..%u", opt, s, lo, hi);
	return (unsigned)v;
}

/* ---- startup ---- */

static void check_fd_budget(void)
{
	/* Each client: its socket, its eventfds, and at most qcap queued dup()s. */
	uint64_t need = (uint64_t)S.max_peers * (1 + S.vectors + S.qcap) + SPARE_FDS;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit: %s", strerror(errno));
	if (rl.rlim_cur < need) {
		rl.rlim_cur =
			rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < need)
		die("--max-peers %u with --vectors %u needs %" PRIu64
		    " file descriptors; RLIMIT_NOFILE allows %llu: lower one of them",
		    S.max_peers, S.vectors, need, (unsigned long long)rl.rlim_cur);
}

static void open_shm(void)
{
	struct stat st;
	int created = 0;

	if (!S.shm_path) {
		S.shm_fd = memfd_create("vop-ivshmem", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (S.shm_fd < 0)
			die("memfd_create: %s", strerror(errno));
		created = 1;
	} else {
		S.shm_fd =
			open(S.shm_path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (S.shm_fd >= 0) {
			created = 1;
		} else if (errno == EEXIST) {
			S.shm_fd = open(S.shm_path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
			if (S.shm_fd < 0)
				die("--shm %s: %s", S.shm_path, strerror(errno));
		} else {
			die("--shm %s: %s", S.shm_path, strerror(errno));
		}
	}
	if (fstat(S.shm_fd, &st) < 0)
		die("fstat shm: %s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		die("--shm %s: not a regular file", S.shm_path);
	if (!created && (uint64_t)st.st_size != S.size)
		die("--shm %s: exists with %lld bytes, --size says %" PRIu64
		    ": refusing to resize it",
		    S.shm_path, (long long)st.st_size, S.size);
	if (created) {
		int err;

		if (ftruncate(S.shm_fd, (off_t)S.size) < 0)
			die("ftruncate shm: %s", strerror(errno));
		/* Reserve the pages now: a full tmpfs is an error here, not a SIGBUS in a peer. */
		err = posix_fallocate(S.shm_fd, 0, (off_t)S.size);
		if (err) {
			if (S.shm_path)
				unlink(S.shm_path);
			die("reserving %" PRIu64 " bytes of shared memory: %s", S.size,
			    strerror(err));
		}
	}
	/* A peer must not shrink what every other peer has mapped (SIGBUS): seal the size. */
	if (!S.shm_path &&
	    fcntl(S.shm_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
		die("sealing the memfd: %s", strerror(errno));
}

static void open_socket(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;

	if (strlen(S.sock_path) >= sizeof(sa.sun_path))
		die("--socket %s: longer than %zu bytes", S.sock_path, sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, S.sock_path);
	if (lstat(S.sock_path, &st) == 0) {
		int probe;

		if (!S_ISSOCK(st.st_mode))
			die("--socket %s: exists and is not a socket; refusing to remove it",
			    S.sock_path);
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			die("--socket %s: a server is listening on it", S.sock_path);
		if (probe >= 0)
			close(probe);
		if (unlink(S.sock_path) < 0)
			die("--socket %s: removing the stale socket: %s", S.sock_path,
			    strerror(errno));
	} else if (errno != ENOENT) {
		die("--socket %s: %s", S.sock_path, strerror(errno));
	}
	S.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (S.listen_fd < 0)
		die("socket: %s", strerror(errno));
	old = umask(0177); /* the socket is born 0600: no window where others may connect */
	if (bind(S.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		umask(old);
		die("--socket %s: bind: %s", S.sock_path, strerror(e));
	}
	umask(old);
	if (lstat(S.sock_path, &st) < 0)
		die("--socket %s: %s", S.sock_path, strerror(errno));
	S.sock_dev = st.st_dev;
	S.sock_ino = st.st_ino;
	if (listen(S.listen_fd, 16) < 0)
		die("listen: %s", strerror(errno));
}

/* Removes the socket only if it is still the one this server made. */
static void remove_socket(void)
{
	struct stat st;

	if (lstat(S.sock_path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == S.sock_dev &&
	    st.st_ino == S.sock_ino)
		unlink(S.sock_path);
}

/* ---- clients ---- */

static void enqueue(struct client *c, int64_t value, int fd)
{
	int dup_fd = -1;

	if (c->dead)
		return;
	if (c->qlen == S.qcap) {
		c->dead = "not reading its socket (queue full)";
		return;
	}
	if (fd >= 0) {
		dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
		if (dup_fd < 0) {
			c->dead = "out of file descriptors";
			return;
		}
	}
	c->q[(c->qhead + c->qlen) % S.qcap] = (struct msg){ .value = value, .fd = dup_fd };
	c->qlen++;
}

/* Sends what the socket takes now. */
static void flush(struct client *c)
{
	while (!c->dead && c->qlen > 0) {
		struct msg *m = &c->q[c->qhead];
		unsigned char b[8];
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int))];
		} cm;
		struct iovec iov;
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		ssize_t w;

		for (int i = 0; i < 8; i++)
			b[i] = (unsigned char)((uint64_t)m->value >> (8 * i));
		iov.iov_base = b + c->qsent;
		iov.iov_len = sizeof(b) - c->qsent;
		if (m->fd >= 0 && c->qsent == 0) {
			memset(&cm, 0, sizeof(cm));
			mh.msg_control = cm.buf;
			mh.msg_controllen = sizeof(cm.buf);
			struct cmsghdr *h = CMSG_FIRSTHDR(&mh);

			h->cmsg_level = SOL_SOCKET;
			h->cmsg_type = SCM_RIGHTS;
			h->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(h), &m->fd, sizeof(int));
		}
		w = sendmsg(c->sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				c->dead = "send failed";
			return;
		}
		verbose("-> %u: %" PRId64 "%s", c->id, m->value,
			m->fd >= 0 && c->qsent == 0 ? " +fd" : "");
		if (m->fd >= 0) {
			close(m->fd); /* the kernel holds its own reference now */
			m->fd = -1;
		}
		c->qsent += (unsigned)w;
		if (c->qsent == sizeof(b)) {
			c->qsent = 0;
			c->qhead = (c->qhead + 1) % S.qcap;
			c->qlen--;
		}
	}
}

static int id_in_use(unsigned id)
{
	for (unsigned i = 0; i < S.max_peers; i++)
		if (S.clients[i].sock >= 0 && S.clients[i].id == id)
			return 1;
	return 0;
}

static void free_client(struct client *c)
{
	close(c->sock);
	c->sock = -1;
	for (unsigned v = 0; v < S.vectors; v++)
		if (c->efd[v] >= 0)
			close(c->efd[v]);
	while (c->qlen > 0) {
		if (c->q[c->qhead].fd >= 0)
			close(c->q[c->qhead].fd);
		c->qhead = (c->qhead + 1) % S.qcap;
		c->qlen--;
	}
	c->qhead = c->qsent = 0;
	c->dead = NULL;
	S.nclients--;
}

static void accept_one(void)
{
	struct client *c = NULL;
	int fd = accept4(S.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			fprintf(stderr, "vop-ivshmem-server: accept: %s\n", strerror(errno));
		return;
	}
	for (unsigned i = 0; i < S.max_peers && !c; i++)
		if (S.clients[i].sock < 0)
			c = &S.clients[i];
	if (!c) {
		out("reject full (%u peers)", S.max_peers);
		close(fd);
		return;
	}
	/* Ids go up and wrap, skipping ones in use: a fresh id is not one a peer may still ring. */
	while (id_in_use(S.next_id))
		S.next_id = (S.next_id + 1) % (MAX_ID + 1);
	c->id = (uint16_t)S.next_id;
	S.next_id = (S.next_id + 1) % (MAX_ID + 1);
	for (unsigned v = 0; v < S.vectors; v++)
		c->efd[v] = -1;
	for (unsigned v = 0; v < S.vectors; v++) {
		c->efd[v] = eventfd(0, EFD_CLOEXEC);
		if (c->efd[v] < 0) {
			out("reject eventfd: %s", strerror(errno));
			for (unsigned k = 0; k < v; k++)
				close(c->efd[k]);
			close(fd);
			return;
		}
	}
	c->sock = fd;
	c->qhead = c->qlen = c->qsent = 0;
	c->dead = NULL;
	S.nclients++;

	enqueue(c, PROTOCOL_VERSION, -1);
	enqueue(c, c->id, -1);
	enqueue(c, -1, S.shm_fd);
	for (unsigned i = 0; i < S.max_peers; i++) {
		struct client *o = &S.clients[i];

		if (o == c || o->sock < 0 || o->dead)
			continue;
		for (unsigned v = 0; v < S.vectors; v++)
			enqueue(c, o->id, o->efd[v]);
		for (unsigned v = 0; v < S.vectors; v++)
			enqueue(o, c->id, c->efd[v]);
	}
	for (unsigned v = 0; v < S.vectors; v++)
		enqueue(c, c->id, c->efd[v]);
	out("connect %u", c->id);
}

/* Drops the clients marked dead and tells the others, until none is left to drop. */
static void reap_dead(void)
{
	int again = 1;

	while (again) {
		again = 0;
		for (unsigned i = 0; i < S.max_peers; i++) {
			struct client *c = &S.clients[i];
			uint16_t id;

			if (c->sock < 0 || !c->dead)
				continue;
			id = c->id;
			out("disconnect %u %s", id, c->dead);
			free_client(c);
			for (unsigned k = 0; k < S.max_peers; k++) {
				struct client *o = &S.clients[k];

				if (o->sock < 0 || o->dead)
					continue;
				enqueue(o, id, -1);
				if (o->dead)
					again = 1;
			}
		}
	}
}

static void on_client_input(struct client *c, short revents)
{
	char junk[64];
	ssize_t r;

	if (revents & POLLIN) {
		r = recv(c->sock, junk, sizeof(junk), MSG_DONTWAIT);
		if (r > 0)
			c->dead = "sent data (the protocol is one-way)";
		else if (r == 0)
			c->dead = "closed";
		else if (errno != EAGAIN && errno != EINTR)
			c->dead = "receive failed";
		return;
	}
	if (revents & (POLLHUP | POLLERR))
		c->dead = "closed";
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'l' },
		{ "shm", required_argument, NULL, 'm' },
		{ "vectors", required_argument, NULL, 'n' },
		{ "max-peers", required_argument, NULL, 'p' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct pollfd *pfd;
	sigset_t mask;
	int sfd, o;

	while ((o = getopt_long(argc, argv, "S:l:m:n:p:vh", opts, NULL)) != -1) {
		switch (o) {
		case 's':
		case 'S':
			S.sock_path = optarg;
			break;
		case 'l':
			S.size = parse_size(optarg);
			break;
		case 'm':
			S.shm_path = optarg;
			break;
		case 'n':
			S.vectors = parse_uint("--vectors", optarg, 1, MAX_VECTORS);
			break;
		case 'p':
			S.max_peers = parse_uint("--max-peers", optarg, 1, MAX_PEERS);
			break;
		case 'v':
			S.verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || !S.sock_path || !S.size) {
		usage(stderr);
		return 2;
	}
	/*
	 * One full initial burst plus a join and a leave of every other peer, four times over: room
	 * for churn while a slow peer catches up, not for one that never reads.
	 */
	S.qcap = 3 + 4 * S.max_peers * (S.vectors + 1);
	check_fd_budget();
	S.clients = calloc(S.max_peers, sizeof(*S.clients));
	if (!S.clients)
		die("out of memory");
	for (unsigned i = 0; i < S.max_peers; i++) {
		S.clients[i].sock = -1;
		S.clients[i].efd = calloc(S.vectors, sizeof(int));
		S.clients[i].q = calloc(S.qcap, sizeof(struct msg));
		if (!S.clients[i].efd || !S.clients[i].q)
			die("out of memory");
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die("signalfd: %s", strerror(errno));
	open_shm();
	open_socket();
	pfd = calloc(S.max_peers + 2, sizeof(*pfd));
	if (!pfd)
		die("out of memory");
	out("ready %s %" PRIu64 " %u", S.sock_path, S.size, S.vectors);

	for (;;) {
		unsigned n = 2;
		struct client *who[MAX_PEERS + 2];

		pfd[0] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = S.listen_fd, .events = POLLIN };
		for (unsigned i = 0; i < S.max_peers; i++) {
			struct client *c = &S.clients[i];

			if (c->sock < 0)
				continue;
			pfd[n] = (struct pollfd){
				.fd = c->sock, .events = (short)(POLLIN | (c->qlen ? POLLOUT : 0))
			};
			who[n++] = c;
		}
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll: %s", strerror(errno));
		}
		if (pfd[0].revents)
			break;
		for (unsigned i = 2; i < n; i++) {
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
				on_client_input(who[i], pfd[i].revents);
			if (pfd[i].revents & POLLOUT)
				flush(who[i]);
		}
		reap_dead(); /* first: a slot freed by a peer that left serves a newcomer now */
		if (pfd[1].revents & POLLIN)
			accept_one();
		reap_dead();
		for (unsigned i = 0; i < S.max_peers; i++)
			if (S.clients[i].sock >= 0 && S.clients[i].qlen)
				flush(&S.clients[i]);
		reap_dead();
	}
	remove_socket();
	return 0;
}
