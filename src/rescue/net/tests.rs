use super::*;
use crate::layout::{BondMode, BondOptions, BridgeOptions, NetRoute};

fn nic(name: &str, mac: &str, pci: &str) -> NetInterface {
    NetInterface {
        name: name.into(),
        mac: mac.into(),
        driver: Some("virtio_net".into()),
        pci_path: Some(pci.into()),
    }
}

fn link(name: &str, kind: LinkKind, addrs: &[&str]) -> NetLink {
    NetLink {
        name: name.into(),
        kind,
        mtu: None,
        dhcp4: false,
        auto6: false,
        addresses: addrs.iter().map(|a| IpPrefix::parse(a).unwrap()).collect(),
    }
}

/// The host: ens3 with a static address and a VLAN 10 on it, ens4 and ens5
/// bonded (active-backup) under bridge br0 with MTU 9000, DNS.
fn host() -> Layout {
    let mut l = crate::layout::tests::minimal();
    l.network = vec![
        nic("ens3", "52:54:00:12:34:56", "0000:00:03.0"),
        nic("ens4", "52:54:00:00:00:04", "0000:00:04.0"),
        nic("ens5", "52:54:00:00:00:05", "0000:00:05.0"),
    ];
    let eth = |mac: &str| LinkKind::Ethernet { mac: mac.into() };
    let mut br = link(
        "br0",
        LinkKind::Bridge {
            members: vec!["bond0".into()],
            options: BridgeOptions::default(),
        },
        &["192.168.7.2/24"],
    );
    br.mtu = Some(9000);
    let mut ens4 = link("ens4", eth("52:54:00:00:00:04"), &[]);
    ens4.dhcp4 = false;
    l.network_config = Some(NetConfig {
        links: vec![
            link(
                "ens3",
                eth("52:54:00:12:34:56"),
                &["10.0.2.50/24", "2001:db8::50/64"],
            ),
            ens4,
            link("ens5", eth("52:54:00:00:00:05"), &[]),
            link(
                "ens3.10",
                LinkKind::Vlan {
                    parent: "ens3".into(),
                    id: 10,
                },
                &["192.168.10.5/24"],
            ),
            link(
                "bond0",
                LinkKind::Bond {
                    mode: BondMode::ActiveBackup,
                    members: vec!["ens4".into(), "ens5".into()],
                    options: BondOptions::default(),
                },
                &[],
            ),
            br,
        ],
        routes: vec![
            NetRoute {
                destination: IpPrefix::parse("0.0.0.0/0").unwrap(),
                gateway: Some("10.0.2.2".parse().unwrap()),
                dev: "ens3".into(),
                metric: None,
            },
            NetRoute {
                destination: IpPrefix::parse("10.9.0.0/16").unwrap(),
                gateway: Some("192.168.10.1".parse().unwrap()),
                dev: "ens3.10".into(),
                metric: Some(50),
            },
        ],
        dns: Dns {
            nameservers: vec!["10.0.2.3".parse().unwrap()],
            search: vec!["example.com".into()],
        },
    });
    l.network_config.as_ref().unwrap().check().unwrap();
    l
}

fn ip_lines(p: &NetPlan) -> Vec<String> {
    p.ip.iter().map(|a| a.join(" ")).collect()
}

#[test]
fn the_layout_comes_back_on_matched_cards() {
    // Here: the ens3 card by MAC as eth0; the bonded cards replaced by two
    // others (eth1, eth2: PCI order).
    let here = [
        nic("eth0", "52:54:00:12:34:56", "0000:00:03.0"),
        nic("eth1", "52:54:00:aa:00:01", "0000:00:06.0"),
        nic("eth2", "52:54:00:aa:00:02", "0000:00:07.0"),
    ];
    let l = host();
    let p = plan(&NetMode::Layout, Some(&l), &here);
    assert_eq!(
        ip_lines(&p),
        [
            "link set eth0 up",
            "addr add 10.0.2.50/24 dev eth0",
            "addr add 2001:db8::50/64 dev eth0",
            "link set eth1 up",
            "link set eth2 up",
            "link add link eth0 name ens3.10 type vlan id 10",
            "link set ens3.10 up",
            "addr add 192.168.10.5/24 dev ens3.10",
            "link add bond0 type bond mode active-backup",
            "link set eth1 down",
            "link set eth1 master bond0",
            "link set eth2 down",
            "link set eth2 master bond0",
            "link set bond0 up",
            "link add br0 type bridge",
            "link set bond0 master br0",
            "link set br0 mtu 9000",
            "link set br0 up",
            "addr add 192.168.7.2/24 dev br0",
            "route replace 0.0.0.0/0 via 10.0.2.2 dev eth0",
            "route replace 10.9.0.0/16 via 192.168.10.1 dev ens3.10 metric 50",
        ]
    );
    assert!(p.dhcp.is_empty());
    assert_eq!(
        resolv_conf(p.dns.as_ref().unwrap()),
        "# Written by lifeboat net-up.\nsearch example.com\nnameserver 10.0.2.3\n"
    );
    assert_eq!(p.notes[0], "lifeboat: eth0 (52:54:00:12:34:56, virtio_net, PCI 0000:00:03.0) is the host's ens3 (same MAC)");
}

