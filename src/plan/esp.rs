//! The EFI system partitions of the new system and the EFI boot entries to
//! write. An ESP mirrored by md RAID1 (metadata 1.0, so that the firmware
//! reads each member as a plain FAT partition) is one ESP: the array, where
//! the new system mounts it and where the fallback loader is checked; its
//! boot entries go on every member, so that each disk boots alone.

use std::collections::BTreeSet;

use crate::layout::{EfiBootEntry, GptPartition, Layout, MdArray, PartitionTable};

/// The GPT partition `device` of the layout.
fn gpt_partition<'a>(layout: &'a Layout, device: &str) -> Option<&'a GptPartition> {
    layout.disks.iter().find_map(|d| match &d.partition_table {
        Some(PartitionTable::Gpt(t)) => t.partitions.iter().find(|p| p.device == device),
        _ => None,
    })
}

/// The md array an ESP partition is a member of.
fn esp_array<'a>(layout: &'a Layout, partition: &str) -> Option<&'a MdArray> {
    layout
        .md_arrays
        .iter()
        .find(|md| md.members.iter().any(|m| m.device == partition))
}

/// The ESPs to check (old device paths, arrays once) among `created`.
pub fn esps(layout: &Layout, created: &BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in layout.boot.esps.iter().filter(|e| created.contains(*e)) {
        let dev = esp_array(layout, e).map_or(e.as_str(), |md| md.device.as_str());
        if !out.iter().any(|x| x == dev) {
            out.push(dev.to_string());
        }
    }
    out
}

/// The boot entries of the layout on a partition of a `mapped` disk; an
/// entry on a member of a mirrored ESP once per member (same label and
/// loader), members in their role order.
pub fn entries(layout: &Layout, mapped: &dyn Fn(&str) -> bool) -> Vec<EfiBootEntry> {
    let on_mapped = |guid: &str| {
        layout
            .disks
            .iter()
            .filter(|d| mapped(&d.path))
            .any(|d| match &d.partition_table {
                Some(PartitionTable::Gpt(t)) => t
                    .partitions
                    .iter()
                    .any(|p| p.unique_guid.eq_ignore_ascii_case(guid)),
                _ => false,
            })
    };
    let mut out: Vec<EfiBootEntry> = Vec::new();
    for e in &layout.boot.efi_entries {
        let Some(guid) = e.partition_guid.as_deref().filter(|g| on_mapped(g)) else {
            continue;
        };
        let mut guids = vec![guid.to_string()];
        let partition = layout.boot.esps.iter().find(|d| {
            gpt_partition(layout, d).is_some_and(|p| p.unique_guid.eq_ignore_ascii_case(guid))
        });
        if let Some(md) = partition.and_then(|p| esp_array(layout, p)) {
            let mut members: Vec<_> = md.members.iter().filter(|m| !m.spare).collect();
            members.sort_by_key(|m| m.role);
            guids.extend(
                members
                    .iter()
                    .filter_map(|m| gpt_partition(layout, &m.device))
                    .map(|p| p.unique_guid.clone())
                    .filter(|g| on_mapped(g)),
            );
        }
        for g in guids {
            let same = |x: &EfiBootEntry| {
                x.partition_guid
                    .as_deref()
                    .is_some_and(|xg| xg.eq_ignore_ascii_case(&g))
                    && x.loader == e.loader
            };
            if !out.iter().any(same) {
                out.push(EfiBootEntry {
                    partition_guid: Some(g),
                    ..e.clone()
                });
            }
        }
    }
    out
}
