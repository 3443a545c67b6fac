/* SPDX-License-Identifier: Apache-2.0 */
/*
 * virtio-console across a link (VIRTIO 1.2 section 5.3), single port (no
 * MULTIPORT), both roles. Queues: 0 = receiveq (device -> driver),
 * 1 = transmitq (driver -> device).
 *
 * Device role (the host side of a card's serial console): the console's
 * output (driver transmitq) goes to
 *   - a log file, always, with size-based rotation (FILE -> FILE.1 ->
 *     ... FILE.n when it would pass log_max), so boot messages are kept when
 *     nobody attached;
 *   - a pty master (optional), a Unix socket (optional, any number of
 *     readers, every connected client gets every byte) and the JS stream
 *     (vop_console_read_out(), for console attach over gRPC).
 * Input to the console comes from the pty, the Unix socket clients or
 * vop_console_write_in(); the binding enforces one writer at a time.
 *
 * Driver role (the card side): a pty whose slave a getty or screen opens.
 *
 * Flow control: nothing ever blocks the loop. Output to a slow or absent
 * reader (pty nobody reads, a stuck socket client, the JS ring) is
 * DROPPED for that reader once its buffer is full and counted in dropped;
 * the log file gets every byte. Input is HELD: while the peer posted no
 * buffers we stop reading the input source, so the kernel pty/socket
 * buffer applies back-pressure to the writer. Zero-length buffers from the
 * peer are completed with length 0 and counted (zero_len).
 */
#ifndef VOP_DEV_CONSOLE_H
#define VOP_DEV_CONSOLE_H

#include <stdbool.h>
#include <stdint.h>

#include "vop/dev_common.h"

struct vop_console_config {
	bool want_pty;          /* open a pty */
	const char *pty_link;   /* symlink to the pty slave, or NULL */
	const char *log_path;   /* device role: output log, or NULL */
	uint64_t log_max;       /* rotate when the log would pass this (0 = 1 MiB) */
	unsigned log_files;     /* rotated files kept, FILE.1 (newest) .. FILE.n; 0 = 1, max 100 */
	const char *unix_path;  /* device role: Unix socket for attach, or NULL */
	/* Directories the paths above must lie in (vop/path.h); NULL = each path's own directory. */
	const char *pty_root;
	const char *log_root;   /* rotation stays in the log's directory */
	const char *unix_root;
	uint32_t find_timeout_ms; /* wait for the device entry; 0 = look once */
};

struct vop_console_stats {
	uint64_t in_bytes;  /* bytes sent into the console (towards the driver's reader) */
	uint64_t out_bytes; /* bytes the console wrote (driver transmitq) */
	uint64_t dropped;   /* output bytes dropped for a slow/absent reader */
	uint64_t log_bytes; /* bytes written to the log */
	uint64_t rotations; /* log rotations */
	uint64_t zero_len;  /* zero-length buffers from the peer */
};

struct vop_console;

void vop_console_spec(struct vop_dev_spec *spec, uint32_t dev_id, uint8_t device_side,
		      uint16_t qsize);

/*
 * vop_console_device_create / _driver_create - find dev_id in the window of
 * ctx (type console, our side must play the role) and open the local
 * surfaces (pty, log, socket). Serve it with vop_link_attach_backend(l,
 * dev_id, role, &vop_console_ops, console); the queues start when the link
 * has run the handshake. 0, -ENOENT/-ETIMEDOUT/-EPROTO/-EINVAL, -errno.
 */
int vop_console_device_create(struct vop_devctx *ctx, uint32_t dev_id,
			      const struct vop_console_config *c, struct vop_console **out);
int vop_console_driver_create(struct vop_devctx *ctx, uint32_t dev_id,
			      const struct vop_console_config *c, struct vop_console **out);

/* Link backend ops of a console (either role). */
extern const struct vop_devback_ops vop_console_ops;

/* Path of the pty slave ("" if none). */
const char *vop_console_pty_name(struct vop_console *c);

/*
 * Stream to JavaScript (device role). read_out copies up to len bytes of
 * console output not yet read by stream reader r (0..3) and returns the
 * count (0 if none); bytes that fell out of the 1 MiB ring before a slow
 * reader read them are skipped and counted in *lost. write_in queues input
 * (returns bytes accepted, 0 when the input buffer is full). Any thread.
 */
uint32_t vop_console_read_out(struct vop_console *c, unsigned r, void *buf, uint32_t len,
			      uint64_t *lost);
uint32_t vop_console_write_in(struct vop_console *c, const void *buf, uint32_t len);

void vop_console_stats(struct vop_console *c, struct vop_console_stats *out);

/* After vop_link_detach() (or the link's destruction). NULL ok. */
void vop_console_destroy(struct vop_console *c);

#endif /* VOP_DEV_CONSOLE_H */
