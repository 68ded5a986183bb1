//! Generations in a backup folder: one directory each, named by its id (a
//! UTC time stamp), holding `generation.json`, `manifest.json.zst`, the
//! archives (one per file system), the layout and, once verified,
//! `verify.json`. A generation is written as `.partial-ID` and renamed when
//! complete; `list` ignores anything else.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::compress::Compression;
use super::manifest::{Manifest, PathBytes};
use super::retention::{self, Policy};
use super::seal::{Encryption, Expect, Identities, Recipients, Tampered, SUFFIX};
use crate::names;
use crate::util::{self, AtomicFile};

pub const GENERATION_FILE: &str = "generation.json";
pub const MANIFEST_FILE: &str = "manifest.json.zst";
pub const LAYOUT_FILE: &str = "layout.json";
pub const VERIFY_FILE: &str = "verify.json";
const PARTIAL_PREFIX: &str = ".partial-";
const DELETING_PREFIX: &str = ".deleting-";
const LOCK_FILE: &str = ".lifeboat-backup.lock";
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GenKind {
    Full,
    /// What changed since its parent, the newest generation then.
    Incremental,
    /// What changed since its parent, the newest full then: a restore
    /// needs that full and this one.
    Differential,
}

impl GenKind {
    pub fn name(self) -> &'static str {
        match self {
            GenKind::Full => "full",
            GenKind::Incremental => "incremental",
            GenKind::Differential => "differential",
        }
    }
}

/// How the backup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every file was archived.
    Ok,
    /// Some files could not be read (listed in the warnings).
    Partial,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveInfo {
    /// Mount point of the archived tree.
    pub mountpoint: PathBytes,
    pub file: String,
    /// Size and SHA-256 of the archive file as stored.
    pub bytes: u64,
    pub sha256: String,
    /// Entries stored in this archive (changed ones for an incremental).
    pub entries: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Warnings {
    /// Files gone between listing and reading.
    pub vanished: u64,
    /// Files that changed while being read.
    pub changed: u64,
    /// Sockets (never archived).
    pub sockets: u64,
    /// Files or directories that could not be read.
    pub unreadable: u64,
    /// A few examples, for the report.
    pub examples: Vec<String>,
}

/// `generation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub format: u32,
    pub id: String,
    pub kind: GenKind,
    /// Previous generation of the chain and the SHA-256 of its manifest.
    pub parent: Option<String>,
    pub parent_manifest_sha256: Option<String>,
    /// Ids from the full generation to this one.
    pub chain: Vec<String>,
    pub started_at: String,
    pub finished_at: String,
    /// Nanoseconds since the epoch at the start (orders generations).
    pub started_ns: i128,
    pub duration_seconds: f64,
    pub hostname: String,
    pub lifeboat_version: String,
    pub compression: Compression,
    pub archives: Vec<ArchiveInfo>,
    pub manifest_sha256: String,
    /// Files in the manifest (the whole tree at that moment).
    pub files: u64,
    /// Apparent bytes of the whole tree.
    pub bytes: u64,
    /// Entries stored in this generation's archives and their content bytes.
    pub stored_files: u64,
    pub stored_content_bytes: u64,
    /// Bytes of this generation's archives.
    pub archive_bytes: u64,
    pub deleted: u64,
    pub has_layout: bool,
    pub result: Outcome,
    pub warnings: Warnings,
    /// An encrypted generation: whom to. Its clear `generation.json` holds
    /// no archive, mount point or file name ([`Generation::redacted`]);
    /// the whole record is `generation.json.age`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// `verify.json`: the last verification of a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub verified_at: String,
    pub deep: bool,
    pub ok: bool,
    /// The first problem found, when not ok.
    pub problem: Option<String>,
    pub files_checked: u64,
    /// Every problem found (this generation's damage, and damaged data of
    /// older generations that it needs).
    #[serde(default)]
    pub problems: Vec<String>,
    /// Every damaged file it needs, as on the backed-up system.
    #[serde(default)]
    pub damaged_files: Vec<String>,
}

