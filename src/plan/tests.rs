//! Plans for typical layouts onto same-size, larger, smaller and renamed disks.

use super::*;
use crate::layout::tests::minimal;
use crate::layout::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

fn gpt_part(
    disk: &str,
    n: u32,
    first: u64,
    last: u64,
    type_guid: &str,
    name: &str,
) -> GptPartition {
    GptPartition {
        number: n,
        device: partition_path(disk, n),
        first_lba: first,
        last_lba: last,
        size_bytes: (last - first + 1) * 512,
        type_guid: type_guid.into(),
        unique_guid: format!("00000000-0000-4000-8000-00000000000{n}"),
        name: name.into(),
        attributes: 0,
    }
}

fn fs(device: &str, fstype: &str, uuid: &str, size: u64, used: u64, mp: &str) -> Filesystem {
    Filesystem {
        device: device.into(),
        fstype: fstype.into(),
        uuid: Some(uuid.into()),
        label: None,
        size_bytes: size,
        used_bytes: Some(used),
        mountpoints: vec![mp.into()],
        params: FsParams::Other {},
    }
}

fn lv(name: &str, size: u64) -> LogicalVolume {
    LogicalVolume {
        vg: "vg0".into(),
        name: name.into(),
        uuid: format!("uuid-{name}"),
        size_bytes: size,
        device: format!("/dev/mapper/vg0-{name}"),
        layout: "linear".into(),
        role: "public".into(),
        pool: None,
        active: true,
        segments: vec![LvSegment {
            segtype: "linear".into(),
            start_bytes: 0,
            size_bytes: size,
            stripes: 1,
            stripe_size_bytes: None,
            devices: vec!["/dev/vda4(0)".into()],
        }],
    }
}

fn mount(mp: &str, source: &str, fstype: &str) -> Mount {
    Mount {
        mountpoint: mp.into(),
        source: source.into(),
        fstype: fstype.into(),
        options: "rw,relatime".into(),
        fs_options: "rw".into(),
        root: "/".into(),
    }
}

/// A 10 GiB disk: BIOS boot, ESP, /boot, LVM PV with root (4 GiB, 1 GiB
/// used), home (3 GiB xfs, 2 GiB used), swap (512 MiB) and free space.
fn uefi_lvm() -> Layout {
    let mut l = minimal();
    let sectors = 10 * GIB / 512;
    let last = sectors - 34;
    l.disks = vec![Disk {
        name: "vda".into(),
        path: "/dev/vda".into(),
        size_bytes: 10 * GIB,
        logical_sector_size: 512,
        physical_sector_size: 512,
        rotational: false,
        removable: false,
        transport: Some("virtio".into()),
        model: None,
        serial: Some("SRC".into()),
        wwn: None,
        by_id: vec![],
        needed: true,
        needed_reason: "holds /".into(),
        partition_table: Some(PartitionTable::Gpt(GptTable {
            disk_guid: "11111111-2222-4333-8444-555555555555".into(),
            first_usable_lba: 34,
            last_usable_lba: last,
            partition_entry_lba: 2,
            num_partition_entries: 128,
            partition_entry_size: 128,
            problems: vec![],
            partitions: vec![
                gpt_part(
                    "/dev/vda",
                    1,
                    2048,
                    4095,
                    "21686148-6449-6e6f-744e-656564454649",
                    "bios",
                ),
                gpt_part(
                    "/dev/vda",
                    2,
                    4096,
                    413695,
                    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
                    "esp",
                ),
                gpt_part(
                    "/dev/vda",
                    3,
                    413696,
                    1437695,
                    "0fc63daf-8483-4772-8e79-3d69d8477de4",
                    "boot",
                ),
                gpt_part(
                    "/dev/vda",
                    4,
                    1437696,
                    last,
                    "e6d6d379-f507-44c2-a23c-238f2a3df928",
                    "lvm",
                ),
            ],
        })),
    }];
    let pv_size = (last - 1437696 + 1) * 512;
    l.lvm.pvs = vec![PhysicalVolume {
        device: "/dev/vda4".into(),
        uuid: "pv-uuid".into(),
        vg: Some("vg0".into()),
        size_bytes: pv_size,
        dev_size_bytes: pv_size,
        pe_start_bytes: MIB,
    }];
    l.lvm.vgs = vec![VolumeGroup {
        name: "vg0".into(),
        uuid: "vg-uuid".into(),
        extent_size_bytes: 4 * MIB,
        size_bytes: pv_size - MIB,
        free_bytes: 0,
        metadata: String::new(),
    }];
    l.lvm.lvs = vec![
        lv("root", 4 * GIB),
        lv("home", 3 * GIB),
        lv("swap", 512 * MIB),
    ];
    // In that order on the PV (4 MiB extents).
    l.lvm.lvs[1].segments[0].devices = vec!["/dev/vda4(1024)".into()];
    l.lvm.lvs[2].segments[0].devices = vec!["/dev/vda4(1792)".into()];
    l.filesystems = vec![
        fs(
            "/dev/vda2",
            "vfat",
            "ABCD-1234",
            200 * MIB,
            5 * MIB,
            "/boot/efi",
        ),
        fs(
            "/dev/vda3",
            "ext4",
            "boot-uuid",
            500 * MIB,
            80 * MIB,
            "/boot",
        ),
        fs(
            "/dev/mapper/vg0-root",
            "ext4",
            "root-uuid",
            4 * GIB,
            GIB,
            "/",
        ),
        fs(
            "/dev/mapper/vg0-home",
            "xfs",
            "home-uuid",
            3 * GIB,
            2 * GIB,
            "/home",
        ),
    ];
    l.swaps = vec![Swap {
        device: "/dev/mapper/vg0-swap".into(),
        is_file: false,
        uuid: Some("swap-uuid".into()),
        label: None,
        size_bytes: 512 * MIB,
        active: true,
        priority: None,
    }];
    l.mounts = vec![
        mount("/", "/dev/mapper/vg0-root", "ext4"),
        mount("/boot", "/dev/vda3", "ext4"),
        mount("/boot/efi", "/dev/vda2", "vfat"),
        mount("/home", "/dev/mapper/vg0-home", "xfs"),
    ];
    l.boot.esps = vec!["/dev/vda2".into()];
    l.boot.grub = vec![
        GrubTarget {
            platform: "i386-pc".into(),
            disks: vec!["/dev/vda".into()],
        },
        GrubTarget {
            platform: "x86_64-efi".into(),
            disks: vec![],
        },
    ];
    l.boot.efi_entries = vec![EfiBootEntry {
        number: "0003".into(),
        label: "debian".into(),
        active: true,
        partition_guid: Some("00000000-0000-4000-8000-000000000002".into()),
        loader: Some("\\EFI\\debian\\shimx64.efi".into()),
        device_path: String::new(),
    }];
    l
}

fn target(path: &str, size: u64) -> TargetDisk {
    TargetDisk {
        name: path.trim_start_matches("/dev/").into(),
        path: path.into(),
        size_bytes: size,
        logical_sector_size: 512,
        serial: Some("NEW".into()),
        wwn: None,
        model: None,
        removable: false,
        read_only: false,
        contents: Default::default(),
    }
}

