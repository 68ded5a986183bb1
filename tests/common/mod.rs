//! Test harness shared by the integration tests: scratch folders, the rescue
//! image built once per test binary, job disks, and QEMU guests (TCG only).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod copies;
pub mod servers;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Skips the test (returns from it) with a message when not run as root:
/// `require_root!()`, or `require_root!("why")` for another message.
#[macro_export]
macro_rules! require_root {
    () => {
        $crate::require_root!("loop tests need root")
    };
    ($why:expr) => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: {}", $why);
            return;
        }
    };
}

/// Pseudo-random bytes that compress somewhat, like real files; the same
/// bytes for the same seed.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let words: [&[u8]; 6] = [
        b"alpha ", b"beta ", b"gamma\n", b"delta ", b"0x1f ", b"{}; ",
    ];
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 3 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(words[(x % 6) as usize]);
        }
    }
    out.truncate(len);
    out
}

/// The lifeboat binary under test.
pub fn lifeboat() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"))
}

/// Runs lifeboat with `args`; returns (exit code, stdout, stderr).
pub fn run_lifeboat<I, S>(args: I) -> (i32, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(lifeboat())
        .args(args)
        .env_remove("LIFEBOAT_LOG")
        .output()
        .expect("running lifeboat");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Root of the test scratch space: target/lifeboat-test.
pub fn scratch_root() -> PathBuf {
    let target = lifeboat()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let root = target.join("lifeboat-test");
    std::fs::create_dir_all(&root).unwrap();
    root
}

/// A scratch folder removed on drop, unless LIFEBOAT_KEEP_TEST_FILES=1.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let path = scratch_root().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch { path }
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("LIFEBOAT_KEEP_TEST_FILES").is_some() {
            eprintln!("keeping test files in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A rescue image built by `lifeboat mkrescue` from the installed kernel.
pub struct Rescue {
    pub dir: PathBuf,
}

impl Rescue {
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd")
    }
    pub fn iso(&self) -> PathBuf {
        self.dir.join("lifeboat-rescue.iso")
    }
}

/// The rescue image with ISO, built once per test binary.
pub fn rescue() -> &'static Rescue {
    static IMAGE: OnceLock<Rescue> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = scratch_root().join(format!("rescue-{}", std::process::id()));
        let (code, out, err) =
            run_lifeboat(["mkrescue".as_ref(), "--output".as_ref(), dir.as_os_str()]);
        assert_eq!(code, 0, "mkrescue failed:\n{out}\n{err}");
        Rescue { dir }
    })
}

/// Runs a shell command line on the host and panics with its output on failure.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A job disk: an ext4 image labelled LIFEBOAT-AUTO holding `autorun.sh` and
/// any other files, made without mounting (mkfs.ext4 -d).
pub struct JobDisk {
    pub image: PathBuf,
}

impl JobDisk {
    /// Creates the disk from the contents of `dir` (which must hold
    /// autorun.sh for the rescue to run anything), `size_mib` big.
    pub fn from_dir(dir: &Path, image: &Path, size_mib: u64) -> JobDisk {
        sh(&format!(
            "mkfs.ext4 -q -F -L LIFEBOAT-AUTO -d '{}' '{}' {}M",
            dir.display(),
            image.display(),
            size_mib
        ));
        JobDisk {
            image: image.to_path_buf(),
        }
    }

