#!/usr/bin/env bash
# Before/after of backup and restore throughput: two lifeboat builds,
# alternated, on the tree that scripts/bench-backup.sh keeps with
# LIFEBOAT_BENCH_KEEP=1 (page cache warmed first; each restore into a freshly
# made ext4 on a loop device; times include a final sync). As root:
#
#   scripts/bench-backup-ab.sh NEW_LIFEBOAT OLD_LIFEBOAT [TREE]
set -euo pipefail
new=$1 old=$2 tree=${3:-/var/tmp/lifeboat-bench/tree} out=/var/tmp/lifeboat-ab
[ -d "$tree" ] || { echo "no tree at $tree: run LIFEBOAT_BENCH_KEEP=1 scripts/bench-backup.sh first" >&2; exit 1; }
rm -rf "$out"; mkdir -p "$out/r"
fresh() {
    umount "$out/r" 2>/dev/null || true
    rm -f "$out/fs.img"; truncate -s 8G "$out/fs.img"
    mkfs.ext4 -q -F "$out/fs.img"; mount -o loop "$out/fs.img" "$out/r"
}
t() { sync; local a b; a=$(date +%s.%N); "$@" >/dev/null; sync; b=$(date +%s.%N); echo "$b - $a" | bc -l; }
tar -cf - -C "$tree" . | cat >/dev/null
for v in old new old new; do
    bin=${!v}; rm -rf "${out:?}/$v"
    printf '%s backup  %5.1f s\n' "$v" "$(t "$bin" backup create --quiet --to "$out/$v" --source "$tree")"
done
for _ in 1 2; do
    for v in old new; do
        bin=${!v}; fresh
        printf '%s restore %5.1f s\n' "$v" "$(t "$bin" backup restore --quiet --from "$out/$v" --to "$out/r")"
    done
done
umount "$out/r"
printf 'archive bytes: new %s, old %s\n' "$(du -sb "$out/new" | cut -f1)" "$(du -sb "$out/old" | cut -f1)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$out"
