//! File systems and swap with their old UUIDs, labels and mkfs parameters.

use anyhow::{Context, Result};

use super::mount::TempMount;
use super::Ctx;
use crate::exec::{Cmd, Gate};
use crate::layout::{BtrfsSubvolume, Filesystem, FsParams, Swap};

/// ext features that describe the state of a file system, not its format.
const EXT_STATE_FEATURES: &[&str] = &["needs_recovery", "orphan_present", "mmp_active"];

/// The mkfs command line for `fs`.
pub fn mkfs_command(fs: &Filesystem) -> Cmd {
    let dev = fs.device.as_str();
    match (&fs.params, fs.fstype.as_str()) {
        (
            FsParams::Ext {
                block_size,
                inode_size,
                features,
                reserved_blocks_percent,
                inode_count,
            },
            t,
        ) => mke2fs(
            fs,
            t,
            *block_size,
            *inode_size,
            features,
            *reserved_blocks_percent,
            *inode_count,
        ),
        (
            FsParams::Xfs {
                block_size,
                sector_size,
                crc,
                reflink,
                ftype,
                ..
            },
            _,
        ) => {
            let mut m = format!("crc={}", u8::from(*crc));
            if *crc {
                m.push_str(&format!(",reflink={}", u8::from(*reflink)));
            }
            if let Some(u) = &fs.uuid {
                m.push_str(&format!(",uuid={u}"));
            }
            let mut c = xfs_test_env(Cmd::new("mkfs.xfs"))
                .args(["-f", "-q", "-m", &m])
                .arg("-b")
                .arg(format!("size={block_size}"))
                .arg("-s")
                .arg(format!("size={sector_size}"));
            if !*crc {
                c = c.arg("-n").arg(format!("ftype={}", u8::from(*ftype)));
            }
            with_label(c, fs, "-L").arg(dev)
        }
        (
            FsParams::Vfat {
                serial,
                fat_size,
                sector_size,
            },
            _,
        ) => {
            let c = Cmd::new("mkfs.vfat")
                .args(["-i", &serial.replace('-', "")])
                .arg("-F")
                .arg(fat_size.to_string())
                .arg("-S")
                .arg(sector_size.to_string());
            with_label(c, fs, "-n").arg(dev)
        }
        (
            FsParams::Btrfs {
                devices,
                data_profile,
                metadata_profile,
                ..
            },
            _,
        ) => {
            let mut c = Cmd::new("mkfs.btrfs").args(["-f", "-q"]);
            if let Some(u) = &fs.uuid {
                c = c.args(["-U", u]);
            }
            c = with_label(c, fs, "-L");
            if let Some(d) = data_profile {
                c = c.args(["-d", &d.to_lowercase()]);
            }
            if let Some(m) = metadata_profile {
                c = c.args(["-m", &m.to_lowercase()]);
            }
            if devices.is_empty() {
                c.arg(dev)
            } else {
                c.args(devices)
            }
        }
        (FsParams::Other {}, t) => mkfs_defaults(fs, t),
    }
}

/// `-L LABEL` (or the file system's own flag) when the file system has one.
fn with_label(c: Cmd, fs: &Filesystem, flag: &str) -> Cmd {
    match &fs.label {
        Some(l) => c.args([flag, l]),
        None => c,
    }
}

/// xfsprogs refuses file systems under 300 MB unless told that this is a
/// test setup; recovery recreates what existed.
fn xfs_test_env(c: Cmd) -> Cmd {
    c.env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
}

