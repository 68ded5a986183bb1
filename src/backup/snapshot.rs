//! `backup create --snapshot`: each tree is read from a snapshot taken
//! (after `pre_backup`) and removed by lifeboat, so the backup is one
//! moment of the file system, not a tree that changes while it is read.
//!
//! - btrfs: a read-only snapshot of the subvolume holding the tree,
//!   `SUBVOLUME/.lifeboat-snapshot-PID` (`btrfs subvolume snapshot -r`).
//! - LVM: a snapshot volume `VG/lifeboat-snap-LV` (`lvcreate -s`, 20% of the
//!   origin, none for thin volumes), mounted under `/run/lifeboat/snapshots`.
//!
//! Any other file system is an error naming it. The snapshots go when the
//! backup ends, fails, or is interrupted (SIGINT, SIGTERM, SIGHUP: a
//! watcher thread removes them and exits); a snapshot left by a killed run
//! is removed by the next `--snapshot` run.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};

use super::create::Source;
use super::walk::Excludes;
use crate::exec::Cmd;

/// btrfs' `f_type` (statfs).
const BTRFS_MAGIC: u64 = 0x9123_683E;
/// The inode number of every btrfs subvolume's root.
const SUBVOLUME_ROOT_INO: u64 = 256;
const BTRFS_PREFIX: &str = ".lifeboat-snapshot-";
const LV_PREFIX: &str = "lifeboat-snap-";
const MOUNT_DIR: &str = "/run/lifeboat/snapshots";

/// One snapshot taken.
#[derive(Debug, Clone)]
enum Taken {
    Btrfs { subvolume: PathBuf },
    Lvm { lv: String, mount: PathBuf },
}

impl Taken {
    fn remove(&self) -> Result<()> {
        match self {
            Taken::Btrfs { subvolume } => {
                Cmd::new("btrfs")
                    .args(["subvolume", "delete"])
                    .arg(subvolume)
                    .run()?;
            }
            Taken::Lvm { lv, mount } => {
                Cmd::new("umount").arg(mount).run()?;
                let _ = std::fs::remove_dir(mount);
                Cmd::new("lvremove").args(["-f", lv]).run()?;
            }
        }
        log::info!("removed snapshot {}", self.name());
        Ok(())
    }

    fn name(&self) -> String {
        match self {
            Taken::Btrfs { subvolume } => subvolume.display().to_string(),
            Taken::Lvm { lv, .. } => lv.clone(),
        }
    }
}

/// The snapshots of one backup, removed on drop.
pub struct Snapshots {
    taken: Arc<Mutex<Vec<Taken>>>,
    sources: Vec<Source>,
    /// (live device, snapshot device, live path, snapshot path) per tree.
    moved: Vec<(u64, u64, PathBuf, PathBuf)>,
    /// Each subvolume or volume snapshotted and where its snapshot is
    /// read: two trees on one file system share one snapshot.
    roots: Vec<(String, PathBuf)>,
    /// The signal mask before, put back when the snapshots are gone.
    mask: nix::sys::signal::SigSet,
}

impl Snapshots {
    /// Snapshots every tree; on an error the ones taken are removed.
    pub fn take(sources: &[Source]) -> Result<Snapshots> {
        let taken = Arc::new(Mutex::new(Vec::new()));
        let mask = watch_signals(taken.clone())?;
        let mut s = Snapshots {
            taken,
            sources: Vec::new(),
            moved: Vec::new(),
            roots: Vec::new(),
            mask,
        };
        for src in sources {
            let at = s
                .snapshot(&src.path)
                .with_context(|| format!("--snapshot of {}", src.path.display()))?;
            let live_dev = dev_of(&src.path)?;
            s.moved
                .push((live_dev, dev_of(&at)?, src.path.clone(), at.clone()));
            s.sources.push(Source {
                path: at,
                ..src.clone()
            });
        }
        Ok(s)
    }

