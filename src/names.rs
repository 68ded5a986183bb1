//! Names read from places lifeboat does not control (a backup folder on
//! shared storage, a layout file, the command line) checked before they
//! become paths or lines of a generated file. Every check says what was
//! wrong with which value; callers add where the value came from.

use anyhow::{bail, Result};

/// Longest file name Linux file systems take.
const NAME_MAX: usize = 255;

/// `name` is one path component: not empty, not `.` or `..`, no `/`, no
/// NUL or other control character, at most 255 bytes. `what` names it in
/// the error (`archive file`).
pub fn component(what: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        "is empty"
    } else if name == "." || name == ".." {
        "is not a file name"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.chars().any(char::is_control) {
        "contains a control character"
    } else if name.len() > NAME_MAX {
        "is longer than 255 bytes"
    } else {
        return Ok(());
    };
    bail!("{what} {name:?} {problem}: expected a single file name");
}

/// A generation id (a folder of the backup folder): one path component that
/// does not start with `.` (the prefix of lifeboat's own work folders).
pub fn generation_id(id: &str) -> Result<()> {
    component("generation id", id)?;
    if id.starts_with('.') {
        bail!("generation id {id:?} starts with '.': expected a time stamp like 20261126T055726Z");
    }
    Ok(())
}

/// A mount point: absolute and normalised (`/` or `/a/b`, no empty, `.` or
/// `..` component, no trailing `/`), no NUL.
pub fn mount_point(path: &[u8]) -> Result<()> {
    let shown = String::from_utf8_lossy(path);
    let problem = match path {
        [b'/'] => return Ok(()),
        [b'/', rest @ ..] => match normalised(rest) {
            None => return Ok(()),
            Some(p) => p,
        },
        _ => "is not absolute",
    };
    bail!("mount point {shown:?} {problem}: expected an absolute path like /srv/data");
}

/// A path below a folder (a btrfs subvolume below the top level): relative
/// and normalised (`a/b`, no empty, `.` or `..` component), no NUL. `what`
/// names it in the error.
pub fn relative_path(what: &str, path: &str) -> Result<()> {
    let problem = if path.starts_with('/') {
        "is absolute"
    } else {
        match normalised(path.as_bytes()) {
            None => return Ok(()),
            Some(p) => p,
        }
    };
    bail!("{what} {path:?} {problem}: expected a relative path like @/home");
}

/// What is wrong with the components of a path without its leading `/`.
fn normalised(path: &[u8]) -> Option<&'static str> {
    if path.contains(&0) {
        Some("contains a NUL byte")
    } else if path
        .split(|&b| b == b'/')
        .any(|c| c.is_empty() || c == b"." || c == b"..")
    {
        Some("is not normalised (empty, '.' or '..' component, or a trailing '/')")
    } else {
        None
    }
}

/// A value written into one line of a generated file (a systemd unit, a
/// cron file): no newline or other control character, which would end the
/// line and let the rest become a directive of its own.
pub fn single_line(what: &str, value: &str) -> Result<()> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        bail!(
            "{what} {value:?} contains the control character {c:?}: \
             newlines and control characters cannot go into a unit or cron file"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn components() {
        for ok in [
            "root.tar.zst",
            "luks-header-1234.img",
            "a b",
            ".hidden",
            "x..y",
        ] {
            component("file", ok).unwrap();
        }
        assert!(err(component("file", "")).contains("is empty"));
        assert!(err(component("file", ".")).contains("is not a file name"));
        assert!(err(component("file", "..")).contains("is not a file name"));
        assert!(err(component("file", "../x")).contains("contains '/'"));
        assert!(err(component("file", "/etc/passwd")).contains("contains '/'"));
        assert!(err(component("file", "a\0b")).contains("control character"));
        assert!(err(component("file", "a\nb")).contains("control character"));
        assert!(err(component("file", &"x".repeat(256))).contains("255 bytes"));
        component("file", &"x".repeat(255)).unwrap();
        let e = err(component("archive file", "../x"));
        assert!(e.starts_with("archive file \"../x\" contains '/'"), "{e}");
    }

    #[test]
    fn generation_ids() {
        generation_id("20261126T055726Z").unwrap();
        generation_id("20261126T055726Z-2").unwrap();
        for bad in [
            "",
            ".",
            "..",
            "../../etc",
            "/etc",
            "a/b",
            ".partial-x",
            "a\nb",
        ] {
            assert!(generation_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mount_points() {
        for ok in ["/", "/srv", "/srv/data", "/mnt/with space", "/a..b/.c"] {
            mount_point(ok.as_bytes()).unwrap();
        }
        mount_point(b"/\xff\xfe").unwrap();
        let cases: [(&[u8], &str); 10] = [
            (b"", "not absolute"),
            (b"srv", "not absolute"),
            (b"../etc", "not absolute"),
            (b"/srv/", "not normalised"),
            (b"//srv", "not normalised"),
            (b"/srv//x", "not normalised"),
            (b"/srv/./x", "not normalised"),
            (b"/srv/..", "not normalised"),
            (b"/../etc", "not normalised"),
            (b"/srv\0/x", "NUL"),
        ];
        for (bad, want) in cases {
            let e = err(mount_point(bad));
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    #[test]
    fn relative_paths() {
        for ok in ["@", "@/home", "var/lib/docker", "a b/.c"] {
            relative_path("subvolume", ok).unwrap();
        }
        for (bad, want) in [
            ("", "not normalised"),
            ("/@", "is absolute"),
            ("../etc", "not normalised"),
            ("@/../../etc", "not normalised"),
            ("@//x", "not normalised"),
            ("@/", "not normalised"),
            ("./@", "not normalised"),
            ("@\0x", "NUL"),
        ] {
            let e = err(relative_path("subvolume", bad));
            assert!(e.starts_with("subvolume "), "{e}");
            assert!(e.contains(want), "{bad:?}: {e}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// A mount point (other than `/`) or subvolume path is accepted
        /// exactly when every component is a plain name, and then joining it
        /// below a folder stays below that folder.
        #[test]
        fn accepted_paths_stay_below(
            comps in proptest::collection::vec(
                proptest::sample::select(vec!["", ".", "..", "a", "b c", "\\", "x\0y", "...", "é"]),
                1..6,
            ),
        ) {
            use std::path::{Component, Path};
            let rel = comps.join("/");
            let comps: Vec<String> = comps.iter().map(|c| c.to_string()).collect();
            let plain = comps.iter().all(|c| !matches!(c.as_str(), "" | "." | "..") && !c.contains('\0'));
            let abs = format!("/{rel}");
            proptest::prop_assert_eq!(mount_point(abs.as_bytes()).is_ok(), plain || abs == "/", "{:?}", abs);
            proptest::prop_assert_eq!(relative_path("p", &rel).is_ok(), plain, "{:?}", rel);
            if plain {
                let joined = Path::new("/target").join(&rel);
                proptest::prop_assert!(joined.starts_with("/target"));
                proptest::prop_assert!(joined.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_))));
            }
        }
    }

    #[test]
    fn single_lines() {
        single_line("x", "Mon..Fri 03:30").unwrap();
        single_line("x", "/path with space/é").unwrap();
        for bad in [
            "daily\nExecStartPre=/bin/evil",
            "a\rb",
            "a\0b",
            "a\tb",
            "a\x7fb",
        ] {
            let e = err(single_line("--on-calendar", bad));
            assert!(e.starts_with("--on-calendar "), "{e}");
            assert!(e.contains("control character"), "{e}");
        }
    }
}
