//! Which new disk takes the place of which old one.
//!
//! Order of rules: `--map OLD=NEW`, then the same identity (serial or WWN),
//! then the same name and size, then size order. Only disks the layout marks
//! as needed are mapped; the rescue medium and the disk holding the backup
//! are never candidates; a disk that is not mapped is never touched.
//!
//! Identity comes first and is never overridden by the automatic rules: a
//! disk with the serial or WWN of a layout disk is only ever the place of
//! that disk (or of the disk `--map` names), so a disk the layout marks as
//! not needed or excluded is never chosen by name and size or size order,
//! and a layout disk whose identity is present elsewhere is not matched by
//! name. Identities that cannot tell disks apart are an error: two disks
//! here with the identity of a needed disk, or one disk with the identity
//! of two layout disks (unless `--map` places them). When the rules leave a
//! choice, it is an error that lists the candidates and the `--map` to
//! write. Unattended, size order is used only when every candidate is blank.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::targets::{Contents, DiskIdentity, TargetDisk};
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
    /// Model, serial and WWN of the new disk.
    #[serde(default)]
    pub new_identity: DiskIdentity,
    /// What the new disk holds before recovery writes it.
    #[serde(default)]
    pub new_contents: Contents,
}

impl DiskPair {
    /// The new disk in words: `/dev/vdb (QEMU HARDDISK, serial X, 20.0 GiB)`.
    pub fn describe_new(&self) -> String {
        super::targets::describe_disk(&self.new, &self.new_identity, self.new_size_bytes)
    }
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

fn same_value(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => !a.trim().is_empty() && a.trim() == b.trim(),
        _ => false,
    }
}

/// `same WWN X` or `same serial X` when `old` and `new` are the same disk.
fn same_identity(old: &Disk, new: &TargetDisk) -> Option<String> {
    if same_value(&old.wwn, &new.wwn) {
        Some(format!(
            "same WWN {}",
            old.wwn.as_deref().unwrap_or_default()
        ))
    } else if same_value(&old.serial, &new.serial) {
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
        new_identity: new.identity(),
        new_contents: new.contents.clone(),
    }
}

