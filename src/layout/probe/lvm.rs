//! LVM from one `lvm fullreport` (JSON, sizes in bytes) and one
//! `vgcfgbackup -f DIR/%s` for the metadata text of every VG.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::exec::Cmd;
use crate::layout::{LogicalVolume, LvSegment, Lvm, PhysicalVolume, VolumeGroup};

/// The fullreport command line: every report with the fields the model needs.
pub fn fullreport_cmd() -> Cmd {
    Cmd::new("lvm").args([
        "fullreport",
        "--all",
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "--configreport",
        "vg",
        "-o",
        "vg_name,vg_uuid,vg_extent_size,vg_size,vg_free",
        "--configreport",
        "pv",
        "-o",
        "pv_name,pv_uuid,vg_name,pv_size,dev_size,pe_start",
        "--configreport",
        "lv",
        "-o",
        "lv_name,vg_name,lv_uuid,lv_size,lv_layout,lv_role,pool_lv,lv_active,lv_dm_path",
        "--configreport",
        "seg",
        "-o",
        "lv_uuid,segtype,seg_start,seg_size,stripes,stripe_size,devices",
    ])
}

#[derive(Debug, Deserialize)]
struct Report {
    report: Vec<ReportVg>,
}

#[derive(Debug, Deserialize)]
struct ReportVg {
    #[serde(default)]
    vg: Vec<VgRow>,
    #[serde(default)]
    pv: Vec<PvRow>,
    #[serde(default)]
    lv: Vec<LvRow>,
    #[serde(default)]
    seg: Vec<SegRow>,
}

#[derive(Debug, Deserialize)]
struct VgRow {
    vg_name: String,
    vg_uuid: String,
    vg_extent_size: String,
    vg_size: String,
    vg_free: String,
}

#[derive(Debug, Deserialize)]
struct PvRow {
    pv_name: String,
    pv_uuid: String,
    vg_name: String,
    pv_size: String,
    dev_size: String,
    pe_start: String,
}

#[derive(Debug, Deserialize)]
struct LvRow {
    lv_name: String,
    vg_name: String,
    lv_uuid: String,
    lv_size: String,
    lv_layout: String,
    lv_role: String,
    pool_lv: String,
    lv_active: String,
    lv_dm_path: String,
}

#[derive(Debug, Deserialize)]
struct SegRow {
    lv_uuid: String,
    segtype: String,
    seg_start: String,
    seg_size: String,
    stripes: String,
    stripe_size: String,
    devices: String,
}

fn num(field: &str, v: &str) -> Result<u64> {
    if v.is_empty() {
        return Ok(0);
    }
    v.parse()
        .with_context(|| format!("lvm reported {field} = {v:?}, expected a number of bytes"))
}

