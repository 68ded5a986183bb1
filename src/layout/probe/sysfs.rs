//! Block devices from sysfs: what exists, how big, how it stacks, and the
//! identities of disks. Works without udev (the rescue system has none).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What kind of block device an entry of /sys/block (or a partition) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevKind {
    /// A whole disk with a driver behind it (virtio, SCSI, NVMe...).
    Disk,
    /// Partition `number` of the disk with kernel name `disk`.
    Partition { disk: String, number: u32 },
    /// A device-mapper device with its `dm/name` and `dm/uuid`.
    Dm { name: String, uuid: String },
    /// An md array.
    Md,
    /// A loop device and its backing file.
    Loop { backing_file: Option<String> },
    /// CD/DVD drives, RAM disks, zram and the like: never part of a layout.
    Ignored,
}

/// One block device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name (`vda`, `vda1`, `dm-3`, `md127`).
    pub name: String,
    /// Path under /dev at capture time (`/dev/vda1`, `/dev/mapper/vg0-root`).
    pub path: String,
    pub kind: DevKind,
    /// Device number (major, minor).
    pub devnum: (u32, u32),
    pub size_bytes: u64,
    /// Kernel names of the devices this one is built on (sysfs `slaves`).
    pub slaves: Vec<String>,
    /// Kernel names of the devices built on this one (sysfs `holders`).
    pub holders: Vec<String>,
    /// Target of the /sys/block link (`../devices/pci0000:00/.../block/vda`).
    pub sys_link: String,
}

/// Identity and geometry of a whole disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskInfo {
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub rotational: bool,
    pub removable: bool,
    pub transport: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
}

fn read_trim(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim().trim_end_matches('\0').trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trim(path)?.parse().ok()
}