#[test]
fn missing_cards_drop_what_sits_on_them_and_names_are_not_taken() {
    let l = host();
    // One card only, not the host's: it takes ens3's place (PCI order).
    let here = [nic("eth0", "52:54:00:aa:00:09", "0000:00:02.0")];
    let p = plan(&NetMode::Layout, Some(&l), &here);
    let ip = ip_lines(&p);
    assert!(
        ip.contains(&"addr add 10.0.2.50/24 dev eth0".to_string()),
        "{ip:?}"
    );
    assert!(
        !ip.iter().any(|c| c.contains("bond0") || c.contains("br0")),
        "{ip:?}"
    );
    assert!(p
        .notes
        .iter()
        .any(|n| n.contains("bond0 of the host is left out")));
    // A VLAN named like a card here is left out, not configured over it.
    let mut l2 = host();
    let c = l2.network_config.as_mut().unwrap();
    c.links[3].name = "eth0".into();
    c.routes.truncate(1);
    let p = plan(&NetMode::Layout, Some(&l2), &here);
    assert!(
        !ip_lines(&p).iter().any(|c| c.contains("type vlan")),
        "{:?}",
        p.ip
    );
}

#[test]
fn dhcp_links_and_overrides() {
    let mut l = host();
    l.network_config.as_mut().unwrap().links[0].dhcp4 = true;
    let here = [nic("eth0", "52:54:00:12:34:56", "0000:00:03.0")];
    let p = plan(&NetMode::Layout, Some(&l), &here);
    assert_eq!(p.dhcp, ["eth0"]);
    let d = plan(&NetMode::Dhcp, Some(&l), &here);
    assert_eq!(ip_lines(&d), ["link set eth0 up"]);
    assert_eq!(d.dhcp, ["eth0"]);
    assert_eq!(plan(&NetMode::Off, Some(&l), &here).ip.len(), 0);
    // No layout, or one without a network section: nothing.
    assert_eq!(plan(&NetMode::Layout, None, &here), NetPlan::default());
    l.network_config = None;
    assert_eq!(plan(&NetMode::Layout, Some(&l), &here), NetPlan::default());
}

#[test]
fn static_goes_on_the_card_of_the_default_route() {
    let mode = parse_net_arg(Some("static:192.168.1.20/24,192.168.1.1,192.168.1.53")).unwrap();
    // The default route went out of ens3, matched here as eth1 by MAC.
    let here = [
        nic("eth0", "52:54:00:aa:00:01", "0000:00:02.0"),
        nic("eth1", "52:54:00:12:34:56", "0000:00:03.0"),
    ];
    let p = plan(&mode, Some(&host()), &here);
    assert_eq!(
        ip_lines(&p),
        [
            "link set eth1 up",
            "addr add 192.168.1.20/24 dev eth1",
            "route replace 0.0.0.0/0 via 192.168.1.1 dev eth1",
        ]
    );
    assert_eq!(
        p.dns.unwrap().nameservers,
        ["192.168.1.53".parse::<IpAddr>().unwrap()]
    );
    // Without a layout: the first card.
    let p = plan(&mode, None, &here);
    assert_eq!(ip_lines(&p)[1], "addr add 192.168.1.20/24 dev eth0");
}

