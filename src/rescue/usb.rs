//! `mkrescue --usb TARGET`: a bootable disk (a USB stick or an image file)
//! for BIOS and UEFI, with a data partition for backups.
//!
//! The disk is GPT: partition 1 is the EFI system partition (FAT32, also
//! flagged "legacy BIOS bootable") holding the kernel, the initrd, a GRUB
//! EFI loader at the removable-media path `EFI/BOOT/BOOTX64.EFI` and
//! SYSLINUX; the protective MBR carries SYSLINUX's `gptmbr.bin`, which BIOS
//! firmware runs and which starts the flagged partition. Partition 2,
//! `LIFEBOAT-DATA`, is ext4: files over 4 GiB (FAT cannot hold them), a
//! journal for a stick pulled during a backup, and the rescue kernel always
//! has the driver. FAT is built in a file with mkfs.vfat and mtools and
//! copied in, never mounted; ext4 is made in place at its offset, so an
//! image file and a block device are written the same way.

use std::fmt;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::usbkeep::Plan;
use crate::exec::Cmd;
use crate::util;

/// The label of the data partition (GPT name and ext4 label).
pub const DATA_LABEL: &str = "LIFEBOAT-DATA";
/// The folder of the data partition that holds the backup generations.
pub const DATA_BACKUP_DIR: &str = "backup";
/// Where the rescue system mounts the data partition (read-only).
pub const DATA_MOUNT: &str = "/run/lifeboat/data";
/// Tools `--usb` runs.
pub const TOOLS: &[&str] = &[
    "sfdisk",
    "mkfs.vfat",
    "mmd",
    "mcopy",
    "syslinux",
    "mkfs.ext4",
    "blkid",
    "grub-mkstandalone",
];

const MIB: u64 = 1 << 20;
/// The ESP starts at 1 MiB; the GPT backup takes the last MiB.
const ESP_START: u64 = MIB;
/// Smallest ESP: room for a rescue image twice the size of today's.
pub const ESP_MIN: u64 = 256 * MIB;
/// Smallest data partition.
const DATA_MIN: u64 = 64 * MIB;
/// Size of a new image file without `--usb-size`: the ESP and 1 GiB.
const DATA_DEFAULT: u64 = 1 << 30;
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const LINUX_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

/// The one LIFEBOAT-DATA partition plugged in (`backup create --to usb`):
/// none, or two (which one was meant?), is an error.
pub fn find_data_partition() -> Result<String> {
    let out = Cmd::new("blkid")
        .args(["-c", "/dev/null", "-o", "device", "-t"])
        .arg(format!("LABEL={DATA_LABEL}"))
        .ok_codes(&[2])
        .read()?;
    let devs: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match devs.as_slice() {
        [one] => Ok(one.to_string()),
        [] => bail!(
            "no partition labelled {DATA_LABEL} found: plug in the disk made by `lifeboat mkrescue --usb`"
        ),
        many => bail!(
            "{} partitions labelled {DATA_LABEL} ({}): unplug all but one, or mount one and give its folder",
            many.len(),
            many.join(", ")
        ),
    }
}

/// What the target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A whole block device.
    Disk,
    /// An image file (created, or an existing one replaced).
    ImageFile,
}

/// One partition (or the whole disk's own signature) as found on the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub device: String,
    pub bytes: u64,
    pub fstype: Option<String>,
    pub label: Option<String>,
    pub partlabel: Option<String>,
}

/// Why a target is refused. Only [`Refusal::forcible`] ones give way to
/// `--force`: a disk in use (mounted, swap, under md/dm) is never written,
/// even with `--force`, since the running system would write to it too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A partition, not a whole disk.
    Partition,
    /// Neither a block device nor a regular file.
    NotDiskOrFile,
    Mounted {
        device: String,
        at: String,
    },
    Swap {
        device: String,
    },
    /// Held by device-mapper or md (`holders` in sysfs).
    Held {
        device: String,
        holder: String,
    },
    /// The disk says it is not removable (internal disks, loop devices).
    NotRemovable,
    /// An image file that exists and is not empty.
    ExistingFile,
    TooSmall {
        bytes: u64,
        need: u64,
    },
}

