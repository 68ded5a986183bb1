//! POSIX tar (ustar + PAX extended headers), written and read by hand.
//!
//! What GNU tar and bsdtar both read back: names that do not fit ustar and
//! times in nanoseconds go into PAX records, xattrs as `SCHILY.xattr.NAME`,
//! POSIX ACLs as `SCHILY.acl.access`/`SCHILY.acl.default` text (and as the
//! binary `system.posix_acl_*` xattrs, like GNU tar), sparse files in the GNU
//! sparse 1.0 PAX format (map at the start of the data). The reader
//! (tar/read.rs) takes what GNU tar 1.34 writes too, with limits for untrusted
//! archives.

use std::io::{self, Write};

#[cfg(test)]
mod foreign_tests;
mod read;
pub use read::{
    is_header_block, parse_pax, parse_time, TarError, TarReader, MAX_EXTENSION_BYTES, MAX_ID,
    MAX_PAX_RECORDS, MAX_SPARSE_SEGMENTS, MAX_XATTRS,
};

pub const BLOCK: usize = 512;

/// The kind of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
}

impl EntryKind {
    fn typeflag(self) -> u8 {
        match self {
            EntryKind::File => b'0',
            EntryKind::HardLink => b'1',
            EntryKind::Symlink => b'2',
            EntryKind::Char => b'3',
            EntryKind::Block => b'4',
            EntryKind::Dir => b'5',
            EntryKind::Fifo => b'6',
        }
    }
}

/// A sparse file's data map: (offset, length) of each data segment, and the
/// file's real size.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SparseMap {
    pub segments: Vec<(u64, u64)>,
    pub real_size: u64,
}

impl SparseMap {
    /// Bytes of data the segments hold.
    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().fold(0, |n, s| n.saturating_add(s.1))
    }

    /// Checks what a reader must: at most [`MAX_SPARSE_SEGMENTS`] segments,
    /// sorted, not overlapping, each ending within the real size.
    pub fn check(&self) -> Result<(), String> {
        if self.segments.len() > MAX_SPARSE_SEGMENTS {
            return Err(format!(
                "sparse map of {} segments (at most {MAX_SPARSE_SEGMENTS})",
                self.segments.len()
            ));
        }
        let mut end = 0;
        for &(off, len) in &self.segments {
            match off.checked_add(len) {
                Some(e) if off >= end && e <= self.real_size => end = e,
                _ => {
                    return Err(format!(
                        "sparse segment ({off}, {len}) out of order or past the real size {}",
                        self.real_size
                    ))
                }
            }
        }
        Ok(())
    }

    /// The GNU sparse 1.0 map block: decimal count, then offset and length of
    /// each segment, one number a line, padded with NULs to whole blocks.
    pub fn encode_1_0(&self) -> Vec<u8> {
        let mut text = format!("{}\n", self.segments.len());
        for (off, len) in &self.segments {
            text.push_str(&format!("{off}\n{len}\n"));
        }
        let mut bytes = text.into_bytes();
        bytes.resize(padded(bytes.len() as u64) as usize, 0);
        bytes
    }
}

/// An entry header: what the writer writes and the reader returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Path as stored, relative; directories end with `/`.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including set-id and sticky bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub uname: String,
    pub gname: String,
    /// Size of the content (the real size for a sparse file).
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    /// Symlink target or hard link leader path.
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Extended attributes, ACL xattrs included, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// `SCHILY.acl.access` / `.default` text.
    pub acl_access: Option<String>,
    pub acl_default: Option<String>,
    /// Set for sparse files; `size` is then `sparse.real_size`.
    pub sparse: Option<SparseMap>,
}

impl Header {
    pub fn new(path: Vec<u8>, kind: EntryKind) -> Header {
        Header {
            path,
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
            acl_access: None,
            acl_default: None,
            sparse: None,
        }
    }

    /// Bytes of data that follow the header in the archive.
    pub fn data_size(&self) -> u64 {
        match (&self.sparse, self.kind) {
            (Some(map), _) => map.encode_1_0().len() as u64 + map.data_bytes(),
            (None, EntryKind::File) => self.size,
            _ => 0,
        }
    }
}

/// Rounds up to whole blocks.
pub fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

