//! The rescue system's network, configured at boot by `lifeboat internal
//! net-up` (run by init): from the built-in layout's `network_config`, or
//! as the kernel command line says:
//!
//! - `lifeboat.net=dhcp`: DHCP on every network card;
//! - `lifeboat.net=static:ADDR/PREFIX,GATEWAY,DNS`: that address on the card
//!   the host's default route went out of (else the first card), GATEWAY
//!   and DNS optional (`static:10.0.2.50/24`, more name servers after DNS);
//! - `lifeboat.net=off`: none;
//! - with `lifeboat.netdev=CARD` and/or `lifeboat.vlan=ID[@CARD]` (or
//!   dracut's `NAME:CARD`), static or DHCP goes on that card or on a VLAN
//!   made on it ([`target`]).
//!
//! A malformed value, or a card that is not here, leaves the network off
//! with one console line saying why (a static address on a guessed wire
//! could take a neighbour's).
//!
//! The layout's cards are matched to this machine's by MAC address, then
//! name, then driver and PCI order ([`crate::plan::nic::map_rescue_nics`]);
//! VLANs, bonds and bridges are built on the matched cards with their
//! host names. The work is a [`NetPlan`] (a value: `ip` argument lists, the
//! cards for DHCP, the resolver) run by `ip`, busybox's `udhcpc` and a
//! write of /etc/resolv.conf.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::exec::Cmd;
use crate::layout::{Dns, IpPrefix, Layout, LinkKind, NetConfig, NetInterface, NetLink};
use crate::plan::nic::{describe, map_rescue_nics, NicPlan};

pub mod target;
use target::NetTarget;

/// Longest `lifeboat.net=` value taken.
const ARG_MAX: usize = 512;
/// Most name servers a resolv.conf takes (glibc reads three).
const MAX_DNS: usize = 3;

/// What `lifeboat.net=` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// No `lifeboat.net`: the layout's configuration, if it has one.
    Layout,
    Dhcp,
    Static(StaticNet),
    Off,
}

/// `static:ADDR/PREFIX,GATEWAY,DNS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNet {
    pub address: IpPrefix,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
}

/// Parses the value of `lifeboat.net` (`None` when absent).
pub fn parse_net_arg(value: Option<&str>) -> Result<NetMode> {
    let Some(v) = value else {
        return Ok(NetMode::Layout);
    };
    if v.len() > ARG_MAX {
        bail!("lifeboat.net is longer than {ARG_MAX} bytes");
    }
    let shown = v.escape_debug();
    match v {
        "dhcp" => return Ok(NetMode::Dhcp),
        "off" | "none" => return Ok(NetMode::Off),
        _ => {}
    }
    let Some(spec) = v.strip_prefix("static:") else {
        bail!(
            "lifeboat.net=\"{shown}\": expected dhcp, off or static:ADDR/PREFIX,GATEWAY,DNS \
             (e.g. static:192.168.1.20/24,192.168.1.1,192.168.1.1)"
        );
    };
    parse_static(spec).with_context(|| format!("lifeboat.net=\"{shown}\""))
}

fn parse_static(spec: &str) -> Result<NetMode> {
    let mut fields = spec.split(',');
    let address = IpPrefix::parse(fields.next().unwrap_or_default())?;
    let ip = |what: &str, f: &str| -> Result<IpAddr> {
        f.parse::<IpAddr>().map_err(|_| {
            anyhow::anyhow!(
                "{what} {:?} is not an IP address",
                f.escape_debug().to_string()
            )
        })
    };
    let gateway = match fields.next() {
        None | Some("") => None,
        Some(g) => Some(ip("gateway", g)?),
    };
    let dns = fields
        .filter(|f| !f.is_empty())
        .map(|f| ip("name server", f))
        .collect::<Result<Vec<_>>>()?;
    if dns.len() > MAX_DNS {
        bail!("more than {MAX_DNS} name servers");
    }
    if let Some(g) = gateway {
        check_gateway(&address, g)?;
    }
    Ok(NetMode::Static(StaticNet {
        address,
        gateway,
        dns,
    }))
}

