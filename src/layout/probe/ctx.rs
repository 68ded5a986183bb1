//! What [`super::capture`] has read, shared by its collectors, and the
//! per-object tool calls run ahead in parallel.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{blkid, fs, luks, mounts, sysfs, CaptureOptions};
use crate::exec::Cmd;
use crate::layout::*;
use sysfs::{BlockDev, DevKind, Devices};

/// Everything `capture` has read, shared by its steps.
pub(super) struct Ctx<'a> {
    pub(super) opts: &'a CaptureOptions,
    pub(super) sys: PathBuf,
    pub(super) devs: Devices,
    /// Kernel names of the devices in scope.
    pub(super) scope: BTreeSet<String>,
    pub(super) probes: BTreeMap<String, blkid::Probe>,
    pub(super) mountinfo: Vec<mounts::MountInfo>,
    pub(super) unsupported: Vec<Unsupported>,
    /// Outputs of the jobs run in parallel by [`prefetch`].
    pub(super) outputs: RefCell<BTreeMap<Job, Result<String>>>,
}

impl Ctx<'_> {
    /// The output of `job`: prefetched, or run now.
    pub(super) fn output(&self, job: &Job) -> Result<String> {
        let prefetched = self.outputs.borrow_mut().remove(job);
        match prefetched {
            Some(out) => out,
            None => job.cmd(self).read(),
        }
    }

    /// Whether `b` holds a LUKS header: blkid says so, or it is open (a
    /// dm-crypt holder with a LUKS uuid; blkid does not probe devices with
    /// holders).
    pub(super) fn is_luks(&self, b: &BlockDev) -> bool {
        self.probe(b).and_then(|p| p.fstype.as_deref()) == Some("crypto_LUKS")
            || b.holders.iter().any(|h| {
                matches!(self.devs.by_name(h).map(|d| &d.kind),
                    Some(DevKind::Dm { uuid, .. }) if uuid.starts_with("CRYPT-LUKS1-") || uuid.starts_with("CRYPT-LUKS2-"))
            })
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(blkid::prefixed(&self.opts.root, p))
    }

    /// Where a mount point of the described system is in this one.
    pub(super) fn mnt(&self, mountpoint: &str) -> PathBuf {
        match &self.opts.system_root {
            Some(r) => r.join(mountpoint.trim_start_matches('/')),
            None => self.path(mountpoint),
        }
    }

    pub(super) fn dev_root(&self) -> PathBuf {
        self.opts.root.join("dev")
    }

    pub(super) fn canonical(&self, p: &str) -> String {
        self.devs.canonical(p, &self.dev_root())
    }

    pub(super) fn probe(&self, b: &BlockDev) -> Option<&blkid::Probe> {
        self.probes.get(&b.path)
    }

    /// Whether the device node exists under the root; warns when not (a
    /// fixture tree without /dev, or a broken /dev).
    pub(super) fn node_exists(&self, b: &BlockDev) -> bool {
        let p = self.path(&sysfs::dev_path(&b.name));
        let ok = p.exists();
        if !ok {
            log::warn!("no device node {}: {} is not probed", p.display(), b.path);
        }
        ok
    }

    pub(super) fn in_scope(&self, b: &BlockDev) -> bool {
        self.scope.contains(&b.name)
    }

    pub(super) fn scoped(&self) -> impl Iterator<Item = &BlockDev> {
        self.devs
            .list
            .iter()
            .filter(|b| self.scope.contains(&b.name))
    }

    /// The block device a mount is on (st_dev, else its source path).
    pub(super) fn mount_device(&self, m: &mounts::MountInfo) -> Option<&BlockDev> {
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

    pub(super) fn unsupported(&mut self, kind: &str, device: Option<String>, reason: &str) {
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

/// A per-object tool call that [`prefetch`] runs ahead, in parallel; the
/// collectors ask [`Ctx::output`] for the same job and get its output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Job {
    /// `mdadm --detail --export` of an array, by kernel name.
    MdDetail(String),
    /// `cryptsetup luksDump` of a device, by kernel name.
    LuksDump(String),
    /// `xfs_db -r -c info` of a device, by kernel name.
    XfsInfo(String),
    /// A btrfs subvolume listing at a mount point of the described system.
    Btrfs(String, fs::BtrfsQuery),
}

impl Job {
    /// The command that does the job.
    fn cmd(&self, ctx: &Ctx) -> Cmd {
        let node = |name: &str| blkid::prefixed(&ctx.opts.root, &sysfs::dev_path(name));
        match self {
            Job::MdDetail(name) => Cmd::new("mdadm")
                .args(["--detail", "--export"])
                .arg(node(name)),
            Job::LuksDump(name) => Cmd::new("cryptsetup").arg("luksDump").arg(node(name)),
            Job::XfsInfo(name) => Cmd::new("xfs_db")
                .args(["-r", "-c", "info"])
                .arg(node(name)),
            Job::Btrfs(mountpoint, query) => fs::btrfs_cmd(&ctx.mnt(mountpoint), *query),
        }
    }
}

/// The first mount point of the btrfs with this UUID.
pub(super) fn btrfs_mountpoint(ctx: &Ctx, mounts: &[Mount], uuid: &str) -> Option<String> {
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
pub(super) fn prefetch(ctx: &Ctx, mounts: &[Mount]) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut btrfs_done = BTreeSet::new();
    for b in ctx.scoped() {
        let node = ctx.path(&sysfs::dev_path(&b.name)).exists();
        if !node {
            continue;
        }
        if b.kind == DevKind::Md && b.size_bytes > 0 {
            jobs.push(Job::MdDetail(b.name.clone()));
        }
        if ctx.is_luks(b) && luks::read_header(&ctx.path(&sysfs::dev_path(&b.name))).is_err() {
            jobs.push(Job::LuksDump(b.name.clone()));
        }
        let Some(p) = ctx.probe(b) else { continue };
        match p.fstype.as_deref() {
            Some("xfs") => jobs.push(Job::XfsInfo(b.name.clone())),
            Some("btrfs") => {
                let uuid = p.uuid.clone().unwrap_or_default();
                if !btrfs_done.insert(uuid.clone()) {
                    continue;
                }
                if let Some(mp) = btrfs_mountpoint(ctx, mounts, &uuid) {
                    jobs.extend(fs::BtrfsQuery::ALL.map(|q| Job::Btrfs(mp.clone(), q)));
                }
            }
            _ => {}
        }
    }
    let results: Vec<(Job, Result<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let cmd = job.cmd(ctx);
                (job, s.spawn(move || cmd.read()))
            })
            .collect();
        handles
            .into_iter()
            .map(|(job, h)| {
                let out = h.join().unwrap_or_else(|_| {
                    Err(anyhow::anyhow!("the thread running {job:?} panicked"))
                });
                (job, out)
            })
            .collect()
    });
    ctx.outputs.borrow_mut().extend(results);
}
pub(super) fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}
