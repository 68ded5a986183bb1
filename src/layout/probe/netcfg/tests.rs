use super::*;
use crate::layout::{AdSelect, LacpRate, XmitHashPolicy};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/netcfg")
        .join(name);
    std::fs::read_to_string(&p).unwrap()
}

fn nic(name: &str, mac: &str) -> NetInterface {
    NetInterface {
        name: name.into(),
        mac: mac.into(),
        driver: Some("virtio_net".into()),
        pci_path: None,
    }
}

/// The recorded machine (tests/fixtures/netcfg/record.sh): eth0 with a
/// leased address and VLAN 10, eth1 + eth2 bonded under br0, docker0.
fn recorded(dns: Dns) -> NetConfig {
    let links: Vec<IpLink> = serde_json::from_str(&fixture("addr.json")).unwrap();
    let mut routes: Vec<IpRoute> = serde_json::from_str(&fixture("route4.json")).unwrap();
    routes.extend(serde_json::from_str::<Vec<IpRoute>>(&fixture("route6.json")).unwrap());
    let cards = [
        nic("eth0", "52:54:00:12:34:56"),
        nic("eth1", "52:54:00:00:00:04"),
        nic("eth2", "52:54:00:00:00:05"),
    ];
    from_kernel(&links, &routes, &cards, dns)
}

fn p(s: &str) -> IpPrefix {
    IpPrefix::parse(s).unwrap()
}

#[test]
fn links_addresses_and_kinds_from_recorded_ip_json() {
    let c = recorded(Dns::default());
    c.check().unwrap();
    let names: Vec<&str> = c.links.iter().map(|l| l.name.as_str()).collect();
    // Cards first, then what is built on them; docker0 has no card below.
    assert_eq!(names, ["eth0", "eth1", "eth2", "eth0.10", "bond0", "br0"]);
    let l = |n: &str| c.link(n).unwrap();
    // eth0: the leased IPv4 address is DHCP, not static.
    assert!(l("eth0").dhcp4);
    assert!(l("eth0").addresses.is_empty());
    assert!(
        l("eth0").auto6,
        "the RA address (fec0::) is autoconfiguration"
    );
    assert_eq!(
        l("eth0").kind,
        LinkKind::Ethernet {
            mac: "52:54:00:12:34:56".into()
        }
    );
    assert_eq!(
        l("eth0.10").kind,
        LinkKind::Vlan {
            parent: "eth0".into(),
            id: 10
        }
    );
    assert_eq!(
        l("eth0.10").addresses,
        [p("192.168.10.5/24"), p("2001:db8:10::5/64")]
    );
    assert!(!l("eth0.10").dhcp4 && !l("eth0.10").auto6);
    assert_eq!(
        l("bond0").kind,
        LinkKind::Bond {
            mode: BondMode::ActiveBackup,
            members: vec!["eth1".into(), "eth2".into()],
            options: BondOptions::default(),
        }
    );
    assert_eq!(
        l("br0").kind,
        LinkKind::Bridge {
            members: vec!["bond0".into()],
            options: BridgeOptions::default(),
        }
    );
    assert_eq!(l("br0").mtu, Some(1400));
    // br0's 2001:db8:7::99 has a lifetime (dynamic): autoconfiguration.
    assert_eq!(l("br0").addresses, [p("192.168.7.2/24")]);
    assert!(l("br0").auto6);
    // A bond member's own MAC comes from the layout's cards, not the
    // bond's address it carries.
    assert_eq!(
        l("eth2").kind,
        LinkKind::Ethernet {
            mac: "52:54:00:00:00:05".into()
        }
    );
}

#[test]
fn the_summary_names_links_routes_and_dns() {
    let c = recorded(Dns {
        nameservers: vec!["10.0.2.3".parse().unwrap()],
        search: vec!["example.com".into()],
    });
    assert_eq!(
        c.describe(),
        [
            "network: eth0 (52:54:00:12:34:56) DHCP, IPv6 autoconfiguration",
            "network: eth1 (52:54:00:00:00:04)",
            "network: eth2 (52:54:00:00:00:05)",
            "network: eth0.10 (VLAN 10 on eth0) 192.168.10.5/24, 2001:db8:10::5/64",
            "network: bond0 (bond active-backup of eth1 eth2)",
            "network: br0 (bridge of bond0) 192.168.7.2/24, IPv6 autoconfiguration, mtu 1400",
            "route: 10.9.0.0/16 via 192.168.10.1 dev eth0.10",
            "route: 203.0.113.0/24 via 192.168.7.1 dev br0",
            "route: 2001:db8:99::/48 via 2001:db8:10::1 dev eth0.10",
            "route: default via 2001:db8:10::1 dev eth0.10",
            "DNS: 10.0.2.3, search example.com",
        ]
    );
}

