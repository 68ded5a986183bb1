//! QEMU tier: Secure Boot. The rescue ISO built with Debian's signed shim
//! and GRUB boots under OVMF's Secure Boot firmware with Microsoft's keys
//! enrolled (q35 with SMM), loads its signed modules under lockdown and
//! reaches the rescue prompt; the same ISO with an unsigned kernel is
//! refused. The signed loaders come from shim-signed, shim-helpers-amd64-signed
//! and grub-efi-amd64-signed unpacked (never installed) by
//! scripts/install-deps.sh into SB_ROOT.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const READY: &str = "lifeboat rescue ready";
/// Where scripts/install-deps.sh unpacks the signed loaders.
const SB_ROOT: &str = "/var/cache/lifeboat-test/secureboot/root";
/// What the kernel prints when the firmware booted it with Secure Boot on.
const SB_ON: &str = "secureboot: Secure boot enabled";
/// What GRUB prints when shim refuses the kernel.
const REFUSED: &str = "bad shim signature";

fn require_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return false;
    }
    true
}

/// The signed loaders and the Secure Boot firmware; a missing one fails the
/// test (CI installs them), naming what to run.
fn require_inputs() {
    for f in [
        format!("{SB_ROOT}/usr/lib/shim/shimx64.efi.signed"),
        format!("{SB_ROOT}/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed"),
        OVMF_CODE_SECBOOT.into(),
        OVMF_VARS_MS.into(),
    ] {
        assert!(
            Path::new(&f).is_file(),
            "{f} is missing: run scripts/install-deps.sh (it unpacks shim-signed and \
             grub-efi-amd64-signed there and installs ovmf)"
        );
    }
}

/// Builds a rescue ISO with the signed loaders into `out`; returns
/// mkrescue's standard output and the record.
fn mkrescue(out: &Path, extra: &[&str]) -> (String, serde_json::Value) {
    let mut args = vec![
        "mkrescue".to_string(),
        "--output".into(),
        out.display().to_string(),
        "--secure-boot-root".into(),
        SB_ROOT.into(),
        "--append".into(),
        "lifeboat.poweroff".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (code, stdout, stderr) = run_lifeboat(&args);
    assert_eq!(code, 0, "mkrescue failed:\n{stdout}\n{stderr}");
    let record = std::fs::read_to_string(out.join("rescue.json")).unwrap();
    (stdout, serde_json::from_str(&record).unwrap())
}

/// QEMU on q35 with SMM and OVMF's Secure Boot firmware, a fresh copy of the
/// variable store with Microsoft's keys, the ISO as CD and `disks`.
fn secure_vm(s: &Scratch, iso: &Path, disks: &[PathBuf]) -> Child {
    let vars = s.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS_MS, &vars).unwrap();
    let log = s.join("serial.log");
    let _ = std::fs::remove_file(&log);
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-smp", "1", "-no-reboot", "-nic", "none"])
        .args(["-display", "none", "-monitor", "none", "-m", "1024"])
        .args(["-device", "virtio-rng-pci"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-machine", "q35,smm=on"])
        .args(["-global", "driver=cfi.pflash01,property=secure,value=on"])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SECBOOT}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-drive")
        .arg(format!("file={},media=cdrom,readonly=on", iso.display()))
        .args(["-boot", "d"]);
    for (i, d) in disks.iter().enumerate() {
        c.arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=d{i},cache=unsafe",
                d.display()
            ))
            .arg("-device")
            .arg(format!("virtio-blk-pci,drive=d{i}"));
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().expect("qemu-system-x86_64 is installed")
}

