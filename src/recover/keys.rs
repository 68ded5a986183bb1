//! LUKS passphrases: from a key file (for all containers or per container),
//! else asked on the terminal. Never written anywhere but a private
//! temporary file in /run that is removed after use.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::layout::LuksDevice;

pub struct Keys {
    default: Option<PathBuf>,
    per_device: BTreeMap<String, PathBuf>,
    interactive: bool,
}

/// A passphrase in a file that cryptsetup reads with `--key-file`.
pub enum KeyFile {
    Given(PathBuf),
    Typed(tempfile::NamedTempFile),
}

impl KeyFile {
    pub fn path(&self) -> &Path {
        match self {
            KeyFile::Given(p) => p,
            KeyFile::Typed(t) => t.path(),
        }
    }
}

impl Keys {
    pub fn new(
        default: Option<PathBuf>,
        per_device: BTreeMap<String, PathBuf>,
        interactive: bool,
    ) -> Keys {
        Keys {
            default,
            per_device,
            interactive,
        }
    }

    pub fn key_for(&self, luks: &LuksDevice, dry_run: bool) -> Result<KeyFile> {
        let named = self
            .per_device
            .get(&luks.uuid)
            .or_else(|| {
                luks.mapping_name
                    .as_ref()
                    .and_then(|n| self.per_device.get(n))
            })
            .or(self.default.as_ref());
        if let Some(p) = named {
            if !p.is_file() {
                bail!(
                    "key file {} for LUKS {} does not exist",
                    p.display(),
                    luks.uuid
                );
            }
            return Ok(KeyFile::Given(p.clone()));
        }
        if dry_run {
            return Ok(KeyFile::Given(PathBuf::from("/dev/null")));
        }
        if !self.interactive {
            bail!(
                "LUKS container {} ({}) needs a passphrase: give --key-file FILE or `key_file` in the answers file",
                luks.uuid,
                luks.device
            );
        }
        let pass = ask_twice(&format!(
            "Passphrase for LUKS {} on {}{}",
            luks.uuid,
            luks.device,
            luks.mapping_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ))?;
        let dir = if Path::new("/run").is_dir() {
            PathBuf::from("/run")
        } else {
            std::env::temp_dir()
        };
        let mut f = tempfile::Builder::new()
            .prefix(".lifeboat-key-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(dir)?;
        f.write_all(pass.as_bytes())?;
        f.flush()?;
        Ok(KeyFile::Typed(f))
    }
}

/// The identity that opens an encrypted backup: the file given (option or
/// answers file), else typed on the terminal when `interactive`.
pub fn identity(
    file: Option<&Path>,
    interactive: bool,
) -> Result<std::sync::Arc<crate::backup::seal::Identities>> {
    use crate::backup::seal::Identities;
    let ids = match file {
        Some(f) => Identities::load(f)?,
        None if interactive => {
            let line = ask("The backup is encrypted. Identity (AGE-SECRET-KEY-1..., not shown): ")?;
            Identities::parse(line.trim().as_bytes(), "the typed identity")?
        }
        None => bail!(
            "the backup is encrypted: put its identity on the job disk and name it in recover.toml (identity = \"backup.key\"), or give --identity FILE"
        ),
    };
    Ok(std::sync::Arc::new(ids))
}

/// Reads a passphrase twice from the terminal without echo.
fn ask_twice(prompt: &str) -> Result<String> {
    let first = ask(&format!("{prompt}: "))?;
    let second = ask("Again: ")?;
    if first != second {
        bail!("the two passphrases differ");
    }
    if first.is_empty() {
        bail!("empty passphrase");
    }
    Ok(first)
}

/// A line typed on the terminal, not echoed.
pub(crate) fn ask(prompt: &str) -> Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for a passphrase: give --key-file FILE")?;
    let saved = tcgetattr(&tty).context("reading terminal settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSANOW, &quiet)?;
    let mut out = &tty;
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let mut line = String::new();
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, SetArg::TCSANOW, &saved);
    let _ = writeln!(out);
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
