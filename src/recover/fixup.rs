//! Repairs in the restored system: device names that changed, and the
//! initramfs, regenerated inside the new system.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exec::{Cmd, Gate};

/// Files that name devices.
pub const CONFIG_FILES: &[&str] = &[
    "etc/fstab",
    "etc/crypttab",
    "etc/mdadm/mdadm.conf",
    "etc/mdadm.conf",
    "etc/default/grub",
    "etc/initramfs-tools/conf.d/resume",
    "boot/grub/device.map",
    "boot/grub2/device.map",
];

/// Replaces whole device names: `/dev/sda1` is replaced, `/dev/sda10` is
/// not touched by the rule for `/dev/sda1`. Longer names go first.
pub fn replace_device_names(text: &str, replacements: &[(String, String)]) -> String {
    let mut rules: Vec<&(String, String)> = replacements.iter().collect();
    rules.sort_by_key(|(o, _)| std::cmp::Reverse(o.len()));
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    'outer: while i < bytes.len() {
        for (old, new) in &rules {
            if text[i..].starts_with(old.as_str()) {
                let next = bytes.get(i + old.len()).copied();
                let prev_ok = i == 0 || !is_name_char(bytes[i - 1]);
                let next_ok = next.map_or(true, |c| !is_name_char(c));
                if prev_ok && next_ok {
                    out.push_str(new);
                    i += old.len();
                    continue 'outer;
                }
            }
        }
        let ch = text[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'/' || c == b'.'
}

/// Rewrites the configuration files under `root`; returns the files changed.
pub fn fix_config(
    root: &Path,
    replacements: &[(String, String)],
    gate: &Gate,
) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for rel in CONFIG_FILES {
        let path = root.join(rel);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let new = replace_device_names(&text, replacements);
        if new != text {
            let mode = std::fs::metadata(&path).map(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.permissions().mode() & 0o7777
            })?;
            gate.write_file(&path, new.as_bytes(), mode)
                .with_context(|| format!("rewriting {}", path.display()))?;
            changed.push(format!("/{rel}"));
        }
    }
    Ok(changed)
}

/// The kernel file systems mounted into the new system for commands run in
/// a chroot, unmounted (deepest first) on drop; the mount points it had to
/// create are removed then, so the recovered system keeps only its own.
pub struct Chroot {
    gate: Gate,
    root: PathBuf,
    binds: Vec<PathBuf>,
    created: Vec<PathBuf>,
}

impl Chroot {
    pub fn enter(root: &Path, gate: &Gate) -> Result<Chroot> {
        let mut c = Chroot {
            gate: gate.clone(),
            root: root.to_path_buf(),
            binds: Vec::new(),
            created: Vec::new(),
        };
        // grub-probe finds devices through /proc/self/mountinfo and sysfs;
        // efibootmgr needs efivarfs, which a bind of /sys does not carry.
        let mounts: [(&str, &[&str]); 6] = [
            ("/dev", &["--bind", "/dev"]),
            ("/dev/pts", &["--bind", "/dev/pts"]),
            ("/proc", &["-t", "proc", "proc"]),
            ("/sys", &["--bind", "/sys"]),
            ("/sys/firmware/efi/efivars", &["-t", "efivarfs", "efivarfs"]),
            ("/run", &["-t", "tmpfs", "-o", "mode=0755", "tmpfs"]),
        ];
        for (dir, how) in mounts {
            if dir.ends_with("efivars") && !Path::new("/sys/firmware/efi").exists() {
                continue;
            }
            let dest = root.join(dir.trim_start_matches('/'));
            c.created.extend(create_dirs(root, &dest)?);
            Cmd::new("mount")
                .args(how)
                .arg(&dest)
                .mutating(gate)
                .run()
                .with_context(|| format!("mounting {dir} in the new system"))?;
            c.binds.push(dest);
        }
        Ok(c)
    }

    /// Runs `program args` inside the new system.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        // Nothing of the rescue's environment (LD_LIBRARY_PATH...) leaks in.
        Ok(Cmd::new("chroot")
            .arg(&self.root)
            .arg(program)
            .args(args)
            .clear_env()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", "/root")
            .env("TERM", "linux")
            .env("LANG", "C.UTF-8")
            .env("DM_DISABLE_UDEV", "1")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .mutating(&self.gate)
            .run()?
            .stdout_str())
    }

    /// Whether `program` exists in the new system (an absolute path or a
    /// name looked up in its sbin/bin folders).
    pub fn has(&self, program: &str) -> Option<String> {
        let candidates: Vec<String> = if program.starts_with('/') {
            vec![program.to_string()]
        } else {
            ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
                .iter()
                .map(|d| format!("{d}/{program}"))
                .collect()
        };
        candidates
            .into_iter()
            .find(|c| self.root.join(c.trim_start_matches('/')).exists())
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for b in self.binds.iter().rev() {
            if let Err(e) = Cmd::new("umount")
                .arg("-l")
                .arg(b)
                .mutating(&self.gate)
                .run()
            {
                log::warn!("could not unmount {}: {e:#}", b.display());
            }
        }
        // Only empty directories go (a failed unmount leaves one busy).
        for d in self.created.iter().rev() {
            if let Err(e) = std::fs::remove_dir(d) {
                log::warn!("could not remove the mount point {}: {e}", d.display());
            }
        }
    }
}

