//! `backup restore`: a generation with its chain into a mounted tree (or
//! only some paths of it), and plain tar archives made by other tools.
//!
//! Each file is written once: the generation's manifest says which archive
//! of the chain holds it, so older archives give only what later ones did
//! not replace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::beneath::{Refused, Tree};
use super::compress::hash_file;
use super::extract::{normalize, Extractor, Policy};
use super::generation::{Generation, Store};
use super::manifest::{FileRecord, FsManifest, Kind, Manifest, PathBytes};
use super::progress::{self, Progress};
use super::scan::{check_entry, scan_archive, Scan};
use super::tar::{show, EntryKind, Header};

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
    /// Files owned by the restoring user, without set-id bits and file
    /// capabilities (for archives one does not trust).
    pub no_same_owner: bool,
    /// Device nodes skipped and counted (for archives one does not trust).
    pub no_devices: bool,
    pub progress: progress::Mode,
    /// Opens encrypted generations (`--identity`).
    pub ids: Option<std::sync::Arc<super::seal::Identities>>,
}

impl RestoreOptions {
    pub fn policy(&self) -> Policy {
        Policy {
            same_owner: !self.no_same_owner,
            devices: !self.no_devices,
        }
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub generation: String,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    /// Metadata the target did not take (not fatal).
    pub warnings: Vec<String>,
    /// Files lost to damage or found wrong, by path on the backed-up
    /// system; every other file was restored.
    pub lost: Vec<LostFile>,
    /// Every problem found (damaged frames, archive SHA-256...).
    pub damage: Vec<String>,
    /// Entries not written because they would leave the target (through a
    /// symlink, a hard link to outside...), the first ones by name.
    pub refused: Vec<String>,
    pub refused_count: u64,
    /// Device nodes not created (`--no-devices`).
    pub devices_skipped: u64,
}

impl RestoreReport {
    /// Takes the extractor's refusals, skipped devices and warnings.
    fn absorb(&mut self, ex: &mut Extractor) {
        self.files = self
            .files
            .saturating_sub(ex.refused_count + ex.devices_skipped);
        self.refused_count += ex.refused_count;
        self.refused.append(&mut ex.refused);
        self.devices_skipped += ex.devices_skipped;
        if ex.devices_skipped > 0 {
            self.warnings.push(format!(
                "{} device nodes skipped (--no-devices)",
                ex.devices_skipped
            ));
        }
        self.warnings.append(&mut ex.warnings);
    }

