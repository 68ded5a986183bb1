//! QEMU tier: the real Debian 12 source system of the end-to-end recovery
//! test. `qemu/build-debian.sh` builds it (debootstrap, then the disk in a
//! rescue guest) or takes it from its cache; `qemu/boot-check.sh` boots it
//! under SeaBIOS and under OVMF with a job disk, and the job's output shows
//! what booted: the installed kernel, the LVM root, the mounts, the EFI entry.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;

/// The lines under "== NAME" in the job's output, up to the next header.
fn section<'a>(log: &'a str, name: &str) -> Vec<&'a str> {
    log.lines()
        .skip_while(|l| *l != format!("== {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

/// (source, fstype) of a mount point, from the "findmnt" section
/// (TARGET SOURCE FSTYPE, raw).
fn mount<'a>(log: &'a str, target: &str) -> Option<(&'a str, &'a str)> {
    section(log, "findmnt").into_iter().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 3 && f[0] == target).then(|| (f[1], f[2]))
    })
}

/// Everything the job output must show for either firmware; returns the
/// problems found.
fn check_common(firmware: &str, c: &Check) -> Vec<String> {
    let mut problems = Vec::new();
    let log = &c.job_log;
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(format!("{firmware}: {what}"));
        }
    };
    expect(c.code == 0, format!("boot-check.sh exited {}", c.code));
    let kernel = section(log, "uname -r").first().copied().unwrap_or("");
    let boot = section(log, "ls /boot");
    expect(
        kernel.ends_with("-amd64") && boot.contains(&format!("vmlinuz-{kernel}").as_str()),
        format!("the running kernel {kernel:?} is not one in /boot {boot:?}"),
    );
    let cmdline = section(log, "cmdline").join(" ");
    expect(
        cmdline.contains("root=/dev/mapper/vg0-root") && cmdline.contains("console=ttyS0,115200n8"),
        format!("kernel command line {cmdline:?}"),
    );
    let want = [
        ("/", "/dev/mapper/vg0-root", "ext4"),
        ("/home", "/dev/mapper/vg0-home", "xfs"),
        ("/boot", "/dev/vda3", "ext4"),
        ("/boot/efi", "/dev/vda2", "vfat"),
    ];
    for (target, source, fstype) in want {
        expect(
            mount(log, target) == Some((source, fstype)),
            format!(
                "{target} is mounted as {:?}, not {source} {fstype}",
                mount(log, target)
            ),
        );
    }
    let swaps = section(log, "swapon");
    expect(
        swaps.iter().any(|l| l.contains("partition")),
        format!("no swap active: {swaps:?}"),
    );
    let failed = section(log, "failed units");
    expect(
        failed.iter().all(|l| l.trim().is_empty()),
        format!("failed units: {failed:?}"),
    );
    let getty = section(log, "serial getty");
    expect(
        getty == ["active"],
        format!("no login prompt on ttyS0: serial-getty@ttyS0 is {getty:?}"),
    );
    expect(
        log.contains("== end"),
        "the job output is incomplete".to_string(),
    );
    problems
}

/// What the UEFI boot must show beyond the common checks: the firmware booted
/// the NVRAM entry "debian" that grub-install created.
fn check_uefi(c: &Check) -> Vec<String> {
    let mut problems = check_common("uefi", c);
    match boot_current(&c.job_log) {
        Some((_, entry))
            if entry.starts_with("debian") && entry.contains("\\EFI\\debian\\grubx64.efi") => {}
        other => problems.push(format!(
            "uefi: the firmware did not boot the EFI entry \"debian\" \
             (\\EFI\\debian\\grubx64.efi): {other:?}\n{}",
            section(&c.job_log, "efibootmgr -v").join("\n")
        )),
    }
    problems
}

/// What the BIOS boot must show beyond the common checks.
fn check_bios(c: &Check) -> Vec<String> {
    let mut problems = check_common("bios", c);
    let efi = section(&c.job_log, "efibootmgr -v");
    if efi != ["not booted under UEFI"] {
        problems.push(format!("bios: booted under UEFI? {efi:?}"));
    }
    problems
}