fn input(targets: Vec<TargetDisk>) -> PlanInput {
    PlanInput {
        targets,
        backup: Some("/backup".into()),
        uefi: true,
        ..PlanInput::default()
    }
}

fn table(plan: &Plan) -> &GptTable {
    match plan.steps.iter().find_map(|s| match s {
        Step::Partition {
            table: PartitionTable::Gpt(g),
            ..
        } => Some(g),
        _ => None,
    }) {
        Some(g) => g,
        None => panic!("no GPT step in {plan:#?}"),
    }
}

fn lv_sizes(plan: &Plan) -> Vec<(String, u64)> {
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::CreateVg { lvs, .. } => Some(
                lvs.iter()
                    .map(|l| (l.lv.name.clone(), l.size_bytes))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap()
}

#[test]
fn same_size_disk_is_an_exact_copy() {
    let l = uefi_lvm();
    let plan = build(&l, &input(vec![target("/dev/vda", 10 * GIB)])).unwrap();
    let old = match &l.disks[0].partition_table {
        Some(PartitionTable::Gpt(g)) => g.clone(),
        _ => unreachable!(),
    };
    assert_eq!(table(&plan), &old);
    assert_eq!(
        lv_sizes(&plan),
        [
            ("root".into(), 4 * GIB),
            ("home".into(), 3 * GIB),
            ("swap".into(), 512 * MIB)
        ]
    );
    assert!(plan.sizes.is_empty(), "{:?}", plan.sizes);
    assert!(plan.renames.is_empty());
    let kinds: Vec<&str> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::Partition { .. } => "partition",
            Step::CreateMd { .. } => "md",
            Step::FormatLuks { .. } => "luks",
            Step::CreateVg { .. } => "vg",
            Step::Mkfs { .. } => "mkfs",
            Step::Mkswap { .. } => "mkswap",
            Step::Mount { .. } => "mount",
            Step::Restore { .. } => "restore",
            Step::FixConfig { .. } => "fixconfig",
            Step::Network { .. } => "network",
            Step::Migrate { .. } => "migrate",
            Step::Initramfs => "initramfs",
            Step::Bootloader { .. } => "bootloader",
            Step::Verify => "verify",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "partition",
            "vg",
            "mkfs",
            "mkfs",
            "mkfs",
            "mkfs",
            "mkswap",
            "mount",
            "restore",
            "initramfs",
            "bootloader",
            "verify"
        ]
    );
    let mounts = plan.steps.iter().find_map(|s| match s {
        Step::Mount { mounts } => Some(
            mounts
                .iter()
                .map(|m| m.mountpoint.as_str())
                .collect::<Vec<_>>(),
        ),
        _ => None,
    });
    assert_eq!(mounts.unwrap(), ["/", "/boot", "/home", "/boot/efi"]);
}

#[test]
fn larger_renamed_disk_grows_pv_and_lvs_and_renames_devices() {
    let l = uefi_lvm();
    let plan = build(&l, &input(vec![target("/dev/nvme0n1", 20 * GIB)])).unwrap();
    let g = table(&plan);
    assert_eq!(g.partitions[0].device, "/dev/nvme0n1p1");
    // fixed partitions keep LBAs and sizes
    for i in 0..3 {
        let old = match &l.disks[0].partition_table {
            Some(PartitionTable::Gpt(o)) => o.partitions[i].clone(),
            _ => unreachable!(),
        };
        assert_eq!(
            (g.partitions[i].first_lba, g.partitions[i].last_lba),
            (old.first_lba, old.last_lba)
        );
    }
    assert_eq!(g.last_usable_lba, 20 * GIB / 512 - 34);
    assert!(g.partitions[3].size_bytes > 19 * GIB - 800 * MIB);
    let sizes = lv_sizes(&plan);
    assert!(
        sizes[0].1 > 8 * GIB && sizes[0].1 < 9 * GIB,
        "root grows about 2x: {sizes:?}"
    );
    assert_eq!(
        plan.renames.get("/dev/vda2").map(String::as_str),
        Some("/dev/nvme0n1p2")
    );
    assert!(plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::FixConfig { .. })));
    let text = render::render(&plan);
    assert!(
        text.contains("/dev/vda (10.0 GiB) -> /dev/nvme0n1 (20.0 GiB)  [size order]"),
        "{text}"
    );
    assert!(text.contains("logical volume vg0/root"), "{text}");
}

#[test]
fn smaller_disk_shrinks_to_fit_the_data() {
    let l = uefi_lvm();
    let plan = build(&l, &input(vec![target("/dev/sdb", 6 * GIB)])).unwrap();
    let sizes = lv_sizes(&plan);
    let home = sizes.iter().find(|(n, _)| n == "home").unwrap().1;
    assert!(
        home >= 2 * GIB + 200 * MIB,
        "home keeps room for its 2 GiB of data: {sizes:?}"
    );
    assert!(table(&plan).partitions[3].last_lba <= table(&plan).last_usable_lba);
}

#[test]
fn too_small_disk_says_short_by() {
    let l = uefi_lvm();
    let err = build(&l, &input(vec![target("/dev/sdb", 3 * GIB)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dev/sdb (3.0 GiB) is too small for the partitions of /dev/vda: short by "),
        "{err}"
    );
}

#[test]
fn without_backup_nothing_is_restored_or_booted() {
    let l = uefi_lvm();
    let mut i = input(vec![target("/dev/vda", 10 * GIB)]);
    i.backup = None;
    let plan = build(&l, &i).unwrap();
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Restore { .. } | Step::Bootloader { .. })));
    assert!(plan.warnings.iter().any(|w| w.contains("no backup given")));
}

/// The layout of a system that was mounted under /mnt/target when it was
/// captured without `--root`.
fn captured_under_mnt() -> Layout {
    let mut l = uefi_lvm();
    let under = |mp: &str| format!("/mnt/target{}", mp.trim_end_matches('/'));
    for f in &mut l.filesystems {
        f.mountpoints = f.mountpoints.iter().map(|m| under(m)).collect();
    }
    for m in &mut l.mounts {
        m.mountpoint = under(&m.mountpoint);
    }
    l
}

#[test]
fn a_backup_restored_nowhere_is_an_error_naming_layout_save_root() {
    let l = captured_under_mnt();
    let mut i = input(vec![target("/dev/vda", 10 * GIB)]);
    i.backup_filesystems = vec!["/".into(), "/boot".into(), "/home".into()];
    let plan = build(&l, &i).unwrap();
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Restore { .. })));
    assert_eq!(plan.errors.len(), 1, "{:?}", plan.errors);
    let e = &plan.errors[0];
    assert!(
        e.starts_with("the plan restores nothing from the backup /backup: the layout's file systems are mounted under /mnt/target, not at /"),
        "{e}"
    );
    assert!(
        e.contains("`lifeboat layout save --root /mnt/target`"),
        "{e}"
    );
    assert!(e.contains("or give --no-restore"), "{e}");
    assert!(render::render(&plan).contains("\nErrors:\n  - the plan restores nothing"));

    // --no-restore says it is intended: no error, the disks only.
    i.no_restore = true;
    let plan = build(&l, &i).unwrap();
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert!(plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::CreateVg { .. })));
    assert!(
        plan.warnings.iter().any(|w| w.starts_with("--no-restore:")),
        "{:?}",
        plan.warnings
    );
    // Same with a root that is recreated: nothing restored or booted.
    let plan = build(&uefi_lvm(), &i).unwrap();
    assert!(plan.errors.is_empty());
    assert!(!plan
        .steps
        .iter()
        .any(|s| matches!(s, Step::Restore { .. } | Step::Bootloader { .. })));
}

