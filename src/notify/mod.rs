//! Telling the admin: `[notify] mail_to` (through the local `sendmail -t`)
//! and `[notify] command` (any program, the outcome in its environment and
//! as JSON on stdin), for a failed or warning scheduled run, a layout that
//! drifted, a failed verify or drill, and a failed lifeboat unit
//! (`lifeboat notify --failed-unit`, from the units' `OnFailure=`).
//!
//! Every outcome goes through [`send`]: it tries each configured channel,
//! logs a channel that fails, and never fails the job that called it.
//! The last notice is recorded in `STATE/last-notice.json` (with the pid
//! of the process that sent it), so that `--failed-unit` does not repeat
//! a failure its process already reported. The notices of each outcome
//! are built in outcomes.rs.

use std::ffi::OsStr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::exec::{Cmd, CommandError};
use crate::util;

mod outcomes;
pub use outcomes::{
    already_reported, check_unit_name, of_drill, of_failed_unit, of_rescue_copy, of_run, of_verify,
};

pub const LAST_NOTICE_FILE: &str = "last-notice.json";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// The scheduled run (`lifeboat snapshot ...`) failed.
    RunFailed,
    /// The scheduled run finished with a warning (a partial backup).
    RunWarning,
    /// The layout changed since the last snapshot.
    Drift,
    /// `backup verify` found damage or could not run.
    VerifyFailed,
    /// A drill failed or could not run.
    DrillFailed,
    /// The rescue image could not be copied to `rescue.destination`.
    RescueCopyFailed,
    /// A lifeboat unit failed (`notify --failed-unit`).
    UnitFailed,
    /// `notify --test`.
    Test,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::RunFailed => "run-failed",
            Event::RunWarning => "run-warning",
            Event::Drift => "drift",
            Event::VerifyFailed => "verify-failed",
            Event::DrillFailed => "drill-failed",
            Event::RescueCopyFailed => "rescue-copy-failed",
            Event::UnitFailed => "unit-failed",
            Event::Test => "test",
        }
    }

    /// How bad it is.
    pub fn status(self) -> Status {
        match self {
            Event::RunFailed | Event::VerifyFailed | Event::DrillFailed | Event::UnitFailed => {
                Status::Failed
            }
            Event::RunWarning | Event::Drift | Event::RescueCopyFailed => Status::Warning,
            Event::Test => Status::Test,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Failed,
    Warning,
    Test,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Failed => "failed",
            Status::Warning => "warning",
            Status::Test => "test",
        }
    }
}

/// One notice: what the mail says and the command receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub event: Event,
    pub status: Status,
    pub host: String,
    pub time: String,
    /// One line.
    pub summary: String,
    /// The details, several lines.
    pub detail: String,
    /// The failed unit (`unit-failed`).
    pub unit: Option<String>,
    pub lifeboat_version: String,
}

impl Notice {
    pub fn new(event: Event, summary: impl Into<String>, detail: impl Into<String>) -> Notice {
        Notice {
            event,
            status: event.status(),
            host: hostname(),
            time: util::rfc3339(util::now_epoch()),
            summary: one_line(&summary.into()),
            detail: detail.into(),
            unit: None,
            lifeboat_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The environment the command gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LIFEBOAT_EVENT", self.event.name().to_string()),
            ("LIFEBOAT_STATUS", self.status.name().to_string()),
            ("LIFEBOAT_HOST", self.host.clone()),
            ("LIFEBOAT_TIME", self.time.clone()),
            ("LIFEBOAT_SUMMARY", self.summary.clone()),
            ("LIFEBOAT_DETAIL", truncate(&self.detail, DETAIL_ENV_MAX)),
            ("LIFEBOAT_UNIT", self.unit.clone().unwrap_or_default()),
        ]
    }

    /// The mail to `to`, as `sendmail -t` reads it.
    pub fn mail(&self, to: &[String]) -> String {
        let subject = format!(
            "lifeboat on {}: {}: {}",
            self.host,
            self.status.name(),
            self.summary
        );
        let mut m = String::new();
        m.push_str(&format!("To: {}\n", to.join(", ")));
        m.push_str(&format!("Subject: {}\n", header_text(&subject)));
        m.push_str("Auto-Submitted: auto-generated\n");
        m.push_str("MIME-Version: 1.0\n");
        m.push_str("Content-Type: text/plain; charset=utf-8\n");
        m.push_str("Content-Transfer-Encoding: 8bit\n");
        m.push_str(&format!("X-Lifeboat-Event: {}\n\n", self.event.name()));
        m.push_str(&format!(
            "{}\n\nhost:   {}\nevent:  {}\ntime:   {}\n",
            self.summary,
            self.host,
            self.event.name(),
            self.time
        ));
        if let Some(u) = &self.unit {
            m.push_str(&format!("unit:   {u}\n"));
        }
        if !self.detail.trim().is_empty() {
            m.push('\n');
            m.push_str(self.detail.trim_end());
            m.push('\n');
        }
        m
    }
}

/// The most of the detail that goes into the environment (the kernel
/// refuses one string over 128 KiB); stdin has all of it.
const DETAIL_ENV_MAX: usize = 32 * 1024;

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n[cut; the whole text is on stdin]\n", &text[..end])
}

pub use crate::util::hostname;

