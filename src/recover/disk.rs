//! Writing partition tables in Rust with the layout's exact identities, and
//! making the kernel see the new partitions.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::exec::{Cmd, Gate};
use crate::layout::{GptTable, MbrKind, MbrTable, PartitionTable};
use crate::plan::partition_path;

/// A GUID in its canonical text form as the 16 bytes GPT stores
/// (the first three fields little-endian).
pub fn guid_bytes(text: &str) -> Result<[u8; 16]> {
    let u = uuid::Uuid::parse_str(text).with_context(|| format!("bad GUID {text:?}"))?;
    Ok(u.to_bytes_le())
}

/// Opens a whole disk for writing, exclusively: the kernel refuses with
/// EBUSY when anything has it mounted or holds it (md, device-mapper).
pub fn open_exclusive(disk: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(disk)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                anyhow::anyhow!("{disk} is in use (mounted, swap, or held by md/device-mapper); refusing to write it")
            } else {
                anyhow::Error::new(e).context(format!("opening {disk} for writing"))
            }
        })
}

// BLKSSZGET = _IO(0x12, 104): the logical sector size, written through an
// int pointer (declared without a size, hence "bad").
nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), libc::c_int);
// BLKRRPART = _IO(0x12, 95): re-read the partition table.
nix::ioctl_none!(blkrrpart, 0x12, 95);

/// The kernel's logical sector size of an open disk (BLKSSZGET); 512 for
/// image files.
pub fn sector_size(disk: &File) -> u64 {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which lives
    // for the call.
    let r = unsafe { blksszget(std::os::fd::AsRawFd::as_raw_fd(disk), &mut size) };
    if r.is_ok() && size > 0 {
        size as u64
    } else {
        512
    }
}

/// Writes `table` to the disk open in `f` (the whole disk).
pub fn write_table(f: &mut File, table: &PartitionTable) -> Result<()> {
    let sector = sector_size(f);
    match table {
        PartitionTable::Gpt(g) => write_gpt(f, g, sector),
        PartitionTable::Mbr(m) => write_mbr(f, m, sector),
    }?;
    f.flush()?;
    f.sync_all().context("flushing the partition table")?;
    Ok(())
}

fn write_gpt(f: &mut File, t: &GptTable, sector: u64) -> Result<()> {
    let mut gpt =
        gptman::GPT::new_from(f, sector, guid_bytes(&t.disk_guid)?).context("preparing the GPT")?;
    if t.num_partition_entries != gpt.header.number_of_partition_entries {
        log::warn!(
            "the old GPT had {} partition entries; the new one has {}",
            t.num_partition_entries,
            gpt.header.number_of_partition_entries
        );
    }
    if t.first_usable_lba < gpt.header.first_usable_lba
        || t.last_usable_lba > gpt.header.last_usable_lba
    {
        bail!(
            "planned usable LBAs {}-{} do not fit the disk ({}-{})",
            t.first_usable_lba,
            t.last_usable_lba,
            gpt.header.first_usable_lba,
            gpt.header.last_usable_lba
        );
    }
    gpt.header.first_usable_lba = t.first_usable_lba;
    gpt.header.last_usable_lba = t.last_usable_lba;
    for p in &t.partitions {
        if p.number == 0 || p.number > gpt.header.number_of_partition_entries {
            bail!("partition number {} is out of range", p.number);
        }
        gpt[p.number] = gptman::GPTPartitionEntry {
            partition_type_guid: guid_bytes(&p.type_guid)?,
            unique_partition_guid: guid_bytes(&p.unique_guid)?,
            starting_lba: p.first_lba,
            ending_lba: p.last_lba,
            attribute_bits: p.attributes,
            partition_name: p.name.as_str().into(),
        };
    }
    // Clear what may remain of an old table at both ends, then write.
    gptman::GPT::write_protective_mbr_into(f, sector).context("writing the protective MBR")?;
    gpt.write_into(f).context("writing the GPT")?;
    Ok(())
}