/// A gateway of the address's family, inside its subnet (IPv4) or on it
/// or link-local (IPv6).
fn check_gateway(a: &IpPrefix, g: IpAddr) -> Result<()> {
    let inside = match (a.address, g) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            let mask = u32::MAX.checked_shl(32 - a.prefix as u32).unwrap_or(0);
            u32::from(x) & mask == u32::from(y) & mask
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => {
            let mask = u128::MAX.checked_shl(128 - a.prefix as u32).unwrap_or(0);
            u128::from(x) & mask == u128::from(y) & mask || y.segments()[0] & 0xffc0 == 0xfe80
        }
        _ => bail!("gateway {g} is not of the address {}'s family", a.address),
    };
    if !inside {
        bail!("gateway {g} is outside {a}");
    }
    Ok(())
}

/// The configuration to apply, as values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPlan {
    /// `ip` argument lists, in order.
    pub ip: Vec<Vec<String>>,
    /// Links to run DHCP on, after `ip`.
    pub dhcp: Vec<String>,
    /// Written to /etc/resolv.conf unless DHCP ran.
    pub dns: Option<Dns>,
    /// Lines for the consoles: which card took which configuration.
    pub notes: Vec<String>,
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// The plan for `mode` on this machine's cards `here`.
pub fn plan(mode: &NetMode, layout: Option<&Layout>, here: &[NetInterface]) -> NetPlan {
    plan_for(mode, &NetTarget::default(), layout, here)
}

/// [`plan`] with `lifeboat.netdev` / `lifeboat.vlan` (`target`).
pub fn plan_for(
    mode: &NetMode,
    target: &NetTarget,
    layout: Option<&Layout>,
    here: &[NetInterface],
) -> NetPlan {
    let config = layout.and_then(|l| l.network_config.as_ref().map(|c| (l, c)));
    let mut p = match mode {
        NetMode::Off => NetPlan {
            notes: vec!["lifeboat: network off (lifeboat.net=off)".into()],
            ..NetPlan::default()
        },
        NetMode::Dhcp if target.is_empty() => NetPlan {
            ip: here
                .iter()
                .map(|n| words(&["link", "set", &n.name, "up"]))
                .collect(),
            dhcp: here.iter().map(|n| n.name.clone()).collect(),
            ..NetPlan::default()
        },
        NetMode::Dhcp | NetMode::Static(_) => return targeted_plan(mode, target, config, here),
        NetMode::Layout => match config {
            Some((l, c)) => layout_plan(c, &map_rescue_nics(&l.network, here), here),
            None => NetPlan::default(),
        },
    };
    if !target.is_empty() {
        p.notes.push(
            "lifeboat: lifeboat.netdev and lifeboat.vlan go with lifeboat.net=static:... or \
             lifeboat.net=dhcp: ignored"
                .into(),
        );
    }
    p
}

/// Static or DHCP on the link `target` names (else the card the host's
/// default route used, matched here, else the first card); a card named
/// but not here: the network stays off.
fn targeted_plan(
    mode: &NetMode,
    target: &NetTarget,
    config: Option<(&Layout, &NetConfig)>,
    here: &[NetInterface],
) -> NetPlan {
    let mut p = NetPlan::default();
    let (dev, vlan_note) = match target_link(&mut p, target, config, here) {
        Ok(found) => found,
        Err(e) => {
            return NetPlan {
                notes: vec![format!("lifeboat: network off: {e:#}")],
                ..NetPlan::default()
            }
        }
    };
    match mode {
        NetMode::Static(s) => static_on(&mut p, s, &dev),
        _ => p.dhcp.push(dev.clone()),
    }
    let how = match mode {
        NetMode::Static(s) => format!("{} from lifeboat.net=static", s.address),
        _ => "DHCP from lifeboat.net=dhcp".into(),
    };
    p.notes.push(format!("lifeboat: {dev}: {how}{vlan_note}"));
    p
}

