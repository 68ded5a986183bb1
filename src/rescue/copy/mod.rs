//! Copies of the rescue image off the host (`rescue.destination`): after
//! every build (`mkrescue`, the scheduled rebuild) the image as built
//! (vmlinuz, initrd, the ISO), its `rescue.json` and the layout built in
//! go into a folder `HOST-YYYYMMDDTHHMMSSZ` (the build time) of a
//! directory, an NFS or CIFS share (mounted on a private temporary folder
//! for the moment) or an SFTP server; the newest `rescue.keep_copies` of
//! this host are kept.
//!
//! Each copy is written under a temporary name (`.lifeboat-copy-RANDOM`),
//! checked (every file read back, from the share or through SFTP, and its
//! SHA-256 compared with `rescue.json`), then renamed into place, so
//! a copy folder always holds one whole image. A failed copy never touches
//! the local image; it is logged as a warning, sent as a notice, and
//! recorded in `OUTPUT/rescue-copy.json`, which `status` and `check` read
//! ([`CopyFacts`]).

mod sftp;

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{BuildRecord, BUILD_RECORD};
use crate::backup::dest::Target as Share;
use crate::config::Config;
use crate::exec::Cmd;
use crate::util;

pub use sftp::Sftp;

/// The record of the copies, beside `rescue.json`.
pub const COPY_RECORD: &str = "rescue-copy.json";
/// The name of the layout in a copy folder.
pub const LAYOUT_COPY: &str = "layout.json";
/// Prefix of a copy being written.
const TMP_PREFIX: &str = ".lifeboat-copy-";

/// Where copies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Dir(PathBuf),
    /// `nfs://` or `cifs://`, mounted for the copy.
    Share(Share),
    Sftp(Sftp),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target> {
        if text.starts_with("sftp://") {
            return Ok(Target::Sftp(Sftp::parse(text)?));
        }
        if crate::backup::engine::Repo::split(text).is_some() {
            bail!(
                "rescue.destination {text:?} is a repository: give a directory, \
                 nfs://HOST/EXPORT/PATH, cifs://HOST/SHARE/PATH or sftp://USER@HOST[:PORT]/PATH"
            );
        }
        match Share::parse(text) {
            Ok(Share::Local(p)) => Ok(Target::Dir(p)),
            Ok(s) => Ok(Target::Share(s)),
            Err(_) if text.contains("://") => bail!(
                "unsupported rescue.destination {text:?}: give a directory, \
                 nfs://HOST/EXPORT/PATH, cifs://HOST/SHARE/PATH or sftp://USER@HOST[:PORT]/PATH"
            ),
            Err(e) => Err(e.context(format!("rescue.destination {text:?}"))),
        }
    }
}

/// One file of a copy: its name in the copy folder, where it is read
/// from, its SHA-256 and size.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: String,
    pub src: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

/// What one copy holds and is called.
#[derive(Debug, Clone)]
pub struct Plan {
    pub host: String,
    /// `HOST-YYYYMMDDTHHMMSSZ`.
    pub name: String,
    pub items: Vec<Item>,
}

/// A host name as it becomes part of a folder name: letters, digits,
/// `.`, `-` and `_`, not starting with `.` or `-`.
pub fn check_host(host: &str) -> Result<()> {
    crate::names::component("host name", host)?;
    let ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !host.starts_with(['.', '-']);
    if !ok {
        bail!(
            "host name {host:?} cannot name a rescue image copy: only letters, digits, '.', '-' \
             and '_' (set a plain host name with hostnamectl)"
        );
    }
    Ok(())
}

/// Whether `name` is a copy folder of `host`: `HOST-` and a time stamp.
pub fn is_copy_of(host: &str, name: &str) -> bool {
    let Some(stamp) = name.strip_prefix(host).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 8 | 15) || c.is_ascii_digit())
}

