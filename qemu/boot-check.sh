#!/usr/bin/env bash
# Boots a disk image of a Debian system that has the lifeboat test job runner
# (qemu/guest/, installed by build-debian.sh) and runs one job in it: the
# check that the built source system boots, and that a recovered disk boots.
#
#   qemu/boot-check.sh IMAGE VARS|none bios|uefi JOB OUTDIR
#
#   IMAGE   the system disk (raw or qcow2: pass a copy or an overlay, the
#           boot writes to it)
#   VARS    OVMF variable store to boot with (uefi; copied to OUTDIR/vars.fd
#           first, so the file given is never changed), or "none": under
#           uefi a blank store, so the firmware finds EFI/BOOT/BOOTX64.EFI
#   bios    SeaBIOS, the system disk first in the boot order;
#   uefi    OVMF on q35 with pflash; the boot order is the store's own
#           (BOOT_CHECK_SECURE_BOOT=1: OVMF's Secure Boot firmware on q35
#           with SMM, and with VARS "none" a store with Microsoft's keys)
#   JOB     job.sh for the guest: a script file, a folder holding job.sh
#           (and anything else it needs), or "default" for
#           qemu/boot-check-job.sh (uname -r, findmnt, lsblk, efibootmgr -v,
#           fstab verification)
#   OUTDIR  created if needed; gets serial.log (the whole console),
#           job/ (the job disk read back: job.log, job.rc, files the job
#           wrote), vars.fd (uefi: the store after the boot), qemu.err
#
# Environment: BOOT_CHECK_JOB_ROOM_MIB (free space on the job disk for what
# the job writes, default 0 + 64 MiB), BOOT_CHECK_TIMEOUT (seconds, default
# 600), BOOT_CHECK_SMP
# (vCPUs, default 2), BOOT_CHECK_MEMORY (MiB, default 1024), BOOT_CHECK_SECTOR
# (logical and physical sector size of the system disk: 4096 for 4K-native),
# BOOT_CHECK_NETDEV and BOOT_CHECK_NIC (a network interface instead of none:
# the -netdev and -device arguments, e.g. "user,id=n0,hostfwd=..." and
# "virtio-net-pci,netdev=n0,mac=...,addr=0x7"), BOOT_CHECK_SECURE_BOOT (1:
# uefi with Secure Boot enforced, see above).
#
# Exit codes: 0 the job ran and job.rc is 0; 1 the job ran and failed;
# 3 no result: the system did not boot, run the job or power off in time, or
# Secure Boot refused a loader (shim's "Verification failed", GRUB's "bad shim
# signature") or OVMF found nothing to boot ("No bootable option or device
# was found"): the guest is stopped at once; see OUTDIR/serial.log; 2 usage
# or setup error.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
prog=boot-check
say() { echo "$prog: $*" >&2; }
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}
setup_error() {
    say "error: $*"
    exit 2
}

[ $# -eq 5 ] || usage
image=$1 vars=$2 firmware=$3 job=$4 out=$5
timeout_s=${BOOT_CHECK_TIMEOUT:-600}
smp=${BOOT_CHECK_SMP:-2}
memory=${BOOT_CHECK_MEMORY:-1024}

[ -r "$image" ] || setup_error "no image $image"
case "$firmware" in
    bios | uefi) ;;
    *) setup_error "firmware must be bios or uefi, not $firmware" ;;
esac
if [ "$vars" != none ]; then
    [ "$firmware" = uefi ] || setup_error "a vars file only goes with uefi"
    [ -r "$vars" ] || setup_error "no vars file $vars"
fi
[ "$job" != default ] || job=$here/boot-check-job.sh
if [ -d "$job" ]; then
    [ -f "$job/job.sh" ] || setup_error "$job has no job.sh"
elif [ ! -f "$job" ]; then
    setup_error "no job script $job"
fi
for tool in qemu-system-x86_64 qemu-img mkfs.ext4 debugfs timeout; do
    command -v "$tool" >/dev/null || setup_error "$tool is missing: run scripts/install-deps.sh"
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/job" "$out/job-src" "$out/job.img" "$out/serial.log" "$out/vars.fd"
format=raw
[ "$(head -c 4 "$image" | od -An -tx1 | tr -d ' ')" != 514649fb ] || format=qcow2  # "QFI\xfb"

# The job disk: ext4 labelled LIFEBOAT-JOB, made without mounting.
mkdir "$out/job-src"
if [ -d "$job" ]; then
    cp -a "$job"/. "$out/job-src/"
else
    cp "$job" "$out/job-src/job.sh"
