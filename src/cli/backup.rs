//! `lifeboat backup create|list|verify|restore`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::backup::dest::Destination;
use crate::backup::generation::{GenKind, Outcome};
use crate::backup::progress::Mode;
use crate::backup::seal::Identities;
use crate::backup::walk::Excludes;
use crate::backup::{self, Compression, Store};
use crate::config::Config;
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
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Backup folder: a directory (or mounted disk), nfs://HOST/EXPORT/PATH
    /// or cifs://HOST/SHARE/PATH [default: backup.destination].
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
    /// Backup folder (directory, nfs:// or cifs://) [default:
    /// backup.destination].
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
    /// Backup folder (directory, nfs:// or cifs://) [default:
    /// backup.destination].
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
    #[arg(long, value_name = "ID")]
    pub generation: Option<String>,

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
            let b = &cfg.backup;
            let to = destination(a.to.take(), "--to", cfg)?;
            a.incremental = a.incremental || (b.incremental.value && !a.full);
            a.compression = a.compression.or(Some(b.compression.value.0));
            a.level = a.level.or(b.level.value.map(|l| l.0));
            a.threads = a.threads.or(b.threads.value.map(|t| t.0 as u32));
            if a.exclude.is_empty() {
                a.exclude = b.excludes.value.clone();
            }
            a.keep = a.keep.or(b.keep.value.map(|k| k.0 as usize));
            if a.encrypt_to.is_empty() {
                a.encrypt_to = b.encrypt_to.value.clone();
            }
            a.mount_options = a.mount_options.or(b.mount_options.value.clone());
            let every = backup::create::FullEvery {
                count: b.full_every.value.0,
                age: b.full_every_age.value.map(|d| d.0),
            };
            create(
                a,
                &to,
                &cfg.capture.layout_file.value,
                &cfg.rescue.output.value,
                every,
            )
        }
        BackupCmd::List(mut a) => {
            let from = destination(a.from.take(), "--from", cfg)?;
            a.mount_options = a.mount_options.or(cfg.backup.mount_options.value.clone());
            list(a, &from)
        }
        BackupCmd::Verify(mut a) => {
            let from = destination(a.from.take(), "--from", cfg)?;
            a.mount_options = a.mount_options.or(cfg.backup.mount_options.value.clone());
            verify(a, &from)
        }
        BackupCmd::Restore(mut a) => {
            let from = destination(a.from.take(), "--from", cfg)?;
            a.mount_options = a.mount_options.or(cfg.backup.mount_options.value.clone());
            restore(a, &from)
        }
    }
}

/// The backup folder: the flag, else backup.destination.
fn destination(flag: Option<String>, name: &str, cfg: &Config) -> Result<String> {
    match flag.or_else(|| cfg.backup.destination.value.clone()) {
        Some(d) => Ok(d),
        None => bail!(
            "no backup folder: give {name} DEST or set backup.destination in {}",
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
fn create(
    a: CreateArgs,
    to: &str,
    default_layout: &Path,
    rescue_output: &Path,
    full_every: backup::create::FullEvery,
) -> Result<u8> {
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
    if a.keep == Some(0) {
        bail!("--keep must be at least 1");
    }
    let dest = Destination::open(to, a.mount_options.as_deref(), true)?;
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    });
    let rep = backup::create(&backup::CreateOptions {
        dest: dest.path.clone(),
        sources,
        layout_file,
        incremental: a.incremental,
        compression: a.compression.unwrap_or(Compression::Zstd),
        level: a.level,
        threads,
        excludes,
        keep: a.keep,
        full_every,
        progress: mode(a.quiet || a.json),
        encrypt_to: backup::seal::Recipients::optional(&a.encrypt_to)?,
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
            kind_name(g.kind),
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
            println!("removed old generation {r} (--keep)");
        }
    }
    Ok(if g.result == Outcome::Partial { 1 } else { 0 })
}

fn kind_name(k: GenKind) -> &'static str {
    match k {
        GenKind::Full => "full",
        GenKind::Incremental => "incremental",
    }
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
        eprintln!("lifeboat: generation {} is damaged: {}", b.id, b.error);
    }
    if gens.is_empty() && listing.bad.is_empty() {
        println!("no backups in {}", dest.spec);
        return Ok(0);
    }
    println!(
        "{:<20} {:<11} {:<20} {:>9} {:>10} {:>10} {:<7} verified",
        "GENERATION", "KIND", "TIME", "FILES", "SIZE", "STORED", "RESULT"
    );
    for g in gens {
        let verified = match store.load_verify(&g.id) {
            Some(v) if v.ok => format!("ok {}", v.verified_at),
            Some(v) => format!("DAMAGED {}", v.verified_at),
            None => "-".into(),
        };
        println!(
            "{:<20} {:<11} {:<20} {:>9} {:>10} {:>10} {:<7} {}",
            g.id,
            kind_name(g.kind),
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
            "{:<20} {:<11} {:<20} {:>9} {:>10} {:>10} {:<7} DAMAGED (generation.json unreadable)",
            b.id, "?", "?", "?", "?", "?", "damaged"
        );
    }
    Ok(code)
}

fn verify(a: VerifyArgs, from: &str) -> Result<u8> {
    let ids = identities(a.identity.as_deref())?;
    let dest = Destination::open(from, a.mount_options.as_deref(), false)?;
    let rep = backup::verify(&backup::VerifyOptions {
        from: dest.path.clone(),
        generation: a.generation,
        deep: a.deep,
        scratch: a.scratch,
        progress: mode(a.quiet || a.json),
        ids,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    }
    match &rep.problem {
        Some(p) => {
            eprintln!("lifeboat: backup damaged: {p}");
            for g in &rep.damaged_generations {
                eprintln!("  damaged generation {}:", g.id);
                for why in &g.problems {
                    eprintln!("    {why}");
                }
            }
            for f in &rep.damaged_files {
                eprintln!(
                    "  damaged file {} (generation {}, {}): {}",
                    f.path, f.generation, f.archive, f.why
                );
            }
            Ok(1)
        }
        None => {
            if !a.json {
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

fn restore(a: RestoreArgs, from: &str) -> Result<u8> {
    let ids = identities(a.identity.as_deref())?;
    let local = PathBuf::from(from);
    let rep = if !from.contains("://") && local.is_file() {
        if !a.path.is_empty() || a.generation.is_some() {
            bail!("--path and --generation need a backup folder, not a single archive");
        }
        let policy = backup::extract::Policy {
            same_owner: !a.no_same_owner,
            devices: !a.no_devices,
        };
        backup::restore::restore_plain(&local, &a.to, a.overwrite, policy, mode(a.quiet || a.json))?
    } else {
        let dest = Destination::open(from, a.mount_options.as_deref(), false)?;
        let res = backup::restore::restore_report(&backup::RestoreOptions {
            from: dest.path.clone(),
            to: a.to.clone(),
            generation: a.generation,
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
                    eprintln!("lifeboat: restore impossible: {d}");
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
        eprintln!("lifeboat: restore incomplete: {summary}");
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
