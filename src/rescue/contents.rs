//! What goes into the rescue image: programs, dlopen'ed libraries, kernel
//! modules, and what a given layout adds to them.

use std::collections::BTreeSet;
use std::path::Path;

use crate::layout::{FsParams, Layout};

/// Programs every recovery runs, whatever the layout.
pub const BASE_PROGRAMS: &[&str] = &[
    "blkid", "wipefs", "sfdisk", "partx", "zstd", "tar", "modprobe",
];

/// Programs recovery cannot do without when the machine's layout is not
/// known; a missing one is an error. With a layout, [`needed_programs`]
/// requires only what it uses and ships the rest when the host has them.
pub const REQUIRED_PROGRAMS: &[&str] = &[
    "lvm",
    "dmsetup",
    "mdadm",
    "cryptsetup",
    "mkfs.ext4",
    "mkfs.xfs",
    "mkfs.vfat",
    "mkfs.btrfs",
    "btrfs",
    "mkswap",
    "blkid",
    "wipefs",
    "sfdisk",
    "partx",
    "sgdisk",
    "efibootmgr",
    "zstd",
    "tar",
    "modprobe",
];

/// Programs shipped when the host has them: repair, inspection, network
/// file systems.
pub const OPTIONAL_PROGRAMS: &[&str] = &[
    "kmod",
    "insmod",
    "rmmod",
    "lsmod",
    "modinfo",
    "depmod",
    "mke2fs",
    "e2fsck",
    "fsck.ext4",
    "resize2fs",
    "tune2fs",
    "dumpe2fs",
    "debugfs",
    "e2label",
    "xfs_admin",
    "xfs_db",
    "xfs_repair",
    "xfs_growfs",
    // xfs_info is a script: xfs_spaceman for a mounted file system, xfs_db
    // for an unmounted one; xfs_admin calls xfs_db and xfs_repair.
    "xfs_info",
    "xfs_spaceman",
    "xfs_io",
    "fsck.vfat",
    "fatlabel",
    "btrfstune",
    "mount",
    "umount",
    "swapon",
    "swapoff",
    "losetup",
    "blockdev",
    "lsblk",
    "findmnt",
    "fdisk",
    "gdisk",
    "parted",
    "partprobe",
    "mount.nfs",
    "mount.cifs",
    "getfacl",
    "setfacl",
    "getfattr",
    "setfattr",
    "fsfreeze",
    // iproute2: VLANs, bonds and bridges at boot (busybox's ip makes none
    // of them), `ip -json` for the addresses shown
    "ip",
    // thin-provisioning-tools: LVM checks a thin or cache pool's metadata
    // with these when it activates the pool.
    "thin_check",
    "thin_repair",
    "thin_dump",
    "thin_restore",
    "cache_check",
    "cache_repair",
];

/// LVM commands: links to `lvm` in the image.
pub const LVM_COMMANDS: &[&str] = &[
    "pvcreate",
    "pvs",
    "pvscan",
    "pvdisplay",
    "pvremove",
    "pvresize",
    "vgcreate",
    "vgs",
    "vgscan",
    "vgchange",
    "vgdisplay",
    "vgcfgbackup",
    "vgcfgrestore",
    "vgremove",
    "vgextend",
    "lvcreate",
    "lvs",
    "lvscan",
    "lvchange",
    "lvdisplay",
    "lvextend",
    "lvreduce",
    "lvresize",
    "lvremove",
];

