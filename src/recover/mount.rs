//! Mounts that clean up after themselves, and the mounts of the system
//! being recovered.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exec::{Cmd, Gate};

/// A file system mounted on a fresh temporary folder, unmounted on drop.
/// The folder is removed only once the unmount succeeded.
pub struct TempMount {
    dir: Option<tempfile::TempDir>,
    mounted: bool,
}

impl TempMount {
    pub fn new(device: &str, fstype: &str, options: &[&str]) -> Result<TempMount> {
        let dir = tempfile::Builder::new().prefix("lifeboat-mnt-").tempdir()?;
        let mut c = Cmd::new("mount").args(["-t", fstype]);
        if !options.is_empty() {
            c = c.args(["-o", &options.join(",")]);
        }
        c.arg(device)
            .arg(dir.path())
            .run()
            .with_context(|| format!("mounting {device}"))?;
        Ok(TempMount {
            dir: Some(dir),
            mounted: true,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until dropped").path()
    }

    pub fn unmount(mut self) -> Result<()> {
        self.do_unmount()
    }

    fn do_unmount(&mut self) -> Result<()> {
        if self.mounted {
            Cmd::new("umount").arg(self.path()).run()?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if self.do_unmount().is_err() {
            // Never delete a folder that still has a file system mounted on it.
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                log::warn!("{} is still mounted; left in place", kept.display());
            }
        }
    }
}

/// Unmounts everything at or below `root`, deepest first.
pub fn unmount_tree(root: &Path, gate: &Gate) -> Result<()> {
    let mut under: Vec<PathBuf> = crate::mounts::mountinfo()?
        .into_iter()
        .map(|m| PathBuf::from(m.mountpoint))
        .filter(|m| m.starts_with(root))
        .collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    under.dedup();
    for m in under {
        Cmd::new("umount")
            .arg(&m)
            .mutating(gate)
            .run()
            .with_context(|| format!("unmounting {}", m.display()))?;
    }
    Ok(())
}
