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
    let esps = esp_devices(disks);
    let esp_files = EspFiles(
        filesystems
            .iter()
            .filter(|f| esps.contains(&f.device))
            .flat_map(|f| f.mountpoints.iter().map(|m| ctx.mnt(m)))
            .collect(),
    );
    let grub = grub_targets(ctx, disks, &esp_files);
    let (efi_entries, boot_order, boot_current) = match firmware {
        Firmware::Uefi => efi_boot_entries(ctx),
        Firmware::Bios => (Vec::new(), Vec::new(), None),
    };
    let loader_has = |s: &str| {
        efi_entries.iter().any(|e| {
            e.loader
                .as_deref()
                .is_some_and(|l| l.to_ascii_lowercase().contains(s))
        })
    };
    Ok(Boot {
        firmware,
        shim: esp_files.has("shimx64.efi") || loader_has("shim"),
        systemd_boot: esp_files.has("systemd-bootx64.efi") || loader_has("systemd-boot"),
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

/// The EFI system partitions of the disks (GPT type or MBR type 0xef).
fn esp_devices(disks: &[Disk]) -> Vec<String> {
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
    esps
}

/// The mounted ESPs (their mount points).
struct EspFiles(Vec<PathBuf>);

impl EspFiles {
    /// Whether a mounted ESP holds EFI/*/`file` (any case).
    fn has(&self, file: &str) -> bool {
        let matches = |dir: &Path| {
            std::fs::read_dir(dir).is_ok_and(|files| {
                files
                    .filter_map(|f| f.ok())
                    .any(|f| f.file_name().to_string_lossy().eq_ignore_ascii_case(file))
            })
        };
        self.0.iter().any(|m| {
            std::fs::read_dir(m.join("EFI"))
                .is_ok_and(|rd| rd.filter_map(|e| e.ok()).any(|e| matches(&e.path())))
        })
    }
}

/// GRUB's platforms: i386-pc with the disks whose first sector holds its
/// boot code, x86_64-efi from its folder or its loader on an ESP.
fn grub_targets(ctx: &Ctx, disks: &[Disk], esp_files: &EspFiles) -> Vec<GrubTarget> {
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
    if boot_grub.join("x86_64-efi").is_dir() || esp_files.has("grubx64.efi") {
        grub.push(GrubTarget {
            platform: GrubPlatform::X86_64Efi,
            disks: Vec::new(),
        });
    }
    grub
}

/// The EFI boot entries, BootOrder and BootCurrent: from efivarfs, else
/// (on the running system) from `efibootmgr -v`.
fn efi_boot_entries(ctx: &Ctx) -> (Vec<EfiBootEntry>, Vec<String>, Option<String>) {
    match boot::read_efivars(&ctx.sys.join("firmware/efi/efivars")) {
        Ok((e, o, c)) if !e.is_empty() || !o.is_empty() => return (e, o, c),
        Err(e) => log::debug!("reading efivarfs: {e:#}"),
        Ok(_) => {}
    }
    if ctx.opts.root != Path::new("/") {
        return (Vec::new(), Vec::new(), None);
    }
    match Cmd::new("efibootmgr").arg("-v").read() {
        Ok(text) => boot::parse_efibootmgr(&text),
        Err(e) => {
            log::warn!("EFI boot entries not recorded: {e:#}");
            (Vec::new(), Vec::new(), None)
        }
    }
}
