//! The record of completed steps that lets `recover` resume after a failure
//! or a power loss. It belongs to one plan: a different plan starts afresh.
//! It records the identities of the plan's disks (serial, WWN, size, and
//! the partition table the plan writes), and refuses to resume onto other
//! disks: kernel names can change across a reboot.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layout::PartitionTable;
use crate::plan::mapping::DiskPair;
use crate::plan::targets::TableInfo;
use crate::plan::{Plan, Step};
use crate::util::human_bytes;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    plan_sha256: String,
    done: Vec<String>,
    /// The disks the plan writes, as they were when the record began.
    #[serde(default)]
    disks: Vec<RecordedDisk>,
}

/// Who a disk of the plan is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedDisk {
    pub path: String,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub size_bytes: u64,
    /// The identity of the partition table the plan writes on it (GPT disk
    /// GUID, MBR signature `0x...`): how a disk without serial or WWN is
    /// recognised once the plan has written it.
    pub table_id: Option<String>,
}

impl RecordedDisk {
    fn of(plan: &Plan, d: &DiskPair) -> RecordedDisk {
        RecordedDisk {
            path: d.new.clone(),
            serial: d.new_identity.serial.clone(),
            wwn: d.new_identity.wwn.clone(),
            size_bytes: d.new_size_bytes,
            table_id: planned_table(plan, &d.new).map(|t| TableInfo::of(t).id),
        }
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.serial {
            parts.push(format!("serial {s}"));
        }
        if let Some(w) = &self.wwn {
            parts.push(format!("WWN {w}"));
        }
        if let Some(t) = self.table_id.as_ref().filter(|_| parts.is_empty()) {
            parts.push(format!("partition table {t}"));
        }
        parts.push(human_bytes(self.size_bytes));
        parts.join(", ")
    }

    /// Why the disk at this path now (`now`) is not the recorded one;
    /// `wrote_table`: the plan's partition table was written on it.
    fn mismatch(&self, now: &DiskPair, wrote_table: bool, wrote_any: bool) -> Option<String> {
        let id = &now.new_identity;
        let is_now = format!(
            "it is now {} and holds {}",
            now.describe_new(),
            now.new_contents.describe()
        );
        let different = if self.serial.is_some() || self.wwn.is_some() {
            self.serial != id.serial || self.wwn != id.wwn
        } else if wrote_table {
            now.new_contents.table.as_ref().map(|t| &t.id) != self.table_id.as_ref()
        } else {
            // No identity and nothing to recognise it by: only a disk
            // nothing was written to yet is safe to go on with.
            wrote_any
        };
        (different || self.size_bytes != now.new_size_bytes).then(|| {
            format!(
                "{} was the disk with {}; {is_now}",
                self.path,
                self.describe()
            )
        })
    }
}

/// The partition table the plan writes on `disk`.
fn planned_table<'a>(plan: &'a Plan, disk: &str) -> Option<&'a PartitionTable> {
    plan.steps.iter().find_map(|s| match s {
        Step::Partition { disk: d, table, .. } if d == disk => Some(table),
        _ => None,
    })
}

/// The devices a step writes on directly.
fn step_devices(step: &Step) -> Vec<&str> {
    match step {
        Step::Partition { disk, .. } => vec![disk.as_str()],
        Step::CreateMd { array } => array.members.iter().map(|m| m.device.as_str()).collect(),
        Step::FormatLuks { luks, .. } => vec![luks.device.as_str()],
        Step::CreateVg { pvs, .. } => pvs.iter().map(|p| p.device.as_str()).collect(),
        Step::Mkfs { fs } => vec![fs.device.as_str()],
        Step::Mkswap { swap } => vec![swap.device.as_str()],
        _ => vec![],
    }
}

pub struct Journal {
    path: PathBuf,
    record: Record,
}

