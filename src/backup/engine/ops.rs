//! The lifeboat side of engine backups: walking and hashing each file
//! system (the manifest), one engine snapshot per file system plus the
//! metadata snapshot, listing generations, verifying and restoring with
//! the manifest check.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{MetaRef, Repo, META_TAG};
use crate::backup::create::{archive_stem, Source};
use crate::backup::generation::{
    ArchiveInfo, GenKind, Generation, Outcome, Warnings, FORMAT, GENERATION_FILE, LAYOUT_FILE,
    MANIFEST_FILE,
};
use crate::backup::manifest::{self, FsManifest, Kind, Manifest, PathBytes};
use crate::backup::progress::Progress;
use crate::backup::walk::{self, Excludes, WalkEntry};
use crate::backup::{compress, fsio, verify::compare_under, Compression};

/// What `backup create` asks of an engine.
pub struct EngineCreate {
    pub sources: Vec<Source>,
    /// Layout stored with the generation.
    pub layout_file: Option<PathBuf>,
    pub excludes: Excludes,
    /// Applied after the backup ([`super::prune`]).
    pub retention: crate::backup::retention::Policy,
    /// Progress lines as for native backups (restic's status).
    pub progress: crate::backup::progress::Mode,
}

/// What `backup create` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineReport {
    pub generation: Generation,
    /// Bytes the repository grew by (the engine's own count).
    pub added_bytes: u64,
    /// Files whose hash was taken from the previous generation's manifest.
    pub hashes_reused: u64,
    /// Generations removed by the retention policy.
    pub removed: Vec<String>,
}

pub use crate::util::hostname;

/// One generation: every file system, then the metadata, then retention.
pub fn create(repo: &Repo, opts: &EngineCreate) -> Result<EngineReport> {
    if opts.sources.is_empty() {
        bail!("nothing to back up: no file systems given");
    }
    let started = std::time::SystemTime::now();
    let started_ns = started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let epoch = (started_ns / 1_000_000_000) as i64;
    let host = hostname();
    // Contacts the repository first: a wrong password or an unreachable
    // repository fails before the tree is read.
    let existing = repo.generations()?;
    let id = unique_id(&existing, epoch);
    let previous = previous_manifest(repo, &existing, &host);
    let mut manifest = Manifest {
        format: manifest::FORMAT,
        generation: id.clone(),
        filesystems: Vec::new(),
    };
    let mut archives = Vec::new();
    let mut warnings = Warnings::default();
    let mut added = 0u64;
    let mut reused = 0u64;
    let mut stems: Vec<String> = Vec::new();
    let run = Run {
        started,
        started_ns,
        host: &host,
        progress: std::cell::RefCell::new(Progress::new("backup", opts.progress)),
    };
    for src in &opts.sources {
        let mut stem = archive_stem(&src.mountpoint);
        if stems.contains(&stem) {
            stem = format!("{stem}-{}", stems.len());
        }
        stems.push(stem.clone());
        let prev = previous.as_ref();
        let (fsm, archive, n) =
            back_up_fs(repo, opts, src, (&id, &stem), &run, prev, &mut warnings)?;
        added += archive.bytes;
        reused += n;
        archives.push(archive);
        manifest.filesystems.push(fsm);
    }
    run.progress.borrow_mut().done();
    let gen = store_meta(repo, opts, &manifest, archives, warnings, &run)?;
    added += gen.1;
    let removed = super::prune::prune(repo, &opts.retention)?;
    Ok(EngineReport {
        generation: gen.0,
        added_bytes: added,
        hashes_reused: reused,
        removed,
    })
}

