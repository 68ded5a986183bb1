//! Before a disk is written: prove that nothing uses it. A disk is busy when
//! it or one of its partitions is mounted, active as swap, or held by an md
//! array or a device-mapper device (LUKS, LVM) — directly or further up the
//! stack. Holders that the plan itself creates are allowed, so that a
//! re-run after a failure can resume: matched by UUID (md array UUID, dm
//! uuid of the VG or LUKS container), never by name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::layout::probe::luks;
use crate::mounts::{ActiveSwap, MountInfo};
use crate::plan::{Plan, Step};

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

fn read_attr(sys: &Path, kname: &str, attr: &str) -> Option<String> {
    std::fs::read_to_string(sys.join("class/block").join(kname).join(attr))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The device-mapper name of a dm-N device.
fn dm_name(sys: &Path, kname: &str) -> Option<String> {
    read_attr(sys, kname, "dm/name")
}

/// The UUID of a running md array: sysfs `md/uuid`, else `mdadm --detail`.
fn md_uuid(sys: &Path, kname: &str) -> Option<String> {
    read_attr(sys, kname, "md/uuid").or_else(|| {
        sys.join("class/block")
            .join(kname)
            .join("md")
            .is_dir()
            .then(|| super::storage::md_uuid_of(&format!("/dev/{kname}"), false))
            .flatten()
    })
}

/// An md UUID in one form (`a:b:c:d` from mdadm, dashes from sysfs and
/// blkid): its hex digits in lower case.
fn md_key(uuid: &str) -> String {
    uuid.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `md_key` with the bytes of each 32-bit word reversed.
pub(super) fn swap_words(key: &str) -> String {
    let b = key.as_bytes();
    b.chunks(8)
        .flat_map(|w| w.rchunks(2).flatten().copied().collect::<Vec<u8>>())
        .map(char::from)
        .collect()
}

/// Kernel name of a device path (`/dev/mapper/vg0-root` → `dm-0`).
fn kernel_name(path: &str) -> Option<String> {
    let p = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// What may hold the disks: the devices the plan creates, by UUID (a name
/// like `md0` or `vg0-root` says nothing about whose array it is).
#[derive(Debug, Default, Clone)]
pub struct Allowed {
    /// md array UUIDs (see [`md_key`]).
    pub md_uuids: BTreeSet<String>,
    /// VG UUIDs without dashes: dm uuids `LVM-<vg uuid><lv uuid>`.
    pub vg_uuids: BTreeSet<String>,
    /// LUKS UUIDs: dm uuids `CRYPT-LUKS2-<uuid without dashes>-<name>`.
    pub luks_uuids: BTreeSet<String>,
}

impl Allowed {
    /// The md arrays, LUKS containers and VGs that `plan` creates (a
    /// re-run finds them active).
    pub fn of_plan(plan: &Plan) -> Allowed {
        let mut a = Allowed::default();
        for s in &plan.steps {
            match s {
                Step::CreateMd { array } => {
                    a.md_uuids.insert(md_key(&array.uuid));
                }
                Step::FormatLuks { luks, .. } => {
                    a.luks_uuids.insert(luks.uuid.clone());
                }
                Step::CreateVg { vg, .. } => {
                    a.vg_uuids.insert(vg.uuid.replace('-', ""));
                }
                _ => {}
            }
        }
        a
    }

    fn allows(&self, sys: &Path, kname: &str) -> bool {
        if let Some(dm_uuid) = read_attr(sys, kname, "dm/uuid") {
            if let Some(rest) = dm_uuid.strip_prefix("LVM-") {
                return self
                    .vg_uuids
                    .iter()
                    .any(|v| !v.is_empty() && rest.starts_with(v.as_str()));
            }
            return self
                .luks_uuids
                .iter()
                .any(|u| luks::mapping_from_dm_uuid(&dm_uuid, u).is_some());
        }
        md_uuid(sys, kname).is_some_and(|u| {
            let key = md_key(&u);
            // 0.90 superblocks: mdadm prints each 32-bit word as a number,
            // the kernel its bytes in memory order.
            self.md_uuids.contains(&key) || self.md_uuids.contains(&swap_words(&key))
        })
    }
}

/// Why a disk cannot be written now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// `device` (the disk, a partition or a device stacked on them) is
    /// mounted.
    Mounted { device: String, mountpoint: String },
    /// `device` is active as swap.
    Swap { device: String },
    /// A device the plan does not create is stacked on the disk.
    HeldBy(Holder),
}

/// A device stacked on a disk, by kernel name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A device-mapper device (LVM, LUKS) with its name and dm uuid.
    DeviceMapper {
        kname: String,
        name: String,
        uuid: Option<String>,
    },
    /// An md array with its UUID.
    Md { kname: String, uuid: String },
    /// Something else the kernel lists as a holder.
    Other { kname: String },
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::Mounted { device, mountpoint } => {
                write!(f, "{device} is mounted on {mountpoint}")
            }
            Busy::Swap { device } => write!(f, "{device} is active as swap"),
            Busy::HeldBy(h) => write!(f, "it is held by {h}"),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::DeviceMapper { kname, name, uuid } => {
                write!(f, "device-mapper device {name} ({kname}")?;
                if let Some(u) = uuid {
                    write!(f, ", uuid {u}")?;
                }
                f.write_str(")")
            }
            Holder::Md { kname, uuid } => write!(f, "md array {kname} (UUID {uuid})"),
            Holder::Other { kname } => f.write_str(kname),
        }
    }
}

