#!/usr/bin/env bash
# The end-to-end recovery of a real Debian 12 system under QEMU (TCG), with
# its timings: inside the source system layout save, backup and mkrescue;
# then the rescue ISO booted on a blank, larger disk recovering unattended
# until it powers off, with the share of each recovery step; then the
# recovered disk booted under SeaBIOS and OVMF's Secure Boot firmware (the
# source gets Debian's signed shim and GRUB first). (This is the qemu_debian
# test, run with its output shown, with a release build of lifeboat as the
# other benchmarks use.) As root.
#
#   sudo scripts/bench-recover.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked --test qemu_debian debian_full_recovery -- --nocapture 2>&1 |
    grep -E '^(source:|timings|recovery steps|  +[0-9.]+  |test result)'