#[test]
fn the_static_argument_is_parsed_strictly() {
    assert_eq!(parse_net_arg(None).unwrap(), NetMode::Layout);
    assert_eq!(parse_net_arg(Some("dhcp")).unwrap(), NetMode::Dhcp);
    assert_eq!(parse_net_arg(Some("off")).unwrap(), NetMode::Off);
    let NetMode::Static(s) = parse_net_arg(Some("static:10.0.2.50/24")).unwrap() else {
        panic!()
    };
    assert_eq!((s.gateway, s.dns.len()), (None, 0));
    let NetMode::Static(s) =
        parse_net_arg(Some("static:2001:db8::5/64,fe80::1,2001:db8::53")).unwrap()
    else {
        panic!()
    };
    assert_eq!(s.gateway, Some("fe80::1".parse().unwrap()));
    let long = format!("static:10.0.2.50/24,10.0.2.2,{}", "1".repeat(600));
    let hostile: &[(&str, &str)] = &[
        ("static:10.0.2.50/33,10.0.2.2", "longer than 32"),
        ("static:10.0.2.50/-1", "not a number"),
        ("static:10.0.2.50", "no prefix length"),
        ("static:10.0.2.500/24", "not an IP address"),
        ("static:10.0.2.50/24,10.0.3.1", "outside 10.0.2.50/24"),
        ("static:10.0.2.50/24,2001:db8::1", "family"),
        (
            "static:10.0.2.50/24,10.0.2.2,8.8.8.8;reboot",
            "not an IP address",
        ),
        ("static:10.0.2.50/24,$(reboot),1.1.1.1", "not an IP address"),
        ("static:10.0.2.50/24 dev lo,10.0.2.2", "prefix length"),
        ("static:10.0.2.50/24,-f,1.1.1.1", "not an IP address"),
        (
            "static:10.0.2.50/24,10.0.2.2,1.1.1.1,1.0.0.1,9.9.9.9,8.8.8.8",
            "more than 3",
        ),
        (
            "static:10.0.2.50/24,10.0.2.2\n,1.1.1.1",
            "not an IP address",
        ),
        ("dhcp6", "expected dhcp, off or static"),
        (&long, "longer than 512"),
    ];
    for (arg, want) in hostile {
        let err = format!("{:#}", parse_net_arg(Some(arg)).unwrap_err());
        assert!(err.contains(want), "{arg:?}: {err}");
        assert!(!err.contains('\n'), "{err:?}");
    }
}

#[test]
fn dry_run_prints_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    crate::layout::probe::net::tests::sys_tree(
        tmp.path(),
        &[("eth0", "52:54:00:12:34:56", "virtio_net", "0000:00:03.0")],
    );
    let out = net_up(
        "console=ttyS0 lifeboat.net=static:10.0.2.50/24,10.0.2.2,10.0.2.3",
        Some(&host()),
        tmp.path(),
        true,
    )
    .unwrap();
    assert_eq!(
        out,
        [
            "lifeboat: eth0: 10.0.2.50/24 from lifeboat.net=static",
            "ip link set eth0 up",
            "ip addr add 10.0.2.50/24 dev eth0",
            "ip route replace 0.0.0.0/0 via 10.0.2.2 dev eth0",
            "nameserver 10.0.2.3",
        ]
    );
    // A malformed value: one line, the network off, no ip command.
    let out = net_up("lifeboat.net=bogus", None, tmp.path(), true).unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].starts_with("lifeboat: network off: lifeboat.net=\"bogus\": expected dhcp"),
        "{out:?}"
    );
}

/// busybox `ip -o addr` (no JSON): global addresses only.
#[test]
fn busybox_oneline_addresses() {
    let text = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
                4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever\n\
                4: eth0    inet6 fd00::2/64 scope global flags 02 \\       valid_lft forever\n\
                4: eth0    inet6 fe80::fc:ff:fe00:1/64 scope link \\       valid_lft forever\n\
                5: eth1.10    inet 10.9.8.7/999 scope global eth1.10\n";
    let got: Vec<String> = oneline_addresses(text)
        .iter()
        .map(|(l, a)| format!("{l} {}/{}", a.address, a.prefix))
        .collect();
    assert_eq!(got, ["eth0 192.0.2.2/24", "eth0 fd00::2/64"]);
}

use target::{parse_target, CardRef, Vlan};

