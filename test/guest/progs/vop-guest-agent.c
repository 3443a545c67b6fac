/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-guest-agent: PID 1 of vop's test guests (after /init's set-up), the other end of
 * test/helpers/guest-channel.ts. It runs shell commands for the host over a virtio-serial port
 * (the port named "vop.agent") and streams their output back. Built with `gcc -static`.
 *
 * Frames, both directions: u32 LE length (of what follows), u8 type, u32 LE id, payload.
 *   host -> guest  'X' exec:  u32 LE cmd length, cmd bytes, stdin bytes (the rest; closed after)
 *                  'K' kill:  u32 LE signal; sent to the command's process group
 *   guest -> host  'R' ready (id 0): payload = "VOPGUEST1 " + kernel uptime in ms, decimal
 *                  'O' stdout bytes, 'E' stderr bytes of command id
 *                  'Z' exit:  i32 LE status (exit code, or 128 + signal)
 * Ids are the host's; commands run concurrently (at most MAX_PROCS), each in its own session, with
 * `sh -c CMD`, its stdin, stdout and stderr Unix socket pairs (see start()). When a command
 * exits, what its pipes hold is sent, then 'Z', then its pipes close:
 * a background process it left behind must redirect its own output (docs/guest-harness.md).
 * As PID 1 the agent also reaps orphans. It never exits on its own; a bad frame from the host is
 * logged on the console and skipped.
 *
 * After a reset (QMP system_reset) the port may still hold bytes the host sent to the agent before
 * it: the agent discards what arrives in its first DRAIN_MS, and the host sends nothing between the
 * reset and the new 'R' frame. A frame is one write, so a reset never leaves half a header from the
 * guest in the host's stream; the host resynchronises on the 'R' frame's magic anyway.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS    64
#define MAX_FRAME    (64u << 20) /* largest host frame (stdin of a file push) */
#define CHUNK	     65536
#define PORT_NAME    "vop.agent"
#define PORT_WAIT_MS 10000
#define DRAIN_MS     30

struct proc {
	uint32_t id;	  /* host's id; valid while pid > 0 */
	pid_t pid;	  /* 0 = free slot */
	int out, err, in; /* pipe ends, -1 when closed */
	char *inbuf;	  /* stdin bytes still to write */
	size_t inlen, inoff;
};

static struct proc procs[MAX_PROCS];
static int port = -1;

static void logc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logc(const char *fmt, ...)
{
	va_list ap;

	fputs("vop-guest-agent: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				struct pollfd pfd = { .fd = fd, .events = POLLOUT };

				poll(&pfd, 1, 100);
				continue;
			}
			logc("port write: %s", strerror(errno));
			return;
		}
		p += w;
		n -= (size_t)w;
	}
}

static void send_frame(char type, uint32_t id, const void *payload, size_t len)
{
	static unsigned char buf[9 + CHUNK];

	if (len > CHUNK) {
		logc("frame of %zu bytes cut to %d", len, CHUNK);
		len = CHUNK;
	}
	put32(buf, (uint32_t)(len + 5));
	buf[4] = (unsigned char)type;
	put32(buf + 5, id);
	if (len > 0)
		memcpy(buf + 9, payload, len);
	write_all(port, buf, 9 + len);
}

static struct proc *find_proc(uint32_t id)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i].pid > 0 && procs[i].id == id)
			return &procs[i];
	return NULL;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void send_exit(uint32_t id, int status)
{
	unsigned char b[4];

	put32(b, (uint32_t)status);
	send_frame('Z', id, b, sizeof(b));
}

/* Forwards what one pipe holds now; returns 0 at EOF or error (pipe closed), 1 otherwise. */
static int pump(struct proc *p, int *fd, char type)
{
	static char buf[CHUNK];

	for (;;) {
		ssize_t r = read(*fd, buf, sizeof(buf));

		if (r > 0) {
			send_frame(type, p->id, buf, (size_t)r);
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN)
			return 1;
		close_fd(fd);
		return 0;
	}
}