fi
job_mib=$(($(du -sm "$out/job-src" | cut -f1) + 64 + ${BOOT_CHECK_JOB_ROOM_MIB:-0}))
mkfs.ext4 -q -F -L LIFEBOAT-JOB -d "$out/job-src" "$out/job.img" "${job_mib}M" >/dev/null
rm -rf "$out/job-src"

args=(-accel tcg -machine q35 -smp "$smp" -m "$memory"
    -display none -monitor none -no-reboot
    -serial "file:$out/serial.log")
if [ -n "${BOOT_CHECK_NIC:-}" ]; then
    args+=(-netdev "${BOOT_CHECK_NETDEV:?BOOT_CHECK_NIC needs BOOT_CHECK_NETDEV}" -device "$BOOT_CHECK_NIC")
else
    args+=(-nic none)
fi
bootindex=""
if [ "$firmware" = uefi ]; then
    code=/usr/share/OVMF/OVMF_CODE_4M.fd blank=/usr/share/OVMF/OVMF_VARS_4M.fd
    if [ "${BOOT_CHECK_SECURE_BOOT:-0}" = 1 ]; then
        code=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd blank=/usr/share/OVMF/OVMF_VARS_4M.ms.fd
        # The firmware's variable store is writable only from SMM.
        args+=(-machine smm=on -global driver=cfi.pflash01,property=secure,value=on)
    fi
    for f in "$code" "$blank"; do
        [ -r "$f" ] || setup_error "$f is missing: install ovmf"
    done
    if [ "$vars" = none ]; then
        cp "$blank" "$out/vars.fd"
    else
        cp "$vars" "$out/vars.fd"
    fi
    args+=(-drive "if=pflash,format=raw,readonly=on,file=$code"
        -drive "if=pflash,format=raw,file=$out/vars.fd")
else
    bootindex=",bootindex=0"
fi
args+=(-drive "file=$image,format=$format,if=none,id=sys,cache=unsafe"
    -device "virtio-blk-pci,drive=sys,serial=lifeboat-sys$bootindex${BOOT_CHECK_SECTOR:+,logical_block_size=$BOOT_CHECK_SECTOR,physical_block_size=$BOOT_CHECK_SECTOR}"
    -drive "file=$out/job.img,format=raw,if=none,id=job,cache=unsafe"
    -device "virtio-blk-pci,drive=job,serial=lifeboat-job")

say "booting $image ($format) under $firmware; console in $out/serial.log"
start=$SECONDS
# In the background, so that an interrupted check takes its guest along.
timeout -k 10 "$timeout_s" qemu-system-x86_64 "${args[@]}" 2>"$out/qemu.err" &
qemu=$!
trap 'kill "$qemu" 2>/dev/null' EXIT
# A loader refused under Secure Boot (shim: "Verification failed: (0x1A)
# Security Violation"; GRUB: "bad shim signature") or OVMF finding nothing
# it may boot waits at its message for ever: stop the guest as soon as the
# console shows it.
refused=""
while kill -0 "$qemu" 2>/dev/null; do
    refused=$(grep -a -o -m1 -E 'Verification failed: \(0x[0-9A-Fa-f]+\) [A-Za-z ]*[A-Za-z]|bad shim signature|No bootable option or device was found' \
        "$out/serial.log" 2>/dev/null) && break
    sleep 2
done
[ -z "$refused" ] || kill "$qemu" 2>/dev/null || true
rc=0
wait "$qemu" || rc=$?
trap - EXIT
seconds=$((SECONDS - start))
if [ -n "$refused" ]; then
    say "no result: the boot stopped after $seconds s at \"$refused\" ($out/serial.log)"
    exit 3
elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    tail -n 30 "$out/serial.log" >&2 || true
    say "no result: the guest did not power off within $timeout_s s ($out/serial.log)"
    exit 3
elif [ "$rc" -ne 0 ]; then
    cat "$out/qemu.err" >&2
    say "no result: qemu failed (exit $rc)"
    exit 3
fi

mkdir -p "$out/job"
debugfs -R "rdump / $out/job" "$out/job.img" 2>/dev/null
rm -rf "$out/job/lost+found"
if [ ! -f "$out/job/job.rc" ]; then
    tail -n 30 "$out/serial.log" >&2 || true
    say "no result: the guest powered off after $seconds s without job.rc ($out/serial.log)"
    exit 3
fi
job_rc=$(cat "$out/job/job.rc")
say "$firmware: job.rc=$job_rc after $seconds s; job log $out/job/job.log"
[ "$job_rc" = 0 ] || exit 1
