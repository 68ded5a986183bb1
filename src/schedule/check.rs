//! Judging the facts: `lifeboat check` (a Nagios/Icinga plugin) and the
//! verdict line of `lifeboat status`.
//!
//! Plugin output: one line, `LIFEBOAT STATE - worst problem[; others] |
//! rescue_age=NNs;WARN;CRIT backup_age=NNs;WARN;CRIT drift=0|1`, exit 0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN. A value that cannot be determined is
//! `U` in the performance data.

use serde::Serialize;

use super::monitor::{BackupFacts, Drift, Facts};
use crate::backup::generation::Outcome;
use crate::config::{fmt_duration, AlertLevel, Config};
use crate::util::human_duration;

/// Plugin states, ordered by how bad they are: a known CRITICAL outranks
/// an UNKNOWN part, which outranks a WARNING.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum State {
    Ok,
    Warning,
    Unknown,
    Critical,
}

impl State {
    /// The plugin exit code.
    pub fn code(self) -> u8 {
        match self {
            State::Ok => 0,
            State::Warning => 1,
            State::Critical => 2,
            State::Unknown => 3,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            State::Ok => "OK",
            State::Warning => "WARNING",
            State::Critical => "CRITICAL",
            State::Unknown => "UNKNOWN",
        }
    }
}

/// Ages that warn and go critical, and how drift and a missing backup count.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Thresholds {
    pub warn_age: i64,
    pub crit_age: i64,
    #[serde(skip)]
    pub drift: AlertLevel,
    pub require_backup: bool,
    /// The last passed drill older than this warns.
    pub drill_warn_age: i64,
    /// Judge drills before the first one ran.
    pub require_drill: bool,
}

impl Thresholds {
    pub fn from_config(cfg: &Config) -> Thresholds {
        Thresholds {
            warn_age: cfg.monitor.warn_age.value.0,
            crit_age: cfg.monitor.crit_age.value.0,
            drift: cfg.monitor.drift.value.0,
            require_backup: cfg.monitor.require_backup.value,
            drill_warn_age: cfg.monitor.drill_warn_age.value.0,
            require_drill: cfg.monitor.require_drill.value,
        }
    }

    fn age_state(&self, age: i64) -> State {
        if age >= self.crit_age {
            State::Critical
        } else if age >= self.warn_age {
            State::Warning
        } else {
            State::Ok
        }
    }

