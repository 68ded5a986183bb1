//! The configuration file, `/etc/lifeboat/lifeboat.toml`: what an admin sets
//! once instead of on every command line.
//!
//! Every value has a source: the built-in default (some derived from
//! `state_dir`), the file (with its line), an environment variable
//! (`LIFEBOAT_SECTION_KEY`, e.g. `LIFEBOAT_BACKUP_DESTINATION`) or a
//! command-line flag. Later sources win: default < file < environment <
//! flag. An unknown key or a bad value is an error naming the file, the
//! line and the key. `docs/lifeboat.toml.example` documents every key.

mod value;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

pub use value::{fmt_duration, Choice, ConfValue, Count, Duration, Level};

/// Where the configuration is read from unless `--config` or
/// `LIFEBOAT_CONFIG` names another file.
pub const DEFAULT_PATH: &str = "/etc/lifeboat/lifeboat.toml";
/// The environment variable that names the configuration file.
pub const PATH_ENV: &str = "LIFEBOAT_CONFIG";
/// Default state folder: layout, snapshots, rescue image, run records.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lifeboat";

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Default,
    /// A default built from another key (`state_dir`).
    Derived {
        from: String,
    },
    File {
        path: PathBuf,
        line: usize,
    },
    Env {
        var: String,
    },
    Flag {
        flag: String,
    },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::Derived { from } => write!(f, "default, from {from}"),
            Source::File { path, line } => write!(f, "{} line {line}", path.display()),
            Source::Env { var } => write!(f, "environment {var}"),
            Source::Flag { flag } => write!(f, "flag {flag}"),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Setting<T> {
    fn new(value: T) -> Setting<T> {
        Setting {
            value,
            source: Source::Default,
        }
    }

    fn set_flag(&mut self, value: T, flag: &str) {
        self.value = value;
        self.source = Source::Flag {
            flag: flag.to_string(),
        };
    }

    /// A flag given on the command line overrides the configuration.
    pub fn flag(&mut self, value: Option<T>, flag: &str) {
        if let Some(v) = value {
            self.set_flag(v, flag);
        }
    }
}

impl<T> Setting<Option<T>> {
    /// A flag with a value overrides an optional setting.
    pub fn flag_some(&mut self, value: Option<T>, flag: &str) {
        if let Some(v) = value {
            self.set_flag(Some(v), flag);
        }
    }
}

impl<T> Setting<Vec<T>> {
    /// A repeatable flag, given at least once, replaces the configured list.
    pub fn flag_list(&mut self, values: Vec<T>, flag: &str) {
        if !values.is_empty() {
            self.set_flag(values, flag);
        }
    }
}

impl Setting<bool> {
    /// A switch given on the command line turns the setting on.
    pub fn flag_on(&mut self, on: bool, flag: &str) {
        if on {
            self.set_flag(true, flag);
        }
    }
}

/// One setting, whatever its type, for the generic passes (file,
/// environment, show).
trait AnySetting {
    fn set_toml(&mut self, v: &toml::Value, source: Source) -> Result<(), String>;
    fn set_env(&mut self, s: &str, source: Source) -> Result<(), String>;
    fn show(&self) -> Option<String>;
    fn json(&self) -> serde_json::Value;
    fn source(&self) -> &Source;
}

impl<T: ConfValue> AnySetting for Setting<T> {
    fn set_toml(&mut self, v: &toml::Value, source: Source) -> Result<(), String> {
        self.value = T::from_toml(v)?;
        self.source = source;
        Ok(())
    }
    fn set_env(&mut self, s: &str, source: Source) -> Result<(), String> {
        self.value = T::from_env(s)?;
        self.source = source;
        Ok(())
    }
    fn show(&self) -> Option<String> {
        self.value.to_toml()
    }
    fn json(&self) -> serde_json::Value {
        self.value.to_json()
    }
    fn source(&self) -> &Source {
        &self.source
    }
}

