//! File system parameters: ext (`dumpe2fs -h`), xfs (`xfs_db -r -c info`,
//! works mounted or not), vfat (its boot sector), btrfs (its superblock,
//! sysfs, and `btrfs subvolume` on a mount point), and used bytes by statvfs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::exec::Cmd;
use crate::layout::{BtrfsSubvolume, FsParams};

/// Feature flags that say what state a file system is in, not how it was
/// made (set while mounted, cleared by fsck): not recorded.
const STATE_FEATURES: &[&str] = &["needs_recovery", "orphan_present"];

/// ext feature names by (word, bit): compat, incompat, ro_compat, in the
/// order `dumpe2fs -h` lists them (e2p's feature table).
const EXT_FEATURES: &[(usize, u32, &str)] = &[
    (0, 0, "dir_prealloc"),
    (0, 1, "imagic_inodes"),
    (0, 2, "has_journal"),
    (0, 3, "ext_attr"),
    (0, 4, "resize_inode"),
    (0, 5, "dir_index"),
    (0, 6, "lazy_bg"),
    (0, 7, "snapshot_bitmap"),
    (0, 9, "sparse_super2"),
    (0, 10, "fast_commit"),
    (0, 11, "stable_inodes"),
    (0, 12, "orphan_file"),
    (1, 0, "compression"),
    (1, 1, "filetype"),
    (1, 2, "needs_recovery"),
    (1, 3, "journal_dev"),
    (1, 4, "meta_bg"),
    (1, 6, "extent"),
    (1, 7, "64bit"),
    (1, 8, "mmp"),
    (1, 9, "flex_bg"),
    (1, 10, "ea_inode"),
    (1, 12, "dirdata"),
    (1, 13, "metadata_csum_seed"),
    (1, 14, "large_dir"),
    (1, 15, "inline_data"),
    (1, 16, "encrypt"),
    (1, 17, "casefold"),
    (2, 0, "sparse_super"),
    (2, 1, "large_file"),
    (2, 3, "huge_file"),
    (2, 4, "uninit_bg"),
    (2, 5, "dir_nlink"),
    (2, 6, "extra_isize"),
    (2, 7, "snapshot"),
    (2, 8, "quota"),
    (2, 9, "bigalloc"),
    (2, 10, "metadata_csum"),
    (2, 11, "replica"),
    (2, 12, "read-only"),
    (2, 13, "project"),
    (2, 14, "shared_blocks"),
    (2, 15, "verity"),
    (2, 16, "orphan_present"),
];

/// ext2/3/4 from its superblock (at 1 KiB), read directly: the same
/// values as `dumpe2fs -h` without a process per file system.
pub fn parse_ext_superblock(sb: &[u8]) -> Result<ExtInfo> {
    if sb.len() < 1024 || sb[56..58] != [0x53, 0xef] {
        bail!("no ext2/3/4 superblock (magic 0xef53 missing)");
    }
    let u32at = |o: usize| u32::from_le_bytes(sb[o..o + 4].try_into().unwrap());
    let u16at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let words = [u32at(92), u32at(96), u32at(100)];
    let is_64bit = words[1] & (1 << 7) != 0;
    let hi = |o: usize| if is_64bit { (u32at(o) as u64) << 32 } else { 0 };
    let blocks = u32at(4) as u64 | hi(0x150);
    let reserved = u32at(8) as u64 | hi(0x154);
    let log = u32at(24);
    if log > 6 {
        bail!("bad ext block size exponent {log}");
    }
    let block_size = 1024u32 << log;
    // Revision 0 file systems have 128-byte inodes and no inode size field.
    let inode_size = if u32at(76) == 0 {
        128
    } else {
        u16at(88) as u32
    };
    let features = EXT_FEATURES
        .iter()
        .filter(|(w, bit, name)| words[*w] & (1 << bit) != 0 && !STATE_FEATURES.contains(name))
        .map(|(_, _, n)| n.to_string())
        .collect();
    let percent = if blocks > 0 {
        (reserved as f64 * 10000.0 / blocks as f64).round() / 100.0
    } else {
        0.0
    };
    Ok(ExtInfo {
        params: FsParams::Ext {
            block_size,
            inode_size,
            features,
            reserved_blocks_percent: percent,
            inode_count: u32at(0) as u64,
        },
        size_bytes: blocks * block_size as u64,
    })
}

