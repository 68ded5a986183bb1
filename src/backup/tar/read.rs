//! The tar reader: ustar, PAX (`x`, `g`), GNU (`L`, `K`, `D`, `V`, old
//! sparse `S` with extension blocks, base-256 numbers) and the three GNU
//! sparse PAX formats (0.0, 0.1, 1.0), all mapped onto [`SparseMap`].
//!
//! The input is untrusted: every size is checked before anything is
//! allocated or read, extension headers are bounded per entry, ids outside
//! what Linux can hold are refused, and no input makes the reader panic.

use std::io::{self, Read};

use anyhow::Result;

use super::{padded, show, EntryKind, Header, SparseMap, BLOCK};

/// PAX (`x`, `g`) and GNU long-name (`L`, `K`) headers before one entry,
/// their header blocks included, take at most this many bytes.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// PAX records of one entry, all its `x` headers together.
pub const MAX_PAX_RECORDS: usize = 65_536;
/// xattrs of one entry: above what Linux can hold on one file (listxattr
/// returns at most 64 KiB of names, each at least 7 bytes: `user.x\0`).
pub const MAX_XATTRS: usize = 10_000;
/// Data segments of one sparse file (16 bytes each in memory).
pub const MAX_SPARSE_SEGMENTS: usize = 1 << 20;
/// The largest uid/gid: 2^32-1 is `(uid_t)-1`, "no change" to chown.
pub const MAX_ID: u64 = u32::MAX as u64 - 1;
/// Sizes and offsets are `off_t`.
const MAX_SIZE: u64 = i64::MAX as u64;
/// Old GNU sparse: slots in the header and in each extension block.
const OLD_GNU_HEADER_SLOTS: usize = 4;
const OLD_GNU_EXTENSION_SLOTS: usize = 21;

/// Why reading an archive stopped.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("archive is truncated (ends at byte {0} inside {1})")]
    Truncated(u64, &'static str),
    #[error("not a tar archive or corrupted: bad header checksum at byte {0}")]
    BadChecksum(u64),
    #[error("corrupted tar header at byte {0}: {1}")]
    BadHeader(u64, String),
    /// Well-formed but beyond what lifeboat accepts (sizes, ids, counts).
    #[error("refused tar entry at byte {0}: {1}")]
    Refused(u64, String),
}

/// A numeric header field: octal digits padded with spaces or NULs, or GNU
/// base-256 (first byte 0x80 for a positive number, 0xff for a negative
/// one in two's complement).
pub(super) fn get_signed(field: &[u8]) -> Result<i64, String> {
    match field.first() {
        Some(&first @ (0x80 | 0xff)) => {
            // At most 12 bytes: 96 bits fit an i128.
            let mut v: i128 = if first == 0xff { -1 } else { 0 };
            for &b in field.iter().skip(1).take(15) {
                v = (v << 8) | i128::from(b);
            }
            i64::try_from(v).map_err(|_| format!("base-256 number {v} out of range"))
        }
        Some(&first) if first & 0x80 != 0 => {
            Err(format!("bad number field (first byte {first:#x})"))
        }
        _ => {
            let text: Vec<u8> = field
                .iter()
                .copied()
                .skip_while(|&b| b == b' ')
                .take_while(|&b| b != 0 && b != b' ')
                .collect();
            if text.is_empty() {
                return Ok(0);
            }
            if !text.iter().all(|b| (b'0'..=b'7').contains(b)) || text.len() > 21 {
                return Err(format!("bad octal number {:?}", show(&text)));
            }
            text.iter()
                .try_fold(0i64, |v, &d| {
                    v.checked_mul(8)?.checked_add(i64::from(d - b'0'))
                })
                .ok_or_else(|| format!("octal number {} out of range", show(&text)))
        }
    }
}

/// A numeric header field that must not be negative.
pub(super) fn get_unsigned(field: &[u8], what: &str) -> Result<u64, String> {
    let v = get_signed(field).map_err(|e| format!("{what}: {e}"))?;
    u64::try_from(v).map_err(|_| format!("negative {what} {v}"))
}

