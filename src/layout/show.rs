//! The layout as an indented tree, like lsblk: disk, partitions, md, LUKS,
//! PV, VG, LV, file system, mount point; with sizes and identities.

use std::fmt::Write;

use super::*;
use crate::util::human_bytes;

struct Tree<'a> {
    l: &'a Layout,
    out: String,
    /// VGs and md arrays already printed in full (a VG spans several PVs).
    shown: Vec<String>,
}

impl Tree<'_> {
    fn line(&mut self, depth: usize, text: &str) {
        let indent = if depth == 0 {
            String::new()
        } else {
            format!("{}└─", "  ".repeat(depth - 1))
        };
        let _ = writeln!(self.out, "{indent}{text}");
    }

    /// Everything stacked on the block device `dev`.
    fn children(&mut self, dev: &str, depth: usize) {
        self.md_on(dev, depth);
        self.luks_on(dev, depth);
        self.lvm_on(dev, depth);
        self.filesystems_on(dev, depth);
        self.swaps_on(dev, depth);
    }

    /// md arrays with a member on `dev`, and what they carry.
    fn md_on(&mut self, dev: &str, depth: usize) {
        let l = self.l;
        for md in l
            .md_arrays
            .iter()
            .filter(|m| m.members.iter().any(|x| x.device == dev))
        {
            let key = format!("md {}", md.uuid);
            if self.shown.contains(&key) {
                self.line(
                    depth,
                    &format!("{} (md {}, see above)", md.device, md.level),
                );
                continue;
            }
            self.shown.push(key);
            self.line(
                depth,
                &format!(
                    "{}  {}  md {} {} devices, UUID {}{}",
                    md.device,
                    human_bytes(md.size_bytes),
                    md.level,
                    md.raid_devices,
                    md.uuid,
                    md.name
                        .as_deref()
                        .map(|n| format!(", name {n}"))
                        .unwrap_or_default()
                ),
            );
            self.children(&md.device, depth + 1);
        }
    }

    /// LUKS containers on `dev`, and what their mappings carry.
    fn luks_on(&mut self, dev: &str, depth: usize) {
        let l = self.l;
        for x in l.luks.iter().filter(|x| x.device == dev) {
            let mapped = x.mapped_device.clone();
            self.line(
                depth,
                &format!(
                    "LUKS{} UUID {}  {} {} bits{}{}",
                    x.version,
                    x.uuid,
                    x.cipher,
                    x.key_size_bits,
                    x.label
                        .as_deref()
                        .map(|s| format!(", label {s}"))
                        .unwrap_or_default(),
                    x.mapping_name
                        .as_deref()
                        .map(|s| format!(", opens as {s}"))
                        .unwrap_or_default()
                ),
            );
            if let Some(m) = mapped {
                self.children(&m, depth + 1);
            }
        }
    }

    /// A PV on `dev`: its VG (once) and the VG's visible LVs.
    fn lvm_on(&mut self, dev: &str, depth: usize) {
        let l = self.l;
        for pv in l.lvm.pvs.iter().filter(|p| p.device == dev) {
            self.line(
                depth,
                &format!("PV UUID {}  {}", pv.uuid, human_bytes(pv.size_bytes)),
            );
            let Some(vg_name) = &pv.vg else { continue };
            let Some(vg) = l.lvm.vgs.iter().find(|v| &v.name == vg_name) else {
                continue;
            };
            if self.shown.contains(&format!("vg {}", vg.uuid)) {
                self.line(depth + 1, &format!("VG {} (see above)", vg.name));
                continue;
            }
            self.shown.push(format!("vg {}", vg.uuid));
            self.line(
                depth + 1,
                &format!(
                    "VG {}  {} ({} free), UUID {}",
                    vg.name,
                    human_bytes(vg.size_bytes),
                    human_bytes(vg.free_bytes),
                    vg.uuid
                ),
            );
            for lv in l
                .lvm
                .lvs
                .iter()
                .filter(|x| &x.vg == vg_name && !x.is_hidden())
            {
                let seg = lv.segments.first();
                let stripes = seg
                    .filter(|s| s.stripes > 1)
                    .map(|s| format!(" {} stripes", s.stripes))
                    .unwrap_or_default();
                let pool = lv
                    .pool
                    .as_deref()
                    .map(|p| format!(" in pool {p}"))
                    .unwrap_or_default();
                self.line(
                    depth + 2,
                    &format!(
                        "LV {}  {}  {}{stripes}{pool}  ({})",
                        lv.name,
                        human_bytes(lv.size_bytes),
                        lv.layout,
                        lv.device
                    ),
                );
                self.children(&lv.device, depth + 3);
            }
        }
    }

    /// File systems on `dev`, with btrfs subvolumes.
    fn filesystems_on(&mut self, dev: &str, depth: usize) {
        let l = self.l;
        for f in l.filesystems.iter().filter(|f| f.device == dev) {
            let mut s = format!("{} {}", f.fstype, human_bytes(f.size_bytes));
            if let Some(u) = &f.uuid {
                let _ = write!(s, ", UUID {u}");
            }
            if let Some(lab) = &f.label {
                let _ = write!(s, ", label {lab}");
            }
            if let Some(u) = f.used_bytes {
                let _ = write!(s, ", {} used", human_bytes(u));
            }
            if !f.mountpoints.is_empty() {
                let _ = write!(s, "  on {}", f.mountpoints.join(", "));
            }
            self.line(depth, &s);
            if let FsParams::Btrfs {
                subvolumes,
                default_subvolume_id,
                ..
            } = &f.params
            {
                for sv in subvolumes {
                    let def = if sv.id == *default_subvolume_id {
                        ", default"
                    } else {
                        ""
                    };
                    let ro = if sv.readonly { ", read-only" } else { "" };
                    self.line(
                        depth + 1,
                        &format!("subvolume {} (id {}{def}{ro})", sv.path, sv.id),
                    );
                }
            }
        }
    }

    /// Swap areas on `dev`.
    fn swaps_on(&mut self, dev: &str, depth: usize) {
        let l = self.l;
        for s in l.swaps.iter().filter(|s| s.device == dev) {
            self.line(
                depth,
                &format!(
                    "swap {}{}{}",
                    human_bytes(s.size_bytes),
                    s.uuid
                        .as_deref()
                        .map(|u| format!(", UUID {u}"))
                        .unwrap_or_default(),
                    if s.active { ", active" } else { "" }
                ),
            );
        }
    }
}

