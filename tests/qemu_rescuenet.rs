//! QEMU tier: the host's network comes back in the rescue, and the admin
//! reaches the rescue over SSH.
//!
//! One rescue boot (kernel + initrd, TCG, user-mode network) with a layout
//! whose network section gives the guest card (by MAC) the static address
//! 10.0.2.50/24 (gateway 10.0.2.2) and a VLAN 10 with 192.168.10.5/24, and
//! `lifeboat.ssh` set through `--append` (rescue.append). From the host,
//! through a hostfwd to 10.0.2.50 port 22: a command over SSH with the key
//! works (so the static address is there) and shows the VLAN's address;
//! `lifeboat.net=static:...` applied the same way init applies it adds an
//! address the host then reaches;
//! another key and password logins are refused; the host key the client
//! sees is the one the console showed; the image holds no host key. That
//! image has OpenSSH (`--ssh-server openssh`).
//!
//! A second, lean rescue boot with dropbear (`--ssh-server dropbear`, no
//! layout, the address from `lifeboat.net=static` on the card
//! `lifeboat.netdev=MAC` names, on the kernel command line) proves the same of dropbear, `lifeboat.net=static` with
//! `lifeboat.vlan=ID@MAC` puts the address on a VLAN, and last a layout's
//! 802.3ad bond and STP bridge are made with their options (read back
//! from the kernel on the console).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const MAC: &str = "52:54:00:12:34:56";

/// The Debian 12 fixture layout with a network section: `ens3` (this MAC)
/// at 10.0.2.50/24, VLAN 10 on it at 192.168.10.5/24, DNS 10.0.2.3.
fn layout_with_network(path: &Path) {
    let fixture = repo().join("tests/fixtures/debian12-layout.json");
    let mut l: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    l["schema_version"] = "1.1".into();
    l["network"] = serde_json::json!([{
        "name": "ens3", "mac": MAC, "driver": "virtio_net", "pci_path": "0000:00:03.0"
    }]);
    l["network_config"] = serde_json::json!({
        "links": [
            {"name": "ens3", "kind": {"type": "ethernet", "mac": MAC}, "mtu": 1500,
             "addresses": [{"address": "10.0.2.50", "prefix": 24}]},
            {"name": "ens3.10", "kind": {"type": "vlan", "parent": "ens3", "id": 10},
             "mtu": 1500, "addresses": [{"address": "192.168.10.5", "prefix": 24}]}
        ],
        "routes": [{"destination": {"address": "0.0.0.0", "prefix": 0},
                    "gateway": "10.0.2.2", "dev": "ens3", "metric": null}],
        "dns": {"nameservers": ["10.0.2.3"], "search": ["lifeboat.test"]}
    });
    std::fs::write(path, serde_json::to_string_pretty(&l).unwrap()).unwrap();
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(out.status.success(), "{out:?}");
}

/// `ssh` to the rescue through the forwarded port, never prompting.
fn ssh(port: u16, extra: &[&str], command: &str) -> Output {
    Command::new("ssh")
        .args(["-p", &port.to_string()])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=60",
            "-o",
            "IdentitiesOnly=yes",
            "-F",
            "/dev/null",
        ])
        .args(extra)
        .arg("root@127.0.0.1")
        .arg(command)
        .output()
        .expect("ssh (openssh-client) is installed")
}

