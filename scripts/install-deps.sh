#!/usr/bin/env bash
# Installs the Debian 12 packages that lifeboat's build, rescue image and test
# tiers need. Safe to run again: apt skips what is already there.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (apt-get needs it)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# qemu-system-x86 10.x comes from bookworm-backports (qemu-utils 10 may already
# be installed from there, and 7.2 from bookworm conflicts with it).
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
if ! grep -rqs "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat > /etc/apt/sources.list.d/lifeboat-backports.sources <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${codename}-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

apt-get update -qq

packages=(
    # the rescue image: kernel, shell, ISO, bootloaders
    linux-image-amd64 busybox-static cpio zstd kmod
    xorriso grub-common grub-pc-bin grub-efi-amd64-bin isolinux syslinux-common
    mtools dosfstools
    # mkrescue --usb: SYSLINUX's installer and gptmbr.bin (no maintainer
    # scripts); the QEMU tier's PXE boots use ipxe-qemu's NIC ROMs
    syslinux ipxe-qemu
    # storage tools that capture and recovery run
    lvm2 mdadm cryptsetup cryptsetup-bin e2fsprogs xfsprogs btrfs-progs
    gdisk fdisk parted util-linux efibootmgr acl attr thin-provisioning-tools
    # the QEMU tier and full-system tests
    ovmf debootstrap
    # benchmarks and compatibility checks
    tar gzip bsdextrautils libarchive-tools pigz hyperfine
    # backup tests and benchmark: setcap, getfattr/setfacl, bc, python3
    libcap2-bin bc python3
    # unit tier: systemd-analyze verify of the generated units, and man to
    # see whether the page a unit names is installed
    systemd man-db
    # unit tier: scripts/build-deb.sh (dpkg-shlibdeps, strip) and lintian
    dpkg-dev binutils lintian
    # building lifeboat (zstd links the system libzstd)
    pkg-config libzstd-dev
    # restic and Borg destinations and their tests: the engines, an SFTP
    # server (sshd), the REST protocol (rclone serve restic), TLS roots
    restic borgbackup rclone openssh-server openssh-client ca-certificates
    # the rescue's network (iproute2's ip: VLANs, bonds, bridges, -json)
    # and SSH into it (sshd above; dropbear-bin: the lighter server, binaries
    # only: no maintainer scripts, no service on this host)
    iproute2 dropbear-bin
)
# --no-install-recommends keeps mdadm from pulling in an MTA.
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends -t "${codename}-backports" qemu-system-x86 >/dev/null
# qemu-img (qcow2 overlays of the Debian test system, qemu/) is in qemu-utils,
# which qemu-system-x86 only recommends.
apt-get install -y -qq --no-install-recommends -t "${codename}-backports" qemu-utils >/dev/null

# The S3 server of the restic tests (tests/common/servers.rs): s3s-fs from
# crates.io, built once per cache (0.14.0: newer ones need a newer Rust).
s3s_root=/var/cache/lifeboat-test/s3s-fs-0.14.0
if [ ! -x "$s3s_root/bin/s3s-fs" ]; then
    mkdir -p "$s3s_root"
    CARGO_TARGET_DIR=/var/cache/lifeboat-test/s3s-build \
        cargo install --quiet --locked s3s-fs@0.14.0 --features binary --root "$s3s_root"
    rm -rf /var/cache/lifeboat-test/s3s-build
fi

