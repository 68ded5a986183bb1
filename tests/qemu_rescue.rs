//! QEMU tier: the rescue image boots (kernel+initrd, ISO as CD and as disk,
//! SeaBIOS and OVMF), greets, and runs unattended jobs.

mod common;

use common::*;

const READY: &str = "lifeboat rescue ready";

fn kernel_boot(append: &str) -> Boot {
    let r = rescue();
    Boot::Kernel {
        vmlinuz: r.vmlinuz(),
        initrd: r.initrd(),
        append: append.to_string(),
    }
}

/// A shell loop that runs every program the image ships with `--version`,
/// `-V` and `--help` (no device argument: nothing is touched) and lists in
/// `$here/missing.txt` each run that could not find a helper program or a
/// library (shell scripts such as xfs_info call other tools).
fn every_program_runs() -> String {
    use lifeboat::rescue::contents::{OPTIONAL_PROGRAMS, REQUIRED_PROGRAMS};
    let programs: Vec<&str> = REQUIRED_PROGRAMS
        .iter()
        .chain(OPTIONAL_PROGRAMS)
        .copied()
        .collect();
    format!(
        r#": > "$here/missing.txt"
for p in {}; do
    command -v "$p" >/dev/null || continue
    echo "$p" >> "$here/checked.txt"
    for flag in --version -V --help; do
        rc=0
        out=$(timeout 20 "$p" "$flag" </dev/null 2>&1) || rc=$?
        case "$rc:$out" in
        127:*|126:*|*": not found"*|*"error while loading shared libraries"*)
            echo "$p $flag (exit $rc): $out" | head -3 >> "$here/missing.txt" ;;
        esac
    done
done
"#,
        programs.join(" ")
    )
}

#[test]
fn job_disk_runs_real_tools_and_results_come_back() {
    let s = Scratch::new("qemu-job");
    let xfs = blank_disk(&s.join("xfs.img"), 320);
    let script = r#"#!/bin/sh
set -e
here=$(dirname "$0")
[ "$(pwd)" = "$here" ] || { echo "cwd $(pwd) is not $here"; exit 9; }
lifeboat --version > "$here/lifeboat.txt"
lvm version > "$here/lvm.txt"
mdadm --version > "$here/mdadm.txt" 2>&1
cryptsetup --version > "$here/cryptsetup.txt"
# the util-linux mkswap, not busybox's applet
mkswap --version > "$here/mkswap.txt"
ls /dev/vd* > "$here/disks.txt"
# xfs_info of a mounted XFS (it runs xfs_spaceman).
mkfs.xfs -q -f /dev/vdb
mkdir -p /mnt/x && mount -t xfs /dev/vdb /mnt/x
xfs_info /mnt/x > "$here/xfs_info.txt" 2>&1
umount /mnt/x
"#
    .to_string()
        + &every_program_runs()
        + r#"echo "done in $here"
"#;
    let job = JobDisk::with_script(&s, "job", &script);
    let vm = Vm::new(kernel_boot("lifeboat.poweroff"), &s.join("serial.log"))
        .disk(Disk::virtio(&job.image))
        .disk(Disk::virtio(&xfs))
        .timeout(240);
    let run = vm.run();
    assert!(
        !run.timed_out,
        "guest did not power off:\n{}",
        tail(&run.log, 40)
    );
    assert!(
        run.log.contains(READY),
        "no greeting:\n{}",
        tail(&run.log, 40)
    );
    assert!(run
        .log
        .contains(&format!("lifeboat {}", env!("CARGO_PKG_VERSION"))));
    assert_eq!(
        job.file("autorun.rc").as_deref(),
        Some("0\n"),
        "{}",
        tail(&run.log, 40)
    );
    let out = job.read_back(&s.join("out"));
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    assert!(
        read("lifeboat.txt").starts_with("lifeboat "),
        "{}",
        read("lifeboat.txt")
    );
    assert!(read("lvm.txt").contains("LVM version"));
    assert!(read("mdadm.txt").contains("mdadm - v"));
    assert!(read("cryptsetup.txt").starts_with("cryptsetup "));
    assert!(
        read("mkswap.txt").contains("util-linux"),
        "{}",
        read("mkswap.txt")
    );
    assert!(read("disks.txt").contains("/dev/vda"));
    assert!(
        read("xfs_info.txt").contains("meta-data=/dev/vdb"),
        "xfs_info: {}",
        read("xfs_info.txt")
    );
    assert!(
        read("checked.txt").lines().count() > 40,
        "{}",
        read("checked.txt")
    );
    assert_eq!(read("missing.txt"), "", "helpers missing in the image");
    assert!(read("autorun.log").contains("done in /run/lifeboat/job"));
    eprintln!("job boot took {:.1}s", run.seconds);
}

