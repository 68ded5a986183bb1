//! Compression of archives (multi-threaded zstd, gzip with zlib-rs, none),
//! hashing of the stored bytes, and a reader that decompresses in its own
//! thread so that restore writes files while the next chunk is unpacked.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::seal::{self, Identities, SealedReader, AGE_MAGIC};

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

/// Most uncompressed bytes in one zstd frame: damage costs at most the
/// entries of one frame (and a file that runs through it).
pub const FRAME_MAX: usize = 8 << 20;
/// A frame ends at the first entry boundary once it holds this much, so
/// that most frames begin with a tar header (where a reader resumes).
pub const FRAME_TARGET: usize = 4 << 20;

/// The compressing end of an archive.
pub enum Encoder<W: Write> {
    Zstd(FrameEncoder<W>),
    Gzip(flate2::write::GzEncoder<W>),
    None(io::BufWriter<W>),
}

impl<W: Write> Encoder<W> {
    /// `level` of None takes each format's default (zstd 3, gzip 6);
    /// `threads` zstd workers (0: compress in the calling thread).
    pub fn new(c: Compression, out: W, level: Option<i32>, threads: u32) -> io::Result<Encoder<W>> {
        Ok(match c {
            Compression::Zstd => {
                Encoder::Zstd(FrameEncoder::new(out, level.unwrap_or(3), threads)?)
            }
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(level.unwrap_or(6).clamp(0, 9) as u32),
            )),
            Compression::None => Encoder::None(io::BufWriter::with_capacity(CHUNK, out)),
        })
    }

    /// The archive is at the start of an entry (a tar header comes next):
    /// a good place to end a zstd frame.
    pub fn entry_boundary(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.entry_boundary(),
            _ => Ok(()),
        }
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::None(w) => w.into_inner().map_err(|e| e.into_error()),
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

/// A zstd compressor for one frame, with the content checksum on (so that
/// damage is detected frame by frame).
fn frame_compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    Ok(c)
}

type Job = (u64, Vec<u8>);

/// Frames compressed by worker threads, written in order.
struct FramePool {
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    results: Receiver<(u64, io::Result<Vec<u8>>)>,
    workers: Vec<JoinHandle<()>>,
    in_flight: usize,
    limit: usize,
}

impl FramePool {
    fn spawn(level: i32, threads: u32) -> io::Result<FramePool> {
        let (jtx, jrx) = sync_channel::<Job>(threads as usize);
        let jrx = std::sync::Arc::new(std::sync::Mutex::new(jrx));
        let (rtx, results) = std::sync::mpsc::channel();
        let mut workers = Vec::new();
        for _ in 0..threads {
            let (jrx, rtx) = (jrx.clone(), rtx.clone());
            let mut c = frame_compressor(level)?;
            workers.push(std::thread::spawn(move || loop {
                let job = jrx.lock().map(|rx| rx.recv());
                let Ok(Ok((seq, data))) = job else { return };
                if rtx.send((seq, c.compress(&data))).is_err() {
                    return;
                }
            }));
        }
        Ok(FramePool {
            jobs: Some(jtx),
            results,
            workers,
            in_flight: 0,
            limit: 2 * threads as usize,
        })
    }
}

/// Writes an archive as a sequence of independent zstd frames of at most
/// [`FRAME_MAX`] uncompressed bytes each (a valid `.zst`: `zstd -d` reads
/// concatenated frames), compressed on `threads` workers like pzstd.
pub struct FrameEncoder<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// The frame being filled began at an entry boundary.
    starts_at_entry: bool,
    pool: Option<FramePool>,
    inline: Option<zstd::bulk::Compressor<'static>>,
    next_seq: u64,
    written_seq: u64,
    ready: std::collections::BTreeMap<u64, Vec<u8>>,
}

