//! The disks of the machine being recovered onto, as candidates for the
//! disk mapping.

use std::path::Path;

use anyhow::{Context, Result};
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

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Lists the disks in `sys`/block: real disks, plus loop devices with a
/// backing file when `include_loop` (tests recover onto loop devices).
/// Partitions, md, device-mapper, RAM disks and CD drives are not disks.
pub fn list(sys: &Path, include_loop: bool) -> Result<Vec<TargetDisk>> {
    let block = sys.join("block");
    let mut out = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&block)
        .with_context(|| format!("listing {}", block.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let dir = block.join(&name);
        let is_loop = name.starts_with("loop");
        let skip = ["ram", "zram", "sr", "md", "dm-", "nbd", "fd"]
            .iter()
            .any(|p| name.starts_with(p));
        // Hidden devices (NVMe multipath paths) have no device node.
        let hidden = read_trim(&dir.join("hidden")).as_deref() == Some("1");
        if skip || hidden || (is_loop && (!include_loop || !dir.join("loop/backing_file").exists()))
        {
            continue;
        }
        let sectors: u64 = read_trim(&dir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        let dev = dir.join("device");
        let wwn = read_trim(&dev.join("wwid"))
            .or_else(|| read_trim(&dir.join("wwid")))
            .or_else(|| read_trim(&dev.join("wwn")));
        out.push(TargetDisk {
            path: format!("/dev/{name}"),
            size_bytes: sectors * 512,
            logical_sector_size: read_trim(&dir.join("queue/logical_block_size"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(512),
            serial: read_trim(&dev.join("serial")).or_else(|| read_trim(&dir.join("serial"))),
            wwn,
            model: read_trim(&dev.join("model")),
            removable: read_trim(&dir.join("removable")).as_deref() == Some("1"),
            read_only: read_trim(&dir.join("ro")).as_deref() == Some("1"),
            name,
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
        mk("dm-0", &[("size", "100\n")]);
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
