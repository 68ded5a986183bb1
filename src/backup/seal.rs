//! Encrypted generations: age (X25519 and SSH recipients), so that the
//! protected server writes backups it cannot read back.
//!
//! An encrypted generation stores every archive, its manifest, its layout
//! and its full `generation.json` as age files (`NAME.age`); a clear
//! `generation.json` keeps what must stay readable without the key (times,
//! sizes, kind, chain, the recipients' fingerprints) and no file or mount
//! point name. age authenticates everything it decrypts: a changed byte is
//! [`Tampered`], never a decompression error. Archives are read through
//! [`SealedReader`], which goes on after a 64 KiB age chunk that fails
//! authentication, so one bad byte costs the zstd frame around it.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// How an age file begins.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The name of a file of an encrypted generation: `NAME.age`.
pub const SUFFIX: &str = ".age";
/// Plaintext bytes per age STREAM chunk, and its tag.
const CHUNK: u64 = 64 * 1024;
const TAG: u64 = 16;
/// Recipient and identity files are small.
const KEY_FILE_LIMIT: u64 = 1 << 20;

/// The clear part of an encrypted generation's `generation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encryption {
    /// `sha256:` and 16 hex digits of each recipient (see [`fingerprint`]).
    pub recipients: Vec<String>,
}

/// A changed, truncated or swapped encrypted file: age's authentication
/// failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("tampered: {what}: {detail}")]
pub struct Tampered {
    pub what: String,
    pub detail: String,
    /// Where reading can go on (plaintext offset), after a bad chunk.
    pub resume: Option<u64>,
}

/// The identity given does not open a file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("wrong identity: {what} is not encrypted to {source_name} (it was encrypted to {recipients}); give the identity of one of its recipients with --identity")]
pub struct WrongIdentity {
    pub what: String,
    pub source_name: String,
    pub recipients: String,
}

/// The recipients a generation is encrypted to.
pub struct Recipients {
    list: Vec<Box<dyn age::Recipient + Send + Sync>>,
    pub fingerprints: Vec<String>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipients{:?}", self.fingerprints)
    }
}

/// A short, stable name of a recipient: `sha256:` and the first 16 hex
/// digits of the SHA-256 of its text (for an SSH key, "TYPE BASE64",
/// without the comment).
pub fn fingerprint(canonical: &str) -> String {
    format!("sha256:{}", &super::sha256_hex(canonical.as_bytes())[..16])
}

impl Recipients {
    /// Each spec is a recipient (`age1...`, `ssh-ed25519 ...`,
    /// `ssh-rsa ...`) or a file of them, one per line (`#` comments).
    pub fn parse(specs: &[String]) -> Result<Recipients> {
        let mut out = Recipients {
            list: Vec::new(),
            fingerprints: Vec::new(),
        };
        for spec in specs {
            let s = spec.trim();
            if looks_like_key(s) {
                out.add(s).with_context(|| format!("--encrypt-to {s:?}"))?;
                continue;
            }
            let path = Path::new(s);
            let data = crate::util::read_regular(path, "recipients file", KEY_FILE_LIMIT)
                .with_context(|| format!("{s:?} is neither an age or SSH recipient nor a readable file of recipients"))?;
            let text = String::from_utf8(data)
                .with_context(|| format!("recipients file {s} is not UTF-8 text"))?;
            let before = out.list.len();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                out.add(line)
                    .with_context(|| format!("recipients file {s}, line {}", i + 1))?;
            }
            if out.list.len() == before {
                bail!("recipients file {s} names no recipient");
            }
        }
        if out.list.is_empty() {
            bail!("no recipients to encrypt to");
        }
        Ok(out)
    }

    /// None for no specs (a clear backup).
    pub fn optional(specs: &[String]) -> Result<Option<Recipients>> {
        match specs.is_empty() {
            true => Ok(None),
            false => Recipients::parse(specs).map(Some),
        }
    }

    fn add(&mut self, text: &str) -> Result<()> {
        if text.starts_with("AGE-SECRET-KEY-") || text.contains("PRIVATE KEY") {
            bail!("this is a secret key, not a recipient: give its public key (`age-keygen -y FILE`, or the .pub file of an SSH key), and keep the secret key off this server");
        }
        let (rec, canonical): (Box<dyn age::Recipient + Send + Sync>, String) =
            if text.starts_with("age1") {
                let r: age::x25519::Recipient = text
                    .parse()
                    .map_err(|e| anyhow::anyhow!("not a valid age recipient: {e}"))?;
                (Box::new(r), text.to_string())
            } else {
                let r: age::ssh::Recipient = text
                    .parse()
                    .map_err(|e| anyhow::anyhow!("not a usable SSH public key: {e:?}"))?;
                let canonical = text
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                (Box::new(r), canonical)
            };
        let fp = fingerprint(&canonical);
        if !self.fingerprints.contains(&fp) {
            self.list.push(rec);
            self.fingerprints.push(fp);
        }
        Ok(())
    }

    fn encryptor(&self) -> io::Result<age::Encryptor> {
        age::Encryptor::with_recipients(self.list.iter().map(|r| r.as_ref() as _))
            .map_err(|e| io::Error::other(format!("age: {e}")))
    }

    /// Encrypts `out`'s stream; [`Output::finish`] writes the last chunk.
    pub fn writer<W: Write>(&self, out: W) -> io::Result<Output<W>> {
        Ok(Output::Sealed(self.encryptor()?.wrap_output(out)?))
    }

    /// One small file (manifest, generation.json, layout), encrypted.
    pub fn seal(&self, data: &[u8]) -> Result<Vec<u8>> {
        let mut w = self.writer(Vec::with_capacity(data.len() + 1024))?;
        w.write_all(data)?;
        Ok(w.finish()?)
    }
}