#[test]
fn vlan_and_card_arguments_in_dracuts_forms() {
    let vlan = |id, name: Option<&str>| {
        Some(Vlan {
            id,
            name: name.map(String::from),
        })
    };
    let name = |n: &str| Some(CardRef::Name(n.into()));
    let mac = Some(CardRef::Mac("52:54:00:12:34:56".into()));
    let cases: &[(Option<&str>, Option<&str>, NetTarget)] = &[
        (None, None, NetTarget::default()),
        (
            None,
            Some("10"),
            NetTarget {
                card: None,
                vlan: vlan(10, None),
            },
        ),
        (
            None,
            Some("10@eth1"),
            NetTarget {
                card: name("eth1"),
                vlan: vlan(10, None),
            },
        ),
        (
            None,
            Some("4094@52:54:00:12:34:56"),
            NetTarget {
                card: mac.clone(),
                vlan: vlan(4094, None),
            },
        ),
        // dracut: vlan=<vlanname>:<phys>, the four name conventions.
        (
            None,
            Some("eth0.10:eth0"),
            NetTarget {
                card: name("eth0"),
                vlan: vlan(10, Some("eth0.10")),
            },
        ),
        (
            None,
            Some("eth0.0010:eth0"),
            NetTarget {
                card: name("eth0"),
                vlan: vlan(10, Some("eth0.0010")),
            },
        ),
        (
            None,
            Some("vlan7:eth0"),
            NetTarget {
                card: name("eth0"),
                vlan: vlan(7, Some("vlan7")),
            },
        ),
        (
            None,
            Some("vlan0007:52-54-00-12-34-56"),
            NetTarget {
                card: mac.clone(),
                vlan: vlan(7, Some("vlan0007")),
            },
        ),
        (
            Some("ens3"),
            None,
            NetTarget {
                card: name("ens3"),
                vlan: None,
            },
        ),
        (
            Some("52:54:00:12:34:56"),
            Some("10"),
            NetTarget {
                card: mac.clone(),
                vlan: vlan(10, None),
            },
        ),
        (
            Some("52:54:00:12:34:56"),
            Some("10@52-54-00-12-34-56"),
            NetTarget {
                card: mac.clone(),
                vlan: vlan(10, None),
            },
        ),
    ];
    for (netdev, v, want) in cases {
        assert_eq!(
            &parse_target(*netdev, *v).unwrap(),
            want,
            "{netdev:?} {v:?}"
        );
    }
    let long = "1".repeat(100);
    let hostile: &[(Option<&str>, Option<&str>, &str)] = &[
        (None, Some("0"), "not a number from 1 to 4094"),
        (None, Some("4095"), "not a number from 1 to 4094"),
        (None, Some("+10"), "not a number from 1 to 4094"),
        (None, Some("-1"), "not a number from 1 to 4094"),
        (None, Some(""), "not a number from 1 to 4094"),
        (None, Some("10@"), "not an interface name"),
        (None, Some("10@eth0;reboot"), "not an interface name"),
        (None, Some("10@$(reboot)"), "not an interface name"),
        (None, Some("10@eth0 up"), "not an interface name"),
        (None, Some("10@-f"), "not an interface name"),
        (None, Some("10@../x"), "not an interface name"),
        (None, Some("eth0.x:eth0"), "does not end with its ID"),
        (None, Some("bond:eth0"), "does not end with its ID"),
        (
            None,
            Some("a-very-long-name.10:eth0"),
            "not an interface name",
        ),
        (None, Some(&long), "longer than 64"),
        (
            None,
            Some("10@eth0\nlifeboat.net=off"),
            "not an interface name",
        ),
        (Some("eth0/1"), None, "not an interface name"),
        (Some("52:54:00:12:34"), None, "not an interface name"),
        (
            Some("eth0"),
            Some("10@eth1"),
            "lifeboat.vlan names the card eth1 but lifeboat.netdev names eth0",
        ),
    ];
    for (netdev, v, want) in hostile {
        let err = format!("{:#}", parse_target(*netdev, *v).unwrap_err());
        assert!(err.contains(want), "{netdev:?} {v:?}: {err}");
        assert!(!err.contains('\n'), "{err:?}");
        let arg = if v.is_some() {
            "lifeboat.vlan="
        } else {
            "lifeboat.netdev="
        };
        assert!(
            err.starts_with(arg) || err.starts_with("lifeboat.vlan names"),
            "{err}"
        );
    }
}

