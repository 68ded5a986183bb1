# md RAID1 on two disks, ext4 root on the array, /boot on the first disk.
SOURCE_DISKS="/dev/vda /dev/vdb"
VARIANTS="larger:/dev/vdc,/dev/vdd smaller:/dev/vde,/dev/vdf renamed:/dev/nvme0n1,/dev/nvme1n1 same:source"

build_source() {
    for d in /dev/vda /dev/vdb; do
        sgdisk -Z "$d" >/dev/null 2>&1 || true
    done
    sgdisk -U 5f3a0c1e-0d2b-4c77-9a55-00000000000a -n 1:1M:+128M -t 1:8300 -c 1:boot \
        -n 2:0:0 -t 2:fd00 -c 2:raid /dev/vda >/dev/null
    sgdisk -U 5f3a0c1e-0d2b-4c77-9a55-00000000000b -n 1:1M:+128M -t 1:8300 -c 1:spare \
        -n 2:0:0 -t 2:fd00 -c 2:raid /dev/vdb >/dev/null
    mdadm --create /dev/md0 --run --assume-clean --level=1 --raid-devices=2 --metadata=1.2 \
        --uuid=1b2c3d4e:5f607182:93a4b5c6:d7e8f901 --name=lifeboat-src:0 --homehost=lifeboat-src \
        /dev/vda2 /dev/vdb2
    mkfs.ext4 -q -U 0e2c6d4a-3333-4222-8333-444455556601 -L root /dev/md0
    mkfs.ext4 -q -U 0e2c6d4a-3333-4222-8333-444455556602 -L boot /dev/vda1
    mount /dev/md0 "$SRC"
    mkdir -p "$SRC/boot" "$SRC/etc/mdadm"
    mount /dev/vda1 "$SRC/boot"
    echo "kernel" > "$SRC/boot/vmlinuz-test"
    mdadm --detail --scan > "$SRC/etc/mdadm/mdadm.conf"
    cat > "$SRC/etc/fstab" <<FSTAB
/dev/md0 / ext4 errors=remount-ro 0 1
/dev/vda1 /boot ext4 defaults 0 2
FSTAB
}

teardown_source() { umount -R "$SRC"; mdadm --stop /dev/md0; }

mount_tree() {
    mdadm --assemble --scan --run >/dev/null 2>&1 || true
    mount -U 0e2c6d4a-3333-4222-8333-444455556601 "$1"
    mount -U 0e2c6d4a-3333-4222-8333-444455556602 "$1/boot"
}

umount_tree() {
    umount -R "$1"
    stop_arrays
}
