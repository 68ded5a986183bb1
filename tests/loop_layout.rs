//! Loop tier (root): partitioned image files on loop devices with ext4, xfs
//! and btrfs (with subvolumes), captured by `lifeboat layout save
//! --only-disk /dev/loopN` on the host and checked field by field.
//! Run single-threaded: `cargo test --test loop_layout -- --test-threads=1`.

mod common;

use common::*;
use lifeboat::layout::{FsParams, Layout, PartitionTable};

const DISK_GUID: &str = "d15c0000-0000-4000-8000-000000000001";
const P1: &str = "d15c0001-0000-4000-8000-000000000001";
const P2: &str = "d15c0002-0000-4000-8000-000000000002";
const P3: &str = "d15c0003-0000-4000-8000-000000000003";
const EXT_UUID: &str = "e0000000-0000-4000-8000-000000000001";
const XFS_UUID: &str = "e0000000-0000-4000-8000-000000000002";
const BTRFS_UUID: &str = "e0000000-0000-4000-8000-000000000003";

fn save(s: &Scratch, name: &str, dev: &str) -> (Layout, String) {
    let out = s.join(name);
    let (code, stdout, stderr) = run_lifeboat([
        "layout",
        "save",
        "-o",
        out.to_str().unwrap(),
        "--only-disk",
        dev,
    ]);
    assert_eq!(code, 0, "layout save failed:\n{stdout}\n{stderr}");
    (Layout::load(&out).unwrap(), stdout)
}

