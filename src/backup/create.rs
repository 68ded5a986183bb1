//! `backup create`: walk each tree, archive what changed, write the
//! manifest and commit the generation.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::compress::{Compression, Encoder, HashWriter};
use super::fsio;
use super::generation::{
    ArchiveInfo, GenKind, Generation, Outcome, Partial, Store, Warnings, FORMAT, LAYOUT_FILE,
    MANIFEST_FILE,
};
use super::manifest::{self, FileRecord, FsManifest, Kind, Manifest, PathBytes};
use super::progress::{self, Progress};
use super::retention::Policy;
use super::seal::{Encryption, Output, Recipients, SUFFIX};
use super::tar::{EntryKind, Header, SparseMap, TarWriter};
use super::walk::{self, Excludes, WalkEntry};
use crate::layout::Layout;

/// File system types that hold files worth archiving; everything else
/// (proc, sysfs, tmpfs, cgroup, network file systems...) is left out.
pub const DISK_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "msdos", "exfat", "f2fs", "jfs", "reiserfs",
    "ntfs", "ntfs3", "hfsplus", "nilfs2",
];

/// Directories whose contents a Layout backup leaves out.
pub const CONTENTS_EXCLUDED: &[&str] = &["/tmp", "/run", "/var/tmp"];

/// Leaves out the folders lifeboat itself writes (the rescue image
/// folder, `rescue.output`), by device and inode as the backup folder is:
/// a rebuilt image would make every incremental store it again. A folder
/// that does not exist yet has nothing to leave out.
pub fn exclude_own_output(excludes: &mut Excludes, dirs: &[&Path]) {
    for d in dirs {
        if let Ok(m) = std::fs::metadata(d) {
            if m.is_dir() {
                excludes.dirs.insert((m.dev(), m.ino()));
            }
        }
    }
}

/// A tree to archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Where the tree is read now.
    pub path: PathBuf,
    /// Where it is mounted in the backed-up system (recorded in the
    /// manifest, and where restore puts it): `path` itself, unless the
    /// system is mounted under another root.
    pub mountpoint: PathBuf,
    pub fstype: Option<String>,
    pub device: Option<String>,
}

/// The mounted disk file systems of a Layout, one per mount (bind mounts of
/// the same tree once), ordered by mount point. With `root`, the system is
/// mounted below that folder (a layout saved with `layout save --root`).
pub fn sources_from_layout(layout: &Layout, root: Option<&Path>) -> Vec<Source> {
    let at = |mp: &str| match root {
        Some(r) => r.join(mp.trim_start_matches('/')),
        None => PathBuf::from(mp),
    };
    let mut out: Vec<Source> = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    // Mounts on disks the layout leaves out (a job disk, a backup disk,
    // --exclude-disk) are not part of the system.
    let on_needed_disk = |dev: &str| {
        let disks = layout.disks_under(dev);
        disks.is_empty() || disks.iter().any(|d| d.needed)
    };
    for m in &layout.mounts {
        if !DISK_FS.contains(&m.fstype.as_str()) || !on_needed_disk(&m.source) {
            continue;
        }
        let key = (m.source.clone(), m.root.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        out.push(Source {
            path: at(&m.mountpoint),
            mountpoint: PathBuf::from(&m.mountpoint),
            fstype: Some(m.fstype.to_string()),
            device: Some(m.source.clone()),
        });
    }
    if out.is_empty() {
        for f in &layout.filesystems {
            if !DISK_FS.contains(&f.fstype.as_str()) || !on_needed_disk(&f.device) {
                continue;
            }
            if let Some(mp) = f.mountpoints.first() {
                out.push(Source {
                    path: at(mp),
                    mountpoint: PathBuf::from(mp),
                    fstype: Some(f.fstype.to_string()),
                    device: Some(f.device.clone()),
                });
            }
        }
    }
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    out
}

/// The archive file name of a tree: `root`, `home`, `boot-efi`...
pub fn archive_stem(mountpoint: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = mountpoint.as_os_str().as_bytes();
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == b'/').collect();
    if trimmed.iter().all(|&b| b == b'/') {
        return "root".into();
    }
    let mut s = String::new();
    for &b in trimmed.iter() {
        let c = b as char;
        s.push(if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            c
        } else {
            '-'
        });
    }
    s.trim_end_matches('-').to_string()
}

