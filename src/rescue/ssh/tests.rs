use super::*;

const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHIvnzF+2BRSoDHi3W+bd70croT9yXKE2ZVSh1axnGVY admin@example";
const EC: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBLyrFh5eBtO/CawyLZ6MMkOPdpRz+D8EjC3sBLzSDc4TCv/4HDh+NqZb5ymhrPXCATWHt9uyu8D8JmOZd2GtXSE= root@vm";

/// Fingerprints as `ssh-keygen -lf` printed them for these keys.
#[test]
fn fingerprints_match_ssh_keygen() {
    let ed = parse_key_line(ED).unwrap();
    assert_eq!(ed.kind, "ssh-ed25519");
    assert_eq!(ed.comment, "admin@example");
    assert_eq!(
        ed.fingerprint(),
        "SHA256:ZDYSBXhHqkY+f8Qj/R/ejN96IKEFY1dwTuD9xqydnaw"
    );
    assert_eq!(ed.short_kind(), "ED25519");
    let ec = parse_key_line(EC).unwrap();
    assert_eq!(
        ec.fingerprint(),
        "SHA256:SQHhTSNXdxGkDjnRG5YoP++Bsy2VMehQKR0XtGRySAk"
    );
    // Options before the key are sshd's business; the key is still checked.
    let with_opts = format!("from=\"10.0.0.0/8\",no-pty {ED}");
    assert_eq!(parse_key_line(&with_opts).unwrap().blob, ed.blob);
}

#[test]
fn bad_key_lines_are_refused() {
    let ed_b64 = ED.split_whitespace().nth(1).unwrap();
    let ec_b64 = EC.split_whitespace().nth(1).unwrap();
    let cases = [
        ("ssh-ed25519", "without its key"),
        ("ssh-ed25519 AAAA!!!!", "not valid base64"),
        ("ssh-ed25519 AAAA", "malformed"),
        ("hello world", "no public key type"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "DSA key"),
        // The type on the line and inside the blob differ.
        (
            &format!("ssh-ed25519 {ec_b64}") as &str,
            "holds a ecdsa-sha2-nistp256 key",
        ),
        // A truncated blob.
        (&format!("ssh-ed25519 {}", &ed_b64[..20]), "malformed"),
    ];
    for (line, want) in cases {
        let err = format!("{:#}", parse_key_line(line).unwrap_err());
        assert!(err.contains(want), "{line}: {err}");
    }
}

#[test]
fn authorized_keys_file_checked_and_private_keys_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("keys");
    std::fs::write(&good, format!("# admins\n\n{ED}\n  {EC}  \n")).unwrap();
    let (text, keys) = read_authorized_keys(&good).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(text, format!("{ED}\n{EC}\n"));

    let bad = dir.path().join("bad");
    std::fs::write(&bad, format!("{ED}\nssh-ed25519 AAAA; rm -rf /\n")).unwrap();
    let err = format!("{:#}", read_authorized_keys(&bad).unwrap_err());
    assert!(err.contains("line 2"), "{err}");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# nothing\n").unwrap();
    let err = format!("{:#}", read_authorized_keys(&empty).unwrap_err());
    assert!(err.contains("holds no public key"), "{err}");

    for private in [
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
        "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n",
    ] {
        let p = dir.path().join("id");
        std::fs::write(&p, private).unwrap();
        let err = format!("{:#}", read_authorized_keys(&p).unwrap_err());
        assert!(err.contains("is a PRIVATE key"), "{err}");
        assert!(err.contains("ssh-keygen -y -f"), "{err}");
        assert!(!err.contains("b3BlbnNz") && !err.contains("MIIE"), "{err}");
    }
    // Not a regular file, or too big.
    assert!(read_authorized_keys(dir.path()).is_err());
    let big = dir.path().join("big");
    std::fs::write(&big, format!("{ED}\n").repeat(20_000)).unwrap();
    assert!(read_authorized_keys(&big).is_err());
}

