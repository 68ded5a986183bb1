//! The recovery plan: a value computed from the layout and the disks present,
//! printed in full before anything is written, tested, then applied by
//! `recover`.

pub mod esp;
pub mod firmware;
pub mod fit;
pub mod mapping;
pub mod nic;
pub mod placement;
pub mod render;
pub mod sectors;
pub mod stack;
pub mod targets;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::layout::{
    EfiBootEntry, Filesystem, Firmware, FsParams, FsType, GptPartition, GptTable, GrubPlatform,
    Layout, LogicalVolume, LuksDevice, MbrKind, MbrPartition, MbrTable, MdArray, PartitionTable,
    PhysicalVolume, Swap, VolumeGroup,
};
use crate::util::human_bytes;
use fit::{Span, Usable, MIB};
use mapping::DiskPair;
pub use placement::{Placement, PvRange};
pub use stack::FsFloor;
use stack::{Content, Stack};
pub use targets::TargetDisk;

/// Where recovery mounts the new system.
pub const MOUNT_ROOT: &str = "/mnt/lifeboat";

/// Everything `plan` needs besides the layout.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    pub targets: Vec<TargetDisk>,
    pub maps: Vec<(String, String)>,
    /// Target disks that may not be written, with the reason.
    pub excluded: BTreeMap<String, String>,
    /// Used bytes per file system (UUID, else device) from the backup manifest.
    pub manifest_used: BTreeMap<String, u64>,
    /// The backup to restore (shown in the plan; `None` plans no restore).
    pub backup: Option<String>,
    /// Mount points of the file systems the backup holds.
    pub backup_filesystems: Vec<String>,
    /// `--no-restore`: recreate the disks only, though a backup is given.
    pub no_restore: bool,
    /// The rescue system booted under UEFI (EFI entries can be written).
    pub uefi: bool,
    /// No one to ask: disks are chosen by size only when all are blank.
    pub unattended: bool,
    /// `--firmware`.
    pub firmware: firmware::FirmwareChoice,
    /// GRUB platforms (`x86_64-efi`, `i386-pc`) whose modules the backup
    /// holds under /usr/lib/grub; `None` when not known.
    pub backup_grub: Option<Vec<String>>,
    /// The network interfaces present (the rescue system's sysfs).
    pub nics: Vec<crate::layout::NetInterface>,
    /// `--map-nic OLD=NEW`.
    pub nic_maps: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeChange {
    pub item: String,
    pub old_bytes: u64,
    pub new_bytes: u64,
    pub note: String,
}

/// A mount of the new system under [`MOUNT_ROOT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedMount {
    pub device: String,
    /// Mount point in the recovered system (`/`, `/home`).
    pub mountpoint: String,
    pub fstype: FsType,
    pub options: Vec<String>,
}

/// An LV to create at a (possibly new) size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewLv {
    pub lv: LogicalVolume,
    pub size_bytes: u64,
    /// Where on the new PVs (see [`placement`]).
    #[serde(default, skip_serializing_if = "Placement::is_free")]
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Write the partition table of a disk.
    Partition {
        disk: String,
        old_disk: String,
        table: PartitionTable,
    },
    /// Create an md array with its old UUID, name, level and metadata.
    CreateMd { array: MdArray },
    /// Format and open a LUKS container with its old UUID and cipher.
    FormatLuks { luks: LuksDevice, name: String },
    /// Create PVs, the VG and its LVs with their old UUIDs.
    CreateVg {
        vg: VolumeGroup,
        pvs: Vec<PhysicalVolume>,
        lvs: Vec<NewLv>,
        /// Old UUIDs of the LVs LVM creates by itself with those above
        /// (`pool_tdata`, `pool_tmeta`, `lvol0_pmspare`, raid images), by
        /// name: written back with the others.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        internal_uuids: BTreeMap<String, String>,
    },
    /// Make a file system with its old UUID, label and parameters.
    Mkfs { fs: Filesystem },
    /// Make a swap area with its old UUID and label.
    Mkswap { swap: Swap },
    /// Mount the new file systems under /mnt/lifeboat.
    Mount { mounts: Vec<PlannedMount> },
    /// Restore the backup chain into the new tree.
    Restore { backup: String },
    /// Rewrite device names that changed in fstab, crypttab, mdadm.conf.
    FixConfig { replacements: Vec<(String, String)> },
    /// Move the network configuration of the old interfaces onto the new
    /// ones in the restored system.
    Network { nics: nic::NicPlan },
    /// Regenerate the initramfs in the new system.
    Initramfs,
    /// Install the bootloader: GRUB i386-pc on the BIOS disks, EFI entries.
    Bootloader {
        bios_disks: Vec<String>,
        efi_entries: Vec<EfiBootEntry>,
        /// ESP devices in the new system (the removable fallback path is
        /// kept present on each).
        esps: Vec<String>,
        write_nvram: bool,
        /// Install GRUB x86_64-efi on the ESPs (a system converted to UEFI).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        grub_efi: bool,
    },
    /// Convert the restored system to the other firmware: the new ESP into
    /// fstab, and check that it holds GRUB for the platform.
    Migrate {
        to: crate::layout::Firmware,
        /// A line for /etc/fstab (the new ESP).
        fstab: Option<String>,
        /// Folder of GRUB's modules for the platform (`usr/lib/grub/x86_64-efi`)
        /// and the package that ships it.
        grub_dir: String,
        package: String,
    },
    /// Re-capture the new disks, compare with the plan, write the report.
    Verify,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub hostname: String,
    pub layout_captured_at: String,
    pub disks: Vec<DiskPair>,
    pub sizes: Vec<SizeChange>,
    /// Old device path → new device path, where they differ.
    pub renames: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// The least size of each recreated file system whose usage the backup
    /// tells, and the size it gets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floors: Vec<FsFloor>,
    /// Parameters changed for the new disks (sector sizes), in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjustments: Vec<String>,
    pub warnings: Vec<String>,
    /// What makes the plan wrong as asked (a backup given but not all of
    /// it restored): `plan` reports them as errors, `recover` refuses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The device path of partition `n` of `disk` (`/dev/sda` → `/dev/sda1`,