fn describe_targets(ts: &[&TargetDisk]) -> String {
    if ts.is_empty() {
        return "none".into();
    }
    ts.iter()
        .map(|t| t.describe())
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_olds(ds: &[&Disk]) -> String {
    ds.iter()
        .map(|d| format!("{} ({})", d.path, human_bytes(d.size_bytes)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The state of the mapping while the rules run.
struct Mapper<'a> {
    layout: &'a Layout,
    targets: &'a [TargetDisk],
    /// Targets that may still be chosen.
    free: Vec<&'a TargetDisk>,
    /// Needed layout disks still without a place.
    todo: Vec<&'a Disk>,
    pairs: Vec<DiskPair>,
    /// Target path → why it may not be written.
    excluded: &'a BTreeMap<String, String>,
}

impl<'a> Mapper<'a> {
    /// The layout disks with the identity of `t`.
    fn owners(&self, t: &TargetDisk) -> Vec<&'a Disk> {
        self.layout
            .disks
            .iter()
            .filter(|d| same_identity(d, t).is_some())
            .collect()
    }

    /// Free targets the automatic rules may choose: none that carries the
    /// identity of a layout disk.
    fn anonymous(&self) -> Vec<&'a TargetDisk> {
        self.free
            .iter()
            .copied()
            .filter(|t| self.owners(t).is_empty())
            .collect()
    }

    fn take(&mut self, old: &'a Disk, t: &'a TargetDisk, reason: String) {
        self.free.retain(|f| f.path != t.path);
        self.todo.retain(|d| d.path != old.path);
        self.pairs.push(pair(old, t, reason));
    }

    fn apply_map(&mut self, old_arg: &str, new_arg: &str) -> Result<()> {
        let layout = self.layout;
        let old = layout
            .disks
            .iter()
            .find(|d| {
                d.path == dev_path(old_arg)
                    || d.name == *old_arg
                    || d.serial.as_deref() == Some(old_arg)
                    || d.wwn.as_deref() == Some(old_arg)
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
        if let Some(why) = self.excluded.get(&new_path) {
            bail!("--map {old_arg}={new_arg}: {new_path} may not be written: {why}");
        }
        let Some(target) = self.free.iter().copied().find(|t| t.path == new_path) else {
            if self.pairs.iter().any(|p| p.new == new_path) {
                bail!("--map: {new_path} is given as the target of two disks");
            }
            bail!(
                "--map {old_arg}={new_arg}: {new_path} is not a writable disk here (disks: {})",
                self.targets
                    .iter()
                    .map(|t| t.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if !self.todo.iter().any(|d| d.path == old.path) {
            bail!("--map: {} is mapped twice", old.path);
        }
        self.take(old, target, "--map".into());
        Ok(())
    }

    /// Two targets with the identity of one needed disk, or one target
    /// with the identity of two layout disks: which is which cannot be told.
    fn check_duplicates(&self) -> Result<()> {
        for d in &self.todo {
            let same: Vec<&TargetDisk> = self
                .targets
                .iter()
                .filter(|t| same_identity(d, t).is_some())
                .collect();
            if same.len() > 1 {
                bail!(
                    "ambiguous identity: {} all have the {} of the layout's {}; lifeboat cannot \
                     tell which one it is: choose with --map {}={}",
                    describe_targets(&same),
                    same_identity(d, same[0])
                        .unwrap_or_default()
                        .trim_start_matches("same "),
                    d.path,
                    d.path,
                    same[0].path
                );
            }
        }
        for t in &self.free {
            let owners = self.owners(t);
            let todo = |d: &Disk| self.todo.iter().any(|x| x.path == d.path);
            if owners.len() > 1 && owners.iter().any(|d| todo(d)) {
                bail!(
                    "ambiguous identity: {} has the {} of the layout's {}, which share it; lifeboat \
                     cannot tell which one it is: choose with --map {}={}",
                    t.describe(),
                    same_identity(owners[0], t).unwrap_or_default().trim_start_matches("same "),
                    owners.iter().map(|d| d.path.as_str()).collect::<Vec<_>>().join(" and "),
                    owners.iter().find(|d| todo(d)).map(|d| d.path.as_str()).unwrap_or_default(),
                    t.path
                );
            }
        }
        Ok(())
    }

    /// Same identity: the very same disk (recovering onto the original
    /// hardware after a file system loss) or a clone with the same serial.
    fn by_identity(&mut self) {
        for old in self.todo.clone() {
            let found = self
                .free
                .iter()
                .copied()
                .find_map(|t| Some((t, same_identity(old, t)?)));
            if let Some((t, why)) = found {
                self.take(old, t, why);
            }
        }
    }

    /// Same name and size, unless an identity says otherwise: the target
    /// has no layout disk's identity, and the old disk's identity is not on
    /// another disk here.
    fn by_name_and_size(&mut self) {
        for old in self.todo.clone() {
            if self.targets.iter().any(|t| same_identity(old, t).is_some()) {
                continue;
            }
            let found = self
                .anonymous()
                .into_iter()
                .find(|t| t.path == old.path && t.size_bytes == old.size_bytes);
            if let Some(t) = found {
                self.take(old, t, "same name and size".into());
            }
        }
    }

    /// Free disks the automatic rules may not choose, with the reason.
    fn not_candidates(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        for t in &self.free {
            if let Some(d) = self.owners(t).first() {
                let why = if d.needed {
                    "placed elsewhere".to_string()
                } else {
                    format!("not needed: {}", d.needed_reason)
                };
                out.push(format!(
                    "{} is the layout's {} ({why})",
                    t.describe(),
                    d.path
                ));
            }
        }
        if out.is_empty() {
            String::new()
        } else {
            format!("; not chosen without --map: {}", out.join(", "))
        }
    }

    /// Size order, when that leaves no choice (and, unattended, when every
    /// candidate is blank).
    fn by_size_order(&mut self, unattended: bool) -> Result<()> {
        if self.todo.is_empty() {
            return Ok(());
        }
        let mut free = self.anonymous();
        let todo = self.todo.clone();
        if free.len() < todo.len() {
            bail!(
                "not enough disks: {} still to place ({}) but only {} free ({}){}",
                todo.len(),
                list_olds(&todo),
                free.len(),
                describe_targets(&free),
                self.not_candidates()
            );
        }
        if free.len() > todo.len() {
            let hint: Vec<String> = todo
                .iter()
                .map(|d| format!("--map {}={}", d.path, free[0].path))
                .collect();
            bail!(
                "cannot tell which disk should replace {}: candidates are {}; choose with e.g. {}",
                list_olds(&todo),
                describe_targets(&free),
                hint.join(" ")
            );
        }
        if unattended {
            if let Some(t) = free.iter().find(|t| !t.contents.is_blank()) {
                bail!(
                    "unattended recovery does not choose disks by size when one holds data: {} \
                     holds {}; name the disks in recover.toml, e.g. map = [\"{}={}\"] \
                     (or with --map)",
                    t.describe(),
                    t.contents.describe(),
                    todo[0].path,
                    t.path
                );
            }
        }
        let mut olds = todo;
        olds.sort_by(|a, b| a.size_bytes.cmp(&b.size_bytes).then(a.path.cmp(&b.path)));
        free.sort_by(|a, b| a.size_bytes.cmp(&b.size_bytes).then(a.path.cmp(&b.path)));
        for (old, new) in olds.into_iter().zip(free) {
            self.take(old, new, "size order".into());
        }
        Ok(())
    }
}

/// Maps the needed disks of `layout` onto `targets`. `excluded` maps a
/// target path to why it may not be used (rescue medium, backup disk).
/// `unattended`: size order only onto blank disks.
pub fn map_disks(
    layout: &Layout,
    targets: &[TargetDisk],
    maps: &[(String, String)],
    excluded: &BTreeMap<String, String>,
    unattended: bool,
) -> Result<Vec<DiskPair>> {
    let mut m = Mapper {
        layout,
        targets,
        free: targets
            .iter()
            .filter(|t| !excluded.contains_key(&t.path) && !t.read_only)
            .collect(),
        todo: layout.disks.iter().filter(|d| d.needed).collect(),
        pairs: Vec::new(),
        excluded,
    };
    for (old_arg, new_arg) in maps {
        m.apply_map(old_arg, new_arg)?;
    }
    m.check_duplicates()?;
    m.by_identity();
    m.by_name_and_size();
    m.by_size_order(unattended)?;
    // Layout order, for a stable plan.
    let mut pairs = m.pairs;
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
            contents: Contents::default(),
        }
    }

    fn excluded_disk(path: &str, gib: u64, serial: &str) -> Disk {
        Disk {
            needed_reason: "excluded with --exclude-disk".into(),
            ..old(path, gib, serial, false)
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
                expect: Err("cannot tell which disk should replace /dev/sda (20.0 GiB): candidates are /dev/vda (no serial or WWN, 20.0 GiB), /dev/vdb (no serial or WWN, 40.0 GiB); choose with e.g. --map /dev/sda=/dev/vda"),
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
            Case {
                name: "names swapped: name and size would pick the unneeded disk",
                old: vec![old("/dev/sda", 20, "A", true), old("/dev/sdb", 20, "B", false)],
                new: vec![new("/dev/sda", 20, "B"), new("/dev/sdb", 20, "NEW")],
                maps: vec![],
                excluded: vec![],
                expect: Ok(vec![("/dev/sda", "/dev/sdb", "size order")]),
            },
            Case {
                name: "replacement missing: size order would pick the excluded disk",
                old: vec![old("/dev/sda", 20, "A", true), excluded_disk("/dev/sdb", 20, "B")],
                new: vec![new("/dev/sdb", 20, "B")],
                maps: vec![],
                excluded: vec![],
                expect: Err("not enough disks: 1 still to place (/dev/sda (20.0 GiB)) but only 0 free (none); not chosen without --map: /dev/sdb (serial B, 20.0 GiB) is the layout's /dev/sdb (not needed: excluded with --exclude-disk)"),
            },
            Case {
                name: "excluded disk present beside the replacement",
                old: vec![old("/dev/sda", 20, "A", true), excluded_disk("/dev/sdb", 20, "B")],
                new: vec![new("/dev/vda", 20, "NEW"), new("/dev/vdb", 20, "B")],
                maps: vec![],
                excluded: vec![],
                expect: Ok(vec![("/dev/sda", "/dev/vda", "size order")]),
            },
            Case {
                name: "the old disk's identity is elsewhere: no name and size",
                old: vec![old("/dev/sda", 20, "A", true)],
                new: vec![new("/dev/sda", 20, "X"), new("/dev/sdb", 20, "A"), new("/dev/sdc", 20, "Y")],
                maps: vec![],
                excluded: vec!["/dev/sdb"],
                expect: Err("cannot tell which disk should replace /dev/sda (20.0 GiB): candidates are /dev/sda (serial X, 20.0 GiB), /dev/sdc (serial Y, 20.0 GiB)"),
            },
            Case {
                name: "duplicate serials among the disks here",
                old: vec![old("/dev/sda", 20, "A", true)],
                new: vec![new("/dev/vda", 20, "A"), new("/dev/vdb", 20, "A")],
                maps: vec![],
                excluded: vec![],
                expect: Err("ambiguous identity: /dev/vda (serial A, 20.0 GiB), /dev/vdb (serial A, 20.0 GiB) all have the serial A of the layout's /dev/sda; lifeboat cannot tell which one it is: choose with --map /dev/sda=/dev/vda"),
            },
            Case {
                name: "duplicate serials resolved by --map",
                old: vec![old("/dev/sda", 20, "A", true)],
                new: vec![new("/dev/vda", 20, "A"), new("/dev/vdb", 20, "A")],
                maps: vec![("/dev/sda", "/dev/vdb")],
                excluded: vec![],
                expect: Ok(vec![("/dev/sda", "/dev/vdb", "--map")]),
            },
            Case {
                name: "duplicate serials in the layout",
                old: vec![old("/dev/sda", 20, "A", true), old("/dev/sdb", 20, "A", true)],
                new: vec![new("/dev/vda", 20, "A"), new("/dev/vdb", 20, "X")],
                maps: vec![],
                excluded: vec![],
                expect: Err("ambiguous identity: /dev/vda (serial A, 20.0 GiB) has the serial A of the layout's /dev/sda and /dev/sdb, which share it; lifeboat cannot tell which one it is: choose with --map /dev/sda=/dev/vda"),
            },
            Case {
                name: "an unneeded disk may be chosen with --map",
                old: vec![old("/dev/sda", 20, "A", true), old("/dev/sdb", 20, "B", false)],
                new: vec![new("/dev/sdb", 20, "B")],
                maps: vec![("/dev/sda", "/dev/sdb")],
                excluded: vec![],
                expect: Ok(vec![("/dev/sda", "/dev/sdb", "--map")]),
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
            let got = map_disks(&l, &c.new, &maps, &excluded, false);
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
    fn unattended_size_order_only_onto_blank_disks() {
        let l = layout(vec![old("/dev/sda", 20, "A", true)]);
        let none = BTreeMap::new();
        let blank = vec![new("/dev/vda", 30, "NEW")];
        let p = map_disks(&l, &blank, &[], &none, true).unwrap();
        assert_eq!(
            summary(&p),
            [("/dev/sda".into(), "/dev/vda".into(), "size order".into())]
        );

        let mut used = new("/dev/vda", 30, "NEW");
        used.contents
            .signatures
            .push(crate::plan::targets::Signature {
                device: "/dev/vda1".into(),
                kind: crate::plan::targets::SigKind::Filesystem,
                fstype: "ext4".into(),
                label: Some("data".into()),
                uuid: Some("u-1".into()),
                name: None,
            });
        let err = map_disks(&l, &[used.clone()], &[], &none, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unattended recovery does not choose disks by size when one holds data: /dev/vda \
             (serial NEW, 30.0 GiB) holds /dev/vda1: ext4 label \"data\" (UUID u-1); name the \
             disks in recover.toml, e.g. map = [\"/dev/sda=/dev/vda\"] (or with --map)"
        );
        // Attended, the same disk is chosen (recover then asks for --wipe).
        assert!(map_disks(&l, &[used.clone()], &[], &none, false).is_ok());
        // Named in the answers file, it is chosen unattended too.
        let maps = [("/dev/sda".to_string(), "/dev/vda".to_string())];
        let p = map_disks(&l, &[used], &maps, &none, true).unwrap();
        assert_eq!(p[0].reason, "--map");
        assert!(
            !p[0].new_contents.is_blank(),
            "the plan shows what the disk holds"
        );
    }

    #[test]
    fn map_syntax() {
        assert!(parse_maps(&["/dev/sda=/dev/vdb".into()]).is_ok());
        assert!(parse_maps(&["/dev/sda".into()]).is_err());
        assert!(parse_maps(&["=x".into()]).is_err());
    }
}
