//! Installing, removing and inspecting the schedule: systemd units (and
//! their enable link) or, without systemd, a cron file, below a root
//! folder (`/`, or an image's tree).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::units::{self, Job, JobSpec};
use crate::exec::Cmd;
use crate::util;

pub const UNIT_DIR: &str = "etc/systemd/system";

/// Which scheduler runs the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    Systemd,
    Cron,
}

/// Where the files of a schedule live below `root`.
pub struct Paths {
    pub root: PathBuf,
    pub job: Job,
}

impl Paths {
    /// The snapshot job's files.
    pub fn new(root: &Path) -> Paths {
        Paths::for_job(root, Job::Snapshot)
    }
    pub fn for_job(root: &Path, job: Job) -> Paths {
        Paths {
            root: root.to_path_buf(),
            job,
        }
    }
    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    pub fn service(&self) -> PathBuf {
        self.at(UNIT_DIR).join(self.job.service())
    }
    pub fn timer(&self) -> PathBuf {
        self.at(UNIT_DIR).join(self.job.timer())
    }
    /// The link `systemctl enable` makes.
    pub fn wants_link(&self) -> PathBuf {
        self.at(UNIT_DIR)
            .join("timers.target.wants")
            .join(self.job.timer())
    }
    pub fn cron(&self) -> PathBuf {
        self.at(self.job.cron_file())
    }
    pub fn service_drop_in(&self) -> PathBuf {
        self.drop_in(self.job.service())
    }
    pub fn timer_drop_in(&self) -> PathBuf {
        self.drop_in(self.job.timer())
    }
    fn drop_in(&self, unit: &str) -> PathBuf {
        self.at(UNIT_DIR)
            .join(format!("{unit}.d"))
            .join(units::DROP_IN)
    }
    /// The notification template a non-packaged install writes.
    pub fn notify_template(&self) -> PathBuf {
        self.at(UNIT_DIR).join(units::NOTIFY_TEMPLATE)
    }
    /// The package's unit folder holding this job's timer (below the
    /// root, links followed inside it), if the package is installed.
    pub fn shipped_dir(&self) -> Option<&'static str> {
        let timer = self.job.timer();
        units::SHIPPED_UNIT_DIRS
            .into_iter()
            .find(|d| resolve_in_root(&self.root, &format!("{d}/{timer}")).is_some())
    }
    /// Where the enable link points, as seen from inside the system:
    /// the package's timer, else the one in /etc/systemd/system.
    pub fn timer_target(&self) -> PathBuf {
        let dir = self.shipped_dir().unwrap_or(UNIT_DIR);
        Path::new("/").join(dir).join(self.job.timer())
    }
    /// Installing into the running system (not an image's tree).
    pub fn is_live(&self) -> bool {
        std::fs::canonicalize(&self.root).is_ok_and(|p| p == Path::new("/"))
    }
    /// systemd manages the running system right now.
    pub fn systemd_running(&self) -> bool {
        self.is_live() && Path::new("/run/systemd/system").is_dir()
    }
    /// Whether the man page `page`(8) is installed below the root (by the
    /// package or by scripts/install.sh): the units name only those.
    pub fn man_page_installed(&self, page: &str) -> bool {
        ["usr/share/man/man8", "usr/local/share/man/man8"]
            .iter()
            .flat_map(|d| ["8", "8.gz"].map(|ext| format!("{d}/{page}.{ext}")))
            .any(|p| self.at(&p).is_file())
    }
    /// The scheduler of the system below `root`: for the running system,
    /// systemd when it runs it; for another root (an image's tree), what
    /// that tree boots: its `/sbin/init` when it has one, else whether it
    /// has `/lib/systemd/systemd`, links followed inside the tree.
    pub fn detect(&self) -> Init {
        if self.is_live() {
            return if self.systemd_running() {
                Init::Systemd
            } else {
                Init::Cron
            };
        }
        let systemd = match resolve_in_root(&self.root, "sbin/init") {
            Some(init) => init.file_name() == Some(std::ffi::OsStr::new("systemd")),
            None => ["lib/systemd/systemd", "usr/lib/systemd/systemd"]
                .iter()
                .any(|p| resolve_in_root(&self.root, p).is_some()),
        };
        if systemd {
            Init::Systemd
        } else {
            Init::Cron
        }
    }
}