    /// Creates the disk with `autorun.sh` = `script`.
    pub fn with_script(scratch: &Scratch, name: &str, script: &str) -> JobDisk {
        let dir = scratch.join(format!("{name}-src"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("autorun.sh"), script).unwrap();
        JobDisk::from_dir(&dir, &scratch.join(format!("{name}.img")), 64)
    }

    /// Copies the disk's files to `out` and returns `out`.
    pub fn read_back(&self, out: &Path) -> PathBuf {
        std::fs::create_dir_all(out).unwrap();
        sh(&format!(
            "debugfs -R 'rdump / {}' '{}' 2>/dev/null",
            out.display(),
            self.image.display()
        ));
        out.to_path_buf()
    }

    /// The content of one file on the disk.
    pub fn file(&self, name: &str) -> Option<String> {
        let out = Command::new("debugfs")
            .args(["-R", &format!("cat /{name}")])
            .arg(&self.image)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // debugfs prints nothing (and an error on stderr) for a missing file.
        let exists = Command::new("debugfs")
            .args(["-R", &format!("stat /{name}")])
            .arg(&self.image)
            .output()
            .map(|o| !String::from_utf8_lossy(&o.stderr).contains("File not found"))
            .unwrap_or(false);
        exists.then_some(text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bus {
    Virtio,
    Scsi,
    Nvme,
    Sata,
    /// A USB stick (usb-storage on an xHCI controller).
    Usb,
}

#[derive(Clone, Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub bus: Bus,
    pub serial: Option<String>,
    pub format: &'static str,
    /// Logical and physical sector size (4096: a 4K-native disk).
    pub sector: Option<u32>,
}

impl Disk {
    pub fn virtio(path: &Path) -> Disk {
        Disk {
            path: path.to_path_buf(),
            bus: Bus::Virtio,
            serial: None,
            format: "raw",
            sector: None,
        }
    }
    pub fn sector(mut self, bytes: u32) -> Disk {
        self.sector = Some(bytes);
        self
    }
    pub fn on(mut self, bus: Bus) -> Disk {
        self.bus = bus;
        self
    }
    pub fn serial(mut self, s: &str) -> Disk {
        self.serial = Some(s.to_string());
        self
    }
}

/// Creates a sparse raw image of `size_mib` MiB.
pub fn blank_disk(path: &Path, size_mib: u64) -> PathBuf {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size_mib << 20).unwrap();
    path.to_path_buf()
}

#[derive(Clone, Debug)]
pub enum Firmware {
    /// SeaBIOS.
    Bios,
    /// OVMF; with a vars file, on q35 with pflash (EFI variables persist).
    Uefi { vars: Option<PathBuf> },
    /// OVMF's Secure Boot firmware on q35 with SMM, with this vars file
    /// (see [`fresh_secure_boot_vars`]): Secure Boot enforced.
    SecureBoot { vars: PathBuf },
}

#[derive(Clone, Debug)]
pub enum Boot {
    /// -kernel/-initrd with this command line.
    Kernel {
        vmlinuz: PathBuf,
        initrd: PathBuf,
        append: String,
    },
    /// An ISO as CD-ROM.
    Cdrom(PathBuf),
    /// The first disk.
    Disk,
    /// What the firmware's own boot order says (UEFI: the NVRAM entries of
    /// the vars file), no boot device named.
    Nvram,
}

pub struct Vm {
    pub boot: Boot,
    pub firmware: Firmware,
    pub disks: Vec<Disk>,
    pub memory_mib: u32,
    pub timeout: Duration,
    pub serial_log: PathBuf,
    /// A network interface: the -netdev and -device arguments (none when
    /// unset).
    pub nic: Option<(String, String)>,
}

pub struct Finished {
    pub log: String,
    pub timed_out: bool,
    pub exit_ok: bool,
    pub seconds: f64,
}

/// Copies the OVMF variable store template to `dest` (a fresh NVRAM).
pub fn fresh_ovmf_vars(dest: &Path) -> PathBuf {
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", dest).expect("ovmf is installed");
    dest.to_path_buf()
}

/// OVMF's Secure Boot firmware (tests/qemu_secureboot.rs, qemu_debian.rs).
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/// OVMF's variable store with Microsoft's keys enrolled and Secure Boot on.
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// What shim ("Verification failed: (0x1A) Security Violation") or GRUB
/// ("bad shim signature") prints on the console when Secure Boot refuses a
/// loader, if `log` shows it (qemu/boot-check.sh stops at the same words).
pub fn secure_boot_refusal(log: &str) -> Option<&'static str> {
    ["Verification failed: ", "bad shim signature"]
        .into_iter()
        .find(|m| log.contains(m))
}

/// Copies the variable store with Microsoft's keys to `dest`.
pub fn fresh_secure_boot_vars(dest: &Path) -> PathBuf {
    std::fs::copy(OVMF_VARS_MS, dest).expect("ovmf is installed");
    dest.to_path_buf()
}

impl Vm {
    pub fn new(boot: Boot, serial_log: &Path) -> Vm {
        Vm {
            boot,
            firmware: Firmware::Bios,
            disks: Vec::new(),
            memory_mib: 1024,
            timeout: Duration::from_secs(240),
            serial_log: serial_log.to_path_buf(),
            nic: None,
        }
    }

