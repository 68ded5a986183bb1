//! `lifeboat status` and `lifeboat check` (the monitoring plugin).

use anyhow::{bail, Result};
use clap::Args;

use crate::config::{fmt_duration, Config, LoadOptions};
use crate::schedule::check::{self, Thresholds, Verdict};
use crate::schedule::monitor::{self, BackupFacts, Drift, Facts};
use crate::schedule::prometheus;
use crate::util::{self, human_bytes, human_duration};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON: the facts, the verdict and the metrics of --prometheus
    /// (ages in seconds, 0/1 flags).
    #[arg(long)]
    pub json: bool,
    /// Write node_exporter textfile metrics (lifeboat_rescue_age_seconds,
    /// lifeboat_backup_age_seconds, lifeboat_layout_drift, ...) atomically
    /// to lifeboat.prom in monitor.textfile_dir, or to stdout without it.
    #[arg(long, conflicts_with = "json")]
    pub prometheus: bool,
    /// Measure drift against a capture of the running system, not the
    /// newest snapshot (monitor.live).
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Plugin output: one status line with performance data.
    #[arg(long)]
    pub nagios: bool,
    /// Age of the rescue image or the newest backup that warns, e.g. 8d
    /// [default: monitor.warn_age, else 8d].
    #[arg(long, value_name = "DURATION")]
    pub warn_age: Option<String>,
    /// Age that is critical [default: monitor.crit_age, else 15d].
    #[arg(long, value_name = "DURATION")]
    pub crit_age: Option<String>,
    /// Measure drift against a capture of the running system, not the
    /// newest snapshot (monitor.live; needs root).
    #[arg(long)]
    pub live: bool,
}

pub fn status(args: StatusArgs, cfg: &Config) -> Result<u8> {
    let now = util::now_epoch();
    let f = monitor::gather(cfg, args.live || cfg.monitor.live.value, now);
    let v = check::evaluate(&f, &Thresholds::from_config(cfg));
    if args.prometheus {
        let text = prometheus::render(&f, &v);
        match &cfg.monitor.textfile_dir.value {
            Some(dir) => {
                let path = prometheus::write(dir, &text)?;
                log::info!("metrics written to {}", path.display());
            }
            None => print!("{text}"),
        }
    } else if args.json {
        let metrics = prometheus::values(&f, &v);
        let j = serde_json::json!({ "facts": f, "verdict": v, "metrics": metrics });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print!("{}", render(&f, &v));
    }
    Ok(0)
}

fn ago(now: i64, then: Option<i64>) -> String {
    match then {
        Some(t) => format!("{} ago", human_duration(now - t)),
        None => "at an unknown time".into(),
    }
}

/// Where the rescue image was copied (`rescue.destination`), if set.
fn copy_line(f: &Facts) -> Option<String> {
    use crate::rescue::copy::CopyFacts;
    Some(match &f.rescue_copy {
        CopyFacts::NotConfigured => return None,
        CopyFacts::Unreadable { destination, error } => {
            format!("{destination}: record unreadable: {error}")
        }
        CopyFacts::Missing { destination, error } => match error {
            Some(e) => format!("none in {destination}: the copy FAILED: {e}"),
            None => format!("none in {destination} yet"),
        },
        CopyFacts::Copied {
            destination,
            copy,
            copied_epoch,
            current,
            error,
        } => format!(
            "{} in {destination}, copied {}{}{}",
            copy.name,
            ago(f.now, *copied_epoch),
            if *current {
                ""
            } else {
                ", OLDER than the image"
            },
            error
                .as_ref()
                .map(|e| format!("; the last copy FAILED: {e}"))
                .unwrap_or_default()
        ),
    })
}

/// The human `status` report.
pub fn render(f: &Facts, v: &Verdict) -> String {
    let mut out = Report::default();
    snapshot_lines(f, &mut out);
    rescue_lines(f, &mut out);
    if let Some(text) = copy_line(f) {
        out.line("copy", text);
    }
    backup_lines(f, &mut out);
    drift_lines(f, &mut out);
    run_lines(f, &mut out);
    out.line("verdict", v.line());
    out.0
}

/// The report's text: a key in a column of 10, then the text.
#[derive(Default)]
struct Report(String);

impl Report {
    fn line(&mut self, k: &str, text: String) {
        self.0.push_str(&format!("{k:<10}{text}\n"));
    }
}

