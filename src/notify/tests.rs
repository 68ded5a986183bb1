//! Notifications through real programs: a shell script as the command and
//! a fake `sendmail` script that keeps its arguments and stdin.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::schedule::run::LastRun;

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A configuration with a state folder in `dir`, a command that keeps its
/// environment and stdin, and a sendmail that keeps its arguments and mail.
fn setup(dir: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.state_dir.value = dir.join("state");
    std::fs::create_dir_all(&cfg.state_dir.value).unwrap();
    let out = dir.display();
    let cmd = script(
        dir,
        "on-event",
        &format!("env | grep ^LIFEBOAT_ | sort > {out}/cmd.env\ncat > {out}/cmd.json"),
    );
    let sendmail = script(
        dir,
        "sendmail",
        &format!("echo \"$@\" > {out}/mail.args\ncat > {out}/mail.txt"),
    );
    cfg.notify.command.value = Some(format!("{} --flag", cmd.display()));
    cfg.notify.mail_to.value = vec!["root".into(), "ops@example.com".into()];
    cfg.notify.sendmail.value = sendmail;
    cfg
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn command_gets_environment_and_json_and_sendmail_gets_the_mail() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let mut n = Notice::new(
        Event::RunFailed,
        "scheduled run failed: disk\ngone",
        "error: disk gone\nline two\n",
    );
    n.host = "web1".into();
    let d = send(&cfg, &n);
    assert_eq!(d.len(), 2, "{d:?}");
    assert!(d.iter().all(|d| d.error.is_none()), "{d:?}");

    let env = read(dir.path(), "cmd.env");
    for want in [
        "LIFEBOAT_EVENT=run-failed",
        "LIFEBOAT_STATUS=failed",
        "LIFEBOAT_HOST=web1",
        "LIFEBOAT_SUMMARY=scheduled run failed: disk gone",
    ] {
        assert!(env.lines().any(|l| l == want), "{want} not in {env}");
    }
    let json: Notice = serde_json::from_str(&read(dir.path(), "cmd.json")).unwrap();
    assert_eq!(json, n);

    assert_eq!(read(dir.path(), "mail.args").trim(), "-t -oi");
    let mail = read(dir.path(), "mail.txt");
    let (head, body) = mail.split_once("\n\n").unwrap();
    assert!(
        head.lines().any(|l| l == "To: root, ops@example.com"),
        "{head}"
    );
    // The summary's line break does not start a new header.
    assert!(
        head.lines()
            .any(|l| l == "Subject: lifeboat on web1: failed: scheduled run failed: disk gone"),
        "{head}"
    );
    assert_eq!(head.lines().count(), 7, "{head}");
    assert!(body.contains("error: disk gone\nline two\n"), "{body}");

    let last = last_notice(&cfg.state_dir.value).unwrap();
    assert_eq!(last.pid, std::process::id());
    assert_eq!(last.notice, n);
}

#[test]
fn a_failing_notifier_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = setup(dir.path());
    cfg.notify.command.value = Some("echo pager down >&2; exit 7".into());
    cfg.notify.sendmail.value = dir.path().join("no-such-sendmail");
    let d = send(&cfg, &Notice::new(Event::Test, "test", ""));
    assert_eq!(d.len(), 2);
    let mail = d[0].error.as_deref().unwrap();
    assert!(
        mail.contains("no-such-sendmail is not installed; install a mail transfer agent"),
        "{mail}"
    );
    let cmd = d[1].error.as_deref().unwrap();
    assert!(
        cmd.contains("pager down") && cmd.contains("exit code 7"),
        "{cmd}"
    );
}

