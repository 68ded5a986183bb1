//! Loop tier (root): a disk of 512-byte sectors (GPT, ext4 /boot with 1 KiB
//! blocks, ext4 root, XFS with 512-byte sectors, swap) recovered onto a
//! 4K-native loop device (`losetup --sector-size 4096`) of the same size:
//! partitions on 1 MiB in 4 KiB sectors, /boot's block size and the XFS
//! sector size raised, identities and files kept. Then an impossible plan is
//! refused by `plan` and by `recover` before anything is written. And a BIOS
//! MBR source planned to UEFI (`--firmware uefi`), refused when the backup
//! lacks GRUB x86_64-efi.
//! Run single-threaded: `cargo test --test loop_sectors -- --test-threads=1`.

mod common;

use common::*;
use lifeboat::layout::{FsParams, Layout, PartitionTable};

const DISK_GUID: &str = "4c4b0000-0000-4000-8000-000000000001";
const BOOT_UUID: &str = "4c4bf000-0000-4000-8000-000000000001";
const ROOT_UUID: &str = "4c4bf000-0000-4000-8000-000000000002";
const SRV_UUID: &str = "4c4bf000-0000-4000-8000-000000000003";
const SWAP_UUID: &str = "4c4bf000-0000-4000-8000-000000000004";

/// File contents, modes and owners below `root` (one file system).
fn sums(root: &std::path::Path) -> String {
    let mut v: Vec<String> = sh(&format!(
        "cd '{}' && find . -xdev -type f ! -path './lost+found/*' ! -path './var/log/lifeboat/*' \
         | sort | xargs -r -d '\\n' sha256sum && \
         find . -xdev ! -path './lost+found*' ! -path './var' ! -path './var/log*' -printf '%p %m %U:%G %y\\n'",
        root.display()
    ))
    .lines()
    .map(str::to_string)
    .collect();
    v.sort();
    v.join("\n")
}

fn image_sum(p: &std::path::Path) -> String {
    sh(&format!("sha256sum '{}'", p.display()))
}

/// Builds the 512-byte-sector source, saves its layout and backs it up.
/// Returns the source disk's kernel name at capture time and the sums of
/// /, /boot and /srv.
fn source(s: &Scratch) -> (String, [String; 3]) {
    let img = s.join("source.img");
    blank_disk(&img, 800);
    sh(&format!(
        "sgdisk -U {DISK_GUID} -n 1:1M:+100M -t 1:8300 -c 1:boot -n 2:0:+250M -t 2:8300 -c 2:root \
         -n 3:0:+320M -t 3:8300 -c 3:srv -n 4:0:0 -t 4:8200 -c 4:swap '{}' >/dev/null",
        img.display()
    ));
    let mut d = LoopDisk::attach(&img);
    sh(&format!(
        "mkfs.ext4 -q -b 1024 -U {BOOT_UUID} -L boot '{}'",
        d.part(1)
    ));
    sh(&format!(
        "mkfs.ext4 -q -U {ROOT_UUID} -L root '{}'",
        d.part(2)
    ));
    sh(&format!(
        "TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -m uuid={SRV_UUID} -L srv '{}'",
        d.part(3)
    ));
    sh(&format!("mkswap -U {SWAP_UUID} '{}' >/dev/null", d.part(4)));
    let root = s.join("src");
    d.mount(&d.part(2), &root, "");
    d.mount(&d.part(1), &root.join("boot"), "");
    d.mount(&d.part(3), &root.join("srv"), "");
    sh(&format!(
        "cd '{}' && mkdir -p etc usr/share/doc srv/data boot/grub && \
         for i in $(seq 1 200); do echo \"line $i\" > usr/share/doc/f$i; done && \
         dd if=/dev/urandom of=srv/data/blob bs=1M count=8 status=none && \
         dd if=/dev/urandom of=boot/vmlinuz bs=1K count=3001 status=none && \
         echo 'set timeout=1' > boot/grub/grub.cfg && ln -s ../usr/share/doc/f1 etc/link && \
         printf 'UUID={ROOT_UUID} / ext4 defaults 0 1\\nUUID={BOOT_UUID} /boot ext4 defaults 0 2\\n\
UUID={SRV_UUID} /srv xfs defaults 0 2\\nUUID={SWAP_UUID} none swap sw 0 0\\n' > etc/fstab",
        root.display()
    ));
    let all = [
        sums(&root),
        sums(&root.join("boot")),
        sums(&root.join("srv")),
    ];
    save_and_back_up(s, &root, &d.dev);
    (d.dev.clone(), all)
}