/// The copy of the image in `output` that `rec` describes: its files as
/// recorded, `rescue.json`, and the layout when its file still has the
/// recorded SHA-256.
pub fn plan(output: &Path, rec: &BuildRecord, host: &str) -> Result<Plan> {
    check_host(host)?;
    let built = util::parse_rfc3339(&rec.built_at)
        .with_context(|| format!("rescue.json has a bad build time {:?}", rec.built_at))?;
    let mut items: Vec<Item> = rec
        .files
        .iter()
        .map(|f| Item {
            name: f.name.clone(),
            src: output.join(&f.name),
            sha256: f.sha256.clone(),
            bytes: f.bytes,
        })
        .collect();
    let record = output.join(BUILD_RECORD);
    let (sha, bytes) = util::hash_file(&record)?;
    items.push(Item {
        name: BUILD_RECORD.into(),
        src: record,
        sha256: sha,
        bytes,
    });
    if let (Some(l), Some(want)) = (&rec.layout, &rec.layout_sha256) {
        match util::hash_file(Path::new(l)) {
            Ok((sha, bytes)) if &sha == want => items.push(Item {
                name: LAYOUT_COPY.into(),
                src: PathBuf::from(l),
                sha256: sha,
                bytes,
            }),
            _ => log::warn!(
                "the layout built into the image ({l}) changed or is gone since the build: \
                 the copy holds the image (which has it built in) without layout.json"
            ),
        }
    }
    Ok(Plan {
        host: host.to_string(),
        name: format!("{host}-{}", util::stamp(built)),
        items,
    })
}

/// A finished copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Copied {
    /// `rescue.destination` as configured.
    pub destination: String,
    /// The copy folder's name in it.
    pub name: String,
    pub copied_at: String,
    /// `built_at` of the image copied.
    pub image_built_at: String,
    pub files: Vec<String>,
    pub bytes: u64,
    /// Older copies of this host removed (`rescue.keep_copies`).
    pub removed: Vec<String>,
}

impl Copied {
    /// The copy's name and the old copies removed, for one console line.
    pub fn summary(&self) -> String {
        match self.removed.is_empty() {
            true => self.name.clone(),
            false => format!("{} (removed {})", self.name, self.removed.join(", ")),
        }
    }
}

/// `OUTPUT/rescue-copy.json`: the last attempt, and the last copy made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyRecord {
    pub destination: String,
    pub attempted_at: String,
    /// `built_at` of the image the last attempt copied.
    pub image_built_at: String,
    pub ok: bool,
    pub error: Option<String>,
    pub last_copy: Option<Copied>,
}

impl CopyRecord {
    pub fn load(output: &Path) -> Result<Option<CopyRecord>> {
        let path = output.join(COPY_RECORD);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display()))
    }

    pub fn save(&self, output: &Path) -> Result<()> {
        let json = format!("{}\n", serde_json::to_string_pretty(self)?);
        util::write_atomic(&output.join(COPY_RECORD), json.as_bytes(), 0o644)
    }
}

/// How to reach the destination.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub mount_options: Option<String>,
    pub ssh_options: Vec<String>,
}

/// Copies `plan` to `spec` and keeps the newest `keep` copies of the host.
pub fn copy(spec: &str, access: &Access, plan: &Plan, keep: usize) -> Result<Copied> {
    let removed = match Target::parse(spec)? {
        Target::Dir(dir) => to_dir(&dir, plan, keep)?,
        Target::Share(share) => {
            let m = Mounted::mount(&share, spec, access.mount_options.as_deref())?;
            let dir = match &share {
                Share::Cifs { subdir, .. } if !subdir.is_empty() => m.dir.join(subdir),
                _ => m.dir.clone(),
            };
            to_dir(&dir, plan, keep)?
        }
        Target::Sftp(s) => s.copy(plan, keep, &access.ssh_options)?,
    };
    Ok(Copied {
        destination: spec.to_string(),
        name: plan.name.clone(),
        copied_at: util::rfc3339(util::now_epoch()),
        image_built_at: String::new(),
        files: plan.items.iter().map(|i| i.name.clone()).collect(),
        bytes: plan.items.iter().map(|i| i.bytes).sum(),
        removed,
    })
}

