/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A symlink inside an allowed root never leads out of it: relative and
 * absolute links to a file or a directory outside are refused by openat2
 * (-EXDEV) and by the fallback walk (-ELOOP), and O_CREAT through a
 * dangling escaping link creates nothing outside. A link that stays inside
 * works with openat2 (the walk refuses every link).
 */
#include "pathtest.h"

int main(void)
{
	char root[256], p[256], q[256], outside[256];
	int fd, rootfd;

	pt_init();
	pt_at(root, sizeof(root), "root");
	pt_at(outside, sizeof(outside), "outside");
	CHECK(mkdir(root, 0700) == 0);
	CHECK(mkdir(outside, 0700) == 0);
	CHECK(mkdir(pt_at(p, sizeof(p), "root/sub"), 0700) == 0);
	pt_write(pt_at(p, sizeof(p), "outside/secret"), "secret");
	pt_write(pt_at(p, sizeof(p), "root/sub/disk.img"), "disk");
	CHECK(symlink("../outside/secret", pt_at(p, sizeof(p), "root/rel")) == 0);
	CHECK(symlink(pt_at(q, sizeof(q), "outside/secret"), pt_at(p, sizeof(p), "root/abs")) == 0);
	CHECK(symlink("../outside", pt_at(p, sizeof(p), "root/dirlink")) == 0);
	CHECK(symlink("../outside/new", pt_at(p, sizeof(p), "root/dangle")) == 0);
	CHECK(symlink("sub/disk.img", pt_at(p, sizeof(p), "root/inner")) == 0);

	CHECK_EQ(vop_path_open(root, pt_at(p, sizeof(p), "root/rel"), O_RDWR, 0), -EXDEV);
	CHECK_EQ(vop_path_open(root, pt_at(p, sizeof(p), "root/abs"), O_RDWR, 0), -EXDEV);
	CHECK_EQ(vop_path_open(root, pt_at(p, sizeof(p), "root/dirlink/secret"), O_RDWR, 0),
		 -EXDEV);
	CHECK_EQ(vop_path_open(root, pt_at(p, sizeof(p), "root/dangle"), O_WRONLY | O_CREAT, 0600),
		 -EXDEV);
	CHECK_EQ(access(pt_at(p, sizeof(p), "outside/new"), F_OK), -1);
	/* a path that is not inside root at all */
	CHECK_EQ(vop_path_open(root, pt_at(p, sizeof(p), "outside/secret"), O_RDONLY, 0), -EXDEV);
	/* O_NOFOLLOW refuses a final link even inside */
	CHECK_EQ(vop_path_open(root, pt_at(p, sizeof(p), "root/inner"), O_RDONLY | O_NOFOLLOW, 0),
		 -ELOOP);

	fd = vop_path_open(root, pt_at(p, sizeof(p), "root/inner"), O_RDONLY, 0);
	CHECK(fd >= 0);
	close(fd);
	fd = vop_path_open(root, pt_at(p, sizeof(p), "root/sub/disk.img"), O_RDWR, 0);
	CHECK(fd >= 0);
	close(fd);

	/* the fallback walk: every link refused, plain paths fine */
	rootfd = open(root, O_PATH | O_DIRECTORY);
	CHECK(rootfd >= 0);
	CHECK_EQ(vop_path_openat_walk(rootfd, "rel", O_RDWR, 0), -ELOOP);
	CHECK_EQ(vop_path_openat_walk(rootfd, "abs", O_RDWR, 0), -ELOOP);
	CHECK_EQ(vop_path_openat_walk(rootfd, "dirlink/secret", O_RDWR, 0), -ELOOP);
	CHECK_EQ(vop_path_openat_walk(rootfd, "dangle", O_WRONLY | O_CREAT, 0600), -ELOOP);
	CHECK_EQ(vop_path_openat_walk(rootfd, "inner", O_RDONLY, 0), -ELOOP);
	CHECK_EQ(vop_path_openat_walk(rootfd, "../outside/secret", O_RDONLY, 0), -EXDEV);
	CHECK_EQ(vop_path_openat_walk(rootfd, "/etc/passwd", O_RDONLY, 0), -EXDEV);
	CHECK_EQ(access(pt_at(p, sizeof(p), "outside/new"), F_OK), -1);
	fd = vop_path_openat_walk(rootfd, "sub/disk.img", O_RDWR, 0);
	CHECK(fd >= 0);
	close(fd);
	fd = vop_path_openat_walk(rootfd, "sub/new.log", O_WRONLY | O_CREAT, 0600);
	CHECK(fd >= 0);
	close(fd);
	close(rootfd);

	CHECK(pt_holds(pt_at(p, sizeof(p), "outside/secret"), "secret"));
	printf("path-symlink-escape: ok\n");
	return T_PASS;
}