/// `/dev/nvme0n1` → `/dev/nvme0n1p1`).
pub fn partition_path(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

struct Builder<'a> {
    stack: Stack<'a>,
    renames: BTreeMap<String, String>,
    /// New size of every device, by old path.
    sizes: BTreeMap<String, u64>,
    changes: Vec<SizeChange>,
    warnings: Vec<String>,
    /// The firmware conversion and what it adds.
    landing: firmware::Landing,
}

impl Builder<'_> {
    fn new_path(&self, old: &str) -> String {
        self.renames
            .get(old)
            .cloned()
            .unwrap_or_else(|| old.to_string())
    }

    fn note_size(&mut self, item: String, old: u64, new: u64, note: &str) {
        self.changes.push(SizeChange {
            item,
            old_bytes: old,
            new_bytes: new,
            note: note.to_string(),
        });
    }

    /// Places the partitions of one disk on its new disk.
    fn partition(&mut self, pair: &DiskPair, table: &PartitionTable) -> Result<PartitionTable> {
        match table {
            PartitionTable::Gpt(gpt) => self.partition_gpt(pair, gpt).map(PartitionTable::Gpt),
            PartitionTable::Mbr(mbr) => self.partition_mbr(pair, mbr).map(PartitionTable::Mbr),
        }
    }

    /// What the placement needs of one old partition: where it is, its
    /// size, whether it may move or grow (`fixed_type`: a BIOS boot
    /// partition or an ESP) and the least size its contents need.
    fn span(&self, device: &str, start: u64, size: u64, fixed_type: bool) -> Span {
        let (min, fixed) = self.stack.device_min(device, size);
        Span {
            start,
            size,
            fixed: fixed || fixed_type || self.is_boot_fs(device),
            min,
        }
    }

    /// Records where an old partition went: its new name and size.
    fn placed(&mut self, old: &str, old_size: u64, new: &str, size: u64) {
        self.renames.insert(old.to_string(), new.to_string());
        self.sizes.insert(old.to_string(), size);
        if size != old_size {
            self.note_size(format!("partition {old}"), old_size, size, "");
        }
    }

    fn partition_gpt(&mut self, pair: &DiskPair, gpt: &GptTable) -> Result<GptTable> {
        let old_sector = pair.old_sector_size.max(512) as u64;
        let new_sector = pair.new_sector_size.max(512) as u64;
        let entry_sectors = |sector: u64| {
            (gpt.num_partition_entries as u64 * gpt.partition_entry_size as u64).div_ceil(sector)
        };
        let old_usable = Usable {
            start: gpt.first_usable_lba * old_sector,
            end: (gpt.last_usable_lba + 1) * old_sector,
        };
        let new_total = pair.new_size_bytes / new_sector;
        let first = if new_sector == old_sector {
            gpt.first_usable_lba
        } else {
            2 + entry_sectors(new_sector)
        };
        let last = new_total - 2 - entry_sectors(new_sector);
        let new_usable = Usable {
            start: first * new_sector,
            end: (last + 1) * new_sector,
        };
        let mut parts = gpt.partitions.clone();
        parts.sort_by_key(|p| p.first_lba);
        let spans: Vec<Span> = parts
            .iter()
            .map(|p| {
                let fixed_type =
                    p.type_guid == stack::BIOS_BOOT_GUID || p.type_guid == stack::ESP_GUID;
                let size = (p.last_lba - p.first_lba + 1) * old_sector;
                self.span(&p.device, p.first_lba * old_sector, size, fixed_type)
            })
            .collect();
        let placed = place_on(pair, &spans, old_usable, new_usable)?;
        let mut new_parts = Vec::new();
        for (p, (start, size)) in parts.iter().zip(placed) {
            let np = GptPartition {
                device: partition_path(&pair.new, p.number),
                first_lba: start / new_sector,
                last_lba: (start + size) / new_sector - 1,
                size_bytes: size,
                ..p.clone()
            };
            self.placed(&p.device, p.size_bytes, &np.device, size);
            new_parts.push(np);
        }
        new_parts.sort_by_key(|p| p.number);
        Ok(GptTable {
            first_usable_lba: first,
            last_usable_lba: last,
            partition_entry_lba: 2,
            partitions: new_parts,
            problems: Vec::new(),
            ..gpt.clone()
        })
    }

    fn partition_mbr(&mut self, pair: &DiskPair, mbr: &MbrTable) -> Result<MbrTable> {
        let old_sector = pair.old_sector_size.max(512) as u64;
        let new_sector = pair.new_sector_size.max(512) as u64;
        let limit = (u32::MAX as u64) * new_sector;
        if pair.new_size_bytes > limit {
            self.warnings.push(format!(
                "{}: an MBR partition table addresses only the first {} of {}",
                pair.new,
                human_bytes(limit),
                human_bytes(pair.new_size_bytes)
            ));
        }
        let old_usable = Usable {
            start: old_sector,
            end: pair.old_size_bytes.min((u32::MAX as u64) * old_sector),
        };
        let new_usable = Usable {
            start: new_sector,
            end: pair.new_size_bytes.min(limit),
        };
        let mut parts: Vec<&MbrPartition> = mbr
            .partitions
            .iter()
            .filter(|p| p.kind != MbrKind::Extended)
            .collect();
        parts.sort_by_key(|p| p.first_lba);
        let spans: Vec<Span> = parts
            .iter()
            .map(|p| {
                let size = p.sectors * old_sector;
                let esp = p.type_byte == stack::MBR_ESP;
                self.span(&p.device, p.first_lba * old_sector, size, esp)
            })
            .collect();
        let placed = place_on(pair, &spans, old_usable, new_usable)?;
        let mut new_parts: Vec<MbrPartition> = Vec::new();
        for (p, (start, size)) in parts.iter().zip(placed) {
            let np = MbrPartition {
                device: partition_path(&pair.new, p.number),
                first_lba: start / new_sector,
                sectors: size / new_sector,
                size_bytes: size,
                ..(*p).clone()
            };
            self.placed(&p.device, p.size_bytes, &np.device, size);
            new_parts.push(np);
        }
        if let Some(ext) = mbr.partitions.iter().find(|p| p.kind == MbrKind::Extended) {
            let np = extended_partition(pair, mbr, ext, &new_parts);
            self.renames.insert(ext.device.clone(), np.device.clone());
            new_parts.push(np);
        }
        new_parts.sort_by_key(|p| p.number);
        Ok(MbrTable {
            disk_signature: mbr.disk_signature,
            partitions: new_parts,
        })
    }

    fn is_boot_fs(&self, dev: &str) -> bool {
        matches!(self.stack.content(dev), Content::Fs(fs) if fs.mountpoints.iter().any(|m| m == "/boot" || m == "/boot/efi" || m == "/efi"))
    }
}

