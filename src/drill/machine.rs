//! The scratch machine of a drill: one sparse image file per disk the
//! layout needs, shaped like the original (bus, serial, WWN, sector sizes,
//! size unless `--disk-size` says otherwise), the firmwares to boot it under,
//! and the free-space check of the work folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::layout::{Disk, Firmware, Layout};
use crate::util::human_bytes;

/// The disk buses QEMU can present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bus {
    Virtio,
    Scsi,
    Nvme,
    Sata,
}

impl Bus {
    /// The bus of a disk of the layout, and a note when QEMU cannot present
    /// the original one (USB, MMC, Xen, Hyper-V disks become SCSI or virtio).
    pub fn of(disk: &Disk) -> (Bus, Option<String>) {
        let t = disk.transport.as_deref().unwrap_or("");
        match t {
            "virtio" => (Bus::Virtio, None),
            "scsi" => (Bus::Scsi, None),
            "nvme" => (Bus::Nvme, None),
            "sata" => (Bus::Sata, None),
            _ => {
                let guess = if disk.name.starts_with("nvme") {
                    Bus::Nvme
                } else if disk.name.starts_with("sd") {
                    Bus::Scsi
                } else {
                    Bus::Virtio
                };
                let was = if t.is_empty() { "unknown" } else { t };
                let note = format!(
                    "{}: bus {was} cannot be presented by QEMU; the drill uses {}",
                    disk.path,
                    guess.name()
                );
                (guess, Some(note))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bus::Virtio => "virtio",
            Bus::Scsi => "scsi",
            Bus::Nvme => "nvme",
            Bus::Sata => "sata",
        }
    }
}

/// One disk of the scratch machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScratchDisk {
    /// The disk of the layout it stands for (`/dev/vda`).
    pub source: String,
    /// The sparse image file under the work folder.
    pub image: PathBuf,
    pub bus: Bus,
    /// The original serial, when QEMU can present it on this bus.
    pub serial: Option<String>,
    /// The original WWN, when it is a 64-bit NAA name QEMU can present.
    pub wwn: Option<u64>,
    pub size_bytes: u64,
    pub original_size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// What differs from the original disk, in words.
    pub notes: Vec<String>,
}

/// Longest serial QEMU presents on each bus (virtio-blk, NVMe and ATA
/// carry 20 bytes; SCSI VPD page 0x80 more).
fn max_serial(bus: Bus) -> usize {
    match bus {
        Bus::Scsi => 36,
        _ => 20,
    }
}

/// The serial as QEMU can present it: printable ASCII without spaces that
/// fits the bus.
fn presentable_serial(serial: &str, bus: Bus) -> Result<String, String> {
    if serial.is_empty() || serial.len() > max_serial(bus) {
        return Err(format!(
            "serial {serial:?} is longer than the {} bytes QEMU presents on {}",
            max_serial(bus),
            bus.name()
        ));
    }
    if !serial.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "serial {serial:?} has characters QEMU cannot present"
        ));
    }
    Ok(serial.to_string())
}

/// A WWN as QEMU's `wwn=` property takes it: 64-bit NAA names written
/// `naa.5000c500a1b2c3d4` or `0x5000c500a1b2c3d4`.
pub fn parse_wwn(wwn: &str) -> Option<u64> {
    let hex = wwn
        .strip_prefix("naa.")
        .or_else(|| wwn.strip_prefix("0x"))
        .unwrap_or(wwn);
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// A `--disk-size DISK=SIZE` request: DISK is the layout's path, kernel
/// name or serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeRequest {
    pub disk: String,
    pub bytes: u64,
}

impl SizeRequest {
    pub fn parse(text: &str) -> Result<SizeRequest> {
        let (disk, size) = text
            .split_once('=')
            .with_context(|| format!("--disk-size {text:?}: write DISK=SIZE, e.g. vda=20G"))?;
        let bytes = crate::util::parse_size(size)
            .with_context(|| format!("--disk-size {text:?}: bad size {size:?}"))?;
        if disk.is_empty() || bytes < (64 << 20) {
            bail!("--disk-size {text:?}: name a disk and a size of at least 64M");
        }
        Ok(SizeRequest {
            disk: disk.to_string(),
            bytes,
        })
    }

    fn matches(&self, d: &Disk) -> bool {
        let want = self.disk.as_str();
        want == d.path || want == d.name || d.serial.as_deref() == Some(want)
    }
}

