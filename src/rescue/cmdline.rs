//! Kernel command-line parsing with the kernel's quoting rules
//! (`lifeboat.autorun="lifeboat plan --json"`).

/// Splits a command line into `(name, value)` pairs; a bare word has no value.
pub fn parse(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = cmdline.trim().chars().peekable();
    while chars.peek().is_some() {
        let mut word = String::new();
        let mut in_quote = false;
        while let Some(&c) = chars.peek() {
            chars.next();
            if c == '"' {
                in_quote = !in_quote;
                continue;
            }
            if c.is_whitespace() && !in_quote {
                break;
            }
            word.push(c);
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if word.is_empty() {
            continue;
        }
        match word.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
            None => out.push((word, None)),
        }
    }
    out
}

/// The value of the last `name=` argument; `Some("")` for a bare `name`.
pub fn value(cmdline: &str, name: &str) -> Option<String> {
    parse(cmdline)
        .into_iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_and_flags() {
        let line = "BOOT_IMAGE=/vmlinuz console=ttyS0,115200 lifeboat.autorun=\"lifeboat --version\" lifeboat.poweroff quiet\n";
        assert_eq!(
            value(line, "lifeboat.autorun").as_deref(),
            Some("lifeboat --version")
        );
        assert_eq!(value(line, "lifeboat.poweroff").as_deref(), Some(""));
        assert_eq!(value(line, "console").as_deref(), Some("ttyS0,115200"));
        assert_eq!(value(line, "lifeboat.net"), None);
    }

    #[test]
    fn quotes_around_the_whole_argument_and_last_wins() {
        let line = "\"lifeboat.autorun=echo a  b\" x=1 x=2";
        assert_eq!(
            value(line, "lifeboat.autorun").as_deref(),
            Some("echo a  b")
        );
        assert_eq!(value(line, "x").as_deref(), Some("2"));
    }
}
