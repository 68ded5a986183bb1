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

const GUEST_JOB: &str = r#"#!/bin/sh
set -e
here=$(pwd)
. ./machine.sh
lifeboat layout save -o "$here/layout.json" > /dev/null
LIFEBOAT_LOG=debug lifeboat layout save -o "$here/layout.json" --luks-headers \
    > "$here/save.txt" 2> "$here/save-debug.txt"
rc=0
lifeboat layout check --against "$here/layout.json" > "$here/check.txt" || rc=$?
echo "$rc" > "$here/check.rc"
lifeboat layout show "$here/layout.json" > "$here/show.txt"
lvm vgs --noheadings -o vg_name,vg_uuid > "$here/vgs.txt"
lvm lvs -a --noheadings -o vg_name,lv_name,lv_uuid > "$here/lvs.txt"
ls -l "$here"/luks-header-*.img > "$here/headers.txt"
# Speed: five captures, timed by /proc/uptime (centiseconds).
for i in 1 2 3 4 5; do
    t0=$(cut -d' ' -f1 /proc/uptime)
    lifeboat layout save -o /tmp/bench.json > /dev/null
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "$t0 $t1" >> "$here/times.txt"
done
"#;

/// device, version, uuid, label, mapping name, mapped device
type LuksRow<'a> = (
    &'a str,
    u32,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<&'a str>,
);
/// device, is_file, uuid, active, priority
type SwapRow<'a> = (&'a str, bool, Option<&'a str>, bool, Option<i32>);

