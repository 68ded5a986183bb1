//! Host tier: the lifeboat command line, and `mkrescue` on the installed
//! kernel (no root needed, no QEMU).

mod common;

use common::*;
use std::path::Path;

#[test]
fn version_and_help() {
    let (code, out, _) = run_lifeboat(["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("lifeboat {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run_lifeboat(["mkrescue", "--help"]);
    assert_eq!(code, 0);
    for flag in ["--kernel", "--output", "--layout", "--compression"] {
        assert!(out.contains(flag), "mkrescue --help lacks {flag}");
    }
}

/// A file that looks like a bzImage of kernel `version`.
fn fake_kernel(path: &Path, version: &str) {
    let mut img = vec![0u8; 0x4000];
    img[0x202..0x206].copy_from_slice(b"HdrS");
    let offset: u16 = 0x1000;
    img[0x20e..0x210].copy_from_slice(&offset.to_le_bytes());
    let at = 0x200 + offset as usize;
    img[at..at + version.len()].copy_from_slice(version.as_bytes());
    std::fs::write(path, img).unwrap();
}

fn assert_one_line_error(code: i32, err: &str, needle: &str) {
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err:?}"
    );
}

#[test]
fn mkrescue_bad_input_gives_one_line_errors() {
    let s = Scratch::new("cli-bad");
    let out = s.join("out");
    let o = out.to_str().unwrap();

    let (code, _, err) = run_lifeboat(["mkrescue", "-o", o, "--kernel", "/nonexistent/vmlinuz"]);
    assert_one_line_error(
        code,
        &err,
        "kernel image /nonexistent/vmlinuz does not exist",
    );

    let k = s.join("vmlinuz-9.9.9-test");
    fake_kernel(&k, "9.9.9-test");
    let (code, _, err) = run_lifeboat(["mkrescue", "-o", o, "--kernel", k.to_str().unwrap()]);
    assert_one_line_error(code, &err, "modules of kernel 9.9.9-test not found");

    let not_kernel = s.join("notes.txt");
    std::fs::write(&not_kernel, "hello").unwrap();
    let (code, _, err) = run_lifeboat([
        "mkrescue",
        "-o",
        o,
        "--kernel",
        not_kernel.to_str().unwrap(),
    ]);
    assert_one_line_error(code, &err, "is not an x86 bzImage kernel");

    let (code, _, err) = run_lifeboat(["mkrescue", "-o", "/etc/hostname/rescue"]);
    assert_one_line_error(
        code,
        &err,
        "cannot create output folder /etc/hostname/rescue",
    );

    let (code, _, err) = run_lifeboat([
        "mkrescue",
        "-o",
        o,
        "--no-iso",
        "--add-program",
        "no-such-tool-xyz",
    ]);
    assert_one_line_error(
        code,
        &err,
        "no-such-tool-xyz is not installed; install package",
    );

    let layout = s.join("layout.json");
    std::fs::write(&layout, "{ not json").unwrap();
    let (code, _, err) = run_lifeboat(["mkrescue", "-o", o, "--layout", layout.to_str().unwrap()]);
    assert_one_line_error(code, &err, "malformed JSON at line 1");

    // Nothing was left under the final names or as temporary files.
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

/// A layout needing a file system the kernel has no module for.
const LAYOUT_WITH_UNKNOWN_FS: &str = r#"{
  "schema_version": "1.0", "lifeboat_version": "0.1.0", "captured_at": "2026-11-26T00:00:00Z",
  "host": {"hostname": "h", "os_pretty_name": null, "os_id": null, "os_version_id": null,
           "arch": "x86_64", "kernel": "6.1.0", "firmware": "bios"},
  "disks": [],
  "filesystems": [{"device": "/dev/vda1", "fstype": "nosuchfs", "uuid": null, "label": null,
                   "size_bytes": 1048576, "used_bytes": null, "params": {"kind": "other"}}],
  "boot": {"firmware": "bios", "grub": [], "esps": [], "efi_entries": [], "boot_order": [],
           "boot_current": null, "shim": false, "systemd_boot": false, "kernel_cmdline": ""}
}"#;

#[test]
fn failed_build_keeps_the_previous_image() {
    let s = Scratch::new("cli-keep");
    let out = s.join("out");
    let o = out.to_str().unwrap();
    let (code, stdout, err) = run_lifeboat(["mkrescue", "-o", o, "--no-iso"]);
    assert_eq!(code, 0, "{stdout}{err}");
    let before = std::fs::read(out.join("initrd")).unwrap();

    let layout = s.join("layout.json");
    std::fs::write(&layout, LAYOUT_WITH_UNKNOWN_FS).unwrap();
    let (code, _, err) = run_lifeboat([
        "mkrescue",
        "-o",
        o,
        "--no-iso",
        "--layout",
        layout.to_str().unwrap(),
    ]);
    assert_one_line_error(code, &err, "lacks module nosuchfs");
    assert_eq!(std::fs::read(out.join("initrd")).unwrap(), before);
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["initrd", "rescue.json", "vmlinuz"]);
}