/// `layout save` of disk `dev` with the system at `root`, then a backup.
fn save_and_back_up(s: &Scratch, root: &std::path::Path, dev: &str) {
    let layout = s.join("layout.json");
    let backup = s.join("backup");
    let (root, layout, backup) = (
        root.to_str().unwrap(),
        layout.to_str().unwrap(),
        backup.to_str().unwrap(),
    );
    let save = [
        "layout",
        "save",
        "--root",
        root,
        "--only-disk",
        dev,
        "-o",
        layout,
    ];
    let back_up = [
        "backup", "create", "--root", root, "--layout", layout, "--to", backup,
    ];
    for args in [save, back_up] {
        let (code, out, err) = run_lifeboat(args);
        assert_eq!(code, 0, "{}: {out}{err}", args[..2].join(" "));
    }
}

fn args(s: &Scratch, cmd: &str, layout: &str, map: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![cmd.into()];
    if cmd == "recover" {
        v.push("--yes".into());
    }
    for a in [
        "--allow-loop",
        "--layout",
        s.join(layout).to_str().unwrap(),
        "--backup",
        s.join("backup").to_str().unwrap(),
        "--map",
        map,
    ] {
        v.push(a.into());
    }
    v.extend(extra.iter().map(|x| x.to_string()));
    v
}

