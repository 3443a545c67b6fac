/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Shared pieces of the virtqueue fuzz targets: a byte reader over the
 * input, ring memory and a data region the peer may name, and a
 * concurrently running "peer" thread that replays part of the input as
 * writes to shared ring memory while the code under test walks it.
 */
#ifndef VOP_FUZZ_COMMON_H
#define VOP_FUZZ_COMMON_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vop/vq.h"

#define FZ_MAXQ 16u
#define FZ_DATA_PEER 0x40000000ull
#define FZ_DATA_SIZE (FZ_MAXQ * VOP_INDIRECT_MAX * 16 + 65536)

struct fz_reader {
	const uint8_t *p;
	size_t n;
};

static inline uint8_t fz_u8(struct fz_reader *r)
{
	uint8_t v = 0;

	if (r->n) {
		v = *r->p++;
		r->n--;
	}
	return v;
}

static inline uint16_t fz_u16(struct fz_reader *r)
{
	return (uint16_t)(fz_u8(r) | (fz_u8(r) << 8));
}

static inline uint64_t fz_u64(struct fz_reader *r)
{
	uint64_t v = 0;
	unsigned i;

	for (i = 0; i < 8; i++)
		v |= (uint64_t)fz_u8(r) << (8 * i);
	return v;
}

/* Fail loudly: a broken invariant of OUR code (libFuzzer records the input). */
#define FZ_ASSERT(c)                                                                    \
	do {                                                                            \
		if (!(c)) {                                                             \
			fprintf(stderr, "fuzz invariant failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); \
			abort();                                                        \
		}                                                                       \
	} while (0)

/* Shared memory of one queue plus the data region. */
struct fz_mem {
	_Alignas(64) uint8_t desc[16 * FZ_MAXQ];
	_Alignas(64) uint8_t avail[6 + 2 * FZ_MAXQ];
	_Alignas(64) uint8_t used[6 + 8 * FZ_MAXQ];
	_Alignas(64) uint8_t data[FZ_DATA_SIZE];
};

/* Peer thread: replays ops on shared memory until told to stop. */
struct fz_peer {
	pthread_t th;
	volatile int stop;
	const uint8_t *script;
	size_t len;
	void (*apply)(struct fz_peer *p, struct fz_reader *r);
	struct fz_mem *m;
	uint16_t num;
};

static inline void *fz_peer_main(void *arg)
{
	struct fz_peer *p = arg;
	unsigned rounds = 0;

	while (!p->stop && rounds++ < 64) {
		struct fz_reader r = { p->script, p->len };

		while (r.n && !p->stop)
			p->apply(p, &r);
	}
	return NULL;
}

#endif /* VOP_FUZZ_COMMON_H */