/// [`ssh`] that must succeed; its output.
fn ssh_ok(port: u16, extra: &[&str], command: &str) -> String {
    let out = ssh(port, extra, command);
    let got = text(&out.stdout);
    assert!(
        out.status.success(),
        "ssh {command:?} failed: {}{got}",
        text(&out.stderr)
    );
    got
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Waits for `marker` on the console; stops early on a panic or when QEMU
/// exits.
fn wait_for(vm: &Vm, child: &mut std::process::Child, marker: &str, secs: u64) -> String {
    let start = Instant::now();
    loop {
        let log = text(&std::fs::read(&vm.serial_log).unwrap_or_default());
        if log.contains(marker) {
            return log;
        }
        let dead = child.try_wait().unwrap().is_some() || log.contains("Kernel panic");
        if dead || start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("no {marker:?} on the console:\n{}", tail(&log, 60));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The image's initrd, decompressed.
fn initrd_bytes(initrd: &Path) -> Vec<u8> {
    let out = Command::new("zstd")
        .args(["-dc"])
        .arg(initrd)
        .output()
        .expect("zstd is installed");
    assert!(out.status.success());
    out.stdout
}

/// The names in the image's initrd.
fn initrd_names(initrd: &Path) -> String {
    let list = Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&initrd_bytes(initrd))?;
            c.wait_with_output()
        })
        .expect("cpio is installed");
    text(&list.stdout)
}

/// No host key file, no private key (OpenSSH's format starts its body
/// with `b3BlbnNzaC1rZXktdjE`, base64 of "openssh-key-v1"; PEM's with
/// `MII`) and none of this host's own host keys in the image. (Programs
/// hold the PEM markers as strings, so the markers alone prove nothing.)
fn assert_no_host_key(initrd: &Path) {
    let image = initrd_bytes(initrd);
    let has = |needle: &[u8]| image.windows(needle.len()).any(|w| w == needle);
    assert!(
        !has(b"b3BlbnNzaC1rZXktdjE"),
        "an OpenSSH private key in the image"
    );
    assert!(
        !has(b"PRIVATE KEY-----\nMII"),
        "a PEM private key in the image"
    );
    let names = initrd_names(initrd);
    assert!(names.lines().count() > 100, "{names}");
    assert!(names.contains("root/.ssh/authorized_keys"), "{names}");
    for n in names.lines() {
        assert!(
            !n.contains("ssh_host_") && !n.contains("_host_key"),
            "{n} in the image"
        );
    }
    for entry in std::fs::read_dir("/etc/ssh")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ssh_host_") && name.ends_with(".pub") {
            let line = std::fs::read_to_string(entry.path()).unwrap();
            let blob = line.split_whitespace().nth(1).unwrap();
            assert!(!has(blob.as_bytes()), "the host's {name} is in the image");
        }
    }
}

/// Builds an image with SSH (`--ssh-authorized-keys key.pub`) and `args`;
/// returns its output folder and the command line its boot entries pass.
fn build(s: &Scratch, name: &str, key: &Path, args: &[&str]) -> (std::path::PathBuf, String) {
    let out = s.join(name);
    let started = Instant::now();
    let mut argv: Vec<std::ffi::OsString> = vec![
        "mkrescue".into(),
        "--output".into(),
        out.clone().into(),
        "--no-iso".into(),
        "--ssh-authorized-keys".into(),
        key.with_extension("pub").into(),
    ];
    argv.extend(args.iter().map(Into::into));
    let (code, stdout, err) = run_lifeboat(argv);
    assert_eq!(code, 0, "mkrescue failed:\n{stdout}\n{err}");
    eprintln!(
        "mkrescue {name}: {:.1}s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert_no_host_key(&out.join("initrd"));
    // The command line every boot entry of the image passes (rescue.append).
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("rescue.json")).unwrap()).unwrap();
    let cmdline = record["cmdline"].as_str().unwrap().to_string();
    (out, cmdline)
}

/// Boots the image in `out` with the card `MAC` and `hostfwd`s, waits for
/// the rescue, runs `checks` on its console; stops the guest either way.
fn boot_and_check(
    s: &Scratch,
    out: &Path,
    cmdline: String,
    fwd: &str,
    checks: impl FnOnce(&str, &Path),
) {
    let vm = Vm::new(
        Boot::Kernel {
            vmlinuz: out.join("vmlinuz"),
            initrd: out.join("initrd"),
            append: cmdline,
        },
        &s.join("serial.log"),
    )
    .nic(
        &format!("user,id=n0,{fwd}"),
        &format!("virtio-net-pci,netdev=n0,mac={MAC}"),
    );
    let mut child = vm.spawn();
    let boot = Instant::now();
    let log = wait_for(&vm, &mut child, "lifeboat rescue ready", 300);
    eprintln!("rescue ready after {:.1}s", boot.elapsed().as_secs_f64());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        checks(&log, &vm.serial_log)
    }));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        let log = text(&std::fs::read(&vm.serial_log).unwrap_or_default());
        eprintln!("console:\n{}", tail(&log, 60));
        std::panic::resume_unwind(e);
    }
}

