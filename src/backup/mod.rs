//! Backups: POSIX tar archives (one per file system per generation), a
//! manifest with a SHA-256 per file, full and incremental generations,
//! verification and restore.
//!
//! A backup folder holds one directory per generation:
//! ```text
//! DIR/20261126T055726Z/generation.json     what, when, chain, archive sums, result
//!                      manifest.json.zst   every file: metadata, xattr digest, SHA-256
//!                      root.tar.zst ...    one archive per file system
//!                      layout.json         the Layout the backup was made from
//!                      verify.json         the last verification's result
//! ```
//! The entry points for other modules: [`create::create`],
//! [`restore::restore`] (a generation and its chain into a mounted tree),
//! [`restore::load_chain`] (the manifest, with `used_bytes` per file
//! system), [`verify::verify`] and [`status`] (newest generation and its
//! last verification, for monitoring).

pub mod acl;
pub mod beneath;
pub mod compress;
pub mod create;
pub mod dest;
pub mod engine;
pub mod extract;
pub mod fsio;
pub mod generation;
pub mod hooks;
pub mod manifest;
pub mod progress;
pub mod restore;
pub mod retention;
pub mod scan;
pub mod seal;
pub mod snapshot;
pub mod tar;
pub mod verify;
pub mod walk;

use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};

pub use compress::Compression;
pub use create::{create, CreateOptions, CreateReport, Source};
pub use generation::{Generation, Store, VerifyRecord};
pub use manifest::Manifest;
pub use restore::{restore, RestoreOptions, RestoreReport};
pub use verify::{verify, VerifyOptions, VerifyReport};

/// Default Layout file of a backup that names no `--source`.
pub const DEFAULT_LAYOUT: &str = crate::layout::DEFAULT_PATH;

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The newest generation of a backup folder and its last verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub newest: Option<Generation>,
    pub last_verify: Option<VerifyRecord>,
    /// Damage in the newest chain (the generations a restore of the newest
    /// needs), other than the newest's own verification: older generations
    /// verified damaged, unreadable `generation.json` files.
    pub chain_damage: Vec<String>,
}

/// For monitoring: the newest generation (its `finished_at`, `result`,
/// `warnings`), the result of the last `verify` of it, if any, and the
/// damage known in its chain.
pub fn status(dir: &Path) -> Result<Status> {
    let store = Store::new(dir);
    let listing = store.scan()?;
    let newest = listing.good.last().cloned();
    let last_verify = newest.as_ref().and_then(|g| store.load_verify(&g.id));
    let mut chain_damage = Vec::new();
    let chain: &[String] = newest.as_ref().map_or(&[], |g| &g.chain);
    for b in &listing.bad {
        // Part of the chain, or newer than the newest readable one.
        let newer = newest.as_ref().map_or(true, |g| b.id > g.id);
        if newer || chain.contains(&b.id) {
            chain_damage.push(format!("generation {} is damaged: {}", b.id, b.error));
        }
    }
    for id in chain
        .iter()
        .filter(|id| Some(*id) != newest.as_ref().map(|g| &g.id))
    {
        if let Some(v) = store.load_verify(id).filter(|v| !v.ok) {
            chain_damage.push(format!(
                "generation {id} of the newest chain is damaged: {}",
                v.problem.as_deref().unwrap_or("damaged")
            ));
        }
    }
    Ok(Status {
        newest,
        last_verify,
        chain_damage,
    })
}

/// Used bytes per file system of a generation's manifest, keyed as the
/// planner keys file systems (the Layout's UUID, else its device): what
/// each new file system must hold at least. File systems of the manifest
/// that the Layout does not know (`--source` trees) are left out.
pub fn used_bytes_by_fs(
    manifest: &Manifest,
    layout: &crate::layout::Layout,
) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for fs in &manifest.filesystems {
        let mp = fs.mountpoint.to_string();
        let found = layout.filesystems.iter().find(|l| {
            fs.device.as_deref() == Some(l.device.as_str()) || l.mountpoints.contains(&mp)
        });
        if let Some(l) = found {
            let key = l.uuid.clone().unwrap_or_else(|| l.device.clone());
            let used = fs.used_bytes.max(fs.allocated_bytes);
            let e = out.entry(key).or_insert(0);
            *e = (*e).max(used);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_bytes_are_keyed_like_the_planner() {
        let layout: crate::layout::Layout = serde_json::from_value(serde_json::json!({
            "schema_version": "1.0", "lifeboat_version": "0", "captured_at": "x",
            "host": {"hostname": "h", "os_pretty_name": null, "os_id": null,
                "os_version_id": null, "arch": "x86_64", "kernel": "6", "firmware": "bios"},
            "disks": [],
            "boot": {"firmware": "bios", "grub": [], "esps": [], "efi_entries": [],
                "boot_order": [], "boot_current": null, "shim": false,
                "systemd_boot": false, "kernel_cmdline": ""},
            "filesystems": [
                {"device": "/dev/vda2", "fstype": "ext4", "uuid": "u-root", "label": null,
                 "size_bytes": 100, "used_bytes": null, "mountpoints": ["/"],
                 "params": {"kind": "other"}},
                {"device": "/dev/vdb1", "fstype": "xfs", "uuid": null, "label": null,
                 "size_bytes": 100, "used_bytes": null, "mountpoints": ["/home"],
                 "params": {"kind": "other"}}
            ]
        }))
        .unwrap();
        let fs = |mp: &str, dev: Option<&str>, used: u64, alloc: u64| manifest::FsManifest {
            mountpoint: manifest::PathBytes(mp.as_bytes().to_vec()),
            archive: "a".into(),
            fstype: None,
            device: dev.map(String::from),
            used_bytes: used,
            data_bytes: 0,
            allocated_bytes: alloc,
            file_count: 0,
            entries: Vec::new(),
            deleted: Vec::new(),
        };
        let m = Manifest {
            format: manifest::FORMAT,
            generation: "g".into(),
            filesystems: vec![
                fs("/", Some("/dev/vda2"), 5000, 4000),
                fs("/home", None, 10, 700),
                fs("/srv/extra", None, 1, 1),
            ],
        };
        let got = used_bytes_by_fs(&m, &layout);
        let want: std::collections::BTreeMap<String, u64> =
            [("u-root".to_string(), 5000), ("/dev/vdb1".to_string(), 700)].into();
        assert_eq!(got, want);
    }
}
