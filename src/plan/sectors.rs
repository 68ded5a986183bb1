//! Sector sizes: a new disk whose logical sectors are larger than the old
//! one's (a 4K-native disk replacing a 512-byte one) cannot hold a file
//! system block, an XFS sector, a FAT sector or a LUKS2 encryption sector
//! smaller than its own sector. Those parameters are raised, each one said in
//! the plan; UUIDs and labels stay. Onto smaller sectors every parameter is
//! kept (a 4096-byte block is a whole number of 512-byte sectors).
//!
//! The effective sector size follows the stack: a partition has its disk's,
//! an md array the largest of its members', a LUKS mapping the larger of its
//! device's and its encryption sector, a logical volume the largest of its
//! volume group's PVs'.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use super::mapping::DiskPair;
use super::Step;
use crate::layout::{Filesystem, FsParams, LuksDevice, PartitionTable};

/// The largest block size Linux mounts for ext2/3/4 and btrfs on x86 (the
/// page size), and the largest XFS sector.
const PAGE: u32 = 4096;
const XFS_MAX_SECTOR: u32 = 32768;
const FAT_MAX_SECTOR: u32 = 4096;
/// Fewer clusters make a FAT16 (the FAT type is its cluster count).
const FAT32_MIN_CLUSTERS: u64 = 65525;

/// Raises what the new sector sizes require in `steps` (in dependency order,
/// as `build` makes them). Returns one line per change, for the plan.
pub fn adjust(disks: &[DiskPair], steps: &mut [Step]) -> Result<Vec<String>> {
    Ok(walk(disks, steps)?.0)
}

/// The logical sector size of every device the plan creates (new paths), as
/// the new disks give it.
pub fn device_sectors(plan: &super::Plan) -> Result<BTreeMap<String, u32>> {
    Ok(walk(&plan.disks, &mut plan.steps.clone())?.1)
}

type Sectors = BTreeMap<String, u32>;

fn walk(disks: &[DiskPair], steps: &mut [Step]) -> Result<(Vec<String>, Sectors)> {
    let mut sector: Sectors = BTreeMap::new();
    let mut notes = Vec::new();
    for d in disks {
        sector.insert(d.new.clone(), d.new_sector_size.max(512));
    }
    let of = |sector: &Sectors, dev: &str| sector.get(dev).copied().unwrap_or(512);
    for step in steps.iter_mut() {
        match step {
            Step::Partition {
                disk,
                old_disk,
                table,
            } => {
                let s = of(&sector, disk);
                let old = disks
                    .iter()
                    .find(|d| &d.new == disk)
                    .map_or(s, |d| d.old_sector_size.max(512));
                if old != s {
                    notes.push(format!(
                        "partitions of {old_disk} on {disk}: positions translated from {old}-byte \
                         to {s}-byte sectors, aligned to 1 MiB"
                    ));
                }
                for dev in partition_devices(table) {
                    sector.insert(dev, s);
                }
            }
            Step::CreateMd { array } => {
                let s = array
                    .members
                    .iter()
                    .map(|m| of(&sector, &m.device))
                    .max()
                    .unwrap_or(512);
                sector.insert(array.device.clone(), s);
            }
            Step::FormatLuks { luks, name } => {
                let outer = of(&sector, &luks.device);
                let (mapped, note) = raise_luks(luks, outer);
                notes.extend(note);
                sector.insert(format!("/dev/mapper/{name}"), mapped);
            }
            Step::CreateVg { vg, pvs, lvs, .. } => {
                let s = pvs
                    .iter()
                    .map(|p| of(&sector, &p.device))
                    .max()
                    .unwrap_or(512);
                let extent = u64::from(s);
                if vg.extent_size_bytes % extent != 0
                    || pvs.iter().any(|p| p.pe_start_bytes % extent != 0)
                {
                    bail!(
                        "volume group {}: its extents ({} bytes) or data offsets are not whole \
                         {s}-byte sectors of the new disks; recreate it by hand or map it onto \
                         disks with smaller sectors",
                        vg.name,
                        vg.extent_size_bytes
                    );
                }
                for lv in lvs.iter() {
                    sector.insert(lv.lv.device.clone(), s);
                }
            }
            Step::Mkfs { fs } => notes.extend(raise_fs(fs, of(&sector, &fs.device))?),
            _ => {}
        }
    }
    Ok((notes, sector))
}

fn partition_devices(table: &PartitionTable) -> Vec<String> {
    match table {
        PartitionTable::Gpt(g) => g.partitions.iter().map(|p| p.device.clone()).collect(),
        PartitionTable::Mbr(m) => m.partitions.iter().map(|p| p.device.clone()).collect(),
    }
}

