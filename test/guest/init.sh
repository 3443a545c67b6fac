#!/bin/sh
# /init of vop's test guests (test/helpers/guest-image.ts packs it with static busybox, the kernel
# modules of test/guest/modules.txt and vop-guest-agent). It mounts the usual file systems, loads
# the modules in dependency order, runs the executable files a test appended under /etc/vop/init.d/
# (in name order), and hands PID 1 to vop-guest-agent, which runs the host's commands.
# Everything it prints goes to the serial console (the host's serial.log).
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
echo "vop-init: kernel up at $(cut -d' ' -f1 /proc/uptime) s"
while read -r mod opts; do
	case "$mod" in '' | '#'*) continue ;; esac
	# shellcheck disable=SC2086 # options are separate words
	insmod "/lib/modules/$mod" $opts || echo "vop-init: insmod $mod failed"
done </etc/vop/modules
ip link set lo up
hostname vop-guest
for f in /etc/vop/init.d/*; do
	[ -x "$f" ] && { "$f" || echo "vop-init: $f failed ($?)"; }
done
echo "vop-init: modules loaded at $(cut -d' ' -f1 /proc/uptime) s"
exec /bin/vop-guest-agent