#[test]
fn two_builds_give_identical_initrds_without_secrets() {
    let s = Scratch::new("cli-repro");
    let mut images = Vec::new();
    for n in ["a", "b"] {
        let out = s.join(n);
        let out_s = out.to_str().unwrap().to_string();
        let (code, stdout, err) = run_lifeboat(["mkrescue", "-o", &out_s, "--no-iso"]);
        assert_eq!(code, 0, "{stdout}{err}");
        images.push(std::fs::read(out.join("initrd")).unwrap());
    }
    assert!(images[0] == images[1], "two builds differ");

    let listing = sh(&format!(
        "zstd -dc '{}' | cpio -t --quiet",
        s.join("a/initrd").display()
    ));
    for needed in [
        "init",
        "usr/bin/lifeboat",
        "usr/bin/busybox",
        "usr/sbin/lvm",
        "usr/sbin/mdadm",
        "etc/lifeboat/tools.sh",
    ] {
        assert!(
            listing.lines().any(|l| l == needed),
            "{needed} missing from the initrd"
        );
    }
    for secret in ["etc/shadow", "etc/gshadow", "root/.ssh", "etc/ssh/ssh_host"] {
        assert!(!listing.contains(secret), "{secret} is in the initrd");
    }
    let modes = sh(&format!("stat -c %a '{}'", s.join("a/initrd").display()));
    assert_eq!(modes.trim(), "600");
}

#[test]
fn iso_is_hybrid_with_bios_and_uefi_boot_images() {
    let s = Scratch::new("cli-iso");
    let out = s.join("out");
    let (code, stdout, err) = run_lifeboat([
        "mkrescue",
        "-o",
        out.to_str().unwrap(),
        "--compression",
        "gzip",
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    let iso = out.join("lifeboat-rescue.iso");
    let mode = sh(&format!("stat -c %a '{}'", iso.display()));
    assert_eq!(mode.trim(), "600");
    let report = sh(&format!(
        "xorriso -indev '{}' -report_el_torito plain -report_system_area plain 2>&1",
        iso.display()
    ));
    assert!(
        report.contains("El Torito boot img :   1  BIOS"),
        "{report}"
    );
    assert!(
        report.contains("El Torito boot img :   2  UEFI"),
        "{report}"
    );
    assert!(report.contains("MBR partition table"), "{report}");
    assert!(report.contains("GPT"), "{report}");
    // gzip initrd: the magic bytes of gzip.
    let head = std::fs::read(out.join("initrd")).unwrap();
    assert_eq!(&head[..2], &[0x1f, 0x8b]);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("rescue.json")).unwrap()).unwrap();
    assert_eq!(record["files"].as_array().unwrap().len(), 3);
}
