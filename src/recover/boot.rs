//! Making the recovered system boot: GRUB on the BIOS disks, the EFI boot
//! entries with their old labels and loaders, and the removable fallback
//! loader on every ESP.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::fixup::Chroot;
use crate::exec::{Cmd, Gate};
use crate::layout::{EfiBootEntry, PartitionTable};

/// Installs GRUB for i386-pc on each disk, inside the new system.
pub fn grub_bios(chroot: &Chroot, disks: &[String]) -> Result<Vec<String>> {
    let tool = chroot
        .has("grub-install")
        .or_else(|| chroot.has("grub2-install"))
        .context("the restored system has no grub-install: it cannot boot under BIOS")?;
    let mut done = Vec::new();
    for d in disks {
        chroot
            .run(&tool, &["--target=i386-pc", "--recheck", d])
            .with_context(|| format!("installing GRUB (i386-pc) on {d}"))?;
        done.push(format!("GRUB i386-pc installed on {d}"));
    }
    Ok(done)
}

/// Regenerates grub.cfg when the system uses GRUB.
pub fn grub_config(chroot: &Chroot) -> Result<Option<String>> {
    if let Some(t) = chroot.has("update-grub") {
        chroot
            .run(&t, &[])
            .context("regenerating grub.cfg with update-grub")?;
        return Ok(Some("grub.cfg regenerated (update-grub)".into()));
    }
    for (tool, cfg) in [
        ("grub2-mkconfig", "/boot/grub2/grub.cfg"),
        ("grub-mkconfig", "/boot/grub/grub.cfg"),
    ] {
        if let Some(t) = chroot.has(tool) {
            chroot
                .run(&t, &["-o", cfg])
                .with_context(|| format!("regenerating {cfg} with {tool}"))?;
            return Ok(Some(format!("{cfg} regenerated ({tool})")));
        }
    }
    Ok(None)
}

/// Finds a path inside `dir` case-insensitively (FAT is case-insensitive,
/// but Linux shows the stored case).
pub fn find_ci(dir: &Path, rel: &str) -> Option<PathBuf> {
    let mut cur = dir.to_path_buf();
    for part in rel.split(['/', '\\']).filter(|p| !p.is_empty()) {
        let found = std::fs::read_dir(&cur)
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().eq_ignore_ascii_case(part))?;
        cur = found.path();
    }
    Some(cur)
}

/// Makes sure `EFI/BOOT/BOOTX64.EFI` exists on the ESP mounted at `esp`,
/// copying the loader of the first boot entry (with shim's companions).
pub fn ensure_fallback(
    esp: &Path,
    entries: &[EfiBootEntry],
    gate: &Gate,
) -> Result<Option<String>> {
    if find_ci(esp, "EFI/BOOT/BOOTX64.EFI").is_some() {
        return Ok(None);
    }
    let loader = entries
        .iter()
        .filter_map(|e| e.loader.as_deref())
        .find_map(|l| find_ci(esp, l))
        .or_else(|| {
            ["shimx64.efi", "grubx64.efi", "systemd-bootx64.efi"]
                .iter()
                .find_map(|name| {
                    let efi = find_ci(esp, "EFI")?;
                    std::fs::read_dir(efi)
                        .ok()?
                        .filter_map(|e| e.ok())
                        .find_map(|d| find_ci(&d.path(), name))
                })
        })
        .context("the ESP has no EFI/BOOT/BOOTX64.EFI and no loader to copy there")?;
    let boot = match find_ci(esp, "EFI/BOOT") {
        Some(p) => p,
        None => {
            let efi = find_ci(esp, "EFI").unwrap_or_else(|| esp.join("EFI"));
            let p = efi.join("BOOT");
            gate.create_dir_all(&p)?;
            p
        }
    };
    gate.copy(&loader, &boot.join("BOOTX64.EFI"))
        .with_context(|| format!("copying {} to the fallback path", loader.display()))?;
    // shim loads grubx64.efi (and mmx64.efi) from its own folder.
    if let Some(dir) = loader.parent() {
        for companion in ["grubx64.efi", "mmx64.efi", "fbx64.efi"] {
            if let Some(src) = find_ci(dir, companion) {
                if find_ci(&boot, companion).is_none() && companion != "fbx64.efi" {
                    gate.copy(&src, &boot.join(companion))?;
                }
            }
        }
    }
    Ok(Some(format!(
        "fallback loader EFI/BOOT/BOOTX64.EFI copied from {}",
        loader.strip_prefix(esp).unwrap_or(&loader).display()
    )))
}

