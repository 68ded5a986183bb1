//! A small stderr logger: `-v` shows each external command, `-vv` more.
//! `LIFEBOAT_LOG=debug` does the same without flags (useful in the rescue).

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
        let tag = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        eprintln!("lifeboat: {tag}: {}", record.args());
    }

    fn flush(&self) {}
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
