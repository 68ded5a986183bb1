//! QEMU command lines of a drill (the rescue boot with the backup and the
//! job disk, the recovered machine's boot per firmware), the KVM probe, and
//! the runner that waits for a guest with a timeout while following its
//! serial console.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::machine::{Bus, ScratchDisk};
use crate::layout::Firmware;

pub const QEMU: &str = "qemu-system-x86_64";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The 9p tag of the backup folder in the rescue guest.
pub const BACKUP_TAG: &str = "lifeboat-backup";
/// The virtio serial port the recovered system reports its boot on.
pub const REPORT_PORT: &str = "org.lifeboat.drill";
/// The job disk's serial.
pub const JOB_SERIAL: &str = "LIFEBOAT-JOB";

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

/// `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM when a short probe boot works, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What the guest boots from.
#[derive(Debug, Clone, Copy)]
pub enum Media<'a> {
    /// The rescue ISO as a CD, with the job disk, and the backup folder as
    /// a read-only 9p share (or user-mode networking for NFS and CIFS).
    Rescue {
        iso: &'a Path,
        job: &'a Path,
        share: Option<&'a Path>,
        network: bool,
    },
    /// The scratch disks alone; `report` receives the boot report.
    Disks { report: Option<&'a Path> },
}

/// One guest.
#[derive(Debug, Clone, Copy)]
pub struct Guest<'a> {
    pub accel: Accel,
    pub firmware: Firmware,
    /// The NVRAM store (UEFI).
    pub vars: Option<&'a Path>,
    pub memory_mib: u32,
    pub cpus: u32,
    pub media: Media<'a>,
    pub disks: &'a [ScratchDisk],
    pub serial_log: &'a Path,
}

/// A path inside a QEMU option value (commas are doubled).
fn opt(p: &Path) -> Result<String> {
    Ok(utf8(p)?.replace(',', ",,"))
}

/// A path as QEMU takes it: UTF-8.
fn utf8(p: &Path) -> Result<&str> {
    p.to_str().with_context(|| {
        format!(
            "{} is not UTF-8; QEMU options need UTF-8 paths",
            p.display()
        )
    })
}

/// The `-device` of scratch disk `i` on its bus (`port`: its AHCI port).
fn disk_device(d: &ScratchDisk, i: usize, port: usize, bootindex: Option<usize>) -> String {
    let mut props = String::new();
    if let Some(s) = &d.serial {
        props.push_str(&format!(",serial={}", s.replace(',', ",,")));
    } else if d.bus == Bus::Nvme {
        // NVMe controllers must have a serial.
        props.push_str(&format!(",serial=LBDRILL{i}"));
    }
    if let Some(w) = d.wwn {
        props.push_str(&format!(",wwn=0x{w:016x}"));
    }
    if d.logical_sector_size != 512 || d.physical_sector_size != 512 {
        props.push_str(&format!(
            ",logical_block_size={},physical_block_size={}",
            d.logical_sector_size, d.physical_sector_size
        ));
    }
    if let Some(b) = bootindex {
        props.push_str(&format!(",bootindex={b}"));
    }
    match d.bus {
        Bus::Virtio => format!("virtio-blk-pci,drive=d{i}{props}"),
        Bus::Scsi => format!("scsi-hd,drive=d{i},bus=scsi0.0{props}"),
        Bus::Nvme => format!("nvme,drive=d{i}{props}"),
        Bus::Sata => format!("ide-hd,drive=d{i},bus=ide.{port}{props}"),
    }
}

/// The AHCI port of each SATA scratch disk: port 0 of the q35 controller
/// holds the rescue CD, the disks follow.
fn sata_ports(disks: &[ScratchDisk]) -> Vec<usize> {
    let mut next = 0;
    disks
        .iter()
        .map(|d| {
            if d.bus == Bus::Sata {
                next += 1;
            }
            next
        })
        .collect()
}

/// The job disk's `-device`: on the AHCI controller beside the CD unless
/// the scratch disks use SATA and no virtio, so that a rescue image without
/// the scratch disks' driver still reads its job and fails where it must
/// (no target disk found), not at its boot.
fn job_device(disks: &[ScratchDisk]) -> String {
    let sata = disks.iter().filter(|d| d.bus == Bus::Sata).count();
    let virtio = disks.iter().any(|d| d.bus == Bus::Virtio);
    if (sata == 0 || virtio) && sata < 5 {
        format!("ide-hd,drive=job,bus=ide.{},serial={JOB_SERIAL}", sata + 1)
    } else {
        format!("virtio-blk-pci,drive=job,serial={JOB_SERIAL}")
    }
}

