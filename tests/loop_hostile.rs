//! Loop tier, hostile input for `lifeboat backup restore`: archives that try
//! to write outside the target (symlinks direct, chained and relative, the
//! deferred-chmod swap, hard links, device nodes, fifos and setuid files
//! through symlinks, `..` names), existing symlinks in a `--path` target,
//! and a local user who swaps a restored directory for a symlink while the
//! restore runs. Every case checks that the tree outside the target is
//! unchanged, entry by entry and metadata by metadata.
//!
//! The archives come from tests/hostile/make-archives.py (Python's
//! tarfile). Root only, one test at a time: `cargo test --test
//! loop_hostile -- --test-threads=1`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

mod common;

/// A scratch folder that other users may enter (the racing user must).
fn scratch(name: &str) -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix(&format!("lifeboat-hostile-{name}-"))
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    t
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lifeboat(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Out {
    let args = args
        .iter()
        .map(|a| a.as_ref())
        .chain([std::ffi::OsStr::new("--quiet")]);
    let (code, stdout, stderr) = common::run_lifeboat(args);
    Out {
        code,
        stdout,
        stderr,
    }
}

fn ok(o: Out) -> Out {
    assert_eq!(o.code, 0, "lifeboat failed:\n{}\n{}", o.stdout, o.stderr);
    o
}

/// Every entry below `root` but the top-level names in `skip`, by lstat:
/// kind, mode, owner, size, content hash, link target, modification time.
fn snapshot(root: &Path, skip: &[&str]) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for ent in fs::read_dir(&dir).unwrap() {
            let p = ent.unwrap().path();
            if dir == root && skip.iter().any(|s| p.file_name().unwrap() == *s) {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let detail = if ft.is_file() {
                let mut h = Sha256::new();
                h.update(fs::read(&p).unwrap());
                hex::encode(h.finalize())
            } else if ft.is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else if ft.is_dir() {
                todo.push(p.clone());
                String::new()
            } else {
                format!("rdev {}", m.rdev())
            };
            let line = format!(
                "{:o} {}:{} {} {} {}.{}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.size(),
                detail,
                m.mtime(),
                m.mtime_nsec()
            );
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), line);
        }
    }
    out
}

fn assert_unchanged(before: &BTreeMap<PathBuf, String>, root: &Path, skip: &[&str], what: &str) {
    let after = snapshot(root, skip);
    for (p, want) in before {
        assert_eq!(after.get(p), Some(want), "{what}: {} changed", p.display());
    }
    for p in after.keys() {
        assert!(before.contains_key(p), "{what}: {} appeared", p.display());
    }
}

/// A tree the archives aim at: files with different modes and owners, a
/// directory and a symlink.
fn make_outside(dir: &Path) {
    fs::create_dir(dir).unwrap();
    let file = |name: &str, data: &str, mode: u32, owner: u32| {
        let p = dir.join(name);
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
    };
    file("secret", "top secret\n", 0o600, 0);
    file("data", "data\n", 0o644, 1234);
    fs::create_dir(dir.join("dir")).unwrap();
    fs::set_permissions(dir.join("dir"), fs::Permissions::from_mode(0o750)).unwrap();
    file("dir/file", "in a directory\n", 0o640, 1234);
    symlink("secret", dir.join("link")).unwrap();
}

fn make_archives(out: &Path, outside: &Path) {
    fs::create_dir_all(out).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile/make-archives.py");
    let st = Command::new("python3")
        .arg(script)
        .arg(out)
        .arg(outside)
        .status()
        .unwrap();
    assert!(st.success(), "make-archives.py failed");
}

/// A scratch folder with OUTSIDE and the hostile archives aimed at it.
fn with_archives(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let s = scratch(name);
    let outside = s.path().join("outside");
    make_outside(&outside);
    let archives = s.path().join("archives");
    make_archives(&archives, &outside);
    (s, outside, archives)
}

/// A fresh, empty restore target.
fn fresh(target: &Path) {
    if target.exists() {
        fs::remove_dir_all(target).unwrap();
    }
    fs::create_dir(target).unwrap();
}

