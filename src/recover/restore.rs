//! The backup side of recovery: finding the generation to restore (and the
//! layout and per-file-system usage it carries), and restoring its chain into
//! the new tree with every file's checksum checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::backup::dest::Destination;
use crate::backup::generation::{Generation, Store};
use crate::backup::manifest::Manifest;
use crate::backup::seal::{Expect, Identities};
use crate::backup::{progress, restore, RestoreOptions};
use std::sync::Arc;

/// The layout of an encrypted generation, decrypted into a private file.
fn decrypted_layout(
    store: &Store,
    g: &Generation,
    ids: &Identities,
) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let name = g.sealed_name(crate::backup::generation::LAYOUT_FILE);
    let path = store.gen_dir(&g.id).join(&name);
    let data = crate::util::read_regular(&path, &name, 64 << 20)?;
    let clear = ids.open(
        &data,
        &format!("layout of generation {}", g.id),
        Expect::Opened,
    )?;
    let dir = if Path::new("/run").is_dir() {
        PathBuf::from("/run")
    } else {
        std::env::temp_dir()
    };
    let mut f = tempfile::Builder::new()
        .prefix(".lifeboat-layout-")
        .suffix(".json")
        .tempfile_in(dir)
        .context("creating a private copy of the layout")?;
    f.write_all(&clear)
        .context("writing a private copy of the layout")?;
    Ok(f)
}

/// A backup opened for recovery: its newest generation with its chain.
pub struct Backup {
    dest: Destination,
    store: Store,
    generation: Generation,
    manifest: Manifest,
    /// The decrypted layout of an encrypted generation (private, in /run).
    layout_copy: Option<tempfile::NamedTempFile>,
}

/// What the restore step did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreSummary {
    pub generation: String,
    /// Files written, each checked against its SHA-256 in the manifest.
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

impl RestoreSummary {
    pub fn ok(&self) -> bool {
        self.files > 0 || self.bytes == 0
    }

    pub fn describe(&self) -> String {
        format!(
            "restored {} files ({}) from generation {} in {:.0}s, every checksum verified{}",
            self.files,
            crate::util::human_bytes(self.bytes),
            self.generation,
            self.seconds,
            if self.warnings.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} warnings (first: {})",
                    self.warnings.len(),
                    self.warnings[0]
                )
            }
        )
    }
}

impl Backup {
    /// Opens a backup folder or URL (mounting it) and checks its newest
    /// generation's chain.
    pub fn open(spec: &str) -> Result<Backup> {
        Backup::open_at(spec, None)
    }

    /// Opens generation `id` (the newest when `None`) of a backup.
    pub fn open_at(spec: &str, id: Option<&str>) -> Result<Backup> {
        Backup::open_with(spec, id, &|| {
            bail!("the backup is encrypted: give --identity FILE")
        })
    }

    /// Opens generation `id` (the newest when `None`); `identity` is asked
    /// for the identity only when the generation is encrypted.
    pub fn open_with(
        spec: &str,
        id: Option<&str>,
        identity: &dyn Fn() -> Result<Arc<Identities>>,
    ) -> Result<Backup> {
        let dest = Destination::open(spec, None, false)?;
        let mut store = Store::new(&dest.path);
        if store.pick(id)?.encryption.is_some() {
            store = Store::with_identities(&dest.path, Some(identity()?));
        }
        let (generation, manifest, _) = restore::load_chain(&store, id)
            .with_context(|| format!("reading the backup in {spec}"))?;
        let layout_copy = match (&store.ids, generation.has_layout) {
            (Some(ids), true) => Some(decrypted_layout(&store, &generation, ids)?),
            _ => None,
        };
        Ok(Backup {
            dest,
            store,
            generation,
            manifest,
            layout_copy,
        })
    }

    pub fn generation_id(&self) -> &str {
        &self.generation.id
    }

    pub fn display(&self) -> String {
        format!("{} (generation {})", self.dest.spec, self.generation.id)
    }

    /// The layout stored with the generation.
    pub fn layout_path(&self) -> Option<PathBuf> {
        if let Some(t) = &self.layout_copy {
            return Some(t.path().to_path_buf());
        }
        let p = self.store.gen_dir(&self.generation.id).join("layout.json");
        (self.generation.has_layout && p.is_file()).then_some(p)
    }

    /// Bytes in use per file system of `layout` at backup time, keyed like
    /// the planner's minimums (UUID, else device).
    /// The mount points of the file systems the backup holds.
    pub fn mountpoints(&self) -> Vec<String> {
        self.manifest
            .filesystems
            .iter()
            .map(|f| f.mountpoint.to_string())
            .collect()
    }

    pub fn used_bytes(&self, layout: &crate::layout::Layout) -> BTreeMap<String, u64> {
        crate::backup::used_bytes_by_fs(&self.manifest, layout)
    }

    /// Whether the backup holds `abs` (an absolute path in the backed-up
    /// system), as a file or a folder with something in it.
    pub fn has_path(&self, abs: &str) -> bool {
        let abs = abs.as_bytes();
        self.manifest.filesystems.iter().any(|fs| {
            let mp = fs.mountpoint.as_bytes();
            let mp = if mp == b"/" { &b""[..] } else { mp };
            let Some(rel) = abs.strip_prefix(mp).and_then(|r| r.strip_prefix(b"/")) else {
                return false;
            };
            fs.entries.iter().any(|e| {
                let p = e.path.as_bytes();
                p == rel || (p.starts_with(rel) && p.get(rel.len()) == Some(&b'/'))
            })
        })
    }

    /// The kernel name of the block device holding the backup (`sdb1`), if
    /// it is on a local block device.
    pub fn device_kname(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(&self.dest.path).ok()?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        if major == 0 {
            return None;
        }
        let link = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        link.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// Restores the generation and its chain into `root`.
    pub fn restore_into(&self, root: &Path, dry_run: bool) -> Result<RestoreSummary> {
        if dry_run {
            return Ok(RestoreSummary {
                generation: self.generation.id.clone(),
                files: 0,
                bytes: 0,
                seconds: 0.0,
                warnings: vec!["dry run: nothing restored".into()],
            });
        }
        let report = restore(&RestoreOptions {
            from: self.dest.path.clone(),
            to: root.to_path_buf(),
            generation: Some(self.generation.id.clone()),
            paths: Vec::new(),
            // A re-run after a failure finds the files of the first attempt.
            overwrite: true,
            no_same_owner: false,
            no_devices: false,
            progress: progress::Mode::Auto,
            ids: self.store.ids.clone(),
        })?;
        Ok(RestoreSummary {
            generation: report.generation,
            files: report.files,
            bytes: report.bytes,
            seconds: report.seconds,
            warnings: report.warnings,
        })
    }
}
