/* SPDX-License-Identifier: Apache-2.0 */
/* pci-ivshmem-pipe with the child on the polled doorbell (see that file). */
#define PCI_POLLED 1
#include "pci-ivshmem-pipe.c"