fn write_mbr(f: &mut File, t: &MbrTable, sector: u64) -> Result<()> {
    let mut mbr = mbrman::MBR::new_from(f, sector as u32, t.disk_signature.to_le_bytes())
        .context("preparing the MBR")?;
    let mut logicals: Vec<_> = t
        .partitions
        .iter()
        .filter(|p| p.kind == MbrKind::Logical)
        .collect();
    logicals.sort_by_key(|p| p.first_lba);
    for p in t.partitions.iter().filter(|p| p.kind != MbrKind::Logical) {
        if !(1..=4).contains(&p.number) {
            bail!("primary partition number {} is out of range", p.number);
        }
        mbr[p.number as usize] = mbrman::MBRPartitionEntry {
            boot: if p.bootable {
                mbrman::BOOT_ACTIVE
            } else {
                mbrman::BOOT_INACTIVE
            },
            first_chs: mbrman::CHS::empty(),
            sys: p.type_byte,
            last_chs: mbrman::CHS::empty(),
            starting_lba: u32::try_from(p.first_lba)
                .context("partition start beyond MBR's 2 TiB limit")?,
            sectors: u32::try_from(p.sectors).context("partition size beyond MBR's 2 TiB limit")?,
        };
    }
    let ext_start = t
        .partitions
        .iter()
        .find(|p| p.kind == MbrKind::Extended)
        .map(|p| p.first_lba as u32);
    let mut prev_end: Option<u32> = None;
    for (i, p) in logicals.iter().enumerate() {
        let start = p.first_lba as u32;
        let sectors = p.sectors as u32;
        // The EBR of each logical partition sits just before it: the first at
        // the start of the extended partition, the others right after the
        // previous logical partition.
        let ebr = match (i, ext_start, prev_end) {
            (0, Some(e), _) => e,
            (_, _, Some(end)) => end,
            _ => bail!(
                "logical partition {} without an extended partition",
                p.number
            ),
        };
        if ebr >= start {
            bail!("no room for the EBR of logical partition {}", p.number);
        }
        mbr.logical_partitions.push(mbrman::LogicalPartition {
            partition: mbrman::MBRPartitionEntry {
                boot: if p.bootable {
                    mbrman::BOOT_ACTIVE
                } else {
                    mbrman::BOOT_INACTIVE
                },
                first_chs: mbrman::CHS::empty(),
                sys: p.type_byte,
                last_chs: mbrman::CHS::empty(),
                starting_lba: start,
                sectors,
            },
            absolute_ebr_lba: ebr,
            ebr_sectors: (i > 0).then_some(start + sectors - ebr),
            ebr_first_chs: mbrman::CHS::empty(),
            ebr_last_chs: (i > 0).then(mbrman::CHS::empty),
            bootstrap_code: [0; 446],
        });
        prev_end = Some(start + sectors);
    }
    // A GPT backup header at the end of a reused disk would make tools see
    // a damaged GPT: clear the last 33 sectors.
    let size = f.seek(SeekFrom::End(0))?;
    let tail = (33 * sector).min(size);
    f.seek(SeekFrom::Start(size - tail))?;
    f.write_all(&vec![0u8; tail as usize])?;
    mbr.write_into(f).context("writing the MBR")?;
    Ok(())
}

/// Writes `table` on `disk` (opened exclusively) through the gate.
pub fn write_table_on(disk: &str, table: &PartitionTable, gate: &Gate) -> Result<()> {
    let kind = match table {
        PartitionTable::Gpt(_) => "GPT",
        PartitionTable::Mbr(_) => "MBR",
    };
    if gate.allow(format_args!("write the {kind} partition table on {disk}")) {
        let mut f = open_exclusive(disk)?;
        write_table(&mut f, table)
            .with_context(|| format!("writing the partition table of {disk}"))?;
    }
    Ok(())
}

