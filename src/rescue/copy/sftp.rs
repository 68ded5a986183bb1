//! `sftp://USER@HOST[:PORT]/PATH`: the copy through OpenSSH's `sftp` in
//! batch mode (no prompt; keys and known hosts as root's ssh has them, or
//! `rescue.ssh_options`). The files go into `.lifeboat-copy-RANDOM`, are
//! read back through a second session into a private local folder and
//! their SHA-256 compared with `rescue.json`, then the folder is renamed
//! into place (posix-rename) and old copies removed.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{check_read_back, expired, random_hex, Plan, TMP_PREFIX};
use crate::exec::Cmd;

/// A parsed `sftp://` destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sftp {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// Absolute path on the server.
    pub path: String,
}

fn bad(text: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!("bad rescue.destination {text:?}: {why}; expected sftp://USER@HOST[:PORT]/PATH")
}

impl Sftp {
    pub fn parse(text: &str) -> Result<Sftp> {
        let rest = text.strip_prefix("sftp://").context("not sftp://")?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad(text, "no path"))?;
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        // `[v6 address]:port` or `host:port`.
        let split = match hostport.find(']') {
            Some(i) => (&hostport[..=i], hostport[i + 1..].strip_prefix(':')),
            None => match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        let (host, port) = match split {
            (h, Some(p)) => (
                h,
                Some(p.parse::<u16>().map_err(|_| bad(text, "bad port"))?),
            ),
            (h, None) => (h, None),
        };
        let word = |s: &str, extra: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
        };
        if !word(host, ".-_[]:") {
            bail!(bad(text, "bad host name"));
        }
        if let Some(u) = &user {
            if !word(u, ".-_") {
                bail!(bad(text, "bad user name"));
            }
        }
        let path = format!("/{}", path.trim_end_matches('/'));
        if path.len() < 2 {
            bail!(bad(
                text,
                "no folder (the server's / is not a place for copies)"
            ));
        }
        // Batch lines are quoted; glob characters would be expanded by
        // some sftp commands.
        if path
            .chars()
            .any(|c| c.is_control() || "\"\\*?[]".contains(c))
        {
            bail!(bad(
                text,
                "the path may not hold quotes, backslashes, glob characters or control characters"
            ));
        }
        Ok(Sftp {
            user,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `sftp -b -` with batch mode, the options and the login.
    pub fn command(&self, ssh_options: &[String]) -> Result<Cmd> {
        let mut c = Cmd::new("sftp").args(["-b", "-", "-o", "BatchMode=yes"]);
        for o in ssh_options {
            if o.chars().any(char::is_control) || o.starts_with('-') {
                bail!("rescue.ssh_options: {o:?} is not an ssh option (Key=Value)");
            }
            c = c.args(["-o", o]);
        }
        if let Some(p) = self.port {
            c = c.args(["-P", &p.to_string()]);
        }
        let login = match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        };
        Ok(c.arg(login))
    }

    /// Runs the batch `lines`; returns the output lines that are not the
    /// echoed commands.
    fn batch(&self, lines: &[String], ssh_options: &[String]) -> Result<Vec<String>> {
        let script = lines.join("\n") + "\n";
        let out = self
            .command(ssh_options)?
            .stdin(script.into_bytes())
            .read()
            .with_context(|| format!("sftp to {}", self.host))?;
        Ok(out
            .lines()
            .filter(|l| !l.starts_with("sftp>"))
            .map(str::to_string)
            .collect())
    }

    /// The copy: upload into a temporary folder, read back and checked by SHA-256, renamed,
    /// old copies removed. Returns the names removed.
    pub fn copy(&self, plan: &Plan, keep: usize, ssh_options: &[String]) -> Result<Vec<String>> {
        crate::exec::require(&["sftp"])?;
        let tmp = format!("{}/{TMP_PREFIX}{}", self.path, random_hex()?);
        // The folder and its parents (`-`: an existing one is no error).
        let mut lines: Vec<String> = self
            .path
            .match_indices('/')
            .skip(1)
            .map(|(i, _)| format!("-mkdir {}", quote(&self.path[..i])))
            .collect();
        lines.push(format!("-mkdir {}", quote(&self.path)));
        lines.push(format!("mkdir {}", quote(&tmp)));
        for item in &plan.items {
            let dir = item.src.parent().unwrap_or(Path::new("/"));
            let file = item
                .src
                .file_name()
                .and_then(|f| f.to_str())
                .context("a file without a name")?;
            lines.push(format!("lcd {}", quote_local(dir)?));
            lines.push(format!(
                "put {} {}",
                quote(file),
                quote(&format!("{tmp}/{}", item.name))
            ));
        }
        let checked = self
            .batch(&lines, ssh_options)
            .and_then(|_| self.read_back(plan, &tmp, ssh_options));
        let fin = format!("{}/{}", self.path, plan.name);
        let renamed = checked.and_then(|()| {
            self.batch(
                &[
                    format!("rename {} {}", quote(&tmp), quote(&fin)),
                    format!("ls -1 {}", quote(&self.path)),
                ],
                ssh_options,
            )
        });
        let listing = match renamed {
            Ok(l) => l,
            Err(e) => {
                // Whatever of the temporary folder was made; a failure
                // to connect leaves nothing to remove.
                let lines = [
                    format!("-rm {}/*", quote(&tmp)),
                    format!("-rmdir {}", quote(&tmp)),
                ];
                if let Err(e) = self.batch(&lines, ssh_options) {
                    log::debug!("removing {tmp} on {}: {e:#}", self.host);
                }
                return Err(e);
            }
        };
        let names: Vec<String> = listing
            .iter()
            .map(|l| l.rsplit('/').next().unwrap_or(l).trim().to_string())
            .collect();
        let mut removed = Vec::new();
        for old in expired(&names, plan, keep) {
            if self.remove(&format!("{}/{old}", self.path), ssh_options) {
                removed.push(old);
            }
        }
        Ok(removed)
    }

    /// Reads the files of the copy in `tmp` back (a new session, into a
    /// private local folder): each must have the SHA-256 and size of
    /// `rescue.json`, so a copy damaged on the way or on the server is
    /// never renamed into place.
    fn read_back(&self, plan: &Plan, tmp: &str, ssh_options: &[String]) -> Result<()> {
        let local = tempfile::Builder::new()
            .prefix("lifeboat-copy-check-")
            .tempdir()
            .context("creating a folder to read the copy back into")?;
        let dir = local.path();
        let mut lines = Vec::new();
        for item in &plan.items {
            lines.push(format!(
                "get {} {}",
                quote(&format!("{tmp}/{}", item.name)),
                quote_local(&dir.join(&item.name))?
            ));
        }
        self.batch(&lines, ssh_options)
            .context("reading the copy back")?;
        for item in &plan.items {
            check_read_back(item, &dir.join(&item.name))
                .with_context(|| format!("the copy on {}", self.host))?;
        }
        Ok(())
    }

    /// Removes a copy folder (files, then the folder); logs a failure.
    fn remove(&self, dir: &str, ssh_options: &[String]) -> bool {
        let lines = [
            format!("-rm {}/*", quote(dir)),
            format!("rmdir {}", quote(dir)),
        ];
        match self.batch(&lines, ssh_options) {
            Ok(_) => true,
            Err(e) => {
                log::warn!("cannot remove {dir} on {}: {e:#}", self.host);
                false
            }
        }
    }
}

/// A path as one word of a batch line.
fn quote(p: &str) -> String {
    format!("\"{}\"", p.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A local folder for `lcd` (which does not expand globs).
fn quote_local(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    if s.chars().any(char::is_control) {
        bail!("{} holds a control character", p.display());
    }
    Ok(quote(s))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn sftp_destinations_parse() {
        let s = Sftp::parse("sftp://lb@nas.example.com:2222/srv/rescue/").unwrap();
        assert_eq!(
            s,
            Sftp {
                user: Some("lb".into()),
                host: "nas.example.com".into(),
                port: Some(2222),
                path: "/srv/rescue".into()
            }
        );
        let s = Sftp::parse("sftp://nas/r").unwrap();
        assert_eq!((s.user, s.port, s.path.as_str()), (None, None, "/r"));
        let s = Sftp::parse("sftp://root@[::1]:22/r").unwrap();
        assert_eq!((s.host.as_str(), s.port), ("[::1]", Some(22)));
        for bad in [
            "sftp://nas",
            "sftp://nas/",
            "sftp://-oProxyCommand=x/r",
            "sftp://a b@nas/r",
            "sftp://nas:99999/r",
            "sftp://nas/r/*",
            "sftp://nas/r\"x",
            "sftp://nas/r\nx",
        ] {
            assert!(Sftp::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sftp_command_line() {
        let s = Sftp::parse("sftp://lb@nas:2222/srv/rescue").unwrap();
        let c = s
            .command(&["IdentityFile=/root/.ssh/k".to_string()])
            .unwrap();
        assert!(
            c.to_string().ends_with(
                "sftp -b - -o BatchMode=yes -o IdentityFile=/root/.ssh/k -P 2222 lb@nas"
            ),
            "{c}"
        );
        assert!(s.command(&["-oProxyCommand=x".to_string()]).is_err());
        assert!(s.command(&["A=b\nc".to_string()]).is_err());
    }
}
