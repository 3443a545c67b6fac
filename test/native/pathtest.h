/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers of the path tests: a scratch tree under $TMPDIR removed at exit. */
#ifndef VOP_TEST_PATHTEST_H
#define VOP_TEST_PATHTEST_H

#include "helpers.h" /* first: defines _GNU_SOURCE */

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>

#include "vop/path.h"

static char pt_base[200];

static int pt_rm(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void pt_cleanup(void)
{
	if (pt_base[0])
		nftw(pt_base, pt_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Creates $TMPDIR/vop-path-XXXXXX; removed (without following links) at exit. */
static inline const char *pt_init(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(pt_base, sizeof(pt_base), "%s/vop-path-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
	CHECK(mkdtemp(pt_base) != NULL);
	atexit(pt_cleanup);
	return pt_base;
}

/* base/rel into buf. */
static inline const char *pt_at(char *buf, size_t n, const char *rel)
{
	snprintf(buf, n, "%s/%s", pt_base, rel);
	return buf;
}

static inline void pt_write(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd >= 0);
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	close(fd);
}

/* True when the file at path holds exactly text. */
static inline int pt_holds(const char *path, const char *text)
{
	char buf[256];
	int fd = open(path, O_RDONLY | O_NOFOLLOW);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return 0;
	buf[n] = 0;
	return strcmp(buf, text) == 0;
}

#endif