/// Reads the ext superblock of `path` (see [`parse_ext_superblock`]).
pub fn read_ext(path: &Path) -> Result<ExtInfo> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut sb = vec![0u8; 1024];
    f.seek(SeekFrom::Start(1024))
        .and_then(|_| f.read_exact(&mut sb))
        .with_context(|| format!("reading the ext superblock of {}", path.display()))?;
    parse_ext_superblock(&sb).with_context(|| format!("ext superblock of {}", path.display()))
}

/// ext2/3/4 as `dumpe2fs -h` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtInfo {
    pub params: FsParams,
    pub size_bytes: u64,
}

/// Parses `dumpe2fs -h` output.
pub fn parse_dumpe2fs(text: &str) -> Result<ExtInfo> {
    let mut block_size = None;
    let mut inode_size = None;
    let mut features = Vec::new();
    let mut block_count = None;
    let mut reserved = None;
    let mut inode_count = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "Block size" => block_size = v.parse::<u32>().ok(),
            "Inode size" => inode_size = v.parse::<u32>().ok(),
            "Filesystem features" => {
                features = v
                    .split_whitespace()
                    .filter(|f| *f != "(none)" && !STATE_FEATURES.contains(f))
                    .map(String::from)
                    .collect()
            }
            "Block count" => block_count = v.parse::<u64>().ok(),
            "Reserved block count" => reserved = v.parse::<u64>().ok(),
            "Inode count" => inode_count = v.parse::<u64>().ok(),
            _ => {}
        }
    }
    let (Some(bs), Some(blocks)) = (block_size, block_count) else {
        bail!("dumpe2fs output has no Block size or Block count line");
    };
    let percent = match reserved {
        Some(r) if blocks > 0 => (r as f64 * 10000.0 / blocks as f64).round() / 100.0,
        _ => 0.0,
    };
    Ok(ExtInfo {
        params: FsParams::Ext {
            block_size: bs,
            // Revision 0 file systems have no Inode size line: 128 bytes.
            inode_size: inode_size.unwrap_or(128),
            features,
            reserved_blocks_percent: percent,
            inode_count: inode_count.unwrap_or(0),
        },
        size_bytes: blocks * bs as u64,
    })
}

/// Parses `xfs_db -r -c info` (the same report as `xfs_info`).
pub fn parse_xfs_info(text: &str) -> Result<(FsParams, u64)> {
    // Key=value pairs grouped by section (meta-data, data, naming, log).
    let mut section = String::new();
    let mut get = std::collections::BTreeMap::<(String, String), String>::new();
    for line in text.lines() {
        let (head, rest) = match line.split_once('=') {
            Some((h, r)) if !h.trim().is_empty() => {
                section = h.trim().to_string();
                (section.clone(), r)
            }
            Some((_, r)) => (section.clone(), r),
            None => continue,
        };
        // "internal log           bsize=4096   blocks=1368, version=2"
        let tokens: Vec<&str> = rest
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .collect();
        for t in &tokens {
            if let Some((k, v)) = t.split_once('=') {
                get.entry((head.clone(), k.to_string()))
                    .or_insert_with(|| v.to_string());
            }
        }
        if head == "log" && rest.trim_start().starts_with("internal") {
            get.insert(("log".into(), "internal".into()), "1".into());
        }
    }
    let val = |s: &str, k: &str| get.get(&(s.to_string(), k.to_string())).cloned();
    let n = |s: &str, k: &str| val(s, k).and_then(|v| v.parse::<u64>().ok());
    let (Some(bsize), Some(blocks)) = (n("data", "bsize"), n("data", "blocks")) else {
        bail!("xfs_db info output has no data bsize or blocks");
    };
    let log_size = match (
        val("log", "internal"),
        n("log", "bsize"),
        n("log", "blocks"),
    ) {
        (Some(_), Some(b), Some(c)) => Some(b * c),
        _ => None,
    };
    Ok((
        FsParams::Xfs {
            block_size: bsize as u32,
            sector_size: n("meta-data", "sectsz").unwrap_or(512) as u32,
            crc: n("meta-data", "crc") == Some(1),
            reflink: n("meta-data", "reflink") == Some(1),
            ftype: n("naming", "ftype") == Some(1),
            log_size_bytes: log_size,
        },
        bsize * blocks,
    ))
}

