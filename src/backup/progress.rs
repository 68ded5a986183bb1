//! Progress of a long backup or restore on stderr: a line redrawn in place
//! on a terminal (bytes, files, rate, ETA), plain lines every 10 seconds
//! otherwise, nothing when quiet.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::util::human_bytes;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Auto,
    Quiet,
}

pub struct Progress {
    what: &'static str,
    tty: bool,
    quiet: bool,
    start: Instant,
    last: Instant,
    every: Duration,
    total_bytes: u64,
    total_files: u64,
    pub bytes: u64,
    pub files: u64,
    drawn: bool,
}

impl Progress {
    pub fn new(what: &'static str, mode: Mode) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let now = Instant::now();
        Progress {
            what,
            tty,
            quiet: mode == Mode::Quiet,
            start: now,
            last: now,
            every: if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(10)
            },
            total_bytes: 0,
            total_files: 0,
            bytes: 0,
            files: 0,
            drawn: false,
        }
    }

    /// Adds to the expected totals (for the ETA).
    pub fn expect(&mut self, bytes: u64, files: u64) {
        self.total_bytes += bytes;
        self.total_files += files;
    }

    pub fn add(&mut self, bytes: u64, files: u64) {
        self.bytes += bytes;
        self.files += files;
        if self.quiet {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last) >= self.every {
            self.last = now;
            self.draw(false);
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    fn line(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = self.bytes as f64 / secs;
        let mut s = format!(
            "{}: {} of {}, {} of {} files, {}/s",
            self.what,
            human_bytes(self.bytes),
            human_bytes(self.total_bytes),
            self.files,
            self.total_files,
            human_bytes(rate as u64)
        );
        if rate > 0.0 && self.total_bytes > self.bytes {
            let eta = (self.total_bytes - self.bytes) as f64 / rate;
            s.push_str(&format!(
                ", ETA {}",
                crate::util::human_duration(eta as i64)
            ));
        }
        s
    }

    fn draw(&mut self, last: bool) {
        let line = self.line();
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
            if last {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
        self.drawn = true;
    }

    /// Ends the progress line.
    pub fn done(&mut self) {
        if !self.quiet && self.drawn {
            self.draw(true);
        }
    }
}
