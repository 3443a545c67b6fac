/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pty link: a stale link of ours (into /dev/pts/) is replaced; a
 * regular file or a link elsewhere at that name is refused and left alone;
 * the owner removes the link only while it still points at its pty.
 */
#include "pathtest.h"

int main(void)
{
	char dir[256], p[256], q[256], cur[256];
	const char *name;
	ssize_t n;
	int dfd;

	pt_init();
	CHECK(mkdir(pt_at(dir, sizeof(dir), "pty"), 0700) == 0);
	dfd = vop_path_open_dir(dir, pt_at(p, sizeof(p), "pty/console"), &name);
	CHECK(dfd >= 0);
	CHECK(strcmp(name, "console") == 0);

	CHECK_EQ(vop_path_symlink(dfd, name, "/dev/pts/7", "/dev/pts/"), 0);
	/* stale link of ours: replaced */
	CHECK_EQ(vop_path_symlink(dfd, name, "/dev/pts/9", "/dev/pts/"), 0);
	n = readlink(p, cur, sizeof(cur) - 1);
	CHECK(n > 0);
	cur[n] = 0;
	CHECK(strcmp(cur, "/dev/pts/9") == 0);
	/* removed only while it points at our pty */
	vop_path_unlink_symlink(dfd, name, "/dev/pts/7");
	CHECK(readlink(p, cur, sizeof(cur)) > 0);
	vop_path_unlink_symlink(dfd, name, "/dev/pts/9");
	CHECK_EQ(access(p, F_OK), -1);

	/* a regular file there: refused, intact */
	pt_write(p, "root-owned");
	CHECK_EQ(vop_path_symlink(dfd, name, "/dev/pts/7", "/dev/pts/"), -EEXIST);
	CHECK(pt_holds(p, "root-owned"));
	CHECK(unlink(p) == 0);

	/* a link elsewhere: refused, intact */
	pt_write(pt_at(q, sizeof(q), "target"), "keep");
	CHECK(symlink(q, p) == 0);
	CHECK_EQ(vop_path_symlink(dfd, name, "/dev/pts/7", "/dev/pts/"), -EEXIST);
	n = readlink(p, cur, sizeof(cur) - 1);
	CHECK(n > 0);
	cur[n] = 0;
	CHECK(strcmp(cur, q) == 0);
	CHECK(pt_holds(q, "keep"));
	close(dfd);
	printf("path-symlink-own: ok\n");
	return T_PASS;
}