#[test]
fn a_backup_file_system_left_out_is_an_error() {
    let mut i = input(vec![target("/dev/vda", 10 * GIB)]);
    i.backup_filesystems = vec!["/".into(), "/boot".into(), "/home".into()];
    let plan = build(&uefi_lvm(), &i).unwrap();
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    i.backup_filesystems.push("/srv".into());
    let plan = build(&uefi_lvm(), &i).unwrap();
    assert_eq!(
        plan.errors,
        [
            "the plan leaves out file system the backup /backup holds: /srv (not among the \
          recreated and mounted ones; check --map and the layout); or give --no-restore to \
          recreate the disks without restoring"
        ]
    );
    // No backup, no error.
    i.backup = None;
    assert!(build(&uefi_lvm(), &i).unwrap().errors.is_empty());
}

/// A root holding 97.5 MiB needs 97.5 MiB + 64 MiB (10% would be less)
/// = 162 MiB, aligned up to the 4 MiB extents of its LV: 164 MiB. The plan
/// shows the floor of each file system, as docs/recovery.md explains it.
#[test]
fn least_sizes_follow_the_documented_rule_and_are_shown() {
    let l = uefi_lvm();
    let mut i = input(vec![target("/dev/vda", 10 * GIB)]);
    let root_used = 97 * MIB + MIB / 2;
    i.manifest_used = [
        ("root-uuid".to_string(), root_used),
        ("home-uuid".to_string(), 2 * GIB),
    ]
    .into();
    let plan = build(&l, &i).unwrap();
    let root = plan
        .floors
        .iter()
        .find(|f| f.mountpoint.as_deref() == Some("/"))
        .unwrap();
    assert_eq!(
        (root.used_bytes, root.headroom_bytes, root.least_bytes),
        (root_used, 64 * MIB, 162 * MIB)
    );
    assert_eq!(root.new_bytes, Some(4 * GIB), "a same-size disk keeps it");
    let home = plan
        .floors
        .iter()
        .find(|f| f.device.ends_with("home"))
        .unwrap();
    // 10% of 2 GiB is more than 64 MiB.
    assert_eq!(home.least_bytes, 2 * GIB + 205 * MIB);
    // The others by their usage in the layout.
    assert_eq!(plan.floors.len(), 4);
    let text = render::render(&plan);
    assert!(
        text.contains("Least sizes (used bytes + 10%, at least 64.0 MiB more):"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("  / (ext4 on /dev/mapper/vg0-root)")
                && l.ends_with("97.5 MiB used + 64.0 MiB -> at least 162.0 MiB; gets 4.0 GiB")),
        "{text}"
    );
    // On a disk that makes it shrink, the root gets its floor aligned to
    // the extent size, and no less.
    let plan = build(&l, &{
        let mut i = i.clone();
        i.targets = vec![target("/dev/sdb", 3 * GIB + 512 * MIB)];
        i
    })
    .unwrap();
    let root_lv = lv_sizes(&plan)
        .into_iter()
        .find(|(n, _)| n == "root")
        .unwrap()
        .1;
    assert!(root_lv >= 164 * MIB, "{root_lv}");
    // The documentation states the same rule.
    let doc = include_str!("../../docs/recovery.md")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        doc.contains(
            "used bytes from the backup manifest plus 10% of them, and at least 64 MiB more"
        ),
        "docs/recovery.md does not state the rule"
    );
}