/// A notifier that hangs is stopped after notify.timeout; the caller goes on.
#[test]
fn a_hanging_notifier_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = setup(dir.path());
    cfg.notify.mail_to.value.clear();
    cfg.notify.command.value = Some("sleep 60".into());
    cfg.notify.timeout.value = crate::config::Duration(1);
    let started = std::time::Instant::now();
    let d = send(&cfg, &Notice::new(Event::Test, "test", ""));
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    let e = d[0].error.as_deref().unwrap();
    assert!(e.contains("no answer after 1 s (notify.timeout)"), "{e}");
}

#[test]
fn nothing_configured_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.state_dir.value = dir.path().to_path_buf();
    assert!(!configured(&cfg));
    assert!(send(&cfg, &Notice::new(Event::Test, "t", "")).is_empty());
    assert!(last_notice(dir.path()).is_none());
}

fn last_run(error: Option<&str>) -> LastRun {
    LastRun {
        backup: Some("G1".into()),
        ..crate::schedule::tests::last_run(1_795_672_646, error)
    }
}

#[test]
fn run_outcomes_become_the_right_events() {
    assert_eq!(of_run(&last_run(None), &[], false), None);
    let n = of_run(&last_run(Some("backing up: disk full")), &[], true).unwrap();
    assert_eq!((n.event, n.status), (Event::RunFailed, Status::Failed));
    assert!(n.summary.contains("disk full"), "{}", n.summary);
    let n = of_run(&last_run(None), &[], true).unwrap();
    assert_eq!((n.event, n.status), (Event::RunWarning, Status::Warning));
    assert!(n.detail.contains("backup G1 is partial"), "{}", n.detail);
}

