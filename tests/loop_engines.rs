//! restic and Borg repositories as `backup` destinations, against real
//! servers started on loopback ports: a local restic repository, restic
//! over SFTP (sshd), restic's REST protocol (`rclone serve restic`), restic
//! on S3 (s3s-fs), Borg local and Borg over ssh.
//!
//! Each round trip: two generations of the same tree (the second must add
//! almost nothing to the repository), list, verify, restore compared with
//! the source by an independent walker; pruning with --keep; wrong
//! passwords and unreachable repositories fail with the engine's message
//! on one line and leave the repository as it was.
//!
//! Root (sshd logs in as root): `cargo test --test loop_engines --
//! --test-threads=1`.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::servers::{self, Sshd};
use common::Scratch;
use sha2::{Digest, Sha256};

/// Why the engine tests skip when not root.
const NEEDS_ROOT: &str = "engine tests need root (sshd logs in as root)";

macro_rules! require {
    ($($p:expr),+) => {
        if !($(servers::have($p))&&+) {
            return;
        }
    };
}

/// Deterministic incompressible bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A tree with every kind the engines keep: 4 MiB of incompressible data,
/// small files, a private folder of another owner, a hard link, a symlink,
/// a fifo, an xattr, and a `cache` folder that --exclude leaves out.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("etc/private")).unwrap();
    std::fs::create_dir_all(root.join("var/cache/junk")).unwrap();
    for i in 0..4 {
        std::fs::write(root.join(format!("big{i}.bin")), noise(i, 1 << 20)).unwrap();
    }
    for i in 0..20 {
        std::fs::write(root.join(format!("etc/conf{i}")), format!("setting {i}\n")).unwrap();
    }
    std::fs::write(root.join("etc/private/secret"), b"s3cret\n").unwrap();
    std::os::unix::fs::chown(root.join("etc/private"), Some(1234), Some(1234)).unwrap();
    std::fs::set_permissions(
        root.join("etc/private"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    std::fs::hard_link(root.join("etc/conf1"), root.join("etc/conf1.link")).unwrap();
    std::os::unix::fs::symlink("../big0.bin", root.join("etc/big")).unwrap();
    nix::unistd::mkfifo(
        &root.join("etc/fifo"),
        nix::sys::stat::Mode::from_bits(0o640).unwrap(),
    )
    .unwrap();
    xattr_set(&root.join("etc/conf2"), "user.lifeboat", b"kept");
    std::fs::write(root.join("var/cache/junk/file"), b"left out\n").unwrap();
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let st = Command::new("setfattr")
        .args(["-n", name, "-v"])
        .arg(String::from_utf8_lossy(value).as_ref())
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Every entry below `root` (but `skip`): kind, mode, owner, size, mtime,
/// content hash, link target, xattrs, hard-link partner.
fn describe(root: &Path, skip: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == skip || rel.starts_with(&format!("{skip}/")) {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let mut d = format!("mode={:o} uid={} gid={}", m.mode(), m.uid(), m.gid());
            if ft.is_symlink() {
                d += &format!(" -> {}", std::fs::read_link(&p).unwrap().display());
            } else {
                d += &format!(" mtime={}.{}", m.mtime(), m.mtime_nsec());
            }
            if ft.is_file() {
                let h = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
                d += &format!(" size={} sha={h}", m.len());
                if m.nlink() > 1 {
                    let first = inodes.entry(m.ino()).or_insert_with(|| rel.clone());
                    d += &format!(" linkgroup={first}");
                }
                let x = Command::new("getfattr")
                    .args(["-d", "--absolute-names"])
                    .arg(&p)
                    .output()
                    .unwrap();
                d += &format!(
                    " xattrs={}",
                    String::from_utf8_lossy(&x.stdout)
                        .lines()
                        .skip(1)
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
            if ft.is_dir() {
                stack.push(p.clone());
            }
            out.insert(rel, d);
        }
    }
    out
}

/// Bytes of all files below `dir` (the repository's size on its server).
fn du(dir: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                n += m.len();
            }
        }
    }
    n
}

/// One destination under test.
struct Case {
    scratch: Scratch,
    /// `restic:...` / `borg:...`.
    spec: String,
    config: PathBuf,
    /// Where the repository's bytes are (measured for growth).
    store: PathBuf,
    /// Environment for the engine's own commands (init, snapshot counts).
    env: Vec<(String, String)>,
    /// `-o` options for restic's own commands.
    options: Vec<String>,
}

impl Case {
    fn src(&self) -> PathBuf {
        self.scratch.join("src")
    }

    fn lifeboat(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(common::lifeboat());
        cmd.arg("--config").arg(&self.config).args(args);
        // Calendar periods in UTC, as the generation ids are written.
        let out = common::without_engine_secrets(&mut cmd)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.lifeboat(args);
        assert_eq!(code, 0, "lifeboat {args:?} failed:\n{out}\n{err}");
        out
    }

