//! A small stderr logger: `-v` shows each external command, `-vv` more.
//! `LIFEBOAT_LOG=debug` does the same without flags (useful in the rescue).
//!
//! When stderr is the journal (systemd sets `JOURNAL_STREAM=DEV:INO` to the
//! stream it connected, and stderr's device and inode match it), every line
//! starts with its syslog priority the sd-daemon way (`<3>` err, `<4>`
//! warning, `<6>` info, `<7>` debug), so that `journalctl -p warning -t
//! lifeboat` finds the problems of a scheduled run.

use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    level: LevelFilter,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        eprint!(
            "{}",
            format_lines(record.level(), &record.args().to_string(), journal())
        );
    }

    fn flush(&self) {}
}

/// The word after `lifeboat:` for a level.
fn tag(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// The syslog priority of a level: err, warning, info, debug.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// `lifeboat: TAG: MESSAGE`, one line per line of `msg`, each with its
/// priority prefix when `journal` (a continuation line without one would
/// be logged as info).
pub fn format_lines(level: Level, msg: &str, journal: bool) -> String {
    let prefix = if journal {
        format!("<{}>", priority(level))
    } else {
        String::new()
    };
    let mut out = String::new();
    for (i, line) in msg.lines().enumerate() {
        if i == 0 {
            out.push_str(&format!("{prefix}lifeboat: {}: {line}\n", tag(level)));
        } else {
            out.push_str(&format!("{prefix}  {line}\n"));
        }
    }
    if out.is_empty() {
        out = format!("{prefix}lifeboat: {}:\n", tag(level));
    }
    out
}

/// Whether `JOURNAL_STREAM` (`DEV:INO`, decimal) names the file with
/// device `dev` and inode `ino`.
pub fn stream_matches(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// Whether the file open on `fd` is the stream `JOURNAL_STREAM` names.
pub fn fd_is_journal(fd: std::os::fd::BorrowedFd<'_>, var: Option<&str>) -> bool {
    let Some(var) = var else {
        return false;
    };
    match rustix::fs::fstat(fd) {
        Ok(st) => stream_matches(var, st.st_dev, st.st_ino),
        Err(_) => false,
    }
}

/// Whether stderr is the journal (looked at once per process).
pub fn journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        let var = std::env::var("JOURNAL_STREAM").ok();
        use std::os::fd::AsFd;
        fd_is_journal(std::io::stderr().as_fd(), var.as_deref())
    })
}

/// Prints the error that ends the process (main's last word) with the
/// journal's err priority when stderr is the journal.
pub fn print_error(msg: &str) {
    eprint!("{}", format_lines(Level::Error, msg, journal()));
}

/// Installs the logger; `verbosity` counts `-v` flags.
pub fn init(verbosity: u8) {
    let from_env = std::env::var("LIFEBOAT_LOG")
        .ok()
        .and_then(|v| v.parse::<LevelFilter>().ok());
    let level = from_env.unwrap_or(match verbosity {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    });
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn lines_carry_priorities_only_in_the_journal() {
        assert_eq!(
            format_lines(Level::Error, "disk gone", true),
            "<3>lifeboat: error: disk gone\n"
        );
        assert_eq!(
            format_lines(Level::Warn, "backup partial\nfile a\nfile b", true),
            "<4>lifeboat: warning: backup partial\n<4>  file a\n<4>  file b\n"
        );
        assert_eq!(
            format_lines(Level::Info, "x", true),
            "<6>lifeboat: info: x\n"
        );
        assert_eq!(
            format_lines(Level::Debug, "x", true),
            "<7>lifeboat: debug: x\n"
        );
        assert_eq!(
            format_lines(Level::Trace, "x", true),
            "<7>lifeboat: trace: x\n"
        );
        assert_eq!(
            format_lines(Level::Warn, "plain", false),
            "lifeboat: warning: plain\n"
        );
    }

    #[test]
    fn journal_stream_must_name_this_very_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = std::fs::File::create(dir.path().join("a")).unwrap();
        let b = std::fs::File::create(dir.path().join("b")).unwrap();
        let m = a.metadata().unwrap();
        let var = format!("{}:{}", m.dev(), m.ino());
        assert!(fd_is_journal(a.as_fd(), Some(&var)));
        // Another file, no variable, or a malformed one: not the journal
        // (a program started from a service inherits the variable but
        // may have its stderr redirected elsewhere).
        assert!(!fd_is_journal(b.as_fd(), Some(&var)));
        assert!(!fd_is_journal(a.as_fd(), None));
        for bad in [
            "",
            "garbage",
            &format!("{}", m.dev()),
            &format!("{}:x", m.dev()),
        ] {
            assert!(!fd_is_journal(a.as_fd(), Some(bad)), "{bad:?}");
        }
        assert!(stream_matches(" 8:12\n", 8, 12));
        assert!(!stream_matches("8:12", 12, 8));
    }
}
