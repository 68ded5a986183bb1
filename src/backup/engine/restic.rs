//! restic: commands and their `--json` output.
//!
//! Each file system is backed up from inside it (`restic backup .` in the
//! tree's folder), so the snapshot's root is the file system's root and a
//! restore with `--target DIR` puts it at DIR. Snapshots carry the tags
//! `lifeboat`, `lifeboat-gen=ID` and `lifeboat-fs=NAME` (or
//! `lifeboat-meta` for the metadata snapshot) and the host name.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{Listed, MetaRef, Repo, Saved, Settings, META_TAG};
use crate::backup::manifest::Kind;
use crate::backup::progress::Progress;
use crate::exec::Cmd;

const GEN_TAG: &str = "lifeboat-gen=";
const PASSWORD_VARS: &[&str] = &[
    "RESTIC_PASSWORD",
    "RESTIC_PASSWORD_FILE",
    "RESTIC_PASSWORD_COMMAND",
];

/// The password: the environment's (or the environment file's), else
/// `[restic] password_file`, else typed ([`Settings::ask_password`], given
/// to restic as `RESTIC_PASSWORD` in its environment only); none at all is
/// an error before restic runs (restic would wait for a typed password).
pub fn credentials(repo: &mut Repo, settings: &Settings) -> Result<()> {
    if PASSWORD_VARS.iter().any(|v| repo.has_env(v)) {
        return Ok(());
    }
    let typed = match (&settings.restic_password_file, settings.ask_password) {
        (Some(p), _) => {
            let file = p.display().to_string();
            repo.env.push(("RESTIC_PASSWORD_FILE".into(), file));
            return Ok(());
        }
        (None, Some(ask)) => ask(&repo.spec())?,
        (None, None) => None,
    };
    match typed {
        Some(pw) => repo.env.push(("RESTIC_PASSWORD".into(), pw)),
        None => bail!(
            "no password for restic repository {}: set [restic] password_file in the configuration, or RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND, or run on a terminal to type it",
            repo.location
        ),
    }
    Ok(())
}

/// `restic -r REPO [-o OPT]... ARGS`.
fn restic(repo: &Repo, args: &[&str]) -> Cmd {
    let mut c = repo.cmd().args(["-r", &repo.location]);
    for o in &repo.options {
        c = c.args(["-o", o]);
    }
    c.args(args)
}

/// A path as a restic exclude pattern matching exactly it (`*?[\`
/// escaped).
pub fn escape_pattern(abs: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(abs.len());
    for &b in abs {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

#[derive(Deserialize)]
struct Summary {
    message_type: String,
    #[serde(default)]
    snapshot_id: Option<String>,
    #[serde(default)]
    data_added: u64,
}

/// A `--json` status or summary line of `restic backup`.
#[derive(Deserialize)]
struct Status {
    message_type: String,
    #[serde(default)]
    files_done: u64,
    #[serde(default)]
    bytes_done: u64,
    #[serde(default)]
    total_files_processed: u64,
    #[serde(default)]
    total_bytes_processed: u64,
}

/// Feeds restic's status lines to `progress` (on top of what it counted
/// before this snapshot).
fn follow(progress: Option<&mut Progress>) -> impl FnMut(&str) + '_ {
    let base = progress.as_ref().map_or((0, 0), |p| (p.bytes, p.files));
    let mut progress = progress;
    move |line| {
        let (Some(p), Ok(s)) = (
            progress.as_deref_mut(),
            serde_json::from_str::<Status>(line),
        ) else {
            return;
        };
        let (bytes, files) = match s.message_type.as_str() {
            "status" => (s.bytes_done, s.files_done),
            "summary" => (s.total_bytes_processed, s.total_files_processed),
            _ => return,
        };
        p.bytes = base.0 + bytes;
        p.files = base.1 + files;
        p.add(0, 0);
    }
}

pub fn backup(
    repo: &Repo,
    (dir, excludes): (&Path, &Path),
    generation: &str,
    label: &str,
    host: &str,
    progress: Option<&mut Progress>,
) -> Result<Saved> {
    let tags = if label == META_TAG {
        format!("lifeboat,{META_TAG},{GEN_TAG}{generation}")
    } else {
        format!("lifeboat,{GEN_TAG}{generation},lifeboat-fs={label}")
    };
    let cmd = restic(
        repo,
        &["--json", "backup", "--one-file-system", "--host", host],
    )
    .args(["--tag", &tags])
    .arg("--exclude-file")
    .arg(excludes)
    .arg(".")
    .current_dir(dir)
    // 3: the snapshot was written, some files could not be read.
    .ok_codes(&[3]);
    let out = repo.run_lines(&cmd, &mut follow(progress))?;
    let summary = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Summary>(l).ok())
        .find(|s| s.message_type == "summary")
        .with_context(|| format!("no summary in the output of {cmd}"))?;
    Ok(Saved {
        id: summary
            .snapshot_id
            .with_context(|| format!("no snapshot id in the output of {cmd}"))?,
        added_bytes: summary.data_added,
        partial: out.code == 3,
    })
}