/// A FAT boot sector: serial, FAT size (by cluster count, as the
/// specification defines it), sector size, and the size of the volume.
pub fn parse_fat_boot_sector(bs: &[u8]) -> Result<(FsParams, u64)> {
    if bs.len() < 512 || bs[510] != 0x55 || bs[511] != 0xaa {
        bail!("no FAT boot sector signature");
    }
    let u16at = |o: usize| u16::from_le_bytes([bs[o], bs[o + 1]]) as u64;
    let u32at = |o: usize| u32::from_le_bytes(bs[o..o + 4].try_into().unwrap()) as u64;
    let bps = u16at(11);
    let spc = bs[13] as u64;
    if !matches!(bps, 512 | 1024 | 2048 | 4096) || spc == 0 {
        bail!("bad FAT geometry ({bps} bytes per sector, {spc} per cluster)");
    }
    let reserved = u16at(14);
    let fats = bs[16] as u64;
    let root_entries = u16at(17);
    let total = if u16at(19) != 0 { u16at(19) } else { u32at(32) };
    let fat_sectors = if u16at(22) != 0 { u16at(22) } else { u32at(36) };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let data = total.saturating_sub(reserved + fats * fat_sectors + root_sectors);
    let clusters = data / spc;
    let fat_size = if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        32
    };
    let serial_at = if fat_size == 32 { 67 } else { 39 };
    Ok((
        FsParams::Vfat {
            serial: format!("{:08X}", u32at(serial_at)),
            fat_size,
            sector_size: bps as u32,
        },
        total * bps,
    ))
}

/// Reads the first sector of `path` and parses it as a FAT boot sector.
pub fn read_fat(path: &Path) -> Result<(FsParams, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut bs = vec![0u8; 512];
    f.read_exact(&mut bs)
        .with_context(|| format!("reading the boot sector of {}", path.display()))?;
    parse_fat_boot_sector(&bs).with_context(|| format!("FAT boot sector of {}", path.display()))
}

/// Size and used bytes from the btrfs superblock (at 64 KiB).
pub fn read_btrfs_super(path: &Path) -> Result<(u64, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut sb = vec![0u8; 4096];
    f.seek(SeekFrom::Start(64 << 10))
        .and_then(|_| f.read_exact(&mut sb))
        .with_context(|| format!("reading the btrfs superblock of {}", path.display()))?;
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        bail!("{} has no btrfs superblock", path.display());
    }
    let u64at = |o: usize| u64::from_le_bytes(sb[o..o + 8].try_into().unwrap());
    Ok((u64at(0x70), u64at(0x78)))
}

/// Parses `btrfs subvolume list -p -u [-a] MNT`: `ID 257 gen 8 parent 5
/// top level 5 uuid ... path <FS_TREE>/@home`. `readonly` holds the ids
/// that `btrfs subvolume list -r` printed.
pub fn parse_subvolume_list(text: &str, readonly: &[u64]) -> Vec<BtrfsSubvolume> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((head, path)) = line.split_once(" path ") else {
            continue;
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let Some(id) = after("ID").and_then(|v| v.parse().ok()) else {
            continue;
        };
        let parent = after("parent")
            .or_else(|| {
                // "top level N" when -p was not given
                words
                    .iter()
                    .position(|w| *w == "level")
                    .and_then(|i| words.get(i + 1))
                    .copied()
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let uuid = after("uuid").filter(|u| *u != "-").map(String::from);
        out.push(BtrfsSubvolume {
            id,
            parent_id: parent,
            path: path.trim().trim_start_matches("<FS_TREE>/").to_string(),
            uuid,
            readonly: readonly.contains(&id),
        });
    }
    out.sort_by_key(|s| s.id);
    out
}

/// The ids of a `btrfs subvolume list` output.
pub fn parse_subvolume_ids(text: &str) -> Vec<u64> {
    parse_subvolume_list(text, &[])
        .into_iter()
        .map(|s| s.id)
        .collect()
}

/// Parses `btrfs subvolume get-default`: `ID 256 gen 13 top level 5 path @`
/// or `ID 5 (FS_TREE)`.
pub fn parse_get_default(text: &str) -> Option<u64> {
    text.split_whitespace()
        .skip_while(|w| *w != "ID")
        .nth(1)?
        .parse()
        .ok()
}

/// The three commands that describe the subvolumes of the btrfs mounted
/// at `mnt`: list (with parents and UUIDs), list read-only, get-default.
/// The three btrfs calls that describe a mounted btrfs's subvolumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BtrfsQuery {
    /// `btrfs subvolume list -p -u`
    Subvolumes,
    /// `btrfs subvolume list -r`: the read-only ones
    Readonly,
    /// `btrfs subvolume get-default`
    Default,
}

