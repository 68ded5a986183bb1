//! The command line: clap definitions (one file per area) and dispatch.
//!
//! Every command returns its exit code; errors are printed once by main and
//! exit with 2, so that "different" (1) is never confused with "failed".

mod backup;
mod backup_engine;
mod config;
mod drill;
mod layout;
mod media;
mod notify;
mod recover;
mod rescue;
mod schedule;
mod snapshot;
mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, LoadOptions};

pub use backup::BackupCmd;
pub use layout::{LayoutCmd, SaveArgs};
pub use rescue::{InternalCmd, MkrescueArgs};
pub use status::render as render_status;

/// Exit code of a command that failed.
pub const EXIT_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Bare-metal disaster recovery for Linux servers",
    long_about = "lifeboat records a server's storage layout, backs up its files, builds a \
                  bootable rescue image, and rebuilds the same system on new disks from it.",
    propagate_version = true,
    max_term_width = 80
)]
pub struct Cli {
    /// Show each external command (-v) and more detail (-vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Configuration file [default: /etc/lifeboat/lifeboat.toml, or
    /// $LIFEBOAT_CONFIG].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// State folder: layout, snapshots, rescue image, run records
    /// [default: /var/lib/lifeboat, or state_dir in the configuration].
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Capture, show and compare the storage and boot layout.
    Layout {
        #[command(subcommand)]
        cmd: LayoutCmd,
    },

    /// Back up files, list, verify and restore backups.
    Backup {
        #[command(subcommand)]
        cmd: BackupCmd,
    },

    /// Build the bootable rescue image: vmlinuz, initrd and a hybrid ISO.
    Mkrescue(MkrescueArgs),

    /// Show what recovery would do on the disks present: mapping, sizes,
    /// every step. Writes nothing.
    Plan(recover::PlanArgs),

    /// Recreate the saved machine on the disks present, restore the backup
    /// and make it boot.
    Recover(recover::RecoverArgs),

    /// Recovery drill: the rescue image recovers the backup onto scratch
    /// disks in a QEMU guest, which must then boot. Exit 0: passed, 1: failed
    /// (the step is named), 2: could not run.
    Drill(drill::DrillArgs),

    /// Capture the layout and store it when it changed. Exit 0: unchanged,
    /// 1: changed and stored, 2: error.
    Snapshot(snapshot::SnapshotArgs),

    /// Install, show or remove the timer that takes snapshots and keeps
    /// the rescue image current.
    Schedule {
        #[command(subcommand)]
        cmd: schedule::ScheduleCmd,
    },

    /// Show the newest snapshot, rescue image, backup and verification,
    /// their ages, and whether the layout drifted.
    Status(status::StatusArgs),

    /// Monitoring plugin (Nagios, Icinga): exit 0 OK, 1 WARNING,
    /// 2 CRITICAL, 3 UNKNOWN.
    Check(status::CheckArgs),

    /// Send a notice through notify.mail_to and notify.command: a test,
    /// or a failed unit (from the units' OnFailure=).
    Notify(notify::NotifyArgs),

    /// Show the effective configuration.
    Config {
        #[command(subcommand)]
        cmd: config::ConfigCmd,
    },

    /// Helpers used by the rescue system itself.
    #[command(hide = true)]
    Internal {
        #[command(subcommand)]
        cmd: InternalCmd,
    },
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let opts = LoadOptions {
        path: cli.config,
        state_dir: cli.state_dir,
    };
    match cli.command {
        // Helpers of the rescue system's init work without a configuration.
        Command::Internal { cmd } => rescue::internal(cmd),
        // A plugin reports every failure as UNKNOWN itself.
        Command::Check(args) => Ok(status::check(args, &opts)),
        command => {
            let cfg = Config::load(&opts)?;
            match command {
                Command::Mkrescue(args) => rescue::mkrescue(args, &cfg),
                Command::Plan(args) => recover::plan(args, &cfg),
                Command::Recover(args) => recover::recover(args, &cfg),
                Command::Drill(args) => drill::run(args, &cfg),
                Command::Layout { cmd } => layout::run(cmd, &cfg),
                Command::Backup { cmd } => backup::run(cmd, &cfg),
                Command::Snapshot(args) => snapshot::run(args, &cfg),
                Command::Schedule { cmd } => schedule::run(cmd, &cfg),
                Command::Status(args) => status::status(args, &cfg),
                Command::Notify(args) => notify::run(args, &cfg),
                Command::Config { cmd } => config::run(cmd, &cfg),
                Command::Internal { .. } | Command::Check(_) => unreachable!("handled above"),
            }
        }
    }
}

/// Writes a man page per command (`lifeboat.8`, `lifeboat-backup-create.8`,
/// ...) into `dir`; returns the files written.
pub fn man_pages(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    use clap::CommandFactory;
    fn walk(
        cmd: &clap::Command,
        dir: &std::path::Path,
        out: &mut Vec<PathBuf>,
    ) -> anyhow::Result<()> {
        if cmd.is_hide_set() {
            return Ok(());
        }
        // build() named every subcommand `lifeboat-backup-create`.
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
        let path = dir.join(format!("{name}.8"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .section("8")
            .render(&mut buf)
            .with_context(|| format!("rendering the man page of {name}"))?;
        crate::util::write_atomic(&path, &buf, 0o644)?;
        out.push(path);
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub, dir, out)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut out = Vec::new();
    let mut cmd = Cli::command();
    cmd.build();
    walk(&cmd, dir, &mut out)?;
    Ok(out)
}

/// Whether [`man_pages`] writes the page `name` (`lifeboat-snapshot`):
/// the units name only pages that exist.
pub fn has_page(name: &str) -> bool {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build();
    let mut words = name.split('-');
    if words.next() != Some("lifeboat") {
        return false;
    }
    let mut at = &cmd;
    for w in words {
        match at.find_subcommand(w) {
            Some(sub) if !sub.is_hide_set() => at = sub,
            _ => return false,
        }
    }
    true
}

/// Writes the shell completions into `dir`: `bash/lifeboat.bash`,
/// `zsh/_lifeboat` and `fish/lifeboat.fish`; returns the files written.
pub fn completions(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    use clap::CommandFactory;
    use clap_complete::Shell;
    let mut out = Vec::new();
    for (shell, sub) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        let sub = dir.join(sub);
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        let mut cmd = Cli::command();
        let path = clap_complete::generate_to(shell, &mut cmd, "lifeboat", &sub)
            .with_context(|| format!("writing the {shell} completion into {}", sub.display()))?;
        out.push(path);
    }
    Ok(out)
}

/// The subcommand word of a command line (skipping global options and
/// their values), to treat `check`'s usage errors as UNKNOWN.
pub fn subcommand_word(args: &[std::ffi::OsString]) -> Option<&str> {
    use std::os::unix::ffi::OsStrExt;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_bytes() {
            b"--config" | b"--state-dir" => {
                it.next();
            }
            s if s.starts_with(b"-") => {}
            // A word that is not UTF-8 is no subcommand of ours.
            _ => return a.to_str().or(Some("")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// Help text stays within 80 columns for every subcommand.
    #[test]
    fn help_fits_in_80_columns() {
        fn walk(cmd: &mut clap::Command, path: &str) {
            let help = cmd.render_long_help().to_string();
            for line in help.lines() {
                assert!(
                    line.chars().count() <= 80,
                    "help of `{path}` has a line over 80 columns: {line:?}"
                );
            }
            for sub in cmd.get_subcommands_mut() {
                let name = format!("{path} {}", sub.get_name());
                walk(sub, &name);
            }
        }
        walk(&mut Cli::command(), "lifeboat");
    }
}
