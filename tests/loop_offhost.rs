//! Loop tier (root): the scheduled run, `status` and `check` on a restic
//! (and Borg) repository, and the rescue image copied off the host
//! (`rescue.destination`: a directory and sftp through a real sshd).
//!
//! The machine is a partitioned image file on a loop device (the snapshot
//! is restricted to it by `capture.only_disks`); state and repository live
//! in the scratch folder.
//! Run single-threaded: `cargo test --test loop_offhost -- --test-threads=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::copies::{assert_copy_of, entries};
use common::servers::{self, Sshd};
use common::*;

macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (loop devices, sshd as root)");
            return;
        }
    };
}

/// The machine: one ext4 file system on a loop device, mounted in the
/// scratch folder, with a few files.
struct Machine {
    s: Scratch,
    disk: LoopDisk,
    config: PathBuf,
}

impl Machine {
    fn new(name: &str) -> Machine {
        let s = Scratch::new(name);
        let img = s.join("disk.img");
        blank_disk(&img, 128);
        sh(&format!(
            "sgdisk -o -n 1:2048:+100M -t 1:8300 -c 1:data '{}' >/dev/null",
            img.display()
        ));
        let mut disk = LoopDisk::attach(&img);
        sh(&format!("mkfs.ext4 -q -F -L offhost '{}'", disk.part(1)));
        let mnt = s.join("mnt");
        disk.mount(&disk.part(1), &mnt, "");
        std::fs::create_dir_all(mnt.join("etc")).unwrap();
        for i in 0..10 {
            std::fs::write(mnt.join(format!("etc/conf{i}")), format!("value {i}\n")).unwrap();
        }
        sh(&format!(
            "head -c 2M /dev/urandom > '{}/big.bin'",
            mnt.display()
        ));
        std::fs::write(s.join("password"), "correct horse\n").unwrap();
        let config = s.join("lifeboat.toml");
        Machine { s, disk, config }
    }