#[test]
fn sshd_takes_keys_only_and_the_image_gets_no_host_key() {
    let c = sshd_config();
    for line in [
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitEmptyPasswords no",
        "AuthenticationMethods publickey",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
    ] {
        assert!(c.lines().any(|l| l == line), "{line} missing:\n{c}");
    }
    let args = dropbear_args();
    assert!(args.contains(&"-s".to_string()) && args.contains(&"-g".to_string()));

    let mut tree = Tree::new();
    tree.bytes("etc/passwd", "root::0:0:root:/root:/bin/sh\n", 0o644);
    add_files(&mut tree, SshServer::OpenSsh, &format!("{ED}\n"));
    assert!(matches!(
        tree.get(AUTHORIZED_KEYS),
        Some(Entry::File { mode: 0o600, .. })
    ));
    assert!(matches!(
        tree.get("root/.ssh"),
        Some(Entry::Dir { mode: 0o700 })
    ));
    let passwd = match tree.get("etc/passwd") {
        Some(Entry::File {
            source: Source::Bytes(b),
            ..
        }) => String::from_utf8(b.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        passwd,
        "root::0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"
    );
    assert!(
        !tree
            .paths()
            .any(|p| p.contains("ssh_host_") || p.contains("dropbear_")),
        "a host key in the image"
    );
}

#[test]
fn console_lines_name_addresses_and_fingerprints() {
    let keys = [parse_key_line(ED).unwrap()];
    let lines = console_lines(SshServer::OpenSsh, &keys, &["10.0.2.50".into()]);
    assert_eq!(
        lines[1..],
        [
            "lifeboat: ssh root@10.0.2.50".to_string(),
            "lifeboat: SSH host key ED25519 SHA256:ZDYSBXhHqkY+f8Qj/R/ejN96IKEFY1dwTuD9xqydnaw"
                .to_string(),
        ]
    );
    let none = console_lines(SshServer::Dropbear, &keys, &[]);
    assert!(none[1].contains("lifeboat.net=dhcp"), "{none:?}");
}

#[test]
fn server_chosen_by_the_setting_and_missing_ones_named() {
    use SshServer::*;
    use SshServerChoice as C;
    let both = |_: SshServer| true;
    let only = |s: SshServer| move |x: SshServer| x == s;
    let none = |_: SshServer| false;
    assert_eq!(SshServer::choose(C::Auto, both).unwrap(), Dropbear);
    assert_eq!(SshServer::choose(C::Auto, only(OpenSsh)).unwrap(), OpenSsh);
    assert_eq!(SshServer::choose(C::Openssh, both).unwrap(), OpenSsh);
    assert_eq!(
        SshServer::choose(C::Dropbear, only(Dropbear)).unwrap(),
        Dropbear
    );
    let err = SshServer::choose(C::Dropbear, only(OpenSsh))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "rescue.ssh_server = dropbear but dropbear or dropbearkey is missing: install \
         the Debian package dropbear-bin (or set rescue.ssh_server = auto)"
    );
    let err = SshServer::choose(C::Openssh, only(Dropbear))
        .unwrap_err()
        .to_string();
    assert!(err.contains("the Debian package openssh-server"), "{err}");
    let err = SshServer::choose(C::Auto, none).unwrap_err().to_string();
    assert!(
        err.contains("install dropbear-bin (lighter) or openssh-server"),
        "{err}"
    );
}

/// The host keys dropbearkey makes at boot: the fingerprint the console
/// shows is the one dropbearkey prints and the one `ssh-keygen -l` (what
/// ssh's prompt shows) computes from the public key dropbear serves.
#[test]
fn dropbear_host_keys_and_their_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    for (kind, file) in SshServer::Dropbear.host_keys() {
        let file = dir.path().join(Path::new(file).file_name().unwrap());
        let key = host_key(SshServer::Dropbear, kind, &file)
            .expect("dropbearkey (Debian dropbear-bin, scripts/install-deps.sh) runs");
        let again = host_key(SshServer::Dropbear, kind, &file).unwrap();
        assert_eq!(key, again, "a second call generates no new key");
        let shown = Cmd::new("dropbearkey")
            .args(["-y", "-f"])
            .arg(&file)
            .read()
            .unwrap();
        let printed = shown
            .lines()
            .find_map(|l| l.strip_prefix("Fingerprint: "))
            .unwrap_or_else(|| panic!("no fingerprint from dropbearkey:\n{shown}"));
        assert_eq!(key.fingerprint(), printed.trim());
        let pub_file = dir.path().join("pub");
        let line = shown.lines().find(|l| l.starts_with(&key.kind)).unwrap();
        std::fs::write(&pub_file, format!("{line}\n")).unwrap();
        let keygen = Cmd::new("ssh-keygen")
            .args(["-l", "-f"])
            .arg(&pub_file)
            .read()
            .unwrap();
        assert_eq!(
            keygen.split_whitespace().nth(1),
            Some(key.fingerprint().as_str()),
            "{keygen}"
        );
        assert!(keygen
            .trim_end()
            .ends_with(&format!("({})", key.short_kind())));
    }
}