/// Renders the tree. Disks not needed are marked; unsupported items and
/// swap files follow the disks.
pub fn tree(l: &Layout) -> String {
    let mut t = Tree {
        l,
        out: String::new(),
        shown: Vec::new(),
    };
    let _ = writeln!(
        t.out,
        "{} ({}), {} firmware, captured {}",
        l.host.hostname,
        l.host.os_pretty_name.as_deref().unwrap_or("unknown OS"),
        match l.host.firmware {
            Firmware::Uefi => "UEFI",
            Firmware::Bios => "BIOS",
        },
        l.captured_at
    );
    for d in &l.disks {
        t.disk(d);
    }
    for s in l.swaps.iter().filter(|s| s.is_file) {
        let _ = writeln!(
            t.out,
            "swap file {}  {}",
            s.device,
            human_bytes(s.size_bytes)
        );
    }
    for u in &l.unsupported {
        let _ = writeln!(
            t.out,
            "UNSUPPORTED {}{}: {}",
            u.kind,
            u.device
                .as_deref()
                .map(|d| format!(" on {d}"))
                .unwrap_or_default(),
            u.reason
        );
    }
    t.out
}

impl Tree<'_> {
    /// A disk's line, then its partitions (or what sits on the whole disk).
    fn disk(&mut self, d: &Disk) {
        let ident = d
            .serial
            .as_deref()
            .map(|s| format!("serial {s}"))
            .or_else(|| d.wwn.as_deref().map(|w| format!("WWN {w}")))
            .unwrap_or_else(|| "no serial".into());
        let table = match &d.partition_table {
            Some(PartitionTable::Gpt(g)) => format!("GPT {}", g.disk_guid),
            Some(PartitionTable::Mbr(m)) => format!("MBR 0x{:08x}", m.disk_signature),
            None => "no partition table".into(),
        };
        let needed = if d.needed {
            String::new()
        } else {
            format!("  [not needed: {}]", d.needed_reason)
        };
        self.line(
            0,
            &format!(
                "{}  {}  {}{}, {table}{needed}",
                d.path,
                human_bytes(d.size_bytes),
                ident,
                d.transport
                    .as_deref()
                    .map(|x| format!(", {x}"))
                    .unwrap_or_default()
            ),
        );
        match &d.partition_table {
            Some(PartitionTable::Gpt(g)) => g.partitions.iter().for_each(|p| self.gpt_partition(p)),
            Some(PartitionTable::Mbr(m)) => m.partitions.iter().for_each(|p| self.mbr_partition(p)),
            None => self.children(&d.path, 1),
        }
    }

    fn gpt_partition(&mut self, p: &GptPartition) {
        let name = if p.name.is_empty() {
            String::new()
        } else {
            format!(" \"{}\"", p.name)
        };
        self.line(
            1,
            &format!(
                "{}  {}  {}{name}, PARTUUID {}",
                p.device,
                human_bytes(p.size_bytes),
                gpt_type_name(&p.type_guid),
                p.unique_guid
            ),
        );
        self.children(&p.device, 2);
    }

    fn mbr_partition(&mut self, p: &MbrPartition) {
        let boot = if p.bootable { ", bootable" } else { "" };
        let kind = match p.kind {
            MbrKind::Primary => "primary",
            MbrKind::Extended => "extended",
            MbrKind::Logical => "logical",
        };
        self.line(
            1,
            &format!(
                "{}  {}  {kind} type 0x{:02x}{boot}",
                p.device,
                human_bytes(p.size_bytes),
                p.type_byte
            ),
        );
        self.children(&p.device, 2);
    }
}