    fn limit(&self, s: State) -> String {
        match s {
            State::Critical => format!("critical at {}", fmt_duration(self.crit_age)),
            _ => format!("warning at {}", fmt_duration(self.warn_age)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub state: State,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub state: State,
    /// Worst first.
    pub problems: Vec<Problem>,
    /// What is fine, for the OK line.
    pub summary: String,
    pub perfdata: String,
}

impl Verdict {
    /// The plugin's output line.
    pub fn line(&self) -> String {
        let text = if self.problems.is_empty() {
            self.summary.clone()
        } else {
            let mut t = self.problems[0].text.clone();
            if self.problems.len() > 1 {
                let rest: Vec<&str> = self.problems[1..].iter().map(|p| p.text.as_str()).collect();
                t.push_str(&format!("; also: {}", rest.join("; ")));
            }
            t
        };
        // '|' starts the performance data; the output is one line.
        let text = text.replace('|', "/").replace(['\n', '\r'], " ");
        format!(
            "LIFEBOAT {} - {text} | {}",
            self.state.name(),
            self.perfdata
        )
    }
}

fn age(now: i64, then: Option<i64>) -> Option<i64> {
    then.map(|t| (now - t).max(0))
}

/// Judges `f` against `t`.
pub fn evaluate(f: &Facts, t: &Thresholds) -> Verdict {
    let mut problems: Vec<Problem> = Vec::new();
    let mut fine: Vec<String> = Vec::new();
    let mut push = |state: State, text: String| problems.push(Problem { state, text });
    let rescue_age = judge_rescue(f, t, &mut push, &mut fine);
    judge_copy(f, &mut push, &mut fine);
    for stale in f.rescue.record.iter().flat_map(crate::rescue::media::stale) {
        push(State::Warning, stale);
    }
    judge_drift(f, t, &mut push, &mut fine);
    let backup_age = judge_backup(f, t, &mut push, &mut fine);
    judge_runs(f, &mut push);
    let drill_age = judge_drills(f, t, &mut push, &mut fine);

    // Worst first; a stable sort keeps the order of the checks among equals.
    problems.sort_by_key(|p| std::cmp::Reverse(p.state));
    let state = problems.first().map(|p| p.state).unwrap_or(State::Ok);
    Verdict {
        state,
        problems,
        summary: fine.join(", "),
        perfdata: perfdata(f, t, rescue_age, backup_age, drill_age),
    }
}

/// The rescue image: present, readable, fresh. Returns its age.
fn judge_rescue(
    f: &Facts,
    t: &Thresholds,
    push: &mut dyn FnMut(State, String),
    fine: &mut Vec<String>,
) -> Option<i64> {
    let rescue_age = age(f.now, f.rescue.built_epoch);
    match (&f.rescue.record, &f.rescue.error, rescue_age) {
        (_, Some(e), _) => push(
            State::Unknown,
            format!("rescue image record unreadable: {e}"),
        ),
        (None, None, _) => push(
            State::Critical,
            format!(
                "no rescue image in {} (run lifeboat mkrescue)",
                f.rescue.output.display()
            ),
        ),
        (Some(r), None, None) => push(
            State::Unknown,
            format!("rescue image has a bad build time {:?}", r.built_at),
        ),
        (Some(_), None, Some(a)) => match t.age_state(a) {
            State::Ok => fine.push(format!("rescue image {} old", human_duration(a))),
            s => push(
                s,
                format!(
                    "stale rescue image: built {} ago ({})",
                    human_duration(a),
                    t.limit(s)
                ),
            ),
        },
    }
    rescue_age
}

/// The copy of the image off the host (`rescue.destination`): missing,
/// failed or older than the image warns.
fn judge_copy(f: &Facts, push: &mut dyn FnMut(State, String), fine: &mut Vec<String>) {
    use crate::rescue::copy::CopyFacts;
    let Some(image) = &f.rescue.record else {
        // No image is already critical above.
        return;
    };
    match &f.rescue_copy {
        CopyFacts::NotConfigured => {}
        CopyFacts::Unreadable { destination, error } => push(
            State::Warning,
            format!(
                "the record of the rescue image copies to {destination} is unreadable: {error}"
            ),
        ),
        CopyFacts::Missing { destination, error } => push(
            State::Warning,
            match error {
                Some(e) => format!("copying the rescue image to {destination} failed: {e}"),
                None => format!(
                    "the rescue image was never copied to {destination} (rescue.destination; \
                     run lifeboat mkrescue)"
                ),
            },
        ),
        CopyFacts::Copied {
            destination,
            copy,
            current,
            error,
            ..
        } => match (error, current) {
            (Some(e), _) => push(
                State::Warning,
                format!(
                    "copying the rescue image to {destination} failed: {e} (the copy there, {}, \
                     holds the image built {})",
                    copy.name, copy.image_built_at
                ),
            ),
            (None, false) => push(
                State::Warning,
                format!(
                    "the copy of the rescue image in {destination} ({}) is older than the image \
                     (built {}, the copy holds the one built {})",
                    copy.name, image.built_at, copy.image_built_at
                ),
            ),
            (None, true) => fine.push(format!("image copied to {destination}")),
        },
    }
}

/// Layout drift since the rescue image was built.
fn judge_drift(
    f: &Facts,
    t: &Thresholds,
    push: &mut dyn FnMut(State, String),
    fine: &mut Vec<String>,
) {
    match &f.drift {
        Drift::Same { .. } => fine.push("layout unchanged".into()),
        Drift::Drifted { against, changes } => push(
            match t.drift {
                AlertLevel::Warning => State::Warning,
                AlertLevel::Critical => State::Critical,
            },
            format!(
                "layout drifted since the rescue image was built ({} change{} in {against}, first: {})",
                changes.len(),
                if changes.len() == 1 { "" } else { "s" },
                changes[0].message
            ),
        ),
        Drift::Unknown { reason } => match &f.rescue.record {
            // No image is already critical above.
            None => {}
            // Recovery reads the layout from the image: a finding, not an
            // error of the check.
            Some(r) if r.layout.is_none() => push(
                State::Warning,
                "the rescue image has no layout built in (mkrescue --layout, rescue.layout, \
                 or snapshot --rebuild-rescue)"
                    .into(),
            ),
            Some(_) => push(State::Unknown, format!("drift unknown: {reason}")),
        },
    }
}

/// The newest backup and its verification. Returns its age.
fn judge_backup(
    f: &Facts,
    t: &Thresholds,
    push: &mut dyn FnMut(State, String),
    fine: &mut Vec<String>,
) -> Option<i64> {
    let mut backup_age = None;
    match &f.backup {
        BackupFacts::NotConfigured if t.require_backup => push(
            State::Critical,
            "no backup: backup.destination is not set (or set monitor.require_backup = false)"
                .into(),
        ),
        BackupFacts::NotConfigured => {}
        BackupFacts::Unreadable { destination, error } => push(
            State::Unknown,
            format!("backup {destination} unreadable: {error}"),
        ),
        BackupFacts::Empty { destination } => {
            if t.require_backup {
                push(State::Critical, format!("no backup in {destination}"))
            }
        }
        BackupFacts::Found {
            generation: g,
            finished_epoch,
            verify,
            chain_damage,
            ..
        } => {
            for d in chain_damage {
                push(State::Critical, format!("backup damaged: {d}"));
            }
            if let Some(v) = verify.as_ref().filter(|v| !v.ok) {
                push(
                    State::Critical,
                    format!(
                        "backup verify failed for generation {}: {}",
                        g.id,
                        v.problem.as_deref().unwrap_or("damaged")
                    ),
                );
            }
            backup_age = age(f.now, *finished_epoch);
            match backup_age {
                None => push(
                    State::Unknown,
                    format!("backup {} has a bad finish time {:?}", g.id, g.finished_at),
                ),
                Some(a) => match t.age_state(a) {
                    State::Ok => fine.push(format!("backup {} old", human_duration(a))),
                    s => push(
                        s,
                        format!(
                            "stale backup: generation {} finished {} ago ({})",
                            g.id,
                            human_duration(a),
                            t.limit(s)
                        ),
                    ),
                },
            }
            if g.result == Outcome::Partial {
                push(
                    State::Warning,
                    format!(
                        "backup {} is partial: {} files unreadable",
                        g.id, g.warnings.unreadable
                    ),
                );
            }
            match verify {
                Some(v) if v.ok => fine.push("verified".into()),
                Some(_) => {}
                None => fine.push("not verified yet".into()),
            }
        }
    }
    backup_age
}

/// The last scheduled run and the snapshot records.
fn judge_runs(f: &Facts, push: &mut dyn FnMut(State, String)) {
    if let Some(r) = &f.last_run {
        if !r.ok {
            push(
                State::Warning,
                format!(
                    "last scheduled run failed at {}: {}",
                    r.finished_at,
                    r.error.as_deref().unwrap_or("unknown error")
                ),
            );
        }
    }
    if let Some(e) = &f.snapshot_error {
        push(State::Unknown, format!("snapshots unreadable: {e}"));
    }
}

/// The plugin's performance data.
fn perfdata(
    f: &Facts,
    t: &Thresholds,
    rescue_age: Option<i64>,
    backup_age: Option<i64>,
    drill_age: Option<Option<i64>>,
) -> String {
    let perf_age = |name: &str, a: Option<i64>| {
        format!(
            "{name}={};{};{}",
            a.map(|a| format!("{a}s")).unwrap_or_else(|| "U".into()),
            t.warn_age,
            t.crit_age
        )
    };
    let mut perfdata = format!(
        "{} {} drift={}",
        perf_age("rescue_age", rescue_age),
        perf_age("backup_age", backup_age),
        f.drift.perf()
    );
    if let Some(a) = drill_age {
        let age = a.map(|a| format!("{a}s")).unwrap_or_else(|| "U".into());
        perfdata.push_str(&format!(" drill_age={age};{};", t.drill_warn_age));
    }
    perfdata
}

/// The drill checks, on once a drill ran or with `monitor.require_drill`:
/// CRITICAL when the last drill failed, WARNING when the last passed one is
/// older than `drill_warn_age` (or there is none). Returns the age of the
/// last passed drill for the performance data (`None`: checks off).
fn judge_drills(
    f: &Facts,
    t: &Thresholds,
    push: &mut dyn FnMut(State, String),
    fine: &mut Vec<String>,
) -> Option<Option<i64>> {
    use crate::drill::report::Verdict as Drill;
    let d = &f.drill;
    if let Some(e) = &d.error {
        push(State::Unknown, format!("drill reports unreadable: {e}"));
        return Some(None);
    }
    if d.last.is_none() && !t.require_drill {
        return None;
    }
    let passed_age = age(f.now, d.last_passed_epoch);
    if let Some(l) = &d.last_failed {
        push(
            State::Critical,
            format!(
                "the last recovery drill ({}) failed: {}",
                l.started_at,
                l.problem.as_deref().unwrap_or("see its report")
            ),
        );
    }
    match &d.last {
        None => push(
            State::Warning,
            "no recovery drill has run (run lifeboat drill, or set monitor.require_drill = false)"
                .into(),
        ),
        Some(l) if l.verdict == Drill::Error => push(
            State::Warning,
            format!(
                "the last recovery drill ({}) could not run: {}",
                l.started_at,
                l.problem.as_deref().unwrap_or("see its report")
            ),
        ),
        Some(_) => {}
    }
    match passed_age {
        Some(a) if a >= t.drill_warn_age => push(
            State::Warning,
            format!(
                "the last passed recovery drill is {} old (warning at {})",
                human_duration(a),
                fmt_duration(t.drill_warn_age)
            ),
        ),
        Some(a) => fine.push(format!("drill passed {} ago", human_duration(a))),
        None if d.last.is_some() => push(State::Warning, "no recovery drill has passed yet".into()),
        None => {}
    }
    Some(passed_age)
}

/// A verdict for a check that could not run at all.
pub fn unknown(reason: &str, t: Option<&Thresholds>) -> Verdict {
    let (w, c) = t.map(|t| (t.warn_age, t.crit_age)).unwrap_or((0, 0));
    let perfdata = if t.is_some() {
        format!("rescue_age=U;{w};{c} backup_age=U;{w};{c} drift=U")
    } else {
        "rescue_age=U;; backup_age=U;; drift=U".into()
    };
    Verdict {
        state: State::Unknown,
        problems: vec![Problem {
            state: State::Unknown,
            text: reason.to_string(),
        }],
        summary: String::new(),
        perfdata,
    }
}
