//! Capturing the Layout of the running system.
//!
//! [`capture`] reads sysfs, /proc and the devices themselves (partition
//! tables, ext/vfat/btrfs superblocks and LUKS headers are parsed here), and
//! runs each external tool as few times as it can: one `blkid` for the
//! leaves of the device tree, one `lvm fullreport` for all of LVM (the VG metadata
//! text is read from the PVs), one `mdadm` per array, one `xfs_db` per xfs file system,
//! three `btrfs` calls per mounted btrfs; LVM and the per-object calls run
//! in parallel threads. It needs no udev: identities come from sysfs and
//! blkid, not /dev/disk/by-*.

pub mod blkid;
pub mod boot;
mod bootsetup;
mod ctx;
mod disks;
mod filesystems;
pub mod fs;
mod host;
pub mod luks;
pub mod lvm;
pub mod md;
pub mod mounts;
mod needed;
pub mod net;
pub mod netcfg;
pub mod ptable;
mod storage;
pub mod sysfs;
mod unsupported;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::layout::*;
use bootsetup::collect_boot;
use ctx::{prefetch, read_opt, Ctx};
use disks::{collect_disks, select_disks};
use filesystems::{collect_filesystems, collect_mounts, collect_swaps};
use host::collect_host;
use needed::mark_needed;
use storage::{collect_luks, collect_lvm, collect_md};
use sysfs::{DevKind, Devices};
use unsupported::check_unsupported;

/// The label of the file system that carries unattended rescue jobs.
pub const JOB_LABEL: &str = "LIFEBOAT-AUTO";

/// What to capture and where to read it from.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Prefix of /sys, /proc, /dev, /etc and /boot: `/` on a live system, a
    /// fixture tree in tests. Device paths in the layout never carry it.
    pub root: PathBuf,
    /// Capture only these disks (`/dev/vda`, `vda`) and what is built on
    /// them; empty means every disk. Naming a loop device here is how image
    /// files are captured.
    pub devices: Vec<String>,
    /// Disks to mark needed whatever was found (path, name, serial, WWN).
    pub include_disks: Vec<String>,
    /// Disks to mark not needed whatever was found.
    pub exclude_disks: Vec<String>,
    /// Paths of backup destinations: the disks that hold them are not needed.
    pub backup_destinations: Vec<PathBuf>,
    /// Where to write LUKS header backups (`--luks-headers`); `None` for none.
    pub luks_header_dir: Option<PathBuf>,
    /// The system to describe is mounted here rather than at `/` (captured
    /// from a rescue shell): only mounts at or below it count, their mount
    /// points are recorded relative to it, and /etc and /boot are read
    /// from it.
    pub system_root: Option<PathBuf>,
}

impl CaptureOptions {
    /// A path of the described system's own files (`etc/fstab`).
    pub fn system_file(&self, rel: &str) -> PathBuf {
        match &self.system_root {
            Some(r) => r.join(rel),
            None => self.root.join(rel),
        }
    }
}

/// Keeps the mounts at or below `root` and makes their mount points
/// relative to it (`/mnt/sys/home` → `/home`).
fn under_system_root(mountinfo: Vec<mounts::MountInfo>, root: &Path) -> Vec<mounts::MountInfo> {
    let root = root.to_string_lossy().trim_end_matches('/').to_string();
    mountinfo
        .into_iter()
        .filter_map(|mut m| {
            let rel = if m.mountpoint == root {
                "/".to_string()
            } else {
                m.mountpoint.strip_prefix(&format!("{root}/"))?.to_string()
            };
            m.mountpoint = if rel.starts_with('/') {
                rel
            } else {
                format!("/{rel}")
            };
            Some(m)
        })
        .collect()
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            root: PathBuf::from("/"),
            devices: Vec::new(),
            include_disks: Vec::new(),
            exclude_disks: Vec::new(),
            backup_destinations: Vec::new(),
            luks_header_dir: None,
            system_root: None,
        }
    }
}

/// Captures the layout of the running system (or of the tree under
/// `opts.root`). Tools are run only for what sysfs shows: no LVM call on a
/// machine without PVs, no mdadm without arrays.
pub fn capture(opts: &CaptureOptions) -> Result<Layout> {
    let (mut ctx, disks) = read_system(opts)?;
    let active_swaps =
        mounts::parse_swaps(&read_opt(&opts.root.join("proc/swaps")).unwrap_or_default());
    let early_lvm = probe_devices(&mut ctx, &active_swaps)?;
    check_unsupported(&mut ctx);
    let mounts = collect_mounts(&ctx);
    let swaps = collect_swaps(&ctx, &active_swaps, &mounts);
    prefetch(&ctx, &mounts);
    let md_arrays = collect_md(&mut ctx)?;
    let config_files = read_config_files(opts);
    let luks = collect_luks(&ctx, &config_files.crypttab)?;
    let lvm = collect_lvm(&mut ctx, early_lvm)?;
    let filesystems = collect_filesystems(&ctx, &mounts)?;
    let mut disk_list = collect_disks(&ctx, &disks)?;
    mark_needed(&ctx, &mut disk_list, &mounts, &swaps)?;
    let firmware = if ctx.sys.join("firmware/efi").is_dir() {
        Firmware::Uefi
    } else {
        Firmware::Bios
    };
    let boot = collect_boot(&ctx, firmware, &disk_list, &filesystems)?;
    let network = net::interfaces(&ctx.sys);
    Ok(Layout {
        schema_version: SCHEMA_VERSION.into(),
        lifeboat_version: crate::VERSION.into(),
        captured_at: Timestamp::now(),
        host: collect_host(opts, firmware),
        disks: disk_list,
        md_arrays,
        luks,
        lvm,
        filesystems,
        swaps,
        mounts,
        config_files,
        boot,
        network_config: netcfg::capture(opts, &network),
        network,
        unsupported: ctx.unsupported,
    })
}

