//! Borg in the rescue image. Borg is a Python program: the image gets the
//! interpreter its script names (`#!/usr/bin/python3`), the interpreter's
//! standard library less what a restore never imports (tests, IDLE, Tk,
//! build and packaging files, compiled caches), and the packages outside
//! the standard library that `borg.archiver` imports (Borg itself with its
//! C extensions, msgpack), with Borg's package metadata (its script finds
//! its entry point there). The caller adds the shared libraries of the
//! interpreter and of every extension module through the ELF closure.
//!
//! Which packages Borg imports is asked of the host's interpreter at build
//! time; the paths it answers are checked to be absolute folders or files
//! below `/usr` or `/opt` before they are read.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::tree::Tree;
use crate::exec::Cmd;

/// Folders (or name prefixes) of the standard library left out.
const STDLIB_SKIP: &[&str] = &[
    "__pycache__",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "distutils",
    "config-",
    "site-packages",
    "dist-packages",
];

/// What the host's interpreter says about Borg.
#[derive(Debug, Deserialize)]
struct Probe {
    /// The standard library folder (`/usr/lib/python3.11`).
    stdlib: PathBuf,
    /// Top-level packages or modules outside it that Borg imports.
    packages: Vec<PathBuf>,
    /// Borg's package metadata folder (`borgbackup-1.2.4.egg-info`).
    metadata: Option<PathBuf>,
}

const PROBE: &str = r#"
import sys, json, sysconfig
import borg.archiver
stdlib = sysconfig.get_paths()["stdlib"].rstrip("/")
roots = [p.rstrip("/") for p in sys.path if p and p.rstrip("/") != stdlib]
tops = set()
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if not f or f.startswith(stdlib + "/"):
        continue
    for r in roots:
        if f.startswith(r + "/"):
            tops.add(r + "/" + f[len(r) + 1:].split("/")[0])
            break
meta = None
try:
    import importlib.metadata as md
    meta = str(md.distribution("borgbackup")._path)
except Exception:
    pass
print(json.dumps({"stdlib": stdlib, "packages": sorted(tops), "metadata": meta}))
"#;

/// The interpreter of script `script` from its `#!` line, if it is Python.
pub fn interpreter(script: &Path) -> Result<Option<PathBuf>> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(script)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading {}", script.display()))?;
    Ok(shebang(&head[..n]))
}

/// `/usr/bin/python3` from `#!/usr/bin/python3 -s\n...`; None for other
/// interpreters, `env` indirections and relative paths.
fn shebang(head: &[u8]) -> Option<PathBuf> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&c| c == b'\n')?];
    let line = std::str::from_utf8(line).ok()?;
    let prog = line.split_whitespace().next()?;
    let name = prog.rsplit('/').next()?;
    (prog.starts_with('/') && name.starts_with("python")).then(|| PathBuf::from(prog))
}

/// A path the probe answered: absolute, normal, below /usr or /opt.
fn checked(p: &Path) -> Result<&Path> {
    use std::path::Component;
    let normal = p
        .components()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_)));
    if !p.is_absolute() || !normal || !(p.starts_with("/usr") || p.starts_with("/opt")) {
        bail!(
            "the Python interpreter named an unexpected path {}",
            p.display()
        );
    }
    Ok(p)
}

/// Adds Borg's interpreter, standard library and packages for `borg` (the
/// host's script) to `tree`; returns the ELF files whose libraries the
/// image needs (the interpreter and every extension module).
pub fn add_borg(tree: &mut Tree, borg: &Path) -> Result<Vec<PathBuf>> {
    let python = interpreter(borg)?.with_context(|| {
        format!(
            "{} does not start with a #!/.../python line: cannot tell which Python Borg needs",
            borg.display()
        )
    })?;
    let out = Cmd::new(python.to_string_lossy())
        .args(["-I", "-c", PROBE])
        .read()
        .with_context(|| format!("asking {} which modules Borg imports", python.display()))?;
    let probe: Probe = serde_json::from_str(out.trim())
        .with_context(|| format!("reading the module list from {}", python.display()))?;
    tree.host_path(&python)?;
    let mut elf = vec![std::fs::canonicalize(&python)
        .with_context(|| format!("resolving {}", python.display()))?];
    add_filtered(tree, checked(&probe.stdlib)?, true, &mut elf)?;
    for p in probe.packages.iter().chain(probe.metadata.iter()) {
        add_filtered(tree, checked(p)?, false, &mut elf)?;
    }
    Ok(elf)
}

/// `host` (a folder, recursively, or a file) into the tree at its own
/// path; with `stdlib`, the [`STDLIB_SKIP`] names left out. Caches are
/// always left out; extension modules (`.so`) are collected in `elf`.
fn add_filtered(tree: &mut Tree, host: &Path, stdlib: bool, elf: &mut Vec<PathBuf>) -> Result<()> {
    let meta =
        std::fs::symlink_metadata(host).with_context(|| format!("reading {}", host.display()))?;
    if !meta.is_dir() {
        if is_extension(host) {
            elf.push(host.to_path_buf());
        }
        tree.host_path(host)?;
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(host)
        .with_context(|| format!("reading {}", host.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", host.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let skip = if stdlib {
            STDLIB_SKIP
                .iter()
                .any(|s| name == *s || (s.ends_with('-') && name.starts_with(s)))
        } else {
            name == "__pycache__"
        };
        if !skip {
            add_filtered(tree, &e.path(), stdlib, elf)?;
        }
    }
    Ok(())
}

fn is_extension(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".so") || n.contains(".so."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_comes_from_the_script_line() {
        assert_eq!(
            shebang(b"#!/usr/bin/python3\n# EASY-INSTALL"),
            Some(PathBuf::from("/usr/bin/python3"))
        );
        assert_eq!(
            shebang(b"#!/usr/bin/python3.11 -s\nimport x"),
            Some(PathBuf::from("/usr/bin/python3.11"))
        );
        assert_eq!(shebang(b"#!/usr/bin/env python3\n"), None);
        assert_eq!(shebang(b"#!python3\n"), None);
        assert_eq!(shebang(b"#!/bin/sh\n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
        assert_eq!(shebang(b"#!/usr/bin/python3"), None, "no end of line");
    }

    #[test]
    fn only_plain_paths_below_usr_or_opt_are_read() {
        for ok in ["/usr/lib/python3.11", "/opt/borg/lib/borg"] {
            assert!(checked(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "usr/lib/python3",
            "/etc/shadow",
            "/usr/../etc",
            "/root/.local/lib/borg",
        ] {
            assert!(checked(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn extension_modules_are_found_by_name() {
        assert!(is_extension(Path::new(
            "/usr/lib/python3/dist-packages/borg/item.cpython-311-x86_64-linux-gnu.so"
        )));
        assert!(is_extension(Path::new("/usr/lib/x/libfoo.so.1")));
        assert!(!is_extension(Path::new("/usr/lib/python3.11/os.py")));
    }
}