#[derive(Deserialize)]
struct Snapshot {
    id: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

impl Snapshot {
    fn is_meta(&self) -> bool {
        self.tags.iter().flatten().any(|t| t == META_TAG)
    }

    fn generation(&self) -> Option<&str> {
        self.tags
            .iter()
            .flatten()
            .find_map(|t| t.strip_prefix(GEN_TAG))
    }
}

fn snapshots(repo: &Repo, tag: &str) -> Result<Vec<Snapshot>> {
    let cmd = restic(repo, &["--json", "snapshots", "--tag", tag]);
    let out = repo.run(&cmd)?;
    serde_json::from_slice(&out.stdout).with_context(|| format!("parsing the JSON output of {cmd}"))
}

pub fn generations(repo: &Repo) -> Result<Vec<MetaRef>> {
    Ok(snapshots(repo, META_TAG)?
        .into_iter()
        .filter_map(|s| {
            Some(MetaRef {
                generation: s.generation()?.to_string(),
                host: s.hostname.clone(),
                id: s.id.clone(),
            })
        })
        .collect())
}

pub fn dump(repo: &Repo, id: &str, name: &str) -> Result<Vec<u8>> {
    let cmd = restic(repo, &["dump", id, &format!("/{name}")]);
    Ok(repo.run(&cmd)?.stdout)
}

/// Restores snapshot `id` into `target`; with `only`, just those paths
/// (relative to the snapshot's root) and what is below them.
pub fn restore(repo: &Repo, id: &str, target: &Path, only: &[Vec<u8>]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = restic(repo, &["restore", id, "--target"]).arg(target);
    for rel in only {
        let pattern = escape_pattern(&[b"/", &rel[..]].concat());
        cmd = cmd
            .arg("--include")
            .arg(std::ffi::OsStr::from_bytes(&pattern));
    }
    repo.run(&cmd)?;
    Ok(())
}

pub fn check(repo: &Repo, read_all: bool) -> Result<()> {
    let read = if read_all {
        "--read-data"
    } else {
        "--read-data-subset=10%"
    };
    repo.run(&restic(repo, &["check", read]))?;
    Ok(())
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    struct_type: String,
    #[serde(default)]
    path: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    size: Option<u64>,
}

pub fn entries(repo: &Repo, id: &str) -> Result<Vec<Listed>> {
    let out = repo.run(&restic(repo, &["--json", "ls", id]))?;
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(n) = serde_json::from_str::<Node>(line) else {
            continue;
        };
        if n.struct_type != "node" {
            continue;
        }
        let kind = match n.kind.as_str() {
            "file" => Kind::File,
            "dir" => Kind::Dir,
            "symlink" => Kind::Symlink,
            "dev" => Kind::Block,
            "chardev" => Kind::Char,
            "fifo" => Kind::Fifo,
            _ => continue,
        };
        v.push(Listed {
            path: n.path.trim_start_matches('/').as_bytes().to_vec(),
            size: (kind == Kind::File).then_some(n.size.unwrap_or(0)),
            kind,
        });
    }
    Ok(v)
}

/// Forgets every snapshot of the generations `gens` of `host`: the
/// metadata snapshots first (an interruption leaves no listed generation
/// short of a file system), then the file systems', then prunes.
pub fn remove(repo: &Repo, gens: &BTreeSet<String>, host: &str) -> Result<()> {
    let (meta, fs): (Vec<Snapshot>, Vec<Snapshot>) = snapshots(repo, "lifeboat")?
        .into_iter()
        .filter(|s| s.hostname == host && s.generation().is_some_and(|g| gens.contains(g)))
        .partition(Snapshot::is_meta);
    for batch in [meta, fs] {
        if !batch.is_empty() {
            let ids = batch.iter().map(|s| s.id.as_str());
            repo.run(&restic(repo, &["forget"]).args(ids))?;
        }
    }
    repo.run(&restic(repo, &["prune"]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_only_the_path() {
        assert_eq!(
            escape_pattern(b"/a/b*[x]?\\"),
            b"/a/b\\*\\[x\\]\\?\\\\".to_vec()
        );
    }
}