pub struct CreateOptions {
    pub dest: PathBuf,
    pub sources: Vec<Source>,
    /// Layout file stored with the generation.
    pub layout_file: Option<PathBuf>,
    pub incremental: bool,
    /// Store what changed since the newest full (wins over `incremental`).
    pub differential: bool,
    pub compression: Compression,
    pub level: Option<i32>,
    /// zstd worker threads.
    pub threads: u32,
    pub excludes: Excludes,
    pub keep: Option<usize>,
    /// Calendar retention applied after the backup, with `keep` as its
    /// `chains` rule (`--keep-daily N`...).
    pub retention: Policy,
    /// When an incremental chain ends and a full starts.
    pub full_every: FullEvery,
    /// Commands run before and after (`[hooks]`).
    pub hooks: super::hooks::Hooks,
    /// Read each tree from an LVM or btrfs snapshot (`--snapshot`).
    pub snapshot: bool,
    pub progress: progress::Mode,
    /// Encrypt the generation to these recipients (`--encrypt-to`).
    pub encrypt_to: Option<Recipients>,
}

/// A new full every this many generations by default (`backup.full_every`).
pub const FULL_EVERY: u64 = 7;

/// When an incremental chain ends (`backup.full_every`,
/// `backup.full_every_age`): the next backup is a full once the chain holds
/// `count` generations (0: never by count) or its full is `age` seconds old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullEvery {
    pub count: u64,
    pub age: Option<i64>,
}

impl Default for FullEvery {
    fn default() -> FullEvery {
        FullEvery {
            count: FULL_EVERY,
            age: None,
        }
    }
}

pub struct CreateReport {
    pub generation: Generation,
    pub removed: Vec<String>,
    /// Why a requested incremental became a full backup.
    pub note: Option<String>,
    /// The first attempt found the backup folder full: old generations were
    /// removed (`--keep`) and the backup tried once more.
    pub retried: Option<String>,
}

/// The backup folder ran out of space.
#[derive(Debug, thiserror::Error)]
#[error("backup folder {0} is full (no space left on device); the incomplete generation was removed and the earlier generations are intact")]
pub struct DestinationFull(pub String);

/// Writes one generation into `opts.dest`, then applies `--keep`. When
/// the folder is full, `--keep` runs first and the backup is tried once
/// more (only when that removed something).
pub fn create(opts: &CreateOptions) -> Result<CreateReport> {
    if opts.sources.is_empty() {
        bail!("nothing to back up: no file systems given");
    }
    let store = Store::new(&opts.dest);
    let _lock = store.lock()?;
    // Damage is always reported, even where this backup does not need the
    // damaged generation (verify and check name it too).
    for b in store.scan()?.bad {
        log::warn!("generation {} is damaged: {}", b.id, b.error);
    }
    opts.hooks.around(
        &opts.dest,
        || backup_and_prune(&store, opts),
        |r| super::hooks::Outcome {
            result: match r.generation.result {
                Outcome::Ok => "ok",
                Outcome::Partial => "partial",
            },
            generation: Some(r.generation.id.clone()),
            error: None,
        },
    )
}

/// The backup (from snapshots with `--snapshot`), then retention (the lock
/// held).
fn backup_and_prune(store: &Store, opts: &CreateOptions) -> Result<CreateReport> {
    let snaps = match opts.snapshot {
        true => Some(super::snapshot::Snapshots::take(&opts.sources)?),
        false => None,
    };
    let sources = snaps.as_ref().map_or(&opts.sources[..], |s| s.sources());
    // The backup folder is left out, by device and inode (from snapshots
    // too).
    let mut excludes = opts.excludes.clone();
    let dest_meta = std::fs::metadata(&opts.dest)
        .with_context(|| format!("reading {}", opts.dest.display()))?;
    excludes.dirs.insert((dest_meta.dev(), dest_meta.ino()));
    if let Some(s) = &snaps {
        s.translate(&mut excludes)?;
    }
    let policy = Policy {
        chains: opts.keep,
        ..opts.retention
    };
    let mut report = match write_generation(store, opts, sources, &excludes) {
        Err(e) if e.is::<DestinationFull>() && !policy.is_empty() => {
            let rules = policy.describe();
            let removed = store.prune(&policy)?;
            if removed.is_empty() {
                return Err(e.context(format!(
                    "{rules} has nothing to remove: free space in the backup folder"
                )));
            }
            let full = e.downcast_ref::<DestinationFull>().map(|d| d.to_string());
            let why = format!(
                "{}: removed {} old generation(s) ({rules}) and tried once more",
                full.unwrap_or_default(),
                removed.len()
            );
            log::warn!("{why}");
            let mut r = write_generation(store, opts, sources, &excludes)
                .with_context(|| format!("after removing old generations: {why}"))?;
            r.removed = removed;
            r.retried = Some(why);
            r
        }
        res => res?,
    };
    if !policy.is_empty() {
        report.removed.extend(store.prune(&policy)?);
    }
    if let Some(s) = snaps {
        s.remove()?;
    }
    Ok(report)
}

