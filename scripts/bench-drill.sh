#!/usr/bin/env bash
# `lifeboat drill` of the real Debian 12 test system under QEMU (TCG,
# 2 vCPUs), each phase timed: the qemu_drill test (the source system makes
# its layout, backups and rescue images; then a drill that passes beside
# the ones that must fail), run with a release build and its phase times shown. The
# figures go into docs/PERFORMANCE.md. As root.
#
#   scripts/bench-drill.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-drill.sh: run as root (it builds and boots a Debian disk)" >&2
    exit 1
fi
cargo test --release --locked --test qemu_drill -- --nocapture 2>&1 |
    grep -E '^(source:|drill |lifeboat drill|failed as it must|  +[0-9.]+  |test result)'
