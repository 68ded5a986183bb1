//! Loop tier (root): a whole recovery on the host, from image files on loop
//! devices: a GPT disk with ext4, XFS and swap is captured (`layout save
//! --root`), backed up (`backup create --root`), and recovered onto a larger
//! loop device, first interrupted by a failure point and then resumed.
//! Run single-threaded: `cargo test --test loop_recover -- --test-threads=1`.

mod common;

use common::*;
use lifeboat::layout::{Layout, PartitionTable};

const DISK_GUID: &str = "7ec0e000-0000-4000-8000-000000000001";
const P1: &str = "7ec0e001-0000-4000-8000-000000000001";
const P2: &str = "7ec0e002-0000-4000-8000-000000000002";
const P3: &str = "7ec0e003-0000-4000-8000-000000000003";
const ROOT_UUID: &str = "7ec0f000-0000-4000-8000-000000000001";
const SRV_UUID: &str = "7ec0f000-0000-4000-8000-000000000002";
const SWAP_UUID: &str = "7ec0f000-0000-4000-8000-000000000003";

/// A blank loop device, detached (with its partitions) on drop.
struct Blank {
    dev: String,
}

impl Blank {
    fn new(image: &std::path::Path, mib: u64) -> Blank {
        blank_disk(image, mib);
        Blank {
            dev: sh(&format!("losetup -f --show '{}'", image.display()))
                .trim()
                .to_string(),
        }
    }
}

impl Drop for Blank {
    fn drop(&mut self) {
        let _ = std::process::Command::new("partx")
            .args(["-d", &self.dev])
            .status();
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .status();
    }
}