/// Places the partitions of `pair.old` on `pair.new`; "short by N bytes"
/// when they do not fit.
/// Onto a disk with other sector sizes, every position is translated to the
/// new sectors and aligned to 1 MiB.
fn place_on(pair: &DiskPair, spans: &[Span], old: Usable, new: Usable) -> Result<Vec<(u64, u64)>> {
    let new_sector = u64::from(pair.new_sector_size.max(512));
    let placed = if pair.old_sector_size.max(512) == pair.new_sector_size.max(512) {
        fit::place(spans, old, new)
    } else {
        fit::place_on_sectors(spans, old, new, new_sector)
    };
    placed.map_err(|s| {
        anyhow::anyhow!(
            "{} ({}) is too small for the partitions of {}: short by {} bytes ({})",
            pair.new,
            human_bytes(pair.new_size_bytes),
            pair.old,
            s.short,
            human_bytes(s.short)
        )
    })
}

/// Computes the recovery plan of `layout` on the disks in `input`.
pub fn build(layout: &Layout, input: &PlanInput) -> Result<Plan> {
    let disks = mapping::map_disks(
        layout,
        &input.targets,
        &input.maps,
        &input.excluded,
        input.unattended,
    )?;
    let mut b = start(layout, input, &disks)?;
    let mut steps = Vec::new();
    let mut created = partition_disks(&mut b, layout, &disks, &mut steps)?;
    stack_devices(&mut b, layout, &mut created, &mut steps)?;
    let fs_done = filesystems(&mut b, layout, &created, &mut steps)?;
    warn_empty_partitions(&mut b, layout, &disks);
    let mounts = planned_mounts(&b, layout, &fs_done);
    let errors = restore_errors(layout, input, &mounts);
    let floors: Vec<FsFloor> = layout
        .filesystems
        .iter()
        .filter(|f| fs_done.contains(&f.device))
        .filter_map(|f| {
            let mut floor = b.stack.fs_floor(f)?;
            floor.new_bytes = b.sizes.get(&f.device).copied();
            Some(floor)
        })
        .collect();
    restore_and_boot(&mut b, layout, input, &disks, &created, mounts, &mut steps)?;
    steps.push(Step::Verify);
    let mut adjustments = firmware::describe(&b.landing);
    adjustments.extend(sectors::adjust(&disks, &mut steps)?);
    Ok(Plan {
        hostname: layout.host.hostname.clone(),
        layout_captured_at: layout.captured_at.to_string(),
        disks,
        sizes: b.changes,
        renames: b.renames.into_iter().filter(|(o, n)| o != n).collect(),
        steps,
        floors,
        adjustments,
        warnings: b.warnings,
        errors,
    })
}

