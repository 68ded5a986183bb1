//! The disks of the machine being recovered onto, as candidates for the
//! disk mapping.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// A whole disk that recovery could write to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