/// `[pool_tdata]` (a hidden LV as `--all` shows it) is `pool_tdata`.
fn bare(name: &str) -> String {
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// The /dev/mapper name of an LV: dashes in either name doubled.
pub fn dm_path(vg: &str, lv: &str) -> String {
    format!(
        "/dev/mapper/{}-{}",
        vg.replace('-', "--"),
        lv.replace('-', "--")
    )
}

/// Parses the fullreport JSON. `canonical` maps PV paths to capture names;
/// the VG metadata is filled in later from vgcfgbackup.
pub fn parse_fullreport(json: &str, canonical: &dyn Fn(&str) -> String) -> Result<Lvm> {
    let r: Report = serde_json::from_str(json).context("parsing lvm fullreport JSON")?;
    let mut lvm = Lvm::default();
    for vgr in r.report {
        for v in vgr.vg {
            lvm.vgs.push(VolumeGroup {
                extent_size_bytes: num("vg_extent_size", &v.vg_extent_size)?,
                size_bytes: num("vg_size", &v.vg_size)?,
                free_bytes: num("vg_free", &v.vg_free)?,
                name: v.vg_name,
                uuid: v.vg_uuid,
                metadata: String::new(),
            });
        }
        for p in vgr.pv {
            lvm.pvs.push(PhysicalVolume {
                device: canonical(&p.pv_name),
                uuid: p.pv_uuid,
                vg: (!p.vg_name.is_empty()).then_some(p.vg_name),
                size_bytes: num("pv_size", &p.pv_size)?,
                dev_size_bytes: num("dev_size", &p.dev_size)?,
                pe_start_bytes: num("pe_start", &p.pe_start)?,
            });
        }
        let mut segs: BTreeMap<String, Vec<LvSegment>> = BTreeMap::new();
        for s in vgr.seg {
            let stripe_size = num("stripe_size", &s.stripe_size)?;
            segs.entry(s.lv_uuid).or_default().push(LvSegment {
                segtype: s.segtype.into(),
                start_bytes: num("seg_start", &s.seg_start)?,
                size_bytes: num("seg_size", &s.seg_size)?,
                stripes: num("stripes", &s.stripes)? as u32,
                stripe_size_bytes: (stripe_size > 0).then_some(stripe_size),
                devices: s
                    .devices
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .map(|d| canonical_extent(d, canonical))
                    .collect(),
            });
        }
        for l in vgr.lv {
            let name = bare(&l.lv_name);
            let mut segments = segs.remove(&l.lv_uuid).unwrap_or_default();
            segments.sort_by_key(|s| s.start_bytes);
            lvm.lvs.push(LogicalVolume {
                device: if l.lv_dm_path.is_empty() {
                    dm_path(&l.vg_name, &name)
                } else {
                    l.lv_dm_path
                },
                size_bytes: num("lv_size", &l.lv_size)?,
                layout: l.lv_layout,
                role: l.lv_role,
                pool: (!l.pool_lv.is_empty()).then(|| bare(&l.pool_lv)),
                active: l.lv_active == "active",
                segments,
                vg: l.vg_name,
                name,
                uuid: l.lv_uuid,
            });
        }
    }
    lvm.vgs.sort_by(|a, b| a.name.cmp(&b.name));
    lvm.pvs
        .sort_by(|a, b| (&a.vg, &a.device).cmp(&(&b.vg, &b.device)));
    lvm.lvs
        .sort_by(|a, b| (&a.vg, &a.name).cmp(&(&b.vg, &b.name)));
    Ok(lvm)
}

/// `/dev/dm-0(40)` is `/dev/mapper/cryptpv(40)`; `pool_tdata(0)` and
/// `[pool_tdata](0)` are `pool_tdata(0)`.
fn canonical_extent(d: &str, canonical: &dyn Fn(&str) -> String) -> String {
    let (dev, ext) = match d.rfind('(') {
        Some(i) => d.split_at(i),
        None => (d, ""),
    };
    if dev.starts_with('/') {
        format!("{}{ext}", canonical(dev))
    } else {
        format!("{}{ext}", bare(dev))
    }
}

/// The metadata text of the VG on the PV at `path`, read from the PV's
/// first metadata area: the LVM2 label (in one of the first four sectors),
/// the PV header's metadata area list, the area's header and its current
/// text location (which may wrap around the circular buffer). This is the
/// text format that `vgcfgbackup` writes and `vgcfgrestore -f` reads.
pub fn read_pv_metadata(path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let at = |off: u64, len: usize| -> Result<Vec<u8>> {
        let mut b = vec![0u8; len];
        f.read_exact_at(&mut b, off)
            .with_context(|| format!("reading {} at {off}", path.display()))?;
        Ok(b)
    };
    let head = at(0, 2048)?;
    let u32le = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64le = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let label = (0..4)
        .map(|s| s * 512)
        .find(|&o| &head[o..o + 8] == b"LABELONE" && &head[o + 24..o + 32] == b"LVM2 001")
        .with_context(|| format!("{} has no LVM2 label", path.display()))?;
    // PV header: uuid[32], device size, then the data area list and the
    // metadata area list, each ended by a zero entry.
    let mut o = label + u32le(&head, label + 20) as usize + 40;
    while o + 16 <= head.len() && u64le(&head, o) != 0 {
        o += 16;
    }
    o += 16;
    let mda_offset = u64le(&head, o);
    if mda_offset == 0 {
        anyhow::bail!("the PV {} has no metadata area", path.display());
    }
    let mda = at(mda_offset, 512)?;
    if &mda[4..20] != b" LVM2 x[5A%r0N*>" {
        anyhow::bail!("bad LVM metadata area header on {}", path.display());
    }
    let (start, size) = (u64le(&mda, 24), u64le(&mda, 32));
    let (text_off, text_len) = (u64le(&mda, 40), u64le(&mda, 48) as usize);
    if text_len == 0 || text_off >= size {
        anyhow::bail!("the metadata area of {} holds no VG", path.display());
    }
    let first = text_len.min((size - text_off) as usize);
    let mut text = at(start + text_off, first)?;
    if first < text_len {
        // Wrapped: the rest follows the 512-byte area header.
        text.extend(at(start + 512, text_len - first)?);
    }
    let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
    Ok(String::from_utf8_lossy(&text[..end]).into_owned())
}

/// The VG name of a metadata text (`vg0 {` on its first line).
pub fn metadata_vg_name(text: &str) -> Option<&str> {
    text.lines().next()?.strip_suffix(" {").map(str::trim)
}

/// `lvm fullreport` in its own thread (the slowest tool call of a
/// capture), started as soon as sysfs shows LVM; the VG metadata is then
/// read from the PVs, with `vgcfgbackup` as the fallback.
pub struct LvmJob {
    report: std::thread::JoinHandle<Result<String>>,
}

impl LvmJob {
    pub fn start() -> Result<LvmJob> {
        Ok(LvmJob {
            report: std::thread::spawn(|| fullreport_cmd().read()),
        })
    }

    /// Waits for the report and builds the model. `canonical` maps PV
    /// paths; `node` gives the readable node of a canonical device path.
    pub fn finish(
        self,
        canonical: &dyn Fn(&str) -> String,
        node: &dyn Fn(&str) -> std::path::PathBuf,
    ) -> Result<Lvm> {
        let report = self
            .report
            .join()
            .map_err(|_| anyhow::anyhow!("the thread running lvm fullreport panicked"))?;
        let mut lvm = parse_fullreport(&report?, canonical)?;
        let mut missing = Vec::new();
        for vg in &mut lvm.vgs {
            let text = lvm
                .pvs
                .iter()
                .filter(|p| p.vg.as_deref() == Some(vg.name.as_str()))
                .find_map(|p| {
                    read_pv_metadata(&node(&p.device))
                        .map_err(|e| log::debug!("{e:#}"))
                        .ok()
                        .filter(|t| metadata_vg_name(t) == Some(vg.name.as_str()))
                });
            match text {
                Some(t) => vg.metadata = t,
                None => missing.push(vg.name.clone()),
            }
        }
        if !missing.is_empty() {
            let dir = tempfile::tempdir().context("creating a scratch folder for vgcfgbackup")?;
            for vg in lvm.vgs.iter_mut().filter(|v| missing.contains(&v.name)) {
                let file = dir.path().join(format!("{}.vg", vg.name));
                Cmd::new("vgcfgbackup")
                    .arg("-f")
                    .arg(&file)
                    .arg(&vg.name)
                    .run()
                    .with_context(|| {
                        format!("saving the LVM metadata of volume group {}", vg.name)
                    })?;
                vg.metadata = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
            }
        }
        Ok(lvm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/guest")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn guest_fullreport() {
        let lvm = parse_fullreport(&fixture("lvm-fullreport.json"), &|p| p.to_string()).unwrap();
        let vgs: Vec<(&str, u64)> = lvm
            .vgs
            .iter()
            .map(|v| (v.name.as_str(), v.extent_size_bytes))
            .collect();
        assert_eq!(vgs, vec![("vg0", 4 << 20), ("vg1", 4 << 20)]);
        let pvs: Vec<(&str, &str, Option<&str>)> = lvm
            .pvs
            .iter()
            .map(|p| (p.device.as_str(), p.uuid.as_str(), p.vg.as_deref()))
            .collect();
        assert_eq!(
            pvs,
            vec![
                (
                    "/dev/mapper/cryptpv",
                    "LBpv00-0000-0000-0000-0000-0000-000000",
                    Some("vg0")
                ),
                (
                    "/dev/vdb3",
                    "LBpv01-0000-0000-0000-0000-0000-000001",
                    Some("vg1")
                ),
                (
                    "/dev/vdc1",
                    "LBpv02-0000-0000-0000-0000-0000-000002",
                    Some("vg1")
                ),
            ]
        );
        assert!(lvm.pvs.iter().all(|p| p.pe_start_bytes == 1 << 20));
        let lv = |vg: &str, name: &str| {
            lvm.lvs
                .iter()
                .find(|l| l.vg == vg && l.name == name)
                .unwrap_or_else(|| panic!("{vg}/{name}"))
        };
        let root = lv("vg0", "root");
        assert_eq!(
            (root.size_bytes, root.layout.as_str()),
            (160 << 20, "linear")
        );
        assert_eq!(root.device, "/dev/mapper/vg0-root");
        assert_eq!(root.segments.len(), 1);
        assert_eq!(root.segments[0].devices, vec!["/dev/mapper/cryptpv(0)"]);
        let stripe = lv("vg1", "stripe");
        assert_eq!(stripe.segments[0].segtype, "striped");
        assert_eq!(stripe.segments[0].stripes, 2);
        assert_eq!(stripe.segments[0].stripe_size_bytes, Some(64 << 10));
        assert_eq!(
            stripe.segments[0].devices,
            vec!["/dev/vdb3(0)", "/dev/vdc1(0)"]
        );
        let pool = lv("vg0", "pool");
        assert_eq!(pool.layout, "thin,pool");
        assert_eq!(pool.segments[0].segtype, "thin-pool");
        assert_eq!(pool.segments[0].devices, vec!["pool_tdata(0)"]);
        let thin = lv("vg0", "thin1");
        assert_eq!(
            (thin.layout.as_str(), thin.pool.as_deref()),
            ("thin,sparse", Some("pool"))
        );
        assert_eq!(thin.size_bytes, 200 << 20);
        assert!(thin.active);
        // --all shows the hidden volumes of the pool, without brackets
        assert_eq!(lv("vg0", "pool_tdata").role, "private,thin,pool,data");
        assert!(lvm.lvs.iter().all(|l| !l.name.contains('[')));
    }

    #[test]
    fn bad_numbers_name_the_field() {
        let json = r#"{"report":[{"vg":[{"vg_name":"v","vg_uuid":"u","vg_extent_size":"4M",
            "vg_size":"1","vg_free":"0"}]}]}"#;
        let err = parse_fullreport(json, &|p| p.to_string()).unwrap_err();
        assert!(
            format!("{err:#}").contains("vg_extent_size = \"4M\""),
            "{err:#}"
        );
    }

    #[test]
    fn mapper_names_double_dashes() {
        assert_eq!(dm_path("vg-data", "my-lv"), "/dev/mapper/vg--data-my--lv");
    }
}