impl<W: Write> FrameEncoder<W> {
    pub fn new(out: W, level: i32, threads: u32) -> io::Result<FrameEncoder<W>> {
        let (pool, inline) = if threads > 0 {
            (Some(FramePool::spawn(level, threads)?), None)
        } else {
            (None, Some(frame_compressor(level)?))
        };
        Ok(FrameEncoder {
            out,
            buf: Vec::with_capacity(FRAME_MAX),
            starts_at_entry: true,
            pool,
            inline,
            next_seq: 0,
            written_seq: 0,
            ready: Default::default(),
        })
    }

    /// Ends the frame here when it is full enough, or when it began inside
    /// an entry (so that the next one begins with a header).
    pub fn entry_boundary(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() && (self.buf.len() >= FRAME_TARGET || !self.starts_at_entry) {
            self.emit()?;
        }
        if self.buf.is_empty() {
            self.starts_at_entry = true;
        }
        Ok(())
    }

    /// Hands the buffered bytes over as one frame.
    fn emit(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(FRAME_MAX));
        self.starts_at_entry = false;
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(c) = &mut self.inline {
            let frame = c.compress(&data)?;
            self.ready.insert(seq, frame);
            return self.write_ready();
        }
        let pool = self
            .pool
            .as_mut()
            .expect("a pool without inline compressor");
        let sent = pool.jobs.as_ref().map(|j| j.send((seq, data)));
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("zstd worker threads stopped"));
        }
        pool.in_flight += 1;
        while self.pool.as_ref().is_some_and(|p| p.in_flight >= p.limit) {
            self.collect_one()?;
        }
        self.write_ready()
    }

    fn collect_one(&mut self) -> io::Result<()> {
        let pool = self.pool.as_mut().expect("pool");
        let (seq, frame) = pool
            .results
            .recv()
            .map_err(|_| io::Error::other("zstd worker threads stopped"))?;
        pool.in_flight -= 1;
        self.ready.insert(seq, frame?);
        Ok(())
    }

    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(frame) = self.ready.remove(&self.written_seq) {
            self.out.write_all(&frame)?;
            self.written_seq += 1;
        }
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() {
            self.emit()?;
        }
        while self.pool.as_ref().is_some_and(|p| p.in_flight > 0) {
            self.collect_one()?;
        }
        self.write_ready()?;
        if let Some(mut p) = self.pool.take() {
            p.jobs = None;
            for w in p.workers.drain(..) {
                let _ = w.join();
            }
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for FrameEncoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(FRAME_MAX - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == FRAME_MAX {
            self.emit()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const CHUNK: usize = 1 << 20;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A reader that hashes what it reads while read straight through; a seek
/// (resynchronisation after damage) makes the hash meaningless.
struct HashReader<R> {
    inner: R,
    hash: Sha256,
    pos: u64,
    whole: bool,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: io::Seek> io::Seek for HashReader<R> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        if to == io::SeekFrom::Current(0) {
            return Ok(self.pos);
        }
        self.whole = false;
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

/// What the unpacking thread sends.
enum Msg {
    Data(Vec<u8>),
    /// Damage found; what follows (if anything) begins with a tar header.
    Damage(String),
    /// A fatal error.
    Fail(io::Error),
    /// The end, with the SHA-256 and size of the stored file when it was
    /// read straight through.
    End(Option<(String, u64)>),
}

/// The decompressed bytes of an archive file, unpacked in a thread.
///
/// A zstd archive is read frame by frame, each frame checked (content
/// checksum) before any of it is handed out. After a damaged frame the
/// reader looks for the next frame magic and resumes at the first frame
/// whose data begins with a tar header: reads fail with the damage until
/// [`ArchiveStream::resume`] is called, and a new tar reader starts there.
pub struct ArchiveStream {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
    handle: Option<JoinHandle<()>>,
    pub compression: Compression,
    /// Damage waiting for [`ArchiveStream::resume`].
    pending: Option<String>,
    /// Every damage found so far.
    pub damage: Vec<String>,
    stored: Option<(String, u64)>,
}

impl ArchiveStream {
    pub fn open(path: &Path) -> Result<ArchiveStream> {
        ArchiveStream::open_with(path, None)
    }

    /// Opens an archive; with `ids`, one of an encrypted generation (an age
    /// file, decrypted and authenticated as it is read).
    pub fn open_with(path: &Path, ids: Option<&Arc<Identities>>) -> Result<ArchiveStream> {
        let mut file =
            File::open(path).with_context(|| format!("opening archive {}", path.display()))?;
        let head = read_head(&mut file, path)?;
        use std::io::{BufRead, Seek};
        file.rewind()
            .with_context(|| format!("reading {}", path.display()))?;
        let hashed = HashReader {
            inner: file,
            hash: Sha256::new(),
            pos: 0,
            whole: true,
        };
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (mut reader, head): (Source, Vec<u8>) = match (head.starts_with(AGE_MAGIC), ids) {
            (false, None) => (io::BufReader::with_capacity(CHUNK, Box::new(hashed)), head),
            (true, Some(ids)) => {
                let sealed = SealedReader::new(hashed, ids.clone(), &format!("archive {name}"))?;
                let mut r: Source = io::BufReader::with_capacity(CHUNK, Box::new(sealed));
                let head = r.fill_buf().map_err(|e| match seal::tampered(&e) {
                    Some(t) => anyhow::Error::new(t.clone()),
                    None => anyhow::Error::new(e).context(format!("reading {}", path.display())),
                })?;
                let head = head.to_vec();
                (r, head)
            }
            (true, None) => bail!(
                "archive {} is encrypted (age): give the identity with --identity FILE",
                path.display()
            ),
            (false, Some(_)) => bail!(seal::Tampered {
                what: format!("archive {name}"),
                detail: "not an age file, although its generation is encrypted (replaced?)".into(),
                resume: None,
            }),
        };
        let Some(compression) = Compression::sniff(&head) else {
            if head.is_empty() {
                bail!("archive {} is empty", path.display());
            }
            bail!(
                "{} is not a tar archive (neither zstd, gzip nor plain tar data)",
                path.display()
            );
        };
        let (tx, rx) = sync_channel::<Msg>(4);
        let handle = std::thread::spawn(move || unpack(compression, &mut reader, &tx));
        Ok(ArchiveStream {
            rx,
            cur: Vec::new(),
            pos: 0,
            eof: false,
            handle: Some(handle),
            compression,
            pending: None,
            damage: Vec::new(),
            stored: None,
        })
    }

    /// The damage that stopped reading, until [`ArchiveStream::resume`].
    pub fn pending_damage(&self) -> Option<&str> {
        self.pending.as_deref()
    }

    /// Goes on after damage: the next bytes begin with a tar header (or
    /// the stream ends).
    pub fn resume(&mut self) {
        self.pending = None;
    }

    /// SHA-256 and size of the archive file as stored, once read to the
    /// end without damage.
    pub fn stored_sha256(&self) -> Option<&(String, u64)> {
        self.stored.as_ref()
    }
}

/// The first bytes of a file (up to 512), to tell what it holds.
fn read_head(file: &mut File, path: &Path) -> Result<Vec<u8>> {
    let mut head = vec![0u8; 512];
    let mut got = 0;
    while got < head.len() {
        let n = file
            .read(&mut head[got..])
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    head.truncate(got);
    Ok(head)
}

/// What an archive is read from: the file (hashed as read), or the
/// plaintext of the encrypted file.
trait Input: Read + io::Seek + Send {
    /// SHA-256 and size of the stored file, when read straight through.
    fn stored(&self) -> Option<(String, u64)>;
}

impl Input for HashReader<File> {
    fn stored(&self) -> Option<(String, u64)> {
        self.whole
            .then(|| (hex::encode(self.hash.clone().finalize()), self.pos))
    }
}

impl Input for SealedReader<HashReader<File>> {
    fn stored(&self) -> Option<(String, u64)> {
        self.inner().lock().stored()
    }
}

type Source = io::BufReader<Box<dyn Input>>;

fn unpack(compression: Compression, reader: &mut Source, tx: &SyncSender<Msg>) {
    let res = match compression {
        Compression::Zstd => unpack_frames(reader, tx),
        Compression::Gzip => pump(&mut flate2::bufread::MultiGzDecoder::new(&mut *reader), tx),
        Compression::None => pump(reader, tx),
    };
    match res {
        Ok(true) => {
            let stored = reader.get_ref().stored();
            let _ = tx.send(Msg::End(stored));
        }
        Ok(false) => {}
        Err(e) => {
            let _ = tx.send(Msg::Fail(e));
        }
    }
}

/// Sends everything `dec` gives in chunks; false when the receiver left.
fn pump(dec: &mut dyn Read, tx: &SyncSender<Msg>) -> io::Result<bool> {
    loop {
        let mut buf = Vec::with_capacity(CHUNK);
        dec.take(CHUNK as u64).read_to_end(&mut buf)?;
        if buf.is_empty() {
            return Ok(true);
        }
        if tx.send(Msg::Data(buf)).is_err() {
            return Ok(false);
        }
    }
}

/// Frame by frame, resynchronising after damage; false when the receiver
/// left.
fn unpack_frames(r: &mut Source, tx: &SyncSender<Msg>) -> io::Result<bool> {
    use std::io::{BufRead, Seek};
    let mut resyncing = false;
    loop {
        let start = r.stream_position()?;
        let res = match r.fill_buf() {
            Ok([]) => return Ok(true),
            Ok(_) => unpack_frame(r, tx, resyncing),
            Err(e) => Err(e),
        };
        match res {
            Ok(Some(sent)) => resyncing &= !sent,
            Ok(None) => return Ok(false),
            Err(e) => {
                // An encrypted archive: the age chunk that failed, and
                // where the next one begins.
                let (what, from) = match seal::tampered(&e) {
                    Some(t) => (t.to_string(), t.resume.unwrap_or(start + 1)),
                    None => (
                        format!("damaged zstd frame at byte {start} of the archive: {e}"),
                        start + 1,
                    ),
                };
                if !resyncing && tx.send(Msg::Damage(what)).is_err() {
                    return Ok(false);
                }
                resyncing = true;
                if !seek_magic(r, from)? {
                    return Ok(true);
                }
            }
        }
    }
}

/// Decodes one frame. A frame of at most [`FRAME_MAX`] bytes is checked
/// whole before it is sent; a larger one (an archive of one frame, as
/// written before frames were bounded) is streamed. While `resyncing`, a
/// frame that does not begin with a tar header is dropped. Returns whether
/// it was sent, None when the receiver left.
fn unpack_frame(r: &mut Source, tx: &SyncSender<Msg>, resyncing: bool) -> io::Result<Option<bool>> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(&mut *r)?.single_frame();
    // Room for a whole frame up front: no copies while it grows.
    let mut frame = Vec::with_capacity(FRAME_MAX + 1);
    (&mut dec)
        .take(FRAME_MAX as u64 + 1)
        .read_to_end(&mut frame)?;
    if resyncing && !super::tar::is_header_block(&frame) {
        if frame.len() > FRAME_MAX {
            io::copy(&mut dec, &mut io::sink())?;
        }
        return Ok(Some(false));
    }
    let long = frame.len() > FRAME_MAX;
    if tx.send(Msg::Data(frame)).is_err() {
        return Ok(None);
    }
    if long && !pump(&mut dec, tx)? {
        return Ok(None);
    }
    Ok(Some(true))
}

/// Moves `r` to the next zstd frame magic at or after `from`; false when
/// there is none.
fn seek_magic(r: &mut Source, mut from: u64) -> io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut buf = vec![0u8; CHUNK];
    loop {
        let mut got = 0;
        let mut res = r.seek(SeekFrom::Start(from)).map(|_| ());
        while res.is_ok() && got < buf.len() {
            match r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => res = Err(e),
            }
        }
        if let Some(i) = buf[..got].windows(4).position(|w| w == ZSTD_MAGIC) {
            r.seek(SeekFrom::Start(from + i as u64))?;
            return Ok(true);
        }
        match res {
            // A bad age chunk: look on after it.
            Err(e) => match seal::tampered(&e).and_then(|t| t.resume) {
                Some(next) => from = next,
                None => return Err(e),
            },
            Ok(()) if got < buf.len() => return Ok(false),
            Ok(()) => from += (got - 3) as u64,
        }
    }
}

impl Read for ArchiveStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if let Some(d) = &self.pending {
                return Err(io::Error::new(io::ErrorKind::InvalidData, d.clone()));
            }
            if self.eof {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Msg::Damage(d)) => {
                    self.damage.push(d.clone());
                    self.pending = Some(d);
                }
                Ok(Msg::Fail(e)) => {
                    self.eof = true;
                    return Err(e);
                }
                Ok(Msg::End(stored)) => {
                    self.stored = stored;
                    self.eof = true;
                }
                Err(_) => self.eof = true,
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl ArchiveStream {
    /// Reads to the end and waits for the unpacking thread. Damage in what
    /// is left is an error.
    pub fn finish(&mut self) -> Result<()> {
        let mut sink = vec![0u8; CHUNK];
        while self.read(&mut sink)? > 0 {}
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        Ok(())
    }
}

pub use crate::util::hash_file;

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

    /// A tar stream of files of `sizes` through `enc`, entry boundaries
    /// marked; returns the names and contents.
    fn write_tar<W: Write>(enc: Encoder<W>, sizes: &[usize]) -> (W, Vec<(String, Vec<u8>)>) {
        use super::super::tar::{EntryKind, Header, TarWriter};
        let mut tar = TarWriter::new(enc);
        let mut files = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let name = format!("f{i:03}");
            // Text-like, compressible, different per file.
            let data: Vec<u8> = (0..size)
                .map(|k| b"abcdefghij\n"[(k * 7 + i + k / 4096) % 11])
                .collect();
            let mut h = Header::new(name.clone().into_bytes(), EntryKind::File);
            h.size = size as u64;
            tar.header(&h).unwrap();
            tar.write_raw(&data).unwrap();
            tar.pad().unwrap();
            tar.get_mut().entry_boundary().unwrap();
            files.push((name, data));
        }
        (tar.finish().unwrap().finish().unwrap(), files)
    }

    /// (offset, compressed size, content size) of each frame.
    fn frames(data: &[u8]) -> Vec<(usize, usize, u64)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < data.len() {
            let n = zstd::zstd_safe::find_frame_compressed_size(&data[off..]).unwrap();
            let size = zstd::zstd_safe::get_frame_content_size(&data[off..])
                .unwrap()
                .unwrap();
            out.push((off, n, size));
            off += n;
        }
        out
    }

    /// Every file read back from `path`, resuming after damage; and the
    /// damage seen.
    fn read_back(path: &Path) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
        use super::super::tar::TarReader;
        let mut tar = TarReader::new(ArchiveStream::open(path).unwrap());
        let mut got = Vec::new();
        loop {
            let h = match tar.next_header() {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(_) => {
                    let mut s = tar.into_inner();
                    assert!(s.pending_damage().is_some());
                    s.resume();
                    tar = TarReader::new(s);
                    continue;
                }
            };
            let mut data = vec![0u8; h.size as usize];
            let mut n = 0;
            let mut ok = true;
            while n < data.len() {
                match tar.read_data(&mut data[n..]) {
                    Ok(k) => n += k,
                    Err(_) => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                let mut s = tar.into_inner();
                s.resume();
                tar = TarReader::new(s);
                continue;
            }
            got.push((String::from_utf8(h.path).unwrap(), data));
        }
        let mut s = tar.into_inner();
        s.finish().unwrap();
        (got, s.damage.clone())
    }

    const SIZES: &[usize] = &[
        100,
        3 << 20,
        5000,
        20 << 20,
        1 << 20,
        700,
        6 << 20,
        2 << 20,
        2 << 20,
        9 << 20,
        10,
        3 << 20,
    ];

    #[test]
    fn frames_are_bounded_and_begin_at_entries_where_they_can() {
        for threads in [0, 2] {
            let enc = Encoder::new(Compression::Zstd, Vec::new(), None, threads).unwrap();
            let (data, files) = write_tar(enc, SIZES);
            let fr = frames(&data);
            assert!(fr.len() >= 8, "{fr:?}");
            // Small files share frames of at least FRAME_TARGET.
            assert!(fr.iter().filter(|f| f.2 as usize >= FRAME_TARGET).count() >= 5);
            assert!(fr.iter().all(|f| f.2 as usize <= FRAME_MAX), "{fr:?}");
            // A frame begins inside an entry only when the one before it
            // was cut at the size limit (inside a large file).
            let mut starts = 0;
            for (i, (off, n, _)) in fr.iter().enumerate() {
                let plain = zstd::stream::decode_all(&data[*off..off + n]).unwrap();
                if super::super::tar::is_header_block(&plain) {
                    starts += 1;
                } else {
                    assert!(i > 0 && fr[i - 1].2 as usize == FRAME_MAX, "frame {i}");
                }
            }
            assert!(
                starts >= 5,
                "{starts} of {} frames begin with a header",
                fr.len()
            );
            let whole = zstd::stream::decode_all(&data[..]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("a.tar.zst");
            std::fs::write(&path, &data).unwrap();
            let (got, damage) = read_back(&path);
            assert!(damage.is_empty());
            assert!(got == files);
            assert_eq!(whole.len() % 512, 0);
        }
    }

    #[test]
    fn the_zstd_tool_and_tar_read_concatenated_frames() {
        if std::process::Command::new("zstd")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipped: no zstd tool");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.zst");
        let f = File::create(&path).unwrap();
        let enc = Encoder::new(Compression::Zstd, f, None, 2).unwrap();
        let (_, files) = write_tar(enc, SIZES);
        let out = std::process::Command::new("zstd")
            .args(["-t", "-q"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(out.success());
        let x = dir.path().join("x");
        std::fs::create_dir(&x).unwrap();
        let st = std::process::Command::new("tar")
            .args(["--zstd", "-xf"])
            .arg(&path)
            .arg("-C")
            .arg(&x)
            .status()
            .unwrap();
        assert!(st.success());
        for (name, data) in &files {
            assert!(std::fs::read(x.join(name)).unwrap() == *data, "{name}");
        }
    }

    #[test]
    fn one_flipped_byte_costs_the_entries_of_one_frame() {
        let enc = Encoder::new(Compression::Zstd, Vec::new(), None, 2).unwrap();
        let (mut data, files) = write_tar(enc, SIZES);
        let fr = frames(&data);
        // A frame in the middle: flip a byte in the middle of it.
        let (off, n, _) = fr[fr.len() / 2];
        data[off + n / 2] ^= 0x55;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.zst");
        std::fs::write(&path, &data).unwrap();
        let (got, damage) = read_back(&path);
        assert_eq!(damage.len(), 1, "{damage:?}");
        assert!(damage[0].contains(&format!("at byte {off}")), "{damage:?}");
        // Every file read back is intact, the lost ones are few, and the
        // last ones (after the damage) are there.
        for (name, data) in &got {
            let want = &files.iter().find(|f| &f.0 == name).unwrap().1;
            assert!(data == want, "{name} differs");
        }
        let lost = files.len() - got.len();
        assert!((1..=2).contains(&lost), "{lost} lost");
        assert_eq!(got.last().unwrap().0, files.last().unwrap().0);
        // The stored hash is not claimed for a damaged read.
        let mut s = ArchiveStream::open(&path).unwrap();
        let _ = io::copy(&mut s, &mut io::sink());
        assert!(s.stored_sha256().is_none());
    }

    #[test]
    fn an_archive_of_one_large_frame_still_reads() {
        // As written before frames were bounded: one frame, streamed.
        let data: Vec<u8> = (0..(FRAME_MAX as u32 + 3_000_000))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(&data).unwrap();
        let c = e.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.tar.zst");
        std::fs::write(&path, &c).unwrap();
        let mut s = ArchiveStream::open(&path).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert!(back == data);
        assert_eq!(s.stored_sha256().unwrap().1, c.len() as u64);
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
