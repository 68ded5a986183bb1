//! Compression of archives (multi-threaded zstd, gzip with zlib-rs, none),
//! hashing of the stored bytes, and a reader that decompresses in its own
//! thread so that restore writes files while the next chunk is unpacked.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd, multi-threaded (the default).
    Zstd,
    /// gzip, readable everywhere.
    Gzip,
    /// Plain tar.
    None,
}

impl Compression {
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => "tar.zst",
            Compression::Gzip => "tar.gz",
            Compression::None => "tar",
        }
    }

    /// Sniffs the compression of an archive from its first bytes.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.len() >= 263 && &head[257..262] == b"ustar" {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> HashWriter<W> {
        HashWriter {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the SHA-256 (hex) and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hash.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The compressing end of an archive.
pub enum Encoder<W: Write> {
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    /// `level` of None takes each format's default (zstd 3, gzip 6);
    /// `threads` zstd workers (0: compress in the calling thread).
    pub fn new(c: Compression, out: W, level: Option<i32>, threads: u32) -> io::Result<Encoder<W>> {
        Ok(match c {
            Compression::Zstd => {
                let mut e = zstd::stream::write::Encoder::new(out, level.unwrap_or(3))?;
                e.include_checksum(true)?;
                if threads > 0 {
                    e.multithread(threads)?;
                }
                Encoder::Zstd(e)
            }
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(level.unwrap_or(6).clamp(0, 9) as u32),
            )),
            Compression::None => Encoder::None(out),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::None(w) => w.flush(),
        }
    }
}

const CHUNK: usize = 1 << 20;

/// The decompressed bytes of an archive file, unpacked in a thread.
pub struct ArchiveStream {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
    handle: Option<JoinHandle<()>>,
    pub compression: Compression,
}

impl ArchiveStream {
    pub fn open(path: &Path) -> Result<ArchiveStream> {
        let mut file =
            File::open(path).with_context(|| format!("opening archive {}", path.display()))?;
        let mut head = vec![0u8; 512];
        let mut got = 0;
        while got < head.len() {
            let n = file.read(&mut head[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        head.truncate(got);
        let Some(compression) = Compression::sniff(&head) else {
            if got == 0 {
                bail!("archive {} is empty", path.display());
            }
            bail!(
                "{} is not a tar archive (neither zstd, gzip nor plain tar data)",
                path.display()
            );
        };
        let reader = io::Cursor::new(head).chain(file);
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(4);
        let handle = std::thread::spawn(move || {
            let buffered = BufReader::with_capacity(CHUNK, reader);
            let mut dec: Box<dyn Read> = match compression {
                Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(buffered) {
                    Ok(d) => Box::new(d),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                },
                Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
                Compression::None => Box::new(buffered),
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                let res = loop {
                    match dec.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let done = filled == 0;
                if filled > 0 && tx.send(Ok(buf)).is_err() {
                    return;
                }
                if let Err(e) = res {
                    let _ = tx.send(Err(e));
                    return;
                }
                if done {
                    return;
                }
            }
        });
        Ok(ArchiveStream {
            rx,
            cur: Vec::new(),
            pos: 0,
            eof: false,
            handle: Some(handle),
            compression,
        })
    }
}

impl Read for ArchiveStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.eof {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.eof = true;
                    return Err(e);
                }
                Err(_) => {
                    self.eof = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ArchiveStream {
    /// Reads to the end and waits for the unpacking thread.
    pub fn finish(mut self) -> Result<()> {
        let mut sink = vec![0u8; CHUNK];
        while self.read(&mut sink)? > 0 {}
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        Ok(())
    }
}

/// SHA-256 and size of a file, read in large blocks.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(h.finalize()), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compression_round_trips_through_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        for i in 0..300_000u32 {
            data.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        // A tar-looking head so that `none` sniffs as tar.
        data[257..262].copy_from_slice(b"ustar");
        for (c, threads) in [
            (Compression::Zstd, 2),
            (Compression::Zstd, 0),
            (Compression::Gzip, 0),
            (Compression::None, 0),
        ] {
            let path = dir.path().join(format!("a.{}", c.extension()));
            let f = File::create(&path).unwrap();
            let mut e = Encoder::new(c, HashWriter::new(f), None, threads).unwrap();
            e.write_all(&data).unwrap();
            let (_, sum, bytes) = e.finish().unwrap().finish();
            assert_eq!((sum, bytes), hash_file(&path).unwrap());
            let mut s = ArchiveStream::open(&path).unwrap();
            assert_eq!(s.compression, c);
            let mut back = Vec::new();
            s.read_to_end(&mut back).unwrap();
            assert!(back == data, "{c:?}");
            s.finish().unwrap();
        }
    }

    #[test]
    fn foreign_and_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("x.tar.zst");
        std::fs::write(&foreign, b"PK\x03\x04 this is a zip").unwrap();
        let err = ArchiveStream::open(&foreign).err().unwrap();
        assert!(err.to_string().contains("not a tar archive"), "{err}");
        // A zstd stream with a flipped byte fails with an error, not garbage.
        let data: Vec<u8> = (0..2_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut e = Encoder::new(Compression::Zstd, Vec::new(), None, 0).unwrap();
        e.write_all(&data).unwrap();
        let mut c = e.finish().unwrap();
        let mid = c.len() / 2;
        c[mid] ^= 0x55;
        let bad = dir.path().join("bad.tar.zst");
        std::fs::write(&bad, &c).unwrap();
        let mut s = ArchiveStream::open(&bad).unwrap();
        let mut out = Vec::new();
        assert!(s.read_to_end(&mut out).is_err());
    }
}
