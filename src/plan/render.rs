//! The plan in words, as `lifeboat plan` and `recover` print it.

use std::fmt::Write;

use super::{Plan, Step};
use crate::layout::PartitionTable;
use crate::util::human_bytes;

/// One line describing a step.
pub fn step_title(step: &Step) -> String {
    match step {
        Step::Partition { disk, old_disk, table } => match table {
            PartitionTable::Gpt(g) => format!(
                "write GPT on {disk} (was {old_disk}): disk GUID {}, {} partitions",
                g.disk_guid,
                g.partitions.len()
            ),
            PartitionTable::Mbr(m) => format!(
                "write MBR on {disk} (was {old_disk}): signature 0x{:08x}, {} partitions",
                m.disk_signature,
                m.partitions.len()
            ),
        },
        Step::CreateMd { array } => format!(
            "create md {} {} ({} metadata {}, UUID {}) on {}",
            array.level,
            array.device,
            array.name.as_deref().unwrap_or("unnamed"),
            array.metadata,
            array.uuid,
            array.members.iter().map(|m| m.device.as_str()).collect::<Vec<_>>().join(", ")
        ),
        Step::FormatLuks { luks, name } => format!(
            "format LUKS{} on {} (UUID {}, {} {}-bit) and open it as {name}",
            luks.version, luks.device, luks.uuid, luks.cipher, luks.key_size_bits
        ),
        Step::CreateVg { vg, pvs, lvs, .. } => format!(
            "create volume group {} (UUID {}) on {} with {} logical volumes",
            vg.name,
            vg.uuid,
            pvs.iter().map(|p| p.device.as_str()).collect::<Vec<_>>().join(", "),
            lvs.len()
        ),
        Step::Mkfs { fs } => format!(
            "make {} on {} ({}, UUID {}{})",
            fs.fstype,
            fs.device,
            human_bytes(fs.size_bytes),
            fs.uuid.as_deref().unwrap_or("new"),
            fs.label.as_deref().map(|l| format!(", label {l}")).unwrap_or_default()
        ),
        Step::Mkswap { swap } => format!(
            "make swap on {} (UUID {})",
            swap.device,
            swap.uuid.as_deref().unwrap_or("new")
        ),
        Step::Mount { mounts } => format!("mount the {} new file systems", mounts.len()),
        Step::Restore { backup } => format!("restore the backup from {backup}"),
        Step::FixConfig { replacements } => format!(
            "rewrite {} changed device names in fstab, crypttab, mdadm.conf and the boot configuration",
            replacements.len()
        ),
        Step::Network { nics } => format!(
            "move the network configuration of {} interface{} onto the new ones",
            nics.pairs.len(),
            if nics.pairs.len() == 1 { "" } else { "s" }
        ),
        Step::Initramfs => "regenerate the initramfs of the restored system".into(),
        Step::Migrate { to, package, .. } => format!(
            "convert the restored system to {} boot (GRUB from its {package})",
            match to {
                crate::layout::Firmware::Uefi => "UEFI",
                crate::layout::Firmware::Bios => "BIOS",
            }
        ),
        Step::Bootloader { bios_disks, efi_entries, esps, write_nvram, grub_efi } => {
            let mut parts = Vec::new();
            if *grub_efi {
                parts.push(format!("GRUB x86_64-efi on {}", esps.join(", ")));
            }
            if !bios_disks.is_empty() {
                parts.push(format!("GRUB i386-pc on {}", bios_disks.join(", ")));
            }
            if !esps.is_empty() {
                parts.push(format!("EFI fallback loader on {}", esps.join(", ")));
            }
            if !efi_entries.is_empty() && *write_nvram {
                parts.push(format!(
                    "EFI boot entr{} {}",
                    if efi_entries.len() == 1 { "y" } else { "ies" },
                    efi_entries.iter().map(|e| format!("{:?}", e.label)).collect::<Vec<_>>().join(", ")
                ));
            }
            format!("install the bootloader: {}", parts.join("; "))
        }
        Step::Verify => "verify: re-capture the new disks, compare with this plan, write the report".into(),
    }
}

/// Each EFI boot entry with the new partition it goes on.
fn entry_details(plan: &Plan, entries: &[crate::layout::EfiBootEntry], out: &mut String) {
    for e in entries {
        let guid = e.partition_guid.as_deref().unwrap_or_default();
        let on = plan
            .steps
            .iter()
            .find_map(|s| match s {
                Step::Partition {
                    disk,
                    table: PartitionTable::Gpt(t),
                    ..
                } => t
                    .partitions
                    .iter()
                    .find(|p| p.unique_guid.eq_ignore_ascii_case(guid))
                    .map(|p| super::partition_path(disk, p.number)),
                _ => None,
            })
            .unwrap_or_else(|| format!("partition {guid}"));
        let _ = writeln!(
            out,
            "         EFI entry {:?} {} on {on}",
            e.label,
            e.loader.as_deref().unwrap_or("?")
        );
    }
}

