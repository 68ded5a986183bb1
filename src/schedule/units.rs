//! The text of the systemd units and of the cron file that run the
//! scheduled snapshot.

use anyhow::{bail, Result};

use crate::exec::shell_quote;

pub const SERVICE: &str = "lifeboat-snapshot.service";
pub const TIMER: &str = "lifeboat-snapshot.timer";
pub const DRILL_SERVICE: &str = "lifeboat-drill.service";
pub const DRILL_TIMER: &str = "lifeboat-drill.timer";
/// The template started by `OnFailure=` of both services: it runs
/// `lifeboat notify --failed-unit UNIT` (the `[notify]` configuration).
pub const NOTIFY_TEMPLATE: &str = "lifeboat-notify@.service";
/// Where the package ships its units, below the root (Debian 12; the
/// second for systems that ship them below /usr).
pub const SHIPPED_UNIT_DIRS: [&str; 2] = ["lib/systemd/system", "usr/lib/systemd/system"];
/// The drop-in `schedule install` writes beside a shipped unit
/// (`/etc/systemd/system/UNIT.d/schedule.conf`).
pub const DROP_IN: &str = "schedule.conf";
/// A hang guard: a run still going after a day is stopped and reported as
/// failed (`OnFailure=`), so that the next one can start. A first full
/// backup of several terabytes fits in it.
pub const TIMEOUT_START: &str = "1d";

/// Who writes a unit: its first comment line says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `lifeboat schedule install` (a non-packaged install).
    Schedule,
    /// The package (scripts/build-deb.sh); `schedule install` adds drop-ins.
    Package,
}

impl Origin {
    fn header(self) -> &'static str {
        match self {
            Origin::Schedule => {
                "# Written by `lifeboat schedule install`; `lifeboat schedule remove` deletes it."
            }
            Origin::Package => {
                "# Shipped by the lifeboat package. Do not edit: `lifeboat schedule install`\n\
                 # enables it with the chosen calendar and command through a drop-in in\n\
                 # /etc/systemd/system/UNIT.d/schedule.conf."
            }
        }
    }
}

/// The first line of every unit `schedule install` writes: a unit that
/// starts with it may be replaced or deleted.
pub fn written_by_schedule(text: &str) -> bool {
    text.starts_with(Origin::Schedule.header())
}

/// The scheduled jobs: each has its own service, timer and cron file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// `lifeboat snapshot` (with backup and rebuild as configured).
    Snapshot,
    /// `lifeboat drill`.
    Drill,
}

impl Job {
    /// The man page the job's units name in `Documentation=`, without its
    /// section.
    pub fn man_page(self) -> &'static str {
        match self {
            Job::Snapshot => "lifeboat-snapshot",
            Job::Drill => "lifeboat-drill",
        }
    }
    /// The other job (they share the notification template).
    pub fn other(self) -> Job {
        match self {
            Job::Snapshot => Job::Drill,
            Job::Drill => Job::Snapshot,
        }
    }
    pub fn service(self) -> &'static str {
        match self {
            Job::Snapshot => SERVICE,
            Job::Drill => DRILL_SERVICE,
        }
    }
    pub fn timer(self) -> &'static str {
        match self {
            Job::Snapshot => TIMER,
            Job::Drill => DRILL_TIMER,
        }
    }
    /// Below the root.
    pub fn cron_file(self) -> &'static str {
        match self {
            Job::Snapshot => "etc/cron.d/lifeboat",
            Job::Drill => "etc/cron.d/lifeboat-drill",
        }
    }
}
/// The journal's name for the job's output (`journalctl -t lifeboat`).
pub const SYSLOG_IDENTIFIER: &str = "lifeboat";

/// What the schedule runs, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The command line, program first.
    pub command: Vec<String>,
    /// systemd OnCalendar expression.
    pub on_calendar: String,
    /// RandomizedDelaySec, in seconds.
    pub randomized_delay: i64,
    pub kind: Job,
}

