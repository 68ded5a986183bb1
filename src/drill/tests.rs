//! The drill's pure parts: the scratch machine, QEMU command lines compared
//! as text, the job disk's files, judging a recovery and a boot, the report
//! and its store.

use std::path::{Path, PathBuf};

use super::job::{self, BackupAccess, JobFiles};
use super::machine::{self, Bus, FirmwareChoice, ScratchDisk, SizeRequest};
use super::qemu::{self, Accel, Finished, Guest, Media};
use super::report::{self, Step, Verdict};
use super::*;
use crate::layout::diff::tests::machine as fixture;
use crate::layout::{Firmware, GrubTarget};

fn disk(image: &str, bus: Bus, serial: Option<&str>) -> ScratchDisk {
    ScratchDisk {
        source: "/dev/vda".into(),
        image: PathBuf::from(image),
        bus,
        serial: serial.map(str::to_string),
        wwn: None,
        size_bytes: 10 << 30,
        original_size_bytes: 10 << 30,
        logical_sector_size: 512,
        physical_sector_size: 512,
        notes: vec![],
    }
}

#[test]
fn scratch_disks_keep_bus_serial_and_size() {
    let mut l = fixture();
    let work = Path::new("/w");
    let disks = machine::scratch_disks(&l, work, &[]).unwrap();
    let needed: Vec<_> = l.disks.iter().filter(|d| d.needed).collect();
    assert_eq!(disks.len(), needed.len());
    assert_eq!(
        disks[0].image,
        Path::new(&format!("/w/disk0-{}.img", needed[0].name))
    );
    assert_eq!(disks[0].bus, Bus::Virtio);
    assert_eq!(disks[0].serial, needed[0].serial);
    assert_eq!(disks[0].size_bytes, needed[0].size_bytes);
    assert!(disks[0].notes.is_empty(), "{:?}", disks[0].notes);

    // SCSI with a 64-bit WWN, NVMe with a serial too long, USB.
    let d = l.disks.iter_mut().find(|d| d.needed).unwrap();
    d.transport = Some("scsi".into());
    d.wwn = Some("naa.5000c500a1b2c3d4".into());
    d.logical_sector_size = 4096;
    d.physical_sector_size = 4096;
    let disks = machine::scratch_disks(&l, work, &[]).unwrap();
    assert_eq!(disks[0].bus, Bus::Scsi);
    assert_eq!(disks[0].wwn, Some(0x5000c500a1b2c3d4));
    assert_eq!(disks[0].size_bytes % 4096, 0);
    let d = l.disks.iter_mut().find(|d| d.needed).unwrap();
    d.transport = Some("nvme".into());
    d.serial = Some("S".repeat(21));
    let disks = machine::scratch_disks(&l, work, &[]).unwrap();
    assert_eq!(
        (disks[0].bus, disks[0].serial.as_deref()),
        (Bus::Nvme, None)
    );
    assert!(
        disks[0]
            .notes
            .iter()
            .any(|n| n.contains("longer than the 20 bytes")),
        "{:?}",
        disks[0].notes
    );
    assert!(
        disks[0].notes.iter().any(|n| n.contains("no WWN on nvme")),
        "{:?}",
        disks[0].notes
    );
    let d = l.disks.iter_mut().find(|d| d.needed).unwrap();
    d.transport = Some("usb".into());
    d.name = "sdc".into();
    let disks = machine::scratch_disks(&l, work, &[]).unwrap();
    assert_eq!(disks[0].bus, Bus::Scsi);
    assert!(
        disks[0].notes[0].contains("bus usb cannot be presented"),
        "{:?}",
        disks[0].notes
    );
}

