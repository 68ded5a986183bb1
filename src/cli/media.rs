//! `mkrescue --usb` and `--pxe`: the target is inspected (and the admin
//! asked) before the build, and written after it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::rescue::media::{self, MediaKind, MediaOutput};
use crate::rescue::{self, pxe, secureboot, usb, usbkeep, BuildRecord};
use crate::util;

#[derive(Debug, Args, Default)]
pub struct MediaArgs {
    /// Also write a bootable rescue disk (BIOS and UEFI) with a
    /// LIFEBOAT-DATA partition for backups onto TARGET: a whole disk
    /// (/dev/sdX) or an image file (created). Everything on it is lost,
    /// but for the backups of a disk that is already a rescue disk.
    #[arg(long, value_name = "TARGET")]
    pub usb: Option<PathBuf>,

    /// Size of a new image file for --usb [default: the boot partition and
    /// 1 GiB for backups].
    #[arg(long, value_name = "SIZE", requires = "usb", value_parser = util::parse_size)]
    pub usb_size: Option<u64>,

    /// Write a disk that says it is not removable, or replace an existing
    /// image file. A mounted disk, active swap or a disk under md or
    /// device-mapper is refused even so.
    #[arg(long, requires = "usb")]
    pub force: bool,

    /// Do not ask before writing the --usb target.
    #[arg(long, requires = "usb")]
    pub yes: bool,

    /// Show what the --usb target holds and whether it would be written;
    /// build and write nothing.
    #[arg(long, requires = "usb")]
    pub dry_run: bool,

    /// Repartition a disk that is already a rescue disk, losing the backups
    /// on its LIFEBOAT-DATA partition [default: rewrite only its boot
    /// partition, keeping them; refused when the image does not fit it].
    #[arg(long, requires = "usb")]
    pub wipe_data: bool,

    /// Also write a network-boot tree (kernel, initrd, GRUB for BIOS and
    /// UEFI, an iPXE script) into DIR, for a TFTP or HTTP server.
    #[arg(long, value_name = "DIR")]
    pub pxe: Option<PathBuf>,
}

/// Before the build: inspects, shows and checks the --usb target, and asks.
/// Returns the build options, or None when nothing is to be built
/// (--dry-run).
pub fn before_build(a: &MediaArgs, opts: rescue::Options) -> Result<Option<rescue::Options>> {
    if a.usb.is_some() || a.pxe.is_some() {
        crate::exec::require(&needed_tools(a))?;
        // Both boot through GRUB, whatever rescue.iso says.
        rescue::iso::check_grub_args(&opts.append.join(" "))?;
    }
    let Some(target) = &a.usb else {
        return Ok(Some(opts));
    };
    let ins = usb::inspect(target, a.usb_size, usb::ESP_MIN)?;
    print!("{}", ins.describe());
    let plan = usbkeep::plan(target, usbkeep::existing(target), usb::ESP_MIN, a.wipe_data);
    if let Ok(p) = &plan {
        print!("{}", usbkeep::describe(p));
    }
    let checked = ins.check(a.force).and(
        plan.as_ref()
            .map(drop)
            .map_err(|e| anyhow::anyhow!("{e:#}")),
    );
    if a.dry_run {
        match checked {
            Ok(()) => println!(
                "dry run: {} would be written; nothing written",
                target.display()
            ),
            Err(e) => println!("dry run: {e:#}; nothing written"),
        }
        return Ok(None);
    }
    checked?;
    if !a.yes {
        confirm(&ins, &plan?)?;
    }
    Ok(Some(opts))
}

fn needed_tools(a: &MediaArgs) -> Vec<&'static str> {
    let mut tools = Vec::new();
    if a.usb.is_some() {
        tools.extend(usb::TOOLS);
    }
    if a.pxe.is_some() {
        tools.extend(pxe::TOOLS);
    }
    tools
}

