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
pub mod fs;
pub mod luks;
pub mod lvm;
pub mod md;
pub mod mounts;
pub mod net;
pub mod ptable;
pub mod sysfs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exec::Cmd;
use crate::layout::*;
use sysfs::{BlockDev, DevKind, Devices};

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

/// File systems whose parameters lifeboat knows; other signatures are still
/// recorded as file systems with `FsParams::Other`.
const NOT_FILESYSTEMS: &[&str] = &["swap", "LVM2_member", "linux_raid_member", "crypto_LUKS"];

/// Signatures of storage that lifeboat cannot recreate, with the reason.
fn unsupported_signature(fstype: &str) -> Option<(&'static str, &'static str)> {
    Some(match fstype {
        "zfs_member" => (
            "zfs",
            "ZFS pools are not supported; recreate the pool by hand",
        ),
        "bcache" => ("bcache", "bcache devices are not supported"),
        "drbd" => ("drbd", "DRBD devices are not supported"),
        "ceph" => ("ceph", "Ceph OSD devices are not supported"),
        "VMFS" | "vmfs_volume_member" => ("vmfs", "VMware file systems are not supported"),
        t if t.ends_with("_raid_member") && t != "linux_raid_member" => (
            "fakeraid",
            "firmware (fake) RAID metadata is not supported; use md with native metadata",
        ),
        _ => return None,
    })
}

/// What the unsupported dm target of a dm uuid is, if it is one.
fn unsupported_dm(uuid: &str) -> Option<(&'static str, &'static str)> {
    if uuid.starts_with("LVM-")
        || uuid.starts_with("CRYPT-LUKS1-")
        || uuid.starts_with("CRYPT-LUKS2-")
    {
        return None;
    }
    Some(if uuid.starts_with("mpath-") {
        (
            "multipath",
            "multipath devices are not supported; lifeboat sees the paths as separate disks",
        )
    } else if uuid.starts_with("CRYPT-INTEGRITY") || uuid.starts_with("INTEGRITY-") {
        ("dm-integrity", "dm-integrity devices are not supported")
    } else if uuid.starts_with("CRYPT-PLAIN") || uuid.starts_with("CRYPT-") {
        (
            "dm-crypt",
            "dm-crypt without a LUKS header cannot be recreated from the disk",
        )
    } else if uuid.starts_with("VDO-") {
        ("vdo", "VDO volumes are not supported")
    } else if uuid.starts_with("part") {
        (
            "dm-partition",
            "partitions of a device-mapper device (kpartx) are not supported",
        )
    } else {
        (
            "device-mapper",
            "a device-mapper device that is not LVM or LUKS; lifeboat cannot recreate it",
        )
    })
}

/// Kernel names of block devices that are unsupported stacks by name.
fn unsupported_name(name: &str) -> Option<(&'static str, &'static str)> {
    let num = |p: &str| {
        name.strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
    };
    Some(if num("bcache") {
        ("bcache", "bcache devices are not supported")
    } else if num("drbd") {
        ("drbd", "DRBD devices are not supported")
    } else if num("nbd") {
        ("nbd", "network block devices are not supported")
    } else if num("rbd") {
        ("rbd", "Ceph RBD devices are not supported")
    } else if num("zd") {
        ("zfs", "ZFS volumes are not supported")
    } else {
        return None;
    })
}

/// LVM segment types recovery cannot recreate yet.
fn unsupported_segtype(segtype: &str) -> bool {
    matches!(
        segtype,
        "cache" | "cache-pool" | "writecache" | "vdo" | "vdo-pool" | "integrity"
    )
}

/// Everything `capture` has read, shared by its steps.
struct Ctx<'a> {
    opts: &'a CaptureOptions,
    sys: PathBuf,
    devs: Devices,
    /// Kernel names of the devices in scope.
    scope: BTreeSet<String>,
    probes: BTreeMap<String, blkid::Probe>,
    mountinfo: Vec<mounts::MountInfo>,
    unsupported: Vec<Unsupported>,
    /// Outputs of the commands run in parallel by [`prefetch`], by key.
    outputs: std::cell::RefCell<BTreeMap<String, Result<String>>>,
}

