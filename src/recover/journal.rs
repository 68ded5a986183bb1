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

    /// Why the disk at this path now (`now`) is not the recorded one
    /// (another serial, WWN or size); `wrote_any`: a recorded step wrote
    /// on it.
    fn mismatch(&self, now: &DiskPair, wrote_any: bool) -> Option<String> {
        let id = &now.new_identity;
        let different = if self.serial.is_some() || self.wwn.is_some() {
            self.serial != id.serial || self.wwn != id.wwn
        } else {
            // No identity: the contents check below recognises the disk by
            // the table the plan wrote; a disk nothing was written to yet
            // is safe to go on with.
            wrote_any && self.table_id.is_none()
        };
        (different || self.size_bytes != now.new_size_bytes).then(|| {
            format!(
                "{} was the disk with {}; it is now {} and holds {}",
                self.path,
                self.describe(),
                now.describe_new(),
                now.new_contents.describe()
            )
        })
    }
}

/// A mark a step leaves on a device: the identity (UUID) it gave it, which
/// a resume finds there while the step's work is still in place.
#[derive(Debug, PartialEq, Eq)]
struct Mark<'a> {
    device: &'a str,
    /// What the step made there, in words (`ext4 file system`).
    what: String,
    uuid: &'a str,
}

fn mark<'a>(device: &'a str, what: String, uuid: &'a str) -> Mark<'a> {
    Mark { device, what, uuid }
}

/// The marks a step leaves on the devices it writes directly.
fn marks(step: &Step) -> Vec<Mark<'_>> {
    match step {
        Step::CreateMd { array } => array
            .members
            .iter()
            .map(|m| {
                mark(
                    &m.device,
                    format!("member of md array {}", array.device),
                    &array.uuid,
                )
            })
            .collect(),
        Step::FormatLuks { luks, .. } => vec![mark(&luks.device, "LUKS".into(), &luks.uuid)],
        Step::CreateVg { vg, pvs, .. } => pvs
            .iter()
            .map(|p| mark(&p.device, format!("LVM PV of {}", vg.name), &p.uuid))
            .collect(),
        Step::Mkfs { fs } => fs
            .uuid
            .iter()
            .map(|u| mark(&fs.device, format!("{} file system", fs.fstype), u))
            .collect(),
        Step::Mkswap { swap } => swap
            .uuid
            .iter()
            .map(|u| mark(&swap.device, "swap".into(), u))
            .collect(),
        _ => vec![],
    }
}

