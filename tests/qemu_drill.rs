//! QEMU tier: `lifeboat drill` of the project's real Debian 12 test system
//! (qemu/build-debian.sh, cached). Inside the running system: `layout
//! save`, a full backup, `mkrescue` (an ordinary image: no unattended
//! arguments built in), and a second full generation without the kernels.
//! On the host, with the state folder's configuration as an admin would
//! have it: a drill of the first generation onto a smaller disk passes
//! (recovered under OVMF, booted under SeaBIOS and OVMF to the boot
//! target), a drill of the second fails naming the recovered boot, and
//! `check --nagios` follows each.

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

#[test]
fn drill_of_the_debian_system_passes_and_a_broken_backup_fails() {
    if !is_root() {
        eprintln!("skipped: this test builds and boots a Debian disk; run it as root");
        return;
    }
    let s = Scratch::new("qemu-drill");
    let built = build_debian(&s.join("image"));

    // 1. The source system: layout, a good full backup, the rescue image,
    // then a second full generation without the kernels.
    let t = Instant::now();
    let job = job_dir(
        &s.join("job1"),
        &source_job_script(
            "",
            "sleep 1\n\
             lifeboat backup create --to \"$here/backup\" --exclude '/boot/vmlinuz-*' \\\n\
                 --exclude '/boot/initrd.img-*'",
        ),
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
        "source: capture, two backups, mkrescue: {:.0} s",
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

    // The state folder as an admin has it: the configuration names the
    // image and the backup; the layout the image was built with is the
    // newest snapshot (so `check` knows the drift, and the drill finds the
    // image's layout by its SHA-256 without --layout).
    let state = s.join("state");
    std::fs::create_dir_all(state.join("snapshots")).unwrap();
    std::fs::copy(
        out.join("layout.json"),
        state.join("snapshots/20261201T000000Z.json"),
    )
    .unwrap();
    let config = s.join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[rescue]\noutput = \"{}\"\n[backup]\ndestination = \"{}\"\n\
             [drill]\naccel = \"tcg\"\nmemory = 1536\nwork = \"{}\"\n",
            out.join("rescue").display(),
            out.join("backup").display(),
            s.join("work").display()
        ),
    )
    .unwrap();
    let base: Vec<String> = vec![
        "--config".into(),
        config.display().to_string(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    let (code, line) = nagios(&base);
    assert_eq!(code, 0, "{line}");
    assert!(!line.contains("drill"), "{line}");

    // 2. The good generation onto a smaller disk (5 GiB for the 6 GiB
    // one): passes, recovered under OVMF (the source's firmware), booted
    // under SeaBIOS and OVMF.
    let (code, text, report) = drill(
        &base,
        &[
            "--generation",
            &gens[0],
            "--disk-size",
            "vda=5G",
            "--timeout",
            "20m",
        ],
        &state,
    );
    phases(&report);
    assert_eq!(code, 0, "the drill failed:\n{text}\n{report:#}");
    assert_eq!(report["verdict"], "passed");
    assert_eq!(report["inputs"]["generation"], gens[0].as_str());
    assert_eq!(report["inputs"]["accel"], "tcg");
    assert_eq!(report["disks"][0]["size_bytes"], 5u64 << 30);
    assert_eq!(report["disks"][0]["serial"], "lifeboat-sys");
    let run = &report["runs"][0];
    assert_eq!(run["firmware"], "uefi");
    assert_eq!(run["recovery_report"]["ok"], true, "{run:#}");
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
        "the recovered system did not report booting under each firmware"
    );
    assert!(text.contains("lifeboat drill: PASSED in "), "{text}");
    // The scratch disks are gone; nothing of the drill stays in the work
    // folder but its lock.
    let left: Vec<_> = std::fs::read_dir(s.join("work"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [std::ffi::OsString::from(".lock")], "{left:?}");
    let (code, line) = nagios(&base);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("drill passed "), "{line}");
    assert!(line.contains(" drill_age="), "{line}");

    // 3. The generation without kernels: the recovery works, the recovered
    // disks never reach their boot target; the drill names that step and
    // monitoring goes critical. --keep prints the command line.
    let (code, text, report) = drill(&base, &["--timeout", "5m", "--keep"], &state);
    phases(&report);
    assert_eq!(code, 1, "{text}\n{report:#}");
    assert_eq!(report["verdict"], "failed");
    assert_eq!(report["failed_step"], "recovered-boot", "{report:#}");
    assert_eq!(report["inputs"]["generation"], gens[1].as_str());
    assert!(
        text.contains("lifeboat drill: FAILED: recovered boot failed"),
        "{text}"
    );
    assert!(
        text.contains("scratch disks kept; boot them with:\nqemu-system-x86_64 "),
        "{text}"
    );
    let (code, line) = nagios(&base);
    assert_eq!(code, 2, "{line}");
    assert!(
        line.starts_with("LIFEBOAT CRITICAL - the last recovery drill (")
            && line.contains("failed: recovered boot failed"),
        "{line}"
    );
}