#[test]
fn static_and_dhcp_on_a_vlan_or_a_named_card() {
    let here = [
        nic("eth0", "52:54:00:aa:00:01", "0000:00:02.0"),
        nic("eth1", "52:54:00:12:34:56", "0000:00:03.0"),
    ];
    let run = |cmdline: &str, layout: Option<&Layout>| {
        let (mode, target) = parse_args(cmdline).unwrap();
        plan_for(&mode, &target, layout, &here)
    };
    // A VLAN on the card of the host's default route (ens3 = eth1 by MAC).
    let p = run(
        "lifeboat.net=static:192.168.50.5/24,192.168.50.1,192.168.50.53 lifeboat.vlan=50",
        Some(&host()),
    );
    assert_eq!(
        ip_lines(&p),
        [
            "link set eth1 up",
            "link add link eth1 name eth1.50 type vlan id 50",
            "link set eth1.50 up",
            "addr add 192.168.50.5/24 dev eth1.50",
            "route replace 0.0.0.0/0 via 192.168.50.1 dev eth1.50",
        ]
    );
    assert_eq!(
        p.notes,
        ["lifeboat: eth1.50: 192.168.50.5/24 from lifeboat.net=static (VLAN 50 on eth1)"]
    );
    assert_eq!(p.dns.unwrap().nameservers.len(), 1);
    // The card by MAC (no layout), dracut's VLAN name kept.
    let p = run(
        "lifeboat.net=static:192.168.50.5/24 lifeboat.vlan=vlan0050:52:54:00:AA:00:01",
        None,
    );
    assert_eq!(
        ip_lines(&p)[..2],
        [
            "link set eth0 up",
            "link add link eth0 name vlan0050 type vlan id 50"
        ]
    );
    assert_eq!(ip_lines(&p)[3], "addr add 192.168.50.5/24 dev vlan0050");
    // The card by the host's name in the layout; no VLAN.
    let p = run(
        "lifeboat.net=static:10.0.2.60/24 lifeboat.netdev=ens3",
        Some(&host()),
    );
    assert_eq!(
        ip_lines(&p),
        ["link set eth1 up", "addr add 10.0.2.60/24 dev eth1"]
    );
    assert_eq!(
        p.notes,
        ["lifeboat: eth1: 10.0.2.60/24 from lifeboat.net=static"]
    );
    // DHCP on the VLAN only.
    let p = run("lifeboat.net=dhcp lifeboat.vlan=20@eth0", None);
    assert_eq!(
        ip_lines(&p),
        [
            "link set eth0 up",
            "link add link eth0 name eth0.20 type vlan id 20",
            "link set eth0.20 up",
        ]
    );
    assert_eq!(p.dhcp, ["eth0.20"]);
    // A card that is not here: the network stays off, one line.
    let p = run(
        "lifeboat.net=static:10.0.2.60/24 lifeboat.vlan=10@52:54:00:ff:ff:ff",
        None,
    );
    assert_eq!(p.ip.len() + p.dhcp.len(), 0);
    assert_eq!(
        p.notes,
        [
            "lifeboat: network off: lifeboat.netdev/lifeboat.vlan card 52:54:00:ff:ff:ff: no card \
          52:54:00:ff:ff:ff here (cards: eth0 52:54:00:aa:00:01, eth1 52:54:00:12:34:56)"
        ]
    );
    // Without lifeboat.net: the layout's network, the arguments said ignored.
    let p = run("lifeboat.vlan=50", Some(&host()));
    assert_eq!(
        ip_lines(&p),
        ip_lines(&plan(&NetMode::Layout, Some(&host()), &here))
    );
    assert!(
        p.notes.last().unwrap().ends_with("ignored"),
        "{:?}",
        p.notes
    );
}

/// Hostile values through net-up itself: one console line, no `ip`
/// command, no panic (the rescue boots on with the network off).
#[test]
fn hostile_network_arguments_leave_the_network_off() {
    let tmp = tempfile::tempdir().unwrap();
    crate::layout::probe::net::tests::sys_tree(
        tmp.path(),
        &[("eth0", "52:54:00:12:34:56", "virtio_net", "0000:00:03.0")],
    );
    for cmdline in [
        "lifeboat.net=static:10.0.2.50/24 lifeboat.vlan=99999",
        "lifeboat.net=static:10.0.2.50/24 lifeboat.vlan=\"10@eth0 type bridge\"",
        "lifeboat.net=dhcp lifeboat.netdev=$(reboot)",
        "lifeboat.net=static:10.0.2.50/24 lifeboat.netdev=eth9",
        "lifeboat.net=static:10.0.2.50/24,10.0.2.2 lifeboat.vlan=10@eth0 lifeboat.netdev=eth1",
        "lifeboat.net=static: lifeboat.vlan=10",
        "lifeboat.vlan=\u{1b}[2J:eth0 lifeboat.net=dhcp",
    ] {
        let out = net_up(cmdline, Some(&host()), tmp.path(), true).unwrap();
        assert_eq!(out.len(), 1, "{cmdline}: {out:?}");
        assert!(
            out[0].starts_with("lifeboat: network off: "),
            "{cmdline}: {out:?}"
        );
        assert!(!out[0].contains('\u{1b}'), "{out:?}");
    }
}