    fn create(&self, extra: &[&str]) -> String {
        let src = self.src().display().to_string();
        let mut args = vec![
            "backup",
            "create",
            "--to",
            &self.spec,
            "--source",
            &src,
            "--exclude",
            "cache",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    /// The engine's own command, with the case's credentials.
    fn engine(&self, args: &[&str]) -> String {
        let (tool, repo) = self.spec.split_once(':').unwrap();
        let mut cmd = Command::new(tool);
        if tool == "restic" {
            cmd.args(["-r", repo]);
            for o in &self.options {
                cmd.args(["-o", o]);
            }
        }
        cmd.args(args.iter().map(|a| a.replace("{repo}", repo)));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn init(&self) {
        if self.spec.starts_with("restic:") {
            self.engine(&["init"]);
        } else {
            self.engine(&["init", "-e", "repokey", "{repo}"]);
        }
    }

    /// Snapshots (restic) or archives (Borg) in the repository.
    fn engine_count(&self) -> usize {
        if self.spec.starts_with("restic:") {
            let v: serde_json::Value =
                serde_json::from_str(&self.engine(&["snapshots", "--json"])).unwrap();
            v.as_array().unwrap().len()
        } else {
            let v: serde_json::Value =
                serde_json::from_str(&self.engine(&["list", "--json", "{repo}"])).unwrap();
            v["archives"].as_array().unwrap().len()
        }
    }
}

impl Case {
    /// (generation, is-metadata) of every snapshot/archive, sorted.
    fn engine_gens(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = if self.spec.starts_with("restic:") {
            let v: serde_json::Value =
                serde_json::from_str(&self.engine(&["snapshots", "--json"])).unwrap();
            let tags = |s: &serde_json::Value| -> Vec<String> {
                s["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect()
            };
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let t = tags(s);
                    let g = t
                        .iter()
                        .find_map(|t| t.strip_prefix("lifeboat-gen="))
                        .unwrap();
                    (g.to_string(), t.iter().any(|t| t == "lifeboat-meta"))
                })
                .collect()
        } else {
            let v: serde_json::Value =
                serde_json::from_str(&self.engine(&["list", "--json", "{repo}"])).unwrap();
            v["archives"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    let parts: Vec<&str> = a["name"].as_str().unwrap().split('.').collect();
                    (parts[1].to_string(), parts[2] == "meta")
                })
                .collect()
        };
        out.sort();
        out
    }

    /// The generation ids `backup list --json` shows, oldest first.
    fn listed(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["backup", "list", "--json", "--from", &self.spec]))
                .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|g| g["generation"]["id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A case with its scratch folder, source tree and configuration:
/// `config` is the TOML body, `{dir}` replaced by the scratch folder.
fn case(name: &str, spec: &str, store: &str, config: &str, env: Vec<(&str, String)>) -> Case {
    let scratch = Scratch::new(&format!("engine-{name}"));
    let dir = scratch.path.display().to_string();
    std::fs::write(scratch.join("password"), "correct horse\n").unwrap();
    make_tree(&scratch.join("src"));
    let cfg = scratch.join("lifeboat.toml");
    std::fs::write(&cfg, config.replace("{dir}", &dir)).unwrap();
    let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.into(), v)).collect();
    env.push(("RESTIC_PASSWORD_FILE".into(), format!("{dir}/password")));
    env.push(("BORG_PASSCOMMAND".into(), format!("cat {dir}/password")));
    Case {
        spec: spec.replace("{dir}", &dir),
        store: PathBuf::from(store.replace("{dir}", &dir)),
        config: cfg,
        scratch,
        env,
        options: Vec::new(),
    }
}

const RESTIC_CONFIG: &str = "[restic]\npassword_file = \"{dir}/password\"\n";
const BORG_CONFIG: &str = "[borg]\npasscommand = \"cat {dir}/password\"\n";

/// Two generations of the same tree (the second adds under 2% of the
/// first's bytes), list, verify, and a restore equal to the source.
fn round_trip(c: &Case) {
    c.init();
    let before = du(&c.store);
    let out = c.create(&[]);
    assert!(out.contains("written to"), "{out}");
    let first = du(&c.store) - before;
    assert!(first > 4 << 20, "first backup added only {first} bytes");
    c.create(&[]);
    let second = du(&c.store) - before - first;
    assert!(
        second * 50 < first,
        "an unchanged tree grew the repository by {second} bytes (first backup: {first})"
    );
    let list = c.ok(&["backup", "list", "--from", &c.spec]);
    let gens: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(gens.len(), 2, "{list}");
    assert!(gens.iter().all(|l| l.trim_end().ends_with(" ok")), "{list}");
    let v = c.ok(&["backup", "verify", "--from", &c.spec]);
    assert!(v.starts_with("backup sound: 2 generation(s)"), "{v}");
    let to = c.scratch.join("restored");
    let r = c.ok(&[
        "backup",
        "restore",
        "--from",
        &c.spec,
        "--to",
        &to.display().to_string(),
    ]);
    assert!(r.contains("every file checked against the manifest"), "{r}");
    let src = c.src();
    let got = describe(&to.join(src.strip_prefix("/").unwrap()), "");
    let want = describe(&src, "var/cache");
    assert_eq!(got, want, "restored tree differs from the source");
    assert!(got.contains_key("var") && got.contains_key("etc/fifo"));
}

