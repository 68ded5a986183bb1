//! Which disks recovery must recreate, and why: the policy of needed and
//! not-needed disks (mounts and swap make a disk needed; the job file
//! system, a backup destination and --exclude-disk keep it out).

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::ctx::Ctx;
use super::filesystems::mount_of;
use super::JOB_LABEL;
use crate::layout::*;

/// Whether recovery must recreate each disk, and why.
pub(super) fn mark_needed(
    ctx: &Ctx,
    disks: &mut [Disk],
    mounts: &[Mount],
    swaps: &[Swap],
) -> Result<()> {
    let uses = disk_uses(ctx, mounts, swaps);
    let never = never_needed(ctx);
    for w in ctx.opts.include_disks.iter().chain(&ctx.opts.exclude_disks) {
        if !disks.iter().any(|d| names_disk(d, w)) {
            bail!(
                "--include-disk/--exclude-disk {w}: no such disk; the disks are: {}",
                disks
                    .iter()
                    .map(|d| d.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for d in disks.iter_mut() {
        let inc = ctx.opts.include_disks.iter().any(|w| names_disk(d, w));
        let exc = ctx.opts.exclude_disks.iter().any(|w| names_disk(d, w));
        (d.needed, d.needed_reason) = if inc && exc {
            bail!(
                "{} is named by both --include-disk and --exclude-disk",
                d.path
            );
        } else if inc {
            (true, "included with --include-disk".to_string())
        } else if exc {
            (false, "excluded with --exclude-disk".to_string())
        } else if let Some(why) = never.get(&d.name) {
            (false, why.clone())
        } else if let Some(u) = uses.get(&d.name) {
            (true, holds(u))
        } else {
            (
                false,
                "nothing on it is mounted, used as swap, or part of an md/LUKS/LVM stack that is"
                    .to_string(),
            )
        };
    }
    Ok(())
}

/// What each disk (by kernel name) carries that the system uses: mount
/// points and active swap.
fn disk_uses(ctx: &Ctx, mounts: &[Mount], swaps: &[Swap]) -> BTreeMap<String, Vec<String>> {
    let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |dev: &str, what: String| {
        if let Some(b) = ctx.devs.resolve(dev, &ctx.dev_root()) {
            for d in ctx.devs.disks_under(&b.name) {
                uses.entry(d).or_default().push(what.clone());
            }
        }
    };
    for m in mounts {
        add(&m.source, m.mountpoint.clone());
    }
    for s in swaps.iter().filter(|s| s.active) {
        if s.is_file {
            if let Some(m) = mount_of(mounts, &s.device) {
                add(&m.source, format!("swap file {}", s.device));
            }
        } else {
            add(&s.device, format!("swap {}", s.device));
        }
    }
    uses
}

/// Disks never needed, and why: they carry the job file system or a
/// backup destination.
fn never_needed(ctx: &Ctx) -> BTreeMap<String, String> {
    let mut never: BTreeMap<String, String> = BTreeMap::new();
    for b in ctx.scoped() {
        if ctx.probe(b).and_then(|p| p.label.as_deref()) == Some(JOB_LABEL) {
            for d in ctx.devs.disks_under(&b.name) {
                never.insert(d, format!("carries the {JOB_LABEL} job file system"));
            }
        }
    }
    for dest in &ctx.opts.backup_destinations {
        let dest_s = dest.to_string_lossy();
        // Every mount, in scope or not: the destination may be anywhere.
        let found = ctx
            .mountinfo
            .iter()
            .filter(|m| {
                dest_s == m.mountpoint
                    || m.mountpoint == "/"
                    || dest_s.starts_with(&format!("{}/", m.mountpoint))
            })
            .max_by_key(|m| m.mountpoint.len());
        if let Some(b) = found.and_then(|m| ctx.mount_device(m)) {
            for d in ctx.devs.disks_under(&b.name) {
                never.insert(d, format!("holds the backup destination {dest_s}"));
            }
        }
    }
    never
}

/// `w` (an --include-disk/--exclude-disk word) names the disk: its path,
/// kernel name, serial, WWN or a /dev/disk/by-id name.
fn names_disk(d: &Disk, w: &str) -> bool {
    let w = w.trim();
    d.path == w
        || d.name == w
        || d.serial.as_deref() == Some(w)
        || d.wwn.as_deref() == Some(w)
        || d.by_id
            .iter()
            .any(|i| i == w || format!("/dev/disk/by-id/{i}") == w)
}

/// "holds /, /home, swap /dev/vda3 and 2 more": the uses, sorted, at most
/// four named.
fn holds(uses: &[String]) -> String {
    let mut u = uses.to_vec();
    u.sort();
    u.dedup();
    let shown: Vec<String> = u.iter().take(4).cloned().collect();
    let more = if u.len() > 4 {
        format!(" and {} more", u.len() - 4)
    } else {
        String::new()
    };
    format!("holds {}{more}", shown.join(", "))
}
