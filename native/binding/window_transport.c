/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transport of a window handle, from JavaScript: the `pci` option of
 * windowCreate/windowAttach/windowReattach (null: the shm window at
 * `path`), opening that pci-bar transport (vop/xport_pci.h), and what
 * windowInfo reports about it. Conversion and range checks only; the
 * transport itself is native/core/xport_pci.c.
 */
#include <errno.h>
#include <string.h>

#include "napi_util.h"
#include "window_transport.h"
#include "vop/ivshmem.h"
#include "vop/layout.h"
#include "win_access.h"
#include "vop/xport_pci.h"

static const char *const MODES[] = { "ivshmem", "bar" };
static const char *const DOORBELLS[] = { "interrupt", "poll" };

bool vop_b_pci_parse(napi_env env, napi_value o, struct vop_b_pci *p)
{
	napi_value v;
	napi_valuetype t;
	bool present = false;
	unsigned mode, db;
	int32_t peer;

	memset(p, 0, sizeof(*p));
	/* Absent or null: an shm window. */
	if (napi_get_named_property(env, o, "pci", &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok)
		return false;
	if (t == napi_undefined || t == napi_null)
		return true;
	if (!vop_get_obj(env, o, "window", "pci", true, &v))
		return false;
	if (!v)
		return true;
	p->on = true;
	if (!vop_get_enum(env, v, "window.pci", "mode", MODES, 2, &mode) ||
	    !vop_get_enum(env, v, "window.pci", "doorbell", DOORBELLS, 2, &db) ||
	    !vop_get_i32(env, v, "window.pci", "peerId", -1, VOP_IVSHMEM_MAX_ID, &peer) ||
	    !vop_get_u64(env, v, "window.pci", "offset", 1ull << 40, &p->offset) ||
	    !vop_get_u64(env, v, "window.pci", "size", 1ull << 40, &p->size) ||
	    !vop_get_u32(env, v, "window.pci", "vector", 0, VOP_IVSHMEM_MAX_VECTORS - 1, &p->vector) ||
	    !vop_get_u32(env, v, "window.pci", "vectors", 0, VOP_IVSHMEM_MAX_VECTORS, &p->vectors) ||
	    !vop_get_u32(env, v, "window.pci", "pollMaxUs", 0, 1000000, &p->poll_max_us) ||
	    !vop_get_bool(env, v, "window.pci", "replace", &p->replace))
		return false;
	p->ivshmem = mode == 0;
	p->doorbell = db == 0 ? VOP_PCI_DB_EVENT : VOP_PCI_DB_POLL;
	p->peer_id = peer;
	if (p->ivshmem)
		return vop_get_str(env, v, "window.pci", "socket", false, p->socket, sizeof(p->socket), NULL);
	if (!vop_get_str(env, v, "window.pci", "barPath", true, p->bar_path, sizeof(p->bar_path), &present) ||
	    !vop_get_str(env, v, "window.pci", "vfioBdf", true, p->vfio_bdf, sizeof(p->vfio_bdf), NULL) ||
	    !vop_get_str(env, v, "window.pci", "regsPath", true, p->regs_path, sizeof(p->regs_path), NULL) ||
	    !vop_get_str(env, v, "window.pci", "barRoot", true, p->bar_root, sizeof(p->bar_root), NULL) ||
	    !vop_get_str(env, v, "window.pci", "regsRoot", true, p->regs_root, sizeof(p->regs_root), NULL) ||
	    !vop_get_u32(env, v, "window.pci", "bar", 0, 5, &p->bar) ||
	    !vop_get_bool(env, v, "window.pci", "wc", &p->wc))
		return false;
	if (!p->bar_path[0] == !p->vfio_bdf[0]) {
		vop_throw_prop_range(env, "window.pci", "barPath", "set exactly one of barPath and vfioBdf");
		return false;
	}
	return true;
}

int vop_b_pci_open(const struct vop_b_pci *p, struct vop_xport **out)
{
	if (p->ivshmem) {
		struct vop_pci_ivshmem_config c = {
			.socket = p->socket,
			.peer_id = p->peer_id,
			.offset = p->offset,
			.size = p->size,
			.vector = p->vector,
			.vectors = p->vectors,
			.doorbell = p->doorbell,
			.poll_max_us = p->poll_max_us,
			.timeout_ms = 3000,
		};

		return vop_pci_ivshmem_open(&c, out);
	} else {
		struct vop_pci_bar_config c = {
			.bar_path = p->bar_path[0] ? p->bar_path : NULL,
			.vfio_bdf = p->vfio_bdf[0] ? p->vfio_bdf : NULL,
			.bar = p->bar,
			.wc = p->wc,
			.offset = p->offset,
			.size = p->size,
			.regs_path = p->regs_path[0] ? p->regs_path : NULL,
			.bar_root = p->bar_root[0] ? p->bar_root : NULL,
			.regs_root = p->regs_root[0] ? p->regs_root : NULL,
			.peer_id = p->peer_id,
			.vector = p->vector,
			.doorbell = p->doorbell,
			.poll_max_us = p->poll_max_us,
		};

		return vop_pci_bar_open(&c, out);
	}
}

bool vop_b_xport_is_pci(const struct vop_xport *x)
{
	return x && !strcmp(x->ops->name, "pci-bar");
}

bool vop_b_window_holds_layout(const struct vop_xport *x)
{
	return vop_window_layout_check(x->base, x->size, NULL, NULL) == 0;
}

static const char *const MAPPINGS[] = { [VOP_MAP_WB] = "wb", [VOP_MAP_UC] = "uc", [VOP_MAP_WC] = "wc" };

bool vop_b_transport_info(napi_env env, napi_value obj, const struct vop_window *w)
{
	const struct vop_xport *x = w->x;
	const struct vop_win_hdr *h = (const struct vop_win_hdr *)(const void *)x->base;
	struct vop_pci_stats st = { 0, 0, 0 };
	bool pci = vop_b_xport_is_pci(x);

	if (pci)
		vop_pci_stats(x, &st);
	/* The nonce of the window now mapped: the creator lays out a new one when it replaces it. */
	return vop_set_str(env, obj, "transport", x->ops->name) &&
	       vop_set_str(env, obj, "mapping", x->map_kind <= VOP_MAP_WC ? MAPPINGS[x->map_kind] : "wb") &&
	       vop_set_i32(env, obj, "ownId", pci ? vop_pci_own_id(x) : -1) &&
	       vop_set_i32(env, obj, "peerId", pci ? vop_pci_peer_id(x) : -1) &&
	       vop_set_u64(env, obj, "signals", st.signals) && vop_set_u64(env, obj, "interrupts", st.interrupts) &&
	       vop_set_u64(env, obj, "polls", st.polls) &&
	       vop_set_u64(env, obj, "createNonce",
			   vop_load_acquire_u32(&h->magic) == VOP_WIN_MAGIC ? vop_read_once_u64(&h->create_nonce) : 0);
}

void vop_b_window_retire(struct vop_window *w)
{
	/* Release: the side and table stores before it; an attacher then finds no layout (EAGAIN). */
	vop_store_release_u32(&w->hdr->magic, 0);
}
