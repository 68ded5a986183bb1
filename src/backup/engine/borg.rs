//! Borg: commands and their `--json` output.
//!
//! Archives are named `lifeboat.GEN.fs.NAME.HOST` (one per file system,
//! made from inside the tree, so its root is the archive's `.`) and
//! `lifeboat.GEN.meta.HOST` (the metadata). Generation ids hold no dot, so
//! the names split back unambiguously.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::{Listed, MetaRef, Repo, Saved, META_TAG};
use crate::backup::manifest::Kind;
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
}

pub fn backup(
    repo: &Repo,
    dir: &Path,
    excludes: &Path,
    generation: &str,
    label: &str,
    host: &str,
) -> Result<Saved> {
    let name = archive_name(generation, label, host);
    let cmd = borg(
        repo,
        &["create", "--json", "--one-file-system", "--numeric-ids"],
    )
    .arg("--exclude-from")
    .arg(excludes)
    .arg(archive(repo, &name))
    .arg(".")
    .current_dir(dir)
    // 1: written, with warnings (a file changed or could not be read).
    .ok_codes(&[1]);
    let out = repo.run(&cmd)?;
    let c: Created = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing the JSON output of {cmd}"))?;
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