/// The arguments of `qemu-system-x86_64` for `g` (without the program).
pub fn args(g: &Guest) -> Result<Vec<String>> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |v: &[&str]| a.extend(v.iter().map(|s| s.to_string()));
    push(&["-accel", g.accel.name(), "-machine", "q35"]);
    push(&["-smp", &g.cpus.to_string(), "-m", &g.memory_mib.to_string()]);
    push(&["-display", "none", "-monitor", "none", "-no-reboot"]);
    push(&["-serial", &format!("file:{}", opt(g.serial_log)?)]);
    // Entropy for cryptsetup and new UUIDs right from the start.
    push(&["-device", "virtio-rng-pci"]);
    if g.firmware == Firmware::Uefi {
        let vars = g.vars.context("a UEFI guest needs its NVRAM store")?;
        push(&[
            "-drive",
            &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
        ]);
        push(&[
            "-drive",
            &format!("if=pflash,format=raw,file={}", opt(vars)?),
        ]);
    }
    let sata = g.disks.iter().filter(|d| d.bus == Bus::Sata).count();
    if sata > 5 {
        bail!("{sata} SATA disks: the drill's machine has 5 SATA ports besides the CD");
    }
    match g.media {
        Media::Rescue {
            iso,
            job,
            share,
            network,
        } => {
            push(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=none,id=cd,media=cdrom,readonly=on",
                    opt(iso)?
                ),
            ]);
            push(&["-device", "ide-cd,drive=cd,bus=ide.0,bootindex=0"]);
            push(&[
                "-drive",
                &format!("file={},format=raw,if=none,id=job,cache=unsafe", opt(job)?),
            ]);
            push(&["-device", &job_device(g.disks)]);
            if let Some(dir) = share {
                push(&[
                    "-virtfs",
                    &format!(
                        "local,path={},mount_tag={BACKUP_TAG},security_model=none,readonly=on",
                        opt(dir)?
                    ),
                ]);
            }
            if network {
                push(&[
                    "-netdev",
                    "user,id=net0",
                    "-device",
                    "virtio-net-pci,netdev=net0",
                ]);
            } else {
                push(&["-nic", "none"]);
            }
        }
        Media::Disks { report } => {
            push(&["-nic", "none"]);
            if let Some(r) = report {
                push(&["-device", "virtio-serial-pci,id=vser0"]);
                push(&["-chardev", &format!("file,id=drill,path={}", opt(r)?)]);
                push(&[
                    "-device",
                    &format!("virtserialport,bus=vser0.0,chardev=drill,name={REPORT_PORT}"),
                ]);
            }
        }
    }
    if g.disks.iter().any(|d| d.bus == Bus::Scsi) {
        push(&["-device", "virtio-scsi-pci,id=scsi0"]);
    }
    let ports = sata_ports(g.disks);
    for (i, d) in g.disks.iter().enumerate() {
        // SeaBIOS tries the disks in order; OVMF keeps the NVRAM's order.
        let bootindex = match (g.media, g.firmware) {
            (Media::Disks { .. }, Firmware::Bios) => Some(i),
            _ => None,
        };
        push(&[
            "-drive",
            &format!(
                "file={},format=raw,if=none,id=d{i},cache=unsafe,discard=unmap",
                opt(&d.image)?
            ),
        ]);
        push(&["-device", &disk_device(d, i, ports[i], bootindex)]);
    }
    Ok(a)
}

/// The command line as a shell would take it, for `--keep`.
pub fn shell_line(args: &[String]) -> String {
    let mut words = vec![QEMU.to_string()];
    words.extend(args.iter().map(|a| crate::exec::shell_quote(a)));
    words.join(" ")
}

