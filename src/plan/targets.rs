//! The disks of the machine being recovered onto, as candidates for the
//! disk mapping.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::layout::probe::blkid::Probe;
use crate::layout::PartitionTable;
use crate::util::human_bytes;

/// A whole disk that recovery could write to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetDisk {
    /// Kernel name (`vda`, `nvme0n1`, `loop3`).
    pub name: String,
    /// `/dev/NAME`.
    pub path: String,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub model: Option<String>,
    pub removable: bool,
    pub read_only: bool,
    /// What the disk holds now (filled by [`probe_contents`]).
    #[serde(default)]
    pub contents: Contents,
}

/// Who a disk is: what sysfs says, without udev.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskIdentity {
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
}

impl DiskIdentity {
    /// Whether the disk has a serial or a WWN to be told apart by.
    pub fn is_known(&self) -> bool {
        self.serial.is_some() || self.wwn.is_some()
    }

    /// `QEMU HARDDISK, serial X, WWN Y` (or `no serial or WWN`).
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.model.iter().cloned().collect();
        if let Some(s) = &self.serial {
            parts.push(format!("serial {s}"));
        }
        if let Some(w) = &self.wwn {
            parts.push(format!("WWN {w}"));
        }
        if !self.is_known() {
            parts.push("no serial or WWN".into());
        }
        parts.join(", ")
    }
}

impl TargetDisk {
    pub fn identity(&self) -> DiskIdentity {
        DiskIdentity {
            model: self.model.clone(),
            serial: self.serial.clone(),
            wwn: self.wwn.clone(),
        }
    }

    /// `/dev/vdb (QEMU HARDDISK, serial X, 20.0 GiB)`.
    pub fn describe(&self) -> String {
        describe_disk(&self.path, &self.identity(), self.size_bytes)
    }
}

/// A disk in words: `/dev/vdb (QEMU HARDDISK, serial X, 20.0 GiB)`.
pub fn describe_disk(path: &str, id: &DiskIdentity, size_bytes: u64) -> String {
    format!("{path} ({}, {})", id.describe(), human_bytes(size_bytes))
}

/// The partition table found on a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    /// `GPT` or `MBR`.
    pub kind: String,
    pub partitions: usize,
    /// GPT disk GUID, or MBR signature as `0x1234abcd`.
    pub id: String,
}

impl TableInfo {
    pub fn of(t: &PartitionTable) -> TableInfo {
        match t {
            PartitionTable::Gpt(g) => TableInfo {
                kind: "GPT".into(),
                partitions: g.partitions.len(),
                id: g.disk_guid.to_lowercase(),
            },
            PartitionTable::Mbr(m) => TableInfo {
                kind: "MBR".into(),
                partitions: m.partitions.len(),
                id: format!("0x{:08x}", m.disk_signature),
            },
        }
    }
}

/// What a signature found by blkid is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigKind {
    Filesystem,
    Swap,
    /// md RAID member; `name` is the array name.
    Md,
    /// LVM physical volume; `name` is its volume group.
    Lvm,
    Luks,
    Other,
}

/// A signature on the disk or one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub device: String,
    pub kind: SigKind,
    /// blkid's TYPE (`ext4`, `linux_raid_member`, `crypto_LUKS`...).
    pub fstype: String,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// md array name or LVM volume group name.
    pub name: Option<String>,
}

impl Signature {
    fn describe(&self) -> String {
        let q = |v: &Option<String>| v.as_deref().map(|s| format!("{s:?}")).unwrap_or("?".into());
        let uuid = self.uuid.as_deref().unwrap_or("?");
        let what = match self.kind {
            SigKind::Md => format!("md member of array {} (UUID {uuid})", q(&self.name)),
            SigKind::Lvm => format!("LVM PV of volume group {} (PV UUID {uuid})", q(&self.name)),
            SigKind::Luks => format!("LUKS (UUID {uuid})"),
            _ => {
                let label = self.label.as_deref().map(|l| format!(" label {l:?}"));
                format!("{}{} (UUID {uuid})", self.fstype, label.unwrap_or_default())
            }
        };
        format!("{}: {what}", self.device)
    }
}

/// What a target disk holds now: partition table and signatures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    pub table: Option<TableInfo>,
    #[serde(default)]
    pub signatures: Vec<Signature>,
    /// Why the disk could not be read (then it does not count as blank).
    #[serde(default)]
    pub unreadable: Option<String>,
}

impl Contents {
    /// No partition table, no file system, md, LVM or LUKS signature.
    pub fn is_blank(&self) -> bool {
        self.table.is_none() && self.signatures.is_empty() && self.unreadable.is_none()
    }