/// `text` on one line: control characters become spaces, at most 300
/// characters.
fn one_line(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let t = t.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

/// A header value: one line; RFC 2047 Q-encoded when not plain ASCII.
fn header_text(text: &str) -> String {
    let t = one_line(text);
    if t.is_ascii() {
        return t;
    }
    let mut enc = String::from("=?UTF-8?Q?");
    for b in t.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'/' | b':' => {
                enc.push(b as char)
            }
            b' ' => enc.push('_'),
            _ => enc.push_str(&format!("={b:02X}")),
        }
    }
    enc.push_str("?=");
    enc
}

/// A mail address `sendmail -t` can take from a `To:` line: no spaces,
/// commas, angle brackets, quotes or control characters, not an option.
pub fn valid_address(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= 254
        && !a.starts_with('-')
        && a.chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ',' | '<' | '>' | '"' | ';' | '\\'))
}

/// How one channel went.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// `mail to root` or `command /usr/local/bin/page`.
    pub channel: String,
    pub error: Option<String>,
}

/// Whether any channel is configured.
pub fn configured(cfg: &Config) -> bool {
    !cfg.notify.mail_to.value.is_empty() || cfg.notify.command.value.is_some()
}

/// Sends `notice` through every configured channel. A channel that fails
/// is logged as a warning and reported in the result; the caller's job
/// goes on.
pub fn send(cfg: &Config, notice: &Notice) -> Vec<Delivery> {
    let mut out = Vec::new();
    let timeout = cfg.notify.timeout.value.0;
    let to = &cfg.notify.mail_to.value;
    if !to.is_empty() {
        let r = send_mail(&cfg.notify.sendmail.value, to, notice, timeout);
        out.push(delivery(format!("mail to {}", to.join(", ")), r));
    }
    if let Some(c) = &cfg.notify.command.value {
        let r = run_command(c, notice, timeout);
        out.push(delivery(format!("command {c}"), r));
    }
    if !out.is_empty() {
        record(&cfg.state_dir.value, notice);
    }
    out
}

fn delivery(channel: String, r: Result<()>) -> Delivery {
    match r {
        Ok(()) => {
            log::info!("notified ({channel})");
            Delivery {
                channel,
                error: None,
            }
        }
        Err(e) => {
            let error = format!("{e:#}");
            log::warn!("notification failed ({channel}): {error}");
            Delivery {
                channel,
                error: Some(error),
            }
        }
    }
}

/// `program args...` under coreutils `timeout`, so that a notifier that
/// hangs (a mail server that never answers) cannot hold up the job.
fn limited(timeout: i64, program: &OsStr, args: &[&str]) -> Cmd {
    Cmd::new("timeout")
        .args(["--kill-after=5", &format!("{}s", timeout.max(1))])
        .arg(program)
        .args(args)
}

/// Runs `cmd`; the exit code 124 of `timeout` is said in words.
fn run_limited(cmd: Cmd, timeout: i64) -> Result<()> {
    match cmd.run() {
        Err(e)
            if e.downcast_ref::<CommandError>()
                .is_some_and(|c| c.code == 124) =>
        {
            bail!("no answer after {timeout} s (notify.timeout); stopped")
        }
        other => other.map(drop),
    }
}

fn send_mail(sendmail: &Path, to: &[String], notice: &Notice, timeout: i64) -> Result<()> {
    let Some(program) = crate::exec::which(&sendmail.to_string_lossy()) else {
        bail!(
            "{} is not installed; install a mail transfer agent (exim4, postfix, \
             msmtp-mta, nullmailer) or set notify.sendmail",
            sendmail.display()
        );
    };
    let cmd = limited(timeout, program.as_os_str(), &["-t", "-oi"]).stdin(notice.mail(to));
    run_limited(cmd, timeout)
        .with_context(|| format!("sending mail through {}", sendmail.display()))
}

fn run_command(command: &str, notice: &Notice, timeout: i64) -> Result<()> {
    let mut json = serde_json::to_string_pretty(notice)?;
    json.push('\n');
    let mut cmd = limited(timeout, OsStr::new("/bin/sh"), &["-c", command]).stdin(json);
    for (k, v) in notice.env() {
        cmd = cmd.env(k, v);
    }
    run_limited(cmd, timeout).with_context(|| format!("running the notify command {command:?}"))
}

/// `STATE/last-notice.json`: the last notice and the process that sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastNotice {
    pub pid: u32,
    pub notice: Notice,
}

fn record(state_dir: &Path, notice: &Notice) {
    if !state_dir.is_dir() {
        // Nothing ran here yet (a first `notify --test`): no failure to
        // tell apart later.
        return;
    }
    let last = LastNotice {
        pid: std::process::id(),
        notice: notice.clone(),
    };
    let r = serde_json::to_vec_pretty(&last)
        .map_err(anyhow::Error::from)
        .and_then(|j| util::write_atomic(&state_dir.join(LAST_NOTICE_FILE), &j, 0o644));
    if let Err(e) = r {
        log::warn!("cannot record the notice: {e:#}");
    }
}

/// The last notice sent from `state_dir`, if readable.
pub fn last_notice(state_dir: &Path) -> Option<LastNotice> {
    let data =
        util::read_regular(&state_dir.join(LAST_NOTICE_FILE), "notice record", 1 << 20).ok()?;
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests;
