//! QEMU tier: the recovery scenario matrix. Each scenario is one boot of the
//! rescue image: it builds a source system with the real tools, captures its
//! layout, backs it up, wipes it, and recovers it onto a larger disk, a
//! smaller disk, a renamed disk (virtio to NVMe or SCSI) and the wiped
//! original, checking every file and every identity after each recovery.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const LIB: &str = include_str!("scenarios/lib.sh");

struct Scenario {
    name: &'static str,
    script: &'static str,
    /// Disks in order: (size MiB, bus, serial); a serial ending in `-4K`
    /// makes the disk 4K-native (4096-byte logical and physical sectors).
    disks: Vec<(u64, Bus, &'static str)>,
    variants: Vec<&'static str>,
    /// Device names the recovered fstab must use, per variant (the source
    /// fstab names devices, not UUIDs).
    renamed_in_fstab: std::collections::BTreeMap<&'static str, Vec<&'static str>>,
}

fn boot_scenario(sc: &Scenario, driver: &str) -> (Scratch, JobDisk, Finished) {
    let s = Scratch::new(&format!("recover-{}", sc.name));
    let (job, run) = boot_scenario_in(&s, sc, driver, Firmware::Bios, &[]);
    (s, job, run)
}

/// Boots the scenario in `s` under `firmware`, with `files` (name, bytes)
/// added to the job disk.
fn boot_scenario_in(
    s: &Scratch,
    sc: &Scenario,
    driver: &str,
    firmware: Firmware,
    files: &[(&str, Vec<u8>)],
) -> (JobDisk, Finished) {
    let job_dir = s.join("job");
    std::fs::create_dir_all(&job_dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(job_dir.join(name), bytes).unwrap();
    }
    std::fs::write(job_dir.join("lib.sh"), LIB).unwrap();
    std::fs::write(job_dir.join("scenario.sh"), sc.script).unwrap();
    std::fs::write(
        job_dir.join("autorun.sh"),
        format!("#!/bin/sh\nhere=$(dirname \"$0\")\n. \"$here/lib.sh\"\n. \"$here/scenario.sh\"\n{driver}\n"),
    )
    .unwrap();
    let job = JobDisk::from_dir(&job_dir, &s.join("job.img"), 400);
    let r = rescue();
    let mut vm = Vm::new(
        Boot::Kernel {
            vmlinuz: r.vmlinuz(),
            initrd: r.initrd(),
            append: "lifeboat.poweroff".into(),
        },
        &s.join("serial.log"),
    )
    .memory(1536)
    .firmware(firmware)
    .timeout(1500);
    // The job disk first: the scenario disks keep their names (vda...).
    for (i, (mib, bus, serial)) in sc.disks.iter().enumerate() {
        let img = blank_disk(&s.join(format!("disk{i}.img")), *mib);
        let disk = Disk::virtio(&img).on(*bus).serial(serial);
        vm = vm.disk(if serial.ends_with("-4K") {
            disk.sector(4096)
        } else {
            disk
        });
    }
    vm = vm.disk(Disk::virtio(&job.image).serial("JOB"));
    let run = vm.run();
    (job, run)
}

/// Device names in these files follow the disks: compared separately.
const RENAMED_FILES: &[&str] = &["./etc/fstab", "./etc/mdadm/mdadm.conf"];

/// Asserts that two tree listings match, but for [`RENAMED_FILES`], naming
/// the lines that differ (not the whole listing).
fn assert_same_tree(got: &str, want: &str, what: &str) {
    let keep = |t: &str| -> std::collections::BTreeSet<String> {
        t.lines()
            .filter(|l| !RENAMED_FILES.iter().any(|f| l.ends_with(f)))
            .map(str::to_string)
            .collect()
    };
    let (g, w) = (keep(got), keep(want));
    let missing: Vec<&String> = w.difference(&g).take(8).collect();
    let extra: Vec<&String> = g.difference(&w).take(8).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: files differ after recovery:\n missing {missing:#?}\n unexpected {extra:#?}"
    );
}

fn json(dir: &Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// Identities that recovery must keep, from a layout.
fn identities(l: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for fs in l["filesystems"].as_array().into_iter().flatten() {
        out.push(format!(
            "fs {} {} {}",
            fs["fstype"], fs["uuid"], fs["label"]
        ));
    }
    for s in l["swaps"].as_array().into_iter().flatten() {
        out.push(format!("swap {}", s["uuid"]));
    }
    for v in l["lvm"]["vgs"].as_array().into_iter().flatten() {
        out.push(format!("vg {} {}", v["name"], v["uuid"]));
    }
    for v in l["lvm"]["lvs"].as_array().into_iter().flatten() {
        if !v["name"].as_str().unwrap_or("").starts_with('[') {
            out.push(format!("lv {}/{} {}", v["vg"], v["name"], v["uuid"]));
        }
    }
    for p in l["lvm"]["pvs"].as_array().into_iter().flatten() {
        out.push(format!("pv {}", p["uuid"]));
    }
    for m in l["md_arrays"].as_array().into_iter().flatten() {
        out.push(format!("md {} {} {}", m["uuid"], m["level"], m["name"]));
    }
    for x in l["luks"].as_array().into_iter().flatten() {
        out.push(format!("luks {} {}", x["uuid"], x["cipher"]));
    }
    for d in l["disks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["needed"] == true)
    {
        let t = &d["partition_table"];
        match t["type"].as_str() {
            Some("gpt") => {
                out.push(format!("gpt {}", t["disk_guid"]));
                for p in t["partitions"].as_array().into_iter().flatten() {
                    out.push(format!(
                        "part {} {} {} {}",
                        p["number"], p["type_guid"], p["unique_guid"], p["name"]
                    ));
                }
            }
            Some("mbr") => {
                out.push(format!("mbr {}", t["disk_signature"]));
                for p in t["partitions"].as_array().into_iter().flatten() {
                    out.push(format!(
                        "part {} {} {} {}",
                        p["number"], p["kind"], p["type_byte"], p["bootable"]
                    ));
                }
            }
            _ => {}
        }
    }
    out.sort();
    out
}

fn root_size(l: &Value) -> u64 {
    l["filesystems"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| {
            f["mountpoints"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x == "/"))
        })
        .and_then(|f| f["size_bytes"].as_u64())
        .expect("a root file system in the layout")
}

/// Returns the scratch folder and the job disk read back into it.
fn run_matrix(sc: Scenario) -> (Scratch, std::path::PathBuf) {
    let (s, job, run) = boot_scenario(&sc, "run_scenario");
    let out = job.read_back(&s.join("out"));
    assert!(
        !run.timed_out,
        "{}: guest did not finish:\n{}",
        sc.name,
        tail(&run.log, 60)
    );
    assert_eq!(
        read(&out, "autorun.rc").trim(),
        "0",
        "{}: scenario script failed:\n{}",
        sc.name,
        tail(&read(&out, "autorun.log"), 80)
    );
    let source = json(&out, "layout.json");
    let sums = read(&out, "sums-source.txt");
    assert!(sums.lines().count() > 200, "the source tree was written");
    for v in &sc.variants {
        let rc = read(&out, &format!("recover-{v}.rc"));
        assert_eq!(
            rc.trim(),
            "0",
            "{} {v}: recover failed:\n{}",
            sc.name,
            tail(&read(&out, &format!("recover-{v}.log")), 60)
        );
        assert_same_tree(
            &read(&out, &format!("sums-{v}.txt")),
            &sums,
            &format!("{} {v}", sc.name),
        );
        let fstab = read(&out, &format!("fstab-{v}.txt"));
        for dev in sc.renamed_in_fstab.get(v).into_iter().flatten() {
            assert!(
                fstab.contains(dev),
                "{} {v}: fstab does not name {dev}:\n{fstab}",
                sc.name
            );
        }
        let after = json(&out, &format!("layout-{v}.json"));
        assert_eq!(
            identities(&after),
            identities(&source),
            "{} {v}: identities differ",
            sc.name
        );
        let report = json(&out, &format!("report-{v}.json"));
        assert_eq!(report["ok"], true, "{} {v}: report not ok", sc.name);
        let (old, new) = (root_size(&source), root_size(&after));
        match *v {
            "larger" => assert!(new > old, "{} larger: root {old} -> {new}", sc.name),
            "smaller" => assert!(new < old, "{} smaller: root {old} -> {new}", sc.name),
            _ => assert_eq!(new, old, "{} {v}: root size changed", sc.name),
        }
    }
    eprintln!(
        "{}: {} variants recovered in {:.0}s",
        sc.name,
        sc.variants.len(),
        run.seconds
    );
    (s, out)
}

const VARIANTS: [&str; 4] = ["larger", "smaller", "renamed", "same"];

#[test]
fn gpt_esp_lvm() {
    run_matrix(Scenario {
        name: "gpt-esp-lvm",
        script: include_str!("scenarios/gpt-esp-lvm.sh"),
        disks: vec![
            (1024, Bus::Virtio, "SRC-0"),
            (2048, Bus::Virtio, "BIG-0"),
            (800, Bus::Virtio, "SMALL-0"),
            (1024, Bus::Nvme, "NVME-0"),
        ],
        variants: VARIANTS.to_vec(),
        renamed_in_fstab: Default::default(),
    });
}

#[test]
fn mbr_bios() {
    run_matrix(Scenario {
        name: "mbr",
        script: include_str!("scenarios/mbr.sh"),
        disks: vec![
            (1024, Bus::Virtio, "SRC-0"),
            (2048, Bus::Virtio, "BIG-0"),
            (800, Bus::Virtio, "SMALL-0"),
            (1024, Bus::Scsi, "SCSI-0"),
        ],
        variants: VARIANTS.to_vec(),
        renamed_in_fstab: [
            (
                "larger",
                vec![
                    "/dev/vdb1 / ext4",
                    "/dev/vdb5 none swap",
                    "/dev/vdb6 /srv xfs",
                ],
            ),
            ("smaller", vec!["/dev/vdc1 / ext4", "/dev/vdc6 /srv xfs"]),
            (
                "renamed",
                vec![
                    "/dev/sda1 / ext4",
                    "/dev/sda5 none swap",
                    "/dev/sda6 /srv xfs",
                ],
            ),
            ("same", vec!["/dev/vda1 / ext4"]),
        ]
        .into(),
    });
}

#[test]
fn md_raid1_on_two_disks() {
    run_matrix(Scenario {
        name: "raid1",
        script: include_str!("scenarios/raid1.sh"),
        disks: vec![
            (768, Bus::Virtio, "SRC-0"),
            (768, Bus::Virtio, "SRC-1"),
            (1536, Bus::Virtio, "BIG-0"),
            (1536, Bus::Virtio, "BIG-1"),
            (600, Bus::Virtio, "SMALL-0"),
            (600, Bus::Virtio, "SMALL-1"),
            (768, Bus::Nvme, "NVME-0"),
            (768, Bus::Nvme, "NVME-1"),
        ],
        variants: VARIANTS.to_vec(),
        renamed_in_fstab: [
            ("larger", vec!["/dev/vdc1 /boot ext4"]),
            ("smaller", vec!["/dev/vde1 /boot ext4"]),
            ("renamed", vec!["/dev/nvme0n1p1 /boot ext4"]),
            ("same", vec!["/dev/vda1 /boot ext4"]),
        ]
        .into(),
    });
}

#[test]
fn luks2_under_lvm() {
    let (_s, out) = run_matrix(Scenario {
        name: "luks-lvm",
        script: include_str!("scenarios/luks-lvm.sh"),
        // The renamed disk is 4K-native: the LUKS2 sector size and the ext4
        // block sizes (1 KiB on these small file systems) are raised.
        disks: vec![
            (1024, Bus::Virtio, "SRC-0"),
            (2048, Bus::Virtio, "BIG-0"),
            (800, Bus::Virtio, "SMALL-0"),
            (1024, Bus::Scsi, "SCSI-4K"),
        ],
        variants: VARIANTS.to_vec(),
        renamed_in_fstab: Default::default(),
    });
    let log = read(&out, "recover-renamed.log");
    let raised =
        |what: &str, change: &str| log.lines().any(|l| l.contains(what) && l.contains(change));
    assert!(
        raised("LUKS2 on ", "sector size 512 -> 4096")
            && raised("ext4 /boot: ", "block size 1024 -> 4096"),
        "luks-lvm renamed (4K-native): the plan raised no LUKS2 sector or ext4 block size:\n{}",
        tail(&log, 60)
    );
}

#[test]
fn btrfs_with_subvolumes() {
    run_matrix(Scenario {
        name: "btrfs",
        script: include_str!("scenarios/btrfs.sh"),
        disks: vec![
            (1024, Bus::Virtio, "SRC-0"),
            (2048, Bus::Virtio, "BIG-0"),
            (800, Bus::Virtio, "SMALL-0"),
            (1024, Bus::Nvme, "NVME-0"),
        ],
        variants: VARIANTS.to_vec(),
        renamed_in_fstab: Default::default(),
    });
}

#[test]
fn unsafe_targets_are_refused_and_an_interrupted_recovery_resumes() {
    let sc = Scenario {
        name: "failures",
        script: include_str!("scenarios/failures.sh"),
        disks: vec![
            (512, Bus::Virtio, "SRC-0"),
            (512, Bus::Virtio, "BYSTANDER"),
            (512, Bus::Virtio, "BUSY"),
            (512, Bus::Virtio, "TARGET"),
            (64, Bus::Virtio, "TINY"),
        ],
        variants: vec![],
        renamed_in_fstab: Default::default(),
    };
    let (s, job, run) = boot_scenario(&sc, "run_failures");
    let out = job.read_back(&s.join("out"));
    assert!(
        !run.timed_out,
        "guest did not finish:\n{}",
        tail(&run.log, 60)
    );
    assert_eq!(
        read(&out, "autorun.rc").trim(),
        "0",
        "{}",
        tail(&read(&out, "autorun.log"), 80)
    );
    let rc = |n: &str| read(&out, &format!("{n}.rc")).trim().to_string();
    let log = |n: &str| read(&out, &format!("{n}.log"));
    assert_eq!(rc("excluded"), "2", "{}", log("excluded"));
    assert!(
        log("excluded").contains(
            "not enough disks: 1 still to place (/dev/vda (512.0 MiB)) but only 0 free (none); \
             not chosen without --map: /dev/vdb (serial BYSTANDER, 512.0 MiB) is the layout's \
             /dev/vdb (not needed: excluded with --exclude-disk)"
        ),
        "{}",
        log("excluded")
    );
    assert_eq!(rc("mounted"), "2");
    assert!(
        log("mounted").contains("/dev/vdc may not be written: it is in use"),
        "{}",
        log("mounted")
    );
    assert_eq!(rc("too-small"), "2");
    assert!(
        log("too-small").contains("is too small for the partitions of /dev/vda: short by "),
        "{}",
        log("too-small")
    );
    assert_eq!(rc("nowipe"), "2", "{}", log("nowipe"));
    assert!(
        log("nowipe").contains("refusing to write /dev/vdd (serial TARGET, 512.0 MiB) holds /dev/vdd: ext4 label \"old-data\""),
        "{}",
        log("nowipe")
    );
    assert!(log("nowipe").contains("add --wipe"), "{}", log("nowipe"));
    assert!(
        log("nowipe").contains("/dev/vdd: serial TARGET; holds /dev/vdd: ext4"),
        "the plan shows the target by identity and content: {}",
        log("nowipe")
    );
    assert_eq!(rc("killed"), "99", "{}", log("killed"));
    assert!(
        log("killed").contains("--wipe: overwriting /dev/vdd (serial TARGET"),
        "{}",
        log("killed")
    );
    assert_eq!(rc("resumed"), "0", "{}", log("resumed"));
    assert!(log("resumed").contains("resuming: "), "{}", log("resumed"));
    assert!(
        log("resumed").contains("already done by an earlier run"),
        "{}",
        log("resumed")
    );
    assert_eq!(
        read(&out, "bystander-before.txt"),
        read(&out, "bystander-after.txt"),
        "the disk excluded at capture was changed"
    );
    assert_eq!(read(&out, "busy-untouched.txt").trim(), "same");
    assert_same_tree(
        &read(&out, "sums-resumed.txt"),
        &read(&out, "sums-source.txt"),
        "resumed",
    );
}

/// A GRUB EFI image (built here with grub-mkstandalone) that prints `word`
/// on the console and powers the machine off.
fn efi_payload(dir: &Path, word: &str) -> Vec<u8> {
    let cfg = dir.join(format!("{word}.cfg"));
    std::fs::write(&cfg, format!("echo {word}\nhalt\n")).unwrap();
    let out = dir.join(format!("{word}.efi"));
    sh(&format!(
        "grub-mkstandalone -O x86_64-efi -o '{}' --install-modules='normal echo halt' \
         --locales= --fonts= --themes= 'boot/grub/grub.cfg={}'",
        out.display(),
        cfg.display()
    ));
    std::fs::read(out).unwrap()
}

const ENTRY_BOOT: &str = "LIFEBOAT-ESP-ENTRY-BOOT";
const FALLBACK_BOOT: &str = "LIFEBOAT-ESP-FALLBACK-BOOT";

/// An ESP mirrored by md RAID1 (metadata 1.0), recovered under OVMF: the
/// array is the ESP, a boot entry is written per member disk, and each
/// disk alone boots the entry's loader (not the fallback) with those
/// NVRAM variables.
#[test]
fn mirrored_esp_gets_an_entry_per_disk_and_boots_from_either() {
    let sc = Scenario {
        name: "esp-raid1",
        script: include_str!("scenarios/esp-raid1.sh"),
        disks: vec![(256, Bus::Virtio, "SRC-0"), (128, Bus::Virtio, "SRC-1")],
        variants: vec!["same"],
        renamed_in_fstab: Default::default(),
    };
    let s = Scratch::new("recover-esp-raid1");
    let payloads = s.join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    let files = [
        ("entry.efi", efi_payload(&payloads, ENTRY_BOOT)),
        ("fallback.efi", efi_payload(&payloads, FALLBACK_BOOT)),
    ];
    let vars = fresh_ovmf_vars(&s.join("vars.fd"));
    let (job, run) = boot_scenario_in(
        &s,
        &sc,
        "run_scenario",
        Firmware::Uefi {
            vars: Some(vars.clone()),
        },
        &files,
    );
    let out = job.read_back(&s.join("out"));
    assert!(
        !run.timed_out,
        "guest did not finish:\n{}",
        tail(&run.log, 60)
    );
    assert_eq!(
        read(&out, "autorun.rc").trim(),
        "0",
        "scenario script failed:\n{}",
        tail(&read(&out, "autorun.log"), 80)
    );
    assert_eq!(
        read(&out, "recover-same.rc").trim(),
        "0",
        "{}",
        tail(&read(&out, "recover-same.log"), 60)
    );
    assert_same_tree(
        &read(&out, "sums-same.txt"),
        &read(&out, "sums-source.txt"),
        "esp-raid1",
    );
    assert_eq!(
        identities(&json(&out, "layout-same.json")),
        identities(&json(&out, "layout.json"))
    );
    let log = read(&out, "recover-same.log");
    assert!(log.contains("EFI fallback loader on /dev/md0"), "{log}");
    assert!(!log.contains("is not mounted in the new system"), "{log}");
    // Deleted before recovery, then one per member.
    let entries = |f: &str| -> Vec<String> {
        read(&out, f)
            .lines()
            .filter(|l| l.contains("lifeboat-esp"))
            .map(|l| l.to_lowercase())
            .collect()
    };
    assert_eq!(entries("efibootmgr-source.txt").len(), 1);
    assert!(entries("efibootmgr-wiped.txt").is_empty());
    let after = entries("efibootmgr-after.txt");
    assert_eq!(after.len(), 2, "{}", read(&out, "efibootmgr-after.txt"));
    for guid in [
        "e5e5e5e5-0000-4000-8000-000000000001",
        "e5e5e5e5-0000-4000-8000-000000000002",
    ] {
        assert!(
            after
                .iter()
                .any(|l| l.contains(guid) && l.contains("\\efi\\lifeboat\\grubx64.efi")),
            "no entry on {guid}: {after:#?}"
        );
    }
    let report = json(&out, "report-same.json");
    assert_eq!(report["ok"], true);
    let notes = report.to_string();
    assert_eq!(
        notes.matches("created for \\\\EFI\\\\lifeboat").count(),
        2,
        "{notes}"
    );

    // Each disk alone boots through its own entry.
    for (i, disk) in ["disk0.img", "disk1.img"].iter().enumerate() {
        let v = s.join(format!("vars-{i}.fd"));
        std::fs::copy(&vars, &v).unwrap();
        let vm = Vm::new(Boot::Nvram, &s.join(format!("boot-{i}.log")))
            .firmware(Firmware::Uefi { vars: Some(v) })
            .disk(Disk::virtio(&s.join(disk)))
            .timeout(240);
        let (seen, fin) = vm.run_until(ENTRY_BOOT);
        assert!(
            seen,
            "{disk} alone did not boot its entry's loader{}:\n{}",
            if fin.log.contains(FALLBACK_BOOT) {
                " (the fallback booted)"
            } else {
                ""
            },
            tail(&fin.log, 30)
        );
        eprintln!("{disk} alone booted its entry in {:.0}s", fin.seconds);
    }
    eprintln!("esp-raid1: recovered in {:.0}s", run.seconds);
}