impl Refusal {
    pub fn forcible(&self) -> bool {
        matches!(self, Refusal::NotRemovable | Refusal::ExistingFile)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Refusal::Partition => write!(f, "it is a partition: give the whole disk"),
            Refusal::NotDiskOrFile => write!(f, "it is neither a block device nor a file"),
            Refusal::Mounted { device, at } => {
                write!(f, "{device} is mounted at {at}: unmount it first")
            }
            Refusal::Swap { device } => write!(f, "{device} is active swap: swapoff it first"),
            Refusal::Held { device, holder } => write!(
                f,
                "{device} is in use by {holder} (device-mapper or md): stop that first"
            ),
            Refusal::NotRemovable => write!(
                f,
                "the disk is not removable (an internal disk?): check it and add --force"
            ),
            Refusal::ExistingFile => write!(f, "the file exists: add --force to replace it"),
            Refusal::TooSmall { bytes, need } => write!(
                f,
                "{} is too small: the rescue disk needs at least {}",
                util::human_bytes(*bytes),
                util::human_bytes(*need)
            ),
        }
    }
}

/// What the target is and holds, read before anything is written.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub path: PathBuf,
    pub kind: TargetKind,
    pub bytes: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub removable: bool,
    /// The disk's own signature (a partition table) and its partitions.
    pub found: Vec<Found>,
    pub refusals: Vec<Refusal>,
}