/// Brings up the card for `target` (and makes its VLAN) in `p`; returns
/// the link the address goes on and the note's VLAN part.
fn target_link(
    p: &mut NetPlan,
    target: &NetTarget,
    config: Option<(&Layout, &NetConfig)>,
    here: &[NetInterface],
) -> Result<(String, String)> {
    let map = config.map(|(l, _)| map_rescue_nics(&l.network, here));
    let host_names: Vec<(String, String)> = map
        .iter()
        .flat_map(|m| m.pairs.iter())
        .map(|p| (p.old.name.clone(), p.new.name.clone()))
        .collect();
    let card = match &target.card {
        Some(r) => target::find_card(r, here, &host_names)
            .with_context(|| format!("lifeboat.netdev/lifeboat.vlan card {r}"))?,
        None => config
            .and_then(|(_, c)| {
                let dev = c.routes.iter().find(|r| r.is_default())?.dev.clone();
                let card = card_below(c, &dev)?;
                host_names
                    .iter()
                    .find(|(h, _)| *h == card)
                    .map(|(_, r)| r.clone())
            })
            .or_else(|| here.first().map(|n| n.name.clone()))
            .context("lifeboat.net: no network card found")?,
    };
    p.ip.push(words(&["link", "set", &card, "up"]));
    let Some(v) = &target.vlan else {
        return Ok((card, String::new()));
    };
    let name = target::vlan_name(v, &card);
    let id = v.id.to_string();
    p.ip.push(words(&[
        "link", "add", "link", &card, "name", &name, "type", "vlan", "id", &id,
    ]));
    p.ip.push(words(&["link", "set", &name, "up"]));
    Ok((name, format!(" (VLAN {id} on {card})")))
}

/// The static address, its default route and resolver on `dev`.
fn static_on(p: &mut NetPlan, s: &StaticNet, dev: &str) {
    p.ip.push(words(&["addr", "add", &s.address.to_string(), "dev", dev]));
    if let Some(g) = s.gateway {
        let default = if g.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
        p.ip.push(words(&[
            "route",
            "replace",
            default,
            "via",
            &g.to_string(),
            "dev",
            dev,
        ]));
    }
    if !s.dns.is_empty() {
        p.dns = Some(Dns {
            nameservers: s.dns.clone(),
            search: Vec::new(),
        });
    }
}

/// The card a link sits on (through VLANs, bonds and bridges: the first
/// member).
fn card_below(c: &NetConfig, name: &str) -> Option<String> {
    let mut at = name.to_string();
    for _ in 0..8 {
        match &c.link(&at)?.kind {
            LinkKind::Ethernet { .. } => return Some(at),
            LinkKind::Vlan { parent, .. } => at = parent.clone(),
            LinkKind::Bond { members, .. } | LinkKind::Bridge { members, .. } => {
                at = members.first()?.clone()
            }
        }
    }
    None
}

/// The layout's configuration on the matched cards: links in the layout's
/// order (lower before upper), then routes, DHCP and the resolver.
fn layout_plan(c: &NetConfig, map: &NicPlan, here: &[NetInterface]) -> NetPlan {
    let mut p = NetPlan::default();
    // Host link name -> name here; links whose card is missing are dropped.
    let mut names: Vec<(String, String)> = Vec::new();
    for pair in &map.pairs {
        p.notes.push(format!(
            "lifeboat: {} is the host's {} ({})",
            describe(&pair.new),
            pair.old.name,
            pair.reason
        ));
    }
    for l in &c.links {
        let Some(here_name) = link_here(l, map, &names, here) else {
            p.notes.push(format!(
                "lifeboat: {} of the host is left out: no card here for it",
                l.name
            ));
            continue;
        };
        let n = |x: &str| names.iter().find(|(h, _)| h == x).map(|(_, r)| r.clone());
        add_link(&mut p, l, &here_name, &n);
        names.push((l.name.clone(), here_name));
    }
    let n = |x: &str| names.iter().find(|(h, _)| h == x).map(|(_, r)| r.clone());
    for r in &c.routes {
        let Some(dev) = n(&r.dev) else { continue };
        // replace: a router advertisement may have set a default already.
        let mut cmd = words(&["route", "replace", &r.destination.to_string()]);
        if let Some(g) = r.gateway {
            cmd.extend(words(&["via", &g.to_string()]));
        }
        cmd.extend(words(&["dev", &dev]));
        if let Some(m) = r.metric {
            cmd.extend(words(&["metric", &m.to_string()]));
        }
        p.ip.push(cmd);
    }
    if !c.dns.nameservers.is_empty() {
        p.dns = Some(c.dns.clone());
    }
    p
}

