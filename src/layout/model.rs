//! The Layout: one versioned model of a machine's storage and boot setup.
//!
//! Every block device is named by its kernel path at capture time
//! (`/dev/vda1`, `/dev/md127`, `/dev/mapper/vg0-root`); objects refer to each
//! other by those paths (a PV's `device`, an md member, a file system's
//! `device`). Identities that survive a reboot or a move to new hardware
//! (serial, WWN, UUIDs, GUIDs) are what `layout diff` and disk mapping use.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::kinds::{FsType, GrubPlatform, SegType};
pub use crate::timestamp::Timestamp;

/// Major.minor version of this format. A reader accepts any minor version of
/// its own major version (unknown fields are ignored) and refuses other majors.
pub const SCHEMA_VERSION: &str = "1.1";
pub const SCHEMA_MAJOR: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Layout {
    /// Format version, `MAJOR.MINOR`.
    pub schema_version: String,
    /// Version of lifeboat that wrote the file.
    pub lifeboat_version: String,
    /// Capture time, RFC 3339 UTC.
    pub captured_at: Timestamp,
    pub host: Host,
    pub disks: Vec<Disk>,
    #[serde(default)]
    pub md_arrays: Vec<MdArray>,
    #[serde(default)]
    pub luks: Vec<LuksDevice>,
    #[serde(default)]
    pub lvm: Lvm,
    #[serde(default)]
    pub filesystems: Vec<Filesystem>,
    #[serde(default)]
    pub swaps: Vec<Swap>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub config_files: ConfigFiles,
    pub boot: Boot,
    /// Network interfaces with hardware behind them (not lo, bridges,
    /// bonds, VLANs or tunnels): matched to the new machine's after restore.
    #[serde(default)]
    pub network: Vec<NetInterface>,
    /// How the host's network was configured (addresses, routes, VLANs,
    /// bonds, bridges, DNS); absent in layouts before 1.1 and when the
    /// capture could not ask the kernel.
    #[serde(default)]
    pub network_config: Option<crate::layout::NetConfig>,
    /// What was found but cannot be recreated by this version of lifeboat.
    #[serde(default)]
    pub unsupported: Vec<Unsupported>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetInterface {
    /// Kernel name at capture time (`ens3`, `eth0`, `enp1s0f0`).
    pub name: String,
    /// Permanent MAC address, lower case (`52:54:00:12:34:56`).
    pub mac: String,
    /// Kernel driver (`virtio_net`, `e1000e`, `ixgbe`), when known.
    pub driver: Option<String>,
    /// PCI address of the device (`0000:00:03.0`), when on PCI.
    pub pci_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Host {
    pub hostname: String,
    /// `PRETTY_NAME` from /etc/os-release.
    pub os_pretty_name: Option<String>,
    /// `ID` from /etc/os-release (`debian`, `ubuntu`, `rhel`...).
    pub os_id: Option<String>,
    /// `VERSION_ID` from /etc/os-release.
    pub os_version_id: Option<String>,
    /// Machine architecture (`x86_64`).
    pub arch: String,
    /// Running kernel release (`uname -r`).
    pub kernel: String,
    pub firmware: Firmware,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Disk {
    /// Kernel name at capture time (`vda`, `sda`, `nvme0n1`).
    pub name: String,
    /// Device path at capture time (`/dev/vda`).
    pub path: String,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub rotational: bool,
    pub removable: bool,
    /// `virtio`, `sata`, `scsi`, `nvme`, `usb`, `mmc`... when known.
    pub transport: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    /// Names under /dev/disk/by-id that point at this disk.
    #[serde(default)]
    pub by_id: Vec<String>,
    /// Whether recovery must recreate this disk (it carries something the
    /// system mounts, swaps on, or stacks on).
    pub needed: bool,
    /// Why the disk is or is not needed, in words.
    pub needed_reason: String,
    pub partition_table: Option<PartitionTable>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PartitionTable {
    Gpt(GptTable),
    Mbr(MbrTable),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GptTable {
    /// Disk GUID, lower-case canonical text form.
    pub disk_guid: String,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    /// LBA of the partition entry array (usually 2).
    pub partition_entry_lba: u64,
    pub num_partition_entries: u32,
    pub partition_entry_size: u32,
    /// Damage found while reading (a primary header with a bad CRC read
    /// from the backup, a missing backup header); empty when both are good.
    #[serde(default)]
    pub problems: Vec<String>,
    pub partitions: Vec<GptPartition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GptPartition {
    /// Partition number (1-based index in the entry array).
    pub number: u32,
    /// Device path at capture time (`/dev/vda1`).
    pub device: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub size_bytes: u64,
    /// Partition type GUID (`c12a7328-f81f-11d2-ba4b-00a0c93ec93b` for an ESP).
    pub type_guid: String,
    /// Unique partition GUID (the PARTUUID).
    pub unique_guid: String,
    pub name: String,
    /// Attribute bits as stored (bit 0 required, bit 2 legacy BIOS bootable...).
    pub attributes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MbrTable {
    /// NT disk signature (the PTUUID), e.g. `0x1a2b3c4d`.
    pub disk_signature: u32,
    pub partitions: Vec<MbrPartition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MbrKind {
    Primary,
    Extended,
    Logical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MbrPartition {
    /// 1-4 for primary and extended, 5 and up for logical partitions.
    pub number: u32,
    pub device: String,
    pub kind: MbrKind,
    pub first_lba: u64,
    pub sectors: u64,
    pub size_bytes: u64,
    /// Partition type byte (0x83 Linux, 0x8e LVM, 0xfd RAID, 0x82 swap, 0xef ESP...).
    pub type_byte: u8,
    pub bootable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MdArray {
    /// Device path at capture time (`/dev/md127`).
    pub device: String,
    /// Array name from the superblock (`host:0`), when it has one.
    pub name: Option<String>,
    /// Array UUID in mdadm's notation (`xxxxxxxx:xxxxxxxx:xxxxxxxx:xxxxxxxx`).
    pub uuid: String,
    /// `raid0`, `raid1`, `raid4`, `raid5`, `raid6`, `raid10`, `linear`.
    pub level: String,
    /// Superblock format (`1.2`, `1.0`, `0.90`).
    pub metadata: String,
    pub raid_devices: u32,
    pub chunk_size_bytes: Option<u64>,
    /// Layout for raid5/6/10 (`left-symmetric`, `near=2`).
    pub layout: Option<String>,
    pub size_bytes: u64,
    pub members: Vec<MdMember>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MdMember {
    pub device: String,
    /// Slot in the array, or `None` for a spare.
    pub role: Option<u32>,
    pub spare: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LuksDevice {
    /// The device that holds the LUKS header (`/dev/vda3`).
    pub device: String,
    /// 1 or 2.
    pub version: u32,
    pub uuid: String,
    pub cipher: String,
    pub key_size_bits: u32,
    /// Hash of the key slots (LUKS1) or digest (LUKS2).
    pub hash: Option<String>,
    /// PBKDF of the first key slot (`argon2id`, `pbkdf2`).
    pub pbkdf: Option<String>,
    /// LUKS2 label and subsystem.
    pub label: Option<String>,
    pub subsystem: Option<String>,
    /// Data segment offset in bytes.
    pub data_offset_bytes: Option<u64>,
    /// Encryption sector size in bytes (LUKS2).
    pub sector_size: Option<u32>,
    /// Mapping name, from /etc/crypttab or the active mapping.
    pub mapping_name: Option<String>,
    /// `/dev/mapper/NAME` while open at capture time.
    pub mapped_device: Option<String>,
    /// File name of the header backup stored beside the layout (`--luks-headers`).
    pub header_backup: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Lvm {
    pub pvs: Vec<PhysicalVolume>,
    pub vgs: Vec<VolumeGroup>,
    pub lvs: Vec<LogicalVolume>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PhysicalVolume {
    pub device: String,
    pub uuid: String,
    /// Volume group, `None` for an orphan PV.
    pub vg: Option<String>,
    pub size_bytes: u64,
    pub dev_size_bytes: u64,
    pub pe_start_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VolumeGroup {
    pub name: String,
    pub uuid: String,
    pub extent_size_bytes: u64,
    pub size_bytes: u64,
    pub free_bytes: u64,
    /// The VG's metadata text as stored on its PVs: the text format that
    /// `vgcfgbackup` writes and `vgcfgrestore -f` reads (every LV, hidden
    /// ones included, with exact extents).
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogicalVolume {
    pub vg: String,
    pub name: String,
    pub uuid: String,
    pub size_bytes: u64,
    /// `/dev/mapper/VG-LV` (dashes in names doubled).
    pub device: String,
    /// lvm's `lv_layout` (`linear`, `striped`, `raid,raid1`, `thin,pool`, `thin,sparse`).
    pub layout: String,
    /// lvm's `lv_role` (`public`, `private,thin,pool,data`...).
    pub role: String,
    /// Thin pool of a thin volume.
    pub pool: Option<String>,
    pub active: bool,
    pub segments: Vec<LvSegment>,
}

impl LogicalVolume {
    /// One of LVM's internal sub-volumes (`pool_tdata`, `pool_tmeta`,
    /// `lvol0_pmspare`, `lv_rimage_0`...), which LVM creates by itself with
    /// the LV it belongs to. LVM also calls a thin or cache pool `private`,
    /// but an admin creates a pool by name: it is not hidden.
    pub fn is_hidden(&self) -> bool {
        self.name.starts_with('[')
            || (self.role.split(',').any(|r| r == "private") && !self.is_pool())
    }

    /// A thin or cache pool.
    pub fn is_pool(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s.segtype, SegType::ThinPool | SegType::CachePool))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LvSegment {
    /// `linear`, `striped`, `raid1`, `raid5`, `thin-pool`, `thin`, `mirror`...
    pub segtype: SegType,
    pub start_bytes: u64,
    pub size_bytes: u64,
    pub stripes: u32,
    pub stripe_size_bytes: Option<u64>,
    /// Devices (PVs with extent ranges, or sub-LVs) as lvm prints them.
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Filesystem {
    /// The device the file system is on (first device for multi-device btrfs).
    pub device: String,
    /// `ext2`, `ext3`, `ext4`, `xfs`, `vfat`, `btrfs`...
    pub fstype: FsType,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub size_bytes: u64,
    /// Used bytes at capture time, when the file system was mounted.
    pub used_bytes: Option<u64>,
    /// Where it was mounted at capture time.
    #[serde(default)]
    pub mountpoints: Vec<String>,
    pub params: FsParams,
}

/// The mkfs parameters that recovery repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FsParams {
    Ext {
        block_size: u32,
        inode_size: u32,
        /// Enabled features as `dumpe2fs -h` lists them.
        features: Vec<String>,
        reserved_blocks_percent: f64,
        inode_count: u64,
    },
    Xfs {
        block_size: u32,
        sector_size: u32,
        crc: bool,
        reflink: bool,
        ftype: bool,
        /// Log size in bytes when internal.
        log_size_bytes: Option<u64>,
    },
    Vfat {
        /// Volume serial as 8 hex digits (what blkid calls the UUID, without the dash).
        serial: String,
        /// 12, 16 or 32.
        fat_size: u32,
        sector_size: u32,
    },
    Btrfs {
        /// Every device of the file system.
        devices: Vec<String>,
        data_profile: Option<String>,
        metadata_profile: Option<String>,
        subvolumes: Vec<BtrfsSubvolume>,
        /// Subvolume id of the default subvolume (5 is the top level).
        default_subvolume_id: u64,
    },
    Other {},
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BtrfsSubvolume {
    pub id: u64,
    pub parent_id: u64,
    /// Path relative to the top level.
    pub path: String,
    pub uuid: Option<String>,
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Swap {
    /// Block device, or the path of a swap file.
    pub device: String,
    pub is_file: bool,
    pub uuid: Option<String>,
    pub label: Option<String>,
    pub size_bytes: u64,
    /// Active at capture time.
    pub active: bool,
    pub priority: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Mount {
    pub mountpoint: String,
    /// Source device as the kernel shows it (`/dev/mapper/vg0-root`).
    pub source: String,
    pub fstype: FsType,
    /// Per-mount options (`rw,relatime`).
    pub options: String,
    /// Super block options (`rw,errors=remount-ro`).
    pub fs_options: String,
    /// Root of the mount inside its file system (`/` or a btrfs subvolume path).
    pub root: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigFiles {
    pub fstab: Vec<FstabEntry>,
    pub crypttab: Vec<CrypttabEntry>,
    pub mdadm_conf: Vec<MdadmConfArray>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FstabEntry {
    pub spec: String,
    pub file: String,
    pub vfstype: FsType,
    pub options: String,
    pub freq: u32,
    pub passno: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CrypttabEntry {
    pub name: String,
    pub device: String,
    pub keyfile: Option<String>,
    pub options: Option<String>,
}

/// One `ARRAY` line of mdadm.conf.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MdadmConfArray {
    pub device: Option<String>,
    pub uuid: Option<String>,
    pub name: Option<String>,
    pub metadata: Option<String>,
    /// The line as written.
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Boot {
    pub firmware: Firmware,
    /// GRUB platforms installed, with the disks for i386-pc.
    pub grub: Vec<GrubTarget>,
    /// EFI system partitions (devices).
    pub esps: Vec<String>,
    pub efi_entries: Vec<EfiBootEntry>,
    /// `BootOrder` as four-digit hex numbers.
    pub boot_order: Vec<String>,
    pub boot_current: Option<String>,
    pub shim: bool,
    pub systemd_boot: bool,
    pub kernel_cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GrubTarget {
    /// `i386-pc` or `x86_64-efi`.
    pub platform: GrubPlatform,
    /// Disks GRUB's boot code is installed on (i386-pc).
    pub disks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EfiBootEntry {
    /// Four hex digits (`0003`).
    pub number: String,
    pub label: String,
    pub active: bool,
    /// GPT unique GUID of the partition the loader is on.
    pub partition_guid: Option<String>,
    /// Loader path inside that partition (`\EFI\debian\shimx64.efi`).
    pub loader: Option<String>,
    /// The device path as efibootmgr prints it.
    pub device_path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Unsupported {
    /// What was met (`zfs`, `multipath`, `bcache`, `dm-integrity`, `drbd`, `nbd`...).
    pub kind: String,
    pub device: Option<String>,
    pub reason: String,
}
