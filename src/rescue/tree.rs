//! The rescue system's file tree, assembled in memory (entries point at host
//! files or hold their bytes) and written out as a deterministic cpio.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cpio::CpioWriter;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { source: Source, mode: u32 },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// Paths are kept relative (no leading slash), sorted, so that parents come
/// before their children in the archive.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

/// Maps host paths into the image, which uses the merged-/usr layout (/bin,
/// /sbin, /lib and /lib64 are symlinks into /usr), whatever the host does.
pub fn image_path(host: &Path) -> String {
    let s = host.to_string_lossy();
    let s = s.trim_start_matches('/');
    for top in ["bin", "sbin", "lib", "lib64"] {
        if s == top {
            return format!("usr/{top}");
        }
        if let Some(rest) = s.strip_prefix(&format!("{top}/")) {
            return format!("usr/{top}/{rest}");
        }
    }
    s.to_string()
}

impl Tree {
    pub fn new() -> Tree {
        let mut t = Tree::default();
        for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64"] {
            t.dir(d, 0o755);
        }
        for top in ["bin", "sbin", "lib", "lib64"] {
            t.entries.insert(
                top.into(),
                Entry::Symlink {
                    target: format!("usr/{top}"),
                },
            );
        }
        t
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every path in the image, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Creates a directory and its parents.
    pub fn dir(&mut self, path: &str, mode: u32) {
        let path = path.trim_matches('/');
        if path.is_empty() {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
        self.entries
            .entry(path.to_string())
            .or_insert(Entry::Dir { mode });
    }

    fn parent_of(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent, 0o755);
        }
    }

    pub fn bytes(&mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32) {
        let path = path.trim_start_matches('/').to_string();
        self.parent_of(&path);
        self.entries.insert(
            path,
            Entry::File {
                source: Source::Bytes(data.into()),
                mode,
            },
        );
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        let path = path.trim_start_matches('/').to_string();
        self.parent_of(&path);
        self.entries.insert(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        );
    }

    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        let path = path.trim_start_matches('/').to_string();
        self.parent_of(&path);
        self.entries
            .insert(path, Entry::CharDevice { mode, major, minor });
    }

    /// Copies a host file at image path `dest` (taking its permission bits).
    pub fn host_file_at(&mut self, host: &Path, dest: &str) -> Result<()> {
        let meta =
            std::fs::metadata(host).with_context(|| format!("reading {}", host.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", host.display());
        }
        use std::os::unix::fs::PermissionsExt;
        let dest = dest.trim_start_matches('/').to_string();
        self.parent_of(&dest);
        self.entries.insert(
            dest,
            Entry::File {
                source: Source::Host(host.to_path_buf()),
                mode: meta.permissions().mode() & 0o7777,
            },
        );
        Ok(())
    }

    /// Copies a host file to the same place in the image, keeping every
    /// symlink on the way (a tool's name can matter: `mkfs.ext4` is a link
    /// to `mke2fs`, which reads its own name). Returns the image path of the
    /// final file.
    pub fn host_path(&mut self, host: &Path) -> Result<String> {
        let mut current = absolutize_parent(host)?;
        for _ in 0..32 {
            let meta = std::fs::symlink_metadata(&current)
                .with_context(|| format!("reading {}", current.display()))?;
            let dest = image_path(&current);
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&current)?;
                let resolved = current.parent().unwrap_or(Path::new("/")).join(&target);
                let resolved = absolutize_parent(&normalize(&resolved))?;
                // Store the link relative to the image layout so that it works
                // whether the host used /lib or /usr/lib.
                let rel = relative_link(&dest, &image_path(&resolved));
                self.symlink(&dest, &rel);
                current = resolved;
            } else {
                self.host_file_at(&current, &dest)?;
                return Ok(dest);
            }
        }
        bail!("too many levels of symbolic links at {}", host.display())
    }

    /// Writes the tree as a newc cpio with every mtime set to `mtime`.
    pub fn write_cpio<W: Write>(&self, out: W, mtime: u32) -> Result<W> {
        let mut w = CpioWriter::new(out, mtime);
        for (path, entry) in &self.entries {
            match entry {
                Entry::Dir { mode } => w.dir(path, *mode)?,
                Entry::Symlink { target } => w.symlink(path, target)?,
                Entry::CharDevice { mode, major, minor } => {
                    w.char_device(path, *mode, *major, *minor)?
                }
                Entry::File { source, mode } => match source {
                    Source::Bytes(b) => w.file(path, *mode, b.len() as u64, &mut b.as_slice())?,
                    Source::Host(p) => {
                        let mut f = std::fs::File::open(p)
                            .with_context(|| format!("opening {}", p.display()))?;
                        let len = f.metadata()?.len();
                        w.file(path, *mode, len, &mut f)
                            .with_context(|| format!("reading {}", p.display()))?
                    }
                },
            }
        }
        w.finish()
    }

    /// Total size of the file contents, for the summary.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File {
                    source: Source::Bytes(b),
                    ..
                } => b.len() as u64,
                Entry::File {
                    source: Source::Host(p),
                    ..
                } => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
}

