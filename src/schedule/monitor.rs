//! What `lifeboat status` and `lifeboat check` look at: the newest
//! snapshot, the rescue image (`rescue.json`), the newest backup and its
//! verification, the last scheduled run, and whether the layout drifted
//! since the image was built.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::snapshot::{Snapshot, SnapshotStore};
use super::state::LastRun;
use crate::backup::{self, dest::Destination, Generation, VerifyRecord};
use crate::config::Config;
use crate::layout::{self, Change, Layout};
use crate::rescue::{sha256_file, BuildRecord, BUILD_RECORD};
use crate::util;

/// Whether the layout built into the rescue image still describes the
/// machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Drift {
    /// No change by identity; `against` names what was compared.
    Same { against: String },
    Drifted {
        against: String,
        changes: Vec<Change>,
    },
    /// Cannot tell (no image, no layout in it, nothing to compare with).
    Unknown { reason: String },
}

impl Drift {
    pub fn perf(&self) -> &'static str {
        match self {
            Drift::Same { .. } => "0",
            Drift::Drifted { .. } => "1",
            Drift::Unknown { .. } => "U",
        }
    }
}

/// The layout a rescue image was built with: the file named in
/// `rescue.json` if it still has the recorded SHA-256, else the snapshot
/// that has it. Returns the layout and the file it was read from.
pub fn image_layout(
    rec: &BuildRecord,
    snapshots: &SnapshotStore,
) -> Result<(Layout, PathBuf), String> {
    let (Some(path), Some(sha)) = (&rec.layout, &rec.layout_sha256) else {
        return Err(
            "the rescue image has no layout built in (built without --layout or rescue.layout)"
                .into(),
        );
    };
    let path = PathBuf::from(path);
    let mut candidates = vec![path.clone()];
    if let Ok(list) = snapshots.list() {
        candidates.extend(list.into_iter().rev().map(|s| s.path));
    }
    for c in candidates {
        if sha256_file(&c).ok().as_deref() == Some(sha.as_str()) {
            return Layout::load(&c)
                .map(|l| (l, c.clone()))
                .map_err(|e| format!("{e:#}"));
        }
    }
    Err(format!(
        "the layout built into the rescue image ({}) has changed or is gone since the build, \
         and no snapshot has its SHA-256",
        path.display()
    ))
}

/// Compares the image's layout with `current` (read from `current_path`
/// when it is a file: a byte-identical file is no drift without parsing).
pub fn drift(
    rec: &BuildRecord,
    snapshots: &SnapshotStore,
    current: &Layout,
    current_path: Option<&Path>,
    against: &str,
) -> Drift {
    if let (Some(p), Some(sha)) = (current_path, &rec.layout_sha256) {
        if sha256_file(p).ok().as_deref() == Some(sha.as_str()) {
            return Drift::Same {
                against: against.to_string(),
            };
        }
    }
    match image_layout(rec, snapshots) {
        Ok((old, _)) => {
            let changes = layout::diff(&old, current);
            if changes.is_empty() {
                Drift::Same {
                    against: against.to_string(),
                }
            } else {
                Drift::Drifted {
                    against: against.to_string(),
                    changes,
                }
            }
        }
        Err(reason) => Drift::Unknown { reason },
    }
}

/// The newest snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotFacts {
    pub id: String,
    pub path: PathBuf,
    pub taken_at: Option<String>,
    #[serde(skip)]
    pub epoch: Option<i64>,
    /// Snapshots kept.
    pub count: usize,
}

/// The rescue image.
#[derive(Debug, Clone, Serialize)]
pub struct RescueFacts {
    pub output: PathBuf,
    /// `rescue.json`; `None` when there is no image.
    pub record: Option<BuildRecord>,
    #[serde(skip)]
    pub built_epoch: Option<i64>,
    /// `rescue.json` could not be read.
    pub error: Option<String>,
}

/// The newest backup generation and its last verification.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum BackupFacts {
    /// No backup.destination in the configuration.
    NotConfigured,
    Unreadable {
        destination: String,
        error: String,
    },
    Empty {
        destination: String,
    },
    Found {
        destination: String,
        generation: Box<Generation>,
        #[serde(skip)]
        finished_epoch: Option<i64>,
        verify: Option<VerifyRecord>,
        /// Damage in the chain the newest generation needs.
        chain_damage: Vec<String>,
    },
}

