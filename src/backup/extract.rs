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
    pool: Option<Pool>,
    done: Vec<Done>,
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
            pool: Some(Pool::spawn(euid == 0)),
            done: Vec::new(),
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
            EntryKind::File if h.sparse.is_none() && h.size <= SMALL => {
                let mut data = vec![0u8; h.size as usize];
                let mut got = 0;
                while got < data.len() {
                    let n = tar.read_data(&mut data[got..])?;
                    if n == 0 {
                        bail!("data of {} ends early", dest.display());
                    }
                    got += n;
                }
                self.bytes += h.size;
                let xattrs = if h.xattrs.is_empty() && h.acl_access.is_none() {
                    Vec::new()
                } else {
                    self.xattr_list(&dest, h, false)
                };
                self.next_token += 1;
                let job = FileJob {
                    dest: dest.clone(),
                    data,
                    mode: h.mode,
                    uid: h.uid,
                    gid: h.gid,
                    chown: h.uid != self.euid || h.gid != self.egid,
                    direct: h.mode & !0o777 == 0 && h.mode & self.umask == 0,
                    xattrs,
                    mtime: (h.mtime_sec, h.mtime_nsec),
                    token: self.next_token,
                };
                let pool = self.pool.as_mut().expect("pool runs until drop");
                pool.tx
                    .as_ref()
                    .expect("open")
                    .send(job)
                    .map_err(|_| anyhow::anyhow!("file writer threads stopped"))?;
                pool.in_flight += 1;
                // Collect what is done without waiting.
                while let Ok(d) = pool.rx.try_recv() {
                    pool.in_flight -= 1;
                    self.done.push(d);
                }
                self.links.insert(rel.to_vec(), dest);
                return Ok(Some(self.next_token));
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
                // The leader may still be in a worker's hands.
                self.drain()?;
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

    /// Waits for the worker threads' files; the first error they met.
    fn drain(&mut self) -> Result<()> {
        if let Some(pool) = self.pool.as_mut() {
            while pool.in_flight > 0 {
                let d = pool
                    .rx
                    .recv()
                    .map_err(|_| anyhow::anyhow!("file writer threads stopped"))?;
                pool.in_flight -= 1;
                self.done.push(d);
            }
        }
        let mut first = None;
        for d in &mut self.done {
            for w in d.warnings.drain(..) {
                if self.warnings.len() < 1000 {
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
        let list = self.xattr_list(dest, h, is_dir);
        for w in apply_xattrs(dest, list, self.is_root_user) {
            self.warn(dest, &w);
        }
    }

    /// The xattrs to set for `h`: its SCHILY.xattr records plus ACLs that
    /// came only as text, security.capability last.
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
        // security.capability last: nothing after it may clear it.
        list.sort_by_key(|(k, _)| k.as_slice() == b"security.capability");
        list
    }

    fn warn(&mut self, dest: &Path, what: &str) {
        if self.warnings.len() < 1000 {
            self.warnings.push(format!("{}: {what}", dest.display()));
        }
    }

    /// Sets directory modes and times, deepest first.
    pub fn finish(&mut self) -> Result<()> {
        self.drain()?;
        self.done.clear();
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

/// Files up to this size are written by the worker threads.
const SMALL: u64 = 1 << 20;
const WORKERS: usize = 2;

fn apply_xattrs(dest: &Path, list: Vec<(Vec<u8>, Vec<u8>)>, is_root: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, value) in list {
        if let Err(e) = fsio::set_xattr(dest, &name, &value) {
            if !is_root && name.starts_with(b"trusted.") {
                continue;
            }
            warnings.push(format!("xattr {}: {e}", show(&name)));
        }
    }
    warnings
}

/// A small file, read whole, for a worker to create, fill and finish.
struct FileJob {
    dest: PathBuf,
    data: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    chown: bool,
    direct: bool,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    mtime: (i64, u32),
    token: u64,
}

struct Done {
    token: u64,
    sha256: String,
    warnings: Vec<String>,
    error: Option<String>,
}

/// Worker threads that write small files, so that creating files (the
/// kernel's share of a restore) runs on every core.
struct Pool {
    tx: Option<std::sync::mpsc::SyncSender<FileJob>>,
    rx: std::sync::mpsc::Receiver<Done>,
    handles: Vec<std::thread::JoinHandle<()>>,
    in_flight: usize,
}

impl Pool {
    fn spawn(is_root: bool) -> Pool {
        let (tx, jobs) = std::sync::mpsc::sync_channel::<FileJob>(64);
        let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
        let (done_tx, rx) = std::sync::mpsc::channel::<Done>();
        let handles = (0..WORKERS)
            .map(|_| {
                let jobs = jobs.clone();
                let done_tx = done_tx.clone();
                std::thread::spawn(move || loop {
                    let job = match jobs.lock() {
                        Ok(j) => j.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let token = job.token;
                    let sha256 = hex::encode(Sha256::digest(&job.data));
                    let (warnings, error) = match write_job(job, is_root) {
                        Ok(w) => (w, None),
                        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
                    };
                    let _ = done_tx.send(Done {
                        token,
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
            in_flight: 0,
        }
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

fn write_job(job: FileJob, is_root: bool) -> Result<Vec<String>> {
    let dest = &job.dest;
    let mode = if job.direct { job.mode } else { 0o600 };
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dest)
    };
    let mut f = match create() {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            create()
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            match fs::symlink_metadata(dest) {
                Ok(m) if m.is_dir() => fs::remove_dir(dest),
                _ => fs::remove_file(dest),
            }
            .with_context(|| format!("replacing {}", dest.display()))?;
            create()
        }
        Err(e) => Err(e),
    }
    .with_context(|| format!("creating {}", dest.display()))?;
    f.write_all(&job.data)
        .with_context(|| format!("writing {}", dest.display()))?;
    if job.chown {
        match fsio::lchown(dest, job.uid, job.gid) {
            Ok(()) => {}
            Err(e) if !is_root && e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("setting the owner of {}", dest.display()))
            }
        }
    }
    if !job.direct || job.chown {
        f.set_permissions(fs::Permissions::from_mode(job.mode))
            .with_context(|| format!("setting the mode of {}", dest.display()))?;
    }
    let warnings = apply_xattrs(dest, job.xattrs, is_root);
    set_fd_times(&f, job.mtime.0, job.mtime.1)
        .with_context(|| format!("setting the times of {}", dest.display()))?;
    Ok(warnings)
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
