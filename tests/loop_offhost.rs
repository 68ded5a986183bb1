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

use common::servers;
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
    mnt: PathBuf,
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
        Machine {
            s,
            disk,
            mnt,
            config,
        }
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
        let mut cmd = Command::new(lifeboat());
        cmd.arg("--config").arg(&self.config).args(args);
        for v in [
            "RESTIC_PASSWORD",
            "RESTIC_PASSWORD_FILE",
            "RESTIC_PASSWORD_COMMAND",
            "BORG_PASSPHRASE",
            "BORG_PASSCOMMAND",
            "LIFEBOAT_LOG",
        ] {
            cmd.env_remove(v);
        }
        let out = cmd.output().unwrap();
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
