//! The boot setup collector: ESPs, GRUB targets (boot code in each disk's
//! first sector, GRUB's platform folders), EFI boot entries, shim and
//! systemd-boot, the kernel command line.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::ctx::{read_opt, Ctx};
use super::{boot, ptable};
use crate::exec::Cmd;
use crate::layout::*;

pub(super) fn collect_boot(
    ctx: &Ctx,
    firmware: Firmware,
    disks: &[Disk],
    filesystems: &[Filesystem],
) -> Result<Boot> {
    let mut esps = Vec::new();
    for d in disks {
        match &d.partition_table {
            Some(PartitionTable::Gpt(g)) => esps.extend(
                g.partitions
                    .iter()
                    .filter(|p| p.type_guid == boot::ESP_TYPE_GUID)
                    .map(|p| p.device.clone()),
            ),
            Some(PartitionTable::Mbr(m)) => esps.extend(
                m.partitions
                    .iter()
                    .filter(|p| p.type_byte == 0xef)
                    .map(|p| p.device.clone()),
            ),
            None => {}
        }
    }
    // Files on the mounted ESPs: EFI/*/NAME.
    let esp_mounts: Vec<PathBuf> = filesystems
        .iter()
        .filter(|f| esps.contains(&f.device))
        .flat_map(|f| f.mountpoints.iter().map(|m| ctx.mnt(m)))
        .collect();
    let esp_has = |file: &str| {
        esp_mounts.iter().any(|m| {
            std::fs::read_dir(m.join("EFI"))
                .map(|rd| {
                    rd.filter_map(|e| e.ok()).any(|e| {
                        std::fs::read_dir(e.path())
                            .map(|files| {
                                files.filter_map(|f| f.ok()).any(|f| {
                                    f.file_name().to_string_lossy().eq_ignore_ascii_case(file)
                                })
                            })
                            .unwrap_or(false)
                    })
                })
                .unwrap_or(false)
        })
    };
    let mut grub = Vec::new();
    let mut pc_disks = Vec::new();
    for d in disks {
        let path = ctx.path(&d.path);
        if let Ok(mut f) = std::fs::File::open(&path) {
            use std::io::Read;
            let mut s0 = vec![0u8; 512];
            if f.read_exact(&mut s0).is_ok() && ptable::has_grub_boot_code(&s0) {
                pc_disks.push(d.path.clone());
            }
        }
    }
    let boot_grub = ctx.opts.system_file("boot/grub");
    if !pc_disks.is_empty() || boot_grub.join("i386-pc").is_dir() {
        grub.push(GrubTarget {
            platform: GrubPlatform::I386Pc,
            disks: pc_disks,
        });
    }
    if boot_grub.join("x86_64-efi").is_dir() || esp_has("grubx64.efi") {
        grub.push(GrubTarget {
            platform: GrubPlatform::X86_64Efi,
            disks: Vec::new(),
        });
    }
    let (mut efi_entries, mut boot_order, mut boot_current) = (Vec::new(), Vec::new(), None);
    if firmware == Firmware::Uefi {
        match boot::read_efivars(&ctx.sys.join("firmware/efi/efivars")) {
            Ok((e, o, c)) if !e.is_empty() || !o.is_empty() => {
                (efi_entries, boot_order, boot_current) = (e, o, c);
            }
            other => {
                if let Err(e) = other {
                    log::debug!("reading efivarfs: {e:#}");
                }
                if ctx.opts.root == Path::new("/") {
                    match Cmd::new("efibootmgr").arg("-v").read() {
                        Ok(text) => {
                            (efi_entries, boot_order, boot_current) = boot::parse_efibootmgr(&text)
                        }
                        Err(e) => log::warn!("EFI boot entries not recorded: {e:#}"),
                    }
                }
            }
        }
    }
    let loader_has = |s: &str| {
        efi_entries.iter().any(|e| {
            e.loader
                .as_deref()
                .is_some_and(|l| l.to_ascii_lowercase().contains(s))
        })
    };
    Ok(Boot {
        firmware,
        shim: esp_has("shimx64.efi") || loader_has("shim"),
        systemd_boot: esp_has("systemd-bootx64.efi") || loader_has("systemd-boot"),
        grub,
        esps,
        efi_entries,
        boot_order,
        boot_current,
        // The rescue's own command line says nothing about the system.
        kernel_cmdline: match &ctx.opts.system_root {
            Some(_) => String::new(),
            None => read_opt(&ctx.opts.root.join("proc/cmdline"))
                .unwrap_or_default()
                .trim()
                .to_string(),
        },
    })
}