impl BtrfsQuery {
    /// In the order [`btrfs_subvolumes`] takes their outputs.
    pub const ALL: [BtrfsQuery; 3] = [
        BtrfsQuery::Subvolumes,
        BtrfsQuery::Readonly,
        BtrfsQuery::Default,
    ];
}

/// The command of `query` on the btrfs mounted at `mnt`.
pub fn btrfs_cmd(mnt: &Path, query: BtrfsQuery) -> Cmd {
    let cmd = Cmd::new("btrfs").arg("subvolume");
    match query {
        BtrfsQuery::Subvolumes => cmd.args(["list", "-p", "-u"]),
        BtrfsQuery::Readonly => cmd.args(["list", "-r"]),
        BtrfsQuery::Default => cmd.arg("get-default"),
    }
    .arg(mnt)
}

/// Subvolumes and the default subvolume from the outputs of the
/// [`BtrfsQuery::ALL`] calls.
pub fn btrfs_subvolumes(
    mnt: &Path,
    list: String,
    ro: String,
    def: String,
) -> Result<(Vec<BtrfsSubvolume>, u64)> {
    let readonly = parse_subvolume_ids(&ro);
    let default = parse_get_default(&def).with_context(|| {
        format!(
            "unexpected `btrfs subvolume get-default {}` output: {def:?}",
            mnt.display()
        )
    })?;
    Ok((parse_subvolume_list(&list, &readonly), default))
}

/// The data and metadata profiles of a mounted btrfs, from
/// /sys/fs/btrfs/UUID/allocation/{data,metadata}/PROFILE.
pub fn btrfs_profiles(sys: &Path, uuid: &str) -> (Option<String>, Option<String>) {
    let profile = |kind: &str| {
        let dir = sys
            .join("fs/btrfs")
            .join(uuid)
            .join("allocation")
            .join(kind);
        let names = [
            "single", "dup", "raid0", "raid1", "raid10", "raid5", "raid6", "raid1c3", "raid1c4",
        ];
        names
            .iter()
            .find(|n| dir.join(n).is_dir())
            .map(|n| n.to_string())
    };
    (profile("data"), profile("metadata"))
}