/// One PAX record: `LEN KEY=VALUE\n`, LEN counting the whole record.
pub fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Writes `value` as NUL-terminated octal into `field`, or base-256 when it
/// does not fit (GNU tar and bsdtar read both).
fn put_num(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits < 22 && value >= 1u64 << (3 * digits) {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = (field.len() - 1).min(8);
        let start = field.len() - n;
        field[start..].copy_from_slice(&bytes[8 - n..]);
        return;
    }
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// Splits a path into ustar (prefix, name), if it fits.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    if path.len() > 256 {
        return None;
    }
    // The last '/' that leaves a name of at most 100 bytes and a prefix of
    // at most 155 (a trailing '/' of a directory stays in the name).
    let search_end = path.len() - 1;
    for i in (0..search_end).rev() {
        if path[i] == b'/' {
            let (prefix, name) = (&path[..i], &path[i + 1..]);
            if name.len() > 100 {
                return None;
            }
            if prefix.len() <= 155 && !name.is_empty() {
                return Some((prefix, name));
            }
        }
    }
    None
}

fn ustar_block(
    name: &[u8],
    prefix: &[u8],
    h: &Header,
    typeflag: u8,
    size: u64,
    link: &[u8],
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    put_num(&mut b[100..108], u64::from(h.mode & 0o7777));
    put_num(&mut b[108..116], u64::from(h.uid));
    put_num(&mut b[116..124], u64::from(h.gid));
    put_num(&mut b[124..136], size);
    put_num(&mut b[136..148], h.mtime_sec.max(0) as u64);
    b[156] = typeflag;
    b[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    let un = h.uname.as_bytes();
    b[265..265 + un.len().min(31)].copy_from_slice(&un[..un.len().min(31)]);
    let gn = h.gname.as_bytes();
    b[297..297 + gn.len().min(31)].copy_from_slice(&gn[..gn.len().min(31)]);
    if matches!(h.kind, EntryKind::Char | EntryKind::Block) {
        put_num(&mut b[329..337], u64::from(h.dev_major));
        put_num(&mut b[337..345], u64::from(h.dev_minor));
    }
    b[345..345 + prefix.len().min(155)].copy_from_slice(&prefix[..prefix.len().min(155)]);
    set_checksum(&mut b);
    b
}

/// Writes the checksum of a header block (the first 512 bytes of `b`).
pub fn set_checksum(b: &mut [u8]) {
    let b = &mut b[..BLOCK];
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
}

/// The header blocks of one entry (a PAX header when needed, then ustar).
pub fn encode_header(h: &Header) -> Vec<u8> {
    let mut pax = Vec::new();
    let mut path = h.path.clone();
    if let Some(map) = &h.sparse {
        // GNU sparse 1.0: the real name in GNU.sparse.name, a stand-in in
        // the ustar header, the real size in GNU.sparse.realsize.
        pax_record(&mut pax, b"GNU.sparse.major", b"1");
        pax_record(&mut pax, b"GNU.sparse.minor", b"0");
        pax_record(&mut pax, b"GNU.sparse.name", &h.path);
        pax_record(
            &mut pax,
            b"GNU.sparse.realsize",
            map.real_size.to_string().as_bytes(),
        );
        let (dir, base) = split_dir(&h.path);
        let mut stand_in = dir.to_vec();
        stand_in.extend_from_slice(b"GNUSparseFile.0/");
        stand_in.extend_from_slice(base);
        path = stand_in;
    }
    let split = split_ustar(&path);
    if split.is_none() && h.sparse.is_none() {
        pax_record(&mut pax, b"path", &path);
    }
    if h.link.len() > 100 {
        pax_record(&mut pax, b"linkpath", &h.link);
    }
    let size = h.data_size();
    if size >= 1 << 33 {
        pax_record(&mut pax, b"size", size.to_string().as_bytes());
    }
    if h.uid >= 1 << 21 {
        pax_record(&mut pax, b"uid", h.uid.to_string().as_bytes());
    }
    if h.gid >= 1 << 21 {
        pax_record(&mut pax, b"gid", h.gid.to_string().as_bytes());
    }
    if h.mtime_nsec != 0 || h.mtime_sec < 0 || h.mtime_sec >= 1 << 33 {
        pax_record(
            &mut pax,
            b"mtime",
            format_time(h.mtime_sec, h.mtime_nsec).as_bytes(),
        );
    }
    if let Some(acl) = &h.acl_access {
        pax_record(&mut pax, b"SCHILY.acl.access", acl.as_bytes());
    }
    if let Some(acl) = &h.acl_default {
        pax_record(&mut pax, b"SCHILY.acl.default", acl.as_bytes());
    }
    for (name, value) in &h.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(name);
        pax_record(&mut pax, &key, value);
    }
    let mut out = Vec::with_capacity(2 * BLOCK + padded(pax.len() as u64) as usize);
    if !pax.is_empty() {
        let (dir, base) = split_dir(&h.path);
        let mut pname = dir.to_vec();
        pname.extend_from_slice(b"PaxHeaders/");
        pname.extend_from_slice(base);
        pname.truncate(100);
        let ph = Header::new(Vec::new(), EntryKind::File);
        out.extend_from_slice(&ustar_block(
            &pname,
            &[],
            &Header { mode: 0o644, ..ph },
            b'x',
            pax.len() as u64,
            &[],
        ));
        let len = pax.len();
        out.extend_from_slice(&pax);
        out.resize(out.len() + (padded(len as u64) as usize - len), 0);
    }
    let (prefix, name) = split.unwrap_or((&[], &path[..path.len().min(100)]));
    let typeflag = h.kind.typeflag();
    out.extend_from_slice(&ustar_block(name, prefix, h, typeflag, size, &h.link));
    out
}

