/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ring benchmark program driven by test/bench/ring-bench.mjs. Each mode runs
 * one measurement and prints one JSON object on stdout.
 *
 *   memcpy SIZE SECONDS WS_BYTES  single-thread memcpy over a WS_BYTES working set
 *   unix-tput SIZE SECONDS [BATCH] socketpair between two processes, one write per message
 *                                 (BATCH > 1: one writev of BATCH messages)
 *   unix-rtt SIZE ITERS           64 B ping-pong over a socketpair
 *   vop-tput SIZE SECONDS QSIZE [BATCH]  driver process posts (copy in), device process consumes
 *                                 (copy out); BATCH chains per publish (default: half the ring)
 *   vop-multi SIZE SECONDS QSIZE NPAIRS link|qp  NPAIRS byte pipes on one worker per process
 *                                 (link) or one worker per queue pair (qp)
 *   vop-rtt SIZE ITERS event|poll|adaptive  driver sends one message, device echoes it back
 *   idle SECONDS                  established link, no traffic: CPU of both processes
 *   doorbell-rtt futex|eventfd ITERS  bare doorbell ping-pong between two processes
 *   xport-tput shm|pci SOCK SIZE SECONDS QSIZE poll|event  like vop-tput over the named transport
 *                                 (pci: both sides peers of the ivshmem server at SOCK, eventfd
 *                                 doorbells; shm: a window file; SOCK ignored) with the link in
 *                                 polling (never sleep) or event-driven (sleep at once) mode
 *   xport-idle shm|pci SOCK SECONDS poll|event  an established idle link over the transport: CPU of
 *                                 both processes (pci poll: the polled doorbell, no interrupt path)
 *
 * Processes are pinned to CPU 0 (parent) and CPU 1 (child) when there are >= 2 CPUs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vop/link.h"
#include "vop/window.h"
#include "vop/xport.h"
#include "vop/xport_pci.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "ring-bench: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

/* ---- memcpy ---- */

static int bench_memcpy(size_t size, double secs, size_t ws)
{
	size_t n = ws / size < 2 ? 2 : ws / size, i = 0;
	uint8_t *src = aligned_alloc(64, n * size + 64), *dst = aligned_alloc(64, n * size + 64);
	uint64_t copies = 0;
	double t0, t;

	memset(src, 1, n * size);
	memset(dst, 2, n * size);
	t0 = now_s();
	do {
		unsigned k;

		for (k = 0; k < 64; k++) {
			memcpy(dst + i * size, src + i * size, size);
			if (++i == n)
				i = 0;
		}
		copies += 64;
		__asm__ __volatile__("" ::"r"(dst) : "memory");
	} while ((t = now_s()) - t0 < secs);
	printf("{\"copies_per_s\": %.1f, \"gbytes_per_s\": %.4f}\n", copies / (t - t0),
	       copies * (double)size / (t - t0) / 1e9);
	free(src);
	free(dst);
	return 0;
}

/* ---- unix socketpair ---- */

#define UNIX_MAX_BATCH 256u

/*
 * writev() n messages of size bytes from buf, resuming after short writes; iov is scratch
 * space for n entries.
 */
static void write_batch(int fd, struct iovec *iov, unsigned n, const uint8_t *buf, size_t size)
{
	struct iovec *cur = iov;
	unsigned left = n, i;

	for (i = 0; i < n; i++) {
		iov[i].iov_base = (void *)buf;
		iov[i].iov_len = size;
	}
	while (left > 0) {
		ssize_t w = writev(fd, cur, (int)left);

		if (w <= 0)
			die("writev", errno);
		while (left > 0 && (size_t)w >= cur->iov_len) {
			w -= (ssize_t)cur->iov_len;
			cur++;
			left--;
		}
		if (left > 0) {
			cur->iov_base = (uint8_t *)cur->iov_base + w;
			cur->iov_len -= (size_t)w;
		}
	}
}

/*
 * batch == 1: one write() per message. batch > 1: one writev() of batch messages, the way
 * a vop worker publishes a batch of buffers per pass (the fair socket baseline for batching).
 */
