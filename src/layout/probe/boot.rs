//! Boot setup: firmware, EFI boot entries read from efivarfs (the
//! EFI_LOAD_OPTION format; `efibootmgr -v` output as a fallback), GRUB
//! targets, shim and systemd-boot.

use std::path::Path;

use anyhow::{bail, Result};

use crate::layout::EfiBootEntry;

/// The GUID of the EFI global variables (Boot####, BootOrder...).
pub const EFI_GLOBAL_GUID: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The GPT type of an EFI system partition.
pub const ESP_TYPE_GUID: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// UTF-16LE up to the first NUL; returns the text and the bytes used
/// (terminator included).
fn utf16z(b: &[u8]) -> (String, usize) {
    let mut units = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        let u = u16le(b, i);
        i += 2;
        if u == 0 {
            break;
        }
        units.push(u);
    }
    (String::from_utf16_lossy(&units), i)
}

/// A device path in the notation efibootmgr prints, and the partition
/// GUID and loader path it names.
struct DevicePath {
    text: String,
    partition_guid: Option<String>,
    loader: Option<String>,
}

fn guid(b: &[u8]) -> String {
    super::ptable::guid_text(b)
}

fn parse_device_path(mut b: &[u8]) -> DevicePath {
    let mut nodes = Vec::new();
    let mut partition_guid = None;
    let mut loader = None;
    while b.len() >= 4 {
        let (t, s, len) = (b[0], b[1], u16le(b, 2) as usize);
        if len < 4 || len > b.len() {
            nodes.push("<truncated>".to_string());
            break;
        }
        let d = &b[4..len];
        let node = match (t, s) {
            (0x7f, 0xff) => break,
            (0x7f, 0x01) => "|".to_string(),
            (0x02, 0x01) if d.len() >= 8 && u32le(d, 0) == 0x0a0341d0 => {
                format!("PciRoot(0x{:x})", u32le(d, 4))
            }
            (0x02, 0x01) if d.len() >= 8 => {
                format!("Acpi(0x{:x},0x{:x})", u32le(d, 0), u32le(d, 4))
            }
            (0x01, 0x01) if d.len() >= 2 => format!("Pci(0x{:x},0x{:x})", d[1], d[0]),
            (0x03, 0x01) if d.len() >= 4 => format!("Ata({},{},{})", d[0], d[1], u16le(d, 2)),
            (0x03, 0x02) if d.len() >= 4 => format!("SCSI({},{})", u16le(d, 0), u16le(d, 2)),
            (0x03, 0x05) if d.len() >= 2 => format!("USB({},{})", d[0], d[1]),
            (0x03, 0x12) if d.len() >= 6 => {
                format!("Sata({},{},{})", u16le(d, 0), u16le(d, 2), u16le(d, 4))
            }
            (0x03, 0x17) if d.len() >= 12 => {
                format!("NVMe(0x{:x},{})", u32le(d, 0), hex::encode(&d[4..12]))
            }
            (0x03, 0x0b) if d.len() >= 6 => format!(
                "MAC({},{})",
                hex::encode(&d[..6]),
                d.get(32).copied().unwrap_or(0)
            ),
            (0x03, 0x0c) => "IPv4(...)".to_string(),
            (0x03, 0x0d) => "IPv6(...)".to_string(),
            (0x03, 0x18) => format!("Uri({})", String::from_utf8_lossy(d)),
            (0x04, 0x01) if d.len() >= 38 => {
                let number = u32le(d, 0);
                let start = u64le(d, 4);
                let size = u64le(d, 12);
                let sig = &d[20..36];
                let (fmt, id) = match (d[36], d[37]) {
                    (_, 2) => {
                        let g = guid(sig);
                        partition_guid = Some(g.clone());
                        ("GPT", g)
                    }
                    (_, 1) => ("MBR", format!("0x{:08x}", u32le(sig, 0))),
                    _ => ("?", String::new()),
                };
                format!("HD({number},{fmt},{id},0x{start:x},0x{size:x})")
            }
            (0x04, 0x02) => "CDROM(...)".to_string(),
            (0x04, 0x04) => {
                let (p, _) = utf16z(d);
                loader = Some(p.clone());
                format!("File({p})")
            }
            (0x04, 0x06) if d.len() >= 16 => format!("FvFile({})", guid(&d[..16])),
            (0x04, 0x07) if d.len() >= 16 => format!("FvVol({})", guid(&d[..16])),
            (0x05, 0x01) => "BBS(...)".to_string(),
            _ => format!("Path({t},{s},{})", hex::encode(d)),
        };
        nodes.push(node);
        b = &b[len..];
    }
    DevicePath {
        text: nodes.join("/").replace("/|/", ","),
        partition_guid,
        loader,
    }
}

