//! Shared-library closure of ELF programs, found by reading their dynamic
//! sections (no `ldd`: it runs the program's loader, which is unsafe on
//! untrusted files and impossible for a foreign architecture).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use goblin::elf::Elf;

/// What the loader needs to know about one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfDeps {
    pub is_64: bool,
    pub machine: u16,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

/// Reads the dependency information of `path`; `None` when it is not ELF.
pub fn read_deps(path: &Path) -> Result<Option<ElfDeps>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let elf = Elf::parse(&bytes).with_context(|| format!("parsing ELF file {}", path.display()))?;
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(Some(ElfDeps {
        is_64: elf.is_64,
        machine: elf.header.e_machine,
        interpreter: elf.interpreter.map(str::to_string),
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
    }))
}

/// Finds libraries the way the dynamic loader does: RPATH (when there is no
/// RUNPATH), RUNPATH, the directories of /etc/ld.so.conf, then the defaults.
#[derive(Debug, Clone)]
pub struct LibResolver {
    root: PathBuf,
    conf_dirs: Vec<PathBuf>,
}

const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

impl LibResolver {
    /// A resolver for the system rooted at `/`.
    pub fn host() -> LibResolver {
        LibResolver::with_root(Path::new("/"))
    }

    /// A resolver for a system tree at `root` (paths inside stay absolute).
    pub fn with_root(root: &Path) -> LibResolver {
        let mut conf_dirs = Vec::new();
        read_ld_so_conf(root, Path::new("/etc/ld.so.conf"), &mut conf_dirs, 0);
        for d in DEFAULT_DIRS {
            let d = PathBuf::from(d);
            if !conf_dirs.contains(&d) {
                conf_dirs.push(d);
            }
        }
        LibResolver {
            root: root.to_path_buf(),
            conf_dirs,
        }
    }

    /// The directories searched after RPATH/RUNPATH, in order.
    pub fn search_dirs(&self) -> &[PathBuf] {
        &self.conf_dirs
    }

    fn host_path(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }

    /// Resolves one library name needed by an object at `origin_dir`.
    fn resolve(&self, name: &str, deps: &ElfDeps, origin_dir: &Path) -> Option<PathBuf> {
        if name.contains('/') {
            return Some(PathBuf::from(name));
        }
        let expand =
            |d: &String| PathBuf::from(d.replace("$ORIGIN", &origin_dir.to_string_lossy()));
        let mut dirs: Vec<PathBuf> = Vec::new();
        if deps.runpath.is_empty() {
            dirs.extend(deps.rpath.iter().map(expand));
        }
        dirs.extend(deps.runpath.iter().map(expand));
        dirs.extend(self.conf_dirs.iter().cloned());
        dirs.into_iter().map(|d| d.join(name)).find(|candidate| {
            // Skip a library of another class or machine (a 32-bit libc in
            // /lib, say), as the loader does.
            matches!(read_deps(&self.host_path(candidate)),
                Ok(Some(d)) if d.is_64 == deps.is_64 && d.machine == deps.machine)
        })
    }

