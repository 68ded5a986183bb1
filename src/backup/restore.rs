//! `backup restore`: a generation with its chain into a mounted tree (or
//! only some paths of it), and plain tar archives made by other tools.
//!
//! Each file is written once: the generation's manifest says which archive
//! of the chain holds it, so older archives give only what later ones did
//! not replace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::compress::{hash_file, ArchiveStream};
use super::extract::{normalize, Extractor};
use super::generation::{Generation, Store, MANIFEST_FILE};
use super::manifest::{FileRecord, Kind, Manifest, PathBytes};
use super::progress::{self, Progress};
use super::tar::{show, EntryKind, Header, TarReader};

pub struct RestoreOptions {
    /// The backup folder.
    pub from: PathBuf,
    /// Root of the tree to restore into (file systems mounted below it).
    pub to: PathBuf,
    /// Generation id; the newest when none.
    pub generation: Option<String>,
    /// Only these paths (absolute, as on the backed-up system) and what is
    /// below them.
    pub paths: Vec<PathBuf>,
    /// Replace existing files; without it the target must be empty (or the
    /// requested paths absent).
    pub overwrite: bool,
    pub progress: progress::Mode,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub generation: String,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Metadata the target did not take (not fatal).
    pub warnings: Vec<String>,
}

/// A damaged backup found while restoring or verifying.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Damaged(pub String);

/// Loads a generation, its manifest and its chain, checking that every
/// generation of the chain is there and matches what its successor recorded.
pub fn load_chain(
    store: &Store,
    id: Option<&str>,
) -> Result<(Generation, Manifest, Vec<Generation>)> {
    let gen = store.pick(id)?;
    let mpath = store.gen_dir(&gen.id).join(MANIFEST_FILE);
    let (sum, _) = hash_file(&mpath)
        .map_err(|e| Damaged(format!("generation {}: manifest missing: {e:#}", gen.id)))?;
    if sum != gen.manifest_sha256 {
        return Err(Damaged(format!(
            "generation {}: manifest {MANIFEST_FILE} does not match generation.json (damaged or replaced)",
            gen.id
        ))
        .into());
    }
    let manifest =
        Manifest::load(&mpath).map_err(|e| Damaged(format!("generation {}: {e:#}", gen.id)))?;
    if manifest.generation != gen.id {
        return Err(Damaged(format!(
            "generation {}: its manifest belongs to generation {}",
            gen.id, manifest.generation
        ))
        .into());
    }
    let mut chain = Vec::new();
    for (i, cid) in gen.chain.iter().enumerate() {
        let g = if cid == &gen.id {
            gen.clone()
        } else {
            store.load(cid).map_err(|e| {
                Damaged(format!(
                    "generation {}: generation {cid} of its chain is missing or unreadable: {e:#}",
                    gen.id
                ))
            })?
        };
        if i > 0 {
            let prev: &Generation = &chain[i - 1];
            if g.parent.as_deref() != Some(prev.id.as_str()) {
                return Err(Damaged(format!(
                    "generation {}: chain broken: {} does not follow {}",
                    gen.id, g.id, prev.id
                ))
                .into());
            }
            let (psum, _) = hash_file(&store.gen_dir(&prev.id).join(MANIFEST_FILE))
                .map_err(|e| Damaged(format!("generation {}: manifest missing: {e:#}", prev.id)))?;
            if g.parent_manifest_sha256.as_deref() != Some(psum.as_str()) {
                return Err(Damaged(format!(
                    "generation {}: the manifest of generation {} does not match what {} was built on (changed or damaged)",
                    gen.id, prev.id, g.id
                ))
                .into());
            }
        }
        chain.push(g);
    }
    Ok((gen, manifest, chain))
}

/// What to take from one archive: tar path (normalized) → record.
type Wanted<'a> = HashMap<Vec<u8>, &'a FileRecord>;