/// The programs recovering `layout` needs: [`BASE_PROGRAMS`], then mdadm
/// for md arrays, cryptsetup for LUKS, lvm for LVM, dmsetup for either,
/// the mkfs of each file system type, mkswap for swap, efibootmgr and
/// mkfs.vfat for a UEFI boot. Each is one of [`REQUIRED_PROGRAMS`].
pub fn needed_programs(layout: &Layout) -> BTreeSet<&'static str> {
    let mut need: BTreeSet<&'static str> = BASE_PROGRAMS.iter().copied().collect();
    if !layout.md_arrays.is_empty() {
        need.insert("mdadm");
    }
    if !layout.luks.is_empty() {
        need.extend(["cryptsetup", "dmsetup"]);
    }
    let lvm = &layout.lvm;
    if !(lvm.pvs.is_empty() && lvm.vgs.is_empty() && lvm.lvs.is_empty()) {
        need.extend(["lvm", "dmsetup"]);
    }
    if !layout.swaps.is_empty() {
        need.insert("mkswap");
    }
    for fs in &layout.filesystems {
        let progs: &[&'static str] = match fs.fstype.as_str() {
            "ext2" | "ext3" | "ext4" => &["mkfs.ext4"],
            "xfs" => &["mkfs.xfs"],
            "vfat" | "msdos" => &["mkfs.vfat"],
            "btrfs" => &["mkfs.btrfs", "btrfs"],
            "swap" => &["mkswap"],
            _ => &[],
        };
        need.extend(progs);
    }
    if layout.boot.firmware == crate::layout::Firmware::Uefi {
        need.extend(["efibootmgr", "mkfs.vfat"]);
    }
    need
}

/// The programs a build requires (a missing one is an error) and those it
/// ships when the host has them: with a layout, what it needs is required
/// and the rest of [`REQUIRED_PROGRAMS`] optional; without one, all of them
/// are required.
pub fn program_lists(layout: Option<&Layout>) -> (Vec<String>, Vec<String>) {
    let (required, mut optional): (Vec<String>, Vec<String>) = match layout {
        None => (
            REQUIRED_PROGRAMS.iter().map(|p| p.to_string()).collect(),
            Vec::new(),
        ),
        Some(l) => {
            let need = needed_programs(l);
            REQUIRED_PROGRAMS
                .iter()
                .map(|p| p.to_string())
                .partition(|p| need.contains(p.as_str()))
        }
    };
    optional.extend(OPTIONAL_PROGRAMS.iter().map(|p| p.to_string()));
    (required, optional)
}

/// Libraries that programs load with dlopen, so that no ELF dependency names
/// them: libgcc_s (thread cancellation in glibc), NSS modules.
pub const DLOPEN_LIBRARIES: &[&str] = &["libgcc_s.so.1", "libnss_files.so.2", "libnss_dns.so.2"];

/// Host files copied as they are when present (tool configuration; nothing
/// secret).
pub const HOST_FILES: &[&str] = &["/etc/mke2fs.conf", "/etc/protocols", "/etc/services"];

/// Modules loaded at boot. Everything else loads on demand: drivers by the
/// modalias of the hardware found, file systems, md personalities,
/// device-mapper targets and ciphers through the kernel's request_module.
/// (Loading btrfs or raid456 eagerly costs seconds: raid6_pq benchmarks.)
pub const LOAD_AT_BOOT: &[&str] = &[
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "md_mod",
    "dm_mod",
    "loop",
    "efivarfs",
    "sd_mod",
    "sr_mod",
    "usb_storage",
    "uas",
    "usbhid",
    "hid_generic",
    "af_packet",
];

