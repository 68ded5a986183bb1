//! `lifeboat drill`: the recovery drill in a QEMU guest.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;

use crate::config::Config;
use crate::drill::{self, machine::FirmwareChoice, machine::SizeRequest, qemu::AccelChoice};
use crate::util;

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Rescue image folder [default: rescue.output].
    #[arg(long, value_name = "DIR")]
    pub rescue: Option<PathBuf>,

    /// Backup folder, or nfs://host/export/path, cifs://... (mounted by the
    /// guest) [default: backup.destination].
    #[arg(long, value_name = "DEST")]
    pub backup: Option<String>,

    /// Layout to drill [default: the layout built into the rescue image].
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,

    /// Generation to restore [default: the newest].
    #[arg(long, value_name = "ID")]
    pub generation: Option<String>,

    /// Size of the scratch disk standing for DISK (name, path or serial of
    /// the layout), e.g. vda=20G (repeatable) [default: the original size].
    #[arg(long = "disk-size", value_name = "DISK=SIZE")]
    pub disk_size: Vec<String>,

    /// Firmware of the rescue boot; both: one recovery under each
    /// [default: drill.firmware, else auto: the source's].
    #[arg(long, value_enum)]
    pub firmware: Option<FirmwareChoice>,

    /// KVM or TCG [default: drill.accel, else auto: KVM when a probe works].
    #[arg(long, value_enum)]
    pub accel: Option<AccelChoice>,

    /// Guest memory in MiB [default: drill.memory, else 2048].
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,

    /// Virtual CPUs [default: drill.cpus, else 2].
    #[arg(long, value_name = "N")]
    pub cpus: Option<u64>,

    /// Folder for the scratch disks [default: drill.work, else
    /// /var/tmp/lifeboat-drill].
    #[arg(long, value_name = "DIR")]
    pub work: Option<PathBuf>,

    /// Passphrase file for the LUKS containers [default: drill.key_file].
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Longest time one guest (the recovery, one boot) may run, e.g. 45m
    /// [default: drill.timeout, else 30m].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,

    /// Keep the scratch disks and print the QEMU command line that boots
    /// them.
    #[arg(long)]
    pub keep: bool,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The drill's options from the flags over the configuration.
pub fn options(args: &DrillArgs, cfg: &Config) -> Result<drill::Options> {
    let d = &cfg.drill;
    let backup = args
        .backup
        .clone()
        .or_else(|| cfg.backup.destination.value.clone())
        .context("no backup: give --backup DEST or set backup.destination in the configuration")?;
    let timeout = match &args.timeout {
        Some(t) => util::parse_duration(t).with_context(|| format!("--timeout {t:?}"))?,
        None => d.timeout.value.0,
    };
    let disk_sizes = args
        .disk_size
        .iter()
        .map(|s| SizeRequest::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let memory = args.memory.unwrap_or(d.memory.value.0);
    let cpus = args.cpus.unwrap_or(d.cpus.value.0);
    if !(256..=1 << 20).contains(&memory) || !(1..=64).contains(&cpus) {
        anyhow::bail!("--memory must be 256 to 1048576 MiB and --cpus 1 to 64");
    }
    Ok(drill::Options {
        rescue_dir: args
            .rescue
            .clone()
            .unwrap_or_else(|| cfg.rescue.output.value.clone()),
        backup,
        layout: args.layout.clone(),
        generation: args.generation.clone(),
        disk_sizes,
        firmware: args.firmware.unwrap_or(d.firmware.value.0),
        accel: args.accel.unwrap_or(d.accel.value.0),
        memory_mib: memory as u32,
        cpus: cpus as u32,
        work: args.work.clone().unwrap_or_else(|| d.work.value.clone()),
        key_file: args.key_file.clone().or_else(|| d.key_file.value.clone()),
        timeout: Duration::from_secs(timeout.max(1) as u64),
        keep: args.keep,
        state_dir: cfg.state_dir.value.clone(),
    })
}

pub fn run(args: DrillArgs, cfg: &Config) -> Result<u8> {
    let opts = options(&args, cfg)?;
    if let Some(g) = &opts.generation {
        crate::names::generation_id(g)?;
    }
    let prepared = drill::prepare(&opts)?;
    let start = Instant::now();
    let mut progress = |phase: &str, step: &str| {
        let s = start.elapsed().as_secs();
        eprintln!("drill {:>3}m{:02}s  {phase}: {step}", s / 60, s % 60);
    };
    let report = match drill::run(&opts, prepared, &mut progress) {
        Ok(r) => r,
        Err(e) => {
            if let Some(n) = crate::notify::of_drill(Err(&e), None) {
                crate::notify::send(cfg, &n);
            }
            return Err(e);
        }
    };
    let path = drill::save(&report, &opts.state_dir)?;
    if let Some(n) = crate::notify::of_drill(Ok(&report), Some(&path)) {
        crate::notify::send(cfg, &n);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
        println!("report: {}", path.display());
    }
    Ok(drill::exit_code(&report))
}
