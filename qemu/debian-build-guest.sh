#!/bin/sh
# Runs as autorun.sh in the lifeboat rescue system (busybox sh, lifeboat's
# tools on PATH, no udev), booted by qemu/build-debian.sh under OVMF. Writes
# the Debian 12 tree of this job disk (rootfs.tar, already configured on the
# host) onto the virtio disk with serial "lifeboat-debian", with the file
# system UUIDs of disk.env, and installs GRUB for BIOS and UEFI:
#
#   GPT: 1 bios-boot 1 MiB (ef02) | 2 ESP 200 MiB vfat | 3 /boot 400 MiB ext4
#        | 4 LVM PV (the rest) -> vg0: root 3 GiB ext4, home 512 MiB xfs,
#          swap 512 MiB, the rest of the VG left free
#
# What building it without udev taught (keep it in mind when changing this):
# - The kernel makes the partition nodes (devtmpfs) once sgdisk has written
#   the table; wait for the node, not a fixed time.
# - LVM uses the rescue's /etc/lvm/lvm.conf (no udev sync, scans /dev) and,
#   with DM_DISABLE_UDEV=1, creates the /dev/mapper nodes itself.
# - grub-probe finds the devices through /proc/self/mountinfo and sysfs: mount
#   by /dev/mapper/vg0-root (not /dev/dm-N) and bind /dev, /proc and /sys into
#   the chroot; grub-install's efibootmgr also needs efivarfs mounted in the
#   chroot's /sys (a plain bind of /sys does not carry it).
# - With no /dev/disk/by-uuid, grub-mkconfig writes root=/dev/mapper/vg0-root,
#   which is what it writes for an LVM root anyway.
# - /sbin/init in the tree is an absolute symlink: test paths inside the
#   tree, not through links that resolve in the rescue system.
# - The rescue's environment (LD_LIBRARY_PATH, aliases) must not leak into the
#   chroot: every chroot command starts from env -i.
# - busybox here has no install applet, and mkfs.vfat warns about codepage
#   850 (no gconv modules in the rescue): harmless.
set -eu

job=$(cd "$(dirname "$0")" && pwd)
target=/mnt/debian
say() { echo "build-guest: $*"; }
fail() {
    say "error: $*"
    exit 1
}
in_target() {
    chroot "$target" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        TERM=linux LANG=C.UTF-8 DM_DISABLE_UDEV=1 "$@"
}
wait_for_node() {
    n=0
    while [ ! -b "$1" ]; do
        n=$((n + 1))
        [ "$n" -le 100 ] || fail "$1 did not appear within 10 s"
        sleep 0.1
    done
}
start=$(cut -d. -f1 /proc/uptime)
step() { say "[$(($(cut -d. -f1 /proc/uptime) - start)) s] $*"; }

# UUID_ROOT UUID_BOOT UUID_HOME UUID_SWAP ESP_ID, as in the tree's fstab.
# shellcheck disable=SC1091
. "$job/disk.env"
[ -d /sys/firmware/efi ] || fail "not booted under UEFI: grub-install could not create the EFI boot entry"
disk=""
for d in /sys/block/vd*; do
    [ "$(cat "$d/serial" 2>/dev/null)" = lifeboat-debian ] && disk=/dev/${d##*/}
done
[ -n "$disk" ] || fail "no virtio disk with serial lifeboat-debian"
step "target disk $disk ($(($(cat "/sys/block/${disk#/dev/}/size") / 2048)) MiB)"

step "partitioning"
sfdisk -q "$disk" <<TABLE
label: gpt
start=1MiB, size=1MiB, type=21686148-6449-6E6F-744E-656564454649, name=bios-boot
size=200MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
size=400MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=boot
type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name=lvm
TABLE
for i in 1 2 3 4; do wait_for_node "$disk$i"; done

step "file systems and LVM"
mkfs.vfat -F 32 -n ESP -i "$ESP_ID" "${disk}2" >/dev/null
mkfs.ext4 -q -F -L boot -U "$UUID_BOOT" "${disk}3"
pvcreate -ff -y "${disk}4"
vgcreate vg0 "${disk}4"
lvcreate -y -n root -L 3G vg0
lvcreate -y -n home -L 512M vg0
lvcreate -y -n swap -L 512M vg0
for lv in root home swap; do wait_for_node "/dev/mapper/vg0-$lv"; done
mkfs.ext4 -q -F -L root -U "$UUID_ROOT" /dev/mapper/vg0-root
mkfs.xfs -q -f -L home -m uuid="$UUID_HOME" /dev/mapper/vg0-home
mkswap -L swap -U "$UUID_SWAP" /dev/mapper/vg0-swap >/dev/null

mkdir -p "$target"
mount /dev/mapper/vg0-root "$target"
mkdir -p "$target/boot" "$target/home"
mount "${disk}3" "$target/boot"
mkdir -p "$target/boot/efi"
mount -t vfat -o umask=0077 "${disk}2" "$target/boot/efi"
mount /dev/mapper/vg0-home "$target/home"

step "unpacking the tree"
tar -C "$target" --numeric-owner --xattrs --xattrs-include='*' -xpf "$job/rootfs.tar"
[ -x "$target/usr/lib/systemd/systemd" ] || fail "the tree has no systemd"
grep -q "^UUID=$UUID_ROOT " "$target/etc/fstab" || fail "the tree's fstab does not match disk.env"

mount --bind /dev "$target/dev"
mount --bind /dev/pts "$target/dev/pts"
mount -t proc proc "$target/proc"
mount --bind /sys "$target/sys"
mount -t efivarfs efivarfs "$target/sys/firmware/efi/efivars"
mount -t tmpfs -o mode=0755 tmpfs "$target/run"

step "grub-install i386-pc"
in_target grub-install --target=i386-pc "$disk"
step "grub-install x86_64-efi"
in_target grub-install --target=x86_64-efi --efi-directory=/boot/efi --bootloader-id=debian
# The removable fallback path EFI/BOOT/BOOTX64.EFI, for firmware that lost
# its boot entries.
in_target grub-install --target=x86_64-efi --efi-directory=/boot/efi --removable --no-nvram
step "update-grub"
in_target update-grub

step "checking"
grep -q "root=/dev/mapper/vg0-root" "$target/boot/grub/grub.cfg" ||
    fail "grub.cfg does not boot root=/dev/mapper/vg0-root"
grep -q "console=ttyS0,115200n8" "$target/boot/grub/grub.cfg" || fail "grub.cfg has no serial console"
[ -f "$target/boot/efi/EFI/debian/grubx64.efi" ] || fail "no EFI/debian/grubx64.efi on the ESP"
[ -f "$target/boot/efi/EFI/BOOT/BOOTX64.EFI" ] || fail "no EFI/BOOT/BOOTX64.EFI on the ESP"
efibootmgr -v | tee "$job/efibootmgr.txt"
grep -q "^Boot[0-9A-F]*\* debian" "$job/efibootmgr.txt" || fail "no EFI boot entry named debian"
for dev in /dev/mapper/vg0-root /dev/mapper/vg0-home /dev/mapper/vg0-swap "${disk}3" "${disk}2"; do
    echo "$dev: $(blkid -c /dev/null -o export "$dev" | grep -E '^(TYPE|UUID|LABEL)=' | tr '\n' ' ')"
done

step "unmounting"
sync
umount -R "$target"
vgchange -an vg0
sync
step "done"