/// Modules the image always carries when the kernel has them.
pub const OPTIONAL_MODULES: &[&str] = &[
    // disk controllers: virtual, NVMe, SATA/ATA, SAS/RAID HBAs, USB, MMC
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "virtio_console",
    "nvme",
    "ahci",
    "ata_piix",
    "ata_generic",
    "pata_acpi",
    "sd_mod",
    "sr_mod",
    "sg",
    "megaraid_sas",
    "mpt3sas",
    "mptsas",
    "mptspi",
    "hpsa",
    "smartpqi",
    "aacraid",
    "vmw_pvscsi",
    "hv_storvsc",
    "hv_vmbus",
    "xen_blkfront",
    "isci",
    "mvsas",
    "usb_storage",
    "uas",
    "xhci_pci",
    "xhci_hcd",
    "ehci_pci",
    "ehci_hcd",
    "ohci_pci",
    "uhci_hcd",
    "mmc_block",
    "sdhci_pci",
    "sdhci_acpi",
    "cdrom",
    "loop",
    "usbhid",
    "hid_generic",
    // file systems
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
    "nls_iso8859_1",
    "isofs",
    "squashfs",
    "overlay",
    "fuse",
    "efivarfs",
    "nfs",
    "nfsv3",
    "nfsv4",
    "cifs",
    "9p",
    "9pnet_virtio",
    // md and device-mapper
    "md_mod",
    "linear",
    "raid0",
    "raid1",
    "raid10",
    "raid456",
    "dm_mod",
    "dm_crypt",
    "dm_raid",
    "dm_thin_pool",
    "dm_snapshot",
    "dm_mirror",
    "dm_zero",
    "dm_cache",
    "dm_integrity",
    "dm_bufio",
    "dm_persistent_data",
    // crypto for LUKS and file system checksums
    "aesni_intel",
    "aes_generic",
    "xts",
    "cbc",
    "ecb",
    "essiv",
    "sha256_ssse3",
    "sha256_generic",
    "sha512_ssse3",
    "sha512_generic",
    "xxhash_generic",
    "blake2b_generic",
    "crc32c_intel",
    "crc32c_generic",
    "crc32_pclmul",
    "af_alg",
    "algif_skcipher",
    "algif_hash",
    "cryptd",
    "serpent_generic",
    "twofish_generic",
    // network cards common in servers and virtual machines
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "tg3",
    "bnx2",
    "bnxt_en",
    "r8169",
    "vmxnet3",
    "hv_netvsc",
    "xen_netfront",
    "ena",
    "af_packet",
    // VLANs, bonds and bridges of the captured network configuration
    "8021q",
    "bonding",
    "bridge",
];

/// Modules that are required because the kernel could not read the job disk
/// or the usual root file systems without them.
pub const REQUIRED_MODULES: &[&str] = &["ext4"];

/// Modules a layout needs beyond the defaults, in two lists: required (the
/// image is useless for this machine without them) and optional.
pub fn layout_modules(layout: &Layout) -> (Vec<String>, Vec<String>) {
    let mut required = BTreeSet::new();
    let mut optional = BTreeSet::new();
    for fs in &layout.filesystems {
        let module = match fs.fstype.as_str() {
            "ext2" | "ext3" | "ext4" => "ext4",
            "vfat" | "msdos" => "vfat",
            "swap" => continue,
            other => other,
        };
        required.insert(module.to_string());
        if let FsParams::Vfat { .. } = fs.params {
            optional.extend(["nls_cp437", "nls_ascii"].map(String::from));
        }
    }
    for md in &layout.md_arrays {
        let module = match md.level.as_str() {
            "raid4" | "raid5" | "raid6" => "raid456",
            "linear" => "linear",
            other => other,
        };
        required.insert(module.to_string());
    }
    if !layout.luks.is_empty() {
        required.insert("dm_crypt".into());
        for l in &layout.luks {
            // aes-xts-plain64 → xts; serpent-cbc-essiv:sha256 → serpent, cbc, essiv
            for part in l.cipher.split(['-', ':']) {
                match part {
                    "aes" => optional.extend(["aesni_intel", "aes_generic"].map(String::from)),
                    "xts" | "cbc" | "ecb" | "essiv" | "lrw" => {
                        optional.insert(part.to_string());
                    }
                    "serpent" | "twofish" => {
                        optional.insert(format!("{part}_generic"));
                    }
                    _ => {}
                }
            }
        }
    }
    if !layout.lvm.lvs.is_empty() {
        required.insert("dm_mod".into());
    }
    for lv in &layout.lvm.lvs {
        for seg in &lv.segments {
            let module = match seg.segtype.as_str() {
                "thin" | "thin-pool" => "dm_thin_pool",
                s if s.starts_with("raid") => "dm_raid",
                "mirror" => "dm_mirror",
                "cache" | "cache-pool" => "dm_cache",
                "snapshot" => "dm_snapshot",
                _ => continue,
            };
            required.insert(module.to_string());
        }
    }
    (
        required.into_iter().collect(),
        optional.into_iter().collect(),
    )
}

