/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers for the native core: exit codes PASS 0 / FAIL 1 / SKIP 77,
 * CHECK macros, window pairs and an event log.
 */
#ifndef VOP_TEST_HELPERS_H
#define VOP_TEST_HELPERS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vop/link.h"
#include "vop/vq.h"
#include "vop/window.h"
#include "vop/xport.h"

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

/*
 * A missing prerequisite (root, /dev/net/tun, a namespace): SKIP on a
 * developer's machine, FAIL when $CI is set to anything non-empty. Prints
 * why either way. Use as `return t_missing("root and /dev/net/tun");`.
 */
static inline int t_missing(const char *name, const char *why)
{
	const char *ci = getenv("CI");

	if (ci && *ci) {
		fprintf(stderr, "FAIL: missing prerequisite %s: %s (CI is set)\n", name, why);
		return T_FAIL;
	}
	printf("SKIP: needs %s: %s\n", name, why);
	return T_SKIP;
}

#define CHECK(cond)                                                                     \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
			exit(T_FAIL);                                                   \
		}                                                                       \
	} while (0)

#define CHECK_EQ(a, b)                                                                  \
	do {                                                                            \
		long long a__ = (long long)(a), b__ = (long long)(b);                   \
		if (a__ != b__) {                                                       \
			fprintf(stderr, "%s:%d: CHECK_EQ failed: %s = %lld, %s = %lld\n", \
				__FILE__, __LINE__, #a, a__, #b, b__);                  \
			exit(T_FAIL);                                                   \
		}                                                                       \
	} while (0)

static inline uint64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void t_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* A unique window path under $TMPDIR (or /tmp); unlinked by the creator. */
static inline void t_path(char *buf, size_t n, const char *tag)
{
	const char *dir = getenv("TMPDIR");
	static unsigned counter;

	snprintf(buf, n, "%s/vop-test-%s-%d-%u", dir && *dir ? dir : "/tmp", tag, (int)getpid(),
		 counter++);
}

/* ---- event log (worker threads append, test thread reads) ---- */
#define T_EVMAX 256
struct t_evlog {
	pthread_mutex_t mu;
	unsigned n;
	struct vop_event ev[T_EVMAX];
};

static inline void t_evlog_init(struct t_evlog *l)
{
	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->mu, NULL);
}

static inline void t_on_event(void *ctx, const struct vop_event *ev)
{
	struct t_evlog *l = ctx;

	pthread_mutex_lock(&l->mu);
	if (l->n < T_EVMAX)
		l->ev[l->n++] = *ev;
	pthread_mutex_unlock(&l->mu);
}

/* True if an event of type (and reason, if reason >= 0) was logged. */
static inline int t_evlog_has(struct t_evlog *l, uint32_t type, int reason, uint32_t *queue)
{
	unsigned i;
	int found = 0;

	pthread_mutex_lock(&l->mu);
	for (i = 0; i < l->n && !found; i++) {
		if (l->ev[i].type == type && (reason < 0 || l->ev[i].reason == (uint32_t)reason)) {
			found = 1;
			if (queue)
				*queue = l->ev[i].queue;
		}
	}
	pthread_mutex_unlock(&l->mu);
	return found;
}

/* Number of events of type logged so far. */
static inline unsigned t_evlog_count(struct t_evlog *l, uint32_t type)
{
	unsigned i, n = 0;

	pthread_mutex_lock(&l->mu);
	for (i = 0; i < l->n; i++)
		n += l->ev[i].type == type;
	pthread_mutex_unlock(&l->mu);
	return n;
}

static inline void t_evlog_dump(struct t_evlog *l, const char *tag)
{
	unsigned i;

	pthread_mutex_lock(&l->mu);
	for (i = 0; i < l->n; i++)
		fprintf(stderr, "%s event type=%u dev=%u q=%u reason=%u(%s) epoch=%u\n", tag,
			l->ev[i].type, l->ev[i].dev_id, l->ev[i].queue, l->ev[i].reason,
			vop_vq_reason_name(l->ev[i].reason), l->ev[i].epoch);
	pthread_mutex_unlock(&l->mu);
}