/// Total and used bytes of the file system mounted at `path`.
pub fn statvfs_usage(path: &Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frsize;
    let free = st.blocks_free() as u64 * frsize;
    Some((total, total.saturating_sub(free)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/guest")
            .join(name)
    }
    fn text(name: &str) -> String {
        std::fs::read_to_string(fixture(name)).unwrap()
    }

    #[test]
    fn ext4_from_dumpe2fs() {
        let root = parse_dumpe2fs(&text("dumpe2fs-h-root.txt")).unwrap();
        assert_eq!(root.size_bytes, 160 << 20);
        let FsParams::Ext {
            block_size,
            inode_size,
            features,
            reserved_blocks_percent,
            ..
        } = root.params
        else {
            panic!("not ext")
        };
        assert_eq!((block_size, inode_size), (4096, 256));
        assert_eq!(reserved_blocks_percent, 2.0);
        for f in ["has_journal", "extent", "64bit", "metadata_csum"] {
            assert!(features.iter().any(|x| x == f), "{f} in {features:?}");
        }
        let boot = parse_dumpe2fs(&text("dumpe2fs-h-boot.txt")).unwrap();
        assert!(matches!(
            boot.params,
            FsParams::Ext {
                block_size: 1024,
                ..
            }
        ));
        assert_eq!(boot.size_bytes, 64 << 20);
        assert!(parse_dumpe2fs("nothing\n").is_err());
    }

    /// The superblock reader agrees with dumpe2fs on file systems made with
    /// different options.
    #[test]
    fn ext_superblock_matches_dumpe2fs() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("ext4", "-b 4096 -I 256 -m 2"),
            ("ext4", "-b 1024 -I 128 -m 0 -O ^has_journal,quota"),
            ("ext4", "-b 2048 -O ^64bit,^metadata_csum,inline_data -m 7"),
            ("ext3", "-b 4096"),
            ("ext2", "-b 1024 -r 0"),
        ];
        for (i, (kind, opts)) in cases.iter().enumerate() {
            let img = dir.path().join(format!("{i}.img"));
            std::fs::File::create(&img)
                .unwrap()
                .set_len(48 << 20)
                .unwrap();
            let mk = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("mkfs.{kind} -q -F {opts} '{}'", img.display()))
                .output()
                .unwrap();
            assert!(
                mk.status.success(),
                "{opts}: {}",
                String::from_utf8_lossy(&mk.stderr)
            );
            let dump = std::process::Command::new("dumpe2fs")
                .arg("-h")
                .arg(&img)
                .output()
                .unwrap();
            let want = parse_dumpe2fs(&String::from_utf8_lossy(&dump.stdout)).unwrap();
            let got = read_ext(&img).unwrap();
            assert_eq!(got, want, "{kind} {opts}");
        }
        assert!(parse_ext_superblock(&[0u8; 1024]).is_err());
    }

    #[test]
    fn xfs_from_xfs_db_info() {
        let (p, size) = parse_xfs_info(&text("xfs_db-info-home.txt")).unwrap();
        assert_eq!(size, 100 << 20);
        assert_eq!(
            p,
            FsParams::Xfs {
                block_size: 4096,
                sector_size: 512,
                crc: true,
                reflink: true,
                ftype: true,
                log_size_bytes: Some(1368 * 4096),
            }
        );
    }

    #[test]
    fn vfat_from_its_boot_sector() {
        let bs = std::fs::read(fixture("vfat-bootsector.bin")).unwrap();
        let (p, size) = parse_fat_boot_sector(&bs).unwrap();
        assert_eq!(
            p,
            FsParams::Vfat {
                serial: "1234ABCD".into(),
                fat_size: 16,
                sector_size: 512
            }
        );
        // mkfs.vfat left the last sectors of the 32 MiB partition unused.
        assert_eq!(size, 65520 * 512);
        assert!(parse_fat_boot_sector(&[0u8; 512]).is_err());
    }

    #[test]
    fn fat32_serial_is_at_its_own_offset() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fat32.img");
        let out = std::process::Command::new("mkfs.vfat")
            .args(["-F", "32", "-i", "0BADCAFE", "-C"])
            .arg(&img)
            .arg("65536")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (p, size) = read_fat(&img).unwrap();
        assert!(
            matches!(p, FsParams::Vfat { ref serial, fat_size: 32, .. } if serial == "0BADCAFE"),
            "{p:?}"
        );
        assert_eq!(size, 64 << 20);
    }

    #[test]
    fn btrfs_subvolume_lists() {
        let ro = parse_subvolume_ids(&text("btrfs-subvolume-list-r.txt"));
        assert_eq!(ro, vec![259]);
        for file in ["btrfs-subvolume-list.txt", "btrfs-subvolume-list-a.txt"] {
            let subs = parse_subvolume_list(&text(file), &ro);
            let got: Vec<(u64, u64, &str, bool)> = subs
                .iter()
                .map(|s| (s.id, s.parent_id, s.path.as_str(), s.readonly))
                .collect();
            assert_eq!(
                got,
                vec![
                    (256, 5, "@", false),
                    (257, 5, "@home", false),
                    (258, 5, "@snapshots", false),
                    (259, 258, "@snapshots/first", true),
                ],
                "{file}"
            );
            assert!(subs
                .iter()
                .all(|s| s.uuid.as_ref().is_some_and(|u| u.len() == 36)));
        }
        assert_eq!(parse_get_default(&text("btrfs-get-default.txt")), Some(256));
        assert_eq!(parse_get_default("ID 5 (FS_TREE)\n"), Some(5));
    }

    #[test]
    fn btrfs_profiles_from_sysfs_names() {
        let dir = tempfile::tempdir().unwrap();
        let u = "0e000000-0000-4000-8000-000000000007";
        std::fs::create_dir_all(
            dir.path()
                .join("fs/btrfs")
                .join(u)
                .join("allocation/data/single"),
        )
        .unwrap();
        std::fs::create_dir_all(
            dir.path()
                .join("fs/btrfs")
                .join(u)
                .join("allocation/metadata/dup"),
        )
        .unwrap();
        assert_eq!(
            btrfs_profiles(dir.path(), u),
            (Some("single".into()), Some("dup".into()))
        );
    }
}
