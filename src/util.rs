//! Small helpers shared by every stage: atomic files, sizes, times.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// A file written under a temporary name in its final directory and renamed
/// into place only by [`AtomicFile::commit`]; dropped uncommitted, it is
/// removed, so a failed or killed run never leaves a half-written file under
/// the final name.
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl AtomicFile {
    pub fn create(dest: &Path, mode: u32) -> Result<AtomicFile> {
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .with_context(|| format!("{} is not a file path", dest.display()))?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        Ok(AtomicFile {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until commit")
    }

    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Flushes the data to disk and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("file is open until commit");
        file.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
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

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `data` to `dest` atomically with the given mode.
pub fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.write_all(data)
        .with_context(|| format!("writing {}", f.tmp_path().display()))?;
    f.commit()
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
    Ok((value * mult as f64).round() as u64)
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

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
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

/// Parses durations like `90s`, `30m`, `12h`, `7d`, `2w` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<i64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .with_context(|| format!("bad duration {text:?}: expected e.g. 90s, 30m, 12h, 7d, 2w"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        other => bail!("bad duration {text:?}: unknown unit {other:?} (use s, m, h, d or w)"),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(human_duration(3 * 86400 + 5), "3d");
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
