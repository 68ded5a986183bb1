//! Writing tar entries into a directory tree: files (sparse ones with their
//! holes), directories, symlinks, hard links, device nodes and fifos, with
//! owner, mode, xattrs, ACLs and times in nanoseconds.
//!
//! Confined by construction: below the target everything goes through
//! directory handles ([`super::beneath`]), never a path string. A symlink in
//! the tree is never followed (an entry in its way is replaced, an entry
//! that would be reached through it is refused and named), hard links reach
//! only earlier entries of the same archive, and directories' deferred
//! modes and times go to the very directories created (checked by device
//! and inode). Small files are written by worker threads; an entry never
//! overtakes an earlier one for the same path, so a later entry always
//! replaces an earlier one.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::acl;
use super::beneath::{is_not_found, split, Cursor, Refused, Tree};
use super::fsio;
use super::tar::{show, EntryKind, Header, TarReader};

/// Normalizes an archive path: no leading `/` or `./`, no trailing `/`;
/// the root is `.`. Paths with `..` are refused.
pub fn normalize(path: &[u8]) -> Result<Vec<u8>> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => bail!(
                "archive path {} leaves the target (contains ..)",
                show(path)
            ),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(b".".to_vec());
    }
    Ok(parts.join(&b'/'))
}

/// How far an archive is trusted.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Restore owners; else everything belongs to the restoring user, and
    /// files lose their setuid/setgid bits and file capabilities (GNU tar's
    /// `--no-same-owner`).
    pub same_owner: bool,
    /// Create device nodes; else they are skipped and counted.
    pub devices: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            same_owner: true,
            devices: true,
        }
    }
}

/// A directory created (or found) by an entry: its identity, and the mode
/// and times set last.
struct DirMeta {
    dev: u64,
    ino: u64,
    mode: u32,
    mtime: (i64, u32),
}

/// What a file gets once its content is written.
struct FileMeta {
    mode: u32,
    owner: Option<(u32, u32)>,
    /// Created with its final mode (no chmod needed).
    direct: bool,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    mtime: (i64, u32),
}

/// Refusals kept for the report (more are only counted).
const MAX_NAMED: usize = 1000;

/// Writes entries below one root directory.
pub struct Extractor {
    tree: Tree,
    cursor: Cursor,
    policy: Policy,
    is_root_user: bool,
    euid: u32,
    egid: u32,
    /// Where each hard-link leader's content went (path below the root).
    links: HashMap<Vec<u8>, Vec<u8>>,
    /// Directory modes and times, set last (deepest first).
    dirs: HashMap<Vec<u8>, DirMeta>,
    hasher: Option<Hasher>,
    pool: Option<Pool>,
    done: Vec<Done>,
    next_token: u64,
    umask: u32,
    /// Metadata that could not be restored (xattrs the target refuses...).
    pub warnings: Vec<String>,
    /// Entries not written because they would leave the tree, by name (the
    /// first [`MAX_NAMED`]); `refused_count` counts them all.
    pub refused: Vec<String>,
    pub refused_count: u64,
    /// Device nodes not created (`Policy::devices` off).
    pub devices_skipped: u64,
    pub bytes: u64,
}

impl Extractor {
    /// Writes below `rel` (normalized; `.` for `to` itself) of directory
    /// `to`, created beneath `to` when missing.
    pub fn new(to: &Path, rel: &[u8], policy: Policy) -> Result<Extractor> {
        let tree = Tree::open(to)?.subtree(rel, true)?;
        Ok(Extractor::on(tree, policy))
    }

    /// Writes below the root of `tree`.
    pub fn on(tree: Tree, policy: Policy) -> Extractor {
        let euid = nix::unistd::geteuid().as_raw();
        Extractor {
            cursor: Cursor::new(&tree),
            pool: Some(Pool::spawn(euid == 0, tree.show(b"."))),
            tree,
            policy,
            is_root_user: euid == 0,
            euid,
            egid: nix::unistd::getegid().as_raw(),
            links: HashMap::new(),
            dirs: HashMap::new(),
            hasher: Some(Hasher::spawn()),
            done: Vec::new(),
            next_token: 0,
            umask: current_umask(),
            warnings: Vec::new(),
            refused: Vec::new(),
            refused_count: 0,
            devices_skipped: 0,
            bytes: 0,
        }
    }

