//! Small helpers shared by every stage: atomic files, sizes, times.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// A file written under an unpredictable temporary name in its final
/// directory (created with `O_CREAT|O_EXCL`, so a planted symlink or file is
/// never followed or truncated) and renamed into place only by
/// [`AtomicFile::commit`]; dropped uncommitted, it is removed, so a failed or
/// killed run never leaves a half-written file under the final name.
pub struct AtomicFile {
    file: Option<tempfile::NamedTempFile>,
    dest: PathBuf,
}

impl AtomicFile {
    pub fn create(dest: &Path, mode: u32) -> Result<AtomicFile> {
        use std::os::unix::fs::PermissionsExt;
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .with_context(|| format!("{} is not a file path", dest.display()))?;
        let file = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(mode))
            .tempfile_in(&dir)
            .with_context(|| format!("creating a temporary file for {}", dest.display()))?;
        Ok(AtomicFile {
            file: Some(file),
            dest: dest.to_path_buf(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("file is open until commit")
            .as_file_mut()
    }

    pub fn tmp_path(&self) -> &Path {
        self.file
            .as_ref()
            .expect("file is open until commit")
            .path()
    }

    /// Flushes the data to disk and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file is open until commit");
        let tmp = file.path().to_path_buf();
        file.as_file()
            .sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        file.persist(&self.dest).map_err(|e| {
            anyhow::Error::new(e.error).context(format!(
                "renaming {} to {}",
                tmp.display(),
                self.dest.display()
            ))
        })?;
        sync_dir(&parent_dir(&self.dest))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file().flush()
    }
}

/// A lock file after [`lock_file`]: taken by this process, or held by
/// another one (the open file, to read who holds it).
pub enum Lock {
    /// The lock, released when dropped.
    Taken(nix::fcntl::Flock<File>),
    Busy(File),
}

/// Opens `path` with `opts` plus `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC` and
/// refuses anything but a regular file: a planted symlink, FIFO or device in
/// a folder others can write is never followed, waited on or read. `what`
/// names the file in errors (`lock file`).
pub fn open_regular(path: &Path, opts: &mut OpenOptions, what: &str) -> Result<File> {
    let file = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
            "{what} {} is a symbolic link; remove it (someone may be attacking this folder)",
            path.display()
        ),
        other => other.with_context(|| format!("opening {what} {}", path.display()))?,
    };
    let meta = file
        .metadata()
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!(
            "{what} {} is not a regular file; remove it (someone may be attacking this folder)",
            path.display()
        );
    }
    Ok(file)
}

/// Reads a small file from a folder others can write (see [`open_regular`]),
/// at most `limit` bytes.
pub fn read_regular(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = open_regular(path, OpenOptions::new().read(true), what)?;
    let mut data = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if data.len() as u64 > limit {
        bail!(
            "{what} {} is larger than {}: not a file lifeboat wrote",
            path.display(),
            human_bytes(limit)
        );
    }
    Ok(data)
}

/// Opens the lock file `path` (created mode 0600 when missing, never
/// truncated, see [`open_regular`]) and tries to take an exclusive `flock`
/// on it without waiting.
pub fn lock_file(path: &Path) -> Result<Lock> {
    let mut opts = OpenOptions::new();
    opts.read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600);
    let file = open_regular(path, &mut opts, "lock file")?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Lock::Taken(lock)),
        Err((file, _)) => Ok(Lock::Busy(file)),
    }
}

/// Writes `data` to `dest` atomically with the given mode.
pub fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.write_all(data)
        .with_context(|| format!("writing {}", f.tmp_path().display()))?;
    f.commit()
}

/// Opens the directory `dir` without following a symlink at its last
/// component (`O_DIRECTORY|O_NOFOLLOW`), to work inside it through
/// [`fd_path`] even if someone swaps it for a link meanwhile.
pub fn open_dir_nofollow(dir: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .with_context(|| {
            format!(
                "opening folder {} (not a folder, or a symbolic link?)",
                dir.display()
            )
        })
}

/// The path of an open directory through `/proc/self/fd`: names joined to
/// it resolve inside that very directory, wherever it was moved.
pub fn fd_path(dir: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
}

