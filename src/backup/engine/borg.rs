//! Borg: commands and their `--json` output.
//!
//! Archives are named `lifeboat.GEN.fs.NAME.HOST` (one per file system,
//! made from inside the tree, so its root is the archive's `.`) and
//! `lifeboat.GEN.meta.HOST` (the metadata). Generation ids hold no dot, so
//! the names split back unambiguously.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{Listed, MetaRef, Repo, Saved, Settings, META_TAG};
use crate::backup::manifest::Kind;
use crate::backup::progress::Progress;
use crate::exec::Cmd;

/// `borg ARGS` (the repository is part of the arguments).
fn borg(repo: &Repo, args: &[&str]) -> Cmd {
    repo.cmd().args(args)
}

fn archive(repo: &Repo, name: &str) -> String {
    format!("{}::{name}", repo.location)
}

fn archive_name(generation: &str, label: &str, host: &str) -> String {
    if label == META_TAG {
        format!("lifeboat.{generation}.meta.{host}")
    } else {
        format!("lifeboat.{generation}.fs.{label}.{host}")
    }
}

/// (generation, host) of a metadata archive's name.
fn parse_meta(name: &str) -> Option<(&str, &str)> {
    let mut it = name.splitn(4, '.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("lifeboat"), Some(g), Some("meta"), Some(h)) => Some((g, h)),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Created {
    archive: CreatedArchive,
}

#[derive(Deserialize)]
struct CreatedArchive {
    name: String,
    stats: Stats,
}

#[derive(Deserialize)]
struct Stats {
    deduplicated_size: u64,
    #[serde(default)]
    original_size: u64,
    #[serde(default)]
    nfiles: u64,
}

const PASSPHRASE_VARS: &[&str] = &["BORG_PASSPHRASE", "BORG_PASSCOMMAND", "BORG_PASSPHRASE_FD"];

/// The passphrase: the environment's (or the environment file's), else
/// `[borg] passcommand`, else typed ([`Settings::ask_password`], given to
/// borg as `BORG_PASSPHRASE` in its environment only), and only when the
/// repository needs one: borg is asked first with an empty passphrase (an
/// unencrypted repository opens, an encrypted one refuses it). Without a
/// terminal an encrypted repository is an error naming the settings.
pub fn credentials(repo: &mut Repo, settings: &Settings) -> Result<()> {
    if PASSPHRASE_VARS.iter().any(|v| repo.has_env(v)) {
        return Ok(());
    }
    if let Some(pc) = &settings.borg_passcommand {
        repo.env.push(("BORG_PASSCOMMAND".into(), pc.clone()));
        return Ok(());
    }
    let Some(ask) = settings.ask_password else {
        return Ok(());
    };
    if !needs_passphrase(repo)? {
        return Ok(());
    }
    match ask(&repo.spec())? {
        Some(pw) => repo.env.push(("BORG_PASSPHRASE".into(), pw)),
        None => bail!(
            "no passphrase for Borg repository {}: set [borg] passcommand in the configuration, or BORG_PASSPHRASE or BORG_PASSCOMMAND, or run on a terminal to type it",
            repo.location
        ),
    }
    Ok(())
}

/// Whether the repository refuses an empty passphrase (encrypted).
fn needs_passphrase(repo: &Repo) -> Result<bool> {
    let cmd = borg(repo, &["info", "--json"])
        .arg(&repo.location)
        .env("BORG_PASSPHRASE", "");
    match cmd.run() {
        Ok(_) => Ok(false),
        Err(e) => {
            let wrong = e
                .downcast_ref::<crate::exec::CommandError>()
                .is_some_and(|ce| {
                    ce.stderr_tail
                        .contains("passphrase supplied in BORG_PASSPHRASE")
                });
            if wrong {
                Ok(true)
            } else {
                Err(repo.engine_error(e))
            }
        }
    }
}

/// One `archive_progress` line of `borg create --progress --log-json`.
#[derive(Deserialize)]
struct ArchiveProgress {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    original_size: u64,
    #[serde(default)]
    nfiles: u64,
    #[serde(default)]
    finished: bool,
}

/// Feeds borg's progress lines to `progress` (on top of what it counted
/// before this archive).
fn follow(progress: Option<&mut Progress>) -> impl FnMut(&str) + '_ {
    let base = progress.as_ref().map_or((0, 0), |p| (p.bytes, p.files));
    let mut progress = progress;
    move |line| {
        let (Some(p), Ok(a)) = (
            progress.as_deref_mut(),
            serde_json::from_str::<ArchiveProgress>(line),
        ) else {
            return;
        };
        if a.kind != "archive_progress" || a.finished {
            return;
        }
        p.bytes = base.0 + a.original_size;
        p.files = base.1 + a.nfiles;
        p.add(0, 0);
    }
}