    /// Extracts the current entry of `tar` (header `h`) to `rel` (normalized
    /// path below the root). For a regular file, returns the token under
    /// which [`Extractor::take_hashes`] will report its content's SHA-256.
    /// An entry that would leave the tree is not written and goes to
    /// `refused`.
    pub fn extract<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        h: &Header,
        rel: &[u8],
    ) -> Result<Option<u64>> {
        match self.place(tar, h, rel) {
            Err(e) if e.downcast_ref::<Refused>().is_some() => {
                self.refuse(rel, &format!("{e:#}"));
                Ok(None)
            }
            r => r,
        }
    }

    /// Records (and logs, as a warning) an entry that was not written.
    pub fn refuse(&mut self, rel: &[u8], why: &str) {
        self.refused_count += 1;
        if self.refused.len() < MAX_NAMED {
            let line = format!("{}: {why}", show(rel));
            log::warn!("refused {line}");
            self.refused.push(line);
        }
    }

    fn place<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        h: &Header,
        rel: &[u8],
    ) -> Result<Option<u64>> {
        if rel == b"." {
            self.root_entry(h)?;
            return Ok(None);
        }
        if !self.policy.devices && matches!(h.kind, EntryKind::Char | EntryKind::Block) {
            self.devices_skipped += 1;
            return Ok(None);
        }
        self.settle(rel, h.kind == EntryKind::Dir)?;
        let (parent, name) = split(rel);
        let dir = self.parent_dir(parent)?;
        match h.kind {
            EntryKind::Dir => self.dir(&dir, rel, name, h).map(|_| None),
            EntryKind::File if h.sparse.is_none() && h.size <= SMALL => {
                self.small_file(tar, h, dir, rel).map(Some)
            }
            EntryKind::File => self.file(tar, h, &dir, rel, name).map(Some),
            EntryKind::HardLink => self.hard_link(h, &dir, rel, name).map(|_| None),
            EntryKind::Symlink => self.symlink(h, &dir, rel, name).map(|_| None),
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
                self.node(h, &dir, rel, name).map(|_| None)
            }
        }
    }

    /// Keeps archive order: waits for a worker still writing `rel` or into
    /// it; a non-directory entry lets go of the directory it replaces.
    fn settle(&mut self, rel: &[u8], is_dir: bool) -> Result<()> {
        if self.pool.as_ref().is_some_and(|p| p.busy(rel)) {
            self.drain()?;
        }
        if !is_dir {
            self.cursor.forget(rel);
            self.dirs.remove(rel);
        }
        Ok(())
    }

    /// The handle of directory `parent` (created when missing), after the
    /// workers are done with any file in its way (a file where the archive
    /// later wants a directory is then refused, not raced).
    fn parent_dir(&mut self, parent: &[u8]) -> Result<Arc<OwnedFd>> {
        let held = self.cursor.held_len(parent);
        if held < parent.len() {
            let ends = (held + 1..parent.len())
                .filter(|&i| parent[i] == b'/')
                .chain([parent.len()]);
            let pool = self.pool.as_ref().expect("pool runs until drop");
            if ends.into_iter().any(|i| pool.holds(&parent[..i])) {
                self.drain()?;
            }
        }
        self.cursor.dir(&self.tree, parent)
    }

    /// The archive's entry for the root itself: its owner, xattrs, and (at
    /// the end) mode and times.
    fn root_entry(&mut self, h: &Header) -> Result<()> {
        if h.kind != EntryKind::Dir {
            return Err(Refused(format!(
                "the archive's root entry is a {:?}, not a directory",
                h.kind
            ))
            .into());
        }
        let fd = self
            .tree
            .root()
            .try_clone()
            .context("duplicating a handle")?;
        self.own_dir(fd, b".", h)
    }

    fn dir(&mut self, parent: &OwnedFd, rel: &[u8], name: &[u8], h: &Header) -> Result<()> {
        let shown = || self.tree.show(rel);
        let mut tries = 0;
        let fd = loop {
            tries += 1;
            match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io::Error::from(e)).with_context(|| creating(&shown())),
            }
            match rfs::openat(parent, name, DIR, Mode::empty()) {
                Ok(fd) => break fd,
                // A symlink or a file in the way: replaced, never followed.
                Err(Errno::LOOP | Errno::NOTDIR) if tries < 3 => clear_at(parent, name, &shown)?,
                // Moved away meanwhile: made again.
                Err(Errno::NOENT) if tries < 3 => {}
                Err(Errno::LOOP | Errno::NOTDIR | Errno::NOENT) => {
                    return Err(Refused(format!(
                        "{} keeps being replaced during the restore",
                        shown().display()
                    ))
                    .into())
                }
                Err(e) => {
                    return Err(io::Error::from(e))
                        .with_context(|| format!("opening {}", shown().display()))
                }
            }
        };
        self.own_dir(fd, rel, h)
    }

    /// Owner and xattrs of a directory entry now, its mode and times last.
    fn own_dir(&mut self, fd: OwnedFd, rel: &[u8], h: &Header) -> Result<()> {
        let shown = self.tree.show(rel);
        let st = rfs::fstat(&fd).with_context(|| format!("reading {}", shown.display()))?;
        if self.policy.same_owner {
            self.owner_result(fsio::set_fd_owner(fd.as_fd(), h.uid, h.gid), &shown)?;
        }
        let list = self.xattr_list(&shown, h, true);
        for w in apply_xattrs(On::Fd(fd.as_fd()), &list, self.is_root_user) {
            self.warn(&shown, &w);
        }
        self.dirs.insert(
            rel.to_vec(),
            DirMeta {
                dev: st.st_dev,
                ino: st.st_ino,
                mode: h.mode,
                mtime: (h.mtime_sec, h.mtime_nsec),
            },
        );
        if rel != b"." {
            self.cursor.enter(rel, Arc::new(fd));
        }
        Ok(())
    }

    fn owner_result(&self, r: io::Result<()>, shown: &Path) -> Result<()> {
        match r {
            Ok(()) => Ok(()),
            Err(e) if !self.is_root_user && e.raw_os_error() == Some(libc::EPERM) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("setting the owner of {}", shown.display())),
        }
    }

    /// What a regular file gets after its content.
    fn file_meta(&mut self, shown: &Path, h: &Header) -> FileMeta {
        let mode = self.mode_of(h);
        let owner = (self.policy.same_owner && (h.uid != self.euid || h.gid != self.egid))
            .then_some((h.uid, h.gid));
        let xattrs = if h.xattrs.is_empty() && h.acl_access.is_none() {
            Vec::new()
        } else {
            self.xattr_list(shown, h, false)
        };
        FileMeta {
            mode,
            owner,
            direct: mode & !0o777 == 0 && mode & self.umask == 0,
            xattrs,
            mtime: (h.mtime_sec, h.mtime_nsec),
        }
    }

    /// The mode of a non-directory: without its set-id bits when owners are
    /// not restored.
    fn mode_of(&self, h: &Header) -> u32 {
        if self.policy.same_owner {
            h.mode
        } else {
            h.mode & !(libc::S_ISUID | libc::S_ISGID)
        }
    }

    /// A small file, read whole and handed to a worker thread.
    fn small_file<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        h: &Header,
        dir: Arc<OwnedFd>,
        rel: &[u8],
    ) -> Result<u64> {
        let shown = self.tree.show(rel);
        let mut data = vec![0u8; h.size as usize];
        read_full(tar, &mut data, &shown)?;
        self.bytes += h.size;
        let meta = self.file_meta(&shown, h);
        self.next_token += 1;
        let job = FileJob {
            dir,
            rel: rel.to_vec(),
            data,
            meta,
            token: self.next_token,
        };
        let pool = self.pool.as_mut().expect("pool runs until drop");
        pool.send(job)?;
        // Collect what is done without waiting.
        while let Some(d) = pool.recv(false)? {
            self.done.push(d);
        }
        self.links.insert(rel.to_vec(), rel.to_vec());
        Ok(self.next_token)
    }

    /// A large or sparse file, written here while the hasher hashes it.
    fn file<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        h: &Header,
        dir: &OwnedFd,
        rel: &[u8],
        name: &[u8],
    ) -> Result<u64> {
        let shown = self.tree.show(rel);
        let meta = self.file_meta(&shown, h);
        let mode = if meta.direct { meta.mode } else { 0o600 };
        let mut f = create_at(dir, name, mode, &|| shown.clone())?;
        let token = self.write_content(tar, h, &mut f, &shown)?;
        for w in finish_file(&f, &meta, self.is_root_user, &shown)? {
            self.warn(&shown, &w);
        }
        self.links.insert(rel.to_vec(), rel.to_vec());
        Ok(token)
    }

    fn hard_link(&mut self, h: &Header, dir: &OwnedFd, rel: &[u8], name: &[u8]) -> Result<()> {
        // The leader may still be in a worker's hands.
        self.drain()?;
        let leader = normalize(&h.link)
            .map_err(|e| Refused(format!("hard link to {}: {e:#}", show(&h.link))))?;
        let Some(src) = self.links.get(&leader).cloned() else {
            return Err(Refused(format!(
                "hard link to {}, which is not an earlier file of this archive",
                show(&leader)
            ))
            .into());
        };
        let (sdir, sname) = split(&src);
        let from = self.tree.open_dir(sdir)?;
        let shown = || self.tree.show(rel);
        make_at(dir, name, &shown, || {
            rfs::linkat(&from, sname, dir, name, AtFlags::empty())
        })
    }

    fn symlink(&mut self, h: &Header, dir: &OwnedFd, rel: &[u8], name: &[u8]) -> Result<()> {
        let shown = self.tree.show(rel);
        make_at(dir, name, &|| shown.clone(), || {
            rfs::symlinkat(h.link.as_slice(), dir, name)
        })?;
        self.special_meta(h, dir, name, &shown, None)
    }

    /// Device nodes and fifos.
    fn node(&mut self, h: &Header, dir: &OwnedFd, rel: &[u8], name: &[u8]) -> Result<()> {
        let shown = self.tree.show(rel);
        let kind = match h.kind {
            EntryKind::Char => libc::S_IFCHR,
            EntryKind::Block => libc::S_IFBLK,
            _ => libc::S_IFIFO,
        };
        make_at(dir, name, &|| shown.clone(), || {
            fsio::mknod_at(dir.as_fd(), name, kind, 0o600, h.dev_major, h.dev_minor)
                .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
        })?;
        self.special_meta(h, dir, name, &shown, Some(kind))
    }

    /// Owner, mode (not for symlinks), xattrs and times of `name` in `dir`,
    /// which is not opened.
    fn special_meta(
        &mut self,
        h: &Header,
        dir: &OwnedFd,
        name: &[u8],
        shown: &Path,
        kind: Option<libc::mode_t>,
    ) -> Result<()> {
        if self.policy.same_owner {
            let r = fsio::set_owner_at(dir.as_fd(), name, h.uid, h.gid);
            self.owner_result(r, shown)?;
        }
        if let Some(kind) = kind {
            fsio::set_node_mode_at(dir.as_fd(), name, kind, self.mode_of(h))
                .with_context(|| format!("setting the mode of {}", shown.display()))?;
        }
        let list = self.xattr_list(shown, h, false);
        for w in apply_xattrs(On::At(dir.as_fd(), name), &list, self.is_root_user) {
            self.warn(shown, &w);
        }
        fsio::set_times_at(dir.as_fd(), name, h.mtime_sec, h.mtime_nsec)
            .with_context(|| format!("setting the times of {}", shown.display()))
    }

    /// Waits for the worker threads' files; the first error they met.
    fn drain(&mut self) -> Result<()> {
        if let Some(pool) = self.pool.as_mut() {
            while let Some(d) = pool.recv(true)? {
                self.done.push(d);
            }
        }
        let mut first = None;
        for d in &mut self.done {
            for w in d.warnings.drain(..) {
                if self.warnings.len() < MAX_NAMED {
                    self.warnings.push(w);
                }
            }
            if first.is_none() {
                first = d.error.take();
            }
        }
        match first {
            Some(e) => bail!("{e}"),
            None => Ok(()),
        }
    }

    /// The SHA-256 of every file written since the last call, by token.
    pub fn take_hashes(&mut self) -> Result<HashMap<u64, String>> {
        self.drain()?;
        let mut out = match self.hasher.take() {
            Some(h) => {
                let out = h.finish();
                self.hasher = Some(Hasher::spawn());
                out
            }
            None => HashMap::new(),
        };
        for d in self.done.drain(..) {
            out.insert(d.token, d.sha256);
        }
        Ok(out)
    }

    /// Records that a hard-link leader's content is at `dest` (when the
    /// leader itself was written elsewhere, for a `--path` restore).
    pub fn alias_leader(&mut self, leader: &[u8], dest: &[u8]) {
        self.links.insert(leader.to_vec(), dest.to_vec());
    }

    fn write_content<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        h: &Header,
        f: &mut File,
        dest: &Path,
    ) -> Result<u64> {
        let werr =
            |e: io::Error| anyhow::Error::from(e).context(format!("writing {}", dest.display()));
        let hasher = self.hasher.as_mut().expect("hasher runs until finish");
        let segments = match &h.sparse {
            None => vec![(0, h.size)],
            Some(map) => map.segments.clone(),
        };
        let mut pos = 0u64;
        for (off, len) in segments {
            if off > pos {
                hasher.zeros(off - pos);
                f.seek(io::SeekFrom::Start(off)).map_err(werr)?;
            }
            let mut left = len;
            while left > 0 {
                let k = left.min(CHUNK as u64) as usize;
                let mut buf = hasher.buffer(k);
                read_full(tar, &mut buf[..k], dest)?;
                f.write_all(&buf).map_err(werr)?;
                hasher.data(buf);
                left -= k as u64;
                self.bytes += k as u64;
            }
            pos = off + len;
        }
        if h.size > pos {
            hasher.zeros(h.size - pos);
        }
        if h.sparse.is_some() {
            // A trailing hole (or an empty last segment) sets the length.
            f.set_len(h.size).map_err(werr)?;
        }
        self.next_token += 1;
        hasher.end(self.next_token);
        Ok(self.next_token)
    }

    /// The xattrs to set for `h`: its SCHILY.xattr records plus ACLs that
    /// came only as text, security.capability last (and dropped when owners
    /// are not restored: it grants privileges as a setuid bit does).
    fn xattr_list(&mut self, dest: &Path, h: &Header, is_dir: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut list: Vec<(Vec<u8>, Vec<u8>)> = h.xattrs.clone();
        let has = |l: &[(Vec<u8>, Vec<u8>)], n: &[u8]| l.iter().any(|(k, _)| k == n);
        if let Some(text) = &h.acl_access {
            if !has(&list, acl::ACCESS) {
                match acl::from_text(text) {
                    Ok(bin) => list.push((acl::ACCESS.to_vec(), bin)),
                    Err(e) => self.warn(dest, &format!("ACL: {e:#}")),
                }
            }
        }
        if let Some(text) = &h.acl_default {
            if is_dir && !has(&list, acl::DEFAULT) {
                match acl::from_text(text) {
                    Ok(bin) => list.push((acl::DEFAULT.to_vec(), bin)),
                    Err(e) => self.warn(dest, &format!("default ACL: {e:#}")),
                }
            }
        }
        if !self.policy.same_owner {
            list.retain(|(k, _)| k.as_slice() != CAPABILITY);
        }
        // security.capability last: nothing after it may clear it.
        list.sort_by_key(|(k, _)| k.as_slice() == CAPABILITY);
        list
    }

    fn warn(&mut self, dest: &Path, what: &str) {
        if self.warnings.len() < MAX_NAMED {
            self.warnings.push(format!("{}: {what}", dest.display()));
        }
    }

    /// Sets directory modes and times, deepest first, each through a handle
    /// of the very directory created; one replaced meanwhile (by a later
    /// entry's parent gone, or by someone else) is refused, not followed.
    pub fn finish(&mut self) -> Result<()> {
        self.drain()?;
        self.done.clear();
        self.cursor = Cursor::new(&self.tree);
        let mut dirs: Vec<(Vec<u8>, DirMeta)> = self.dirs.drain().collect();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(if rel == b"." { 0 } else { rel.len() }));
        for (rel, meta) in dirs {
            match self.dir_meta(&rel, &meta) {
                Err(e) if e.downcast_ref::<Refused>().is_some() => {
                    self.refuse(&rel, &format!("{e:#}"));
                }
                r => r?,
            }
        }
        Ok(())
    }

    fn dir_meta(&self, rel: &[u8], m: &DirMeta) -> Result<()> {
        let shown = self.tree.show(rel);
        let gone = || {
            Refused(format!(
                "{} was replaced during the restore; its mode and times are not set",
                shown.display()
            ))
        };
        let fd = match self.tree.open_dir(rel) {
            Ok(fd) => fd,
            Err(e) if is_not_found(&e) => return Err(gone().into()),
            Err(e) if e.downcast_ref::<Refused>().is_some() => {
                return Err(Refused(format!("{e:#}; its mode and times are not set")).into())
            }
            Err(e) => return Err(e),
        };
        let st = rfs::fstat(&fd).with_context(|| format!("reading {}", shown.display()))?;
        if (st.st_dev, st.st_ino) != (m.dev, m.ino) {
            return Err(gone().into());
        }
        rfs::fchmod(&fd, Mode::from_raw_mode(m.mode & 0o7777))
            .map_err(io::Error::from)
            .with_context(|| format!("setting the mode of {}", shown.display()))?;
        fsio::set_fd_times(fd.as_fd(), m.mtime.0, m.mtime.1)
            .with_context(|| format!("setting the times of {}", shown.display()))
    }

    /// Flushes the file system of the root to disk (syncfs).
    pub fn sync(&self) -> Result<()> {
        rfs::syncfs(self.tree.root().as_ref())
            .map_err(io::Error::from)
            .with_context(|| format!("syncing {}", self.tree.show(b".").display()))
    }
}