#[test]
fn plan_round_trips_as_json() {
    let plan = build(&uefi_lvm(), &input(vec![target("/dev/vda", 10 * GIB)])).unwrap();
    let text = serde_json::to_string(&plan).unwrap();
    let back: Plan = serde_json::from_str(&text).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn the_plan_shows_each_target_by_identity_and_content() {
    let mut t = target("/dev/nvme0n1", 20 * GIB);
    t.model = Some("Samsung SSD 980".into());
    t.wwn = Some("eui.0025388b11111111".into());
    t.contents.table = Some(targets::TableInfo {
        kind: "GPT".into(),
        partitions: 2,
        id: "0d0d0d0d-0000-4000-8000-000000000001".into(),
    });
    let plan = build(&uefi_lvm(), &input(vec![t])).unwrap();
    let text = render::render(&plan);
    assert!(
        text.contains(
            "  /dev/vda (10.0 GiB) -> /dev/nvme0n1 (20.0 GiB)  [size order]\n      /dev/nvme0n1: \
             Samsung SSD 980, serial NEW, WWN eui.0025388b11111111; holds GPT (disk GUID \
             0d0d0d0d-0000-4000-8000-000000000001, 2 partitions)\n"
        ),
        "{text}"
    );
}

#[test]
fn unattended_plans_size_order_only_onto_blank_disks() {
    let mut i = input(vec![target("/dev/nvme0n1", 20 * GIB)]);
    i.unattended = true;
    assert!(build(&uefi_lvm(), &i).is_ok());
    i.targets[0].contents.unreadable = Some("I/O error".into());
    let err = build(&uefi_lvm(), &i).unwrap_err().to_string();
    assert!(
        err.starts_with("unattended recovery does not choose disks by size"),
        "{err}"
    );
    i.maps = vec![("/dev/vda".into(), "/dev/nvme0n1".into())];
    assert!(build(&uefi_lvm(), &i).is_ok());
}

#[test]
fn partition_names() {
    assert_eq!(partition_path("/dev/sda", 2), "/dev/sda2");
    assert_eq!(partition_path("/dev/nvme0n1", 2), "/dev/nvme0n1p2");
    assert_eq!(partition_path("/dev/loop7", 1), "/dev/loop7p1");
    assert_eq!(partition_path("/dev/mmcblk0", 1), "/dev/mmcblk0p1");
}

/// The layout of `uefi_lvm` with a thin pool (and its hidden metadata,
/// data and spare LVs, as lvm reports them) holding one thin volume.
fn uefi_lvm_thin() -> Layout {
    let mut l = uefi_lvm();
    let hidden = |name: &str, size: u64, role: &str| LogicalVolume {
        role: role.into(),
        ..lv(name, size)
    };
    l.lvm.lvs[0].size_bytes = 3 * GIB - 8 * MIB;
    let mut pool = lv("pool", GIB);
    pool.role = "private,thin,pool".into();
    pool.layout = "thin,pool".into();
    pool.segments[0].segtype = "thin-pool".into();
    pool.segments[0].devices = vec!["pool_tdata(0)".into()];
    let mut data = lv("data", 5 * GIB);
    data.role = "public".into();
    data.layout = "thin,sparse".into();
    data.pool = Some("pool".into());
    data.segments[0].segtype = "thin".into();
    data.segments[0].devices = vec![];
    l.lvm.lvs.extend([
        pool,
        hidden("pool_tdata", GIB, "private,thin,pool,data"),
        hidden("pool_tmeta", 4 * MIB, "private,thin,pool,metadata"),
        hidden("lvol0_pmspare", 4 * MIB, "private,pool,spare"),
        data,
    ]);
    l.filesystems.push(fs(
        "/dev/mapper/vg0-data",
        "ext4",
        "data-uuid",
        5 * GIB,
        200 * MIB,
        "/srv",
    ));
    l.mounts.push(mount("/srv", "/dev/mapper/vg0-data", "ext4"));
    l
}

#[test]
fn thin_pools_are_created_before_their_volumes_and_scale() {
    let l = uefi_lvm_thin();
    assert!(!l
        .lvm
        .lvs
        .iter()
        .find(|v| v.name == "pool")
        .unwrap()
        .is_hidden());
    let plan = build(&l, &input(vec![target("/dev/vda", 10 * GIB)])).unwrap();
    let internal = plan.steps.iter().find_map(|s| match s {
        Step::CreateVg { internal_uuids, .. } => Some(internal_uuids.clone()),
        _ => None,
    });
    assert_eq!(
        internal.unwrap().into_iter().collect::<Vec<_>>(),
        [
            (
                "lvol0_pmspare".to_string(),
                "uuid-lvol0_pmspare".to_string()
            ),
            ("pool_tdata".into(), "uuid-pool_tdata".into()),
            ("pool_tmeta".into(), "uuid-pool_tmeta".into()),
        ],
        "the UUIDs LVM's own sub-volumes get back"
    );
    let same = lv_sizes(&plan);
    let names: Vec<&str> = same.iter().map(|(n, _)| n.as_str()).collect();
    let pos = |n: &str| names.iter().position(|x| *x == n);
    assert!(pos("pool").unwrap() < pos("data").unwrap(), "{same:?}");
    assert_eq!(pos("pool_tdata"), None, "hidden LVs come with their pool");
    assert_eq!(pos("lvol0_pmspare"), None);
    assert!(same.contains(&("pool".into(), GIB)), "{same:?}");
    assert!(same.contains(&("data".into(), 5 * GIB)), "{same:?}");

    let larger = lv_sizes(&build(&l, &input(vec![target("/dev/sdb", 20 * GIB)])).unwrap());
    let size = |sizes: &[(String, u64)], n: &str| sizes.iter().find(|(x, _)| x == n).unwrap().1;
    assert!(size(&larger, "pool") > GIB, "{larger:?}");
    assert_eq!(
        size(&larger, "data"),
        5 * GIB,
        "a thin volume keeps its virtual size"
    );

    let smaller = lv_sizes(&build(&l, &input(vec![target("/dev/sdb", 8 * GIB)])).unwrap());
    let pool = size(&smaller, "pool");
    assert!(
        (200 * MIB..GIB).contains(&pool),
        "the pool holds its volume's data: {smaller:?}"
    );
}

/// uefi_lvm with vg0 spread over a second (slow) disk vdb of `slow` bytes:
/// root on the fast PV, home first on the slow PV then on the fast one,
/// swap on the slow one.
fn two_disk_vg(slow: u64) -> Layout {
    let mut l = uefi_lvm();
    let mut d = l.disks[0].clone();
    d.name = "vdb".into();
    d.path = "/dev/vdb".into();
    d.size_bytes = slow;
    d.serial = Some("SLOW".into());
    d.rotational = true;
    let last = slow / 512 - 34;
    let mut g = match d.partition_table.take() {
        Some(PartitionTable::Gpt(g)) => g,
        _ => unreachable!(),
    };
    g.disk_guid = "11111111-2222-4333-8444-666666666666".into();
    g.last_usable_lba = last;
    g.partitions = vec![gpt_part(
        "/dev/vdb",
        1,
        2048,
        last,
        "e6d6d379-f507-44c2-a23c-238f2a3df928",
        "slow",
    )];
    g.partitions[0].unique_guid = "00000000-0000-4000-8000-0000000000b1".into();
    d.partition_table = Some(PartitionTable::Gpt(g));
    l.disks.push(d);
    let pv2 = (last - 2048 + 1) * 512;
    l.lvm.pvs.push(PhysicalVolume {
        device: "/dev/vdb1".into(),
        uuid: "pv2-uuid".into(),
        vg: Some("vg0".into()),
        size_bytes: pv2,
        dev_size_bytes: pv2,
        pe_start_bytes: MIB,
    });
    let seg = |start: u64, size: u64, dev: &str| LvSegment {
        segtype: "linear".into(),
        start_bytes: start,
        size_bytes: size,
        stripes: 1,
        stripe_size_bytes: None,
        devices: vec![dev.into()],
    };
    let lvs = &mut l.lvm.lvs;
    lvs[0].segments = vec![seg(0, 4 * GIB, "/dev/vda4(0)")];
    // Logical order: the slow part first.
    lvs[1].segments = vec![
        seg(2 * GIB, GIB, "/dev/vda4(1024)"),
        seg(0, 2 * GIB, "/dev/vdb1(0)"),
    ];
    lvs[2].segments = vec![seg(0, 512 * MIB, "/dev/vdb1(512)")];
    l
}

fn two_targets(fast: u64, slow: u64) -> PlanInput {
    let mut i = input(vec![target("/dev/sda", fast), target("/dev/sdb", slow)]);
    i.targets[1].serial = Some("NEW2".into());
    i.maps = vec![
        ("/dev/vda".into(), "/dev/sda".into()),
        ("/dev/vdb".into(), "/dev/sdb".into()),
    ];
    i
}

fn placements(plan: &Plan) -> Vec<(String, Placement)> {
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::CreateVg { lvs, .. } => Some(
                lvs.iter()
                    .map(|l| (l.lv.name.clone(), l.placement.clone()))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap()
}

fn range(pv: &str, first: u64, count: u64) -> PvRange {
    PvRange {
        pv: pv.into(),
        first,
        count,
    }
}

/// Same PVs on the new disks: every LV on the extents it had, in its
/// logical order, under the new names; the plan shows them.
#[test]
fn lvs_keep_their_pvs_and_extents_on_the_same_pvs() {
    let l = two_disk_vg(20 * GIB);
    let plan = build(&l, &two_targets(10 * GIB, 20 * GIB)).unwrap();
    assert_eq!(
        placements(&plan),
        [
            (
                "root".to_string(),
                Placement::Extents(vec![range("/dev/sda4", 0, 1024)])
            ),
            (
                "home".to_string(),
                Placement::Extents(vec![
                    range("/dev/sdb1", 0, 512),
                    range("/dev/sda4", 1024, 256)
                ])
            ),
            (
                "swap".to_string(),
                Placement::Extents(vec![range("/dev/sdb1", 512, 128)])
            ),
        ]
    );
    let text = render::render(&plan);
    assert!(
        text.contains("home ") && text.contains("on /dev/sdb1:0-511, /dev/sda4:1024-1279"),
        "{text}"
    );
    assert!(
        plan.warnings.iter().all(|w| !w.contains("logical volume")),
        "{:?}",
        plan.warnings
    );
}

/// Larger disks in proportion: the LVs grow, each on the PVs it was on
/// (in order of first use); LVM picks the extents.
#[test]
fn growing_lvs_stay_on_their_pvs() {
    let l = two_disk_vg(20 * GIB);
    let plan = build(&l, &two_targets(20 * GIB, 40 * GIB)).unwrap();
    let p = placements(&plan);
    assert_eq!(p[0].1, Placement::Pvs(vec!["/dev/sda4".into()]));
    assert_eq!(
        p[1].1,
        Placement::Pvs(vec!["/dev/sdb1".into(), "/dev/sda4".into()]),
        "segments sorted by their logical start: vdb1 first"
    );
    assert_eq!(p[2].1, Placement::Pvs(vec!["/dev/sdb1".into()]));
}

/// Where an LV cannot stay on its PVs, the plan says so.
#[test]
fn an_lv_that_outgrows_its_pvs_is_named() {
    // The slow disk grows a lot, the fast one not: root (fast only) grows
    // with the VG beyond what the fast PV holds.
    let l = two_disk_vg(20 * GIB);
    let plan = build(&l, &two_targets(10 * GIB, 200 * GIB)).unwrap();
    let p = placements(&plan);
    assert_eq!(p[0].1, Placement::Free, "{p:?}");
    assert!(
        plan.warnings.iter().any(|w| w
            == "logical volume vg0/root no longer fits on /dev/sda4 (its PVs before): placed where LVM finds room"),
        "{:?}",
        plan.warnings
    );
    assert!(render::render(&plan).contains("logical volume vg0/root no longer fits"));
}

/// uefi_lvm with its ESP mirrored by md RAID1 (metadata 1.0) onto a
/// partition of a second disk, the boot entry on the first member only.
fn mirrored_esp() -> Layout {
    let mut l = uefi_lvm();
    let mut d = l.disks[0].clone();
    d.name = "vdb".into();
    d.path = "/dev/vdb".into();
    d.size_bytes = GIB;
    d.serial = Some("SRC2".into());
    let mut g = match d.partition_table.take() {
        Some(PartitionTable::Gpt(g)) => g,
        _ => unreachable!(),
    };
    g.disk_guid = "11111111-2222-4333-8444-777777777777".into();
    g.last_usable_lba = GIB / 512 - 34;
    let mut esp = g.partitions[1].clone();
    esp.number = 1;
    esp.device = "/dev/vdb1".into();
    esp.unique_guid = "00000000-0000-4000-8000-0000000000e2".into();
    g.partitions = vec![esp];
    d.partition_table = Some(PartitionTable::Gpt(g));
    l.disks.push(d);
    l.md_arrays = vec![MdArray {
        device: "/dev/md/esp".into(),
        name: Some("h:esp".into()),
        uuid: "aaaaaaaa:bbbbbbbb:cccccccc:dddddddd".into(),
        level: "raid1".into(),
        metadata: "1.0".into(),
        raid_devices: 2,
        chunk_size_bytes: None,
        layout: None,
        size_bytes: 200 * MIB - 64 * 1024,
        members: ["/dev/vda2", "/dev/vdb1"]
            .iter()
            .enumerate()
            .map(|(i, m)| MdMember {
                device: m.to_string(),
                role: Some(i as u32),
                spare: false,
            })
            .collect(),
    }];
    l.filesystems[0].device = "/dev/md/esp".into();
    l.mounts[2].source = "/dev/md/esp".into();
    l.boot.esps = vec!["/dev/vda2".into(), "/dev/vdb1".into()];
    l
}

/// The array is the ESP (the fallback loader is checked through it), and
/// the boot entry goes on each member: both disks boot alone.
#[test]
fn a_mirrored_esp_is_one_esp_with_an_entry_per_member() {
    let l = mirrored_esp();
    let mut i = two_targets(10 * GIB, GIB);
    i.maps = vec![
        ("/dev/vda".into(), "/dev/sda".into()),
        ("/dev/vdb".into(), "/dev/sdb".into()),
    ];
    let plan = build(&l, &i).unwrap();
    let Some(Step::Bootloader {
        esps, efi_entries, ..
    }) = plan
        .steps
        .iter()
        .find(|s| matches!(s, Step::Bootloader { .. }))
    else {
        panic!("no bootloader step: {plan:#?}");
    };
    assert_eq!(esps, &["/dev/md/esp"]);
    let guids: Vec<&str> = efi_entries
        .iter()
        .map(|e| e.partition_guid.as_deref().unwrap())
        .collect();
    assert_eq!(
        guids,
        [
            "00000000-0000-4000-8000-000000000002",
            "00000000-0000-4000-8000-0000000000e2"
        ]
    );
    assert!(efi_entries
        .iter()
        .all(|e| e.label == "debian" && e.loader.as_deref() == Some("\\EFI\\debian\\shimx64.efi")));
    let text = render::render(&plan);
    for on in ["/dev/sda2", "/dev/sdb1"] {
        assert!(
            text.contains(&format!(
                "EFI entry \"debian\" \\EFI\\debian\\shimx64.efi on {on}\n"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("EFI fallback loader on /dev/md/esp"),
        "{text}"
    );
}

/// The `uefi_lvm` layout with real mkfs parameters: vfat ESP with 512-byte
/// sectors, ext4 /boot with 1 KiB blocks, XFS /home with 512-byte sectors.
fn uefi_lvm_params() -> Layout {
    let mut l = uefi_lvm();
    for f in &mut l.filesystems {
        f.params = match f.fstype.as_str() {
            "vfat" => FsParams::Vfat {
                serial: "ABCD1234".into(),
                fat_size: 32,
                sector_size: 512,
            },
            "xfs" => FsParams::Xfs {
                block_size: 4096,
                sector_size: 512,
                crc: true,
                reflink: true,
                ftype: true,
                log_size_bytes: None,
            },
            _ => FsParams::Ext {
                block_size: if f.mountpoints[0] == "/boot" {
                    1024
                } else {
                    4096
                },
                inode_size: 256,
                features: vec!["has_journal".into(), "extent".into()],
                reserved_blocks_percent: 5.0,
                inode_count: 32768,
            },
        };
    }
    l
}

fn target_4k(path: &str, size: u64) -> TargetDisk {
    TargetDisk {
        logical_sector_size: 4096,
        ..target(path, size)
    }
}

fn mkfs_of<'a>(plan: &'a Plan, mp: &str) -> &'a Filesystem {
    plan.steps
        .iter()
        .find_map(|s| match s {
            Step::Mkfs { fs } if fs.mountpoints.iter().any(|m| m == mp) => Some(fs),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no mkfs of {mp}"))
}

/// Every partition on whole sectors of `sector` bytes, on 1 MiB boundaries,
/// inside the usable range and not overlapping.
fn assert_placed_on(g: &GptTable, sector: u64) {
    let mut parts = g.partitions.clone();
    parts.sort_by_key(|p| p.first_lba);
    let mut prev_end = g.first_usable_lba;
    for p in &parts {
        assert_eq!(p.first_lba * sector % MIB, 0, "{p:?} starts on 1 MiB");
        assert_eq!(
            (p.last_lba - p.first_lba + 1) * sector,
            p.size_bytes,
            "{p:?} size in sectors"
        );
        assert!(p.first_lba >= prev_end, "{p:?} overlaps");
        assert!(p.last_lba <= g.last_usable_lba, "{p:?} past the end");
        prev_end = p.last_lba + 1;
    }
}

#[test]
fn onto_4k_sectors_positions_are_translated_and_parameters_raised() {
    let l = uefi_lvm_params();
    let plan = build(&l, &input(vec![target_4k("/dev/vda", 10 * GIB)])).unwrap();
    let g = table(&plan);
    assert_eq!(
        g.first_usable_lba, 6,
        "GPT header and entries in 4 KiB sectors"
    );
    assert_eq!(g.last_usable_lba, 10 * GIB / 4096 - 6);
    assert_placed_on(g, 4096);
    let old = match &l.disks[0].partition_table {
        Some(PartitionTable::Gpt(g)) => g.clone(),
        _ => unreachable!(),
    };
    for (o, n) in old.partitions.iter().zip(&g.partitions) {
        assert_eq!(o.unique_guid, n.unique_guid, "PARTUUID kept");
        if o.number < 4 {
            // BIOS boot, ESP, /boot: same bytes, same place.
            assert_eq!(
                (o.first_lba * 512, o.size_bytes),
                (n.first_lba * 4096, n.size_bytes)
            );
        }
    }
    assert!(matches!(
        mkfs_of(&plan, "/boot").params,
        FsParams::Ext {
            block_size: 4096,
            ..
        }
    ));
    assert!(matches!(
        mkfs_of(&plan, "/home").params,
        FsParams::Xfs {
            sector_size: 4096,
            block_size: 4096,
            ..
        }
    ));
    assert!(matches!(
        mkfs_of(&plan, "/boot/efi").params,
        FsParams::Vfat {
            sector_size: 4096,
            ..
        }
    ));
    assert!(matches!(
        mkfs_of(&plan, "/").params,
        FsParams::Ext {
            block_size: 4096,
            ..
        }
    ));
    assert_eq!(mkfs_of(&plan, "/boot").uuid.as_deref(), Some("boot-uuid"));
    assert_eq!(
        plan.adjustments,
        [
            "partitions of /dev/vda on /dev/vda: positions translated from 512-byte to 4096-byte sectors, aligned to 1 MiB",
            "vfat /boot/efi: logical sector size 512 -> 4096, the new disk has 4096-byte sectors",
            "vfat /boot/efi: FAT32 -> FAT16, at most 51200 clusters of 4096 bytes are too few for FAT32",
            "ext4 /boot: block size 1024 -> 4096, the new disk has 4096-byte sectors",
            "xfs /home: sector size and log sector size 512 -> 4096, the new disk has 4096-byte sectors",
        ]
    );
    let text = render::render(&plan);
    assert!(
        text.contains(
            "  ext4 /boot: block size 1024 -> 4096, the new disk has 4096-byte sectors\n"
        ),
        "{text}"
    );
    assert!(
        plan.warnings.iter().any(|w| w
            == "GRUB i386-pc is not installed on /dev/vda: it has 4096-byte sectors, which BIOS \
                firmware does not boot; the system boots under UEFI from its ESP"),
        "{:?}",
        plan.warnings
    );
    let Some(Step::Bootloader {
        bios_disks, esps, ..
    }) = plan
        .steps
        .iter()
        .find(|s| matches!(s, Step::Bootloader { .. }))
    else {
        panic!("no bootloader step")
    };
    assert!(bios_disks.is_empty() && esps == &["/dev/vda2".to_string()]);
}

#[test]
fn unaligned_old_partitions_land_on_1mib_boundaries_of_4k_sectors() {
    // An MBR disk from the old days: first partition at sector 63, the
    // second at an odd sector, sizes not multiples of 4 KiB.
    let mut l = uefi_lvm_params();
    let d = &mut l.disks[0];
    let part = |n: u32, first: u64, sectors: u64, type_byte: u8| MbrPartition {
        number: n,
        device: partition_path("/dev/vda", n),
        kind: MbrKind::Primary,
        first_lba: first,
        sectors,
        size_bytes: sectors * 512,
        type_byte,
        bootable: n == 1,
    };
    d.partition_table = Some(PartitionTable::Mbr(MbrTable {
        disk_signature: 0x1234abcd,
        partitions: vec![
            part(1, 63, 1_024_001, 0x83),
            part(
                2,
                63 + 1_024_001 + 7,
                10 * GIB / 512 - 63 - 1_024_001 - 7,
                0x8e,
            ),
        ],
    }));
    l.lvm.pvs[0].device = "/dev/vda2".into();
    l.filesystems.retain(|f| f.fstype != "vfat");
    l.filesystems[0].device = "/dev/vda1".into();
    l.mounts.retain(|m| m.fstype != "vfat");
    l.boot.esps.clear();
    l.boot.efi_entries.clear();
    let mut i = input(vec![target_4k("/dev/vdb", 10 * GIB)]);
    i.uefi = false;
    let plan = build(&l, &i).unwrap();
    let m = plan
        .steps
        .iter()
        .find_map(|s| match s {
            Step::Partition {
                table: PartitionTable::Mbr(m),
                ..
            } => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(m.disk_signature, 0x1234abcd);
    let mut end = 0;
    for p in &m.partitions {
        assert_eq!(p.first_lba * 4096 % MIB, 0, "{p:?}");
        assert_eq!(p.sectors * 4096, p.size_bytes, "{p:?}");
        assert!(p.first_lba >= end, "{p:?} overlaps");
        end = p.first_lba + p.sectors;
    }
    assert!(end * 4096 <= 10 * GIB);
    // The fixed /boot keeps at least its bytes, rounded up to whole sectors.
    assert_eq!(
        m.partitions[0].size_bytes,
        (1_024_001u64 * 512).div_ceil(4096) * 4096
    );
}

#[test]
fn from_4k_sectors_onto_512_parameters_are_kept() {
    let mut l = uefi_lvm_params();
    l.disks[0].logical_sector_size = 4096;
    l.disks[0].physical_sector_size = 4096;
    // The same partitions in 4 KiB sectors.
    if let Some(PartitionTable::Gpt(g)) = &mut l.disks[0].partition_table {
        g.first_usable_lba = 6;
        g.last_usable_lba = 10 * GIB / 4096 - 6;
        for p in &mut g.partitions {
            p.first_lba /= 8;
            p.last_lba = (p.last_lba + 1) / 8 - 1;
            p.size_bytes = (p.last_lba - p.first_lba + 1) * 4096;
        }
    }
    for f in &mut l.filesystems {
        match &mut f.params {
            FsParams::Ext { block_size, .. } => *block_size = 4096,
            FsParams::Xfs { sector_size, .. } | FsParams::Vfat { sector_size, .. } => {
                *sector_size = 4096
            }
            _ => {}
        }
    }
    let plan = build(&l, &input(vec![target("/dev/vda", 10 * GIB)])).unwrap();
    assert_placed_on(table(&plan), 512);
    assert_eq!(
        plan.adjustments,
        ["partitions of /dev/vda on /dev/vda: positions translated from 4096-byte to 512-byte sectors, aligned to 1 MiB"]
    );
    for f in &l.filesystems {
        let mp = &f.mountpoints[0];
        assert_eq!(
            mkfs_of(&plan, mp).params,
            f.params,
            "{mp} keeps its parameters"
        );
    }
}

#[test]
fn network_interfaces_are_mapped_and_the_leftovers_warned() {
    let nic = |name: &str, mac: &str, pci: &str| NetInterface {
        name: name.into(),
        mac: mac.into(),
        driver: Some("virtio_net".into()),
        pci_path: Some(pci.into()),
    };
    let mut l = uefi_lvm();
    l.network = vec![
        nic("ens3", "52:54:00:00:00:03", "0000:00:03.0"),
        nic("ens4", "52:54:00:00:00:04", "0000:00:04.0"),
    ];
    let mut i = input(vec![target("/dev/vda", 10 * GIB)]);
    i.nics = vec![nic("eth0", "52:54:00:aa:00:01", "0000:00:05.0")];
    i.nic_maps = vec![("ens4".into(), "eth0".into())];
    let plan = build(&l, &i).unwrap();
    let pos = |name: &str| {
        plan.steps
            .iter()
            .position(|s| journal_id(s) == name)
            .unwrap_or_else(|| panic!("no {name} step"))
    };
    assert!(pos("network") < pos("initramfs"));
    let Step::Network { nics } = &plan.steps[pos("network")] else {
        unreachable!()
    };
    assert_eq!(nics.pairs.len(), 1);
    assert_eq!(
        (
            nics.pairs[0].old.name.as_str(),
            nics.pairs[0].new.name.as_str()
        ),
        ("ens4", "eth0")
    );
    assert!(plan.warnings.iter().any(|w| w.starts_with(
        "network interface ens3 (52:54:00:00:00:03, virtio_net, PCI 0000:00:03.0) has no counterpart here"
    )), "{:#?}", plan.warnings);
    let text = render::render(&plan);
    assert!(text.contains("ens4 (52:54:00:00:00:04, virtio_net, PCI 0000:00:04.0) -> eth0 (52:54:00:aa:00:01, virtio_net, PCI 0000:00:05.0)  [--map-nic]"), "{text}");
    // The same card here (same MAC, another kernel name): nothing to move.
    let mut same = i.clone();
    same.nic_maps.clear();
    same.nics = vec![nic("eth0", "52:54:00:00:00:03", "0000:00:03.0")];
    let plan = build(&l, &same).unwrap();
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Network { .. })));
    // Without interfaces in the layout (an older layout file): no step.
    l.network.clear();
    let plan = build(&l, &i).unwrap();
    assert!(!plan.steps.iter().any(|s| matches!(s, Step::Network { .. })));
}

fn journal_id(s: &Step) -> String {
    crate::recover::journal::step_id(s)
}

/// A BIOS-only server: MBR (signature 0x1a2b3c4d) with ext4 / on sda1 and
/// swap on the logical sda5 reaching the end of a 10 GiB disk, GRUB
/// i386-pc on sda, no ESP.
fn bios_mbr() -> Layout {
    let mut l = minimal();
    l.host.firmware = Firmware::Bios;
    l.boot.firmware = Firmware::Bios;
    let sectors = 10 * GIB / 512;
    let part = |n: u32, kind, first: u64, count: u64, type_byte: u8| MbrPartition {
        number: n,
        device: partition_path("/dev/sda", n),
        kind,
        first_lba: first,
        sectors: count,
        size_bytes: count * 512,
        type_byte,
        bootable: n == 1,
    };
    let root_sectors = 9 * GIB / 512;
    let ext_first = 2048 + root_sectors;
    l.disks = vec![Disk {
        name: "sda".into(),
        path: "/dev/sda".into(),
        size_bytes: 10 * GIB,
        logical_sector_size: 512,
        physical_sector_size: 512,
        rotational: true,
        removable: false,
        transport: Some("sata".into()),
        model: None,
        serial: Some("OLD".into()),
        wwn: None,
        by_id: vec![],
        needed: true,
        needed_reason: "holds /".into(),
        partition_table: Some(PartitionTable::Mbr(MbrTable {
            disk_signature: 0x1a2b3c4d,
            partitions: vec![
                part(1, MbrKind::Primary, 2048, root_sectors, 0x83),
                part(2, MbrKind::Extended, ext_first, sectors - ext_first, 0x05),
                part(
                    5,
                    MbrKind::Logical,
                    ext_first + 2048,
                    sectors - ext_first - 2048,
                    0x82,
                ),
            ],
        })),
    }];
    l.filesystems = vec![fs("/dev/sda1", "ext4", "root-uuid", 9 * GIB, 2 * GIB, "/")];
    l.swaps = vec![Swap {
        device: "/dev/sda5".into(),
        is_file: false,
        uuid: Some("swap-uuid".into()),
        label: None,
        size_bytes: (sectors - ext_first - 2048) * 512,
        active: true,
        priority: None,
    }];
    l.mounts = vec![mount("/", "/dev/sda1", "ext4")];
    l.boot.grub = vec![GrubTarget {
        platform: "i386-pc".into(),
        disks: vec!["/dev/sda".into()],
    }];
    l
}

fn step_of<'a>(plan: &'a Plan, id: &str) -> Option<&'a Step> {
    plan.steps.iter().find(|s| journal_id(s) == id)
}

#[test]
fn bios_mbr_onto_a_uefi_machine_becomes_gpt_with_a_new_esp() {
    let l = bios_mbr();
    let mut i = input(vec![target("/dev/sda", 10 * GIB)]);
    i.backup_grub = Some(vec!["x86_64-efi".into(), "i386-pc".into()]);
    let plan = build(&l, &i).unwrap();
    assert_eq!(
        plan,
        build(&l, &i).unwrap(),
        "the same plan twice (GUIDs derived)"
    );
    let g = table(&plan).clone();
    let nums: Vec<u32> = g.partitions.iter().map(|p| p.number).collect();
    assert_eq!(
        nums,
        [1, 2, 5],
        "sda1 and sda5 kept their numbers; the ESP took 2"
    );
    let esp = &g.partitions[1];
    assert_eq!(esp.type_guid, firmware::ESP_GUID);
    assert_eq!(esp.size_bytes, firmware::ESP_BYTES);
    assert_eq!(g.partitions[0].first_lba, 2048, "sda1 where it was");
    // Root (the largest) gave the ESP its room, after the GPT's own sectors.
    let root = g.partitions[0].size_bytes;
    assert!(
        root <= 9 * GIB - firmware::ESP_BYTES && root > 9 * GIB - firmware::ESP_BYTES - 8 * MIB,
        "{root}"
    );
    assert!(
        plan.sizes.iter().any(|s| s.item == "partition /dev/sda1"
            && s.new_bytes == root
            && s.note == "gives 260.0 MiB to the new EFI system partition"),
        "{:?}",
        plan.sizes
    );
    let mut sorted = g.partitions.clone();
    sorted.sort_by_key(|p| p.first_lba);
    assert_eq!(sorted.last().unwrap().number, 2, "the ESP at the end");
    assert!(sorted.last().unwrap().last_lba <= g.last_usable_lba);
    for w in sorted.windows(2) {
        assert!(w[0].last_lba < w[1].first_lba, "{w:?} overlap");
    }
    // The ESP is made, mounted, put in fstab, and GRUB EFI goes on it.
    let Some(Step::Mkfs { fs: esp_fs }) = plan
        .steps
        .iter()
        .find(|s| matches!(s, Step::Mkfs { fs } if fs.fstype == "vfat"))
    else {
        panic!("no ESP mkfs")
    };
    assert_eq!(esp_fs.device, "/dev/sda2");
    let Some(Step::Mount { mounts }) = step_of(&plan, "mount") else {
        panic!()
    };
    assert!(mounts
        .iter()
        .any(|m| m.mountpoint == "/boot/efi" && m.device == "/dev/sda2"));
    let Some(Step::Migrate {
        to,
        fstab,
        grub_dir,
        package,
    }) = step_of(&plan, "migrate")
    else {
        panic!("no migrate step")
    };
    assert_eq!(*to, Firmware::Uefi);
    assert_eq!(
        fstab.as_deref(),
        Some(
            format!(
                "UUID={} /boot/efi vfat umask=0077 0 1",
                esp_fs.uuid.as_deref().unwrap()
            )
            .as_str()
        )
    );
    assert_eq!(
        (grub_dir.as_str(), package.as_str()),
        ("usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin")
    );
    let Some(Step::Bootloader {
        esps,
        efi_entries,
        grub_efi,
        write_nvram,
        bios_disks,
    }) = step_of(&plan, "bootloader")
    else {
        panic!()
    };
    assert!(*grub_efi && *write_nvram);
    // The GPT made from the MBR has no BIOS boot partition: grub-install
    // i386-pc would fail there after every other write.
    assert!(bios_disks.is_empty(), "{bios_disks:?}");
    assert_eq!(esps, &["/dev/sda2".to_string()]);
    assert_eq!(
        efi_entries[0].loader.as_deref(),
        Some("\\EFI\\debian\\grubx64.efi")
    );
    assert_eq!(
        efi_entries[0].partition_guid.as_deref(),
        Some(esp.unique_guid.as_str())
    );
    // PARTUUIDs of the MBR form are rewritten in the configuration.
    let Some(Step::FixConfig { replacements }) = step_of(&plan, "fixconfig") else {
        panic!()
    };
    let root_guid = &g.partitions[0].unique_guid;
    assert!(
        replacements.contains(&(
            "PARTUUID=1a2b3c4d-01".into(),
            format!("PARTUUID={root_guid}")
        )),
        "{replacements:?}"
    );
    assert!(plan.adjustments[0].starts_with(
        "firmware: converted to UEFI boot (the rescue system booted under UEFI, the source under BIOS; --firmware same keeps it)"
    ), "{:?}", plan.adjustments);
    let text = render::render(&plan);
    assert!(
        text.contains(
            "firmware: MBR of /dev/sda converted to GPT with the same partitions (PARTUUIDs \
             rewritten); GRUB i386-pc is not installed on /dev/sda (no BIOS boot partition)"
        ),
        "{text}"
    );
    assert!(
        text.contains("firmware: new EFI system partition /dev/sda2 (260.0 MiB) on /dev/sda"),
        "{text}"
    );
}

#[test]
fn conversion_without_grub_efi_in_the_backup_is_refused_before_any_write() {
    let mut i = input(vec![target("/dev/sda", 10 * GIB)]);
    i.backup_grub = Some(vec!["i386-pc".into()]);
    let err = build(&bios_mbr(), &i).unwrap_err().to_string();
    assert!(
        err.contains("Debian package grub-efi-amd64-bin), and the backup does not hold it"),
        "{err}"
    );
    assert!(err.contains("--firmware same"), "{err}");
}

#[test]
fn firmware_same_keeps_the_mbr_and_says_so() {
    let mut i = input(vec![target("/dev/sda", 10 * GIB)]);
    i.firmware = firmware::FirmwareChoice::Same;
    let l = bios_mbr();
    let plan = build(&l, &i).unwrap();
    assert!(step_of(&plan, "migrate").is_none());
    assert!(plan.steps.iter().any(|s| matches!(
        s,
        Step::Partition {
            table: PartitionTable::Mbr(_),
            ..
        }
    )));
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("with --firmware same it is not converted")),
        "{:?}",
        plan.warnings
    );
    // A system without a boot loader is not converted by default.
    let mut no_loader = l.clone();
    no_loader.boot.grub.clear();
    let plan = build(&no_loader, &input(vec![target("/dev/sda", 10 * GIB)])).unwrap();
    assert!(step_of(&plan, "migrate").is_none() && plan.adjustments.is_empty());
    // Under a BIOS rescue nothing is converted, nothing is said.
    let mut i = input(vec![target("/dev/sda", 10 * GIB)]);
    i.uefi = false;
    let plan = build(&l, &i).unwrap();
    assert!(step_of(&plan, "migrate").is_none() && plan.adjustments.is_empty());
}

