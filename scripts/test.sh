#!/usr/bin/env bash
# Runs lifeboat's test tiers. As root (loop devices and QEMU need it).
#
#   scripts/test.sh            all tiers: unit, loop, qemu
#   scripts/test.sh unit       lints (fmt, clippy) and pure code, no root needed
#   scripts/test.sh loop       image files on loop devices (root)
#   scripts/test.sh qemu       the rescue image booted in QEMU (TCG)
#
# LIFEBOAT_KEEP_TEST_FILES=1 keeps disk images and logs of failed tests.
# The unit tier checks the systemd units with systemd-analyze (package
# systemd) and fails without it unless LIFEBOAT_SKIP_SYSTEMD_ANALYZE=1.
# It also builds the Debian package (scripts/build-deb.sh) and runs lintian
# on it, failing without lintian unless LIFEBOAT_SKIP_LINTIAN=1.
set -euo pipefail
cd "$(dirname "$0")/.."

tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=(unit loop qemu)

# The integration test targets of a tier, from the file names tests/TIER_*.rs.
targets() {
    local t
    for t in tests/"$1"_*.rs; do
        [ -e "$t" ] && printf -- '--test %s ' "$(basename "$t" .rs)"
    done
}

cargo build --all-targets --locked
for tier in "${tiers[@]}"; do
    echo "=== tier: $tier"
    case "$tier" in
        unit)
            # The lints CI holds the code to (rustfmt and clippy come with
            # the toolchain's default rustup profile).
            cargo fmt --check
            cargo clippy --locked --all-targets -- -D warnings
            cargo test --locked --lib --bins --test cli --test fuzz_parsers
            ;;
        loop)
            # Tests that attach loop devices run one at a time.
            t=$(targets loop)
            if [ -n "$t" ]; then
                # shellcheck disable=SC2086
                cargo test --locked $t -- --test-threads=1
            fi
            ;;
        qemu)
            # Each test boots its own guest; two at a time on two cores,
            # pooled across the test files (scripts/qemu-pool.sh).
            # shellcheck disable=SC2046
            bash scripts/qemu-pool.sh 2 $(targets qemu | sed 's/--test //g')
            ;;
        *)
            echo "unknown tier $tier (use unit, loop or qemu)" >&2
            exit 2
            ;;
    esac
done
echo "=== all requested tiers passed: ${tiers[*]}"