/// Short names of common GPT partition types.
pub fn gpt_type_name(guid: &str) -> String {
    match guid {
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => "EFI system",
        "21686148-6449-6e6f-744e-656564454649" => "BIOS boot",
        "0fc63daf-8483-4772-8e79-3d69d8477de4" => "Linux",
        "e6d6d379-f507-44c2-a23c-238f2a3df928" => "Linux LVM",
        "a19d880f-05fc-4d3b-a006-743f0f84911e" => "Linux RAID",
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" => "Linux root (x86-64)",
        "bc13c2ff-59e6-4262-a352-b275fd6f7172" => "Linux extended boot",
        "ca7d7ccb-63ed-4c53-861c-1742536059cc" => "Linux LUKS",
        "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7" => "Microsoft basic data",
        other => return format!("type {other}"),
    }
    .to_string()
}

/// A short summary for `layout save`: counts and what needs attention.
pub fn summary(l: &Layout) -> String {
    let mut s = String::new();
    let needed = l.disks.iter().filter(|d| d.needed).count();
    let _ = writeln!(
        s,
        "{} disk{} ({} needed), {} md, {} LUKS, {} VG / {} LV, {} file system{}, {} swap, {} mount{}",
        l.disks.len(),
        if l.disks.len() == 1 { "" } else { "s" },
        needed,
        l.md_arrays.len(),
        l.luks.len(),
        l.lvm.vgs.len(),
        l.lvm.lvs.iter().filter(|x| !x.is_hidden()).count(),
        l.filesystems.len(),
        if l.filesystems.len() == 1 { "" } else { "s" },
        l.swaps.len(),
        l.mounts.len(),
        if l.mounts.len() == 1 { "" } else { "s" },
    );
    for d in &l.disks {
        let _ = writeln!(
            s,
            "  {:<14} {:>10}  {}",
            d.path,
            human_bytes(d.size_bytes),
            if d.needed {
                format!("needed: {}", d.needed_reason)
            } else {
                format!("not needed: {}", d.needed_reason)
            }
        );
    }
    let grub: Vec<&str> = l.boot.grub.iter().map(|g| g.platform.as_str()).collect();
    let _ = writeln!(
        s,
        "boot: {}{}{}, {} ESP{}, {} EFI entr{}",
        match l.boot.firmware {
            Firmware::Uefi => "UEFI",
            Firmware::Bios => "BIOS",
        },
        if grub.is_empty() {
            String::new()
        } else {
            format!(", GRUB {}", grub.join(" + "))
        },
        if l.boot.shim { ", shim" } else { "" },
        l.boot.esps.len(),
        if l.boot.esps.len() == 1 { "" } else { "s" },
        l.boot.efi_entries.len(),
        if l.boot.efi_entries.len() == 1 {
            "y"
        } else {
            "ies"
        },
    );
    for line in l.network_config.iter().flat_map(|n| n.describe()) {
        let _ = writeln!(s, "{line}");
    }
    for u in &l.unsupported {
        let _ = writeln!(
            s,
            "NOT SUPPORTED: {}{}: {}",
            u.kind,
            u.device
                .as_deref()
                .map(|d| format!(" on {d}"))
                .unwrap_or_default(),
            u.reason
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_nests_the_stack_under_its_disk() {
        let mut l = crate::layout::diff::tests::machine();
        l.disks[1].needed = false;
        l.disks[1].needed_reason = "nothing on it is mounted".into();
        let t = tree(&l);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[1],
            "/dev/vda  10.0 GiB  serial SER-A, virtio, GPT aaaaaaaa-0000-4000-8000-000000000000"
        );
        assert!(lines[2].starts_with("└─/dev/vda1  "), "{t}");
        assert!(
            lines[2].contains("Linux LVM \"pv\", PARTUUID aaaaaaaa-0001-4000-8000-000000000001"),
            "{t}"
        );
        assert!(lines[3].starts_with("  └─PV UUID pv-a"), "{t}");
        assert!(
            lines[4].starts_with("    └─VG vg0  10.0 GiB (8.0 GiB free)"),
            "{t}"
        );
        assert!(
            lines[5].starts_with("      └─LV root  2.0 GiB  linear"),
            "{t}"
        );
        assert!(
            lines[6].starts_with("        └─ext4 2.0 GiB, UUID fs-root"),
            "{t}"
        );
        assert!(lines[6].ends_with("on /"), "{t}");
        assert!(t.contains("[not needed: nothing on it is mounted]"), "{t}");
        for line in &lines {
            assert!(line.chars().count() < 160, "{line}");
        }
    }

    #[test]
    fn summary_counts_and_flags_unsupported() {
        let mut l = crate::layout::diff::tests::machine();
        l.unsupported.push(Unsupported {
            kind: "zfs".into(),
            device: Some("/dev/sdc".into()),
            reason: "ZFS pools are not supported".into(),
        });
        let s = summary(&l);
        assert!(
            s.starts_with(
                "2 disks (2 needed), 0 md, 0 LUKS, 1 VG / 1 LV, 1 file system, 0 swap, 0 mounts"
            ),
            "{s}"
        );
        assert!(
            s.contains("NOT SUPPORTED: zfs on /dev/sdc: ZFS pools are not supported"),
            "{s}"
        );
        assert!(s.contains("boot: UEFI, 0 ESPs, 0 EFI entries"), "{s}");
    }
}
