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

/// The mounts of the system as built: (target, source, fstype).
const MOUNTS: [(&str, &str, &str); 4] = [
    ("/", "/dev/mapper/vg0-root", "ext4"),
    ("/home", "/dev/mapper/vg0-home", "xfs"),
    ("/boot", "/dev/vda3", "ext4"),
    ("/boot/efi", "/dev/vda2", "vfat"),
];

/// Everything the job output must show for either firmware; returns the
/// problems found.
fn check_common(firmware: &str, c: &Check) -> Vec<String> {
    check_common_with(firmware, c, &MOUNTS)
}

/// [`check_common`] with the mounts `want` instead of the built system's.
fn check_common_with(firmware: &str, c: &Check, want: &[(&str, &str, &str)]) -> Vec<String> {
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
    for &(target, source, fstype) in want {
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
    check_uefi_with(c, &MOUNTS)
}

/// [`check_uefi`] with the mounts `want`.
fn check_uefi_with(c: &Check, want: &[(&str, &str, &str)]) -> Vec<String> {
    check_uefi_loader(c, want, "grubx64.efi")
}

/// [`check_uefi_with`], the entry "debian" starting `loader` (in
/// \EFI\debian\: grubx64.efi, or shimx64.efi for Secure Boot).
fn check_uefi_loader(c: &Check, want: &[(&str, &str, &str)], loader: &str) -> Vec<String> {
    let mut problems = check_common_with("uefi", c, want);
    let path = format!("\\EFI\\debian\\{loader}");
    match boot_current(&c.job_log) {
        Some((_, entry)) if entry.starts_with("debian") && entry.contains(&path) => {}
        other => problems.push(format!(
            "uefi: the firmware did not boot the EFI entry \"debian\" ({path}): {other:?}\n{}",
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

/// Where scripts/install-deps.sh keeps Debian's shim-signed,
/// grub-efi-amd64-signed and the dependencies the test guest lacks.
const SB_DEBS: &str = "/var/cache/lifeboat-test/secureboot/debs";

/// Shell lines that give the running source system Debian's Secure Boot
/// chain: the .debs of [`SB_DEBS`] (on the job disk, in sb-debs/) installed
/// with dpkg -i. shim-signed's postinst runs grub-install, which puts shim
/// and the signed GRUB into EFI/debian and points the NVRAM entry "debian"
/// at shimx64.efi; the kernel is already Debian's signed one.
const INSTALL_SHIM: &str = r#"if ! DEBIAN_FRONTEND=noninteractive dpkg -i "$here"/sb-debs/*.deb > "$here/dpkg.log" 2>&1; then
    cat "$here/dpkg.log"; exit 1
fi
rm -rf "$here/sb-debs"
echo "== efibootmgr after shim-signed"
efibootmgr -v
echo "== EFI/debian after shim-signed"
ls /boot/efi/EFI/debian
"#;

/// The source's checksums: with Secure Boot, not EFI/BOOT (the removable
/// fallback, GRUB's own in the built system, becomes shim on recovery: the
/// recovered system's checks compare it with EFI/debian/shimx64.efi).
fn sums(secure_boot: bool) -> String {
    let boot = if secure_boot {
        " ! -path '/boot/efi/EFI/BOOT/*'"
    } else {
        ""
    };
    format!(
        "find /etc /home /usr/bin /boot /boot/efi -xdev -type f ! -path '/boot/grub/*'{boot} -print0 \\\n\
         | sort -z | xargs -0 sha256sum > \"$here/sums.txt\""
    )
}

/// The source system under UEFI: checks, capture, backup, rescue image (an
/// ISO that recovers unattended), and the sums of its files. With
/// `secure_boot`, Debian's signed shim and GRUB are installed first
/// ([`INSTALL_SHIM`]) and the ISO must be Secure Boot capable.
fn source_job(s: &Scratch, built: &Built, secure_boot: bool) -> SourceRun {
    let dir = s.join("job1");
    let prelude = if secure_boot { INSTALL_SHIM } else { "" };
    let job = job_dir(
        &dir,
        &format!(
            "{prelude}{}",
            source_job_script(
                "--append lifeboat.recover=auto --append lifeboat.poweroff",
                &sums(secure_boot),
            )
        ),
    );
    if secure_boot {
        copy_sb_debs(&dir.join("sb-debs"));
    }
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
    for line in source.job_log.lines().map(str::trim_start).filter(|l| {
        l.starts_with("layout saved")
            || l.starts_with("generation ")
            || l.starts_with("rescue image for kernel")
            || l.starts_with("Secure Boot:")
    }) {
        eprintln!("source: {line}");
    }
    let source_layout = lifeboat::layout::Layout::load(&s.join("source/job/layout.json")).unwrap();
    let iso = s.join("source/job/rescue/lifeboat-rescue.iso");
    assert!(iso.is_file(), "mkrescue wrote no ISO in the guest");
    if secure_boot {
        check_source_secure_boot(s, &source, &source_layout);
    }
    SourceRun {
        layout: source_layout,
        iso,
    }
}

/// Copies the .debs of [`SB_DEBS`] into `dest`; none is a failure naming
/// install-deps.sh.
fn copy_sb_debs(dest: &std::path::Path) {
    std::fs::create_dir_all(dest).unwrap();
    let debs: Vec<PathBuf> = std::fs::read_dir(SB_DEBS)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    let has = |p: &str| {
        debs.iter()
            .any(|d| d.file_name().unwrap().to_string_lossy().starts_with(p))
    };
    assert!(
        has("shim-signed_") && has("grub-efi-amd64-signed_"),
        "no shim-signed or grub-efi-amd64-signed .deb in {SB_DEBS}: run scripts/install-deps.sh"
    );
    for d in &debs {
        std::fs::copy(d, dest.join(d.file_name().unwrap())).unwrap();
    }
}

/// The source with Debian's Secure Boot chain installed: the NVRAM entry
/// "debian" starts shim, the layout saw it, and mkrescue built a Secure
/// Boot capable ISO (rescue.json and the summary say so).
fn check_source_secure_boot(s: &Scratch, source: &Check, layout: &lifeboat::layout::Layout) {
    let log = &source.job_log;
    let efi = section(log, "efibootmgr after shim-signed");
    assert!(
        efi.iter()
            .any(|l| l.contains(" debian") && l.contains("\\EFI\\debian\\shimx64.efi")),
        "shim-signed's grub-install did not point the entry \"debian\" at shimx64.efi:\n{}",
        efi.join("\n")
    );
    let esp = section(log, "EFI/debian after shim-signed");
    assert!(
        ["shimx64.efi", "grubx64.efi", "mmx64.efi"]
            .iter()
            .all(|f| esp.contains(f)),
        "EFI/debian holds {esp:?}"
    );
    assert!(
        layout.boot.shim
            && layout
                .boot
                .efi_entries
                .iter()
                .any(|e| e.loader.as_deref() == Some("\\EFI\\debian\\shimx64.efi")),
        "the layout did not capture shim: {:?}",
        layout.boot
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(s.join("source/job/rescue/rescue.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            &record["secure_boot"]["capable"],
            &record["secure_boot"]["uefi_loader"]
        ),
        (&serde_json::json!(true), &serde_json::json!("shim")),
        "{:#}",
        record["secure_boot"]
    );
    assert!(
        log.contains("Secure Boot: capable (shim -> signed GRUB -> signed kernel)"),
        "{}",
        tail(log, 40)
    );
}

/// What the kernel prints when the firmware booted it with Secure Boot on.
const SB_ON: &str = "secureboot: Secure boot enabled";

/// Shell lines for a recovered system's job: the firmware's SecureBoot
/// variable (4 attribute bytes, then the value), the kernel's word on it, and
/// whether the removable fallback EFI/BOOT/BOOTX64.EFI is shim (which only
/// recovery's reinstall puts there: the source had GRUB's own).
const SECURE_BOOT_STATE: &str = r#"echo "== SecureBoot variable"
od -An -t u1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c || true
echo "== kernel"
dmesg | grep 'secureboot:' || true
echo "== fallback loader"
if cmp -s /boot/efi/EFI/BOOT/BOOTX64.EFI /boot/efi/EFI/debian/shimx64.efi; then echo shim; else echo other; fi
"#;

/// What [`SECURE_BOOT_STATE`] must show: Secure Boot on, and shim as the
/// fallback loader.
fn check_secure_boot(boot: &str, log: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let var = section(log, "SecureBoot variable").join(" ");
    if var.split_whitespace().last() != Some("1") {
        problems.push(format!("{boot}: SecureBoot variable is {var:?}, not 1"));
    }
    let kernel = section(log, "kernel");
    if !kernel.iter().any(|l| l.contains(SB_ON)) {
        problems.push(format!(
            "{boot}: the kernel did not say {SB_ON:?}: {kernel:?}"
        ));
    }
    let fallback = section(log, "fallback loader");
    if fallback != ["shim"] {
        problems.push(format!(
            "{boot}: EFI/BOOT/BOOTX64.EFI is not shim ({fallback:?}): shim was not reinstalled"
        ));
    }
    problems
}

/// A new machine: the recovered disk under the Secure Boot firmware with a
/// fresh store (Microsoft's keys, no entry "debian"), so the firmware starts
/// the fallback EFI/BOOT/BOOTX64.EFI: shim after recovery's reinstall (the
/// source's was GRUB's unsigned one, which the firmware refuses). Only the
/// Secure Boot checks run. Returns the problems found.
fn fallback_boot(s: &Scratch, target: &std::path::Path) -> Vec<String> {
    let job = s.join("job-fallback");
    std::fs::create_dir_all(&job).unwrap();
    std::fs::write(
        job.join("job.sh"),
        format!("#!/bin/bash\nset -u\n{SECURE_BOOT_STATE}"),
    )
    .unwrap();
    let c = boot_check_env(
        target,
        None,
        "uefi",
        &job,
        16,
        &s.join("fallback"),
        &[("BOOT_CHECK_SECURE_BOOT", "1".into())],
    );
    let mut problems = check_secure_boot("fallback", &c.job_log);
    if c.code != 0 {
        problems.insert(
            0,
            format!(
                "fallback: boot-check.sh exited {}:\n{}",
                c.code,
                tail(&c.serial, 20)
            ),
        );
    }
    problems
}

/// The end-to-end recovery of a real Debian 12 system with Secure Boot:
/// inside the running system, Debian's shim-signed and
/// grub-efi-amd64-signed installed (the kernel is Debian's signed one), then
/// `layout save`, `backup create` and `mkrescue` (a Secure Boot capable ISO
/// that recovers unattended); the ISO boots under OVMF's Secure Boot firmware
/// with Microsoft's keys on a blank, larger disk and recovers it with the
/// backup on a job disk; the recovered disk then boots under SeaBIOS and
/// under the Secure Boot firmware with the NVRAM recovery wrote (through the
/// entry "debian" at shimx64.efi, Secure Boot on), with the same files and
/// identities, and with an empty NVRAM (the fallback loader, shim, with
/// Secure Boot on). UEFI without Secure Boot is the 4K-native and the BIOS->UEFI
/// tests' firmware.
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
    let src = source_job(&s, &built, true);
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
    let vars = fresh_secure_boot_vars(&s.join("rescue-vars.fd"));
    let t = Instant::now();
    let run = Vm::new(Boot::Cdrom(iso.clone()), &s.join("rescue-serial.log"))
        .firmware(Firmware::SecureBoot { vars: vars.clone() })
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
        secure_boot_refusal(&run.log).is_none() && !run.timed_out,
        "the rescue did not power off (Secure Boot refusal: {:?}):\n{}",
        secure_boot_refusal(&run.log),
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
    assert!(
        run.log.contains(SB_ON),
        "the rescue kernel did not run with Secure Boot on:\n{}",
        tail(&run.log, 60)
    );
    assert!(
        recover_log.contains("Secure Boot chain reinstalled: EFI/debian/shimx64.efi"),
        "recovery did not reinstall shim:\n{}",
        tail(&recover_log, 60)
    );

    // 3. The recovered disk boots under SeaBIOS (an overlay) and under OVMF
    // with the NVRAM recovery wrote; files and identities are the source's.
    std::fs::copy(s.join("source/job/sums.txt"), s.join("sums.txt")).unwrap();
    let check_job = |dir: &str| {
        let d = job_dir(
            &s.join(dir),
            &format!(
                "sha256sum --quiet -c \"$here/sums.txt\" > \"$here/sums-check.txt\" 2>&1\n\
                 lifeboat layout save -o \"$here/after.json\" --exclude-disk \"$(findmnt -no SOURCE \"$here\")\"\n\
                 cp /var/log/lifeboat/recovery-report.json \"$here/\"\n{SECURE_BOOT_STATE}"
            ),
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
    let uefi = boot_check_env(
        &target,
        Some(&vars),
        "uefi",
        &check_job("job-uefi"),
        64,
        &s.join("uefi"),
        &[("BOOT_CHECK_SECURE_BOOT", "1".into())],
    );
    times.push((
        "recovered disk: OVMF Secure Boot boot and checks",
        t.elapsed().as_secs_f64(),
    ));
    let t = Instant::now();
    let fallback = fallback_boot(&s, &target);
    times.push((
        "recovered disk: Secure Boot, empty NVRAM (fallback loader)",
        t.elapsed().as_secs_f64(),
    ));

    let mut problems = check_bios(&bios);
    problems.extend(check_uefi_loader(&uefi, &MOUNTS, "shimx64.efi"));
    problems.extend(check_secure_boot("uefi", &uefi.job_log));
    problems.extend(fallback);
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
    let src = source_job(&s, &built, false);
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

/// The Secure Boot checks on a real job log (the recovered system of
/// [`debian_full_recovery`] booted under the Secure Boot firmware), and on
/// the same log bent the ways a recovery without shim's reinstall, or a boot
/// without Secure Boot, would bend it: each must be caught.
#[test]
fn secure_boot_checks_pass_a_real_boot_and_catch_broken_ones() {
    let good = std::fs::read_to_string(
        repo().join("tests/fixtures/debian-boot-check-uefi-secureboot.log"),
    )
    .unwrap();
    let problems = |log: &str| {
        let c = Check {
            code: 0,
            job_log: log.to_string(),
            serial: String::new(),
        };
        let mut p = check_uefi_loader(&c, &MOUNTS, "shimx64.efi");
        p.extend(check_secure_boot("uefi", log));
        p
    };
    assert_eq!(problems(&good), Vec::<String>::new());
    let broken = [
        (
            "\\EFI\\debian\\shimx64.efi",
            "\\EFI\\debian\\grubx64.efi",
            "did not boot the EFI entry",
        ),
        (
            "   0   0   0   1",
            "   0   0   0   0",
            "SecureBoot variable",
        ),
        (SB_ON, "secureboot: Secure boot disabled", "did not say"),
        (
            "== fallback loader\nshim",
            "== fallback loader\nother",
            "not shim",
        ),
    ];
    for (from, to, want) in broken {
        assert!(good.contains(from), "the fixture has no {from:?}");
        let got = problems(&good.replace(from, to));
        assert!(
            got.iter().any(|p| p.contains(want)),
            "{from:?} -> {to:?} not caught as {want:?}: {got:?}"
        );
    }
}

/// Shell lines for the source job that turn the running Debian system (GPT,
/// booted under SeaBIOS) into a BIOS-only one, as a server installed for
/// BIOS is: an MBR (signature 1a2b3c4d) holding /boot and the LVM PV as
/// partitions 3 and 4 where they were (the kernel's view stays true, no
/// reboot), no ESP, no GRUB x86_64-efi in /boot/grub, GRUB i386-pc in the
/// MBR gap, /boot mounted by its MBR-form PARTUUID. Then a static address
/// on the one NIC with systemd-networkd.
const MAKE_BIOS_ONLY: &str = r#"# services running as their own user (systemd-networkd) need / at 0755
[ "$(stat -c %a /)" = 755 ] || { echo "/ is $(stat -c %a /), not 755"; exit 1; }
boot_dev=$(findmnt -no SOURCE /boot)
disk=/dev/$(lsblk -no PKNAME "$boot_dev")
[ "$boot_dev" = "${disk}3" ] || { echo "/boot is $boot_dev, not ${disk}3"; exit 1; }
umount /boot/efi
sed -i -E '/[[:space:]]\/boot\/efi[[:space:]]/d' /etc/fstab
sed -i -E 's|^UUID=[^[:space:]]+([[:space:]]+/boot[[:space:]])|PARTUUID=1a2b3c4d-03\1|' /etc/fstab
rm -rf /boot/grub/x86_64-efi
wipefs -q -a "${disk}2"
part() { cat "/sys/class/block/${disk#/dev/}$1/$2"; }
printf 'label: dos\nlabel-id: 0x1a2b3c4d\n%s3 : start=%s, size=%s, type=83\n%s4 : start=%s, size=%s, type=8e\n' \
    "$disk" "$(part 3 start)" "$(part 3 size)" "$disk" "$(part 4 start)" "$(part 4 size)" |
    sfdisk -q --force --no-reread --no-tell-kernel --wipe always "$disk"
partx -d --nr 1:2 "$disk"
systemctl daemon-reload
grub-install --target=i386-pc "$disk"
update-grub
echo "== bios-only"
sfdisk -d "$disk"
grep -E '[[:space:]]/boot[[:space:]]' /etc/fstab
nic=$(for n in /sys/class/net/*; do [ -e "$n/device" ] && basename "$n"; done | head -n 1)
[ -n "$nic" ] || { echo "no network interface"; exit 1; }
printf '[Match]\nName=%s\n\n[Network]\nAddress=10.0.2.50/24\nGateway=10.0.2.2\n' "$nic" \
    > /etc/systemd/network/20-wired.network
systemctl enable systemd-networkd
systemctl restart systemd-networkd
"#;

/// Shell lines for the recovered system: the checks, then wait for the old
/// address and answer one connection on it (port 7000). The system has no
/// iproute2: busybox's `ip`.
const CHECK_RECOVERED: &str = r#"sha256sum --quiet -c "$here/sums.txt" > "$here/sums-check.txt" 2>&1
lifeboat layout save -o "$here/after.json" --exclude-disk "$(findmnt -no SOURCE "$here")"
echo "== fstab"
grep -v '^#' /etc/fstab
for _ in $(seq 300); do busybox ip -4 -o addr show | grep -q ' inet 10\.0\.2\.50/24 ' && break; sleep 1; done
echo "== ip link"
busybox ip -o link show
echo "== ip addr"
busybox ip -4 -o addr show
echo "== answering on 10.0.2.50:7000"
echo "lifeboat-nic-ok $(hostname)" | timeout 900 busybox nc -l -p 7000
"#;

/// Shell lines that make the recovered (UEFI) system UEFI-only for the way
/// back: GRUB's i386-pc files gone from /boot/grub; its disk has no BIOS
/// boot partition and no boot code already.
const MAKE_UEFI_ONLY: &str = "rm -rf /boot/grub/i386-pc\necho \"== uefi-only\"\n";

/// The source job's checksums: fstab is rewritten by a conversion and the
/// initramfs may be regenerated; /boot/grub is GRUB's to rewrite.
const SUMS: &str = "find /etc /home /usr/bin /boot -xdev -type f ! -path '/boot/grub/*' \
     ! -path /etc/fstab ! -path '/boot/initrd.img-*' -print0 \\\n\
     | sort -z | xargs -0 sha256sum > \"$here/sums.txt\"";

/// The MAC addresses of the source's NIC and of the new machine's.
const OLD_MAC: &str = "52:54:00:00:00:0a";
const NEW_MAC: &str = "52:54:00:00:00:0b";

/// Connects to `port` on the host's loopback until a line starting with
/// `lifeboat-nic-ok` comes back or `stop` is set; returns that line.
fn wait_for_answer(port: u16, stop: &std::sync::atomic::AtomicBool) -> Option<String> {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            let text = String::from_utf8_lossy(&got).trim().to_string();
            if text.starts_with("lifeboat-nic-ok") {
                return Some(text);
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    None
}

/// A free TCP port on the host's loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The identities of [`identities`] that a firmware conversion keeps: not
/// the partition table's (an MBR becomes GPT, a partition is added), not
/// the ESP's (new on the way to UEFI).
fn kept_identities(l: &lifeboat::layout::Layout) -> Vec<String> {
    identities(l)
        .into_iter()
        .filter(|i| !i.starts_with("gpt ") && !i.starts_with("part ") && !i.starts_with("fs vfat"))
        .collect()
}

/// The source under SeaBIOS, made BIOS-only ([`MAKE_BIOS_ONLY`]), with a
/// NIC (`OLD_MAC`, PCI slot 5): layout, backup and an unattended rescue ISO.
/// Returns its layout and its NIC as recorded.
fn bios_only_source(
    s: &Scratch,
    built: &Built,
) -> (lifeboat::layout::Layout, lifeboat::layout::NetInterface) {
    use lifeboat::layout::{Firmware as Fw, PartitionTable};
    let job = job_dir(
        &s.join("job1"),
        &format!(
            "{MAKE_BIOS_ONLY}{}",
            source_job_script(
                "--append lifeboat.recover=auto --append lifeboat.poweroff",
                SUMS
            )
        ),
    );
    let source = boot_check_env(
        &built.image,
        None,
        "bios",
        &job,
        2500,
        &s.join("source"),
        &[
            ("BOOT_CHECK_NETDEV", "user,id=n0,restrict=on".into()),
            (
                "BOOT_CHECK_NIC",
                format!("virtio-net-pci,netdev=n0,mac={OLD_MAC},addr=0x5"),
            ),
        ],
    );
    let problems = check_bios(&source);
    assert!(
        problems.is_empty() && source.job_log.contains("== lifeboat job done"),
        "the source job failed: {problems:?}\n{}\n{}",
        tail(&source.job_log, 60),
        tail(&source.serial, 30)
    );
    let src = lifeboat::layout::Layout::load(&s.join("source/job/layout.json")).unwrap();
    let sys = src.disks.iter().find(|d| d.needed).unwrap();
    assert!(
        matches!(&sys.partition_table, Some(PartitionTable::Mbr(m)) if m.disk_signature == 0x1a2b3c4d),
        "the source is not on the MBR: {:?}",
        sys.partition_table
    );
    assert_eq!(src.boot.firmware, Fw::Bios);
    assert!(src.boot.esps.is_empty(), "{:?}", src.boot.esps);
    let nic = src
        .network
        .iter()
        .find(|n| n.mac == OLD_MAC)
        .unwrap_or_else(|| panic!("no NIC {OLD_MAC} in the layout: {:?}", src.network))
        .clone();
    (src, nic)
}

/// The rescue ISO of the job in `source` (its job disk relabelled for the
/// rescue) booted under `firmware` on a blank 8 GiB disk `NAME.img`, with
/// the new NIC: recovers unattended and powers off. Returns the disk and
/// recover.log, after checking that recovery completed with `lines`.
fn rescue_onto_blank(
    s: &Scratch,
    source: &str,
    name: &str,
    firmware: Firmware,
    lines: &[&str],
) -> (PathBuf, String) {
    let iso = s.join(source).join("job/rescue/lifeboat-rescue.iso");
    let job_img = s.join(source).join("job.img");
    sh(&format!("e2label '{}' LIFEBOAT-AUTO", job_img.display()));
    let target = blank_disk(&s.join(format!("{name}.img")), 8192);
    let run = Vm::new(Boot::Cdrom(iso), &s.join(format!("{name}-serial.log")))
        .firmware(firmware)
        .nic(
            "user,id=n0,restrict=on",
            &format!("virtio-net-pci,netdev=n0,mac={NEW_MAC},addr=0x7"),
        )
        .disk(Disk::virtio(&target).serial("NEW-DISK"))
        .disk(Disk::virtio(&job_img).serial("JOB"))
        .memory(1536)
        .timeout(2400)
        .run();
    let job = JobDisk { image: job_img };
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
        tail(&log, 100)
    );
    for line in lines.iter().chain(&["recovery complete"]) {
        assert!(
            log.contains(line),
            "recover.log lacks {line:?}:\n{}",
            tail(&log, 100)
        );
    }
    (target, log)
}

/// The Debian system made BIOS-only (MBR, no ESP, GRUB i386-pc, /boot by its
/// MBR PARTUUID; a static address on its NIC), recovered by the unattended
/// rescue under OVMF onto a blank disk in a machine whose NIC has another
/// MAC address and PCI slot, then booted under OVMF through the EFI entry
/// the recovery wrote: MBR converted to GPT, a new ESP, GRUB x86_64-efi
/// installed by boot::grub_efi, fstab's PARTUUID rewritten, and the old
/// address answering from the host through QEMU's user network. The same
/// boot makes the recovered system UEFI-only and its layout, backup and
/// rescue ISO: that ISO under SeaBIOS recovers it onto another blank disk
/// (a BIOS boot partition added to the GPT, GRUB i386-pc), which boots
/// under SeaBIOS.
#[test]
fn debian_bios_mbr_to_uefi_and_back_with_a_new_nic() {
    assert!(
        nix_is_root(),
        "this test builds and boots a Debian disk: run it as root (scripts/test.sh qemu)"
    );
    let s = Scratch::new("qemu-debian-firmware");
    let built = build_debian(&s.join("image"));
    let (src, old_nic) = bios_only_source(&s, &built);

    let vars = fresh_ovmf_vars(&s.join("rescue-vars.fd"));
    let (target, log) = rescue_onto_blank(
        &s,
        "source",
        "target",
        Firmware::Uefi {
            vars: Some(vars.clone()),
        },
        &[
            "firmware: converted to UEFI boot (the rescue system booted under UEFI, the source \
             under BIOS",
            "firmware: MBR of /dev/vda converted to GPT with the same partitions (PARTUUIDs \
             rewritten)",
            "GRUB x86_64-efi installed as EFI/debian/grubx64.efi and EFI/BOOT/BOOTX64.EFI",
            "10-lifeboat-",
        ],
    );

    // The recovered disk under OVMF with the NVRAM recovery wrote and the
    // new NIC; the host connects to the old address. Then the way back.
    std::fs::copy(s.join("source/job/sums.txt"), s.join("sums.txt")).unwrap();
    let d = job_dir(
        &s.join("job-uefi"),
        &format!(
            "{CHECK_RECOVERED}{MAKE_UEFI_ONLY}{}",
            source_job_script(
                "--append lifeboat.recover=auto --append lifeboat.poweroff",
                SUMS
            )
        ),
    );
    std::fs::copy(s.join("sums.txt"), d.join("sums.txt")).unwrap();
    let port = free_port();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answer = {
        let stop = stop.clone();
        std::thread::spawn(move || wait_for_answer(port, &stop))
    };
    let uefi = boot_check_env(
        &target,
        Some(&vars),
        "uefi",
        &d,
        2500,
        &s.join("uefi"),
        &[
            (
                "BOOT_CHECK_NETDEV",
                format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-10.0.2.50:7000"),
            ),
            (
                "BOOT_CHECK_NIC",
                format!("virtio-net-pci,netdev=n0,mac={NEW_MAC},addr=0x7"),
            ),
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answer = answer.join().unwrap();
    let mut problems = check_recovered("uefi", &uefi, &s.join("uefi/job/after.json"), &src);
    problems.extend(check_network(&uefi.job_log, &old_nic, answer.as_deref()));
    if !uefi.job_log.contains("== lifeboat job done") {
        problems.push("uefi: the UEFI-only source job failed".into());
    }
    assert!(
        problems.is_empty(),
        "{}\n--- job.log:\n{}\n--- serial (tail):\n{}\n--- recover.log (tail):\n{}",
        problems.join("\n"),
        uefi.job_log,
        tail(&uefi.serial, 40),
        tail(&log, 60)
    );
    eprintln!("the host got {answer:?} from the recovered system's old address");
    back_to_bios(&s, &src);
}

/// The way back: the UEFI-only system's rescue ISO under SeaBIOS onto a
/// blank disk, then that disk booted under SeaBIOS.
fn back_to_bios(s: &Scratch, src: &lifeboat::layout::Layout) {
    let (target, log) = rescue_onto_blank(
        s,
        "uefi",
        "target-bios",
        Firmware::Bios,
        &[
            "firmware: converted to BIOS boot (the rescue system booted under BIOS, the source \
             under UEFI",
            "firmware: new BIOS boot partition",
            "GRUB i386-pc installed on /dev/vda",
        ],
    );
    std::fs::copy(s.join("uefi/job/sums.txt"), s.join("sums-bios.txt")).unwrap();
    let d = job_dir(
        &s.join("job-bios"),
        "sha256sum --quiet -c \"$here/sums.txt\" > \"$here/sums-check.txt\" 2>&1\n\
         lifeboat layout save -o \"$here/after.json\" --exclude-disk \"$(findmnt -no SOURCE \"$here\")\"\n\
         echo \"== fstab\"\ngrep -v '^#' /etc/fstab",
    );
    std::fs::copy(s.join("sums-bios.txt"), d.join("sums.txt")).unwrap();
    let bios = boot_check_env(
        &target,
        None,
        "bios",
        &d,
        64,
        &s.join("bios"),
        &[
            ("BOOT_CHECK_NETDEV", "user,id=n0,restrict=on".into()),
            (
                "BOOT_CHECK_NIC",
                format!("virtio-net-pci,netdev=n0,mac={NEW_MAC},addr=0x7"),
            ),
        ],
    );
    let mut problems = check_recovered("bios", &bios, &s.join("bios/job/after.json"), src);
    if !bios.job_log.contains("== lifeboat job done") {
        problems.push("bios: the checks after recovery failed".into());
    }
    if let Ok(a) = lifeboat::layout::Layout::load(&s.join("bios/job/after.json")) {
        if !lifeboat::plan::firmware::boots_under(&a, lifeboat::layout::Firmware::Bios) {
            problems.push(format!(
                "bios: no GRUB i386-pc on a disk: {:?}",
                a.boot.grub
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n--- job.log:\n{}\n--- serial (tail):\n{}\n--- recover.log (tail):\n{}",
        problems.join("\n"),
        bios.job_log,
        tail(&bios.serial, 40),
        tail(&log, 60)
    );
}

/// What a recovered, converted system must show under `firmware` ("uefi":
/// booted through the EFI entry "debian"): the checks of [`check_common`]
/// with its new ESP at /boot/efi, the identities (layout `after`) of `src` kept, a GPT disk
/// with an ESP, and /boot mounted by the GPT PARTUUID of partition 3.
fn check_recovered(
    firmware: &str,
    c: &Check,
    after: &std::path::Path,
    src: &lifeboat::layout::Layout,
) -> Vec<String> {
    let after = lifeboat::layout::Layout::load(after);
    let mut problems = Vec::new();
    let esp = after
        .as_ref()
        .ok()
        .and_then(|a| a.boot.esps.first().cloned())
        .unwrap_or_else(|| "(no ESP in the layout after recovery)".into());
    let want = [
        MOUNTS[0],
        MOUNTS[1],
        MOUNTS[2],
        ("/boot/efi", esp.as_str(), "vfat"),
    ];
    problems.extend(match firmware {
        "uefi" => check_uefi_with(c, &want),
        _ => {
            let mut p = check_common_with(firmware, c, &want);
            if section(&c.job_log, "efibootmgr -v") != ["not booted under UEFI"] {
                p.push(format!("{firmware}: booted under UEFI?"));
            }
            p
        }
    });
    match &after {
        Ok(a) => {
            if kept_identities(a) != kept_identities(src) {
                problems.push(format!(
                    "{firmware}: identities differ:\n{:?}\n{:?}",
                    kept_identities(a),
                    kept_identities(src)
                ));
            }
            problems.extend(
                check_converted(a, &section(&c.job_log, "fstab"))
                    .into_iter()
                    .map(|p| format!("{firmware}: {p}")),
            );
        }
        Err(e) => problems.push(format!("{firmware}: no layout after recovery: {e:#}")),
    }
    problems
}

/// The new card (its MAC) carries the old interface's name and address,
/// and the host got the answer through it.
fn check_network(
    log: &str,
    old: &lifeboat::layout::NetInterface,
    answer: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let link = section(log, "ip link");
    if !link
        .iter()
        .any(|l| l.contains(&format!(" {}:", old.name)) && l.contains(NEW_MAC))
    {
        problems.push(format!(
            "the NIC {NEW_MAC} is not named {}: {link:?}",
            old.name
        ));
    }
    let addr = section(log, "ip addr");
    if !addr
        .iter()
        .any(|l| l.contains(&format!(" {} ", old.name)) && l.contains(" 10.0.2.50/24 "))
    {
        problems.push(format!("{} does not hold 10.0.2.50/24: {addr:?}", old.name));
    }
    if answer.is_none() {
        problems.push("nothing answered on 10.0.2.50:7000 from the host".into());
    }
    problems
}

/// What the conversion must leave: a GPT disk with an EFI system
/// partition, and fstab mounting /boot by the GPT PARTUUID of partition 3
/// (the MBR form `1a2b3c4d-03` rewritten) and the ESP at /boot/efi.
fn check_converted(after: &lifeboat::layout::Layout, fstab: &[&str]) -> Vec<String> {
    use lifeboat::layout::PartitionTable;
    let mut problems = Vec::new();
    let sys = after.disks.iter().find(|d| d.needed);
    let Some(Some(PartitionTable::Gpt(g))) = sys.map(|d| &d.partition_table) else {
        return vec![format!(
            "the recovered disk is not GPT: {:?}",
            sys.map(|d| &d.partition_table)
        )];
    };
    let want = g
        .partitions
        .iter()
        .find(|p| p.number == 3)
        .map(|p| format!("PARTUUID={}", p.unique_guid));
    let field = |mp: &str, n: usize| {
        fstab
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(mp))
            .and_then(|l| l.split_whitespace().nth(n))
    };
    if want.is_none() || field("/boot", 0) != want.as_deref() {
        problems.push(format!(
            "fstab mounts /boot as {:?}, want {want:?}",
            field("/boot", 0)
        ));
    }
    if field("/boot/efi", 2) != Some("vfat") {
        problems.push(format!("fstab has no vfat /boot/efi: {fstab:?}"));
    }
    if !g.partitions.iter().any(|p| {
        p.type_guid
            .eq_ignore_ascii_case(lifeboat::plan::firmware::ESP_GUID)
    }) {
        problems.push("the recovered GPT has no EFI system partition".into());
    }
    problems
}