static int bench_unix_tput(size_t size, double secs, unsigned batch)
{
	struct iovec iov[UNIX_MAX_BATCH];
	int sv[2];
	pid_t pid;
	uint8_t *buf = malloc(size > 65536 ? size : 65536);
	uint64_t msgs = 0;
	double t0, t;

	memset(buf, 3, size > 65536 ? size : 65536);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		die("socketpair", errno);
	pid = fork();
	if (pid == 0) {
		/* Reader: drain until EOF. */
		close(sv[0]);
		pin(1);
		while (read(sv[1], buf, 65536) > 0)
			;
		_exit(0);
	}
	close(sv[1]);
	pin(0);
	if (batch > UNIX_MAX_BATCH)
		batch = UNIX_MAX_BATCH;
	t0 = now_s();
	do {
		unsigned k;

		if (batch > 1) {
			write_batch(sv[0], iov, batch, buf, size);
			msgs += batch;
			continue;
		}
		for (k = 0; k < 16; k++) {
			size_t off = 0;

			while (off < size) {
				ssize_t w = write(sv[0], buf + off, size - off);

				if (w <= 0)
					die("write", errno);
				off += (size_t)w;
			}
		}
		msgs += 16;
	} while ((t = now_s()) - t0 < secs);
	close(sv[0]);
	waitpid(pid, NULL, 0);
	printf("{\"msgs_per_s\": %.1f, \"gbytes_per_s\": %.4f}\n", msgs / (t - t0),
	       msgs * (double)size / (t - t0) / 1e9);
	free(buf);
	return 0;
}

static void read_full(int fd, uint8_t *p, size_t n)
{
	size_t off = 0;

	while (off < n) {
		ssize_t r = read(fd, p + off, n - off);

		if (r <= 0)
			_exit(1);
		off += (size_t)r;
	}
}

static int bench_unix_rtt(size_t size, unsigned iters)
{
	int sv[2];
	pid_t pid;
	uint8_t buf[65536];
	unsigned i;
	double t0, t;

	memset(buf, 4, sizeof(buf));
	if (size > sizeof(buf) || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		die("socketpair", EINVAL);
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		pin(1);
		for (i = 0; i < iters + 100; i++) {
			read_full(sv[1], buf, size);
			if (write(sv[1], buf, size) != (ssize_t)size)
				_exit(1);
		}
		_exit(0);
	}
	close(sv[1]);
	pin(0);
	for (i = 0; i < 100; i++) { /* warm-up */
		if (write(sv[0], buf, size) != (ssize_t)size)
			die("write", errno);
		read_full(sv[0], buf, size);
	}
	t0 = now_s();
	for (i = 0; i < iters; i++) {
		if (write(sv[0], buf, size) != (ssize_t)size)
			die("write", errno);
		read_full(sv[0], buf, size);
	}
	t = now_s();
	waitpid(pid, NULL, 0);
	printf("{\"rtt_us\": %.3f}\n", (t - t0) / iters * 1e6);
	return 0;
}

/* ---- vop link between two processes ---- */

#define DEV 1u

struct vop_side {
	struct vop_window *w;
	struct vop_link *l;
};

static void vop_open(struct vop_side *s, const char *path, int create, uint64_t size,
		     const struct vop_link_config *cfg)
{
	struct vop_xport *x = NULL;
	int rc;

	if (create) {
		rc = vop_shm_create(path, size, &x);
		if (rc)
			die("create window", rc);
		rc = vop_window_create(x, NULL, &s->w);
		if (rc)
			die("lay out window", rc);
	} else {
		double t0 = now_s();

		for (;;) {
			if (!x && vop_shm_open(path, &x) != 0)
				x = NULL;
			if (x && (rc = vop_window_attach(x, &s->w)) == 0)
				break;
			if (now_s() - t0 > 10)
				die("attach window", ETIMEDOUT);
			usleep(1000);
		}
	}
	rc = vop_link_create(s->w, cfg, &s->l);
	if (rc)
		die("link", rc);
}

static void vop_close(struct vop_side *s)
{
	vop_link_destroy(s->l);
	vop_window_close(s->w);
}

static struct vop_pipe_config pipe_cfg(uint32_t size, uint8_t tx, uint8_t rx)
{
	struct vop_pipe_config pc;

	memset(&pc, 0, sizeof(pc));
	pc.msg_size = size;
	pc.segs = 1;
	pc.tx_mode = tx;
	pc.rx_mode = rx;
	pc.features = (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC);
	return pc;
}

static uint64_t window_size_for(uint32_t size, uint16_t qsize)
{
	uint64_t pool = (uint64_t)qsize * VOP_INDIRECT_MAX * 16 + (uint64_t)qsize * ((size + 63) / 64 * 64);
	uint64_t w = 2 * pool + (8u << 20);

	return (w + 4095) / 4096 * 4096;
}