#[test]
fn uefi_only_onto_a_bios_machine_gets_a_bios_boot_partition() {
    let mut l = uefi_lvm();
    l.boot.grub.retain(|g| g.platform != "i386-pc");
    if let Some(PartitionTable::Gpt(g)) = &mut l.disks[0].partition_table {
        g.partitions.retain(|p| p.number != 1);
    }
    let mut i = input(vec![target("/dev/vda", 10 * GIB)]);
    i.uefi = false;
    let plan = build(&l, &i).unwrap();
    let g = table(&plan);
    let bios: Vec<&GptPartition> = g
        .partitions
        .iter()
        .filter(|p| p.type_guid == firmware::BIOS_BOOT_GUID)
        .collect();
    assert_eq!(bios.len(), 1);
    assert_eq!((bios[0].number, bios[0].size_bytes), (1, MIB));
    let Some(Step::Bootloader {
        bios_disks,
        grub_efi,
        ..
    }) = step_of(&plan, "bootloader")
    else {
        panic!()
    };
    assert_eq!(bios_disks, &["/dev/vda".to_string()]);
    assert!(!grub_efi);
    let Some(Step::Migrate {
        to,
        fstab,
        grub_dir,
        ..
    }) = step_of(&plan, "migrate")
    else {
        panic!()
    };
    assert_eq!(
        (*to, fstab.clone(), grub_dir.as_str()),
        (Firmware::Bios, None, "usr/lib/grub/i386-pc")
    );
    // The LVM PV (the largest partition) gave the MiB.
    assert!(
        plan.sizes
            .iter()
            .any(|s| s.item == "partition /dev/vda4" && s.note.contains("BIOS boot")),
        "{:?}",
        plan.sizes
    );
}

/// An ESP that holds no loader the layout knows of (no EFI entry, no GRUB
/// x86_64-efi, no shim or systemd-boot) does not make the system a UEFI
/// one: under a BIOS rescue nothing is converted (no GRUB i386-pc needed).
#[test]
fn an_esp_without_a_loader_is_not_converted() {
    let mut l = uefi_lvm();
    l.boot.firmware = Firmware::Bios;
    l.boot.grub.clear();
    l.boot.efi_entries.clear();
    l.boot.shim = false;
    l.boot.systemd_boot = false;
    let mut i = input(vec![target("/dev/vda", 10 * GIB)]);
    i.uefi = false;
    i.backup_grub = Some(vec![]);
    let plan = build(&l, &i).unwrap();
    assert!(
        step_of(&plan, "migrate").is_none(),
        "{:?}",
        plan.adjustments
    );
    // With a loader on the ESP it is a UEFI system, converted to BIOS.
    l.boot.grub.push(GrubTarget {
        platform: "x86_64-efi".into(),
        disks: vec![],
    });
    i.backup_grub = Some(vec!["i386-pc".into()]);
    let plan = build(&l, &i).unwrap();
    assert!(step_of(&plan, "migrate").is_some());
}