fn looks_like_key(s: &str) -> bool {
    ["age1", "ssh-", "ecdsa-", "sk-", "AGE-SECRET-KEY-"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// Where an archive's compressed stream goes: the file, or age around it.
pub enum Output<W: Write> {
    Plain(W),
    Sealed(age::stream::StreamWriter<W>),
}

impl<W: Write> Output<W> {
    pub fn finish(self) -> io::Result<W> {
        match self {
            Output::Plain(w) => Ok(w),
            Output::Sealed(s) => s.finish(),
        }
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(buf),
            Output::Sealed(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Sealed(s) => s.flush(),
        }
    }
}

/// What is known of whom a file is encrypted to, when no identity opens
/// it: a header that does not open is then tampered, not a wrong identity.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// The recipients' fingerprints from the clear `generation.json`.
    Recipients(&'a [String]),
    /// These identities opened the generation's `generation.json.age`:
    /// every file of it is encrypted to the same recipients.
    Opened,
}

/// The identities that open encrypted generations (`--identity FILE`).
pub struct Identities {
    list: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// Fingerprints of the recipients of the age identities (SSH keys
    /// have none here).
    fingerprints: Vec<String>,
    /// Where they came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({})", self.source)
    }
}

impl Identities {
    /// An age identity file (`age-keygen -o`, `AGE-SECRET-KEY-1...` lines)
    /// or an unencrypted OpenSSH private key (ed25519 or RSA).
    pub fn load(path: &Path) -> Result<Identities> {
        let data = crate::util::read_regular(path, "identity file", KEY_FILE_LIMIT)
            .with_context(|| format!("cannot read identity {}", path.display()))?;
        Identities::parse(&data, &path.display().to_string())
    }

    /// Identities from the text of an identity file (`source` names it).
    pub fn parse(data: &[u8], source: &str) -> Result<Identities> {
        let text = String::from_utf8_lossy(data);
        let fingerprints = text
            .lines()
            .filter_map(|l| l.trim().parse::<age::x25519::Identity>().ok())
            .map(|i| fingerprint(&i.to_public().to_string()))
            .collect();
        let list: Vec<Box<dyn age::Identity + Send + Sync>> = if text.contains("PRIVATE KEY-----") {
            match age::ssh::Identity::from_buffer(data, Some(source.to_string())) {
                Ok(age::ssh::Identity::Unencrypted(k)) => {
                    vec![Box::new(age::ssh::Identity::Unencrypted(k))]
                }
                Ok(age::ssh::Identity::Encrypted(_)) => bail!(
                    "identity {source} is a passphrase-protected SSH key: lifeboat reads only unprotected keys; use an age identity (age-keygen) kept offline, or a copy of the key without passphrase (ssh-keygen -p) on the machine that restores"
                ),
                Ok(age::ssh::Identity::Unsupported(k)) => {
                    bail!("identity {source} is an SSH key age does not support: {k:?}")
                }
                Err(e) => bail!("identity {source} is not a readable SSH private key: {e}"),
            }
        } else {
            age::IdentityFile::from_buffer(data)
                .and_then(|f| f.into_identities().map_err(io::Error::other))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "identity {source} is not an age identity file (AGE-SECRET-KEY-1... lines) nor an OpenSSH private key: {e}"
                    )
                })?
        };
        if list.is_empty() {
            bail!("identity file {source} holds no identity");
        }
        Ok(Identities {
            list,
            fingerprints,
            source: source.to_string(),
        })
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.list.iter().map(|i| i.as_ref() as &dyn age::Identity)
    }

    /// A reader of the plaintext of the age file `input` (`what` names it in
    /// errors; `recipients` says whom it was encrypted to).
    fn decrypt<R: Read>(
        &self,
        input: R,
        what: &str,
        expect: Expect,
    ) -> Result<age::stream::StreamReader<R>> {
        let tampered = |detail: &str| Tampered {
            what: what.to_string(),
            detail: detail.to_string(),
            resume: None,
        };
        let dec = age::Decryptor::new(input).map_err(|e| match e {
            age::DecryptError::Io(e) => anyhow::Error::new(e).context(format!("reading {what}")),
            age::DecryptError::UnknownFormat => {
                tampered("its age header is unreadable (damaged, or from a newer age)").into()
            }
            _ => tampered("its age header is damaged").into(),
        })?;
        dec.decrypt(self.iter()).map_err(|e| match (e, expect) {
            (age::DecryptError::NoMatchingKeys, Expect::Recipients(r))
                if !r.iter().any(|f| self.fingerprints.contains(f)) =>
            {
                WrongIdentity {
                    what: what.to_string(),
                    source_name: self.source.clone(),
                    recipients: r.join(", "),
                }
                .into()
            }
            (age::DecryptError::NoMatchingKeys, _) => {
                tampered("its age header does not open with the identity of one of its recipients")
                    .into()
            }
            (age::DecryptError::Io(e), _) => {
                anyhow::Error::new(e).context(format!("reading {what}"))
            }
            (age::DecryptError::KeyDecryptionFailed, _) => {
                anyhow::anyhow!("identity {} could not be unlocked", self.source)
            }
            (_, _) => tampered("its age header fails authentication").into(),
        })
    }

    /// The plaintext of a small age file (whole, authenticated).
    pub fn open(&self, data: &[u8], what: &str, expect: Expect) -> Result<Vec<u8>> {
        if !data.starts_with(AGE_MAGIC) {
            return Err(Tampered {
                what: what.into(),
                detail: "not an age file (replaced?)".into(),
                resume: None,
            }
            .into());
        }
        let mut r = self.decrypt(data, what, expect)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| Tampered {
            what: what.into(),
            detail: format!("its content fails authentication ({e})"),
            resume: None,
        })?;
        Ok(out)
    }
}

