/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration of vop-card (native/tools/vop-card.c, docs/card.md): the
 * static card-side binary that runs the data plane and the device backends
 * on a pci-bar window with no agent. It mirrors the device part of a
 * LinkSpec and this side's pci-bar access, as `key=value` lines:
 *
 *   # comment, blank lines ignored; no spaces around '='
 *   window.access=vfio|bar|ivshmem|stream  how the window is reached (stream: a private window
 *                                     carried over a socket, docs/stream-protocol.md)
 *   window.path=...                   vfio: the BDF; bar: resourceN; ivshmem: server socket;
 *                                     stream: tcp:IPV4:PORT, unix:PATH or vsock:CID:PORT (device
 *                                     roles listen there, driver roles dial it)
 *   stream.secret_file=PATH           stream: the link secret (a 0600 file; HMAC-SHA256)
 *   stream.allow_plaintext=0|1        stream: no authentication at all (explicit)
 *   stream.tls_ca= stream.tls_cert= stream.tls_key= stream.tls_peer=NAME
 *                                     stream: TLS 1.3 with mutual certificates; the peer's must
 *                                     carry NAME as a DNS subjectAltName
 *   window.doorbell_path=...          bar: resource0 (the doorbell registers), optional
 *   window.bar=2                      vfio: the window's region index
 *   window.offset=0  window.size=0    bytes (multiples of 4096; size 0: the rest)
 *   window.side=creator|attacher      who lays the window out (the spec's window_creator)
 *   window.peer_id=-1                 ivshmem id we ring (-1: the one other peer / none)
 *   window.vector=0  window.vectors=0
 *   window.doorbell=interrupt|poll
 *   window.poll_max_us=0
 *   window.write_combining=0|1        bar: a resourceN_wc file
 *   device.NAME.kind=console|blk|net  NAME: the LinkSpec device name (its dev_id is the
 *                                     FNV-1a hash the agent uses)
 *   device.NAME.role=device|driver    the role this card plays for it
 *   device.NAME.queue_size=0  device.NAME.event_idx=1
 *   console: pty=LINK (a symlink to the pty, "" = none), log=FILE, unix=SOCKET
 *   blk:     file=PATH ro=0|1 direct=0|1 serial=S (device); nbd_unix=SOCKET nbd_name=N (driver);
 *            nbd_device=/dev/nbdN (driver: the disk as a kernel block device)
 *   net:     tap=NAME mtu=N mac=aa:bb:cc:dd:ee:ff offloads=0|1
 *
 * Strict: an unknown key, a repeated key, a bad value, a device without kind
 * or role, a value that does not fit is an error naming the line and key.
 * Every string is copied into the struct (bounded); nothing is allocated.
 */
#ifndef VOP_CARD_CONFIG_H
#define VOP_CARD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vop/dev_backend.h"

#define VOP_CARD_MAX_DEVICES 8u
#define VOP_CARD_NAME_MAX 63u
#define VOP_CARD_STR_MAX 255u
#define VOP_CARD_TEXT_MAX (64u * 1024u)

enum vop_card_access { VOP_CARD_VFIO = 1, VOP_CARD_BAR = 2, VOP_CARD_IVSHMEM = 3, VOP_CARD_STREAM = 4 };

/* window.access=stream: how the connection is authenticated (at least one, or allow_plain). */
struct vop_card_stream {
	char secret_file[VOP_CARD_STR_MAX + 1];
	bool allow_plain;
	char tls_ca[VOP_CARD_STR_MAX + 1], tls_cert[VOP_CARD_STR_MAX + 1], tls_key[VOP_CARD_STR_MAX + 1];
	char tls_peer[VOP_CARD_STR_MAX + 1];
};

struct vop_card_window {
	enum vop_card_access access;
	char path[VOP_CARD_STR_MAX + 1];
	char doorbell_path[VOP_CARD_STR_MAX + 1];
	uint32_t bar;
	uint64_t offset, size;
	bool creator;
	int32_t peer_id;
	uint32_t vector, vectors;
	uint32_t doorbell; /* enum vop_pci_doorbell */
	uint32_t poll_max_us;
	bool wc;
};

struct vop_card_device {
	char name[VOP_CARD_NAME_MAX + 1];
	struct vop_devback_config cfg; /* its strings point into s[] below */
	bool has_kind, has_role;
	char nbd_device[VOP_CARD_STR_MAX + 1]; /* blk driver: /dev/nbdN, "" = none */
	char s[6][VOP_CARD_STR_MAX + 1];       /* storage of the backend's strings */
	unsigned ns;
};

struct vop_card_config {
	struct vop_card_window window;
	struct vop_card_stream stream;
	struct vop_card_device dev[VOP_CARD_MAX_DEVICES];
	unsigned ndev;
};

/*
 * vop_card_config_parse - parse len bytes of text (not NUL-terminated needed)
 * into *out. Returns 0, or -EINVAL with a message in err ("line 3:
 * window.offset: must be a multiple of 4096"), -E2BIG for text over
 * VOP_CARD_TEXT_MAX or too many devices.
 */
int vop_card_config_parse(const char *text, size_t len, struct vop_card_config *out, char *err, size_t errlen);

/* The device id of a LinkSpec device name: FNV-1a 32 of its bytes, 0 mapped to 1 (agent: devIdOf). */
uint32_t vop_card_dev_id(const char *name);

#endif /* VOP_CARD_CONFIG_H */
