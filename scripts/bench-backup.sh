#!/usr/bin/env bash
# Backup and restore throughput of `lifeboat backup` against GNU tar + gzip
# (ReaR's default) and GNU tar --zstd, on the same tree, in the same run,
# and lifeboat with its generation encrypted (age, --encrypt-to an SSH
# ed25519 key made for the run) against the same lifeboat in clear.
#
#   scripts/bench-backup.sh [WORKDIR]     (as root; default /var/tmp/lifeboat-bench)
#
# The tree (about 1.3 GB): copies of /usr/share and /usr/bin (many small
# files, text and binaries) plus generated data: compressible logs, a
# database-like file, incompressible random data and a sparse image.
# Every run starts from a warm page cache (the tree is read once first), so
# the figures compare CPU and write paths, not the first read from disk.
# LIFEBOAT_BENCH_KEEP=1 keeps the tree for the next run.
# Then a chain on the same tree: a full, an incremental and a differential,
# each after changing a few percent of it (time, size, and the restore of the
# differential).
# LIFEBOAT_BENCH_TAR=0 leaves out the GNU tar contenders (lifeboat clear
# against encrypted only, for a quicker run).
# LIFEBOAT_BENCH_BASELINE=/path/to/lifeboat also measures another lifeboat
# binary (an older build) in the same run and prints the ratio: a change's
# cost shown before and after on the same tree, page cache and load.
# LIFEBOAT_BENCH_BIN=/path/to/lifeboat measures that build instead of
# building this checkout (cargo build --release).
# Last, restic and Borg repositories (scripts/bench-engines.sh, sourced):
# seven generations of the same tree through restic and Borg alone, through
# lifeboat's restic: and borg: destinations, and lifeboat's native format.
# LIFEBOAT_BENCH_ENGINES=0 leaves them out, =only runs just them.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${1:-/var/tmp/lifeboat-bench}
tree=$work/tree
out=$work/out
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
lifeboat=${LIFEBOAT_BENCH_BIN:-$CARGO_TARGET_DIR/release/lifeboat}

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-backup.sh: run as root (owners and device nodes)" >&2
    exit 1
fi
for tool in tar gzip zstd python3 ssh-keygen; do
    command -v "$tool" >/dev/null || { echo "bench-backup.sh: $tool missing" >&2; exit 1; }
done
if [ "${LIFEBOAT_BENCH_ENGINES:-1}" != 0 ]; then
    for tool in restic borg; do
        command -v "$tool" >/dev/null || { echo "bench-backup.sh: $tool missing (or LIFEBOAT_BENCH_ENGINES=0)" >&2; exit 1; }
    done
fi

if [ -z "${LIFEBOAT_BENCH_BIN:-}" ]; then
    cargo build --release --locked --quiet
fi

if [ ! -d "$tree" ]; then
    echo "== generating $tree"
    mkdir -p "$tree/usr" "$tree/data"
    cp -a /usr/share /usr/bin "$tree/usr/"
    python3 - "$tree/data" <<'PY'
import os, random, sys
d = sys.argv[1]
r = random.Random(42)
words = [w.strip() for w in open("/usr/share/dict/words")] if os.path.exists("/usr/share/dict/words") else \
    "error warning info debug request response user session cache disk network timeout retry".split()
# Logs: 200 MB of compressible text.
with open(f"{d}/app.log", "w") as f:
    n = 0
    while n < 200 << 20:
        line = "2026-11-%02d %02d:%02d:%02d host%d %s: %s\n" % (
            r.randint(1, 28), r.randint(0, 23), r.randint(0, 59), r.randint(0, 59),
            r.randint(1, 9), r.choice(["INFO", "WARN", "ERROR"]),
            " ".join(r.choice(words) for _ in range(r.randint(4, 14))))
        f.write(line)
        n += len(line)
