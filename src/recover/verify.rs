//! Proof that the new disks are what the plan says: partition tables read
//! back, md/LUKS/LVM identities, file system types, UUIDs and labels, and
//! the restore's checksums.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::restore::RestoreSummary;
use super::Ctx;
use crate::layout::{
    Filesystem, Layout, LuksDevice, MbrKind, MdArray, PartitionTable, Swap, VolumeGroup,
};
use crate::plan::{NewLv, Plan, PlannedMount, Step};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

fn check(what: String, ok: bool, detail: String) -> Check {
    Check { what, ok, detail }
}

/// Same partition table, ignoring device names.
pub fn same_table(a: &PartitionTable, b: &PartitionTable) -> bool {
    match (a, b) {
        (PartitionTable::Gpt(x), PartitionTable::Gpt(y)) => {
            let key = |t: &crate::layout::GptTable| {
                let mut v: Vec<_> = t
                    .partitions
                    .iter()
                    .map(|p| {
                        (
                            p.number,
                            p.first_lba,
                            p.last_lba,
                            p.type_guid.to_lowercase(),
                            p.unique_guid.to_lowercase(),
                            p.name.clone(),
                            p.attributes,
                        )
                    })
                    .collect();
                v.sort();
                (
                    t.disk_guid.to_lowercase(),
                    t.first_usable_lba,
                    t.last_usable_lba,
                    v,
                )
            };
            key(x) == key(y)
        }
        (PartitionTable::Mbr(x), PartitionTable::Mbr(y)) => {
            let key = |t: &crate::layout::MbrTable| {
                let mut v: Vec<_> = t
                    .partitions
                    .iter()
                    .filter(|p| p.kind != MbrKind::Extended)
                    .map(|p| (p.number, p.first_lba, p.sectors, p.type_byte, p.bootable))
                    .collect();
                v.sort();
                (t.disk_signature, v)
            };
            key(x) == key(y)
        }
        _ => false,
    }
}

