//! Which new disk takes the place of which old one.
//!
//! Order of rules: `--map OLD=NEW`, then the same identity (serial or WWN),
//! then the same name and size, then size order. Only disks the layout marks
//! as needed are mapped; the rescue medium and the disk holding the backup
//! are never candidates; a disk that is not mapped is never touched. When the
//! rules leave a choice, it is an error that lists the candidates and the
//! `--map` to write.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::targets::TargetDisk;
use crate::layout::{Disk, Layout};
use crate::util::human_bytes;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPair {
    /// The disk in the layout (`/dev/sda` at capture time).
    pub old: String,
    /// The disk it is recreated on.
    pub new: String,
    pub old_size_bytes: u64,
    pub new_size_bytes: u64,
    pub old_sector_size: u32,
    pub new_sector_size: u32,
    /// Why this pair: `--map`, `same serial ...`, `same name and size`, `size order`.
    pub reason: String,
}

/// Parses `OLD=NEW` arguments.
pub fn parse_maps(args: &[String]) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() => Ok((o.to_string(), n.to_string())),
            _ => bail!("bad --map {a:?}: expected OLD=NEW, e.g. --map /dev/sda=/dev/nvme0n1"),
        })
        .collect()
}

fn dev_path(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/dev/{name}")
    }
}

fn same_identity(old: &Disk, new: &TargetDisk) -> Option<String> {
    let eq = |a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(a), Some(b)) => !a.is_empty() && a.trim() == b.trim(),
        _ => false,
    };
    if eq(&old.wwn, &new.wwn) {
        Some(format!(
            "same WWN {}",
            old.wwn.as_deref().unwrap_or_default()
        ))
    } else if eq(&old.serial, &new.serial) {
        Some(format!(
            "same serial {}",
            old.serial.as_deref().unwrap_or_default()
        ))
    } else {
        None
    }
}

fn pair(old: &Disk, new: &TargetDisk, reason: String) -> DiskPair {
    DiskPair {
        old: old.path.clone(),
        new: new.path.clone(),
        old_size_bytes: old.size_bytes,
        new_size_bytes: new.size_bytes,
        old_sector_size: old.logical_sector_size,
        new_sector_size: new.logical_sector_size,
        reason,
    }
}

