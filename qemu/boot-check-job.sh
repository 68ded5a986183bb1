#!/bin/bash
# The default job of boot-check.sh, run by the test job runner in the booted
# system. Prints what the checks look at, each under a "== NAME" header, and
# fails (exit 1) when a command fails, fstab names something that is not
# there, or there is no login prompt on ttyS0.
set -u
failed=""
section() {
    local name=$1
    shift
    echo "== $name"
    "$@" || failed="$failed $name"
}
efi() {
    if [ -d /sys/firmware/efi ]; then
        efibootmgr -v
    else
        echo "not booted under UEFI"
    fi
}
section "uname -r" uname -r
section "cmdline" cat /proc/cmdline
section "ls /boot" ls /boot
section "findmnt" findmnt -rn -o TARGET,SOURCE,FSTYPE
section "swapon" swapon --show=NAME,TYPE,SIZE --noheadings
section "lsblk" lsblk -o NAME,TYPE,SIZE,FSTYPE,LABEL,UUID,MOUNTPOINTS
section "efibootmgr -v" efi
section "findmnt --verify" findmnt --verify
section "failed units" systemctl --failed --no-legend --plain
# The login prompt on the serial console (console=ttyS0 on the command line).
section "serial getty" systemctl is-active serial-getty@ttyS0.service
echo "== end"
if [ -n "$failed" ]; then
    echo "failed:$failed"
    exit 1
fi