/* Child: the device side; runs until the parent kills it (SIGTERM). */
static volatile sig_atomic_t child_stop;

static void on_term(int sig)
{
	(void)sig;
	child_stop = 1;
}

static void device_child(const char *path, struct vop_pipe_config pc, const struct vop_link_config *cfg)
{
	struct vop_side s;
	int rc;

	signal(SIGTERM, on_term);
	pin(1);
	vop_open(&s, path, 0, 0, cfg);
	for (;;) {
		rc = vop_link_attach_pipe(s.l, DEV, VOP_ROLE_DEVICE, &pc);
		if (rc == 0)
			break;
		if (rc != -ENOENT)
			die("attach device", rc);
		usleep(1000);
	}
	rc = vop_link_start(s.l);
	if (rc)
		die("start", rc);
	while (!child_stop)
		usleep(10000);
	vop_close(&s);
	_exit(0);
}

static pid_t start_device(const char *path, struct vop_pipe_config pc, const struct vop_link_config *cfg)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork", errno);
	if (pid == 0)
		device_child(path, pc, cfg);
	return pid;
}

static void stop_device(pid_t pid)
{
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
}

static uint64_t drv_done(struct vop_link *l, unsigned q)
{
	struct vop_vq_stats st;

	if (vop_link_queue_stats(l, DEV, q, &st))
		return 0;
	return st.c[VOP_VQS_BUFFERS];
}