/// Maps the needed disks of `layout` onto `targets`. `excluded` maps a
/// target path to why it may not be used (rescue medium, backup disk).
pub fn map_disks(
    layout: &Layout,
    targets: &[TargetDisk],
    maps: &[(String, String)],
    excluded: &BTreeMap<String, String>,
) -> Result<Vec<DiskPair>> {
    let needed: Vec<&Disk> = layout.disks.iter().filter(|d| d.needed).collect();
    let mut pairs: Vec<DiskPair> = Vec::new();
    let mut free: Vec<&TargetDisk> = targets
        .iter()
        .filter(|t| !excluded.contains_key(&t.path) && !t.read_only)
        .collect();
    let mut todo: Vec<&Disk> = needed.clone();

    for (old_arg, new_arg) in maps {
        let old = layout
            .disks
            .iter()
            .find(|d| {
                d.path == dev_path(old_arg)
                    || d.name == *old_arg
                    || d.serial.as_deref() == Some(old_arg.as_str())
                    || d.wwn.as_deref() == Some(old_arg.as_str())
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--map {old_arg}={new_arg}: the layout has no disk {old_arg} (it has {})",
                    layout
                        .disks
                        .iter()
                        .map(|d| d.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        if !old.needed {
            bail!(
                "--map {old_arg}={new_arg}: {} is not needed by the layout ({}), so recovery does not \
                 recreate it; capture with `layout save --include-disk {}` to recover it",
                old.path,
                old.needed_reason,
                old.path
            );
        }
        let new_path = dev_path(new_arg);
        if let Some(why) = excluded.get(&new_path) {
            bail!("--map {old_arg}={new_arg}: {new_path} may not be written: {why}");
        }
        let Some(idx) = free.iter().position(|t| t.path == new_path) else {
            if pairs.iter().any(|p| p.new == new_path) {
                bail!("--map: {new_path} is given as the target of two disks");
            }
            bail!(
                "--map {old_arg}={new_arg}: {new_path} is not a writable disk here (disks: {})",
                targets
                    .iter()
                    .map(|t| t.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if !todo.iter().any(|d| d.path == old.path) {
            bail!("--map: {} is mapped twice", old.path);
        }
        let target = free.remove(idx);
        pairs.push(pair(old, target, "--map".into()));
        todo.retain(|d| d.path != old.path);
    }

    // Same identity: the very same disk (recovering onto the original
    // hardware after a file system loss) or a clone with the same serial.
    todo.retain(|old| {
        if let Some(idx) = free.iter().position(|t| same_identity(old, t).is_some()) {
            let t = free.remove(idx);
            pairs.push(pair(old, t, same_identity(old, t).unwrap_or_default()));
            false
        } else {
            true
        }
    });
    // Same name and size.
    todo.retain(|old| {
        if let Some(idx) = free
            .iter()
            .position(|t| t.path == old.path && t.size_bytes == old.size_bytes)
        {
            let t = free.remove(idx);
            pairs.push(pair(old, t, "same name and size".into()));
            false
        } else {
            true
        }
    });
    // Size order, when that leaves no choice.
    if !todo.is_empty() {
        let describe = |ts: &[&TargetDisk]| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{} ({}{})",
                        t.path,
                        human_bytes(t.size_bytes),
                        t.model
                            .as_deref()
                            .map(|m| format!(", {m}"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if free.len() < todo.len() {
            bail!(
                "not enough disks: {} still to place ({}) but only {} free ({})",
                todo.len(),
                todo.iter()
                    .map(|d| format!("{} {}", d.path, human_bytes(d.size_bytes)))
                    .collect::<Vec<_>>()
                    .join(", "),
                free.len(),
                if free.is_empty() {
                    "none".to_string()
                } else {
                    describe(&free)
                }
            );
        }
        if free.len() > todo.len() {
            let hint: Vec<String> = todo
                .iter()
                .map(|d| format!("--map {}={}", d.path, free[0].path))
                .collect();
            bail!(
                "cannot tell which disk should replace {}: candidates are {}; choose with e.g. {}",
                todo.iter()
                    .map(|d| format!("{} ({})", d.path, human_bytes(d.size_bytes)))
                    .collect::<Vec<_>>()
                    .join(", "),
                describe(&free),
                hint.join(" ")
            );
        }
        let mut olds = todo.clone();
        olds.sort_by(|a, b| a.size_bytes.cmp(&b.size_bytes).then(a.path.cmp(&b.path)));
        free.sort_by(|a, b| a.size_bytes.cmp(&b.size_bytes).then(a.path.cmp(&b.path)));
        for (old, new) in olds.iter().zip(free.iter()) {
            pairs.push(pair(old, new, "size order".into()));
        }
    }
    // Layout order, for a stable plan.
    pairs.sort_by_key(|p| layout.disks.iter().position(|d| d.path == p.old));
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tests::minimal;

    fn old(path: &str, gib: u64, serial: &str, needed: bool) -> Disk {
        Disk {
            name: path.trim_start_matches("/dev/").into(),
            path: path.into(),
            size_bytes: gib << 30,
            logical_sector_size: 512,
            physical_sector_size: 512,
            rotational: false,
            removable: false,
            transport: Some("virtio".into()),
            model: None,
            serial: (!serial.is_empty()).then(|| serial.to_string()),
            wwn: None,
            by_id: vec![],
            needed,
            needed_reason: if needed {
                "holds /".into()
            } else {
                "nothing mounted".into()
            },
            partition_table: None,
        }
    }

    fn new(path: &str, gib: u64, serial: &str) -> TargetDisk {
        TargetDisk {
            name: path.trim_start_matches("/dev/").into(),
            path: path.into(),
            size_bytes: gib << 30,
            logical_sector_size: 512,
            serial: (!serial.is_empty()).then(|| serial.to_string()),
            wwn: None,
            model: None,
            removable: false,
            read_only: false,
        }
    }

    fn layout(disks: Vec<Disk>) -> Layout {
        let mut l = minimal();
        l.disks = disks;
        l
    }

    fn summary(p: &[DiskPair]) -> Vec<(String, String, String)> {
        p.iter()
            .map(|p| (p.old.clone(), p.new.clone(), p.reason.clone()))
            .collect()
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            old: Vec<Disk>,
            new: Vec<TargetDisk>,
            maps: Vec<(&'static str, &'static str)>,
            excluded: Vec<&'static str>,
            expect: Result<Vec<(&'static str, &'static str, &'static str)>, &'static str>,
        }
        let cases = vec![
            Case {
                name: "names swapped, serials decide",
                old: vec![old("/dev/sda", 20, "A", true), old("/dev/sdb", 20, "B", true)],
                new: vec![new("/dev/sda", 20, "B"), new("/dev/sdb", 20, "A")],
                maps: vec![],
                excluded: vec![],
                expect: Ok(vec![("/dev/sda", "/dev/sdb", "same serial A"), ("/dev/sdb", "/dev/sda", "same serial B")]),
            },
            Case {
                name: "new hardware, one disk each",
                old: vec![old("/dev/vda", 20, "OLD", true)],
                new: vec![new("/dev/nvme0n1", 30, "NEW"), new("/dev/sdb", 8, "USB")],
                maps: vec![],
                excluded: vec!["/dev/sdb"],
                expect: Ok(vec![("/dev/vda", "/dev/nvme0n1", "size order")]),
            },
            Case {
                name: "same name and size",
                old: vec![old("/dev/vda", 20, "", true)],
                new: vec![new("/dev/vda", 20, ""), new("/dev/vdb", 20, "")],
                maps: vec![],
                excluded: vec![],
                expect: Ok(vec![("/dev/vda", "/dev/vda", "same name and size")]),
            },
            Case {
                name: "size order for two",
                old: vec![old("/dev/sda", 100, "", true), old("/dev/sdb", 10, "", true)],
                new: vec![new("/dev/vda", 12, ""), new("/dev/vdb", 120, "")],
                maps: vec![],
                excluded: vec![],
                expect: Ok(vec![("/dev/sda", "/dev/vdb", "size order"), ("/dev/sdb", "/dev/vda", "size order")]),
            },
            Case {
                name: "an unneeded disk is not mapped",
                old: vec![old("/dev/sda", 20, "", true), old("/dev/sdb", 500, "", false)],
                new: vec![new("/dev/vda", 20, "")],
                maps: vec![],
                excluded: vec![],
                expect: Ok(vec![("/dev/sda", "/dev/vda", "size order")]),
            },
            Case {
                name: "ambiguous: two blank disks for one",
                old: vec![old("/dev/sda", 20, "", true)],
                new: vec![new("/dev/vda", 20, ""), new("/dev/vdb", 40, "")],
                maps: vec![],
                excluded: vec![],
                expect: Err("cannot tell which disk should replace /dev/sda (20.0 GiB): candidates are /dev/vda (20.0 GiB), /dev/vdb (40.0 GiB); choose with e.g. --map /dev/sda=/dev/vda"),
            },
            Case {
                name: "map decides",
                old: vec![old("/dev/sda", 20, "", true)],
                new: vec![new("/dev/vda", 20, ""), new("/dev/vdb", 40, "")],
                maps: vec![("sda", "/dev/vdb")],
                excluded: vec![],
                expect: Ok(vec![("/dev/sda", "/dev/vdb", "--map")]),
            },
            Case {
                name: "map onto the backup disk is refused",
                old: vec![old("/dev/sda", 20, "", true)],
                new: vec![new("/dev/vda", 20, ""), new("/dev/vdb", 40, "")],
                maps: vec![("/dev/sda", "vdb")],
                excluded: vec!["/dev/vdb"],
                expect: Err("--map /dev/sda=vdb: /dev/vdb may not be written: excluded in test"),
            },
            Case {
                name: "too few disks",
                old: vec![old("/dev/sda", 20, "", true), old("/dev/sdb", 20, "", true)],
                new: vec![new("/dev/vda", 20, "")],
                maps: vec![],
                excluded: vec![],
                expect: Err("not enough disks: 2 still to place"),
            },
            Case {
                name: "mapping an unneeded disk is refused",
                old: vec![old("/dev/sda", 20, "", true), old("/dev/sdb", 20, "", false)],
                new: vec![new("/dev/vda", 20, ""), new("/dev/vdb", 20, "")],
                maps: vec![("/dev/sdb", "/dev/vdb")],
                excluded: vec![],
                expect: Err("/dev/sdb is not needed by the layout"),
            },
        ];
        for c in cases {
            let l = layout(c.old);
            let maps: Vec<(String, String)> = c
                .maps
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let excluded = c
                .excluded
                .iter()
                .map(|p| (p.to_string(), "excluded in test".to_string()))
                .collect();
            let got = map_disks(&l, &c.new, &maps, &excluded);
            match (got, c.expect) {
                (Ok(p), Ok(e)) => {
                    let e: Vec<_> = e
                        .iter()
                        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
                        .collect();
                    assert_eq!(summary(&p), e, "{}", c.name);
                }
                (Err(err), Err(e)) => assert!(err.to_string().contains(e), "{}: {err}", c.name),
                (got, e) => panic!("{}: got {got:?}, expected {e:?}", c.name),
            }
        }
    }

    #[test]
    fn map_syntax() {
        assert!(parse_maps(&["/dev/sda=/dev/vdb".into()]).is_ok());
        assert!(parse_maps(&["/dev/sda".into()]).is_err());
        assert!(parse_maps(&["=x".into()]).is_err());
    }
}
