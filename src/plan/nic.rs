//! Which new network interface takes the configuration of which old one.
//!
//! Rules, in order: `--map-nic OLD=NEW` (names or MAC addresses); the same
//! MAC address (the same card, moved); the same driver, in PCI order; then
//! whatever is left, in PCI order (another make of card). Old interfaces
//! left without a new one, and new ones that receive nothing, are reported.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::layout::NetInterface;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPair {
    pub old: NetInterface,
    pub new: NetInterface,
    /// `--map-nic`, `same MAC`, `same driver virtio_net, PCI order`...
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicPlan {
    pub pairs: Vec<NicPair>,
    /// Old interfaces without a new one: their configuration stays as it is.
    pub unmatched: Vec<NetInterface>,
    /// New interfaces that receive no old configuration.
    pub unused: Vec<NetInterface>,
}

/// `eth0 (52:54:00:12:34:56, virtio_net, PCI 0000:00:03.0)`.
pub fn describe(n: &NetInterface) -> String {
    let mut parts = vec![n.mac.clone()];
    parts.extend(n.driver.clone());
    parts.extend(n.pci_path.as_ref().map(|p| format!("PCI {p}")));
    format!("{} ({})", n.name, parts.join(", "))
}

/// Parses `OLD=NEW` arguments of `--map-nic`.
pub fn parse_nic_maps(args: &[String]) -> Result<Vec<(String, String)>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() => Ok((o.to_string(), n.to_string())),
            _ => bail!(
                "bad --map-nic {a:?}: expected OLD=NEW (interface names or MAC addresses), \
                 e.g. --map-nic ens3=eth0"
            ),
        })
        .collect()
}

fn is(n: &NetInterface, key: &str) -> bool {
    n.name == key || n.mac.eq_ignore_ascii_case(key)
}

fn pci_key(n: &NetInterface) -> (Option<String>, String) {
    (n.pci_path.clone(), n.name.clone())
}

/// How an old interface finds its new one, tried in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// The same MAC address: the same card.
    Mac,
    /// The same kernel name (the rescue system names cards eth0, eth1...).
    Name,
    /// The same driver, in PCI order.
    Driver,
    /// Whatever is left, in PCI order.
    Order,
}

impl Rule {
    /// Whether `n` takes `o` under this rule, and the reason shown.
    fn pairs(self, o: &NetInterface, n: &NetInterface) -> Option<String> {
        let d = |x: &NetInterface| x.driver.clone().unwrap_or_else(|| "unknown".into());
        match self {
            Rule::Mac => n
                .mac
                .eq_ignore_ascii_case(&o.mac)
                .then(|| "same MAC".into()),
            Rule::Name => (n.name == o.name).then(|| "same name".into()),
            Rule::Driver => (o.driver.is_some() && n.driver == o.driver)
                .then(|| format!("same driver {}, PCI order", d(o))),
            Rule::Order => Some(format!("PCI order (driver {} -> {})", d(o), d(n))),
        }
    }
}

/// Maps the old interfaces onto the new ones (a recovered system's
/// configuration): `--map-nic`, then the same MAC, the same driver in PCI
/// order, and PCI order.
pub fn map_nics(
    old: &[NetInterface],
    new: &[NetInterface],
    maps: &[(String, String)],
) -> Result<NicPlan> {
    map_with(old, new, maps, &[Rule::Mac, Rule::Driver, Rule::Order])
}

/// Maps the layout's interfaces onto the rescue system's (whose kernel
/// names them eth0, eth1...): the same MAC, then the same name, then the
/// same driver in PCI order, then PCI order.
pub fn map_rescue_nics(old: &[NetInterface], new: &[NetInterface]) -> NicPlan {
    map_with(
        old,
        new,
        &[],
        &[Rule::Mac, Rule::Name, Rule::Driver, Rule::Order],
    )
    .expect("without --map-nic arguments mapping cannot fail")
}

fn map_with(
    old: &[NetInterface],
    new: &[NetInterface],
    maps: &[(String, String)],
    rules: &[Rule],
) -> Result<NicPlan> {
    let mut olds: Vec<&NetInterface> = old.iter().collect();
    let mut news: Vec<&NetInterface> = new.iter().collect();
    olds.sort_by_key(|n| pci_key(n));
    news.sort_by_key(|n| pci_key(n));
    let mut pairs = Vec::new();
    let mut take = |o: &NetInterface,
                    n: &NetInterface,
                    reason: String,
                    olds: &mut Vec<&NetInterface>,
                    news: &mut Vec<&NetInterface>| {
        olds.retain(|x| *x != o);
        news.retain(|x| *x != n);
        pairs.push(NicPair {
            old: o.clone(),
            new: n.clone(),
            reason,
        });
    };
    for (ko, kn) in maps {
        let Some(o) = olds.iter().copied().find(|x| is(x, ko)) else {
            bail!(
                "--map-nic {ko}={kn}: no interface {ko} in the layout (it has: {})",
                list(old)
            );
        };
        let Some(n) = news.iter().copied().find(|x| is(x, kn)) else {
            bail!(
                "--map-nic {ko}={kn}: no free interface {kn} here (there are: {})",
                list(new)
            );
        };
        take(o, n, "--map-nic".into(), &mut olds, &mut news);
    }
    for rule in rules {
        for o in olds.clone() {
            let found = news
                .iter()
                .copied()
                .find_map(|n| rule.pairs(o, n).map(|r| (n, r)));
            if let Some((n, reason)) = found {
                take(o, n, reason, &mut olds, &mut news);
            }
        }
    }
    Ok(NicPlan {
        pairs,
        unmatched: olds.into_iter().cloned().collect(),
        unused: news.into_iter().cloned().collect(),
    })
}