#[test]
fn loop_partitioned_image_with_ext4_xfs_btrfs() {
    let s = Scratch::new("loop-layout");
    let img = s.join("disk.img");
    blank_disk(&img, 512);
    sh(&format!(
        "sgdisk -o -U {DISK_GUID} \
         -n 1:2048:+64M -t 1:8300 -c 1:ext -u 1:{P1} \
         -n 2:0:+100M -t 2:8300 -c 2:xfs -u 2:{P2} -A 2:set:2 \
         -n 3:0:0 -t 3:8300 -c 3:btrfs -u 3:{P3} '{}' >/dev/null",
        img.display()
    ));
    let mut d = LoopDisk::attach(&img);
    sh(&format!(
        "mkfs.ext4 -q -F -U {EXT_UUID} -L ext-data -b 1024 -I 128 -m 3 '{}'",
        d.part(1)
    ));
    sh(&format!(
        "TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -f -m uuid={XFS_UUID},reflink=0 -L xfsdata '{}'",
        d.part(2)
    ));
    sh(&format!(
        "mkfs.btrfs -q -f -U {BTRFS_UUID} -L pool '{}'",
        d.part(3)
    ));
    let mnt = s.join("mnt");
    d.mount(&d.part(1), &mnt.join("ext"), "");
    d.mount(&d.part(2), &mnt.join("xfs"), "");
    let top = mnt.join("btrfs");
    d.mount(&d.part(3), &top, "");
    sh(&format!(
        "cd '{}' && btrfs -q subvolume create sv1 && mkdir sv1/x && btrfs -q subvolume create sv1/x/nested \
         && btrfs -q subvolume snapshot -r sv1 snap && btrfs subvolume set-default sv1",
        top.display()
    ));
    std::fs::write(mnt.join("ext/file"), vec![7u8; 3 << 20]).unwrap();
    sh("sync");

    let (l, summary) = save(&s, "layout.json", &d.dev);
    assert!(summary.contains("1 disk (1 needed)"), "{summary}");
    assert_eq!(l.disks.len(), 1);
    let disk = &l.disks[0];
    assert_eq!(disk.path, d.dev);
    assert_eq!(disk.size_bytes, 512 << 20);
    assert_eq!(disk.transport.as_deref(), Some("loop"));
    assert!(disk.needed, "{}", disk.needed_reason);
    assert!(
        disk.needed_reason
            .contains(&mnt.join("xfs").display().to_string()),
        "{}",
        disk.needed_reason
    );
    let Some(PartitionTable::Gpt(g)) = &disk.partition_table else {
        panic!("no GPT: {:?}", disk.partition_table)
    };
    assert_eq!(g.disk_guid, DISK_GUID);
    let parts: Vec<(u32, &str, &str, &str, u64)> = g
        .partitions
        .iter()
        .map(|p| {
            (
                p.number,
                p.device.as_str(),
                p.unique_guid.as_str(),
                p.name.as_str(),
                p.attributes,
            )
        })
        .collect();
    let (p1, p2, p3) = (d.part(1), d.part(2), d.part(3));
    assert_eq!(
        parts,
        vec![
            (1, p1.as_str(), P1, "ext", 0),
            (2, p2.as_str(), P2, "xfs", 4),
            (3, p3.as_str(), P3, "btrfs", 0)
        ]
    );
    assert_eq!(g.partitions[0].first_lba, 2048);
    assert_eq!(g.partitions[0].size_bytes, 64 << 20);

    let fs = |dev: &str| {
        l.filesystems
            .iter()
            .find(|f| f.device == dev)
            .unwrap_or_else(|| panic!("no fs on {dev}"))
    };
    let ext = fs(&p1);
    assert_eq!(
        (
            ext.fstype.as_str(),
            ext.uuid.as_deref(),
            ext.label.as_deref()
        ),
        ("ext4", Some(EXT_UUID), Some("ext-data"))
    );
    assert_eq!(ext.size_bytes, 64 << 20);
    assert_eq!(ext.mountpoints, vec![mnt.join("ext").display().to_string()]);
    assert!(ext.used_bytes.unwrap() >= 3 << 20, "{:?}", ext.used_bytes);
    match &ext.params {
        FsParams::Ext {
            block_size,
            inode_size,
            reserved_blocks_percent,
            features,
            ..
        } => {
            assert_eq!((*block_size, *inode_size), (1024, 128));
            assert_eq!(*reserved_blocks_percent, 3.0);
            assert!(features.iter().any(|f| f == "has_journal"), "{features:?}");
        }
        other => panic!("ext params {other:?}"),
    }
    let xfs = fs(&p2);
    assert_eq!(
        (xfs.uuid.as_deref(), xfs.label.as_deref()),
        (Some(XFS_UUID), Some("xfsdata"))
    );
    assert_eq!(xfs.size_bytes, 100 << 20);
    assert!(
        matches!(
            xfs.params,
            FsParams::Xfs {
                crc: true,
                reflink: false,
                ftype: true,
                block_size: 4096,
                ..
            }
        ),
        "{:?}",
        xfs.params
    );
    let b = fs(&p3);
    assert_eq!(
        (b.uuid.as_deref(), b.label.as_deref()),
        (Some(BTRFS_UUID), Some("pool"))
    );
    let FsParams::Btrfs {
        devices,
        subvolumes,
        default_subvolume_id,
        data_profile,
        ..
    } = &b.params
    else {
        panic!("btrfs params {:?}", b.params)
    };
    assert_eq!(devices, &vec![p3.clone()]);
    assert_eq!(data_profile.as_deref(), Some("single"));
    let subs: Vec<(&str, bool)> = subvolumes
        .iter()
        .map(|s| (s.path.as_str(), s.readonly))
        .collect();
    assert_eq!(
        subs,
        vec![("sv1", false), ("sv1/x/nested", false), ("snap", true)]
    );
    let sv1 = subvolumes.iter().find(|s| s.path == "sv1").unwrap();
    assert_eq!(*default_subvolume_id, sv1.id);
    assert_eq!(subvolumes[1].parent_id, sv1.id);
    let mps: Vec<&str> = l.mounts.iter().map(|m| m.mountpoint.as_str()).collect();
    assert_eq!(mps.len(), 3, "{mps:?}");
    assert!(
        l.mounts.iter().all(|m| m.source.starts_with(&d.dev)),
        "{:?}",
        l.mounts
    );

    // The same disk captured again: no change. The tree shows it.
    let (_, _) = save(&s, "layout2.json", &d.dev);
    let (a, b2) = (s.join("layout.json"), s.join("layout2.json"));
    let (code, out, err) =
        run_lifeboat(["layout", "diff", a.to_str().unwrap(), b2.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "no changes");
    let (code, tree, err) = run_lifeboat(["layout", "show", a.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        tree.contains(&format!("{p3}  ")) && tree.contains("subvolume sv1/x/nested"),
        "{tree}"
    );
    assert!(tree.contains(&format!("PARTUUID {P2}")), "{tree}");

    // A new label and an unmounted file system are changes; the previous
    // layout is kept as .prev.
    sh(&format!(
        "umount '{}' && e2label '{}' renamed",
        mnt.join("ext").display(),
        p1
    ));
    d.mounts.retain(|m| !m.ends_with("ext"));
    let (_, _) = save(&s, "layout2.json", &d.dev);
    assert!(s.join("layout2.json.prev").exists());
    let (code, out, err) = run_lifeboat([
        "layout",
        "diff",
        a.to_str().unwrap(),
        b2.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["same"], false);
    let msgs: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"].as_str().unwrap())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.contains(&format!("ext4 file system {EXT_UUID}"))
                && m.contains("label was ext-data, is renamed")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("removed mount ") && m.ends_with("/ext")),
        "{msgs:#?}"
    );
}

#[test]
fn loop_mbr_image_and_errors() {
    let s = Scratch::new("loop-layout-mbr");
    let img = s.join("mbr.img");
    blank_disk(&img, 64);
    sh(&format!(
        "printf 'label: dos\\nlabel-id: 0xfeedf00d\\n,16M,83,*\\n,,5\\n,8M,82\\n,8M,83\\n' | sfdisk -q '{}'",
        img.display()
    ));
    let d = LoopDisk::attach(&img);
    sh(&format!(
        "mkswap -q -U 5a000000-0000-4000-8000-000000000001 -L lbswap '{}'",
        d.part(5)
    ));
    let (l, summary) = save(&s, "layout.json", &d.dev);
    let disk = &l.disks[0];
    assert!(!disk.needed, "nothing mounted: {}", disk.needed_reason);
    assert!(
        summary.contains("not needed: nothing on it is mounted"),
        "{summary}"
    );
    let Some(PartitionTable::Mbr(m)) = &disk.partition_table else {
        panic!("no MBR: {:?}", disk.partition_table)
    };
    assert_eq!(m.disk_signature, 0xfeedf00d);
    let got: Vec<(u32, u8, bool)> = m
        .partitions
        .iter()
        .map(|p| (p.number, p.type_byte, p.bootable))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 0x83, true),
            (2, 0x05, false),
            (5, 0x82, false),
            (6, 0x83, false)
        ]
    );
    assert_eq!(m.partitions[2].device, d.part(5));
    let sw = l
        .swaps
        .iter()
        .find(|x| x.device == d.part(5))
        .expect("inactive swap recorded");
    assert_eq!(
        (sw.uuid.as_deref(), sw.label.as_deref(), sw.active),
        (
            Some("5a000000-0000-4000-8000-000000000001"),
            Some("lbswap"),
            false
        )
    );

    // --include-disk overrides; unknown disks and partitions are errors.
    let out = s.join("inc.json");
    let (code, _, err) = run_lifeboat([
        "layout",
        "save",
        "-o",
        out.to_str().unwrap(),
        "--only-disk",
        &d.dev,
        "--include-disk",
        &d.dev,
    ]);
    assert_eq!(code, 0, "{err}");
    let l = Layout::load(&out).unwrap();
    assert!(l.disks[0].needed);
    assert_eq!(l.disks[0].needed_reason, "included with --include-disk");
    let (code, _, err) = run_lifeboat([
        "layout",
        "save",
        "-o",
        out.to_str().unwrap(),
        "--only-disk",
        &d.part(1),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a whole disk"), "{err}");
    let (code, _, err) =
        run_lifeboat(["layout", "diff", out.to_str().unwrap(), "/nonexistent.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("reading layout /nonexistent.json"), "{err}");
}

/// LVM on the host (no device-mapper: the VG has no LV, lvm still reports
/// it): the metadata text read from the PVs restores the VG with
/// vgcfgrestore after the PVs are recreated with their UUIDs.
#[test]
fn loop_lvm_metadata_restores_with_vgcfgrestore() {
    let s = Scratch::new("loop-layout-lvm");
    let img = s.join("lvm.img");
    blank_disk(&img, 128);
    sh(&format!(
        "printf 'label: gpt\\n,48M,E6D6D379-F507-44C2-A23C-238F2A3DF928\\n,48M,E6D6D379-F507-44C2-A23C-238F2A3DF928\\n' | sfdisk -q '{}'",
        img.display()
    ));
    let d = LoopDisk::attach(&img);
    let (p1, p2) = (d.part(1), d.part(2));
    let vg = format!("lbtest{}", std::process::id());
    let _cleanup = Guard(format!("vgremove -qf {vg}; pvremove -qff {p1} {p2}"));
    sh(&format!(
        "export LVM_SUPPRESS_FD_WARNINGS=1; \
         pvcreate -q --uuid LBloop-0000-0000-0000-0000-0000-000001 --norestorefile {p1} && \
         pvcreate -q --uuid LBloop-0000-0000-0000-0000-0000-000002 --norestorefile {p2} && \
         vgcreate -q -s 8m {vg} {p1} {p2} >/dev/null"
    ));
    let (l, _) = save(&s, "layout.json", &d.dev);
    let pvs: Vec<(&str, &str)> = l
        .lvm
        .pvs
        .iter()
        .map(|p| (p.device.as_str(), p.uuid.as_str()))
        .collect();
    assert_eq!(
        pvs,
        vec![
            (p1.as_str(), "LBloop-0000-0000-0000-0000-0000-000001"),
            (p2.as_str(), "LBloop-0000-0000-0000-0000-0000-000002")
        ]
    );
    assert_eq!(
        l.lvm.vgs.len(),
        1,
        "only the VG on this disk: {:?}",
        l.lvm.vgs
    );
    let v = &l.lvm.vgs[0];
    assert_eq!(
        (v.name.as_str(), v.extent_size_bytes),
        (vg.as_str(), 8 << 20)
    );
    assert!(
        v.metadata.starts_with(&format!("{vg} {{\n")),
        "{}",
        v.metadata
    );
    assert!(
        v.metadata.contains(&format!("id = \"{}\"", v.uuid)),
        "{}",
        v.metadata
    );

    // Wipe the VG and bring it back from the captured text.
    let file = s.join("vg.txt");
    std::fs::write(&file, &v.metadata).unwrap();
    sh(&format!(
        "export LVM_SUPPRESS_FD_WARNINGS=1; vgremove -qf {vg} >/dev/null 2>&1; pvremove -qff {p1} {p2} >/dev/null; \
         pvcreate -q --uuid LBloop-0000-0000-0000-0000-0000-000001 --norestorefile {p1} && \
         pvcreate -q --uuid LBloop-0000-0000-0000-0000-0000-000002 --norestorefile {p2} && \
         vgcfgrestore -q -f '{}' {vg} 2>/dev/null",
        file.display()
    ));
    let uuid = sh(&format!(
        "LVM_SUPPRESS_FD_WARNINGS=1 vgs --noheadings -o vg_uuid {vg} 2>/dev/null"
    ));
    assert_eq!(uuid.trim(), v.uuid);
}

/// Runs a shell command on drop (cleanup that must happen on failure too).
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "export LVM_SUPPRESS_FD_WARNINGS=1; {} >/dev/null 2>&1",
                self.0
            ))
            .status();
    }
}
