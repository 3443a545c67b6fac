/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A side that re-attaches after a restart trusts nothing it saw before:
 * the header is validated afresh against the new mapping (a peer that
 * rewrote it meanwhile is refused with -EPROTO), and a restarted creator
 * continues its allocators only after entries that still validate (an
 * entry rewritten to point past the areas is refused, not followed).
 */
#include <fcntl.h>
#include <sys/mman.h>

#include "helpers.h"

#define WIN (512u * 1024u)

/* The whole window file mapped by the "peer" (this test). */
static uint8_t *peer_map(const char *path)
{
	int fd = open(path, O_RDWR);
	void *p;

	CHECK(fd >= 0);
	p = mmap(NULL, WIN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	CHECK(p != MAP_FAILED);
	return p;
}

static int attach_side(const char *path, unsigned side, struct vop_window **w)
{
	struct vop_xport *x;
	int rc;

	CHECK_EQ(vop_shm_open(path, &x), 0);
	rc = vop_window_attach_side(x, side, w);
	if (rc)
		vop_xport_destroy(x);
	return rc;
}

int main(void)
{
	struct vop_window *w0, *w1;
	struct vop_xport *x0;
	struct vop_dev_spec spec;
	struct vop_dev_info info;
	struct vop_win_hdr *h, saved;
	struct vop_dev_entry *e;
	char path[256];
	uint8_t *m;
	uint64_t data_end;
	int slot;

	t_path(path, sizeof(path), "reattach");
	CHECK_EQ(vop_shm_create(path, WIN, &x0), 0);
	CHECK_EQ(vop_window_create(x0, NULL, &w0), 0);
	vop_pipe_spec(&spec, 1, 1, 64, 256, 0);
	slot = vop_devtab_publish(w0, &spec);
	CHECK(slot >= 0);
	m = peer_map(path);
	h = (struct vop_win_hdr *)(void *)m;
	saved = *h;
	data_end = h->data_off + h->data_size;
	e = (struct vop_dev_entry *)(void *)(m + VOP_DEVTAB_OFF + sizeof(struct vop_devtab_hdr) +
					     (uint64_t)slot * sizeof(struct vop_dev_entry));

	/* The attacher comes and goes; meanwhile the creator side rewrites the header. */
	CHECK_EQ(attach_side(path, 1, &w1), 0);
	vop_window_close(w1);
	h->data_size += 1; /* the data area now ends one byte past the window */
	CHECK_EQ(attach_side(path, 1, &w1), -EPROTO);
	h->data_size = saved.data_size;
	h->ring_size = WIN; /* rings reaching ~2x past the mapping (the old bug) */
	CHECK_EQ(attach_side(path, 1, &w1), -EPROTO);
	*h = saved;
	CHECK_EQ(attach_side(path, 1, &w1), 0);
	vop_window_close(w1);

	/* The creator restarts; meanwhile the attacher side rewrites header and entry. */
	w0->x->unlink_on_destroy = 0;
	vop_window_close(w0);
	h->data_off += 4096; /* data area now past the end */
	CHECK_EQ(attach_side(path, 0, &w0), -EPROTO);
	*h = saved;
	e->queues[0].pool_off = data_end; /* a pool just past the data area */
	e->queues[1].pool_size = UINT64_MAX - e->queues[1].pool_off + 2; /* one that wraps */
	CHECK_EQ(attach_side(path, 0, &w0), 0);
	/* The bogus entry is refused when looked up, and the allocators did not follow it. */
	CHECK_EQ(vop_devtab_find(w0, 1, &info), -EPROTO);
	CHECK(atomic_load(&w0->entry_problem) != NULL);
	CHECK(w0->data_next <= data_end);
	CHECK(w0->ring_next <= w0->ring_off + w0->ring_size);
	vop_pipe_spec(&spec, 2, 1, 64, 256, 0);
	CHECK(vop_devtab_publish(w0, &spec) >= 0);
	CHECK_EQ(vop_devtab_find(w0, 2, &info), 0);

	munmap(m, WIN);
	vop_window_close(w0);
	unlink(path); /* a re-attached creator leaves the file (vop_shm_open does not own it) */
	return T_PASS;
}