/// The builder with the firmware decision made, and the warnings that do
/// not depend on the disks: a firmware the system does not boot under,
/// storage lifeboat does not recreate.
fn start<'a>(layout: &'a Layout, input: &'a PlanInput, disks: &[DiskPair]) -> Result<Builder<'a>> {
    let mut b = Builder {
        stack: Stack::new(layout, &input.manifest_used),
        renames: BTreeMap::new(),
        sizes: BTreeMap::new(),
        changes: Vec::new(),
        warnings: Vec::new(),
        landing: firmware::Landing::default(),
    };
    b.landing.migration = firmware::decide(
        layout,
        input.firmware,
        input.uefi,
        boot_disk(layout, disks).as_deref(),
    )?;
    let rescue = if input.uefi {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    if input.firmware == firmware::FirmwareChoice::Same && !firmware::boots_under(layout, rescue) {
        b.warnings.push(format!(
            "the rescue system booted under {rescue:?} and the system does not boot under it: with --firmware same it is not converted (this machine may not boot it)"
        ));
    }
    for u in &layout.unsupported {
        b.warnings.push(format!(
            "not recreated: {}{} ({})",
            u.kind,
            u.device
                .as_deref()
                .map(|d| format!(" on {d}"))
                .unwrap_or_default(),
            u.reason
        ));
    }
    Ok(b)
}

/// One partitioning step per mapped disk with a table; returns the old
/// paths of everything created so far (disks and partitions).
fn partition_disks(
    b: &mut Builder,
    layout: &Layout,
    disks: &[DiskPair],
    steps: &mut Vec<Step>,
) -> Result<BTreeSet<String>> {
    let mut created: BTreeSet<String> = BTreeSet::new();
    for pair in disks {
        let old = layout
            .disk(&pair.old)
            .context("mapped disk is in the layout")?;
        b.renames.insert(pair.old.clone(), pair.new.clone());
        b.sizes.insert(pair.old.clone(), pair.new_size_bytes);
        created.insert(pair.old.clone());
        if let Some(table) = &old.partition_table {
            let table = b.table_for(pair, table);
            let mut new_table = b.partition(pair, &table)?;
            b.land(pair, &mut new_table)?;
            created.extend(b.renames.keys().cloned());
            steps.push(Step::Partition {
                disk: pair.new.clone(),
                old_disk: pair.old.clone(),
                table: new_table,
            });
        } else if pair.new_size_bytes != pair.old_size_bytes {
            b.note_size(
                format!("disk {}", pair.old),
                pair.old_size_bytes,
                pair.new_size_bytes,
                "whole-disk device",
            );
        }
    }
    Ok(created)
}

/// Devices above the partitions, in dependency order: an item is created
/// once every device it stands on exists. What never gets its devices is a
/// warning.
fn stack_devices(
    b: &mut Builder,
    layout: &Layout,
    created: &mut BTreeSet<String>,
    steps: &mut Vec<Step>,
) -> Result<()> {
    let mut pending_md: Vec<&MdArray> = layout.md_arrays.iter().collect();
    let mut pending_luks: Vec<&LuksDevice> = layout.luks.iter().collect();
    let mut pending_vg: Vec<&VolumeGroup> = layout.lvm.vgs.iter().collect();
    // Each round creates what stands on devices already created.
    loop {
        let mut progress = false;
        pending_md.retain(|md| {
            if !md.members.iter().all(|m| created.contains(&m.device)) {
                return true;
            }
            steps.push(plan_md(b, layout, md));
            created.insert(md.device.clone());
            progress = true;
            false
        });
        pending_luks.retain(|l| {
            if !created.contains(&l.device) {
                return true;
            }
            let (step, mapped) = plan_luks(b, l);
            steps.push(step);
            created.insert(mapped);
            progress = true;
            false
        });
        progress |= stack_vgs(b, &mut pending_vg, created, steps)?;
        if !progress {
            break;
        }
    }
    warn_not_recreated(b, &pending_md, &pending_luks, &pending_vg);
    Ok(())
}

/// An md array's step: its size follows its members' (the old per-member
/// overhead kept).
fn plan_md(b: &mut Builder, layout: &Layout, md: &MdArray) -> Step {
    let data = stack::data_disks(md);
    let old_min_member = md
        .members
        .iter()
        .map(|m| old_size_of(layout, &m.device))
        .min()
        .unwrap_or(0);
    let new_min_member = md
        .members
        .iter()
        .map(|m| b.sizes.get(&m.device).copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let overhead = old_min_member.saturating_sub(md.size_bytes / data.max(1));
    let new_size = new_min_member.saturating_sub(overhead) * data;
    b.sizes.insert(md.device.clone(), new_size);
    if new_size != md.size_bytes {
        b.note_size(
            format!("md array {}", md.device),
            md.size_bytes,
            new_size,
            "follows its members",
        );
    }
    let mut array = md.clone();
    for m in &mut array.members {
        m.device = b.new_path(&m.device);
    }
    array.size_bytes = new_size;
    Step::CreateMd { array }
}

/// A LUKS container's step and its mapped device (sized as its device less
/// the header).
fn plan_luks(b: &mut Builder, l: &LuksDevice) -> (Step, String) {
    let mapped = b.stack.luks_mapped(l);
    let name = mapped.trim_start_matches("/dev/mapper/").to_string();
    let outer = b.sizes.get(&l.device).copied().unwrap_or(0);
    b.sizes.insert(
        mapped.clone(),
        outer.saturating_sub(l.data_offset_bytes.unwrap_or(16 * MIB)),
    );
    let mut luks = l.clone();
    luks.device = b.new_path(&l.device);
    (Step::FormatLuks { luks, name }, mapped)
}

/// The steps of the volume groups whose PVs are all created; whether there
/// were any.
fn stack_vgs(
    b: &mut Builder,
    pending: &mut Vec<&VolumeGroup>,
    created: &mut BTreeSet<String>,
    steps: &mut Vec<Step>,
) -> Result<bool> {
    let mut progress = false;
    let mut vg_steps = Vec::new();
    let mut vg_err = None;
    pending.retain(|vg| {
        let pvs = b.stack.pvs_of(&vg.name);
        if !pvs.iter().all(|p| created.contains(&p.device)) {
            return true;
        }
        match plan_vg(b, vg, &pvs) {
            Ok((step, lv_devices)) => {
                vg_steps.push(step);
                created.extend(lv_devices);
            }
            Err(e) => vg_err = Some(e),
        }
        progress = true;
        false
    });
    if let Some(e) = vg_err {
        return Err(e);
    }
    steps.extend(vg_steps);
    Ok(progress)
}

/// A warning for each md array, LUKS container and VG left without a
/// place.
fn warn_not_recreated(
    b: &mut Builder,
    md: &[&MdArray],
    luks: &[&LuksDevice],
    vgs: &[&VolumeGroup],
) {
    for md in md {
        b.warnings.push(format!(
            "md array {} is not recreated: its members are not on mapped disks",
            md.device
        ));
    }
    for l in luks {
        b.warnings.push(format!(
            "LUKS container on {} is not recreated: its device is not on a mapped disk",
            l.device
        ));
    }
    for vg in vgs {
        b.warnings.push(format!(
            "volume group {} is not recreated: not all its PVs are on mapped disks",
            vg.name
        ));
    }
}

/// Mkfs and mkswap steps (and the ESP a firmware conversion adds); returns
/// the old devices of the file systems made.
fn filesystems(
    b: &mut Builder,
    layout: &Layout,
    created: &BTreeSet<String>,
    steps: &mut Vec<Step>,
) -> Result<BTreeSet<String>> {
    let mut fs_done: BTreeSet<String> = BTreeSet::new();
    for fs in &layout.filesystems {
        if !created.contains(&fs.device) {
            continue;
        }
        let recreatable = matches!(fs.fstype, FsType::Xfs | FsType::Vfat | FsType::Btrfs);
        if !recreatable && !fs.fstype.is_ext() {
            bail!(
                "file system {} on {} is {}, which lifeboat cannot recreate; exclude its disk or convert it",
                fs.uuid.as_deref().unwrap_or("?"),
                fs.device,
                fs.fstype
            );
        }
        let mut new_fs = fs.clone();
        new_fs.device = b.new_path(&fs.device);
        new_fs.size_bytes = b.sizes.get(&fs.device).copied().unwrap_or(fs.size_bytes);
        if let FsParams::Btrfs { devices, .. } = &mut new_fs.params {
            for d in devices.iter_mut() {
                *d = b.new_path(d);
            }
        }
        if let Some(min) = b.stack.fs_min(fs) {
            if new_fs.size_bytes < min {
                bail!(
                    "{} for file system {} is short by {} bytes: it holds about {} of data",
                    new_fs.device,
                    fs.mountpoints
                        .first()
                        .map(String::as_str)
                        .unwrap_or(&fs.device),
                    min - new_fs.size_bytes,
                    human_bytes(b.stack.used.get(&stack::fs_key(fs)).copied().unwrap_or(0))
                );
            }
        }
        fs_done.insert(fs.device.clone());
        steps.push(Step::Mkfs { fs: new_fs });
    }
    for swap in &layout.swaps {
        if swap.is_file || !created.contains(&swap.device) {
            continue;
        }
        let mut s = swap.clone();
        s.device = b.new_path(&swap.device);
        s.size_bytes = b
            .sizes
            .get(&swap.device)
            .copied()
            .unwrap_or(swap.size_bytes);
        steps.push(Step::Mkswap { swap: s });
    }
    if let Some(esp) = &b.landing.esp {
        steps.push(Step::Mkfs {
            fs: firmware::esp_filesystem(esp, b.landing.esp_sector),
        });
    }
    Ok(fs_done)
}

/// Partitions with nothing lifeboat knows on them come back empty: say so.
fn warn_empty_partitions(b: &mut Builder, layout: &Layout, disks: &[DiskPair]) {
    for pair in disks {
        if let Some(table) = layout
            .disk(&pair.old)
            .and_then(|d| d.partition_table.as_ref())
        {
            let devs: Vec<(String, bool)> = match table {
                PartitionTable::Gpt(g) => g
                    .partitions
                    .iter()
                    .map(|p| (p.device.clone(), p.type_guid == stack::BIOS_BOOT_GUID))
                    .collect(),
                PartitionTable::Mbr(m) => m
                    .partitions
                    .iter()
                    .filter(|p| p.kind != MbrKind::Extended)
                    .map(|p| (p.device.clone(), false))
                    .collect(),
            };
            for (d, bios_boot) in devs {
                if !bios_boot && matches!(b.stack.content(&d), Content::Nothing) {
                    b.warnings.push(format!(
                        "partition {d} is recreated empty: the layout records nothing on it"
                    ));
                }
            }
        }
    }
}

/// Mounts of the recreated file systems (and a new ESP), parents first.
fn planned_mounts(b: &Builder, layout: &Layout, fs_done: &BTreeSet<String>) -> Vec<PlannedMount> {
    let mut mounts: Vec<PlannedMount> = Vec::new();
    for m in &layout.mounts {
        let Some(fs) = layout.filesystems.iter().find(|f| {
            f.device == m.source || f.mountpoints.contains(&m.mountpoint) && f.fstype == m.fstype
        }) else {
            continue;
        };
        if !fs_done.contains(&fs.device) || mounts.iter().any(|x| x.mountpoint == m.mountpoint) {
            continue;
        }
        let mut options = Vec::new();
        if fs.fstype == FsType::Btrfs && m.root != "/" {
            options.push(format!("subvol={}", m.root.trim_start_matches('/')));
        }
        mounts.push(PlannedMount {
            device: b.new_path(&fs.device),
            mountpoint: m.mountpoint.clone(),
            fstype: fs.fstype.clone(),
            options,
        });
    }
    if let Some(esp) = &b.landing.esp {
        if !mounts.iter().any(|m| m.mountpoint == "/boot/efi") {
            mounts.push(PlannedMount {
                device: esp.device.clone(),
                mountpoint: "/boot/efi".into(),
                fstype: FsType::Vfat,
                options: Vec::new(),
            });
        }
    }
    mounts.sort_by_key(|m| {
        (
            m.mountpoint.matches('/').count() - usize::from(m.mountpoint == "/"),
            m.mountpoint.clone(),
        )
    });
    mounts
}

/// Mount, restore, configuration fixes, network, firmware conversion,
/// initramfs and bootloader: what follows the storage when the root file
/// system is recreated and a backup is restored.
fn restore_and_boot(
    b: &mut Builder,
    layout: &Layout,
    input: &PlanInput,
    disks: &[DiskPair],
    created: &BTreeSet<String>,
    mounts: Vec<PlannedMount>,
    steps: &mut Vec<Step>,
) -> Result<()> {
    let restore_from = input.backup.as_ref().filter(|_| !input.no_restore);
    if let (Some(backup), true) = (&input.backup, input.no_restore) {
        b.warnings.push(format!(
            "--no-restore: the disks are recreated empty; nothing is restored from {backup}, no bootloader"
        ));
    }
    if mounts.iter().any(|m| m.mountpoint == "/") {
        steps.push(Step::Mount { mounts });
        if let Some(backup) = restore_from {
            steps.push(Step::Restore {
                backup: backup.clone(),
            });
        }
        let replacements: Vec<(String, String)> = b
            .renames
            .iter()
            .filter(|(o, n)| o != n)
            .map(|(o, n)| (o.clone(), n.clone()))
            .collect();
        if !replacements.is_empty() {
            steps.push(Step::FixConfig { replacements });
        }
        if restore_from.is_some() {
            if let Some(step) = network_step(layout, input, &mut b.warnings)? {
                steps.push(step);
            }
            if let Some(step) =
                firmware::migrate_step(layout, &b.landing, input.backup_grub.as_deref())?
            {
                steps.push(step);
            }
            steps.push(Step::Initramfs);
            let mut bios_disks: Vec<String> = layout
                .boot
                .grub
                .iter()
                .filter(|g| g.platform == GrubPlatform::I386Pc)
                .flat_map(|g| g.disks.iter())
                .filter(|d| b.renames.contains_key(*d))
                .map(|d| b.new_path(d))
                .collect();
            let mut esps: Vec<String> = esp::esps(layout, created)
                .iter()
                .map(|e| b.new_path(e))
                .collect();
            let mut efi_entries = esp::entries(layout, &|d| b.renames.contains_key(d));
            let grub_efi = firmware::add_boot(
                layout,
                &b.landing,
                &mut bios_disks,
                &mut esps,
                &mut efi_entries,
            );
            bios_disks_on_large_sectors(disks, &esps, &mut bios_disks, &mut b.warnings);
            if !efi_entries.is_empty() && !input.uefi {
                b.warnings.push(
                    "the rescue system did not boot under UEFI: EFI boot entries cannot be written; \
                     the removable fallback path EFI/BOOT/BOOTX64.EFI will boot the system"
                        .into(),
                );
            }
            if bios_disks.is_empty() && esps.is_empty() {
                b.warnings.push(
                    "the layout records no bootloader on the mapped disks: none is installed"
                        .into(),
                );
            } else {
                steps.push(Step::Bootloader {
                    bios_disks,
                    efi_entries,
                    esps,
                    write_nvram: input.uefi,
                    grub_efi,
                });
            }
        } else if input.backup.is_none() {
            b.warnings.push(
                "no backup given: disks are recreated empty, nothing is restored, no bootloader"
                    .into(),
            );
        }
    } else {
        b.warnings.push(
            "the root file system is not among the recreated ones: nothing is mounted or restored"
                .into(),
        );
    }
    Ok(())
}

/// A backup is given but the plan does not restore all of it: nothing (no
/// file system is mounted at `/`), or not the file systems whose mount
/// points it leaves out. None with `--no-restore`.
fn restore_errors(layout: &Layout, input: &PlanInput, mounts: &[PlannedMount]) -> Vec<String> {
    let Some(backup) = input.backup.as_ref().filter(|_| !input.no_restore) else {
        return Vec::new();
    };
    let fix = "or give --no-restore to recreate the disks without restoring";
    if !mounts.iter().any(|m| m.mountpoint == "/") {
        let why = match captured_under(layout) {
            Some(root) => format!(
                "the layout's file systems are mounted under {root}, not at /: if that is where \
                 the system was mounted when the layout was saved, save it again with \
                 `lifeboat layout save --root {root}`"
            ),
            None => "the root file system is not among the recreated ones".into(),
        };
        return vec![format!(
            "the plan restores nothing from the backup {backup}: {why}; {fix}"
        )];
    }
    let left_out: Vec<&str> = input
        .backup_filesystems
        .iter()
        .filter(|mp| !mounts.iter().any(|m| &m.mountpoint == *mp))
        .map(String::as_str)
        .collect();
    if left_out.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "the plan leaves out file system{} the backup {backup} holds: {} (not among the \
         recreated and mounted ones; check --map and the layout); {fix}",
        if left_out.len() == 1 { "" } else { "s" },
        left_out.join(", ")
    )]
}