/// The disks of the scratch machine, one per needed disk of the layout,
/// as images `diskN-NAME.img` in `work`.
pub fn scratch_disks(
    layout: &Layout,
    work: &Path,
    sizes: &[SizeRequest],
) -> Result<Vec<ScratchDisk>> {
    let needed: Vec<&Disk> = layout.disks.iter().filter(|d| d.needed).collect();
    if needed.is_empty() {
        bail!("the layout needs no disk: nothing to drill (check the layout's `needed` disks)");
    }
    for r in sizes {
        if !needed.iter().any(|d| r.matches(d)) {
            let names: Vec<&str> = needed.iter().map(|d| d.path.as_str()).collect();
            bail!(
                "--disk-size {}: no disk of the layout is called so; the disks are {}",
                r.disk,
                names.join(", ")
            );
        }
    }
    let mut out = Vec::new();
    for (i, d) in needed.iter().enumerate() {
        crate::names::component("disk name", &d.name)?;
        let (bus, bus_note) = Bus::of(d);
        let mut notes: Vec<String> = bus_note.into_iter().collect();
        let serial = match d.serial.as_deref().map(|s| presentable_serial(s, bus)) {
            Some(Ok(s)) => Some(s),
            Some(Err(why)) => {
                notes.push(format!("{}: {why}", d.path));
                None
            }
            None => None,
        };
        let wwn = match (d.wwn.as_deref(), bus) {
            (None, _) => None,
            (Some(w), Bus::Scsi | Bus::Sata) => {
                let parsed = parse_wwn(w);
                if parsed.is_none() {
                    notes.push(format!(
                        "{}: WWN {w} is not a 64-bit NAA name QEMU can present",
                        d.path
                    ));
                }
                parsed
            }
            (Some(w), _) => {
                notes.push(format!(
                    "{}: QEMU presents no WWN on {}; {w} is left out",
                    d.path,
                    bus.name()
                ));
                None
            }
        };
        let size = match sizes.iter().rev().find(|r| r.matches(d)) {
            Some(r) => {
                notes.push(format!(
                    "{}: {} instead of {} (--disk-size)",
                    d.path,
                    human_bytes(r.bytes),
                    human_bytes(d.size_bytes)
                ));
                r.bytes
            }
            None => d.size_bytes,
        };
        let sector = u64::from(d.logical_sector_size.max(512));
        out.push(ScratchDisk {
            source: d.path.clone(),
            image: work.join(format!("disk{i}-{}.img", d.name)),
            bus,
            serial,
            wwn,
            size_bytes: size / sector * sector,
            original_size_bytes: d.size_bytes,
            logical_sector_size: d.logical_sector_size.max(512),
            physical_sector_size: d.physical_sector_size.max(d.logical_sector_size).max(512),
            notes,
        });
    }
    Ok(out)
}

/// Creates the sparse image files (new files only: a file already there
/// means another drill uses the folder).
pub fn create_images(disks: &[ScratchDisk]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    for d in disks {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&d.image)
            .with_context(|| format!("creating the scratch disk {}", d.image.display()))?;
        f.set_len(d.size_bytes)
            .with_context(|| format!("sizing the scratch disk {}", d.image.display()))?;
    }
    Ok(())
}

/// The firmwares the source system can boot under: the one it ran under,
/// and the other one when its boot loader is installed for it too (GRUB
/// for i386-pc, an EFI loader on an ESP).
pub fn source_firmwares(layout: &Layout) -> Vec<Firmware> {
    let b = &layout.boot;
    let grub = |p: &str| b.grub.iter().any(|g| g.platform == p);
    let bios = layout.host.firmware == Firmware::Bios || grub("i386-pc");
    let uefi = layout.host.firmware == Firmware::Uefi
        || grub("x86_64-efi")
        || b.systemd_boot
        || (!b.esps.is_empty() && !b.efi_entries.is_empty());
    let mut out = Vec::new();
    if bios {
        out.push(Firmware::Bios);
    }
    if uefi {
        out.push(Firmware::Uefi);
    }
    out
}

/// `--firmware`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareChoice {
    /// The firmware the source ran under.
    Auto,
    Bios,
    Uefi,
    /// Both, one after the other (a source that can boot under both).
    Both,
}

pub fn firmware_name(f: Firmware) -> &'static str {
    match f {
        Firmware::Bios => "bios",
        Firmware::Uefi => "uefi",
    }
}

/// The firmwares the rescue image boots under, one recovery each.
pub fn rescue_firmwares(choice: FirmwareChoice, layout: &Layout) -> Result<Vec<Firmware>> {
    let can = source_firmwares(layout);
    let want = match choice {
        FirmwareChoice::Auto => return Ok(vec![layout.host.firmware]),
        FirmwareChoice::Bios => vec![Firmware::Bios],
        FirmwareChoice::Uefi => vec![Firmware::Uefi],
        FirmwareChoice::Both => vec![Firmware::Bios, Firmware::Uefi],
    };
    for f in &want {
        if !can.contains(f) {
            bail!(
                "--firmware {}: the source system has no boot loader for {} (it boots under {}); \
                 use --firmware auto",
                firmware_name(*f),
                firmware_name(*f),
                can.iter()
                    .map(|f| firmware_name(*f))
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
        }
    }
    Ok(want)
}

/// Bytes the work folder needs: the images fill up to the restored data,
/// plus the job disk, firmware variables, logs and a margin of a tenth.
pub fn space_needed(restored_bytes: u64) -> u64 {
    let extra = 256u64 << 20;
    restored_bytes
        .saturating_add(restored_bytes / 10)
        .saturating_add(extra)
}

/// Refuses a work folder without room for the drill.
pub fn check_space(work: &Path, needed: u64, available: u64) -> Result<()> {
    if available < needed {
        bail!(
            "too little space in {}: the drill needs about {} (the backup's data restored onto \
             sparse scratch disks), {} is free; free space or give --work DIR elsewhere",
            work.display(),
            human_bytes(needed),
            human_bytes(available)
        );
    }
    Ok(())
}

/// Free bytes for an unprivileged writer... and root, in `dir`.
pub fn available_bytes(dir: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(dir)
        .with_context(|| format!("reading the free space of {}", dir.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