/// Drivers (as module names) of the host's disks: every `driver/module` link
/// from the disk's device up to the root of the device tree.
pub fn disk_driver_modules(sys: &Path, layout: &Layout) -> Vec<String> {
    let names: Vec<String> = layout.disks.iter().map(|d| d.name.clone()).collect();
    crate::layout::probe::sysfs::driver_modules(sys, &names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Firmware, MdArray};

    /// The layout captured from the Debian 12 test guest: LVM, ext4, XFS,
    /// an ESP (vfat), swap, UEFI; no md, no LUKS, no btrfs.
    fn debian12() -> Layout {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debian12-layout.json");
        Layout::load(&p).unwrap()
    }

    fn required(l: Option<&Layout>) -> Vec<String> {
        program_lists(l).0
    }

    #[test]
    fn a_layout_requires_only_the_tools_it_uses() {
        let l = debian12();
        let need = needed_programs(&l);
        for t in [
            "lvm",
            "dmsetup",
            "mkfs.ext4",
            "mkfs.xfs",
            "mkfs.vfat",
            "mkswap",
            "efibootmgr",
        ] {
            assert!(need.contains(t), "{t} not required");
        }
        for t in ["mdadm", "cryptsetup", "mkfs.btrfs", "btrfs", "sgdisk"] {
            assert!(!need.contains(t), "{t} required without a use");
        }
        // What is not required is still shipped when the host has it.
        let (req, opt) = program_lists(Some(&l));
        for t in ["mdadm", "cryptsetup", "mkfs.btrfs"] {
            assert!(
                opt.iter().any(|o| o == t) && !req.iter().any(|r| r == t),
                "{t}"
            );
        }
        // Every needed tool is one the full list names (a package hint).
        for t in &need {
            assert!(REQUIRED_PROGRAMS.contains(t), "{t}");
        }
    }

    #[test]
    fn md_luks_btrfs_and_bios_change_the_list() {
        let mut l = crate::layout::tests::minimal();
        l.boot.firmware = Firmware::Bios;
        let need = needed_programs(&l);
        let base: BTreeSet<&str> = BASE_PROGRAMS.iter().copied().collect();
        assert_eq!(need, base, "an empty BIOS layout needs only the base");

        l.md_arrays.push(MdArray {
            device: "/dev/md0".into(),
            name: None,
            uuid: "aaaaaaaa:bbbbbbbb:cccccccc:dddddddd".into(),
            level: "raid1".into(),
            metadata: "1.2".into(),
            raid_devices: 2,
            chunk_size_bytes: None,
            layout: None,
            size_bytes: 1 << 30,
            members: vec![],
        });
        l.luks
            .push(crate::layout::probe::luks::empty_device(2, "u".into()));
        let mut fs = debian12().filesystems[1].clone();
        fs.fstype = "btrfs".into();
        l.filesystems.push(fs);
        let need = needed_programs(&l);
        for t in ["mdadm", "cryptsetup", "dmsetup", "mkfs.btrfs", "btrfs"] {
            assert!(need.contains(t), "{t} not required");
        }
        for t in ["lvm", "mkfs.xfs", "efibootmgr", "mkfs.vfat", "mkswap"] {
            assert!(!need.contains(t), "{t} required without a use");
        }
    }

    #[test]
    fn without_a_layout_everything_is_required() {
        let all: Vec<String> = REQUIRED_PROGRAMS.iter().map(|p| p.to_string()).collect();
        assert_eq!(required(None), all);
        assert!(required(Some(&debian12())).len() < all.len());
    }
}
