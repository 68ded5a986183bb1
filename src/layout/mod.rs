//! The Layout model, reading and writing it, and (in submodules) capturing it
//! from a live system and comparing two of them.

pub mod diff;
pub(crate) mod kinds;
mod model;
mod netmodel;
mod netopts;
pub mod probe;
pub mod show;

pub use diff::{diff, Change, ChangeKind};
pub use model::*;
pub use netmodel::*;
pub use netopts::*;
pub use probe::{capture, CaptureOptions};

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Default place of the saved layout.
pub const DEFAULT_PATH: &str = "/var/lib/lifeboat/layout.json";

impl Layout {
    /// Reads a layout file. Malformed JSON, missing fields and an unknown
    /// major version are errors naming the file, the line and the field.
    pub fn load(path: &Path) -> Result<Layout> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading layout {}", path.display()))?;
        Layout::from_json(&text).with_context(|| format!("layout {}", path.display()))
    }

    /// Parses a layout from JSON text (see [`Layout::load`]).
    pub fn from_json(text: &str) -> Result<Layout> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "malformed JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            )
        })?;
        let version = value
            .get("schema_version")
            .and_then(|v| v.as_str())
            .context("missing field `schema_version` (is this a lifeboat layout?)")?;
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .with_context(|| format!("bad schema_version {version:?}: expected MAJOR.MINOR"))?;
        if major != SCHEMA_MAJOR {
            bail!(
                "schema_version {version} is not supported: this lifeboat reads {SCHEMA_MAJOR}.x; \
                 use a lifeboat release that writes version {major}"
            );
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let layout: Layout = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            anyhow::anyhow!(
                "at line {} column {}, field `{}`: {}",
                inner.line(),
                inner.column(),
                path,
                inner
            )
        })?;
        layout.check_names()?;
        Ok(layout)
    }

    /// Names that become paths are checked: a LUKS header backup is a file
    /// beside the layout (one path component), mount points are absolute
    /// and normalised, btrfs subvolume paths relative and normalised.
    pub fn check_names(&self) -> Result<()> {
        let field = |f: String| move |e: anyhow::Error| e.context(format!("field `{f}`"));
        for (i, l) in self.luks.iter().enumerate() {
            if let Some(h) = &l.header_backup {
                crate::names::component("LUKS header backup", h)
                    .map_err(field(format!("luks[{i}].header_backup")))?;
            }
        }
        for (i, fs) in self.filesystems.iter().enumerate() {
            for (j, m) in fs.mountpoints.iter().enumerate() {
                crate::names::mount_point(m.as_bytes())
                    .map_err(field(format!("filesystems[{i}].mountpoints[{j}]")))?;
            }
            if let FsParams::Btrfs { subvolumes, .. } = &fs.params {
                for (j, sv) in subvolumes.iter().enumerate() {
                    crate::names::relative_path("btrfs subvolume", &sv.path).map_err(field(
                        format!("filesystems[{i}].params.subvolumes[{j}].path"),
                    ))?;
                }
            }
        }
        for (i, m) in self.mounts.iter().enumerate() {
            crate::names::mount_point(m.mountpoint.as_bytes())
                .map_err(field(format!("mounts[{i}].mountpoint")))?;
        }
        if let Some(n) = &self.network_config {
            n.check().context("in `network_config`")?;
        }
        Ok(())
    }

    /// The layout as pretty-printed JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a layout always serializes");
        s.push('\n');
        s
    }

    /// The JSON Schema of the format, generated from these types.
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(Layout);
        let mut s = serde_json::to_string_pretty(&schema).expect("a schema always serializes");
        s.push('\n');
        s
    }

    pub fn disk(&self, path: &str) -> Option<&Disk> {
        self.disks.iter().find(|d| d.path == path)
    }

    /// The disks a block device of this layout lives on, following
    /// partitions, md members, LUKS containers, LVM PVs and btrfs devices.
    pub fn disks_under(&self, dev: &str) -> Vec<&Disk> {
        let mut out: Vec<&Disk> = Vec::new();
        let mut todo = vec![dev.to_string()];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(d) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            for disk in &self.disks {
                let is_part = match &disk.partition_table {
                    Some(PartitionTable::Gpt(g)) => g.partitions.iter().any(|p| p.device == d),
                    Some(PartitionTable::Mbr(m)) => m.partitions.iter().any(|p| p.device == d),
                    None => false,
                };
                if (disk.path == d || is_part) && !out.iter().any(|o| o.path == disk.path) {
                    out.push(disk);
                }
            }
            for md in self.md_arrays.iter().filter(|m| m.device == d) {
                todo.extend(md.members.iter().map(|m| m.device.clone()));
            }
            for l in &self.luks {
                if l.mapped_device.as_deref() == Some(d.as_str()) {
                    todo.push(l.device.clone());
                }
            }
            for lv in self.lvm.lvs.iter().filter(|lv| lv.device == d) {
                todo.extend(
                    self.lvm
                        .pvs
                        .iter()
                        .filter(|p| p.vg.as_deref() == Some(lv.vg.as_str()))
                        .map(|p| p.device.clone()),
                );
            }
            for fs in self.filesystems.iter().filter(|f| f.device == d) {
                if let FsParams::Btrfs { devices, .. } = &fs.params {
                    todo.extend(devices.iter().cloned());
                }
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn minimal() -> Layout {
        Layout {
            schema_version: SCHEMA_VERSION.into(),
            lifeboat_version: "0.1.0".into(),
            captured_at: "2026-11-26T06:00:00Z".into(),
            host: Host {
                hostname: "db1".into(),
                os_pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
                os_id: Some("debian".into()),
                os_version_id: Some("12".into()),
                arch: "x86_64".into(),
                kernel: "6.1.0-56-amd64".into(),
                firmware: Firmware::Uefi,
            },
            disks: vec![],
            md_arrays: vec![],
            luks: vec![],
            lvm: Lvm::default(),
            filesystems: vec![],
            swaps: vec![],
            mounts: vec![],
            config_files: ConfigFiles::default(),
            boot: Boot {
                firmware: Firmware::Uefi,
                grub: vec![],
                esps: vec![],
                efi_entries: vec![],
                boot_order: vec![],
                boot_current: None,
                shim: false,
                systemd_boot: false,
                kernel_cmdline: String::new(),
            },
            network: vec![],
            network_config: None,
            unsupported: vec![],
        }
    }

    #[test]
    fn round_trips_through_json() {
        let l = minimal();
        assert_eq!(Layout::from_json(&l.to_json()).unwrap(), l);
    }

    #[test]
    fn unknown_major_version_is_refused() {
        let text = minimal()
            .to_json()
            .replace(&format!("\"{SCHEMA_VERSION}\""), "\"2.0\"");
        let err = Layout::from_json(&text).unwrap_err().to_string();
        assert!(err.contains("schema_version 2.0 is not supported"), "{err}");
    }

    #[test]
    fn newer_minor_version_with_unknown_fields_is_read() {
        let text = minimal()
            .to_json()
            .replace(&format!("\"{SCHEMA_VERSION}\""), "\"1.7\"")
            .replace("\"hostname\"", "\"future_field\": 3, \"hostname\"");
        assert_eq!(Layout::from_json(&text).unwrap().host.hostname, "db1");
    }

    #[test]
    fn missing_field_names_line_and_path() {
        let text = minimal().to_json().replace("\"arch\": \"x86_64\",", "");
        let err = Layout::from_json(&text).unwrap_err().to_string();
        assert!(err.contains("field `host`"), "{err}");
        assert!(err.contains("missing field `arch`"), "{err}");
        assert!(err.contains("line "), "{err}");
    }

    /// docs/layout.schema.json is what the types generate, so that it
    /// never drifts from the code.
    #[test]
    fn committed_schema_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/layout.schema.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == Layout::json_schema(),
            "docs/layout.schema.json is out of date; regenerate it with \
             `cargo run -- layout schema > docs/layout.schema.json`"
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        let mut l = minimal();
        l.mounts.push(Mount {
            mountpoint: "/srv/../etc".into(),
            source: "/dev/sda1".into(),
            fstype: "ext4".into(),
            options: "rw".into(),
            fs_options: "rw".into(),
            root: "/".into(),
        });
        let err = format!("{:#}", Layout::from_json(&l.to_json()).unwrap_err());
        assert!(err.contains("field `mounts[0].mountpoint`"), "{err}");
        assert!(err.contains("\"/srv/../etc\" is not normalised"), "{err}");
        l.mounts[0].mountpoint = "/srv/data".into();
        Layout::from_json(&l.to_json()).unwrap();
        let mut luks = probe::luks::empty_device(2, "1111".into());
        luks.header_backup = Some("luks-header-1111.img".into());
        l.luks.push(luks);
        Layout::from_json(&l.to_json()).unwrap();
        l.luks[0].header_backup = Some("../../etc/shadow".into());
        let err = format!("{:#}", Layout::from_json(&l.to_json()).unwrap_err());
        assert!(err.contains("field `luks[0].header_backup`"), "{err}");
        assert!(err.contains("contains '/'"), "{err}");
    }

    /// The typed names (file system types, segment types, GRUB platforms)
    /// read and write exactly the text the fixture holds: an old layout
    /// loads to the same JSON values (the fixture predates `network`, written
    /// empty, and `network_config`, written null), and a file this version writes reads back to the
    /// same bytes.
    #[test]
    fn fixture_layout_round_trips_byte_for_byte() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debian12-layout.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let l = Layout::from_json(&text).unwrap();
        let written = l.to_json();
        let old: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut new: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(new["network"], serde_json::json!([]));
        new.as_object_mut().unwrap().remove("network");
        // ... and `network_config` (written as null when not captured)
        assert_eq!(new["network_config"], serde_json::Value::Null);
        new.as_object_mut().unwrap().remove("network_config");
        assert_eq!(new, old);
        assert_eq!(Layout::from_json(&written).unwrap().to_json(), written);
        let root = l
            .filesystems
            .iter()
            .find(|f| f.mountpoints == ["/"])
            .unwrap();
        assert!(
            !matches!(root.fstype, FsType::Other(_)),
            "{:?}",
            root.fstype
        );
        assert!(l
            .boot
            .grub
            .iter()
            .all(|g| !matches!(g.platform, GrubPlatform::Other(_))));
        let segs = l.lvm.lvs.iter().flat_map(|v| &v.segments);
        assert!(
            segs.clone().count() > 0
                && segs
                    .clone()
                    .all(|s| !matches!(s.segtype, SegType::Other(_)))
        );
        // A name this version does not know is kept as read.
        let odd = written.replacen("\"ext4\"", "\"reiserfs\"", 1);
        let l = Layout::from_json(&odd).unwrap();
        assert!(l
            .filesystems
            .iter()
            .any(|f| f.fstype == FsType::Other("reiserfs".into())));
        assert_eq!(l.to_json(), odd);
    }

    #[test]
    fn malformed_json_names_the_line() {
        let err = Layout::from_json("{\n\"schema_version\": \"1.0\",\n oops }")
            .unwrap_err()
            .to_string();
        assert!(err.contains("malformed JSON at line 3"), "{err}");
    }
}