/// Reads sysfs and the mount table: the devices, the disks to capture and
/// everything built on them (the scope).
fn read_system(opts: &CaptureOptions) -> Result<(Ctx<'_>, Vec<String>)> {
    let sys = opts.root.join("sys");
    let devs = Devices::new(sysfs::scan(&sys)?);
    let disks = select_disks(&devs, &opts.devices)?;
    let mut scope = BTreeSet::new();
    for d in &disks {
        scope.extend(devs.upper_closure(d));
    }
    let mut mountinfo = mounts::parse_mountinfo(
        &read_opt(&opts.root.join("proc/self/mountinfo")).unwrap_or_default(),
    );
    if let Some(sr) = &opts.system_root {
        mountinfo = under_system_root(mountinfo, sr);
    }
    let ctx = Ctx {
        opts,
        sys,
        devs,
        scope,
        probes: BTreeMap::new(),
        mountinfo,
        unsupported: Vec::new(),
        outputs: Default::default(),
    };
    Ok((ctx, disks))
}

/// One blkid for the leaves of the device tree in scope (by kernel name:
/// devtmpfs always has those nodes) and every active swap file. Devices
/// with holders (md members, PVs and LUKS under dm) are described by the
/// tools of their stack, and partitioned disks by their partition table.
/// LVM starts alongside when sysfs already shows logical volumes: its job
/// is returned for [`collect_lvm`].
fn probe_devices(ctx: &mut Ctx, swaps: &[mounts::ActiveSwap]) -> Result<Option<lvm::LvmJob>> {
    let mut paths: Vec<String> = ctx
        .scoped()
        .filter(|b| b.holders.is_empty() && !ctx.devs.has_partitions(&b.name))
        .map(|b| sysfs::dev_path(&b.name))
        .collect();
    paths.extend(
        swaps
            .iter()
            .filter(|s| s.is_file)
            .map(|s| s.filename.clone()),
    );
    let lvm_in_sysfs = ctx.opts.root == Path::new("/")
        && ctx
            .scoped()
            .any(|b| matches!(&b.kind, DevKind::Dm { uuid, .. } if uuid.starts_with("LVM-")));
    let early_lvm = if lvm_in_sysfs {
        Some(lvm::LvmJob::start()?)
    } else {
        None
    };
    for (path, mut p) in blkid::probe_all(&paths, &ctx.opts.root)? {
        let key = ctx.canonical(&path);
        p.devname = key.clone();
        ctx.probes.insert(key, p);
    }
    Ok(early_lvm)
}

