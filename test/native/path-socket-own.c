/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sockets bound beneath a root: only a stale socket at the name is removed;
 * a live socket, a regular file, a symlink or a directory there is refused
 * and left alone; the owner unlinks only the socket it bound; a path longer
 * than sun_path is refused; a socket directory reached through a link out
 * of the root is refused.
 */
#include "pathtest.h"

#include <sys/socket.h>

static int sock(int type)
{
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);

	CHECK(fd >= 0);
	return fd;
}

int main(void)
{
	char root[256], p[256], q[256], longp[200];
	struct vop_path_sock s1, s2;
	struct stat st;
	int a, b;

	pt_init();
	pt_at(root, sizeof(root), "sockets");
	CHECK(mkdir(root, 0700) == 0);
	CHECK(mkdir(pt_at(p, sizeof(p), "outside"), 0700) == 0);

	/* a fresh name: bound, mode 0600 */
	a = sock(SOCK_STREAM);
	CHECK_EQ(vop_path_bind_unix(a, root, pt_at(p, sizeof(p), "sockets/nbd.sock"), 0600, &s1),
		 0);
	CHECK(listen(a, 4) == 0);
	CHECK(lstat(p, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);

	/* a live socket at the name is not taken over */
	b = sock(SOCK_STREAM);
	CHECK_EQ(vop_path_bind_unix(b, root, p, 0600, &s2), -EADDRINUSE);
	close(b);
	CHECK(lstat(p, &st) == 0 && S_ISSOCK(st.st_mode));

	/* once its owner is gone (no unlink: a crash) the stale socket is replaced */
	close(a);
	vop_path_sock_init(&s1); /* leak the name like a killed process would */
	b = sock(SOCK_STREAM);
	CHECK_EQ(vop_path_bind_unix(b, root, p, 0600, &s2), 0);

	/* the owner unlinks only its own socket: not a file put in its place */
	CHECK(rename(p, pt_at(q, sizeof(q), "sockets/moved.sock")) == 0);
	pt_write(p, "not a socket");
	vop_path_unlink_socket(&s2);
	CHECK(pt_holds(p, "not a socket"));
	close(b);

	/* a regular file at the name is refused and intact (stream and datagram) */
	b = sock(SOCK_STREAM);
	CHECK_EQ(vop_path_bind_unix(b, root, p, 0600, &s2), -EEXIST);
	close(b);
	b = sock(SOCK_DGRAM);
	CHECK_EQ(vop_path_bind_unix(b, root, p, 0600, &s2), -EEXIST);
	close(b);
	CHECK(pt_holds(p, "not a socket"));

	/* a symlink at the name (to a file outside) is refused, link and target intact */
	pt_write(pt_at(q, sizeof(q), "outside/authorized_keys"), "ssh-ed25519 AAAA");
	CHECK(symlink(q, pt_at(p, sizeof(p), "sockets/link.sock")) == 0);
	b = sock(SOCK_STREAM);
	CHECK_EQ(vop_path_bind_unix(b, root, p, 0600, &s2), -EEXIST);
	close(b);
	CHECK(lstat(p, &st) == 0 && S_ISLNK(st.st_mode));
	CHECK(pt_holds(q, "ssh-ed25519 AAAA"));

	/* a directory at the name */
	CHECK(mkdir(pt_at(p, sizeof(p), "sockets/dir.sock"), 0700) == 0);
	b = sock(SOCK_STREAM);
	CHECK_EQ(vop_path_bind_unix(b, root, p, 0600, &s2), -EEXIST);
	close(b);

	/* outside the root, and through a directory link out of it */
	b = sock(SOCK_STREAM);
	CHECK_EQ(vop_path_bind_unix(b, root, pt_at(p, sizeof(p), "outside/x.sock"), 0600, &s2),
		 -EXDEV);
	CHECK(symlink("../outside", pt_at(p, sizeof(p), "sockets/out")) == 0);
	CHECK_EQ(vop_path_bind_unix(b, root, pt_at(p, sizeof(p), "sockets/out/x.sock"), 0600, &s2),
		 -EXDEV);
	CHECK_EQ(access(pt_at(p, sizeof(p), "outside/x.sock"), F_OK), -1);

	/* longer than sun_path: refused, nothing bound under a truncated name */
	CHECK(strlen(root) + 2 < sizeof(longp));
	memset(longp, 'n', sizeof(longp));
	memcpy(longp, root, strlen(root));
	longp[strlen(root)] = '/';
	longp[sizeof(longp) - 1] = 0;
	CHECK(strlen(longp) >= sizeof(((struct sockaddr_un *)0)->sun_path));
	CHECK_EQ(vop_path_bind_unix(b, root, longp, 0600, &s2), -ENAMETOOLONG);
	close(b);

	/* a datagram socket: same rules; and its peer address stays beneath the root */
	{
		struct vop_path_sock ps;
		struct sockaddr_un pa;
		socklen_t pl;
		int d = sock(SOCK_DGRAM), e = sock(SOCK_DGRAM);
		char buf[8];

		CHECK_EQ(vop_path_bind_unix(d, root, pt_at(p, sizeof(p), "sockets/a.dgram"), 0600,
					    &s1),
			 0);
		CHECK_EQ(vop_path_peer_unix(root, p, &ps, &pa, &pl), 0);
		CHECK(sendto(e, "hi", 2, 0, (struct sockaddr *)&pa, pl) == 2);
		CHECK(recv(d, buf, sizeof(buf), 0) == 2);
		CHECK_EQ(vop_path_peer_unix(root, pt_at(q, sizeof(q), "sockets/out/b.dgram"), &ps,
					    &pa, &pl),
			 -EXDEV);
		vop_path_unlink_socket(&s1);
		CHECK_EQ(access(p, F_OK), -1);
		close(d);
		close(e);
	}
	printf("path-socket-own: ok\n");
	return T_PASS;
}