/// One entry as `efibootmgr` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvramEntry {
    pub number: String,
    pub label: String,
    pub partition_guid: Option<String>,
    pub loader: Option<String>,
}

/// Parses `efibootmgr` (with or without -v) output: entries and BootOrder.
pub fn parse_efibootmgr(text: &str) -> (Vec<NvramEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut order = Vec::new();
    for line in text.lines() {
        if let Some(o) = line.strip_prefix("BootOrder: ") {
            order = o
                .trim()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            continue;
        }
        let Some(rest) = line.strip_prefix("Boot") else {
            continue;
        };
        if rest.len() < 5 || !rest[..4].chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let number = rest[..4].to_string();
        let body = rest[4..].trim_start_matches('*').trim_start();
        let (label, path) = match body.split_once('\t') {
            Some((l, p)) => (l.trim().to_string(), p),
            None => match body.find("HD(") {
                Some(i) => (body[..i].trim().to_string(), &body[i..]),
                None => (body.trim().to_string(), ""),
            },
        };
        let partition_guid = path.find("HD(").and_then(|i| {
            let inner = &path[i + 3..];
            let inner = &inner[..inner.find(')')?];
            inner.split(',').nth(2).map(|g| g.to_lowercase())
        });
        let loader = path.find("File(").and_then(|i| {
            let inner = &path[i + 5..];
            Some(inner[..inner.find(')')?].to_string())
        });
        entries.push(NvramEntry {
            number,
            label,
            partition_guid,
            loader,
        });
    }
    (entries, order)
}

/// Creates (or finds) the EFI boot entries and puts them first in BootOrder.
pub fn efi_entries(
    entries: &[EfiBootEntry],
    tables: &[(String, PartitionTable)],
    gate: &Gate,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut ours: Vec<String> = Vec::new();
    for e in entries {
        let (number, note) = ensure_entry(e, tables, gate)?;
        done.push(note);
        ours.push(number);
    }
    if !ours.is_empty() {
        let (_, order) = parse_efibootmgr(&Cmd::new("efibootmgr").read()?);
        let mut new_order = ours.clone();
        new_order.extend(order.into_iter().filter(|o| !ours.contains(o)));
        Cmd::new("efibootmgr")
            .args(["--bootorder", &new_order.join(",")])
            .mutating(gate)
            .run()
            .context("setting BootOrder")?;
        done.push(format!("BootOrder {}", new_order.join(",")));
    }
    Ok(done)
}

/// The recreated GPT partition with the entry's partition GUID: its disk
/// and number, and the GUID in lower case.
fn entry_partition(
    e: &EfiBootEntry,
    tables: &[(String, PartitionTable)],
) -> Result<(String, u32, String)> {
    let guid = e
        .partition_guid
        .as_deref()
        .unwrap_or_default()
        .to_lowercase();
    let found = tables.iter().find_map(|(disk, t)| match t {
        PartitionTable::Gpt(g) => g
            .partitions
            .iter()
            .find(|p| p.unique_guid.to_lowercase() == guid)
            .map(|p| (disk.clone(), p.number)),
        PartitionTable::Mbr(_) => None,
    });
    match found {
        Some((disk, number)) => Ok((disk, number, guid)),
        None => bail!(
            "boot entry {:?}: no recreated partition has GUID {guid}",
            e.label
        ),
    }
}

