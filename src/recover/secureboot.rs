//! The recovered system's own Secure Boot chain. A source whose EFI boot
//! entry started shim gets shim, the signed GRUB and MokManager reinstalled
//! from the restored system's own packages (shim-signed,
//! grub-efi-amd64-signed) by its grub-install, under the entry's folder
//! (`EFI/debian/shimx64.efi`, which the recreated entry points at) and as
//! the removable fallback (`EFI/BOOT/BOOTX64.EFI` = shim, `grubx64.efi`
//! beside it): the ESP then matches the restored packages even when the
//! backup's copy of the ESP was older or missing.

use std::path::Path;

use anyhow::{Context, Result};

use super::fixup::Chroot;
use crate::layout::EfiBootEntry;

/// Where the restored system's packages keep the signed loaders.
const SIGNED: [(&str, &str); 2] = [
    ("usr/lib/shim/shimx64.efi.signed", "shim-signed"),
    (
        "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        "grub-efi-amd64-signed",
    ),
];

/// What recovery does about shim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimAction {
    /// The source did not boot through shim.
    NotUsed,
    /// Reinstall shim and the signed GRUB with this bootloader id (the
    /// folder under EFI/ of the entry).
    Reinstall { id: String },
    /// The source booted through shim but the restored system lacks a
    /// package: the restored ESP is left as it is.
    Missing { id: String, package: &'static str },
    /// The source booted through shim but no ESP is mounted at the restored
    /// system's /boot/efi, where its grub-install puts the loaders.
    NoEsp { id: String },
}

/// The folder under `EFI\` of the first entry whose loader is shim
/// (`\EFI\debian\shimx64.efi` gives `debian`).
pub fn shim_entry_id(entries: &[EfiBootEntry]) -> Option<String> {
    entries
        .iter()
        .filter_map(|e| e.loader.as_deref())
        .find_map(|l| {
            let parts: Vec<&str> = l.split(['\\', '/']).filter(|p| !p.is_empty()).collect();
            match parts.as_slice() {
                [efi, id, file]
                    if efi.eq_ignore_ascii_case("EFI")
                        && file.eq_ignore_ascii_case("shimx64.efi") =>
                {
                    Some(id.to_string())
                }
                _ => None,
            }
        })
}

/// The decision for the restored system at `root`; `esp_at_boot_efi`:
/// one of its ESPs is mounted at `root`/boot/efi.
pub fn decide(entries: &[EfiBootEntry], root: &Path, esp_at_boot_efi: bool) -> ShimAction {
    let Some(id) = shim_entry_id(entries) else {
        return ShimAction::NotUsed;
    };
    if !esp_at_boot_efi {
        return ShimAction::NoEsp { id };
    }
    match SIGNED.iter().find(|(file, _)| !root.join(file).is_file()) {
        Some((_, package)) => ShimAction::Missing { id, package },
        None => ShimAction::Reinstall { id },
    }
}

/// Carries out `action` in the restored system (its ESP mounted at
/// /boot/efi), with its own grub-install. Returns notes for the report.
pub fn reinstall(chroot: &Chroot, action: &ShimAction) -> Result<Vec<String>> {
    let id = match action {
        ShimAction::NotUsed => return Ok(Vec::new()),
        ShimAction::Missing { id, package } => {
            log::warn!(
                "the source booted through shim (EFI/{id}/shimx64.efi) but the restored system \
                 has no {package}: the ESP keeps the restored loaders; install {package} in it \
                 for Secure Boot"
            );
            return Ok(vec![format!(
                "Secure Boot chain not reinstalled: the restored system has no {package}"
            )]);
        }
        ShimAction::NoEsp { id } => {
            log::warn!(
                "the source booted through shim (EFI/{id}/shimx64.efi) but no ESP is mounted at \
                 /boot/efi of the restored system: the ESP keeps the restored loaders"
            );
            return Ok(vec![
                "Secure Boot chain not reinstalled: no ESP at /boot/efi".to_string(),
            ]);
        }
        ShimAction::Reinstall { id } => id,
    };
    let tool = chroot
        .has("grub-install")
        .context("the restored system has no grub-install: shim cannot be reinstalled")?;
    let id_arg = format!("--bootloader-id={id}");
    let base = [
        "--target=x86_64-efi",
        "--efi-directory=/boot/efi",
        "--uefi-secure-boot",
        "--no-nvram",
    ];
    for extra in [id_arg.as_str(), "--removable"] {
        let mut args = base.to_vec();
        args.push(extra);
        chroot
            .run(&tool, &args)
            .with_context(|| format!("reinstalling shim and the signed GRUB ({extra})"))?;
    }
    Ok(vec![format!(
        "Secure Boot chain reinstalled: EFI/{id}/shimx64.efi -> grubx64.efi (signed), and \
         EFI/BOOT/BOOTX64.EFI = shim"
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(loader: &str) -> EfiBootEntry {
        EfiBootEntry {
            number: "0003".into(),
            label: "debian".into(),
            active: true,
            partition_guid: None,
            loader: Some(loader.into()),
            device_path: String::new(),
        }
    }

    #[test]
    fn shim_is_reinstalled_only_for_a_source_that_booted_through_it() {
        let root = tempfile::tempdir().unwrap();
        let put = |rel: &str| {
            let p = root.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        let grub_only = [entry("\\EFI\\debian\\grubx64.efi")];
        assert_eq!(decide(&grub_only, root.path(), true), ShimAction::NotUsed);
        assert_eq!(decide(&[], root.path(), true), ShimAction::NotUsed);

        let shim = [
            entry("\\EFI\\debian\\grubx64.efi"),
            entry("\\EFI\\Debian\\SHIMX64.EFI"),
        ];
        assert_eq!(shim_entry_id(&shim).as_deref(), Some("Debian"));
        assert_eq!(
            decide(&shim, root.path(), true),
            ShimAction::Missing {
                id: "Debian".into(),
                package: "shim-signed"
            }
        );
        put("usr/lib/shim/shimx64.efi.signed");
        assert_eq!(
            decide(&shim, root.path(), true),
            ShimAction::Missing {
                id: "Debian".into(),
                package: "grub-efi-amd64-signed"
            }
        );
        put("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed");
        assert_eq!(
            decide(&shim, root.path(), true),
            ShimAction::Reinstall {
                id: "Debian".into()
            }
        );
        assert_eq!(
            decide(&shim, root.path(), false),
            ShimAction::NoEsp {
                id: "Debian".into()
            }
        );
        // A shim elsewhere than EFI\ID\ is no entry of an installed system.
        assert_eq!(shim_entry_id(&[entry("\\shimx64.efi")]), None);
    }
}