/// The generation an incremental builds on, with its manifest.
type Previous = Option<(Generation, Manifest)>;

/// The generation an incremental or differential builds on; none (and
/// why) when the backup is to be a full.
fn pick_previous(
    store: &Store,
    opts: &CreateOptions,
    now: i64,
) -> Result<(Previous, Option<String>)> {
    if !opts.incremental && !opts.differential {
        return Ok((None, None));
    }
    let listing = store.scan()?;
    let Some(newest) = listing.good.last().cloned() else {
        return Ok((
            None,
            Some("no previous generation: writing a full backup".into()),
        ));
    };
    let base = if opts.differential {
        match listing.good.iter().rev().find(|g| g.kind == GenKind::Full) {
            Some(f) => f.clone(),
            None => {
                let why = "no full generation to build a differential on: writing a full backup";
                return Ok((None, Some(why.into())));
            }
        }
    } else {
        newest.clone()
    };
    // An incremental needs everything newer than its chain's full intact;
    // a differential only its full.
    if let Some(b) = listing
        .bad
        .iter()
        .find(|b| base.chain.contains(&b.id) || (!opts.differential && b.id > base.id))
    {
        let why = format!(
            "generation {} is damaged ({}): writing a full backup",
            b.id, b.error
        );
        return Ok((None, Some(why)));
    }
    if let Some(why) = chain_ends(store, &base, opts.full_every, now) {
        return Ok((None, Some(format!("{why}: writing a full backup"))));
    }
    if let Some(why) = encryption_differs(&base, opts.encrypt_to.as_ref()) {
        return Ok((None, Some(format!("{why}: writing a full backup"))));
    }
    let what = if opts.differential {
        "a differential"
    } else {
        "an incremental"
    };
    let path = store.gen_dir(&base.id).join(base.manifest_file());
    let m = store
        .load_manifest(&base)
        .with_context(|| format!("cannot build {what} on generation {}", base.id))?;
    let actual = super::compress::hash_file(&path)?.0;
    if actual != base.manifest_sha256 {
        bail!(
            "cannot build {what} on generation {}: its manifest does not match generation.json (damaged); run a full backup",
            base.id
        );
    }
    Ok((Some((base, m)), None))
}

/// Why an incremental cannot follow `g` as asked: a chain is encrypted to
/// one set of recipients or not at all, and the server cannot read back
/// an encrypted manifest.
fn encryption_differs(g: &Generation, to: Option<&Recipients>) -> Option<String> {
    let theirs = g.encryption.as_ref().map(|e| &e.recipients);
    match (theirs, to) {
        (None, None) => None,
        (Some(a), Some(b)) if *a == b.fingerprints => Some(format!(
            "generation {} is encrypted and this server holds no identity to read its manifest",
            g.id
        )),
        _ => Some(format!(
            "generation {} is encrypted to other recipients than this backup",
            g.id
        )),
    }
}

/// Why the chain of `newest` ends here (`backup.full_every`), if it does.
pub fn chain_ends(
    store: &Store,
    newest: &Generation,
    every: FullEvery,
    now: i64,
) -> Option<String> {
    let len = newest.chain.len() as u64;
    if every.count > 0 && len >= every.count {
        return Some(format!(
            "the chain of generation {} holds {len} generations (backup.full_every = {})",
            newest.id, every.count
        ));
    }
    let age = every.age?;
    let full = store.load(newest.chain.first()?).ok()?;
    let started = i64::try_from(full.started_ns / 1_000_000_000).ok()?;
    (now.saturating_sub(started) >= age).then(|| {
        format!(
            "full generation {} is older than backup.full_every_age = {}",
            full.id,
            crate::config::fmt_duration(age)
        )
    })
}

