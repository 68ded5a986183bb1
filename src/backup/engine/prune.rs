//! Retention on restic and Borg repositories: lifeboat's own rules
//! ([`crate::backup::retention`], the same as for a backup folder) decide
//! per generation; then every snapshot/archive of a dropped generation
//! goes together (its metadata first, then each file system's), never one
//! file system of a generation alone, and the engine frees the space.
//!
//! A repository shared by several servers: each applies the rules to its
//! own generations (those of its host name), as restic's `forget` groups
//! by host.

use std::collections::BTreeSet;

use anyhow::Result;

use super::{ops, Repo};
use crate::backup::generation::{BadGeneration, Listing, PrunePlan};
use crate::backup::retention::Policy;

/// What `policy` does to this host's generations in `repo`; generations
/// whose record is unreadable count as damaged, as in a backup folder.
pub fn plan(repo: &Repo, policy: &Policy) -> Result<PrunePlan> {
    let host = ops::hostname();
    let mut listing = Listing::default();
    for (meta, g) in ops::list(repo)? {
        if meta.host != host {
            continue;
        }
        match g {
            Ok(g) => listing.good.push(g),
            Err(e) => listing.bad.push(BadGeneration {
                id: meta.generation,
                error: format!("{e:#}"),
            }),
        }
    }
    Ok(PrunePlan::of(listing, policy))
}

/// The generations `plan` drops, oldest first.
pub fn dropped(plan: &PrunePlan) -> Vec<String> {
    let gone = plan.decisions.iter().filter(|d| !d.keep).map(|d| &d.id);
    let damaged = plan.damaged.iter().map(|b| &b.id);
    let set: BTreeSet<&String> = gone.chain(damaged).collect();
    set.into_iter().cloned().collect()
}

/// Removes what `plan` drops; returns the removed generation ids.
pub fn apply(repo: &Repo, plan: &PrunePlan) -> Result<Vec<String>> {
    let gone = dropped(plan);
    if gone.is_empty() {
        return Ok(gone);
    }
    log::info!(
        "{}: removing generation(s) {}",
        repo.spec(),
        gone.join(", ")
    );
    let set: BTreeSet<String> = gone.iter().cloned().collect();
    repo.remove_generations(&set, &ops::hostname())?;
    Ok(gone)
}

/// `policy` applied to this host's generations (nothing set: nothing
/// goes); returns the removed generation ids.
pub fn prune(repo: &Repo, policy: &Policy) -> Result<Vec<String>> {
    if policy.is_empty() {
        return Ok(Vec::new());
    }
    apply(repo, &plan(repo, policy)?)
}
