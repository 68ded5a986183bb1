//! The storage stack's collectors: md arrays, LUKS devices (with header
//! backups) and LVM.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};

use super::ctx::{Ctx, Job};
use super::sysfs::{BlockDev, DevKind};
use super::unsupported::unsupported_segtype;
use super::{blkid, luks, lvm, md, sysfs};
use crate::exec::Cmd;
use crate::layout::*;

pub(super) fn collect_md(ctx: &mut Ctx) -> Result<Vec<MdArray>> {
    let arrays: Vec<BlockDev> = ctx
        .scoped()
        .filter(|b| b.kind == DevKind::Md)
        .cloned()
        .collect();
    let mut out = Vec::new();
    for b in arrays {
        let meta = std::fs::read_to_string(
            ctx.sys
                .join("block")
                .join(&b.name)
                .join("md/metadata_version"),
        )
        .unwrap_or_default();
        if meta.trim().starts_with("external") {
            ctx.unsupported(
                "md-external-metadata",
                Some(b.path.clone()),
                "md arrays with external (IMSM/DDF) metadata are not supported",
            );
            continue;
        }
        if b.size_bytes == 0 {
            continue; // an inactive array
        }
        if !ctx.node_exists(&b) {
            continue;
        }
        let text = ctx
            .output(&Job::MdDetail(b.name.clone()))
            .with_context(|| format!("reading md array {}", b.path))?;
        let detail = md::parse_detail_export(&text);
        let dir = ctx.sys.join("block").join(&b.name);
        let canon = |p: &str| ctx.canonical(p);
        out.push(md::array(&b.path, b.size_bytes, &detail, &dir, &canon));
    }
    Ok(out)
}

/// Whether a crypttab/fstab device spec names `dev` (a path, UUID=,
/// PARTUUID=, LABEL=, or a /dev/disk/by-* link).
pub(super) fn spec_names(ctx: &Ctx, spec: &str, dev: &BlockDev) -> bool {
    let probe = ctx.probe(dev);
    let eq = |a: Option<&String>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
    if let Some(u) = spec
        .strip_prefix("UUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
    {
        return eq(probe.and_then(|p| p.uuid.as_ref()), u.trim_matches('"'));
    }
    if let Some(u) = spec
        .strip_prefix("PARTUUID=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-partuuid/"))
    {
        return eq(
            probe.and_then(|p| p.part_entry_uuid.as_ref()),
            u.trim_matches('"'),
        );
    }
    if let Some(l) = spec
        .strip_prefix("LABEL=")
        .or_else(|| spec.strip_prefix("/dev/disk/by-label/"))
    {
        return probe.and_then(|p| p.label.as_deref()) == Some(l.trim_matches('"'));
    }
    ctx.devs
        .resolve(spec, &ctx.dev_root())
        .is_some_and(|b| b.name == dev.name)
}

pub(super) fn collect_luks(ctx: &Ctx, crypttab: &[CrypttabEntry]) -> Result<Vec<LuksDevice>> {
    let mut out = Vec::new();
    for b in ctx.scoped() {
        if !ctx.is_luks(b) || !ctx.node_exists(b) {
            continue;
        }
        let dev = blkid::prefixed(&ctx.opts.root, &sysfs::dev_path(&b.name));
        let mut l = match luks::read_header(Path::new(&dev)) {
            Ok(l) => l,
            Err(e) => {
                log::debug!("{e:#}; asking cryptsetup");
                let text = ctx
                    .output(&Job::LuksDump(b.name.clone()))
                    .with_context(|| format!("reading the LUKS header of {}", b.path))?;
                luks::parse_dump(&text).with_context(|| format!("LUKS header of {}", b.path))?
            }
        };
        l.device = b.path.clone();
        // The active mapping: a dm holder whose uuid names this LUKS uuid.
        for h in &b.holders {
            if let Some(hb) = ctx.devs.by_name(h) {
                if let DevKind::Dm { uuid, name } = &hb.kind {
                    if luks::mapping_from_dm_uuid(uuid, &l.uuid).is_some() {
                        l.mapping_name = Some(name.clone());
                        l.mapped_device = Some(hb.path.clone());
                    }
                }
            }
        }
        let names_uuid = |spec: &str| {
            spec.strip_prefix("UUID=")
                .or_else(|| spec.strip_prefix("/dev/disk/by-uuid/"))
                .is_some_and(|u| u.trim_matches('"').eq_ignore_ascii_case(&l.uuid))
        };
        if let Some(entry) = crypttab
            .iter()
            .find(|e| names_uuid(&e.device) || spec_names(ctx, &e.device, b))
        {
            l.mapping_name = Some(entry.name.clone());
        }
        if let Some(dir) = &ctx.opts.luks_header_dir {
            l.header_backup = Some(backup_luks_header(&dev, &l.uuid, dir)?);
        }
        out.push(l);
    }
    Ok(out)
}

