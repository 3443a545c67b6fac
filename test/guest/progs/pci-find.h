/* SPDX-License-Identifier: Apache-2.0 */
/* Guest-side helpers shared by the test programs: find a PCI function by vendor:device in sysfs. */
#ifndef VOP_GUEST_PCI_FIND_H
#define VOP_GUEST_PCI_FIND_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline unsigned read_hex_file(const char *dir, const char *name)
{
	char p[512], buf[32] = "";
	FILE *f;

	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%s/%s", dir, name);
	f = fopen(p, "r");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return (unsigned)strtoul(buf, NULL, 16);
}

/* The index-th (0-based, in readdir-sorted order) function with vendor:device; 0 if found. */
static inline int pci_find(unsigned vendor, unsigned device, int index, char *bdf, size_t n)
{
	struct dirent **list;
	int k = scandir("/sys/bus/pci/devices", &list, NULL, alphasort), found = -1;

	for (int i = 0; i < k; i++) {
		if (found < 0 && list[i]->d_name[0] != '.' &&
		    read_hex_file(list[i]->d_name, "vendor") == vendor &&
		    read_hex_file(list[i]->d_name, "device") == device && index-- == 0) {
			snprintf(bdf, n, "%s", list[i]->d_name);
			found = 0;
		}
		free(list[i]);
	}
	if (k >= 0)
		free(list);
	return found;
}

#endif
