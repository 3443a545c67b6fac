#include <errno.h>
#include "vop/dev_net.h"
#include "vop/dev_console.h"
void vop_net_spec(struct vop_dev_spec *s, uint32_t a, uint8_t b, uint16_t c, uint16_t d, const uint8_t m[6]){(void)s;(void)a;(void)b;(void)c;(void)d;(void)m;}
int vop_net_device_create(struct vop_devloop *l, uint32_t i, const struct vop_net_config *c, struct vop_net **o){(void)l;(void)i;(void)c;(void)o;return -ENOSYS;}
int vop_net_driver_create(struct vop_devloop *l, uint32_t i, const struct vop_net_config *c, struct vop_net **o){(void)l;(void)i;(void)c;(void)o;return -ENOSYS;}
const char *vop_net_ifname(struct vop_net *n){(void)n;return "";}
void vop_net_stats(struct vop_net *n, struct vop_net_stats *o){(void)n;(void)o;}
void vop_net_destroy(struct vop_net *n){(void)n;}
void vop_console_spec(struct vop_dev_spec *s, uint32_t a, uint8_t b, uint16_t c){(void)s;(void)a;(void)b;(void)c;}
int vop_console_device_create(struct vop_devloop *l, uint32_t i, const struct vop_console_config *c, struct vop_console **o){(void)l;(void)i;(void)c;(void)o;return -ENOSYS;}
int vop_console_driver_create(struct vop_devloop *l, uint32_t i, const struct vop_console_config *c, struct vop_console **o){(void)l;(void)i;(void)c;(void)o;return -ENOSYS;}
const char *vop_console_pty_name(struct vop_console *c){(void)c;return "";}
void vop_console_stats(struct vop_console *c, struct vop_console_stats *o){(void)c;(void)o;}
void vop_console_destroy(struct vop_console *c){(void)c;}
