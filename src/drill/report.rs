//! The drill's report: what ran, how long each phase took, the boot result
//! per firmware, the verdict with the failed step; written as JSON to
//! `STATE/drills/TIMESTAMP.json`, summarised on the terminal, and read back
//! by monitoring.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::machine::ScratchDisk;
use super::unit::BootReport;
use crate::util;

/// The folder of drill reports below the state folder.
pub const DRILLS_DIR: &str = "drills";

/// The steps of a drill, in order; a failed drill names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The rescue image boots and runs the job (drivers, job disk, share).
    RescueBoot,
    /// The layout's disks are found on the scratch machine (the plan).
    Mapping,
    /// Partitions, md, LUKS, LVM, file systems, mounts.
    Disks,
    Restore,
    /// Configuration and initramfs fixups.
    Fixup,
    Bootloader,
    /// The checks after recovery.
    Verify,
    /// The recovered disks boot to the system's boot target.
    RecoveredBoot,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::RescueBoot => "rescue boot",
            Step::Mapping => "mapping",
            Step::Disks => "disks",
            Step::Restore => "restore",
            Step::Fixup => "fixup",
            Step::Bootloader => "bootloader",
            Step::Verify => "verify",
            Step::RecoveredBoot => "recovered boot",
        }
    }
}

/// How a drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Passed,
    Failed,
    /// The drill could not run (QEMU failed, the host ran out of space...):
    /// says nothing about the backup.
    Error,
}

impl Verdict {
    /// The exit code of `lifeboat drill`.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Passed => 0,
            Verdict::Failed => 1,
            Verdict::Error => 2,
        }
    }
}

/// One timed phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

/// One boot of the recovered disks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Boot {
    pub firmware: String,
    pub passed: bool,
    pub seconds: f64,
    /// What the recovered system reported.
    pub report: Option<BootReport>,
    /// Why it failed, or what to know.
    pub detail: Option<String>,
}

/// One recovery (one per rescue firmware) and the boots after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// The firmware the rescue image booted under.
    pub firmware: String,
    pub recovered: bool,
    pub recovery_seconds: f64,
    /// `lifeboat recover`'s own report (files checked against the manifest,
    /// layout re-captured and compared), as it wrote it.
    pub recovery_report: Option<serde_json::Value>,
    pub boots: Vec<Boot>,
    pub failed_step: Option<Step>,
    pub detail: Option<String>,
}

/// What the drill used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub hostname: String,
    pub layout: String,
    pub backup: String,
    pub generation: String,
    pub rescue_dir: String,
    pub rescue_kernel: String,
    pub rescue_built_at: String,
    pub accel: String,
    pub accel_note: String,
    pub memory_mib: u32,
    pub cpus: u32,
}

/// The report of one drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub lifeboat_version: String,
    pub started_at: String,
    pub finished_at: String,
    /// The whole drill: the recovery time objective this backup gives on
    /// this hardware class (recovery plus first boot).
    pub seconds: f64,
    pub verdict: Verdict,
    pub failed_step: Option<Step>,
    /// One line: why the drill failed or could not run.
    pub problem: Option<String>,
    pub inputs: Inputs,
    pub disks: Vec<ScratchDisk>,
    pub phases: Vec<Phase>,
    pub runs: Vec<Run>,
    /// The QEMU command line that boots the kept scratch disks (--keep).
    pub kept: Option<String>,
}