static void start(uint32_t id, const unsigned char *pl, size_t len)
{
	int o[2], e[2], in[2];
	struct proc *p = NULL;
	uint32_t clen;
	char *cmd;

	if (len < 4 || (clen = get32(pl)) > len - 4) {
		logc("exec %u: bad payload", id);
		send_exit(id, 127);
		return;
	}
	for (int i = 0; i < MAX_PROCS && !p; i++)
		if (procs[i].pid == 0)
			p = &procs[i];
	if (!p || find_proc(id)) {
		const char *msg = p ? "vop-guest-agent: duplicate id\n"
				    : "vop-guest-agent: too many commands\n";

		send_frame('E', id, msg, strlen(msg));
		send_exit(id, 127);
		return;
	}
	cmd = strndup((const char *)pl + 4, clen);
	/*
	 * Socket pairs, not pipes: a command that splices a slow file into its stdout (busybox
	 * `cat` of a tty uses sendfile(), which in Linux 6.1 holds the output pipe's mutex while it
	 * waits for tty input) would otherwise block our read() of that pipe in D state, and the
	 * whole agent with it. Sending into a socket goes through a private pipe and holds no lock
	 * of ours.
	 */
	if (!cmd || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, o) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, e) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in)) {
		logc("exec %u: %s", id, strerror(errno));
		send_exit(id, 127);
		free(cmd);
		return;
	}
	pid_t pid = fork();

	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		setsid();
		dup2(in[0], 0);
		dup2(o[1], 1);
		dup2(e[1], 2);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	free(cmd);
	close(o[1]);
	close(e[1]);
	close(in[0]);
	if (pid < 0) {
		logc("fork: %s", strerror(errno));
		close(o[0]);
		close(e[0]);
		close(in[1]);
		send_exit(id, 127);
		return;
	}
	fcntl(o[0], F_SETFL, O_NONBLOCK);
	fcntl(e[0], F_SETFL, O_NONBLOCK);
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	p->id = id;
	p->pid = pid;
	p->out = o[0];
	p->err = e[0];
	p->in = in[1];
	p->inlen = len - 4 - clen;
	p->inoff = 0;
	p->inbuf = NULL;
	if (p->inlen > 0) {
		p->inbuf = malloc(p->inlen);
		if (p->inbuf)
			memcpy(p->inbuf, pl + 4 + clen, p->inlen);
		else
			p->inlen = 0;
	}
	if (p->inlen == 0)
		close_fd(&p->in);
}

static void feed_stdin(struct proc *p)
{
	while (p->inoff < p->inlen) {
		ssize_t w = write(p->in, p->inbuf + p->inoff, p->inlen - p->inoff);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN)
			return;
		if (w <= 0)
			break;
		p->inoff += (size_t)w;
	}
	free(p->inbuf);
	p->inbuf = NULL;
	p->inlen = p->inoff = 0;
	close_fd(&p->in);
}

static void reap(void)
{
	int st;
	pid_t pid;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		for (int i = 0; i < MAX_PROCS; i++) {
			struct proc *p = &procs[i];

			if (p->pid != pid)
				continue;
			if (p->out >= 0)
				pump(p, &p->out, 'O');
			if (p->err >= 0)
				pump(p, &p->err, 'E');
			close_fd(&p->out);
			close_fd(&p->err);
			close_fd(&p->in);
			free(p->inbuf);
			p->inbuf = NULL;
			send_exit(p->id, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
			p->pid = 0;
		}
	}
}

static void handle(char type, uint32_t id, const unsigned char *pl, size_t len)
{
	struct proc *p;

	switch (type) {
	case 'X':
		start(id, pl, len);
		break;
	case 'K':
		p = find_proc(id);
		if (p && len >= 4)
			kill(-p->pid, (int)get32(pl));
		break;
	default:
		logc("unknown frame type 0x%02x", (unsigned char)type);
	}
}

static int find_port(char *dev, size_t n)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *de;
	int found = 0;

	if (!d)
		return 0;
	while (!found && (de = readdir(d))) {
		char path[512], name[64] = "";
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(name, sizeof(name), f) &&
		    strncmp(name, PORT_NAME, strlen(PORT_NAME)) == 0 &&
		    (name[strlen(PORT_NAME)] == '\n' || name[strlen(PORT_NAME)] == 0)) {
			snprintf(dev, n, "/dev/%s", de->d_name);
			found = 1;
		}
		fclose(f);
	}
	closedir(d);
	return found;
}

static unsigned long uptime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (unsigned long)ts.tv_sec * 1000ul + (unsigned long)ts.tv_nsec / 1000000ul;
}

