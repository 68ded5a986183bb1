#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install the dependencies, build
# lifeboat, build a rescue image from the installed Debian kernel, and boot it
# in QEMU (TCG) until the rescue console greets, then power it off.
#
#   sudo scripts/demo.sh [OUTPUT_DIR]      (default /var/lib/lifeboat/rescue)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-/var/lib/lifeboat/rescue}

bash scripts/install-deps.sh
if ! command -v cargo >/dev/null; then
    echo "demo: cargo not found; install Rust with rustup (https://rustup.rs) and run again" >&2
    exit 1
fi
cargo build --release --locked
./target/release/lifeboat mkrescue --output "$out"

echo "demo: booting $out/lifeboat-rescue.iso as a CD in QEMU (TCG, SeaBIOS, serial console)"
log=$(mktemp)
qemu-system-x86_64 -accel tcg -m 1024 -display none -serial "file:$log" -no-reboot -nic none \
    -cdrom "$out/lifeboat-rescue.iso" -boot d &
qemu=$!
trap 'kill $qemu 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 240); do
    if grep -q 'lifeboat rescue ready' "$log"; then
        grep -a -A1 'lifeboat rescue ready' "$log"
        echo "demo: the rescue system booted from the ISO and greeted on the serial console"
        exit 0
    fi
    kill -0 $qemu 2>/dev/null || break
    sleep 0.5
done
echo "demo: no greeting within 120 s; serial log:" >&2
cat "$log" >&2
exit 1
