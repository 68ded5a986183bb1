//! The scheduled run, `status` and `check` on a restic or Borg repository
//! (`backup.destination = "restic:..."` / `"borg:..."`): the backup goes
//! through the engine code (src/backup/engine) with the configuration's
//! exclusions and `backup.keep`; monitoring reads this host's newest
//! lifeboat generation from the repository, and the outcome of the last
//! `backup verify` of it from `STATE/repository-verify/`, where
//! `backup verify --from restic:...|borg:...` records it (a repository is
//! shared and holds no lifeboat files to write a verify record beside).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::monitor::BackupFacts;
use crate::backup::engine::{self, ops, EngineCreate, MetaRef, Repo, Settings};
use crate::backup::generation::{Generation, VerifyRecord, GENERATION_FILE};
use crate::backup::{self};
use crate::config::Config;
use crate::util;

/// The folder of verify records below the state folder.
pub const VERIFY_DIR: &str = "repository-verify";

/// The outcome of the last `backup verify` of one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoVerify {
    /// The repository as configured (`restic:/srv/repo`).
    pub repository: String,
    pub verified_at: String,
    pub deep: bool,
    pub ok: bool,
    pub problem: Option<String>,
    /// The generations checked (before the first damage, when not ok).
    pub generations: Vec<String>,
    pub files_checked: u64,
}

impl RepoVerify {
    /// `STATE/repository-verify/SHA16.json`: named by the repository
    /// string's SHA-256 (it may hold a user name or an URL).
    pub fn path(state_dir: &Path, spec: &str) -> PathBuf {
        let sha = backup::sha256_hex(spec.as_bytes());
        state_dir
            .join(VERIFY_DIR)
            .join(format!("{}.json", &sha[..16]))
    }