fn list_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn parse_devnum(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The /dev path of a kernel name: `cciss!c0d0` is `/dev/cciss/c0d0`.
pub fn dev_path(name: &str) -> String {
    format!("/dev/{}", name.replace('!', "/"))
}

/// Reads every block device under `sys`/block with its partitions.
pub fn scan(sys: &Path) -> Result<Vec<BlockDev>> {
    let block = sys.join("block");
    let entries = std::fs::read_dir(&block)
        .with_context(|| format!("listing block devices in {}", block.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    let mut out = Vec::new();
    for name in names {
        let dir = block.join(&name);
        // Hidden devices (the per-path nodes of NVMe multipath, nvme0c0n1)
        // have no device node; the namespace head (nvme0n1) stands for them.
        if read_trim(&dir.join("hidden")).as_deref() == Some("1") {
            continue;
        }
        let sys_link = std::fs::read_link(&dir)
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let kind = whole_kind(&dir, &name);
        let path = match &kind {
            DevKind::Dm { name, .. } if !name.is_empty() => format!("/dev/mapper/{name}"),
            _ => dev_path(&name),
        };
        out.push(BlockDev {
            devnum: read_trim(&dir.join("dev"))
                .and_then(|d| parse_devnum(&d))
                .unwrap_or((0, 0)),
            size_bytes: read_u64(&dir.join("size")).unwrap_or(0) * 512,
            slaves: list_names(&dir.join("slaves")),
            holders: list_names(&dir.join("holders")),
            name: name.clone(),
            path,
            kind: kind.clone(),
            sys_link: sys_link.clone(),
        });
        if kind == DevKind::Ignored {
            continue;
        }
        // Partitions are subfolders that have a `partition` file.
        let mut parts = Vec::new();
        for sub in list_names(&dir) {
            let pdir = dir.join(&sub);
            if let Some(number) = read_u64(&pdir.join("partition")) {
                parts.push(BlockDev {
                    path: dev_path(&sub),
                    kind: DevKind::Partition {
                        disk: name.clone(),
                        number: number as u32,
                    },
                    devnum: read_trim(&pdir.join("dev"))
                        .and_then(|d| parse_devnum(&d))
                        .unwrap_or((0, 0)),
                    size_bytes: read_u64(&pdir.join("size")).unwrap_or(0) * 512,
                    slaves: Vec::new(),
                    holders: list_names(&pdir.join("holders")),
                    sys_link: format!("{sys_link}/{sub}"),
                    name: sub,
                });
            }
        }
        parts.sort_by_key(|p| match p.kind {
            DevKind::Partition { number, .. } => number,
            _ => 0,
        });
        out.extend(parts);
    }
    Ok(out)
}

fn whole_kind(dir: &Path, name: &str) -> DevKind {
    if dir.join("dm").is_dir() {
        return DevKind::Dm {
            name: read_trim(&dir.join("dm/name")).unwrap_or_default(),
            uuid: read_trim(&dir.join("dm/uuid")).unwrap_or_default(),
        };
    }
    if dir.join("md").is_dir() {
        return DevKind::Md;
    }
    if name.starts_with("loop") {
        return DevKind::Loop {
            backing_file: read_trim(&dir.join("loop/backing_file")),
        };
    }
    let ignored_prefix = ["sr", "ram", "zram", "fd"];
    if ignored_prefix.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
    }) {
        return DevKind::Ignored;
    }
    DevKind::Disk
}

/// Identity and geometry of the disk `name` from sysfs.
pub fn disk_info(sys: &Path, dev: &BlockDev) -> DiskInfo {
    let dir = sys.join("block").join(&dev.name);
    let device = dir.join("device");
    let first = |names: &[PathBuf]| names.iter().find_map(|p| read_trim(p));
    let serial = first(&[dir.join("serial"), device.join("serial")])
        .or_else(|| read_vpd80(&device.join("vpd_pg80")));
    let wwn = first(&[dir.join("wwid"), device.join("wwid"), device.join("wwn")]);
    let model = read_trim(&device.join("model")).map(|m| {
        match read_trim(&device.join("vendor")) {
            // SCSI disks split the name in vendor and model; NVMe and virtio
            // have no vendor file.
            Some(v) if !v.eq_ignore_ascii_case("ata") && !m.starts_with(&v) => {
                format!("{v} {m}")
            }
            _ => m,
        }
    });
    DiskInfo {
        logical_sector_size: read_u64(&dir.join("queue/logical_block_size")).unwrap_or(512) as u32,
        physical_sector_size: read_u64(&dir.join("queue/physical_block_size")).unwrap_or(512)
            as u32,
        rotational: read_u64(&dir.join("queue/rotational")) == Some(1),
        removable: read_u64(&dir.join("removable")) == Some(1),
        transport: transport(&dev.name, &dev.sys_link),
        model,
        serial,
        wwn,
    }
}

/// The unit serial number page (SCSI VPD 0x80): 4-byte header, then ASCII.
fn read_vpd80(path: &Path) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    if data.len() < 4 || data[1] != 0x80 {
        return None;
    }
    let len = (u16::from_be_bytes([data[2], data[3]]) as usize).min(data.len() - 4);
    let s = String::from_utf8_lossy(&data[4..4 + len])
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

/// The bus of a disk, from its place in the device tree.
pub fn transport(name: &str, sys_link: &str) -> Option<String> {
    let t = if name.starts_with("loop") {
        "loop"
    } else if name.starts_with("nvme") || sys_link.contains("/nvme") {
        "nvme"
    } else if sys_link.contains("/usb") {
        "usb"
    } else if sys_link.contains("/virtio") && !sys_link.contains("/host") {
        "virtio"
    } else if sys_link.contains("/ata") {
        "sata"
    } else if name.starts_with("mmcblk") || sys_link.contains("/mmc") {
        "mmc"
    } else if sys_link.contains("/vmbus") {
        "hyperv"
    } else if sys_link.contains("/xen") || name.starts_with("xvd") {
        "xen"
    } else if sys_link.contains("/host") || sys_link.contains("/target") {
        "scsi"
    } else {
        return None;
    };
    Some(t.to_string())
}

/// Orders `vda2` before `vda10`: runs of digits compare as numbers.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> Vec<(String, u64)> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut num = String::new();
        for c in s.chars() {
            if c.is_ascii_digit() {
                num.push(c);
            } else {
                if !num.is_empty() {
                    parts.push((std::mem::take(&mut text), num.parse().unwrap_or(0)));
                    num.clear();
                }
                text.push(c);
            }
        }
        parts.push((text, num.parse().unwrap_or(0)));
        parts
    }
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// Index of block devices by kernel name, /dev path and device number.
#[derive(Debug, Default)]
pub struct Devices {
    pub list: Vec<BlockDev>,
    by_name: BTreeMap<String, usize>,
    by_path: BTreeMap<String, usize>,
    by_devnum: BTreeMap<(u32, u32), usize>,
}

