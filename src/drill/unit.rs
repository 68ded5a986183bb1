//! How a drill sees the recovered system reach its boot target: a one-shot
//! systemd unit placed into the scratch copy only (never into the backup),
//! which waits for the end of the boot, writes one report line to a virtio
//! serial port and powers the guest off. Without that port (a kept scratch
//! disk booted by hand) it does nothing.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::qemu::REPORT_PORT;

pub const UNIT_NAME: &str = "lifeboat-drill-report.service";
/// The script the unit runs, below the recovered root.
pub const SCRIPT: &str = "etc/lifeboat/drill-report.sh";
/// The first word of the report line.
pub const MARKER: &str = "LIFEBOAT-DRILL-BOOTED";

/// The unit file, ordered after `target` and wanted by it.
pub fn unit_text(target: &str) -> String {
    format!(
        "# Placed by `lifeboat drill` into the scratch copy of a recovered system only:\n\
         # reports the end of the boot to the drill and powers the guest off.\n\
         [Unit]\n\
         Description=lifeboat drill: report that the system reached {target}\n\
         DefaultDependencies=no\n\
         After={target}\n\
         \n\
         [Service]\n\
         Type=exec\n\
         ExecStart=/bin/sh /{SCRIPT} {target}\n\
         \n\
         [Install]\n\
         WantedBy={target}\n"
    )
}

/// The script: finds the port by its name in sysfs (no udev rule needed),
/// waits until systemd has finished starting, reports, powers off.
pub fn script_text() -> String {
    format!(
        r#"#!/bin/sh
# lifeboat drill: report the end of the boot over the virtio port
# {REPORT_PORT}, then power off. Without that port: nothing.
target=$1
port=""
n=0
while [ -z "$port" ] && [ "$n" -lt 60 ]; do
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = {REPORT_PORT} ] && port=/dev/${{p##*/}}
    done
    [ -n "$port" ] || sleep 1
    n=$((n + 1))
done
[ -n "$port" ] || exit 0
state=$(systemctl is-system-running --wait 2>/dev/null)
active=$(systemctl is-active "$target" 2>/dev/null)
failed=$(systemctl list-units --state=failed --plain --no-legend 2>/dev/null |
    while read -r unit _; do printf '%s,' "$unit"; done)
firmware=bios
[ -d /sys/firmware/efi ] && firmware=uefi
echo "{MARKER} target=$target active=$active state=$state firmware=$firmware kernel=$(uname -r) failed=${{failed%,}}" > "$port"
sync
systemctl poweroff
"#
    )
}

/// What the recovered system reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootReport {
    pub target: String,
    /// `systemctl is-active TARGET`: `active` when it was reached.
    pub active: String,
    /// `systemctl is-system-running`: `running`, `degraded`...
    pub state: String,
    pub firmware: String,
    pub kernel: String,
    pub failed_units: Vec<String>,
}

impl BootReport {
    pub fn reached(&self) -> bool {
        self.active == "active"
    }
}

/// The last report line in `text` (the port's output).
pub fn parse_report(text: &str) -> Option<BootReport> {
    let line = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(MARKER))?;
    let get = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    Some(BootReport {
        target: get("target"),
        active: get("active"),
        state: get("state"),
        firmware: get("firmware"),
        kernel: get("kernel"),
        failed_units: get("failed")
            .split(',')
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

fn open_dir(parent: &impl AsFd, name: &str, create: bool) -> Result<OwnedFd> {
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Err(rustix::io::Errno::NOENT) if create => {
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755))
                .with_context(|| format!("creating folder {name}"))?;
            rustix::fs::openat(parent, name, flags, Mode::empty())
                .with_context(|| format!("opening folder {name}"))
        }
        r => r.with_context(|| format!("opening folder {name} (not a folder, or a link?)")),
    }
}

/// Opens `path` (relative, plain components) below `root`, no link followed.
fn open_below(root: &OwnedFd, path: &str, create: bool) -> Result<OwnedFd> {
    let mut dir = rustix::fs::openat(
        root,
        ".",
        OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        dir = open_dir(&dir, c, create).with_context(|| format!("in {path}"))?;
    }
    Ok(dir)
}

/// Writes `data` as a new file `name` in `dir` (replacing one of an
/// earlier run; a link there is replaced, never followed).
fn write_new(dir: &OwnedFd, name: &str, data: &[u8], mode: u32) -> Result<()> {
    let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode))
        .with_context(|| format!("creating {name}"))?;
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, data).with_context(|| format!("writing {name}"))?;
    f.sync_all().with_context(|| format!("syncing {name}"))
}