const CHUNK: usize = 1 << 20;

/// Files up to this size are written by the worker threads.
const SMALL: u64 = 1 << 20;
const WORKERS: usize = 2;

const CAPABILITY: &[u8] = b"security.capability";

const DIR: OFlags = OFlags::DIRECTORY
    .union(OFlags::RDONLY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn creating(p: &Path) -> String {
    format!("creating {}", p.display())
}

fn read_full<R: Read>(tar: &mut TarReader<R>, buf: &mut [u8], dest: &Path) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let n = tar.read_data(&mut buf[got..])?;
        if n == 0 {
            bail!("data of {} ends early", dest.display());
        }
        got += n;
    }
    Ok(())
}

/// Runs `make` (which creates `name` in `dir`); when something is in the
/// way, removes it (never following it) and runs `make` again.
fn make_at<T>(
    dir: &OwnedFd,
    name: &[u8],
    shown: &dyn Fn() -> PathBuf,
    mut make: impl FnMut() -> rustix::io::Result<T>,
) -> Result<T> {
    match make() {
        Err(Errno::EXIST) => {
            clear_at(dir, name, shown)?;
            make()
        }
        r => r,
    }
    .map_err(io::Error::from)
    .with_context(|| creating(&shown()))
}

/// Removes `name` from `dir` (an empty directory too): what is in the way
/// of a new entry.
fn clear_at(dir: &OwnedFd, name: &[u8], shown: &dyn Fn() -> PathBuf) -> Result<()> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => {
            return Err(io::Error::from(e))
                .with_context(|| format!("reading {}", shown().display()))
        }
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
            .map_err(io::Error::from)
            .with_context(|| {
                format!(
                    "{} is a non-empty directory in the way of a file",
                    shown().display()
                )
            })
    } else {
        rfs::unlinkat(dir, name, AtFlags::empty())
            .map_err(io::Error::from)
            .with_context(|| format!("replacing {}", shown().display()))
    }
}