/// A third generation with --keep 2 removes the first: two generations
/// and their snapshots stay.
fn prune(c: &Case) {
    let per_gen = c.engine_count() / 2;
    std::fs::write(c.src().join("etc/conf3"), "changed\n").unwrap();
    let out = c.create(&["--keep", "2"]);
    assert!(out.contains("removed old generation"), "{out}");
    let list = c.ok(&["backup", "list", "--from", &c.spec]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert_eq!(c.engine_count(), 2 * per_gen);
}

#[test]
fn restic_local_round_trip_and_prune() {
    require_root!(NEEDS_ROOT);
    require!("restic");
    let c = case(
        "restic-local",
        "restic:{dir}/repo",
        "{dir}/repo",
        RESTIC_CONFIG,
        vec![],
    );
    round_trip(&c);
    prune(&c);
    // --deep: a restore into scratch compared with the manifest.
    let v = c.ok(&["backup", "verify", "--deep", "--from", &c.spec]);
    assert!(v.contains("restored and compared"), "{v}");
}

/// Calendar retention words on a repository, decided by lifeboat per
/// generation: each generation here has two file systems (two snapshots or
/// archives) and its metadata one; `--dry-run` removes nothing, a prune
/// removes whole generations (all three together), `backup.keep_last`
/// applies after `backup create`, `--keep-daily 1` keeps the day's newest.
fn calendar_retention(c: &Case) {
    c.init();
    let other = c.scratch.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("file"), b"second file system\n").unwrap();
    let other_s = other.display().to_string();
    for i in 0..4 {
        std::fs::write(c.src().join("etc/conf3"), format!("round {i}\n")).unwrap();
        c.create(&["--source", &other_s]);
    }
    let gens = c.listed();
    assert_eq!(gens.len(), 4, "{gens:?}");
    let whole = |ids: &[&String]| -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = ids
            .iter()
            .flat_map(|g| {
                [
                    ((*g).clone(), false),
                    ((*g).clone(), false),
                    ((*g).clone(), true),
                ]
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(c.engine_gens(), whole(&gens.iter().collect::<Vec<_>>()));
    let prune = |extra: &[&str]| -> String {
        let mut args = vec!["backup", "prune", "--from", &c.spec];
        args.extend_from_slice(extra);
        c.ok(&args)
    };
    let before = c.engine_gens();
    let out = prune(&["--keep-last", "2", "--dry-run"]);
    for (i, g) in gens.iter().enumerate() {
        let line = out
            .lines()
            .find(|l| l.contains(g.as_str()))
            .unwrap_or_default();
        let want = if i < 2 { "would remove" } else { "keep" };
        assert!(line.starts_with(want), "{g}: {out}");
    }
    assert!(out.contains("last #1") && out.contains("last #2"), "{out}");
    assert!(
        out.contains("dry run: 2 generation(s) would be removed, 2 kept (--keep-last 2)"),
        "{out}"
    );
    assert_eq!(c.engine_gens(), before, "--dry-run changed the repository");
    let out = prune(&["--keep-last", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["removed"], serde_json::json!([gens[0], gens[1]]), "{out}");
    assert_eq!(v["dry_run"], false);
    assert_eq!(c.engine_gens(), whole(&[&gens[2], &gens[3]]));
    assert_eq!(c.listed(), gens[2..]);
    // backup.keep_last from the configuration, after a backup.
    let cfg = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(&c.config, format!("[backup]\nkeep_last = 2\n{cfg}")).unwrap();
    let out = c.create(&["--source", &other_s]);
    assert!(
        out.contains(&format!(
            "removed old generation {} (--keep-last 2)",
            gens[2]
        )),
        "{out}"
    );
    let now = c.listed();
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now[0], gens[3]);
    assert_eq!(c.engine_gens(), whole(&[&now[0], &now[1]]));
    // One a day (UTC): both are of today unless midnight passed between
    // (the configured keep_last would add to the flag, as for folders).
    std::fs::write(&c.config, cfg).unwrap();
    let out = prune(&["--keep-daily", "1"]);
    let same_day = now[0][..8] == now[1][..8];
    let left = c.listed();
    assert_eq!(left.len(), if same_day { 1 } else { 2 }, "{out}");
    assert_eq!(left.last(), now.last());
    assert!(
        out.contains(&format!(
            "daily {}-{}-{}",
            &now[1][..4],
            &now[1][4..6],
            &now[1][6..8]
        )),
        "{out}"
    );
    assert_eq!(c.engine_gens(), whole(&left.iter().collect::<Vec<_>>()));
    let v = c.ok(&["backup", "verify", "--from", &c.spec]);
    assert!(v.starts_with("backup sound"), "{v}");
}

#[test]
fn restic_calendar_retention() {
    require_root!();
    require!("restic");
    let c = case(
        "restic-keep",
        "restic:{dir}/repo",
        "{dir}/repo",
        RESTIC_CONFIG,
        vec![],
    );
    calendar_retention(&c);
}

#[test]
fn borg_calendar_retention() {
    require_root!();
    require!("borg");
    let c = case(
        "borg-keep",
        "borg:{dir}/repo",
        "{dir}/repo",
        BORG_CONFIG,
        vec![],
    );
    calendar_retention(&c);
}

/// `backup restore --path` on a repository: only the paths asked for (a
/// folder of one file system, a file, a folder of a second file system)
/// land, equal to the source; a path the generation lacks and an existing
/// path without --overwrite are refused before anything is written.
fn restore_paths(c: &Case) {
    c.init();
    let other = c.scratch.join("other");
    std::fs::create_dir_all(other.join("sub")).unwrap();
    std::fs::write(other.join("sub/file"), b"second file system\n").unwrap();
    std::fs::write(other.join("left"), b"not asked for\n").unwrap();
    let other_s = other.display().to_string();
    c.create(&["--source", &other_s]);
    let src = c.src();
    let to = c.scratch.join("restored");
    let to_s = to.display().to_string();
    let p = |rel: &str, root: &Path| root.join(rel).display().to_string();
    let (etc, big, sub) = (p("etc", &src), p("big2.bin", &src), p("sub", &other));
    let restore = |extra: &[&str]| {
        let mut args = vec!["backup", "restore", "--from", &c.spec, "--to", &to_s];
        args.extend_from_slice(extra);
        c.lifeboat(&args)
    };
    let (code, _, err) = restore(&["--path", &p("nothing/here", &src)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing/here is not in generation"), "{err}");
    assert!(!to.exists(), "a refused restore wrote {}", to.display());
    let (code, out, err) = restore(&["--path", &etc, "--path", &big, "--path", &sub]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("every file checked against the manifest"),
        "{out}"
    );
    let landed = |root: &Path| to.join(root.strip_prefix("/").unwrap());
    assert_eq!(
        describe(&landed(&src).join("etc"), ""),
        describe(&src.join("etc"), "")
    );
    assert_eq!(
        std::fs::read(landed(&src).join("big2.bin")).unwrap(),
        std::fs::read(src.join("big2.bin")).unwrap()
    );
    assert_eq!(
        describe(&landed(&other).join("sub"), ""),
        describe(&other.join("sub"), "")
    );
    let mut top: Vec<String> = std::fs::read_dir(landed(&src))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["big2.bin", "etc"], "only the paths asked for");
    assert!(!landed(&other).join("left").exists());
    // Again: the file exists now.
    let (code, _, err) = restore(&["--path", &big]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("exists; pass --overwrite to replace it"),
        "{err}"
    );
    std::fs::write(landed(&src).join("big2.bin"), b"clobbered").unwrap();
    let (code, out, err) = restore(&["--path", &big, "--overwrite"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read(landed(&src).join("big2.bin")).unwrap(),
        std::fs::read(src.join("big2.bin")).unwrap()
    );
}

#[test]
fn restic_restore_paths() {
    require_root!();
    require!("restic");
    let c = case(
        "restic-path",
        "restic:{dir}/repo",
        "{dir}/repo",
        RESTIC_CONFIG,
        vec![],
    );
    restore_paths(&c);
}

#[test]
fn borg_restore_paths() {
    require_root!();
    require!("borg");
    let c = case(
        "borg-path",
        "borg:{dir}/repo",
        "{dir}/repo",
        BORG_CONFIG,
        vec![],
    );
    restore_paths(&c);
}

/// Runs `lifeboat ARGS` on a pseudo-terminal (python3's pty): waits for
/// the password prompt, types `typed`, returns (exit code, what the
/// terminal showed).
fn on_terminal(c: &Case, args: &[&str], typed: &str) -> (i32, String) {
    const DRIVER: &str = r#"
import os, pty, sys
typed = sys.argv[1].encode() + b"\n"
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
seen = b""
def read():
    global seen
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        return False
    seen += chunk
    return bool(chunk)
while b"(not shown): " not in seen and read():
    pass
os.write(fd, typed)
while read():
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(seen)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", DRIVER, typed])
        .arg(common::lifeboat())
        .arg("--config")
        .arg(&c.config)
        .args(args);
    let out = common::without_engine_secrets(&mut cmd).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// No password configured: on a terminal `backup create` and `backup
/// list` ask for it once (not echoed) and restic gets it in its
/// environment; a wrong one is restic's one-line error; without a
/// terminal the error names the settings to use.
#[test]
fn restic_password_typed_on_a_terminal() {
    require_root!();
    require!("restic", "python3");
    let c = case(
        "restic-typed",
        "restic:{dir}/repo",
        "{dir}/repo",
        "",
        vec![],
    );
    c.init();
    let src = c.src().display().to_string();
    let create = [
        "backup", "create", "--to", &c.spec, "--source", &src, "--quiet",
    ];
    let (code, shown) = on_terminal(&c, &create, "correct horse");
    assert_eq!(code, 0, "{shown}");
    assert_eq!(
        shown.matches("(not shown): ").count(),
        1,
        "asked once: {shown}"
    );
    assert!(
        !shown.contains("correct horse"),
        "the password was echoed: {shown}"
    );
    let gen = shown
        .split("generation ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generation in: {shown}"))
        .to_string();
    let (code, shown) = on_terminal(&c, &["backup", "list", "--from", &c.spec], "correct horse");
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains(&gen), "{shown}");
    // Without --quiet, restic's status as native progress lines: "backup:
    // 4.0 MiB of 4.0 MiB, 27 of 31 files, ..." (the last one drawn whole).
    let (code, shown) = on_terminal(&c, &create[..create.len() - 1], "correct horse");
    assert_eq!(code, 0, "{shown}");
    let progress = shown
        .split(['\r', '\n'])
        .rfind(|l| l.contains("backup: ") && l.contains(" files, "))
        .unwrap_or_else(|| panic!("no progress line: {shown:?}"))
        .to_string();
    // All counted at the end: "X of X, N of N files".
    let at = progress.find("backup: ").unwrap();
    let w: Vec<&str> = progress[at..].split_whitespace().collect();
    assert_eq!(
        (w[1], w[2]),
        (w[4], w[5].trim_end_matches(',')),
        "{progress}"
    );
    assert_eq!(w[6], w[8], "{progress}");
    let (code, shown) = on_terminal(&c, &["backup", "list", "--from", &c.spec], "wrong horse");
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("wrong password"), "{shown}");
    // No terminal: one line naming the settings.
    let (code, _, err) = c.lifeboat(&["backup", "list", "--from", &c.spec]);
    assert_eq!(code, 2);
    let line = one_error_line(&err);
    assert!(
        line.contains("no password for restic repository")
            && line.contains("[restic] password_file")
            && line.contains("RESTIC_PASSWORD_FILE"),
        "{line}"
    );
}

#[test]
fn restic_over_sftp() {
    require_root!(NEEDS_ROOT);
    require!("restic", "/usr/sbin/sshd");
    let scratch = Scratch::new("engine-sshd");
    let sshd = Sshd::start(&scratch.join("sshd"));
    let port = sshd.server.port;
    let sftp = format!("{} -p {port} root@127.0.0.1 -s sftp", sshd.ssh_command());
    let config = format!("{RESTIC_CONFIG}options = [\"sftp.command={sftp}\"]\n");
    let mut c = case(
        "restic-sftp",
        "restic:sftp:root@127.0.0.1:{dir}/repo",
        "{dir}/repo",
        &config,
        vec![],
    );
    c.options = vec![format!("sftp.command={sftp}")];
    round_trip(&c);
}

#[test]
fn restic_over_rest() {
    require_root!(NEEDS_ROOT);
    require!("restic", "rclone");
    let scratch = Scratch::new("engine-rest");
    let data = scratch.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = servers::rest_server(&data, &scratch.join("rclone.log"));
    let spec = format!("restic:rest:http://127.0.0.1:{}/", server.port);
    let c = case(
        "restic-rest",
        &spec,
        &data.display().to_string(),
        RESTIC_CONFIG,
        vec![],
    );
    round_trip(&c);
}

#[test]
fn restic_on_s3() {
    require_root!(NEEDS_ROOT);
    require!("restic", servers::S3S_FS);
    let scratch = Scratch::new("engine-s3");
    let data = scratch.join("s3");
    std::fs::create_dir_all(data.join("lifeboat")).unwrap();
    let server = servers::s3_server(&data, &scratch.join("s3s.log"));
    let env = scratch.join("aws.env");
    std::fs::write(
        &env,
        format!(
            "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\n",
            servers::S3_ACCESS_KEY,
            servers::S3_SECRET_KEY
        ),
    )
    .unwrap();
    // s3s-fs 0.14 answers a listing with an empty delimiter (which minio-go,
    // restic's S3 client, always sends) with the first level only: restic's
    // default layout (data/XX/ID) would look incomplete to `restic check`.
    // The flat "s3legacy" layout of restic 0.14 avoids nested prefixes.
    let layout = "s3.layout=s3legacy";
    let config = format!(
        "{RESTIC_CONFIG}environment_file = \"{}\"\noptions = [\"{layout}\"]\n",
        env.display()
    );
    let spec = format!("restic:s3:http://127.0.0.1:{}/lifeboat/host1", server.port);
    let mut c = case(
        "restic-s3",
        &spec,
        &data.join("lifeboat").display().to_string(),
        &config,
        vec![
            ("AWS_ACCESS_KEY_ID", servers::S3_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", servers::S3_SECRET_KEY.into()),
        ],
    );
    c.options = vec![layout.into()];
    round_trip(&c);
    prune(&c);
}

#[test]
fn borg_local_round_trip_and_prune() {
    require_root!(NEEDS_ROOT);
    require!("borg");
    let c = case(
        "borg-local",
        "borg:{dir}/repo",
        "{dir}/repo",
        BORG_CONFIG,
        vec![],
    );
    round_trip(&c);
    prune(&c);
}

#[test]
fn borg_over_ssh() {
    require_root!(NEEDS_ROOT);
    require!("borg", "/usr/sbin/sshd");
    let scratch = Scratch::new("engine-borg-sshd");
    let sshd = Sshd::start(&scratch.join("sshd"));
    let rsh = sshd.ssh_command();
    let envfile = scratch.join("borg.env");
    std::fs::write(&envfile, format!("BORG_RSH=\"{rsh}\"\n")).unwrap();
    let config = format!(
        "{BORG_CONFIG}environment_file = \"{}\"\n",
        envfile.display()
    );
    let spec = format!("borg:ssh://root@127.0.0.1:{}{{dir}}/repo", sshd.server.port);
    let c = case(
        "borg-ssh",
        &spec,
        "{dir}/repo",
        &config,
        vec![("BORG_RSH", rsh)],
    );
    round_trip(&c);
}

/// The one line of stderr of a failed command.
fn one_error_line(err: &str) -> &str {
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    lines[0]
}

#[test]
fn wrong_password_and_unreachable_repository() {
    require_root!(NEEDS_ROOT);
    require!("restic", "borg");
    for (name, spec, config) in [
        ("restic", "restic:{dir}/repo", RESTIC_CONFIG),
        ("borg", "borg:{dir}/repo", BORG_CONFIG),
    ] {
        let c = case(&format!("{name}-wrong"), spec, "{dir}/repo", config, vec![]);
        c.init();
        c.create(&[]);
        let before = du(&c.store);
        let count = c.engine_count();
        std::fs::write(c.scratch.join("password"), "wrong\n").unwrap();
        let src = c.src().display().to_string();
        let (code, out, err) =
            c.lifeboat(&["backup", "create", "--to", &c.spec, "--source", &src, "-q"]);
        assert_eq!(code, 2, "{out}{err}");
        let line = one_error_line(&err);
        let want = if name == "restic" {
            "wrong password or no key found"
        } else {
            "is incorrect"
        };
        assert!(
            line.contains(want) && line.contains(&format!("{name} repository")),
            "{line}"
        );
        std::fs::write(c.scratch.join("password"), "correct horse\n").unwrap();
        assert_eq!(
            du(&c.store),
            before,
            "a refused backup changed the repository"
        );
        assert_eq!(c.engine_count(), count);
    }
    // Nothing listens on a port just freed.
    let port = servers::free_port();
    let scratch = Scratch::new("engine-unreachable");
    let dir = scratch.path.display().to_string();
    std::fs::write(scratch.join("password"), "x\n").unwrap();
    let cfg = scratch.join("lifeboat.toml");
    std::fs::write(
        &cfg,
        format!("{}{}", RESTIC_CONFIG, BORG_CONFIG).replace("{dir}", &dir),
    )
    .unwrap();
    // Borg relays ssh's "Connection refused" only sometimes (it may exit
    // first); its own line names the closed connection.
    for (spec, want) in [
        (
            format!("restic:rest:http://127.0.0.1:{port}/"),
            "connection refused",
        ),
        (
            format!("borg:ssh://root@127.0.0.1:{port}/./repo"),
            "Connection closed by remote host",
        ),
    ] {
        let (code, out, err) = common::run_lifeboat([
            "--config",
            &cfg.display().to_string(),
            "backup",
            "list",
            "--from",
            &spec,
        ]);
        assert_eq!(code, 2, "{out}{err}");
        let line = one_error_line(&err);
        assert!(line.contains(want), "{spec}: {line}");
    }
}

/// Damage is found: a restic data pack removed from the repository fails
/// the engine's check, and a Borg file-system archive deleted behind
/// lifeboat's back fails the listing check; `verify` exits 1 naming it.
#[test]
fn verify_finds_damage() {
    require_root!(NEEDS_ROOT);
    require!("restic", "borg");
    let c = case(
        "restic-damage",
        "restic:{dir}/repo",
        "{dir}/repo",
        RESTIC_CONFIG,
        vec![],
    );
    c.init();
    c.create(&[]);
    let data = c.store.join("data");
    let pack = std::fs::read_dir(&data)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&pack).unwrap();
    let (code, out, err) = c.lifeboat(&["backup", "verify", "--from", &c.spec]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("backup damaged: restic check failed"), "{err}");

    let b = case(
        "borg-damage",
        "borg:{dir}/repo",
        "{dir}/repo",
        BORG_CONFIG,
        vec![],
    );
    b.init();
    b.create(&[]);
    let list: serde_json::Value =
        serde_json::from_str(&b.engine(&["list", "--json", "{repo}"])).unwrap();
    let fs_archive = list["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .find(|n| n.contains(".fs."))
        .unwrap();
    b.engine(&["delete", &format!("{{repo}}::{fs_archive}")]);
    let (code, out, err) = b.lifeboat(&["backup", "verify", "--from", &b.spec]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("backup damaged: generation"), "{err}");
    assert!(err.contains(&fs_archive), "{err}");
}

/// A hostile repository: the first file system's snapshot (swapped in with
/// a manifest that names it) holds a symlink where the second file
/// system's mount point is, pointing outside the restore target. The
/// restore refuses it and the folder outside is byte-for-byte unchanged.
#[test]
fn restore_never_follows_a_planted_symlink_out_of_the_target() {
    require_root!(NEEDS_ROOT);
    require!("restic");
    let c = case(
        "restic-hostile",
        "restic:{dir}/repo",
        "{dir}/repo",
        RESTIC_CONFIG,
        vec![],
    );
    c.init();
    let (r, srv) = (c.scratch.join("r"), c.scratch.join("r/srv"));
    std::fs::create_dir_all(&srv).unwrap();
    std::fs::write(r.join("root-file"), b"root\n").unwrap();
    std::fs::write(srv.join("index.html"), b"served\n").unwrap();
    let (rs, ss) = (r.display().to_string(), srv.display().to_string());
    c.ok(&[
        "backup", "create", "--to", &c.spec, "--source", &rs, "--source", &ss, "-q",
    ]);
    // The outside folder the planted link points at.
    let outside = c.scratch.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"untouched\n").unwrap();
    let before = describe(&outside, "");
    // A hostile tree for the first file system: srv -> outside.
    let evil = c.scratch.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    std::os::unix::fs::symlink(&outside, evil.join("srv")).unwrap();
    let cmd = Command::new("restic")
        .args(["-r", &c.spec["restic:".len()..], "--json", "backup", "."])
        .current_dir(&evil)
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&cmd.stdout);
    let evil_id = summary
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["snapshot_id"].as_str().map(String::from))
        .unwrap();
    // The metadata, rewritten to name the hostile snapshot for "r".
    let metas: serde_json::Value =
        serde_json::from_str(&c.engine(&["snapshots", "--json", "--tag", "lifeboat-meta"]))
            .unwrap();
    let meta = &metas[0];
    let meta_id = meta["id"].as_str().unwrap();
    let gen_tag = meta["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .find(|t| t.starts_with("lifeboat-gen="))
        .unwrap();
    let mdir = c.scratch.join("meta");
    std::fs::create_dir_all(&mdir).unwrap();
    c.engine(&["restore", meta_id, "--target", &mdir.display().to_string()]);
    let z = std::fs::read(mdir.join("manifest.json.zst")).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&zstd::stream::decode_all(&z[..]).unwrap()).unwrap();
    for fs in m["filesystems"].as_array_mut().unwrap() {
        if fs["mountpoint"] == serde_json::json!(rs) {
            fs["archive"] = serde_json::json!(evil_id);
        }
    }
    let z = zstd::stream::encode_all(&serde_json::to_vec(&m).unwrap()[..], 3).unwrap();
    std::fs::write(mdir.join("manifest.json.zst"), &z).unwrap();
    let mut g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(mdir.join("generation.json")).unwrap()).unwrap();
    g["manifest_sha256"] = serde_json::json!(hex::encode(Sha256::digest(&z)));
    std::fs::write(
        mdir.join("generation.json"),
        serde_json::to_vec(&g).unwrap(),
    )
    .unwrap();
    c.engine(&["forget", meta_id]);
    let tags = format!("lifeboat,lifeboat-meta,{gen_tag}");
    let st = Command::new("restic")
        .args([
            "-r",
            &c.spec["restic:".len()..],
            "backup",
            "--tag",
            &tags,
            ".",
        ])
        .current_dir(&mdir)
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .status()
        .unwrap();
    assert!(st.success());
    let to = c.scratch.join("restored");
    let (code, o, err) = c.lifeboat(&[
        "backup",
        "restore",
        "--from",
        &c.spec,
        "--to",
        &to.display().to_string(),
    ]);
    assert_ne!(code, 0, "the planted link was followed:\n{o}{err}");
    assert!(err.contains("srv"), "{err}");
    assert_eq!(describe(&outside, ""), before, "the outside folder changed");
}

