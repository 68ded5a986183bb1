//! QEMU tier: the rescue media of `mkrescue --usb` and `--pxe`.
//!
//! - A USB disk image (on an xHCI USB stick) boots under OVMF and under
//!   SeaBIOS; a backup written on the host into its LIFEBOAT-DATA partition
//!   (`backup create --to usb` through a loop device) is found by the rescue
//!   and recovers a small machine onto a blank disk, unattended.
//! - The PXE tree boots through QEMU's built-in TFTP: GRUB's core.0 under
//!   SeaBIOS, the iPXE script under SeaBIOS's iPXE, GRUB's core.efi under
//!   OVMF.
//! - A USB disk built with Debian's signed shim and GRUB boots under OVMF's
//!   Secure Boot firmware with Microsoft's keys, with Secure Boot on.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const READY: &str = "lifeboat rescue ready";

/// `lifeboat mkrescue ARGS` into `out` (no ISO: the media need none).
/// `no_timer_check`: under TCG on a loaded host the kernel's IO-APIC timer
/// check can fail ("IO-APIC + timer doesn't work!", a panic before init);
/// these boots come from the media, so the argument goes in at the build.
fn mkrescue(out: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "mkrescue",
        "--no-iso",
        "-o",
        out.to_str().unwrap(),
        "--append",
        "no_timer_check",
    ];
    all.extend(args);
    let (code, stdout, err) = run_lifeboat(&all);
    assert_eq!(code, 0, "mkrescue {args:?} failed:\n{stdout}\n{err}");
    stdout
}

/// Boots until `marker`; fails with the console's tail when it never shows.
fn boot_until(vm: &Vm, marker: &str, what: &str) -> Finished {
    let (seen, run) = vm.run_until(marker);
    assert!(
        seen,
        "{what}: no {marker:?} after {:.0}s:\n{}",
        run.seconds,
        tail(&run.log, 40)
    );
    eprintln!("{what}: {marker:?} after {:.0}s", run.seconds);
    run
}

fn pxe_vm(s: &Scratch, tree: &Path, bootfile: &str, firmware: Firmware, log: &str) -> Vm {
    Vm::new(Boot::Nvram, &s.join(log))
        .firmware(firmware)
        .nic(
            &format!("user,id=n0,tftp={},bootfile={bootfile}", tree.display()),
            "e1000,netdev=n0,bootindex=0",
        )
        .timeout(420)
}

#[test]
fn pxe_tree_boots_bios_and_uefi_through_tftp() {
    let s = Scratch::new("qemu-pxe");
    let tree = s.join("tftp");
    let out = mkrescue(
        &s.join("rescue"),
        &[
            "--append",
            "lifeboat.test=pxe-args",
            "--pxe",
            tree.to_str().unwrap(),
        ],
    );
    assert!(out.contains("network-boot tree written"), "{out}");
    let args = "lifeboat.test=pxe-args";

    // SeaBIOS, QEMU's iPXE ROM, GRUB's PXE image.
    let run = boot_until(
        &pxe_vm(
            &s,
            &tree,
            "boot/grub/i386-pc/core.0",
            Firmware::Bios,
            "bios.log",
        ),
        READY,
        "BIOS PXE with GRUB",
    );
    assert!(run.log.contains("Booting `lifeboat rescue'"), "GRUB menu");
    assert!(run.log.contains(args), "the kernel got the arguments");

    // The iPXE script, fetched by the same ROM.
    let run = boot_until(
        &pxe_vm(&s, &tree, "boot.ipxe", Firmware::Bios, "ipxe.log"),
        READY,
        "BIOS PXE with the iPXE script",
    );
    assert!(!run.log.contains("Booting `lifeboat rescue'"), "no GRUB");
    assert!(run.log.contains(args), "the kernel got the arguments");

    // OVMF's network stack, GRUB's EFI image.
    let run = boot_until(
        &pxe_vm(
            &s,
            &tree,
            "boot/grub/x86_64-efi/core.efi",
            Firmware::Uefi { vars: None },
            "uefi.log",
        ),
        READY,
        "UEFI PXE with GRUB",
    );
    assert!(run.log.contains("Booting `lifeboat rescue'"), "GRUB menu");
    assert!(run.log.contains(args), "the kernel got the arguments");
}