/// mke2fs with the old file system's parameters.
fn mke2fs(
    fs: &Filesystem,
    fstype: &str,
    block_size: u32,
    inode_size: u32,
    features: &[String],
    reserved_blocks_percent: impl std::fmt::Display,
    inode_count: u64,
) -> Cmd {
    let feats: Vec<&str> = features
        .iter()
        .map(String::as_str)
        .filter(|f| !EXT_STATE_FEATURES.contains(f))
        .collect();
    let mut c = Cmd::new("mke2fs")
        .args(["-F", "-q", "-t", fstype])
        .arg("-b")
        .arg(block_size.to_string())
        .arg("-I")
        .arg(inode_size.to_string())
        .arg("-O")
        .arg(format!("none,{}", feats.join(",")))
        .arg("-m")
        .arg(format!("{reserved_blocks_percent}"));
    // Keep the inode density: bytes per inode of the old file system. Never
    // below the block size, which mke2fs refuses (a block size raised for a
    // disk with larger sectors).
    if let Some(ratio) = fs_old_size(fs).checked_div(inode_count) {
        let ratio = ratio.clamp(u64::from(block_size).max(1024), 64 << 20);
        c = c.arg("-i").arg(ratio.to_string());
    }
    if let Some(u) = &fs.uuid {
        c = c.args(["-U", u]);
    }
    with_label(c, fs, "-L").arg(&fs.device)
}

/// Defaults of the file system's own mkfs, with the identity.
fn mkfs_defaults(fs: &Filesystem, fstype: &str) -> Cmd {
    let mut c = Cmd::new(format!("mkfs.{fstype}"));
    match fstype {
        "xfs" => {
            if let Some(u) = &fs.uuid {
                c = c.args(["-m", &format!("uuid={u}")]);
            }
            c = xfs_test_env(c.arg("-f"));
        }
        "vfat" => {
            if let Some(u) = &fs.uuid {
                c = c.args(["-i", &u.replace('-', "")]);
            }
        }
        "btrfs" => {
            c = c.arg("-f");
            if let Some(u) = &fs.uuid {
                c = c.args(["-U", u]);
            }
        }
        _ => {
            c = c.args(["-F", "-q"]);
            if let Some(u) = &fs.uuid {
                c = c.args(["-U", u]);
            }
        }
    }
    with_label(c, fs, if fstype == "vfat" { "-n" } else { "-L" }).arg(&fs.device)
}

fn fs_old_size(fs: &Filesystem) -> u64 {
    fs.size_bytes.max(1)
}

pub fn mkfs(ctx: &Ctx, fs: &Filesystem) -> Result<()> {
    mkfs_command(fs)
        .mutating(&ctx.gate)
        .run()
        .with_context(|| format!("making {} on {}", fs.fstype, fs.device))?;
    if let FsParams::Btrfs {
        subvolumes,
        default_subvolume_id,
        ..
    } = &fs.params
    {
        if !subvolumes.is_empty()
            && ctx.gate.allow(format_args!(
                "create the {} btrfs subvolumes of {}",
                subvolumes.len(),
                fs.device
            ))
        {
            create_subvolumes(fs, subvolumes, *default_subvolume_id, &ctx.gate)?;
        }
    }
    Ok(())
}

/// Creates the subvolumes (parents first) and sets the default one.
fn create_subvolumes(
    fs: &Filesystem,
    subvols: &[BtrfsSubvolume],
    default_id: u64,
    gate: &Gate,
) -> Result<()> {
    let top = TempMount::new(&fs.device, "btrfs", &["subvolid=5"])?;
    let mut sorted: Vec<&BtrfsSubvolume> = subvols.iter().collect();
    sorted.sort_by_key(|s| (s.path.matches('/').count(), s.path.clone()));
    for s in &sorted {
        let path = top.path().join(&s.path);
        if let Some(parent) = path.parent() {
            gate.create_dir_all(parent)?;
        }
        Cmd::new("btrfs")
            .args(["subvolume", "create"])
            .arg(&path)
            .mutating(gate)
            .run()
            .with_context(|| format!("creating subvolume {}", s.path))?;
    }
    if default_id != 5 {
        if let Some(def) = subvols.iter().find(|s| s.id == default_id) {
            Cmd::new("btrfs")
                .args(["subvolume", "set-default"])
                .arg(top.path().join(&def.path))
                .mutating(gate)
                .run()
                .with_context(|| format!("making {} the default subvolume", def.path))?;
        }
    }
    top.unmount()
}

/// The mkswap command line for `swap`.
pub fn mkswap_command(swap: &Swap) -> Cmd {
    let mut c = Cmd::new("mkswap").arg("-f");
    if let Some(u) = &swap.uuid {
        c = c.args(["-U", u]);
    }
    if let Some(l) = &swap.label {
        c = c.args(["-L", l]);
    }
    c.arg(&swap.device)
}

