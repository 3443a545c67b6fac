/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A window larger than the free space of its tmpfs is -ENOSPC at create
 * (the space is reserved before the file is mapped), never a SIGBUS when a
 * page is first touched; the half-made file is removed. The tmpfs is
 * mounted in a private mount namespace of this process (needs root; a
 * missing privilege is SKIP, or FAIL when $CI is set).
 */
#include "helpers.h"

#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>

int main(void)
{
	char dir[] = "/tmp/vop-enospc-XXXXXX", path[300];
	struct vop_xport *x;
	struct vop_window *w;

	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
		return t_missing("a private mount namespace (root)", strerror(errno));
	}
	CHECK(mkdtemp(dir) != NULL);
	if (mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0700") != 0) {
		int e = errno;

		rmdir(dir);
		return t_missing("a tmpfs mount (root)", strerror(e));
	}
	snprintf(path, sizeof(path), "%s/big.win", dir);
	/* 4 MiB on a 1 MiB tmpfs: refused up front, and nothing is left behind. */
	CHECK_EQ(vop_shm_create(path, 4u << 20, &x), -ENOSPC);
	CHECK(access(path, F_OK) != 0);
	/* What fits is created, fully backed: every page can be touched. */
	CHECK_EQ(vop_shm_create(path, 512u << 10, &x), 0);
	CHECK_EQ(vop_window_create(x, NULL, &w), 0);
	memset(x->base, 0xa5, x->size); /* would SIGBUS if any page were not reserved */
	/* With that window in place, a second one does not fit either. */
	{
		char path2[320];
		struct vop_xport *x2;

		snprintf(path2, sizeof(path2), "%s/second.win", dir);
		CHECK_EQ(vop_shm_create(path2, 768u << 10, &x2), -ENOSPC);
		CHECK(access(path2, F_OK) != 0);
	}
	vop_window_close(w);
	CHECK(access(path, F_OK) != 0);
	CHECK_EQ(umount(dir), 0);
	CHECK_EQ(rmdir(dir), 0);
	return T_PASS;
}
