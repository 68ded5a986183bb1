//! `[hooks]`: commands run around a backup, e.g. a database dump before
//! it (`pre_backup`) and the cleanup after (`post_backup`).
//!
//! Each hook is run by `/bin/sh -c` with a timeout (its whole process
//! group is killed when it runs over); what it prints goes to the log, line
//! by line. A failing `pre_backup` stops the backup unless `on_failure =
//! "continue"`. `post_backup` runs whatever happened, even when the backup
//! or `pre_backup` failed, and finds the outcome in its environment:
//! `LIFEBOAT_BACKUP_RESULT` (`ok`, `partial` or `failed`),
//! `LIFEBOAT_BACKUP_ERROR`, `LIFEBOAT_GENERATION`.

use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Default timeout of a hook, in seconds.
pub const DEFAULT_TIMEOUT: i64 = 3600;

/// What a failing hook does to the backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFailure {
    /// A failing `pre_backup` stops the backup; a failing `post_backup`
    /// makes the run fail.
    #[default]
    Stop,
    /// Logged as a warning; the backup goes on.
    Continue,
}

/// The hooks of `[hooks]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    pub pre_backup: Option<String>,
    pub post_backup: Option<String>,
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

impl Default for Hooks {
    fn default() -> Hooks {
        Hooks {
            pre_backup: None,
            post_backup: None,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT as u64),
            on_failure: OnFailure::Stop,
        }
    }
}

/// How the backup went, for `post_backup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `ok`, `partial` or `failed`.
    pub result: &'static str,
    pub generation: Option<String>,
    pub error: Option<String>,
}

impl Hooks {
    /// Runs `pre_backup`, then `body` (unless the hook failed and stops
    /// the backup), then `post_backup` with `body`'s outcome. `outcome`
    /// describes a successful result of `body`.
    pub fn around<T>(
        &self,
        dest: &Path,
        body: impl FnOnce() -> Result<T>,
        outcome: impl Fn(&T) -> Outcome,
    ) -> Result<T> {
        let env = [("LIFEBOAT_BACKUP_DEST", dest.display().to_string())];
        let pre = match &self.pre_backup {
            Some(cmd) => self.checked("pre_backup", cmd, &env),
            None => Ok(()),
        };
        let res = match pre {
            Ok(()) => body(),
            Err(e) => Err(e.context("the backup was not run")),
        };
        let Some(cmd) = &self.post_backup else {
            return res;
        };
        let out = match &res {
            Ok(t) => outcome(t),
            Err(e) => Outcome {
                result: "failed",
                generation: None,
                error: Some(format!("{e:#}")),
            },
        };
        let env = [
            env[0].clone(),
            ("LIFEBOAT_BACKUP_RESULT", out.result.to_string()),
            ("LIFEBOAT_GENERATION", out.generation.unwrap_or_default()),
            ("LIFEBOAT_BACKUP_ERROR", out.error.unwrap_or_default()),
        ];
        let post = self.checked("post_backup", cmd, &env);
        match (res, post) {
            (Ok(t), Ok(())) => Ok(t),
            (Ok(_), Err(e)) => Err(e.context("the backup itself was written")),
            (Err(e), post) => {
                if let Err(p) = post {
                    log::error!("{p:#}");
                }
                Err(e)
            }
        }
    }

    /// Runs a hook; its failure is an error unless `on_failure` is
    /// `continue` (then a warning).
    fn checked(&self, name: &str, cmd: &str, env: &[(&str, String)]) -> Result<()> {
        match run_hook(name, cmd, env, self.timeout) {
            Err(e) if self.on_failure == OnFailure::Continue => {
                log::warn!("{e:#} (hooks.on_failure = \"continue\": going on)");
                Ok(())
            }
            res => res,
        }
    }
}