/// A decimal number of a PAX record or a sparse map: digits only.
fn decimal(text: &[u8], what: &str) -> Result<u64, String> {
    if let Some(digits) = text.strip_prefix(b"-") {
        if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
            return Err(format!("negative {what} -{}", show(digits)));
        }
    }
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad {what} {:?}", show(text)));
    }
    text.iter()
        .try_fold(0u64, |v, &d| {
            v.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or_else(|| format!("{what} {} out of range", show(text)))
}

/// A size or offset: at most `i64::MAX`.
fn size_value(text: &[u8], what: &str) -> Result<u64, String> {
    let v = decimal(text, what)?;
    if v > MAX_SIZE {
        return Err(format!("{what} {v} out of range"));
    }
    Ok(v)
}

/// PAX records of one `x` header: `LEN KEY=VALUE\n`, LEN counting the whole
/// record.
struct PaxRecords<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PaxRecords<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.iter().all(|&b| b == 0) {
            return None;
        }
        self.rest = &[];
        let Some(sp) = rest.iter().take(21).position(|&b| b == b' ') else {
            return Some(Err("bad PAX record: no length".into()));
        };
        let len = match decimal(&rest[..sp], "PAX record length") {
            Ok(n) => n,
            Err(e) => return Some(Err(e)),
        };
        if len <= sp as u64 + 1 || len > rest.len() as u64 || rest[len as usize - 1] != b'\n' {
            return Some(Err(format!("bad PAX record of length {len}")));
        }
        let len = len as usize;
        let rec = &rest[sp + 1..len - 1];
        let Some(eq) = rec.iter().position(|&b| b == b'=') else {
            return Some(Err("bad PAX record: no '='".into()));
        };
        self.rest = &rest[len..];
        Some(Ok((&rec[..eq], &rec[eq + 1..])))
    }
}

/// Parses PAX records into (key, value) pairs.
pub fn parse_pax(data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    PaxRecords { rest: data }
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, String>>()
        .map_err(anyhow::Error::msg)
}

/// A PAX time: `[-]SECONDS[.FRACTION]`.
pub fn parse_time(text: &[u8]) -> Result<(i64, u32)> {
    let bad = || anyhow::anyhow!("bad PAX time {:?}", show(text));
    let (neg, s) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = match s.iter().position(|&b| b == b'.') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &[][..]),
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let whole = i64::try_from(decimal(whole, "PAX time").map_err(|_| bad())?).map_err(|_| bad())?;
    let nsec = (0..9).fold(0u32, |n, i| {
        n * 10 + frac.get(i).map_or(0, |d| u32::from(d - b'0'))
    });
    Ok(if !neg {
        (whole, nsec)
    } else if nsec == 0 {
        (-whole, 0)
    } else {
        (-whole - 1, 1_000_000_000 - nsec)
    })
}

/// What the `x` headers before an entry said.
#[derive(Default)]
struct PaxFields {
    records: usize,
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    /// Ids as text: checked once the entry's name is known.
    uid: Option<Vec<u8>>,
    gid: Option<Vec<u8>>,
    uname: Option<String>,
    gname: Option<String>,
    mtime: Option<(i64, u32)>,
    acl_access: Option<String>,
    acl_default: Option<String>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse_major: Option<Vec<u8>>,
    sparse_name: Option<Vec<u8>>,
    realsize: Option<u64>,
    /// GNU sparse 0.1: `GNU.sparse.map=OFF,LEN,...`.
    map_0_1: Option<Vec<(u64, u64)>>,
    /// GNU sparse 0.0: `GNU.sparse.offset` and `GNU.sparse.numbytes`
    /// records in turn.
    map_0_0: Vec<(u64, Option<u64>)>,
}

impl PaxFields {
    fn apply_all(&mut self, data: &[u8]) -> Result<(), String> {
        for rec in (PaxRecords { rest: data }) {
            let (k, v) = rec?;
            self.records += 1;
            if self.records > MAX_PAX_RECORDS {
                return Err(format!("more than {MAX_PAX_RECORDS} PAX records"));
            }
            self.apply(k, v)?;
        }
        Ok(())
    }

