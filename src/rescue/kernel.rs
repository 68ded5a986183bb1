//! Choosing the kernel for the rescue image and closing its module set over
//! modules.dep.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone)]
pub struct Kernel {
    pub image: PathBuf,
    /// Release string (`6.1.0-56-amd64`), read from the image itself.
    pub version: String,
    pub modules_dir: PathBuf,
}

/// Picks the kernel: `explicit`, else the running kernel's image in
/// `boot_dir`, else the newest `vmlinuz-*` there.
pub fn find_kernel(
    explicit: Option<&Path>,
    boot_dir: &Path,
    modules_root: &Path,
) -> Result<Kernel> {
    let image = match explicit {
        Some(p) => {
            if !p.is_file() {
                bail!(
                    "kernel image {} does not exist; give an installed kernel with --kernel",
                    p.display()
                );
            }
            p.to_path_buf()
        }
        None => {
            let running = nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default();
            let candidate = boot_dir.join(format!("vmlinuz-{running}"));
            if candidate.is_file() {
                candidate
            } else {
                newest_kernel(boot_dir)?.with_context(|| {
                    format!(
                        "no kernel image in {}: install one (apt install linux-image-amd64) or give --kernel PATH",
                        boot_dir.display()
                    )
                })?
            }
        }
    };
    let version = bzimage_version(&image)?;
    let modules_dir = modules_root.join(&version);
    if !modules_dir.join("modules.dep").is_file() {
        bail!(
            "modules of kernel {version} not found ({} has no modules.dep); install the kernel's \
             modules package or run depmod {version}",
            modules_dir.display()
        );
    }
    Ok(Kernel {
        image,
        version,
        modules_dir,
    })
}

fn newest_kernel(boot_dir: &Path) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(boot_dir) else {
        return Ok(None);
    };
    let mut kernels: Vec<(Vec<u64>, String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("vmlinuz-")?.to_string();
            Some((version_key(&version), version, e.path()))
        })
        .filter(|(_, _, p)| p.is_file())
        .collect();
    kernels.sort();
    Ok(kernels.pop().map(|(_, _, p)| p))
}

/// Sort key for kernel versions: the numbers in order (`6.1.0-56` → [6,1,0,56]).
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect()
}

/// Reads the release string from an x86 bzImage's setup header.
pub fn bzimage_version(image: &Path) -> Result<String> {
    let mut head = vec![0u8; 0x10000];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(image)
            .with_context(|| format!("opening kernel image {}", image.display()))?;
        let mut total = 0;
        loop {
            let r = f.read(&mut head[total..])?;
            if r == 0 || total + r == head.len() {
                break total + r;
            }
            total += r;
        }
    };
    head.truncate(n);
    let bad = || {
        anyhow::anyhow!(
            "{} is not an x86 bzImage kernel (no version in its setup header); give a kernel with --kernel",
            image.display()
        )
    };
    if head.len() < 0x210 || &head[0x202..0x206] != b"HdrS" {
        return Err(bad());
    }
    let offset = u16::from_le_bytes([head[0x20e], head[0x20f]]) as usize + 0x200;
    let text = head.get(offset..).ok_or_else(bad)?;
    let end = text
        .iter()
        .position(|&b| b == 0 || b == b' ')
        .ok_or_else(bad)?;
    let version = std::str::from_utf8(&text[..end]).map_err(|_| bad())?;
    if version.is_empty() {
        return Err(bad());
    }
    Ok(version.to_string())
}

/// A kernel module name in canonical form (dashes become underscores).
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name_of(rel: &str) -> String {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let stem = file.split(".ko").next().unwrap_or(file);
    canonical(stem)
}

/// The module index of one kernel: modules.dep, modules.builtin, softdeps.
#[derive(Debug)]
pub struct ModuleIndex {
    pub dir: PathBuf,
    /// Module name → (path relative to `dir`, dependency names).
    modules: HashMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    softdeps: HashMap<String, Vec<String>>,
}

/// The modules chosen for an image.
#[derive(Debug, Default)]
pub struct ModuleSet {
    /// Module name → path relative to the modules directory.
    pub files: BTreeMap<String, String>,
    /// Asked-for modules the kernel has built in.
    pub builtin: BTreeSet<String>,
    /// Optional modules this kernel does not have.
    pub absent: BTreeSet<String>,
}

impl ModuleIndex {
    pub fn load(dir: &Path) -> Result<ModuleIndex> {
        let dep_path = dir.join("modules.dep");
        let deps = std::fs::read_to_string(&dep_path)
            .with_context(|| format!("reading {}", dep_path.display()))?;
        let mut modules = HashMap::new();
        for line in deps.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            let depends = rest.split_whitespace().map(module_name_of).collect();
            modules.insert(module_name_of(module), (module.to_string(), depends));
        }
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(module_name_of)
            .collect();
        let mut softdeps: HashMap<String, Vec<String>> = HashMap::new();
        for line in std::fs::read_to_string(dir.join("modules.softdep"))
            .unwrap_or_default()
            .lines()
        {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let wanted = words
                .filter(|w| !w.ends_with(':'))
                .map(canonical)
                .collect::<Vec<_>>();
            softdeps
                .entry(canonical(module))
                .or_default()
                .extend(wanted);
        }
        Ok(ModuleIndex {
            dir: dir.to_path_buf(),
            modules,
            builtin,
            softdeps,
        })
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    pub fn has(&self, name: &str) -> bool {
        self.modules.contains_key(&canonical(name))
    }

