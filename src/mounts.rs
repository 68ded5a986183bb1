//! The running system's mount table (/proc/self/mountinfo) and active swap
//! (/proc/swaps): one parser of each, below every stage (capture, recovery's
//! safety checks, backups).

use std::path::Path;

use anyhow::{Context, Result};

/// Decodes the octal escapes of mountinfo, fstab and /proc/swaps
/// (`\040` is a space, `\011` a tab, `\012` a newline, `\134` a backslash).
pub fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = (digits[0] - b'0') as u32 * 64
                    + (digits[1] - b'0') as u32 * 8
                    + (digits[2] - b'0') as u32;
                if v <= 255 {
                    out.push(v as u8);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub id: u32,
    pub parent: u32,
    /// st_dev of the file system (anonymous `0:N` for btrfs, tmpfs...).
    pub devnum: (u32, u32),
    /// Root of the mount inside its file system.
    pub root: String,
    pub mountpoint: String,
    pub options: String,
    pub fstype: String,
    pub source: String,
    pub fs_options: String,
}

/// Parses /proc/self/mountinfo.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.splitn(3, ' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        let devnum = l[2]
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or((0, 0));
        out.push(MountInfo {
            id: l[0].parse().unwrap_or(0),
            parent: l[1].parse().unwrap_or(0),
            devnum,
            root: unescape_octal(l[3]),
            mountpoint: unescape_octal(l[4]),
            options: l[5].to_string(),
            fstype: r[0].to_string(),
            source: unescape_octal(r[1]),
            fs_options: r[2].to_string(),
        });
    }
    out
}

/// One line of /proc/swaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSwap {
    pub filename: String,
    pub is_file: bool,
    pub size_bytes: u64,
    pub priority: i32,
}

/// Parses /proc/swaps (sizes in KiB).
pub fn parse_swaps(text: &str) -> Vec<ActiveSwap> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 {
                return None;
            }
            Some(ActiveSwap {
                filename: unescape_octal(f[0]),
                is_file: f[1] == "file",
                size_bytes: f[2].parse::<u64>().ok()? * 1024,
                priority: f[4].parse().ok()?,
            })
        })
        .collect()
}

/// The mount table of the running system.
pub fn mountinfo() -> Result<Vec<MountInfo>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(parse_mountinfo(&text))
}

/// The active swap areas of the running system (none when /proc/swaps
/// cannot be read).
pub fn active_swaps() -> Vec<ActiveSwap> {
    parse_swaps(&std::fs::read_to_string("/proc/swaps").unwrap_or_default())
}

impl MountInfo {
    /// The mount point as a path.
    pub fn path(&self) -> &Path {
        Path::new(&self.mountpoint)
    }
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
        assert_eq!(m[0].devnum, (254, 1));
        assert_eq!(m[1].path(), Path::new("/mnt/with space"));
        assert_eq!(m[1].fstype, "xfs");
        assert_eq!(m[1].fs_options, "rw,attr2");
    }
}
