//! What a guest's serial console shows when a boot stops short: a GRUB
//! prompt, a kernel panic, an initramfs that gave up on its root, systemd's
//! emergency mode, a passphrase prompt. The drill ends such a boot as soon
//! as the console shows it (instead of waiting out `--timeout`) and names
//! what was seen.

/// A boot that stopped where it cannot go on by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// GRUB's core found nothing it can use: `grub rescue>`.
    GrubRescue,
    /// GRUB's normal mode without a menu: `grub>`.
    GrubPrompt,
    /// The menu entry's kernel is missing: `you need to load the kernel first`.
    NoKernel,
    /// GRUB tried its menu's default (and fallback) entries and failed.
    GrubBootFailed,
    KernelPanic,
    /// initramfs-tools gave up waiting for the root device.
    RootNotFound,
    /// An initramfs shell: `(initramfs)`.
    InitramfsShell,
    /// systemd's emergency or rescue mode.
    EmergencyMode,
    /// A LUKS passphrase prompt nobody will answer.
    Passphrase,
}

impl Stall {
    pub fn name(self) -> &'static str {
        match self {
            Stall::GrubRescue => "GRUB rescue prompt",
            Stall::GrubPrompt => "GRUB command prompt",
            Stall::NoKernel => "GRUB found no kernel",
            Stall::GrubBootFailed => "GRUB could not boot its menu entries",
            Stall::KernelPanic => "kernel panic",
            Stall::RootNotFound => "the initramfs gave up waiting for the root file system",
            Stall::InitramfsShell => "an initramfs shell",
            Stall::EmergencyMode => "emergency mode",
            Stall::Passphrase => "waiting for a LUKS passphrase",
        }
    }
}

/// What the console showed: the stall, the line that showed it, and what
/// led to it (GRUB's errors, systemd's failures).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub stall: Stall,
    pub line: String,
    pub context: Vec<String>,
}

impl Seen {
    /// One line for the report: `kernel panic: not syncing: VFS: ...`.
    pub fn verdict(&self) -> String {
        let what = match self.stall {
            Stall::KernelPanic => {
                let why = self
                    .line
                    .split_once("Kernel panic - ")
                    .map_or(self.line.as_str(), |(_, w)| w);
                return format!("kernel panic: {why}");
            }
            Stall::RootNotFound | Stall::Passphrase => {
                format!("{}: {}", self.stall.name(), self.line)
            }
            _ => self.stall.name().to_string(),
        };
        if self.context.is_empty() {
            what
        } else {
            format!("{what} after: {}", self.context.join(" | "))
        }
    }
}

/// Lines of context kept before a stall.
const CONTEXT: usize = 3;

/// Follows a console line by line; says when it shows a stall.
#[derive(Debug, Default)]
pub struct Watcher {
    /// GRUB's `error:` lines and systemd's `[FAILED]` lines, the newest last.
    context: Vec<String>,
    seen: Option<Seen>,
}

impl Watcher {
    pub fn seen(&self) -> Option<&Seen> {
        self.seen.as_ref()
    }

    /// What the runner shows of the console; true once a stall was seen.
    pub fn watch(&mut self, c: super::qemu::Console) -> bool {
        match c {
            super::qemu::Console::Line(l) => self.line(l),
            super::qemu::Console::Unfinished(t) => self.prompt(t),
        }
    }

    /// A complete console line; true once a stall was seen.
    pub fn line(&mut self, raw: &str) -> bool {
        if self.seen.is_some() {
            return true;
        }
        let line = plain_line(raw);
        if let Some(stall) = line_stall(&line) {
            self.stop(stall, line);
        } else if let Some(l) = context_line(&line) {
            self.context.push(l.to_string());
            let over = self.context.len().saturating_sub(CONTEXT);
            self.context.drain(..over);
        }
        self.seen.is_some()
    }

    /// The unfinished last line (a prompt waits without a newline); true
    /// once a stall was seen.
    pub fn prompt(&mut self, raw: &str) -> bool {
        if self.seen.is_some() {
            return true;
        }
        let line = plain_line(raw);
        let stall = match line.as_str() {
            "grub rescue>" => Some(Stall::GrubRescue),
            "grub>" => Some(Stall::GrubPrompt),
            "(initramfs)" => Some(Stall::InitramfsShell),
            l if l.contains("Please enter passphrase for disk ") => Some(Stall::Passphrase),
            _ => None,
        };
        if let Some(s) = stall {
            self.stop(s, line);
        }
        self.seen.is_some()
    }