    /// Writes the configuration: the state folder in the scratch folder,
    /// the capture limited to the loop disk, and `extra` sections
    /// (`{dir}` is the scratch folder).
    fn configure(&self, extra: &str) {
        let dir = self.s.path.display().to_string();
        let text = format!(
            "state_dir = \"{dir}/state\"\n\n[capture]\nonly_disks = [\"{}\"]\n\n{}",
            self.disk.dev,
            extra.replace("{dir}", &dir)
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn lifeboat(&self, args: &[&str]) -> (i32, String, String) {
        self.lifeboat_with_path(None, args)
    }

    /// [`Machine::lifeboat`] with `dir` first on PATH (wrappers of tools).
    fn lifeboat_with_path(&self, dir: Option<&Path>, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(lifeboat());
        cmd.arg("--config").arg(&self.config).args(args);
        if let Some(d) = dir {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", d.display()));
        }
        let out = common::without_engine_secrets(&mut cmd).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn status_json(&self) -> serde_json::Value {
        let (code, out, err) = self.lifeboat(&["status", "--json"]);
        assert_eq!(code, 0, "status --json:\n{out}\n{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// `check --nagios` with the given age thresholds: exit code and line.
    fn check(&self, warn: &str, crit: &str) -> (i32, String) {
        let (code, out, _) =
            self.lifeboat(&["check", "--nagios", "--warn-age", warn, "--crit-age", crit]);
        (code, out)
    }
}

/// The problem of `status --json`'s verdict that mentions `what`, with
/// its state.
fn problem(j: &serde_json::Value, what: &str) -> Option<(String, String)> {
    j["verdict"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["text"].as_str().unwrap().contains(what))
        .map(|p| {
            (
                p["state"].as_str().unwrap().to_string(),
                p["text"].as_str().unwrap().to_string(),
            )
        })
}

fn init_repo(m: &Machine, spec: &str) {
    let (tool, repo) = spec.split_once(':').unwrap();
    let mut cmd = Command::new(tool);
    if tool == "restic" {
        cmd.args(["-r", repo, "init"])
            .env("RESTIC_PASSWORD_FILE", m.s.join("password"));
    } else {
        cmd.args(["init", "-e", "repokey", repo]).env(
            "BORG_PASSCOMMAND",
            format!("cat {}", m.s.join("password").display()),
        );
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{tool} init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The scheduled run backs up into the repository; status, check and the
/// metrics read the newest generation from it; an old generation warns
/// and goes critical; verify outcomes (sound, damaged) reach check and the
/// metrics; a wrong password makes the backup part UNKNOWN.
fn scheduled_repository(name: &str, spec_tail: &str, creds: &str) {
    let m = Machine::new(name);
    let spec = spec_tail.replace("{dir}", &m.s.path.display().to_string());
    m.configure(&format!(
        "[backup]\ndestination = \"{spec}\"\nkeep = 2\n\n{creds}"
    ));
    init_repo(&m, &spec);

    // Before any backup: the repository is empty.
    let j = m.status_json();
    assert_eq!(j["facts"]["backup"]["state"], "empty", "{j:#}");
    assert_eq!(
        problem(&j, "no backup in").map(|p| p.0).as_deref(),
        Some("CRITICAL")
    );

    // The scheduled run (what lifeboat-snapshot.service runs).
    let (code, out, err) = m.lifeboat(&["snapshot", "--backup"]);
    assert_eq!(code, 1, "first run (snapshot stored):\n{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("backup generation "))
        .unwrap_or_else(|| panic!("no backup line:\n{out}\n{err}"));
    assert!(line.contains(&format!("written to {spec}")), "{line}");
    let id = line.split_whitespace().nth(2).unwrap().to_string();

    // status knows the generation; it is this host's and fresh.
    let j = m.status_json();
    let b = &j["facts"]["backup"];
    assert_eq!(b["state"], "found", "{j:#}");
    assert_eq!(b["generation"]["id"], id.as_str());
    assert_eq!(b["destination"], spec.as_str());
    assert!(
        j["metrics"]["lifeboat_backup_age_seconds"]
            .as_i64()
            .unwrap()
            < 600
    );
    assert_eq!(
        j["metrics"]["lifeboat_backup_verified"], 0,
        "not verified yet"
    );
    assert_eq!(problem(&j, "backup"), None, "{j:#}");
    let text = m.lifeboat(&["status"]).1;
    assert!(text.contains(&format!("generation {id} ")), "{text}");
    let (_, line) = m.check("8d", "15d");
    assert!(!line.contains("stale backup"), "{line}");
    assert!(line.contains(" backup_age="), "{line}");
    assert!(!line.contains("backup_age=U"), "{line}");

    // An old generation: warning past warn_age, critical past crit_age.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (_, line) = m.check("1s", "1h");
    assert!(
        line.contains(&format!("stale backup: generation {id} finished")),
        "{line}"
    );
    let j = m.status_json();
    assert!(j["facts"]["backup"]["state"] == "found");
    let (code, line) = m.check("1s", "2s");
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("(critical at 2s)"), "{line}");

    // A verify that passes: verified.
    let (code, out, err) = m.lifeboat(&["backup", "verify"]);
    assert_eq!(code, 0, "verify:\n{out}\n{err}");
    let j = m.status_json();
    assert_eq!(j["metrics"]["lifeboat_backup_verified"], 1, "{j:#}");
    assert_eq!(j["facts"]["backup"]["verify"]["ok"], true, "{j:#}");

    // A second run: a newer generation, not verified by the old record.
    let (code, out, err) = m.lifeboat(&["snapshot", "--backup"]);
    assert_eq!(code, 0, "second run:\n{out}\n{err}");
    let j = m.status_json();
    let id2 = j["facts"]["backup"]["generation"]["id"].as_str().unwrap();
    assert_ne!(id2, id);
    assert_eq!(j["metrics"]["lifeboat_backup_verified"], 0, "{j:#}");

    // A wrong password: the repository cannot be read, UNKNOWN with the
    // engine's message.
    std::fs::write(m.s.join("password"), "wrong\n").unwrap();
    let j = m.status_json();
    assert_eq!(j["facts"]["backup"]["state"], "unreadable", "{j:#}");
    let (state, text) = problem(&j, "unreadable").unwrap();
    assert_eq!(state, "UNKNOWN", "{text}");
    std::fs::write(m.s.join("password"), "correct horse\n").unwrap();

    // Damage: the repository's data is broken, verify fails, check is
    // CRITICAL and the metric says unverified.
    damage(&spec);
    let (code, out, err) = m.lifeboat(&["backup", "verify"]);
    assert_ne!(
        code, 0,
        "verify of a damaged repository passed:\n{out}\n{err}"
    );
    let j = m.status_json();
    let (state, text) = problem(&j, "backup verify failed")
        .unwrap_or_else(|| panic!("no verify failure in check: {:#}", j["verdict"]));
    assert_eq!(state, "CRITICAL", "{text}");
    assert_eq!(j["metrics"]["lifeboat_backup_verified"], 0, "{j:#}");
}

/// Breaks the repository's data: its largest data file (the file
/// system's contents; the repository's index and the newest metadata
/// stay readable) truncated to half.
fn damage(spec: &str) {
    let (tool, repo) = spec.split_once(':').unwrap();
    let mut files = Vec::new();
    let mut stack = vec![Path::new(repo).join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                files.push((e.metadata().unwrap().len(), e.path()));
            }
        }
    }
    let (len, f) = files
        .into_iter()
        .max()
        .expect("a repository with data files");
    assert!(len > 100_000, "{tool}: largest data file has {len} bytes");
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
}

#[test]
fn scheduled_run_status_and_check_on_a_restic_repository() {
    require_root!();
    if !servers::have("restic") {
        return;
    }
    scheduled_repository(
        "offhost-restic",
        "restic:{dir}/repo",
        "[restic]\npassword_file = \"{dir}/password\"\n",
    );
}

#[test]
fn scheduled_run_status_and_check_on_a_borg_repository() {
    require_root!();
    if !servers::have("borg") {
        return;
    }
    scheduled_repository(
        "offhost-borg",
        "borg:{dir}/repo",
        "[borg]\npasscommand = \"cat {dir}/password\"\n",
    );
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

const COPY_CONFIG: &str = "[rescue]\niso = false\ndestination = \"{dest}\"\nkeep_copies = 2\n\
     {ssh}\n[notify]\ncommand = \"cat >> {dir}/notices.json\"\n";

/// rescue.destination as a directory: the scheduled rebuild and mkrescue
/// copy each image (with its layout) under HOST-STAMP; the two newest
/// copies of the host are kept and nothing else there is touched; a copy
/// that fails (an nfs:// share on a host without mount.nfs, a directory
/// that cannot be created) keeps the local image, warns, sends a notice,
/// and makes check WARN (failed, then older than the image); the next
/// scheduled run copies the current image again.
#[test]
fn rescue_image_copies_in_a_directory() {
    require_root!();
    let m = Machine::new("offhost-copy-dir");
    let dir = m.s.path.display().to_string();
    let dest = m.s.join("copies");
    let configure = |d: &str| {
        m.configure(
            &COPY_CONFIG
                .replace("{dest}", d)
                .replace("{ssh}", "")
                .replace("{dir}", &dir),
        )
    };
    configure(&dest.display().to_string());
    // Someone else's copies and files in the destination stay as they are.
    std::fs::create_dir_all(dest.join("otherhost-20200101T000000Z")).unwrap();
    std::fs::write(dest.join("otherhost-20200101T000000Z/initrd"), "theirs").unwrap();
    std::fs::write(dest.join("README"), "shared folder\n").unwrap();
    let output = m.s.join("state/rescue");

    // The scheduled rebuild copies the image it built.
    let (code, out, err) = m.lifeboat(&["snapshot", "--rebuild-rescue"]);
    assert_eq!(code, 1, "first run:\n{out}\n{err}");
    let copied = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("rescue image copied to {}: ", dest.display())))
        .unwrap_or_else(|| panic!("no copy line:\n{out}\n{err}"))
        .to_string();
    assert!(copied.starts_with(&format!("{}-", host())), "{copied}");
    assert_copy_of(&dest.join(&copied), &output);
    assert!(dest.join(&copied).join("layout.json").exists());
    let j = m.status_json();
    assert_eq!(j["facts"]["rescue_copy"]["state"], "copied", "{j:#}");
    assert_eq!(j["facts"]["rescue_copy"]["current"], true);
    assert_eq!(j["metrics"]["lifeboat_rescue_copy_current"], 1);
    assert!(
        j["metrics"]["lifeboat_rescue_copy_age_seconds"]
            .as_i64()
            .unwrap()
            < 600
    );
    assert_eq!(problem(&j, "copy"), None, "{j:#}");
    let text = m.lifeboat(&["status"]).1;
    assert!(
        text.contains(&format!("copy      {copied} in {}", dest.display())),
        "{text}"
    );

    // Two more builds by hand: three copies made, the two newest kept.
    let mut names = vec![copied];
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let (code, out, err) = m.lifeboat(&["mkrescue"]);
        assert_eq!(code, 0, "mkrescue:\n{out}\n{err}");
        let name = out
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("copied to {}: ", dest.display()))
            })
            .unwrap_or_else(|| panic!("no copy line:\n{out}\n{err}"))
            .to_string();
        assert_copy_of(&dest.join(&name), &output);
        names.push(name);
    }
    let mut want = vec![
        "README".to_string(),
        names[1].clone(),
        names[2].clone(),
        "otherhost-20200101T000000Z".into(),
    ];
    want.sort();
    assert_eq!(entries(&dest), want, "keep_copies = 2");
    assert_eq!(
        std::fs::read_to_string(dest.join("otherhost-20200101T000000Z/initrd")).unwrap(),
        "theirs"
    );
    let before = entries(&dest);

