//! Loop tier: archives GNU tar 1.34 writes (as ReaR does: `tar --sparse`,
//! GNU format, gzip) restored by `lifeboat backup restore --from X --to
//! DIR` as root, compared file by file with the source: content, holes,
//! owners (ids up to 2^32-2), modes, times, links, device nodes. Hostile
//! archives (a PAX memory bomb, a uid that would wrap to root) are refused
//! quickly and leave everything outside the target as it was.
//!
//! Root only, one test at a time: `cargo test --test loop_foreign_tar --
//! --test-threads=1`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_lifeboat, Scratch};
use lifeboat::backup::tar::{
    encode_header, pax_record, set_checksum, EntryKind, Header, BLOCK, END,
};
use sha2::{Digest, Sha256};

fn run(cmd: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let mut c = Command::new(cmd);
    for a in args {
        c.arg(a);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A system-like tree in GNU tar's special cases: sparse files with many
/// segments (old GNU extension blocks), data at the end, holes at the
/// end; long names and link targets; owners beyond 16 and 21 bits (base-256
/// fields); set-id bits; hard links; device nodes; a fifo.
fn populate(root: &Path) {
    let p = |s: &str| root.join(s);
    for d in ["etc", "var", "var/lib", "dev", "srv"] {
        fs::create_dir(p(d)).unwrap();
    }
    fs::write(p("etc/hostname"), b"source\n").unwrap();
    let f = fs::File::create(p("var/lib/disk.img")).unwrap();
    for i in 0..30u64 {
        f.write_all_at(format!("block {i}").as_bytes(), i << 20)
            .unwrap();
    }
    f.set_len(40 << 20).unwrap();
    f.write_all_at(b"last", (40 << 20) - 4).unwrap();
    let f = fs::File::create(p("var/lib/trailing-hole")).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.set_len(16 << 20).unwrap();
    fs::File::create(p("var/lib/all-hole"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let deep = p(&["a", "b", "c"].map(|c| c.repeat(90)).join("/"));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("f".repeat(120)), b"deep\n").unwrap();
    fs::hard_link(deep.join("f".repeat(120)), p("srv/hardlink")).unwrap();
    std::os::unix::fs::symlink("t".repeat(200), p("srv/long-target")).unwrap();
    std::os::unix::fs::symlink("../etc/hostname", p("srv/rel")).unwrap();
    fs::write(p("srv/tool"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(p("srv/tool"), Some(4_294_967_294), Some(3_000_000)).unwrap();
    fs::set_permissions(p("srv/tool"), fs::Permissions::from_mode(0o6755)).unwrap();
    std::os::unix::fs::lchown(p("srv/rel"), Some(70_000), Some(70_001)).unwrap();
    run("mknod", &[&p("dev/null"), &"c", &"1", &"3"]);
    run("mknod", &[&p("dev/loop300"), &"b", &"7", &"300"]);
    run("mkfifo", &[&p("dev/fifo")]);
    run(
        "touch",
        &[&"-h", &"-d", &"1999-12-31 23:59:59", &p("srv/rel")],
    );
}

/// One line per path: kind, metadata, content hash, holes, link target.
fn describe(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let ft = m.file_type();
        let mut d = format!(
            "mode={:o} uid={} gid={} mtime={}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime()
        );
        if ft.is_file() {
            let data = fs::read(&p).unwrap();
            d += &format!(
                " size={} sha256={} links={}",
                m.len(),
                hex::encode(Sha256::digest(&data)),
                m.nlink()
            );
            if m.blocks() * 512 < m.len() / 2 {
                d += " sparse";
            }
        } else if ft.is_symlink() {
            d += &format!(" -> {:?}", fs::read_link(&p).unwrap());
        } else if ft.is_char_device() || ft.is_block_device() {
            d += &format!(" rdev={}", m.rdev());
        } else if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        if !rel.is_empty() {
            out.insert(rel, d);
        }
    }
    out
}

fn restore(archive: &Path, to: &Path) -> (i32, String) {
    fs::create_dir_all(to).unwrap();
    let (code, out, err) = run_lifeboat([
        "backup".as_ref(),
        "restore".as_ref(),
        "--from".as_ref(),
        archive.as_os_str(),
        "--to".as_ref(),
        to.as_os_str(),
    ]);
    (code, format!("{out}{err}"))
}

#[test]
fn loop_gnu_tar_archives_restore_identically() {
    require_root!();
    let s = Scratch::new("foreign-tar");
    let src = s.join("src");
    fs::create_dir(&src).unwrap();
    populate(&src);
    let want = describe(&src);
    assert!(want.values().filter(|v| v.contains("sparse")).count() == 3);
    let variants: &[(&str, &[&str])] = &[
        // What ReaR runs (its backup.tar.gz).
        (
            "rear.tar.gz",
            &["--sparse", "--format=gnu", "--numeric-owner", "-z"],
        ),
        ("gnu.tar", &["--sparse", "--numeric-owner"]),
        (
            "pax00.tar",
            &["--format=posix", "--sparse", "--sparse-version=0.0"],
        ),
        (
            "pax01.tar",
            &["--format=posix", "--sparse", "--sparse-version=0.1"],
        ),
        ("pax10.tar.zst", &["--format=posix", "--sparse", "--zstd"]),
    ];
    for (name, args) in variants {
        let archive = s.join(name);
        let mut c = Command::new("tar");
        c.args(*args)
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg(".");
        assert!(c.status().unwrap().success(), "{name}");
        let to = s.join(format!("to-{name}"));
        let (code, out) = restore(&archive, &to);
        assert_eq!(code, 0, "{name}: {out}");
        let got = describe(&to);
        for (k, v) in &want {
            assert_eq!(
                got.get(k),
                Some(v),
                "{name}: {}",
                String::from_utf8_lossy(k)
            );
        }
        assert_eq!(got.len(), want.len(), "{name}: extra entries");
    }
}

/// Everything below `root` except `skip`, with contents and metadata.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<Vec<u8>, String> {
    describe(root)
        .into_iter()
        .filter(|(k, _)| !root.join(std::ffi::OsStr::from_bytes(k)).starts_with(skip))
        .collect()
}

/// A one-block header of `kind` for `path`, typeflag replaced when asked.
fn header_block(path: &str, size: u64, typeflag: u8) -> Vec<u8> {
    let mut h = Header::new(path.as_bytes().to_vec(), EntryKind::File);
    h.size = size;
    let mut b = encode_header(&h);
    b[156] = typeflag;
    set_checksum(&mut b);
    b
}

#[test]
fn loop_hostile_foreign_archives_are_refused() {
    require_root!();
    let s = Scratch::new("foreign-hostile");
    fs::create_dir(s.join("outside")).unwrap();
    fs::write(s.join("outside/keep"), b"keep\n").unwrap();
    // A PAX header declaring 1 GiB, then 1 GiB of zeros: 1 MiB of zstd.
    let bomb = s.join("bomb.tar.zst");
    let mut enc = zstd::Encoder::new(fs::File::create(&bomb).unwrap(), 3).unwrap();
    enc.write_all(&header_block("ok", 0, b'0')).unwrap();
    enc.write_all(&header_block("PaxHeaders/x", 1 << 30, b'x'))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&zeros).unwrap();
    }
    enc.finish().unwrap();
    // A PAX uid of 2^32 for a setuid shell: must never become root's.
    let wrap = s.join("wrap.tar");
    let mut rec = Vec::new();
    pax_record(&mut rec, b"uid", b"4294967296");
    let mut a = header_block("PaxHeaders/sh", rec.len() as u64, b'x');
    a.extend_from_slice(&rec);
    a.resize(a.len().div_ceil(BLOCK) * BLOCK, 0);
    let mut sh = Header::new(b"rootshell".to_vec(), EntryKind::File);
    (sh.mode, sh.size) = (0o4755, 3);
    a.extend_from_slice(&encode_header(&sh));
    a.extend_from_slice(&[b'x'; BLOCK][..]);
    a.extend_from_slice(&END);
    fs::write(&wrap, &a).unwrap();
    for (archive, want) in [
        (
            &bomb,
            "refused tar entry at byte 512: its extended headers take more than 1048576",
        ),
        (
            &wrap,
            "refused tar entry at byte 0: rootshell: uid 4294967296 is outside",
        ),
    ] {
        let before = snapshot(&s.path, &s.join("to"));
        let started = Instant::now();
        let (code, out) = restore(archive, &s.join("to"));
        assert!(started.elapsed() < Duration::from_secs(10), "{out}");
        assert_ne!(code, 0, "{out}");
        assert!(out.contains(want), "{out}");
        assert_eq!(snapshot(&s.path, &s.join("to")), before);
        assert!(!s.join("to/rootshell").exists());
        let _ = fs::remove_dir_all(s.join("to"));
    }
}
