//! The one way lifeboat runs external tools.
//!
//! Every command goes through [`Cmd`]: it is resolved to a full path up front
//! (so the rescue shell's busybox applets never shadow the real tool), logged,
//! run with its output captured, and on failure turned into an error that
//! carries the command line, the exit status and the tail of its stderr.
//! Commands that change the system are marked with [`Cmd::mutating`]: they
//! pass the [`Gate`], the one switch between doing and showing, which in a
//! dry run reports them (and every other gated action) instead.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

/// Directories searched after `$PATH`: the rescue system and cron jobs often
/// run with a short `$PATH` that lacks the sbin directories.
const EXTRA_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Lines of stderr kept in an error message.
const STDERR_TAIL_LINES: usize = 15;

/// The Debian package that provides a tool, for "how to fix it" hints.
pub fn package_of(tool: &str) -> &'static str {
    match tool {
        "lvm" | "vgcfgbackup" | "vgcfgrestore" | "pvcreate" | "vgcreate" | "lvcreate" => "lvm2",
        "mdadm" => "mdadm",
        "cryptsetup" => "cryptsetup",
        "mkfs.ext4" | "mke2fs" | "tune2fs" | "dumpe2fs" | "e2fsck" | "resize2fs" | "debugfs" => {
            "e2fsprogs"
        }
        "mkfs.xfs" | "xfs_admin" | "xfs_info" | "xfs_db" | "xfs_growfs" | "xfs_repair" => {
            "xfsprogs"
        }
        "mkfs.vfat" | "fsck.vfat" | "fatlabel" => "dosfstools",
        "mkfs.btrfs" | "btrfs" | "btrfstune" => "btrfs-progs",
        "sgdisk" => "gdisk",
        "sfdisk" => "fdisk",
        "efibootmgr" => "efibootmgr",
        "zstd" => "zstd",
        "tar" => "tar",
        "busybox" => "busybox-static",
        "xorriso" => "xorriso",
        "grub-mkstandalone" | "grub-mkimage" | "grub-mknetdir" => "grub-common",
        "grub-install" => "grub-pc-bin or grub-efi-amd64-bin",
        "mcopy" | "mmd" => "mtools",
        "depmod" | "modinfo" | "kmod" | "modprobe" => "kmod",
        "qemu-system-x86_64" => "qemu-system-x86 (from bookworm-backports)",
        "qemu-img" => "qemu-utils",
        "cpio" => "cpio",
        "syslinux" => "syslinux",
        "systemd-analyze" => "systemd",
        "setfacl" | "getfacl" => "acl",
        "setfattr" | "getfattr" => "attr",
        "mount.nfs" => "nfs-common",
        "mount.cifs" => "cifs-utils",
        "sftp" | "ssh" => "openssh-client",
        "ip" => "iproute2",
        "sshd" | "ssh-keygen" => "openssh-server",
        "dropbear" | "dropbearkey" => "dropbear-bin",
        _ => "util-linux",
    }
}

/// Finds `name` in `$PATH` and the usual sbin directories.
/// A name that contains a slash is taken as a path and checked as it is.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves every tool in `names` and fails naming all of the missing ones
/// and the packages that provide them.
pub fn require(names: &[&str]) -> Result<Vec<PathBuf>> {
    let mut found = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for name in names {
        match which(name) {
            Some(p) => found.push(p),
            None => missing.push(*name),
        }
    }
    if !missing.is_empty() {
        let hints: Vec<String> = missing
            .iter()
            .map(|t| format!("{t} (package {})", package_of(t)))
            .collect();
        bail!(
            "required tool{} not installed: {}; install {} and try again",
            if missing.len() > 1 { "s" } else { "" },
            hints.join(", "),
            if missing.len() > 1 { "them" } else { "it" }
        );
    }
    Ok(found)
}

/// The one switch between changing the system and showing what would
/// change: every mutating command ([`Cmd::mutating`]) and every other write
/// of a stage (a partition table, a file in the new system, a whole step
/// run by another tool) asks it first. Live, it lets everything through;
/// in a dry run it lets nothing through and hands each action, in words,
/// to the sink its owner gave (the CLI prints them; tests record them).
#[derive(Clone, Default)]
pub struct Gate {
    /// `None`: live.
    dry_run: Option<Arc<Sink>>,
}

/// Where a dry run's changes go, one line each.
type Sink = dyn Fn(&str) + Send + Sync;

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_dry_run() {
            "Gate(dry run)"
        } else {
            "Gate(live)"
        })
    }
}

impl Gate {
    /// A gate that lets every action through.
    pub fn live() -> Gate {
        Gate::default()
    }

    /// A dry run: every action goes to `sink` (as `would run ...`, `would
    /// write ...`) instead of happening.
    pub fn dry_run(sink: impl Fn(&str) + Send + Sync + 'static) -> Gate {
        Gate {
            dry_run: Some(Arc::new(sink)),
        }
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run.is_some()
    }