/// Creates the regular file `name` in `dir` (replacing what is there, never
/// following a symlink), open for writing.
fn create_at(dir: &OwnedFd, name: &[u8], mode: u32, shown: &dyn Fn() -> PathBuf) -> Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = make_at(dir, name, shown, || {
        rfs::openat(dir, name, flags, Mode::from_raw_mode(mode))
    })?;
    Ok(File::from(fd))
}

/// Owner, mode, xattrs and times of a file whose content is written;
/// returns the xattrs it did not take.
fn finish_file(f: &File, m: &FileMeta, is_root: bool, shown: &Path) -> Result<Vec<String>> {
    if let Some((uid, gid)) = m.owner {
        match fsio::set_fd_owner(f.as_fd(), uid, gid) {
            Ok(()) => {}
            Err(e) if !is_root && e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("setting the owner of {}", shown.display()))
            }
        }
    }
    if !m.direct || m.owner.is_some() {
        rfs::fchmod(f, Mode::from_raw_mode(m.mode & 0o7777))
            .map_err(io::Error::from)
            .with_context(|| format!("setting the mode of {}", shown.display()))?;
    }
    let warnings = apply_xattrs(On::Fd(f.as_fd()), &m.xattrs, is_root);
    fsio::set_fd_times(f.as_fd(), m.mtime.0, m.mtime.1)
        .with_context(|| format!("setting the times of {}", shown.display()))?;
    Ok(warnings)
}

