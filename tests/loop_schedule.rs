//! Loop tier (root): `lifeboat schedule install --root DIR` into a scratch
//! root, then the generated service's ExecStart, run as systemd would run
//! it, against a partitioned image file on a loop device (the snapshot is
//! restricted to it by `capture.only_disks`, state and rescue image live in
//! the scratch folder): the first run builds the image, an unchanged
//! layout does not rebuild it, a changed one does, a failed rebuild keeps
//! the previous image and is retried by the next run, runs never overlap,
//! and with `--backup` the backup comes first and the image after it.
//! Run single-threaded: `cargo test --test loop_schedule -- --test-threads=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use lifeboat::rescue::BuildRecord;
use lifeboat::schedule::run::{LastRun, RunLock};

/// A loop device with its partitions (partx) and mounts, undone on drop.
struct LoopDisk {
    dev: String,
    mounts: Vec<PathBuf>,
}

impl LoopDisk {
    fn attach(image: &Path) -> LoopDisk {
        let dev = sh(&format!("losetup -f --show '{}'", image.display()))
            .trim()
            .to_string();
        let d = LoopDisk {
            dev,
            mounts: Vec::new(),
        };
        // The host kernel does not parse partition tables of loop devices.
        sh(&format!("partx -a '{}'", d.dev));
        d
    }

    fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }

    fn mount(&mut self, dev: &str, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        sh(&format!("mount '{dev}' '{}'", dir.display()));
        self.mounts.push(dir.to_path_buf());
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = Command::new("umount").arg(m).status();
        }
        let _ = Command::new("partx").args(["-d", &self.dev]).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// The words of a systemd ExecStart= value (double quotes with backslash
/// escapes; `%%` and `$$` stand for `%` and `$`).
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the service has an ExecStart line");
    let mut words = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut in_word) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => cur.extend(chars.next()),
            ' ' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
        .into_iter()
        .map(|w| w.replace("%%", "%").replace("$$", "$"))
        .collect()
}

struct Outcome {
    code: i32,
    out: String,
}

