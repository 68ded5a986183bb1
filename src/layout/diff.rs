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
//! `needed_reason`, BootCurrent. The network configuration (layout 1.1)
//! is compared by link name, route destination and device, and DNS.

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
    /// `mdadm.conf array`, `EFI boot entry`, `unsupported`, `host`, `boot`,
    /// `network link`, `route`, `DNS`.
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

/// Everything the diff compares, by kind, in the order of the report
/// (the network configuration when `net`).
fn items(l: &Layout, net: bool) -> Vec<(&'static str, Vec<Item>)> {
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
    out.extend(net_items(l.network_config.as_ref().filter(|_| net)));
    out
}

/// A network link as compared: its kind's fields by name, addresses and
/// members as words.
#[derive(Serialize)]
struct LinkView {
    kind: &'static str,
    mac: Option<String>,
    vlan_parent: Option<String>,
    vlan_id: Option<u16>,
    bond_mode: Option<&'static str>,
    bond_options: Option<BondOptions>,
    bridge_options: Option<BridgeOptions>,
    members: Option<String>,
    mtu: Option<u32>,
    dhcp4: bool,
    auto6: bool,
    addresses: String,
}

fn link_view(k: &NetLink) -> LinkView {
    let mut v = LinkView {
        kind: "ethernet",
        mac: None,
        vlan_parent: None,
        vlan_id: None,
        bond_mode: None,
        bond_options: None,
        bridge_options: None,
        members: None,
        mtu: k.mtu,
        dhcp4: k.dhcp4,
        auto6: k.auto6,
        addresses: words(&k.addresses),
    };
    match &k.kind {
        LinkKind::Ethernet { mac } => v.mac = Some(mac.clone()),
        LinkKind::Vlan { parent, id } => {
            v.kind = "vlan";
            (v.vlan_parent, v.vlan_id) = (Some(parent.clone()), Some(*id));
        }
        LinkKind::Bond {
            mode,
            members,
            options,
        } => {
            v.kind = "bond";
            (v.bond_mode, v.members) = (Some(mode.as_str()), Some(members.join(", ")));
            v.bond_options = Some(options.clone());
        }
        LinkKind::Bridge { members, options } => {
            v.kind = "bridge";
            v.members = Some(members.join(", "));
            v.bridge_options = Some(options.clone());
        }
    }
    v
}

