//! Low-level file system calls the tar writer and extractor need and std
//! lacks: xattrs on the link itself, data/hole maps, nanosecond times on
//! symlinks, device nodes and fifos.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use sha2::{Digest, Sha256};

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path with a NUL byte"))
}

/// XFS lists its ACLs a second time under these names; they are the
/// same ACLs as `system.posix_acl_*` and mean nothing on other file systems.
const XFS_ACL_ALIASES: &[&[u8]] = &[b"trusted.SGI_ACL_FILE", b"trusted.SGI_ACL_DEFAULT"];

/// Every xattr of `path` (not following a symlink), sorted by name.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    let mut names = vec![0u8; 1024];
    let len = loop {
        // SAFETY: the buffer is valid for `names.len()` bytes.
        let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    };
    let mut out = Vec::new();
    for name in names[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && !XFS_ACL_ALIASES.contains(n))
    {
        let cname = CString::new(name).expect("split on NUL");
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: the buffer is valid for `value.len()` bytes.
            let n = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if n >= 0 {
                value.truncate(n as usize);
                out.push((name.to_vec(), value));
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ERANGE) => value.resize(value.len() * 16, 0),
                // Removed since listed.
                Some(libc::ENODATA) => break,
                _ => return Err(err),
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Sets one xattr on `path` itself (not a symlink's target).
pub fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    let c = cpath(path)?;
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "xattr name with a NUL byte"))?;
    // SAFETY: pointers valid for the given lengths.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// SHA-256 over sorted `name NUL value` pairs: the manifest's xattr digest.
pub fn xattr_digest(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Option<String> {
    if xattrs.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    for (name, value) in xattrs {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name);
        h.update((value.len() as u64).to_le_bytes());
        h.update(value);
    }
    Some(hex::encode(h.finalize()))
}

/// The data segments of a file of `size` bytes, by SEEK_DATA/SEEK_HOLE.
/// A file system without hole reporting gives one segment.
pub fn data_segments(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    let end = size as i64;
    while pos < end {
        // SAFETY: plain lseek on an open descriptor.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole up to the end
            }
            return Err(err);
        }
        if data >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let hole = hole.min(end);
        out.push((data as u64, (hole - data) as u64));
        pos = hole;
    }
    // SAFETY: rewind for the reader.
    unsafe { libc::lseek(fd, 0, libc::SEEK_SET) };
    Ok(out)
}

/// Sets access and modification time of `path` itself, in nanoseconds.
pub fn set_times(path: &Path, sec: i64, nsec: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    let times = [ts, ts];
    // SAFETY: valid path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets owner of `path` itself (not a symlink's target).
pub fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Creates a device node or fifo.
pub fn mknod(path: &Path, kind: libc::mode_t, perm: u32, major: u32, minor: u32) -> io::Result<()> {
    let c = cpath(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: valid path.
    let r = unsafe { libc::mknod(c.as_ptr(), kind | (perm & 0o7777), dev) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Used bytes of the file system holding `path` (blocks in use, as df says).
pub fn fs_used_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok((st.blocks() - st.blocks_free()) * st.fragment_size())
}

/// Flushes the whole file system holding `path` to disk (syncfs).
pub fn sync_fs(path: &Path) -> io::Result<()> {
    let dir = File::open(path)?;
    // SAFETY: syncfs on an open descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