#[test]
fn loop_hostile_archives_write_nothing_outside() {
    require_root!();
    let (s, outside, archives) = with_archives("archives");
    let target = s.path().join("target");
    let before = snapshot(s.path(), &["target"]);
    // Case, entries that must be named as refused.
    let cases: &[(&str, &[&str])] = &[
        (
            "direct",
            &["a/suid", "a/secret", "a/newdir", "a/null", "a/fifo"],
        ),
        ("chained", &["c1/suid", "c1/null", "c1/fifo"]),
        (
            "relative",
            &["sub/up/outside/suid", "over/secret", "over/null"],
        ),
        ("hardlinks", &["a/linked", "abs", "via", "up"]),
        ("dotdot", &["../outside/dotdot", "x/../../outside/secret"]),
    ];
    for (name, refused) in cases {
        fresh(&target);
        let tar = archives.join(format!("{name}.tar"));
        let o = lifeboat(&[&"backup", &"restore", &"--from", &tar, &"--to", &target]);
        assert_unchanged(&before, s.path(), &["target"], name);
        assert_ne!(o.code, 0, "{name}: restore should report refusals");
        assert!(o.stderr.contains("refused"), "{name}: {}", o.stderr);
        for r in *refused {
            assert!(
                o.stderr.contains(&format!("{r}: ")),
                "{name}: {r} not named: {}",
                o.stderr
            );
        }
        // The rest is restored, the symlinks themselves inside the target.
        if *name == "hardlinks" {
            assert_eq!(fs::read_link(target.join("a")).unwrap(), outside);
            assert_eq!(fs::read(target.join("f")).unwrap(), b"inside\n");
        }
    }

    // d/ with mode 7777, then a symlink d -> OUTSIDE: the directory's
    // deferred mode must not land on OUTSIDE.
    fresh(&target);
    let tar = archives.join("deferred-chmod.tar");
    let o = lifeboat(&[&"backup", &"restore", &"--from", &tar, &"--to", &target]);
    assert_unchanged(&before, s.path(), &["target"], "deferred-chmod");
    ok(o);
    assert_eq!(fs::read_link(target.join("d")).unwrap(), outside);
}

/// The `security.capability` xattr of `p`, if any.
fn capability(p: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 64];
    // SAFETY: valid strings, buffer valid for its length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn loop_hostile_untrusted_archive_options() {
    require_root!();
    let (s, _, archives) = with_archives("options");
    let tar = archives.join("untrusted.tar");
    let target = s.path().join("target");
    fresh(&target);
    ok(lifeboat(&[
        &"backup", &"restore", &"--from", &tar, &"--to", &target,
    ]));
    let m = fs::symlink_metadata(target.join("bin/suid")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o6755, 1234));
    assert!(fs::symlink_metadata(target.join("dev/null"))
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(
        capability(&target.join("bin/capable")).as_deref(),
        Some(&b"\x01\0\0\x02\0\x20\0\0\0\0\0\0\0\0\0\0\0\0\0\0"[..])
    );
    assert!(fs::symlink_metadata(target.join("dev/sda"))
        .unwrap()
        .file_type()
        .is_block_device());

    fresh(&target);
    let o = ok(lifeboat(&[
        &"backup",
        &"restore",
        &"--from",
        &tar,
        &"--to",
        &target,
        &"--no-same-owner",
        &"--no-devices",
    ]));
    assert!(o.stdout.contains("2 device nodes skipped"), "{}", o.stdout);
    let m = fs::symlink_metadata(target.join("bin/suid")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0));
    assert!(!target.join("dev/null").exists() && !target.join("dev/sda").exists());
    assert_eq!(capability(&target.join("bin/capable")), None);
    assert!(fs::symlink_metadata(target.join("dev/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn loop_hostile_later_entries_win_every_time() {
    require_root!();
    let (s, _, archives) = with_archives("order");
    let tar = archives.join("order.tar");
    let target = s.path().join("target");
    for round in 0..5 {
        fresh(&target);
        ok(lifeboat(&[
            &"backup", &"restore", &"--from", &tar, &"--to", &target,
        ]));
        for i in 0..300 {
            let p = |k: &str| target.join(format!("{k}{i}"));
            let what = format!("round {round}, entry {i}");
            assert_eq!(fs::read(p("f")).unwrap(), b"second\n", "{what}");
            assert_eq!(
                fs::read_link(p("s")).unwrap(),
                Path::new("the-symlink"),
                "{what}"
            );
            let d = fs::symlink_metadata(p("d")).unwrap();
            assert!(d.is_dir() && d.mode() & 0o7777 == 0o750, "{what}");
            let l = fs::symlink_metadata(p("l")).unwrap();
            assert!(l.is_file(), "{what}");
            assert_eq!(fs::read(p("l")).unwrap(), b"last\n", "{what}");
        }
    }
}

/// A source tree with `srv/data` (owned by uid 65534) holding `dirs`
/// directories of mode 3777 with `files` files each; backed up into `bk`.
fn backed_up_tree(s: &Path, dirs: usize, files: usize) -> (PathBuf, PathBuf) {
    let src = s.join("src");
    let data = src.join("srv/data");
    fs::create_dir_all(&data).unwrap();
    for d in 0..dirs {
        let dir = data.join(format!("s{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..files {
            fs::write(dir.join(format!("f{f:03}")), format!("{d} {f}\n")).unwrap();
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o3777)).unwrap();
    }
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let bk = s.join("bk");
    ok(lifeboat(&[
        &"backup",
        &"create",
        &"--to",
        &bk,
        &"--source",
        &src,
    ]));
    (src, bk)
}

/// Where `p` (absolute, as backed up) lands below `target`.
fn landed(target: &Path, p: &Path) -> PathBuf {
    target.join(p.strip_prefix("/").unwrap())
}

#[test]
fn loop_hostile_symlinks_in_a_path_target() {
    require_root!();
    let s = scratch("pathlinks");
    let outside = s.path().join("outside");
    make_outside(&outside);
    let (src, bk) = backed_up_tree(s.path(), 2, 2);
    let want = src.join("srv/data");
    let target = s.path().join("target");
    let skip = ["target", "bk"];
    let before = snapshot(s.path(), &skip);
    let restore = |overwrite: bool| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"backup", &"restore", &"--from", &bk, &"--to", &target, &"--path", &want,
        ];
        if overwrite {
            args.push(&"--overwrite");
        }
        lifeboat(&args)
    };
    // The path itself is a symlink to OUTSIDE.
    let dest = landed(&target, &want);
    for overwrite in [false, true] {
        fresh(&target);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        symlink(&outside, &dest).unwrap();
        let o = restore(overwrite);
        assert_unchanged(&before, s.path(), &skip, "symlink at the path");
        if overwrite {
            assert_eq!(o.code, 0, "{}", o.stderr);
            assert!(fs::symlink_metadata(&dest).unwrap().is_dir());
            assert_eq!(fs::read(dest.join("s001/f001")).unwrap(), b"1 1\n");
        } else {
            assert_ne!(o.code, 0);
            let named = format!("{} exists (a symlink, not followed)", dest.display());
            assert!(o.stderr.contains(&named), "{}", o.stderr);
            assert_eq!(fs::read_link(&dest).unwrap(), outside);
        }
    }
    // A parent of the path is a symlink to OUTSIDE: refused either way.
    let srv = dest.parent().unwrap();
    for overwrite in [false, true] {
        fresh(&target);
        fs::create_dir_all(srv.parent().unwrap()).unwrap();
        symlink(&outside, srv).unwrap();
        let o = restore(overwrite);
        assert_unchanged(&before, s.path(), &skip, "symlink above the path");
        assert_ne!(o.code, 0);
        let named = format!("{} is a symlink (not followed)", srv.display());
        assert!(o.stderr.contains(&named), "{}", o.stderr);
    }
}