/// The tampering an I/O error stands for, if it is one.
pub fn tampered(e: &io::Error) -> Option<&Tampered> {
    e.get_ref().and_then(|i| i.downcast_ref::<Tampered>())
}

/// A reader and its position shared between [`SealedReader`] and the age
/// stream it rebuilds after damage.
pub struct Shared<R>(Arc<Mutex<R>>);

impl<R> Clone for Shared<R> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<R> Shared<R> {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, R> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<R: Read> Read for Shared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.lock().read(buf)
    }
}

impl<R: Seek> Seek for Shared<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.lock().seek(to)
    }
}

/// The plaintext of an encrypted archive, read and seeked like a file.
///
/// A chunk that fails authentication is an error carrying [`Tampered`]
/// (with the offset after the chunk); the next read goes on there, so the
/// zstd reader resynchronises at the next frame as after plain damage.
pub struct SealedReader<R: Read + Seek> {
    ids: Arc<Identities>,
    inner: Shared<R>,
    stream: age::stream::StreamReader<Shared<R>>,
    what: String,
    /// Plaintext offset of the next byte.
    pos: u64,
    /// The stream failed: rebuilt before the next read or seek.
    stuck: bool,
    /// After a bad chunk, where the next read begins.
    skip_to: Option<u64>,
    at_end: bool,
}

