//! `backup verify`: every archive against its recorded SHA-256, every file
//! against the manifest and its content hash, every chain link; `--deep`
//! restores into a scratch folder and compares the tree with the manifest.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::compress::{hash_file, ArchiveStream};
use super::extract::normalize;
use super::fsio;
use super::generation::{Generation, Store, VerifyRecord};
use super::manifest::{FileRecord, FsManifest, Kind, Manifest};
use super::progress::{self, Progress};
use super::restore::{self, load_chain, Damaged, RestoreOptions};
use super::tar::{show, EntryKind, TarReader};
use super::walk::{self, Excludes};

pub struct VerifyOptions {
    pub from: PathBuf,
    /// One generation (and its chain); every generation when none.
    pub generation: Option<String>,
    pub deep: bool,
    /// Where `--deep` restores (a temporary folder inside it).
    pub scratch: Option<PathBuf>,
    pub progress: progress::Mode,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub generations: Vec<String>,
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub deep: bool,
    /// The first problem, naming the generation and file; none when sound.
    pub problem: Option<String>,
}

pub fn verify(opts: &VerifyOptions) -> Result<VerifyReport> {
    let store = Store::new(&opts.from);
    let targets: Vec<String> = match &opts.generation {
        Some(id) => {
            let g = store.load(id)?;
            g.chain.clone()
        }
        None => {
            let all = store.list()?;
            if all.is_empty() {
                anyhow::bail!("no backups in {}", opts.from.display());
            }
            all.into_iter().map(|g| g.id).collect()
        }
    };
    let mut report = VerifyReport {
        deep: opts.deep,
        ..VerifyReport::default()
    };
    let mut progress = Progress::new("verify", opts.progress);
    for id in &targets {
        let res = verify_one(&store, id, &mut report, &mut progress);
        let problem = match res {
            Ok(()) => None,
            Err(e) => match e.downcast::<Damaged>() {
                Ok(d) => Some(d.0),
                Err(e) => Some(format!("generation {id}: {e:#}")),
            },
        };
        report.generations.push(id.clone());
        record(
            &store,
            id,
            opts.deep && opts.generation.is_none(),
            &problem,
            report.files_checked,
        );
        if problem.is_some() {
            report.problem = problem;
            progress.done();
            return Ok(report);
        }
    }
    progress.done();
    if opts.deep {
        let id = opts
            .generation
            .clone()
            .unwrap_or_else(|| targets.last().cloned().unwrap_or_default());
        let problem = deep(&store, &id, opts)
            .err()
            .map(|e| match e.downcast::<Damaged>() {
                Ok(d) => d.0,
                Err(e) => format!("generation {id}: deep check: {e:#}"),
            });
        record(&store, &id, true, &problem, report.files_checked);
        report.problem = problem;
    }
    Ok(report)
}

fn record(store: &Store, id: &str, deep: bool, problem: &Option<String>, files: u64) {
    let rec = VerifyRecord {
        verified_at: crate::util::rfc3339(crate::util::now_epoch()),
        deep,
        ok: problem.is_none(),
        problem: problem.clone(),
        files_checked: files,
    };
    // A read-only backup folder can still be verified.
    if let Err(e) = store.write_verify(id, &rec) {
        log::warn!("could not record the result in generation {id}: {e:#}");
    }
}

fn verify_one(
    store: &Store,
    id: &str,
    report: &mut VerifyReport,
    progress: &mut Progress,
) -> Result<()> {
    let (gen, manifest, chain) = load_chain(store, Some(id))?;
    // Records that point at older generations must agree with those.
    let mut older: HashMap<&str, Manifest> = HashMap::new();
    for g in &chain[..chain.len() - 1] {
        let m = Manifest::load(&store.gen_dir(&g.id).join(super::generation::MANIFEST_FILE))
            .map_err(|e| Damaged(format!("generation {}: {e:#}", g.id)))?;
        older.insert(g.id.as_str(), m);
    }
    for fs in &manifest.filesystems {
        for (gid, m) in &older {
            let theirs = m.filesystem(&fs.mountpoint.0);
            let index: HashMap<&[u8], &FileRecord> = theirs
                .map(|f| f.entries.iter().map(|r| (r.path.0.as_slice(), r)).collect())
                .unwrap_or_default();
            for r in fs.entries.iter().filter(|r| r.gen == *gid) {
                let same = index.get(r.path.0.as_slice()).is_some_and(|o| {
                    o.gen == r.gen && o.sha256 == r.sha256 && o.kind == r.kind && o.size == r.size
                });
                if !same {
                    return Err(Damaged(format!(
                        "generation {}: file {} refers to generation {gid}, whose manifest does not list it (manifest does not match)",
                        gen.id, r.path
                    ))
                    .into());
                }
            }
        }
    }
    for fs in &manifest.filesystems {
        verify_archive(store, &gen, fs, report, progress)?;
    }
    Ok(())
}

