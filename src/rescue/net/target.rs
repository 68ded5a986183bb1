//! Where `lifeboat.net=static:...` (or `dhcp`) goes, from the kernel
//! command line, after dracut's conventions:
//!
//! - `lifeboat.netdev=CARD`: the card, by name (this system's `eth0`, or
//!   the host's name in the layout, `ens3`) or by MAC address;
//! - `lifeboat.vlan=ID`, `lifeboat.vlan=ID@CARD`, or dracut's
//!   `lifeboat.vlan=NAME:CARD` (`eth0.10`, `vlan10`, `vlan0010`: the name
//!   ends with the VLAN ID): a VLAN on that card carries the address.
//!
//! Without a card: the card of the host's default route, else the first
//! card (as before).

use anyhow::{bail, Context, Result};

use crate::layout::NetInterface;

/// Longest value taken (a name and a MAC are far shorter).
const ARG_MAX: usize = 64;

/// A card named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardRef {
    Name(String),
    /// Lower case, colon separated.
    Mac(String),
}

impl std::fmt::Display for CardRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CardRef::Name(n) | CardRef::Mac(n) => f.write_str(n),
        }
    }
}

/// `lifeboat.netdev` and `lifeboat.vlan` together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetTarget {
    pub card: Option<CardRef>,
    pub vlan: Option<Vlan>,
}

/// A VLAN to make on the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    pub id: u16,
    /// dracut's NAME:CARD form gives the name; else `CARD.ID`.
    pub name: Option<String>,
}

impl NetTarget {
    pub fn is_empty(&self) -> bool {
        self.card.is_none() && self.vlan.is_none()
    }
}

/// Parses `lifeboat.netdev` and `lifeboat.vlan` (each `None` when absent).
pub fn parse_target(netdev: Option<&str>, vlan: Option<&str>) -> Result<NetTarget> {
    let card = netdev
        .map(|v| parse_card(v).with_context(|| format!("lifeboat.netdev=\"{}\"", v.escape_debug())))
        .transpose()?;
    let Some(v) = vlan else {
        return Ok(NetTarget { card, vlan: None });
    };
    let (vlan, on) =
        parse_vlan(v).with_context(|| format!("lifeboat.vlan=\"{}\"", v.escape_debug()))?;
    let card = match (card, on) {
        (Some(a), Some(b)) if a != b => {
            bail!("lifeboat.vlan names the card {b} but lifeboat.netdev names {a}: give one")
        }
        (a, b) => a.or(b),
    };
    Ok(NetTarget {
        card,
        vlan: Some(vlan),
    })
}

/// `ID`, `ID@CARD`, or dracut's `NAME:CARD`.
fn parse_vlan(v: &str) -> Result<(Vlan, Option<CardRef>)> {
    check_len(v)?;
    if let Some((id, card)) = v.split_once('@') {
        return Ok((
            Vlan {
                id: vlan_id(id)?,
                name: None,
            },
            Some(parse_card(card)?),
        ));
    }
    // A MAC holds colons too: NAME:CARD splits at the first one.
    if let Some((name, card)) = v.split_once(':') {
        check_ifname(name)?;
        let digits = match name.rsplit_once('.') {
            Some((_, d)) => d,
            None => name.strip_prefix("vlan").unwrap_or(name),
        };
        let id = vlan_id(digits).with_context(|| {
            format!("the VLAN name {name} does not end with its ID (eth0.10, vlan10)")
        })?;
        let name = Some(name.to_string());
        return Ok((Vlan { id, name }, Some(parse_card(card)?)));
    }
    Ok((
        Vlan {
            id: vlan_id(v)?,
            name: None,
        },
        None,
    ))
}

fn vlan_id(s: &str) -> Result<u16> {
    match s.parse::<u16>() {
        Ok(id @ 1..=4094) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => bail!(
            "VLAN ID {:?} is not a number from 1 to 4094",
            s.escape_debug().to_string()
        ),
    }
}

/// A MAC address (`:` or `-` separated) or an interface name.
fn parse_card(v: &str) -> Result<CardRef> {
    check_len(v)?;
    let parts: Vec<&str> = v.split([':', '-']).collect();
    if parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Ok(CardRef::Mac(parts.join(":").to_ascii_lowercase()));
    }
    check_ifname(v)?;
    Ok(CardRef::Name(v.to_string()))
}

fn check_len(v: &str) -> Result<()> {
    if v.len() > ARG_MAX {
        bail!("longer than {ARG_MAX} bytes");
    }
    Ok(())
}

/// A name `ip` takes as a link name (the layout's rule,
/// [`crate::layout::check_ifname`]).
fn check_ifname(n: &str) -> Result<()> {
    crate::layout::check_ifname(n).with_context(|| {
        format!(
            "{:?} is not an interface name nor a MAC address",
            n.escape_debug().to_string()
        )
    })
}

/// The card `r` names among this system's cards `here`: by MAC, by name
/// here, or by the host's name in the layout (`host_names`: host name ->
/// card here, as the cards were matched).
pub fn find_card(
    r: &CardRef,
    here: &[NetInterface],
    host_names: &[(String, String)],
) -> Result<String> {
    let found = match r {
        CardRef::Mac(m) => here
            .iter()
            .find(|n| n.mac.eq_ignore_ascii_case(m))
            .map(|n| n.name.clone()),
        CardRef::Name(n) => here
            .iter()
            .find(|h| &h.name == n)
            .map(|h| h.name.clone())
            .or_else(|| {
                host_names
                    .iter()
                    .find(|(h, _)| h == n)
                    .map(|(_, r)| r.clone())
            }),
    };
    found.with_context(|| {
        let cards: Vec<String> = here
            .iter()
            .map(|n| format!("{} {}", n.name, n.mac))
            .collect();
        format!(
            "no card {r} here (cards: {})",
            if cards.is_empty() {
                "none".into()
            } else {
                cards.join(", ")
            }
        )
    })
}

/// The VLAN link's name on `card`: the one given, else `CARD.ID`
/// (`vlanID` when that is too long for a link name).
pub fn vlan_name(v: &Vlan, card: &str) -> String {
    if let Some(n) = &v.name {
        return n.clone();
    }
    let dotted = format!("{card}.{}", v.id);
    if dotted.len() <= crate::layout::IFNAME_MAX {
        dotted
    } else {
        format!("vlan{}", v.id)
    }
}