    /// `GPT (disk GUID ..., 2 partitions); /dev/vdb1: ext4 ...`, or
    /// `nothing (no partition table, no signature)`.
    pub fn describe(&self) -> String {
        if self.is_blank() {
            return "nothing (no partition table, no signature)".into();
        }
        let mut parts = Vec::new();
        if let Some(t) = &self.table {
            let id = if t.kind == "GPT" {
                "disk GUID"
            } else {
                "signature"
            };
            parts.push(format!(
                "{} ({id} {}, {} partitions)",
                t.kind, t.id, t.partitions
            ));
        }
        parts.extend(self.signatures.iter().map(Signature::describe));
        if let Some(why) = &self.unreadable {
            parts.push(format!("unreadable: {why}"));
        }
        parts.join("; ")
    }

    /// Builds the contents from the partition table and the blkid probes of
    /// the disk and its partitions; `vg_of` names the VG of an LVM PV.
    pub fn from_probes(
        table: Option<&PartitionTable>,
        probes: &[&Probe],
        vg_of: &dyn Fn(&str) -> Option<String>,
    ) -> Contents {
        let signatures = probes
            .iter()
            .filter_map(|p| {
                let fstype = p.fstype.clone()?;
                let kind = match fstype.as_str() {
                    "linux_raid_member" => SigKind::Md,
                    "LVM2_member" => SigKind::Lvm,
                    "crypto_LUKS" => SigKind::Luks,
                    "swap" => SigKind::Swap,
                    _ if matches!(p.usage.as_deref(), None | Some("filesystem")) => {
                        SigKind::Filesystem
                    }
                    _ => SigKind::Other,
                };
                let name = match kind {
                    SigKind::Md => p.label.clone(),
                    SigKind::Lvm => vg_of(&p.devname),
                    _ => None,
                };
                Some(Signature {
                    device: p.devname.clone(),
                    kind,
                    fstype,
                    label: p.label.clone(),
                    uuid: p.uuid.clone(),
                    name,
                })
            })
            .collect();
        Contents {
            table: table.map(TableInfo::of),
            signatures,
            unreadable: None,
        }
    }
}

/// Lists the disks in `sys`/block, with the same identities (serial, WWN)
/// as a captured layout has: real disks, plus loop devices with a backing
/// file when `include_loop` (tests recover onto loop devices). Partitions,
/// md, device-mapper, RAM disks, CD drives and hidden devices are not disks.
pub fn list(sys: &Path, include_loop: bool) -> Result<Vec<TargetDisk>> {
    use crate::layout::probe::sysfs::{self, DevKind};
    let mut out = Vec::new();
    for dev in sysfs::scan(sys)? {
        let wanted = match &dev.kind {
            DevKind::Disk => true,
            DevKind::Loop { backing_file } => include_loop && backing_file.is_some(),
            _ => false,
        };
        if !wanted || dev.size_bytes == 0 {
            continue;
        }
        let info = sysfs::disk_info(sys, &dev);
        let read_only = std::fs::read_to_string(sys.join("block").join(&dev.name).join("ro"))
            .is_ok_and(|s| s.trim() == "1");
        out.push(TargetDisk {
            path: dev.path.clone(),
            size_bytes: dev.size_bytes,
            logical_sector_size: info.logical_sector_size,
            serial: info.serial,
            wwn: info.wwn,
            model: info.model,
            removable: info.removable,
            read_only,
            name: dev.name,
            contents: Contents::default(),
        });
    }
    Ok(out)
}