/// Restores a generation (with its chain) into `opts.to`.
pub fn restore(opts: &RestoreOptions) -> Result<RestoreReport> {
    let store = Store::new(&opts.from);
    let (gen, manifest, chain) = load_chain(&store, opts.generation.as_deref())?;
    let started = std::time::Instant::now();
    // Which records, per file system.
    let mut selected: Vec<(usize, Vec<&FileRecord>)> = Vec::new();
    let mut unmatched: Vec<&PathBuf> = opts.paths.iter().collect();
    for (fi, fs) in manifest.filesystems.iter().enumerate() {
        let recs: Vec<&FileRecord> = if opts.paths.is_empty() {
            fs.entries.iter().collect()
        } else {
            let mut out = Vec::new();
            for p in &opts.paths {
                let Some(rel) = rel_in_fs(p, &fs.mountpoint, &manifest) else {
                    continue;
                };
                let before = out.len();
                for r in &fs.entries {
                    if rel == b"."
                        || r.path.0 == rel
                        || r.path.0.starts_with(&[&rel[..], b"/"].concat())
                    {
                        out.push(r);
                    }
                }
                if out.len() > before {
                    unmatched.retain(|u| *u != p);
                }
            }
            out
        };
        if !recs.is_empty() {
            selected.push((fi, recs));
        }
    }
    if let Some(p) = unmatched.first() {
        bail!("{} is not in generation {}", p.display(), gen.id);
    }
    check_target(opts, &manifest, &selected)?;

    let mut progress = Progress::new("restore", opts.progress);
    for (_, recs) in &selected {
        progress.expect(
            recs.iter()
                .filter(|r| r.kind == Kind::File && r.link.is_none())
                .map(|r| r.size)
                .sum(),
            recs.len() as u64,
        );
    }
    let mut report = RestoreReport {
        generation: gen.id.clone(),
        ..RestoreReport::default()
    };
    let mut damage: Vec<String> = Vec::new();
    for (fi, recs) in &selected {
        let fs = &manifest.filesystems[*fi];
        let root = opts.to.join(
            fs.mountpoint
                .as_path()
                .strip_prefix("/")
                .unwrap_or(fs.mountpoint.as_path()),
        );
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let mut ex = Extractor::new(&root);
        for g in &chain {
            let mut wanted: Wanted = recs
                .iter()
                .filter(|r| r.gen == g.id)
                .map(|r| (r.path.0.clone(), *r))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let Some(info) = g.archives.iter().find(|a| a.mountpoint == fs.mountpoint) else {
                damage.push(format!(
                    "generation {}: no archive for {} (manifest does not match)",
                    g.id, fs.mountpoint
                ));
                continue;
            };
            let path = store.gen_dir(&g.id).join(&info.file);
            // Hard-link leaders that were not asked for, but whose links were.
            let mut leader_for: HashMap<Vec<u8>, &FileRecord> = HashMap::new();
            for r in wanted.values() {
                if let Some(l) = &r.link {
                    if !wanted.contains_key(&l.0) && !leader_for.contains_key(&l.0) {
                        leader_for.insert(l.0.clone(), *r);
                    }
                }
            }
            let mut bad_files = Vec::new();
            let res = extract_archive(
                &path,
                &mut ex,
                &mut wanted,
                &leader_for,
                &mut progress,
                &mut report,
                &mut bad_files,
            );
            for b in bad_files {
                damage.push(format!("generation {}: archive {}: {b}", g.id, info.file));
            }
            if let Err(e) = res {
                damage.push(format!("generation {}: archive {}: {e:#}", g.id, info.file));
            }
            if !wanted.is_empty() {
                let mut missing: Vec<&Vec<u8>> = wanted.keys().collect();
                missing.sort();
                damage.push(format!(
                    "generation {}: archive {}: {} file(s) not restored, first {}",
                    g.id,
                    info.file,
                    missing.len(),
                    show(missing[0])
                ));
            }
        }
        ex.finish()?;
        report.warnings.append(&mut ex.warnings);
        // Restored means on disk: recovery may power off right after.
        super::fsio::sync_fs(&root).with_context(|| format!("syncing {}", root.display()))?;
    }
    progress.done();
    report.seconds = started.elapsed().as_secs_f64();
    if let Some(first) = damage.first() {
        let more = if damage.len() > 1 {
            format!(" (and {} more problems)", damage.len() - 1)
        } else {
            String::new()
        };
        return Err(Damaged(format!("restore incomplete: {first}{more}")).into());
    }
    Ok(report)
}