/// Where xattrs go: an open file or directory, or a name in a directory
/// (symlinks, device nodes and fifos, which are not opened).
#[derive(Clone, Copy)]
enum On<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a [u8]),
}

fn apply_xattrs(on: On, list: &[(Vec<u8>, Vec<u8>)], is_root: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, value) in list {
        let r = match on {
            On::Fd(fd) => fsio::set_fd_xattr(fd, name, value),
            On::At(dir, n) => fsio::set_xattr_at(dir, n, name, value),
        };
        if let Err(e) = r {
            if !is_root && name.starts_with(b"trusted.") {
                continue;
            }
            warnings.push(format!("xattr {}: {e}", show(name)));
        }
    }
    warnings
}

/// A small file, read whole, for a worker to create, fill and finish.
struct FileJob {
    /// Its directory, resolved beneath the root by the main thread.
    dir: Arc<OwnedFd>,
    rel: Vec<u8>,
    data: Vec<u8>,
    meta: FileMeta,
    token: u64,
}

struct Done {
    token: u64,
    rel: Vec<u8>,
    sha256: String,
    warnings: Vec<String>,
    error: Option<String>,
}

/// Worker threads that write small files, so that creating files (the
/// kernel's share of a restore) runs on every core. The paths they hold
/// are tracked, so that an entry waits for an earlier one for the same
/// path (or for a file in a directory it replaces).
struct Pool {
    tx: Option<std::sync::mpsc::SyncSender<FileJob>>,
    rx: std::sync::mpsc::Receiver<Done>,
    handles: Vec<std::thread::JoinHandle<()>>,
    pending: usize,
    /// Paths of the files in the workers' hands.
    paths: HashSet<Vec<u8>>,
    /// Their directories, with how many files each.
    parents: HashMap<Vec<u8>, usize>,
}

