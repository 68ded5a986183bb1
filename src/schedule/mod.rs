//! Keeping the rescue image and the backup current without an admin:
//! layout snapshots, the scheduled run, the systemd timer (or cron file)
//! that starts it, and the monitoring of it all.
//!
//! ```text
//! STATE/snapshots/TIMESTAMP.json   one layout per change (snapshot.rs)
//! STATE/lifeboat.lock              one run at a time (run.rs)
//! STATE/last-run.json              how the last run went (run.rs)
//! STATE/rescue/rescue.json         the image and the layout built in (rescue)
//! STATE/repository-verify/*.json   last verify of a restic/Borg repository
//!                                  (repository.rs)
//! /etc/systemd/system/lifeboat-snapshot.{service,timer}, or
//! /etc/cron.d/lifeboat             (units.rs, install.rs)
//! ```
//! `status` and `check` read the same files (monitor.rs) and judge them
//! (check.rs); `status --prometheus` writes them as metrics (prometheus.rs).

pub mod check;
pub mod install;
pub mod monitor;
pub mod prometheus;
pub mod repository;
pub mod run;
pub mod snapshot;
pub mod state;
pub mod units;

#[cfg(test)]
pub(crate) mod tests;
