//! `lifeboat snapshot [--backup] [--rebuild-rescue]`, `snapshot list`,
//! `snapshot diff A B`.

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::layout::{self, Layout};
use crate::rescue::BuildRecord;
use crate::schedule::run::{self, RunOptions};
use crate::schedule::snapshot::SnapshotStore;
use crate::util;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub cmd: Option<SnapshotCmd>,

    /// Then rebuild the rescue image when its contents would change (the
    /// layout, kernel, lifeboat or [rescue] differ from what it was built
    /// from), when it is older than schedule.max_image_age, or when there is
    /// none; else record the newest backup in its rescue.json.
    #[arg(long)]
    pub rebuild_rescue: bool,

    /// Take a backup (to backup.destination) before the rebuild check; the
    /// image records the generation it belongs with.
    #[arg(long)]
    pub backup: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// List the stored snapshots, oldest first.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare two snapshots by identity (ids, `latest` or `previous`).
    /// Exit 0: same, 1: different, 2: error.
    Diff {
        #[arg(value_name = "A")]
        a: String,
        #[arg(value_name = "B")]
        b: String,
        /// Print the changes as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: SnapshotArgs, cfg: &Config) -> Result<u8> {
    let store = SnapshotStore::new(&cfg.snapshot_dir());
    match args.cmd {
        None => {
            let opts = RunOptions {
                backup: args.backup,
                rebuild_rescue: args.rebuild_rescue,
            };
            let capture = || layout::capture(&cfg.capture_options());
            let report = run::run(
                cfg,
                opts,
                &capture,
                &util::now_epoch,
                &mut std::io::stdout(),
            )?;
            let stored = report.recorded.as_ref().is_some_and(|r| r.stored.is_some());
            Ok(if stored { 1 } else { 0 })
        }
        Some(SnapshotCmd::List { json }) => list(&store, cfg, json),
        Some(SnapshotCmd::Diff { a, b, json }) => {
            let (a, b) = (store.resolve(&a)?, store.resolve(&b)?);
            super::layout::report(&layout::diff(&a.load()?, &b.load()?), json)
        }
    }
}

fn list(store: &SnapshotStore, cfg: &Config, json: bool) -> Result<u8> {
    let all = store.list()?;
    // The snapshot the rescue image was built from.
    let in_image = BuildRecord::load(&cfg.rescue.output.value)
        .ok()
        .and_then(|r| r.layout_sha256);
    let mut rows = Vec::new();
    let mut previous: Option<Layout> = None;
    for s in &all {
        let l = s.load()?;
        let changes = previous.as_ref().map(|p| layout::diff(p, &l).len());
        let sha = crate::rescue::sha256_file(&s.path)?;
        rows.push(serde_json::json!({
            "id": s.id,
            "path": s.path,
            "taken_at": s.epoch().map(util::rfc3339),
            "disks": l.disks.len(),
            "filesystems": l.filesystems.len(),
            "changes_from_previous": changes,
            "in_rescue_image": in_image.as_deref() == Some(sha.as_str()),
        }));
        previous = Some(l);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    if rows.is_empty() {
        println!(
            "no snapshots in {}; take one with `lifeboat snapshot`",
            store.dir.display()
        );
        return Ok(0);
    }
    println!(
        "{:<20} {:<21} {:>5} {:>12} {:>8}  RESCUE",
        "SNAPSHOT", "TAKEN", "DISKS", "FILE SYSTEMS", "CHANGES"
    );
    for r in &rows {
        println!(
            "{:<20} {:<21} {:>5} {:>12} {:>8}  {}",
            r["id"].as_str().unwrap_or(""),
            r["taken_at"].as_str().unwrap_or("?"),
            r["disks"],
            r["filesystems"],
            match r["changes_from_previous"].as_u64() {
                Some(n) => n.to_string(),
                None => "first".into(),
            },
            if r["in_rescue_image"] == true {
                "built in"
            } else {
                ""
            }
        );
    }
    Ok(0)
}
