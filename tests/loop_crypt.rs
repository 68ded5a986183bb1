//! Loop tier for encrypted generations (`backup create --encrypt-to`,
//! `--identity`): round trip with an age and an SSH identity, a wrong
//! identity, one flipped byte in an archive, the manifest and
//! generation.json.age, what the folder reveals without the key.
//!
//! Root only (restore sets owners), one test at a time: `cargo test --test
//! loop_crypt -- --test-threads=1`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use age::secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

mod common;
use common::run_lifeboat;

/// A file name and content that must never appear in clear in the backup.
const SECRET_NAME: &str = "secret-plans-2027.txt";
const SECRET_TEXT: &str = "the merger closes on 2027-03-01";

/// Pseudo-random bytes (incompressible enough to span many zstd frames).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The tree: small files before and after a 24 MiB file, a symlink, modes.
fn populate(root: &Path) {
    fs::create_dir_all(root.join("a/deep")).unwrap();
    fs::create_dir_all(root.join("z")).unwrap();
    fs::write(root.join("a").join(SECRET_NAME), SECRET_TEXT).unwrap();
    for i in 0..40 {
        fs::write(
            root.join(format!("a/deep/f{i}")),
            noise(i, 3000 + i as usize),
        )
        .unwrap();
        fs::write(
            root.join(format!("z/g{i}")),
            format!("after the big file {i}\n"),
        )
        .unwrap();
    }
    fs::write(root.join("m-big.bin"), noise(99, 24 << 20)).unwrap();
    fs::set_permissions(root.join("a/deep/f3"), fs::Permissions::from_mode(0o600)).unwrap();
    symlink("a/deep/f1", root.join("link")).unwrap();
}

/// Every entry below `root`: kind, mode, size, owner, content hash, link.
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                todo.push(p.clone());
                format!("dir {:o}", m.mode())
            } else {
                let sum = hex::encode(Sha256::digest(fs::read(&p).unwrap()));
                format!(
                    "file {:o} {} {}:{} {sum}",
                    m.mode(),
                    m.len(),
                    m.uid(),
                    m.gid()
                )
            };
            out.insert(p.strip_prefix(root).unwrap().to_path_buf(), what);
        }
    }
    out
}

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    src: PathBuf,
    backup: PathBuf,
    identity: PathBuf,
    ssh_key: PathBuf,
    fingerprint_age: String,
}