/// The same mkfs as [`mkfs_command`], run by `plan` against `files` (sparse
/// files of the planned size standing for the device, one per btrfs
/// device) on a device with `sector`-byte logical sectors, written nowhere
/// else: `mke2fs -n` (sector size through `MKE2FS_DEVICE_SECTSIZE`),
/// `mkfs.xfs -N`; mkfs.vfat and mkfs.btrfs have no such mode and write the
/// file itself, with the sector size given explicitly.
pub fn mkfs_check_command(fs: &Filesystem, sector: u32, files: &[String]) -> Cmd {
    let mut f = fs.clone();
    f.device = files.first().cloned().unwrap_or_default();
    if let FsParams::Btrfs { devices, .. } = &mut f.params {
        if !devices.is_empty() {
            *devices = files.to_vec();
        }
    }
    let sector_s = sector.to_string();
    let other = matches!(fs.params, FsParams::Other {});
    match fs.fstype.as_str() {
        "ext2" | "ext3" | "ext4" => mkfs_command(&f)
            .first_arg("-n")
            .env("MKE2FS_DEVICE_SECTSIZE", &sector_s)
            .env("MKE2FS_DEVICE_PHYS_SECTSIZE", &sector_s),
        "xfs" if other => mkfs_command(&f)
            .first_arg(format!("size={sector}"))
            .first_arg("-s")
            .first_arg("-N"),
        "xfs" => mkfs_command(&f).first_arg("-N"),
        "vfat" if other => mkfs_command(&f).first_arg(&sector_s).first_arg("-S"),
        // btrfs uses the page size (4096) whatever the device's sectors
        // (larger ones are refused by the plan).
        "btrfs" => mkfs_command(&f).first_arg("--nodiscard"),
        _ => mkfs_command(&f),
    }
}

pub fn mkswap(ctx: &Ctx, swap: &Swap) -> Result<()> {
    mkswap_command(swap)
        .mutating(&ctx.gate)
        .run()
        .with_context(|| format!("making swap on {}", swap.device))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(fstype: &str, params: FsParams) -> Filesystem {
        Filesystem {
            device: "/dev/vdb1".into(),
            fstype: fstype.into(),
            uuid: Some("0b6a3c8e-1111-4222-8333-944455556666".into()),
            label: Some("data".into()),
            size_bytes: 1 << 30,
            used_bytes: None,
            mountpoints: vec![],
            params,
        }
    }

    #[test]
    fn mkfs_command_lines() {
        let ext = fs(
            "ext4",
            FsParams::Ext {
                block_size: 4096,
                inode_size: 256,
                features: vec![
                    "has_journal".into(),
                    "extent".into(),
                    "needs_recovery".into(),
                ],
                reserved_blocks_percent: 5.0,
                inode_count: 65536,
            },
        );
        let line = mkfs_command(&ext).to_string();
        assert!(line.ends_with(
            "-F -q -t ext4 -b 4096 -I 256 -O none,has_journal,extent -m 5 -i 16384 -U 0b6a3c8e-1111-4222-8333-944455556666 -L data /dev/vdb1"
        ), "{line}");
        let xfs = fs(
            "xfs",
            FsParams::Xfs {
                block_size: 4096,
                sector_size: 512,
                crc: true,
                reflink: true,
                ftype: true,
                log_size_bytes: None,
            },
        );
        let line = mkfs_command(&xfs).to_string();
        assert!(line.ends_with(
            "-f -q -m crc=1,reflink=1,uuid=0b6a3c8e-1111-4222-8333-944455556666 -b size=4096 -s size=512 -L data /dev/vdb1"
        ), "{line}");
        let vfat = fs(
            "vfat",
            FsParams::Vfat {
                serial: "ABCD-1234".into(),
                fat_size: 32,
                sector_size: 512,
            },
        );
        assert!(mkfs_command(&vfat)
            .to_string()
            .ends_with("-i ABCD1234 -F 32 -S 512 -n data /dev/vdb1"));
    }
}