/// A stable name for a step, also used by failure points.
pub fn step_id(step: &Step) -> String {
    match step {
        Step::Partition { disk, .. } => format!("partition:{disk}"),
        Step::CreateMd { array } => format!("md:{}", array.device),
        Step::FormatLuks { name, .. } => format!("luks:{name}"),
        Step::CreateVg { vg, .. } => format!("vg:{}", vg.name),
        Step::Mkfs { fs } => format!("mkfs:{}", fs.device),
        Step::Mkswap { swap } => format!("mkswap:{}", swap.device),
        Step::Mount { .. } => "mount".into(),
        Step::Restore { .. } => "restore".into(),
        Step::FixConfig { .. } => "fixconfig".into(),
        Step::Network { .. } => "network".into(),
        Step::Migrate { .. } => "migrate".into(),
        Step::Initramfs => "initramfs".into(),
        Step::Bootloader { .. } => "bootloader".into(),
        Step::Verify => "verify".into(),
    }
}

pub fn plan_hash(plan: &Plan) -> String {
    let json = serde_json::to_vec(&plan.steps).expect("a plan serializes");
    hex::encode(Sha256::digest(json))
}

impl Journal {
    /// Opens the journal at `path` for `plan`; records of another plan are
    /// discarded. Refuses to resume when a disk of the plan is not the one
    /// the record began with.
    pub fn open(path: &Path, plan: &Plan) -> Result<Journal> {
        let hash = plan_hash(plan);
        let record = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Record>(&t).ok())
            .filter(|r| r.plan_sha256 == hash)
            .unwrap_or_else(|| Record {
                plan_sha256: hash,
                done: Vec::new(),
                disks: plan
                    .disks
                    .iter()
                    .map(|d| RecordedDisk::of(plan, d))
                    .collect(),
            });
        let journal = Journal {
            path: path.to_path_buf(),
            record,
        };
        journal.check_disks(plan)?;
        Ok(journal)
    }

    /// Every disk of the plan is the one the record began with.
    fn check_disks(&self, plan: &Plan) -> Result<()> {
        if self.record.done.is_empty() {
            return Ok(());
        }
        let mut problems = Vec::new();
        for d in &plan.disks {
            let Some(rec) = self.record.disks.iter().find(|r| r.path == d.new) else {
                problems.push(format!("it records no identity for {}", d.new));
                continue;
            };
            let wrote_table = self.is_done(&format!("partition:{}", d.new));
            if let Some(p) = rec.mismatch(d, wrote_table, self.wrote_disk(plan, &d.new)) {
                problems.push(p);
            }
        }
        if !problems.is_empty() {
            bail!(
                "refusing to resume: {} records {} steps done on other disks than these: {}. \
                 Kernel names can change across a reboot: name the disks with --map, or remove \
                 {} to start afresh (disks holding data then need --wipe)",
                self.path.display(),
                self.record.done.len(),
                problems.join("; "),
                self.path.display()
            );
        }
        Ok(())
    }

    /// Whether a recorded step of `plan` wrote on the whole disk `disk`
    /// (its partition table, or the disk itself as a member, PV or file
    /// system): the data on it is then this plan's own.
    pub fn wrote_disk(&self, plan: &Plan, disk: &str) -> bool {
        plan.steps
            .iter()
            .filter(|s| self.is_done(&step_id(s)))
            .any(|s| step_devices(s).contains(&disk))
    }

    pub fn is_done(&self, id: &str) -> bool {
        self.record.done.iter().any(|d| d == id)
    }

    pub fn done_count(&self) -> usize {
        self.record.done.len()
    }

    pub fn mark(&mut self, id: &str) -> Result<()> {
        if !self.is_done(id) {
            self.record.done.push(id.to_string());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::util::write_atomic(
            &self.path,
            serde_json::to_string_pretty(&self.record)?.as_bytes(),
            0o600,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::MbrTable;
    use crate::plan::targets::{Contents, DiskIdentity};

    /// A plan writing an MBR (signature 0x0000beef) on `disk`, whose disk
    /// here has `serial` and holds `contents`.
    pub(crate) fn plan_on(disk: &str, serial: Option<&str>, contents: Contents) -> Plan {
        Plan {
            hostname: "h".into(),
            layout_captured_at: String::new(),
            disks: vec![DiskPair {
                old: "/dev/sda".into(),
                new: disk.into(),
                old_size_bytes: 1 << 30,
                new_size_bytes: 1 << 30,
                old_sector_size: 512,
                new_sector_size: 512,
                reason: "--map".into(),
                new_identity: DiskIdentity {
                    model: Some("QEMU HARDDISK".into()),
                    serial: serial.map(str::to_string),
                    wwn: None,
                },
                new_contents: contents,
            }],
            sizes: vec![],
            renames: Default::default(),
            steps: vec![
                Step::Partition {
                    disk: disk.into(),
                    old_disk: "/dev/sda".into(),
                    table: PartitionTable::Mbr(MbrTable {
                        disk_signature: 0xbeef,
                        partitions: vec![],
                    }),
                },
                Step::Verify,
            ],
            floors: vec![],
            adjustments: vec![],
            warnings: vec![],
            errors: vec![],
        }
    }

    /// What a disk holds after the plan's step 1: its MBR.
    pub(crate) fn with_mbr(id: &str) -> Contents {
        Contents {
            table: Some(TableInfo {
                kind: "MBR".into(),
                partitions: 0,
                id: id.into(),
            }),
            ..Contents::default()
        }
    }

    #[test]
    fn resume_onto_another_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let first = plan_on("/dev/vdb", Some("TARGET"), Contents::default());
        let mut j = Journal::open(&state, &first).unwrap();
        j.mark("partition:/dev/vdb").unwrap();

        // After a reboot /dev/vdb is another disk: the same plan, other serial.
        let swapped = plan_on("/dev/vdb", Some("BYSTANDER"), with_mbr("0x12345678"));
        assert_eq!(plan_hash(&swapped), plan_hash(&first));
        let err = Journal::open(&state, &swapped).err().unwrap().to_string();
        assert!(err.starts_with("refusing to resume: "), "{err}");
        assert!(
            err.contains(
                "/dev/vdb was the disk with serial TARGET, 1.0 GiB; it is now /dev/vdb \
                 (QEMU HARDDISK, serial BYSTANDER, 1.0 GiB) and holds MBR (signature 0x12345678"
            ),
            "{err}"
        );
        assert!(err.contains("remove "), "{err}");

        // The same disk resumes, and its data counts as the plan's own.
        let same = plan_on("/dev/vdb", Some("TARGET"), with_mbr("0x0000beef"));
        let j = Journal::open(&state, &same).unwrap();
        assert!(j.is_done("partition:/dev/vdb"));
        assert!(j.wrote_disk(&same, "/dev/vdb"));
    }

    #[test]
    fn a_disk_without_identity_is_recognised_by_the_table_the_plan_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let first = plan_on("/dev/loop3", None, Contents::default());
        Journal::open(&state, &first)
            .unwrap()
            .mark("partition:/dev/loop3")
            .unwrap();
        let ours = plan_on("/dev/loop3", None, with_mbr("0x0000beef"));
        assert!(Journal::open(&state, &ours).is_ok());
        let other = plan_on("/dev/loop3", None, with_mbr("0x12345678"));
        assert!(Journal::open(&state, &other).is_err());
        let blank = plan_on("/dev/loop3", None, Contents::default());
        assert!(Journal::open(&state, &blank).is_err());
    }

    #[test]
    fn nothing_done_checks_nothing_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let p = plan_on("/dev/vdb", Some("A"), Contents::default());
        let j = Journal::open(&state, &p).unwrap();
        assert!(!j.wrote_disk(&p, "/dev/vdb"));
        assert!(!state.exists());
    }
}
