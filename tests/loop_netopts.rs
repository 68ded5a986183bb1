//! Loop tier (root): bridge options on a real kernel, each run in a network
//! namespace of its own (`unshare -n`: the host's links are not touched and
//! everything goes with the namespace). A bridge with STP on and a
//! forwarding delay over a veth card is captured from `ip -json -details`;
//! the rescue's `ip` commands for that layout, run in a fresh namespace
//! with the same card, make a bridge that captures the same.
//! (The host kernel has no bonding driver: bond options are checked from
//! output a rescue kernel recorded, tests/fixtures/netcfg/options.json.)

mod common;

use std::process::Command;

use lifeboat::layout::probe::netcfg::{from_kernel, IpLink};
use lifeboat::layout::{BridgeOptions, Dns, Layout, LinkKind, NetConfig, NetInterface};
use lifeboat::rescue::net::{plan, NetMode};

const MAC: &str = "52:54:00:ab:cd:01";

/// Runs `script` with `sh` in a new network namespace; returns stdout.
fn in_netns(script: &str) -> String {
    let out = Command::new("unshare")
        .args(["-n", "sh", "-ec", script])
        .output()
        .expect("unshare (util-linux) runs");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The veth card `v0` with MAC, its peer, then `more`, then the links.
fn capture(more: &str) -> NetConfig {
    let json = in_netns(&format!(
        "ip link add v0 address {MAC} type veth peer name v1\n{more}\nip -json -details addr show"
    ));
    let links: Vec<IpLink> = serde_json::from_str(&json).unwrap();
    from_kernel(&links, &[], &[card()], Dns::default())
}

fn card() -> NetInterface {
    NetInterface {
        name: "v0".into(),
        mac: MAC.into(),
        driver: Some("veth".into()),
        pci_path: None,
    }
}

fn bridge(c: &NetConfig) -> LinkKind {
    c.link("br0").expect("br0 captured").kind.clone()
}

#[test]
fn bridge_stp_and_forward_delay_captured_and_made_again() {
    require_root!();
    let host = capture(
        "ip link add br0 type bridge forward_delay 400 stp_state 1\nip link set v0 master br0",
    );
    let want = LinkKind::Bridge {
        members: vec!["v0".into()],
        options: BridgeOptions {
            stp: Some(true),
            forward_delay: Some(400),
        },
    };
    assert_eq!(bridge(&host), want);
    // A default bridge: no options (as layouts written before them).
    let plain = capture("ip link add br0 type bridge\nip link set v0 master br0");
    assert!(matches!(bridge(&plain), LinkKind::Bridge { options, .. } if options.is_empty()));

    // The rescue's commands for a layout with the host's bridge.
    let fixture = common::repo().join("tests/fixtures/debian12-layout.json");
    let mut l: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    l["schema_version"] = "1.1".into();
    l["network"] = serde_json::to_value([card()]).unwrap();
    l["network_config"] = serde_json::to_value(&host).unwrap();
    let layout = Layout::from_json(&l.to_string()).unwrap();
    let p = plan(&NetMode::Layout, Some(&layout), &[card()]);
    let script: Vec<String> =
        p.ip.iter()
            .map(|args| format!("ip {}", args.join(" ")))
            .collect();
    assert!(
        script.contains(&"ip link add br0 type bridge forward_delay 400 stp_state 1".to_string()),
        "{script:?}"
    );
    let again = capture(&script.join("\n"));
    assert_eq!(bridge(&again), want, "{script:?}");
}
