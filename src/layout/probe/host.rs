//! The host: name, operating system, architecture, kernel, firmware.

use std::path::Path;

use super::ctx::read_opt;
use super::{sysfs, CaptureOptions};
use crate::layout::*;

/// The newest kernel release with modules in a system tree.
fn newest_modules_dir(root: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by(|a, b| sysfs::natural_cmp(a, b));
    names.pop()
}

pub(super) fn collect_host(opts: &CaptureOptions, firmware: Firmware) -> Host {
    let r = |p: &str| read_opt(&opts.root.join(p)).map(|s| s.trim().to_string());
    let sr = |p: &str| read_opt(&opts.system_file(p)).map(|s| s.trim().to_string());
    let os = sr("etc/os-release")
        .or_else(|| sr("usr/lib/os-release"))
        .unwrap_or_default();
    let field = |key: &str| {
        os.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    Host {
        hostname: match &opts.system_root {
            Some(_) => sr("etc/hostname").unwrap_or_default(),
            None => r("proc/sys/kernel/hostname").unwrap_or_default(),
        },
        os_pretty_name: field("PRETTY_NAME"),
        os_id: field("ID"),
        os_version_id: field("VERSION_ID"),
        arch: std::env::consts::ARCH.to_string(),
        kernel: match &opts.system_root {
            Some(root) => newest_modules_dir(root).unwrap_or_default(),
            None => r("proc/sys/kernel/osrelease").unwrap_or_default(),
        },
        firmware,
    }
}