impl Ctx<'_> {
    /// The output of `cmd`: prefetched under `key`, or run now.
    fn output(&self, key: &str, cmd: impl FnOnce() -> Cmd) -> Result<String> {
        match self.outputs.borrow_mut().remove(key) {
            Some(out) => out,
            None => cmd().read(),
        }
    }

    /// Whether `b` holds a LUKS header: blkid says so, or it is open (a
    /// dm-crypt holder with a LUKS uuid; blkid does not probe devices with
    /// holders).
    fn is_luks(&self, b: &BlockDev) -> bool {
        self.probe(b).and_then(|p| p.fstype.as_deref()) == Some("crypto_LUKS")
            || b.holders.iter().any(|h| {
                matches!(self.devs.by_name(h).map(|d| &d.kind),
                    Some(DevKind::Dm { uuid, .. }) if uuid.starts_with("CRYPT-LUKS1-") || uuid.starts_with("CRYPT-LUKS2-"))
            })
    }

    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(blkid::prefixed(&self.opts.root, p))
    }

    /// Where a mount point of the described system is in this one.
    fn mnt(&self, mountpoint: &str) -> PathBuf {
        match &self.opts.system_root {
            Some(r) => r.join(mountpoint.trim_start_matches('/')),
            None => self.path(mountpoint),
        }
    }

    fn dev_root(&self) -> PathBuf {
        self.opts.root.join("dev")
    }

    fn canonical(&self, p: &str) -> String {
        self.devs.canonical(p, &self.dev_root())
    }

    fn probe(&self, b: &BlockDev) -> Option<&blkid::Probe> {
        self.probes.get(&b.path)
    }

    /// Whether the device node exists under the root; warns when not (a
    /// fixture tree without /dev, or a broken /dev).
    fn node_exists(&self, b: &BlockDev) -> bool {
        let p = self.path(&sysfs::dev_path(&b.name));
        let ok = p.exists();
        if !ok {
            log::warn!("no device node {}: {} is not probed", p.display(), b.path);
        }
        ok
    }

    fn in_scope(&self, b: &BlockDev) -> bool {
        self.scope.contains(&b.name)
    }

    fn scoped(&self) -> impl Iterator<Item = &BlockDev> {
        self.devs
            .list
            .iter()
            .filter(|b| self.scope.contains(&b.name))
    }

    /// The block device a mount is on (st_dev, else its source path).
    fn mount_device(&self, m: &mounts::MountInfo) -> Option<&BlockDev> {
        if m.devnum.0 != 0 {
            if let Some(b) = self.devs.by_devnum(m.devnum) {
                return Some(b);
            }
        }
        if m.source.starts_with("/dev/") {
            return self.devs.resolve(&m.source, &self.dev_root());
        }
        None
    }

    fn unsupported(&mut self, kind: &str, device: Option<String>, reason: &str) {
        if self
            .unsupported
            .iter()
            .any(|u| u.kind == kind && u.device == device)
        {
            return;
        }
        log::warn!(
            "not supported: {kind}{}: {reason}",
            device
                .as_deref()
                .map(|d| format!(" on {d}"))
                .unwrap_or_default()
        );
        self.unsupported.push(Unsupported {
            kind: kind.to_string(),
            device,
            reason: reason.to_string(),
        });
    }
}

fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Captures the layout of the running system (or of the tree under
/// `opts.root`). Tools are run only for what sysfs shows: no LVM call on a
/// machine without PVs, no mdadm without arrays.
pub fn capture(opts: &CaptureOptions) -> Result<Layout> {
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
    let swaps = mounts::parse_swaps(&read_opt(&opts.root.join("proc/swaps")).unwrap_or_default());
    let mut ctx = Ctx {
        opts,
        sys,
        devs,
        scope,
        probes: BTreeMap::new(),
        mountinfo,
        unsupported: Vec::new(),
        outputs: Default::default(),
    };

    // One blkid for the leaves of the device tree in scope (by kernel name:
    // devtmpfs always has those nodes) and every active swap file. Devices
    // with holders (md members, PVs and LUKS under dm) are described by the
    // tools of their stack, and partitioned disks by their partition table.
    // LVM runs alongside when sysfs already shows logical volumes.
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
    let lvm_in_sysfs = opts.root == Path::new("/")
        && ctx
            .scoped()
            .any(|b| matches!(&b.kind, DevKind::Dm { uuid, .. } if uuid.starts_with("LVM-")));
    let early_lvm = if lvm_in_sysfs {
        Some(lvm::LvmJob::start()?)
    } else {
        None
    };
    for (path, mut p) in blkid::probe_all(&paths, &opts.root)? {
        let key = ctx.canonical(&path);
        p.devname = key.clone();
        ctx.probes.insert(key, p);
    }

    check_unsupported(&mut ctx);
    let mounts = collect_mounts(&ctx);
    let swaps = collect_swaps(&ctx, &swaps, &mounts);
    prefetch(&ctx, &mounts);
    let md_arrays = collect_md(&mut ctx)?;
    let config_files = ConfigFiles {
        fstab: mounts::parse_fstab(&read_opt(&opts.system_file("etc/fstab")).unwrap_or_default()),
        crypttab: mounts::parse_crypttab(
            &read_opt(&opts.system_file("etc/crypttab")).unwrap_or_default(),
        ),
        mdadm_conf: mounts::parse_mdadm_conf(
            &read_opt(&opts.system_file("etc/mdadm/mdadm.conf"))
                .or_else(|| read_opt(&opts.system_file("etc/mdadm.conf")))
                .unwrap_or_default(),
        ),
    };
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
    let host = collect_host(opts, firmware);

    Ok(Layout {
        schema_version: SCHEMA_VERSION.into(),
        lifeboat_version: crate::VERSION.into(),
        captured_at: crate::util::rfc3339(crate::util::now_epoch()),
        host,
        disks: disk_list,
        md_arrays,
        luks,
        lvm,
        filesystems,
        swaps,
        mounts,
        config_files,
        boot,
        network: net::interfaces(&ctx.sys),
        unsupported: ctx.unsupported,
    })
}

/// Keys of the commands [`prefetch`] runs.
fn md_key(b: &BlockDev) -> String {
    format!("mdadm {}", b.path)
}
fn luks_key(b: &BlockDev) -> String {
    format!("luksDump {}", b.path)
}
fn xfs_key(b: &BlockDev) -> String {
    format!("xfs_db {}", b.path)
}
fn btrfs_keys(mp: &str) -> [String; 3] {
    [
        format!("btrfs list {mp}"),
        format!("btrfs list -r {mp}"),
        format!("btrfs get-default {mp}"),
    ]
}

fn md_cmd(ctx: &Ctx, b: &BlockDev) -> Cmd {
    Cmd::new("mdadm")
        .args(["--detail", "--export"])
        .arg(blkid::prefixed(&ctx.opts.root, &sysfs::dev_path(&b.name)))
}
fn luks_cmd(ctx: &Ctx, b: &BlockDev) -> Cmd {
    Cmd::new("cryptsetup")
        .arg("luksDump")
        .arg(blkid::prefixed(&ctx.opts.root, &sysfs::dev_path(&b.name)))
}
fn xfs_cmd(ctx: &Ctx, b: &BlockDev) -> Cmd {
    Cmd::new("xfs_db")
        .args(["-r", "-c", "info"])
        .arg(blkid::prefixed(&ctx.opts.root, &sysfs::dev_path(&b.name)))
}

/// The first mount point of the btrfs with this UUID.
fn btrfs_mountpoint(ctx: &Ctx, mounts: &[Mount], uuid: &str) -> Option<String> {
    mounts
        .iter()
        .find(|m| {
            ctx.probes.get(&m.source).is_some_and(|p| {
                p.fstype.as_deref() == Some("btrfs") && p.uuid.as_deref() == Some(uuid)
            })
        })
        .map(|m| m.mountpoint.clone())
}

/// Runs the per-object tool calls (mdadm, cryptsetup, xfs_db, btrfs) side
/// by side, each in its own thread; their collectors read the outputs.
fn prefetch(ctx: &Ctx, mounts: &[Mount]) {
    let mut cmds: Vec<(String, Cmd)> = Vec::new();
    let mut btrfs_done = BTreeSet::new();
    for b in ctx.scoped() {
        let node = ctx.path(&sysfs::dev_path(&b.name)).exists();
        if !node {
            continue;
        }
        if b.kind == DevKind::Md && b.size_bytes > 0 {
            cmds.push((md_key(b), md_cmd(ctx, b)));
        }
        if ctx.is_luks(b) && luks::read_header(&ctx.path(&sysfs::dev_path(&b.name))).is_err() {
            cmds.push((luks_key(b), luks_cmd(ctx, b)));
        }
        let Some(p) = ctx.probe(b) else { continue };
        match p.fstype.as_deref() {
            Some("xfs") => cmds.push((xfs_key(b), xfs_cmd(ctx, b))),
            Some("btrfs") => {
                let uuid = p.uuid.clone().unwrap_or_default();
                if !btrfs_done.insert(uuid.clone()) {
                    continue;
                }
                if let Some(mp) = btrfs_mountpoint(ctx, mounts, &uuid) {
                    let mnt = ctx.mnt(&mp);
                    let [k1, k2, k3] = btrfs_keys(&mp);
                    let [c1, c2, c3] = fs::btrfs_cmds(&mnt);
                    cmds.extend([(k1, c1), (k2, c2), (k3, c3)]);
                }
            }
            _ => {}
        }
    }
    let results: Vec<(String, Result<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = cmds
            .into_iter()
            .map(|(k, c)| (k, s.spawn(move || c.read())))
            .collect();
        handles
            .into_iter()
            .map(|(k, h)| {
                let out = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread running {k} panicked")));
                (k, out)
            })
            .collect()
    });
    ctx.outputs.borrow_mut().extend(results);
}

