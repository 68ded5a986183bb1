//! The dry-run gate holds only if every change recovery makes passes it: a
//! source audit of src/recover (every file, including ones added later).
//! A command that is run must be marked `.mutating(gate)` or be listed
//! below as one that only reads; a raw write (file, folder, process,
//! ioctl) must be listed below with the reason it needs no gate. Adding a
//! mutating command or a write without the gate fails this test.

use std::path::Path;

/// Commands that only read, as a distinctive part of their statement.
const READ_ONLY: &[(&str, &str)] = &[
    (
        "boot.rs",
        r#"parse_efibootmgr(&Cmd::new("efibootmgr").read()?)"#,
    ),
    ("mod.rs", r#"Cmd::new("blkid")"#),
    (
        "storage.rs",
        r#"Cmd::new("mdadm").args([mode, "--export", dev]).run()"#,
    ),
    ("storage.rs", r#".args(["luksUUID", dev])"#),
    (
        "storage.rs",
        r#"lvm(&["vgs", "--noheadings", "-o", "vg_uuid", vg])"#,
    ),
];

/// Raw writes that need no gate, with the reason.
const UNGATED_WRITES: &[(&str, &str, &str)] = &[
    (
        "journal.rs",
        "create_dir_all(dir)",
        "the journal, which a dry run never marks",
    ),
    (
        "journal.rs",
        "write_atomic(",
        "the journal, which a dry run never marks",
    ),
    (
        "disk.rs",
        "OpenOptions::new()",
        "open_exclusive, called behind the gate",
    ),
    (
        "disk.rs",
        "blkrrpart(",
        "BLKRRPART in reread_and_wait, behind the gate",
    ),
    (
        "storage.rs",
        "std::fs::write(&file, patched)",
        "a private temporary file",
    ),
    (
        "restore.rs",
        "std::fs::write(&p, data)",
        "a private temporary copy of the layout",
    ),
    (
        "keys.rs",
        "OpenOptions::new()",
        "the terminal, to ask for a passphrase",
    ),
    (
        "prove.rs",
        "OpenOptions::new()",
        "the no-write proof's own sparse files",
    ),
    (
        "prove.rs",
        "remove_file(",
        "the no-write proof's own sparse files",
    ),
    (
        "fixup.rs",
        "create_dir(d)",
        "Chroot's mount points, behind the gate",
    ),
    (
        "fixup.rs",
        "remove_dir(d)",
        "Chroot's own mount points, removed again",
    ),
    (
        "mod.rs",
        "create_dir_all(&in_system)",
        "the report, written only when live",
    ),
    (
        "mod.rs",
        "write_atomic(",
        "the report, written only when live",
    ),
    (
        "mount.rs",
        ".run()",
        "TempMount: a private mount inside gated work",
    ),
    (
        "mount.rs",
        "Cmd::new(\"umount\").arg(self.path())",
        "TempMount's own unmount",
    ),
];

/// Calls that change something outside the process.
const WRITES: &[&str] = &[
    "fs::write(",
    "write_atomic(",
    "fs::copy(",
    "create_dir_all(",
    "create_dir(",
    "remove_file(",
    "remove_dir(",
    "remove_dir_all(",
    "fs::rename(",
    "OpenOptions::new()",
    "set_permissions(",
    "symlink(",
    "process::Command",
    "libc::ioctl",
    "blkrrpart(",
];

/// Calls that run a command.
const RUNS: &[&str] = &[".run()", ".read()", ".json(", ".json::<", ".output_any()"];

/// The source of a file without its test module.
fn production(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// Every statement (text up to a `;`) of the production code of src/recover
/// that runs a command or writes, with its file name.
fn findings() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/recover");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "gate_audit.rs" || path.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for stmt in production(&text).split(';') {
            let code: String = stmt
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("");
            let runs = RUNS.iter().any(|r| code.contains(r))
                && (code.contains("Cmd") || code.contains("lvm(&["));
            let writes = WRITES
                .iter()
                .any(|w| code.contains(w) && !code.contains("gate."));
            if (runs && !code.contains(".mutating(")) || writes {
                out.push((name.clone(), code));
            }
        }
    }
    out
}

fn listed(file: &str, code: &str) -> bool {
    READ_ONLY
        .iter()
        .any(|(f, needle)| *f == file && code.contains(needle))
        || UNGATED_WRITES
            .iter()
            .any(|(f, needle, _)| *f == file && code.contains(needle))
}

#[test]
fn every_change_in_recovery_passes_the_gate() {
    let unlisted: Vec<String> = findings()
        .into_iter()
        .filter(|(f, code)| !listed(f, code))
        .map(|(f, code)| format!("{f}: {code}"))
        .collect();
    assert!(
        unlisted.is_empty(),
        "commands run without .mutating(&gate) or writes without the gate (mark them, or \
         list a command that only reads in READ_ONLY):\n{}",
        unlisted.join("\n")
    );
}

#[test]
fn the_audit_catches_an_ungated_command_and_write() {
    let stmt = |s: &str| {
        let code: String = s.lines().map(str::trim).collect();
        let runs = RUNS.iter().any(|r| code.contains(r)) && code.contains("Cmd");
        let writes = WRITES
            .iter()
            .any(|w| code.contains(w) && !code.contains("gate."));
        ((runs && !code.contains(".mutating(")) || writes) && !listed("mod.rs", &code)
    };
    assert!(stmt(r#"Cmd::new("wipefs").args(["-a", disk]).run()?"#));
    assert!(stmt("std::fs::write(root.join(\"etc/hosts\"), text)?"));
    assert!(!stmt(
        r#"Cmd::new("wipefs").args(["-a", disk]).mutating(&ctx.gate).run()?"#
    ));
    assert!(!stmt("ctx.gate.write_file(&p, text.as_bytes(), 0o644)?"));
}

#[test]
fn recovery_never_prints() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/recover");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "gate_audit.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, line) in production(&text).lines().enumerate() {
            let l = line.trim_start();
            let prints = [
                "println!",
                "print!(",
                "eprintln!",
                "eprint!(",
                "stdout()",
                "stderr()",
            ];
            if !l.starts_with("//") && prints.iter().any(|p| l.contains(p)) {
                found.push(format!("{name}:{}: {l}", i + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/recover prints (show it through recover::Console, or log it):\n{}",
        found.join("\n")
    );
}
