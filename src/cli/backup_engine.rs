//! `backup create|list|verify|restore` with a `restic:` or `borg:`
//! destination (src/backup/engine).

use anyhow::{bail, Result};

use super::backup::{
    plan_sources, print_prune, CreateArgs, ListArgs, PruneArgs, RestoreArgs, VerifyArgs,
};
use crate::backup::engine::{self, ops, prune as engine_prune, Repo, Settings};
use crate::backup::generation::Outcome;
use crate::backup::retention::Policy;
use crate::config::Config;
use crate::util::human_bytes;

/// The repository named by `spec`, when it is one.
pub fn repo(spec: &str, cfg: &Config) -> Result<Option<Repo>> {
    match Repo::split(spec) {
        Some(_) => Ok(Some(Repo::open(spec, &settings(cfg))?)),
        None => Ok(None),
    }
}

/// The engines' settings from the configuration, with the password typed
/// on the terminal when none is configured.
pub fn settings(cfg: &Config) -> Settings {
    Settings {
        ask_password: Some(typed_password),
        ..Settings::from_config(cfg)
    }
}

/// A restic password or Borg passphrase typed on the terminal (not
/// echoed), when stdin is one; None otherwise. `spec` names the
/// repository (`restic:...`, `borg:...`).
fn typed_password(spec: &str) -> Result<Option<String>> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    let pw = crate::recover::keys::ask(&format!("Password of repository {spec} (not shown): "))?;
    if pw.is_empty() {
        bail!("empty password typed for repository {spec}");
    }
    Ok(Some(pw))
}

pub fn create(a: CreateArgs, repo: &Repo, cfg: &Config, policy: Policy) -> Result<u8> {
    if policy.chains == Some(0) {
        bail!("--keep must be at least 1");
    }
    let native_only = [
        ("--incremental", a.incremental),
        ("--compression", a.compression.is_some()),
        ("--level", a.level.is_some()),
        ("--threads", a.threads.is_some()),
        ("--mount-options", a.mount_options.is_some()),
    ];
    for (flag, _) in native_only.iter().filter(|(_, given)| *given) {
        log::warn!(
            "{flag} does not apply to {} repositories (the engine deduplicates and compresses): ignored",
            repo.engine.tool()
        );
    }
    let (sources, layout_file, excludes) =
        plan_sources(&a, &cfg.capture.layout_file.value, &cfg.rescue.output.value)?;
    let rep = engine::create(
        repo,
        &engine::EngineCreate {
            sources,
            layout_file,
            excludes,
            retention: policy,
            progress: if a.quiet || a.json {
                crate::backup::progress::Mode::Quiet
            } else {
                crate::backup::progress::Mode::Auto
            },
        },
    )?;
    let g = &rep.generation;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!(
            "generation {} written to {}: {} files, {} of content, repository grew by {}, {:.1} s",
            g.id,
            repo.spec(),
            g.files,
            human_bytes(g.bytes),
            human_bytes(rep.added_bytes),
            g.duration_seconds
        );
        for ar in &g.archives {
            println!(
                "  {:<32} +{:>10}  {} entries  ({})",
                ar.file,
                human_bytes(ar.bytes),
                ar.entries,
                ar.mountpoint
            );
        }
        let w = &g.warnings;
        if w.vanished + w.sockets + w.unreadable > 0 {
            println!(
                "warnings: {} vanished, {} sockets skipped, {} unreadable",
                w.vanished, w.sockets, w.unreadable
            );
            for e in &w.examples {
                println!("  {e}");
            }
        }
        for r in &rep.removed {
            println!("removed old generation {r} ({})", policy.describe());
        }
    }
    Ok(u8::from(g.result == Outcome::Partial))
}

pub fn list(a: ListArgs, repo: &Repo) -> Result<u8> {
    let all = ops::list(repo)?;
    let code = u8::from(all.iter().any(|(_, g)| g.is_err()));
    if a.json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(m, g)| match g {
                Ok(g) => serde_json::json!({ "generation": g, "host": m.host }),
                Err(e) => serde_json::json!({ "id": m.generation, "damaged": format!("{e:#}") }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(code);
    }
    if all.is_empty() {
        println!("no lifeboat generations in {}", repo.spec());
        return Ok(0);
    }
    println!(
        "{:<20} {:<16} {:<20} {:>9} {:>10} {:>10} RESULT",
        "GENERATION", "HOST", "TIME", "FILES", "SIZE", "ADDED"
    );
    for (m, g) in &all {
        match g {
            Ok(g) => println!(
                "{:<20} {:<16} {:<20} {:>9} {:>10} {:>10} {}",
                g.id,
                m.host,
                g.started_at,
                g.files,
                human_bytes(g.bytes),
                human_bytes(g.archive_bytes),
                match g.result {
                    Outcome::Ok => "ok",
                    Outcome::Partial => "partial",
                }
            ),
            Err(e) => println!(
                "{:<20} {:<16} DAMAGED (generation.json unreadable: {e:#})",
                m.generation, m.host
            ),
        }
    }
    Ok(code)
}

pub fn verify(a: VerifyArgs, repo: &Repo, cfg: &Config) -> Result<u8> {
    let rep = engine::verify(
        repo,
        &engine::EngineVerify {
            generation: a.generation,
            deep: a.deep,
            scratch: a.scratch,
        },
    )?;
    crate::schedule::repository::record_verify(&cfg.state_dir.value, repo, &rep);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    }
    if let Some(p) = &rep.problem {
        log::error!("backup damaged: {p}");
        return Ok(1);
    }
    if !a.json {
        println!(
            "backup sound: {} generation(s), {} files checked against their manifests, {} check passed{}",
            rep.generations.len(),
            rep.files_checked,
            repo.engine.tool(),
            if rep.deep {
                ", restored and compared"
            } else {
                ""
            }
        );
    }
    Ok(0)
}

pub fn restore(a: RestoreArgs, repo: &Repo) -> Result<u8> {
    if a.at.is_some() {
        bail!(
            "--at is not available for {} repositories yet: give --generation ID (see `lifeboat backup list`)",
            repo.engine.tool()
        );
    }
    if a.no_same_owner || a.no_devices {
        bail!(
            "--no-same-owner and --no-devices are not available for {} repositories: the engine restores owners and devices as stored",
            repo.engine.tool()
        );
    }
    let res = engine::restore(
        repo,
        &engine::EngineRestore {
            generation: a.generation,
            to: a.to.clone(),
            paths: a.path.clone(),
            overwrite: a.overwrite,
        },
    );
    let rep = match res {
        Ok(r) => r,
        Err(e) => match e.downcast::<crate::backup::restore::Damaged>() {
            Ok(d) => {
                log::error!("restore incomplete: {d}");
                return Ok(1);
            }
            Err(e) => return Err(e),
        },
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        println!(
            "restored {} into {}: {} files, {} in {:.1} s, every file checked against the manifest",
            rep.generation,
            a.to.display(),
            rep.files,
            human_bytes(rep.bytes),
            rep.seconds
        );
    }
    Ok(0)
}

/// `backup prune` on a repository: lifeboat's rules decide per generation
/// ([`engine_prune`]); `--dry-run` removes nothing.
pub fn prune(a: PruneArgs, repo: &Repo, policy: &Policy) -> Result<u8> {
    let plan = engine_prune::plan(repo, policy)?;
    let removed = if a.dry_run {
        Vec::new()
    } else {
        engine_prune::apply(repo, &plan)?
    };
    print_prune(&a, &plan, &removed, policy)
}
