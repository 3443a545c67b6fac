#include <errno.h>
#include "vop/dev_net.h"
#include "vop/dev_console.h"
void vop_console_spec(struct vop_dev_spec *s, uint32_t a, uint8_t b, uint16_t c){(void)s;(void)a;(void)b;(void)c;}
int vop_console_device_create(struct vop_devloop *l, uint32_t i, const struct vop_console_config *c, struct vop_console **o){(void)l;(void)i;(void)c;(void)o;return -ENOSYS;}
int vop_console_driver_create(struct vop_devloop *l, uint32_t i, const struct vop_console_config *c, struct vop_console **o){(void)l;(void)i;(void)c;(void)o;return -ENOSYS;}
const char *vop_console_pty_name(struct vop_console *c){(void)c;return "";}
void vop_console_stats(struct vop_console *c, struct vop_console_stats *o){(void)c;(void)o;}
void vop_console_destroy(struct vop_console *c){(void)c;}
