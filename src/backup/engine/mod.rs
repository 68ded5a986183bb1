//! restic and Borg repositories as backup destinations (`restic:REPO`,
//! `borg:REPO`).
//!
//! A lifeboat generation in a repository is one snapshot (restic) or
//! archive (Borg) per file system, each made within its file system with
//! the same exclusions as a native backup, plus one small metadata
//! snapshot/archive (tag or name `lifeboat-meta`) holding the generation's
//! `generation.json` (which snapshot holds which file system),
//! `manifest.json.zst` (every file with its SHA-256, as native backups
//! have) and `layout.json`. Restores go through the engine and are then
//! checked file by file against the manifest ([`super::verify::compare_tree`]).
//!
//! Every engine command goes through [`crate::exec::Cmd`]; the engine's own
//! error message comes back as one line ([`EngineError`]). Credentials come
//! from the environment or the `[restic]`/`[borg]` configuration, never
//! from the command line of the engine.

pub mod borg;
pub mod ops;
pub mod prune;
pub mod restic;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::manifest::{Kind, PathBytes};
use super::progress::Progress;
use crate::exec::{Cmd, CommandError, Output};

pub use ops::{create, list, restore, verify, EngineCreate, EngineRestore, EngineVerify};

/// Tag (restic) or archive name part (Borg) of the metadata snapshot.
pub const META_TAG: &str = "lifeboat-meta";

/// The backup programs lifeboat drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Restic,
    Borg,
}

impl Engine {
    pub fn tool(self) -> &'static str {
        match self {
            Engine::Restic => "restic",
            Engine::Borg => "borg",
        }
    }
}

/// Asks for a repository's password (gets its name); None: no one to ask.
pub type AskPassword = fn(&str) -> Result<Option<String>>;

/// Credentials and options from the configuration (`[restic]`, `[borg]`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub restic_password_file: Option<PathBuf>,
    pub restic_environment_file: Option<PathBuf>,
    pub restic_options: Vec<String>,
    pub borg_passcommand: Option<String>,
    pub borg_environment_file: Option<PathBuf>,
    /// Asks for a restic password or a Borg passphrase when none is
    /// configured (the CLI's prompt when stdin is a terminal; it gets the
    /// repository's spec, and answers None without a terminal). The answer goes to the engine in
    /// its environment only, never to disk.
    pub ask_password: Option<AskPassword>,
}

impl Settings {
    pub fn from_config(cfg: &crate::config::Config) -> Settings {
        Settings {
            restic_password_file: cfg.restic.password_file.value.clone(),
            restic_environment_file: cfg.restic.environment_file.value.clone(),
            restic_options: cfg.restic.options.value.clone(),
            borg_passcommand: cfg.borg.passcommand.value.clone(),
            borg_environment_file: cfg.borg.environment_file.value.clone(),
            ask_password: None,
        }
    }
}

/// An engine failed: its own message, on one line.
#[derive(Debug, thiserror::Error)]
#[error("{tool} repository {location}: {message}")]
pub struct EngineError {
    pub tool: &'static str,
    pub location: String,
    pub message: String,
}

/// An opened repository: the engine, its location and what its commands
/// run with.
#[derive(Debug, Clone)]
pub struct Repo {
    pub engine: Engine,
    pub location: String,
    env: Vec<(String, String)>,
    options: Vec<String>,
}

/// A snapshot (restic) or archive (Borg) the engine wrote.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Snapshot id or archive name.
    pub id: String,
    /// Bytes the repository grew by (after deduplication and compression).
    pub added_bytes: u64,
    /// The engine could not read some files.
    pub partial: bool,
}

/// A lifeboat generation's metadata snapshot in a repository.
#[derive(Debug, Clone)]
pub struct MetaRef {
    pub generation: String,
    pub host: String,
    /// Snapshot id or archive name.
    pub id: String,
}

/// One entry of a snapshot listing, relative to the file system's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub size: Option<u64>,
}

impl Repo {
    /// `restic:REPO` / `borg:REPO` split into engine and repository.
    pub fn split(spec: &str) -> Option<(Engine, &str)> {
        if let Some(r) = spec.strip_prefix("restic:") {
            Some((Engine::Restic, r))
        } else {
            spec.strip_prefix("borg:").map(|r| (Engine::Borg, r))
        }
    }

