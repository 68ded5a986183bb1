//! The plan proves itself before anything is written: every size, position
//! and sector constraint is checked against the disks present (sysfs and the
//! kernel's own sector size), and every mkfs and mkswap runs in its no-write
//! mode (or onto a sparse file of the planned size) with the new disk's
//! sector size given explicitly. What `plan` accepts, `recover` can do.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::mkfs;
use crate::layout::{FsParams, GptTable, MbrKind, MbrTable, PartitionTable};
use crate::plan::mapping::DiskPair;
use crate::plan::{sectors, Plan, Step, TargetDisk};
use crate::util::human_bytes;

/// What was proven, for the plan's last line and the benchmark.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Proof {
    /// Partition tables and other constraints checked.
    pub constraints: usize,
    /// mkfs and mkswap commands run in their no-write mode.
    pub tools: usize,
    pub seconds: f64,
}

impl Proof {
    pub fn describe(&self) -> String {
        format!(
            "Checked before any write: {} constraints on the disks present, {} mkfs/mkswap \
             commands in their no-write mode ({:.2} s)",
            self.constraints, self.tools, self.seconds
        )
    }
}

/// Proves `plan` on `targets`; an error lists every problem found.
pub fn prove(plan: &Plan, targets: &[TargetDisk]) -> Result<Proof> {
    let started = Instant::now();
    let sectors = sectors::device_sectors(plan)?;
    let (constraints, mut problems) = constraints(plan, targets, &sectors);
    let mut tools = 0;
    if problems.is_empty() {
        let (n, p) = run_tools(plan, &sectors)?;
        tools = n;
        problems = p;
    }
    if !problems.is_empty() {
        bail!(
            "the plan cannot be carried out on these disks (nothing was written):\n  - {}",
            problems.join("\n  - ")
        );
    }
    Ok(Proof {
        constraints,
        tools,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The constraints `plan` must meet on `targets`: (how many were checked,
/// the problems found).
pub fn constraints(
    plan: &Plan,
    targets: &[TargetDisk],
    sectors: &BTreeMap<String, u32>,
) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut n = 0;
    for pair in &plan.disks {
        n += 1;
        problems.extend(disk_problem(pair, targets));
    }
    for step in &plan.steps {
        let sector = |dev: &str| sectors.get(dev).copied().unwrap_or(512);
        match step {
            Step::Partition { disk, table, .. } => {
                n += 1;
                let Some(pair) = plan.disks.iter().find(|p| &p.new == disk) else {
                    continue;
                };
                let s = u64::from(pair.new_sector_size.max(512));
                problems.extend(match table {
                    PartitionTable::Gpt(g) => gpt_problems(disk, g, s, pair.new_size_bytes),
                    PartitionTable::Mbr(m) => mbr_problems(disk, m, s, pair.new_size_bytes),
                });
            }
            Step::FormatLuks { luks, .. } => {
                n += 1;
                let s = sector(&luks.device);
                if luks
                    .data_offset_bytes
                    .is_some_and(|o| o % u64::from(s) != 0)
                {
                    problems.push(format!(
                        "LUKS on {}: its data offset is not a whole number of {s}-byte sectors",
                        luks.device
                    ));
                }
                if luks.version >= 2 && luks.sector_size.is_some_and(|l| l < s) {
                    problems.push(format!(
                        "LUKS2 on {}: sector size {} is smaller than the disk's {s}-byte sectors",
                        luks.device,
                        luks.sector_size.unwrap_or(0)
                    ));
                }
            }
            Step::Mkfs { fs } => {
                n += 1;
                let s = sector(&fs.device);
                let small = match &fs.params {
                    FsParams::Ext { block_size, .. } => Some(("block size", *block_size)),
                    FsParams::Xfs { sector_size, .. } => Some(("sector size", *sector_size)),
                    FsParams::Vfat { sector_size, .. } => Some(("sector size", *sector_size)),
                    _ => None,
                };
                if let Some((what, v)) = small.filter(|(_, v)| *v < s) {
                    problems.push(format!(
                        "{} on {}: {what} {v} is smaller than the disk's {s}-byte sectors",
                        fs.fstype, fs.device
                    ));
                }
            }
            _ => {}
        }
    }
    (n, problems)
}

/// The new disk is present with the size and sector size the plan used,
/// and the kernel agrees on the sector size.
fn disk_problem(pair: &DiskPair, targets: &[TargetDisk]) -> Option<String> {
    let Some(t) = targets.iter().find(|t| t.path == pair.new) else {
        return Some(format!("{} is not among the disks present", pair.new));
    };
    if t.size_bytes != pair.new_size_bytes || t.logical_sector_size != pair.new_sector_size {
        return Some(format!(
            "{}: the plan was made for {} with {}-byte sectors, the disk has {} with {}-byte sectors",
            pair.new,
            human_bytes(pair.new_size_bytes),
            pair.new_sector_size,
            human_bytes(t.size_bytes),
            t.logical_sector_size
        ));
    }
    let kernel = kernel_sector_size(Path::new(&pair.new))?;
    (kernel != pair.new_sector_size).then(|| {
        format!(
            "{}: sysfs says {}-byte sectors, the kernel {kernel}; the plan cannot tell which to use",
            pair.new, pair.new_sector_size
        )
    })
}

/// BLKSSZGET of a block device (`None` for anything else).
fn kernel_sector_size(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    let f = std::fs::File::open(path).ok()?;
    Some(super::disk::sector_size(&f) as u32)
}

fn gpt_problems(disk: &str, g: &GptTable, sector: u64, size: u64) -> Vec<String> {
    let total = size / sector;
    let entries =
        (u64::from(g.num_partition_entries) * u64::from(g.partition_entry_size)).div_ceil(sector);
    let mut out = Vec::new();
    if g.first_usable_lba < 2 + entries || g.last_usable_lba + 2 + entries > total {
        out.push(format!(
            "{disk}: GPT usable range {}-{} does not leave room for the headers on {total} \
             sectors of {sector} bytes",
            g.first_usable_lba, g.last_usable_lba
        ));
    }
    let mut spans: Vec<(u64, u64, String)> = Vec::new();
    for p in &g.partitions {
        if p.first_lba < g.first_usable_lba
            || p.last_lba > g.last_usable_lba
            || p.last_lba < p.first_lba
        {
            out.push(format!(
                "{}: LBA {}-{} is outside the usable range {}-{} of {disk}",
                p.device, p.first_lba, p.last_lba, g.first_usable_lba, g.last_usable_lba
            ));
        }
        if (p.last_lba + 1 - p.first_lba.min(p.last_lba + 1)) * sector != p.size_bytes {
            out.push(format!(
                "{}: {} bytes is not LBA {}-{} in {sector}-byte sectors",
                p.device, p.size_bytes, p.first_lba, p.last_lba
            ));
        }
        spans.push((p.first_lba, p.last_lba + 1, p.device.clone()));
    }
    out.extend(overlaps(&mut spans));
    out
}

fn mbr_problems(disk: &str, m: &MbrTable, sector: u64, size: u64) -> Vec<String> {
    let end = (size / sector).min(1 << 32);
    let mut out = Vec::new();
    let mut primaries = Vec::new();
    let mut logicals = Vec::new();
    let ext = m.partitions.iter().find(|p| p.kind == MbrKind::Extended);
    for p in &m.partitions {
        let span = (p.first_lba, p.first_lba + p.sectors, p.device.clone());
        if p.first_lba == 0 || span.1 > end || p.sectors * sector != p.size_bytes {
            out.push(format!(
                "{}: LBA {}+{} ({} bytes) does not fit {disk} ({end} addressable sectors of {sector} bytes)",
                p.device, p.first_lba, p.sectors, p.size_bytes
            ));
        }
        if p.kind == MbrKind::Logical {
            if !ext.is_some_and(|e| p.first_lba > e.first_lba && span.1 <= e.first_lba + e.sectors)
            {
                out.push(format!("{}: outside its extended partition", p.device));
            }
            logicals.push(span);
        } else {
            primaries.push(span);
        }
    }
    out.extend(overlaps(&mut primaries));
    out.extend(overlaps(&mut logicals));
    out
}

/// Half-open spans that overlap, named.
fn overlaps(spans: &mut [(u64, u64, String)]) -> Vec<String> {
    spans.sort();
    spans
        .windows(2)
        .filter(|w| w[1].0 < w[0].1)
        .map(|w| format!("{} and {} overlap", w[0].2, w[1].2))
        .collect()
}

/// Runs every mkfs and mkswap of the plan in its no-write mode against
/// sparse files of the planned sizes. Returns (commands run, problems).
fn run_tools(plan: &Plan, sectors: &BTreeMap<String, u32>) -> Result<(usize, Vec<String>)> {
    let dir = tempfile::Builder::new()
        .prefix("lifeboat-plan-check.")
        .tempdir()
        .context("creating a temporary folder for the plan's mkfs checks")?;
    let mut problems = Vec::new();
    let mut n = 0;
    for (i, step) in plan.steps.iter().enumerate() {
        let (cmd, what, device, size) = match step {
            Step::Mkfs { fs } => {
                let count = match &fs.params {
                    FsParams::Btrfs { devices, .. } => devices.len().max(1),
                    _ => 1,
                };
                let files = (0..count)
                    .map(|k| sparse_file(dir.path(), &format!("{i}-{k}.img"), fs.size_bytes))
                    .collect::<Result<Vec<_>>>()?;
                let sector = sectors.get(&fs.device).copied().unwrap_or(512);
                let what = format!(
                    "{} {}",
                    fs.fstype,
                    fs.mountpoints.first().unwrap_or(&fs.device)
                );
                (
                    mkfs::mkfs_check_command(fs, sector, &files),
                    what,
                    &fs.device,
                    fs.size_bytes,
                )
            }
            Step::Mkswap { swap } => {
                let file = sparse_file(dir.path(), &format!("{i}.img"), swap.size_bytes)?;
                let mut s = swap.clone();
                s.device = file;
                (
                    mkfs::mkswap_command(&s),
                    "swap".to_string(),
                    &swap.device,
                    swap.size_bytes,
                )
            }
            _ => continue,
        };
        n += 1;
        let sector = sectors.get(device).copied().unwrap_or(512);
        // A missing tool is an error of its own: recover would need it too.
        let out = cmd.output_any()?;
        if out.code != 0 {
            problems.push(format!(
                "{what} on {device} ({}, {sector}-byte sectors): `{cmd}` refuses: {}",
                human_bytes(size),
                refusal(&out.stderr)
            ));
        }
        clear_dir(dir.path())?;
    }
    Ok((n, problems))
}

/// The tool's reason, without the usage text some tools print after it.
fn refusal(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(4)
        .collect();
    if lines.is_empty() {
        crate::exec::tail(stderr, 4)
    } else {
        lines.join(" | ")
    }
}

/// A sparse file of `size` bytes (mode 0600, as mkswap wants).
fn sparse_file(dir: &Path, name: &str, size: u64) -> Result<String> {
    let path = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {} to {size} bytes", path.display()))?;
    Ok(path.display().to_string())
}

/// Removes the check files (a FAT or btrfs check wrote real blocks).
fn clear_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Filesystem, GptPartition, MbrPartition, Swap};

    const MIB: u64 = 1 << 20;

    fn plan_of(steps: Vec<Step>) -> Plan {
        Plan {
            hostname: "h".into(),
            layout_captured_at: String::new(),
            disks: vec![],
            sizes: vec![],
            renames: Default::default(),
            steps,
            floors: vec![],
            adjustments: vec![],
            warnings: vec![],
            errors: vec![],
        }
    }

    fn fs(fstype: &str, size: u64, params: FsParams) -> Filesystem {
        Filesystem {
            device: "/dev/vdb2".into(),
            fstype: fstype.into(),
            uuid: Some("0b6a3c8e-1111-4222-8333-944455556666".into()),
            label: Some("boot".into()),
            size_bytes: size,
            used_bytes: None,
            mountpoints: vec!["/boot".into()],
            params,
        }
    }

    fn ext(block_size: u32) -> Filesystem {
        fs(
            "ext4",
            256 * MIB,
            FsParams::Ext {
                block_size,
                inode_size: 256,
                features: vec![
                    "has_journal".into(),
                    "extent".into(),
                    "resize_inode".into(),
                    "sparse_super".into(),
                ],
                reserved_blocks_percent: 5.0,
                inode_count: 65536,
            },
        )
    }

    fn on(sector: u32) -> BTreeMap<String, u32> {
        BTreeMap::from([("/dev/vdb2".to_string(), sector)])
    }

    #[test]
    fn mke2fs_in_no_write_mode_refuses_1k_blocks_on_4k_sectors() {
        let plan = plan_of(vec![Step::Mkfs { fs: ext(1024) }]);
        let (n, problems) = run_tools(&plan, &on(4096)).unwrap();
        assert_eq!(n, 1);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("ext4 /boot on /dev/vdb2 (256.0 MiB, 4096-byte sectors): `")
                && problems[0].contains("mke2fs")
                && problems[0].contains("-n")
                && problems[0].contains("while setting blocksize"),
            "{problems:?}"
        );
        // The same file system on 512-byte sectors, or raised to 4096: fine.
        assert_eq!(run_tools(&plan, &on(512)).unwrap().1, Vec::<String>::new());
        let raised = plan_of(vec![Step::Mkfs { fs: ext(4096) }]);
        assert_eq!(
            run_tools(&raised, &on(4096)).unwrap().1,
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_tool_is_run_and_its_refusal_named() {
        let xfs = fs(
            "xfs",
            10 * MIB,
            FsParams::Xfs {
                block_size: 4096,
                sector_size: 4096,
                crc: true,
                reflink: true,
                ftype: true,
                log_size_bytes: None,
            },
        );
        let vfat = fs(
            "vfat",
            64 * MIB,
            FsParams::Vfat {
                serial: "ABCD1234".into(),
                fat_size: 16,
                sector_size: 4096,
            },
        );
        let mut bad_ext = ext(4096);
        if let FsParams::Ext { features, .. } = &mut bad_ext.params {
            features.push("meta_bg".into());
        }
        let swap = Swap {
            device: "/dev/vdb3".into(),
            is_file: false,
            uuid: Some("0b6a3c8e-1111-4222-8333-944455556667".into()),
            label: None,
            size_bytes: 64 * MIB,
            active: true,
            priority: None,
        };
        let plan = plan_of(vec![
            Step::Mkfs { fs: xfs },
            Step::Mkfs { fs: vfat },
            Step::Mkfs { fs: bad_ext },
            Step::Mkswap { swap },
        ]);
        let (n, problems) = run_tools(&plan, &on(4096)).unwrap();
        assert_eq!(n, 4);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with("xfs /boot on /dev/vdb2 (10.0 MiB"),
            "{problems:#?}"
        );
        assert!(problems[0].contains("too small"), "{problems:#?}");
        assert!(problems[1].starts_with("ext4 /boot"), "{problems:#?}");
        assert!(problems[1].contains("meta_bg"), "{problems:#?}");
    }

    #[test]
    fn parameters_below_the_sector_size_are_problems() {
        let vfat = fs(
            "vfat",
            64 * MIB,
            FsParams::Vfat {
                serial: "ABCD1234".into(),
                fat_size: 16,
                sector_size: 512,
            },
        );
        let plan = plan_of(vec![Step::Mkfs { fs: vfat }, Step::Mkfs { fs: ext(1024) }]);
        let (n, problems) = constraints(&plan, &[], &on(4096));
        assert_eq!(n, 2);
        assert_eq!(
            problems,
            [
                "vfat on /dev/vdb2: sector size 512 is smaller than the disk's 4096-byte sectors",
                "ext4 on /dev/vdb2: block size 1024 is smaller than the disk's 4096-byte sectors"
            ]
        );
        assert!(constraints(&plan, &[], &on(512)).1.is_empty());
    }

    fn gpt(parts: &[(u64, u64)]) -> GptTable {
        GptTable {
            disk_guid: "11111111-2222-4333-8444-555555555555".into(),
            first_usable_lba: 6,
            last_usable_lba: 262144 - 6,
            partition_entry_lba: 2,
            num_partition_entries: 128,
            partition_entry_size: 128,
            problems: vec![],
            partitions: parts
                .iter()
                .enumerate()
                .map(|(i, &(first, last))| GptPartition {
                    number: i as u32 + 1,
                    device: format!("/dev/vdb{}", i + 1),
                    first_lba: first,
                    last_lba: last,
                    size_bytes: (last - first + 1) * 4096,
                    type_guid: String::new(),
                    unique_guid: String::new(),
                    name: String::new(),
                    attributes: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn gpt_positions_are_checked_in_the_new_sectors() {
        // 1 GiB of 4 KiB sectors.
        let size = 262144 * 4096;
        let good = gpt(&[(256, 65791), (65792, 262143 - 6)]);
        assert!(gpt_problems("/dev/vdb", &good, 4096, size).is_empty());
        // The same LBAs on a disk of 512-byte sectors are past its end.
        assert!(!gpt_problems("/dev/vdb", &good, 512, size / 8).is_empty());
        let bad = gpt(&[(256, 70000), (65792, 262143)]);
        let p = gpt_problems("/dev/vdb", &bad, 4096, size);
        assert_eq!(
            p,
            [
                "/dev/vdb2: LBA 65792-262143 is outside the usable range 6-262138 of /dev/vdb",
                "/dev/vdb1 and /dev/vdb2 overlap"
            ]
        );
    }

    #[test]
    fn mbr_limits_and_logical_partitions() {
        let part = |n: u32, kind, first: u64, sectors: u64| MbrPartition {
            number: n,
            device: format!("/dev/sdb{n}"),
            kind,
            first_lba: first,
            sectors,
            size_bytes: sectors * 512,
            type_byte: 0x83,
            bootable: false,
        };
        let t = MbrTable {
            disk_signature: 1,
            partitions: vec![
                part(1, MbrKind::Primary, 2048, 2048),
                part(2, MbrKind::Extended, 4096, 8192),
                part(5, MbrKind::Logical, 6144, 4096),
                part(6, MbrKind::Logical, 10240, 4096),
            ],
        };
        assert_eq!(
            mbr_problems("/dev/sdb", &t, 512, 64 * MIB),
            ["/dev/sdb6: outside its extended partition"]
        );
        let big = MbrTable {
            disk_signature: 1,
            partitions: vec![part(1, MbrKind::Primary, 2048, u64::from(u32::MAX))],
        };
        assert_eq!(mbr_problems("/dev/sdb", &big, 512, 4 << 40).len(), 1);
    }
}
