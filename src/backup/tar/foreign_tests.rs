//! The reader on archives GNU tar 1.34 writes (built here with `tar`
//! itself), and on hostile ones: PAX memory bombs, ids that would wrap to
//! root, sparse maps that do not add up.

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;
use crate::backup::fsio;

/// Every entry of an archive with its data (the segments back to back).
pub(super) fn read_all(archive: &[u8]) -> Vec<(Header, Vec<u8>)> {
    let mut r = TarReader::new(archive);
    let mut out = Vec::new();
    while let Some(h) = r.next_header().unwrap() {
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = r.read_data(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        out.push((h, data));
    }
    out
}

/// A tree with what GNU tar writes in its special ways: sparse files with
/// more than 4 and more than 25 segments (one and two extension blocks),
/// data at the very end, holes at the end, nothing but a hole; names over
/// 100 and 255 bytes; long symlink targets and hard links to long names.
fn make_tree(root: &Path) {
    let p = |s: &str| root.join(s);
    fs::create_dir(p("d")).unwrap();
    fs::write(p("d/small"), b"hello\n").unwrap();
    let f = fs::File::create(p("sp")).unwrap();
    for i in 0..7u64 {
        f.write_all_at(&[b'a' + i as u8; 5000], i << 20).unwrap();
    }
    f.set_len((7 << 20) + 100).unwrap();
    f.write_all_at(b"END", (7 << 20) + 97).unwrap();
    let f = fs::File::create(p("many")).unwrap();
    for i in 0..30u64 {
        f.write_all_at(format!("segment {i}").as_bytes(), i * (64 << 10))
            .unwrap();
    }
    f.set_len(3 << 20).unwrap();
    let f = fs::File::create(p("trailing-hole")).unwrap();
    f.write_all_at(b"head", 0).unwrap();
    f.set_len(1 << 20).unwrap();
    fs::File::create(p("all-hole"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    fs::write(root.join("n".repeat(150)), b"long component\n").unwrap();
    let deep: PathBuf = ["a", "b", "c", "d"].iter().map(|c| c.repeat(60)).collect();
    fs::create_dir_all(root.join(&deep)).unwrap();
    let deep_file = deep.join(format!("file-{}", "f".repeat(80)));
    fs::write(root.join(&deep_file), b"deep\n").unwrap();
    fs::hard_link(root.join(&deep_file), p("hl-to-deep")).unwrap();
    fs::hard_link(p("d/small"), root.join(deep.join("hl-small"))).unwrap();
    std::os::unix::fs::symlink("t".repeat(300), p("long-target")).unwrap();
    std::os::unix::fs::symlink("d/small", p("short-target")).unwrap();
    nix::unistd::mkfifo(&p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
}

/// Runs GNU tar with `args`; panics with its stderr on failure.
fn gnu_tar(args: &[&str], archive: &Path, src: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(args)
        .arg("-cf")
        .arg(archive)
        .arg("-C")
        .arg(src)
        .arg(".")
        .output()
        .expect("running GNU tar");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(archive).unwrap()
}

/// Bytes of `src` outside the map's segments are zero, inside they are
/// the entry's data: what a restore writes is the file.
fn assert_same_file(h: &Header, data: &[u8], src: &Path) {
    let file = fs::File::open(src).unwrap();
    let size = file.metadata().unwrap().len();
    assert_eq!(h.size, size, "{}", src.display());
    let segments = h
        .sparse
        .as_ref()
        .map_or_else(|| vec![(0, size)], |m| m.segments.clone());
    let mut at = 0usize;
    for &(off, len) in &segments {
        let mut want = vec![0u8; len as usize];
        file.read_exact_at(&mut want, off).unwrap();
        assert!(
            data[at..at + len as usize] == want[..],
            "{}: segment at {off}",
            src.display()
        );
        at += len as usize;
    }
    assert_eq!(at, data.len(), "{}", src.display());
    // Where the source has data and the map a hole, the data is zeros.
    for (off, len) in fsio::data_segments(&file, size).unwrap() {
        for pos in off..off + len {
            if !segments.iter().any(|&(o, l)| o <= pos && pos < o + l) {
                let mut b = [0u8];
                file.read_exact_at(&mut b, pos).unwrap();
                assert_eq!(b[0], 0, "{}: byte {pos} lost", src.display());
            }
        }
    }
}

/// Checks every entry against the tree it came from, and that every path
/// of the tree is in the archive.
fn assert_matches_tree(entries: &[(Header, Vec<u8>)], root: &Path) {
    let mut seen = std::collections::BTreeSet::new();
    for (h, data) in entries {
        let rel = h.path.strip_prefix(b"./").unwrap_or(&h.path);
        let rel = rel.strip_suffix(b"/").unwrap_or(rel);
        let src = root.join(std::ffi::OsStr::from_bytes(rel));
        let m = fs::symlink_metadata(&src).unwrap_or_else(|e| panic!("{}: {e}", show(&h.path)));
        assert_eq!(h.mode, m.mode() & 0o7777, "{}", src.display());
        assert_eq!((h.uid, h.gid), (m.uid(), m.gid()), "{}", src.display());
        assert_eq!(h.mtime_sec, m.mtime(), "{}", src.display());
        match h.kind {
            EntryKind::File => assert_same_file(h, data, &src),
            EntryKind::HardLink => {
                let leader = h.link.strip_prefix(b"./").unwrap();
                let leader = fs::metadata(root.join(std::ffi::OsStr::from_bytes(leader))).unwrap();
                assert_eq!(leader.ino(), m.ino(), "{}", src.display());
            }
            EntryKind::Symlink => {
                assert_eq!(h.link, fs::read_link(&src).unwrap().as_os_str().as_bytes())
            }
            EntryKind::Dir => assert!(m.is_dir()),
            EntryKind::Fifo => assert!(std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type())),
            other => panic!("unexpected {other:?}"),
        }
        seen.insert(rel.to_vec());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes();
            assert!(seen.contains(rel), "{} not in the archive", p.display());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
}

/// Header blocks of old GNU sparse entries whose map goes on in extension
/// blocks, found by scanning the raw archive.
fn old_gnu_extended_headers(archive: &[u8]) -> usize {
    archive
        .chunks_exact(BLOCK)
        .filter(|b| b[156] == b'S' && &b[257..265] == b"ustar  \0" && b[482] == 1)
        .count()
}

fn sparse_entry<'a>(entries: &'a [(Header, Vec<u8>)], name: &str) -> &'a SparseMap {
    let (h, _) = entries
        .iter()
        .find(|(h, _)| h.path == format!("./{name}").as_bytes())
        .unwrap_or_else(|| panic!("no {name}"));
    h.sparse
        .as_ref()
        .unwrap_or_else(|| panic!("{name} not sparse"))
}

/// A temporary folder with the tree of [`make_tree`] in `src`.
fn source_tree() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    (tmp, src)
}

#[test]
fn gnu_format_with_old_gnu_sparse_and_long_names() {
    let (tmp, src) = source_tree();
    let archive = gnu_tar(
        &["--sparse", "--format=gnu"],
        &tmp.path().join("a.tar"),
        &src,
    );
    // GNU tar wrote what this test is about: S entries with extension
    // blocks (sp: 8 slots, many: 31), L and K entries.
    assert_eq!(old_gnu_extended_headers(&archive), 2);
    let types: Vec<u8> = archive.chunks_exact(BLOCK).map(|b| b[156]).collect();
    assert!(types.contains(&b'L') && types.contains(&b'K'));
    let entries = read_all(&archive);
    assert_matches_tree(&entries, &src);
    let sp = sparse_entry(&entries, "sp");
    assert!(sp.segments.len() > 4, "{sp:?}");
    assert!(sp.data_bytes() < 100_000, "{sp:?}");
    assert!(sparse_entry(&entries, "many").segments.len() > 25);
    assert!(sparse_entry(&entries, "all-hole").data_bytes() == 0);
    // An incremental dump: directories as GNU dumpdirs (D) with a listing.
    let snar = format!("--listed-incremental={}", tmp.path().join("snar").display());
    let archive = gnu_tar(&["--format=gnu", &snar], &tmp.path().join("i.tar"), &src);
    assert!(archive.chunks_exact(BLOCK).any(|b| b[156] == b'D'));
    assert_matches_tree(&read_all(&archive), &src);
}

#[test]
fn posix_sparse_formats_0_0_0_1_1_0() {
    let (tmp, src) = source_tree();
    for (version, marker) in [
        ("0.0", &b"GNU.sparse.offset="[..]),
        ("0.1", b"GNU.sparse.map="),
        ("1.0", b"GNU.sparse.major=1"),
    ] {
        let archive = gnu_tar(
            &[
                "--format=posix",
                "--sparse",
                &format!("--sparse-version={version}"),
            ],
            &tmp.path().join(format!("{version}.tar")),
            &src,
        );
        assert!(
            archive.windows(marker.len()).any(|w| w == marker),
            "{version}"
        );
        let entries = read_all(&archive);
        assert_matches_tree(&entries, &src);
        assert!(sparse_entry(&entries, "many").segments.len() > 25);
    }
}

#[test]
fn base_256_sizes_ids_and_negative_times() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    // 10 GiB, data only at the end: realsize and offset need base-256.
    let f = fs::File::create(src.join("huge")).unwrap();
    f.write_all_at(b"END", (10 << 30) - 3).unwrap();
    let archive = gnu_tar(
        &[
            "--sparse",
            "--format=gnu",
            "--owner=someone:4294967294",
            "--group=staff:3000000",
            "--mtime=@-5000000000",
        ],
        &tmp.path().join("a.tar"),
        &src,
    );
    let header = archive
        .chunks_exact(BLOCK)
        .find(|b| b[156] == b'S')
        .unwrap();
    for field in [108, 116, 136, 483] {
        assert!(matches!(header[field], 0x80 | 0xff), "field at {field}");
    }
    let entries = read_all(&archive);
    let (h, data) = entries.iter().find(|(h, _)| h.path == b"./huge").unwrap();
    assert_eq!((h.uid, h.gid), (4_294_967_294, 3_000_000));
    assert_eq!((h.mtime_sec, h.size), (-5_000_000_000, 10 << 30));
    let map = h.sparse.as_ref().unwrap();
    assert!(map
        .segments
        .iter()
        .any(|&(o, l)| o + l == 10 << 30 && l > 0));
    assert!(data.ends_with(b"END") && data.len() < 1 << 20);
}

