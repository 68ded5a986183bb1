//! `lifeboat backup create|list|verify|restore`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::backup::dest::Destination;
use crate::backup::generation::Outcome;
use crate::backup::progress::Mode;
use crate::backup::retention::Policy;
use crate::backup::seal::Identities;
use crate::backup::walk::Excludes;
use crate::backup::{self, Compression, Store};
use crate::config::{BackupConfig, Choice, Config, Count, Level};
use crate::util::human_bytes;

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Back up the layout's file systems (or --source trees) as a new
    /// generation.
    Create(CreateArgs),
    /// List the generations in a backup folder.
    List(ListArgs),
    /// Check archives, content hashes and chains; exit 1 when damaged.
    Verify(VerifyArgs),
    /// Restore a generation (or some paths of it) into a mounted tree.
    Restore(RestoreArgs),
    /// Remove the generations the retention rules do not keep (whole
    /// chains: no kept generation loses a parent).
    Prune(PruneArgs),
}

/// Calendar retention (restic's `forget` rules), for `create` and `prune`.
#[derive(Debug, Args, Default)]
pub struct KeepArgs {
    /// Keep the newest N generations (backup.keep_last).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<usize>,
    /// Keep the newest generation of each of the last N hours that have one
    /// (backup.keep_hourly).
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<usize>,
    /// ... of each of the last N days (backup.keep_daily).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<usize>,
    /// ... of each of the last N ISO weeks (backup.keep_weekly).
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<usize>,
    /// ... of each of the last N months (backup.keep_monthly).
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<usize>,
    /// ... of each of the last N years (backup.keep_yearly).
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<usize>,
}

impl KeepArgs {
    /// `--keep N` and the calendar rules over `backup.keep` and
    /// `backup.keep_*`.
    fn over(&self, keep: Option<usize>, b: &mut BackupConfig) {
        fn count<const MIN: u64>(n: Option<usize>) -> Option<Count<MIN>> {
            n.map(|n| Count(n as u64))
        }
        b.keep.flag_some(count(keep), "--keep");
        b.keep_last.flag(count(self.keep_last), "--keep-last");
        b.keep_hourly.flag(count(self.keep_hourly), "--keep-hourly");
        b.keep_daily.flag(count(self.keep_daily), "--keep-daily");
        b.keep_weekly.flag(count(self.keep_weekly), "--keep-weekly");
        b.keep_monthly
            .flag(count(self.keep_monthly), "--keep-monthly");
        b.keep_yearly.flag(count(self.keep_yearly), "--keep-yearly");
    }
}

impl CreateArgs {
    /// The configuration with this command's flags over it: each flag sets
    /// its `backup.*` key (the key's source then names the flag), so the
    /// order flag > environment > file > default is the config layer's.
    fn over(&self, cfg: &Config) -> Config {
        let mut cfg = over_folder(cfg, self.to.clone(), "--to", self.mount_options.clone());
        let b = &mut cfg.backup;
        b.excludes.flag_list(self.exclude.clone(), "--exclude");
        b.encrypt_to
            .flag_list(self.encrypt_to.clone(), "--encrypt-to");
        b.compression
            .flag(self.compression.map(Choice), "--compression");
        b.level.flag_some(self.level.map(Level), "--level");
        b.threads
            .flag_some(self.threads.map(|t| Count(t.into())), "--threads");
        b.incremental.flag_on(self.incremental, "--incremental");
        for (off, flag) in [(self.full, "--full"), (self.differential, "--differential")] {
            b.incremental.flag(off.then_some(false), flag);
        }
        self.rules.over(self.keep, b);
        cfg
    }
}

