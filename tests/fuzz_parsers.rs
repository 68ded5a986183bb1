//! Bounded fuzzing of the parsers that read untrusted input: the tar reader
//! (archives from lifeboat's writer and from GNU tar, mutated), the backup
//! manifest and the layout file (JSON, mutated). Each must return an error
//! for bad input, never panic, never hang, and never make more of the input
//! than it holds.
//!
//! Deterministic by default (a fixed seed, 5000 tar cases, 1250 per JSON
//! parser; a few seconds). Longer runs:
//!
//! ```text
//! LIFEBOAT_FUZZ_CASES=200000 LIFEBOAT_FUZZ_SEED=7 cargo test --release --test fuzz_parsers
//! ```
//!
//! `LIFEBOAT_FUZZ_CASES` is the number of tar cases (the JSON parsers get a
//! quarter each); `LIFEBOAT_FUZZ_SEED` any number. A failure prints the
//! smallest mutation list found that still fails.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lifeboat::backup::manifest::{FileRecord, FsManifest, Kind, Manifest, PathBytes};
use lifeboat::backup::tar::{
    set_checksum, EntryKind, Header, SparseMap, TarReader, TarWriter, BLOCK,
};
use lifeboat::layout::Layout;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A runner with the configured number of cases and a fixed seed.
fn runner(cases: u64) -> TestRunner {
    let seed = env_u64("LIFEBOAT_FUZZ_SEED", 0x11feb0a7);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: cases as u32,
        failure_persistence: None,
        max_shrink_iters: 500,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

fn tar_cases() -> u64 {
    env_u64("LIFEBOAT_FUZZ_CASES", 5000)
}

/// One change to the input; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Truncate {
        at: usize,
    },
    /// A numeric tar header field of the `block`-th header: octal text,
    /// base-256 or random bytes (the checksum is fixed afterwards).
    Field {
        block: usize,
        field: usize,
        value: Vec<u8>,
    },
}

/// Numeric fields of a tar header (offset, width): mode, uid, gid, size,
/// mtime, device numbers, old GNU sparse slots, isextended, realsize.
const FIELDS: &[(usize, usize)] = &[
    (100, 8),
    (108, 8),
    (116, 8),
    (124, 12),
    (136, 12),
    (156, 1),
    (329, 8),
    (337, 8),
    (386, 12),
    (398, 12),
    (410, 12),
    (422, 12),
    (482, 1),
    (483, 12),
    (504, 1),
];

fn field_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => any::<u64>().prop_map(|v| format!("{v:o}\0").into_bytes()),
        2 => (0u64..1100).prop_map(|v| format!("{v:011o}\0").into_bytes()),
        1 => any::<u64>().prop_map(|v| [&[0x80, 0, 0, 0][..], &v.to_be_bytes()].concat()),
        1 => any::<i64>().prop_map(|v| [&[0xff, 0xff, 0xff, 0xff][..], &v.to_be_bytes()].concat()),
        1 => proptest::collection::vec(any::<u8>(), 1..12),
        1 => proptest::sample::select(vec![
            b'S', b'x', b'g', b'L', b'K', b'D', b'V', b'0', b'1', b'5'
        ])
        .prop_map(|t| vec![t]),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..600))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (any::<usize>(), 1usize..1500).prop_map(|(at, len)| Mutation::Delete { at, len }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        6 => (any::<usize>(), any::<usize>(), field_value())
            .prop_map(|(block, field, value)| Mutation::Field { block, field, value }),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation, headers: &[usize]) {
    let len = data.len().max(1);
    match m {
        Mutation::Flip { at, bit } => {
            if let Some(b) = data.get_mut(at % len) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = data.get_mut(at % len) {
                *b = *byte;
            }
        }
        Mutation::Insert { at, bytes } => {
            let at = at % (data.len() + 1);
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::Delete { at, len: n } => {
            let at = at % len;
            let end = (at + n).min(data.len());
            data.drain(at.min(end)..end);
        }
        Mutation::Truncate { at } => data.truncate(at % len),
        Mutation::Field {
            block,
            field,
            value,
        } => {
            let Some(&start) = headers.get(block % headers.len().max(1)) else {
                return;
            };
            let (off, width) = FIELDS[field % FIELDS.len()];
            for (i, &b) in value.iter().take(width).enumerate() {
                if let Some(d) = data.get_mut(start + off + i) {
                    *d = b;
                }
            }
        }
    }
}

/// Offsets of blocks that look like tar headers (a ustar magic).
fn header_offsets(data: &[u8]) -> Vec<usize> {
    (0..data.len() / BLOCK)
        .map(|i| i * BLOCK)
        .filter(|&o| &data[o + 257..o + 262] == b"ustar")
        .collect()
}

/// Recomputes the checksum of every block that looks like a header, so
/// that mutations reach the fields behind it.
fn fix_checksums(data: &mut [u8]) {
    for o in header_offsets(data) {
        set_checksum(&mut data[o..o + BLOCK]);
    }
}

/// Hands out at most `chunk` bytes per read, as a pipe or a decompressor
/// might.
struct Chunky<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads a whole archive the way restore does; checks that what comes out
/// is bounded by what went in.
fn read_archive(data: &[u8], chunk: usize) -> Result<(), TestCaseError> {
    let started = Instant::now();
    let mut r = TarReader::new(Chunky { data, chunk });
    let mut entries = 0usize;
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let h = match r.next_header() {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => break,
        };
        entries += 1;
        prop_assert!(h.path.len() + h.link.len() <= data.len());
        prop_assert!(h.xattrs.len() <= data.len() / 8 + 1);
        if let Some(map) = &h.sparse {
            prop_assert!(map.check().is_ok(), "unchecked map {:?}", map);
            prop_assert!(map.segments.len() <= data.len());
        }
        loop {
            match r.read_data(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes += n as u64,
            }
        }
    }
    prop_assert!(entries <= data.len() / BLOCK);
    prop_assert!(bytes <= data.len() as u64);
    prop_assert!(r.position() <= data.len() as u64);
    prop_assert!(started.elapsed() < Duration::from_secs(5), "slow");
    Ok(())
}