/// Mounts made for a chroot, undone (lazily) when dropped.
struct ChrootMounts(Vec<PathBuf>);

impl Drop for ChrootMounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

/// Borg in the rescue image: `mkrescue --add-program borg` ships the
/// Python interpreter, its library and Borg's modules; in a chroot of the
/// unpacked initrd (no file of the host's), the image's own lifeboat and
/// borg restore a generation equal to the source, every file checked
/// against the manifest.
#[test]
fn borg_restores_inside_the_rescue_image() {
    require_root!(NEEDS_ROOT);
    require!("borg", "cpio", "zstd", "chroot");
    let c = case(
        "borg-rescue",
        "borg:{dir}/repo",
        "{dir}/repo",
        BORG_CONFIG,
        vec![],
    );
    c.init();
    c.create(&[]);
    let out = c.scratch.join("rescue");
    c.ok(&[
        "mkrescue",
        "--output",
        &out.display().to_string(),
        "--no-iso",
        "--add-program",
        "borg",
    ]);
    let root = c.scratch.join("root");
    std::fs::create_dir(&root).unwrap();
    common::sh(&format!(
        "zstd -dc '{}' | (cd '{}' && cpio -idm --quiet)",
        out.join("initrd").display(),
        root.display()
    ));
    let listing = common::sh(&format!(
        "cd '{}' && find usr/bin/borg usr/lib/python3* -maxdepth 1 | sort",
        root.display()
    ));
    assert!(listing.contains("usr/bin/borg\n"), "{listing}");
    assert!(
        listing.contains("/os.py\n"),
        "no standard library: {listing}"
    );
    assert!(
        listing.lines().any(|l| l.ends_with("/borg")),
        "no borg package: {listing}"
    );
    let unwanted = common::sh(&format!(
        "cd '{}' && find usr -name __pycache__ -o -path 'usr/lib/python3.*/test' \
         -o -path 'usr/lib/python3.*/tkinter'",
        root.display()
    ));
    assert_eq!(unwanted, "", "left in the image");

    // The repository and its passphrase where a rescue would reach them.
    common::sh(&format!(
        "cp -a '{}' '{r}/srv-repo' && mkdir -p '{r}/srv' '{r}/root' '{r}/proc' '{r}/dev' && \
         mv '{r}/srv-repo' '{r}/srv/repo' && cp '{}' '{r}/srv/password'",
        c.store.display(),
        c.scratch.join("password").display(),
        r = root.display()
    ));
    let mut mounts = ChrootMounts(Vec::new());
    for (args, dir) in [
        (&["-t", "proc", "proc"][..], "proc"),
        (&["--bind", "/dev"][..], "dev"),
    ] {
        let st = Command::new("mount")
            .args(args)
            .arg(root.join(dir))
            .status()
            .unwrap();
        assert!(st.success(), "mount {args:?}");
        mounts.0.push(root.join(dir));
    }
    let run = Command::new("chroot")
        .arg(&root)
        .args([
            "/usr/bin/lifeboat",
            "backup",
            "restore",
            "--from",
            "borg:/srv/repo",
            "--to",
            "/srv/out",
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/root")
        .env("BORG_PASSCOMMAND", "cat /srv/password")
        .output()
        .unwrap();
    drop(mounts);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr),
    );
    assert!(
        run.status.success(),
        "restore in the image failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("every file checked against the manifest"),
        "{stdout}"
    );
    let src = c.src();
    let got = describe(
        &root.join("srv/out").join(src.strip_prefix("/").unwrap()),
        "",
    );
    assert_eq!(
        got,
        describe(&src, "var/cache"),
        "restored tree differs from the source"
    );
}