/// Severity of a drifted layout for `lifeboat check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlertLevel {
    Warning,
    Critical,
}

/// Every key of the file, once: its section, name, type and default. From
/// this table come the section structs, [`Config`], the built-in defaults,
/// `config show`, the environment variable of each key
/// ([`Config::env_var`]: `LIFEBOAT_SECTION_KEY`) and the walk that applies
/// the file, the environment and the command-line flags
/// ([`Config::apply_flags`]) in that order of precedence.
macro_rules! settings {
    (
        $(
            $(#[$smeta:meta])*
            [$section:ident] $Struct:ident {
                $( $(#[$kmeta:meta])* $key:ident: $T:ty = $default:expr, )*
            }
        )*
    ) => {
        $(
            $(#[$smeta])*
            #[derive(Debug, Clone)]
            pub struct $Struct {
                $( $(#[$kmeta])* pub $key: Setting<$T>, )*
            }

            impl $Struct {
                fn defaults() -> $Struct {
                    $Struct { $( $key: Setting::new($default), )* }
                }

                fn visit(
                    &mut self,
                    f: &mut dyn FnMut(&'static str, &mut dyn AnySetting) -> Result<()>,
                ) -> Result<()> {
                    $( f(concat!(stringify!($section), ".", stringify!($key)), &mut self.$key)?; )*
                    Ok(())
                }
            }
        )*

        /// The effective configuration.
        #[derive(Debug, Clone)]
        pub struct Config {
            /// The configuration file looked at, and why that one.
            pub path: PathBuf,
            pub path_source: Source,
            /// Whether it exists (a missing default file means built-in defaults).
            pub file_found: bool,
            pub state_dir: Setting<PathBuf>,
            $( pub $section: $Struct, )*
        }

        /// The sections of the file, in the order `config show` prints them.
        pub const SECTIONS: &[&str] = &[ $( stringify!($section), )* ];

        impl Default for Config {
            fn default() -> Config {
                let mut c = Config {
                    path: PathBuf::from(DEFAULT_PATH),
                    path_source: Source::Default,
                    file_found: false,
                    state_dir: Setting::new(PathBuf::from(DEFAULT_STATE_DIR)),
                    $( $section: $Struct::defaults(), )*
                };
                c.derive_paths();
                c
            }
        }

        impl Config {
            /// Calls `f` with every key and its setting, in file order.
            fn visit(
                &mut self,
                f: &mut dyn FnMut(&'static str, &mut dyn AnySetting) -> Result<()>,
            ) -> Result<()> {
                f("state_dir", &mut self.state_dir)?;
                $( self.$section.visit(f)?; )*
                Ok(())
            }
        }
    };
}

settings! {
    /// `[capture]`: how the layout is captured (`layout save`, `snapshot`).
    [capture] CaptureConfig {
        /// Default: `state_dir`/layout.json.
        layout_file: PathBuf = PathBuf::new(),
        only_disks: Vec<String> = Vec::new(),
        include_disks: Vec<String> = Vec::new(),
        exclude_disks: Vec<String> = Vec::new(),
        luks_headers: bool = false,
    }

    /// `[backup]`: defaults of `backup create` and the scheduled backup.
    [backup] BackupConfig {
        destination: Option<String> = None,
        mount_options: Option<String> = None,
        excludes: Vec<String> = Vec::new(),
        /// age recipients (or files of them) every generation is encrypted to.
        encrypt_to: Vec<String> = Vec::new(),
        compression: Choice<crate::backup::Compression> = Choice(crate::backup::Compression::Zstd),
        level: Option<Level> = None,
        threads: Option<Count<1>> = None,
        keep: Option<Count<1>> = None,
        incremental: bool = false,
        /// An incremental chain ends (the next backup is a full) once it holds
        /// this many generations; 0: never by count.
        full_every: Count<0> = Count(crate::backup::create::FULL_EVERY),
        /// ... or once its full is this old.
        full_every_age: Option<Duration> = None,
        /// Calendar retention (`--keep-last N`...); 0: the rule is off.
        keep_last: Count<0> = Count(0),
        keep_hourly: Count<0> = Count(0),
        keep_daily: Count<0> = Count(0),
        keep_weekly: Count<0> = Count(0),
        keep_monthly: Count<0> = Count(0),
        keep_yearly: Count<0> = Count(0),
    }

    /// `[hooks]`: commands run around every backup.
    [hooks] HooksConfig {
        pre_backup: Option<String> = None,
        post_backup: Option<String> = None,
        timeout: Duration = Duration(crate::backup::hooks::DEFAULT_TIMEOUT),
        on_failure: Choice<crate::backup::hooks::OnFailure> =
            Choice(crate::backup::hooks::OnFailure::Stop),
    }

    /// `[rescue]`: defaults of `mkrescue` and the scheduled rebuild.
    [rescue] RescueConfig {
        /// Default: `state_dir`/rescue.
        output: PathBuf = PathBuf::new(),
        kernel: Option<PathBuf> = None,
        layout: Option<PathBuf> = None,
        compression: Choice<crate::rescue::Compression> = Choice(crate::rescue::Compression::Zstd),
        append: Vec<String> = Vec::new(),
        add_programs: Vec<String> = Vec::new(),
        iso: bool = true,
        /// Where copies of each built image go (src/rescue/copy).
        destination: Option<String> = None,
        keep_copies: Count<1> = Count(3),
        mount_options: Option<String> = None,
        ssh_options: Vec<String> = Vec::new(),
        /// Public keys for SSH into the rescue (puts an SSH server in).
        ssh_authorized_keys: Option<PathBuf> = None,
        /// auto (dropbear when installed, else OpenSSH), dropbear, openssh.
        ssh_server: Choice<crate::rescue::ssh::SshServerChoice> =
            Choice(crate::rescue::ssh::SshServerChoice::Auto),
        /// Where the signed shim and GRUB are looked up (default `/`).
        secure_boot_root: Option<PathBuf> = None,
    }

    /// `[snapshot]`.
    [snapshot] SnapshotConfig {
        keep: Count<1> = Count(30),
    }

    /// `[schedule]`: what `schedule install` puts into the timer or cron file.
    [schedule] ScheduleConfig {
        on_calendar: String = "daily".into(),
        randomized_delay: Duration = Duration(30 * 60),
        cron: Option<String> = None,
        rebuild_rescue: bool = false,
        backup: bool = false,
        max_image_age: Duration = Duration(7 * 86400),
    }

    /// `[monitor]`: thresholds of `status` and `check`.
    [monitor] MonitorConfig {
        warn_age: Duration = Duration(8 * 86400),
        crit_age: Duration = Duration(15 * 86400),
        drift: Choice<AlertLevel> = Choice(AlertLevel::Warning),
        require_backup: bool = true,
        live: bool = false,
        drill_warn_age: Duration = Duration(35 * 86400),
        require_drill: bool = false,
        /// node_exporter's textfile collector folder for `status --prometheus`.
        textfile_dir: Option<PathBuf> = None,
    }

    /// `[notify]`: who hears of a failed or warning scheduled run, a drifted
    /// layout, a failed verify or drill.
    [notify] NotifyConfig {
        /// Mail recipients, through the local `sendmail -t`.
        mail_to: Vec<String> = Vec::new(),
        /// A program run through `/bin/sh -c` with the outcome in its
        /// environment and as JSON on stdin.
        command: Option<String> = None,
        /// The sendmail program.
        sendmail: PathBuf = PathBuf::from("/usr/sbin/sendmail"),
        /// How long one channel may take before it is stopped.
        timeout: Duration = Duration(120),
    }

    /// `[drill]`: defaults of `lifeboat drill`.
    [drill] DrillConfig {
        work: PathBuf = PathBuf::from(crate::drill::DEFAULT_WORK),
        firmware: Choice<crate::drill::machine::FirmwareChoice> =
            Choice(crate::drill::machine::FirmwareChoice::Auto),
        accel: Choice<crate::drill::qemu::AccelChoice> =
            Choice(crate::drill::qemu::AccelChoice::Auto),
        memory: Count<256> = Count(2048),
        cpus: Count<1> = Count(2),
        timeout: Duration = Duration(30 * 60),
        key_file: Option<PathBuf> = None,
        on_calendar: String = "monthly".into(),
    }

    /// `[restic]`: credentials and options of `restic:` destinations.
    [restic] ResticConfig {
        /// RESTIC_PASSWORD_FILE for restic (the environment's wins when set).
        password_file: Option<PathBuf> = None,
        /// KEY=VALUE lines (AWS_ACCESS_KEY_ID...) set for restic.
        environment_file: Option<PathBuf> = None,
        /// Extended options (`restic -o`), e.g. `sftp.command=ssh -p 2222 host -s sftp`.
        options: Vec<String> = Vec::new(),
    }

    /// `[borg]`: credentials of `borg:` destinations.
    [borg] BorgConfig {
        /// BORG_PASSCOMMAND for borg (the environment's wins when set).
        passcommand: Option<String> = None,
        /// KEY=VALUE lines (BORG_PASSPHRASE, BORG_RSH...) set for borg.
        environment_file: Option<PathBuf> = None,
    }
}

impl BackupConfig {
    /// The retention policy the configuration sets (`keep`, `keep_*`).
    pub fn retention(&self) -> crate::backup::retention::Policy {
        crate::backup::retention::Policy {
            chains: self.keep.value.map(|k| k.0 as usize),
            last: self.keep_last.value.0 as usize,
            hourly: self.keep_hourly.value.0 as usize,
            daily: self.keep_daily.value.0 as usize,
            weekly: self.keep_weekly.value.0 as usize,
            monthly: self.keep_monthly.value.0 as usize,
            yearly: self.keep_yearly.value.0 as usize,
        }
    }
}

impl HooksConfig {
    pub fn hooks(&self) -> crate::backup::hooks::Hooks {
        crate::backup::hooks::Hooks {
            pre_backup: self.pre_backup.value.clone(),
            post_backup: self.post_backup.value.clone(),
            timeout: std::time::Duration::from_secs(self.timeout.value.0.max(1) as u64),
            on_failure: self.on_failure.value.0,
        }
    }
}

/// What the command line says about the configuration itself.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config FILE`.
    pub path: Option<PathBuf>,
    /// `--state-dir DIR`.
    pub state_dir: Option<PathBuf>,
}

impl Config {
    /// Every key, `section.key` (or `key` at the top), in file order.
    pub fn keys() -> Vec<&'static str> {
        let mut keys = Vec::new();
        Config::default()
            .visit(&mut |k, _| {
                keys.push(k);
                Ok(())
            })
            .expect("collecting keys cannot fail");
        keys
    }

    /// The environment variable that sets `key`: `LIFEBOAT_BACKUP_KEEP`.
    pub fn env_var(key: &str) -> String {
        format!("LIFEBOAT_{}", key.replace('.', "_").to_ascii_uppercase())
    }

    /// Reads the configuration the command line and the process
    /// environment point at.
    pub fn load(opts: &LoadOptions) -> Result<Config> {
        Config::load_with(opts, &|k| std::env::var(k).ok())
    }

    /// [`Config::load`] with the environment given as a function (tests).
    pub fn load_with(opts: &LoadOptions, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let mut c = Config::default();
        let (path, source) = match (&opts.path, env(PATH_ENV)) {
            (Some(p), _) => (
                p.clone(),
                Source::Flag {
                    flag: "--config".into(),
                },
            ),
            (None, Some(p)) if !p.is_empty() => (
                PathBuf::from(p),
                Source::Env {
                    var: PATH_ENV.into(),
                },
            ),
            _ => (PathBuf::from(DEFAULT_PATH), Source::Default),
        };
        c.path = path;
        c.path_source = source;
        match std::fs::read_to_string(&c.path) {
            Ok(text) => {
                c.file_found = true;
                let path = c.path.clone();
                c.apply_file(&path, &text)?;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && c.path_source == Source::Default => {
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                    "cannot read configuration {} (named by {}); fix the path or create the file",
                    c.path.display(),
                    c.path_source
                )
                })
            }
        }
        c.apply_env(env)?;
        if let Some(dir) = &opts.state_dir {
            c.state_dir.set_flag(dir.clone(), "--state-dir");
        }
        c.derive_paths();
        c.validate()?;
        Ok(c)
    }

    /// Parses the file's text and applies every key it sets.
    pub fn apply_file(&mut self, path: &Path, text: &str) -> Result<()> {
        let here = |span: Option<std::ops::Range<usize>>| -> String {
            match span {
                Some(s) => format!("{} line {}", path.display(), line_of(text, s.start)),
                None => path.display().to_string(),
            }
        };
        let spans = match toml::de::DeTable::parse(text) {
            Ok(t) => t.into_inner(),
            Err(e) => bail!(
                "{}: {}; fix the TOML syntax",
                here(e.span()),
                e.message().trim()
            ),
        };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: {}", here(e.span()), e.message()))?;
        let known = Config::keys();
        // Every key of the file must be known; note the line of each.
        let mut lines: Vec<(String, usize)> = Vec::new();
        for (k, v) in spans.iter() {
            let name = k.get_ref().to_string();
            let line = line_of(text, k.span().start);
            if SECTIONS.contains(&name.as_str()) {
                let toml::de::DeValue::Table(t) = v.get_ref() else {
                    bail!(
                        "{} line {line}: key `{name}` must be a section ([{name}]); see {}",
                        path.display(),
                        EXAMPLE_HINT
                    );
                };
                for (k2, _) in t.iter() {
                    let full = format!("{name}.{}", k2.get_ref());
                    let line = line_of(text, k2.span().start);
                    if !known.contains(&full.as_str()) {
                        bail!(
                            "{} line {line}: unknown key `{full}`; the keys of [{name}] are {}",
                            path.display(),
                            list_keys(&known, &format!("{name}."))
                        );
                    }
                    lines.push((full, line));
                }
            } else if known.contains(&name.as_str()) {
                lines.push((name, line));
            } else {
                bail!(
                    "{} line {line}: unknown key `{name}`; top-level keys are {} and the sections [{}]",
                    path.display(),
                    list_keys(&known, ""),
                    SECTIONS.join("], [")
                );
            }
        }
        self.visit(&mut |key, setting| {
            let Some((_, line)) = lines.iter().find(|(k, _)| k == key) else {
                return Ok(());
            };
            let value = match key.split_once('.') {
                Some((section, k)) => &doc[section][k],
                None => &doc[key],
            };
            let source = Source::File {
                path: path.to_path_buf(),
                line: *line,
            };
            setting
                .set_toml(value, source)
                .map_err(|e| anyhow::anyhow!("{} line {line}: key `{key}`: {e}", path.display()))
        })
    }

    fn apply_env(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
        self.visit(&mut |key, setting| {
            let var = Config::env_var(key);
            if let Some(v) = env(&var) {
                setting
                    .set_env(&v, Source::Env { var: var.clone() })
                    .map_err(|e| anyhow::anyhow!("environment {var} (key `{key}`): {e}"))?;
            }
            Ok(())
        })
    }

    /// Paths that default to places in the state folder.
    fn derive_paths(&mut self) {
        let state = self.state_dir.value.clone();
        let derived = Source::Derived {
            from: "state_dir".into(),
        };
        for (setting, name) in [
            (&mut self.capture.layout_file, "layout.json"),
            (&mut self.rescue.output, "rescue"),
        ] {
            if matches!(setting.source, Source::Default | Source::Derived { .. }) {
                setting.value = state.join(name);
                setting.source = derived.clone();
            }
        }
    }

    /// Checks that relate two keys; names the key and where it was set.
    pub fn validate(&self) -> Result<()> {
        let (w, c) = (&self.monitor.warn_age, &self.monitor.crit_age);
        if w.value > c.value {
            bail!(
                "monitor.warn_age ({}, {}) is longer than monitor.crit_age ({}, {}); \
                 the warning age must not exceed the critical age",
                fmt_duration(w.value.0),
                w.source,
                fmt_duration(c.value.0),
                c.source
            );
        }
        for a in &self.notify.mail_to.value {
            if !crate::notify::valid_address(a) {
                bail!(
                    "notify.mail_to ({}): {a:?} is not a mail address; give addresses like \"root\" \
                     or \"admin@example.com\" (no spaces, commas or line breaks)",
                    self.notify.mail_to.source
                );
            }
        }
        if self.schedule.on_calendar.value.trim().is_empty() {
            bail!(
                "schedule.on_calendar ({}) is empty; give a systemd calendar spec like \"daily\"",
                self.schedule.on_calendar.source
            );
        }
        Ok(())
    }

    /// The snapshots folder of the state folder.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.state_dir.value.join("snapshots")
    }

    /// Capture options from `[capture]` (the disks to capture, include and
    /// exclude) and the backup destination (its disk is not needed).
    pub fn capture_options(&self) -> crate::layout::CaptureOptions {
        let mut o = crate::layout::CaptureOptions {
            devices: self.capture.only_disks.value.clone(),
            include_disks: self.capture.include_disks.value.clone(),
            exclude_disks: self.capture.exclude_disks.value.clone(),
            ..crate::layout::CaptureOptions::default()
        };
        if let Some(d) = &self.backup.destination.value {
            if !d.contains("://") && crate::backup::engine::Repo::split(d).is_none() {
                o.backup_destinations.push(PathBuf::from(d));
            }
        }
        o
    }

    /// `config show`: every key as TOML with its source as a comment.
    pub fn show(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# configuration file: {} ({}{})\n",
            self.path.display(),
            self.path_source,
            if self.file_found {
                ""
            } else {
                "; not present, built-in defaults apply"
            }
        ));
        let mut me = self.clone();
        let mut section = String::new();
        me.visit(&mut |key, s| {
            let (sec, name) = key.split_once('.').unwrap_or(("", key));
            if sec != section {
                section = sec.to_string();
                out.push_str(&format!("\n[{sec}]\n"));
            }
            let line = match s.show() {
                Some(v) => format!("{name} = {v}"),
                None => format!("# {name} = (unset)"),
            };
            out.push_str(&format!("{line:<44} # {}\n", s.source()));
            Ok(())
        })
        .expect("showing cannot fail");
        out
    }

    /// `config show --json`: `{"file": ..., "settings": {key: {value, source}}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut settings = serde_json::Map::new();
        let mut me = self.clone();
        me.visit(&mut |key, s| {
            settings.insert(
                key.to_string(),
                serde_json::json!({ "value": s.json(), "source": s.source() }),
            );
            Ok(())
        })
        .expect("listing cannot fail");
        serde_json::json!({
            "file": self.path.display().to_string(),
            "file_source": self.path_source,
            "file_found": self.file_found,
            "settings": settings,
        })
    }
}

const EXAMPLE_HINT: &str = "docs/lifeboat.toml.example";

fn list_keys(known: &[&str], prefix: &str) -> String {
    known
        .iter()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|k| !k.contains('.'))
        .collect::<Vec<_>>()
        .join(", ")
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests;