/// The name a host link gets here: a card's match, or the host's name for
/// a VLAN, bond or bridge whose lower links are all here.
fn link_here(
    l: &NetLink,
    map: &NicPlan,
    names: &[(String, String)],
    here: &[NetInterface],
) -> Option<String> {
    let known = |x: &String| names.iter().any(|(h, _)| h == x);
    match &l.kind {
        LinkKind::Ethernet { .. } => map
            .pairs
            .iter()
            .find(|p| p.old.name == l.name)
            .map(|p| p.new.name.clone()),
        LinkKind::Vlan { parent, .. } => known(parent).then(|| l.name.clone()),
        LinkKind::Bond { members, .. } | LinkKind::Bridge { members, .. } => {
            members.iter().any(known).then(|| l.name.clone())
        }
    }
    // A virtual link must not take the name of a card here.
    .filter(|name| {
        matches!(l.kind, LinkKind::Ethernet { .. }) || !here.iter().any(|h| &h.name == name)
    })
}

fn add_link(p: &mut NetPlan, l: &NetLink, name: &str, n: &dyn Fn(&str) -> Option<String>) {
    match &l.kind {
        LinkKind::Ethernet { .. } => {}
        LinkKind::Vlan { parent, id } => {
            let parent = n(parent).unwrap_or_default();
            p.ip.push(words(&[
                "link",
                "add",
                "link",
                &parent,
                "name",
                name,
                "type",
                "vlan",
                "id",
                &id.to_string(),
            ]));
        }
        LinkKind::Bond {
            mode,
            members,
            options,
        } => {
            let mut add = words(&["link", "add", name, "type", "bond", "mode", mode.as_str()]);
            add.extend(options.add_args());
            p.ip.push(add);
            for m in members.iter().filter_map(|m| n(m)) {
                p.ip.push(words(&["link", "set", &m, "down"]));
                p.ip.push(words(&["link", "set", &m, "master", name]));
            }
            // The primary by its name here, once it is a member.
            if let Some(primary) = options.primary.as_deref().and_then(n) {
                p.ip.push(words(&[
                    "link", "set", name, "type", "bond", "primary", &primary,
                ]));
            }
        }
        LinkKind::Bridge { members, options } => {
            let mut add = words(&["link", "add", name, "type", "bridge"]);
            add.extend(options.add_args());
            p.ip.push(add);
            for m in members.iter().filter_map(|m| n(m)) {
                p.ip.push(words(&["link", "set", &m, "master", name]));
            }
        }
    }
    if let Some(mtu) = l.mtu {
        p.ip.push(words(&["link", "set", name, "mtu", &mtu.to_string()]));
    }
    p.ip.push(words(&["link", "set", name, "up"]));
    for a in &l.addresses {
        p.ip.push(words(&["addr", "add", &a.to_string(), "dev", name]));
    }
    if l.dhcp4 {
        p.dhcp.push(name.to_string());
    }
}

/// Programs the image must have for `layout`'s network: iproute2's `ip`
/// when it has links to configure (busybox's `ip` makes no bond or
/// bridge); otherwise `ip` ships when the host has it.
pub fn programs(layout: Option<&Layout>) -> Vec<String> {
    match layout.and_then(|l| l.network_config.as_ref()) {
        Some(c) if !c.links.is_empty() => vec!["ip".into()],
        _ => Vec::new(),
    }
}

/// Files of the image for the network: the bonding driver makes no
/// `bond0` of its own when it loads (`ip link add bond0` would then fail).
pub fn add_files(tree: &mut super::tree::Tree) {
    tree.bytes(
        "etc/modprobe.d/lifeboat-bonding.conf",
        "options bonding max_bonds=0\n",
        0o644,
    );
}