/// The EFI entry the firmware booted, as (number, label and path).
fn boot_current(log: &str) -> Option<(String, String)> {
    let efi = section(log, "efibootmgr -v");
    let current = efi
        .iter()
        .find_map(|l| l.strip_prefix("BootCurrent: "))?
        .trim()
        .to_string();
    let entry = efi.iter().find_map(|l| {
        l.strip_prefix(&format!("Boot{current}"))
            .map(|rest| rest.trim_start_matches('*').trim().to_string())
    })?;
    Some((current, entry))
}

/// What recovery must keep: disk and partition GUIDs, file system, LV, VG
/// and PV identities.
fn identities(l: &lifeboat::layout::Layout) -> Vec<String> {
    use lifeboat::layout::PartitionTable;
    let mut out = Vec::new();
    for d in l.disks.iter().filter(|d| d.needed) {
        if let Some(PartitionTable::Gpt(g)) = &d.partition_table {
            out.push(format!("gpt {}", g.disk_guid));
            for p in &g.partitions {
                out.push(format!(
                    "part {} {} {} {} {}",
                    p.number, p.type_guid, p.unique_guid, p.name, p.attributes
                ));
            }
        }
    }
    // The system's own file systems, not the job disk's.
    let needed = |dev: &str| l.disks_under(dev).iter().any(|d| d.needed);
    for f in l.filesystems.iter().filter(|f| needed(&f.device)) {
        out.push(format!(
            "fs {} {:?} {:?} {:?}",
            f.fstype, f.uuid, f.label, f.mountpoints
        ));
    }
    for v in &l.lvm.vgs {
        out.push(format!("vg {} {}", v.name, v.uuid));
    }
    for v in l.lvm.lvs.iter().filter(|v| !v.name.starts_with('[')) {
        out.push(format!("lv {}/{} {}", v.vg, v.name, v.uuid));
    }
    for p in &l.lvm.pvs {
        out.push(format!("pv {}", p.uuid));
    }
    for s in &l.swaps {
        out.push(format!("swap {:?}", s.uuid));
    }
    out.sort();
    out
}

/// What the source system's job produced.
struct SourceRun {
    layout: lifeboat::layout::Layout,
    iso: PathBuf,
}

/// The source system under UEFI: checks, capture, backup, rescue image (an
/// ISO that recovers unattended), and the sums of its files.
fn source_job(s: &Scratch, built: &Built) -> SourceRun {
    let job = job_dir(
        &s.join("job1"),
        &source_job_script(
            "--append lifeboat.recover=auto --append lifeboat.poweroff",
            "find /etc /home /usr/bin /boot /boot/efi -xdev -type f ! -path '/boot/grub/*' -print0 \\\n\
             | sort -z | xargs -0 sha256sum > \"$here/sums.txt\"",
        ),
    );
    let source = boot_check(
        &built.image,
        Some(&built.vars),
        "uefi",
        &job,
        2500,
        &s.join("source"),
    );
    let problems = check_uefi(&source);
    assert!(
        problems.is_empty() && source.job_log.contains("== lifeboat job done"),
        "the source job failed: {problems:?}\n{}\n{}",
        tail(&source.job_log, 60),
        tail(&source.serial, 30)
    );
    // What lifeboat reported inside the source system, for the record.
    for line in source.job_log.lines().filter(|l| {
        l.starts_with("layout saved")
            || l.starts_with("generation ")
            || l.starts_with("rescue image for kernel")
    }) {
        eprintln!("source: {line}");
    }
    let source_layout = lifeboat::layout::Layout::load(&s.join("source/job/layout.json")).unwrap();
    let iso = s.join("source/job/rescue/lifeboat-rescue.iso");
    assert!(iso.is_file(), "mkrescue wrote no ISO in the guest");
    SourceRun {
        layout: source_layout,
        iso,
    }
}

