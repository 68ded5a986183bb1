//! The records the scheduled run writes and `status`/`check` read:
//! shared by `run.rs` (the writer) and `monitor.rs` (the reader), so that
//! neither imports the other for them.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::util;

pub const LAST_RUN_FILE: &str = "last-run.json";

/// `STATE/last-run.json`: how the last snapshot run went, for `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    pub started_at: String,
    pub finished_at: String,
    pub ok: bool,
    pub exit_code: u8,
    /// The snapshot this run stored, and the newest one after it.
    pub stored: Option<String>,
    pub newest: Option<String>,
    pub changes: usize,
    /// The backup generation this run wrote.
    pub backup: Option<String>,
    pub rebuilt: bool,
    /// Why the image was (or should have been) rebuilt.
    pub reasons: Vec<String>,
    pub error: Option<String>,
}

impl LastRun {
    pub fn load(state_dir: &Path) -> Option<LastRun> {
        let text = std::fs::read_to_string(state_dir.join(LAST_RUN_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let mut json = serde_json::to_string_pretty(self)?;
        json.push('\n');
        util::write_atomic(&state_dir.join(LAST_RUN_FILE), json.as_bytes(), 0o644)
    }
}
