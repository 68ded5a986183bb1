//! `lifeboat layout save|show|diff|check|schema`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::layout::{self, show, CaptureOptions, Change, Layout};
use crate::util;

#[derive(Debug, Subcommand)]
pub enum LayoutCmd {
    /// Capture the storage and boot layout of this machine and save it.
    Save(SaveArgs),
    /// Show a saved layout as a tree (like lsblk), or as JSON.
    Show {
        /// Layout file; `-` captures the running system instead [default:
        /// capture.layout_file, else /var/lib/lifeboat/layout.json].
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        /// Print the layout as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare two layouts by identity. Exit 0: same, 1: different,
    /// 2: error.
    Diff {
        #[arg(value_name = "OLD")]
        old: PathBuf,
        #[arg(value_name = "NEW")]
        new: PathBuf,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare the running system with the saved layout. Exit 0: same,
    /// 1: different, 2: error.
    Check {
        /// The saved layout [default: capture.layout_file, else
        /// /var/lib/lifeboat/layout.json].
        #[arg(long, value_name = "FILE")]
        against: Option<PathBuf>,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of the layout format.
    Schema,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Where to write the layout (the previous one is kept as FILE.prev)
    /// [default: capture.layout_file, else /var/lib/lifeboat/layout.json].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also back up each LUKS header (cryptsetup luksHeaderBackup) beside
    /// the layout, mode 0600. Anyone with a header backup and an old
    /// passphrase can open the volume: keep these files safe
    /// (capture.luks_headers).
    #[arg(long)]
    pub luks_headers: bool,
    /// Mark a disk needed whatever was found on it (repeatable; /dev/sdX,
    /// kernel name, serial, WWN or by-id name; replaces
    /// capture.include_disks).
    #[arg(long, value_name = "DEV")]
    pub include_disk: Vec<String>,
    /// Mark a disk not needed: recovery leaves it alone (repeatable;
    /// replaces capture.exclude_disks).
    #[arg(long, value_name = "DEV")]
    pub exclude_disk: Vec<String>,
    /// Capture only this disk and what is built on it (repeatable); loop
    /// devices of image files can be named here (replaces
    /// capture.only_disks).
    #[arg(long, value_name = "DEV")]
    pub only_disk: Vec<String>,
    /// Describe the system mounted at DIR instead of the running one (from
    /// a rescue shell: mount the system's file systems under DIR first).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

pub fn run(cmd: LayoutCmd, cfg: &Config) -> Result<u8> {
    let saved = |f: Option<PathBuf>| f.unwrap_or_else(|| cfg.capture.layout_file.value.clone());
    match cmd {
        LayoutCmd::Save(args) => save(args, cfg),
        LayoutCmd::Show { file, json } => {
            let file = saved(file);
            let l = if file == Path::new("-") {
                layout::capture(&cfg.capture_options())?
            } else {
                Layout::load(&file)?
            };
            if json {
                print!("{}", l.to_json());
            } else {
                print!("{}", show::tree(&l));
            }
            Ok(0)
        }
        LayoutCmd::Diff { old, new, json } => {
            let (a, b) = (Layout::load(&old)?, Layout::load(&new)?);
            report(&layout::diff(&a, &b), json)
        }
        LayoutCmd::Check { against, json } => {
            let saved = Layout::load(&saved(against))?;
            let live = layout::capture(&cfg.capture_options())?;
            report(&layout::diff(&saved, &live), json)
        }
        LayoutCmd::Schema => {
            print!("{}", Layout::json_schema());
            Ok(0)
        }
    }
}

pub(super) fn report(changes: &[Change], json: bool) -> Result<u8> {
    if json {
        let v = serde_json::json!({ "same": changes.is_empty(), "changes": changes });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if changes.is_empty() {
        println!("no changes");
    } else {
        for c in changes {
            println!("{c}");
        }
    }
    Ok(if changes.is_empty() { 0 } else { 1 })
}

fn save(args: SaveArgs, cfg: &Config) -> Result<u8> {
    let start = Instant::now();
    let mut c = cfg.clone();
    let k = &mut c.capture;
    k.layout_file.flag(args.output, "--output");
    k.luks_headers.flag_on(args.luks_headers, "--luks-headers");
    k.include_disks
        .flag_list(args.include_disk, "--include-disk");
    k.exclude_disks
        .flag_list(args.exclude_disk, "--exclude-disk");
    k.only_disks.flag_list(args.only_disk, "--only-disk");
    let output = c.capture.layout_file.value.clone();
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "creating {}; choose another place with --output",
            dir.display()
        )
    })?;
    let opts = CaptureOptions {
        luks_header_dir: c.capture.luks_headers.value.then(|| dir.clone()),
        system_root: match &args.root {
            Some(r) => Some(
                std::fs::canonicalize(r)
                    .with_context(|| format!("--root {}: no such folder", r.display()))?,
            ),
            None => None,
        },
        ..c.capture_options()
    };
    let l = layout::capture(&opts)?;
    let captured = start.elapsed().as_secs_f64();
    if output.exists() {
        let prev = PathBuf::from(format!("{}.prev", output.display()));
        let old = std::fs::read(&output)
            .with_context(|| format!("reading the previous layout {}", output.display()))?;
        util::write_atomic(&prev, &old, 0o600)?;
    }
    util::write_atomic(&output, l.to_json().as_bytes(), 0o600)?;
    print!("{}", show::summary(&l));
    for x in l.luks.iter().filter_map(|x| x.header_backup.as_ref()) {
        println!("LUKS header backup: {}", dir.join(x).display());
    }
    println!(
        "layout saved to {} (captured in {:.2}s)",
        output.display(),
        captured
    );
    Ok(0)
}
