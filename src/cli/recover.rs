//! `lifeboat plan` and `lifeboat recover`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::plan::{render, Plan};
use crate::recover::{self, Event, Prepared};

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

    /// Start over: forget the steps an earlier run recorded as done (in
    /// --state) instead of resuming after them; disks holding data then
    /// need --wipe.
    #[arg(long)]
    pub start_over: bool,

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
    let p = recover::prepare(&options(args.source, cfg))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&p.plan)?);
    } else {
        show_plan(&p);
        if p.backup.is_none() {
            println!("\n(no --backup given: the plan recreates the disks only)");
        }
    }
    recover::check_errors(&p.plan)?;
    Ok(0)
}

/// The plan and its proof as `plan` and `recover` print them (after the
/// generation `--at` picked, when it did).
fn show_plan(p: &Prepared) {
    if let Some(line) = p.backup.as_ref().and_then(|b| b.picked_at.as_ref()) {
        println!("{line}");
    }
    print!("{}", render::render(&p.plan));
    println!("\n{}", p.proof.describe());
}

/// Recovery on the terminal: its events on stdout, the confirmation read
/// from stdin.
struct Terminal;

impl recover::Console for Terminal {
    fn show(&mut self, event: Event<'_>) {
        match event {
            Event::Plan(p) => show_plan(p),
            Event::Note(n) => println!("{n}"),
            Event::Resuming(n) => {
                println!("\nresuming: {n} steps were completed by an earlier run")
            }
            Event::Step {
                number,
                total,
                title,
            } => println!("\n[{number}/{total}] {title}"),
            Event::AlreadyDone => println!("      already done by an earlier run"),
            Event::Notes(notes) => notes.iter().for_each(|n| println!("      {n}")),
            Event::Checks(checks) => {
                for c in checks {
                    let mark = if c.ok { "ok  " } else { "FAIL" };
                    println!("      {mark} {}: {}", c.what, c.detail);
                }
            }
        }
        let _ = std::io::stdout().flush();
    }

    fn confirm(&mut self, plan: &Plan) -> Result<()> {
        print!(
            "\nEverything on these disks will be destroyed:\n{}Type yes to continue: ",
            recover::disks_in_words(plan)
        );
        std::io::stdout().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if line.trim() != "yes" {
            bail!(
                "not confirmed (answer was {:?}); nothing was written",
                line.trim()
            );
        }
        Ok(())
    }
}

pub fn recover(args: RecoverArgs, cfg: &crate::config::Config) -> Result<u8> {
    let opts = recover::Options {
        yes: args.yes,
        // The one dry-run switch: each change is printed, none is made.
        gate: if args.dry_run {
            crate::exec::Gate::dry_run(|line| println!("dry run: {line}"))
        } else {
            crate::exec::Gate::live()
        },
        key_file: args.key_file,
        unattended: args.unattended,
        answers: args.answers,
        state: args.state,
        report: args.report,
        luks_iter_time_ms: args.luks_iter_time,
        regenerate_initramfs: args.regenerate_initramfs,
        wipe: args.wipe,
        start_over: args.start_over,
        drill: args.drill,
        ..options(args.source, cfg)
    };
    let report = recover::recover(&opts, &mut Terminal)?;
    println!(
        "\nlifeboat recover: {} in {:.0}s{}",
        if report.ok {
            "recovery complete"
        } else {
            "recovery finished with FAILED checks"
        },
        report.seconds,
        if opts.gate.is_dry_run() {
            " (dry run: nothing was written)"
        } else {
            ""
        }
    );
    if let Some(r) = &report.restore {
        println!("lifeboat recover: {}", r.describe());
    }
    if !report.ok {
        bail!("verification failed: see the checks above");
    }
    Ok(0)
}