/// Writes one generation (the lock held): walk every tree, one archive
/// per tree, then the manifest, the layout and generation.json.
fn write_generation(
    store: &Store,
    opts: &CreateOptions,
    sources: &[Source],
    excludes: &Excludes,
) -> Result<CreateReport> {
    let started = std::time::SystemTime::now();
    let started_ns = started
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    let epoch = (started_ns / 1_000_000_000) as i64;
    let id = store.new_id(epoch);
    let (previous, note) = pick_previous(store, opts, epoch)?;
    let partial = store.begin(&id)?;
    let mut run = ArchiveRun::new(opts, &partial, previous.as_ref().map(|(_, m)| m));
    // Walk everything first: totals for the progress line, and the
    // incremental decisions need whole hard-link groups.
    let walked = walk_sources(sources, &id, excludes, &mut run.warnings)?;
    let mut manifest = Manifest {
        format: manifest::FORMAT,
        generation: id.clone(),
        filesystems: Vec::new(),
    };
    for (src, entries) in walked {
        let fs = run.archive_tree(src, entries)?;
        manifest.filesystems.push(fs);
    }
    run.progress.done();
    let manifest_sha256 = write_metadata(&partial, opts, &manifest)?;
    let gen = Generation {
        manifest_sha256,
        duration_seconds: started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0),
        ..new_generation(
            opts,
            &id,
            previous.as_ref().map(|(g, _)| g),
            epoch,
            started_ns,
            &manifest,
            run,
        )
    };
    partial
        .commit(&gen, opts.encrypt_to.as_ref())
        .map_err(|e| destination_error(e, &opts.dest))?;
    Ok(CreateReport {
        generation: gen,
        removed: Vec::new(),
        note,
        retried: None,
    })
}

/// Every tree's entries, with what the walk could not read counted.
fn walk_sources<'a>(
    sources: &'a [Source],
    id: &str,
    excludes: &Excludes,
    warnings: &mut Warnings,
) -> Result<Vec<(&'a Source, Vec<WalkEntry>)>> {
    let mut walked = Vec::new();
    for src in sources {
        let (entries, stats) = walk::walk(&src.path, id, excludes)
            .with_context(|| format!("reading {}", src.path.display()))?;
        warnings.sockets += stats.sockets;
        warnings.vanished += stats.vanished;
        warnings.unreadable += stats.unreadable.len() as u64;
        for u in stats.unreadable.iter().take(5) {
            warnings.examples.push(format!("unreadable: {u}"));
        }
        walked.push((src, entries));
    }
    Ok(walked)
}

/// One archive being written: tar over compression over (sealing over)
/// the hashed file.
type ArchiveWriter = TarWriter<Encoder<Output<HashWriter<File>>>>;

/// The archives of one generation as they are written, and their totals.
struct ArchiveRun<'a> {
    opts: &'a CreateOptions,
    partial: &'a Partial,
    /// The manifest an incremental or differential builds on.
    previous: Option<&'a Manifest>,
    warnings: Warnings,
    progress: Progress,
    archives: Vec<ArchiveInfo>,
    stored_files: u64,
    stored_bytes: u64,
}

impl<'a> ArchiveRun<'a> {
    fn new(opts: &'a CreateOptions, partial: &'a Partial, previous: Option<&'a Manifest>) -> Self {
        ArchiveRun {
            opts,
            partial,
            previous,
            warnings: Warnings::default(),
            progress: Progress::new("backup", opts.progress),
            archives: Vec::new(),
            stored_files: 0,
            stored_bytes: 0,
        }
    }

    /// Archives one tree: the entries the previous manifest does not
    /// already hold; returns the tree's manifest.
    fn archive_tree(&mut self, src: &Source, mut entries: Vec<WalkEntry>) -> Result<FsManifest> {
        use std::os::unix::ffi::OsStrExt;
        let mp = PathBytes(src.mountpoint.as_os_str().as_bytes().to_vec());
        let archive_name = self.archive_name(&src.mountpoint);
        let prev_fs = self.previous.and_then(|m| m.filesystem(&mp.0));
        let recs: Vec<FileRecord> = entries.iter().map(|e| e.rec.clone()).collect();
        let nlinks: Vec<u64> = entries.iter().map(|e| e.nlink).collect();
        let (reuse, deleted) = match prev_fs {
            Some(p) => manifest::match_previous(&recs, &nlinks, p),
            None => (vec![None; recs.len()], Vec::new()),
        };
        drop(recs);
        let to_store: u64 = entries
            .iter()
            .zip(&reuse)
            .filter(|(e, r)| r.is_none() && e.rec.kind == Kind::File && e.rec.link.is_none())
            .map(|(e, _)| e.rec.size)
            .sum();
        self.progress.expect(to_store, entries.len() as u64);
        let path = self.partial.tmp.join(&archive_name);
        let mut tar = self.open_archive(&archive_name, &path)?;
        let (records, count) = self.store_entries(&mut tar, src, &mut entries, &reuse, prev_fs)?;
        self.stored_files += count;
        let (sha256, bytes) = finish_archive(tar)
            .map_err(|e| destination_error(e.into(), &self.opts.dest))
            .with_context(|| format!("writing {}", path.display()))?;
        self.archives.push(ArchiveInfo {
            mountpoint: mp.clone(),
            file: archive_name.clone(),
            bytes,
            sha256,
            entries: count,
        });
        let (data_bytes, allocated_bytes) = tree_totals(&entries);
        Ok(FsManifest {
            mountpoint: mp,
            archive: archive_name,
            fstype: src.fstype.clone(),
            device: src.device.clone(),
            used_bytes: fsio::fs_used_bytes(&src.path).unwrap_or(0),
            data_bytes,
            allocated_bytes,
            file_count: records.len() as u64,
            entries: records,
            deleted,
        })
    }

