//! The hybrid ISO: ISOLINUX for BIOS (as CD and, through the isohybrid MBR,
//! as disk) and a standalone GRUB EFI binary in a FAT El Torito image that
//! the GPT also lists as an EFI system partition (UEFI as CD and as disk).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exec::Cmd;

/// Files from the host's bootloader packages that the ISO needs.
pub struct IsoInputs {
    pub isolinux_bin: PathBuf,
    pub ldlinux_c32: PathBuf,
    pub isohybrid_mbr: PathBuf,
    /// Debian's signed shim and GRUB for the UEFI path (Secure Boot);
    /// `None`: an unsigned GRUB built by grub-mkstandalone.
    pub signed: Option<super::secureboot::SignedLoaders>,
}

/// Tools the ISO build runs.
pub const TOOLS: &[&str] = &["xorriso", "grub-mkstandalone", "mkfs.vfat", "mmd", "mcopy"];

fn first_existing(candidates: &[&str], what: &str, package: &str) -> Result<PathBuf> {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{what} not found (looked for {}); install package {package}",
                candidates.join(", ")
            )
        })
}

impl IsoInputs {
    pub fn find() -> Result<IsoInputs> {
        Ok(IsoInputs {
            isolinux_bin: first_existing(
                &[
                    "/usr/lib/ISOLINUX/isolinux.bin",
                    "/usr/lib/syslinux/isolinux.bin",
                    "/usr/share/syslinux/isolinux.bin",
                ],
                "isolinux.bin",
                "isolinux",
            )?,
            ldlinux_c32: first_existing(
                &[
                    "/usr/lib/syslinux/modules/bios/ldlinux.c32",
                    "/usr/share/syslinux/ldlinux.c32",
                    "/usr/lib/syslinux/ldlinux.c32",
                ],
                "ldlinux.c32",
                "syslinux-common",
            )?,
            isohybrid_mbr: first_existing(
                &[
                    "/usr/lib/ISOLINUX/isohdpfx.bin",
                    "/usr/lib/syslinux/isohdpfx.bin",
                    "/usr/share/syslinux/isohdpfx.bin",
                ],
                "isohdpfx.bin (the isohybrid MBR)",
                "isolinux",
            )?,
            signed: None,
        })
    }
}

/// What goes on the ISO's boot menus.
pub struct BootMenu {
    /// Host folders grafted into the ISO (host path, path in the ISO), such
    /// as the generations of an included backup.
    pub grafts: Vec<(PathBuf, String)>,
    /// Kernel arguments of every entry.
    pub cmdline: String,
    /// Volume ID and the marker file GRUB searches for.
    pub marker: String,
}