static int bench_vop_tput(uint32_t size, double secs, uint16_t qsize, uint32_t batch, const char *path)
{
	struct vop_link_config cfg = { .spin_ns = 50000 };
	struct vop_side s;
	struct vop_dev_spec spec;
	struct vop_pipe_config drv = pipe_cfg(size, VOP_PIPE_SOURCE, VOP_PIPE_OFF);
	struct vop_pipe_config dev = pipe_cfg(size, VOP_PIPE_SINK, VOP_PIPE_OFF);
	uint64_t b0, b1, notif[2];
	struct vop_vq_stats st;
	double t0, t1;
	pid_t pid;
	int rc;

	pin(0);
	vop_open(&s, path, 1, window_size_for(size, qsize), &cfg);
	vop_pipe_spec(&spec, DEV, 1, qsize, size, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	rc = vop_devtab_publish(s.w, &spec);
	if (rc < 0)
		die("publish", rc);
	drv.batch = dev.batch = batch;
	pid = start_device(path, dev, &cfg);
	rc = vop_link_attach_pipe(s.l, DEV, VOP_ROLE_DRIVER, &drv);
	if (rc)
		die("attach driver", rc);
	vop_link_start(s.l);
	/* Warm up until data flows, then measure. */
	t0 = now_s();
	while (drv_done(s.l, 0) < 1000 && now_s() - t0 < 10)
		usleep(1000);
	usleep(200000);
	b0 = drv_done(s.l, 0);
	t0 = now_s();
	usleep((useconds_t)(secs * 1e6));
	b1 = drv_done(s.l, 0);
	t1 = now_s();
	vop_link_queue_stats(s.l, DEV, 0, &st);
	notif[0] = st.c[VOP_VQS_NOTIFY_SENT];
	notif[1] = st.c[VOP_VQS_NOTIFY_SUPPRESSED];
	{
		uint64_t ls[VOP_LS_COUNT];

		vop_link_stats(s.l, ls);
		if (getenv("VOP_BENCH_DEBUG"))
			fprintf(stderr, "driver: wakeups %llu sleeps %llu poll_ns %llu sleep_ns %llu doorbells %llu futex %llu\n",
				(unsigned long long)ls[0], (unsigned long long)ls[1], (unsigned long long)ls[2],
				(unsigned long long)ls[3], (unsigned long long)ls[4], (unsigned long long)ls[5]);
	}
	vop_link_stop(s.l);
	stop_device(pid);
	vop_close(&s);
	printf("{\"msgs_per_s\": %.1f, \"gbytes_per_s\": %.4f, \"kicks\": %llu, \"kicks_suppressed\": %llu}\n",
	       (b1 - b0) / (t1 - t0), (b1 - b0) * (double)size / (t1 - t0) / 1e9,
	       (unsigned long long)notif[0], (unsigned long long)notif[1]);
	return 0;
}

/*
 * Worker placement: NPAIRS byte pipes (each one queue pair carrying traffic)
 * served either by ONE worker per process ("link": one window, NPAIRS
 * devices) or by one worker per queue pair ("qp": NPAIRS windows of one
 * device each, so NPAIRS workers per process; the window count does not
 * matter to the data path). As everywhere here the driver process runs on
 * CPU 0 and the device process on CPU 1 (unpinned, the scheduler often
 * puts producer and consumer on one CPU: 5x slower for either placement).
 * Reports aggregate messages/s and the CPU time of both processes per
 * message.
 */
#define MULTI_MAX 16u

static double cpu_s(int who);

/* Messages the driver side of every pipe has seen completed so far. */
static uint64_t multi_done(struct vop_side *s, unsigned npairs, bool per_qp)
{
	uint64_t n = 0;
	unsigned i;

	for (i = 0; i < npairs; i++) {
		struct vop_vq_stats st;

		if (vop_link_queue_stats(s[per_qp ? i : 0].l, DEV + i, 0, &st) == 0)
			n += st.c[VOP_VQS_BUFFERS];
	}
	return n;
}

static int bench_vop_multi(uint32_t size, double secs, uint16_t qsize, unsigned npairs, bool per_qp,
			   const char *path)
{
	struct vop_link_config cfg = { .spin_ns = 50000 };
	struct vop_side s[MULTI_MAX];
	struct vop_dev_spec spec;
	struct vop_pipe_config drv = pipe_cfg(size, VOP_PIPE_SOURCE, VOP_PIPE_OFF);
	unsigned nwin = per_qp ? npairs : 1, i;
	char wpath[MULTI_MAX][300];
	double t0, t1, c0, c1, child_cpu = -1;
	uint64_t b0, b1;
	int pfd[2], rc;
	pid_t pid;

	if (npairs < 1 || npairs > MULTI_MAX || pipe(pfd) < 0)
		die("vop-multi arguments", EINVAL);
	pin(0);
	for (i = 0; i < nwin; i++) {
		snprintf(wpath[i], sizeof(wpath[i]), "%s.%u", path, i);
		unlink(wpath[i]);
		vop_open(&s[i], wpath[i], 1, window_size_for(size, qsize) * (per_qp ? 1 : npairs), &cfg);
	}
	for (i = 0; i < npairs; i++) {
		vop_pipe_spec(&spec, DEV + i, 1, qsize, size, (1ull << VOP_F_EVENT_IDX));
		rc = vop_devtab_publish(s[per_qp ? i : 0].w, &spec);
		if (rc < 0)
			die("publish", rc);
	}
	pid = fork();
	if (pid < 0)
		die("fork", errno);
	if (pid == 0) {
		struct vop_side d[MULTI_MAX];
		struct vop_pipe_config dev = pipe_cfg(size, VOP_PIPE_SINK, VOP_PIPE_OFF);
		double cc0;

		signal(SIGTERM, on_term);
		pin(1);
		for (i = 0; i < nwin; i++)
			vop_open(&d[i], wpath[i], 0, 0, &cfg);
		for (i = 0; i < npairs; i++)
			while ((rc = vop_link_attach_pipe(d[per_qp ? i : 0].l, DEV + i, VOP_ROLE_DEVICE, &dev)) == -ENOENT)
				usleep(1000);
		for (i = 0; i < nwin; i++)
			vop_link_start(d[i].l);
		cc0 = cpu_s(RUSAGE_SELF);
		while (!child_stop)
			usleep(10000);
		cc0 = cpu_s(RUSAGE_SELF) - cc0;
		if (write(pfd[1], &cc0, sizeof(cc0)) != sizeof(cc0))
			_exit(1);
		for (i = 0; i < nwin; i++)
			vop_close(&d[i]);
		_exit(0);
	}
	for (i = 0; i < npairs; i++) {
		rc = vop_link_attach_pipe(s[per_qp ? i : 0].l, DEV + i, VOP_ROLE_DRIVER, &drv);
		if (rc)
			die("attach driver", rc);
	}
	for (i = 0; i < nwin; i++)
		vop_link_start(s[i].l);
	usleep(300000);
	b0 = multi_done(s, npairs, per_qp);
	t0 = now_s();
	c0 = cpu_s(RUSAGE_SELF);
	usleep((useconds_t)(secs * 1e6));
	b1 = multi_done(s, npairs, per_qp);
	t1 = now_s();
	c1 = cpu_s(RUSAGE_SELF);
	kill(pid, SIGTERM);
	if (read(pfd[0], &child_cpu, sizeof(child_cpu)) != sizeof(child_cpu))
		child_cpu = -1;
	waitpid(pid, NULL, 0);
	for (i = 0; i < nwin; i++) {
		vop_close(&s[i]);
		unlink(wpath[i]);
	}
	/* The child's CPU counts from its start, slightly more than the window: an upper bound. */
	printf("{\"msgs_per_s\": %.1f, \"gbytes_per_s\": %.4f, \"cpu_ns_per_msg\": %.1f, \"workers_per_process\": %u}\n",
	       (b1 - b0) / (t1 - t0), (b1 - b0) * (double)size / (t1 - t0) / 1e9,
	       ((c1 - c0) + child_cpu * (t1 - t0) / (t1 - t0 + 0.3)) / (double)(b1 - b0) * 1e9, nwin);
	return 0;
}

/* mode: 0 event (spin 0), 1 poll (never sleep), 2 adaptive (default 50 us spin). */
static int bench_vop_rtt(uint32_t size, unsigned iters, int mode, const char *path)
{
	struct vop_link_config cfg = { .spin_ns = mode == 2 ? 50000 : 0, .poll_only = mode == 1 };
	struct vop_side s;
	struct vop_dev_spec spec;
	struct vop_pipe_config drv = pipe_cfg(size, VOP_PIPE_SOURCE, VOP_PIPE_SINK);
	uint64_t r0, r1;
	double t0, t1;
	pid_t pid;
	int rc;

	drv.max_inflight = 1;
	pin(0);
	vop_open(&s, path, 1, window_size_for(size, 64), &cfg);
	vop_pipe_spec(&spec, DEV, 1, 64, size, (1ull << VOP_F_EVENT_IDX));
	rc = vop_devtab_publish(s.w, &spec);
	if (rc < 0)
		die("publish", rc);
	pid = start_device(path, pipe_cfg(size, VOP_PIPE_ECHO, VOP_PIPE_OFF), &cfg);
	rc = vop_link_attach_pipe(s.l, DEV, VOP_ROLE_DRIVER, &drv);
	if (rc)
		die("attach driver", rc);
	vop_link_start(s.l);
	t0 = now_s();
	while (drv_done(s.l, 1) < 100 && now_s() - t0 < 10)
		usleep(1000);
	r0 = drv_done(s.l, 1);
	t0 = now_s();
	/* Check progress rarely: the main thread shares CPU 0 with the worker. */
	while ((r1 = drv_done(s.l, 1)) - r0 < iters && now_s() - t0 < 20)
		usleep(20000);
	t1 = now_s();
	vop_link_stop(s.l);
	stop_device(pid);
	vop_close(&s);
	printf("{\"rtt_us\": %.3f, \"round_trips\": %llu}\n", (t1 - t0) / (double)(r1 - r0) * 1e6,
	       (unsigned long long)(r1 - r0));
	return 0;
}

static double cpu_s(int who)
{
	struct rusage ru;

	getrusage(who, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static int bench_idle(double secs, const char *path)
{
	struct vop_link_config cfg = { .spin_ns = 50000 };
	struct vop_side s;
	struct vop_dev_spec spec;
	struct vop_pipe_config drv = pipe_cfg(64, VOP_PIPE_SOURCE, VOP_PIPE_SINK);
	double c0, c1, t0, t1, child_cpu;
	uint64_t ls[VOP_LS_COUNT];
	pid_t pid;
	int rc, status;
	int pfd[2];

	drv.count = 1000; /* a little traffic to prove the link works, then idle */
	pin(0);
	if (pipe(pfd) < 0)
		die("pipe", errno);
	vop_open(&s, path, 1, window_size_for(64, 256), &cfg);
	vop_pipe_spec(&spec, DEV, 1, 256, 64, (1ull << VOP_F_EVENT_IDX));
	rc = vop_devtab_publish(s.w, &spec);
	if (rc < 0)
		die("publish", rc);
	pid = fork();
	if (pid == 0) {
		/* Device: report its own CPU time for the idle window through the pipe. */
		struct vop_side d;
		struct vop_pipe_config dev = pipe_cfg(64, VOP_PIPE_SINK, VOP_PIPE_SOURCE);
		double cc0, cc1;

		dev.count = 1000;
		pin(1);
		vop_open(&d, path, 0, 0, &cfg);
		while ((rc = vop_link_attach_pipe(d.l, DEV, VOP_ROLE_DEVICE, &dev)) == -ENOENT)
			usleep(1000);
		vop_link_start(d.l);
		usleep(1000000); /* traffic done, settle */
		cc0 = cpu_s(RUSAGE_SELF);
		usleep((useconds_t)(secs * 1e6));
		cc1 = cpu_s(RUSAGE_SELF);
		if (write(pfd[1], &(double){ cc1 - cc0 }, sizeof(double)) != sizeof(double))
			_exit(1);
		vop_close(&d);
		_exit(0);
	}
	rc = vop_link_attach_pipe(s.l, DEV, VOP_ROLE_DRIVER, &drv);
	if (rc)
		die("attach driver", rc);
	vop_link_start(s.l);
	usleep(1000000);
	c0 = cpu_s(RUSAGE_SELF);
	t0 = now_s();
	usleep((useconds_t)(secs * 1e6));
	c1 = cpu_s(RUSAGE_SELF);
	t1 = now_s();
	if (read(pfd[0], &child_cpu, sizeof(child_cpu)) != sizeof(child_cpu))
		child_cpu = -1;
	waitpid(pid, &status, 0);
	vop_link_stats(s.l, ls);
	vop_close(&s);
	printf("{\"idle_cpu_percent\": %.4f, \"driver_cpu_percent\": %.4f, \"device_cpu_percent\": %.4f, "
	       "\"driver_wakeups\": %llu, \"driver_sleeps\": %llu}\n",
	       ((c1 - c0) + child_cpu) / (t1 - t0) * 100, (c1 - c0) / (t1 - t0) * 100,
	       child_cpu / (t1 - t0) * 100, (unsigned long long)ls[VOP_LS_WAKEUPS],
	       (unsigned long long)ls[VOP_LS_SLEEPS]);
	return 0;
}

/* ---- bare doorbells: futex word in shared memory vs eventfd ---- */

static void fx_wait(uint32_t *w, uint32_t seen)
{
	while (__atomic_load_n(w, __ATOMIC_ACQUIRE) == seen)
		syscall(SYS_futex, w, FUTEX_WAIT, seen, NULL, NULL, 0);
}

static void fx_ring(uint32_t *w)
{
	__atomic_add_fetch(w, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static int bench_doorbell(int use_eventfd, unsigned iters)
{
	uint32_t *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int e0 = eventfd(0, 0), e1 = eventfd(0, 0);
	uint64_t one = 1, v;
	unsigned i;
	double t0 = 0, t;
	pid_t pid;

	if (w == MAP_FAILED || e0 < 0 || e1 < 0)
		die("doorbell setup", errno);
	pid = fork();
	if (pid == 0) {
		pin(1);
		for (i = 0; i < iters + 100; i++) {
			if (use_eventfd) {
				if (read(e0, &v, 8) != 8 || write(e1, &one, 8) != 8)
					_exit(1);
			} else {
				fx_wait(&w[0], i);
				fx_ring(&w[16]);
			}
		}
		_exit(0);
	}
	pin(0);
	for (i = 0; i < iters + 100; i++) {
		if (i == 100)
			t0 = now_s();
		if (use_eventfd) {
			if (write(e0, &one, 8) != 8 || read(e1, &v, 8) != 8)
				die("eventfd", errno);
		} else {
			fx_ring(&w[0]);
			fx_wait(&w[16], i);
		}
	}
	t = now_s();
	waitpid(pid, NULL, 0);
	printf("{\"rtt_us\": %.3f}\n", (t - t0) / iters * 1e6);
	return 0;
}

/* ---- shm against pci-bar (bench:pci) ---- */

#define XPORT_WIN (16u << 20) /* the ivshmem server's --size; shm uses the same window */

/* One side of a window over shm (path) or pci-bar (the server at sock); creator or attacher. */
static void xport_open(struct vop_side *s, bool pci, const char *sock, const char *path, int create,
		       bool polled_db, const struct vop_link_config *cfg)
{
	struct vop_xport *x = NULL;
	double t0 = now_s();
	int rc;

	if (pci) {
		struct vop_pci_ivshmem_config c = { .socket = sock, .peer_id = -1,
						    .doorbell = polled_db ? VOP_PCI_DB_POLL : VOP_PCI_DB_EVENT };

		rc = vop_pci_ivshmem_open(&c, &x);
		if (rc)
			die("pci-bar open", rc);
		if (create) {
			rc = vop_window_create(x, NULL, &s->w);
			if (rc)
				die("lay out window", rc);
		} else {
			while ((rc = vop_window_attach(x, &s->w)) == -EAGAIN && now_s() - t0 < 10)
				usleep(1000);
			if (rc)
				die("attach window", rc);
		}
		rc = vop_link_create(s->w, cfg, &s->l);
		if (rc)
			die("link", rc);
		return;
	}
	vop_open(s, path, create, XPORT_WIN, cfg);
}

static int bench_xport_tput(bool pci, const char *sock, uint32_t size, double secs, uint16_t qsize,
			    bool poll, const char *path)
{
	struct vop_link_config cfg = { .spin_ns = 0, .poll_only = poll };
	struct vop_side s;
	struct vop_dev_spec spec;
	struct vop_pipe_config drv = pipe_cfg(size, VOP_PIPE_SOURCE, VOP_PIPE_OFF);
	struct vop_pipe_config dev = pipe_cfg(size, VOP_PIPE_SINK, VOP_PIPE_OFF);
	uint64_t b0, b1;
	double t0, t1;
	pid_t pid;
	int rc;

	pin(0);
	xport_open(&s, pci, sock, path, 1, false, &cfg);
	vop_pipe_spec(&spec, DEV, 1, qsize, size, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	rc = vop_devtab_publish(s.w, &spec);
	if (rc < 0)
		die("publish", rc);
	pid = fork();
	if (pid < 0)
		die("fork", errno);
	if (pid == 0) {
		struct vop_side d;

		signal(SIGTERM, on_term);
		pin(1);
		xport_open(&d, pci, sock, path, 0, false, &cfg);
		while ((rc = vop_link_attach_pipe(d.l, DEV, VOP_ROLE_DEVICE, &dev)) == -ENOENT)
			usleep(1000);
		if (rc)
			die("attach device", rc);
		vop_link_start(d.l);
		while (!child_stop)
			usleep(10000);
		vop_close(&d);
		_exit(0);
	}
	rc = vop_link_attach_pipe(s.l, DEV, VOP_ROLE_DRIVER, &drv);
	if (rc)
		die("attach driver", rc);
	vop_link_start(s.l);
	t0 = now_s();
	while (drv_done(s.l, 0) < 1000 && now_s() - t0 < 10)
		usleep(1000);
	usleep(200000);
	b0 = drv_done(s.l, 0);
	t0 = now_s();
	usleep((useconds_t)(secs * 1e6));
	b1 = drv_done(s.l, 0);
	t1 = now_s();
	vop_link_stop(s.l);
	stop_device(pid);
	vop_close(&s);
	printf("{\"msgs_per_s\": %.1f, \"gbytes_per_s\": %.4f}\n", (b1 - b0) / (t1 - t0),
	       (b1 - b0) * (double)size / (t1 - t0) / 1e9);
	return 0;
}

/*
 * An established, idle link over the transport: CPU of both processes over
 * secs. With pci and poll, the transport's polled doorbell (no interrupt
 * path: each side looks at the peer's kick word with adaptive naps) and the
 * link's default adaptive spin: what an idle polled link costs.
 */
static int bench_xport_idle(bool pci, const char *sock, double secs, bool polled_db, const char *path)
{
	struct vop_link_config cfg = { .spin_ns = 50000 };
	struct vop_side s;
	struct vop_dev_spec spec;
	struct vop_pipe_config drv = pipe_cfg(64, VOP_PIPE_SOURCE, VOP_PIPE_SINK);
	double c0, c1, t0, t1, child_cpu = -1;
	int pfd[2], rc;
	pid_t pid;

	drv.count = 1000; /* a little traffic to prove the link works, then idle */
	pin(0);
	if (pipe(pfd) < 0)
		die("pipe", errno);
	xport_open(&s, pci, sock, path, 1, polled_db, &cfg);
	vop_pipe_spec(&spec, DEV, 1, 256, 64, (1ull << VOP_F_EVENT_IDX));
	rc = vop_devtab_publish(s.w, &spec);
	if (rc < 0)
		die("publish", rc);
	pid = fork();
	if (pid == 0) {
		struct vop_side d;
		struct vop_pipe_config dev = pipe_cfg(64, VOP_PIPE_SINK, VOP_PIPE_SOURCE);
		double cc0;

		dev.count = 1000;
		pin(1);
		xport_open(&d, pci, sock, path, 0, polled_db, &cfg);
		while ((rc = vop_link_attach_pipe(d.l, DEV, VOP_ROLE_DEVICE, &dev)) == -ENOENT)
			usleep(1000);
		vop_link_start(d.l);
		usleep(1000000); /* traffic done, settle */
		cc0 = cpu_s(RUSAGE_SELF);
		usleep((useconds_t)(secs * 1e6));
		cc0 = cpu_s(RUSAGE_SELF) - cc0;
		if (write(pfd[1], &cc0, sizeof(cc0)) != sizeof(cc0))
			_exit(1);
		vop_close(&d);
		_exit(0);
	}
	rc = vop_link_attach_pipe(s.l, DEV, VOP_ROLE_DRIVER, &drv);
	if (rc)
		die("attach driver", rc);
	vop_link_start(s.l);
	usleep(1000000);
	c0 = cpu_s(RUSAGE_SELF);
	t0 = now_s();
	usleep((useconds_t)(secs * 1e6));
	c1 = cpu_s(RUSAGE_SELF);
	t1 = now_s();
	if (read(pfd[0], &child_cpu, sizeof(child_cpu)) != sizeof(child_cpu))
		child_cpu = -1;
	waitpid(pid, NULL, 0);
	{
		struct vop_pipe_stats ps;

		if (vop_link_pipe_stats(s.l, DEV, &ps) != 0 || ps.rx_msgs != 1000)
			die("idle link carried no traffic first", EIO);
	}
	vop_close(&s);
	printf("{\"idle_cpu_percent\": %.4f, \"driver_cpu_percent\": %.4f, \"device_cpu_percent\": %.4f}\n",
	       ((c1 - c0) + child_cpu) / (t1 - t0) * 100, (c1 - c0) / (t1 - t0) * 100,
	       child_cpu / (t1 - t0) * 100);
	return 0;
}

int main(int argc, char **argv)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/vop-bench-%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
		 (int)getpid());
	if (argc >= 5 && !strcmp(argv[1], "memcpy"))
		return bench_memcpy(strtoul(argv[2], 0, 0), atof(argv[3]), strtoul(argv[4], 0, 0));
	if (argc >= 4 && !strcmp(argv[1], "unix-tput"))
		return bench_unix_tput(strtoul(argv[2], 0, 0), atof(argv[3]),
				       argc >= 5 ? (unsigned)strtoul(argv[4], 0, 0) : 1);
	if (argc >= 4 && !strcmp(argv[1], "unix-rtt"))
		return bench_unix_rtt(strtoul(argv[2], 0, 0), (unsigned)strtoul(argv[3], 0, 0));
	if (argc >= 5 && !strcmp(argv[1], "vop-tput"))
		return bench_vop_tput((uint32_t)strtoul(argv[2], 0, 0), atof(argv[3]),
				      (uint16_t)strtoul(argv[4], 0, 0),
				      argc >= 6 ? (uint32_t)strtoul(argv[5], 0, 0) : 0, path);
	if (argc >= 7 && !strcmp(argv[1], "vop-multi"))
		return bench_vop_multi((uint32_t)strtoul(argv[2], 0, 0), atof(argv[3]),
				       (uint16_t)strtoul(argv[4], 0, 0), (unsigned)strtoul(argv[5], 0, 0),
				       !strcmp(argv[6], "qp"), path);
	if (argc >= 5 && !strcmp(argv[1], "vop-rtt"))
		return bench_vop_rtt((uint32_t)strtoul(argv[2], 0, 0), (unsigned)strtoul(argv[3], 0, 0),
				     !strcmp(argv[4], "poll") ? 1 : !strcmp(argv[4], "adaptive") ? 2 : 0, path);
	if (argc >= 4 && !strcmp(argv[1], "doorbell-rtt"))
		return bench_doorbell(!strcmp(argv[2], "eventfd"), (unsigned)strtoul(argv[3], 0, 0));
	if (argc >= 3 && !strcmp(argv[1], "idle"))
		return bench_idle(atof(argv[2]), path);
	if (argc >= 8 && !strcmp(argv[1], "xport-tput"))
		return bench_xport_tput(!strcmp(argv[2], "pci"), argv[3], (uint32_t)strtoul(argv[4], 0, 0),
					atof(argv[5]), (uint16_t)strtoul(argv[6], 0, 0),
					!strcmp(argv[7], "poll"), path);
	if (argc >= 6 && !strcmp(argv[1], "xport-idle"))
		return bench_xport_idle(!strcmp(argv[2], "pci"), argv[3], atof(argv[4]),
					!strcmp(argv[5], "poll"), path);
	fprintf(stderr, "usage: see the comment at the top of ring-bench.c\n");
	return 2;
}