/// Reads what `target` is and holds. `size` is the size of an image file
/// to create (default: the ESP and 1 GiB); `esp` the ESP's size.
pub fn inspect(target: &Path, size: Option<u64>, esp: u64) -> Result<Inspection> {
    let meta = std::fs::metadata(target);
    use std::os::unix::fs::FileTypeExt;
    let mut ins = match &meta {
        Ok(m) if m.file_type().is_block_device() => inspect_disk(target)?,
        Ok(m) if m.is_file() => Inspection {
            bytes: size.unwrap_or(m.len().max(esp + ESP_START + DATA_DEFAULT)),
            refusals: if m.len() > 0 {
                vec![Refusal::ExistingFile]
            } else {
                Vec::new()
            },
            found: probe(target).into_iter().collect(),
            ..Inspection::file(target)
        },
        Ok(_) => Inspection {
            refusals: vec![Refusal::NotDiskOrFile],
            ..Inspection::file(target)
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Inspection {
            bytes: size.unwrap_or(esp + ESP_START + DATA_DEFAULT),
            ..Inspection::file(target)
        },
        Err(e) => bail!("cannot read {}: {e}", target.display()),
    };
    let need = ESP_START + esp + DATA_MIN + MIB;
    if ins.bytes < need {
        ins.refusals.push(Refusal::TooSmall {
            bytes: ins.bytes,
            need,
        });
    }
    Ok(ins)
}

impl Inspection {
    fn file(path: &Path) -> Inspection {
        Inspection {
            path: path.to_path_buf(),
            kind: TargetKind::ImageFile,
            bytes: 0,
            model: None,
            serial: None,
            removable: true,
            found: Vec::new(),
            refusals: Vec::new(),
        }
    }

    /// Fails with every reason that stands (those `--force` overrides
    /// count only without it).
    pub fn check(&self, force: bool) -> Result<()> {
        let stands: Vec<String> = self
            .refusals
            .iter()
            .filter(|r| !(force && r.forcible()))
            .map(ToString::to_string)
            .collect();
        if !stands.is_empty() {
            bail!(
                "refusing to write {}: {}",
                self.path.display(),
                stands.join("; ")
            );
        }
        Ok(())
    }

    /// The disk's model and serial, as recorded in `rescue.json`.
    pub fn identity(&self) -> String {
        format!(
            "model {}, serial {}",
            self.model.as_deref().unwrap_or("unknown"),
            self.serial.as_deref().unwrap_or("unknown")
        )
    }

    /// What the target is and holds, one line each, for the admin to see
    /// before it is overwritten.
    pub fn describe(&self) -> String {
        let mut out = match self.kind {
            TargetKind::Disk => format!(
                "{}: disk, {} ({} bytes), model {}, serial {}, {}\n",
                self.path.display(),
                util::human_bytes(self.bytes),
                self.bytes,
                self.model.as_deref().unwrap_or("unknown"),
                self.serial.as_deref().unwrap_or("unknown"),
                if self.removable {
                    "removable"
                } else {
                    "NOT removable"
                }
            ),
            TargetKind::ImageFile => format!(
                "{}: image file, {} ({} bytes)\n",
                self.path.display(),
                util::human_bytes(self.bytes),
                self.bytes
            ),
        };
        if self.found.is_empty() {
            out.push_str("  holds: nothing lifeboat recognises\n");
        }
        for f in &self.found {
            out.push_str(&format!(
                "  {}: {} {}{}{}\n",
                f.device,
                util::human_bytes(f.bytes),
                f.fstype.as_deref().unwrap_or("(no file system)"),
                f.label
                    .as_deref()
                    .map(|l| format!(", label {l}"))
                    .unwrap_or_default(),
                f.partlabel
                    .as_deref()
                    .map(|l| format!(", partition name {l}"))
                    .unwrap_or_default(),
            ));
        }
        out
    }
}

/// The sysfs folder of a block device, and whether it is a partition.
fn sysfs_dir(dev: &Path) -> Result<PathBuf> {
    let real =
        std::fs::canonicalize(dev).with_context(|| format!("resolving {}", dev.display()))?;
    let name = real
        .file_name()
        .with_context(|| format!("{} has no device name", dev.display()))?;
    Ok(Path::new("/sys/class/block").join(name))
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A whole disk: size, model, serial, removable, and every partition with
/// what uses it.
fn inspect_disk(dev: &Path) -> Result<Inspection> {
    let sys = sysfs_dir(dev)?;
    let mut ins = Inspection {
        path: dev.to_path_buf(),
        kind: TargetKind::Disk,
        bytes: read_trim(&sys.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(0, |s| s * 512),
        model: read_trim(&sys.join("device/model")),
        serial: read_trim(&sys.join("device/serial"))
            .or_else(|| read_trim(&sys.join("serial")))
            .or_else(|| read_trim(&sys.join("device/wwid"))),
        removable: read_trim(&sys.join("removable")).as_deref() == Some("1"),
        found: Vec::new(),
        refusals: Vec::new(),
    };
    if sys.join("partition").exists() {
        ins.refusals.push(Refusal::Partition);
        return Ok(ins);
    }
    if !ins.removable {
        ins.refusals.push(Refusal::NotRemovable);
    }
    let mut nodes = vec![sys.clone()];
    nodes.extend(partitions(&sys)?);
    let mounts = crate::mounts::mountinfo()?;
    let swaps = crate::mounts::active_swaps();
    for node in &nodes {
        let name = node.file_name().unwrap_or_default().to_string_lossy();
        let device = format!("/dev/{name}");
        if let Some(f) = probe(Path::new(&device)) {
            ins.found.push(Found {
                bytes: read_trim(&node.join("size"))
                    .and_then(|s| s.parse::<u64>().ok())
                    .map_or(0, |s| s * 512),
                ..f
            });
        }
        ins.refusals.extend(uses(node, &device, &mounts, &swaps));
    }
    Ok(ins)
}

/// The partitions of the disk at `sys` (sysfs folders), in order.
fn partitions(sys: &Path) -> Result<Vec<PathBuf>> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(sys)
        .with_context(|| format!("reading {}", sys.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("partition").exists())
        .collect();
    parts.sort();
    Ok(parts)
}

/// How the running system uses one disk or partition.
fn uses(
    node: &Path,
    device: &str,
    mounts: &[crate::mounts::MountInfo],
    swaps: &[crate::mounts::ActiveSwap],
) -> Vec<Refusal> {
    let mut out = Vec::new();
    let devnum = read_trim(&node.join("dev")).and_then(|d| {
        let (a, b) = d.split_once(':')?;
        Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
    });
    // btrfs mounts carry an anonymous device number: their source counts too.
    let is_this = |m: &crate::mounts::MountInfo| {
        Some(m.devnum) == devnum
            || (m.source.starts_with("/dev/")
                && std::fs::canonicalize(&m.source).is_ok_and(|p| p == Path::new(device)))
    };
    for m in mounts.iter().filter(|m| is_this(m)) {
        out.push(Refusal::Mounted {
            device: device.to_string(),
            at: m.mountpoint.clone(),
        });
    }
    for s in swaps.iter().filter(|s| !s.is_file) {
        let same = std::fs::canonicalize(&s.filename).is_ok_and(|p| p == Path::new(device));
        if same {
            out.push(Refusal::Swap {
                device: device.to_string(),
            });
        }
    }
    if let Ok(holders) = std::fs::read_dir(node.join("holders")) {
        for h in holders.filter_map(|e| e.ok()) {
            out.push(Refusal::Held {
                device: device.to_string(),
                holder: h.file_name().to_string_lossy().into_owned(),
            });
        }
    }
    out
}

/// What blkid finds on `dev` (a low-level probe: no cache, no udev).
fn probe(dev: &Path) -> Option<Found> {
    let out = Cmd::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(dev)
        .ok_codes(&[2])
        .read()
        .ok()?;
    let get = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
    };
    let fstype = get("TYPE").or_else(|| get("PTTYPE").map(|t| format!("{t} partition table")));
    let found = Found {
        device: dev.display().to_string(),
        bytes: 0,
        fstype,
        label: get("LABEL"),
        partlabel: get("PART_ENTRY_NAME"),
    };
    (found.fstype.is_some() || found.label.is_some() || found.partlabel.is_some()).then_some(found)
}

/// The files that go onto the disk.
pub struct UsbFiles<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
    /// The GRUB EFI loader finds the ESP by the file /lifeboat/MARKER.
    pub marker: &'a str,
    /// Secure Boot: shim and the signed ESP GRUB
    /// ([`super::secureboot::for_medium`]); `None`: GRUB built by
    /// grub-mkstandalone (Secure Boot off).
    pub signed: Option<(super::secureboot::SignedLoaders, PathBuf)>,
}

/// The ESP's size for these files: twice what they take (a later, larger
/// rescue fits), at least [`ESP_MIN`], in whole MiB.
pub fn esp_size(vmlinuz: &Path, initrd: &Path) -> Result<u64> {
    let mut total = 0;
    for p in [vmlinuz, initrd] {
        total += std::fs::metadata(p)
            .with_context(|| format!("reading {}", p.display()))?
            .len();
    }
    Ok((total * 2 + 16 * MIB).div_ceil(MIB).max(ESP_MIN / MIB) * MIB)
}

/// Partition boundaries in bytes: (ESP start, ESP size, data start, data size).
fn partition_plan(disk: u64, esp: u64) -> (u64, u64, u64, u64) {
    let data_start = ESP_START + esp;
    // The backup GPT takes 33 sectors at the end; keep the last MiB free.
    let data_end = (disk / MIB) * MIB - MIB;
    (ESP_START, esp, data_start, data_end - data_start)
}

/// Writes the rescue disk onto the inspected target (checked by the
/// caller). `work` is a private scratch folder.
/// With [`Plan::KeepData`] only the boot partition (and the MBR's boot
/// code) is written: the partition table and LIFEBOAT-DATA stay as they are.
pub fn write(ins: &Inspection, files: &UsbFiles, esp: u64, plan: &Plan, work: &Path) -> Result<()> {
    if let Plan::KeepData(e) = plan {
        let fat = build_esp(files, e.esp_size, e.esp_start, work)?;
        return write_boot_code(&ins.path, &fat, e.esp_start, false);
    }
    let (esp_start, esp_size, data_start, data_size) = partition_plan(ins.bytes, esp);
    let fat = build_esp(files, esp_size, esp_start, work)?;
    if ins.kind == TargetKind::ImageFile {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&ins.path)
            .with_context(|| format!("creating {}", ins.path.display()))?;
        f.set_len(ins.bytes)
            .with_context(|| format!("sizing {}", ins.path.display()))?;
    } else {
        // Old signatures (a RAID superblock at the end, an old GPT) go first.
        Cmd::new("wipefs")
            .args(["-a", "-q"])
            .arg(&ins.path)
            .run()
            .with_context(|| format!("wiping the signatures on {}", ins.path.display()))?;
    }
    let table = format!(
        "label: gpt\n\
         start={s1}, size={n1}, type={ESP_TYPE}, name=\"LIFEBOAT-EFI\", attrs=\"LegacyBIOSBootable\"\n\
         start={s2}, size={n2}, type={LINUX_TYPE}, name=\"{DATA_LABEL}\"\n",
        s1 = esp_start / 512,
        n1 = esp_size / 512,
        s2 = data_start / 512,
        n2 = data_size / 512,
    );
    Cmd::new("sfdisk")
        .args(["-q", "--wipe", "always", "--no-reread", "--no-tell-kernel"])
        .arg(&ins.path)
        .stdin(table)
        .run()
        .with_context(|| format!("partitioning {}", ins.path.display()))?;
    write_boot_code(
        &ins.path,
        &fat,
        esp_start,
        ins.kind == TargetKind::ImageFile,
    )?;
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-L", DATA_LABEL])
        .arg("-E")
        .arg(format!("offset={data_start},root_owner=0:0"))
        .arg(&ins.path)
        .arg(format!("{}k", data_size / 1024))
        .run()
        .with_context(|| format!("making the {DATA_LABEL} file system"))?;
    if ins.kind == TargetKind::Disk {
        // The kernel learns the new partitions (a loop device: partx).
        let _ = Cmd::new("partx").arg("-u").arg(&ins.path).run();
        let _ = Cmd::new("blockdev").arg("--rereadpt").arg(&ins.path).run();
    }
    Ok(())
}

