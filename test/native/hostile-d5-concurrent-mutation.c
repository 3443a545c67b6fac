/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hostile driver mutates descriptors, the avail ring and avail->idx from
 * another thread while the device walks them (D5, TOCTOU). The device must
 * never crash or touch memory outside the data area: each round ends with
 * the queue either still healthy or broken with some reason, and a reset
 * recovers it. The healthy link keeps moving throughout.
 */
#include "hostile.h"

static int stop_mutator; /* main -> mutator; __atomic, so TSan sees the hand-off */

static void *mutator(void *arg)
{
	struct hostile *h = arg;
	uint64_t r = 0x12345678abcdefull;

	while (!__atomic_load_n(&stop_mutator, __ATOMIC_RELAXED)) {
		unsigned i;

		r ^= r << 13, r ^= r >> 7, r ^= r << 17;
		i = (unsigned)(r % H_QSIZE);
		switch ((r >> 8) % 6) {
		case 0:
			__atomic_store_n(&h->desc[i].len, (uint32_t)(r >> 16) & 0xffff, __ATOMIC_RELAXED);
			break;
		case 1:
			__atomic_store_n(&h->desc[i].flags, (uint16_t)((r >> 20) & 7), __ATOMIC_RELAXED);
			break;
		case 2:
			__atomic_store_n(&h->desc[i].next, (uint16_t)((r >> 24) % 20), __ATOMIC_RELAXED);
			break;
		case 3:
			__atomic_store_n(&h->desc[i].addr, h->pool_peer + ((r >> 28) % 90000),
					 __ATOMIC_RELAXED);
			break;
		case 4:
			__atomic_store_n(&h->avail->ring[i], (uint16_t)((r >> 32) % 18), __ATOMIC_RELAXED);
			break;
		default:
			__atomic_add_fetch(&h->avail->idx, 1, __ATOMIC_RELEASE);
			vop_window_notify_peer(h->w0);
			break;
		}
	}
	return NULL;
}

int main(void)
{
	struct hostile h;
	pthread_t th;
	unsigned round;
	uint64_t before;
	struct vop_dev_entry *e;
	uint32_t req = 1;

	hostile_open_device(&h, (1ull << VOP_F_EVENT_IDX) | (1ull << VOP_F_INDIRECT_DESC));
	e = h.info.entry;
	for (round = 0; round < 20; round++) {
		__atomic_store_n(&stop_mutator, 0, __ATOMIC_RELAXED);
		CHECK_EQ(pthread_create(&th, NULL, mutator, &h), 0);
		t_sleep_ms(50);
		__atomic_store_n(&stop_mutator, 1, __ATOMIC_RELAXED);
		pthread_join(th, NULL);
		/* Reset the device (fake driver handshake) and go again. */
		req++;
		__atomic_store_n(&e->sides[0].status, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&e->sides[0].reset, req, __ATOMIC_RELEASE);
		vop_window_notify_peer(h.w0);
		CHECK(T_WAIT_UNTIL(__atomic_load_n(&e->sides[1].reset, __ATOMIC_ACQUIRE) == req, 5000));
		memset(h.avail, 0, 4 + 2 * H_QSIZE);
		__atomic_store_n(&e->sides[0].status, VOP_STATUS_DRIVER_OK | VOP_STATUS_FEATURES_OK,
				 __ATOMIC_RELEASE);
		vop_window_notify_peer(h.w0);
	}
	fprintf(stderr, "rounds survived: %u\n", round);
	before = t_rx(h.good.l1, 1);
	CHECK(T_WAIT_UNTIL(t_rx(h.good.l1, 1) > before + 1000, 5000));
	CHECK(!t_evlog_has(&h.good.ev1, VOP_EV_QUEUE_BROKEN, -1, NULL));
	hostile_close(&h);
	return T_PASS;
}
