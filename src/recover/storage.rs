//! md arrays, LUKS containers and LVM volume groups, recreated with their
//! old identities. Each function first looks whether its object already
//! exists with the right identity (a re-run after a failure) and then only
//! activates it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::Ctx;
use crate::exec::Cmd;
use crate::layout::{LuksDevice, MdArray, PhysicalVolume, VolumeGroup};
use crate::plan::{stack, NewLv, Placement};

/// `KEY=value` lines of `mdadm --export` output.
fn export_vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            )
        })
        .collect()
}

/// The array UUID of `dev`: of the running array (`--detail`) or of the
/// member's superblock (`--examine`).
pub(super) fn md_uuid_of(dev: &str, examine: bool) -> Option<String> {
    let mode = if examine { "--examine" } else { "--detail" };
    let out = Cmd::new("mdadm").args([mode, "--export", dev]).run().ok()?;
    export_vars(&out.stdout_str()).get("MD_UUID").cloned()
}

pub fn create_md(ctx: &Ctx, array: &MdArray) -> Result<()> {
    let same = |u: &str| u.eq_ignore_ascii_case(&array.uuid);
    if md_uuid_of(&array.device, false).is_some_and(|u| same(&u)) {
        log::info!(
            "md {} with UUID {} is already running",
            array.device,
            array.uuid
        );
        return Ok(());
    }
    let mut members: Vec<_> = array.members.iter().filter(|m| !m.spare).collect();
    members.sort_by_key(|m| m.role);
    let spares: Vec<_> = array.members.iter().filter(|m| m.spare).collect();
    if !ctx.dry_run()
        && members
            .iter()
            .all(|m| md_uuid_of(&m.device, true).is_some_and(|u| same(&u)))
    {
        log::info!("assembling md {} from its members", array.device);
        Cmd::new("mdadm")
            .args(["--assemble", "--run", &array.device])
            .args(array.members.iter().map(|m| m.device.as_str()))
            .env("MDADM_NO_SYSTEMCTL", "1")
            .mutating(&ctx.gate)
            .run()?;
        return Ok(());
    }
    // Slots without a member in the layout were missing at capture time.
    let mut slots: Vec<String> = Vec::new();
    for slot in 0..array.raid_devices {
        match members.iter().find(|m| m.role == Some(slot)) {
            Some(m) => slots.push(m.device.clone()),
            None => slots.push("missing".into()),
        }
    }
    let mut cmd = Cmd::new("mdadm")
        .args(["--create", &array.device, "--run"])
        .arg(format!("--uuid={}", array.uuid))
        .arg(format!("--level={}", array.level))
        .arg(format!("--metadata={}", array.metadata))
        .arg(format!("--raid-devices={}", array.raid_devices))
        .env("MDADM_NO_SYSTEMCTL", "1");
    if let Some(name) = &array.name {
        cmd = cmd.arg(format!("--name={name}"));
        if let Some((host, _)) = name.split_once(':') {
            cmd = cmd.arg(format!("--homehost={host}"));
        }
    }
    if let Some(chunk) = array.chunk_size_bytes.filter(|_| array.level != "raid1") {
        cmd = cmd.arg(format!("--chunk={}K", chunk / 1024));
    }
    if let Some(layout) = &array.layout {
        cmd = cmd.arg(format!("--layout={layout}"));
    }
    // Mirrors need no initial resync: every block that matters is written by
    // the restore. Parity arrays resync in the background.
    if matches!(array.level.as_str(), "raid1" | "raid10") {
        cmd = cmd.arg("--assume-clean");
    }
    if array.raid_devices == 1 {
        cmd = cmd.arg("--force");
    }
    if !spares.is_empty() {
        cmd = cmd.arg(format!("--spare-devices={}", spares.len()));
    }
    cmd.args(&slots)
        .args(spares.iter().map(|m| m.device.as_str()))
        .mutating(&ctx.gate)
        .run()
        .with_context(|| format!("creating md array {}", array.device))?;
    Ok(())
}

pub fn luks_uuid(dev: &str) -> Option<String> {
    Cmd::new("cryptsetup")
        .args(["luksUUID", dev])
        .run()
        .ok()
        .map(|o| o.stdout_str().trim().to_string())
}

