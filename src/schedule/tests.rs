//! Monitoring on a real state folder (snapshots, rescue.json, a backup
//! folder with generation.json and verify.json) with a fixed clock.

use std::path::{Path, PathBuf};

use super::check::{evaluate, unknown, State, Thresholds};
use super::monitor::{gather, Drift};
use super::run::LastRun;
use super::snapshot::SnapshotStore;
use crate::config::{AlertLevel, Choice, Config};
use crate::layout::diff::tests::machine;
use crate::rescue::sha256_file;
use crate::util::rfc3339;

const NOW: i64 = 1_795_672_646; // 2026-11-26T05:57:26Z
const H: i64 = 3600;
const D: i64 = 86400;

/// A run record that finished at `finished` (10 s long), failed with
/// `error` or succeeded.
pub(crate) fn last_run(finished: i64, error: Option<&str>) -> LastRun {
    LastRun {
        started_at: rfc3339(finished - 10),
        finished_at: rfc3339(finished),
        ok: error.is_none(),
        exit_code: if error.is_some() { 2 } else { 0 },
        stored: None,
        newest: None,
        changes: 0,
        backup: None,
        rebuilt: false,
        reasons: vec![],
        error: error.map(String::from),
    }
}

struct World {
    _dir: tempfile::TempDir,
    cfg: Config,
    store: SnapshotStore,
    backup: PathBuf,
}

impl World {
    /// A snapshot taken 5 h ago, an image built from it 2 h ago, a backup
    /// finished 3 h ago and verified.
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.state_dir.value = dir.path().join("state");
        cfg.rescue.output.value = dir.path().join("state/rescue");
        let backup = dir.path().join("backup");
        cfg.backup.destination.value = Some(backup.display().to_string());
        let store = SnapshotStore::new(&cfg.snapshot_dir());
        let w = World {
            _dir: dir,
            cfg,
            store,
            backup,
        };
        let snap = w.store.record(&machine(), NOW - 5 * H, 10, &[]).unwrap();
        w.build_image(&snap.stored.unwrap().path, NOW - 2 * H);
        w.write_backup("20261126T025000Z", NOW - 3 * H, Some(true));
        w
    }

    fn build_image(&self, layout: &Path, at: i64) {
        let out = &self.cfg.rescue.output.value;
        std::fs::create_dir_all(out).unwrap();
        let rec = serde_json::json!({
            "lifeboat_version": "0.1.0", "built_at": rfc3339(at),
            "kernel_version": "6.1.0-30-amd64", "kernel_image": "/boot/vmlinuz-6.1.0-30-amd64",
            "compression": "zstd", "cmdline": "console=ttyS0",
            "layout": layout.display().to_string(),
            "layout_sha256": sha256_file(layout).unwrap(),
            "files": [{"name": "initrd", "bytes": 1, "sha256": "ab"}],
            "modules": 1, "firmware_files": 0, "programs": 1, "libraries": 1,
            "build_seconds": 12.0
        });
        std::fs::write(out.join("rescue.json"), rec.to_string()).unwrap();
    }

    fn write_backup(&self, id: &str, finished: i64, verified: Option<bool>) {
        let dir = self.backup.join(id);
        std::fs::create_dir_all(&dir).unwrap();
        let g = serde_json::json!({
            "format": 1, "id": id, "kind": "full", "parent": null,
            "parent_manifest_sha256": null, "chain": [id],
            "started_at": rfc3339(finished - 600), "finished_at": rfc3339(finished),
            "started_ns": ((finished - 600) as i128) * 1_000_000_000,
            "duration_seconds": 600.0, "hostname": "db1", "lifeboat_version": "0.1.0",
            "compression": "zstd", "archives": [], "manifest_sha256": "00",
            "files": 10, "bytes": 100, "stored_files": 10, "stored_content_bytes": 100,
            "archive_bytes": 50, "deleted": 0, "has_layout": true, "result": "ok",
            "warnings": {"vanished": 0, "changed": 0, "sockets": 0, "unreadable": 0,
                         "examples": []}
        });
        std::fs::write(dir.join("generation.json"), g.to_string()).unwrap();
        if let Some(ok) = verified {
            let v = serde_json::json!({
                "verified_at": rfc3339(finished + 60), "deep": false, "ok": ok,
                "problem": (!ok).then_some("root.tar.zst: etc/passwd: SHA-256 mismatch"),
                "files_checked": 10
            });
            std::fs::write(dir.join("verify.json"), v.to_string()).unwrap();
        }
    }

    fn check(&self, now: i64) -> (State, String) {
        let f = gather(&self.cfg, false, now);
        let v = evaluate(&f, &Thresholds::from_config(&self.cfg));
        (v.state, v.line())
    }
}

