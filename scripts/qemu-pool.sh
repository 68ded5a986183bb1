#!/usr/bin/env bash
# Runs the QEMU tier's tests as one pool, N at a time across all test
# binaries, so that a binary holding one long test does not leave a core idle
# while it runs. Each test runs alone in its own `cargo test` process; its
# output goes to a log, printed in full when it fails. Every test runs even
# after a failure; the exit code is 1 when any failed.
#
#   scripts/qemu-pool.sh JOBS TEST_TARGET...
#
# Longest first: the durations of the previous run (qemu-pool.times in the target folder)
# order the queue; tests without a recorded time go first, in the order the
# targets were given.
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$1
shift
target_dir=${CARGO_TARGET_DIR:-target}
logs=$target_dir/qemu-pool
times=$target_dir/qemu-pool.times
mkdir -p "$logs"
touch "$times"

# "target test" lines, every test that is not #[ignore].
queue=()
for target in "$@"; do
    all=$(cargo test --locked --test "$target" -- --list --format terse 2>/dev/null | sed -n 's/: test$//p')
    ignored=$(cargo test --locked --test "$target" -- --list --format terse --ignored 2>/dev/null | sed -n 's/: test$//p')
    while IFS= read -r t; do
        [ -n "$t" ] || continue
        grep -qxF -- "$t" <<<"$ignored" && continue
        queue+=("$target $t")
    done <<<"$all"
done

# Known durations (seconds) sort the queue, unknown ones first.
ordered=$(for entry in "${queue[@]}"; do
    secs=$(awk -v k="$entry" -F'\t' '$1 == k { s = $2 } END { print (s == "" ? 999999 : s) }' "$times")
    printf '%s\t%s\n' "$secs" "$entry"
done | sort -s -t$'\t' -k1,1nr | cut -f2)

run_one() {
    local target=$1 name=$2 log start rc
    log="$logs/$target.$name.log"
    start=$(date +%s)
    rc=0
    cargo test --locked --test "$target" -- --exact "$name" --nocapture >"$log" 2>&1 || rc=$?
    printf '%s %s\t%s\t%s\n' "$target" "$name" "$(( $(date +%s) - start ))" "$rc" >>"$logs/results"
    return "$rc"
}

: >"$logs/results"
count=0
while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    echo "qemu-pool: start ${entry/ /::} ($(date +%T))"
    # shellcheck disable=SC2086
    run_one $entry &
    count=$((count + 1))
done <<<"$ordered"
wait || true

failed=0
while IFS=$'\t' read -r entry secs rc; do
    if [ "$rc" = 0 ]; then
        echo "qemu-pool: ok   ${entry/ /::} (${secs} s)"
    else
        echo "qemu-pool: FAIL ${entry/ /::} (${secs} s)"
        failed=$((failed + 1))
    fi
done <"$logs/results"

# Keep the durations of passing tests for the next run's order.
awk -F'\t' '$3 == 0 { print $1 "\t" $2 }' "$logs/results" >"$times.new"
awk -F'\t' 'NR == FNR { seen[$1] = 1; print; next } !($1 in seen)' "$times.new" "$times" >"$times.merged" || true
mv "$times.merged" "$times"
rm -f "$times.new"

if [ "$failed" -gt 0 ]; then
    while IFS=$'\t' read -r entry secs rc; do
        [ "$rc" = 0 ] && continue
        set -- $entry
        echo "===== output of $1::$2 (exit $rc)"
        cat "$logs/$1.$2.log"
    done <"$logs/results"
    echo "qemu-pool: $failed of $count tests failed"
    exit 1
fi
echo "qemu-pool: all $count tests passed"
