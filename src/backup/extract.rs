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
    buf: Vec<u8>,
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
            buf: vec![0u8; 1 << 20],
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
    /// path below the root). Returns the SHA-256 of a regular file's content.
    pub fn extract<R: Read>(
        &mut self,
        tar: &mut TarReader<R>,
        h: &Header,
        rel: &[u8],
    ) -> Result<Option<String>> {
        let dest = self.dest_of(rel);
        if let Some(parent) = dest.parent() {
            if rel != b"." && !parent.is_dir() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
        }
        let mut sum = None;
        match h.kind {
            EntryKind::Dir => {
                match fs::symlink_metadata(&dest) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        fs::remove_file(&dest)?;
                        fs::create_dir(&dest)?;
                    }
                    Err(_) => fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&dest)
                        .with_context(|| format!("creating {}", dest.display()))?,
                }
                self.owner(&dest, h)?;
                self.xattrs(&dest, h, true);
                self.dirs.push((dest, h.mode, h.mtime_sec, h.mtime_nsec));
                return Ok(None);
            }
            EntryKind::File => {
                self.clear(&dest)?;
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .with_context(|| format!("creating {}", dest.display()))?;
                sum = Some(self.write_content(tar, h, &mut f, &dest)?);
                if h.uid != self.euid || h.gid != self.egid {
                    self.owner(&dest, h)?;
                }
                f.set_permissions(fs::Permissions::from_mode(h.mode))
                    .with_context(|| format!("setting the mode of {}", dest.display()))?;
                self.xattrs(&dest, h, false);
                set_fd_times(&f, h.mtime_sec, h.mtime_nsec)
                    .with_context(|| format!("setting the times of {}", dest.display()))?;
                self.links.insert(rel.to_vec(), dest);
                return Ok(sum);
            }
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
        Ok(sum)
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
    ) -> Result<String> {
        let mut hash = Sha256::new();
        let werr =
            |e: io::Error| anyhow::Error::from(e).context(format!("writing {}", dest.display()));
        match &h.sparse {
            None => loop {
                let n = tar.read_data(&mut self.buf)?;
                if n == 0 {
                    break;
                }
                hash.update(&self.buf[..n]);
                f.write_all(&self.buf[..n]).map_err(werr)?;
                self.bytes += n as u64;
            },
            Some(map) => {
                let mut pos = 0u64;
                for &(off, len) in &map.segments {
                    super::create::hash_zeros(&mut hash, off - pos);
                    f.seek(io::SeekFrom::Start(off)).map_err(werr)?;
                    let mut left = len;
                    while left > 0 {
                        let k = left.min(self.buf.len() as u64) as usize;
                        let mut got = 0;
                        while got < k {
                            let n = tar.read_data(&mut self.buf[got..k])?;
                            if n == 0 {
                                bail!("sparse data of {} ends early", dest.display());
                            }
                            got += n;
                        }
                        hash.update(&self.buf[..k]);
                        f.write_all(&self.buf[..k]).map_err(werr)?;
                        left -= k as u64;
                        self.bytes += k as u64;
                    }
                    pos = off + len;
                }
                super::create::hash_zeros(&mut hash, map.real_size - pos);
                f.set_len(map.real_size).map_err(werr)?;
            }
        }
        Ok(hex::encode(hash.finalize()))
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
