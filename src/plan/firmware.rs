//! Firmware migration: a BIOS-booting system recovered onto a UEFI-only
//! machine (and back). `--firmware uefi|bios|same`; by default the firmware
//! the rescue system booted under, when the source cannot boot under it.
//!
//! BIOS to UEFI: an MBR boot disk becomes GPT with the same partitions
//! (PARTUUIDs of the `SIGNATURE-NN` form rewritten to the new GUIDs), a new
//! EFI system partition is carved out (from free space at the end, else by
//! shrinking the largest resizable partition), made FAT32, mounted at
//! /boot/efi, added to fstab, and GRUB x86_64-efi is installed with an EFI
//! entry and the removable fallback loader. UEFI to BIOS: a BIOS boot
//! partition is added on a GPT boot disk and GRUB i386-pc is installed.
//! What the restored system must hold for that (GRUB's modules for the
//! platform) is checked in the backup before any write.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::fit::{align_up, MIB};
use super::partition_path;
use crate::layout::{Firmware, GptPartition, GptTable, GrubPlatform, Layout, MbrKind, MbrTable};
use crate::util::human_bytes;

/// Size of a new EFI system partition: FAT32 holds enough clusters on
/// 4096-byte sectors too.
pub const ESP_BYTES: u64 = 260 * MIB;
pub const BIOS_BOOT_BYTES: u64 = MIB;
pub const ESP_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
pub const BIOS_BOOT_GUID: &str = "21686148-6449-6e6f-744e-656564454649";

/// `--firmware`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareChoice {
    /// The firmware the rescue system booted under.
    #[default]
    Rescue,
    Same,
    Uefi,
    Bios,
}

impl std::str::FromStr for FirmwareChoice {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "uefi" => FirmwareChoice::Uefi,
            "bios" => FirmwareChoice::Bios,
            "same" => FirmwareChoice::Same,
            _ => bail!("bad --firmware {s:?}: expected uefi, bios or same"),
        })
    }
}

/// The firmware conversion a plan makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub to: Firmware,
    /// The old boot disk (layout path).
    pub disk: String,
    /// Why: `--firmware uefi`, or the rescue system's firmware.
    pub reason: String,
}

fn name(f: Firmware) -> &'static str {
    match f {
        Firmware::Uefi => "UEFI",
        Firmware::Bios => "BIOS",
    }
}

/// Whether the source boots under `f` as it is: under UEFI, an ESP with a
/// loader the layout knows of (an EFI boot entry, GRUB x86_64-efi, shim or
/// systemd-boot); an ESP alone may hold nothing that boots.
pub fn boots_under(layout: &Layout, f: Firmware) -> bool {
    let b = &layout.boot;
    match f {
        Firmware::Uefi => {
            !b.esps.is_empty()
                && (!b.efi_entries.is_empty()
                    || b.shim
                    || b.systemd_boot
                    || b.grub.iter().any(|g| g.platform == GrubPlatform::X86_64Efi))
        }
        Firmware::Bios => layout
            .boot
            .grub
            .iter()
            .any(|g| g.platform == GrubPlatform::I386Pc && !g.disks.is_empty()),
    }
}

