use super::*;
use crate::backup::generation::{sample, GenKind};
use crate::util::{parse_rfc3339, stamp, utc_time};

/// Generations at these UTC times: a full every Monday 02:00 (and the
/// first), a differential every Thursday 02:00, an incremental otherwise.
fn simulate(times: &[i64]) -> Vec<Generation> {
    let mut gens: Vec<Generation> = Vec::new();
    let mut full: Option<Generation> = None;
    for &t in times {
        let id = stamp(t);
        let c = utc_time(t);
        let weekday = (c.days() + 3).rem_euclid(7); // Monday = 0
        let (kind, mut chain) = match (&full, weekday, c.hour) {
            (None, _, _) | (_, 0, 2) => (GenKind::Full, Vec::new()),
            (Some(f), 3, 2) => (GenKind::Differential, f.chain.clone()),
            _ => (GenKind::Incremental, gens.last().unwrap().chain.clone()),
        };
        chain.push(id);
        let g = sample(kind, &chain, i128::from(t) * 1_000_000_000);
        if kind == GenKind::Full {
            full = Some(g.clone());
        }
        gens.push(g);
    }
    gens
}

/// Twice a day (02:00 and 14:00 UTC) through 2026.
fn year() -> Vec<Generation> {
    let start = parse_rfc3339("2026-01-01T02:00:00Z").unwrap();
    let times: Vec<i64> = (0..365 * 2).map(|i| start + i * 12 * 3600).collect();
    simulate(&times)
}

fn kept(gens: &[Generation], policy: &Policy) -> Vec<String> {
    let plan = plan(gens, policy, &utc_time);
    assert_eq!(plan.len(), gens.len());
    // No kept generation loses a parent: every chain it names stays.
    for (g, d) in gens.iter().zip(&plan) {
        assert_eq!(g.id, d.id);
        assert_eq!(d.keep, !d.reasons.is_empty(), "{d:?}");
        if d.keep {
            for c in &g.chain {
                let p = plan.iter().find(|x| &x.id == c).unwrap();
                assert!(p.keep, "{} kept but {c} of its chain goes", g.id);
            }
        }
    }
    plan.into_iter().filter(|d| d.keep).map(|d| d.id).collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter()
        .map(|t| stamp(parse_rfc3339(&format!("2026-{t}:00:00Z")).unwrap()))
        .collect()
}

#[test]
fn a_year_of_generations_keeps_exactly_the_calendar_and_its_chains() {
    let gens = year();
    assert_eq!(gens.len(), 730);
    let policy = Policy {
        last: 3,
        daily: 4,
        weekly: 3,
        monthly: 3,
        yearly: 2,
        ..Policy::default()
    };
    let mut want = ids(&[
        // October, newest: Saturday 31 14:00, with its chain from the full
        // of Monday 26 and the differential of Thursday 29.
        "10-26T02", "10-29T02", "10-29T14", "10-30T02", "10-30T14", "10-31T02", "10-31T14",
        // November, newest: Monday 30 14:00 on that day's full.
        "11-30T02", "11-30T14",
        // Week 51, newest: Sunday 20 14:00 (full 14, differential 17).
        "12-14T02", "12-17T02", "12-17T14", "12-18T02", "12-18T14", "12-19T02", "12-19T14",
        "12-20T02", "12-20T14",
        // Week 52, newest: Sunday 27 14:00 (full 21, differential 24).
        "12-21T02", "12-24T02", "12-24T14", "12-25T02", "12-25T14", "12-26T02", "12-26T14",
        "12-27T02", "12-27T14",
        // Days 28 to 31 (the last three, four days, week 53, December,
        // 2026) with everything their incrementals need.
        "12-28T02", "12-28T14", "12-29T02", "12-29T14", "12-30T02", "12-30T14", "12-31T02",
        "12-31T14",
    ]);
    want.sort();
    assert_eq!(kept(&gens, &policy), want);
}

#[test]
fn a_kept_differential_keeps_its_full_but_not_the_incrementals_between() {
    let gens = year();
    // Thursday 31 02:00 is a differential on Monday 28's full; 14:00 an
    // incremental on it.
    let policy = Policy {
        last: 1,
        ..Policy::default()
    };
    assert_eq!(
        kept(&gens, &policy),
        ids(&["12-28T02", "12-31T02", "12-31T14"])
    );
    let plan = plan(&gens, &policy, &utc_time);
    let why = |id: &str| {
        plan.iter()
            .find(|d| d.id == ids(&[id])[0])
            .unwrap()
            .reasons
            .clone()
    };
    assert_eq!(why("12-31T14"), ["last #1"]);
    let newest = ids(&["12-31T14"])[0].clone();
    assert_eq!(why("12-31T02"), [format!("needed by {newest}")]);
    assert_eq!(why("12-28T02"), [format!("needed by {newest}")]);
}

#[test]
fn periods_without_a_generation_do_not_count() {
    // Days 1, 2, 5 and 9 of June: daily 3 keeps 9, 5 and 2 (restic's rule:
    // the last N periods that have one, not the last N calendar days).
    let times: Vec<i64> = ["01", "02", "02", "05", "09"]
        .iter()
        .map(|d| parse_rfc3339(&format!("2026-06-{d}T02:00:00Z")).unwrap())
        .collect();
    let mut gens = simulate(&times);
    // Make them all fulls: only the calendar decides.
    for g in &mut gens {
        g.kind = GenKind::Full;
        g.chain = vec![g.id.clone()];
    }
    // Two generations on the 2nd: the second of them has an id made unique.
    gens[2].id.push_str("-2");
    gens[2].chain = vec![gens[2].id.clone()];
    gens[2].started_ns += 1;
    let policy = Policy {
        daily: 3,
        ..Policy::default()
    };
    let got = kept(&gens, &policy);
    assert_eq!(
        got,
        [gens[2].id.clone(), gens[3].id.clone(), gens[4].id.clone()]
    );
}

#[test]
fn keep_n_chains_alone_is_the_old_rule_and_unions_with_the_calendar() {
    let gens = year();
    // The newest full chain: Monday 28 to Thursday 31.
    let newest_chain = ids(&[
        "12-28T02", "12-28T14", "12-29T02", "12-29T14", "12-30T02", "12-30T14", "12-31T02",
        "12-31T14",
    ]);
    assert_eq!(kept(&gens, &Policy::chains(1)), newest_chain);
    let policy = Policy {
        yearly: 1,
        monthly: 2,
        ..Policy::chains(1)
    };
    // November's newest (Monday 30 14:00) and its full join the chain.
    let mut want = ids(&["11-30T02", "11-30T14"]);
    want.extend(newest_chain);
    assert_eq!(kept(&gens, &policy), want);
    assert_eq!(
        policy.describe(),
        "--keep 1 --keep-monthly 2 --keep-yearly 1"
    );
}

#[test]
fn no_rule_keeps_everything() {
    let gens = year();
    assert!(Policy::default().is_empty());
    assert_eq!(kept(&gens, &Policy::default()).len(), gens.len());
    assert!(!Policy::chains(3).is_empty());
}