/* Wait up to ms for cond (re-evaluated every millisecond). */
#define T_WAIT_UNTIL(cond, ms)                                                          \
	({                                                                              \
		uint64_t deadline__ = t_now_ms() + (ms);                                \
		int ok__ = 0;                                                           \
		while (!(ok__ = !!(cond)) && t_now_ms() < deadline__)                   \
			t_sleep_ms(1);                                                  \
		ok__;                                                                   \
	})

/* ---- a window with both sides in this process ---- */
struct t_pair {
	char path[256];
	struct vop_window *w0, *w1;  /* side 0 (creator), side 1 */
	struct vop_link *l0, *l1;    /* link sides */
	struct t_evlog ev0, ev1;     /* their events */
};

/* Create window (size bytes), attach side 1, create both link sides (not started). */
static inline void t_pair_open(struct t_pair *p, const char *tag, uint64_t size, uint64_t spin_ns)
{
	struct vop_xport *x0, *x1;
	struct vop_link_config c;

	memset(p, 0, sizeof(*p));
	t_path(p->path, sizeof(p->path), tag);
	CHECK_EQ(vop_shm_create(p->path, size, &x0), 0);
	CHECK_EQ(vop_window_create(x0, NULL, &p->w0), 0);
	CHECK_EQ(vop_shm_open(p->path, &x1), 0);
	CHECK_EQ(vop_window_attach(x1, &p->w1), 0);
	t_evlog_init(&p->ev0);
	t_evlog_init(&p->ev1);
	memset(&c, 0, sizeof(c));
	c.spin_ns = spin_ns;
	c.on_event = t_on_event;
	c.ctx = &p->ev0;
	CHECK_EQ(vop_link_create(p->w0, &c, &p->l0), 0);
	c.ctx = &p->ev1;
	CHECK_EQ(vop_link_create(p->w1, &c, &p->l1), 0);
}

static inline void t_pair_close(struct t_pair *p)
{
	vop_link_destroy(p->l1);
	vop_link_destroy(p->l0);
	vop_window_close(p->w1);
	vop_window_close(p->w0);
	pthread_mutex_destroy(&p->ev0.mu);
	pthread_mutex_destroy(&p->ev1.mu);
}

static inline struct vop_pipe_config t_pipe_cfg(uint32_t msg, uint8_t tx, uint8_t rx, int verify)
{
	struct vop_pipe_config pc;

	memset(&pc, 0, sizeof(pc));
	pc.msg_size = msg;
	pc.segs = 1;
	pc.tx_mode = tx;
	pc.rx_mode = rx;
	pc.verify = verify != 0;
	pc.features = (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC);
	return pc;
}

/*
 * A healthy byte pipe on pair p (device on side 1, driver on side 0):
 * publish dev_id, attach both roles (driver SOURCE+SINK, device SINK+SOURCE,
 * verifying), start both workers.
 */
static inline void t_pair_run_pipe(struct t_pair *p, uint32_t dev_id, uint16_t qsize, uint32_t msg)
{
	struct vop_dev_spec spec;
	struct vop_pipe_config drv = t_pipe_cfg(msg, VOP_PIPE_SOURCE, VOP_PIPE_SINK, 1);
	struct vop_pipe_config dev = t_pipe_cfg(msg, VOP_PIPE_SINK, VOP_PIPE_SOURCE, 1);

	vop_pipe_spec(&spec, dev_id, 1, qsize, msg,
		      (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	CHECK(vop_devtab_publish(p->w0, &spec) >= 0);
	CHECK_EQ(vop_link_attach_pipe(p->l0, dev_id, VOP_ROLE_DRIVER, &drv), 0);
	CHECK_EQ(vop_link_attach_pipe(p->l1, dev_id, VOP_ROLE_DEVICE, &dev), 0);
	CHECK_EQ(vop_link_start(p->l0), 0);
	CHECK_EQ(vop_link_start(p->l1), 0);
}

static inline uint64_t t_rx(struct vop_link *l, uint32_t dev_id)
{
	struct vop_pipe_stats s;

	if (vop_link_pipe_stats(l, dev_id, &s))
		return 0;
	return s.rx_msgs;
}

#endif /* VOP_TEST_HELPERS_H */
