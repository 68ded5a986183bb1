//! What `restore` and `verify` both check, and the walk through an archive
//! that goes on after damage.
//!
//! Both compare every entry with its manifest record through
//! [`check_entry`] (kind, size, mode, owner, time, link target, device
//! numbers, xattrs and ACLs), both compare content with the record's
//! SHA-256, and both compare the archive file with its recorded SHA-256
//! ([`Scan::stored`]). A damaged zstd frame costs the entries in it: the
//! walk resumes at the next frame that begins with a tar header and names
//! the entries the damage hit.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use super::compress::ArchiveStream;
use super::extract::normalize;
use super::fsio;
use super::manifest::{FileRecord, Kind};
use super::seal::Identities;
use super::tar::{show, EntryKind, Header, TarError, TarReader};

pub type Tar = TarReader<ArchiveStream>;

/// Why an entry does not match its record; None when it does.
pub fn check_entry(h: &Header, r: &FileRecord) -> Result<(), String> {
    let kind_ok = matches!(
        (h.kind, r.kind, r.link.is_some()),
        (EntryKind::File, Kind::File, false)
            | (EntryKind::HardLink, Kind::File, true)
            | (EntryKind::Dir, Kind::Dir, _)
            | (EntryKind::Symlink, Kind::Symlink, _)
            | (EntryKind::Char, Kind::Char, _)
            | (EntryKind::Block, Kind::Block, _)
            | (EntryKind::Fifo, Kind::Fifo, _)
    );
    if !kind_ok {
        return Err(format!(
            "archive has a {:?}, manifest a {:?}{} (manifest does not match)",
            h.kind,
            r.kind,
            if r.link.is_some() { " link" } else { "" }
        ));
    }
    if h.kind == EntryKind::File && h.size != r.size {
        return Err(format!(
            "archive has {} bytes, manifest {} (manifest does not match)",
            h.size, r.size
        ));
    }
    // A hostile time must not overflow: out of range is a mismatch.
    let mtime = h
        .mtime_sec
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(i64::from(h.mtime_nsec)));
    if h.mode != r.mode || h.uid != r.uid || h.gid != r.gid || mtime != Some(r.mtime_ns) {
        return Err("mode, owner or time differs from the manifest".into());
    }
    let link = match h.kind {
        EntryKind::Symlink => r.target.as_ref(),
        EntryKind::HardLink => r.link.as_ref(),
        _ => None,
    };
    if let Some(l) = link {
        if normalize_link(h, &l.0) {
            return Err("link target differs from the manifest".into());
        }
    }
    if matches!(h.kind, EntryKind::Char | EntryKind::Block)
        && r.rdev != Some((h.dev_major, h.dev_minor))
    {
        return Err("device numbers differ from the manifest".into());
    }
    if fsio::xattr_digest(&with_acl_xattrs(h)) != r.xattrs {
        return Err("xattrs or ACLs differ from the manifest".into());
    }
    Ok(())
}

/// Whether the header's link differs from `want` (hard-link names are
/// compared normalized, symlink targets byte for byte).
fn normalize_link(h: &Header, want: &[u8]) -> bool {
    match h.kind {
        EntryKind::HardLink => normalize(&h.link).map_or(true, |l| l != want),
        _ => h.link != want,
    }
}

/// The xattrs a header stands for: its SCHILY.xattr records plus ACLs that
/// came only as text (archives from other tools).
pub fn with_acl_xattrs(h: &Header) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut list = h.xattrs.clone();
    for (name, text) in [
        (super::acl::ACCESS, &h.acl_access),
        (super::acl::DEFAULT, &h.acl_default),
    ] {
        if let Some(t) = text {
            if !list.iter().any(|(k, _)| k == name) {
                if let Ok(bin) = super::acl::from_text(t) {
                    list.push((name.to_vec(), bin));
                }
            }
        }
    }
    list.sort();
    list
}

/// An archive read through.
#[derive(Debug, Default)]
pub struct Scan {
    /// Entries (normalized tar paths) the damage hit while they were read.
    pub hit: Vec<Vec<u8>>,
    /// The damage, in order.
    pub damage: Vec<String>,
    /// Entries whose names cannot be written below a target (`..`): in one
    /// of our archives that is damage ([`Scan::damage_all`]), in a foreign
    /// archive a refused entry.
    pub bad_names: Vec<(Vec<u8>, String)>,
    /// SHA-256 and size of the stored file, when read straight through.
    pub stored: Option<(String, u64)>,
}

impl Scan {
    /// The damage, with the entries whose names were unusable.
    pub fn damage_all(&self) -> impl Iterator<Item = String> + '_ {
        self.damage.iter().cloned().chain(
            self.bad_names
                .iter()
                .map(|(path, why)| format!("entry {}: {why}", show(path))),
        )
    }

    /// Whether the stored file matches its record (a damage otherwise).
    pub fn check_stored(&mut self, sha256: &str, bytes: u64) {
        let ok = self
            .stored
            .as_ref()
            .is_some_and(|(s, b)| s == sha256 && *b == bytes);
        if !ok && self.damage.is_empty() {
            self.damage
                .push("the archive file differs from its recorded SHA-256 (damaged)".into());
        }
    }
}

/// Reads the archive at `path`, calling `visit` with each entry (its
/// normalized path). An error of `visit` while the stream reports damage,
/// or a tar error, is damage: noted, and the walk resumes at the next good
/// frame when there is one. Other errors of `visit` stop the walk.
pub fn scan_archive(
    path: &Path,
    ids: Option<&Arc<Identities>>,
    mut visit: impl FnMut(&mut Tar, &Header, &[u8]) -> Result<()>,
) -> Result<Scan> {
    let mut scan = Scan::default();
    let stream = match ArchiveStream::open_with(path, ids) {
        Ok(s) => s,
        Err(e) => {
            scan.damage.push(format!("{e:#}"));
            return Ok(scan);
        }
    };
    let mut tar = TarReader::new(stream);
    let mut last = String::from("(start)");
    loop {
        let h = match tar.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => match resume(tar, &mut scan, format!("after {last}: {e:#}")) {
                Some(t) => {
                    tar = t;
                    continue;
                }
                None => return Ok(scan),
            },
        };
        let rel = match normalize(&h.path) {
            Ok(r) => r,
            Err(e) => {
                scan.bad_names.push((h.path.clone(), format!("{e:#}")));
                continue;
            }
        };
        last = show(&rel);
        if let Err(e) = visit(&mut tar, &h, &rel) {
            let damaged =
                tar.get_ref().pending_damage().is_some() || e.chain().any(|c| c.is::<TarError>());
            if !damaged {
                return Err(e);
            }
            scan.hit.push(rel);
            match resume(tar, &mut scan, format!("inside {last}: {e:#}")) {
                Some(t) => tar = t,
                None => return Ok(scan),
            }
        }
    }
    let mut stream = tar.into_inner();
    if let Err(e) = stream.finish() {
        scan.damage.push(format!("after the last entry: {e:#}"));
    }
    scan.stored = stream.stored_sha256().cloned();
    Ok(scan)
}

/// After damage: a new reader at the next frame that begins with a header,
/// or None when the damage is not in the compressed stream (a tar error in
/// sound frames: the rest of the archive cannot be read in step).
fn resume(tar: Tar, scan: &mut Scan, what: String) -> Option<Tar> {
    let mut stream = tar.into_inner();
    scan.damage.push(format!("damaged {what}"));
    stream.pending_damage()?;
    stream.resume();
    Some(TarReader::new(stream))
}
