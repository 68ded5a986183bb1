//! QEMU tier: Secure Boot. The rescue ISO built with Debian's signed shim
//! and GRUB boots under OVMF's Secure Boot firmware with Microsoft's keys
//! enrolled (q35 with SMM), loads its signed modules under lockdown and
//! reaches the rescue prompt; the same ISO with an unsigned kernel is
//! refused. The signed loaders come from shim-signed, shim-helpers-amd64-signed
//! and grub-efi-amd64-signed unpacked (never installed) by
//! scripts/install-deps.sh into SB_ROOT.

mod common;

use std::path::Path;

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

/// The guest: q35 with SMM and OVMF's Secure Boot firmware, a fresh copy of
/// the variable store with Microsoft's keys, the ISO as CD. `Vm::run` stops
/// it as soon as the console shows a refused loader.
fn secure_vm(s: &Scratch, iso: &Path) -> Vm {
    let vars = fresh_secure_boot_vars(&s.join("OVMF_VARS.fd"));
    Vm::new(Boot::Cdrom(iso.to_path_buf()), &s.join("serial.log"))
        .firmware(Firmware::SecureBoot { vars })
        .timeout(600)
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
    let run = secure_vm(&s, &s.join("img/lifeboat-rescue.iso"))
        .disk(Disk::virtio(&job.image))
        .run();
    let log = run.log;
    eprintln!("secure boot: guest ran {:.1}s", run.seconds);
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
    // The guest powers off by itself if the kernel runs (lifeboat.poweroff).
    let run = secure_vm(&s, &s.join("img/lifeboat-rescue.iso")).run();
    let log = run.log;
    eprintln!("unsigned kernel: stopped after {:.1}s", run.seconds);
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