#[test]
fn cmdline_autorun_reports_its_exit_code_and_powers_off() {
    let s = Scratch::new("qemu-autorun");
    let vm = Vm::new(
        kernel_boot(r#"lifeboat.autorun="echo autorun says hi; exit 3" lifeboat.poweroff"#),
        &s.join("serial.log"),
    )
    .timeout(120);
    let run = vm.run();
    assert!(!run.timed_out, "{}", tail(&run.log, 30));
    assert!(run.log.contains(READY));
    assert!(
        run.log.contains("autorun says hi"),
        "{}",
        tail(&run.log, 30)
    );
    assert!(
        run.log.contains("lifeboat autorun exit code: 3"),
        "{}",
        tail(&run.log, 30)
    );
}

fn iso_boot_test(name: &str, firmware: Firmware, as_disk: bool) {
    let s = Scratch::new(name);
    let iso = rescue().iso();
    let vm = if as_disk {
        let copy = s.join("usb.img");
        std::fs::copy(&iso, &copy).unwrap();
        Vm::new(Boot::Disk, &s.join("serial.log")).disk(Disk::virtio(&copy).on(Bus::Sata))
    } else {
        Vm::new(Boot::Cdrom(iso), &s.join("serial.log"))
    }
    .firmware(firmware)
    .timeout(180);
    let (seen, run) = vm.run_until(READY);
    assert!(
        seen,
        "{name}: no greeting on the serial console:\n{}",
        tail(&run.log, 40)
    );
    eprintln!("{name}: ready after {:.1}s", run.seconds);
}

#[test]
fn iso_boots_as_cd_under_seabios() {
    iso_boot_test("iso-cd-bios", Firmware::Bios, false);
}

#[test]
fn iso_boots_as_cd_under_ovmf() {
    iso_boot_test("iso-cd-uefi", Firmware::Uefi { vars: None }, false);
}

#[test]
fn iso_boots_as_disk_under_ovmf() {
    iso_boot_test("iso-disk-uefi", Firmware::Uefi { vars: None }, true);
}

#[test]
fn iso_boots_as_disk_under_seabios() {
    iso_boot_test("iso-disk-bios", Firmware::Bios, true);
}

/// `mkrescue --include-backup`: the backup travels on the ISO, the rescue
/// mounts its boot medium and finds it there (booted through GRUB under
/// OVMF, whose quoting the autorun argument must survive).
#[test]
fn iso_carries_a_backup_that_the_rescue_finds() {
    let s = Scratch::new("iso-backup");
    let tree = s.join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    for i in 0..50 {
        std::fs::write(tree.join(format!("etc/file{i}")), format!("content {i}\n")).unwrap();
    }
    let backup = s.join("backup");
    let (code, out, err) = run_lifeboat([
        "backup".as_ref(),
        "create".as_ref(),
        "--source".as_ref(),
        tree.as_os_str(),
        "--to".as_ref(),
        backup.as_os_str(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let image = s.join("rescue");
    let (code, out, err) = run_lifeboat([
        "mkrescue".as_ref(),
        "--output".as_ref(),
        image.as_os_str(),
        "--include-backup".as_ref(),
        backup.as_os_str(),
        "--append".as_ref(),
        r#"lifeboat.autorun="lifeboat backup verify --from /run/lifeboat/medium/backup && echo BACKUP-ON-MEDIUM-OK""#.as_ref(),
        "--append".as_ref(),
        "lifeboat.poweroff".as_ref(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let listing = sh(&format!(
        "xorriso -indev '{}' -find /backup -type f 2>/dev/null",
        image.join("lifeboat-rescue.iso").display()
    ));
    assert!(listing.contains("generation.json"), "{listing}");
    let run = Vm::new(
        Boot::Cdrom(image.join("lifeboat-rescue.iso")),
        &s.join("serial.log"),
    )
    .firmware(Firmware::Uefi { vars: None })
    .timeout(240)
    .run();
    assert!(!run.timed_out, "{}", tail(&run.log, 40));
    assert!(
        run.log.contains("BACKUP-ON-MEDIUM-OK"),
        "{}",
        tail(&run.log, 40)
    );
    assert!(
        run.log.contains("lifeboat autorun exit code: 0"),
        "{}",
        tail(&run.log, 40)
    );
}
