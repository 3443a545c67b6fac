/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-ivshmem-server refuses, at start and without touching anything: a socket path that is not
 * a socket (the file stays as it was), a socket a live server listens on (that server keeps
 * working), a path too long for a socket, a size that is not a power of two in 4K..64G, vector
 * and peer counts out of range, an --shm file of another size (kept intact) or that is a
 * symlink. It replaces a stale socket, creates a new --shm file 0600 at the full size, and
 * shares an existing --shm file of the right size (its bytes are what peers see).
 */
#include "ivshmem-helpers.h"

#include <sys/mman.h>

static void expect_refusal(const char *const *argv, const char *why)
{
	struct t_server s;

	if (t_server_start(&s, argv, NULL) != 0) {
		fprintf(stderr, "server did not refuse: %s\n", why);
		exit(T_FAIL);
	}
	const char *err = t_server_stderr(&s);

	if (!strstr(err, why)) {
		fprintf(stderr, "refusal without \"%s\": %s\n", why, err);
		exit(T_FAIL);
	}
	close(s.out);
	close(s.err);
}

int main(void)
{
	char dir[160], sock[220], file[220], shm[220], lnk[220], longp[300];
	struct t_server s;
	struct stat st;
	struct vop_ivshmem_client *c;
	int fd;

	t_mkdir(dir, sizeof(dir), "ivs-refuse");
	snprintf(sock, sizeof(sock), "%s/sock", dir);
	snprintf(file, sizeof(file), "%s/file", dir);
	snprintf(shm, sizeof(shm), "%s/shm", dir);
	snprintf(lnk, sizeof(lnk), "%s/link", dir);

	/* A regular file where the socket should go: refused, left alone. */
	fd = open(file, O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0 && write(fd, "keep me", 7) == 7);
	close(fd);
	{
		const char *argv[] = { "--socket", file, "--size", "64K", NULL };

		expect_refusal(argv, "not a socket");
		CHECK(stat(file, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 7);
	}
	/* Sizes, vectors, peers out of range. */
	{
		const char *a1[] = { "--socket", sock, "--size", "3000", NULL };
		const char *a2[] = { "--socket", sock, "--size", "96K", NULL };
		const char *a3[] = { "--socket", sock, "--size", "128G", NULL };
		const char *a4[] = { "--socket", sock, "--size", "64K", "--vectors", "0", NULL };
		const char *a5[] = { "--socket", sock, "--size", "64K", "--vectors", "65", NULL };
		const char *a6[] = { "--socket", sock, "--size", "64K", "--max-peers", "0", NULL };
		const char *a7[] = { "--socket", sock, "--size", "-4096", NULL };

		expect_refusal(a1, "power of two");
		expect_refusal(a2, "power of two");
		expect_refusal(a3, "power of two");
		expect_refusal(a4, "--vectors");
		expect_refusal(a5, "--vectors");
		expect_refusal(a6, "--max-peers");
		expect_refusal(a7, "--size");
	}
	/* A socket path too long. */
	memset(longp, 'x', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = 0;
	memcpy(longp, dir, strlen(dir));
	longp[strlen(dir)] = '/';
	{
		const char *argv[] = { "--socket", longp, "--size", "64K", NULL };

		expect_refusal(argv, "longer than");
	}

	/* A stale socket (nobody listening) is replaced; a live one is refused. */
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int l = socket(AF_UNIX, SOCK_STREAM, 0);

		memcpy(sa.sun_path, sock, strlen(sock) + 1);
		CHECK(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0);
		close(l); /* bound, never listened: stale */
	}
	{
		const char *argv[] = { "--socket", sock, "--size", "64K", NULL };

		CHECK(t_server_start(&s, argv, "ready ") == 0);
		expect_refusal(argv, "a server is listening");
		CHECK_EQ(vop_ivshmem_client_open(sock, 1, 5000, &c),
			 0); /* the first still serves */
		vop_ivshmem_client_close(c);
		t_server_stop(&s);
	}

	/* --shm: created 0600 with the full size... */
	{
		const char *argv[] = { "--socket", sock, "--size", "64K", "--shm", shm, NULL };

		CHECK(t_server_start(&s, argv, "ready ") == 0);
		CHECK(stat(shm, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 65536);
		CHECK_EQ(st.st_mode & 0777, 0600);
		CHECK(st.st_blocks * 512 >= 65536); /* reserved, not sparse */
		t_server_stop(&s);
	}
	/* ...reused when the size matches: peers see its bytes... */
	fd = open(shm, O_RDWR);
	CHECK(fd >= 0 && pwrite(fd, "from the file", 13, 100) == 13);
	close(fd);
	{
		const char *argv[] = { "--socket", sock, "--size", "64K", "--shm", shm, NULL };
		uint8_t *m;

		CHECK(t_server_start(&s, argv, "ready ") == 0);
		CHECK_EQ(vop_ivshmem_client_open(sock, 1, 5000, &c), 0);
		m = mmap(NULL, 65536, PROT_READ, MAP_SHARED, vop_ivshmem_client_shm_fd(c), 0);
		CHECK(m != MAP_FAILED && memcmp(m + 100, "from the file", 13) == 0);
		munmap(m, 65536);
		vop_ivshmem_client_close(c);
		t_server_stop(&s);
	}
	/* ...refused when it does not (and left as it is), or when it is a symlink. */
	{
		const char *argv[] = { "--socket", sock, "--size", "128K", "--shm", shm, NULL };

		expect_refusal(argv, "refusing to resize");
		CHECK(stat(shm, &st) == 0 && st.st_size == 65536);
	}
	CHECK(symlink(shm, lnk) == 0);
	{
		const char *argv[] = { "--socket", sock, "--size", "64K", "--shm", lnk, NULL };

		expect_refusal(argv, "--shm");
	}
	unlink(lnk);
	unlink(shm);
	unlink(file);
	unlink(sock);
	rmdir(dir);
	return T_PASS;
}