/// The conversion `choice` asks for (`None`: the system boots as it is).
/// `boot_disk` is the layout disk the boot loader goes on.
pub fn decide(
    layout: &Layout,
    choice: FirmwareChoice,
    rescue_uefi: bool,
    boot_disk: Option<&str>,
) -> Result<Option<Migration>> {
    let rescue = if rescue_uefi {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    let (to, why) = match choice {
        FirmwareChoice::Same => return Ok(None),
        FirmwareChoice::Uefi => (Firmware::Uefi, "--firmware uefi".to_string()),
        FirmwareChoice::Bios => (Firmware::Bios, "--firmware bios".to_string()),
        FirmwareChoice::Rescue => (
            rescue,
            format!(
                "the rescue system booted under {}, the source under {}; --firmware same keeps it",
                name(rescue),
                name(layout.boot.firmware)
            ),
        ),
    };
    if boots_under(layout, to) {
        return Ok(None);
    }
    // By default only a system that boots (under the other firmware) is
    // converted: one without a boot loader stays without.
    let other = match to {
        Firmware::Uefi => Firmware::Bios,
        Firmware::Bios => Firmware::Uefi,
    };
    if choice == FirmwareChoice::Rescue && !boots_under(layout, other) {
        return Ok(None);
    }
    let Some(disk) = boot_disk else {
        bail!(
            "cannot convert the system to {} boot: none of its disks is recreated",
            name(to)
        );
    };
    Ok(Some(Migration {
        to,
        disk: disk.to_string(),
        reason: why,
    }))
}

/// A GUID derived from `seed` (the same plan gives the same GUIDs: the
/// plan is hashed and resumed).
pub fn derived_guid(seed: &str) -> String {
    let h = Sha256::digest(format!("lifeboat:{seed}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

/// GPT type of an MBR partition type.
fn gpt_type(type_byte: u8) -> &'static str {
    match type_byte {
        0x82 => "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",
        0x8e => "e6d6d379-f507-44c2-a23c-238f2a3df928",
        0xfd => "a19d880f-05fc-4d3b-a006-743f0f84911e",
        0xef => ESP_GUID,
        0x07 | 0x0b | 0x0c | 0x0e => "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7",
        _ => "0fc63daf-8483-4772-8e79-3d69d8477de4",
    }
}

/// The MBR's partitions (logical ones included, the extended one left out)
/// as a GPT on a disk of `size` bytes. Returns the table and the PARTUUID
/// rewrites (`PARTUUID=1a2b3c4d-01` -> `PARTUUID=<new GUID>`).
pub fn mbr_to_gpt(mbr: &MbrTable, size: u64, sector: u64) -> (GptTable, Vec<(String, String)>) {
    let seed = format!("{:08x}", mbr.disk_signature);
    let total = size / sector;
    let entries = (128 * 128u64).div_ceil(sector);
    let mut renames = Vec::new();
    let partitions: Vec<GptPartition> = mbr
        .partitions
        .iter()
        .filter(|p| p.kind != MbrKind::Extended)
        .map(|p| {
            let guid = derived_guid(&format!("{seed}-{:02x}", p.number));
            renames.push((
                format!("PARTUUID={seed}-{:02x}", p.number),
                format!("PARTUUID={guid}"),
            ));
            GptPartition {
                number: p.number,
                device: p.device.clone(),
                first_lba: p.first_lba,
                last_lba: p.first_lba + p.sectors - 1,
                size_bytes: p.size_bytes,
                type_guid: gpt_type(p.type_byte).into(),
                unique_guid: guid,
                name: String::new(),
                attributes: if p.bootable { 1 << 2 } else { 0 },
            }
        })
        .collect();
    let last_part = partitions.iter().map(|p| p.last_lba).max().unwrap_or(0);
    let table = GptTable {
        disk_guid: derived_guid(&format!("disk-{seed}")),
        first_usable_lba: 2 + entries,
        last_usable_lba: (total - 2 - entries).max(last_part),
        partition_entry_lba: 2,
        num_partition_entries: 128,
        partition_entry_size: 128,
        problems: Vec::new(),
        partitions,
    };
    (table, renames)
}

/// What may give room to a new partition: its number, least size, and
/// whether it keeps its size.
pub struct Room {
    pub number: u32,
    pub min: u64,
    pub fixed: bool,
}

/// Adds a partition of `bytes` to `t` (on a disk with `sector`-byte
/// sectors and device path `disk`): in free space at the end, else by
/// shrinking the largest partition that may shrink by that much (moving the
/// ones after it). Returns the new partition and, when one shrank, its
/// number and new size.
pub fn carve(
    t: &mut GptTable,
    disk: &str,
    sector: u64,
    bytes: u64,
    type_guid: &str,
    label: &str,
    room: &[Room],
) -> Result<(GptPartition, Option<(u32, u64)>)> {
    let need = align_up(bytes, MIB);
    let usable_end = (t.last_usable_lba + 1) * sector;
    let end_of = |t: &GptTable| {
        t.partitions
            .iter()
            .map(|p| (p.last_lba + 1) * sector)
            .max()
            .unwrap_or(t.first_usable_lba * sector)
    };
    let mut shrunk = None;
    if align_up(end_of(t), MIB) + need > usable_end {
        let victim = t
            .partitions
            .iter()
            .filter(|p| {
                room.iter()
                    .any(|r| r.number == p.number && !r.fixed && p.size_bytes >= r.min + need)
            })
            .max_by_key(|p| p.size_bytes)
            .map(|p| (p.number, p.first_lba));
        let Some((number, first)) = victim else {
            bail!(
                "no room on {disk} for a new {} partition of {}: no free space at the end and no \
                 partition can give it up; use a larger disk or --firmware same",
                label,
                human_bytes(need)
            );
        };
        let delta = need / sector;
        for p in t.partitions.iter_mut() {
            if p.number == number {
                p.last_lba -= delta;
                p.size_bytes -= need;
                shrunk = Some((number, p.size_bytes));
            } else if p.first_lba > first {
                p.first_lba -= delta;
                p.last_lba -= delta;
            }
        }
    }
    let start = align_up(end_of(t), MIB);
    let number = (1..)
        .find(|n| !t.partitions.iter().any(|p| p.number == *n))
        .unwrap_or(1);
    let p = GptPartition {
        number,
        device: partition_path(disk, number),
        first_lba: start / sector,
        last_lba: (start + need) / sector - 1,
        size_bytes: need,
        type_guid: type_guid.into(),
        unique_guid: derived_guid(&format!("{}-{label}", t.disk_guid)),
        name: label.into(),
        attributes: 0,
    };
    t.partitions.push(p.clone());
    t.partitions.sort_by_key(|p| p.number);
    Ok((p, shrunk))
}

/// The volume serial of the new ESP (`XXXX-XXXX`), derived like its GUIDs.
pub fn esp_serial(esp_guid: &str) -> String {
    let g = esp_guid.replace('-', "").to_ascii_uppercase();
    format!("{}-{}", &g[..4], &g[4..8])
}

/// Where the conversion lands in the plan being built.
#[derive(Debug, Default)]
pub(super) struct Landing {
    pub migration: Option<Migration>,
    /// The new ESP (new device path, GUID, size).
    pub esp: Option<GptPartition>,
    pub esp_sector: u32,
    /// The disk that gets GRUB i386-pc (new path).
    pub bios_disk: Option<String>,
    /// A disk whose MBR became GPT (new path): no BIOS boot partition, so
    /// GRUB i386-pc has nowhere to embed its core image there.
    pub mbr_converted: Option<String>,
    pub notes: Vec<String>,
}

impl super::Builder<'_> {
    /// The old table of `pair`'s disk as the migration wants it: an MBR
    /// becomes GPT for UEFI (its PARTUUIDs renamed).
    pub(super) fn table_for(
        &mut self,
        pair: &super::DiskPair,
        table: &crate::layout::PartitionTable,
    ) -> crate::layout::PartitionTable {
        use crate::layout::PartitionTable;
        match (&self.landing.migration, table) {
            (Some(m), PartitionTable::Mbr(mbr)) if m.disk == pair.old && m.to == Firmware::Uefi => {
                let sector = u64::from(pair.old_sector_size.max(512));
                let (gpt, renames) = mbr_to_gpt(mbr, pair.old_size_bytes, sector);
                self.renames.extend(renames);
                self.landing.notes.push(format!(
                    "MBR of {} converted to GPT with the same partitions (PARTUUIDs rewritten); \
                     GRUB i386-pc is not installed on {} (no BIOS boot partition)",
                    pair.old, pair.new
                ));
                self.landing.mbr_converted = Some(pair.new.clone());
                PartitionTable::Gpt(gpt)
            }
            _ => table.clone(),
        }
    }

    /// Adds the boot partition the migration needs on `pair`'s new table.
    pub(super) fn land(
        &mut self,
        pair: &super::DiskPair,
        table: &mut crate::layout::PartitionTable,
    ) -> Result<()> {
        use crate::layout::PartitionTable;
        let Some(m) = self
            .landing
            .migration
            .clone()
            .filter(|m| m.disk == pair.old)
        else {
            return Ok(());
        };
        let sector = u64::from(pair.new_sector_size.max(512));
        let (bytes, type_guid, label) = match (m.to, &*table) {
            (Firmware::Bios, PartitionTable::Mbr(_)) => {
                self.landing.bios_disk = Some(pair.new.clone());
                return Ok(());
            }
            (Firmware::Bios, PartitionTable::Gpt(g)) => {
                self.landing.bios_disk = Some(pair.new.clone());
                if g.partitions.iter().any(|p| p.type_guid == BIOS_BOOT_GUID) {
                    return Ok(());
                }
                (BIOS_BOOT_BYTES, BIOS_BOOT_GUID, "BIOS boot")
            }
            (Firmware::Uefi, _) => (ESP_BYTES, ESP_GUID, "EFI system"),
        };
        let PartitionTable::Gpt(g) = table else {
            bail!("{}: a {label} partition needs GPT", pair.new);
        };
        let back: std::collections::BTreeMap<String, String> = self
            .renames
            .iter()
            .map(|(o, n)| (n.clone(), o.clone()))
            .collect();
        let room: Vec<Room> = g
            .partitions
            .iter()
            .map(|p| {
                let old = back.get(&p.device).cloned().unwrap_or_default();
                let (min, fixed) = self.stack.device_min(&old, p.size_bytes);
                let fixed = fixed
                    || p.type_guid == ESP_GUID
                    || p.type_guid == BIOS_BOOT_GUID
                    || self.is_boot_fs(&old);
                Room {
                    number: p.number,
                    min,
                    fixed,
                }
            })
            .collect();
        let (part, shrunk) = carve(g, &pair.new, sector, bytes, type_guid, label, &room)?;
        if let Some((number, size)) = shrunk {
            let dev = partition_path(&pair.new, number);
            if let Some(old) = back.get(&dev) {
                let before = self.sizes.get(old).copied().unwrap_or(size + bytes);
                self.sizes.insert(old.clone(), size);
                self.note_size(
                    format!("partition {old}"),
                    before,
                    size,
                    &format!(
                        "gives {} to the new {label} partition",
                        human_bytes(part.size_bytes)
                    ),
                );
            }
        }
        self.landing.notes.push(format!(
            "new {label} partition {} ({}) on {}",
            part.device,
            human_bytes(part.size_bytes),
            pair.new
        ));
        if m.to == Firmware::Uefi {
            self.landing.esp = Some(part);
            self.landing.esp_sector = pair.new_sector_size.max(512);
        }
        Ok(())
    }
}

/// The new ESP's file system: FAT32, label `EFI`, serial from its GUID.
pub fn esp_filesystem(esp: &GptPartition, sector: u32) -> crate::layout::Filesystem {
    let serial = esp_serial(&esp.unique_guid);
    crate::layout::Filesystem {
        device: esp.device.clone(),
        fstype: "vfat".into(),
        uuid: Some(serial.clone()),
        label: Some("EFI".into()),
        size_bytes: esp.size_bytes,
        used_bytes: None,
        mountpoints: vec!["/boot/efi".into()],
        params: crate::layout::FsParams::Vfat {
            serial: serial.replace('-', ""),
            fat_size: 32,
            sector_size: sector,
        },
    }
}

/// GRUB's platform for `f`, its module folder and the Debian package.
fn grub_platform(f: Firmware) -> (&'static str, &'static str) {
    match f {
        Firmware::Uefi => ("x86_64-efi", "grub-efi-amd64-bin"),
        Firmware::Bios => ("i386-pc", "grub-pc-bin"),
    }
}

/// The migration step; an error, before any write, when the backup lacks
/// GRUB for the new platform.
pub(super) fn migrate_step(
    layout: &Layout,
    landing: &Landing,
    backup_grub: Option<&[String]>,
) -> Result<Option<super::Step>> {
    let Some(m) = &landing.migration else {
        return Ok(None);
    };
    let (platform, package) = grub_platform(m.to);
    if backup_grub.is_some_and(|have| !have.iter().any(|p| p == platform)) {
        bail!(
            "converting {} to {} boot needs GRUB for {platform} in the restored system \
             (/usr/lib/grub/{platform}, Debian package {package}), and the backup does not hold \
             it: install {package} on the source and back up again, or recover with --firmware same",
            if layout.host.hostname.is_empty() {
                "the system"
            } else {
                layout.host.hostname.as_str()
            },
            name(m.to)
        );
    }
    Ok(Some(super::Step::Migrate {
        to: m.to,
        fstab: landing.esp.as_ref().map(|e| {
            format!(
                "UUID={} /boot/efi vfat umask=0077 0 1",
                esp_serial(&e.unique_guid)
            )
        }),
        grub_dir: format!("usr/lib/grub/{platform}"),
        package: package.into(),
    }))
}

/// Adds what the migration installs to the boot loader step: the BIOS disk,
/// or the new ESP with an EFI entry for GRUB (and no GRUB i386-pc on a disk
/// whose MBR became GPT). Returns whether GRUB
/// x86_64-efi is to be installed.
pub(super) fn add_boot(
    layout: &Layout,
    landing: &Landing,
    bios_disks: &mut Vec<String>,
    esps: &mut Vec<String>,
    entries: &mut Vec<crate::layout::EfiBootEntry>,
) -> bool {
    if let Some(d) = &landing.bios_disk {
        if !bios_disks.contains(d) {
            bios_disks.push(d.clone());
        }
    }
    bios_disks.retain(|d| landing.mbr_converted.as_ref() != Some(d));
    let Some(esp) = &landing.esp else {
        return false;
    };
    esps.push(esp.device.clone());
    let id = efi_id(layout);
    entries.push(crate::layout::EfiBootEntry {
        number: String::new(),
        label: id.clone(),
        active: true,
        partition_guid: Some(esp.unique_guid.clone()),
        loader: Some(format!("\\EFI\\{id}\\grubx64.efi")),
        device_path: String::new(),
    });
    true
}

/// GRUB's `--bootloader-id`: the distribution's ID (`debian`).
pub fn efi_id(layout: &Layout) -> String {
    layout
        .host
        .os_id
        .clone()
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or_else(|| "debian".into())
}

/// The plan's lines about the conversion.
pub(super) fn describe(landing: &Landing) -> Vec<String> {
    let Some(m) = &landing.migration else {
        return Vec::new();
    };
    let (platform, _) = grub_platform(m.to);
    let mut out = vec![format!(
        "firmware: converted to {} boot ({}): GRUB {platform}{}",
        name(m.to),
        m.reason,
        if m.to == Firmware::Uefi {
            " with an EFI boot entry and the fallback loader EFI/BOOT/BOOTX64.EFI"
        } else {
            ""
        }
    )];
    out.extend(landing.notes.iter().map(|n| format!("firmware: {n}")));
    out
}
