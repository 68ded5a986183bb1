//! One scheduled run (`lifeboat snapshot [--backup] [--rebuild-rescue]`):
//! under the state folder's lock, take the snapshot; with `--backup`, back
//! up the file systems of the newest snapshot; with `--rebuild-rescue`,
//! rebuild the rescue image when its contents would change (its layout
//! drifted from the newest snapshot, or the kernel, lifeboat or the
//! configuration differ from its recorded inputs), when it is older than
//! `schedule.max_image_age`, or when there is none; else record the newest
//! backup generation in its `rescue.json`. A failed rebuild keeps the
//! previous image (mkrescue renames its files into place at the end).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::monitor::{self, BackupFacts, Drift};
use super::snapshot::{Recorded, Snapshot, SnapshotStore};
pub use super::state::{LastRun, LAST_RUN_FILE};
use crate::backup::{self, dest::Destination, walk::Excludes};
use crate::config::{fmt_duration, Config};
use crate::layout::{Change, Layout};
use crate::rescue::{BuildRecord, ImageInputs};
use crate::util;

pub const LOCK_FILE: &str = "lifeboat.lock";

/// The state folder's lock: one snapshot run at a time. Released when
/// dropped (or when the process dies).
pub struct RunLock {
    _file: nix::fcntl::Flock<File>,
}

impl RunLock {
    pub fn acquire(state_dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(state_dir).with_context(|| {
            format!(
                "creating state folder {}; choose another with --state-dir",
                state_dir.display()
            )
        })?;
        let path = state_dir.join(LOCK_FILE);
        let mut file = match util::lock_file(&path)? {
            util::Lock::Taken(file) => file,
            util::Lock::Busy(mut file) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "another lifeboat snapshot run is in progress (pid {} holds {}); this run is skipped",
                    holder.trim(),
                    path.display()
                );
            }
        };
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(RunLock { _file: file })
    }
}

/// What the run was asked to do besides the snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub backup: bool,
    pub rebuild_rescue: bool,
}

/// What the run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub recorded: Option<Recorded>,
    pub backup: Option<String>,
    pub backup_partial: bool,
    pub rebuilt: Option<BuildRecord>,
    pub reasons: Vec<String>,
}

/// Why the rescue image needs a rebuild; empty when it is current.
/// `image` is `rescue.json` (none: no image), `drift` compares its layout
/// with the newest snapshot, `wanted` is what a build would use now (or
/// why that is unknown). A newer backup is no reason: the image does not
/// hold it; its record names the backup it belongs with instead.
pub fn rebuild_reasons(
    image: Option<&BuildRecord>,
    drift: &Drift,
    wanted: Result<&ImageInputs, &str>,
    now: i64,
    max_age: i64,
) -> Vec<String> {
    let Some(rec) = image else {
        return vec!["there is no rescue image".into()];
    };
    let mut reasons = Vec::new();
    match drift {
        Drift::Same { .. } => {}
        Drift::Drifted { against, changes } => reasons.push(format!(
            "the layout changed since the image was built ({} change{} in {against})",
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        )),
        Drift::Unknown { reason } => {
            reasons.push(format!("the image's layout is unknown: {reason}"))
        }
    }
    match (&rec.inputs, wanted) {
        (_, Err(e)) => reasons.push(format!("cannot tell what a new image would hold: {e}")),
        (None, Ok(_)) => reasons.push(format!(
            "the image records no inputs (built by lifeboat {})",
            rec.lifeboat_version
        )),
        (Some(old), Ok(new)) => reasons.extend(old.changes(new)),
    }
    match util::parse_rfc3339(&rec.built_at) {
        Err(_) => reasons.push(format!("the image has a bad build time {:?}", rec.built_at)),
        Ok(built) => {
            if max_age > 0 && now - built >= max_age {
                reasons.push(format!(
                    "the image is {} old (schedule.max_image_age {})",
                    util::human_duration(now - built),
                    fmt_duration(max_age)
                ));
            }
        }
    }
    reasons
}

