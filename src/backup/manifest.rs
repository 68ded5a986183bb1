//! The manifest of a generation: every file of every archived file system
//! at that moment, with its metadata, xattr digest and content hash, and the
//! generation whose archive holds its data. An incremental generation's
//! manifest is complete too: unchanged files point at older generations,
//! and `deleted` lists what disappeared since the previous generation.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names;
use crate::util::AtomicFile;

/// Manifest format version.
pub const FORMAT: u32 = 1;

/// A path as raw bytes: JSON text when it is UTF-8, else `{"hex": "..."}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PathBytes(pub Vec<u8>);

impl PathBytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn as_path(&self) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }
}

impl fmt::Display for PathBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::tar::show(&self.0))
    }
}

impl fmt::Debug for PathBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for PathBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("hex", &hex::encode(&self.0))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for PathBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Hex { hex: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(PathBytes(t.into_bytes())),
            Repr::Hex { hex } => hex::decode(hex)
                .map(PathBytes)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
}

/// One file as it was at backup time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Relative to the file system's mount point; `.` is its root.
    pub path: PathBytes,
    pub kind: Kind,
    /// Content size (the apparent size of a sparse file).
    pub size: u64,
    /// Permission bits, set-id and sticky bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Change time and inode number at backup time (for incrementals).
    pub ctime_ns: i64,
    pub ino: u64,
    /// SHA-256 of the content (regular files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// SHA-256 of the sorted xattrs (ACLs included); none when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<String>,
    /// Hard link: the path this file is a link to, archived before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<PathBytes>,
    /// Symlink target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBytes>,
    /// Device numbers of a device node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// Stored with its holes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sparse: bool,
    /// Generation whose archive holds this entry.
    pub gen: String,
}

impl FileRecord {
    /// The path as stored in the tar archive.
    pub fn tar_path(&self) -> Vec<u8> {
        if self.path.0 == b"." {
            return b"./".to_vec();
        }
        let mut p = self.path.0.clone();
        if self.kind == Kind::Dir {
            p.push(b'/');
        }
        p
    }
}

