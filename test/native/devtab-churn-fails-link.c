/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A peer that keeps the device table changing (generation, seq and entry
 * bodies rewritten in a loop) cannot keep a link side busy: table copies
 * are retried a bounded number of times, the rescan runs without the link
 * lock (control calls keep answering while it happens), and once the table
 * has not settled for devtab_unstable_ms the link side fails with
 * VOP_EV_LINK_FAILED / VOP_LINK_FAIL_DEVTAB_UNSTABLE: its worker stops,
 * later attaches get -ENOLINK, and it still closes cleanly.
 */
#include <sched.h>

#include "helpers.h"

static struct t_pair p;
static _Atomic int churn_stop;

/* The hostile table owner: rewrites generation, seq and entry bodies without end. */
static void *churn(void *arg)
{
	struct vop_devtab_hdr *dt = p.w0->dt;
	struct vop_dev_entry *e = (struct vop_dev_entry *)(void *)((uint8_t *)dt + sizeof(*dt));
	uint32_t i = 0;

	(void)arg;
	while (!atomic_load(&churn_stop)) {
		__atomic_fetch_add(&e->seq, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&e->features_offered, (uint64_t)i, __ATOMIC_RELAXED);
		__atomic_store_n(&e->config_len, i & 0x1ff, __ATOMIC_RELAXED);
		__atomic_fetch_add(&e->seq, 1, __ATOMIC_RELEASE);
		__atomic_fetch_add(&dt->generation, 1, __ATOMIC_RELEASE);
		if ((++i & 1023) == 0) {
			vop_window_notify_peer(p.w0); /* and keep the victim's worker awake */
			sched_yield();
		}
	}
	return NULL;
}

int main(void)
{
	struct vop_dev_spec spec;
	struct vop_pipe_config drv = t_pipe_cfg(256, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	struct vop_pipe_config dev = t_pipe_cfg(256, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);
	struct vop_link_config c;
	struct vop_vq_stats st;
	pthread_t th;
	uint64_t t0, worst = 0;
	unsigned calls = 0;

	/* The pair of t_pair_open(), with a short instability bound on the victim (side 1). */
	t_pair_open(&p, "churn", 1u << 20, 0);
	vop_link_destroy(p.l1);
	memset(&c, 0, sizeof(c));
	c.on_event = t_on_event;
	c.ctx = &p.ev1;
	c.devtab_unstable_ms = 300;
	CHECK_EQ(vop_link_create(p.w1, &c, &p.l1), 0);

	vop_pipe_spec(&spec, 7, 0, 64, 256, 1ull << VOP_F_EVENT_IDX);
	CHECK(vop_devtab_publish(p.w0, &spec) >= 0);
	CHECK_EQ(vop_link_attach_pipe(p.l0, 7, VOP_ROLE_DEVICE, &dev), 0);
	CHECK_EQ(vop_link_attach_pipe(p.l1, 7, VOP_ROLE_DRIVER, &drv), 0);
	CHECK_EQ(vop_link_start(p.l1), 0);
	CHECK(T_WAIT_UNTIL(vop_link_dev_state(p.l1, 7) == VOP_DEVRUN_RESETTING, 5000));

	CHECK_EQ(pthread_create(&th, NULL, churn, NULL), 0);
	/* Control calls (what the JS thread does) keep answering while the table churns. */
	while (!t_evlog_has(&p.ev1, VOP_EV_LINK_FAILED, VOP_LINK_FAIL_DEVTAB_UNSTABLE, NULL)) {
		uint64_t dt;
		struct vop_dev_info info;
		int rc;

		t0 = t_now_ms();
		rc = vop_link_queue_stats(p.l1, 7, 0, &st);
		CHECK(rc == 0 || rc == -ENOENT);
		(void)vop_link_dev_state(p.l1, 7);
		rc = vop_devtab_find_bounded(p.w1, 7, &info); /* bounded: returns whatever happens */
		CHECK(rc == 0 || rc == -EAGAIN || rc == -EPROTO);
		dt = t_now_ms() - t0;
		worst = dt > worst ? dt : worst;
		calls++;
		t_sleep_ms(1);
		if (calls > 20000) {
			t_evlog_dump(&p.ev1, "victim");
			fprintf(stderr, "link did not fail\n");
			return T_FAIL;
		}
	}
	atomic_store(&churn_stop, 1);
	pthread_join(th, NULL);
	/* Informational: a hang would have hit the per-test timeout instead. */
	fprintf(stderr, "control calls during churn: %u, slowest %llu ms\n", calls,
		(unsigned long long)worst);
	CHECK_EQ(vop_link_failed(p.l1), VOP_LINK_FAIL_DEVTAB_UNSTABLE);
	CHECK(strcmp(vop_link_fail_name(VOP_LINK_FAIL_DEVTAB_UNSTABLE), "devtab_unstable") == 0);
	/* A failed side accepts no new device and still stops and closes cleanly. */
	vop_pipe_spec(&spec, 8, 0, 64, 256, 0);
	CHECK(vop_devtab_publish(p.w0, &spec) >= 0);
	CHECK_EQ(vop_link_attach_pipe(p.l1, 8, VOP_ROLE_DRIVER, &drv), -ENOLINK);
	CHECK_EQ(vop_link_stop(p.l1), 0);
	/* The table owner's side was not started and did not fail. */
	CHECK_EQ(vop_link_failed(p.l0), 0);
	t_pair_close(&p);
	return T_PASS;
}