pub fn format_luks(ctx: &Ctx, luks: &LuksDevice, name: &str) -> Result<()> {
    let mapped = format!("/dev/mapper/{name}");
    let existing = luks_uuid(&luks.device);
    let key = ctx.luks_key(luks)?;
    let keyfile = key.path();
    if existing
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(&luks.uuid))
    {
        log::info!(
            "LUKS container {} with UUID {} already exists",
            luks.device,
            luks.uuid
        );
    } else if let Some(header) = ctx.luks_header(luks) {
        Cmd::new("cryptsetup")
            .args([
                "luksHeaderRestore",
                "--batch-mode",
                &luks.device,
                "--header-backup-file",
            ])
            .arg(&header)
            .mutating(&ctx.gate)
            .run()
            .with_context(|| format!("restoring the LUKS header of {}", luks.device))?;
    } else {
        let mut cmd = Cmd::new("cryptsetup")
            .args(["luksFormat", "--batch-mode"])
            .arg(format!("--type=luks{}", luks.version))
            .arg(format!("--uuid={}", luks.uuid))
            .arg(format!("--cipher={}", luks.cipher))
            .arg(format!("--key-size={}", luks.key_size_bits));
        if let Some(h) = &luks.hash {
            cmd = cmd.arg(format!("--hash={h}"));
        }
        if luks.version >= 2 {
            if let Some(p) = &luks.pbkdf {
                cmd = cmd.arg(format!("--pbkdf={p}"));
            }
            if let Some(l) = &luks.label {
                cmd = cmd.arg(format!("--label={l}"));
            }
            if let Some(s) = &luks.subsystem {
                cmd = cmd.arg(format!("--subsystem={s}"));
            }
            if let Some(s) = luks.sector_size {
                cmd = cmd.arg(format!("--sector-size={s}"));
            }
        }
        if let Some(ms) = ctx.luks_iter_time_ms {
            cmd = cmd.arg(format!("--iter-time={ms}"));
        }
        cmd.arg("--key-file")
            .arg(keyfile)
            .arg(&luks.device)
            .mutating(&ctx.gate)
            .run()
            .with_context(|| format!("formatting LUKS on {}", luks.device))?;
    }
    if !Path::new(&mapped).exists() {
        Cmd::new("cryptsetup")
            .args(["open", "--key-file"])
            .arg(keyfile)
            .args([&luks.device, name])
            .mutating(&ctx.gate)
            .run()
            .with_context(|| format!("opening LUKS {} as {name}", luks.device))?;
    }
    Ok(())
}

fn lvm(args: &[&str]) -> Cmd {
    Cmd::new("lvm").args(args)
}