/// One archived file system (or `--source` tree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsManifest {
    /// Absolute path of the tree at backup time (its mount point).
    pub mountpoint: PathBytes,
    /// Archive file name inside each generation directory.
    pub archive: String,
    #[serde(default)]
    pub fstype: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    /// Bytes in use on the whole file system (statvfs), what recovery needs
    /// at least on the new disk.
    pub used_bytes: u64,
    /// Apparent bytes of the archived regular files (hard links once).
    pub data_bytes: u64,
    /// Bytes the archived files occupy on disk (sparse files count less).
    pub allocated_bytes: u64,
    pub file_count: u64,
    pub entries: Vec<FileRecord>,
    /// Paths present in the previous generation and gone in this one.
    #[serde(default)]
    pub deleted: Vec<PathBytes>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub generation: String,
    pub filesystems: Vec<FsManifest>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let file =
            crate::util::open_regular(path, std::fs::OpenOptions::new().read(true), "manifest")?;
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(file)
            .and_then(|mut d| d.read_to_end(&mut json))
            .with_context(|| format!("manifest {} is damaged", path.display()))?;
        Manifest::from_json(&json, path)
    }

    /// A manifest from its compressed bytes (decrypted), `path` for messages.
    pub fn from_zst(data: &[u8], path: &Path) -> Result<Manifest> {
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(data)
            .and_then(|mut d| d.read_to_end(&mut json))
            .with_context(|| format!("manifest {} is damaged", path.display()))?;
        Manifest::from_json(&json, path)
    }

    fn from_json(json: &[u8], path: &Path) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(json)
            .with_context(|| format!("manifest {} is damaged", path.display()))?;
        if m.format != FORMAT {
            bail!(
                "manifest {} has format {}, this lifeboat reads format {FORMAT}",
                path.display(),
                m.format
            );
        }
        m.check_names()
            .with_context(|| format!("manifest {} is refused", path.display()))?;
        Ok(m)
    }

    /// Every name that becomes a path is checked: generation ids (its own
    /// and each entry's) and archive files are single path components,
    /// mount points absolute and normalised.
    pub fn check_names(&self) -> Result<()> {
        let gen = &self.generation;
        let field = |f: String| {
            move |e: anyhow::Error| e.context(format!("generation {gen:?}, field `{f}`"))
        };
        names::generation_id(gen).map_err(field("generation".into()))?;
        for (i, fs) in self.filesystems.iter().enumerate() {
            names::mount_point(fs.mountpoint.as_bytes())
                .map_err(field(format!("filesystems[{i}].mountpoint")))?;
            names::component("archive file", &fs.archive)
                .map_err(field(format!("filesystems[{i}].archive")))?;
            let mut checked: Option<&str> = None;
            for (j, e) in fs.entries.iter().enumerate() {
                // Entries name a handful of generations, one after another.
                if checked != Some(e.gen.as_str()) {
                    names::generation_id(&e.gen)
                        .map_err(field(format!("filesystems[{i}].entries[{j}].gen")))?;
                    checked = Some(&e.gen);
                }
            }
        }
        Ok(())
    }

    /// Writes the manifest (zstd-compressed JSON) atomically; returns its
    /// SHA-256.
    pub fn save(&self, path: &Path) -> Result<String> {
        self.save_sealed(path, None)
    }

    /// Saves the manifest, encrypted to `seal` when given; returns the
    /// SHA-256 of the file as stored.
    pub fn save_sealed(
        &self,
        path: &Path,
        seal: Option<&super::seal::Recipients>,
    ) -> Result<String> {
        let json = serde_json::to_vec(self)?;
        let mut compressed = zstd::bulk::compress(&json, 9)?;
        if let Some(r) = seal {
            compressed = r.seal(&compressed)?;
        }
        let mut f = AtomicFile::create(path, 0o600)?;
        f.write_all(&compressed)
            .with_context(|| format!("writing {}", path.display()))?;
        f.commit()?;
        Ok(super::sha256_hex(&compressed))
    }

    pub fn filesystem(&self, mountpoint: &[u8]) -> Option<&FsManifest> {
        self.filesystems
            .iter()
            .find(|f| f.mountpoint.0 == mountpoint)
    }
}

