/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A device-side chain built from fuzz input for the request parsers: up to
 * 8 readable and 8 writable segments of input-chosen lengths, each its own
 * heap block of exactly that size (ASan sees any byte read past a segment),
 * filled with input bytes.
 */
#ifndef VOP_FUZZ_CHAIN_H
#define VOP_FUZZ_CHAIN_H

#include "fuzz-common.h"

#define FZ_CHAIN_SEGS 16u

struct fz_chain {
	struct vop_chain c;
	uint8_t *seg[FZ_CHAIN_SEGS];
};

/* Segment layout from r: n_out, n_in (0..8 each), lengths (0..4 KiB, 0 ok here), then contents. */
static inline void fz_chain_build(struct fz_chain *f, struct fz_reader *r)
{
	uint8_t shape = fz_u8(r);
	unsigned nout = shape & 7, nin = (shape >> 3) & 7, i, k;

	memset(f, 0, sizeof(*f));
	f->c.head = 0;
	f->c.n_out = (uint16_t)(nout + ((shape & 0x40) ? 1 : 0));
	f->c.n_in = (uint16_t)(nin + ((shape & 0x80) ? 1 : 0));
	for (i = 0; i < (unsigned)f->c.n_out + f->c.n_in; i++) {
		uint16_t len = fz_u16(r) % 4097;

		/* Lengths near the interesting sizes (header 12/16 B, a sector) now and then. */
		if (len > 4096 - 64)
			len = (uint16_t)(len % 64 + (i == 0 ? 12 : 0));
		f->seg[i] = malloc(len ? len : 1);
		FZ_ASSERT(f->seg[i] != NULL);
		for (k = 0; k < len; k++)
			f->seg[i][k] = fz_u8(r);
		f->c.iov[i].base = f->seg[i];
		f->c.iov[i].len = len;
		if (i < f->c.n_out)
			f->c.out_bytes += len;
		else
			f->c.in_bytes += len;
	}
}

static inline void fz_chain_free(struct fz_chain *f)
{
	unsigned i;

	for (i = 0; i < FZ_CHAIN_SEGS; i++)
		free(f->seg[i]);
}

/* True if [p, p + len) lies inside one segment of the chain (readable or writable as asked). */
static inline int fz_chain_holds(const struct fz_chain *f, int writable, const void *p, uint64_t len)
{
	unsigned i = writable ? f->c.n_out : 0, end = writable ? (unsigned)f->c.n_out + f->c.n_in : f->c.n_out;
	const uint8_t *b = p;

	for (; i < end; i++) {
		const uint8_t *s = f->c.iov[i].base;

		if (b >= s && b <= s + f->c.iov[i].len && len <= (uint64_t)(s + f->c.iov[i].len - b))
			return 1;
	}
	return 0;
}

#endif /* VOP_FUZZ_CHAIN_H */