#[test]
fn disk_size_requests() {
    let l = fixture();
    let first = l.disks.iter().find(|d| d.needed).unwrap();
    let r = SizeRequest::parse(&format!("{}=5G", first.name)).unwrap();
    assert_eq!(r.bytes, 5 << 30);
    let disks = machine::scratch_disks(&l, Path::new("/w"), &[r]).unwrap();
    assert_eq!(disks[0].size_bytes, 5 << 30);
    assert_eq!(disks[0].original_size_bytes, first.size_bytes);
    assert!(disks[0].notes[0].contains("(--disk-size)"));
    // By path and by serial too.
    for key in [first.path.clone(), first.serial.clone().unwrap()] {
        let r = SizeRequest::parse(&format!("{key}=6G")).unwrap();
        assert_eq!(
            machine::scratch_disks(&l, Path::new("/w"), &[r]).unwrap()[0].size_bytes,
            6 << 30
        );
    }
    let e = machine::scratch_disks(
        &l,
        Path::new("/w"),
        &[SizeRequest::parse("sdz=5G").unwrap()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("--disk-size sdz: no disk of the layout is called so; the disks are /dev/"),
        "{e}"
    );
    for bad in ["vda", "vda=", "=5G", "vda=1M", "vda=lots"] {
        assert!(SizeRequest::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn firmwares_of_the_source() {
    let mut l = fixture();
    l.host.firmware = Firmware::Uefi;
    assert_eq!(machine::source_firmwares(&l), [Firmware::Uefi]);
    let e = machine::rescue_firmwares(FirmwareChoice::Both, &l)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no boot loader for bios"), "{e}");
    l.boot.grub.push(GrubTarget {
        platform: "i386-pc".into(),
        disks: vec!["/dev/vda".into()],
    });
    assert_eq!(
        machine::source_firmwares(&l),
        [Firmware::Bios, Firmware::Uefi]
    );
    assert_eq!(
        machine::rescue_firmwares(FirmwareChoice::Auto, &l).unwrap(),
        [Firmware::Uefi]
    );
    assert_eq!(
        machine::rescue_firmwares(FirmwareChoice::Both, &l).unwrap(),
        [Firmware::Bios, Firmware::Uefi]
    );
    l.host.firmware = Firmware::Bios;
    l.boot.grub.clear();
    assert_eq!(machine::source_firmwares(&l), [Firmware::Bios]);
    assert!(machine::rescue_firmwares(FirmwareChoice::Uefi, &l).is_err());
}

#[test]
fn space_check() {
    assert_eq!(
        machine::space_needed(10 << 30),
        (10 << 30) + (1 << 30) + (256 << 20)
    );
    assert!(machine::check_space(Path::new("/w"), 100, 100).is_ok());
    let e = machine::check_space(Path::new("/w"), 2 << 30, 1 << 30)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("too little space in /w: the drill needs about 2.0 GiB"),
        "{e}"
    );
    assert!(e.contains("give --work DIR"), "{e}");
}

#[test]
fn rescue_command_line() {
    let disks = [
        disk("/w/disk0-vda.img", Bus::Virtio, Some("lifeboat-sys")),
        ScratchDisk {
            wwn: Some(0x5000c500a1b2c3d4),
            logical_sector_size: 4096,
            physical_sector_size: 4096,
            ..disk("/w/a,b.img", Bus::Scsi, Some("S1"))
        },
        disk("/w/n.img", Bus::Nvme, None),
        disk("/w/s.img", Bus::Sata, Some("SATA1")),
    ];
    let g = Guest {
        accel: Accel::Tcg,
        firmware: Firmware::Uefi,
        vars: Some(Path::new("/w/vars.fd")),
        memory_mib: 2048,
        cpus: 2,
        media: Media::Rescue {
            iso: Path::new("/r/lifeboat-rescue.iso"),
            job: Path::new("/w/job0.img"),
            share: Some(Path::new("/srv/backup")),
            network: false,
        },
        disks: &disks,
        serial_log: Path::new("/w/serial.log"),
    };
    let line = qemu::args(&g).unwrap().join(" ");
    assert_eq!(
        line,
        "-accel tcg -machine q35 -smp 2 -m 2048 -display none -monitor none -no-reboot \
         -serial file:/w/serial.log -device virtio-rng-pci \
         -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
         -drive if=pflash,format=raw,file=/w/vars.fd \
         -drive file=/r/lifeboat-rescue.iso,format=raw,if=none,id=cd,media=cdrom,readonly=on \
         -device ide-cd,drive=cd,bus=ide.0,bootindex=0 \
         -drive file=/w/job0.img,format=raw,if=none,id=job,cache=unsafe \
         -device ide-hd,drive=job,bus=ide.2,serial=LIFEBOAT-JOB \
         -virtfs local,path=/srv/backup,mount_tag=lifeboat-backup,security_model=none,readonly=on \
         -nic none -device virtio-scsi-pci,id=scsi0 \
         -drive file=/w/disk0-vda.img,format=raw,if=none,id=d0,cache=unsafe,discard=unmap \
         -device virtio-blk-pci,drive=d0,serial=lifeboat-sys \
         -drive file=/w/a,,b.img,format=raw,if=none,id=d1,cache=unsafe,discard=unmap \
         -device scsi-hd,drive=d1,bus=scsi0.0,serial=S1,wwn=0x5000c500a1b2c3d4,logical_block_size=4096,physical_block_size=4096 \
         -drive file=/w/n.img,format=raw,if=none,id=d2,cache=unsafe,discard=unmap \
         -device nvme,drive=d2,serial=LBDRILL2 \
         -drive file=/w/s.img,format=raw,if=none,id=d3,cache=unsafe,discard=unmap \
         -device ide-hd,drive=d3,bus=ide.1,serial=SATA1"
    );
}

/// The job disk sits on a bus the scratch disks do not use where it can:
/// a rescue image without their driver must still run its job.
#[test]
fn job_disk_on_another_bus_than_the_scratch_disks() {
    let job_of = |disks: &[ScratchDisk]| {
        let g = Guest {
            accel: Accel::Tcg,
            firmware: Firmware::Bios,
            vars: None,
            memory_mib: 1024,
            cpus: 1,
            media: Media::Rescue {
                iso: Path::new("/r/i.iso"),
                job: Path::new("/w/job0.img"),
                share: None,
                network: false,
            },
            disks,
            serial_log: Path::new("/w/s.log"),
        };
        let args = qemu::args(&g).unwrap();
        args.iter()
            .find(|a| a.contains("drive=job,"))
            .unwrap()
            .clone()
    };
    let virtio = disk("/w/v.img", Bus::Virtio, None);
    let sata = disk("/w/s.img", Bus::Sata, None);
    let nvme = disk("/w/n.img", Bus::Nvme, None);
    assert_eq!(
        job_of(std::slice::from_ref(&virtio)),
        "ide-hd,drive=job,bus=ide.1,serial=LIFEBOAT-JOB"
    );
    assert_eq!(
        job_of(&[nvme.clone(), sata.clone()]),
        "virtio-blk-pci,drive=job,serial=LIFEBOAT-JOB"
    );
    assert_eq!(
        job_of(&[sata.clone(), virtio, sata.clone()]),
        "ide-hd,drive=job,bus=ide.3,serial=LIFEBOAT-JOB"
    );
    // Five SATA disks fill the AHCI ports beside the CD.
    let five = vec![sata; 5];
    assert_eq!(
        job_of(&five),
        "virtio-blk-pci,drive=job,serial=LIFEBOAT-JOB"
    );
}

#[test]
fn recovered_boot_command_lines() {
    let disks = [
        disk("/w/d0.img", Bus::Virtio, Some("A")),
        disk("/w/d1.img", Bus::Virtio, None),
    ];
    let mut g = Guest {
        accel: Accel::Kvm,
        firmware: Firmware::Bios,
        vars: None,
        memory_mib: 1024,
        cpus: 1,
        media: Media::Disks {
            report: Some(Path::new("/w/report.txt")),
        },
        disks: &disks,
        serial_log: Path::new("/w/boot.log"),
    };
    let line = qemu::args(&g).unwrap().join(" ");
    assert_eq!(
        line,
        "-accel kvm -machine q35 -smp 1 -m 1024 -display none -monitor none -no-reboot \
         -serial file:/w/boot.log -device virtio-rng-pci -nic none \
         -device virtio-serial-pci,id=vser0 -chardev file,id=drill,path=/w/report.txt \
         -device virtserialport,bus=vser0.0,chardev=drill,name=org.lifeboat.drill \
         -drive file=/w/d0.img,format=raw,if=none,id=d0,cache=unsafe,discard=unmap \
         -device virtio-blk-pci,drive=d0,serial=A,bootindex=0 \
         -drive file=/w/d1.img,format=raw,if=none,id=d1,cache=unsafe,discard=unmap \
         -device virtio-blk-pci,drive=d1,bootindex=1"
    );
    // UEFI: the NVRAM's boot order, no bootindex; a UEFI guest needs vars.
    g.firmware = Firmware::Uefi;
    let e = qemu::args(&g).unwrap_err().to_string();
    assert!(e.contains("NVRAM"), "{e}");
    g.vars = Some(Path::new("/w/v.fd"));
    g.media = Media::Disks { report: None };
    let args = qemu::args(&g).unwrap();
    assert!(!args
        .iter()
        .any(|a| a.contains("bootindex") || a.contains("virtserialport")));
    assert!(args.contains(&"if=pflash,format=raw,file=/w/v.fd".to_string()));
    let shell = qemu::shell_line(&args);
    assert!(
        shell.starts_with("qemu-system-x86_64 -accel kvm -machine q35 "),
        "{shell}"
    );
    // Too many SATA disks for the AHCI ports.
    let sata: Vec<ScratchDisk> = (0..6)
        .map(|i| disk(&format!("/w/{i}"), Bus::Sata, None))
        .collect();
    g.disks = &sata;
    assert!(qemu::args(&g)
        .unwrap_err()
        .to_string()
        .contains("5 SATA ports"));
}

#[test]
fn kvm_probe_command_line() {
    let args = qemu::probe_args(Path::new("/r/a,b/vmlinuz")).unwrap();
    assert_eq!(
        args.join(" "),
        "-accel kvm -machine q35 -m 256 -display none -monitor none -serial none -nic none \
         -no-reboot -kernel /r/a,b/vmlinuz -append panic=-1 quiet"
    );
    use std::os::unix::ffi::OsStrExt;
    let bad = Path::new(std::ffi::OsStr::from_bytes(b"/r/\xff/vmlinuz"));
    assert!(qemu::probe_args(bad)
        .unwrap_err()
        .to_string()
        .contains("not UTF-8"));
}

#[test]
fn network_for_urls() {
    let disks = [disk("/w/d0.img", Bus::Virtio, None)];
    let g = Guest {
        accel: Accel::Tcg,
        firmware: Firmware::Bios,
        vars: None,
        memory_mib: 1024,
        cpus: 1,
        media: Media::Rescue {
            iso: Path::new("/r/x.iso"),
            job: Path::new("/w/j.img"),
            share: None,
            network: true,
        },
        disks: &disks,
        serial_log: Path::new("/w/s.log"),
    };
    let line = qemu::args(&g).unwrap().join(" ");
    assert!(
        line.contains("-netdev user,id=net0 -device virtio-net-pci,netdev=net0"),
        "{line}"
    );
    assert!(
        !line.contains("-virtfs") && !line.contains("-nic none"),
        "{line}"
    );
    // The rescue boots from the CD; BIOS disks get no bootindex then.
    assert!(!line.contains("drive=d0,bootindex"), "{line}");
}

#[test]
fn job_disk_files() {
    let a = job::answers_text(&BackupAccess::Share, Some("20261201T000000Z"), true);
    let parsed: crate::recover::Answers = toml::from_str(&a).unwrap();
    assert_eq!(parsed.backup.as_deref(), Some("/run/lifeboat/backup"));
    assert_eq!(parsed.layout.as_deref(), Some("layout.json"));
    assert_eq!(parsed.key_file.as_deref(), Some("luks.key"));
    assert_eq!(parsed.generation.as_deref(), Some("20261201T000000Z"));
    let url = BackupAccess::of("nfs://nas/backups/db1");
    assert_eq!(url, BackupAccess::Url("nfs://nas/backups/db1".into()));
    let a: crate::recover::Answers = toml::from_str(&job::answers_text(&url, None, false)).unwrap();
    assert_eq!(a.backup.as_deref(), Some("nfs://nas/backups/db1"));
    assert_eq!((a.key_file, a.generation), (None, None));

    let s = job::autorun_text(&BackupAccess::Share);
    assert!(s.contains("mount -t 9p -o trans=virtio,version=9p2000.L,ro,nosuid,nodev,noexec lifeboat-backup /run/lifeboat/backup"), "{s}");
    assert!(
        s.contains(
            "lifeboat plan --json --layout \"$job/layout.json\" --backup /run/lifeboat/backup"
        ),
        "{s}"
    );
    assert!(
        s.contains("lifeboat recover --unattended --drill --report \"$job/recovery-report.json\""),
        "{s}"
    );
    assert!(s.trim_end().ends_with("finish"), "{s}");
    let s = job::autorun_text(&BackupAccess::Url("cifs://nas/b'x".into()));
    assert!(s.contains("udhcpc -i") && !s.contains("9p"), "{s}");
    assert!(s.contains("--backup 'cifs://nas/b'\\''x'"), "{s}");
}

fn finished(code: Option<i32>, timed_out: bool) -> Finished {
    Finished {
        exit_code: code,
        timed_out,
        stopped: false,
        seconds: 12.0,
        stderr: String::new(),
    }
}

/// A plan of the fixture layout, as `lifeboat plan --json` prints it.
fn plan_json() -> String {
    let mut l = fixture();
    let root = l
        .filesystems
        .iter_mut()
        .find(|f| f.device == "/dev/mapper/vg0-root")
        .unwrap();
    root.mountpoints = vec!["/".into()];
    l.mounts.push(crate::layout::Mount {
        mountpoint: "/".into(),
        source: "/dev/mapper/vg0-root".into(),
        fstype: root.fstype.clone(),
        options: "rw".into(),
        fs_options: "rw".into(),
        root: "/".into(),
    });
    l.boot.grub.push(GrubTarget {
        platform: "i386-pc".into(),
        disks: vec!["/dev/vda".into()],
    });
    let targets = l
        .disks
        .iter()
        .filter(|d| d.needed)
        .map(|d| crate::plan::TargetDisk {
            name: d.name.clone(),
            path: d.path.clone(),
            size_bytes: d.size_bytes,
            logical_sector_size: 512,
            serial: d.serial.clone(),
            wwn: None,
            model: None,
            removable: false,
            read_only: false,
            contents: Default::default(),
        })
        .collect();
    let input = crate::plan::PlanInput {
        targets,
        backup: Some("/b".into()),
        ..Default::default()
    };
    serde_json::to_string(&crate::plan::build(&l, &input).unwrap()).unwrap()
}

#[test]
fn recovery_judged_from_the_job_disk() {
    let log = Path::new("/nonexistent/serial.log");
    let started = JobFiles {
        started: true,
        plan_rc: Some(0),
        plan: Some(plan_json()),
        ..JobFiles::default()
    };
    // The rescue never ran the job.
    let r = judge_recovery(
        &finished(None, true),
        &JobFiles::default(),
        None,
        log,
        "uefi",
    );
    assert_eq!(r.failed_step, Some(Step::RescueBoot));
    assert!(r.detail.unwrap().contains("(timed out)"));
    // The rescue stopped at a panic before its job: named as seen.
    let panic = console::watch_text("[ 1.5] Kernel panic - not syncing: Attempted to kill init!\n");
    let r = judge_recovery(
        &finished(None, false),
        &JobFiles::default(),
        panic.as_ref(),
        log,
        "bios",
    );
    assert_eq!(r.failed_step, Some(Step::RescueBoot));
    assert_eq!(
        r.detail.unwrap(),
        "the rescue image stopped: kernel panic: not syncing: Attempted to kill init!"
    );
    // The share could not be mounted.
    let f = JobFiles {
        started: true,
        share_failed: true,
        ..JobFiles::default()
    };
    assert_eq!(
        judge_recovery(&finished(Some(0), false), &f, None, log, "bios").failed_step,
        Some(Step::RescueBoot)
    );
    // No plan: the disks were not found.
    let f = JobFiles {
        started: true,
        plan_rc: Some(1),
        plan_err: "lifeboat: error: no disk for /dev/vda".into(),
        ..JobFiles::default()
    };
    let r = judge_recovery(&finished(Some(0), false), &f, None, log, "uefi");
    assert_eq!(r.failed_step, Some(Step::Mapping));
    assert!(r.detail.unwrap().contains("no disk for /dev/vda"));
    // No plan, and the rescue saw no disk at all: its image lacks the driver.
    let f = JobFiles {
        disks_seen: job::disks_seen(Some("\n")),
        ..f
    };
    let r = judge_recovery(&finished(Some(0), false), &f, None, log, "uefi");
    assert_eq!(r.failed_step, Some(Step::Mapping));
    let d = r.detail.unwrap();
    assert!(
        d.starts_with("no target disk found: the rescue system sees no disk but its job disk")
            && d.ends_with("no disk for /dev/vda"),
        "{d}"
    );
    assert_eq!(
        job::disks_seen(Some("vda\nnvme0n1\n")).unwrap(),
        ["vda", "nvme0n1"]
    );
    assert_eq!(job::disks_seen(None), None);
    // Recovered.
    let f = JobFiles {
        recover_rc: Some(0),
        ..started.clone()
    };
    let r = judge_recovery(&finished(Some(0), false), &f, None, log, "uefi");
    assert!(r.recovered && r.failed_step.is_none());
    // Failed after the disks: the first step not done names the step.
    let plan: crate::plan::Plan = serde_json::from_str(&plan_json()).unwrap();
    let ids: Vec<String> = plan
        .steps
        .iter()
        .map(crate::recover::journal::step_id)
        .collect();
    let restore_at = ids
        .iter()
        .position(|i| i == "restore")
        .unwrap_or_else(|| panic!("{ids:?}"));
    let boot_at = ids
        .iter()
        .position(|i| i == "bootloader")
        .unwrap_or_else(|| panic!("{ids:?}"));
    for (done, want) in [
        (0, Step::Disks),
        (restore_at, Step::Restore),
        (boot_at, Step::Bootloader),
        (ids.len(), Step::Verify),
    ] {
        let journal = serde_json::json!({"plan_sha256": "x", "done": ids[..done]}).to_string();
        let f = JobFiles {
            recover_rc: Some(1),
            journal: Some(journal),
            ..started.clone()
        };
        let r = judge_recovery(&finished(Some(0), false), &f, None, log, "uefi");
        assert_eq!(r.failed_step, Some(want), "{done} steps done");
    }
}

#[test]
fn boots_judged_from_the_report() {
    let log = Path::new("/nonexistent");
    let ok = unit::parse_report("LIFEBOAT-DRILL-BOOTED target=multi-user.target active=active state=running firmware=uefi kernel=k failed=\n");
    let b = judge_boot(&finished(Some(0), false), ok.clone(), None, log, "uefi");
    assert!(b.passed && b.detail.is_none());
    let degraded = unit::parse_report("LIFEBOAT-DRILL-BOOTED target=multi-user.target active=active state=degraded firmware=uefi kernel=k failed=nfs.mount\n");
    let b = judge_boot(&finished(Some(0), false), degraded, None, log, "uefi");
    assert!(b.passed);
    assert_eq!(b.detail.as_deref(), Some("failed units: nfs.mount"));
    let b = judge_boot(&finished(None, true), None, None, log, "bios");
    assert!(
        !b.passed
            && b.detail
                .unwrap()
                .starts_with("no boot report within the timeout")
    );
    // The console showed a stall: the boot ends with what was seen.
    let seen = console::watch_text(
        "error: file `/vmlinuz' not found.\nerror: you need to load the kernel first.\n",
    );
    let b = judge_boot(&finished(None, false), None, seen.as_ref(), log, "bios");
    assert!(!b.passed);
    assert_eq!(
        b.detail.as_deref(),
        Some("GRUB found no kernel after: error: file `/vmlinuz' not found.")
    );
    let b = judge_boot(&finished(Some(0), false), None, None, log, "bios");
    assert!(
        !b.passed
            && b.detail
                .unwrap()
                .starts_with("the guest stopped without a boot report")
    );
}

pub(crate) fn sample_report(verdict: Verdict, started_at: &str) -> report::Report {
    let run = report::Run {
        firmware: "uefi".into(),
        recovered: verdict == Verdict::Passed,
        recovery_seconds: 100.0,
        recovery_report: None,
        boots: vec![],
        failed_step: (verdict == Verdict::Failed).then_some(Step::RecoveredBoot),
        detail: Some("no boot report".into()),
    };
    let (v, failed_step, problem) = match verdict {
        Verdict::Error => (
            Verdict::Error,
            None,
            Some("QEMU failed (exit 1): no KVM".into()),
        ),
        _ => report::Report::judge(std::slice::from_ref(&run)),
    };
    assert_eq!(v, verdict);
    report::Report {
        lifeboat_version: "0.1.0".into(),
        started_at: started_at.into(),
        finished_at: started_at.into(),
        seconds: 200.0,
        verdict: v,
        failed_step,
        problem,
        inputs: report::Inputs {
            hostname: "db1".into(),
            layout: "/l.json".into(),
            backup: "/b".into(),
            generation: "G".into(),
            rescue_dir: "/r".into(),
            rescue_kernel: "6.1".into(),
            rescue_built_at: started_at.into(),
            accel: "tcg".into(),
            accel_note: "no /dev/kvm".into(),
            memory_mib: 2048,
            cpus: 2,
        },
        disks: vec![],
        phases: vec![],
        runs: vec![run],
        kept: None,
    }
}

#[test]
fn verdicts_and_exit_codes() {
    let passed = sample_report(Verdict::Passed, "2026-12-01T00:00:00Z");
    assert_eq!(exit_code(&passed), 0);
    assert!(
        passed.summary().ends_with("lifeboat drill: PASSED in 3m\n"),
        "{}",
        passed.summary()
    );
    let failed = sample_report(Verdict::Failed, "2026-12-01T00:00:00Z");
    assert_eq!(exit_code(&failed), 1);
    assert_eq!(failed.failed_step, Some(Step::RecoveredBoot));
    assert!(
        failed.summary().contains(
            "lifeboat drill: FAILED: recovered boot failed (rescue under uefi): no boot report"
        ),
        "{}",
        failed.summary()
    );
    assert_eq!(report::Report::judge(&[]).0, Verdict::Error);
    assert_eq!(Verdict::Error.exit_code(), 2);
    let json = serde_json::to_value(&failed).unwrap();
    assert_eq!(json["verdict"], "failed");
    assert_eq!(json["failed_step"], "recovered-boot");
}

#[test]
fn reports_stored_and_read_back() {
    let t = tempfile::tempdir().unwrap();
    let epoch = |s: &str| crate::util::parse_rfc3339(s).unwrap();
    assert!(report::DrillFacts::gather(t.path()).last.is_none());
    for (v, at) in [
        (Verdict::Passed, "2026-11-01T00:00:00Z"),
        (Verdict::Passed, "2026-11-20T00:00:00Z"),
        (Verdict::Failed, "2026-12-01T00:00:00Z"),
    ] {
        let p = save(&sample_report(v, at), t.path()).unwrap();
        assert_eq!(p.parent().unwrap(), t.path().join("drills"));
        assert_eq!(report::Store::load(&p).unwrap(), sample_report(v, at));
        let _ = epoch;
    }
    let f = report::DrillFacts::gather(t.path());
    let last = f.last.unwrap();
    assert_eq!(last.verdict, Verdict::Failed);
    assert_eq!(last.failed_step, Some(Step::RecoveredBoot));
    assert_eq!(f.last_passed_at.as_deref(), Some("2026-11-20T00:00:00Z"));
    assert_eq!(f.last_passed_epoch, Some(epoch("2026-11-20T00:00:00Z")));
    // An unreadable newest report is an error, not an older verdict.
    std::fs::write(t.path().join("drills/20261202T000000Z.json"), "{").unwrap();
    let f = report::DrillFacts::gather(t.path());
    assert!(f.error.is_some() && f.last.is_none());
}

#[test]
fn console_tail_is_plain_text() {
    let grub = "\u{1b}[m\u{1b}[4;2H+-----+\u{1b}[5;2H|\u{1b}[5;79H|\r\n\u{1b}[7m\u{1b}[5;3H*UEFI Firmware Settings   \u{1b}[m\u{1b}[5;78H\r\n";
    assert_eq!(plain_tail(grub.as_bytes(), 3), "*UEFI Firmware Settings");
    let boot = "a\nb\n[  1.0] kernel: x\n\nlogin:\n";
    assert_eq!(plain_tail(boot.as_bytes(), 2), "[ 1.0] kernel: x | login:");
    let long = "x".repeat(1000);
    assert_eq!(plain_tail(long.as_bytes(), 3).len(), 300);
}

#[test]
fn log_tail_without_unwritten_bytes() {
    let log = "restore: 848.6 MiB\r\nrestore: 870 MiB\n\0\0\0\0\0\0";
    assert_eq!(
        job::log_tail(log, 2),
        "restore: 848.6 MiB | restore: 870 MiB"
    );
}

#[test]
fn recovery_lines_on_the_console() {
    assert_eq!(
        recovery_line("[3/12] make ext4 on /dev/vda3"),
        Some("[3/12] make ext4 on /dev/vda3")
    );
    assert_eq!(recovery_line("  [12/12] verify\r"), Some("[12/12] verify"));
    assert_eq!(recovery_line("[    1.234] kernel: virtio"), None);
    assert_eq!(recovery_line("[a/b] x"), None);
    assert_eq!(recovery_line("lifeboat rescue ready"), None);
}

#[test]
fn bad_input_refused_before_anything_starts() {
    let t = tempfile::tempdir().unwrap();
    let opts = Options {
        rescue_dir: t.path().join("rescue"),
        backup: t.path().join("backup").display().to_string(),
        layout: None,
        generation: None,
        disk_sizes: vec![],
        firmware: FirmwareChoice::Auto,
        accel: qemu::AccelChoice::Tcg,
        memory_mib: 1024,
        cpus: 1,
        work: t.path().join("work"),
        key_file: None,
        timeout: std::time::Duration::from_secs(60),
        keep: false,
        state_dir: t.path().join("state"),
    };
    let e = format!("{:#}", prepare(&opts).err().unwrap());
    assert!(
        e.starts_with("no rescue image in ") && e.contains("lifeboat mkrescue"),
        "{e}"
    );
    // An image without an ISO.
    std::fs::create_dir_all(&opts.rescue_dir).unwrap();
    let rec = serde_json::json!({
        "lifeboat_version": "0.1.0", "built_at": "2026-12-01T00:00:00Z",
        "kernel_version": "6.1.0-30-amd64", "kernel_image": "/boot/vmlinuz",
        "compression": "zstd", "cmdline": "console=ttyS0", "layout": null, "layout_sha256": null,
        "files": [], "modules": 1, "firmware_files": 0, "programs": 1, "libraries": 1,
        "build_seconds": 1.0
    });
    std::fs::write(opts.rescue_dir.join("rescue.json"), rec.to_string()).unwrap();
    let e = format!("{:#}", prepare(&opts).err().unwrap());
    assert!(e.contains("has no ISO"), "{e}");
    // No layout built in and none given.
    std::fs::write(opts.rescue_dir.join(crate::rescue::ISO), "iso").unwrap();
    let e = format!("{:#}", prepare(&opts).err().unwrap());
    assert!(
        e.contains("no layout built in") && e.ends_with("give --layout FILE"),
        "{e}"
    );
    // A layout, an unreadable key file.
    let layout = t.path().join("layout.json");
    std::fs::write(&layout, fixture().to_json()).unwrap();
    let opts = Options {
        layout: Some(layout.clone()),
        key_file: Some(t.path().join("missing.key")),
        ..opts
    };
    let e = format!("{:#}", prepare(&opts).err().unwrap());
    assert!(e.contains("key file") && e.contains("missing.key"), "{e}");
    // A missing backup.
    let opts = Options {
        key_file: None,
        ..opts
    };
    let e = format!("{:#}", prepare(&opts).err().unwrap());
    assert!(e.contains("backup"), "{e}");
    // Nothing was created in the work folder by any of these.
    assert!(!opts.work.exists());
}

/// A host failure during the drill (here: the scratch disk cannot be
/// created) is a report with the verdict `error` and exit 2, and the
/// drill's folder is removed.
#[test]
fn a_host_failure_is_a_drill_that_could_not_run() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("drill-x");
    std::fs::create_dir(&dir).unwrap();
    let record: crate::rescue::BuildRecord = serde_json::from_value(serde_json::json!({
        "lifeboat_version": "0.1.0", "built_at": "2026-12-01T00:00:00Z",
        "kernel_version": "6.1.0-30-amd64", "kernel_image": "/boot/vmlinuz",
        "compression": "zstd", "cmdline": "", "layout": null, "layout_sha256": null,
        "files": [], "modules": 1, "firmware_files": 0, "programs": 1, "libraries": 1,
        "build_seconds": 1.0
    }))
    .unwrap();
    let p = Prepared {
        layout: fixture(),
        layout_path: t.path().join("layout.json"),
        record,
        iso: t.path().join("x.iso"),
        vmlinuz: t.path().join("vmlinuz"),
        access: BackupAccess::Share,
        share: Some(t.path().to_path_buf()),
        generation: "G".into(),
        key: None,
        disks: vec![disk(
            t.path().join("missing/d.img").to_str().unwrap(),
            Bus::Virtio,
            None,
        )],
        rescue_firmwares: vec![Firmware::Bios],
        boot_firmwares: vec![Firmware::Bios],
        dir: dir.clone(),
        _lock: nix::fcntl::Flock::lock(
            std::fs::File::open(t.path()).unwrap(),
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        )
        .unwrap(),
    };
    let opts = Options {
        rescue_dir: t.path().to_path_buf(),
        backup: t.path().display().to_string(),
        layout: None,
        generation: None,
        disk_sizes: vec![],
        firmware: FirmwareChoice::Auto,
        accel: qemu::AccelChoice::Tcg,
        memory_mib: 1024,
        cpus: 1,
        work: t.path().to_path_buf(),
        key_file: None,
        timeout: std::time::Duration::from_secs(60),
        keep: false,
        state_dir: t.path().join("state"),
    };
    let mut lines = Vec::new();
    let r = run(&opts, p, &mut |phase, step| {
        lines.push(format!("{phase}: {step}"))
    })
    .unwrap();
    assert_eq!(r.verdict, Verdict::Error);
    assert_eq!(exit_code(&r), 2);
    assert!(
        r.problem
            .as_deref()
            .unwrap()
            .contains("creating the scratch disk"),
        "{:?}",
        r.problem
    );
    assert!(r.runs.is_empty() && r.failed_step.is_none());
    assert_eq!(lines[1], "prepare: using tcg: --accel tcg");
    assert!(!dir.exists());
    assert!(
        r.summary()
            .contains("lifeboat drill: could not run: creating the scratch disk"),
        "{}",
        r.summary()
    );
}

/// A second drill in the same work folder is refused while the first holds
/// its lock; each drill gets a folder of its own below the work folder.
#[test]
fn busy_work_folder_refused() {
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("work");
    let (dir, lock) = work_dir(&base, 0).unwrap();
    assert!(dir.starts_with(&base) && dir.is_dir());
    let e = work_dir(&base, 0).unwrap_err().to_string();
    assert!(
        e.starts_with("the work folder ") && e.contains("is busy"),
        "{e}"
    );
    drop(lock);
    std::fs::remove_dir(&dir).unwrap();
    assert!(work_dir(&base, 0).is_ok());
    let e = work_dir(&base, u64::MAX).unwrap_err().to_string();
    assert!(e.starts_with("too little space in "), "{e}");
}