impl VerifyRecord {
    /// What `verify.json` of an encrypted generation says: no file names.
    pub fn redacted(&self) -> VerifyRecord {
        let summary = (!self.ok).then(|| {
            format!(
                "damaged: {} problem(s), {} damaged file(s); `lifeboat backup verify --identity FILE` names them",
                self.problems.len().max(1),
                self.damaged_files.len()
            )
        });
        VerifyRecord {
            problem: summary.clone(),
            problems: summary.into_iter().collect(),
            damaged_files: Vec::new(),
            ..self.clone()
        }
    }
}

/// A generation directory whose `generation.json` cannot be used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadGeneration {
    /// The directory's name.
    pub id: String,
    pub error: String,
}

/// The generations of a backup folder, readable and not.
#[derive(Debug, Default)]
pub struct Listing {
    /// Oldest first.
    pub good: Vec<Generation>,
    pub bad: Vec<BadGeneration>,
}

/// What a retention policy does to a backup folder.
#[derive(Debug, Serialize)]
pub struct PrunePlan {
    /// The readable generations, oldest first, and the decision for each.
    pub generations: Vec<Generation>,
    pub decisions: Vec<retention::Decision>,
    /// Damaged generations that go too.
    pub damaged: Vec<BadGeneration>,
}

impl PrunePlan {
    /// `policy` over `listing`: the decision for each readable generation
    /// ([`retention::plan`]), and the damaged ones older than every
    /// generation kept (only when something goes). Backup folders and
    /// restic/Borg repositories share it.
    pub fn of(listing: Listing, policy: &Policy) -> PrunePlan {
        let Listing { good, bad } = listing;
        let decisions = retention::plan(&good, policy, &util::local_time);
        let any_removed = decisions.iter().any(|d| !d.keep);
        // Every id a kept generation names (its base may be a damaged one).
        let oldest_kept = good
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| d.keep)
            .flat_map(|(g, _)| g.chain.iter().map(String::as_str).chain([g.id.as_str()]))
            .min()
            .map(str::to_string);
        let damaged = bad
            .into_iter()
            .filter(|b| any_removed && oldest_kept.as_deref().is_some_and(|k| b.id.as_str() < k))
            .collect();
        PrunePlan {
            generations: good,
            decisions,
            damaged,
        }
    }
}

