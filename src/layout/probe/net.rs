//! Network interfaces with hardware behind them, from /sys/class/net: name,
//! MAC address, driver and PCI address. Interfaces without a `device` link
//! (lo, bridges, bonds, VLANs, tunnels) are configuration, not hardware, and
//! are left out; so is anything that is not Ethernet-like (ARPHRD 1).

use std::path::Path;

use crate::layout::NetInterface;

/// The interfaces under `sys` (`/sys`), sorted by PCI address then name.
pub fn interfaces(sys: &Path) -> Vec<NetInterface> {
    let Ok(dir) = std::fs::read_dir(sys.join("class/net")) else {
        return Vec::new();
    };
    let mut out: Vec<NetInterface> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| interface(&e.path(), &e.file_name().to_string_lossy()))
        .collect();
    out.sort_by(|a, b| (&a.pci_path, &a.name).cmp(&(&b.pci_path, &b.name)));
    out
}

fn interface(dir: &Path, name: &str) -> Option<NetInterface> {
    let device = std::fs::canonicalize(dir.join("device")).ok()?;
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("type").as_deref() != Some("1") {
        return None;
    }
    // A bond member carries the bond's address; its own is kept apart.
    let mac = read("bonding_slave/perm_hwaddr")
        .or_else(|| read("address"))?
        .to_ascii_lowercase();
    let driver = std::fs::read_link(device.join("driver"))
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()));
    let pci_path = device
        .ancestors()
        .filter_map(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .find(|n| is_pci_address(n));
    Some(NetInterface {
        name: name.to_string(),
        mac,
        driver,
        pci_path,
    })
}

/// `0000:00:03.0`: domain, bus, slot and function.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs tree with a virtio NIC (`ens3`, PCI 0000:00:03.0), an e1000e
    /// (`eno1`, 0000:00:1f.6), `lo` and a bridge.
    pub(crate) fn sys_tree(root: &Path, nics: &[(&str, &str, &str, &str)]) {
        let mk = |p: &Path, text: &str| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        std::fs::create_dir_all(root.join("class/net")).unwrap();
        for (name, mac, driver, pci) in nics {
            let (dev_rel, bus) = if *driver == "virtio_net" {
                (
                    format!("devices/pci0000:00/{pci}/virtio{}", &pci[8..10]),
                    "virtio",
                )
            } else {
                (format!("devices/pci0000:00/{pci}"), "pci")
            };
            let dev = root.join(&dev_rel);
            let net = dev.join("net").join(name);
            mk(&net.join("address"), &format!("{mac}\n"));
            mk(&net.join("type"), "1\n");
            symlink("../..", net.join("device")).unwrap();
            std::fs::create_dir_all(root.join("bus").join(bus).join("drivers").join(driver))
                .unwrap();
            let up = "../".repeat(dev_rel.matches('/').count() + 1);
            symlink(
                format!("{up}bus/{bus}/drivers/{driver}"),
                dev.join("driver"),
            )
            .unwrap();
            symlink(
                format!("../../{dev_rel}/net/{name}"),
                root.join("class/net").join(name),
            )
            .unwrap();
        }
        for virt in ["lo", "br0"] {
            let d = root.join("devices/virtual/net").join(virt);
            mk(&d.join("address"), "00:00:00:00:00:00\n");
            mk(&d.join("type"), if virt == "lo" { "772\n" } else { "1\n" });
            symlink(
                format!("../../devices/virtual/net/{virt}"),
                root.join("class/net").join(virt),
            )
            .unwrap();
        }
    }

    #[test]
    fn hardware_interfaces_with_mac_driver_and_pci_address() {
        let tmp = tempfile::tempdir().unwrap();
        sys_tree(
            tmp.path(),
            &[
                ("eno1", "3C:EC:EF:00:11:22", "e1000e", "0000:00:1f.6"),
                ("ens3", "52:54:00:12:34:56", "virtio_net", "0000:00:03.0"),
            ],
        );
        let got = interfaces(tmp.path());
        assert_eq!(
            got,
            [
                NetInterface {
                    name: "ens3".into(),
                    mac: "52:54:00:12:34:56".into(),
                    driver: Some("virtio_net".into()),
                    pci_path: Some("0000:00:03.0".into()),
                },
                NetInterface {
                    name: "eno1".into(),
                    mac: "3c:ec:ef:00:11:22".into(),
                    driver: Some("e1000e".into()),
                    pci_path: Some("0000:00:1f.6".into()),
                },
            ]
        );
        assert!(interfaces(&tmp.path().join("missing")).is_empty());
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:00:03.0"));
        assert!(is_pci_address("0000:3b:00.1"));
        assert!(!is_pci_address("virtio0"));
        assert!(!is_pci_address("pci0000:00"));
    }
}
