//! The steps that change the disks and the new system, one function each
//! (the storage, file system, restore and boot details live in their own
//! modules), and the clean-up at the end.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{boot, disk, fixup, mkfs, mount, network, storage, verify, Ctx, RunState};
use crate::exec::Gate;
use crate::layout::PartitionTable;
use crate::plan::{self, Plan, Step};

/// Applies one storage or system step.
pub(super) fn apply(
    ctx: &Ctx,
    step: &Step,
    tables: &[(String, PartitionTable)],
    plan: &Plan,
    state: &mut RunState,
) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    match step {
        Step::Partition { disk, table, .. } => notes = partition(ctx, disk, table)?,
        Step::CreateMd { array } => storage::create_md(ctx, array)?,
        Step::FormatLuks { luks, name } => storage::format_luks(ctx, luks, name)?,
        Step::CreateVg {
            vg,
            pvs,
            lvs,
            internal_uuids,
        } => storage::create_vg(ctx, vg, pvs, lvs, internal_uuids)?,
        Step::Mkfs { fs } => mkfs::mkfs(ctx, fs)?,
        Step::Mkswap { swap } => mkfs::mkswap(ctx, swap)?,
        Step::Mount { mounts } => mount_all(ctx, mounts)?,
        Step::FixConfig { replacements } => {
            let changed = fixup::fix_config(&ctx.root, replacements, &ctx.gate)?;
            notes.push(if changed.is_empty() {
                "no file named a changed device".into()
            } else {
                format!("rewrote {}", changed.join(", "))
            });
            state.configs_changed.extend(changed);
        }
        Step::Migrate {
            to,
            fstab,
            grub_dir,
            package,
        } => {
            let fstab = fstab.as_deref();
            notes = boot::migrate(&ctx.root, *to, fstab, grub_dir, package, &ctx.gate)?;
        }
        Step::Network { nics } => {
            let (report, changed) = network::rewrite(&ctx.root, nics, &ctx.gate)?;
            if report.is_empty() {
                notes.push("no network configuration named the old interfaces".into());
            }
            notes.extend(report);
            state.configs_changed.extend(changed);
        }
        Step::Initramfs => notes.extend(initramfs(ctx, plan, state)?),
        Step::Bootloader { .. } => notes = bootloader(ctx, step, tables)?,
        Step::Restore { .. } | Step::Verify => unreachable!("handled by the caller"),
    }
    Ok(notes)
}

/// The partition table of `disk`, unless it is already there; then the old
/// signatures inside the new partitions (md superblocks, LVM labels, which
/// would confuse the tools that come next) go.
fn partition(ctx: &Ctx, disk: &str, table: &PartitionTable) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let devices = disk::partition_devices(disk, table);
    let current = disk::read_table(Path::new(disk)).ok().flatten();
    let same = current
        .as_ref()
        .is_some_and(|c| verify::same_table(c, table));
    if same {
        notes.push("the disk already has this partition table".into());
    } else {
        crate::exec::Cmd::new("wipefs")
            .args(["-a", "-q", disk])
            .mutating(&ctx.gate)
            .run()?;
        disk::write_table_on(disk, table, &ctx.gate)?;
    }
    disk::reread_and_wait(disk, &devices, &ctx.gate)?;
    if !same {
        for d in &devices {
            crate::exec::Cmd::new("wipefs")
                .args(["-a", "-q", d])
                .mutating(&ctx.gate)
                .run()?;
        }
    }
    notes.push(format!("partitions: {}", devices.join(", ")));
    Ok(notes)
}

/// Mounts the new system's file systems under the root.
fn mount_all(ctx: &Ctx, mounts: &[plan::PlannedMount]) -> Result<()> {
    for m in mounts {
        let target = ctx.root.join(m.mountpoint.trim_start_matches('/'));
        ctx.gate.create_dir_all(&target)?;
        let mut c = crate::exec::Cmd::new("mount").args(["-t", m.fstype.as_str()]);
        if !m.options.is_empty() {
            c = c.args(["-o", &m.options.join(",")]);
        }
        c.arg(&m.device).arg(&target).mutating(&ctx.gate).run()?;
    }
    Ok(())
}

