//! Low-level file system calls the tar writer and extractor need and std
//! lacks: xattrs on the link itself, data/hole maps; and for the extractor,
//! owner, mode, xattrs, nanosecond times and device nodes set through a
//! handle (the file's, or its directory's with the name, never following a
//! symlink).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
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
/// A file system without hole reporting gives one segment. At most
/// `tar::MAX_SPARSE_SEGMENTS` (what the reader accepts): past that, the
/// rest of the file is one segment, its holes stored as zeros.
pub fn data_segments(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    let end = size as i64;
    while pos < end {
        if out.len() + 1 == super::tar::MAX_SPARSE_SEGMENTS {
            out.push((pos as u64, (end - pos) as u64));
            break;
        }
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

fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name with a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `/proc/self/fd/N/NAME`: `name` in the directory of handle `dir`, reached
/// through the handle (for calls that have no `*at` form).
fn proc_path(dir: BorrowedFd, name: &[u8]) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name);
    cname(&p)
}

/// Sets one xattr on an open file or directory.
pub fn set_fd_xattr(fd: BorrowedFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cn = cname(name)?;
    // SAFETY: open descriptor, pointers valid for the given lengths.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Sets one xattr on `name` in directory `dir` itself, never a symlink's
/// target: for symlinks and device nodes, which are not opened. Needs /proc.
pub fn set_xattr_at(dir: BorrowedFd, name: &[u8], xname: &[u8], value: &[u8]) -> io::Result<()> {
    let p = proc_path(dir, name)?;
    let cn = cname(xname)?;
    // SAFETY: valid strings, pointers valid for the given lengths.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map_err(no_proc)
}

fn timespecs(sec: i64, nsec: u32) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    [ts, ts]
}

/// Sets access and modification time of an open file, in nanoseconds.
pub fn set_fd_times(fd: BorrowedFd, sec: i64, nsec: u32) -> io::Result<()> {
    let times = timespecs(sec, nsec);
    // SAFETY: open descriptor, two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

/// Sets access and modification time of `name` in `dir` itself.
pub fn set_times_at(dir: BorrowedFd, name: &[u8], sec: i64, nsec: u32) -> io::Result<()> {
    let c = cname(name)?;
    let times = timespecs(sec, nsec);
    // SAFETY: open descriptor, valid name, two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Sets the owner of an open file or directory.
pub fn set_fd_owner(fd: BorrowedFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: open descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

/// Sets the owner of `name` in `dir` itself (not a symlink's target).
pub fn set_owner_at(dir: BorrowedFd, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = cname(name)?;
    // SAFETY: open descriptor, valid name.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Creates a device node or fifo `name` in `dir`.
pub fn mknod_at(
    dir: BorrowedFd,
    name: &[u8],
    kind: libc::mode_t,
    perm: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let c = cname(name)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: open descriptor, valid name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), kind | (perm & 0o7777), dev) })
}

/// Sets the mode of the device node or fifo `name` in `dir`, which must be
/// of `kind` (never following a symlink put there meanwhile). Needs /proc.
pub fn set_node_mode_at(
    dir: BorrowedFd,
    name: &[u8],
    kind: libc::mode_t,
    mode: u32,
) -> io::Result<()> {
    let c = cname(name)?;
    // SAFETY: open descriptor, valid name; O_PATH opens nothing but a handle.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = rustix::fs::fstat(&fd)?;
    if st.st_mode & libc::S_IFMT != kind {
        return Err(io::Error::other("replaced by something else meanwhile"));
    }
    let p = cname(format!("/proc/self/fd/{}", fd.as_raw_fd()).as_bytes())?;
    // SAFETY: valid path; the magic link leads to the node itself.
    check(unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) }).map_err(no_proc)
}

/// ENOENT from a /proc/self/fd path means /proc is not mounted.
fn no_proc(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::NotFound && !Path::new("/proc/self/fd").exists() {
        io::Error::other("/proc is not mounted (mount it: mount -t proc proc /proc)")
    } else {
        e
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
