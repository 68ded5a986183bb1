#!/usr/bin/env bash
# Measures `lifeboat layout save` inside a QEMU guest (TCG) that carries the
# storage stack of the layout tests (tests/fixtures/machine.sh: GPT + ESP,
# md RAID1, LUKS2, LVM linear/striped/thin, ext4, xfs, btrfs with
# subvolumes, vfat, swap, an MBR disk with LUKS1; 6 disks, 11 dm devices).
#
#   scripts/bench-layout.sh            2 vCPUs, 2 GiB, 10 timed runs
#   SMP=1 RUNS=5 scripts/bench-layout.sh
#
# Each run is the whole command (process start to exit), timed in the guest
# with /proc/uptime (10 ms resolution), after one warm-up run. Needs root
# (mkfs of the job disk), qemu-system-x86, ovmf, grub-pc-bin, e2fsprogs.
set -euo pipefail
cd "$(dirname "$0")/.."

smp=${SMP:-2}
mem=${MEM:-2048}
runs=${RUNS:-10}
target=${CARGO_TARGET_DIR:-target}

cargo build --release --locked --bin lifeboat
bin=$target/release/lifeboat
work=$(mktemp -d "${TMPDIR:-/var/tmp}/lifeboat-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$bin" mkrescue --no-iso --output "$work/rescue" >/dev/null
mkdir "$work/job"
cp tests/fixtures/machine.sh "$work/job/"
cp /usr/lib/grub/i386-pc/boot.img "$work/job/"
cat > "$work/job/autorun.sh" <<JOB
#!/bin/sh
set -e
here=\$(pwd)
. ./machine.sh
lifeboat layout save -o /tmp/warmup.json > "\$here/summary.txt"
i=0
while [ \$i -lt $runs ]; do
    t0=\$(cut -d' ' -f1 /proc/uptime)
    lifeboat layout save -o /tmp/bench.json > /dev/null
    t1=\$(cut -d' ' -f1 /proc/uptime)
    echo "\$t0 \$t1" >> "\$here/times.txt"
    i=\$((i + 1))
done
JOB
mkfs.ext4 -q -F -L LIFEBOAT-AUTO -d "$work/job" "$work/job.img" 64M
for d in a:1024 b:1024 c:512 d:512 f:64; do
    truncate -s "${d#*:}M" "$work/${d%:*}.img"
done
cp /usr/share/OVMF/OVMF_VARS_4M.fd "$work/vars.fd"

drives=()
i=0
for img in a b c d job f; do
    drives+=(-drive "file=$work/$img.img,format=raw,if=none,id=d$i,cache=unsafe"
        -device "virtio-blk-pci,drive=d$i,serial=LBTEST$(printf %02d $i)")
    i=$((i + 1))
done
echo "booting the guest (TCG, $smp vCPU, $mem MiB)..." >&2
timeout 900 qemu-system-x86_64 -accel tcg -smp "$smp" -m "$mem" -machine q35 \
    -nic none -display none -monitor none -no-reboot \
    -serial "file:$work/serial.log" \
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive "if=pflash,format=raw,file=$work/vars.fd" \
    -kernel "$work/rescue/vmlinuz" -initrd "$work/rescue/initrd" \
    -append "console=ttyS0,115200 panic=5 lifeboat.poweroff" \
    "${drives[@]}" </dev/null

rc=$(debugfs -R "cat /autorun.rc" "$work/job.img" 2>/dev/null)
if [ "$rc" != 0 ]; then
    debugfs -R "cat /autorun.log" "$work/job.img" 2>/dev/null | tail -20 >&2
    echo "the guest job failed (exit code ${rc:-none})" >&2
    exit 1
fi
debugfs -R "cat /summary.txt" "$work/job.img" 2>/dev/null | head -1
debugfs -R "cat /times.txt" "$work/job.img" 2>/dev/null |
    awk '{ printf "%.2f\n", $2 - $1 }' | sort -n |
    awk -v smp="$smp" -v mem="$mem" '
        { t[NR] = $1; sum += $1 }
        END {
            n = NR
            med = (n % 2) ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
            printf "layout save, %d runs, TCG %d vCPU %d MiB: min %.2fs, median %.2fs, mean %.2fs, max %.2fs\n",
                n, smp, mem, t[1], med, sum / n, t[n]
        }'