/// An archive from lifeboat's writer: every entry kind, PAX names, xattrs,
/// ACL text, a GNU sparse 1.0 file.
fn lifeboat_archive() -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    let mut add = |h: Header, data: &[u8]| {
        w.header(&h).unwrap();
        w.write_raw(data).unwrap();
        w.pad().unwrap();
    };
    add(Header::new(b"./".to_vec(), EntryKind::Dir), b"");
    let mut f = Header::new(b"etc/passwd".to_vec(), EntryKind::File);
    f.size = 11;
    f.uid = 3_000_000;
    f.mtime_nsec = 5;
    f.xattrs = vec![(b"user.a".to_vec(), b"1".to_vec())];
    f.acl_access = Some("user::rw-\ngroup::r--\nother::r--\n".into());
    add(f, b"root:x:0:0\n");
    let mut s = Header::new(b"var/sparse".to_vec(), EntryKind::File);
    s.sparse = Some(SparseMap {
        segments: vec![(0, 4), (8192, 4), (20000, 0)],
        real_size: 20000,
    });
    s.size = 20000;
    add(s, b"headtail");
    let mut l = Header::new([&b"d/"[..], &[b'n'; 200]].concat(), EntryKind::Symlink);
    l.link = vec![b't'; 150];
    add(l, b"");
    let mut hl = Header::new(b"hard".to_vec(), EntryKind::HardLink);
    hl.link = b"etc/passwd".to_vec();
    add(hl, b"");
    let mut dev = Header::new(b"dev/sda".to_vec(), EntryKind::Block);
    (dev.dev_major, dev.dev_minor) = (8, 1);
    add(dev, b"");
    add(Header::new(b"fifo".to_vec(), EntryKind::Fifo), b"");
    w.finish().unwrap()
}

/// Archives GNU tar writes from a small tree: gnu format with old GNU
/// sparse entries (with extension blocks), L and K, dumpdirs; posix with
/// sparse 0.0, 0.1 and 1.0.
fn gnu_archives(dir: &Path) -> Vec<Vec<u8>> {
    let src = dir.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    let f = fs::File::create(src.join("sparse")).unwrap();
    for i in 0..6u64 {
        f.write_all_at(&[b'a' + i as u8; 10], i * 16384).unwrap();
    }
    f.set_len(120_000).unwrap();
    fs::write(src.join("d").join("n".repeat(120)), b"long\n").unwrap();
    std::os::unix::fs::symlink("t".repeat(120), src.join("d/l")).unwrap();
    let snar = format!("--listed-incremental={}", dir.join("snar").display());
    let variants: &[&[&str]] = &[
        &["--format=gnu", "--sparse"],
        &["--format=gnu", &snar],
        &["--format=posix", "--sparse", "--sparse-version=0.0"],
        &["--format=posix", "--sparse", "--sparse-version=0.1"],
        &["--format=posix", "--sparse", "--sparse-version=1.0"],
    ];
    // Each variant for the whole tree, and for the sparse file alone (few
    // headers: a field mutation lands on the interesting one more often).
    let mut out = Vec::new();
    for what in [".", "./sparse"] {
        for args in variants {
            let o = Command::new("tar")
                .args(*args)
                .arg("-cf")
                .arg("-")
                .arg("-C")
                .arg(&src)
                .arg(what)
                .output()
                .expect("running GNU tar");
            assert!(o.status.success(), "{args:?}");
            out.push(o.stdout);
        }
    }
    out
}

#[test]
fn fuzz_tar_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let mut seeds = vec![lifeboat_archive()];
    seeds.extend(gnu_archives(tmp.path()));
    for s in &seeds {
        // The unmutated archives read to the end.
        let mut r = TarReader::new(&s[..]);
        while r.next_header().unwrap().is_some() {}
    }
    let strategy = (
        0..seeds.len(),
        proptest::collection::vec(mutation(), 1..6),
        any::<bool>(),
        prop_oneof![Just(usize::MAX), 1usize..700],
    );
    runner(tar_cases())
        .run(&strategy, |(seed, mutations, fix, chunk)| {
            let mut data = seeds[seed].clone();
            let headers = header_offsets(&data);
            for m in &mutations {
                apply(&mut data, m, &headers);
            }
            if fix {
                fix_checksums(&mut data);
            }
            read_archive(&data, chunk)
        })
        .unwrap();
}

