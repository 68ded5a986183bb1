//! Secure Boot for the rescue ISO: when the host has Debian's signed shim
//! and signed GRUB, the ISO's UEFI path is shim -> signed GRUB -> the
//! host's kernel, which boots with Secure Boot on when that kernel is
//! signed too. Whether it is, and why not, goes into `rescue.json`.
//!
//! "Signed" means the PE file carries an Authenticode signature (a
//! `WIN_CERTIFICATE` of type PKCS#7 in its certificate table); whether the
//! firmware trusts the signer is for the firmware (and shim) to decide.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Where Debian's packages put the signed loaders, relative to the root
/// they are looked up in (`/`, or `mkrescue --secure-boot-root`).
pub const SHIM: &str = "usr/lib/shim/shimx64.efi.signed";
/// shim's MokManager, which shim starts when a key enrolment is pending.
pub const MOK_MANAGER: &str = "usr/lib/shim/mmx64.efi.signed";
/// Debian's signed GRUB for CDs: it finds the disc by `/.disk/info` and
/// reads `/boot/grub/grub.cfg` there (the ESP variant, grubx64.efi,
/// reads `/EFI/debian/grub.cfg` from the partition it was loaded from,
/// which an El Torito image is not to GRUB).
pub const GRUB_CD: &str = "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed";
/// The file the signed CD GRUB searches for to find the disc.
pub const DISC_MARKER: &str = ".disk/info";
/// Debian's signed GRUB for a disk's ESP (`mkrescue --usb`): its prefix is
/// `/EFI/debian` on the partition it was loaded from, where it reads
/// `grub.cfg` ([`ESP_GRUB_CFG`]).
pub const GRUB_ESP: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
/// Where the ESP GRUB reads its menu, on the ESP.
pub const ESP_GRUB_CFG: &str = "EFI/debian/grub.cfg";
/// Debian's signed GRUB for network boot (`mkrescue --pxe`): it reads
/// `grub/grub.cfg` ([`NET_GRUB_CFG`]) from the TFTP or HTTP server it came
/// from.
pub const GRUB_NET: &str = "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";
/// Where the network GRUB reads its menu, relative to the server's root.
pub const NET_GRUB_CFG: &str = "grub/grub.cfg";

/// The signed loaders found for the ISO.
#[derive(Debug, Clone)]
pub struct SignedLoaders {
    pub shim: PathBuf,
    pub grub: PathBuf,
    pub mok_manager: Option<PathBuf>,
    /// The ESP and network GRUBs (the same package as `grub`; `None` in
    /// an unpacked tree that lacks them).
    pub grub_esp: Option<PathBuf>,
    pub grub_net: Option<PathBuf>,
}

/// Why an image is not Secure Boot capable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "path")]
pub enum NotCapable {
    /// No shimx64.efi.signed (package shim-signed).
    NoShim(String),
    /// No gcdx64.efi.signed (package grub-efi-amd64-signed).
    NoSignedGrub(String),
    /// shim or GRUB found but without a signature.
    UnsignedLoader(String),
    /// The kernel has no Authenticode signature.
    UnsignedKernel(String),
}

impl std::fmt::Display for NotCapable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotCapable::NoShim(p) => {
                write!(
                    f,
                    "no shim installed ({p} is missing; install package shim-signed)"
                )
            }
            NotCapable::NoSignedGrub(p) => write!(
                f,
                "no signed GRUB installed ({p} is missing; install package grub-efi-amd64-signed)"
            ),
            NotCapable::UnsignedLoader(p) => write!(f, "the loader {p} is not signed"),
            NotCapable::UnsignedKernel(p) => write!(f, "the kernel {p} is not signed"),
        }
    }
}

/// What `rescue.json` says about Secure Boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureBootRecord {
    /// The ISO boots with Secure Boot on (shim, GRUB and kernel signed).
    pub capable: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_capable: Option<NotCapable>,
    /// The ISO's UEFI loader: "shim" (shim -> signed GRUB) or "grub"
    /// (an unsigned GRUB built by grub-mkstandalone).
    pub uefi_loader: String,
    /// Modules in the image without a signature (a kernel in lockdown
    /// refuses them).
    #[serde(default)]
    pub unsigned_modules: Vec<String>,
}