/// The end-to-end recovery of a real Debian 12 system: inside the running
/// system, `layout save`, `backup create` and `mkrescue` (an ISO that
/// recovers unattended); the ISO boots under OVMF on a blank, larger disk and
/// recovers it with the backup on a job disk; the recovered disk then boots
/// under SeaBIOS and under OVMF (through the EFI entry recovery wrote), with
/// the same files and identities.
#[test]
fn debian_full_recovery() {
    assert!(
        nix_is_root(),
        "this test builds and boots a Debian disk: run it as root (scripts/test.sh qemu)"
    );
    let s = Scratch::new("qemu-debian");
    let built = build_debian(&s.join("image"));
    let mut times: Vec<(&str, f64)> = Vec::new();

    let t = Instant::now();
    let src = source_job(&s, &built);
    times.push((
        "source: capture, backup, mkrescue (TCG)",
        t.elapsed().as_secs_f64(),
    ));
    let (source_layout, iso) = (src.layout, src.iso);

    // 2. The rescue ISO on a blank 8 GiB disk (the source had 6 GiB), the job
    // disk (relabelled for the rescue) holding the backup: unattended.
    let job_img = s.join("source/job.img");
    sh(&format!("e2label '{}' LIFEBOAT-AUTO", job_img.display()));
    let target = blank_disk(&s.join("target.img"), 8192);
    let vars = fresh_ovmf_vars(&s.join("rescue-vars.fd"));
    let t = Instant::now();
    let run = Vm::new(Boot::Cdrom(iso.clone()), &s.join("rescue-serial.log"))
        .firmware(Firmware::Uefi {
            vars: Some(vars.clone()),
        })
        .disk(Disk::virtio(&target).serial("NEW-DISK"))
        .disk(Disk::virtio(&job_img).serial("JOB"))
        .memory(1536)
        .timeout(2400)
        .run();
    times.push((
        "rescue: boot, recover unattended, power off",
        t.elapsed().as_secs_f64(),
    ));
    let job = JobDisk {
        image: job_img.clone(),
    };
    let recover_log = job.file("recover.log").unwrap_or_default();
    assert!(
        !run.timed_out,
        "the rescue did not power off:\n{}",
        tail(&run.log, 60)
    );
    assert_eq!(
        job.file("recover.rc").as_deref().map(str::trim),
        Some("0"),
        "unattended recovery failed:\n{}",
        tail(&recover_log, 80)
    );
    assert!(
        recover_log.contains("recovery complete"),
        "{}",
        tail(&recover_log, 40)
    );

    // 3. The recovered disk boots under SeaBIOS (an overlay) and under OVMF
    // with the NVRAM recovery wrote; files and identities are the source's.
    std::fs::copy(s.join("source/job/sums.txt"), s.join("sums.txt")).unwrap();
    let check_job = |dir: &str| {
        let d = job_dir(
            &s.join(dir),
            "sha256sum --quiet -c \"$here/sums.txt\" > \"$here/sums-check.txt\" 2>&1\n\
             lifeboat layout save -o \"$here/after.json\" --exclude-disk \"$(findmnt -no SOURCE \"$here\")\"\n\
             cp /var/log/lifeboat/recovery-report.json \"$here/\"",
        );
        std::fs::copy(s.join("sums.txt"), d.join("sums.txt")).unwrap();
        d
    };
    let bios_image = s.join("bios.qcow2");
    sh(&format!(
        "qemu-img create -q -f qcow2 -b '{}' -F raw '{}'",
        target.display(),
        bios_image.display()
    ));
    let t = Instant::now();
    let bios = boot_check(
        &bios_image,
        None,
        "bios",
        &check_job("job-bios"),
        64,
        &s.join("bios"),
    );
    times.push((
        "recovered disk: SeaBIOS boot and checks",
        t.elapsed().as_secs_f64(),
    ));
    let t = Instant::now();
    let uefi = boot_check(
        &target,
        Some(&vars),
        "uefi",
        &check_job("job-uefi"),
        64,
        &s.join("uefi"),
    );
    times.push((
        "recovered disk: OVMF boot and checks",
        t.elapsed().as_secs_f64(),
    ));

    let mut problems = check_bios(&bios);
    problems.extend(check_uefi(&uefi));
    for (name, c) in [("bios", &bios), ("uefi", &uefi)] {
        if !c.job_log.contains("== lifeboat job done") {
            problems.push(format!("{name}: the checks after recovery failed"));
        }
        let after = lifeboat::layout::Layout::load(&s.join(name).join("job/after.json"));
        match after {
            Ok(a) if identities(&a) == identities(&source_layout) => {}
            Ok(a) => problems.push(format!(
                "{name}: identities differ:\n{:?}\n{:?}",
                identities(&a),
                identities(&source_layout)
            )),
            Err(e) => problems.push(format!("{name}: no layout after recovery: {e:#}")),
        }
    }
    for (name, c) in [("bios", &bios), ("uefi", &uefi)] {
        if problems.iter().any(|p| p.starts_with(name)) {
            eprintln!(
                "--- {name} job.log:\n{}\n--- {name} serial console (tail):\n{}",
                c.job_log,
                tail(&c.serial, 40)
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The new disk is larger: the LVM PV and its LVs grew.
    let root_size = |l: &lifeboat::layout::Layout| {
        l.filesystems
            .iter()
            .find(|f| f.mountpoints.contains(&"/".to_string()))
            .map(|f| f.size_bytes)
    };
    let after = lifeboat::layout::Layout::load(&s.join("uefi/job/after.json")).unwrap();
    assert!(
        root_size(&after) > root_size(&source_layout),
        "the root file system did not grow"
    );

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.join("uefi/job/recovery-report.json")).unwrap(),
    )
    .unwrap();
    eprintln!("timings (s):");
    for (what, secs) in &times {
        eprintln!("  {secs:>7.1}  {what}");
    }
    eprintln!("recovery steps (s), inside the rescue:");
    for step in report["steps"].as_array().into_iter().flatten() {
        eprintln!(
            "  {:>7.1}  {}",
            step["seconds"].as_f64().unwrap_or(0.0),
            step["id"].as_str().unwrap_or("")
        );
    }
}

/// The same Debian system (512-byte sectors, ext4 /boot with 1 KiB blocks,
/// XFS /home with 512-byte sectors, a FAT32 ESP of 200 MiB) recovered by
/// the unattended rescue onto a blank 4K-native disk
/// (`logical_block_size=4096`), then booted under OVMF from that disk:
/// partitions translated, parameters raised, identities and files kept.
#[test]
fn debian_recovery_onto_a_4k_native_disk() {
    assert!(
        nix_is_root(),
        "this test builds and boots a Debian disk: run it as root (scripts/test.sh qemu)"
    );
    let s = Scratch::new("qemu-debian-4k");
    let built = build_debian(&s.join("image"));
    let src = source_job(&s, &built);
    let job_img = s.join("source/job.img");
    sh(&format!("e2label '{}' LIFEBOAT-AUTO", job_img.display()));
    let target = blank_disk(&s.join("target.img"), 8192);
    let vars = fresh_ovmf_vars(&s.join("rescue-vars.fd"));
    let run = Vm::new(Boot::Cdrom(src.iso.clone()), &s.join("rescue-serial.log"))
        .firmware(Firmware::Uefi {
            vars: Some(vars.clone()),
        })
        .disk(Disk::virtio(&target).serial("NEW-DISK").sector(4096))
        .disk(Disk::virtio(&job_img).serial("JOB"))
        .memory(1536)
        .timeout(2400)
        .run();
    let job = JobDisk {
        image: job_img.clone(),
    };
    let log = job.file("recover.log").unwrap_or_default();
    assert!(
        !run.timed_out,
        "the rescue did not power off:\n{}",
        tail(&run.log, 60)
    );
    assert_eq!(
        job.file("recover.rc").as_deref().map(str::trim),
        Some("0"),
        "unattended recovery failed:\n{}",
        tail(&log, 80)
    );
    for line in [
        "positions translated from 512-byte to 4096-byte sectors, aligned to 1 MiB",
        "ext4 /boot: block size 1024 -> 4096, the new disk has 4096-byte sectors",
        "xfs /home: sector size and log sector size 512 -> 4096",
        "vfat /boot/efi: logical sector size 512 -> 4096",
        "GRUB i386-pc is not installed on /dev/vda: it has 4096-byte sectors",
        "recovery complete",
    ] {
        assert!(
            log.contains(line),
            "recover.log lacks {line:?}:\n{}",
            tail(&log, 80)
        );
    }

    std::fs::copy(s.join("source/job/sums.txt"), s.join("sums.txt")).unwrap();
    let d = job_dir(
        &s.join("job-uefi"),
        "sha256sum --quiet -c \"$here/sums.txt\" > \"$here/sums-check.txt\" 2>&1\n\
         lifeboat layout save -o \"$here/after.json\" --exclude-disk \"$(findmnt -no SOURCE \"$here\")\"",
    );
    std::fs::copy(s.join("sums.txt"), d.join("sums.txt")).unwrap();
    let uefi = boot_check_on(
        &target,
        Some(&vars),
        "uefi",
        &d,
        64,
        &s.join("uefi"),
        Some(4096),
    );
    let mut problems = check_uefi(&uefi);
    if !uefi.job_log.contains("== lifeboat job done") {
        problems.push("uefi: the checks after recovery failed".into());
    }
    assert!(
        problems.is_empty(),
        "{}\n--- job.log:\n{}\n--- serial (tail):\n{}",
        problems.join("\n"),
        uefi.job_log,
        tail(&uefi.serial, 40)
    );
    let after = lifeboat::layout::Layout::load(&s.join("uefi/job/after.json")).unwrap();
    assert_eq!(identities(&after), identities(&src.layout));
    let sys = after.disks.iter().find(|d| d.needed).unwrap();
    assert_eq!(sys.logical_sector_size, 4096);
    let boot = after
        .filesystems
        .iter()
        .find(|f| f.mountpoints.contains(&"/boot".to_string()))
        .unwrap();
    assert!(
        matches!(
            boot.params,
            lifeboat::layout::FsParams::Ext {
                block_size: 4096,
                ..
            }
        ),
        "{:?}",
        boot.params
    );
}

fn nix_is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The checks on a real job log (captured from a UEFI boot of the built
/// system), and on the same log bent the ways a broken system or recovery
/// would bend it: each must be caught.
#[test]
fn checks_pass_a_real_boot_and_catch_broken_ones() {
    let good =
        std::fs::read_to_string(repo().join("tests/fixtures/debian-boot-check-uefi.log")).unwrap();
    let check = |log: &str| Check {
        code: 0,
        job_log: log.to_string(),
        serial: String::new(),
    };
    assert_eq!(check_uefi(&check(&good)), Vec::<String>::new());

    let broken = [
        (
            "/ /dev/mapper/vg0-root ext4",
            "/ /dev/vda4 ext4",
            "/ is mounted",
        ),
        (
            "/home /dev/mapper/vg0-home xfs",
            "/home /dev/mapper/vg0-home ext4",
            "/home is mounted",
        ),
        ("/boot/efi /dev/vda2 vfat", "", "/boot/efi is mounted"),
        (
            "BootCurrent: 0001",
            "BootCurrent: 0003",
            "did not boot the EFI entry",
        ),
        ("/dev/dm-2 partition 512M", "", "no swap"),
        (
            "== failed units\n",
            "== failed units\nhome.mount loaded failed failed /home\n",
            "failed units",
        ),
        (
            "== serial getty\nactive",
            "== serial getty\ninactive",
            "no login prompt",
        ),
        (
            "root=/dev/mapper/vg0-root",
            "root=/dev/vda4",
            "kernel command line",
        ),
        (
            "\nvmlinuz-6.1.0-50-amd64",
            "\nvmlinuz-6.1.0-99-amd64",
            "the running kernel",
        ),
        ("== end\n", "", "incomplete"),
    ];
    for (from, to, want) in broken {
        assert!(good.contains(from), "the fixture has no {from:?}");
        let problems = check_uefi(&check(&good.replacen(from, to, 1)));
        assert!(
            problems.iter().any(|p| p.contains(want)),
            "{from:?} -> {to:?} not caught as {want:?}: {problems:?}"
        );
    }
    let failed = Check {
        code: 1,
        ..check(&good)
    };
    assert!(!check_uefi(&failed).is_empty());
    // A BIOS boot must not have booted under UEFI.
    assert!(check_bios(&check(&good))
        .iter()
        .any(|p| p.contains("booted under UEFI")));
}
