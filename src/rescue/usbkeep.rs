//! `mkrescue --usb` on a disk that is already a lifeboat rescue disk: the
//! LIFEBOAT-DATA partition holds backups, so only the boot partition is
//! rewritten when the new image fits it; otherwise the write is refused
//! unless `--wipe-data` says the backups may go.

use std::path::Path;

use anyhow::{bail, Result};

use super::usb::DATA_LABEL;
use crate::exec::Cmd;
use crate::layout::probe::ptable;
use crate::layout::PartitionTable;
use crate::util;

/// The partition names `mkrescue --usb` gives.
const ESP_NAME: &str = "LIFEBOAT-EFI";

/// An earlier rescue disk's partitions (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Existing {
    pub esp_start: u64,
    pub esp_size: u64,
    pub data_start: u64,
    pub data_size: u64,
}

/// How the disk is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Partitioned anew, both file systems made (whatever was there is lost).
    Fresh,
    /// Only the boot partition is rewritten; LIFEBOAT-DATA stays as it is.
    KeepData(Existing),
}

/// The rescue disk layout on `target` (partition 1 LIFEBOAT-EFI, partition
/// 2 LIFEBOAT-DATA holding an ext4 labelled LIFEBOAT-DATA), if it is one.
/// The GPT is read by the layout's own reader (both headers and their CRCs)
/// in the 512-byte units `mkrescue --usb` writes it in.
pub fn existing(target: &Path) -> Option<Existing> {
    let Ok(Some(PartitionTable::Gpt(gpt))) = ptable::read_path(target, Some(512)) else {
        return None;
    };
    let span = |number: u32, name: &str| {
        gpt.partitions
            .iter()
            .find(|p| p.number == number && p.name == name)
            .map(|p| (p.first_lba * 512, p.size_bytes))
    };
    let (esp_start, esp_size) = span(1, ESP_NAME)?;
    let (data_start, data_size) = span(2, DATA_LABEL)?;
    let probe = Cmd::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(data_start.to_string())
        .arg(target)
        .ok_codes(&[2])
        .read()
        .ok()?;
    let has = |l: &str| probe.lines().any(|x| x == l);
    (has("TYPE=ext4") && has(&format!("LABEL={DATA_LABEL}"))).then_some(Existing {
        esp_start,
        esp_size,
        data_start,
        data_size,
    })
}

/// The plan for a target holding `found` when the image needs an ESP of
/// `esp` bytes: the data partition is kept when the image fits the boot
/// partition; a disk whose boot partition is too small is refused unless
/// `wipe_data`.
pub fn plan(target: &Path, found: Option<Existing>, esp: u64, wipe_data: bool) -> Result<Plan> {
    match found {
        None => Ok(Plan::Fresh),
        Some(_) if wipe_data => Ok(Plan::Fresh),
        Some(e) if e.esp_size >= esp => Ok(Plan::KeepData(e)),
        Some(e) => bail!(
            "{} is a rescue disk whose {DATA_LABEL} partition ({}) may hold backups, and the new \
             image needs a boot partition of {} (it has {}): copy the backups off and add \
             --wipe-data to repartition it",
            target.display(),
            util::human_bytes(e.data_size),
            util::human_bytes(esp),
            util::human_bytes(e.esp_size)
        ),
    }
}

/// The line `mkrescue` shows before writing.
pub fn describe(plan: &Plan) -> String {
    match plan {
        Plan::Fresh => "  will be written: everything on it is lost\n".into(),
        Plan::KeepData(e) => format!(
            "  will be written: the boot partition ({}) only; the {DATA_LABEL} partition ({}) \
             and its backups are kept (--wipe-data: repartition)\n",
            util::human_bytes(e.esp_size),
            util::human_bytes(e.data_size)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_kept_when_the_image_fits_and_refused_otherwise() {
        let e = Existing {
            esp_start: 1 << 20,
            esp_size: 256 << 20,
            data_start: 257 << 20,
            data_size: 700 << 20,
        };
        let t = Path::new("/dev/sdz");
        assert_eq!(plan(t, None, 256 << 20, false).unwrap(), Plan::Fresh);
        assert_eq!(
            plan(t, Some(e), 200 << 20, false).unwrap(),
            Plan::KeepData(e)
        );
        assert_eq!(plan(t, Some(e), 300 << 20, true).unwrap(), Plan::Fresh);
        let err = plan(t, Some(e), 300 << 20, false).unwrap_err().to_string();
        assert!(err.contains("LIFEBOAT-DATA partition (700.0 MiB)"), "{err}");
        assert!(err.contains("--wipe-data"), "{err}");
    }
}
