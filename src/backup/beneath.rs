//! A directory tree addressed only through handles: the root is opened once
//! by path (the restore target the user named), everything below it through
//! directory handles opened without following symlinks, openat2
//! `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS` where the kernel has it, else one
//! `O_NOFOLLOW|O_DIRECTORY` open per component. Path strings below the root
//! serve messages only.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// An entry not written because reaching it would leave the tree: a symlink
/// or a non-directory on its way, a hard link to something outside.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

const DIR: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A directory tree: a handle to its root and how to open what is below.
pub struct Tree {
    root: Arc<OwnedFd>,
    path: PathBuf,
    openat2: bool,
}

impl Tree {
    /// Opens the directory `path` (symlinks in `path` itself are followed:
    /// the caller named it).
    pub fn open(path: &Path) -> Result<Tree> {
        let fd = rfs::open(path, DIR.difference(OFlags::NOFOLLOW), Mode::empty())
            .with_context(|| format!("opening {}", path.display()))?;
        let openat2 = rfs::openat2(&fd, ".", DIR, Mode::empty(), beneath()).is_ok();
        Ok(Tree {
            root: Arc::new(fd),
            path: path.to_path_buf(),
            openat2,
        })
    }

    /// The same tree opened by component walks only (kernels before 5.6).
    pub fn without_openat2(mut self) -> Tree {
        self.openat2 = false;
        self
    }

    /// The tree below `rel` (normalized, `.` for this one), its missing
    /// directories created when `create`.
    pub fn subtree(&self, rel: &[u8], create: bool) -> Result<Tree> {
        let fd = self.descend(&self.root, b"", rel, create)?;
        Ok(Tree {
            root: Arc::new(fd),
            path: self.show(rel),
            openat2: self.openat2,
        })
    }

    pub fn root(&self) -> &Arc<OwnedFd> {
        &self.root
    }

    /// Where `rel` is, for messages.
    pub fn show(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() || rel == b"." {
            self.path.clone()
        } else {
            self.path.join(std::ffi::OsStr::from_bytes(rel))
        }
    }

    /// Opens the directory `rel` (normalized) below the root, never through
    /// a symlink.
    pub fn open_dir(&self, rel: &[u8]) -> Result<OwnedFd> {
        self.descend(&self.root, b"", rel, false)
    }

    /// Opens the directory `rest` below `from` (the handle of `from_rel`),
    /// creating missing directories when `create`. A symlink or a
    /// non-directory on the way is [`Refused`].
    pub fn descend(
        &self,
        from: &OwnedFd,
        from_rel: &[u8],
        rest: &[u8],
        create: bool,
    ) -> Result<OwnedFd> {
        if rest.is_empty() || rest == b"." {
            return from.try_clone().context("duplicating a directory handle");
        }
        if self.openat2 {
            // Any failure (missing, refused, EAGAIN on a concurrent rename)
            // is sorted out by the walk, which names the component.
            if let Ok(fd) = rfs::openat2(from, rest, DIR, Mode::empty(), beneath()) {
                return Ok(fd);
            }
        }
        let mut cur: Option<OwnedFd> = None;
        let mut done = 0;
        for comp in rest.split(|&b| b == b'/') {
            done += comp.len() + usize::from(done > 0);
            let shown = join(from_rel, &rest[..done]);
            if matches!(comp, b"" | b"." | b"..") {
                let shown = self.show(&shown);
                return Err(
                    Refused(format!("{} is not a normalized path", shown.display())).into(),
                );
            }
            let dir = cur.as_ref().unwrap_or(from);
            let next = match rfs::openat(dir, comp, DIR, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rfs::mkdirat(dir, comp, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.failed(dir, comp, &shown, e, "creating")),
                    }
                    rfs::openat(dir, comp, DIR, Mode::empty())
                }
                r => r,
            };
            cur = Some(next.map_err(|e| self.failed(dir, comp, &shown, e, "opening"))?);
        }
        Ok(cur.expect("at least one component"))
    }

    /// What `descend` says when a component cannot be entered.
    fn failed(
        &self,
        dir: &OwnedFd,
        comp: &[u8],
        rel: &[u8],
        e: Errno,
        doing: &str,
    ) -> anyhow::Error {
        let shown = self.show(rel);
        match e {
            Errno::LOOP | Errno::NOTDIR => {
                let what = match rfs::statat(dir, comp, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                        "is a symlink (not followed)"
                    }
                    _ => "is not a directory",
                };
                Refused(format!("{} {what}", shown.display())).into()
            }
            e => anyhow::Error::from(io::Error::from(e))
                .context(format!("{doing} {}", shown.display())),
        }
    }

    /// The status of `rel` itself (a symlink is not followed); `None` when
    /// it or a parent is missing. A symlink among its parents is [`Refused`].
    pub fn lstat(&self, rel: &[u8]) -> Result<Option<rfs::Stat>> {
        let (parent, name) = split(rel);
        let dir = match self.open_dir(parent) {
            Ok(d) => d,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        match rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io::Error::from(e))
                .with_context(|| format!("reading {}", self.show(rel).display())),
        }
    }
}

fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// Whether `e` says that something does not exist.
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
}

/// `a/b` from `a` and `b` (`b` alone when `a` is empty or `.`).
pub fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a.is_empty() || a == b"." {
        b.to_vec()
    } else {
        [a, b"/", b].concat()
    }
}