/// Runs a command line the way the service does (no terminal, own env).
fn run_job(cmd: &[String], env: &[(&str, &str)]) -> Outcome {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]).env_remove("LIFEBOAT_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("running the ExecStart command");
    Outcome {
        code: o.status.code().unwrap_or(-1),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

fn sha(path: &Path) -> String {
    lifeboat::rescue::sha256_file(path).unwrap()
}

#[test]
fn loop_scheduled_snapshot_rebuilds_the_image_only_when_needed() {
    let s = Scratch::new("loop-schedule");
    let img = s.join("disk.img");
    blank_disk(&img, 256);
    sh(&format!(
        "sgdisk -o -n 1:2048:+180M -t 1:8300 -c 1:data '{}' >/dev/null",
        img.display()
    ));
    let mut d = LoopDisk::attach(&img);
    sh(&format!("mkfs.ext4 -q -F -L sched-data '{}'", d.part(1)));
    let mnt = s.join("mnt");
    d.mount(&d.part(1), &mnt);
    std::fs::write(mnt.join("hello.txt"), "hello\n").unwrap();

    // The state folder (and the rescue image in it) on the backed-up file
    // system, as /var/lib/lifeboat is.
    let state = mnt.join("var/lib/lifeboat");
    let backup = s.join("backup");
    let config = s.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n\n[capture]\nonly_disks = [\"{}\"]\n\n[backup]\n\
             destination = \"{}\"\nincremental = true\n\n[rescue]\niso = false\n\n[snapshot]\nkeep = 10\n",
            state.display(),
            d.dev,
            backup.display()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let root = s.join("root");
    let root_s = root.to_str().unwrap();
    let output = state.join("rescue");
    let initrd = output.join("initrd");

    // Install into the scratch root.
    let (code, out, err) = run_lifeboat([
        "--config",
        cfg,
        "schedule",
        "install",
        "--root",
        root_s,
        "--init",
        "systemd",
        "--rebuild-rescue",
        "--on-calendar",
        "*-*-* 03:30:00",
    ]);
    assert_eq!(code, 0, "schedule install:\n{out}\n{err}");
    assert!(out.contains("enabled; starts at the next boot"), "{out}");
    let unit_dir = root.join("etc/systemd/system");
    let service = std::fs::read_to_string(unit_dir.join("lifeboat-snapshot.service")).unwrap();
    let timer = std::fs::read_to_string(unit_dir.join("lifeboat-snapshot.timer")).unwrap();
    assert!(timer.contains("\nOnCalendar=*-*-* 03:30:00\n"), "{timer}");
    assert!(
        std::fs::read_link(unit_dir.join("timers.target.wants/lifeboat-snapshot.timer")).is_ok()
    );
    let job = exec_start(&service);
    assert_eq!(
        job[1..],
        ["--config", cfg, "snapshot", "--rebuild-rescue"].map(String::from),
        "{service}"
    );
    assert_eq!(Path::new(&job[0]), lifeboat().canonicalize().unwrap());
    let (code, out, _) = run_lifeboat(["--config", cfg, "schedule", "status", "--root", root_s]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("installed: systemd timer"), "{out}");
    assert!(out.contains("last run:  none recorded"), "{out}");

    // 1. First run: the first snapshot, and the image built from it.
    let r = run_job(&job, &[]);
    assert_eq!(r.code, 1, "first run:\n{}", r.out);
    assert!(r.out.contains("first snapshot "), "{}", r.out);
    assert!(
        r.out
            .contains("rebuilding the rescue image: there is no rescue image"),
        "{}",
        r.out
    );
    let first = BuildRecord::load(&output).unwrap();
    let snaps = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    };
    let s1 = snaps(&state);
    assert_eq!(s1.len(), 1);
    assert_eq!(first.layout.as_deref(), Some(s1[0].to_str().unwrap()));
    assert_eq!(first.layout_sha256.as_deref(), Some(sha(&s1[0]).as_str()));
    assert!(
        !output.join("lifeboat-rescue.iso").exists(),
        "rescue.iso = false"
    );
    let initrd1 = sha(&initrd);

    // 2. Unchanged layout: no new snapshot, no rebuild.
    let r = run_job(&job, &[]);
    assert_eq!(r.code, 0, "unchanged run:\n{}", r.out);
    assert!(
        r.out.contains("layout unchanged since snapshot"),
        "{}",
        r.out
    );
    assert!(r.out.contains("is current"), "{}", r.out);
    assert!(!r.out.contains("rebuilding"), "{}", r.out);
    assert_eq!(BuildRecord::load(&output).unwrap().built_at, first.built_at);
    assert_eq!(sha(&initrd), initrd1);
    assert_eq!(snaps(&state).len(), 1);

    // Runs never overlap: with the lock held, a run is refused.
    let lock = RunLock::acquire(&state).unwrap();
    let r = run_job(&job, &[]);
    assert_eq!(r.code, 2, "{}", r.out);
    assert!(
        r.out
            .contains("another lifeboat snapshot run is in progress"),
        "{}",
        r.out
    );
    drop(lock);

    // 3. A new partition with a file system: snapshot and rebuild. The
    // rebuild fails (no such kernel): the previous image stays whole.
    sh(&format!(
        "sgdisk -n 2:0:+32M -t 2:8300 -c 2:more '{dev}' >/dev/null && partx -u '{dev}' \
         && mkfs.ext4 -q -F '{dev}p2'",
        dev = d.dev
    ));
    let r = run_job(&job, &[("LIFEBOAT_RESCUE_KERNEL", "/nonexistent/vmlinuz")]);
    assert_eq!(r.code, 2, "failing rebuild:\n{}", r.out);
    assert!(r.out.contains("layout changed since snapshot"), "{}", r.out);
    assert!(r.out.contains("added partition"), "{}", r.out);
    assert!(
        r.out
            .contains("rebuilding the rescue image failed; the previous image in"),
        "{}",
        r.out
    );
    assert_eq!(
        snaps(&state).len(),
        2,
        "the snapshot is stored all the same"
    );
    assert_eq!(BuildRecord::load(&output).unwrap().built_at, first.built_at);
    assert_eq!(sha(&initrd), initrd1, "the previous image is kept");
    let last = LastRun::load(&state).unwrap();
    assert!(!last.ok && last.exit_code == 2, "{last:?}");
    // Monitoring sees both: the drift and the failed run.
    let (code, out, _) = run_lifeboat(["--config", cfg, "check", "--nagios"]);
    assert_eq!(code, 2, "no backup yet is critical:\n{out}");
    assert!(
        out.contains("layout drifted since the rescue image was built"),
        "{out}"
    );
    assert!(out.contains("last scheduled run failed"), "{out}");
    assert!(out.contains("drift=1"), "{out}");

    // 4. With --backup: the next run takes the backup first, then rebuilds
    // (the layout drifted, and the image is older than the backup), though
    // the layout did not change again since the last snapshot.
    let (code, out, err) = run_lifeboat([
        "--config",
        cfg,
        "schedule",
        "install",
        "--root",
        root_s,
        "--init",
        "systemd",
        "--rebuild-rescue",
        "--backup",
    ]);
    assert_eq!(code, 0, "schedule install:\n{out}\n{err}");
    let service = std::fs::read_to_string(unit_dir.join("lifeboat-snapshot.service")).unwrap();
    let job = exec_start(&service);
    assert_eq!(
        job[1..],
        ["--config", cfg, "snapshot", "--backup", "--rebuild-rescue"].map(String::from)
    );
    let r = run_job(&job, &[]);
    assert_eq!(r.code, 0, "retry run:\n{}", r.out);
    assert!(
        r.out.contains("layout unchanged since snapshot"),
        "{}",
        r.out
    );
    let backup_at = r
        .out
        .find("backup generation ")
        .expect("a backup was taken");
    let rebuild_at = r
        .out
        .find("rebuilding the rescue image: ")
        .expect("rebuilt");
    assert!(backup_at < rebuild_at, "{}", r.out);
    assert!(
        r.out
            .contains("the layout changed since the image was built"),
        "{}",
        r.out
    );
    assert!(!r.out.contains("older than the newest backup"), "{}", r.out);
    let s2 = snaps(&state);
    let rebuilt = BuildRecord::load(&output).unwrap();
    assert_eq!(rebuilt.layout.as_deref(), Some(s2[1].to_str().unwrap()));
    assert_ne!(sha(&initrd), initrd1);
    // The image and the backup belong together: same layout, image newer.
    let generation = std::fs::read_dir(&backup)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("generation.json").exists())
        .unwrap();
    assert_eq!(sha(&generation.join("layout.json")), sha(&s2[1]));
    let g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(generation.join("generation.json")).unwrap())
            .unwrap();
    assert!(rebuilt.built_at.as_str() >= g["finished_at"].as_str().unwrap());
    assert_eq!(rebuilt.backup.as_deref(), g["id"].as_str());
    assert_eq!(
        rebuilt.fingerprint,
        rebuilt.inputs.as_ref().map(|i| i.fingerprint())
    );

    // 5. Nothing changed: the incremental stores only metadata (the image
    // rebuilt after the last backup is left out), the image is current (a
    // newer backup is no reason to rebuild) and records that backup.
    let r = run_job(&job, &[]);
    assert_eq!(r.code, 0, "unchanged run with backup:\n{}", r.out);
    assert!(r.out.contains("is current"), "{}", r.out);
    assert!(!r.out.contains("rebuilding"), "{}", r.out);
    let newest = std::fs::read_dir(&backup)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("generation.json").exists())
        .max()
        .unwrap();
    let g2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(newest.join("generation.json")).unwrap()).unwrap();
    assert_eq!(g2["kind"], "incremental", "{g2}");
    let stored = g2["archive_bytes"].as_u64().unwrap();
    assert!(
        stored < 64 << 10,
        "an unchanged system stored {stored} bytes: {g2}"
    );
    let current = BuildRecord::load(&output).unwrap();
    assert_eq!(current.built_at, rebuilt.built_at);
    assert_eq!(current.backup.as_deref(), g2["id"].as_str());

    // Now all is current.
    let (code, out, _) = run_lifeboat(["--config", cfg, "check", "--nagios"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("LIFEBOAT OK - rescue image "), "{out}");
    assert!(out.contains(" drift=0\n"), "{out}");
    let (code, out, _) = run_lifeboat(["--config", cfg, "status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("drift     none: the image's layout matches snapshot"),
        "{out}"
    );
    assert!(out.contains("last run  "), "{out}");
    let (code, out, _) = run_lifeboat(["--config", cfg, "snapshot", "diff", "previous", "latest"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("added partition"), "{out}");

    let (code, out, _) = run_lifeboat(["--config", cfg, "schedule", "remove", "--root", root_s]);
    assert_eq!(code, 0, "{out}");
    assert!(!unit_dir.join("lifeboat-snapshot.service").exists());
    let (code, _, _) = run_lifeboat(["--config", cfg, "schedule", "status", "--root", root_s]);
    assert_eq!(code, 1);
}