fn because(sector: u32) -> String {
    format!("the new disk has {sector}-byte sectors")
}

/// A LUKS2 encryption sector smaller than the device's is raised. Returns
/// the sector size of the opened mapping and the plan's note.
pub fn raise_luks(luks: &mut LuksDevice, outer: u32) -> (u32, Option<String>) {
    let own = luks.sector_size.unwrap_or(512);
    if luks.version >= 2 && luks.sector_size.is_some() && own < outer {
        luks.sector_size = Some(outer);
        let note = format!(
            "LUKS2 on {}: sector size {own} -> {outer}, {}",
            luks.device,
            because(outer)
        );
        return (outer, Some(note));
    }
    (outer.max(luks.sector_size.unwrap_or(0)), None)
}

/// `ext4 /boot`: the file system in the plan's words.
fn fs_name(fs: &Filesystem) -> String {
    format!(
        "{} {}",
        fs.fstype,
        fs.mountpoints.first().unwrap_or(&fs.device)
    )
}

/// Raises the parameters of `fs` that may not be smaller than `sector`.
/// Returns the plan's notes; an error when a parameter cannot be raised.
pub fn raise_fs(fs: &mut Filesystem, sector: u32) -> Result<Vec<String>> {
    let name = fs_name(fs);
    let cannot = |what: &str, max: u32| {
        anyhow::anyhow!(
            "{name}: its {what} cannot be raised to the new disk's {sector}-byte sectors \
             (at most {max}); restore it onto a disk with smaller sectors"
        )
    };
    let mut notes = Vec::new();
    let mut raise = |what: &str, v: &mut u32| {
        if *v < sector {
            notes.push(format!(
                "{name}: {what} {} -> {sector}, {}",
                *v,
                because(sector)
            ));
            *v = sector;
        }
    };
    match &mut fs.params {
        FsParams::Ext { block_size, .. } => {
            if sector > PAGE {
                return Err(cannot("block size", PAGE));
            }
            raise("block size", block_size);
        }
        FsParams::Xfs {
            block_size,
            sector_size,
            ..
        } => {
            if sector > XFS_MAX_SECTOR {
                return Err(cannot("sector size", XFS_MAX_SECTOR));
            }
            raise("sector size and log sector size", sector_size);
            raise("block size", block_size);
        }
        FsParams::Vfat {
            sector_size,
            fat_size,
            ..
        } => {
            if sector > FAT_MAX_SECTOR {
                return Err(cannot("logical sector size", FAT_MAX_SECTOR));
            }
            let before = *sector_size;
            raise("logical sector size", sector_size);
            // The FAT type is its cluster count: with clusters of at least
            // one larger sector, a small FAT32 has too few and firmware
            // would read it as FAT16.
            let clusters = fs.size_bytes / u64::from(sector);
            if *sector_size != before && *fat_size == 32 && clusters < FAT32_MIN_CLUSTERS {
                notes.push(format!(
                    "{name}: FAT32 -> FAT16, at most {clusters} clusters of {sector} bytes are too few \
                     for FAT32"
                ));
                *fat_size = 16;
            }
        }
        FsParams::Btrfs { .. } if sector > PAGE => return Err(cannot("sector size", PAGE)),
        FsParams::Btrfs { .. } | FsParams::Other {} => {}
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(block: u32) -> Filesystem {
        Filesystem {
            device: "/dev/vdb2".into(),
            fstype: "ext4".into(),
            uuid: Some("boot-uuid".into()),
            label: Some("boot".into()),
            size_bytes: 256 << 20,
            used_bytes: None,
            mountpoints: vec!["/boot".into()],
            params: FsParams::Ext {
                block_size: block,
                inode_size: 128,
                features: vec!["has_journal".into()],
                reserved_blocks_percent: 5.0,
                inode_count: 65536,
            },
        }
    }

    #[test]
    fn ext_block_size_is_raised_and_said() {
        let mut fs = ext(1024);
        let notes = raise_fs(&mut fs, 4096).unwrap();
        assert_eq!(
            notes,
            ["ext4 /boot: block size 1024 -> 4096, the new disk has 4096-byte sectors"]
        );
        assert!(matches!(
            fs.params,
            FsParams::Ext {
                block_size: 4096,
                ..
            }
        ));
        assert_eq!(fs.uuid.as_deref(), Some("boot-uuid"));
        assert_eq!(fs.label.as_deref(), Some("boot"));
    }

    #[test]
    fn smaller_sectors_keep_every_parameter() {
        let mut fs = ext(4096);
        let before = fs.clone();
        assert!(raise_fs(&mut fs, 512).unwrap().is_empty());
        assert_eq!(fs, before);
        let mut fs = ext(1024);
        let before = fs.clone();
        assert!(raise_fs(&mut fs, 512).unwrap().is_empty());
        assert_eq!(fs, before);
    }

    #[test]
    fn xfs_sector_and_block_vfat_sector_raised() {
        let mut xfs = ext(4096);
        xfs.fstype = "xfs".into();
        xfs.mountpoints = vec!["/srv".into()];
        xfs.params = FsParams::Xfs {
            block_size: 1024,
            sector_size: 512,
            crc: true,
            reflink: true,
            ftype: true,
            log_size_bytes: None,
        };
        let notes = raise_fs(&mut xfs, 4096).unwrap();
        assert_eq!(
            notes,
            [
                "xfs /srv: sector size and log sector size 512 -> 4096, the new disk has 4096-byte sectors",
                "xfs /srv: block size 1024 -> 4096, the new disk has 4096-byte sectors"
            ]
        );
        let mut vfat = ext(4096);
        vfat.fstype = "vfat".into();
        vfat.mountpoints = vec!["/boot/efi".into()];
        vfat.params = FsParams::Vfat {
            serial: "ABCD1234".into(),
            fat_size: 32,
            sector_size: 512,
        };
        let notes = raise_fs(&mut vfat, 4096).unwrap();
        assert_eq!(notes, ["vfat /boot/efi: logical sector size 512 -> 4096, the new disk has 4096-byte sectors"]);
        assert!(matches!(
            vfat.params,
            FsParams::Vfat {
                sector_size: 4096,
                ..
            }
        ));
    }

    #[test]
    fn a_small_fat32_on_larger_sectors_becomes_fat16() {
        let mut esp = ext(4096);
        esp.fstype = "vfat".into();
        esp.size_bytes = 200 << 20;
        esp.mountpoints = vec!["/boot/efi".into()];
        esp.params = FsParams::Vfat {
            serial: "ABCD1234".into(),
            fat_size: 32,
            sector_size: 512,
        };
        let notes = raise_fs(&mut esp, 4096).unwrap();
        assert_eq!(
            notes[1],
            "vfat /boot/efi: FAT32 -> FAT16, at most 51200 clusters of 4096 bytes are too few for FAT32"
        );
        assert!(matches!(
            esp.params,
            FsParams::Vfat {
                fat_size: 16,
                sector_size: 4096,
                ..
            }
        ));
        // On 512-byte sectors the same FAT32 stays.
        let mut esp512 = esp.clone();
        esp512.params = FsParams::Vfat {
            serial: "ABCD1234".into(),
            fat_size: 32,
            sector_size: 512,
        };
        assert!(raise_fs(&mut esp512, 512).unwrap().is_empty());
    }

    #[test]
    fn a_parameter_that_cannot_be_raised_is_an_error_naming_it() {
        let mut fs = ext(1024);
        let err = raise_fs(&mut fs, 8192).unwrap_err().to_string();
        assert!(
            err.starts_with("ext4 /boot: its block size cannot be raised"),
            "{err}"
        );
    }

    #[test]
    fn luks2_sector_raised_luks1_kept() {
        let mut l = LuksDevice {
            device: "/dev/vdb3".into(),
            version: 2,
            uuid: "u".into(),
            cipher: "aes-xts-plain64".into(),
            key_size_bits: 512,
            hash: None,
            pbkdf: None,
            label: None,
            subsystem: None,
            data_offset_bytes: Some(16 << 20),
            sector_size: Some(512),
            mapping_name: None,
            mapped_device: None,
            header_backup: None,
        };
        let (mapped, note) = raise_luks(&mut l, 4096);
        assert_eq!(mapped, 4096);
        assert_eq!(l.sector_size, Some(4096));
        assert_eq!(
            note.as_deref(),
            Some("LUKS2 on /dev/vdb3: sector size 512 -> 4096, the new disk has 4096-byte sectors")
        );
        let mut l1 = LuksDevice {
            version: 1,
            sector_size: None,
            ..l.clone()
        };
        assert_eq!(raise_luks(&mut l1, 4096), (4096, None));
        assert_eq!(l1.sector_size, None);
        // The reverse: a 4096-byte LUKS2 sector onto a 512-byte disk stays.
        assert_eq!(raise_luks(&mut l, 512), (4096, None));
    }
}