/// The FAT image of the ESP, in `work`: GRUB's EFI loader, SYSLINUX (its
/// boot sector with `esp_start` as hidden sectors: where the BIOS finds
/// it), the kernel, the initrd and the marker.
fn build_esp(files: &UsbFiles, size: u64, esp_start: u64, work: &Path) -> Result<PathBuf> {
    // lifeboat.usb: the rescue waits for this disk's data partition.
    let cmdline = format!("{} lifeboat.usb", files.cmdline);
    let img = work.join("esp.img");
    Cmd::new("mkfs.vfat")
        .args(["-C", "-F", "32", "-n", "LIFEBOAT", "-h"])
        .arg((esp_start / 512).to_string())
        .arg(&img)
        .arg((size / 1024).to_string())
        .run()
        .context("creating the ESP's FAT file system")?;
    let i = img.to_string_lossy().into_owned();
    let mut dirs = vec!["::/EFI", "::/EFI/BOOT", "::/lifeboat", "::/syslinux"];
    if files.signed.is_some() {
        dirs.push("::/EFI/debian");
    }
    Cmd::new("mmd").args(["-i", &i]).args(dirs).run()?;
    let marker = work.join("marker");
    std::fs::write(&marker, b"lifeboat rescue image\n")
        .with_context(|| format!("writing {}", marker.display()))?;
    let cfg = work.join("syslinux.cfg");
    std::fs::write(&cfg, super::iso::isolinux_cfg(&cmdline))
        .with_context(|| format!("writing {}", cfg.display()))?;
    let mut copies: Vec<(PathBuf, String)> = vec![
        (files.vmlinuz.to_path_buf(), "::/lifeboat/vmlinuz".into()),
        (files.initrd.to_path_buf(), "::/lifeboat/initrd".into()),
        (marker, format!("::/lifeboat/{}", files.marker)),
        (cfg, "::/syslinux/syslinux.cfg".into()),
    ];
    copies.extend(efi_files(files, &cmdline, work)?);
    for (from, to) in copies {
        Cmd::new("mcopy")
            .args(["-i", &i])
            .arg(&from)
            .arg(&to)
            .run()
            .with_context(|| format!("copying {} into the ESP", from.display()))?;
    }
    Cmd::new("syslinux")
        .args(["--install", "--directory", "/syslinux"])
        .arg(&img)
        .run()
        .context("installing SYSLINUX into the ESP")?;
    Ok(img)
}

