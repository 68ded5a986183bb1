//! LUKS 1 and 2 headers. Read from the device directly (the LUKS1 binary
//! header; the LUKS2 binary header, its SHA-256 checksum and its JSON
//! area), which costs no process; when that fails (an unknown checksum
//! algorithm, a damaged primary header), from `cryptsetup luksDump` (text,
//! both versions; `--dump-json-metadata` for LUKS2 is parsed too). The unit
//! tests check both against each other. Key material, salts and digests are
//! never read into the layout.

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::layout::LuksDevice;

/// Parses `cryptsetup luksDump DEV` for LUKS1 or LUKS2.
/// The device path and mapping fields are left for the caller.
pub fn parse_dump(text: &str) -> Result<LuksDevice> {
    let mut d = LuksDevice {
        device: String::new(),
        version: 0,
        uuid: String::new(),
        cipher: String::new(),
        key_size_bits: 0,
        hash: None,
        pbkdf: None,
        label: None,
        subsystem: None,
        data_offset_bytes: None,
        sector_size: None,
        mapping_name: None,
        mapped_device: None,
        header_backup: None,
    };
    let mut cipher_name = None;
    let mut cipher_mode = None;
    // LUKS2 sections: "Data segments:", "Keyslots:", "Digests:"...
    let mut section = "";
    let mut first_item_done = false;
    let mut in_first_item = false;
    for line in text.lines() {
        if !line.starts_with([' ', '\t']) {
            if let Some(s) = line.strip_suffix(':') {
                section = match s {
                    "Data segments" => "segments",
                    "Keyslots" => "keyslots",
                    "Digests" => "digests",
                    "Tokens" => "tokens",
                    _ => "",
                };
                first_item_done = false;
                in_first_item = false;
                continue;
            }
        }
        // "  0: crypt" opens an item of a LUKS2 section; only the first
        // item of each section is read (segment 0, key slot 0, digest 0).
        let t = line.trim();
        if line.starts_with("  ") && !line.starts_with("   ") && t.contains(": ") {
            if let Some((n, _)) = t.split_once(':') {
                if n.chars().all(|c| c.is_ascii_digit()) {
                    in_first_item = !first_item_done;
                    first_item_done = true;
                    continue;
                }
            }
        }
        let Some((k, v)) = t.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match (section, k.trim()) {
            ("", "Version") => d.version = v.parse().context("bad LUKS version")?,
            ("", "UUID") => d.uuid = v.to_string(),
            ("", "Label") if v != "(no label)" => d.label = Some(v.to_string()),
            ("", "Subsystem") if v != "(no subsystem)" => d.subsystem = Some(v.to_string()),
            // LUKS1
            ("", "Cipher name") => cipher_name = Some(v.to_string()),
            ("", "Cipher mode") => cipher_mode = Some(v.to_string()),
            ("", "Hash spec") => d.hash = Some(v.to_string()),
            ("", "MK bits") => d.key_size_bits = v.parse().context("bad MK bits")?,
            ("", "Payload offset") => {
                d.data_offset_bytes = Some(v.parse::<u64>().context("bad payload offset")? * 512)
            }
            // LUKS2
            ("segments", "offset") if in_first_item => d.data_offset_bytes = first_number(v),
            ("segments", "cipher") if in_first_item => d.cipher = v.to_string(),
            ("segments", "sector") if in_first_item => {
                d.sector_size = first_number(v).map(|n| n as u32)
            }
            ("keyslots", "Key") if in_first_item => {
                d.key_size_bits = first_number(v).unwrap_or(0) as u32
            }
            ("keyslots", "PBKDF") if in_first_item => d.pbkdf = Some(v.to_string()),
            ("digests", "Hash") if in_first_item => d.hash = Some(v.to_string()),
            _ => {}
        }
    }
    if d.version == 1 {
        d.cipher = match (cipher_name, cipher_mode) {
            (Some(n), Some(m)) => format!("{n}-{m}"),
            (Some(n), None) => n,
            _ => String::new(),
        };
        // LUKS1 key slots always use PBKDF2 with the header's hash.
        d.pbkdf = Some("pbkdf2".into());
    }
    if d.version == 0 || d.uuid.is_empty() {
        anyhow::bail!("not a luksDump output (no Version or UUID line)");
    }
    Ok(d)
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim().to_string()
}

pub(crate) fn empty_device(version: u32, uuid: String) -> LuksDevice {
    LuksDevice {
        device: String::new(),
        version,
        uuid,
        cipher: String::new(),
        key_size_bits: 0,
        hash: None,
        pbkdf: None,
        label: None,
        subsystem: None,
        data_offset_bytes: None,
        sector_size: None,
        mapping_name: None,
        mapped_device: None,
        header_backup: None,
    }
}