/// Parses an EFI_LOAD_OPTION (a Boot#### variable without the 4-byte
/// efivarfs attribute prefix).
pub fn parse_load_option(number: &str, data: &[u8]) -> Result<EfiBootEntry> {
    if data.len() < 8 {
        bail!("Boot{number} is too short ({} bytes)", data.len());
    }
    let attributes = u32le(data, 0);
    let path_len = u16le(data, 4) as usize;
    let (label, used) = utf16z(&data[6..]);
    let start = 6 + used;
    if start + path_len > data.len() {
        bail!("Boot{number}: the device path runs past the end of the variable");
    }
    let dp = parse_device_path(&data[start..start + path_len]);
    Ok(EfiBootEntry {
        number: number.to_string(),
        label,
        active: attributes & 1 != 0,
        partition_guid: dp.partition_guid,
        loader: dp.loader,
        device_path: dp.text,
    })
}

/// Boot entries, BootOrder and BootCurrent from an efivarfs folder.
pub fn read_efivars(dir: &Path) -> Result<(Vec<EfiBootEntry>, Vec<String>, Option<String>)> {
    let suffix = format!("-{EFI_GLOBAL_GUID}");
    let mut entries = Vec::new();
    let mut order = Vec::new();
    let mut current = None;
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let Some(var) = name.strip_suffix(&suffix) else {
            continue;
        };
        let read = || -> Result<Vec<u8>> {
            let raw = std::fs::read(dir.join(&name))?;
            Ok(raw.get(4..).unwrap_or_default().to_vec())
        };
        if var == "BootOrder" {
            let d = read()?;
            order = d
                .chunks_exact(2)
                .map(|c| format!("{:04X}", u16le(c, 0)))
                .collect();
        } else if var == "BootCurrent" {
            let d = read()?;
            current = (d.len() >= 2).then(|| format!("{:04X}", u16le(&d, 0)));
        } else if let Some(num) = var.strip_prefix("Boot") {
            if num.len() == 4 && num.chars().all(|c| c.is_ascii_hexdigit()) {
                entries.push(parse_load_option(num, &read()?)?);
            }
        }
    }
    Ok((entries, order, current))
}

/// Parses `efibootmgr -v` (the fallback when efivarfs cannot be read).
pub fn parse_efibootmgr(text: &str) -> (Vec<EfiBootEntry>, Vec<String>, Option<String>) {
    let mut entries = Vec::new();
    let mut order = Vec::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("BootOrder:") {
            order = v
                .trim()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        } else if let Some(v) = line.strip_prefix("BootCurrent:") {
            current = Some(v.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("Boot") {
            let num: String = rest.chars().take(4).collect();
            if num.len() != 4 || !num.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            let rest = &rest[4..];
            let active = rest.starts_with('*');
            let rest = rest.trim_start_matches('*').trim_start();
            // efibootmgr separates the label and the device path by a tab.
            let (label, path) = rest.split_once('\t').unwrap_or((rest, ""));
            let path = path.trim();
            let partition_guid = path
                .split("HD(")
                .nth(1)
                .and_then(|h| h.split(',').nth(2))
                .filter(|g| g.len() == 36)
                .map(|g| g.to_lowercase());
            // File(...) as a node of its own, not the tail of FvFile(...).
            let loader = path
                .split('/')
                .find_map(|node| node.strip_prefix("File("))
                .and_then(|f| f.strip_suffix(')'))
                .map(String::from);
            entries.push(EfiBootEntry {
                number: num,
                label: label.trim().to_string(),
                active,
                partition_guid,
                loader,
                device_path: path.to_string(),
            });
        }
    }
    (entries, order, current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/guest")
            .join(name)
    }

    #[test]
    fn efivars_match_efibootmgr() {
        let (entries, order, _current) = read_efivars(&fixture("efivars")).unwrap();
        let text = std::fs::read_to_string(fixture("efibootmgr-v.txt")).unwrap();
        let (e2, o2, _) = parse_efibootmgr(&text);
        assert_eq!(order, vec!["0001", "0000"]);
        assert_eq!(order, o2);
        assert_eq!(entries, e2, "efivarfs and efibootmgr -v disagree");
        let debian = entries.iter().find(|e| e.number == "0001").unwrap();
        assert_eq!(debian.label, "debian");
        assert!(debian.active);
        assert_eq!(
            debian.partition_guid.as_deref(),
            Some("aaaaaaaa-0001-4000-8000-000000000001")
        );
        assert_eq!(debian.loader.as_deref(), Some(r"\EFI\debian\shimx64.efi"));
    }

    #[test]
    fn damaged_variables_are_errors() {
        assert!(parse_load_option("0003", &[1, 0, 0]).is_err());
        let mut d = vec![1, 0, 0, 0, 0xff, 0x00, b'a', 0, 0, 0];
        d.extend_from_slice(&[0x7f, 0xff, 4, 0]);
        let err = parse_load_option("0003", &d).unwrap_err().to_string();
        assert!(err.contains("Boot0003"), "{err}");
    }
}
