//! QEMU tier: `lifeboat drill` of the project's real Debian 12 test system
//! (qemu/build-debian.sh, cached). Inside the running system: a LUKS2 data
//! volume (an LV, unlocked at boot by a key file on the root file system),
//! `layout save`, a full backup, `mkrescue` (an ordinary image: no
//! unattended arguments built in), a second image built while the kernel's
//! virtio_blk module was missing, and a second full generation without the
//! kernels. On the host, with the state folder's configuration as an admin
//! would have it, two drills at a time (one per core):
//! - the first generation onto a smaller disk with the LUKS key file and
//!   `--firmware both` passes: recovered under SeaBIOS and under OVMF, each
//!   result booted under both to the boot target, the data volume unlocked;
//! - drills that must fail do, each naming its step and what was seen,
//!   without waiting for `--timeout`: the generation without kernels (the
//!   recovered boot stops in GRUB), the image without the disk's driver (no
//!   target disk found), a wrong LUKS key (the recovered boot asks for the
//!   passphrase or stops in emergency mode);
//! - `check --nagios` follows each.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The generation folders of a backup, oldest first.
fn generations(backup: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(backup)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("20") && !n.contains('.'))
        .collect();
    ids.sort();
    ids
}

/// Runs `lifeboat drill` with `args`; returns the exit code, output and the
/// report it wrote (the newest in STATE/drills).
fn drill(base: &[String], args: &[&str], state: &Path) -> (i32, String, serde_json::Value) {
    let mut all: Vec<String> = base.to_vec();
    all.push("drill".into());
    all.extend(args.iter().map(|a| a.to_string()));
    let t = Instant::now();
    let (code, out, err) = run_lifeboat(&all);
    eprintln!(
        "{err}lifeboat drill {args:?}: exit {code} in {:.0} s\n{out}",
        t.elapsed().as_secs_f64()
    );
    let mut reports: Vec<PathBuf> = std::fs::read_dir(state.join("drills"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    reports.sort();
    let report = reports
        .last()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .unwrap_or(serde_json::Value::Null);
    (code, out, report)
}

fn nagios(base: &[String]) -> (i32, String) {
    let mut all: Vec<String> = base.to_vec();
    all.extend(["check".into(), "--nagios".into()]);
    let (code, out, _) = run_lifeboat(&all);
    (code, out.trim().to_string())
}

fn phases(report: &serde_json::Value) {
    for p in report["phases"].as_array().into_iter().flatten() {
        eprintln!(
            "  {:>7.1}  {}",
            p["seconds"].as_f64().unwrap_or(0.0),
            p["name"].as_str().unwrap_or("")
        );
    }
}

/// The source system's LUKS2 data volume: an LV, formatted with a key file
/// kept on the root file system, unlocked at boot through crypttab (PBKDF2
/// with few iterations: TCG is slow). The key is copied out for the drill.
const LUKS_SETUP: &str = "mkdir -p /etc/keys /srv/data\n\
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /etc/keys/data.key\n\
    chmod 600 /etc/keys/data.key\n\
    lvcreate -y -n data -L 32M vg0\n\
    cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \\\n\
        --pbkdf-force-iterations 1000 --key-file /etc/keys/data.key /dev/vg0/data\n\
    cryptsetup open --key-file /etc/keys/data.key /dev/vg0/data data\n\
    mkfs.ext4 -q -L data /dev/mapper/data\n\
    echo \"data UUID=$(cryptsetup luksUUID /dev/vg0/data) /etc/keys/data.key luks\" >> /etc/crypttab\n\
    echo '/dev/mapper/data /srv/data ext4 defaults 0 2' >> /etc/fstab\n\
    mount /srv/data\n\
    echo lifeboat-drill > /srv/data/proof\n\
    cp /etc/keys/data.key \"$here/data.key\"\n";

/// After the first image: a second one built while the kernel's virtio_blk
/// module is missing (as on a host whose kernel lacks the driver), then the
/// generation without kernels.
const AFTER_RESCUE: &str = "ko=$(modinfo -n virtio_blk)\n\
    mv \"$ko\" /root/virtio_blk.off\n\
    depmod\n\
    lifeboat mkrescue --layout /var/lib/lifeboat/layout.json --output \"$here/rescue-novirtio\"\n\
    mv /root/virtio_blk.off \"$ko\"\n\
    depmod\n\
    sleep 1\n\
    lifeboat backup create --to \"$here/backup\" --exclude '/boot/vmlinuz-*' \\\n\
        --exclude '/boot/initrd.img-*'";

/// The state folder of one line of drills, as an admin has it: the layout
/// the image was built with is the newest snapshot (so the drill finds the
/// image's layout by its SHA-256 without --layout).
fn state_dir(dir: &Path, out: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("snapshots")).unwrap();
    std::fs::copy(
        out.join("layout.json"),
        dir.join("snapshots/20261201T000000Z.json"),
    )
    .unwrap();
    dir.to_path_buf()
}

fn base_args(config: &Path, state: &Path, work: &Path) -> (Vec<String>, String) {
    (
        vec![
            "--config".into(),
            config.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
        ],
        work.display().to_string(),
    )
}

/// The recovered system reached its target under each firmware, with the
/// LUKS data volume unlocked by its key file (no failed cryptsetup or
/// mount unit).
fn assert_booted(run: &serde_json::Value) {
    let boots: Vec<(String, String)> = run["boots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["passed"], true, "{b:#}");
            assert_eq!(b["report"]["active"], "active", "{b:#}");
            assert!(
                b["report"]["kernel"].as_str().unwrap().ends_with("-amd64"),
                "{b:#}"
            );
            let failed = b["report"]["failed_units"].to_string();
            assert!(
                !failed.contains("cryptsetup") && !failed.contains("srv-data"),
                "the data volume was not unlocked and mounted: {b:#}"
            );
            (
                b["firmware"].as_str().unwrap().to_string(),
                b["report"]["firmware"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        boots,
        [
            ("bios".to_string(), "bios".to_string()),
            ("uefi".to_string(), "uefi".to_string())
        ],
        "the recovered system did not report booting under each firmware: {run:#}"
    );
}

/// The good generation onto a smaller disk (5 GiB for the 6 GiB one) with
/// the key file and both firmwares: passes.
fn passing_drill(base: &[String], work: &str, state: &Path, gen: &str, key: &Path) {
    let (code, line) = nagios(base);
    assert_eq!(code, 0, "{line}");
    assert!(!line.contains("drill"), "{line}");
    let key = key.display().to_string();
    let (code, text, report) = drill(
        base,
        &[
            "--generation",
            gen,
            "--disk-size",
            "vda=5G",
            "--firmware",
            "both",
            "--key-file",
            &key,
            "--work",
            work,
            "--timeout",
            "20m",
        ],
        state,
    );
    phases(&report);
    assert_eq!(code, 0, "the drill failed:\n{text}\n{report:#}");
    assert_eq!(report["verdict"], "passed");
    assert_eq!(report["inputs"]["generation"], gen);
    assert_eq!(report["inputs"]["accel"], "tcg");
    assert_eq!(report["disks"][0]["size_bytes"], 5u64 << 30);
    assert_eq!(report["disks"][0]["serial"], "lifeboat-sys");
    let runs = report["runs"].as_array().unwrap();
    let firmwares: Vec<&str> = runs
        .iter()
        .map(|r| r["firmware"].as_str().unwrap())
        .collect();
    assert_eq!(firmwares, ["bios", "uefi"], "--firmware both: {report:#}");
    for run in runs {
        assert_eq!(run["recovery_report"]["ok"], true, "{run:#}");
        assert_booted(run);
    }
    assert!(text.contains("lifeboat drill: PASSED in "), "{text}");
    // The scratch disks are gone; nothing of the drill stays in the work
    // folder but its lock.
    let left: Vec<_> = std::fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from(".lock")], "{left:?}");
    let (code, line) = nagios(base);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("drill passed "), "{line}");
    assert!(line.contains(" drill_age="), "{line}");
}

/// A drill that must fail: exit 1 naming `step`; monitoring goes critical.
/// Returns the problem line.
fn failing_drill(base: &[String], args: &[&str], state: &Path, step: &str) -> (String, String) {
    let t = Instant::now();
    let (code, text, report) = drill(base, args, state);
    phases(&report);
    assert_eq!(code, 1, "{text}\n{report:#}");
    assert_eq!(report["verdict"], "failed");
    assert_eq!(report["failed_step"], step, "{report:#}");
    let problem = report["problem"].as_str().unwrap().to_string();
    assert!(
        text.contains(&format!("lifeboat drill: FAILED: {problem}")),
        "{text}"
    );
    // Ended by what the console or the job disk showed, not by --timeout.
    assert!(
        !problem.contains("timed out") && !problem.contains("within the timeout"),
        "{problem}"
    );
    eprintln!(
        "failed as it must in {:.0} s: {problem}",
        t.elapsed().as_secs_f64()
    );
    let (code, line) = nagios(base);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with("LIFEBOAT CRITICAL - the last recovery drill (")
            && line.contains(&format!("failed: {} failed", step.replace('-', " "))),
        "{line}"
    );
    (problem, text)
}