fn sums(root: &std::path::Path) -> String {
    sh(&format!(
        "cd '{}' && find . -xdev -type f ! -path './var/log/lifeboat/*' ! -path './lost+found/*' \
         | sort | xargs -d '\\n' sha256sum && \
         find . -xdev ! -type d -printf '%p %m %U:%G %y %s %T@\\n' && \
         find . -xdev -type d -printf '%p %m %U:%G\\n'",
        root.display()
    ))
    .lines()
    .filter(|l| !l.contains("./var/log/lifeboat") && !l.contains("./lost+found"))
    .collect::<std::collections::BTreeSet<_>>()
    .into_iter()
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn loop_recover_onto_a_larger_disk_resuming_after_a_failure() {
    let s = Scratch::new("loop-recover");
    let src_root = s.join("src");
    let (old_dev, source_sums, srv_sums);
    // Attached while the source still is, so that it gets another name.
    let target;
    {
        let img = s.join("source.img");
        blank_disk(&img, 700);
        sh(&format!(
            "sgdisk -U {DISK_GUID} -n 1:1M:+200M -t 1:8300 -c 1:root -u 1:{P1} \
             -n 2:0:+320M -t 2:8300 -c 2:srv -u 2:{P2} -n 3:0:0 -t 3:8200 -c 3:swap -u 3:{P3} '{}' >/dev/null",
            img.display()
        ));
        let mut d = LoopDisk::attach(&img);
        old_dev = d.dev.clone();
        sh(&format!(
            "mkfs.ext4 -q -U {ROOT_UUID} -L root '{}'",
            d.part(1)
        ));
        sh(&format!(
            "TEST_DIR=1 TEST_DEV=1 QA_CHECK_FS=1 mkfs.xfs -q -m uuid={SRV_UUID} -L srv '{}'",
            d.part(2)
        ));
        sh(&format!("mkswap -U {SWAP_UUID} '{}' >/dev/null", d.part(3)));
        d.mount(&d.part(1), &src_root, "");
        d.mount(&d.part(2), &src_root.join("srv"), "");
        sh(&format!(
            "cd '{root}' && mkdir -p etc usr/share/doc srv/www tmp && \
             for i in $(seq 1 300); do echo \"line $i\" > usr/share/doc/f$i; done && \
             dd if=/dev/urandom of=srv/www/blob bs=1M count=20 status=none && \
             ln -s ../usr/share/doc/f1 etc/link && ln usr/share/doc/f2 etc/hard && \
             echo scratch > tmp/not-kept && chown 123:456 usr/share/doc/f3 && \
             printf 'UUID={ROOT_UUID} / ext4 defaults 0 1\\n{dev}p2 /srv xfs defaults 0 2\\n{dev}p3 none swap sw 0 0\\n' > etc/fstab && \
             mkdir -p bin usr/sbin && cp /bin/busybox bin/busybox && ln -s busybox bin/sh && \
             printf '#!/bin/sh\\ntest -d /proc/self && test -d /dev && test -d /sys\\n' > usr/sbin/update-initramfs && \
             chmod 755 usr/sbin/update-initramfs",
            root = src_root.display(),
            dev = d.dev
        ));
        source_sums = sums(&src_root);
        srv_sums = sums(&src_root.join("srv"));
        let (code, out, err) = run_lifeboat([
            "layout",
            "save",
            "--root",
            src_root.to_str().unwrap(),
            "--only-disk",
            &d.dev,
            "-o",
            s.join("layout.json").to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = run_lifeboat([
            "backup",
            "create",
            "--root",
            src_root.to_str().unwrap(),
            "--layout",
            s.join("layout.json").to_str().unwrap(),
            "--to",
            s.join("backup").to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        target = Blank::new(&s.join("target.img"), 1400);
    }
    let layout = Layout::load(&s.join("layout.json")).unwrap();
    let mps: Vec<&str> = layout
        .mounts
        .iter()
        .map(|m| m.mountpoint.as_str())
        .collect();
    assert_eq!(mps, ["/", "/srv"], "mount points are relative to --root");

    let map = format!("{old_dev}={}", target.dev);
    let common_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--allow-loop",
            "--layout",
            s.join("layout.json").to_str().unwrap(),
            "--backup",
            s.join("backup").to_str().unwrap(),
            "--map",
            &map,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };

    // The plan: sizes grow, nothing written.
    let mut args = vec!["plan".to_string()];
    args.extend(common_args(&[]));
    let (code, out, err) = run_lifeboat(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "{old_dev} (700.0 MiB) -> {} (1.4 GiB)  [--map]",
            target.dev
        )),
        "{out}"
    );
    assert!(out.contains("write GPT on"), "{out}");
    assert!(
        out.contains(&format!(
            "{}: no serial or WWN; holds nothing (no partition table, no signature)",
            target.dev
        )),
        "the plan shows the target's identity and content: {out}"
    );
    assert!(
        out.contains(&format!("{old_dev}p2 -> {}p2", target.dev)),
        "device names are rewritten: {out}"
    );

    // A dry run writes nothing (the image byte-for-byte as it was) and
    // prints, at the default verbosity, each change it would make.
    let image = || std::fs::read(s.join("target.img")).unwrap();
    let blank = image();
    let mut args = vec!["recover".to_string(), "--dry-run".into()];
    args.extend(common_args(&[
        "--mount-root",
        s.join("dry").to_str().unwrap(),
    ]));
    let (code, out, err) = run_lifeboat(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(image() == blank, "a dry run wrote to the disk");
    assert!(!s.join("dry").exists(), "a dry run made the mount root");
    let dev = &target.dev;
    for want in [
        format!("dry run: would write the GPT partition table on {dev}\n"),
        format!("dry run: would re-read the partition table of {dev}\n"),
        format!(" -q {dev}p3\n"),
        "mke2fs -F -q -t ext4 ".to_string(),
        format!(" -U {ROOT_UUID} -L root {dev}p1\n"),
        format!("mkfs.xfs -f -q -m crc=1,reflink=1,uuid={SRV_UUID} "),
        format!("mkswap -f -U {SWAP_UUID} {dev}p3\n"),
        format!("mount -t ext4 {dev}p1 "),
        "dry run: would restore generation ".to_string(),
        "dry run: would regenerate the initramfs in ".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in: {out}");
    }
    let shown = out
        .lines()
        .filter(|l| l.starts_with("dry run: would "))
        .count();
    assert!(shown >= 14, "{shown} changes shown: {out}");

    // Interrupted right after the XFS was made, then resumed.
    let state = s.join("state.json");
    let mnt = s.join("mnt");
    let recover_args = |extra: &[&str]| {
        let mut v = vec!["recover".to_string(), "--yes".into()];
        v.extend(common_args(&[
            "--state",
            state.to_str().unwrap(),
            "--mount-root",
            mnt.to_str().unwrap(),
            "--report",
            s.join("report.json").to_str().unwrap(),
            // The initramfs step runs the system's tool in a chroot (a
            // script of the tree's busybox): /dev, /proc, /sys and /run are
            // mounted into a root that has none of them.
            "--regenerate-initramfs",
        ]));
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let out = std::process::Command::new(lifeboat())
        .args(recover_args(&[]))
        .env("LIFEBOAT_FAILPOINT", format!("mkfs:{}p2", target.dev))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(99),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out, err) = run_lifeboat(recover_args(&[]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("resuming: 3 steps were completed by an earlier run"),
        "{out}"
    );
    assert!(out.contains("recovery complete"), "{out}");

    // A new run (another journal) finds the disk holding data it did not
    // write: refused without --wipe, naming what is there; nothing written.
    let image_sum = || sh(&format!("sha256sum '{}'", s.join("target.img").display()));
    let before = image_sum();
    let mut args = vec!["recover".to_string(), "--yes".into()];
    args.extend(common_args(&[
        "--state",
        s.join("other-state.json").to_str().unwrap(),
        "--mount-root",
        mnt.to_str().unwrap(),
    ]));
    let (code, out, err) = run_lifeboat(&args);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!(
            "refusing to write {} (no serial or WWN, 1.4 GiB) holds GPT (disk GUID {DISK_GUID}, \
             3 partitions)",
            target.dev
        )),
        "{err}"
    );
    assert!(err.contains("ext4 label \"root\""), "{err}");
    assert!(err.contains("add --wipe"), "{err}");
    assert!(
        out.contains(&format!("{}: no serial or WWN; holds GPT", target.dev)),
        "the plan shows what the disk holds: {out}"
    );
    assert_eq!(image_sum(), before, "a refused recovery wrote to the disk");

    // The new disk: same identities, larger, same files.
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
    let table = |l: &Layout| match &l.disks[0].partition_table {
        Some(PartitionTable::Gpt(g)) => g.clone(),
        other => panic!("{other:?}"),
    };
    let (old_t, new_t) = (table(&layout), table(&after));
    assert_eq!(new_t.disk_guid, DISK_GUID);
    for (o, n) in old_t.partitions.iter().zip(&new_t.partitions) {
        assert_eq!(
            (&o.unique_guid, &o.type_guid, &o.name),
            (&n.unique_guid, &n.type_guid, &n.name)
        );
        assert!(n.size_bytes >= o.size_bytes, "{} shrank", n.name);
    }
    assert!(new_t.partitions[1].size_bytes > old_t.partitions[1].size_bytes * 3 / 2);
    let fs_ids = |l: &Layout| {
        let mut v: Vec<(String, Option<String>, Option<String>)> = l
            .filesystems
            .iter()
            .map(|f| (f.fstype.to_string(), f.uuid.clone(), f.label.clone()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(fs_ids(&after), fs_ids(&layout));
    assert_eq!(after.swaps[0].uuid.as_deref(), Some(SWAP_UUID));

    let mut check = LoopDisk::attach(&s.join("target.img"));
    check.mount(&check.part(1), &s.join("check"), "");
    check.mount(&check.part(2), &s.join("check/srv"), "");
    assert_same_lines(&sums(&s.join("check/srv")), &srv_sums);
    let fstab = std::fs::read_to_string(s.join("check/etc/fstab")).unwrap();
    assert!(
        fstab.contains(&format!("{}p2 /srv xfs", target.dev)),
        "fstab not rewritten: {fstab}"
    );
    let report =
        std::fs::read_to_string(s.join("check/var/log/lifeboat/recovery-report.json")).unwrap();
    assert!(report.contains("\"ok\": true"));
    assert!(
        report.contains("initramfs regenerated with update-initramfs (asked to)"),
        "{report}"
    );
    // The mount points recovery made for the chroot are gone again (the
    // comparison of the whole tree below names any left over).
    for d in ["dev", "proc", "run", "sys"] {
        assert!(!s.join("check").join(d).exists(), "/{d} left behind");
    }
    // The whole tree, but for the fstab that had to change, the content of
    // /tmp, which backups leave out, and /var/log/lifeboat with the report.
    let strip = |t: &str| {
        t.lines()
            .filter(|l| {
                !l.contains("./etc") && !l.contains("tmp/not-kept") && !l.starts_with("./var ")
            })
            .filter(|l| !l.starts_with("./var/log "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_same_lines(&strip(&sums(&s.join("check"))), &strip(&source_sums));
    assert!(!s.join("check/tmp/not-kept").exists() && s.join("check/tmp").is_dir());
    check.unmount_all();
    drop(check);

    // The file systems wiped since (the GPT left as the plan wrote it): the
    // journal of the finished run no longer describes the disk. Resuming
    // would skip every mkfs and fail at the mount; it is refused, naming
    // what is missing, and nothing is written.
    for p in [1, 2] {
        sh(&format!("wipefs -a -q '{}p{p}'", target.dev));
    }
    sh(&format!("blockdev --flushbufs '{}'", target.dev));
    let before = image_sum();
    let (code, out, err) = run_lifeboat(recover_args(&[]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!(
            "refusing to resume: {} records 9 steps done, but the disks no longer hold what \
             they made: {dev}p1 holds no ext4 file system with UUID {ROOT_UUID}; {dev}p2 holds \
             no xfs file system with UUID {SRV_UUID}.",
            state.display(),
            dev = target.dev
        )),
        "{err}"
    );
    assert!(err.contains("start over with --start-over"), "{err}");
    assert!(!out.contains("already done"), "{out}");
    assert_eq!(image_sum(), before, "a refused resume wrote to the disk");
    // --start-over forgets the journal: every step runs (here as a dry run;
    // the GPT left on the disk needs --wipe).
    let (code, out, err) = run_lifeboat(recover_args(&["--start-over", "--wipe", "--dry-run"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("already done"), "{out}");
    assert!(!out.contains("resuming"), "{out}");
    assert_eq!(image_sum(), before, "a dry run wrote to the disk");
}

/// A layout captured while the system was mounted under another folder,
/// without `--root`: with a backup, the plan would restore nothing. `plan`
/// says so as an error naming `layout save --root`, `recover` refuses
/// before writing, and `--no-restore` recreates the disks all the same.
#[test]
fn loop_a_plan_restoring_nothing_from_a_backup_is_refused() {
    let s = Scratch::new("loop-no-restore");
    let src_root = s.join("src");
    let old_dev;
    let target;
    {
        let img = s.join("source.img");
        blank_disk(&img, 100);
        sh(&format!(
            "sgdisk -n 1:1M:0 -t 1:8300 -c 1:root '{}' >/dev/null",
            img.display()
        ));
        let mut d = LoopDisk::attach(&img);
        old_dev = d.dev.clone();
        sh(&format!("mkfs.ext4 -q -L root '{}'", d.part(1)));
        d.mount(&d.part(1), &src_root, "");
        std::fs::write(src_root.join("hello"), "hello\n").unwrap();
        // No --root: the file system is recorded at its mount point here.
        let (code, out, err) = run_lifeboat([
            "layout",
            "save",
            "--only-disk",
            &d.dev,
            "-o",
            s.join("layout.json").to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = run_lifeboat([
            "backup",
            "create",
            "--source",
            src_root.to_str().unwrap(),
            "--to",
            s.join("backup").to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}{err}");
        target = Blank::new(&s.join("target.img"), 120);
    }
    let map = format!("{old_dev}={}", target.dev);
    let args = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = cmd.iter().map(|x| x.to_string()).collect();
        v.extend(
            [
                "--allow-loop",
                "--layout",
                s.join("layout.json").to_str().unwrap(),
                "--backup",
                s.join("backup").to_str().unwrap(),
                "--map",
                &map,
                "--mount-root",
                s.join("mnt").to_str().unwrap(),
            ]
            .iter()
            .map(|x| x.to_string()),
        );
        v
    };
    let want = format!(
        "the plan restores nothing from the backup {}",
        s.join("backup").display()
    );
    let hint = format!("`lifeboat layout save --root {}`", src_root.display());
    let (code, out, err) = run_lifeboat(args(&["plan"]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(&want) && err.contains(&hint), "{err}");
    assert!(out.contains("\nErrors:\n"), "{out}");

    let image_sum = || sh(&format!("sha256sum '{}'", s.join("target.img").display()));
    let before = image_sum();
    let state = s.join("state.json");
    let (code, out, err) = run_lifeboat(args(&[
        "recover",
        "--yes",
        "--state",
        state.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(&want) && err.contains("--no-restore"), "{err}");
    assert!(!out.contains("recovery complete"), "{out}");
    assert_eq!(image_sum(), before, "a refused recovery wrote to the disk");

    let (code, out, err) = run_lifeboat(args(&["plan", "--no-restore"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_lifeboat(args(&[
        "recover",
        "--yes",
        "--no-restore",
        "--state",
        state.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("--no-restore: the disks are recreated empty"),
        "{out}"
    );
    let fs = sh(&format!("blkid -p -o value -s LABEL '{}p1'", target.dev));
    assert_eq!(fs.trim(), "root", "the disk is recreated");
}