    pub fn load(state_dir: &Path, spec: &str) -> Option<RepoVerify> {
        let text = std::fs::read_to_string(Self::path(state_dir, spec)).ok()?;
        serde_json::from_str::<RepoVerify>(&text)
            .ok()
            .filter(|r| r.repository == spec)
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let path = Self::path(state_dir, &self.repository);
        let dir = state_dir.join(VERIFY_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = format!("{}\n", serde_json::to_string_pretty(self)?);
        util::write_atomic(&path, json.as_bytes(), 0o600)
    }

    /// What this record says about generation `id`: a failed verify
    /// counts for every generation (the repository's data is shared)
    /// until a later one passes; a passed one for the generations it
    /// checked.
    pub fn about(&self, id: &str) -> Option<VerifyRecord> {
        if self.ok && !self.generations.iter().any(|g| g == id) {
            return None;
        }
        Some(VerifyRecord {
            verified_at: self.verified_at.clone(),
            deep: self.deep,
            ok: self.ok,
            problem: self.problem.clone(),
            files_checked: self.files_checked,
            problems: self.problem.iter().cloned().collect(),
            damaged_files: Vec::new(),
        })
    }
}

/// Records the outcome of `backup verify` of `repo` in the state folder;
/// a failure to record is logged, never the verify's failure.
pub fn record_verify(state_dir: &Path, repo: &Repo, rep: &ops::EngineVerifyReport) {
    let rec = RepoVerify {
        repository: repo.spec(),
        verified_at: util::rfc3339(util::now_epoch()),
        deep: rep.deep,
        ok: rep.problem.is_none(),
        problem: rep.problem.clone(),
        generations: rep.generations.clone(),
        files_checked: rep.files_checked,
    };
    if let Err(e) = rec.save(state_dir) {
        log::warn!("cannot record the verify for `lifeboat status`: {e:#}");
    }
}

/// What the scheduled backup wrote.
pub struct Written {
    pub report: ops::EngineReport,
    pub spec: String,
}

/// The scheduled backup into a repository: the file systems of the
/// layout `layout_path`, with the configuration's exclusions and
/// retention (`backup.keep`, `backup.keep_*`).
pub fn backup(cfg: &Config, repo: &Repo, layout_path: &Path) -> Result<Written> {
    let (sources, excludes) = super::run::sources_and_excludes(cfg, layout_path)?;
    let opts = EngineCreate {
        sources,
        layout_file: Some(layout_path.to_path_buf()),
        excludes,
        retention: cfg.backup.retention(),
        progress: crate::backup::progress::Mode::Quiet,
    };
    let report =
        engine::create(repo, &opts).with_context(|| format!("backing up to {}", repo.spec()))?;
    Ok(Written {
        report,
        spec: repo.spec(),
    })
}

/// This host's newest lifeboat generation in repository `spec`, with the
/// last verify of it. Newer generations whose record is unreadable are
/// damage.
pub fn read(cfg: &Config, spec: &str) -> BackupFacts {
    let unreadable = |e: anyhow::Error| BackupFacts::Unreadable {
        destination: spec.to_string(),
        error: format!("{e:#}"),
    };
    let repo = match Repo::open(spec, &Settings::from_config(cfg)) {
        Ok(r) => r,
        Err(e) => return unreadable(e),
    };
    let mut mine: Vec<MetaRef> = match repo.generations() {
        Ok(all) => all
            .into_iter()
            .filter(|m| m.host == util::hostname())
            .collect(),
        Err(e) => return unreadable(e),
    };
    mine.sort_by(|a, b| a.generation.cmp(&b.generation));
    let mut damage = Vec::new();
    for m in mine.iter().rev() {
        match read_generation(&repo, m) {
            Ok(g) => {
                let verify =
                    RepoVerify::load(&cfg.state_dir.value, spec).and_then(|v| v.about(&g.id));
                return BackupFacts::Found {
                    destination: spec.to_string(),
                    finished_epoch: util::parse_rfc3339(&g.finished_at).ok(),
                    generation: Box::new(g),
                    verify,
                    chain_damage: damage,
                };
            }
            Err(e) => damage.push(format!("generation {} is damaged: {e:#}", m.generation)),
        }
    }
    match damage.first() {
        Some(d) => unreadable(anyhow::anyhow!("{d}")),
        None => BackupFacts::Empty {
            destination: spec.to_string(),
        },
    }
}

fn read_generation(repo: &Repo, m: &MetaRef) -> Result<Generation> {
    let data = repo.read_meta(m, GENERATION_FILE)?;
    serde_json::from_slice(&data).context("generation.json unreadable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ok: bool, gens: &[&str]) -> RepoVerify {
        RepoVerify {
            repository: "restic:/srv/r".into(),
            verified_at: "2026-11-26T05:00:00Z".into(),
            deep: false,
            ok,
            problem: (!ok).then(|| "restic check failed: pack damaged".into()),
            generations: gens.iter().map(|s| s.to_string()).collect(),
            files_checked: 3,
        }
    }

    #[test]
    fn a_verify_speaks_for_the_generations_it_checked_and_damage_for_all() {
        let passed = rec(true, &["A", "B"]);
        assert!(passed.about("B").unwrap().ok);
        assert_eq!(
            passed.about("C"),
            None,
            "a newer generation is not verified"
        );
        let failed = rec(false, &[]);
        let v = failed.about("C").unwrap();
        assert!(!v.ok);
        assert_eq!(
            v.problem.as_deref(),
            Some("restic check failed: pack damaged")
        );
    }

    #[test]
    fn verify_records_round_trip_per_repository() {
        let dir = tempfile::tempdir().unwrap();
        let r = rec(true, &["A"]);
        r.save(dir.path()).unwrap();
        assert_eq!(RepoVerify::load(dir.path(), "restic:/srv/r"), Some(r));
        assert_eq!(RepoVerify::load(dir.path(), "restic:/srv/other"), None);
        let name = RepoVerify::path(dir.path(), "restic:/srv/r");
        assert!(
            !name.display().to_string().contains("srv"),
            "{}",
            name.display()
        );
    }
}