impl Holder {
    /// What the holder `kname` is, from sysfs (and mdadm).
    fn of(sys: &Path, kname: &str) -> Holder {
        let kname = kname.to_string();
        if let Some(name) = dm_name(sys, &kname) {
            let uuid = read_attr(sys, &kname, "dm/uuid");
            return Holder::DeviceMapper { kname, name, uuid };
        }
        match md_uuid(sys, &kname) {
            Some(uuid) => Holder::Md { kname, uuid },
            None => Holder::Other { kname },
        }
    }
}

/// Why `disk` cannot be written now; empty when it is free.
pub fn busy_reasons(
    sys: &Path,
    disk: &str,
    mounts: &[MountInfo],
    swaps: &[ActiveSwap],
    allowed: &Allowed,
) -> Result<Vec<Busy>> {
    let own = disk_and_partitions(sys, disk);
    let above = stacked(sys, &own);
    let mut all: BTreeSet<String> = own.iter().cloned().collect();
    all.extend(above.iter().cloned());
    let on_disk = |dev: &str| kernel_name(dev).is_some_and(|k| all.contains(&k));
    let mut reasons: Vec<Busy> = mounts
        .iter()
        .filter(|m| m.source.starts_with("/dev/") && on_disk(&m.source))
        .map(|m| Busy::Mounted {
            device: m.source.clone(),
            mountpoint: m.mountpoint.clone(),
        })
        .collect();
    reasons.extend(
        swaps
            .iter()
            .filter(|s| on_disk(&s.filename))
            .map(|s| Busy::Swap {
                device: s.filename.clone(),
            }),
    );
    reasons.extend(
        above
            .iter()
            .filter(|h| !allowed.allows(sys, h))
            .map(|h| Busy::HeldBy(Holder::of(sys, h))),
    );
    Ok(reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{LuksDevice, MdArray, VolumeGroup};

    const MD_UUID: &str = "11111111:22222222:33333333:44444444";
    const VG_UUID: &str = "LBvg01-0000-0000-0000-0000-0000-000001";
    const LUKS_UUID: &str = "22222222-0000-4000-8000-000000000002";

    /// vda2 holds md0 (sysfs UUID in dashes), md0 holds dm-0 (an LV of
    /// VG_UUID named vg0-root); vda3 holds dm-1, a LUKS mapping.
    fn tree() -> tempfile::TempDir {
        let sys = tempfile::tempdir().unwrap();
        let s = sys.path();
        let write = |p: &str, v: &str| {
            std::fs::create_dir_all(s.join(p).parent().unwrap()).unwrap();
            std::fs::write(s.join(p), v).unwrap();
        };
        for n in 1..=3 {
            write(&format!("block/vda/vda{n}/partition"), &n.to_string());
        }
        std::fs::create_dir_all(s.join("class/block/vda2/holders/md0")).unwrap();
        std::fs::create_dir_all(s.join("class/block/md0/holders/dm-0")).unwrap();
        std::fs::create_dir_all(s.join("class/block/vda3/holders/dm-1")).unwrap();
        write(
            "class/block/md0/md/uuid",
            "11111111-2222-2222-3333-333344444444\n",
        );
        write("class/block/dm-0/dm/name", "vg0-root\n");
        let lv = format!(
            "LVM-{}{}",
            VG_UUID.replace('-', ""),
            "LBlv01".repeat(5) + "xx"
        );
        write("class/block/dm-0/dm/uuid", &format!("{lv}\n"));
        write("class/block/dm-1/dm/name", "cryptroot\n");
        let crypt = "CRYPT-LUKS2-22222222000040008000000000000002-cryptroot";
        write("class/block/dm-1/dm/uuid", &format!("{crypt}\n"));
        sys
    }

    /// A plan creating md0, cryptroot and vg0 with the given UUIDs.
    fn plan(md: &str, vg: &str, luks: &str) -> Plan {
        let array: MdArray = serde_json::from_value(serde_json::json!({
            "device": "/dev/md0", "name": "host:0", "uuid": md, "level": "raid1",
            "metadata": "1.2", "raid_devices": 2, "chunk_size_bytes": null, "layout": null,
            "size_bytes": 1, "members": []
        }))
        .unwrap();
        let luks: LuksDevice = serde_json::from_value(serde_json::json!({
            "device": "/dev/vda3", "version": 2, "uuid": luks, "cipher": "aes-xts-plain64",
            "key_size_bits": 512, "hash": null, "pbkdf": null, "label": null, "subsystem": null,
            "data_offset_bytes": null, "sector_size": null, "mapping_name": "cryptroot",
            "mapped_device": null, "header_backup": null
        }))
        .unwrap();
        let vg: VolumeGroup = serde_json::from_value(serde_json::json!({
            "name": "vg0", "uuid": vg, "extent_size_bytes": 4194304, "size_bytes": 1,
            "free_bytes": 0, "metadata": ""
        }))
        .unwrap();
        Plan {
            hostname: "h".into(),
            layout_captured_at: String::new(),
            disks: vec![],
            sizes: vec![],
            renames: Default::default(),
            steps: vec![
                Step::CreateMd { array },
                Step::FormatLuks {
                    luks,
                    name: "cryptroot".into(),
                },
                Step::CreateVg {
                    vg,
                    pvs: vec![],
                    lvs: vec![],
                    internal_uuids: Default::default(),
                },
            ],
            floors: vec![],
            adjustments: vec![],
            warnings: vec![],
            errors: vec![],
        }
    }

    #[test]
    fn holders_are_followed_and_the_plans_devices_allowed_by_uuid() {
        let sys = tree();
        let s = sys.path();
        assert_eq!(disk_and_partitions(s, "/dev/vda").len(), 4);

        let none = Allowed::default();
        let r = busy_reasons(s, "/dev/vda", &[], &[], &none).unwrap();
        let lv = format!(
            "LVM-{}{}",
            VG_UUID.replace('-', ""),
            "LBlv01".repeat(5) + "xx"
        );
        let crypt = "CRYPT-LUKS2-22222222000040008000000000000002-cryptroot";
        let dm = |kname: &str, name: &str, uuid: &str| {
            Busy::HeldBy(Holder::DeviceMapper {
                kname: kname.into(),
                name: name.into(),
                uuid: Some(uuid.into()),
            })
        };
        assert_eq!(
            r,
            [
                dm("dm-0", "vg0-root", &lv),
                dm("dm-1", "cryptroot", crypt),
                Busy::HeldBy(Holder::Md {
                    kname: "md0".into(),
                    uuid: "11111111-2222-2222-3333-333344444444".into()
                }),
            ]
        );
        assert_eq!(
            r[0].to_string(),
            format!("it is held by device-mapper device vg0-root (dm-0, uuid {lv})")
        );
        assert_eq!(
            r[2].to_string(),
            "it is held by md array md0 (UUID 11111111-2222-2222-3333-333344444444)"
        );

        let ours = Allowed::of_plan(&plan(MD_UUID, VG_UUID, LUKS_UUID));
        let r = busy_reasons(s, "/dev/vda", &[], &[], &ours).unwrap();
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn mounts_and_swap_on_the_disk_or_above_it_are_named() {
        let sys = tree();
        let dev = tempfile::tempdir().unwrap();
        // Device paths whose last component is the kernel name.
        let path = |k: &str| {
            let p = dev.path().join(k);
            std::fs::write(&p, "").unwrap();
            p.display().to_string()
        };
        let mount = |source: String, mp: &str| MountInfo {
            id: 1,
            parent: 0,
            devnum: (0, 0),
            root: "/".into(),
            mountpoint: mp.into(),
            options: "rw".into(),
            fstype: "ext4".into(),
            source,
            fs_options: "rw".into(),
        };
        // A mount source must be below /dev: this one resolves to vda1.
        let boot = format!("/dev/..{}", path("vda1"));
        let mounts = [
            mount("/dev/elsewhere".into(), "/x"),
            mount(boot.clone(), "/boot"),
        ];
        let swaps = [ActiveSwap {
            filename: path("dm-0"),
            is_file: false,
            size_bytes: 1,
            priority: -2,
        }];
        let all = Allowed::of_plan(&plan(MD_UUID, VG_UUID, LUKS_UUID));
        let r = busy_reasons(sys.path(), "/dev/vda", &mounts, &swaps, &all).unwrap();
        assert_eq!(
            r,
            [
                Busy::Mounted {
                    device: boot.clone(),
                    mountpoint: "/boot".into()
                },
                Busy::Swap {
                    device: swaps[0].filename.clone()
                }
            ]
        );
        assert_eq!(r[0].to_string(), format!("{boot} is mounted on /boot"));
        assert_eq!(
            r[1].to_string(),
            format!("{} is active as swap", swaps[0].filename)
        );
    }

    #[test]
    fn md_uuid_words_in_either_byte_order() {
        assert_eq!(
            md_key("01020304:05060708:090a0b0c:0D0E0F10"),
            "0102030405060708090a0b0c0d0e0f10"
        );
        assert_eq!(
            swap_words("0102030405060708090a0b0c0d0e0f10"),
            "04030201080706050c0b0a09100f0e0d"
        );
    }

    #[test]
    fn holders_with_the_plans_names_but_other_uuids_are_refused() {
        let sys = tree();
        // Same names (md0, vg0, cryptroot), other arrays, VGs, containers.
        let other = Allowed::of_plan(&plan(
            "99999999:22222222:33333333:44444444",
            "LBvg02-0000-0000-0000-0000-0000-000001",
            "33333333-0000-4000-8000-000000000002",
        ));
        let r = busy_reasons(sys.path(), "/dev/vda", &[], &[], &other).unwrap();
        assert_eq!(r.len(), 3, "{r:?}");
        // Only the md array is ours: the dm devices still hold the disk.
        let md_only = Allowed::of_plan(&plan(MD_UUID, "x", "y"));
        let r = busy_reasons(sys.path(), "/dev/vda", &[], &[], &md_only).unwrap();
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(
            r.iter()
                .all(|x| matches!(x, Busy::HeldBy(Holder::DeviceMapper { .. }))),
            "{r:?}"
        );
    }
}
