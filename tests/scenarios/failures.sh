# Recovery must refuse what is unsafe and resume what was interrupted.
#   /dev/vda  the source system (GPT, ext4), wiped after the backup
#   /dev/vdb  a bystander holding a file system with data, excluded at
#             capture (--exclude-disk BYSTANDER): never chosen, never touched
#   /dev/vdc  a disk with a mounted file system: refused
#   /dev/vdd  the target; it holds a file system, so it needs --wipe
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
    mkfs.ext4 -q -L keep /dev/vdb
    mkdir -p /mnt/keep
    mount /dev/vdb /mnt/keep
    dd if=/dev/urandom of=/mnt/keep/data bs=1M count=8 status=none
    umount /mnt/keep
    lifeboat layout save --root "$SRC" --exclude-disk BYSTANDER -o "$J/layout.json"
    lifeboat backup create --root "$SRC" --layout "$J/layout.json" --to "$J/backup"
    umount "$SRC"
    wipe /dev/vda
    blockdev --setro /dev/vda
    sha256sum /dev/vdb > "$J/bystander-before.txt"

    mkfs.ext4 -q -L busy /dev/vdc
    mkdir -p /mnt/busy
    mount /dev/vdc /mnt/busy
    echo "in use" > /mnt/busy/file
    sync
    before_busy=$(sha256sum /mnt/busy/file)
    # vdd and vde in use for the first attempt: the excluded vdb is then
    # the only free disk of the right size, which size order used to take.
    mkfs.ext4 -q -L old-data /dev/vdd
    mkfs.ext4 -q -L tiny /dev/vde
    mkdir -p /mnt/d /mnt/e
    mount /dev/vdd /mnt/d
    mount /dev/vde /mnt/e

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
    # The replacement of vda is missing: the excluded vdb is not a candidate.
    attempt excluded $R
    umount /mnt/d /mnt/e
    # The mounted disk is refused.
    attempt mounted $R --map /dev/vda=/dev/vdc
    # The small disk is short by some bytes.
    attempt too-small $R --map /dev/vda=/dev/vde
    # vdd holds a file system this plan did not write: --wipe is needed.
    attempt nowipe $R --map /dev/vda=/dev/vdd
    # Killed right after the file system was made; then run again: what
    # the interrupted run wrote needs no --wipe.
    attempt killed env LIFEBOAT_FAILPOINT=mkfs:/dev/vdd1 $R --map /dev/vda=/dev/vdd --wipe
    attempt resumed $R --map /dev/vda=/dev/vdd --report "$J/report-resumed.json"

    sha256sum /dev/vdb > "$J/bystander-after.txt"
    [ "$(sha256sum /mnt/busy/file)" = "$before_busy" ] && echo same > "$J/busy-untouched.txt"
    umount /mnt/busy
    mkdir -p /mnt/check
    mount /dev/vdd1 /mnt/check
    tree_sums /mnt/check > "$J/sums-resumed.txt"
    umount /mnt/check
}