fn list(ns: &[NetInterface]) -> String {
    if ns.is_empty() {
        return "none".into();
    }
    ns.iter().map(describe).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(name: &str, mac: &str, driver: &str, pci: &str) -> NetInterface {
        NetInterface {
            name: name.into(),
            mac: mac.into(),
            driver: Some(driver.into()),
            pci_path: Some(pci.into()),
        }
    }

    fn names(p: &NicPlan) -> Vec<(String, String, String)> {
        p.pairs
            .iter()
            .map(|x| (x.old.name.clone(), x.new.name.clone(), x.reason.clone()))
            .collect()
    }

    #[test]
    fn mac_first_then_driver_in_pci_order_then_pci_order() {
        let old = [
            nic("eno1", "3c:ec:ef:00:00:01", "e1000e", "0000:00:1f.6"),
            nic("enp1s0f0", "3c:ec:ef:00:00:02", "ixgbe", "0000:01:00.0"),
            nic("enp1s0f1", "3c:ec:ef:00:00:03", "ixgbe", "0000:01:00.1"),
            nic("ens9", "52:54:00:00:00:09", "virtio_net", "0000:00:09.0"),
        ];
        let new = [
            nic("eth3", "aa:00:00:00:00:03", "ixgbe", "0000:3b:00.1"),
            nic("eth2", "aa:00:00:00:00:02", "ixgbe", "0000:3b:00.0"),
            // The e1000e card, moved to this machine.
            nic("eth0", "3C:EC:EF:00:00:01", "e1000e", "0000:00:19.0"),
            nic("eth1", "aa:00:00:00:00:01", "igb", "0000:02:00.0"),
        ];
        let p = map_nics(&old, &new, &[]).unwrap();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            names(&p),
            [
                s("eno1", "eth0", "same MAC"),
                s("enp1s0f0", "eth2", "same driver ixgbe, PCI order"),
                s("enp1s0f1", "eth3", "same driver ixgbe, PCI order"),
                s("ens9", "eth1", "PCI order (driver virtio_net -> igb)"),
            ]
        );
        assert!(p.unmatched.is_empty() && p.unused.is_empty());
    }

    #[test]
    fn map_nic_overrides_and_leftovers_are_reported() {
        let old = [
            nic("ens3", "52:54:00:00:00:03", "virtio_net", "0000:00:03.0"),
            nic("ens4", "52:54:00:00:00:04", "virtio_net", "0000:00:04.0"),
        ];
        let new = [nic(
            "eth0",
            "52:54:00:aa:00:01",
            "virtio_net",
            "0000:00:05.0",
        )];
        let maps = parse_nic_maps(&["ens4=52:54:00:AA:00:01".into()]).unwrap();
        let p = map_nics(&old, &new, &maps).unwrap();
        assert_eq!(
            names(&p),
            [("ens4".into(), "eth0".into(), "--map-nic".into())]
        );
        assert_eq!(p.unmatched, [old[0].clone()]);
        let err = map_nics(&old, &new, &[("ens7".into(), "eth0".into())])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--map-nic ens7=eth0: no interface ens7 in the layout (it has: ens3 (52:54:00:00:00:03, virtio_net, PCI 0000:00:03.0)"), "{err}");
        assert!(parse_nic_maps(&["ens3".into()]).is_err());
        let more_new = map_nics(
            &old[..1],
            &[
                new[0].clone(),
                nic("eth1", "52:54:00:aa:00:02", "e1000", "0000:00:06.0"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(more_new.unused.len(), 1);
        assert_eq!(more_new.unused[0].name, "eth1");
    }

    #[test]
    fn the_rescue_matches_by_mac_then_name_then_order() {
        let old = [
            nic("eth0", "3c:ec:ef:00:00:02", "ixgbe", "0000:01:00.0"),
            nic("eth1", "3c:ec:ef:00:00:01", "e1000e", "0000:00:1f.6"),
            nic("ens9", "52:54:00:00:00:09", "virtio_net", "0000:00:09.0"),
            nic("ens10", "52:54:00:00:00:0a", "virtio_net", "0000:00:0a.0"),
        ];
        let new = [
            // The ixgbe card itself.
            nic("eth0", "3C:EC:EF:00:00:02", "ixgbe", "0000:01:00.0"),
            // Another card, named as the host's e1000e was: taken by name.
            nic("eth1", "aa:00:00:00:00:01", "igb", "0000:02:00.0"),
            nic("eth2", "aa:00:00:00:00:02", "e1000", "0000:03:00.0"),
        ];
        let p = map_rescue_nics(&old, &new);
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            names(&p),
            [
                s("eth0", "eth0", "same MAC"),
                s("eth1", "eth1", "same name"),
                s("ens9", "eth2", "PCI order (driver virtio_net -> e1000)"),
            ]
        );
        assert_eq!(p.unmatched, [old[3].clone()]);
        // Recovery keeps its rules: no pairing by name there.
        let r = map_nics(&old, &new, &[]).unwrap();
        assert_eq!(
            (r.pairs[1].old.name.as_str(), r.pairs[1].new.name.as_str()),
            ("ens9", "eth1")
        );
    }
}