/// Replacements for a number in JSON text.
const ODD_NUMBERS: &[&str] = &[
    "-1",
    "4294967296",
    "18446744073709551616",
    "-9223372036854775809",
    "1e309",
    "0.5",
    "null",
    "\"7\"",
    "[]",
    "{}",
];

/// Mutations of JSON text: byte-level ones, and a number (the `nth`
/// digit run) replaced by an odd value.
fn json_case() -> impl Strategy<Value = (Vec<Mutation>, Vec<(usize, usize)>)> {
    (
        proptest::collection::vec(mutation(), 0..4),
        proptest::collection::vec((any::<usize>(), 0..ODD_NUMBERS.len()), 0..4),
    )
}

fn mutate_json(
    text: &[u8],
    (mutations, numbers): &(Vec<Mutation>, Vec<(usize, usize)>),
) -> Vec<u8> {
    let mut data = text.to_vec();
    for &(nth, odd) in numbers {
        let runs: Vec<(usize, usize)> = digit_runs(&data);
        if let Some(&(a, b)) = runs.get(nth % runs.len().max(1)) {
            data.splice(a..b, ODD_NUMBERS[odd].bytes());
        }
    }
    for m in mutations {
        apply(&mut data, m, &[]);
    }
    data
}

fn digit_runs(data: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if data[i].is_ascii_digit() {
            let start = i;
            while i < data.len() && data[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

fn sample_manifest() -> Manifest {
    let rec = |path: &[u8], kind: Kind| FileRecord {
        path: PathBytes(path.to_vec()),
        kind,
        size: 11,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime_ns: 1_795_674_341_814_517_322,
        ctime_ns: 1_795_674_341_814_517_322,
        ino: 12,
        sha256: Some("ab".repeat(32)),
        xattrs: None,
        link: None,
        target: None,
        rdev: None,
        sparse: false,
        gen: "20261207T100000Z".into(),
    };
    let mut link = rec(b"srv/l", Kind::Symlink);
    link.target = Some(PathBytes(b"../etc/hostname".to_vec()));
    let mut dev = rec(b"dev/null", Kind::Char);
    dev.rdev = Some((1, 3));
    Manifest {
        format: lifeboat::backup::manifest::FORMAT,
        generation: "20261207T100000Z".into(),
        filesystems: vec![FsManifest {
            mountpoint: PathBytes(b"/".to_vec()),
            archive: "root.tar.zst".into(),
            fstype: Some("ext4".into()),
            device: Some("/dev/vda2".into()),
            used_bytes: 1 << 30,
            data_bytes: 11,
            allocated_bytes: 4096,
            file_count: 4,
            entries: vec![
                rec(b".", Kind::Dir),
                rec(b"etc/hostname", Kind::File),
                rec(b"caf\xe9", Kind::File),
                link,
                dev,
            ],
            deleted: vec![PathBytes(b"gone".to_vec())],
        }],
    }
}

#[test]
fn fuzz_manifest_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("manifest.json.zst");
    let m = sample_manifest();
    m.save(&path).unwrap();
    assert_eq!(Manifest::load(&path).unwrap(), m);
    let json = serde_json::to_vec(&m).unwrap();
    runner(tar_cases() / 4)
        .run(&(json_case(), any::<bool>()), |(case, raw)| {
            let data = mutate_json(&json, &case);
            // Mostly valid zstd around mutated JSON; sometimes raw bytes.
            let bytes = if raw {
                data
            } else {
                zstd::bulk::compress(&data, 1).unwrap()
            };
            fs::write(&path, &bytes).unwrap();
            if let Ok(m) = Manifest::load(&path) {
                // What loads also saves and loads back the same.
                m.save(&path).unwrap();
                prop_assert_eq!(Manifest::load(&path).unwrap(), m);
            }
            Ok(())
        })
        .unwrap();
}

/// The example layout of docs/layout-format.md.
fn sample_layout() -> String {
    let doc = include_str!("../docs/layout-format.md");
    let start = doc.find("```json\n").expect("a json example") + 8;
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_string()
}

#[test]
fn fuzz_layout_parser() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("layout.json");
    let text = sample_layout();
    Layout::from_json(&text).expect("the documented example loads");
    runner(tar_cases() / 4)
        .run(&json_case(), |case| {
            let data = mutate_json(text.as_bytes(), &case);
            if let Ok(l) = Layout::from_json(&String::from_utf8_lossy(&data)) {
                // What loads also saves (to_json expects it) and loads back.
                // Not compared: serde_json without `float_roundtrip` may
                // move a float (reserved_blocks_percent) by one ULP.
                let again = Layout::from_json(&l.to_json());
                prop_assert!(
                    again.is_ok(),
                    "saved layout does not load: {:?}",
                    again.err()
                );
            }
            fs::write(&path, &data).unwrap();
            let _ = Layout::load(&path);
            Ok(())
        })
        .unwrap();
}
