/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sides of different layout majors refuse each other, with a reason that
 * names both versions: a window whose header says layout 1.1 (the last
 * layout in which both sides wrote the device status) or a newer 3.0 is
 * refused at attach (-EPROTO) and at re-attach of either side, the reason
 * names the window's version and ours (2.0), and nothing in the window is
 * written by the refusing side. The same window with our major attaches.
 */
#include "helpers.h"

#define WIN (1u << 20)

static void expect_refused(const char *path, uint16_t major, uint16_t minor)
{
	struct vop_xport *x;
	struct vop_window *w;
	struct vop_win_hdr *h;
	const char *why = NULL;
	char want_theirs[32], want_ours[32];
	uint8_t *before;

	CHECK_EQ(vop_shm_open(path, &x), 0);
	h = (struct vop_win_hdr *)(void *)x->base;
	h->version_major = major;
	h->version_minor = minor;
	before = malloc(WIN);
	CHECK(before != NULL);
	memcpy(before, x->base, WIN);

	CHECK_EQ(vop_window_layout_check(x->base, x->size, NULL, &why), -EPROTO);
	CHECK(why != NULL);
	snprintf(want_theirs, sizeof(want_theirs), "layout %u.%u", major, minor);
	snprintf(want_ours, sizeof(want_ours), "layout %u.%u", VOP_LAYOUT_VERSION_MAJOR,
		 VOP_LAYOUT_VERSION_MINOR);
	fprintf(stderr, "refused %u.%u: %s\n", major, minor, why);
	CHECK(strstr(why, "version_major") != NULL);
	CHECK(strstr(why, want_theirs) != NULL);
	CHECK(strstr(why, want_ours) != NULL);

	/* Neither the attacher nor a restarted creator joins it, and neither writes to it. */
	CHECK_EQ(vop_window_attach(x, &w), -EPROTO);
	CHECK_EQ(vop_window_attach_side(x, 0, &w), -EPROTO);
	CHECK(memcmp(before, x->base, WIN) == 0);
	free(before);

	/* Restore our major: the same window attaches again. */
	h->version_major = VOP_LAYOUT_VERSION_MAJOR;
	h->version_minor = VOP_LAYOUT_VERSION_MINOR;
	CHECK_EQ(vop_window_attach(x, &w), 0);
	vop_window_close(w); /* closes x too */
}

int main(void)
{
	char path[256];
	struct vop_xport *x0;
	struct vop_window *w0;

	CHECK_EQ(VOP_LAYOUT_VERSION_MAJOR, 2);
	t_path(path, sizeof(path), "version");
	CHECK_EQ(vop_shm_create(path, WIN, &x0), 0);
	CHECK_EQ(vop_window_create(x0, NULL, &w0), 0);
	expect_refused(path, 1, 1); /* an older vop: the 1.x layout */
	expect_refused(path, 3, 0); /* a newer one */
	vop_window_close(w0);      /* unlinks the file */
	return T_PASS;
}