/// resolv.conf for `dns`.
pub fn resolv_conf(dns: &Dns) -> String {
    let mut s = String::from("# Written by lifeboat net-up.\n");
    if !dns.search.is_empty() {
        s.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    for n in dns.nameservers.iter().take(MAX_DNS) {
        s.push_str(&format!("nameserver {n}\n"));
    }
    s
}

/// Runs `plan`: each `ip` command (a failure is reported and the rest go
/// on: a partial network beats none), DHCP, the resolver. Returns the
/// lines for the consoles.
pub fn apply(plan: &NetPlan, etc: &Path) -> Result<Vec<String>> {
    let mut out = plan.notes.clone();
    for args in &plan.ip {
        if let Err(e) = Cmd::new("ip").args(args).run() {
            out.push(format!("lifeboat: network: {e:#}"));
        }
    }
    for dev in &plan.dhcp {
        let r = Cmd::new("udhcpc")
            .args(["-i", dev, "-s", "/etc/lifeboat/udhcpc.script", "-n", "-q"])
            .args(["-t", "5", "-T", "2"])
            .run();
        if r.is_err() {
            out.push(format!("lifeboat: {dev}: no answer from a DHCP server"));
        }
    }
    if let (Some(dns), true) = (&plan.dns, plan.dhcp.is_empty()) {
        let path = etc.join("resolv.conf");
        crate::util::write_atomic(&path, resolv_conf(dns).as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(out)
}

/// The addresses configured now (`ip -json addr`; busybox's `ip`, which
/// has no JSON, through `ip -o addr`), link-local and loopback left out:
/// `(link, address)`.
pub fn addresses_now() -> Result<Vec<(String, IpPrefix)>> {
    let links: Vec<crate::layout::probe::netcfg::IpLink> =
        match Cmd::new("ip").args(["-json", "addr", "show"]).json() {
            Ok(links) => links,
            Err(_) => {
                let text = Cmd::new("ip").args(["-o", "addr", "show"]).read()?;
                return Ok(oneline_addresses(&text));
            }
        };
    Ok(links
        .iter()
        .flat_map(|l| {
            l.addr_info.iter().filter_map(|a| {
                if matches!(a.scope.as_deref(), Some("link" | "host")) {
                    return None;
                }
                let address = a.local.as_deref()?.parse().ok()?;
                Some((
                    l.ifname.clone(),
                    IpPrefix {
                        address,
                        prefix: a.prefixlen?,
                    },
                ))
            })
        })
        .collect())
}

/// [`addresses_now`] from `ip -o addr show` lines (`4: eth0    inet
/// 192.0.2.2/24 brd ... scope global eth0\ ...`).
fn oneline_addresses(text: &str) -> Vec<(String, IpPrefix)> {
    text.lines()
        .filter_map(|line| {
            let w: Vec<&str> = line.split_whitespace().collect();
            let (link, family, addr) = (*w.get(1)?, *w.get(2)?, *w.get(3)?);
            let scope = w
                .iter()
                .position(|x| *x == "scope")
                .and_then(|i| w.get(i + 1));
            if !matches!(family, "inet" | "inet6") || matches!(scope, Some(&"link" | &"host")) {
                return None;
            }
            let (address, prefix) = addr.split_once('/')?;
            Some((
                link.to_string(),
                IpPrefix {
                    address: address.parse().ok()?,
                    prefix: prefix.parse().ok()?,
                },
            ))
        })
        .collect()
}

/// `lifeboat.net`, `lifeboat.netdev` and `lifeboat.vlan` of `cmdline`.
pub fn parse_args(cmdline: &str) -> Result<(NetMode, NetTarget)> {
    let arg = |name| super::cmdline::value(cmdline, name);
    let mode = parse_net_arg(arg("lifeboat.net").as_deref())?;
    let target = target::parse_target(
        arg("lifeboat.netdev").as_deref(),
        arg("lifeboat.vlan").as_deref(),
    )?;
    Ok((mode, target))
}

/// `lifeboat internal net-up`: the plan from the command line, the layout
/// and the cards under `sys`, applied (or only shown with `dry_run`).
pub fn net_up(
    cmdline: &str,
    layout: Option<&Layout>,
    sys: &Path,
    dry_run: bool,
) -> Result<Vec<String>> {
    let here = crate::layout::probe::net::interfaces(sys);
    let plan = match parse_args(cmdline) {
        Ok((mode, target)) => plan_for(&mode, &target, layout, &here),
        Err(e) => NetPlan {
            notes: vec![format!("lifeboat: network off: {e:#}")],
            ..NetPlan::default()
        },
    };
    if dry_run {
        let mut out = plan.notes.clone();
        out.extend(plan.ip.iter().map(|a| format!("ip {}", a.join(" "))));
        out.extend(plan.dhcp.iter().map(|d| format!("dhcp {d}")));
        if let Some(d) = &plan.dns {
            out.extend(resolv_conf(d).lines().skip(1).map(String::from));
        }
        return Ok(out);
    }
    let mut out = apply(&plan, Path::new("/etc"))?;
    match addresses_now() {
        Ok(list) => out.extend(
            list.iter()
                .map(|(link, a)| format!("lifeboat: network {link} {a}")),
        ),
        Err(e) => out.push(format!("lifeboat: cannot list the addresses: {e:#}")),
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
