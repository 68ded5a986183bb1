//! SSH into the rescue system: `rescue.ssh_authorized_keys` (a file of
//! public keys, checked at build time) puts an SSH server and those keys
//! for root into the image; `lifeboat.ssh` on the kernel command line makes
//! `lifeboat internal ssh-up` generate host keys (never copied from the
//! host) and start it. Public keys only: no password, no
//! keyboard-interactive login.
//!
//! The server is the one `rescue.ssh_server` names; `auto`: dropbear when
//! the host has it (Debian's dropbear-bin, about 1.7 MB unpacked with
//! libtomcrypt and libtommath) or else OpenSSH's sshd (4.4 MB unpacked with
//! libcrypto, PAM, Kerberos, libsystemd and the rest of its libraries).

use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::tree::{Entry, Source, Tree};
use crate::exec::{self, Cmd};

/// Largest authorized_keys file taken (a key line is under 1 KiB; RSA 16k
/// about 3 KiB).
const KEYS_FILE_MAX: u64 = 1 << 20;

/// Key types OpenSSH and dropbear accept in authorized_keys.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Where the keys go in the image (both servers read root's file).
pub const AUTHORIZED_KEYS: &str = "root/.ssh/authorized_keys";
const SSHD_CONFIG: &str = "etc/ssh/sshd_config";

/// A public key: its type and the key blob (base64-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kind: String,
    pub blob: Vec<u8>,
    pub comment: String,
}

impl PublicKey {
    /// `SHA256:...` as `ssh-keygen -l` shows it.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(&self.blob);
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        )
    }

    /// `ED25519`, `ECDSA`, `RSA`, as ssh-keygen names them.
    pub fn short_kind(&self) -> &'static str {
        match self.kind.as_str() {
            "ssh-ed25519" => "ED25519",
            "ssh-rsa" => "RSA",
            k if k.starts_with("ecdsa-") => "ECDSA",
            k if k.starts_with("sk-ssh-ed25519") => "ED25519-SK",
            k if k.starts_with("sk-ecdsa") => "ECDSA-SK",
            _ => "KEY",
        }
    }
}

/// One authorized_keys line: `[options] TYPE BASE64 [comment]`. The blob
/// must decode and name the same type inside.
pub fn parse_key_line(line: &str) -> Result<PublicKey> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| KEY_TYPES.contains(w)) else {
        if words.contains(&"ssh-dss") {
            bail!("a DSA key (ssh-dss): OpenSSH no longer accepts those; use an ed25519 key");
        }
        bail!(
            "no public key type ({}) on this line",
            KEY_TYPES[..3].join(", ")
        );
    };
    let kind = words[at].to_string();
    let b64 = words
        .get(at + 1)
        .with_context(|| format!("{kind} without its key"))?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| anyhow::anyhow!("the {kind} key is not valid base64 ({e})"))?;
    let inner = blob_type(&blob).with_context(|| format!("the {kind} key blob is malformed"))?;
    if inner != kind {
        bail!("the key says {kind} but its blob holds a {inner} key");
    }
    Ok(PublicKey {
        kind,
        blob,
        comment: words[at + 2..].join(" "),
    })
}

/// The type string at the start of an SSH key blob (u32 length + bytes).
fn blob_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    if len > 64 || blob.len() < 4 + len + 4 {
        return None;
    }
    std::str::from_utf8(&blob[4..4 + len]).ok()
}

/// Whether `text` is a private key file (PEM, OpenSSH or PuTTY format).
fn is_private_key(text: &str) -> bool {
    text.contains("PRIVATE KEY-----") || text.starts_with("PuTTY-User-Key-File")
}

/// Reads and checks an authorized_keys file: every line a public key (or
/// blank, or a `#` comment), at least one key. A private key given by
/// mistake is refused without its bytes going anywhere.
pub fn read_authorized_keys(path: &Path) -> Result<(String, Vec<PublicKey>)> {
    let what = "rescue.ssh_authorized_keys";
    let bytes = crate::util::read_regular(path, what, KEYS_FILE_MAX)
        .with_context(|| format!("{what} {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{what} {} is not text", path.display()))?;
    if is_private_key(&text) {
        bail!(
            "{what} {} is a PRIVATE key: give the public key instead ({}.pub, or the output of \
             `ssh-keygen -y -f {}`); private keys never go into the rescue image",
            path.display(),
            path.display(),
            path.display()
        );
    }
    let mut keys = Vec::new();
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = parse_key_line(line).with_context(|| {
            format!(
                "{what} {} line {}: expected a public key like `ssh-ed25519 AAAA... user@host`",
                path.display(),
                i + 1
            )
        })?;
        out.push_str(line);
        out.push('\n');
        keys.push(key);
    }
    if keys.is_empty() {
        bail!(
            "{what} {} holds no public key: add lines like `ssh-ed25519 AAAA... user@host`",
            path.display()
        );
    }
    Ok((out, keys))
}