/// The file systems of the layout `layout_path` and the exclusions of the
/// configuration: what a scheduled backup (native or into a repository)
/// reads.
pub(super) fn sources_and_excludes(
    cfg: &Config,
    layout_path: &Path,
) -> Result<(Vec<backup::Source>, Excludes)> {
    let layout = Layout::load(layout_path)?;
    let sources = backup::create::sources_from_layout(&layout, None);
    if sources.is_empty() {
        bail!(
            "the layout {} has no mounted disk file systems to back up; check [capture] in {}",
            layout_path.display(),
            cfg.path.display()
        );
    }
    let mut excludes = Excludes {
        contents_of: backup::create::CONTENTS_EXCLUDED
            .iter()
            .map(PathBuf::from)
            .collect(),
        ..Excludes::default()
    };
    backup::create::exclude_own_output(&mut excludes, &[&cfg.rescue.output.value]);
    for p in &cfg.backup.excludes.value {
        excludes
            .add_pattern(p)
            .with_context(|| format!("backup.excludes ({})", cfg.backup.excludes.source))?;
    }
    Ok((sources, excludes))
}

/// The options of a backup of `layout_path`'s file systems from the
/// configuration (what `backup create` without flags does).
fn backup_options(cfg: &Config, layout_path: &Path, dest: &Path) -> Result<backup::CreateOptions> {
    let (sources, excludes) = sources_and_excludes(cfg, layout_path)?;
    Ok(backup::CreateOptions {
        dest: dest.to_path_buf(),
        sources,
        layout_file: Some(layout_path.to_path_buf()),
        incremental: cfg.backup.incremental.value,
        differential: false,
        compression: cfg.backup.compression.value.0,
        level: cfg.backup.level.value.map(|l| l.0),
        threads: cfg
            .backup
            .threads
            .value
            .map(|t| t.0 as u32)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(1)
            }),
        excludes,
        keep: cfg.backup.keep.value.map(|k| k.0 as usize),
        retention: backup::retention::Policy {
            chains: None,
            ..cfg.backup.retention()
        },
        hooks: cfg.hooks.hooks(),
        snapshot: false,
        full_every: backup::create::FullEvery {
            count: cfg.backup.full_every.value.0,
            age: cfg.backup.full_every_age.value.map(|d| d.0),
        },
        progress: backup::progress::Mode::Quiet,
        encrypt_to: backup::seal::Recipients::optional(&cfg.backup.encrypt_to.value)
            .with_context(|| format!("backup.encrypt_to ({})", cfg.backup.encrypt_to.source))?,
    })
}

/// The repository `spec` names (`restic:...`, `borg:...`), opened with
/// the configuration's credentials; `None` for a backup folder.
fn repository_of(spec: &str, cfg: &Config) -> Result<Option<crate::backup::engine::Repo>> {
    use crate::backup::engine::{Repo, Settings};
    match Repo::split(spec) {
        Some(_) => Ok(Some(Repo::open(spec, &Settings::from_config(cfg))?)),
        None => Ok(None),
    }
}

/// The mkrescue options of the configuration, with `layout` built in.
pub fn rescue_options(cfg: &Config, layout: Option<&Path>) -> crate::rescue::Options {
    let r = &cfg.rescue;
    let dest = cfg.backup.destination.value.as_deref().unwrap_or_default();
    let engine = crate::backup::engine::rescue_programs(dest);
    let mut add_programs = r.add_programs.value.clone();
    add_programs.extend(engine.iter().map(|p| p.to_string()));
    crate::rescue::Options {
        kernel: r.kernel.value.clone(),
        output: r.output.value.clone(),
        layout: layout.map(Path::to_path_buf),
        compression: r.compression.value.0,
        append: r.append.value.clone(),
        add_programs,
        no_iso: !r.iso.value,
        capture: Some(cfg.capture_options()),
        ca_certificates: !engine.is_empty(),
        ssh_authorized_keys: r.ssh_authorized_keys.value.clone(),
        ssh_server: r.ssh_server.value.0,
        secure_boot_root: r.secure_boot_root.value.clone(),
        ..crate::rescue::Options::default()
    }
}

