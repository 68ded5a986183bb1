//! `backup verify`: every archive against its recorded SHA-256, every file
//! against the manifest and its content hash, every chain link; `--deep`
//! restores into a scratch folder and compares the tree with the manifest.
//!
//! Verification goes on after damage: it names every damaged file, marks
//! the generation that holds it and every generation that needs it (an
//! incremental whose files come from a damaged archive), and records the
//! result in each generation's `verify.json`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::fsio;
use super::generation::{Generation, Store, VerifyRecord};
use super::manifest::{FileRecord, FsManifest, Kind, Manifest};
use super::progress::{self, Progress};
use super::restore::{self, load_chain, system_path, Damaged, LostFile, RestoreOptions};
use super::scan::{check_entry, scan_archive, Tar};
use super::tar::{show, EntryKind, Header};
use super::walk::{self, Excludes};

pub struct VerifyOptions {
    pub from: PathBuf,
    /// One generation (and its chain); every generation when none.
    pub generation: Option<String>,
    pub deep: bool,
    /// Where `--deep` restores (a temporary folder inside it).
    pub scratch: Option<PathBuf>,
    pub progress: progress::Mode,
    /// Opens encrypted generations (`--identity`).
    pub ids: Option<std::sync::Arc<super::seal::Identities>>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct VerifyReport {
    pub generations: Vec<String>,
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub deep: bool,
    /// The first problem, naming the generation and file; none when sound.
    pub problem: Option<String>,
    /// Every damaged generation, with why.
    pub damaged_generations: Vec<DamagedGeneration>,
    /// Every damaged file, in the generation whose archive holds it.
    pub damaged_files: Vec<LostFile>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DamagedGeneration {
    pub id: String,
    pub problems: Vec<String>,
}

/// What verification found in one generation.
#[derive(Debug, Default)]
struct Found {
    problems: Vec<String>,
    /// Damaged files held by this generation: (mount point, path).
    files: HashSet<(Vec<u8>, Vec<u8>)>,
    /// Damaged files it needs (its own and older generations'), as shown.
    needs: Vec<String>,
    /// Damage that is not one file's (manifest, chain): whatever needs
    /// this generation is damaged.
    whole: bool,
}

pub fn verify(opts: &VerifyOptions) -> Result<VerifyReport> {
    let store = Store::with_identities(&opts.from, opts.ids.clone());
    let listing = store.scan()?;
    // Without the identity, nothing of an encrypted generation can be
    // checked: one clear error, not a report of damage.
    for g in &listing.good {
        if opts
            .generation
            .as_ref()
            .map_or(true, |id| g.chain.contains(id) || &g.id == id)
        {
            store.need_open(g)?;
        }
    }
    let (targets, bad) = match &opts.generation {
        Some(id) => match listing.bad.iter().find(|b| &b.id == id) {
            Some(b) => (Vec::new(), vec![b.clone()]),
            None => (store.load(id)?.chain.clone(), Vec::new()),
        },
        None => {
            if listing.good.is_empty() && listing.bad.is_empty() {
                anyhow::bail!("no backups in {}", opts.from.display());
            }
            let ids = listing.good.iter().map(|g| g.id.clone()).collect();
            (ids, listing.bad.clone())
        }
    };
    let mut report = VerifyReport {
        deep: opts.deep,
        ..VerifyReport::default()
    };
    let mut progress = Progress::new("verify", opts.progress);
    let mut found: HashMap<String, Found> = HashMap::new();
    for b in &bad {
        let f = Found {
            problems: vec![format!("generation {}: {}", b.id, b.error)],
            whole: true,
            ..Found::default()
        };
        conclude(&store, &b.id, false, f, &mut report, &mut found);
    }
    for id in &targets {
        let mut f = verify_one(&store, id, &mut report, &mut progress);
        f.problems.extend(needs_damaged(&store, id, &found));
        let deep = opts.deep && opts.generation.is_none();
        conclude(&store, id, deep, f, &mut report, &mut found);
    }
    progress.done();
    if opts.deep && report.problem.is_none() {
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
        let f = Found {
            problems: problem.into_iter().collect(),
            ..Found::default()
        };
        conclude(&store, &id, true, f, &mut report, &mut found);
    }
    Ok(report)
}

/// Records what was found in generation `id` (its `verify.json` and the
/// report).
fn conclude(
    store: &Store,
    id: &str,
    deep: bool,
    f: Found,
    report: &mut VerifyReport,
    found: &mut HashMap<String, Found>,
) {
    if !report.generations.iter().any(|g| g == id) {
        report.generations.push(id.to_string());
    }
    let rec = VerifyRecord {
        verified_at: crate::util::rfc3339(crate::util::now_epoch()),
        deep,
        ok: f.problems.is_empty(),
        problem: f.problems.first().cloned(),
        files_checked: report.files_checked,
        problems: f.problems.clone(),
        damaged_files: f.needs.clone(),
    };
    // A read-only backup folder can still be verified.
    if let Err(e) = store.write_verify(id, &rec) {
        log::warn!("could not record the result in generation {id}: {e:#}");
    }
    if !f.problems.is_empty() {
        if report.problem.is_none() {
            report.problem = f.problems.first().cloned();
        }
        report.damaged_generations.retain(|d| d.id != id);
        report.damaged_generations.push(DamagedGeneration {
            id: id.to_string(),
            problems: f.problems.clone(),
        });
    }
    found.insert(id.to_string(), f);
}

/// The damaged data of older generations that generation `id` needs.
fn needs_damaged(store: &Store, id: &str, found: &HashMap<String, Found>) -> Vec<String> {
    let Ok((gen, manifest, chain)) = load_chain(store, Some(id)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for g in &chain[..chain.len() - 1] {
        let Some(f) = found.get(&g.id) else { continue };
        if f.whole {
            out.push(format!(
                "generation {}: built on generation {}, which is damaged",
                gen.id, g.id
            ));
            continue;
        }
        for fs in &manifest.filesystems {
            for r in fs.entries.iter().filter(|r| r.gen == g.id) {
                if f.files
                    .contains(&(fs.mountpoint.0.clone(), r.path.0.clone()))
                {
                    out.push(format!(
                        "generation {}: needs {} from generation {}, which is damaged",
                        gen.id,
                        system_path(&fs.mountpoint, &r.path.0),
                        g.id
                    ));
                }
            }
        }
    }
    out
}

fn verify_one(
    store: &Store,
    id: &str,
    report: &mut VerifyReport,
    progress: &mut Progress,
) -> Found {
    let mut f = Found::default();
    let (gen, manifest, chain) = match load_chain(store, Some(id)) {
        Ok(x) => x,
        Err(e) => {
            f.problems.push(match e.downcast::<Damaged>() {
                Ok(d) => d.0,
                Err(e) => format!("generation {id}: {e:#}"),
            });
            f.whole = true;
            return f;
        }
    };
    if let Err(e) = check_older(store, &gen, &manifest, &chain) {
        f.problems.push(e);
        f.whole = true;
    }
    for fs in &manifest.filesystems {
        let (bad, damage) = verify_archive(store, &gen, fs, report, progress);
        f.problems.extend(damage);
        let archive = gen
            .archives
            .iter()
            .find(|a| a.mountpoint == fs.mountpoint)
            .map(|a| a.file.clone())
            .unwrap_or_default();
        for (rel, why) in bad {
            let path = system_path(&fs.mountpoint, &rel);
            f.needs.push(path.clone());
            f.files.insert((fs.mountpoint.0.clone(), rel));
            report.damaged_files.push(LostFile {
                path,
                generation: gen.id.clone(),
                archive: archive.clone(),
                why,
            });
        }
    }
    f
}

/// Records that point at older generations must agree with those.
fn check_older(
    store: &Store,
    gen: &Generation,
    manifest: &Manifest,
    chain: &[Generation],
) -> Result<(), String> {
    let mut older: HashMap<&str, Manifest> = HashMap::new();
    for g in &chain[..chain.len() - 1] {
        let m = store
            .load_manifest(g)
            .map_err(|e| format!("generation {}: {e:#}", g.id))?;
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
                    return Err(format!(
                        "generation {}: file {} refers to generation {gid}, whose manifest does not list it (manifest does not match)",
                        gen.id, r.path
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks one archive; returns the damaged files (path in the file
/// system, why) and every problem.
fn verify_archive(
    store: &Store,
    gen: &Generation,
    fs: &FsManifest,
    report: &mut VerifyReport,
    progress: &mut Progress,
) -> (Vec<(Vec<u8>, String)>, Vec<String>) {
    let mut wanted: HashMap<Vec<u8>, &FileRecord> = fs
        .entries
        .iter()
        .filter(|r| r.gen == gen.id)
        .map(|r| (r.path.0.clone(), r))
        .collect();
    let info = gen.archives.iter().find(|a| a.mountpoint == fs.mountpoint);
    let where_ = format!(
        "generation {}: archive {}",
        gen.id,
        info.map_or("(none)", |a| a.file.as_str())
    );
    progress.expect(
        wanted
            .values()
            .filter(|r| r.kind == Kind::File && r.link.is_none())
            .map(|r| r.size)
            .sum(),
        wanted.len() as u64,
    );
    let mut bad: Vec<(Vec<u8>, String)> = Vec::new();
    let mut damage = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let scan = match info {
        None => Err(anyhow::anyhow!(
            "no archive for {} (manifest does not match)",
            fs.mountpoint
        )),
        Some(info) => scan_archive(&store.gen_dir(&gen.id).join(&info.file), store.ids_for(gen), |tar, h, rel| {
            let Some(rec) = wanted.remove(rel) else {
                damage.push(format!(
                    "{where_}: file {} is in the archive but not in the manifest (manifest does not match)",
                    show(rel)
                ));
                return Ok(());
            };
            let res = check_entry(h, rec).and_then(|()| match h.kind {
                EntryKind::File => match hash_data(tar, h, &mut buf, progress, report) {
                    Ok(sum) if Some(&sum) == rec.sha256.as_ref() => Ok(()),
                    Ok(_) => Err("content does not match its SHA-256 (damaged)".into()),
                    Err(e) => Err(format!("{e:#}")),
                },
                _ => Ok(()),
            });
            match res {
                // The stream's damage: the scan names it and goes on.
                Err(_) if tar.get_ref().pending_damage().is_some() => {
                    let what = tar.get_ref().pending_damage().unwrap_or_default();
                    anyhow::bail!("damaged data ({what})")
                }
                Err(why) => bad.push((rel.to_vec(), why)),
                Ok(()) => report.files_checked += 1,
            }
            progress.add(0, 1);
            Ok(())
        })
        .map(|mut scan| {
            scan.check_stored(&info.sha256, info.bytes);
            scan
        }),
    };
    match scan {
        Ok(scan) => {
            damage.extend(scan.damage_all().map(|d| format!("{where_}: {d}")));
            for rel in scan.hit {
                bad.push((rel, "in a damaged part of the archive".into()));
            }
        }
        Err(e) => damage.push(format!("{where_}: {e:#}")),
    }
    let mut rest: Vec<Vec<u8>> = wanted.into_keys().collect();
    rest.sort();
    bad.extend(
        rest.into_iter()
            .map(|r| (r, "not found in the archive (lost to damage)".into())),
    );
    bad.sort();
    if !bad.is_empty() && damage.is_empty() {
        damage.push(format!("{where_}: {} damaged file(s)", bad.len()));
    }
    (bad, damage)
}

/// The SHA-256 of the current entry's content (holes of a sparse file as
/// zeros).
fn hash_data(
    tar: &mut Tar,
    h: &Header,
    buf: &mut [u8],
    progress: &mut Progress,
    report: &mut VerifyReport,
) -> Result<String> {
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
            let n = tar.read_data(&mut buf[..k])?;
            if n == 0 {
                anyhow::bail!("cut short");
            }
            hash.update(&buf[..n]);
            left -= n as u64;
            progress.add(n as u64, 0);
            report.bytes_checked += n as u64;
        }
        pos = off + len;
    }
    super::create::hash_zeros(&mut hash, h.size - pos);
    Ok(hex::encode(hash.finalize()))
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
        no_same_owner: false,
        no_devices: false,
        progress: opts.progress,
        ids: opts.ids.clone(),
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
    compare_under(scratch, manifest, fs, b".")
}

/// [`compare_tree`] for the part of `fs` at `rel` (relative to its root;
/// `.` for all of it): what is restored there, and what the manifest holds
/// there (a `--path` restore).
pub fn compare_under(
    scratch: &Path,
    manifest: &Manifest,
    fs: &FsManifest,
    rel: &[u8],
) -> Result<(), String> {
    let whole = rel == b".";
    let under = |p: &[u8]| whole || p == rel || p.starts_with(&[rel, b"/"].concat());
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
    let mut entries = restored_entries(&root, rel, &ex)?;
    entries.retain(|e| under(&e.rec.path.0));
    let mut want: HashMap<&[u8], &FileRecord> = fs
        .entries
        .iter()
        .filter(|r| under(&r.path.0))
        .map(|r| (r.path.0.as_slice(), r))
        .collect();
    let mut ino_of: HashMap<&[u8], u64> = HashMap::new();
    for e in &entries {
        let got = &e.rec;
        let Some(r) = want.remove(got.path.0.as_slice()) else {
            return Err(format!("{} is restored but not in the manifest", got.path));
        };
        compare_entry(&root, got, r)?;
        if got.kind == Kind::File {
            ino_of.insert(r.path.0.as_slice(), got.ino);
        }
    }
    if let Some(first) = want.keys().min() {
        return Err(format!(
            "{} is in the manifest but was not restored",
            show(first)
        ));
    }
    for r in fs.entries.iter().filter(|r| under(&r.path.0)) {
        if let Some(l) = r.link.as_ref().filter(|l| under(&l.0)) {
            if ino_of.get(r.path.0.as_slice()) != ino_of.get(l.0.as_slice()) {
                return Err(format!("{} is not a hard link to {l}", r.path));
            }
        }
    }
    Ok(())
}

/// What is restored at `rel` below `root`, with paths relative to `root`
/// (a file is walked from its folder; the caller keeps what is under it).
fn restored_entries(
    root: &Path,
    rel: &[u8],
    ex: &Excludes,
) -> Result<Vec<walk::WalkEntry>, String> {
    use std::os::unix::ffi::OsStrExt;
    let mut from = rel.to_vec();
    if rel != b"." && !root.join(std::ffi::OsStr::from_bytes(rel)).is_dir() {
        from = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => rel[..i].to_vec(),
            None => b".".to_vec(),
        };
    }
    let start = match from.as_slice() {
        b"." => root.to_path_buf(),
        f => root.join(std::ffi::OsStr::from_bytes(f)),
    };
    let (mut entries, _) = walk::walk(&start, "", ex).map_err(|e| format!("{e:#}"))?;
    if from != b"." {
        for e in &mut entries {
            e.rec.path.0 = match e.rec.path.0.as_slice() {
                b"." => from.clone(),
                p => [&from[..], b"/", p].concat(),
            };
        }
    }
    Ok(entries)
}

/// One restored entry against its manifest record: kind, size, mode,
/// owner, time, link target, device numbers, xattrs and content.
fn compare_entry(root: &Path, got: &FileRecord, r: &FileRecord) -> Result<(), String> {
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
        root.to_path_buf()
    } else {
        root.join(p.as_path())
    };
    let x = fsio::list_xattrs(&abs).map_err(|e| format!("{p}: {e}"))?;
    if fsio::xattr_digest(&x) != r.xattrs {
        return Err(format!("{p}: xattrs or ACLs differ"));
    }
    if got.kind == Kind::File {
        let sum = crate::util::sha256_file(&abs).map_err(|e| format!("{p}: {e:#}"))?;
        if Some(sum) != r.sha256 {
            return Err(format!("{p}: content differs"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::PathBytes;

    /// The manifest of the tree at `root`, as a backup of `/` writes it.
    fn manifest_of(root: &Path) -> Manifest {
        let (entries, _) = walk::walk(root, "g", &Excludes::default()).unwrap();
        let mut recs = Vec::new();
        for e in entries {
            let mut r = e.rec;
            let abs = root.join(r.path.as_path());
            r.xattrs = fsio::xattr_digest(&fsio::list_xattrs(&abs).unwrap());
            if r.kind == Kind::File {
                r.sha256 = Some(crate::backup::compress::hash_file(&abs).unwrap().0);
            }
            recs.push(r);
        }
        Manifest {
            format: crate::backup::manifest::FORMAT,
            generation: "g".into(),
            filesystems: vec![FsManifest {
                mountpoint: PathBytes(b"/".to_vec()),
                archive: String::new(),
                fstype: None,
                device: None,
                used_bytes: 0,
                data_bytes: 0,
                allocated_bytes: 0,
                file_count: recs.len() as u64,
                entries: recs,
                deleted: Vec::new(),
            }],
        }
    }

    /// A part (folder or file) is compared alone: a difference inside it
    /// is found, one outside it is not its business.
    #[test]
    fn a_part_is_compared_alone() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        std::fs::create_dir_all(t.join("a/sub")).unwrap();
        std::fs::create_dir_all(t.join("b")).unwrap();
        std::fs::write(t.join("a/x"), b"one").unwrap();
        std::fs::write(t.join("a/sub/y"), b"two").unwrap();
        std::fs::write(t.join("b/z"), b"three").unwrap();
        let m = manifest_of(t);
        let fs = &m.filesystems[0];
        for rel in [&b"."[..], b"a", b"a/x", b"a/sub/y", b"b"] {
            assert_eq!(compare_under(t, &m, fs, rel), Ok(()), "{rel:?}");
        }
        std::fs::write(t.join("a/sub/y"), b"TWO").unwrap();
        let e = compare_under(t, &m, fs, b"a").unwrap_err();
        assert!(e.contains("a/sub/y"), "{e}");
        assert!(compare_under(t, &m, fs, b"a/sub/y").is_err());
        assert_eq!(compare_under(t, &m, fs, b"b"), Ok(()));
        assert_eq!(compare_under(t, &m, fs, b"a/x"), Ok(()));
        let b_time = std::fs::metadata(t.join("b")).unwrap().modified().unwrap();
        std::fs::write(t.join("b/new"), b"").unwrap();
        let b = std::fs::File::open(t.join("b")).unwrap();
        b.set_modified(b_time).unwrap();
        let e = compare_under(t, &m, fs, b"b").unwrap_err();
        assert!(
            e.contains("b/new is restored but not in the manifest"),
            "{e}"
        );
        std::fs::remove_file(t.join("a/x")).unwrap();
        assert!(compare_under(t, &m, fs, b"a/x").is_err());
    }
}