/// The SSH server put into the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshServer {
    Dropbear,
    OpenSsh,
}

/// `rescue.ssh_server` / `--ssh-server`: which server goes into the image.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum SshServerChoice {
    /// dropbear when the host has it, else OpenSSH.
    #[default]
    Auto,
    Dropbear,
    Openssh,
}

impl SshServer {
    /// The server `choice` names, checked on the host: for `Auto` the
    /// lighter one installed (dropbear, else OpenSSH); one asked for but
    /// not installed is an error naming its Debian package.
    pub fn on_host(choice: SshServerChoice) -> Result<SshServer> {
        SshServer::choose(choice, |s| {
            s.programs().0.iter().all(|p| exec::which(p).is_some())
        })
    }

    /// [`SshServer::on_host`] with `installed` telling what the host has.
    fn choose(choice: SshServerChoice, installed: impl Fn(SshServer) -> bool) -> Result<SshServer> {
        let wanted = match choice {
            SshServerChoice::Auto => {
                return [SshServer::Dropbear, SshServer::OpenSsh]
                    .into_iter()
                    .find(|s| installed(*s))
                    .context(
                        "rescue.ssh_authorized_keys is set but no SSH server is installed: \
                         install dropbear-bin (lighter) or openssh-server",
                    );
            }
            SshServerChoice::Dropbear => SshServer::Dropbear,
            SshServerChoice::Openssh => SshServer::OpenSsh,
        };
        if !installed(wanted) {
            bail!(
                "rescue.ssh_server = {} but {} is missing: install the Debian package {} \
                 (or set rescue.ssh_server = auto)",
                wanted.setting(),
                wanted.programs().0.join(" or "),
                wanted.package()
            );
        }
        Ok(wanted)
    }

    /// Its value of rescue.ssh_server.
    fn setting(self) -> &'static str {
        match self {
            SshServer::Dropbear => "dropbear",
            SshServer::OpenSsh => "openssh",
        }
    }

    /// The Debian package with its programs.
    fn package(self) -> &'static str {
        match self {
            SshServer::Dropbear => "dropbear-bin",
            SshServer::OpenSsh => "openssh-server",
        }
    }

    /// The one in the running (rescue) system.
    pub fn in_image() -> Result<SshServer> {
        if exec::which("dropbear").is_some() {
            return Ok(SshServer::Dropbear);
        }
        if exec::which("sshd").is_some() {
            return Ok(SshServer::OpenSsh);
        }
        bail!("this rescue image has no SSH server: build it with rescue.ssh_authorized_keys")
    }

    pub fn name(self) -> &'static str {
        match self {
            SshServer::Dropbear => "dropbear",
            SshServer::OpenSsh => "OpenSSH",
        }
    }

    /// Programs the image needs (names or paths; the OpenSSH helpers of
    /// newer versions are shipped where the host has them).
    pub fn programs(self) -> (Vec<String>, Vec<String>) {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        match self {
            SshServer::Dropbear => (s(&["dropbear", "dropbearkey"]), vec![]),
            SshServer::OpenSsh => (
                s(&["sshd", "ssh-keygen"]),
                s(&[
                    "/usr/lib/openssh/sshd-session",
                    "/usr/lib/openssh/sshd-auth",
                    "/usr/lib/openssh/sftp-server",
                ]),
            ),
        }
    }

    /// Host keys generated at boot: (type for the generator, file).
    fn host_keys(self) -> [(&'static str, &'static str); 2] {
        match self {
            SshServer::Dropbear => [
                ("ed25519", "/etc/dropbear/dropbear_ed25519_host_key"),
                ("ecdsa", "/etc/dropbear/dropbear_ecdsa_host_key"),
            ],
            SshServer::OpenSsh => [
                ("ed25519", "/etc/ssh/ssh_host_ed25519_key"),
                ("ecdsa", "/etc/ssh/ssh_host_ecdsa_key"),
            ],
        }
    }
}

/// sshd's configuration in the image: public keys only, root allowed with
/// a key, nothing that asks for a password.
pub fn sshd_config() -> String {
    let mut s = String::from("# Written by lifeboat mkrescue: public keys only.\n");
    for (_, key) in SshServer::OpenSsh.host_keys() {
        s.push_str(&format!("HostKey {key}\n"));
    }
    s.push_str(
        "PermitRootLogin prohibit-password
AuthorizedKeysFile /root/.ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
HostbasedAuthentication no
GSSAPIAuthentication no
KerberosAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
PidFile /run/sshd.pid
Subsystem sftp internal-sftp
",
    );
    s
}

