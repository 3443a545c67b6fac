#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Puts the guest kernel of vop's QEMU tests into the guest cache, without installing a kernel on this
# machine: `apt-get download` of the versioned linux-image-6.1.*-amd64 package that linux-image-amd64
# depends on, `dpkg-deb -x` into $CACHE/kernel/<version>/, `depmod -b` there, and $CACHE/kernel/current
# names it. Idempotent: a kernel already unpacked is kept; older unpacked versions are removed.
# It also unpacks the ELF `vmlinux` from the bzImage (its xz payload): QEMU boots that through the
# kernel's PVH entry point, which skips SeaBIOS's loader and the in-guest xz decompressor, about
# 5 s of a 7.5 s boot under TCG.
# Cache folder: $VOP_GUEST_CACHE, else /var/cache/vop-guest when writable, else ~/.cache/vop-guest
# (test/helpers/guest-image.ts picks the same one). Needs apt-get, dpkg-deb, depmod (kmod) and xz (xz-utils).
# Prints the kernel folder. docs/guest-harness.md describes the whole harness.
set -euo pipefail

cache_dir() {
	if [[ -n "${VOP_GUEST_CACHE:-}" ]]; then
		echo "$VOP_GUEST_CACHE"
	elif mkdir -p /var/cache/vop-guest 2>/dev/null && [[ -w /var/cache/vop-guest ]]; then
		echo /var/cache/vop-guest
	else
		echo "${XDG_CACHE_HOME:-$HOME/.cache}/vop-guest"
	fi
}

CACHE=$(cache_dir)
mkdir -p "$CACHE/kernel"

# The versioned image package the meta package points at (e.g. linux-image-6.1.0-57-amd64).
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
if [[ -z "$pkg" ]]; then
	echo "prepare.sh: apt-cache knows no linux-image-amd64 (run apt-get update first)" >&2
	exit 1
fi
kver=${pkg#linux-image-}
dest="$CACHE/kernel/$kver"

if [[ ! -f "$dest/.complete" ]]; then
	tmp=$(mktemp -d "$CACHE/kernel/.tmp.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1 || apt-get download "$pkg")
	deb=$(ls "$tmp"/*.deb)
	mkdir -p "$tmp/root"
	dpkg-deb -x "$deb" "$tmp/root"
	rm -f "$deb"
	# modules.dep etc. are made at install time by Debian's postinst; make them here for modprobe -d.
	depmod -b "$tmp/root" "$kver"
	bz="$tmp/root/boot/vmlinuz-$kver"
	off=$(LC_ALL=C grep -m 1 -abo $'\xfd7zXZ' "$bz" | LC_ALL=C cut -d: -f1)
	off=${off%%$'\n'*}
	if [[ -n "$off" ]] && tail -c +$((off + 1)) "$bz" >"$tmp/payload.xz" &&
		xz -dc --single-stream "$tmp/payload.xz" >"$tmp/root/boot/vmlinux-$kver"; then
		rm -f "$tmp/payload.xz"
	else
		echo "prepare.sh: no xz payload in $bz; guests boot the bzImage (slower)" >&2
		rm -f "$tmp/root/boot/vmlinux-$kver"
	fi
	touch "$tmp/root/.complete"
	rm -rf "$dest"
	mv "$tmp/root" "$dest"
	rm -rf "$tmp"
	trap - EXIT
fi

printf '%s\n' "$kver" >"$CACHE/kernel/current.tmp"
mv "$CACHE/kernel/current.tmp" "$CACHE/kernel/current"
# Keep one unpacked kernel (about 400 MB each).
for d in "$CACHE/kernel"/*/; do
	d=${d%/}
	[[ "$(basename "$d")" == "$kver" ]] || rm -rf "$d"
done
echo "$dest"