#[test]
fn only_routes_set_by_the_admin_on_kept_links() {
    let c = recorded(Dns::default());
    let got: Vec<String> = c
        .routes
        .iter()
        .map(|r| {
            format!(
                "{} via {} dev {} metric {:?}",
                r.destination,
                r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                r.dev,
                r.metric
            )
        })
        .collect();
    // Left out: DHCP's default, the kernel's subnet routes, the blackhole,
    // docker0's, the router advertisement's default.
    assert_eq!(
        got,
        [
            "10.9.0.0/16 via 192.168.10.1 dev eth0.10 metric None",
            "203.0.113.0/24 via 192.168.7.1 dev br0 metric Some(20)",
            "2001:db8:99::/48 via 2001:db8:10::1 dev eth0.10 metric Some(1024)",
            "::/0 via 2001:db8:10::1 dev eth0.10 metric Some(1024)",
        ]
    );
    assert!(c.routes[3].is_default());
}

#[test]
fn an_ifupdown_dhclient_lease_is_dhcp_not_static() {
    let links: Vec<IpLink> = serde_json::from_str(
        r#"[{"ifname":"ens3","mtu":1500,"addr_info":[
            {"family":"inet","local":"10.0.2.15","prefixlen":24,"scope":"global"},
            {"family":"inet6","local":"2001:db8::15","prefixlen":64,"scope":"global"}]}]"#,
    )
    .unwrap();
    let routes: Vec<IpRoute> = serde_json::from_str(
        r#"[{"dst":"default","gateway":"10.0.2.2","dev":"ens3","flags":[]},
            {"dst":"10.8.0.0/16","gateway":"10.0.2.9","dev":"ens3","flags":[]}]"#,
    )
    .unwrap();
    let cards = [nic("ens3", "52:54:00:12:34:56")];
    let mut c = from_kernel(&links, &routes, &cards, Dns::default());
    assert!(!c.links[0].dhcp4 && c.links[0].addresses.len() == 2);
    leased_by_dhclient(&mut c, &["ens3".into()]);
    assert!(c.links[0].dhcp4);
    assert_eq!(c.links[0].addresses, [p("2001:db8::15/64")]);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].destination, p("10.8.0.0/16"));
}

#[test]
fn hostile_names_and_numbers_in_ip_output_are_dropped() {
    let links = r#"[
        {"ifname":"eth0","mtu":1500,"addr_info":[
            {"family":"inet","local":"10.0.0.1","prefixlen":99,"scope":"global"},
            {"family":"inet","local":"10.0.0.2; reboot","prefixlen":24,"scope":"global"},
            {"family":"inet","local":"10.0.0.3","prefixlen":24,"scope":"global"}]},
        {"ifname":"v;reboot","link":"eth0","linkinfo":{"info_kind":"vlan","info_data":{"id":5}}},
        {"ifname":"v2","link":"eth0","linkinfo":{"info_kind":"vlan","info_data":{"id":70000}}},
        {"ifname":"b0","linkinfo":{"info_kind":"bond","info_data":{"mode":"weird"}}},
        {"ifname":"eth1","master":"b0"}
    ]"#;
    let links: Vec<IpLink> = serde_json::from_str(links).unwrap();
    let routes: Vec<IpRoute> = serde_json::from_str(
        r#"[{"dst":"10.1.0.0/40","gateway":"10.0.0.9","dev":"eth0","flags":[]},
            {"dst":"10.2.0.0/16","gateway":"10.0.0.9 x","dev":"eth0","flags":[]},
            {"dst":"10.3.0.7","gateway":"10.0.0.9","dev":"eth0","flags":[]}]"#,
    )
    .unwrap();
    let c = from_kernel(
        &links,
        &routes,
        &[
            nic("eth0", "52:54:00:00:00:01"),
            nic("eth1", "52:54:00:00:00:02"),
        ],
        Dns::default(),
    );
    c.check().unwrap();
    assert_eq!(
        c.links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["eth0", "eth1"]
    );
    assert_eq!(c.links[0].addresses, [p("10.0.0.3/24")]);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].destination, p("10.3.0.7/32"));
}