#[test]
fn all_current_is_ok_with_exact_perfdata() {
    let w = World::new();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Ok);
    assert_eq!(state.code(), 0);
    assert_eq!(
        line,
        "LIFEBOAT OK - rescue image 2h old, layout unchanged, backup 3h old, verified \
         | rescue_age=7200s;691200;1296000 backup_age=10800s;691200;1296000 drift=0"
    );
}

#[test]
fn drifted_layout_warns_or_goes_critical() {
    let mut w = World::new();
    let mut changed = machine();
    changed.disks.pop();
    let r = w.store.record(&changed, NOW - H, 10, &[]).unwrap();
    let id = r.stored.unwrap().id;
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Warning);
    assert!(
        line.starts_with(&format!(
            "LIFEBOAT WARNING - layout drifted since the rescue image was built \
             (2 changes in snapshot {id}, first: removed disk "
        )),
        "{line}"
    );
    assert!(line.ends_with(" drift=1"), "{line}");
    w.cfg.monitor.drift.value = Choice(AlertLevel::Critical);
    assert_eq!(w.check(NOW).0, State::Critical);
}

#[test]
fn failed_verify_is_critical_and_named() {
    let w = World::new();
    w.write_backup("20261126T045000Z", NOW - H, Some(false));
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Critical);
    assert_eq!(state.code(), 2);
    assert!(
        line.starts_with(
            "LIFEBOAT CRITICAL - backup verify failed for generation 20261126T045000Z: \
         root.tar.zst: etc/passwd: SHA-256 mismatch | rescue_age=7200s;691200;1296000 \
         backup_age=3600s;"
        ),
        "{line}"
    );
}

#[test]
fn ages_warn_then_go_critical_worst_first() {
    let w = World::new();
    // Image 8 d + 2 h old, backup 8 d + 3 h: both warn.
    let (state, line) = w.check(NOW + 8 * D);
    assert_eq!(state, State::Warning);
    assert!(line.starts_with("LIFEBOAT WARNING - stale rescue image: built 8d ago (warning at 8d); also: stale backup: generation 20261126T025000Z finished 8d ago (warning at 8d) |"), "{line}");
    // A fresh backup, the image 15 d old: critical names the image first.
    w.write_backup("20261211T000000Z", NOW + 15 * D - H, Some(true));
    let (state, line) = w.check(NOW + 15 * D);
    assert_eq!(state, State::Critical);
    assert!(
        line.starts_with(
            "LIFEBOAT CRITICAL - stale rescue image: built 15d ago (critical at 15d) |"
        ),
        "{line}"
    );
    assert!(
        line.contains(" rescue_age=1303200s;691200;1296000 backup_age=3600s;"),
        "{line}"
    );
}