    /// QEMU user-mode networking (virtio-net; the host's loopback is
    /// 10.0.2.2 in the guest) instead of no network.
    pub fn user_net(self) -> Vm {
        self.nic("user,id=usernet", "virtio-net-pci,netdev=usernet")
    }

    /// A network interface (`-netdev NETDEV -device DEVICE`).
    pub fn nic(mut self, netdev: &str, device: &str) -> Vm {
        self.nic = Some((netdev.to_string(), device.to_string()));
        self
    }

    pub fn disk(mut self, d: Disk) -> Vm {
        self.disks.push(d);
        self
    }

    pub fn firmware(mut self, f: Firmware) -> Vm {
        self.firmware = f;
        self
    }

    pub fn memory(mut self, mib: u32) -> Vm {
        self.memory_mib = mib;
        self
    }

    pub fn timeout(mut self, secs: u64) -> Vm {
        self.timeout = Duration::from_secs(secs);
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-smp", "1", "-no-reboot"]);
        match &self.nic {
            Some((netdev, device)) => c.args(["-netdev", netdev, "-device", device]),
            None => c.args(["-nic", "none"]),
        };
        // Entropy for cryptsetup and UUIDs right from the start.
        c.args(["-device", "virtio-rng-pci"])
            .args(["-display", "none", "-monitor", "none"])
            .args(["-m", &self.memory_mib.to_string()])
            .arg("-serial")
            .arg(format!("file:{}", self.serial_log.display()));
        match &self.firmware {
            Firmware::Bios => {}
            Firmware::Uefi { vars: None } => {
                c.args(["-bios", "/usr/share/ovmf/OVMF.fd"]);
            }
            Firmware::Uefi { vars: Some(v) } => {
                c.args(["-machine", "q35"])
                    .args([
                        "-drive",
                        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                    ])
                    .arg("-drive")
                    .arg(format!("if=pflash,format=raw,file={}", v.display()));
            }
            Firmware::SecureBoot { vars } => {
                c.args(["-machine", "q35,smm=on"])
                    .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECBOOT}"
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        vars.display()
                    ));
            }
        }
        match &self.boot {
            Boot::Kernel {
                vmlinuz,
                initrd,
                append,
            } => {
                c.arg("-kernel").arg(vmlinuz).arg("-initrd").arg(initrd);
                c.arg("-append")
                    .arg(format!("console=ttyS0,115200 panic=5 {append}"));
            }
            Boot::Cdrom(iso) => {
                c.arg("-drive")
                    .arg(format!("file={},media=cdrom,readonly=on", iso.display()));
                c.args(["-boot", "d"]);
            }
            Boot::Disk => {
                c.args(["-boot", "c"]);
            }
            Boot::Nvram => {}
        }
        let mut scsi = false;
        let mut xhci = false;
        for (i, d) in self.disks.iter().enumerate() {
            c.arg("-drive").arg(format!(
                "file={},format={},if=none,id=d{i},cache=unsafe",
                d.path.display(),
                d.format
            ));
            let serial = d.serial.clone().unwrap_or_else(|| format!("LBTEST{i:02}"));
            let boot = if i == 0 && matches!(self.boot, Boot::Disk) {
                ",bootindex=0"
            } else {
                ""
            };
            let bootindex = match d.sector {
                Some(n) => format!("{boot},logical_block_size={n},physical_block_size={n}"),
                None => boot.to_string(),
            };
            let dev = match d.bus {
                Bus::Virtio => format!("virtio-blk-pci,drive=d{i},serial={serial}{bootindex}"),
                Bus::Nvme => format!("nvme,drive=d{i},serial={serial}{bootindex}"),
                Bus::Sata => format!("ide-hd,drive=d{i},serial={serial}{bootindex}"),
                Bus::Usb => {
                    if !xhci {
                        c.args(["-device", "qemu-xhci,id=xhci0"]);
                        xhci = true;
                    }
                    format!("usb-storage,bus=xhci0.0,drive=d{i},serial={serial}{bootindex}")
                }
                Bus::Scsi => {
                    if !scsi {
                        c.args(["-device", "virtio-scsi-pci,id=scsi0"]);
                        scsi = true;
                    }
                    format!("scsi-hd,drive=d{i},bus=scsi0.0,serial={serial}{bootindex}")
                }
            };
            c.arg("-device").arg(dev);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Starts QEMU and returns it running (the caller stops it).
    pub fn spawn(&self) -> Child {
        let _ = std::fs::remove_file(&self.serial_log);
        self.command()
            .spawn()
            .expect("qemu-system-x86_64 is installed")
    }

    /// Boots and waits until QEMU exits (the guest powers off) or the timeout.
    pub fn run(&self) -> Finished {
        let start = Instant::now();
        let mut child = self.spawn();
        let mut timed_out = false;
        let secure = matches!(self.firmware, Firmware::SecureBoot { .. });
        let mut polls = 0u32;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break None;
            }
            polls += 1;
            // A refused loader waits at its message: stop the guest (every
            // 2 s a look at the console).
            if secure && polls % 10 == 0 {
                let log = std::fs::read(&self.serial_log).unwrap_or_default();
                if secure_boot_refusal(&String::from_utf8_lossy(&log)).is_some() {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        let log = std::fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Finished {
            log: if stderr.is_empty() {
                log
            } else {
                format!("{log}\n[qemu stderr] {stderr}")
            },
            timed_out,
            exit_ok: status.is_some_and(|s| s.success()),
            seconds: start.elapsed().as_secs_f64(),
        }
    }

    /// Boots until `marker` shows on the serial console, then stops the
    /// guest. Returns the log and whether the marker was seen.
    pub fn run_until(&self, marker: &str) -> (bool, Finished) {
        let start = Instant::now();
        let mut child = self.spawn();
        let mut seen = false;
        while start.elapsed() < self.timeout {
            let log = std::fs::read(&self.serial_log).unwrap_or_default();
            if String::from_utf8_lossy(&log).contains(marker) {
                seen = true;
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read(&self.serial_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        (
            seen,
            Finished {
                log,
                timed_out: !seen,
                exit_ok: seen,
                seconds: start.elapsed().as_secs_f64(),
            },
        )
    }
}

/// The last `n` lines of a serial log, for assertion messages.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Compares two listings (one line per file), naming the lines that differ.
pub fn assert_same_lines(got: &str, want: &str) {
    let g: std::collections::BTreeSet<&str> = got.lines().collect();
    let w: std::collections::BTreeSet<&str> = want.lines().collect();
    let missing: Vec<&&str> = w.difference(&g).take(10).collect();
    let extra: Vec<&&str> = g.difference(&w).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "trees differ:\n missing {missing:#?}\n extra {extra:#?}"
    );
}

/// A loop device with its partitions (partx) and mounts, all undone on drop,
/// even when the test fails.
pub struct LoopDisk {
    pub dev: String,
    pub mounts: Vec<PathBuf>,
}

impl LoopDisk {
    pub fn attach(image: &Path) -> LoopDisk {
        let dev = sh(&format!("losetup -f --show '{}'", image.display()))
            .trim()
            .to_string();
        let d = LoopDisk {
            dev,
            mounts: Vec::new(),
        };
        // The host kernel does not parse partition tables of loop devices.
        sh(&format!("partx -a '{}'", d.dev));
        d
    }

    /// A blank image of `mib` MiB on a loop device with `sector`-byte
    /// logical sectors (`losetup --sector-size`: 4096 for a 4K-native disk).
    pub fn blank(image: &Path, mib: u64, sector: u32) -> LoopDisk {
        blank_disk(image, mib);
        let dev = sh(&format!(
            "losetup -f --show --sector-size {sector} '{}'",
            image.display()
        ))
        .trim()
        .to_string();
        let name = dev.trim_start_matches("/dev/");
        assert_eq!(
            sh(&format!("cat /sys/block/{name}/queue/logical_block_size")).trim(),
            sector.to_string()
        );
        LoopDisk {
            dev,
            mounts: Vec::new(),
        }
    }

    pub fn part(&self, n: u32) -> String {
        format!("{}p{n}", self.dev)
    }

    pub fn mount(&mut self, dev: &str, dir: &Path, opts: &str) {
        std::fs::create_dir_all(dir).unwrap();
        sh(&format!("mount {opts} '{dev}' '{}'", dir.display()));
        self.mounts.push(dir.to_path_buf());
    }

    /// Unmounts what `mount` mounted, deepest first.
    pub fn unmount_all(&mut self) {
        while let Some(m) = self.mounts.pop() {
            sh(&format!("umount '{}'", m.display()));
        }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let _ = std::process::Command::new("umount").arg(m).status();
        }
        let _ = std::process::Command::new("partx")
            .args(["-d", &self.dev])
            .status();
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

// --- The real Debian system of the end-to-end tests (qemu/) -------------

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct Built {
    pub image: PathBuf,
    pub vars: PathBuf,
}

/// Runs build-debian.sh with a qcow2 overlay on the cached image in `out`.
pub fn build_debian(out: &Path) -> Built {
    let start = Instant::now();
    let res = Command::new(repo().join("qemu/build-debian.sh"))
        .arg("--lifeboat")
        .arg(lifeboat())
        .arg("--output")
        .arg(out)
        .arg("--overlay")
        .output()
        .expect("running qemu/build-debian.sh");
    let stdout = String::from_utf8_lossy(&res.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(
        res.status.success(),
        "build-debian.sh failed ({}):\n{stdout}\n{}",
        res.status,
        tail(&stderr, 60)
    );
    eprintln!(
        "{stderr}build-debian.sh: {:.0} s",
        start.elapsed().as_secs_f64()
    );
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no {key}= in the output of build-debian.sh:\n{stdout}"))
    };
    let built = Built {
        image: value("image"),
        vars: value("vars"),
    };
    assert!(
        built.image.starts_with(out) && built.vars.starts_with(out),
        "build-debian.sh handed out files outside {}: {stdout}",
        out.display()
    );
    assert!(built.image.is_file() && built.vars.is_file(), "{stdout}");
    built
}

pub struct Check {
    pub code: i32,
    pub job_log: String,
    pub serial: String,
}

/// Runs boot-check.sh with `job` (a folder with job.sh, or `default`);
/// `room_mib` is free space on the job disk for what the job writes.
pub fn boot_check(
    image: &Path,
    vars: Option<&Path>,
    firmware: &str,
    job: &Path,
    room_mib: u64,
    out: &Path,
) -> Check {
    boot_check_on(image, vars, firmware, job, room_mib, out, None)
}

/// [`boot_check`] with the system disk's sector size (`Some(4096)`: 4K-native).
pub fn boot_check_on(
    image: &Path,
    vars: Option<&Path>,
    firmware: &str,
    job: &Path,
    room_mib: u64,
    out: &Path,
    sector: Option<u32>,
) -> Check {
    let env: Vec<(&str, String)> = sector
        .map(|n| ("BOOT_CHECK_SECTOR", n.to_string()))
        .into_iter()
        .collect();
    boot_check_env(image, vars, firmware, job, room_mib, out, &env)
}

/// [`boot_check`] with more of boot-check.sh's environment
/// (`BOOT_CHECK_SECTOR`, `BOOT_CHECK_NETDEV`, `BOOT_CHECK_NIC`).
pub fn boot_check_env(
    image: &Path,
    vars: Option<&Path>,
    firmware: &str,
    job: &Path,
    room_mib: u64,
    out: &Path,
    env: &[(&str, String)],
) -> Check {
    let start = Instant::now();
    let mut cmd = Command::new(repo().join("qemu/boot-check.sh"));
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let res = cmd
        .arg(image)
        .arg(vars.map_or_else(|| "none".into(), |v| v.as_os_str().to_owned()))
        .arg(firmware)
        .arg(job)
        .arg(out)
        .env("BOOT_CHECK_JOB_ROOM_MIB", room_mib.to_string())
        .env("BOOT_CHECK_MEMORY", "1536")
        .env("BOOT_CHECK_TIMEOUT", "1500")
        .output()
        .expect("running qemu/boot-check.sh");
    eprintln!(
        "{}boot-check.sh {firmware}: {:.0} s ({})",
        String::from_utf8_lossy(&res.stderr),
        start.elapsed().as_secs_f64(),
        res.status
    );
    let read = |p: PathBuf| {
        std::fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    Check {
        code: res.status.code().unwrap_or(-1),
        job_log: read(out.join("job/job.log")),
        serial: read(out.join("serial.log")),
    }
}

/// The source system's job: `layout save` (without the job disk), the
/// layout copied out, a backup into the job folder, `mkrescue` with
/// `mkrescue_args`, then `after` (shell lines).
pub fn source_job_script(mkrescue_args: &str, after: &str) -> String {
    format!(
        "job_disk=$(findmnt -no SOURCE \"$here\")\n\
         lifeboat layout save --exclude-disk \"$job_disk\"\n\
         cp /var/lib/lifeboat/layout.json \"$here/layout.json\"\n\
         lifeboat backup create --to \"$here/backup\"\n\
         lifeboat mkrescue --layout /var/lib/lifeboat/layout.json --output \"$here/rescue\" \
         {mkrescue_args}\n{after}"
    )
}

/// A job folder: the default checks, then `extra` (bash, run in the job
/// folder with lifeboat copied in), failing when either fails.
pub fn job_dir(dir: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        repo().join("qemu/boot-check-job.sh"),
        dir.join("boot-check-job.sh"),
    )
    .unwrap();
    std::fs::copy(lifeboat(), dir.join("lifeboat")).unwrap();
    std::fs::write(
        dir.join("job.sh"),
        format!(
            "#!/bin/bash\nset -u\nhere=$LIFEBOAT_JOB_DIR\nbash \"$here/boot-check-job.sh\"\nchecks=$?\n\
             install -m 0755 \"$here/lifeboat\" /usr/local/sbin/lifeboat\nset -e\n{extra}\n\
             echo \"== lifeboat job done\"\nexit $checks\n"
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

/// The engines' credential variables and LIFEBOAT_LOG, removed from a
/// command so that only what a test configures reaches restic and borg.
pub fn without_engine_secrets(cmd: &mut Command) -> &mut Command {
    for v in [
        "RESTIC_PASSWORD",
        "RESTIC_PASSWORD_FILE",
        "RESTIC_PASSWORD_COMMAND",
        "BORG_PASSPHRASE",
        "BORG_PASSCOMMAND",
        "LIFEBOAT_LOG",
    ] {
        cmd.env_remove(v);
    }
    cmd
}