    /// The trees, as read from the snapshots (mount points unchanged).
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// What leaves out a folder of the live trees leaves it out of the
    /// snapshots too (the backup folder, `/tmp`, `--exclude /PATH`).
    pub fn translate(&self, ex: &mut Excludes) -> Result<()> {
        for (live_dev, snap_dev, live, snap) in &self.moved {
            move_excludes(ex, (*live_dev, *snap_dev), live, snap)?;
        }
        Ok(())
    }

    /// Removes every snapshot; the first failure is the error (the others
    /// are still tried).
    pub fn remove(self) -> Result<()> {
        let list: Vec<Taken> = std::mem::take(&mut *lock(&self.taken));
        let mut first = None;
        for t in list.iter().rev() {
            if let Err(e) = t.remove() {
                log::error!("cannot remove snapshot {}: {e:#}", t.name());
                first.get_or_insert(e.context(format!("removing snapshot {}", t.name())));
            }
        }
        first.map_or(Ok(()), Err)
        // (drop puts the signal mask back)
    }

    /// The snapshot of `key` taken already, else `take()`'s, remembered.
    fn root_of(
        &mut self,
        key: String,
        take: impl FnOnce(&mut Self) -> Result<PathBuf>,
    ) -> Result<PathBuf> {
        if let Some((_, root)) = self.roots.iter().find(|(k, _)| *k == key) {
            return Ok(root.clone());
        }
        let root = take(self)?;
        self.roots.push((key, root.clone()));
        Ok(root)
    }

    /// Takes one snapshot; returns where the tree `path` is read in it.
    fn snapshot(&mut self, path: &Path) -> Result<PathBuf> {
        let fs = rustix::fs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
        if fs.f_type as u64 == BTRFS_MAGIC {
            return self.btrfs(path);
        }
        self.lvm(path)
    }

    fn btrfs(&mut self, path: &Path) -> Result<PathBuf> {
        let root = subvolume_root(path)?;
        let snap = self.root_of(root.display().to_string(), |me| {
            remove_stale_btrfs(&root);
            let snap = root.join(format!("{BTRFS_PREFIX}{}", std::process::id()));
            Cmd::new("btrfs")
                .args(["subvolume", "snapshot", "-r"])
                .arg(&root)
                .arg(&snap)
                .run()?;
            log::info!("btrfs snapshot {} of {}", snap.display(), root.display());
            lock(&me.taken).push(Taken::Btrfs {
                subvolume: snap.clone(),
            });
            Ok(snap)
        })?;
        Ok(snap.join(path.strip_prefix(&root).unwrap_or(Path::new(""))))
    }

    fn lvm(&mut self, path: &Path) -> Result<PathBuf> {
        let m = mount_of(path)?;
        let fields = Cmd::new("lvs")
            .args([
                "--noheadings",
                "--separator",
                "|",
                "-o",
                "vg_name,lv_name,segtype",
            ])
            .arg(&m.source)
            .output_any()
            .ok()
            .filter(|o| o.code == 0)
            .map(|o| o.stdout_str());
        let Some(fields) = fields else {
            bail!(
                "{} is on {} ({}), neither btrfs nor an LVM logical volume: no snapshot possible; back up without --snapshot",
                path.display(),
                m.source,
                m.fstype
            );
        };
        let f: Vec<&str> = fields.trim().split('|').map(str::trim).collect();
        let (vg, lv, seg) = (
            f[0],
            f.get(1).copied().unwrap_or(""),
            f.get(2).copied().unwrap_or(""),
        );
        let fstype = m.fstype.clone();
        let mount = self.root_of(format!("{vg}/{lv}"), |me| {
            me.lvm_snapshot(vg, lv, seg, &fstype)
        })?;
        let rel = path.strip_prefix(&m.mountpoint).unwrap_or(Path::new(""));
        Ok(mount.join(m.root.trim_start_matches('/')).join(rel))
    }