/// Rows of words as `lvm vgs`/`lvm lvs` printed them in the guest.
fn guest_table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.trim_matches(['[', ']']).to_string())
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn layout_save_captures_the_machine_built_in_the_rescue() {
    use lifeboat::layout::*;
    let s = Scratch::new("qemu-layout");
    let dir = job_dir(&s, GUEST_JOB);
    let (job, run) = run_machine(&s, &dir);
    let out = job.read_back(&s.join("out"));
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    assert_eq!(
        read("autorun.rc"),
        "0\n",
        "the guest job failed:\n{}\n{}",
        read("autorun.log"),
        tail(&run.log, 30)
    );
    let l = Layout::load(&out.join("layout.json")).unwrap();
    assert!(out.join("layout.json.prev").exists());
    eprintln!("{}", read("show.txt"));

    // Host and boot.
    assert_eq!(l.host.firmware, Firmware::Uefi);
    assert_eq!(l.host.hostname, "lifeboat-rescue");
    assert_eq!(l.boot.esps, vec!["/dev/vda1"]);
    let debian = l
        .boot
        .efi_entries
        .iter()
        .find(|e| e.label == "debian")
        .expect("the debian entry");
    assert_eq!(
        debian.partition_guid.as_deref(),
        Some("aaaaaaaa-0001-4000-8000-000000000001")
    );
    assert_eq!(debian.loader.as_deref(), Some(r"\EFI\debian\shimx64.efi"));
    assert_eq!(l.boot.boot_order.first(), Some(&debian.number));
    let grub: Vec<(&str, Vec<&str>)> = l
        .boot
        .grub
        .iter()
        .map(|g| {
            (
                g.platform.as_str(),
                g.disks.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        grub,
        vec![("i386-pc", vec!["/dev/vdd"]), ("x86_64-efi", vec![])]
    );
    assert!(l.boot.shim && !l.boot.systemd_boot);
    assert!(l.boot.kernel_cmdline.contains("lifeboat.poweroff"));
    assert!(l.unsupported.is_empty(), "{:?}", l.unsupported);

    // Disks: identities and whether they are needed.
    let disks: Vec<(&str, Option<&str>, u64, bool)> = l
        .disks
        .iter()
        .map(|d| (d.path.as_str(), d.serial.as_deref(), d.size_bytes, d.needed))
        .collect();
    assert_eq!(
        disks,
        vec![
            ("/dev/vda", Some("LBTEST00"), 1 << 30, true),
            ("/dev/vdb", Some("LBTEST01"), 1 << 30, true),
            ("/dev/vdc", Some("LBTEST02"), 512 << 20, true),
            ("/dev/vdd", Some("LBTEST03"), 512 << 20, true),
            ("/dev/vde", Some("LBTEST04"), 64 << 20, false),
            ("/dev/vdf", Some("LBTEST05"), 64 << 20, false),
        ]
    );
    assert_eq!(
        l.disks[4].needed_reason,
        "carries the LIFEBOAT-AUTO job file system"
    );
    assert!(l
        .disks
        .iter()
        .all(|d| d.transport.as_deref() == Some("virtio")));
    let Some(PartitionTable::Gpt(a)) = &l.disks[0].partition_table else {
        panic!("vda has no GPT")
    };
    assert_eq!(a.disk_guid, "aaaaaaaa-0000-4000-8000-00000000000a");
    let pa: Vec<(&str, &str, &str, &str, u64, u64)> = a
        .partitions
        .iter()
        .map(|p| {
            (
                p.device.as_str(),
                p.unique_guid.as_str(),
                p.type_guid.as_str(),
                p.name.as_str(),
                p.first_lba,
                p.attributes,
            )
        })
        .collect();
    assert_eq!(
        pa,
        vec![
            (
                "/dev/vda1",
                "aaaaaaaa-0001-4000-8000-000000000001",
                "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
                "ESP",
                2048,
                1
            ),
            (
                "/dev/vda2",
                "aaaaaaaa-0002-4000-8000-000000000002",
                "a19d880f-05fc-4d3b-a006-743f0f84911e",
                "raid-a",
                2048 + 65536,
                0
            ),
            (
                "/dev/vda3",
                "aaaaaaaa-0003-4000-8000-000000000003",
                "0fc63daf-8483-4772-8e79-3d69d8477de4",
                "data",
                2048 + 65536 + 1228800,
                0
            ),
        ]
    );
    assert_eq!(a.partitions[0].size_bytes, 32 << 20);
    let Some(PartitionTable::Gpt(b)) = &l.disks[1].partition_table else {
        panic!("vdb has no GPT")
    };
    assert_eq!(
        b.partitions[0].type_guid,
        "21686148-6449-6e6f-744e-656564454649"
    );
    let Some(PartitionTable::Mbr(m)) = &l.disks[3].partition_table else {
        panic!("vdd has no MBR")
    };
    assert_eq!(m.disk_signature, 0x1a2b3c4d);
    let pm: Vec<(&str, MbrKind, u8, bool, u64)> = m
        .partitions
        .iter()
        .map(|p| {
            (
                p.device.as_str(),
                p.kind,
                p.type_byte,
                p.bootable,
                p.size_bytes,
            )
        })
        .collect();
    assert_eq!(
        pm,
        vec![
            ("/dev/vdd1", MbrKind::Primary, 0x83, true, 64 << 20),
            (
                "/dev/vdd2",
                MbrKind::Extended,
                0x05,
                false,
                (512 << 20) - (65 << 20)
            ),
            ("/dev/vdd5", MbrKind::Logical, 0x82, false, 64 << 20),
            ("/dev/vdd6", MbrKind::Logical, 0x83, false, 64 << 20),
        ]
    );
    assert_eq!(l.disks[5].partition_table, None);

    // md RAID1.
    assert_eq!(l.md_arrays.len(), 1);
    let md = &l.md_arrays[0];
    assert_eq!(
        (
            md.device.as_str(),
            md.uuid.as_str(),
            md.level.as_str(),
            md.metadata.as_str(),
            md.name.as_deref(),
            md.raid_devices
        ),
        (
            "/dev/md0",
            "11111111:22222222:33333333:44444444",
            "raid1",
            "1.2",
            Some("lifeboat:0"),
            2
        )
    );
    let members: Vec<(&str, Option<u32>)> = md
        .members
        .iter()
        .map(|x| (x.device.as_str(), x.role))
        .collect();
    assert_eq!(
        members,
        vec![("/dev/vda2", Some(0)), ("/dev/vdb2", Some(1))]
    );

    // LUKS 2 on md0, LUKS 1 on a logical partition; header backups 0600.
    let luks: Vec<LuksRow> = l
        .luks
        .iter()
        .map(|x| {
            (
                x.device.as_str(),
                x.version,
                x.uuid.as_str(),
                x.label.as_deref(),
                x.mapping_name.as_deref(),
                x.mapped_device.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        luks,
        vec![
            (
                "/dev/md0",
                2,
                "22222222-0000-4000-8000-000000000002",
                Some("cryptroot"),
                Some("cryptpv"),
                Some("/dev/mapper/cryptpv")
            ),
            (
                "/dev/vdd6",
                1,
                "11111111-0000-4000-8000-000000000001",
                None,
                Some("secret1"),
                Some("/dev/mapper/secret1")
            ),
        ]
    );
    let l2 = &l.luks[0];
    assert_eq!(
        (l2.cipher.as_str(), l2.key_size_bits, l2.pbkdf.as_deref()),
        ("aes-xts-plain64", 512, Some("pbkdf2"))
    );
    assert_eq!(l2.subsystem.as_deref(), Some("lifeboat-test"));
    assert_eq!(l.luks[1].hash.as_deref(), Some("sha256"));
    for x in &l.luks {
        let name = x
            .header_backup
            .as_deref()
            .expect("--luks-headers backs up every header");
        assert_eq!(name, format!("luks-header-{}.img", x.uuid));
        assert!(out.join(name).exists());
    }
    let headers = read("headers.txt");
    assert_eq!(headers.lines().count(), 2, "{headers}");
    assert!(
        headers.lines().all(|h| h.starts_with("-rw------- ")),
        "{headers}"
    );

    // LVM: PVs with fixed UUIDs, VG and LV UUIDs as lvm printed them.
    let pvs: Vec<(&str, &str, Option<&str>)> = l
        .lvm
        .pvs
        .iter()
        .map(|p| (p.device.as_str(), p.uuid.as_str(), p.vg.as_deref()))
        .collect();
    assert_eq!(
        pvs,
        vec![
            (
                "/dev/mapper/cryptpv",
                "LBpv00-0000-0000-0000-0000-0000-000000",
                Some("vg0")
            ),
            (
                "/dev/vdb3",
                "LBpv01-0000-0000-0000-0000-0000-000001",
                Some("vg1")
            ),
            (
                "/dev/vdc1",
                "LBpv02-0000-0000-0000-0000-0000-000002",
                Some("vg1")
            ),
        ]
    );
    for row in guest_table(&read("vgs.txt")) {
        let vg = l.lvm.vgs.iter().find(|v| v.name == row[0]).unwrap();
        assert_eq!(vg.uuid, row[1]);
        assert!(
            vg.metadata.contains(&format!("{} {{", row[0])),
            "vgcfgbackup text of {}",
            row[0]
        );
        assert_eq!(vg.extent_size_bytes, 4 << 20);
    }
    let lv_rows = guest_table(&read("lvs.txt"));
    assert_eq!(lv_rows.len(), l.lvm.lvs.len(), "{lv_rows:?}");
    for row in &lv_rows {
        let lv = l
            .lvm
            .lvs
            .iter()
            .find(|x| x.vg == row[0] && x.name == row[1])
            .unwrap_or_else(|| panic!("{row:?}"));
        assert_eq!(lv.uuid, row[2]);
    }
    let lv = |vg: &str, n: &str| {
        l.lvm
            .lvs
            .iter()
            .find(|x| x.vg == vg && x.name == n)
            .unwrap()
    };
    let shape = |x: &LogicalVolume| {
        (
            x.size_bytes,
            x.layout.clone(),
            x.pool.clone(),
            x.segments[0].segtype.clone(),
        )
    };
    assert_eq!(
        shape(lv("vg0", "root")),
        (160 << 20, "linear".into(), None, "linear".into())
    );
    assert_eq!(
        lv("vg0", "root").segments[0].devices,
        vec!["/dev/mapper/cryptpv(0)"]
    );
    assert_eq!(
        shape(lv("vg0", "home")),
        (100 << 20, "linear".into(), None, "linear".into())
    );
    assert_eq!(
        shape(lv("vg0", "pool")),
        (128 << 20, "thin,pool".into(), None, "thin-pool".into())
    );
    assert_eq!(
        shape(lv("vg0", "thin1")),
        (
            200 << 20,
            "thin,sparse".into(),
            Some("pool".into()),
            "thin".into()
        )
    );
    let stripe = lv("vg1", "stripe");
    assert_eq!(
        shape(stripe),
        (64 << 20, "striped".into(), None, "striped".into())
    );
    assert_eq!(
        (
            stripe.segments[0].stripes,
            stripe.segments[0].stripe_size_bytes
        ),
        (2, Some(64 << 10))
    );
    assert_eq!(
        stripe.segments[0].devices,
        vec!["/dev/vdb3(0)", "/dev/vdc1(0)"]
    );
    assert_eq!(lv("vg0", "pool_tmeta").role, "private,thin,pool,metadata");

    // File systems.
    let fs = |uuid: &str| {
        l.filesystems
            .iter()
            .find(|f| f.uuid.as_deref() == Some(uuid))
            .unwrap_or_else(|| panic!("{uuid}"))
    };
    let cases = [
        (
            "1234-ABCD",
            "vfat",
            "/dev/vda1",
            Some("ESP"),
            "/mnt/sys/boot/efi",
        ),
        (
            "0e000000-0000-4000-8000-000000000001",
            "ext4",
            "/dev/mapper/vg0-root",
            Some("root"),
            "/mnt/sys",
        ),
        (
            "0e000000-0000-4000-8000-000000000002",
            "xfs",
            "/dev/mapper/vg0-home",
            Some("home"),
            "/mnt/sys/home",
        ),
        (
            "0e000000-0000-4000-8000-000000000003",
            "ext4",
            "/dev/mapper/vg0-thin1",
            Some("thin"),
            "/mnt/sys/var/thin",
        ),
        (
            "0e000000-0000-4000-8000-000000000004",
            "ext4",
            "/dev/mapper/vg1-stripe",
            Some("stripe"),
            "/mnt/sys/with space",
        ),
        (
            "0e000000-0000-4000-8000-000000000005",
            "ext4",
            "/dev/vdd1",
            Some("boot"),
            "/mnt/sys/boot",
        ),
        (
            "0e000000-0000-4000-8000-000000000006",
            "ext4",
            "/dev/mapper/secret1",
            Some("secret"),
            "/mnt/sys/secret",
        ),
        (
            "0e000000-0000-4000-8000-000000000007",
            "btrfs",
            "/dev/vda3",
            Some("data"),
            "/mnt/sys/srv",
        ),
    ];
    for (uuid, fstype, dev, label, mp) in cases {
        let f = fs(uuid);
        assert_eq!(
            (f.fstype.as_str(), f.device.as_str(), f.label.as_deref()),
            (fstype, dev, label),
            "{uuid}"
        );
        assert_eq!(
            f.mountpoints.first().map(String::as_str),
            Some(mp),
            "{uuid}"
        );
        assert!(
            f.used_bytes.is_some(),
            "{uuid} is mounted: used bytes known"
        );
    }
    assert_eq!(
        l.filesystems.len(),
        cases.len() + 1,
        "and the job disk's ext4"
    );
    assert!(
        matches!(&fs("1234-ABCD").params, FsParams::Vfat { serial, fat_size: 16, .. } if serial == "1234ABCD")
    );
    assert!(matches!(
        &fs("0e000000-0000-4000-8000-000000000001").params,
        FsParams::Ext { block_size: 4096, inode_size: 256, reserved_blocks_percent, .. } if *reserved_blocks_percent == 2.0
    ));
    assert_eq!(
        fs("0e000000-0000-4000-8000-000000000001").size_bytes,
        160 << 20
    );
    assert!(matches!(
        &fs("0e000000-0000-4000-8000-000000000002").params,
        FsParams::Xfs { crc: true, .. }
    ));
    let btrfs = fs("0e000000-0000-4000-8000-000000000007");
    assert_eq!(btrfs.mountpoints, vec!["/mnt/sys/srv", "/mnt/sys/srv/home"]);
    let FsParams::Btrfs {
        subvolumes,
        default_subvolume_id,
        devices,
        ..
    } = &btrfs.params
    else {
        panic!()
    };
    assert_eq!(devices, &vec!["/dev/vda3".to_string()]);
    let subs: Vec<(&str, bool)> = subvolumes
        .iter()
        .map(|x| (x.path.as_str(), x.readonly))
        .collect();
    assert_eq!(
        subs,
        vec![
            ("@", false),
            ("@home", false),
            ("@snapshots", false),
            ("@snapshots/first", true)
        ]
    );
    assert_eq!(*default_subvolume_id, subvolumes[0].id);

    // Swap: two active areas, one inactive partition, one file.
    let sw: Vec<SwapRow> = l
        .swaps
        .iter()
        .map(|x| {
            (
                x.device.as_str(),
                x.is_file,
                x.uuid.as_deref(),
                x.active,
                x.priority,
            )
        })
        .collect();
    assert_eq!(
        sw,
        vec![
            (
                "/dev/mapper/vg0-swap",
                false,
                Some("05000000-0000-4000-8000-000000000001"),
                true,
                Some(-2)
            ),
            (
                "/dev/vdc2",
                false,
                Some("05000000-0000-4000-8000-000000000002"),
                true,
                Some(5)
            ),
            (
                "/mnt/sys/swapfile",
                true,
                Some("05000000-0000-4000-8000-000000000004"),
                true,
                Some(-3)
            ),
            (
                "/dev/vdd5",
                false,
                Some("05000000-0000-4000-8000-000000000003"),
                false,
                None
            ),
        ]
    );

    // Mounts and configuration files.
    let home = l
        .mounts
        .iter()
        .find(|m| m.mountpoint == "/mnt/sys/srv/home")
        .unwrap();
    assert_eq!(
        (
            home.source.as_str(),
            home.root.as_str(),
            home.fstype.as_str()
        ),
        ("/dev/vda3", "/@home", "btrfs")
    );
    assert!(l
        .mounts
        .iter()
        .any(|m| m.mountpoint == "/mnt/sys/with space"));
    assert_eq!(l.config_files.fstab.len(), 12);
    assert_eq!(l.config_files.crypttab.len(), 2);
    assert_eq!(
        l.config_files.mdadm_conf[0].uuid.as_deref(),
        Some("11111111:22222222:33333333:44444444")
    );

    // Captured again right away: no drift.
    assert_eq!(
        read("check.rc"),
        "0\n",
        "layout check found changes:\n{}",
        read("check.txt")
    );
    assert!(
        read("save.txt").contains("6 disks (4 needed)"),
        "{}",
        read("save.txt")
    );
    assert!(
        read("show.txt").contains("LV thin1"),
        "{}",
        read("show.txt")
    );

    // Speed of `layout save` in the guest.
    let times: Vec<f64> = read("times.txt")
        .lines()
        .map(|l| {
            let v: Vec<f64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            v[1] - v[0]
        })
        .collect();
    eprintln!("layout save in the guest: {times:?} s");
    assert_eq!(times.len(), 5);
}