impl JobSpec {
    /// Every value that goes into a unit or cron line is one line of plain
    /// text: a newline in `--on-calendar` or in a path of the command would
    /// start a directive of its own (`ExecStartPre=`) or a cron job.
    pub fn check_lines(&self) -> Result<()> {
        crate::names::single_line(
            "OnCalendar (--on-calendar, schedule.on_calendar)",
            &self.on_calendar,
        )?;
        for word in &self.command {
            crate::names::single_line("the scheduled command's argument", word)?;
        }
        Ok(())
    }

    fn what(&self) -> &'static str {
        if self.kind == Job::Drill {
            return "recovery drill";
        }
        let has = |f: &str| self.command.iter().any(|a| a == f);
        match (has("--rebuild-rescue"), has("--backup")) {
            (true, true) => "layout snapshot, backup and rescue image rebuild",
            (true, false) => "layout snapshot and rescue image rebuild when needed",
            (false, true) => "layout snapshot and backup",
            (false, false) => "layout snapshot",
        }
    }
}

/// Quotes one word of an ExecStart line: systemd splits on spaces, reads
/// C-style escapes in double quotes, and expands `%` specifiers and `$`
/// variables, which are doubled here.
pub fn systemd_quote(word: &str) -> String {
    let escaped = word.replace('%', "%%").replace('$', "$$");
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%$".contains(&b));
    if safe {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The `Documentation=` line, only where the job's man page is installed:
/// `systemd-analyze verify` fails on a reference to a missing page.
fn documentation(job: &JobSpec, man: bool) -> String {
    if man {
        format!("Documentation=man:{}(8)\n", job.kind.man_page())
    } else {
        String::new()
    }
}

/// `lifeboat-drill.service`: QEMU needs writable and executable memory
/// (TCG), /dev/kvm and room in /var/tmp, so the snapshot job's hardening
/// does not fit; exit 1 (the drill failed) is a failure.
fn drill_service_unit(job: &JobSpec, man: bool, origin: Origin) -> String {
    format!(
        "\
{header}
[Unit]
Description=lifeboat: recovery drill
{doc}Wants=network-online.target
After=local-fs.target remote-fs.target network-online.target
OnFailure={on_failure}

[Service]
Type=oneshot
ExecStart={exec}
TimeoutStartSec={TIMEOUT_START}
StandardOutput=journal
StandardError=journal
SyslogIdentifier={SYSLOG_IDENTIFIER}
Nice=10
IOSchedulingClass=idle
UMask=0077
NoNewPrivileges=yes
ProtectHostname=yes
ProtectControlGroups=yes
RestrictRealtime=yes
LockPersonality=yes
",
        header = origin.header(),
        exec = exec_line(job),
        doc = documentation(job, man),
        on_failure = ON_FAILURE,
    )
}

/// The ExecStart value: the job's command line, quoted for systemd.
fn exec_line(job: &JobSpec) -> String {
    let exec: Vec<String> = job.command.iter().map(|w| systemd_quote(w)).collect();
    exec.join(" ")
}

/// `OnFailure=` of both services: [`NOTIFY_TEMPLATE`] with the failed
/// unit's full name as its instance.
pub const ON_FAILURE: &str = "lifeboat-notify@%n.service";

/// The service of `job`: `lifeboat-snapshot.service` or
/// `lifeboat-drill.service`; `man`: the job's man page is installed.
pub fn service_unit(job: &JobSpec, man: bool) -> String {
    service_unit_from(job, man, Origin::Schedule)
}

/// [`service_unit`] with the header of `origin`.
pub fn service_unit_from(job: &JobSpec, man: bool, origin: Origin) -> String {
    if job.kind == Job::Drill {
        return drill_service_unit(job, man, origin);
    }
    format!(
        "\
{header}
[Unit]
Description=lifeboat: {what}
{doc}Wants=network-online.target
After=local-fs.target remote-fs.target network-online.target
OnFailure={on_failure}

[Service]
Type=oneshot
ExecStart={exec}
TimeoutStartSec={TIMEOUT_START}
# Exit 1 means \"the layout changed and a snapshot was stored\": no failure.
SuccessExitStatus=1
StandardOutput=journal
StandardError=journal
SyslogIdentifier={SYSLOG_IDENTIFIER}
Nice=10
CPUSchedulingPolicy=batch
IOSchedulingClass=idle
UMask=0077
# Hardening. The job runs as root: it reads raw disks and every file
# system, may mount NFS or CIFS destinations, and reads /boot and
# /lib/modules. File-system sandboxing (ProtectSystem=, ProtectHome=,
# PrivateTmp=, ReadWritePaths=, PrivateDevices=) is left out on purpose:
# it adds mounts that the captured layout would record as drift, and it
# would hide the disks and trees the job has to read.
NoNewPrivileges=yes
ProtectHostname=yes
ProtectControlGroups=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
CapabilityBoundingSet=~CAP_SYS_BOOT CAP_SYS_TIME CAP_WAKE_ALARM CAP_SYS_PTRACE CAP_SYS_MODULE CAP_NET_ADMIN CAP_MAC_ADMIN CAP_MAC_OVERRIDE CAP_AUDIT_CONTROL CAP_SYSLOG CAP_SYS_PACCT CAP_LEASE CAP_BPF CAP_PERFMON
",
        header = origin.header(),
        what = job.what(),
        exec = exec_line(job),
        doc = documentation(job, man),
        on_failure = ON_FAILURE,
    )
}

/// `lifeboat-notify@.service`: started by `OnFailure=` of the services
/// with the failed unit as its instance (`%i`); `page`: the installed man
/// page it names (lifeboat-notify, else lifeboat). No `OnFailure=` of its
/// own: a failed notification must not notify again.
pub fn notify_unit(program: &str, page: Option<&str>, origin: Origin) -> String {
    format!(
        "\
{header}
[Unit]
Description=lifeboat: notification about the failure of %i
{doc}After=network-online.target

[Service]
Type=oneshot
ExecStart={program} notify --failed-unit %i
TimeoutStartSec=5min
StandardOutput=journal
StandardError=journal
SyslogIdentifier={SYSLOG_IDENTIFIER}
UMask=0077
NoNewPrivileges=yes
",
        header = origin.header(),
        program = systemd_quote(program),
        doc = page.map_or(String::new(), |p| format!("Documentation=man:{p}(8)\n")),
    )
}

/// The page the notification template names: `lifeboat-notify`(8) where
/// installed, else `lifeboat`(8), else none.
pub fn notify_page(installed: impl Fn(&str) -> bool) -> Option<&'static str> {
    ["lifeboat-notify", "lifeboat"]
        .into_iter()
        .find(|p| installed(p))
}

/// `lifeboat-snapshot.timer`; `man`: the man page is installed.
pub fn timer_unit(job: &JobSpec, man: bool) -> String {
    timer_unit_from(job, man, Origin::Schedule)
}

/// [`timer_unit`] with the header of `origin`.
pub fn timer_unit_from(job: &JobSpec, man: bool, origin: Origin) -> String {
    format!(
        "\
{header}
[Unit]
Description=lifeboat: {what} ({cal})
{doc}
[Timer]
OnCalendar={cal}
RandomizedDelaySec={delay}
# A run missed while the machine was off starts at the next boot.
Persistent=true

[Install]
WantedBy=timers.target
",
        header = origin.header(),
        what = job.what(),
        cal = job.on_calendar,
        delay = job.randomized_delay,
        doc = documentation(job, man),
    )
}

/// The drop-in for the package's service of `job`: the command line chosen
/// at install time (`ExecStart=` empty first: it is a list).
pub fn service_drop_in(job: &JobSpec) -> String {
    format!(
        "\
{header}
# It adapts the package's {unit} to this machine.
[Unit]
Description=lifeboat: {what}

[Service]
ExecStart=
ExecStart={exec}
",
        header = Origin::Schedule.header(),
        unit = job.kind.service(),
        what = job.what(),
        exec = exec_line(job),
    )
}

/// The drop-in for the package's timer of `job`: the calendar and the
/// random delay chosen at install time.
pub fn timer_drop_in(job: &JobSpec) -> String {
    format!(
        "\
{header}
# It adapts the package's {unit} to this machine.
[Unit]
Description=lifeboat: {what} ({cal})

[Timer]
OnCalendar=
OnCalendar={cal}
RandomizedDelaySec={delay}
",
        header = Origin::Schedule.header(),
        unit = job.kind.timer(),
        what = job.what(),
        cal = job.on_calendar,
        delay = job.randomized_delay,
    )
}

/// Writes the units the package ships into `dir`, running `program`:
/// both jobs' service and timer with the built-in calendar (the timers
/// are not enabled: `schedule install` does that), and the notification
/// template. `has_page(name)`: the man page `name`(8) is shipped too.
pub fn write_shipped(
    dir: &std::path::Path,
    program: &str,
    has_page: impl Fn(&str) -> bool,
) -> Result<Vec<std::path::PathBuf>> {
    use anyhow::Context;
    let defaults = crate::config::Config::default();
    let mut files = Vec::new();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (kind, word, cal) in [
        (
            Job::Snapshot,
            "snapshot",
            &defaults.schedule.on_calendar.value,
        ),
        (Job::Drill, "drill", &defaults.drill.on_calendar.value),
    ] {
        let job = JobSpec {
            command: vec![program.to_string(), word.to_string()],
            on_calendar: cal.clone(),
            randomized_delay: defaults.schedule.randomized_delay.value.0,
            kind,
        };
        job.check_lines()?;
        let man = has_page(kind.man_page());
        files.push((
            kind.service(),
            service_unit_from(&job, man, Origin::Package),
        ));
        files.push((kind.timer(), timer_unit_from(&job, man, Origin::Package)));
    }
    crate::names::single_line("the program", program)?;
    let page = notify_page(&has_page);
    files.push((NOTIFY_TEMPLATE, notify_unit(program, page, Origin::Package)));
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        crate::util::write_atomic(&path, text.as_bytes(), 0o644)?;
        written.push(path);
    }
    Ok(written)
}

