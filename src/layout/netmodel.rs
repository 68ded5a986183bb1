//! The host's network configuration in the layout (`network_config`): what
//! its kernel had configured at capture time, per link (network cards by
//! MAC address, VLANs, bonds, bridges), the routes and the resolver. The
//! rescue system configures the same from it at boot.
//!
//! A layout is untrusted input: [`NetConfig::check`] validates every name
//! and number before any of them reaches a command line.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BondOptions, BridgeOptions};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetConfig {
    /// Links with hardware below them, lower links before upper ones
    /// (cards, then bonds, VLANs and bridges built on them).
    #[serde(default)]
    pub links: Vec<NetLink>,
    /// Routes set statically (not the kernel's own subnet routes, not
    /// those learnt from DHCP or router advertisements).
    #[serde(default)]
    pub routes: Vec<NetRoute>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetLink {
    /// Kernel name on the host (`ens3`, `bond0`, `ens3.10`, `br0`).
    pub name: String,
    pub kind: LinkKind,
    pub mtu: Option<u32>,
    /// IPv4 from DHCP (an address with the kernel's `dynamic` flag).
    #[serde(default)]
    pub dhcp4: bool,
    /// IPv6 from router advertisements or DHCPv6 (a global `dynamic` one).
    #[serde(default)]
    pub auto6: bool,
    /// Addresses set statically (not `dynamic`, not link-local).
    #[serde(default)]
    pub addresses: Vec<IpPrefix>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LinkKind {
    /// A network card: the layout's `network` interface of this MAC address.
    Ethernet { mac: String },
    /// An 802.1Q VLAN on `parent` (a link name of this list).
    Vlan { parent: String, id: u16 },
    Bond {
        mode: BondMode,
        members: Vec<String>,
        /// Options beyond the mode (optional in layout 1.1).
        #[serde(default, skip_serializing_if = "BondOptions::is_empty")]
        options: BondOptions,
    },
    Bridge {
        members: Vec<String>,
        /// STP and its forwarding delay (optional in layout 1.1).
        #[serde(default, skip_serializing_if = "BridgeOptions::is_empty")]
        options: BridgeOptions,
    },
}

/// The bonding driver's modes, as `ip` and sysfs name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl BondMode {
    pub const ALL: [BondMode; 7] = [
        BondMode::BalanceRr,
        BondMode::ActiveBackup,
        BondMode::BalanceXor,
        BondMode::Broadcast,
        BondMode::Lacp,
        BondMode::BalanceTlb,
        BondMode::BalanceAlb,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }

    pub fn parse(s: &str) -> Option<BondMode> {
        BondMode::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// An address with its prefix length (`10.0.2.50/24`, `2001:db8::5/64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IpPrefix {
    pub address: IpAddr,
    pub prefix: u8,
}

impl IpPrefix {
    /// Parses `ADDR/PREFIX`; the prefix must fit the address family.
    pub fn parse(text: &str) -> Result<IpPrefix> {
        let (a, p) = text.split_once('/').with_context(|| {
            format!("{text:?} has no prefix length: expected ADDR/PREFIX like 10.0.2.50/24")
        })?;
        let address: IpAddr = a
            .parse()
            .map_err(|_| anyhow::anyhow!("{a:?} is not an IP address"))?;
        let prefix: u8 = p
            .parse()
            .map_err(|_| anyhow::anyhow!("prefix length {p:?} is not a number"))?;
        let ip = IpPrefix { address, prefix };
        ip.check()?;
        Ok(ip)
    }

    pub fn check(&self) -> Result<()> {
        let max = if self.address.is_ipv4() { 32 } else { 128 };
        if self.prefix > max {
            bail!(
                "prefix length {} of {} is longer than {max}",
                self.prefix,
                self.address
            );
        }
        Ok(())
    }
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NetRoute {
    /// `0.0.0.0/0` or `::/0` for a default route.
    pub destination: IpPrefix,
    pub gateway: Option<IpAddr>,
    /// The host's link name the route goes out of.
    pub dev: String,
    pub metric: Option<u32>,
}

impl NetRoute {
    pub fn is_default(&self) -> bool {
        self.destination.prefix == 0
    }
}

/// The resolver: systemd-resolved's stub (127.0.0.53) resolved to the
/// upstream servers it forwards to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    #[serde(default)]
    pub search: Vec<String>,
}

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// A kernel interface name: 1 to 15 bytes of letters, digits and `-_.@`,
/// not `.` or `..`, not starting with `-` (never an option to `ip`).
pub fn check_ifname(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    let problem = if name.is_empty() {
        "is empty"
    } else if name.len() > IFNAME_MAX {
        "is longer than 15 bytes"
    } else if name == "." || name == ".." {
        "is not an interface name"
    } else if name.starts_with('-') {
        "starts with '-'"
    } else if !name.chars().all(ok_char) {
        "has a character other than letters, digits and -_.@"
    } else {
        return Ok(());
    };
    bail!("interface name {name:?} {problem}");
}

/// A MAC address: six pairs of hex digits separated by `:`.
pub fn check_mac(mac: &str) -> Result<()> {
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Ok(());
    }
    bail!("MAC address {mac:?} is not six hex pairs like 52:54:00:12:34:56");
}