/// The path of `p` relative to the file system mounted at `mp`, when `mp`
/// is the deepest mount point above it.
fn rel_in_fs(p: &Path, mp: &PathBytes, manifest: &Manifest) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let deepest = manifest
        .filesystems
        .iter()
        .filter(|f| p.starts_with(f.mountpoint.as_path()))
        .max_by_key(|f| f.mountpoint.0.len())?;
    if deepest.mountpoint != *mp {
        return None;
    }
    let rest = p.strip_prefix(mp.as_path()).ok()?;
    let bytes = rest.as_os_str().as_bytes();
    normalize(bytes).ok()
}

/// Refuses to write over existing files unless told to.
fn check_target(
    opts: &RestoreOptions,
    manifest: &Manifest,
    selected: &[(usize, Vec<&FileRecord>)],
) -> Result<()> {
    if opts.overwrite {
        return Ok(());
    }
    if !opts.to.is_dir() {
        bail!(
            "restore target {} is not a directory (mount the file systems there first)",
            opts.to.display()
        );
    }
    if opts.paths.is_empty() {
        // The target and every mount point below it: empty but lost+found.
        for (fi, _) in selected {
            let fs = &manifest.filesystems[*fi];
            let dir = opts.to.join(
                fs.mountpoint
                    .as_path()
                    .strip_prefix("/")
                    .unwrap_or(fs.mountpoint.as_path()),
            );
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mounts: Vec<PathBuf> = manifest
                .filesystems
                .iter()
                .map(|f| {
                    opts.to.join(
                        f.mountpoint
                            .as_path()
                            .strip_prefix("/")
                            .unwrap_or(f.mountpoint.as_path()),
                    )
                })
                .collect();
            for ent in rd.flatten() {
                let name = ent.file_name();
                if name == "lost+found"
                    || mounts
                        .iter()
                        .any(|m| *m == ent.path() || m.starts_with(ent.path()))
                {
                    continue;
                }
                bail!(
                    "restore target {} is not empty ({} exists); restore into empty, freshly made file systems or pass --overwrite to replace files",
                    dir.display(),
                    ent.path().display()
                );
            }
        }
    } else {
        for p in &opts.paths {
            let dest = opts.to.join(p.strip_prefix("/").unwrap_or(p));
            if std::fs::symlink_metadata(&dest).is_ok() && dest != opts.to {
                bail!("{} exists; pass --overwrite to replace it", dest.display());
            }
        }
    }
    Ok(())
}

/// Extracts from one archive the entries in `wanted` (removing them as they
/// are done), checking kinds, sizes and content hashes against the records.
fn extract_archive(
    path: &Path,
    ex: &mut Extractor,
    wanted: &mut Wanted,
    leader_for: &HashMap<Vec<u8>, &FileRecord>,
    progress: &mut Progress,
    report: &mut RestoreReport,
    damaged: &mut Vec<String>,
) -> Result<()> {
    // Content hashes come back from the hashing thread by token.
    let mut expected: HashMap<u64, (String, String)> = HashMap::new();
    let res = extract_entries(
        path,
        ex,
        wanted,
        leader_for,
        progress,
        report,
        &mut expected,
    );
    let sums = match ex.take_hashes() {
        Ok(s) => s,
        // Writing failed (a full or read-only target...): stop here.
        Err(e) => return res.and(Err(e)),
    };
    let mut bad: Vec<&String> = expected
        .iter()
        .filter(|(t, (_, want))| sums.get(t).is_some_and(|got| got != want))
        .map(|(_, (name, _))| name)
        .collect();
    bad.sort();
    for name in bad {
        // Written all the same; the rest of the archive was read on.
        damaged.push(format!(
            "file {name}: content does not match its SHA-256 (damaged)"
        ));
    }
    res
}