/// The arguments of the KVM probe: the rescue kernel without an initrd
/// panics at once and, with `panic=-1` and `-no-reboot`, QEMU exits.
pub fn probe_args(vmlinuz: &Path) -> Result<Vec<String>> {
    let mut a: Vec<String> = [
        "-accel",
        "kvm",
        "-machine",
        "q35",
        "-m",
        "256",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "none",
        "-nic",
        "none",
        "-no-reboot",
        "-kernel",
    ]
    .map(String::from)
    .to_vec();
    a.push(utf8(vmlinuz)?.to_string());
    a.extend(["-append".to_string(), "panic=-1 quiet".to_string()]);
    Ok(a)
}

/// What the runner shows the caller's watcher of the serial console.
#[derive(Debug, Clone, Copy)]
pub enum Console<'a> {
    /// A complete line.
    Line(&'a str),
    /// The unfinished last line (a prompt), offered again as it grows.
    Unfinished(&'a str),
}

/// What became of a guest.
#[derive(Debug, Clone)]
pub struct Finished {
    /// QEMU exited by itself (the guest powered off) with this status.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The watcher of the console ended the guest.
    pub stopped: bool,
    pub seconds: f64,
    /// The tail of QEMU's own stderr.
    pub stderr: String,
}

/// Runs QEMU with `args` until it exits, `timeout` passes or `watch` (shown
/// the serial console as it grows) returns true; then QEMU is killed.
pub fn run(
    args: &[String],
    timeout: Duration,
    serial_log: &Path,
    watch: &mut dyn FnMut(Console) -> bool,
) -> Result<Finished> {
    let program = crate::exec::require(&[QEMU])?.remove(0);
    log::debug!("run: {}", shell_line(args));
    let start = Instant::now();
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut follow = Follow::default();
    let (exit_code, timed_out, stopped) = loop {
        let stop = follow.poll(serial_log, watch);
        if let Some(st) = child.try_wait().context("waiting for QEMU")? {
            break (Some(st.code().unwrap_or(128)), false, false);
        }
        let late = start.elapsed() > timeout;
        if stop || late {
            let _ = child.kill();
            let _ = child.wait();
            break (None, !stop, stop);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if !stopped {
        follow.poll(serial_log, watch);
    }
    let mut err = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut err);
    }
    Ok(Finished {
        exit_code,
        timed_out,
        stopped,
        seconds: start.elapsed().as_secs_f64(),
        stderr: crate::exec::tail(&err, 5),
    })
}

/// Reads what a growing log file gained since the last call, line by line.
#[derive(Default)]
struct Follow {
    offset: u64,
    partial: Vec<u8>,
}

impl Follow {
    /// Shows `watch` what the log gained; true when it asked to stop.
    fn poll(&mut self, path: &Path, watch: &mut dyn FnMut(Console) -> bool) -> bool {
        let Ok(mut f) = std::fs::File::open(path) else {
            return false;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return false;
        }
        if buf.is_empty() {
            return false;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        while let Some(n) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=n).collect();
            let text = String::from_utf8_lossy(&line);
            if watch(Console::Line(text.trim_end_matches(['\r', '\n']))) {
                return true;
            }
        }
        // A prompt: what follows the last carriage return (status lines
        // redraw themselves after one), its last 512 bytes at most.
        let start = self
            .partial
            .iter()
            .rposition(|&b| b == b'\r')
            .map_or(0, |r| r + 1)
            .max(self.partial.len().saturating_sub(512));
        let tail = &self.partial[start..];
        !tail.is_empty() && watch(Console::Unfinished(&String::from_utf8_lossy(tail)))
    }
}

/// Whether KVM works here: `/dev/kvm` exists and the probe guest exits
/// within `timeout` (on some hosts KVM hangs guests).
pub fn kvm_works(vmlinuz: &Path, timeout: Duration) -> (bool, String) {
    if !Path::new("/dev/kvm").exists() {
        return (false, "no /dev/kvm".into());
    }
    let args = match probe_args(vmlinuz) {
        Ok(a) => a,
        Err(e) => return (false, format!("{e:#}")),
    };
    let nowhere = Path::new("/dev/null");
    match run(&args, timeout, nowhere, &mut |_| false) {
        Ok(f) if f.exit_code == Some(0) => (true, format!("KVM probe booted in {:.1}s", f.seconds)),
        Ok(f) if f.timed_out => (
            false,
            format!("the KVM probe did not finish within {}s", timeout.as_secs()),
        ),
        Ok(f) => (false, format!("the KVM probe failed: {}", f.stderr)),
        Err(e) => (false, format!("{e:#}")),
    }
}
