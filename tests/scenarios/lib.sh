# Shared steps of the recovery scenarios, run inside the rescue system by
# tests/qemu_recover.rs (sourced by autorun.sh on the job disk).
#
# A scenario file defines:
#   SOURCE_DISKS      the disks the source system is built on
#   VARIANTS          target variants: "name:disk,disk ..." (the disks the
#                     backup is recovered onto, in turn; `source` = the
#                     source disks themselves after they are wiped)
#   build_source      partition, create the stack, mkfs, mount at $SRC
#   mount_tree DIR    mount the recovered system at DIR (after recover)
#   umount_tree DIR   undo mount_tree and deactivate the stack
#   teardown_source   unmount and deactivate the source stack

set -eu
J=$(dirname "$0")
SRC=/mnt/src
export LIFEBOAT_LOG=${LIFEBOAT_LOG:-info}
# The step being run, named when the script stops on a failing command
# (busybox sh has no ERR trap: the EXIT trap names the last step logged).
STEP="starting"
log() { STEP=$*; echo "scenario: $*"; }
trap 'rc=$?; [ "$rc" = 0 ] || echo "scenario: stopped with status $rc during: $STEP"' EXIT

# Stops every md array (active or inactive) (udev may still show a stopped one's
# /dev/md/NAME link under load: /proc/mdstat is the truth), a few tries.
stop_arrays() {
    for try in 1 2 3 4 5 6 7 8 9 10; do
        active=$(awk '/^md[^ ]* : / { print $1 }' /proc/mdstat)
        [ -z "$active" ] && return 0
        for md in $active; do
            mdadm --stop "/dev/$md" >/dev/null 2>&1 || true
        done
        sleep 1
    done
    echo "scenario: md arrays still running after 10 tries:" >&2
    cat /proc/mdstat >&2
    return 1
}

# Fast LUKS key slots under TCG: the test key and the PBKDF settings.
KEY=$J/luks.key
printf 'lifeboat-test-passphrase' > "$KEY"
LUKS_FAST="--pbkdf pbkdf2 --pbkdf-force-iterations 1000"

# A tree with the file kinds recovery must bring back.
fill_tree() {
    root=$1
    mkdir -p "$root/etc" "$root/boot" "$root/var/lib/app" "$root/usr/share/doc/x"
    for i in $(seq 1 200); do
        echo "file $i of the test tree" > "$root/usr/share/doc/x/f$i.txt"
    done
    dd if=/dev/urandom of="$root/var/lib/app/blob.bin" bs=1M count=8 status=none
    dd if=/dev/urandom of="$root/var/lib/app/sparse.img" bs=1M count=1 seek=32 status=none
    ln -s ../usr/share/doc/x/f1.txt "$root/etc/link-to-f1"
    ln "$root/usr/share/doc/x/f2.txt" "$root/var/lib/app/hardlink-f2"
    mkfifo "$root/var/lib/app/fifo"
    chmod 4755 "$root/var/lib/app/blob.bin"
    chown 1234:2345 "$root/usr/share/doc/x/f3.txt"
    touch -d '2001-02-03 04:05:06' "$root/usr/share/doc/x/f4.txt"
}

# sha256 of every regular file, with mode and owner, relative to a root.
sums() {
    (cd "$1" && find . -xdev -type f ! -path './lost+found/*' ! -path './var/log/lifeboat/*' | sort | while read -r f; do
        printf '%s %s %s\n' "$(sha256sum "$f" | cut -d' ' -f1)" "$(stat -c '%a %u:%g %Y' "$f")" "$f"
    done)
}

# Every mount below $1 with its file system, for the sums of each.
tree_sums() {
    root=$1
    for mp in $(findmnt -rn -o TARGET | grep "^$root" | sort); do
        rel=${mp#"$root"}
        echo "## ${rel:-/}"
        sums "$mp"
    done
}

wipe() {
    for d in "$@"; do
        wipefs -a -q "$d"* 2>/dev/null || true
        dd if=/dev/zero of="$d" bs=1M count=4 status=none conv=fsync
        size=$(blockdev --getsize64 "$d")
        dd if=/dev/zero of="$d" bs=1M count=1 seek=$((size / 1048576 - 1)) status=none conv=fsync
    done
}

readonly_disks() { for d in "$@"; do blockdev --setro "$d"; done; }
readwrite_disks() { for d in "$@"; do blockdev --setrw "$d"; done; }

# All disks of all variants (minus the job disk), to hide the others.
all_target_disks() {
    for v in $VARIANTS; do
        echo "${v#*:}" | tr ',' '\n'
    done | grep -v '^source$' | sort -u
}

run_scenario() {
    log "building the source system on $SOURCE_DISKS"
    mkdir -p "$SRC"
    build_source
    fill_tree "$SRC"
    tree_sums "$SRC" > "$J/sums-source.txt"
    log "capturing the layout and backing up"
    lifeboat layout save --root "$SRC" -o "$J/layout.json"
    lifeboat backup create --root "$SRC" --layout "$J/layout.json" --to "$J/backup"
    teardown_source
    wipe $SOURCE_DISKS
    for v in $VARIANTS; do
        name=${v%%:*}
        disks=$(echo "${v#*:}" | tr ',' ' ')
        log "variant $name: recovering onto $disks"
        readonly_disks $(all_target_disks) $SOURCE_DISKS
        maps=""
        if [ "$disks" = source ]; then
            disks=$SOURCE_DISKS
        else
            # The variant's disks were in the layout (not needed) at
            # capture: only --map may choose them.
            set -- $SOURCE_DISKS
            for d in $disks; do
                maps="$maps --map $1=$d"
                shift
            done
        fi
        readwrite_disks $disks
        set +e
        # shellcheck disable=SC2086
        lifeboat recover --yes --backup "$J/backup" --layout "$J/layout.json" \
            --key-file "$KEY" --luks-iter-time 100 --report "$J/report-$name.json" $maps \
            > "$J/recover-$name.log" 2>&1
        echo $? > "$J/recover-$name.rc"
        set -e
        cat "$J/recover-$name.log"
        log "variant $name: checking the recovered tree"
        mkdir -p /mnt/check
        mount_tree /mnt/check
        tree_sums /mnt/check > "$J/sums-$name.txt"
        cp /mnt/check/etc/fstab "$J/fstab-$name.txt"
        lifeboat layout save --root /mnt/check -o "$J/layout-$name.json"
        log "variant $name: unmounting and wiping"
        umount_tree /mnt/check
        # KEEP_RECOVERED=1: the disks stay as recovered (booted afterwards).
        [ "${KEEP_RECOVERED:-}" = 1 ] || wipe $disks
    done
    log "done"
}
