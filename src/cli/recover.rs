//! `lifeboat plan` and `lifeboat recover`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::recover;

/// Where the layout, the backup and the disks come from (shared by plan and
/// recover).
#[derive(Debug, Args)]
pub struct Source {
    /// Layout to recreate [default: the layout in the rescue image, else the
    /// one in the backup, else /var/lib/lifeboat/layout.json].
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,

    /// Backup to restore: a folder, or nfs://host/export/path, cifs://...
    #[arg(long, value_name = "DIR|URL")]
    pub backup: Option<String>,

    /// Restore the newest backup generation started at or before this time:
    /// "2026-11-20 14:00" (local time), 2026-11-20 (the end of that day) or
    /// RFC 3339 [default: the newest].
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// age identity (or unprotected OpenSSH private key) of an encrypted
    /// backup [default: `identity` in the answers file, else asked on the
    /// terminal]. The rescue image never holds it.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Put the old disk OLD (path, name, serial or WWN) on the new disk NEW
    /// (repeatable), e.g. --map /dev/sda=/dev/nvme0n1.
    #[arg(long = "map", value_name = "OLD=NEW")]
    pub map: Vec<String>,

    /// Recreate the disks without restoring the backup: without it, a plan
    /// that would restore nothing from a given backup (or leave out any of
    /// its file systems) is an error.
    #[arg(long)]
    pub no_restore: bool,

    /// Give the network configuration of the old interface OLD to the
    /// interface NEW here (names or MAC addresses, repeatable), e.g.
    /// --map-nic ens3=eth0; without it: same MAC, then same driver in PCI
    /// order, then PCI order.
    #[arg(long = "map-nic", value_name = "OLD=NEW")]
    pub map_nic: Vec<String>,

    /// Boot firmware of the recovered system: uefi, bios, or same (never
    /// convert) [default: the firmware the rescue booted under, when the
    /// source cannot boot under it]. Converting to UEFI turns an MBR boot
    /// disk into GPT, adds an EFI system partition and installs GRUB
    /// x86_64-efi; to BIOS adds a BIOS boot partition and GRUB i386-pc.
    #[arg(long, value_name = "uefi|bios|same")]
    pub firmware: Option<crate::plan::firmware::FirmwareChoice>,

    /// Accept loop devices as target disks (for tests on image files).
    #[arg(long, hide = true)]
    pub allow_loop: bool,

    /// Mount the new system here [default: /mnt/lifeboat].
    #[arg(long, value_name = "DIR", hide = true)]
    pub mount_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub source: Source,

    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub source: Source,

    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,

    /// Overwrite target disks that hold data this plan did not write
    /// (partition table, file system, md, LVM or LUKS signature); without
    /// it, recover refuses before any write and names what is there.
    #[arg(long)]
    pub wipe: bool,

    /// Show every command without running any.
    #[arg(long)]
    pub dry_run: bool,

    /// File holding the LUKS passphrase (else it is asked on the terminal).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Run without any question, reading the answers file (recover.toml on
    /// the LIFEBOAT-AUTO job disk) for mapping, backup and keys.
    #[arg(long)]
    pub unattended: bool,

    /// Answers file for unattended recovery [default:
    /// /run/lifeboat/job/recover.toml].
    #[arg(long, value_name = "FILE")]
    pub answers: Option<PathBuf>,

    /// Record of completed steps, for resuming after a failure [default:
    /// /run/lifeboat/recover-state.json, on the job disk when unattended].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// Also write the JSON report to this file (it always goes to
    /// /var/log/lifeboat/recovery-report.json in the recovered system).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Regenerate the initramfs of the recovered system even when it already
    /// has the drivers of the new disks and no configuration it holds
    /// changed.
    #[arg(long)]
    pub regenerate_initramfs: bool,

    /// PBKDF time for new LUKS key slots, in milliseconds (cryptsetup
    /// --iter-time).
    #[arg(long, value_name = "MS")]
    pub luks_iter_time: Option<u32>,

    /// A drill's recovery: place the boot-report unit of `lifeboat drill`
    /// into the recovered system (a scratch copy).
    #[arg(long, hide = true)]
    pub drill: bool,
}

fn options(s: Source, cfg: &crate::config::Config) -> recover::Options {
    recover::Options {
        engine: super::backup_engine::settings(cfg),
        layout: s.layout,
        backup: s.backup,
        identity: s.identity,
        maps: s.map,
        nic_maps: s.map_nic,
        firmware: s.firmware.unwrap_or_default(),
        allow_loop: s.allow_loop,
        no_restore: s.no_restore,
        at: s.at,
        mount_root: s
            .mount_root
            .unwrap_or_else(|| PathBuf::from(crate::plan::MOUNT_ROOT)),
        ..recover::Options::default()
    }
}

pub fn plan(args: PlanArgs, cfg: &crate::config::Config) -> Result<u8> {
    recover::print_plan(&options(args.source, cfg), args.json)
}

pub fn recover(args: RecoverArgs, cfg: &crate::config::Config) -> Result<u8> {
    let opts = recover::Options {
        yes: args.yes,
        dry_run: args.dry_run,
        key_file: args.key_file,
        unattended: args.unattended,
        answers: args.answers,
        state: args.state,
        report: args.report,
        luks_iter_time_ms: args.luks_iter_time,
        regenerate_initramfs: args.regenerate_initramfs,
        wipe: args.wipe,
        drill: args.drill,
        ..options(args.source, cfg)
    };
    recover::recover(&opts)
}
