/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vop-ivshmem-server with host peers (the ivshmem client API): two peers get distinct ids and the
 * same shared memory (a sealed memfd: no peer can shrink it), learn each other's eventfds, ring
 * each other on every vector, and the one that stays gets a "left" event with the other's id;
 * a third peer joining later meets the one still there. The server's stdout lines match.
 */
#include "ivshmem-helpers.h"

#include <sys/mman.h>

#define VECTORS 3
#define SIZE	(1u << 20)

int main(void)
{
	struct t_server s;
	struct vop_ivshmem_client *a, *b, *c;
	char sizearg[32];
	unsigned ida, idb, idc;
	uint8_t *ma, *mb;
	uint16_t ids[8];

	t_mkdir(s.dir, sizeof(s.dir), "ivs-peers");
	snprintf(s.sock, sizeof(s.sock), "%s/sock", s.dir);
	snprintf(sizearg, sizeof(sizearg), "%u", SIZE);
	const char *argv[] = { "--socket", s.sock, "--size", sizearg, "--vectors", "3", NULL };

	CHECK(t_server_start(&s, argv, "ready ") == 0);
	struct stat st;

	CHECK(lstat(s.sock, &st) == 0 && S_ISSOCK(st.st_mode));
	CHECK_EQ(st.st_mode & 0777, 0600);

	CHECK_EQ(vop_ivshmem_client_open(s.sock, VECTORS, 5000, &a), 0);
	CHECK_EQ(t_server_wait(&s, "connect ", 5000), 0);
	CHECK_EQ(vop_ivshmem_client_open(s.sock, VECTORS, 5000, &b), 0);
	CHECK_EQ(t_server_wait(&s, "connect ", 5000), 0);
	ida = vop_ivshmem_client_id(a);
	idb = vop_ivshmem_client_id(b);
	CHECK(ida != idb);
	CHECK(ida <= VOP_IVSHMEM_MAX_ID && idb <= VOP_IVSHMEM_MAX_ID);
	CHECK_EQ(vop_ivshmem_client_shm_size(a), SIZE);
	CHECK_EQ(vop_ivshmem_client_shm_size(b), SIZE);

	/* Same bytes on both sides. */
	ma = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vop_ivshmem_client_shm_fd(a), 0);
	mb = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, vop_ivshmem_client_shm_fd(b), 0);
	CHECK(ma != MAP_FAILED && mb != MAP_FAILED);
	memcpy(ma + 4096, "vop-ivshmem", 12);
	CHECK(memcmp(mb + 4096, "vop-ivshmem", 12) == 0);
	mb[SIZE - 1] = 0x5a;
	CHECK_EQ(ma[SIZE - 1], 0x5a);
	/* The memfd is sealed: a peer cannot shrink what the others have mapped. */
	CHECK(ftruncate(vop_ivshmem_client_shm_fd(b), 4096) < 0 && errno == EPERM);

	/* b met a during its handshake; a hears of b's vectors afterwards (events come in order).
	 */
	CHECK_EQ(t_client_wait(b, VOP_IVSHMEM_PEER_VECTOR, ida, VECTORS - 1, 5000), 0);
	CHECK_EQ(t_client_wait(a, VOP_IVSHMEM_PEER_VECTOR, idb, VECTORS - 1, 5000), 0);
	for (unsigned v = 0; v < VECTORS; v++) {
		CHECK(vop_ivshmem_client_peer_eventfd(a, idb, v) >= 0);
		CHECK(vop_ivshmem_client_peer_eventfd(b, ida, v) >= 0);
	}
	CHECK_EQ(vop_ivshmem_client_peers(a, ids, 8), 1);
	CHECK_EQ(ids[0], idb);

	/* Rings both ways on every vector, counted exactly. */
	for (unsigned v = 0; v < VECTORS; v++) {
		CHECK_EQ(t_wait_ring(b, v, 0), 0);
		CHECK_EQ(vop_ivshmem_client_ring(a, idb, v), 0);
		CHECK_EQ(vop_ivshmem_client_ring(a, idb, v), 0);
		CHECK_EQ(t_wait_ring(b, v, 2000), 2);
		CHECK_EQ(vop_ivshmem_client_ring(b, ida, v), 0);
		CHECK_EQ(t_wait_ring(a, v, 2000), 1);
	}
	/* Bad targets are refused, not crashed on. */
	CHECK_EQ(vop_ivshmem_client_ring(a, 4242, 0), -ENOENT);
	CHECK_EQ(vop_ivshmem_client_ring(a, idb, VECTORS), -ENOENT);
	CHECK_EQ(vop_ivshmem_client_ring(a, 70000, 0), -EINVAL);
	CHECK_EQ(vop_ivshmem_client_own_eventfd(a, VECTORS), -EINVAL);

	/* b leaves: a hears it, the server says so, ringing b is refused. */
	munmap(mb, SIZE);
	vop_ivshmem_client_close(b);
	CHECK_EQ(t_client_wait(a, VOP_IVSHMEM_PEER_LEFT, idb, -1, 5000), 0);
	CHECK_EQ(t_server_wait(&s, "disconnect ", 5000), 0);
	CHECK_EQ(vop_ivshmem_client_ring(a, idb, 0), -ENOENT);
	CHECK_EQ(vop_ivshmem_client_peers(a, ids, 8), 0);

	/* A newcomer gets a fresh id (not b's) and meets a. */
	CHECK_EQ(vop_ivshmem_client_open(s.sock, VECTORS, 5000, &c), 0);
	idc = vop_ivshmem_client_id(c);
	CHECK(idc != ida && idc != idb);
	CHECK_EQ(t_client_wait(c, VOP_IVSHMEM_PEER_VECTOR, ida, VECTORS - 1, 5000), 0);
	CHECK_EQ(t_client_wait(a, VOP_IVSHMEM_PEER_VECTOR, idc, VECTORS - 1, 5000), 0);
	CHECK_EQ(vop_ivshmem_client_ring(c, ida, 1), 0);
	CHECK_EQ(t_wait_ring(a, 1, 2000), 1);

	/* Server goes: the client reports it, rings between peers still work. */
	t_server_stop(&s);
	CHECK_EQ(t_client_wait(a, 0xffff, 0, -1, 3000), -ECONNRESET);
	CHECK_EQ(vop_ivshmem_client_ring(a, idc, 2), 0);
	CHECK_EQ(t_wait_ring(c, 2, 2000), 1);
	/* The server removed its socket on SIGTERM. */
	CHECK(access(s.sock, F_OK) < 0 && errno == ENOENT);

	munmap(ma, SIZE);
	vop_ivshmem_client_close(a);
	vop_ivshmem_client_close(c);
	rmdir(s.dir);
	return T_PASS;
}
