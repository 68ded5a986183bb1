//! The record of completed steps that lets `recover` resume after a failure
//! or a power loss. It belongs to one plan: a different plan starts afresh.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::{Plan, Step};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    plan_sha256: String,
    done: Vec<String>,
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
    /// discarded.
    pub fn open(path: &Path, plan: &Plan) -> Result<Journal> {
        let hash = plan_hash(plan);
        let record = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Record>(&t).ok())
            .filter(|r| r.plan_sha256 == hash)
            .unwrap_or(Record {
                plan_sha256: hash,
                done: Vec::new(),
            });
        Ok(Journal {
            path: path.to_path_buf(),
            record,
        })
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
