# LUKS2 holding an LVM PV (ext4 root, swap), /boot outside.
SOURCE_DISKS="/dev/vda"
VARIANTS="larger:/dev/vdb smaller:/dev/vdc renamed:/dev/sda same:source"

build_source() {
    sgdisk -Z /dev/vda >/dev/null 2>&1 || true
    sgdisk -U 5f3a0c1e-0d2b-4c77-9a55-00000000000c -n 1:1M:+128M -t 1:8300 -c 1:boot \
        -n 2:0:0 -t 2:8309 -c 2:crypt /dev/vda >/dev/null
    cryptsetup luksFormat --batch-mode --type luks2 $LUKS_FAST \
        --uuid 0e2c6d4a-4444-4222-8333-444455556600 --label cryptroot --key-file "$KEY" /dev/vda2
    cryptsetup open --key-file "$KEY" /dev/vda2 cryptroot
    lvm pvcreate -y -ff /dev/mapper/cryptroot
    lvm vgcreate -y vgc /dev/mapper/cryptroot
    lvm lvcreate -y -L 400M -n root vgc
    lvm lvcreate -y -L 64M -n swap vgc
    mkfs.ext4 -q -U 0e2c6d4a-4444-4222-8333-444455556601 /dev/mapper/vgc-root
    mkswap -U 0e2c6d4a-4444-4222-8333-444455556602 /dev/mapper/vgc-swap >/dev/null
    mkfs.ext4 -q -U 0e2c6d4a-4444-4222-8333-444455556603 -L boot /dev/vda1
    mount /dev/mapper/vgc-root "$SRC"
    mkdir -p "$SRC/boot" "$SRC/etc"
    mount /dev/vda1 "$SRC/boot"
    echo "cryptroot UUID=0e2c6d4a-4444-4222-8333-444455556600 none luks" > "$SRC/etc/crypttab"
    echo "/dev/mapper/vgc-root / ext4 defaults 0 1" > "$SRC/etc/fstab"
}

teardown_source() {
    umount -R "$SRC"
    lvm vgchange -an vgc
    cryptsetup close cryptroot
}

mount_tree() {
    dev=$(blkid -c /dev/null -o device -t UUID=0e2c6d4a-4444-4222-8333-444455556600 | head -n1)
    cryptsetup open --key-file "$KEY" "$dev" cryptroot
    lvm vgchange -ay vgc
    mount /dev/mapper/vgc-root "$1"
    mount -U 0e2c6d4a-4444-4222-8333-444455556603 "$1/boot"
}

umount_tree() {
    umount -R "$1"
    lvm vgchange -an vgc
    cryptsetup close cryptroot
}