/// One file system: walked and hashed (its manifest), then one engine
/// snapshot of it. Returns the manifest, the snapshot and the hashes reused.
fn back_up_fs(
    repo: &Repo,
    opts: &EngineCreate,
    src: &Source,
    (id, stem): (&str, &str),
    run: &Run,
    previous: Option<&Manifest>,
    warnings: &mut Warnings,
) -> Result<(FsManifest, ArchiveInfo, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let mp = PathBytes(src.mountpoint.as_os_str().as_bytes().to_vec());
    let (mut entries, stats) = walk::walk(&src.path, id, &opts.excludes)
        .with_context(|| format!("reading {}", src.path.display()))?;
    warnings.sockets += stats.sockets;
    warnings.vanished += stats.vanished;
    warnings.unreadable += stats.unreadable.len() as u64;
    let prev_fs = previous.and_then(|m| m.filesystem(&mp.0));
    let reused = hash_entries(&src.path, &mut entries, prev_fs, warnings);
    log::info!("{}: backing up {}", repo.spec(), src.path.display());
    let fsm = fs_manifest(src, mp, entries);
    let mut progress = run.progress.borrow_mut();
    // restic counts regular files (hard links each) and their bytes.
    let files = fsm.entries.iter().filter(|r| r.kind == Kind::File);
    progress.expect(files.clone().map(|r| r.size).sum(), files.count() as u64);
    let saved = repo.backup_tree(
        &src.path,
        &stats.excluded_paths,
        (id, stem),
        run.host,
        Some(&mut progress),
    )?;
    if saved.partial {
        warnings.unreadable += 1;
        warnings.examples.push(format!(
            "{}: the engine could not read some files",
            fsm.mountpoint
        ));
    }
    let archive = ArchiveInfo {
        mountpoint: fsm.mountpoint.clone(),
        file: saved.id,
        bytes: saved.added_bytes,
        sha256: String::new(),
        entries: fsm.file_count,
    };
    Ok((fsm, archive, reused))
}