impl Devices {
    pub fn new(list: Vec<BlockDev>) -> Devices {
        let mut d = Devices {
            list,
            ..Devices::default()
        };
        for (i, b) in d.list.iter().enumerate() {
            d.by_name.insert(b.name.clone(), i);
            d.by_path.insert(b.path.clone(), i);
            d.by_path.insert(dev_path(&b.name), i);
            d.by_devnum.insert(b.devnum, i);
        }
        d
    }

    pub fn by_name(&self, name: &str) -> Option<&BlockDev> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    pub fn by_devnum(&self, devnum: (u32, u32)) -> Option<&BlockDev> {
        self.by_devnum.get(&devnum).map(|&i| &self.list[i])
    }

    /// The device a path names: `/dev/vda1`, `/dev/dm-3`, `/dev/mapper/x`,
    /// or (through `dev_root`) any node or symlink such as `/dev/vg0/root`.
    pub fn resolve(&self, path: &str, dev_root: &Path) -> Option<&BlockDev> {
        if let Some(&i) = self.by_path.get(path) {
            return Some(&self.list[i]);
        }
        // /dev/VG/LV and other symlinks: follow them inside the root.
        let rel = path.strip_prefix('/')?;
        let node = dev_root.join(rel.strip_prefix("dev/")?);
        use std::os::unix::fs::FileTypeExt;
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(node).ok()?;
        if !meta.file_type().is_block_device() {
            return None;
        }
        let rdev = meta.rdev();
        self.by_devnum(((libc::major(rdev)), (libc::minor(rdev))))
    }

    /// The canonical path of `path` (see [`Devices::resolve`]), or `path`
    /// itself when it names no known block device.
    pub fn canonical(&self, path: &str, dev_root: &Path) -> String {
        self.resolve(path, dev_root)
            .map(|b| b.path.clone())
            .unwrap_or_else(|| path.to_string())
    }

    /// Whether the disk `name` has partitions in sysfs.
    pub fn has_partitions(&self, name: &str) -> bool {
        self.list
            .iter()
            .any(|p| matches!(&p.kind, DevKind::Partition { disk, .. } if disk == name))
    }

    /// Every device below `name` in the stack (slaves, and the disk of a
    /// partition), transitively, `name` included.
    pub fn lower_closure(&self, name: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if seen.contains(&n) {
                continue;
            }
            if let Some(b) = self.by_name(&n) {
                todo.extend(b.slaves.iter().cloned());
                if let DevKind::Partition { disk, .. } = &b.kind {
                    todo.push(disk.clone());
                }
            }
            seen.push(n);
        }
        seen
    }

    /// Every device above `name` (holders, and the partitions of a disk),
    /// transitively, `name` included.
    pub fn upper_closure(&self, name: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if seen.contains(&n) {
                continue;
            }
            if let Some(b) = self.by_name(&n) {
                todo.extend(b.holders.iter().cloned());
                for p in &self.list {
                    if matches!(&p.kind, DevKind::Partition { disk, .. } if *disk == n) {
                        todo.push(p.name.clone());
                    }
                }
            }
            seen.push(n);
        }
        seen
    }

    /// The disks (kernel names) a device sits on.
    pub fn disks_under(&self, name: &str) -> Vec<String> {
        self.lower_closure(name)
            .into_iter()
            .filter(|n| {
                self.by_name(n)
                    .is_some_and(|b| matches!(b.kind, DevKind::Disk | DevKind::Loop { .. }))
            })
            .collect()
    }
}

