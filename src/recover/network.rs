//! The old network configuration onto the new interfaces, in the restored
//! system.
//!
//! The configuration keeps its interface names; what changes is the
//! hardware under them. So every old MAC address is replaced by its new
//! interface's (ifupdown `hwaddress`, netplan `macaddress`, NetworkManager
//! `mac-address`, systemd-networkd `MACAddress=`, udev persistent-net
//! `ATTR{address}`), and, on a system with systemd-udevd, a `.link` file
//! gives each new interface its old name by its new MAC, unless a rewritten
//! `.link` file or udev rule already does. Every change is reported.
//!
//! Files below the restored tree are reached through a directory handle
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` and replaced with
//! `O_EXCL|O_NOFOLLOW` temporary files renamed over them: a symlink in the
//! restored tree never leads a write outside it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::exec::Gate;
use crate::plan::nic::NicPlan;

/// Folders holding network configuration, with the file names taken there.
const CONFIG_DIRS: &[(&str, &[&str])] = &[
    ("etc/network", &["interfaces"]),
    ("etc/network/interfaces.d", &[""]),
    ("etc/netplan", &[".yaml"]),
    ("etc/NetworkManager/system-connections", &[""]),
    ("etc/systemd/network", &[".network", ".link", ".netdev"]),
    ("etc/udev/rules.d", &["net.rules"]),
];

const UDEVD: &[&str] = &["lib/systemd/systemd-udevd", "usr/lib/systemd/systemd-udevd"];

/// Replaces whole MAC addresses (any case; the replacement in the case of
/// what it replaces). Returns the new text and the pairs replaced.
pub fn replace_macs(text: &str, macs: &[(String, String)]) -> (String, Vec<(String, String)>) {
    let mut out = String::with_capacity(text.len());
    let mut done = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    let boundary = |c: Option<&u8>| c.map_or(true, |c| !(c.is_ascii_hexdigit() || *c == b':'));
    'outer: while i < b.len() {
        if i + 17 <= b.len() && (i == 0 || boundary(b.get(i - 1))) && boundary(b.get(i + 17)) {
            let cand = &text[i..i + 17];
            for (old, new) in macs {
                if cand.eq_ignore_ascii_case(old) {
                    let upper = cand.bytes().any(|c| c.is_ascii_uppercase());
                    out.push_str(&if upper {
                        new.to_ascii_uppercase()
                    } else {
                        new.to_ascii_lowercase()
                    });
                    done.push((old.clone(), new.clone()));
                    i += 17;
                    continue 'outer;
                }
            }
        }
        let ch = text[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    (out, done)
}

/// The `.link` file that names the interface with MAC `mac` `name`.
pub fn link_file(name: &str, mac: &str, old_mac: &str) -> String {
    format!(
        "# Written by lifeboat recover: this machine's interface {mac} takes the\n\
         # name and configuration of {name} (was {old_mac}).\n\
         [Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n"
    )
}

/// Rewrites the network configuration below `root` for `nics`. Returns one
/// line per change, and the files changed (as `/etc/...`).
pub fn rewrite(root: &Path, nics: &NicPlan, gate: &Gate) -> Result<(Vec<String>, Vec<String>)> {
    let mut out = Rewrite {
        tree: Beneath::open(root)?,
        root,
        gate,
        report: Vec::new(),
        files: Vec::new(),
        pinned: Vec::new(),
    };
    out.replace_in_configs(nics)?;
    out.pin_names(nics)?;
    Ok((out.report, out.files))
}

/// A rewrite of the tree at `root` and what it did: lines for the report,
/// files changed, and the new MACs a .link file or udev rule already names.
struct Rewrite<'a> {
    tree: Beneath,
    root: &'a Path,
    gate: &'a Gate,
    report: Vec<String>,
    files: Vec<String>,
    pinned: Vec<String>,
}

/// The interfaces whose MAC changed.
fn changed(nics: &NicPlan) -> impl Iterator<Item = &crate::plan::nic::NicPair> {
    nics.pairs
        .iter()
        .filter(|p| !p.old.mac.eq_ignore_ascii_case(&p.new.mac))
}

impl Rewrite<'_> {
    /// Old MACs replaced by the new ones in every configuration file.
    fn replace_in_configs(&mut self, nics: &NicPlan) -> Result<()> {
        let macs: Vec<(String, String)> = changed(nics)
            .map(|p| (p.old.mac.clone(), p.new.mac.clone()))
            .collect();
        for (dir, suffixes) in CONFIG_DIRS {
            for name in self.tree.list(dir) {
                if !suffixes.iter().any(|s| name.ends_with(s)) || name.starts_with('.') {
                    continue;
                }
                let rel = format!("{dir}/{name}");
                let Some((text, mode)) = self.tree.read(&rel)? else {
                    continue;
                };
                let (new, done) = replace_macs(&text, &macs);
                if done.is_empty() {
                    continue;
                }
                if self
                    .gate
                    .allow(format_args!("write {}", self.root.join(&rel).display()))
                {
                    self.tree.write(&rel, new.as_bytes(), mode)?;
                }
                for (o, n) in &done {
                    self.report.push(format!("/{rel}: MAC {o} -> {n}"));
                    if name.ends_with(".link") || dir.ends_with("rules.d") {
                        self.pinned.push(n.clone());
                    }
                }
                self.files.push(format!("/{rel}"));
            }
        }
        Ok(())
    }

    /// A `.link` file giving each new interface its old name, unless a
    /// rewritten file already does (or there is no udevd to read it).
    fn pin_names(&mut self, nics: &NicPlan) -> Result<()> {
        let udevd = UDEVD.iter().any(|p| self.tree.exists(p));
        for p in changed(nics) {
            if self
                .pinned
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&p.new.mac))
            {
                continue;
            }
            if !udevd {
                self.report.push(format!(
                    "{}: no systemd-udevd in the restored system to give {} this name; \
                 the kernel names it",
                    p.old.name, p.new.mac
                ));
                continue;
            }
            let rel = format!("etc/systemd/network/10-lifeboat-{}.link", p.old.name);
            if self
                .gate
                .allow(format_args!("write {}", self.root.join(&rel).display()))
            {
                let text = link_file(&p.old.name, &p.new.mac, &p.old.mac);
                self.tree.write(&rel, text.as_bytes(), 0o644)?;
            }
            self.report.push(format!(
                "/{rel}: written, the interface {} is named {}",
                p.new.mac, p.old.name
            ));
            self.files.push(format!("/{rel}"));
        }
        Ok(())
    }
}

/// A directory handle below which files are read and replaced without
/// following symlinks or leaving the tree.
struct Beneath {
    root: OwnedFd,
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS);

impl Beneath {
    fn open(root: &Path) -> Result<Beneath> {
        let root = rustix::fs::open(
            root,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening {}", root.display()))?;
        Ok(Beneath { root })
    }

    fn at(&self, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
        rustix::fs::openat2(
            &self.root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE,
        )
    }

    /// Whether `rel` is there, a symlink included (not followed): Debian's
    /// `systemd-udevd` is a symlink to `udevadm`.
    fn exists(&self, rel: &str) -> bool {
        let (dir, name) = rel.rsplit_once('/').unwrap_or((".", rel));
        self.at(dir, OFlags::PATH | OFlags::DIRECTORY)
            .is_ok_and(|d| {
                rustix::fs::statat(&d, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
            })
    }

    /// Names in folder `rel` (none when it is missing or a symlink).
    fn list(&self, rel: &str) -> Vec<String> {
        let Ok(fd) = self.at(rel, OFlags::DIRECTORY | OFlags::RDONLY) else {
            return Vec::new();
        };
        let Ok(dir) = rustix::fs::Dir::new(fd) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type() == rustix::fs::FileType::RegularFile)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The text and mode of regular file `rel`; `None` when it is missing,
    /// a symlink or not a regular file.
    fn read(&self, rel: &str) -> Result<Option<(String, u32)>> {
        let Ok(fd) = self.at(rel, OFlags::RDONLY | OFlags::NOFOLLOW) else {
            return Ok(None);
        };
        let st = rustix::fs::fstat(&fd).with_context(|| format!("reading /{rel}"))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Ok(None);
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(1 << 20)
            .read_to_string(&mut text)
            .with_context(|| format!("reading /{rel}"))?;
        Ok(Some((text, st.st_mode & 0o7777)))
    }

    /// Replaces (or creates) `rel` with `data`: a new file in the same
    /// folder, `O_EXCL|O_NOFOLLOW` under an unpredictable name, renamed
    /// over it.
    fn write(&self, rel: &str, data: &[u8], mode: u32) -> Result<()> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or((".", rel));
        let dirfd = self
            .at(dir, OFlags::DIRECTORY | OFlags::RDONLY)
            .or_else(|_| {
                self.mkdirs(dir)?;
                self.at(dir, OFlags::DIRECTORY | OFlags::RDONLY)
            })
            .with_context(|| format!("opening /{dir} in the restored system"))?;
        let mut h = RandomState::new().build_hasher();
        h.write(rel.as_bytes());
        let tmp = format!(".{name}.lifeboat-{:016x}", h.finish());
        let fd = rustix::fs::openat(
            &dirfd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .with_context(|| format!("creating /{dir}/{tmp}"))?;
        let mut f = std::fs::File::from(fd);
        let done = f
            .write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                rustix::fs::fchmod(&f, Mode::from_raw_mode(mode))?;
                rustix::fs::renameat(&dirfd, tmp.as_str(), &dirfd, name)?;
                Ok(())
            });
        if let Err(e) = done {
            let _ = rustix::fs::unlinkat(&dirfd, tmp.as_str(), rustix::fs::AtFlags::empty());
            return Err(e.context(format!("replacing /{rel} in the restored system")));
        }
        Ok(())
    }

    /// Creates the folders of `rel` one by one, each beneath the root.
    fn mkdirs(&self, rel: &str) -> rustix::io::Result<()> {
        let mut path = String::new();
        for part in rel.split('/') {
            if part.is_empty() || part == "." || part == ".." {
                return Err(rustix::io::Errno::INVAL);
            }
            let parent = if path.is_empty() {
                ".".to_string()
            } else {
                path.clone()
            };
            let pfd = self.at(&parent, OFlags::DIRECTORY | OFlags::RDONLY)?;
            match rustix::fs::mkdirat(&pfd, part, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e),
            }
            path = if path.is_empty() {
                part.to_string()
            } else {
                format!("{path}/{part}")
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::NetInterface;
    use crate::plan::nic::NicPair;
    use std::os::unix::fs::symlink;

    const OLD: &str = "52:54:00:12:34:56";
    const NEW: &str = "52:54:00:ab:cd:ef";

    fn plan() -> NicPlan {
        let nic = |name: &str, mac: &str, pci: &str| NetInterface {
            name: name.into(),
            mac: mac.into(),
            driver: Some("virtio_net".into()),
            pci_path: Some(pci.into()),
        };
        NicPlan {
            pairs: vec![NicPair {
                old: nic("ens3", OLD, "0000:00:03.0"),
                new: nic("eth0", NEW, "0000:00:04.0"),
                reason: "same driver virtio_net, PCI order".into(),
            }],
            unmatched: vec![],
            unused: vec![],
        }
    }

    /// Each configuration format, as the tools write it, naming `ens3` by
    /// its MAC (and `ens4`, whose MAC stays).
    const FILES: &[(&str, &str)] = &[
        (
            "etc/network/interfaces",
            "auto lo\niface lo inet loopback\n\nallow-hotplug ens3\niface ens3 inet static\n    \
             address 192.0.2.10/24\n    hwaddress ether 52:54:00:12:34:56\n\n\
             iface ens4 inet dhcp\n    hwaddress ether 52:54:00:12:34:57\n",
        ),
        (
            "etc/netplan/01-netcfg.yaml",
            "network:\n  version: 2\n  ethernets:\n    lan:\n      match:\n        \
             macaddress: 52:54:00:12:34:56\n      set-name: ens3\n      addresses: [192.0.2.10/24]\n",
        ),
        (
            "etc/NetworkManager/system-connections/Wired.nmconnection",
            "[connection]\nid=Wired\ntype=ethernet\ninterface-name=ens3\n\n[ethernet]\n\
             mac-address=52:54:00:12:34:56\n\n[ipv4]\naddress1=192.0.2.10/24\nmethod=manual\n",
        ),
        (
            "etc/systemd/network/20-wired.network",
            "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nAddress=192.0.2.10/24\n",
        ),
        (
            "etc/udev/rules.d/70-persistent-net.rules",
            "# PCI device 0x1af4:0x1000 (virtio-pci)\nSUBSYSTEM==\"net\", ACTION==\"add\", \
             DRIVERS==\"?*\", ATTR{address}==\"52:54:00:12:34:56\", ATTR{type}==\"1\", \
             KERNEL==\"eth*\", NAME=\"ens3\"\n",
        ),
    ];

    fn tree(files: &[(&str, &str)], udevd: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (rel, text) in files {
            let p = t.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        if udevd {
            // As Debian 12 has it: /lib -> usr/lib, and systemd-udevd a
            // symlink to udevadm.
            let p = t.path().join("usr/lib/systemd/systemd-udevd");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink("/bin/udevadm", p).unwrap();
            std::os::unix::fs::symlink("usr/lib", t.path().join("lib")).unwrap();
        }
        t
    }

    fn read(t: &tempfile::TempDir, rel: &str) -> String {
        std::fs::read_to_string(t.path().join(rel)).unwrap()
    }

    #[test]
    fn macs_replaced_whole_and_in_their_case() {
        let macs = [(OLD.to_string(), NEW.to_string())];
        let (t, d) = replace_macs(
            "a 52:54:00:12:34:56 b 52:54:00:12:34:567 c 52:54:00:12:34:5 d 52:54:00:12:34:56\n",
            &macs,
        );
        assert_eq!(
            t,
            "a 52:54:00:ab:cd:ef b 52:54:00:12:34:567 c 52:54:00:12:34:5 d 52:54:00:ab:cd:ef\n"
        );
        assert_eq!(d.len(), 2);
        let (t, _) = replace_macs("mac-address=52:54:00:12:34:56\n", &macs);
        assert_eq!(t, "mac-address=52:54:00:ab:cd:ef\n");
        let lettered = [("52:54:00:0a:0b:0c".to_string(), NEW.to_string())];
        let (t, _) = replace_macs("mac-address=52:54:00:0A:0B:0C\n", &lettered);
        assert_eq!(t, "mac-address=52:54:00:AB:CD:EF\n");
    }

    #[test]
    fn every_format_is_rewritten_and_reported() {
        for (rel, text) in FILES {
            let t = tree(&[(rel, text)], true);
            let (report, changed) = rewrite(t.path(), &plan(), &Gate::live()).unwrap();
            let got = read(&t, rel);
            assert_eq!(got, text.replace(OLD, NEW), "{rel}");
            assert!(
                got.contains("52:54:00:12:34:57") || !text.contains(":57"),
                "{rel}"
            );
            assert_eq!(report[0], format!("/{rel}: MAC {OLD} -> {NEW}"), "{rel}");
            let pins = rel.ends_with(".rules");
            let link = t.path().join("etc/systemd/network/10-lifeboat-ens3.link");
            assert_eq!(
                link.exists(),
                !pins,
                "{rel}: a .link only when nothing pins the name"
            );
            if !pins {
                assert_eq!(
                    read(&t, "etc/systemd/network/10-lifeboat-ens3.link"),
                    link_file("ens3", NEW, OLD)
                );
                assert_eq!(
                    report[1],
                    "/etc/systemd/network/10-lifeboat-ens3.link: written, the interface \
                     52:54:00:ab:cd:ef is named ens3"
                );
            }
            assert_eq!(changed.len(), report.len(), "{rel}");
        }
    }

    #[test]
    fn without_udevd_the_report_says_so_and_dry_run_writes_nothing() {
        let t = tree(FILES, false);
        let (report, _) = rewrite(t.path(), &plan(), &Gate::dry_run(|_| ())).unwrap();
        for (rel, text) in FILES {
            assert_eq!(&read(&t, rel), text, "dry run wrote {rel}");
        }
        assert_eq!(report.len(), FILES.len(), "{report:#?}");
        let t = tree(&FILES[..1], false);
        let (report, _) = rewrite(t.path(), &plan(), &Gate::live()).unwrap();
        assert_eq!(
            report[1],
            "ens3: no systemd-udevd in the restored system to give 52:54:00:ab:cd:ef this name; \
             the kernel names it"
        );
        assert!(!t.path().join("etc/systemd/network").exists());
    }

    #[test]
    fn symlinks_in_the_restored_tree_lead_nowhere_outside() {
        let outside = tempfile::tempdir().unwrap();
        let o = outside.path();
        std::fs::create_dir_all(o.join("netplan")).unwrap();
        std::fs::write(o.join("netplan/x.yaml"), format!("macaddress: {OLD}\n")).unwrap();
        std::fs::write(o.join("interfaces"), format!("hwaddress ether {OLD}\n")).unwrap();
        std::fs::create_dir_all(o.join("network")).unwrap();
        let snapshot = || {
            crate::exec::Cmd::new("sh")
                .arg("-c")
                .arg(format!(
                    "cd '{}' && find . -printf '%p %m %y %s\\n' | sort && cat netplan/x.yaml interfaces",
                    o.display()
                ))
                .read()
                .unwrap()
        };
        let before = snapshot();
        let t = tree(&[], true);
        let etc = t.path().join("etc");
        std::fs::create_dir_all(etc.join("network")).unwrap();
        symlink(o.join("netplan"), etc.join("netplan")).unwrap();
        symlink(o.join("interfaces"), etc.join("network/interfaces")).unwrap();
        std::fs::create_dir_all(etc.join("systemd")).unwrap();
        symlink(o.join("network"), etc.join("systemd/network")).unwrap();
        let err = rewrite(t.path(), &plan(), &Gate::live()).unwrap_err();
        assert!(
            format!("{err:#}").contains("/etc/systemd/network in the restored system"),
            "{err:#}"
        );
        assert_eq!(snapshot(), before, "something outside the tree changed");
        assert!(std::fs::symlink_metadata(etc.join("netplan"))
            .unwrap()
            .is_symlink());
    }
}
