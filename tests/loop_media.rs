//! Loop devices (root): `mkrescue --usb` refuses a disk that is mounted, a
//! partition, a disk that is not removable (a loop device never is) without
//! --force, an existing image file without --force, and writes without
//! confirmation only with --yes; --dry-run shows the disk and writes
//! nothing. Each refusal is checked against the disk's bytes. Then a real
//! write onto a loop device, and `backup create --to usb` into its data
//! partition. `run_lifeboat` gives no terminal (stdin is closed), so no
//! confirmation can be typed.

mod common;

use std::path::Path;

use common::*;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: loop tests need root");
            return;
        }
    };
}

/// SHA-256 of the whole image file, after the loop device's writes are
/// flushed.
fn image_sum(img: &Path) -> String {
    sh("sync");
    sh(&format!("sha256sum '{}' | cut -d' ' -f1", img.display()))
}

/// A 600 MiB disk with a GPT and an ext4 labelled "precious" holding a file.
fn precious_disk(s: &Scratch) -> (std::path::PathBuf, LoopDisk) {
    let img = s.join("stick.img");
    blank_disk(&img, 600);
    sh(&format!(
        "printf 'label: gpt\\nsize=100M, name=keep\\nsize=200M, name=more\\n' | sfdisk -q '{}'",
        img.display()
    ));
    let d = LoopDisk::attach(&img);
    sh(&format!(
        "mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 -L precious '{}'",
        d.part(1)
    ));
    sh(&format!("mkfs.btrfs -q -L more '{}'", d.part(2)));
    (img, d)
}