impl<R: Read + Seek> SealedReader<R> {
    pub fn new(inner: R, ids: Arc<Identities>, what: &str) -> Result<SealedReader<R>> {
        let inner = Shared(Arc::new(Mutex::new(inner)));
        let stream = ids.decrypt(inner.clone(), what, Expect::Opened)?;
        Ok(SealedReader {
            ids,
            inner,
            stream,
            what: what.to_string(),
            pos: 0,
            stuck: false,
            skip_to: None,
            at_end: false,
        })
    }

    /// The reader below (the encrypted file).
    pub fn inner(&self) -> &Shared<R> {
        &self.inner
    }

    fn bad_chunk(&mut self, e: &io::Error) -> io::Error {
        let chunk = self.pos / CHUNK;
        self.stuck = true;
        self.skip_to = Some((chunk + 1) * CHUNK);
        let detail = if e.kind() == io::ErrorKind::UnexpectedEof {
            format!("the encrypted data ends early at age chunk {chunk} (truncated)")
        } else {
            format!(
                "age chunk {chunk} (encrypted bytes from {} of the stream, plaintext bytes {}..{}) fails authentication",
                chunk * (CHUNK + TAG),
                chunk * CHUNK,
                (chunk + 1) * CHUNK
            )
        };
        io::Error::new(
            io::ErrorKind::InvalidData,
            Tampered {
                what: self.what.clone(),
                detail,
                resume: self.skip_to,
            },
        )
    }

    /// Moves to plaintext offset `to`, rebuilding the stream after damage.
    /// The age reader is never asked to seek exactly to a chunk boundary
    /// other than 0 (which would authenticate the last chunk first).
    fn seek_to(&mut self, to: u64) -> io::Result<()> {
        if self.stuck || to == 0 {
            self.inner.lock().seek(SeekFrom::Start(0))?;
            self.stream = self
                .ids
                .decrypt(self.inner.clone(), &self.what, Expect::Opened)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:#}")))?;
            self.stuck = false;
        }
        self.pos = to;
        self.at_end = false;
        if to == 0 {
            return Ok(());
        }
        let res = if to % CHUNK == 0 {
            self.stream
                .seek(SeekFrom::Start(to + 1))
                .and_then(|_| self.stream.seek(SeekFrom::Current(-1)))
        } else {
            self.stream.seek(SeekFrom::Start(to))
        };
        match res {
            Ok(_) => Ok(()),
            // Nothing after `to`: the end (a truncation is found when read
            // straight through).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && to % CHUNK == 0 => {
                self.at_end = true;
                Ok(())
            }
            Err(e) => {
                self.pos = to - to % CHUNK;
                Err(self.bad_chunk(&e))
            }
        }
    }
}

impl<R: Read + Seek> Read for SealedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(to) = self.skip_to.take() {
            self.seek_to(to)?;
        }
        if self.at_end {
            return Ok(0);
        }
        match self.stream.read(buf) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Err(self.bad_chunk(&e))
            }
            Err(e) => Err(e),
        }
    }
}