pub fn backup(
    repo: &Repo,
    (dir, excludes): (&Path, &Path),
    generation: &str,
    label: &str,
    host: &str,
    mut progress: Option<&mut Progress>,
) -> Result<Saved> {
    let name = archive_name(generation, label, host);
    let base = progress.as_ref().map(|p| (p.bytes, p.files));
    let mut cmd = borg(
        repo,
        &["create", "--json", "--one-file-system", "--numeric-ids"],
    );
    if progress.is_some() {
        cmd = cmd.args(["--progress", "--log-json"]);
    }
    let cmd = cmd
        .arg("--exclude-from")
        .arg(excludes)
        .arg(archive(repo, &name))
        .arg(".")
        .current_dir(dir)
        // 1: written, with warnings (a file changed or could not be read).
        .ok_codes(&[1]);
    let out = repo.run_stderr_lines(&cmd, &mut follow(progress.as_deref_mut()))?;
    let c: Created = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the JSON output of {cmd}"))?;
    // borg draws its progress every 0.2 s: the archive's totals end it.
    if let (Some(p), Some((bytes, files))) = (progress, base) {
        p.bytes = bytes + c.archive.stats.original_size;
        p.files = files + c.archive.stats.nfiles;
        p.add(0, 0);
    }
    Ok(Saved {
        id: c.archive.name,
        added_bytes: c.archive.stats.deduplicated_size,
        partial: out.code == 1,
    })
}

#[derive(Deserialize)]
struct ArchiveList {
    archives: Vec<ArchiveEntry>,
}

#[derive(Deserialize)]
struct ArchiveEntry {
    name: String,
}

fn archives(repo: &Repo, glob: &str) -> Result<Vec<String>> {
    let cmd = borg(repo, &["list", "--json", "--glob-archives", glob]).arg(&repo.location);
    let out = repo.run(&cmd)?;
    let l: ArchiveList = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the JSON output of {cmd}"))?;
    Ok(l.archives.into_iter().map(|a| a.name).collect())
}

pub fn generations(repo: &Repo) -> Result<Vec<MetaRef>> {
    Ok(archives(repo, "lifeboat.*.meta.*")?
        .iter()
        .filter_map(|n| {
            let (g, h) = parse_meta(n)?;
            Some(MetaRef {
                generation: g.to_string(),
                host: h.to_string(),
                id: n.clone(),
            })
        })
        .collect())
}

pub fn dump(repo: &Repo, id: &str, name: &str) -> Result<Vec<u8>> {
    let cmd = borg(repo, &["extract", "--stdout"])
        .arg(archive(repo, id))
        .arg(name);
    Ok(repo.run(&cmd)?.stdout)
}

/// Extracts archive `id` into `target`; with `only`, just those paths
/// (relative to the archive's root, as path prefixes) and what is below.
pub fn restore(repo: &Repo, id: &str, target: &Path, only: &[Vec<u8>]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = borg(repo, &["extract", "--numeric-ids"])
        .arg(archive(repo, id))
        .current_dir(target);
    for rel in only {
        cmd = cmd.arg(std::ffi::OsStr::from_bytes(&[b"pp:", &rel[..]].concat()));
    }
    repo.run(&cmd)?;
    Ok(())
}