#[test]
fn usb_refusals_write_nothing() {
    require_root!();
    let s = Scratch::new("loop-media-refuse");
    let out_dir = s.join("rescue");
    let (img, mut d) = precious_disk(&s);
    let before = image_sum(&img);
    let o = out_dir.to_str().unwrap();

    // Not removable: refused without --force; what it holds is shown first.
    let (code, out, err) = run_lifeboat(["mkrescue", "-o", o, "--usb", &d.dev, "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("not removable"), "{err}");
    assert!(out.contains(&format!("{}: disk", d.dev)), "{out}");
    assert!(out.contains("NOT removable"), "{out}");
    assert!(
        out.contains(&format!(
            "{}: 100.0 MiB ext4, label precious, partition name keep",
            d.part(1)
        )),
        "the partitions are shown before anything else: {out}"
    );
    assert_eq!(image_sum(&img), before, "a refused disk was written");
    assert!(
        !out_dir.join("initrd").exists(),
        "nothing built for a refused disk"
    );

    // --dry-run with --force: shown, would be written, nothing written.
    let (code, out, err) =
        run_lifeboat(["mkrescue", "-o", o, "--usb", &d.dev, "--force", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("would be written; nothing written"), "{out}");
    assert_eq!(image_sum(&img), before, "--dry-run wrote");

    // No --yes and no terminal: not written.
    let (code, out, err) = run_lifeboat(["mkrescue", "-o", o, "--usb", &d.dev, "--force"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("without confirmation"), "{err}");
    assert_eq!(image_sum(&img), before);

    // A partition: refused even with --force.
    let (code, out, err) =
        run_lifeboat(["mkrescue", "-o", o, "--usb", &d.part(1), "--force", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("it is a partition: give the whole disk"),
        "{err}"
    );
    assert_eq!(image_sum(&img), before);

    // Mounted (read-only: the mount itself writes nothing): refused even
    // with --force.
    let mnt = s.join("mnt");
    let part = d.part(1);
    d.mount(&part, &mnt, "-o ro");
    let (code, out, err) = run_lifeboat(["mkrescue", "-o", o, "--usb", &d.dev, "--force", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!(
            "{part} is mounted at {}: unmount it first",
            mnt.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("not removable"),
        "--force lifts that one: {err}"
    );
    d.unmount_all();
    assert_eq!(image_sum(&img), before, "a mounted disk was written");

    // btrfs: its mounts carry an anonymous device number, not the disk's.
    let part = d.part(2);
    d.mount(&part, &mnt, "-o ro");
    let (code, out, err) = run_lifeboat(["mkrescue", "-o", o, "--usb", &d.dev, "--force", "--yes"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("{part} is mounted at {}", mnt.display())),
        "{err}"
    );
    d.unmount_all();
    assert_eq!(
        image_sum(&img),
        before,
        "a disk with btrfs mounted was written"
    );

    // An existing image file: refused without --force.
    let file = s.join("existing.img");
    std::fs::write(&file, b"not a rescue disk").unwrap();
    let (code, out, err) = run_lifeboat([
        "mkrescue",
        "-o",
        o,
        "--usb",
        file.to_str().unwrap(),
        "--yes",
    ]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("the file exists: add --force"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a rescue disk");
}

#[test]
fn usb_disk_on_a_loop_device_takes_a_backup_in_its_data_partition() {
    require_root!();
    let s = Scratch::new("loop-media-write");
    let out_dir = s.join("rescue");
    let (img, d) = precious_disk(&s);
    let before = image_sum(&img);
    let (code, out, err) = run_lifeboat([
        "mkrescue",
        "-o",
        out_dir.to_str().unwrap(),
        "--no-iso",
        "--usb",
        &d.dev,
        "--force",
        "--yes",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("label precious"),
        "shown before writing: {out}"
    );
    assert_ne!(image_sum(&img), before, "the disk was written");
    drop(d);

    let table = sh(&format!("sfdisk -d '{}'", img.display()));
    assert!(table.contains("label: gpt"), "{table}");
    assert!(
        table.contains("type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
            && table.contains("name=\"LIFEBOAT-EFI\", attrs=\"LegacyBIOSBootable\""),
        "{table}"
    );
    assert!(table.contains("name=\"LIFEBOAT-DATA\""), "{table}");
    let head = std::fs::read(&img).unwrap();
    let gptmbr = std::fs::read("/usr/lib/syslinux/mbr/gptmbr.bin").unwrap();
    assert_eq!(
        &head[..gptmbr.len()],
        &gptmbr[..],
        "BIOS boot code in the MBR"
    );
    assert_eq!(head[446], 0x80, "the protective MBR entry is active");
    assert_eq!(head[450], 0xee);

    // The ESP (FAT, read with mtools at its offset) holds both loaders.
    let esp = format!("{}@@1M", img.display());
    let listing = sh(&format!(
        "mdir -i '{esp}' -a -b ::/EFI/BOOT ::/lifeboat ::/syslinux"
    ));
    for f in [
        "BOOTX64.EFI",
        "vmlinuz",
        "initrd",
        "ldlinux.sys",
        "syslinux.cfg",
    ] {
        assert!(listing.contains(f), "{f} missing from the ESP:\n{listing}");
    }
    let cfg = sh(&format!("mtype -i '{esp}' ::/syslinux/syslinux.cfg"));
    assert!(cfg.contains("lifeboat.usb"), "{cfg}");
    let kernel = std::fs::read(out_dir.join("vmlinuz")).unwrap();
    let on_esp = s.join("vmlinuz.esp");
    sh(&format!(
        "mcopy -i '{esp}' ::/lifeboat/vmlinuz '{}'",
        on_esp.display()
    ));
    assert_eq!(std::fs::read(&on_esp).unwrap(), kernel);

    // `backup create --to usb` finds the data partition by its label,
    // mounts it, writes into its backup folder and unmounts it.
    let src = s.join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hello"), b"hello from the stick\n").unwrap();
    let d = LoopDisk::attach(&img);
    let (code, out, err) = run_lifeboat([
        "backup",
        "create",
        "--to",
        "usb",
        "--source",
        src.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(&d.part(2)),
        "the data partition stays mounted:\n{mounts}"
    );
    let (code, out, err) = run_lifeboat(["backup", "list", "--from", "usb"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().filter(|l| l.contains("full")).count(),
        1,
        "{out}"
    );
    let mut d = d;
    let mnt = s.join("data");
    let part = d.part(2);
    d.mount(&part, &mnt, "-o ro");
    // Counted (a DirEntry would hold the folder open and the mount busy).
    let gens = std::fs::read_dir(mnt.join("backup"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("generation.json").is_file())
        .count();
    assert_eq!(gens, 1, "one generation in the data partition");
    drop(d);

    // Written again (another image: other boot arguments), the stick keeps
    // its data partition byte for byte; only the boot partition is new.
    let part_sum = |d: &LoopDisk| sh(&format!("sync; sha256sum < '{}'", d.part(2)));
    let d = LoopDisk::attach(&img);
    let data_before = part_sum(&d);
    let (code, out, err) = run_lifeboat([
        "mkrescue",
        "-o",
        out_dir.to_str().unwrap(),
        "--no-iso",
        "--append",
        "lifeboat.test=second",
        "--usb",
        &d.dev,
        "--force",
        "--yes",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("LIFEBOAT-DATA partition"), "shown: {out}");
    assert!(out.contains("and its backups are kept"), "{out}");
    assert!(out.contains("kept as it was"), "{out}");
    assert_eq!(part_sum(&d), data_before, "the data partition changed");
    drop(d);
    let cfg = sh(&format!("mtype -i '{esp}' ::/syslinux/syslinux.cfg"));
    assert!(cfg.contains("lifeboat.test=second"), "the new image: {cfg}");
    sh(&format!(
        "mcopy -o -i '{esp}' ::/lifeboat/initrd '{}'",
        on_esp.display()
    ));
    assert_eq!(
        std::fs::read(&on_esp).unwrap(),
        std::fs::read(out_dir.join("initrd")).unwrap(),
        "the boot partition holds the new initrd"
    );
}