    fn apply(&mut self, k: &[u8], v: &[u8]) -> Result<(), String> {
        let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
        match k {
            b"path" => self.path = Some(v.to_vec()),
            b"linkpath" => self.link = Some(v.to_vec()),
            b"size" => self.size = Some(size_value(v, "PAX size")?),
            b"uid" => self.uid = Some(v.to_vec()),
            b"gid" => self.gid = Some(v.to_vec()),
            b"uname" => self.uname = Some(text(v)),
            b"gname" => self.gname = Some(text(v)),
            b"mtime" => self.mtime = Some(parse_time(v).map_err(|e| e.to_string())?),
            b"SCHILY.acl.access" => self.acl_access = Some(text(v)),
            b"SCHILY.acl.default" => self.acl_default = Some(text(v)),
            b"GNU.sparse.major" => self.sparse_major = Some(v.to_vec()),
            b"GNU.sparse.name" => self.sparse_name = Some(v.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                self.realsize = Some(size_value(v, "GNU sparse real size")?)
            }
            b"GNU.sparse.map" => self.map_0_1 = Some(parse_map_0_1(v)?),
            b"GNU.sparse.offset" => {
                let off = size_value(v, "GNU sparse offset")?;
                if self.map_0_0.len() >= MAX_SPARSE_SEGMENTS {
                    return Err(format!("more than {MAX_SPARSE_SEGMENTS} sparse segments"));
                }
                self.map_0_0.push((off, None));
            }
            b"GNU.sparse.numbytes" => match self.map_0_0.last_mut() {
                Some((_, len @ None)) => *len = Some(size_value(v, "GNU sparse length")?),
                _ => return Err("GNU.sparse.numbytes without GNU.sparse.offset".into()),
            },
            _ => {
                if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                    if self.xattrs.len() >= MAX_XATTRS {
                        return Err(format!("more than {MAX_XATTRS} xattrs"));
                    }
                    self.xattrs.push((name.to_vec(), v.to_vec()));
                }
            }
        }
        Ok(())
    }

    /// The sparse map the records describe, `None` for GNU sparse 1.0
    /// (whose map is at the start of the data) and for no map at all.
    fn map(&self) -> Result<Option<Vec<(u64, u64)>>, String> {
        if let Some(major) = &self.sparse_major {
            return match major.as_slice() {
                b"1" => Ok(None),
                other => Err(format!("GNU sparse format {} unknown", show(other))),
            };
        }
        if let Some(list) = &self.map_0_1 {
            return Ok(Some(list.clone()));
        }
        self.map_0_0
            .iter()
            .map(|&(off, len)| len.map(|l| (off, l)))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| "GNU.sparse.offset without GNU.sparse.numbytes".into())
    }
}