/// The folder the layout's disk file systems were mounted under when it was
/// captured without `--root` (their shortest mount point, when none is `/`
/// and all others are below it).
fn captured_under(layout: &Layout) -> Option<String> {
    let mps: Vec<&str> = layout
        .filesystems
        .iter()
        .flat_map(|f| f.mountpoints.iter().map(String::as_str))
        .filter(|m| m.starts_with('/'))
        .collect();
    if mps.contains(&"/") {
        return None;
    }
    let root = *mps.iter().min_by_key(|m| m.len())?;
    let below = |m: &&str| *m == root || m.starts_with(&format!("{root}/"));
    mps.iter().all(below).then(|| root.to_string())
}

/// The extended partition of a new MBR table: it spans the placed logical
/// partitions, with the same room before the first one as before.
fn extended_partition(
    pair: &DiskPair,
    mbr: &MbrTable,
    ext: &MbrPartition,
    placed: &[MbrPartition],
) -> MbrPartition {
    let old_sector = pair.old_sector_size.max(512) as u64;
    let new_sector = pair.new_sector_size.max(512) as u64;
    let logicals: Vec<&MbrPartition> = placed
        .iter()
        .filter(|p| p.kind == MbrKind::Logical)
        .collect();
    let old_first_logical = mbr
        .partitions
        .iter()
        .filter(|p| p.kind == MbrKind::Logical)
        .map(|p| p.first_lba)
        .min();
    let (start, end) = match (
        logicals.iter().map(|p| p.first_lba).min(),
        old_first_logical,
    ) {
        (Some(first), Some(old_first)) => {
            let lead = (old_first - ext.first_lba) * old_sector / new_sector;
            let end = logicals
                .iter()
                .map(|p| p.first_lba + p.sectors)
                .max()
                .unwrap_or(first);
            (first - lead, end)
        }
        _ => (
            ext.first_lba * old_sector / new_sector,
            (ext.first_lba + ext.sectors) * old_sector / new_sector,
        ),
    };
    MbrPartition {
        device: partition_path(&pair.new, ext.number),
        first_lba: start,
        sectors: end - start,
        size_bytes: (end - start) * new_sector,
        ..ext.clone()
    }
}