/// Waits until QEMU exits or the console shows one of `stop_at` (then stops
/// the guest), at most `timeout`. Returns the console log.
fn watch(s: &Scratch, mut child: Child, stop_at: &[&str], timeout: Duration) -> (String, f64) {
    let start = Instant::now();
    let log = s.join("serial.log");
    let read = || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    while start.elapsed() < timeout {
        if child.try_wait().unwrap().is_some() || stop_at.iter().any(|m| read().contains(m)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = child.kill();
    let _ = child.wait();
    (read(), start.elapsed().as_secs_f64())
}

#[test]
fn iso_boots_with_secure_boot_on_and_loads_signed_modules() {
    if !require_root() {
        return;
    }
    require_inputs();
    let s = Scratch::new("qemu-secureboot");
    let (stdout, record) = mkrescue(&s.join("img"), &[]);
    assert_eq!(record["secure_boot"]["capable"], true, "{record:#}");
    assert_eq!(record["secure_boot"]["uefi_loader"], "shim");
    assert!(
        stdout.contains("Secure Boot: capable (shim -> signed GRUB -> signed kernel)"),
        "{stdout}"
    );
    // The job reads the firmware's SecureBoot variable (4 attribute bytes,
    // then the value) and lists the modules the locked-down kernel loaded
    // (virtio_blk is one: the job disk is found through it).
    let job = JobDisk::with_script(
        &s,
        "job",
        "#!/bin/sh\nhere=$(dirname \"$0\")\n\
         od -An -t u1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c > \"$here/secureboot.txt\"\n\
         cut -d' ' -f1 /proc/modules > \"$here/modules.txt\"\n",
    );
    let vm = secure_vm(
        &s,
        &s.join("img/lifeboat-rescue.iso"),
        std::slice::from_ref(&job.image),
    );
    let (log, secs) = watch(&s, vm, &[REFUSED], Duration::from_secs(600));
    eprintln!("secure boot: guest ran {secs:.1}s");
    assert!(
        log.contains(SB_ON),
        "kernel not booted with Secure Boot on:\n{}",
        tail(&log, 40)
    );
    assert!(log.contains(READY), "no greeting:\n{}", tail(&log, 40));
    assert_eq!(
        job.file("autorun.rc").as_deref(),
        Some("0\n"),
        "{}",
        tail(&log, 40)
    );
    let var = job.file("secureboot.txt").unwrap_or_default();
    assert_eq!(
        var.split_whitespace().last(),
        Some("1"),
        "SecureBoot variable: {var:?}"
    );
    let modules = job.file("modules.txt").unwrap_or_default();
    assert!(
        modules.lines().any(|m| m == "virtio_blk"),
        "virtio_blk not loaded under lockdown: {modules:?}"
    );
}

/// A copy of `kernel` without its Authenticode signature: the certificate
/// table's directory entry cleared and the table cut off.
fn unsigned_copy(kernel: &Path, dest: &Path) {
    let mut data = std::fs::read(kernel).unwrap();
    let pe = u32::from_le_bytes(data[0x3c..0x40].try_into().unwrap()) as usize;
    let entry = pe + 24 + 112 + 4 * 8;
    let offset = u32::from_le_bytes(data[entry..entry + 4].try_into().unwrap()) as usize;
    assert!(offset > 0, "{} is not signed", kernel.display());
    data[entry..entry + 8].fill(0);
    data.truncate(offset);
    std::fs::write(dest, data).unwrap();
    assert!(!lifeboat::rescue::secureboot::pe_signed(dest).unwrap());
}

#[test]
fn an_unsigned_kernel_is_refused_and_the_record_says_why() {
    if !require_root() {
        return;
    }
    require_inputs();
    let s = Scratch::new("qemu-secureboot-unsigned");
    // The kernel mkrescue picks by itself (the running one's, else the
    // newest in /boot).
    let host =
        lifeboat::rescue::kernel::find_kernel(None, Path::new("/boot"), Path::new("/lib/modules"))
            .unwrap();
    let (signed, release) = (host.image, host.version);
    assert!(
        lifeboat::rescue::secureboot::pe_signed(&signed).unwrap(),
        "{} is not signed: this test needs a host with a signed kernel",
        signed.display()
    );
    let kernel = s.join(format!("vmlinuz-{release}"));
    unsigned_copy(&signed, &kernel);
    let (stdout, record) = mkrescue(&s.join("img"), &["--kernel", kernel.to_str().unwrap()]);
    let sb = &record["secure_boot"];
    assert_eq!(sb["capable"], false, "{record:#}");
    assert_eq!(sb["not_capable"]["reason"], "unsigned_kernel", "{record:#}");
    assert!(
        stdout.contains(&format!(
            "Secure Boot: not capable: the kernel {} is not signed",
            kernel.display()
        )),
        "{stdout}"
    );
    let vm = secure_vm(&s, &s.join("img/lifeboat-rescue.iso"), &[]);
    let (log, secs) = watch(&s, vm, &[REFUSED, READY], Duration::from_secs(600));
    eprintln!("unsigned kernel: stopped after {secs:.1}s");
    assert!(
        log.contains(REFUSED),
        "kernel not refused:\n{}",
        tail(&log, 40)
    );
    assert!(
        !log.contains("Linux version"),
        "the unsigned kernel ran:\n{}",
        tail(&log, 40)
    );
}
