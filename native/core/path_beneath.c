/* SPDX-License-Identifier: Apache-2.0 */
/* Host paths beneath an allowed root: see vop/path.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef SYS_openat2
#include <linux/openat2.h>
#endif

#include "vop/path.h"

/* Absolute and normalised: no empty, "." or ".." component, no trailing "/" (except "/" itself). */
static bool normalised(const char *p, size_t len)
{
	const char *c = p;

	if (len == 0 || p[0] != '/')
		return false;
	if (len == 1)
		return true;
	if (p[len - 1] == '/')
		return false;
	while (*c) {
		const char *next = strchr(c + 1, '/');
		size_t n = next ? (size_t)(next - c - 1) : strlen(c + 1);

		/* c points at a '/', the component is c[1 .. 1+n) */
		if (n == 0 || (n == 1 && c[1] == '.') || (n == 2 && c[1] == '.' && c[2] == '.'))
			return false;
		if (!next)
			break;
		c = next;
	}
	return true;
}

int vop_path_under(const char *root, const char *path, const char **rel)
{
	size_t len, rl;

	if (!root || !path || !rel)
		return -EINVAL;
	len = strlen(path);
	if (len >= VOP_PATH_MAX)
		return -ENAMETOOLONG;
	if (len < 2 || !normalised(path, len))
		return -EINVAL;
	rl = strlen(root);
	if (rl >= VOP_PATH_MAX)
		return -ENAMETOOLONG;
	while (rl > 1 && root[rl - 1] == '/')
		rl--;
	{
		char r[VOP_PATH_MAX];

		memcpy(r, root, rl);
		r[rl] = 0;
		if (!normalised(r, rl))
			return -EINVAL;
	}
	if (rl == 1) { /* root "/" */
		*rel = path + 1;
		return 0;
	}
	if (strncmp(path, root, rl) != 0 || path[rl] != '/')
		return -EXDEV;
	*rel = path + rl + 1;
	return 0;
}

/*
 * The directory a path is resolved beneath (root, or path's own directory
 * when root is NULL) copied into dir, and the part of path below it.
 */
static int split_root(const char *root, const char *path, char dir[VOP_PATH_MAX], const char **rel)
{
	const char *last;
	size_t len;
	int rc;

	if (!path)
		return -EINVAL;
	if (root) {
		rc = vop_path_under(root, path, rel);
		if (rc)
			return rc;
		snprintf(dir, VOP_PATH_MAX, "%s", root); /* shorter than path: fits */
		return 0;
	}
	len = strlen(path);
	if (len >= VOP_PATH_MAX)
		return -ENAMETOOLONG;
	if (len < 2 || !normalised(path, len))
		return -EINVAL;
	last = strrchr(path, '/');
	if (last == path) {
		dir[0] = '/';
		dir[1] = 0;
	} else {
		memcpy(dir, path, (size_t)(last - path));
		dir[last - path] = 0;
	}
	*rel = last + 1;
	return 0;
}

/* A name the walk may look up: not empty, ".", or "..". */
static int component_ok(const char *c)
{
	if (!*c || !strcmp(c, "."))
		return -EINVAL;
	if (!strcmp(c, ".."))
		return -EXDEV;
	return 0;
}

/* -ELOOP when name in dirfd is a symlink (what an O_NOFOLLOW open refused), else -err. */
static int nofollow_errno(int dirfd, const char *name, int err)
{
	struct stat st;

	if ((err == ENOTDIR || err == ELOOP) &&
	    fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
		return -ELOOP;
	return -err;
}

int vop_path_openat_walk(int rootfd, const char *rel, int flags, mode_t mode)
{
	char buf[VOP_PATH_MAX];
	char *p = buf, *slash;
	size_t len;
	int cur = rootfd, fd, rc;

	if (!rel)
		return -EINVAL;
	len = strlen(rel);
	if (len == 0)
		return -EINVAL;
	if (rel[0] == '/')
		return -EXDEV;
	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, rel, len + 1);
	while ((slash = strchr(p, '/')) != NULL) {
		*slash = 0;
		rc = component_ok(p);
		if (rc)
			goto out;
		fd = openat(cur, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			rc = nofollow_errno(cur, p, errno);
			goto out;
		}
		if (cur != rootfd)
			close(cur);
		cur = fd;
		p = slash + 1;
	}
	rc = component_ok(p);
	if (rc)
		goto out;
	fd = openat(cur, p, flags | O_NOFOLLOW | O_CLOEXEC | ((flags & O_PATH) ? 0 : O_NOCTTY),
		    mode);
	rc = fd >= 0 ? fd : nofollow_errno(cur, p, errno);
out:
	if (cur != rootfd)
		close(cur);
	return rc;
}

