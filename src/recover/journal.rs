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
            "it is now {} ({}, {}) and holds {}",
            now.new,
            id.describe(),
            human_bytes(now.new_size_bytes),
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