/// A header block from our writer with `edit` applied and the checksum
/// fixed.
fn patched(h: &Header, edit: impl Fn(&mut [u8])) -> Vec<u8> {
    let mut out = encode_header(h);
    let at = out.len() - BLOCK;
    let b = &mut out[at..];
    edit(b);
    set_checksum(b);
    out
}

/// A PAX `x` header holding `records`, declaring `size` bytes.
fn pax_header(records: &[u8], size: u64) -> Vec<u8> {
    let h = Header::new(Vec::new(), EntryKind::File);
    let mut out = ustar_block(b"PaxHeaders/x", &[], &h, b'x', size, &[]).to_vec();
    out.extend_from_slice(records);
    out.resize(padded(out.len() as u64) as usize, 0);
    out
}

fn file_entry(name: &str) -> Vec<u8> {
    encode_header(&Header::new(name.as_bytes().to_vec(), EntryKind::File))
}

/// Counts what is read from it; endless zeros after `head`.
struct Endless {
    head: io::Cursor<Vec<u8>>,
    read: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.head.read(buf)? {
            0 => {
                buf.fill(0);
                buf.len()
            }
            n => n,
        };
        self.read += n as u64;
        Ok(n)
    }
}

fn refused_after(head: Vec<u8>) -> (String, u64) {
    let mut r = TarReader::new(Endless {
        head: io::Cursor::new(head),
        read: 0,
    });
    let err = loop {
        match r.next_header() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("end of archive"),
            Err(e) => break e,
        }
    };
    (format!("{err:#}"), r.into_inner().read)
}

