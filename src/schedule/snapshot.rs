//! Layout snapshots: `STATE/snapshots/TIMESTAMP.json`, one per change.
//!
//! A snapshot is stored only when the captured layout differs from the
//! newest one by identity (as `layout diff` decides), so the folder is a
//! history of changes, not of runs. The newest N are kept; a snapshot that
//! a rescue image was built from is never removed, so that drift can always
//! be measured against it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::layout::{self, Change, Layout};
use crate::util;

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// `20261126T055726Z` (a second snapshot in the same second: `...Z-2`).
    pub id: String,
    pub path: PathBuf,
}

impl Snapshot {
    /// The capture time, from the id.
    pub fn epoch(&self) -> Option<i64> {
        parse_stamp(&self.id)
    }

    pub fn load(&self) -> Result<Layout> {
        Layout::load(&self.path)
    }
}

/// Epoch seconds of a `20261126T055726Z` stamp (a `-N` suffix is ignored).
pub fn parse_stamp(id: &str) -> Option<i64> {
    let base = id.split('-').next()?;
    let b = base.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let t = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &base[0..4],
        &base[4..6],
        &base[6..8],
        &base[9..11],
        &base[11..13],
        &base[13..15]
    );
    util::parse_rfc3339(&t).ok()
}

/// Sort key of an id: the stamp, then the same-second counter.
fn order_key(id: &str) -> (String, u32) {
    match id.split_once('-') {
        Some((base, n)) => (base.to_string(), n.parse().unwrap_or(0)),
        None => (id.to_string(), 1),
    }
}

fn is_snapshot_id(id: &str) -> bool {
    let (base, n) = id.split_once('-').unwrap_or((id, "2"));
    parse_stamp(base).is_some() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())
}

/// What [`SnapshotStore::record`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// The snapshot written by this run (`None`: the layout was unchanged).
    pub stored: Option<Snapshot>,
    /// The newest snapshot before this run.
    pub previous: Option<Snapshot>,
    /// Changes from `previous` to the captured layout.
    pub changes: Vec<Change>,
    /// Ids removed by retention.
    pub pruned: Vec<String>,
}

impl Recorded {
    /// The newest snapshot after the run.
    pub fn newest(&self) -> Option<&Snapshot> {
        self.stored.as_ref().or(self.previous.as_ref())
    }
}

/// The snapshots folder.
pub struct SnapshotStore {
    pub dir: PathBuf,
}

impl SnapshotStore {
    pub fn new(dir: &Path) -> SnapshotStore {
        SnapshotStore {
            dir: dir.to_path_buf(),
        }
    }