/// The UEFI loaders of the ESP (host path, path in the FAT image): shim,
/// the signed ESP GRUB (and MokManager) in /EFI/BOOT with the menu where
/// that GRUB reads it, or one GRUB built by grub-mkstandalone with the
/// menu inside.
fn efi_files(files: &UsbFiles, cmdline: &str, work: &Path) -> Result<Vec<(PathBuf, String)>> {
    let Some((loaders, grub)) = &files.signed else {
        let efi = super::iso::grub_efi_loader(cmdline, files.marker, work)?;
        return Ok(vec![(efi, "::/EFI/BOOT/BOOTX64.EFI".into())]);
    };
    let cfg = work.join("grub.cfg");
    std::fs::write(&cfg, super::iso::grub_cfg_text(cmdline, files.marker))
        .with_context(|| format!("writing {}", cfg.display()))?;
    let mut out: Vec<(PathBuf, String)> =
        super::secureboot::boot_files(loaders, grub, "BOOTX64.EFI")
            .into_iter()
            .map(|(p, name)| (p, format!("::/EFI/BOOT/{name}")))
            .collect();
    out.push((cfg, format!("::/{}", super::secureboot::ESP_GRUB_CFG)));
    Ok(out)
}

/// Where SYSLINUX's GPT-aware MBR code is.
const GPTMBR: &[&str] = &[
    "/usr/lib/SYSLINUX/gptmbr.bin",
    "/usr/lib/syslinux/mbr/gptmbr.bin",
    "/usr/share/syslinux/gptmbr.bin",
];

