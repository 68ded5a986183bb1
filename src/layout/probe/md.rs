//! md RAID arrays: `mdadm --detail --export` for identity and members, the
//! array's sysfs folder for geometry.

use std::path::Path;

use crate::layout::{MdArray, MdMember};

/// What `mdadm --detail --export /dev/mdX` says about an array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MdDetail {
    pub level: Option<String>,
    pub raid_devices: Option<u32>,
    pub metadata: Option<String>,
    pub uuid: Option<String>,
    pub name: Option<String>,
    /// (device, role): role is a slot number, `spare`, `faulty` or `journal`.
    pub members: Vec<(String, String)>,
}

/// Parses `mdadm --detail --export` output: `MD_LEVEL=raid1`,
/// `MD_DEVICE_dev_vda2_ROLE=0`, `MD_DEVICE_dev_vda2_DEV=/dev/vda2`...
pub fn parse_detail_export(text: &str) -> MdDetail {
    let mut d = MdDetail::default();
    let mut roles: Vec<(String, String)> = Vec::new(); // (key middle, role)
    let mut devs: Vec<(String, String)> = Vec::new(); // (key middle, device)
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k {
            "MD_LEVEL" => d.level = Some(v),
            "MD_DEVICES" => d.raid_devices = v.parse().ok(),
            "MD_METADATA" => d.metadata = Some(v),
            "MD_UUID" => d.uuid = Some(v),
            "MD_NAME" => d.name = Some(v),
            _ => {
                if let Some(mid) = k.strip_prefix("MD_DEVICE_") {
                    if let Some(m) = mid.strip_suffix("_ROLE") {
                        roles.push((m.to_string(), v));
                    } else if let Some(m) = mid.strip_suffix("_DEV") {
                        devs.push((m.to_string(), v));
                    }
                }
            }
        }
    }
    for (m, dev) in devs {
        let role = roles
            .iter()
            .find(|(r, _)| *r == m)
            .map(|(_, role)| role.clone())
            .unwrap_or_default();
        d.members.push((dev, role));
    }
    d.members.sort_by(|a, b| {
        let slot = |r: &str| r.parse::<u32>().unwrap_or(u32::MAX);
        slot(&a.1).cmp(&slot(&b.1)).then(a.0.cmp(&b.0))
    });
    d
}