fn verify_archive(
    store: &Store,
    gen: &Generation,
    fs: &FsManifest,
    report: &mut VerifyReport,
    progress: &mut Progress,
) -> Result<()> {
    let Some(info) = gen.archives.iter().find(|a| a.mountpoint == fs.mountpoint) else {
        return Err(Damaged(format!(
            "generation {}: no archive for {} (manifest does not match)",
            gen.id, fs.mountpoint
        ))
        .into());
    };
    let path = store.gen_dir(&gen.id).join(&info.file);
    let name = |what: String| {
        Damaged(format!(
            "generation {}: archive {}: {what}",
            gen.id, info.file
        ))
    };
    let (sum, bytes) = hash_file(&path).map_err(|e| name(format!("{e:#}")))?;
    let file_ok = sum == info.sha256 && bytes == info.bytes;
    let mut wanted: HashMap<Vec<u8>, &FileRecord> = fs
        .entries
        .iter()
        .filter(|r| r.gen == gen.id)
        .map(|r| (r.path.0.clone(), r))
        .collect();
    progress.expect(
        wanted
            .values()
            .filter(|r| r.kind == Kind::File && r.link.is_none())
            .map(|r| r.size)
            .sum(),
        wanted.len() as u64,
    );
    let stream = ArchiveStream::open(&path).map_err(|e| name(format!("{e:#}")))?;
    let mut tar = TarReader::new(stream);
    let mut last = String::from("(start)");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let h = match tar.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => return Err(name(format!("damaged after file {last}: {e:#}")).into()),
        };
        let rel = normalize(&h.path).map_err(|e| name(format!("{e:#}")))?;
        last = show(&rel);
        let Some(rec) = wanted.remove(&rel) else {
            return Err(name(format!(
                "file {last} is in the archive but not in the manifest (manifest does not match)"
            ))
            .into());
        };
        let kind_ok = matches!(
            (h.kind, rec.kind, rec.link.is_some()),
            (EntryKind::File, Kind::File, false)
                | (EntryKind::HardLink, Kind::File, true)
                | (EntryKind::Dir, Kind::Dir, _)
                | (EntryKind::Symlink, Kind::Symlink, _)
                | (EntryKind::Char, Kind::Char, _)
                | (EntryKind::Block, Kind::Block, _)
                | (EntryKind::Fifo, Kind::Fifo, _)
        );
        let mtime = h.mtime_sec * 1_000_000_000 + i64::from(h.mtime_nsec);
        let meta_ok =
            h.mode == rec.mode && h.uid == rec.uid && h.gid == rec.gid && mtime == rec.mtime_ns;
        let digest = fsio::xattr_digest(&with_acl_xattrs(&h));
        if !kind_ok
            || !meta_ok
            || digest != rec.xattrs
            || (h.kind == EntryKind::File && h.size != rec.size)
        {
            return Err(name(format!("file {last}: metadata does not match the manifest")).into());
        }
        if h.kind == EntryKind::File {
            let mut hash = Sha256::new();
            let mut pos = 0u64;
            let segments = h
                .sparse
                .as_ref()
                .map(|m| m.segments.clone())
                .unwrap_or_else(|| vec![(0, h.size)]);
            for (off, len) in segments {
                super::create::hash_zeros(&mut hash, off - pos);
                let mut left = len;
                while left > 0 {
                    let k = left.min(buf.len() as u64) as usize;
                    let n = tar
                        .read_data(&mut buf[..k])
                        .map_err(|e| name(format!("damaged inside file {last}: {e:#}")))?;
                    if n == 0 {
                        return Err(name(format!("file {last} is cut short")).into());
                    }
                    hash.update(&buf[..n]);
                    left -= n as u64;
                    progress.add(n as u64, 0);
                    report.bytes_checked += n as u64;
                }
                pos = off + len;
            }
            super::create::hash_zeros(&mut hash, h.size - pos);
            if Some(hex::encode(hash.finalize())) != rec.sha256 {
                return Err(name(format!(
                    "file {last}: content does not match its SHA-256 (damaged)"
                ))
                .into());
            }
        }
        report.files_checked += 1;
        progress.add(0, 1);
    }
    if let Some(first) = wanted.keys().min() {
        return Err(name(format!(
            "{} file(s) of the manifest missing from the archive, first {}",
            wanted.len(),
            show(first)
        ))
        .into());
    }
    let mut stream = tar.into_inner();
    stream
        .finish()
        .map_err(|e| name(format!("damaged after the last file: {e:#}")))?;
    if !file_ok {
        return Err(name(
            "file differs from its recorded SHA-256 (damaged outside the file data)".into(),
        )
        .into());
    }
    Ok(())
}

