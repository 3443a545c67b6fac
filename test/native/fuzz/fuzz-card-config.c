/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer target: vop-card's configuration parser (vop_card_config_parse)
 * on arbitrary text. Invariants: it never reads past the input or writes
 * past its struct (ASan); an accepted config has a window access and path,
 * 1..VOP_CARD_MAX_DEVICES devices each with a kind, a role and a nonzero id
 * unique among them, every string NUL-terminated inside its buffer, and the
 * error message is empty; a refused one has a message.
 */
#include <string.h>

#include "fuzz-common.h"
#include "vop/card_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void bounded(const char *s, size_t cap)
{
	if (!memchr(s, 0, cap))
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vop_card_config cfg;
	char err[256];
	unsigned i, j;
	int rc = vop_card_config_parse((const char *)data, size, &cfg, err, sizeof(err));

	bounded(err, sizeof(err));
	if (rc != 0) {
		if (rc != -EINVAL && rc != -E2BIG)
			__builtin_trap();
		if (!err[0])
			__builtin_trap();
		return 0;
	}
	if (err[0] || !cfg.window.access || !cfg.window.path[0] || cfg.ndev == 0 || cfg.ndev > VOP_CARD_MAX_DEVICES)
		__builtin_trap();
	bounded(cfg.window.path, sizeof(cfg.window.path));
	bounded(cfg.window.doorbell_path, sizeof(cfg.window.doorbell_path));
	for (i = 0; i < cfg.ndev; i++) {
		const struct vop_card_device *d = &cfg.dev[i];

		bounded(d->name, sizeof(d->name));
		bounded(d->nbd_device, sizeof(d->nbd_device));
		for (j = 0; j < d->ns; j++)
			bounded(d->s[j], sizeof(d->s[j]));
		if (!d->has_kind || !d->has_role || d->cfg.dev_id == 0 || d->cfg.dev_id != vop_card_dev_id(d->name))
			__builtin_trap();
		for (j = 0; j < i; j++)
			if (cfg.dev[j].cfg.dev_id == d->cfg.dev_id)
				__builtin_trap();
	}
	return 0;
}