    /// Whether to do `action` (words after `would`, e.g. `write GPT on
    /// /dev/vdb`): true when live; in a dry run the sink gets `would
    /// {action}` and the answer is false.
    pub fn allow(&self, action: impl fmt::Display) -> bool {
        match &self.dry_run {
            None => true,
            Some(sink) => {
                let line = format!("would {action}");
                log::debug!("dry run: {line}");
                sink(&line);
                false
            }
        }
    }

    /// Writes `data` to `path` (atomically, with `mode`) through the gate.
    pub fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> Result<()> {
        if self.allow(format_args!("write {}", path.display())) {
            crate::util::write_atomic(path, data, mode)?;
        }
        Ok(())
    }

    /// Creates `dir` and its parents through the gate.
    pub fn create_dir_all(&self, dir: &Path) -> Result<()> {
        if self.allow(format_args!("create {}", dir.display())) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    /// Copies `from` to `to` through the gate.
    pub fn copy(&self, from: &Path, to: &Path) -> Result<()> {
        if self.allow(format_args!("copy {} to {}", from.display(), to.display())) {
            std::fs::copy(from, to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        Ok(())
    }
}

/// A command line, built up and then run.
#[derive(Clone)]
pub struct Cmd {
    name: String,
    program: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    clear_env: bool,
    /// The gate of a command that changes the system.
    gate: Option<Gate>,
    ok_codes: Vec<i32>,
}

/// What a finished command produced.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Cmd {
    /// A command running `tool`, looked up with [`which`] when it runs.
    pub fn new(tool: impl AsRef<str>) -> Cmd {
        let name = tool.as_ref().to_string();
        Cmd {
            program: which(&name),
            name,
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: None,
            clear_env: false,
            gate: None,
            ok_codes: vec![0],
        }
    }

    /// `arg` as the first argument (a tool's no-write flag before the rest).
    pub fn first_arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.insert(0, arg.as_ref().to_owned());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Starts the program with no environment but what [`Cmd::env`] sets.
    pub fn clear_env(mut self) -> Cmd {
        self.clear_env = true;
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(data.into());
        self
    }

    /// Marks the command as one that changes the system: it runs only
    /// through `gate` (in a dry run the gate reports it instead).
    pub fn mutating(mut self, gate: &Gate) -> Cmd {
        self.gate = Some(gate.clone());
        self
    }

    /// Exit codes besides 0 that mean success for this tool.
    pub fn ok_codes(mut self, codes: &[i32]) -> Cmd {
        self.ok_codes.extend_from_slice(codes);
        self
    }

    /// Runs the command and returns its output whatever the exit code.
    /// Fails only when the program is missing or cannot be started.
    pub fn output_any(&self) -> Result<Output> {
        let program = self.program()?;
        if self
            .gate
            .as_ref()
            .is_some_and(|g| !g.allow(format_args!("run {self}")))
        {
            return Ok(Output {
                code: 0,
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
        }
        log::debug!("run: {self}");
        let started = std::time::Instant::now();
        let mut command = self.command(program);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let writer = match (self.stdin.clone(), child.stdin.take()) {
            (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
                // A tool may exit without reading all of its input; that
                // shows in its exit status, not here. The binary restores
                // SIGPIPE's default (death) for `| head`: blocked in this
                // thread, the write fails with EPIPE instead, and the
                // pending signal goes with the thread.
                use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
                let mut pipe_sig = SigSet::empty();
                pipe_sig.add(Signal::SIGPIPE);
                let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&pipe_sig), None);
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for {}", program.display()))?;
        if let Some(w) = writer {
            let _ = w.join();
        }
        let code = out.status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + out.status.signal().unwrap_or(0)
        });
        log::debug!(
            "exit {code} after {} ms: {}",
            started.elapsed().as_millis(),
            self.name
        );
        Ok(Output {
            code,
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Runs the command; an exit code outside `ok_codes` is an error carrying
    /// the tail of stderr.
    pub fn run(&self) -> Result<Output> {
        self.checked(self.output_any()?)
    }

    /// `out`, or an error when its exit code is outside `ok_codes`.
    fn checked(&self, out: Output) -> Result<Output> {
        if !self.ok_codes.contains(&out.code) {
            return Err(CommandError {
                command: self.to_string(),
                code: out.code,
                stderr_tail: tail(&out.stderr, STDERR_TAIL_LINES),
            }
            .into());
        }
        Ok(out)
    }

    /// The process to start: arguments, stdin (piped when there is input),
    /// stdout and stderr piped, environment and folder.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.clear_env {
            command.env_clear();
        }
        for (k, v) in &self.env {
            command.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        command
    }

    /// [`Cmd::run`] for a command without input, each line of its stdout
    /// handed to `on_line` as it comes (progress), and kept in the output.
    pub fn run_lines(&self, on_line: &mut dyn FnMut(&str)) -> Result<Output> {
        self.run_streaming(false, on_line)
    }

    /// [`Cmd::run_lines`] for a program that writes its progress on stderr
    /// (borg --log-json): each line of stderr handed to `on_line`.
    pub fn run_stderr_lines(&self, on_line: &mut dyn FnMut(&str)) -> Result<Output> {
        self.run_streaming(true, on_line)
    }

    fn run_streaming(&self, stderr_lines: bool, on_line: &mut dyn FnMut(&str)) -> Result<Output> {
        use std::io::{BufRead, Read};
        let program = self.program()?;
        log::debug!("run: {self}");
        let mut child = self
            .command(program)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let out_pipe = child.stdout.take().context("no stdout pipe")?;
        let err_pipe = child.stderr.take().context("no stderr pipe")?;
        let (streamed, mut other): (Box<dyn Read>, Box<dyn Read + Send>) = if stderr_lines {
            (Box::new(err_pipe), Box::new(out_pipe))
        } else {
            (Box::new(out_pipe), Box::new(err_pipe))
        };
        let rest = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = other.read_to_end(&mut v);
            v
        });
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(streamed).split(b'\n') {
            let line = line.with_context(|| format!("reading the output of {}", self.name))?;
            on_line(&String::from_utf8_lossy(&line));
            lines.extend_from_slice(&line);
            lines.push(b'\n');
        }
        let status = child
            .wait()
            .with_context(|| format!("waiting for {}", program.display()))?;
        let rest = rest.join().unwrap_or_default();
        let code = status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        });
        let (stdout, stderr) = if stderr_lines {
            (rest, lines)
        } else {
            (lines, rest)
        };
        self.checked(Output {
            code,
            stdout,
            stderr,
        })
    }

