#!/usr/bin/env bash
# Builds the real Debian 12 system that lifeboat's end-to-end recovery test
# captures, backs up and recovers: a bootable raw disk image (BIOS and UEFI)
# plus the OVMF variable store holding its "debian" EFI boot entry.
#
#   qemu/build-debian.sh [--output DIR [--overlay]] [options]
#
# Two cached stages under the cache folder (default /var/cache/lifeboat-test,
# or $LIFEBOAT_TEST_CACHE):
#   debian12-rootfs-KEY.tar.zst   the debootstrap tree; KEY hashes the suite,
#                                 mirror, package list and the make_rootfs
#                                 function of this script
#   debian12-KEY.img, .vars.fd    the disk (read-only) and its NVRAM; KEY
#                                 hashes the rootfs key, this script, the
#                                 guest build script and qemu/guest/*;
#                                 .uuids holds the file system UUIDs
#                                 (shell variables), .build.log the serial
#                                 log of the build
# A rerun with the same keys takes seconds. The tree is configured (fstab,
# password, job runner, initramfs) on the host in a chroot, 14 times faster
# than under TCG; the disk is built inside a QEMU guest running the lifeboat
# rescue image (the host has no device-mapper), under OVMF, so that
# grub-install writes a real EFI boot entry.
#
# Options:
#   --output DIR      hand out DIR/debian12.img (sparse copy),
#                     DIR/debian12.vars.fd and DIR/debian12.uuids; without
#                     it the cached files are printed: use them read-only
#   --overlay         with --output: DIR/debian12.qcow2, a qcow2 overlay on
#                     the cached raw image, instead of a copy (instant)
#   --cache DIR       cache folder
#   --rescue DIR      rescue image (DIR/vmlinuz, DIR/initrd) to build with
#   --lifeboat BIN    lifeboat binary to make that rescue image with
#                     (default: lifeboat in PATH, else target/{debug,release})
#   --rebuild         build the disk again even if cached
#   --rebuild-rootfs  run debootstrap again too
#   --verbose         show the build guest's console while it runs
#   --prune           delete the cache's other debian12-* files and failed
#                     build folders (older keys), then carry on
#
# Prints on stdout, one per line: image=PATH vars=PATH uuids=PATH
# format=raw|qcow2.
# Exit codes: 0 done; 1 build failed (the message names the step and the log);
# 2 usage error.
#
# The Debian system: hostname lifeboat-src, root password "lifeboat" (a test
# machine only), serial console on ttyS0, and the test job runner of
# qemu/guest/ (see qemu/README.md).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prog=build-debian

suite=bookworm
mirror=http://deb.debian.org/debian
packages=(
    systemd-sysv linux-image-amd64 initramfs-tools
    grub-pc-bin grub-efi-amd64-bin grub2-common
    lvm2 xfsprogs e2fsprogs dosfstools efibootmgr
    # what `lifeboat mkrescue` needs inside the guest
    busybox-static xorriso grub-common isolinux syslinux-common mtools kmod cpio
    zstd mdadm cryptsetup btrfs-progs gdisk fdisk util-linux tar
)
disk_size=6G

say() { echo "$prog: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

output="" overlay=no rescue="" lifeboat="" rebuild=no rebuild_rootfs=no verbose=no prune=no
cache=${LIFEBOAT_TEST_CACHE:-/var/cache/lifeboat-test}
while [ $# -gt 0 ]; do
    case "$1" in
        --output) output=${2:?--output needs a folder}; shift 2 ;;
        --overlay) overlay=yes; shift ;;
        --cache) cache=${2:?--cache needs a folder}; shift 2 ;;
        --rescue) rescue=${2:?--rescue needs a folder}; shift 2 ;;
        --lifeboat) lifeboat=${2:?--lifeboat needs a path}; shift 2 ;;
        --rebuild) rebuild=yes; shift ;;
        --rebuild-rootfs) rebuild=yes rebuild_rootfs=yes; shift ;;
        --verbose) verbose=yes; shift ;;
        --prune) prune=yes; shift ;;
        -h | --help) usage ;;
        *) say "unknown argument: $1"; usage ;;
    esac
