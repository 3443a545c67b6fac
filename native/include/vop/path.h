/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Host paths beneath an allowed root: how the device backends open the files,
 * sockets and links a link spec names without following a symlink out of the
 * directory the node's operator allowed for that kind of path (disk images,
 * sockets, console logs, pty links).
 *
 * A root is a directory from the agent's own configuration: trusted, opened
 * following symlinks. A path is absolute, normalised (no "//", ".", "..",
 * no trailing "/") and lexically inside its root; everything after the root
 * is resolved with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so a
 * symlink may point elsewhere inside the root but never out of it. Kernels
 * without openat2 (before 5.6, or a seccomp filter that refuses it) get a
 * component walk with O_NOFOLLOW that refuses every symlink instead.
 *
 * A NULL root means "the directory part of path" (vopdev and the C tests,
 * whose paths come from the command line): the final component is still
 * resolved beneath it and the socket and symlink rules below still apply.
 *
 * Sockets are bound beneath an O_PATH directory fd through
 * "/proc/self/fd/<dirfd>/<name>", so no directory component is looked up
 * again between the check and the bind. Something already at a socket's
 * name is removed only if it is a socket nobody listens on (a stale socket
 * of an earlier run); a live socket, a regular file, a symlink or a
 * directory is refused and left alone. The owner unlinks only the socket it
 * bound (same device and inode).
 *
 * All functions return 0 (or an fd >= 0) or -errno and never touch errno of
 * the caller's interest. Thread-safe (no shared state; /proc/self/fd paths
 * name this process's own fds).
 */
#ifndef VOP_PATH_H
#define VOP_PATH_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

/* Bytes of a host path, NUL included: longer ones are refused, never truncated. */
#define VOP_PATH_MAX 256u

/*
 * vop_path_under - lexical check: path is absolute, normalised, shorter than
 * VOP_PATH_MAX and strictly inside root (root "/" allows every path).
 * *rel points into path at the part below root. Returns 0, -EINVAL (path or
 * root not absolute or not normalised), -ENAMETOOLONG, -EXDEV (not inside root).
 */
int vop_path_under(const char *root, const char *path, const char **rel);

/*
 * vop_path_openat_beneath - open rel (relative, normalised) beneath the
 * directory rootfd: openat2 with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
 * else vop_path_openat_walk(). O_CLOEXEC and O_NOCTTY are always added; mode
 * is used with O_CREAT only. Returns the fd, -EXDEV (resolution would leave
 * rootfd), -ELOOP (a symlink the walk refuses, or a final symlink with
 * O_NOFOLLOW), or -errno of the open.
 */
int vop_path_openat_beneath(int rootfd, const char *rel, int flags, mode_t mode);

/*
 * vop_path_openat_walk - the fallback of vop_path_openat_beneath, exported
 * for tests: rel opened one component at a time with O_NOFOLLOW, so any
 * symlink on the way (the final component included) is -ELOOP.
 */
int vop_path_openat_walk(int rootfd, const char *rel, int flags, mode_t mode);

/*
 * vop_path_open - open path beneath root (NULL: its own directory) with
 * flags (see vop_path_openat_beneath). Returns the fd or -errno; -EXDEV when
 * path is not inside root.
 */
int vop_path_open(const char *root, const char *path, int flags, mode_t mode);

/*
 * vop_path_open_dir - open (O_PATH) the directory that holds path, resolved
 * beneath root (NULL: that directory itself, trusted), and point *name at
 * path's final component. Returns the directory fd or -errno (as vop_path_open).
 */
int vop_path_open_dir(const char *root, const char *path, const char **name);

/* A socket bound beneath a directory fd; dirfd -1 when unused. */
struct vop_path_sock {
	int dirfd;		 /* O_PATH fd of the socket's directory, owned */
	char name[VOP_PATH_MAX]; /* the socket's name in dirfd */
	dev_t dev;		 /* identity of the socket we bound (ino 0: not ours) */
	ino_t ino;
};

/* Mark s unused (dirfd -1). */
void vop_path_sock_init(struct vop_path_sock *s);

/*
 * vop_path_sockaddr - the AF_UNIX address "/proc/self/fd/<dirfd>/<name>".
 * Returns 0 or -ENAMETOOLONG (it does not fit sun_path; never truncated).
 */
int vop_path_sockaddr(int dirfd, const char *name, struct sockaddr_un *a, socklen_t *len);

/*
 * vop_path_bind_unix - bind the AF_UNIX socket sockfd (stream or datagram)
 * to path beneath root and chmod it to mode. path itself must fit sun_path
 * (clients use it). A stale socket at that name is removed first (see the
 * top of this file). On success s holds the directory fd and the bound
 * socket's identity for vop_path_unlink_socket(). Returns 0, -ENAMETOOLONG,
 * -EXDEV, -ELOOP, -EEXIST (something that is not a socket is there),
 * -EADDRINUSE (a live socket is there), or -errno.
 */
int vop_path_bind_unix(int sockfd, const char *root, const char *path, mode_t mode,
		       struct vop_path_sock *s);

/*
 * vop_path_peer_unix - address of a peer's socket at path beneath root (a
 * datagram destination): the directory is resolved and kept open in s (not
 * ours: never unlinked), the address names it through /proc/self/fd.
 * Returns 0 or -errno as vop_path_bind_unix (nothing is checked at the name:
 * the peer may bind later).
 */
int vop_path_peer_unix(const char *root, const char *path, struct vop_path_sock *s,
		       struct sockaddr_un *a, socklen_t *len);

/*
 * vop_path_unlink_socket - remove the socket s bound if its name still is
 * that socket (same device and inode), then close the directory fd. NULL
 * or unused s is fine.
 */
void vop_path_unlink_socket(struct vop_path_sock *s);

/*
 * vop_path_symlink - create name in dirfd as a symlink to target. An
 * existing symlink whose target starts with replace_prefix (NULL: none) is a
 * stale link of ours and replaced; anything else there is refused (-EEXIST)
 * and left alone. Returns 0, -EEXIST or -errno.
 */
int vop_path_symlink(int dirfd, const char *name, const char *target, const char *replace_prefix);

/* vop_path_unlink_symlink - remove name in dirfd if it still is a symlink to target. */
void vop_path_unlink_symlink(int dirfd, const char *name, const char *target);

#endif /* VOP_PATH_H */