int vop_path_openat_beneath(int rootfd, const char *rel, int flags, mode_t mode)
{
#ifdef SYS_openat2
	struct open_how how;
	long fd;

	if (!rel)
		return -EINVAL;
	memset(&how, 0, sizeof(how));
	/* openat2 refuses O_PATH with anything but O_DIRECTORY/O_NOFOLLOW/O_CLOEXEC */
	how.flags = (uint64_t)(unsigned)(flags | O_CLOEXEC | ((flags & O_PATH) ? 0 : O_NOCTTY));
	how.mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? mode : 0;
	how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
	fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	/* no openat2 here (old kernel, or a seccomp filter refusing it): walk instead */
	if (errno != ENOSYS && errno != EPERM)
		return -errno;
#endif
	return vop_path_openat_walk(rootfd, rel, flags, mode);
}

int vop_path_open(const char *root, const char *path, int flags, mode_t mode)
{
	char dir[VOP_PATH_MAX];
	const char *rel;
	int rootfd, fd, rc;

	rc = split_root(root, path, dir, &rel);
	if (rc)
		return rc;
	rootfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return -errno;
	fd = vop_path_openat_beneath(rootfd, rel, flags, mode);
	close(rootfd);
	return fd;
}

int vop_path_open_dir(const char *root, const char *path, const char **name)
{
	char dir[VOP_PATH_MAX], sub[VOP_PATH_MAX];
	const char *rel, *slash;
	int rootfd, fd, rc;

	rc = split_root(root, path, dir, &rel);
	if (rc)
		return rc;
	rootfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0)
		return -errno;
	slash = strrchr(rel, '/');
	if (!slash) {
		*name = rel;
		return rootfd;
	}
	memcpy(sub, rel, (size_t)(slash - rel));
	sub[slash - rel] = 0;
	fd = vop_path_openat_beneath(rootfd, sub, O_PATH | O_DIRECTORY, 0);
	close(rootfd);
	if (fd >= 0)
		*name = slash + 1;
	return fd;
}

void vop_path_sock_init(struct vop_path_sock *s)
{
	memset(s, 0, sizeof(*s));
	s->dirfd = -1;
}

int vop_path_sockaddr(int dirfd, const char *name, struct sockaddr_un *a, socklen_t *len)
{
	int n;

	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	n = snprintf(a->sun_path, sizeof(a->sun_path), "/proc/self/fd/%d/%s", dirfd, name);
	if (n < 0 || (size_t)n >= sizeof(a->sun_path))
		return -ENAMETOOLONG;
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1);
	return 0;
}

/*
 * Make name in dirfd free for a bind: nothing there, or a socket nobody
 * listens on (connect refused), which is removed. A live socket is
 * -EADDRINUSE; anything that is not a socket is -EEXIST and left alone.
 */
static int remove_stale(int dirfd, const char *name, int type)
{
	struct sockaddr_un a;
	socklen_t al;
	struct stat st;
	int probe, err, rc;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	rc = vop_path_sockaddr(dirfd, name, &a, &al);
	if (rc)
		return rc;
	probe = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0)
		return -errno;
	err = connect(probe, (struct sockaddr *)&a, al) ? errno : 0;
	close(probe);
	if (err == ENOENT)
		return 0; /* gone meanwhile */
	if (err != ECONNREFUSED)
		return -EADDRINUSE; /* someone answers (or a socket of another type is bound) */
	if (unlinkat(dirfd, name, 0) && errno != ENOENT)
		return -errno;
	return 0;
}