/// The disks to capture: the named ones, or every disk with a size.
fn select_disks(devs: &Devices, wanted: &[String]) -> Result<Vec<String>> {
    let all: Vec<&BlockDev> = devs
        .list
        .iter()
        .filter(|b| b.kind == DevKind::Disk && b.size_bytes > 0)
        .collect();
    if wanted.is_empty() {
        return Ok(all.iter().map(|b| b.name.clone()).collect());
    }
    let mut out = Vec::new();
    for w in wanted {
        let name = w.strip_prefix("/dev/").unwrap_or(w);
        match devs.by_name(name) {
            Some(b) if matches!(b.kind, DevKind::Disk | DevKind::Loop { .. }) => out.push(b.name.clone()),
            Some(_) => bail!("{w} is not a whole disk; name disks such as /dev/vda, not partitions or mapped devices"),
            None => bail!(
                "no disk {w}; the disks here are: {}",
                all.iter().map(|b| b.path.as_str()).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    Ok(out)
}

fn check_unsupported(ctx: &mut Ctx) {
    let mut found = Vec::new();
    for b in ctx.scoped() {
        if let DevKind::Dm { uuid, .. } = &b.kind {
            if let Some((k, r)) = unsupported_dm(uuid) {
                found.push((k, Some(b.path.clone()), r));
            }
        }
        if let Some((k, r)) = unsupported_name(&b.name) {
            found.push((k, Some(b.path.clone()), r));
        }
        if let Some((k, r)) = ctx
            .probe(b)
            .and_then(|p| p.fstype.as_deref())
            .and_then(unsupported_signature)
        {
            found.push((k, Some(b.path.clone()), r));
        }
    }
    for m in &ctx.mountinfo {
        if m.fstype == "zfs" {
            found.push((
                "zfs",
                Some(m.source.clone()),
                "ZFS pools are not supported; recreate the pool by hand",
            ));
        }
    }
    for (k, d, r) in found {
        ctx.unsupported(k, d, r);
    }
}

/// Mount types that are not storage (kept out of the layout).
fn is_network_fs(fstype: &str) -> bool {
    matches!(
        fstype,
        "nfs" | "nfs4" | "cifs" | "smb3" | "glusterfs" | "ceph" | "9p"
    )
}

fn collect_mounts(ctx: &Ctx) -> Vec<Mount> {
    let restricted = !ctx.opts.devices.is_empty();
    ctx.mountinfo
        .iter()
        .filter_map(|m| {
            let source = match ctx.mount_device(m) {
                Some(b) if ctx.in_scope(b) => b.path.clone(),
                Some(_) => return None,
                None if !restricted && is_network_fs(&m.fstype) => m.source.clone(),
                None => return None,
            };
            Some(Mount {
                mountpoint: m.mountpoint.clone(),
                source,
                fstype: m.fstype.clone(),
                options: m.options.clone(),
                fs_options: m.fs_options.clone(),
                root: m.root.clone(),
            })
        })
        .collect()
}

/// The mount that holds `path` (longest mount point prefix).
fn mount_of<'m>(mounts: &'m [Mount], path: &str) -> Option<&'m Mount> {
    mounts
        .iter()
        .filter(|m| {
            path == m.mountpoint
                || m.mountpoint == "/"
                || path.starts_with(&format!("{}/", m.mountpoint))
        })
        .max_by_key(|m| m.mountpoint.len())
}

fn collect_swaps(ctx: &Ctx, active: &[mounts::ActiveSwap], mounts: &[Mount]) -> Vec<Swap> {
    let mut out = Vec::new();
    for s in active {
        if s.is_file {
            if mount_of(mounts, &s.filename).is_none() {
                continue;
            }
            let probe = ctx.probes.get(&s.filename);
            let size = std::fs::metadata(ctx.path(&s.filename))
                .map(|m| m.len())
                .unwrap_or(s.size_bytes);
            out.push(Swap {
                device: s.filename.clone(),
                is_file: true,
                uuid: probe.and_then(|p| p.uuid.clone()),
                label: probe.and_then(|p| p.label.clone()),
                size_bytes: size,
                active: true,
                priority: Some(s.priority),
            });
            continue;
        }
        let Some(b) = ctx.devs.resolve(&s.filename, &ctx.dev_root()) else {
            continue;
        };
        if !ctx.in_scope(b) {
            continue;
        }
        let probe = ctx.probe(b);
        out.push(Swap {
            device: b.path.clone(),
            is_file: false,
            uuid: probe.and_then(|p| p.uuid.clone()),
            label: probe.and_then(|p| p.label.clone()),
            size_bytes: b.size_bytes,
            active: true,
            priority: Some(s.priority),
        });
    }
    // Swap areas that are not active now.
    for b in ctx.scoped() {
        let Some(p) = ctx.probe(b) else { continue };
        if p.fstype.as_deref() == Some("swap") && !out.iter().any(|s| s.device == b.path) {
            out.push(Swap {
                device: b.path.clone(),
                is_file: false,
                uuid: p.uuid.clone(),
                label: p.label.clone(),
                size_bytes: b.size_bytes,
                active: false,
                priority: None,
            });
        }
    }
    out
}

fn collect_md(ctx: &mut Ctx) -> Result<Vec<MdArray>> {
    let arrays: Vec<BlockDev> = ctx
        .scoped()
        .filter(|b| b.kind == DevKind::Md)
        .cloned()
        .collect();
    let mut out = Vec::new();
    for b in arrays {
        let meta = std::fs::read_to_string(
            ctx.sys
                .join("block")
                .join(&b.name)
                .join("md/metadata_version"),
        )
        .unwrap_or_default();
        if meta.trim().starts_with("external") {
            ctx.unsupported(
                "md-external-metadata",
                Some(b.path.clone()),
                "md arrays with external (IMSM/DDF) metadata are not supported",
            );
            continue;
        }
        if b.size_bytes == 0 {
            continue; // an inactive array
        }
        if !ctx.node_exists(&b) {
            continue;
        }
        let text = ctx
            .output(&md_key(&b), || md_cmd(ctx, &b))
            .with_context(|| format!("reading md array {}", b.path))?;
        let detail = md::parse_detail_export(&text);
        let dir = ctx.sys.join("block").join(&b.name);
        let canon = |p: &str| ctx.canonical(p);
        out.push(md::array(&b.path, b.size_bytes, &detail, &dir, &canon));
    }
    Ok(out)
}

/// Whether a crypttab/fstab device spec names `dev` (a path, UUID=,
/// PARTUUID=, LABEL=, or a /dev/disk/by-* link).
fn spec_names(ctx: &Ctx, spec: &str, dev: &BlockDev) -> bool {
    let probe = ctx.probe(dev);
    let eq = |a: Option<&String>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
    if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        return eq(probe.and_then(|p| p.uuid.as_ref()), u.trim_matches('"'));
    }
    if let Some(u) = spec
        .strip_prefix("PARTUUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partuuid/"))
    {
        return eq(
            probe.and_then(|p| p.part_entry_uuid.as_ref()),
            u.trim_matches('"'),
        );
    }
    if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        return probe.and_then(|p| p.label.as_deref()) == Some(l.trim_matches('"'));
    }
    ctx.devs
        .resolve(spec, &ctx.dev_root())
        .is_some_and(|b| b.name == dev.name)
}