/// Writes the copy into directory `base` (created if missing), read back
/// and compared, then renamed into place; removes the oldest copies of
/// the host beyond `keep`. Returns the names removed.
pub fn to_dir(base: &Path, plan: &Plan, keep: usize) -> Result<Vec<String>> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    // Inside the folder through its handle: a symlink swapped in for it
    // meanwhile cannot redirect the copy.
    let handle = util::open_dir_nofollow(base)?;
    let at = util::fd_path(&handle);
    let tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempdir_in(&at)
        .with_context(|| format!("creating a folder in {}", base.display()))?;
    for item in &plan.items {
        copy_checked(item, &tmp.path().join(&item.name))
            .with_context(|| format!("copying {} to {}", item.src.display(), base.display()))?;
    }
    util::sync_dir(tmp.path())?;
    let final_path = at.join(&plan.name);
    if std::fs::symlink_metadata(&final_path).is_ok() {
        bail!(
            "{} already holds {}: this image was copied before",
            base.display(),
            plan.name
        );
    }
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, &final_path) {
        let _ = std::fs::remove_dir_all(&tmp_path);
        return Err(e).with_context(|| format!("renaming the copy to {}", plan.name));
    }
    util::sync_dir(&at)?;
    let names = list_dir(&at)?;
    let mut removed = Vec::new();
    for old in expired(&names, plan, keep) {
        // remove_dir_all does not follow symlinks inside.
        match std::fs::remove_dir_all(at.join(&old)) {
            Ok(()) => removed.push(old),
            Err(e) => log::warn!(
                "cannot remove the old copy {old} in {}: {e}",
                base.display()
            ),
        }
    }
    Ok(removed)
}

/// The folder names in `dir` (symlinks and files left out).
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(n) = e.file_name().to_str() {
                names.push(n.to_string());
            }
        }
    }
    Ok(names)
}

/// The copies of the plan's host among `names` beyond the newest `keep`
/// (the new copy is never one of them).
pub fn expired(names: &[String], plan: &Plan, keep: usize) -> Vec<String> {
    let mut mine: Vec<&String> = names
        .iter()
        .filter(|n| is_copy_of(&plan.host, n) && **n != plan.name)
        .collect();
    mine.sort();
    let others_kept = keep.saturating_sub(1);
    let n = mine.len().saturating_sub(others_kept);
    mine.into_iter().take(n).cloned().collect()
}

/// Copies `item` into the new file `dst` (never an existing one), syncs
/// it, then reads it back: its SHA-256 must be the recorded one.
fn copy_checked(item: &Item, dst: &Path) -> Result<()> {
    let mut src = std::fs::File::open(&item.src)
        .with_context(|| format!("opening {}", item.src.display()))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    std::io::copy(&mut src, &mut out).with_context(|| format!("writing {}", dst.display()))?;
    out.sync_all()
        .with_context(|| format!("syncing {}", dst.display()))?;
    check_read_back(item, dst)
}

/// The copy of `item` read back at `path` has the recorded SHA-256 and
/// size.
fn check_read_back(item: &Item, path: &Path) -> Result<()> {
    let (sha, bytes) = util::hash_file(path)?;
    if sha != item.sha256 || bytes != item.bytes {
        bail!(
            "{} read back differs from the image ({bytes} bytes, SHA-256 {sha}; expected {} bytes, {})",
            item.name,
            item.bytes,
            item.sha256
        );
    }
    Ok(())
}

/// An NFS or CIFS share mounted on a private temporary folder, unmounted
/// when dropped (the folder is removed only once unmounted).
struct Mounted {
    dir: PathBuf,
}

/// The helper mount(8) needs for `share`.
fn mount_helper(share: &Share) -> &'static str {
    match share {
        Share::Cifs { .. } => "mount.cifs",
        _ => "mount.nfs",
    }
}

/// The command that mounts `share` on `dir`.
pub fn mount_command(share: &Share, dir: &Path, options: Option<&str>) -> Result<Cmd> {
    share
        .mount_command(dir, options)
        .context("a local directory is not mounted")
}

/// A warning when `options` carry a password (CIFS `password=`/`pass=`),
/// which mount's command line shows to every local user (ps) and `-v`
/// logs.
pub fn password_warning(options: Option<&str>) -> Option<String> {
    let secret = options?
        .split(',')
        .any(|o| o.starts_with("password=") || o.starts_with("pass="));
    secret.then(|| {
        "rescue.mount_options holds a password: it shows on mount's command line (ps) and \
         in -v logs; put username= and password= lines into a file of mode 0600 and give \
         credentials=FILE instead"
            .to_string()
    })
}

impl Mounted {
    fn mount(share: &Share, spec: &str, options: Option<&str>) -> Result<Mounted> {
        crate::exec::require(&[mount_helper(share)])
            .with_context(|| format!("cannot mount rescue.destination {spec}"))?;
        if let Some(w) = password_warning(options) {
            log::warn!("{w}");
        }
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-rescue-copy-")
            .tempdir()
            .context("creating a private mount point")?
            .keep();
        if let Err(e) = mount_command(share, &dir, options).and_then(|c| c.run()) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e.context(format!("cannot mount rescue.destination {spec}")));
        }
        Ok(Mounted { dir })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        match Cmd::new("umount").arg(&self.dir).run() {
            Ok(_) => {
                let _ = std::fs::remove_dir(&self.dir);
            }
            Err(e) => log::warn!("could not unmount {}: {e:#}", self.dir.display()),
        }
    }
}