/// `sec.nnnnnnnnn` with trailing zeros of the fraction removed.
pub fn format_time(sec: i64, nsec: u32) -> String {
    if nsec == 0 {
        return sec.to_string();
    }
    // A negative time with a fraction: -1.5 is sec=-2, nsec=5e8.
    let (sign, whole, frac) = if sec < 0 {
        ("-", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        ("", sec, nsec)
    };
    let f = format!("{frac:09}");
    format!("{sign}{whole}.{}", f.trim_end_matches('0'))
}

fn split_dir(path: &[u8]) -> (&[u8], &[u8]) {
    let trimmed = path.strip_suffix(b"/").unwrap_or(path);
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&[], trimmed),
    }
}

/// The end of an archive: two zero blocks.
pub const END: [u8; 2 * BLOCK] = [0; 2 * BLOCK];

/// Bytes shown as text, non-UTF-8 bytes escaped.
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// A tar stream writer: counts what it writes, pads data to whole blocks.
pub struct TarWriter<W: Write> {
    out: W,
    pos: u64,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out, pos: 0 }
    }

    pub fn header(&mut self, h: &Header) -> io::Result<()> {
        let bytes = encode_header(h);
        self.write_raw(&bytes)?;
        if let Some(map) = &h.sparse {
            self.write_raw(&map.encode_1_0())?;
        }
        Ok(())
    }

    pub fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.pos += data.len() as u64;
        Ok(())
    }

    /// Pads the stream to a whole block after an entry's data.
    pub fn pad(&mut self) -> io::Result<()> {
        let rem = (self.pos % BLOCK as u64) as usize;
        if rem != 0 {
            self.write_raw(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.write_raw(&END)?;
        self.out.flush()?;
        Ok(self.out)
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The writer below (to mark entry boundaries in it).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_lengths_count_themselves() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"path", b"a", b"9 path=a\n"),
            (b"mtime", b"1.5", b"13 mtime=1.5\n"),
            // 99 + 3 digits: the length crosses a power of ten.
            (b"k", &[b'v'; 93], b""),
        ];
        for (k, v, want) in cases {
            let mut out = Vec::new();
            pax_record(&mut out, k, v);
            let len: usize =
                std::str::from_utf8(&out[..out.iter().position(|&b| b == b' ').unwrap()])
                    .unwrap()
                    .parse()
                    .unwrap();
            assert_eq!(len, out.len(), "{}", show(&out));
            if !want.is_empty() {
                assert_eq!(out, *want);
            }
            let parsed = parse_pax(&out).unwrap();
            assert_eq!(parsed, vec![(k.to_vec(), v.to_vec())]);
        }
        assert!(parse_pax(b"99 path=a\n").is_err());
        assert!(parse_pax(b"x path=a\n").is_err());
    }

    #[test]
    fn times_round_trip() {
        for (s, n, text) in [
            (0, 0, "0"),
            (1_795_674_341, 814_517_322, "1795674341.814517322"),
            (5, 500_000_000, "5.5"),
            (-2, 500_000_000, "-1.5"),
            (-3, 0, "-3"),
        ] {
            assert_eq!(format_time(s, n), text);
            assert_eq!(parse_time(text.as_bytes()).unwrap(), (s, n));
        }
        assert!(parse_time(b"1.x").is_err());
    }

    #[test]
    fn numbers_octal_and_base256() {
        for (width, value) in [
            (8, 0o644u64),
            (12, 123_456_789),
            (12, 1 << 40),
            (8, 1 << 30),
        ] {
            let mut f = vec![0u8; width];
            put_num(&mut f, value);
            assert_eq!(
                read::get_unsigned(&f, "n").unwrap(),
                value,
                "width {width} value {value}"
            );
        }
        let mut f = [0u8; 8];
        put_num(&mut f, 0o755);
        assert_eq!(&f, b"0000755\0");
        // GNU tar's base-256: 0x80 positive, 0xff negative (two's
        // complement), as `tar --format=gnu` writes an mtime of -2^31.
        let neg = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0,
        ];
        assert_eq!(read::get_signed(&neg), Ok(-(1 << 31)));
        assert!(read::get_unsigned(&neg, "size")
            .unwrap_err()
            .contains("negative size"));
        let big = [0x80, 0, 0, 0, 0, 0, 0, 3, 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(read::get_signed(&big), Ok(0x3_7fff_ffff));
        // Beyond i64, other first bytes, bad digits: errors, not wraps.
        assert!(read::get_signed(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(read::get_signed(&[0xc0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(read::get_signed(b"0000080\0").is_err());
        assert!(read::get_signed(b"+000007\0").is_err());
        assert_eq!(read::get_signed(b"  755 \0\0"), Ok(0o755));
    }

    #[test]
    fn ustar_split() {
        let long_dir = "d".repeat(120);
        let cases = [
            ("short".to_string(), Some(("", "short"))),
            (
                format!("{long_dir}/name"),
                Some((long_dir.as_str(), "name")),
            ),
            ("x".repeat(101), None),
            (format!("{}/{}", "a".repeat(200), "b"), None),
        ];
        for (path, want) in cases {
            let got = split_ustar(path.as_bytes()).map(|(p, n)| (show(p), show(n)));
            assert_eq!(
                got,
                want.map(|(p, n)| (p.to_string(), n.to_string())),
                "{path}"
            );
        }
    }

    fn round_trip(h: &Header, data: &[u8]) -> (Header, Vec<u8>) {
        let mut w = TarWriter::new(Vec::new());
        w.header(h).unwrap();
        w.write_raw(data).unwrap();
        w.pad().unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let mut entries = super::foreign_tests::read_all(&bytes);
        assert_eq!(entries.len(), 1);
        entries.remove(0)
    }

    #[test]
    fn headers_round_trip() {
        let mut file = Header::new(b"etc/passwd".to_vec(), EntryKind::File);
        file.size = 5;
        file.mode = 0o4755;
        file.uid = 1000;
        file.gid = 3_000_000;
        file.uname = "alice".into();
        file.mtime_sec = 1_795_674_341;
        file.mtime_nsec = 1;
        file.xattrs = vec![
            (
                b"security.capability".to_vec(),
                vec![1, 0, 0, 2, 0, 0x20, 0, 0],
            ),
            (b"user.note".to_vec(), b"a=b\nc".to_vec()),
        ];
        file.acl_access =
            Some("user::rw-\nuser:1000:r--\ngroup::r--\nmask::r--\nother::r--\n".into());
        let mut long = Header::new(
            [&b"dir\xff/"[..], &[b'n'; 150], b"/", &[b'm'; 120]].concat(),
            EntryKind::Symlink,
        );
        long.link = vec![b't'; 300];
        let mut dev = Header::new(b"dev/sda".to_vec(), EntryKind::Block);
        dev.dev_major = 8;
        dev.dev_minor = 300;
        let mut sparse = Header::new(b"var/sparse.img".to_vec(), EntryKind::File);
        sparse.sparse = Some(SparseMap {
            segments: vec![(0, 3), (1 << 20, 2), (5 << 20, 0)],
            real_size: 5 << 20,
        });
        sparse.size = 5 << 20;
        let cases: Vec<(Header, &[u8])> = vec![
            (file, b"hello"),
            (long, b""),
            (dev, b""),
            (Header::new(b"some/dir/".to_vec(), EntryKind::Dir), b""),
            (sparse, b"abcde"),
        ];
        for (h, data) in cases {
            let (got, content) = round_trip(&h, data);
            assert_eq!(got, h, "{}", show(&h.path));
            assert_eq!(content, data);
        }
    }

    #[test]
    fn damage_is_named() {
        let mut h = Header::new(b"a".to_vec(), EntryKind::File);
        h.size = 600;
        let mut w = TarWriter::new(Vec::new());
        w.header(&h).unwrap();
        w.write_raw(&[7u8; 600]).unwrap();
        w.pad().unwrap();
        let bytes = w.finish().unwrap();
        // Truncated inside the data.
        let mut r = TarReader::new(&bytes[..800]);
        r.next_header().unwrap();
        let err = r.next_header().unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        // A flipped byte in the header.
        let mut bad = bytes.clone();
        bad[5] ^= 1;
        let err = TarReader::new(&bad[..]).next_header().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        // Not a tar at all.
        let text = vec![b'x'; 2048];
        let err = TarReader::new(&text[..]).next_header().unwrap_err();
        assert!(err.to_string().contains("not a tar archive"), "{err}");
    }
}