fn vg_uuid(vg: &str) -> Option<String> {
    lvm(&["vgs", "--noheadings", "-o", "vg_uuid", vg])
        .run()
        .ok()
        .map(|o| o.stdout_str().trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn create_vg(
    ctx: &Ctx,
    vg: &VolumeGroup,
    pvs: &[PhysicalVolume],
    lvs: &[NewLv],
    internal_uuids: &BTreeMap<String, String>,
) -> Result<()> {
    if vg_uuid(&vg.name).is_some_and(|u| u == vg.uuid) {
        log::info!(
            "volume group {} with UUID {} already exists; activating it",
            vg.name,
            vg.uuid
        );
        lvm(&["vgchange", "-ay", &vg.name])
            .mutating(&ctx.gate)
            .run()?;
        return Ok(());
    }
    if vg_uuid(&vg.name).is_some() {
        bail!(
            "a volume group named {} with another UUID is active here; deactivate or rename it first",
            vg.name
        );
    }
    for pv in pvs {
        lvm(&[
            "pvcreate",
            "-ff",
            "-y",
            "--norestorefile",
            "--uuid",
            &pv.uuid,
            &pv.device,
        ])
        .mutating(&ctx.gate)
        .run()
        .with_context(|| format!("creating PV {}", pv.device))?;
    }
    let extent = format!("{}b", vg.extent_size_bytes);
    let mut cmd = lvm(&["vgcreate", "-y", "-s", &extent, &vg.name]);
    cmd = cmd.args(pvs.iter().map(|p| p.device.as_str()));
    cmd.mutating(&ctx.gate)
        .run()
        .with_context(|| format!("creating volume group {}", vg.name))?;

    // LVs on their old extents first (before anything else takes them),
    // pools, then ordinary LVs, then thin volumes in their pools.
    let mut order: Vec<&NewLv> = lvs.iter().collect();
    order.sort_by_key(|l| {
        if matches!(l.placement, Placement::Extents(_)) {
            0
        } else if stack::is_thin_pool(&l.lv) {
            1
        } else if stack::is_thin(&l.lv) {
            3
        } else {
            2
        }
    });
    for l in &order {
        create_lv(ctx, vg, l)?;
    }
    if !ctx.gate.allow(format_args!(
        "give volume group {} and its logical volumes their old UUIDs \
         (vgcfgbackup, the metadata patched, vgcfgrestore)",
        vg.name
    )) {
        return Ok(());
    }
    let has_thin = order
        .iter()
        .any(|l| stack::is_thin_pool(&l.lv) || stack::is_thin(&l.lv));
    restore_uuids(ctx, vg, lvs, internal_uuids, has_thin)
}

/// lvcreate (and lvextend for further extent ranges) of one LV.
fn create_lv(ctx: &Ctx, vg: &VolumeGroup, l: &NewLv) -> Result<()> {
    let segtype =
        l.lv.segments
            .first()
            .map(|s| s.segtype.as_str())
            .unwrap_or("linear");
    let mut cmd = lvm(&["lvcreate", "-y", "-n", &l.lv.name]);
    // Old signatures on the new extents are wiped; a thin pool's data
    // starts unprovisioned (lvcreate refuses -W there), and a thin volume
    // reads zeros where nothing was written.
    if !matches!(segtype, "thin-pool" | "thin") {
        cmd = cmd.args(["-W", "y"]);
    }
    cmd.args(lv_shape_args(vg, l, segtype)?)
        .arg(&vg.name)
        .args(placement_args(&l.placement))
        .mutating(&ctx.gate)
        .run()
        .with_context(|| format!("creating logical volume {}/{}", vg.name, l.lv.name))?;
    if let Placement::Extents(ranges) = &l.placement {
        // The further segments, in their logical order.
        for r in &ranges[1..] {
            lvm(&["lvextend", "-y", "-l", &format!("+{}", r.count)])
                .arg(format!("{}/{}", vg.name, l.lv.name))
                .arg(r.arg())
                .mutating(&ctx.gate)
                .run()
                .with_context(|| format!("placing {}/{} on {}", vg.name, l.lv.name, r.arg()))?;
        }
    }
    Ok(())
}

/// The lvcreate arguments of an LV's type and size.
fn lv_shape_args(vg: &VolumeGroup, l: &NewLv, segtype: &str) -> Result<Vec<String>> {
    let size = format!("{}b", l.size_bytes);
    let args: Vec<String> = match segtype {
        "linear" => match &l.placement {
            Placement::Extents(r) => vec!["-l".into(), r[0].count.to_string()],
            _ => vec!["-L".into(), size],
        },
        "striped" => {
            let s = l.lv.segments.first().expect("a striped LV has a segment");
            let mut v = vec!["-L".into(), size, "-i".into(), s.stripes.to_string()];
            if let Some(ss) = s.stripe_size_bytes {
                v.extend(["-I".into(), format!("{ss}b")]);
            }
            v
        }
        "raid1" | "mirror" => {
            let copies = stack::lv_copies(&l.lv);
            [
                "--type",
                "raid1",
                "-m",
                &(copies - 1).to_string(),
                "--nosync",
                "-L",
                &size,
            ]
            .map(String::from)
            .to_vec()
        }
        "thin-pool" => vec!["--type".into(), "thin-pool".into(), "-L".into(), size],
        "thin" => {
            let pool =
                l.lv.pool
                    .as_deref()
                    .with_context(|| format!("thin LV {} has no pool", l.lv.name))?;
            ["--type", "thin", "-V", &size, "--thinpool", pool]
                .map(String::from)
                .to_vec()
        }
        other => bail!(
            "logical volume {}/{} has segment type {other}, which lifeboat cannot recreate",
            vg.name,
            l.lv.name
        ),
    };
    Ok(args)
}

/// The PV arguments of lvcreate for a placement (the first extent range:
/// the others are added by lvextend in order).
fn placement_args(p: &Placement) -> Vec<String> {
    match p {
        Placement::Free => Vec::new(),
        Placement::Pvs(pvs) => pvs.clone(),
        Placement::Extents(r) => vec![r[0].arg()],
    }
}

/// lvcreate cannot choose UUIDs: write the old VG and LV UUIDs into the new
/// metadata and restore it.
fn restore_uuids(
    ctx: &Ctx,
    vg: &VolumeGroup,
    lvs: &[NewLv],
    internal_uuids: &BTreeMap<String, String>,
    has_thin: bool,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("vg.conf");
    lvm(&["vgchange", "-an", &vg.name])
        .mutating(&ctx.gate)
        .run()?;
    lvm(&["vgcfgbackup", "-f"])
        .arg(&file)
        .arg(&vg.name)
        .mutating(&ctx.gate)
        .run()?;
    let text = std::fs::read_to_string(&file)?;
    let lv_ids: BTreeMap<String, String> = internal_uuids
        .clone()
        .into_iter()
        .chain(lvs.iter().map(|l| {
            (
                l.lv.name.trim_matches(['[', ']']).to_string(),
                l.lv.uuid.clone(),
            )
        }))
        .collect();
    let patched = patch_metadata_ids(&text, &vg.name, &vg.uuid, &lv_ids);
    std::fs::write(&file, patched)?;
    let mut cmd = lvm(&["vgcfgrestore", "-f"]).arg(&file);
    if has_thin {
        cmd = cmd.arg("--force");
    }
    cmd.arg(&vg.name)
        .mutating(&ctx.gate)
        .run()
        .with_context(|| format!("restoring the UUIDs of volume group {}", vg.name))?;
    lvm(&["vgchange", "-ay", &vg.name])
        .mutating(&ctx.gate)
        .run()?;
    Ok(())
}

/// Replaces the VG's `id` and the `id` of each named LV in LVM text
/// metadata (the format of vgcfgbackup).
pub fn patch_metadata_ids(
    text: &str,
    vg: &str,
    vg_id: &str,
    lv_ids: &BTreeMap<String, String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut path: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        let mut replaced = None;
        if let Some(name) = t.strip_suffix('{').map(str::trim) {
            path.push(name.to_string());
        } else if t == "}" {
            path.pop();
        } else if let Some(rest) = t.strip_prefix("id = \"") {
            let _ = rest;
            let indent = &line[..line.len() - line.trim_start().len()];
            let p: Vec<&str> = path.iter().map(String::as_str).collect();
            if p == [vg] {
                replaced = Some(format!("{indent}id = \"{vg_id}\""));
            } else if p.len() == 3 && p[0] == vg && p[1] == "logical_volumes" {
                if let Some(id) = lv_ids.get(p[2]) {
                    replaced = Some(format!("{indent}id = \"{id}\""));
                }
            }
        }
        out.push_str(replaced.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_ids_are_patched_by_section() {
        let text = "contents = \"Text Format Volume Group\"\n\
vg0 {\n\tid = \"NEWVG-id\"\n\tseqno = 3\n\tphysical_volumes {\n\t\tpv0 {\n\t\t\tid = \"PV-keep\"\n\t\t}\n\t}\n\
\tlogical_volumes {\n\t\troot {\n\t\t\tid = \"NEWLV-root\"\n\t\t\tsegment1 {\n\t\t\t\tstart_extent = 0\n\t\t\t}\n\t\t}\n\
\t\tother {\n\t\t\tid = \"NEWLV-other\"\n\t\t}\n\t}\n}\n";
        let ids = BTreeMap::from([("root".to_string(), "OLD-root".to_string())]);
        let out = patch_metadata_ids(text, "vg0", "OLD-vg", &ids);
        assert!(out.contains("\tid = \"OLD-vg\"\n"));
        assert!(out.contains("\t\t\tid = \"PV-keep\"\n"), "PV ids stay");
        assert!(out.contains("\t\t\tid = \"OLD-root\"\n"));
        assert!(
            out.contains("\t\t\tid = \"NEWLV-other\"\n"),
            "unknown LVs stay"
        );
        assert_eq!(out.lines().count(), text.lines().count());
    }

    #[test]
    fn export_lines() {
        let v = export_vars("MD_LEVEL=raid1\nMD_UUID=1:2:3:4\nMD_NAME='h:0'\n");
        assert_eq!(v["MD_UUID"], "1:2:3:4");
        assert_eq!(v["MD_NAME"], "h:0");
    }
}