    // An NFS share on a host without mount.nfs: the build succeeds, the
    // copy fails with a clear warning, a notice goes out, check warns.
    configure("nfs://127.0.0.1/export/rescue");
    let (code, out, err) = m.lifeboat(&["mkrescue"]);
    assert_eq!(code, 0, "a failed copy fails the build:\n{out}\n{err}");
    assert!(
        err.contains(
            "copying the rescue image to nfs://127.0.0.1/export/rescue failed (the image in"
        ),
        "{err}"
    );
    assert!(err.contains("mount.nfs (package nfs-common)"), "{err}");
    let rec = lifeboat::rescue::BuildRecord::load(&output).unwrap();
    for f in &rec.files {
        assert_eq!(
            lifeboat::rescue::sha256_file(&output.join(&f.name)).unwrap(),
            f.sha256,
            "the local image is whole"
        );
    }
    let notices = std::fs::read_to_string(m.s.join("notices.json")).unwrap();
    assert!(
        notices.contains("\"event\": \"rescue-copy-failed\""),
        "{notices}"
    );
    let j = m.status_json();
    assert_eq!(j["facts"]["rescue_copy"]["state"], "missing", "{j:#}");
    let (state, text) = problem(&j, "copying the rescue image").unwrap();
    assert_eq!(state, "WARNING");
    assert!(text.contains("mount.nfs"), "{text}");
    assert_eq!(j["metrics"]["lifeboat_rescue_copy_current"], 0);