/// For each current entry, the index of the previous record it can reuse
/// (unchanged: same kind, inode, size, mtime and ctime), and the paths
/// deleted since. A hard-linked file is reused only when its whole link
/// group is unchanged, so that a link always finds its leader in the same
/// archive.
pub fn match_previous(
    current: &[FileRecord],
    nlinks: &[u64],
    prev: &FsManifest,
) -> (Vec<Option<usize>>, Vec<PathBytes>) {
    let by_path: HashMap<&[u8], usize> = prev
        .entries
        .iter()
        .enumerate()
        .map(|(i, r)| (r.path.0.as_slice(), i))
        .collect();
    let mut reuse: Vec<Option<usize>> = current
        .iter()
        .map(|c| {
            let &i = by_path.get(c.path.0.as_slice())?;
            let p = &prev.entries[i];
            let same = p.kind == c.kind
                && p.ino == c.ino
                && p.size == c.size
                && p.mtime_ns == c.mtime_ns
                && p.ctime_ns == c.ctime_ns;
            same.then_some(i)
        })
        .collect();
    // Hard-link groups: members by inode, now and before.
    let mut groups: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, c) in current.iter().enumerate() {
        if c.kind == Kind::File && nlinks[i] > 1 {
            groups.entry(c.ino).or_default().push(i);
        }
    }
    let leaders: std::collections::HashSet<&[u8]> = prev
        .entries
        .iter()
        .filter_map(|r| r.link.as_ref().map(|l| l.0.as_slice()))
        .collect();
    let in_group = |r: &FileRecord| r.link.is_some() || leaders.contains(r.path.0.as_slice());
    let mut prev_group_size: HashMap<u64, usize> = HashMap::new();
    for r in &prev.entries {
        if r.kind == Kind::File && in_group(r) {
            *prev_group_size.entry(r.ino).or_default() += 1;
        }
    }
    for (ino, members) in &groups {
        let all_same = members
            .iter()
            .all(|&i| reuse[i].is_some_and(|p| in_group(&prev.entries[p])));
        if !all_same || prev_group_size.get(ino) != Some(&members.len()) {
            for &i in members {
                reuse[i] = None;
            }
        }
    }
    // A file that was in a link group and no longer is (or the reverse)
    // is stored again: its record must not point at a vanished leader.
    for (i, c) in current.iter().enumerate() {
        if let Some(p) = reuse[i] {
            let was = in_group(&prev.entries[p]);
            let is = c.kind == Kind::File && nlinks[i] > 1;
            if was != is {
                reuse[i] = None;
            }
        }
    }
    let present: std::collections::HashSet<&[u8]> =
        current.iter().map(|c| c.path.0.as_slice()).collect();
    let deleted = prev
        .entries
        .iter()
        .filter(|r| !present.contains(r.path.0.as_slice()))
        .map(|r| r.path.clone())
        .collect();
    (reuse, deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(path: &str, ino: u64, mtime: i64) -> FileRecord {
        FileRecord {
            path: PathBytes(path.as_bytes().to_vec()),
            kind: Kind::File,
            size: 10,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_ns: mtime,
            ctime_ns: mtime,
            ino,
            sha256: Some("00".into()),
            xattrs: None,
            link: None,
            target: None,
            rdev: None,
            sparse: false,
            gen: "g1".into(),
        }
    }

    fn fs(entries: Vec<FileRecord>) -> FsManifest {
        FsManifest {
            mountpoint: PathBytes(b"/".to_vec()),
            archive: "root.tar.zst".into(),
            fstype: None,
            device: None,
            used_bytes: 0,
            data_bytes: 0,
            allocated_bytes: 0,
            file_count: entries.len() as u64,
            entries,
            deleted: Vec::new(),
        }
    }

    fn linked(mut r: FileRecord, to: &str) -> FileRecord {
        r.link = Some(PathBytes(to.as_bytes().to_vec()));
        r
    }

    #[test]
    fn incremental_matching() {
        let prev = fs(vec![
            rec("a", 1, 100),
            rec("b", 2, 100),
            rec("c", 3, 100),
            rec("h1", 4, 100),
            linked(rec("h2", 4, 100), "h1"),
        ]);
        struct Case {
            name: &'static str,
            current: Vec<FileRecord>,
            nlinks: Vec<u64>,
            reuse: Vec<Option<usize>>,
            deleted: Vec<&'static str>,
        }
        let cases = vec![
            Case {
                name: "nothing changed",
                current: vec![
                    rec("a", 1, 100),
                    rec("b", 2, 100),
                    rec("c", 3, 100),
                    rec("h1", 4, 100),
                    rec("h2", 4, 100),
                ],
                nlinks: vec![1, 1, 1, 2, 2],
                reuse: vec![Some(0), Some(1), Some(2), Some(3), Some(4)],
                deleted: vec![],
            },
            Case {
                name: "modified, renamed, deleted",
                // b modified (mtime), c renamed to d (same inode, new path),
                // a deleted
                current: vec![
                    rec("b", 2, 200),
                    rec("d", 3, 100),
                    rec("h1", 4, 100),
                    rec("h2", 4, 100),
                ],
                nlinks: vec![1, 1, 2, 2],
                reuse: vec![None, None, Some(3), Some(4)],
                deleted: vec!["a", "c"],
            },
            Case {
                name: "new hard link to a group: whole group again",
                current: vec![
                    rec("a", 1, 100),
                    rec("b", 2, 100),
                    rec("c", 3, 100),
                    rec("h1", 4, 100),
                    rec("h2", 4, 100),
                    rec("h3", 4, 100),
                ],
                nlinks: vec![1, 1, 1, 3, 3, 3],
                reuse: vec![Some(0), Some(1), Some(2), None, None, None],
                deleted: vec![],
            },
            Case {
                name: "leader gone: the remaining link is archived as a file",
                current: vec![
                    rec("a", 1, 100),
                    rec("b", 2, 100),
                    rec("c", 3, 100),
                    rec("h2", 4, 100),
                ],
                nlinks: vec![1, 1, 1, 1],
                reuse: vec![Some(0), Some(1), Some(2), None],
                deleted: vec!["h1"],
            },
            Case {
                name: "inode reused by a new file",
                current: vec![
                    rec("a", 9, 100),
                    rec("b", 2, 100),
                    rec("c", 3, 100),
                    rec("h1", 4, 100),
                    rec("h2", 4, 100),
                ],
                nlinks: vec![1, 1, 1, 2, 2],
                reuse: vec![None, Some(1), Some(2), Some(3), Some(4)],
                deleted: vec![],
            },
        ];
        for c in cases {
            let (reuse, deleted) = match_previous(&c.current, &c.nlinks, &prev);
            assert_eq!(reuse, c.reuse, "{}", c.name);
            let deleted: Vec<String> = deleted.iter().map(|p| p.to_string()).collect();
            assert_eq!(deleted, c.deleted, "{}", c.name);
        }
    }

    #[test]
    fn paths_that_are_not_utf8_survive_json() {
        for bytes in [b"plain/name".to_vec(), b"bad\xff\xfe".to_vec(), Vec::new()] {
            let p = PathBytes(bytes.clone());
            let json = serde_json::to_string(&p).unwrap();
            let back: PathBytes = serde_json::from_str(&json).unwrap();
            assert_eq!(back.0, bytes, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&PathBytes(b"\xff".to_vec())).unwrap(),
            r#"{"hex":"ff"}"#
        );
    }

    #[test]
    fn manifest_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest {
            format: FORMAT,
            generation: "g1".into(),
            filesystems: vec![fs(vec![rec("a", 1, 1)])],
        };
        let path = dir.path().join("manifest.json.zst");
        let sum = m.save(&path).unwrap();
        assert_eq!(
            sum,
            crate::backup::sha256_hex(&std::fs::read(&path).unwrap())
        );
        assert_eq!(Manifest::load(&path).unwrap(), m);
        std::fs::write(&path, b"garbage").unwrap();
        assert!(format!("{:#}", Manifest::load(&path).unwrap_err()).contains("damaged"));
    }

    #[test]
    fn hostile_names_are_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("manifest.json.zst");
        let good = Manifest {
            format: FORMAT,
            generation: "g1".into(),
            filesystems: vec![fs(vec![rec("a", 1, 1), rec("b", 2, 1)])],
        };
        type Mutation = fn(&mut Manifest);
        let cases: [(Mutation, &str, &str); 6] = [
            (
                |m| m.generation = "../../etc".into(),
                "generation",
                "contains '/'",
            ),
            (
                |m| m.filesystems[0].archive = "../x".into(),
                "filesystems[0].archive",
                "contains '/'",
            ),
            (
                |m| m.filesystems[0].archive = "/etc/passwd".into(),
                "filesystems[0].archive",
                "contains '/'",
            ),
            (
                |m| m.filesystems[0].archive = "..".into(),
                "filesystems[0].archive",
                "is not a file name",
            ),
            (
                |m| m.filesystems[0].mountpoint = PathBytes(b"/srv/../etc".to_vec()),
                "filesystems[0].mountpoint",
                "is not normalised",
            ),
            (
                |m| m.filesystems[0].entries[1].gen = "..".into(),
                "filesystems[0].entries[1].gen",
                "is not a file name",
            ),
        ];
        for (mutate, field, problem) in cases {
            let mut m = good.clone();
            mutate(&mut m);
            m.save(&path).unwrap();
            let e = format!("{:#}", Manifest::load(&path).unwrap_err());
            assert!(e.contains("is refused: generation "), "{e}");
            assert!(e.contains(&format!("field `{field}`")), "{e}");
            assert!(e.contains(problem), "{e}");
        }
        good.save(&path).unwrap();
        assert_eq!(Manifest::load(&path).unwrap(), good);
    }
}
