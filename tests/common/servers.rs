//! Real servers on free loopback ports for the restic/Borg destination
//! tests: sshd (SFTP and borg serve), `rclone serve restic` (restic's REST
//! protocol) and s3s-fs (an S3 implementation on a folder). Each is stopped
//! when dropped. A missing server program fails the test in CI (`CI` set)
//! and skips it with a message elsewhere.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where scripts/install-deps.sh installs s3s-fs (built once per cache).
pub const S3S_FS: &str = "/var/cache/lifeboat-test/s3s-fs-0.14.0/bin/s3s-fs";
/// The fixed credentials the S3 server is started with.
pub const S3_ACCESS_KEY: &str = "lifeboattest";
pub const S3_SECRET_KEY: &str = "lifeboattestsecret";

/// Whether `program` is there; in CI its absence is a failure.
pub fn have(program: &str) -> bool {
    let found = if program.contains('/') {
        Path::new(program).is_file()
    } else {
        lifeboat::exec::which(program).is_some()
    };
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing: scripts/install-deps.sh installs it"
        );
        eprintln!("skipped: {program} is not installed (scripts/install-deps.sh installs it)");
    }
    found
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process, killed and reaped on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    pub name: &'static str,
}

impl Server {
    fn start(name: &'static str, mut cmd: Command, port: u16, log: &Path) -> Server {
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut s = Server { child, port, name };
        s.wait_listening(log);
        s
    }