/// Where `rel` leads below `root`, symbolic links followed as if `root`
/// were `/` (an absolute target stays inside the tree, never reaching this
/// machine's files): the regular file's path, or None.
fn resolve_in_root(root: &Path, rel: &str) -> Option<PathBuf> {
    use rustix::fs::{openat2, FileType, Mode, OFlags, ResolveFlags};
    use std::os::fd::AsRawFd;
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let dir = rustix::fs::open(root, flags | OFlags::DIRECTORY, Mode::empty()).ok()?;
    let fd = openat2(&dir, rel, flags, Mode::empty(), ResolveFlags::IN_ROOT).ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

/// What `install` did.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub init: Init,
    pub written: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
    /// The timer was started now (systemd running); else it starts at the
    /// next boot (or cron picks the file up).
    pub started: bool,
    pub cron_time: Option<String>,
}

/// Writes the schedule for `job` below `paths.root` and enables it.
/// `cron_time` is needed for cron (see [`units::calendar_to_cron`]).
pub fn install(
    paths: &Paths,
    init: Init,
    job: &JobSpec,
    cron_time: Option<&str>,
) -> Result<Installed> {
    job.check_lines()?;
    if let Some(t) = cron_time {
        crate::names::single_line("cron time (--cron, schedule.cron)", t)?;
    }
    crate::names::single_line("--root", &paths.root.to_string_lossy())?;
    let mut written = Vec::new();
    let mut removed = Vec::new();
    let mut started = false;
    match init {
        Init::Systemd => {
            if paths.systemd_running() {
                check_calendar(&job.on_calendar)?;
            }
            match paths.shipped_dir() {
                Some(_) => write_drop_ins(paths, job, &mut written, &mut removed)?,
                None => write_units(paths, job, &mut written)?,
            }
            started = enable(paths, &mut written)?;
            if paths.cron().exists() {
                remove_file(&paths.cron(), &mut removed)?;
            }
        }
        Init::Cron => {
            let time = cron_time.context("a cron schedule needs a cron time")?;
            units::check_cron_time(time)?;
            let dir = paths
                .cron()
                .parent()
                .expect("cron file has a parent")
                .to_path_buf();
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            // cron.d files must not be writable by others, and names with a
            // dot are ignored (hence no extension).
            util::write_atomic(&paths.cron(), units::cron_file(job, time).as_bytes(), 0o644)?;
            written.push(paths.cron());
            removed.extend(remove_units(paths)?);
        }
    }
    Ok(Installed {
        init,
        written,
        removed,
        started,
        cron_time: cron_time.map(String::from),
    })
}