    /// Every library (and loader) that the `programs` need, transitively,
    /// as absolute paths inside the system. Scripts are skipped (their
    /// interpreter must be listed by the caller).
    pub fn closure(&self, programs: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
        let mut libs = BTreeSet::new();
        let mut queue: VecDeque<PathBuf> = programs.iter().cloned().collect();
        let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
        while let Some(obj) = queue.pop_front() {
            if !seen.insert(obj.clone()) {
                continue;
            }
            let deps = match read_deps(&self.host_path(&obj))? {
                Some(d) => d,
                None => continue,
            };
            let origin = obj.parent().unwrap_or(Path::new("/")).to_path_buf();
            if let Some(interp) = &deps.interpreter {
                libs.insert(PathBuf::from(interp));
            }
            for name in &deps.needed {
                match self.resolve(name, &deps, &origin) {
                    Some(lib) => {
                        libs.insert(lib.clone());
                        queue.push_back(lib);
                    }
                    None => bail!(
                        "{} needs {name}, which is not found in {}",
                        obj.display(),
                        self.conf_dirs
                            .iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        }
        Ok(libs)
    }

    /// Finds a library by file name in the search directories (for the
    /// libraries that programs dlopen, such as libgcc_s.so.1).
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        self.conf_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| self.host_path(p).exists())
    }
}

fn read_ld_so_conf(root: &Path, file: &Path, out: &mut Vec<PathBuf>, depth: u32) {
    if depth > 8 {
        return;
    }
    let host = root.join(file.strip_prefix("/").unwrap_or(file));
    let Ok(text) = std::fs::read_to_string(&host) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            let pattern = if pattern.starts_with('/') {
                pattern.to_string()
            } else {
                format!(
                    "{}/{pattern}",
                    file.parent().unwrap_or(Path::new("/")).display()
                )
            };
            let host_pattern = root.join(pattern.trim_start_matches('/'));
            let mut files: Vec<PathBuf> = glob::glob(&host_pattern.to_string_lossy())
                .map(|g| g.filter_map(Result::ok).collect())
                .unwrap_or_default();
            files.sort();
            for f in files {
                let inside = Path::new("/").join(f.strip_prefix(root).unwrap_or(&f));
                read_ld_so_conf(root, &inside, out, depth + 1);
            }
        } else if line.starts_with('/') {
            let d = PathBuf::from(line);
            if !out.contains(&d) {
                out.push(d);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The libraries `ldd` lists for `program`, canonicalized.
    fn ldd(program: &str) -> BTreeSet<PathBuf> {
        let out = Command::new("ldd").arg(program).output().unwrap();
        assert!(out.status.success(), "ldd {program}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let path = match l.split_once("=>") {
                    Some((_, rest)) => rest.trim().split(' ').next()?.to_string(),
                    None => l.split(' ').next()?.to_string(),
                };
                path.starts_with('/')
                    .then(|| std::fs::canonicalize(path).unwrap())
            })
            .collect()
    }

    fn ours(program: &str) -> BTreeSet<PathBuf> {
        let resolver = LibResolver::host();
        let prog = crate::exec::which(program).unwrap();
        resolver
            .closure(&[prog])
            .unwrap()
            .into_iter()
            .map(|p| std::fs::canonicalize(p).unwrap())
            .collect()
    }

    #[test]
    fn closure_equals_ldd_for_recovery_tools() {
        for tool in ["lvm", "mdadm", "cryptsetup", "mkfs.xfs", "sgdisk"] {
            if crate::exec::which(tool).is_none() {
                panic!("{tool} is not installed: run scripts/install-deps.sh");
            }
            let path = crate::exec::which(tool).unwrap();
            assert_eq!(
                ours(tool),
                ldd(&path.to_string_lossy()),
                "library closure of {tool}"
            );
        }
    }

    #[test]
    fn scripts_and_static_programs_have_no_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(read_deps(&script).unwrap(), None);
        let busybox = crate::exec::which("busybox").unwrap();
        let deps = read_deps(&busybox).unwrap().unwrap();
        assert!(deps.needed.is_empty() && deps.interpreter.is_none());
    }

    #[test]
    fn ld_so_conf_includes_are_followed() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("ld.so.conf.d")).unwrap();
        std::fs::write(
            etc.join("ld.so.conf"),
            "include ld.so.conf.d/*.conf\n/opt/lib # own\n",
        )
        .unwrap();
        std::fs::write(etc.join("ld.so.conf.d/b.conf"), "/b/lib\n").unwrap();
        std::fs::write(etc.join("ld.so.conf.d/a.conf"), "/a/lib\n").unwrap();
        let r = LibResolver::with_root(root.path());
        let dirs: Vec<_> = r.search_dirs().iter().take(3).cloned().collect();
        assert_eq!(
            dirs,
            [PathBuf::from("/a/lib"), "/b/lib".into(), "/opt/lib".into()]
        );
    }
}