/// Details printed under a step.
fn step_details(step: &Step, out: &mut String) {
    match step {
        Step::Partition { table, .. } => match table {
            PartitionTable::Gpt(g) => {
                for p in &g.partitions {
                    let _ = writeln!(
                        out,
                        "         {:>3}  {:<18} {:>10}  LBA {}-{}  {} {:?}",
                        p.number,
                        p.device,
                        human_bytes(p.size_bytes),
                        p.first_lba,
                        p.last_lba,
                        type_name(&p.type_guid),
                        p.name
                    );
                }
            }
            PartitionTable::Mbr(m) => {
                for p in &m.partitions {
                    let _ = writeln!(
                        out,
                        "         {:>3}  {:<18} {:>10}  LBA {}+{}  type 0x{:02x} {:?}{}",
                        p.number,
                        p.device,
                        human_bytes(p.size_bytes),
                        p.first_lba,
                        p.sectors,
                        p.type_byte,
                        p.kind,
                        if p.bootable { " bootable" } else { "" }
                    );
                }
            }
        },
        Step::CreateVg { lvs, .. } => {
            for l in lvs {
                let _ = writeln!(
                    out,
                    "         {:<24} {:>10}  {}{}",
                    l.lv.name,
                    human_bytes(l.size_bytes),
                    l.lv.segments
                        .first()
                        .map(|s| s.segtype.as_str())
                        .unwrap_or("linear"),
                    if l.placement.is_free() {
                        String::new()
                    } else {
                        format!(" {}", l.placement.describe())
                    }
                );
            }
        }
        Step::Mount { mounts } => {
            for m in mounts {
                let _ = writeln!(
                    out,
                    "         {:<24} on {}{}",
                    m.device,
                    m.mountpoint,
                    if m.options.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", m.options.join(","))
                    }
                );
            }
        }
        Step::Network { nics } => {
            for p in &nics.pairs {
                let _ = writeln!(
                    out,
                    "         {} -> {}  [{}]",
                    super::nic::describe(&p.old),
                    super::nic::describe(&p.new),
                    p.reason
                );
            }
        }
        Step::FixConfig { replacements } => {
            for (o, n) in replacements {
                let _ = writeln!(out, "         {o} -> {n}");
            }
        }
        _ => {}
    }
}

/// Human names of common GPT partition types.
pub fn type_name(guid: &str) -> &'static str {
    match guid {
        "21686148-6449-6e6f-744e-656564454649" => "BIOS boot",
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" => "EFI system",
        "0fc63daf-8483-4772-8e79-3d69d8477de4" => "Linux data",
        "e6d6d379-f507-44c2-a23c-238f2a3df928" => "Linux LVM",
        "a19d880f-05fc-4d3b-a006-743f0f84911e" => "Linux RAID",
        "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f" => "Linux swap",
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" => "Linux root (x86-64)",
        "bc13c2ff-59e6-4262-a352-b275fd6f7172" => "Linux extended boot",
        "933ac7e1-2eb4-4f13-b844-0e14e2aef915" => "Linux home",
        "ca7d7ccb-63ed-4c53-861c-1742536059cc" => "Linux LUKS",
        _ => "type",
    }
}

/// The whole plan as text.
/// The least size of each file system: used bytes + headroom.
fn render_floors(plan: &Plan, out: &mut String) {
    if plan.floors.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nLeast sizes (used bytes + 10%, at least {} more):",
        human_bytes(super::stack::MIN_HEADROOM)
    );
    for f in &plan.floors {
        let what = format!(
            "{} ({} on {})",
            f.mountpoint.as_deref().unwrap_or("-"),
            f.fstype,
            f.device
        );
        let _ = writeln!(
            out,
            "  {what:<40} {} used + {} -> at least {}{}",
            human_bytes(f.used_bytes),
            human_bytes(f.headroom_bytes),
            human_bytes(f.least_bytes),
            f.new_bytes
                .map(|n| format!("; gets {}", human_bytes(n)))
                .unwrap_or_default()
        );
    }
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Recovery plan for {} (layout captured {})",
        plan.hostname, plan.layout_captured_at
    );
    let _ = writeln!(out, "\nDisks:");
    for d in &plan.disks {
        let _ = writeln!(
            out,
            "  {} ({}) -> {} ({})  [{}]",
            d.old,
            human_bytes(d.old_size_bytes),
            d.new,
            human_bytes(d.new_size_bytes),
            d.reason
        );
        let _ = writeln!(
            out,
            "      {}: {}; holds {}",
            d.new,
            d.new_identity.describe(),
            d.new_contents.describe()
        );
    }
    if !plan.sizes.is_empty() {
        let _ = writeln!(out, "\nSizes:");
        for s in &plan.sizes {
            let _ = writeln!(
                out,
                "  {:<40} {:>10} -> {:>10}{}",
                s.item,
                human_bytes(s.old_bytes),
                human_bytes(s.new_bytes),
                if s.note.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", s.note)
                }
            );
        }
    }
    render_floors(plan, &mut out);
    if !plan.adjustments.is_empty() {
        let _ = writeln!(out, "\nChanged for the new disks:");
        for a in &plan.adjustments {
            let _ = writeln!(out, "  {a}");
        }
    }
    let _ = writeln!(out, "\nSteps:");
    for (i, step) in plan.steps.iter().enumerate() {
        let _ = writeln!(out, "  {:>2}. {}", i + 1, step_title(step));
        step_details(step, &mut out);
        if let Step::Bootloader {
            efi_entries,
            write_nvram: true,
            ..
        } = step
        {
            entry_details(plan, efi_entries, &mut out);
        }
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in &plan.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    if !plan.errors.is_empty() {
        let _ = writeln!(out, "\nErrors:");
        for e in &plan.errors {
            let _ = writeln!(out, "  - {e}");
        }
    }
    out
}