impl Pool {
    fn spawn(is_root: bool, root: PathBuf) -> Pool {
        let (tx, jobs) = std::sync::mpsc::sync_channel::<FileJob>(64);
        let jobs = Arc::new(std::sync::Mutex::new(jobs));
        let (done_tx, rx) = std::sync::mpsc::channel::<Done>();
        let root = Arc::new(root);
        let handles = (0..WORKERS)
            .map(|_| {
                let jobs = jobs.clone();
                let done_tx = done_tx.clone();
                let root = root.clone();
                std::thread::spawn(move || loop {
                    let job = match jobs.lock() {
                        Ok(j) => j.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let sha256 = hex::encode(Sha256::digest(&job.data));
                    let (warnings, error) = match write_job(&job, &root, is_root) {
                        Ok(w) => (w, None),
                        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
                    };
                    let _ = done_tx.send(Done {
                        token: job.token,
                        rel: job.rel,
                        sha256,
                        warnings,
                        error,
                    });
                })
            })
            .collect();
        Pool {
            tx: Some(tx),
            rx,
            handles,
            pending: 0,
            paths: HashSet::new(),
            parents: HashMap::new(),
        }
    }

    /// Whether a worker holds a file at `rel` or directly inside it.
    fn busy(&self, rel: &[u8]) -> bool {
        self.pending > 0 && (self.paths.contains(rel) || self.parents.contains_key(rel))
    }

    /// Whether a worker holds a file at `rel`.
    fn holds(&self, rel: &[u8]) -> bool {
        self.pending > 0 && self.paths.contains(rel)
    }

    fn send(&mut self, job: FileJob) -> Result<()> {
        *self.parents.entry(split(&job.rel).0.to_vec()).or_default() += 1;
        self.paths.insert(job.rel.clone());
        self.pending += 1;
        self.tx
            .as_ref()
            .expect("open")
            .send(job)
            .map_err(|_| anyhow::anyhow!("file writer threads stopped"))
    }

    /// A finished file: waiting for one when `wait` and any are pending.
    fn recv(&mut self, wait: bool) -> Result<Option<Done>> {
        if self.pending == 0 {
            return Ok(None);
        }
        let d = if wait {
            let d = self.rx.recv();
            Some(d.map_err(|_| anyhow::anyhow!("file writer threads stopped"))?)
        } else {
            self.rx.try_recv().ok()
        };
        if let Some(d) = &d {
            self.pending -= 1;
            self.paths.remove(&d.rel);
            let parent = split(&d.rel).0;
            if let Some(n) = self.parents.get_mut(parent) {
                *n -= 1;
                if *n == 0 {
                    self.parents.remove(parent);
                }
            }
        }
        Ok(d)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn write_job(job: &FileJob, root: &Path, is_root: bool) -> Result<Vec<String>> {
    let shown = || root.join(std::ffi::OsStr::from_bytes(&job.rel));
    let m = &job.meta;
    let mode = if m.direct { m.mode } else { 0o600 };
    let mut f = create_at(&job.dir, split(&job.rel).1, mode, &shown)?;
    f.write_all(&job.data)
        .with_context(|| format!("writing {}", shown().display()))?;
    finish_file(&f, m, is_root, &shown())
}

fn current_umask() -> u32 {
    // SAFETY: umask only swaps the process mask; it is put back at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old as u32
    }
}

enum HashMsg {
    Data(Vec<u8>),
    Zeros(u64),
    End(u64),
}

/// Hashes file contents in its own thread, so that writing files does not
/// wait for SHA-256; buffers go back to the writer for reuse.
struct Hasher {
    tx: std::sync::mpsc::SyncSender<HashMsg>,
    back: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: std::thread::JoinHandle<HashMap<u64, String>>,
}

impl Hasher {
    fn spawn() -> Hasher {
        let (tx, rx) = std::sync::mpsc::sync_channel::<HashMsg>(16);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            let mut out = HashMap::new();
            let mut h = Sha256::new();
            for msg in rx {
                match msg {
                    HashMsg::Data(mut buf) => {
                        h.update(&buf);
                        buf.clear();
                        let _ = back_tx.send(buf);
                    }
                    HashMsg::Zeros(n) => super::create::hash_zeros(&mut h, n),
                    HashMsg::End(token) => {
                        let done = std::mem::replace(&mut h, Sha256::new());
                        out.insert(token, hex::encode(done.finalize()));
                    }
                }
            }
            out
        });
        Hasher { tx, back, handle }
    }