    /// The archive's file name: from the mount point, unique in the
    /// generation; numbered only when encrypted (mount points stay in the
    /// encrypted manifest only).
    fn archive_name(&self, mountpoint: &Path) -> String {
        let ext = self.opts.compression.extension();
        let n = self.archives.len();
        if self.opts.encrypt_to.is_some() {
            return format!("fs{n}.{ext}{SUFFIX}");
        }
        let stem = archive_stem(mountpoint);
        let taken = self.archives.iter().any(|a| {
            a.file
                .strip_suffix(&format!(".{ext}"))
                .is_some_and(|s| s == stem)
        });
        match taken {
            true => format!("{stem}-{n}.{ext}"),
            false => format!("{stem}.{ext}"),
        }
    }

    fn open_archive(&self, name: &str, path: &Path) -> Result<ArchiveWriter> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.partial.path(name))
            .with_context(|| format!("creating {}", path.display()))?;
        let out = match &self.opts.encrypt_to {
            Some(r) => r.writer(HashWriter::new(file))?,
            None => Output::Plain(HashWriter::new(file)),
        };
        let o = self.opts;
        let enc = Encoder::new(o.compression, out, o.level, o.threads)?;
        Ok(TarWriter::new(enc))
    }

    /// Stores the entries not reused from `prev_fs`; returns every entry's
    /// record (reused ones from the previous manifest) and how many were
    /// stored.
    fn store_entries(
        &mut self,
        tar: &mut ArchiveWriter,
        src: &Source,
        entries: &mut [WalkEntry],
        reuse: &[Option<usize>],
        prev_fs: Option<&FsManifest>,
    ) -> Result<(Vec<FileRecord>, u64)> {
        let mut ctx = ArchiveCtx::new(&src.path);
        let mut records = Vec::with_capacity(entries.len());
        let mut count = 0u64;
        for (e, r) in entries.iter_mut().zip(reuse) {
            if let Some(i) = r {
                records.push(prev_fs.expect("reuse implies previous").entries[*i].clone());
                self.progress.add(0, 1);
                continue;
            }
            let stored = ctx
                .archive(tar, e, &mut self.progress)
                .and_then(|s| Ok(tar.get_mut().entry_boundary().map(|()| s)?))
                .map_err(|err| destination_error(err, &self.opts.dest))?;
            match stored {
                Stored::Yes => {
                    count += 1;
                    if e.rec.kind == Kind::File && e.rec.link.is_none() {
                        self.stored_bytes += e.rec.size;
                    }
                    records.push(e.rec.clone());
                }
                Stored::Vanished => self.warnings.vanished += 1,
                Stored::Unreadable(why) => {
                    self.warnings.unreadable += 1;
                    self.example(format!("unreadable: {why}"));
                }
            }
        }
        self.warnings.changed += ctx.changed;
        for c in ctx.changed_examples.drain(..) {
            self.example(format!("changed while read: {c}"));
        }
        Ok((records, count))
    }

    /// Keeps a warning's example, up to 20.
    fn example(&mut self, text: String) {
        if self.warnings.examples.len() < 20 {
            self.warnings.examples.push(text);
        }
    }
}

/// Ends the archive on disk: its SHA-256 and size as stored.
fn finish_archive(tar: ArchiveWriter) -> io::Result<(String, u64)> {
    let enc = tar.finish()?;
    let (file, sum, bytes) = enc.finish()?.finish()?.finish();
    file.sync_all()?;
    Ok((sum, bytes))
}

/// Content bytes and allocated bytes of the tree's regular files at this
/// moment (hard links counted once).
fn tree_totals(entries: &[WalkEntry]) -> (u64, u64) {
    entries
        .iter()
        .filter(|e| e.rec.kind == Kind::File && e.rec.link.is_none())
        .fold((0, 0), |(d, a), e| (d + e.rec.size, a + e.blocks * 512))
}