/// Reads the LUKS header at the start of `path` (see the module docs).
pub fn read_header(path: &std::path::Path) -> Result<LuksDevice> {
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hdr = vec![0u8; 4096];
    f.read_exact(&mut hdr)
        .with_context(|| format!("reading the LUKS header of {}", path.display()))?;
    if &hdr[0..6] != b"LUKS\xba\xbe" {
        anyhow::bail!("{} has no LUKS header", path.display());
    }
    let be32 = |o: usize| u32::from_be_bytes(hdr[o..o + 4].try_into().unwrap());
    let be64 = |o: usize| u64::from_be_bytes(hdr[o..o + 8].try_into().unwrap());
    match u16::from_be_bytes([hdr[6], hdr[7]]) {
        1 => {
            let mut d = empty_device(1, c_string(&hdr[168..208]));
            d.cipher = format!("{}-{}", c_string(&hdr[8..40]), c_string(&hdr[40..72]));
            d.hash = Some(c_string(&hdr[72..104]));
            d.data_offset_bytes = Some(be32(104) as u64 * 512);
            d.key_size_bits = be32(108) * 8;
            d.pbkdf = Some("pbkdf2".into());
            Ok(d)
        }
        2 => {
            let hdr_size = be64(8);
            if !(4096 * 4..=4 << 20).contains(&hdr_size) {
                anyhow::bail!(
                    "LUKS2 header of {} has a bad size {hdr_size}",
                    path.display()
                );
            }
            let alg = c_string(&hdr[72..104]);
            if alg != "sha256" {
                anyhow::bail!("LUKS2 header checksum {alg} is not read directly");
            }
            let mut area = vec![0u8; hdr_size as usize];
            f.read_exact_at(&mut area, 0)
                .with_context(|| format!("reading the LUKS2 metadata of {}", path.display()))?;
            let stored = area[448..480].to_vec();
            area[448..512].fill(0);
            use sha2::Digest;
            if sha2::Sha256::digest(&area).as_slice() != stored.as_slice() {
                anyhow::bail!(
                    "the primary LUKS2 header of {} has a bad checksum",
                    path.display()
                );
            }
            let mut d = empty_device(2, c_string(&hdr[168..208]));
            let label = c_string(&hdr[24..72]);
            let subsystem = c_string(&hdr[208..256]);
            d.label = (!label.is_empty()).then_some(label);
            d.subsystem = (!subsystem.is_empty()).then_some(subsystem);
            let json = c_string(&area[4096..]);
            apply_luks2_json(&mut d, &json)?;
            Ok(d)
        }
        v => anyhow::bail!("{} has an unknown LUKS version {v}", path.display()),
    }
}

fn first_number(v: &str) -> Option<u64> {
    v.split_whitespace().next()?.parse().ok()
}

#[derive(Debug, Deserialize)]
struct Luks2Json {
    segments: std::collections::BTreeMap<String, Segment>,
    keyslots: std::collections::BTreeMap<String, Keyslot>,
    digests: std::collections::BTreeMap<String, Digest>,
}

#[derive(Debug, Deserialize)]
struct Segment {
    offset: String,
    encryption: Option<String>,
    sector_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Keyslot {
    key_size: u32,
    kdf: Kdf,
}

#[derive(Debug, Deserialize)]
struct Kdf {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct Digest {
    hash: Option<String>,
}

/// Fills cipher, key size, PBKDF, hash, offset and sector size of a LUKS2
/// device from `cryptsetup luksDump --dump-json-metadata`.
pub fn apply_luks2_json(d: &mut LuksDevice, json: &str) -> Result<()> {
    let m: Luks2Json = serde_json::from_str(json).context("parsing LUKS2 JSON metadata")?;
    let first = |keys: Vec<&String>| {
        keys.into_iter()
            .min_by_key(|k| k.parse::<u32>().unwrap_or(u32::MAX))
            .cloned()
    };
    if let Some(k) = first(m.segments.keys().collect()) {
        let s = &m.segments[&k];
        d.data_offset_bytes = s.offset.parse().ok();
        d.cipher = s.encryption.clone().unwrap_or_default();
        d.sector_size = s.sector_size;
    }
    if let Some(k) = first(m.keyslots.keys().collect()) {
        let ks = &m.keyslots[&k];
        d.key_size_bits = ks.key_size * 8;
        d.pbkdf = Some(ks.kdf.kind.clone());
    }
    if let Some(k) = first(m.digests.keys().collect()) {
        d.hash = m.digests[&k].hash.clone();
    }
    Ok(())
}

/// The mapping name of an active dm-crypt device from its dm uuid
/// (`CRYPT-LUKS2-<uuid without dashes>-<name>`), when it belongs to `uuid`.
pub fn mapping_from_dm_uuid(dm_uuid: &str, luks_uuid: &str) -> Option<String> {
    let rest = dm_uuid
        .strip_prefix("CRYPT-LUKS1-")
        .or_else(|| dm_uuid.strip_prefix("CRYPT-LUKS2-"))?;
    let (u, name) = rest.split_once('-')?;
    (u == luks_uuid.replace('-', "")).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/guest")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn luks2_text_and_json_agree() {
        let d = parse_dump(&fixture("luksdump-luks2.txt")).unwrap();
        assert_eq!(d.version, 2);
        assert_eq!(d.uuid, "22222222-0000-4000-8000-000000000002");
        assert_eq!(d.label.as_deref(), Some("cryptroot"));
        assert_eq!(d.subsystem.as_deref(), Some("lifeboat-test"));
        assert_eq!(d.cipher, "aes-xts-plain64");
        assert_eq!(d.key_size_bits, 512);
        assert_eq!(d.pbkdf.as_deref(), Some("pbkdf2"));
        assert_eq!(d.hash.as_deref(), Some("sha256"));
        assert_eq!(d.data_offset_bytes, Some(16 << 20));
        assert_eq!(d.sector_size, Some(512));
        let mut j = d.clone();
        j.cipher.clear();
        j.key_size_bits = 0;
        j.pbkdf = None;
        j.hash = None;
        apply_luks2_json(&mut j, &fixture("luksdump-luks2.json")).unwrap();
        assert_eq!(j, d);
    }

