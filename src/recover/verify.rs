//! Proof that the new disks are what the plan says: partition tables read
//! back, md/LUKS/LVM identities, file system types, UUIDs and labels, and
//! the restore's checksums.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::restore::RestoreSummary;
use super::Ctx;
use crate::exec::Cmd;
use crate::layout::{MbrKind, PartitionTable};
use crate::plan::{Plan, Step};

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

/// `blkid -p -o export` of one device.
pub fn probe(dev: &str) -> BTreeMap<String, String> {
    Cmd::new("blkid")
        .args(["-p", "-o", "export", dev])
        .ok_codes(&[2])
        .read()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn same_opt(want: &Option<String>, got: Option<&String>) -> bool {
    match want {
        Some(w) => got.is_some_and(|g| g.eq_ignore_ascii_case(w)),
        None => true,
    }
}

pub fn verify(ctx: &Ctx, plan: &Plan, restore: Option<&RestoreSummary>) -> Result<Vec<Check>> {
    if ctx.dry_run {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for step in &plan.steps {
        match step {
            Step::Partition { disk, table, .. } => {
                let got = super::disk::read_table(Path::new(disk))?;
                let ok = got.as_ref().is_some_and(|g| same_table(g, table));
                out.push(check(
                    format!("partition table of {disk}"),
                    ok,
                    if ok {
                        "read back as planned".into()
                    } else {
                        format!("read back {got:?}")
                    },
                ));
            }
            Step::CreateMd { array } => {
                let got = Cmd::new("mdadm")
                    .args(["--detail", "--export", &array.device])
                    .read()
                    .unwrap_or_default();
                let uuid = got
                    .lines()
                    .find_map(|l| l.strip_prefix("MD_UUID="))
                    .unwrap_or("")
                    .to_string();
                out.push(check(
                    format!("md {}", array.device),
                    uuid.eq_ignore_ascii_case(&array.uuid),
                    format!("UUID {uuid}"),
                ));
            }
            Step::FormatLuks { luks, name } => {
                let uuid = super::storage::luks_uuid(&luks.device).unwrap_or_default();
                let open = Path::new(&format!("/dev/mapper/{name}")).exists();
                out.push(check(
                    format!("LUKS {}", luks.device),
                    uuid.eq_ignore_ascii_case(&luks.uuid) && open,
                    format!("UUID {uuid}, {}", if open { "open" } else { "not open" }),
                ));
            }
            Step::CreateVg { vg, lvs, .. } => {
                let got = Cmd::new("lvm")
                    .args([
                        "lvs",
                        "--noheadings",
                        "--separator",
                        "|",
                        "-o",
                        "lv_name,lv_uuid,vg_uuid",
                        &vg.name,
                    ])
                    .read()
                    .unwrap_or_default();
                let rows: Vec<Vec<&str>> =
                    got.lines().map(|l| l.trim().split('|').collect()).collect();
                let vg_ok = rows.iter().any(|r| r.get(2) == Some(&vg.uuid.as_str()));
                out.push(check(
                    format!("volume group {}", vg.name),
                    vg_ok,
                    format!("UUID {}", vg.uuid),
                ));
                for l in lvs {
                    let ok = rows.iter().any(|r| {
                        r.first() == Some(&l.lv.name.as_str())
                            && r.get(1) == Some(&l.lv.uuid.as_str())
                    });
                    out.push(check(
                        format!("logical volume {}/{}", vg.name, l.lv.name),
                        ok,
                        format!("UUID {}", l.lv.uuid),
                    ));
                }
            }
            Step::Mkfs { fs } => {
                let p = probe(&fs.device);
                let ok = p.get("TYPE") == Some(&fs.fstype)
                    && same_opt(&fs.uuid, p.get("UUID"))
                    && same_opt(&fs.label, p.get("LABEL"));
                out.push(check(
                    format!("{} on {}", fs.fstype, fs.device),
                    ok,
                    format!(
                        "TYPE={} UUID={} LABEL={}",
                        p.get("TYPE").map(String::as_str).unwrap_or("-"),
                        p.get("UUID").map(String::as_str).unwrap_or("-"),
                        p.get("LABEL").map(String::as_str).unwrap_or("-")
                    ),
                ));
            }
            Step::Mkswap { swap } => {
                let p = probe(&swap.device);
                let ok = p.get("TYPE").map(String::as_str) == Some("swap")
                    && same_opt(&swap.uuid, p.get("UUID"));
                out.push(check(
                    format!("swap on {}", swap.device),
                    ok,
                    format!("UUID={}", p.get("UUID").map(String::as_str).unwrap_or("-")),
                ));
            }
            _ => {}
        }
    }
    if let Some(r) = restore {
        out.push(check("restored files".into(), r.ok(), r.describe()));
    }
    Ok(out)
}