/// `a, b, c` (`none` for an empty list).
fn words<T: ToString>(list: &[T]) -> String {
    match list.is_empty() {
        true => "none".into(),
        false => list.iter().map(T::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// The network configuration (layout 1.1): links by name, static routes
/// by destination and device, and DNS when every link is static (DHCP and
/// router advertisements change it without the admin).
fn net_items(c: Option<&NetConfig>) -> Vec<(&'static str, Vec<Item>)> {
    let none = Names {
        map: BTreeMap::new(),
    };
    let Some(c) = c else {
        return vec![("network link", vec![]), ("route", vec![]), ("DNS", vec![])];
    };
    let links = c
        .links
        .iter()
        .map(|k| {
            let v = link_view(k);
            let what = v.mac.clone().unwrap_or_else(|| v.kind.to_string());
            item(
                &none,
                k.name.clone(),
                format!("network link {} ({what})", k.name),
                &v,
            )
        })
        .collect();
    let route = |r: &NetRoute| format!("{} dev {}", r.destination, r.dev);
    let routes = c
        .routes
        .iter()
        .map(|r| {
            let v = serde_json::json!({
                "gateway": r.gateway.map(|g| g.to_string()),
                "metric": r.metric,
            });
            item(&none, route(r), format!("route {}", route(r)), &v)
        })
        .collect();
    let dynamic = c.links.iter().any(|k| k.dhcp4 || k.auto6);
    let dns = match dynamic {
        true => vec![],
        false => {
            let v = serde_json::json!({
                "nameservers": words(&c.dns.nameservers),
                "search": words(&c.dns.search),
            });
            vec![item(&none, "dns".into(), "DNS settings".into(), &v)]
        }
    };
    vec![("network link", links), ("route", routes), ("DNS", dns)]
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
    // A layout before 1.1 has no network configuration: not compared.
    let net = old.network_config.is_some() && new.network_config.is_some();
    let (a, b) = (items(old, net), items(new, net));
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

    /// The machine with a network: ens3 (static address, default route),
    /// a VLAN on it, a bond of ens4 and ens5, static DNS.
    fn networked() -> Layout {
        let link = |name: &str, kind: LinkKind, addrs: &[&str]| NetLink {
            name: name.into(),
            kind,
            mtu: Some(1500),
            dhcp4: false,
            auto6: false,
            addresses: addrs.iter().map(|a| IpPrefix::parse(a).unwrap()).collect(),
        };
        let eth = |mac: &str| LinkKind::Ethernet { mac: mac.into() };
        let mut l = machine();
        l.network_config = Some(NetConfig {
            links: vec![
                link("ens3", eth("52:54:00:12:34:56"), &["10.0.2.50/24"]),
                link("ens4", eth("52:54:00:00:00:04"), &[]),
                link("ens5", eth("52:54:00:00:00:05"), &[]),
                link(
                    "ens3.10",
                    LinkKind::Vlan {
                        parent: "ens3".into(),
                        id: 10,
                    },
                    &["192.168.10.5/24"],
                ),
                link(
                    "bond0",
                    LinkKind::Bond {
                        mode: BondMode::ActiveBackup,
                        members: vec!["ens4".into(), "ens5".into()],
                        options: BondOptions::default(),
                    },
                    &["10.1.0.5/24"],
                ),
            ],
            routes: vec![NetRoute {
                destination: IpPrefix::parse("0.0.0.0/0").unwrap(),
                gateway: Some("10.0.2.2".parse().unwrap()),
                dev: "ens3".into(),
                metric: None,
            }],
            dns: Dns {
                nameservers: vec!["10.0.2.3".parse().unwrap()],
                search: vec!["example.com".into()],
            },
        });
        l
    }

    fn messages(old: &Layout, new: &Layout) -> Vec<String> {
        diff(old, new).iter().map(|c| c.message.clone()).collect()
    }

    #[test]
    fn network_changes_read_as_words() {
        let old = networked();
        assert_eq!(diff(&old, &networked()), vec![]);
        let mut new = networked();
        let c = new.network_config.as_mut().unwrap();
        c.links[0].kind = LinkKind::Ethernet {
            mac: "52:54:00:ab:cd:ef".into(),
        };
        c.links[0].addresses = vec![IpPrefix::parse("10.0.2.51/24").unwrap()];
        c.links[3].kind = LinkKind::Vlan {
            parent: "ens3".into(),
            id: 20,
        };
        c.links[4].kind = LinkKind::Bond {
            mode: BondMode::Lacp,
            members: vec!["ens4".into()],
            options: BondOptions {
                miimon: Some(100),
                ..BondOptions::default()
            },
        };
        c.routes[0].gateway = Some("10.0.2.1".parse().unwrap());
        c.dns.nameservers = vec!["9.9.9.9".parse().unwrap()];
        assert_eq!(
            messages(&old, &new),
            vec![
                "changed network link ens3 (52:54:00:ab:cd:ef): addresses was 10.0.2.50/24, \
                 is 10.0.2.51/24",
                "changed network link ens3 (52:54:00:ab:cd:ef): mac was 52:54:00:12:34:56, \
                 is 52:54:00:ab:cd:ef",
                "changed network link ens3.10 (vlan): vlan_id was 10, is 20",
                "changed network link bond0 (bond): bond_mode was active-backup, is 802.3ad",
                "changed network link bond0 (bond): bond_options.miimon was none, is 100",
                "changed network link bond0 (bond): members was ens4, ens5, is ens4",
                "changed route 0.0.0.0/0 dev ens3: gateway was 10.0.2.2, is 10.0.2.1",
                "changed DNS settings: nameservers was 10.0.2.3, is 9.9.9.9",
            ]
        );
        let c = &diff(&old, &new)[0];
        assert_eq!(c.object, "network link");
        assert_eq!(c.field.as_deref(), Some("addresses"));
    }

    #[test]
    fn network_links_and_routes_added_and_removed() {
        let old = networked();
        let mut new = networked();
        let c = new.network_config.as_mut().unwrap();
        c.links.retain(|k| k.name != "ens3.10");
        c.routes[0].dev = "bond0".into();
        assert_eq!(
            messages(&old, &new),
            vec![
                "removed network link ens3.10 (vlan)",
                "removed route 0.0.0.0/0 dev ens3",
                "added route 0.0.0.0/0 dev bond0",
            ]
        );
    }

    #[test]
    fn network_not_compared_without_it_nor_dns_under_dhcp() {
        // A layout from before 1.1 against one with a network: no change.
        let mut old = networked();
        old.network_config = None;
        assert_eq!(diff(&old, &networked()), vec![]);
        // DNS that DHCP may change is not drift; an address still is.
        let mut old = networked();
        old.network_config.as_mut().unwrap().links[1].dhcp4 = true;
        let mut new = old.clone();
        let c = new.network_config.as_mut().unwrap();
        c.dns.nameservers = vec!["9.9.9.9".parse().unwrap()];
        assert_eq!(diff(&old, &new), vec![]);
        new.network_config.as_mut().unwrap().links[2].mtu = Some(9000);
        assert_eq!(
            messages(&old, &new),
            vec!["changed network link ens5 (52:54:00:00:00:05): mtu was 1500, is 9000"]
        );
    }
}
