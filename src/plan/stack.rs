//! The storage stack of a layout: what sits on each device, and how much
//! space each device needs at least (its data plus headroom).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::layout::{
    Filesystem, FsType, Layout, LogicalVolume, LuksDevice, MdArray, PhysicalVolume, SegType, Swap,
};

use super::fit::{align_up, MIB};

/// What a block device holds.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    Fs(&'a Filesystem),
    Swap(&'a Swap),
    Pv(&'a PhysicalVolume),
    Luks(&'a LuksDevice),
    MdMember(&'a MdArray),
    Nothing,
}

/// Lookups over one layout.
pub struct Stack<'a> {
    pub layout: &'a Layout,
    /// Used bytes per file system (by UUID, else device), from the backup
    /// manifest when there is one, else from the layout.
    pub used: BTreeMap<String, u64>,
}

/// GPT type GUIDs and MBR type bytes of partitions that keep their size.
pub const BIOS_BOOT_GUID: &str = "21686148-6449-6e6f-744e-656564454649";
pub const ESP_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
pub const MBR_ESP: u8 = 0xef;

/// Smallest swap area recovery makes when it must shrink one.
const MIN_SWAP: u64 = 64 * MIB;

/// The least room a file system gets above its used bytes.
pub const MIN_HEADROOM: u64 = 64 * MIB;

/// The least size of one file system, as the plan shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsFloor {
    pub device: String,
    pub mountpoint: Option<String>,
    pub fstype: FsType,
    pub used_bytes: u64,
    /// 10% of the used bytes, at least [`MIN_HEADROOM`].
    pub headroom_bytes: u64,
    /// used + headroom, aligned to 1 MiB, at least what mkfs accepts, at
    /// most the old size.
    pub least_bytes: u64,
    /// The size the plan gives it (none when it is not recreated).
    pub new_bytes: Option<u64>,
}

impl<'a> Stack<'a> {
    pub fn new(layout: &'a Layout, manifest_used: &BTreeMap<String, u64>) -> Stack<'a> {
        let mut used = BTreeMap::new();
        for fs in &layout.filesystems {
            let key = fs_key(fs);
            if let Some(u) = manifest_used.get(&key).or(fs.used_bytes.as_ref()) {
                used.insert(key, *u);
            }
        }
        Stack { layout, used }
    }

    pub fn content(&self, dev: &str) -> Content<'a> {
        let l = self.layout;
        if let Some(md) = l
            .md_arrays
            .iter()
            .find(|m| m.members.iter().any(|x| x.device == dev))
        {
            return Content::MdMember(md);
        }
        if let Some(x) = l.luks.iter().find(|x| x.device == dev) {
            return Content::Luks(x);
        }
        if let Some(pv) = l.lvm.pvs.iter().find(|p| p.device == dev) {
            return Content::Pv(pv);
        }
        if let Some(s) = l.swaps.iter().find(|s| !s.is_file && s.device == dev) {
            return Content::Swap(s);
        }
        if let Some(fs) = l
            .filesystems
            .iter()
            .find(|f| f.device == dev || btrfs_devices(f).contains(&dev))
        {
            return Content::Fs(fs);
        }
        Content::Nothing
    }

    /// The device a LUKS container opens as.
    pub fn luks_mapped(&self, luks: &LuksDevice) -> String {
        luks.mapped_device.clone().unwrap_or_else(|| {
            format!(
                "/dev/mapper/{}",
                luks.mapping_name
                    .clone()
                    .unwrap_or_else(|| format!("luks-{}", luks.uuid))
            )
        })
    }

    pub fn lvs_of(&self, vg: &str) -> Vec<&'a LogicalVolume> {
        self.layout
            .lvm
            .lvs
            .iter()
            .filter(|lv| lv.vg == vg)
            .collect()
    }

    pub fn pvs_of(&self, vg: &str) -> Vec<&'a PhysicalVolume> {
        self.layout
            .lvm
            .pvs
            .iter()
            .filter(|p| p.vg.as_deref() == Some(vg))
            .collect()
    }

    /// The least size of a file system that holds its data, or `None` when
    /// its usage is unknown (it then keeps its size).
    pub fn fs_min(&self, fs: &Filesystem) -> Option<u64> {
        self.fs_floor(fs).map(|f| f.least_bytes)
    }

    /// How the least size of a file system comes about: its used bytes (from
    /// the backup manifest, else the layout) plus 10% of them, and at least 64 MiB, as room
    /// for the new file system's own metadata (journal, inode tables, log)
    /// and what allocates differently on restore; never below the least size
    /// mkfs accepts for its type, never above its old size (it keeps that).
    pub fn fs_floor(&self, fs: &Filesystem) -> Option<FsFloor> {
        let used = *self.used.get(&fs_key(fs))?;
        let headroom = (used / 10).max(MIN_HEADROOM);
        let mkfs_min = match fs.fstype {
            FsType::Xfs => 16 * MIB,
            FsType::Btrfs => 128 * MIB,
            _ => 8 * MIB,
        };
        let least = align_up((used + headroom).max(mkfs_min), MIB).min(fs.size_bytes.max(mkfs_min));
        Some(FsFloor {
            device: fs.device.clone(),
            mountpoint: fs.mountpoints.first().cloned(),
            fstype: fs.fstype.clone(),
            used_bytes: used,
            headroom_bytes: headroom,
            least_bytes: least,
            new_bytes: None,
        })
    }

    /// The least size `dev` (whose old size is `old`) can have, and whether
    /// it must keep its size exactly (content unknown or not resizable).
    pub fn device_min(&self, dev: &str, old: u64) -> (u64, bool) {
        match self.content(dev) {
            Content::Fs(fs) => match self.fs_min(fs) {
                Some(m) if fs.fstype != FsType::Vfat || m <= old => (m, false),
                _ => (old, true),
            },
            Content::Swap(_) => (MIN_SWAP.min(old), false),
            Content::Luks(l) => {
                let inner = self.luks_mapped(l);
                let overhead = l.data_offset_bytes.unwrap_or(16 * MIB);
                let (m, fixed) = self.device_min(&inner, old.saturating_sub(overhead));
                (m + overhead, fixed)
            }
            Content::Pv(pv) => match &pv.vg {
                Some(vg) => self.pv_min(vg, pv, old),
                None => (old, true),
            },
            Content::MdMember(md) => {
                let data = data_disks(md);
                let overhead = old.saturating_sub(md.size_bytes / data.max(1));
                let (m, fixed) = self.device_min(&md.device, md.size_bytes);
                (m / data.max(1) + overhead, fixed)
            }
            Content::Nothing => (old, true),
        }
    }

    /// A PV's share of its VG's minimum.
    fn pv_min(&self, vg: &str, pv: &PhysicalVolume, old: u64) -> (u64, bool) {
        let lvs = self.lvs_of(vg);
        let mut need = 0u64;
        let mut fixed = false;
        for lv in &lvs {
            if lv.is_hidden() || is_thin(lv) {
                continue;
            }
            let copies = lv_copies(lv);
            let (m, f) = if is_thin_pool(lv) {
                (self.thin_pool_min(vg, lv), false)
            } else {
                self.device_min(&lv.device, lv.size_bytes)
            };
            fixed |= f && !resizable_segments(lv);
            need += m * copies;
        }
        // Metadata and spare LVs keep their size.
        need += lvs
            .iter()
            .filter(|lv| {
                lv.is_hidden() && (lv.name.contains("meta") || lv.name.contains("pmspare"))
            })
            .map(|lv| lv.size_bytes)
            .sum::<u64>();
        let vg_size: u64 = self
            .pvs_of(vg)
            .iter()
            .map(|p| p.size_bytes)
            .sum::<u64>()
            .max(1);
        let share = (need as u128 * pv.size_bytes as u128 / vg_size as u128) as u64;
        (
            align_up(share + pv.pe_start_bytes + MIB, MIB).min(old),
            fixed,
        )
    }

    /// A thin pool's minimum: the data of its thin volumes, plus 64 MiB.
    pub fn thin_pool_min(&self, vg: &str, pool: &LogicalVolume) -> u64 {
        let used: u64 = self
            .lvs_of(vg)
            .iter()
            .filter(|lv| is_thin(lv) && lv.pool.as_deref() == Some(pool.name.as_str()))
            .map(|lv| self.device_min(&lv.device, lv.size_bytes).0)
            .sum();
        align_up(used + 64 * MIB, MIB).min(pool.size_bytes)
    }
}