    /// Runs the command and returns its stdout as text.
    pub fn read(&self) -> Result<String> {
        Ok(self.run()?.stdout_str())
    }

    /// Runs the command and parses its stdout as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        let out = self.run()?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("parsing the JSON output of {self}"))
    }

    fn program(&self) -> Result<&Path> {
        match &self.program {
            Some(p) => Ok(p),
            None => bail!(
                "{} is not installed; install package {} and try again",
                self.name,
                package_of(&self.name)
            ),
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self
            .program
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| self.name.clone());
        write!(f, "{}", shell_quote(&program))?;
        for a in &self.args {
            write!(f, " {}", shell_quote(&a.to_string_lossy()))?;
        }
        Ok(())
    }
}

/// A command that exited with a failure status.
#[derive(Debug, thiserror::Error)]
#[error("`{command}` failed with exit code {code}{}", fmt_tail(.stderr_tail))]
pub struct CommandError {
    pub command: String,
    pub code: i32,
    pub stderr_tail: String,
}

fn fmt_tail(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// The last `lines` non-empty lines of `bytes`, joined with " | " so that an
/// error stays on one line.
pub fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// Quotes a word for display the way a POSIX shell would read it back.
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_quote("/dev/vda1"), "/dev/vda1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn failure_carries_stderr_tail_and_code() {
        let err = Cmd::new("sh")
            .args(["-c", "echo one >&2; echo two >&2; exit 3"])
            .run()
            .unwrap_err();
        let e = err.downcast_ref::<CommandError>().unwrap();
        assert_eq!(e.code, 3);
        assert_eq!(e.stderr_tail, "one | two");
        assert!(err.to_string().contains("exit code 3: one | two"));
    }

    #[test]
    fn ok_codes_accept_other_exit_statuses() {
        let out = Cmd::new("sh")
            .args(["-c", "exit 1"])
            .ok_codes(&[1])
            .run()
            .unwrap();
        assert_eq!(out.code, 1);
    }

    #[test]
    fn stdin_and_json() {
        let v: serde_json::Value = Cmd::new("cat").stdin(r#"{"a": [1, 2]}"#).json().unwrap();
        assert_eq!(v["a"][1], 2);
        let bad = Cmd::new("echo").arg("not json").json::<serde_json::Value>();
        assert!(format!("{:#}", bad.unwrap_err()).contains("parsing the JSON output of"));
    }

    #[test]
    fn dry_run_does_not_run_mutating_commands() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("touched");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let gate = Gate::dry_run(move |l| s.lock().unwrap().push(l.to_string()));
        Cmd::new("touch")
            .arg(&marker)
            .mutating(&gate)
            .run()
            .unwrap();
        gate.write_file(&marker, b"x", 0o644).unwrap();
        assert!(!marker.exists());
        let touch = which("touch").unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                format!("would run {} {}", touch.display(), marker.display()),
                format!("would write {}", marker.display())
            ]
        );
        Cmd::new("touch")
            .arg(&marker)
            .mutating(&Gate::live())
            .run()
            .unwrap();
        assert!(marker.exists());
    }

    #[test]
    fn missing_tools_are_named_with_their_package() {
        let err = require(&["sh", "no-such-tool-lifeboat", "mkfs.no-such"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("no-such-tool-lifeboat (package util-linux)"),
            "{msg}"
        );
        assert!(msg.contains("mkfs.no-such"), "{msg}");
        let err = Cmd::new("no-such-tool-lifeboat").run().unwrap_err();
        assert!(err.to_string().contains("not installed"));
    }
}
