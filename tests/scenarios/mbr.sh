# MBR (BIOS era): ext4 root, an extended partition with swap and XFS.
SOURCE_DISKS="/dev/vda"
VARIANTS="larger:/dev/vdb smaller:/dev/vdc renamed:/dev/sda same:source"

build_source() {
    sfdisk -q /dev/vda <<TABLE
label: dos
label-id: 0x5eed1234
start=2048, size=600M, type=83, bootable
type=5
size=64M, type=82
type=83
TABLE
    mkfs.ext4 -q -U 0e2c6d4a-2222-4222-8333-444455556601 -L root /dev/vda1
    mkswap -U 0e2c6d4a-2222-4222-8333-444455556602 /dev/vda5 >/dev/null
    TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -m uuid=0e2c6d4a-2222-4222-8333-444455556603 -L srv /dev/vda6
    mount /dev/vda1 "$SRC"
    mkdir -p "$SRC/srv" "$SRC/etc"
    mount /dev/vda6 "$SRC/srv"
    echo "served" > "$SRC/srv/index.html"
    cat > "$SRC/etc/fstab" <<FSTAB
/dev/vda1 / ext4 errors=remount-ro 0 1
/dev/vda5 none swap sw 0 0
/dev/vda6 /srv xfs defaults 0 2
FSTAB
}

teardown_source() { umount -R "$SRC"; }

mount_tree() {
    mount -U 0e2c6d4a-2222-4222-8333-444455556601 "$1"
    mount -U 0e2c6d4a-2222-4222-8333-444455556603 "$1/srv"
}

umount_tree() { umount -R "$1"; }
