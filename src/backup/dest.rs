//! Backup destinations: a local directory (or mounted disk), or an NFS or
//! CIFS share that lifeboat mounts for the duration of the command.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::exec::Cmd;

/// A parsed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local(PathBuf),
    /// `nfs://host/export/path`: the export is mounted, then `subdir` used.
    Nfs {
        host: String,
        export: String,
    },
    /// `cifs://host/share/sub/dir`.
    Cifs {
        host: String,
        share: String,
        subdir: String,
    },
    /// `usb`: the LIFEBOAT-DATA partition of a `mkrescue --usb` disk,
    /// found by its label; backups go into its `backup` folder.
    Usb,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target> {
        if let Some((engine, _)) = super::engine::Repo::split(text) {
            bail!(
                "{text} is a {} repository, not a backup folder: this command reads backup folders only",
                engine.tool()
            );
        }
        if let Some(rest) = text.strip_prefix("nfs://") {
            let (host, path) = rest.split_once('/').with_context(|| {
                format!("bad destination {text:?}: expected nfs://HOST/EXPORT/PATH")
            })?;
            if host.is_empty() || path.is_empty() {
                bail!("bad destination {text:?}: expected nfs://HOST/EXPORT/PATH");
            }
            return Ok(Target::Nfs {
                host: host.to_string(),
                export: format!("/{}", path.trim_end_matches('/')),
            });
        }
        if let Some(rest) = text
            .strip_prefix("cifs://")
            .or_else(|| text.strip_prefix("smb://"))
        {
            let mut parts = rest.splitn(3, '/');
            let host = parts.next().unwrap_or_default();
            let share = parts.next().unwrap_or_default();
            let subdir = parts.next().unwrap_or_default().trim_matches('/');
            if host.is_empty() || share.is_empty() {
                bail!("bad destination {text:?}: expected cifs://HOST/SHARE[/PATH]");
            }
            return Ok(Target::Cifs {
                host: host.to_string(),
                share: share.to_string(),
                subdir: subdir.to_string(),
            });
        }
        if text == "usb" {
            return Ok(Target::Usb);
        }
        if text.contains("://") {
            bail!("unsupported destination {text:?}: use a directory, nfs://HOST/EXPORT/PATH or cifs://HOST/SHARE/PATH");
        }
        if text.is_empty() {
            bail!("empty destination");
        }
        Ok(Target::Local(PathBuf::from(text)))
    }

    /// The mount command for a network share onto `mountpoint`.
    pub fn mount_command(&self, mountpoint: &Path, options: Option<&str>) -> Option<Cmd> {
        let (fstype, source) = match self {
            Target::Local(_) => return None,
            // NFS: the whole path is mounted; the server decides where the
            // export starts.
            Target::Nfs { host, export } => ("nfs", format!("{host}:{export}")),
            Target::Cifs { host, share, .. } => ("cifs", format!("//{host}/{share}")),
            // Found by label when it is opened.
            Target::Usb => return None,
        };
        Some(
            Cmd::new("mount")
                .args(["-t", fstype, "-o"])
                .arg(share_options(options))
                .arg(source)
                .arg(mountpoint),
        )
    }
}

/// Options every share is mounted with: whoever else writes to it cannot
/// plant a set-id program, a device node or an executable that root would
/// honour. They come last, where mount(8) lets them win over the user's.
pub const SHARE_OPTIONS: &str = "nosuid,nodev,noexec";

/// The user's mount options (without those that would undo
/// [`SHARE_OPTIONS`]), then [`SHARE_OPTIONS`].
fn share_options(user: Option<&str>) -> String {
    let mut out: Vec<&str> = Vec::new();
    for o in user
        .unwrap_or_default()
        .split(',')
        .filter(|o| !o.is_empty())
    {
        if matches!(o, "suid" | "dev" | "exec" | "defaults") {
            log::warn!(
                "mount option {o:?} ignored: backup shares are always mounted {SHARE_OPTIONS}"
            );
        } else {
            out.push(o);
        }
    }
    out.push(SHARE_OPTIONS);
    out.join(",")
}

/// Mounts the one LIFEBOAT-DATA partition plugged in (ext4, with
/// [`SHARE_OPTIONS`]) at `mountpoint`, a folder of this process only.
fn usb_mount_command(mountpoint: &Path, options: Option<&str>) -> Result<Cmd> {
    let dev = crate::rescue::usb::find_data_partition()?;
    Ok(Cmd::new("mount")
        .args(["-t", "ext4", "-o"])
        .arg(share_options(options))
        .arg(dev)
        .arg(mountpoint))
}

