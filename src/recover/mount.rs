//! Mounts that clean up after themselves, and the mounts of the system
//! being recovered.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exec::Cmd;

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

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub source: String,
    pub fstype: String,
}

/// Decodes the octal escapes of mountinfo fields (`\040` for a space).
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape(f.get(4)?)),
                fstype: r.first()?.to_string(),
                source: unescape(r.get(1)?),
            })
        })
        .collect()
}

pub fn mounts() -> Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(
        &std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?,
    ))
}

/// Unmounts everything at or below `root`, deepest first.
pub fn unmount_tree(root: &Path) -> Result<()> {
    let mut under: Vec<PathBuf> = mounts()?
        .into_iter()
        .map(|m| m.mountpoint)
        .filter(|m| m.starts_with(root))
        .collect();
    under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    under.dedup();
    for m in under {
        Cmd::new("umount")
            .arg(&m)
            .run()
            .with_context(|| format!("unmounting {}", m.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/mapper/vg0-root rw\n\
                    40 22 259:2 / /mnt/with\\040space rw - xfs /dev/vdb1 rw,attr2\n";
        let m = parse_mountinfo(text);
        assert_eq!(m[0].source, "/dev/mapper/vg0-root");
        assert_eq!(m[1].mountpoint, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].fstype, "xfs");
    }
}