# The Secure Boot tests: Debian's signed shim and GRUB, never installed on
# this machine (their maintainer scripts run grub-install on its disk).
# tests/qemu_secureboot.rs builds its ISO from them unpacked in $sb_root
# (mkrescue --secure-boot-root); tests/qemu_debian.rs installs the .debs
# kept in $sb_debs_dir with dpkg -i inside the Debian test guest, which
# lacks shim-unsigned and mokutil (dependencies of shim-helpers-amd64-signed
# and shim-signed) and has the rest.
sb_unpack=(shim-signed shim-helpers-amd64-signed grub-efi-amd64-signed)
sb_debs=("${sb_unpack[@]}" shim-signed-common shim-unsigned mokutil)
sb_root=/var/cache/lifeboat-test/secureboot/root
sb_debs_dir=/var/cache/lifeboat-test/secureboot/debs
rm -rf "$sb_root.new" "$sb_debs_dir.new" && mkdir -p "$sb_root.new" "$sb_debs_dir.new"
for pkg in "${sb_debs[@]}"; do
    version=$(apt-cache policy "$pkg" | sed -n 's/^  Candidate: //p')
    deb="${pkg}_${version//:/%3a}_amd64.deb"
    [ -f "$sb_debs_dir/$deb" ] || deb="${pkg}_${version//:/%3a}_all.deb"
    if [ -f "$sb_debs_dir/$deb" ]; then
        cp "$sb_debs_dir/$deb" "$sb_debs_dir.new/"
    else
        (cd "$sb_debs_dir.new" && apt-get download -qq "$pkg=$version")
    fi
done
for pkg in "${sb_unpack[@]}"; do
    dpkg-deb -x "$sb_debs_dir.new/${pkg}"_*.deb "$sb_root.new"
done
rm -rf "$sb_root" "$sb_debs_dir"
mv "$sb_root.new" "$sb_root" && mv "$sb_debs_dir.new" "$sb_debs_dir"

# Off-host copies of the rescue image over NFS and CIFS
# (tests/qemu_offhost.rs): the test runs its own smbd and NFS-Ganesha on
# 127.0.0.1, never the packages' services. Samba is installed with its
# services kept from starting (a policy-rc.d while apt runs) and disabled;
# NFS-Ganesha (whose package pulls in rpcbind and nfs-common and starts its
# service) is only unpacked, beside its libraries from apt. The guest's NFS
# and CIFS clients (nfs-common, cifs-utils and what the Debian test image
# lacks of their dependencies) are .debs that the guest installs.
policy=/usr/sbin/policy-rc.d own_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 0755 "$policy"
    own_policy=yes
    trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -qq --no-install-recommends samba \
    libntirpc4.3 liburcu8 libnfsidmap1 libwbclient0 >/dev/null
if [ "$own_policy" = yes ]; then
    rm -f "$policy"
    trap - EXIT
fi
for unit in smbd nmbd samba-ad-dc; do
    if [ -d /run/systemd/system ]; then
        systemctl disable --now "$unit.service" >/dev/null 2>&1 || true
    fi
    update-rc.d "$unit" disable >/dev/null 2>&1 || true
done
# $1: folder, then packages: their candidate .debs in the folder (older
# versions removed).
fetch_debs() {
    local dir=$1 pkg version
    shift
    mkdir -p "$dir"
    for pkg in "$@"; do
        version=$(apt-cache policy "$pkg" | sed -n 's/^  Candidate: //p')
        if ! compgen -G "$dir/${pkg}_${version//:/%3a}_*.deb" >/dev/null; then
            rm -f "$dir/${pkg}"_*.deb
            (cd "$dir" && apt-get download -qq "$pkg=$version")
        fi
    done
}
ganesha_debs=/var/cache/lifeboat-test/debs/nfs-ganesha
ganesha_root=/var/cache/lifeboat-test/nfs-ganesha/root
fetch_debs "$ganesha_debs" nfs-ganesha nfs-ganesha-vfs
rm -rf "$ganesha_root.new" && mkdir -p "$ganesha_root.new"
for deb in "$ganesha_debs"/*.deb; do
    dpkg-deb -x "$deb" "$ganesha_root.new"
done
rm -rf "$ganesha_root" && mv "$ganesha_root.new" "$ganesha_root"
fetch_debs /var/cache/lifeboat-test/debs/netfs-client \
    nfs-common cifs-utils keyutils rpcbind ucf sensible-utils libnfsidmap1 \
    libevent-core-2.1-7 libwrap0 libldap-2.5-0 libsasl2-2 libsasl2-modules-db \
    libtalloc2 libwbclient0

echo "install-deps: done ($(qemu-system-x86_64 --version | head -n1))"
