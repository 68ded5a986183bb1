#!/usr/bin/env bash
# Builds the Debian package lifeboat_VERSION_amd64.deb with dpkg-deb (no
# cargo-deb to install): the binary in /usr/sbin, a man page per command
# and subcommand and the bash, zsh and fish completions (all generated from
# the command line definitions by the binary itself), the systemd units in
# /lib/systemd/system, the example configuration as the conffile
# /etc/lifeboat/lifeboat.toml, the changelog and copyright of
# packaging/deb/, and the maintainer scripts there.
#
#   scripts/build-deb.sh [--binary PATH] [--output DIR] [--lintian]
#
#   --binary PATH   package this binary (stripped on the way) instead of
#                   building a release one
#   --output DIR    where the .deb goes (default: the target folder,
#                   $CARGO_TARGET_DIR or target/)
#   --lintian       run lintian on the result; fail on any tag it prints
#
# Prints the path of the package on stdout. Needs dpkg-dev (dpkg-shlibdeps
# works out the library Depends), binutils (strip), and lintian for --lintian.
#
# Lintian prints nothing. One tag is overridden in the package
# (packaging/deb/lintian-overrides, shipped in usr/share/lintian/overrides/):
#   initial-upload-closes-no-bugs: the package is built from this repository,
#   not uploaded to Debian, so there is no ITP bug for its first changelog
#   entry to close.
set -euo pipefail
cd "$(dirname "$0")/.."

binary= output= lintian=no
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --output) output=${2:?--output needs a folder}; shift 2 ;;
        --lintian) lintian=yes; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

target=${CARGO_TARGET_DIR:-target}
if [ -z "$binary" ]; then
    cargo build --release --locked >&2
    binary=$target/release/lifeboat
fi
[ -x "$binary" ] || { echo "build-deb.sh: $binary is not an executable" >&2; exit 2; }
output=${output:-$target}

# The upstream version from Cargo.toml, Debian revision from the changelog.
deb_version=$(sed -n '1s/^lifeboat (\([^)]*\)).*/\1/p' packaging/deb/changelog)
upstream=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if [ "${deb_version%-*}" != "$upstream" ]; then
    echo "build-deb.sh: packaging/deb/changelog is at $deb_version but Cargo.toml at $upstream: add a changelog entry" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/DEBIAN"

# Contents. Everything root-owned (dpkg-deb --root-owner-group), 0755/0644.
install -D -m 0755 "$binary" "$root/usr/sbin/lifeboat"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/sbin/lifeboat"
lb=$root/usr/sbin/lifeboat

man8=$root/usr/share/man/man8
"$lb" internal man-pages "$man8" >/dev/null
gzip -9n "$man8"/*.8

"$lb" internal completions "$work/completions" >/dev/null
install -D -m 0644 "$work/completions/bash/lifeboat.bash" "$root/usr/share/bash-completion/completions/lifeboat"
install -D -m 0644 "$work/completions/zsh/_lifeboat" "$root/usr/share/zsh/vendor-completions/_lifeboat"
install -D -m 0644 "$work/completions/fish/lifeboat.fish" "$root/usr/share/fish/vendor_completions.d/lifeboat.fish"

"$lb" internal systemd-units "$root/lib/systemd/system" --program /usr/sbin/lifeboat >/dev/null

install -D -m 0644 docs/lifeboat.toml.example "$root/etc/lifeboat/lifeboat.toml"

doc=$root/usr/share/doc/lifeboat
install -D -m 0644 packaging/deb/copyright "$doc/copyright"
gzip -9n <packaging/deb/changelog >"$doc/changelog.Debian.gz"
gzip -9n <README.md >"$doc/README.md.gz"
gzip -9n <docs/recovery.md >"$doc/recovery.md.gz"
chmod 0644 "$doc"/*.gz

install -D -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/lifeboat"

for script in postinst prerm postrm; do
    install -m 0755 "packaging/deb/$script" "$root/DEBIAN/$script"
done
echo /etc/lifeboat/lifeboat.toml >"$root/DEBIAN/conffiles"

# Depends: the shared libraries (dpkg-shlibdeps wants a debian/control).
mkdir -p "$work/src/debian"
printf 'Source: lifeboat\n\nPackage: lifeboat\nArchitecture: amd64\n' >"$work/src/debian/control"
shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$lb" | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || { echo "build-deb.sh: dpkg-shlibdeps found no library dependencies" >&2; exit 1; }

size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)
# Depends: what every run needs (util-linux and mount are there anyway,
# util-linux is essential). Recommends: what `mkrescue` builds the rescue
# image with (its kernel, shell, ISO and bootloaders) and the partitioning
# and file-system tools of nearly every layout. Suggests: tools only some
# layouts need (a machine with md, LVM, LUKS, XFS or Btrfs has them
# already), the drill's QEMU and firmware, and a mail transport for the
# [notify] mails.
cat >"$root/DEBIAN/control" <<CONTROL
Package: lifeboat
Version: $deb_version
Architecture: amd64
Maintainer: lifeboat maintainers <maintainers@users.noreply.r-seed-017d475a.example>
Installed-Size: $size
Depends: $shlibs, mount
Recommends: busybox-static, cpio, kmod, zstd, xorriso, grub-common, grub-pc-bin, grub-efi-amd64-bin, isolinux, syslinux-common, mtools, dosfstools, e2fsprogs, fdisk, gdisk
Suggests: lvm2, mdadm, cryptsetup-bin, xfsprogs, btrfs-progs, thin-provisioning-tools, efibootmgr, qemu-system-x86, qemu-utils, ovmf, default-mta | mail-transport-agent
Section: admin
Priority: optional
Description: bare-metal disaster recovery for Linux servers
 lifeboat records a server's storage and boot layout (disks, GPT/MBR, md
 RAID, LUKS, LVM, file systems, bootloader), backs up its files as tar and
 zstd, builds a bootable rescue image from the host's own kernel and tools,
 and in that rescue system recreates the same machine on new disks,
 restores the files and makes it boot again.
 .
 A systemd timer (lifeboat schedule install) keeps the layout snapshot,
 backup and rescue image current; lifeboat check is a monitoring plugin
 and lifeboat drill proves a recovery in a QEMU guest.
CONTROL

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

mkdir -p "$output"
deb=$output/lifeboat_${deb_version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"

if [ "$lintian" = yes ]; then
    # --fail-on warning: a warning fails the build like an error.
    lintian --fail-on error,warning --tag-display-limit 0 "$deb" >&2
fi