/// BIOS firmware does not boot disks with sectors larger than 512 bytes:
/// GRUB i386-pc is left off such a disk when the system boots from an ESP
/// too, and a warning says so either way.
fn bios_disks_on_large_sectors(
    disks: &[DiskPair],
    esps: &[String],
    bios_disks: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    bios_disks.retain(|d| {
        let Some(p) = disks
            .iter()
            .find(|p| &p.new == d && p.new_sector_size > 512)
        else {
            return true;
        };
        let sector = p.new_sector_size;
        if esps.is_empty() {
            warnings.push(format!(
                "{d} has {sector}-byte sectors: BIOS firmware and GRUB i386-pc rarely boot such \
                 disks; boot this machine under UEFI (--firmware uefi)"
            ));
            true
        } else {
            warnings.push(format!(
                "GRUB i386-pc is not installed on {d}: it has {sector}-byte sectors, which BIOS \
                 firmware does not boot; the system boots under UEFI from its ESP"
            ));
            false
        }
    });
}

/// The layout disk the boot loader goes on: GRUB i386-pc's first mapped
/// disk, else the disk of the first mapped ESP, else the first mapped disk.
fn boot_disk(layout: &Layout, disks: &[DiskPair]) -> Option<String> {
    let mapped = |d: &str| disks.iter().any(|p| p.old == d);
    let grub = layout
        .boot
        .grub
        .iter()
        .filter(|g| g.platform == GrubPlatform::I386Pc)
        .flat_map(|g| g.disks.iter())
        .find(|d| mapped(d))
        .cloned();
    let esp_disk = layout.boot.esps.iter().find_map(|e| {
        layout
            .disks
            .iter()
            .find(|d| mapped(&d.path) && e.starts_with(&d.path))
            .map(|d| d.path.clone())
    });
    grub.or(esp_disk)
        .or_else(|| disks.first().map(|p| p.old.clone()))
}