    /// Opens `spec` (nothing is contacted yet): the credentials are
    /// gathered, and a restic repository without any password fails here.
    pub fn open(spec: &str, settings: &Settings) -> Result<Repo> {
        let Some((engine, location)) = Repo::split(spec) else {
            bail!("{spec:?} is not a restic: or borg: repository");
        };
        if location.is_empty() {
            bail!(
                "empty repository in {spec:?}: give e.g. {}:/srv/repo",
                engine.tool()
            );
        }
        let mut repo = Repo {
            engine,
            location: location.to_string(),
            env: Vec::new(),
            options: Vec::new(),
        };
        let env_file = match engine {
            Engine::Restic => settings.restic_environment_file.as_deref(),
            Engine::Borg => settings.borg_environment_file.as_deref(),
        };
        if let Some(f) = env_file {
            repo.env = read_env_file(f)?;
        }
        match engine {
            Engine::Restic => restic::credentials(&mut repo, settings)?,
            Engine::Borg => borg::credentials(&mut repo, settings)?,
        }
        if engine == Engine::Restic {
            repo.options = settings.restic_options.clone();
        }
        Ok(repo)
    }

    /// `spec` as the user wrote it.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.engine.tool(), self.location)
    }

    /// Whether `key` is set, by the environment file or the process.
    fn has_env(&self, key: &str) -> bool {
        self.env.iter().any(|(k, _)| k == key)
            || std::env::var_os(key).is_some_and(|v| !v.is_empty())
    }

    /// The engine's command with the repository's environment.
    fn cmd(&self) -> Cmd {
        let mut c = Cmd::new(self.engine.tool());
        for (k, v) in &self.env {
            c = c.env(k, v);
        }
        c
    }

    /// Runs `cmd`; a failure becomes an [`EngineError`] with the engine's
    /// own message.
    fn run(&self, cmd: &Cmd) -> Result<Output> {
        cmd.run().map_err(|e| self.engine_error(e))
    }

    /// [`Repo::run`], each line of stdout handed to `on_line` as it comes.
    fn run_lines(&self, cmd: &Cmd, on_line: &mut dyn FnMut(&str)) -> Result<Output> {
        cmd.run_lines(on_line).map_err(|e| self.engine_error(e))
    }

    /// [`Repo::run`], each line of stderr handed to `on_line` as it comes
    /// (borg's `--log-json` progress).
    fn run_stderr_lines(&self, cmd: &Cmd, on_line: &mut dyn FnMut(&str)) -> Result<Output> {
        cmd.run_stderr_lines(on_line)
            .map_err(|e| self.engine_error(e))
    }

    fn engine_error(&self, e: anyhow::Error) -> anyhow::Error {
        let Some(ce) = e.downcast_ref::<CommandError>() else {
            return e;
        };
        let message = engine_message(self.engine, &ce.stderr_tail)
            .unwrap_or_else(|| format!("{} failed with exit code {}", self.engine.tool(), ce.code));
        EngineError {
            tool: self.engine.tool(),
            location: self.location.clone(),
            message,
        }
        .into()
    }
}

/// The line of an engine's stderr (as [`crate::exec::tail`] joined it)
/// that says what went wrong: restic's `Fatal:` line, else the last lines
/// that are not a Python traceback.
pub fn engine_message(engine: Engine, tail: &str) -> Option<String> {
    let lines: Vec<String> = tail
        .split(" | ")
        .map(str::trim)
        .filter_map(log_text)
        .collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    if engine == Engine::Restic {
        if let Some(f) = lines.iter().rev().find_map(|l| l.strip_prefix("Fatal: ")) {
            return Some(f.to_string());
        }
    }
    let useful: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            !l.starts_with("Traceback")
                && !l.starts_with("File \"")
                && !l.starts_with("Error: see")
                && !l.starts_with("exit status")
        })
        .collect();
    let n = useful.len();
    (n > 0).then(|| useful[n.saturating_sub(2)..].join("; "))
}