/// 16 random hex digits (temporary names on servers).
fn random_hex() -> Result<String> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// After a build of the image in `output`: the copy to
/// `rescue.destination` when one is configured (`None` otherwise),
/// recorded in `rescue-copy.json`; a failure is logged as a warning and
/// sent as a notice, never returned as an error.
pub fn after_build(cfg: &Config, output: &Path, rec: &BuildRecord) -> Option<Result<Copied>> {
    let spec = cfg.rescue.destination.value.as_deref()?;
    let access = Access {
        mount_options: cfg.rescue.mount_options.value.clone(),
        ssh_options: cfg.rescue.ssh_options.value.clone(),
    };
    let keep = cfg.rescue.keep_copies.value.0 as usize;
    let outcome = plan(output, rec, &util::hostname())
        .and_then(|p| copy(spec, &access, &p, keep))
        .map(|mut c| {
            c.image_built_at = rec.built_at.clone();
            c
        });
    let previous = CopyRecord::load(output).ok().flatten();
    let record = CopyRecord {
        destination: spec.to_string(),
        attempted_at: util::rfc3339(util::now_epoch()),
        image_built_at: rec.built_at.clone(),
        ok: outcome.is_ok(),
        error: outcome.as_ref().err().map(|e| format!("{e:#}")),
        last_copy: match &outcome {
            Ok(c) => Some(c.clone()),
            Err(_) => previous.and_then(|p| p.last_copy),
        },
    };
    if let Err(e) = record.save(output) {
        log::warn!("cannot record the rescue image copy: {e:#}");
    }
    if let Err(e) = &outcome {
        log::warn!(
            "copying the rescue image to {spec} failed (the image in {} is kept): {e:#}",
            output.display()
        );
        crate::notify::send(cfg, &crate::notify::of_rescue_copy(spec, output, e));
    }
    Some(outcome)
}

/// Whether the image `rec` of `output` still needs a copy: a destination
/// is configured and the last copy there is not of this build.
pub fn needs_copy(cfg: &Config, output: &Path, rec: &BuildRecord) -> bool {
    let Some(spec) = cfg.rescue.destination.value.as_deref() else {
        return false;
    };
    !matches!(
        CopyRecord::load(output),
        Ok(Some(CopyRecord { last_copy: Some(c), .. }))
            if c.destination == spec && c.image_built_at == rec.built_at
    )
}

/// Where the current image was copied, for `status` and `check`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum CopyFacts {
    /// No `rescue.destination`.
    NotConfigured,
    Unreadable {
        destination: String,
        error: String,
    },
    /// No copy was ever made there.
    Missing {
        destination: String,
        /// Why the last attempt failed, if one was made.
        error: Option<String>,
    },
    Copied {
        destination: String,
        copy: Copied,
        #[serde(skip)]
        copied_epoch: Option<i64>,
        /// The copy holds the current image.
        current: bool,
        /// The last attempt failed with this.
        error: Option<String>,
    },
}

/// Reads `rescue-copy.json` of `output` against the image `image` and the
/// configured `destination`.
pub fn facts(destination: Option<&str>, output: &Path, image: Option<&BuildRecord>) -> CopyFacts {
    let Some(spec) = destination else {
        return CopyFacts::NotConfigured;
    };
    let destination = spec.to_string();
    let rec = match CopyRecord::load(output) {
        Ok(r) => r,
        Err(e) => {
            return CopyFacts::Unreadable {
                destination,
                error: format!("{e:#}"),
            }
        }
    };
    // The last attempt's error counts when it was to this destination.
    let error = rec
        .as_ref()
        .filter(|r| r.destination == spec)
        .and_then(|r| r.error.clone());
    match rec
        .and_then(|r| r.last_copy)
        .filter(|c| c.destination == spec)
    {
        None => CopyFacts::Missing { destination, error },
        Some(c) => CopyFacts::Copied {
            destination,
            copied_epoch: util::parse_rfc3339(&c.copied_at).ok(),
            current: image.is_some_and(|i| i.built_at == c.image_built_at),
            copy: c,
            error,
        },
    }
}

#[cfg(test)]
mod tests;