/// Run as uid 65534: swaps every directory that appears in DATA for a
/// symlink to OUTSIDE (moving the directory aside) until STOP exists;
/// prints "ready", then the number of swaps.
const SWAPPER: &str = r#"
import os, sys
data, outside, stop = sys.argv[1:4]
swaps = 0
print("ready", flush=True)
while not os.path.exists(stop):
    try:
        names = os.listdir(data)
    except OSError:
        continue
    for n in names:
        p = os.path.join(data, n)
        if n.endswith(".moved") or os.path.islink(p) or not os.path.isdir(p):
            continue
        try:
            os.rename(p, p + ".moved")
            os.symlink(outside, p)
            swaps += 1
        except OSError:
            pass
print(swaps, flush=True)
"#;

#[test]
fn loop_hostile_directory_swapped_during_a_path_restore() {
    require_root!();
    let s = scratch("race");
    let outside = s.path().join("outside");
    make_outside(&outside);
    let (src, bk) = backed_up_tree(s.path(), 30, 15);
    let want = src.join("srv/data");
    let target = s.path().join("target");
    let data = landed(&target, &want);
    let stop = s.path().join("stop");
    let skip = ["target", "bk", "stop"];
    let before = snapshot(s.path(), &skip);
    let started = Instant::now();
    let (mut rounds, mut swaps, mut refused) = (0, 0, 0);
    while rounds < 50 && (rounds < 10 || started.elapsed() < Duration::from_secs(60)) {
        rounds += 1;
        fresh(&target);
        let _ = fs::remove_file(&stop);
        let mut child = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(SWAPPER)
            .arg(&data)
            .arg(&outside)
            .arg(&stop)
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let o = lifeboat(&[
            &"backup", &"restore", &"--from", &bk, &"--to", &target, &"--path", &want,
        ]);
        fs::write(&stop, b"").unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert!(child.wait().unwrap().success());
        swaps += rest.trim().parse::<u32>().unwrap();
        assert_unchanged(&before, s.path(), &skip, &format!("round {rounds}"));
        if o.code != 0 {
            assert!(o.stderr.contains("refused"), "round {rounds}: {}", o.stderr);
            // Named: a directory the swapper replaced, or an entry in it.
            assert!(o.stderr.contains("srv/data/s0"), "{}", o.stderr);
            refused += 1;
        }
    }
    eprintln!("{rounds} rounds, {swaps} directories swapped, {refused} restores refused entries");
    assert!(refused > 0, "the swapper never raced the restore");
}
