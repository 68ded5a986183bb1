//! `lifeboat schedule install|status|remove`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::config::{fmt_duration, Config, Source};
use crate::exec::shell_quote;
use crate::schedule::install::{self, Init, Paths};
use crate::schedule::run::LastRun;
use crate::schedule::units::{self, Job, JobSpec, SYSLOG_IDENTIFIER};

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Write and enable lifeboat-snapshot.service and .timer (without
    /// systemd: /etc/cron.d/lifeboat) running `lifeboat snapshot`.
    Install(InstallArgs),
    /// Show what is installed, when it runs and how the last run went.
    /// Exit 0: installed, 1: not installed, 2: error.
    Status {
        /// The system below DIR.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop and remove the timer and service, or the cron file.
    Remove {
        /// The system below DIR.
        #[arg(long, value_name = "DIR", default_value = "/")]
        root: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// When to run, as systemd OnCalendar (`daily`, `Mon..Fri 03:30`)
    /// [default: schedule.on_calendar, else daily].
    #[arg(long, value_name = "SPEC")]
    pub on_calendar: Option<String>,

    /// Rebuild the rescue image when its contents would change: layout,
    /// kernel, lifeboat or [rescue] (schedule.rebuild_rescue).
    #[arg(long)]
    pub rebuild_rescue: bool,

    /// Take a backup on every run, before the rebuild check
    /// (schedule.backup; needs backup.destination).
    #[arg(long)]
    pub backup: bool,

    /// Install into the system below DIR (an image's tree) instead of
    /// this one; nothing is started then.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Scheduler [default: systemd where it runs (below --root: where it
    /// is installed), else cron].
    #[arg(long, value_enum)]
    pub init: Option<Init>,

    /// The five cron time fields for cron [default: schedule.cron, else
    /// from the OnCalendar spec].
    #[arg(long, value_name = "FIELDS")]
    pub cron: Option<String>,

    /// Also install lifeboat-drill.timer running `lifeboat drill` (needs
    /// QEMU on this host).
    #[arg(long)]
    pub drill: bool,

    /// When drills run, as systemd OnCalendar [default: drill.on_calendar,
    /// else monthly].
    #[arg(long, value_name = "SPEC", requires = "drill")]
    pub drill_calendar: Option<String>,
}

pub fn run(cmd: ScheduleCmd, cfg: &Config) -> Result<u8> {
    match cmd {
        ScheduleCmd::Install(a) => install_cmd(a, cfg),
        ScheduleCmd::Status { root, json } => status(&root, json, cfg),
        ScheduleCmd::Remove { root } => {
            let mut removed = install::remove(&Paths::new(&root))?;
            removed.extend(install::remove(&Paths::for_job(&root, Job::Drill))?);
            if removed.is_empty() {
                println!("no lifeboat schedule installed below {}", root.display());
            }
            for p in removed {
                println!("removed {}", p.display());
            }
            Ok(0)
        }
    }
}

/// Where an installed lifeboat lives, below the root, in PATH order: the
/// one `scripts/install.sh` puts in /usr/local, then the package's.
const INSTALLED: [&str; 2] = ["usr/local/sbin/lifeboat", "usr/sbin/lifeboat"];

/// The lifeboat the schedule runs, as the system below `root` sees it:
/// this binary when it is an installed one, else the installed copy below
/// the root, else (a build tree: see [`warn_not_installed`]) this binary.
fn program(root: &std::path::Path, exe: &std::path::Path) -> std::path::PathBuf {
    let live = std::fs::canonicalize(root).is_ok_and(|p| p == std::path::Path::new("/"));
    let installed = |rel: &str| {
        let p = root.join(rel);
        crate::exec::is_executable(&p).then_some(p)
    };
    if live
        && INSTALLED
            .iter()
            .filter_map(|rel| installed(rel)?.canonicalize().ok())
            .any(|p| p == exe)
    {
        return exe.to_path_buf();
    }
    if let Some(rel) = INSTALLED.iter().find(|rel| installed(rel).is_some()) {
        return std::path::Path::new("/").join(rel);
    }
    exe.to_path_buf()
}

/// Warns when the schedule runs a lifeboat that is not installed (a build
/// tree), which must then stay where it is.
fn warn_not_installed(root: &std::path::Path, job: &JobSpec) {
    let program = std::path::Path::new(&job.command[0]);
    if INSTALLED
        .iter()
        .any(|rel| std::path::Path::new("/").join(rel) == program)
    {
        return;
    }
    eprintln!(
        "lifeboat: warning: lifeboat is not installed below {} (/usr/sbin or /usr/local/sbin): \
         the schedule runs {}, which must stay there; install it with \
         `apt install ./lifeboat_*.deb` or scripts/install.sh, then run `schedule install` again",
        root.display(),
        program.display()
    );
}

/// The command line the schedule runs: the installed lifeboat (see
/// [`program`]), the configuration and state folder when they are not the
/// defaults, and the job's flags.
fn job_command(cfg: &Config, root: &std::path::Path, job: &[&str]) -> Result<Vec<String>> {
    // A unit or cron file is text: a path that is not UTF-8 cannot be
    // written into it faithfully.
    fn text(what: &str, p: &std::path::Path) -> Result<String> {
        p.to_str().map(String::from).with_context(|| {
            format!(
                "{what} {} is not valid UTF-8 and cannot go into a unit or cron file",
                p.display()
            )
        })
    }
    let exe = std::env::current_exe().context("finding lifeboat's own executable")?;
    let mut cmd = vec![text("lifeboat's executable", &program(root, &exe))?];
    if cfg.path_source != Source::Default {
        let path = std::path::absolute(&cfg.path).unwrap_or(cfg.path.clone());
        cmd.extend(["--config".into(), text("the configuration file", &path)?]);
    }
    if matches!(
        cfg.state_dir.source,
        Source::Flag { .. } | Source::Env { .. }
    ) {
        let dir = std::path::absolute(&cfg.state_dir.value).unwrap_or(cfg.state_dir.value.clone());
        cmd.extend(["--state-dir".into(), text("the state folder", &dir)?]);
    }
    cmd.extend(job.iter().map(|w| w.to_string()));
    Ok(cmd)
}

fn install_cmd(a: InstallArgs, cfg: &Config) -> Result<u8> {
    let mut c = cfg.clone();
    let s = &mut c.schedule;
    s.on_calendar.flag(a.on_calendar, "--on-calendar");
    s.rebuild_rescue
        .flag_on(a.rebuild_rescue, "--rebuild-rescue");
    s.backup.flag_on(a.backup, "--backup");
    s.cron.flag_some(a.cron, "--cron");
    if c.schedule.backup.value && c.backup.destination.value.is_none() {
        bail!(
            "a scheduled backup needs a backup folder: set backup.destination in {}",
            c.path.display()
        );
    }
    let paths = Paths::new(&a.root);
    let init = a.init.unwrap_or_else(|| paths.detect());
    let mut words = vec!["snapshot"];
    if c.schedule.backup.value {
        words.push("--backup");
    }
    if c.schedule.rebuild_rescue.value {
        words.push("--rebuild-rescue");
    }
    let job = JobSpec {
        command: job_command(&c, &a.root, &words)?,
        on_calendar: c.schedule.on_calendar.value.clone(),
        randomized_delay: c.schedule.randomized_delay.value.0,
        kind: Job::Snapshot,
    };
    job.check_lines()?;
    let drill = match a.drill {
        true => Some(drill_job(&mut c, &a.root, a.drill_calendar)?),
        false => None,
    };
    let cron_time = match (init, &c.schedule.cron.value) {
        (Init::Cron, Some(t)) => Some(t.clone()),
        (Init::Cron, None) => Some(units::calendar_to_cron(&job.on_calendar)?),
        (Init::Systemd, _) => None,
    };
    // Settings from the environment do not reach the scheduled run.
    let json = c.to_json();
    let from_env: Vec<String> = json["settings"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| v["source"]["kind"] == "env" && k.as_str() != "state_dir")
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    if !from_env.is_empty() {
        eprintln!(
            "lifeboat: warning: {} set in the environment will not apply to the scheduled run; put {} into {}",
            from_env.join(", "),
            if from_env.len() == 1 { "it" } else { "them" },
            c.path.display()
        );
    }
    let done = install::install(&paths, init, &job, cron_time.as_deref())?;
    warn_not_installed(&a.root, &job);
    report_install(
        &done,
        &job,
        init,
        &c,
        &c.schedule.on_calendar.source.to_string(),
    );
    if let Some(d) = drill {
        let cron_time = match init {
            Init::Cron => Some(units::calendar_to_cron(&d.on_calendar)?),
            Init::Systemd => None,
        };
        let paths = Paths::for_job(&a.root, Job::Drill);
        let done = install::install(&paths, init, &d, cron_time.as_deref())?;
        report_install(&done, &d, init, &c, &c.drill.on_calendar.source.to_string());
    }
    Ok(0)
}

/// The drill's job: `lifeboat drill` on its own calendar.
fn drill_job(c: &mut Config, root: &std::path::Path, calendar: Option<String>) -> Result<JobSpec> {
    if crate::exec::which(crate::drill::qemu::QEMU).is_none() {
        bail!(
            "--drill needs QEMU on this host: install package {}",
            crate::exec::package_of(crate::drill::qemu::QEMU)
        );
    }
    c.drill.on_calendar.flag(calendar, "--drill-calendar");
    let job = JobSpec {
        command: job_command(c, root, &["drill"])?,
        on_calendar: c.drill.on_calendar.value.clone(),
        randomized_delay: c.schedule.randomized_delay.value.0,
        kind: Job::Drill,
    };
    job.check_lines()?;
    Ok(job)
}

/// What `install` wrote and when the job runs.
fn report_install(
    done: &install::Installed,
    job: &JobSpec,
    init: Init,
    c: &Config,
    when_from: &str,
) {
    for p in &done.removed {
        println!("removed {}", p.display());
    }
    for p in &done.written {
        println!("wrote {}", p.display());
    }
    let cmdline: Vec<String> = job.command.iter().map(|w| shell_quote(w)).collect();
    match init {
        Init::Systemd => {
            println!(
                "{}: {} ({when_from}, spread over {}), {}",
                job.kind.timer(),
                job.on_calendar,
                fmt_duration(job.randomized_delay),
                if done.started {
                    "enabled and started"
                } else {
                    "enabled; starts at the next boot of that system"
                }
            );
            println!("runs: {}", cmdline.join(" "));
            println!(
                "logs: journalctl -t {SYSLOG_IDENTIFIER} (or -u {})",
                job.kind.service()
            );
        }
        Init::Cron => {
            println!(
                "cron: {} (from {})",
                done.cron_time.as_deref().unwrap_or("?"),
                if c.schedule.cron.value.is_some() && job.kind == Job::Snapshot {
                    c.schedule.cron.source.to_string()
                } else {
                    format!("OnCalendar {}", job.on_calendar)
                }
            );
            println!("runs: {}", cmdline.join(" "));
            println!("logs: syslog, tagged {SYSLOG_IDENTIFIER}");
        }
    }
}

fn status(root: &std::path::Path, json: bool, cfg: &Config) -> Result<u8> {
    let st = install::state(&Paths::new(root))?;
    let last = LastRun::load(&cfg.state_dir.value);
    if json {
        let v = serde_json::json!({ "schedule": st, "last_run": last });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if st.init.is_some() { 0 } else { 1 });
    }
    let Some(init) = st.init else {
        println!(
            "no lifeboat schedule installed below {} (see `lifeboat schedule install`)",
            root.display()
        );
        return Ok(1);
    };
    println!(
        "installed: {} ({})",
        match init {
            Init::Systemd => "systemd timer",
            Init::Cron => "cron file",
        },
        st.files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let field = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            println!("{name:<11}{v}");
        }
    };
    field("when:", &st.when);
    field("runs:", &st.command);
    field("state:", &st.enabled);
    field("next run:", &st.next_run);
    field("last start:", &st.last_trigger);
    field("result:", &st.last_result);
    match last {
        Some(r) => println!(
            "last run:  {} {}: {}",
            r.finished_at,
            if r.ok { "ok" } else { "FAILED" },
            run_summary(&r)
        ),
        None => println!(
            "last run:  none recorded in {}",
            cfg.state_dir.value.display()
        ),
    }
    let drill = install::state(&Paths::for_job(root, Job::Drill))?;
    if drill.init.is_some() {
        println!(
            "drill:     {} ({})",
            drill.when.as_deref().unwrap_or("?"),
            drill.enabled.as_deref().unwrap_or("?")
        );
    }
    Ok(0)
}

/// One line about a run.
pub(super) fn run_summary(r: &LastRun) -> String {
    let mut parts = Vec::new();
    parts.push(match (&r.stored, &r.newest) {
        (Some(s), _) => format!(
            "layout changed ({} changes), snapshot {s} stored",
            r.changes
        ),
        (None, Some(n)) => format!("layout unchanged since {n}"),
        (None, None) => "no snapshot".into(),
    });
    if let Some(b) = &r.backup {
        parts.push(format!("backup {b}"));
    }
    if r.rebuilt {
        parts.push(format!("image rebuilt ({})", r.reasons.join("; ")));
    } else if !r.reasons.is_empty() {
        parts.push(format!("image needed a rebuild ({})", r.reasons.join("; ")));
    }
    if let Some(e) = &r.error {
        parts.push(format!("error: {e}"));
    }
    parts.join(", ")
}
