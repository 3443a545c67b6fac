/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transport of a window handle (window_transport.c): the `pci` option
 * of the window calls, opening it, and what windowInfo says about it.
 */
#ifndef VOP_BINDING_WINDOW_TRANSPORT_H
#define VOP_BINDING_WINDOW_TRANSPORT_H

#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>

#include "vop/window.h"
#include "vop/xport.h"

/* The `pci` option: a pci-bar window (on: false for an shm window). */
struct vop_b_pci {
	bool on;
	bool ivshmem;      /* a peer of the ivshmem server at socket; else a BAR */
	bool replace;      /* creator: lay out a new window over one that validates */
	bool wc;
	char socket[108];
	char bar_path[256];
	char regs_path[256];
	char bar_root[256]; /* "": bar_path opened as given; else beneath this root */
	char regs_root[256];
	char vfio_bdf[32];
	int32_t peer_id;   /* -1: the one other peer */
	uint64_t offset, size;
	uint32_t bar, vector, vectors, doorbell, poll_max_us;
};

/* Read o.pci (null: p->on = false). False with a pending exception naming the property. */
bool vop_b_pci_parse(napi_env env, napi_value o, struct vop_b_pci *p);

/* Open the transport p describes: 0 and *out, or -errno. */
int vop_b_pci_open(const struct vop_b_pci *p, struct vop_xport **out);

bool vop_b_xport_is_pci(const struct vop_xport *x);

/* True when x's memory holds a window layout that validates (a window from an earlier life). */
bool vop_b_window_holds_layout(const struct vop_xport *x);

/* Set transport, mapping, ownId, peerId, signals, interrupts, polls, createNonce on obj. */
bool vop_b_transport_info(napi_env env, napi_value obj, const struct vop_window *w);

/* The creator deletes a pci-bar window: clear its magic (the memory itself stays). */
void vop_b_window_retire(struct vop_window *w);

#endif /* VOP_BINDING_WINDOW_TRANSPORT_H */
