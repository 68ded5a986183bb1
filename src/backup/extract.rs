//! Writing tar entries into a directory tree: files (sparse ones with their
//! holes), directories, symlinks, hard links, device nodes and fifos, with
//! owner, mode, xattrs, ACLs and times in nanoseconds.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::acl;
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

/// Writes entries below one root directory.
pub struct Extractor {
    root: PathBuf,
    is_root_user: bool,
    euid: u32,
    egid: u32,
    /// Where each hard-link leader's content went.
    links: HashMap<Vec<u8>, PathBuf>,
    /// Directory modes and times, set last (deepest first).
    dirs: Vec<(PathBuf, u32, i64, u32)>,
    hasher: Option<Hasher>,
    next_token: u64,
    umask: u32,
    /// Metadata that could not be restored (xattrs the target refuses...).
    pub warnings: Vec<String>,
    pub bytes: u64,
}

impl Extractor {
    pub fn new(root: &Path) -> Extractor {
        let euid = nix::unistd::geteuid().as_raw();
        Extractor {
            root: root.to_path_buf(),
            is_root_user: euid == 0,
            euid,
            egid: nix::unistd::getegid().as_raw(),
            links: HashMap::new(),
            dirs: Vec::new(),
            hasher: Some(Hasher::spawn()),
            next_token: 0,
            umask: current_umask(),
            warnings: Vec::new(),
            bytes: 0,
        }
    }

    pub fn dest_of(&self, rel: &[u8]) -> PathBuf {
        if rel == b"." {
            self.root.clone()
        } else {
            use std::os::unix::ffi::OsStrExt;
            self.root.join(std::ffi::OsStr::from_bytes(rel))
        }
    }

