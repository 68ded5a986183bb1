//! Mounts, swap and file system collectors.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use super::ctx::{btrfs_mountpoint, Ctx, Job};
use super::sysfs::BlockDev;
use super::unsupported::{unsupported_signature, NOT_FILESYSTEMS};
use super::{fs, mounts, sysfs};
use crate::layout::*;

/// Mount types that are not storage (kept out of the layout).
pub(super) fn is_network_fs(fstype: &str) -> bool {
    matches!(
        fstype,
        "nfs" | "nfs4" | "cifs" | "smb3" | "glusterfs" | "ceph" | "9p"
    )
}

pub(super) fn collect_mounts(ctx: &Ctx) -> Vec<Mount> {
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
                fstype: m.fstype.as_str().into(),
                options: m.options.clone(),
                fs_options: m.fs_options.clone(),
                root: m.root.clone(),
            })
        })
        .collect()
}

/// The mount that holds `path` (longest mount point prefix).
pub(super) fn mount_of<'m>(mounts: &'m [Mount], path: &str) -> Option<&'m Mount> {
    mounts
        .iter()
        .filter(|m| {
            path == m.mountpoint
                || m.mountpoint == "/"
                || path.starts_with(&format!("{}/", m.mountpoint))
        })
        .max_by_key(|m| m.mountpoint.len())
}

pub(super) fn collect_swaps(
    ctx: &Ctx,
    active: &[mounts::ActiveSwap],
    mounts: &[Mount],
) -> Vec<Swap> {
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

pub(super) fn collect_filesystems(ctx: &Ctx, mounts: &[Mount]) -> Result<Vec<Filesystem>> {
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
                    .output(&Job::XfsInfo(b.name.clone()))
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
                        let [list, ro, def] =
                            fs::BtrfsQuery::ALL.map(|q| ctx.output(&Job::Btrfs(mp.clone(), q)));
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
            fstype: fstype.into(),
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
