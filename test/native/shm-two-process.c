/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Two processes share one window file (separate mappings) and move
 * millions of sequence-numbered, checksummed messages in both directions
 * over four byte pipes at once: EVENT_IDX on and off, single descriptors,
 * indirect chains and direct multi-descriptor chains, and with the roles
 * swapped for one device. Each process pins itself to its own CPU.
 */
#include "helpers.h"

#include <sched.h>
#include <sys/wait.h>

#define NDEV 4
#define MSGS_PER_DIR 1000000ull

struct devcfg {
	uint32_t id;
	uint8_t device_side; /* side 0 = parent */
	int event_idx;
	uint16_t segs;
	uint32_t msg;
};

static const struct devcfg devs[NDEV] = {
	{ 1, 1, 1, 1, 64 },   /* event idx, one descriptor */
	{ 2, 1, 0, 1, 256 },  /* no event idx */
	{ 3, 1, 1, 3, 1500 }, /* event idx, indirect 3-descriptor chains */
	{ 4, 0, 0, 2, 100 },  /* roles swapped, direct 2-descriptor chains */
};

static void pin(int cpu)
{
	cpu_set_t set;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static struct vop_pipe_config cfg_for(const struct devcfg *d, enum vop_role role)
{
	struct vop_pipe_config pc;

	if (role == VOP_ROLE_DRIVER)
		pc = t_pipe_cfg(d->msg, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	else
		pc = t_pipe_cfg(d->msg, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);
	pc.segs = d->segs;
	pc.count = MSGS_PER_DIR;
	pc.features = (1ull << VOP_F_INDIRECT_DESC) | (d->event_idx ? 1ull << VOP_F_EVENT_IDX : 0);
	if (d->segs == 2)
		pc.features &= ~(1ull << VOP_F_INDIRECT_DESC); /* force direct chains */
	return pc;
}

/* Attach every device in its role for this side, run until all sinks have everything. */
static int run_side(struct vop_window *w, unsigned side)
{
	struct vop_link *l;
	struct vop_link_config c;
	struct t_evlog ev;
	unsigned i;
	int ok;

	t_evlog_init(&ev);
	memset(&c, 0, sizeof(c));
	c.spin_ns = 20000;
	c.on_event = t_on_event;
	c.ctx = &ev;
	CHECK_EQ(vop_link_create(w, &c, &l), 0);
	for (i = 0; i < NDEV; i++) {
		enum vop_role role = devs[i].device_side == side ? VOP_ROLE_DEVICE : VOP_ROLE_DRIVER;
		struct vop_pipe_config pc = cfg_for(&devs[i], role);

		uint64_t deadline = t_now_ms() + 10000;
		int rc;

		/* The peer may not have published every device yet (it races our attach). */
		while ((rc = vop_link_attach_pipe(l, devs[i].id, role, &pc)) == -ENOENT &&
		       t_now_ms() < deadline)
			t_sleep_ms(1);
		CHECK_EQ(rc, 0);
	}
	CHECK_EQ(vop_link_start(l), 0);
	ok = T_WAIT_UNTIL(({
		int all = 1;
		for (i = 0; i < NDEV; i++)
			all &= t_rx(l, devs[i].id) >= MSGS_PER_DIR;
		all;
	}), 90000);
	for (i = 0; i < NDEV; i++) {
		struct vop_pipe_stats s;
		struct vop_vq_stats q0, q1;

		CHECK_EQ(vop_link_pipe_stats(l, devs[i].id, &s), 0);
		CHECK_EQ(vop_link_queue_stats(l, devs[i].id, 0, &q0), 0);
		CHECK_EQ(vop_link_queue_stats(l, devs[i].id, 1, &q1), 0);
		fprintf(stderr,
			"side %u dev %u: tx %llu rx %llu bad %llu notify sent %llu suppressed %llu\n",
			side, devs[i].id, (unsigned long long)s.tx_msgs, (unsigned long long)s.rx_msgs,
			(unsigned long long)s.bad_msgs,
			(unsigned long long)(q0.c[VOP_VQS_NOTIFY_SENT] + q1.c[VOP_VQS_NOTIFY_SENT]),
			(unsigned long long)(q0.c[VOP_VQS_NOTIFY_SUPPRESSED] +
					     q1.c[VOP_VQS_NOTIFY_SUPPRESSED]));
		CHECK_EQ(s.bad_msgs, 0);
		CHECK_EQ(q0.c[VOP_VQS_ERRORS] + q1.c[VOP_VQS_ERRORS], 0);
		CHECK_EQ(s.rx_msgs, MSGS_PER_DIR);
	}
	if (!ok || t_evlog_has(&ev, VOP_EV_QUEUE_BROKEN, -1, NULL)) {
		t_evlog_dump(&ev, side ? "child" : "parent");
		return T_FAIL;
	}
	/* Let the peer finish reading our last completions before we leave. */
	t_sleep_ms(200);
	vop_link_destroy(l);
	pthread_mutex_destroy(&ev.mu);
	return T_PASS;
}

static int child(const char *path)
{
	struct vop_xport *x = NULL;
	struct vop_window *w = NULL;
	uint64_t deadline = t_now_ms() + 10000;
	int rc;

	pin(1);
	while (t_now_ms() < deadline) {
		if (!x && vop_shm_open(path, &x) != 0) {
			t_sleep_ms(1);
			continue;
		}
		rc = vop_window_attach(x, &w);
		if (rc == 0)
			break;
		CHECK_EQ(rc, -EAGAIN);
		t_sleep_ms(1);
	}
	CHECK(w != NULL);
	rc = run_side(w, 1);
	vop_window_close(w);
	return rc;
}

int main(void)
{
	char path[256];
	struct vop_xport *x;
	struct vop_window *w;
	pid_t pid;
	int status, rc;
	unsigned i;
	uint64_t t0 = t_now_ms();

	t_path(path, sizeof(path), "2proc");
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		exit(child(path));
	pin(0);
	CHECK_EQ(vop_shm_create(path, 16u << 20, &x), 0);
	CHECK_EQ(vop_window_create(x, NULL, &w), 0);
	for (i = 0; i < NDEV; i++) {
		struct vop_dev_spec spec;

		vop_pipe_spec(&spec, devs[i].id, devs[i].device_side, 256, devs[i].msg,
			      (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
		CHECK(vop_devtab_publish(w, &spec) >= 0);
	}
	rc = run_side(w, 0);
	CHECK(waitpid(pid, &status, 0) == pid);
	vop_window_close(w);
	CHECK_EQ(rc, T_PASS);
	CHECK(WIFEXITED(status));
	CHECK_EQ(WEXITSTATUS(status), T_PASS);
	fprintf(stderr, "moved %llu verified messages in %llu ms\n",
		(unsigned long long)(2 * NDEV * MSGS_PER_DIR),
		(unsigned long long)(t_now_ms() - t0));
	return T_PASS;
}
