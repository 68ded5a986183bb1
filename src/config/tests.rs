use super::*;

const FILE: &str = "/etc/lifeboat/lifeboat.toml";

fn parse(text: &str) -> Result<Config> {
    let mut c = Config::default();
    c.apply_file(Path::new(FILE), text)?;
    c.derive_paths();
    c.validate()?;
    Ok(c)
}

fn err(text: &str) -> String {
    format!("{:#}", parse(text).unwrap_err())
}

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/lifeboat.toml.example");
    std::fs::read_to_string(path).unwrap()
}

/// The example with every `# key = value` line made active.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }) =>
            {
                rest.to_string()
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_parses_covers_every_key_and_shows_the_defaults() {
    let text = example();
    let c = parse(&text).unwrap();
    let defaults = Config::default().show();
    let shown = c.show();
    // As shipped everything is commented out: the defaults apply.
    let strip = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(strip(&shown), strip(&defaults));

    let active = uncommented(&text);
    let c = parse(&active).unwrap();
    let mut from_default = Config::default();
    let mut listed = Vec::new();
    let mut defaults = Vec::new();
    from_default
        .visit(&mut |k, s| {
            defaults.push((k, s.show()));
            Ok(())
        })
        .unwrap();
    let mut c2 = c.clone();
    c2.visit(&mut |k, s| {
        assert!(
            matches!(s.source(), Source::File { .. }),
            "key {k} is not in docs/lifeboat.toml.example"
        );
        listed.push((k, s.show()));
        Ok(())
    })
    .unwrap();
    for ((k, want), (_, got)) in defaults.iter().zip(&listed) {
        if want.is_some() {
            assert_eq!(got, want, "the example's value of {k} is not the default");
        }
    }
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let e = err("[backup]\ndestination = \"/srv/b\"\ndestnation = \"/srv/b\"\n");
    assert!(
        e.starts_with(&format!("{FILE} line 3: unknown key `backup.destnation`")),
        "{e}"
    );
    assert!(e.contains("destination, mount_options"), "{e}");
    let e = err("\n\nstatedir = \"/x\"\n");
    assert!(
        e.starts_with(&format!("{FILE} line 3: unknown key `statedir`")),
        "{e}"
    );
    let e = err("[backups]\nkeep = 3\n");
    assert!(e.contains("line 1: unknown key `backups`"), "{e}");
    let e = err("backup = 3\n");
    assert!(
        e.contains("line 1: key `backup` must be a section ([backup])"),
        "{e}"
    );
}

#[test]
fn bad_values_name_file_line_and_key() {
    let e = err("[backup]\n\nkeep = 0\n");
    assert_eq!(
        e,
        format!("{FILE} line 3: key `backup.keep`: expected a number of at least 1, found 0")
    );
    let e = err("[backup]\ncompression = \"lz4\"\n");
    assert!(
        e.contains(
            "line 2: key `backup.compression`: \"lz4\" is not one of \"zstd\", \"gzip\", \"none\""
        ),
        "{e}"
    );
    let e = err("[monitor]\nwarn_age = \"8 days\"\n");
    assert!(
        e.contains("line 2: key `monitor.warn_age`: bad duration"),
        "{e}"
    );
    for huge in ["\"9999999999999d\"", "9223372036854775807"] {
        let e = err(&format!("[monitor]\ncrit_age = {huge}\n"));
        assert!(
            e.contains("line 2: key `monitor.crit_age`: ")
                && e.contains("too long (at most 36500d)"),
            "{e}"
        );
    }
    let e = err("[rescue]\nappend = \"lifeboat.net=dhcp\"\n");
    assert!(
        e.contains("line 2: key `rescue.append`: expected a list of strings"),
        "{e}"
    );
    let e = err("[schedule]\nbackup = \"yes\"\n");
    assert!(
        e.contains("key `schedule.backup`: expected true or false"),
        "{e}"
    );
    let e = err("[backup]\nkeep = \n");
    assert!(e.starts_with(&format!("{FILE} line 2: ")), "{e}");
    assert!(e.ends_with("fix the TOML syntax"), "{e}");
    let e = err("[monitor]\nwarn_age = \"20d\"\n");
    assert!(
        e.contains("monitor.warn_age (20d, /etc/lifeboat/lifeboat.toml line 2) is longer than monitor.crit_age (15d, default)"),
        "{e}"
    );
}

#[test]
fn file_then_environment_then_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(
        &path,
        "state_dir = \"/srv/state\"\n[backup]\nkeep = 3\ndestination = \"/srv/b\"\n[rescue]\niso = false\n",
    )
    .unwrap();
    let env = |k: &str| match k {
        "LIFEBOAT_BACKUP_KEEP" => Some("5".to_string()),
        "LIFEBOAT_RESCUE_APPEND" => Some("[\"a=1\", \"b=2,3\"]".to_string()),
        _ => None,
    };
    let opts = LoadOptions {
        path: Some(path.clone()),
        state_dir: None,
    };
    let mut c = Config::load_with(&opts, &env).unwrap();
    assert_eq!(c.state_dir.value, PathBuf::from("/srv/state"));
    assert_eq!(c.rescue.output.value, PathBuf::from("/srv/state/rescue"));
    assert_eq!(
        c.capture.layout_file.value,
        PathBuf::from("/srv/state/layout.json")
    );
    assert_eq!(c.backup.keep.value, Some(Count(5)));
    assert_eq!(
        c.backup.keep.source,
        Source::Env {
            var: "LIFEBOAT_BACKUP_KEEP".into()
        }
    );
    assert_eq!(c.rescue.append.value, vec!["a=1", "b=2,3"]);
    assert!(!c.rescue.iso.value);
    c.backup.keep.flag(Some(Some(Count(9))), "--keep");
    let shown = c.show();
    assert!(shown.contains(&format!(
        "# configuration file: {} (flag --config)",
        path.display()
    )));
    for want in [
        "state_dir = \"/srv/state\"".to_string(),
        format!("# {} line 1", path.display()),
        "keep = 9".to_string(),
        "# flag --keep".to_string(),
        format!("# {} line 4", path.display()),
        "# default, from state_dir".to_string(),
        "# environment LIFEBOAT_RESCUE_APPEND".to_string(),
        "# kernel = (unset)".to_string(),
    ] {
        assert!(shown.contains(&want), "{want:?} not in:\n{shown}");
    }
    // A shown configuration is a valid configuration file again.
    let again = parse(&shown).unwrap();
    assert_eq!(again.backup.keep.value, Some(Count(9)));
    assert_eq!(again.rescue.append.value, vec!["a=1", "b=2,3"]);

    let j = c.to_json();
    assert_eq!(j["settings"]["backup.keep"]["value"], 9);
    assert_eq!(j["settings"]["backup.keep"]["source"]["kind"], "flag");
    assert_eq!(j["settings"]["backup.destination"]["source"]["line"], 4);

    // --state-dir moves the derived paths, not the configured ones.
    let opts = LoadOptions {
        path: Some(path.clone()),
        state_dir: Some(PathBuf::from("/tmp/st")),
    };
    let c = Config::load_with(&opts, &|_| None).unwrap();
    assert_eq!(c.rescue.output.value, PathBuf::from("/tmp/st/rescue"));
    assert_eq!(c.snapshot_dir(), PathBuf::from("/tmp/st/snapshots"));
}