impl<R: Read + Seek> Seek for SealedReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        if to == SeekFrom::Current(0) {
            return Ok(self.skip_to.unwrap_or(self.pos));
        }
        let target = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::Current(d) => self
                .pos
                .checked_add_signed(d)
                .ok_or_else(|| io::Error::other("seek before the start"))?,
            SeekFrom::End(_) => return Err(io::Error::other("seek from the end of an age stream")),
        };
        if target == self.pos && self.skip_to.is_none() {
            return Ok(target);
        }
        self.skip_to = None;
        self.seek_to(target)?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn pair() -> (Recipients, Arc<Identities>, String) {
        let id = age::x25519::Identity::generate();
        let text = format!("# test\n{}\n", id.to_string().expose_secret());
        let ids = Identities::parse(text.as_bytes(), "test-identity").unwrap();
        let rec = Recipients::parse(&[id.to_public().to_string()]).unwrap();
        (rec, Arc::new(ids), id.to_public().to_string())
    }

    #[test]
    fn small_files_round_trip_and_tampering_is_named() {
        let (rec, ids, pubkey) = pair();
        assert_eq!(rec.fingerprints, [fingerprint(&pubkey)]);
        let sealed = rec.seal(b"manifest bytes").unwrap();
        assert!(sealed.starts_with(AGE_MAGIC));
        let fps = rec.fingerprints.clone();
        assert_eq!(
            ids.open(&sealed, "m", Expect::Opened).unwrap(),
            b"manifest bytes"
        );
        // Every byte: magic, header (recipient stanza, MAC), payload
        // nonce, body, tag.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            let e = ids
                .open(&bad, "manifest of generation g", Expect::Recipients(&fps))
                .unwrap_err();
            let t = e
                .downcast_ref::<Tampered>()
                .unwrap_or_else(|| panic!("{e:#}"));
            assert!(
                t.to_string()
                    .starts_with("tampered: manifest of generation g"),
                "{t}"
            );
        }
        let (_, other, _) = pair();
        let e = other
            .open(&sealed, "m", Expect::Recipients(&fps))
            .unwrap_err();
        assert!(e.is::<WrongIdentity>(), "{e:#}");
        assert!(e.to_string().contains(&fps[0]), "{e}");
    }

    #[test]
    fn a_bad_chunk_costs_that_chunk_and_reading_goes_on() {
        let (rec, ids, _) = pair();
        let data: Vec<u8> = (0..(5 * CHUNK as usize + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut w = rec.writer(Vec::new()).unwrap();
        w.write_all(&data).unwrap();
        let mut sealed = w.finish().unwrap();
        let header = sealed.len() - (5 * (CHUNK + TAG) + 100 + TAG) as usize;
        // A byte of chunk 2.
        sealed[header + 2 * (CHUNK + TAG) as usize + 7] ^= 0x40;
        let mut r = SealedReader::new(io::Cursor::new(sealed), ids, "root.tar.zst.age").unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 10_000];
        let mut bad = Vec::new();
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // Bounded: a reader that cannot go on fails here.
                Err(_) if bad.len() > 3 => break,
                Err(e) => {
                    let t = tampered(&e).expect("tampered").clone();
                    assert!(
                        t.to_string().contains("root.tar.zst.age: age chunk 2"),
                        "{t}"
                    );
                    bad.push(t.resume);
                }
            }
        }
        assert_eq!(bad, [Some(3 * CHUNK)]);
        let c = CHUNK as usize;
        assert_eq!(got, [&data[..2 * c], &data[3 * c..]].concat());
        // Seeking into and around the bad chunk.
        r.seek(SeekFrom::Start(3 * CHUNK)).unwrap();
        let mut one = [0u8; 1];
        r.read_exact(&mut one).unwrap();
        assert_eq!(one[0], data[3 * c]);
        assert!(r.seek(SeekFrom::Start(2 * CHUNK + 5)).is_err());
        r.seek(SeekFrom::Start(CHUNK + 5)).unwrap();
        r.read_exact(&mut one).unwrap();
        assert_eq!(one[0], data[c + 5]);
    }

    #[test]
    fn recipients_files_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, a) = pair();
        let (_, _, b) = pair();
        let f = dir.path().join("recipients");
        std::fs::write(&f, format!("# backup keys\n\n{a}\n  {b}  \n")).unwrap();
        let r = Recipients::parse(&[f.display().to_string(), a.clone()]).unwrap();
        assert_eq!(r.fingerprints, [fingerprint(&a), fingerprint(&b)]);
        let secret = age::x25519::Identity::generate();
        let e = Recipients::parse(&[secret.to_string().expose_secret().to_string()]).unwrap_err();
        assert!(
            format!("{e:#}").contains("secret key, not a recipient"),
            "{e:#}"
        );
        std::fs::write(&f, "age1notakey\n").unwrap();
        let e = format!(
            "{:#}",
            Recipients::parse(&[f.display().to_string()]).unwrap_err()
        );
        assert!(
            e.contains("line 1") && e.contains("not a valid age recipient"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            Recipients::parse(&["/nonexistent/keys".into()]).unwrap_err()
        );
        assert!(e.contains("neither an age or SSH recipient"), "{e}");
    }
}
