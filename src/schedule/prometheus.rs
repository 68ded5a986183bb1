//! `lifeboat status --prometheus`: the facts as node_exporter textfile
//! metrics (`lifeboat.prom` in `[monitor] textfile_dir`, written atomically
//! so the collector never reads half a file; else stdout).
//!
//! A value that cannot be determined (no image, no backup, drift unknown)
//! is left out, so that `absent(lifeboat_rescue_age_seconds)` alerts on it;
//! `lifeboat_check_state` always carries the verdict of `lifeboat check`.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::check::Verdict;
use super::monitor::{BackupFacts, Drift, Facts};
use crate::drill::report::Verdict as DrillVerdict;
use crate::rescue::copy::CopyFacts;
use crate::util;

/// The file node_exporter reads (it takes `*.prom` only; the temporary
/// name ends in `.tmp`).
pub const TEXTFILE: &str = "lifeboat.prom";

/// One gauge: name, help and its value when known.
struct Gauge {
    name: &'static str,
    help: &'static str,
    value: Option<f64>,
}

fn gauge(name: &'static str, help: &'static str, value: Option<f64>) -> Gauge {
    Gauge { name, help, value }
}

fn age(now: i64, then: Option<i64>) -> Option<f64> {
    then.map(|t| (now - t).max(0) as f64)
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// The backup's age and whether it is verified.
fn backup_values(f: &Facts) -> (Option<f64>, Option<f64>) {
    match &f.backup {
        BackupFacts::Found {
            finished_epoch,
            verify,
            chain_damage,
            ..
        } => (
            age(f.now, *finished_epoch),
            Some(flag(
                verify.as_ref().is_some_and(|x| x.ok) && chain_damage.is_empty(),
            )),
        ),
        _ => (None, None),
    }
}

/// The rescue copy's age and whether it is current.
fn copy_values(f: &Facts) -> (Option<f64>, Option<f64>) {
    match &f.rescue_copy {
        CopyFacts::NotConfigured => (None, None),
        CopyFacts::Copied {
            copied_epoch,
            current,
            error,
            ..
        } => (
            age(f.now, *copied_epoch),
            Some(flag(*current && error.is_none())),
        ),
        _ => (None, Some(0.0)),
    }
}

fn gauges(f: &Facts, v: &Verdict) -> Vec<Gauge> {
    let mut all = vec![gauge(
        "lifeboat_check_state",
        "Verdict of lifeboat check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        Some(v.state.code() as f64),
    )];
    all.extend(image_gauges(f));
    all.extend(run_gauges(f));
    all
}

/// The snapshot, the rescue image and its copy, the backup, the drift.
fn image_gauges(f: &Facts) -> Vec<Gauge> {
    let (backup_age, verified) = backup_values(f);
    let (copy_age, copy_current) = copy_values(f);
    let drift = match f.drift {
        Drift::Same { .. } => Some(0.0),
        Drift::Drifted { .. } => Some(1.0),
        Drift::Unknown { .. } => None,
    };
    vec![
        gauge(
            "lifeboat_snapshot_age_seconds",
            "Age of the newest layout snapshot.",
            age(f.now, f.snapshot.as_ref().and_then(|s| s.epoch)),
        ),
        gauge(
            "lifeboat_rescue_age_seconds",
            "Age of the rescue image.",
            age(f.now, f.rescue.built_epoch),
        ),
        gauge(
            "lifeboat_rescue_copy_age_seconds",
            "Age of the last copy of the rescue image to rescue.destination.",
            copy_age,
        ),
        gauge(
            "lifeboat_rescue_copy_current",
            "1 when rescue.destination holds the current image and the last copy succeeded.",
            copy_current,
        ),
        gauge(
            "lifeboat_backup_age_seconds",
            "Age of the newest backup generation.",
            backup_age,
        ),
        gauge(
            "lifeboat_backup_verified",
            "1 when the newest backup's last verify found it sound and its chain undamaged.",
            verified,
        ),
        gauge(
            "lifeboat_layout_drift",
            "1 when the layout changed since the rescue image was built.",
            drift,
        ),
    ]
}

/// The last scheduled run and the last drill.
fn run_gauges(f: &Facts) -> Vec<Gauge> {
    let run = f.last_run.as_ref();
    let drill = f.drill.last.as_ref();
    vec![
        gauge(
            "lifeboat_last_run_success",
            "1 when the last scheduled run succeeded.",
            run.map(|r| flag(r.ok)),
        ),
        gauge(
            "lifeboat_last_run_timestamp_seconds",
            "When the last scheduled run finished (Unix time).",
            run.and_then(|r| util::parse_rfc3339(&r.finished_at).ok())
                .map(|t| t as f64),
        ),
        gauge(
            "lifeboat_drill_success",
            "1 when the last recovery drill passed.",
            drill.map(|d| flag(d.verdict == DrillVerdict::Passed)),
        ),
        gauge(
            "lifeboat_drill_duration_seconds",
            "Duration of the last recovery drill (recovery time on this hardware).",
            drill.map(|d| d.seconds),
        ),
        gauge(
            "lifeboat_drill_passed_age_seconds",
            "Age of the last passed recovery drill.",
            age(f.now, f.drill.last_passed_epoch),
        ),
    ]
}

/// The known values by name, for `status --json` (`metrics`), which the
/// Zabbix template reads.
pub fn values(f: &Facts, v: &Verdict) -> serde_json::Map<String, serde_json::Value> {
    gauges(f, v)
        .into_iter()
        .filter_map(|g| {
            let x = g.value?;
            // Whole numbers as integers: 7200, not 7200.0.
            let j = if x.fract() == 0.0 && x.abs() < 9e15 {
                serde_json::json!(x as i64)
            } else {
                serde_json::json!(x)
            };
            Some((g.name.to_string(), j))
        })
        .collect()
}

/// The textfile: `# HELP`, `# TYPE` and a sample for each known gauge.
pub fn render(f: &Facts, v: &Verdict) -> String {
    let mut out = String::new();
    for g in gauges(f, v) {
        let Some(value) = g.value else { continue };
        out.push_str(&format!(
            "# HELP {} {}\n# TYPE {} gauge\n{} {}\n",
            g.name, g.help, g.name, g.name, value
        ));
    }
    out
}

/// Writes the metrics into `dir/lifeboat.prom` atomically; returns the path.
pub fn write(dir: &Path, text: &str) -> Result<PathBuf> {
    let path = dir.join(TEXTFILE);
    util::write_atomic(&path, text.as_bytes(), 0o644)?;
    Ok(path)
}
