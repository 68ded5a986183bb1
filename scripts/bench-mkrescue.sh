#!/usr/bin/env bash
# Measures the rescue image: build time, initrd and ISO sizes, and the time
# from QEMU start to `lifeboat rescue ready` on the serial console, for the
# kernel+initrd (PXE) boot and the ISO booted as a CD under SeaBIOS and OVMF.
#
#   sudo scripts/bench-mkrescue.sh [RUNS]     (default 3 builds; release build)
#
# With the signed shim and GRUB (installed, or unpacked under SB_ROOT, default
# /var/cache/lifeboat-test/secureboot/root as scripts/install-deps.sh leaves
# them) it measures a Secure Boot build too, and its boot under OVMF's Secure
# Boot firmware with Microsoft's keys. LIFEBOAT=PATH uses that binary instead
# of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
target=${CARGO_TARGET_DIR:-target}
if [ -n "${LIFEBOAT:-}" ]; then
    bin=$LIFEBOAT
else
    cargo build --release --locked >&2
    bin=$target/release/lifeboat
fi
sb_root=${SB_ROOT:-/var/cache/lifeboat-test/secureboot/root}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# RUNS builds into $out/DIR with mkrescue's extra arguments, then the sizes.
builds() {
    local dir=$1
    shift
    for i in $(seq 1 "$runs"); do
        rm -rf "${out:?}/$dir"
        local start end
        start=$(date +%s.%N)
        "$bin" mkrescue --output "$out/$dir" "$@" >"$out/$dir.summary"
        end=$(date +%s.%N)
        printf '  build %d: %.1f s\n' "$i" "$(echo "$end - $start" | bc)"
    done
    local initrd iso unpacked
    initrd=$(stat -c %s "$out/$dir/initrd")
    iso=$(stat -c %s "$out/$dir/lifeboat-rescue.iso")
    unpacked=$(zstd -dc "$out/$dir/initrd" | wc -c)
    printf '  initrd: %.1f MB (zstd; %.1f MB unpacked)\n' "$(echo "$initrd / 1000000" | bc -l)" "$(echo "$unpacked / 1000000" | bc -l)"
    printf '  ISO:    %.1f MB\n' "$(echo "$iso / 1000000" | bc -l)"
    grep 'Secure Boot' "$out/$dir.summary" || true
}

echo "lifeboat mkrescue: $runs builds (host kernel $(ls /boot/vmlinuz-* | sort -V | tail -n1))"
builds r
if [ -f "$sb_root/usr/lib/shim/shimx64.efi.signed" ]; then
    echo "with Secure Boot (shim and signed GRUB from $sb_root):"
    builds sb --secure-boot-root "$sb_root"
fi

# Seconds from QEMU start until the greeting shows on the serial console.
ready_time() {
    local log=$out/serial.log
    rm -f "$log"
    local start
    start=$(date +%s.%N)
    qemu-system-x86_64 -accel tcg -m 1024 -display none -monitor none -nic none \
        -no-reboot -serial "file:$log" "$@" &
    local q=$!
    for _ in $(seq 1 1200); do
        if grep -q 'lifeboat rescue ready' "$log" 2>/dev/null; then
            printf '%.1f' "$(echo "$(date +%s.%N) - $start" | bc)"
            kill "$q" 2>/dev/null
            wait "$q" 2>/dev/null || true
            return
        fi
        sleep 0.1
    done
    kill "$q" 2>/dev/null
    echo "timeout"
}

echo "boot to 'lifeboat rescue ready' (QEMU TCG, 1 vCPU):"
echo "  kernel+initrd (PXE-like): $(ready_time -kernel "$out/r/vmlinuz" -initrd "$out/r/initrd" -append 'console=ttyS0,115200 panic=5') s"
echo "  ISO as CD, SeaBIOS:       $(ready_time -cdrom "$out/r/lifeboat-rescue.iso" -boot d) s"
echo "  ISO as CD, OVMF:          $(ready_time -bios /usr/share/ovmf/OVMF.fd -cdrom "$out/r/lifeboat-rescue.iso" -boot d) s"
if [ -f "$out/sb/lifeboat-rescue.iso" ]; then
    cp /usr/share/OVMF/OVMF_VARS_4M.ms.fd "$out/vars.fd"
    echo "  ISO as CD, OVMF Secure Boot: $(ready_time -machine q35,smm=on \
        -global driver=cfi.pflash01,property=secure,value=on \
        -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd \
        -drive "if=pflash,format=raw,unit=1,file=$out/vars.fd" \
        -cdrom "$out/sb/lifeboat-rescue.iso" -boot d) s"
fi