    /// Every snapshot, oldest first. A missing folder is no snapshots.
    pub fn list(&self) -> Result<Vec<Snapshot>> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading snapshot folder {}", self.dir.display()))
            }
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.with_context(|| format!("reading {}", self.dir.display()))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if is_snapshot_id(id) {
                    out.push(Snapshot {
                        id: id.to_string(),
                        path: ent.path(),
                    });
                }
            }
        }
        out.sort_by_key(|s| order_key(&s.id));
        Ok(out)
    }

    pub fn newest(&self) -> Result<Option<Snapshot>> {
        Ok(self.list()?.pop())
    }

    /// A snapshot by id, `latest` or `previous` (the one before latest).
    pub fn resolve(&self, name: &str) -> Result<Snapshot> {
        let all = self.list()?;
        let n = all.len();
        let found = match name {
            "latest" => all.last().cloned(),
            "previous" => (n >= 2).then(|| all[n - 2].clone()),
            id => all.iter().find(|s| s.id == id).cloned(),
        };
        match found {
            Some(s) => Ok(s),
            None if n == 0 => bail!(
                "no snapshots in {}; take one with `lifeboat snapshot`",
                self.dir.display()
            ),
            None if name == "previous" => bail!(
                "there is only one snapshot in {}, so no `previous`",
                self.dir.display()
            ),
            None => bail!(
                "no snapshot {name:?} in {}; see `lifeboat snapshot list` (or use latest, previous)",
                self.dir.display()
            ),
        }
    }

    /// A free id for a snapshot taken at `epoch`.
    fn new_id(&self, epoch: i64) -> String {
        let base = util::stamp(epoch);
        let mut id = base.clone();
        let mut n = 2;
        while self.dir.join(format!("{id}.json")).exists() {
            id = format!("{base}-{n}");
            n += 1;
        }
        id
    }

    /// Stores `layout` when it differs from the newest snapshot, then keeps
    /// the newest `keep` (and every path in `protect`).
    pub fn record(
        &self,
        layout: &Layout,
        epoch: i64,
        keep: usize,
        protect: &[PathBuf],
    ) -> Result<Recorded> {
        let previous = self.newest()?;
        let changes = match &previous {
            Some(p) => layout::diff(&p.load()?, layout),
            None => Vec::new(),
        };
        if previous.is_some() && changes.is_empty() {
            return Ok(Recorded {
                stored: None,
                previous,
                changes,
                pruned: Vec::new(),
            });
        }
        std::fs::create_dir_all(&self.dir).with_context(|| {
            format!(
                "creating snapshot folder {}; choose another state folder with --state-dir",
                self.dir.display()
            )
        })?;
        let id = self.new_id(epoch);
        let path = self.dir.join(format!("{id}.json"));
        util::write_atomic(&path, layout.to_json().as_bytes(), 0o600)?;
        let mut protect = protect.to_vec();
        protect.push(path.clone());
        let pruned = self.prune(keep, &protect)?;
        Ok(Recorded {
            stored: Some(Snapshot { id, path }),
            previous,
            changes,
            pruned,
        })
    }

    /// Removes all but the newest `keep` snapshots, never one in `protect`.
    /// Returns the removed ids, oldest first.
    pub fn prune(&self, keep: usize, protect: &[PathBuf]) -> Result<Vec<String>> {
        let all = self.list()?;
        let surplus = all.len().saturating_sub(keep.max(1));
        let mut removed = Vec::new();
        for s in &all[..surplus] {
            if protect.iter().any(|p| same_file(p, &s.path)) {
                continue;
            }
            std::fs::remove_file(&s.path)
                .with_context(|| format!("removing old snapshot {}", s.path.display()))?;
            removed.push(s.id.clone());
        }
        Ok(removed)
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::diff::tests::machine;

    const T0: i64 = 1_795_672_646; // 2026-11-26T05:57:26Z

    fn ids(store: &SnapshotStore) -> Vec<String> {
        store.list().unwrap().into_iter().map(|s| s.id).collect()
    }

    #[test]
    fn stores_only_changes_and_reports_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(&dir.path().join("snapshots"));
        assert!(store.list().unwrap().is_empty());
        let first = store.record(&machine(), T0, 5, &[]).unwrap();
        assert_eq!(first.stored.as_ref().unwrap().id, "20261126T055726Z");
        assert!(first.previous.is_none() && first.changes.is_empty());

        // Same identities, another capture time and kernel names: unchanged.
        let mut same = machine();
        same.captured_at = "2026-11-27T00:00:00Z".into();
        let r = store.record(&same, T0 + 60, 5, &[]).unwrap();
        assert!(r.stored.is_none());
        assert_eq!(r.newest().unwrap().id, "20261126T055726Z");

        let mut grown = machine();
        grown.lvm.lvs[0].size_bytes = 3 << 30;
        let r = store.record(&grown, T0 + 120, 5, &[]).unwrap();
        assert_eq!(r.stored.as_ref().unwrap().id, "20261126T055926Z");
        assert_eq!(r.previous.as_ref().unwrap().id, "20261126T055726Z");
        assert_eq!(r.changes.len(), 1);
        assert!(r.changes[0].message.contains("vg0/root"), "{:?}", r.changes);
        // Files are private: layouts name every disk and key slot.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&r.stored.unwrap().path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn same_second_ids_sort_after_their_base() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        let mut l = machine();
        for i in 0..11u64 {
            l.lvm.lvs[0].size_bytes = (i + 1) << 30;
            store.record(&l, T0, 100, &[]).unwrap();
        }
        let all = ids(&store);
        assert_eq!(all[0], "20261126T055726Z");
        assert_eq!(all[1], "20261126T055726Z-2");
        assert_eq!(all[10], "20261126T055726Z-11");
        assert_eq!(store.resolve("latest").unwrap().id, "20261126T055726Z-11");
        assert_eq!(store.resolve("previous").unwrap().id, "20261126T055726Z-10");
        assert_eq!(parse_stamp("20261126T055726Z-11"), Some(T0));
        // Leftovers of an interrupted write and foreign files are not snapshots.
        std::fs::write(dir.path().join(".20261126T055726Z.json.x1Yz2W.tmp"), "x").unwrap();
        std::fs::write(dir.path().join("notes.json"), "x").unwrap();
        assert_eq!(store.list().unwrap().len(), 11);
    }

    #[test]
    fn retention_keeps_the_newest_and_the_protected() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        let mut l = machine();
        for i in 0..4i64 {
            l.lvm.lvs[0].size_bytes = (i as u64 + 1) << 30;
            let r = store.record(&l, T0 + i * 3600, 10, &[]).unwrap();
            assert!(r.pruned.is_empty());
        }
        let before = store.list().unwrap();
        // The rescue image was built from the second oldest.
        let protect = vec![before[1].path.clone()];
        l.lvm.lvs[0].size_bytes = 9 << 30;
        let r = store.record(&l, T0 + 4 * 3600, 2, &protect).unwrap();
        assert_eq!(r.pruned, vec![before[0].id.clone(), before[2].id.clone()]);
        assert_eq!(
            ids(&store),
            vec![
                before[1].id.clone(),
                before[3].id.clone(),
                r.stored.unwrap().id
            ]
        );
        // keep = 1 never removes the snapshot just written.
        store.prune(1, &[]).unwrap();
        assert_eq!(ids(&store), vec!["20261126T095726Z".to_string()]);
    }

    #[test]
    fn resolve_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::new(dir.path());
        let e = store.resolve("latest").unwrap_err().to_string();
        assert!(e.contains("no snapshots in"), "{e}");
        store.record(&machine(), T0, 5, &[]).unwrap();
        let e = store.resolve("previous").unwrap_err().to_string();
        assert!(e.contains("only one snapshot"), "{e}");
        let e = store.resolve("2020").unwrap_err().to_string();
        assert!(e.contains("no snapshot \"2020\""), "{e}");
    }
}
