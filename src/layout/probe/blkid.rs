//! blkid for every device in one call: signatures read from the devices
//! themselves (`-c /dev/null`: no cache; no udev needed).
//!
//! The batch runs blkid's high-level probe, because `blkid -p` with several
//! devices stops at the first one that has no signature (util-linux 2.38);
//! both print the same `-o export` format.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;

use crate::exec::Cmd;

/// What blkid found on one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The path blkid was given.
    pub devname: String,
    /// `TYPE`: `ext4`, `xfs`, `vfat`, `btrfs`, `swap`, `LVM2_member`,
    /// `linux_raid_member`, `crypto_LUKS`...
    pub fstype: Option<String>,
    pub uuid: Option<String>,
    /// `UUID_SUB`: the member's own UUID (btrfs device, md member).
    pub uuid_sub: Option<String>,
    pub label: Option<String>,
    /// `VERSION` of the signature (LUKS 1 or 2, md metadata...).
    pub version: Option<String>,
    /// `USAGE`: `filesystem`, `raid`, `crypto`, `other`.
    pub usage: Option<String>,
    /// `PTTYPE` (`gpt`, `dos`) when the device carries a partition table.
    pub pttype: Option<String>,
    pub ptuuid: Option<String>,
    /// The PARTUUID of a partition (`PARTUUID`, or `PART_ENTRY_UUID` from
    /// a low-level probe).
    pub part_entry_uuid: Option<String>,
    /// `FSSIZE` when blkid knows it.
    pub fssize: Option<u64>,
}

/// Undoes blkid's export escaping (`\ ` and `\\`).
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses the output of `blkid -p -o export DEV...`: blocks of KEY=value
/// lines separated by blank lines, each starting with DEVNAME.
pub fn parse_export(text: &str) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut cur: Option<Probe> = None;
    for line in text.lines() {
        let Some((key, raw)) = line.split_once('=') else {
            if line.trim().is_empty() {
                out.extend(cur.take());
            }
            continue;
        };
        let value = unescape(raw);
        if key == "DEVNAME" {
            out.extend(cur.take());
            cur = Some(Probe {
                devname: value,
                ..Probe::default()
            });
            continue;
        }
        let Some(p) = cur.as_mut() else { continue };
        let v = Some(value.clone());
        match key {
            "TYPE" => p.fstype = v,
            "UUID" => p.uuid = v,
            "UUID_SUB" => p.uuid_sub = v,
            "LABEL" => p.label = v,
            "VERSION" => p.version = v,
            "USAGE" => p.usage = v,
            "PTTYPE" => p.pttype = v,
            "PTUUID" => p.ptuuid = v,
            "PART_ENTRY_UUID" | "PARTUUID" => p.part_entry_uuid = v,
            "FSSIZE" => p.fssize = value.parse().ok(),
            _ => {}
        }
    }
    out.extend(cur);
    out
}

/// Probes every path in one `blkid -c /dev/null -o export` run. Paths are given to blkid as
/// `dev_root`-prefixed files; results are keyed by the unprefixed path.
pub fn probe_all(paths: &[String], root: &Path) -> Result<BTreeMap<String, Probe>> {
    if paths.is_empty() {
        return Ok(BTreeMap::new());
    }
    let real: Vec<String> = paths.iter().map(|p| prefixed(root, p)).collect();
    // Exit code 2: nothing found on at least one device, which is normal.
    let out = Cmd::new("blkid")
        .args(["-c", "/dev/null", "-o", "export"])
        .args(&real)
        .ok_codes(&[2])
        .run()?;
    let mut map = BTreeMap::new();
    for mut p in parse_export(&out.stdout_str()) {
        if let Some(i) = real.iter().position(|r| *r == p.devname) {
            p.devname = paths[i].clone();
        }
        map.insert(p.devname.clone(), p);
    }
    Ok(map)
}

/// `path` inside `root` (`/dev/vda` under `/tmp/fixture`).
pub fn prefixed(root: &Path, path: &str) -> String {
    if root == Path::new("/") {
        path.to_string()
    } else {
        root.join(path.trim_start_matches('/'))
            .to_string_lossy()
            .into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/guest")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn parses_the_guest_batch_output() {
        let all = parse_export(&fixture("blkid-export.txt"));
        let get = |d: &str| {
            all.iter()
                .find(|p| p.devname == d)
                .unwrap_or_else(|| panic!("{d}"))
        };
        let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            ("/dev/vda1", "vfat", Some("1234-ABCD"), Some("ESP")),
            (
                "/dev/vda2",
                "linux_raid_member",
                Some("11111111-2222-2222-3333-333344444444"),
                Some("lifeboat:0"),
            ),
            (
                "/dev/vda3",
                "btrfs",
                Some("0e000000-0000-4000-8000-000000000007"),
                Some("data"),
            ),
            (
                "/dev/md0",
                "crypto_LUKS",
                Some("22222222-0000-4000-8000-000000000002"),
                Some("cryptroot"),
            ),
            (
                "/dev/vdd6",
                "crypto_LUKS",
                Some("11111111-0000-4000-8000-000000000001"),
                None,
            ),
            (
                "/dev/vdc2",
                "swap",
                Some("05000000-0000-4000-8000-000000000002"),
                Some("swapc"),
            ),
            (
                "/dev/vdb3",
                "LVM2_member",
                Some("LBpv01-0000-0000-0000-0000-0000-000001"),
                None,
            ),
            ("/dev/vde", "ext4", None, Some("LIFEBOAT-AUTO")),
            (
                "/mnt/sys/swapfile",
                "swap",
                Some("05000000-0000-4000-8000-000000000004"),
                None,
            ),
        ];
        for (dev, ty, uuid, label) in cases {
            let p = get(dev);
            assert_eq!(p.fstype.as_deref(), Some(*ty), "{dev}");
            if uuid.is_some() {
                assert_eq!(p.uuid.as_deref(), *uuid, "{dev}");
            }
            assert_eq!(p.label.as_deref(), *label, "{dev}");
        }
        assert_eq!(get("/dev/vda").pttype.as_deref(), Some("gpt"));
        assert_eq!(
            get("/dev/vda").ptuuid.as_deref(),
            Some("aaaaaaaa-0000-4000-8000-00000000000a")
        );
        assert_eq!(get("/dev/vdd").pttype.as_deref(), Some("dos"));
        assert_eq!(
            get("/dev/vda2").part_entry_uuid.as_deref(),
            Some("aaaaaaaa-0002-4000-8000-000000000002")
        );
        // a blank disk and the thin pool's internals have no block
        assert!(all.iter().all(|p| p.devname != "/dev/vdf"));
    }

    #[test]
    fn parses_low_level_probes() {
        let all = parse_export(&fixture("blkid-p-export.txt"));
        let devs: Vec<&str> = all.iter().map(|p| p.devname.as_str()).collect();
        assert_eq!(devs, vec!["/dev/vda", "/dev/vda2", "/dev/md0", "/dev/vdd6"]);
        assert_eq!(all[1].usage.as_deref(), Some("raid"));
        assert_eq!(
            all[1].part_entry_uuid.as_deref(),
            Some("aaaaaaaa-0002-4000-8000-000000000002")
        );
        assert_eq!(all[2].version.as_deref(), Some("2"));
        assert_eq!(all[3].version.as_deref(), Some("1"));
    }

    #[test]
    fn escaped_values() {
        let p = parse_export("DEVNAME=/dev/x\nLABEL=my\\ disk\\\\1\nTYPE=ext4\n");
        assert_eq!(p[0].label.as_deref(), Some("my disk\\1"));
    }
}