#[test]
fn addresses_and_unit_names_are_checked() {
    for ok in ["root", "ops@example.com", "a.b+c@d-e.org"] {
        assert!(valid_address(ok), "{ok}");
    }
    for bad in ["", "-oQ/tmp", "a b", "a,b", "a\nBcc: x", "<a>", "a\"b"] {
        assert!(!valid_address(bad), "{bad:?}");
    }
    check_unit_name("lifeboat-snapshot.service").unwrap();
    check_unit_name("lifeboat-drill@x\\x2dy.service").unwrap();
    for bad in ["", "--help", "a b", "a/b", "a\n"] {
        assert!(check_unit_name(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_failure_already_reported_by_its_process_is_not_repeated() {
    let last = LastNotice {
        pid: 4242,
        notice: Notice::new(Event::RunFailed, "x", ""),
    };
    assert!(already_reported(Some(&last), Some(4242)));
    assert!(!already_reported(Some(&last), Some(4243)));
    assert!(!already_reported(Some(&last), None));
    assert!(!already_reported(None, Some(4242)));
    let test = LastNotice {
        pid: 4242,
        notice: Notice::new(Event::Test, "x", ""),
    };
    assert!(!already_reported(Some(&test), Some(4242)));
}

#[test]
fn a_huge_detail_is_cut_in_the_environment_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path());
    let detail = "é".repeat(100_000);
    let n = Notice::new(Event::VerifyFailed, "damaged", detail.clone());
    let env = n.env();
    let d = &env.iter().find(|(k, _)| *k == "LIFEBOAT_DETAIL").unwrap().1;
    assert!(d.len() < 33 * 1024 && d.ends_with("[cut; the whole text is on stdin]\n"));
    let sent = send(&cfg, &n);
    assert!(sent.iter().all(|d| d.error.is_none()), "{sent:?}");
    let json: Notice = serde_json::from_str(&read(dir.path(), "cmd.json")).unwrap();
    assert_eq!(json.detail, detail);
}

#[test]
fn non_ascii_subjects_are_encoded() {
    let mut n = Notice::new(Event::Drift, "disque changé", "");
    n.host = "h".into();
    let mail = n.mail(&["root".into()]);
    let subject = mail.lines().find(|l| l.starts_with("Subject: ")).unwrap();
    assert!(subject.is_ascii(), "{subject}");
    assert!(
        subject.contains("=?UTF-8?Q?") && subject.contains("chang=C3=A9"),
        "{subject}"
    );
}

/// The scheduled run itself sends: nothing on a first or unchanged
/// snapshot, `drift` with the changes when the layout changed, `run-failed`
/// when the run failed (and the run's own result is unchanged by it).
#[test]
fn scheduled_runs_notify_drift_and_failure_once() {
    use crate::layout::diff::tests::machine;
    use crate::schedule::run::{run, RunOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = setup(dir.path());
    cfg.notify.mail_to.value.clear();
    let json = dir.path().join("cmd.json");
    let clock = std::cell::Cell::new(1_795_672_646i64);
    let now = || {
        clock.set(clock.get() + 60);
        clock.get()
    };
    let mut out = Vec::new();
    let go = |cfg: &Config, l: Option<crate::layout::Layout>, out: &mut Vec<u8>| {
        let capture = move || l.clone().ok_or_else(|| anyhow::anyhow!("lsblk vanished"));
        run(cfg, RunOptions::default(), &capture, &now, out)
    };
    go(&cfg, Some(machine()), &mut out).unwrap();
    go(&cfg, Some(machine()), &mut out).unwrap();
    assert!(
        !json.exists(),
        "a first or unchanged snapshot sent a notice"
    );

    let mut changed = machine();
    changed.disks.pop();
    go(&cfg, Some(changed), &mut out).unwrap();
    let n: Notice = serde_json::from_str(&read(dir.path(), "cmd.json")).unwrap();
    assert_eq!((n.event, n.status), (Event::Drift, Status::Warning));
    assert!(
        n.summary.starts_with("the layout changed (2 changes)"),
        "{}",
        n.summary
    );
    assert!(n.detail.contains("removed disk"), "{}", n.detail);

    // The notifier fails: logged, the run's outcome is its own.
    std::fs::remove_file(&json).unwrap();
    cfg.notify.command.value = Some(format!("cat > {}; exit 3", json.display()));
    let e = go(&cfg, None, &mut out).unwrap_err();
    assert!(format!("{e:#}").contains("lsblk vanished"));
    let n: Notice = serde_json::from_str(&read(dir.path(), "cmd.json")).unwrap();
    assert_eq!((n.event, n.status), (Event::RunFailed, Status::Failed));
    assert!(n.summary.contains("lsblk vanished"), "{}", n.summary);
}

#[test]
fn drill_and_verify_outcomes_become_notices() {
    use crate::drill::report::Verdict;
    use crate::drill::tests::sample_report;
    let at = "2026-12-07T10:00:00Z";
    assert_eq!(
        of_drill(Ok(&sample_report(Verdict::Passed, at)), None),
        None
    );
    let failed = sample_report(Verdict::Failed, at);
    let n = of_drill(Ok(&failed), Some(Path::new("/state/drills/x.json"))).unwrap();
    assert_eq!((n.event, n.status), (Event::DrillFailed, Status::Failed));
    assert!(n.summary.starts_with("drill failed: "), "{}", n.summary);
    assert!(
        n.detail.contains("report: /state/drills/x.json"),
        "{}",
        n.detail
    );
    let e = anyhow::anyhow!("qemu-system-x86_64 is not installed");
    let n = of_drill(Err(&e), None).unwrap();
    assert_eq!(
        n.summary,
        "drill could not run: qemu-system-x86_64 is not installed"
    );

    let n = of_verify(
        "/srv/b",
        Ok(("1 damaged file", "damaged file etc/passwd\n")),
    );
    assert_eq!((n.event, n.status), (Event::VerifyFailed, Status::Failed));
    assert_eq!(n.summary, "backup in /srv/b is damaged: 1 damaged file");
    assert_eq!(n.detail, "damaged file etc/passwd\n");
    let n = of_verify("/srv/b", Err(&anyhow::anyhow!("no such folder")));
    assert_eq!(
        n.summary,
        "backup verify of /srv/b could not run: no such folder"
    );
}
