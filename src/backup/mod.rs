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
pub mod compress;
pub mod create;
pub mod dest;
pub mod extract;
pub mod fsio;
pub mod generation;
pub mod manifest;
pub mod progress;
pub mod restore;
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
}

/// For monitoring: the newest generation (its `finished_at`, `result`,
/// `warnings`) and the result of the last `verify` of it, if any.
pub fn status(dir: &Path) -> Result<Status> {
    let store = Store::new(dir);
    let newest = store.list()?.pop();
    let last_verify = newest.as_ref().and_then(|g| store.load_verify(&g.id));
    Ok(Status {
        newest,
        last_verify,
    })
}