#[test]
fn resolved_stub_is_followed_to_the_upstream_servers() {
    let root = tempfile::tempdir().unwrap();
    let w = |rel: &str, text: &str| {
        let f = root.path().join(rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    };
    // What systemd-resolved writes (stub-resolv.conf and resolv.conf).
    w(
        "etc/resolv.conf",
        "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n\
         nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch corp.example.com\n",
    );
    w(
        "run/systemd/resolve/resolv.conf",
        "# This is /run/systemd/resolve/resolv.conf managed by man:systemd-resolved(8).\n\
         nameserver 10.0.2.3\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\n\
         search lab.example.com\n",
    );
    let d = read_dns(root.path());
    assert_eq!(
        d.nameservers,
        [
            "10.0.2.3".parse::<IpAddr>().unwrap(),
            "2001:db8::53".parse().unwrap()
        ]
    );
    assert_eq!(d.search, ["corp.example.com"]);
    // A plain file; loopback servers and bad domains left out.
    w(
        "etc/resolv.conf",
        "domain example.org\nnameserver 192.0.2.53\nnameserver 127.0.0.1\nnameserver 192.0.2.53\n\
         search a.example b;reboot\n",
    );
    let d = read_dns(root.path());
    assert_eq!(d.nameservers, ["192.0.2.53".parse::<IpAddr>().unwrap()]);
    assert_eq!(d.search, ["a.example"]);
    assert_eq!(read_dns(&root.path().join("none")), Dns::default());
}

#[test]
fn a_fixture_tree_captures_no_network_configuration() {
    let opts = CaptureOptions {
        root: "/tmp/somewhere".into(),
        ..CaptureOptions::default()
    };
    assert_eq!(capture(&opts, &[]), None);
}

/// Bond and bridge options from `ip -json -details` as a rescue kernel
/// printed them (tests/fixtures/netcfg/record.sh, `options`): kept when not
/// the kernel's default and when the bond's mode uses them.
#[test]
fn bond_and_bridge_options_from_recorded_ip_json() {
    let links: Vec<IpLink> = serde_json::from_str(&fixture("options.json")).unwrap();
    let cards = [
        nic("eth0", "52:54:00:12:34:56"),
        nic("eth1", "52:54:00:00:00:04"),
        nic("eth2", "52:54:00:00:00:05"),
    ];
    let c = from_kernel(&links, &[], &cards, Dns::default());
    c.check().unwrap();
    let kind = |n: &str| c.link(n).unwrap().kind.clone();
    assert_eq!(
        kind("bond0"),
        LinkKind::Bond {
            mode: BondMode::Lacp,
            members: vec!["eth1".into(), "eth2".into()],
            options: BondOptions {
                miimon: Some(100),
                updelay: Some(200),
                downdelay: Some(300),
                lacp_rate: Some(LacpRate::Fast),
                ad_select: Some(AdSelect::Bandwidth),
                xmit_hash_policy: Some(XmitHashPolicy::Layer34),
                primary: None,
            },
        }
    );
    // active-backup: the primary; its layer2 hash, slow rate, stable
    // selection are defaults (and not its mode's) and stay out.
    assert_eq!(
        kind("bond1"),
        LinkKind::Bond {
            mode: BondMode::ActiveBackup,
            members: vec!["eth0".into()],
            options: BondOptions {
                miimon: Some(50),
                primary: Some("eth0".into()),
                ..BondOptions::default()
            },
        }
    );
    assert_eq!(
        kind("br0"),
        LinkKind::Bridge {
            members: vec!["bond0".into()],
            options: BridgeOptions {
                stp: Some(true),
                forward_delay: Some(400),
            },
        }
    );
    // What the layout file holds, and that it reads back the same.
    let json = serde_json::to_value(&c).unwrap();
    let br0 = json["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "br0")
        .unwrap();
    assert_eq!(
        br0["kind"],
        serde_json::json!({"type": "bridge", "members": ["bond0"],
                           "options": {"stp": true, "forward_delay": 400}})
    );
    let back: NetConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);
    assert!(
        c.describe().iter().any(|l| l.contains(
            "bond 802.3ad of eth1 eth2 (miimon 100 updelay 200 downdelay 300 \
                             lacp_rate fast ad_select bandwidth xmit_hash_policy layer3+4)"
        )),
        "{:?}",
        c.describe()
    );
}

/// A layout written before the options (no `options` key) loads with
/// none; a bond with no option set writes none; a primary that is not a
/// member, or a value outside the known sets, is refused.
#[test]
fn bond_options_are_optional_and_checked() {
    let old = serde_json::json!({"links": [
        {"name": "eth1", "kind": {"type": "ethernet", "mac": "52:54:00:00:00:04"}, "mtu": 1500},
        {"name": "bond0", "kind": {"type": "bond", "mode": "802.3ad", "members": ["eth1"]},
         "mtu": 1500},
        {"name": "br0", "kind": {"type": "bridge", "members": ["bond0"]}, "mtu": 1500}
    ]});
    let c: NetConfig = serde_json::from_value(old.clone()).unwrap();
    c.check().unwrap();
    assert!(matches!(&c.links[1].kind, LinkKind::Bond { options, .. } if options.is_empty()));
    let written = serde_json::to_value(&c).unwrap();
    for i in 0..3 {
        assert_eq!(written["links"][i]["kind"], old["links"][i]["kind"]);
    }

    let mut bad = old.clone();
    bad["links"][1]["kind"]["options"] = serde_json::json!({"primary": "eth9"});
    let c: NetConfig = serde_json::from_value(bad).unwrap();
    let err = format!("{:#}", c.check().unwrap_err());
    assert!(
        err.contains("links[1].kind.options") && err.contains("not one of its members"),
        "{err}"
    );
    for (k, v) in [
        ("lacp_rate", "turbo"),
        ("xmit_hash_policy", "layer9"),
        ("miimon", "-1"),
    ] {
        let mut bad = old.clone();
        bad["links"][1]["kind"]["options"] = serde_json::json!({k: v});
        assert!(serde_json::from_value::<NetConfig>(bad).is_err(), "{k} {v}");
    }
}