/// The text of one stderr line: borg's `--log-json` records become their
/// message (progress records and blank lines are dropped).
fn log_text(line: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Record {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        message: String,
    }
    if line.is_empty() {
        return None;
    }
    match serde_json::from_str::<Record>(line) {
        Ok(r) if r.kind == "log_message" => Some(r.message.trim().to_string()),
        Ok(_) => None,
        Err(_) => Some(line.to_string()),
    }
}

/// `KEY=VALUE` lines (blank lines, `#` comments and `export ` allowed;
/// values may be quoted).
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading environment file {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            bail!("{} line {}: expected KEY=VALUE", path.display(), i + 1);
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("{} line {}: bad variable name {k:?}", path.display(), i + 1);
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// The programs the rescue image needs to restore from destination `spec`:
/// restic (one static program), borg (a Python program: the image gets its
/// interpreter and modules, src/rescue/python.rs), and ssh for an SFTP or
/// ssh:// repository.
pub fn rescue_programs(spec: &str) -> Vec<&'static str> {
    match Repo::split(spec) {
        Some((Engine::Restic, loc)) if loc.starts_with("sftp:") => vec!["restic", "ssh"],
        Some((Engine::Restic, _)) => vec!["restic"],
        Some((Engine::Borg, loc))
            if loc.starts_with("ssh://") || (!loc.starts_with('/') && loc.contains(':')) =>
        {
            vec!["borg", "ssh"]
        }
        Some((Engine::Borg, _)) => vec!["borg"],
        None => Vec::new(),
    }
}

/// Absolute path `root/rel` as bytes.
fn join_rel(root: &Path, rel: &PathBytes) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    let mut p = root.as_os_str().as_bytes().to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(&rel.0);
    p
}

