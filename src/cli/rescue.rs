//! `lifeboat mkrescue` and the hidden helpers the rescue system's init uses.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::config::{Choice, Config};
use crate::rescue::{self, Compression};
use crate::util;

#[derive(Debug, Args)]
pub struct MkrescueArgs {
    /// Kernel image to boot [default: rescue.kernel, else the running
    /// kernel's image in /boot, else the newest /boot/vmlinuz-*].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Folder for vmlinuz, initrd and lifeboat-rescue.iso [default:
    /// rescue.output, else /var/lib/lifeboat/rescue].
    #[arg(long, short, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Layout to build in (its drivers are added to the image and recovery
    /// finds it at /etc/lifeboat/layout.json) [default: rescue.layout].
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,

    /// Compression of the initrd: zstd (level 9, seconds), zstd-small
    /// (level 19: about 3.6 MB smaller, 30-45 s per build on two cores) or gzip
    /// [default: rescue.compression, else zstd].
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,

    /// Extra kernel argument for every boot entry (repeatable; replaces
    /// rescue.append), e.g. lifeboat.net=dhcp.
    #[arg(long, value_name = "ARG")]
    pub append: Vec<String>,

    /// Extra program to ship with its libraries (repeatable; name or path;
    /// replaces rescue.add_programs).
    #[arg(long, value_name = "PROGRAM")]
    pub add_program: Vec<String>,

    /// Build only vmlinuz and initrd (for PXE), no ISO (rescue.iso = false).
    #[arg(long)]
    pub no_iso: bool,

    /// Put the newest generation of this backup folder (with its chain) on
    /// the ISO, where recovery finds it by itself (small systems).
    #[arg(long, value_name = "DIR")]
    pub include_backup: Option<PathBuf>,

    /// Copy the LUKS header backups named in the layout into the image.
    /// A header backup opens its volume with any passphrase valid when it
    /// was taken: whoever has the image (ISO, PXE) has that power.
    #[arg(long)]
    pub include_luks_headers: bool,