/// Writes the manifest and the layout (sealed when encrypting); returns the
/// manifest's SHA-256.
fn write_metadata(partial: &Partial, opts: &CreateOptions, manifest: &Manifest) -> Result<String> {
    let seal = opts.encrypt_to.as_ref();
    let sealed = |name: &str| match seal {
        Some(_) => format!("{name}{SUFFIX}"),
        None => name.to_string(),
    };
    let manifest_sha256 = manifest
        .save_sealed(&partial.path(&sealed(MANIFEST_FILE)), seal)
        .map_err(|e| destination_error(e, &opts.dest))?;
    if let Some(l) = &opts.layout_file {
        let mut data =
            std::fs::read(l).with_context(|| format!("reading layout {}", l.display()))?;
        if let Some(r) = seal {
            data = r.seal(&data)?;
        }
        crate::util::write_atomic(&partial.path(&sealed(LAYOUT_FILE)), &data, 0o600)
            .map_err(|e| destination_error(e, &opts.dest))?;
    }
    Ok(manifest_sha256)
}

/// The generation's record: its place in the chain, what the archives hold
/// and how the run went (manifest hash and duration filled in by the caller).
fn new_generation(
    opts: &CreateOptions,
    id: &str,
    previous: Option<&Generation>,
    epoch: i64,
    started_ns: i128,
    manifest: &Manifest,
    run: ArchiveRun,
) -> Generation {
    let (kind, chain) = match previous {
        Some(g) if opts.differential => (GenKind::Differential, g.chain.clone()),
        Some(g) => (GenKind::Incremental, g.chain.clone()),
        None => (GenKind::Full, Vec::new()),
    };
    let fss = &manifest.filesystems;
    Generation {
        format: FORMAT,
        id: id.to_string(),
        kind,
        parent: previous.map(|g| g.id.clone()),
        parent_manifest_sha256: previous.map(|g| g.manifest_sha256.clone()),
        chain: chain.into_iter().chain([id.to_string()]).collect(),
        started_at: crate::util::rfc3339(epoch),
        finished_at: crate::util::rfc3339(crate::util::now_epoch()),
        started_ns,
        duration_seconds: 0.0,
        hostname: crate::util::hostname(),
        lifeboat_version: crate::VERSION.to_string(),
        compression: opts.compression,
        archive_bytes: run.archives.iter().map(|a| a.bytes).sum(),
        archives: run.archives,
        manifest_sha256: String::new(),
        files: fss.iter().map(|f| f.file_count).sum(),
        bytes: fss.iter().map(|f| f.data_bytes).sum(),
        stored_files: run.stored_files,
        stored_content_bytes: run.stored_bytes,
        deleted: fss.iter().map(|f| f.deleted.len() as u64).sum(),
        has_layout: opts.layout_file.is_some(),
        result: if run.warnings.unreadable > 0 {
            Outcome::Partial
        } else {
            Outcome::Ok
        },
        warnings: run.warnings,
        encryption: opts.encrypt_to.as_ref().map(|r| Encryption {
            recipients: r.fingerprints.clone(),
        }),
    }
}

/// Turns "no space left" anywhere in the chain into one clear message.
fn destination_error(err: anyhow::Error, dest: &Path) -> anyhow::Error {
    let full = err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.raw_os_error() == Some(libc::ENOSPC))
    });
    if full {
        DestinationFull(dest.display().to_string()).into()
    } else {
        err
    }
}

enum Stored {
    Yes,
    Vanished,
    Unreadable(String),
}