/// The modules driving the disks `names` (kernel names), from sysfs.
pub fn driver_modules(sys: &Path, names: &[String]) -> Vec<String> {
    let mut mods = BTreeSet::new();
    for name in names {
        let Ok(mut dev) = std::fs::canonicalize(sys.join("block").join(name).join("device")) else {
            continue;
        };
        loop {
            if let Ok(m) = std::fs::read_link(dev.join("driver/module")) {
                if let Some(name) = m.file_name() {
                    mods.insert(name.to_string_lossy().into_owned());
                }
            }
            if !dev.pop() || dev == sys || dev.as_os_str().len() <= 1 {
                break;
            }
        }
    }
    mods.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest_sys() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guest/sysroot/sys")
    }

    #[test]
    fn scans_the_guest_sysfs_copy() {
        let devs = Devices::new(scan(&guest_sys()).unwrap());
        let vda = devs.by_name("vda").unwrap();
        assert_eq!(vda.kind, DevKind::Disk);
        assert_eq!(vda.path, "/dev/vda");
        assert_eq!(vda.size_bytes, 1 << 30);
        assert_eq!(vda.devnum, (252, 0));
        let vda2 = devs.by_name("vda2").unwrap();
        assert_eq!(
            vda2.kind,
            DevKind::Partition {
                disk: "vda".into(),
                number: 2
            }
        );
        assert_eq!(vda2.holders, vec!["md0"]);
        assert_eq!(vda2.size_bytes, 600 << 20);
        let md = devs.by_name("md0").unwrap();
        assert_eq!(md.kind, DevKind::Md);
        assert_eq!(md.slaves, vec!["vda2", "vdb2"]);
        // the logical partitions of the MBR disk
        let vdd6 = devs.by_name("vdd6").unwrap();
        assert!(matches!(vdd6.kind, DevKind::Partition { number: 6, .. }));
        assert_eq!(devs.by_name("sr0").unwrap().kind, DevKind::Ignored);
        // dm devices carry their mapper names
        let root = devs.resolve("/dev/mapper/vg0-root", Path::new("/nonexistent"));
        let root = root.expect("vg0-root is known");
        assert!(matches!(&root.kind, DevKind::Dm { uuid, .. } if uuid.starts_with("LVM-")));
        assert_eq!(
            devs.canonical(&dev_path(&root.name), Path::new("/x")),
            root.path
        );
        // the stack from the root LV down to the disks
        let mut disks = devs.disks_under(&root.name);
        disks.sort();
        assert_eq!(disks, vec!["vda", "vdb"]);
        assert!(devs.upper_closure("vdb").contains(&root.name));
    }

    #[test]
    fn disk_identity_from_sysfs() {
        let devs = Devices::new(scan(&guest_sys()).unwrap());
        let info = disk_info(&guest_sys(), devs.by_name("vdc").unwrap());
        assert_eq!(info.serial.as_deref(), Some("LBTEST02"));
        assert_eq!(info.transport.as_deref(), Some("virtio"));
        assert_eq!(info.logical_sector_size, 512);
        assert!(!info.removable);
    }

    #[test]
    fn transports_from_device_paths() {
        let cases = [
            ("vda", "../devices/pci0000:00/0000:00:02.0/virtio0/block/vda", Some("virtio")),
            ("sda", "../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda", Some("sata")),
            ("sdb", "../devices/pci0000:00/0000:00:03.0/virtio1/host2/target2:0:0/2:0:0:0/block/sdb", Some("scsi")),
            ("nvme0n1", "../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1", Some("nvme")),
            ("sdc", "../devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host3/target3:0:0/3:0:0:0/block/sdc", Some("usb")),
            ("loop0", "../devices/virtual/block/loop0", Some("loop")),
            ("dm-0", "../devices/virtual/block/dm-0", None),
        ];
        for (name, link, want) in cases {
            assert_eq!(transport(name, link).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["vda10", "vda2", "vda1", "dm-10", "dm-2", "sdb", "sda"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec!["dm-2", "dm-10", "sda", "sdb", "vda1", "vda2", "vda10"]
        );
    }
}