/// The described system's fstab, crypttab and mdadm.conf.
fn read_config_files(opts: &CaptureOptions) -> ConfigFiles {
    let read = |rel: &str| read_opt(&opts.system_file(rel));
    ConfigFiles {
        fstab: mounts::parse_fstab(&read("etc/fstab").unwrap_or_default()),
        crypttab: mounts::parse_crypttab(&read("etc/crypttab").unwrap_or_default()),
        mdadm_conf: mounts::parse_mdadm_conf(
            &read("etc/mdadm/mdadm.conf")
                .or_else(|| read("etc/mdadm.conf"))
                .unwrap_or_default(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::filesystems::mount_of;
    use super::unsupported::{unsupported_dm, unsupported_name, unsupported_signature};
    use super::*;

    #[test]
    fn mounts_under_a_system_root_become_relative() {
        let text = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    30 22 254:0 / /mnt/sys rw - ext4 /dev/mapper/vg-root rw\n\
                    31 30 254:1 / /mnt/sys/home rw - xfs /dev/mapper/vg-home rw\n\
                    32 22 254:2 / /mnt/system2 rw - xfs /dev/vdc rw\n";
        let got = under_system_root(mounts::parse_mountinfo(text), Path::new("/mnt/sys/"));
        let mps: Vec<&str> = got.iter().map(|m| m.mountpoint.as_str()).collect();
        assert_eq!(mps, ["/", "/home"]);
    }

    #[test]
    fn unsupported_kinds_by_dm_uuid_and_name() {
        assert_eq!(unsupported_dm("LVM-abc"), None);
        assert_eq!(unsupported_dm("CRYPT-LUKS2-abc-x"), None);
        assert_eq!(unsupported_dm("mpath-3600").unwrap().0, "multipath");
        assert_eq!(unsupported_dm("CRYPT-PLAIN-x").unwrap().0, "dm-crypt");
        assert_eq!(unsupported_dm("").unwrap().0, "device-mapper");
        assert_eq!(unsupported_name("bcache0").unwrap().0, "bcache");
        assert_eq!(unsupported_name("nbd3").unwrap().0, "nbd");
        assert_eq!(unsupported_name("drbd1").unwrap().0, "drbd");
        assert_eq!(unsupported_name("vda"), None);
        assert_eq!(unsupported_signature("zfs_member").unwrap().0, "zfs");
        assert_eq!(
            unsupported_signature("isw_raid_member").unwrap().0,
            "fakeraid"
        );
        assert_eq!(unsupported_signature("linux_raid_member"), None);
    }

    #[test]
    fn mount_of_picks_the_longest_prefix() {
        let m = |mp: &str| Mount {
            mountpoint: mp.into(),
            source: format!("dev{mp}"),
            fstype: "ext4".into(),
            options: String::new(),
            fs_options: String::new(),
            root: "/".into(),
        };
        let mounts = vec![m("/"), m("/srv"), m("/srv/home")];
        assert_eq!(
            mount_of(&mounts, "/srv/home/x").unwrap().mountpoint,
            "/srv/home"
        );
        assert_eq!(mount_of(&mounts, "/srvx").unwrap().mountpoint, "/");
        assert_eq!(mount_of(&mounts, "/srv").unwrap().mountpoint, "/srv");
    }

    /// The guest fixture tree as a capture root: sysfs, mountinfo, swaps,
    /// fstab and efivars are real; /dev is empty, so blkid finds nothing
    /// and no stack tool runs. What sysfs and /proc alone give is checked.
    #[test]
    fn capture_on_the_guest_fixture_tree() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guest/sysroot");
        let opts = CaptureOptions {
            root: root.clone(),
            ..CaptureOptions::default()
        };
        let l = capture(&opts).unwrap();
        let names: Vec<&str> = l.disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["vda", "vdb", "vdc", "vdd", "vde", "vdf"]);
        let vdc = &l.disks[2];
        assert_eq!(vdc.serial.as_deref(), Some("LBTEST02"));
        assert_eq!(vdc.size_bytes, 512 << 20);
        // mounted stacks make the disks under them needed
        let needed: Vec<(&str, bool)> = l
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.needed))
            .collect();
        assert_eq!(
            needed,
            vec![
                ("vda", true),
                ("vdb", true),
                ("vdc", true),
                ("vdd", true),
                ("vde", true),
                ("vdf", false)
            ],
            "without blkid results the job disk is not recognised: it is mounted"
        );
        assert!(
            l.disks[0].needed_reason.contains("/mnt/sys/boot/efi"),
            "{}",
            l.disks[0].needed_reason
        );
        assert!(
            l.disks[2].needed_reason.contains("swap /dev/vdc2"),
            "{}",
            l.disks[2].needed_reason
        );
        let mps: Vec<&str> = l.mounts.iter().map(|m| m.mountpoint.as_str()).collect();
        assert!(mps.contains(&"/mnt/sys/with space"), "{mps:?}");
        assert!(!mps.contains(&"/proc"));
        let stripe = l
            .mounts
            .iter()
            .find(|m| m.mountpoint == "/mnt/sys/with space")
            .unwrap();
        assert_eq!(stripe.source, "/dev/mapper/vg1-stripe");
        let btrfs = l
            .mounts
            .iter()
            .find(|m| m.mountpoint == "/mnt/sys/srv/home")
            .unwrap();
        assert_eq!(
            btrfs.source, "/dev/vda3",
            "an anonymous st_dev resolves by source"
        );
        assert_eq!(l.boot.firmware, Firmware::Uefi);
        assert_eq!(l.boot.boot_order, vec!["0001", "0000"]);
        assert_eq!(l.config_files.fstab.len(), 12);
        let active: Vec<(&str, bool)> = l
            .swaps
            .iter()
            .map(|s| (s.device.as_str(), s.is_file))
            .collect();
        assert_eq!(
            active,
            vec![
                ("/dev/mapper/vg0-swap", false),
                ("/dev/vdc2", false),
                ("/mnt/sys/swapfile", true)
            ]
        );
        // restricted to one disk
        let one = capture(&CaptureOptions {
            root: root.clone(),
            devices: vec!["/dev/vdc".into()],
            ..CaptureOptions::default()
        })
        .unwrap();
        assert_eq!(one.disks.len(), 1);
        assert!(
            one.mounts
                .iter()
                .all(|m| m.source == "/dev/mapper/vg1-stripe"),
            "{:?}",
            one.mounts
        );
        let err = capture(&CaptureOptions {
            root: root.clone(),
            devices: vec!["/dev/vdz".into()],
            ..CaptureOptions::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("no disk /dev/vdz; the disks here are: /dev/vda"),
            "{err}"
        );
        let err = capture(&CaptureOptions {
            root,
            exclude_disks: vec!["LBTEST09".into()],
            ..CaptureOptions::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("--include-disk/--exclude-disk LBTEST09: no such disk"),
            "{err}"
        );
    }
}
