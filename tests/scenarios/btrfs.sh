# btrfs with subvolumes: @ as /, @home as /home, @srv unmounted; default @.
SOURCE_DISKS="/dev/vda"
VARIANTS="larger:/dev/vdb smaller:/dev/vdc renamed:/dev/nvme0n1 same:source"

build_source() {
    sgdisk -Z /dev/vda >/dev/null 2>&1 || true
    sgdisk -U 5f3a0c1e-0d2b-4c77-9a55-00000000000d -n 1:1M:0 -t 1:8300 -c 1:btrfs /dev/vda >/dev/null
    mkfs.btrfs -q -f -U 0e2c6d4a-5555-4222-8333-444455556601 -L pool /dev/vda1
    mkdir -p /mnt/top
    mount -o subvolid=5 /dev/vda1 /mnt/top
    btrfs -q subvolume create /mnt/top/@
    btrfs -q subvolume create /mnt/top/@home
    btrfs -q subvolume create /mnt/top/@srv
    btrfs subvolume set-default /mnt/top/@
    umount /mnt/top
    mount /dev/vda1 "$SRC"
    mkdir -p "$SRC/home" "$SRC/etc"
    mount -o subvol=@home /dev/vda1 "$SRC/home"
    echo "on @home" > "$SRC/home/file.txt"
    cat > "$SRC/etc/fstab" <<FSTAB
UUID=0e2c6d4a-5555-4222-8333-444455556601 / btrfs defaults 0 0
UUID=0e2c6d4a-5555-4222-8333-444455556601 /home btrfs subvol=@home 0 0
FSTAB
}

teardown_source() { umount -R "$SRC"; }

mount_tree() {
    btrfs device scan >/dev/null 2>&1 || true
    mount -U 0e2c6d4a-5555-4222-8333-444455556601 "$1"
    mount -o subvol=@home -U 0e2c6d4a-5555-4222-8333-444455556601 "$1/home"
}

umount_tree() { umount -R "$1"; }