fn print_changes(out: &mut dyn Write, changes: &[Change]) -> Result<()> {
    for c in changes {
        writeln!(out, "  {c}")?;
    }
    Ok(())
}

/// One run. `capture` gives the layout of the machine now; `now` the time.
/// Progress goes to `out` (the journal, for the service). Under the lock,
/// the outcome (success or failure) is recorded in `STATE/last-run.json`.
pub fn run(
    cfg: &Config,
    opts: RunOptions,
    capture: &dyn Fn() -> Result<Layout>,
    now: &dyn Fn() -> i64,
    out: &mut dyn Write,
) -> Result<RunReport> {
    let state = &cfg.state_dir.value;
    let _lock = RunLock::acquire(state)?;
    let started = now();
    let mut report = RunReport::default();
    let result = run_locked(cfg, opts, capture, now, out, &mut report);
    let rec = report.recorded.as_ref();
    let stored = rec.and_then(|r| r.stored.as_ref()).map(|s| s.id.clone());
    let last = LastRun {
        started_at: util::rfc3339(started),
        finished_at: util::rfc3339(now()),
        ok: result.is_ok(),
        exit_code: match (&result, &stored) {
            (Err(_), _) => 2,
            (Ok(()), Some(_)) => 1,
            (Ok(()), None) => 0,
        },
        newest: rec.and_then(|r| r.newest()).map(|s| s.id.clone()),
        stored,
        changes: rec.map(|r| r.changes.len()).unwrap_or(0),
        backup: report.backup.clone(),
        rebuilt: report.rebuilt.is_some(),
        reasons: report.reasons.clone(),
        error: result.as_ref().err().map(|e| format!("{e:#}")),
    };
    if let Err(e) = last.save(state) {
        log::warn!("cannot record the run: {e:#}");
    }
    let changes = match rec {
        Some(r) if r.previous.is_some() && r.stored.is_some() => r.changes.as_slice(),
        _ => &[],
    };
    if let Some(n) = crate::notify::of_run(&last, changes, report.backup_partial) {
        crate::notify::send(cfg, &n);
    }
    result.map(|()| report)
}

fn run_locked(
    cfg: &Config,
    opts: RunOptions,
    capture: &dyn Fn() -> Result<Layout>,
    now: &dyn Fn() -> i64,
    out: &mut dyn Write,
    report: &mut RunReport,
) -> Result<()> {
    let store = SnapshotStore::new(&cfg.snapshot_dir());
    let output = &cfg.rescue.output.value;
    let image = monitor::read_rescue(output);

    // 1. The snapshot.
    let layout = capture().context("capturing the layout")?;
    let protect: Vec<PathBuf> = image
        .record
        .as_ref()
        .and_then(|r| r.layout.as_ref())
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let rec = store.record(&layout, now(), cfg.snapshot.keep.value.0 as usize, &protect)?;
    match (&rec.stored, &rec.previous) {
        (Some(s), None) => writeln!(
            out,
            "first snapshot {} stored in {}",
            s.id,
            s.path.display()
        )?,
        (Some(s), Some(p)) => {
            writeln!(out, "layout changed since snapshot {}:", p.id)?;
            print_changes(out, &rec.changes)?;
            writeln!(out, "snapshot {} stored in {}", s.id, s.path.display())?;
        }
        (None, Some(p)) => writeln!(out, "layout unchanged since snapshot {}", p.id)?,
        (None, None) => unreachable!("a first capture is always stored"),
    }
    for id in &rec.pruned {
        writeln!(
            out,
            "removed old snapshot {id} (snapshot.keep = {})",
            cfg.snapshot.keep.value.0
        )?;
    }
    let newest: Snapshot = rec.newest().cloned().expect("a snapshot exists now");
    report.recorded = Some(rec);

    // 2. The backup, first, so that the image is built after it.
    if opts.backup {
        let Some(spec) = cfg.backup.destination.value.clone() else {
            bail!(
                "--backup needs a backup folder: set backup.destination in {}",
                cfg.path.display()
            );
        };
        if let Some(repo) = repository_of(&spec, cfg)? {
            repository_backup(cfg, &repo, &newest.path, out, report)?;
        } else {
            native_backup(cfg, &spec, &newest.path, out, report)?;
        }
    }

    // 3. The rescue image.
    if opts.rebuild_rescue {
        rescue_step(cfg, &image, &store, &newest, now, out, report)?;
    }
    Ok(())
}