/// The drills that must fail, one after the other.
fn failing_drills(base: &[String], work: &str, state: &Path, out: &Path, gen: &str, key: &Path) {
    let key = key.display().to_string();
    // The generation without kernels: the recovery works, the recovered
    // disks stop in GRUB, seen on the console. --keep prints the command line.
    let (problem, text) = failing_drill(
        base,
        &[
            "--key-file",
            &key,
            "--work",
            work,
            "--timeout",
            "30m",
            "--keep",
        ],
        state,
        "recovered-boot",
    );
    assert!(
        problem.starts_with("recovered boot failed (rescue under uefi): under bios: GRUB"),
        "{problem}"
    );
    assert!(
        text.contains("scratch disks kept; boot them with:\nqemu-system-x86_64 "),
        "{text}"
    );
    for e in std::fs::read_dir(work).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        }
    }

    // The image built without virtio_blk: the rescue boots and runs its job
    // (the job disk sits on the AHCI controller) but finds no target disk.
    let rescue = out.join("rescue-novirtio").display().to_string();
    let (problem, _) = failing_drill(
        base,
        &[
            "--rescue",
            &rescue,
            "--generation",
            gen,
            "--key-file",
            &key,
            "--work",
            work,
            "--timeout",
            "30m",
        ],
        state,
        "mapping",
    );
    assert!(
        problem.contains("mapping failed (rescue under uefi): no target disk found"),
        "{problem}"
    );

    // A wrong LUKS key: the container is made with it, the recovered
    // system's own key file does not open it, its boot stops.
    let wrong = Path::new(work).join("../wrong.key");
    std::fs::write(&wrong, "not-the-passphrase").unwrap();
    let wrong = wrong.display().to_string();
    let (problem, _) = failing_drill(
        base,
        &[
            "--generation",
            gen,
            "--key-file",
            &wrong,
            "--work",
            work,
            "--timeout",
            "30m",
        ],
        state,
        "recovered-boot",
    );
    assert!(
        problem.contains("waiting for a LUKS passphrase") || problem.contains("emergency mode"),
        "{problem}"
    );
}