    /// A buffer of `len` bytes to fill (recycled when one is free).
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        let mut b = self
            .back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        b.resize(len, 0);
        b
    }

    fn data(&mut self, buf: Vec<u8>) {
        let _ = self.tx.send(HashMsg::Data(buf));
    }

    fn zeros(&mut self, n: u64) {
        let _ = self.tx.send(HashMsg::Zeros(n));
    }

    fn end(&mut self, token: u64) {
        let _ = self.tx.send(HashMsg::End(token));
    }

    fn finish(self) -> HashMap<u64, String> {
        drop(self.tx);
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::tar::TarWriter;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// An archive of `(path, kind, data or link target, mode)` entries owned
    /// by the current user.
    fn archive(entries: &[(&str, EntryKind, &str, u32)]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (path, kind, body, mode) in entries {
            let mut h = Header::new(path.as_bytes().to_vec(), *kind);
            h.mode = *mode;
            h.uid = nix::unistd::geteuid().as_raw();
            h.gid = nix::unistd::getegid().as_raw();
            h.mtime_sec = 1_000_000_000;
            match kind {
                EntryKind::File => h.size = body.len() as u64,
                _ => h.link = body.as_bytes().to_vec(),
            }
            w.header(&h).unwrap();
            if *kind == EntryKind::File {
                w.write_raw(body.as_bytes()).unwrap();
                w.pad().unwrap();
            }
        }
        w.finish().unwrap()
    }

    /// Extracts `data` into `dir` (component walks only when `walk`).
    fn extract_all(data: &[u8], dir: &Path, walk: bool) -> Extractor {
        let mut tree = Tree::open(dir).unwrap();
        if walk {
            tree = tree.without_openat2();
        }
        let mut ex = Extractor::on(tree, Policy::default());
        let mut tar = TarReader::new(data);
        while let Some(h) = tar.next_header().unwrap() {
            let rel = normalize(&h.path).unwrap();
            ex.extract(&mut tar, &h, &rel).unwrap();
        }
        ex.finish().unwrap();
        ex
    }

    #[test]
    fn later_entries_replace_earlier_ones_in_archive_order() {
        use EntryKind::*;
        let mut entries = Vec::new();
        let names: Vec<[String; 4]> = (0..200)
            .map(|i| [0, 1, 2, 3].map(|k| format!("{}{i}", ["f", "s", "d", "l"][k])))
            .collect();
        for [f, s, d, l] in &names {
            entries.push((f.as_str(), File, "first", 0o644));
            entries.push((f.as_str(), File, "second", 0o600));
            entries.push((s.as_str(), File, "a file", 0o644));
            entries.push((s.as_str(), Symlink, "target", 0o777));
            entries.push((d.as_str(), File, "a file", 0o644));
            entries.push((d.as_str(), Dir, "", 0o750));
            entries.push((l.as_str(), Symlink, "target", 0o777));
            entries.push((l.as_str(), File, "last", 0o640));
        }
        let data = archive(&entries);
        for walk in [false, true] {
            let t = tempfile::tempdir().unwrap();
            extract_all(&data, t.path(), walk);
            for [f, s, d, l] in &names {
                let p = |n: &str| t.path().join(n);
                assert_eq!(std::fs::read(p(f)).unwrap(), b"second", "{f}");
                assert_eq!(std::fs::read_link(p(s)).unwrap(), Path::new("target"));
                let m = std::fs::symlink_metadata(p(d)).unwrap();
                assert!(m.is_dir() && m.mode() & 0o7777 == 0o750, "{d}");
                let m = std::fs::symlink_metadata(p(l)).unwrap();
                assert!(m.is_file() && m.mode() & 0o7777 == 0o640, "{l}");
            }
        }
    }

    #[test]
    fn nothing_is_written_through_a_symlink() {
        use EntryKind::*;
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = outside.to_str().unwrap();
        let data = archive(&[
            ("a", Symlink, out, 0o777),
            ("a/file", File, "x", 0o4755),
            ("a/dir/deeper", File, "x", 0o644),
            ("a/fifo", Fifo, "", 0o666),
            ("b", Symlink, "a", 0o777),
            ("b/file", File, "x", 0o644),
            ("up", Symlink, "..", 0o777),
            ("up/outside/file", File, "x", 0o644),
            ("link", HardLink, &format!("{out}/secret"), 0o644),
            ("d", Dir, "", 0o777),
            ("d", Symlink, out, 0o777),
            ("kept", File, "kept", 0o644),
        ]);
        for walk in [false, true] {
            let target = t.path().join(format!("target-{walk}"));
            std::fs::create_dir(&target).unwrap();
            let ex = extract_all(&data, &target, walk);
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
            let m = std::fs::metadata(&outside).unwrap();
            assert_eq!(m.mode() & 0o7777, 0o755);
            assert_eq!(ex.refused_count, 6, "{:?}", ex.refused);
            for name in [
                "a/file",
                "a/dir/deeper",
                "a/fifo",
                "b/file",
                "up/outside/file",
                "link",
            ] {
                let named = ex
                    .refused
                    .iter()
                    .any(|r| r.starts_with(&format!("{name}: ")));
                assert!(named, "{name} not refused: {:?}", ex.refused);
            }
            assert_eq!(std::fs::read(target.join("kept")).unwrap(), b"kept");
            assert_eq!(std::fs::read_link(target.join("d")).unwrap(), outside);
        }
    }

    #[test]
    fn paths_are_normalized_and_confined() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"./", Some(b".")),
            (b"./etc/passwd", Some(b"etc/passwd")),
            (b"/etc//ssh/", Some(b"etc/ssh")),
            (b"", Some(b".")),
            (b"a/../../etc", None),
            (b"..", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).ok().as_deref(), *want, "{}", show(input));
        }
    }
}
