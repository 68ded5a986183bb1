//! The command line: clap definitions (one file per area) and dispatch.
//!
//! Every command returns its exit code; errors are printed once by main and
//! exit with 2, so that "different" (1) is never confused with "failed".

mod backup;
mod layout;
mod recover;
mod rescue;

use clap::{Parser, Subcommand};

pub use backup::BackupCmd;
pub use layout::{LayoutCmd, SaveArgs};
pub use rescue::{InternalCmd, MkrescueArgs};

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

    /// Helpers used by the rescue system itself.
    #[command(hide = true)]
    Internal {
        #[command(subcommand)]
        cmd: InternalCmd,
    },
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Layout { cmd } => layout::run(cmd),
        Command::Backup { cmd } => backup::run(cmd),
        Command::Mkrescue(args) => rescue::mkrescue(args),
        Command::Plan(args) => recover::plan(args),
        Command::Recover(args) => recover::recover(args),
        Command::Internal { cmd } => rescue::internal(cmd),
    }
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