    /// Extracts the current entry of `tar` (header `h`) to `rel` (normalized
    /// path below the root). For a regular file, returns the token under
    /// which [`Extractor::take_hashes`] will report its content's SHA-256.
    pub fn extract<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        h: &Header,
        rel: &[u8],
    ) -> Result<Option<u64>> {
        let dest = self.dest_of(rel);
        match h.kind {
            EntryKind::Dir => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&dest)?;
                        fs::create_dir(&dest)?;
                    }
                    Err(_) => {
                        self.parent(rel, &dest)?;
                        fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&dest)
                            .with_context(|| format!("creating {}", dest.display()))?
                    }
                }
                self.owner(&dest, h)?;
                self.xattrs(&dest, h, true);
                self.dirs.push((dest, h.mode, h.mtime_sec, h.mtime_nsec));
                return Ok(None);
            }
            EntryKind::File => {
                // Created with its final permissions when the umask lets
                // them through (saves a chmod per file).
                let direct = h.mode & !0o777 == 0 && h.mode & self.umask == 0;
                let create = |mode: u32| {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(mode)
                        .open(&dest)
                };
                let mode = if direct { h.mode } else { 0o600 };
                let mut f = match create(mode) {
                    Ok(f) => Ok(f),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        self.parent(rel, &dest)?;
                        create(mode)
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        self.clear(&dest)?;
                        create(mode)
                    }
                    Err(e) => Err(e),
                }
                .with_context(|| format!("creating {}", dest.display()))?;
                let token = self.write_content(tar, h, &mut f, &dest)?;
                if h.uid != self.euid || h.gid != self.egid {
                    self.owner(&dest, h)?;
                }
                if !direct || h.uid != self.euid || h.gid != self.egid {
                    f.set_permissions(fs::Permissions::from_mode(h.mode))
                        .with_context(|| format!("setting the mode of {}", dest.display()))?;
                }
                if !h.xattrs.is_empty() || h.acl_access.is_some() {
                    self.xattrs(&dest, h, false);
                }
                set_fd_times(&f, h.mtime_sec, h.mtime_nsec)
                    .with_context(|| format!("setting the times of {}", dest.display()))?;
                self.links.insert(rel.to_vec(), dest);
                return Ok(Some(token));
            }
            _ => self.parent(rel, &dest)?,
        }
        match h.kind {
            EntryKind::Dir | EntryKind::File => unreachable!("handled above"),
            EntryKind::HardLink => {
                let leader = normalize(&h.link)?;
                let Some(src) = self.links.get(&leader).cloned() else {
                    bail!(
                        "hard link {} points at {}, which was not restored before it",
                        show(rel),
                        show(&leader)
                    );
                };
                self.clear(&dest)?;
                fs::hard_link(&src, &dest)
                    .with_context(|| format!("linking {} to {}", dest.display(), src.display()))?;
                return Ok(None);
            }
            EntryKind::Symlink => {
                self.clear(&dest)?;
                use std::os::unix::ffi::OsStrExt;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&h.link), &dest)
                    .with_context(|| format!("creating symlink {}", dest.display()))?;
                self.owner(&dest, h)?;
            }
            EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
                self.clear(&dest)?;
                let kind = match h.kind {
                    EntryKind::Char => libc::S_IFCHR,
                    EntryKind::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                fsio::mknod(&dest, kind, 0o600, h.dev_major, h.dev_minor)
                    .with_context(|| format!("creating {}", dest.display()))?;
                self.owner(&dest, h)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(h.mode))?;
            }
        }
        self.xattrs(&dest, h, false);
        fsio::set_times(&dest, h.mtime_sec, h.mtime_nsec)
            .with_context(|| format!("setting the times of {}", dest.display()))?;
        Ok(None)
    }

    /// Creates the parent directory of `dest` when missing.
    fn parent(&self, rel: &[u8], dest: &Path) -> Result<()> {
        if rel == b"." {
            return Ok(());
        }
        if let Some(parent) = dest.parent() {
            if !parent.is_dir() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        Ok(())
    }

    /// The SHA-256 of every file written since the last call, by token.
    pub fn take_hashes(&mut self) -> HashMap<u64, String> {
        match self.hasher.take() {
            Some(h) => {
                let out = h.finish();
                self.hasher = Some(Hasher::spawn());
                out
            }
            None => HashMap::new(),
        }
    }

    /// Records that a hard-link leader's content is at `dest` (when the
    /// leader itself was written elsewhere, for a `--path` restore).
    pub fn alias_leader(&mut self, leader: &[u8], dest: PathBuf) {
        self.links.insert(leader.to_vec(), dest);
    }

    /// Removes what is in the way of a new non-directory entry.
    fn clear(&self, dest: &Path) -> Result<()> {
        match fs::symlink_metadata(dest) {
            Err(_) => Ok(()),
            Ok(m) if m.is_dir() => fs::remove_dir(dest).with_context(|| {
                format!(
                    "{} is a non-empty directory in the way of a file",
                    dest.display()
                )
            }),
            Ok(_) => fs::remove_file(dest).with_context(|| format!("replacing {}", dest.display())),
        }
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
                let mut got = 0;
                while got < k {
                    let n = tar.read_data(&mut buf[got..k])?;
                    if n == 0 {
                        bail!("data of {} ends early", dest.display());
                    }
                    got += n;
                }
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

    fn owner(&mut self, dest: &Path, h: &Header) -> Result<()> {
        match fsio::lchown(dest, h.uid, h.gid) {
            Ok(()) => Ok(()),
            Err(e) if !self.is_root_user && e.raw_os_error() == Some(libc::EPERM) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("setting the owner of {}", dest.display())),
        }
    }

    fn xattrs(&mut self, dest: &Path, h: &Header, is_dir: bool) {
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
        // security.capability last: nothing after it may clear it.
        list.sort_by_key(|(k, _)| k.as_slice() == b"security.capability");
        for (name, value) in list {
            if let Err(e) = fsio::set_xattr(dest, &name, &value) {
                if !self.is_root_user && name.starts_with(b"trusted.") {
                    continue;
                }
                self.warn(dest, &format!("xattr {}: {e}", show(&name)));
            }
        }
    }

    fn warn(&mut self, dest: &Path, what: &str) {
        if self.warnings.len() < 1000 {
            self.warnings.push(format!("{}: {what}", dest.display()));
        }
    }

    /// Sets directory modes and times, deepest first.
    pub fn finish(&mut self) -> Result<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.0.as_os_str().len()));
        for (dir, mode, sec, nsec) in dirs {
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", dir.display()))?;
            fsio::set_times(&dir, sec, nsec)
                .with_context(|| format!("setting the times of {}", dir.display()))?;
        }
        Ok(())
    }
}

const CHUNK: usize = 1 << 20;

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

fn set_fd_times(f: &File, sec: i64, nsec: u32) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    let times = [ts, ts];
    // SAFETY: open descriptor, two timespecs.
    let r = unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