fn extract_entries(
    path: &Path,
    ex: &mut Extractor,
    wanted: &mut Wanted,
    leader_for: &HashMap<Vec<u8>, &FileRecord>,
    progress: &mut Progress,
    report: &mut RestoreReport,
    expected: &mut HashMap<u64, (String, String)>,
) -> Result<()> {
    let stream = ArchiveStream::open(path)?;
    let mut tar = TarReader::new(stream);
    let mut last = String::from("(start)");
    loop {
        let h = match tar.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => return Err(e.context(format!("damaged after {last}"))),
        };
        let rel = normalize(&h.path)?;
        last = show(&rel);
        let (rec, dest_rel) = match wanted.remove(&rel) {
            Some(r) => (r, rel.clone()),
            None => match leader_for.get(&rel) {
                // The leader's content goes to the first link asked for.
                Some(member) if h.kind == EntryKind::File => {
                    wanted.remove(&member.path.0);
                    (*member, member.path.0.clone())
                }
                _ => continue,
            },
        };
        check_header(&h, rec).map_err(|e| Damaged(format!("file {last}: {e}")))?;
        let token = ex.extract(&mut tar, &h, &dest_rel).map_err(|e| match e
            .downcast::<super::tar::TarError>()
        {
            Ok(t) => anyhow::Error::from(t).context(format!("damaged inside {last}")),
            Err(e) => e,
        })?;
        if dest_rel != rel && h.kind == EntryKind::File {
            ex.alias_leader(&rel, ex.dest_of(&dest_rel));
        }
        if let (Some(t), Some(want)) = (token, &rec.sha256) {
            expected.insert(t, (last.clone(), want.clone()));
        }
        report.files += 1;
        if h.kind == EntryKind::File {
            report.bytes += h.size;
        }
        progress.add(if h.kind == EntryKind::File { h.size } else { 0 }, 1);
    }
    let mut inner = tar.into_inner();
    inner.finish()?;
    Ok(())
}

fn check_header(h: &Header, r: &FileRecord) -> Result<(), String> {
    let kind_ok = matches!(
        (h.kind, r.kind),
        (EntryKind::File, Kind::File)
            | (EntryKind::HardLink, Kind::File)
            | (EntryKind::Dir, Kind::Dir)
            | (EntryKind::Symlink, Kind::Symlink)
            | (EntryKind::Char, Kind::Char)
            | (EntryKind::Block, Kind::Block)
            | (EntryKind::Fifo, Kind::Fifo)
    );
    if !kind_ok {
        return Err(format!(
            "archive has a {:?}, manifest a {:?} (manifest does not match)",
            h.kind, r.kind
        ));
    }
    if h.kind == EntryKind::File && h.size != r.size {
        return Err(format!(
            "archive has {} bytes, manifest {} (manifest does not match)",
            h.size, r.size
        ));
    }
    let mtime = h.mtime_sec * 1_000_000_000 + i64::from(h.mtime_nsec);
    if h.mode != r.mode || h.uid != r.uid || h.gid != r.gid || mtime != r.mtime_ns {
        return Err("metadata differs from the manifest (manifest does not match)".into());
    }
    Ok(())
}

/// Restores a plain tar archive (GNU tar, bsdtar, ReaR's backup.tar.gz)
/// into `to`: every entry, no manifest to check against.
pub fn restore_plain(
    archive: &Path,
    to: &Path,
    overwrite: bool,
    mode: progress::Mode,
) -> Result<RestoreReport> {
    if !to.is_dir() {
        bail!("restore target {} is not a directory", to.display());
    }
    if !overwrite
        && std::fs::read_dir(to)?
            .flatten()
            .any(|e| e.file_name() != "lost+found")
    {
        bail!(
            "restore target {} is not empty; pass --overwrite to replace files",
            to.display()
        );
    }
    let started = std::time::Instant::now();
    let mut progress = Progress::new("restore", mode);
    let mut tar = TarReader::new(ArchiveStream::open(archive)?);
    let mut ex = Extractor::new(to);
    let mut report = RestoreReport {
        generation: archive.display().to_string(),
        ..RestoreReport::default()
    };
    let mut last = String::from("(start)");
    loop {
        let h = match tar.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                return Err(Damaged(format!(
                    "archive {}: damaged after {last}: {e:#}",
                    archive.display()
                ))
                .into())
            }
        };
        let rel = normalize(&h.path)?;
        last = show(&rel);
        ex.extract(&mut tar, &h, &rel)
            .with_context(|| format!("archive {}: file {last}", archive.display()))?;
        report.files += 1;
        if h.kind == EntryKind::File {
            report.bytes += h.size;
        }
        progress.add(if h.kind == EntryKind::File { h.size } else { 0 }, 1);
    }
    tar.into_inner().finish()?;
    ex.finish()?;
    progress.done();
    report.warnings = ex.warnings;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