done
if [ "$overlay" = yes ] && [ -z "$output" ]; then
    say "--overlay needs --output"
    exit 2
fi
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and the chroot need it)"

if ! mkdir -p "$cache" 2>/dev/null; then
    fallback=${XDG_CACHE_HOME:-$HOME/.cache}/lifeboat-test
    say "cannot create $cache; caching in $fallback"
    cache=$fallback
    mkdir -p "$cache"
fi
cache=$(cd "$cache" && pwd)

# One build at a time per cache: a second caller waits and then finds the
# result cached.
exec 9>"$cache/.lock"
if ! flock -n 9; then
    say "another build holds $cache/.lock; waiting"
    flock 9
fi

# --- stage 1: the debootstrap tree -----------------------------------------
make_rootfs() {
    # $1: an empty folder for the tree, $2: the tarball to write. Minimal base
    # plus the packages, no recommends (debootstrap never installs them). The
    # .debs stay in $cache/debs for the next rebuild.
    local tree=$1 tarball=$2
    mkdir -p "$cache/debs"
    debootstrap --variant=minbase --components=main --cache-dir="$cache/debs" \
        --include="$(IFS=,; echo "${packages[*]}")" "$suite" "$tree" "$mirror"
    # The package lists (~60 MB) are not needed: apt-get update brings them back.
    rm -rf "$tree"/var/lib/apt/lists/* "$tree"/var/cache/apt/*.bin
    # No --acls: the only ACLs (on /var/log/journal) name groups the rescue
    # system does not know, and systemd-tmpfiles sets them again at boot.
    tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' -cf - . |
        zstd -q -T0 -3 -o "$tarball"
}

sha() { sha256sum | cut -c1-16; }
rootfs_key=$({
    echo "$suite $mirror"
    printf '%s\n' "${packages[@]}"
    declare -f make_rootfs
} | sha)
rootfs=$cache/debian12-rootfs-$rootfs_key.tar.zst

if [ "$rebuild_rootfs" = yes ] || [ ! -s "$rootfs" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is missing: run scripts/install-deps.sh"
    tree=$(mktemp -d "$cache/rootfs-XXXXXX")
    cleanup_tree() {
        # Never delete through a mount that debootstrap left behind.
        if findmnt -rn -o TARGET | grep -q "^$tree"; then
            say "mounts left under $tree: not deleting it"
        else
            rm -rf --one-file-system "$tree"
        fi
    }
    trap cleanup_tree EXIT
    say "debootstrap $suite from $mirror into $tree (${#packages[@]} packages; log $tree.log)"
    t0=$SECONDS
    rm -f "$rootfs.tmp"
    if ! make_rootfs "$tree" "$rootfs.tmp" >"$tree.log" 2>&1; then
        tail -n 30 "$tree.log" >&2
        die "debootstrap failed; log: $tree.log"
    fi
    mv -f "$rootfs.tmp" "$rootfs"
    rm -f "$tree.log"
    cleanup_tree
    trap - EXIT
    say "rootfs $rootfs ($(du -h "$rootfs" | cut -f1)) made in $((SECONDS - t0)) s"
else
    say "rootfs cached: $rootfs"
fi

# --- stage 2: the disk, built in a rescue guest ------------------------------
in_tree() {
    local tree=$1
    shift
    chroot "$tree" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        LANG=C.UTF-8 "$@"
}
umount_tree() {
    local m
    for m in sys proc; do
        if mountpoint -q "$1/$m"; then umount "$1/$m"; fi
    done
}
configure_tree() {
    # $1: the unpacked tree, $2: the UUIDs the guest gives the file systems.
    # Everything of the installation that does not need the disk itself.
    local tree=$1
    # shellcheck disable=SC1090
    . "$2"
    cat >"$tree/etc/fstab" <<FSTAB
# /etc/fstab of the lifeboat test source system (qemu/build-debian.sh)
UUID=$UUID_ROOT  /          ext4  errors=remount-ro  0 1
UUID=$UUID_BOOT  /boot      ext4  defaults           0 2
UUID=${ESP_ID:0:4}-${ESP_ID:4:4}                             /boot/efi  vfat  umask=0077         0 1
UUID=$UUID_HOME  /home      xfs   defaults           0 2
UUID=$UUID_SWAP  none       swap  sw                 0 0
FSTAB
    echo lifeboat-src >"$tree/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tlifeboat-src\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$tree/etc/hosts"
    cat >"$tree/etc/default/grub" <<'GRUB'
# Written by qemu/build-debian.sh: the menu on the serial console and the screen.
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_OS_PROBER=true
GRUB
    echo "RESUME=UUID=$UUID_SWAP" >"$tree/etc/initramfs-tools/conf.d/resume"
    # The test job runner.
    install -m 0644 "$here/guest/lifeboat-job.service" "$tree/etc/systemd/system/"
    install -m 0755 "$here/guest/lifeboat-job" "$tree/usr/local/sbin/"
    mount -t proc proc "$tree/proc"
    mount -t sysfs sysfs "$tree/sys"
    in_tree "$tree" systemctl enable lifeboat-job.service
    # The root password of this test machine.
    echo 'root:lifeboat' | in_tree "$tree" chpasswd
    # The fsck hook finds the type of / by probing the device, which is not
    # here: name it for this one run (the file goes into the initramfs too,
    # harmless: its init probes the root device itself).
    echo "FSTYPE=ext4" >"$tree/etc/initramfs-tools/conf.d/lifeboat-build-fstype"
    in_tree "$tree" update-initramfs -u -k all
    rm "$tree/etc/initramfs-tools/conf.d/lifeboat-build-fstype"
    in_tree "$tree" sh -c 'lsinitramfs /boot/initrd.img-*' >"$tree/../initrd.list"
    grep -q 'sbin/lvm$' "$tree/../initrd.list" || { echo "the initramfs has no lvm"; return 1; }
    grep -q 'conf/conf.d/resume$' "$tree/../initrd.list" || { echo "the initramfs has no resume configuration"; return 1; }
    grep -q 'sbin/fsck.ext4$' "$tree/../initrd.list" || { echo "the initramfs has no fsck.ext4"; return 1; }
    umount_tree "$tree"
}

guest_build=$here/debian-build-guest.sh
image_key=$({
    echo "$rootfs_key $disk_size"
    cat "$0" "$guest_build"
    for f in "$here"/guest/*; do
        # the name, not the path: every checkout shares one cached image
        echo "${f##*/}"
        cat "$f"
    done
} | sha)
image=$cache/debian12-$image_key.img
vars=$cache/debian12-$image_key.vars.fd