    fn wait_listening(&mut self, log: &Path) {
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "{} exited ({st}) before listening: {}",
                    self.name,
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "{} not listening on port {} after 60 s",
                self.name,
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rclone serve restic` on `dir`.
pub fn rest_server(dir: &Path, log: &Path) -> Server {
    let port = free_port();
    let mut cmd = Command::new("rclone");
    cmd.args(["serve", "restic", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg("/dev/null")
        .arg(dir);
    Server::start("rclone serve restic", cmd, port, log)
}

/// s3s-fs serving the buckets below `dir` with the fixed credentials.
pub fn s3_server(dir: &Path, log: &Path) -> Server {
    let port = free_port();
    let mut cmd = Command::new(S3S_FS);
    cmd.args(["--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
        .arg(dir);
    Server::start("s3s-fs", cmd, port, log)
}

/// An sshd for root on a loopback port with its own host key and one
/// authorized client key; [`Sshd::ssh_command`] is the matching client.
pub struct Sshd {
    pub server: Server,
    pub dir: PathBuf,
}

impl Sshd {
    pub fn start(dir: &Path) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        for key in ["host_key", "client_key"] {
            let p = dir.join(key);
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&p)
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen failed");
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let mut fields = host_pub.split_whitespace();
        let (kt, kv) = (fields.next().unwrap(), fields.next().unwrap());
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kt} {kv}\n"),
        )
        .unwrap();
        let conf = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             Subsystem sftp internal-sftp\n",
            d = dir.display()
        );
        std::fs::write(dir.join("sshd_config"), conf).unwrap();
        let mut cmd = Command::new("/usr/sbin/sshd");
        cmd.args(["-D", "-e", "-f"]).arg(dir.join("sshd_config"));
        let server = Server::start("sshd", cmd, port, &dir.join("sshd.log"));
        Sshd {
            server,
            dir: dir.to_path_buf(),
        }
    }

    /// `ssh` with the client key and the server's known host key.
    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -i {d}/client_key -o IdentitiesOnly=yes -o BatchMode=yes -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes",
            d = self.dir.display()
        )
    }
}

/// Where scripts/install-deps.sh unpacks NFS-Ganesha (never installed: its
/// package starts rpcbind and its own service).
pub const GANESHA_ROOT: &str = "/var/cache/lifeboat-test/nfs-ganesha/root";

/// NFS-Ganesha (VFS FSAL, NFSv4 over TCP only, no rpcbind, no grace
/// period) on a free port of 127.0.0.1, exporting `export` as `/export`
/// read-write without root squash. Its state and log go into `dir`.
pub fn nfs_ganesha(export: &Path, dir: &Path) -> Server {
    std::fs::create_dir_all(dir.join("recovery")).unwrap();
    let port = free_port();
    let root = Path::new(GANESHA_ROOT);
    let conf = format!(
        "NFS_CORE_PARAM {{ NFS_Port = {port}; Bind_addr = 127.0.0.1; Protocols = 4; \
         Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; \
         Plugins_Dir = \"{plugins}\"; }}\n\
         NFSV4 {{ Graceless = true; UseGetpwnam = true; Allow_Numeric_Owners = true; \
         Only_Numeric_Owners = true; RecoveryBackend = fs; RecoveryRoot = \"{d}/recovery\"; }}\n\
         EXPORT {{ Export_Id = 1; Path = \"{export}\"; Pseudo = \"/export\"; \
         Access_Type = RW; Squash = No_Root_Squash; SecType = sys; Protocols = 4; \
         Transports = TCP; FSAL {{ Name = VFS; }} }}\n",
        plugins = root.join("usr/lib/x86_64-linux-gnu/ganesha").display(),
        d = dir.display(),
        export = export.display(),
    );
    std::fs::write(dir.join("ganesha.conf"), conf).unwrap();
    let mut cmd = Command::new(root.join("usr/bin/ganesha.nfsd"));
    cmd.env("LD_LIBRARY_PATH", root.join("usr/lib/ganesha"))
        .args(["-F", "-L", "/dev/stderr", "-f"])
        .arg(dir.join("ganesha.conf"))
        .arg("-p")
        .arg(dir.join("ganesha.pid"));
    Server::start("ganesha.nfsd", cmd, port, &dir.join("ganesha.log"))
}

/// smbd (standalone, SMB only, no NetBIOS) on a free port of 127.0.0.1
/// with its state in `dir`, sharing `path` read-write as `share` to root
/// with `password` (its own passdb: no account of this machine changes).
pub fn smbd(share: &str, path: &Path, password: &str, dir: &Path) -> Server {
    let run = dir.join("run");
    for d in ["private", "lock", "state", "cache", "pid", "ncalrpc"] {
        std::fs::create_dir_all(run.join(d)).unwrap();
    }
    let port = free_port();
    let r = run.display();
    let conf = format!(
        "[global]\nserver role = standalone server\nsmb ports = {port}\n\
         interfaces = 127.0.0.1\nbind interfaces only = yes\ndisable netbios = yes\n\
         private dir = {r}/private\nlock directory = {r}/lock\nstate directory = {r}/state\n\
         cache directory = {r}/cache\npid directory = {r}/pid\nncalrpc dir = {r}/ncalrpc\n\
         passdb backend = tdbsam:{r}/private/passdb.tdb\nlog file = {r}/log.%m\n\
         load printers = no\nprinting = bsd\nprintcap name = /dev/null\ndisable spoolss = yes\n\
         map to guest = never\n\n[{share}]\npath = {}\nread only = no\nvalid users = root\n",
        path.display()
    );
    let conf_path = dir.join("smb.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut pdbedit = Command::new("pdbedit")
        .arg("-s")
        .arg(&conf_path)
        .args(["-a", "-u", "root", "-t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("pdbedit (package samba)");
    {
        use std::io::Write;
        let mut stdin = pdbedit.stdin.take().unwrap();
        write!(stdin, "{password}\n{password}\n").unwrap();
    }
    assert!(pdbedit.wait().unwrap().success(), "pdbedit failed");
    let mut cmd = Command::new("smbd");
    cmd.arg("-s")
        .arg(&conf_path)
        .args(["-F", "--no-process-group", "--debug-stdout", "-d", "1"]);
    Server::start("smbd", cmd, port, &dir.join("smbd.log"))
}