fn same_opt(want: &Option<String>, got: &Option<String>) -> bool {
    match want {
        Some(w) => got.as_ref().is_some_and(|g| g.eq_ignore_ascii_case(w)),
        None => true,
    }
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Re-captures the new disks (with the new system mounted at `ctx.root`)
/// and checks every object the plan created against it.
pub fn verify(ctx: &Ctx, plan: &Plan, restore: Option<&RestoreSummary>) -> Result<Vec<Check>> {
    if ctx.dry_run() {
        return Ok(vec![]);
    }
    let got = crate::layout::capture(&crate::layout::CaptureOptions {
        devices: plan.disks.iter().map(|d| d.new.clone()).collect(),
        system_root: ctx.root.is_dir().then(|| ctx.root.clone()),
        ..Default::default()
    })?;
    let mut out = Vec::new();
    for step in &plan.steps {
        match step {
            Step::Partition { disk, table, .. } => check_table(&got, disk, table, &mut out),
            Step::CreateMd { array } => check_md(&got, array, &mut out),
            Step::FormatLuks { luks, name } => check_luks(&got, luks, name, &mut out),
            Step::CreateVg { vg, lvs, .. } => check_vg(&got, vg, lvs, &mut out),
            Step::Mkfs { fs } => check_fs(&got, fs, &mut out),
            Step::Mkswap { swap } => check_swap(&got, swap, &mut out),
            Step::Mount { mounts } => check_mounts(&got, mounts, &mut out),
            _ => {}
        }
    }
    if let Some(r) = restore {
        out.push(check("restored files".into(), r.ok(), r.describe()));
    }
    Ok(out)
}

fn check_table(got: &Layout, disk: &str, table: &PartitionTable, out: &mut Vec<Check>) {
    let found = got.disk(disk).and_then(|d| d.partition_table.as_ref());
    let ok = found.is_some_and(|g| same_table(g, table));
    out.push(check(
        format!("partition table of {disk}"),
        ok,
        if ok {
            "as planned".into()
        } else {
            format!("found {found:?}")
        },
    ));
}

fn check_md(got: &Layout, array: &MdArray, out: &mut Vec<Check>) {
    let m = got
        .md_arrays
        .iter()
        .find(|m| m.uuid.eq_ignore_ascii_case(&array.uuid));
    out.push(check(
        format!("md {}", array.device),
        m.is_some_and(|m| m.level == array.level),
        match m {
            Some(m) => format!(
                "UUID {}, {} on {} members",
                m.uuid,
                m.level,
                m.members.len()
            ),
            None => format!("no array with UUID {}", array.uuid),
        },
    ));
}

fn check_luks(got: &Layout, luks: &LuksDevice, name: &str, out: &mut Vec<Check>) {
    let l = got
        .luks
        .iter()
        .find(|l| l.uuid.eq_ignore_ascii_case(&luks.uuid));
    let open = Path::new(&format!("/dev/mapper/{name}")).exists();
    out.push(check(
        format!("LUKS {}", luks.device),
        l.is_some_and(|l| l.cipher == luks.cipher) && open,
        match l {
            Some(l) => format!(
                "UUID {}, {}, {}",
                l.uuid,
                l.cipher,
                if open { "open" } else { "not open" }
            ),
            None => format!("no LUKS container with UUID {}", luks.uuid),
        },
    ));
}

fn check_vg(got: &Layout, vg: &VolumeGroup, lvs: &[NewLv], out: &mut Vec<Check>) {
    let v = got.lvm.vgs.iter().find(|v| v.name == vg.name);
    out.push(check(
        format!("volume group {}", vg.name),
        v.is_some_and(|v| v.uuid == vg.uuid),
        format!("UUID {}", v.map(|v| v.uuid.as_str()).unwrap_or("missing")),
    ));
    for l in lvs {
        let g = got
            .lvm
            .lvs
            .iter()
            .find(|g| g.vg == vg.name && g.name == l.lv.name);
        out.push(check(
            format!("logical volume {}/{}", vg.name, l.lv.name),
            g.is_some_and(|g| g.uuid == l.lv.uuid && g.size_bytes == l.size_bytes),
            match g {
                Some(g) => format!(
                    "UUID {}, {}",
                    g.uuid,
                    crate::util::human_bytes(g.size_bytes)
                ),
                None => "missing".into(),
            },
        ));
    }
}

fn check_fs(got: &Layout, fs: &Filesystem, out: &mut Vec<Check>) {
    let f = got.filesystems.iter().find(|f| {
        f.fstype == fs.fstype
            && (fs.uuid.is_none() || same_opt(&fs.uuid, &f.uuid))
            && (f.device == fs.device || fs.uuid.is_some())
    });
    out.push(check(
        format!("{} on {}", fs.fstype, fs.device),
        f.is_some_and(|f| same_opt(&fs.label, &f.label)),
        match f {
            Some(f) => format!(
                "UUID {}, label {}, {}",
                show(&f.uuid),
                show(&f.label),
                f.device
            ),
            None => format!("no {} with UUID {}", fs.fstype, show(&fs.uuid)),
        },
    ));
}

fn check_swap(got: &Layout, swap: &Swap, out: &mut Vec<Check>) {
    let s = got
        .swaps
        .iter()
        .find(|s| same_opt(&swap.uuid, &s.uuid) && swap.uuid.is_some());
    out.push(check(
        format!("swap on {}", swap.device),
        s.is_some() || swap.uuid.is_none(),
        format!("UUID {}", show(&s.and_then(|s| s.uuid.clone()))),
    ));
}

fn check_mounts(got: &Layout, mounts: &[PlannedMount], out: &mut Vec<Check>) {
    for m in mounts {
        let found = got.mounts.iter().find(|g| g.mountpoint == m.mountpoint);
        out.push(check(
            format!("mount {}", m.mountpoint),
            found.is_some_and(|g| g.fstype == m.fstype),
            match found {
                Some(g) => format!("{} {}", g.source, g.fstype),
                None => "not mounted".into(),
            },
        ));
    }
}