/// fsyncs a directory so that a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `dir` (and parents) and checks that files can be created in it.
pub fn ensure_writable_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create output folder {}; choose another with --output or fix its permissions",
            dir.display()
        )
    })?;
    let probe = tempfile::Builder::new()
        .prefix(".lifeboat-write-test")
        .tempfile_in(dir);
    if probe.is_err() {
        bail!(
            "output folder {} is not writable; choose another with --output or fix its permissions",
            dir.display()
        );
    }
    Ok(())
}

/// Bytes in a human-friendly binary unit: `512 B`, `1.5 MiB`, `20.0 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Parses sizes like `512`, `4K`, `1.5G`, `20GiB`, `100MB` (binary units).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .with_context(|| format!("bad size {text:?}: expected a number with an optional unit"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => bail!("bad size {text:?}: unknown unit {other:?} (use K, M, G or T)"),
    };
    let bytes = (value * mult as f64).round();
    // u64::MAX as f64 rounds up to 2^64, which does not fit.
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        bail!("bad size {text:?}: too large (at most 16 EiB)");
    }
    Ok(bytes as u64)
}

/// Seconds since the epoch, now.
pub fn now_epoch() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Formats epoch seconds as RFC 3339 UTC: `2026-11-26T05:57:26Z`.
pub fn rfc3339(epoch: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(epoch);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Formats epoch seconds as a compact UTC stamp for file names: `20261126T055726Z`.
pub fn stamp(epoch: i64) -> String {
    let (y, m, d, hh, mm, ss) = civil(epoch);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// Parses the output of [`rfc3339`] (UTC, `Z` suffix) back to epoch seconds.
pub fn parse_rfc3339(text: &str) -> Result<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        text.get(r)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad time {text:?}: expected YYYY-MM-DDTHH:MM:SSZ"))
    };
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        bail!("bad time {text:?}: expected YYYY-MM-DDTHH:MM:SSZ");
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    Ok(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s)
}

/// A moment broken down in some time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CivilTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

impl CivilTime {
    /// Days since 1970-01-01 of its date.
    pub fn days(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// ISO 8601 week-based year and week number (weeks start on Monday;
    /// week 1 holds the year's first Thursday).
    pub fn iso_week(&self) -> (i64, i64) {
        let days = self.days();
        let weekday = (days + 3).rem_euclid(7); // Monday = 0
        let thursday = days - weekday + 3;
        let year = civil(thursday * 86400).0;
        (year, (thursday - days_from_civil(year, 1, 1)) / 7 + 1)
    }
}

impl std::fmt::Display for CivilTime {
    /// `2026-11-20 14:00:00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Epoch seconds broken down in UTC.
pub fn utc_time(epoch: i64) -> CivilTime {
    let (year, month, day, hour, minute, second) = civil(epoch);
    CivilTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
    }
}

/// Epoch seconds broken down in the local time zone (`TZ`, else
/// /etc/localtime); UTC when the C library cannot say.
pub fn local_time(epoch: i64) -> CivilTime {
    let t = epoch as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // thread-safe form.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return utc_time(epoch);
    }
    CivilTime {
        year: i64::from(tm.tm_year) + 1900,
        month: i64::from(tm.tm_mon) + 1,
        day: i64::from(tm.tm_mday),
        hour: i64::from(tm.tm_hour),
        minute: i64::from(tm.tm_min),
        second: i64::from(tm.tm_sec),
    }
}

/// Epoch seconds of a local wall-clock time (the earlier one when a clock
/// change makes it ambiguous).
pub fn from_local(c: &CivilTime) -> Result<i64> {
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (c.year - 1900) as libc::c_int;
    tm.tm_mon = (c.month - 1) as libc::c_int;
    tm.tm_mday = c.day as libc::c_int;
    tm.tm_hour = c.hour as libc::c_int;
    tm.tm_min = c.minute as libc::c_int;
    tm.tm_sec = c.second as libc::c_int;
    tm.tm_isdst = -1;
    // SAFETY: tm is a valid, initialised struct tm.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 {
        bail!("cannot convert {c:?} from local time");
    }
    Ok(t as i64)
}

