//! The configuration files that name devices: /etc/fstab, /etc/crypttab,
//! mdadm.conf (the mount table and swap parsers live in crate::mounts).

use crate::layout::{CrypttabEntry, FstabEntry, MdadmConfArray};

pub use crate::mounts::{parse_mountinfo, parse_swaps, unescape_octal, ActiveSwap, MountInfo};

/// Lines of a table file without comments and blank lines, split in fields.
fn table_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
}

/// Parses /etc/fstab.
pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    table_lines(text)
        .filter(|f| f.len() >= 3)
        .map(|f| FstabEntry {
            spec: unescape_octal(f[0]),
            file: unescape_octal(f[1]),
            vfstype: f[2].into(),
            options: f.get(3).unwrap_or(&"defaults").to_string(),
            freq: f.get(4).and_then(|v| v.parse().ok()).unwrap_or(0),
            passno: f.get(5).and_then(|v| v.parse().ok()).unwrap_or(0),
        })
        .collect()
}

/// Parses /etc/crypttab (`none` and `-` key files are no key file).
pub fn parse_crypttab(text: &str) -> Vec<CrypttabEntry> {
    table_lines(text)
        .filter(|f| f.len() >= 2)
        .map(|f| CrypttabEntry {
            name: f[0].to_string(),
            device: f[1].to_string(),
            keyfile: f
                .get(2)
                .filter(|k| !matches!(**k, "none" | "-" | ""))
                .map(|k| k.to_string()),
            options: f.get(3).map(|o| o.to_string()),
        })
        .collect()
}

/// Parses the ARRAY lines of mdadm.conf (continuation lines start with
/// white space).
pub fn parse_mdadm_conf(text: &str) -> Vec<MdadmConfArray> {
    // Join continuation lines first.
    let mut logical: Vec<String> = Vec::new();
    for line in text.lines() {
        let no_comment = line.split('#').next().unwrap_or("");
        if no_comment.trim().is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = logical.last_mut() {
                last.push(' ');
                last.push_str(no_comment.trim());
                continue;
            }
        }
        logical.push(no_comment.trim().to_string());
    }
    logical
        .into_iter()
        .filter(|l| l.split_whitespace().next() == Some("ARRAY"))
        .map(|line| {
            let mut a = MdadmConfArray {
                device: None,
                uuid: None,
                name: None,
                metadata: None,
                line: line.clone(),
            };
            for word in line.split_whitespace().skip(1) {
                match word.split_once('=') {
                    Some((k, v)) => match k.to_ascii_lowercase().as_str() {
                        "uuid" => a.uuid = Some(v.to_string()),
                        "name" => a.name = Some(v.to_string()),
                        "metadata" => a.metadata = Some(v.to_string()),
                        _ => {}
                    },
                    None if word.starts_with('/') || word == "<ignore>" => {
                        a.device = Some(word.to_string())
                    }
                    None => {}
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(name: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/guest")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape_octal(r"/mnt/with\040space"), "/mnt/with space");
        assert_eq!(unescape_octal(r"a\011b\012c\134d"), "a\tb\nc\\d");
        assert_eq!(unescape_octal(r"tail\04"), r"tail\04");
        assert_eq!(unescape_octal(r"not\999octal"), r"not\999octal");
    }

    #[test]
    fn guest_mountinfo() {
        let m = parse_mountinfo(&text("mountinfo.txt"));
        let find = |mp: &str| {
            m.iter()
                .find(|x| x.mountpoint == mp)
                .unwrap_or_else(|| panic!("{mp}"))
        };
        let root = find("/mnt/sys");
        assert_eq!(
            (root.fstype.as_str(), root.source.as_str()),
            ("ext4", "/dev/mapper/vg0-root")
        );
        assert_eq!(root.devnum, (253, 1));
        assert_eq!(root.options, "rw,relatime");
        let sp = find("/mnt/sys/with space");
        assert_eq!(sp.source, "/dev/mapper/vg1-stripe");
        assert_eq!(sp.fs_options, "rw,stripe=128");
        let home = find("/mnt/sys/srv/home");
        assert_eq!(
            (home.root.as_str(), home.fstype.as_str()),
            ("/@home", "btrfs")
        );
        assert_eq!(home.devnum.0, 0, "btrfs has an anonymous st_dev");
        assert!(m
            .iter()
            .any(|x| x.mountpoint == "/run/lifeboat/job" && x.source == "/dev/vde"));
    }

    #[test]
    fn guest_swaps() {
        let s = parse_swaps(&text("swaps.txt"));
        let got: Vec<(&str, bool, u64, i32)> = s
            .iter()
            .map(|x| (x.filename.as_str(), x.is_file, x.size_bytes, x.priority))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/dev/mapper/vg0-swap", false, 32764 * 1024, -2),
                ("/dev/vdc2", false, 65532 * 1024, 5),
                ("/mnt/sys/swapfile", true, 16380 * 1024, -3),
            ]
        );
    }

    #[test]
    fn guest_fstab() {
        let f = parse_fstab(&text("fstab.txt"));
        assert_eq!(f.len(), 12);
        assert_eq!(f[0].spec, "UUID=0e000000-0000-4000-8000-000000000001");
        assert_eq!(
            (f[0].file.as_str(), f[0].options.as_str(), f[0].passno),
            ("/mnt/sys", "errors=remount-ro", 1)
        );
        assert!(f.iter().any(|e| e.file == "/mnt/sys/with space"));
        let sw: Vec<&str> = f
            .iter()
            .filter(|e| e.vfstype == "swap")
            .map(|e| e.spec.as_str())
            .collect();
        assert_eq!(
            sw,
            vec![
                "UUID=05000000-0000-4000-8000-000000000001",
                "LABEL=swapc",
                "/mnt/sys/swapfile"
            ]
        );
    }

    #[test]
    fn guest_crypttab() {
        let c = parse_crypttab(&text("crypttab.txt"));
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].name, "cryptpv");
        assert_eq!(c[0].device, "UUID=22222222-0000-4000-8000-000000000002");
        assert_eq!(c[0].keyfile, None);
        assert_eq!(c[0].options.as_deref(), Some("luks,discard"));
        assert_eq!(c[1].keyfile.as_deref(), Some("/etc/keys/secret1.key"));
    }

    #[test]
    fn guest_mdadm_conf() {
        let a = parse_mdadm_conf(&text("mdadm.conf.txt"));
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].uuid.as_deref(),
            Some("11111111:22222222:33333333:44444444")
        );
        assert_eq!(a[0].name.as_deref(), Some("lifeboat:0"));
        assert_eq!(a[0].metadata.as_deref(), Some("1.2"));
        assert!(a[0]
            .device
            .as_deref()
            .is_some_and(|d| d.starts_with("/dev/md")));
        let cont = parse_mdadm_conf(
            "DEVICE partitions\nARRAY /dev/md/1 metadata=1.2\n   UUID=a:b:c:d name=h:1 # x\n",
        );
        assert_eq!(cont[0].uuid.as_deref(), Some("a:b:c:d"));
        assert_eq!(
            cont[0].line,
            "ARRAY /dev/md/1 metadata=1.2 UUID=a:b:c:d name=h:1"
        );
    }
}
