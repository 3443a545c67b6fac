/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ivshmem-vfio: drives an ivshmem-doorbell device from guest user space through vfio-pci, the way
 * vop's pci-bar transport will: binds the device to vfio-pci (driver_override), maps BAR2 (the
 * shared memory), reads IVPosition and rings peers through BAR0 (region pread/pwrite), and takes
 * its MSI-X vectors as eventfds (VFIO_DEVICE_SET_IRQS). Needs the guest's vIOMMU (Guest option
 * iommu) and vfio_iommu_type1 allow_unsafe_interrupts=1 (test/guest/modules.txt).
 *
 * The device: -a BDF, or the INDEX-th 1af4:1110 function (-i, default 0).
 *   ivshmem-vfio [-i INDEX] [-v VECTORS] info
 *       "bdf=... id=<IVPosition> vectors=<MSI-X count> shm=<BAR2 size>"
 *   ivshmem-vfio [-i INDEX] [-v VECTORS] pingpong PEER ROUNDS TIMEOUT_MS
 *       prints "ready id=<own id>", then for round r = 0.. on vector v = r % VECTORS: waits for
 *       the interrupt, checks that u32 shm[0x10] == r + 1, writes (r + 1) | 0x80000000 to
 *       shm[0x14] and rings PEER on v; prints "round r vector v"; ends with "done ROUNDS".
 *   ivshmem-vfio [-i INDEX] [-v VECTORS] ring PEER VECTOR
 * Exit 1 with a message on stderr on any failure (a wait that times out included).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "pci-find.h"

#define REG_IVPOSITION 8
#define REG_DOORBELL   12
#define MAX_VEC	       64

static char bdf[256];
static int dev = -1;
static struct vfio_region_info bar0, bar2, cfg;
static volatile uint32_t *shm;

static void die(const char *what)
{
	fprintf(stderr, "ivshmem-vfio: %s: %s\n", what, errno ? strerror(errno) : "failed");
	exit(1);
}

static void write_sys(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0 || write(fd, val, strlen(val)) < 0) {
		/* drivers_probe may say ENODEV/EEXIST when it is already bound: checked afterwards
		 */
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
}

/* driver_override = vfio-pci, unbind from any other driver, probe; then check the binding. */
static void bind_vfio(void)
{
	char p[512], link[512] = "";
	ssize_t n;

	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%.64s/driver", bdf);
	n = readlink(p, link, sizeof(link) - 1);
	if (n > 0) {
		link[n] = 0;
		if (!strcmp(basename(link), "vfio-pci"))
			return;
		snprintf(p, sizeof(p), "/sys/bus/pci/devices/%.64s/driver/unbind", bdf);
		write_sys(p, bdf);
	}
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%.64s/driver_override", bdf);
	write_sys(p, "vfio-pci");
	write_sys("/sys/bus/pci/drivers_probe", bdf);
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%.64s/driver", bdf);
	n = readlink(p, link, sizeof(link) - 1);
	if (n <= 0 || (link[n] = 0, strcmp(basename(link), "vfio-pci"))) {
		errno = 0;
		die("binding to vfio-pci (is the vIOMMU there: intel_iommu=on?)");
	}
}

static void region(unsigned index, struct vfio_region_info *ri)
{
	memset(ri, 0, sizeof(*ri));
	ri->argsz = sizeof(*ri);
	ri->index = index;
	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, ri) < 0)
		die("VFIO_DEVICE_GET_REGION_INFO");
}

static uint32_t reg_read(unsigned off)
{
	uint32_t v;

	if (pread(dev, &v, 4, (off_t)(bar0.offset + off)) != 4)
		die("BAR0 read");
	return v;
}

static void reg_write(unsigned off, uint32_t v)
{
	if (pwrite(dev, &v, 4, (off_t)(bar0.offset + off)) != 4)
		die("BAR0 write");
}

static void open_device(void)
{
	char p[512], link[512];
	int container, group;
	ssize_t n;
	struct vfio_group_status gs = { .argsz = sizeof(gs) };
	uint16_t cmd;

	container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		die("/dev/vfio/vfio");
	if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
		die("VFIO API version");
	if (!ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU))
		die("no VFIO type1 IOMMU");
	snprintf(p, sizeof(p), "/sys/bus/pci/devices/%.64s/iommu_group", bdf);
	n = readlink(p, link, sizeof(link) - 1);
	if (n <= 0)
		die("iommu_group (no vIOMMU?)");
	link[n] = 0;
	snprintf(p, sizeof(p), "/dev/vfio/%.64s", basename(link));
	group = open(p, O_RDWR);
	if (group < 0)
		die(p);
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &gs) < 0 || !(gs.flags & VFIO_GROUP_FLAGS_VIABLE))
		die("group not viable");
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) < 0)
		die("VFIO_GROUP_SET_CONTAINER");
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU) < 0)
		die("VFIO_SET_IOMMU");
	dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD");
	region(VFIO_PCI_BAR0_REGION_INDEX, &bar0);
	region(VFIO_PCI_BAR2_REGION_INDEX, &bar2);
	region(VFIO_PCI_CONFIG_REGION_INDEX, &cfg);
	if (!(bar2.flags & VFIO_REGION_INFO_FLAG_MMAP))
		die("BAR2 cannot be mmap()ed");
	shm = mmap(NULL, bar2.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, (off_t)bar2.offset);
	if (shm == MAP_FAILED)
		die("mmap BAR2");
	/* MSI-X messages are memory writes by the device: it must be a bus master. */
	if (pread(dev, &cmd, 2, (off_t)(cfg.offset + 4)) != 2)
		die("config read");
	cmd |= 0x4;
	if (pwrite(dev, &cmd, 2, (off_t)(cfg.offset + 4)) != 2)
		die("config write");
}