/// The `layout` of an array in mdadm's words, from the number in sysfs.
pub fn layout_name(level: &str, layout: u32) -> Option<String> {
    match level {
        "raid5" | "raid4" | "raid6" => Some(
            match layout {
                0 => "left-asymmetric",
                1 => "right-asymmetric",
                2 => "left-symmetric",
                3 => "right-symmetric",
                4 => "parity-first",
                5 => "parity-last",
                8 => "ddf-zero-restart",
                9 => "ddf-N-restart",
                10 => "ddf-N-continue",
                16 => "left-asymmetric-6",
                17 => "right-asymmetric-6",
                18 => "left-symmetric-6",
                19 => "right-symmetric-6",
                20 => "parity-first-6",
                n => return Some(format!("layout-{n}")),
            }
            .to_string(),
        ),
        "raid10" => {
            let near = layout & 0xff;
            let far = (layout >> 8) & 0xff;
            let offset = layout & 0x10000 != 0;
            Some(match (near, far, offset) {
                (n, 1, _) => format!("near={n}"),
                (1, f, true) => format!("offset={f}"),
                (1, f, false) => format!("far={f}"),
                (n, f, _) => format!("near={n},far={f}"),
            })
        }
        _ => None,
    }
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Builds the array from mdadm's detail and its sysfs folder
/// (`/sys/block/mdX`). `canonical` maps member paths to capture names.
pub fn array(
    device: &str,
    size_bytes: u64,
    detail: &MdDetail,
    sys_dir: &Path,
    canonical: &dyn Fn(&str) -> String,
) -> MdArray {
    let level = detail
        .level
        .clone()
        .or_else(|| read_trim(&sys_dir.join("md/level")))
        .unwrap_or_default();
    let chunk = read_trim(&sys_dir.join("md/chunk_size"))
        .and_then(|c| c.parse::<u64>().ok())
        .filter(|&c| c > 0 && !matches!(level.as_str(), "raid1" | "linear"));
    let layout = read_trim(&sys_dir.join("md/layout"))
        .and_then(|l| l.parse::<u32>().ok())
        .and_then(|l| layout_name(&level, l));
    let metadata = detail
        .metadata
        .clone()
        .or_else(|| read_trim(&sys_dir.join("md/metadata_version")))
        .unwrap_or_default();
    MdArray {
        device: device.to_string(),
        name: detail.name.clone(),
        uuid: detail.uuid.clone().unwrap_or_default(),
        raid_devices: detail
            .raid_devices
            .or_else(|| read_trim(&sys_dir.join("md/raid_disks")).and_then(|r| r.parse().ok()))
            .unwrap_or(0),
        level,
        metadata,
        chunk_size_bytes: chunk,
        layout,
        size_bytes,
        members: detail
            .members
            .iter()
            .filter(|(_, role)| role != "faulty")
            .map(|(dev, role)| MdMember {
                device: canonical(dev),
                role: role.parse().ok(),
                spare: role == "spare",
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn guest_raid1() {
        let text = std::fs::read_to_string(fixture("guest/mdadm-detail-export-md0.txt")).unwrap();
        let d = parse_detail_export(&text);
        assert_eq!(d.level.as_deref(), Some("raid1"));
        assert_eq!(
            d.uuid.as_deref(),
            Some("11111111:22222222:33333333:44444444")
        );
        assert_eq!(d.name.as_deref(), Some("lifeboat:0"));
        assert_eq!(d.metadata.as_deref(), Some("1.2"));
        let sys = fixture("guest/sysroot/sys/block/md0");
        let a = array("/dev/md0", 1 << 29, &d, &sys, &|p| p.to_string());
        assert_eq!(a.raid_devices, 2);
        assert_eq!(a.chunk_size_bytes, None);
        assert_eq!(a.layout, None);
        let members: Vec<(&str, Option<u32>, bool)> = a
            .members
            .iter()
            .map(|m| (m.device.as_str(), m.role, m.spare))
            .collect();
        assert_eq!(
            members,
            vec![("/dev/vda2", Some(0), false), ("/dev/vdb2", Some(1), false)]
        );
    }

    #[test]
    fn spares_and_faulty_members() {
        let text = "MD_LEVEL=raid5\nMD_DEVICES=3\nMD_METADATA=1.2\nMD_UUID=a:b:c:d\n\
                    MD_DEVICE_dev_sdd1_ROLE=spare\nMD_DEVICE_dev_sdd1_DEV=/dev/sdd1\n\
                    MD_DEVICE_dev_sdb1_ROLE=1\nMD_DEVICE_dev_sdb1_DEV=/dev/sdb1\n\
                    MD_DEVICE_dev_sde1_ROLE=faulty\nMD_DEVICE_dev_sde1_DEV=/dev/sde1\n\
                    MD_DEVICE_dev_sda1_ROLE=0\nMD_DEVICE_dev_sda1_DEV=/dev/sda1\n";
        let d = parse_detail_export(text);
        let a = array("/dev/md1", 0, &d, Path::new("/nonexistent"), &|p| {
            p.to_string()
        });
        let got: Vec<(&str, Option<u32>, bool)> = a
            .members
            .iter()
            .map(|m| (m.device.as_str(), m.role, m.spare))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/dev/sda1", Some(0), false),
                ("/dev/sdb1", Some(1), false),
                ("/dev/sdd1", None, true)
            ]
        );
    }

    #[test]
    fn layouts_in_mdadm_words() {
        assert_eq!(layout_name("raid5", 2).as_deref(), Some("left-symmetric"));
        assert_eq!(
            layout_name("raid6", 18).as_deref(),
            Some("left-symmetric-6")
        );
        assert_eq!(layout_name("raid10", 0x102).as_deref(), Some("near=2"));
        assert_eq!(layout_name("raid10", 0x201).as_deref(), Some("far=2"));
        assert_eq!(layout_name("raid10", 0x10201).as_deref(), Some("offset=2"));
        assert_eq!(layout_name("raid1", 0), None);
    }
}
