//! `lifeboat mkrescue` and the hidden helpers the rescue system's init uses.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::rescue::{self, Compression};
use crate::util;

#[derive(Debug, Args)]
pub struct MkrescueArgs {
    /// Kernel image to boot [default: the running kernel's image in /boot,
    /// else the newest /boot/vmlinuz-*].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Folder for vmlinuz, initrd and lifeboat-rescue.iso.
    #[arg(long, short, value_name = "DIR", default_value = rescue::DEFAULT_OUTPUT)]
    pub output: PathBuf,

    /// Layout to build in (its drivers are added to the image and recovery
    /// finds it at /etc/lifeboat/layout.json).
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,

    /// Compression of the initrd.
    #[arg(long, value_enum, default_value = "zstd")]
    pub compression: Compression,

    /// Extra kernel argument for every boot entry (repeatable), e.g.
    /// lifeboat.net=dhcp.
    #[arg(long, value_name = "ARG")]
    pub append: Vec<String>,

    /// Extra program to ship with its libraries (repeatable; name or path).
    #[arg(long, value_name = "PROGRAM")]
    pub add_program: Vec<String>,

    /// Build only vmlinuz and initrd (for PXE), no ISO.
    #[arg(long)]
    pub no_iso: bool,

    /// Put the newest generation of this backup folder (with its chain) on
    /// the ISO, where recovery finds it by itself (small systems).
    #[arg(long, value_name = "DIR")]
    pub include_backup: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum InternalCmd {
    /// Print the value of a kernel command-line argument (exit 1 if absent).
    CmdlineArg {
        name: String,
        /// Read this file instead of /proc/cmdline.
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
    },
}

pub fn mkrescue(args: MkrescueArgs) -> Result<u8> {
    let opts = rescue::Options {
        kernel: args.kernel,
        output: args.output.clone(),
        layout: args.layout,
        compression: args.compression,
        append: args.append,
        add_programs: args.add_program,
        no_iso: args.no_iso,
        include_backup: args.include_backup,
        ..rescue::Options::default()
    };
    let rec = rescue::mkrescue(&opts)?;
    println!(
        "rescue image for kernel {} built in {:.1}s: {} programs, {} libraries, {} modules, {} firmware files",
        rec.kernel_version, rec.build_seconds, rec.programs, rec.libraries, rec.modules, rec.firmware_files
    );
    for f in &rec.files {
        println!(
            "  {:<40} {:>10}",
            args.output.join(&f.name).display(),
            util::human_bytes(f.bytes)
        );
    }
    if let Some(l) = &rec.layout {
        println!("  layout built in: {l}");
    }
    Ok(0)
}

pub fn internal(cmd: InternalCmd) -> Result<u8> {
    match cmd {
        InternalCmd::CmdlineArg { name, cmdline } => {
            let text = std::fs::read_to_string(&cmdline)?;
            match crate::rescue::cmdline::value(&text, &name) {
                Some(v) => {
                    println!("{v}");
                    Ok(0)
                }
                None => Ok(1),
            }
        }
    }
}
