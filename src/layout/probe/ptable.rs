//! GPT and MBR readers working on the disk itself (or an image file).
//!
//! GPT: both headers are checked (signature, header CRC, entry array CRC);
//! a damaged primary header is reported and the table is read from the
//! backup. MBR: primary, extended and logical partitions (the EBR chain).
//! Partition `device` fields are left empty: the caller names them.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::layout::{GptPartition, GptTable, MbrKind, MbrPartition, MbrTable, PartitionTable};

const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";

/// Reads `len` bytes at `offset`; short reads past the end are an error.
fn read_at(f: &mut File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A GUID in its mixed-endian on-disk form as lower-case canonical text.
pub fn guid_text(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32le(b, 0),
        u16le(b, 4),
        u16le(b, 6),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// Reads the partition table of the disk or image at `path`.
/// `sector_size` is the logical sector size; `None` tries 512 and 4096.
/// Returns `None` when the device has no partition table.
pub fn read_path(path: &Path, sector_size: Option<u32>) -> Result<Option<PartitionTable>> {
    let mut f = File::open(path)
        .with_context(|| format!("opening {} to read its partition table", path.display()))?;
    let size = f
        .seek(SeekFrom::End(0))
        .with_context(|| format!("finding the size of {}", path.display()))?;
    let sizes: Vec<u32> = match sector_size {
        Some(s) => vec![s],
        None => vec![512, 4096],
    };
    read(&mut f, size, &sizes)
        .with_context(|| format!("reading the partition table of {}", path.display()))
}

/// Reads the partition table from an open disk of `size` bytes, trying each
/// sector size in turn for the GPT header.
pub fn read(f: &mut File, size: u64, sector_sizes: &[u32]) -> Result<Option<PartitionTable>> {
    if size < 1024 {
        return Ok(None);
    }
    let mbr = read_at(f, 0, 512)?;
    let has_mbr_sig = mbr[510] == 0x55 && mbr[511] == 0xaa;
    let protective = has_mbr_sig && (0..4).any(|i| mbr[446 + i * 16 + 4] == 0xee);
    for &ss in sector_sizes {
        if let Some(gpt) = read_gpt(f, size, ss as u64)? {
            return Ok(Some(PartitionTable::Gpt(gpt)));
        }
    }
    if protective {
        bail!("the protective MBR announces a GPT but neither the primary nor the backup GPT header is valid");
    }
    if has_mbr_sig && looks_like_mbr(&mbr) {
        let ss = sector_sizes.first().copied().unwrap_or(512) as u64;
        return Ok(Some(PartitionTable::Mbr(read_mbr(f, size, ss, &mbr)?)));
    }
    Ok(None)
}

/// Every entry has a valid boot flag and at least one is in use: a file
/// system boot sector (which also ends in 55 aa) fails this almost always.
fn looks_like_mbr(mbr: &[u8]) -> bool {
    let entries: Vec<&[u8]> = (0..4).map(|i| &mbr[446 + i * 16..462 + i * 16]).collect();
    entries.iter().all(|e| e[0] == 0 || e[0] == 0x80)
        && entries.iter().any(|e| e[4] != 0 && u32le(e, 12) != 0)
}

struct GptHeader {
    my_lba: u64,
    alternate_lba: u64,
    first_usable: u64,
    last_usable: u64,
    disk_guid: String,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Parses and checks a header sector; `Err` says what is wrong with it.
fn parse_gpt_header(sector: &[u8], expected_lba: u64) -> std::result::Result<GptHeader, String> {
    if &sector[0..8] != GPT_SIGNATURE {
        return Err("no GPT signature".into());
    }
    let header_size = u32le(sector, 12) as usize;
    if !(92..=sector.len()).contains(&header_size) {
        return Err(format!("bad header size {header_size}"));
    }
    let stored_crc = u32le(sector, 16);
    let mut copy = sector[..header_size].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != stored_crc {
        return Err("bad header CRC".into());
    }
    let h = GptHeader {
        my_lba: u64le(sector, 24),
        alternate_lba: u64le(sector, 32),
        first_usable: u64le(sector, 40),
        last_usable: u64le(sector, 48),
        disk_guid: guid_text(&sector[56..72]),
        entries_lba: u64le(sector, 72),
        num_entries: u32le(sector, 80),
        entry_size: u32le(sector, 84),
        entries_crc: u32le(sector, 88),
    };
    if h.my_lba != expected_lba {
        return Err(format!(
            "header says it is at LBA {}, read at LBA {expected_lba}",
            h.my_lba
        ));
    }
    if h.entry_size < 128 || h.num_entries == 0 || h.num_entries > 16384 {
        return Err(format!(
            "bad entry array geometry ({} entries of {} bytes)",
            h.num_entries, h.entry_size
        ));
    }
    Ok(h)
}

/// Reads the header at `lba` and its entry array; `Err` explains the damage.
fn read_gpt_at(
    f: &mut File,
    size: u64,
    ss: u64,
    lba: u64,
) -> Result<std::result::Result<(GptHeader, Vec<u8>), String>> {
    if (lba + 1) * ss > size {
        return Ok(Err("beyond the end of the disk".into()));
    }
    let sector = read_at(f, lba * ss, ss as usize)?;
    let h = match parse_gpt_header(&sector, lba) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    let len = h.num_entries as u64 * h.entry_size as u64;
    if h.entries_lba * ss + len > size {
        return Ok(Err("entry array beyond the end of the disk".into()));
    }
    let entries = read_at(f, h.entries_lba * ss, len as usize)?;
    if crc32fast::hash(&entries) != h.entries_crc {
        return Ok(Err("bad partition entry array CRC".into()));
    }
    Ok(Ok((h, entries)))
}

fn read_gpt(f: &mut File, size: u64, ss: u64) -> Result<Option<GptTable>> {
    let last_lba = size / ss - 1;
    let primary = read_gpt_at(f, size, ss, 1)?;
    // The backup is where the primary says, or at the last LBA.
    let backup_lba = match &primary {
        Ok((h, _)) if h.alternate_lba > 1 && h.alternate_lba <= last_lba => h.alternate_lba,
        _ => last_lba,
    };
    let backup = read_gpt_at(f, size, ss, backup_lba)?;
    let mut problems = Vec::new();
    let (header, entries, from_backup) = match (primary, backup) {
        (Ok((h, e)), Ok(_)) => (h, e, false),
        (Ok((h, e)), Err(why)) => {
            problems.push(format!(
                "backup GPT header at LBA {backup_lba} is damaged or missing ({why})"
            ));
            (h, e, false)
        }
        (Err(why), Ok((h, e))) => {
            // "no GPT signature" at LBA 1 with a valid backup: still damage.
            problems.push(format!(
                "primary GPT header at LBA 1 is damaged ({why}); read the backup header at LBA {backup_lba}"
            ));
            (h, e, true)
        }
        (Err(_), Err(_)) => return Ok(None),
    };
    let mut partitions = Vec::new();
    for i in 0..header.num_entries as usize {
        let e = &entries[i * header.entry_size as usize..(i + 1) * header.entry_size as usize];
        if e[0..16].iter().all(|&b| b == 0) {
            continue;
        }
        let first_lba = u64le(e, 32);
        let last_lba = u64le(e, 40);
        let name_units: Vec<u16> = (0..36)
            .map(|k| u16le(e, 56 + 2 * k))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(GptPartition {
            number: i as u32 + 1,
            device: String::new(),
            first_lba,
            last_lba,
            size_bytes: (last_lba.saturating_sub(first_lba) + 1) * ss,
            type_guid: guid_text(&e[0..16]),
            unique_guid: guid_text(&e[16..32]),
            name: String::from_utf16_lossy(&name_units),
            attributes: u64le(e, 48),
        });
    }
    Ok(Some(GptTable {
        disk_guid: header.disk_guid,
        first_usable_lba: header.first_usable,
        last_usable_lba: header.last_usable,
        // The backup's array sits at the end; a rebuilt primary goes at 2.
        partition_entry_lba: if from_backup { 2 } else { header.entries_lba },
        num_partition_entries: header.num_entries,
        partition_entry_size: header.entry_size,
        problems,
        partitions,
    }))
}

fn mbr_entry(e: &[u8]) -> Option<(bool, u8, u64, u64)> {
    let sectors = u32le(e, 12) as u64;
    (e[4] != 0 && sectors != 0).then(|| (e[0] == 0x80, e[4], u32le(e, 8) as u64, sectors))
}

fn is_extended(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

fn read_mbr(f: &mut File, size: u64, ss: u64, mbr: &[u8]) -> Result<MbrTable> {
    let mut partitions = Vec::new();
    let mut extended = None;
    for i in 0..4 {
        let Some((bootable, type_byte, first_lba, sectors)) =
            mbr_entry(&mbr[446 + i * 16..462 + i * 16])
        else {
            continue;
        };
        let kind = if is_extended(type_byte) {
            extended = Some(first_lba);
            MbrKind::Extended
        } else {
            MbrKind::Primary
        };
        partitions.push(MbrPartition {
            number: i as u32 + 1,
            device: String::new(),
            kind,
            first_lba,
            sectors,
            size_bytes: sectors * ss,
            type_byte,
            bootable,
        });
    }
    if let Some(ext_start) = extended {
        // The EBR chain: entry 1 is the logical partition (relative to this
        // EBR), entry 2 links to the next EBR (relative to the extended one).
        let mut ebr_lba = ext_start;
        let mut number = 5;
        let mut seen = Vec::new();
        while ebr_lba != 0
            && !seen.contains(&ebr_lba)
            && seen.len() < 256
            && (ebr_lba + 1) * ss <= size
        {
            seen.push(ebr_lba);
            let ebr = read_at(f, ebr_lba * ss, 512)?;
            if ebr[510] != 0x55 || ebr[511] != 0xaa {
                bail!("extended boot record at LBA {ebr_lba} has no 55 aa signature");
            }
            if let Some((bootable, type_byte, rel, sectors)) = mbr_entry(&ebr[446..462]) {
                partitions.push(MbrPartition {
                    number,
                    device: String::new(),
                    kind: MbrKind::Logical,
                    first_lba: ebr_lba + rel,
                    sectors,
                    size_bytes: sectors * ss,
                    type_byte,
                    bootable,
                });
                number += 1;
            }
            ebr_lba = match mbr_entry(&ebr[462..478]) {
                Some((_, _, rel, _)) => ext_start + rel,
                None => 0,
            };
        }
    }
    Ok(MbrTable {
        disk_signature: u32le(mbr, 440),
        partitions,
    })
}

/// Whether sector 0 carries GRUB's i386-pc boot code (boot.img has the
/// string "GRUB " in its error messages).
pub fn has_grub_boot_code(sector0: &[u8]) -> bool {
    sector0.len() >= 440 && sector0[..440].windows(5).any(|w| w == b"GRUB ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(script: &str) {
        let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "`{script}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn gpt(t: &Option<PartitionTable>) -> &GptTable {
        match t {
            Some(PartitionTable::Gpt(g)) => g,
            other => panic!("expected a GPT, got {other:?}"),
        }
    }

    fn mbr(t: &Option<PartitionTable>) -> &MbrTable {
        match t {
            Some(PartitionTable::Mbr(m)) => m,
            other => panic!("expected an MBR, got {other:?}"),
        }
    }

    /// What sfdisk reads from the same image, for cross-checking.
    fn sfdisk_json(img: &Path) -> serde_json::Value {
        let out = Command::new("sfdisk")
            .arg("--json")
            .arg(img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["partitiontable"].clone()
    }

    fn make_gpt(img: &Path) {
        std::fs::File::create(img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        sh(&format!(
            "sgdisk -o -U 01234567-89ab-4def-8123-456789abcdef \
             -n 1:2048:+8M -t 1:ef00 -c 1:EFI -u 1:11111111-2222-4333-8444-555555555555 -A 1:set:0 \
             -n 2:0:+16M -t 2:8e00 -c '2:lvm pv' -u 2:aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee -A 2:set:2 \
             -n 4:0:0 -t 4:8300 -c 4:data -u 4:99999999-8888-4777-8666-555555555555 '{}' >/dev/null",
            img.display()
        ));
    }

    #[test]
    fn reads_gpt_with_fixed_guids_like_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("gpt.img");
        make_gpt(&img);
        let t = read_path(&img, None).unwrap();
        let g = gpt(&t);
        assert_eq!(g.disk_guid, "01234567-89ab-4def-8123-456789abcdef");
        assert_eq!(g.first_usable_lba, 34);
        assert_eq!(g.last_usable_lba, (64 << 11) - 34);
        assert_eq!(g.partition_entry_lba, 2);
        assert_eq!(
            (g.num_partition_entries, g.partition_entry_size),
            (128, 128)
        );
        assert!(g.problems.is_empty(), "{:?}", g.problems);
        let numbers: Vec<u32> = g.partitions.iter().map(|p| p.number).collect();
        assert_eq!(numbers, vec![1, 2, 4]);
        let p1 = &g.partitions[0];
        assert_eq!(
            (p1.first_lba, p1.last_lba, p1.size_bytes),
            (2048, 2048 + 16383, 8 << 20)
        );
        assert_eq!(p1.type_guid, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!(p1.unique_guid, "11111111-2222-4333-8444-555555555555");
        assert_eq!(p1.name, "EFI");
        assert_eq!(p1.attributes, 1);
        assert_eq!(g.partitions[1].name, "lvm pv");
        assert_eq!(g.partitions[1].attributes, 4);
        assert_eq!(
            g.partitions[1].type_guid,
            "e6d6d379-f507-44c2-a23c-238f2a3df928"
        );

        let sf = sfdisk_json(&img);
        assert_eq!(sf["id"].as_str().unwrap().to_lowercase(), g.disk_guid);
        assert_eq!(sf["firstlba"].as_u64().unwrap(), g.first_usable_lba);
        assert_eq!(sf["lastlba"].as_u64().unwrap(), g.last_usable_lba);
        let sfp = sf["partitions"].as_array().unwrap();
        assert_eq!(sfp.len(), g.partitions.len());
        for (s, p) in sfp.iter().zip(&g.partitions) {
            assert_eq!(s["start"].as_u64().unwrap(), p.first_lba);
            assert_eq!(s["size"].as_u64().unwrap(), p.last_lba - p.first_lba + 1);
            assert_eq!(s["uuid"].as_str().unwrap().to_lowercase(), p.unique_guid);
            assert_eq!(s["type"].as_str().unwrap().to_lowercase(), p.type_guid);
        }
    }

    #[test]
    fn damaged_primary_header_is_read_from_the_backup_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("gpt.img");
        make_gpt(&img);
        let good = gpt(&read_path(&img, Some(512)).unwrap()).clone();
        // Flip one byte of the disk GUID in the primary header (LBA 1).
        let mut data = std::fs::read(&img).unwrap();
        data[512 + 60] ^= 0xff;
        std::fs::write(&img, &data).unwrap();
        let t = read_path(&img, Some(512)).unwrap();
        let g = gpt(&t);
        assert_eq!(g.partitions, good.partitions);
        assert_eq!(g.disk_guid, good.disk_guid);
        assert_eq!(g.partition_entry_lba, 2);
        assert_eq!(g.problems.len(), 1, "{:?}", g.problems);
        assert!(
            g.problems[0].contains("primary GPT header at LBA 1 is damaged (bad header CRC)"),
            "{:?}",
            g.problems
        );
        // Wipe the primary completely: the backup still gives the table.
        data[512..1024].fill(0);
        std::fs::write(&img, &data).unwrap();
        let t = read_path(&img, Some(512)).unwrap();
        assert_eq!(gpt(&t).partitions, good.partitions);
        assert!(gpt(&t).problems[0].contains("no GPT signature"));
        // And a damaged backup with a good primary is reported too.
        make_gpt(&img);
        let mut data = std::fs::read(&img).unwrap();
        let n = data.len();
        data[n - 512 + 60] ^= 0xff;
        std::fs::write(&img, &data).unwrap();
        let t = read_path(&img, Some(512)).unwrap();
        assert!(
            gpt(&t).problems[0].starts_with("backup GPT header"),
            "{:?}",
            gpt(&t).problems
        );
    }

    #[test]
    fn both_headers_damaged_is_an_error_naming_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("gpt.img");
        make_gpt(&img);
        let mut data = std::fs::read(&img).unwrap();
        let n = data.len();
        data[512..520].fill(0);
        data[n - 512..n - 504].fill(0);
        std::fs::write(&img, &data).unwrap();
        let err = format!("{:#}", read_path(&img, Some(512)).unwrap_err());
        assert!(
            err.contains("gpt.img") && err.contains("neither the primary nor the backup"),
            "{err}"
        );
    }

    /// A 4K-sector image written by gptman (sfdisk 2.38 and sgdisk cannot
    /// set the sector size of an image file).
    #[test]
    fn reads_gpt_with_4096_byte_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("gpt4k.img");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        let guid = |s: &str| {
            let u = uuid::Uuid::parse_str(s).unwrap();
            u.to_bytes_le()
        };
        let mut g =
            gptman::GPT::new_from(&mut f, 4096, guid("0fc63daf-8483-4772-8e79-3d69d8477de4"))
                .unwrap();
        g[1] = gptman::GPTPartitionEntry {
            partition_type_guid: guid("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"),
            unique_partition_guid: guid("6e9c0c1a-0d5b-4a39-9a1b-aaaaaaaaaaaa"),
            starting_lba: 256,
            ending_lba: 256 + 2047,
            attribute_bits: 1,
            partition_name: "esp".into(),
        };
        g[3] = gptman::GPTPartitionEntry {
            partition_type_guid: guid("0fc63daf-8483-4772-8e79-3d69d8477de4"),
            unique_partition_guid: guid("6e9c0c1a-0d5b-4a39-9a1b-bbbbbbbbbbbb"),
            starting_lba: 2304,
            ending_lba: 2304 + 4095,
            attribute_bits: 0,
            partition_name: "data".into(),
        };
        g.write_into(&mut f).unwrap();
        gptman::GPT::write_protective_mbr_into(&mut f, 4096).unwrap();
        drop(f);
        let (first, last) = (g.header.first_usable_lba, g.header.last_usable_lba);

        let t = read_path(&img, None).unwrap();
        let g = gpt(&t);
        assert_eq!(g.disk_guid, "0fc63daf-8483-4772-8e79-3d69d8477de4");
        assert_eq!((g.first_usable_lba, g.last_usable_lba), (first, last));
        assert_eq!(last, (64 << 20) / 4096 - 1 - 1 - (128 * 128 / 4096));
        assert!(g.problems.is_empty(), "{:?}", g.problems);
        let got: Vec<(u32, u64, u64, &str)> = g
            .partitions
            .iter()
            .map(|p| (p.number, p.first_lba, p.size_bytes, p.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(1, 256, 2048 * 4096, "esp"), (3, 2304, 4096 * 4096, "data")]
        );
        assert_eq!(
            g.partitions[1].unique_guid,
            "6e9c0c1a-0d5b-4a39-9a1b-bbbbbbbbbbbb"
        );
        assert_eq!(g.partitions[0].attributes, 1);
        // Read as 512-byte sectors, the image shows no valid GPT at all.
        assert!(read_path(&img, Some(512)).is_err());
    }

    #[test]
    fn reads_mbr_with_logical_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("mbr.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        sh(&format!(
            "printf 'label: dos\\nlabel-id: 0x1a2b3c4d\\n,8M,83,*\\n,8M,8e\\n,,5\\n,4M,82\\n,4M,fd\\n,,83\\n' | sfdisk -q '{}'",
            img.display()
        ));
        let t = read_path(&img, Some(512)).unwrap();
        let m = mbr(&t);
        assert_eq!(m.disk_signature, 0x1a2b3c4d);
        let got: Vec<(u32, MbrKind, u8, bool)> = m
            .partitions
            .iter()
            .map(|p| (p.number, p.kind, p.type_byte, p.bootable))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, MbrKind::Primary, 0x83, true),
                (2, MbrKind::Primary, 0x8e, false),
                (3, MbrKind::Extended, 0x05, false),
                (5, MbrKind::Logical, 0x82, false),
                (6, MbrKind::Logical, 0xfd, false),
                (7, MbrKind::Logical, 0x83, false),
            ]
        );
        let sf = sfdisk_json(&img);
        let sfp = sf["partitions"].as_array().unwrap();
        assert_eq!(sfp.len(), m.partitions.len());
        for (s, p) in sfp.iter().zip(&m.partitions) {
            assert_eq!(
                s["start"].as_u64().unwrap(),
                p.first_lba,
                "partition {}",
                p.number
            );
            assert_eq!(
                s["size"].as_u64().unwrap(),
                p.sectors,
                "partition {}",
                p.number
            );
            assert!(s["node"].as_str().unwrap().ends_with(&p.number.to_string()));
        }
    }

    #[test]
    fn the_guest_mbr_disk_carries_grub_boot_code() {
        let sector = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/guest/mbr-vdd-sector0.bin"),
        )
        .unwrap();
        assert!(has_grub_boot_code(&sector));
        assert!(!has_grub_boot_code(&[0u8; 512]));
        assert!(looks_like_mbr(&sector));
    }

    #[test]
    fn no_table_on_a_file_system_or_blank_disk() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("blank.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        assert_eq!(read_path(&img, None).unwrap(), None);
        sh(&format!(
            "mkfs.vfat -C '{}' 8192 >/dev/null",
            dir.path().join("fat.img").display()
        ));
        assert_eq!(read_path(&dir.path().join("fat.img"), None).unwrap(), None);
    }
}