/// `/etc/cron.d/lifeboat`, for machines without systemd. The output goes to
/// syslog (the journal where there is one) tagged `lifeboat`.
pub fn cron_file(job: &JobSpec, cron_time: &str) -> String {
    // cron turns an unescaped % into a newline.
    let cmd: Vec<String> = job
        .command
        .iter()
        .map(|w| shell_quote(w).replace('%', "\\%"))
        .collect();
    format!(
        "\
# Written by `lifeboat schedule install` (this machine has no systemd);
# `lifeboat schedule remove` deletes it. {what}.
# Output goes to syslog tagged {SYSLOG_IDENTIFIER}; exit 1 means {exit1}.
# It starts at a random moment up to {spread} s after the time below.
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{cron_time} root {delay}{cmd} 2>&1 | logger -t {SYSLOG_IDENTIFIER}
",
        what = capitalize(job.what()),
        delay = cron_delay(job.randomized_delay),
        spread = job.randomized_delay.max(0),
        cmd = cmd.join(" "),
        exit1 = match job.kind {
            Job::Snapshot => "the layout changed",
            Job::Drill => "the drill failed",
        },
    )
}

/// The start of a cron line that waits a random time first, as
/// `RandomizedDelaySec=` does, so that hosts do not all start at the same
/// minute (no `%`: cron would cut the line there).
pub fn cron_delay(seconds: i64) -> String {
    if seconds <= 0 {
        return String::new();
    }
    format!("sleep $(shuf -i 0-{seconds} -n 1); ")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The five cron time fields of a systemd OnCalendar expression, for the
/// forms that have one: `minutely`, `hourly`, `daily`, `weekly`, `monthly`,
/// `[DAYS] [*-*-*] HH:MM[:00]` with DAYS like `Mon`, `Mon,Thu` or
/// `Mon..Fri`.
pub fn calendar_to_cron(spec: &str) -> Result<String> {
    let s = spec.trim();
    let fixed = match s {
        "minutely" => Some("* * * * *"),
        "hourly" => Some("0 * * * *"),
        "daily" => Some("0 0 * * *"),
        "weekly" => Some("0 0 * * 1"),
        "monthly" => Some("0 0 1 * *"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Ok(f.to_string());
    }
    let fail = || {
        anyhow::anyhow!(
            "cannot turn OnCalendar {spec:?} into a cron time; set schedule.cron (or --cron) \
             to the five cron time fields, e.g. \"30 3 * * *\""
        )
    };
    let mut words: Vec<&str> = s.split_whitespace().collect();
    let mut days = "*".to_string();
    if let Some(first) = words.first() {
        if first
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        {
            days = cron_days(first).ok_or_else(fail)?;
            words.remove(0);
        }
    }
    match words.as_slice() {
        [date, time] if *date == "*-*-*" => {
            let (h, m) = cron_time(time).ok_or_else(fail)?;
            Ok(format!("{m} {h} * * {days}"))
        }
        [time] => {
            let (h, m) = cron_time(time).ok_or_else(fail)?;
            Ok(format!("{m} {h} * * {days}"))
        }
        _ => Err(fail()),
    }
}

fn cron_time(t: &str) -> Option<(u32, u32)> {
    let parts: Vec<&str> = t.split(':').collect();
    let num = |s: &str, max: u32| -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
            .filter(|n| *n <= max)
    };
    match parts.as_slice() {
        [h, m] => Some((num(h, 23)?, num(m, 59)?)),
        [h, m, s] if num(s, 0).is_some() => Some((num(h, 23)?, num(m, 59)?)),
        _ => None,
    }
}

fn cron_days(spec: &str) -> Option<String> {
    const DAYS: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let day = |d: &str| -> Option<u32> {
        let l = d.to_ascii_lowercase();
        DAYS.iter()
            .position(|f| l == *f || (l.len() == 3 && f.starts_with(&l)))
            .map(|i| i as u32)
    };
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once("..") {
            Some((a, b)) => out.push(format!("{}-{}", day(a)?, day(b)?)),
            None => out.push(day(part)?.to_string()),
        }
    }
    Some(out.join(","))
}

