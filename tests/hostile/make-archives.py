#!/usr/bin/env python3
"""Writes the hostile tar archives of tests/loop_hostile.rs.

Usage: make-archives.py OUT_DIR OUTSIDE

OUTSIDE is an absolute directory the archives try to reach from a restore
target; every archive is a plain tar that `lifeboat backup restore --from
X.tar --to DIR` must extract without changing anything outside DIR. The
target is expected to be a sibling of OUTSIDE (relative escapes count on it).
"""

import io
import os
import sys
import tarfile


def entry(tar, name, kind=tarfile.REGTYPE, data=b"", mode=0o644, link="", dev=(0, 0), uid=0, pax=None):
    info = tarfile.TarInfo(name)
    info.pax_headers = pax or {}
    info.type = kind
    info.mode = mode
    info.uid = info.gid = uid
    info.mtime = 1_600_000_000
    info.linkname = link
    info.devmajor, info.devminor = dev
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    else:
        tar.addfile(info)


def payload(tar, at):
    """What an attacker writes once `at` leads outside: a setuid file, a
    file over an existing one, a world-writable directory, a device node
    and a fifo."""
    entry(tar, f"{at}/suid", data=b"#!/bin/sh\nid\n", mode=0o4755)
    entry(tar, f"{at}/secret", data=b"overwritten\n", mode=0o666)
    entry(tar, f"{at}/newdir", tarfile.DIRTYPE, mode=0o777)
    entry(tar, f"{at}/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
    entry(tar, f"{at}/fifo", tarfile.FIFOTYPE, mode=0o666)


def main():
    out, outside = sys.argv[1], sys.argv[2]
    base = os.path.basename(outside)
    cases = {}

    def case(name):
        tar = tarfile.open(os.path.join(out, name + ".tar"), "w", format=tarfile.PAX_FORMAT)
        cases[name] = tar
        return tar

    # A symlink to outside, then entries through it.
    t = case("direct")
    entry(t, "a", tarfile.SYMTYPE, link=outside)
    payload(t, "a")

    # Through two symlinks.
    t = case("chained")
    entry(t, "c1", tarfile.SYMTYPE, link="c2")
    entry(t, "c2", tarfile.SYMTYPE, link=outside)
    payload(t, "c1")

    # Relative: up out of the target, and up and over to OUTSIDE.
    t = case("relative")
    entry(t, "sub", tarfile.DIRTYPE, mode=0o755)
    entry(t, "sub/up", tarfile.SYMTYPE, link="../..")
    payload(t, f"sub/up/{base}")
    entry(t, "over", tarfile.SYMTYPE, link=f"../{base}")
    payload(t, "over")

    # A directory with every mode bit, then a symlink in its place: the
    # deferred chmod must not reach OUTSIDE.
    t = case("deferred-chmod")
    entry(t, "d", tarfile.DIRTYPE, mode=0o7777)
    entry(t, "d", tarfile.SYMTYPE, link=outside)

    # Hard links: made through a symlink, and pointing outside (absolute,
    # through a symlink, with ..).
    t = case("hardlinks")
    entry(t, "f", data=b"inside\n")
    entry(t, "a", tarfile.SYMTYPE, link=outside)
    entry(t, "a/linked", tarfile.LNKTYPE, link="f")
    entry(t, "abs", tarfile.LNKTYPE, link=f"{outside}/secret")
    entry(t, "via", tarfile.LNKTYPE, link="a/secret")
    entry(t, "up", tarfile.LNKTYPE, link=f"../{base}/secret")

    # Entries whose own name leaves the target.
    t = case("dotdot")
    entry(t, f"../{base}/dotdot", data=b"x\n")
    entry(t, f"x/../../{base}/secret", data=b"overwritten\n")

    # A setuid root file and device nodes in the target itself, for
    # --no-same-owner and --no-devices.
    t = case("untrusted")
    entry(t, "bin", tarfile.DIRTYPE, mode=0o755)
    entry(t, "bin/suid", data=b"#!/bin/sh\nid\n", mode=0o6755, uid=1234)
    # cap_net_raw+ep (VFS_CAP_REVISION_2 with the effective flag).
    cap = bytes.fromhex("0100000200200000" + "00" * 12)
    xattrs = {"SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")}
    entry(t, "bin/capable", data=b"#!/bin/sh\nid\n", mode=0o755, pax=xattrs)
    entry(t, "dev", tarfile.DIRTYPE, mode=0o755)
    entry(t, "dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
    entry(t, "dev/sda", tarfile.BLKTYPE, mode=0o660, dev=(8, 0))
    entry(t, "dev/fifo", tarfile.FIFOTYPE, mode=0o644)

    # The same paths again and again: the last entry of each must win,
    # whatever the file writer threads do.
    t = case("order")
    for i in range(300):
        entry(t, f"f{i}", data=b"first\n")
        entry(t, f"f{i}", data=b"second\n")
        entry(t, f"s{i}", data=b"a file\n")
        entry(t, f"s{i}", tarfile.SYMTYPE, link="the-symlink")
        entry(t, f"d{i}", data=b"a file\n")
        entry(t, f"d{i}", tarfile.DIRTYPE, mode=0o750)
        entry(t, f"l{i}", tarfile.SYMTYPE, link="the-symlink")
        entry(t, f"l{i}", data=b"last\n")

    for tar in cases.values():
        tar.close()


if __name__ == "__main__":
    main()
