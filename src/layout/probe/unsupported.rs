//! Storage that lifeboat cannot recreate: the tables of signatures, device
//! mapper UUIDs, device names and LVM segment types, and the check that
//! records what a capture found of them.

use super::ctx::Ctx;
use super::sysfs::DevKind;
use crate::layout::SegType;

/// File systems whose parameters lifeboat knows; other signatures are still
/// recorded as file systems with `FsParams::Other`.
pub(super) const NOT_FILESYSTEMS: &[&str] =
    &["swap", "LVM2_member", "linux_raid_member", "crypto_LUKS"];

/// Signatures of storage that lifeboat cannot recreate, with the reason.
pub(super) fn unsupported_signature(fstype: &str) -> Option<(&'static str, &'static str)> {
    Some(match fstype {
        "zfs_member" => (
            "zfs",
            "ZFS pools are not supported; recreate the pool by hand",
        ),
        "bcache" => ("bcache", "bcache devices are not supported"),
        "drbd" => ("drbd", "DRBD devices are not supported"),
        "ceph" => ("ceph", "Ceph OSD devices are not supported"),
        "VMFS" | "vmfs_volume_member" => ("vmfs", "VMware file systems are not supported"),
        t if t.ends_with("_raid_member") && t != "linux_raid_member" => (
            "fakeraid",
            "firmware (fake) RAID metadata is not supported; use md with native metadata",
        ),
        _ => return None,
    })
}

/// What the unsupported dm target of a dm uuid is, if it is one.
pub(super) fn unsupported_dm(uuid: &str) -> Option<(&'static str, &'static str)> {
    if uuid.starts_with("LVM-")
        || uuid.starts_with("CRYPT-LUKS1-")
        || uuid.starts_with("CRYPT-LUKS2-")
    {
        return None;
    }
    Some(if uuid.starts_with("mpath-") {
        (
            "multipath",
            "multipath devices are not supported; lifeboat sees the paths as separate disks",
        )
    } else if uuid.starts_with("CRYPT-INTEGRITY") || uuid.starts_with("INTEGRITY-") {
        ("dm-integrity", "dm-integrity devices are not supported")
    } else if uuid.starts_with("CRYPT-PLAIN") || uuid.starts_with("CRYPT-") {
        (
            "dm-crypt",
            "dm-crypt without a LUKS header cannot be recreated from the disk",
        )
    } else if uuid.starts_with("VDO-") {
        ("vdo", "VDO volumes are not supported")
    } else if uuid.starts_with("part") {
        (
            "dm-partition",
            "partitions of a device-mapper device (kpartx) are not supported",
        )
    } else {
        (
            "device-mapper",
            "a device-mapper device that is not LVM or LUKS; lifeboat cannot recreate it",
        )
    })
}

/// Kernel names of block devices that are unsupported stacks by name.
pub(super) fn unsupported_name(name: &str) -> Option<(&'static str, &'static str)> {
    let num = |p: &str| {
        name.strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_digit()))
    };
    Some(if num("bcache") {
        ("bcache", "bcache devices are not supported")
    } else if num("drbd") {
        ("drbd", "DRBD devices are not supported")
    } else if num("nbd") {
        ("nbd", "network block devices are not supported")
    } else if num("rbd") {
        ("rbd", "Ceph RBD devices are not supported")
    } else if num("zd") {
        ("zfs", "ZFS volumes are not supported")
    } else {
        return None;
    })
}

/// LVM segment types recovery cannot recreate yet.
pub(super) fn unsupported_segtype(segtype: &SegType) -> bool {
    matches!(
        segtype.as_str(),
        "cache" | "cache-pool" | "writecache" | "vdo" | "vdo-pool" | "integrity"
    )
}

pub(super) fn check_unsupported(ctx: &mut Ctx) {
    let mut found = Vec::new();
    for b in ctx.scoped() {
        if let DevKind::Dm { uuid, .. } = &b.kind {
            if let Some((k, r)) = unsupported_dm(uuid) {
                found.push((k, Some(b.path.clone()), r));
            }
        }
        if let Some((k, r)) = unsupported_name(&b.name) {
            found.push((k, Some(b.path.clone()), r));
        }
        if let Some((k, r)) = ctx
            .probe(b)
            .and_then(|p| p.fstype.as_deref())
            .and_then(unsupported_signature)
        {
            found.push((k, Some(b.path.clone()), r));
        }
    }
    for m in &ctx.mountinfo {
        if m.fstype == "zfs" {
            found.push((
                "zfs",
                Some(m.source.clone()),
                "ZFS pools are not supported; recreate the pool by hand",
            ));
        }
    }
    for (k, d, r) in found {
        ctx.unsupported(k, d, r);
    }
}
