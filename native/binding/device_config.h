/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A device as JavaScript describes it (DeviceConfigDto in
 * agent/src/native/native.ts) converted straight into the C config structs:
 * a byte pipe (vop/link.h) or a device backend (struct vop_devback_config,
 * vop/dev_backend.h, with the blk/net/console/NBD structs inside). Strings
 * live in the struct itself; nothing here outlives the call that read it.
 */
#ifndef VOP_BINDING_DEVICE_CONFIG_H
#define VOP_BINDING_DEVICE_CONFIG_H

#include <node_api.h>
#include <stdbool.h>

#include "vop/dev_backend.h"
#include "vop/link.h"

#define VOP_DEVCFG_STRS 12u

struct vop_devcfg {
	bool pipe;                  /* a byte pipe; else be */
	uint32_t dev_id;
	enum vop_role role;
	/* byte pipe */
	uint16_t queue_size;        /* table: entries per queue */
	uint32_t buf_size;          /* table: bytes per driver buffer */
	uint64_t features;          /* offered by the table, wanted by the driver */
	struct vop_pipe_config pc;  /* attach */
	/* device backends */
	struct vop_devback_config be;
	char str[VOP_DEVCFG_STRS][VOP_PATH_MAX]; /* the strings be points into */
	char pem[3][512];           /* NBD TLS files */
	char clients[1024];         /* NBD TLS client names, comma-separated */
	char tcp_host[64];
	char export_name[200];
	char serial[24];
	char tap[IFNAMSIZ];
	char netns[VOP_NETNS_NAME_MAX + 1];
	unsigned nstr;
};

/*
 * Read obj (a DeviceConfigDto) into c; errors name the property under path
 * ("device.net.mtu ..."). false with a pending TypeError/RangeError.
 */
bool vop_devcfg_read(napi_env env, napi_value obj, const char *path, struct vop_devcfg *c);

/* The table entry c publishes as on side (pipe or backend). 0 or -EINVAL. */
int vop_devcfg_spec(const struct vop_devcfg *c, unsigned side, struct vop_dev_spec *spec);

#endif /* VOP_BINDING_DEVICE_CONFIG_H */