/// The scheduled backup into a backup folder.
fn native_backup(
    cfg: &Config,
    spec: &str,
    layout: &Path,
    out: &mut dyn Write,
    report: &mut RunReport,
) -> Result<()> {
    let dest = Destination::open(spec, cfg.backup.mount_options.value.as_deref(), true)?;
    let bo = backup_options(cfg, layout, &dest.path)?;
    let r = backup::create(&bo).with_context(|| format!("backing up to {spec}"))?;
    let g = &r.generation;
    writeln!(
        out,
        "backup generation {} ({:?}) written to {spec}: {} files, {} stored in {:.1} s",
        g.id,
        g.kind,
        g.files,
        util::human_bytes(g.archive_bytes),
        g.duration_seconds
    )?;
    for n in r.note.iter().chain(&r.retried) {
        writeln!(out, "note: {n}")?;
    }
    backup_written(g, &r.removed, out, report)
}

/// The scheduled backup into a restic or Borg repository (repository.rs).
fn repository_backup(
    cfg: &Config,
    repo: &crate::backup::engine::Repo,
    layout: &Path,
    out: &mut dyn Write,
    report: &mut RunReport,
) -> Result<()> {
    let w = super::repository::backup(cfg, repo, layout)?;
    let g = &w.report.generation;
    writeln!(
        out,
        "backup generation {} written to {}: {} files, repository grew by {}, {:.1} s",
        g.id,
        w.spec,
        g.files,
        util::human_bytes(w.report.added_bytes),
        g.duration_seconds
    )?;
    backup_written(g, &w.report.removed, out, report)
}

/// After either backup: a partial one warned of, the generations removed
/// by `backup.keep` listed, the generation recorded in the report.
fn backup_written(
    g: &backup::Generation,
    removed: &[String],
    out: &mut dyn Write,
    report: &mut RunReport,
) -> Result<()> {
    if g.result == backup::generation::Outcome::Partial {
        log::warn!(
            "backup {} is partial: {} files could not be read",
            g.id,
            g.warnings.unreadable
        );
        for e in &g.warnings.examples {
            writeln!(out, "  {e}")?;
        }
        report.backup_partial = true;
    }
    for id in removed {
        writeln!(out, "removed old backup generation {id} (backup.keep)")?;
    }
    report.backup = Some(g.id.clone());
    Ok(())
}