/// Bond and bridge options come back as `ip link add` arguments; the
/// primary by its name here, once it is a member.
#[test]
fn bond_and_bridge_options_are_given_to_ip() {
    let mut l = host();
    for link in &mut l.network_config.as_mut().unwrap().links {
        match &mut link.kind {
            LinkKind::Bond { options, .. } => {
                *options = BondOptions {
                    miimon: Some(100),
                    updelay: Some(200),
                    downdelay: Some(300),
                    primary: Some("ens5".into()),
                    ..BondOptions::default()
                }
            }
            LinkKind::Bridge { options, .. } => {
                *options = BridgeOptions {
                    stp: Some(true),
                    forward_delay: Some(400),
                }
            }
            _ => {}
        }
    }
    l.network_config.as_ref().unwrap().check().unwrap();
    let here = [
        nic("eth0", "52:54:00:12:34:56", "0000:00:03.0"),
        nic("eth1", "52:54:00:00:00:04", "0000:00:04.0"),
        nic("eth2", "52:54:00:00:00:05", "0000:00:05.0"),
    ];
    let lines = ip_lines(&plan(&NetMode::Layout, Some(&l), &here));
    let at = lines
        .iter()
        .position(|x| x.starts_with("link add bond0"))
        .unwrap();
    assert_eq!(
        lines[at..at + 8],
        [
            "link add bond0 type bond mode active-backup miimon 100 updelay 200 downdelay 300",
            "link set eth1 down",
            "link set eth1 master bond0",
            "link set eth2 down",
            "link set eth2 master bond0",
            "link set bond0 type bond primary eth2",
            "link set bond0 up",
            "link add br0 type bridge forward_delay 400 stp_state 1",
        ]
    );
    // The primary's card missing here: no primary; the bond is made.
    let lines = ip_lines(&plan(&NetMode::Layout, Some(&l), &here[..2]));
    assert!(lines
        .iter()
        .any(|x| x.starts_with("link add bond0 type bond mode active-backup miimon 100")));
    assert!(!lines.iter().any(|x| x.contains("primary")), "{lines:?}");

    // 802.3ad's own options.
    let lacp = BondOptions {
        lacp_rate: Some(crate::layout::LacpRate::Fast),
        ad_select: Some(crate::layout::AdSelect::Count),
        xmit_hash_policy: Some(crate::layout::XmitHashPolicy::Encap34),
        ..BondOptions::default()
    };
    assert_eq!(
        lacp.add_args().join(" "),
        "lacp_rate fast ad_select count xmit_hash_policy encap3+4"
    );
    assert!(BondOptions::default().add_args().is_empty());
    assert!(BridgeOptions::default().add_args().is_empty());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..Default::default()
    })]

    /// Any `lifeboat.vlan` / `lifeboat.netdev` value: no panic; an error
    /// is one line; what is accepted reaches `ip` as plain words (no
    /// blank, no control character, no leading `-`).
    #[test]
    fn any_vlan_or_card_value_is_refused_or_plain(
        vlan in "[0-9a-zA-Z.:@/ ,;$()\\-\u{1b}\n\"]{0,24}",
        card in "[0-9a-fA-F:.@/ ;$\\-\u{1b}\n]{0,20}",
    ) {
        let here = [nic("eth0", "52:54:00:12:34:56", "0000:00:03.0")];
        match target::parse_target(Some(&card), Some(&vlan)) {
            Err(e) => {
                let msg = format!("{e:#}");
                proptest::prop_assert!(!msg.contains('\n') && !msg.contains('\u{1b}'), "{msg:?}");
            }
            Ok(t) => {
                let mode = parse_net_arg(Some("static:10.0.2.50/24")).unwrap();
                let p = plan_for(&mode, &t, Some(&host()), &here);
                for w in p.ip.iter().flatten() {
                    proptest::prop_assert!(
                        !w.is_empty() && !w.starts_with('-')
                            && !w.chars().any(|c| c.is_whitespace() || c.is_control()),
                        "{w:?} in {:?}", p.ip
                    );
                }
            }
        }
    }
}
