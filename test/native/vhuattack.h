/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What the hostile vhost-user front-end tests share: the device under
 * attack (g_dev), the fds open before the first attack, the attacks so
 * far, and the check that an attack's connection ended with a protocol
 * error naming the rule and left nothing behind (no fd, memory or ring).
 */
#ifndef VOP_TEST_VHUATTACK_H
#define VOP_TEST_VHUATTACK_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "vop/dev_vhost.h"

static struct vop_vhost *g_dev;
static unsigned g_baseline_fds;
static unsigned g_attacks;

/* Open fds of this process. */
static inline unsigned count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	unsigned n = 0;

	CHECK(d != NULL);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

static inline struct vop_vhu_status status(void)
{
	struct vop_vhu_status st;

	vop_vhu_status(vop_vhost_vhu(g_dev), &st);
	return st;
}

/* Wait until the device counted `disc` disconnects (its session ended and cleaned up). */
static inline void wait_disconnects(uint64_t disc)
{
	uint64_t end = t_now_ms() + 5000;

	while (status().disconnects < disc || status().connected) {
		CHECK(t_now_ms() < end);
		t_sleep_ms(2);
	}
}

/*
 * The attack `name` ended its connection (closed by the caller with every
 * fd it sent): one more protocol error, whose rule contains want; no
 * memory, region or running ring left, no fd kept.
 */
static inline void check_refused(const char *name, const char *want)
{
	struct vop_vhu_status st;

	g_attacks++;
	wait_disconnects(g_attacks);
	st = status();
	if (st.protocol_errors != g_attacks || !st.last_why || !strstr(st.last_why, want)) {
		fprintf(stderr, "attack %s: protocol_errors=%llu (want %u), why=\"%s\" (want \"%s\")\n", name,
			(unsigned long long)st.protocol_errors, g_attacks, st.last_why ? st.last_why : "(none)", want);
		exit(T_FAIL);
	}
	CHECK_EQ(st.mem_bytes, 0);
	CHECK_EQ(st.regions, 0);
	CHECK_EQ(st.running, 0);
	if (count_fds() != g_baseline_fds) {
		fprintf(stderr, "attack %s: %u fds open, %u before: the device kept an fd\n", name, count_fds(),
			g_baseline_fds);
		exit(T_FAIL);
	}
	printf("refused: %-52s %s (%s)\n", name, vop_vhu_request_name(st.last_request), st.last_why);
}

#endif /* VOP_TEST_VHUATTACK_H */
