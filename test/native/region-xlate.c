/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Region table: overflow-safe translation, permissions, overlap refusal;
 * the hinted lookup of the descriptor path gives the scan's answer for any
 * hint (stale, out of range, another region) and makes no check weaker.
 */
#include "helpers.h"

int main(void)
{
	static uint8_t a[4096], b[4096];
	struct vop_region_table t;

	vop_region_table_init(&t);
	CHECK_EQ(vop_region_add(&t, 0x1000, sizeof(a), a, VOP_PROT_READ | VOP_PROT_WRITE), 0);
	CHECK_EQ(vop_region_add(&t, 0x10000, sizeof(b), b, VOP_PROT_READ), 0);
	CHECK_EQ(vop_region_add(&t, 0x1800, 16, b, VOP_PROT_READ), -EINVAL);   /* overlap */
	CHECK_EQ(vop_region_add(&t, 0x0800, 0x1000, b, VOP_PROT_READ), -EINVAL); /* overlap */
	CHECK_EQ(vop_region_add(&t, UINT64_MAX - 10, 100, b, VOP_PROT_READ), -EINVAL); /* wraps */
	CHECK_EQ(vop_region_add(&t, 0x90000, 0, b, VOP_PROT_READ), -EINVAL);
	CHECK_EQ(vop_region_add(&t, 0x90000, 16, b, 0), -EINVAL);
	CHECK(vop_region_xlate(&t, 0x1000, 4096, VOP_PROT_READ) == a);
	CHECK(vop_region_xlate(&t, 0x1fff, 1, VOP_PROT_WRITE) == a + 4095);
	CHECK(vop_region_xlate(&t, 0x1fff, 2, VOP_PROT_READ) == NULL);  /* runs past the end */
	CHECK(vop_region_xlate(&t, 0x0fff, 2, VOP_PROT_READ) == NULL);  /* starts before */
	CHECK(vop_region_xlate(&t, 0x1000, 0, VOP_PROT_READ) == NULL);  /* zero length */
	CHECK(vop_region_xlate(&t, 0x1000, UINT64_MAX, VOP_PROT_READ) == NULL);
	CHECK(vop_region_xlate(&t, UINT64_MAX, 2, VOP_PROT_READ) == NULL); /* addr + len wraps */
	CHECK(vop_region_xlate(&t, 0x10000, 16, VOP_PROT_WRITE) == NULL); /* read-only region */
	CHECK(vop_region_xlate(&t, 0x10000, 16, VOP_PROT_READ) == b);
	CHECK(vop_region_xlate(&t, 0x2000, 1, VOP_PROT_READ) == NULL);  /* gap */

	/* hinted: every case above with every hint, including ones past count */
	{
		static const struct {
			uint64_t addr, len;
			uint32_t need;
		} cases[] = {
			{ 0x1000, 4096, VOP_PROT_READ },  { 0x1fff, 1, VOP_PROT_WRITE },
			{ 0x1fff, 2, VOP_PROT_READ },     { 0x0fff, 2, VOP_PROT_READ },
			{ 0x1000, 0, VOP_PROT_READ },     { 0x1000, UINT64_MAX, VOP_PROT_READ },
			{ UINT64_MAX, 2, VOP_PROT_READ }, { 0x10000, 16, VOP_PROT_WRITE },
			{ 0x10000, 16, VOP_PROT_READ },   { 0x2000, 1, VOP_PROT_READ },
			{ 0x10fff, 2, VOP_PROT_READ },    { 0x10000, 4097, VOP_PROT_READ },
		};
		uint32_t hints[] = { 0, 1, 2, VOP_MAX_REGIONS, UINT32_MAX }, h, k, i;

		for (k = 0; k < sizeof(cases) / sizeof(cases[0]); k++)
			for (h = 0; h < sizeof(hints) / sizeof(hints[0]); h++) {
				void *want = vop_region_xlate(&t, cases[k].addr, cases[k].len, cases[k].need);

				i = hints[h];
				CHECK(vop_region_xlate_hint(&t, cases[k].addr, cases[k].len, cases[k].need,
							    &i) == want);
				if (want) /* a hit leaves the hint on the region that holds the range */
					CHECK_EQ(i, (uintptr_t)want - (uintptr_t)b < sizeof(b) ? 1u : 0u);
				else /* a miss leaves it as it was */
					CHECK_EQ(i, hints[h]);
			}
	}
	return T_PASS;
}
