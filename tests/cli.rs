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

/// `mkrescue --copy-only` builds nothing and copies the image in the
/// output folder as rescue.json records it: refused without an image or
/// without rescue.destination; a file changed since the build fails the
/// copy (exit 2, nothing left in the destination); the image as built is
/// copied under HOST-STAMP.
#[test]
fn mkrescue_copy_only_copies_the_image_as_recorded() {
    let s = Scratch::new("cli-copy-only");
    let out = s.join("rescue");
    let o = out.to_str().unwrap();
    let cfg = s.join("lifeboat.toml");
    let c = cfg.to_str().unwrap();
    std::fs::write(&cfg, "").unwrap();
    let (code, _, err) = run_lifeboat(["--config", c, "mkrescue", "--copy-only", "-o", o]);
    assert_one_line_error(code, &err, &format!("no rescue image to copy in {o}"));

    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("initrd"), "the initrd").unwrap();
    let rec = serde_json::json!({
        "lifeboat_version": "0.1.0", "built_at": "2026-12-07T20:07:41Z",
        "kernel_version": "6.1.0-30-amd64", "kernel_image": "/boot/vmlinuz-6.1.0-30-amd64",
        "compression": "zstd", "cmdline": "console=ttyS0",
        "files": [{"name": "initrd", "bytes": 10,
                   "sha256": lifeboat::rescue::sha256_file(&out.join("initrd")).unwrap()}],
        "modules": 1, "firmware_files": 0, "programs": 1, "libraries": 1,
        "build_seconds": 12.0
    });
    std::fs::write(out.join("rescue.json"), rec.to_string()).unwrap();
    let (code, _, err) = run_lifeboat(["--config", c, "mkrescue", "--copy-only", "-o", o]);
    assert_one_line_error(code, &err, "rescue.destination is not set");

    let dest = s.join("copies");
    std::fs::write(
        &cfg,
        format!("[rescue]\ndestination = \"{}\"\n", dest.display()),
    )
    .unwrap();
    std::fs::write(out.join("initrd"), "the INITRD").unwrap();
    let (code, _, err) = run_lifeboat(["--config", c, "mkrescue", "--copy-only", "-o", o]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("initrd read back differs from the image"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "a copy stayed"
    );

    std::fs::write(out.join("initrd"), "the initrd").unwrap();
    let (code, stdout, err) = run_lifeboat(["--config", c, "mkrescue", "--copy-only", "-o", o]);
    assert_eq!(code, 0, "{err}");
    let host = lifeboat::util::hostname();
    let name = format!("{host}-20261207T200741Z");
    assert_eq!(
        stdout,
        format!(
            "rescue image of 2026-12-07T20:07:41Z copied to {}: {name}\n",
            dest.display()
        )
    );
    assert_eq!(
        std::fs::read(dest.join(&name).join("initrd")).unwrap(),
        b"the initrd"
    );
    assert_eq!(
        std::fs::read(dest.join(&name).join("rescue.json")).unwrap(),
        std::fs::read(out.join("rescue.json")).unwrap()
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

/// Runs lifeboat with extra environment variables.
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = std::process::Command::new(lifeboat());
    c.args(args).env_remove("LIFEBOAT_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn configuration_sources_and_one_line_errors() {
    let s = Scratch::new("cli-config");
    let cfg = s.join("lifeboat.toml");
    let c = cfg.to_str().unwrap();
    let state = s.join("state");
    let st = state.to_str().unwrap();
    std::fs::write(
        &cfg,
        "[backup]\ndestination = \"/srv/b\"\n\n[monitor]\nwarn_age = \"2d\"\n",
    )
    .unwrap();
    let (code, out, err) = run_with_env(
        &["--config", c, "--state-dir", st, "config", "show"],
        &[("LIFEBOAT_SNAPSHOT_KEEP", "12")],
    );
    assert_eq!(code, 0, "{err}");
    for want in [
        format!("state_dir = \"{st}\""),
        "# flag --state-dir".to_string(),
        format!("output = \"{st}/rescue\""),
        format!("# {c} line 2"),
        format!("# {c} line 5"),
        "keep = 12".to_string(),
        "# environment LIFEBOAT_SNAPSHOT_KEEP".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in:\n{out}");
    }
    let (code, out, _) = run_with_env(&["config", "show", "--json"], &[("LIFEBOAT_CONFIG", c)]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["file_source"]["kind"], "env");
    assert_eq!(v["settings"]["monitor.warn_age"]["value"], "2d");

    std::fs::write(&cfg, "[rescue]\niso = \"no\"\n").unwrap();
    let (code, _, err) = run_lifeboat(["--config", c, "layout", "show"]);
    assert_one_line_error(
        code,
        &err,
        &format!("{c} line 2: key `rescue.iso`: expected true or false, found a string"),
    );
    std::fs::write(&cfg, "[schedule]\noncalendar = \"daily\"\n").unwrap();
    let (code, _, err) = run_lifeboat(["--config", c, "snapshot", "list"]);
    assert_one_line_error(
        code,
        &err,
        &format!("{c} line 2: unknown key `schedule.oncalendar`"),
    );
    let (code, _, err) = run_with_env(&["status"], &[("LIFEBOAT_CONFIG", "/nonexistent.toml")]);
    assert_one_line_error(code, &err, "named by environment LIFEBOAT_CONFIG");
}

#[test]
fn backup_and_mkrescue_take_their_defaults_from_the_configuration() {
    let s = Scratch::new("cli-config-defaults");
    let cfg = s.join("lifeboat.toml");
    let c = cfg.to_str().unwrap();
    let src = s.join("src");
    std::fs::create_dir_all(src.join("cache")).unwrap();
    std::fs::write(src.join("keep.txt"), "keep").unwrap();
    std::fs::write(src.join("cache/junk.bin"), "junk").unwrap();
    let dest = s.join("backup");
    let src_s = src.to_str().unwrap();
    std::fs::write(&cfg, "").unwrap();

    let (code, _, err) = run_lifeboat(["--config", c, "backup", "create", "--source", src_s]);
    assert_one_line_error(
        code,
        &err,
        "no backup folder: give --to DEST or set backup.destination",
    );

    std::fs::write(
        &cfg,
        format!(
            "[backup]\ndestination = \"{}\"\ncompression = \"gzip\"\nexcludes = [\"cache\"]\n",
            dest.display()
        ),
    )
    .unwrap();
    let (code, out, err) =
        run_lifeboat(["--config", c, "backup", "create", "--source", src_s, "-q"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(Gzip)"), "{out}");
    let (code, out, _) = run_lifeboat(["--config", c, "backup", "list", "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let g = &list[0]["generation"];
    assert_eq!(g["compression"], "gzip");
    assert_eq!(
        g["files"], 2,
        "cache/ is excluded by the configuration: {g}"
    );
    // A flag wins over the configuration.
    let (code, out, err) = run_lifeboat([
        "--config",
        c,
        "backup",
        "create",
        "--source",
        src_s,
        "-q",
        "--compression",
        "none",
        "--exclude",
        "nothing",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = run_lifeboat(["--config", c, "backup", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[1]["generation"]["compression"], "none");
    assert_eq!(list[1]["generation"]["files"], 4);

    // mkrescue: the configured output and kernel (a missing one fails fast).
    std::fs::write(
        &cfg,
        "[rescue]\nkernel = \"/nonexistent/vmlinuz-cfg\"\niso = false\n",
    )
    .unwrap();
    let (code, _, err) = run_lifeboat([
        "--config",
        c,
        "--state-dir",
        s.join("st").to_str().unwrap(),
        "mkrescue",
    ]);
    assert_one_line_error(
        code,
        &err,
        "kernel image /nonexistent/vmlinuz-cfg does not exist",
    );
}

#[test]
fn check_reports_every_failure_as_unknown() {
    let s = Scratch::new("cli-check");
    let cfg = s.join("lifeboat.toml");
    let c = cfg.to_str().unwrap();
    std::fs::write(&cfg, "[monitor]\nwarn_age = \"soon\"\n").unwrap();
    let (code, out, _) = run_lifeboat(["--config", c, "check", "--nagios"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.starts_with(&format!(
            "LIFEBOAT UNKNOWN - {c} line 2: key `monitor.warn_age`: bad duration"
        )),
        "{out}"
    );
    assert!(
        out.trim_end()
            .ends_with("| rescue_age=U;; backup_age=U;; drift=U"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    std::fs::write(&cfg, "").unwrap();
    let st = s.join("state");
    let base = [
        "--config",
        c,
        "--state-dir",
        st.to_str().unwrap(),
        "check",
        "--nagios",
    ];
    for (extra, want) in [
        (vec!["--warn-age", "1y"], "--warn-age: bad duration"),
        (
            vec!["--warn-age", "20d", "--crit-age", "2d"],
            "the warning age 20d is longer",
        ),
        (vec!["--no-such-flag"], "unexpected argument"),
        (
            vec!["--warn-age"],
            "a value is required for '--warn-age <DURATION>'",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra).collect();
        let (code, out, _) = run_lifeboat(&args);
        assert_eq!(code, 3, "{args:?}: {out}");
        assert!(out.starts_with("LIFEBOAT UNKNOWN - "), "{out}");
        assert!(out.contains(want), "{want:?} not in {out}");
    }
    // Nothing there is a real finding, not an error.
    let (code, out, _) = run_lifeboat(base);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.starts_with("LIFEBOAT CRITICAL - no rescue image in "),
        "{out}"
    );
    let (code, out, _) = run_lifeboat(["check", "--help"]);
    assert_eq!(code, 0, "{out}");
}

/// The rescue image folder in the state folder is left out of backups, as
/// the backup folder is: after the image is rebuilt, an incremental of the
/// unchanged tree stores only metadata.
#[test]
fn backups_leave_out_the_rescue_image_folder() {
    let s = Scratch::new("cli-own-output");
    let src = s.join("src");
    let state = src.join("var/lib/lifeboat");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(src.join("keep.txt"), "keep").unwrap();
    let cfg = s.join("lifeboat.toml");
    let c = cfg.to_str().unwrap();
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[backup]\ndestination = \"{}\"\n[rescue]\niso = false\n",
            state.display(),
            s.join("backup").display()
        ),
    )
    .unwrap();
    let src_s = src.to_str().unwrap();
    let (code, out, err) = run_lifeboat(["--config", c, "mkrescue"]);
    assert_eq!(code, 0, "{out}{err}");
    let initrd = state.join("rescue/initrd");
    let first = std::fs::read(&initrd).unwrap();
    assert!(first.len() > 1 << 20, "a real image: {} bytes", first.len());
    let backup = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "--config", c, "backup", "create", "--source", src_s, "--json",
        ];
        args.extend(extra);
        let (code, out, err) = run_lifeboat(args);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["generation"].clone()
    };
    let full = backup(&["--full"]);
    assert_eq!(
        full["files"],
        1 + 4,
        "keep.txt and var/lib/lifeboat: {full}"
    );
    // Rebuilt with other boot arguments: other bytes.
    let (code, out, err) = run_lifeboat(["--config", c, "mkrescue", "--append", "quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(std::fs::read(&initrd).unwrap(), first);
    let inc = backup(&["--incremental"]);
    assert_eq!(inc["kind"], "incremental", "{inc}");
    let stored = inc["archive_bytes"].as_u64().unwrap();
    assert!(
        stored < 64 << 10,
        "an unchanged tree stored {stored} bytes: {inc}"
    );
}

/// `lifeboat --config CFG --state-dir STATE schedule install --root ROOT EXTRA...`
fn schedule_install(
    cfg: &Path,
    state: &Path,
    root: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--config".into(),
        cfg.into(),
        "--state-dir".into(),
        state.into(),
        "schedule".into(),
        "install".into(),
        "--root".into(),
        root.into(),
    ];
    args.extend(extra.iter().map(Into::into));
    run_lifeboat(&args)
}

#[test]
fn schedule_with_cron_below_a_root() {
    let s = Scratch::new("cli-schedule");
    let cfg = s.join("lifeboat.toml");
    let c = cfg.to_str().unwrap();
    std::fs::write(&cfg, "").unwrap();
    let root = s.join("root");
    let r = root.to_str().unwrap();
    let st = s.join("state");
    let st_s = st.to_str().unwrap();
    let install = |extra: &[&str]| schedule_install(&cfg, &st, &root, extra);
    let (code, _, err) = install(&["--backup"]);
    assert_one_line_error(code, &err, "a scheduled backup needs a backup folder");
    let (code, _, err) = install(&["--init", "cron", "--on-calendar", "*-*-01 03:00"]);
    assert_one_line_error(code, &err, "set schedule.cron (or --cron)");

    let (code, out, err) = install(&["--on-calendar", "Mon..Fri 03:30", "--rebuild-rescue"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("cron: 30 3 * * 1-5 (from OnCalendar Mon..Fri 03:30)"),
        "{out}"
    );
    let cron = std::fs::read_to_string(root.join("etc/cron.d/lifeboat")).unwrap();
    let exe = lifeboat().canonicalize().unwrap();
    assert!(
        cron.contains(&format!(
            "\n30 3 * * 1-5 root sleep $(shuf -i 0-1800 -n 1); {} --config {c} --state-dir {st_s} snapshot --rebuild-rescue 2>&1 | logger -t lifeboat\n",
            exe.display()
        )),
        "{cron}"
    );
    let (code, out, _) = run_lifeboat(["--config", c, "schedule", "status", "--root", r, "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["schedule"]["init"], "cron");
    assert_eq!(v["schedule"]["when"], "30 3 * * 1-5");

    let (code, out, _) = install(&["--init", "cron", "--cron", "15 2 * * *"]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read_to_string(root.join("etc/cron.d/lifeboat"))
        .unwrap()
        .contains("\n15 2 * * * root "));
    let (code, out, _) = run_lifeboat(["--config", c, "schedule", "remove", "--root", r]);
    assert_eq!(code, 0);
    assert!(
        out.contains("removed ") && out.contains("cron.d/lifeboat"),
        "{out}"
    );
    let (code, out, _) = run_lifeboat(["--config", c, "schedule", "status", "--root", r]);
    assert_eq!(code, 1, "{out}");
}

/// `--root` is judged by the tree's init, not by this machine (which runs
/// no systemd here): a tree booting systemd gets units; `--init` wins.
#[test]
fn schedule_into_a_tree_with_systemd_writes_units() {
    use std::os::unix::fs::symlink;
    let s = Scratch::new("cli-schedule-systemd");
    let cfg = s.join("lifeboat.toml");
    std::fs::write(&cfg, "").unwrap();
    let st = s.join("state");
    let root = s.join("root");
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::write(root.join("usr/lib/systemd/systemd"), "").unwrap();
    symlink("/usr/lib", root.join("lib")).unwrap();
    symlink("/usr/sbin", root.join("sbin")).unwrap();
    symlink("/lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
    let (code, out, err) = schedule_install(&cfg, &st, &root, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let units = root.join("etc/systemd/system");
    assert!(units.join("lifeboat-snapshot.timer").is_file(), "{out}");
    assert!(units.join("lifeboat-snapshot.service").is_file(), "{out}");
    assert!(!root.join("etc/cron.d/lifeboat").exists(), "{out}");
    let (code, out, err) = schedule_install(&cfg, &st, &root, &["--init", "cron"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(root.join("etc/cron.d/lifeboat").is_file(), "{out}");
    assert!(!units.join("lifeboat-snapshot.timer").exists(), "{out}");
}

/// A byte that is not UTF-8, as one command-line argument.
fn non_utf8(prefix: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let mut b = prefix.as_bytes().to_vec();
    b.push(0xff);
    std::ffi::OsString::from_vec(b)
}

/// A scratch folder with an empty configuration, and the arguments that
/// name it and a state folder in it.
fn scratch_with_config(name: &str) -> (Scratch, Vec<std::ffi::OsString>) {
    let s = Scratch::new(name);
    let cfg = s.join("lifeboat.toml");
    std::fs::write(&cfg, "").unwrap();
    let base = vec![
        "--config".into(),
        cfg.into(),
        "--state-dir".into(),
        s.join("state").into(),
    ];
    (s, base)
}

#[test]
fn non_utf8_arguments_are_errors_not_panics() {
    let (s, base) = scratch_with_config("cli-utf8");
    let bad = non_utf8(s.path.to_str().unwrap());
    let cases: Vec<(Vec<std::ffi::OsString>, &str)> = vec![
        // Paths are OS strings: the file is merely missing.
        (
            vec!["layout".into(), "show".into(), bad.clone()],
            "reading layout",
        ),
        // Other values are clap's clear error.
        (
            vec!["backup".into(), "list".into(), "--from".into(), bad.clone()],
            "invalid UTF-8",
        ),
        (
            vec!["mkrescue".into(), "--append".into(), non_utf8("x=")],
            "invalid UTF-8",
        ),
        (
            vec![
                "schedule".into(),
                "install".into(),
                "--on-calendar".into(),
                non_utf8("daily"),
            ],
            "invalid UTF-8",
        ),
        (vec![non_utf8("stat")], "unrecognized subcommand"),
    ];
    for (args, want) in cases {
        let all: Vec<_> = base.iter().cloned().chain(args.clone()).collect();
        let (code, out, err) = run_lifeboat(&all);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {want:?} not in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // A configuration file named by non-UTF-8 bytes is a path like any other.
    let (code, _, err) = run_lifeboat([
        "--config".into(),
        bad.clone(),
        "--state-dir".into(),
        s.join("state").into_os_string(),
        std::ffi::OsString::from("status"),
    ]);
    assert_one_line_error(code, &err, "cannot read configuration");
}

#[test]
fn check_is_unknown_for_non_utf8_and_overflowing_arguments() {
    let (_s, mut base) = scratch_with_config("cli-check-args");
    base.extend(["check".into(), "--nagios".into()]);
    for (extra, want) in [
        (vec![non_utf8("8d")], "unexpected argument"),
        (vec!["--warn-age".into(), non_utf8("8d")], "invalid UTF-8"),
        (
            vec!["--warn-age".into(), "9999999999999d".into()],
            "--warn-age: bad duration \"9999999999999d\": too long (at most 36500d)",
        ),
        (
            vec!["--crit-age".into(), "99999999999999999999w".into()],
            "--crit-age: bad duration \"99999999999999999999w\": too long",
        ),
    ] {
        let all: Vec<_> = base.iter().cloned().chain(extra.clone()).collect();
        let (code, out, err) = run_lifeboat(&all);
        assert_eq!(code, 3, "{extra:?}: {out}{err}");
        assert!(out.starts_with("LIFEBOAT UNKNOWN - "), "{out}");
        assert!(out.contains(want), "{want:?} not in {out}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Every file below `dir` (recursively), with its contents.
fn files_below(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            out.push((p.clone(), Vec::new()));
            out.extend(files_below(&p));
        } else if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            out.push((p, t.into_os_string().into_encoded_bytes()));
        } else {
            let data = std::fs::read(&p).unwrap();
            out.push((p, data));
        }
    }
    out.sort();
    out
}

#[test]
fn schedule_values_with_newlines_are_refused_before_writing() {
    let s = Scratch::new("cli-schedule-nl");
    let cfg = s.join("lifeboat.toml");
    std::fs::write(&cfg, "").unwrap();
    let odd_cfg = s.join("odd\nExecStartPre=evil.toml");
    std::fs::write(&odd_cfg, "").unwrap();
    let root = s.join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::write(root.join("usr/lib/systemd/systemd"), "").unwrap();
    let before = files_below(&root);
    let st = s.join("state");
    let evil = "daily\nExecStartPre=/bin/evil";
    for (c, extra, want) in [
        (
            &cfg,
            vec!["--init", "systemd", "--on-calendar", evil],
            "OnCalendar",
        ),
        (
            &cfg,
            vec!["--init", "cron", "--on-calendar", evil],
            "OnCalendar",
        ),
        (
            &cfg,
            vec!["--init", "cron", "--cron", "1 2 * * *\n* * * * *"],
            "cron time",
        ),
        (
            &odd_cfg,
            vec!["--init", "systemd"],
            "scheduled command's argument",
        ),
        (
            &odd_cfg,
            vec!["--init", "cron"],
            "scheduled command's argument",
        ),
    ] {
        let (code, _, err) = schedule_install(c, &st, &root, &extra);
        assert_one_line_error(code, &err, want);
        assert!(err.contains("control character '\\n'"), "{err}");
        assert_eq!(files_below(&root), before, "{extra:?} wrote below --root");
    }
    let bad_root = s.join("ro\not");
    let (code, _, err) = schedule_install(&cfg, &st, &bad_root, &["--init", "cron"]);
    assert_one_line_error(code, &err, "--root");
    assert!(!bad_root.exists());
}

#[test]
fn hostile_generation_json_is_refused_and_the_outside_untouched() {
    let (s, base) = scratch_with_config("cli-hostile-gen");
    let src = s.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a"), "a").unwrap();
    std::fs::write(src.join("sub/b"), "b").unwrap();
    // What hostile names point at: beside the backup folder, and a tar
    // archive there that a `../` archive name would read.
    let outside = s.join("outside");
    std::fs::create_dir_all(outside.join("gen")).unwrap();
    std::fs::write(outside.join("keep"), "precious").unwrap();
    let dest = s.join("backups");
    let target = s.join("target");
    std::fs::create_dir(&target).unwrap();
    let lb = |args: &[&str]| {
        let all = base.iter().cloned().chain(args.iter().map(Into::into));
        run_lifeboat(all.collect::<Vec<std::ffi::OsString>>())
    };
    let (code, out, err) = lb(&[
        "backup",
        "create",
        "-q",
        "--source",
        src.to_str().unwrap(),
        "--to",
        dest.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let id = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| !n.starts_with('.'))
        .unwrap();
    let gen_file = dest.join(&id).join("generation.json");
    let good: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&gen_file).unwrap()).unwrap();
    let archive = good["archives"][0]["file"].as_str().unwrap().to_string();
    std::fs::copy(
        dest.join(&id).join(&archive),
        outside.join("gen").join(&archive),
    )
    .unwrap();
    let outside_before = files_below(&outside);
    let d = dest.to_str().unwrap();
    let t = target.to_str().unwrap();
    let mutations: [(&str, serde_json::Value, &str); 7] = [
        ("/id", "../outside/gen".into(), "id"),
        ("/id", "../outside".into(), "id"),
        ("/chain/0", "../../etc".into(), "chain[0]"),
        ("/parent", "../outside/gen".into(), "parent"),
        (
            "/archives/0/file",
            format!("../../outside/gen/{archive}").into(),
            "archives[0].file",
        ),
        ("/archives/0/file", "/etc/passwd".into(), "archives[0].file"),
        (
            "/archives/0/mountpoint",
            "/srv/../../etc".into(),
            "archives[0].mountpoint",
        ),
    ];
    for (pointer, value, field) in mutations {
        let mut g = good.clone();
        *g.pointer_mut(pointer).unwrap() = value.clone();
        std::fs::write(&gen_file, serde_json::to_vec_pretty(&g).unwrap()).unwrap();
        for cmd in [
            vec!["backup", "list", "--from", d],
            vec!["backup", "verify", "--from", d],
            vec!["backup", "restore", "--from", d, "--to", t],
            vec![
                "backup",
                "restore",
                "--from",
                d,
                "--generation",
                &id,
                "--to",
                t,
            ],
        ] {
            let (code, out, err) = lb(&cmd);
            let what = format!("{cmd:?} with {pointer} = {value}");
            assert_ne!(code, 0, "{what}: {out}{err}");
            assert!(!err.contains("panicked"), "{what}: {err}");
            assert!(
                err.contains(&format!("{id}/generation.json is refused"))
                    && err.contains(&format!("field `{field}`")),
                "{what}: {err}"
            );
            assert_eq!(
                files_below(&outside),
                outside_before,
                "{what} changed the outside"
            );
            assert!(files_below(&target).is_empty(), "{what} restored something");
        }
        // A backup goes on beside the damaged generation (a new full) and
        // --keep prunes it by its folder's name: in a copy of the folder,
        // so that the next mutation finds its generation again.
        let copy = s.join("copy");
        let cp = std::process::Command::new("cp")
            .arg("-a")
            .arg(&dest)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(cp.success());
        let cmd = [
            "backup",
            "create",
            "--source",
            src.to_str().unwrap(),
            "--to",
            copy.to_str().unwrap(),
            "--keep",
            "1",
        ];
        let (code, out, err) = lb(&cmd);
        let what = format!("{cmd:?} with {pointer} = {value}");
        assert_eq!(code, 0, "{what}: {out}{err}");
        assert!(
            err.contains(&format!("{id}/generation.json is refused"))
                && err.contains(&format!("field `{field}`")),
            "{what}: {err}"
        );
        assert_eq!(
            files_below(&outside),
            outside_before,
            "{what} changed the outside"
        );
        std::fs::remove_dir_all(&copy).unwrap();
    }
}

#[test]
fn luks_header_backups_go_into_the_image_only_when_asked() {
    let s = Scratch::new("cli-luks-headers");
    // A layout with one LUKS container whose header backup lies beside it.
    let header = "luks-header-11111111-2222-3333-4444-555555555555.img";
    let mut l: serde_json::Value = serde_json::from_str(LAYOUT_WITH_UNKNOWN_FS).unwrap();
    l["filesystems"] = serde_json::json!([]);
    l["luks"] = serde_json::json!([{
        "device": "/dev/vda2", "version": 2, "uuid": "11111111-2222-3333-4444-555555555555",
        "cipher": "aes-xts-plain64", "key_size_bits": 512, "hash": null, "pbkdf": null,
        "label": null, "subsystem": null, "data_offset_bytes": null, "sector_size": null,
        "mapping_name": "crypt", "mapped_device": null, "header_backup": header
    }]);
    let layout = s.join("layout.json");
    std::fs::write(&layout, l.to_string()).unwrap();
    std::fs::write(s.join(header), "LUKS\u{ba}\u{be} secret header").unwrap();
    let build = |out: &str, extra: &[&str]| {
        let o = s.join(out);
        let mut args = vec![
            "mkrescue",
            "-o",
            o.to_str().unwrap(),
            "--no-iso",
            "--layout",
            layout.to_str().unwrap(),
        ];
        args.extend(extra);
        let (code, stdout, err) = run_lifeboat(&args);
        assert_eq!(code, 0, "{stdout}{err}");
        let listing = sh(&format!(
            "zstd -dc '{}' | cpio -t --quiet",
            o.join("initrd").display()
        ));
        (listing, err)
    };
    let (listing, err) = build("default", &[]);
    assert!(
        listing.lines().any(|l| l == "etc/lifeboat/layout.json"),
        "{listing}"
    );
    assert!(!listing.contains("luks-header"), "{listing}");
    assert!(!err.contains("--include-luks-headers:"), "{err}");

    let (listing, err) = build("with", &["--include-luks-headers"]);
    assert!(
        listing
            .lines()
            .any(|l| l == format!("etc/lifeboat/{header}")),
        "{listing}"
    );
    assert!(
        err.contains("--include-luks-headers: the image holds 1 LUKS header backup(s)")
            && err.contains("any passphrase that was valid"),
        "{err}"
    );
}

/// `lifeboat drill` refuses bad input with one line and exit 2 before
/// anything starts: no backup configured, no rescue image, a bad
/// --disk-size, an unreadable key file; the work folder stays untouched.
#[test]
fn drill_bad_input_gives_one_line_errors() {
    let (s, base) = scratch_with_config("cli-drill");
    let work = s.join("work");
    let run = |extra: &[&str]| {
        let mut args = base.clone();
        args.push("drill".into());
        args.extend(["--work".into(), work.clone().into_os_string()]);
        args.extend(extra.iter().map(|a| std::ffi::OsString::from(*a)));
        run_lifeboat(&args)
    };
    let (code, _, err) = run(&[]);
    assert_one_line_error(code, &err, "no backup: give --backup DEST");
    let backup = s.join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    let b = backup.to_str().unwrap();
    let (code, _, err) = run(&["--backup", b]);
    assert_one_line_error(code, &err, "no rescue image in ");
    let (code, _, err) = run(&["--backup", b, "--disk-size", "vda"]);
    assert_one_line_error(code, &err, "write DISK=SIZE");
    let (code, _, err) = run(&["--backup", b, "--timeout", "soon"]);
    assert_one_line_error(code, &err, "--timeout");
    let (code, _, err) = run(&["--backup", b, "--memory", "64"]);
    assert_one_line_error(code, &err, "--memory must be");
    assert!(!work.exists(), "the work folder was created");
}

/// The schedule runs the lifeboat installed in the system (the package's
/// /usr/sbin/lifeboat), not the binary that happened to install it; with
/// the package's units there, it writes drop-ins instead of units.
#[test]
fn schedule_runs_the_installed_lifeboat_through_the_packages_units() {
    let s = Scratch::new("cli-schedule-pkg");
    let cfg = s.join("lifeboat.toml");
    std::fs::write(&cfg, "").unwrap();
    let root = s.join("root");
    let st = s.join("state");
    // A tree booting systemd; no lifeboat installed yet: this binary, with
    // a warning.
    std::fs::create_dir_all(root.join("lib/systemd")).unwrap();
    std::fs::write(root.join("lib/systemd/systemd"), "").unwrap();
    let (code, out, err) = schedule_install(&cfg, &st, &root, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("lifeboat is not installed below"), "{err}");
    let units = root.join("etc/systemd/system");
    let service = std::fs::read_to_string(units.join("lifeboat-snapshot.service")).unwrap();
    let exe = lifeboat().canonicalize().unwrap();
    assert!(
        service.contains(&format!("\nExecStart={} ", exe.display())),
        "{service}"
    );

    // The package: /usr/sbin/lifeboat and its units.
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::copy(lifeboat(), root.join("usr/sbin/lifeboat")).unwrap();
    let shipped = root.join("lib/systemd/system");
    let (code, _, err) = run_lifeboat(["internal", "systemd-units", shipped.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = schedule_install(&cfg, &st, &root, &["--on-calendar", "Sun 04:00"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("not installed"), "{err}");
    assert!(!units.join("lifeboat-snapshot.service").exists(), "{out}");
    let drop_in =
        std::fs::read_to_string(units.join("lifeboat-snapshot.service.d/schedule.conf")).unwrap();
    assert!(
        drop_in.contains(&format!(
            "\nExecStart=\nExecStart=/usr/sbin/lifeboat --config {} --state-dir {} snapshot\n",
            cfg.display(),
            st.display()
        )),
        "{drop_in}"
    );
    let timer =
        std::fs::read_to_string(units.join("lifeboat-snapshot.timer.d/schedule.conf")).unwrap();
    assert!(
        timer.contains("\nOnCalendar=\nOnCalendar=Sun 04:00\n"),
        "{timer}"
    );
    assert_eq!(
        std::fs::read_link(units.join("timers.target.wants/lifeboat-snapshot.timer")).unwrap(),
        Path::new("/lib/systemd/system/lifeboat-snapshot.timer")
    );
    assert!(out.contains("runs: /usr/sbin/lifeboat --config"), "{out}");
}

/// scripts/build-deb.sh builds the package of this binary and lintian
/// passes it: the binary in /usr/sbin, a man page per command (long help
/// included), completions where bash, zsh and fish look, the units
/// running /usr/sbin/lifeboat, the example configuration as the only
/// conffile, Depends from the libraries the binary links. Without lintian
/// (package lintian) this fails unless LIFEBOAT_SKIP_LINTIAN=1.
#[test]
fn debian_package_builds_and_passes_lintian() {
    let lintian = which("lintian");
    if !lintian {
        assert!(
            std::env::var("LIFEBOAT_SKIP_LINTIAN").as_deref() == Ok("1"),
            "lintian is not installed (scripts/install-deps.sh installs it); set \
             LIFEBOAT_SKIP_LINTIAN=1 to skip this check"
        );
    }
    let s = Scratch::new("cli-deb");
    let mut cmd = std::process::Command::new(repo().join("scripts/build-deb.sh"));
    cmd.arg("--binary")
        .arg(lifeboat())
        .arg("--output")
        .arg(s.join("out"));
    if lintian {
        cmd.arg("--lintian");
    }
    let res = cmd.output().expect("running scripts/build-deb.sh");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "build-deb.sh failed:\n{stdout}\n{stderr}"
    );
    let deb = s.join(format!(
        "out/lifeboat_{}-1_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ));
    assert_eq!(stdout.trim(), deb.to_str().unwrap());
    // Lintian printed no tag (the overridden one aside).
    let tags: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(tags.is_empty(), "lintian: {tags:?}");

    let field = |f: &str| sh(&format!("dpkg-deb -f {} {f}", deb.display()));
    assert_eq!(field("Package").trim(), "lifeboat");
    let depends = field("Depends");
    for lib in ["libc6", "libzstd1"] {
        assert!(depends.contains(lib), "Depends: {depends}");
    }
    for tool in ["mdadm", "lvm2", "xorriso", "qemu-system-x86"] {
        assert!(!depends.contains(tool), "{tool} in Depends: {depends}");
    }
    let tree = s.join("tree");
    let control = s.join("control");
    sh(&format!(
        "dpkg-deb -x {0} {1} && dpkg-deb -e {0} {2}",
        deb.display(),
        tree.display(),
        control.display()
    ));
    assert_eq!(
        std::fs::read_to_string(control.join("conffiles")).unwrap(),
        "/etc/lifeboat/lifeboat.toml\n"
    );
    assert_eq!(
        std::fs::read(tree.join("etc/lifeboat/lifeboat.toml")).unwrap(),
        std::fs::read(repo().join("docs/lifeboat.toml.example")).unwrap()
    );
    let version = sh(&format!("{}/usr/sbin/lifeboat --version", tree.display()));
    assert_eq!(
        version.trim(),
        format!("lifeboat {}", env!("CARGO_PKG_VERSION"))
    );

    // One page per command: as many as the binary writes, among them the
    // subcommands' with their long help.
    let pages = s.join("pages");
    let (code, listed, _) = run_lifeboat(["internal", "man-pages", pages.to_str().unwrap()]);
    assert_eq!(code, 0);
    let man8 = tree.join("usr/share/man/man8");
    for page in listed.lines() {
        let name = Path::new(page).file_name().unwrap().to_str().unwrap();
        assert!(man8.join(format!("{name}.gz")).is_file(), "{name} missing");
    }
    assert!(listed.lines().count() > 20, "{listed}");
    let create = sh(&format!(
        "zcat {}/lifeboat-backup-create.8.gz",
        man8.display()
    ));
    assert!(create.contains("lifeboat\\-backup\\-create"), "{create}");
    // Completions: bash registers the command when its file is sourced.
    let completions = tree.join("usr/share");
    let bash = sh(&format!(
        "bash -c '. {}/bash-completion/completions/lifeboat && complete -p lifeboat'",
        completions.display()
    ));
    assert!(bash.contains("lifeboat"), "{bash}");
    assert!(completions
        .join("zsh/vendor-completions/_lifeboat")
        .is_file());
    assert!(completions
        .join("fish/vendor_completions.d/lifeboat.fish")
        .is_file());
    let units = tree.join("lib/systemd/system");
    let service = std::fs::read_to_string(units.join("lifeboat-snapshot.service")).unwrap();
    assert!(
        service.contains("\nExecStart=/usr/sbin/lifeboat snapshot\n"),
        "{service}"
    );
    for unit in [
        "lifeboat-snapshot.timer",
        "lifeboat-drill.service",
        "lifeboat-drill.timer",
        "lifeboat-notify@.service",
    ] {
        assert!(units.join(unit).is_file(), "{unit} missing");
    }
    for doc in ["copyright", "changelog.Debian.gz"] {
        assert!(
            tree.join("usr/share/doc/lifeboat").join(doc).is_file(),
            "{doc}"
        );
    }
}

/// Whether `tool` is on PATH.
fn which(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn prune_at_and_differential_bad_input_gives_one_line_errors() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("lifeboat.toml");
    std::fs::write(&cfg, "").unwrap();
    let bk = d.path().join("bk");
    std::fs::create_dir(&bk).unwrap();
    let lb = |args: &[&str]| {
        let mut all = vec!["--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        run_lifeboat(all)
    };
    let from = bk.to_str().unwrap();
    let (code, _, err) = lb(&["backup", "prune", "--from", from]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no retention rule: give --keep N or --keep-last"),
        "{err}"
    );
    let (code, _, err) = lb(&["backup", "prune", "--from", from, "--keep-daily", "x"]);
    assert_eq!(code, 2, "{err}");
    let target = d.path().join("t");
    let to = target.to_str().unwrap();
    let (code, _, err) = lb(&[
        "backup",
        "restore",
        "--from",
        from,
        "--to",
        to,
        "--at",
        "yesterday",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad time \"yesterday\": expected YYYY-MM-DD"),
        "{err}"
    );
    let (code, _, err) = lb(&[
        "backup",
        "restore",
        "--from",
        from,
        "--to",
        to,
        "--at",
        "2026-11-20",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no generation in"), "{err}");
    let (code, _, err) = lb(&[
        "backup",
        "restore",
        "--from",
        from,
        "--to",
        to,
        "--at",
        "2026-11-20",
        "--generation",
        "x",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, _, err) = lb(&[
        "backup",
        "create",
        "--to",
        from,
        "--source",
        from,
        "--differential",
        "--incremental",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!target.exists());
}

/// With stderr connected to the stream `JOURNAL_STREAM` names, the error
/// line carries the err priority (`<3>`); with the variable naming another
/// file (inherited from a service, stderr redirected), it does not.
#[test]
fn errors_carry_syslog_priority_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let s = Scratch::new("cli-journal");
    let run = |stream_of: &Path, stderr_to: &Path| {
        let err = std::fs::File::create(stderr_to).unwrap();
        let m = std::fs::metadata(stream_of).unwrap();
        let out = std::process::Command::new(lifeboat())
            .args(["mkrescue", "--kernel", "/nonexistent/vmlinuz", "-o"])
            .arg(s.join("out"))
            .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
            .env_remove("LIFEBOAT_LOG")
            .stderr(err)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        std::fs::read_to_string(stderr_to).unwrap()
    };
    let journal = s.join("journal");
    let text = run(&journal, &journal);
    assert!(
        text.starts_with("<3>lifeboat: error: kernel image /nonexistent/vmlinuz"),
        "{text:?}"
    );
    let other = s.join("other");
    std::fs::write(&other, b"").unwrap();
    let text = run(&other, &s.join("plain"));
    assert!(
        text.starts_with("lifeboat: error: kernel image"),
        "{text:?}"
    );
}

/// `notify --test` and `notify --failed-unit` through a real command and a
/// fake sendmail script that keeps the mail; a channel that fails is named
/// and gives exit 1; nothing configured is an error for `--test` only.
#[test]
fn notify_test_and_failed_unit_reach_command_and_sendmail() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("cli-notify");
    let exe = |name: &str, body: &str| {
        let p = s.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    let d = s.join("").display().to_string();
    let sendmail = exe("sendmail", &format!("cat > {d}/mail.txt"));
    let cmd = exe(
        "hook",
        &format!(
            "echo \"$LIFEBOAT_EVENT $LIFEBOAT_STATUS $LIFEBOAT_UNIT\" > {d}/env; cat > {d}/in.json"
        ),
    );
    let cfg = s.join("lifeboat.toml");
    let write_cfg = |command: &str| {
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{d}/state\"\n[notify]\nmail_to = [\"root\"]\n\
                 command = \"{command}\"\nsendmail = \"{}\"\n",
                sendmail.display()
            ),
        )
        .unwrap();
    };
    write_cfg(&cmd.display().to_string());
    let c = cfg.to_str().unwrap();
    let (code, out, err) = run_lifeboat(["--config", c, "notify", "--test"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sent: mail to root") && out.contains("sent: command "),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(s.join("env")).unwrap(),
        "test test \n"
    );
    let mail = std::fs::read_to_string(s.join("mail.txt")).unwrap();
    assert!(
        mail.starts_with("To: root\nSubject: lifeboat on "),
        "{mail}"
    );

    let (code, out, err) = run_lifeboat([
        "--config",
        c,
        "notify",
        "--failed-unit",
        "lifeboat-snapshot.service",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(s.join("env")).unwrap(),
        "unit-failed failed lifeboat-snapshot.service\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.join("in.json")).unwrap()).unwrap();
    assert_eq!(j["summary"], "unit lifeboat-snapshot.service failed");

    let (code, _, err) = run_lifeboat(["--config", c, "notify", "--failed-unit=a b/c"]);
    assert_one_line_error(code, &err, "is not a systemd unit name");

    write_cfg("exit 9");
    let (code, out, _) = run_lifeboat(["--config", c, "notify", "--test"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED: command exit 9:"), "{out}");

    std::fs::write(&cfg, format!("state_dir = \"{d}/state\"\n")).unwrap();
    let (code, _, err) = run_lifeboat(["--config", c, "notify", "--test"]);
    assert_one_line_error(
        code,
        &err,
        "no notification is configured: set notify.mail_to",
    );
}

/// A state folder as a healthy host has it: a snapshot (the layout captured
/// from the Debian test guest) taken 5 h ago, a rescue image built from it
/// 2 h ago and copied off the host 1 h ago, a backup finished 3 h ago and
/// verified. Returns the config.
fn healthy_state(s: &Scratch) -> std::path::PathBuf {
    use lifeboat::util::{now_epoch, rfc3339, stamp};
    let now = now_epoch();
    let state = s.join("state");
    let snaps = state.join("snapshots");
    std::fs::create_dir_all(&snaps).unwrap();
    let snap = snaps.join(format!("{}.json", stamp(now - 5 * 3600)));
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debian12-layout.json");
    std::fs::copy(fixture, &snap).unwrap();
    std::fs::create_dir_all(state.join("rescue")).unwrap();
    let rec = serde_json::json!({
        "lifeboat_version": "0.1.0", "built_at": rfc3339(now - 2 * 3600),
        "kernel_version": "6.1.0-30-amd64", "kernel_image": "/boot/vmlinuz-6.1.0-30-amd64",
        "compression": "zstd", "cmdline": "console=ttyS0",
        "layout": snap.display().to_string(),
        "layout_sha256": lifeboat::rescue::sha256_file(&snap).unwrap(),
        "files": [{"name": "initrd", "bytes": 1, "sha256": "ab"}],
        "modules": 1, "firmware_files": 0, "programs": 1, "libraries": 1,
        "build_seconds": 12.0
    });
    std::fs::write(state.join("rescue/rescue.json"), rec.to_string()).unwrap();
    // Copied off the host 1 h ago (rescue.destination below).
    let copied = serde_json::json!({
        "destination": "/srv/rescue-copies", "name": "nas", "copied_at": rfc3339(now - 3600),
        "image_built_at": rec["built_at"], "files": ["initrd", "rescue.json"], "bytes": 2,
        "removed": []
    });
    let copy_rec = serde_json::json!({
        "destination": "/srv/rescue-copies", "attempted_at": rfc3339(now - 3600),
        "image_built_at": rec["built_at"], "ok": true, "error": null, "last_copy": copied
    });
    std::fs::write(state.join("rescue/rescue-copy.json"), copy_rec.to_string()).unwrap();
    let finished = now - 3 * 3600;
    let id = stamp(finished);
    let gen = s.join("backup").join(&id);
    std::fs::create_dir_all(&gen).unwrap();
    let g = serde_json::json!({
        "format": 1, "id": id, "kind": "full", "parent": null,
        "parent_manifest_sha256": null, "chain": [id],
        "started_at": rfc3339(finished - 600), "finished_at": rfc3339(finished),
        "started_ns": ((finished - 600) as i128) * 1_000_000_000,
        "duration_seconds": 600.0, "hostname": "debian", "lifeboat_version": "0.1.0",
        "compression": "zstd", "archives": [], "manifest_sha256": "00",
        "files": 10, "bytes": 100, "stored_files": 10, "stored_content_bytes": 100,
        "archive_bytes": 50, "deleted": 0, "has_layout": true, "result": "ok",
        "warnings": {"vanished": 0, "changed": 0, "sockets": 0, "unreadable": 0, "examples": []}
    });
    std::fs::write(gen.join("generation.json"), g.to_string()).unwrap();
    let v = serde_json::json!({
        "verified_at": rfc3339(finished + 60), "deep": false, "ok": true,
        "problem": null, "files_checked": 10
    });
    std::fs::write(gen.join("verify.json"), v.to_string()).unwrap();
    let cfg = s.join("lifeboat.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[rescue]\ndestination = \"/srv/rescue-copies\"\n\
             [backup]\ndestination = \"{}\"\n",
            state.display(),
            s.join("backup").display()
        ),
    )
    .unwrap();
    cfg
}

/// Runs a command line from the docs through /bin/sh with our binary in
/// place of /usr/sbin/lifeboat and the fixture configuration.
fn run_doc_command(command: &str, cfg: &Path) -> (i32, String) {
    let line = command.replace("/usr/sbin/lifeboat", lifeboat().to_str().unwrap());
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", &line])
        .env("LIFEBOAT_CONFIG", cfg)
        .env_remove("LIFEBOAT_LOG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "{line}: {err}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// docs/zabbix: every UserParameter command runs against a fixture state
/// folder, and every item of the template finds its value in their output
/// (JSONPath on `lifeboat status --json`); triggers name existing items.
#[test]
fn zabbix_user_parameters_feed_every_template_item() {
    let s = Scratch::new("cli-zabbix");
    let cfg = healthy_state(&s);
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/zabbix");
    let conf = std::fs::read_to_string(docs.join("userparameter_lifeboat.conf")).unwrap();
    let mut outputs = std::collections::BTreeMap::new();
    for line in conf
        .lines()
        .filter_map(|l| l.strip_prefix("UserParameter="))
    {
        let (key, command) = line.split_once(',').unwrap();
        let (_, out) = run_doc_command(command, &cfg);
        assert!(!out.trim().is_empty(), "{key}: no output");
        outputs.insert(key.to_string(), out);
    }
    assert!(
        outputs["lifeboat.check"].starts_with("LIFEBOAT OK - "),
        "{outputs:?}"
    );
    let status: serde_json::Value = serde_json::from_str(&outputs["lifeboat.status"]).unwrap();

    let t: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("template_lifeboat.json")).unwrap(),
    )
    .unwrap();
    let tpl = &t["zabbix_export"]["templates"][0];
    let name = tpl["template"].as_str().unwrap();
    let items = tpl["items"].as_array().unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i["key"].as_str().unwrap()).collect();
    let mut checked = 0;
    for item in items {
        let key = item["key"].as_str().unwrap();
        let value = match item["master_item"]["key"].as_str() {
            None => {
                assert!(outputs.contains_key(key), "{key} has no UserParameter");
                continue;
            }
            Some(master) => {
                let path = item["preprocessing"][0]["parameters"][0].as_str().unwrap();
                let doc: serde_json::Value = serde_json::from_str(&outputs[master]).unwrap();
                let mut v = &doc;
                for part in path.strip_prefix("$.").unwrap().split('.') {
                    v = &v[part];
                }
                v.clone()
            }
        };
        let drill_or_run = key.contains("drill") || key.contains("last_run");
        match item["value_type"].as_str().unwrap() {
            // No run and no drill in the fixture: those values are absent.
            _ if drill_or_run => assert!(value.is_null(), "{key}: {value}"),
            "FLOAT" | "UNSIGNED" => {
                assert!(value.is_number(), "{key}: {value} in {status}");
                checked += 1;
            }
            other => panic!("{key}: unexpected value type {other}"),
        }
        for tr in item["triggers"].as_array().into_iter().flatten() {
            let e = tr["expression"].as_str().unwrap();
            let k = e
                .split(&format!("/{name}/"))
                .nth(1)
                .unwrap()
                .split(')')
                .next()
                .unwrap();
            assert!(keys.contains(&k), "trigger {e} names no item");
        }
    }
    assert_eq!(checked, 8);
    assert_eq!(status["metrics"]["lifeboat_check_state"], 0);
    assert_eq!(status["metrics"]["lifeboat_rescue_copy_current"], 1);
    let copy_age = status["metrics"]["lifeboat_rescue_copy_age_seconds"]
        .as_i64()
        .unwrap();
    assert!((3600..3700).contains(&copy_age), "{copy_age}");
    for key in ["lifeboat.rescue_copy_age", "lifeboat.rescue_copy_current"] {
        let item = items.iter().find(|i| i["key"] == key).unwrap();
        assert_eq!(item["triggers"].as_array().map(Vec::len), Some(1), "{key}");
    }
    assert_eq!(status["metrics"]["lifeboat_layout_drift"], 0);
    assert_eq!(status["metrics"]["lifeboat_backup_verified"], 1);
    let age = status["metrics"]["lifeboat_rescue_age_seconds"]
        .as_i64()
        .unwrap();
    assert!((7200..7300).contains(&age), "{age}");
}

/// docs/icinga2: the CheckCommand's command and arguments, as Icinga would
/// build them, give the plugin line; compound durations pass through.
#[test]
fn icinga_check_command_runs() {
    let s = Scratch::new("cli-icinga");
    let cfg = healthy_state(&s);
    let conf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/icinga2/lifeboat.conf"),
    )
    .unwrap();
    let quoted =
        |l: &str| -> Vec<String> { l.split('"').skip(1).step_by(2).map(String::from).collect() };
    let command = conf
        .lines()
        .find(|l| l.trim_start().starts_with("command = ["))
        .unwrap();
    let mut argv = quoted(command);
    let flags: Vec<String> = conf
        .lines()
        .filter(|l| l.trim_start().starts_with("\"--") && l.contains("= {"))
        .map(|l| quoted(l)[0].clone())
        .collect();
    assert_eq!(flags, ["--warn-age", "--crit-age", "--config", "--live"]);
    let values = [("--warn-age", "1h"), ("--crit-age", "1d12h")];
    for (f, v) in values {
        argv.extend([f.to_string(), v.to_string()]);
    }
    argv.extend(["--config".to_string(), cfg.display().to_string()]);
    let line = argv
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let (code, out) = run_doc_command(&line, &cfg);
    // The image (2 h) and the backup (3 h) are older than 1h: WARNING.
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("LIFEBOAT WARNING - "), "{out}");
    assert!(
        out.contains("rescue_age=") && out.contains(";3600;129600"),
        "{out}"
    );
}

/// A program that exits without reading its stdin (a notify command that
/// ignores the JSON) does not kill lifeboat with SIGPIPE: the notice (a
/// failed unit whose `systemctl status`, from a stand-in systemctl, is
/// 200 KB) is more than a pipe holds, so the write meets a closed pipe.
#[test]
fn a_command_that_ignores_its_stdin_does_not_kill_lifeboat() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("cli-sigpipe");
    let bin = s.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let systemctl = bin.join("systemctl");
    std::fs::write(
        &systemctl,
        "#!/bin/sh\n[ \"$1\" = show ] && { echo 0; exit 0; }\nhead -c 200000 /dev/zero | tr '\\0' x\n",
    )
    .unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = s.join("lifeboat.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[notify]\ncommand = \"exit 0\"\n",
            s.join("state").display()
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new(lifeboat())
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "notify",
            "--failed-unit",
            "x.service",
        ])
        .env("PATH", path)
        .env_remove("LIFEBOAT_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("sent: command exit 0"), "{text}");
}

/// `status --prometheus` on a fixture state folder: to stdout without
/// monitor.textfile_dir, into DIR/lifeboat.prom with it (and nothing on
/// stdout); both parse with a real Prometheus text parser.
#[test]
fn status_prometheus_to_stdout_and_textfile() {
    let s = Scratch::new("cli-prometheus");
    let cfg = healthy_state(&s);
    let c = cfg.to_str().unwrap();
    let parse = |text: &str| {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        scrape
            .samples
            .into_iter()
            .map(|x| match x.value {
                prometheus_parse::Value::Gauge(v) => (x.metric, v),
                other => panic!("{}: {other:?}", x.metric),
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (code, out, err) = run_lifeboat(["--config", c, "status", "--prometheus"]);
    assert_eq!(code, 0, "{err}");
    let m = parse(&out);
    assert_eq!(m["lifeboat_check_state"], 0.0);
    assert_eq!(m["lifeboat_layout_drift"], 0.0);
    assert_eq!(m["lifeboat_backup_verified"], 1.0);
    assert!(
        (7200.0..7300.0).contains(&m["lifeboat_rescue_age_seconds"]),
        "{m:?}"
    );

    let dir = s.join("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text = text.replacen(
        "[backup]",
        &format!("[monitor]\ntextfile_dir = \"{}\"\n[backup]", dir.display()),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let (code, out, err) = run_lifeboat(["--config", c, "status", "--prometheus"]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "", ""));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["lifeboat.prom"]);
    let m2 = parse(&std::fs::read_to_string(dir.join("lifeboat.prom")).unwrap());
    assert_eq!(m2.keys().collect::<Vec<_>>(), m.keys().collect::<Vec<_>>());
}

/// A `backup verify` that finds damage tells `[notify] command`, and
/// keeps its own exit code (1) and message.
#[test]
fn verify_damage_is_notified() {
    let s = Scratch::new("cli-verify-notify");
    let b = s.join("backup");
    std::fs::create_dir_all(b.join("20261126T025000Z")).unwrap();
    std::fs::write(b.join("20261126T025000Z/generation.json"), b"{bad").unwrap();
    let cfg = s.join("lifeboat.toml");
    let d = s.join("").display().to_string();
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{d}/state\"\n[backup]\ndestination = \"{}\"\n[notify]\n\
             command = \"echo $LIFEBOAT_EVENT > {d}/event; cat > {d}/in.json\"\n",
            b.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_lifeboat(["--config", cfg.to_str().unwrap(), "backup", "verify"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("lifeboat: error: backup damaged: generation 20261126T025000Z"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(s.join("event")).unwrap(),
        "verify-failed\n"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.join("in.json")).unwrap()).unwrap();
    let summary = j["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!("backup in {} is damaged: generation", b.display())),
        "{summary}"
    );
    assert!(
        j["detail"]
            .as_str()
            .unwrap()
            .starts_with("damaged generation 20261126T025000Z:\n"),
        "{j}"
    );
}

/// Debian's signed shim and GRUB, unpacked by scripts/install-deps.sh.
const SB_ROOT: &str = "/var/cache/lifeboat-test/secureboot/root";

/// `rescue.secure_boot_root` alone (no flag) puts shim and the signed GRUB
/// on the ISO: a host whose signed loaders live elsewhere gets a Secure
/// Boot image from the scheduled rebuild too (which builds from the same
/// configuration), and the inputs record the loaders so that it stays
/// current.
#[test]
fn the_configured_secure_boot_root_reaches_the_build() {
    assert!(
        Path::new(SB_ROOT)
            .join("usr/lib/shim/shimx64.efi.signed")
            .is_file(),
        "{SB_ROOT} lacks the signed shim: run scripts/install-deps.sh"
    );
    let s = Scratch::new("cli-sb-root");
    let cfg = s.join("lifeboat.toml");
    let out = s.join("out");
    std::fs::write(
        &cfg,
        format!(
            "[rescue]\noutput = \"{}\"\nsecure_boot_root = \"{SB_ROOT}\"\n",
            out.display()
        ),
    )
    .unwrap();
    let (code, stdout, err) = run_lifeboat(["--config", cfg.to_str().unwrap(), "mkrescue"]);
    assert_eq!(code, 0, "{stdout}{err}");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("rescue.json")).unwrap()).unwrap();
    assert_eq!(record["secure_boot"]["uefi_loader"], "shim", "{record}");
    assert!(
        record["inputs"]["secure_boot_loaders"].is_string(),
        "{record}"
    );
    let listing = sh(&format!(
        "xorriso -indev '{}' -find / -type f 2>/dev/null",
        out.join("lifeboat-rescue.iso").display()
    ));
    assert!(listing.contains("'/.disk/info'"), "{listing}");
}