if [ "$rebuild" = yes ] || [ ! -s "$image" ] || [ ! -s "$vars" ] ||
    [ ! -s "$cache/debian12-$image_key.uuids" ]; then
    for f in /usr/share/OVMF/OVMF_CODE_4M.fd /usr/share/OVMF/OVMF_VARS_4M.fd; do
        [ -r "$f" ] || die "$f is missing: install ovmf (scripts/install-deps.sh)"
    done
    command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing: run scripts/install-deps.sh"
    if [ -z "$rescue" ] && [ -z "$lifeboat" ]; then
        for c in "$(command -v lifeboat || true)" \
            "${CARGO_TARGET_DIR:-$here/../target}/debug/lifeboat" \
            "${CARGO_TARGET_DIR:-$here/../target}/release/lifeboat"; do
            if [ -n "$c" ] && [ -x "$c" ]; then
                lifeboat=$c
                break
            fi
        done
        [ -n "$lifeboat" ] || die "no lifeboat binary: build it (cargo build) or give --lifeboat BIN or --rescue DIR"
    fi
    work=$(mktemp -d "$cache/build-XXXXXX")
    trap 'say "work files kept in $work"' EXIT
    if [ -z "$rescue" ]; then
        say "making the rescue image with $lifeboat mkrescue"
        rescue=$work/rescue
        "$lifeboat" mkrescue --output "$rescue" --no-iso >"$work/mkrescue.log" 2>&1 ||
            { cat "$work/mkrescue.log" >&2; die "lifeboat mkrescue failed"; }
    fi
    if [ ! -r "$rescue/vmlinuz" ] || [ ! -r "$rescue/initrd" ]; then
        die "$rescue has no vmlinuz and initrd"
    fi

    # The tree is configured on the host, in a chroot: update-initramfs
    # (MODULES=most) took 660 s in the TCG guest and 47 s here, and nothing
    # in it depends on the disk once the UUIDs are chosen in advance.
    tree=$work/tree
    mkdir "$tree" "$work/job"
    say "configuring the tree on the host (fstab, job runner, password, initramfs)"
    t0=$SECONDS
    zstd -dc "$rootfs" | tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' -xpf -
    # The rootfs tarball's top entry is a mktemp folder (0700): / must be
    # 0755 or services running as their own user cannot start.
    chmod 0755 "$tree"
    new_uuid() { cat /proc/sys/kernel/random/uuid; }
    cat >"$work/job/disk.env" <<ENV