    /// An error naming the refused entries, if any.
    pub fn refusals(&self, to: &Path) -> Result<()> {
        let Some(first) = self.refused.first() else {
            return Ok(());
        };
        let more = match self.refused_count {
            1 => String::new(),
            n => format!(
                " (and {} more: {})",
                n - 1,
                self.refused[1..]
                    .iter()
                    .take(4)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        Err(Refused(format!(
            "restore incomplete: {} entries refused, not written into {}: {first}{more}",
            self.refused_count,
            to.display()
        ))
        .into())
    }
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
    store.need_open(&gen)?;
    let mpath = store.gen_dir(&gen.id).join(gen.manifest_file());
    let (sum, _) = hash_file(&mpath)
        .map_err(|e| Damaged(format!("generation {}: manifest missing: {e:#}", gen.id)))?;
    if sum != gen.manifest_sha256 && gen.encryption.is_some() {
        return Err(Damaged(format!(
            "tampered: manifest of generation {}: {} differs from the SHA-256 sealed in generation.json.age",
            gen.id,
            gen.manifest_file()
        ))
        .into());
    }
    if sum != gen.manifest_sha256 {
        return Err(Damaged(format!(
            "generation {}: manifest {} does not match generation.json (damaged or replaced)",
            gen.id,
            gen.manifest_file()
        ))
        .into());
    }
    let manifest = store
        .load_manifest(&gen)
        .map_err(|e| Damaged(format!("generation {}: {e:#}", gen.id)))?;
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
            let (psum, _) = hash_file(&store.gen_dir(&prev.id).join(prev.manifest_file()))
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

/// Restores a generation (with its chain) into `opts.to`, everything the
/// damage spared; the report names what it did not.
pub fn restore_report(opts: &RestoreOptions) -> Result<RestoreReport> {
    let store = Store::with_identities(&opts.from, opts.ids.clone());
    let (gen, manifest, chain) = load_chain(&store, opts.generation.as_deref())?;
    let started = std::time::Instant::now();
    let selected = select(&manifest, &opts.paths, &gen.id)?;
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
    for (fi, recs) in &selected {
        let fs = &manifest.filesystems[*fi];
        let mp = normalize(&fs.mountpoint.0)?;
        let mut ex = Extractor::new(&opts.to, &mp, opts.policy())?;
        for g in &chain {
            let wanted: Wanted = recs
                .iter()
                .filter(|r| r.gen == g.id)
                .map(|r| (r.path.0.clone(), *r))
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let mut job = ArchiveJob {
                fs,
                gen: g,
                wanted,
                lost: Vec::new(),
            };
            job.run(&store, &mut ex, &mut progress, &mut report)?;
            report.lost.append(&mut job.lost);
        }
        ex.finish()?;
        report.absorb(&mut ex);
        // Restored means on disk: recovery may power off right after.
        ex.sync()?;
    }
    progress.done();
    report.lost.sort_by(|a, b| a.path.cmp(&b.path));
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Restores a generation (with its chain) into `opts.to`; damage is an
/// error ([`Damaged`]) naming the lost files, after everything else was
/// restored.
pub fn restore(opts: &RestoreOptions) -> Result<RestoreReport> {
    let report = restore_report(opts)?;
    if let Some(why) = report.damage_summary() {
        return Err(Damaged(format!("restore incomplete: {why}")).into());
    }
    report.refusals(&opts.to)?;
    Ok(report)
}

/// A file the restore lost to damage, or wrote but found wrong.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LostFile {
    /// As on the backed-up system.
    pub path: String,
    pub generation: String,
    pub archive: String,
    pub why: String,
}

impl RestoreReport {
    /// One line on what went wrong, when anything did.
    pub fn damage_summary(&self) -> Option<String> {
        let first = self.damage.first()?;
        let lost = match self.lost.len() {
            0 => String::new(),
            n => format!(
                "; {n} file(s) lost: {}",
                self.lost
                    .iter()
                    .take(10)
                    .map(|l| l.path.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Some(format!("{first}{lost}"))
    }
}

/// The path of `rel` in the file system mounted at `mp`, as on the
/// backed-up system.
pub fn system_path(mp: &PathBytes, rel: &[u8]) -> String {
    let mut p = mp.0.clone();
    if rel != b"." {
        if p.last() != Some(&b'/') {
            p.push(b'/');
        }
        p.extend_from_slice(rel);
    }
    show(&p)
}

/// The records of one file system that one archive of the chain holds,
/// and what became of them.
struct ArchiveJob<'a> {
    fs: &'a FsManifest,
    gen: &'a Generation,
    /// Not restored yet: tar path (normalized) → record.
    wanted: Wanted<'a>,
    lost: Vec<LostFile>,
}

impl<'a> ArchiveJob<'a> {
    fn lose(&mut self, rel: &[u8], why: &str) {
        let archive = self
            .gen
            .archives
            .iter()
            .find(|a| a.mountpoint == self.fs.mountpoint)
            .map(|a| a.file.clone())
            .unwrap_or_default();
        self.lost.push(LostFile {
            path: system_path(&self.fs.mountpoint, rel),
            generation: self.gen.id.clone(),
            archive,
            why: why.to_string(),
        });
    }

    fn run(
        &mut self,
        store: &Store,
        ex: &mut Extractor,
        progress: &mut Progress,
        report: &mut RestoreReport,
    ) -> Result<()> {
        let Some(info) = self
            .gen
            .archives
            .iter()
            .find(|a| a.mountpoint == self.fs.mountpoint)
        else {
            report.damage.push(format!(
                "generation {}: no archive for {} (manifest does not match)",
                self.gen.id, self.fs.mountpoint
            ));
            for rel in self.wanted.keys().cloned().collect::<Vec<_>>() {
                self.lose(&rel, "its archive is missing");
            }
            return Ok(());
        };
        let path = store.gen_dir(&self.gen.id).join(&info.file);
        let where_ = format!("generation {}: archive {}", self.gen.id, info.file);
        let ids = store.ids_for(self.gen);
        let mut scan = self.extract(&path, ids, ex, progress, report)?;
        scan.check_stored(&info.sha256, info.bytes);
        report
            .damage
            .extend(scan.damage_all().map(|d| format!("{where_}: {d}")));
        let mut rest: Vec<Vec<u8>> = self.wanted.keys().cloned().collect();
        rest.sort();
        for rel in rest {
            self.lose(&rel, "not found in the archive (lost to damage)");
        }
        if !self.lost.is_empty() && report.damage.is_empty() {
            report.damage.push(format!("{where_}: files damaged"));
        }
        Ok(())
    }
}

/// What to take from one archive: tar path (normalized) → record.
type Wanted<'a> = HashMap<Vec<u8>, &'a FileRecord>;

/// The path of `p` relative to the file system mounted at `mp`, when `mp`
/// is the deepest mount point above it.
pub(crate) fn rel_in_fs(p: &Path, mp: &PathBytes, manifest: &Manifest) -> Option<Vec<u8>> {
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

/// The records to restore, per file system (its index in the manifest):
/// every one, or with `paths` (absolute, as on the backed-up system) those
/// paths and what is below them; a path no file system holds is an error.
pub(crate) fn select<'m>(
    manifest: &'m Manifest,
    paths: &[PathBuf],
    generation: &str,
) -> Result<Vec<(usize, Vec<&'m FileRecord>)>> {
    let mut selected: Vec<(usize, Vec<&FileRecord>)> = Vec::new();
    let mut unmatched: Vec<&PathBuf> = paths.iter().collect();
    for (fi, fs) in manifest.filesystems.iter().enumerate() {
        let recs: Vec<&FileRecord> = if paths.is_empty() {
            fs.entries.iter().collect()
        } else {
            let mut out = Vec::new();
            for p in paths {
                let Some(rel) = rel_in_fs(p, &fs.mountpoint, manifest) else {
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
        bail!("{} is not in generation {generation}", p.display());
    }
    Ok(selected)
}

/// Refuses to write over existing files unless told to.
fn check_target(
    opts: &RestoreOptions,
    manifest: &Manifest,
    selected: &[(usize, Vec<&FileRecord>)],
) -> Result<()> {
    if !opts.paths.is_empty() {
        return check_paths(&opts.to, &opts.paths, opts.overwrite);
    }
    if opts.overwrite {
        return Ok(());
    }
    if !opts.to.is_dir() {
        bail!(
            "restore target {} is not a directory (mount the file systems there first)",
            opts.to.display()
        );
    }
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
    Ok(())
}

/// For a `--path` restore: the parents of each path in the target must be
/// directories (a symlink there is not followed: the path is refused), the
/// path itself absent unless `--overwrite` (which replaces a symlink there,
/// never following it).
pub(crate) fn check_paths(to: &Path, paths: &[PathBuf], overwrite: bool) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let tree = Tree::open(to)?;
    for p in paths {
        let rel = normalize(p.as_os_str().as_bytes())?;
        if rel == b"." {
            continue;
        }
        let dest = tree.show(&rel);
        let st = tree.lstat(&rel).map_err(|e| match e.downcast::<Refused>() {
            Ok(r) => anyhow::anyhow!(
                "refusing {}: {r} in the target; restore into another folder or make it a real directory",
                dest.display()
            ),
            Err(e) => e,
        })?;
        if let (Some(st), false) = (st, overwrite) {
            let link = rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink();
            bail!(
                "{} exists{}; pass --overwrite to replace it",
                dest.display(),
                if link {
                    " (a symlink, not followed)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

impl<'a> ArchiveJob<'a> {
    /// Extracts from the archive the entries in `wanted` (removing them as
    /// they are done), checking each against its record and its content
    /// against its SHA-256; a damaged or mismatching file is lost, the rest
    /// of the archive is read on.
    fn extract(
        &mut self,
        path: &Path,
        ids: Option<&std::sync::Arc<super::seal::Identities>>,
        ex: &mut Extractor,
        progress: &mut Progress,
        report: &mut RestoreReport,
    ) -> Result<Scan> {
        // Hard-link leaders that were not asked for, but whose links were:
        // leader path → (its own record, the link that gets its content).
        let mut leader_for: HashMap<Vec<u8>, (&FileRecord, &FileRecord)> = HashMap::new();
        for r in self.wanted.values() {
            if let Some(l) = &r.link {
                if !self.wanted.contains_key(&l.0) && !leader_for.contains_key(&l.0) {
                    if let Some(own) = self.fs.entries.iter().find(|e| e.path == *l) {
                        leader_for.insert(l.0.clone(), (own, *r));
                    }
                }
            }
        }
        // Content hashes come back from the hashing thread by token.
        let mut expected: HashMap<u64, (Vec<u8>, String)> = HashMap::new();
        let mut bad: Vec<(Vec<u8>, String)> = Vec::new();
        let mut dest_of: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut done: std::collections::HashSet<Vec<u8>> = Default::default();
        let mut sums: HashMap<u64, String> = HashMap::new();
        let wanted = &mut self.wanted;
        let scan = scan_archive(path, ids, |tar, h, rel| {
            let (rec, dest_rel) = match wanted.remove(rel) {
                Some(r) => (r, rel.to_vec()),
                None => match leader_for.get(rel) {
                    // The leader's content goes to the first link asked for.
                    Some((own, member)) if h.kind == EntryKind::File => {
                        wanted.remove(&member.path.0);
                        dest_of.insert(rel.to_vec(), member.path.0.clone());
                        (*own, member.path.0.clone())
                    }
                    _ => return Ok(()),
                },
            };
            if let Err(why) = check_entry(h, rec) {
                bad.push((dest_rel, why));
                return Ok(());
            }
            let token = match ex.extract(tar, h, &dest_rel) {
                Ok(t) => t,
                Err(_) if h.kind == EntryKind::HardLink && !linked_to_done(h, &done) => {
                    bad.push((dest_rel, "the file it is a hard link to was lost".into()));
                    return Ok(());
                }
                Err(e) => {
                    if tar.get_ref().pending_damage().is_some() {
                        // The hashing thread holds part of this file:
                        // collect what is done and start it afresh.
                        sums.extend(ex.take_hashes()?);
                    }
                    return Err(e);
                }
            };
            done.insert(rel.to_vec());
            if dest_rel != rel && h.kind == EntryKind::File {
                ex.alias_leader(rel, &dest_rel);
            }
            if let (Some(t), Some(want)) = (token, &rec.sha256) {
                expected.insert(t, (dest_rel, want.clone()));
            }
            report.files += 1;
            let bytes = if h.kind == EntryKind::File { h.size } else { 0 };
            report.bytes += bytes;
            progress.add(bytes, 1);
            Ok(())
        });
        // Written files are hashed whatever the scan said; a failed write
        // (full or read-only target) stops the restore.
        sums.extend(ex.take_hashes()?);
        let scan = scan?;
        for (t, (rel, want)) in expected {
            if sums.get(&t).is_some_and(|got| *got != want) {
                bad.push((rel, "content does not match its SHA-256 (damaged)".into()));
            }
        }
        for rel in &scan.hit {
            let dest = dest_of.get(rel).unwrap_or(rel);
            bad.push((dest.clone(), "in a damaged part of the archive".into()));
        }
        bad.sort();
        for (rel, why) in bad {
            self.lose(&rel, &why);
        }
        Ok(scan)
    }
}

/// Whether the hard link's target was extracted from this archive.
fn linked_to_done(h: &Header, done: &std::collections::HashSet<Vec<u8>>) -> bool {
    normalize(&h.link).is_ok_and(|l| done.contains(&l))
}

/// Restores a plain tar archive (GNU tar, bsdtar, ReaR's backup.tar.gz)
/// into `to`: every entry, no manifest to check against.
pub fn restore_plain(
    archive: &Path,
    to: &Path,
    overwrite: bool,
    policy: Policy,
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
    let mut ex = Extractor::new(to, b".", policy)?;
    let mut report = RestoreReport {
        generation: archive.display().to_string(),
        ..RestoreReport::default()
    };
    let scan = scan_archive(archive, None, |tar, h, rel| {
        ex.extract(tar, h, rel)
            .with_context(|| format!("archive {}: file {}", archive.display(), show(rel)))?;
        report.files += 1;
        let bytes = if h.kind == EntryKind::File { h.size } else { 0 };
        report.bytes += bytes;
        progress.add(bytes, 1);
        Ok(())
    })?;
    // A name that would leave the target is a hostile entry, not damage.
    for (path, why) in &scan.bad_names {
        ex.refuse(path, why);
    }
    report.damage = scan.damage;
    report.lost = scan
        .hit
        .iter()
        .map(|rel| LostFile {
            path: show(rel),
            generation: String::new(),
            archive: archive.display().to_string(),
            why: "in a damaged part of the archive".into(),
        })
        .collect();
    ex.finish()?;
    progress.done();
    report.absorb(&mut ex);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