/// An open destination: its directory, and the mount that goes away with it.
pub struct Destination {
    pub path: PathBuf,
    mount: Option<PathBuf>,
    pub spec: String,
}

impl Destination {
    /// Opens `spec`; `create` makes a missing local directory (for writing).
    pub fn open(spec: &str, mount_options: Option<&str>, create: bool) -> Result<Destination> {
        let target = Target::parse(spec)?;
        match &target {
            Target::Local(p) => {
                if create {
                    std::fs::create_dir_all(p)
                        .with_context(|| format!("cannot create backup folder {}", p.display()))?;
                } else if !p.is_dir() {
                    bail!("{} is not a backup folder (no such directory)", p.display());
                }
                Ok(Destination {
                    path: p.clone(),
                    mount: None,
                    spec: spec.to_string(),
                })
            }
            _ => {
                let mnt = PathBuf::from(format!("/run/lifeboat/dest-{}", std::process::id()));
                std::fs::create_dir_all(&mnt)
                    .with_context(|| format!("creating mount point {}", mnt.display()))?;
                let cmd = match target.mount_command(&mnt, mount_options) {
                    Some(cmd) => cmd,
                    None => usb_mount_command(&mnt, mount_options).inspect_err(|_| {
                        let _ = std::fs::remove_dir(&mnt);
                    })?,
                };
                if let Err(e) = cmd.run() {
                    let _ = std::fs::remove_dir(&mnt);
                    return Err(e.context(format!("cannot mount backup destination {spec}")));
                }
                let mut dest = Destination {
                    path: mnt.clone(),
                    mount: Some(mnt.clone()),
                    spec: spec.to_string(),
                };
                match &target {
                    Target::Cifs { subdir, .. } if !subdir.is_empty() => {
                        dest.path = mnt.join(subdir);
                    }
                    Target::Usb => dest.path = mnt.join(crate::rescue::usb::DATA_BACKUP_DIR),
                    _ => {}
                }
                if create {
                    std::fs::create_dir_all(&dest.path)
                        .with_context(|| format!("cannot create backup folder {spec}"))?;
                } else if !dest.path.is_dir() {
                    bail!("{spec} is not a backup folder (no such directory)");
                }
                Ok(dest)
            }
        }
    }
}

impl Drop for Destination {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            match Cmd::new("umount").arg(&m).run() {
                // Never delete a directory that is still a mount point.
                Ok(_) => {
                    let _ = std::fs::remove_dir(&m);
                }
                Err(e) => log::warn!("could not unmount {}: {e:#}", m.display()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse() {
        let cases: Vec<(&str, Option<Target>)> = vec![
            ("/srv/backup", Some(Target::Local("/srv/backup".into()))),
            (
                "nfs://nas/export/lifeboat/",
                Some(Target::Nfs {
                    host: "nas".into(),
                    export: "/export/lifeboat".into(),
                }),
            ),
            (
                "cifs://nas/backups/host1",
                Some(Target::Cifs {
                    host: "nas".into(),
                    share: "backups".into(),
                    subdir: "host1".into(),
                }),
            ),
            ("nfs://nas", None),
            ("cifs://nas", None),
            ("ftp://x/y", None),
            ("restic:/srv/repo", None),
            ("borg:ssh://h/./r", None),
            ("", None),
            ("usb", Some(Target::Usb)),
            ("./usb", Some(Target::Local("./usb".into()))),
        ];
        for (text, want) in cases {
            assert_eq!(Target::parse(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn mount_commands() {
        let t = Target::parse("nfs://nas/export/lb").unwrap();
        let cmd = t
            .mount_command(Path::new("/run/m"), Some("vers=4.2"))
            .unwrap();
        assert!(
            cmd.to_string()
                .ends_with("mount -t nfs -o vers=4.2,nosuid,nodev,noexec nas:/export/lb /run/m"),
            "{cmd}"
        );
        let t = Target::parse("cifs://nas/share/sub").unwrap();
        let cmd = t.mount_command(Path::new("/run/m"), None).unwrap();
        assert!(
            cmd.to_string()
                .ends_with("mount -t cifs -o nosuid,nodev,noexec //nas/share /run/m"),
            "{cmd}"
        );
        // The user's options cannot undo the three.
        let cmd = t
            .mount_command(
                Path::new("/run/m"),
                Some("suid,credentials=/root/c,dev,exec,defaults,,ro"),
            )
            .unwrap();
        assert!(
            cmd.to_string().ends_with(
                "mount -t cifs -o credentials=/root/c,ro,nosuid,nodev,noexec //nas/share /run/m"
            ),
            "{cmd}"
        );
        assert!(Target::parse("/x")
            .unwrap()
            .mount_command(Path::new("/m"), None)
            .is_none());
    }
}