    /// Takes and mounts a snapshot of `vg/lv`; returns its mount point.
    fn lvm_snapshot(&mut self, vg: &str, lv: &str, seg: &str, fstype: &str) -> Result<PathBuf> {
        let name = format!("{LV_PREFIX}{lv}");
        remove_stale_lv(vg, &name);
        let mut c = Cmd::new("lvcreate").args(["-s", "-n", &name]);
        if seg != "thin" {
            c = c.args(["-l", "20%ORIGIN"]);
        }
        c.arg(format!("{vg}/{lv}")).run()?;
        let mount = Path::new(MOUNT_DIR).join(&name);
        let full = format!("{vg}/{name}");
        lock(&self.taken).push(Taken::Lvm {
            lv: full.clone(),
            mount: mount.clone(),
        });
        std::fs::create_dir_all(&mount).with_context(|| format!("creating {}", mount.display()))?;
        // Written only by the journal replay; noatime: reading changes nothing.
        let opts = if fstype == "xfs" {
            "noatime,nouuid"
        } else {
            "noatime"
        };
        Cmd::new("mount")
            .args(["-t", fstype, "-o", opts])
            .arg(format!("/dev/{vg}/{name}"))
            .arg(&mount)
            .run()?;
        log::info!(
            "LVM snapshot {full} of {vg}/{lv} mounted on {}",
            mount.display()
        );
        Ok(mount)
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        for t in std::mem::take(&mut *lock(&self.taken)).iter().rev() {
            if let Err(e) = t.remove() {
                log::error!("cannot remove snapshot {}: {e:#}", t.name());
            }
        }
        let how = nix::sys::signal::SigmaskHow::SIG_SETMASK;
        let _ = nix::sys::signal::pthread_sigmask(how, Some(&self.mask), None);
    }
}

fn lock(m: &Mutex<Vec<Taken>>) -> std::sync::MutexGuard<'_, Vec<Taken>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn dev_of(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| format!("reading {}", p.display()))?
        .dev())
}

/// Adds to `ex` what leaves out the same things in a tree read at `snap`
/// (device `devs.1`) that it leaves out of `live` (device `devs.0`):
/// folders by inode, folders whose contents go, absolute patterns.
fn move_excludes(ex: &mut Excludes, devs: (u64, u64), live: &Path, snap: &Path) -> Result<()> {
    let same: Vec<(u64, u64)> = ex.dirs.iter().filter(|d| d.0 == devs.0).copied().collect();
    ex.dirs
        .extend(same.into_iter().map(|(_, ino)| (devs.1, ino)));
    let moved: Vec<PathBuf> = ex
        .contents_of
        .iter()
        .filter_map(|d| d.strip_prefix(live).ok().map(|rel| snap.join(rel)))
        .collect();
    ex.contents_of.extend(moved);
    let prefix = live.to_string_lossy().trim_end_matches('/').to_string();
    let base = glob::Pattern::escape(snap.to_string_lossy().trim_end_matches('/'));
    let added: Vec<String> = ex
        .patterns
        .iter()
        .filter_map(|p| {
            p.as_str()
                .strip_prefix(&prefix)
                .filter(|r| r.starts_with('/'))
                .map(|rest| format!("{base}{rest}"))
        })
        .collect();
    for a in added {
        ex.add_pattern(&a)?;
    }
    Ok(())
}

/// The btrfs subvolume holding `path`: the nearest folder up whose inode is
/// a subvolume root, on the same device.
fn subvolume_root(path: &Path) -> Result<PathBuf> {
    let dev = dev_of(path)?;
    let mut p = path.to_path_buf();
    loop {
        let m = std::fs::metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        if m.dev() == dev && m.ino() == SUBVOLUME_ROOT_INO {
            return Ok(p);
        }
        if !p.pop() || std::fs::metadata(&p).map(|m| m.dev()).ok() != Some(dev) {
            bail!("no btrfs subvolume holds {}", path.display());
        }
    }
}

/// Removes snapshots of `root` left by runs that are gone.
fn remove_stale_btrfs(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(BTRFS_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            log::warn!(
                "removing snapshot {} left by an interrupted run",
                e.path().display()
            );
            let _ = (Taken::Btrfs {
                subvolume: e.path(),
            })
            .remove();
        }
    }
}