/// A generation id not yet in the repository.
fn unique_id(existing: &[MetaRef], epoch: i64) -> String {
    let base = crate::util::stamp(epoch);
    let mut id = base.clone();
    let mut n = 2;
    while existing.iter().any(|m| m.generation == id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// The newest manifest of this host, for reusing the hashes of unchanged
/// files; none (everything hashed) when there is none or it is unreadable.
fn previous_manifest(repo: &Repo, existing: &[MetaRef], host: &str) -> Option<Manifest> {
    let m = existing.iter().rev().find(|m| m.host == host)?;
    match load_manifest(repo, m) {
        Ok(man) => Some(man),
        Err(e) => {
            log::warn!(
                "generation {}: manifest unreadable ({e:#}); hashing every file",
                m.generation
            );
            None
        }
    }
}

/// Fills in content hashes and xattr digests; returns how many were
/// reused from `prev` (unchanged inode, size, mtime and ctime).
fn hash_entries(
    root: &Path,
    entries: &mut Vec<WalkEntry>,
    prev: Option<&FsManifest>,
    warnings: &mut Warnings,
) -> u64 {
    let recs: Vec<_> = entries.iter().map(|e| e.rec.clone()).collect();
    let nlinks: Vec<u64> = entries.iter().map(|e| e.nlink).collect();
    let reuse = match prev {
        Some(p) => manifest::match_previous(&recs, &nlinks, p).0,
        None => vec![None; recs.len()],
    };
    drop(recs);
    let mut leader: HashMap<Vec<u8>, Option<String>> = HashMap::new();
    let mut reused = 0;
    let mut keep = vec![true; entries.len()];
    for (i, e) in entries.iter_mut().enumerate() {
        let rec = &mut e.rec;
        if let (Some(j), Some(p)) = (reuse[i], prev) {
            rec.sha256 = p.entries[j].sha256.clone();
            rec.xattrs = p.entries[j].xattrs.clone();
            reused += 1;
        } else {
            let abs = if rec.path.0 == b"." {
                root.to_path_buf()
            } else {
                root.join(rec.path.as_path())
            };
            let hashed = fsio::list_xattrs(&abs)
                .map_err(anyhow::Error::from)
                .and_then(|x| {
                    rec.xattrs = fsio::xattr_digest(&x);
                    match (rec.kind, &rec.link) {
                        (Kind::File, None) => {
                            let (sum, size) = compress::hash_file(&abs)?;
                            rec.size = size;
                            Ok(Some(sum))
                        }
                        (Kind::File, Some(l)) => Ok(leader.get(&l.0).cloned().flatten()),
                        _ => Ok(None),
                    }
                });
            match hashed {
                Ok(sum) => rec.sha256 = sum,
                Err(err) => {
                    warnings.unreadable += 1;
                    if warnings.examples.len() < 20 {
                        warnings.examples.push(format!("unreadable: {err:#}"));
                    }
                    keep[i] = false;
                    continue;
                }
            }
        }
        if rec.kind == Kind::File && rec.link.is_none() {
            leader.insert(rec.path.0.clone(), rec.sha256.clone());
        }
    }
    let mut k = keep.into_iter();
    entries.retain(|_| k.next().unwrap_or(true));
    reused
}

fn fs_manifest(src: &Source, mp: PathBytes, entries: Vec<WalkEntry>) -> FsManifest {
    let mut data_bytes = 0;
    let mut allocated = 0;
    for e in &entries {
        if e.rec.kind == Kind::File && e.rec.link.is_none() {
            data_bytes += e.rec.size;
            allocated += e.blocks * 512;
        }
    }
    let records: Vec<_> = entries.into_iter().map(|e| e.rec).collect();
    FsManifest {
        mountpoint: mp,
        archive: String::new(),
        fstype: src.fstype.clone(),
        device: src.device.clone(),
        used_bytes: fsio::fs_used_bytes(&src.path).unwrap_or(0),
        data_bytes,
        allocated_bytes: allocated,
        file_count: records.len() as u64,
        entries: records,
        deleted: Vec::new(),
    }
}

/// When and where a backup runs, and its progress line.
struct Run<'a> {
    started: std::time::SystemTime,
    started_ns: i128,
    host: &'a str,
    progress: std::cell::RefCell<Progress>,
}

/// Writes generation.json, the manifest and the layout into a metadata
/// snapshot; returns the generation and the bytes it added.
fn store_meta(
    repo: &Repo,
    opts: &EngineCreate,
    manifest: &Manifest,
    mut archives: Vec<ArchiveInfo>,
    warnings: Warnings,
    run: &Run,
) -> Result<(Generation, u64)> {
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-meta-")
        .tempdir()
        .context("creating a temporary folder")?;
    let mut manifest = manifest.clone();
    for (fs, a) in manifest.filesystems.iter_mut().zip(&archives) {
        fs.archive = a.file.clone();
    }
    let manifest_sha256 = manifest.save(&dir.path().join(MANIFEST_FILE))?;
    if let Some(l) = &opts.layout_file {
        let data = std::fs::read(l).with_context(|| format!("reading layout {}", l.display()))?;
        crate::util::write_atomic(&dir.path().join(LAYOUT_FILE), &data, 0o600)?;
    }
    let epoch = (run.started_ns / 1_000_000_000) as i64;
    let files = manifest.filesystems.iter().map(|f| f.file_count).sum();
    let bytes = manifest.filesystems.iter().map(|f| f.data_bytes).sum();
    for a in &mut archives {
        a.file = format!("{}:{}", repo.engine.tool(), a.file);
    }
    let mut gen = Generation {
        format: FORMAT,
        id: manifest.generation.clone(),
        kind: GenKind::Full,
        parent: None,
        parent_manifest_sha256: None,
        chain: vec![manifest.generation.clone()],
        started_at: crate::util::rfc3339(epoch),
        finished_at: String::new(),
        started_ns: run.started_ns,
        duration_seconds: 0.0,
        hostname: run.host.to_string(),
        lifeboat_version: crate::VERSION.to_string(),
        compression: Compression::None,
        archive_bytes: archives.iter().map(|a| a.bytes).sum(),
        archives,
        manifest_sha256,
        files,
        bytes,
        stored_files: files,
        stored_content_bytes: bytes,
        deleted: 0,
        has_layout: opts.layout_file.is_some(),
        result: if warnings.unreadable > 0 {
            Outcome::Partial
        } else {
            Outcome::Ok
        },
        warnings,
        encryption: None,
    };
    gen.finished_at = crate::util::rfc3339(crate::util::now_epoch());
    gen.duration_seconds = run
        .started
        .elapsed()
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let json = serde_json::to_vec_pretty(&gen)?;
    crate::util::write_atomic(&dir.path().join(GENERATION_FILE), &json, 0o600)?;
    let saved = repo.backup_tree(dir.path(), &[], (&gen.id, META_TAG), run.host, None)?;
    Ok((gen, saved.added_bytes))
}

/// A generation's metadata read back from the repository.
pub struct Loaded {
    pub meta: MetaRef,
    pub generation: Generation,
    pub manifest: Manifest,
}

fn load_manifest(repo: &Repo, meta: &MetaRef) -> Result<Manifest> {
    let data = repo.read_meta(meta, MANIFEST_FILE)?;
    let tmp = tempfile::NamedTempFile::new().context("creating a temporary file")?;
    std::fs::write(tmp.path(), &data)
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    Manifest::load(tmp.path())
}

/// Reads generation `meta`: its record and manifest, the manifest checked
/// against the SHA-256 the record holds.
pub fn load(repo: &Repo, meta: &MetaRef) -> Result<Loaded> {
    let what = || format!("generation {} in {}", meta.generation, repo.spec());
    let g = repo.read_meta(meta, GENERATION_FILE).with_context(what)?;
    let generation: Generation = serde_json::from_slice(&g)
        .with_context(|| format!("{}: generation.json unreadable", what()))?;
    let data = repo.read_meta(meta, MANIFEST_FILE).with_context(what)?;
    if crate::backup::sha256_hex(&data) != generation.manifest_sha256 {
        bail!(
            "{}: its manifest does not match generation.json (damaged)",
            what()
        );
    }
    let manifest = load_manifest(repo, meta).with_context(what)?;
    Ok(Loaded {
        meta: meta.clone(),
        generation,
        manifest,
    })
}

/// Generation `id`, else the newest one.
pub fn pick(repo: &Repo, id: Option<&str>) -> Result<MetaRef> {
    let all = repo.generations()?;
    match id {
        Some(id) => all
            .into_iter()
            .find(|m| m.generation == id)
            .with_context(|| format!("no generation {id} in {}", repo.spec())),
        None => all
            .into_iter()
            .last()
            .with_context(|| format!("no lifeboat generations in {}", repo.spec())),
    }
}

/// Every generation's record, oldest first; unreadable ones as errors.
pub fn list(repo: &Repo) -> Result<Vec<(MetaRef, Result<Generation>)>> {
    let mut out = Vec::new();
    for m in repo.generations()? {
        let g = repo
            .read_meta(&m, GENERATION_FILE)
            .and_then(|d| Ok(serde_json::from_slice::<Generation>(&d)?));
        out.push((m, g));
    }
    Ok(out)
}

/// What `backup verify` asks of an engine.
pub struct EngineVerify {
    /// One generation [default: every one].
    pub generation: Option<String>,
    /// Read every data blob, restore into scratch and compare.
    pub deep: bool,
    pub scratch: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineVerifyReport {
    pub generations: Vec<String>,
    pub files_checked: u64,
    pub deep: bool,
    /// The first damage found, if any.
    pub problem: Option<String>,
}

/// The engine's own check, then every generation's manifest against the
/// snapshot listings (and with `deep`, a restore compared file by file).
pub fn verify(repo: &Repo, opts: &EngineVerify) -> Result<EngineVerifyReport> {
    let metas = match &opts.generation {
        Some(id) => vec![pick(repo, Some(id))?],
        None => repo.generations()?,
    };
    let mut rep = EngineVerifyReport {
        deep: opts.deep,
        ..EngineVerifyReport::default()
    };
    if let Err(e) = repo.check(opts.deep) {
        rep.problem = Some(format!("{} check failed: {e:#}", repo.engine.tool()));
        return Ok(rep);
    }
    for m in &metas {
        rep.generations.push(m.generation.clone());
        let res = load(repo, m).and_then(|l| {
            let mut n = 0;
            for fs in &l.manifest.filesystems {
                n += compare_listing(repo, fs)
                    .map_err(|e| anyhow::anyhow!("generation {}: {e}", m.generation))?;
            }
            if opts.deep {
                deep(repo, &l, opts.scratch.as_deref())?;
            }
            Ok(n)
        });
        match res {
            Ok(n) => rep.files_checked += n,
            Err(e) => {
                rep.problem = Some(format!("{e:#}"));
                break;
            }
        }
    }
    Ok(rep)
}

/// The snapshot of `fs` holds exactly the manifest's entries, each of the
/// same kind and (regular files) size. Returns the entries checked.
fn compare_listing(repo: &Repo, fs: &FsManifest) -> Result<u64> {
    let listed = repo.entries(&fs.archive)?;
    let mut want: HashMap<&[u8], &manifest::FileRecord> = fs
        .entries
        .iter()
        .filter(|r| r.path.0 != b".")
        .map(|r| (r.path.0.as_slice(), r))
        .collect();
    let n = want.len() as u64;
    for l in &listed {
        if l.path.is_empty() || l.path == b"." {
            continue;
        }
        let shown = String::from_utf8_lossy(&l.path);
        let Some(r) = want.remove(l.path.as_slice()) else {
            bail!(
                "{} holds {shown}, which the manifest does not list",
                fs.archive
            );
        };
        let size_differs = l.size.is_some() && r.link.is_none() && l.size != Some(r.size);
        if l.kind != r.kind || size_differs {
            bail!(
                "{} holds {shown} as another kind or size than the manifest",
                fs.archive
            );
        }
    }
    if let Some(first) = want.keys().min() {
        bail!(
            "{} lacks {}, which the manifest lists",
            fs.archive,
            String::from_utf8_lossy(first)
        );
    }
    Ok(n)
}

fn deep(repo: &Repo, l: &Loaded, scratch: Option<&Path>) -> Result<()> {
    let parent = scratch.map_or_else(|| PathBuf::from("/var/tmp"), Path::to_path_buf);
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-verify-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a scratch folder in {}", parent.display()))?;
    restore_loaded(repo, l, dir.path(), &[])
        .with_context(|| format!("generation {}: deep check", l.generation.id))?;
    Ok(())
}

/// What `backup restore` asks of an engine.
pub struct EngineRestore {
    pub generation: Option<String>,
    pub to: PathBuf,
    /// Only these paths (absolute, as on the backed-up system) and what is
    /// below them.
    pub paths: Vec<PathBuf>,
    /// Restore into folders that already hold files (with `paths`: replace
    /// them).
    pub overwrite: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineRestoreReport {
    pub generation: String,
    /// Files restored, each checked against the manifest.
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Restores a generation through the engine into `opts.to`, then checks
/// every file against the manifest.
pub fn restore(repo: &Repo, opts: &EngineRestore) -> Result<EngineRestoreReport> {
    let t0 = std::time::Instant::now();
    let meta = pick(repo, opts.generation.as_deref())?;
    let l = load(repo, &meta)?;
    let selected = crate::backup::restore::select(&l.manifest, &opts.paths, &l.generation.id)?;
    if !opts.paths.is_empty() {
        std::fs::create_dir_all(&opts.to)
            .with_context(|| format!("creating {}", opts.to.display()))?;
        crate::backup::restore::check_paths(&opts.to, &opts.paths, opts.overwrite)?;
    } else if !opts.overwrite {
        for fs in &l.manifest.filesystems {
            let t = under(&opts.to, fs.mountpoint.as_path());
            if holds_files(&t) {
                bail!(
                    "{} already holds files: restore into an empty tree, or give --overwrite",
                    t.display()
                );
            }
        }
    }
    restore_loaded(repo, &l, &opts.to, &opts.paths)?;
    let recs = selected.iter().flat_map(|(_, r)| r.iter());
    let files = recs.clone().count() as u64;
    let bytes = recs
        .filter(|r| r.kind == Kind::File && r.link.is_none())
        .map(|r| r.size)
        .sum();
    Ok(EngineRestoreReport {
        generation: l.generation.id.clone(),
        files,
        bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// `to/mountpoint`.
fn under(to: &Path, mp: &Path) -> PathBuf {
    to.join(mp.strip_prefix("/").unwrap_or(mp))
}

/// Whether anything but folders (and `lost+found`) is below `dir`.
fn holds_files(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    rd.flatten().any(|e| {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => e.file_name() != "lost+found" && holds_files(&p),
            _ => true,
        }
    })
}

/// Restores every file system of `l` below `to` (parents first), gives
/// each root the manifest's owner, mode and time, then compares the trees
/// with the manifest. With `paths`, only those paths (and what is below
/// them) of the file systems holding them, each compared with its part of
/// the manifest.
fn restore_loaded(repo: &Repo, l: &Loaded, to: &Path, paths: &[PathBuf]) -> Result<()> {
    let mut fss: Vec<(&FsManifest, Vec<Vec<u8>>)> = Vec::new();
    for fs in &l.manifest.filesystems {
        let rels: Vec<Vec<u8>> = paths
            .iter()
            .filter_map(|p| crate::backup::restore::rel_in_fs(p, &fs.mountpoint, &l.manifest))
            .collect();
        match (paths.is_empty(), rels.iter().any(|r| r == b".")) {
            (true, _) | (false, true) => fss.push((fs, Vec::new())),
            (false, false) if !rels.is_empty() => fss.push((fs, rels)),
            _ => {}
        }
    }
    fss.sort_by(|a, b| a.0.mountpoint.0.cmp(&b.0.mountpoint.0));
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let tree = crate::backup::beneath::Tree::open(to)?;
    for (fs, only) in &fss {
        restore_fs(repo, &tree, fs, only)?;
    }
    for (fs, only) in &fss {
        let dot = [b".".to_vec()];
        let parts = if only.is_empty() { &dot[..] } else { &only[..] };
        for rel in parts {
            compare_under(to, &l.manifest, fs, rel).map_err(|e| {
                crate::backup::restore::Damaged(format!(
                    "generation {}: restored {} differs from the manifest: {e}",
                    l.generation.id, fs.mountpoint
                ))
            })?;
        }
    }
    Ok(())
}

/// One file system (all of it, or the paths `only`) through the engine.
/// Its mount point is opened below the target through handles, never
/// through a symlink (an earlier file system's snapshot cannot send a
/// later one outside the target), and the engine is given that very
/// directory (`/proc/PID/fd/N`).
fn restore_fs(
    repo: &Repo,
    tree: &crate::backup::beneath::Tree,
    fs: &FsManifest,
    only: &[Vec<u8>],
) -> Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let rel = fs
        .mountpoint
        .0
        .strip_prefix(b"/")
        .unwrap_or(&fs.mountpoint.0);
    let sub = tree.subtree(rel, true).with_context(|| {
        format!(
            "restoring {} into {}",
            fs.mountpoint,
            tree.show(rel).display()
        )
    })?;
    let dir = sub.root();
    let target = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        dir.as_raw_fd()
    ));
    log::info!(
        "{}: restoring {} into {}",
        repo.spec(),
        fs.archive,
        tree.show(rel).display()
    );
    repo.restore_tree(&fs.archive, &target, only)?;
    if let Some(root) = fs.entries.iter().find(|r| r.path.0 == b".") {
        set_root_meta(dir.as_fd(), root).with_context(|| {
            format!(
                "setting owner, mode and time of {}",
                tree.show(rel).display()
            )
        })?;
    }
    Ok(())
}

fn set_root_meta(fd: std::os::fd::BorrowedFd, r: &manifest::FileRecord) -> std::io::Result<()> {
    fsio::set_fd_owner(fd, r.uid, r.gid)?;
    rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(r.mode))?;
    let (sec, nsec) = (
        r.mtime_ns.div_euclid(1_000_000_000),
        r.mtime_ns.rem_euclid(1_000_000_000) as u32,
    );
    fsio::set_fd_times(fd, sec, nsec)
}
