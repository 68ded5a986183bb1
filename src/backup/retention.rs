//! Retention: which generations a policy keeps.
//!
//! The calendar rules follow restic's `forget`: going from the newest
//! generation to the oldest, each rule (`last`, `hourly`, `daily`,
//! `weekly`, `monthly`, `yearly`) keeps the newest generation of each of
//! its last N periods that have one. `chains` (`--keep N`, the older rule)
//! keeps the newest N full chains whole. The union is kept, then closed
//! over chains: a kept incremental or differential keeps every generation
//! its restore needs, so no kept generation ever loses a parent. Periods
//! are in local time, as an admin reads them.

use serde::Serialize;

use super::generation::Generation;
use crate::util::CivilTime;

/// What to keep. Nothing set keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The newest N full chains (`--keep N`, `backup.keep`).
    pub chains: Option<usize>,
    pub last: usize,
    pub hourly: usize,
    pub daily: usize,
    pub weekly: usize,
    pub monthly: usize,
    pub yearly: usize,
}

impl Policy {
    /// Only `--keep N`.
    pub fn chains(n: usize) -> Policy {
        Policy {
            chains: Some(n),
            ..Policy::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        *self
            == Policy {
                chains: None,
                ..Policy::default()
            }
    }

    /// The rules with counts, for messages: `--keep-daily 7 --keep-weekly 4`.
    pub fn describe(&self) -> String {
        let mut out: Vec<String> = self.chains.iter().map(|n| format!("--keep {n}")).collect();
        for (rule, n) in self.calendar() {
            if n > 0 {
                out.push(format!("--keep-{} {n}", rule.name()));
            }
        }
        out.join(" ")
    }

    fn calendar(&self) -> [(Rule, usize); 6] {
        [
            (Rule::Last, self.last),
            (Rule::Hourly, self.hourly),
            (Rule::Daily, self.daily),
            (Rule::Weekly, self.weekly),
            (Rule::Monthly, self.monthly),
            (Rule::Yearly, self.yearly),
        ]
    }
}

/// A calendar rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }

    /// The period of a moment, as shown: `2026-11-20 14h`, `2026-W47`.
    fn period(self, t: &CivilTime, index: usize) -> String {
        match self {
            Rule::Last => format!("#{}", index + 1),
            Rule::Hourly => format!("{:04}-{:02}-{:02} {:02}h", t.year, t.month, t.day, t.hour),
            Rule::Daily => format!("{:04}-{:02}-{:02}", t.year, t.month, t.day),
            Rule::Weekly => {
                let (y, w) = t.iso_week();
                format!("{y:04}-W{w:02}")
            }
            Rule::Monthly => format!("{:04}-{:02}", t.year, t.month),
            Rule::Yearly => format!("{:04}", t.year),
        }
    }
}

/// Why a generation stays or goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub keep: bool,
    /// Why it stays: `daily 2026-11-20`, `needed by ID`...; empty when it
    /// goes.
    pub reasons: Vec<String>,
}

/// The decision for each generation of `gens` (oldest first, as
/// [`super::Store::scan`] lists them), in the same order. `zone` breaks a
/// time down into the periods' calendar ([`crate::util::local_time`]).
pub fn plan(
    gens: &[Generation],
    policy: &Policy,
    zone: &dyn Fn(i64) -> CivilTime,
) -> Vec<Decision> {
    let mut out: Vec<Decision> = gens
        .iter()
        .map(|g| Decision {
            id: g.id.clone(),
            keep: policy.is_empty(),
            reasons: Vec::new(),
        })
        .collect();
    if policy.is_empty() {
        for d in &mut out {
            d.reasons.push("no retention rule set".into());
        }
        return out;
    }
    keep_chains(gens, policy, &mut out);
    keep_calendar(gens, policy, zone, &mut out);
    close_over_chains(gens, &mut out);
    out
}

/// The base (full) of a generation's chain.
fn base_of(g: &Generation) -> &str {
    g.chain.first().map_or(g.id.as_str(), String::as_str)
}

fn keep_chains(gens: &[Generation], policy: &Policy, out: &mut [Decision]) {
    let Some(n) = policy.chains else { return };
    let mut bases: Vec<&str> = Vec::new();
    for g in gens.iter().rev() {
        let b = base_of(g);
        if !bases.contains(&b) {
            bases.push(b);
        }
    }
    bases.truncate(n);
    for (g, d) in gens.iter().zip(out.iter_mut()) {
        if bases.contains(&base_of(g)) {
            d.keep = true;
            d.reasons
                .push(format!("one of the newest {n} full chains (--keep)"));
        }
    }
}

fn keep_calendar(
    gens: &[Generation],
    policy: &Policy,
    zone: &dyn Fn(i64) -> CivilTime,
    out: &mut [Decision],
) {
    let mut left: Vec<(Rule, usize, Option<String>)> = policy
        .calendar()
        .into_iter()
        .map(|(r, n)| (r, n, None))
        .collect();
    for (index, i) in (0..gens.len()).rev().enumerate() {
        let t = zone(epoch_of(&gens[i]));
        for (rule, count, last) in left.iter_mut() {
            if *count == 0 {
                continue;
            }
            let period = rule.period(&t, index);
            if last.as_deref() != Some(period.as_str()) {
                out[i].keep = true;
                out[i].reasons.push(format!("{} {period}", rule.name()));
                *count -= 1;
                *last = Some(period);
            }
        }
    }
}

/// Every generation a kept one's restore needs is kept too.
fn close_over_chains(gens: &[Generation], out: &mut [Decision]) {
    for i in (0..gens.len()).rev() {
        if !out[i].keep {
            continue;
        }
        let g = &gens[i];
        for id in g.chain.iter().filter(|c| **c != g.id) {
            if let Some(j) = gens.iter().position(|x| &x.id == id) {
                if !out[j].keep {
                    out[j].keep = true;
                    out[j].reasons.push(format!("needed by {}", g.id));
                }
            }
        }
    }
}

/// A generation's start, in epoch seconds.
pub fn epoch_of(g: &Generation) -> i64 {
    i64::try_from(g.started_ns.div_euclid(1_000_000_000)).unwrap_or(0)
}

#[cfg(test)]
mod tests;
