//! Loop tier for `lifeboat backup`: ext4 and xfs images on loop devices, a
//! tree with every file kind, round trips compared by an independent tree
//! walker, GNU tar compatibility both ways, incremental chains, damage.
//!
//! Root only, one test at a time: `cargo test --test loop_backup --
//! --test-threads=1`. `LIFEBOAT_KEEP_TEST_FILES=1` keeps the images and
//! backups (their paths are printed).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::data;
use lifeboat::exec::Cmd;
use sha2::{Digest, Sha256};

fn keep() -> bool {
    std::env::var_os("LIFEBOAT_KEEP_TEST_FILES").is_some_and(|v| v == "1")
}

/// A scratch folder, removed on drop unless LIFEBOAT_KEEP_TEST_FILES=1.
struct Scratch {
    _tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let t = tempfile::Builder::new()
            .prefix(&format!("lifeboat-{name}-"))
            .tempdir_in("/var/tmp")
            .unwrap();
        let p = t.path().to_path_buf();
        if keep() {
            eprintln!("keeping test files in {}", p.display());
            let _ = t.keep();
            return Scratch {
                _tmp: None,
                path: p,
            };
        }
        Scratch {
            _tmp: Some(t),
            path: p,
        }
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// An image file with a file system, attached to a loop device and mounted;
/// unmounted and detached on drop, even when the test fails.
struct LoopFs {
    image: PathBuf,
    dev: String,
    mnt: PathBuf,
    mounted: bool,
}

impl LoopFs {
    fn new(dir: &Path, name: &str, fstype: &str, mib: u64) -> LoopFs {
        let image = dir.join(format!("{name}.img"));
        let mnt = dir.join(name);
        fs::create_dir_all(&mnt).unwrap();
        let f = fs::File::create(&image).unwrap();
        f.set_len(mib << 20).unwrap();
        drop(f);
        match fstype {
            "ext4" => Cmd::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&image)
                .run()
                .unwrap(),
            "xfs" => Cmd::new("mkfs.xfs")
                .args(["-q", "-f"])
                .arg(&image)
                .env("TEST_DIR", "1")
                .env("TEST_DEV", "1")
                .env("QA_CHECK_FS", "1")
                .run()
                .unwrap(),
            "btrfs" => Cmd::new("mkfs.btrfs")
                .args(["-q", "-f"])
                .arg(&image)
                .run()
                .unwrap(),
            other => panic!("no mkfs for {other}"),
        };
        let dev = Cmd::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .read()
            .unwrap()
            .trim()
            .to_string();
        let mut lf = LoopFs {
            image,
            dev,
            mnt,
            mounted: false,
        };
        Cmd::new("mount").arg(&lf.dev).arg(&lf.mnt).run().unwrap();
        lf.mounted = true;
        lf
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted && Cmd::new("umount").arg(&self.mnt).run().is_err() {
            let _ = Cmd::new("umount").arg("-l").arg(&self.mnt).run();
        }
        let _ = Cmd::new("losetup").arg("-d").arg(&self.dev).run();
        if !keep() {
            let _ = fs::remove_file(&self.image);
        }
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lifeboat(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

fn ok(o: Out) -> Out {
    assert_eq!(o.code, 0, "lifeboat failed:\n{}\n{}", o.stdout, o.stderr);
    o
}

fn run(cmd: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let out = Command::new(cmd)
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(p: &Path, data: &[u8]) {
    fs::write(p, data).unwrap();
}

fn set_mtime(p: &Path, when: &str) {
    run("touch", &[&"-h", &"-d", &when, &p]);
}

/// Fills `root` with every kind of file lifeboat must keep.
fn populate(root: &Path) {
    let p = |s: &str| root.join(s);
    for d in [
        "etc",
        "home",
        "home/alice",
        "var",
        "var/lib",
        "srv",
        "srv/shared",
        "dev",
    ] {
        fs::create_dir(p(d)).unwrap();
    }
    write(&p("etc/hostname"), b"source\n");
    write(&p("etc/empty"), b"");
    write(&p("var/lib/big.bin"), &data(1, 3 << 20));
    write(&p("home/alice/notes.txt"), &data(2, 10_000));
    // Set-id bits, other owners.
    write(&p("srv/tool"), b"#!/bin/sh\n");
    std::os::unix::fs::chown(p("srv/tool"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(p("srv/tool"), fs::Permissions::from_mode(0o6755)).unwrap();
    std::os::unix::fs::chown(p("home/alice"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(p("home/alice"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(p("srv/shared"), fs::Permissions::from_mode(0o3775)).unwrap();
    // Hard links across directories.
    write(&p("var/lib/linked"), b"three names, one inode\n");
    fs::hard_link(p("var/lib/linked"), p("etc/linked2")).unwrap();
    fs::hard_link(p("var/lib/linked"), p("srv/linked3")).unwrap();
    // Sparse files: holes inside, at the end, and nothing but a hole.
    let f = fs::File::create(p("var/lib/sparse.img")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&data(3, 100_000), 10 << 20).unwrap();
    f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    let f = fs::File::create(p("var/lib/trailing-hole")).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.set_len(32 << 20).unwrap();
    fs::File::create(p("var/lib/all-hole"))
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    // Symlinks: relative, absolute, dangling, long, with an owner.
    std::os::unix::fs::symlink("../etc/hostname", p("srv/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p("srv/abs")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", p("srv/dangling")).unwrap();
    std::os::unix::fs::symlink("t".repeat(180), p("srv/long-target")).unwrap();
    std::os::unix::fs::lchown(p("srv/rel"), Some(42), Some(43)).unwrap();
    // Device nodes and a fifo.
    run("mknod", &[&p("dev/null"), &"c", &"1", &"3"]);
    run("mknod", &[&p("dev/loop200"), &"b", &"7", &"200"]);
    run("mkfifo", &[&p("dev/fifo")]);
    fs::set_permissions(p("dev/fifo"), fs::Permissions::from_mode(0o620)).unwrap();
    // A socket: skipped and counted.
    let _sock = std::os::unix::net::UnixListener::bind(p("dev/socket")).unwrap();
    // Names that are not UTF-8, and long paths (PAX path records).
    let bad = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    write(&bad, b"latin-1 name\n");
    let bad_dir = root.join(std::ffi::OsStr::from_bytes(b"\xff\xfe dir"));
    fs::create_dir(&bad_dir).unwrap();
    write(
        &bad_dir.join(std::ffi::OsStr::from_bytes(b"x\x80y")),
        b"inside\n",
    );
    let mut deep = root.join("srv");
    for i in 0..6 {
        deep = deep.join(format!("level-{i}-{}", "d".repeat(40)));
    }
    fs::create_dir_all(&deep).unwrap();
    write(&deep.join(format!("file-{}", "f".repeat(90))), b"deep\n");
    // xattrs: user, trusted, security.capability; ACLs, default ACLs.
    run(
        "setfattr",
        &[
            &"-n",
            &"user.comment",
            &"-v",
            &"hello world",
            &p("etc/hostname"),
        ],
    );
    run(
        "setfattr",
        &[
            &"-n",
            &"user.binary",
            &"-v",
            &"0x00ff10",
            &p("var/lib/big.bin"),
        ],
    );
    run(
        "setfattr",
        &[&"-n", &"trusted.secret", &"-v", &"s3cr3t", &p("srv/tool")],
    );
    run(
        "setfattr",
        &[&"-n", &"user.dir", &"-v", &"on a dir", &p("srv/shared")],
    );
    run("setcap", &[&"cap_net_raw,cap_net_admin+ep", &p("srv/tool")]);
    run(
        "setfacl",
        &[&"-m", &"u:1000:rw,g:1001:r", &p("home/alice/notes.txt")],
    );
    run("setfacl", &[&"-m", &"u:1000:rwx", &p("srv/shared")]);
    run(
        "setfacl",
        &[&"-d", &"-m", &"u:1000:rx,g:1001:rwx", &p("srv/shared")],
    );
    // Times with nanoseconds, old and new, directories last.
    set_mtime(&p("etc/hostname"), "2001-02-03 04:05:06.123456789");
    set_mtime(&p("srv/rel"), "1999-12-31 23:59:59.5");
    set_mtime(&p("var/lib/big.bin"), "2030-01-01 00:00:00.000000001");
    for d in ["etc", "srv/shared", "home/alice", "dev", "."] {
        set_mtime(&p(d), "2020-05-06 07:08:09.987654321");
    }
}

/// One path's metadata and content, as text, from std and getfattr alone.
fn describe(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let xattrs = getfattr(root);
    let mut inodes: HashMap<u64, Vec<Vec<u8>>> = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec();
        let rel = if rel.is_empty() { b".".to_vec() } else { rel };
        if rel == b"lost+found" {
            continue;
        }
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        if ft.is_socket() {
            continue;
        }
        let mut d = format!(
            "mode={:o} uid={} gid={} mtime={}.{:09}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.mtime(),
            m.mtime_nsec()
        );
        if ft.is_file() {
            let mut f = fs::File::open(&p).unwrap();
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            d += &format!(" size={} sha256={}", m.size(), hex::encode(h.finalize()));
            // Holes kept: a sparse file takes at most a little more room.
            if m.blocks() * 512 < m.size() / 2 {
                d += " sparse";
            }
            if m.nlink() > 1 {
                inodes.entry(m.ino()).or_default().push(rel.clone());
            }
        } else if ft.is_symlink() {
            d += &format!(" -> {:?}", fs::read_link(&p).unwrap());
        } else if ft.is_char_device() || ft.is_block_device() {
            d += &format!(" rdev={}:{}", libc::major(m.rdev()), libc::minor(m.rdev()));
        }
        if let Some(x) = xattrs.get(&rel) {
            d += &format!(" xattrs[{x}]");
        }
        out.insert(rel, d);
        if ft.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    // Hard-link groups: every member names the whole group.
    for (_, mut names) in inodes {
        names.sort();
        let group = names
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect::<Vec<_>>()
            .join(",");
        for n in names {
            out.get_mut(&n)
                .unwrap()
                .push_str(&format!(" links[{group}]"));
        }
    }
    out
}

/// Every xattr (ACLs included) below `root`, by relative path, via getfattr.
fn getfattr(root: &Path) -> HashMap<Vec<u8>, String> {
    let out = Command::new("getfattr")
        .args([
            "-R",
            "-P",
            "-h",
            "-d",
            "-m",
            "-",
            "-e",
            "hex",
            "--absolute-names",
        ])
        .arg(root)
        .output()
        .unwrap();
    let mut map: HashMap<Vec<u8>, String> = HashMap::new();
    let prefix = root.as_os_str().as_bytes();
    let mut cur: Option<Vec<u8>> = None;
    for line in out.stdout.split(|&b| b == b'\n') {
        if let Some(name) = line.strip_prefix(b"# file: ") {
            let name = unescape(name);
            let rel = name.strip_prefix(prefix).unwrap_or(&name);
            let rel = rel.strip_prefix(b"/").unwrap_or(rel);
            cur = Some(if rel.is_empty() {
                b".".to_vec()
            } else {
                rel.to_vec()
            });
        } else if line.starts_with(b"trusted.SGI_ACL_") {
            // XFS shows its ACLs a second time under these names.
        } else if !line.is_empty() {
            let k = cur.clone().unwrap();
            let e = map.entry(k).or_default();
            e.push_str(&String::from_utf8_lossy(line));
            e.push(';');
        }
    }
    map
}

/// getfattr escapes odd bytes in names as \ooo.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 3 < s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u8::from_str_radix(std::str::from_utf8(&s[i + 1..i + 4]).unwrap(), 8).unwrap();
            out.push(v);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fn assert_same_tree(want: &BTreeMap<Vec<u8>, String>, got_root: &Path, what: &str) {
    let got = describe(got_root);
    let mut diffs = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => diffs.push(format!("missing {}: {v}", String::from_utf8_lossy(k))),
            Some(g) if g != v => diffs.push(format!(
                "differs {}:\n    want {v}\n    got  {g}",
                String::from_utf8_lossy(k)
            )),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            diffs.push(format!("extra {}", String::from_utf8_lossy(k)));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}

/// Where a `--source` tree lands below a restore target.
fn landed(target: &Path, source: &Path) -> PathBuf {
    target.join(source.strip_prefix("/").unwrap())
}

#[test]
fn loop_round_trip_ext4_xfs_every_file_kind() {
    require_root!();
    let s = Scratch::new("roundtrip");
    for (from, to) in [("ext4", "xfs"), ("xfs", "ext4")] {
        let src = LoopFs::new(s.path(), &format!("src-{from}"), from, 320);
        populate(&src.mnt);
        let want = describe(&src.mnt);
        assert!(want.values().any(|v| v.contains("sparse")));
        let dst = LoopFs::new(s.path(), &format!("dst-{to}"), to, 320);
        let bk = s.path().join(format!("backup-{from}"));
        let o = ok(lifeboat(&[
            &"backup",
            &"create",
            &"--to",
            &bk,
            &"--source",
            &src.mnt,
        ]));
        assert!(o.stdout.contains("1 sockets skipped"), "{}", o.stdout);
        ok(lifeboat(&[
            &"backup", &"restore", &"--from", &bk, &"--to", &dst.mnt,
        ]));
        assert_same_tree(
            &want,
            &landed(&dst.mnt, &src.mnt),
            &format!("{from} -> {to}"),
        );
        // verify --deep restores and compares by itself.
        let scratch = s.path().join("deep");
        fs::create_dir_all(&scratch).unwrap();
        let o = ok(lifeboat(&[
            &"backup",
            &"verify",
            &"--from",
            &bk,
            &"--deep",
            &"--scratch",
            &scratch,
        ]));
        assert!(o.stdout.contains("restored and compared"), "{}", o.stdout);
        // A second restore into the same place is refused without --overwrite.
        let o = lifeboat(&[&"backup", &"restore", &"--from", &bk, &"--to", &dst.mnt]);
        assert_eq!(o.code, 2);
        assert!(o.stderr.contains("--overwrite"), "{}", o.stderr);
        ok(lifeboat(&[
            &"backup",
            &"restore",
            &"--from",
            &bk,
            &"--to",
            &dst.mnt,
            &"--overwrite",
        ]));
        assert_same_tree(&want, &landed(&dst.mnt, &src.mnt), "restored twice");
    }
}

#[test]
fn loop_gnu_tar_reads_ours_and_we_read_gnu_tar() {
    require_root!();
    let s = Scratch::new("gnutar");
    let src = LoopFs::new(s.path(), "src", "ext4", 320);
    populate(&src.mnt);
    let want = describe(&src.mnt);
    let bk = s.path().join("backup");
    let o = ok(lifeboat(&[
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src.mnt,
        &"--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let gen = v["generation"]["id"].as_str().unwrap().to_string();
    let file = v["generation"]["archives"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let archive = bk.join(&gen).join(&file);
    // GNU tar lists it...
    let list = Command::new("tar")
        .args(["--zstd", "--xattrs", "--acls", "-tvf"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let text = String::from_utf8_lossy(&list.stdout);
    for needle in [
        "var/lib/sparse.img",
        "srv/linked3 link to",
        "srv/rel -> ../etc/hostname",
        "dev/null",
    ] {
        assert!(
            text.contains(needle),
            "GNU tar listing lacks {needle}:\n{text}"
        );
    }
    // ...and extracts it identically.
    let dst = LoopFs::new(s.path(), "dst", "xfs", 320);
    run(
        "tar",
        &[
            &"--zstd",
            &"--xattrs",
            &"--xattrs-include=*",
            &"--acls",
            &"--numeric-owner",
            &"-xpf",
            &archive,
            &"-C",
            &dst.mnt,
        ],
    );
    assert_same_tree(&want, &dst.mnt, "extracted by GNU tar");
    // bsdtar reads it too.
    let bsd = Command::new("bsdtar")
        .arg("-tf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        bsd.status.success(),
        "{}",
        String::from_utf8_lossy(&bsd.stderr)
    );
    // GNU tar's own archive (posix, sparse 1.0, xattrs, ACLs), restored by us.
    let theirs = s.path().join("gnu.tar.gz");
    run(
        "tar",
        &[
            &"--format=posix",
            &"--sparse",
            &"--sparse-version=1.0",
            &"--xattrs",
            &"--xattrs-include=*",
            &"--acls",
            &"--numeric-owner",
            &"-czf",
            &theirs,
            &"-C",
            &src.mnt,
            &".",
        ],
    );
    let dst2 = LoopFs::new(s.path(), "dst2", "ext4", 320);
    ok(lifeboat(&[
        &"backup",
        &"restore",
        &"--from",
        &theirs,
        &"--to",
        &dst2.mnt,
        &"--overwrite",
    ]));
    assert_same_tree(&want, &dst2.mnt, "GNU tar archive restored by lifeboat");
}

#[test]
fn loop_incremental_chain_restores_each_moment() {
    require_root!();
    let s = Scratch::new("incr");
    let src = LoopFs::new(s.path(), "src", "ext4", 320);
    populate(&src.mnt);
    let p = |x: &str| src.mnt.join(x);
    let bk = s.path().join("backup");
    let mut moments = Vec::new();
    let gen_of = |o: &Out| -> serde_json::Value { serde_json::from_str(&o.stdout).unwrap() };
    let create = |incr: bool| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"backup",
            &"create",
            &"--to",
            &bk,
            &"--source",
            &src.mnt,
            &"--json",
        ];
        if incr {
            args.push(&"--incremental");
        }
        ok(lifeboat(&args))
    };
    let g1 = gen_of(&create(false));
    moments.push((
        g1["generation"]["id"].as_str().unwrap().to_string(),
        describe(&src.mnt),
    ));

    // Moment 2: modify (same size, old mtime put back), append, rename a
    // file and a directory, delete, chmod/chown, xattr change, new link.
    let old = fs::symlink_metadata(p("etc/hostname")).unwrap();
    write(&p("etc/hostname"), b"SOURCE\n");
    set_mtime(&p("etc/hostname"), "2001-02-03 04:05:06.123456789");
    assert_eq!(
        fs::metadata(p("etc/hostname")).unwrap().mtime(),
        old.mtime()
    );
    fs::OpenOptions::new()
        .append(true)
        .open(p("home/alice/notes.txt"))
        .unwrap()
        .write_all(b"more\n")
        .unwrap();
    fs::rename(p("var/lib/big.bin"), p("var/big-renamed.bin")).unwrap();
    fs::rename(p("home/alice"), p("home/alice2")).unwrap();
    fs::remove_file(p("etc/empty")).unwrap();
    fs::remove_file(p("var/lib/linked")).unwrap(); // the hard-link leader
    fs::set_permissions(p("etc/linked2"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(p("srv/tool"), Some(4321), None).unwrap();
    run(
        "setfattr",
        &[&"-n", &"user.comment", &"-v", &"changed", &p("srv/shared")],
    );
    fs::hard_link(p("etc/hostname"), p("srv/hostname-link")).unwrap();
    let o = create(true);
    let g2 = gen_of(&o);
    assert_eq!(g2["generation"]["kind"], "incremental");
    assert!(
        g2["generation"]["deleted"].as_u64().unwrap() >= 3,
        "{}",
        o.stdout
    );
    let stored = g2["generation"]["stored_files"].as_u64().unwrap();
    let total = g2["generation"]["files"].as_u64().unwrap();
    assert!(
        stored < total,
        "incremental stored {stored} of {total} files"
    );
    let content = g2["generation"]["stored_content_bytes"].as_u64().unwrap();
    let bytes = g2["generation"]["bytes"].as_u64().unwrap();
    assert!(
        content * 4 < bytes,
        "incremental stored {content} of {bytes} bytes"
    );
    moments.push((
        g2["generation"]["id"].as_str().unwrap().to_string(),
        describe(&src.mnt),
    ));

    // Moment 3: a file replaced by a symlink, a directory removed, a new
    // sparse file, the removed name reused.
    fs::remove_file(p("srv/abs")).unwrap();
    std::os::unix::fs::symlink("hostname-link", p("srv/abs")).unwrap();
    fs::remove_dir_all(p("home/alice2")).unwrap();
    let f = fs::File::create(p("var/new-sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"x", 5 << 20).unwrap();
    write(&p("etc/empty"), b"back again\n");
    let g3 = gen_of(&create(true));
    moments.push((
        g3["generation"]["id"].as_str().unwrap().to_string(),
        describe(&src.mnt),
    ));

    let dst = LoopFs::new(s.path(), "dst", "xfs", 640);
    for (i, (id, want)) in moments.iter().enumerate() {
        let target = dst.mnt.join(format!("m{i}"));
        fs::create_dir(&target).unwrap();
        ok(lifeboat(&[
            &"backup",
            &"restore",
            &"--from",
            &bk,
            &"--to",
            &target,
            &"--generation",
            id,
        ]));
        assert_same_tree(
            want,
            &landed(&target, &src.mnt),
            &format!("moment {i} ({id})"),
        );
    }
    ok(lifeboat(&[&"backup", &"verify", &"--from", &bk]));

    // Single paths: a file that the chain's full generation holds, and one
    // from an incremental, into an empty folder.
    let one = dst.mnt.join("single");
    fs::create_dir(&one).unwrap();
    let hostname = p("etc/hostname");
    let big = p("var/big-renamed.bin");
    ok(lifeboat(&[
        &"backup", &"restore", &"--from", &bk, &"--to", &one, &"--path", &hostname, &"--path", &big,
    ]));
    assert_eq!(fs::read(landed(&one, &hostname)).unwrap(), b"SOURCE\n");
    assert_eq!(fs::read(landed(&one, &big)).unwrap(), data(1, 3 << 20));
    assert!(!landed(&one, &p("etc/empty")).exists());
    let o = lifeboat(&[
        &"backup",
        &"restore",
        &"--from",
        &bk,
        &"--to",
        &one,
        &"--path",
        &"/no/such/file",
    ]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("is not in generation"), "{}", o.stderr);

    // Retention: a new full chain, keep 1 → the first chain goes.
    ok(create(false));
    let o = ok(lifeboat(&[
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src.mnt,
        &"--incremental",
        &"--keep",
        &"1",
    ]));
    assert!(o.stdout.contains("removed old generation"), "{}", o.stdout);
    let list = ok(lifeboat(&[&"backup", &"list", &"--from", &bk]));
    // By the id column: a new generation made in the same second is
    // `ID-2`, `ID-3`..., which contains an old id as text.
    for (id, _) in &moments {
        assert!(
            !list
                .stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id.as_str())),
            "{id} kept:\n{}",
            list.stdout
        );
    }
    assert_eq!(list.stdout.lines().count(), 3, "{}", list.stdout);
}

/// `backup create` of `src` into `bk` with extra flags; the JSON summary.
fn create_json(bk: &Path, src: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src,
        &"--json",
    ];
    for e in extra {
        args.push(e);
    }
    serde_json::from_str(&ok(lifeboat(&args)).stdout).unwrap()
}

/// Waits past the current second, so that each generation has its own
/// start second (for `--at`).
fn next_second() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

#[test]
fn loop_differential_chain_restores_each_moment_and_at_picks_by_time() {
    require_root!();
    let s = Scratch::new("diff");
    let src = LoopFs::new(s.path(), "src", "ext4", 320);
    populate(&src.mnt);
    let p = |x: &str| src.mnt.join(x);
    let bk = s.path().join("backup");
    // (id, kind, parent, started_at, tree)
    type Moment = (
        String,
        String,
        Option<String>,
        String,
        BTreeMap<Vec<u8>, String>,
    );
    let mut moments: Vec<Moment> = Vec::new();
    let step = |flags: &[&str], moments: &mut Vec<Moment>| {
        let g = create_json(&bk, &src.mnt, flags)["generation"].clone();
        let s = |k: &str| g[k].as_str().map(String::from);
        moments.push((
            s("id").unwrap(),
            s("kind").unwrap(),
            s("parent"),
            s("started_at").unwrap(),
            describe(&src.mnt),
        ));
        next_second();
        g
    };
    step(&[], &mut moments);
    // Moment 2: an incremental (a change, a deletion).
    write(&p("etc/hostname"), b"moment two\n");
    fs::remove_file(p("etc/empty")).unwrap();
    step(&["--incremental"], &mut moments);
    // Moment 3: a differential holds the changes of moments 2 and 3.
    write(&p("srv/new-in-3"), &data(3, 200_000));
    fs::rename(p("home/alice"), p("home/alice3")).unwrap();
    let g3 = step(&["--differential"], &mut moments);
    assert!(
        g3["deleted"].as_u64().unwrap() >= 1,
        "the deletion of moment 2 is recorded against the full: {g3}"
    );
    // The differential stores moment 2's change again (it does not need
    // the incremental) but not the unchanged big file.
    let content = g3["stored_content_bytes"].as_u64().unwrap();
    assert!(content >= 200_000 + 11, "{g3}");
    assert!(content * 4 < g3["bytes"].as_u64().unwrap(), "{g3}");
    // Moment 4: an incremental on the differential.
    write(&p("var/after-diff"), b"four\n");
    std::os::unix::fs::chown(p("srv/tool"), Some(999), None).unwrap();
    step(&["--incremental"], &mut moments);

    let kinds: Vec<(&str, Option<&str>)> = moments
        .iter()
        .map(|m| (m.1.as_str(), m.2.as_deref()))
        .collect();
    let id = |i: usize| moments[i].0.as_str();
    assert_eq!(
        kinds,
        [
            ("full", None),
            ("incremental", Some(id(0))),
            ("differential", Some(id(0))),
            ("incremental", Some(id(2))),
        ]
    );
    // `list` names each kind and what it depends on.
    let list = ok(lifeboat(&[&"backup", &"list", &"--from", &bk])).stdout;
    assert!(
        list.lines().next().unwrap().contains("DEPENDS ON"),
        "{list}"
    );
    for (i, (gid, kind, parent, _, _)) in moments.iter().enumerate() {
        let line = list.lines().find(|l| l.starts_with(gid.as_str())).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], kind, "{i}: {line}");
        assert_eq!(cols[2], parent.as_deref().unwrap_or("-"), "{i}: {line}");
    }

    // Every moment restored, by id; then by --at (its start time, and a
    // moment between two generations) in RFC 3339 and local time.
    let dst = LoopFs::new(s.path(), "dst", "xfs", 640);
    for (i, (gid, _, _, started, want)) in moments.iter().enumerate() {
        for (how, sel) in [("id", "--generation"), ("at", "--at")] {
            let target = dst.mnt.join(format!("m{i}-{how}"));
            fs::create_dir(&target).unwrap();
            let value = if how == "id" {
                gid.clone()
            } else {
                started.clone()
            };
            let o = ok(lifeboat(&[
                &"backup", &"restore", &"--from", &bk, &"--to", &target, &sel, &value,
            ]));
            if how == "at" {
                assert!(
                    o.stdout
                        .contains(&format!("--at {started}: generation {gid} (")),
                    "{}",
                    o.stdout
                );
            }
            assert_same_tree(
                want,
                &landed(&target, &src.mnt),
                &format!("moment {i} by {how}"),
            );
        }
    }
    let epoch = |t: &str| lifeboat::util::parse_rfc3339(t).unwrap();
    let local = |e: i64| lifeboat::util::local_time(e).to_string();
    // A --path that no generation holds: the pick is said, then the
    // restore stops before writing anything.
    let unused = s.path().join("unused");
    fs::create_dir(&unused).unwrap();
    let at = |when: &str| -> Out {
        lifeboat(&[
            &"backup",
            &"restore",
            &"--from",
            &bk,
            &"--to",
            &unused,
            &"--path",
            &"/no/such",
            &"--at",
            &when,
        ])
    };
    for i in 0..moments.len() {
        // Just before the next generation started: still this one.
        let next = moments
            .get(i + 1)
            .map_or(epoch(&moments[i].3) + 3600, |m| epoch(&m.3));
        let o = at(&local(next - 1));
        assert!(
            o.stdout
                .contains(&format!(": generation {} (", moments[i].0)),
            "{i}: {}{}",
            o.stdout,
            o.stderr
        );
    }
    let o = at(&local(epoch(&moments[0].3) - 1));
    assert_eq!(o.code, 2, "{}", o.stdout);
    assert!(
        o.stderr.contains("no generation in")
            && o.stderr.contains(&format!("the oldest, {}", id(0))),
        "{}",
        o.stderr
    );
    let o = at("next tuesday");
    assert!(
        o.stderr.contains("bad time \"next tuesday\""),
        "{}",
        o.stderr
    );
    ok(lifeboat(&[&"backup", &"verify", &"--from", &bk]));

    // Retention on the real chain: keeping the newest keeps its full and
    // differential, not the incremental before the differential.
    let o = ok(lifeboat(&[
        &"backup",
        &"prune",
        &"--from",
        &bk,
        &"--keep-last",
        &"1",
        &"--dry-run",
    ]));
    // By the id column: "needed by ID" names others.
    let line = |gid: &str| -> String {
        let is = |l: &&str| {
            l.split_whitespace().nth(1) == Some(gid) || l.split_whitespace().nth(2) == Some(gid)
        };
        o.stdout.lines().find(is).unwrap().to_string()
    };
    assert!(
        line(id(3)).starts_with("keep") && line(id(3)).contains("last #1"),
        "{}",
        o.stdout
    );
    for k in [0, 2] {
        assert!(
            line(id(k)).contains(&format!("needed by {}", id(3))),
            "{}",
            o.stdout
        );
    }
    assert!(line(id(1)).starts_with("would remove"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("dry run: 1 generation(s) would be removed, 3 kept"),
        "{}",
        o.stdout
    );
    assert!(bk.join(id(1)).is_dir());
    let o = ok(lifeboat(&[
        &"backup",
        &"prune",
        &"--from",
        &bk,
        &"--keep-last",
        &"1",
    ]));
    assert!(
        o.stdout.contains("removed 1 generation(s), kept 3"),
        "{}",
        o.stdout
    );
    assert!(!bk.join(id(1)).exists());
    ok(lifeboat(&[&"backup", &"verify", &"--from", &bk]));
    let target = dst.mnt.join("after-prune");
    fs::create_dir(&target).unwrap();
    ok(lifeboat(&[
        &"backup", &"restore", &"--from", &bk, &"--to", &target,
    ]));
    assert_same_tree(&moments[3].4, &landed(&target, &src.mnt), "after prune");
}

/// Generation folders with only `generation.json` (taken from a real one),
/// for retention: a day's generation at 02:00 UTC through 2026, a full on
/// the 1st of each month, a differential on the 15th, incrementals between.
#[test]
fn loop_prune_a_simulated_year_keeps_whole_chains() {
    require_root!();
    let s = Scratch::new("year");
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("f"), b"x");
    let bk = s.path().join("backup");
    let real = create_json(&bk, &src, &[])["generation"].clone();
    fs::remove_dir_all(bk.join(real["id"].as_str().unwrap())).unwrap();
    let start = lifeboat::util::parse_rfc3339("2026-01-01T02:00:00Z").unwrap();
    let (mut full, mut prev): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    let mut all = Vec::new();
    for d in 0..365 {
        let t = start + d * 86400;
        let id = lifeboat::util::stamp(t);
        let day = lifeboat::util::utc_time(t).day;
        let (kind, mut chain) = match day {
            1 => ("full", Vec::new()),
            15 => ("differential", full.clone()),
            _ => ("incremental", prev.clone()),
        };
        chain.push(id.clone());
        if day == 1 {
            full = chain.clone();
        }
        let mut g = real.clone();
        g["id"] = id.clone().into();
        g["kind"] = kind.into();
        g["parent"] = chain.iter().rev().nth(1).cloned().into();
        g["chain"] = chain.clone().into();
        g["started_ns"] = serde_json::json!(t as u64 * 1_000_000_000);
        fs::create_dir(bk.join(&id)).unwrap();
        write(
            &bk.join(&id).join("generation.json"),
            g.to_string().as_bytes(),
        );
        all.push((id, t));
        prev = chain;
    }
    let prune = |extra: &[&str]| -> Out {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> =
            vec![&"backup", &"prune", &"--from", &bk, &"--keep-monthly", &"6"];
        for e in extra {
            args.push(e);
        }
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(args.iter().map(|a| a.as_ref()))
            .env("TZ", "UTC")
            .output()
            .unwrap();
        ok(Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        })
    };
    let dry = prune(&["--dry-run"]);
    let on_disk = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&bk)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    assert_eq!(on_disk().len(), 365, "--dry-run removed something");
    // The newest of each of the last six months, with its full and
    // differential and the incrementals from the 15th on.
    let want: Vec<String> = all
        .iter()
        .filter(|(_, t)| {
            let c = lifeboat::util::utc_time(*t);
            c.month >= 7 && (c.day == 1 || c.day >= 15)
        })
        .map(|(id, _)| id.clone())
        .collect();
    let dec = all
        .iter()
        .find(|(_, t)| lifeboat::util::utc_time(*t).month == 12)
        .unwrap();
    assert!(dry.stdout.contains("monthly 2026-12"), "{}", dry.stdout);
    let dec_line = dry.stdout.lines().find(|l| l.contains(&dec.0)).unwrap();
    assert!(
        dec_line.starts_with("keep ") && dec_line.contains(" full "),
        "{dec_line}"
    );
    assert!(
        dry.stdout.contains(&format!(
            "dry run: {} generation(s) would be removed, {} kept",
            365 - want.len(),
            want.len()
        )),
        "{}",
        dry.stdout
    );
    prune(&[]);
    assert_eq!(on_disk(), want);
    // Nothing kept lost a parent: every chain is whole.
    for id in &want {
        let g: serde_json::Value =
            serde_json::from_slice(&fs::read(bk.join(id).join("generation.json")).unwrap())
                .unwrap();
        for c in g["chain"].as_array().unwrap() {
            assert!(bk.join(c.as_str().unwrap()).is_dir(), "{id} lost {c}");
        }
    }
}

/// `lifeboat -v --config CONFIG backup create --to BK --source SRC EXTRA...`.
fn create_with(config: &Path, bk: &Path, src: &Path, extra: &[&str]) -> Out {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
        &"-v",
        &"--config",
        &config,
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src,
    ];
    for e in extra {
        args.push(e);
    }
    lifeboat(&args)
}

/// The lifeboat snapshots on a btrfs file system.
fn btrfs_snapshots(mnt: &Path) -> Vec<String> {
    let out = Cmd::new("btrfs")
        .args(["subvolume", "list"])
        .arg(mnt)
        .read()
        .unwrap();
    out.lines()
        .filter(|l| l.contains(".lifeboat-snapshot-"))
        .map(String::from)
        .collect()
}

#[test]
fn loop_snapshot_btrfs_and_hooks_around_it() {
    require_root!();
    let s = Scratch::new("snap");
    let src = LoopFs::new(s.path(), "src", "btrfs", 400);
    populate(&src.mnt);
    // The backup folder inside the tree: left out of the snapshot too, as
    // is an absolute --exclude of the live tree.
    let bk = src.mnt.join("backups");
    let journal = s.path().join("journal");
    let config = s.path().join("lifeboat.toml");
    let set_hooks = |pre: &str, post: &str, extra: &str| {
        let j = journal.display();
        let text = format!(
            "[hooks]\npre_backup = \"echo pre >> {j}; {pre}\"\n\
             post_backup = \"echo post $LIFEBOAT_BACKUP_RESULT $LIFEBOAT_GENERATION >> {j}; {post}\"\n\
             timeout = \"5s\"\n{extra}"
        );
        write(&config, text.as_bytes());
        let _ = fs::remove_file(&journal);
    };
    let journal_lines = || -> Vec<String> {
        fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    // pre_backup writes the "dump" the snapshot must hold.
    let dump = src.mnt.join("etc/db.sql");
    set_hooks(&format!("echo dumped > {}", dump.display()), "true", "");
    let shared = src.mnt.join("srv/shared");
    let excl = format!("{}", shared.display());
    let o = create_with(
        &config,
        &bk,
        &src.mnt,
        &["--snapshot", "--exclude", &excl, "--json"],
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let g: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let id = g["generation"]["id"].as_str().unwrap().to_string();
    assert!(
        o.stderr.contains(&format!(
            "btrfs snapshot {}/.lifeboat-snapshot-",
            src.mnt.display()
        )),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("removed snapshot"), "{}", o.stderr);
    assert_eq!(
        journal_lines(),
        ["pre".to_string(), format!("post ok {id}")]
    );
    assert!(btrfs_snapshots(&src.mnt).is_empty());
    let mut want = describe(&src.mnt);
    want.retain(|k, _| !k.starts_with(b"backups") && !k.starts_with(b"srv/shared"));
    assert!(want.contains_key(&b"etc/db.sql"[..]));
    let target = s.path().join("restored");
    fs::create_dir(&target).unwrap();
    ok(lifeboat(&[
        &"backup", &"restore", &"--from", &bk, &"--to", &target,
    ]));
    // The tree's root changed after the snapshot: lifeboat put the snapshot
    // in it and removed it again. The snapshot holds the time before.
    let root =
        |m: &BTreeMap<Vec<u8>, String>| m[&b"."[..]].split(" mtime=").next().unwrap().to_string();
    let got = describe(&landed(&target, &src.mnt));
    assert_eq!(root(&got), root(&want));
    want.insert(b".".to_vec(), got[&b"."[..]].clone());
    assert_same_tree(&want, &landed(&target, &src.mnt), "from the snapshot");
    assert_eq!(fs::read(landed(&target, &dump)).unwrap(), b"dumped\n");

    // A failing pre_backup stops the backup (no snapshot, no generation);
    // post_backup still runs and is told.
    set_hooks("echo cannot dump; exit 7", "true", "");
    let o = create_with(&config, &bk, &src.mnt, &["--snapshot"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("hook pre_backup failed (exit status: 7): cannot dump"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("the backup was not run"), "{}", o.stderr);
    assert_eq!(journal_lines(), ["pre", "post failed"]);
    let gens = || {
        fs::read_dir(&bk)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    };
    assert_eq!(gens(), 1);
    // ... unless on_failure = "continue".
    set_hooks("exit 7", "true", "on_failure = \"continue\"\n");
    let o = create_with(&config, &bk, &src.mnt, &["--snapshot", "--incremental"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("going on"), "{}", o.stderr);
    assert_eq!(gens(), 2);
    // A hook over its timeout is killed and stops the backup.
    set_hooks("sleep 60", "true", "");
    let started = std::time::Instant::now();
    let o = create_with(&config, &bk, &src.mnt, &[]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(40));
    assert!(
        o.stderr.contains("ran over its timeout of 5s"),
        "{}",
        o.stderr
    );
    assert_eq!(gens(), 2);

    // The backup fails after the snapshot (the folder refuses new
    // generations): the snapshot goes, post_backup is told.
    set_hooks("true", "true", "");
    run("chattr", &[&"+i", &bk]);
    let o = create_with(&config, &bk, &src.mnt, &["--snapshot"]);
    run("chattr", &[&"-i", &bk]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("btrfs snapshot"), "{}", o.stderr);
    assert!(btrfs_snapshots(&src.mnt).is_empty(), "{}", o.stderr);
    assert_eq!(journal_lines()[1], "post failed");

    // Interrupted (SIGTERM) while reading the snapshot: removed, exit 143.
    let mut big = fs::File::create(src.mnt.join("var/noise")).unwrap();
    std::io::copy(
        &mut fs::File::open("/dev/urandom").unwrap().take(96 << 20),
        &mut big,
    )
    .unwrap();
    drop(big);
    let child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["--config"])
        .arg(&config)
        .args(["backup", "create", "--to"])
        .arg(&bk)
        .arg("--source")
        .arg(&src.mnt)
        .args([
            "--snapshot",
            "--compression",
            "gzip",
            "--level",
            "9",
            "--quiet",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while btrfs_snapshots(&src.mnt).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no snapshot appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(143),
        "finished before the signal? {err}"
    );
    assert!(err.contains("SIGTERM: removing the snapshots"), "{err}");
    assert!(btrfs_snapshots(&src.mnt).is_empty(), "{err}");
    let leftover: Vec<_> = fs::read_dir(&src.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".lifeboat-snapshot-"))
        .collect();
    assert!(leftover.is_empty(), "{leftover:?}");
}

#[test]
fn loop_snapshot_is_refused_where_the_file_system_has_none() {
    require_root!();
    let s = Scratch::new("nosnap");
    let src = LoopFs::new(s.path(), "src", "ext4", 64);
    write(&src.mnt.join("f"), b"x");
    let bk = s.path().join("backup");
    let o = lifeboat(&[
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src.mnt,
        &"--snapshot",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr
            .contains(&format!("--snapshot of {}", src.mnt.display()))
            && o.stderr
                .contains("neither btrfs nor an LVM logical volume: no snapshot possible"),
        "{}",
        o.stderr
    );
    // Nothing was written.
    let entries: Vec<_> = fs::read_dir(&bk)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| !n.to_string_lossy().starts_with(".lifeboat-backup.lock"))
        .collect();
    assert!(entries.is_empty(), "{entries:?}");
}

fn copy_dir(from: &Path, to: &Path) {
    run("cp", &[&"-a", &from, &to]);
}

#[test]
fn loop_damage_is_named() {
    require_root!();
    let s = Scratch::new("damage");
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..20 {
        write(&src.join(format!("file{i:02}")), &data(i, 200_000));
    }
    let bk = s.path().join("backup");
    let mut ids = Vec::new();
    for i in 0..3 {
        if i > 0 {
            write(&src.join(format!("file{i:02}")), &data(100 + i, 50_000));
        }
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"backup",
            &"create",
            &"--to",
            &bk,
            &"--source",
            &src,
            &"--compression",
            &"none",
            &"--json",
        ];
        if i > 0 {
            args.push(&"--incremental");
        }
        let v: serde_json::Value = serde_json::from_str(&ok(lifeboat(&args)).stdout).unwrap();
        ids.push(v["generation"]["id"].as_str().unwrap().to_string());
    }
    ok(lifeboat(&[&"backup", &"verify", &"--from", &bk]));
    let archive_of = |dir: &Path, id: &str| -> PathBuf {
        fs::read_dir(dir.join(id))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".tar"))
            .unwrap()
    };
    let restore_target = s.path().join("r");
    let check = |name: &str, damage: &dyn Fn(&Path), gen: &str, needles: &[&str]| {
        let dir = s.path().join(name);
        copy_dir(&bk, &dir);
        damage(&dir);
        let o = lifeboat(&[
            &"backup",
            &"verify",
            &"--from",
            &dir,
            &"--generation",
            &ids[2],
        ]);
        assert_eq!(
            o.code, 1,
            "{name}: verify should fail:\n{}{}",
            o.stdout, o.stderr
        );
        for n in needles.iter().chain([&gen]) {
            assert!(
                o.stderr.contains(n),
                "{name}: verify message lacks {n:?}: {}",
                o.stderr
            );
        }
        let _ = fs::remove_dir_all(&restore_target);
        fs::create_dir(&restore_target).unwrap();
        let o = lifeboat(&[
            &"backup",
            &"restore",
            &"--from",
            &dir,
            &"--to",
            &restore_target,
        ]);
        // Damage is exit 1, whether it cost files or the whole chain.
        assert_eq!(
            o.code, 1,
            "{name}: restore should fail:\n{}{}",
            o.stdout, o.stderr
        );
        for n in needles.iter().chain([&gen]) {
            assert!(
                o.stderr.contains(n),
                "{name}: restore message lacks {n:?}: {}",
                o.stderr
            );
        }
    };
    // A flipped byte inside file05's data in the full generation.
    check(
        "flipped",
        &|d| {
            let a = archive_of(d, &ids[0]);
            let mut bytes = fs::read(&a).unwrap();
            // The ustar header of file05 (after its PAX header), then data.
            let at = (0..bytes.len())
                .step_by(512)
                .find(|&i| bytes[i..].starts_with(b"file05\0"))
                .unwrap();
            bytes[at + 512 + 1000] ^= 0x40;
            fs::write(&a, bytes).unwrap();
        },
        &ids[0],
        &["file05", "content does not match"],
    );
    // The middle generation's archive cut short.
    check(
        "truncated",
        &|d| {
            let a = archive_of(d, &ids[1]);
            let len = fs::metadata(&a).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&a)
                .unwrap()
                .set_len(len / 2)
                .unwrap();
        },
        &ids[1],
        &["truncated"],
    );
    // The middle generation deleted.
    check(
        "deleted",
        &|d| fs::remove_dir_all(d.join(&ids[1])).unwrap(),
        &ids[1],
        &["missing"],
    );
    // A foreign file in place of an archive.
    check(
        "foreign",
        &|d| fs::write(archive_of(d, &ids[0]), b"PK\x03\x04 not a tar at all").unwrap(),
        &ids[0],
        &["not a tar archive"],
    );
    // Another generation's manifest in place of the full one's.
    check(
        "manifest",
        &|d| {
            fs::copy(
                d.join(&ids[2]).join("manifest.json.zst"),
                d.join(&ids[0]).join("manifest.json.zst"),
            )
            .unwrap();
        },
        &ids[0],
        &["manifest"],
    );
    // Zstd: a flipped byte is caught by the frame checksum and named.
    let bkz = s.path().join("backup-zstd");
    let v: serde_json::Value = serde_json::from_str(
        &ok(lifeboat(&[
            &"backup",
            &"create",
            &"--to",
            &bkz,
            &"--source",
            &src,
            &"--json",
        ]))
        .stdout,
    )
    .unwrap();
    let id = v["generation"]["id"].as_str().unwrap();
    let a = bkz
        .join(id)
        .join(v["generation"]["archives"][0]["file"].as_str().unwrap());
    let mut bytes = fs::read(&a).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&a, bytes).unwrap();
    let o = lifeboat(&[&"backup", &"verify", &"--from", &bkz]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains(id) && o.stderr.contains("file"),
        "{}",
        o.stderr
    );
    // The verify result is recorded for monitoring.
    let st = lifeboat::backup::status(&bkz).unwrap();
    assert!(!st.last_verify.unwrap().ok);
}

#[test]
fn loop_full_destination_keeps_the_last_good_generation() {
    require_root!();
    let s = Scratch::new("full");
    let dest = LoopFs::new(s.path(), "dest", "ext4", 24);
    let src = s.path().join("src");
    fs::create_dir(&src).unwrap();
    write(&src.join("small"), b"small\n");
    let bk = dest.mnt.join("backups");
    ok(lifeboat(&[
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src,
    ]));
    // 40 MB that does not compress.
    let mut noise = vec![0u8; 40 << 20];
    let mut x: u64 = 88172645463325252;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    write(&src.join("noise"), &noise);
    let o = lifeboat(&[&"backup", &"create", &"--to", &bk, &"--source", &src]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("is full"), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "one line: {}", o.stderr);
    let leftovers: Vec<_> = fs::read_dir(&bk)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let list = ok(lifeboat(&[&"backup", &"list", &"--from", &bk]));
    assert_eq!(list.stdout.lines().count(), 2, "{}", list.stdout);
    ok(lifeboat(&[&"backup", &"verify", &"--from", &bk]));
}