/// A non-packaged install: the whole service and timer, and the
/// notification template, in /etc/systemd/system.
fn write_units(paths: &Paths, job: &JobSpec, written: &mut Vec<PathBuf>) -> Result<()> {
    let dir = paths.at(UNIT_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let man = paths.man_page_installed(paths.job.man_page());
    let mut files = vec![
        (paths.service(), units::service_unit(job, man)),
        (paths.timer(), units::timer_unit(job, man)),
    ];
    // An admin's own template is left alone.
    let template = paths.notify_template();
    let ours = match read_opt(&template)? {
        Some(t) => units::written_by_schedule(&t),
        None => true,
    };
    if ours {
        let page = units::notify_page(|p| paths.man_page_installed(p));
        let text = units::notify_unit(&job.command[0], page, units::Origin::Schedule);
        files.push((template, text));
    }
    for (path, text) in files {
        util::write_atomic(&path, text.as_bytes(), 0o644)?;
        written.push(path);
    }
    Ok(())
}

/// The package ships the units: drop-ins carry the calendar and command
/// line; whole units an earlier non-packaged `schedule install` wrote in
/// /etc would hide the package's, so they go.
fn write_drop_ins(
    paths: &Paths,
    job: &JobSpec,
    written: &mut Vec<PathBuf>,
    removed: &mut Vec<PathBuf>,
) -> Result<()> {
    for unit in [paths.service(), paths.timer(), paths.notify_template()] {
        if read_opt(&unit)?.is_some_and(|t| units::written_by_schedule(&t)) {
            remove_file(&unit, removed)?;
        }
    }
    for (path, text) in [
        (paths.service_drop_in(), units::service_drop_in(job)),
        (paths.timer_drop_in(), units::timer_drop_in(job)),
    ] {
        let dir = path.parent().expect("a drop-in has a folder");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        util::write_atomic(&path, text.as_bytes(), 0o644)?;
        written.push(path);
    }
    Ok(())
}

/// Enables the timer: `systemctl enable --now` when systemd runs the
/// system, else the link it would make. A link to another place (the
/// unit moved between /etc and the package's folder) is replaced.
/// Returns whether the timer was started.
fn enable(paths: &Paths, written: &mut Vec<PathBuf>) -> Result<bool> {
    let link = paths.wants_link();
    let target = paths.timer_target();
    let current = std::fs::read_link(&link).ok();
    if current.as_ref().is_some_and(|t| *t != target) {
        std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    if paths.systemd_running() {
        Cmd::new("systemctl").arg("daemon-reload").run()?;
        Cmd::new("systemctl")
            .args(["enable", "--now", paths.job.timer()])
            .run()?;
        return Ok(true);
    }
    if current.as_ref() != Some(&target) {
        std::fs::create_dir_all(link.parent().expect("link has a parent"))
            .with_context(|| format!("creating the folder of {}", link.display()))?;
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("creating {}", link.display()))?;
    }
    written.push(link);
    Ok(false)
}

/// A file's text, or None when it does not exist.
fn read_opt(p: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Asks systemd whether it understands the calendar expression.
pub fn check_calendar(spec: &str) -> Result<()> {
    if crate::exec::which("systemd-analyze").is_none() {
        return Ok(());
    }
    let out = Cmd::new("systemd-analyze")
        .args(["calendar", spec])
        .output_any()?;
    if out.code != 0 {
        bail!(
            "systemd does not understand OnCalendar {spec:?} ({}); see `man systemd.time`",
            crate::exec::tail(&out.stderr, 2)
        );
    }
    Ok(())
}

fn remove_file(p: &Path, removed: &mut Vec<PathBuf>) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => {
            removed.push(p.to_path_buf());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
    }
}

fn remove_units(paths: &Paths) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let drop_ins = [paths.service_drop_in(), paths.timer_drop_in()];
    let present = [paths.timer(), paths.service()]
        .iter()
        .chain(&drop_ins)
        .any(|p| p.exists())
        || std::fs::symlink_metadata(paths.wants_link()).is_ok();
    if present && paths.systemd_running() {
        Cmd::new("systemctl")
            .args(["disable", "--now", paths.job.timer()])
            .ok_codes(&[1, 5])
            .run()?;
    }
    // symlink_metadata: the link may point to a file already gone.
    if std::fs::symlink_metadata(paths.wants_link()).is_ok() {
        remove_file(&paths.wants_link(), &mut removed)?;
    }
    remove_file(&paths.timer(), &mut removed)?;
    remove_file(&paths.service(), &mut removed)?;
    for d in &drop_ins {
        remove_file(d, &mut removed)?;
        // The folder goes when it held only ours (an admin's own
        // drop-ins beside it stay).
        let _ = std::fs::remove_dir(d.parent().expect("a drop-in has a folder"));
    }
    // The template serves both jobs: it goes with the last of them.
    let other = Paths::for_job(&paths.root, paths.job.other());
    if !other.service().exists()
        && read_opt(&paths.notify_template())?.is_some_and(|t| units::written_by_schedule(&t))
    {
        remove_file(&paths.notify_template(), &mut removed)?;
    }
    if present && paths.systemd_running() {
        Cmd::new("systemctl").arg("daemon-reload").run()?;
    }
    Ok(removed)
}