/// Regenerates the new system's initramfs when it lacks a driver of the
/// new disks or holds a configuration that changed.
fn initramfs(ctx: &Ctx, plan: &Plan, state: &RunState) -> Result<Option<String>> {
    if !ctx.gate.allow(format_args!(
        "regenerate the initramfs in {} when it lacks a driver of the new disks",
        ctx.root.display()
    )) {
        return Ok(None);
    }
    let disks: Vec<String> = plan
        .disks
        .iter()
        .map(|d| d.new.trim_start_matches("/dev/").to_string())
        .collect();
    let drivers = crate::layout::probe::sysfs::driver_modules(&ctx.sys, &disks);
    fixup::regenerate_initramfs(
        &ctx.root,
        &drivers,
        &state.configs_changed,
        ctx.force_initramfs,
        &ctx.gate,
    )
    .map(Some)
}

/// GRUB for BIOS and UEFI, its configuration, the fallback loader on each
/// ESP and the EFI boot entries (`step` is a [`Step::Bootloader`]).
fn bootloader(ctx: &Ctx, step: &Step, tables: &[(String, PartitionTable)]) -> Result<Vec<String>> {
    let Step::Bootloader {
        bios_disks,
        efi_entries,
        esps,
        write_nvram,
        grub_efi,
    } = step
    else {
        unreachable!("a bootloader step")
    };
    let mut notes = Vec::new();
    if !ctx.gate.allow(format_args!(
        "install GRUB in {} (BIOS disks: {}; UEFI: {grub_efi}) and its configuration",
        ctx.root.display(),
        if bios_disks.is_empty() {
            "none".into()
        } else {
            bios_disks.join(", ")
        }
    )) {
        return Ok(notes);
    }
    let chroot = fixup::Chroot::enter(&ctx.root, &ctx.gate)?;
    if !bios_disks.is_empty() {
        notes.extend(boot::grub_bios(&chroot, bios_disks)?);
    }
    if *grub_efi {
        notes.extend(boot::grub_efi(&chroot, efi_entries)?);
    } else {
        let boot_efi = ctx.root.join("boot/efi");
        let at_boot_efi = esps
            .iter()
            .any(|e| esp_mountpoint(e, ctx).as_deref() == Some(boot_efi.as_path()));
        let shim = super::secureboot::decide(efi_entries, &ctx.root, at_boot_efi);
        notes.extend(super::secureboot::reinstall(&chroot, &shim)?);
    }
    notes.extend(boot::grub_config(&chroot)?);
    drop(chroot);
    for esp in esps {
        match esp_mountpoint(esp, ctx) {
            Some(dir) => notes.extend(boot::ensure_fallback(&dir, efi_entries, &ctx.gate)?),
            None => notes.push(format!(
                "ESP {esp} is not mounted in the new system: fallback loader not checked"
            )),
        }
    }
    if *write_nvram && !efi_entries.is_empty() {
        notes.extend(boot::efi_entries(efi_entries, tables, &ctx.gate)?);
    }
    Ok(notes)
}

/// Where the ESP `esp` (a new device path) is mounted under the root.
fn esp_mountpoint(esp: &str, ctx: &Ctx) -> Option<PathBuf> {
    let mounts = crate::mounts::mountinfo().ok()?;
    let want = std::fs::canonicalize(esp).ok()?;
    mounts
        .into_iter()
        .filter(|m| m.path().starts_with(&ctx.root))
        .find(|m| std::fs::canonicalize(&m.source).ok().as_ref() == Some(&want))
        .map(|m| PathBuf::from(m.mountpoint))
}

/// Leaves the disks in a clean state: unmounted, VGs deactivated, LUKS
/// closed, md arrays stopped.
pub(super) fn finish(plan: &Plan, root: &Path, gate: &Gate) -> Result<()> {
    crate::exec::Cmd::new("sync").mutating(gate).run().ok();
    mount::unmount_tree(root, gate)?;
    for s in plan.steps.iter().rev() {
        match s {
            Step::CreateVg { vg, .. } => {
                crate::exec::Cmd::new("lvm")
                    .args(["vgchange", "-an", &vg.name])
                    .mutating(gate)
                    .run()?;
            }
            Step::FormatLuks { name, .. } if Path::new(&format!("/dev/mapper/{name}")).exists() => {
                crate::exec::Cmd::new("cryptsetup")
                    .args(["close", name])
                    .mutating(gate)
                    .run()?;
            }
            Step::CreateMd { array } => {
                crate::exec::Cmd::new("mdadm")
                    .args(["--stop", &array.device])
                    .mutating(gate)
                    .run()?;
            }
            _ => {}
        }
    }
    Ok(())
}