#[test]
fn loop_512_source_recovered_onto_a_4k_native_disk() {
    require_root!();
    let s = Scratch::new("loop-sectors");
    let (old_dev, [root_sums, boot_sums, srv_sums]) = source(&s);
    let target = LoopDisk::blank(&s.join("target.img"), 800, 4096);
    let map = format!("{old_dev}={}", target.dev);

    let (code, out, err) = run_lifeboat(args(&s, "plan", "layout.json", &map, &[]));
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        format!(
            "partitions of {old_dev} on {}: positions translated from 512-byte to 4096-byte \
             sectors, aligned to 1 MiB",
            target.dev
        ),
        "ext4 /boot: block size 1024 -> 4096, the new disk has 4096-byte sectors".into(),
        "xfs /srv: sector size and log sector size 512 -> 4096, the new disk has 4096-byte sectors"
            .into(),
        "Checked before any write: ".into(),
    ] {
        assert!(out.contains(&line), "plan lacks {line:?}:\n{out}");
    }

    let mnt = s.join("mnt");
    let (code, out, err) = run_lifeboat(args(
        &s,
        "recover",
        "layout.json",
        &map,
        &[
            "--state",
            s.join("state.json").to_str().unwrap(),
            "--mount-root",
            mnt.to_str().unwrap(),
        ],
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("recovery complete"), "{out}");

    // Captured again: 4 KiB sectors, partitions on 1 MiB, parameters raised,
    // identities kept.
    let (code, out, err) = run_lifeboat([
        "layout",
        "save",
        "--only-disk",
        &target.dev,
        "-o",
        s.join("after.json").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let after = Layout::load(&s.join("after.json")).unwrap();
    assert_eq!(after.disks[0].logical_sector_size, 4096);
    let Some(PartitionTable::Gpt(g)) = &after.disks[0].partition_table else {
        panic!("no GPT on {}", target.dev);
    };
    assert_eq!(g.disk_guid, DISK_GUID);
    assert_eq!(g.partitions.len(), 4);
    for p in &g.partitions {
        assert_eq!(p.first_lba * 4096 % (1 << 20), 0, "{p:?}");
    }
    let fs = |uuid: &str| {
        after
            .filesystems
            .iter()
            .find(|f| f.uuid.as_deref() == Some(uuid))
            .unwrap_or_else(|| panic!("no file system {uuid} in {:#?}", after.filesystems))
            .clone()
    };
    assert!(matches!(
        fs(BOOT_UUID).params,
        FsParams::Ext {
            block_size: 4096,
            ..
        }
    ));
    assert_eq!(fs(BOOT_UUID).label.as_deref(), Some("boot"));
    assert!(matches!(
        fs(SRV_UUID).params,
        FsParams::Xfs {
            sector_size: 4096,
            ..
        }
    ));
    assert_eq!(fs(ROOT_UUID).label.as_deref(), Some("root"));
    assert_eq!(after.swaps[0].uuid.as_deref(), Some(SWAP_UUID));

    let mut target = target;
    let c = s.join("check");
    target.mount(&target.part(2), &c, "");
    target.mount(&target.part(1), &c.join("boot"), "");
    target.mount(&target.part(3), &c.join("srv"), "");
    assert_same_lines(&sums(&c.join("boot")), &boot_sums);
    assert_same_lines(&sums(&c.join("srv")), &srv_sums);
    assert_same_lines(&sums(&c), &root_sums);
    target.unmount_all();
}

#[test]
fn loop_an_impossible_plan_is_refused_before_any_write() {
    require_root!();
    let s = Scratch::new("loop-sectors-impossible");
    let (old_dev, _) = source(&s);
    // meta_bg and resize_inode cannot be together: mke2fs refuses.
    let text = std::fs::read_to_string(s.join("layout.json")).unwrap();
    let mut layout: serde_json::Value = serde_json::from_str(&text).unwrap();
    for f in layout["filesystems"].as_array_mut().unwrap() {
        if f["uuid"] == BOOT_UUID {
            let feats = f["params"]["features"].as_array_mut().unwrap();
            assert!(feats.iter().any(|x| x == "resize_inode"), "{feats:?}");
            feats.push("meta_bg".into());
        }
    }
    std::fs::write(s.join("bad.json"), layout.to_string()).unwrap();
    let target = LoopDisk::blank(&s.join("target.img"), 800, 4096);
    let map = format!("{old_dev}={}", target.dev);
    let before = image_sum(&s.join("target.img"));

    let (code, out, err) = run_lifeboat(args(&s, "plan", "bad.json", &map, &[]));
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("the plan cannot be carried out on these disks (nothing was written)"),
        "{err}"
    );
    assert!(
        err.contains(&format!("ext4 /boot on {}p1", target.dev))
            && err.contains("4096-byte sectors")
            && err.contains("resize_inode and meta_bg features are not compatible"),
        "{err}"
    );
    let (code, out, err) = run_lifeboat(args(
        &s,
        "recover",
        "bad.json",
        &map,
        &[
            "--state",
            s.join("state.json").to_str().unwrap(),
            "--mount-root",
            s.join("mnt").to_str().unwrap(),
        ],
    ));
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("resize_inode and meta_bg"), "{err}");
    assert_eq!(
        image_sum(&s.join("target.img")),
        before,
        "the refused plan wrote to the disk"
    );
}