    /// Closes `required` and `optional` over modules.dep and softdeps. A
    /// required module that is neither a module nor built in is an error.
    pub fn closure(&self, required: &[String], optional: &[String]) -> Result<ModuleSet> {
        let mut set = ModuleSet::default();
        let missing: Vec<&String> = required
            .iter()
            .filter(|m| !self.has(m) && !self.is_builtin(m))
            .collect();
        if !missing.is_empty() {
            bail!(
                "kernel in {} lacks module{} {} (neither built in nor in modules.dep); \
                 install the kernel's full modules package or choose another kernel with --kernel",
                self.dir.display(),
                if missing.len() > 1 { "s" } else { "" },
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut stack: Vec<String> = required
            .iter()
            .chain(optional)
            .map(|m| canonical(m))
            .collect();
        while let Some(name) = stack.pop() {
            if set.files.contains_key(&name) || set.builtin.contains(&name) {
                continue;
            }
            match self.modules.get(&name) {
                Some((rel, deps)) => {
                    set.files.insert(name.clone(), rel.clone());
                    stack.extend(deps.iter().cloned());
                    if let Some(soft) = self.softdeps.get(&name) {
                        stack.extend(soft.iter().filter(|s| self.has(s)).cloned());
                    }
                }
                None if self.is_builtin(&name) => {
                    set.builtin.insert(name);
                }
                None => {
                    set.absent.insert(name);
                }
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_modules() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
             kernel/lib/crc16.ko:\nkernel/fs/mbcache.ko:\nkernel/fs/jbd2/jbd2.ko:\n\
             kernel/drivers/md/dm-crypt.ko.xz: kernel/drivers/md/dm-mod.ko.xz\n\
             kernel/drivers/md/dm-mod.ko.xz:\nkernel/crypto/crc32c_generic.ko:\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/block/virtio_blk.ko\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("modules.softdep"),
            "# comment\nsoftdep ext4 pre: crc32c_generic\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn closure_follows_deps_softdeps_and_builtins() {
        let dir = fake_modules();
        let idx = ModuleIndex::load(dir.path()).unwrap();
        let set = idx
            .closure(
                &["ext4".into()],
                &["dm-crypt".into(), "virtio_blk".into(), "nosuch".into()],
            )
            .unwrap();
        let names: Vec<&str> = set.files.keys().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "crc16",
                "crc32c_generic",
                "dm_crypt",
                "dm_mod",
                "ext4",
                "jbd2",
                "mbcache"
            ]
        );
        assert_eq!(set.files["dm_mod"], "kernel/drivers/md/dm-mod.ko.xz");
        assert!(set.builtin.contains("virtio_blk"));
        assert!(set.absent.contains("nosuch"));
    }

    #[test]
    fn missing_required_module_names_it() {
        let dir = fake_modules();
        let idx = ModuleIndex::load(dir.path()).unwrap();
        let err = idx
            .closure(&["xfs".into(), "ext4".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lacks module xfs"), "{err}");
    }

    #[test]
    fn version_order_is_numeric() {
        assert!(version_key("6.10.0-1-amd64") > version_key("6.9.12-3-amd64"));
        assert!(version_key("6.1.0-56-amd64") > version_key("6.1.0-9-amd64"));
    }

    #[test]
    fn installed_kernel_is_found_with_its_modules() {
        let k = find_kernel(None, Path::new("/boot"), Path::new("/lib/modules"))
            .expect("a kernel is installed (scripts/install-deps.sh installs linux-image-amd64)");
        assert!(k.image.to_string_lossy().contains(&k.version), "{k:?}");
        let idx = ModuleIndex::load(&k.modules_dir).unwrap();
        let set = idx
            .closure(&["ext4".into(), "dm_crypt".into(), "raid1".into()], &[])
            .unwrap();
        assert!(set.files.contains_key("dm_mod") || set.builtin.contains("dm_mod"));
        assert!(set.files.contains_key("md_mod") || set.builtin.contains("md_mod"));
    }

    #[test]
    fn non_kernel_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("vmlinuz-1");
        std::fs::write(&f, vec![0u8; 4096]).unwrap();
        let err = bzimage_version(&f).unwrap_err().to_string();
        assert!(err.contains("not an x86 bzImage"), "{err}");
        let err = find_kernel(Some(&dir.path().join("nope")), dir.path(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