/// A moment as an admin types it: `2026-11-20 14:00[:SS]` or
/// `2026-11-20T14:00[:SS]` in local time, RFC 3339 with `Z` or an offset
/// (`2026-11-20T14:00:00+01:00`), or a date alone (`2026-11-20`: the end
/// of that day, local time). Returns epoch seconds.
pub fn parse_moment(text: &str) -> Result<i64> {
    let bad = || {
        anyhow::anyhow!(
            "bad time {text:?}: expected YYYY-MM-DD, \"YYYY-MM-DD HH:MM[:SS]\" (local time) or RFC 3339 (2026-11-20T14:00:00+01:00)"
        )
    };
    let t = text.trim();
    if !t.is_ascii() {
        return Err(bad());
    }
    let (date, rest) = t.split_at(t.len().min(10));
    let d: Vec<&str> = date.split('-').collect();
    let num = |s: &str, len: usize| -> Result<i64> {
        if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    if d.len() != 3 {
        return Err(bad());
    }
    let (year, month, day) = (num(d[0], 4)?, num(d[1], 2)?, num(d[2], 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut c = CivilTime {
        year,
        month,
        day,
        hour: 23,
        minute: 59,
        second: 59,
    };
    if rest.is_empty() {
        return from_local(&c);
    }
    let rest = rest.strip_prefix([' ', 'T', 't']).ok_or_else(bad)?;
    // The zone: Z, +HH:MM or -HH:MM after the clock time.
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let hms: Vec<&str> = clock.split(':').collect();
    if !(2..=3).contains(&hms.len()) {
        return Err(bad());
    }
    c.hour = num(hms[0], 2)?;
    c.minute = num(hms[1], 2)?;
    c.second = match hms.get(2) {
        Some(s) => num(s, 2)?,
        None => 0,
    };
    if c.hour > 23 || c.minute > 59 || c.second > 60 {
        return Err(bad());
    }
    let utc = c.days() * 86400 + c.hour * 3600 + c.minute * 60 + c.second;
    match zone {
        None => from_local(&c),
        Some("Z" | "z") => Ok(utc),
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':').ok_or_else(bad)?;
            Ok(utc - sign * (num(h, 2)? * 3600 + num(m, 2)? * 60))
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil(epoch: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = epoch.div_euclid(86400);
    let secs = epoch.rem_euclid(86400);
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs % 3600 / 60, secs % 60)
}

/// A duration in words for status lines: `45s`, `3m`, `5h`, `2d`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The longest duration [`parse_duration`] accepts: 100 years, so that
/// ages and times computed from it never overflow.
pub const MAX_DURATION: i64 = 100 * 365 * 86400;

/// Parses durations like `90s`, `30m`, `12h`, `7d`, `2w` and compound
/// forms like `1d12h` or `1h 30m` (a bare number is seconds), up to
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<i64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return duration_total(text, [t.parse::<i64>().ok()]);
    }
    if t.is_empty() {
        bail!("bad duration {text:?}: expected e.g. 90s, 30m, 12h, 7d, 2w or 1d12h");
    }
    let mut parts = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(split);
        let end = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(end);
        if num.is_empty() || unit.is_empty() {
            bail!("bad duration {text:?}: expected e.g. 90s, 30m, 12h, 7d, 2w or 1d12h");
        }
        let mult: i64 = match unit {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86400,
            "w" => 7 * 86400,
            other => bail!("bad duration {text:?}: unknown unit {other:?} (use s, m, h, d or w)"),
        };
        // Only digits: a number that does not parse is too long.
        parts.push(num.parse::<i64>().ok().and_then(|n| n.checked_mul(mult)));
        rest = tail.trim_start();
    }
    duration_total(text, parts)
}