/// `backup create` to a Borg repository on a terminal draws the native
/// progress line from borg's `--progress --log-json` records ("backup: X
/// of Y, N of M files"); `--quiet` draws none.
#[test]
fn borg_progress_lines_on_a_terminal() {
    require_root!(NEEDS_ROOT);
    require!("borg", "script");
    let c = case(
        "borg-progress",
        "borg:{dir}/repo",
        "{dir}/repo",
        BORG_CONFIG,
        vec![],
    );
    c.init();
    let on_tty = |extra: &str| {
        let line = format!(
            "'{}' --config '{}' backup create --to '{}' --source '{}' {extra}",
            common::lifeboat().display(),
            c.config.display(),
            c.spec,
            c.src().display()
        );
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env_remove("BORG_PASSPHRASE")
            .env_remove("LIFEBOAT_LOG")
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{shown}");
        shown
    };
    let shown = on_tty("");
    let progress = shown
        .split(['\r', '\n'])
        .rfind(|l| l.contains("backup: ") && l.contains(" files, "))
        .unwrap_or_else(|| panic!("no progress line: {shown:?}"))
        .to_string();
    let at = progress.find("backup: ").unwrap();
    let w: Vec<&str> = progress[at..].split_whitespace().collect();
    // All bytes counted at the end, from the archive's totals: "backup: X
    // of X, N of M files" (borg's own last record said 0 B and 0 files; its
    // file count takes a hard link once, so N may be below M).
    assert_eq!(
        (w[1], w[2]),
        (w[4], w[5].trim_end_matches(',')),
        "{progress}"
    );
    let (n, m) = (w[6].parse::<u64>().unwrap(), w[8].parse::<u64>().unwrap());
    assert!(n > 0 && n <= m && n + 2 >= m, "{progress}");
    let quiet = on_tty("--quiet");
    assert!(
        !quiet.contains("backup: "),
        "--quiet drew progress: {quiet:?}"
    );
    assert!(quiet.contains("written to"), "{quiet}");
}

