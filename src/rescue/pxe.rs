//! `mkrescue --pxe DIR`: a tree for a TFTP or HTTP server that network-boots
//! the rescue system.
//!
//! ```text
//! DIR/vmlinuz, DIR/initrd            the rescue system
//! DIR/boot/grub/i386-pc/core.0       GRUB for BIOS PXE (grub-mknetdir)
//! DIR/boot/grub/x86_64-efi/core.efi  GRUB for UEFI PXE and HTTP boot
//! DIR/boot/grub/grub.cfg             their menu: kernel arguments
//! DIR/boot.ipxe                      the same for iPXE (chainloaded or HTTP)
//! ```
//!
//! With Debian's signed loaders (Secure Boot), also:
//!
//! ```text
//! DIR/shimx64.efi                    the bootfile under Secure Boot (shim)
//! DIR/grubx64.efi                    signed network GRUB (grubnetx64.efi.signed),
//!                                    fetched by shim from beside itself
//! DIR/mmx64.efi                      MokManager (when installed)
//! DIR/grub/grub.cfg                  the menu that GRUB reads
//! ```
//!
//! GRUB's netboot images look for `boot/grub/grub.cfg` on the server they
//! came from, and the paths in it are relative to the server's root, so the
//! tree works from any TFTP root or HTTP document root as it is.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exec::Cmd;

/// Tools `--pxe` runs.
pub const TOOLS: &[&str] = &["grub-mknetdir"];

/// The GRUB platforms of the tree: (platform, its netboot image).
pub const PLATFORMS: &[(&str, &str)] = &[
    ("i386-pc", "boot/grub/i386-pc/core.0"),
    ("x86_64-efi", "boot/grub/x86_64-efi/core.efi"),
];
/// The bootfile to serve to UEFI clients with Secure Boot on.
pub const SHIM_BOOTFILE: &str = "shimx64.efi";
/// The iPXE script.
pub const IPXE_SCRIPT: &str = "boot.ipxe";
/// Where GRUB's platform folders are installed.
const GRUB_LIB: &str = "/usr/lib/grub";

/// Writes the tree into `dir` (created when missing): the kernel and
/// initrd are copied from the build's output. Returns the files written
/// (relative to `dir`) that a server admin points clients at.
/// `signed`: shim and the signed network GRUB
/// ([`super::secureboot::for_medium`]), for Secure Boot.
pub fn write_tree(
    dir: &Path,
    vmlinuz: &Path,
    initrd: &Path,
    cmdline: &str,
    signed: Option<&(super::secureboot::SignedLoaders, PathBuf)>,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    copy_in(vmlinuz, &dir.join(super::VMLINUZ))?;
    copy_in(initrd, &dir.join(super::INITRD))?;
    for (platform, _) in PLATFORMS {
        let lib = Path::new(GRUB_LIB).join(platform);
        if !lib.join("modinfo.sh").is_file() {
            anyhow::bail!(
                "GRUB for {platform} is not installed ({} is missing); install package {}",
                lib.display(),
                if *platform == "i386-pc" {
                    "grub-pc-bin"
                } else {
                    "grub-efi-amd64-bin"
                }
            );
        }
        Cmd::new("grub-mknetdir")
            .arg(format!("--net-directory={}", dir.display()))
            .args(["--subdir=boot/grub", "--locales=", "--fonts=", "--themes="])
            .arg("-d")
            .arg(&lib)
            .run()
            .with_context(|| format!("building GRUB's {platform} netboot image"))?;
    }
    let grub_cfg = dir.join("boot/grub/grub.cfg");
    let text = super::iso::grub_cfg_net(cmdline, "/vmlinuz", "/initrd");
    std::fs::write(&grub_cfg, &text).with_context(|| format!("writing {}", grub_cfg.display()))?;
    let ipxe = dir.join(IPXE_SCRIPT);
    std::fs::write(&ipxe, ipxe_script(cmdline))
        .with_context(|| format!("writing {}", ipxe.display()))?;
    let mut files: Vec<String> = PLATFORMS.iter().map(|(_, f)| f.to_string()).collect();
    if let Some((loaders, grub)) = signed {
        files.extend(write_signed(dir, loaders, grub, &text)?);
    }
    files.extend([
        "boot/grub/grub.cfg".to_string(),
        IPXE_SCRIPT.to_string(),
        super::VMLINUZ.to_string(),
        super::INITRD.to_string(),
    ]);
    Ok(files)
}