/// UUIDs as blkid, mdadm and LVM spell them compare equal (`-`, `:`
/// and case aside; an md 0.90 UUID also with each 32-bit word's bytes
/// reversed, as blkid and mdadm may disagree there).
fn same_uuid(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let (a, b) = (norm(a), norm(b));
    a == b || (a.len() == 32 && super::safety::swap_words(&a) == b)
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
        let mut journal = Journal::fresh(path, plan);
        if let Some(record) = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str::<Record>(&t).ok())
            .filter(|r| r.plan_sha256 == journal.record.plan_sha256)
        {
            journal.record = record;
        }
        journal.check_disks(plan)?;
        Ok(journal)
    }

    /// A fresh record for `plan` at `path`, whatever an earlier run
    /// recorded there (`recover --start-over`): nothing counts as done, so
    /// disks holding data need `--wipe` again.
    pub fn fresh(path: &Path, plan: &Plan) -> Journal {
        Journal {
            path: path.to_path_buf(),
            record: Record {
                plan_sha256: plan_hash(plan),
                done: Vec::new(),
                disks: plan
                    .disks
                    .iter()
                    .map(|d| RecordedDisk::of(plan, d))
                    .collect(),
            },
        }
    }

    /// Every disk of the plan is the one the record began with, and still
    /// holds what the recorded steps made on it.
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
            if let Some(p) = rec.mismatch(d, self.wrote_disk(plan, &d.new)) {
                problems.push(p);
            }
        }
        if !problems.is_empty() {
            bail!(
                "refusing to resume: {} records {} steps done on other disks than these: {}. \
                 Kernel names can change across a reboot: name the disks with --map, or start \
                 over with --start-over (or remove {}); disks holding data then need --wipe",
                self.path.display(),
                self.record.done.len(),
                problems.join("; "),
                self.path.display()
            );
        }
        let missing = self.missing_work(plan);
        if !missing.is_empty() {
            bail!(
                "refusing to resume: {} records {} steps done, but the disks no longer hold \
                 what they made: {}. The disks changed since that run: start over with \
                 --start-over (or remove {}); disks holding data then need --wipe",
                self.path.display(),
                self.record.done.len(),
                missing.join("; "),
                self.path.display()
            );
        }
        Ok(())
    }

    /// What recorded steps made on the plan's disks and is not there now:
    /// the partition table the plan wrote (its GPT disk GUID or MBR
    /// signature), and the UUIDs of the md members, LUKS containers, PVs,
    /// file systems and swap made on the disks or their partitions (what
    /// is stacked on those is only found once they are, and goes with them).
    fn missing_work(&self, plan: &Plan) -> Vec<String> {
        let mut out = Vec::new();
        let mut visible: Vec<String> = Vec::new();
        for d in &plan.disks {
            visible.push(d.new.clone());
            let Some(table) = planned_table(plan, &d.new) else {
                continue;
            };
            visible.extend(super::disk::partition_devices(&d.new, table));
            let want = TableInfo::of(table);
            let now = d.new_contents.table.as_ref();
            if self.is_done(&format!("partition:{}", d.new)) && now.map(|t| &t.id) != Some(&want.id)
            {
                out.push(format!(
                    "{} holds {}, not the {} ({} {}) the plan wrote",
                    d.new,
                    d.new_contents.describe(),
                    want.kind,
                    if want.kind == "GPT" {
                        "disk GUID"
                    } else {
                        "signature"
                    },
                    want.id
                ));
            }
        }
        let signatures: Vec<_> = plan
            .disks
            .iter()
            .flat_map(|d| &d.new_contents.signatures)
            .collect();
        let done = plan.steps.iter().filter(|s| self.is_done(&step_id(s)));
        for m in done.flat_map(marks) {
            let found = signatures.iter().any(|s| {
                s.device == m.device && s.uuid.as_deref().is_some_and(|u| same_uuid(u, m.uuid))
            });
            if visible.iter().any(|v| v == m.device) && !found {
                out.push(format!(
                    "{} holds no {} with UUID {}",
                    m.device, m.what, m.uuid
                ));
            }
        }
        out
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

    /// [`plan_on`] with a partition /dev/vdb1 made swap with `SWAP_UUID`.
    fn plan_with_swap(serial: Option<&str>, contents: Contents) -> Plan {
        use crate::layout::{MbrKind, MbrPartition, Swap};
        let mut p = plan_on("/dev/vdb", serial, contents);
        if let Step::Partition {
            table: PartitionTable::Mbr(m),
            ..
        } = &mut p.steps[0]
        {
            m.partitions.push(MbrPartition {
                number: 1,
                device: "/dev/vdb1".into(),
                kind: MbrKind::Primary,
                first_lba: 2048,
                sectors: 2048,
                size_bytes: 1 << 20,
                type_byte: 0x82,
                bootable: false,
            });
        }
        p.steps.insert(
            1,
            Step::Mkswap {
                swap: Swap {
                    device: "/dev/vdb1".into(),
                    is_file: false,
                    uuid: Some(SWAP_UUID.into()),
                    label: None,
                    size_bytes: 1 << 20,
                    active: false,
                    priority: None,
                },
            },
        );
        p
    }

    const SWAP_UUID: &str = "5a5a0000-1111-4222-8333-444455556666";

    /// What /dev/vdb holds: the plan's MBR, and swap with `uuid` on vdb1.
    fn mbr_and_swap(uuid: Option<&str>) -> Contents {
        use crate::plan::targets::{SigKind, Signature};
        let mut c = with_mbr("0x0000beef");
        c.signatures.extend(uuid.map(|u| Signature {
            device: "/dev/vdb1".into(),
            kind: SigKind::Swap,
            fstype: "swap".into(),
            label: None,
            uuid: Some(u.into()),
            name: None,
        }));
        c
    }

    #[test]
    fn resume_onto_the_same_disk_wiped_since_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let first = plan_with_swap(Some("TARGET"), Contents::default());
        let mut j = Journal::open(&state, &first).unwrap();
        j.mark("partition:/dev/vdb").unwrap();
        j.mark("mkswap:/dev/vdb1").unwrap();

        // The same disk (same serial), blank again: nothing the steps made
        // is there, so nothing may count as done.
        let blank = plan_with_swap(Some("TARGET"), Contents::default());
        let err = Journal::open(&state, &blank).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!(
                "refusing to resume: {} records 2 steps done, but the disks no longer hold \
                 what they made: /dev/vdb holds nothing (no partition table, no signature), \
                 not the MBR (signature 0x0000beef) the plan wrote; /dev/vdb1 holds no swap \
                 with UUID {SWAP_UUID}. ",
                state.display()
            )),
            "{err}"
        );
        assert!(err.contains("--start-over"), "{err}");

        // The table rewritten as the plan has it but the swap gone (or
        // another one made there): refused, naming the swap.
        for now in [None, Some("0e2c6d4a-6666-4222-8333-444455556602")] {
            let p = plan_with_swap(Some("TARGET"), mbr_and_swap(now));
            let err = Journal::open(&state, &p).err().unwrap().to_string();
            assert!(
                err.contains(&format!(
                    ": /dev/vdb1 holds no swap with UUID {SWAP_UUID}. "
                )),
                "{err}"
            );
        }

        // Both still there (blkid spells the UUID in capitals here):
        // resumed, both done.
        let p = plan_with_swap(
            Some("TARGET"),
            mbr_and_swap(Some(&SWAP_UUID.to_uppercase())),
        );
        let j = Journal::open(&state, &p).unwrap();
        assert!(j.is_done("partition:/dev/vdb") && j.is_done("mkswap:/dev/vdb1"));

        // Starting over forgets the record: nothing done, nothing checked.
        let j = Journal::fresh(&state, &blank);
        assert_eq!(j.done_count(), 0);
        assert!(!j.wrote_disk(&blank, "/dev/vdb"));
    }

    #[test]
    fn uuids_compare_as_each_tool_spells_them() {
        assert!(same_uuid(
            "3f0c2c43:8e1a4d1b:9d3a6e2f:0b1c2d3e",
            "3F0C2C43-8E1A-4D1B-9D3A-6E2F0B1C2D3E"
        ));
        assert!(!same_uuid("3f0c2c43-8e1a", "3f0c2c43-8e1b"));
        assert!(same_uuid(
            "01020304:05060708:090a0b0c:0d0e0f10",
            "04030201-0807-0605-0c0b-0a09100f0e0d"
        ));
        assert!(!same_uuid(
            "01020304:05060708:090a0b0c:0d0e0f10",
            "01020304-0506-0708-090a-0b0c0d0e0f11"
        ));
    }
}
