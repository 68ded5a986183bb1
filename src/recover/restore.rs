//! The backup side of recovery: finding the generation to restore (and the
//! layout and per-file-system usage it carries), and restoring its chain into
//! the new tree with every file's checksum checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::backup::dest::Destination;
use crate::backup::engine;
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
    from: From,
    generation: Generation,
    manifest: Manifest,
    /// The decrypted layout of an encrypted generation (private, in /run).
    layout_copy: Option<tempfile::NamedTempFile>,
    /// Which generation `--at` picked, in words (for the caller to show).
    pub picked_at: Option<String>,
}

/// Where a backup lives: a backup folder, or a restic/Borg repository
/// (with its layout read out into a temporary folder).
enum From {
    Folder {
        dest: Destination,
        store: Store,
    },
    Repository {
        repo: engine::Repo,
        meta: engine::MetaRef,
        layout: Option<tempfile::TempDir>,
    },
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

/// Whether `manifest` holds `abs` (an absolute path in the backed-up
/// system) as something other than a folder, or anything below it: an
/// empty folder is not what a check for GRUB's modules wants to find. Each
/// file system answers for the paths under its mount point.
pub fn manifest_has_path(manifest: &Manifest, abs: &str) -> bool {
    use crate::backup::manifest::Kind;
    let abs = abs.trim_end_matches('/').as_bytes();
    manifest.filesystems.iter().any(|fs| {
        let mp = fs.mountpoint.0.as_slice();
        let mp = if mp == b"/" { &b""[..] } else { mp };
        let Some(rel) = abs.strip_prefix(mp).and_then(|r| r.strip_prefix(b"/")) else {
            return false;
        };
        fs.entries.iter().any(|e| {
            let p = e.path.0.as_slice();
            (p == rel && e.kind != Kind::Dir)
                || (p.starts_with(rel) && p.get(rel.len()) == Some(&b'/'))
        })
    })
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
        Backup::open_at(spec, None, &engine::Settings::default())
    }

    /// Opens generation `id` (the newest when `None`) of a backup;
    /// `settings` are the credentials of a restic/Borg repository.
    pub fn open_at(spec: &str, id: Option<&str>, settings: &engine::Settings) -> Result<Backup> {
        Backup::open_pick(spec, id, None, settings, &|| {
            bail!("the backup is encrypted: give --identity FILE")
        })
    }

    /// Opens generation `id`, else the newest started at or before `at`
    /// (`--at`, saying which in [`Backup::picked_at`]), else the newest; `identity` is
    /// asked for the identity only when the generation is encrypted.
    pub fn open_pick(
        spec: &str,
        id: Option<&str>,
        at: Option<&str>,
        settings: &engine::Settings,
        identity: &dyn Fn() -> Result<Arc<Identities>>,
    ) -> Result<Backup> {
        if engine::Repo::split(spec).is_some() {
            if at.is_some() {
                bail!(
                    "--at works on backup folders only; for the repository {spec} name the \
                     generation (lifeboat backup list --from {spec})"
                );
            }
            return Backup::open_repository(spec, id, settings);
        }
        let dest = Destination::open(spec, None, false)?;
        let mut store = Store::new(&dest.path);
        let (picked, picked_at) = match (id, at) {
            (None, Some(at)) => {
                let (g, line) = store.pick_at(at)?;
                (Some(g.id), Some(line))
            }
            _ => (id.map(String::from), None),
        };
        if store.pick(picked.as_deref())?.encryption.is_some() {
            store = Store::with_identities(&dest.path, Some(identity()?));
        }
        let (generation, manifest, _) = restore::load_chain(&store, picked.as_deref())
            .with_context(|| format!("reading the backup in {spec}"))?;
        let layout_copy = match (&store.ids, generation.has_layout) {
            (Some(ids), true) => Some(decrypted_layout(&store, &generation, ids)?),
            _ => None,
        };
        Ok(Backup {
            from: From::Folder { dest, store },
            generation,
            manifest,
            layout_copy,
            picked_at,
        })
    }

    fn open_repository(
        spec: &str,
        id: Option<&str>,
        settings: &engine::Settings,
    ) -> Result<Backup> {
        let repo = engine::Repo::open(spec, settings)?;
        let meta = engine::ops::pick(&repo, id)?;
        let loaded = engine::ops::load(&repo, &meta)?;
        let layout = if loaded.generation.has_layout {
            let dir = tempfile::tempdir().context("creating a temporary folder")?;
            let data = repo.read_meta(&meta, crate::backup::generation::LAYOUT_FILE)?;
            let p = dir.path().join("layout.json");
            std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
            Some(dir)
        } else {
            None
        };
        Ok(Backup {
            from: From::Repository { repo, meta, layout },
            generation: loaded.generation,
            manifest: loaded.manifest,
            layout_copy: None,
            picked_at: None,
        })
    }

    pub fn generation_id(&self) -> &str {
        &self.generation.id
    }

    pub fn display(&self) -> String {
        let spec = match &self.from {
            From::Folder { dest, .. } => dest.spec.clone(),
            From::Repository { repo, .. } => repo.spec(),
        };
        format!("{spec} (generation {})", self.generation.id)
    }