/// A backup folder.
pub struct Store {
    pub dir: PathBuf,
    /// Opens encrypted generations (`--identity`); without it they are
    /// listed with their clear metadata only.
    pub ids: Option<Arc<Identities>>,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            ids: None,
        }
    }

    pub fn with_identities(dir: &Path, ids: Option<Arc<Identities>>) -> Store {
        Store {
            dir: dir.to_path_buf(),
            ids,
        }
    }

    pub fn gen_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Every complete generation, oldest first; unreadable ones are left
    /// out (see [`Store::scan`]).
    pub fn list(&self) -> Result<Vec<Generation>> {
        let listing = self.scan()?;
        for b in &listing.bad {
            log::warn!("generation {} is damaged: {}", b.id, b.error);
        }
        Ok(listing.good)
    }

    /// Every generation directory: the readable generations, oldest first,
    /// and those whose `generation.json` is unreadable or hostile (damaged:
    /// they stop nothing else).
    pub fn scan(&self) -> Result<Listing> {
        let mut out = Listing::default();
        let rd = fs::read_dir(&self.dir)
            .with_context(|| format!("cannot read backup folder {}", self.dir.display()))?;
        for ent in rd {
            let ent = ent.with_context(|| format!("reading {}", self.dir.display()))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = ent.path().join(GENERATION_FILE);
            if name.starts_with('.') || fs::symlink_metadata(&path).is_err() {
                continue;
            }
            // load_generation also refuses a generation.json that names
            // another generation than its folder (damaged or planted).
            match load_generation(&path).and_then(|g| self.unseal(g)) {
                Ok(g) => out.good.push(g),
                Err(e) if e.is::<super::seal::WrongIdentity>() => return Err(e),
                Err(e) => out.bad.push(BadGeneration {
                    id: name,
                    error: format!("{e:#}"),
                }),
            }
        }
        out.good
            .sort_by(|a, b| (a.started_ns, &a.id).cmp(&(b.started_ns, &b.id)));
        out.bad.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    pub fn load(&self, id: &str) -> Result<Generation> {
        names::generation_id(id)?;
        let path = self.gen_dir(id).join(GENERATION_FILE);
        if !self.gen_dir(id).is_dir() {
            bail!(
                "generation {id} is missing from {} (see `lifeboat backup list`)",
                self.dir.display()
            );
        }
        self.unseal(load_generation(&path)?)
    }

    /// The whole record of an encrypted generation (with an identity), or
    /// `g` itself. The clear file must be the redacted sealed one.
    fn unseal(&self, g: Generation) -> Result<Generation> {
        let (Some(enc), Some(ids)) = (&g.encryption, &self.ids) else {
            return Ok(g);
        };
        let name = format!("{GENERATION_FILE}{SUFFIX}");
        let what = format!("{name} of generation {}", g.id);
        let data = util::read_regular(
            &self.gen_dir(&g.id).join(&name),
            &name,
            GENERATION_FILE_LIMIT,
        )?;
        let clear = ids.open(&data, &what, Expect::Recipients(&enc.recipients))?;
        let full: Generation = serde_json::from_slice(&clear)
            .with_context(|| format!("{what} is not a lifeboat generation"))?;
        full.check_names(&g.id)
            .with_context(|| format!("{what} is refused"))?;
        if full.redacted() != g {
            bail!(Tampered {
                what: format!("{GENERATION_FILE} of generation {}", g.id),
                detail: "differs from its encrypted copy".into(),
                resume: None,
            });
        }
        Ok(full)
    }

    /// The identities to read `g`'s files with: none for a clear generation.
    pub fn ids_for(&self, g: &Generation) -> Option<&Arc<Identities>> {
        g.encryption.as_ref().and(self.ids.as_ref())
    }

    /// Refuses to go on with an encrypted generation without its identity.
    pub fn need_open(&self, g: &Generation) -> Result<()> {
        if g.encryption.is_some() && self.ids.is_none() {
            bail!(
                "generation {} is encrypted: give the identity of one of its recipients ({}) with --identity FILE",
                g.id,
                g.encryption.as_ref().map(|e| e.recipients.join(", ")).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The manifest of `g`, decrypted when it is sealed.
    pub fn load_manifest(&self, g: &Generation) -> Result<Manifest> {
        let path = self.gen_dir(&g.id).join(g.manifest_file());
        if g.encryption.is_none() {
            return Manifest::load(&path);
        }
        self.need_open(g)?;
        let ids = self.ids.as_ref().expect("checked");
        let data = util::read_regular(&path, MANIFEST_FILE, MANIFEST_FILE_LIMIT)?;
        let what = format!("manifest of generation {}", g.id);
        let zst = ids.open(&data, &what, Expect::Opened)?;
        Manifest::from_zst(&zst, &path)
    }

    /// The generation `id`, or the newest.
    pub fn pick(&self, id: Option<&str>) -> Result<Generation> {
        match id {
            Some(id) => self.load(id),
            None => self
                .list()?
                .pop()
                .with_context(|| format!("no backups in {}", self.dir.display())),
        }
    }

    /// The newest readable generation started at or before `when` (epoch
    /// seconds), for `--at`.
    pub fn at(&self, when: i64) -> Result<Generation> {
        let gens = self.list()?;
        let oldest = gens.first().map(|g| {
            format!(
                "; the oldest, {}, started {}",
                g.id,
                util::local_time(retention::epoch_of(g))
            )
        });
        gens.iter()
            .rev()
            .find(|g| retention::epoch_of(g) <= when)
            .cloned()
            .with_context(|| {
                format!(
                    "no generation in {} started at or before {}{}",
                    self.dir.display(),
                    util::local_time(when),
                    oldest.unwrap_or_default()
                )
            })
    }

    /// The generation `--at TEXT` names, and a line saying which it is.
    pub fn pick_at(&self, text: &str) -> Result<(Generation, String)> {
        let when = util::parse_moment(text)?;
        let g = self.at(when)?;
        let line = format!(
            "--at {text}: generation {} ({}, started {}), the newest at or before {}",
            g.id,
            g.kind.name(),
            util::local_time(retention::epoch_of(&g)),
            util::local_time(when)
        );
        Ok((g, line))
    }

    /// A new generation id: the UTC time stamp, made unique.
    pub fn new_id(&self, epoch: i64) -> String {
        let base = util::stamp(epoch);
        let mut id = base.clone();
        let mut n = 2;
        while fs::symlink_metadata(self.gen_dir(&id)).is_ok() {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }

    /// Takes the folder's lock (one backup or prune at a time) and removes
    /// leftovers of killed runs.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.dir.join(LOCK_FILE);
        let file = match util::lock_file(&path).with_context(|| {
            format!(
                "cannot lock backup folder {} (permissions?)",
                self.dir.display()
            )
        })? {
            util::Lock::Taken(file) => file,
            util::Lock::Busy(_) => bail!(
                "another lifeboat backup is using {} (lock {} is held)",
                self.dir.display(),
                path.display()
            ),
        };
        for ent in fs::read_dir(&self.dir)?.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with(PARTIAL_PREFIX) || name.starts_with(DELETING_PREFIX) {
                log::info!("removing {name}, left by an interrupted run");
                let _ = fs::remove_dir_all(ent.path());
            }
        }
        Ok(StoreLock { _file: file })
    }

    /// A directory for a generation being written, under an unpredictable
    /// name (made by `mkdir`, which never follows a planted symlink) and
    /// opened at once; renamed by `commit`.
    pub fn begin(&self, id: &str) -> Result<Partial> {
        names::generation_id(id)?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{id}."))
            .tempdir_in(&self.dir)
            .with_context(|| {
                format!(
                    "creating a folder for generation {id} in {}",
                    self.dir.display()
                )
            })?
            .keep();
        let dir = util::open_dir_nofollow(&tmp)?;
        Ok(Partial {
            tmp,
            dir,
            dest: self.gen_dir(id),
            done: false,
        })
    }

    /// Removes a generation: renamed away first, so a half-deleted one is
    /// never listed.
    pub fn remove(&self, id: &str) -> Result<()> {
        names::generation_id(id)?;
        let from = self.gen_dir(id);
        let to = self.dir.join(format!("{DELETING_PREFIX}{id}"));
        fs::rename(&from, &to).with_context(|| format!("removing {}", from.display()))?;
        util::sync_dir(&self.dir)?;
        fs::remove_dir_all(&to).with_context(|| format!("removing {}", to.display()))?;
        Ok(())
    }

    /// What `policy` keeps and removes ([`super::retention::plan`], periods
    /// in local time), and the damaged generations that go with them: those
    /// older than every generation kept, when anything goes (they can be of
    /// no chain kept).
    pub fn prune_plan(&self, policy: &Policy) -> Result<PrunePlan> {
        Ok(PrunePlan::of(self.scan()?, policy))
    }

    /// Applies `policy`; returns the removed ids.
    pub fn prune(&self, policy: &Policy) -> Result<Vec<String>> {
        let plan = self.prune_plan(policy)?;
        let mut removed = Vec::new();
        // Newest first, so a chain never loses its base before its tail.
        for d in plan.decisions.iter().rev().filter(|d| !d.keep) {
            self.remove(&d.id)?;
            removed.push(d.id.clone());
        }
        for b in &plan.damaged {
            log::info!(
                "removing damaged generation {} (older than every generation kept)",
                b.id
            );
            self.remove(&b.id)?;
            removed.push(b.id.clone());
        }
        Ok(removed)
    }

    /// Writes `verify.json` into the generation's folder, reached without
    /// following a symlink (a generation folder swapped for a link is
    /// refused, never written through).
    pub fn write_verify(&self, id: &str, rec: &VerifyRecord) -> Result<()> {
        names::generation_id(id)?;
        let clear = load_generation(&self.gen_dir(id).join(GENERATION_FILE));
        let rec = match clear {
            Ok(g) if g.encryption.is_some() => rec.redacted(),
            _ => rec.clone(),
        };
        let json = serde_json::to_vec_pretty(&rec)?;
        let dir = util::open_dir_nofollow(&self.gen_dir(id))?;
        util::write_atomic(&util::fd_path(&dir).join(VERIFY_FILE), &json, 0o600)
            .with_context(|| format!("writing {VERIFY_FILE} of generation {id}"))
    }

    pub fn load_verify(&self, id: &str) -> Option<VerifyRecord> {
        let path = self.gen_dir(id).join(VERIFY_FILE);
        let data = util::read_regular(&path, VERIFY_FILE, GENERATION_FILE_LIMIT).ok()?;
        serde_json::from_slice(&data).ok()
    }
}

/// `generation.json` is small; anything larger is not ours.
const GENERATION_FILE_LIMIT: u64 = 16 << 20;
/// An encrypted manifest is read whole.
const MANIFEST_FILE_LIMIT: u64 = 4 << 30;

fn load_generation(path: &Path) -> Result<Generation> {
    if let Some(dir) = path.parent() {
        let meta =
            fs::symlink_metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
        if !meta.is_dir() {
            bail!(
                "generation folder {} is a symbolic link or not a folder: refused",
                dir.display()
            );
        }
    }
    let data = util::read_regular(path, GENERATION_FILE, GENERATION_FILE_LIMIT)?;
    let g: Generation = serde_json::from_slice(&data)
        .with_context(|| format!("{} is damaged or not a lifeboat generation", path.display()))?;
    if g.format != FORMAT {
        bail!(
            "{} has format {}, this lifeboat reads {FORMAT}",
            path.display(),
            g.format
        );
    }
    let folder = path
        .parent()
        .and_then(Path::file_name)
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    g.check_names(&folder)
        .with_context(|| format!("{} is refused", path.display()))?;
    Ok(g)
}

impl Generation {
    /// What the clear `generation.json` of an encrypted generation says:
    /// no archive (names, mount points), host name or warning example.
    pub fn redacted(&self) -> Generation {
        Generation {
            archives: Vec::new(),
            hostname: String::new(),
            warnings: Warnings {
                examples: Vec::new(),
                ..self.warnings.clone()
            },
            ..self.clone()
        }
    }

    /// The manifest's file name: `manifest.json.zst`, `.age` when sealed.
    pub fn manifest_file(&self) -> String {
        self.sealed_name(MANIFEST_FILE)
    }

    /// `name`, or `name.age` in an encrypted generation.
    pub fn sealed_name(&self, name: &str) -> String {
        match self.encryption {
            Some(_) => format!("{name}{SUFFIX}"),
            None => name.to_string(),
        }
    }

    /// Every name in `generation.json` that becomes a path is checked: ids
    /// (its own, which must be its folder's name, the parent and the chain)
    /// are single path components, archive files too, mount points
    /// absolute and normalised.
    pub fn check_names(&self, folder: &str) -> Result<()> {
        let gen = &self.id;
        let field = |f: String| {
            move |e: anyhow::Error| e.context(format!("generation {gen:?}, field `{f}`"))
        };
        names::generation_id(gen).map_err(field("id".into()))?;
        if gen != folder {
            bail!("generation {gen:?}, field `id`: does not match its folder {folder:?}");
        }
        if let Some(p) = &self.parent {
            names::generation_id(p).map_err(field("parent".into()))?;
        }
        for (i, c) in self.chain.iter().enumerate() {
            names::generation_id(c).map_err(field(format!("chain[{i}]")))?;
        }
        for (i, a) in self.archives.iter().enumerate() {
            names::component("archive file", &a.file)
                .map_err(field(format!("archives[{i}].file")))?;
            names::mount_point(a.mountpoint.as_bytes())
                .map_err(field(format!("archives[{i}].mountpoint")))?;
        }
        Ok(())
    }
}

/// A generation of `kind` whose chain (its own id last) is `chain`, started
/// at `started_ns`, for tests.
#[cfg(test)]
pub(crate) fn sample(kind: GenKind, chain: &[String], started_ns: i128) -> Generation {
    Generation {
        format: FORMAT,
        id: chain.last().expect("a chain names its generation").clone(),
        kind,
        parent: (chain.len() > 1).then(|| chain[chain.len() - 2].clone()),
        parent_manifest_sha256: None,
        chain: chain.to_vec(),
        started_at: String::new(),
        finished_at: String::new(),
        started_ns,
        duration_seconds: 0.0,
        hostname: String::new(),
        lifeboat_version: String::new(),
        compression: Compression::Zstd,
        archives: Vec::new(),
        manifest_sha256: String::new(),
        files: 0,
        bytes: 0,
        stored_files: 0,
        stored_content_bytes: 0,
        archive_bytes: 0,
        deleted: 0,
        has_layout: false,
        result: Outcome::Ok,
        warnings: Warnings::default(),
        encryption: None,
    }
}

pub struct StoreLock {
    _file: nix::fcntl::Flock<File>,
}

/// A generation directory being written.
pub struct Partial {
    /// Its name in the backup folder, for messages and the final rename.
    pub tmp: PathBuf,
    /// The folder itself, opened when made: files are created through it,
    /// so swapping the name for a link meanwhile redirects nothing.
    dir: File,
    dest: PathBuf,
    done: bool,
}

impl Partial {
    /// The path that reaches `name` inside this very folder (through
    /// `/proc/self/fd`); use `tmp.join(name)` in messages.
    pub fn path(&self, name: &str) -> PathBuf {
        util::fd_path(&self.dir).join(name)
    }

    /// Writes a file of the generation.
    pub fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        let mut f = AtomicFile::create(&self.path(name), 0o600)?;
        f.write_all(data)?;
        f.commit()
            .with_context(|| format!("writing {}", self.tmp.join(name).display()))
    }

    /// Writes generation.json (encrypted to `seal`, with its clear
    /// redacted copy), syncs everything and renames into place.
    pub fn commit(mut self, gen: &Generation, seal: Option<&Recipients>) -> Result<()> {
        let json = serde_json::to_vec_pretty(gen)?;
        match seal {
            Some(r) => {
                self.write(&format!("{GENERATION_FILE}{SUFFIX}"), &r.seal(&json)?)?;
                self.write(
                    GENERATION_FILE,
                    &serde_json::to_vec_pretty(&gen.redacted())?,
                )?;
            }
            None => self.write(GENERATION_FILE, &json)?,
        }
        self.dir
            .sync_all()
            .with_context(|| format!("syncing directory {}", self.tmp.display()))?;
        fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        util::sync_dir(self.dest.parent().unwrap_or(Path::new(".")))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::tests::{outside, tree_state};

    #[test]
    fn begin_and_write_verify_never_follow_planted_links() {
        let (outside, _) = outside();
        let before = tree_state(outside.path());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        // The name a generation folder used to be written under.
        let id = "20261126T055726Z";
        std::os::unix::fs::symlink(outside.path(), dir.path().join(format!(".partial-{id}")))
            .unwrap();
        let partial = store.begin(id).unwrap();
        assert!(fs::symlink_metadata(&partial.tmp).unwrap().is_dir());
        // Someone swaps the folder for a link: files still land in it.
        let moved = dir.path().join("moved");
        fs::rename(&partial.tmp, &moved).unwrap();
        std::os::unix::fs::symlink(outside.path(), &partial.tmp).unwrap();
        fs::write(partial.path("probe"), b"x").unwrap();
        assert_eq!(fs::read(moved.join("probe")).unwrap(), b"x");
        drop(partial);
        assert_eq!(tree_state(outside.path()), before);
        // A generation folder swapped for a link: verify.json is refused.
        std::os::unix::fs::symlink(outside.path(), dir.path().join(id)).unwrap();
        let rec = VerifyRecord {
            verified_at: "2026-11-26T05:57:26Z".into(),
            deep: false,
            ok: true,
            problem: None,
            files_checked: 0,
            problems: Vec::new(),
            damaged_files: Vec::new(),
        };
        let e = format!("{:#}", store.write_verify(id, &rec).unwrap_err());
        assert!(e.contains("not a folder, or a symbolic link"), "{e}");
        assert!(store.write_verify("../x", &rec).is_err());
        assert_eq!(tree_state(outside.path()), before);
        // A real folder gets it.
        fs::remove_file(dir.path().join(id)).unwrap();
        fs::create_dir(dir.path().join(id)).unwrap();
        store.write_verify(id, &rec).unwrap();
        assert_eq!(store.load_verify(id), Some(rec));
    }

    #[test]
    fn linked_generation_folders_and_files_are_refused() {
        let (outside, victim) = outside();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        std::os::unix::fs::symlink(outside.path(), dir.path().join("20261126T055726Z")).unwrap();
        fs::copy(&victim, outside.path().join(GENERATION_FILE)).unwrap();
        // Listed apart as damaged; the others are still listed.
        let l = store.scan().unwrap();
        assert!(l.good.is_empty());
        assert_eq!(l.bad.len(), 1);
        let e = &l.bad[0].error;
        assert!(
            e.contains("is a symbolic link or not a folder: refused"),
            "{e}"
        );
        assert!(store.list().unwrap().is_empty());
        fs::remove_file(dir.path().join("20261126T055726Z")).unwrap();
        let gen = dir.path().join("20261126T055727Z");
        fs::create_dir(&gen).unwrap();
        std::os::unix::fs::symlink(&victim, gen.join(GENERATION_FILE)).unwrap();
        let e = format!("{:#}", store.load("20261126T055727Z").unwrap_err());
        assert!(e.contains("generation.json"), "{e}");
        assert!(e.contains("is a symbolic link"), "{e}");
    }

    #[test]
    fn lock_refuses_a_planted_link() {
        let (outside, victim) = outside();
        let before = tree_state(outside.path());
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(victim, dir.path().join(LOCK_FILE)).unwrap();
        let e = format!("{:#}", Store::new(dir.path()).lock().err().unwrap());
        assert!(e.contains("is a symbolic link; remove it"), "{e}");
        assert_eq!(tree_state(outside.path()), before);
    }

    /// A generation directory with a generation.json of `chain`'s last id.
    fn put(store: &Store, chain: &[&str], n: i128) {
        let kind = if chain.len() == 1 {
            GenKind::Full
        } else {
            GenKind::Incremental
        };
        let chain: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
        let g = sample(kind, &chain, n);
        fs::create_dir_all(store.gen_dir(&g.id)).unwrap();
        let json = serde_json::to_vec(&g).unwrap();
        fs::write(store.gen_dir(&g.id).join(GENERATION_FILE), json).unwrap();
    }

    fn garbage(store: &Store, id: &str, data: &[u8]) {
        fs::create_dir_all(store.gen_dir(id)).unwrap();
        fs::write(store.gen_dir(id).join(GENERATION_FILE), data).unwrap();
    }

    fn ids(store: &Store) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&store.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn unreadable_and_planted_generations_are_listed_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        put(&store, &["g1"], 1);
        put(&store, &["g1", "g2"], 2);
        garbage(&store, "g3", b"{ not json");
        // Another generation's file planted in g4's folder.
        fs::create_dir_all(store.gen_dir("g4")).unwrap();
        fs::copy(
            store.gen_dir("g1").join(GENERATION_FILE),
            store.gen_dir("g4").join(GENERATION_FILE),
        )
        .unwrap();
        let l = store.scan().unwrap();
        let good: Vec<&str> = l.good.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(good, ["g1", "g2"]);
        let bad: Vec<&str> = l.bad.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(bad, ["g3", "g4"]);
        assert!(
            l.bad[1]
                .error
                .contains("generation \"g1\", field `id`: does not match its folder \"g4\""),
            "{:?}",
            l.bad
        );
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn prune_drops_old_chains_and_damaged_generations_older_than_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        put(&store, &["a1"], 1);
        put(&store, &["a1", "a2"], 2);
        garbage(&store, "a3", b"garbage");
        put(&store, &["c1"], 4);
        put(&store, &["c1", "c2"], 5);
        garbage(&store, "c3", b"garbage");
        let mut removed = store.prune(&Policy::chains(1)).unwrap();
        removed.sort();
        assert_eq!(removed, ["a1", "a2", "a3"]);
        // The damaged generation newer than the kept chain's base stays.
        assert_eq!(ids(&store), ["c1", "c2", "c3"]);
        assert!(store.prune(&Policy::chains(1)).unwrap().is_empty());
    }

    #[test]
    fn prune_keeps_a_damaged_base_of_a_kept_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        put(&store, &["a1"], 1);
        garbage(&store, "b1", b"garbage");
        put(&store, &["b1", "b2"], 3);
        let removed = store.prune(&Policy::chains(1)).unwrap();
        assert_eq!(removed, ["a1"]);
        assert_eq!(ids(&store), ["b1", "b2"]);
    }
}