/// The default target of the tree below `root` (the name the
/// `default.target` link points at), `multi-user.target` when unknown.
fn default_target(root: &OwnedFd) -> String {
    for dir in [
        "etc/systemd/system",
        "usr/lib/systemd/system",
        "lib/systemd/system",
    ] {
        let Ok(d) = open_below(root, dir, false) else {
            continue;
        };
        if let Ok(link) = rustix::fs::readlinkat(&d, "default.target", Vec::new()) {
            let link = link.to_string_lossy().into_owned();
            let name = link.rsplit('/').next().unwrap_or("").to_string();
            if name.ends_with(".target") && crate::names::component("target", &name).is_ok() {
                return name;
            }
        }
    }
    "multi-user.target".into()
}

/// Places the unit and its script into the system mounted at `root`:
/// the script under /etc/lifeboat, the unit under /etc/systemd/system,
/// enabled for the default target. Returns a note for the report.
pub fn plant(root: &Path) -> Result<String> {
    let root_fd = OwnedFd::from(crate::util::open_dir_nofollow(root)?);
    if open_below(&root_fd, "etc/systemd/system", false).is_err() {
        bail!(
            "the recovered system has no /etc/systemd/system: a drill sees only systemd systems boot"
        );
    }
    let target = default_target(&root_fd);
    let (script_dir, script_name) = SCRIPT.rsplit_once('/').expect("a path with a folder");
    let sd = open_below(&root_fd, script_dir, true)?;
    write_new(&sd, script_name, script_text().as_bytes(), 0o755)?;
    let units = open_below(&root_fd, "etc/systemd/system", false)?;
    write_new(&units, UNIT_NAME, unit_text(&target).as_bytes(), 0o644)?;
    let wants = open_dir(&units, &format!("{target}.wants"), true)?;
    let _ = rustix::fs::unlinkat(&wants, UNIT_NAME, AtFlags::empty());
    rustix::fs::symlinkat(format!("../{UNIT_NAME}"), &wants, UNIT_NAME)
        .with_context(|| format!("enabling {UNIT_NAME} for {target}"))?;
    Ok(format!(
        "drill: {UNIT_NAME} placed in the recovered system, wanted by {target}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_parsed() {
        let text = "noise\nLIFEBOAT-DRILL-BOOTED target=multi-user.target active=active \
                    state=degraded firmware=uefi kernel=6.1.0-50-amd64 failed=a.service,b.mount\n";
        let r = parse_report(text).unwrap();
        assert_eq!(r.target, "multi-user.target");
        assert!(r.reached());
        assert_eq!(r.state, "degraded");
        assert_eq!(r.firmware, "uefi");
        assert_eq!(r.kernel, "6.1.0-50-amd64");
        assert_eq!(r.failed_units, ["a.service", "b.mount"]);
        let none = parse_report("LIFEBOAT-DRILL-BOOTED target=x.target active=inactive state=starting firmware=bios kernel=k failed=\n").unwrap();
        assert!(!none.reached());
        assert!(none.failed_units.is_empty());
        assert_eq!(parse_report("booting...\nlogin:"), None);
    }

    #[test]
    fn unit_orders_after_its_target_without_a_cycle() {
        let u = unit_text("graphical.target");
        assert!(u.contains("DefaultDependencies=no\nAfter=graphical.target\n"));
        assert!(u.contains("WantedBy=graphical.target\n"));
        assert!(u.contains("ExecStart=/bin/sh /etc/lifeboat/drill-report.sh graphical.target\n"));
        let s = script_text();
        assert!(s.contains("= org.lifeboat.drill ]"));
        assert!(s.contains("port=/dev/${p##*/}"));
        assert!(s.contains("echo \"LIFEBOAT-DRILL-BOOTED target=$target"));
    }

    /// The unit lands in the tree, enabled for the tree's default target;
    /// a planted link where the script goes is replaced, and nothing
    /// outside the tree changes.
    #[test]
    fn plant_writes_below_the_root_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
        std::fs::create_dir_all(root.join("etc/lifeboat")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), "keep").unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/graphical.target",
            root.join("etc/systemd/system/default.target"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join(SCRIPT)).unwrap();
        let note = plant(&root).unwrap();
        assert!(note.contains("graphical.target"), "{note}");
        let unit =
            std::fs::read_to_string(root.join("etc/systemd/system").join(UNIT_NAME)).unwrap();
        assert_eq!(unit, unit_text("graphical.target"));
        let link = root
            .join("etc/systemd/system/graphical.target.wants")
            .join(UNIT_NAME);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../lifeboat-drill-report.service")
        );
        let script = root.join(SCRIPT);
        assert!(!std::fs::symlink_metadata(&script)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&script).unwrap(), script_text());
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "keep"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);

        // A link in place of a folder on the way is refused.
        let root2 = t.path().join("root2");
        std::fs::create_dir_all(root2.join("etc/systemd/system")).unwrap();
        std::os::unix::fs::symlink(&outside, root2.join("etc/lifeboat")).unwrap();
        assert!(plant(&root2).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1);

        // Not a systemd system.
        let root3 = t.path().join("root3");
        std::fs::create_dir_all(root3.join("etc")).unwrap();
        let e = plant(&root3).unwrap_err().to_string();
        assert!(e.contains("systemd"), "{e}");
    }
}
