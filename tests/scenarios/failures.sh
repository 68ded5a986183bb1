# Recovery must refuse what is unsafe and resume what was interrupted.
#   /dev/vda  the source system (GPT, ext4), wiped after the backup
#   /dev/vdb  a bystander disk with a pattern: never mapped, never touched
#   /dev/vdc  a disk with a mounted file system: refused
#   /dev/vdd  the target
#   /dev/vde  a disk too small for the data
SOURCE_DISKS="/dev/vda"

build_source() {
    sgdisk -Z /dev/vda >/dev/null 2>&1 || true
    sgdisk -U 5f3a0c1e-0d2b-4c77-9a55-00000000000f -n 1:1M:0 -t 1:8300 -c 1:root /dev/vda >/dev/null
    mkfs.ext4 -q -U 0e2c6d4a-6666-4222-8333-444455556601 /dev/vda1
    mount /dev/vda1 "$SRC"
    dd if=/dev/urandom of="$SRC/big.bin" bs=1M count=96 status=none
}

run_failures() {
    mkdir -p "$SRC"
    build_source
    fill_tree "$SRC"
    tree_sums "$SRC" > "$J/sums-source.txt"
    lifeboat layout save --root "$SRC" -o "$J/layout.json"
    lifeboat backup create --root "$SRC" --layout "$J/layout.json" --to "$J/backup"
    umount "$SRC"
    wipe /dev/vda
    blockdev --setro /dev/vda

    dd if=/dev/urandom of=/dev/vdb bs=1M count=2 status=none conv=fsync
    mkfs.ext4 -q -L busy /dev/vdc
    mkdir -p /mnt/busy
    mount /dev/vdc /mnt/busy
    echo "in use" > /mnt/busy/file
    sync
    sha256sum /dev/vdb > "$J/bystander-before.txt"
    before_busy=$(sha256sum /mnt/busy/file)

    R="lifeboat recover --yes --backup $J/backup --layout $J/layout.json"
    attempt() {
        name=$1
        shift
        set +e
        "$@" > "$J/$name.log" 2>&1
        echo $? > "$J/$name.rc"
        set -e
        cat "$J/$name.log"
    }
    # Two free disks (vdb, vdd) and one old disk: ambiguous, nothing written.
    attempt ambiguous $R
    # The mounted disk is refused.
    attempt mounted $R --map /dev/vda=/dev/vdc
    # The small disk is short by some bytes.
    attempt too-small $R --map /dev/vda=/dev/vde
    # Killed right after the file system was made; then run again.
    attempt killed env LIFEBOAT_FAILPOINT=mkfs:/dev/vdd1 $R --map /dev/vda=/dev/vdd
    attempt resumed $R --map /dev/vda=/dev/vdd --report "$J/report-resumed.json"

    sha256sum /dev/vdb > "$J/bystander-after.txt"
    [ "$(sha256sum /mnt/busy/file)" = "$before_busy" ] && echo same > "$J/busy-untouched.txt"
    umount /mnt/busy
    mkdir -p /mnt/check
    mount /dev/vdd1 /mnt/check
    tree_sums /mnt/check > "$J/sums-resumed.txt"
    umount /mnt/check
}