/// Builds the ISO at `out` (a temporary path chosen by the caller) from the
/// kernel and initrd, using `work` as scratch space.
pub fn build_iso(
    inputs: &IsoInputs,
    menu: &BootMenu,
    vmlinuz: &Path,
    initrd: &Path,
    work: &Path,
    out: &Path,
) -> Result<()> {
    let root = work.join("iso");
    let dirs = ["lifeboat", "isolinux", "boot/grub"];
    for d in dirs {
        std::fs::create_dir_all(root.join(d))
            .with_context(|| format!("creating {}", root.join(d).display()))?;
    }
    let copy = |from: &Path, to: &str| -> Result<()> {
        std::fs::copy(from, root.join(to))
            .map(drop)
            .with_context(|| format!("copying {} into the ISO tree", from.display()))
    };
    copy(vmlinuz, "lifeboat/vmlinuz")?;
    copy(initrd, "lifeboat/initrd")?;
    std::fs::write(
        root.join("lifeboat").join(&menu.marker),
        b"lifeboat rescue image\n",
    )?;
    copy(&inputs.isolinux_bin, "isolinux/isolinux.bin")?;
    copy(&inputs.ldlinux_c32, "isolinux/ldlinux.c32")?;
    std::fs::write(
        root.join("isolinux/isolinux.cfg"),
        isolinux_cfg(&menu.cmdline),
    )?;

    let grub_text = grub_cfg_text(&menu.cmdline, &menu.marker);
    let efi_files = match &inputs.signed {
        Some(loaders) => super::secureboot::signed_efi_files(loaders, &root, &grub_text)?,
        None => vec![(standalone_grub(&grub_text, work)?, "BOOTX64.EFI")],
    };
    efi_image(&efi_files, &root.join("boot/grub/efi.img"))?;

    Cmd::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-r", "-J", "-joliet-long"])
        .args(["-V", "LIFEBOAT_RESCUE"])
        .arg("-isohybrid-mbr")
        .arg(&inputs.isohybrid_mbr)
        .args(["-c", "isolinux/boot.cat", "-b", "isolinux/isolinux.bin"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table"])
        .args([
            "-eltorito-alt-boot",
            "-e",
            "boot/grub/efi.img",
            "-no-emul-boot",
        ])
        .arg("-isohybrid-gpt-basdat")
        // Level 3: archives of an included backup may pass 4 GiB.
        .args(["-iso-level", "3", "-graft-points"])
        .arg("-o")
        .arg(out)
        .arg(&root)
        .args(
            menu.grafts
                .iter()
                .map(|(host, dest)| format!("{}={}", dest.trim_start_matches('/'), host.display())),
        )
        .run()
        .context("writing the ISO image")?;
    if !out.is_file() {
        bail!("xorriso did not write {}", out.display());
    }
    Ok(())
}

/// GRUB for UEFI without Secure Boot, for the ESP of a `--usb` disk: it
/// finds its medium by the file `/lifeboat/MARKER`.
pub(super) fn grub_efi_loader(cmdline: &str, marker: &str, work: &Path) -> Result<PathBuf> {
    standalone_grub(&grub_cfg_text(cmdline, marker), work)
}

/// GRUB for UEFI without Secure Boot: one EFI binary with its
/// configuration built in.
fn standalone_grub(grub_text: &str, work: &Path) -> Result<PathBuf> {
    let grub_cfg = work.join("grub-embedded.cfg");
    std::fs::write(&grub_cfg, grub_text)
        .with_context(|| format!("writing {}", grub_cfg.display()))?;
    let efi_bin = work.join("BOOTX64.EFI");
    Cmd::new("grub-mkstandalone")
        .args(["-O", "x86_64-efi", "--locales=", "--fonts=", "--themes="])
        .arg("--modules=part_gpt part_msdos iso9660 fat search search_fs_file linux normal configfile serial terminal echo all_video test")
        .arg("-o")
        .arg(&efi_bin)
        .arg(format!("boot/grub/grub.cfg={}", grub_cfg.display()))
        .run()
        .context("building the GRUB EFI loader")?;
    Ok(efi_bin)
}

/// The FAT image that UEFI firmware boots from (El Torito and GPT), with
/// `files` (host path, name) in /EFI/BOOT.
fn efi_image(files: &[(PathBuf, &str)], efi_img: &Path) -> Result<()> {
    let mut bytes = 0;
    for (f, _) in files {
        bytes += std::fs::metadata(f)
            .with_context(|| format!("reading {}", f.display()))?
            .len();
    }
    // The files' clusters (at most 4 KiB for an image this small) and room
    // for the FAT's own structures: no free MiB on the ISO.
    let kib = bytes.div_ceil(1024) + 4 * files.len() as u64 + 128;
    Cmd::new("mkfs.vfat")
        .args(["-C", "-n", "LIFEBOATEFI", "-i", "1fe0b0a7"])
        .arg(efi_img)
        .arg(kib.to_string())
        .run()
        .context("creating the EFI boot image")?;
    let img = efi_img.to_string_lossy().into_owned();
    Cmd::new("mmd")
        .args(["-i", &img, "::/EFI", "::/EFI/BOOT"])
        .run()?;
    for (f, name) in files {
        Cmd::new("mcopy")
            .args(["-i", &img])
            .arg(f)
            .arg(format!("::/EFI/BOOT/{name}"))
            .run()
            .with_context(|| format!("copying {} into the EFI boot image", f.display()))?;
    }
    Ok(())
}

/// The ISOLINUX (and SYSLINUX) menu: the kernel and initrd in /lifeboat.
pub(super) fn isolinux_cfg(cmdline: &str) -> String {
    format!(
        "SERIAL 0 115200\n\
         DEFAULT rescue\n\
         PROMPT 1\n\
         TIMEOUT 30\n\
         SAY lifeboat rescue image: press Enter or wait to boot; type 'shell' for no jobs.\n\
         LABEL rescue\n  KERNEL /lifeboat/vmlinuz\n  INITRD /lifeboat/initrd\n  APPEND {cmdline}\n\
         LABEL shell\n  KERNEL /lifeboat/vmlinuz\n  INITRD /lifeboat/initrd\n  APPEND {plain}\n",
        plain = without_jobs(cmdline),
    )
}

pub(super) fn grub_cfg_text(cmdline: &str, marker: &str) -> String {
    format!(
        "{}search --no-floppy --file --set=root /lifeboat/{marker}\n{}",
        grub_head(),
        grub_entries(cmdline, "/lifeboat/vmlinuz", "/lifeboat/initrd")
    )
}

/// Serial and VGA console, a 3-second menu.
fn grub_head() -> &'static str {
    "serial --unit=0 --speed=115200\n\
     terminal_input console serial\n\
     terminal_output console serial\n\
     set timeout=3\n\
     set default=0\n"
}

/// The two menu entries (with and without unattended jobs) that boot
/// `vmlinuz` and `initrd` (paths as GRUB reads them).
pub(super) fn grub_entries(cmdline: &str, vmlinuz: &str, initrd: &str) -> String {
    format!(
        "menuentry 'lifeboat rescue' {{\n  linux {vmlinuz} {cmdline}\n  initrd {initrd}\n}}\n\
         menuentry 'lifeboat rescue (shell only, no unattended jobs)' {{\n  linux {vmlinuz} {plain}\n  initrd {initrd}\n}}\n",
        cmdline = grub_words(cmdline),
        plain = grub_words(&without_jobs(cmdline)),
    )
}

/// A whole grub.cfg without a search: GRUB's root is already where the
/// files are (a network boot: the TFTP or HTTP server).
/// Its video drivers load from the server (UEFI GOP: a VGA console too).
pub(super) fn grub_cfg_net(cmdline: &str, vmlinuz: &str, initrd: &str) -> String {
    format!(
        "insmod all_video\n{}{}",
        grub_head(),
        grub_entries(cmdline, vmlinuz, initrd)
    )
}

/// Splits a kernel command line into its arguments; double quotes group
/// (`lifeboat.autorun="lifeboat plan"` is one argument) and are kept.
fn kernel_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_whitespace() && !quoted {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The arguments as GRUB's `linux` command reads them. GRUB rebuilds the
/// kernel command line itself: an argument with a space gets double quotes
/// around the whole of it, and any `"`, `'` or `\` in it a backslash, which
/// the kernel does not read as an escape. So each kernel word loses its
/// grouping quotes here (`lifeboat.autorun="a b"` becomes `'lifeboat.autorun=a b'`
/// in grub.cfg and reaches the kernel as `"lifeboat.autorun=a b"`).
/// [`check_grub_args`] refuses, up front, the words GRUB cannot pass.
fn grub_words(cmdline: &str) -> String {
    kernel_words(cmdline)
        .iter()
        .map(|w| {
            let w = w.replace('"', "");
            let plain = w
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.,=:/+@%".contains(c));
            if plain {
                w
            } else {
                format!("'{w}'")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fails on a kernel argument that GRUB would hand on garbled: a single
/// quote or backslash (GRUB escapes them with a backslash, which the kernel
/// keeps), or an unbalanced double quote. Double quotes only group, for
/// GRUB's words as for lifeboat's command-line parser, so they may stand
/// anywhere.
pub fn check_grub_args(cmdline: &str) -> Result<()> {
    if cmdline.chars().filter(|&c| c == '"').count() % 2 == 1 {
        bail!("kernel command line {cmdline:?} has an unbalanced double quote");
    }
    for word in kernel_words(cmdline) {
        if word.contains(['\\', '\'']) {
            bail!(
                "kernel argument {word:?}: GRUB cannot pass quotes or backslashes inside an \
                 argument; put such a command in autorun.sh on a LIFEBOAT-AUTO job disk"
            );
        }
    }
    Ok(())
}

/// The command line without the arguments that start unattended jobs.
fn without_jobs(cmdline: &str) -> String {
    kernel_words(cmdline)
        .into_iter()
        .filter(|w| {
            !(w.starts_with("lifeboat.autorun")
                || w.starts_with("lifeboat.recover")
                || w == "lifeboat.poweroff"
                || w == "lifeboat.reboot")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn menus_boot_the_same_kernel_with_serial_and_vga() {
        let cmd = "console=tty0 console=ttyS0,115200n8 lifeboat.recover=auto lifeboat.poweroff";
        let iso = isolinux_cfg(cmd);
        assert!(iso.starts_with("SERIAL 0 115200\n"));
        assert!(iso.contains(&format!("APPEND {cmd}\n")));
        assert!(iso.contains("APPEND console=tty0 console=ttyS0,115200n8\n"));
        let grub = grub_cfg_text(cmd, "id-1234");
        assert!(grub.contains("search --no-floppy --file --set=root /lifeboat/id-1234"));
        assert!(grub.contains("terminal_output console serial"));
        assert!(grub.contains(&format!("linux /lifeboat/vmlinuz {cmd}\n")));
    }

    #[test]
    fn quoted_arguments_survive_both_loaders() {
        let cmd = r#"console=ttyS0 lifeboat.autorun="lifeboat backup verify --from /x" lifeboat.poweroff"#;
        assert!(isolinux_cfg(cmd).contains(&format!("APPEND {cmd}\n")));
        assert!(
            isolinux_cfg(cmd).contains("APPEND console=ttyS0\n"),
            "jobs left out of the shell entry"
        );
        let grub = grub_cfg_text(cmd, "m");
        assert!(
            grub.contains(
                "linux /lifeboat/vmlinuz console=ttyS0 'lifeboat.autorun=lifeboat backup verify --from /x' lifeboat.poweroff"
            ),
            "{grub}"
        );
        assert_eq!(grub_words(r#"a="x && $y""#), "'a=x && $y'");
        check_grub_args(cmd).unwrap();
        check_grub_args(r#""lifeboat.autorun=a b" x=1"#).unwrap();
        // Quotes only group: GRUB gets `a=xyz`, as lifeboat's parser reads it.
        check_grub_args(r#"a="x"y"z""#).unwrap();
        assert_eq!(grub_words(r#"a="x"y"z""#), "a=xyz");
        assert_eq!(
            crate::rescue::cmdline::value(r#"a="x"y"z""#, "a").as_deref(),
            Some("xyz")
        );
        for bad in [r#"a="it's""#, r#"a="say \"hi\"""#, r#"a="x"#, r#"a=b\c"#] {
            assert!(check_grub_args(bad).is_err(), "{bad}");
        }
    }
}