/// Removes a snapshot volume of that name left by a killed run.
fn remove_stale_lv(vg: &str, name: &str) {
    let full = format!("{vg}/{name}");
    if Cmd::new("lvs")
        .arg(&full)
        .output_any()
        .is_ok_and(|o| o.code == 0)
    {
        log::warn!("removing snapshot {full} left by an interrupted run");
        let mount = Path::new(MOUNT_DIR).join(name);
        let _ = Cmd::new("umount").arg(&mount).output_any();
        let _ = Cmd::new("lvremove").args(["-f", &full]).output_any();
    }
}

/// The mount that holds `path` (same device, longest mount point).
fn mount_of(path: &Path) -> Result<crate::layout::probe::mounts::MountInfo> {
    let text =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let dev = dev_of(path)?;
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    crate::layout::probe::mounts::parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.devnum == (major, minor) && path.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.len())
        .with_context(|| format!("no mount holds {}", path.display()))
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads it
/// starts) and removes the snapshots when one arrives, then exits as the
/// signal would have. Returns the mask before.
fn watch_signals(taken: Arc<Mutex<Vec<Taken>>>) -> Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    let mut before = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut before))
        .context("blocking signals while snapshots exist")?;
    std::thread::Builder::new()
        .name("snapshot-watch".into())
        .spawn(move || {
            let Ok(sig) = set.wait() else { return };
            log::warn!("{sig}: removing the snapshots before exiting");
            for t in std::mem::take(&mut *lock(&taken)).iter().rev() {
                if let Err(e) = t.remove() {
                    log::error!("cannot remove snapshot {}: {e:#}", t.name());
                }
            }
            std::process::exit(128 + sig as i32);
        })
        .context("starting the signal watcher")?;
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_follow_the_tree_into_its_snapshot() {
        let mut ex = Excludes::default();
        ex.dirs.insert((7, 100)); // the backup folder, on the live tree
        ex.dirs.insert((8, 200)); // on another file system
        ex.contents_of = vec![PathBuf::from("/tmp"), PathBuf::from("/srv/x/cache")];
        for p in ["/var/cache/*", "*.swp", "/srv/x/[a]*"] {
            ex.add_pattern(p).unwrap();
        }
        let snap = Path::new("/run/lifeboat/snapshots/lifeboat-snap-root");
        move_excludes(&mut ex, (7, 9), Path::new("/"), snap).unwrap();
        assert!(ex.dirs.contains(&(9, 100)) && !ex.dirs.contains(&(9, 200)));
        assert_eq!(ex.dirs.len(), 3);
        assert!(ex.contents_of.contains(&snap.join("tmp")));
        assert!(ex.contents_of.contains(&snap.join("srv/x/cache")));
        let pats: Vec<&str> = ex.patterns.iter().map(|p| p.as_str()).collect();
        assert!(
            pats.contains(&"/run/lifeboat/snapshots/lifeboat-snap-root/var/cache/*"),
            "{pats:?}"
        );
        assert_eq!(pats.iter().filter(|p| p.contains("swp")).count(), 1);
        // A tree below / : only what is below it moves; glob characters in
        // the snapshot's name are taken literally.
        let mut ex2 = Excludes::default();
        ex2.add_pattern("/srv/x/[a]*").unwrap();
        ex2.add_pattern("/srv/xy/*").unwrap();
        ex2.contents_of = vec![PathBuf::from("/tmp")];
        move_excludes(
            &mut ex2,
            (1, 2),
            Path::new("/srv/x"),
            Path::new("/b/.snap[1]"),
        )
        .unwrap();
        let pats: Vec<&str> = ex2.patterns.iter().map(|p| p.as_str()).collect();
        assert_eq!(pats, ["/srv/x/[a]*", "/srv/xy/*", "/b/.snap[[]1[]]/[a]*"]);
        assert_eq!(ex2.contents_of, [PathBuf::from("/tmp")]);
        let opts = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        assert!(ex2.patterns[2].matches_with("/b/.snap[1]/abc", opts));
    }
}
