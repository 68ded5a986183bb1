//! The host's network configuration as its kernel has it: `ip -json
//! -details addr` (links, their kind, MTU, masters and addresses with their
//! flags), `ip -json route` for IPv4 and IPv6, and the resolver from
//! /etc/resolv.conf (systemd-resolved's stub followed to the upstream
//! servers). Reading the kernel's view works the same whatever configured
//! it (ifupdown, NetworkManager, systemd-networkd, netplan, cloud-init).
//!
//! Kept: the network cards of the layout (by name at capture, identified by
//! MAC) and the VLANs, bonds and bridges built on them; an address with the
//! `dynamic` flag means DHCP (IPv4) or autoconfiguration (IPv6), the others
//! are static. Software-only links (docker0, virbr0, veth, tunnels) and the
//! routes the kernel, DHCP or router advertisements made are left out.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::CaptureOptions;
use crate::exec::Cmd;
use crate::layout::{
    check_ifname, BondMode, BondOptions, BridgeOptions, Dns, IpPrefix, LinkKind, NetConfig,
    NetInterface, NetLink, NetRoute,
};

/// One entry of `ip -json -details addr show`.
#[derive(Debug, Deserialize)]
pub struct IpLink {
    pub ifname: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The parent of a VLAN (`ens3.10@ens3`).
    #[serde(default)]
    pub link: Option<String>,
    /// The bond or bridge this link is a member of.
    #[serde(default)]
    pub master: Option<String>,
    #[serde(default)]
    pub linkinfo: Option<LinkInfo>,
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

#[derive(Debug, Deserialize)]
pub struct LinkInfo {
    #[serde(default)]
    pub info_kind: Option<String>,
    #[serde(default)]
    pub info_data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct AddrInfo {
    pub family: String,
    #[serde(default)]
    pub local: Option<String>,
    #[serde(default)]
    pub prefixlen: Option<u8>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub dynamic: bool,
    #[serde(default)]
    pub temporary: bool,
}

/// One entry of `ip -json route show table main`.
#[derive(Debug, Deserialize)]
pub struct IpRoute {
    pub dst: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dev: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub metric: Option<u32>,
    /// Present for non-unicast routes (`unreachable`, `blackhole`...).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// Captures the configuration of the running kernel; `None` for a fixture
/// tree or a system mounted elsewhere (the kernel's network is not that
/// system's), and when `ip` fails (logged).
pub fn capture(opts: &CaptureOptions, interfaces: &[NetInterface]) -> Option<NetConfig> {
    if opts.root != Path::new("/") || opts.system_root.is_some() {
        return None;
    }
    let read = || -> Result<NetConfig> {
        let links: Vec<IpLink> = Cmd::new("ip")
            .args(["-json", "-details", "addr", "show"])
            .json()?;
        let mut routes: Vec<IpRoute> = Cmd::new("ip")
            .args(["-json", "-4", "route", "show", "table", "main"])
            .json()?;
        let routes6: Vec<IpRoute> = Cmd::new("ip")
            .args(["-json", "-6", "route", "show", "table", "main"])
            .json()?;
        routes.extend(routes6);
        let dns = read_dns(&opts.root);
        let mut c = from_kernel(&links, &routes, interfaces, dns);
        let clients: Vec<String> = c
            .links
            .iter()
            .map(|l| l.name.clone())
            .filter(|n| opts.root.join(format!("run/dhclient.{n}.pid")).exists())
            .collect();
        leased_by_dhclient(&mut c, &clients);
        Ok(c)
    };
    match read() {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("the network configuration is not captured: {e:#}");
            None
        }
    }
}

/// The configuration from the kernel's links and routes: the cards of
/// `interfaces` and what is built on them.
pub fn from_kernel(
    links: &[IpLink],
    routes: &[IpRoute],
    interfaces: &[NetInterface],
    dns: Dns,
) -> NetConfig {
    let kept = kept_links(links, interfaces);
    let mut out = NetConfig {
        dns,
        ..NetConfig::default()
    };
    for name in &kept {
        let Some(l) = links.iter().find(|l| &l.ifname == name) else {
            continue;
        };
        let Some(kind) = link_kind(l, links, interfaces, &kept) else {
            continue;
        };
        let mut link = NetLink {
            name: l.ifname.clone(),
            kind,
            mtu: l.mtu,
            dhcp4: false,
            auto6: false,
            addresses: Vec::new(),
        };
        add_addresses(&mut link, &l.addr_info);
        out.links.push(link);
    }
    out.routes = routes.iter().filter_map(|r| route(r, &kept)).collect();
    out
}

/// ifupdown's dhclient (`-pf /run/dhclient.IFACE.pid`) sets its lease
/// without a lifetime, so the kernel shows it as static: on the links such
/// a client serves, the IPv4 addresses are the lease and the IPv4 default
/// route is the DHCP server's.
pub fn leased_by_dhclient(c: &mut NetConfig, clients: &[String]) {
    for l in c.links.iter_mut().filter(|l| clients.contains(&l.name)) {
        l.dhcp4 = true;
        l.addresses.retain(|a| a.address.is_ipv6());
    }
    c.routes.retain(|r| {
        !(clients.contains(&r.dev) && r.is_default() && r.destination.address.is_ipv4())
    });
}

/// Names of the links to keep, lower before upper: the cards, then what
/// sits on a kept link (a VLAN on it, a bond or bridge with it as member).
fn kept_links(links: &[IpLink], interfaces: &[NetInterface]) -> Vec<String> {
    let mut kept: Vec<String> = interfaces
        .iter()
        .filter(|i| links.iter().any(|l| l.ifname == i.name))
        .map(|i| i.name.clone())
        .collect();
    loop {
        let before = kept.len();
        for l in links {
            if kept.contains(&l.ifname) || check_ifname(&l.ifname).is_err() {
                continue;
            }
            let on_kept = match kind_of(l) {
                Some("vlan") => l.link.as_ref().is_some_and(|p| kept.contains(p)),
                Some("bond" | "bridge") => links
                    .iter()
                    .any(|m| m.master.as_ref() == Some(&l.ifname) && kept.contains(&m.ifname)),
                _ => false,
            };
            if on_kept {
                kept.push(l.ifname.clone());
            }
        }
        if kept.len() == before {
            return kept;
        }
    }
}

fn kind_of(l: &IpLink) -> Option<&str> {
    l.linkinfo.as_ref()?.info_kind.as_deref()
}

fn link_kind(
    l: &IpLink,
    links: &[IpLink],
    interfaces: &[NetInterface],
    kept: &[String],
) -> Option<LinkKind> {
    if let Some(card) = interfaces.iter().find(|i| i.name == l.ifname) {
        return Some(LinkKind::Ethernet {
            mac: card.mac.clone(),
        });
    }
    let data = l.linkinfo.as_ref()?.info_data.as_ref();
    let members = || -> Vec<String> {
        links
            .iter()
            .filter(|m| m.master.as_ref() == Some(&l.ifname) && kept.contains(&m.ifname))
            .map(|m| m.ifname.clone())
            .collect()
    };
    match kind_of(l)? {
        "vlan" => Some(LinkKind::Vlan {
            parent: l.link.clone()?,
            id: data?.get("id")?.as_u64()?.try_into().ok()?,
        }),
        "bond" => {
            let mode = data?.get("mode")?.as_str()?;
            let Some(mode) = BondMode::parse(mode) else {
                log::warn!("bond {}: unknown mode {mode:?}, left out", l.ifname);
                return None;
            };
            Some(LinkKind::Bond {
                mode,
                members: members(),
                options: BondOptions::from_info_data(mode, data?),
            })
        }
        "bridge" => Some(LinkKind::Bridge {
            members: members(),
            options: data.map(BridgeOptions::from_info_data).unwrap_or_default(),
        }),
        _ => None,
    }
}

/// Static addresses; a `dynamic` one marks DHCP (IPv4) or
/// autoconfiguration (IPv6). Link-local and host-scope ones are the
/// kernel's own.
fn add_addresses(link: &mut NetLink, addrs: &[AddrInfo]) {
    for a in addrs {
        if matches!(a.scope.as_deref(), Some("link" | "host")) {
            continue;
        }
        let v6 = a.family == "inet6";
        if a.dynamic || a.temporary {
            if v6 {
                link.auto6 = true;
            } else {
                link.dhcp4 = true;
            }
            continue;
        }
        let (Some(local), Some(prefix)) = (&a.local, a.prefixlen) else {
            continue;
        };
        let Ok(address) = local.parse::<IpAddr>() else {
            continue;
        };
        let p = IpPrefix { address, prefix };
        if p.check().is_ok() {
            link.addresses.push(p);
        }
    }
}

/// A route set by the admin on a kept link; `None` for the kernel's own
/// subnet routes, DHCP's and router advertisements', and non-unicast ones.
fn route(r: &IpRoute, kept: &[String]) -> Option<NetRoute> {
    if r.kind.as_deref().is_some_and(|k| k != "unicast")
        || matches!(
            r.protocol.as_deref(),
            Some("kernel" | "dhcp" | "ra" | "redirect")
        )
    {
        return None;
    }
    let dev = r.dev.clone().filter(|d| kept.contains(d))?;
    let gateway = match &r.gateway {
        Some(g) => Some(g.parse::<IpAddr>().ok()?),
        None => None,
    };
    let v6 = gateway.is_some_and(|g| g.is_ipv6()) || r.dst.contains(':');
    let destination = match r.dst.as_str() {
        "default" => IpPrefix {
            address: if v6 {
                IpAddr::from([0u16; 8])
            } else {
                IpAddr::from([0u8; 4])
            },
            prefix: 0,
        },
        d if d.contains('/') => IpPrefix::parse(d).ok()?,
        d => {
            let address: IpAddr = d.parse().ok()?;
            let prefix = if address.is_ipv4() { 32 } else { 128 };
            IpPrefix { address, prefix }
        }
    };
    Some(NetRoute {
        destination,
        gateway,
        dev,
        metric: r.metric,
    })
}

/// systemd-resolved's stub listener: the real servers are in
/// /run/systemd/resolve/resolv.conf.
const RESOLVED_STUB: &str = "127.0.0.53";

/// The resolver under `root`: /etc/resolv.conf, or the upstream servers
/// of systemd-resolved when it names the stub.
pub fn read_dns(root: &Path) -> Dns {
    let read = |rel: &str| -> String {
        let p = root.join(rel);
        crate::util::read_regular(&p, "resolver configuration", 1 << 16)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .with_context(|| format!("reading {}", p.display()))
            .unwrap_or_else(|e| {
                log::debug!("{e:#}");
                String::new()
            })
    };
    let text = read("etc/resolv.conf");
    let (servers, search) = parse_resolv_conf(&text);
    if servers.iter().any(|s| s == RESOLVED_STUB) {
        let upstream = read("run/systemd/resolve/resolv.conf");
        let (up_servers, up_search) = parse_resolv_conf(&upstream);
        return dns_of(
            up_servers,
            if search.is_empty() { up_search } else { search },
        );
    }
    dns_of(servers, search)
}

/// Name servers that work from another machine (no loopback, no scoped
/// link-local) and valid search domains.
fn dns_of(servers: Vec<String>, search: Vec<String>) -> Dns {
    let mut seen = BTreeSet::new();
    let nameservers = servers
        .iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback() && seen.insert(*a))
        .collect();
    let search = search
        .into_iter()
        .filter(|d| crate::layout::check_domain(d).is_ok())
        .collect();
    Dns {
        nameservers,
        search,
    }
}

/// `nameserver` and `search` (or `domain`) lines; the last search line wins.
pub fn parse_resolv_conf(text: &str) -> (Vec<String>, Vec<String>) {
    let mut servers = Vec::new();
    let mut search = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => servers.extend(words.next().map(String::from)),
            Some("search" | "domain") => search = words.map(String::from).collect(),
            _ => {}
        }
    }
    (servers, search)
}

#[cfg(test)]
mod tests;