/// `cryptsetup luksHeaderBackup` into `dir/luks-header-UUID.img`, mode 0600;
/// returns the file name. cryptsetup writes into a private folder of its own
/// (mode 0700, unpredictable name) and the result is renamed over.
pub(super) fn backup_luks_header(dev: &str, uuid: &str, dir: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let name = format!("luks-header-{uuid}.img");
    crate::names::component("LUKS header backup", &name)
        .with_context(|| format!("LUKS UUID of {dev}"))?;
    let dest = dir.join(&name);
    let work = tempfile::Builder::new()
        .prefix(".luks-header.")
        .tempdir_in(dir)
        .with_context(|| format!("creating a temporary folder in {}", dir.display()))?;
    let tmp = work.path().join(&name);
    Cmd::new("cryptsetup")
        .args(["luksHeaderBackup", dev, "--header-backup-file"])
        .arg(&tmp)
        .run()
        .with_context(|| format!("backing up the LUKS header of {dev}"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 0600 on {}", tmp.display()))?;
    std::fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    Ok(name)
}

pub(super) fn collect_lvm(ctx: &mut Ctx, early: Option<lvm::LvmJob>) -> Result<Lvm> {
    let any = ctx.scoped().any(|b| {
        matches!(&b.kind, DevKind::Dm { uuid, .. } if uuid.starts_with("LVM-"))
            || ctx.probe(b).and_then(|p| p.fstype.as_deref()) == Some("LVM2_member")
    });
    // lvm scans the system's own /dev: it cannot read a fixture tree.
    let job = match early {
        Some(job) => job,
        None if any && ctx.opts.root == Path::new("/") => lvm::LvmJob::start()?,
        None => return Ok(Lvm::default()),
    };
    let canon = |p: &str| ctx.canonical(p);
    let node = |p: &str| match ctx.devs.resolve(p, &ctx.dev_root()) {
        Some(b) => ctx.path(&sysfs::dev_path(&b.name)),
        None => ctx.path(p),
    };
    let mut lvm = job.finish(&canon, &node).context("reading LVM")?;
    // Keep what sits on the captured disks.
    let in_scope = |dev: &str| {
        ctx.devs
            .resolve(dev, &ctx.dev_root())
            .is_some_and(|b| ctx.in_scope(b))
    };
    lvm.pvs.retain(|p| in_scope(&p.device));
    let vgs: BTreeSet<String> = lvm.pvs.iter().filter_map(|p| p.vg.clone()).collect();
    lvm.vgs.retain(|v| vgs.contains(&v.name));
    lvm.lvs.retain(|l| vgs.contains(&l.vg));
    let odd: Vec<(String, String)> = lvm
        .lvs
        .iter()
        .flat_map(|l| {
            l.segments
                .iter()
                .filter(|s| unsupported_segtype(&s.segtype))
                .map(move |s| (s.segtype.to_string(), format!("{}/{}", l.vg, l.name)))
        })
        .collect();
    for (segtype, lv) in odd {
        ctx.unsupported(
            &format!("lvm-{segtype}"),
            Some(lv),
            &format!("LVM {segtype} volumes cannot be recreated yet"),
        );
    }
    Ok(lvm)
}