/// An MBR source (ext4 / and swap) with GRUB's BIOS files, saved and backed
/// up; `with_grub_efi` adds GRUB's x86_64-efi modules to the tree.
fn mbr_source(s: &Scratch, with_grub_efi: bool) -> String {
    let img = s.join("source.img");
    blank_disk(&img, 1000);
    sh(&format!(
        "printf 'label: dos\\nlabel-id: 0x1a2b3c4d\\nstart=2048, size=1500000, type=83, bootable\\n\
         type=82\\n' | sfdisk -q '{}'",
        img.display()
    ));
    let mut d = LoopDisk::attach(&img);
    sh(&format!(
        "mkfs.ext4 -q -U {ROOT_UUID} -L root '{}'",
        d.part(1)
    ));
    sh(&format!("mkswap -U {SWAP_UUID} '{}' >/dev/null", d.part(2)));
    let root = s.join("src");
    d.mount(&d.part(1), &root, "");
    let efi = if with_grub_efi {
        "mkdir -p usr/lib/grub/x86_64-efi && echo mod > usr/lib/grub/x86_64-efi/normal.mod && "
    } else {
        ""
    };
    sh(&format!(
        "cd '{}' && mkdir -p etc boot/grub/i386-pc usr/lib/grub/i386-pc && \
         echo mod > usr/lib/grub/i386-pc/normal.mod && {efi}\
         printf 'PARTUUID=1a2b3c4d-01 / ext4 defaults 0 1\\n' > etc/fstab",
        root.display()
    ));
    save_and_back_up(s, &root, &d.dev);
    d.dev.clone()
}

#[test]
fn loop_bios_to_uefi_needs_grub_efi_in_the_backup_and_is_refused_before_any_write() {
    require_root!();
    let s = Scratch::new("loop-firmware-refused");
    let old_dev = mbr_source(&s, false);
    let target = LoopDisk::blank(&s.join("target.img"), 1000, 4096);
    let map = format!("{old_dev}={}", target.dev);
    let before = image_sum(&s.join("target.img"));
    for cmd in ["plan", "recover"] {
        let state = s.join("state.json");
        let (code, out, err) = run_lifeboat(args(
            &s,
            cmd,
            "layout.json",
            &map,
            &["--firmware", "uefi", "--state", state.to_str().unwrap()]
                [..if cmd == "plan" { 2 } else { 4 }],
        ));
        assert_ne!(code, 0, "{cmd}: {out}{err}");
        assert!(
            err.contains("(/usr/lib/grub/x86_64-efi, Debian package grub-efi-amd64-bin), and the backup does not hold it"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(
        image_sum(&s.join("target.img")),
        before,
        "the refused plan wrote to the disk"
    );
}

#[test]
fn loop_bios_mbr_planned_to_uefi_onto_a_4k_disk() {
    require_root!();
    let s = Scratch::new("loop-firmware-plan");
    let old_dev = mbr_source(&s, true);
    let target = LoopDisk::blank(&s.join("target.img"), 1000, 4096);
    let map = format!("{old_dev}={}", target.dev);
    let (code, out, err) = run_lifeboat(args(
        &s,
        "plan",
        "layout.json",
        &map,
        &["--firmware", "uefi"],
    ));
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        "firmware: converted to UEFI boot (--firmware uefi): GRUB x86_64-efi with an EFI boot entry and the fallback loader EFI/BOOT/BOOTX64.EFI".to_string(),
        format!("firmware: MBR of {old_dev} converted to GPT with the same partitions (PARTUUIDs rewritten)"),
        format!("firmware: new EFI system partition {}p3 (260.0 MiB) on {}", target.dev, target.dev),
        format!("write GPT on {}", target.dev),
        "PARTUUID=1a2b3c4d-01 -> PARTUUID=".to_string(),
        "convert the restored system to UEFI boot (GRUB from its grub-efi-amd64-bin)".to_string(),
        "3 mkfs/mkswap commands".to_string(),
    ] {
        assert!(out.contains(&line), "plan lacks {line:?}:\n{out}");
    }
    let (code, out, err) = run_lifeboat(args(
        &s,
        "plan",
        "layout.json",
        &map,
        &["--firmware", "same"],
    ));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("firmware:") && out.contains("write MBR on"),
        "{out}"
    );
    let (code, _, err) = run_lifeboat(args(
        &s,
        "plan",
        "layout.json",
        &map,
        &["--firmware", "efi"],
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected uefi, bios or same"), "{err}");
}