const ROOT_UUID: &str = "5b0e0000-0000-4000-8000-00000000f001";

/// File checksums, modes and owners of a tree (lost+found and the
/// recovery's own log left out).
fn sums(root: &Path) -> String {
    sh(&format!(
        "cd '{}' && find . -xdev ! -path './lost+found*' ! -path './var/log/lifeboat*' \
         \\( -type f -exec sha256sum {{}} + -o -printf '%p %m %U:%G %y\\n' \\) | sort",
        root.display()
    ))
}

/// A small machine on a loop device: GPT, one ext4 root with some files,
/// an fstab and the programs recovery runs in it. Returns the layout file
/// and the tree's sums; the backup goes to the USB disk's data partition.
fn small_machine(s: &Scratch, usb: &Path) -> String {
    let img = s.join("source.img");
    blank_disk(&img, 300);
    sh(&format!(
        "printf 'label: gpt\\nstart=1M, size=200M, name=root\\n' | sfdisk -q '{}'",
        img.display()
    ));
    let mut d = LoopDisk::attach(&img);
    sh(&format!(
        "mkfs.ext4 -q -U {ROOT_UUID} -L root '{}'",
        d.part(1)
    ));
    let root = s.join("src");
    let part = d.part(1);
    d.mount(&part, &root, "");
    sh(&format!(
        "cd '{}' && mkdir -p etc usr/share/doc srv bin usr/sbin var/log && \
         for i in $(seq 1 50); do echo \"line $i\" > usr/share/doc/f$i; done && \
         dd if=/dev/urandom of=srv/blob bs=1M count=4 status=none && \
         chown 123:456 usr/share/doc/f3 && ln -s ../usr/share/doc/f1 etc/link && \
         echo 'UUID={ROOT_UUID} / ext4 defaults 0 1' > etc/fstab && \
         cp /bin/busybox bin/busybox && ln -s busybox bin/sh && \
         printf '#!/bin/sh\\ntrue\\n' > usr/sbin/update-initramfs && chmod 755 usr/sbin/update-initramfs",
        root.display()
    ));
    let want = sums(&root);
    let layout = s.join("layout.json");
    let (code, out, err) = run_lifeboat([
        "layout",
        "save",
        "--root",
        root.to_str().unwrap(),
        "--only-disk",
        &d.dev,
        "-o",
        layout.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // The USB disk's data partition, through a loop device.
    let stick = LoopDisk::attach(usb);
    let (code, out, err) = run_lifeboat([
        "backup",
        "create",
        "--root",
        root.to_str().unwrap(),
        "--layout",
        layout.to_str().unwrap(),
        "--to",
        "usb",
    ]);
    assert_eq!(code, 0, "backup create --to usb: {out}{err}");
    drop(stick);
    want
}

#[test]
fn usb_disk_boots_uefi_and_bios_and_recovers_from_its_data_partition() {
    let s = Scratch::new("qemu-usb");
    let usb = s.join("usb.img");
    let out = mkrescue(
        &s.join("rescue"),
        &[
            "--append",
            "lifeboat.recover=auto",
            "--append",
            "lifeboat.poweroff",
            "--usb",
            usb.to_str().unwrap(),
            "--usb-size",
            "600M",
            "--yes",
        ],
    );
    assert!(out.contains("rescue disk written"), "{out}");
    let want = small_machine(&s, &usb);
    let data_line = "lifeboat: data partition /dev/sda2 mounted read-only at /run/lifeboat/data";

    // OVMF, from a copy (the guest is stopped once the data partition shows).
    let copy = s.join("usb-uefi.img");
    sh(&format!(
        "cp --sparse=always '{}' '{}'",
        usb.display(),
        copy.display()
    ));
    let vm = Vm::new(Boot::Disk, &s.join("uefi.log"))
        .firmware(Firmware::Uefi { vars: None })
        .disk(Disk::virtio(&copy).on(Bus::Usb))
        .timeout(300);
    let run = boot_until(&vm, data_line, "USB disk under OVMF");
    assert!(run.log.contains(READY), "{}", tail(&run.log, 20));
    let _ = std::fs::remove_file(&copy);

    // SeaBIOS: the rescue finds the backup on its own disk and recovers the
    // machine onto the blank disk, then powers off.
    let target = blank_disk(&s.join("target.img"), 400);
    let vm = Vm::new(Boot::Disk, &s.join("bios.log"))
        .disk(Disk::virtio(&usb).on(Bus::Usb))
        .disk(Disk::virtio(&target))
        .timeout(600);
    let run = vm.run();
    assert!(
        !run.timed_out,
        "no power-off after {:.0}s:\n{}",
        run.seconds,
        tail(&run.log, 60)
    );
    eprintln!("USB disk under SeaBIOS: recovered in {:.0}s", run.seconds);
    assert!(run.log.contains(data_line), "{}", tail(&run.log, 60));
    assert!(
        run.log.contains("lifeboat recover exit code: 0"),
        "{}",
        tail(&run.log, 60)
    );
    assert!(
        run.log.contains("/run/lifeboat/data/backup"),
        "recover used the data partition's backups:\n{}",
        tail(&run.log, 60)
    );

    // The recovered disk holds the same tree.
    let mut d = LoopDisk::attach(&target);
    let mnt: PathBuf = s.join("recovered");
    let part = d.part(1);
    d.mount(&part, &mnt, "-o ro");
    assert_same_lines(&sums(&mnt), &want);
    let uuid = sh(&format!("blkid -p -o value -s UUID '{part}'"));
    assert_eq!(uuid.trim(), ROOT_UUID);
}

/// Where scripts/install-deps.sh unpacks Debian's signed shim and GRUB.
const SB_ROOT: &str = "/var/cache/lifeboat-test/secureboot/root";

#[test]
fn secure_boot_usb_disk_boots_with_secure_boot_on() {
    let grub = format!("{SB_ROOT}/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed");
    assert!(
        Path::new(&grub).is_file(),
        "{grub} is missing: run scripts/install-deps.sh"
    );
    let s = Scratch::new("qemu-usb-sb");
    let usb = s.join("usb.img");
    let out = mkrescue(
        &s.join("rescue"),
        &[
            "--secure-boot-root",
            SB_ROOT,
            "--usb",
            usb.to_str().unwrap(),
            "--usb-size",
            "400M",
            "--yes",
        ],
    );
    assert!(out.contains("rescue disk written"), "{out}");
    assert!(out.contains("Secure Boot capable"), "{out}");
    // The ESP: shim at the removable-media path, the signed GRUB beside
    // it, the menu where that GRUB looks (its prefix /EFI/debian).
    let esp = format!("{}@@1M", usb.display());
    let listing = sh(&format!("mdir -i '{esp}' -b -/ ::/EFI"));
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/EFI/BOOT/grubx64.efi",
        "::/EFI/BOOT/mmx64.efi",
        "::/EFI/debian/grub.cfg",
    ] {
        assert!(listing.lines().any(|l| l == f), "{f} missing:\n{listing}");
    }
    let shim = sh(&format!(
        "mtype -i '{esp}' ::/EFI/BOOT/BOOTX64.EFI | sha256sum"
    ));
    let want = sh(&format!(
        "sha256sum < '{SB_ROOT}/usr/lib/shim/shimx64.efi.signed'"
    ));
    assert_eq!(shim, want, "BOOTX64.EFI is shim");

    let vars = fresh_secure_boot_vars(&s.join("vars.fd"));
    let vm = Vm::new(Boot::Disk, &s.join("sb.log"))
        .firmware(Firmware::SecureBoot { vars })
        .disk(Disk::virtio(&usb).on(Bus::Usb))
        .timeout(420);
    let run = boot_until(&vm, READY, "Secure Boot USB disk under OVMF");
    assert!(
        run.log.contains("secureboot: Secure boot enabled"),
        "{}",
        tail(&run.log, 40)
    );
}