/// The partition device paths a table creates on `disk`.
pub fn partition_devices(disk: &str, table: &PartitionTable) -> Vec<String> {
    match table {
        PartitionTable::Gpt(g) => g
            .partitions
            .iter()
            .map(|p| partition_path(disk, p.number))
            .collect(),
        PartitionTable::Mbr(m) => m
            .partitions
            .iter()
            .filter(|p| p.kind != MbrKind::Extended)
            .map(|p| partition_path(disk, p.number))
            .collect(),
    }
}

/// Makes the kernel re-read the partition table of `disk` and waits until
/// every partition's device node exists (no fixed sleeps: polls with a
/// deadline). Falls back to partx, which adds partitions from user space,
/// where the kernel has no partition parser for the device.
pub fn reread_and_wait(disk: &str, devices: &[String], gate: &Gate) -> Result<()> {
    if !gate.allow(format_args!("re-read the partition table of {disk}")) {
        return Ok(());
    }
    if let Ok(f) = File::open(disk) {
        // SAFETY: BLKRRPART takes no argument.
        let _ = unsafe { blkrrpart(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    }
    let all_present = || devices.iter().all(|d| is_block_device(d));
    if wait_until(Duration::from_secs(3), all_present) {
        return Ok(());
    }
    for how in ["-u", "-a"] {
        Cmd::new("partx")
            .args([how, disk])
            .ok_codes(&[1])
            .mutating(gate)
            .run()?;
    }
    if wait_until(Duration::from_secs(15), all_present) {
        return Ok(());
    }
    let missing: Vec<&str> = devices
        .iter()
        .filter(|d| !is_block_device(d))
        .map(String::as_str)
        .collect();
    bail!(
        "the kernel shows no device node for {} after writing the partition table of {disk}",
        missing.join(", ")
    )
}

pub fn is_block_device(path: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Polls `ready` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if ready() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the partition table on `disk` back into the model (for resume and
/// verification): `None` when there is none.
pub fn read_table(disk: &Path) -> Result<Option<PartitionTable>> {
    let f = File::open(disk).with_context(|| format!("opening {}", disk.display()))?;
    let sector = sector_size(&f) as u32;
    crate::layout::probe::ptable::read_path(disk, Some(sector))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{GptPartition, MbrPartition};

    fn gpt_table() -> GptTable {
        let sectors: u64 = 64 * 2048;
        GptTable {
            disk_guid: "4e5f6a7b-0001-4abc-8def-0123456789ab".into(),
            first_usable_lba: 34,
            last_usable_lba: sectors - 34,
            partition_entry_lba: 2,
            num_partition_entries: 128,
            partition_entry_size: 128,
            problems: vec![],
            partitions: vec![
                GptPartition {
                    number: 1,
                    device: "x1".into(),
                    first_lba: 2048,
                    last_lba: 4095,
                    size_bytes: 1 << 20,
                    type_guid: "21686148-6449-6e6f-744e-656564454649".into(),
                    unique_guid: "aaaaaaaa-bbbb-4ccc-8ddd-000000000001".into(),
                    name: "bios".into(),
                    attributes: 1 << 2,
                },
                GptPartition {
                    number: 3,
                    device: "x3".into(),
                    first_lba: 4096,
                    last_lba: sectors - 34,
                    size_bytes: (sectors - 34 - 4096 + 1) * 512,
                    type_guid: "0fc63daf-8483-4772-8e79-3d69d8477de4".into(),
                    unique_guid: "aaaaaaaa-bbbb-4ccc-8ddd-000000000003".into(),
                    name: "root fs".into(),
                    attributes: 0,
                },
            ],
        }
    }

    /// A 64 MiB image file of zeros, open for reading and writing.
    fn blank_image(dir: &Path, name: &str) -> (std::path::PathBuf, File) {
        let img = dir.join(name);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&img)
            .unwrap();
        f.set_len(64 << 20).unwrap();
        (img, f)
    }

    #[test]
    fn gpt_written_in_rust_reads_back_exactly_with_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let (img, mut f) = blank_image(dir.path(), "disk.img");
        let t = gpt_table();
        write_table(&mut f, &PartitionTable::Gpt(t.clone())).unwrap();
        drop(f);
        let dump = Cmd::new("sfdisk").arg("-d").arg(&img).read().unwrap();
        let expected = format!(
            "label: gpt\nlabel-id: 4E5F6A7B-0001-4ABC-8DEF-0123456789AB\ndevice: {img}\nunit: sectors\n\
             first-lba: 34\nlast-lba: 131038\nsector-size: 512\n\n\
             {img}1 : start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid=AAAAAAAA-BBBB-4CCC-8DDD-000000000001, name=\"bios\", attrs=\"LegacyBIOSBootable\"\n\
             {img}3 : start=        4096, size=      126943, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=AAAAAAAA-BBBB-4CCC-8DDD-000000000003, name=\"root fs\"\n",
            img = img.display()
        );
        assert_eq!(dump, expected);
        let verify = Cmd::new("sgdisk").arg("-v").arg(&img).read().unwrap();
        assert!(verify.contains("No problems found"), "{verify}");
        // And our own reader gives the model back.
        match read_table(&img).unwrap() {
            Some(PartitionTable::Gpt(back)) => {
                assert_eq!(back.disk_guid, t.disk_guid);
                let strip = |ps: &[GptPartition]| {
                    ps.iter()
                        .map(|p| {
                            (
                                p.number,
                                p.first_lba,
                                p.last_lba,
                                p.type_guid.clone(),
                                p.unique_guid.clone(),
                                p.name.clone(),
                                p.attributes,
                            )
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(strip(&back.partitions), strip(&t.partitions));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mbr_with_logical_partitions_reads_back_with_sfdisk() {
        let dir = tempfile::tempdir().unwrap();
        let (img, mut f) = blank_image(dir.path(), "mbr.img");
        let p = |number, kind, first_lba, sectors, type_byte, bootable| MbrPartition {
            number,
            device: String::new(),
            kind,
            first_lba,
            sectors,
            size_bytes: sectors * 512,
            type_byte,
            bootable,
        };
        let t = MbrTable {
            disk_signature: 0x1a2b3c4d,
            partitions: vec![
                p(1, MbrKind::Primary, 2048, 20480, 0x83, true),
                p(2, MbrKind::Extended, 22528, 108544, 0x05, false),
                p(5, MbrKind::Logical, 24576, 40960, 0x82, false),
                p(6, MbrKind::Logical, 67584, 63488, 0x8e, false),
            ],
        };
        write_table(&mut f, &PartitionTable::Mbr(t)).unwrap();
        drop(f);
        let dump = Cmd::new("sfdisk").arg("-d").arg(&img).read().unwrap();
        let i = img.display();
        for line in [
            "label: dos".to_string(),
            "label-id: 0x1a2b3c4d".to_string(),
            format!("{i}1 : start=        2048, size=       20480, type=83, bootable"),
            format!("{i}2 : start=       22528, size=      108544, type=5"),
            format!("{i}5 : start=       24576, size=       40960, type=82"),
            format!("{i}6 : start=       67584, size=       63488, type=8e"),
        ] {
            assert!(dump.contains(&line), "missing {line:?} in\n{dump}");
        }
        match read_table(&img).unwrap() {
            Some(PartitionTable::Mbr(m)) => {
                assert_eq!(m.disk_signature, 0x1a2b3c4d);
                assert_eq!(m.partitions.len(), 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn guid_text_round_trip() {
        let g = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
        let b = guid_bytes(g).unwrap();
        assert_eq!(b[0], 0x28, "first field little-endian");
        assert_eq!(crate::layout::probe::ptable::guid_text(&b), g);
        assert!(guid_bytes("nope").is_err());
    }
}