/// The network step: the old interfaces mapped onto the ones present; what
/// stays unmatched is a warning. `None` when the layout records none.
fn network_step(
    layout: &Layout,
    input: &PlanInput,
    warnings: &mut Vec<String>,
) -> Result<Option<Step>> {
    if layout.network.is_empty() {
        return Ok(None);
    }
    let nics = nic::map_nics(&layout.network, &input.nics, &input.nic_maps)?;
    for o in &nics.unmatched {
        warnings.push(format!(
            "network interface {} has no counterpart here: its configuration is left as it was (name one with --map-nic {}=NEW)",
            nic::describe(o),
            o.name
        ));
    }
    for n in &nics.unused {
        warnings.push(format!(
            "network interface {} here receives no old configuration",
            nic::describe(n)
        ));
    }
    // The same cards (same MACs): their configuration already fits.
    let moved = nics
        .pairs
        .iter()
        .any(|p| !p.old.mac.eq_ignore_ascii_case(&p.new.mac));
    Ok(moved.then_some(Step::Network { nics }))
}

/// The size of a device in the layout (a disk or a partition).
fn old_size_of(layout: &Layout, dev: &str) -> u64 {
    for d in &layout.disks {
        if d.path == dev {
            return d.size_bytes;
        }
        match &d.partition_table {
            Some(PartitionTable::Gpt(g)) => {
                if let Some(p) = g.partitions.iter().find(|p| p.device == dev) {
                    return p.size_bytes;
                }
            }
            Some(PartitionTable::Mbr(m)) => {
                if let Some(p) = m.partitions.iter().find(|p| p.device == dev) {
                    return p.size_bytes;
                }
            }
            None => {}
        }
    }
    layout
        .md_arrays
        .iter()
        .find(|m| m.device == dev)
        .map(|m| m.size_bytes)
        .unwrap_or(0)
}

