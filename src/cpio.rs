//! A writer for the newc ("070701") cpio format that the kernel unpacks as an
//! initramfs. Output is deterministic: the caller decides the order, every
//! entry is owned by root, and all entries share one mtime.

use std::io::{self, Read, Write};

use anyhow::{bail, Context, Result};

pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
    mtime: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W, mtime: u32) -> CpioWriter<W> {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
            mtime,
        }
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.header(path, S_IFDIR | (mode & 0o7777), 2, 0, 0)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        self.header(path, S_IFLNK | 0o777, 1, target.len() as u64, 0)?;
        self.data(&mut target.as_bytes(), target.len() as u64)
    }

    /// A character device node (`/dev/console` must exist before devtmpfs is
    /// mounted so that the kernel can open it for init).
    pub fn char_device(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> Result<()> {
        self.header(path, S_IFCHR | (mode & 0o7777), 1, 0, (major << 8) | minor)
    }

    pub fn file(&mut self, path: &str, mode: u32, size: u64, data: &mut dyn Read) -> Result<()> {
        if size > u32::MAX as u64 {
            bail!("{path}: {size} bytes is too large for a newc cpio entry (4 GiB limit)");
        }
        self.header(path, S_IFREG | (mode & 0o7777), 1, size, 0)?;
        self.data(data, size)
            .with_context(|| format!("adding {path} to the initramfs"))
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        self.next_ino = 0;
        self.header("TRAILER!!!", 0, 1, 0, 0)?;
        // Pad the archive to a 512-byte boundary, as GNU cpio does.
        let pad = (512 - self.written % 512) % 512;
        self.write(&vec![0u8; pad as usize])?;
        Ok(self.out)
    }

    fn header(&mut self, path: &str, mode: u32, nlink: u32, size: u64, rdev: u32) -> Result<()> {
        let name = path.trim_start_matches('/');
        if name.is_empty() {
            bail!("empty path in cpio archive");
        }
        let ino = self.next_ino;
        if self.next_ino != 0 {
            self.next_ino += 1;
        }
        let mtime = if name == "TRAILER!!!" { 0 } else { self.mtime };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            mtime,
            size as u32,
            0,           // devmajor
            0,           // devminor
            rdev >> 8,   // rdevmajor
            rdev & 0xff, // rdevminor
            name.len() as u32 + 1,
            0, // check
        ];
        let mut h = String::with_capacity(110 + name.len() + 4);
        h.push_str("070701");
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        h.push_str(name);
        h.push('\0');
        self.write(h.as_bytes())?;
        self.align4()
    }

    fn data(&mut self, data: &mut dyn Read, size: u64) -> Result<()> {
        let copied = io::copy(&mut data.take(size), &mut CountingWriter(self))?;
        if copied != size {
            bail!("file changed size while being read ({copied} of {size} bytes)");
        }
        self.align4()
    }

    fn align4(&mut self) -> Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.write(&[0u8; 3][..pad as usize])
    }

    fn write(&mut self, buf: &[u8]) -> Result<()> {
        self.out.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(())
    }
}

struct CountingWriter<'a, W: Write>(&'a mut CpioWriter<W>);

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.out.write(buf)?;
        self.0.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.out.flush()
    }
}

/// The paths in an initramfs image: one or more newc archives back to back
/// (an uncompressed early-microcode archive, then the main one), each
/// possibly compressed with zstd or gzip.
pub fn list_initramfs(mut data: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    loop {
        while data.first() == Some(&0) {
            data = &data[1..];
        }
        if data.is_empty() {
            return Ok(names);
        }
        if data.starts_with(b"070701") || data.starts_with(b"070702") {
            data = read_newc(data, &mut names)?;
        } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(data)?.read_to_end(&mut out)?;
            names.extend(list_initramfs(&out)?);
            return Ok(names);
        } else if data.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out)?;
            names.extend(list_initramfs(&out)?);
            return Ok(names);
        } else {
            bail!(
                "unknown initramfs segment (starts with {:02x?}): only cpio, zstd and gzip are read",
                &data[..data.len().min(4)]
            );
        }
    }
}

/// Reads one newc archive, adding its paths; returns what follows it.
fn read_newc<'a>(mut data: &'a [u8], names: &mut Vec<String>) -> Result<&'a [u8]> {
    loop {
        if data.len() < 110 {
            bail!("truncated cpio header");
        }
        let field = |i: usize| -> Result<usize> {
            let t = std::str::from_utf8(&data[6 + i * 8..14 + i * 8])?;
            Ok(usize::from_str_radix(t, 16)?)
        };
        let size = field(6)?;
        let namesize = field(11)?;
        let name_end = 110 + namesize;
        if data.len() < name_end {
            bail!("truncated cpio name");
        }
        let name = String::from_utf8_lossy(&data[110..name_end - 1]).into_owned();
        let data_start = name_end.div_ceil(4) * 4;
        let next = (data_start + size).div_ceil(4) * 4;
        if data.len() < data_start + size {
            bail!("truncated cpio entry {name}");
        }
        data = &data[next.min(data.len())..];
        if name == "TRAILER!!!" {
            return Ok(data);
        }
        names.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new(), 1_700_000_000);
        w.dir("etc", 0o755).unwrap();
        w.file("etc/motd", 0o644, 6, &mut &b"hello\n"[..]).unwrap();
        w.symlink("etc/issue", "motd").unwrap();
        w.dir("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("odd", 0o755, 3, &mut &b"abc"[..]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn layout_is_aligned_and_padded() {
        let bytes = sample();
        assert_eq!(bytes.len() % 512, 0);
        assert!(bytes.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("TRAILER!!!"));
    }

    #[test]
    fn initramfs_listing_reads_concatenated_and_compressed_archives() {
        let early = sample();
        let main = zstd::bulk::compress(&sample(), 3).unwrap();
        let mut image = early.clone();
        image.extend(&main);
        let names = list_initramfs(&image).unwrap();
        assert_eq!(
            names.iter().filter(|n| *n == "etc/motd").count(),
            2,
            "{names:?}"
        );
        assert!(names.contains(&"dev/console".to_string()));
        assert!(list_initramfs(b"garbage!").is_err());
    }

    #[test]
    fn same_input_same_bytes() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn gnu_cpio_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, sample()).unwrap();
        let list = Command::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .expect("cpio is installed (scripts/install-deps.sh)");
        assert!(list.status.success());
        let listing = String::from_utf8(list.stdout).unwrap();
        assert!(listing.contains("etc/issue -> motd"), "{listing}");
        assert!(listing.contains("crw-------"), "{listing}");
        let out = dir.path().join("x");
        std::fs::create_dir(&out).unwrap();
        let st = Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&archive)
            .current_dir(&out)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(out.join("etc/motd")).unwrap(), b"hello\n");
        assert_eq!(std::fs::read(out.join("odd")).unwrap(), b"abc");
        assert_eq!(
            std::fs::read_link(out.join("etc/issue")).unwrap(),
            std::path::Path::new("motd")
        );
    }
}