impl SecureBootRecord {
    /// The summary line of `mkrescue`.
    pub fn summary(&self) -> String {
        match &self.not_capable {
            None => "Secure Boot: capable (shim -> signed GRUB -> signed kernel)".into(),
            Some(why) => format!("Secure Boot: not capable: {why}"),
        }
    }
}

/// The signed loaders under `root`, or why there are none.
pub fn find_loaders(root: &Path) -> Result<SignedLoaders, NotCapable> {
    let shim = root.join(SHIM);
    let grub = root.join(GRUB_CD);
    if !shim.is_file() {
        return Err(NotCapable::NoShim(shim.display().to_string()));
    }
    if !grub.is_file() {
        return Err(NotCapable::NoSignedGrub(grub.display().to_string()));
    }
    for p in [&shim, &grub] {
        if !pe_signed(p).unwrap_or(false) {
            return Err(NotCapable::UnsignedLoader(p.display().to_string()));
        }
    }
    let found = |rel: &str| Some(root.join(rel)).filter(|p| p.is_file());
    Ok(SignedLoaders {
        shim,
        grub,
        mok_manager: found(MOK_MANAGER),
        grub_esp: found(GRUB_ESP),
        grub_net: found(GRUB_NET),
    })
}

/// The decision: the loaders (when found) go on the ISO whatever the
/// kernel, since shim and GRUB boot an unsigned kernel with Secure Boot
/// off just as well; the image is capable only with a signed kernel too.
pub fn decide(
    loaders: &Result<SignedLoaders, NotCapable>,
    kernel: &Path,
    kernel_signed: bool,
    unsigned_modules: Vec<String>,
) -> SecureBootRecord {
    let not_capable = match loaders {
        Err(why) => Some(why.clone()),
        Ok(_) if !kernel_signed => Some(NotCapable::UnsignedKernel(kernel.display().to_string())),
        Ok(_) => None,
    };
    SecureBootRecord {
        capable: not_capable.is_none(),
        not_capable,
        uefi_loader: if loaders.is_ok() { "shim" } else { "grub" }.into(),
        unsigned_modules,
    }
}