/// The firmware's entry for `e`: found when one with its label, partition
/// and loader exists, else created. Returns its number (hex) and a note.
fn ensure_entry(
    e: &EfiBootEntry,
    tables: &[(String, PartitionTable)],
    gate: &Gate,
) -> Result<(String, String)> {
    let (disk, number, guid) = entry_partition(e, tables)?;
    let loader = e
        .loader
        .clone()
        .context("boot entry without a loader path")?;
    let (existing, _) = parse_efibootmgr(&Cmd::new("efibootmgr").read()?);
    let same = existing.iter().find(|x| {
        x.label == e.label
            && x.partition_guid.as_deref() == Some(guid.as_str())
            && x.loader
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(&loader))
    });
    if let Some(x) = same {
        let note = format!("EFI entry Boot{} {:?} already present", x.number, e.label);
        return Ok((x.number.clone(), note));
    }
    let out = Cmd::new("efibootmgr")
        .args(["--create", "--disk", &disk, "--part", &number.to_string()])
        .args(["--label", &e.label, "--loader", &loader])
        .mutating(gate)
        .read()
        .with_context(|| format!("creating EFI boot entry {:?}", e.label))?;
    let (after, _) = parse_efibootmgr(&out);
    let created = after
        .iter()
        .rev()
        .find(|x| x.label == e.label && !existing.iter().any(|o| o.number == x.number))
        .context("efibootmgr did not list the new entry")?;
    let note = format!(
        "EFI entry Boot{} {:?} created for {loader} on {disk} partition {number}",
        created.number, e.label
    );
    Ok((created.number.clone(), note))
}

/// Installs GRUB x86_64-efi into the ESP mounted at /boot/efi (a system
/// converted to UEFI), under the loader path of the plan's EFI entry, and
/// again as the removable fallback loader. The NVRAM entry is written with
/// the other entries.
pub fn grub_efi(chroot: &Chroot, entries: &[EfiBootEntry]) -> Result<Vec<String>> {
    let tool = chroot
        .has("grub-install")
        .or_else(|| chroot.has("grub2-install"))
        .context("the restored system has no grub-install: it cannot boot under UEFI")?;
    let id = entries
        .iter()
        .find_map(|e| e.loader.as_deref())
        .and_then(|l| l.trim_start_matches('\\').split('\\').nth(1))
        .unwrap_or("debian")
        .to_string();
    let base = [
        "--target=x86_64-efi",
        "--efi-directory=/boot/efi",
        "--no-nvram",
    ];
    let mut args: Vec<&str> = base.to_vec();
    let id_arg = format!("--bootloader-id={id}");
    args.push(&id_arg);
    chroot
        .run(&tool, &args)
        .context("installing GRUB (x86_64-efi) into /boot/efi")?;
    let mut removable = base.to_vec();
    removable.push("--removable");
    chroot
        .run(&tool, &removable)
        .context("installing GRUB (x86_64-efi) as the fallback loader EFI/BOOT/BOOTX64.EFI")?;
    Ok(vec![format!(
        "GRUB x86_64-efi installed as EFI/{id}/grubx64.efi and EFI/BOOT/BOOTX64.EFI"
    )])
}