#[test]
fn drills_of_the_debian_system_pass_and_fail_where_they_must() {
    if !is_root() {
        eprintln!("skipped: this test builds and boots a Debian disk; run it as root");
        return;
    }
    let s = Scratch::new("qemu-drill");
    let built = build_debian(&s.join("image"));

    // 1. The source system: the LUKS volume, layout, a good full backup,
    // the rescue image, one without virtio_blk, the generation without
    // kernels.
    let t = Instant::now();
    let job = job_dir(
        &s.join("job1"),
        &format!("{LUKS_SETUP}{}", source_job_script("", AFTER_RESCUE)),
    );
    let source = boot_check(
        &built.image,
        Some(&built.vars),
        "uefi",
        &job,
        2500,
        &s.join("source"),
    );
    eprintln!(
        "source: LUKS volume, capture, two backups, two mkrescue: {:.0} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        source.code == 0 && source.job_log.contains("== lifeboat job done"),
        "the source job failed:\n{}\n{}",
        tail(&source.job_log, 60),
        tail(&source.serial, 30)
    );
    let out = s.join("source/job");
    let gens = generations(&out.join("backup"));
    assert_eq!(gens.len(), 2, "{gens:?}");
    let key = out.join("data.key");

    // The configuration names the image and the backup.
    let config = s.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[rescue]\noutput = \"{}\"\n[backup]\ndestination = \"{}\"\n\
             [drill]\naccel = \"tcg\"\nmemory = 1536\n",
            out.join("rescue").display(),
            out.join("backup").display(),
        ),
    )
    .unwrap();

    // 2. Two lines of drills at a time, each with its state and work folder.
    let (base, work) = base_args(
        &config,
        &state_dir(&s.join("state-fail"), &out),
        &s.join("work-fail"),
    );
    let failing = {
        let (state, out, gen, key) = (
            s.join("state-fail"),
            out.clone(),
            gens[0].clone(),
            key.clone(),
        );
        std::thread::spawn(move || failing_drills(&base, &work, &state, &out, &gen, &key))
    };
    let state = state_dir(&s.join("state-pass"), &out);
    let (base, work) = base_args(&config, &state, &s.join("work-pass"));
    passing_drill(&base, &work, &state, &gens[0], &key);
    if let Err(e) = failing.join() {
        std::panic::resume_unwind(e);
    }
}
