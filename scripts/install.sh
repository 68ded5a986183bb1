#!/usr/bin/env bash
# Installs lifeboat: the binary, its man pages, the bash, zsh and fish
# completions, and the commented example configuration as
# /etc/lifeboat/lifeboat.toml (an existing one is never overwritten; the
# example also goes to the doc folder).
#
#   scripts/install.sh [--prefix DIR] [--destdir DIR] [--binary PATH]
#
#   --prefix DIR    installation prefix (default /usr/local): DIR/sbin/lifeboat,
#                   DIR/share/man/man8/lifeboat*.8, DIR/share/doc/lifeboat/
#   --destdir DIR   stage everything below DIR (for packaging)
#   --binary PATH   install this binary instead of building a release one
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
destdir=
binary=
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --destdir) destdir=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [ -z "$binary" ]; then
    cargo build --release --locked
    binary=${CARGO_TARGET_DIR:-target}/release/lifeboat
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 2; }

sbin=$destdir$prefix/sbin
man8=$destdir$prefix/share/man/man8
doc=$destdir$prefix/share/doc/lifeboat
etc=$destdir/etc/lifeboat

install -D -m 0755 "$binary" "$sbin/lifeboat"
echo "installed $sbin/lifeboat"

# One page per command, generated from the command line definitions.
mkdir -p "$man8"
"$sbin/lifeboat" internal man-pages "$man8" >/dev/null
echo "installed $(ls "$man8"/lifeboat*.8 | wc -l) man pages in $man8"

# Completions where bash-completion, zsh and fish look below the prefix.
comp=$(mktemp -d)
"$sbin/lifeboat" internal completions "$comp" >/dev/null
install -D -m 0644 "$comp/bash/lifeboat.bash" "$destdir$prefix/share/bash-completion/completions/lifeboat"
install -D -m 0644 "$comp/zsh/_lifeboat" "$destdir$prefix/share/zsh/site-functions/_lifeboat"
install -D -m 0644 "$comp/fish/lifeboat.fish" "$destdir$prefix/share/fish/vendor_completions.d/lifeboat.fish"
rm -rf "$comp"
echo "installed bash, zsh and fish completions below $destdir$prefix/share"

install -D -m 0644 docs/lifeboat.toml.example "$doc/lifeboat.toml.example"
install -D -m 0644 README.md "$doc/README.md"
if [ -e "$etc/lifeboat.toml" ]; then
    echo "kept the existing $etc/lifeboat.toml (the example is in $doc)"
else
    install -D -m 0644 docs/lifeboat.toml.example "$etc/lifeboat.toml"
    echo "installed $etc/lifeboat.toml (every key commented out: built-in defaults)"
fi
install -d -m 0700 "$destdir/var/lib/lifeboat"

cat <<EOF
next: edit /etc/lifeboat/lifeboat.toml, check it with \`lifeboat config show\`,
then \`lifeboat schedule install --rebuild-rescue\` (add --backup for backups).
EOF