/// Rebuilds the rescue image when its contents would change; else records
/// the newest backup generation in its `rescue.json`.
fn rescue_step(
    cfg: &Config,
    image: &monitor::RescueFacts,
    store: &SnapshotStore,
    newest: &Snapshot,
    now: &dyn Fn() -> i64,
    out: &mut dyn Write,
    report: &mut RunReport,
) -> Result<()> {
    let output = &cfg.rescue.output.value;
    let newest_layout = newest.load()?;
    let drift = match &image.record {
        Some(r) => monitor::drift(
            r,
            store,
            &newest_layout,
            Some(&newest.path),
            &format!("snapshot {}", newest.id),
        ),
        None => Drift::Unknown {
            reason: "there is no rescue image".into(),
        },
    };
    let backup_id = report
        .backup
        .clone()
        .or_else(|| match monitor::read_backup(cfg) {
            BackupFacts::Found { generation, .. } => Some(generation.id),
            _ => None,
        });
    let mut ro = rescue_options(cfg, Some(&newest.path));
    ro.backup_generation = backup_id.clone();
    let wanted = ImageInputs::of(&ro).map_err(|e| format!("{e:#}"));
    let reasons = match &image.error {
        // A new build writes a new record.
        Some(e) => vec![format!("the image record is unreadable: {e}")],
        None => rebuild_reasons(
            image.record.as_ref(),
            &drift,
            wanted.as_ref().map_err(String::as_str),
            now(),
            cfg.schedule.max_image_age.value.0,
        ),
    };
    report.reasons = reasons.clone();
    if let (true, Some(rec)) = (reasons.is_empty(), &image.record) {
        writeln!(
            out,
            "rescue image in {} is current (built {}, layout of snapshot {})",
            output.display(),
            rec.built_at,
            newest.id
        )?;
        if backup_id.is_some() && rec.backup != backup_id {
            let mut rec = rec.clone();
            rec.backup = backup_id;
            rec.save(output)?;
        }
        // A copy that failed or is missing is tried again.
        if crate::rescue::copy::needs_copy(cfg, output, rec) {
            copy_step(cfg, output, rec, out)?;
        }
        return Ok(());
    }
    writeln!(out, "rebuilding the rescue image: {}", reasons.join("; "))?;
    let built = crate::rescue::mkrescue(&ro).with_context(|| {
        format!(
            "rebuilding the rescue image failed; the previous image in {} is kept",
            output.display()
        )
    })?;
    writeln!(
        out,
        "rescue image rebuilt in {} ({:.1} s, kernel {}, layout of snapshot {})",
        output.display(),
        built.build_seconds,
        built.kernel_version,
        newest.id
    )?;
    copy_step(cfg, output, &built, out)?;
    report.rebuilt = Some(built);
    Ok(())
}