    fn stop(&mut self, stall: Stall, line: String) {
        let context = match stall {
            Stall::GrubRescue
            | Stall::GrubPrompt
            | Stall::NoKernel
            | Stall::GrubBootFailed
            | Stall::EmergencyMode => std::mem::take(&mut self.context),
            _ => Vec::new(),
        };
        self.seen = Some(Seen {
            stall,
            line,
            context,
        });
    }
}

/// A line that explains a later stall: GRUB's errors, systemd's failed
/// and dependency-failed units (`[FAILED]`, bracketed with colours or not).
fn context_line(line: &str) -> Option<&str> {
    if line.starts_with("error: ") {
        return Some(line);
    }
    ["[FAILED]", "[ FAILED ]", "[DEPEND]", "[ DEPEND ]"]
        .iter()
        .find_map(|p| line.strip_prefix(p))
        .map(str::trim)
}

/// The stall a complete line shows.
fn line_stall(line: &str) -> Option<Stall> {
    if line.contains("Kernel panic - not syncing") {
        return Some(Stall::KernelPanic);
    }
    let starts = |p: &str| line.starts_with(p);
    if starts("Entering rescue mode...") || starts("grub rescue>") {
        Some(Stall::GrubRescue)
    } else if line.contains("you need to load the kernel first") {
        Some(Stall::NoKernel)
    } else if starts("Failed to boot both default and fallback entries") {
        Some(Stall::GrubBootFailed)
    } else if starts("ALERT!") && line.contains("does not exist") {
        Some(Stall::RootNotFound)
    } else if starts("You are in emergency mode")
        || starts("You are in rescue mode")
        || line.contains("Welcome to emergency mode!")
    {
        Some(Stall::EmergencyMode)
    } else if line.contains("Please enter passphrase for disk ") {
        Some(Stall::Passphrase)
    } else {
        None
    }
}

/// A console line as plain text: terminal escape sequences removed, a
/// kernel timestamp (`[    2.5] `) dropped, control characters and blanks
/// collapsed.
pub fn plain_line(raw: &str) -> String {
    let text = plain_text(raw);
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut line = words.join(" ");
    if let Some(rest) = line.strip_prefix('[') {
        if let Some((stamp, after)) = rest.split_once("] ") {
            if stamp.trim().parse::<f64>().is_ok() {
                line = after.to_string();
            }
        }
    }
    line
}

/// Console output without terminal escape sequences; control characters
/// other than newlines become blanks (a cursor move separates words).
pub fn plain_text(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters, then one final letter.
                plain.push(' ');
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for p in chars.by_ref() {
                        if p.is_ascii_alphabetic() || p == '@' || p == '~' {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\n' => plain.push('\n'),
            c if c.is_control() => plain.push(' '),
            c => plain.push(c),
        }
    }
    plain
}