    // Back to the directory: its newest copy is of an older image.
    configure(&dest.display().to_string());
    let j = m.status_json();
    let (state, text) = problem(&j, "is older than the image").unwrap();
    assert_eq!(state, "WARNING", "{text}");
    assert_eq!(j["facts"]["rescue_copy"]["current"], false);
    assert_eq!(
        entries(&dest),
        before,
        "the failed copy touched the directory"
    );

    // A destination that cannot be created: warned, nothing written.
    configure(&format!("{dir}/notes.txt/copies"));
    std::fs::write(m.s.join("notes.txt"), "a file\n").unwrap();
    // (The run rebuilds: the image mkrescue built has no layout.)
    let (code, out, err) = m.lifeboat(&["snapshot", "--rebuild-rescue"]);
    assert_eq!(code, 0, "a failed copy fails the run:\n{out}\n{err}");
    assert!(out.contains("rescue image rebuilt"), "{out}");
    assert!(!out.contains("copied to"), "{out}");
    let j = m.status_json();
    assert!(problem(&j, "copying the rescue image").is_some(), "{j:#}");

    // The next scheduled run (image current) copies it again.
    configure(&dest.display().to_string());
    let (code, out, err) = m.lifeboat(&["snapshot", "--rebuild-rescue"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("is current"), "{out}");
    let name = out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("rescue image copied to {}: ", dest.display())))
        .unwrap_or_else(|| panic!("no copy line:\n{out}\n{err}"))
        .to_string();
    assert!(name.contains(&format!("removed {}", names[1])), "{name}");
    let j = m.status_json();
    assert_eq!(j["facts"]["rescue_copy"]["current"], true, "{j:#}");
    assert_eq!(problem(&j, "copy"), None, "{j:#}");
    assert!(
        !entries(&dest).iter().any(|e| e.starts_with('.')),
        "a temporary folder stayed: {:?}",
        entries(&dest)
    );
}