/// Resolves symlinks in the parent directories of `path` (not in its last
/// component), e.g. `/sbin/lvm` → `/usr/sbin/lvm` on a merged-/usr host.
fn absolutize_parent(path: &Path) -> Result<PathBuf> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let parent =
        std::fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
    Ok(parent.join(name))
}

/// Removes `.` and `..` components lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// A relative symlink target from image path `from` to image path `to`.
fn relative_link(from: &str, to: &str) -> String {
    let from_dir: Vec<&str> = from.split('/').collect::<Vec<_>>();
    let from_dir = &from_dir[..from_dir.len() - 1];
    let to_parts: Vec<&str> = to.split('/').collect();
    let common = from_dir
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<&str> = vec![".."; from_dir.len() - common];
    parts.extend(&to_parts[common..]);
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_map_into_merged_usr() {
        assert_eq!(image_path(Path::new("/sbin/lvm")), "usr/sbin/lvm");
        assert_eq!(
            image_path(Path::new("/lib/x86_64-linux-gnu/libc.so.6")),
            "usr/lib/x86_64-linux-gnu/libc.so.6"
        );
        assert_eq!(
            image_path(Path::new("/lib64/ld-linux-x86-64.so.2")),
            "usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(image_path(Path::new("/usr/bin/tar")), "usr/bin/tar");
        assert_eq!(image_path(Path::new("/etc/mke2fs.conf")), "etc/mke2fs.conf");
        assert_eq!(image_path(Path::new("/library/x")), "library/x");
    }

    #[test]
    fn relative_links() {
        assert_eq!(
            relative_link("usr/sbin/mkfs.ext4", "usr/sbin/mke2fs"),
            "mke2fs"
        );
        assert_eq!(
            relative_link(
                "usr/lib64/ld-linux-x86-64.so.2",
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
            ),
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
        );
    }

    #[test]
    fn symlink_chains_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("mke2fs");
        std::fs::write(&real, b"#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("mke2fs", dir.path().join("mkfs.ext4")).unwrap();
        let mut t = Tree::new();
        let dest = t.host_path(&dir.path().join("mkfs.ext4")).unwrap();
        let base = image_path(&std::fs::canonicalize(dir.path()).unwrap());
        assert_eq!(dest, format!("{base}/mke2fs"));
        assert_eq!(
            t.get(&format!("{base}/mkfs.ext4")),
            Some(&Entry::Symlink {
                target: "mke2fs".into()
            })
        );
        assert!(t.contains(&base), "parent directories are created");
    }

    #[test]
    fn same_tree_same_archive() {
        let build = || {
            let mut t = Tree::new();
            t.bytes("etc/motd", "hi\n", 0o644);
            t.char_device("dev/console", 0o600, 5, 1);
            t.host_path(Path::new("/bin/sh")).unwrap();
            t.write_cpio(Vec::new(), 0).unwrap()
        };
        assert_eq!(build(), build());
    }
}
