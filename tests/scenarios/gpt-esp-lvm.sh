# GPT + BIOS boot + ESP (vfat) + LVM (ext4 root, xfs home, swap, a thin pool
# with an ext4 thin volume on /srv) on one disk.
SOURCE_DISKS="/dev/vda"
VARIANTS="larger:/dev/vdb smaller:/dev/vdc renamed:/dev/nvme0n1 same:source"

build_source() {
    sgdisk -Z /dev/vda >/dev/null 2>&1 || true
    sgdisk -U 5f3a0c1e-0d2b-4c77-9a55-0123456789ab \
        -n 1:1M:+1M -t 1:ef02 -c 1:bios -u 1:a1a1a1a1-0000-4000-8000-000000000001 \
        -n 2:0:+64M -t 2:ef00 -c 2:esp -u 2:a1a1a1a1-0000-4000-8000-000000000002 \
        -n 3:0:0 -t 3:8e00 -c 3:lvm -u 3:a1a1a1a1-0000-4000-8000-000000000003 /dev/vda >/dev/null
    mkfs.vfat -i 1234ABCD -n ESP /dev/vda2 >/dev/null
    lvm pvcreate -y -ff --norestorefile --uuid Pv0000-0000-0000-0000-0000-0000-000001 /dev/vda3
    lvm vgcreate -y vg0 /dev/vda3
    lvm lvcreate -y -L 320M -n root vg0
    lvm lvcreate -y -L 300M -n home vg0
    lvm lvcreate -y -L 64M -n swap vg0
    lvm lvcreate -y --type thin-pool -L 96M -n pool vg0
    lvm lvcreate -y --type thin -V 256M -n srv --thinpool pool vg0
    mkfs.ext4 -q -U 0e2c6d4a-1111-4222-8333-444455556601 -L root /dev/mapper/vg0-root
    TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -m uuid=0e2c6d4a-1111-4222-8333-444455556602 -L home /dev/mapper/vg0-home
    mkswap -U 0e2c6d4a-1111-4222-8333-444455556603 -L swap /dev/mapper/vg0-swap >/dev/null
    mkfs.ext4 -q -U 0e2c6d4a-1111-4222-8333-444455556604 -L srv /dev/mapper/vg0-srv
    mount /dev/mapper/vg0-root "$SRC"
    mkdir -p "$SRC/home" "$SRC/boot/efi" "$SRC/etc" "$SRC/srv"
    mount /dev/mapper/vg0-home "$SRC/home"
    mount /dev/mapper/vg0-srv "$SRC/srv"
    dd if=/dev/urandom of="$SRC/srv/thin-data.bin" bs=1M count=4 status=none
    mount -t vfat /dev/vda2 "$SRC/boot/efi"
    mkdir -p "$SRC/boot/efi/EFI/BOOT" "$SRC/home/user"
    echo "not really a loader" > "$SRC/boot/efi/EFI/BOOT/BOOTX64.EFI"
    echo "home data" > "$SRC/home/user/notes.txt"
    cat > "$SRC/etc/fstab" <<FSTAB
UUID=0e2c6d4a-1111-4222-8333-444455556601 / ext4 errors=remount-ro 0 1
UUID=0e2c6d4a-1111-4222-8333-444455556602 /home xfs defaults 0 2
UUID=1234-ABCD /boot/efi vfat umask=0077 0 1
/dev/vg0/srv /srv ext4 defaults 0 2
/dev/mapper/vg0-swap none swap sw 0 0
FSTAB
}

teardown_source() {
    umount -R "$SRC"
    lvm vgchange -an vg0
}

mount_tree() {
    lvm vgchange -ay vg0
    mount /dev/mapper/vg0-root "$1"
    mount /dev/mapper/vg0-home "$1/home"
    mount /dev/mapper/vg0-srv "$1/srv"
    mount -t vfat -U 1234-ABCD "$1/boot/efi"
}

umount_tree() {
    umount -R "$1"
    lvm vgchange -an vg0
}