    #[test]
    fn luks1_text() {
        let d = parse_dump(&fixture("luksdump-luks1.txt")).unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.uuid, "11111111-0000-4000-8000-000000000001");
        assert_eq!(d.cipher, "aes-xts-plain64");
        assert_eq!(d.key_size_bits, 512);
        assert_eq!(d.hash.as_deref(), Some("sha256"));
        assert_eq!(d.pbkdf.as_deref(), Some("pbkdf2"));
        assert_eq!(d.data_offset_bytes, Some(4096 * 512));
        assert_eq!(d.label, None);
        assert_eq!(d.sector_size, None);
    }

    #[test]
    fn never_key_material() {
        let d = parse_dump(&fixture("luksdump-luks2.txt")).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        for secret in ["Salt", "Digest", "0e 5b 8c"] {
            assert!(!json.contains(secret), "{json}");
        }
        assert!(parse_dump("garbage\n").is_err());
    }

    /// The direct reader gives what `cryptsetup luksDump` says, for headers
    /// made with different options.
    #[test]
    fn direct_header_reads_match_luksdump() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "test").unwrap();
        let cases = [
            "--type luks2 --pbkdf pbkdf2 --label root --subsystem lifeboat",
            "--type luks2 --pbkdf argon2id --pbkdf-memory 32 --sector-size 4096 --cipher aes-cbc-essiv:sha256 --key-size 256",
            "--type luks2 --pbkdf pbkdf2 --hash sha512 --luks2-metadata-size 64k --luks2-keyslots-size 1m",
            "--type luks1 --hash sha256",
            "--type luks1 --cipher aes-cbc-essiv:sha256 --key-size 256 --hash sha1",
        ];
        for (i, opts) in cases.iter().enumerate() {
            let img = dir.path().join(format!("{i}.img"));
            std::fs::File::create(&img)
                .unwrap()
                .set_len(20 << 20)
                .unwrap();
            let mk = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "cryptsetup luksFormat --batch-mode {opts} --pbkdf-force-iterations 1000 --key-file '{}' '{}'",
                    key.display(),
                    img.display()
                ))
                .output()
                .unwrap();
            assert!(
                mk.status.success(),
                "{opts}: {}",
                String::from_utf8_lossy(&mk.stderr)
            );
            let dump = std::process::Command::new("cryptsetup")
                .arg("luksDump")
                .arg(&img)
                .output()
                .unwrap();
            let want = parse_dump(&String::from_utf8_lossy(&dump.stdout)).unwrap();
            let got = read_header(&img).unwrap();
            assert_eq!(got, want, "{opts}");
        }
        // A damaged LUKS2 checksum is refused (capture falls back to luksDump).
        let img = dir.path().join("0.img");
        let mut data = std::fs::read(&img).unwrap();
        data[4096 + 10] ^= 1;
        std::fs::write(&img, &data).unwrap();
        assert!(read_header(&img)
            .unwrap_err()
            .to_string()
            .contains("bad checksum"));
    }

    #[test]
    fn mapping_names_from_dm_uuids() {
        let u = "22222222-0000-4000-8000-000000000002";
        assert_eq!(
            mapping_from_dm_uuid("CRYPT-LUKS2-22222222000040008000000000000002-cryptpv", u)
                .as_deref(),
            Some("cryptpv")
        );
        assert_eq!(mapping_from_dm_uuid("CRYPT-LUKS2-ffff-x", u), None);
        assert_eq!(mapping_from_dm_uuid("LVM-abc", u), None);
    }
}