static unsigned msix_count(void)
{
	struct vfio_irq_info ii = { .argsz = sizeof(ii), .index = VFIO_PCI_MSIX_IRQ_INDEX };

	if (ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &ii) < 0)
		die("VFIO_DEVICE_GET_IRQ_INFO");
	return ii.count;
}

static void setup_irqs(int *efd, unsigned n)
{
	size_t sz = sizeof(struct vfio_irq_set) + n * sizeof(int);
	struct vfio_irq_set *s = calloc(1, sz);

	if (!s)
		die("calloc");
	for (unsigned v = 0; v < n; v++) {
		efd[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (efd[v] < 0)
			die("eventfd");
	}
	s->argsz = (uint32_t)sz;
	s->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	s->index = VFIO_PCI_MSIX_IRQ_INDEX;
	s->start = 0;
	s->count = n;
	memcpy(s->data, efd, n * sizeof(int));
	if (ioctl(dev, VFIO_DEVICE_SET_IRQS, s) < 0)
		die("VFIO_DEVICE_SET_IRQS (MSI-X)");
	free(s);
}

static long elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

int main(int argc, char **argv)
{
	int index = 0, o;
	unsigned nvec = 1;

	while ((o = getopt(argc, argv, "a:i:v:")) != -1) {
		if (o == 'a')
			snprintf(bdf, sizeof(bdf), "%s", optarg);
		else if (o == 'i')
			index = atoi(optarg);
		else if (o == 'v')
			nvec = (unsigned)atoi(optarg);
		else
			return 2;
	}
	if (optind >= argc || nvec == 0 || nvec > MAX_VEC) {
		fprintf(stderr, "usage: see the comment at the top of ivshmem-vfio.c\n");
		return 2;
	}
	errno = 0;
	if (!bdf[0] && pci_find(0x1af4, 0x1110, index, bdf, sizeof(bdf)))
		die("no ivshmem device (1af4:1110)");
	bind_vfio();
	open_device();
	const char *cmd = argv[optind];

	if (!strcmp(cmd, "info")) {
		printf("bdf=%s id=%u vectors=%u shm=%llu\n", bdf, reg_read(REG_IVPOSITION),
		       msix_count(), (unsigned long long)bar2.size);
		return 0;
	}
	if (!strcmp(cmd, "ring") && optind + 2 < argc) {
		unsigned peer = (unsigned)atoi(argv[optind + 1]),
			 vec = (unsigned)atoi(argv[optind + 2]);

		reg_write(REG_DOORBELL, peer << 16 | vec);
		return 0;
	}
	if (!strcmp(cmd, "pingpong") && optind + 3 < argc) {
		unsigned peer = (unsigned)atoi(argv[optind + 1]);
		unsigned rounds = (unsigned)atoi(argv[optind + 2]);
		long timeout_ms = atol(argv[optind + 3]);
		int efd[MAX_VEC];

		if (msix_count() < nvec) {
			errno = 0;
			die("the device has fewer MSI-X vectors than -v");
		}
		setup_irqs(efd, nvec);
		printf("ready id=%u\n", reg_read(REG_IVPOSITION));
		fflush(stdout);
		for (unsigned r = 0; r < rounds; r++) {
			unsigned v = r % nvec;
			struct pollfd pfd = { .fd = efd[v], .events = POLLIN };
			struct timespec t0;
			uint64_t cnt;

			clock_gettime(CLOCK_MONOTONIC, &t0);
			while (poll(&pfd, 1, 100) <= 0) {
				if (elapsed_ms(&t0) > timeout_ms) {
					errno = ETIMEDOUT;
					fprintf(stderr, "round %u: no interrupt on vector %u\n", r,
						v);
					die("pingpong");
				}
			}
			if (read(efd[v], &cnt, sizeof(cnt)) != sizeof(cnt))
				die("eventfd read");
			uint32_t got = shm[0x10 / 4];

			if (got != r + 1) {
				errno = 0;
				fprintf(stderr, "round %u: shm[0x10] = %u, want %u\n", r, got,
					r + 1);
				die("pingpong");
			}
			shm[0x14 / 4] = (r + 1) | 0x80000000u;
			__sync_synchronize(); /* the reply is in memory before the doorbell rings */
			reg_write(REG_DOORBELL, peer << 16 | v);
			printf("round %u vector %u\n", r, v);
			fflush(stdout);
		}
		printf("done %u\n", rounds);
		return 0;
	}
	fprintf(stderr, "ivshmem-vfio: unknown command %s\n", cmd);
	return 2;
}