/// Checks the five fields of a cron time (numbers, `*`, lists, ranges,
/// steps).
pub fn check_cron_time(t: &str) -> Result<()> {
    let fields: Vec<&str> = t.split_whitespace().collect();
    let ok = fields.len() == 5
        && fields.iter().all(|f| {
            f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"*,-/".contains(&b))
        });
    if !ok {
        bail!(
            "bad cron time {t:?}: expected five fields (minute hour day month weekday), e.g. \"30 3 * * *\""
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn job(cmd: &[&str]) -> JobSpec {
        JobSpec {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            on_calendar: "daily".into(),
            randomized_delay: 1800,
            kind: Job::Snapshot,
        }
    }

    #[test]
    fn service_and_timer_text() {
        let j = job(&[
            "/usr/local/bin/lifeboat",
            "--config",
            "/etc/lifeboat/my 100%.toml",
            "snapshot",
            "--rebuild-rescue",
        ]);
        let s = service_unit(&j, true);
        assert!(
            s.contains("\nDocumentation=man:lifeboat-snapshot(8)\n"),
            "{s}"
        );
        assert!(!service_unit(&j, false).contains("Documentation="));
        assert!(s.contains(
            "\nExecStart=/usr/local/bin/lifeboat --config \"/etc/lifeboat/my 100%%.toml\" snapshot --rebuild-rescue\n"
        ), "{s}");
        for want in [
            "Type=oneshot\n",
            "SuccessExitStatus=1\n",
            "SyslogIdentifier=lifeboat\n",
            "Description=lifeboat: layout snapshot and rescue image rebuild when needed\n",
            "OnFailure=lifeboat-notify@%n.service\n",
            "TimeoutStartSec=1d\n",
        ] {
            assert!(s.contains(want), "{want:?} missing:\n{s}");
        }
        // Nothing that adds mounts the layout would record, or hides disks.
        for banned in [
            "ProtectSystem",
            "ProtectHome",
            "PrivateTmp",
            "PrivateDevices",
            "ReadWritePaths",
            "DeviceAllow",
            "ProtectClock",
        ] {
            assert!(
                !s.lines().any(|l| l.starts_with(banned)),
                "{banned} set:\n{s}"
            );
        }
        let t = timer_unit(&j, true);
        assert!(
            t.contains("\nDocumentation=man:lifeboat-snapshot(8)\n"),
            "{t}"
        );
        assert!(!timer_unit(&j, false).contains("Documentation="));
        for want in [
            "OnCalendar=daily\n",
            "RandomizedDelaySec=1800\n",
            "Persistent=true\n",
            "WantedBy=timers.target\n",
        ] {
            assert!(t.contains(want), "{want:?} missing:\n{t}");
        }
        assert_eq!(systemd_quote("a$b"), "a$$b");
        assert_eq!(systemd_quote("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    /// `systemd-analyze verify` accepts the units. Where systemd-analyze is
    /// missing this fails, unless LIFEBOAT_SKIP_SYSTEMD_ANALYZE=1 says that
    /// is expected.
    #[test]
    fn units_pass_systemd_analyze_verify() {
        if crate::exec::which("systemd-analyze").is_none() {
            assert!(
                std::env::var("LIFEBOAT_SKIP_SYSTEMD_ANALYZE").as_deref() == Ok("1"),
                "systemd-analyze is not installed (package systemd); set \
                 LIFEBOAT_SKIP_SYSTEMD_ANALYZE=1 to skip this check"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // ExecStart must name an executable file.
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        for (i, cmd) in [
            vec![exe, "snapshot"],
            vec![
                exe,
                "--config",
                "/etc/x y.toml",
                "snapshot",
                "--rebuild-rescue",
                "--backup",
            ],
        ]
        .into_iter()
        .enumerate()
        {
            let mut j = job(&cmd);
            if i == 1 {
                j.on_calendar = "Mon..Fri *-*-* 03:30:00".into();
            }
            let sub = dir.path().join(i.to_string());
            std::fs::create_dir(&sub).unwrap();
            // Without the man page installed, as on a machine where lifeboat
            // came without its pages: verified with man page checks on.
            std::fs::write(sub.join(SERVICE), service_unit(&j, false)).unwrap();
            std::fs::write(sub.join(TIMER), timer_unit(&j, false)).unwrap();
            verify(&sub);
        }
        // The check can fail: a broken unit is reported.
        let bad = dir.path().join("bad");
        std::fs::create_dir(&bad).unwrap();
        let mut j = job(&[exe, "snapshot"]);
        j.on_calendar = "every other tuesday".into();
        std::fs::write(bad.join(SERVICE), service_unit(&j, false)).unwrap();
        std::fs::write(bad.join(TIMER), timer_unit(&j, false)).unwrap();
        let out = analyze(&bad);
        assert!(!out.is_empty(), "systemd-analyze accepted a bad OnCalendar");
        // A reference to a page that is not installed fails the check
        // (what the units wrote before they looked for the page).
        if crate::exec::Cmd::new("man")
            .args(["-w", "8", "lifeboat-snapshot"])
            .output_any()
            .is_ok_and(|o| o.code != 0)
        {
            let missing = dir.path().join("missing");
            std::fs::create_dir(&missing).unwrap();
            let j = job(&[exe, "snapshot"]);
            std::fs::write(missing.join(SERVICE), service_unit(&j, true)).unwrap();
            std::fs::write(missing.join(TIMER), timer_unit(&j, true)).unwrap();
            let out = analyze(&missing);
            assert!(out.contains("lifeboat-snapshot(8)"), "{out}");
        }
    }

    /// Runs `systemd-analyze verify` on the timer and service in `dir` and
    /// returns what it reported.
    fn analyze(dir: &Path) -> String {
        analyze_units(&[dir.join(TIMER), dir.join(SERVICE)], None)
    }

    /// `systemd-analyze verify --man=yes` of `units`, with the man pages
    /// of `man` (a MANPATH folder) if given: what it reported about ours.
    fn analyze_units(units: &[std::path::PathBuf], man: Option<&Path>) -> String {
        let mut cmd = crate::exec::Cmd::new("systemd-analyze")
            .args(["verify", "--man=yes"])
            .args(units)
            .env("SYSTEMD_LOG_LEVEL", "warning");
        if let Some(m) = man {
            cmd = cmd.env("MANPATH", m);
        }
        let out = cmd.output_any().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Complaints about other units of the host are not ours.
        let ours: Vec<&str> = text.lines().filter(|l| l.contains("lifeboat")).collect();
        if out.code != 0 && ours.is_empty() {
            return format!("exit {}: {text}", out.code);
        }
        ours.join("\n")
    }

    /// The units the package ships pass `systemd-analyze verify` with
    /// their man pages (generated as the package does) and the
    /// notification template they name; so do they with the drop-ins
    /// `schedule install` writes, and a bad calendar in a drop-in is
    /// caught (the drop-ins are read).
    #[test]
    fn shipped_units_and_drop_ins_pass_systemd_analyze_verify() {
        if crate::exec::which("systemd-analyze").is_none() {
            assert!(
                std::env::var("LIFEBOAT_SKIP_SYSTEMD_ANALYZE").as_deref() == Ok("1"),
                "systemd-analyze is not installed (package systemd)"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let units = dir.path().join("system");
        let man = dir.path().join("man");
        crate::cli::man_pages(&man.join("man8")).unwrap();
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let files = write_shipped(&units, exe, crate::cli::has_page).unwrap();
        assert_eq!(files.len(), 5, "{files:?}");
        let text = std::fs::read_to_string(units.join(SERVICE)).unwrap();
        assert!(
            text.contains(&format!("\nExecStart={exe} snapshot\n")),
            "{text}"
        );
        assert!(text.starts_with("# Shipped by the lifeboat package."));
        let template = std::fs::read_to_string(units.join(NOTIFY_TEMPLATE)).unwrap();
        assert!(
            template.contains(&format!("\nExecStart={exe} notify --failed-unit %i\n")),
            "{template}"
        );
        assert!(!template.contains("OnFailure"), "{template}");
        // The template verifies as the instance OnFailure= starts.
        let instance = dir
            .path()
            .join("lifeboat-notify@lifeboat-snapshot.service.service");
        std::fs::copy(units.join(NOTIFY_TEMPLATE), &instance).unwrap();
        let out = analyze_units(&[instance], Some(&man));
        assert!(
            out.is_empty(),
            "systemd-analyze verify of the template:\n{out}"
        );
        let all: Vec<_> = [SERVICE, TIMER, DRILL_SERVICE, DRILL_TIMER]
            .iter()
            .map(|u| units.join(u))
            .collect();
        let out = analyze_units(&all, Some(&man));
        assert!(out.is_empty(), "systemd-analyze verify:\n{out}");

        let mut j = job(&[exe, "--config", "/etc/x y.toml", "snapshot", "--backup"]);
        j.on_calendar = "Mon..Fri *-*-* 03:30:00".into();
        for (unit, text) in [(SERVICE, service_drop_in(&j)), (TIMER, timer_drop_in(&j))] {
            let d = units.join(format!("{unit}.d"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join(DROP_IN), text).unwrap();
        }
        let out = analyze_units(&all, Some(&man));
        assert!(
            out.is_empty(),
            "systemd-analyze verify with drop-ins:\n{out}"
        );
        j.on_calendar = "every other tuesday".into();
        let bad = units.join(format!("{TIMER}.d")).join(DROP_IN);
        std::fs::write(&bad, timer_drop_in(&j)).unwrap();
        let out = analyze_units(&all, Some(&man));
        assert!(out.contains("every other tuesday"), "{out}");
    }

    #[test]
    fn drop_ins_replace_the_lists() {
        let mut j = job(&["/usr/sbin/lifeboat", "snapshot", "--rebuild-rescue"]);
        j.on_calendar = "Sun 04:00".into();
        let s = service_drop_in(&j);
        assert!(
            s.contains(
                "\n[Service]\nExecStart=\nExecStart=/usr/sbin/lifeboat snapshot --rebuild-rescue\n"
            ),
            "{s}"
        );
        assert!(written_by_schedule(&s));
        let t = timer_drop_in(&j);
        assert!(
            t.contains("\n[Timer]\nOnCalendar=\nOnCalendar=Sun 04:00\nRandomizedDelaySec=1800\n"),
            "{t}"
        );
        assert!(t.contains("\nDescription=lifeboat: layout snapshot and rescue image rebuild when needed (Sun 04:00)\n"));
        let page = notify_page(|p| p == "lifeboat");
        assert_eq!(page, Some("lifeboat"));
        let shipped = notify_unit("/x", page, Origin::Package);
        assert!(!written_by_schedule(&shipped));
        assert!(
            shipped.contains("\nDocumentation=man:lifeboat(8)\n"),
            "{shipped}"
        );
        let written = notify_unit("/x", None, Origin::Schedule);
        assert!(written_by_schedule(&written));
        assert!(!written.contains("Documentation="), "{written}");
    }

    fn verify(dir: &Path) {
        let out = analyze(dir);
        assert!(out.is_empty(), "systemd-analyze verify:\n{out}");
    }

    /// The delay is valid sh that cron keeps whole (no `%`) and waits at
    /// most the spread.
    #[test]
    fn cron_delay_runs_in_sh() {
        let d = cron_delay(1);
        assert!(!d.contains('%'));
        let start = std::time::Instant::now();
        let out = crate::exec::Cmd::new("/bin/sh")
            .arg("-c")
            .arg(format!("{d}echo done"))
            .read()
            .unwrap();
        assert_eq!(out.trim(), "done");
        assert!(start.elapsed().as_secs_f64() < 5.0);
        assert_eq!(cron_delay(0), "");
    }

    #[test]
    fn cron_fallback() {
        let j = job(&[
            "/usr/local/bin/lifeboat",
            "--state-dir",
            "/srv/life boat",
            "snapshot",
            "--backup",
            "--rebuild-rescue",
        ]);
        let c = cron_file(&j, &calendar_to_cron("*-*-* 03:30:00").unwrap());
        assert!(c.contains(
            "\n30 3 * * * root sleep $(shuf -i 0-1800 -n 1); /usr/local/bin/lifeboat --state-dir '/srv/life boat' snapshot --backup --rebuild-rescue 2>&1 | logger -t lifeboat\n"
        ), "{c}");
        assert!(c.contains("\nSHELL=/bin/sh\n"));
        assert!(c.contains("random moment up to 1800 s after"), "{c}");
        assert!(c.ends_with('\n'));
        let j = job(&["/x/lifeboat", "--config", "/etc/50%.toml", "snapshot"]);
        assert!(cron_file(&j, "0 0 * * *").contains("--config /etc/50\\%.toml snapshot 2>&1"));
        let mut j = j;
        j.randomized_delay = 0;
        assert!(cron_file(&j, "0 0 * * *").contains(" root /x/lifeboat --config"));

        for (cal, cron) in [
            ("daily", "0 0 * * *"),
            ("hourly", "0 * * * *"),
            ("weekly", "0 0 * * 1"),
            ("monthly", "0 0 1 * *"),
            ("03:15", "15 3 * * *"),
            ("Sun *-*-* 04:00", "0 4 * * 0"),
            ("Mon..Fri 22:05:00", "5 22 * * 1-5"),
            ("Mon,Thursday *-*-* 01:00", "0 1 * * 1,4"),
        ] {
            assert_eq!(calendar_to_cron(cal).unwrap(), cron, "{cal}");
            check_cron_time(cron).unwrap();
        }
        for bad in [
            "*-*-01 03:00",
            "03:00:30",
            "Funday 03:00",
            "25:00",
            "*:0/15",
        ] {
            let e = calendar_to_cron(bad).unwrap_err().to_string();
            assert!(e.contains("set schedule.cron"), "{bad}: {e}");
        }
        assert!(check_cron_time("30 3 * *").is_err());
        assert!(check_cron_time("30 3 * * * rm").is_err());
    }
}