/// Copies the ESP image in and puts `gptmbr.bin` into the protective MBR,
/// whose 0xEE entry is flagged active: some BIOSes boot only a disk with an
/// active entry, and UEFI ignores the flag.
/// `fresh`: the target is a new image file (all zeros), where zero blocks
/// of the ESP are skipped and the file stays sparse; a disk gets every byte.
fn write_boot_code(target: &Path, fat: &Path, esp_start: u64, fresh: bool) -> Result<()> {
    let mbr_path = GPTMBR
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "gptmbr.bin not found (looked for {}); install package syslinux",
                GPTMBR.join(", ")
            )
        })?;
    let code =
        std::fs::read(mbr_path).with_context(|| format!("reading {}", mbr_path.display()))?;
    if code.len() > 440 {
        bail!(
            "{} is {} bytes, more than 440",
            mbr_path.display(),
            code.len()
        );
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(target)
        .with_context(|| format!("opening {} for writing", target.display()))?;
    let mut src = std::fs::File::open(fat).with_context(|| format!("opening {}", fat.display()))?;
    copy_at(&mut src, &mut out, esp_start, fresh)
        .with_context(|| format!("writing the ESP onto {}", target.display()))?;
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&code)?;
    out.seek(SeekFrom::Start(446))?;
    out.write_all(&[0x80])?;
    out.sync_all()
        .with_context(|| format!("flushing {}", target.display()))?;
    Ok(())
}

/// Copies `src` into `out` from `offset` on, in 1 MiB blocks; with
/// `skip_zeros`, all-zero blocks are passed over (`out` is zero there).
fn copy_at(
    src: &mut impl std::io::Read,
    out: &mut std::fs::File,
    offset: u64,
    skip_zeros: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = offset;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match src.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(());
        }
        if !(skip_zeros && buf[..n].iter().all(|&b| b == 0)) {
            out.seek(SeekFrom::Start(pos))?;
            out.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_removable_and_existing_file_give_way_to_force() {
        let mut ins = Inspection::file(Path::new("/tmp/x.img"));
        ins.refusals = vec![Refusal::NotRemovable, Refusal::ExistingFile];
        assert!(ins.check(false).is_err());
        ins.check(true).unwrap();
        for hard in [
            Refusal::Mounted {
                device: "/dev/sdz1".into(),
                at: "/".into(),
            },
            Refusal::Swap {
                device: "/dev/sdz2".into(),
            },
            Refusal::Held {
                device: "/dev/sdz3".into(),
                holder: "dm-0".into(),
            },
            Refusal::Partition,
        ] {
            ins.refusals = vec![Refusal::NotRemovable, hard.clone()];
            let err = ins.check(true).unwrap_err().to_string();
            assert!(err.contains(&hard.to_string()), "{err}");
            assert!(!err.contains("not removable"), "{err}");
        }
    }

    #[test]
    fn zero_blocks_are_skipped_only_on_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = vec![0u8; 3 * MIB as usize + 5];
        data[10] = 1;
        data[2 * MIB as usize + 3] = 2;
        data[3 * MIB as usize + 4] = 3;
        for skip in [true, false] {
            let p = dir.path().join(format!("out-{skip}"));
            let mut f = std::fs::File::options()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&p)
                .unwrap();
            // A disk with old contents everywhere: only skipped blocks keep them.
            f.write_all(&vec![0xAA; 5 * MIB as usize]).unwrap();
            copy_at(&mut &data[..], &mut f, 512, skip).unwrap();
            let got = std::fs::read(&p).unwrap();
            assert_eq!(&got[..512], &[0xAA; 512][..]);
            let second = &got[512 + MIB as usize..512 + 2 * MIB as usize];
            if skip {
                assert!(
                    second.iter().all(|&b| b == 0xAA),
                    "a zero block was written"
                );
            } else {
                assert_eq!(&got[512..512 + data.len()], &data[..]);
            }
            assert_eq!(got[512 + 2 * MIB as usize + 3], 2);
            assert_eq!(got[512 + 3 * MIB as usize + 4], 3);
        }
    }

    #[test]
    fn partitions_leave_room_for_both_gpts() {
        let (s1, n1, s2, n2) = partition_plan(2 << 30, ESP_MIN);
        assert_eq!((s1, n1, s2), (MIB, ESP_MIN, MIB + ESP_MIN));
        assert_eq!(s2 + n2, (2 << 30) - MIB);
        // An odd size: the data partition ends on a MiB boundary.
        let (_, _, s2, n2) = partition_plan((1 << 30) + 12345, ESP_MIN);
        assert_eq!((s2 + n2) % MIB, 0);
        assert!(s2 + n2 <= (1 << 30) + 12345 - MIB);
    }
}