/// Removes the units (stopping the timer first) and the cron file.
pub fn remove(paths: &Paths) -> Result<Vec<PathBuf>> {
    let mut removed = remove_units(paths)?;
    remove_file(&paths.cron(), &mut removed)?;
    Ok(removed)
}

/// What is installed below a root.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    pub init: Option<Init>,
    /// The command the schedule runs, as written in the unit or cron file.
    pub command: Option<String>,
    /// OnCalendar, or the cron time fields.
    pub when: Option<String>,
    pub files: Vec<PathBuf>,
    /// systemd's view (`systemctl show`), when it runs this system.
    pub enabled: Option<String>,
    pub next_run: Option<String>,
    pub last_trigger: Option<String>,
    pub last_result: Option<String>,
}

/// Reads what is installed: systemd units of ours, else the cron file.
pub fn state(paths: &Paths) -> Result<State> {
    let mut st = State::default();
    let (service, service_ours) = unit_text(
        paths,
        paths.service(),
        paths.job.service(),
        paths.service_drop_in(),
    )?;
    let (timer, timer_ours) = unit_text(
        paths,
        paths.timer(),
        paths.job.timer(),
        paths.timer_drop_in(),
    )?;
    let linked = std::fs::symlink_metadata(paths.wants_link()).is_ok();
    if service_ours || timer_ours || linked {
        st.init = Some(Init::Systemd);
        st.command = unit_value(&service, "ExecStart");
        st.when = unit_value(&timer, "OnCalendar");
        for p in [
            paths.service(),
            paths.timer(),
            paths.service_drop_in(),
            paths.timer_drop_in(),
            paths.wants_link(),
        ] {
            if std::fs::symlink_metadata(&p).is_ok() {
                st.files.push(p);
            }
        }
        if paths.systemd_running() {
            systemd_view(paths, &mut st)?;
        } else {
            st.enabled = Some(if linked { "enabled" } else { "disabled" }.into());
        }
    } else if let Some(cron) = read_opt(&paths.cron())? {
        st.init = Some(Init::Cron);
        st.files.push(paths.cron());
        if let Some((when, command)) = cron_job(&cron) {
            st.when = Some(when);
            st.command = Some(command);
        }
        st.enabled = Some("enabled".into());
    }
    Ok(st)
}

/// A unit as systemd sees it: the one in /etc hides the package's
/// (`name` in the shipped folder), the drop-in adds to whichever is used;
/// and whether any of it is ours (the /etc unit or the drop-in).
fn unit_text(
    paths: &Paths,
    etc: PathBuf,
    name: &str,
    drop_in: PathBuf,
) -> Result<(Option<String>, bool)> {
    let base = match read_opt(&etc)? {
        Some(t) => Some(t),
        None => match paths.shipped_dir() {
            Some(d) => read_opt(&paths.root.join(d).join(name))?,
            None => None,
        },
    };
    let extra = read_opt(&drop_in)?;
    let ours = std::fs::symlink_metadata(&etc).is_ok() || extra.is_some();
    let text = [base, extra].into_iter().flatten().collect::<Vec<_>>();
    Ok(((!text.is_empty()).then(|| text.join("\n")), ours))
}

/// A key's value in unit text: the last one wins (a drop-in empties a
/// list, then sets it).
fn unit_value(text: &Option<String>, key: &str) -> Option<String> {
    text.as_deref()?
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .filter(|v| !v.is_empty())
        .map(String::from)
}