/// The Secure Boot files at the tree's root, and the menu where the
/// signed network GRUB reads it.
fn write_signed(
    dir: &Path,
    loaders: &super::secureboot::SignedLoaders,
    grub: &Path,
    menu: &str,
) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for (from, name) in super::secureboot::boot_files(loaders, grub, SHIM_BOOTFILE) {
        copy_in(&from, &dir.join(name))?;
        files.push(name.to_string());
    }
    let cfg = dir.join(super::secureboot::NET_GRUB_CFG);
    if let Some(parent) = cfg.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&cfg, menu).with_context(|| format!("writing {}", cfg.display()))?;
    files.push(super::secureboot::NET_GRUB_CFG.to_string());
    Ok(files)
}

fn copy_in(from: &Path, to: &Path) -> Result<PathBuf> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(to.to_path_buf())
}

/// iPXE fetches the kernel and initrd relative to the script's own URL
/// (TFTP or HTTP). The initrd is named so that the kernel finds it whatever
/// iPXE calls it.
fn ipxe_script(cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         echo lifeboat rescue: loading the kernel and initrd\n\
         kernel {vmlinuz} initrd={initrd} {cmdline}\n\
         initrd {initrd}\n\
         boot\n",
        vmlinuz = super::VMLINUZ,
        initrd = super::INITRD,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipxe_script_passes_the_arguments_and_relative_paths() {
        let s = ipxe_script("console=ttyS0,115200n8 lifeboat.net=dhcp");
        assert!(s.starts_with("#!ipxe\n"));
        assert!(
            s.contains("\nkernel vmlinuz initrd=initrd console=ttyS0,115200n8 lifeboat.net=dhcp\n")
        );
        assert!(s.contains("\ninitrd initrd\nboot\n"));
    }

    /// Under Secure Boot the client is served shim, which fetches
    /// grubx64.efi (the signed network GRUB) from beside itself; that GRUB
    /// reads grub/grub.cfg from the server's root.
    #[test]
    fn signed_tree_has_shim_the_network_grub_and_its_menu() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, data: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        let (k, i) = (put("k", b"kernel"), put("i", b"initrd"));
        let loaders = crate::rescue::secureboot::SignedLoaders {
            shim: put("shim", b"shim"),
            grub: put("gcd", b"cd grub"),
            mok_manager: Some(put("mm", b"mokmanager")),
            grub_esp: None,
            grub_net: Some(put("net", b"net grub")),
        };
        let signed = (loaders.clone(), loaders.grub_net.clone().unwrap());
        let tree = dir.path().join("tree");
        let files = write_tree(&tree, &k, &i, "console=ttyS0", Some(&signed)).unwrap();
        for (name, want) in [
            (SHIM_BOOTFILE, &b"shim"[..]),
            ("grubx64.efi", b"net grub"),
            ("mmx64.efi", b"mokmanager"),
        ] {
            assert_eq!(std::fs::read(tree.join(name)).unwrap(), want, "{name}");
            assert!(files.iter().any(|f| f == name), "{name} not listed");
        }
        let net = std::fs::read_to_string(tree.join("grub/grub.cfg")).unwrap();
        let plain = std::fs::read_to_string(tree.join("boot/grub/grub.cfg")).unwrap();
        assert_eq!(net, plain, "one menu for both GRUBs");
        assert!(net.contains("linux /vmlinuz console=ttyS0\n"), "{net}");
    }

    #[test]
    fn tree_has_both_grub_images_and_menus_with_the_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let (k, i) = (dir.path().join("k"), dir.path().join("i"));
        std::fs::write(&k, b"kernel").unwrap();
        std::fs::write(&i, b"initrd").unwrap();
        let tree = dir.path().join("tree");
        let files = write_tree(&tree, &k, &i, "console=ttyS0 lifeboat.net=dhcp", None).unwrap();
        for f in &files {
            assert!(tree.join(f).is_file(), "{f} missing");
        }
        assert_eq!(std::fs::read(tree.join("vmlinuz")).unwrap(), b"kernel");
        assert!(tree.join("boot/grub/i386-pc/linux.mod").is_file());
        assert!(tree.join("boot/grub/x86_64-efi/linux.mod").is_file());
        let cfg = std::fs::read_to_string(tree.join("boot/grub/grub.cfg")).unwrap();
        assert!(
            cfg.contains("linux /vmlinuz console=ttyS0 lifeboat.net=dhcp\n  initrd /initrd\n"),
            "{cfg}"
        );
        assert!(!cfg.contains("search"), "the server is GRUB's root: {cfg}");
    }
}