#[test]
fn no_backup_and_no_image_are_critical_with_unknown_perfdata() {
    let mut w = World::new();
    std::fs::remove_dir_all(&w.backup).unwrap();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Critical);
    assert_eq!(
        line,
        format!(
            "LIFEBOAT CRITICAL - no backup in {} | rescue_age=7200s;691200;1296000 \
             backup_age=U;691200;1296000 drift=0",
            w.backup.display()
        )
    );
    w.cfg.monitor.require_backup.value = false;
    assert_eq!(w.check(NOW).0, State::Ok);
    w.cfg.backup.destination.value = None;
    assert_eq!(w.check(NOW).0, State::Ok);
    w.cfg.monitor.require_backup.value = true;
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Critical);
    assert!(line.contains("backup.destination is not set"), "{line}");

    std::fs::remove_file(w.cfg.rescue.output.value.join("rescue.json")).unwrap();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Critical);
    assert!(
        line.starts_with("LIFEBOAT CRITICAL - no rescue image in "),
        "{line}"
    );
    assert!(
        line.ends_with("| rescue_age=U;691200;1296000 backup_age=U;691200;1296000 drift=U"),
        "{line}"
    );
}

#[test]
fn drift_follows_the_image_layout_by_sha256() {
    let w = World::new();
    // The image was built from another copy of the same layout (layout
    // save's file); that copy is then overwritten: the snapshot with the
    // same SHA-256 still tells what the image holds.
    let first = w.store.resolve("latest").unwrap();
    let copy = w.cfg.state_dir.value.join("layout.json");
    std::fs::copy(&first.path, &copy).unwrap();
    w.build_image(&copy, NOW - 2 * H);
    let mut other = machine();
    other.host.hostname = "elsewhere".into();
    std::fs::write(&copy, other.to_json()).unwrap();
    let f = gather(&w.cfg, false, NOW);
    assert!(matches!(f.drift, Drift::Same { .. }), "{:?}", f.drift);

    // Neither the file nor any snapshot has it: drift unknown, which
    // outranks a warning.
    std::fs::remove_file(&first.path).unwrap();
    let mut changed = machine();
    changed.disks.pop();
    w.store.record(&changed, NOW - H, 10, &[]).unwrap();
    let (state, line) = w.check(NOW + 8 * D);
    assert_eq!(state, State::Unknown);
    assert_eq!(state.code(), 3);
    assert!(
        line.starts_with(
            "LIFEBOAT UNKNOWN - drift unknown: the layout built into the rescue image"
        ),
        "{line}"
    );
    assert!(line.contains("; also: stale rescue image"), "{line}");
    assert!(line.ends_with(" drift=U"), "{line}");
}

#[test]
fn failed_run_and_unreadable_record() {
    let w = World::new();
    last_run(
        NOW - 590,
        Some("rebuilding the rescue image failed | the previous image is kept"),
    )
    .save(&w.cfg.state_dir.value)
    .unwrap();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Warning);
    // '|' would start the performance data.
    assert!(line.starts_with("LIFEBOAT WARNING - last scheduled run failed at 2026-11-26T05:47:36Z: rebuilding the rescue image failed / the previous image is kept | "), "{line}");

    std::fs::write(w.cfg.rescue.output.value.join("rescue.json"), "{").unwrap();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Unknown);
    assert!(
        line.starts_with("LIFEBOAT UNKNOWN - rescue image record unreadable: parsing "),
        "{line}"
    );

    // An image without a layout warns; a new build fixes the record.
    let rec = serde_json::json!({
        "lifeboat_version": "0.1.0", "built_at": rfc3339(NOW - H),
        "kernel_version": "6.1.0-30-amd64", "kernel_image": "/boot/vmlinuz",
        "compression": "zstd", "cmdline": "", "layout": null, "layout_sha256": null,
        "files": [], "modules": 0, "firmware_files": 0, "programs": 0, "libraries": 0,
        "build_seconds": 1.0
    });
    std::fs::write(
        w.cfg.rescue.output.value.join("rescue.json"),
        rec.to_string(),
    )
    .unwrap();
    std::fs::remove_file(w.cfg.state_dir.value.join("last-run.json")).unwrap();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Warning);
    assert!(
        line.starts_with("LIFEBOAT WARNING - the rescue image has no layout built in"),
        "{line}"
    );
    assert!(line.ends_with(" drift=U"), "{line}");

    let v = unknown("bad configuration", None);
    assert_eq!(v.state.code(), 3);
    assert_eq!(
        v.line(),
        "LIFEBOAT UNKNOWN - bad configuration | rescue_age=U;; backup_age=U;; drift=U"
    );
}

