/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop_path_under: a spec path is accepted only when it is absolute,
 * normalised, strictly inside its root and shorter than VOP_PATH_MAX; a
 * longer one is refused, never truncated.
 */
#include "pathtest.h"

int main(void)
{
	char longp[VOP_PATH_MAX + 8];
	const char *rel = NULL;

	CHECK_EQ(vop_path_under("/srv/disks", "/srv/disks/a.img", &rel), 0);
	CHECK(strcmp(rel, "a.img") == 0);
	CHECK_EQ(vop_path_under("/srv/disks/", "/srv/disks/sub/a.img", &rel), 0);
	CHECK(strcmp(rel, "sub/a.img") == 0);
	CHECK_EQ(vop_path_under("/", "/etc/shadow", &rel), 0);
	CHECK(strcmp(rel, "etc/shadow") == 0);

	/* outside, or only a string prefix of the root */
	CHECK_EQ(vop_path_under("/srv/disks", "/etc/shadow", &rel), -EXDEV);
	CHECK_EQ(vop_path_under("/srv/disks", "/srv/disks2/a.img", &rel), -EXDEV);
	CHECK(vop_path_under("/srv/disks", "/srv/disks", &rel) == -EXDEV);
	CHECK(vop_path_under("/srv/disks", "/srv", &rel) == -EXDEV);

	/* not normalised */
	CHECK_EQ(vop_path_under("/srv/disks", "/srv/disks/../../etc/shadow", &rel), -EINVAL);
	CHECK_EQ(vop_path_under("/srv/disks", "/srv/disks/./a", &rel), -EINVAL);
	CHECK_EQ(vop_path_under("/srv/disks", "/srv/disks//a", &rel), -EINVAL);
	CHECK_EQ(vop_path_under("/srv/disks", "/srv/disks/a/", &rel), -EINVAL);
	CHECK_EQ(vop_path_under("/srv/disks", "srv/disks/a", &rel), -EINVAL);
	CHECK_EQ(vop_path_under("/srv/disks", "/srv/disks/..", &rel), -EINVAL);
	CHECK_EQ(vop_path_under("srv", "/srv/a", &rel), -EINVAL);
	CHECK_EQ(vop_path_under("/srv/../etc", "/srv/../etc/a", &rel), -EINVAL);

	/* VOP_PATH_MAX - 1 bytes fit, VOP_PATH_MAX do not */
	memset(longp, 'a', sizeof(longp));
	memcpy(longp, "/srv/", 5);
	longp[VOP_PATH_MAX - 1] = 0;
	CHECK_EQ(strlen(longp), VOP_PATH_MAX - 1);
	CHECK_EQ(vop_path_under("/srv", longp, &rel), 0);
	longp[VOP_PATH_MAX - 1] = 'a';
	longp[VOP_PATH_MAX] = 0;
	CHECK_EQ(vop_path_under("/srv", longp, &rel), -ENAMETOOLONG);
	CHECK_EQ(vop_path_open("/srv", longp, O_RDONLY, 0), -ENAMETOOLONG);
	CHECK_EQ(vop_path_open(NULL, longp, O_RDONLY, 0), -ENAMETOOLONG);
	printf("path-lexical: ok\n");
	return T_PASS;
}