/// A DNS search domain: labels of letters, digits, `-` and `_`, at most
/// 253 bytes, not starting with `-`.
pub fn check_domain(d: &str) -> Result<()> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && !d.starts_with('-')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        });
    if ok {
        return Ok(());
    }
    bail!("search domain {d:?} is not a domain name like example.com");
}

impl NetConfig {
    /// Every name, MAC address, prefix and reference checked; errors name
    /// the field (`links[2].kind.parent`).
    pub fn check(&self) -> Result<()> {
        let names: Vec<&str> = self.links.iter().map(|l| l.name.as_str()).collect();
        let known = |field: String, n: &str| -> Result<()> {
            check_ifname(n).with_context(|| format!("field `{field}`"))?;
            if !names.contains(&n) {
                bail!("field `{field}`: no link {n:?} in network_config.links");
            }
            Ok(())
        };
        for (i, l) in self.links.iter().enumerate() {
            check_ifname(&l.name).with_context(|| format!("field `links[{i}].name`"))?;
            if names.iter().filter(|n| **n == l.name).count() > 1 {
                bail!("field `links[{i}].name`: link {:?} is listed twice", l.name);
            }
            if let Some(mtu) = l.mtu {
                if !(68..=65535).contains(&mtu) {
                    bail!("field `links[{i}].mtu`: {mtu} is outside 68..65535");
                }
            }
            for (j, a) in l.addresses.iter().enumerate() {
                a.check()
                    .with_context(|| format!("field `links[{i}].addresses[{j}]`"))?;
            }
            match &l.kind {
                LinkKind::Ethernet { mac } => {
                    check_mac(mac).with_context(|| format!("field `links[{i}].kind.mac`"))?
                }
                LinkKind::Vlan { parent, id } => {
                    known(format!("links[{i}].kind.parent"), parent)?;
                    if !(1..=4094).contains(id) {
                        bail!("field `links[{i}].kind.id`: VLAN id {id} is outside 1..4094");
                    }
                }
                LinkKind::Bond { members, .. } | LinkKind::Bridge { members, .. } => {
                    for (j, m) in members.iter().enumerate() {
                        known(format!("links[{i}].kind.members[{j}]"), m)?;
                    }
                }
            }
            if let LinkKind::Bond {
                members, options, ..
            } = &l.kind
            {
                options
                    .check(members)
                    .with_context(|| format!("field `links[{i}].kind.options`"))?;
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            r.destination
                .check()
                .with_context(|| format!("field `routes[{i}].destination`"))?;
            known(format!("routes[{i}].dev"), &r.dev)?;
        }
        for (i, d) in self.dns.search.iter().enumerate() {
            check_domain(d).with_context(|| format!("field `dns.search[{i}]`"))?;
        }
        Ok(())
    }

    /// One line per link, route and the resolver, for `layout show`/`save`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.links {
            let kind = match &l.kind {
                LinkKind::Ethernet { mac } => mac.clone(),
                LinkKind::Vlan { parent, id } => format!("VLAN {id} on {parent}"),
                LinkKind::Bond {
                    mode,
                    members,
                    options,
                } => {
                    let o = options.add_args().join(" ");
                    let o = if o.is_empty() { o } else { format!(" ({o})") };
                    format!("bond {} of {}{o}", mode.as_str(), members.join(" "))
                }
                LinkKind::Bridge { members, options } => {
                    let o = options.add_args().join(" ");
                    let o = if o.is_empty() { o } else { format!(" ({o})") };
                    format!("bridge of {}{o}", members.join(" "))
                }
            };
            let mut what: Vec<String> = l.addresses.iter().map(|a| a.to_string()).collect();
            if l.dhcp4 {
                what.push("DHCP".into());
            }
            if l.auto6 {
                what.push("IPv6 autoconfiguration".into());
            }
            if let Some(m) = l.mtu.filter(|m| *m != 1500) {
                what.push(format!("mtu {m}"));
            }
            out.push(
                format!("network: {} ({kind}) {}", l.name, what.join(", "))
                    .trim_end()
                    .to_string(),
            );
        }
        for r in &self.routes {
            let dest = if r.is_default() {
                "default".to_string()
            } else {
                r.destination.to_string()
            };
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            out.push(format!("route: {dest}{via} dev {}", r.dev));
        }
        if !self.dns.nameservers.is_empty() || !self.dns.search.is_empty() {
            let ns: Vec<String> = self.dns.nameservers.iter().map(|n| n.to_string()).collect();
            let search = match self.dns.search.is_empty() {
                true => String::new(),
                false => format!(", search {}", self.dns.search.join(" ")),
            };
            out.push(format!("DNS: {}{search}", ns.join(" ")));
        }
        out
    }

    pub fn link(&self, name: &str) -> Option<&NetLink> {
        self.links.iter().find(|l| l.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_names() {
        assert_eq!(
            IpPrefix::parse("10.0.2.50/24").unwrap().to_string(),
            "10.0.2.50/24"
        );
        assert_eq!(
            IpPrefix::parse("2001:db8::5/64").unwrap().to_string(),
            "2001:db8::5/64"
        );
        for bad in [
            "10.0.2.50/33",
            "10.0.2.50",
            "10.0.2.50/-1",
            "10.0.2.50/24/1",
            "2001:db8::5/129",
            "10.0.2/24",
            "10.0.2.50/ 24",
            "10.0.2.50/256",
        ] {
            assert!(IpPrefix::parse(bad).is_err(), "{bad}");
        }
        for ok in ["eth0", "ens3.10", "bond0", "enp1s0f0np0", "br-lan_1"] {
            check_ifname(ok).unwrap();
        }
        for bad in [
            "",
            "..",
            "-j",
            "eth0 up",
            "eth0;reboot",
            "a/b",
            "abcdefghijklmnop",
            "eth0\n",
            "ëth0",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
        check_mac("52:54:00:AB:cd:01").unwrap();
        for bad in ["52:54:00:ab:cd", "52:54:00:ab:cd:0g", "52-54-00-ab-cd-01"] {
            assert!(check_mac(bad).is_err(), "{bad}");
        }
        check_domain("corp.example.com").unwrap();
        for bad in ["", "-x", "a..b", "a b", "a;b", &"a".repeat(64)] {
            assert!(check_domain(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn old_layouts_load_and_hostile_sections_are_refused() {
        // A 1.0 layout (no network_config) still loads.
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/debian12-layout.json");
        let old = crate::layout::Layout::load(&p).unwrap();
        assert_eq!(old.network_config, None);
        let mut l = crate::layout::tests::minimal();
        let eth = |mac: &str| LinkKind::Ethernet { mac: mac.into() };
        let link = |name: &str, kind: LinkKind| NetLink {
            name: name.into(),
            kind,
            mtu: Some(1500),
            dhcp4: false,
            auto6: false,
            addresses: vec![IpPrefix::parse("10.0.2.50/24").unwrap()],
        };
        l.network_config = Some(NetConfig {
            links: vec![
                link("ens3", eth("52:54:00:12:34:56")),
                link(
                    "ens3.10",
                    LinkKind::Vlan {
                        parent: "ens3".into(),
                        id: 10,
                    },
                ),
            ],
            ..NetConfig::default()
        });
        let good = l.to_json();
        assert_eq!(crate::layout::Layout::from_json(&good).unwrap(), l);
        assert_eq!(
            l.network_config.as_ref().unwrap().describe(),
            [
                "network: ens3 (52:54:00:12:34:56) 10.0.2.50/24",
                "network: ens3.10 (VLAN 10 on ens3) 10.0.2.50/24",
            ]
        );
        let cases = [
            (
                "\"parent\": \"ens3\"",
                "\"parent\": \"ens3; reboot\"",
                "links[1].kind.parent",
            ),
            (
                "\"parent\": \"ens3\"",
                "\"parent\": \"ens4\"",
                "no link \"ens4\"",
            ),
            ("\"id\": 10", "\"id\": 4095", "outside 1..4094"),
            ("\"prefix\": 24", "\"prefix\": 40", "longer than 32"),
            ("\"mtu\": 1500", "\"mtu\": 12", "outside 68..65535"),
            (
                "\"name\": \"ens3.10\"",
                "\"name\": \"-ens3.10\"",
                "starts with '-'",
            ),
            (
                "\"mac\": \"52:54:00:12:34:56\"",
                "\"mac\": \"x\"",
                "links[0].kind.mac",
            ),
        ];
        for (from, to, want) in cases {
            let bad = good.replacen(from, to, 1);
            assert_ne!(bad, good, "{from}");
            let err = format!("{:#}", crate::layout::Layout::from_json(&bad).unwrap_err());
            assert!(err.contains(want), "{to}: {err}");
        }
    }
}