pub fn check(repo: &Repo, read_all: bool) -> Result<()> {
    let mut cmd = borg(repo, &["check"]);
    if read_all {
        cmd = cmd.arg("--verify-data");
    }
    repo.run(&cmd.arg(&repo.location))?;
    Ok(())
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: Option<u64>,
    /// `hrw-r--r--` for a hard link to an earlier item (whose size is 0).
    #[serde(default)]
    mode: String,
}

pub fn entries(repo: &Repo, id: &str) -> Result<Vec<Listed>> {
    let cmd = borg(repo, &["list", "--json-lines"]).arg(archive(repo, id));
    let out = repo.run(&cmd)?;
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let it: Item = serde_json::from_str(line)
            .with_context(|| format!("parsing the JSON output of {cmd}"))?;
        let (kind, hardlink) = match it.kind.as_str() {
            "-" => (Kind::File, it.mode.starts_with('h')),
            "h" => (Kind::File, true),
            "d" => (Kind::Dir, false),
            "l" => (Kind::Symlink, false),
            "b" => (Kind::Block, false),
            "c" => (Kind::Char, false),
            "p" => (Kind::Fifo, false),
            _ => continue,
        };
        v.push(Listed {
            path: it.path.into_bytes(),
            size: (kind == Kind::File && !hardlink).then_some(it.size.unwrap_or(0)),
            kind,
        });
    }
    Ok(v)
}

/// Deletes every archive of the generations `gens` of `host`: the
/// metadata archives first (an interruption leaves no listed generation
/// short of a file system), then the file systems', then compacts.
pub fn remove(repo: &Repo, gens: &BTreeSet<String>, host: &str) -> Result<()> {
    let names = archives(repo, "lifeboat.*")?;
    let meta: Vec<&String> = names
        .iter()
        .filter(|n| parse_meta(n).is_some_and(|(g, h)| h == host && gens.contains(g)))
        .collect();
    let suffix = format!(".{host}");
    let fs: Vec<&String> = names
        .iter()
        .filter(|n| {
            parse_fs_generation(n).is_some_and(|g| gens.contains(g)) && n.ends_with(&suffix)
        })
        .collect();
    for batch in [meta, fs] {
        if !batch.is_empty() {
            repo.run(&borg(repo, &["delete"]).arg(&repo.location).args(batch))?;
        }
    }
    repo.run(&borg(repo, &["compact"]).arg(&repo.location))?;
    Ok(())
}

/// The generation of a file system archive's name.
fn parse_fs_generation(name: &str) -> Option<&str> {
    let mut it = name.splitn(4, '.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some("lifeboat"), Some(g), Some("fs"), Some(_)) => Some(g),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_back() {
        let n = archive_name("20261207T130000Z-2", META_TAG, "web.example.com");
        assert_eq!(n, "lifeboat.20261207T130000Z-2.meta.web.example.com");
        assert_eq!(
            parse_meta(&n),
            Some(("20261207T130000Z-2", "web.example.com"))
        );
        let f = archive_name("20261207T130000Z", "boot-efi", "h");
        assert_eq!(f, "lifeboat.20261207T130000Z.fs.boot-efi.h");
        assert_eq!(parse_meta(&f), None);
        assert_eq!(parse_fs_generation(&f), Some("20261207T130000Z"));
        assert_eq!(parse_fs_generation(&n), None);
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    /// borg's `--log-json` lines (as borg 1.2 writes them) move the
    /// progress; its log messages, the final record and other text do not.
    #[test]
    fn archive_progress_lines_drive_the_progress() {
        let mut p = Progress::new("backup", crate::backup::progress::Mode::Quiet);
        p.bytes = 100;
        p.files = 1;
        {
            let mut f = follow(Some(&mut p));
            f(
                r#"{"original_size": 2048, "compressed_size": 1000, "deduplicated_size": 900, "nfiles": 3, "path": "etc/x", "time": 1.5, "type": "archive_progress", "finished": false}"#,
            );
            f(
                r#"{"type": "log_message", "time": 1.6, "message": "Remote: x", "levelname": "WARNING", "name": "borg"}"#,
            );
            f(r#"{"time": 1.7, "type": "archive_progress", "finished": true}"#);
            f("not json");
        }
        assert_eq!((p.bytes, p.files), (100 + 2048, 1 + 3));
    }
}