fn collect_luks(ctx: &Ctx, crypttab: &[CrypttabEntry]) -> Result<Vec<LuksDevice>> {
    let mut out = Vec::new();
    for b in ctx.scoped() {
        if !ctx.is_luks(b) || !ctx.node_exists(b) {
            continue;
        }
        let dev = blkid::prefixed(&ctx.opts.root, &sysfs::dev_path(&b.name));
        let mut l = match luks::read_header(Path::new(&dev)) {
            Ok(l) => l,
            Err(e) => {
                log::debug!("{e:#}; asking cryptsetup");
                let text = ctx
                    .output(&luks_key(b), || luks_cmd(ctx, b))
                    .with_context(|| format!("reading the LUKS header of {}", b.path))?;
                luks::parse_dump(&text).with_context(|| format!("LUKS header of {}", b.path))?
            }
        };
        l.device = b.path.clone();
        // The active mapping: a dm holder whose uuid names this LUKS uuid.
        for h in &b.holders {
            if let Some(hb) = ctx.devs.by_name(h) {
                if let DevKind::Dm { uuid, name } = &hb.kind {
                    if luks::mapping_from_dm_uuid(uuid, &l.uuid).is_some() {
                        l.mapping_name = Some(name.clone());
                        l.mapped_device = Some(hb.path.clone());
                    }
                }
            }
        }
        let names_uuid = |spec: &str| {
            spec.strip_prefix("UUID=")
                .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
                .is_some_and(|u| u.trim_matches('"').eq_ignore_ascii_case(&l.uuid))
        };
        if let Some(entry) = crypttab
            .iter()
            .find(|e| names_uuid(&e.device) || spec_names(ctx, &e.device, b))
        {
            l.mapping_name = Some(entry.name.clone());
        }
        if let Some(dir) = &ctx.opts.luks_header_dir {
            l.header_backup = Some(backup_luks_header(&dev, &l.uuid, dir)?);
        }
        out.push(l);
    }
    Ok(out)
}