/// The sum of a duration's parts (`None`: one overflowed), at most
/// [`MAX_DURATION`].
fn duration_total(text: &str, parts: impl IntoIterator<Item = Option<i64>>) -> Result<i64> {
    let sum = parts
        .into_iter()
        .try_fold(0i64, |acc, p| p.and_then(|p| acc.checked_add(p)));
    match sum {
        Some(secs) if secs <= MAX_DURATION => Ok(secs),
        _ => bail!("bad duration {text:?}: too long (at most 36500d)"),
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`), `localhost`
/// when it cannot be read: the one reader for generations, repositories
/// and notices.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// SHA-256 (hex) and size of a file, read in 1 MiB blocks: the one file
/// hash of the crate (manifests, rescue images, snapshots).
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
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

/// SHA-256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    hash_file(path).map(|(sum, _)| sum)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn moments_as_admins_type_them() {
        let utc = |t: &str| parse_rfc3339(t).unwrap();
        assert_eq!(
            parse_moment("2026-11-20T14:00:00Z").unwrap(),
            utc("2026-11-20T14:00:00Z")
        );
        assert_eq!(
            parse_moment("2026-11-20T14:00+01:00").unwrap(),
            utc("2026-11-20T13:00:00Z")
        );
        assert_eq!(
            parse_moment("2026-11-20T14:00:30-02:30").unwrap(),
            utc("2026-11-20T16:30:30Z")
        );
        let local = |h, mi, se| {
            from_local(&CivilTime {
                year: 2026,
                month: 11,
                day: 20,
                hour: h,
                minute: mi,
                second: se,
            })
            .unwrap()
        };
        assert_eq!(parse_moment("2026-11-20 14:00").unwrap(), local(14, 0, 0));
        assert_eq!(
            parse_moment(" 2026-11-20T14:00:07 ").unwrap(),
            local(14, 0, 7)
        );
        // A date alone: the end of that day.
        assert_eq!(parse_moment("2026-11-20").unwrap(), local(23, 59, 59));
        for bad in [
            "",
            "yesterday",
            "2026-11",
            "2026-13-01",
            "2026-11-20 25:00",
            "2026-11-20 14",
            "2026-11-20x14:00",
            "2026-11-20 14:00+0100",
            "20261120",
            "2026-11-2é",
        ] {
            let e = parse_moment(bad).unwrap_err().to_string();
            assert!(e.contains("expected YYYY-MM-DD"), "{bad}: {e}");
        }
    }

    #[test]
    fn iso_weeks() {
        let week = |t: &str| utc_time(parse_rfc3339(t).unwrap()).iso_week();
        assert_eq!(week("2026-01-01T00:00:00Z"), (2026, 1)); // a Thursday
        assert_eq!(week("2027-01-01T00:00:00Z"), (2026, 53)); // a Friday
        assert_eq!(week("2024-12-30T00:00:00Z"), (2025, 1)); // a Monday
        assert_eq!(week("2026-11-22T23:59:59Z"), (2026, 47)); // a Sunday
        assert_eq!(week("2026-11-23T00:00:00Z"), (2026, 48));
    }

    #[test]
    fn time_formats_round_trip() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_672_646), "2026-11-26T05:57:26Z");
        assert_eq!(stamp(1_795_672_646), "20261126T055726Z");
        for t in [0, 951_782_400, 1_795_672_646, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(t)).unwrap(), t);
        }
        assert!(parse_rfc3339("2026-11-26 05:57:26").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("1.5G").unwrap(), 1_610_612_736);
        assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
        assert!(parse_size("3X").is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86400);
        assert!(parse_duration("1y").is_err());
        assert_eq!(parse_duration("1d12h").unwrap(), 36 * 3600);
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        assert_eq!(parse_duration("1h 30m").unwrap(), 5400);
        assert_eq!(parse_duration("2w1d").unwrap(), 15 * 86400);
        assert_eq!(parse_duration("1m30s").unwrap(), 90);
        assert_eq!(parse_duration(" 45 ").unwrap(), 45);
        for bad in ["", "d", "1d12", "12 h", "1.5h", "-1h", "1d-2h", "h1"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        let e = format!("{:#}", parse_duration("36500d1s").unwrap_err());
        assert!(e.contains("too long"), "{e}");
        assert_eq!(human_duration(3 * 86400 + 5), "3d");
    }

    /// Contents, mode and link target of everything in `dir`, to prove a
    /// folder outside the one written is left exactly as it was.
    pub(crate) fn tree_state(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
        use std::os::unix::fs::MetadataExt;
        let mut out = Vec::new();
        for ent in fs::read_dir(dir).unwrap() {
            let p = ent.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let data = if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.push((p, m.mode(), data));
        }
        out.sort();
        out
    }

    /// A folder with one precious file, the target of planted links.
    pub(crate) fn outside() -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        fs::set_permissions(&victim, fs::Permissions::from_mode(0o644)).unwrap();
        (dir, victim)
    }

    #[test]
    fn atomic_file_never_writes_through_planted_links() {
        let (out, victim) = outside();
        let before = tree_state(out.path());
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("verify.json");
        // The names the temporary file had before (`.NAME.tmp-PID`) and the
        // destination itself point outside.
        let old_tmp = dir
            .path()
            .join(format!(".verify.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_tmp).unwrap();
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        write_atomic(&dest, b"{}", 0o600).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"{}");
        assert!(!fs::symlink_metadata(&dest)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(tree_state(out.path()), before);
        // Nothing but the planted link and the result in the folder.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn lock_file_refuses_links_and_special_files_and_never_truncates() {
        let (out, victim) = outside();
        let before = tree_state(out.path());
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(".lock");
        std::os::unix::fs::symlink(&victim, &lock).unwrap();
        let e = format!("{:#}", lock_file(&lock).err().expect("a link is refused"));
        assert!(e.contains("is a symbolic link; remove it"), "{e}");
        // A dangling link is not created through either.
        fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink(out.path().join("new"), &lock).unwrap();
        assert!(lock_file(&lock).is_err());
        assert_eq!(tree_state(out.path()), before);
        // A FIFO is refused at once, not waited on.
        fs::remove_file(&lock).unwrap();
        nix::unistd::mkfifo(&lock, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = format!("{:#}", lock_file(&lock).err().expect("a FIFO is refused"));
        assert!(e.contains("is not a regular file"), "{e}");
        // A regular file is locked as it is, and only once at a time.
        fs::remove_file(&lock).unwrap();
        fs::write(&lock, b"1234\n").unwrap();
        let held = lock_file(&lock).unwrap();
        assert!(matches!(held, Lock::Taken(_)));
        assert!(matches!(lock_file(&lock).unwrap(), Lock::Busy(_)));
        drop(held);
        assert!(matches!(lock_file(&lock).unwrap(), Lock::Taken(_)));
        assert_eq!(fs::read(&lock).unwrap(), b"1234\n");
    }

    #[test]
    fn read_regular_refuses_links_fifos_and_huge_files() {
        let (out, victim) = outside();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("generation.json");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let e = format!("{:#}", read_regular(&p, "x", 100).unwrap_err());
        assert!(e.contains("is a symbolic link"), "{e}");
        fs::remove_file(&p).unwrap();
        // A FIFO nobody writes to would block a plain read for ever.
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = format!("{:#}", read_regular(&p, "x", 100).unwrap_err());
        assert!(e.contains("is not a regular file"), "{e}");
        fs::remove_file(&p).unwrap();
        fs::write(&p, vec![b' '; 101]).unwrap();
        let e = format!("{:#}", read_regular(&p, "x", 100).unwrap_err());
        assert!(e.contains("is larger than 100 B"), "{e}");
        fs::write(&p, vec![b' '; 100]).unwrap();
        assert_eq!(read_regular(&p, "x", 100).unwrap().len(), 100);
        drop(out);
    }

    #[test]
    fn huge_durations_and_sizes_are_refused() {
        for bad in [
            "9999999999999d",
            "99999999999999999999",
            "106752w",
            "36501d",
        ] {
            let e = format!("{:#}", parse_duration(bad).unwrap_err());
            assert!(e.contains("too long (at most 36500d)"), "{bad}: {e}");
        }
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        for bad in ["16E", "17179869184G", "99999999999999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let e = format!("{:#}", parse_size("16777216T").unwrap_err());
        assert!(e.contains("too large"), "{e}");
        assert_eq!(parse_size("16777215T").unwrap(), 16_777_215 << 40);
    }

    #[test]
    fn atomic_file_is_removed_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&dest, 0o600).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        write_atomic(&dest, b"whole", 0o600).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