/// The xattrs a header stands for: its SCHILY.xattr records plus ACLs that
/// came only as text (archives from other tools).
fn with_acl_xattrs(h: &super::tar::Header) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = h.xattrs.clone();
    for (name, text) in [
        (super::acl::ACCESS, &h.acl_access),
        (super::acl::DEFAULT, &h.acl_default),
    ] {
        if let Some(t) = text {
            if !list.iter().any(|(k, _)| k == name) {
                if let Ok(bin) = super::acl::from_text(t) {
                    list.push((name.to_vec(), bin));
                }
            }
        }
    }
    list.sort();
    list
}

/// Restores generation `id` into a scratch folder and compares the tree
/// with the manifest.
fn deep(store: &Store, id: &str, opts: &VerifyOptions) -> Result<()> {
    let parent = opts
        .scratch
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let scratch = tempfile::Builder::new()
        .prefix("lifeboat-verify-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a scratch folder in {}", parent.display()))?;
    restore::restore(&RestoreOptions {
        from: store.dir.clone(),
        to: scratch.path().to_path_buf(),
        generation: Some(id.to_string()),
        paths: Vec::new(),
        overwrite: false,
        progress: opts.progress,
    })?;
    let (_, manifest, _) = load_chain(store, Some(id))?;
    for fs in &manifest.filesystems {
        compare_tree(scratch.path(), &manifest, fs)
            .map_err(|e| Damaged(format!("generation {id}: deep check: {e}")))?;
    }
    Ok(())
}

/// Compares the restored tree of `fs` below `scratch` with its records:
/// kinds, sizes, modes, owners, times, link targets, devices, hard links,
/// xattr digests and content hashes. Returns the first difference.
pub fn compare_tree(scratch: &Path, manifest: &Manifest, fs: &FsManifest) -> Result<(), String> {
    let strip = |p: &Path| scratch.join(p.strip_prefix("/").unwrap_or(p));
    let root = strip(fs.mountpoint.as_path());
    let ex = Excludes {
        contents_of: manifest
            .filesystems
            .iter()
            .filter(|f| {
                f.mountpoint != fs.mountpoint
                    && f.mountpoint.as_path().starts_with(fs.mountpoint.as_path())
            })
            .map(|f| strip(f.mountpoint.as_path()))
            .collect(),
        ..Excludes::default()
    };
    let (entries, _) = walk::walk(&root, "", &ex).map_err(|e| format!("{e:#}"))?;
    let mut want: HashMap<&[u8], &FileRecord> = fs
        .entries
        .iter()
        .map(|r| (r.path.0.as_slice(), r))
        .collect();
    let mut ino_of: HashMap<&[u8], u64> = HashMap::new();
    for e in &entries {
        let got = &e.rec;
        let Some(r) = want.remove(got.path.0.as_slice()) else {
            return Err(format!("{} is restored but not in the manifest", got.path));
        };
        let p = &got.path;
        if got.kind != r.kind || (got.kind == Kind::File && got.size != r.size) {
            return Err(format!("{p}: kind or size differs"));
        }
        if got.mode != r.mode || got.uid != r.uid || got.gid != r.gid {
            return Err(format!("{p}: mode or owner differs"));
        }
        if got.mtime_ns != r.mtime_ns && got.kind != Kind::Symlink {
            return Err(format!("{p}: modification time differs"));
        }
        if got.target != r.target || got.rdev != r.rdev {
            return Err(format!("{p}: link target or device numbers differ"));
        }
        let abs = if p.0 == b"." {
            root.clone()
        } else {
            root.join(p.as_path())
        };
        let x = fsio::list_xattrs(&abs).map_err(|e| format!("{p}: {e}"))?;
        if fsio::xattr_digest(&x) != r.xattrs {
            return Err(format!("{p}: xattrs or ACLs differ"));
        }
        if got.kind == Kind::File {
            let mut f = std::fs::File::open(&abs).map_err(|e| format!("{p}: {e}"))?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf).map_err(|e| format!("{p}: {e}"))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            if Some(hex::encode(h.finalize())) != r.sha256 {
                return Err(format!("{p}: content differs"));
            }
            ino_of.insert(r.path.0.as_slice(), got.ino);
        }
    }
    if let Some(first) = want.keys().min() {
        return Err(format!(
            "{} is in the manifest but was not restored",
            show(first)
        ));
    }
    for r in &fs.entries {
        if let Some(l) = &r.link {
            if ino_of.get(r.path.0.as_slice()) != ino_of.get(l.0.as_slice()) {
                return Err(format!("{} is not a hard link to {l}", r.path));
            }
        }
    }
    Ok(())
}