#[test]
fn missing_files_and_bad_environment() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let opts = LoadOptions {
        path: Some(missing.clone()),
        state_dir: None,
    };
    let e = format!("{:#}", Config::load_with(&opts, &|_| None).unwrap_err());
    assert!(e.contains("cannot read configuration"), "{e}");
    assert!(e.contains("named by flag --config"), "{e}");
    let via_env = missing.display().to_string();
    let e = format!(
        "{:#}",
        Config::load_with(&LoadOptions::default(), &|k| (k == PATH_ENV)
            .then(|| via_env.clone()))
        .unwrap_err()
    );
    assert!(e.contains("named by environment LIFEBOAT_CONFIG"), "{e}");
    let e = format!(
        "{:#}",
        Config::load_with(
            &LoadOptions {
                path: Some(dir.path().join("empty.toml")),
                state_dir: None
            },
            &|k| (k == "LIFEBOAT_SNAPSHOT_KEEP").then(|| "many".to_string())
        )
        .unwrap_err()
    );
    assert!(e.contains("cannot read configuration"), "{e}");
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let e = format!(
        "{:#}",
        Config::load_with(
            &LoadOptions {
                path: Some(dir.path().join("empty.toml")),
                state_dir: None
            },
            &|k| (k == "LIFEBOAT_SNAPSHOT_KEEP").then(|| "many".to_string())
        )
        .unwrap_err()
    );
    assert_eq!(
        e,
        "environment LIFEBOAT_SNAPSHOT_KEEP (key `snapshot.keep`): expected a number of at least 1, found \"many\""
    );
}

