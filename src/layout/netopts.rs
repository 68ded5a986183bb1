//! Bond and bridge options of the layout's `network_config` (layout 1.1,
//! optional: layouts without them load, and links without them are made
//! with the kernel's defaults): as `ip -details -json link` reports them at
//! capture, given back to `ip link add` in the rescue. Only values other
//! than the kernel's defaults are kept, so a bond or bridge with none has
//! no `options` (as in layouts written before them).

use anyhow::{bail, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::BondMode;

/// Bonding driver options beyond the mode (only those of the bond's mode:
/// the driver refuses e.g. `lacp_rate` outside 802.3ad).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BondOptions {
    /// MII link monitoring interval, milliseconds (0: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miimon: Option<u32>,
    /// Milliseconds before a link that came up is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updelay: Option<u32>,
    /// Milliseconds before a link that went down is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downdelay: Option<u32>,
    /// 802.3ad: how often the partner sends LACPDUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp_rate: Option<LacpRate>,
    /// 802.3ad: the aggregator selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_select: Option<AdSelect>,
    /// balance-xor, 802.3ad, balance-tlb: the transmit hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xmit_hash_policy: Option<XmitHashPolicy>,
    /// active-backup, balance-tlb, balance-alb: the preferred member (a
    /// link name of the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
}

impl BondOptions {
    pub fn is_empty(&self) -> bool {
        self == &BondOptions::default()
    }

    /// The options from `ip -details -json link`'s `info_data` of a bond
    /// in `mode`; defaults and values outside the known sets are left out.
    pub fn from_info_data(mode: BondMode, data: &serde_json::Value) -> BondOptions {
        let num = |k: &str| -> Option<u32> {
            let v = data.get(k)?.as_u64()?.try_into().ok()?;
            (v != 0).then_some(v)
        };
        let text = |k: &str| data.get(k)?.as_str();
        let lacp = mode == BondMode::Lacp;
        let hashed = matches!(
            mode,
            BondMode::BalanceXor | BondMode::Lacp | BondMode::BalanceTlb
        );
        let primary_mode = matches!(
            mode,
            BondMode::ActiveBackup | BondMode::BalanceTlb | BondMode::BalanceAlb
        );
        BondOptions {
            miimon: num("miimon"),
            updelay: num("updelay"),
            downdelay: num("downdelay"),
            lacp_rate: text("ad_lacp_rate")
                .and_then(LacpRate::parse)
                .filter(|r| lacp && *r != LacpRate::Slow),
            ad_select: text("ad_select")
                .and_then(AdSelect::parse)
                .filter(|s| lacp && *s != AdSelect::Stable),
            xmit_hash_policy: text("xmit_hash_policy")
                .and_then(XmitHashPolicy::parse)
                .filter(|p| hashed && *p != XmitHashPolicy::Layer2),
            primary: text("primary")
                .filter(|p| primary_mode && super::check_ifname(p).is_ok())
                .map(String::from),
        }
    }

    /// `ip link add NAME type bond mode MODE` arguments after the mode (the
    /// primary is set once the members are in: `primary_args`).
    pub fn add_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        let mut num = |k: &str, v: Option<u32>| {
            if let Some(v) = v {
                a.extend([k.to_string(), v.to_string()]);
            }
        };
        num("miimon", self.miimon);
        num("updelay", self.updelay);
        num("downdelay", self.downdelay);
        let named = [
            ("lacp_rate", self.lacp_rate.map(LacpRate::as_str)),
            ("ad_select", self.ad_select.map(AdSelect::as_str)),
            (
                "xmit_hash_policy",
                self.xmit_hash_policy.map(XmitHashPolicy::as_str),
            ),
        ];
        for (k, v) in named {
            if let Some(v) = v {
                a.extend([k.to_string(), v.to_string()]);
            }
        }
        a
    }

    /// The layout's check: the primary one of the bond's `members`.
    pub fn check(&self, members: &[String]) -> Result<()> {
        if let Some(p) = &self.primary {
            if !members.contains(p) {
                bail!("the bond's primary {p:?} is not one of its members");
            }
        }
        Ok(())
    }
}

/// A closed set of option values, named as `ip` names them.
macro_rules! named_values {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                [$($name::$variant),+].into_iter().find(|v| v.as_str() == s)
            }
        }
    };
}

named_values!(
    /// `lacp_rate`.
    LacpRate { Slow = "slow", Fast = "fast" }
);
named_values!(
    /// `ad_select`.
    AdSelect { Stable = "stable", Bandwidth = "bandwidth", Count = "count" }
);
named_values!(
    /// `xmit_hash_policy`.
    XmitHashPolicy {
        Layer2 = "layer2",
        Layer34 = "layer3+4",
        Layer23 = "layer2+3",
        Encap23 = "encap2+3",
        Encap34 = "encap3+4",
        VlanSrcMac = "vlan+srcmac",
    }
);

/// The kernel's forwarding delay of a new bridge (15 s).
const BRIDGE_FORWARD_DELAY: u32 = 1500;

/// Bridge options: spanning tree and its forwarding delay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BridgeOptions {
    /// Spanning tree on (`stp_state` not 0; off is the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stp: Option<bool>,
    /// Forwarding delay in hundredths of a second, as `ip` shows and takes
    /// it (1500: 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_delay: Option<u32>,
}

impl BridgeOptions {
    pub fn is_empty(&self) -> bool {
        self == &BridgeOptions::default()
    }

    pub fn from_info_data(data: &serde_json::Value) -> BridgeOptions {
        BridgeOptions {
            stp: data
                .get("stp_state")
                .and_then(|v| v.as_u64())
                .filter(|s| *s != 0)
                .map(|_| true),
            forward_delay: data
                .get("forward_delay")
                .and_then(|v| v.as_u64())
                .and_then(|v| v.try_into().ok())
                .filter(|d| *d != BRIDGE_FORWARD_DELAY),
        }
    }

    /// `ip link add NAME type bridge` arguments.
    pub fn add_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(d) = self.forward_delay {
            a.extend(["forward_delay".to_string(), d.to_string()]);
        }
        if let Some(s) = self.stp {
            a.extend(["stp_state".to_string(), u8::from(s).to_string()]);
        }
        a
    }
}