/// Sizes a VG's LVs for its new PVs. Returns the step and the LV devices.
fn plan_vg(
    b: &mut Builder,
    vg: &VolumeGroup,
    pvs: &[&PhysicalVolume],
) -> Result<(Step, Vec<String>)> {
    let extent = vg.extent_size_bytes.max(MIB);
    let capacity =
        |size: u64, pe_start: u64| fit::align_down(size.saturating_sub(pe_start), extent);
    let old_cap: u64 = pvs
        .iter()
        .map(|p| capacity(p.dev_size_bytes.max(p.size_bytes), p.pe_start_bytes))
        .sum();
    let mut new_pvs = Vec::new();
    let mut new_cap = 0;
    for p in pvs {
        let dev_size = b
            .sizes
            .get(&p.device)
            .copied()
            .unwrap_or(p.dev_size_bytes.max(p.size_bytes));
        new_cap += capacity(dev_size, p.pe_start_bytes);
        let mut np = (*p).clone();
        np.device = b.new_path(&p.device);
        np.dev_size_bytes = dev_size;
        new_pvs.push(np);
    }
    let lvs = b.stack.lvs_of(&vg.name);
    let visible: Vec<&LogicalVolume> = lvs.iter().copied().filter(|lv| !lv.is_hidden()).collect();
    let new_lv = |lv: &LogicalVolume, size_bytes: u64| NewLv {
        lv: lv.clone(),
        size_bytes,
        placement: Placement::Free,
    };
    let mut new_lvs: Vec<NewLv> = if new_cap == old_cap {
        visible.iter().map(|lv| new_lv(lv, lv.size_bytes)).collect()
    } else {
        let sized = scale_lvs(b, vg, &lvs, &visible, (old_cap, new_cap), extent)?;
        b.note_size(
            format!("volume group {}", vg.name),
            old_cap,
            new_cap,
            "sum of its PVs",
        );
        let thin = visible.iter().filter(|lv| stack::is_thin(lv));
        sized
            .into_iter()
            .map(|(lv, size)| new_lv(lv, size))
            .chain(thin.map(|lv| new_lv(lv, lv.size_bytes)))
            .collect()
    };
    for lv in &visible {
        b.sizes.entry(lv.device.clone()).or_insert(lv.size_bytes);
    }
    let pe = vg.extent_size_bytes.max(512);
    let pairs = placement::NewPv::pair(pvs, &new_pvs, pe);
    let list: Vec<(&LogicalVolume, u64)> = new_lvs.iter().map(|l| (&l.lv, l.size_bytes)).collect();
    let (placements, notes) = placement::place(&list, &pairs, pe);
    for (l, p) in new_lvs.iter_mut().zip(placements) {
        l.placement = p;
    }
    b.warnings.extend(notes);
    let devices = new_lvs.iter().map(|l| l.lv.device.clone()).collect();
    let internal_uuids = lvs
        .iter()
        .filter(|lv| lv.is_hidden())
        .map(|lv| {
            (
                lv.name.trim_matches(['[', ']']).to_string(),
                lv.uuid.clone(),
            )
        })
        .collect();
    let step = Step::CreateVg {
        vg: vg.clone(),
        pvs: new_pvs,
        lvs: new_lvs,
        internal_uuids,
    };
    Ok((step, devices))
}

/// New sizes of a VG's sized (not thin) visible LVs when its capacity
/// changes from `caps.0` to `caps.1`: in proportion, with the VG's free
/// space, within what their contents need.
fn scale_lvs<'l>(
    b: &mut Builder,
    vg: &VolumeGroup,
    lvs: &[&'l LogicalVolume],
    visible: &[&'l LogicalVolume],
    (old_cap, new_cap): (u64, u64),
    extent: u64,
) -> Result<Vec<(&'l LogicalVolume, u64)>> {
    // Space taken by what keeps its size: hidden metadata LVs (except raid
    // images, which follow their LV) and thin volumes (virtual).
    let hidden_fixed: u64 = lvs
        .iter()
        .filter(|lv| {
            lv.is_hidden()
                && !lv.name.contains("_rimage_")
                && !lv.name.contains("_tdata")
                && !lv.name.contains("_mimage_")
        })
        .map(|lv| lv.size_bytes)
        .sum();
    let sized: Vec<&LogicalVolume> = visible
        .iter()
        .copied()
        .filter(|lv| !stack::is_thin(lv))
        .collect();
    let mut items: Vec<fit::Item> = sized
        .iter()
        .map(|lv| {
            let copies = stack::lv_copies(lv);
            let (min, fixed) = if stack::is_thin_pool(lv) {
                (b.stack.thin_pool_min(&lv.vg, lv), false)
            } else {
                b.stack.device_min(&lv.device, lv.size_bytes)
            };
            fit::Item {
                old: lv.size_bytes * copies,
                fixed: fixed || !stack::resizable_segments(lv),
                min: min * copies,
            }
        })
        .collect();
    let used_old: u64 = items.iter().map(|i| i.old).sum::<u64>() + hidden_fixed;
    // Free space in the VG scales too.
    items.push(fit::Item {
        old: old_cap.saturating_sub(used_old),
        fixed: false,
        min: 0,
    });
    let sizes = fit::scale(&items, new_cap.saturating_sub(hidden_fixed), extent).map_err(|s| {
        anyhow::anyhow!(
            "volume group {} on the new disks is short by {} bytes ({}) for its logical volumes",
            vg.name,
            s.short,
            human_bytes(s.short)
        )
    })?;
    let mut out = Vec::new();
    for (lv, footprint) in sized.iter().zip(&sizes) {
        let size = fit::align_down(footprint / stack::lv_copies(lv), extent);
        if size != lv.size_bytes {
            b.note_size(
                format!("logical volume {}/{}", lv.vg, lv.name),
                lv.size_bytes,
                size,
                "in proportion to its VG",
            );
        }
        b.sizes.insert(lv.device.clone(), size);
        out.push((*lv, size));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