#[test]
fn capture_options_follow_the_configuration() {
    let c = parse(
        "[capture]\nonly_disks = [\"/dev/loop3\"]\n[backup]\ndestination = \"/mnt/backup\"\n",
    )
    .unwrap();
    let o = c.capture_options();
    assert_eq!(o.devices, vec!["/dev/loop3"]);
    assert_eq!(o.backup_destinations, vec![PathBuf::from("/mnt/backup")]);
    let c = parse("[backup]\ndestination = \"nfs://h/x\"\n").unwrap();
    assert!(c.capture_options().backup_destinations.is_empty());
}

/// One key set at every layer: the flag wins, then the environment, then
/// the file, then the default; each source is recorded.
#[test]
fn precedence_is_flag_env_file_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lifeboat.toml");
    std::fs::write(&path, "state_dir = \"/from-file\"\n[snapshot]\nkeep = 4\n").unwrap();
    let load = |env: &[(&str, &str)], flag: Option<&str>| {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let opts = LoadOptions {
            path: Some(path.clone()),
            state_dir: flag.map(PathBuf::from),
        };
        Config::load_with(&opts, &|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap()
    };
    let var = "LIFEBOAT_STATE_DIR";
    let c = load(&[(var, "/from-env")], Some("/from-flag"));
    assert_eq!(c.state_dir.value, Path::new("/from-flag"));
    assert_eq!(
        c.state_dir.source,
        Source::Flag {
            flag: "--state-dir".into()
        }
    );
    assert_eq!(
        c.capture.layout_file.value,
        Path::new("/from-flag/layout.json")
    );
    let c = load(&[(var, "/from-env")], None);
    assert_eq!(c.state_dir.value, Path::new("/from-env"));
    assert_eq!(c.state_dir.source, Source::Env { var: var.into() });
    let c = load(&[], None);
    assert_eq!(c.state_dir.value, Path::new("/from-file"));
    assert!(matches!(c.state_dir.source, Source::File { line: 1, .. }));
    assert_eq!(c.snapshot.keep.value, Count(4));
    assert_eq!(c.notify.timeout.value, Duration(120));
    assert_eq!(c.notify.timeout.source, Source::Default);
    let mut s = c.snapshot.keep.clone();
    s.flag(Some(Count(9)), "--keep");
    assert_eq!(
        (s.value, s.source),
        (
            Count(9),
            Source::Flag {
                flag: "--keep".into()
            }
        )
    );
}

/// The table names every section once, and every key's environment
/// variable follows from its name.
#[test]
fn sections_and_env_vars_come_from_the_one_table() {
    let keys = Config::keys();
    for s in SECTIONS {
        assert!(keys.iter().any(|k| k.starts_with(&format!("{s}."))), "{s}");
    }
    assert_eq!(keys[0], "state_dir");
    assert!(keys.contains(&"backup.keep_yearly") && keys.contains(&"borg.environment_file"));
    assert_eq!(
        Config::env_var("backup.mount_options"),
        "LIFEBOAT_BACKUP_MOUNT_OPTIONS"
    );
}