/// A tree, an age identity and an SSH key, and one generation encrypted to
/// both (the age recipient given directly, the SSH key in a file).
fn setup() -> Setup {
    let tmp = tempfile::Builder::new()
        .prefix("lifeboat-crypt-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let src = dir.join("src");
    populate(&src);
    let id = age::x25519::Identity::generate();
    let identity = dir.join("backup.key");
    fs::write(
        &identity,
        format!("# created: test\n{}\n", id.to_string().expose_secret()),
    )
    .unwrap();
    let ssh_key = dir.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "restore@test", "-f"])
        .arg(&ssh_key)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(st.success());
    let recipients = dir.join("recipients.txt");
    let pubkey = fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    fs::write(&recipients, format!("# the restore machine\n{pubkey}\n")).unwrap();
    let backup = dir.join("backup");
    let pub_age = id.to_public().to_string();
    let (code, out, err) = run_lifeboat([
        "backup".as_ref(),
        "create".as_ref(),
        "--to".as_ref(),
        backup.as_os_str(),
        "--source".as_ref(),
        src.as_os_str(),
        "--encrypt-to".as_ref(),
        pub_age.as_ref(),
        "--encrypt-to".as_ref(),
        recipients.as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let fingerprint_age = format!("sha256:{}", &hex::encode(Sha256::digest(&pub_age))[..16]);
    Setup {
        _tmp: tmp,
        dir,
        src,
        backup,
        identity,
        ssh_key,
        fingerprint_age,
    }
}

fn generation_dir(backup: &Path) -> PathBuf {
    let mut gens: Vec<PathBuf> = fs::read_dir(backup)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(gens.len(), 1, "{gens:?}");
    gens.pop().unwrap()
}

fn restore(s: &Setup, identity: Option<&Path>, to: &Path) -> (i32, String, String) {
    let mut args: Vec<std::ffi::OsString> = vec![
        "backup".into(),
        "restore".into(),
        "--from".into(),
        s.backup.clone().into(),
        "--to".into(),
        to.into(),
        "--quiet".into(),
    ];
    if let Some(i) = identity {
        args.extend(["--identity".into(), i.into()]);
    }
    run_lifeboat(args)
}

fn landed(to: &Path, src: &Path) -> PathBuf {
    to.join(src.strip_prefix("/").unwrap())
}

fn flip(path: &Path, at: usize) {
    let mut data = fs::read(path).unwrap();
    data[at] ^= 0x10;
    fs::write(path, data).unwrap();
}

#[test]
fn loop_encrypted_round_trip_with_age_and_ssh_identities() {
    require_root!();
    let s = setup();
    let want = describe(&s.src);
    for (name, key) in [("age", &s.identity), ("ssh", &s.ssh_key)] {
        let to = s.dir.join(format!("restored-{name}"));
        fs::create_dir(&to).unwrap();
        let (code, out, err) = restore(&s, Some(key), &to);
        assert_eq!(code, 0, "{name}: {out}\n{err}");
        assert_eq!(describe(&landed(&to, &s.src)), want, "{name} identity");
    }
    let (code, out, err) = run_lifeboat([
        "backup".as_ref(),
        "verify".as_ref(),
        "--from".as_ref(),
        s.backup.as_os_str(),
        "--identity".as_ref(),
        s.identity.as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("backup sound"), "{out}");
}

#[test]
fn loop_encrypted_folder_reveals_no_names_and_lists_metadata_only() {
    require_root!();
    let s = setup();
    let gen = generation_dir(&s.backup);
    let src = s.src.to_string_lossy().into_owned();
    let mut files = Vec::new();
    for e in fs::read_dir(&gen).unwrap() {
        let p = e.unwrap().path();
        let data = fs::read(&p).unwrap();
        for needle in [SECRET_NAME, SECRET_TEXT, "deep/f1", src.as_str()] {
            assert!(
                !data.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?} in clear",
                p.display()
            );
        }
        files.push(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    files.sort();
    assert_eq!(
        files,
        [
            "fs0.tar.zst.age",
            "generation.json",
            "generation.json.age",
            "manifest.json.zst.age"
        ]
    );
    // The clear metadata, without the identity; no mount point.
    let list = |id: Option<&Path>| {
        let mut args: Vec<std::ffi::OsString> = vec![
            "backup".into(),
            "list".into(),
            "--from".into(),
            s.backup.clone().into(),
        ];
        if let Some(i) = id {
            args.extend(["--identity".into(), i.into()]);
        }
        run_lifeboat(args)
    };
    let (code, out, err) = list(None);
    assert_eq!(code, 0, "{out}\n{err}");
    let id = gen.file_name().unwrap().to_string_lossy().into_owned();
    assert!(out.contains(&id) && out.contains("full"), "{out}");
    assert!(out.contains(&s.fingerprint_age), "{out}");
    assert!(out.contains("(names need --identity)"), "{out}");
    assert!(!out.contains(&src), "{out}");
    // With it, the mount point (the source tree) too.
    let (code, out, err) = list(Some(&s.identity));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&src) && out.contains("fs0.tar.zst.age"),
        "{out}"
    );
    // Restore without the identity: a clear refusal, nothing written.
    let to = s.dir.join("no-key");
    fs::create_dir(&to).unwrap();
    let (code, _, err) = restore(&s, None, &to);
    assert_ne!(code, 0);
    assert!(err.contains("is encrypted: give the identity"), "{err}");
    assert_eq!(fs::read_dir(&to).unwrap().count(), 0);
}

#[test]
fn loop_wrong_identity_is_one_clear_line() {
    require_root!();
    let s = setup();
    let other = s.dir.join("other.key");
    let id = age::x25519::Identity::generate();
    fs::write(&other, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let to = s.dir.join("wrong");
    fs::create_dir(&to).unwrap();
    let (code, out, err) = restore(&s, Some(&other), &to);
    assert_ne!(code, 0, "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wrong identity"), "{err}");
    assert!(err.contains(&s.fingerprint_age), "{err}");
    assert_eq!(fs::read_dir(&to).unwrap().count(), 0);
}

#[test]
fn loop_one_flipped_byte_is_tampered_and_named() {
    require_root!();
    let s = setup();
    let want = describe(&s.src);
    let gen = generation_dir(&s.backup);
    let archive = gen.join("fs0.tar.zst.age");
    // The middle of the archive is inside the 24 MiB file.
    let len = fs::metadata(&archive).unwrap().len() as usize;
    flip(&archive, len / 2);
    let to = s.dir.join("restored");
    fs::create_dir(&to).unwrap();
    let (code, out, err) = restore(&s, Some(&s.identity), &to);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("tampered: archive fs0.tar.zst.age: age chunk"),
        "{err}"
    );
    assert!(!err.contains("zstd"), "{err}");
    let big = s.src.join("m-big.bin");
    assert!(err.contains(&format!("lost: {} (", big.display())), "{err}");
    // Everything else came back, identical.
    let got = describe(&landed(&to, &s.src));
    let mut expect = want.clone();
    expect.remove(Path::new("m-big.bin"));
    let mut got_rest = got.clone();
    got_rest.remove(Path::new("m-big.bin"));
    assert_eq!(got_rest, expect);
    // verify says the same.
    let (code, out, err) = run_lifeboat([
        "backup".as_ref(),
        "verify".as_ref(),
        "--from".as_ref(),
        s.backup.as_os_str(),
        "--identity".as_ref(),
        s.identity.as_os_str(),
        "--quiet".as_ref(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("tampered: archive fs0.tar.zst.age"), "{err}");
    assert!(
        err.contains(&format!("damaged file {}", big.display())),
        "{err}"
    );
    // verify.json keeps no names.
    let v = fs::read_to_string(gen.join("verify.json")).unwrap();
    assert!(!v.contains("m-big.bin"), "{v}");

    // The manifest and the sealed generation.json: tampered, by name.
    flip(&gen.join("manifest.json.zst.age"), 200);
    let (code, _, err) = restore(&s, Some(&s.identity), &s.dir.join("m"));
    assert_ne!(code, 0);
    assert!(err.contains("tampered: manifest of generation"), "{err}");
    flip(&gen.join("generation.json.age"), 300);
    let (code, out, err) = run_lifeboat([
        "backup".as_ref(),
        "list".as_ref(),
        "--from".as_ref(),
        s.backup.as_os_str(),
        "--identity".as_ref(),
        s.identity.as_os_str(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("tampered: generation.json.age of generation"),
        "{err}"
    );
}