int main(void)
{
	static unsigned char hdr[9];
	unsigned char *frame = NULL;
	size_t have = 0, want = sizeof(hdr), cap = 0;
	int in_body = 0, sfd;
	char dev[300], up[48];
	sigset_t mask;

	for (int i = 0; i < MAX_PROCS; i++)
		procs[i].out = procs[i].err = procs[i].in = -1;
	for (int t = 0; !find_port(dev, sizeof(dev)); t += 10) {
		if (t >= PORT_WAIT_MS) {
			logc("no virtio-serial port named %s", PORT_NAME);
			for (;;)
				pause();
		}
		usleep(10000);
	}
	port = open(dev, O_RDWR | O_CLOEXEC);
	if (port < 0) {
		logc("open %s: %s", dev, strerror(errno));
		for (;;)
			pause();
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	for (;;) {
		struct pollfd pfd = { .fd = port, .events = POLLIN };
		static char junk[4096];

		if (poll(&pfd, 1, DRAIN_MS) <= 0 || !(pfd.revents & POLLIN) ||
		    read(port, junk, sizeof(junk)) <= 0)
			break;
	}
	snprintf(up, sizeof(up), "VOPGUEST1 %lu", uptime_ms());
	send_frame('R', 0, up, strlen(up));

	for (;;) {
		struct pollfd pf[2 + 3 * MAX_PROCS];
		struct proc *who[2 + 3 * MAX_PROCS];
		int n = 0;

		pf[n].fd = port;
		pf[n].events = POLLIN;
		who[n++] = NULL;
		pf[n].fd = sfd;
		pf[n].events = POLLIN;
		who[n++] = NULL;
		for (int i = 0; i < MAX_PROCS; i++) {
			struct proc *p = &procs[i];

			if (p->pid == 0)
				continue;
			if (p->out >= 0) {
				pf[n] = (struct pollfd){ .fd = p->out, .events = POLLIN };
				who[n++] = p;
			}
			if (p->err >= 0) {
				pf[n] = (struct pollfd){ .fd = p->err, .events = POLLIN };
				who[n++] = p;
			}
			if (p->in >= 0) {
				pf[n] = (struct pollfd){ .fd = p->in, .events = POLLOUT };
				who[n++] = p;
			}
		}
		if (poll(pf, (nfds_t)n, -1) < 0) {
			if (errno != EINTR)
				logc("poll: %s", strerror(errno));
			continue;
		}
		for (int i = 2; i < n; i++) {
			struct proc *p = who[i];

			if (!pf[i].revents || p->pid == 0)
				continue;
			if (pf[i].fd == p->out)
				pump(p, &p->out, 'O');
			else if (pf[i].fd == p->err)
				pump(p, &p->err, 'E');
			else if (pf[i].fd == p->in)
				feed_stdin(p);
		}
		if (pf[1].revents) {
			struct signalfd_siginfo si;

			while (read(sfd, &si, sizeof(si)) == sizeof(si))
				;
			reap();
		}
		if (pf[0].revents & POLLIN) {
			unsigned char *dst = in_body ? frame + have : hdr + have;
			ssize_t r = read(port, dst, want - have);

			if (r < 0 && errno != EINTR && errno != EAGAIN) {
				logc("port read: %s", strerror(errno));
				usleep(100000);
			}
			if (r > 0 && (have += (size_t)r) == want) {
				if (!in_body) {
					uint32_t len = get32(hdr);

					if (len < 5 || len - 5 > MAX_FRAME) {
						/* Out of sync: nothing sane to resync on; drop it.
						 */
						logc("bad frame length %u", len);
						have = 0;
						continue;
					}
					want = len - 5;
					if (want > cap) {
						free(frame);
						cap = want;
						frame = malloc(cap);
						if (!frame) {
							logc("out of memory for a %zu byte frame",
							     want);
							cap = 0;
						}
					}
					have = 0;
					in_body = 1;
				}
				if (in_body && have == want) {
					handle((char)hdr[4], get32(hdr + 5), frame, want);
					in_body = 0;
					have = 0;
					want = sizeof(hdr);
				}
			}
		} else if (pf[0].revents & (POLLHUP | POLLERR)) {
			/* Host side not connected: virtio-serial reports HUP until it is. */
			usleep(20000);
		}
	}
}