/// Puts what the signed CD GRUB reads onto the ISO tree at `iso_root`
/// (the disc marker and `/boot/grub/grub.cfg` = `grub_cfg`) and returns
/// the files of the EFI boot image's /EFI/BOOT ([`boot_files`]).
pub fn signed_efi_files(
    loaders: &SignedLoaders,
    iso_root: &Path,
    grub_cfg: &str,
) -> Result<Vec<(PathBuf, &'static str)>> {
    let write = |rel: &str, text: &str| -> Result<()> {
        let p = iso_root.join(rel);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    write(DISC_MARKER, "lifeboat rescue image\n")?;
    write("boot/grub/grub.cfg", grub_cfg)?;
    Ok(boot_files(loaders, &loaders.grub, "BOOTX64.EFI"))
}

/// The Secure Boot loaders of one boot folder: shim as `shim_name` (UEFI's
/// removable-media path BOOTX64.EFI on a medium, shimx64.efi on a PXE
/// server), `grub` beside it as grubx64.efi (the name shim starts), and
/// MokManager as mmx64.efi when installed: shim starts it when a key
/// enrolment is pending and stops ("Failed to start MokManager") when it
/// is missing, so a machine with a pending `mokutil --import` could not
/// boot the rescue without it.
pub fn boot_files(
    loaders: &SignedLoaders,
    grub: &Path,
    shim_name: &'static str,
) -> Vec<(PathBuf, &'static str)> {
    let mut files = vec![
        (loaders.shim.clone(), shim_name),
        (grub.to_path_buf(), "grubx64.efi"),
    ];
    if let Some(mm) = &loaders.mok_manager {
        files.push((mm.clone(), "mmx64.efi"));
    }
    files
}

/// The loaders found, with the GRUB variant `media` needs (`rel`: one of
/// [`GRUB_ESP`], [`GRUB_NET`]); why not when the image cannot boot with
/// Secure Boot there.
pub fn for_medium(
    loaders: &Result<SignedLoaders, NotCapable>,
    rel: &str,
) -> Result<(SignedLoaders, PathBuf), NotCapable> {
    let l = loaders.as_ref().map_err(Clone::clone)?;
    let grub = if rel == GRUB_NET {
        l.grub_net.clone()
    } else {
        l.grub_esp.clone()
    };
    match grub {
        Some(g) if pe_signed(&g).unwrap_or(false) => Ok((l.clone(), g)),
        Some(g) => Err(NotCapable::UnsignedLoader(g.display().to_string())),
        None => {
            let dir = l.grub.parent().unwrap_or(Path::new("/"));
            let name = Path::new(rel).file_name().unwrap_or_default();
            Err(NotCapable::NoSignedGrub(
                dir.join(name).display().to_string(),
            ))
        }
    }
}

/// Whether the PE image at `path` carries an Authenticode signature.
/// Fails on a file that is not a PE image.
pub fn pe_signed(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    pe_signature(&data).with_context(|| format!("{} is not a PE (EFI) image", path.display()))
}

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

/// The certificate table (data directory 4) of a PE image; `Ok(true)` when
/// it holds a PKCS#7 `WIN_CERTIFICATE` (revision 2.0, type 2).
pub fn pe_signature(d: &[u8]) -> Result<bool> {
    anyhow::ensure!(d.get(..2) == Some(b"MZ"), "no MZ header");
    let pe = u32_at(d, 0x3c).context("truncated DOS header")? as usize;
    anyhow::ensure!(d.get(pe..pe + 4) == Some(b"PE\0\0"), "no PE signature");
    let opt = pe + 24;
    // PE32 and PE32+ differ in where the data directories start.
    let (count_at, dirs_at) = match u16_at(d, opt).context("truncated PE header")? {
        0x10b => (opt + 92, opt + 96),
        0x20b => (opt + 108, opt + 112),
        m => anyhow::bail!("unknown optional header magic {m:#x}"),
    };
    let count = u32_at(d, count_at).context("truncated optional header")?;
    if count < 5 {
        return Ok(false);
    }
    let entry = dirs_at + 4 * 8;
    let (Some(offset), Some(size)) = (u32_at(d, entry), u32_at(d, entry + 4)) else {
        anyhow::bail!("truncated data directories");
    };
    let (offset, size) = (offset as usize, size as usize);
    if size < 8 || offset.checked_add(size).map_or(true, |end| end > d.len()) {
        return Ok(false);
    }
    // WIN_CERTIFICATE entries, each 8-byte aligned.
    let mut at = offset;
    while at + 8 <= offset + size {
        let len = u32_at(d, at).unwrap_or(0) as usize;
        let (revision, kind) = (u16_at(d, at + 4), u16_at(d, at + 6));
        if revision == Some(0x0200) && kind == Some(0x0002) && len > 8 {
            return Ok(true);
        }
        if len < 8 {
            break;
        }
        at += len.div_ceil(8) * 8;
    }
    Ok(false)
}

/// The mark the kernel's module signing appends to a signed module.
const MODULE_SIG_MAGIC: &[u8] = b"~Module signature appended~\n";

/// The uncompressed modules under `dir` (paths relative to it) that lack
/// a signature. Compressed modules carry their signature inside the
/// compressed file and are not checked here.
pub fn unsigned_modules(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = e
                .with_context(|| format!("reading {}", d.display()))?
                .path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|x| x == "ko") {
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                if !data.ends_with(MODULE_SIG_MAGIC) {
                    let rel = path.strip_prefix(dir).unwrap_or(&path);
                    out.push(rel.display().to_string());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The SHA-256 of the signed loaders, for the image's inputs (a shim or
/// GRUB update rebuilds the image).
pub fn loaders_sha256(loaders: &SignedLoaders) -> Result<String> {
    let mut all = String::new();
    for p in [
        Some(&loaders.shim),
        Some(&loaders.grub),
        loaders.mok_manager.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        all.push_str(&crate::util::sha256_file(p)?);
    }
    Ok(crate::backup::sha256_hex(all.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ image with a certificate table of `certs`.
    fn pe(certs: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; 0x200];
        d[..2].copy_from_slice(b"MZ");
        d[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        d[0x80..0x84].copy_from_slice(b"PE\0\0");
        let opt = 0x80 + 24;
        d[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        d[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        if !certs.is_empty() {
            let entry = opt + 112 + 32;
            d[entry..entry + 4].copy_from_slice(&(0x200u32).to_le_bytes());
            d[entry + 4..entry + 8].copy_from_slice(&(certs.len() as u32).to_le_bytes());
            d.extend_from_slice(certs);
        }
        d
    }

    fn cert(revision: u16, kind: u16) -> Vec<u8> {
        let mut c = Vec::new();
        c.extend_from_slice(&16u32.to_le_bytes());
        c.extend_from_slice(&revision.to_le_bytes());
        c.extend_from_slice(&kind.to_le_bytes());
        c.extend_from_slice(&[0x30, 0x82, 0, 0, 0, 0, 0, 0]);
        c
    }

    #[test]
    fn a_pkcs7_certificate_makes_a_pe_signed() {
        assert!(!pe_signature(&pe(&[])).unwrap());
        assert!(pe_signature(&pe(&cert(0x0200, 2))).unwrap());
        // An X.509 (type 1) entry is no Authenticode signature.
        assert!(!pe_signature(&pe(&cert(0x0200, 1))).unwrap());
        // A table pointing past the end of the file is no signature.
        let mut bad = pe(&cert(0x0200, 2));
        bad.truncate(0x204);
        assert!(!pe_signature(&bad).unwrap());
        assert!(pe_signature(b"\x7fELF....").is_err());
    }

    #[test]
    fn the_hosts_kernel_is_read_as_signed_when_it_is() {
        // Debian's kernels are signed; the check must see it (and must not
        // once the signature is cut off).
        let Some(k) = std::fs::read_dir("/boot")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("vmlinuz-"))
        else {
            return;
        };
        let Ok(data) = std::fs::read(&k) else { return };
        if !pe_signature(&data).unwrap_or(false) {
            return; // an unsigned host kernel: nothing to compare
        }
        let mut stripped = data.clone();
        let pe = u32::from_le_bytes(stripped[0x3c..0x40].try_into().unwrap()) as usize;
        let entry = pe + 24 + 112 + 32;
        stripped[entry..entry + 8].fill(0);
        assert!(!pe_signature(&stripped).unwrap());
    }

    #[test]
    fn capable_needs_shim_grub_and_a_signed_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let k = Path::new("/boot/vmlinuz-x");
        let none = find_loaders(dir.path());
        assert!(matches!(none, Err(NotCapable::NoShim(_))));
        let r = decide(&none, k, true, vec![]);
        assert!(!r.capable);
        assert_eq!(r.uefi_loader, "grub");
        assert!(r.summary().contains("no shim installed"), "{}", r.summary());

        let put = |rel: &str, data: &[u8]| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        put(SHIM, &pe(&cert(0x0200, 2)));
        assert!(matches!(
            find_loaders(dir.path()),
            Err(NotCapable::NoSignedGrub(_))
        ));
        put(GRUB_CD, &pe(&[]));
        assert!(matches!(
            find_loaders(dir.path()),
            Err(NotCapable::UnsignedLoader(p)) if p.ends_with("gcdx64.efi.signed")
        ));
        put(GRUB_CD, &pe(&cert(0x0200, 2)));
        let found = find_loaders(dir.path());
        assert!(found.as_ref().is_ok_and(|l| l.mok_manager.is_none()));

        let unsigned = decide(&found, k, false, vec![]);
        assert!(!unsigned.capable);
        assert_eq!(unsigned.uefi_loader, "shim");
        assert_eq!(
            unsigned.summary(),
            "Secure Boot: not capable: the kernel /boot/vmlinuz-x is not signed"
        );
        let ok = decide(&found, k, true, vec![]);
        assert!(ok.capable && ok.not_capable.is_none());
        let json = serde_json::to_string(&unsigned).unwrap();
        assert!(json.contains(r#""reason":"unsigned_kernel""#), "{json}");
    }

    #[test]
    fn modules_without_the_signature_mark_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.ko"),
            [b"ELF..".as_ref(), MODULE_SIG_MAGIC].concat(),
        )
        .unwrap();
        std::fs::write(dir.path().join("b.ko"), b"ELF..").unwrap();
        std::fs::write(dir.path().join("c.ko.xz"), b"xz").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/d.ko"), b"ELF..").unwrap();
        assert_eq!(
            unsigned_modules(dir.path()).unwrap(),
            vec!["b.ko", "sub/d.ko"]
        );
    }
}