/// Runs one hook by `/bin/sh -c`, its output (stdout and stderr, in order)
/// logged line by line (as warnings when it failed); an error when it fails, cannot start or runs over
/// `timeout` (then its process group is killed).
pub fn run_hook(name: &str, cmd: &str, env: &[(&str, String)], timeout: Duration) -> Result<()> {
    log::info!("running hook {name}: {cmd}");
    let mut out = tempfile::tempfile().context("creating a file for the hook's output")?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("LIFEBOAT_HOOK", name)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out.try_clone()?)
        .process_group(0)
        .spawn()
        .with_context(|| format!("hook {name}: cannot start /bin/sh"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().context("waiting for the hook")? {
            break Some(s);
        }
        if started.elapsed() >= timeout {
            // The shell and everything it started.
            let pgid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    out.rewind()?;
    out.take(1 << 20).read_to_string(&mut text).ok();
    // A failing hook's output is shown at the default log level.
    let failed = !status.is_some_and(|s| s.success());
    for line in text.lines() {
        match failed {
            true => log::warn!("hook {name}: {line}"),
            false => log::info!("hook {name}: {line}"),
        }
    }
    match status {
        None => bail!(
            "hook {name} ran over its timeout of {} and was killed (hooks.timeout)",
            crate::config::fmt_duration(timeout.as_secs() as i64)
        ),
        Some(s) if s.success() => Ok(()),
        Some(s) => {
            let last = text.lines().last().unwrap_or("").trim();
            let why = if last.is_empty() {
                String::new()
            } else {
                format!(": {last}")
            };
            bail!("hook {name} failed ({s}){why}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(pre: &str, post: &str, on_failure: OnFailure) -> Hooks {
        Hooks {
            pre_backup: Some(pre.into()),
            post_backup: Some(post.into()),
            timeout: Duration::from_secs(20),
            on_failure,
        }
    }

    fn ok_outcome<S: AsRef<str>>(id: &S) -> Outcome {
        Outcome {
            result: "ok",
            generation: Some(id.as_ref().to_string()),
            error: None,
        }
    }

    /// The journal file's lines.
    fn journal(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("j"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn pre_then_backup_then_post_with_the_outcome() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("j");
        let h = hooks(
            &format!(
                "echo pre $LIFEBOAT_HOOK $LIFEBOAT_BACKUP_DEST >> {}",
                j.display()
            ),
            &format!(
                "echo post $LIFEBOAT_BACKUP_RESULT $LIFEBOAT_GENERATION >> {}",
                j.display()
            ),
            OnFailure::Stop,
        );
        let got = h
            .around(
                Path::new("/backups"),
                || {
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new().append(true).open(&j)?;
                    writeln!(f, "backup")?;
                    Ok("G1".to_string())
                },
                ok_outcome,
            )
            .unwrap();
        assert_eq!(got, "G1");
        assert_eq!(
            journal(d.path()),
            ["pre pre_backup /backups", "backup", "post ok G1"]
        );
    }

    #[test]
    fn a_failing_pre_backup_stops_the_backup_and_post_still_runs() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("j");
        let post = format!(
            "echo post $LIFEBOAT_BACKUP_RESULT \"$LIFEBOAT_BACKUP_ERROR\" >> {}",
            j.display()
        );
        let h = hooks("echo dump failed; exit 3", &post, OnFailure::Stop);
        let mut ran = false;
        let e = h
            .around(
                Path::new("/b"),
                || {
                    ran = true;
                    Ok(String::new())
                },
                ok_outcome,
            )
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(!ran);
        assert!(
            e.contains("hook pre_backup failed (exit status: 3): dump failed"),
            "{e}"
        );
        assert!(e.contains("the backup was not run"), "{e}");
        let lines = journal(d.path());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("post failed the backup was not run"),
            "{lines:?}"
        );

        // With continue, the backup runs and post sees it succeed.
        let h = hooks("exit 1", &post, OnFailure::Continue);
        let got = h
            .around(Path::new("/b"), || Ok("G2".to_string()), ok_outcome)
            .unwrap();
        assert_eq!(got, "G2");
        assert_eq!(journal(d.path())[1], "post ok ");
    }

    #[test]
    fn a_failed_backup_is_told_to_post_backup() {
        let d = tempfile::tempdir().unwrap();
        let j = d.path().join("j");
        let post = format!(
            "echo post $LIFEBOAT_BACKUP_RESULT \"$LIFEBOAT_BACKUP_ERROR\" >> {}",
            j.display()
        );
        let h = hooks("true", &post, OnFailure::Stop);
        let e = h
            .around(
                Path::new("/b"),
                || -> Result<String> { bail!("disk on fire") },
                ok_outcome,
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "disk on fire");
        assert_eq!(journal(d.path()), ["post failed disk on fire"]);
        // A failing post_backup after a good backup fails the run.
        let h = hooks("true", "exit 4", OnFailure::Stop);
        let e = h
            .around(Path::new("/b"), || Ok("G".to_string()), ok_outcome)
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("the backup itself was written"), "{e}");
        assert!(
            e.contains("hook post_backup failed (exit status: 4)"),
            "{e}"
        );
    }

    #[test]
    fn a_hook_over_its_timeout_is_killed_with_its_children() {
        let d = tempfile::tempdir().unwrap();
        let mark = d.path().join("late");
        // A child of the shell that would write after the timeout.
        let cmd = format!("(sleep 3; touch {}) & sleep 30", mark.display());
        let started = Instant::now();
        let e = run_hook("pre_backup", &cmd, &[], Duration::from_secs(1)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            e.to_string()
                .contains("ran over its timeout of 1s and was killed"),
            "{e}"
        );
        std::thread::sleep(Duration::from_secs(4));
        assert!(!mark.exists(), "a child of the hook outlived its timeout");
    }
}