/// The firmware conversion in the restored system: GRUB's modules for the
/// new platform must be there (else the error names the package), and the
/// new ESP goes into fstab.
pub fn migrate(
    root: &Path,
    to: crate::layout::Firmware,
    fstab: Option<&str>,
    grub_dir: &str,
    package: &str,
    gate: &Gate,
) -> Result<Vec<String>> {
    if !gate.is_dry_run() && !root.join(grub_dir).is_dir() {
        bail!(
            "the restored system has no /{grub_dir}: install the package {package} in it (or on \
             the source, then back up again) to boot it under {to:?}, or recover with --firmware same"
        );
    }
    let mut notes = Vec::new();
    if let Some(line) = fstab {
        let path = root.join("etc/fstab");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let has_esp = text.lines().any(|l| {
            let mut f = l.split_whitespace();
            !l.trim_start().starts_with('#') && f.nth(1) == Some("/boot/efi")
        });
        if !has_esp {
            let mut new = text.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(line);
            new.push('\n');
            gate.write_file(&path, new.as_bytes(), 0o644)
                .with_context(|| format!("adding the new ESP to {}", path.display()))?;
            notes.push(format!("/etc/fstab: added {line}"));
        }
    }
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efibootmgr_listing() {
        let text = "BootCurrent: 0001\nTimeout: 0 seconds\nBootOrder: 0003,0001,0000\n\
Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)\n\
Boot0001* UEFI QEMU HARDDISK QM00001 \tPciRoot(0x0)/Pci(0x1,0x1)/Ata(0,0,0){auto_created_boot_option}\n\
Boot0003* debian\tHD(2,GPT,4C3A1E2B-0000-4000-8000-000000000002,0x1000,0x64000)/File(\\EFI\\debian\\shimx64.efi)\n";
        let (e, order) = parse_efibootmgr(text);
        assert_eq!(order, ["0003", "0001", "0000"]);
        assert_eq!(e.len(), 3);
        assert_eq!(e[2].label, "debian");
        assert_eq!(
            e[2].partition_guid.as_deref(),
            Some("4c3a1e2b-0000-4000-8000-000000000002")
        );
        assert_eq!(e[2].loader.as_deref(), Some("\\EFI\\debian\\shimx64.efi"));
        // older efibootmgr without -v: no tab
        let (e, _) =
            parse_efibootmgr("Boot0004* lifeboat HD(1,GPT,AA,0x800,0x100)/File(\\EFI\\x.efi)\n");
        assert_eq!(e[0].label, "lifeboat");
        assert_eq!(e[0].loader.as_deref(), Some("\\EFI\\x.efi"));
    }

    #[test]
    fn fallback_loader_is_copied_with_shim_companions() {
        let esp = tempfile::tempdir().unwrap();
        let deb = esp.path().join("EFI/debian");
        std::fs::create_dir_all(&deb).unwrap();
        std::fs::write(deb.join("shimx64.efi"), b"shim").unwrap();
        std::fs::write(deb.join("grubx64.efi"), b"grub").unwrap();
        let entry = EfiBootEntry {
            number: "0003".into(),
            label: "debian".into(),
            active: true,
            partition_guid: None,
            loader: Some("\\EFI\\debian\\shimx64.efi".into()),
            device_path: String::new(),
        };
        let msg = ensure_fallback(esp.path(), std::slice::from_ref(&entry), &Gate::live())
            .unwrap()
            .unwrap();
        assert!(msg.contains("EFI/debian/shimx64.efi"), "{msg}");
        assert_eq!(
            std::fs::read(esp.path().join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            b"shim"
        );
        assert_eq!(
            std::fs::read(esp.path().join("EFI/BOOT/grubx64.efi")).unwrap(),
            b"grub"
        );
        assert_eq!(
            ensure_fallback(esp.path(), &[entry], &Gate::live()).unwrap(),
            None,
            "present: nothing to do"
        );
    }

    #[test]
    fn migration_adds_the_esp_to_fstab_once_and_names_a_missing_package() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/fstab"), "UUID=r / ext4 defaults 0 1").unwrap();
        let line = "UUID=ABCD-1234 /boot/efi vfat umask=0077 0 1";
        let run = || {
            let uefi = crate::layout::Firmware::Uefi;
            migrate(
                root,
                uefi,
                Some(line),
                "usr/lib/grub/x86_64-efi",
                "grub-efi-amd64-bin",
                &Gate::live(),
            )
        };
        let fstab = || std::fs::read_to_string(root.join("etc/fstab")).unwrap();
        let err = run().unwrap_err().to_string();
        assert!(
            err.contains("no /usr/lib/grub/x86_64-efi: install the package grub-efi-amd64-bin"),
            "{err}"
        );
        assert_eq!(fstab(), "UUID=r / ext4 defaults 0 1");
        std::fs::create_dir_all(root.join("usr/lib/grub/x86_64-efi")).unwrap();
        assert_eq!(run().unwrap(), [format!("/etc/fstab: added {line}")]);
        let want = format!("UUID=r / ext4 defaults 0 1\n{line}\n");
        assert_eq!(fstab(), want);
        // A second run (a resumed recovery) adds nothing.
        assert!(run().unwrap().is_empty());
        assert_eq!(fstab(), want);
    }
}