/// The key of a file system in used-bytes maps: its UUID, else its device.
pub fn fs_key(fs: &Filesystem) -> String {
    fs.uuid.clone().unwrap_or_else(|| fs.device.clone())
}

fn btrfs_devices(fs: &Filesystem) -> Vec<&str> {
    match &fs.params {
        crate::layout::FsParams::Btrfs { devices, .. } => {
            devices.iter().map(String::as_str).collect()
        }
        _ => Vec::new(),
    }
}

/// Members that carry data (not parity or mirror copies).
pub fn data_disks(md: &MdArray) -> u64 {
    let n = md.raid_devices as u64;
    match md.level.as_str() {
        "raid1" => 1,
        "raid4" | "raid5" => n.saturating_sub(1),
        "raid6" => n.saturating_sub(2),
        "raid10" => (n / 2).max(1),
        _ => n,
    }
}

pub fn is_thin(lv: &LogicalVolume) -> bool {
    lv.segments.iter().any(|s| s.segtype == SegType::Thin)
}

pub fn is_thin_pool(lv: &LogicalVolume) -> bool {
    lv.segments.iter().any(|s| s.segtype == SegType::ThinPool)
}

/// How many copies of its data an LV stores (raid1/mirror images).
pub fn lv_copies(lv: &LogicalVolume) -> u64 {
    lv.segments
        .iter()
        .filter(|s| matches!(s.segtype, SegType::Raid1 | SegType::Mirror))
        .map(|s| s.devices.len().max(2) as u64)
        .max()
        .unwrap_or(1)
}

/// Whether lifeboat can create this LV at another size.
pub fn resizable_segments(lv: &LogicalVolume) -> bool {
    lv.segments.iter().all(|s| {
        use SegType::*;
        matches!(
            s.segtype,
            Linear | Striped | Raid1 | Mirror | ThinPool | Thin
        )
    })
}