/// Creates `dest` and the missing folders above it, up to `root`; returns
/// the ones it created, outermost first.
fn create_dirs(root: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = dest
        .ancestors()
        .take_while(|a| *a != root && std::fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    for d in &missing {
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(missing)
}

/// The initramfs tool of the system at `root`, with its arguments.
fn initramfs_tool(root: &Path) -> Option<(String, Vec<&'static str>, &'static str)> {
    let find = |name: &str| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .map(|d| format!("{d}/{name}"))
            .find(|c| root.join(c.trim_start_matches('/')).exists())
    };
    if let Some(t) = find("update-initramfs") {
        Some((t, vec!["-u", "-k", "all"], "update-initramfs"))
    } else if let Some(t) = find("dracut") {
        Some((t, vec!["--force", "--regenerate-all"], "dracut"))
    } else {
        find("mkinitcpio").map(|t| (t, vec!["-P"], "mkinitcpio"))
    }
}

/// Regenerates the initramfs of the system at `root` with its own tool when
/// it does not fit the new disks (see [`initramfs_outdated`]), or always
/// with `force`.
pub fn regenerate_initramfs(
    root: &Path,
    drivers: &[String],
    configs_changed: &[String],
    force: bool,
    gate: &Gate,
) -> Result<String> {
    match initramfs_tool(root) {
        Some((tool, args, name)) => {
            let why = if force {
                "asked to".to_string()
            } else {
                match initramfs_outdated(root, drivers, configs_changed)? {
                    Some(why) => why,
                    None => {
                        return Ok(format!(
                            "initramfs kept: it has the drivers of the new disks ({}) and no configuration it holds changed",
                            drivers.join(", ")
                        ))
                    }
                }
            };
            log::info!("regenerating the initramfs: {why}");
            let chroot = Chroot::enter(root, gate)?;
            chroot
                .run(&tool, &args)
                .with_context(|| format!("regenerating the initramfs with {name}"))?;
            Ok(format!("initramfs regenerated with {name} ({why})"))
        }
        None if has_initramfs_images(&root.join("boot")) => anyhow::bail!(
            "the restored system boots with an initramfs but has no update-initramfs, dracut or \
             mkinitcpio to rebuild it"
        ),
        None => Ok("the restored system uses no initramfs: nothing to regenerate".into()),
    }
}

/// The initramfs images in `boot` with their kernel versions
/// (`initrd.img-VER`, `initramfs-VER.img`).
fn initramfs_images(boot: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(boot)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let ver = n.strip_prefix("initrd.img-").or_else(|| {
                        n.strip_prefix("initramfs-")
                            .and_then(|v| v.strip_suffix(".img"))
                    })?;
                    (!ver.ends_with("kdump") && !ver.contains("rescue"))
                        .then(|| (e.path(), ver.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Why the initramfs images of the system at `root` do not fit the new
/// disks: a configuration they hold changed, or they lack a driver of the
/// new disks. `None` when every image has what it needs.
pub fn initramfs_outdated(
    root: &Path,
    drivers: &[String],
    configs_changed: &[String],
) -> Result<Option<String>> {
    let embedded: Vec<&String> = configs_changed
        .iter()
        .filter(|f| {
            f.contains("crypttab")
                || f.contains("mdadm")
                || f.contains("fstab")
                || f.contains("resume")
                || f.contains("systemd/network/")
                || f.contains("udev/rules.d/")
        })
        .collect();
    if !embedded.is_empty() {
        return Ok(Some(format!(
            "{} changed",
            embedded
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let canon = |m: &str| m.replace('-', "_");
    for (image, ver) in initramfs_images(&root.join("boot")) {
        let bytes =
            std::fs::read(&image).with_context(|| format!("reading {}", image.display()))?;
        let names = match crate::cpio::list_initramfs(&bytes) {
            Ok(n) => n,
            Err(e) => return Ok(Some(format!("{} cannot be read ({e:#})", image.display()))),
        };
        let present: std::collections::BTreeSet<String> = names
            .iter()
            .filter_map(|n| {
                let file = n.rsplit('/').next()?;
                let stem = file.split(".ko").next()?;
                file.contains(".ko").then(|| canon(stem))
            })
            .collect();
        let builtin: std::collections::BTreeSet<String> =
            std::fs::read_to_string(root.join("lib/modules").join(&ver).join("modules.builtin"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.rsplit('/').next())
                .map(|f| canon(f.split(".ko").next().unwrap_or(f)))
                .collect();
        for d in drivers {
            let d = canon(d);
            if !present.contains(&d) && !builtin.contains(&d) {
                return Ok(Some(format!(
                    "{} lacks {d}, a driver of the new disks",
                    image.strip_prefix(root).unwrap_or(&image).display()
                )));
            }
        }
    }
    Ok(None)
}

/// Whether /boot holds initramfs images (initrd.img-*, initramfs-*.img).
fn has_initramfs_images(boot: &Path) -> bool {
    std::fs::read_dir(boot)
        .map(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("initrd") || n.starts_with("initramfs")
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_names_only() {
        let r = vec![
            ("/dev/sda1".to_string(), "/dev/nvme0n1p1".to_string()),
            ("/dev/sda".to_string(), "/dev/nvme0n1".to_string()),
        ];
        let text = "/dev/sda1 / ext4 defaults 0 1\n/dev/sda10 /x ext4 defaults 0 2\nGRUB_DISK=/dev/sda\nresume=/dev/sda1,x\n";
        assert_eq!(
            replace_device_names(text, &r),
            "/dev/nvme0n1p1 / ext4 defaults 0 1\n/dev/sda10 /x ext4 defaults 0 2\nGRUB_DISK=/dev/nvme0n1\nresume=/dev/nvme0n1p1,x\n"
        );
        assert_eq!(
            replace_device_names("UUID=abc / ext4", &r),
            "UUID=abc / ext4"
        );
    }

    #[test]
    fn initramfs_is_outdated_when_a_driver_is_missing_or_a_config_changed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::create_dir_all(r.join("lib/modules/6.1.0-9-amd64")).unwrap();
        std::fs::write(
            r.join("lib/modules/6.1.0-9-amd64/modules.builtin"),
            "kernel/drivers/scsi/sd_mod.ko\n",
        )
        .unwrap();
        let mut w = crate::cpio::CpioWriter::new(Vec::new(), 0);
        w.file(
            "usr/lib/modules/6.1.0-9-amd64/kernel/drivers/block/virtio_blk.ko",
            0o644,
            1,
            &mut &b"x"[..],
        )
        .unwrap();
        let image = zstd::bulk::compress(&w.finish().unwrap(), 3).unwrap();
        std::fs::write(r.join("boot/initrd.img-6.1.0-9-amd64"), image).unwrap();
        let ok = initramfs_outdated(r, &["virtio_blk".into(), "sd_mod".into()], &[]).unwrap();
        assert_eq!(ok, None);
        let why = initramfs_outdated(r, &["nvme".into()], &[])
            .unwrap()
            .unwrap();
        assert!(
            why.contains("boot/initrd.img-6.1.0-9-amd64 lacks nvme"),
            "{why}"
        );
        let why = initramfs_outdated(r, &[], &["/etc/crypttab".into()])
            .unwrap()
            .unwrap();
        assert!(why.contains("/etc/crypttab changed"), "{why}");
        assert_eq!(
            initramfs_outdated(r, &[], &["/etc/default/grub".into()]).unwrap(),
            None
        );
    }

    #[test]
    fn files_are_rewritten_in_place() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/fstab"),
            "/dev/vdb1 /data xfs defaults 0 0\n",
        )
        .unwrap();
        std::fs::write(root.path().join("etc/crypttab"), "c UUID=1 none luks\n").unwrap();
        let r = vec![("/dev/vdb1".to_string(), "/dev/sdc1".to_string())];
        assert!(fix_config(root.path(), &r, &Gate::dry_run(|_| ())).unwrap() == ["/etc/fstab"]);
        assert!(std::fs::read_to_string(root.path().join("etc/fstab"))
            .unwrap()
            .starts_with("/dev/vdb1"));
        assert_eq!(
            fix_config(root.path(), &r, &Gate::live()).unwrap(),
            ["/etc/fstab"]
        );
        assert_eq!(
            std::fs::read_to_string(root.path().join("etc/fstab")).unwrap(),
            "/dev/sdc1 /data xfs defaults 0 0\n"
        );
    }
}
