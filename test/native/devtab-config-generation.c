/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Config space under the generation counter: a reader never returns a
 * torn config while the device side rewrites it from another thread, and
 * each completed write advances the generation by 2. Layout 2.0: the table
 * owner publishes the config space with the entry (config_init, generation
 * 0); the device side writes its live copy into its own block of the entry
 * only, never into config_init, and readers switch to it once written.
 */
#include "helpers.h"

static struct t_pair p;
static struct vop_dev_info dev_info;
static int stop_writer; /* main -> writer; __atomic, so TSan sees the hand-off */

static void *writer(void *arg)
{
	uint8_t buf[64];
	unsigned v = 0;

	(void)arg;
	while (!__atomic_load_n(&stop_writer, __ATOMIC_RELAXED)) {
		v++;
		memset(buf, (int)(v & 0xff), sizeof(buf));
		CHECK_EQ(vop_devtab_config_write(p.w1, &dev_info, 0, buf, sizeof(buf)), 0);
	}
	return NULL;
}

int main(void)
{
	struct vop_dev_spec spec;
	struct vop_dev_info rinfo;
	uint8_t cfg[64], out[64];
	uint32_t gen = 0, gen2 = 0;
	pthread_t th;
	unsigned i, k, ok = 0;

	t_pair_open(&p, "config", 4u << 20, 20000);
	vop_pipe_spec(&spec, 6, 1, 16, 64, 0);
	memset(cfg, 0xab, sizeof(cfg));
	spec.config = cfg;
	spec.config_len = sizeof(cfg);
	CHECK(vop_devtab_publish(p.w0, &spec) >= 0);
	CHECK_EQ(vop_devtab_find(p.w1, 6, &dev_info), 0);
	CHECK_EQ(vop_devtab_find(p.w0, 6, &rinfo), 0);
	CHECK_EQ(vop_devtab_config_read(p.w0, &rinfo, out, 64, &gen), 0);
	CHECK_EQ(gen, 0);
	CHECK_EQ(out[0], 0xab); /* as published */
	/* The owner (side 0) wrote neither side's block. */
	CHECK_EQ(rinfo.entry->sides[0].config[0], 0);
	CHECK_EQ(rinfo.entry->sides[1].config[0], 0);
	CHECK_EQ(vop_devtab_config_read(p.w0, &rinfo, out, 65, &gen), -EINVAL);
	CHECK_EQ(vop_devtab_config_write(p.w1, &dev_info, 60, cfg, 5), -EINVAL);
	CHECK_EQ(vop_devtab_config_write(p.w1, &dev_info, 0, cfg, 64), 0);
	CHECK_EQ(vop_devtab_config_read(p.w0, &rinfo, out, 64, &gen), 0);
	CHECK_EQ(gen, 2);
	/* The device side (1) wrote its own block; the published copy is untouched. */
	memset(cfg, 0xcd, 8);
	CHECK_EQ(vop_devtab_config_write(p.w1, &dev_info, 0, cfg, 8), 0);
	CHECK_EQ(vop_devtab_config_read(p.w0, &rinfo, out, 64, &gen), 0);
	CHECK_EQ(gen, 4);
	CHECK_EQ(out[0], 0xcd);
	CHECK_EQ(out[8], 0xab);
	CHECK_EQ(rinfo.entry->config_init[0], 0xab);
	CHECK_EQ(rinfo.entry->sides[1].config[0], 0xcd);
	CHECK_EQ(rinfo.entry->sides[0].config[0], 0);
	memset(cfg, 0x11, sizeof(cfg)); /* uniform again before the torn-read race below */
	CHECK_EQ(vop_devtab_config_write(p.w1, &dev_info, 0, cfg, 64), 0);
	CHECK_EQ(pthread_create(&th, NULL, writer, NULL), 0);
	for (i = 0; i < 200000; i++) {
		if (vop_devtab_config_read(p.w0, &rinfo, out, 64, &gen2) != 0)
			continue;
		for (k = 1; k < 64; k++)
			CHECK_EQ(out[k], out[0]); /* never torn */
		CHECK(gen2 % 2 == 0);
		ok++;
	}
	__atomic_store_n(&stop_writer, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	CHECK(ok > 0);
	t_pair_close(&p);
	return T_PASS;
}
