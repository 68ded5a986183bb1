# An ESP mirrored by md RAID1 (metadata 1.0: each member reads as a plain
# FAT partition) on two disks, as mirrored UEFI servers have it; root on the
# first disk. Booted under OVMF: the source has a boot entry on the first
# member only (the installer's), which is deleted before recovery (new
# hardware has none); recovery must write one per member. The ESP holds
# two GRUB images built on the host: EFI/lifeboat/grubx64.efi (the entry's
# loader) and EFI/BOOT/BOOTX64.EFI (the fallback), printing different words.
SOURCE_DISKS="/dev/vda /dev/vdb"
VARIANTS="same:source"
KEEP_RECOVERED=1
ESP0=e5e5e5e5-0000-4000-8000-000000000001
ESP1=e5e5e5e5-0000-4000-8000-000000000002
ROOT_UUID=0e2c6d4a-3333-4222-8333-4444555566e1

build_source() {
    for d in /dev/vda /dev/vdb; do
        sgdisk -Z "$d" >/dev/null 2>&1 || true
    done
    sgdisk -U 5f3a0c1e-0d2b-4c77-9a55-0000000000e0 -n 1:1M:+64M -t 1:ef00 -c 1:esp0 -u 1:$ESP0 \
        -n 2:0:0 -t 2:8300 -c 2:root /dev/vda >/dev/null
    sgdisk -U 5f3a0c1e-0d2b-4c77-9a55-0000000000e1 -n 1:1M:+64M -t 1:ef00 -c 1:esp1 -u 1:$ESP1 \
        /dev/vdb >/dev/null
    mdadm --create /dev/md0 --run --assume-clean --level=1 --raid-devices=2 --metadata=1.0 \
        --uuid=e5e5e5e5:5f607182:93a4b5c6:d7e8f901 --name=lifeboat-src:esp --homehost=lifeboat-src \
        /dev/vda1 /dev/vdb1
    mkfs.vfat -i 5EF15EF1 -n ESP /dev/md0 >/dev/null
    mkfs.ext4 -q -U $ROOT_UUID -L root /dev/vda2
    mount /dev/vda2 "$SRC"
    mkdir -p "$SRC/boot/efi" "$SRC/etc/mdadm"
    mount /dev/md0 "$SRC/boot/efi"
    mkdir -p "$SRC/boot/efi/EFI/lifeboat" "$SRC/boot/efi/EFI/BOOT"
    cp "$J/entry.efi" "$SRC/boot/efi/EFI/lifeboat/grubx64.efi"
    cp "$J/fallback.efi" "$SRC/boot/efi/EFI/BOOT/BOOTX64.EFI"
    mdadm --detail --scan > "$SRC/etc/mdadm/mdadm.conf"
    cat > "$SRC/etc/fstab" <<FSTAB
UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1
/dev/md0 /boot/efi vfat umask=0077 0 1
FSTAB
    efibootmgr -q --create --disk /dev/vda --part 1 --label lifeboat-esp \
        --loader '\EFI\lifeboat\grubx64.efi'
    efibootmgr -v > "$J/efibootmgr-source.txt"
}

# The entries named lifeboat-esp, deleted: new hardware has none.
delete_entries() {
    for n in $(efibootmgr | grep 'lifeboat-esp' | cut -c5-8); do
        efibootmgr -q -b "$n" -B
    done
}

teardown_source() {
    umount -R "$SRC"
    mdadm --stop /dev/md0
    delete_entries
    efibootmgr -v > "$J/efibootmgr-wiped.txt"
}

mount_tree() {
    efibootmgr -v > "$J/efibootmgr-after.txt"
    [ -b /dev/md0 ] || mdadm --assemble --run /dev/md0 /dev/vda1 /dev/vdb1
    mount -U $ROOT_UUID "$1"
    mount /dev/md0 "$1/boot/efi"
}

umount_tree() {
    umount -R "$1"
    stop_arrays
}