/// systemd's view of the timer (enabled, next and last run) and the
/// service's last result.
fn systemd_view(paths: &Paths, st: &mut State) -> Result<()> {
    let show = |unit: &str, props: &str| -> Result<Vec<(String, String)>> {
        let out = Cmd::new("systemctl")
            .args(["show", unit, "--property", props])
            .read()?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    };
    for (k, v) in show(
        paths.job.timer(),
        "UnitFileState,NextElapseUSecRealtime,LastTriggerUSec",
    )? {
        let v = (!v.is_empty() && v != "n/a").then_some(v);
        match k.as_str() {
            "UnitFileState" => st.enabled = v,
            "NextElapseUSecRealtime" => st.next_run = v,
            "LastTriggerUSec" => st.last_trigger = v,
            _ => {}
        }
    }
    for (k, v) in show(paths.job.service(), "Result")? {
        if k == "Result" {
            st.last_result = Some(v);
        }
    }
    Ok(())
}

/// The time fields and the command of the cron file's job line, without
/// the random delay before the command (units::cron_delay) and the logger
/// after it.
fn cron_job(cron: &str) -> Option<(String, String)> {
    let line = cron
        .lines()
        .find(|l| !l.starts_with('#') && l.contains(" root "))?;
    let (when, cmd) = line.split_once(" root ")?;
    let cmd = match cmd.strip_prefix("sleep $(shuf ") {
        Some(rest) => rest.split_once("); ").map_or(cmd, |(_, c)| c),
        None => cmd,
    };
    let cmd = cmd
        .strip_suffix(&format!(" 2>&1 | logger -t {}", units::SYSLOG_IDENTIFIER))
        .unwrap_or(cmd);
    Some((when.to_string(), cmd.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobSpec {
        JobSpec {
            command: vec!["/usr/bin/lifeboat".into(), "snapshot".into()],
            on_calendar: "daily".into(),
            randomized_delay: 60,
            kind: Job::Snapshot,
        }
    }

    #[test]
    fn systemd_into_a_root_enables_by_link_and_replaces_cron() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        assert_eq!(paths.detect(), Init::Cron);
        std::fs::create_dir_all(root.path().join("usr/lib/systemd")).unwrap();
        std::fs::write(root.path().join("usr/lib/systemd/systemd"), "").unwrap();
        assert_eq!(paths.detect(), Init::Systemd);
        assert!(!paths.is_live());

        let c = install(&paths, Init::Cron, &job(), Some("0 0 * * *")).unwrap();
        assert_eq!(c.written, vec![paths.cron()]);
        let st = state(&paths).unwrap();
        assert_eq!(st.init, Some(Init::Cron));
        assert_eq!(st.command.as_deref(), Some("/usr/bin/lifeboat snapshot"));
        assert_eq!(st.when.as_deref(), Some("0 0 * * *"));

        let s = install(&paths, Init::Systemd, &job(), None).unwrap();
        assert!(!s.started);
        assert_eq!(s.removed, vec![paths.cron()]);
        assert_eq!(
            std::fs::read_link(paths.wants_link()).unwrap(),
            Path::new("/etc/systemd/system/lifeboat-snapshot.timer")
        );
        // Installing again is an update, not an error.
        install(&paths, Init::Systemd, &job(), None).unwrap();
        let st = state(&paths).unwrap();
        assert_eq!(st.init, Some(Init::Systemd));
        assert_eq!(st.command.as_deref(), Some("/usr/bin/lifeboat snapshot"));
        assert_eq!(st.when.as_deref(), Some("daily"));
        assert_eq!(st.enabled.as_deref(), Some("enabled"));
        assert_eq!(st.files.len(), 3);

        let removed = remove(&paths).unwrap();
        // The link, timer, service and the notification template.
        assert_eq!(removed.len(), 4, "{removed:?}");
        assert!(!paths.notify_template().exists());
        assert!(std::fs::symlink_metadata(paths.wants_link()).is_err());
        let st = state(&paths).unwrap();
        assert_eq!(st.init, None);
        assert!(remove(&paths).unwrap().is_empty());
    }

    /// A tree is judged by its own files: absolute links resolve inside it,
    /// whatever this machine has (this host has /lib/systemd/systemd but
    /// does not run it; a host without systemd judged the same way).
    #[test]
    fn detect_by_the_trees_init() {
        use std::os::unix::fs::symlink;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let paths = Paths::new(r);
        // Merged /usr with absolute links, init pointing at systemd that
        // is not there (yet): on the host, the same paths may exist.
        std::fs::create_dir_all(r.join("usr/lib")).unwrap();
        std::fs::create_dir_all(r.join("usr/sbin")).unwrap();
        symlink("/usr/lib", r.join("lib")).unwrap();
        symlink("/usr/sbin", r.join("sbin")).unwrap();
        symlink("/lib/systemd/systemd", r.join("usr/sbin/init")).unwrap();
        assert_eq!(paths.detect(), Init::Cron);
        std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        std::fs::write(r.join("usr/lib/systemd/systemd"), "").unwrap();
        assert_eq!(paths.detect(), Init::Systemd);
        // systemd installed but another init boots the tree.
        std::fs::remove_file(r.join("usr/sbin/init")).unwrap();
        std::fs::write(r.join("usr/sbin/init"), "sysvinit").unwrap();
        assert_eq!(paths.detect(), Init::Cron);
    }

    #[test]
    fn documentation_only_when_the_man_page_is_installed() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        install(&paths, Init::Systemd, &job(), None).unwrap();
        for unit in [paths.service(), paths.timer()] {
            let text = std::fs::read_to_string(&unit).unwrap();
            assert!(!text.contains("Documentation="), "{text}");
        }
        let man8 = root.path().join("usr/local/share/man/man8");
        std::fs::create_dir_all(&man8).unwrap();
        std::fs::write(man8.join("lifeboat-snapshot.8"), ".TH x").unwrap();
        install(&paths, Init::Systemd, &job(), None).unwrap();
        for unit in [paths.service(), paths.timer()] {
            let text = std::fs::read_to_string(&unit).unwrap();
            assert!(
                text.contains("\nDocumentation=man:lifeboat-snapshot(8)\n"),
                "{text}"
            );
        }
    }

    /// The drill job has its own units beside the snapshot's, not
    /// replacing them, and its service is not the snapshot's (no
    /// MemoryDenyWriteExecute: QEMU's TCG needs it).
    #[test]
    fn drill_units_beside_the_snapshot_units() {
        let root = tempfile::tempdir().unwrap();
        let snap = Paths::new(root.path());
        let drill = Paths::for_job(root.path(), Job::Drill);
        install(&snap, Init::Systemd, &job(), None).unwrap();
        let d = JobSpec {
            command: vec!["/usr/bin/lifeboat".into(), "drill".into()],
            on_calendar: "monthly".into(),
            randomized_delay: 60,
            kind: Job::Drill,
        };
        let done = install(&drill, Init::Systemd, &d, None).unwrap();
        assert_eq!(done.written.len(), 4, "{:?}", done.written);
        assert_eq!(
            std::fs::read_link(drill.wants_link()).unwrap(),
            Path::new("/etc/systemd/system/lifeboat-drill.timer")
        );
        let service = std::fs::read_to_string(drill.service()).unwrap();
        assert!(
            service.contains("\nExecStart=/usr/bin/lifeboat drill\n"),
            "{service}"
        );
        assert!(
            !service.contains("MemoryDenyWriteExecute") && !service.contains("SuccessExitStatus")
        );
        let st = state(&drill).unwrap();
        assert_eq!(st.when.as_deref(), Some("monthly"));
        assert_eq!(state(&snap).unwrap().when.as_deref(), Some("daily"));
        // Cron: a file of its own.
        install(&drill, Init::Cron, &d, Some("0 3 1 * *")).unwrap();
        assert!(root.path().join("etc/cron.d/lifeboat-drill").is_file());
        assert!(!root.path().join("etc/cron.d/lifeboat").exists());
        assert!(snap.timer().is_file());
        assert_eq!(remove(&drill).unwrap(), vec![drill.cron()]);
        assert!(snap.timer().is_file());
        // The template serves the snapshot job still.
        assert!(snap.notify_template().is_file());
    }

    #[test]
    fn cron_needs_a_valid_time() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::new(root.path());
        assert!(install(&paths, Init::Cron, &job(), None).is_err());
        let e = install(&paths, Init::Cron, &job(), Some("0 0 * *"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad cron time"), "{e}");
        assert!(!paths.cron().exists());
    }

    /// With the package's units below the root, `install` writes drop-ins
    /// (the calendar, the command line) and links the package's timer;
    /// whole units an earlier non-packaged install wrote go, an admin's
    /// own files stay; `remove` leaves the package's units and the
    /// admin's drop-in alone.
    #[test]
    fn packaged_units_are_enabled_through_drop_ins() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let paths = Paths::new(r);
        // First a non-packaged install: whole units in /etc.
        install(&paths, Init::Systemd, &job(), None).unwrap();
        assert!(paths.service().is_file() && paths.notify_template().is_file());
        assert_eq!(
            paths.timer_target(),
            Path::new("/etc/systemd/system/lifeboat-snapshot.timer")
        );
        // Then the package arrives (Debian 12: /lib/systemd/system).
        let shipped = r.join("lib/systemd/system");
        units::write_shipped(&shipped, "/usr/sbin/lifeboat", |_| false).unwrap();
        let shipped_before = util_tree(&shipped);
        assert_eq!(paths.shipped_dir(), Some("lib/systemd/system"));
        let mut j = job();
        j.command = vec![
            "/usr/sbin/lifeboat".into(),
            "snapshot".into(),
            "--backup".into(),
        ];
        j.on_calendar = "Sun 04:00".into();
        let done = install(&paths, Init::Systemd, &j, None).unwrap();
        assert!(!done.started);
        assert_eq!(
            done.removed,
            vec![paths.service(), paths.timer(), paths.notify_template()]
        );
        assert_eq!(
            done.written,
            vec![
                paths.service_drop_in(),
                paths.timer_drop_in(),
                paths.wants_link()
            ]
        );
        assert_eq!(
            std::fs::read_link(paths.wants_link()).unwrap(),
            Path::new("/lib/systemd/system/lifeboat-snapshot.timer")
        );
        let st = state(&paths).unwrap();
        assert_eq!(st.init, Some(Init::Systemd));
        assert_eq!(
            st.command.as_deref(),
            Some("/usr/sbin/lifeboat snapshot --backup")
        );
        assert_eq!(st.when.as_deref(), Some("Sun 04:00"));
        assert_eq!(st.enabled.as_deref(), Some("enabled"));
        assert_eq!(st.files.len(), 3, "{:?}", st.files);

        // An admin's own drop-in beside ours, and an admin's own full copy
        // of the service (`systemctl edit --full`): both stay.
        let own = paths.service_drop_in().with_file_name("local.conf");
        std::fs::write(&own, "[Service]\nNice=5\n").unwrap();
        std::fs::write(paths.service(), "[Service]\nExecStart=/bin/true\n").unwrap();
        let again = install(&paths, Init::Systemd, &j, None).unwrap();
        assert!(again.removed.is_empty(), "{:?}", again.removed);
        assert!(paths.service().is_file());
        std::fs::remove_file(paths.service()).unwrap();

        let removed = remove(&paths).unwrap();
        assert_eq!(
            removed,
            vec![
                paths.wants_link(),
                paths.service_drop_in(),
                paths.timer_drop_in()
            ]
        );
        assert!(own.is_file(), "the admin's drop-in was removed");
        assert!(!paths.timer_drop_in().parent().unwrap().exists());
        assert_eq!(
            util_tree(&shipped),
            shipped_before,
            "the package's units changed"
        );
        assert_eq!(state(&paths).unwrap().init, None);
    }

    /// Every file below `dir` with its contents.
    fn util_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let data = std::fs::read(&p).unwrap();
                (p, data)
            })
            .collect();
        out.sort();
        out
    }
}