/// The configuration with a command's backup folder flag (`--to`,
/// `--from`) and `--mount-options` over `backup.destination` and
/// `backup.mount_options`.
fn over_folder(cfg: &Config, folder: Option<String>, flag: &str, mount: Option<String>) -> Config {
    let mut cfg = cfg.clone();
    cfg.backup.destination.flag_some(folder, flag);
    cfg.backup.mount_options.flag_some(mount, "--mount-options");
    cfg
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Backup folder (directory, nfs:// or cifs://) [default:
    /// backup.destination].
    #[arg(long, value_name = "DEST")]
    pub from: Option<String>,

    /// Keep the newest N full chains (backup.keep).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,

    #[command(flatten)]
    pub rules: KeepArgs,

    /// Show what would be removed, and why each kept generation stays;
    /// remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Options for mounting an NFS or CIFS folder [default:
    /// backup.mount_options].
    #[arg(long, value_name = "OPTS")]
    pub mount_options: Option<String>,

    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Backup folder: a directory (or mounted disk), nfs://HOST/EXPORT/PATH
    /// or cifs://HOST/SHARE/PATH, or a repository restic:REPO / borg:REPO
    /// [default: backup.destination].
    #[arg(long, value_name = "DEST")]
    pub to: Option<String>,

    /// Layout whose mounted file systems are backed up (and stored with
    /// the generation) [default: capture.layout_file, else
    /// /var/lib/lifeboat/layout.json].
    #[arg(long, value_name = "FILE")]
    pub layout: Option<PathBuf>,

    /// The layout's file systems are mounted under this folder, not at /
    /// (a system captured with `layout save --root DIR`, e.g. from a rescue
    /// shell).
    #[arg(long, value_name = "DIR", conflicts_with = "source")]
    pub root: Option<PathBuf>,

    /// Back up this tree instead of the layout's file systems (repeatable;
    /// each stays within its own file system).
    #[arg(long, value_name = "PATH")]
    pub source: Vec<PathBuf>,

    /// Store only what changed since the newest generation, plus the list
    /// of deleted files (a full backup when there is none)
    /// (backup.incremental).
    #[arg(long)]
    pub incremental: bool,

    /// A full backup, even when backup.incremental is set.
    #[arg(long, conflicts_with = "incremental")]
    pub full: bool,

    /// Store everything changed since the newest full generation (a
    /// restore needs that full and this one; a full backup when there is
    /// none).
    #[arg(long, conflicts_with_all = ["incremental", "full"])]
    pub differential: bool,

    /// Compression of the archives [default: backup.compression, else
    /// zstd].
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,

    /// Compression level [default: backup.level, else zstd 3, gzip 6].
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,

    /// zstd compression threads [default: backup.threads, else the number
    /// of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,

    /// Leave out matching files and directories (repeatable; replaces
    /// backup.excludes). With a '/' the pattern matches the absolute path,
    /// else the file name.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,

    /// After the backup, keep only the newest N full chains (backup.keep).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,

    /// After the backup, apply these calendar rules too (whole chains).
    #[command(flatten)]
    pub rules: KeepArgs,

    /// Read each tree from an LVM or btrfs snapshot that lifeboat takes
    /// (after the pre_backup hook) and removes.
    #[arg(long)]
    pub snapshot: bool,

    /// Options for mounting an NFS or CIFS destination (mount -o)
    /// [default: backup.mount_options].
    #[arg(long, value_name = "OPTS")]
    pub mount_options: Option<String>,

    /// Encrypt the generation to this age recipient (age1..., ssh-ed25519
    /// ..., ssh-rsa ...) or file of recipients, one per line (repeatable;
    /// replaces backup.encrypt_to). Reading it back needs --identity.
    #[arg(long, value_name = "RECIPIENT_OR_FILE")]
    pub encrypt_to: Vec<String>,

    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,

    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Backup folder (directory, nfs:// or cifs://) or repository
    /// (restic:REPO, borg:REPO) [default: backup.destination].
    #[arg(long, value_name = "DEST")]
    pub from: Option<String>,

    /// Options for mounting an NFS or CIFS folder [default:
    /// backup.mount_options].
    #[arg(long, value_name = "OPTS")]
    pub mount_options: Option<String>,

    /// age identity (or unprotected OpenSSH private key) that opens
    /// encrypted generations: shows their mount points too. Without it an
    /// encrypted generation shows its clear metadata only.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Backup folder (directory, nfs:// or cifs://) or repository
    /// (restic:REPO, borg:REPO) [default: backup.destination].
    #[arg(long, value_name = "DEST")]
    pub from: Option<String>,

    /// Verify this generation and its chain [default: every generation].
    #[arg(long, value_name = "ID")]
    pub generation: Option<String>,

    /// Also restore into a scratch folder and compare the tree.
    #[arg(long)]
    pub deep: bool,

    /// Where --deep restores [default: /var/tmp].
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,

    /// age identity file (or unprotected OpenSSH private key) that opens
    /// encrypted generations. Keep it off the backed-up server.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Options for mounting an NFS or CIFS folder [default:
    /// backup.mount_options].
    #[arg(long, value_name = "OPTS")]
    pub mount_options: Option<String>,

    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,

    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Backup folder (directory, nfs:// or cifs://), or a single tar
    /// archive (e.g. ReaR's backup.tar.gz) to extract as it is [default:
    /// backup.destination].
    #[arg(long, value_name = "DEST")]
    pub from: Option<String>,

    /// Root of the tree to restore into, file systems mounted below it.
    #[arg(long, value_name = "PATH")]
    pub to: PathBuf,

    /// Generation to restore, with its chain [default: the newest].
    #[arg(long, value_name = "ID", conflicts_with = "at")]
    pub generation: Option<String>,

    /// Restore the newest complete generation started at or before this
    /// time: "2026-11-20 14:00" (local time), 2026-11-20 (the end of that
    /// day) or RFC 3339.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,

    /// Restore only this path (absolute, as on the backed-up system) and
    /// what is below it (repeatable).
    #[arg(long, value_name = "SUBPATH")]
    pub path: Vec<PathBuf>,

    /// Replace existing files (without it the target must be empty, or
    /// the --path files absent).
    #[arg(long)]
    pub overwrite: bool,

    /// Files owned by the restoring user, without setuid/setgid bits and
    /// file capabilities (for archives one does not trust).
    #[arg(long)]
    pub no_same_owner: bool,

    /// Skip device nodes, counted in the report (for archives one does not
    /// trust).
    #[arg(long)]
    pub no_devices: bool,

    /// age identity file (or unprotected OpenSSH private key) that opens
    /// encrypted generations. Keep it off the backed-up server.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Options for mounting an NFS or CIFS folder [default:
    /// backup.mount_options].
    #[arg(long, value_name = "OPTS")]
    pub mount_options: Option<String>,

    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,

    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn run(cmd: BackupCmd, cfg: &Config) -> Result<u8> {
    match cmd {
        BackupCmd::Create(mut a) => {
            let cfg = &a.over(cfg);
            let to = destination(cfg, "--to")?;
            // The trees' excludes and `--keep`, as the engine and the
            // native path read them from the arguments.
            a.exclude = cfg.backup.excludes.value.clone();
            a.keep = cfg.backup.keep.value.map(|k| k.0 as usize);
            if let Some(repo) = super::backup_engine::repo(&to, cfg)? {
                if a.differential {
                    bail!(
                        "--differential is for backup folders: a restic or Borg repository \
                         deduplicates every snapshot against the others"
                    );
                }
                if !a.encrypt_to.is_empty() {
                    bail!(
                        "--encrypt-to is for backup folders: a restic or Borg repository is \
                         encrypted by the engine with its own password"
                    );
                }
                let policy = cfg.backup.retention();
                return super::backup_engine::create(a, &repo, cfg, policy);
            }
            create(a, &to, cfg)
        }
        BackupCmd::List(mut a) => {
            let cfg = &over_folder(cfg, a.from.take(), "--from", a.mount_options.take());
            let from = destination(cfg, "--from")?;
            if let Some(repo) = super::backup_engine::repo(&from, cfg)? {
                return super::backup_engine::list(a, &repo);
            }
            a.mount_options = cfg.backup.mount_options.value.clone();
            list(a, &from)
        }
        BackupCmd::Verify(mut a) => {
            let cfg = &over_folder(cfg, a.from.take(), "--from", a.mount_options.take());
            let from = destination(cfg, "--from")?;
            if let Some(repo) = super::backup_engine::repo(&from, cfg)? {
                return super::backup_engine::verify(a, &repo, cfg);
            }
            a.mount_options = cfg.backup.mount_options.value.clone();
            verify(a, &from, cfg)
        }
        BackupCmd::Restore(mut a) => {
            let cfg = &over_folder(cfg, a.from.take(), "--from", a.mount_options.take());
            let from = destination(cfg, "--from")?;
            if let Some(repo) = super::backup_engine::repo(&from, cfg)? {
                return super::backup_engine::restore(a, &repo);
            }
            a.mount_options = cfg.backup.mount_options.value.clone();
            restore(a, &from)
        }
        BackupCmd::Prune(mut a) => {
            let mut cfg = over_folder(cfg, a.from.take(), "--from", a.mount_options.take());
            a.rules.over(a.keep, &mut cfg.backup);
            let from = destination(&cfg, "--from")?;
            a.mount_options = cfg.backup.mount_options.value.clone();
            let policy = cfg.backup.retention();
            check_policy(&policy)?;
            if let Some(repo) = super::backup_engine::repo(&from, &cfg)? {
                return super::backup_engine::prune(a, &repo, &policy);
            }
            prune(a, &from, &policy)
        }
    }
}

/// The backup folder: `backup.destination` (which `flag` sets).
fn destination(cfg: &Config, flag: &str) -> Result<String> {
    match cfg.backup.destination.value.clone() {
        Some(d) => Ok(d),
        None => bail!(
            "no backup folder: give {flag} DEST or set backup.destination in {}",
            cfg.path.display()
        ),
    }
}

fn mode(quiet: bool) -> Mode {
    if quiet {
        Mode::Quiet
    } else {
        Mode::Auto
    }
}

/// `rescue_output`: the rescue image folder, left out of the backup (in the
/// tree below `--root` too).
/// The trees to back up, the layout stored with them and what to leave
/// out, as `backup create` and its engine variant read them.
pub(super) fn plan_sources(
    a: &CreateArgs,
    default_layout: &Path,
    rescue_output: &Path,
) -> Result<(Vec<backup::Source>, Option<PathBuf>, Excludes)> {
    let (sources, layout_file) = if a.source.is_empty() {
        let path = a
            .layout
            .clone()
            .unwrap_or_else(|| default_layout.to_path_buf());
        if !path.exists() {
            bail!(
                "no layout at {}: save one with `lifeboat layout save`, or name the trees with --source",
                path.display()
            );
        }
        let layout = crate::layout::Layout::load(&path)?;
        let sources = backup::create::sources_from_layout(&layout, a.root.as_deref());
        if sources.is_empty() {
            bail!(
                "layout {} has no mounted disk file systems to back up",
                path.display()
            );
        }
        (sources, Some(path))
    } else {
        let mut sources = Vec::new();
        for s in &a.source {
            let abs = std::fs::canonicalize(s)
                .with_context(|| format!("cannot read --source {}", s.display()))?;
            sources.push(backup::Source {
                path: abs.clone(),
                mountpoint: abs,
                fstype: None,
                device: None,
            });
        }
        (sources, a.layout.clone())
    };
    let mut excludes = Excludes::default();
    if a.source.is_empty() {
        let root = a.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        excludes.contents_of = backup::create::CONTENTS_EXCLUDED
            .iter()
            .map(|d| root.join(d.trim_start_matches('/')))
            .collect();
    }
    let in_root = a
        .root
        .as_ref()
        .map(|r| r.join(rescue_output.strip_prefix("/").unwrap_or(rescue_output)));
    let own: Vec<&Path> = std::iter::once(rescue_output)
        .chain(in_root.as_deref())
        .collect();
    backup::create::exclude_own_output(&mut excludes, &own);
    for p in &a.exclude {
        // Absolute patterns name paths of the backed-up system.
        match (&a.root, p.starts_with('/')) {
            (Some(r), true) => excludes.add_pattern(&format!(
                "{}{p}",
                glob::Pattern::escape(r.to_string_lossy().trim_end_matches('/'))
            ))?,
            _ => excludes.add_pattern(p)?,
        }
    }
    Ok((sources, layout_file, excludes))
}

/// `backup create` into a backup folder; `cfg` holds the command's flags.
fn create(a: CreateArgs, to: &str, cfg: &Config) -> Result<u8> {
    let b = &cfg.backup;
    let default_layout: &Path = &cfg.capture.layout_file.value;
    let rescue_output: &Path = &cfg.rescue.output.value;
    let policy = b.retention();
    if policy.chains == Some(0) {
        bail!("--keep must be at least 1");
    }
    let (sources, layout_file, excludes) = plan_sources(&a, default_layout, rescue_output)?;
    let dest = Destination::open(to, b.mount_options.value.as_deref(), true)?;
    let threads = b.threads.value.map(|t| t.0 as u32).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let full_every = backup::create::FullEvery {
        count: b.full_every.value.0,
        age: b.full_every_age.value.map(|d| d.0),
    };
    let rep = backup::create(&backup::CreateOptions {
        dest: dest.path.clone(),
        sources,
        layout_file,
        incremental: b.incremental.value,
        differential: a.differential,
        compression: b.compression.value.0,
        level: b.level.value.map(|l| l.0),
        threads,
        excludes,
        keep: policy.chains,
        retention: Policy {
            chains: None,
            ..policy
        },
        full_every,
        hooks: cfg.hooks.hooks(),
        snapshot: a.snapshot,
        progress: mode(a.quiet || a.json),
        encrypt_to: backup::seal::Recipients::optional(&b.encrypt_to.value)?,
    })?;
    let g = &rep.generation;
    if a.json {
        let v = serde_json::json!({
            "generation": g,
            "removed": rep.removed,
            "note": rep.note,
            "retried": rep.retried,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if let Some(n) = &rep.note {
            println!("note: {n}");
        }
        if let Some(r) = &rep.retried {
            println!("note: {r}");
        }
        let rate = g.stored_content_bytes as f64 / g.duration_seconds.max(0.001);
        println!(
            "generation {} ({}) written to {}: {} files stored of {}, {} of content in {} ({:?}), {:.1} s, {}/s",
            g.id,
            g.kind.name(),
            dest.spec,
            g.stored_files,
            g.files,
            human_bytes(g.stored_content_bytes),
            human_bytes(g.archive_bytes),
            g.compression,
            g.duration_seconds,
            human_bytes(rate as u64),
        );
        for ar in &g.archives {
            println!(
                "  {:<24} {:>10}  {} entries  ({})",
                ar.file,
                human_bytes(ar.bytes),
                ar.entries,
                ar.mountpoint
            );
        }
        let w = &g.warnings;
        if g.deleted > 0 {
            println!("  {} deletions recorded", g.deleted);
        }
        if w.vanished + w.changed + w.sockets + w.unreadable > 0 {
            println!(
                "warnings: {} vanished, {} changed while read, {} sockets skipped, {} unreadable",
                w.vanished, w.changed, w.sockets, w.unreadable
            );
            for e in &w.examples {
                println!("  {e}");
            }
        }
        for r in &rep.removed {
            println!("removed old generation {r} ({})", policy.describe());
        }
    }
    Ok(if g.result == Outcome::Partial { 1 } else { 0 })
}

/// The identities of `--identity`, if given.
fn identities(file: Option<&Path>) -> Result<Option<Arc<Identities>>> {
    file.map(|f| Identities::load(f).map(Arc::new)).transpose()
}

fn list(a: ListArgs, from: &str) -> Result<u8> {
    let ids = identities(a.identity.as_deref())?;
    let dest = Destination::open(from, a.mount_options.as_deref(), false)?;
    let store = Store::with_identities(&dest.path, ids);
    let listing = store.scan()?;
    let gens = &listing.good;
    // Unreadable generations are listed (damaged) and make the exit 1.
    let code = u8::from(!listing.bad.is_empty());
    if a.json {
        let v: Vec<serde_json::Value> = gens
            .iter()
            .map(|g| {
                serde_json::json!({
                    "generation": g,
                    "verify": store.load_verify(&g.id),
                })
            })
            .chain(
                listing
                    .bad
                    .iter()
                    .map(|b| serde_json::json!({ "id": b.id, "damaged": b.error })),
            )
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(code);
    }
    for b in &listing.bad {
        log::error!("generation {} is damaged: {}", b.id, b.error);
    }
    if gens.is_empty() && listing.bad.is_empty() {
        println!("no backups in {}", dest.spec);
        return Ok(0);
    }
    println!(
        "{:<20} {:<12} {:<20} {:<20} {:>9} {:>10} {:>10} {:<7} verified",
        "GENERATION", "KIND", "DEPENDS ON", "TIME", "FILES", "SIZE", "STORED", "RESULT"
    );
    for g in gens {
        let verified = match store.load_verify(&g.id) {
            Some(v) if v.ok => format!("ok {}", v.verified_at),
            Some(v) => format!("DAMAGED {}", v.verified_at),
            None => "-".into(),
        };
        println!(
            "{:<20} {:<12} {:<20} {:<20} {:>9} {:>10} {:>10} {:<7} {}",
            g.id,
            g.kind.name(),
            g.parent.as_deref().unwrap_or("-"),
            g.started_at,
            g.files,
            human_bytes(g.bytes),
            human_bytes(g.archive_bytes),
            match g.result {
                Outcome::Ok => "ok",
                Outcome::Partial => "partial",
            },
            verified
        );
        if let Some(e) = &g.encryption {
            let names = if store.ids.is_none() {
                " (names need --identity)"
            } else {
                ""
            };
            println!("  encrypted to {}{names}", e.recipients.join(", "));
            for ar in &g.archives {
                println!(
                    "  {:<24} {:>10}  {}",
                    ar.file,
                    human_bytes(ar.bytes),
                    ar.mountpoint
                );
            }
        }
    }
    for b in &listing.bad {
        println!(
            "{:<20} {:<12} {:<20} {:<20} {:>9} {:>10} {:>10} {:<7} DAMAGED (generation.json unreadable)",
            b.id, "?", "?", "?", "?", "?", "?", "damaged"
        );
    }
    Ok(code)
}

/// `backup verify`; a failure (damage, or a verify that could not run) is
/// also sent through `[notify]`.
fn verify(a: VerifyArgs, from: &str, cfg: &Config) -> Result<u8> {
    let json = a.json;
    let rep = match verify_report(a, from) {
        Ok(r) => r,
        Err(e) => {
            crate::notify::send(cfg, &crate::notify::of_verify(from, Err(&e)));
            return Err(e);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    }
    match &rep.problem {
        Some(p) => {
            let lines = damage_lines(&rep);
            log::error!("backup damaged: {p}\n{}", lines.join("\n"));
            let detail: Vec<&str> = lines.iter().take(100).map(|l| l.trim_start()).collect();
            let detail = format!("{}\n", detail.join("\n"));
            crate::notify::send(cfg, &crate::notify::of_verify(from, Ok((p, &detail))));
            Ok(1)
        }
        None => {
            if !json {
                println!(
                    "backup sound: {} generation(s), {} files, {} checked{}",
                    rep.generations.len(),
                    rep.files_checked,
                    human_bytes(rep.bytes_checked),
                    if rep.deep {
                        ", restored and compared"
                    } else {
                        ""
                    }
                );
            }
            Ok(0)
        }
    }
}

fn verify_report(a: VerifyArgs, from: &str) -> Result<backup::VerifyReport> {
    let ids = identities(a.identity.as_deref())?;
    let dest = Destination::open(from, a.mount_options.as_deref(), false)?;
    backup::verify(&backup::VerifyOptions {
        from: dest.path.clone(),
        generation: a.generation,
        deep: a.deep,
        scratch: a.scratch,
        progress: mode(a.quiet || a.json),
        ids,
    })
}

/// Every damaged generation and file of a verify, one per line.
fn damage_lines(rep: &backup::VerifyReport) -> Vec<String> {
    let mut out = Vec::new();
    for g in &rep.damaged_generations {
        out.push(format!("damaged generation {}:", g.id));
        for why in &g.problems {
            out.push(format!("  {why}"));
        }
    }
    for f in &rep.damaged_files {
        out.push(format!(
            "damaged file {} (generation {}, {}): {}",
            f.path, f.generation, f.archive, f.why
        ));
    }
    out
}

fn restore(a: RestoreArgs, from: &str) -> Result<u8> {
    let ids = identities(a.identity.as_deref())?;
    let local = PathBuf::from(from);
    let rep = if !from.contains("://") && local.is_file() {
        if !a.path.is_empty() || a.generation.is_some() || a.at.is_some() {
            bail!("--path, --generation and --at need a backup folder, not a single archive");
        }
        let policy = backup::extract::Policy {
            same_owner: !a.no_same_owner,
            devices: !a.no_devices,
        };
        backup::restore::restore_plain(&local, &a.to, a.overwrite, policy, mode(a.quiet || a.json))?
    } else {
        let dest = Destination::open(from, a.mount_options.as_deref(), false)?;
        let mut generation = a.generation;
        if let Some(at) = &a.at {
            let (g, line) = Store::new(&dest.path).pick_at(at)?;
            if a.json {
                eprintln!("lifeboat: {line}");
            } else {
                println!("{line}");
            }
            generation = Some(g.id);
        }
        let res = backup::restore::restore_report(&backup::RestoreOptions {
            from: dest.path.clone(),
            to: a.to.clone(),
            generation,
            paths: a.path,
            overwrite: a.overwrite,
            no_same_owner: a.no_same_owner,
            no_devices: a.no_devices,
            progress: mode(a.quiet || a.json),
            ids,
        });
        match res {
            Ok(rep) => rep,
            // A damaged chain or manifest: nothing to restore from.
            Err(e) => match e.downcast::<backup::restore::Damaged>() {
                Ok(d) => {
                    log::error!("restore impossible: {d}");
                    return Ok(1);
                }
                Err(e) => return Err(e),
            },
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!(
            "restored {} into {}: {} files, {} in {:.1} s",
            rep.generation,
            a.to.display(),
            rep.files,
            human_bytes(rep.bytes),
            rep.seconds
        );
        if !rep.warnings.is_empty() {
            println!(
                "warnings ({}): metadata the target did not take:",
                rep.warnings.len()
            );
            for w in rep.warnings.iter().take(20) {
                println!("  {w}");
            }
        }
    }
    // Damage: everything else is restored; name every file that is not.
    let damaged = rep.damage_summary();
    if let Some(summary) = &damaged {
        log::error!("restore incomplete: {summary}");
        for d in &rep.damage {
            eprintln!("  damage: {d}");
        }
        for l in &rep.lost {
            eprintln!("  lost: {} ({})", l.path, l.why);
        }
    }
    // Entries that would have left the target: an error (exit 2) naming them.
    rep.refusals(&a.to)?;
    Ok(u8::from(damaged.is_some()))
}

/// A policy `backup prune` can apply.
fn check_policy(policy: &Policy) -> Result<()> {
    if policy.is_empty() {
        bail!("no retention rule: give --keep N or --keep-last/-hourly/-daily/-weekly/-monthly/-yearly N, or set backup.keep or backup.keep_* in the configuration");
    }
    if policy.chains == Some(0) {
        bail!("--keep must be at least 1");
    }
    Ok(())
}

/// `backup prune`: the retention rules applied (or shown, `--dry-run`).
fn prune(a: PruneArgs, from: &str, policy: &Policy) -> Result<u8> {
    let dest = Destination::open(from, a.mount_options.as_deref(), false)?;
    let store = Store::new(&dest.path);
    let _lock = (!a.dry_run).then(|| store.lock()).transpose()?;
    let plan = store.prune_plan(policy)?;
    let removed = if a.dry_run {
        Vec::new()
    } else {
        store.prune(policy)?
    };
    print_prune(&a, &plan, &removed, policy)
}

/// What `backup prune` did (or would do), as text or `--json`.
pub(super) fn print_prune(
    a: &PruneArgs,
    plan: &backup::generation::PrunePlan,
    removed: &[String],
    policy: &Policy,
) -> Result<u8> {
    if a.json {
        let v = serde_json::json!({
            "dry_run": a.dry_run,
            "policy": policy,
            "decisions": plan.decisions,
            "damaged_removed": plan.damaged,
            "removed": removed,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let verb = if a.dry_run { "would remove" } else { "remove" };
    for (g, d) in plan.generations.iter().zip(&plan.decisions) {
        let (what, why) = match d.keep {
            true => ("keep", d.reasons.join(", ")),
            false => (verb, "no rule keeps it".to_string()),
        };
        println!(
            "{what:<12} {:<20} {:<12} {}  {why}",
            g.id,
            g.kind.name(),
            crate::util::local_time(backup::retention::epoch_of(g)),
        );
    }
    for b in &plan.damaged {
        println!(
            "{verb:<12} {:<20} damaged, older than every generation kept",
            b.id
        );
    }
    let gone = plan.decisions.iter().filter(|d| !d.keep).count() + plan.damaged.len();
    let kept = plan.decisions.len() - plan.decisions.iter().filter(|d| !d.keep).count();
    match a.dry_run {
        true => println!(
            "dry run: {gone} generation(s) would be removed, {kept} kept ({})",
            policy.describe()
        ),
        false => println!(
            "removed {} generation(s), kept {kept} ({})",
            removed.len(),
            policy.describe()
        ),
    }
    Ok(0)
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
