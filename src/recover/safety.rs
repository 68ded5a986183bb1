//! Before a disk is written: prove that nothing uses it. A disk is busy when
//! it or one of its partitions is mounted, active as swap, or held by an md
//! array or a device-mapper device (LUKS, LVM) — directly or further up the
//! stack. Holders that the plan itself creates are allowed, so that a
//! re-run after a failure can resume.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::mount::MountEntry;

fn read_dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The kernel names of a disk and its partitions.
pub fn disk_and_partitions(sys: &Path, disk: &str) -> Vec<String> {
    let name = disk.trim_start_matches("/dev/").to_string();
    let mut out = vec![name.clone()];
    for entry in read_dir_names(&sys.join("block").join(&name)) {
        if sys
            .join("block")
            .join(&name)
            .join(&entry)
            .join("partition")
            .exists()
        {
            out.push(entry);
        }
    }
    out
}

/// Everything stacked on `names`, transitively (md, dm), by kernel name.
fn stacked(sys: &Path, names: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = names.to_vec();
    while let Some(n) = todo.pop() {
        for h in read_dir_names(&sys.join("class/block").join(&n).join("holders")) {
            if seen.insert(h.clone()) {
                todo.push(h);
            }
        }
    }
    seen
}

/// The device-mapper name of a dm-N device.
fn dm_name(sys: &Path, kname: &str) -> Option<String> {
    std::fs::read_to_string(sys.join("class/block").join(kname).join("dm/name"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Kernel name of a device path (`/dev/mapper/vg0-root` → `dm-0`).
fn kernel_name(path: &str) -> Option<String> {
    let p = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// What may hold the disks: devices the plan creates.
#[derive(Debug, Default, Clone)]
pub struct Allowed {
    /// md kernel names (`md127`).
    pub md: BTreeSet<String>,
    /// device-mapper names or prefixes (`cryptroot`, `vg0-`).
    pub dm_names: BTreeSet<String>,
    pub dm_prefixes: BTreeSet<String>,
}

impl Allowed {
    fn allows(&self, sys: &Path, kname: &str) -> bool {
        if self.md.contains(kname) {
            return true;
        }
        match dm_name(sys, kname) {
            Some(n) => {
                self.dm_names.contains(&n)
                    || self.dm_prefixes.iter().any(|p| n.starts_with(p.as_str()))
            }
            None => false,
        }
    }
}

/// Why `disk` cannot be written now; empty when it is free.
pub fn busy_reasons(
    sys: &Path,
    disk: &str,
    mounts: &[MountEntry],
    swaps: &str,
    allowed: &Allowed,
) -> Result<Vec<String>> {
    let own = disk_and_partitions(sys, disk);
    let above = stacked(sys, &own);
    let mut all: BTreeSet<String> = own.iter().cloned().collect();
    all.extend(above.iter().cloned());
    let mut reasons = Vec::new();
    for m in mounts {
        if !m.source.starts_with("/dev/") {
            continue;
        }
        if let Some(k) = kernel_name(&m.source) {
            if all.contains(&k) {
                reasons.push(format!(
                    "{} is mounted on {}",
                    m.source,
                    m.mountpoint.display()
                ));
            }
        }
    }
    for line in swaps.lines().skip(1) {
        let Some(dev) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(k) = kernel_name(dev) {
            if all.contains(&k) {
                reasons.push(format!("{dev} is active as swap"));
            }
        }
    }
    for h in &above {
        if !allowed.allows(sys, h) {
            let what = match dm_name(sys, h) {
                Some(n) => format!("device-mapper device {n} ({h})"),
                None => h.clone(),
            };
            reasons.push(format!("it is held by {what}"));
        }
    }
    Ok(reasons)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_followed_and_plan_devices_allowed() {
        let sys = tempfile::tempdir().unwrap();
        let s = sys.path();
        let mkdir = |p: &str| std::fs::create_dir_all(s.join(p)).unwrap();
        mkdir("block/vda/vda1");
        std::fs::write(s.join("block/vda/vda1/partition"), "1").unwrap();
        mkdir("block/vda/vda2");
        std::fs::write(s.join("block/vda/vda2/partition"), "2").unwrap();
        mkdir("class/block/vda2/holders/md0");
        mkdir("class/block/md0/holders/dm-0");
        mkdir("class/block/dm-0/dm");
        std::fs::write(s.join("class/block/dm-0/dm/name"), "vg0-root\n").unwrap();
        assert_eq!(disk_and_partitions(s, "/dev/vda").len(), 3);

        let none = Allowed::default();
        let r = busy_reasons(s, "/dev/vda", &[], "Filename Type\n", &none).unwrap();
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r
            .iter()
            .any(|x| x.contains("device-mapper device vg0-root")));

        let mut ours = Allowed::default();
        ours.md.insert("md0".into());
        ours.dm_prefixes.insert("vg0-".into());
        assert!(busy_reasons(s, "/dev/vda", &[], "", &ours)
            .unwrap()
            .is_empty());
    }
}