/// Watches a whole recorded console (for tests and for a log read after
/// the guest stopped): lines, then the unfinished last one.
pub fn watch_text(text: &str) -> Option<Seen> {
    let mut w = Watcher::default();
    let mut rest = text;
    while let Some(n) = rest.find('\n') {
        if w.line(rest[..n].trim_end_matches('\r')) {
            return w.seen;
        }
        rest = &rest[n + 1..];
    }
    w.prompt(rest);
    w.seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/drill-console")
            .join(name);
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        String::from_utf8_lossy(&data).into_owned()
    }

    fn seen(name: &str) -> Seen {
        watch_text(&fixture(name)).unwrap_or_else(|| panic!("{name}: no stall seen"))
    }

    /// Recorded: a recovered generation without kernels under SeaBIOS.
    /// grub-mkconfig found no kernel and wrote only the firmware-settings
    /// entry, which BIOS GRUB cannot run.
    #[test]
    fn grub_without_a_kernel() {
        let s = seen("grub-no-kernel.txt");
        assert_eq!(s.stall, Stall::GrubBootFailed);
        assert_eq!(
            s.verdict(),
            "GRUB could not boot its menu entries after: error: can't find command `fwsetup'."
        );
        // A menu entry whose kernel is gone.
        let s = watch_text(
            "Loading Linux 6.1.0-50-amd64 ...\r\nerror: file `/vmlinuz-6.1.0-50-amd64' not found.\r\n\
             Loading initial ramdisk ...\r\nerror: you need to load the kernel first.\r\n",
        )
        .unwrap();
        assert_eq!(s.stall, Stall::NoKernel);
        assert_eq!(
            s.verdict(),
            "GRUB found no kernel after: error: file `/vmlinuz-6.1.0-50-amd64' not found."
        );
    }

    #[test]
    fn grub_rescue_prompt() {
        let s = seen("grub-rescue.txt");
        assert_eq!(s.stall, Stall::GrubRescue);
        assert_eq!(
            s.verdict(),
            "GRUB rescue prompt after: error: no such device: \
             5a0e6f1c-3b8d-4c4e-9d1a-0c2b7e0f9a11. | error: unknown filesystem."
        );
        // The prompt alone, without a newline after it.
        let s = watch_text("Welcome to GRUB!\r\n\r\ngrub rescue> ").unwrap();
        assert_eq!(s.stall, Stall::GrubRescue);
        let s = watch_text("\x1b[0m\x1b[30m\x1b[47mgrub> ").unwrap();
        assert_eq!(s.stall, Stall::GrubPrompt);
    }

    #[test]
    fn kernel_panic() {
        let s = seen("kernel-panic.txt");
        assert_eq!(s.stall, Stall::KernelPanic);
        assert_eq!(
            s.verdict(),
            "kernel panic: not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"
        );
    }

    #[test]
    fn initramfs_without_its_root() {
        let s = seen("initramfs-no-root.txt");
        assert_eq!(s.stall, Stall::RootNotFound);
        assert_eq!(
            s.verdict(),
            "the initramfs gave up waiting for the root file system: \
             ALERT! /dev/mapper/vg0-root does not exist. Dropping to a shell!"
        );
        let s = watch_text("BusyBox v1.35.0 built-in shell (ash)\n\n(initramfs) ").unwrap();
        assert_eq!(s.stall, Stall::InitramfsShell);
    }

    #[test]
    fn emergency_mode_names_the_failed_units() {
        let s = seen("emergency.txt");
        assert_eq!(s.stall, Stall::EmergencyMode);
        assert_eq!(
            s.verdict(),
            "emergency mode after: Failed to mount srv-data.mount - /srv/data. | \
             Dependency failed for local-fs.target - Local File Systems."
        );
    }

    #[test]
    fn passphrase_prompt() {
        let s = watch_text(
            "[  OK  ] Reached target cryptsetup-pre.target\r\n\
             \u{1f510} Please enter passphrase for disk vg0-data (data) on /srv/data: \
             (press TAB for no echo) ",
        )
        .unwrap();
        assert_eq!(s.stall, Stall::Passphrase);
        // As a drill with a wrong key reported it.
        assert_eq!(
            s.verdict(),
            "waiting for a LUKS passphrase: \u{1f510} Please enter passphrase for disk vg0-data \
             (data) on /srv/data: (press TAB for no echo)"
        );
    }

    /// A boot that goes well shows none of them, GRUB menu and all.
    #[test]
    fn a_good_boot_is_no_stall() {
        assert_eq!(watch_text(&fixture("good-boot.txt")), None);
        // Words that only mention the markers.
        assert_eq!(
            watch_text("grub> is GRUB's prompt\nsee emergency.target(7)\npanic=10\n"),
            None
        );
    }

    #[test]
    fn plain_lines() {
        assert_eq!(
            plain_line("[    2.345678] Kernel panic - not syncing: x\r"),
            "Kernel panic - not syncing: x"
        );
        assert_eq!(
            plain_line("[\x1b[0;1;31mFAILED\x1b[0m] Failed to mount x."),
            "[ FAILED ] Failed to mount x."
        );
        assert_eq!(plain_line("[a] b"), "[a] b");
    }
}