fn confirm(ins: &usb::Inspection, plan: &usbkeep::Plan) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "not writing {} without confirmation: run on a terminal, or add --yes",
            ins.path.display()
        );
    }
    match plan {
        usbkeep::Plan::Fresh => print!("Everything on {} will be lost. ", ins.path.display()),
        usbkeep::Plan::KeepData(_) => print!(
            "The boot partition of {} will be rewritten ({} kept). ",
            ins.path.display(),
            usb::DATA_LABEL
        ),
    }
    print!("Type yes to write the rescue disk: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    if line.trim() != "yes" {
        bail!("not confirmed: {} left as it was", ins.path.display());
    }
    Ok(())
}

/// After the build: writes the --usb disk and the --pxe tree from the
/// build's vmlinuz and initrd.
pub fn after_build(a: &MediaArgs, opts: &rescue::Options, rec: &BuildRecord) -> Result<()> {
    let vmlinuz = opts.output.join(rescue::VMLINUZ);
    let initrd = opts.output.join(rescue::INITRD);
    let loaders = secureboot::find_loaders(&opts.secure_boot_root());
    if let Some(dir) = &a.pxe {
        let signed = secureboot::for_medium(&loaders, secureboot::GRUB_NET);
        for f in pxe::write_tree(dir, &vmlinuz, &initrd, &rec.cmdline, signed.as_ref().ok())? {
            println!("  {}", dir.join(f).display());
        }
        let written = written(MediaKind::Pxe, dir, None, rec, &signed, &vmlinuz);
        println!(
            "network-boot tree written to {} (docs/pxe.md); {}",
            dir.display(),
            written.secure_boot_summary()
        );
        media::record(&opts.output, written)?;
    }
    if let Some(target) = &a.usb {
        // Inspected again: the disk may have changed during the build.
        let esp = usb::esp_size(&vmlinuz, &initrd)?;
        let ins = usb::inspect(target, a.usb_size, esp)?;
        ins.check(a.force)?;
        let initrd_sha = rec
            .files
            .iter()
            .find(|f| f.name == rescue::INITRD)
            .map(|f| f.sha256.clone())
            .context("the build record lists no initrd")?;
        let signed = secureboot::for_medium(&loaders, secureboot::GRUB_ESP);
        let files = usb::UsbFiles {
            vmlinuz: &vmlinuz,
            initrd: &initrd,
            cmdline: &rec.cmdline,
            marker: &format!("id-{}", &initrd_sha[..16]),
            signed: signed.clone().ok(),
        };
        let work = tempfile::Builder::new()
            .prefix(".mkrescue-usb-")
            .tempdir_in(&opts.output)
            .with_context(|| format!("creating a work folder in {}", opts.output.display()))?;
        let plan = usbkeep::plan(target, usbkeep::existing(target), esp, a.wipe_data)?;
        usb::write(&ins, &files, esp, &plan, work.path())?;
        let identity = (ins.kind == usb::TargetKind::Disk).then(|| ins.identity());
        let written = written(MediaKind::Usb, target, identity, rec, &signed, &vmlinuz);
        println!(
            "rescue disk written to {} ({}): boots on BIOS and UEFI; backups go to its {} partition (backup create --to usb){}; {}",
            target.display(),
            util::human_bytes(ins.bytes),
            usb::DATA_LABEL,
            match plan {
                usbkeep::Plan::KeepData(_) => ", kept as it was",
                usbkeep::Plan::Fresh => "",
            },
            written.secure_boot_summary()
        );
        media::record(&opts.output, written)?;
    }
    Ok(())
}

/// The record of a medium just written from the image of `rec`.
fn written<T>(
    kind: MediaKind,
    target: &std::path::Path,
    identity: Option<String>,
    rec: &BuildRecord,
    signed: &Result<T, secureboot::NotCapable>,
    vmlinuz: &std::path::Path,
) -> MediaOutput {
    let not_capable = media::not_capable(signed, vmlinuz);
    MediaOutput {
        kind,
        target: std::path::absolute(target)
            .unwrap_or_else(|_| target.to_path_buf())
            .display()
            .to_string(),
        identity,
        written_at: util::rfc3339(util::now_epoch()),
        image_built_at: rec.built_at.clone(),
        secure_boot: not_capable.is_none(),
        not_capable,
    }
}