UUID_ROOT=$(new_uuid)
UUID_BOOT=$(new_uuid)
UUID_HOME=$(new_uuid)
UUID_SWAP=$(new_uuid)
ESP_ID=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F)
ENV
    trap 'umount_tree "$tree"; say "work files kept in $work"' EXIT
    if ! configure_tree "$tree" "$work/job/disk.env" >"$work/configure.log" 2>&1; then
        tail -n 30 "$work/configure.log" >&2
        die "configuring the tree failed; log: $work/configure.log"
    fi
    umount_tree "$tree"
    # An uncompressed tar: the guest unpacks it without running zstd under TCG.
    tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' -cf "$work/job/rootfs.tar" .
    rm -rf --one-file-system "$tree"
    trap 'say "work files kept in $work"' EXIT
    say "tree configured in $((SECONDS - t0)) s"

    cp "$guest_build" "$work/job/autorun.sh"
    job_mib=$(($(du -sm "$work/job" | cut -f1) + 64))
    mkfs.ext4 -q -F -L LIFEBOAT-AUTO -d "$work/job" "$work/job.img" "${job_mib}M" >/dev/null
    rm -f "$work/job/rootfs.tar"
    truncate -s "$disk_size" "$work/disk.img"
    cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"

    say "building the disk in a rescue guest (QEMU TCG, OVMF; serial log $work/serial.log)"
    t0=$SECONDS
    : >"$work/serial.log"
    tailer=""
    if [ "$verbose" = yes ]; then
        tail -n +1 -f "$work/serial.log" >&2 &
        tailer=$!
    fi
    # In the background, so that an interrupted build takes its guest along.
    timeout -k 10 1800 qemu-system-x86_64 -accel tcg -machine q35 -smp 2 -m 2048 \
        -display none -monitor none -no-reboot -nic none \
        -serial "file:$work/serial.log" \
        -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
        -drive "if=pflash,format=raw,file=$work/vars.fd" \
        -kernel "$rescue/vmlinuz" -initrd "$rescue/initrd" \
        -append 'console=ttyS0,115200 panic=5 lifeboat.poweroff' \
        -drive "file=$work/disk.img,format=raw,if=none,id=disk,cache=unsafe" \
        -device virtio-blk-pci,drive=disk,serial=lifeboat-debian \
        -drive "file=$work/job.img,format=raw,if=none,id=job,cache=unsafe" \
        -device virtio-blk-pci,drive=job,serial=lifeboat-job \
        2>"$work/qemu.err" &
    qemu=$!
    trap 'kill "$qemu" ${tailer:+"$tailer"} 2>/dev/null; say "work files kept in $work"' EXIT
    qemu_rc=0
    wait "$qemu" || qemu_rc=$?
    [ -z "$tailer" ] || kill "$tailer" 2>/dev/null || true
    trap 'say "work files kept in $work"' EXIT
    say "build guest ran $((SECONDS - t0)) s"
    [ "$qemu_rc" -ne 124 ] || { tail -n 40 "$work/serial.log" >&2; die "the build guest did not power off within 1800 s; serial log: $work/serial.log"; }
    [ "$qemu_rc" -eq 0 ] || { cat "$work/qemu.err" >&2; die "qemu failed (exit $qemu_rc)"; }
    debugfs -R 'dump /autorun.log '"$work/build.log" "$work/job.img" 2>/dev/null
    rc=$(debugfs -R 'cat /autorun.rc' "$work/job.img" 2>/dev/null || true)
    if [ "$rc" != 0 ]; then
        tail -n 40 "$work/serial.log" >&2
        die "the disk build in the guest failed (autorun.rc: ${rc:-missing}); logs: $work/build.log, $work/serial.log"
    fi
    # A quick look from the host: four GPT partitions where the guest put them.
    parts=$(sfdisk -d "$work/disk.img" 2>/dev/null | grep -c '^/' || true)
    [ "$parts" = 4 ] || die "the built disk has $parts partitions, not 4; log: $work/build.log"

    cp "$work/serial.log" "$cache/debian12-$image_key.build.log"
    cp "$work/job/disk.env" "$cache/debian12-$image_key.uuids"
    # Read-only masters: overlays and copies only read them.
    chmod a-w "$work/vars.fd" "$work/disk.img"
    mv -f "$work/vars.fd" "$vars"
    mv -f "$work/disk.img" "$image"
    rm -rf "$work"
    trap - EXIT
    say "disk built in $((SECONDS - t0)) s: $image"
