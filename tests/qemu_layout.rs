//! QEMU tier: inside the rescue image, build a machine with the real tools
//! (tests/fixtures/machine.sh: GPT + ESP + md RAID1 + LUKS2 + LVM linear,
//! striped and thin + ext4/xfs/btrfs/vfat/swap + an MBR disk with LUKS1),
//! run `lifeboat layout save` there and check the Layout field by field.
//!
//! `cargo test --test qemu_layout -- --ignored regenerate_guest_fixtures`
//! rebuilds tests/fixtures/guest/ from the same machine.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A job folder with machine.sh, GRUB's boot.img and `autorun` as autorun.sh.
fn job_dir(s: &Scratch, autorun: &str) -> PathBuf {
    let dir = s.join("job-src");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("machine.sh"), dir.join("machine.sh")).unwrap();
    std::fs::copy("/usr/lib/grub/i386-pc/boot.img", dir.join("boot.img"))
        .expect("grub-pc-bin is installed (GRUB's i386-pc boot.img)");
    std::fs::write(dir.join("autorun.sh"), autorun).unwrap();
    dir
}

/// Boots the rescue image under OVMF with the disks machine.sh expects and
/// the job disk made from `dir`; returns the job disk after the run.
fn run_machine(s: &Scratch, dir: &Path) -> (JobDisk, Finished) {
    let job = JobDisk::from_dir(dir, &s.join("job.img"), 64);
    let r = rescue();
    let vars = fresh_ovmf_vars(&s.join("OVMF_VARS.fd"));
    let vm = Vm::new(
        Boot::Kernel {
            vmlinuz: r.vmlinuz(),
            initrd: r.initrd(),
            append: "lifeboat.poweroff".into(),
        },
        &s.join("serial.log"),
    )
    .firmware(Firmware::Uefi { vars: Some(vars) })
    .disk(Disk::virtio(&blank_disk(&s.join("a.img"), 1024)))
    .disk(Disk::virtio(&blank_disk(&s.join("b.img"), 1024)))
    .disk(Disk::virtio(&blank_disk(&s.join("c.img"), 512)))
    .disk(Disk::virtio(&blank_disk(&s.join("d.img"), 512)))
    .disk(Disk::virtio(&job.image))
    .disk(Disk::virtio(&blank_disk(&s.join("f.img"), 64)))
    .timeout(600);
    let run = vm.run();
    assert!(
        !run.timed_out,
        "guest did not power off:\n{}",
        tail(&run.log, 60)
    );
    (job, run)
}

#[test]
#[ignore = "rewrites tests/fixtures/guest; run on purpose"]
fn regenerate_guest_fixtures() {
    let s = Scratch::new("qemu-fixtures");
    let script = std::fs::read_to_string(fixtures().join("capture.sh")).unwrap();
    let dir = job_dir(&s, &script);
    let (job, run) = run_machine(&s, &dir);
    let out = job.read_back(&s.join("out"));
    assert_eq!(
        std::fs::read_to_string(out.join("autorun.rc"))
            .ok()
            .as_deref(),
        Some("0\n"),
        "capture.sh failed:\n{}\n{}",
        std::fs::read_to_string(out.join("autorun.log")).unwrap_or_default(),
        tail(&run.log, 40)
    );
    let dest = fixtures().join("guest");
    let _ = std::fs::remove_dir_all(&dest);
    sh(&format!(
        "cp -a '{}' '{}'",
        out.join("guest").display(),
        dest.display()
    ));
    eprintln!(
        "fixtures written to {} in {:.0}s",
        dest.display(),
        run.seconds
    );
}