/// No passphrase configured for an encrypted Borg repository: on a terminal
/// `backup create` and `backup list` ask once (not echoed) and borg gets it
/// in its environment; a wrong one is borg's one-line error; without a
/// terminal the error names the settings. An unencrypted repository is not
/// asked for one.
#[test]
fn borg_passphrase_typed_on_a_terminal() {
    require_root!(NEEDS_ROOT);
    require!("borg", "python3");
    let c = case("borg-typed", "borg:{dir}/repo", "{dir}/repo", "", vec![]);
    c.init();
    let src = c.src().display().to_string();
    let create = [
        "backup", "create", "--to", &c.spec, "--source", &src, "--quiet",
    ];
    let (code, shown) = on_terminal(&c, &create, "correct horse");
    assert_eq!(code, 0, "{shown}");
    assert_eq!(
        shown.matches("(not shown): ").count(),
        1,
        "asked once: {shown}"
    );
    assert!(!shown.contains("correct horse"), "echoed: {shown}");
    let (code, shown) = on_terminal(&c, &["backup", "list", "--from", &c.spec], "correct horse");
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains(" ok"), "{shown}");
    let (code, shown) = on_terminal(&c, &["backup", "list", "--from", &c.spec], "wrong horse");
    assert_eq!(code, 2, "{shown}");
    assert!(shown.contains("incorrect"), "{shown}");
    let (code, _, err) = c.lifeboat(&["backup", "list", "--from", &c.spec]);
    assert_eq!(code, 2);
    let line = one_error_line(&err);
    assert!(
        line.contains("no passphrase for Borg repository")
            && line.contains("[borg] passcommand")
            && line.contains("BORG_PASSCOMMAND"),
        "{line}"
    );
    // Unencrypted: no passphrase asked, none needed.
    let plain = c.scratch.join("plain");
    c.engine(&["init", "-e", "none", &plain.display().to_string()]);
    let spec = format!("borg:{}", plain.display());
    let (code, out, err) = c.lifeboat(&[
        "backup", "create", "--to", &spec, "--source", &src, "--quiet",
    ]);
    assert_eq!(code, 0, "{out}{err}");
}