int vop_path_bind_unix(int sockfd, const char *root, const char *path, mode_t mode,
		       struct vop_path_sock *s)
{
	struct sockaddr_un a;
	socklen_t al, tl = sizeof(int);
	struct stat st;
	const char *name;
	int dirfd, type, rc;

	vop_path_sock_init(s);
	if (!path)
		return -EINVAL;
	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	if (getsockopt(sockfd, SOL_SOCKET, SO_TYPE, &type, &tl))
		return -errno;
	dirfd = vop_path_open_dir(root, path, &name);
	if (dirfd < 0)
		return dirfd;
	rc = vop_path_sockaddr(dirfd, name, &a, &al);
	if (rc)
		goto fail;
	rc = remove_stale(dirfd, name, type);
	if (rc)
		goto fail;
	if (bind(sockfd, (struct sockaddr *)&a, al)) {
		rc = -errno;
		goto fail;
	}
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISSOCK(st.st_mode)) {
		rc = -EEXIST;
		goto fail;
	}
	if (fchmodat(dirfd, name, mode, 0)) {
		rc = -errno;
		unlinkat(dirfd, name, 0); /* the socket we just bound */
		goto fail;
	}
	s->dirfd = dirfd;
	snprintf(s->name, sizeof(s->name), "%s", name);
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	return 0;
fail:
	close(dirfd);
	return rc;
}

int vop_path_peer_unix(const char *root, const char *path, struct vop_path_sock *s,
		       struct sockaddr_un *a, socklen_t *len)
{
	const char *name;
	int dirfd, rc;

	vop_path_sock_init(s);
	if (!path)
		return -EINVAL;
	if (strlen(path) >= sizeof(a->sun_path))
		return -ENAMETOOLONG;
	dirfd = vop_path_open_dir(root, path, &name);
	if (dirfd < 0)
		return dirfd;
	rc = vop_path_sockaddr(dirfd, name, a, len);
	if (rc) {
		close(dirfd);
		return rc;
	}
	s->dirfd = dirfd;
	snprintf(s->name, sizeof(s->name), "%s", name);
	return 0;
}

void vop_path_unlink_socket(struct vop_path_sock *s)
{
	struct stat st;

	if (!s || s->dirfd < 0)
		return;
	if (s->ino && fstatat(s->dirfd, s->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISSOCK(st.st_mode) && st.st_dev == s->dev && st.st_ino == s->ino)
		unlinkat(s->dirfd, s->name, 0);
	close(s->dirfd);
	vop_path_sock_init(s);
}

int vop_path_symlink(int dirfd, const char *name, const char *target, const char *replace_prefix)
{
	char cur[VOP_PATH_MAX];
	struct stat st;
	ssize_t n;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		if (!S_ISLNK(st.st_mode) || !replace_prefix)
			return -EEXIST;
		n = readlinkat(dirfd, name, cur, sizeof(cur) - 1);
		if (n < 0)
			return -errno;
		cur[n] = 0;
		if (strncmp(cur, replace_prefix, strlen(replace_prefix)) != 0)
			return -EEXIST;
		if (unlinkat(dirfd, name, 0) && errno != ENOENT)
			return -errno;
	} else if (errno != ENOENT) {
		return -errno;
	}
	return symlinkat(target, dirfd, name) ? -errno : 0;
}

void vop_path_unlink_symlink(int dirfd, const char *name, const char *target)
{
	char cur[VOP_PATH_MAX];
	ssize_t n;

	if (dirfd < 0 || !name[0])
		return;
	n = readlinkat(dirfd, name, cur, sizeof(cur) - 1);
	if (n < 0)
		return;
	cur[n] = 0;
	if (!strcmp(cur, target))
		unlinkat(dirfd, name, 0);
}