/// `cryptsetup luksHeaderBackup` into `dir/luks-header-UUID.img`, mode 0600;
/// returns the file name. cryptsetup writes into a private folder of its own
/// (mode 0700, unpredictable name) and the result is renamed over.
fn backup_luks_header(dev: &str, uuid: &str, dir: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let name = format!("luks-header-{uuid}.img");
    crate::names::component("LUKS header backup", &name)
        .with_context(|| format!("LUKS UUID of {dev}"))?;
    let dest = dir.join(&name);
    let work = tempfile::Builder::new()
        .prefix(".luks-header.")
        .tempdir_in(dir)
        .with_context(|| format!("creating a temporary folder in {}", dir.display()))?;
    let tmp = work.path().join(&name);
    Cmd::new("cryptsetup")
        .args(["luksHeaderBackup", dev, "--header-backup-file"])
        .arg(&tmp)
        .run()
        .with_context(|| format!("backing up the LUKS header of {dev}"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok(name)
}

fn collect_lvm(ctx: &mut Ctx, early: Option<lvm::LvmJob>) -> Result<Lvm> {
    let any = ctx.scoped().any(|b| {
        matches!(&b.kind, DevKind::Dm { uuid, .. } if uuid.starts_with("LVM-"))
            || ctx.probe(b).and_then(|p| p.fstype.as_deref()) == Some("LVM2_member")
    });
    // lvm scans the system's own /dev: it cannot read a fixture tree.
    let job = match early {
        Some(job) => job,
        None if any && ctx.opts.root == Path::new("/") => lvm::LvmJob::start()?,
        None => return Ok(Lvm::default()),
    };
    let canon = |p: &str| ctx.canonical(p);
    let node = |p: &str| match ctx.devs.resolve(p, &ctx.dev_root()) {
        Some(b) => ctx.path(&sysfs::dev_path(&b.name)),
        None => ctx.path(p),
    };
    let mut lvm = job.finish(&canon, &node).context("reading LVM")?;
    // Keep what sits on the captured disks.
    let in_scope = |dev: &str| {
        ctx.devs
            .resolve(dev, &ctx.dev_root())
            .is_some_and(|b| ctx.in_scope(b))
    };
    lvm.pvs.retain(|p| in_scope(&p.device));
    let vgs: BTreeSet<String> = lvm.pvs.iter().filter_map(|p| p.vg.clone()).collect();
    lvm.vgs.retain(|v| vgs.contains(&v.name));
    lvm.lvs.retain(|l| vgs.contains(&l.vg));
    let odd: Vec<(String, String)> = lvm
        .lvs
        .iter()
        .flat_map(|l| {
            l.segments
                .iter()
                .filter(|s| unsupported_segtype(&s.segtype))
                .map(move |s| (s.segtype.clone(), format!("{}/{}", l.vg, l.name)))
        })
        .collect();
    for (segtype, lv) in odd {
        ctx.unsupported(
            &format!("lvm-{segtype}"),
            Some(lv),
            &format!("LVM {segtype} volumes cannot be recreated yet"),
        );
    }
    Ok(lvm)
}

fn collect_filesystems(ctx: &Ctx, mounts: &[Mount]) -> Result<Vec<Filesystem>> {
    let mut out: Vec<Filesystem> = Vec::new();
    let mut btrfs_seen: BTreeSet<String> = BTreeSet::new();
    for b in ctx.scoped() {
        let Some(p) = ctx.probe(b) else { continue };
        let Some(fstype) = p.fstype.clone() else {
            continue;
        };
        if NOT_FILESYSTEMS.contains(&fstype.as_str()) || unsupported_signature(&fstype).is_some() {
            continue;
        }
        let dev = ctx.path(&sysfs::dev_path(&b.name));
        let mut mountpoints: Vec<String> = mounts
            .iter()
            .filter(|m| m.source == b.path)
            .map(|m| m.mountpoint.clone())
            .collect();
        let (params, size) = match fstype.as_str() {
            "ext2" | "ext3" | "ext4" => {
                let e = fs::read_ext(&dev)?;
                (e.params, e.size_bytes)
            }
            "xfs" => {
                let text = ctx
                    .output(&xfs_key(b), || xfs_cmd(ctx, b))
                    .with_context(|| format!("reading the xfs parameters of {}", b.path))?;
                fs::parse_xfs_info(&text).with_context(|| format!("xfs_db info {}", b.path))?
            }
            "vfat" => fs::read_fat(&dev)?,
            "btrfs" => {
                let uuid = p.uuid.clone().unwrap_or_default();
                if !btrfs_seen.insert(uuid.clone()) {
                    continue; // another device of a file system already recorded
                }
                let devices: Vec<&BlockDev> = ctx
                    .scoped()
                    .filter(|d| {
                        ctx.probe(d).is_some_and(|q| {
                            q.fstype.as_deref() == Some("btrfs") && q.uuid.as_deref() == Some(&uuid)
                        })
                    })
                    .collect();
                mountpoints = mounts
                    .iter()
                    .filter(|m| devices.iter().any(|d| d.path == m.source))
                    .map(|m| m.mountpoint.clone())
                    .collect();
                let (size, _used) = fs::read_btrfs_super(&dev)?;
                let (subvolumes, default) = match mountpoints.first() {
                    Some(_) => {
                        let mp = btrfs_mountpoint(ctx, mounts, &uuid).unwrap_or_default();
                        let mnt = ctx.mnt(&mp);
                        let [k1, k2, k3] = btrfs_keys(&mp);
                        let [c1, c2, c3] = fs::btrfs_cmds(&mnt);
                        let list = ctx.output(&k1, || c1);
                        let ro = ctx.output(&k2, || c2);
                        let def = ctx.output(&k3, || c3);
                        fs::btrfs_subvolumes(&mnt, list?, ro?, def?).with_context(|| {
                            format!("listing the btrfs subvolumes of {}", b.path)
                        })?
                    }
                    None => {
                        log::warn!("btrfs on {} is not mounted: its subvolumes are not recorded; mount it and capture again", b.path);
                        (Vec::new(), 5)
                    }
                };
                let (data, meta) = fs::btrfs_profiles(&ctx.sys, &uuid);
                (
                    FsParams::Btrfs {
                        devices: devices.iter().map(|d| d.path.clone()).collect(),
                        data_profile: data,
                        metadata_profile: meta,
                        subvolumes,
                        default_subvolume_id: default,
                    },
                    size,
                )
            }
            _ => (FsParams::Other {}, p.fssize.unwrap_or(b.size_bytes)),
        };
        let used = mountpoints
            .first()
            .and_then(|mp| fs::statvfs_usage(&ctx.mnt(mp)))
            .map(|(_, used)| used)
            .or_else(|| match (&params, fstype.as_str()) {
                (FsParams::Btrfs { .. }, _) => fs::read_btrfs_super(&dev).ok().map(|(_, u)| u),
                _ => None,
            });
        out.push(Filesystem {
            device: b.path.clone(),
            fstype,
            uuid: p.uuid.clone(),
            label: p.label.clone(),
            size_bytes: size,
            used_bytes: used,
            mountpoints,
            params,
        });
    }
    Ok(out)
}

fn collect_disks(ctx: &Ctx, disks: &[String]) -> Result<Vec<Disk>> {
    let by_id_dir = ctx.dev_root().join("disk/by-id");
    let by_id_links: Vec<(String, String)> = std::fs::read_dir(&by_id_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let target = std::fs::read_link(e.path()).ok()?;
                    let t = target.file_name()?.to_string_lossy().into_owned();
                    Some((e.file_name().to_string_lossy().into_owned(), t))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for name in disks {
        let b = ctx.devs.by_name(name).expect("selected disks exist");
        let info = sysfs::disk_info(&ctx.sys, b);
        let probe = ctx.probe(b);
        // A whole-disk file system or PV has no partition table.
        let whole_disk_signature = probe.is_some_and(|p| p.fstype.is_some() && p.pttype.is_none());
        let table = if whole_disk_signature {
            None
        } else {
            let path = ctx.path(&sysfs::dev_path(&b.name));
            if ctx.node_exists(b) {
                ptable::read_path(&path, Some(info.logical_sector_size))?
            } else {
                None
            }
        };
        let table = table.map(|t| name_partitions(ctx, b, t));
        if let Some(PartitionTable::Gpt(g)) = &table {
            for p in &g.problems {
                log::warn!("{}: {p}", b.path);
            }
        }
        let mut by_id: Vec<String> = by_id_links
            .iter()
            .filter(|(_, t)| t == name)
            .map(|(l, _)| l.clone())
            .collect();
        by_id.sort();
        out.push(Disk {
            name: b.name.clone(),
            path: b.path.clone(),
            size_bytes: b.size_bytes,
            logical_sector_size: info.logical_sector_size,
            physical_sector_size: info.physical_sector_size,
            rotational: info.rotational,
            removable: info.removable,
            transport: info.transport,
            model: info.model,
            serial: info.serial,
            wwn: info.wwn,
            by_id,
            needed: false,
            needed_reason: String::new(),
            partition_table: table,
        });
    }
    Ok(out)
}

/// Fills the `device` of each partition from sysfs (or the kernel's naming
/// rule when the partition has no node).
fn name_partitions(ctx: &Ctx, disk: &BlockDev, mut t: PartitionTable) -> PartitionTable {
    let name_of = |n: u32| {
        ctx.devs
            .list
            .iter()
            .find(|p| matches!(&p.kind, DevKind::Partition { disk: d, number } if *d == disk.name && *number == n))
            .map(|p| p.path.clone())
            .unwrap_or_else(|| {
                let sep = if disk.name.ends_with(|c: char| c.is_ascii_digit()) { "p" } else { "" };
                format!("{}{sep}{n}", disk.path)
            })
    };
    match &mut t {
        PartitionTable::Gpt(g) => g
            .partitions
            .iter_mut()
            .for_each(|p| p.device = name_of(p.number)),
        PartitionTable::Mbr(m) => m
            .partitions
            .iter_mut()
            .for_each(|p| p.device = name_of(p.number)),
    }
    t
}

/// Whether recovery must recreate each disk, and why.
fn mark_needed(ctx: &Ctx, disks: &mut [Disk], mounts: &[Mount], swaps: &[Swap]) -> Result<()> {
    // What each disk carries that the system uses: mount points and swap.
    let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut add = |dev: &str, what: String| {
        if let Some(b) = ctx.devs.resolve(dev, &ctx.dev_root()) {
            for d in ctx.devs.disks_under(&b.name) {
                uses.entry(d).or_default().push(what.clone());
            }
        }
    };
    for m in mounts {
        add(&m.source, m.mountpoint.clone());
    }
    for s in swaps.iter().filter(|s| s.active) {
        if s.is_file {
            if let Some(m) = mount_of(mounts, &s.device) {
                add(&m.source, format!("swap file {}", s.device));
            }
        } else {
            add(&s.device, format!("swap {}", s.device));
        }
    }
    // Disks that carry the job file system or a backup destination.
    let mut never: BTreeMap<String, String> = BTreeMap::new();
    for b in ctx.scoped() {
        if ctx.probe(b).and_then(|p| p.label.as_deref()) == Some(JOB_LABEL) {
            for d in ctx.devs.disks_under(&b.name) {
                never.insert(d, format!("carries the {JOB_LABEL} job file system"));
            }
        }
    }
    for dest in &ctx.opts.backup_destinations {
        let dest_s = dest.to_string_lossy();
        // Every mount, in scope or not: the destination may be anywhere.
        let found = ctx
            .mountinfo
            .iter()
            .filter(|m| {
                dest_s == m.mountpoint
                    || m.mountpoint == "/"
                    || dest_s.starts_with(&format!("{}/", m.mountpoint))
            })
            .max_by_key(|m| m.mountpoint.len());
        if let Some(b) = found.and_then(|m| ctx.mount_device(m)) {
            for d in ctx.devs.disks_under(&b.name) {
                never.insert(d, format!("holds the backup destination {dest_s}"));
            }
        }
    }
    let matches = |d: &Disk, w: &str| {
        let w = w.trim();
        d.path == w
            || d.name == w
            || d.serial.as_deref() == Some(w)
            || d.wwn.as_deref() == Some(w)
            || d.by_id
                .iter()
                .any(|i| i == w || format!("/dev/disk/by-id/{i}") == w)
    };
    for w in ctx.opts.include_disks.iter().chain(&ctx.opts.exclude_disks) {
        if !disks.iter().any(|d| matches(d, w)) {
            bail!(
                "--include-disk/--exclude-disk {w}: no such disk; the disks are: {}",
                disks
                    .iter()
                    .map(|d| d.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    for d in disks.iter_mut() {
        let inc = ctx.opts.include_disks.iter().any(|w| matches(d, w));
        let exc = ctx.opts.exclude_disks.iter().any(|w| matches(d, w));
        (d.needed, d.needed_reason) = if inc && exc {
            bail!(
                "{} is named by both --include-disk and --exclude-disk",
                d.path
            );
        } else if inc {
            (true, "included with --include-disk".to_string())
        } else if exc {
            (false, "excluded with --exclude-disk".to_string())
        } else if let Some(why) = never.get(&d.name) {
            (false, why.clone())
        } else if let Some(u) = uses.get(&d.name) {
            let mut u = u.clone();
            u.sort();
            u.dedup();
            let shown: Vec<String> = u.iter().take(4).cloned().collect();
            let more = if u.len() > 4 {
                format!(" and {} more", u.len() - 4)
            } else {
                String::new()
            };
            (true, format!("holds {}{more}", shown.join(", ")))
        } else {
            (
                false,
                "nothing on it is mounted, used as swap, or part of an md/LUKS/LVM stack that is"
                    .to_string(),
            )
        };
    }
    Ok(())
}

fn collect_boot(
    ctx: &Ctx,
    firmware: Firmware,
    disks: &[Disk],
    filesystems: &[Filesystem],
) -> Result<Boot> {
    let mut esps = Vec::new();
    for d in disks {
        match &d.partition_table {
            Some(PartitionTable::Gpt(g)) => esps.extend(
                g.partitions
                    .iter()
                    .filter(|p| p.type_guid == boot::ESP_TYPE_GUID)
                    .map(|p| p.device.clone()),
            ),
            Some(PartitionTable::Mbr(m)) => esps.extend(
                m.partitions
                    .iter()
                    .filter(|p| p.type_byte == 0xef)
                    .map(|p| p.device.clone()),
            ),
            None => {}
        }
    }
    // Files on the mounted ESPs: EFI/*/NAME.
    let esp_mounts: Vec<PathBuf> = filesystems
        .iter()
        .filter(|f| esps.contains(&f.device))
        .flat_map(|f| f.mountpoints.iter().map(|m| ctx.mnt(m)))
        .collect();
    let esp_has = |file: &str| {
        esp_mounts.iter().any(|m| {
            std::fs::read_dir(m.join("EFI"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok()).any(|e| {
                        std::fs::read_dir(e.path())
                            .map(|files| {
                                files.filter_map(|f| f.ok()).any(|f| {
                                    f.file_name().to_string_lossy().eq_ignore_ascii_case(file)
                                })
                            })
                            .unwrap_or(false)
                    })
                })
                .unwrap_or(false)
        })
    };
    let mut grub = Vec::new();
    let mut pc_disks = Vec::new();
    for d in disks {
        let path = ctx.path(&d.path);
        if let Ok(mut f) = std::fs::File::open(&path) {
            use std::io::Read;
            let mut s0 = vec![0u8; 512];
            if f.read_exact(&mut s0).is_ok() && ptable::has_grub_boot_code(&s0) {
                pc_disks.push(d.path.clone());
            }
        }
    }
    let boot_grub = ctx.opts.system_file("boot/grub");
    if !pc_disks.is_empty() || boot_grub.join("i386-pc").is_dir() {
        grub.push(GrubTarget {
            platform: "i386-pc".into(),
            disks: pc_disks,
        });
    }
    if boot_grub.join("x86_64-efi").is_dir() || esp_has("grubx64.efi") {
        grub.push(GrubTarget {
            platform: "x86_64-efi".into(),
            disks: Vec::new(),
        });
    }
    let (mut efi_entries, mut boot_order, mut boot_current) = (Vec::new(), Vec::new(), None);
    if firmware == Firmware::Uefi {
        match boot::read_efivars(&ctx.sys.join("firmware/efi/efivars")) {
            Ok((e, o, c)) if !e.is_empty() || !o.is_empty() => {
                (efi_entries, boot_order, boot_current) = (e, o, c);
            }
            other => {
                if let Err(e) = other {
                    log::debug!("reading efivarfs: {e:#}");
                }
                if ctx.opts.root == Path::new("/") {
                    match Cmd::new("efibootmgr").arg("-v").read() {
                        Ok(text) => {
                            (efi_entries, boot_order, boot_current) = boot::parse_efibootmgr(&text)
                        }
                        Err(e) => log::warn!("EFI boot entries not recorded: {e:#}"),
                    }
                }
            }
        }
    }
    let loader_has = |s: &str| {
        efi_entries.iter().any(|e| {
            e.loader
                .as_deref()
                .is_some_and(|l| l.to_ascii_lowercase().contains(s))
        })
    };
    Ok(Boot {
        firmware,
        shim: esp_has("shimx64.efi") || loader_has("shim"),
        systemd_boot: esp_has("systemd-bootx64.efi") || loader_has("systemd-boot"),
        grub,
        esps,
        efi_entries,
        boot_order,
        boot_current,
        // The rescue's own command line says nothing about the system.
        kernel_cmdline: match &ctx.opts.system_root {
            Some(_) => String::new(),
            None => read_opt(&ctx.opts.root.join("proc/cmdline"))
                .unwrap_or_default()
                .trim()
                .to_string(),
        },
    })
}

/// The newest kernel release with modules in a system tree.
fn newest_modules_dir(root: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by(|a, b| sysfs::natural_cmp(a, b));
    names.pop()
}

fn collect_host(opts: &CaptureOptions, firmware: Firmware) -> Host {
    let r = |p: &str| read_opt(&opts.root.join(p)).map(|s| s.trim().to_string());
    let sr = |p: &str| read_opt(&opts.system_file(p)).map(|s| s.trim().to_string());
    let os = sr("etc/os-release")
        .or_else(|| sr("usr/lib/os-release"))
        .unwrap_or_default();
    let field = |key: &str| {
        os.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    Host {
        hostname: match &opts.system_root {
            Some(_) => sr("etc/hostname").unwrap_or_default(),
            None => r("proc/sys/kernel/hostname").unwrap_or_default(),
        },
        os_pretty_name: field("PRETTY_NAME"),
        os_id: field("ID"),
        os_version_id: field("VERSION_ID"),
        arch: std::env::consts::ARCH.to_string(),
        kernel: match &opts.system_root {
            Some(root) => newest_modules_dir(root).unwrap_or_default(),
            None => r("proc/sys/kernel/osrelease").unwrap_or_default(),
        },
        firmware,
    }
}

#[cfg(test)]
mod tests {
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
