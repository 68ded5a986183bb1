//! lifeboat: bare-metal disaster recovery for Linux servers.
//!
//! The stages share one model, the [`layout::Layout`]; every external tool
//! runs through [`exec`].

pub mod backup;
pub mod cli;
pub mod config;
pub mod cpio;
pub mod drill;
pub mod exec;
pub mod layout;
pub mod logging;
pub mod mounts;
pub mod names;
pub mod notify;
pub mod plan;
pub mod recover;
pub mod rescue;
pub mod schedule;
pub mod timestamp;
pub mod util;

/// The version printed by `lifeboat --version` and recorded in every file
/// lifeboat writes.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