impl Report {
    /// The verdict from the runs: the first failed step of any run.
    pub fn judge(runs: &[Run]) -> (Verdict, Option<Step>, Option<String>) {
        for r in runs {
            if let Some(s) = r.failed_step {
                let detail = r.detail.clone().unwrap_or_default();
                return (
                    Verdict::Failed,
                    Some(s),
                    Some(format!(
                        "{} failed (rescue under {}): {detail}",
                        s.name(),
                        r.firmware
                    )),
                );
            }
        }
        if runs.is_empty() {
            return (Verdict::Error, None, Some("no recovery ran".into()));
        }
        (Verdict::Passed, None, None)
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let i = &self.inputs;
        s.push_str(&format!(
            "drill of {} from {} (generation {}), rescue image {} (kernel {}), {} {} vCPU {} MiB\n",
            i.hostname,
            i.backup,
            i.generation,
            i.rescue_dir,
            i.rescue_kernel,
            i.accel,
            i.cpus,
            i.memory_mib
        ));
        for d in &self.disks {
            s.push_str(&format!(
                "  disk {} -> {} {} {}\n",
                d.source,
                d.bus.name(),
                util::human_bytes(d.size_bytes),
                d.serial
                    .as_deref()
                    .map(|x| format!("serial {x}"))
                    .unwrap_or_default()
            ));
        }
        for p in &self.phases {
            s.push_str(&format!("  {:>7.1}s  {}\n", p.seconds, p.name));
        }
        for r in &self.runs {
            for b in &r.boots {
                let what = match (&b.report, b.passed) {
                    (Some(rep), true) => format!(
                        "reached {} ({}, kernel {}{})",
                        rep.target,
                        rep.state,
                        rep.kernel,
                        if rep.failed_units.is_empty() {
                            String::new()
                        } else {
                            format!(", failed units: {}", rep.failed_units.join(" "))
                        }
                    ),
                    _ => format!("FAILED: {}", b.detail.as_deref().unwrap_or("no report")),
                };
                s.push_str(&format!(
                    "  recovered under {}, booted under {}: {what}\n",
                    r.firmware, b.firmware
                ));
            }
        }
        let verdict = match (self.verdict, &self.problem) {
            (Verdict::Passed, _) => {
                format!("PASSED in {}", util::human_duration(self.seconds as i64))
            }
            (Verdict::Failed, p) => format!("FAILED: {}", p.as_deref().unwrap_or("")),
            (Verdict::Error, p) => format!("could not run: {}", p.as_deref().unwrap_or("")),
        };
        s.push_str(&format!("lifeboat drill: {verdict}\n"));
        if let Some(k) = &self.kept {
            s.push_str(&format!("scratch disks kept; boot them with:\n{k}\n"));
        }
        s
    }
}

/// The drill reports of a state folder.
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join(DRILLS_DIR),
        }
    }

    /// Writes `r` as `TIMESTAMP.json` (the start time); returns the path.
    pub fn save(&self, r: &Report, started_epoch: i64) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self
            .dir
            .join(format!("{}.json", util::stamp(started_epoch)));
        let json = serde_json::to_string_pretty(r)? + "\n";
        util::write_atomic(&path, json.as_bytes(), 0o644)?;
        Ok(path)
    }

    /// Report files, oldest first (names sort by time).
    pub fn list(&self) -> Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.dir.display())),
        };
        let mut out: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".json") && !name.starts_with('.')
            })
            .collect();
        out.sort();
        Ok(out)
    }

    pub fn load(path: &Path) -> Result<Report> {
        let data = util::read_regular(path, "drill report", 16 << 20)?;
        serde_json::from_slice(&data)
            .with_context(|| format!("reading the drill report {}", path.display()))
    }
}

/// The last drill and the last passed one, for monitoring.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DrillFacts {
    pub last: Option<LastDrill>,
    /// The newest drill that ran to a verdict, when it failed: a later
    /// drill that could not run does not hide it.
    pub last_failed: Option<LastDrill>,
    pub last_passed_at: Option<String>,
    #[serde(skip)]
    pub last_passed_epoch: Option<i64>,
    /// The reports could not be read.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastDrill {
    pub path: PathBuf,
    pub started_at: String,
    pub verdict: Verdict,
    pub failed_step: Option<Step>,
    pub problem: Option<String>,
    pub seconds: f64,
}

impl DrillFacts {
    pub fn gather(state_dir: &Path) -> DrillFacts {
        let store = Store::new(state_dir);
        let list = match store.list() {
            Ok(l) => l,
            Err(e) => {
                return DrillFacts {
                    error: Some(format!("{e:#}")),
                    ..DrillFacts::default()
                }
            }
        };
        let mut facts = DrillFacts::default();
        for path in list.iter().rev() {
            let r = match Store::load(path) {
                Ok(r) => r,
                Err(e) if facts.last.is_none() => {
                    facts.error = Some(format!("{e:#}"));
                    return facts;
                }
                Err(_) => continue,
            };
            let this = LastDrill {
                path: path.clone(),
                started_at: r.started_at.clone(),
                verdict: r.verdict,
                failed_step: r.failed_step,
                problem: r.problem.clone(),
                seconds: r.seconds,
            };
            if facts.last.is_none() {
                facts.last = Some(this.clone());
            }
            if r.verdict == Verdict::Failed && facts.last_passed_at.is_none() {
                facts.last_failed.get_or_insert(this);
            }
            if r.verdict == Verdict::Passed {
                facts.last_passed_epoch = util::parse_rfc3339(&r.finished_at).ok();
                facts.last_passed_at = Some(r.finished_at);
                break;
            }
        }
        facts
    }
}