/// Parent (empty for the root) and last component of a normalized path.
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

/// The handles of the directory most recently worked in and its parents,
/// so that entries in archive order (mostly directory order) need no
/// lookup at all, and a sibling directory one open.
pub struct Cursor {
    /// The deepest directory held (empty: the root).
    path: Vec<u8>,
    /// Handles of prefixes of `path`: (prefix length, handle); the root first.
    held: Vec<(usize, Arc<OwnedFd>)>,
}

impl Cursor {
    pub fn new(tree: &Tree) -> Cursor {
        Cursor {
            path: Vec::new(),
            held: vec![(0, tree.root().clone())],
        }
    }

    /// How much of `dir` (a normalized path, empty for the root) is held.
    pub fn held_len(&self, dir: &[u8]) -> usize {
        self.deepest(dir).1
    }

    fn deepest(&self, dir: &[u8]) -> (usize, usize) {
        for (i, (len, _)) in self.held.iter().enumerate().rev() {
            let len = *len;
            if dir.len() >= len
                && dir[..len] == self.path[..len]
                && (len == 0 || dir.len() == len || dir[len] == b'/')
            {
                return (i, len);
            }
        }
        (0, 0)
    }

    /// The handle of directory `dir` below the tree's root, created when
    /// missing; held for the next entries.
    pub fn dir(&mut self, tree: &Tree, dir: &[u8]) -> Result<Arc<OwnedFd>> {
        let (i, len) = self.deepest(dir);
        self.held.truncate(i + 1);
        self.path.truncate(len);
        if len == dir.len() {
            return Ok(self.held[i].1.clone());
        }
        let rest = &dir[len + usize::from(len > 0)..];
        let fd = Arc::new(tree.descend(&self.held[i].1, &dir[..len], rest, true)?);
        self.enter(dir, fd.clone());
        Ok(fd)
    }

    /// Holds `fd`, the handle of directory `dir`, when `dir` lies below the
    /// deepest directory held (an entry just created there).
    pub fn enter(&mut self, dir: &[u8], fd: Arc<OwnedFd>) {
        let (i, len) = self.deepest(dir);
        if i + 1 != self.held.len() || len == dir.len() {
            return;
        }
        self.path.clear();
        self.path.extend_from_slice(dir);
        self.held.push((dir.len(), fd));
    }

    /// Lets go of `rel` and what is below it (about to be replaced).
    pub fn forget(&mut self, rel: &[u8]) {
        if rel.is_empty() {
            return;
        }
        let below = self.path.starts_with(rel)
            && (self.path.len() == rel.len() || self.path[rel.len()] == b'/');
        if below {
            self.held.retain(|(len, _)| *len < rel.len());
            let keep = self.held.last().map_or(0, |h| h.0);
            self.path.truncate(keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn both(dir: &Path) -> Vec<Tree> {
        vec![
            Tree::open(dir).unwrap(),
            Tree::open(dir).unwrap().without_openat2(),
        ]
    }

    #[test]
    fn symlinks_below_the_root_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        let root = t.path().join("root");
        std::fs::create_dir_all(outside.join("d")).unwrap();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../outside", root.join("rel")).unwrap();
        symlink("real", root.join("inner")).unwrap();
        std::fs::write(root.join("file"), b"x").unwrap();
        for tree in both(&root) {
            assert!(tree.open_dir(b"real/sub").is_ok());
            for (rel, what) in [
                (&b"abs/d"[..], "abs is a symlink"),
                (b"rel", "rel is a symlink"),
                (b"inner/sub", "inner is a symlink"),
                (b"file/x", "file is not a directory"),
            ] {
                let e = tree.open_dir(rel).unwrap_err();
                assert!(e.downcast_ref::<Refused>().is_some(), "{e:#}");
                assert!(format!("{e:#}").contains(what), "{e:#}");
            }
            // Creating below a symlink makes nothing outside.
            let mut c = Cursor::new(&tree);
            assert!(c.dir(&tree, b"abs/new/deeper").is_err());
            assert!(!outside.join("new").exists());
            assert!(tree.lstat(b"abs/d").is_err());
            assert!(tree.lstat(b"abs").unwrap().is_some());
            assert!(tree.lstat(b"missing/x").unwrap().is_none());
            assert!(tree.open_dir(b"real/../..").is_err());
        }
    }

    #[test]
    fn cursor_holds_the_current_directory() {
        let t = tempfile::tempdir().unwrap();
        for tree in both(t.path()) {
            let mut c = Cursor::new(&tree);
            let a = c.dir(&tree, b"a/b/c").unwrap();
            assert_eq!(c.held_len(b"a/b/c/d"), 5);
            assert_eq!(c.held_len(b"a/bb"), 0);
            assert!(Arc::ptr_eq(&a, &c.dir(&tree, b"a/b/c").unwrap()));
            let x = c.dir(&tree, b"a/b/x").unwrap();
            assert!(!Arc::ptr_eq(&a, &x));
            c.forget(b"a/b");
            assert_eq!(c.held_len(b"a/b/x"), 0);
            assert!(t.path().join("a/b/c").is_dir() && t.path().join("a/b/x").is_dir());
            let root = c.dir(&tree, b"").unwrap();
            assert!(Arc::ptr_eq(&root, tree.root()));
        }
    }
}