fn parse_map_0_1(v: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let nums = v
        .split(|&c| c == b',')
        .filter(|s| !s.is_empty())
        .map(|s| size_value(s, "GNU sparse map number"))
        .collect::<Result<Vec<u64>, String>>()?;
    if nums.len() % 2 != 0 {
        return Err("odd GNU sparse map".into());
    }
    if nums.len() / 2 > MAX_SPARSE_SEGMENTS {
        return Err(format!("more than {MAX_SPARSE_SEGMENTS} sparse segments"));
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// Everything the extension headers before one entry said.
#[derive(Default)]
struct Extensions {
    /// Byte offset of the first of them: where the entry starts.
    first: Option<u64>,
    /// Bytes charged against [`MAX_EXTENSION_BYTES`].
    used: u64,
    pax: PaxFields,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

/// The kind of entry a typeflag announces, and whether data follows.
fn entry_kind(typeflag: u8) -> Result<(EntryKind, bool), String> {
    Ok(match typeflag {
        b'0' | 0 | b'7' | b'S' => (EntryKind::File, true),
        b'1' => (EntryKind::HardLink, false),
        b'2' => (EntryKind::Symlink, false),
        b'3' => (EntryKind::Char, false),
        b'4' => (EntryKind::Block, false),
        b'5' => (EntryKind::Dir, false),
        // GNU incremental dumpdir: the listing follows as data, skipped.
        b'D' => (EntryKind::Dir, true),
        b'6' => (EntryKind::Fifo, false),
        b'M' => return Err("GNU multi-volume continuation: start from the first volume".into()),
        other => return Err(format!("unknown entry type {:?}", other as char)),
    })
}

/// A NUL-terminated text field.
fn field(b: &[u8; BLOCK], r: std::ops::Range<usize>) -> Vec<u8> {
    let f = &b[r];
    f[..f.iter().position(|&x| x == 0).unwrap_or(f.len())].to_vec()
}

/// An id from PAX text or a header field, refused outside 0..=MAX_ID.
fn id(
    pax: Option<&[u8]>,
    b: &[u8; BLOCK],
    r: std::ops::Range<usize>,
    what: &str,
) -> Result<u32, String> {
    let v = match pax {
        Some(text) => decimal(text, what)?,
        None => get_unsigned(&b[r], what)?,
    };
    if v > MAX_ID {
        return Err(format!(
            "{what} {v} is outside 0..={MAX_ID} (4294967295 is (uid_t)-1)"
        ));
    }
    Ok(v as u32)
}

/// The fields of a header block as overridden by PAX records and GNU long
/// names; the PAX fields that need the reader (size, sparse map, ids) are
/// handed back.
fn decode(
    b: &[u8; BLOCK],
    kind: EntryKind,
    ext: Extensions,
) -> Result<(Header, PaxFields), String> {
    let mut pax = ext.pax;
    let mut path = field(b, 0..100);
    let prefix = field(b, 345..500);
    // The prefix field holds other data in GNU headers.
    if &b[257..263] == b"ustar\0" && !prefix.is_empty() && b[156] != b'S' {
        path = [&prefix[..], b"/", &path].concat();
    }
    let path = pax
        .sparse_name
        .take()
        .or(pax.path.take())
        .or(ext.long_name)
        .unwrap_or(path);
    let named = |m: String| format!("{}: {m}", show(&path));
    let mut h = Header::new(path.clone(), kind);
    h.link = pax
        .link
        .take()
        .or(ext.long_link)
        .unwrap_or_else(|| field(b, 157..257));
    h.mode = get_unsigned(&b[100..108], "mode").map_err(named)? as u32 & 0o7777;
    (h.mtime_sec, h.mtime_nsec) = match pax.mtime {
        Some(t) => t,
        None => (
            get_signed(&b[136..148]).map_err(|e| named(format!("mtime: {e}")))?,
            0,
        ),
    };
    let text = |r| String::from_utf8_lossy(&field(b, r)).into_owned();
    h.uname = pax.uname.take().unwrap_or_else(|| text(265..297));
    h.gname = pax.gname.take().unwrap_or_else(|| text(297..329));
    if matches!(kind, EntryKind::Char | EntryKind::Block) {
        let dev = |r: std::ops::Range<usize>, what| {
            let v = get_unsigned(&b[r], what).map_err(named)?;
            u32::try_from(v).map_err(|_| named(format!("{what} {v} out of range")))
        };
        h.dev_major = dev(329..337, "device major")?;
        h.dev_minor = dev(337..345, "device minor")?;
    }
    h.acl_access = pax.acl_access.take();
    h.acl_default = pax.acl_default.take();
    h.xattrs = std::mem::take(&mut pax.xattrs);
    // A later record wins: keep the last value of each name.
    h.xattrs.reverse();
    h.xattrs.sort_by(|a, b| a.0.cmp(&b.0));
    h.xattrs.dedup_by(|a, b| a.0 == b.0);
    Ok((h, pax))
}

/// A sequential tar reader over any byte stream.
pub struct TarReader<R: Read> {
    inner: R,
    pos: u64,
    /// Data bytes of the current entry not yet read, and its padding.
    remaining: u64,
    pad: u64,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            pad: 0,
        }
    }

    /// Byte offset in the uncompressed stream.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_exact_or(&mut self, buf: &mut [u8], what: &'static str) -> Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => return Err(TarError::Truncated(self.pos + done as u64, what).into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, mut n: u64, what: &'static str) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.read_exact_or(&mut buf[..k], what)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// The data of an extension header; `size` was checked against the
    /// budget, so this allocates at most [`MAX_EXTENSION_BYTES`].
    fn read_blob(&mut self, size: u64, what: &'static str) -> Result<Vec<u8>> {
        let mut data = vec![0u8; size as usize];
        self.read_exact_or(&mut data, what)?;
        self.skip(padded(size) - size, what)?;
        Ok(data)
    }

    /// One header block, checksum verified; `None` for a zero block (the
    /// end of the archive).
    fn header_block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let start = self.pos;
        let mut b = [0u8; BLOCK];
        self.read_exact_or(&mut b, "a header")?;
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if !checksum_matches(&b).map_err(|_| TarError::BadChecksum(start))? {
            return Err(TarError::BadChecksum(start).into());
        }
        Ok(Some(b))
    }

    /// The next entry's header, or `None` at the end of the archive. Skips
    /// whatever of the previous entry's data was not read.
    pub fn next_header(&mut self) -> Result<Option<Header>> {
        self.skip(self.remaining + self.pad, "file data")?;
        self.remaining = 0;
        self.pad = 0;
        let mut ext = Extensions::default();
        loop {
            let start = self.pos;
            let Some(b) = self.header_block()? else {
                // End of archive (a second zero block may follow).
                return Ok(None);
            };
            let size =
                get_unsigned(&b[124..136], "size").map_err(|m| TarError::BadHeader(start, m))?;
            if !self.extension(&mut ext, b[156], size, start)? {
                return self.entry(&b, size, start, ext).map(Some);
            }
        }
    }

    /// Reads an extension header (`x`, `g`, `L`, `K`, `V`) into `ext`;
    /// false for any other typeflag.
    fn extension(
        &mut self,
        ext: &mut Extensions,
        typeflag: u8,
        size: u64,
        start: u64,
    ) -> Result<bool> {
        let what = match typeflag {
            b'x' => "a PAX header",
            b'g' => "a global PAX header",
            b'L' => "a GNU long name",
            b'K' => "a GNU long link name",
            b'V' => "a volume label",
            _ => return Ok(false),
        };
        let first = *ext.first.get_or_insert(start);
        ext.used = ext.used.saturating_add(BLOCK as u64 + padded(size));
        if ext.used > MAX_EXTENSION_BYTES {
            return Err(TarError::Refused(
                first,
                format!(
                    "its extended headers take more than {MAX_EXTENSION_BYTES} bytes \
                     ({what} of {size} bytes at byte {start}); lifeboat reads at most 1 MiB \
                     of PAX and GNU long-name headers per entry"
                ),
            )
            .into());
        }
        match typeflag {
            b'x' => {
                let data = self.read_blob(size, what)?;
                ext.pax
                    .apply_all(&data)
                    .map_err(|m| TarError::BadHeader(start, m))?;
            }
            b'L' | b'K' => {
                let mut d = self.read_blob(size, what)?;
                d.truncate(d.iter().position(|&c| c == 0).unwrap_or(d.len()));
                if typeflag == b'L' {
                    ext.long_name = Some(d);
                } else {
                    ext.long_link = Some(d);
                }
            }
            // Global PAX records are not applied (like bsdtar's restore of
            // owners and names, only the entry's own records count).
            _ => self.skip(padded(size), what)?,
        }
        Ok(true)
    }

    /// The entry whose header block is `b`, with what its extension headers
    /// said; reads an old GNU or GNU 1.0 sparse map.
    fn entry(&mut self, b: &[u8; BLOCK], size: u64, start: u64, ext: Extensions) -> Result<Header> {
        let at = ext.first.unwrap_or(start);
        let typeflag = b[156];
        let (kind, has_data) = entry_kind(typeflag).map_err(|m| TarError::BadHeader(start, m))?;
        let (mut h, pax) = decode(b, kind, ext).map_err(|m| TarError::BadHeader(start, m))?;
        let path = show(&h.path);
        let named = |m: String| TarError::BadHeader(start, format!("{path}: {m}"));
        let data_size = pax.size.unwrap_or(size);
        self.remaining = if has_data { data_size } else { 0 };
        self.pad = padded(self.remaining) - self.remaining;
        h.size = if kind == EntryKind::File {
            data_size
        } else {
            0
        };
        h.sparse = if typeflag == b'S' {
            Some(
                self.old_gnu_sparse(b, start)
                    .map_err(|e| e.context(path.clone()))?,
            )
        } else {
            self.pax_sparse(&pax, kind, start)
                .map_err(|e| e.context(path.clone()))?
        };
        if let Some(map) = &h.sparse {
            map.check().map_err(named)?;
            let data = map.data_bytes();
            if data != self.remaining {
                return Err(named(format!(
                    "sparse map holds {data} bytes but the entry has {}",
                    self.remaining
                ))
                .into());
            }
            h.size = map.real_size;
        }
        // Checked last: the caller may skip a refused entry and read on.
        let refused = |m: String| TarError::Refused(at, format!("{path}: {m}"));
        h.uid = id(pax.uid.as_deref(), b, 108..116, "uid").map_err(refused)?;
        h.gid = id(pax.gid.as_deref(), b, 116..124, "gid").map_err(refused)?;
        Ok(h)
    }

    /// The map of a PAX sparse entry (GNU 0.0, 0.1 or 1.0), if any.
    fn pax_sparse(
        &mut self,
        pax: &PaxFields,
        kind: EntryKind,
        start: u64,
    ) -> Result<Option<SparseMap>> {
        let bad = |m: String| TarError::BadHeader(start, m);
        let has_map =
            pax.sparse_major.is_some() || pax.map_0_1.is_some() || !pax.map_0_0.is_empty();
        let Some(real_size) = pax.realsize else {
            if has_map {
                return Err(bad("GNU sparse map without GNU.sparse.realsize".into()).into());
            }
            return Ok(None);
        };
        if kind != EntryKind::File {
            return Err(bad("GNU sparse map on an entry that is not a file".into()).into());
        }
        let segments = match pax.map().map_err(bad)? {
            Some(list) => list,
            None => self.read_sparse_1_0_map(start)?,
        };
        Ok(Some(SparseMap {
            segments,
            real_size,
        }))
    }

    /// The GNU sparse 1.0 map at the start of the data: decimal count, then
    /// offset and length of each segment, one number a line, padded to whole
    /// blocks. Parsed as it is read, one block at a time.
    fn read_sparse_1_0_map(&mut self, start: u64) -> Result<Vec<(u64, u64)>> {
        let bad = |m: String| TarError::BadHeader(start, format!("GNU sparse 1.0 map: {m}"));
        let mut pairs: Vec<(u64, u64)> = Vec::new();
        let mut count: Option<usize> = None;
        let mut offset: Option<u64> = None;
        let mut line: Vec<u8> = Vec::with_capacity(24);
        loop {
            if self.remaining < BLOCK as u64 {
                return Err(bad("runs past the data".into()).into());
            }
            let mut b = [0u8; BLOCK];
            self.read_exact_or(&mut b, "a sparse map")?;
            self.remaining -= BLOCK as u64;
            for &c in &b {
                if c != b'\n' {
                    if line.len() > 20 {
                        return Err(bad(format!("bad line {:?}", show(&line))).into());
                    }
                    line.push(c);
                    continue;
                }
                let n = size_value(&line, "number").map_err(bad)?;
                line.clear();
                match (count, offset) {
                    (None, _) => {
                        if n > MAX_SPARSE_SEGMENTS as u64 {
                            return Err(TarError::Refused(
                                start,
                                format!(
                                    "sparse map of {n} segments (at most {MAX_SPARSE_SEGMENTS})"
                                ),
                            )
                            .into());
                        }
                        count = Some(n as usize);
                    }
                    (Some(_), None) => offset = Some(n),
                    (Some(_), Some(off)) => {
                        pairs.push((off, n));
                        offset = None;
                    }
                }
                if count == Some(pairs.len()) {
                    self.pad = padded(self.remaining) - self.remaining;
                    return Ok(pairs);
                }
            }
        }
    }

    /// The map of an old GNU sparse (`S`) entry: 4 slots in the header,
    /// then extension blocks of 21 slots while the `isextended` byte is set.
    fn old_gnu_sparse(&mut self, b: &[u8; BLOCK], start: u64) -> Result<SparseMap> {
        let bad = |m: String| TarError::BadHeader(start, format!("old GNU sparse map: {m}"));
        let real_size = get_unsigned(&b[483..495], "real size").map_err(bad)?;
        let mut segments = Vec::new();
        let mut open =
            old_gnu_slots(&b[386..482], OLD_GNU_HEADER_SLOTS, &mut segments).map_err(bad)?;
        let mut extended = b[482] != 0;
        let mut blocks = 0usize;
        while extended {
            blocks += 1;
            if blocks > MAX_SPARSE_SEGMENTS / OLD_GNU_EXTENSION_SLOTS + 1 {
                return Err(TarError::Refused(
                    start,
                    format!("sparse map of more than {MAX_SPARSE_SEGMENTS} segments"),
                )
                .into());
            }
            let mut e = [0u8; BLOCK];
            self.read_exact_or(&mut e, "an old GNU sparse map")?;
            if open {
                open = old_gnu_slots(&e[..504], OLD_GNU_EXTENSION_SLOTS, &mut segments)
                    .map_err(bad)?;
            }
            extended = e[504] != 0;
        }
        Ok(SparseMap {
            segments,
            real_size,
        })
    }

    /// Reads data of the current entry (the data segments of a sparse file,
    /// back to back); 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let k = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        loop {
            match self.inner.read(&mut buf[..k]) {
                Ok(0) => return Err(TarError::Truncated(self.pos, "file data").into()),
                Ok(n) => {
                    self.pos += n as u64;
                    self.remaining -= n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The stream below (to ask it about damage).
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

/// Appends the used slots of an old GNU sparse map area (24 bytes each: a
/// 12-byte offset, a 12-byte length); false once an unused slot ended the
/// map.
fn old_gnu_slots(area: &[u8], slots: usize, out: &mut Vec<(u64, u64)>) -> Result<bool, String> {
    for slot in area.chunks_exact(24).take(slots) {
        if slot[12] == 0 {
            return Ok(false);
        }
        if out.len() >= MAX_SPARSE_SEGMENTS {
            return Err(format!("more than {MAX_SPARSE_SEGMENTS} segments"));
        }
        out.push((
            get_unsigned(&slot[..12], "offset")?,
            get_unsigned(&slot[12..], "length")?,
        ));
    }
    Ok(true)
}

/// Whether a header block's stored checksum matches its bytes (as unsigned
/// or, as some old tars wrote it, signed sums); an error when the field is
/// not a number.
fn checksum_matches(b: &[u8; BLOCK]) -> Result<bool, String> {
    let stored = get_unsigned(&b[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { x };
        unsigned += u64::from(x);
        signed += i64::from(x as i8);
    }
    Ok(stored == unsigned || stored as i64 == signed)
}

/// Whether `b` starts with a tar header block: a ustar or GNU magic and a
/// header checksum that matches (where a reader may resume after damage).
pub fn is_header_block(b: &[u8]) -> bool {
    let Some(block) = b.get(..BLOCK) else {
        return false;
    };
    let block: &[u8; BLOCK] = block.try_into().expect("BLOCK bytes");
    &block[257..262] == b"ustar" && checksum_matches(block).unwrap_or(false)
}
