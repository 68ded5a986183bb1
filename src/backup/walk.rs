//! The tree walker: one file system at a time, parents before children,
//! names in byte order, symlinks never followed, sockets skipped and counted.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::manifest::{FileRecord, Kind, PathBytes};

/// What to leave out of a walk.
#[derive(Debug, Default, Clone)]
pub struct Excludes {
    /// Directories kept, their contents left out (`/tmp`, `/run`...).
    pub contents_of: Vec<PathBuf>,
    /// Directories left out entirely, by (device, inode): the destination.
    pub dirs: HashSet<(u64, u64)>,
    /// User patterns: with a `/`, matched against the absolute path (`*` does
    /// not cross `/`); without, against the file name. A matched directory is
    /// left out with everything below it.
    pub patterns: Vec<glob::Pattern>,
}

impl Excludes {
    pub fn add_pattern(&mut self, text: &str) -> Result<()> {
        let p = glob::Pattern::new(text.trim_end_matches('/'))
            .with_context(|| format!("bad --exclude pattern {text:?}"))?;
        self.patterns.push(p);
        Ok(())
    }

    fn matches(&self, abs: &Path, name: &[u8]) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let abs_text = String::from_utf8_lossy(abs.as_os_str().as_bytes());
        let name_text = String::from_utf8_lossy(name);
        self.patterns.iter().any(|p| {
            if p.as_str().contains('/') {
                p.matches_with(&abs_text, opts)
            } else {
                p.matches_with(&name_text, opts)
            }
        })
    }
}

/// One walked entry: its manifest record (without hashes yet) and what the
/// archiver needs besides.
#[derive(Debug, Clone)]
pub struct WalkEntry {
    pub rec: FileRecord,
    pub nlink: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
}

#[derive(Debug, Default, Clone)]
pub struct WalkStats {
    pub sockets: u64,
    pub vanished: u64,
    pub excluded: u64,
    /// The excluded entries (relative paths, the topmost of each excluded
    /// subtree), for engines that must be told what to leave out.
    pub excluded_paths: Vec<PathBytes>,
    /// Directories that could not be read, with the reason.
    pub unreadable: Vec<String>,
}

/// Walks the tree at `root` without leaving its file system. Records get
/// generation `gen`. Hard links after the first get `link` set.
pub fn walk(root: &Path, gen: &str, ex: &Excludes) -> Result<(Vec<WalkEntry>, WalkStats)> {
    let meta = std::fs::symlink_metadata(root)
        .with_context(|| format!("cannot read {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut w = Walker {
        dev: meta.dev(),
        gen,
        ex,
        stats: WalkStats::default(),
        out: vec![entry(PathBytes(b".".to_vec()), &meta, None, gen)],
        leaders: HashMap::new(),
    };
    w.visit(&[], root);
    Ok((w.out, w.stats))
}

struct Walker<'a> {
    dev: u64,
    gen: &'a str,
    ex: &'a Excludes,
    stats: WalkStats,
    out: Vec<WalkEntry>,
    leaders: HashMap<u64, PathBytes>,
}

