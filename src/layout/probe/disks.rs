//! The disks to capture, their identities and partition tables, with each
//! partition named as the kernel names it.

use anyhow::{bail, Result};

use super::ctx::Ctx;
use super::sysfs::{BlockDev, DevKind, Devices};
use super::{ptable, sysfs};
use crate::layout::*;

/// The disks to capture: the named ones, or every disk with a size.
pub(super) fn select_disks(devs: &Devices, wanted: &[String]) -> Result<Vec<String>> {
    let all: Vec<&BlockDev> = devs
        .list
        .iter()
        .filter(|b| b.kind == DevKind::Disk && b.size_bytes > 0)
        .collect();
    if wanted.is_empty() {
        return Ok(all.iter().map(|b| b.name.clone()).collect());
    }
    let mut out = Vec::new();
    for w in wanted {
        let name = w.strip_prefix("/dev/").unwrap_or(w);
        match devs.by_name(name) {
            Some(b) if matches!(b.kind, DevKind::Disk | DevKind::Loop { .. }) => out.push(b.name.clone()),
            Some(_) => bail!("{w} is not a whole disk; name disks such as /dev/vda, not partitions or mapped devices"),
            None => bail!(
                "no disk {w}; the disks here are: {}",
                all.iter().map(|b| b.path.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok(out)
}

pub(super) fn collect_disks(ctx: &Ctx, disks: &[String]) -> Result<Vec<Disk>> {
    let by_id_dir = ctx.dev_root().join("disk/by-id");
    let by_id_links: Vec<(String, String)> = std::fs::read_dir(&by_id_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let target = std::fs::read_link(e.path()).ok()?;
                    let t = target.file_name()?.to_string_lossy().into_owned();
                    Some((e.file_name().to_string_lossy().into_owned(), t))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in disks {
        let b = ctx.devs.by_name(name).expect("selected disks exist");
        let info = sysfs::disk_info(&ctx.sys, b);
        let probe = ctx.probe(b);
        // A whole-disk file system or PV has no partition table.
        let whole_disk_signature = probe.is_some_and(|p| p.fstype.is_some() && p.pttype.is_none());
        let table = if whole_disk_signature {
            None
        } else {
            let path = ctx.path(&sysfs::dev_path(&b.name));
            if ctx.node_exists(b) {
                ptable::read_path(&path, Some(info.logical_sector_size))?
            } else {
                None
            }
        };
        let table = table.map(|t| name_partitions(ctx, b, t));
        if let Some(PartitionTable::Gpt(g)) = &table {
            for p in &g.problems {
                log::warn!("{}: {p}", b.path);
            }
        }
        let mut by_id: Vec<String> = by_id_links
            .iter()
            .filter(|(_, t)| t == name)
            .map(|(l, _)| l.clone())
            .collect();
        by_id.sort();
        out.push(Disk {
            name: b.name.clone(),
            path: b.path.clone(),
            size_bytes: b.size_bytes,
            logical_sector_size: info.logical_sector_size,
            physical_sector_size: info.physical_sector_size,
            rotational: info.rotational,
            removable: info.removable,
            transport: info.transport,
            model: info.model,
            serial: info.serial,
            wwn: info.wwn,
            by_id,
            needed: false,
            needed_reason: String::new(),
            partition_table: table,
        });
    }
    Ok(out)
}

/// Fills the `device` of each partition from sysfs (or the kernel's naming
/// rule when the partition has no node).
pub(super) fn name_partitions(ctx: &Ctx, disk: &BlockDev, mut t: PartitionTable) -> PartitionTable {
    let name_of = |n: u32| {
        ctx.devs
            .list
            .iter()
            .find(|p| matches!(&p.kind, DevKind::Partition { disk: d, number } if *d == disk.name && *number == n))
            .map(|p| p.path.clone())
            .unwrap_or_else(|| {
                let sep = if disk.name.ends_with(|c: char| c.is_ascii_digit()) { "p" } else { "" };
                format!("{}{sep}{n}", disk.path)
            })
    };
    match &mut t {
        PartitionTable::Gpt(g) => g
            .partitions
            .iter_mut()
            .for_each(|p| p.device = name_of(p.number)),
        PartitionTable::Mbr(m) => m
            .partitions
            .iter_mut()
            .for_each(|p| p.device = name_of(p.number)),
    }
    t
}
