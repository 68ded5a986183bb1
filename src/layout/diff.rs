//! Comparing two layouts by identity, not by kernel names.
//!
//! Objects are matched by what survives a reboot: disks by WWN, serial or
//! by-id name; GPT partitions by their unique GUID (MBR partitions by disk
//! and number); md, LUKS, PVs, VGs, file systems and swap by UUID; LVs by
//! UUID (else VG/name); mounts and fstab lines by mount point. Device paths
//! inside objects (`/dev/sdb1`, `/dev/dm-3(0)`) are replaced by those
//! identities before comparing, so `sda`/`sdb` swapping names is no change.
//! Volatile fields are ignored: capture time, lifeboat and kernel versions,
//! used bytes, active flags, kernel names and paths, the VG metadata text,
//! `needed_reason`, BootCurrent.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::*;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// One difference between two layouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Change {
    pub kind: ChangeKind,
    /// What sort of object: `disk`, `partition`, `md array`, `LUKS device`,
    /// `physical volume`, `volume group`, `logical volume`, `file system`,
    /// `btrfs subvolume`, `swap`, `mount`, `fstab entry`, `crypttab entry`,
    /// `mdadm.conf array`, `EFI boot entry`, `unsupported`, `host`, `boot`.
    pub object: String,
    /// The object in words, with its identity: `disk serial LB01 (/dev/sda)`.
    pub id: String,
    /// For `changed`: the field, as a path (`size_bytes`, `segments[0].stripes`).
    pub field: Option<String>,
    pub old: Option<String>,
    pub new: Option<String>,
    /// The whole change in plain words.
    pub message: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Fields that are not drift, in any object. (Kernel names of disks, the
/// VG metadata text, and the nested partitions and subvolumes, compared as
/// objects of their own, are cleared where the objects are listed.)
const VOLATILE: &[&str] = &[
    "path",
    "needed_reason",
    "used_bytes",
    "active",
    "mountpoints",
    "mapped_device",
    "header_backup",
];

/// Maps device paths of one layout to identities.
struct Names {
    map: BTreeMap<String, String>,
}

impl Names {
    fn new(l: &Layout) -> Names {
        let mut map = BTreeMap::new();
        for d in &l.disks {
            let dk = disk_key(d);
            map.insert(d.path.clone(), dk.clone());
            match &d.partition_table {
                Some(PartitionTable::Gpt(g)) => {
                    for p in &g.partitions {
                        map.insert(p.device.clone(), format!("partition {}", p.unique_guid));
                    }
                }
                Some(PartitionTable::Mbr(m)) => {
                    for p in &m.partitions {
                        map.insert(p.device.clone(), format!("partition {} of {dk}", p.number));
                    }
                }
                None => {}
            }
        }
        for m in &l.md_arrays {
            map.insert(m.device.clone(), format!("md {}", m.uuid));
        }
        for x in &l.luks {
            if let Some(md) = &x.mapped_device {
                map.insert(md.clone(), format!("opened LUKS {}", x.uuid));
            }
        }
        for lv in &l.lvm.lvs {
            map.insert(lv.device.clone(), format!("LV {}/{}", lv.vg, lv.name));
        }
        Names { map }
    }

    fn name(&self, path: &str) -> String {
        if let Some(n) = self.map.get(path) {
            return n.clone();
        }
        // "/dev/vdb3(0)": a PV with an extent number.
        if let Some(i) = path.rfind('(') {
            if let Some(n) = self.map.get(&path[..i]) {
                return format!("{n}{}", &path[i..]);
            }
        }
        path.to_string()
    }

    /// Replaces every string that is a known device path.
    fn rewrite(&self, v: &mut Value) {
        match v {
            Value::String(s) if s.starts_with("/dev/") => *s = self.name(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.rewrite(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.rewrite(x)),
            _ => {}
        }
    }
}

/// The identity of a disk: WWN, else serial, else first by-id name, else path.
pub fn disk_key(d: &Disk) -> String {
    if let Some(w) = &d.wwn {
        format!("disk WWN {w}")
    } else if let Some(s) = &d.serial {
        format!("disk serial {s}")
    } else if let Some(i) = d.by_id.first() {
        format!("disk {i}")
    } else {
        format!("disk {}", d.path)
    }
}

/// One comparable object: identity, words for it, and its fields.
struct Item {
    key: String,
    words: String,
    value: Value,
}

fn item<T: Serialize>(names: &Names, key: String, words: String, obj: &T) -> Item {
    let mut value = serde_json::to_value(obj).expect("layout objects serialize");
    if let Value::Object(o) = &mut value {
        for f in VOLATILE {
            o.remove(*f);
        }
    }
    names.rewrite(&mut value);
    Item { key, words, value }
}

/// Every comparable object of a layout, grouped by kind.
/// One item per element of `list`, keyed and worded by the closures.
fn each<T: Serialize>(
    n: &Names,
    list: &[T],
    key: impl Fn(&T) -> String,
    words: impl Fn(&T) -> String,
) -> Vec<Item> {
    list.iter().map(|x| item(n, key(x), words(x), x)).collect()
}

/// Everything the diff compares, by kind, in the order of the report.
fn items(l: &Layout) -> Vec<(&'static str, Vec<Item>)> {
    let n = Names::new(l);
    let (disks, parts) = disk_items(&n, l);
    let (fss, subvols) = fs_items(&n, l);
    let host = {
        let mut h = l.host.clone();
        h.kernel.clear();
        item(&n, "host".into(), "host".into(), &h)
    };
    let boot = {
        let mut b = l.boot.clone();
        b.boot_current = None;
        b.efi_entries.clear();
        item(&n, "boot".into(), "boot setup".into(), &b)
    };
    let mut out = vec![
        ("host", vec![host]),
        ("boot", vec![boot]),
        ("disk", disks),
        ("partition", parts),
    ];
    out.extend(stack_items(&n, l));
    out.push(("file system", fss));
    out.push(("btrfs subvolume", subvols));
    out.extend(config_items(&n, l));
    out
}

/// Disks (without their partitions) and partitions.
fn disk_items(n: &Names, l: &Layout) -> (Vec<Item>, Vec<Item>) {
    let mut disks = Vec::new();
    let mut parts = Vec::new();
    for d in &l.disks {
        let dk = disk_key(d);
        let mut bare = d.clone();
        bare.name.clear();
        match &mut bare.partition_table {
            Some(PartitionTable::Gpt(g)) => g.partitions.clear(),
            Some(PartitionTable::Mbr(m)) => m.partitions.clear(),
            None => {}
        }
        disks.push(item(n, dk.clone(), format!("{dk} ({})", d.path), &bare));
        match &d.partition_table {
            // The table's own fields are compared with the disk.
            Some(PartitionTable::Gpt(g)) => parts.extend(each(
                n,
                &g.partitions,
                |p| p.unique_guid.clone(),
                |p| {
                    format!(
                        "partition {} ({}, PARTUUID {})",
                        p.number, p.device, p.unique_guid
                    )
                },
            )),
            Some(PartitionTable::Mbr(m)) => parts.extend(each(
                n,
                &m.partitions,
                |p| format!("{dk} #{}", p.number),
                |p| format!("partition {} of {dk} ({})", p.number, p.device),
            )),
            None => {}
        }
    }
    (disks, parts)
}

/// File systems (without their subvolumes) and btrfs subvolumes.
fn fs_items(n: &Names, l: &Layout) -> (Vec<Item>, Vec<Item>) {
    let mut subvols = Vec::new();
    let mut fss = Vec::new();
    for f in &l.filesystems {
        let key = f.uuid.clone().unwrap_or_else(|| n.name(&f.device));
        let mut bare = f.clone();
        if let FsParams::Btrfs { subvolumes, .. } = &mut bare.params {
            subvols.extend(each(
                n,
                subvolumes,
                |s| format!("{key} {}", s.path),
                |s| format!("btrfs subvolume {} (id {}) of {key}", s.path, s.id),
            ));
            subvolumes.clear();
        }
        fss.push(item(
            n,
            key.clone(),
            format!("{} file system {key} ({})", f.fstype, f.device),
            &bare,
        ));
    }
    (fss, subvols)
}

/// md arrays, LUKS devices and LVM.
fn stack_items(n: &Names, l: &Layout) -> Vec<(&'static str, Vec<Item>)> {
    let vgs: Vec<VolumeGroup> = l
        .lvm
        .vgs
        .iter()
        .map(|v| {
            let mut bare = v.clone();
            bare.metadata.clear();
            bare
        })
        .collect();
    vec![
        (
            "md array",
            each(
                n,
                &l.md_arrays,
                |m| m.uuid.clone(),
                |m| format!("md array {} ({})", m.uuid, m.device),
            ),
        ),
        (
            "LUKS device",
            each(
                n,
                &l.luks,
                |x| x.uuid.clone(),
                |x| format!("LUKS{} device {} ({})", x.version, x.uuid, x.device),
            ),
        ),
        (
            "physical volume",
            each(
                n,
                &l.lvm.pvs,
                |p| p.uuid.clone(),
                |p| format!("physical volume {} ({})", p.uuid, p.device),
            ),
        ),
        (
            "volume group",
            each(
                n,
                &vgs,
                |v| v.uuid.clone(),
                |v| format!("volume group {} ({})", v.name, v.uuid),
            ),
        ),
        (
            "logical volume",
            each(
                n,
                &l.lvm.lvs,
                |v| {
                    if v.uuid.is_empty() {
                        format!("{}/{}", v.vg, v.name)
                    } else {
                        v.uuid.clone()
                    }
                },
                |v| format!("logical volume {}/{}", v.vg, v.name),
            ),
        ),
    ]
}

/// Swap, mounts, configuration files, EFI entries and what is unsupported.
fn config_items(n: &Names, l: &Layout) -> Vec<(&'static str, Vec<Item>)> {
    let swap_key = |s: &Swap| s.uuid.clone().unwrap_or_else(|| n.name(&s.device));
    let conf_key = |a: &MdadmConfArray| a.uuid.clone().unwrap_or_else(|| a.line.clone());
    let dev = |u: &Unsupported| u.device.as_deref().map(|d| n.name(d)).unwrap_or_default();
    vec![
        (
            "swap",
            each(n, &l.swaps, swap_key, |s| {
                format!("swap {} ({})", swap_key(s), s.device)
            }),
        ),
        (
            "mount",
            each(
                n,
                &l.mounts,
                |m| m.mountpoint.clone(),
                |m| format!("mount {}", m.mountpoint),
            ),
        ),
        (
            "fstab entry",
            each(
                n,
                &l.config_files.fstab,
                |e| format!("{} {}", e.file, e.spec),
                |e| format!("fstab entry {} {}", e.spec, e.file),
            ),
        ),
        (
            "crypttab entry",
            each(
                n,
                &l.config_files.crypttab,
                |e| e.name.clone(),
                |e| format!("crypttab entry {}", e.name),
            ),
        ),
        (
            "mdadm.conf array",
            each(n, &l.config_files.mdadm_conf, conf_key, |a| {
                format!("mdadm.conf array {}", conf_key(a))
            }),
        ),
        (
            "EFI boot entry",
            each(
                n,
                &l.boot.efi_entries,
                |e| e.number.clone(),
                |e| format!("EFI boot entry Boot{} ({})", e.number, e.label),
            ),
        ),
        (
            "unsupported",
            each(
                n,
                &l.unsupported,
                |u| format!("{} {}", u.kind, dev(u)),
                |u| format!("unsupported {} {}", u.kind, dev(u)),
            ),
        ),
    ]
}

/// Text of a value for messages: sizes in bytes get a human unit.
fn show(field: &str, v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Number(n) if field.ends_with("bytes") => match n.as_u64() {
            Some(b) => format!("{b} ({})", crate::util::human_bytes(b)),
            None => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// Field-by-field differences of two values; arrays of equal length are
/// compared element by element, others as a whole.
fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, Value, Value)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y))
            if x.len() == y.len() && x.iter().all(Value::is_object) =>
        {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                walk(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a != b => out.push((path.to_string(), a.clone(), b.clone())),
        _ => {}
    }
}

/// Compares two layouts; an empty list means the same machine setup.
/// Changes come in a stable order: by kind of object, then removed, added
/// and changed objects.
pub fn diff(old: &Layout, new: &Layout) -> Vec<Change> {
    let mut out = Vec::new();
    let (a, b) = (items(old), items(new));
    for ((object, olds), (_, news)) in a.into_iter().zip(b) {
        let find = |list: &[Item], key: &str| list.iter().position(|i| i.key == key);
        for o in &olds {
            if find(&news, &o.key).is_none() {
                out.push(Change {
                    kind: ChangeKind::Removed,
                    object: object.into(),
                    id: o.words.clone(),
                    field: None,
                    old: None,
                    new: None,
                    message: format!("removed {}", o.words),
                });
            }
        }
        for n in &news {
            if find(&olds, &n.key).is_none() {
                out.push(Change {
                    kind: ChangeKind::Added,
                    object: object.into(),
                    id: n.words.clone(),
                    field: None,
                    old: None,
                    new: None,
                    message: format!("added {}", n.words),
                });
            }
        }
        for n in &news {
            let Some(i) = find(&olds, &n.key) else {
                continue;
            };
            let mut fields = Vec::new();
            walk("", &olds[i].value, &n.value, &mut fields);
            for (field, x, y) in fields {
                let (xs, ys) = (show(&field, &x), show(&field, &y));
                out.push(Change {
                    kind: ChangeKind::Changed,
                    object: object.into(),
                    id: n.words.clone(),
                    message: format!("changed {}: {field} was {xs}, is {ys}", n.words),
                    field: Some(field),
                    old: Some(xs),
                    new: Some(ys),
                });
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small machine: one GPT disk with an ESP and an LVM PV, vg0/root.
    pub(crate) fn machine() -> Layout {
        let mut l = crate::layout::tests::minimal();
        let disk = |name: &str, serial: &str, guid: &str| Disk {
            name: name.into(),
            path: format!("/dev/{name}"),
            size_bytes: 10 << 30,
            logical_sector_size: 512,
            physical_sector_size: 512,
            rotational: false,
            removable: false,
            transport: Some("virtio".into()),
            model: None,
            serial: Some(serial.into()),
            wwn: None,
            by_id: vec![],
            needed: true,
            needed_reason: format!("holds / on {name}"),
            partition_table: Some(PartitionTable::Gpt(GptTable {
                disk_guid: format!("{guid}-0000-4000-8000-000000000000"),
                first_usable_lba: 34,
                last_usable_lba: 20971486,
                partition_entry_lba: 2,
                num_partition_entries: 128,
                partition_entry_size: 128,
                problems: vec![],
                partitions: vec![GptPartition {
                    number: 1,
                    device: format!("/dev/{name}1"),
                    first_lba: 2048,
                    last_lba: 20969471,
                    size_bytes: 20967424 * 512,
                    type_guid: "e6d6d379-f507-44c2-a23c-238f2a3df928".into(),
                    unique_guid: format!("{guid}-0001-4000-8000-000000000001"),
                    name: "pv".into(),
                    attributes: 0,
                }],
            })),
        };
        l.disks = vec![
            disk("vda", "SER-A", "aaaaaaaa"),
            disk("vdb", "SER-B", "bbbbbbbb"),
        ];
        l.lvm = Lvm {
            pvs: vec![PhysicalVolume {
                device: "/dev/vda1".into(),
                uuid: "pv-a".into(),
                vg: Some("vg0".into()),
                size_bytes: 10 << 30,
                dev_size_bytes: 10 << 30,
                pe_start_bytes: 1 << 20,
            }],
            vgs: vec![VolumeGroup {
                name: "vg0".into(),
                uuid: "vg-uuid".into(),
                extent_size_bytes: 4 << 20,
                size_bytes: 10 << 30,
                free_bytes: 8 << 30,
                metadata: "vg0 { seqno = 3 }".into(),
            }],
            lvs: vec![LogicalVolume {
                vg: "vg0".into(),
                name: "root".into(),
                uuid: "lv-root".into(),
                size_bytes: 2 << 30,
                device: "/dev/mapper/vg0-root".into(),
                layout: "linear".into(),
                role: "public".into(),
                pool: None,
                active: true,
                segments: vec![LvSegment {
                    segtype: "linear".into(),
                    start_bytes: 0,
                    size_bytes: 2 << 30,
                    stripes: 1,
                    stripe_size_bytes: None,
                    devices: vec!["/dev/vda1(0)".into()],
                }],
            }],
        };
        l.filesystems = vec![Filesystem {
            device: "/dev/mapper/vg0-root".into(),
            fstype: "ext4".into(),
            uuid: Some("fs-root".into()),
            label: None,
            size_bytes: 2 << 30,
            used_bytes: Some(1 << 29),
            mountpoints: vec!["/".into()],
            params: FsParams::Other {},
        }];
        l
    }

    #[test]
    fn identical_layouts_have_no_changes() {
        assert_eq!(diff(&machine(), &machine()), vec![]);
    }

    #[test]
    fn renamed_disks_and_volatile_fields_are_no_change() {
        let old = machine();
        let mut new = machine();
        // sda/sdb style swap: the kernel names trade places.
        new.disks.swap(0, 1);
        for d in &mut new.disks {
            let other = if d.name == "vda" { "vdb" } else { "vda" };
            d.name = other.into();
            d.path = format!("/dev/{other}");
            if let Some(PartitionTable::Gpt(g)) = &mut d.partition_table {
                g.partitions[0].device = format!("/dev/{other}1");
            }
        }
        new.lvm.pvs[0].device = "/dev/vdb1".into();
        new.lvm.lvs[0].segments[0].devices = vec!["/dev/vdb1(0)".into()];
        new.captured_at = "2027-01-01T00:00:00Z".into();
        new.host.kernel = "6.1.0-99-amd64".into();
        new.filesystems[0].used_bytes = Some(1 << 30);
        new.lvm.lvs[0].active = false;
        new.lvm.vgs[0].metadata = "vg0 { seqno = 4 }".into();
        new.disks[0].needed_reason = "other words".into();
        assert_eq!(diff(&old, &new), vec![], "{:#?}", diff(&old, &new));
    }

    #[test]
    fn resized_lv_is_a_change_in_plain_words() {
        let old = machine();
        let mut new = machine();
        new.lvm.lvs[0].size_bytes = 3 << 30;
        new.lvm.lvs[0].segments[0].size_bytes = 3 << 30;
        let c = diff(&old, &new);
        let msgs: Vec<String> = c.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "changed logical volume vg0/root: segments[0].size_bytes was 2147483648 (2.0 GiB), is 3221225472 (3.0 GiB)",
                "changed logical volume vg0/root: size_bytes was 2147483648 (2.0 GiB), is 3221225472 (3.0 GiB)",
            ]
        );
        assert_eq!(c[1].kind, ChangeKind::Changed);
        assert_eq!(c[1].field.as_deref(), Some("size_bytes"));
        let json = serde_json::to_value(&c[1]).unwrap();
        assert_eq!(json["kind"], "changed");
        assert_eq!(json["object"], "logical volume");
    }

    #[test]
    fn new_disk_is_an_addition_and_a_lost_one_a_removal() {
        let old = machine();
        let mut new = machine();
        let mut extra = new.disks[1].clone();
        extra.serial = Some("SER-C".into());
        extra.name = "vdc".into();
        extra.path = "/dev/vdc".into();
        extra.partition_table = None;
        new.disks.push(extra);
        let c = diff(&old, &new);
        assert_eq!(c.len(), 1, "{c:#?}");
        assert_eq!(c[0].kind, ChangeKind::Added);
        assert_eq!(c[0].message, "added disk serial SER-C (/dev/vdc)");
        let back = diff(&new, &old);
        assert_eq!(back[0].message, "removed disk serial SER-C (/dev/vdc)");
    }

    #[test]
    fn replaced_partition_and_moved_pv_are_changes() {
        let old = machine();
        let mut new = machine();
        // The PV moved to the other disk's partition: a different identity.
        new.lvm.pvs[0].device = "/dev/vdb1".into();
        let c = diff(&old, &new);
        assert_eq!(c.len(), 1, "{c:#?}");
        assert_eq!(c[0].object, "physical volume");
        assert_eq!(c[0].field.as_deref(), Some("device"));
        assert_eq!(
            c[0].old.as_deref(),
            Some("partition aaaaaaaa-0001-4000-8000-000000000001")
        );
        assert_eq!(
            c[0].new.as_deref(),
            Some("partition bbbbbbbb-0001-4000-8000-000000000001")
        );
        // A partition recreated with a new GUID: one removed, one added.
        let mut new = machine();
        if let Some(PartitionTable::Gpt(g)) = &mut new.disks[0].partition_table {
            g.partitions[0].unique_guid = "cccccccc-0001-4000-8000-000000000001".into();
        }
        let kinds: Vec<ChangeKind> = diff(&old, &new).iter().map(|c| c.kind).collect();
        assert!(
            kinds.contains(&ChangeKind::Added) && kinds.contains(&ChangeKind::Removed),
            "{kinds:?}"
        );
    }

    #[test]
    fn changed_file_system_uuid_is_removal_and_addition() {
        let old = machine();
        let mut new = machine();
        new.filesystems[0].uuid = Some("fs-other".into());
        let msgs: Vec<String> = diff(&old, &new).iter().map(|c| c.message.clone()).collect();
        assert_eq!(
            msgs,
            vec![
                "removed ext4 file system fs-root (/dev/mapper/vg0-root)",
                "added ext4 file system fs-other (/dev/mapper/vg0-root)",
            ]
        );
    }
}