#[test]
fn damage_anywhere_in_the_newest_chain_is_critical() {
    let w = World::new();
    // The full of the newest chain verified damaged, the incremental on it
    // not verified yet: a restore of the newest needs the damaged full.
    let full = "20261126T035000Z";
    w.write_backup(full, NOW - 2 * H, Some(false));
    let inc = "20261126T045000Z";
    w.write_backup(inc, NOW - H, None);
    let path = w.backup.join(inc).join("generation.json");
    let mut g: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    g["kind"] = "incremental".into();
    g["parent"] = full.into();
    g["chain"] = serde_json::json!([full, inc]);
    std::fs::write(&path, g.to_string()).unwrap();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Critical, "{line}");
    assert!(
        line.contains(&format!("generation {full} of the newest chain is damaged")),
        "{line}"
    );
    // The damaged generation of an older chain alone is not critical.
    std::fs::remove_file(w.backup.join(full).join("verify.json")).unwrap();
    w.write_backup("20261126T015000Z", NOW - 4 * H, Some(false));
    assert_eq!(w.check(NOW).0, State::Ok, "{}", w.check(NOW).1);
    // A garbage generation.json newer than the newest readable one.
    let bad = w.backup.join("20261126T055000Z");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("generation.json"), b"{ garbage").unwrap();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Critical, "{line}");
    assert!(
        line.contains("generation 20261126T055000Z is damaged"),
        "{line}"
    );
}

#[test]
fn drills_judged_once_one_ran_or_required() {
    use crate::drill::report::Verdict;
    use crate::drill::tests::sample_report;
    let mut w = World::new();
    let state = w.cfg.state_dir.value.clone();
    // No drill and none required: no drill check, no drill_age.
    let (s, line) = w.check(NOW);
    assert_eq!(s, State::Ok);
    assert!(!line.contains("drill"), "{line}");
    // Required but none ran: a warning, drill_age unknown.
    w.cfg.monitor.require_drill.value = true;
    let (s, line) = w.check(NOW);
    assert_eq!(s, State::Warning);
    assert!(
        line.starts_with("LIFEBOAT WARNING - no recovery drill has run"),
        "{line}"
    );
    assert!(line.ends_with(" drill_age=U;3024000;"), "{line}");
    w.cfg.monitor.require_drill.value = false;

    // A drill passed 2 days ago: OK with its age.
    crate::drill::save(
        &sample_report(Verdict::Passed, &rfc3339(NOW - 2 * D)),
        &state,
    )
    .unwrap();
    let (s, line) = w.check(NOW);
    assert_eq!(s, State::Ok);
    assert_eq!(
        line,
        "LIFEBOAT OK - rescue image 2h old, layout unchanged, backup 3h old, verified, \
         drill passed 2d ago | rescue_age=7200s;691200;1296000 backup_age=10800s;691200;1296000 \
         drift=0 drill_age=172800s;3024000;"
    );
    // 35 days later: the drill is stale (the image and backup are fresh).
    w.build_image(&w.store.resolve("latest").unwrap().path, NOW + 35 * D);
    w.write_backup("20261231T000000Z", NOW + 35 * D, Some(true));
    let (s, line) = w.check(NOW + 32 * D);
    assert_eq!(s, State::Ok, "{line}");
    let (s, line) = w.check(NOW + 35 * D);
    assert_eq!(s, State::Warning);
    assert!(
        line.starts_with(
            "LIFEBOAT WARNING - the last passed recovery drill is 37d old (warning at 35d) |"
        ),
        "{line}"
    );
    // The newest drill failed: critical, naming the step; the age is
    // still that of the last passed one.
    crate::drill::save(
        &sample_report(Verdict::Failed, &rfc3339(NOW + 35 * D - H)),
        &state,
    )
    .unwrap();
    let (s, line) = w.check(NOW + 35 * D);
    assert_eq!(s, State::Critical);
    assert!(
        line.starts_with(&format!(
            "LIFEBOAT CRITICAL - the last recovery drill ({}) failed: recovered boot failed \
             (rescue under uefi): no boot report; also: the last passed recovery drill is 37d old",
            rfc3339(NOW + 35 * D - H)
        )),
        "{line}"
    );
    assert!(line.ends_with(" drill_age=3196800s;3024000;"), "{line}");
    // A drill that could not run says nothing about the backup: a warning,
    // and the failed drill before it stays critical.
    crate::drill::save(
        &sample_report(Verdict::Error, &rfc3339(NOW + 35 * D - 30 * 60)),
        &state,
    )
    .unwrap();
    let (s, line) = w.check(NOW + 35 * D);
    assert_eq!(s, State::Critical);
    assert!(
        line.contains(&format!(
            "; also: the last recovery drill ({}) could not run: QEMU failed (exit 1): no KVM",
            rfc3339(NOW + 35 * D - 30 * 60)
        )),
        "{line}"
    );
    assert!(
        line.starts_with("LIFEBOAT CRITICAL - the last recovery drill ("),
        "{line}"
    );
    // A new passed drill clears it.
    crate::drill::save(
        &sample_report(Verdict::Passed, &rfc3339(NOW + 35 * D - 60)),
        &state,
    )
    .unwrap();
    assert_eq!(w.check(NOW + 35 * D).0, State::Ok);
    // The status page shows the last drill.
    let f = gather(&w.cfg, false, NOW + 35 * D);
    let text = crate::cli::render_status(&f, &evaluate(&f, &Thresholds::from_config(&w.cfg)));
    assert!(
        text.contains(&format!(
            "drill     {} passed, ",
            rfc3339(NOW + 35 * D - 60)
        )),
        "{text}"
    );
}