impl Walker<'_> {
    fn exclude(&mut self, rel: Vec<u8>) {
        self.stats.excluded += 1;
        self.stats.excluded_paths.push(PathBytes(rel));
    }

    /// Appends the entries below directory `abs` (relative path `rel`).
    fn visit(&mut self, rel: &[u8], abs: &Path) {
        let rd = match std::fs::read_dir(abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.stats.vanished += 1;
                return;
            }
            Err(e) => {
                self.stats
                    .unreadable
                    .push(format!("{}: {e}", abs.display()));
                return;
            }
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for ent in rd {
            match ent {
                Ok(ent) => names.push(ent.file_name().as_bytes().to_vec()),
                Err(e) => {
                    self.stats
                        .unreadable
                        .push(format!("{}: {e}", abs.display()));
                    break;
                }
            }
        }
        names.sort();
        let exclude_all = self.ex.contents_of.iter().any(|d| d == abs);
        for name in names {
            let child_abs = abs.join(std::ffi::OsStr::from_bytes(&name));
            let mut child_rel = rel.to_vec();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(&name);
            if exclude_all || self.ex.matches(&child_abs, &name) {
                self.exclude(child_rel);
                continue;
            }
            let m = match std::fs::symlink_metadata(&child_abs) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.stats.vanished += 1;
                    continue;
                }
                Err(e) => {
                    self.stats
                        .unreadable
                        .push(format!("{}: {e}", child_abs.display()));
                    continue;
                }
            };
            let ft = m.file_type();
            if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
                self.stats.sockets += 1;
                continue;
            }
            if ft.is_dir() && self.ex.dirs.contains(&(m.dev(), m.ino())) {
                self.exclude(child_rel);
                continue;
            }
            let path = PathBytes(child_rel.clone());
            let target = if ft.is_symlink() {
                match std::fs::read_link(&child_abs) {
                    Ok(t) => Some(PathBytes(t.as_os_str().as_bytes().to_vec())),
                    Err(_) => {
                        self.stats.vanished += 1;
                        continue;
                    }
                }
            } else {
                None
            };
            let mut e = entry(path.clone(), &m, target, self.gen);
            if e.rec.kind == Kind::File && m.nlink() > 1 {
                match self.leaders.get(&m.ino()) {
                    Some(leader) => e.rec.link = Some(leader.clone()),
                    None => {
                        self.leaders.insert(m.ino(), path);
                    }
                }
            }
            self.out.push(e);
            // A mount point of another file system is kept as a directory,
            // its contents are not.
            if ft.is_dir() && m.dev() == self.dev {
                self.visit(&child_rel, &child_abs);
            }
        }
    }
}

fn entry(
    path: PathBytes,
    m: &std::fs::Metadata,
    target: Option<PathBytes>,
    gen: &str,
) -> WalkEntry {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::File
    };
    let rdev = matches!(kind, Kind::Char | Kind::Block).then(|| {
        let r = m.rdev();
        (libc::major(r), libc::minor(r))
    });
    WalkEntry {
        rec: FileRecord {
            path,
            kind,
            size: if kind == Kind::File { m.size() } else { 0 },
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
            sha256: None,
            xattrs: None,
            link: None,
            target,
            rdev,
            sparse: false,
            gen: gen.to_string(),
        },
        nlink: m.nlink(),
        blocks: m.blocks(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn walks_in_order_with_links_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in ["b", "b/c", "tmp", "skipme", "a"] {
            std::fs::create_dir(r.join(d)).unwrap();
        }
        std::fs::write(r.join("b/c/f"), b"x").unwrap();
        std::fs::write(r.join("tmp/junk"), b"x").unwrap();
        std::fs::write(r.join("skipme/x"), b"x").unwrap();
        std::fs::write(r.join("a/one.log"), b"x").unwrap();
        std::fs::write(r.join("a/one"), b"x").unwrap();
        std::fs::hard_link(r.join("a/one"), r.join("b/two")).unwrap();
        symlink("/nowhere", r.join("link")).unwrap();
        std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap();
        let mut ex = Excludes {
            contents_of: vec![r.join("tmp")],
            ..Excludes::default()
        };
        ex.add_pattern("*.log").unwrap();
        ex.add_pattern(&format!("{}/skip*", r.display())).unwrap();
        let (entries, stats) = walk(r, "g", &ex).unwrap();
        let paths: Vec<String> = entries.iter().map(|e| e.rec.path.to_string()).collect();
        assert_eq!(
            paths,
            [".", "a", "a/one", "b", "b/c", "b/c/f", "b/two", "link", "tmp"]
        );
        assert_eq!(stats.sockets, 1);
        assert_eq!(stats.excluded, 3);
        let excluded: Vec<String> = stats.excluded_paths.iter().map(|p| p.to_string()).collect();
        assert_eq!(excluded, ["a/one.log", "skipme", "tmp/junk"]);
        let two = &entries[6].rec;
        assert_eq!(two.link.as_ref().unwrap().to_string(), "a/one");
        assert_eq!(
            entries[7].rec.target.as_ref().unwrap().to_string(),
            "/nowhere"
        );
        assert_eq!(entries[7].rec.kind, Kind::Symlink);
    }
}