/// Everything monitoring looks at, at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub checked_at: String,
    #[serde(skip)]
    pub now: i64,
    pub snapshot: Option<SnapshotFacts>,
    /// Reading the snapshot folder failed.
    pub snapshot_error: Option<String>,
    pub rescue: RescueFacts,
    /// The copy of the image off the host (`rescue.destination`).
    pub rescue_copy: crate::rescue::copy::CopyFacts,
    pub backup: BackupFacts,
    pub drift: Drift,
    pub last_run: Option<LastRun>,
    /// The recovery drills (`STATE/drills`).
    pub drill: crate::drill::report::DrillFacts,
}

fn epoch_of(t: &str) -> Option<i64> {
    util::parse_rfc3339(t).ok()
}

/// Reads `rescue.json` of `output`; `Ok(None)` when there is no image.
pub fn read_rescue(output: &Path) -> RescueFacts {
    let mut f = RescueFacts {
        output: output.to_path_buf(),
        record: None,
        built_epoch: None,
        error: None,
    };
    if !output.join(BUILD_RECORD).exists() {
        return f;
    }
    match BuildRecord::load(output) {
        Ok(r) => {
            f.built_epoch = epoch_of(&r.built_at);
            f.record = Some(r);
        }
        Err(e) => f.error = Some(format!("{e:#}")),
    }
    f
}

/// Reads the newest generation of the configured backup folder (mounting
/// an NFS or CIFS destination for the moment), or of the restic or Borg
/// repository (repository.rs).
pub fn read_backup(cfg: &Config) -> BackupFacts {
    let Some(spec) = cfg.backup.destination.value.clone() else {
        return BackupFacts::NotConfigured;
    };
    if crate::backup::engine::Repo::split(&spec).is_some() {
        return super::repository::read(cfg, &spec);
    }
    let opened = Destination::open(&spec, cfg.backup.mount_options.value.as_deref(), false);
    let dest = match opened {
        Ok(d) => d,
        Err(e) if !spec.contains("://") && !Path::new(&spec).exists() => {
            log::debug!("backup folder: {e:#}");
            return BackupFacts::Empty { destination: spec };
        }
        Err(e) => {
            return BackupFacts::Unreadable {
                destination: spec,
                error: format!("{e:#}"),
            }
        }
    };
    match backup::status(&dest.path) {
        Ok(st) => match st.newest {
            None => BackupFacts::Empty { destination: spec },
            Some(g) => BackupFacts::Found {
                destination: spec,
                finished_epoch: epoch_of(&g.finished_at),
                generation: Box::new(g),
                verify: st.last_verify,
                chain_damage: st.chain_damage,
            },
        },
        Err(e) => BackupFacts::Unreadable {
            destination: spec,
            error: format!("{e:#}"),
        },
    }
}

/// Gathers the facts. With `live`, drift is measured against a capture of
/// the running system; else against the newest snapshot (a live capture
/// when there is none).
pub fn gather(cfg: &Config, live: bool, now: i64) -> Facts {
    let store = SnapshotStore::new(&cfg.snapshot_dir());
    let (snapshot, snapshot_error) = match store.list() {
        Ok(list) => (
            list.last().map(|s: &Snapshot| SnapshotFacts {
                id: s.id.clone(),
                path: s.path.clone(),
                taken_at: s.epoch().map(util::rfc3339),
                epoch: s.epoch(),
                count: list.len(),
            }),
            None,
        ),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let rescue = read_rescue(&cfg.rescue.output.value);
    let backup = read_backup(cfg);
    let drift = match (&rescue.record, &rescue.error) {
        (_, Some(e)) => Drift::Unknown { reason: e.clone() },
        (None, None) => Drift::Unknown {
            reason: "there is no rescue image".into(),
        },
        (Some(rec), None) => match (&snapshot, live) {
            (Some(s), false) => match Layout::load(&s.path) {
                Ok(l) => drift(
                    rec,
                    &store,
                    &l,
                    Some(&s.path),
                    &format!("snapshot {}", s.id),
                ),
                Err(e) => Drift::Unknown {
                    reason: format!("{e:#}"),
                },
            },
            _ => match layout::capture(&cfg.capture_options()) {
                Ok(l) => drift(rec, &store, &l, None, "live capture"),
                Err(e) => Drift::Unknown {
                    reason: format!("capturing the layout failed: {e:#}"),
                },
            },
        },
    };
    Facts {
        checked_at: util::rfc3339(now),
        now,
        snapshot,
        snapshot_error,
        rescue_copy: crate::rescue::copy::facts(
            cfg.rescue.destination.value.as_deref(),
            &rescue.output,
            rescue.record.as_ref(),
        ),
        rescue,
        backup,
        drift,
        last_run: LastRun::load(&cfg.state_dir.value),
        drill: crate::drill::report::DrillFacts::gather(&cfg.state_dir.value),
    }
}