/// A wrapper of sftp that runs the real one and then, after a session
/// that uploaded the initrd, flips one of its bytes where it landed (the
/// server is this machine) and notes that in `damaged` beside itself.
const DAMAGING_SFTP: &str = r#"#!/bin/bash
batch=$(cat)
printf '%s\n' "$batch" | /usr/bin/sftp "$@"
rc=$?
target=$(printf '%s\n' "$batch" | sed -n 's|^put "initrd" "\(.*/initrd\)"$|\1|p')
if [ -n "$target" ] && [ -f "$target" ]; then
    b=$(od -An -tu1 -j4096 -N1 "$target" | tr -d ' ')
    printf "\\$(printf '%03o' $((b ^ 255)))" | dd of="$target" bs=1 seek=4096 conv=notrunc status=none
    echo "$target" >> "$(dirname "$0")/damaged"
fi
exit $rc
"#;

/// rescue.destination over SFTP (a real sshd on a loopback port): each
/// build copied under HOST-STAMP byte for byte, `keep_copies` honoured, a
/// copy damaged on the server refused by its SHA-256 read back, and a
/// server that is gone makes a warning and a failed-copy check.
#[test]
fn rescue_image_copies_over_sftp() {
    require_root!();
    if !servers::have("/usr/sbin/sshd") || !servers::have("sftp") {
        return;
    }
    let m = Machine::new("offhost-copy-sftp");
    let dir = m.s.path.display().to_string();
    let sshd = Sshd::start(&m.s.join("sshd"));
    let d = sshd.dir.display();
    let ssh = format!(
        "ssh_options = [\"IdentityFile={d}/client_key\", \"IdentitiesOnly=yes\", \
         \"UserKnownHostsFile={d}/known_hosts\", \"StrictHostKeyChecking=yes\"]\n"
    );
    let remote = m.s.join("remote/rescue");
    let spec = format!(
        "sftp://root@127.0.0.1:{}{}",
        sshd.server.port,
        remote.display()
    );
    m.configure(
        &COPY_CONFIG
            .replace("{dest}", &spec)
            .replace("{ssh}", &ssh)
            .replace("{dir}", &dir)
            .replace("keep_copies = 2", "keep_copies = 1"),
    );
    let output = m.s.join("state/rescue");
    let mut names = Vec::new();
    for _ in 0..2 {
        let (code, out, err) = m.lifeboat(&["mkrescue"]);
        assert_eq!(code, 0, "mkrescue:\n{out}\n{err}");
        let name = out
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("copied to {spec}: ")))
            .unwrap_or_else(|| panic!("no copy line:\n{out}\n{err}"))
            .to_string();
        assert_copy_of(&remote.join(&name), &output);
        names.push(name);
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    assert_eq!(entries(&remote), vec![names[1].clone()], "keep_copies = 1");
    let j = m.status_json();
    assert_eq!(j["facts"]["rescue_copy"]["current"], true, "{j:#}");

    // A copy damaged on the server after the upload (same size: a byte of
    // the initrd flipped by a wrapper of sftp once the upload session
    // ends) is caught by the read-back and never renamed into place.
    let wrap = m.s.join("wrap");
    std::fs::create_dir_all(&wrap).unwrap();
    std::fs::write(wrap.join("sftp"), DAMAGING_SFTP).unwrap();
    sh(&format!("chmod 0755 '{}/sftp'", wrap.display()));
    let (code, out, err) = m.lifeboat_with_path(Some(&wrap), &["mkrescue"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        std::fs::read_to_string(m.s.join("wrap/damaged")).is_ok(),
        "the wrapper damaged nothing:\n{err}"
    );
    assert!(
        err.contains(&format!("copying the rescue image to {spec} failed"))
            && err.contains("initrd read back differs from the image"),
        "{err}"
    );
    assert_eq!(entries(&remote), vec![names[1].clone()], "{err}");
    let j = m.status_json();
    assert_eq!(j["facts"]["rescue_copy"]["current"], false, "{j:#}");

    // The server is gone: the build stands, the copy is a warning.
    drop(sshd);
    let (code, out, err) = m.lifeboat(&["mkrescue"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains(&format!("copying the rescue image to {spec} failed")),
        "{err}"
    );
    let j = m.status_json();
    let (state, _) = problem(&j, "copying the rescue image").unwrap();
    assert_eq!(state, "WARNING");
    assert_eq!(j["metrics"]["lifeboat_rescue_copy_current"], 0);
    assert_eq!(entries(&remote), vec![names[1].clone()]);
}