struct ArchiveCtx<'a> {
    root: &'a Path,
    buf: Vec<u8>,
    names: HashMap<(bool, u32), String>,
    /// Content hash of each hard-link leader.
    leader_hash: HashMap<Vec<u8>, Option<String>>,
    changed: u64,
    changed_examples: Vec<String>,
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl<'a> ArchiveCtx<'a> {
    fn new(root: &'a Path) -> ArchiveCtx<'a> {
        ArchiveCtx {
            root,
            buf: vec![0u8; 1 << 20],
            names: HashMap::new(),
            leader_hash: HashMap::new(),
            changed: 0,
            changed_examples: Vec::new(),
        }
    }

    fn name(&mut self, user: bool, id: u32) -> String {
        self.names
            .entry((user, id))
            .or_insert_with(|| {
                if user {
                    nix::unistd::User::from_uid(id.into())
                        .ok()
                        .flatten()
                        .map(|u| u.name)
                } else {
                    nix::unistd::Group::from_gid(id.into())
                        .ok()
                        .flatten()
                        .map(|g| g.name)
                }
                .unwrap_or_default()
            })
            .clone()
    }

    fn archive<W: Write>(
        &mut self,
        tar: &mut TarWriter<W>,
        e: &mut WalkEntry,
        progress: &mut Progress,
    ) -> Result<Stored> {
        let rec = &mut e.rec;
        let abs = if rec.path.0 == b"." {
            self.root.to_path_buf()
        } else {
            self.root.join(rec.path.as_path())
        };
        let xattrs = match fsio::list_xattrs(&abs) {
            Ok(x) => x,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Stored::Vanished),
            Err(err) => return Ok(Stored::Unreadable(format!("{}: {err}", abs.display()))),
        };
        rec.xattrs = fsio::xattr_digest(&xattrs);
        let kind = match rec.kind {
            Kind::File if rec.link.is_some() => EntryKind::HardLink,
            Kind::File => EntryKind::File,
            Kind::Dir => EntryKind::Dir,
            Kind::Symlink => EntryKind::Symlink,
            Kind::Char => EntryKind::Char,
            Kind::Block => EntryKind::Block,
            Kind::Fifo => EntryKind::Fifo,
        };
        let mut h = Header::new(rec.tar_path(), kind);
        h.mode = rec.mode;
        h.uid = rec.uid;
        h.gid = rec.gid;
        h.uname = self.name(true, rec.uid);
        h.gname = self.name(false, rec.gid);
        h.mtime_sec = rec.mtime_ns.div_euclid(1_000_000_000);
        h.mtime_nsec = rec.mtime_ns.rem_euclid(1_000_000_000) as u32;
        for (name, value) in &xattrs {
            if name == super::acl::ACCESS {
                h.acl_access = super::acl::to_text(value).ok();
            } else if name == super::acl::DEFAULT {
                h.acl_default = super::acl::to_text(value).ok();
            }
        }
        h.xattrs = xattrs;
        if let Some((ma, mi)) = rec.rdev {
            h.dev_major = ma;
            h.dev_minor = mi;
        }
        match kind {
            EntryKind::Symlink => {
                h.link = rec.target.clone().unwrap_or_default().0;
            }
            EntryKind::HardLink => {
                let leader = rec.link.clone().expect("hard link").0;
                rec.sha256 = self.leader_hash.get(&leader).cloned().flatten();
                h.link = leader;
            }
            EntryKind::File => return self.archive_file(tar, h, e, &abs, progress),
            _ => {}
        }
        tar.header(&h)?;
        progress.add(0, 1);
        Ok(Stored::Yes)
    }

    fn archive_file<W: Write>(
        &mut self,
        tar: &mut TarWriter<W>,
        mut h: Header,
        e: &mut WalkEntry,
        abs: &Path,
        progress: &mut Progress,
    ) -> Result<Stored> {
        let rec = &mut e.rec;
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW)
            .open(abs)
            .or_else(|err| {
                if err.raw_os_error() == Some(libc::EPERM) {
                    OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(abs)
                } else {
                    Err(err)
                }
            }) {
            Ok(f) => f,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Stored::Vanished),
            Err(err) => return Ok(Stored::Unreadable(format!("{}: {err}", abs.display()))),
        };
        let m = file.metadata()?;
        if !m.is_file() || m.ino() != rec.ino {
            // Replaced by something else since the walk.
            return Ok(Stored::Vanished);
        }
        let mtime_ns = m.mtime() * 1_000_000_000 + m.mtime_nsec();
        if m.size() != rec.size || mtime_ns != rec.mtime_ns {
            self.note_changed(abs);
            rec.size = m.size();
            rec.mtime_ns = mtime_ns;
            rec.ctime_ns = m.ctime() * 1_000_000_000 + m.ctime_nsec();
            h.mtime_sec = mtime_ns.div_euclid(1_000_000_000);
            h.mtime_nsec = mtime_ns.rem_euclid(1_000_000_000) as u32;
        }
        let size = rec.size;
        h.size = size;
        let mut segments = None;
        if size > 0 && m.blocks() * 512 < size {
            let segs = fsio::data_segments(&file, size)?;
            let data: u64 = segs.iter().map(|s| s.1).sum();
            if data < size {
                segments = Some(segs);
            }
        }
        let mut hash = Sha256::new();
        let mut short = false;
        let mut file = file;
        match segments {
            None => {
                tar.header(&h)?;
                short = self.copy(&mut file, size, tar, &mut hash, progress)?;
            }
            Some(mut segs) => {
                rec.sparse = true;
                // GNU tar extends the file only up to the end of the last
                // segment: a trailing hole needs an empty segment at the end.
                if segs.last().map_or(true, |&(o, l)| o + l < size) {
                    segs.push((size, 0));
                }
                h.sparse = Some(SparseMap {
                    segments: segs.clone(),
                    real_size: size,
                });
                tar.header(&h)?;
                let mut pos = 0u64;
                for (off, len) in segs {
                    hash_zeros(&mut hash, off - pos);
                    use std::io::Seek;
                    file.seek(io::SeekFrom::Start(off))?;
                    short |= self.copy(&mut file, len, tar, &mut hash, progress)?;
                    pos = off + len;
                }
                hash_zeros(&mut hash, size - pos);
            }
        }
        tar.pad()?;
        let after = file.metadata()?;
        if short || after.mtime() * 1_000_000_000 + after.mtime_nsec() != rec.mtime_ns {
            self.note_changed(abs);
        }
        let sum = hex::encode(hash.finalize());
        if e.nlink > 1 {
            self.leader_hash
                .insert(rec.path.0.clone(), Some(sum.clone()));
        }
        rec.sha256 = Some(sum);
        progress.add(0, 1);
        Ok(Stored::Yes)
    }

    /// Copies `len` bytes of `file` into the archive; a file that shrank is
    /// padded with zeros (returns true then).
    fn copy<W: Write>(
        &mut self,
        file: &mut File,
        len: u64,
        tar: &mut TarWriter<W>,
        hash: &mut Sha256,
        progress: &mut Progress,
    ) -> Result<bool> {
        let mut left = len;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match file.read(&mut self.buf[..want]) {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err.into()),
            };
            if n == 0 {
                // Shrunk while read: keep the archive consistent.
                while left > 0 {
                    let k = left.min(ZEROS.len() as u64) as usize;
                    hash.update(&ZEROS[..k]);
                    tar.write_raw(&ZEROS[..k])?;
                    left -= k as u64;
                }
                return Ok(true);
            }
            hash.update(&self.buf[..n]);
            tar.write_raw(&self.buf[..n])?;
            left -= n as u64;
            progress.add(n as u64, 0);
        }
        Ok(false)
    }

    fn note_changed(&mut self, abs: &Path) {
        self.changed += 1;
        if self.changed_examples.len() < 10 {
            self.changed_examples.push(abs.display().to_string());
        }
    }
}