fn snapshot_lines(f: &Facts, out: &mut Report) {
    out.line(
        "snapshot",
        match (&f.snapshot, &f.snapshot_error) {
            (_, Some(e)) => format!("unreadable: {e}"),
            (Some(s), None) => format!(
                "{}, taken {} ({} kept in {})",
                s.id,
                ago(f.now, s.epoch),
                s.count,
                s.path
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            (None, None) => "none (run `lifeboat snapshot`)".into(),
        },
    );
}

fn rescue_lines(f: &Facts, out: &mut Report) {
    let r = match (&f.rescue.record, &f.rescue.error) {
        (_, Some(e)) => return out.line("rescue", format!("unreadable: {e}")),
        (None, None) => {
            return out.line(
                "rescue",
                format!("no image in {}", f.rescue.output.display()),
            )
        }
        (Some(r), None) => r,
    };
    out.line(
        "rescue",
        format!(
            "built {} ({}), kernel {}, layout {}{}",
            ago(f.now, f.rescue.built_epoch),
            r.built_at,
            r.kernel_version,
            r.layout.as_deref().unwrap_or("none"),
            r.backup
                .as_deref()
                .map(|g| format!(", belongs with backup {g}"))
                .unwrap_or_default()
        ),
    );
    let files: Vec<String> = r
        .files
        .iter()
        .map(|x| format!("{} {}", x.name, human_bytes(x.bytes)))
        .collect();
    out.line(
        "",
        format!("{}: {}", f.rescue.output.display(), files.join(", ")),
    );
}

fn backup_lines(f: &Facts, out: &mut Report) {
    let (destination, g, finished_epoch, verify, chain_damage) = match &f.backup {
        BackupFacts::NotConfigured => {
            return out.line("backup", "no backup.destination configured".into())
        }
        BackupFacts::Unreadable { destination, error } => {
            return out.line("backup", format!("{destination} unreadable: {error}"))
        }
        BackupFacts::Empty { destination } => {
            return out.line("backup", format!("none in {destination}"))
        }
        BackupFacts::Found {
            destination,
            generation,
            finished_epoch,
            verify,
            chain_damage,
        } => (
            destination,
            generation,
            finished_epoch,
            verify,
            chain_damage,
        ),
    };
    for d in chain_damage {
        out.line("damage", d.clone());
    }
    out.line(
        "backup",
        format!(
            "generation {} ({:?}), finished {}, {}, {} files, in {destination}",
            g.id,
            g.kind,
            ago(f.now, *finished_epoch),
            match g.result {
                crate::backup::generation::Outcome::Ok => "ok",
                crate::backup::generation::Outcome::Partial => "PARTIAL",
            },
            g.files
        ),
    );
    out.line(
        "verify",
        match verify {
            None => "never verified (`lifeboat backup verify`)".into(),
            Some(x) => format!(
                "{}, {}{}",
                if x.ok { "ok" } else { "DAMAGED" },
                ago(f.now, util::parse_rfc3339(&x.verified_at).ok()),
                x.problem
                    .as_ref()
                    .map(|p| format!(": {p}"))
                    .unwrap_or_default()
            ),
        },
    );
}

fn drift_lines(f: &Facts, out: &mut Report) {
    match &f.drift {
        Drift::Same { against } => out.line(
            "drift",
            format!("none: the image's layout matches {against}"),
        ),
        Drift::Drifted { against, changes } => {
            out.line(
                "drift",
                format!(
                    "the layout changed since the image was built ({} change{} in {against}):",
                    changes.len(),
                    if changes.len() == 1 { "" } else { "s" }
                ),
            );
            for c in changes {
                out.line("", format!("  {c}"));
            }
        }
        Drift::Unknown { reason } => out.line("drift", format!("unknown: {reason}")),
    }
}

/// The last scheduled run and the last drill.
fn run_lines(f: &Facts, out: &mut Report) {
    if let Some(r) = &f.last_run {
        out.line(
            "last run",
            format!(
                "{} {}: {}",
                r.finished_at,
                if r.ok { "ok" } else { "FAILED" },
                super::schedule::run_summary(r)
            ),
        );
    }
    if let Some(d) = &f.drill.last {
        out.line(
            "drill",
            format!(
                "{} {}{}, {}",
                d.started_at,
                match d.verdict {
                    crate::drill::report::Verdict::Passed => "passed",
                    crate::drill::report::Verdict::Failed => "FAILED",
                    crate::drill::report::Verdict::Error => "could not run",
                },
                d.problem
                    .as_ref()
                    .map(|p| format!(": {p}"))
                    .unwrap_or_default(),
                d.path.display()
            ),
        );
    }
    if let Some(e) = &f.drill.error {
        out.line("drill", format!("unreadable: {e}"));
    }
}

/// `check`: every failure, even of the configuration or the command line,
/// is UNKNOWN (3), never CRITICAL.
pub fn check(args: CheckArgs, opts: &LoadOptions) -> u8 {
    let nagios = args.nagios;
    let result = std::panic::catch_unwind(|| check_verdict(&args, opts));
    let v = match result {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => check::unknown(&format!("{e:#}"), None),
        Err(_) => check::unknown("internal error (panic); see stderr", None),
    };
    println!("{}", v.line());
    if !nagios {
        for p in &v.problems {
            println!("  {}: {}", p.state.name(), p.text);
        }
    }
    v.state.code()
}

fn check_verdict(args: &CheckArgs, opts: &LoadOptions) -> Result<Verdict> {
    let cfg = Config::load(opts)?;
    let mut t = Thresholds::from_config(&cfg);
    if let Some(w) = &args.warn_age {
        t.warn_age = util::parse_duration(w).map_err(|e| anyhow::anyhow!("--warn-age: {e}"))?;
    }
    if let Some(c) = &args.crit_age {
        t.crit_age = util::parse_duration(c).map_err(|e| anyhow::anyhow!("--crit-age: {e}"))?;
    }
    if t.warn_age > t.crit_age {
        bail!(
            "the warning age {} is longer than the critical age {}",
            fmt_duration(t.warn_age),
            fmt_duration(t.crit_age)
        );
    }
    let f = monitor::gather(&cfg, args.live || cfg.monitor.live.value, util::now_epoch());
    Ok(check::evaluate(&f, &t))
}