/// The metrics of a state folder, parsed by a real Prometheus text parser
/// (prometheus-parse): name -> gauge value; every sample is a gauge with
/// its HELP.
fn metrics(w: &World, now: i64) -> std::collections::BTreeMap<String, f64> {
    let f = gather(&w.cfg, false, now);
    let v = evaluate(&f, &Thresholds::from_config(&w.cfg));
    let text = super::prometheus::render(&f, &v);
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|s| {
            assert!(
                scrape.docs.contains_key(&s.metric),
                "{} has no HELP",
                s.metric
            );
            match s.value {
                prometheus_parse::Value::Gauge(x) => (s.metric, x),
                other => panic!("{} is not a gauge: {other:?}", s.metric),
            }
        })
        .collect()
}

#[test]
fn prometheus_metrics_follow_the_facts() {
    let w = World::new();
    let m = metrics(&w, NOW);
    let want = [
        ("lifeboat_check_state", 0.0),
        ("lifeboat_snapshot_age_seconds", (5 * H) as f64),
        ("lifeboat_rescue_age_seconds", (2 * H) as f64),
        ("lifeboat_backup_age_seconds", (3 * H) as f64),
        ("lifeboat_backup_verified", 1.0),
        ("lifeboat_layout_drift", 0.0),
    ];
    let want: std::collections::BTreeMap<String, f64> =
        want.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    // No run and no drill yet: those gauges are left out, not zero.
    assert_eq!(m, want);

    // Drift, a damaged newest backup, a failed run.
    let mut changed = machine();
    changed.disks.pop();
    w.store.record(&changed, NOW - H, 10, &[]).unwrap();
    w.write_backup("20261126T045000Z", NOW - H, Some(false));
    let run = last_run(NOW - 60, Some("disk full"));
    run.save(&w.cfg.state_dir.value).unwrap();
    let m = metrics(&w, NOW);
    assert_eq!(m["lifeboat_layout_drift"], 1.0);
    assert_eq!(m["lifeboat_backup_verified"], 0.0);
    assert_eq!(m["lifeboat_backup_age_seconds"], H as f64);
    assert_eq!(m["lifeboat_last_run_success"], 0.0);
    assert_eq!(m["lifeboat_last_run_timestamp_seconds"], (NOW - 60) as f64);
    assert_eq!(m["lifeboat_check_state"], 2.0);
    assert!(!m.contains_key("lifeboat_drill_success"), "{m:?}");

    // A drill passed 2 days ago, then one failed a day ago.
    use crate::drill::report::Verdict;
    use crate::drill::tests::sample_report;
    let state = w.cfg.state_dir.value.clone();
    let passed = sample_report(Verdict::Passed, &rfc3339(NOW - 2 * D));
    crate::drill::save(&passed, &state).unwrap();
    let m = metrics(&w, NOW);
    assert_eq!(m["lifeboat_drill_success"], 1.0);
    assert_eq!(m["lifeboat_drill_duration_seconds"], passed.seconds);
    assert_eq!(m["lifeboat_drill_passed_age_seconds"], (2 * D) as f64);
    crate::drill::save(&sample_report(Verdict::Failed, &rfc3339(NOW - D)), &state).unwrap();
    let m = metrics(&w, NOW);
    assert_eq!(m["lifeboat_drill_success"], 0.0);
    assert_eq!(m["lifeboat_drill_passed_age_seconds"], (2 * D) as f64);

    // No image, no backup folder: ages unknown, left out.
    std::fs::remove_file(w.cfg.rescue.output.value.join("rescue.json")).unwrap();
    std::fs::remove_dir_all(&w.backup).unwrap();
    let m = metrics(&w, NOW);
    for gone in [
        "lifeboat_rescue_age_seconds",
        "lifeboat_backup_age_seconds",
        "lifeboat_backup_verified",
        "lifeboat_layout_drift",
    ] {
        assert!(!m.contains_key(gone), "{gone} present: {m:?}");
    }
    assert_eq!(m["lifeboat_check_state"], 2.0);
}