pub fn hash_zeros(hash: &mut Sha256, mut n: u64) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        hash.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names() {
        for (mp, want) in [
            ("/", "root"),
            ("/home", "home"),
            ("/boot/efi", "boot-efi"),
            ("/srv/data dir/", "srv-data-dir"),
        ] {
            assert_eq!(archive_stem(Path::new(mp)), want, "{mp}");
        }
    }

    #[test]
    fn layout_sources_skip_pseudo_and_bind_mounts() {
        let mount = |mp: &str, src: &str, fs: &str| {
            serde_json::json!({"mountpoint": mp, "source": src, "fstype": fs,
                "options": "rw", "fs_options": "rw", "root": "/"})
        };
        let layout = serde_json::json!({
            "schema_version": "1.0", "lifeboat_version": "0", "captured_at": "x",
            "host": {"hostname": "h", "os_pretty_name": null, "os_id": null,
                "os_version_id": null, "arch": "x86_64", "kernel": "6", "firmware": "bios"},
            "disks": [{"name": "vdz", "path": "/dev/vdz", "size_bytes": 1, "logical_sector_size": 512,
                "physical_sector_size": 512, "rotational": false, "removable": false,
                "transport": null, "model": null, "serial": null, "wwn": null, "by_id": [],
                "needed": false, "needed_reason": "job disk", "partition_table": null}],
            "boot": {"firmware": "bios", "grub": [], "esps": [], "efi_entries": [],
                "boot_order": [], "boot_current": null, "shim": false,
                "systemd_boot": false, "kernel_cmdline": ""},
            "mounts": [
                mount("/", "/dev/vda2", "ext4"),
                mount("/proc", "proc", "proc"),
                mount("/run", "tmpfs", "tmpfs"),
                mount("/home", "/dev/mapper/vg-home", "xfs"),
                mount("/boot/efi", "/dev/vda1", "vfat"),
                mount("/srv/bind", "/dev/vda2", "ext4"),
                mount("/mnt/nas", "nas:/x", "nfs4"),
                mount("/run/job", "/dev/vdz", "ext4"),
            ],
        });
        let layout: Layout = serde_json::from_value(layout).unwrap();
        let got: Vec<String> = sources_from_layout(&layout, None)
            .iter()
            .map(|s| s.mountpoint.display().to_string())
            .collect();
        assert_eq!(got, ["/", "/boot/efi", "/home"]);
        assert_eq!(
            sources_from_layout(&layout, None)[2].fstype.as_deref(),
            Some("xfs")
        );
        let under = sources_from_layout(&layout, Some(Path::new("/mnt/sys")));
        assert_eq!(under[0].path, PathBuf::from("/mnt/sys"));
        assert_eq!(under[2].path, PathBuf::from("/mnt/sys/home"));
        assert_eq!(under[2].mountpoint, PathBuf::from("/home"));
    }
}