    /// Public keys (authorized_keys format) that may log in as root over
    /// SSH when the rescue boots with lifeboat.ssh; puts an SSH server into
    /// the image [default: rescue.ssh_authorized_keys].
    #[arg(long, value_name = "FILE")]
    pub ssh_authorized_keys: Option<PathBuf>,
    /// The SSH server put into the image: auto (dropbear when installed,
    /// else OpenSSH), dropbear or openssh [default: rescue.ssh_server].
    #[arg(long, value_name = "SERVER")]
    pub ssh_server: Option<crate::rescue::ssh::SshServerChoice>,
    /// Look up the signed shim and GRUB (usr/lib/shim/shimx64.efi.signed,
    /// usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed) under DIR instead
    /// of / (e.g. shim-signed and grub-efi-amd64-signed unpacked there
    /// with dpkg-deb -x) [default: rescue.secure_boot_root].
    #[arg(long, value_name = "DIR")]
    pub secure_boot_root: Option<PathBuf>,
    /// Build nothing: copy the image already in the output folder to
    /// rescue.destination again (after fixing the share or the server).
    /// Exit 2 when the copy fails.
    #[arg(long, conflicts_with_all = ["usb", "pxe", "include_backup"])]
    pub copy_only: bool,
    #[command(flatten)]
    pub media: super::media::MediaArgs,
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
    /// Configure the network (the layout's, or lifeboat.net=) and print
    /// the addresses.
    NetUp {
        #[arg(long, default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        #[arg(long, default_value = "/etc/lifeboat/layout.json")]
        layout: PathBuf,
        #[arg(long, default_value = "/sys")]
        sys: PathBuf,
        /// Print what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Generate SSH host keys, start the SSH server, print fingerprints.
    SshUp,
    /// Write the man pages (lifeboat.8, lifeboat-SUBCOMMAND.8) into DIR.
    ManPages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write the bash, zsh and fish completions into DIR (bash/lifeboat.bash,
    /// zsh/_lifeboat, fish/lifeboat.fish).
    Completions {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Write the systemd units the package ships (snapshot and drill
    /// service and timer, the notification template) into DIR, running
    /// the lifeboat at PATH.
    SystemdUnits {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_name = "PATH", default_value = "/usr/sbin/lifeboat")]
        program: String,
    },
}

pub fn mkrescue(args: MkrescueArgs, cfg: &Config) -> Result<u8> {
    let mut c = cfg.clone();
    let r = &mut c.rescue;
    r.kernel.flag_some(args.kernel, "--kernel");
    r.output.flag(args.output, "--output");
    r.layout.flag_some(args.layout, "--layout");
    r.compression
        .flag(args.compression.map(Choice), "--compression");
    r.append.flag_list(args.append, "--append");
    r.add_programs.flag_list(args.add_program, "--add-program");
    r.iso.flag(args.no_iso.then_some(false), "--no-iso");
    r.ssh_authorized_keys
        .flag_some(args.ssh_authorized_keys, "--ssh-authorized-keys");
    r.ssh_server
        .flag(args.ssh_server.map(Choice), "--ssh-server");
    r.secure_boot_root
        .flag_some(args.secure_boot_root, "--secure-boot-root");
    let opts = rescue::Options {
        include_backup: args.include_backup,
        include_luks_headers: args.include_luks_headers,
        ..crate::schedule::run::rescue_options(&c, c.rescue.layout.value.as_deref())
    };
    if args.copy_only {
        return copy_only(&c, &opts.output);
    }
    let Some(opts) = super::media::before_build(&args.media, opts)? else {
        return Ok(0);
    };
    let rec = rescue::mkrescue(&opts)?;
    println!(
        "rescue image for kernel {} built in {:.1}s: {} programs, {} libraries, {} modules, {} firmware files",
        rec.kernel_version, rec.build_seconds, rec.programs, rec.libraries, rec.modules, rec.firmware_files
    );
    for f in &rec.files {
        println!(
            "  {:<40} {:>10}",
            opts.output.join(&f.name).display(),
            util::human_bytes(f.bytes)
        );
    }
    if let Some(l) = &rec.layout {
        println!("  layout built in: {l}");
    }
    if let Some(sb) = &rec.secure_boot {
        println!("  {}", sb.summary());
    }
    // A failed copy is a warning (logged, sent as a notice); the image stays.
    if let Some(Ok(copied)) = rescue::copy::after_build(&c, &opts.output, &rec) {
        println!("  copied to {}: {}", copied.destination, copied.name);
    }
    super::media::after_build(&args.media, &opts, &rec)?;
    Ok(0)
}

/// `mkrescue --copy-only`: the image in `output` as recorded in its
/// rescue.json, copied to rescue.destination (recorded, and a failure sent
/// as a notice, as after a build).
fn copy_only(cfg: &Config, output: &std::path::Path) -> Result<u8> {
    let rec = rescue::BuildRecord::load(output)
        .with_context(|| format!("no rescue image to copy in {}", output.display()))?;
    match rescue::copy::after_build(cfg, output, &rec) {
        None => anyhow::bail!(
            "rescue.destination is not set: nothing to copy the image in {} to",
            output.display()
        ),
        Some(Ok(copied)) => {
            println!(
                "rescue image of {} copied to {}: {}",
                rec.built_at,
                copied.destination,
                copied.summary()
            );
            Ok(0)
        }
        Some(Err(e)) => Err(e.context(format!(
            "copying the rescue image in {} failed (the image is kept)",
            output.display()
        ))),
    }
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
        InternalCmd::NetUp {
            cmdline,
            layout,
            sys,
            dry_run,
        } => {
            let text = std::fs::read_to_string(&cmdline)
                .with_context(|| format!("reading {}", cmdline.display()))?;
            let layout = match layout.exists() {
                true => Some(crate::layout::Layout::load(&layout)?),
                false => None,
            };
            for line in rescue::net::net_up(&text, layout.as_ref(), &sys, dry_run)? {
                println!("{line}");
            }
            Ok(0)
        }
        InternalCmd::SshUp => {
            let mut addresses: Vec<String> = Vec::new();
            for (_, a) in rescue::net::addresses_now()? {
                let a = a.address.to_string();
                if !addresses.contains(&a) {
                    addresses.push(a);
                }
            }
            for line in rescue::ssh::ssh_up(&addresses)? {
                println!("{line}");
            }
            Ok(0)
        }
        InternalCmd::ManPages { dir } => {
            for p in super::man_pages(&dir)? {
                println!("{}", p.display());
            }
            Ok(0)
        }
        InternalCmd::Completions { dir } => {
            for p in super::completions(&dir)? {
                println!("{}", p.display());
            }
            Ok(0)
        }
        InternalCmd::SystemdUnits { dir, program } => {
            for p in crate::schedule::units::write_shipped(&dir, &program, super::has_page)? {
                println!("{}", p.display());
            }
            Ok(0)
        }
    }
}