fn hostfwd(port: u16, addr: &str) -> String {
    format!("hostfwd=tcp:127.0.0.1:{port}-{addr}:22")
}

#[test]
fn static_network_with_vlan_and_ssh_with_the_key_only() {
    let s = Scratch::new("qemu-rescuenet");
    let layout = s.join("layout.json");
    layout_with_network(&layout);
    let (key, other) = (s.join("admin"), s.join("other"));
    keygen(&key);
    keygen(&other);
    // A private key given by mistake is refused before anything is built.
    let out = s.join("image");
    let (code, _, err) = run_lifeboat([
        "mkrescue".as_ref(),
        "--output".as_ref(),
        out.as_os_str(),
        "--ssh-authorized-keys".as_ref(),
        key.as_os_str(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a PRIVATE key"), "{err}");
    assert!(!out.join("initrd").exists());

    // OpenSSH asked for by name (auto takes dropbear, installed too).
    let (out, cmdline) = build(
        &s,
        "image",
        &key,
        &[
            "--layout",
            layout.to_str().unwrap(),
            "--ssh-server",
            "openssh",
            "--append",
            "lifeboat.ssh",
        ],
    );
    assert!(cmdline.ends_with(" lifeboat.ssh"), "{cmdline}");
    let ports = [common::servers::free_port(), common::servers::free_port()];
    let fwd = format!(
        "{},{}",
        hostfwd(ports[0], "10.0.2.50"),
        hostfwd(ports[1], "10.0.2.60")
    );
    boot_and_check(&s, &out, cmdline, &fwd, |log, _| {
        checks(ports, log, &key, &other)
    });
}

/// The same proofs for dropbear (`--ssh-server dropbear`), in a rescue
/// with no layout whose address comes from the kernel command line.
#[test]
fn dropbear_with_the_key_only() {
    let s = Scratch::new("qemu-rescuenet-dropbear");
    let (key, other) = (s.join("admin"), s.join("other"));
    keygen(&key);
    keygen(&other);
    let (out, cmdline) = build(
        &s,
        "image",
        &key,
        &[
            "--ssh-server",
            "dropbear",
            "--append",
            "lifeboat.ssh lifeboat.net=static:10.0.2.70/24,10.0.2.2,10.0.2.3 lifeboat.netdev=52:54:00:12:34:56",
        ],
    );
    let names = initrd_names(&out.join("initrd"));
    assert!(
        names.lines().any(|n| n.ends_with("bin/dropbear")),
        "{names}"
    );
    assert!(!names.lines().any(|n| n.ends_with("bin/sshd")), "{names}");
    let port = common::servers::free_port();
    boot_and_check(
        &s,
        &out,
        cmdline,
        &hostfwd(port, "10.0.2.70"),
        |log, serial| {
            for line in [
                "lifeboat: eth0: 10.0.2.70/24 from lifeboat.net=static",
                "lifeboat: SSH server (dropbear) started",
                "lifeboat: ssh root@10.0.2.70",
            ] {
                assert!(
                    log.contains(line),
                    "{line:?} not on the console:\n{}",
                    tail(log, 40)
                );
            }
            let got = ssh_ok(
                port,
                &["-i", key.to_str().unwrap()],
                "ip -o -4 addr show; cat /etc/resolv.conf",
            );
            assert!(got.contains("eth0    inet 10.0.2.70/24"), "{got}");
            assert!(got.contains("nameserver 10.0.2.3"), "{got}");
            key_only_checks(port, log, &other);
            // lifeboat.net=static on a VLAN of the card given by MAC
            // (lifeboat.vlan=ID@CARD), as init runs it with another command
            // line: the VLAN is made on eth0 and carries the address, the
            // default route and the resolver.
            let got = ssh_ok(
            port,
            &["-i", key.to_str().unwrap()],
            "echo 'console=ttyS0 lifeboat.net=static:192.168.50.5/24,192.168.50.1,192.168.50.53 \
             lifeboat.vlan=50@52:54:00:12:34:56' > /tmp/c && \
             lifeboat internal net-up --cmdline /tmp/c && cat /proc/net/vlan/config && \
             ip route && cat /etc/resolv.conf",
        );
            for line in [
                "lifeboat: eth0.50: 192.168.50.5/24 from lifeboat.net=static (VLAN 50 on eth0)",
                "lifeboat: network eth0.50 192.168.50.5/24",
                "eth0.50        | 50  | eth0",
                "nameserver 192.168.50.53",
            ] {
                assert!(
                    got.lines().any(|l| l.trim_end() == line),
                    "{line:?} missing:\n{got}"
                );
            }
            assert!(
                got.contains("default via 192.168.50.1 dev eth0.50"),
                "{got}"
            );
            bond_and_bridge_options(port, &key, serial);
        },
    );
}
/// Last (eth0 goes into the bond, and SSH with it): net-up with a layout
/// whose eth0 is in an 802.3ad bond with options under a bridge with STP
/// makes them with the real bonding and bridge drivers; the console (SSH
/// is gone by then) shows what the kernel reports (iproute2's ip by its
/// path: busybox's shell runs its own `ip` applet first).
fn bond_and_bridge_options(port: u16, key: &Path, serial: &Path) {
    let fixture = repo().join("tests/fixtures/debian12-layout.json");
    let mut l: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    l["schema_version"] = "1.1".into();
    l["network"] = serde_json::json!([{"name": "ens3", "mac": MAC}]);
    l["network_config"] = serde_json::json!({"links": [
        {"name": "ens3", "kind": {"type": "ethernet", "mac": MAC}, "mtu": 1500},
        {"name": "bond0", "kind": {"type": "bond", "mode": "802.3ad", "members": ["ens3"],
            "options": {"miimon": 100, "updelay": 200, "downdelay": 300, "lacp_rate": "fast",
                        "ad_select": "bandwidth", "xmit_hash_policy": "layer3+4"}},
         "mtu": 1500},
        {"name": "br0", "kind": {"type": "bridge", "members": ["bond0"],
            "options": {"stp": true, "forward_delay": 400}}, "mtu": 1500}
    ]});
    let script = "dmesg -n 1; ip link del eth0.50; sleep 1; \
                  lifeboat internal net-up --layout /tmp/l.json --cmdline /tmp/e; sleep 1; \
                  echo BOND-BEGIN; /usr/bin/ip -d -json link show bond0; \
                  /usr/bin/ip -d -json link show br0; echo BOND-END";
    ssh_ok(
        port,
        &["-i", key.to_str().unwrap()],
        &format!(
            "echo '{l}' > /tmp/l.json && : > /tmp/e && \
             setsid sh -c '{script}' > /dev/ttyS0 2>&1 < /dev/null &"
        ),
    );
    let start = Instant::now();
    let log = loop {
        let log = text(&std::fs::read(serial).unwrap_or_default());
        if log.contains("BOND-END\r") || log.contains("BOND-END\n") {
            break log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no BOND-END on the console:\n{}",
            tail(&log, 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let begin = log.rfind("BOND-BEGIN").unwrap();
    let part = &log[begin..log.rfind("BOND-END").unwrap()];
    let before = &log[..begin];
    assert!(
        !before.contains("lifeboat: network: "),
        "an ip command failed:\n{}",
        tail(before, 30)
    );
    let data: Vec<serde_json::Value> = part
        .lines()
        .filter(|l| l.trim_start().starts_with('['))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l.trim()).unwrap();
            v[0]["linkinfo"]["info_data"].clone()
        })
        .collect();
    assert_eq!(data.len(), 2, "{part}");
    for (k, v) in [
        ("mode", serde_json::json!("802.3ad")),
        ("miimon", 100.into()),
        ("updelay", 200.into()),
        ("downdelay", 300.into()),
        ("ad_lacp_rate", "fast".into()),
        ("ad_select", "bandwidth".into()),
        ("xmit_hash_policy", "layer3+4".into()),
    ] {
        assert_eq!(data[0][k], v, "bond0 {k}: {part}");
    }
    assert_eq!(data[1]["stp_state"], 1, "{part}");
    assert_eq!(data[1]["forward_delay"], 400, "{part}");
}
fn checks([port, port2]: [u16; 2], log: &str, key: &Path, other: &Path) {
    for line in [
        "lifeboat: eth0 (52:54:00:12:34:56, virtio_net, PCI 0000:00:03.0) is the host's ens3 (same MAC)",
        "lifeboat: network eth0 10.0.2.50/24",
        "lifeboat: network ens3.10 192.168.10.5/24",
        "lifeboat: SSH server (OpenSSH) started",
        "lifeboat: ssh root@10.0.2.50",
    ] {
        assert!(log.contains(line), "{line:?} not on the console:\n{}", tail(log, 40));
    }
    // With the key: a command runs; the VLAN and the resolver are there.
    let key_arg = ["-i", key.to_str().unwrap()];
    let got = ssh_ok(
        port,
        &key_arg,
        "ip -o addr show; cat /etc/resolv.conf; ip route",
    );
    assert!(got.contains("eth0    inet 10.0.2.50/24"), "{got}");
    assert!(got.contains("ens3.10    inet 192.168.10.5/24"), "{got}");
    assert!(
        got.contains("nameserver 10.0.2.3") && got.contains("search lifeboat.test"),
        "{got}"
    );
    assert!(got.contains("default via 10.0.2.2 dev eth0"), "{got}");

    key_only_checks(port, log, other);

    // lifeboat.net=static, as init runs it with another command line: the
    // address goes on the card of the host's default route (eth0 here), the
    // resolver follows, and the host reaches the new address.
    let got = ssh_ok(
        port,
        &key_arg,
        "echo 'console=ttyS0 lifeboat.net=static:10.0.2.60/24,10.0.2.2,10.0.2.4' > /tmp/c && \
         lifeboat internal net-up --cmdline /tmp/c && cat /etc/resolv.conf",
    );
    for line in [
        "lifeboat: eth0: 10.0.2.60/24 from lifeboat.net=static",
        "lifeboat: network eth0 10.0.2.60/24",
        "nameserver 10.0.2.4",
    ] {
        assert!(got.lines().any(|l| l == line), "{line:?} missing:\n{got}");
    }
    let got = ssh_ok(port2, &key_arg, "ip -o -4 addr show dev eth0");
    assert!(got.contains("inet 10.0.2.60/24"), "{got}");
}

/// The host key the client sees is the one the console showed; another
/// key and every password-like method are refused.
fn key_only_checks(port: u16, log: &str, other: &Path) {
    // The host key the client is shown is the one the console showed.
    let scan = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ssh-keyscan -T 30 -t ed25519 -p {port} 127.0.0.1 2>/dev/null | ssh-keygen -lf -"
        ))
        .output()
        .unwrap();
    let fp = text(&scan.stdout);
    let fp = fp.split_whitespace().nth(1).unwrap_or("none").to_string();
    assert!(
        log.contains(&format!("lifeboat: SSH host key ED25519 {fp}")),
        "host key {fp} not shown on the console:\n{}",
        tail(log, 30)
    );

    // Another key is refused; so is every password-like method: the server
    // offers public keys only.
    let out = ssh(port, &["-i", other.to_str().unwrap()], "true");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Permission denied (publickey)."),
        "{}",
        text(&out.stderr)
    );
    let out = ssh(
        port,
        &[
            "-v",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        ],
        "true",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("Authentications that can continue: publickey\r\n"),
        "{err}"
    );
    assert!(err.contains("Permission denied (publickey)."), "{err}");
}