/// The textfile is replaced atomically: a planted symlink at its name is
/// replaced, not followed (the file it points to is unchanged), and no
/// temporary file is left for the collector to read.
#[test]
fn prometheus_textfile_is_written_atomically() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    std::fs::write(&outside, b"keep me\n").unwrap();
    let tf = dir.path().join("textfile");
    std::fs::create_dir(&tf).unwrap();
    std::os::unix::fs::symlink(&outside, tf.join("lifeboat.prom")).unwrap();
    let f = gather(&w.cfg, false, NOW);
    let v = evaluate(&f, &Thresholds::from_config(&w.cfg));
    let text = super::prometheus::render(&f, &v);
    let path = super::prometheus::write(&tf, &text).unwrap();
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me\n");
    assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    let names: Vec<_> = std::fs::read_dir(&tf)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("lifeboat.prom")]);
}

/// A USB stick or PXE tree written from an image that has since been
/// rebuilt warns, naming it; written from the current image, all is well.
#[test]
fn a_stick_older_than_the_image_warns() {
    let w = World::new();
    let out = &w.cfg.rescue.output.value;
    let built = crate::rescue::BuildRecord::load(out).unwrap().built_at;
    let stick = crate::rescue::media::MediaOutput {
        kind: crate::rescue::media::MediaKind::Usb,
        target: "/dev/sdz".into(),
        identity: Some("model Stick, serial 42".into()),
        written_at: rfc3339(NOW - H),
        image_built_at: built,
        secure_boot: false,
        not_capable: None,
    };
    crate::rescue::media::record(out, stick.clone()).unwrap();
    assert_eq!(w.check(NOW).0, State::Ok);
    crate::rescue::media::record(
        out,
        crate::rescue::media::MediaOutput {
            image_built_at: rfc3339(NOW - 30 * H),
            ..stick
        },
    )
    .unwrap();
    let (state, line) = w.check(NOW);
    assert_eq!(state, State::Warning);
    assert!(
        line.contains("the USB disk /dev/sdz (model Stick, serial 42)")
            && line.contains("holds an older rescue image than the current one"),
        "{line}"
    );
}