#[test]
fn pax_memory_bombs_are_refused_before_reading() {
    let mb = MAX_EXTENSION_BYTES;
    // One x header declaring 60 MiB (then endless zeros): refused after
    // its header block, nothing allocated or read.
    let (err, read) = refused_after(pax_header(b"", 60 << 20));
    assert!(err.contains("refused tar entry at byte 0"), "{err}");
    assert!(
        err.contains("PAX header of 62914560 bytes at byte 0"),
        "{err}"
    );
    assert_eq!(read, BLOCK as u64);
    // x and g headers in a row, each small: the sum is bounded.
    let mut rec = Vec::new();
    pax_record(&mut rec, b"comment", &[b'c'; 400]);
    let mut head = file_entry("first");
    for i in 0..4000 {
        let mut x = pax_header(&rec, rec.len() as u64);
        if i % 2 == 1 {
            x[156] = b'g';
            x = patched_checksum(x);
        }
        head.extend_from_slice(&x);
    }
    let (err, read) = refused_after(head);
    assert!(err.contains("refused tar entry at byte 512"), "{err}");
    assert!(err.contains("more than 1048576 bytes"), "{err}");
    assert!(read <= mb + 3 * BLOCK as u64, "read {read}");
    // GNU long names in a row.
    let mut head = Vec::new();
    for _ in 0..3000 {
        let mut l = pax_header(&[b'n'; 500], 500);
        l[156] = b'L';
        head.extend_from_slice(&patched_checksum(l));
    }
    let (err, read) = refused_after(head);
    assert!(err.contains("GNU long name of 500 bytes"), "{err}");
    assert!(read <= mb + BLOCK as u64, "read {read}");
    // Many tiny records within the byte limit.
    let mut recs = Vec::new();
    while recs.len() < 700_000 {
        pax_record(&mut recs, b"a", b"");
    }
    let (err, _) = refused_after(pax_header(&recs, recs.len() as u64));
    assert!(err.contains("more than 65536 PAX records"), "{err}");
    // Many xattrs.
    let mut recs = Vec::new();
    for i in 0..MAX_XATTRS + 1 {
        pax_record(&mut recs, format!("SCHILY.xattr.user.{i}").as_bytes(), b"");
    }
    let (err, _) = refused_after(pax_header(&recs, recs.len() as u64));
    assert!(err.contains("more than 10000 xattrs"), "{err}");
}