    /// The layout stored with the generation.
    pub fn layout_path(&self) -> Option<PathBuf> {
        if let Some(t) = &self.layout_copy {
            return Some(t.path().to_path_buf());
        }
        let p = match &self.from {
            From::Folder { store, .. } => store.gen_dir(&self.generation.id).join("layout.json"),
            From::Repository { layout, .. } => layout.as_ref()?.path().join("layout.json"),
        };
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
        manifest_has_path(&self.manifest, abs)
    }

    /// The kernel name of the block device holding the backup (`sdb1`), if
    /// it is on a local block device.
    pub fn device_kname(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let From::Folder { dest, .. } = &self.from else {
            return None;
        };
        let dev = std::fs::metadata(&dest.path).ok()?.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        if major == 0 {
            return None;
        }
        let link = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        link.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// Restores the generation and its chain into `root`.
    pub fn restore_into(&self, root: &Path, gate: &crate::exec::Gate) -> Result<RestoreSummary> {
        if !gate.allow(format_args!(
            "restore generation {} into {}",
            self.generation.id,
            root.display()
        )) {
            return Ok(RestoreSummary {
                generation: self.generation.id.clone(),
                files: 0,
                bytes: 0,
                seconds: 0.0,
                warnings: vec!["dry run: nothing restored".into()],
            });
        }
        let (dest, store) = match &self.from {
            From::Folder { dest, store } => (dest, store),
            From::Repository { repo, meta, .. } => return self.restore_engine(repo, meta, root),
        };
        let report = restore(&RestoreOptions {
            from: dest.path.clone(),
            to: root.to_path_buf(),
            generation: Some(self.generation.id.clone()),
            paths: Vec::new(),
            // A re-run after a failure finds the files of the first attempt.
            overwrite: true,
            no_same_owner: false,
            no_devices: false,
            progress: progress::Mode::Auto,
            ids: store.ids.clone(),
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

impl Backup {
    /// A restic/Borg generation through the engine, every file then checked
    /// against the manifest.
    fn restore_engine(
        &self,
        repo: &engine::Repo,
        meta: &engine::MetaRef,
        root: &Path,
    ) -> Result<RestoreSummary> {
        let r = engine::restore(
            repo,
            &engine::EngineRestore {
                generation: Some(meta.generation.clone()),
                to: root.to_path_buf(),
                paths: Vec::new(),
                // A re-run after a failure finds the files of the first attempt.
                overwrite: true,
            },
        )?;
        Ok(RestoreSummary {
            generation: r.generation,
            files: r.files,
            bytes: r.bytes,
            seconds: r.seconds,
            warnings: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::manifest::{FileRecord, FsManifest, Kind, PathBytes};

    fn record(path: &str, kind: Kind) -> FileRecord {
        FileRecord {
            path: PathBytes(path.as_bytes().to_vec()),
            kind,
            size: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 1,
            sha256: None,
            xattrs: None,
            link: None,
            target: None,
            rdev: None,
            sparse: false,
            gen: "g1".into(),
        }
    }

    fn fs(mountpoint: &str, entries: &[(&str, Kind)]) -> FsManifest {
        FsManifest {
            mountpoint: PathBytes(mountpoint.as_bytes().to_vec()),
            archive: "a.tar.zst".into(),
            fstype: None,
            device: None,
            used_bytes: 0,
            data_bytes: 0,
            allocated_bytes: 0,
            file_count: entries.len() as u64,
            entries: entries.iter().map(|(p, k)| record(p, *k)).collect(),
            deleted: Vec::new(),
        }
    }

    #[test]
    fn has_path_looks_under_the_right_mount_point_and_skips_empty_folders() {
        let m = Manifest {
            format: 1,
            generation: "g1".into(),
            filesystems: vec![
                fs(
                    "/",
                    &[
                        (".", Kind::Dir),
                        ("usr/lib/grub", Kind::Dir),
                        ("usr/lib/grub/i386-pc", Kind::Dir),
                        ("usr/lib/grub/i386-pc/boot.img", Kind::File),
                        // An empty folder, as a removed package leaves.
                        ("usr/lib/grub/x86_64-efi", Kind::Dir),
                        ("etc/fstab", Kind::File),
                    ],
                ),
                fs(
                    "/boot",
                    &[(".", Kind::Dir), ("grub/x86_64-efi/core.efi", Kind::File)],
                ),
            ],
        };
        let has = |p: &str| manifest_has_path(&m, p);
        assert!(has("/usr/lib/grub/i386-pc"));
        assert!(has("/usr/lib/grub/i386-pc/"));
        assert!(has("/etc/fstab"), "a file");
        assert!(!has("/usr/lib/grub/x86_64-efi"), "an empty folder");
        assert!(
            !has("/usr/lib/grub/i386"),
            "a name's prefix is not the name"
        );
        assert!(
            has("/boot/grub/x86_64-efi"),
            "found on /boot's own file system"
        );
        assert!(!has("/bootx/grub/x86_64-efi"));
        assert!(!has("/boot/grub/i386-pc"));
        assert!(!has("/srv"));
    }
}
