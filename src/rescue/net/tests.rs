use super::*;
use crate::layout::{BondMode, NetRoute};

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
    assert!(net_up("lifeboat.net=bogus", None, tmp.path(), true).is_err());
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
