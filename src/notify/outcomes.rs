//! The notice of each outcome: a scheduled run, a drill, a verify, a
//! failed unit.

use std::path::Path;

use anyhow::{bail, Result};

use super::{last_notice, Event, LastNotice, Notice, Status};
use crate::drill::report::{Report, Verdict as DrillVerdict};
use crate::exec::Cmd;
use crate::layout::Change;
use crate::schedule::run::LastRun;

/// The notice of a scheduled run: failed, warning (a partial backup) or
/// drift (the layout changed since the last snapshot, `changes`); `None`
/// when all went well.
pub fn of_run(last: &LastRun, changes: &[Change], partial_backup: bool) -> Option<Notice> {
    let mut detail = String::new();
    if let Some(e) = &last.error {
        detail.push_str(&format!("error: {e}\n"));
    }
    if partial_backup {
        if let Some(b) = &last.backup {
            detail.push_str(&format!(
                "backup {b} is partial: some files could not be read\n"
            ));
        }
    }
    if !changes.is_empty() {
        detail.push_str("layout changes since the previous snapshot:\n");
        for c in changes {
            detail.push_str(&format!("  {c}\n"));
        }
        if let Some(s) = &last.stored {
            detail.push_str(&format!("stored as snapshot {s}\n"));
        }
    }
    if !last.reasons.is_empty() {
        let done = if last.rebuilt {
            "rebuilt"
        } else {
            "to rebuild"
        };
        detail.push_str(&format!(
            "rescue image {done}: {}\n",
            last.reasons.join("; ")
        ));
    }
    detail.push_str(&format!(
        "run {} .. {}\n",
        last.started_at, last.finished_at
    ));
    let (event, summary) = match (&last.error, partial_backup, changes.len()) {
        (Some(e), _, _) => (Event::RunFailed, format!("scheduled run failed: {e}")),
        (None, true, _) => (
            Event::RunWarning,
            "scheduled run: the backup is partial".into(),
        ),
        (None, false, 0) => return None,
        (None, false, n) => (
            Event::Drift,
            format!(
                "the layout changed ({n} change{}); check the rescue image is current",
                if n == 1 { "" } else { "s" }
            ),
        ),
    };
    Some(Notice::new(event, summary, detail))
}

/// The notice of a failed drill (`report`), or one that could not run
/// (`error`).
pub fn of_drill(report: Result<&Report, &anyhow::Error>, path: Option<&Path>) -> Option<Notice> {
    match report {
        Err(e) => Some(Notice::new(
            Event::DrillFailed,
            format!("drill could not run: {e:#}"),
            String::new(),
        )),
        Ok(r) if r.verdict == DrillVerdict::Passed => None,
        Ok(r) => {
            let mut detail = r.summary();
            if let Some(p) = path {
                detail.push_str(&format!("report: {}\n", p.display()));
            }
            let what = match r.verdict {
                DrillVerdict::Error => "drill could not run",
                _ => "drill failed",
            };
            let summary = format!(
                "{what}: {}",
                r.problem.as_deref().unwrap_or("see the report")
            );
            Some(Notice::new(Event::DrillFailed, summary, detail))
        }
    }
}

/// The notice of a failed `backup verify` of `from`: `problem` and its
/// details, or the error that stopped it.
pub fn of_verify(from: &str, outcome: Result<(&str, &str), &anyhow::Error>) -> Notice {
    match outcome {
        Ok((problem, detail)) => Notice::new(
            Event::VerifyFailed,
            format!("backup in {from} is damaged: {problem}"),
            detail,
        ),
        Err(e) => Notice::new(
            Event::VerifyFailed,
            format!("backup verify of {from} could not run: {e:#}"),
            String::new(),
        ),
    }
}

/// The notice of a rescue image copy to `destination` that failed; the
/// image in `output` is kept.
pub fn of_rescue_copy(destination: &str, output: &Path, e: &anyhow::Error) -> Notice {
    Notice::new(
        Event::RescueCopyFailed,
        format!("copying the rescue image to {destination} failed: {e:#}"),
        format!(
            "The rescue image in {} is kept; the copy off the host is missing or older.\n\
             The next build or scheduled run tries again.\n",
            output.display()
        ),
    )
}

/// A unit name as systemd passes `%i` to `lifeboat-notify@.service`:
/// letters, digits and `:-_.\@`, not an option.
pub fn check_unit_name(unit: &str) -> Result<()> {
    let ok = !unit.is_empty()
        && unit.len() <= 256
        && !unit.starts_with('-')
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if !ok {
        bail!("{unit:?} is not a systemd unit name (letters, digits and :-_.\\@ only)");
    }
    Ok(())
}

/// Whether the process `main_pid` (the failed unit's last main process)
/// already sent a failure or warning notice: the one in `last`.
pub fn already_reported(last: Option<&LastNotice>, main_pid: Option<u32>) -> bool {
    match (last, main_pid) {
        (Some(l), Some(pid)) => pid != 0 && l.pid == pid && l.notice.status != Status::Test,
        _ => false,
    }
}

/// The notice for `lifeboat notify --failed-unit UNIT`, with the unit's
/// `systemctl status`; `None` when the unit's process already reported
/// its failure itself (a failed scheduled run sends its own notice).
pub fn of_failed_unit(unit: &str, state_dir: &Path) -> Result<Option<Notice>> {
    check_unit_name(unit)?;
    let main_pid = Cmd::new("systemctl")
        .args(["show", "--property=ExecMainPID", "--value", "--", unit])
        .read()
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if already_reported(last_notice(state_dir).as_ref(), main_pid) {
        log::info!("{unit}: its process already sent a notice of this failure");
        return Ok(None);
    }
    let status = Cmd::new("systemctl")
        .args(["status", "--no-pager", "--full", "--lines=30", "--", unit])
        .output_any()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("systemctl status {unit}: {e:#}\n"));
    let mut n = Notice::new(Event::UnitFailed, format!("unit {unit} failed"), status);
    n.unit = Some(unit.to_string());
    Ok(Some(n))
}