/// The copy of the image off the host (`rescue.destination`); a failure
/// is a warning (logged and sent by rescue::copy), not the run's.
fn copy_step(cfg: &Config, output: &Path, rec: &BuildRecord, out: &mut dyn Write) -> Result<()> {
    if let Some(Ok(c)) = crate::rescue::copy::after_build(cfg, output, rec) {
        writeln!(
            out,
            "rescue image copied to {}: {}",
            c.destination,
            c.summary()
        )?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NOW: i64 = 1_795_672_646; // 2026-11-26T05:57:26Z

    pub(crate) fn record(built_at: &str) -> BuildRecord {
        serde_json::from_value(serde_json::json!({
            "lifeboat_version": "0.1.0", "built_at": built_at,
            "kernel_version": "6.1.0-30-amd64", "kernel_image": "/boot/vmlinuz",
            "compression": "zstd", "cmdline": "", "layout": "/x/layout.json",
            "layout_sha256": "00", "files": [], "modules": 0, "firmware_files": 0,
            "programs": 0, "libraries": 0, "build_seconds": 1.0
        }))
        .unwrap()
    }

    fn same() -> Drift {
        Drift::Same {
            against: "snapshot A".into(),
        }
    }

    fn inputs() -> ImageInputs {
        serde_json::from_value(serde_json::json!({
            "lifeboat_version": "0.1.0", "lifeboat_sha256": "aa",
            "kernel_version": "6.1.0-30-amd64", "kernel_sha256": "bb",
            "layout_sha256": "00", "compression": "zstd", "cmdline": "",
            "add_programs": [], "iso": true, "luks_headers": false, "include_backup": null
        }))
        .unwrap()
    }

    #[test]
    fn rebuild_decisions_with_a_fixed_clock() {
        let hour_ago = util::rfc3339(NOW - 3600);
        let mut r = record(&hour_ago);
        let now_in = inputs();
        r.inputs = Some(now_in.clone());
        let same_in = Ok(&now_in);
        // Current: same layout and inputs, young image; a newer backup
        // (the image does not hold it) is no reason.
        assert!(rebuild_reasons(Some(&r), &same(), same_in, NOW, 7 * 86400).is_empty());
        assert!(rebuild_reasons(Some(&r), &same(), same_in, NOW, 0).is_empty());

        assert_eq!(
            rebuild_reasons(None, &same(), same_in, NOW, 0),
            vec!["there is no rescue image"]
        );
        let drifted = Drift::Drifted {
            against: "snapshot B".into(),
            changes: vec![
                crate::layout::diff(&crate::layout::diff::tests::machine(), &{
                    let mut l = crate::layout::diff::tests::machine();
                    l.disks.pop();
                    l
                })[0]
                    .clone(),
            ],
        };
        assert_eq!(
            rebuild_reasons(Some(&r), &drifted, same_in, NOW, 0),
            vec!["the layout changed since the image was built (1 change in snapshot B)"]
        );
        let unknown = Drift::Unknown {
            reason: "gone".into(),
        };
        assert_eq!(
            rebuild_reasons(Some(&r), &unknown, same_in, NOW, 0),
            vec!["the image's layout is unknown: gone"]
        );
        // Each input that shapes the image.
        let mut k = now_in.clone();
        k.kernel_version = "6.1.0-31-amd64".into();
        k.kernel_sha256 = "cc".into();
        assert_eq!(
            rebuild_reasons(Some(&r), &same(), Ok(&k), NOW, 0),
            vec!["the kernel changed (6.1.0-30-amd64 -> 6.1.0-31-amd64)"]
        );
        let mut k = now_in.clone();
        k.kernel_sha256 = "cc".into();
        assert_eq!(
            rebuild_reasons(Some(&r), &same(), Ok(&k), NOW, 0),
            vec!["the kernel image of 6.1.0-30-amd64 changed"]
        );
        let mut v = now_in.clone();
        v.lifeboat_version = "0.2.0".into();
        v.lifeboat_sha256 = "dd".into();
        assert_eq!(
            rebuild_reasons(Some(&r), &same(), Ok(&v), NOW, 0),
            vec!["lifeboat changed (0.1.0 -> 0.2.0)"]
        );
        let mut c = now_in.clone();
        c.cmdline = "lifeboat.net=dhcp".into();
        assert_eq!(
            rebuild_reasons(Some(&r), &same(), Ok(&c), NOW, 0),
            vec!["the [rescue] configuration changed"]
        );
        assert_eq!(
            rebuild_reasons(Some(&r), &same(), Err("no kernel"), NOW, 0),
            vec!["cannot tell what a new image would hold: no kernel"]
        );
        let mut older = r.clone();
        older.inputs = None;
        assert_eq!(
            rebuild_reasons(Some(&older), &same(), same_in, NOW, 0),
            vec!["the image records no inputs (built by lifeboat 0.1.0)"]
        );
        let mut old = record(&util::rfc3339(NOW - 8 * 86400));
        old.inputs = Some(now_in.clone());
        assert_eq!(
            rebuild_reasons(Some(&old), &same(), same_in, NOW, 7 * 86400),
            vec!["the image is 8d old (schedule.max_image_age 7d)"]
        );
        // 0 turns the age rule off.
        assert!(rebuild_reasons(Some(&old), &same(), same_in, NOW, 0).is_empty());
    }

    /// The scheduled rebuild builds from rescue.secure_boot_root as
    /// mkrescue does (both take their options from here).
    #[test]
    fn the_scheduled_rebuild_uses_the_configured_secure_boot_root() {
        let mut cfg = crate::config::Config::default();
        assert_eq!(rescue_options(&cfg, None).secure_boot_root, None);
        cfg.rescue.secure_boot_root.value = Some("/srv/signed".into());
        let ro = rescue_options(&cfg, None);
        assert_eq!(ro.secure_boot_root(), std::path::Path::new("/srv/signed"));
    }

    #[test]
    fn runs_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let e = RunLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains(&format!("pid {} holds", std::process::id())),
            "{e}"
        );
        assert!(e.contains("this run is skipped"), "{e}");
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn last_run_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LastRun::load(dir.path()), None);
        let r = LastRun {
            started_at: util::rfc3339(NOW),
            finished_at: util::rfc3339(NOW + 20),
            ok: false,
            exit_code: 2,
            stored: Some("A".into()),
            newest: Some("A".into()),
            changes: 3,
            backup: None,
            rebuilt: false,
            reasons: vec!["x".into()],
            error: Some("mkrescue failed".into()),
        };
        r.save(dir.path()).unwrap();
        assert_eq!(LastRun::load(dir.path()), Some(r));
    }
}