/// The dropbear command line: no password logins at all (`-s`), host
/// keys named, no port forwarding.
pub fn dropbear_args() -> Vec<String> {
    let mut args: Vec<String> = ["-s", "-g", "-j", "-k", "-P", "/run/dropbear.pid"]
        .map(String::from)
        .to_vec();
    for (_, key) in SshServer::Dropbear.host_keys() {
        args.extend(["-r".to_string(), key.to_string()]);
    }
    args
}

/// Puts the keys and the server's configuration into the image (the
/// programs are added with the others): /root/.ssh/authorized_keys, for
/// OpenSSH sshd_config and its privilege separation user. No host key.
pub fn add_files(tree: &mut Tree, server: SshServer, keys: &str) {
    tree.dir("root/.ssh", 0o700);
    tree.bytes(AUTHORIZED_KEYS, keys, 0o600);
    match server {
        SshServer::OpenSsh => {
            tree.dir("etc/ssh", 0o755);
            tree.bytes(SSHD_CONFIG, sshd_config(), 0o644);
            append_line(
                tree,
                "etc/passwd",
                "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin",
            );
            append_line(tree, "etc/group", "nogroup:x:65534:");
        }
        SshServer::Dropbear => tree.dir("etc/dropbear", 0o700),
    }
}

fn append_line(tree: &mut Tree, path: &str, line: &str) {
    let mut text = match tree.get(path) {
        Some(Entry::File {
            source: Source::Bytes(b),
            ..
        }) => b.clone(),
        _ => Vec::new(),
    };
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
    tree.bytes(path, text, 0o644);
}

/// At boot: generates the host keys, starts the server and returns the
/// lines for the consoles (how to log in, the host key fingerprints).
pub fn ssh_up(addresses: &[String]) -> Result<Vec<String>> {
    let server = SshServer::in_image()?;
    let mut keys = Vec::new();
    for (kind, file) in server.host_keys() {
        keys.push(host_key(server, kind, Path::new(file))?);
    }
    match server {
        SshServer::OpenSsh => {
            std::fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
            Cmd::new("sshd")
                .args(["-f", "/etc/ssh/sshd_config"])
                .run()
                .context("starting sshd")?;
        }
        SshServer::Dropbear => {
            Cmd::new("dropbear")
                .args(dropbear_args())
                .run()
                .context("starting dropbear")?;
        }
    }
    Ok(console_lines(server, &keys, addresses))
}

/// What the consoles show once the server runs.
pub fn console_lines(server: SshServer, keys: &[PublicKey], addresses: &[String]) -> Vec<String> {
    let mut out = vec![format!(
        "lifeboat: SSH server ({}) started: root with the keys of rescue.ssh_authorized_keys, no password",
        server.name()
    )];
    if addresses.is_empty() {
        out.push("lifeboat: no network address yet: boot with lifeboat.net=dhcp or lifeboat.net=static:ADDR/PREFIX,GATEWAY,DNS".into());
    }
    for a in addresses {
        out.push(format!("lifeboat: ssh root@{a}"));
    }
    for k in keys {
        out.push(format!(
            "lifeboat: SSH host key {} {}",
            k.short_kind(),
            k.fingerprint()
        ));
    }
    out
}

/// Generates one host key (unless this boot already did) and returns its
/// public half.
fn host_key(server: SshServer, kind: &str, file: &Path) -> Result<PublicKey> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let public = match server {
        SshServer::OpenSsh => {
            if !file.exists() {
                Cmd::new("ssh-keygen")
                    .args(["-q", "-t", kind, "-N", "", "-C", "lifeboat-rescue", "-f"])
                    .arg(file)
                    .run()?;
            }
            let pub_file = file.with_extension("pub");
            std::fs::read_to_string(&pub_file)
                .with_context(|| format!("reading {}", pub_file.display()))?
        }
        SshServer::Dropbear => {
            if !file.exists() {
                Cmd::new("dropbearkey")
                    .args(["-t", kind, "-f"])
                    .arg(file)
                    .run()?;
            }
            Cmd::new("dropbearkey")
                .args(["-y", "-f"])
                .arg(file)
                .read()?
        }
    };
    let line = public
        .lines()
        .find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
        .with_context(|| format!("no public key for {}", file.display()))?;
    parse_key_line(line).with_context(|| format!("the public key of {}", file.display()))
}

#[cfg(test)]
mod tests;