# A database-like file: records with numbers, ids and padding (100 MB).
with open(f"{d}/table.db", "wb") as f:
    for i in range((100 << 20) // 256):
        rec = b"%08d|%s|%d|" % (i, r.choice(words).encode(), r.randint(0, 10**9))
        f.write(rec + os.urandom(32) + b"\0" * (256 - len(rec) - 32))
# Incompressible data (media, already compressed files): 50 MB.
with open(f"{d}/random.bin", "wb") as f:
    f.write(os.urandom(50 << 20))
# Many small generated files: 20,000 config-like files.
for i in range(200):
    sub = f"{d}/small/{i:03d}"
    os.makedirs(sub)
    for j in range(100):
        with open(f"{sub}/f{j:03d}.conf", "w") as f:
            f.write("".join("%s = %d\n" % (r.choice(words), r.randint(0, 1000)) for _ in range(r.randint(1, 60))))
# A sparse VM image: 2 GB apparent, 40 MB of data.
with open(f"{d}/vm.img", "wb") as f:
    f.truncate(2 << 30)
    for k in range(40):
        f.seek(r.randrange(0, (2 << 30) - (1 << 20)))
        f.write(os.urandom(1 << 19) + b"\0" * (1 << 19))
PY
fi

files=$(find "$tree" | wc -l)
bytes=$(du -s --apparent-size --block-size=1 "$tree" | awk '{print $1}')
alloc=$(du -s --block-size=1 "$tree" | awk '{print $1}')
echo "== tree: $files entries, $((alloc / 1000000)) MB on disk ($((bytes / 1000000)) MB apparent, with a 2 GiB sparse image)"

rm -rf "$out"
mkdir -p "$out"
# Warm the page cache so every contender reads from memory.
tar -cf - -C "$tree" . | cat >/dev/null

declare -A secs cpu size
measure() { # name, command...: wall seconds (with the final sync) and CPU seconds
    local name=$1
    shift
    sync
    /usr/bin/time -o "$out/time" -f '%e %U %S' "$@"
    local t0 t1
    t0=$(date +%s.%N)
    sync
    t1=$(date +%s.%N)
    read -r wall user sys <"$out/time"
    secs[$name]=$(echo "$wall + $t1 - $t0" | bc -l)
    cpu[$name]=$(echo "$user + $sys" | bc -l)
    printf '   %-18s %7.1f s wall (%5.1f s + sync %4.1f s), %6.1f s CPU\n' "$name" \
        "${secs[$name]}" "$wall" "$(echo "$t1 - $t0" | bc -l)" "${cpu[$name]}"
}

# A fresh file system per restore: restoring over just-deleted files makes
# ext4's inode allocator (recently_deleted) dominate and hides the tools.
fresh_fs() {
    umount "$out/r" 2>/dev/null || true
    rm -f "$out/fs.img"
    truncate -s 8G "$out/fs.img"
    mkfs.ext4 -q -F "$out/fs.img"
    mkdir -p "$out/r"
    mount -o loop "$out/fs.img" "$out/r"
}
cleanup() { umount "$out/r" 2>/dev/null || true; rm -f "$out/fs.img"; }
trap cleanup EXIT

# Each change: 2% of the small files replaced by a longer version and 4 MB
# appended to the log (an in-place change of a big file: stored whole).
mkdir -p "$out/orig"
log_size=$(stat -c %s "$tree/data/app.log")
churn() { # round
    local i=0 f
    for f in "$tree"/data/small/*/f*.conf; do
        i=$((i + 1))
        [ $(((i + $1) % 50)) -eq 0 ] || continue
        [ -e "$out/orig/$i" ] || cp -p "$f" "$out/orig/$i"
        cp -p "$f" "$f.new"
        echo "changed_in_round = $1" >>"$f.new"
        mv "$f.new" "$f"
    done
    head -c $((4 << 20)) "$tree/data/app.log" >>"$tree/data/app.log"
}
unchurn() {
    local i=0 f
    for f in "$tree"/data/small/*/f*.conf; do
        i=$((i + 1))
        if [ -e "$out/orig/$i" ]; then mv "$out/orig/$i" "$f"; fi
    done
    truncate -s "$log_size" "$tree/data/app.log"
}

engines=${LIFEBOAT_BENCH_ENGINES:-1}
if [ "$engines" != only ]; then

    with_tar=${LIFEBOAT_BENCH_TAR:-1}
    echo "== backup"
    if [ "$with_tar" = 1 ]; then
        measure tar-gzip-backup tar --sparse -czf "$out/tree.tar.gz" -C "$tree" .
        size[tar-gzip]=$(stat -c %s "$out/tree.tar.gz")
        measure tar-zstd-backup tar --sparse --zstd -cf "$out/tree.tar.zst" -C "$tree" .
        size[tar-zstd]=$(stat -c %s "$out/tree.tar.zst")
    fi
    # (its one-line summary goes to /dev/null, the timing line stays)
    measure lifeboat-backup sh -c 'exec "$@" >/dev/null' sh "$lifeboat" backup create --quiet --to "$out/lifeboat" --source "$tree"
    size[lifeboat]=$(du -sb "$out/lifeboat" | awk '{print $1}')
    # Encrypted: the same backup, age to an SSH key (X25519 inside).
    ssh-keygen -q -t ed25519 -N '' -C bench -f "$out/bench-key"
    measure lb-age-backup sh -c 'exec "$@" >/dev/null' sh "$lifeboat" backup create --quiet --to "$out/lb-age" --source "$tree" --encrypt-to "$out/bench-key.pub"
    size[lb-age]=$(du -sb "$out/lb-age" | awk '{print $1}')
    baseline=${LIFEBOAT_BENCH_BASELINE:-}
    contenders=(lifeboat lb-age)
    [ "$with_tar" = 1 ] && contenders=(tar-gzip tar-zstd "${contenders[@]}")
    if [ -n "$baseline" ]; then
        contenders+=(baseline)
        measure baseline-backup sh -c 'exec "$@" >/dev/null' sh "$baseline" backup create --quiet --to "$out/baseline" --source "$tree"
        size[baseline]=$(du -sb "$out/baseline" | awk '{print $1}')
    fi

    echo "== restore (each into a freshly made ext4 on a loop device, as in a recovery)"
    if [ "$with_tar" = 1 ]; then
        fresh_fs
        measure tar-gzip-restore tar --sparse -xzpf "$out/tree.tar.gz" -C "$out/r"
        fresh_fs
        measure tar-zstd-restore tar --sparse --zstd -xpf "$out/tree.tar.zst" -C "$out/r"
    fi
    fresh_fs
    measure lifeboat-restore sh -c 'exec "$@" >/dev/null' sh "$lifeboat" backup restore --quiet --from "$out/lifeboat" --to "$out/r"
    fresh_fs
    measure lb-age-restore sh -c 'exec "$@" >/dev/null' sh "$lifeboat" backup restore --quiet --from "$out/lb-age" --to "$out/r" --identity "$out/bench-key"
    if [ -n "$baseline" ]; then
        fresh_fs
        measure baseline-restore sh -c 'exec "$@" >/dev/null' sh "$baseline" backup restore --quiet --from "$out/baseline" --to "$out/r"
    fi
    cleanup

    echo
    echo "== results ($((alloc / 1000000)) MB of data on disk, $files entries; MB/s over that)"
    printf '%-9s %9s %7s %8s %10s %7s %8s %11s\n' tool "backup s" "MB/s" "CPU s" "restore s" "MB/s" "CPU s" "archive MB"
    for t in "${contenders[@]}"; do
        printf '%-9s %9.1f %7.1f %8.1f %10.1f %7.1f %8.1f %11.1f\n' "$t" \
            "${secs[$t-backup]}" "$(echo "$alloc / ${secs[$t-backup]} / 1000000" | bc -l)" "${cpu[$t-backup]}" \
            "${secs[$t-restore]}" "$(echo "$alloc / ${secs[$t-restore]} / 1000000" | bc -l)" "${cpu[$t-restore]}" \
            "$(echo "${size[$t]} / 1000000" | bc -l)"
    done
    echo
    ratio() { echo "${1} / ${2}" | bc -l; }
    if [ "$with_tar" = 1 ]; then
        printf 'lifeboat vs tar+gzip:   backup %.2fx faster (%.2fx less CPU), restore %.2fx faster (%.2fx less CPU), size %.2f of gzip\n' \
            "$(ratio "${secs[tar-gzip-backup]}" "${secs[lifeboat-backup]}")" "$(ratio "${cpu[tar-gzip-backup]}" "${cpu[lifeboat-backup]}")" \
            "$(ratio "${secs[tar-gzip-restore]}" "${secs[lifeboat-restore]}")" "$(ratio "${cpu[tar-gzip-restore]}" "${cpu[lifeboat-restore]}")" \
            "$(ratio "${size[lifeboat]}" "${size[tar-gzip]}")"
        printf 'lifeboat vs tar --zstd: backup %.2fx faster (%.2fx less CPU), restore %.2fx faster (%.2fx less CPU), size %.2f of tar --zstd\n' \
            "$(ratio "${secs[tar-zstd-backup]}" "${secs[lifeboat-backup]}")" "$(ratio "${cpu[tar-zstd-backup]}" "${cpu[lifeboat-backup]}")" \
            "$(ratio "${secs[tar-zstd-restore]}" "${secs[lifeboat-restore]}")" "$(ratio "${cpu[tar-zstd-restore]}" "${cpu[lifeboat-restore]}")" \
            "$(ratio "${size[lifeboat]}" "${size[tar-zstd]}")"
    fi
    printf 'encrypted vs clear:     backup %.3fx the time (%.3fx the CPU), restore %.3fx the time (%.3fx the CPU), size %.4f of clear\n' \
        "$(ratio "${secs[lb-age-backup]}" "${secs[lifeboat-backup]}")" "$(ratio "${cpu[lb-age-backup]}" "${cpu[lifeboat-backup]}")" \
        "$(ratio "${secs[lb-age-restore]}" "${secs[lifeboat-restore]}")" "$(ratio "${cpu[lb-age-restore]}" "${cpu[lifeboat-restore]}")" \
        "$(ratio "${size[lb-age]}" "${size[lifeboat]}")"
    if [ -n "$baseline" ]; then
        printf 'lifeboat vs baseline:   backup %.3fx the time, restore %.3fx the time, size %.4f of the baseline (%s)\n' \
            "$(ratio "${secs[lifeboat-backup]}" "${secs[baseline-backup]}")" \
            "$(ratio "${secs[lifeboat-restore]}" "${secs[baseline-restore]}")" \
            "$(ratio "${size[lifeboat]}" "${size[baseline]}")" "$("$baseline" --version)"
    fi

    echo
    echo "== a chain after a few percent of changes: full, incremental, differential (lifeboat)"
    chain=$out/chain
    run_chain() { # name, flags...
        local name=$1
        shift
        measure "$name" sh -c 'exec "$@" >/dev/null' sh "$lifeboat" backup create --quiet --to "$chain" --source "$tree" "$@"
        local g
        g=$(ls "$chain" | grep -v '^\.' | tail -n1)
        size[$name]=$(du -sb "$chain/$g" | awk '{print $1}')
    }
    run_chain chain-full
    churn 1
    changed=$(find "$tree" -newer "$chain" -type f | wc -l)
    run_chain chain-incremental --incremental
    churn 2
    run_chain chain-differential --differential
    fresh_fs
    measure chain-diff-restore sh -c 'exec "$@" >/dev/null' sh "$lifeboat" backup restore --quiet --from "$chain" --to "$out/r"
    cleanup
    unchurn
    printf '%-20s %9s %8s %12s\n' generation "seconds" "CPU s" "stored MB"
    for t in chain-full chain-incremental chain-differential; do
        printf '%-20s %9.1f %8.1f %12.1f\n' "${t#chain-}" "${secs[$t]}" "${cpu[$t]}" "$(echo "${size[$t]} / 1000000" | bc -l)"
    done
    printf 'each change: %s files of %s changed or added, 4 MB appended to a 200 MB log\n' "$changed" "$files"
    printf 'restore of the differential (its full and itself): %.1f s wall, %.1f s CPU\n' \
        "${secs[chain-diff-restore]}" "${cpu[chain-diff-restore]}"
fi
if [ "$engines" != 0 ]; then
    # shellcheck source=scripts/bench-engines.sh
    . scripts/bench-engines.sh
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine slows every contender)"
echo "(2 cores: $(nproc); $(tar --version | head -n1); $(zstd --version); lifeboat $("$lifeboat" --version))"

rm -rf "$out"
if [ "${LIFEBOAT_BENCH_KEEP:-0}" != 1 ]; then
    rm -rf "$tree"
fi