/// Writes the exclusion file an engine reads (`--exclude-file`,
/// `--exclude-from`), one pattern a line. Names with a newline cannot be
/// written there: they are an error naming the file.
fn write_excludes(dir: &Path, lines: &[Vec<u8>]) -> Result<PathBuf> {
    let path = dir.join("excludes");
    let mut data = Vec::new();
    for l in lines {
        if l.contains(&b'\n') {
            bail!(
                "cannot exclude {:?}: its name holds a newline, which {} exclusion files cannot express; rename it",
                String::from_utf8_lossy(l),
                "engine"
            );
        }
        data.extend_from_slice(l);
        data.push(b'\n');
    }
    std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Dispatch of the per-engine operations.
impl Repo {
    /// Backs up the tree at `dir` (from inside it, within its file system)
    /// leaving out `excluded` (relative paths); restic's progress goes to
    /// `progress`.
    pub fn backup_tree(
        &self,
        dir: &Path,
        excluded: &[PathBytes],
        (generation, label): (&str, &str),
        host: &str,
        progress: Option<&mut Progress>,
    ) -> Result<Saved> {
        let work = tempfile::tempdir().context("creating a temporary folder")?;
        match self.engine {
            Engine::Restic => {
                let lines: Vec<Vec<u8>> = excluded
                    .iter()
                    .map(|r| restic::escape_pattern(&join_rel(dir, r)))
                    .collect();
                let ex = write_excludes(work.path(), &lines)?;
                restic::backup(self, (dir, &ex), generation, label, host, progress)
            }
            Engine::Borg => {
                let lines: Vec<Vec<u8>> = excluded
                    .iter()
                    .map(|r| [b"pp:".as_slice(), &r.0].concat())
                    .collect();
                let ex = write_excludes(work.path(), &lines)?;
                borg::backup(self, (dir, &ex), generation, label, host, progress)
            }
        }
    }

    /// The lifeboat generations of the repository, oldest first.
    pub fn generations(&self) -> Result<Vec<MetaRef>> {
        let mut g = match self.engine {
            Engine::Restic => restic::generations(self)?,
            Engine::Borg => borg::generations(self)?,
        };
        g.sort_by(|a, b| a.generation.cmp(&b.generation));
        Ok(g)
    }

    /// One file of a generation's metadata snapshot.
    pub fn read_meta(&self, meta: &MetaRef, name: &str) -> Result<Vec<u8>> {
        match self.engine {
            Engine::Restic => restic::dump(self, &meta.id, name),
            Engine::Borg => borg::dump(self, &meta.id, name),
        }
    }

    /// Restores snapshot `id` into `target` (its root becomes `target`);
    /// with `only`, just those paths (relative to the root) and what is
    /// below them.
    pub fn restore_tree(&self, id: &str, target: &Path, only: &[Vec<u8>]) -> Result<()> {
        match self.engine {
            Engine::Restic => restic::restore(self, id, target, only),
            Engine::Borg => borg::restore(self, id, target, only),
        }
    }

    /// The engine's own check; `read_all` reads every data blob.
    pub fn check(&self, read_all: bool) -> Result<()> {
        match self.engine {
            Engine::Restic => restic::check(self, read_all),
            Engine::Borg => borg::check(self, read_all),
        }
    }

    /// The entries of snapshot `id`.
    pub fn entries(&self, id: &str) -> Result<Vec<Listed>> {
        match self.engine {
            Engine::Restic => restic::entries(self, id),
            Engine::Borg => borg::entries(self, id),
        }
    }

    /// Removes every snapshot/archive of the generations `gens` made by
    /// `host` (whole generations: metadata first, then each file system's)
    /// and frees their space.
    pub fn remove_generations(&self, gens: &BTreeSet<String>, host: &str) -> Result<()> {
        match self.engine {
            Engine::Restic => restic::remove(self, gens, host),
            Engine::Borg => borg::remove(self, gens, host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_split() {
        assert_eq!(
            Repo::split("restic:s3:http://h/b"),
            Some((Engine::Restic, "s3:http://h/b"))
        );
        assert_eq!(
            Repo::split("borg:ssh://u@h/./r"),
            Some((Engine::Borg, "ssh://u@h/./r"))
        );
        assert_eq!(Repo::split("/srv/backup"), None);
        assert!(Repo::open("borg:", &Settings::default()).is_err());
    }

    #[test]
    fn engine_messages_are_one_line() {
        let t = "open repository | subprocess ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused | Fatal: unable to open repository at sftp:x:/r: EOF";
        assert_eq!(
            engine_message(Engine::Restic, t).unwrap(),
            "unable to open repository at sftp:x:/r: EOF"
        );
        let b = "Remote: ssh: connect to host 127.0.0.1 port 1: Connection refused | Connection closed by remote host. Is borg working on the server?";
        assert_eq!(
            engine_message(Engine::Borg, b).unwrap(),
            b.replace(" | ", "; ")
        );
        assert_eq!(engine_message(Engine::Borg, ""), None);
    }

    #[test]
    fn rescue_gets_the_engine() {
        assert_eq!(rescue_programs("restic:s3:https://h/b"), ["restic"]);
        assert_eq!(rescue_programs("restic:sftp:u@h:/r"), ["restic", "ssh"]);
        assert!(rescue_programs("/srv/backup").is_empty());
        assert_eq!(rescue_programs("borg:/srv/borg"), ["borg"]);
        assert_eq!(rescue_programs("borg:ssh://u@h/./r"), ["borg", "ssh"]);
        assert_eq!(rescue_programs("borg:u@h:r"), ["borg", "ssh"]);
        assert_eq!(rescue_programs("borg:/srv/a:b"), ["borg"]);
    }

    #[test]
    fn env_files_parse() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("env");
        std::fs::write(
            &p,
            "# creds\nAWS_ACCESS_KEY_ID=ak\nexport AWS_SECRET_ACCESS_KEY=\"s k\"\n\nX='y'\n",
        )
        .unwrap();
        let got = read_env_file(&p).unwrap();
        assert_eq!(
            got,
            vec![
                ("AWS_ACCESS_KEY_ID".to_string(), "ak".to_string()),
                ("AWS_SECRET_ACCESS_KEY".into(), "s k".into()),
                ("X".into(), "y".into())
            ]
        );
        std::fs::write(&p, "A=1\nnot a line\n").unwrap();
        let e = read_env_file(&p).unwrap_err().to_string();
        assert!(e.contains("line 2: expected KEY=VALUE"), "{e}");
    }
}