/// Reads what each target holds now, without udev: its partition table
/// with lifeboat's own reader, the signatures on the disk and its
/// partitions with one `blkid` run, the VG names from the PVs' metadata.
/// Only a sysfs that cannot be read is an error.
pub fn probe_contents(sys: &Path, targets: &mut [TargetDisk]) -> Result<()> {
    use crate::layout::probe::{blkid, lvm, ptable, sysfs};
    let devs = sysfs::scan(sys)?;
    let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for t in targets.iter() {
        let mut paths = vec![t.path.clone()];
        paths.extend(devs.iter().filter_map(|d| match &d.kind {
            sysfs::DevKind::Partition { disk, .. } if *disk == t.name => Some(d.path.clone()),
            _ => None,
        }));
        members.insert(t.path.clone(), paths);
    }
    let all: Vec<String> = members.values().flatten().cloned().collect();
    // A failed probe (an unreadable disk) leaves every disk not blank:
    // recover then asks for --wipe rather than guessing.
    let (probes, failed) = match blkid::probe_all(&all, Path::new("/")) {
        Ok(p) => (p, None),
        Err(e) => {
            log::warn!("reading the signatures on the disks: {e:#}");
            (BTreeMap::new(), Some(format!("blkid failed: {e:#}")))
        }
    };
    let vg_of = |dev: &str| {
        let text = lvm::read_pv_metadata(Path::new(dev)).ok()?;
        lvm::metadata_vg_name(&text).map(str::to_string)
    };
    for t in targets.iter_mut() {
        let found: Vec<&Probe> = members[&t.path]
            .iter()
            .filter_map(|p| probes.get(p))
            .collect();
        match ptable::read_path(Path::new(&t.path), Some(t.logical_sector_size)) {
            Ok(table) => {
                t.contents = Contents::from_probes(table.as_ref(), &found, &vg_of);
                t.contents.unreadable = failed.clone();
            }
            Err(e) => {
                t.contents = Contents::from_probes(None, &found, &vg_of);
                t.contents.unreadable = Some(format!("{e:#}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_name_tables_file_systems_and_stacks() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guest/blkid-export.txt"),
        )
        .unwrap();
        let all = crate::layout::probe::blkid::parse_export(&text);
        let of = |disk: &str| -> Vec<&Probe> {
            all.iter().filter(|p| p.devname.starts_with(disk)).collect()
        };
        let vg_of = |dev: &str| (dev == "/dev/vdb3").then(|| "vg0".to_string());
        let table = PartitionTable::Mbr(crate::layout::MbrTable {
            disk_signature: 0x1a2b3c4d,
            partitions: vec![],
        });
        let vdb = Contents::from_probes(Some(&table), &of("/dev/vdb"), &vg_of);
        assert!(!vdb.is_blank());
        assert_eq!(
            vdb.describe(),
            "MBR (signature 0x1a2b3c4d, 0 partitions); /dev/vdb2: md member of array \
             \"lifeboat:0\" (UUID 11111111-2222-2222-3333-333344444444); /dev/vdb3: LVM PV of \
             volume group \"vg0\" (PV UUID LBpv01-0000-0000-0000-0000-0000-000001)"
        );
        let vdd = Contents::from_probes(None, &of("/dev/vdd"), &vg_of);
        let kinds: Vec<(SigKind, &str)> = vdd
            .signatures
            .iter()
            .map(|s| (s.kind, s.device.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (SigKind::Filesystem, "/dev/vdd1"),
                (SigKind::Swap, "/dev/vdd5"),
                (SigKind::Luks, "/dev/vdd6")
            ]
        );
        assert!(vdd.describe().contains(
            "/dev/vdd1: ext4 label \"boot\" (UUID 0e000000-0000-4000-8000-000000000005)"
        ));
        assert!(vdd
            .describe()
            .contains("/dev/vdd6: LUKS (UUID 11111111-0000-4000-8000-000000000001)"));
        // A disk with nothing blkid knows (vdf in the fixture) is blank.
        let vdf = Contents::from_probes(None, &of("/dev/vdf"), &vg_of);
        assert!(vdf.is_blank());
        assert_eq!(vdf.describe(), "nothing (no partition table, no signature)");
    }

    #[test]
    fn lists_disks_from_a_sysfs_tree() {
        let sys = tempfile::tempdir().unwrap();
        let mk = |name: &str, files: &[(&str, &str)]| {
            for (f, v) in files {
                let p = sys.path().join("block").join(name).join(f);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, v).unwrap();
            }
        };
        mk(
            "vda",
            &[
                ("size", "41943040\n"),
                ("device/serial", "SRC-1\n"),
                ("removable", "0\n"),
                ("ro", "0\n"),
            ],
        );
        mk(
            "nvme0n1",
            &[
                ("size", "83886080\n"),
                ("wwid", "eui.0011\n"),
                ("queue/logical_block_size", "4096\n"),
            ],
        );
        mk("sr0", &[("size", "100\n")]);
        mk("dm-0", &[("size", "100\n"), ("dm/name", "vg0-root\n")]);
        mk("loop0", &[("size", "2048\n")]);
        mk(
            "loop1",
            &[("size", "2048\n"), ("loop/backing_file", "/tmp/x.img\n")],
        );
        mk("vdb", &[("size", "0\n")]);
        mk("nvme0c0n1", &[("size", "83886080\n"), ("hidden", "1\n")]);
        let all = list(sys.path(), false).unwrap();
        let names: Vec<_> = all.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "vda"]);
        assert_eq!(all[0].wwn.as_deref(), Some("eui.0011"));
        assert_eq!(all[0].logical_sector_size, 4096);
        assert_eq!(all[1].serial.as_deref(), Some("SRC-1"));
        assert_eq!(all[1].size_bytes, 20 << 30);
        let with_loop = list(sys.path(), true).unwrap();
        assert!(with_loop.iter().any(|d| d.name == "loop1"));
        assert!(!with_loop.iter().any(|d| d.name == "loop0"));
    }
}