else
    say "disk cached: $image"
fi

if [ "$prune" = yes ]; then
    for f in "$cache"/debian12-* "$cache"/build-* "$cache"/rootfs-*; do
        [ -e "$f" ] || continue
        case "$f" in
            "$rootfs" | "$cache/debian12-$image_key".*) continue ;;
        esac
        say "pruning $f"
        rm -rf --one-file-system "$f" || say "could not delete all of $f"
    done
fi

# --- hand out ---------------------------------------------------------------
format=raw
if [ -n "$output" ]; then
    mkdir -p "$output"
    output=$(cd "$output" && pwd)
    if [ "$overlay" = yes ]; then
        format=qcow2
        rm -f "$output/debian12.qcow2"
        qemu-img create -q -f qcow2 -b "$image" -F raw "$output/debian12.qcow2"
        out_image=$output/debian12.qcow2
    else
        cp --sparse=always "$image" "$output/debian12.img"
        out_image=$output/debian12.img
    fi
    cp "$vars" "$output/debian12.vars.fd"
    cp "$cache/debian12-$image_key.uuids" "$output/debian12.uuids"
    # The copies are the caller's to boot: writable, unlike the masters.
    chmod u+w "$output"/debian12.*
    out_vars=$output/debian12.vars.fd
    out_uuids=$output/debian12.uuids
else
    say "no --output: these are the cached masters; use them read-only (copy or overlay them)"
    out_image=$image out_vars=$vars out_uuids=$cache/debian12-$image_key.uuids
fi
echo "image=$out_image"
echo "vars=$out_vars"
echo "uuids=$out_uuids"
echo "format=$format"