fn patched_checksum(mut block: Vec<u8>) -> Vec<u8> {
    set_checksum(&mut block);
    block
}

#[test]
fn ids_that_would_wrap_are_refused() {
    let pax_uid = |key: &[u8], v: &[u8]| {
        let mut rec = Vec::new();
        pax_record(&mut rec, key, v);
        let mut a = pax_header(&rec, rec.len() as u64);
        a.extend_from_slice(&file_entry("etc/shadow"));
        a.extend_from_slice(&file_entry("next"));
        a.extend_from_slice(&END);
        a
    };
    let base256 = |v: u64, neg: bool| {
        let mut a = patched(&Header::new(b"etc/shadow".to_vec(), EntryKind::File), |b| {
            b[108] = if neg { 0xff } else { 0x80 };
            b[109..116].copy_from_slice(&v.to_be_bytes()[1..]);
        });
        a.extend_from_slice(&file_entry("next"));
        a
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            pax_uid(b"uid", b"4294967296"),
            "uid 4294967296 is outside 0..=4294967294",
        ),
        (pax_uid(b"uid", b"4294967295"), "uid 4294967295 is outside"),
        (
            pax_uid(b"gid", b"18446744073709551616"),
            "gid 18446744073709551616 out of range",
        ),
        (pax_uid(b"uid", b"-1"), "negative uid -1"),
        (base256(1 << 32, false), "uid 4294967296 is outside"),
        (base256(0xff_ffff_ffff_fffe, true), "negative uid -2"),
    ];
    for (archive, want) in cases {
        let mut r = TarReader::new(&archive[..]);
        let err = format!("{:#}", r.next_header().unwrap_err());
        assert!(
            err.contains("refused tar entry at byte 0: etc/shadow: "),
            "{err}"
        );
        assert!(err.contains(want), "{err}");
        // The refused entry is skipped as a whole: the next one reads.
        assert_eq!(r.next_header().unwrap().unwrap().path, b"next");
    }
    // The largest id there is reads.
    let h = read_all(&pax_uid(b"uid", b"4294967294"));
    assert_eq!(h[0].0.uid, 4_294_967_294);
}

#[test]
fn sparse_maps_that_do_not_add_up_are_refused() {
    let entry = |records: &[(&[u8], &[u8])], data: &[u8]| {
        let mut rec = Vec::new();
        for (k, v) in records {
            pax_record(&mut rec, k, v);
        }
        let mut a = pax_header(&rec, rec.len() as u64);
        let mut h = Header::new(b"f".to_vec(), EntryKind::File);
        h.size = data.len() as u64;
        a.extend_from_slice(&encode_header(&h));
        a.extend_from_slice(data);
        a.resize(padded(a.len() as u64) as usize + 1024, 0);
        a
    };
    let real = (&b"GNU.sparse.realsize"[..], &b"100"[..]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Overlapping, unsorted, past the real size (0.1 maps).
        (
            entry(&[real, (b"GNU.sparse.map", b"0,10,5,10")], &[1; 20]),
            "out of order",
        ),
        (
            entry(&[real, (b"GNU.sparse.map", b"50,10,0,10")], &[1; 20]),
            "out of order",
        ),
        (
            entry(&[real, (b"GNU.sparse.map", b"95,10")], &[1; 10]),
            "past the real size",
        ),
        (
            entry(
                &[real, (b"GNU.sparse.map", b"18446744073709551615,1")],
                &[1],
            ),
            "out of range",
        ),
        // The map holds more than the entry.
        (
            entry(&[real, (b"GNU.sparse.map", b"0,10")], &[1; 5]),
            "holds 10 bytes",
        ),
        // 0.0 records out of turn.
        (
            entry(&[real, (b"GNU.sparse.numbytes", b"1")], &[1]),
            "without GNU.sparse.offset",
        ),
        // 1.0: a count beyond the limit, refused before reading on.
        (
            entry(
                &[(b"GNU.sparse.major", b"1"), real],
                &[b"99999999999\n".as_slice(), &[0; 500]].concat(),
            ),
            "sparse map of 99999999999 segments",
        ),
        (
            entry(&[(b"GNU.sparse.major", b"1")], &[0; 512]),
            "without GNU.sparse.realsize",
        ),
    ];
    for (archive, want) in cases {
        let err = format!(
            "{:#}",
            TarReader::new(&archive[..]).next_header().unwrap_err()
        );
        assert!(err.contains(want), "want {want:?}: {err}");
    }
}
