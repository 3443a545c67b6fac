/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers of the ivshmem tests: start the (sanitised) vop-ivshmem-server as a child with its
 * stdout on a pipe, wait for its lines, raw protocol clients.
 */
#ifndef VOP_TEST_IVSHMEM_HELPERS_H
#define VOP_TEST_IVSHMEM_HELPERS_H

#include "helpers.h" /* first: it defines _GNU_SOURCE */

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "vop/ivshmem.h"

struct t_server {
	pid_t pid;
	int out;	 /* its stdout (non-blocking) */
	int err;	 /* its stderr (non-blocking) */
	char buf[16384]; /* stdout read so far */
	size_t len;
	size_t seen; /* lines before this offset were consumed by t_server_wait */
	char sock[200];
	char dir[160];
};

static inline const char *t_server_bin(void)
{
	const char *env = getenv("VOP_IVSHMEM_SERVER");
	static const char *cands[] = { "out/check/tools/vop-ivshmem-server",
				       "native/out/check/tools/vop-ivshmem-server" };

	if (env && *env)
		return env;
	for (unsigned i = 0; i < 2; i++)
		if (access(cands[i], X_OK) == 0)
			return cands[i];
	fprintf(stderr, "vop-ivshmem-server not built (make -C native "
			"out/check/tools/vop-ivshmem-server)\n");
	exit(T_FAIL);
}

/* A fresh private directory for sockets and shm files. */
static inline void t_mkdir(char *dir, size_t n, const char *tag)
{
	t_path(dir, n, tag);
	CHECK(mkdir(dir, 0700) == 0);
}

static inline void t_server_pump(struct t_server *s)
{
	for (;;) {
		ssize_t r = read(s->out, s->buf + s->len, sizeof(s->buf) - 1 - s->len);

		if (r <= 0)
			break;
		s->len += (size_t)r;
		s->buf[s->len] = 0;
	}
}

/*
 * Starts the server with argv (NULL-terminated, without the program name) and waits for a line
 * starting with `expect` ("ready" or an error text on stderr when expect is NULL). Returns 0 when
 * the expected outcome happened: for expect == NULL, the server must exit non-zero within 10 s.
 */
static inline int t_server_start(struct t_server *s, const char *const *argv, const char *expect)
{
	int po[2], pe[2];
	const char *args[32];
	unsigned n = 0;

	s->len = s->seen = 0;
	s->buf[0] = 0;
	args[n++] = t_server_bin();
	for (unsigned i = 0; argv[i] && n < 31; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	CHECK(pipe2(po, O_CLOEXEC) == 0 && pipe2(pe, O_CLOEXEC) == 0);
	s->pid = fork();
	CHECK(s->pid >= 0);
	if (s->pid == 0) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		execv(args[0], (char *const *)args);
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	s->out = po[0];
	s->err = pe[0];
	fcntl(s->out, F_SETFL, O_NONBLOCK);
	fcntl(s->err, F_SETFL, O_NONBLOCK);
	if (!expect) {
		int st;

		for (int i = 0; i < 1000; i++) {
			if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
				s->pid = -1;
				return WIFEXITED(st) && WEXITSTATUS(st) != 0 ? 0 : -1;
			}
			t_sleep_ms(10);
		}
		return -1;
	}
	for (uint64_t t0 = t_now_ms(); t_now_ms() - t0 < 10000; t_sleep_ms(5)) {
		t_server_pump(s);
		if (strstr(s->buf, expect))
			return 0;
	}
	return -1;
}

/* The server's stderr so far (for failure messages and refusal checks). */
static inline const char *t_server_stderr(struct t_server *s)
{
	static char e[8192];
	ssize_t r = read(s->err, e, sizeof(e) - 1);

	e[r > 0 ? r : 0] = 0;
	return e;
}

/* Waits (up to timeout_ms) for a new stdout line starting with `prefix`; 0 if found. */
static inline int t_server_wait(struct t_server *s, const char *prefix, unsigned timeout_ms)
{
	for (uint64_t t0 = t_now_ms();; t_sleep_ms(2)) {
		t_server_pump(s);
		for (;;) {
			char *nl = strchr(s->buf + s->seen, '\n');

			if (!nl)
				break;
			size_t at = s->seen;

			s->seen = (size_t)(nl - s->buf) + 1;
			if (strncmp(s->buf + at, prefix, strlen(prefix)) == 0)
				return 0;
		}
		if (t_now_ms() - t0 > timeout_ms)
			return -1;
	}
}

static inline void t_server_stop(struct t_server *s)
{
	int st;

	if (s->pid > 0) {
		kill(s->pid, SIGTERM);
		for (int i = 0; i < 500 && waitpid(s->pid, &st, WNOHANG) == 0; i++)
			t_sleep_ms(10);
		kill(s->pid, SIGKILL);
		waitpid(s->pid, &st, 0);
		s->pid = -1;
	}
	close(s->out);
	close(s->err);
}

/* A raw connection to the server (to misbehave with). */
static inline int t_raw_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	CHECK(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -errno;
	}
	return fd;
}

/*
 * Processes client events for up to timeout_ms until one of `kind` for `peer` (and vector, unless
 * -1); the events before it, and after it in the same batch, are consumed.
 */
static inline int t_client_wait(struct vop_ivshmem_client *c, unsigned kind, unsigned peer,
				int vector, unsigned timeout_ms)
{
	for (uint64_t t0 = t_now_ms(); t_now_ms() - t0 < timeout_ms;) {
		struct vop_ivshmem_event ev[16];
		struct pollfd pfd = { .fd = vop_ivshmem_client_fd(c), .events = POLLIN };
		int n = vop_ivshmem_client_process(c, ev, 16);

		if (n < 0)
			return n;
		for (int i = 0; i < n; i++)
			if (ev[i].kind == kind && ev[i].peer == peer &&
			    (vector < 0 || ev[i].vector == (unsigned)vector))
				return 0;
		if (n == 0 && pfd.fd >= 0)
			poll(&pfd, 1, 20);
	}
	return -ETIMEDOUT;
}

/* Polls own vector's eventfd for up to timeout_ms; returns the count acknowledged (0 = none). */
static inline int64_t t_wait_ring(struct vop_ivshmem_client *c, unsigned vector,
				  unsigned timeout_ms)
{
	struct pollfd pfd = { .fd = vop_ivshmem_client_own_eventfd(c, vector), .events = POLLIN };

	if (poll(&pfd, 1, (int)timeout_ms) <= 0)
		return 0;
	return vop_ivshmem_client_ack(c, vector);
}

#endif /* VOP_TEST_IVSHMEM_HELPERS_H */
